# shellcheck shell=bash
# Helpers for the real-Slurm test tier; source this from a test script that
# runs as root after setup-host.sh:
#   start_test_sshd / stop_test_sshd   an sshd on 127.0.0.1:PORT whose PAM
#                                      "sshd" service has a given account stack
#   ssh_as                             ssh to it as a test user (or root)
#   submit_job / wait_job_running / cancel_job / cancel_all_test_jobs
#   check / check_not / summary        pass/fail counting
#   log_mark / log_since / log_has     log assertions on what came after a mark
#   debian_module_path                 Debian's pam_slurm_adopt.so

ADOPT_KEYDIR=/var/lib/slurm-adopt-tests/keys
ADOPT_TEST_USERS=(adopt-alice adopt-bob)
ADOPT_RUNDIR=/run/slurm-adopt-tests
ADOPT_NODE=$(hostname -s)
# The client's LogLevel. INFO, not ERROR: the ssh client prints the PAM
# account message (sent by sshd as a userauth banner) and the disconnect
# reason only at INFO and above, and tests grep them. The known_hosts file
# written by start_test_sshd keeps INFO free of "Permanently added" noise.
: "${ADOPT_SSH_LOGLEVEL:=INFO}"

adopt_spool_dir() {
    local d
    d=$(sed -n 's/^[[:space:]]*SlurmdSpoolDir[[:space:]]*=[[:space:]]*//Ip' /etc/slurm/slurm.conf 2>/dev/null | tail -n1)
    echo "${d:-/var/spool/slurmd}"
}

# wait_until SECONDS CMD...: poll CMD every 0.1 s; non-zero on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# wait_for_line FILE REGEX [SECONDS]: until a line of FILE matches (grep -E).
wait_for_line() {
    wait_until "${3:-10}" _file_has_line "$1" "$2"
}
_file_has_line() { grep -Eq -- "$2" "$1" 2>/dev/null; }

# ------------------------------------------------------------------ log marks
# A shared log (/var/log/auth.log, /var/log/syslog) keeps every earlier
# run's and scenario's lines (and job ids repeat once Slurm's state is
# wiped): an assertion that greps the whole file can pass on a line this
# run never wrote. So every log assertion marks the log before its action and reads
# only what came after (as the mini-cluster's mc_mark does, in bytes here):
#   mark=$(log_mark /var/log/auth.log); <action>
#   check "..." log_has /var/log/auth.log "$mark" 'REGEX'
#
# log_mark FILE: FILE's size in bytes now (0 while it does not exist).
log_mark() { stat -c %s -- "$1" 2>/dev/null || echo 0; }

# log_since FILE MARK: the bytes FILE got after MARK. A file now shorter
# than MARK was rotated or truncated since: all of it is new.
log_since() {
    local size
    size=$(log_mark "$1")
    if ((size < $2)); then
        cat -- "$1"
    else
        tail -c "+$(($2 + 1))" -- "$1"
    fi
}

# log_has FILE MARK REGEX [SECONDS]: until a line written after MARK
# matches (grep -E); rsyslog writes a moment after the program logs.
# Non-zero, with what did come after the mark, on timeout.
log_has() {
    wait_until "${4:-10}" _log_has_now "$1" "$2" "$3" && return 0
    echo "log_has: no line matching '$3' in $1 after byte $2 within ${4:-10} s; what came after it:" >&2
    log_since "$1" "$2" | tail -n 20 >&2
    return 1
}
# Not `log_since | grep -q`: under pipefail, grep -q's early exit can fail
# the pipeline by SIGPIPE-ing tail even though it matched.
_log_has_now() { grep -Eq -- "$3" < <(log_since "$1" "$2"); }

# ------------------------------------------------------------ adoptctl check
# agrees_with_module LABEL MARK USER "MODULE-ARGS" [ADOPTCTL-CHECK-ARGS...]:
# the module's last decision line for USER (service sshd) written after
# MARK, and `adoptctl check USER` run now with the same module arguments,
# give the same decision and reason. Run it while the situation the login
# met still holds (the job still running).
ADOPTCTL=${ADOPTCTL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/release/adoptctl}
agrees_with_module() {
    local label=$1 mark=$2 who=$3 args=$4 module dry out
    shift 4
    log_has /var/log/auth.log "$mark" "pam_adopt\(sshd:account\): user=$who " 5 2>/dev/null || true
    module=$(log_since /var/log/auth.log "$mark" | grep -E "pam_adopt\(sshd:account\): user=$who " |
        tail -n1 | sed -nE 's/.* decision=([a-z]+) job=[^ ]+ reason=([a-z_]+) .*/\1 \2/p')
    # shellcheck disable=SC2086 # the module arguments are words, as in the PAM line
    out=$("$ADOPTCTL" check "$who" "$@" -- $args 2>&1) || true
    dry=$(sed -nE 's/^decision line: .* decision=([a-z]+) job=[^ ]+ reason=([a-z_]+) .*/\1 \2/p' <<<"$out")
    check "$label: adoptctl check gives the module's decision and reason (module: '${module:-no line}', check: '${dry:-none}')" \
        test -n "$module" -a "$module" = "$dry"
}

