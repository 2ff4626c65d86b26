#!/usr/bin/env bash
# Tier 2, issue 12's hostile-peer suite on the real node. Fake stepds of
# the slurmd shim, run by root so their sockets are root-owned, sit in the
# real SlurmdSpoolDir next to the real jobs' and misbehave: garbage,
# truncated and oversize lengths, the handshake then silence, FIFO,
# regular-file and /dev/zero namespace fds, more fds than asked, a close
# on ADD_EXTERN_PID, a broken or hung X11 reply, a hung ADD_EXTERN_PID.
# Then munged and slurmd stopped (SIGSTOP) for a login of a user with two
# real jobs, so the callerid RPC runs and must fail in time; and last a
# listener running as nobody behind a root-owned socket.
#
# Each case is one ssh login through a real sshd; the module's decision
# line after a mark gives the decision, the reason and `usec=`, which must
# stay under timeout_ms. Where a case waits out a deadline (the scan's
# half of the budget, the RPC's half of what is left, or the login's
# whole budget), the overshoot past it is printed. Ends with the table
# "case / decision / reason / usec / budget / overshoot" and, first, the
# pam_wrapper tier's own table of the same faults (with fd counts).
#
# Needs setup-host.sh and the release build (cargo build --release
# --workspace). Run it under `flock /tmp/real-slurm.lock`: slurmd, munged,
# sshd and auth.log are shared. Whatever happens, the trap continues
# munged and slurmd and removes every fake stepd and socket it made.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

release=$repo/target/release
for f in "$release/libpam_adopt.so" "$release/slurmd-shim"; do
    [[ -f $f ]] || { echo "hostile.sh: $f missing: cargo build --release --workspace" >&2; exit 1; }
done
# sshd loads modules as root: a root-owned copy outside the build tree.
# pam_syslog tags lines with the module's file name, so this run's lines
# are told from those of any other login on the host by the name alone.
module=/usr/local/lib/slurm-adopt-tests/pam_adopt-hostile.so
tag=pam_adopt-hostile
install -D -m 0644 "$release/libpam_adopt.so" "$module"

port=2231
user=adopt-alice
uid=$(id -u "$user")
node=$ADOPT_NODE
spool=$(adopt_spool_dir)
auth_log=/var/log/auth.log
timeout_ms=2000
# What the module may take past a deadline it waited out, to notice, log
# and return: the issue's "a few ms" (as the pam_wrapper tier allows).
allowance_ms=10
work=$(mktemp -d /tmp/slurm-adopt-hostile.XXXXXX)
chmod 0755 "$work"
# The shim as nobody needs a binary it may run.
shim=$work/slurmd-shim
install -m 0755 "$release/slurmd-shim" "$shim"
# Fake job ids far above what this host's slurmctld hands out.
first_fake_job=990001
fake_sockets=()
shim_pid=""
nobody_dir=""
stopped=()

