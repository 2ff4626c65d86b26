# shellcheck shell=bash
# The cluster scenarios, run from the host through docker exec against a
# running cluster of one version (lib.sh's mc_up). Sourced by test.sh and
# up.sh. Every scenario runs with one module (ours or debian) and records
# an outcome for the parity table; our module's outcomes are asserted.

MC_USER=adopt-alice
MC_UID=2001
MC_DENY_MSG="you have no active jobs on this node"
MC_PASSED=${MC_PASSED:-0}
MC_FAILED=${MC_FAILED:-0}
declare -gA MC_RESULT=()
MC_ROWS=()

# check NAME CMD...: CMD must succeed; its output is shown only on failure.
mc_check() {
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        MC_PASSED=$((MC_PASSED + 1))
        echo "ok   - $name"
    else
        MC_FAILED=$((MC_FAILED + 1))
        echo "FAIL - $name (exit $rc)"
        [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/       | /'
    fi
    return 0
}
mc_fail() { MC_FAILED=$((MC_FAILED + 1)); echo "FAIL - $*"; }
_mc_eq() { [[ $1 == "$2" ]] || { echo "expected '$2', got '$1'"; return 1; }; }

# record ROW MODULE VALUE: one cell of the parity table.
mc_record() {
    [[ " ${MC_ROWS[*]} " == *" $1 "* ]] || MC_ROWS+=("$1")
    MC_RESULT["$1|$2"]=$3
}

mc_parity_table() {
    local ver=$1 r
    echo
    echo "parity, Slurm $ver: pam_adopt vs Debian's pam_slurm_adopt (same image, same scenarios)"
    printf '  %-34s %-30s %-30s %s\n' scenario pam_adopt pam_slurm_adopt ""
    for r in "${MC_ROWS[@]}"; do
        local a=${MC_RESULT["$r|ours"]:-?} b=${MC_RESULT["$r|debian"]:-?} mark=""
        # Only the part before any "(...)" detail is compared.
        [[ ${a%% (*} == "${b%% (*}" ]] || mark="<- differs"
        printf '  %-34s %-30s %-30s %s\n' "${r//_/ }" "$a" "$b" "$mark"
    done
    echo
}

# ------------------------------------------------------------ helpers
_mc_wait() { # SECONDS CMD...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

mc_submit() { # VER SBATCH-ARGS...: prints the job id
    local ver=$1
    shift
    mc_as "$ver" login "$MC_USER" "sbatch --parsable --chdir=/tmp --output=/dev/null --job-name=mc-test $* --wrap 'sleep 900'" | cut -d';' -f1
}

# The Slurm node name of a container node: the dynamic d1 registers under
# its full host name.
mc_slurm_name() { if [[ $1 == d1 ]]; then echo "$MC_DYN_HOST"; else echo "$1"; fi; }

# The extern step's socket is on every node of the job: logins can join.
_mc_extern_up() { # VER JOB NODE...
    local ver=$1 job=$2 n
    shift 2
    [[ $(mc_exec "$ver" ctl squeue -h -j "$job" -o %T 2>/dev/null) == RUNNING ]] || return 1
    for n in "$@"; do
        mc_exec "$ver" "$n" bash -c "compgen -G '/var/spool/slurmd/$(mc_slurm_name "$n")_${job}.4294967292' >/dev/null" || return 1
    done
}
mc_wait_job() { # VER JOB NODE...
    local ver=$1 job=$2
    _mc_wait 40 _mc_extern_up "$@" && return 0
    echo "job $job not running with its extern step on ${*:3} after 40 s:" >&2
    mc_exec "$ver" ctl scontrol show job "$job" >&2 || true
    mc_logs "$ver"
    return 1
}

# NODE's extern-step sockets, each with "live" or "stale": stale when no
# slurmstepd of that job runs. Slurm 24.11's extern stepd sometimes dies
# at teardown (a segfault at address 0, or "Unable to unlink domain
# socket ... Permission denied"), with either module in sshd, and its
# socket stays until slurmd restarts. A stale socket hides no job, and the
# module must say so: the scenarios go on with it in place.
_mc_extern_sockets() { # VER NODE
    # shellcheck disable=SC2016 # expanded inside the container
    mc_exec "$1" "$2" bash -c 'for s in /var/spool/slurmd/'"$2"'_*.4294967292; do
        [[ -S $s ]] || continue
        j=${s##*_}; j=${j%%.*}
        if pgrep -f "slurmstepd: \[$j\.extern\]" >/dev/null; then echo "$s live"; else echo "$s stale"; fi
    done'
}
_mc_no_jobs() {
    local ver=$1 n
    [[ -z $(mc_exec "$ver" ctl squeue -h -o %i 2>/dev/null) ]] || return 1
    for n in c1 c2; do
        ! _mc_extern_sockets "$ver" "$n" | grep -q ' live$' || return 1
    done
}
mc_note_stale_sockets() { # VER
    local n stale
    for n in c1 c2; do
        stale=$(_mc_extern_sockets "$1" "$n" | sed -n 's/ stale$//p' | tr '\n' ' ')
        [[ -z $stale ]] || echo "       note: $n: ${stale}is left by a slurmstepd that exited without removing it (a Slurm bug); no job lives behind it"
    done
}
mc_cancel_all() {
    local ver=$1
    mc_exec "$ver" ctl scancel -u "$MC_USER" 2>/dev/null || true
    mc_exec "$ver" ctl scancel -u adopt-bob 2>/dev/null || true
    _mc_wait 60 _mc_no_jobs "$ver" && { mc_note_stale_sockets "$ver"; return 0; }
    echo "jobs or extern steps still present 60 s after scancel:" >&2
    mc_exec "$ver" ctl squeue >&2 || true
    local n
    for n in c1 c2; do
        echo "--- $n: spool, processes, slurmd.log" >&2
        mc_exec "$ver" "$n" ls -la /var/spool/slurmd >&2 || true
        mc_exec "$ver" "$n" ps -eo pid,ppid,user,stat,wchan:20,args >&2 || true
        mc_exec "$ver" "$n" tail -n 20 /var/log/slurm/slurmd.log >&2 || true
    done
    return 1
}

# Lines of NODE's auth.log after mark N (mc_mark prints N).
mc_mark() { mc_exec "$1" "$2" wc -l </dev/null /var/log/auth.log | awk '{print $1}'; }
mc_auth_since() { mc_exec "$1" "$2" tail -n "+$(($3 + 1))" /var/log/auth.log; }
# Our module's decision line for the user since the mark:
# "decision job reason usec callerid".
mc_decision() {
    local line=""
    # rsyslog writes a moment after sshd logs.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        line=$(mc_auth_since "$1" "$2" "$3" | grep -E "pam_adopt\(sshd:account\): user=$MC_USER " | tail -n1)
        [[ -n $line ]] && break
        sleep 0.2
    done
    sed -nE 's/.* decision=([a-z]+) job=([^ ]+) reason=([a-z_]+) callerid=([^ ]+) usec=([0-9]+).*/\1 \2 \3 \5 \4/p' <<<"$line"
}

# Job of the remote shell, from its cgroup: "job_17/step_extern" -> 17.
_mc_landed() { grep -oE 'job_[0-9]+/step_extern' | head -n1 | sed -E 's/job_([0-9]+).*/\1/'; }
# mc_login VER FROM-NODE TO-NODE [JOB-FOR-SRUN]: ssh as the user, prints
# "job N", "denied+msg", "denied" or "error". With a job, the ssh runs as a
# task of that job on FROM-NODE (srun --overlap), the way a user's MPI
# launcher or script reaches the job's other nodes.
mc_login() {
    local ver=$1 from=$2 to=$3 job=${4:-} cmd out rc=0
    cmd="ssh $to cat /proc/self/cgroup"
    [[ -n $job ]] && cmd="srun --jobid=$job -w $from -N1 -n1 --overlap --quiet $cmd"
    out=$(mc_as "$ver" "$from" "$MC_USER" "$cmd" 2>&1 </dev/null) || rc=$?
    local j
    j=$(_mc_landed <<<"$out")
    if [[ -n $j ]]; then echo "job $j"
    elif grep -q "$MC_DENY_MSG" <<<"$out"; then echo "denied+msg"
    elif ((rc != 0)); then echo "denied"
    else echo "error"; fi
}

_mc_pgrep_in_job() { # VER NODE PATTERN JOB: a process matching PATTERN is in JOB's cgroup
    local pids p
    pids=$(mc_exec "$1" "$2" pgrep -f "$3") || return 1
    for p in $pids; do
        mc_exec "$1" "$2" grep -q "job_$4/step_extern" "/proc/$p/cgroup" 2>/dev/null && return 0
    done
    return 1
}
_mc_pgrep_none() { ! mc_exec "$1" "$2" pgrep -f "$3" >/dev/null; }
_mc_user_procs_none() { ! mc_exec "$1" "$2" pgrep -u "$MC_UID" >/dev/null; }
_mc_rundir() { mc_exec "$1" "$2" stat -c '%u %a' "/run/user/$MC_UID" 2>/dev/null; }
_mc_rundir_gone() { ! mc_exec "$1" "$2" test -e "/run/user/$MC_UID"; }
# "job 17" -> "job J" / "job K": the table reads the same whatever the ids.
_mc_jk() {
    case $1 in "job $2") echo "job J" ;; "job ${3:-none}") echo "job K" ;; *) echo "$1" ;; esac
}
_mc_ms() { echo $(($(date +%s%N) / 1000000)); }

# ------------------------------------------------------------ scenarios
# mc_scenarios VERSION ours|debian
mc_scenarios() {
    local ver=$1 m=$2 label hooks n mark got d
    label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
    hooks=$(mc_exec "$ver" c1 cat /etc/slurm-adopt-mc-hooks)
    echo "--- Slurm $ver, $label (hooks configured: $hooks)"
    for n in c1 c2; do mc_exec "$ver" "$n" mc-pam "$m"; done
    [[ $MC_LAYOUT != configless ]] || mc_exec "$ver" d1 mc-pam "$m"
    mc_cancel_all "$ver" || { mc_fail "$label: could not clear old jobs"; return 0; }
    # Ours is asserted; Debian's outcomes go to the parity table only.
    _chk() { if [[ $m == ours ]]; then mc_check "$@"; fi; }

    got=$(mc_login "$ver" login c1)
    mc_record "no_job:_ssh_login->c1" "$m" "$got"
    _chk "$label: no job: ssh login->c1 is denied with the message" _mc_eq "$got" denied+msg

    local j k
    if ! j=$(mc_submit "$ver" -N2 -w c1,c2) || ! mc_wait_job "$ver" "$j" c1 c2; then
        mc_fail "$label: two-node job did not start"
        return 0
    fi
    mark=$(mc_mark "$ver" c1)
    got=$(mc_login "$ver" login c1)
    d=$(mc_decision "$ver" c1 "$mark")
    mc_record "job_J_on_c1,c2:_ssh_login->c1" "$m" "$(_mc_jk "$got" "$j" "")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: job $j: ssh login->c1 lands in job $j's step_extern" _mc_eq "$got" "job $j"
    if [[ $m == ours ]]; then
        # The hooks have landed: a cluster without them is a failure, not a skip.
        mc_check "the Prolog/Epilog/TaskProlog are configured (adopt-prolog --version works)" _mc_eq "$hooks" yes
    fi
    if [[ $m == ours && $hooks == yes ]]; then
        mc_check "Prolog made /run/user/$MC_UID on c1, owned by the user, mode 700" _mc_eq "$(_mc_rundir "$ver" c1)" "$MC_UID 700"
        mc_check "TaskProlog: a task of job $j sees XDG_RUNTIME_DIR=/run/user/$MC_UID" _mc_eq \
            "$(mc_as "$ver" login "$MC_USER" "srun --jobid=$j -w c1 -N1 -n1 --overlap --quiet printenv XDG_RUNTIME_DIR" 2>&1)" "/run/user/$MC_UID"
        mc_check "session phase: an ssh login into job $j sees XDG_RUNTIME_DIR=/run/user/$MC_UID" _mc_eq \
            "$(mc_as "$ver" login "$MC_USER" "ssh c1 printenv XDG_RUNTIME_DIR" 2>&1)" "/run/user/$MC_UID"
    fi

    mark=$(mc_mark "$ver" c2)
    got=$(mc_login "$ver" c1 c2 "$j")
    d=$(mc_decision "$ver" c2 "$mark")
    mc_record "task_of_J_on_c1->c2_(one_job)" "$m" "$(_mc_jk "$got" "$j" "")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: from a task of job $j on c1, ssh c2 lands in job $j" _mc_eq "$got" "job $j"
    if [[ $m == ours ]]; then
        echo "       c2's line: ${d:-none}"
        mc_check "c2's syslog line says decision=adopt job=$j reason=only_job" _mc_eq "$(cut -d' ' -f1-3 <<<"$d")" "adopt $j only_job"
    fi

    # A second, newer job on c2: "newest" would now pick it, so landing in
    # J proves that the callerid RPC to c1's slurmd chose the job.
    if ! k=$(mc_submit "$ver" -N1 -w c2) || ! mc_wait_job "$ver" "$k" c2; then
        mc_fail "$label: second job on c2 did not start"
        return 0
    fi
    mark=$(mc_mark "$ver" c2)
    got=$(mc_login "$ver" c1 c2 "$j")
    d=$(mc_decision "$ver" c2 "$mark")
    mc_record "task_of_J_on_c1->c2_(J+K_on_c2)" "$m" "$(_mc_jk "$got" "$j" "$k")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: with job $k newer on c2, ssh from job $j's task still lands in job $j" _mc_eq "$got" "job $j"
    if [[ $m == ours ]]; then
        echo "       c2's line: ${d:-none}"
        mc_check "c2's syslog line says decision=adopt job=$j reason=callerid_match" _mc_eq "$(cut -d' ' -f1-3 <<<"$d")" "adopt $j callerid_match"
        mc_check "c2's syslog line says callerid=$j (what c1's slurmd answered)" _mc_eq "$(cut -d' ' -f5 <<<"$d")" "$j"
    else
        mc_auth_since "$ver" c2 "$mark" | grep -E 'pam_slurm_adopt' | sed 's/^/       c2: /' | tail -n 3
    fi

    # The login node runs no slurmd: the RPC is refused, action_unknown=newest.
    mark=$(mc_mark "$ver" c2)
    got=$(mc_login "$ver" login c2)
    d=$(mc_decision "$ver" c2 "$mark")
    mc_record "login->c2_(J+K):_newest=K" "$m" "$(_mc_jk "$got" "$j" "$k")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: ssh login->c2 (no slurmd on login) follows action_unknown=newest: job $k" _mc_eq "$got" "job $k"
    if [[ $m == ours ]]; then
        mc_check "c2's syslog line says reason=newest_job callerid=failed (the RPC to login was refused)" \
            _mc_eq "$(cut -d' ' -f3,5 <<<"$d")" "newest_job failed"
    fi

    # Long-lived sessions, one per node, to be ended by scancel.
    docker exec -d "$(mc_container "$ver" login)" runuser -u "$MC_USER" -- ssh c1 "sleep 901"
    docker exec -d -w /tmp "$(mc_container "$ver" login)" runuser -u "$MC_USER" -- \
        srun --jobid="$j" -w c1 -N1 -n1 --overlap --quiet ssh c2 "sleep 902"
    _mc_wait 15 _mc_pgrep_in_job "$ver" c1 "^sleep 901" "$j"; got=$?
    _chk "$label: session login->c1 (sleep 901) runs in job $j on c1" test "$got" -eq 0
    _mc_wait 15 _mc_pgrep_in_job "$ver" c2 "^sleep 902" "$j"; got=$?
    _chk "$label: session from job $j's task c1->c2 (sleep 902) runs in job $j on c2" test "$got" -eq 0
    [[ $m != ours ]] || mc_who_is_in "$ver" "$j"
    if [[ $m == ours ]]; then
        local pid
        pid=$(mc_exec "$ver" c2 pgrep -f "^sleep 902" | head -n1)
        mc_check "scontrol listpids $j on c2 lists the adopted sleep (pid ${pid:-none})" \
            bash -c "docker exec $(mc_container "$ver" c2) scontrol listpids $j | awk '{print \$1}' | grep -qx '${pid:-none}'"
    fi

    # slurmd on c1 stopped (SIGSTOP: it accepts the connection and never
    # answers, the worst case for the RPC): a login c1->c2 must be decided
    # by action_unknown within the login deadline (timeout_ms=2000).
    mc_exec "$ver" c1 pkill -STOP -x slurmd
    mark=$(mc_mark "$ver" c2)
    local t0 ms
    t0=$(_mc_ms)
    got=$(mc_login "$ver" c1 c2)
    ms=$(($(_mc_ms) - t0))
    mc_exec "$ver" c1 pkill -CONT -x slurmd
    d=$(mc_decision "$ver" c2 "$mark")
    local within="in >2s"
    ((ms <= 2000)) && within="in <=2s"
    mc_record "slurmd_on_c1_stopped:_c1->c2" "$m" "$(_mc_jk "$got" "$j" "$k") $within (${ms} ms)"
    if [[ $m == ours ]]; then
        echo "       c2's line: ${d:-none}; ssh took $ms ms"
        mc_check "slurmd on c1 stopped: login c1->c2 follows action_unknown=newest (job $k)" _mc_eq "$got" "job $k"
        mc_check "slurmd on c1 stopped: decided within the 2000 ms login deadline (usec=$(cut -d' ' -f4 <<<"$d"))" \
            test "$(cut -d' ' -f4 <<<"$d")" -le 2000000
        mc_check "slurmd on c1 stopped: the RPC failure is in c2's log" \
            bash -c "docker exec $(mc_container "$ver" c2) tail -n +$((mark + 1)) /var/log/auth.log | grep -q 'callerid RPC failed'"
    fi

    # scancel J: every adopted session of J ends on both nodes; c1 has no
    # job left (runtime dir gone), c2 still has K (runtime dir kept).
    mc_exec "$ver" ctl scancel "$j"
    _mc_wait 30 _mc_pgrep_none "$ver" c1 "^sleep 901"; got=$?
    mc_record "scancel_J:_sessions_end_on_c1,c2" "$m" "$( ((got == 0)) && _mc_wait 30 _mc_pgrep_none "$ver" c2 "^sleep 902" && echo yes || echo no)"
    _chk "$label: scancel $j ends the adopted sessions on c1 and c2" _mc_eq "${MC_RESULT["scancel_J:_sessions_end_on_c1,c2|$m"]}" yes
    _mc_wait 30 _mc_user_procs_none "$ver" c1; got=$?
    _chk "$label: after scancel $j no process of $MC_USER is left on c1" test "$got" -eq 0
    if [[ $m == ours && $hooks == yes ]]; then
        _mc_wait 20 _mc_rundir_gone "$ver" c1; got=$?
        mc_check "Epilog removed /run/user/$MC_UID on c1 after the user's last job there" test "$got" -eq 0
        mc_check "Epilog kept /run/user/$MC_UID on c2, where job $k still runs" test -n "$(_mc_rundir "$ver" c2)"
    fi
    mc_exec "$ver" ctl scancel "$k"
    mc_cancel_all "$ver" || mc_fail "$label: jobs did not end after scancel"
    _mc_wait 30 _mc_user_procs_none "$ver" c2; got=$?
    _chk "$label: after scancel $k no process of $MC_USER is left on c2" test "$got" -eq 0
    if [[ $m == ours && $hooks == yes ]]; then
        _mc_wait 20 _mc_rundir_gone "$ver" c2; got=$?
        mc_check "Epilog removed /run/user/$MC_UID on c2 after the last job" test "$got" -eq 0
    fi
    got=$(mc_login "$ver" login c1)
    mc_record "after_scancel:_ssh_login->c1" "$m" "$got"
    _chk "$label: after scancel a new ssh login->c1 is denied again" _mc_eq "$got" denied+msg
    [[ $hooks != yes ]] || mc_starting_job "$ver" "$m"
    mc_adopt_ssh "$ver" "$m"
    [[ $hooks != yes ]] || mc_job_gpus "$ver" "$m"
    unset -f _chk
}

# A job still starting on c1: its Prolog (mc-prolog) pauses 8 s after the
# hooks' adopt-prolog has recorded the job, and slurmd starts the extern
# step only after that. A login during the pause (timeout_ms=2000) is told
# the job is still starting; one with timeout_ms=10000 waits through the
# rest of the pause and is adopted as the extern step comes up.
MC_PROLOG_PAUSE=8
mc_starting_job() { # VER ours|debian
    local ver=$1 m=$2 j mark out d t0 ms got
    mc_exec "$ver" c1 sh -c "echo $MC_PROLOG_PAUSE >/etc/slurm-adopt-mc-prolog-sleep"
    if ! j=$(mc_submit "$ver" -N1 -w c1) ||
        ! _mc_wait 30 mc_exec "$ver" c1 test -e "/run/slurm-adopt/users/$MC_UID/started/$j"; then
        mc_exec "$ver" c1 rm -f /etc/slurm-adopt-mc-prolog-sleep
        mc_fail "$m: job for the starting-job scenario did not reach its Prolog on c1"
        return 0
    fi
    mark=$(mc_mark "$ver" c1)
    t0=$(_mc_ms)
    out=$(mc_as "$ver" login "$MC_USER" "ssh c1 cat /proc/self/cgroup" 2>&1 </dev/null) || true
    ms=$(($(_mc_ms) - t0))
    d=$(mc_decision "$ver" c1 "$mark")
    if grep -q "your job $j is still starting on this node, try again shortly" <<<"$out"; then
        got="denied, still starting ($ms ms)"
    elif grep -q "$MC_DENY_MSG" <<<"$out"; then
        got="denied, no active jobs ($ms ms)"
    else
        got="$(_mc_jk "$(_mc_landed <<<"$out" | sed 's/^/job /')" "$j" "") ($ms ms)"
    fi
    mc_record "job_J_in_Prolog:_ssh_login->c1" "$m" "$got"
    if [[ $m == ours ]]; then
        echo "       c1's line: ${d:-none}; ssh took $ms ms"
        mc_check "job $j in its Prolog: the login is told it is still starting (${got})" \
            bash -c "grep -q 'your job $j is still starting on this node, try again shortly' <<<\"\$1\"" _ "$out"
        mc_check "job $j in its Prolog: c1's line says decision=deny job=$j reason=job_starting" \
            _mc_eq "$(cut -d' ' -f1-3 <<<"$d")" "deny $j job_starting"
        mc_check "job $j in its Prolog: the line before it says the login waited for job $j" \
            bash -c "docker exec $(mc_container "$ver" c1) tail -n +$((mark + 1)) /var/log/auth.log | grep -q 'job $j of $MC_USER is starting on this node'"
        mc_exec "$ver" c1 mc-pam ours timeout_ms=10000
    fi
    mark=$(mc_mark "$ver" c1)
    t0=$(_mc_ms)
    got=$(mc_login "$ver" login c1)
    ms=$(($(_mc_ms) - t0))
    d=$(mc_decision "$ver" c1 "$mark")
    # Ours with timeout_ms=10000; Debian's module has no such wait.
    mc_record "job_J_in_Prolog:_login_waiting_10s" "$m" "$(_mc_jk "$got" "$j" "") ($ms ms)"
    if [[ $m == ours ]]; then
        mc_exec "$ver" c1 mc-pam ours
        echo "       c1's line: ${d:-none}; ssh took $ms ms"
        mc_check "job $j in its Prolog: a login with timeout_ms=10000 waits and lands in job $j (${ms} ms)" \
            _mc_eq "$got" "job $j"
        mc_check "job $j in its Prolog: c1's line says decision=adopt job=$j reason=only_job" \
            _mc_eq "$(cut -d' ' -f1-3 <<<"$d")" "adopt $j only_job"
        MC_STARTING_FIGURES+=("$ver: a login during job $j's ${MC_PROLOG_PAUSE} s Prolog waited and was adopted after $ms ms (module usec=$(cut -d' ' -f4 <<<"$d"))")
    fi
    mc_exec "$ver" c1 rm -f /etc/slurm-adopt-mc-prolog-sleep
    mc_exec "$ver" ctl scancel "$j"
    mc_cancel_all "$ver" || mc_fail "$m: jobs did not end after the starting-job scenario"
}
MC_STARTING_FIGURES=()

# adopt-ssh from the login node: with two jobs J (older) and K (newer) on
# c1, "adopt-ssh J" and "adopt-ssh K" each land in the job named, where a
# plain "ssh c1" goes to the newest (K; the login node runs no slurmd, so
# callerid cannot help it). The relay runs in the job through srun
# --overlap, so c1's sshd sees a connection from a process of the job.
mc_adopt_ssh() { # VER ours|debian
    local ver=$1 m=$2 j k got out d mark t0 ms rc
    if ! j=$(mc_submit "$ver" -N1 -w c1) || ! mc_wait_job "$ver" "$j" c1 ||
        ! k=$(mc_submit "$ver" -N1 -w c1) || ! mc_wait_job "$ver" "$k" c1; then
        mc_fail "$m: the two jobs for adopt-ssh did not start on c1"
        return 0
    fi
    local x
    for x in "$j" "$k"; do
        mark=$(mc_mark "$ver" c1)
        t0=$(_mc_ms)
        out=$(mc_as "$ver" login "$MC_USER" "adopt-ssh $x -- cat /proc/self/cgroup" 2>&1 </dev/null) || true
        ms=$(($(_mc_ms) - t0))
        got=$(_mc_landed <<<"$out" | sed 's/^/job /')
        d=$(mc_decision "$ver" c1 "$mark")
        mc_record "adopt-ssh_$([[ $x == "$j" ]] && echo J || echo K)_(J+K_on_c1)" "$m" "$(_mc_jk "${got:-denied}" "$j" "$k")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
        if [[ $m == ours ]]; then
            echo "       c1's line: ${d:-none}; adopt-ssh took $ms ms"
            mc_check "adopt-ssh $x from the login node lands in job $x on c1 ($ms ms)" \
                bash -c "[[ \$1 == 'job $x' ]] || { printf '%s\n' \"\$2\"; exit 1; }" _ "$got" "$out"
            mc_check "c1's line for adopt-ssh $x says decision=adopt job=$x reason=callerid_match callerid=$x" \
                _mc_eq "$(cut -d' ' -f1-3,5 <<<"$d")" "adopt $x callerid_match $x"
            MC_ADOPT_SSH_FIGURES+=("$ver: adopt-ssh $x -- cat /proc/self/cgroup, login node to c1 and back: $ms ms (module usec=$(cut -d' ' -f4 <<<"$d"))")
        fi
    done
    got=$(mc_login "$ver" login c1)
    mc_record "plain_ssh_login->c1_(J+K_on_c1)" "$m" "$(_mc_jk "$got" "$j" "$k")"
    [[ $m != ours ]] || mc_check "beside adopt-ssh, a plain ssh login->c1 goes to the newest job, $k" _mc_eq "$got" "job $k"
    if [[ $m == ours ]]; then
        out=$(mc_as "$ver" login "$MC_USER" "adopt-ssh --config $j >/tmp/adopt-ssh-$j.conf && ssh -F /tmp/adopt-ssh-$j.conf job-$j cat /proc/self/cgroup" 2>&1 </dev/null) || true
        mc_check "adopt-ssh --config $j: 'ssh -F FILE job-$j' lands in job $j" _mc_eq "$(_mc_landed <<<"$out")" "$j"
        # The errors, each before any ssh or srun runs: exit 1 and its message.
        _ssh_err() { # ARGS EXPECTED-TEXT [USER]
            out=$(mc_as "$ver" login "${3:-$MC_USER}" "adopt-ssh $1 -- true" 2>&1 </dev/null) && rc=0 || rc=$?
            [[ $rc -eq 1 && $out == *"$2"* ]] || { echo "rc=$rc: $out"; return 1; }
        }
        mc_check "adopt-ssh 999999: 'there is no job 999999'" _ssh_err 999999 "there is no job 999999"
        mc_check "adopt-ssh --node c2 $j: 'node c2 is not one of job $j's nodes'" _ssh_err "--node c2 $j" "node c2 is not one of job $j's nodes (c1)"
        mc_check "adopt-ssh $j as adopt-bob: 'job $j is $MC_USER's, not yours'" _ssh_err "$j" "job $j is $MC_USER's, not yours" adopt-bob
        local p
        p=$(mc_as "$ver" login "$MC_USER" "sbatch --parsable --chdir=/tmp --output=/dev/null --begin=now+3600 --wrap 'sleep 900'" | cut -d';' -f1)
        mc_check "adopt-ssh $p (pending): 'job $p is not running (its state is PENDING)'" _ssh_err "$p" "job $p is not running (its state is PENDING)"
        mc_check "adopt-ssh x1: not a job id" _ssh_err x1 "'x1' is not a job id"
        unset -f _ssh_err
    fi
    mc_cancel_all "$ver" || mc_fail "$m: jobs did not end after the adopt-ssh scenario"
}
MC_ADOPT_SSH_FIGURES=()

MC_GPU_VARS='^(CUDA_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|ZE_AFFINITY_MASK|GPU_DEVICE_ORDINAL|SLURM_JOB_GPUS)='
# The job's GPU variables in an adopted session: two jobs with one of c1's
# two fake GPUs each, so that the second holds host GPU 1. An ssh session
# into it (adopt-ssh, as there are two jobs) must show the visibility
# variables a task of the job shows (srun --overlap env), and
# SLURM_JOB_GPUS as the batch script sees it: renumbered from 0 with
# ConstrainDevices=yes, host numbers without (classic layout: c1's
# cgroup.conf is rewritten and its slurmd restarted).
mc_job_gpus() { # VER ours|debian
    local ver=$1 m=$2 constrain
    local modes=(yes)
    [[ $MC_LAYOUT == configless || $m != ours ]] || modes+=(no)
    for constrain in "${modes[@]}"; do
        [[ $constrain == yes ]] || _mc_c1_constrain_devices "$ver" no || { mc_fail "$m: slurmd on c1 did not come back without ConstrainDevices"; return 0; }
        _mc_gpu_case "$ver" "$m" "$constrain"
        [[ $constrain == yes ]] || _mc_c1_constrain_devices "$ver" yes || mc_fail "$m: slurmd on c1 did not come back with ConstrainDevices"
    done
}

_mc_c1_constrain_devices() { # VER yes|no: rewrite c1's cgroup.conf, restart its slurmd
    local ver=$1
    if [[ $2 == yes ]]; then
        mc_exec "$ver" c1 sh -c 'grep -q ^ConstrainDevices= /etc/slurm/cgroup.conf || echo ConstrainDevices=yes >>/etc/slurm/cgroup.conf'
    else
        mc_exec "$ver" c1 sed -i '/^ConstrainDevices=/d' /etc/slurm/cgroup.conf
    fi
    mc_exec "$ver" c1 sh -c 'pkill -x slurmd; while pgrep -x slurmd >/dev/null; do sleep 0.2; done; slurmd -N c1'
    _mc_wait 60 _mc_nodes_idle "$ver"
}

_mc_gpu_case() { # VER ours|debian yes|no
    local ver=$1 m=$2 constrain=$3 j k task batch sess
    if ! j=$(mc_submit "$ver" -N1 -w c1 --gres=gpu:1) || ! mc_wait_job "$ver" "$j" c1 ||
        ! k=$(mc_as "$ver" login "$MC_USER" "sbatch --parsable --chdir=/tmp --output=/dev/null -w c1 --gres=gpu:1 --wrap 'env >/tmp/mc-batch-env-\$SLURM_JOB_ID; sleep 900'" | cut -d';' -f1) ||
        ! mc_wait_job "$ver" "$k" c1; then
        mc_fail "$m: the GPU jobs did not start on c1 (ConstrainDevices=$constrain)"
        mc_cancel_all "$ver" || true
        return 0
    fi
    task=$(mc_as "$ver" login "$MC_USER" "srun --jobid=$k -w c1 -N1 -n1 --overlap --quiet env" 2>&1 | grep -E "$MC_GPU_VARS" | grep -v '^SLURM_JOB_GPUS=' | sort | tr '\n' ' ')
    batch=$(mc_exec "$ver" c1 grep '^SLURM_JOB_GPUS=' "/tmp/mc-batch-env-$k" 2>/dev/null || true)
    sess=$(mc_as "$ver" login "$MC_USER" "adopt-ssh $k -- env" 2>&1 </dev/null | grep -E "$MC_GPU_VARS" | sort | tr '\n' ' ')
    mc_record "GPU_vars_in_ssh_(ConstrainDevices=$constrain)" "$m" "$([[ -n $sess ]] && echo "${sess% }" || echo none)"
    if [[ $m == ours ]]; then
        echo "       ConstrainDevices=$constrain: task of job $k: ${task:-none}| batch: ${batch:-none} | ssh: ${sess:-none}"
        mc_check "ConstrainDevices=$constrain: job $k's task sees CUDA_VISIBLE_DEVICES=$([[ $constrain == yes ]] && echo 0 || echo 1) (host GPU 1)" \
            bash -c "[[ \$1 == *'CUDA_VISIBLE_DEVICES=$([[ $constrain == yes ]] && echo 0 || echo 1) '* ]]" _ "$task"
        mc_check "ConstrainDevices=$constrain: an ssh into job $k has the task's GPU visibility variables" \
            _mc_eq "$(tr ' ' '\n' <<<"$sess" | grep -v '^SLURM_JOB_GPUS=' | grep . | tr '\n' ' ')" "$task"
        mc_check "ConstrainDevices=$constrain: the ssh has the batch script's SLURM_JOB_GPUS ($batch)" \
            bash -c "[[ -n \$2 && \$1 == *\"\$2 \"* ]]" _ "$sess" "$batch"
    fi
    mc_cancel_all "$ver" || mc_fail "$m: the GPU jobs did not end"
}

# Who is in job J on c1, while login->c1's "sleep 901" runs in it: adoptctl
# sessions lists that login (from the login node's address) with the sleep
# under it; a login that ends logs session_closed with its duration.
mc_who_is_in() { # VER JOB
    local ver=$1 j=$2 json line mark closed
    json=$(mc_exec "$ver" c1 adoptctl sessions --json 2>&1) || true
    line=$(grep -E "^\{\"job\":$j," <<<"$json" || true)
    mc_check "adoptctl sessions --json on c1: job $j is listed as $MC_USER's" \
        bash -c "grep -q '\"user\":\"$MC_USER\"' <<<\"\$1\" || { printf '%s\n' \"\$2\"; exit 1; }" _ "$line" "$json"
    mc_check "adoptctl sessions --json on c1: a login of job $j comes from the login node ($(mc_ip "$ver" login))" \
        bash -c "grep -q '\"remote\":\"$(mc_ip "$ver" login):' <<<\"\$1\" || { printf '%s\n' \"\$1\"; exit 1; }" _ "$line"
    mc_check "adoptctl sessions --json on c1: 'sleep 901' is under that login" \
        bash -c "grep -q '\"command\":\"sleep 901\"' <<<\"\$1\" || { printf '%s\n' \"\$1\"; exit 1; }" _ "$line"
    echo "       adoptctl sessions on c1:"
    mc_exec "$ver" c1 adoptctl sessions 2>&1 | sed 's/^/       | /'
    mark=$(mc_mark "$ver" c1)
    mc_as "$ver" login "$MC_USER" "ssh c1 sleep 2" >/dev/null 2>&1 </dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        closed=$(mc_auth_since "$ver" c1 "$mark" | grep -E "pam_adopt\(sshd:session\): user=$MC_USER .* event=session_closed " | tail -n1)
        [[ -z $closed ]] || break
        sleep 0.2
    done
    echo "       c1's close line: ${closed:-none}"
    mc_check "an adopted 'ssh c1 sleep 2' logs event=session_closed job=$j in_job=yes with duration_ms >= 2000" \
        bash -c "[[ \$1 =~ \ job=$j\ in_job=yes\ duration_ms=([0-9]+) ]] && ((BASH_REMATCH[1] >= 2000))" _ "$closed"
}

# _mc_doctor_clean RC OUTPUT: doctor exited 0 with no warning or failure;
# else OUTPUT is shown.
_mc_doctor_clean() {
    local bad
    bad=$(grep -E '^(fail|warn) ' <<<"$2" || true)
    [[ $1 -eq 0 && -z $bad ]] || { printf '%s\n' "$2"; return 1; }
}

# _mc_refused_cache VER MODULE JOB HOW: c1's configless cache made one a
# real node must refuse (HOW: o+w, writable by others; owner, another
# user's), one ssh login->c1 while JOB runs there, the cache restored.
# Records the parity row; for our module asserts the denial, its
# reason=node_setup and the logged cause.
_mc_refused_cache() {
    local ver=$1 m=$2 j=$3 how=$4 file=/run/slurm/conf/slurm.conf change undo why mark got d bob
    bob=$(mc_exec "$ver" c1 id -u adopt-bob)
    case $how in
        o+w) change=(chmod o+w) undo=(chmod o-w) why="writable by others" ;;
        owner) change=(chown adopt-bob) undo=(chown root) why="owned by uid $bob" ;;
    esac
    mc_exec "$ver" c1 "${change[@]}" "$file"
    mark=$(mc_mark "$ver" c1)
    got=$(mc_login "$ver" login c1)
    d=$(mc_decision "$ver" c1 "$mark")
    local out rc=0
    [[ $m != ours ]] || out=$(mc_exec "$ver" c1 adoptctl doctor 2>&1) || rc=$?
    mc_exec "$ver" c1 "${undo[@]}" "$file"
    mc_record "cache_$how:_login->c1_(J)" "$m" "$(_mc_jk "$got" "$j" "")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    [[ $m == ours ]] || return 0
    echo "       c1's line: ${d:-none}"
    mc_check "configless: cache $file $why: login->c1 is denied although job $j runs there" _mc_eq "$got" denied
    mc_check "configless: cache $how: c1's syslog line says decision=deny reason=node_setup" _mc_eq "$(cut -d' ' -f1,3 <<<"$d")" "deny node_setup"
    mc_check "configless: cache $how: c1's syslog says why the cache was refused ($why)" \
        bash -c "docker exec $(mc_container "$ver" c1) tail -n +$((mark + 1)) /var/log/auth.log | grep -E 'pam_adopt\(sshd:account\): .*slurm.conf: .*$why'"
    mc_check "configless: cache $how: adoptctl doctor on c1 exits 2 with a slurm-conf failure (exit $rc)" \
        bash -c '[[ $1 -eq 2 ]] && grep -qE "^fail +slurm-conf " <<<"$2" || { printf "%s\n" "$2"; exit 1; }' _ "$rc" "$out"
}

