#!/usr/bin/env bash
# Tier 2 host setup: turn this Debian 12 machine into a single-node Slurm
# cluster (munge + slurmctld + slurmd with cgroup/v1 and PrologFlags=contain),
# with rsyslog writing /var/log/auth.log, ssh host keys, and two test users
# (plus root) that log in with ssh keys kept under $keydir.
#
# Idempotent: works on a fresh machine (CI) and on re-runs. No systemd is
# assumed (the VM's PID 1 is not an init system), so every daemon is started
# by hand, the way its Debian init script would.
set -euo pipefail

packages=(slurmd slurmctld slurm-client munge libpam-slurm-adopt openssh-server
    openssh-client rsyslog pamtester libpam-wrapper libpam0g-dev
    procps iproute2)
marker='# written by slurm-adopt tests/real-slurm/setup-host.sh'
keydir=/var/lib/slurm-adopt-tests/keys
test_users=(adopt-alice adopt-bob)
node=$(hostname -s)
spool=/var/spool/slurmd
statedir=/var/lib/slurm/slurmctld
logdir=/var/log/slurm
t_start=$SECONDS

say() { echo "setup-host: $*"; }
die() { echo "setup-host: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# ---------------------------------------------------------------- packages
install_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        say "packages: all present"
        return
    fi
    # Without systemd the postinst scripts would try to start slurmd, sshd,
    # munge... through invoke-rc.d and either fail or start them with the
    # wrong config. A policy-rc.d that answers 101 ("action forbidden")
    # makes invoke-rc.d skip them; we start everything ourselves below.
    local own_policy=no
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# slurm-adopt setup-host.sh: no service starts during install\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=yes
    fi
    say "packages: installing ${missing[*]}"
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/setup-host-apt.log 2>&1 || rc=$?
    [[ $own_policy == yes ]] && rm -f /usr/sbin/policy-rc.d
    if ((rc != 0)); then
        tail -n 30 /tmp/setup-host-apt.log >&2
        die "apt-get failed (full log: /tmp/setup-host-apt.log)"
    fi
}

# ---------------------------------------------------------------- munge
start_munge() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        # Same key on every node of a cluster; one node here, so any key.
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        say "munge: new key $key"
    fi
    # munged refuses a key readable by others; 0400 is what the brief wants.
    chown munge:munge "$key"
    chmod 0400 "$key"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munge: munged already running"
        return
    fi
    # A stale pid file or socket from a killed munged makes it refuse to start.
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    # munged does not drop privileges itself; Debian's init script starts it as munge.
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && { say "munge: started munged"; return; }
        sleep 0.1
    done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

# ---------------------------------------------------------------- rsyslog
start_rsyslog() {
    # Tests grep LOG_AUTHPRIV lines (pam_syslog) in /var/log/auth.log;
    # Debian's stock rsyslog.conf sends auth,authpriv.* there.
    # --ns: a mini-cluster container's rsyslogd is visible here too, and is not ours.
    if pgrep --ns $$ -x rsyslogd >/dev/null; then
        say "rsyslog: already running"
    else
        rm -f /run/rsyslogd.pid
        rsyslogd
        say "rsyslog: started rsyslogd"
    fi
    local tag
    tag="slurm-adopt-setup-probe-$$-$RANDOM"
    for _ in $(seq 1 50); do
        logger -p authpriv.info "$tag"
        sleep 0.1
        grep -q "$tag" /var/log/auth.log 2>/dev/null && return
    done
    die "rsyslog runs but authpriv messages do not reach /var/log/auth.log"
}

# ---------------------------------------------------------------- slurm config
# write_conf PATH CONTENT: replace PATH with CONTENT if different; keep one
# backup of a file that this script did not write. Returns 0 if it changed.
write_conf() {
    local path=$1 content=$2
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return 1
    fi
    if [[ -f $path ]] && ! grep -qxF "$marker" "$path" && [[ ! -e $path.pre-slurm-adopt ]]; then
        cp -a "$path" "$path.pre-slurm-adopt"
        say "slurm: kept the previous $path as $path.pre-slurm-adopt"
    fi
    printf '%s\n' "$content" >"$path.tmp.$$"
    chmod 0644 "$path.tmp.$$"
    mv -f "$path.tmp.$$" "$path"
    return 0
}