continue_daemons() {
    local pidfile
    for pidfile in "${stopped[@]}"; do
        [[ -f $pidfile ]] && kill -CONT "$(cat "$pidfile")" 2>/dev/null || true
    done
    stopped=()
}
stop_shim() {
    if [[ -n $shim_pid ]]; then
        kill "$shim_pid" 2>/dev/null || true
        wait "$shim_pid" 2>/dev/null || true
        shim_pid=""
    fi
    local s
    for s in "${fake_sockets[@]}"; do rm -f "$s"; done
    fake_sockets=()
}
cleanup() {
    continue_daemons
    stop_shim
    [[ -z $nobody_dir ]] || rm -rf "$nobody_dir"
    stop_test_sshd "$port" || true
    cancel_all_test_jobs || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fake_stepd JOB FAULT [SHIM-OPTIONS...]: one fake extern step of the
# user's, root-run, in the real spool dir.
fake_stepd() {
    local job=$1 fault=$2
    shift 2
    stop_shim
    local socket=$spool/${node}_$job.4294967292
    fake_sockets+=("$socket")
    "$shim" stepd --spool "$spool" --node "$node" --step "$job:$uid:$fault" "$@" >"$work/shim.log" 2>&1 &
    shim_pid=$!
    wait_until 5 test -S "$socket" ||
        { echo "hostile.sh: the stepd shim did not come up"; cat "$work/shim.log"; return 1; }
}

# sshd_with ARGS: (re)start the test sshd unless it runs with these
# module arguments already.
sshd_args=unset
sshd_with() {
    [[ $1 == "$sshd_args" ]] && return 0
    printf 'account required pam_unix.so\naccount required %s timeout_ms=%s %s\n' \
        "$module" "$timeout_ms" "$1" >"$work/account"
    start_test_sshd "$port" "$work/account"
    sshd_args=$1
}

# The decision line of the last login after MARK: "decision reason usec job".
decision_after() {
    local mark=$1
    log_has "$auth_log" "$mark" "$tag\\(sshd:account\\): user=$user .* usec=" 5 >/dev/null 2>&1 || true
    { log_since "$auth_log" "$mark" | grep -E "$tag\\(sshd:account\\): user=$user " || true; } | tail -n1 |
        sed -nE 's/.* decision=([a-z]+) job=([^ ]+) reason=([a-z_]+) callerid=([^ ]+) usec=([0-9]+).*/\1 \3 \5 \2 \4/p'
}

rows=()
# login_case NAME WANT_DECISION WANT_REASON BUDGET: one ssh login, then
# its checks. BUDGET: the deadline the case waits out (none, scan =
# timeout_ms/2, rpc = about half of what the scan left, login =
# timeout_ms). Sets `decided_job` and `decided_callerid` from the line.
login_case() {
    local name=$1 want_decision=$2 want_reason=$3 budget=$4 mark got decision reason usec
    mark=$(log_mark "$auth_log")
    local allowed=no
    ssh_as "$user" "$port" true </dev/null 2>"$work/ssh.err" && allowed=yes
    got=$(decision_after "$mark")
    read -r decision reason usec decided_job decided_callerid <<<"${got:-none none 99999999 - -}"
    check "$name: decision=$want_decision reason=$want_reason (logged: ${got:-no line})" \
        test "$decision $reason" = "$want_decision $want_reason"
    local want_allowed=no
    [[ $want_decision == deny ]] || want_allowed=yes
    check "$name: the ssh login is $([[ $want_allowed == yes ]] && echo let in || echo refused)" test "$allowed" = "$want_allowed"
    local budget_us="" overshoot=-
    case $budget in
        scan | rpc) budget_us=$((timeout_ms * 500)) ;;
        scan+rpc) budget_us=$((timeout_ms * 750)) ;;
        login) budget_us=$((timeout_ms * 1000)) ;;
    esac
    if [[ $budget == login ]]; then
        # Waiting out the whole budget, the module ends just after it.
        check "$name: the module decided within timeout_ms=$timeout_ms and ${allowance_ms} ms to return (usec=$usec)" \
            test "$usec" -le $(((timeout_ms + allowance_ms) * 1000))
    else
        check "$name: the module decided within timeout_ms=$timeout_ms (usec=$usec)" test "$usec" -lt $((timeout_ms * 1000))
    fi
    if [[ -n $budget_us ]]; then
        overshoot=$(awk -v u="$usec" -v b="$budget_us" 'BEGIN { printf "%+.1fms", (u - b) / 1000 }')
        # The stepd deadlines are known exactly; the RPC's is half of what
        # the scan left, which the line does not show: printed only.
        if [[ $budget == scan || $budget == login ]]; then
            check "$name: at most ${allowance_ms} ms past the deadline it waited out ($overshoot)" \
                test "$usec" -le $((budget_us + allowance_ms * 1000))
        fi
    fi
    rows+=("$(printf '%-40s %-8s %-18s %9s %-8s %10s' "$name" "$decision" "$reason" "$usec" "$budget" "$overshoot")")
}

if [[ -z ${HOSTILE_SKIP_PAM_WRAPPER:-} ]]; then
echo "=== pam_wrapper tier: the same faults, fds counted before pam_start and after pam_end"
if command -v cargo >/dev/null; then
    (cd "$repo" && cargo test --quiet -p slurm-adopt-tests --test pam_wrapper \
        hostile_stepds_end_in_their_decision_in_time_without_leaking_fds -- --nocapture) \
        >"$work/pam-wrapper.out" 2>&1 && pw=0 || pw=$?
    sed -n '/^case /,/^test /p' "$work/pam-wrapper.out"
    check "pam_wrapper tier: the hostile-stepd table passes" test "$pw" -eq 0
    ((pw == 0)) || tail -n 30 "$work/pam-wrapper.out"
else
    check "pam_wrapper tier: cargo is on PATH to run the hostile-stepd table" false
fi
fi

echo "=== hostile stepds, root-owned, in $spool (timeout_ms=$timeout_ms)"
cancel_all_test_jobs
mkfifo "$work/ns-fifo"
echo "not a namespace" >"$work/ns-regular"
fake_job=$first_fake_job

