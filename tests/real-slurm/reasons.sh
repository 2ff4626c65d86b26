#!/usr/bin/env bash
# Tier 2, every reason code in a real log line. For each `reason=` code the
# README lists, this sets up the situation that gives it, runs one PAM
# transaction through the real libpam (pam-probe as root, a PAM service of
# its own in /etc/pam.d, the module logging through rsyslog), reads the
# decision line from /var/log/auth.log after a mark, and runs `adoptctl
# check` on the same situation: both must give the expected decision and
# reason. The stepds are the shim's, root-owned sockets in a spool dir of
# this script's, so faults (a hung stepd, a refused or cancelled
# adoption) are real sockets to the module. A code the README lists that
# no case here or in run.sh/multi-job.sh gives fails the script.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

release=$repo/target/release
module=$release/libpam_adopt.so
probe=$release/pam-probe
shim=$release/slurmd-shim
adoptctl=$release/adoptctl
for f in "$module" "$probe" "$shim" "$adoptctl"; do
    [[ -x $f || -f $f ]] || { echo "reasons.sh: $f missing: cargo build --release --workspace" >&2; exit 1; }
done

service=adopt-reasons
pam_file=/etc/pam.d/$service
node=reasons
user=adopt-alice
uid=$(id -u "$user")
other_uid=$(id -u adopt-bob)
auth_log=/var/log/auth.log
work=$(mktemp -d /tmp/slurm-adopt-reasons.XXXXXX)
spool=$work/spool
conf=$work/slurm.conf
shim_pid=""
slurmd_pid=""
nobody_dir=""

cleanup() {
    stop_shim
    stop_slurmd
    rm -f "$pam_file"
    rm -rf "$work" ${nobody_dir:+"$nobody_dir"}
}
trap cleanup EXIT

install -d -m 0755 "$spool"
# A port for the shim's slurmd: free now, on loopback.
slurmd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$conf" <<EOF
ClusterName=reasons
SlurmctldHost=localhost
SlurmUser=root
SlurmdSpoolDir=$spool
SlurmdPort=$slurmd_port
NodeName=$node CPUs=1
EOF

# stepds STEP...: serve these steps (JOB:UID[:FAULT]) in the spool dir.
stepds() {
    stop_shim
    local args=() s
    for s in "$@"; do args+=(--step "$s"); done
    "$shim" stepd --spool "$spool" --node "$node" "${args[@]}" >"$work/shim.log" 2>&1 &
    shim_pid=$!
    local want=$#
    wait_until 5 bash -c "(( \$(find '$spool' -maxdepth 1 -type s | wc -l) >= $want ))" ||
        { echo "reasons.sh: the stepd shim did not come up"; cat "$work/shim.log"; return 1; }
}
# untrusted_stepd JOB:UID: one stepd listening as nobody behind a
# root-owned socket in the spool. It binds in a directory of its own; the
# socket is moved into the spool and given to root, so every path check
# passes and only the listener's credentials (SO_PEERCRED) tell.
untrusted_stepd() {
    stop_shim
    local name=${node}_${1%%:*}.4294967292
    # Not under $work, which only root may enter.
    [[ -n $nobody_dir ]] || nobody_dir=$(mktemp -d /tmp/slurm-adopt-reasons-nobody.XXXXXX)
    chmod 0777 "$nobody_dir"
    local own=$nobody_dir
    setpriv --reuid nobody --regid nogroup --clear-groups -- \
        "$shim" stepd --spool "$own" --node "$node" --step "$1" >"$work/shim.log" 2>&1 &
    shim_pid=$!
    wait_until 5 test -S "$own/$name" ||
        { echo "reasons.sh: the stepd shim did not come up as nobody"; cat "$work/shim.log"; return 1; }
    mv "$own/$name" "$spool/$name"
    chown root:root "$spool/$name"
}
stop_shim() {
    if [[ -n $shim_pid ]]; then
        kill "$shim_pid" 2>/dev/null || true
        wait "$shim_pid" 2>/dev/null || true
        shim_pid=""
    fi
    find "$spool" -maxdepth 1 -type s -delete 2>/dev/null || true
}

