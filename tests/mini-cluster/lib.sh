# shellcheck shell=bash
# The mini-cluster's engine: rootfs, images, network and containers for one
# Slurm version, driven through the docker CLI (no compose, no registry).
# Sourced by up.sh, down.sh and test.sh.

MC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MC_REPO=$(cd "$MC_DIR/../.." && pwd)
MC_CACHE=${ADOPT_MC_CACHE:-/var/cache/slurm-adopt/mini-cluster}
MC_VERSIONS=(22.05 24.11 26.05)
MC_NODES=(ctl c1 c2 login)
# MC_LAYOUT=configless (up.sh --layout configless): no slurm.conf on the
# compute nodes, slurmd --conf-server ctl, and a dynamic node d1
# (slurmd -Z, host name d1.mc.test) that no NodeName line names.
MC_LAYOUT=${MC_LAYOUT:-classic}
# The dynamic node's host name: dotted, as 26.05's stepd API expects.
MC_DYN_HOST=d1.mc.test
mc_layout_nodes() {
    case $MC_LAYOUT in
        classic) echo ctl c1 c2 login ;;
        configless) echo ctl c1 c2 d1 login ;;
        *) mc_die "unknown layout '$MC_LAYOUT' (classic or configless)" ;;
    esac
}
MC_BINS=(libpam_adopt.so adoptctl adopt-ssh adopt-prolog adopt-epilog adopt-taskprolog)

mc_say() { echo "mini-cluster: $*" >&2; }
mc_die() { echo "mini-cluster: error: $*" >&2; exit 1; }

mc_suite() {
    case $1 in
        22.05) echo bookworm ;;
        24.11) echo trixie ;;
        26.05) echo sid ;;
        *) mc_die "unknown Slurm version '$1' (one of: ${MC_VERSIONS[*]})" ;;
    esac
}
# 22.05 -> 2205: container, network and image names.
mc_tag() { echo "${1//./}"; }
# 172.31.22.0/24 for 22.05 and so on: fixed, so slurm.conf can name addresses.
mc_net() { echo "172.31.${1%%.*}"; }
mc_container() { echo "adopt-mc-$(mc_tag "$1")-$2"; }
mc_network() { echo "adopt-mc-$(mc_tag "$1")"; }
mc_ip() {
    case $2 in ctl) echo "$(mc_net "$1").10" ;; c1) echo "$(mc_net "$1").11" ;;
        c2) echo "$(mc_net "$1").12" ;; d1) echo "$(mc_net "$1").13" ;;
        login) echo "$(mc_net "$1").20" ;; esac
}
# What the nodes run with: --privileged minus what this kind of host cannot
# grant. --privileged asks runc for every capability, and a dockerd that
# itself lacks one (CAP_SYS_RESOURCE on the CI VMs) fails with "unable to
# apply caps". Every other capability, no seccomp filter, and a private
# cgroup namespace whose v1 mounts mc-init makes writable: each node's
# slurmd then sees its own cgroup root, so nodes never share directories.
MC_PRIV=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
    --security-opt apparmor=unconfined --cgroupns private --device-cgroup-rule 'a *:* rwm')
mc_role() { case $1 in ctl) echo controller ;; login) echo login ;; *) echo compute ;; esac; }

# One clear line instead of a stack trace when there is no engine.
mc_require_docker() {
    command -v docker >/dev/null 2>&1 ||
        mc_die "docker not found: install the engine (apt-get install docker.io) and run this again"
    docker info >/dev/null 2>&1 ||
        mc_die "the Docker engine is not reachable (is dockerd running, and are you root?): start it (service docker start) and run this again"
}

