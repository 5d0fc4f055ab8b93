#!/usr/bin/env bash
# Proves that a Stasis blob is architecture-neutral: sandboxes paused on x86_64 resume on aarch64 and the
# other way round, with what they had in memory, on disk and on their call stacks.
#
# It builds the `stasis` binary and the persistence example natively (x86_64) and cross-builds them for
# aarch64-unknown-linux-gnu, which runs under qemu-user. Then, in both directions:
#   - the persistence example: `persistence pause DIR` on one architecture, `persistence resume DIR` on the
#     other (a file, a counter in guest memory, the memory's sha256);
#   - two servers, `stasis serve` native and emulated, between which sandboxes move by blob export and
#     import (tests/cross-arch/scenarios.py): files, a shell loop paused between its sleeps that finishes on
#     the other side, a Python context, a JavaScript context.
# Both servers share one compiled-module cache directory, so the run also checks that neither loads the
# other's machine code (the cache key names the target) — a server log line saying a cache file is
# "incompatible" fails the run.
#
#   bash tests/cross-arch/run.sh             # everything (installs what it needs; as root, or with sudo)
#   FRESH_CACHE=1 bash tests/cross-arch/run.sh   # compile the guests anew on both sides (slow under qemu)
#   ONLY=python\ context bash tests/cross-arch/run.sh   # server scenarios by name, comma-separated
#
# One line per scenario and direction: PASS or FAIL, its time, what was checked. Exits 1 on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
arm=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
run_started=$(date +%s)

