# shellcheck shell=bash
# The VM tier's engine: host tools, the cached guest image per Debian
# suite, qemu (TCG) boot and shutdown, and the root control path over ssh.
# Sourced by test.sh. Every wait has a deadline, and a failed wait prints
# the tail of the guest's serial console.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_REPO=$(cd "$VM_DIR/../.." && pwd)
VM_CACHE=${ADOPT_VM_CACHE:-$VM_REPO/target/vm}
# Every version the tier can build; the test command runs VM_DEFAULT_VERSIONS
# (the --selinux variant runs 22.05 only: refpolicy is bookworm's).
VM_VERSIONS=(22.05 24.11 26.05)
# 26.05 (sid) runs by --version 26.05; not yet in the test command.
VM_DEFAULT_VERSIONS=(22.05 24.11)
VM_MIRROR=${ADOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# -smp and the guest's slurm.conf CPUs= must agree, or slurmd registers
# with "Low CPUs" and the node goes inval; configure.sh writes CPUs from
# this value at build time, so it is part of the image hash.
VM_SMP=2
VM_MEM=${ADOPT_VM_MEM:-3072}

vm_say() { echo "vm: $*" >&2; }
vm_die() { echo "vm: error: $*" >&2; exit 1; }

vm_suite() {
    case $1 in
        22.05) echo bookworm ;;
        24.11) echo trixie ;;
        26.05) echo sid ;;
        *) vm_die "unknown Slurm version '$1' (one of: ${VM_VERSIONS[*]})" ;;
    esac
}

vm_require_root() { [[ $(id -u) -eq 0 ]] || vm_die "must run as root (debootstrap, chroot and apt need it)"; }

# ------------------------------------------------------------ host tools
# qemu-system-x86 comes from bookworm-backports: the host may already have
# backports' qemu-utils 10.x, which Breaks bookworm's qemu-system-common
# 7.2, so a plain install fails with "held broken packages". A private
# APT_CONFIG (own sources, lists and cache under target/vm/apt) reaches
# backports without touching the host's sources.
_vm_private_apt() {
    local d=$VM_CACHE/apt
    install -d "$d/lists/partial" "$d/archives/partial" "$d/sources.list.d" "$d/preferences.d"
    cat >"$d/sources.list" <<EOF
deb $VM_MIRROR bookworm main
deb $VM_MIRROR bookworm-updates main
deb $VM_MIRROR bookworm-backports main
EOF
    cat >"$d/apt.conf" <<EOF
Dir::Etc::SourceList "$d/sources.list";
Dir::Etc::SourceParts "$d/sources.list.d";
Dir::Etc::Preferences "$d/preferences";
Dir::Etc::PreferencesParts "$d/preferences.d";
Dir::State::Lists "$d/lists";
Dir::Cache::Archives "$d/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    : >"$d/preferences"
    echo "$d/apt.conf"
}

# apt-get with a lock wait: another tier (or engineer) may be installing.
_vm_apt() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends "$@"; }