# For the test command: a test never skips for lack of an engine, it
# installs one (Debian's docker.io) and starts dockerd by hand where no init
# system would.
mc_ensure_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        mc_say "installing docker.io"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io; } >/tmp/slurm-adopt-mc-apt.log 2>&1 ||
            { tail -n 20 /tmp/slurm-adopt-mc-apt.log >&2; mc_die "apt-get install docker.io failed (log: /tmp/slurm-adopt-mc-apt.log)"; }
    fi
    if ! docker info >/dev/null 2>&1; then
        mc_say "starting dockerd (log: /var/log/slurm-adopt-mc-dockerd.log)"
        if command -v service >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            service docker start >/dev/null 2>&1 || true
        else
            nohup dockerd >/var/log/slurm-adopt-mc-dockerd.log 2>&1 &
        fi
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && return 0
            sleep 1
        done
        tail -n 20 /var/log/slurm-adopt-mc-dockerd.log >&2 2>/dev/null || true
        mc_die "dockerd did not come up within 60 s (log above)"
    fi
}

mc_require_root() { [[ $(id -u) -eq 0 ]] || mc_die "must run as root (debootstrap and privileged containers need it)"; }

# Contents only, in argument order: the same files hash the same from any path.
_mc_hash() { cat "$@" | sha256sum | cut -c1-12; }

# ------------------------------------------------------------ rootfs
# mc_rootfs VERSION: path of the cached rootfs tar, built if missing. Keyed
# by a hash of the recipe, so a changed recipe builds a new one.
mc_rootfs() {
    local suite hash tar
    suite=$(mc_suite "$1")
    hash=$(_mc_hash "$MC_DIR/build-rootfs.sh")
    tar=$MC_CACHE/rootfs-$suite-$hash.tar
    if [[ ! -s $tar ]]; then
        if ! command -v debootstrap >/dev/null 2>&1; then
            mc_say "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
                mc_die "cannot install debootstrap (apt-get install debootstrap)"
        fi
        install -d -m 0755 "$MC_CACHE"
        mc_say "debootstrap $suite (Slurm $1), once per recipe change"
        "$MC_DIR/build-rootfs.sh" "$suite" "$tar" >&2
        # Older recipes' tars of this suite are dead weight.
        find "$MC_CACHE" -maxdepth 1 -name "rootfs-$suite-*.tar" ! -name "rootfs-$suite-$hash.tar" -delete
    fi
    echo "$tar"
}

# mc_base_image VERSION: the imported rootfs, tagged by the rootfs hash.
mc_base_image() {
    local tar ref
    tar=$(mc_rootfs "$1")
    ref=slurm-adopt-mc-base:$(basename "$tar" .tar | sed 's/^rootfs-//')
    if ! docker image inspect "$ref" >/dev/null 2>&1; then
        mc_say "docker import $(basename "$tar") as $ref"
        docker import "$tar" "$ref" >/dev/null
    fi
    echo "$ref"
}

# ------------------------------------------------------------ binaries
# The toolkit's release build (cargo skips it when nothing changed).
mc_build_binaries() {
    export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
    command -v cargo >/dev/null 2>&1 || mc_die "cargo not found: install Rust (https://rustup.rs) and run this again"
    # The link needs Debian's -dev packages (-lpam, -lmunge) that a fresh
    # machine lacks; up.sh may be the first command run on it, so it
    # installs them itself, as tests/run-all.sh does (a no-op when present).
    "$MC_REPO/tests/scripts/install-build-deps.sh" >&2 ||
        mc_die "tests/scripts/install-build-deps.sh failed (see above)"
    mc_say "cargo build --release (pam_adopt, adoptctl, hooks)"
    (cd "$MC_REPO" && cargo build --release --quiet --workspace) ||
        mc_die "cargo build --release failed (see above)"
    local b
    for b in "${MC_BINS[@]}"; do
        [[ -f $MC_REPO/target/release/$b ]] || mc_die "target/release/$b missing after the build"
    done
    # The images install the toolkit from the package sites install, not
    # from loose binaries.
    mc_say "packaging/build-deb.sh --no-build"
    MC_DEB=$("$MC_REPO/packaging/build-deb.sh" --no-build | tail -n1) ||
        mc_die "packaging/build-deb.sh failed (see above)"
    [[ -f $MC_DEB ]] || mc_die "packaging/build-deb.sh printed no package path"
}

