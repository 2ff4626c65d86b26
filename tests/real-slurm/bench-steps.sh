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

mkdir -p "$work/spool" "$work/etc" "$work/ours" "$work/theirs" "$work/ours-real"
sed "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$work/spool|" /etc/slurm/slurm.conf >"$work/etc/slurm.conf"
# No cgroup tree where this copy looks: the shim's fake jobs have no
# cgroup directories, so pam_adopt must ask every stepd, as on cgroup v2.
sed "s|^CgroupMountpoint=.*|CgroupMountpoint=$work/no-cgroup|" /etc/slurm/cgroup.conf >"$work/etc/cgroup.conf"
grep -q '^CgroupMountpoint=' "$work/etc/cgroup.conf" || echo "CgroupMountpoint=$work/no-cgroup" >>"$work/etc/cgroup.conf"
echo "account required $ours conf=$work/etc/slurm.conf nodename=$node" >"$work/ours/sshd"
echo "account required $theirs action_adopt_failure=deny action_generic_failure=deny" >"$work/theirs/sshd"

shim_ready() { [[ $(grep -c '^listening' "$work/shim.out" 2>/dev/null) -eq $1 ]]; }
field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" <<<"$1"; }
stop_shim() {
    kill "$shim_pid"
    wait "$shim_pid" 2>/dev/null || true
    shim_pid=
}
# One row: $n transactions through the PAM stack in CONFDIR, with
# SLURM_CONF (which only Debian's module reads); the script stops unless
# every one succeeded.
bench_row() { # LABEL_WIDTH STEPS LABEL SLURM_CONF CONFDIR
    local line
    line=$(SLURM_CONF=$4 "$probe" --confdir "$5" sshd "$user" bench "$n")
    [[ $(field "$line" rc) == 0 ]] || { echo "bench-steps: $3 did not adopt at $2 steps ($line)" >&2; exit 1; }
    printf "%-6s %-${1}s %8s %8s\n" "$2" "$3" "$(field "$line" p50_us)" "$(field "$line" p99_us)"
}

printf '%-6s %-16s %8s %8s\n' steps module p50_us p99_us
for size in 1 10 100; do
    args=(--step "1000:$uid")
    for ((i = 1; i < size; i++)); do args+=(--step "$((1000 + i)):$other"); done
    # Not the last shim's "listening" lines (see bench-scan-window.sh).
    rm -f "$work/shim.out"
    "$shim" stepd --spool "$work/spool" --node "$node" "${args[@]}" >"$work/shim.out" &
    shim_pid=$!
    wait_until 10 shim_ready "$size"
    for m in ours theirs; do
        label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
        bench_row 16 "$size" "$label" "$work/etc/slurm.conf" "$work/$m"
    done
    stop_shim
done

# cgroup v2, natively: a real cgroup2 hierarchy (bind-mounted from a
# private subtree, so nothing of the host's is touched) laid out as
# Slurm 22.05 lays out a v2 node: <node>_slurmstepd.scope/job_N, and for
# each of the other user's batch jobs a step_batch/user/task_0 chowned to
# that user, as the stepd does. pam_adopt skips those jobs' stepds; the
# user's own job (extern step only, like an salloc) is still asked.
# Against it: the same 100 stepds with no cgroup tree (ask everyone, the
# row above), Debian's module, and pam_permit alone.
v2=100
v2_mount=$work/cgroup2-all
v2_root=$work/cgroup2
v2_private=adopt-bench-steps-$$
cleanup_v2() {
    if mountpoint -q "$v2_root"; then umount "$v2_root"; fi
    if mountpoint -q "$v2_mount"; then
        find "$v2_mount/$v2_private" -depth -type d -exec rmdir {} + 2>/dev/null || true
        umount "$v2_mount"
    fi
}
trap 'cleanup_v2; [[ -n $shim_pid ]] && kill "$shim_pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$v2_mount" "$v2_root" "$work/ours-v2" "$work/permit"
mount -t cgroup2 none "$v2_mount"
mkdir "$v2_mount/$v2_private"
mount --bind "$v2_mount/$v2_private" "$v2_root"
scope=$v2_root/system.slice/${node}_slurmstepd.scope
mkdir -p "$scope/job_1000/step_extern/user/task_special"
args=(--step "1000:$uid")
for ((i = 1; i < v2; i++)); do
    job=$((1000 + i))
    mkdir -p "$scope/job_$job/step_extern/user/task_special" "$scope/job_$job/step_batch/user/task_0"
    chown "$other" "$scope/job_$job/step_batch/user/task_0"
    args+=(--step "$job:$other")
