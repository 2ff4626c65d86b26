#!/usr/bin/env bash
# Tier 2: ssh logins through a real sshd and the real PAM stack on a real
# Slurm node (this host), once with our pam_adopt.so and once with Debian's
# pam_slurm_adopt.so, then a parity table.
#
# Needs setup-host.sh to have run and the release build of pam_adopt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

ours_so="$repo/target/release/libpam_adopt.so"
[[ -f $ours_so ]] || { echo "run.sh: $ours_so missing: cargo build --release -p pam_adopt" >&2; exit 1; }
# sshd's PAM loads modules as root: keep our copy root-owned, outside the build tree.
install -D -m 0644 "$ours_so" /usr/local/lib/slurm-adopt-tests/pam_adopt.so
ours=/usr/local/lib/slurm-adopt-tests/pam_adopt.so
theirs=$(debian_module_path)
port=2222
user=adopt-alice
work=$(mktemp -d /tmp/slurm-adopt-real.XXXXXX)
trap 'stop_test_sshd $port || true; cancel_all_test_jobs || true; rm -rf "$work"' EXIT

declare -A result

# account stack for MODULE (ours|theirs) with extra options
stack() {
    local which=$1 extra=${2:-} file=$work/account-$1
    if [[ $which == ours ]]; then
        printf 'account required pam_unix.so\naccount required %s %s\naccount required pam_permit.so\n' "$ours" "$extra" >"$file"
    else
        printf 'account required pam_unix.so\naccount required %s action_adopt_failure=deny action_generic_failure=deny %s\naccount required pam_permit.so\n' "$theirs" "$extra" >"$file"
    fi
    echo "$file"
}

record() { result["$1|$2"]=$3; }

# Run ssh in the background, wait for its first output line (the remote
# shell's pid), and leave the session running.
ssh_session() {
    local out=$1; shift
    ssh_as "$user" "$port" "$@" >"$out" 2>&1 &
    echo $!
}


