#!/usr/bin/env bash
# Runs the official WASI testsuite (preview1 programs only) against `stasis run`.
#
#   WASI_TESTSUITE=/path/to/wasi-testsuite  (checkout of branch prod/testsuite-all; default ../wasi-testsuite
#                                           next to this repository)
#   STASIS=/path/to/stasis                  (default: target/debug/stasis of this repository, built if missing)
#   PYTHON=python3.12                       (the runner needs Python >= 3.12)
#
# Extra arguments go to the runner, e.g. `--json-output-location results.json` or `-f exclude.json`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
suite="${WASI_TESTSUITE:-$repo/../wasi-testsuite}"
python="${PYTHON:-python3}"

if [[ -z "${STASIS:-}" ]]; then
    target="${CARGO_TARGET_DIR:-$repo/target}"
    (cd "$repo" && cargo build -p stasis-server)
    STASIS="$target/debug/stasis"
fi
export STASIS

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' ||
    { echo "the testsuite runner needs Python >= 3.12; set PYTHON" >&2; exit 2; }
"$python" -c 'import colorama, requests' 2>/dev/null ||
    "$python" -m pip install -r "$suite/test-runner/requirements.txt"

cd "$suite"
exec "$python" test-runner/wasi_test_runner.py \
    -r "$here/stasis_adapter.py" \
    -t tests/assemblyscript/testsuite/wasm32-wasip1 \
       tests/c/testsuite/wasm32-wasip1 \
       tests/rust/testsuite/wasm32-wasip1 \
    "$@"