done
sed "s|^CgroupMountpoint=.*|CgroupMountpoint=$v2_root|" "$work/etc/cgroup.conf" >"$work/etc/cgroup-v2.conf"
mkdir -p "$work/etc-v2"
cp "$work/etc/slurm.conf" "$work/etc-v2/slurm.conf"
cp "$work/etc/cgroup-v2.conf" "$work/etc-v2/cgroup.conf"
echo "account required $ours conf=$work/etc-v2/slurm.conf nodename=$node" >"$work/ours-v2/sshd"
echo "account required pam_permit.so" >"$work/permit/sshd"
rm -f "$work/shim.out"
"$shim" stepd --spool "$work/spool" --node "$node" "${args[@]}" >"$work/shim.out" &
shim_pid=$!
wait_until 10 shim_ready "$v2"
echo "cgroup v2 tree: $v2 extern steps, $((v2 - 1)) of them another user's batch jobs, $n transactions each"
printf '%-6s %-28s %8s %8s\n' steps module p50_us p99_us
for m in ours-v2 ours theirs permit; do
    case $m in
    ours-v2) label="pam_adopt, v2 narrowed" ;;
    ours) label="pam_adopt, ask every stepd" ;;
    theirs) label=pam_slurm_adopt ;;
    permit) label="pam_permit (control)" ;;
    esac
    bench_row 28 "$v2" "$label" "$work/etc-v2/slurm.conf" "$work/$m"
done
stop_shim
cleanup_v2

# The same with real stepds: REAL_STEPS real jobs on this node (one of the
# user's, the rest another user's), sharing its cores. On this host's
# cgroup v1, pam_adopt reads the user's uid_<uid> directory and asks only
# the stepds of the jobs listed there (and any socket under 10 s old), so
# the others' stepds are not woken at all; Debian's module asks every one.
real=${BENCH_STEPS_REAL:-100}
real_n=${BENCH_STEPS_REAL_N:-200}
echo "real jobs: $real extern steps (1 of $user), $real_n transactions each"
scontrol update PartitionName=debug OverSubscribe=FORCE:$((real + 28)) >/dev/null
restore_partition() { scontrol update PartitionName=debug OverSubscribe=NO >/dev/null 2>&1 || true; }
trap 'cleanup_v2; [[ -n $shim_pid ]] && kill "$shim_pid" 2>/dev/null; cancel_all_test_jobs >/dev/null 2>&1 || true; restore_partition; rm -rf "$work"' EXIT
for ((i = 1; i < real; i++)); do
    submit_job adopt-alice --mem=8M >/dev/null
done
mine=$(submit_job "$user" --mem=8M)
extern_count() { compgen -G "$(adopt_spool_dir)/${node}_*.4294967292" | wc -l; }
all_running() { [[ $(extern_count) -ge $real ]]; }
wait_until 120 all_running || { echo "bench-steps: only $(extern_count) of $real jobs started" >&2; exit 1; }
wait_job_running "$mine"
# Past the 10 s in which a new socket is always asked.
sleep 11
echo "account required $ours" >"$work/ours-real/sshd"
printf '%-6s %-16s %8s %8s\n' steps module p50_us p99_us
for m in ours-real theirs; do
    label=$([[ $m == ours-real ]] && echo pam_adopt || echo pam_slurm_adopt)
    line=$("$probe" --confdir "$work/$m" --rhost 127.0.0.1 sshd "$user" bench "$real_n")
    [[ $(field "$line" rc) == 0 ]] || { echo "bench-steps: $label did not adopt into a real job ($line)" >&2; exit 1; }
    printf '%-6s %-16s %8s %8s\n' "$real" "$label" "$(field "$line" p50_us)" "$(field "$line" p99_us)"
done
cancel_all_test_jobs
restore_partition
