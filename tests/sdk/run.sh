#!/usr/bin/env bash
# Runs the seed's persistence flow with the real E2B Python SDK and the real Novita JavaScript SDK against a
# Stasis server started here on a free loopback port with a throwaway data directory.
#
#   STASIS=/path/to/stasis   (default: target/debug/stasis, built if missing)
#   SDK_DIR=/path            (where the SDKs are installed; default: a directory under ${TMPDIR:-/tmp})
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
sdk_dir="${SDK_DIR:-${TMPDIR:-/tmp}/stasis-sdk-tests}"
mkdir -p "$sdk_dir"

if [[ -z "${STASIS:-}" ]]; then
    (cd "$repo" && cargo build -p stasis-server)
    STASIS="${CARGO_TARGET_DIR:-$repo/target}/debug/stasis"
fi

# The SDKs, from PyPI and npm.
if [[ ! -x "$sdk_dir/venv/bin/python" ]]; then
    python3 -m venv "$sdk_dir/venv"
fi
"$sdk_dir/venv/bin/pip" install --quiet --disable-pip-version-check e2b e2b-code-interpreter
if [[ ! -d "$sdk_dir/node_modules/novita-sandbox" ]]; then
    (cd "$sdk_dir" && { [[ -f package.json ]] || npm init -y >/dev/null; } && npm install --silent novita-sandbox)
fi

data="$(mktemp -d)"
key="sdk-test-key-$RANDOM$RANDOM"
log="$data/server.log"
# Compiled modules are shared with the test run (and between runs), so the interpreter guests the server
# warms up at start are compiled once per checkout, not once per server.
export STASIS_CACHE_DIR="${STASIS_CACHE_DIR:-${CARGO_TARGET_DIR:-$repo/target}/tmp/module-cache}"
# Metrics are sampled every second, so the metrics checks see several samples within seconds.
"$STASIS" serve --listen 127.0.0.1:0 --data-dir "$data/stasis-data" --api-key "$key" --metrics-interval 1 \
    >"$log" 2>&1 &
server=$!
# On a failure, what the server said besides its routine INFO lines goes to the output before the log
# goes with its directory: the SDK only sees "500 Internal Server Error".
finish() {
    local status=$?
    kill -TERM $server 2>/dev/null
    wait $server 2>/dev/null
    if [[ $status -ne 0 ]]; then
        echo "--- the server's warnings and errors:"
        grep -v ' INFO ' "$log" | tail -n 50 || true
    fi
    rm -rf "$data"
    exit $status
}
trap finish EXIT

url=""
for _ in $(seq 1 100); do
    url="$(grep -o 'http://127.0.0.1:[0-9]*' "$log" | head -n1 || true)"
    [[ -n "$url" ]] && break
    sleep 0.1
done
[[ -n "$url" ]] || { echo "the server did not start:"; cat "$log"; exit 1; }
echo "stasis server at $url"

E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" "$sdk_dir/venv/bin/python" "$here/seed_flow.py"
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" "$sdk_dir/venv/bin/python" "$here/code_interpreter.py"
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" "$sdk_dir/venv/bin/python" "$here/running_processes.py"
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_VOLUME_API_URL="$url" E2B_API_KEY="$key" \
    "$sdk_dir/venv/bin/python" "$here/persistence.py"
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" "$sdk_dir/venv/bin/python" "$here/pty.py"
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" "$sdk_dir/venv/bin/python" "$here/programs.py"
# The service the network flow runs in its sandboxes: the `net` test guest, built with the workspace.
net_wasm="${NET_WASM:-${CARGO_TARGET_DIR:-$repo/target}/wasm-guests/wasm32-wasip1/release/net.wasm}"
[[ -f "$net_wasm" ]] || (cd "$repo" && cargo build -p stasis-guests)
E2B_API_URL="$url" E2B_SANDBOX_URL="$url" E2B_API_KEY="$key" NET_WASM="$net_wasm" \
    "$sdk_dir/venv/bin/python" "$here/network.py"
for script in seed_flow.mjs persistence.mjs pty.mjs; do
    cp "$here/$script" "$sdk_dir/$script"
    NOVITA_API_URL="$url" NOVITA_SANDBOX_URL="$url" NOVITA_API_KEY="$key" node "$sdk_dir/$script"
done
echo "both SDKs passed the seed flow, the persistence surface and a PTY session, run_code kept its variable across a pause, running commands and cells survived pauses, the shell ran python3 and node as programs, and a service in a sandbox answered through get_host across a pause"