# hostile NAME FAULT SHIM-OPTIONS MODULE-ARGS DECISION REASON BUDGET
hostile() {
    local name=$1 fault=$2 shim_opts=$3 args=$4
    shift 4
    sshd_with "$args"
    # shellcheck disable=SC2086 # the shim options are words
    fake_stepd "$fake_job" "$fault" $shim_opts
    login_case "$name" "$@"
    stop_shim
    fake_job=$((fake_job + 1))
}
v2511="--protocol-version 25.11"
hostile "garbage" garbage "" "" deny stepd_unreachable none
hostile "truncated x11 length" truncated "" "join_container=false" adopt only_job none
hostile "truncated namespace count (25.11)" truncated "$v2511" "disable_x11=1" deny adopt_failed none
hostile "oversize x11 length" oversize "" "join_container=false" adopt only_job none
hostile "oversize namespace count (25.11)" oversize "$v2511" "disable_x11=1" deny adopt_failed none
hostile "handshake then silence" hang "" "" deny stepd_unreachable scan
hostile "silent handshake" hang-handshake "" "" deny stepd_unreachable scan
hostile "slow=5000 (every reply)" slow=5000 "" "" deny stepd_unreachable scan
for v in 22.05 25.11; do
    hostile "fifo namespace fd ($v)" none "--protocol-version $v --namespace $work/ns-fifo" "" deny adopt_failed none
    hostile "regular-file namespace fd ($v)" none "--protocol-version $v --namespace $work/ns-regular" "" deny adopt_failed none
    hostile "/dev/zero namespace fd ($v)" none "--protocol-version $v --namespace /dev/zero" "" deny adopt_failed none
    hostile "extra fds ($v)" extra-fds "--protocol-version $v" "" deny adopt_failed none
done
hostile "close on ADD_EXTERN_PID" close-on-add-pid "" "" deny job_vanished none
hostile "bad x11 (1 GiB length, close)" bad-x11 "" "" adopt only_job none
hostile "hung ADD_EXTERN_PID" hang-add-pid "" "" deny adopt_failed login
hostile "hung x11 reply" hang-x11 "" "join_container=false" adopt only_job login

echo "=== a real job beside a hung stepd of another user"
real_job=$(submit_job "$user")
wait_job_running "$real_job"
sshd_with ""
socket=$spool/${node}_$fake_job.4294967292
fake_sockets+=("$socket")
"$shim" stepd --spool "$spool" --node "$node" --step "$fake_job:$(id -u adopt-bob):hang-handshake" >"$work/shim.log" 2>&1 &
shim_pid=$!
wait_until 5 test -S "$socket" || { echo "hostile.sh: the stepd shim did not come up"; cat "$work/shim.log"; exit 1; }
# The silent stepd may be the user's, so only_job is not claimed; the
# login comes from outside any job, so callerid finds none.
# slurmd's own callerid handler asks every stepd of the node, the silent
# one too, so the RPC fails at its deadline: scan, then RPC.
login_case "real job + another user's silent stepd" adopt newest_job scan+rpc
check "real job + another user's silent stepd: the real job $real_job is adopted" test "$decided_job" = "$real_job"
stop_shim
fake_job=$((fake_job + 1))

echo "=== munged and slurmd stopped, a user with two real jobs (callerid runs)"
second_job=$(submit_job "$user")
wait_job_running "$second_job"
# stopped_login NAME PIDFILE: the login with that daemon SIGSTOPped.
stopped_login() {
    local name=$1 pidfile=$2
    stopped+=("$pidfile")
    kill -STOP "$(cat "$pidfile")"
    login_case "$name" adopt newest_job rpc
    continue_daemons
    check "$name: callerid failed before action_unknown picked (callerid=$decided_callerid)" test "$decided_callerid" = failed
    check "$name: the newest job $second_job is adopted" test "$decided_job" = "$second_job"
}
stopped_login "munged stopped, two jobs" /run/munge/munged.pid
stopped_login "slurmd stopped, two jobs" /run/slurmd.pid
cancel_all_test_jobs

# After the peer-credential checks (SO_PEERCRED) land: a listener running
# as nobody behind a socket chowned to root passes every path check and
# must still be skipped, with its own reason.
case_unprivileged_listener() {
    echo "=== a listener running as nobody behind a root-owned socket"
    sshd_with ""
    # Same filesystem as the spool dir, so the socket can be moved in.
    nobody_dir=$(mktemp -d "$(dirname "$spool")/slurm-adopt-hostile.XXXXXX")
    chown nobody "$nobody_dir"
    local socket=$spool/${node}_$fake_job.4294967292 bound=$nobody_dir/${node}_$fake_job.4294967292
    fake_sockets+=("$socket")
    setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
        "$shim" stepd --spool "$nobody_dir" --node "$node" --step "$fake_job:$uid" >"$work/shim.log" 2>&1 &
    shim_pid=$!
    wait_until 5 test -S "$bound" || { echo "hostile.sh: the nobody shim did not come up"; cat "$work/shim.log"; return 1; }
    mv "$bound" "$socket"
    chown root:root "$socket"
    check "unprivileged listener: its socket is root-owned in the spool dir" test "$(stat -c %U "$socket")" = root
    login_case "unprivileged listener (nobody)" deny stepd_untrusted none
    stop_shim
}
case_unprivileged_listener

echo
echo "hostile peers on the real node, timeout_ms=$timeout_ms"
echo "budget: the deadline the case waits out (scan = half of timeout_ms; rpc = the callerid RPC's half of what the scan left, shown against timeout_ms/2; scan+rpc = both in turn, 3/4 of timeout_ms; login = timeout_ms)"
printf '%-40s %-8s %-18s %9s %-8s %10s\n' case decision reason usec budget overshoot
printf '%s\n' "${rows[@]}"
echo
summary
