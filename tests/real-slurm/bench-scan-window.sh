#!/usr/bin/env bash
# Benchmark (figures; asserts only correctness): the stepd scan on a busy
# node whose stepds include hung ones. The slurmd shim serves STEPS extern
# steps (default 1,000), HUNG of them (default 10, spread over the job ids)
# answering the handshake and then nothing; the user's own job has the
# highest job id, so it is asked last. `adoptctl check` runs the login
# core's scan as a login would, RUNS times each with and without the hung
# stepds, and the figures are its own `usec=` and the process's wall time.
#
# Every healthy stepd must be asked and the user's job found: the scan
# keeps at most SCAN_WINDOW (256) connections open and opens the next as
# each answers, so the hung ones hold ten slots until the scan's deadline
# (half of timeout_ms) and the rest flow past them.
#
# BEFORE_ADOPTCTL=path runs the same workload on another build (e.g. one of
# the tree before the sliding window) and prints its figures beside ours,
# without asserting anything of it: with batches of 256 asked one after
# another against one deadline, a hung stepd in the first batch left the
# later batches unasked and the user's job unfound.
#
# Needs no real Slurm and no privilege: the spool dir is the runner's own,
# named SlurmUser and SlurmdUser in the bench's slurm.conf, and the user
# whose job it is is `nobody`.
#
#   BENCH_SCAN_STEPS   extern steps (default 1000)
#   BENCH_SCAN_HUNG    how many of them hang (default 10)
#   BENCH_SCAN_RUNS    checks per workload and build (default 10)
#   BENCH_SCAN_TIMEOUT_MS  the login budget (default 2000)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

steps=${BENCH_SCAN_STEPS:-1000}
hung=${BENCH_SCAN_HUNG:-10}
runs=${BENCH_SCAN_RUNS:-10}
timeout_ms=${BENCH_SCAN_TIMEOUT_MS:-2000}
adoptctl=${ADOPTCTL:-$repo/target/release/adoptctl}
shim=${SHIM:-$repo/target/release/slurmd-shim}
before=${BEFORE_ADOPTCTL:-}
user=nobody
uid=$(id -u "$user")
me=$(id -un)
node=bench1
first_job=1001
last_job=$((first_job + steps - 1))
for bin in "$adoptctl" "$shim" ${before:+"$before"}; do
    [[ -x $bin ]] || { echo "bench-scan-window: $bin missing (cargo build --release -p adoptctl -p slurmd-shim)" >&2; exit 1; }
done
((hung < steps)) || { echo "bench-scan-window: BENCH_SCAN_HUNG must be below BENCH_SCAN_STEPS" >&2; exit 1; }

# The shim holds a listener per step plus each open connection; the scan
# itself never holds more than its window.
ulimit -n "$(ulimit -Hn)"
need=$((steps + 400))
(($(ulimit -n) >= need)) || { echo "bench-scan-window: RLIMIT_NOFILE $(ulimit -n) is below the $need the shim needs" >&2; exit 1; }

work=$(mktemp -d /tmp/slurm-adopt-bench-scan.XXXXXX)
chmod 0755 "$work"
shim_pid=
trap '[[ -n $shim_pid ]] && kill "$shim_pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -m 0755 "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=bench
SlurmctldHost=ctl
SlurmUser=$me
SlurmdUser=$me
SlurmdSpoolDir=$work/spool
NodeName=$node CPUs=1
EOF
# No cgroup tree where the config looks: every stepd is asked, as on v2.
echo "CgroupMountpoint=$work/no-cgroup" >"$work/cgroup.conf"

