#!/usr/bin/env bash
# Tier 2: the Debian package on a real Slurm node (this host).
#   1. packaging/build-deb.sh builds target/debian/slurm-adopt_*.deb
#   2. dpkg -i installs it; no PAM, sshd or Slurm file may change
#   3. `adoptctl doctor` (the installed one) passes on this host's real
#      slurm.conf/cgroup.conf and the test sshd's PAM stack and config, and
#      fails on a deliberately fail-open copy of that stack
#   4. ssh logins through the test sshd with the installed
#      /usr/lib/<multiarch>/security/pam_adopt.so, loaded by its bare name:
#      denied without a job, adopted into the job's extern step with one
#   5. dpkg --purge; every path the package brought is gone, the conffile
#      too, and the PAM/sshd/Slurm files are as before
# Run as root after setup-host.sh. The host's own /etc/pam.d/sshd and
# slurm.conf are never edited.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/real-slurm/lib.sh
source "$here/lib.sh"

[[ $(id -u) -eq 0 ]] || { echo "package.sh: must run as root (dpkg -i, sshd)" >&2; exit 1; }
[[ -f /etc/slurm/slurm.conf ]] || { echo "package.sh: /etc/slurm/slurm.conf missing: run tests/real-slurm/setup-host.sh first" >&2; exit 1; }

port=2230
user=adopt-alice
pkg=slurm-adopt
work=$(mktemp -d /tmp/slurm-adopt-package.XXXXXX)
installed_by_us=no