slurm_config() {
    # slurmd -C reports the board/socket/core/thread layout exactly as slurmd
    # will register it; copying it avoids a node drained for a topology
    # mismatch. RealMemory stays modest (half of the machine, at most 2 GiB)
    # so that a little free-memory noise never drains the node.
    local topo cpus realmem memtotal
    topo=$(slurmd -C 2>/dev/null | head -n1 | grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ')
    cpus=$(nproc)
    [[ -n $topo ]] || topo="CPUs=$cpus"
    memtotal=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    realmem=$((memtotal / 2))
    ((realmem > 2048)) && realmem=2048

    install -d -m 0755 /etc/slurm
    install -d -o slurm -g slurm -m 0755 "$logdir"
    install -d -o slurm -g slurm -m 0700 "$statedir"
    install -d -o root -g root -m 0755 "$spool"

    # ADOPT_HOOKS_DIR=DIR: run DIR's adopt-prolog, adopt-epilog and
    # adopt-taskprolog as Prolog, Epilog and TaskProlog (tests/real-slurm/
    # hooks.sh); without it the node has none, and running this again
    # takes them out.
    local hooks=""
    if [[ -n ${ADOPT_HOOKS_DIR:-} ]]; then
        local h
        for h in adopt-prolog adopt-epilog adopt-taskprolog; do
            [[ -x $ADOPT_HOOKS_DIR/$h ]] || die "ADOPT_HOOKS_DIR: $ADOPT_HOOKS_DIR/$h is not an executable"
        done
        hooks="
Prolog=$ADOPT_HOOKS_DIR/adopt-prolog
Epilog=$ADOPT_HOOKS_DIR/adopt-epilog
TaskProlog=$ADOPT_HOOKS_DIR/adopt-taskprolog"
    fi

    local slurm_conf cgroup_conf changed=no
    slurm_conf="$marker
# Single-node cluster for the slurm-adopt real-Slurm tests. Hand edits are lost.
ClusterName=adopttest
# NodeAddr/SlurmctldHost address 127.0.0.1: works even where the short
# hostname does not resolve; ssh tests connect to 127.0.0.1 too.
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$statedir
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logdir/slurmctld.log
SlurmdLogFile=$logdir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# pam_slurm_adopt and pam_adopt need the extern step: contain creates it at
# job start on every allocated node.
PrologFlags=contain${hooks}
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
# No mail on a test node; the default /bin/mail is not installed.
MailProg=/bin/true
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# A node that went down (e.g. slurmd restarted) comes back by itself.
ReturnToService=2
# Fast teardown on scancel, and finished jobs leave squeue quickly.
KillWait=5
MinJobAge=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
DefMemPerCPU=100
NodeName=${node} NodeAddr=127.0.0.1 ${topo}RealMemory=${realmem} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP"

    # The host mounts v1 controllers plus an empty cgroup2 at unified/:
    # Slurm 22.05's autodetect cannot be trusted with that, v1 is what works.
    # ConstrainDevices=yes works here (v1 devices controller) and puts the
    # extern step in one more controller that adoption must handle.
    cgroup_conf="$marker
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainDevices=yes"

    write_conf /etc/slurm/slurm.conf "$slurm_conf" && changed=yes
    write_conf /etc/slurm/cgroup.conf "$cgroup_conf" && changed=yes
    if [[ $changed == yes ]]; then say "slurm: wrote /etc/slurm/slurm.conf and cgroup.conf"; else say "slurm: config unchanged"; fi
    slurm_conf_changed=$changed
}

# ---------------------------------------------------------------- slurm daemons
pid_alive() { # pidfile comm
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

stop_daemon() { # pidfile comm
    local pid
    pid_alive "$1" "$2" || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

node_state() { sinfo -h -n "$node" -o '%T' 2>/dev/null | head -n1; }

slurm_logs_tail() {
    local f
    for f in "$logdir/slurmctld.log" "$logdir/slurmd.log"; do
        echo "--- tail of $f" >&2
        tail -n 25 "$f" >&2 2>/dev/null || true
    done
}

# SlurmdStartTime of the node is at or after the slurmd we started (if any).
slurmd_registered() {
    [[ -z $slurmd_started ]] && return 0
    local t
    t=$(scontrol show node -o "$node" 2>/dev/null | grep -oE 'SlurmdStartTime=[0-9T:-]+' | cut -d= -f2)
    [[ -n $t ]] && (($(date -d "$t" +%s 2>/dev/null || echo 0) >= slurmd_started - 1))
}

start_slurm() {
    if [[ $slurm_conf_changed == yes ]]; then
        # Running slurmstepds (jobs) survive a slurmd restart.
        say "slurm: config changed, restarting slurmctld and slurmd"
        stop_daemon /run/slurmd.pid slurmd
        stop_daemon /run/slurmctld.pid slurmctld
    fi
    if pid_alive /run/slurmctld.pid slurmctld; then
        say "slurm: slurmctld already running"
    else
        slurmctld
        say "slurm: started slurmctld"
    fi
    if pid_alive /run/slurmd.pid slurmd; then
        say "slurm: slurmd already running"
    else
        # Debian builds with MULTIPLE_SLURMD: name the node explicitly.
        slurmd_started=$(date +%s)
        slurmd -N "$node"
        say "slurm: started slurmd -N $node"
    fi

    local deadline=$((SECONDS + 60)) state resumed=no
    while :; do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing)
                # slurmctld restores the node's last state from its state
                # file: only trust it once the new slurmd has registered.
                slurmd_registered && break ;;
            down | drained | draining | drain*)
                # Registered but down/drained (no '*'): resume it once.
                if [[ $resumed == no ]]; then
                    scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
                    say "slurm: node was $state, resumed"
                    resumed=yes
                fi
                ;;
        esac
        if ((SECONDS >= deadline)); then
            echo "setup-host: node $node not idle after 60 s (state: '${state:-unknown}')" >&2
            scontrol show node "$node" >&2 2>/dev/null || true
            slurm_logs_tail
            exit 1
        fi
        sleep 0.5
    done
    say "slurm: node $node is $state"
}

# ---------------------------------------------------------------- ssh + users
setup_ssh_host() {
    ssh-keygen -A >/dev/null
    install -d -m 0755 /run/sshd
}

# add_key USER HOME: keypair under $keydir, public key in ~/.ssh/authorized_keys
add_key() {
    local user=$1 home=$2 group
    group=$(id -gn "$user")
    if [[ ! -f $keydir/$user ]]; then
        ssh-keygen -q -t ed25519 -N '' -C "slurm-adopt-test-$user" -f "$keydir/$user"
    fi
    chmod 0600 "$keydir/$user"
    install -d -o "$user" -g "$group" -m 0700 "$home/.ssh"
    local ak=$home/.ssh/authorized_keys pub
    pub=$(cat "$keydir/$user.pub")
    touch "$ak"
    grep -qxF "$pub" "$ak" || printf '%s\n' "$pub" >>"$ak"
    chown "$user:$group" "$ak"
    chmod 0600 "$ak"
}

setup_users() {
    install -d -o root -g root -m 0700 /var/lib/slurm-adopt-tests "$keydir"
    local u
    for u in "${test_users[@]}"; do
        if ! id "$u" >/dev/null 2>&1; then
            useradd --create-home --shell /bin/bash "$u"
        fi
        # '*' rather than useradd's locked '!': no password can match, and
        # sshd without PAM would otherwise treat the account as locked.
        usermod -p '*' "$u"
        add_key "$u" "$(getent passwd "$u" | cut -d: -f6)"
    done
    add_key root "$(getent passwd root | cut -d: -f6)"
    say "users: ${test_users[*]} (uids $(id -u "${test_users[0]}"), $(id -u "${test_users[1]}")) and root, keys in $keydir"
}

install_packages
start_munge
start_rsyslog
setup_ssh_host
setup_users
slurm_conf_changed=no
slurmd_started=
slurm_config
start_slurm
say "done in $((SECONDS - t_start)) s"
