#!/usr/bin/env bash
# Bounded cargo-fuzz run of slurm-node's parsers (targets in fuzz/fuzz_targets):
#   rpc_decode   RPC frames, headers, callerid/rc bodies, Unpacker
#   stepd_reply  the stepd reply decoders, client and scanner paths, no sockets
#   proc_net     /proc/net/tcp{,6} parsing
#
# Installs cargo-fuzz (and the Debian build packages) when missing, builds
# every target, runs each for FUZZ_SECONDS from the seeds in fuzz/corpus/,
# and fails on the first crash, printing the artifact and its hexdump.
#
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo fuzz
# passes (-Zsanitizer, sancov). Environment:
#   FUZZ_SECONDS    per target (default 30)
#   FUZZ_TARGETS    space-separated subset (default: all in fuzz/Cargo.toml)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_SEED       libFuzzer -seed (default 1)
#   FUZZ_JOBS       cargo build jobs (default: cargo's own)
# Build output goes to fuzz/target (cargo fuzz's own), not the workspace's.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-address}
seed=${FUZZ_SEED:-1}
targets=${FUZZ_TARGETS:-rpc_decode stepd_reply proc_net}
build_jobs=()
[[ -n ${FUZZ_JOBS:-} ]] && build_jobs=(--jobs "$FUZZ_JOBS")

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "fuzz: $*"; }

# --- what the build needs ------------------------------------------------
# gcc comes from the shared list (slurm-node no longer links libmunge);
# libfuzzer-sys also compiles libFuzzer's C++ runtime.
"$repo/tests/scripts/install-build-deps.sh"
if ! command -v c++ >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "fuzz: no C++ compiler for libFuzzer (install g++ as root)" >&2
        exit 1
    fi
    log "installing g++"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi

start=$(now)
if cargo fuzz --version >/dev/null 2>&1; then
    log "$(cargo fuzz --version) already installed"
else
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
log "install took $(since "$start") s"

export RUSTC_BOOTSTRAP=1
fuzz_flags=(--sanitizer "$sanitizer")

start=$(now)
for t in $targets; do
    cargo fuzz build "${fuzz_flags[@]}" "${build_jobs[@]}" "$t"
done
log "build took $(since "$start") s (sanitizer: $sanitizer)"

# --- runs -----------------------------------------------------------------
# New inputs go to a scratch directory; the tracked seeds are only read.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/slurm-adopt-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

summary=()
failed=()
for t in $targets; do
    mkdir -p "$scratch/corpus/$t" "fuzz/artifacts/$t"
    out="$scratch/$t.log"
    log "running $t for ${seconds}s"
    start=$(now)
    rc=0
    # -timeout: one input taking 10 s is a hang (the default is 20 min).
    cargo fuzz run "${fuzz_flags[@]}" "$t" "$scratch/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -seed="$seed" \
        -timeout=10 -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$out" 2>&1 || rc=$?
    took=$(since "$start")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)
    [[ -n $runs ]] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out" | tail -n1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$out" | tail -n1 || true)
    line="$t: ${runs:-?} runs in ${took} s (${cov:-no coverage line}), corpus $(find "$scratch/corpus/$t" -type f | wc -l) new inputs"
    summary+=("$line")
    log "$line"
    if ((rc != 0)); then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); libFuzzer output tail:" >&2
        tail -n 60 "$out" >&2
        echo "fuzz: $t panic / sanitizer report:" >&2
        grep -E -A3 "panicked at|==[0-9]+==ERROR|^SUMMARY:|ERROR: libFuzzer" "$out" | head -n 30 >&2 || true
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out" | tail -n1)
        if [[ -n $artifact && -f $artifact ]]; then
            echo "fuzz: crash artifact: $repo/$artifact ($(stat -c %s "$artifact") bytes)" >&2
            od -A x -t x1z -v "$artifact" | head -n 64 >&2
            echo "fuzz: reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${fuzz_flags[*]} $t $artifact" >&2
        else
            echo "fuzz: no artifact written; see the output above" >&2
        fi
    fi
done

log "summary (FUZZ_SECONDS=$seconds, seed $seed, sanitizer $sanitizer):"
for line in "${summary[@]}"; do
    echo "  $line"
done
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