scenarios() {
    local m=$1 label
    label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
    echo "--- scenarios with $label"

    start_test_sshd "$port" "$(stack "$m")"

    # 1. no job: denied, with the message on the client's stderr
    cancel_all_test_jobs
    local err=$work/$m-nojob.err mark
    mark=$(log_mark /var/log/auth.log)
    if ssh_as "$user" "$port" true 2>"$err"; then record "no job: denied" "$m" "allowed"
    elif grep -q "you have no active jobs on this node" "$err"; then record "no job: denied" "$m" "denied+msg"
    else record "no job: denied" "$m" "denied"; fi
    check "$label: user without a job is denied with the message" test "${result["no job: denied|$m"]}" = denied+msg
    [[ $m != ours ]] || agrees_with_module "no job" "$mark" "$user" ""

    # 2. one job: the login lands in the job's extern step
    local job out pid sshpid
    job=$(submit_job "$user")
    wait_job_running "$job"
    out=$work/$m-adopt.out
    [[ $m == ours ]] && { adopt_job=$job; adopt_mark=$(log_mark /var/log/auth.log); }
    # shellcheck disable=SC2016 # expanded by the remote shell
    sshpid=$(ssh_session "$out" 'echo pid=$$; echo jobid=${SLURM_JOB_ID:-none}; cat /proc/self/cgroup; sleep 60')
    if wait_for_line "$out" '^pid='; then
        pid=$(sed -n 's/^pid=//p' "$out" | head -n1)
        local in_step=no listed=no envset=no
        grep -q "job_${job}/step_extern" "$out" && in_step=yes
        scontrol listpids "$job" 2>/dev/null | awk '{print $1}' | grep -qx "$pid" && listed=yes
        grep -qx "jobid=$job" "$out" && envset=yes
        record "one job: in step_extern" "$m" "$in_step"
        record "one job: scontrol listpids" "$m" "$listed"
        record "one job: SLURM_JOB_ID" "$m" "$envset"
        check "$label: login lands in job $job's step_extern" test "$in_step" = yes
        check "$label: scontrol listpids $job lists the remote shell" test "$listed" = yes
        check "$label: SLURM_JOB_ID=$job in the remote shell" test "$envset" = yes
        [[ $m != ours ]] || agrees_with_module "one job" "$adopt_mark" "$user" ""
    else
        record "one job: in step_extern" "$m" "login failed"
        check "$label: login with a job succeeds ($(tr '\n' ' ' <"$out"))" false
    fi

    # 3. scancel ends the ssh session
    cancel_job "$job"
    local ended=no
    for _ in $(seq 1 150); do
        kill -0 "$sshpid" 2>/dev/null || { ended=yes; break; }
        sleep 0.1
    done
    record "scancel ends session" "$m" "$ended"
    check "$label: scancel ends the ssh session" test "$ended" = yes
    kill "$sshpid" 2>/dev/null || true

    # 4. root is ignored (pam_permit decides)
    local rootok=no
    mark=$(log_mark /var/log/auth.log)
    ssh_as root "$port" true 2>/dev/null && rootok=yes
    record "root ignored" "$m" "$rootok"
    check "$label: root logs in" test "$rootok" = yes
    [[ $m != ours ]] || agrees_with_module "root" "$mark" root ""
    stop_test_sshd "$port"

    # 5. a service not in service= is ignored, even with a job
    start_test_sshd "$port" "$(stack "$m" service=some-other-service)"
    job=$(submit_job "$user")
    wait_job_running "$job"
    out=$work/$m-svc.out
    local svc=denied
    mark=$(log_mark /var/log/auth.log)
    if ssh_as "$user" "$port" 'cat /proc/self/cgroup' >"$out" 2>&1; then
        svc=$(grep -q step_extern "$out" && echo adopted || echo "ignored")
    fi
    record "other service: ignored" "$m" "$svc"
    check "$label: a service not listed is ignored" test "$svc" = ignored
    [[ $m != ours ]] || agrees_with_module "other service" "$mark" "$user" "service=some-other-service"
    stop_test_sshd "$port"

    # 6. SLURM_CONF in sshd's environment points at a hostile config
    mkdir -p "$work/hostile-spool"
    sed "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$work/hostile-spool|" /etc/slurm/slurm.conf >"$work/hostile.conf"
    SLURM_CONF=$work/hostile.conf start_test_sshd "$port" "$(stack "$m")"
    out=$work/$m-hostile.out
    local hostile=denied
    mark=$(log_mark /var/log/auth.log)
    if ssh_as "$user" "$port" 'cat /proc/self/cgroup' >"$out" 2>&1; then
        hostile=$(grep -q "job_${job}/step_extern" "$out" && echo adopted || echo "not adopted")
    fi
    record "SLURM_CONF hostile: still adopted" "$m" "$hostile"
    if [[ $m == ours ]]; then
        check "$label: SLURM_CONF in the environment changes nothing" test "$hostile" = adopted
        SLURM_CONF=$work/hostile.conf agrees_with_module "SLURM_CONF hostile" "$mark" "$user" ""
    fi
    stop_test_sshd "$port"
    cancel_job "$job"
}

# Set by scenario 2 with our module: its job, and auth.log's size before
# its login, so only that login's decision line can pass the check below.
adopt_job=none adopt_mark=0
scenarios ours
# The decision line in syslog, with the reason code.
check "pam_adopt: one syslog line per decision in /var/log/auth.log" \
    log_has /var/log/auth.log "$adopt_mark" "pam_adopt\(sshd:account\): user=$user uid=[0-9]+ service=sshd rhost=127.0.0.1 pid=[0-9]+ decision=adopt job=$adopt_job reason=only_job callerid=- usec=[0-9]+"
scenarios theirs

echo
echo "parity: pam_adopt vs Debian's pam_slurm_adopt (22.05)"
printf '%-34s %-14s %-14s\n' scenario pam_adopt pam_slurm_adopt
for s in "no job: denied" "one job: in step_extern" "one job: scontrol listpids" "one job: SLURM_JOB_ID" \
         "scancel ends session" "root ignored" "other service: ignored" "SLURM_CONF hostile: still adopted"; do
    printf '%-34s %-14s %-14s\n' "$s" "${result["$s|ours"]:-?}" "${result["$s|theirs"]:-?}"
done
echo
summary