# slurmd_shim ARGS...: (re)start the shim's slurmd on the conf's
# SlurmdPort, signing replies with the host's munged.
slurmd_shim() {
    stop_slurmd
    "$shim" slurmd --listen "127.0.0.1:$slurmd_port" --munge-socket /run/munge/munge.socket.2 \
        "$@" >"$work/slurmd.log" 2>&1 &
    slurmd_pid=$!
    wait_until 5 _port_listening "$slurmd_port" ||
        { echo "reasons.sh: the slurmd shim did not listen"; cat "$work/slurmd.log"; return 1; }
}
stop_slurmd() {
    if [[ -n $slurmd_pid ]]; then
        kill "$slurmd_pid" 2>/dev/null || true
        wait "$slurmd_pid" 2>/dev/null || true
        slurmd_pid=""
    fi
}

# The module's line for this service, written after byte offset $1.
decision_since() {
    local mark=$1 line=""
    for _ in $(seq 50); do
        line=$(log_since "$auth_log" "$mark" | grep -E "pam_adopt\\($service:account\\): user=" | tail -n1 || true)
        [[ -n $line ]] && break
        sleep 0.1
    done
    sed -nE 's/.* decision=([a-z]+) job=([^ ]+) reason=([a-z_]+) callerid=([^ ]+) usec=.*/\1 \3 \4/p' <<<"$line"
}

seen_reasons=()

# run_case NAME USER EXPECTED("decision reason callerid") MODULE-ARGS [PROBE-ARGS...]
# CHECK_WANT="decision reason" names what `adoptctl check` must print when
# it cannot agree with the module: the dry run never adopts, so where the
# adoption itself fails it shows the choice the module made before it.
run_case() {
    local name=$1 who=$2 want=$3 args=$4
    shift 4
    # The host's own job records (/run/slurm-adopt) belong to its real
    # spool, not to the shim's: a state dir of this script's, unless a
    # case names one (the later option wins).
    printf 'account required %s service=%s conf=%s nodename=%s state_dir=%s %s\n' \
        "$module" "$service" "$conf" "$node" "$work/no-records" "$args" >"$pam_file"
    local mark got
    mark=$(log_mark "$auth_log")
    "$probe" "$@" "$service" "$who" account >"$work/probe.out" 2>&1 || true
    got=$(decision_since "$mark")
    check "$name: the module logs decision/reason/callerid '$want'" test "$got" = "$want"
    local check_args=()
    [[ ${1:-} != --tcp-to ]] || check_args=(--from "$2" --to 127.0.0.1:22)
    local text rc=0
    # shellcheck disable=SC2086
    text=$("$adoptctl" check "$who" --service "$service" "${check_args[@]}" -- \
        service="$service" conf="$conf" nodename="$node" state_dir="$work/no-records" $args 2>&1) || rc=$?
    local line
    line=$(sed -nE 's/^decision line: .* decision=([a-z]+) job=([^ ]+) reason=([a-z_]+) callerid=([^ ]+) usec=.*/\1 \3 \4/p' <<<"$text")
    local module_dr=${got% *} check_dr=${line% *}
    if [[ -n ${CHECK_WANT:-} ]]; then
        check "$name: adoptctl check shows the choice before the adoption ('$CHECK_WANT')" test "$check_dr" = "$CHECK_WANT"
    else
        check "$name: adoptctl check gives the module's decision and reason ('$module_dr')" test "$check_dr" = "$module_dr"
    fi
    local want_rc=0 check_decision=${CHECK_WANT:-$want}
    [[ ${check_decision%% *} != deny ]] || want_rc=1
    check "$name: adoptctl check exits $want_rc" test "$rc" -eq "$want_rc"
    seen_reasons+=("$(cut -d' ' -f2 <<<"$got")")
}

