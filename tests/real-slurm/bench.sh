#!/usr/bin/env bash
# Benchmark (figures, not a pass/fail): full PAM transactions
# (pam_start_confdir, pam_acct_mgmt, pam_end) for a user with one running
# job, with our pam_adopt.so and with Debian's pam_slurm_adopt.so on the
# same node, then a long run of ours to watch RSS.
#
#   BENCH_N      transactions per module for the comparison (default 1000)
#   BENCH_LONG_N transactions of ours for the RSS run (default 10000)
#
# Every transaction adopts the probe process into the job again, and the
# stepd starts a watcher thread per adoption that lives until the probe
# exits. Slurm 22.05's extern stepd dies after a few thousand of those, so
# the long RSS run adopts through the cgroup files (adopt_via=cgroup): the
# module still scans the spool, talks to the stepd (handshake, STEP_UID,
# X11, namespace) and writes cgroup.procs on every transaction, but sends
# no ADD_EXTERN_PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

n=${BENCH_N:-1000}
long_n=${BENCH_LONG_N:-10000}
user=adopt-bob
probe=$repo/target/release/pam-probe
ours=/usr/local/lib/slurm-adopt-tests/pam_adopt.so
install -D -m 0644 "$repo/target/release/libpam_adopt.so" "$ours"
theirs=$(debian_module_path)
work=$(mktemp -d /tmp/slurm-adopt-bench.XXXXXX)
trap 'cancel_all_test_jobs || true; rm -rf "$work"' EXIT

mkdir -p "$work/ours" "$work/theirs"
mkdir -p "$work/ours-long" "$work/permit-long"
echo "account required $ours" >"$work/ours/sshd"
echo "account required $ours adopt_via=cgroup" >"$work/ours-long/sshd"
# The control: the same loop with only pam_permit, so what libpam, the
# loader and malloc grow by themselves is not counted as ours.
echo "account required pam_permit.so" >"$work/permit-long/sshd"
echo "account required $theirs action_adopt_failure=deny action_generic_failure=deny" >"$work/theirs/sshd"

job=$(submit_job "$user")
wait_job_running "$job"

run() {
    local label=$1 dir=$2 count=$3 line
    line=$("$probe" --confdir "$dir" --rhost 127.0.0.1 sshd "$user" bench "$count")
    echo "$line" >"$work/$label.result"
    printf '%-16s %s\n' "$label" "$line"
    # The stepd's watcher threads for this probe end within a second of its exit.
    sleep 2
}

field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$work/$1.result"; }

echo "PAM transactions for $user with one job ($job), $n each:"
run pam_adopt "$work/ours" "$n"
run pam_slurm_adopt "$work/theirs" "$n"
for label in pam_adopt pam_slurm_adopt; do
    rc=$(field "$label" rc)
    [[ $rc == 0 ]] || { echo "bench: $label returned rc=$rc, not PAM_SUCCESS: the comparison is void" >&2; exit 1; }
done
ours_p50=$(field pam_adopt p50_us); theirs_p50=$(field pam_slurm_adopt p50_us)
ours_p99=$(field pam_adopt p99_us); theirs_p99=$(field pam_slurm_adopt p99_us)
awk -v a="$ours_p50" -v b="$theirs_p50" -v c="$ours_p99" -v d="$theirs_p99" \
    'BEGIN { printf "speed-up (pam_slurm_adopt / pam_adopt): p50 %.1fx, p99 %.1fx\n", b / a, d / c }'

echo "RSS over $long_n transactions of pam_adopt (adopt_via=cgroup):"
run pam_adopt-long "$work/ours-long" "$long_n"
[[ $(field pam_adopt-long rc) == 0 && $(field pam_adopt-long rc_changes) == 0 ]] || {
    echo "bench: the long run did not adopt every time: the RSS figure is void" >&2
    exit 1
}
start=$(field pam_adopt-long rss_start_kib); end=$(field pam_adopt-long rss_end_kib)
echo "rss growth: $((end - start)) KiB ($start -> $end KiB)"
run pam_permit-long "$work/permit-long" "$long_n"
cstart=$(field pam_permit-long rss_start_kib); cend=$(field pam_permit-long rss_end_kib)
echo "rss growth of the pam_permit-only control over $long_n transactions: $((cend - cstart)) KiB ($cstart -> $cend KiB)"
echo "rss growth attributable to pam_adopt: $(((end - start) - (cend - cstart))) KiB"
cancel_job "$job"
