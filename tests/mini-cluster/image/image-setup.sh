#!/bin/bash
# Runs once inside the image build (Dockerfile RUN). Everything a node needs
# that is not a Debian package: the toolkit, slurm/munge/sshd/rsyslog config,
# test users with ssh keys, one munge key and one host key for the whole
# cluster (every node runs this same image, so they share them).
set -euo pipefail
stage=/opt/slurm-adopt-mc
# shellcheck source=/dev/null
source "$stage/cluster.env" # MC_NET (e.g. 172.31.22), MC_SLURM_VERSION
pamdir=/usr/lib/x86_64-linux-gnu/security
die() { echo "image-setup: error: $*" >&2; exit 1; }

# From the project's Debian package, as a site installs it: dpkg checks
# its Depends against this release's libraries.
install_toolkit() {
    local debs=("$stage"/slurm-adopt_*.deb)
    [[ -f ${debs[0]} ]] || die "no slurm-adopt .deb in $stage"
    dpkg -i "${debs[0]}" >/dev/null || die "dpkg -i ${debs[0]##*/} failed"
    [[ -f $pamdir/pam_adopt.so ]] || die "the package did not install $pamdir/pam_adopt.so"
}

# The hooks are configured only when they answer --version: a placeholder
# that exits 2 would drain every node at its first job.
hooks_usable() {
    local h
    for h in adopt-prolog adopt-epilog adopt-taskprolog; do
        /usr/libexec/slurm-adopt/$h --version >/dev/null 2>&1 || return 1
    done
}

install_toolkit
ldd "$pamdir/pam_adopt.so" | grep -q 'not found' && { ldd "$pamdir/pam_adopt.so" >&2; die "pam_adopt.so has unresolved libraries"; }
install -m 0755 "$stage/mc-init" /usr/local/sbin/mc-init
install -m 0755 "$stage/mc-pam" /usr/local/sbin/mc-pam
install -D -m 0755 "$stage/mc-prolog" /usr/local/libexec/mc-prolog

# ------------------------------------------------------------ munge
install -d -o munge -g munge -m 0700 /etc/munge
dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

# ------------------------------------------------------------ slurm
id slurm >/dev/null 2>&1 || die "no slurm user in the base image"
install -d -m 0755 /etc/slurm /var/spool/slurmd
install -d -o slurm -g slurm -m 0755 /var/log/slurm
install -d -o slurm -g slurm -m 0700 /var/lib/slurm/slurmctld
# slurmd -C reports the layout slurmd will register with; copying it keeps
# the nodes from being drained for a topology mismatch.
topo=$(slurmd -C 2>/dev/null | head -n1 | grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ' || true)
[[ -n $topo ]] || topo="CPUs=$(nproc) "
hooks=no
hook_lines="# hooks not configured: adopt-prolog --version failed (placeholder build)"
if hooks_usable; then
    hooks=yes
    hook_lines="Prolog=/usr/local/libexec/mc-prolog
Epilog=/usr/libexec/slurm-adopt/adopt-epilog
TaskProlog=/usr/libexec/slurm-adopt/adopt-taskprolog"
fi
cat >/etc/slurm/slurm.conf <<CONF
# slurm-adopt mini-cluster (tests/mini-cluster), Slurm $MC_SLURM_VERSION
ClusterName=adoptmc
# Two fake GPUs on c1 (gres.conf below; mc-init makes their device nodes):
# enough for Slurm to hand out, count and constrain, and for the session
# phase's GPU variables to be compared with what a task sees.
GresTypes=gpu
SlurmctldHost=ctl($MC_NET.10)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# The extern step every login joins is created at job start on each node.
PrologFlags=contain
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
# CR_CPU, not CR_Core: on a host with two threads per core a job would take
# the whole node and the "second job on the same node" scenarios need room.
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=120
DefMemPerCPU=100
$hook_lines
NodeName=c1 NodeAddr=$MC_NET.11 ${topo}RealMemory=1000 Gres=gpu:2 State=UNKNOWN
NodeName=c2 NodeAddr=$MC_NET.12 ${topo}RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=c1,c2 Default=YES MaxTime=INFINITE State=UP
CONF
# The host runs cgroup v1 (plus an empty cgroup2 at unified/), which the
# autodetection of several versions misreads: name the plugin.
cat >/etc/slurm/cgroup.conf <<CONF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=yes
CONF
cat >/etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=c1 Name=gpu File=/dev/fakegpu[0-1]
CONF
chmod 0644 /etc/slurm/slurm.conf /etc/slurm/cgroup.conf /etc/slurm/gres.conf
echo "$hooks" >/etc/slurm-adopt-mc-hooks

# ------------------------------------------------------------ rsyslog
# Only the local socket: imklog would copy the host's kernel log.
cat >/etc/rsyslog.conf <<'CONF'
module(load="imuxsock")
$FileCreateMode 0640
auth,authpriv.*                 /var/log/auth.log
*.*;auth,authpriv.none          -/var/log/syslog
CONF
rm -rf /etc/rsyslog.d

# ------------------------------------------------------------ sshd + PAM
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
# One host key on every node: one wildcard known_hosts line lets the
# clients check strictly without "Permanently added" noise.
echo "* $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >/etc/ssh/ssh_known_hosts
cat >/etc/ssh/sshd_config <<'CONF'
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM yes
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
X11Forwarding no
Subsystem sftp internal-sftp
CONF
install -d -m 0755 /etc/ssh/ssh_config.d
cat >/etc/ssh/ssh_config.d/slurm-adopt-mc.conf <<'CONF'
Host *
    StrictHostKeyChecking yes
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts
    BatchMode yes
    ConnectTimeout 10
CONF
# Not Debian's sshd stack: no pam_loginuid (no audit in a container), no
# pam_systemd (it would move the login out of the job). The module lines
# live in their own file, rewritten by mc-pam to switch modules.
cat >/etc/pam.d/sshd <<'CONF'
@include common-auth
account    required     pam_nologin.so
@include common-account
@include slurm-adopt-account
session    required     pam_unix.so
session    required     pam_limits.so
@include common-password
CONF
/usr/local/sbin/mc-pam ours

# ------------------------------------------------------------ users
uid=2001
for u in adopt-alice adopt-bob; do
    useradd --uid "$uid" --user-group --create-home --shell /bin/bash "$u"
    usermod -p '*' "$u"
    install -d -o "$u" -g "$u" -m 0700 "/home/$u/.ssh"
    ssh-keygen -q -t ed25519 -N '' -C "$u@slurm-adopt-mc" -f "/home/$u/.ssh/id_ed25519"
    cp "/home/$u/.ssh/id_ed25519.pub" "/home/$u/.ssh/authorized_keys"
    chown -R "$u:$u" "/home/$u/.ssh"
    chmod 0600 "/home/$u/.ssh/id_ed25519" "/home/$u/.ssh/authorized_keys"
    uid=$((uid + 1))
done

rm -rf "$stage"
echo "image-setup: Slurm $MC_SLURM_VERSION ($(slurmd -V 2>/dev/null)), hooks=$hooks, topology: $topo"
