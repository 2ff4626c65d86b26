# shellcheck shell=bash
# The v2 scenarios, driven from the host over root's ssh control path into
# a booted guest (lib.sh). Every scenario runs with one module (ours or
# debian) and records an outcome for the parity table; our module's
# outcomes are asserted, Debian's are recorded. Logins are made inside the
# guest to 127.0.0.1: from outside any job as the user, or from a task of
# job J (srun --jobid=J --overlap ssh ...), whose client socket the
# node's own slurmd can name in the callerid RPC.

VM_USER=adopt-alice
VM_UID=2001
VM_OTHER=adopt-bob
VM_SPOOL=/var/lib/slurm/slurmd
VM_PASSED=${VM_PASSED:-0}
VM_FAILED=${VM_FAILED:-0}
declare -gA VM_RESULT=()
VM_ROWS=()
# Every failed check's name, repeated after the tally: CI keeps only the
# head and the tail of a long log.
declare -ga VM_FAILED_NAMES=()

# vm_check NAME CMD...: CMD must succeed; its output is shown on failure.
vm_check() {
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        VM_PASSED=$((VM_PASSED + 1))
        echo "ok   - $name"
    else
        VM_FAILED=$((VM_FAILED + 1))
        VM_FAILED_NAMES+=("$name")
        echo "FAIL - $name (exit $rc)"
        [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/       | /'
    fi
    return 0
}
vm_fail() { VM_FAILED=$((VM_FAILED + 1)); VM_FAILED_NAMES+=("$*"); echo "FAIL - $*"; }
_vm_eq() { [[ $1 == "$2" ]] || { echo "expected '$2', got '$1'"; return 1; }; }
# _vm_has REGEX TEXT: a line of TEXT matches (TEXT is never re-parsed by a
# shell: doctor's fix lines carry quotes).
_vm_has() { grep -Eq -- "$1" <<<"$2" || { echo "no line matches /$1/ in:"; printf '%s\n' "$2"; return 1; }; }

# vm_record ROW MODULE VALUE: one cell of the parity table.
vm_record() {
    [[ " ${VM_ROWS[*]} " == *" $1 "* ]] || VM_ROWS+=("$1")
    VM_RESULT["$1|$2"]=$3
}

vm_parity_table() {
    local ver=$1 r
    echo
    echo "parity, Slurm $ver on cgroup v2: pam_adopt vs Debian's pam_slurm_adopt (same image, same scenarios)"
    printf '  %-42s %-44s %-44s %s\n' scenario pam_adopt pam_slurm_adopt ""
    for r in "${VM_ROWS[@]}"; do
        local a=${VM_RESULT["$r|ours"]:-?} b=${VM_RESULT["$r|debian"]:-?} mark=""
        # Only the part before any " (...)" detail is compared.
        [[ ${a%% (*} == "${b%% (*}" ]] || mark="<- differs"
        printf '  %-42s %-44s %-44s %s\n' "${r//_/ }" "$a" "$b" "$mark"
    done
    echo
}

# ------------------------------------------------------------ helpers
_vm_wait() { # SECONDS CMD...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

vm_submit() { # VER [USER [SBATCH-OPTION...]]: an sbatch job (sleep 900) of USER; prints its id
    local ver=$1 u=${2:-$VM_USER}
    shift $(($# < 2 ? $# : 2))
    # As root through runuser: the user cannot ssh in without a job.
    vm_root "$ver" "cd /tmp && runuser -u $u -- sbatch --parsable --output=/dev/null --job-name=vm-test -N1 -n1 $* --wrap 'sleep 900'" | cut -d';' -f1
}
_vm_extern_up() { # VER JOB: running, and its extern step's socket is there
    [[ $(vm_root "$1" "squeue -h -j $2 -o %T" 2>/dev/null) == RUNNING ]] &&
        vm_root "$1" "test -S $VM_SPOOL/slurmvm_$2.4294967292"
}
vm_wait_job() { # VER JOB
    _vm_wait 90 _vm_extern_up "$1" "$2" && return 0
    echo "job $2 not running with its extern step after 90 s:" >&2
    vm_root "$1" "scontrol show job $2; sinfo -N; tail -n 20 /var/log/slurm/slurmd.log" >&2 || true
    return 1
}
_vm_no_user_jobs() {
    [[ -z $(vm_root "$1" "squeue -h -o %i") ]] &&
        ! vm_root "$1" "compgen -G '$VM_SPOOL/slurmvm_*.4294967292' >/dev/null"
}
# Jobs whose extern socket is still in the spool with no slurmstepd left
# to serve it (the stepd died without unlinking it), one per line.
_vm_orphan_externs() {
    vm_root "$1" "for s in $VM_SPOOL/slurmvm_*.4294967292; do
        [[ -S \$s ]] || continue; j=\${s##*_}; j=\${j%%.*}
        pgrep -f '^slurmstepd: \\['\$j'\\.extern\\]' >/dev/null || echo \$j
    done"
}
# Slurm 24.11.5 (trixie's) sometimes loses an extern stepd at teardown:
# the kernel logs a slurmstepd thread's segfault at address 0 right after
# the job's kill request, and the socket stays behind. It is Slurm's
# fault, not the module's (upstream 24.11.6 fixed a race in the extern
# step's x11 shutdown that left spool files behind), but it is a real
# node's state, so it is met as one: recorded, a login without a job is
# checked to be still denied past the dead socket, and the socket is
# removed (as slurmd does at its next start) so the next scenario starts
# on a clean spool.
VM_ORPHANS=()
# No job left, and no extern socket, or only orphans for 5 s running (a
# stepd unlinks its socket before it exits, so they will not go away).
_vm_jobs_settled() { # VER
    _vm_no_user_jobs "$1" && return 0
    if [[ -z $(vm_root "$1" "squeue -h -o %i") && -n $(_vm_orphan_externs "$1") ]]; then
        _vm_orphan_polls=$((_vm_orphan_polls + 1))
    else
        _vm_orphan_polls=0
    fi
    ((_vm_orphan_polls >= 10))
}
_vm_settle_orphans() { # VER
    local ver=$1 orphans got crash
    [[ -z $(vm_root "$ver" "squeue -h -o %i") ]] || return 1
    orphans=$(_vm_orphan_externs "$ver" | tr '\n' ' ')
    [[ -n $orphans ]] || return 1
    # Every socket left must be an orphan: a live stepd is a real failure.
    [[ $(vm_root "$ver" "ls $VM_SPOOL | grep -c '\.4294967292\$'") == $(wc -w <<<"$orphans") ]] || return 1
    crash=$(vm_root "$ver" "journalctl -k -q --no-pager -o cat | grep -E 'slurmstepd\[[0-9]+\]: segfault' | tail -n1")
    echo "       noticed: extern socket of job(s) ${orphans% } left with no slurmstepd (kernel: ${crash:-no segfault line})"
    VM_ORPHANS+=("${orphans% }")
    got=$(_vm_where "$(vm_login_raw "$ver")")
    vm_check "with job(s) ${orphans% }'s dead extern socket in the spool, ssh without a job is denied ($got)" \
        _vm_eq "$got" "denied (you have no active jobs on this node)"
    for j in $orphans; do vm_root "$ver" "rm -f $VM_SPOOL/slurmvm_$j.4294967292"; done
}
_vm_user_procs_none() { ! vm_root "$1" "pgrep -u $VM_UID >/dev/null"; }
# SECONDS (default 90) is how long the jobs may take to end: the
# benchmark's 50 jobs end one Epilog at a time per user under TCG.
vm_cancel_all() { # VER [SECONDS]: no job, no extern socket, no process of the user
    local ver=$1 secs=${2:-90}
    vm_root "$ver" "scancel -u $VM_USER; scancel -u $VM_OTHER; loginctl terminate-user $VM_USER" >/dev/null 2>&1 || true
    _vm_orphan_polls=0
    if ! _vm_wait "$secs" _vm_jobs_settled "$ver" || ! { _vm_no_user_jobs "$ver" || _vm_settle_orphans "$ver"; }; then
        echo "jobs or extern sockets still there $secs s after scancel:" >&2
        vm_root "$ver" "squeue; ls -la $VM_SPOOL; tail -n 20 /var/log/slurm/slurmd.log" >&2 || true
        return 1
    fi
    _vm_wait 60 _vm_user_procs_none "$ver" || {
        echo "processes of $VM_USER left 60 s after their jobs ended:" >&2
        vm_root "$ver" "ps -o pid,user,args -u $VM_UID; for p in \$(pgrep -u $VM_UID); do echo \$p \$(cat /proc/\$p/cgroup); done" >&2 || true
        return 1
    }
}

# Journal marks: a cursor, and what was written after it.
vm_mark() { vm_root "$1" "journalctl -q -n 1 --show-cursor -o cat" | sed -n 's/^-- cursor: //p' | tail -n1; }
vm_journal_since() { vm_root "$1" "journalctl -q --no-pager -o cat --after-cursor='$2'"; }
# vm_journal_line VER MARK ERE: the last journal line since MARK matching
# ERE, waiting up to 3 s for one (journald stores a line a moment after
# sshd sends it); "" when none came.
vm_journal_line() {
    local ver=$1 mark=$2 ere=$3 line=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        line=$(vm_journal_since "$ver" "$mark" | grep -E "$ere" | tail -n1)
        [[ -n $line ]] && break
        sleep 0.3
    done
    printf '%s\n' "$line"
}
# Our module's decision line (account phase unless PHASE) for USER since
# the mark: "decision job reason callerid usec" ("" when there is none).
vm_decision() { # VER MARK [USER] [PHASE]
    local ver=$1 mark=$2 u=${3:-$VM_USER} phase=${4:-account} line
    # Only decision lines count: the session phase also logs
    # event=session_closed.
    line=$(vm_journal_line "$ver" "$mark" "pam_adopt\(sshd:$phase\): user=$u .* decision=")
    sed -nE 's/.* decision=([a-z]+) job=([^ ]+) reason=([a-z_]+) callerid=([^ ]+) usec=([0-9]+).*/\1 \2 \3 \4 \5/p' <<<"$line"
}

# vm_login VER [--job J] [--user U] [--as-root]: one ssh login to
# 127.0.0.1 in the guest running `cat /proc/self/cgroup`; prints the
# client's output and, last, "rc=N". With --job the ssh client runs as a
# task of job J. A 26.05 SLUID job directory reads as job_<id>
# (guest/vm-job-cgroup).
vm_login_raw() {
    local ver=$1 job="" u=$VM_USER cmd
    shift
    while (($#)); do
        case $1 in
            --job) job=$2; shift 2 ;;
            --user) u=$2; shift 2 ;;
            *) echo "vm_login_raw: bad argument $1" >&2; return 2 ;;
        esac
    done
    cmd="ssh -o LogLevel=INFO 127.0.0.1 cat /proc/self/cgroup"
    [[ -z $job ]] || cmd="srun --jobid=$job --overlap -N1 -n1 --quiet $cmd"
    vm_root "$ver" "cd /tmp && { timeout 60 runuser -u $u -- $cmd 2>&1 </dev/null; echo rc=\$?; } | vm-job-cgroup"
}
# _vm_where OUT J K: what a login's output says, as a table cell:
# "job J" (in J's step_extern/user/task_special), "job J <other leaf>",
# "not in a job (PATH)", "denied (MESSAGE)" or "error (...)".
_vm_where() {
    local out=$1 j=${2:-none} k=${3:-none} path rc name msg
    rc=$(sed -n 's/^rc=//p' <<<"$out" | tail -n1)
    path=$(sed -n 's/^0:://p' <<<"$out" | head -n1)
    if [[ $path =~ /job_([0-9]+)/(step_[a-z0-9_]+/user/task_[a-z0-9_]+)$ ]]; then
        name="job ${BASH_REMATCH[1]}"
        [[ ${BASH_REMATCH[1]} != "$j" ]] || name="job J"
        [[ ${BASH_REMATCH[1]} != "$k" ]] || name="job K"
        [[ ${BASH_REMATCH[2]} == step_extern/user/task_special ]] || name+=" ${BASH_REMATCH[2]}"
        echo "$name"
    elif [[ -n $path ]]; then
        echo "not in a job ($path)"
    elif msg=$(grep -oE 'Access denied by [a-z_]+: [^[:cntrl:]]*' <<<"$out" | head -n1) && [[ -n $msg ]]; then
        echo "denied (${msg#Access denied by *: })"
    elif [[ $rc != 0 ]]; then
        echo "denied (no message, rc=$rc)"
    else
        echo "error ($(tr '\n' ' ' <<<"$out" | cut -c1-60))"
    fi
}
# The full deny message of a login's output ("" when none).
_vm_msg() { grep -oE 'Access denied by [a-z_]+: [^[:cntrl:]]*' <<<"$1" | head -n1; }

_vm_session_pid() { vm_root "$1" "pgrep -u $VM_UID -fx '$2' | head -n1 | grep ."; }
_vm_pid_gone() { ! vm_root "$1" "pgrep -u $VM_UID -fx '$2' >/dev/null"; }
# A long-lived ssh session of the user running REMOTE-CMD, started in the
# background in the guest (from a task of JOB with --job).
vm_session_start() { # VER TAG REMOTE-CMD [JOB]
    local ver=$1 tag=$2 rcmd=$3 job=${4:-} cmd
    cmd="ssh -o LogLevel=INFO 127.0.0.1 '$rcmd'"
    [[ -z $job ]] || cmd="srun --jobid=$job --overlap -N1 -n1 --quiet $cmd"
    # "cd;" apart, so that only the simple command goes to the background
    # with its fds redirected: a backgrounded "cd && ..." list would be a
    # subshell holding the ssh channel open.
    vm_root "$ver" "cd /tmp; setsid runuser -u $VM_USER -- $cmd >/tmp/vm-session-$tag.out 2>&1 </dev/null & echo \$! >/tmp/vm-session-$tag.pid"
}
# Exit code of the session's ssh client once it has ended.
_vm_session_ended() { ! vm_root "$1" "kill -0 \$(cat /tmp/vm-session-$2.pid) 2>/dev/null"; }

# ------------------------------------------------------------ scenarios
# vm_scenarios VERSION ours|debian
vm_scenarios() {
    local ver=$1 m=$2 label mark got out d j k pid t0
    label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
    echo "--- Slurm $ver on cgroup v2, $label"
    vm_root "$ver" "vm-pam $m" || { vm_fail "$label: vm-pam $m"; return 0; }
    vm_cancel_all "$ver" || { vm_fail "$label: could not clear old jobs"; return 0; }
    # Ours is asserted; Debian's outcomes go to the parity table only.
    _chk() { if [[ $m == ours ]]; then vm_check "$@"; fi; }
    # Optional hooks (selinux.sh sets them for the enforcing variant):
    # VM_ROW_HOOK VER ROW after each row, VM_OPTION_HOOK VER OPTIONS when a
    # scenario sets module options.
    _row() { vm_record "$1" "$m" "$2"; [[ -z ${VM_ROW_HOOK:-} ]] || "$VM_ROW_HOOK" "$ver" "$1"; }
    _opt() { [[ -z ${VM_OPTION_HOOK:-} ]] || "$VM_OPTION_HOOK" "$ver" "$1"; }

    # -------------------------------------------------- no job
    out=$(vm_login_raw "$ver")
    got=$(_vm_where "$out")
    _row "no_job:_ssh" "$got"
    echo "       $label, no job: $(_vm_msg "$out")"
    _chk "$label: no job: ssh is denied with the message" _vm_eq "$(_vm_msg "$out")" \
        "Access denied by pam_adopt: you have no active jobs on this node"

    # -------------------------------------------------- one job
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "$label: job did not start"
        return 0
    fi
    mark=$(vm_mark "$ver")
    out=$(vm_login_raw "$ver")
    got=$(_vm_where "$out" "$j")
    d=$(vm_decision "$ver" "$mark")
    _row "one_job_J:_ssh_lands_in" "$got${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    echo "       $label, one job: $(sed -n 's/^0:://p' <<<"$out")"
    _chk "$label: one job $j: ssh lands in job $j's step_extern/user/task_special" _vm_eq "$got" "job J"
    if [[ $m == ours ]]; then
        echo "       decision line: ${d:-none}"
        vm_check "$label: decision line says adopt job=$j reason=only_job callerid=-" _vm_eq "$(cut -d' ' -f1-4 <<<"$d")" "adopt $j only_job -"
    fi

    # A long-lived session: in the job's cgroup, listed by scontrol
    # listpids, and ended by scancel.
    vm_session_start "$ver" s901 "sleep 901"
    _vm_wait 30 _vm_session_pid "$ver" "sleep 901" >/dev/null
    pid=$(_vm_session_pid "$ver" "sleep 901")
    got="no session"
    if [[ -n $pid ]]; then
        got="not listed"
        vm_root "$ver" "scontrol listpids $j" | awk '{print $1}' | grep -qx "$pid" && got=listed
    fi
    _row "one_job:_scontrol_listpids_J_has_session" "$got${pid:+ (pid $pid)}"
    _chk "$label: scontrol listpids $j lists the session's sleep (pid ${pid:-none})" _vm_eq "$got" listed
    got=$(vm_root "$ver" "vm-job-cgroup </proc/${pid:-0}/cgroup 2>/dev/null" | sed -n 's/^0:://p')
    _chk "$label: the session's sleep is in job $j's step_extern/user/task_special ($got)" \
        bash -c "[[ '$got' == */job_$j/step_extern/user/task_special ]]"

    out=$(vm_login_raw "$ver" --user "$VM_OTHER")
    got=$(_vm_where "$out")
    _row "other_user_(no_job)_while_J_runs" "$got"
    _chk "$label: $VM_OTHER (no job) is denied while $VM_USER's job runs" _vm_eq "$got" \
        "denied (you have no active jobs on this node)"

    # root comes in from the host through the forwarded port on a fresh
    # connection (not the multiplexed one, which passed PAM at boot).
    mark=$(vm_mark "$ver")
    got=$(ssh -F "$(vm_run_dir "$ver")/ssh_config" -o ControlMaster=no -o ControlPath=none vm \
        "sed -n 's/^0:://p' /proc/self/cgroup" 2>&1) && got="let in, not adopted ($got)" || got="denied ($got)"
    [[ $got != *job_* ]] || got="adopted ($got)"
    _row "root:_ssh" "$got"
    if [[ $m == ours ]]; then
        d=$(vm_decision "$ver" "$mark" root)
        _chk "$label: root is let through and not adopted" bash -c "[[ '$got' == 'let in, not adopted'* ]]"
        _chk "$label: root's decision line says ignore reason=root" _vm_eq "$(cut -d' ' -f1,3 <<<"$d")" "ignore root"
    else
        vm_journal_since "$ver" "$mark" | grep -m1 -i 'pam_slurm_adopt.*root' | sed 's/^/       journal: /' || true
    fi

    # adoptctl doctor with this module in the stack.
    out=$(vm_root "$ver" "adoptctl doctor; echo rc=\$?")
    got="exit $(sed -n 's/^rc=//p' <<<"$out" | tail -n1)"
    _row "adoptctl_doctor" "$got ($(grep -E '^[0-9]+ ok, ' <<<"$out" | tail -n1))"
    if [[ $m == ours ]]; then
        grep -E '^(fail|warn) ' <<<"$out" | sed 's/^/       doctor: /' || true
        vm_check "$label: adoptctl doctor exits 0 on the v2 node ($(grep -E '^[0-9]+ ok, ' <<<"$out" | tail -n1))" _vm_eq "$got" "exit 0"
        vm_check "$label: adoptctl doctor's cgroup-mode line says cgroup v2" \
            _vm_has '^ok +cgroup-mode .*cgroup v2' "$out"
    fi

    # scancel J: the session ends, nothing of the user is left.
    t0=$SECONDS
    vm_root "$ver" "scancel $j"
    _vm_wait 60 _vm_session_ended "$ver" s901
    got=$(vm_root "$ver" "pgrep -u $VM_UID -fx 'sleep 901' >/dev/null && echo 'still running' || echo ended")
    _row "scancel_J:_session" "$got ($((SECONDS - t0)) s)"
    _chk "$label: scancel $j ends the adopted session" _vm_eq "$got" ended
    _chk "$label: the session's ssh client saw the connection closed" \
        bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm cat /tmp/vm-session-s901.out | grep -q 'closed by remote host'"
    _vm_wait 60 _vm_user_procs_none "$ver"
    _chk "$label: after scancel $j no process of $VM_USER is left" _vm_user_procs_none "$ver"

    # -------------------------------------------------- two jobs, J older
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j" || ! k=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$k"; then
        vm_fail "$label: jobs J and K did not start"
        return 0
    fi
    echo "       J=$j K=$k"
    # From J's task: only the callerid RPC to the node's own slurmd can
    # name J ("newest" would be K).
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    _row "J+K:_ssh_from_task_of_J_(callerid)" "$got${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: with K newer, ssh from a task of J lands in J" _vm_eq "$got" "job J"
    if [[ $m == ours ]]; then
        echo "       decision line: ${d:-none}"
        vm_check "$label: decision line says adopt job=$j reason=callerid_match callerid=$j" \
            _vm_eq "$(cut -d' ' -f1-4 <<<"$d")" "adopt $j callerid_match $j"
    fi

    # From outside any job: slurmd knows no job for the client's socket,
    # action_unknown=newest picks K.
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    _row "J+K:_ssh_from_outside_(newest)" "$got${d:+ ($(cut -d' ' -f3,4 <<<"$d"))}"
    _chk "$label: with J and K, ssh from outside any job follows newest: K" _vm_eq "$got" "job K"
    if [[ $m == ours ]]; then
        vm_check "$label: decision line says adopt job=$k reason=newest_job callerid=not_found" \
            _vm_eq "$(cut -d' ' -f1-4 <<<"$d")" "adopt $k newest_job not_found"
    fi

    # The hooks, with the user's two jobs on the node (they run whichever
    # module is in sshd; the session-phase export is ours alone).
    got=$(vm_root "$ver" "stat -c '%u %a' /run/user/$VM_UID 2>&1")
    _row "hooks:_Prolog_made_/run/user/UID" "$got"
    _chk "Prolog made /run/user/$VM_UID, owned by the user, mode 700" _vm_eq "$got" "$VM_UID 700"
    got=$(vm_root "$ver" "cd /tmp && runuser -u $VM_USER -- srun --jobid=$j --overlap -N1 -n1 --quiet printenv XDG_RUNTIME_DIR 2>&1")
    _row "hooks:_TaskProlog_XDG_RUNTIME_DIR_in_task" "${got:-unset}"
    _chk "TaskProlog: a task of job $j sees XDG_RUNTIME_DIR=/run/user/$VM_UID" _vm_eq "$got" "/run/user/$VM_UID"
    got=$(vm_root "$ver" "cd /tmp && runuser -u $VM_USER -- srun --jobid=$j --overlap -N1 -n1 --quiet ssh 127.0.0.1 'printenv XDG_RUNTIME_DIR || echo unset' 2>&1")
    _row "hooks:_XDG_RUNTIME_DIR_in_ssh_login" "${got:-unset}"
    _chk "$label: session phase: an ssh login into job $j sees XDG_RUNTIME_DIR=/run/user/$VM_UID" _vm_eq "$got" "/run/user/$VM_UID"

    # adopt_via=cgroup and auto: written to the place the stepd would.
    local via
    for via in cgroup auto; do
        _opt "adopt_via=$via"
        vm_root "$ver" "vm-pam $m adopt_via=$via"
        mark=$(vm_mark "$ver")
        got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
        d=$(vm_journal_since "$ver" "$mark" | grep -oE 'adopted into job [0-9]+ via [a-z]+' | tail -n1)
        _row "adopt_via=$via:_ssh_from_task_of_J" "$got${d:+ (${d##* })}"
        _chk "$label: adopt_via=$via: ssh from a task of J lands in J's step_extern/user/task_special" _vm_eq "$got" "job J"
        if [[ $m == ours ]]; then
            echo "       adopt_via=$via: ${d:-no 'adopted into' line}"
            [[ $via != cgroup ]] || vm_check "$label: adopt_via=cgroup: the log says 'adopted into job $j via cgroup'" \
                _vm_eq "$d" "adopted into job $j via cgroup"
        fi
    done

    # action_unknown=deny: from outside, no source job: denied with the
    # message; from J's task the callerid still decides.
    _opt "action_unknown=deny"
    vm_root "$ver" "vm-pam $m action_unknown=deny"
    mark=$(vm_mark "$ver")
    out=$(vm_login_raw "$ver")
    got=$(_vm_where "$out" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    _row "action_unknown=deny:_ssh_from_outside" "$got"
    _chk "$label: action_unknown=deny: ssh from outside is denied with the message" _vm_eq "$(_vm_msg "$out")" \
        "Access denied by pam_adopt: unable to determine source job"
    [[ $m != ours ]] || vm_check "$label: decision line says deny reason=unknown_deny callerid=not_found" \
        _vm_eq "$(cut -d' ' -f1,3,4 <<<"$d")" "deny unknown_deny not_found"
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    _row "action_unknown=deny:_ssh_from_task_of_J" "$got"
    _chk "$label: action_unknown=deny: ssh from a task of J still lands in J" _vm_eq "$got" "job J"
    vm_root "$ver" "vm-pam $m"

    # scancel J: K remains, so the Epilog keeps the runtime dir.
    vm_root "$ver" "scancel $j"
    _vm_wait 60 bash -c "! ssh -F '$(vm_run_dir "$ver")/ssh_config' vm test -S $VM_SPOOL/slurmvm_$j.4294967292"
    got=$(vm_root "$ver" "stat -c '%u %a' /run/user/$VM_UID 2>&1 || true")
    _chk "Epilog of J kept /run/user/$VM_UID (job $k still runs)" _vm_eq "$got" "$VM_UID 700"
    vm_root "$ver" "scancel $k"
    vm_cancel_all "$ver" || vm_fail "$label: jobs did not end after scancel"
    got=$(vm_root "$ver" "test -e /run/user/$VM_UID && echo kept || echo removed")
    _row "hooks:_last_Epilog_removes_/run/user/UID" "$got"
    _chk "the last Epilog removed /run/user/$VM_UID" _vm_eq "$got" removed
    got=$(_vm_where "$(vm_login_raw "$ver")")
    _row "after_scancel:_ssh" "$got"
    _chk "$label: after scancel a new ssh is denied again" _vm_eq "$got" "denied (you have no active jobs on this node)"

    vm_job_gpus "$ver" "$m"

    # -------------------------------------------------- pam_systemd kept
    # Last, because logind then makes (and later removes) /run/user/UID
    # itself and starts user@UID.service.
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "$label: job for the pam_systemd scenario did not start"
        return 0
    fi
    vm_root "$ver" "vm-pam $m --systemd"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j")
    _row "pam_systemd_kept_(adopt_in=session)" "$got"
    _chk "$label: pam_systemd kept, adopt_in=session: ssh lands in job $j's step_extern/user/task_special" _vm_eq "$got" "job J"
    if [[ $m == ours ]]; then
        d=$(vm_decision "$ver" "$mark" "$VM_USER" session)
        echo "       session-phase decision line: ${d:-none}"
        vm_check "$label: pam_systemd kept: logind opened a session for the login" \
            bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm \"journalctl -q -o cat --after-cursor='$mark'\" | grep -Eq \"New session '?[0-9a-z]+'? of user '?$VM_USER\\\\b\""
        vm_check "$label: pam_systemd kept: the session phase adopted into job $j" _vm_eq "$(cut -d' ' -f1,2 <<<"$d")" "adopt $j"
        # The same without adopt_in=session: logind takes the login out of
        # the job, and its close line still names the job the account
        # phase chose (kept on the PAM handle), with in_job=no.
        vm_root "$ver" "vm-pam $m --systemd-without-readopt"
        mark=$(vm_mark "$ver")
        got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j")
        echo "       pam_systemd kept, adopt_in=account: the login lands in: $got"
        vm_check "$label: pam_systemd kept without adopt_in=session: logind moved the login out of job $j" \
            bash -c '[[ $1 == "not in a job ("*session-*.scope")" ]]' _ "$got"
        local closed
        closed=$(vm_journal_line "$ver" "$mark" "pam_adopt\(sshd:session\): user=$VM_USER .* event=session_closed ")
        echo "       its close line: ${closed:-none}"
        vm_check "$label: pam_systemd kept without adopt_in=session: the close line names job $j, in_job=no" \
            bash -c '[[ $1 == *" job=$2 in_job=no duration_ms="* ]]' _ "$closed" "$j"
    fi
    vm_root "$ver" "vm-pam $m"
    vm_cancel_all "$ver" || vm_fail "$label: cleanup after the pam_systemd scenario"
    unset -f _chk _row _opt
}

# The job's GPUs in an ssh session. The node has two fake GPUs
# (guest/configure.sh: gres.conf File=/var/lib/slurm-adopt-vm/fakegpu[0-1], AutoDetect=off;
# ConstrainDevices=yes): J holds host GPU 0, so K gets host GPU 1, which its
# tasks see renumbered as 0. An ssh from a task of K must carry the values
# those tasks see, and no others.
VM_GPU_VARS='^(CUDA_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|ZE_AFFINITY_MASK|GPU_DEVICE_ORDINAL|SLURM_JOB_GPUS)='
vm_job_gpus() { # VER ours|debian
    local ver=$1 m=$2 j k task sess
    if ! j=$(vm_submit "$ver" "$VM_USER" --gres=gpu:1) || ! vm_wait_job "$ver" "$j" ||
        ! k=$(vm_submit "$ver" "$VM_USER" --gres=gpu:1) || ! vm_wait_job "$ver" "$k"; then
        vm_fail "$m: the GPU jobs did not start"
        vm_cancel_all "$ver" || true
        return 0
    fi
    task=$(vm_root "$ver" "cd /tmp && runuser -u $VM_USER -- srun --jobid=$k --overlap -N1 -n1 --quiet env" |
        grep -E "$VM_GPU_VARS" | sort | tr '\n' ' ')
    sess=$(vm_root "$ver" "cd /tmp && timeout 60 runuser -u $VM_USER -- srun --jobid=$k --overlap -N1 -n1 --quiet env -u CUDA_VISIBLE_DEVICES -u ROCR_VISIBLE_DEVICES -u ZE_AFFINITY_MASK -u GPU_DEVICE_ORDINAL -u SLURM_JOB_GPUS ssh 127.0.0.1 env </dev/null" 2>&1 |
        grep -E "$VM_GPU_VARS" | sort | tr '\n' ' ')
    vm_record "GPU_vars_in_ssh_(ConstrainDevices=yes)" "$m" "$([[ -n $sess ]] && echo "${sess% }" || echo none)"
    [[ -z ${VM_ROW_HOOK:-} ]] || "$VM_ROW_HOOK" "$ver" "GPU_vars_in_ssh"
    if [[ $m == ours ]]; then
        echo "       job $k (host GPU 1): task: ${task:-none}| ssh: ${sess:-none}"
        vm_check "GPU: job $k's task sees CUDA_VISIBLE_DEVICES=0 (host GPU 1, renumbered under ConstrainDevices)" \
            bash -c '[[ $1 == *"CUDA_VISIBLE_DEVICES=0 "* ]]' _ "$task"
        # srun gives a task SLURM_JOB_GPUS only on some versions; the
        # session has the job's (host indices), as the batch script does.
        vm_check "GPU: an ssh into job $k has the task's GPU visibility variables" \
            _vm_eq "$(tr ' ' '\n' <<<"$sess" | grep -v '^SLURM_JOB_GPUS=' | grep . | tr '\n' ' ')" \
            "$(tr ' ' '\n' <<<"$task" | grep -v '^SLURM_JOB_GPUS=' | grep . | tr '\n' ' ')"
        vm_check "GPU: the ssh has the job's SLURM_JOB_GPUS=1 (host index)" \
            bash -c '[[ $1 == *"SLURM_JOB_GPUS=1 "* ]]' _ "$sess"
    fi
    vm_cancel_all "$ver" || vm_fail "$m: the GPU jobs did not end"
}

# Once per version, with our module in the stack: adoptctl check's
# verdicts, and doctor catching a v1-only cgroup.conf on the v2 node.
vm_tool_scenarios() {
    local ver=$1 j out rc
    echo "--- Slurm $ver on cgroup v2, adoptctl"
    vm_root "$ver" "vm-pam ours"
    vm_cancel_all "$ver" || { vm_fail "adoptctl: could not clear old jobs"; return 0; }
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "adoptctl: job did not start"
        return 0
    fi
    rc=0; out=$(vm_root "$ver" "adoptctl check $VM_USER") || rc=$?
    printf '%s\n' "$out" | grep -E '^decision' | sed 's/^/       /'
    vm_check "adoptctl check $VM_USER exits 0 with job $j" test "$rc" -eq 0
    vm_check "adoptctl check $VM_USER: decision: adopt into job $j (reason: only_job)" \
        _vm_has "^decision: adopt.* $j .*\(reason: only_job\)" "$out"
    vm_check "adoptctl check $VM_USER prints the module's decision line" \
        _vm_has "^decision line: .*user=$VM_USER .*decision=adopt job=$j reason=only_job" "$out"
    rc=0; out=$(vm_root "$ver" "adoptctl check $VM_OTHER") || rc=$?
    vm_check "adoptctl check $VM_OTHER (no job) exits 1" test "$rc" -eq 1
    vm_check "adoptctl check $VM_OTHER: reason no_jobs" _vm_has "^decision: deny.*\(reason: no_jobs\)" "$out"
    # A v1-only cgroup.conf on this v2 node: slurmd would not start its
    # cgroup plugin; doctor must fail it (exit 2) on the cgroup-mode check.
    rc=0
    out=$(vm_root "$ver" "cp /etc/slurm/cgroup.conf /tmp/cgroup.conf.ok && sed -i 's|^CgroupPlugin=.*|CgroupPlugin=cgroup/v1|' /etc/slurm/cgroup.conf && adoptctl doctor; rc=\$?; cp /tmp/cgroup.conf.ok /etc/slurm/cgroup.conf; exit \$rc") || rc=$?
    grep -E '^fail +cgroup-mode' <<<"$out" | sed 's/^/       /'
    vm_check "adoptctl doctor with CgroupPlugin=cgroup/v1 on the v2 node exits 2" test "$rc" -eq 2
    vm_check "adoptctl doctor fails cgroup-mode for CgroupPlugin=cgroup/v1" _vm_has "^fail +cgroup-mode .*cgroup/v1" "$out"
    vm_check "cgroup.conf restored (CgroupPlugin=cgroup/v2)" \
        bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm grep -qx CgroupPlugin=cgroup/v2 /etc/slurm/cgroup.conf"
    vm_cancel_all "$ver" || vm_fail "adoptctl: cleanup"
}