# ------------------------------------------------------------------ modules
# Path of Debian's pam_slurm_adopt.so (bookworm: /lib/security/...).
debian_module_path() {
    local p
    p=$(dpkg -L libpam-slurm-adopt 2>/dev/null | grep '/pam_slurm_adopt\.so$' | head -n1)
    [[ -n $p && -f $p ]] || { echo "lib.sh: pam_slurm_adopt.so not found (libpam-slurm-adopt installed?)" >&2; return 1; }
    echo "$p"
}

# ------------------------------------------------------------------ sshd
_sshd_dir() { echo "$ADOPT_RUNDIR/sshd-$1"; }

_port_listening() { [[ -n $(ss -ltnH "( sport = :$1 )" 2>/dev/null) ]]; }

# start_test_sshd PORT ACCOUNT_LINES_FILE [SESSION_LINES_FILE]
# sshd always uses the PAM service "sshd", and the host's /etc/pam.d/sshd
# must stay untouched: sshd runs in a private mount namespace in which a
# generated file is bind-mounted over /etc/pam.d/sshd. The namespace lives
# as long as the daemon and every session it forks. The environment of the
# caller (e.g. SLURM_CONF=...) is passed on to sshd and so to the modules.
# sshd's own log: $ADOPT_RUNDIR/sshd-PORT/sshd.log (modules still syslog).
# ADOPT_SSHD_EXTRA_CONFIG: more sshd_config lines (e.g. MaxStartups for a
# burst of logins).
start_test_sshd() {
    local port=$1 account=$2 session=${3:-} dir
    [[ -r $account ]] || { echo "start_test_sshd: cannot read $account" >&2; return 1; }
    dir=$(_sshd_dir "$port")
    stop_test_sshd "$port"
    if _port_listening "$port"; then
        echo "start_test_sshd: port $port is in use by another process" >&2
        return 1
    fi
    install -d -m 0700 "$dir"
    install -d -m 0755 /run/sshd

    {
        echo "# generated by slurm-adopt tests/real-slurm/lib.sh for port $port"
        # Public-key logins never run the auth stack; kept as Debian has it.
        echo "@include common-auth"
        cat "$account"
        # No pam_systemd (no systemd here, and it would move the session
        # out of the job's cgroup), no pam_loginuid (no audit in the VM).
        echo "session required pam_unix.so"
        if [[ -n $session ]]; then cat "$session"; fi
    } >"$dir/pam-sshd"
    chmod 0644 "$dir/pam-sshd"

    cat >"$dir/sshd_config" <<EOF
# generated by slurm-adopt tests/real-slurm/lib.sh
ListenAddress 127.0.0.1
Port $port
PidFile $dir/sshd.pid
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM yes
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
${ADOPT_SSHD_EXTRA_CONFIG:-}
EOF
    # A fixed alias for the host key: the client checks it strictly and
    # prints no "Permanently added" warning.
    echo "adopt-test-sshd $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >"$dir/known_hosts"
    : >"$dir/sshd.log"

    /usr/sbin/sshd -t -f "$dir/sshd_config" || { echo "start_test_sshd: bad sshd config" >&2; return 1; }
    # sshd forks into the background; unshare returns when sh has exec'd it
    # and the parent exited.
    # shellcheck disable=SC2016 # $1..$3 are expanded by the inner sh
    unshare --mount --propagation private -- /bin/sh -c \
        'mount --bind "$1" /etc/pam.d/sshd && exec /usr/sbin/sshd -f "$2" -E "$3"' \
        sh "$dir/pam-sshd" "$dir/sshd_config" "$dir/sshd.log"
    if ! wait_until 10 _port_listening "$port"; then
        echo "start_test_sshd: sshd did not listen on $port; its log:" >&2
        cat "$dir/sshd.log" >&2
        return 1
    fi
}