say() { printf '[cross-arch %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
elapsed() { echo $(($(date +%s) - $1)); }

# --- what it needs -------------------------------------------------------------------------------------
packages=()
command -v aarch64-linux-gnu-gcc >/dev/null || packages+=(gcc-aarch64-linux-gnu)
[[ -e "$sysroot/lib/ld-linux-aarch64.so.1" && -e "$sysroot/lib/libc.so" ]] || packages+=(libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || packages+=(qemu-user-static)
if ((${#packages[@]})); then
    say "installing ${packages[*]} with apt-get"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"; then
        "${sudo[@]}" apt-get update
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"
    fi
else
    say "cross toolchain and qemu present: $(aarch64-linux-gnu-gcc --version | head -n1); $(qemu-aarch64-static --version | head -n1)"
fi
if ! rustup target list --installed | grep -qx "$arm"; then
    say "adding the Rust target $arm"
    rustup target add "$arm"
fi

# --- builds ----------------------------------------------------------------------------------------------
# The guests (wasm32-wasip1) are built once, by the host build's build script, into $target_dir/wasm-guests;
# the cross build's build script finds them there (guests/artifacts/build.rs), so both binaries load the
# very same guest bytes — a blob names its template by their sha256.
packages_to_build=(-p stasis-server --bin stasis -p stasis-examples --example persistence)
say "building stasis and the persistence example for x86_64 (release)"
started=$(date +%s)
nice -n 10 cargo build --release --quiet "${packages_to_build[@]}"
say "  built in $(elapsed "$started") s"
say "cross-building them for $arm (release; linker and C compiler aarch64-linux-gnu-gcc)"
started=$(date +%s)
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    nice -n 10 cargo build --release --quiet --target "$arm" "${packages_to_build[@]}"
say "  built in $(elapsed "$started") s"

x86_stasis="$target_dir/release/stasis"
x86_persistence="$target_dir/release/examples/persistence"
arm_stasis="$target_dir/$arm/release/stasis"
arm_persistence="$target_dir/$arm/release/examples/persistence"

# The ELF header's e_machine (offset 18, little-endian): 62 is x86_64, 183 aarch64.
machine() { od -An -j18 -N2 -tu2 "$1" | tr -d ' '; }
for binary in "$x86_stasis" "$x86_persistence"; do
    [[ $(machine "$binary") == 62 ]] || { say "FAIL: $binary is not an x86_64 executable"; exit 1; }
done
for binary in "$arm_stasis" "$arm_persistence"; do
    [[ $(machine "$binary") == 183 ]] || { say "FAIL: $binary is not an aarch64 executable"; exit 1; }
done
# qemu-user emulates the aarch64 CPU; -L points the dynamic loader at the aarch64 libc.
emulate=(qemu-aarch64-static -L "$sysroot")
say "aarch64 binaries run under: ${emulate[*]} ($("${emulate[@]}" "$arm_stasis" --version))"

work="$(mktemp -d "${TMPDIR:-/tmp}/stasis-cross-arch.XXXXXX")"
pids=()
stop_servers() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
finish() {
    local status=$?
    stop_servers
    if ((status != 0 || failures != 0)); then
        for log in "$work"/server-*.log; do
            [[ -e $log ]] || continue
            echo "--- $(basename "$log"): warnings and errors"
            sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v ' INFO ' | tail -n 40 || true
        done
    fi
    rm -rf "$work"
    exit $((status != 0 ? status : failures != 0))
}
failures=0
results=()
trap finish EXIT
report() { # verdict, label, seconds, summary
    local line
    line=$(printf '%s  %-43s %7s s  %s' "$1" "$2" "$3" "$4")
    results+=("$line")
    echo "$line"
    [[ $1 == PASS ]] || failures=$((failures + 1))
}

# --- the persistence example, paused on one architecture and resumed on the other --------------------------
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }
persistence() { # from, to, pausing command..., --, resuming command...
    local dir="$work/persistence-$1-$2" label
    label=$(printf '%-24s %7s -> %-7s' "persistence example" "$1" "$2")
    shift 2
    local pauser=() resumer=()
    while [[ $1 != -- ]]; do pauser+=("$1"); shift; done
    shift
    resumer=("$@")
    local t0
    t0=$(now_ms)
    if "${pauser[@]}" pause "$dir" >"$dir.pause.log" 2>&1 && "${resumer[@]}" resume "$dir" >"$dir.resume.log" 2>&1; then
        report PASS "$label" "$(seconds_since "$t0")" \
            "$(grep -o 'a [0-9]* byte blob' "$dir.pause.log"); $(grep 'guest counter' "$dir.resume.log" | tail -n1) after 3, message and memory sha256 kept"
    else
        report FAIL "$label" "$(seconds_since "$t0")" "see below"
        cat "$dir.pause.log" "$dir.resume.log" 2>/dev/null | sed 's/^/    /'
    fi
}

say "persistence example: pause on one architecture, resume on the other"
persistence x86_64 aarch64 "$x86_persistence" -- "${emulate[@]}" "$arm_persistence"
persistence aarch64 x86_64 "${emulate[@]}" "$arm_persistence" -- "$x86_persistence"

# --- two servers ---------------------------------------------------------------------------------------------
cache="$target_dir/cross-arch/module-cache"
if [[ -n ${FRESH_CACHE:-} ]]; then rm -rf "$cache"; fi
mkdir -p "$cache"
key="cross-arch-$RANDOM$RANDOM"

start_server() { # arch, command...
    local arch=$1
    shift
    NO_COLOR=1 "$@" serve --listen 127.0.0.1:0 --data-dir "$work/data-$arch" --cache-dir "$cache" --api-key "$key" \
        >"$work/server-$arch.log" 2>&1 &
    pids+=($!)
}
url_of() { # arch: waits for the server's address
    local url="" i
    for i in $(seq 1 600); do
        url="$(grep -o 'http://127.0.0.1:[0-9]*' "$work/server-$1.log" | head -n1 || true)"
        [[ -n $url ]] && { echo "$url"; return; }
        sleep 0.5
    done
    say "the $1 server did not start:" >&2
    cat "$work/server-$1.log" >&2
    return 1
}
log_of() { sed 's/\x1b\[[0-9;]*m//g' "$work/server-$1.log"; } # a server's log, without colours
ready() { # arch, language: whether the server's warm-up loaded that interpreter
    log_of "$1" | grep -q "interpreter ready.*language=$2\|language=$2.*interpreter ready"
}

say "starting stasis serve: x86_64 natively, aarch64 under qemu (module cache shared: $cache)"
servers_started=$(date +%s)
start_server x86_64 "$x86_stasis"
start_server aarch64 "${emulate[@]}" "$arm_stasis"
x86_url=$(url_of x86_64)
arm_url=$(url_of aarch64)
say "  x86_64 at $x86_url, aarch64 at $arm_url"
say "waiting for both servers to load their interpreter guests (compiling Python under emulation takes minutes when the cache is cold)"
for arch in x86_64 aarch64; do
    for language in python javascript; do
        until ready "$arch" "$language"; do
            if log_of "$arch" | grep -q "interpreter failed to load"; then
                say "FAIL: the $arch server could not load its interpreters"
                exit 1
            fi
            sleep 1
        done
        ms=$(log_of "$arch" | grep "interpreter ready" | grep "language=$language" | grep -o 'elapsed_ms=[0-9]*' | head -n1)
        say "  $arch: $language ready (${ms#elapsed_ms=} ms)"
    done
done
say "  both ready $(elapsed "$servers_started") s after the start"

say "moving sandboxes between the servers"
set +e
STASIS_API_KEY="$key" python3 "$here/scenarios.py" x86_64="$x86_url" aarch64="$arm_url" \
    ${ONLY:+--only "$ONLY"} >"$work/scenarios.out"
scenario_status=$?
set -e
while IFS= read -r line; do
    results+=("$line")
    echo "$line"
done <"$work/scenarios.out"
((scenario_status == 0)) || failures=$((failures + scenario_status))

# Neither server may have taken the other's machine code from the shared cache, nor failed to write its own.
for arch in x86_64 aarch64; do
    if log_of "$arch" | grep -qi "incompatible\|corrupt"; then
        report FAIL "module cache read by $arch" - "$(log_of "$arch" | grep -i 'incompatible\|corrupt' | head -n1)"
    fi
done
artifacts=$(find "$cache" -name '*.cwasm' | wc -l)
configs=$(find "$cache" -name '*.cwasm' -printf '%f\n' | sed 's/^[0-9a-f]*-\([0-9a-f]*\)\.cwasm$/\1/' | sort -u | wc -l)
if ((configs >= 2)); then
    report PASS "module cache shared by both servers" - "$artifacts compiled modules under $configs engine configurations, none loaded by the other architecture"
else
    report FAIL "module cache shared by both servers" - "expected one engine configuration per architecture, found $configs"
fi

stop_servers
echo
say "summary ($(elapsed "$run_started") s in all):"
printf '  %s\n' "${results[@]}"
if ((failures)); then
    say "$failures failure(s)"
else
    say "every scenario passed in both directions"
fi
