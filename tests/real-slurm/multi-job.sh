#!/usr/bin/env bash
# Tier 2, several jobs per user: a login from inside job J (srun --jobid=J
# --overlap ssh ...) must land in J, chosen by the callerid RPC to the
# source node's slurmd (here the same node); a login from outside any job
# follows action_unknown; with slurmd stopped the login follows
# action_unknown within the login deadline. Run with our pam_adopt.so and
# with Debian's pam_slurm_adopt.so, then a parity table.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

ours=/usr/local/lib/slurm-adopt-tests/pam_adopt.so
theirs=$(debian_module_path)
[[ -f $ours ]] || { echo "multi-job.sh: $ours missing: run run.sh first" >&2; exit 1; }
port=2223
user=adopt-alice
home=$(getent passwd "$user" | cut -d: -f6)
work=$(mktemp -d /tmp/slurm-adopt-multi.XXXXXX)
trap 'stop_test_sshd $port || true; cancel_all_test_jobs || true; rm -rf "$work"' EXIT

# The ssh client runs as the user inside a job step: it needs a key it can read.
install -m 0600 -o "$user" -g "$user" "$ADOPT_KEYDIR/$user" "$home/.ssh/adopt-test-key"

declare -A result
record() { result["$1|$2"]=$3; }

# Our module must pass; Debian's is only recorded for the parity table (its
# v1 "newest" pick is arbitrary on Debian's MULTIPLE_SLURMD build).
expect() {
    local m=$1
    shift
    if [[ $m == ours ]]; then check "$@"; fi
}

stack() {
    local which=$1 extra=${2:-} file=$work/account-$1-${RANDOM}
    if [[ $which == ours ]]; then
        printf 'account required pam_unix.so\naccount required %s %s\n' "$ours" "$extra" >"$file"
    else
        printf 'account required pam_unix.so\naccount required %s action_adopt_failure=deny action_generic_failure=deny %s\n' "$theirs" "$extra" >"$file"
    fi
    echo "$file"
}

# ssh from inside job $1 (a new step on this node), printing the remote
# shell's job from its cgroup.
ssh_from_job() {
    local job=$1
    runuser -u "$user" -- srun --jobid="$job" --overlap --quiet --ntasks=1 \
        ssh -F none -i "$home/.ssh/adopt-test-key" -p "$port" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        "$user@127.0.0.1" 'grep -o "job_[0-9]*/step_extern" /proc/self/cgroup | head -n1' 2>&1 </dev/null
}

landed_job() { sed -n 's|^job_\([0-9]*\)/step_extern$|\1|p' | head -n1; }

# try_login: one ssh as the user from outside any job. Sets the caller's
# `out` (allowed, denied, or denied+msg with "unable to determine source
# job") and `ms` (the whole ssh, in milliseconds).
try_login() {
    local err=$work/login.err t0
    t0=$(date +%s%N)
    out=denied
    ssh_as "$user" "$port" true 2>"$err" && out=allowed
    [[ $out == denied ]] && grep -q "unable to determine source job" "$err" && out=denied+msg
    ms=$((($(date +%s%N) - t0) / 1000000))
    return 0
}