# ------------------------------------------------------------ image
# mc_image VERSION: build slurm-adopt-mc:TAG unless an image with the same
# recipe + binaries + base hash exists.
mc_image() {
    local ver=$1 base ref hash have ctx b
    base=$(mc_base_image "$ver")
    ref=slurm-adopt-mc:$(mc_tag "$ver")
    local files=("$MC_DIR/image/"*)
    # The .deb itself carries build times; hash what goes into it instead.
    for b in "${MC_BINS[@]}"; do files+=("$MC_REPO/target/release/$b"); done
    while IFS= read -r b; do files+=("$b"); done < <(find "$MC_REPO/packaging" -type f | sort)
    hash=$( { _mc_hash "${files[@]}"; echo "$base $ver"; } | sha256sum | cut -c1-12)
    have=$(docker image inspect -f '{{ index .Config.Labels "slurm-adopt-mc.hash" }}' "$ref" 2>/dev/null || true)
    if [[ $have == "$hash" ]]; then
        mc_say "image $ref is up to date ($hash)"
        return 0
    fi
    ctx=$(mktemp -d /tmp/slurm-adopt-mc-ctx.XXXXXX)
    install -d "$ctx/stage/bin"
    cp "$MC_DIR/image/Dockerfile" "$ctx/"
    cp "$MC_DIR/image/image-setup.sh" "$MC_DIR/image/mc-init" "$MC_DIR/image/mc-pam" "$MC_DIR/image/mc-prolog" "$ctx/stage/"
    # mc_build_binaries may have run in a subshell (test.sh's stages).
    [[ -n ${MC_DEB:-} && -f ${MC_DEB:-} ]] || MC_DEB=$(ls -t "$MC_REPO"/target/debian/slurm-adopt_*.deb 2>/dev/null | head -n1)
    [[ -n $MC_DEB && -f $MC_DEB ]] || mc_die "no toolkit package in target/debian: run packaging/build-deb.sh"
    cp "$MC_DEB" "$ctx/stage/"
    printf 'MC_NET=%s\nMC_SLURM_VERSION=%s\n' "$(mc_net "$ver")" "$ver" >"$ctx/stage/cluster.env"
    mc_say "docker build $ref from $base"
    # The legacy builder never contacts a registry for a local FROM image.
    if ! DOCKER_BUILDKIT=0 docker build -q --label "slurm-adopt-mc.hash=$hash" --build-arg "BASE=$base" \
        -t "$ref" "$ctx" >"$ctx/build.log" 2>&1; then
        cat "$ctx/build.log" >&2
        rm -rf "$ctx"
        mc_die "docker build of $ref failed (log above)"
    fi
    rm -rf "$ctx"
    docker image prune -f --filter "label=slurm-adopt-mc.hash" >/dev/null 2>&1 || true
}

# ------------------------------------------------------------ cluster
mc_exists() { docker container inspect "$(mc_container "$1" ctl)" >/dev/null 2>&1; }

mc_down() {
    local ver=$1 n c
    # Every node either layout has, so one layout's leftovers never stay.
    for n in "${MC_NODES[@]}" d1; do
        c=$(mc_container "$ver" "$n")
        docker container inspect "$c" >/dev/null 2>&1 && docker rm -f "$c" >/dev/null
    done
    docker network inspect "$(mc_network "$ver")" >/dev/null 2>&1 && docker network rm "$(mc_network "$ver")" >/dev/null
    return 0
}

mc_start() {
    local ver=$1 net n hosts=()
    net=$(mc_network "$ver")
    mc_down "$ver"
    # internal: no route out of the cluster, only between its nodes.
    docker network create --internal --subnet "$(mc_net "$ver").0/24" "$net" >/dev/null ||
        mc_die "docker network create $net ($(mc_net "$ver").0/24) failed: is the subnet taken by another network? (docker network ls)"
    local nodes host
    read -ra nodes <<<"$(mc_layout_nodes)"
    for n in "${nodes[@]}"; do hosts+=(--add-host "$n:$(mc_ip "$ver" "$n")"); done
    [[ $MC_LAYOUT == configless ]] && hosts+=(--add-host "$MC_DYN_HOST:$(mc_ip "$ver" d1)")
    for n in "${nodes[@]}"; do
        host=$n
        [[ $n == d1 ]] && host=$MC_DYN_HOST
        docker run -d "${MC_PRIV[@]}" --name "$(mc_container "$ver" "$n")" --hostname "$host" \
            --network "$net" --ip "$(mc_ip "$ver" "$n")" "${hosts[@]}" \
            -e MC_ROLE="$(mc_role "$n")" -e MC_LAYOUT="$MC_LAYOUT" \
            -e MC_CTL_ADDR="$(mc_ip "$ver" ctl)" "slurm-adopt-mc:$(mc_tag "$ver")" >/dev/null ||
            mc_die "docker run of node $n (Slurm $ver) failed"
    done
}

