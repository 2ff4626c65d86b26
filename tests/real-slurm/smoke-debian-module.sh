#!/usr/bin/env bash
# Smoke test of the tier-2 setup with Debian's own pam_slurm_adopt.so: if
# this passes, slurmctld/slurmd/munge, the extern step (PrologFlags=contain),
# cgroup/v1, the namespaced test sshd and the test users all work, so any
# failure of run.sh with our module is the module's.
#
# Needs root and setup-host.sh. Uses port 2299.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

port=2299
user=adopt-alice
uid=$(id -u "$user")
node=$ADOPT_NODE
module=$(debian_module_path)
work=$(mktemp -d /tmp/slurm-adopt-smoke.XXXXXX)
bgpids=()
cleanup() {
    local p
    for p in "${bgpids[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_test_sshd "$port" || true
    cancel_all_test_jobs || true
    rm -rf "$work"
}
trap cleanup EXIT

# pam_unix first, as a real sshd account stack has it; deny on failures
# (the module's allow/ignore defaults would hide a broken setup).
printf 'account required pam_unix.so\naccount required %s action_adopt_failure=deny action_generic_failure=deny\n' \
    "$module" >"$work/account"

echo "--- smoke test: Debian's $module, sshd on 127.0.0.1:$port, node $node"
cancel_all_test_jobs
start_test_sshd "$port" "$work/account"

# 1. No job: denied. sshd sends the module's PAM_ERROR_MSG as a userauth
# banner before disconnecting; the client prints it at LogLevel INFO.
rc=0
ssh_as "$user" "$port" true 2>"$work/nojob.err" || rc=$?
echo "    client stderr on denial (exit $rc):"
sed 's/^/    | /' "$work/nojob.err"
check "no job: ssh is denied (exit 255)" test "$rc" -eq 255
check "no job: client sees 'you have no active jobs on this node'" \
    grep -q "Access denied by pam_slurm_adopt: you have no active jobs on this node" "$work/nojob.err"

# 2. One running job: the login lands in its extern step.
job=$(submit_job "$user")
wait_job_running "$job"
echo "    job $job running"
rc=0
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_as "$user" "$port" 'cat /proc/self/cgroup; echo "SLURM_JOB_ID=${SLURM_JOB_ID:-unset}"' \
    >"$work/adopt.out" 2>"$work/adopt.err" || rc=$?
check "one job: ssh succeeds" test "$rc" -eq 0
echo "    cgroup lines of the adopted shell:"
grep -E 'slurm|^0::' "$work/adopt.out" | sed 's/^/    | /' || true
check "one job: freezer cgroup is job $job's step_extern" \
    grep -Eq "^[0-9]+:freezer:/slurm_${node}/uid_${uid}/job_${job}/step_extern\$" "$work/adopt.out"
check "one job: memory cgroup is job $job's step_extern" \
    grep -Eq "^[0-9]+:memory:/slurm_${node}/uid_${uid}/job_${job}/step_extern\$" "$work/adopt.out"
check "one job: SLURM_JOB_ID=$job in the remote environment" grep -qx "SLURM_JOB_ID=$job" "$work/adopt.out"

# Another user without a job is still denied while alice has one.
check_not "one job: adopt-bob (no job) is denied" ssh_as adopt-bob "$port" true

# A running session is in the job: scontrol listpids shows the remote shell.
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_as "$user" "$port" 'echo "pid=$$"; exec sleep 30' >"$work/bg.out" 2>&1 </dev/null &
sshpid=$!
bgpids+=("$sshpid")
if wait_for_line "$work/bg.out" '^pid=[0-9]+$'; then
    rpid=$(sed -n 's/^pid=//p' "$work/bg.out" | head -n1)
    scontrol listpids "$job" >"$work/listpids" 2>&1 || true
    # shellcheck disable=SC2016 # awk program
    check "one job: scontrol listpids $job lists the session's pid $rpid" \
        awk -v p="$rpid" '$1 == p { found = 1 } END { exit !found }' "$work/listpids"
else
    check "one job: background ssh session started ($(tr '\n' ' ' <"$work/bg.out"))" false
fi

# 3. scancel ends the running session.
t0=$SECONDS
cancel_job "$job"
ended=no
wait_until 10 _pid_gone "$sshpid" && ended=yes
check "scancel: the ssh session ended ($((SECONDS - t0)) s after scancel)" test "$ended" = yes
echo "    client after scancel: $(tr '\r\n' '  ' <"$work/bg.out")"

# 4. root is not subject to the module.
check "root logs in" ssh_as root "$port" true

summary