scenarios() {
    local m=$1 label
    label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
    echo "--- several jobs with $label"
    cancel_all_test_jobs
    local j1 j2 got
    j1=$(submit_job "$user"); wait_job_running "$j1"
    sleep 1.1 # distinct extern-step start times for "newest"
    j2=$(submit_job "$user"); wait_job_running "$j2"

    start_test_sshd "$port" "$(stack "$m")"
    local which_job
    [[ $m == ours ]] && { callerid_job=$j1; callerid_mark=$(log_mark /var/log/auth.log); }
    for j in "$j1" "$j2"; do
        which_job=$([[ $j == "$j1" ]] && echo older || echo newest)
        got=$(ssh_from_job "$j" | landed_job)
        record "from inside the $which_job job: lands in it" "$m" "$([[ $got == "$j" ]] && echo yes || echo "no (${got:-denied})")"
        expect "$m" "$label: ssh from inside job $j ($which_job) lands in job $j" test "$got" = "$j"
    done
    local outside_mark
    outside_mark=$(log_mark /var/log/auth.log)
    got=$(ssh_as "$user" "$port" 'grep -o "job_[0-9]*/step_extern" /proc/self/cgroup | head -n1' 2>/dev/null | landed_job || true)
    [[ $m != ours ]] || agrees_with_module "outside any job" "$outside_mark" "$user" ""
    local which=denied
    [[ -n $got ]] && which="job $got ($([[ $got == "$j2" ]] && echo newest || echo older))"
    record "outside any job: newest" "$m" "$which"
    expect "$m" "$label: ssh from outside any job lands in the newest job ($j2)" test "$got" = "$j2"
    stop_test_sshd "$port"

    start_test_sshd "$port" "$(stack "$m" action_unknown=deny)"
    local out ms mark usec
    mark=$(log_mark /var/log/auth.log)
    try_login
    [[ $m != ours ]] || agrees_with_module "action_unknown=deny" "$mark" "$user" "action_unknown=deny"
    record "action_unknown=deny: denied" "$m" "$out"
    expect "$m" "$label: action_unknown=deny refuses a login from outside any job" test "$out" = denied+msg

    # slurmd hung (SIGSTOP: the kernel still accepts the connection, no
    # reply ever comes): the worst case for the RPC. The login must follow
    # action_unknown within the login budget (timeout_ms=2000).
    mark=$(log_mark /var/log/auth.log)
    kill -STOP "$(cat /run/slurmd.pid)"
    try_login
    kill -CONT "$(cat /run/slurmd.pid)"
    record "slurmd hung: action_unknown" "$m" "$out in ${ms} ms"
    if [[ $m == ours ]]; then
        # A missing line leaves usec empty, and the budget check fails.
        log_has /var/log/auth.log "$mark" "pam_adopt\(sshd:account\): user=$user .* reason=unknown_deny callerid=failed usec=" 5 || true
        usec=$(log_since /var/log/auth.log "$mark" | sed -nE "s/.*pam_adopt\(sshd:account\): user=$user .* reason=unknown_deny callerid=failed usec=([0-9]+).*/\1/p" | tail -n1)
        echo "    slurmd hung: the module decided in ${usec:-?} us; the whole ssh took $ms ms"
        expect "$m" "$label: slurmd hung, action_unknown=deny denies with the message" test "$out" = denied+msg
        expect "$m" "$label: slurmd hung, decided within the 2000 ms login budget (usec=${usec:-none})" test "${usec:-99999999}" -le 2000000
    fi

    # slurmd stopped: the callerid RPC is refused; the login must follow
    # action_unknown, and quickly.
    kill "$(cat /run/slurmd.pid)"
    wait_until 10 bash -c '! pgrep --ns $$ -x slurmd >/dev/null'
    try_login
    record "slurmd stopped: action_unknown" "$m" "$out in ${ms} ms"
    # The whole ssh (key exchange included) within the 2 s login budget.
    expect "$m" "$label: slurmd stopped, action_unknown=deny decides within 2 s ($ms ms)" test "$out" = denied+msg -a "$ms" -le 2000
    stop_test_sshd "$port"
    "$here/setup-host.sh" >/dev/null
    cancel_job "$j1"
    cancel_job "$j2"
}

# Set by our module's run: the older job, which only callerid can pick,
# and auth.log's size before the logins from inside the jobs.
callerid_job=none callerid_mark=0
scenarios ours
check "pam_adopt: the syslog line names the callerid reason" \
    log_has /var/log/auth.log "$callerid_mark" "pam_adopt\(sshd:account\): user=$user .* decision=adopt job=$callerid_job reason=callerid_match callerid=$callerid_job "
scenarios theirs

echo
echo "parity, several jobs: pam_adopt vs Debian's pam_slurm_adopt (22.05)"
printf '%-40s %-22s %-22s\n' scenario pam_adopt pam_slurm_adopt
for s in "from inside the older job: lands in it" "from inside the newest job: lands in it" "outside any job: newest" \
    "action_unknown=deny: denied" "slurmd hung: action_unknown" "slurmd stopped: action_unknown"; do
    printf '%-40s %-22s %-22s\n' "$s" "${result["$s|ours"]:-?}" "${result["$s|theirs"]:-?}"
done
echo
summary