# mc_dynamic_scenarios VERSION ours|debian: the configless layout's dynamic
# node d1 (slurmd -Z, in no NodeName line) and doctor on the configless
# nodes. c1 and c2 have just run mc_scenarios without a slurm.conf.
mc_dynamic_scenarios() {
    local ver=$1 m=$2 label got d mark j out rc dyn n
    label=$([[ $m == ours ]] && echo pam_adopt || echo pam_slurm_adopt)
    dyn=$(mc_slurm_name d1)
    echo "--- Slurm $ver, $label: configless, dynamic node $dyn"
    for n in c1 c2 d1; do mc_exec "$ver" "$n" mc-pam "$m"; done
    mc_cancel_all "$ver" || { mc_fail "$label: could not clear old jobs"; return 0; }
    _chk() { if [[ $m == ours ]]; then mc_check "$@"; fi; }

    if [[ $m == ours ]]; then
        for n in c1 d1; do
            rc=0
            out=$(mc_exec "$ver" "$n" adoptctl doctor 2>&1) || rc=$?
            mc_check "configless: adoptctl doctor on $n exits 0 with no warning (exit $rc)" _mc_doctor_clean "$rc" "$out"
        done
    fi

    got=$(mc_login "$ver" login d1)
    mc_record "dynamic:_no_job:_ssh_login->d1" "$m" "$got"
    _chk "$label: dynamic d1, no job: ssh login->d1 is denied with the message" _mc_eq "$got" denied+msg

    if ! j=$(mc_submit "$ver" -N2 -w "c1,$dyn") || ! mc_wait_job "$ver" "$j" c1 d1; then
        mc_fail "$label: job on c1 and $dyn did not start"
        return 0
    fi
    mark=$(mc_mark "$ver" d1)
    got=$(mc_login "$ver" login d1)
    d=$(mc_decision "$ver" d1 "$mark")
    mc_record "dynamic:_job_J_on_c1,d1:_login->d1" "$m" "$(_mc_jk "$got" "$j" "")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: job $j: ssh login->d1 lands in job $j" _mc_eq "$got" "job $j"

    mark=$(mc_mark "$ver" d1)
    got=$(mc_login "$ver" c1 d1 "$j")
    d=$(mc_decision "$ver" d1 "$mark")
    mc_record "dynamic:_task_of_J_on_c1->d1" "$m" "$(_mc_jk "$got" "$j" "")${d:+ ($(cut -d' ' -f3 <<<"$d"))}"
    _chk "$label: from a task of job $j on c1, ssh d1 lands in job $j" _mc_eq "$got" "job $j"
    if [[ $m == ours ]]; then
        echo "       d1's line: ${d:-none}"
        mc_check "d1's syslog line says decision=adopt job=$j reason=only_job" _mc_eq "$(cut -d' ' -f1-3 <<<"$d")" "adopt $j only_job"
    fi

    _mc_refused_cache "$ver" "$m" "$j" o+w
    _mc_refused_cache "$ver" "$m" "$j" owner
    got=$(mc_login "$ver" login c1)
    _chk "$label: configless: cache restored, ssh login->c1 lands in job $j again" _mc_eq "$got" "job $j"

    local started
    docker exec -d "$(mc_container "$ver" login)" runuser -u "$MC_USER" -- ssh d1 "sleep 903"
    _mc_wait 15 _mc_pgrep_in_job "$ver" d1 "^sleep 903" "$j"; started=$?
    _chk "$label: session login->d1 (sleep 903) runs in job $j on d1" test "$started" -eq 0
    mc_exec "$ver" ctl scancel "$j"
    _mc_wait 30 _mc_pgrep_none "$ver" d1 "^sleep 903"; got=$?
    # A module that denied the login has no session for scancel to end.
    mc_record "dynamic:_scancel_J_ends_d1_session" "$m" "$( ((started != 0)) && echo "no session" || { ((got == 0)) && echo yes || echo no; })"
    _chk "$label: scancel $j ends the adopted session on d1" test "$got" -eq 0
    mc_cancel_all "$ver" || mc_fail "$label: jobs did not end after scancel"
    got=$(mc_login "$ver" login d1)
    mc_record "dynamic:_after_scancel:_login->d1" "$m" "$got"
    _chk "$label: after scancel a new ssh login->d1 is denied again" _mc_eq "$got" denied+msg
    unset -f _chk
}
