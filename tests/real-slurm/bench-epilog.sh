#!/usr/bin/env bash
# Benchmark (figures, not pass/fail): the Epilog's "was this the user's
# last job on the node?" decision with 200 extern steps on the node,
# adopt-epilog --dry-run against a shell epilog of the kind the
# pam_slurm_adopt documentation suggested (scontrol listpids, then ps per
# pid). The steps are served by the slurmd shim, which answers the
# requests scontrol sends (TASK_INFO, LIST_PIDS) as well as STEP_UID; both
# read the same spool dir and both must reach the same verdict.
#
#   BENCH_EPILOG_STEPS  extern steps on the node (default 200)
#   BENCH_EPILOG_N      runs per implementation (default 20)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

steps=${BENCH_EPILOG_STEPS:-200}
n=${BENCH_EPILOG_N:-20}
node=$(hostname -s)
user=adopt-alice
uid=$(id -u "$user")
other=$(id -u adopt-bob)
shim=$repo/target/release/slurmd-shim
epilog=$repo/target/release/adopt-epilog
work=$(mktemp -d /tmp/slurm-adopt-bench-epilog.XXXXXX)
shim_pid=
trap '[[ -n $shim_pid ]] && kill "$shim_pid" 2>/dev/null; rm -rf "$work"' EXIT

mkdir -p "$work/spool" "$work/etc" "$work/state"
sed "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$work/spool|" /etc/slurm/slurm.conf >"$work/etc/slurm.conf"
cp /etc/slurm/cgroup.conf "$work/etc/"
printf 'state_dir = "%s/state"\n' "$work" >"$work/adopt.toml"

# The shell way: every pid of every other step on the node, and ps for
# each one's owner. The user's job is over when no pid is theirs.
cat >"$work/shell-epilog.sh" <<'SH'
#!/bin/sh
last=yes
for pid in $(scontrol listpids | awk -v job="$SLURM_JOB_ID" 'NR > 1 && $2 != job { print $1 }'); do
    owner=$(ps -o uid= -p "$pid" | tr -d ' ')
    [ "$owner" = "$SLURM_JOB_UID" ] && last=no
done
echo "$last"
SH
chmod 0755 "$work/shell-epilog.sh"

args=()
for ((i = 0; i < steps; i++)); do args+=(--step "$((2000 + i)):$other"); done
rm -f "$work/shim.out"
"$shim" stepd --spool "$work/spool" --node "$node" "${args[@]}" >"$work/shim.out" &
shim_pid=$!
shim_ready() { [[ $(grep -c '^listening' "$work/shim.out" 2>/dev/null) -eq $steps ]]; }
wait_until 20 shim_ready || { echo "bench-epilog: the shim did not come up" >&2; exit 1; }

export SLURM_JOB_ID=1999 SLURM_JOB_UID=$uid SLURM_JOB_USER=$user SLURMD_NODENAME=$node SLURM_CONF=$work/etc/slurm.conf

# time_runs N CMD...: prints "p50_us p99_us verdict" over N runs.
time_runs() {
    local runs=$1 i t0 t1 verdict
    shift
    : >"$work/samples"
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        verdict=$("$@" 2>/dev/null)
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) >>"$work/samples"
    done
    sort -n "$work/samples" | awk -v v="$verdict" '{ a[NR] = $1 } END { p50 = a[int((NR + 1) / 2)]; i99 = int(NR * 0.99 + 0.5); if (i99 < 1) i99 = 1; printf "%d %d %s\n", p50, a[i99], v }'
}

read -r ours_p50 ours_p99 ours_verdict < <(time_runs "$n" "$epilog" --dry-run --no-syslog --config "$work/adopt.toml")
read -r shell_p50 shell_p99 shell_verdict < <(time_runs "$n" "$work/shell-epilog.sh")

printf '%-30s %10s %10s %s\n' implementation p50_us p99_us verdict
printf '%-30s %10s %10s %s\n' "adopt-epilog --dry-run" "$ours_p50" "$ours_p99" "$ours_verdict"
printf '%-30s %10s %10s %s\n' "scontrol listpids + ps per pid" "$shell_p50" "$shell_p99" "$shell_verdict"
echo "(adopt-epilog --dry-run decides only: it takes no lock and writes no records, as the shell takes none)"
echo "extern steps: $steps, runs: $n, ratio at p50: $(awk -v a="$shell_p50" -v b="$ours_p50" 'BEGIN { printf "%.1fx", a / b }')"
if [[ $ours_verdict != last || $shell_verdict != yes ]]; then
    echo "bench-epilog: the two disagree or are wrong (ours: $ours_verdict, shell: $shell_verdict; both should say the job was the last)" >&2
    exit 1
fi