echo "=== every reason code in a real decision line"
stop_shim
printf 'account required %s\n' "$module" >"$pam_file"
mark=$(log_mark "$auth_log")
"$probe" "$service" "$user" account >/dev/null 2>&1 || true
got=$(decision_since "$mark")
check "service_not_listed: a service not in service= is ignored, with a line" test "$got" = "ignore service_not_listed -"
seen_reasons+=(service_not_listed)

run_case "no_user" "" "deny no_user -" ""
run_case "unknown_user" adopt-nosuchuser "deny unknown_user -" ""
run_case "unknown_user, action_generic_failure=ignore" adopt-nosuchuser "ignore unknown_user -" "action_generic_failure=ignore"
run_case "root" root "ignore root -" ""
run_case "node_setup (no such slurm.conf)" "$user" "deny node_setup -" "conf=$work/missing.conf"

# A spool dir anyone may write to: a user could plant a socket there.
chmod 0777 "$spool"
run_case "spool (SlurmdSpoolDir writable by others)" "$user" "deny spool -" ""
chmod 0755 "$spool"

run_case "no_jobs" "$user" "deny no_jobs -" ""
stepds "7:$other_uid"
run_case "no_jobs beside another user's job" "$user" "deny no_jobs -" ""
stepds "7:$uid:hang"
run_case "stepd_unreachable (the user's stepd hangs)" "$user" "deny stepd_unreachable -" "timeout_ms=600"
# The user's own job, but served by a listener running as nobody: never
# asked, and not taken for "no jobs".
untrusted_stepd "7:$uid"
mark=$(log_mark "$auth_log")
run_case "stepd_untrusted (the listener runs as nobody)" "$user" "deny stepd_untrusted -" "action_no_jobs=ignore"
check "stepd_untrusted: the line before it names the socket, uid and pid" \
    log_has "$auth_log" "$mark" "stepd socket $spool/${node}_7.4294967292 is served by uid $(id -u nobody) \\(pid $shim_pid\\)" 2
# A job whose Prolog recorded it (the hooks' state dir layout, root's)
# but whose extern step is not up: waited for within timeout_ms, then
# refused with its own message, not "no active jobs".
stop_shim
state=$work/state
install -d -m 0755 "$state" "$state/users"
install -d -m 0700 "$state/users/$uid" "$state/users/$uid/started" "$state/users/$uid/ending"
touch "$state/users/$uid/started/41"
mark=$(log_mark "$auth_log")
run_case "job_starting (the Prolog recorded job 41, no extern step by timeout_ms)" "$user" "deny job_starting -" \
    "state_dir=$state timeout_ms=600"
check "job_starting: the user reads that job 41 is still starting" \
    grep -q "your job 41 is still starting on this node, try again shortly" "$work/probe.out"
check "job_starting: the line before it says the login waits for job 41" \
    log_has "$auth_log" "$mark" "job 41 of $user is starting on this node \\(its Prolog began [0-9]+ s ago\\): waiting for its extern step, [0-9]+ ms left" 2
# The same record, and the extern step comes up 0.5 s into the wait.
( sleep 0.5; exec "$shim" stepd --spool "$spool" --node "$node" --step "41:$uid" >"$work/late-shim.log" 2>&1 ) &
late_pid=$!
# adoptctl check runs after the module, with the stepd already up.
run_case "a starting job whose extern step comes up during the wait is adopted" "$user" "adopt only_job -" \
    "state_dir=$state timeout_ms=3000"
kill "$late_pid" 2>/dev/null || true
wait "$late_pid" 2>/dev/null || true
find "$spool" -maxdepth 1 -type s -delete
# A job between its extern step's exit and its Epilog looks the same; its
# Epilog moves the record to ending/ during the wait: no_jobs, not
# job_starting.
( sleep 0.5; mv "$state/users/$uid/started/41" "$state/users/$uid/ending/41" ) &
mover_pid=$!
mark=$(log_mark "$auth_log")
run_case "a job whose Epilog runs during the wait was ending: no_jobs" "$user" "deny no_jobs -" \
    "state_dir=$state timeout_ms=3000"
