#!/usr/bin/env bash
# Property-based API testing of the control plane: schemathesis (pinned below) reads the server's own
# OpenAPI document at /openapi.json and sends generated and mutated requests to every operation, then
# follows the document's links (create -> pause -> export -> kill, snapshot -> fork -> delete, ...).
# Fails on any 5xx, any response that does not match the document (status, content type, headers,
# schema), invalid data that is accepted, valid data that is refused, and the other checks listed below.
#
#   STASIS=/path/to/stasis        the server binary (default: target/debug/stasis, built if missing)
#   SCHEMATHESIS_DIR=/path        where the venv is kept (default: ~/.cache/stasis/schemathesis-VERSION)
#   SCHEMATHESIS_EXAMPLES=N       test cases per operation and phase (default 60; CI takes about 1 min)
#   SCHEMATHESIS_SEED=N           the generation seed (default fixed, so CI runs are reproducible)
set -euo pipefail

version="4.32.5"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SCHEMATHESIS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stasis/schemathesis-$version}"
examples="${SCHEMATHESIS_EXAMPLES:-60}"
seed="${SCHEMATHESIS_SEED:-20261130}"

if [[ -z "${STASIS:-}" ]]; then
    (cd "$repo" && cargo build -p stasis-server)
    STASIS="${CARGO_TARGET_DIR:-$repo/target}/debug/stasis"
fi

if [[ ! -x "$venv/bin/schemathesis" ]] || [[ "$("$venv/bin/schemathesis" --version)" != *"$version"* ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work="$(mktemp -d)"
key="schemathesis-key-$RANDOM$RANDOM"
log="$work/server.log"
# Compiled modules are shared with the test run (and between runs), so the interpreter guests the server
# warms up at start are compiled once per checkout, not once per server.
export STASIS_CACHE_DIR="${STASIS_CACHE_DIR:-${CARGO_TARGET_DIR:-$repo/target}/tmp/module-cache}"
"$STASIS" serve --listen 127.0.0.1:0 --data-dir "$work/stasis-data" --api-key "$key" >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT

url=""
for _ in $(seq 1 300); do
    url="$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -n1 || true)"
    if [[ -n "$url" ]] && "$venv/bin/python" -c 'import sys, urllib.request
sys.exit(urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status != 204)' "$url" 2>/dev/null; then
        break
    fi
    url=""
    kill -0 $server 2>/dev/null || break
    sleep 0.1
done
[[ -n "$url" ]] || { echo "the server did not become healthy:"; cat "$log"; exit 1; }
echo "stasis server at $url (schemathesis $version, $examples examples per operation, seed $seed)"

checks="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance"
checks+=",response_schema_conformance,negative_data_rejection,positive_data_acceptance"
checks+=",missing_required_header,unsupported_method,ignored_auth,use_after_free,ensure_resource_availability"

# From the temp directory: schemathesis keeps its example database and reports in the working directory.
status=0
(cd "$work" && "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
    --header "X-API-KEY: $key" \
    --checks "$checks" \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$examples" \
    --seed "$seed" \
    --request-timeout 60 \
    --generation-database none \
    --no-color) || status=$?

# A panic in a handler is answered 500 and caught above; a crash of the whole server would not be.
if ! kill -0 $server 2>/dev/null; then
    echo "the server died during the run:"; tail -n 50 "$log"; exit 1
fi
if grep -q 'panicked' "$log"; then
    echo "the server panicked during the run:"; grep -A5 'panicked' "$log" | head -n 40; exit 1
fi
exit $status