# stop_test_sshd PORT: stop the listener (sessions it forked live on until
# they end, like a real sshd restart).
stop_test_sshd() {
    local port=$1 dir pid
    dir=$(_sshd_dir "$port")
    [[ -f $dir/sshd.pid ]] || return 0
    pid=$(cat "$dir/sshd.pid" 2>/dev/null || true)
    if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == sshd ]]; then
        kill "$pid" 2>/dev/null || true
        wait_until 5 _pid_gone "$pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/sshd.pid"
}
_pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# ssh_as USER PORT CMD...: run CMD over ssh as USER with USER's test key.
# Returns the remote exit status (255: ssh itself failed, e.g. denied).
# stderr is the client's own, so callers can grep the PAM message. stdin is
# passed through: use </dev/null in loops that read stdin.
ssh_as() {
    local user=$1 port=$2 dir
    shift 2
    dir=$(_sshd_dir "$port")
    ssh -F none -i "$ADOPT_KEYDIR/$user" -p "$port" -l "$user" \
        -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
        -o StrictHostKeyChecking=yes -o HostKeyAlias=adopt-test-sshd \
        -o UserKnownHostsFile="$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null \
        -o ConnectTimeout=10 -o LogLevel="$ADOPT_SSH_LOGLEVEL" \
        127.0.0.1 -- "$@"
}

# ------------------------------------------------------------------ jobs
# submit_job USER [SBATCH_ARGS...]: submit a batch job as USER and print its
# id. The job runs `sleep 600` unless a --wrap=... is among the arguments.
submit_job() {
    local user=$1 out
    shift
    local wrap=(--wrap "sleep 600") a
    for a in "$@"; do [[ $a == --wrap* ]] && wrap=(); done
    # runuser keeps our cwd; --chdir and --output keep the job out of it.
    out=$(cd / && runuser -u "$user" -- sbatch --parsable --chdir=/tmp --output=/dev/null \
        --job-name=adopt-test "${wrap[@]}" "$@") || {
        echo "submit_job: sbatch as $user failed" >&2
        return 1
    }
    echo "${out%%;*}"
}

_job_state() { squeue -h -j "$1" -o '%T' 2>/dev/null | head -n1; }
_job_running() {
    [[ $(_job_state "$1") == RUNNING && -S "$(adopt_spool_dir)/${ADOPT_NODE}_$1.4294967292" ]]
}
_job_gone() {
    local s
    s=$(_job_state "$1")
    [[ (-z $s || $s == CANCELLED || $s == COMPLETED) && ! -e "$(adopt_spool_dir)/${ADOPT_NODE}_$1.4294967292" ]]
}

# wait_job_running JOBID [SECONDS]: until the job runs and its extern step
# socket (SlurmdSpoolDir/<node>_<job>.4294967292) exists.
wait_job_running() {
    local job=$1 secs=${2:-30}
    wait_until "$secs" _job_running "$job" && return 0
    echo "wait_job_running: job $job not running with an extern step after ${secs}s (state: $(_job_state "$job"))" >&2
    scontrol show job "$job" >&2 2>/dev/null || true
    ls -la "$(adopt_spool_dir)" >&2 || true
    tail -n 20 /var/log/slurm/slurmd.log >&2 || true
    return 1
}

# cancel_job JOBID: scancel and wait until the job and its extern step are gone.
cancel_job() {
    local job=$1
    scancel "$job" 2>/dev/null || true
    wait_until 30 _job_gone "$job" && return 0
    echo "cancel_job: job $job still present after 30 s (state: $(_job_state "$job"))" >&2
    return 1
}

_no_test_jobs() {
    local u
    for u in "${ADOPT_TEST_USERS[@]}"; do
        [[ -z $(squeue -h -u "$u" -t PD,R,CG,CF,S -o %i 2>/dev/null) ]] || return 1
    done
    ! compgen -G "$(adopt_spool_dir)/${ADOPT_NODE}_*.4294967292" >/dev/null
}

# cancel_all_test_jobs: cancel every job of the test users and wait for
# their steps to be gone.
cancel_all_test_jobs() {
    local u
    for u in "${ADOPT_TEST_USERS[@]}"; do scancel -u "$u" 2>/dev/null || true; done
    wait_until 30 _no_test_jobs && return 0
    echo "cancel_all_test_jobs: test jobs still present after 30 s" >&2
    squeue >&2 || true
    return 1
}

# ------------------------------------------------------------------ assertions
ADOPT_PASSED=0
ADOPT_FAILED=0

# check NAME CMD...: CMD must succeed. Its output is shown only on failure.
# Always returns 0, so a failed check does not end a `set -e` script.
check() {
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        ADOPT_PASSED=$((ADOPT_PASSED + 1))
        echo "ok   - $name"
    else
        ADOPT_FAILED=$((ADOPT_FAILED + 1))
        echo "FAIL - $name (exit $rc)"
        [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/       | /'
    fi
    return 0
}

# check_not NAME CMD...: CMD must fail.
check_not() {
    local name=$1
    shift
    check "$name" _adopt_not "$@"
}
_adopt_not() { ! "$@"; }

# summary: the final "N passed, N failed" line; non-zero if anything failed.
summary() {
    echo "$ADOPT_PASSED passed, $ADOPT_FAILED failed"
    ((ADOPT_FAILED == 0))
}
