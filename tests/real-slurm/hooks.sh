#!/usr/bin/env bash
# Tier 2: the Prolog, Epilog and TaskProlog hooks on the real node.
# slurm.conf points Prolog/Epilog/TaskProlog at the release build (through
# setup-host.sh's ADOPT_HOOKS_DIR) for the duration of this script; the
# node is set back to no hooks when it ends.
#
#   runtime-dir mode: a job sees XDG_RUNTIME_DIR, owned by the user, 0700;
#   an ssh login adopted into the job sees it too (pam_adopt's session
#   phase); with two jobs, ending the first keeps the dir, ending the last
#   removes it.
#   linger mode (the marker file: this host has no logind): the same with
#   /var/lib/systemd/linger/USER.
#   hostile GPU values in the Prolog's environment: only the allow-listed
#   names with valid index lists are recorded and reach an ssh session.
#
# Needs setup-host.sh to have run and the release build of the hooks and
# of pam_adopt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

hooks_dir=/usr/local/libexec/slurm-adopt-tests
ours=/usr/local/lib/slurm-adopt-tests/pam_adopt.so
adopt_toml=/etc/slurm/adopt.toml
port=2224
user=adopt-alice
uid=$(id -u "$user")
rundir=/run/user/$uid
marker=/var/lib/systemd/linger/$user
syslog=/var/log/syslog
work=$(mktemp -d /tmp/slurm-adopt-hooks.XXXXXX)
chmod 0755 "$work"
# The batch jobs write their reports here as the user.
install -d -o "$user" -m 0755 "$work/out"

for b in adopt-prolog adopt-epilog adopt-taskprolog; do
    [[ -x $repo/target/release/$b ]] || { echo "hooks.sh: target/release/$b missing: cargo build --release -p adopt-hooks" >&2; exit 1; }
    install -D -m 0755 "$repo/target/release/$b" "$hooks_dir/$b"
done
install -D -m 0644 "$repo/target/release/libpam_adopt.so" "$ours"

restore() {
    [[ ! -e $hooks_dir/adopt-prolog.real ]] || mv -f "$hooks_dir/adopt-prolog.real" "$hooks_dir/adopt-prolog"
    stop_test_sshd $port || true
    cancel_all_test_jobs || true
    rm -f "$adopt_toml"
    "$here/setup-host.sh" >/dev/null || echo "hooks.sh: could not set the node back to no hooks" >&2
    rm -rf "$work"
}
trap restore EXIT

# A config left by a failed earlier run would change the mode.
rm -f "$adopt_toml"
ADOPT_HOOKS_DIR=$hooks_dir "$here/setup-host.sh" | sed 's/^/  /'
touch "$syslog"

# The Epilog's line is read only from what syslog got after `mark`, taken
# by end_job just before the scancel: a line of an earlier run's job with
# the same id cannot answer for this one.
mark=0
# end_job JOB: mark syslog, then cancel JOB (its Epilog runs meanwhile).
end_job() {
    mark=$(log_mark "$syslog")
    cancel_job "$1"
}
# epilog_line JOB: the adopt-epilog syslog line for JOB since the mark.
epilog_line() {
    log_has "$syslog" "$mark" "adopt-epilog\[[0-9]+\]: job=$1 " 30 || return 1
    log_since "$syslog" "$mark" | grep -E "adopt-epilog\[[0-9]+\]: job=$1 " | tail -n1
}
epilog_says() { epilog_line "$1" | grep -qF -- "$2"; }
# epilog_lists JOB WHAT PID: the line's WHAT list ("would kill strays (dry
# run):" or "killed N of M strays:") names PID; the user may have other
# strays (left by earlier tests), which are reaped too.
epilog_lists() { epilog_line "$1" | grep -qE -- "$2( [0-9]+\([^)]*\))* $3\(sleep\)"; }

# A job whose batch script reports its environment into $work.
report_job() {
    local name=$1
    submit_job "$user" --output="$work/out/$name.out" --wrap \
        "echo XDG_RUNTIME_DIR=\$XDG_RUNTIME_DIR; echo XDG_SESSION_TYPE=\$XDG_SESSION_TYPE; echo XDG_SESSION_CLASS=\$XDG_SESSION_CLASS; stat -c 'dir=%U %a' \"\$XDG_RUNTIME_DIR\"; sleep 600"
}
job_reported() { grep -q '^dir=' "$1" 2>/dev/null; }