saved_toml=$work/adopt.toml.saved
cleanup() {
    stop_test_sshd "$port" || true
    cancel_all_test_jobs || true
    if [[ $installed_by_us == yes ]]; then dpkg --purge "$pkg" >/dev/null 2>&1 || true; fi
    if [[ -e $saved_toml ]]; then mv -f "$saved_toml" /etc/slurm/adopt.toml; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The files a package must never touch by itself.
guarded_files() {
    find /etc/pam.d -type f
    ls -d /etc/ssh/sshd_config /etc/slurm/slurm.conf /etc/slurm/cgroup.conf 2>/dev/null || true
}
snapshot() { guarded_files | LC_ALL=C sort | xargs sha256sum; }

# ------------------------------------------------------------ build
t0=$SECONDS
deb=$("$repo/packaging/build-deb.sh" | tail -n1)
echo "--- built $deb in $((SECONDS - t0)) s ($(du -k "$deb" | cut -f1) KiB)"
check "package file exists" test -f "$deb"
# shellcheck disable=SC2016 # expanded by the inner bash
check "package has no maintainer scripts" bash -c '! dpkg-deb --ctrl-tarfile "$1" | tar -t | grep -E "(pre|post)(inst|rm)$"' sh "$deb"
# shellcheck disable=SC2016 # expanded by the inner bash
check "package Depends names libc6 and libpam0g, and not libmunge2 (munged is spoken natively)" \
    bash -c 'd=$(dpkg-deb -f "$1" Depends); [[ $d == *libc6* && $d == *libpam0g* && $d != *libmunge* ]]' sh "$deb"
check "package Recommends munge (the callerid RPC needs munged)" \
    bash -c '[[ $(dpkg-deb -f "$1" Recommends) == *munge* ]]' sh "$deb"

if ! command -v lintian >/dev/null; then
    echo "--- installing lintian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lintian >"$work/apt-lintian.log" 2>&1 ||
        { tail -n 20 "$work/apt-lintian.log" >&2; echo "package.sh: apt-get install lintian failed" >&2; exit 1; }
fi
t0=$SECONDS
# spelling-error-in-binary is suppressed: Rust lays string literals end to
# end in .rodata, so lintian's word scan reads words made of the end of one
# literal and the start of the next ("limit" + "is not a unix socket"),
# and which pairs touch changes with every build. The man pages, copyright
# and description are still spell-checked (their own tags).
lintian --display-info --pedantic --fail-on error,warning,info --suppress-tags spelling-error-in-binary "$deb" >"$work/lintian.out" 2>&1 && lintian_rc=0 || lintian_rc=$?
grep -v 'running with root privileges' "$work/lintian.out" | sed 's/^/       | /' || true
echo "--- lintian took $((SECONDS - t0)) s"
check "lintian: no error, warning or info tag (pedantic; overrides in packaging/debian/lintian-overrides)" test "$lintian_rc" -eq 0

# A run that died before its purge left the package installed.
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
    echo "--- purging a $pkg left installed by an earlier run"
    dpkg --purge "$pkg" >/dev/null
fi

# An adopt.toml that no package owns (another test's) would make dpkg ask
# about the conffile, and the purge would delete it: keep it aside.
if [[ -e /etc/slurm/adopt.toml ]]; then
    echo "--- moving an unowned /etc/slurm/adopt.toml aside until the end"
    mv /etc/slurm/adopt.toml "$saved_toml"
fi

# Which of the package's paths exist before it is installed (directories
# such as /usr/sbin): only those may remain after the purge.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's#^\./#/#' -e 's#/$##' | grep -v '^/\?$' >"$work/contents"
while IFS= read -r p; do
    if [[ -e $p ]]; then echo "$p"; fi
done <"$work/contents" >"$work/preexisting"
snapshot >"$work/before.sha"

# ------------------------------------------------------------ install
check "dpkg -i $(basename "$deb")" dpkg -i "$deb"
installed_by_us=yes
snapshot >"$work/after-install.sha"
check "installing changed no PAM, sshd or Slurm file" cmp "$work/before.sha" "$work/after-install.sha"
dpkg -L "$pkg" >"$work/dpkg-L"

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
so=/usr/lib/$multiarch/security/pam_adopt.so
check "installed $so" test -f "$so"
check "installed /usr/sbin/adoptctl" test -x /usr/sbin/adoptctl
check "installed /usr/bin/adopt-ssh runs --help" /usr/bin/adopt-ssh --help
# help2man writes option dashes as roff's \- : look for the roff text.
check "man page adopt-ssh(1) installed and documents --config" bash -c 'zcat /usr/share/man/man1/adopt-ssh.1.gz | grep -qF -- "\-\-config"'
for h in adopt-prolog adopt-epilog adopt-taskprolog; do
    check "installed /usr/libexec/slurm-adopt/$h runs --help" /usr/libexec/slurm-adopt/"$h" --help
done
for m in pam_adopt adoptctl adopt-prolog adopt-epilog adopt-taskprolog; do
    check "man page $m(8) installed" test -s "/usr/share/man/man8/$m.8.gz"
done
# shellcheck disable=SC2016
check "adoptctl(8) documents the doctor subcommand" bash -c 'zcat /usr/share/man/man8/adoptctl.8.gz | grep -q "adoptctl doctor"'
# shellcheck disable=SC2016
check "adoptctl(8) documents the sessions subcommand" bash -c 'zcat /usr/share/man/man8/adoptctl.8.gz | grep -q "adoptctl sessions"'
check "/etc/slurm/adopt.toml is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' $pkg | grep -q ' /etc/slurm/adopt.toml '"
check "/etc/slurm/adopt.toml as shipped sets nothing" bash -c '! grep -Ev "^[[:space:]]*(#|$)" /etc/slurm/adopt.toml'
check "examples shipped" test -s /usr/share/doc/slurm-adopt/examples/pam.d-sshd

# The shipped adopt.toml with every setting uncommented must be accepted by
# the installed hooks (they refuse unknown keys); the directories are moved
# into $work so the run touches nothing of the node's.
sed -E 's/^#([a-z_]+ = |\[)/\1/' /etc/slurm/adopt.toml |
    sed -e "s#\"/run/slurm-adopt\"#\"$work/state\"#" -e "s#\"/run/user\"#\"$work/run-user\"#" -e '/^tmpfs_size/d' >"$work/adopt.toml"
install -d "$work/run-user"
uid=$(id -u "$user")
hook_env=(env SLURM_JOB_ID=4000000 SLURM_JOB_UID="$uid" SLURM_JOB_USER="$user")
check "the example adopt.toml, uncommented, sets some keys" grep -q '^mode = ' "$work/adopt.toml"
# (A config error is logged with result=skipped and exits 0, so the line
# must say result=ok.)
check "installed adopt-prolog accepts the uncommented example" \
    bash -c '"$@" 2>&1 | grep -q " result=ok "' _ "${hook_env[@]}" /usr/libexec/slurm-adopt/adopt-prolog --config "$work/adopt.toml" --no-syslog
check "installed adopt-prolog made the runtime dir" test -d "$work/run-user/$uid"
check "installed adopt-epilog accepts it and removes the dir" \
    "${hook_env[@]}" /usr/libexec/slurm-adopt/adopt-epilog --config "$work/adopt.toml" --no-syslog
check "installed adopt-epilog removed the runtime dir" test ! -e "$work/run-user/$uid"

# ------------------------------------------------------------ doctor
# The test sshd's stack names the module by its bare name, so libpam loads
# the file the package put in the multiarch security dir.
printf 'account required pam_unix.so\n-account required pam_adopt.so\n' >"$work/account"
start_test_sshd "$port" "$work/account"
sshd_dir=$ADOPT_RUNDIR/sshd-$port

doctor_out=$work/doctor.out
rc=0
/usr/sbin/adoptctl doctor --pam-file "$sshd_dir/pam-sshd" --sshd-config "$sshd_dir/sshd_config" >"$doctor_out" 2>&1 || rc=$?
sed 's/^/       | /' "$doctor_out"
check "adoptctl doctor passes on this host (exit $rc)" test "$rc" -eq 0
check "doctor found the installed module" grep -q "^ok    module-installed .* loads $so" "$doctor_out"
check "doctor read the real slurm.conf" grep -q '^ok    prolog-flags  /etc/slurm/slurm.conf:' "$doctor_out"
check "doctor found this host's NodeName" grep -q "^ok    login-node .* is compute node $ADOPT_NODE " "$doctor_out"

sed 's/pam_adopt\.so$/pam_adopt.so action_adopt_failure=allow/' "$sshd_dir/pam-sshd" >"$work/pam-fail-open"
rc=0
/usr/sbin/adoptctl doctor --pam-file "$work/pam-fail-open" --sshd-config "$sshd_dir/sshd_config" >"$work/doctor-bad.out" 2>&1 || rc=$?
check "doctor fails a fail-open copy of the stack (exit $rc)" test "$rc" -eq 2
check "doctor names the fail-open line" grep -q "^fail  fail-open  $work/pam-fail-open:[0-9]" "$work/doctor-bad.out"

# ------------------------------------------------------------ logins
cancel_all_test_jobs
# check captures a command's output, so the logins write their own files.
login_true() { ssh_as "$user" "$port" true 2>"$work/nojob.err"; }
login_cgroup() { ssh_as "$user" "$port" cat /proc/self/cgroup >"$work/job.out" 2>"$work/job.err"; }
check_not "no job: ssh login is denied" login_true
check "no job: the client sees the module's message" grep -q "you have no active jobs on this node" "$work/nojob.err"

job=$(submit_job "$user")
wait_job_running "$job"
check "one job: ssh login is let in" login_cgroup
check "one job: the login is in job $job's step_extern" grep -q "job_${job}/step_extern" "$work/job.out"
cancel_job "$job"
stop_test_sshd "$port"

# ------------------------------------------------------------ purge
check "dpkg --purge $pkg" dpkg --purge "$pkg"
installed_by_us=no
check "dpkg no longer knows $pkg" bash -c "! dpkg-query -W -f='\${Status}' $pkg 2>/dev/null | grep -q installed"
left=()
while IFS= read -r p; do
    [[ -z $p || $p == /. ]] && continue
    if [[ -e $p || -L $p ]] && ! grep -qxF -- "$p" "$work/preexisting"; then left+=("$p"); fi
done <"$work/dpkg-L"
check "every path the package brought is gone (left: ${left[*]:-none})" test "${#left[@]}" -eq 0
check "/usr/libexec/slurm-adopt is gone" test ! -e /usr/libexec/slurm-adopt
check "the conffile /etc/slurm/adopt.toml is gone" test ! -e /etc/slurm/adopt.toml
check "$so is gone" test ! -e "$so"
snapshot >"$work/after-purge.sha"
check "PAM, sshd and Slurm files are as before the install" cmp "$work/before.sha" "$work/after-purge.sha"

summary