wait "$mover_pid" 2>/dev/null || true
check "ending job: the line says job 41 was ending, not starting" \
    log_has "$auth_log" "$mark" "job 41 was ending, not starting: its Epilog ran during the wait" 2
rm -f "$state/users/$uid/ending/41"
touch "$state/users/$uid/started/41"
# A record past the hooks' start grace (300 s) is a leftover: no wait.
touch -d '10 minutes ago' "$state/users/$uid/started/41"
run_case "a started record older than 300 s is a leftover: no_jobs" "$user" "deny no_jobs -" \
    "state_dir=$state timeout_ms=600"
# Records others could have written are not read.
touch "$state/users/$uid/started/41"
chmod 0777 "$state/users"
mark=$(log_mark "$auth_log")
run_case "job records in a directory others can write are not read: no_jobs" "$user" "deny no_jobs -" \
    "state_dir=$state timeout_ms=600"
check "job records refused: the warning names the directory" \
    log_has "$auth_log" "$mark" "job records not read: $state/users is not a directory of root's that only root can write" 2
rm -rf "$state"

stepds "8:$uid"
run_case "only_job" "$user" "adopt only_job -" ""
# One job answers, another of the user's hangs: the one found may not be
# the only one, so callerid is asked and only_job is not claimed.
stepds "8:$uid" "9:$uid:hang"
mark=$(log_mark "$auth_log")
run_case "one job found, one stepd silent: not only_job" "$user" "adopt newest_job no_tcp_socket" "timeout_ms=600"
check "one job found, one stepd silent: the line says unanswered=1" \
    log_has "$auth_log" "$mark" "pam_adopt\\($service:account\\): .* reason=newest_job .* unanswered=1\$" 2
stepds "8:$uid"
stepds "8:$uid:reject-add-pid"
CHECK_WANT="adopt only_job" run_case "adopt_failed (ADD_EXTERN_PID refused)" "$user" "deny adopt_failed -" ""
CHECK_WANT="adopt only_job" run_case "adopt_failed, action_adopt_failure=allow" "$user" "allow adopt_failed -" "action_adopt_failure=allow"
stepds "8:$uid:close-on-add-pid"
CHECK_WANT="adopt only_job" run_case "job_vanished (the stepd closes on ADD_EXTERN_PID)" "$user" "deny job_vanished -" ""

stepds "8:$uid" "9:$uid"
run_case "newest_job (two jobs, no TCP peer)" "$user" "adopt newest_job no_tcp_socket" ""
run_case "unknown_allow" "$user" "allow unknown_allow no_tcp_socket" "action_unknown=allow"
run_case "unknown_deny" "$user" "deny unknown_deny no_tcp_socket" "action_unknown=deny"

# callerid: the shim's slurmd on the conf's SlurmdPort, signing with the
# host's munged, names job 8 for any connection.
slurmd_shim --answer 8
run_case "callerid_match (the source slurmd names the older job)" "$user" "adopt callerid_match 8" "" \
    --tcp-to "127.0.0.1:$slurmd_port"
# The same slurmd, now closing every connection without a reply.
slurmd_shim --answer 8 --fault close
run_case "callerid failed (slurmd closes without a reply): newest_job" "$user" "adopt newest_job failed" "" \
    --tcp-to "127.0.0.1:$slurmd_port"
stop_slurmd
stop_shim

echo "=== every code the README lists has a case"
readme_codes=$(sed -n '/^| `reason=` code/,/^$/p' "$repo/README.md" | sed -nE 's/^\| `([a-z_]+)`.*/\1/p')
check "the README's reason table lists codes" test -n "$readme_codes"
for code in $readme_codes; do
    found=no
    for s in "${seen_reasons[@]}"; do [[ $s == "$code" ]] && found=yes; done
    check "reason=$code seen in a real decision line" test "$found" = yes
done

summary