echo "== runtime-dir mode"
rm -rf "$rundir"
prolog_mark=$(log_mark "$syslog")
job1=$(report_job j1)
wait_job_running "$job1"
wait_until 20 job_reported "$work/out/j1.out" || cat "$work/out/j1.out" 2>/dev/null
check "the job's XDG_RUNTIME_DIR is $rundir" grep -qx "XDG_RUNTIME_DIR=$rundir" "$work/out/j1.out"
check "it exists, owned by $user, mode 700" grep -qx "dir=$user 700" "$work/out/j1.out"
check "TaskProlog exports XDG_SESSION_TYPE=tty" grep -qx "XDG_SESSION_TYPE=tty" "$work/out/j1.out"
check "TaskProlog exports XDG_SESSION_CLASS=user" grep -qx "XDG_SESSION_CLASS=user" "$work/out/j1.out"
check "the Prolog logged to syslog" log_has "$syslog" "$prolog_mark" "adopt-prolog\[[0-9]+\]: job=$job1 user=$user uid=$uid mode=runtime-dir result=ok"

printf 'account required pam_unix.so\naccount required %s\n' "$ours" >"$work/account"
printf 'session optional %s\n' "$ours" >"$work/session"
start_test_sshd $port "$work/account" "$work/session"
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_out=$(ssh_as "$user" $port 'echo "XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR"; echo "SLURM_JOB_ID=$SLURM_JOB_ID"; test -O "$XDG_RUNTIME_DIR" && echo owned
    echo "XDG_SESSION_TYPE=$XDG_SESSION_TYPE"; echo "XDG_SESSION_CLASS=$XDG_SESSION_CLASS"
    echo "XDG_SESSION_ID=${XDG_SESSION_ID-unset}"; echo "sessionid=$(cat /proc/self/sessionid)"' </dev/null 2>&1 || true)
echo "$ssh_out" | sed 's/^/  ssh: /'
check "the adopted ssh login is in job $job1" grep -qx "SLURM_JOB_ID=$job1" <<<"$ssh_out"
check "the adopted ssh login sees XDG_RUNTIME_DIR=$rundir" grep -qx "XDG_RUNTIME_DIR=$rundir" <<<"$ssh_out"
check "and the directory is the user's" grep -qx owned <<<"$ssh_out"
check "the adopted ssh login sees XDG_SESSION_TYPE=tty" grep -qx "XDG_SESSION_TYPE=tty" <<<"$ssh_out"
check "the adopted ssh login sees XDG_SESSION_CLASS=user" grep -qx "XDG_SESSION_CLASS=user" <<<"$ssh_out"
# The audit session id when the kernel set one (4294967295: none, omitted).
sid=$(sed -n 's/^sessionid=//p' <<<"$ssh_out")
want_sid=$([[ $sid == 4294967295 || -z $sid ]] && echo unset || echo "$sid")
check "the adopted ssh login's XDG_SESSION_ID is its audit session ($want_sid)" grep -qx "XDG_SESSION_ID=$want_sid" <<<"$ssh_out"

job2=$(submit_job "$user")
wait_job_running "$job2"
end_job "$job1"
check "ending job $job1 while $job2 runs: the Epilog keeps the dir" epilog_says "$job1" "verdict=not-last:$job2 "
check "$rundir still exists" test -d "$rundir"
end_job "$job2"
check "ending the last job $job2: the Epilog says last" epilog_says "$job2" "verdict=last "
check "$rundir is gone" test ! -e "$rundir"

echo "== linger mode (marker file)"
printf '# written by tests/real-slurm/hooks.sh\nmode = "linger"\n[linger]\nvia = "marker-file"\n' >"$adopt_toml"
rm -f "$marker"
job3=$(submit_job "$user")
job4=$(submit_job "$user")
wait_job_running "$job3"
wait_job_running "$job4"
check "the Prolog wrote $marker" test -f "$marker"
end_job "$job3"
check "ending job $job3 while $job4 runs keeps linger" epilog_says "$job3" "verdict=not-last:$job4 "
check "$marker is still there" test -f "$marker"
end_job "$job4"
check "ending the last job $job4 disables linger" epilog_says "$job4" "verdict=last "
check "$marker is gone" test ! -e "$marker"
check "linger mode made no runtime dir" test ! -e "$rundir"

echo "== reap_strays at the last job"
# A process of the user outside any job (say, left by a login the module
# did not adopt): only the last job's Epilog reaps it, dry run first.
start_stray() {
    runuser -u "$user" -- setsid sleep 900 </dev/null >/dev/null 2>&1 &
    wait_until 5 test -n "$(pgrep --ns $$ -u "$user" -f 'sleep 900' || true)"
    pgrep --ns $$ -u "$user" -f 'sleep 900' | head -n1
}
printf '# written by tests/real-slurm/hooks.sh\n[reap_strays]\nenabled = true\ndry_run = true\n' >"$adopt_toml"
stray=$(start_stray)
job5=$(submit_job "$user")
wait_job_running "$job5"
end_job "$job5"
check "dry run: the last Epilog names the stray $stray" epilog_lists "$job5" 'would kill strays \(dry run\):' "$stray"
check "dry run: the stray $stray lives" kill -0 "$stray"
printf '# written by tests/real-slurm/hooks.sh\n[reap_strays]\nenabled = true\ndry_run = false\n' >"$adopt_toml"
job6=$(submit_job "$user")
job7=$(submit_job "$user")
wait_job_running "$job6"
wait_job_running "$job7"
cancel_job "$job6"
check "not the last job: the stray $stray lives" kill -0 "$stray"
end_job "$job7"
check "the last Epilog killed the stray" epilog_lists "$job7" 'killed [0-9]+ of [0-9]+ strays:' "$stray"
check "the stray $stray is gone" wait_until 5 _pid_gone "$stray"
pkill --ns $$ -u "$user" -f 'sleep 900' 2>/dev/null || true

echo "== hostile GPU values in the Prolog's environment"
# The Prolog's environment is slurmd's, but the record it leaves must hold
# only allow-listed names with index lists, whatever that environment
# says: a wrapper gives the real adopt-prolog values with a newline and a
# second assignment, shell syntax, a space, and names off the list. Slurm
# runs the Prolog by path at each job, so swapping the file is enough.
rm -f "$adopt_toml" /tmp/slurm-adopt-pwned
mv "$hooks_dir/adopt-prolog" "$hooks_dir/adopt-prolog.real"
cat >"$hooks_dir/adopt-prolog" <<EOF
#!/bin/sh
CUDA_VISIBLE_DEVICES='0
LD_PRELOAD=/nonexistent/slurm-adopt-evil.so'
ROCR_VISIBLE_DEVICES='0;touch /tmp/slurm-adopt-pwned'
GPU_DEVICE_ORDINAL='1 LD_PRELOAD=x'
ZE_AFFINITY_MASK='1,2'
SLURM_JOB_GPUS='1,2'
SLURM_ADOPT_EVIL='1'
LD_AUDIT='/nonexistent/slurm-adopt-evil.so'
export CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES GPU_DEVICE_ORDINAL ZE_AFFINITY_MASK SLURM_JOB_GPUS SLURM_ADOPT_EVIL LD_AUDIT
exec $hooks_dir/adopt-prolog.real "\$@"
EOF
chmod 0755 "$hooks_dir/adopt-prolog"
job8=$(submit_job "$user")
wait_job_running "$job8"
mv -f "$hooks_dir/adopt-prolog.real" "$hooks_dir/adopt-prolog"
record=/run/slurm-adopt/users/$uid/devices/$job8
echo "  record $record:"; sed 's/^/  | /' "$record" 2>/dev/null || echo "  | (none)"
_is() { [[ $1 == "$2" ]] || { echo "expected '$2', got '$1'"; return 1; }; }
check "the Prolog recorded only the two valid allow-listed values" \
    _is "$(sort "$record" 2>/dev/null | tr '\n' ' ')" "SLURM_JOB_GPUS=1,2 ZE_AFFINITY_MASK=1,2 "
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_out=$(ssh_as "$user" $port 'echo "SLURM_JOB_ID=$SLURM_JOB_ID"; env' </dev/null 2>&1 || true)
gpu_env=$(grep -E '^(CUDA_VISIBLE_DEVICES|ROCR_VISIBLE_DEVICES|ZE_AFFINITY_MASK|GPU_DEVICE_ORDINAL|SLURM_JOB_GPUS)=' <<<"$ssh_out" | sort | tr '\n' ' ')
echo "  ssh: GPU variables: ${gpu_env:-none}"
check "the adopted ssh login is in job $job8" grep -qx "SLURM_JOB_ID=$job8" <<<"$ssh_out"
check "it has ZE_AFFINITY_MASK renumbered (ConstrainDevices=yes) and the job's SLURM_JOB_GPUS, nothing else of the five" \
    _is "$gpu_env" "SLURM_JOB_GPUS=1,2 ZE_AFFINITY_MASK=0,1 "
check "no injected assignment or name reached the session" \
    bash -c '! grep -E "slurm-adopt-evil|slurm-adopt-pwned|^SLURM_ADOPT_EVIL=|^LD_AUDIT=|^LD_PRELOAD=" <<<"$1"' _ "$ssh_out"
check "nothing ran the injected shell" test ! -e /tmp/slurm-adopt-pwned
end_job "$job8"

summary