# mc_exec VERSION NODE CMD...: run CMD as root on a node.
mc_exec() {
    local ver=$1 n=$2
    shift 2
    docker exec "$(mc_container "$ver" "$n")" "$@"
}
# mc_as VERSION NODE USER SHELL-CMD: run a shell command as a test user.
mc_as() {
    local ver=$1 n=$2 u=$3
    shift 3
    docker exec -w /tmp "$(mc_container "$ver" "$n")" runuser -u "$u" -- bash -c "$*"
}

mc_logs() {
    local ver=$1 n
    for n in ctl c1 c2; do
        echo "--- $n: docker logs" >&2
        docker logs --tail 20 "$(mc_container "$ver" "$n")" >&2 2>&1 || true
    done
    echo "--- ctl: slurmctld.log" >&2
    mc_exec "$ver" ctl tail -n 30 /var/log/slurm/slurmctld.log >&2 || true
    for n in c1 c2; do
        echo "--- $n: slurmd.log" >&2
        mc_exec "$ver" "$n" tail -n 30 /var/log/slurm/slurmd.log >&2 || true
    done
}

_mc_nodes_idle() {
    local out
    out=$(mc_exec "$1" ctl sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
    grep -qx 'c1 idle' <<<"$out" && grep -qx 'c2 idle' <<<"$out" || return 1
    [[ $MC_LAYOUT != configless ]] || grep -qx "$MC_DYN_HOST idle" <<<"$out"
}
_mc_sshd_up() { mc_exec "$1" "$2" bash -c 'exec 3<>/dev/tcp/127.0.0.1/22' 2>/dev/null; }

# mc_wait_ready VERSION: both compute nodes idle in slurmctld, sshd up.
mc_wait_ready() {
    local ver=$1 deadline=$((SECONDS + 120)) resumed=no out
    until _mc_nodes_idle "$ver" && _mc_sshd_up "$ver" c1 && _mc_sshd_up "$ver" c2 &&
        { [[ $MC_LAYOUT != configless ]] || _mc_sshd_up "$ver" d1; }; do
        if ((SECONDS >= deadline)); then
            echo "mini-cluster: Slurm $ver: nodes not idle after 120 s:" >&2
            mc_exec "$ver" ctl sinfo -N >&2 || true
            mc_logs "$ver"
            return 1
        fi
        # A node restored down/drained from an old state file comes back once.
        out=$(mc_exec "$ver" ctl sinfo -h -N -o '%N %T' 2>/dev/null || true)
        if [[ $resumed == no ]] && grep -Eq ' (down|drain)' <<<"$out"; then
            mc_exec "$ver" ctl scontrol update NodeName=c1,c2 State=RESUME >/dev/null 2>&1 || true
            resumed=yes
        fi
        sleep 1
    done
}

mc_start_ready() { mc_start "$1" && mc_wait_ready "$1"; }

# mc_up VERSION: everything from rootfs to a ready cluster.
mc_up() {
    local ver=$1
    mc_image "$ver"
    mc_say "starting Slurm $ver ($MC_LAYOUT): $(mc_layout_nodes) on $(mc_net "$ver").0/24"
    mc_start_ready "$ver" || mc_die "the Slurm $ver cluster did not come up (logs above)"
    mc_say "Slurm $ver ready ($(mc_exec "$ver" ctl sinfo -V))"
}