# Hung stepds every steps/hung job ids, from the middle of the first
# window on: every batch of 256 of the old scan holds at least one.
start_shim() {
    local with_hung=$1 args=() job spacing=$((steps / (hung > 0 ? hung : 1)))
    for ((job = first_job; job < last_job; job++)); do
        local fault=
        if ((with_hung && hung > 0 && (job - first_job) % spacing == spacing / 2)); then
            fault=:hang
        fi
        args+=(--step "$job:$((2000 + job % 50))$fault")
    done
    args+=(--step "$last_job:$uid")
    # The last shim's "listening" lines must not count for this one: the
    # redirection below truncates the file only once the child runs, and
    # the wait could read the old lines before that.
    rm -f "$work/shim.out"
    "$shim" stepd --spool "$work/spool" --node "$node" "${args[@]}" >"$work/shim.out" 2>"$work/shim.err" &
    shim_pid=$!
    local waited=0
    while [[ $(grep -c '^listening' "$work/shim.out" 2>/dev/null || true) -lt $steps ]]; do
        kill -0 "$shim_pid" 2>/dev/null || { echo "bench-scan-window: the shim died: $(tail -3 "$work/shim.err")" >&2; exit 1; }
        ((waited++ < 600)) || { echo "bench-scan-window: the shim did not listen on $steps sockets" >&2; exit 1; }
        sleep 0.05
    done
}

stop_shim() {
    kill "$shim_pid"
    wait "$shim_pid" 2>/dev/null || true
    shim_pid=
}

# p50 and p99 (nearest rank) of the numbers on stdin.
percentiles() {
    sort -n | awk '{ v[NR] = $1 } END {
        p50 = v[int((NR * 50 + 99) / 100)]; p99 = v[int((NR * 99 + 99) / 100)]
        printf "%d %d %d %d\n", p50, p99, v[1], v[NR] }'
}

field() { sed -n "s/.*[ :]$2=\([^ ]*\).*/\1/p" <<<"$1" | head -1; }

# run LABEL ADOPTCTL ASSERT: RUNS checks; prints one figures row. With
# ASSERT=1, each run must find the user's job and have asked every healthy
# stepd: STEPS-1-HUNG others, HUNG unreachable (0 unreachable otherwise).
run() {
    local label=$1 bin=$2 check=$3 with_hung=$4 i out t0 t1 usec=() wall=() found=0
    local want_unreachable=$((with_hung ? hung : 0))
    local want_others=$((steps - 1 - want_unreachable))
    local summary= decision=
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        out=$("$bin" check "$user" -- "conf=$work/slurm.conf" "nodename=$node" "timeout_ms=$timeout_ms" 2>&1) || true
        t1=$(date +%s%N)
        local line
        line=$(grep '^decision line:' <<<"$out" || true)
        usec+=("$(field "$line" usec)")
        wall+=("$(((t1 - t0) / 1000))")
        summary=$(grep '^extern steps:' <<<"$out" || true)
        decision=$(grep '^decision:' <<<"$out" || true)
        if [[ $decision == "decision: adopt into job $last_job "* ]]; then
            found=$((found + 1))
        fi
        if ((check)); then
            [[ $decision == "decision: adopt into job $last_job "* ]] || {
                echo "bench-scan-window: $label run $i did not find job $last_job of $user:" >&2
                echo "$out" | grep -v '^log' | head -20 >&2
                exit 1
            }
            [[ $summary == "extern steps: 1 of $user (uid $uid), $want_others of other users, $want_unreachable unreachable, "* ]] || {
                echo "bench-scan-window: $label run $i did not ask every healthy stepd: $summary" >&2
                exit 1
            }
        fi
    done
    read -r u50 u99 umin umax < <(printf '%s\n' "${usec[@]}" | percentiles)
    read -r w50 w99 _ _ < <(printf '%s\n' "${wall[@]}" | percentiles)
    printf '%-7s %-5s %6d %6d %9d %9d %9d %9d %6s   %s | %s\n' \
        "$label" "$hung_col" "$runs" "$found" "$u50" "$u99" "$umin" "$umax" "$w50" \
        "${summary#extern steps: }" "${decision#decision: }"
}

echo "steps=$steps hung=$hung runs=$runs timeout_ms=$timeout_ms (scan deadline: half of it)"
printf '%-7s %-5s %6s %6s %9s %9s %9s %9s %6s   %s\n' build hung runs found p50_us p99_us min_us max_us wall50_us "scan | decision"
for with_hung in 0 1; do
    hung_col=$((with_hung ? hung : 0))
    start_shim "$with_hung"
    run after "$adoptctl" 1 "$with_hung"
    if [[ -n $before ]]; then
        run before "$before" 0 "$with_hung"
    fi
    stop_shim
done
