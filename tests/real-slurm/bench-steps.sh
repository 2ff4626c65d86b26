#!/usr/bin/env bash
# Benchmark (figures, not pass/fail): login latency against the number of
# extern steps on the node, with one step the user's and the rest other
# users'. The steps are served by the slurmd shim's stepd emulation, so
# 100 steps need no 100 real jobs; both modules read the same spool dir
# (ours through conf=, Debian's through SLURM_CONF, which it honours).
#
#   BENCH_STEPS_N  transactions per size and module (default 300)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

n=${BENCH_STEPS_N:-300}
user=adopt-bob
uid=$(id -u "$user")
other=$(id -u adopt-alice)
node=$(hostname -s)
probe=$repo/target/release/pam-probe
shim=$repo/target/release/slurmd-shim
ours=/usr/local/lib/slurm-adopt-tests/pam_adopt.so
install -D -m 0644 "$repo/target/release/libpam_adopt.so" "$ours"
theirs=$(debian_module_path)
work=$(mktemp -d /tmp/slurm-adopt-bench-steps.XXXXXX)
shim_pid=
trap '[[ -n $shim_pid ]] && kill "$shim_pid" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/spool" "$work/etc" "$work/ours" "$work/theirs"
sed "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$work/spool|" /etc/slurm/slurm.conf >"$work/etc/slurm.conf"
cp /etc/slurm/cgroup.conf "$work/etc/"
echo "account required $ours conf=$work/etc/slurm.conf nodename=$node" >"$work/ours/sshd"
echo "account required $theirs action_adopt_failure=deny action_generic_failure=deny" >"$work/theirs/sshd"

shim_ready() { [[ $(grep -c '^listening' "$work/shim.out" 2>/dev/null) -eq $1 ]]; }
field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" <<<"$1"; }

printf '%-6s %-16s %8s %8s\n' steps module p50_us p99_us
for size in 1 10 100; do
    args=(--step "1000:$uid")
    for ((i = 1; i < size; i++)); do args+=(--step "$((1000 + i)):$other"); done
    "$shim" stepd --spool "$work/spool" --node "$node" "${args[@]}" >"$work/shim.out" &
    shim_pid=$!
    wait_until 10 shim_ready "$size"
    for m in ours theirs; do
        label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
        line=$(SLURM_CONF=$work/etc/slurm.conf "$probe" --confdir "$work/$m" sshd "$user" bench "$n")
        [[ $(field "$line" rc) == 0 ]] || { echo "bench-steps: $label did not adopt ($line)" >&2; exit 1; }
        printf '%-6s %-16s %8s %8s\n' "$size" "$label" "$(field "$line" p50_us)" "$(field "$line" p99_us)"
    done
    kill "$shim_pid"
    wait "$shim_pid" 2>/dev/null || true
    shim_pid=
done
