#!/bin/bash
# configure.sh CPUS: runs once in the guest rootfs chroot at image build
# (build-image.sh). Everything the node needs that is not a Debian package:
# boot trimming, a static address for the ssh hostfwd, munge, Slurm on
# cgroup v2 at 127.0.0.1, sshd and its PAM stack, two test users with ssh
# keys. The project's .deb is NOT installed here: test.sh installs it into
# each boot, so a code change never rebuilds the image.
set -euo pipefail
cpus=${1:?usage: configure.sh CPUS}
die() { echo "configure.sh: error: $*" >&2; exit 1; }
trap 'echo "configure.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# ------------------------------------------------------------ system
echo slurmvm >/etc/hostname
cat >/etc/hosts <<'EOF'
127.0.0.1 localhost slurmvm
::1 localhost ip6-localhost ip6-loopback
EOF
echo '/dev/vda / ext4 rw,noatime 0 0' >/etc/fstab
# A fixed machine-id: an empty one makes every boot a "first boot"
# (presets applied again, systemd-firstboot). Each boot runs on a
# throwaway overlay of the same image, so one id is right.
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >/etc/machine-id
echo >>/etc/machine-id

# qemu's user network forwards the host port to 10.0.2.15:22; the guest
# needs only that address on eth0 (net.ifnames=0 on the kernel line is not
# needed: the unit finds the one non-loopback interface). iproute2 alone,
# the same on every suite (networkd's packaging differs between them).
cat >/etc/systemd/system/vm-net.service <<'EOF'
[Unit]
Description=Static address for the qemu user network (10.0.2.15/24)
DefaultDependencies=no
After=systemd-udev-settle.service systemd-udevd.service
Before=network.target ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for i in $(seq 1 100); do dev=$(ls /sys/class/net | grep -vx lo | head -n1); [ -n "$dev" ] && break; sleep 0.1; done; ip link set lo up; ip link set "$dev" up; ip addr add 10.0.2.15/24 dev "$dev"; ip route add default via 10.0.2.2'

[Install]
WantedBy=multi-user.target
EOF
systemctl enable vm-net.service

# Root on the serial console without a password: the debug path when ssh
# does not come up (the tier prints the serial log's tail on failure).
install -d /etc/systemd/system/serial-getty@ttyS0.service.d
cat >/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear %I 115200 linux
EOF
# Boot work a test node never needs, under TCG where every unit costs.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    dpkg-db-backup.timer man-db.timer systemd-networkd-wait-online.service getty@tty1.service \
    systemd-pstore.service systemd-timesyncd.service; do
    systemctl mask "$u" >/dev/null 2>&1 || true
done
# Volatile journal: nothing to flush to disk, and the tier reads it over
# ssh with cursors anyway.
install -d /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' >/etc/systemd/journald.conf.d/vm.conf

# ------------------------------------------------------------ munge
install -d -o munge -g munge -m 0700 /etc/munge
dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