vm_ensure_host_tools() {
    local log=$VM_CACHE/host-tools.log need=()
    install -d "$VM_CACHE"
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
    if ((${#need[@]})); then
        vm_say "installing ${need[*]}"
        { _vm_apt install "${need[@]}" || { apt-get update -q && _vm_apt install "${need[@]}"; }; } >"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; vm_die "apt-get install ${need[*]} failed (log: $log)"; }
    fi
    if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
        local conf
        conf=$(_vm_private_apt)
        vm_say "installing qemu-system-x86 and qemu-utils from bookworm-backports (private apt config $conf)"
        { APT_CONFIG=$conf apt-get -q update &&
            APT_CONFIG=$conf _vm_apt install -t bookworm-backports qemu-system-x86 qemu-utils; } >"$log" 2>&1 ||
            { tail -n 30 "$log" >&2; vm_die "installing qemu-system-x86 failed (log: $log)"; }
    fi
    qemu-system-x86_64 --version | head -n1 >&2
}

# ------------------------------------------------------------ image
# The image's inputs: the recipe, the in-chroot configuration, the suite,
# the CPU count. The project's .deb is not one of them: it is installed
# into each boot's throwaway overlay, so a code change never rebuilds the
# image.
vm_image_hash() {
    { cat "$VM_DIR/build-image.sh" "$VM_DIR/guest/configure.sh"; echo "$1 smp=$VM_SMP"; } | sha256sum | cut -c1-12
}
vm_plain_image_dir() { echo "$VM_CACHE/$(vm_suite "$1")-$(vm_image_hash "$(vm_suite "$1")")"; }
# VM_SELINUX=1 (test.sh --selinux): the enforcing variant, derived from
# the plain image by build-selinux-image.sh and cached next to it as
# <plain>-se-<hash of that script>.
VM_SELINUX=${VM_SELINUX:-0}
vm_se_hash() { sha256sum <"$VM_DIR/build-selinux-image.sh" | cut -c1-8; }
vm_image_dir() {
    if [[ $VM_SELINUX == 1 ]]; then
        echo "$(vm_plain_image_dir "$1")-se-$(vm_se_hash)"
    else
        vm_plain_image_dir "$1"
    fi
}

# vm_image VERSION: build the image unless a complete one with this hash
# is cached ("done" is written last). Older images of the suite are
# removed; the enforcing variant also needs (and keeps) its plain image.
vm_image() {
    local suite dir plain
    suite=$(vm_suite "$1")
    dir=$(vm_image_dir "$1")
    plain=$(vm_plain_image_dir "$1")
    if [[ -f $dir/done ]]; then
        vm_say "image $(basename "$dir") is cached"
        return 0
    fi
    if [[ ! -f $plain/done ]]; then
        rm -rf "$plain"
        "$VM_DIR/build-image.sh" "$suite" "$plain" || vm_die "build-image.sh $suite failed (see above)"
    fi
    find "$VM_CACHE" -mindepth 1 -maxdepth 1 -type d -name "$suite-*" ! -path "$plain" ! -path "$plain-se-*" -exec rm -rf {} +
    [[ $VM_SELINUX == 1 ]] || return 0
    rm -rf "$dir"
    "$VM_DIR/build-selinux-image.sh" "$plain" "$dir" || vm_die "build-selinux-image.sh $suite failed (see above)"
    find "$VM_CACHE" -mindepth 1 -maxdepth 1 -type d -path "$plain-se-*" ! -path "$dir" ! -path "$dir.*" -exec rm -rf {} +
}

# ------------------------------------------------------------ boot
# State of the running VM of one version lives in $VM_RUN/<version>.
VM_RUN=${VM_RUN:-$VM_CACHE/run}
vm_run_dir() { echo "$VM_RUN/${1//./}$([[ $VM_SELINUX != 1 ]] || echo -se)"; }

# A free TCP port on 127.0.0.1 for the ssh hostfwd: parallel runs must not
# collide. The kernel picks it; qemu binds it a moment later.
_vm_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-40000 -n1
}

vm_serial_tail() {
    local f
    f=$(vm_run_dir "$1")/serial.log
    echo "--- last 40 lines of the guest's serial console ($f)" >&2
    tail -n 40 "$f" 2>/dev/null | sed 's/\r$//' >&2 || true
}

vm_pid() { cat "$(vm_run_dir "$1")/qemu.pid" 2>/dev/null; }
vm_alive() { local p; p=$(vm_pid "$1") && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

# vm_boot VERSION: a fresh qcow2 overlay over the cached base image, then
# qemu in the background with TCG (this host's /dev/kvm is PVM-only and
# runs a stock kernel about 1000x slower). restrict=on: the guest reaches
# neither the host nor any network; only the ssh hostfwd comes in.
vm_boot() {
    local ver=$1 dir run kver port accel
    dir=$(vm_image_dir "$ver")
    run=$(vm_run_dir "$ver")
    vm_stop "$ver" >/dev/null 2>&1 || true
    rm -rf "$run"
    install -d "$run"
    qemu-img create -q -f qcow2 -b "$dir/base.raw" -F raw "$run/overlay.qcow2"
    kver=$(cat "$dir/kernel-version")
    port=$(_vm_free_port)
    echo "$port" >"$run/port"
    accel=${ADOPT_VM_ACCEL:-tcg,thread=multi}
    local append="root=/dev/vda rw console=ttyS0 quiet"
    [[ $VM_SELINUX != 1 ]] || append+=" security=selinux selinux=1 enforcing=1"
    qemu-system-x86_64 -accel "$accel" -cpu max -m "$VM_MEM" -smp "$VM_SMP" \
        -kernel "$dir/vmlinuz-$kver" -initrd "$dir/initrd.img-$kver" \
        -append "$append" \
        -drive "file=$run/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe" \
        -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
        -display none -serial "file:$run/serial.log" -monitor "unix:$run/monitor.sock,server,nowait" \
        -daemonize -pidfile "$run/qemu.pid" 2>"$run/qemu.err" ||
        { cat "$run/qemu.err" >&2; vm_die "qemu did not start (Slurm $ver)"; }
    _vm_ssh_config "$ver"
}

_vm_ssh_config() {
    local ver=$1 run dir
    run=$(vm_run_dir "$ver")
    dir=$(vm_image_dir "$ver")
    # The guest's host key is known from the build: strict checking through
    # HostKeyAlias, whatever port this boot got. One multiplexed connection
    # carries every command (a new ssh handshake costs about a second under
    # TCG).
    cat >"$run/ssh_config" <<EOF
Host vm
    HostName 127.0.0.1
    Port $(cat "$run/port")
    User root
    IdentityFile $dir/ssh/id_ed25519
    IdentitiesOnly yes
    HostKeyAlias slurm-adopt-vm
    UserKnownHostsFile $dir/ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    ServerAliveInterval 5
    ServerAliveCountMax 6
    LogLevel ERROR
    ControlMaster auto
    ControlPath $run/ssh.mux
    ControlPersist 600
EOF
}

# vm_root VERSION CMD...: run a shell command line in the guest as root.
vm_root() {
    local ver=$1
    shift
    ssh -F "$(vm_run_dir "$ver")/ssh_config" vm "$*"
}
# vm_put VERSION SRC... DEST: copy files into the guest.
vm_put() {
    local ver=$1
    shift
    local dest=${*: -1} src=("${@:1:$#-1}")
    scp -q -F "$(vm_run_dir "$ver")/ssh_config" "${src[@]}" "vm:$dest"
}

# vm_wait_ssh VERSION [SECONDS]: until root's ssh answers, qemu dies, or
# the deadline passes.
vm_wait_ssh() {
    local ver=$1 limit=${2:-240} deadline
    deadline=$((SECONDS + limit))
    until timeout 20 ssh -F "$(vm_run_dir "$ver")/ssh_config" -o ControlMaster=no -o ControlPath=none vm true 2>/dev/null; do
        if ! vm_alive "$ver"; then
            cat "$(vm_run_dir "$ver")/qemu.err" >&2 2>/dev/null || true
            vm_serial_tail "$ver"
            vm_say "qemu exited before ssh answered (Slurm $ver)"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            vm_serial_tail "$ver"
            vm_say "ssh did not answer within $limit s (Slurm $ver)"
            return 1
        fi
        sleep 2
    done
}

# vm_wait_slurm VERSION [SECONDS]: the node idle in slurmctld.
vm_wait_slurm() {
    local ver=$1 limit=${2:-120} deadline state
    deadline=$((SECONDS + limit))
    until state=$(vm_root "$ver" "sinfo -h -N -o %T" 2>/dev/null) && [[ $state == idle ]]; do
        if ((SECONDS >= deadline)); then
            vm_say "node not idle within $limit s (state: ${state:-none}); guest logs:"
            vm_root "$ver" "systemctl --no-pager status munge slurmctld slurmd | tail -n 30; tail -n 30 /var/log/slurm/slurmd.log /var/log/slurm/slurmctld.log" >&2 || true
            vm_serial_tail "$ver"
            return 1
        fi
        sleep 2
    done
}

# vm_stop VERSION: poweroff, wait for qemu to exit, kill it by its pid
# only if it does not (never by name: other VMs may run here).
vm_stop() {
    local ver=$1 run pid deadline
    run=$(vm_run_dir "$ver")
    pid=$(vm_pid "$ver") || return 0
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        # --force: no unit is stopped one by one (a slurmd with jobs, or a
        # user session, held a clean poweroff past 60 s). The logs are
        # collected before, and the overlay is thrown away.
        timeout 15 ssh -F "$run/ssh_config" vm "sync; systemctl poweroff --force" >/dev/null 2>&1 || true
        deadline=$((SECONDS + 60))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
        if kill -0 "$pid" 2>/dev/null; then
            vm_say "qemu $pid still running 60 s after poweroff: killing it"
            vm_serial_tail "$ver"
            kill "$pid" 2>/dev/null || true
            sleep 2
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    ssh -F "$run/ssh_config" -O exit vm >/dev/null 2>&1 || true
    rm -f "$run/qemu.pid"
}

# vm_collect VERSION DEST: the guest's logs, for after the run.
vm_collect() {
    local ver=$1 dest=$2
    install -d "$dest"
    vm_root "$ver" "journalctl -b --no-pager -o short-precise" >"$dest/journal.log" 2>/dev/null || true
    vm_root "$ver" "cat /var/log/slurm/slurmd.log" >"$dest/slurmd.log" 2>/dev/null || true
    vm_root "$ver" "cat /var/log/slurm/slurmctld.log" >"$dest/slurmctld.log" 2>/dev/null || true
    cp "$(vm_run_dir "$ver")/serial.log" "$dest/serial.log" 2>/dev/null || true
}