# ------------------------------------------------------------ slurm
id slurm >/dev/null 2>&1 || die "no slurm user (slurmctld's postinst makes it)"
install -d -m 0755 /etc/slurm
install -d -o slurm -g slurm -m 0755 /var/log/slurm
install -d -o slurm -g slurm -m 0700 /var/lib/slurm/slurmctld
install -d -m 0755 /var/lib/slurm/slurmd
# The hooks are those of the project's .deb, installed at each boot before
# any job: a missing hook fails the job's Prolog and drains the node,
# which the scenarios would see (they never skip).
cat >/etc/slurm/slurm.conf <<EOF
# slurm-adopt VM tier (tests/vm): one node on cgroup v2, all on 127.0.0.1
ClusterName=adoptvm
SlurmctldHost=slurmvm(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Every job gets an extern step at start: the step logins join.
PrologFlags=contain
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Room for two jobs of one user on the node (callerid, newest) and, with
# OverSubscribe set by the benchmark, for 100 small allocations.
DefMemPerCPU=128
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=300
Prolog=/usr/libexec/slurm-adopt/adopt-prolog
Epilog=/usr/libexec/slurm-adopt/adopt-epilog
TaskProlog=/usr/libexec/slurm-adopt/adopt-taskprolog
# Two fake GPUs (gres.conf below) for the GPU visibility scenario.
GresTypes=gpu
NodeName=slurmvm NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=2048 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=slurmvm Default=YES MaxTime=INFINITE State=UP
EOF
# The unified hierarchy with real controllers: cgroup/v2 named, not
# autodetected, so a wrong mount fails loudly.
cat >/etc/slurm/cgroup.conf <<'EOF'
CgroupPlugin=cgroup/v2
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=yes
EOF
# No driver behind them: slurmd only stats each File for its device
# numbers, for the job's device rules (195 is NVIDIA's major). The nodes
# live on the root filesystem, not in /dev (a devtmpfs made afresh at each
# boot), so they exist before slurmd's first start and the enforcing
# image's setfiles labels them like the rest of /var/lib.
install -d -m 0755 /var/lib/slurm-adopt-vm
for i in 0 1; do
    rm -f /var/lib/slurm-adopt-vm/fakegpu$i
    mknod -m 0666 /var/lib/slurm-adopt-vm/fakegpu$i c 195 $i
done
cat >/etc/slurm/gres.conf <<'EOF'
AutoDetect=off
NodeName=slurmvm Name=gpu File=/var/lib/slurm-adopt-vm/fakegpu[0-1]
EOF
chmod 0644 /etc/slurm/slurm.conf /etc/slurm/cgroup.conf /etc/slurm/gres.conf
systemctl enable munge.service slurmctld.service slurmd.service >/dev/null

# ------------------------------------------------------------ sshd
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
install -d /etc/ssh/sshd_config.d /etc/ssh/ssh_config.d
cat >/etc/ssh/sshd_config.d/slurm-adopt-vm.conf <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
MaxStartups 100:30:200
EOF
# Logins inside the guest (from a job's task or as a user outside any job)
# go to 127.0.0.1 and check the host key strictly.
echo "127.0.0.1,localhost,slurmvm $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >/etc/ssh/ssh_known_hosts
cat >/etc/ssh/ssh_config.d/slurm-adopt-vm.conf <<'EOF'
Host *
    StrictHostKeyChecking yes
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts
    BatchMode yes
    ConnectTimeout 30
EOF
systemctl enable ssh.service >/dev/null

# ------------------------------------------------------------ PAM
# Debian's own sshd stack, with two included files after common-account
# and common-session that vm-pam rewrites per scenario (sshd reads PAM
# files per connection). Until the project's .deb is installed the account
# file names Debian's module, which ignores root: the control path works.
grep -qx '@include common-account' /etc/pam.d/sshd || die "/etc/pam.d/sshd has no '@include common-account'"
grep -qx '@include common-session' /etc/pam.d/sshd || die "/etc/pam.d/sshd has no '@include common-session'"
sed -i -e 's/^@include common-account$/&\n@include slurm-adopt-account/' \
    -e 's/^@include common-session$/&\n@include slurm-adopt-session/' /etc/pam.d/sshd
mod=$(dpkg -L libpam-slurm-adopt | grep '/pam_slurm_adopt\.so$' | head -n1)
[[ -n $mod ]] || die "pam_slurm_adopt.so not found (libpam-slurm-adopt)"
printf '# initial: Debian'\''s module until vm-pam runs\naccount required %s\n' "$mod" >/etc/pam.d/slurm-adopt-account
echo '# initial: empty until vm-pam runs' >/etc/pam.d/slurm-adopt-session
# pam_systemd would move every login out of the job into a logind scope:
# off in common-session, and put back after the module only by the
# adopt_in=session scenario (vm-pam --systemd).
grep -q 'pam_systemd.so' /etc/pam.d/common-session || die "pam_systemd.so not in common-session (libpam-systemd)"
sed -i 's/^\([^#].*pam_systemd\.so.*\)$/# slurm-adopt-vm: off, see slurm-adopt-session\n# \1/' /etc/pam.d/common-session

# ------------------------------------------------------------ users
uid=2001
for u in adopt-alice adopt-bob; do
    useradd --uid "$uid" --user-group --create-home --shell /bin/bash "$u"
    usermod -p '*' "$u"
    install -d -o "$u" -g "$u" -m 0700 "/home/$u/.ssh"
    ssh-keygen -q -t ed25519 -N '' -C "$u@slurmvm" -f "/home/$u/.ssh/id_ed25519"
    cp "/home/$u/.ssh/id_ed25519.pub" "/home/$u/.ssh/authorized_keys"
    chown -R "$u:$u" "/home/$u/.ssh"
    chmod 0600 "/home/$u/.ssh/id_ed25519" "/home/$u/.ssh/authorized_keys"
    uid=$((uid + 1))
done

# Services start normally in the booted guest.
rm -f /usr/sbin/policy-rc.d
echo "configure.sh: done ($(slurmd -V 2>/dev/null), CPUs=$cpus)"
