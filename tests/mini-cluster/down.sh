#!/usr/bin/env bash
# Remove the mini-cluster's containers and networks (every version, or the
# one given). Images and the rootfs cache stay for the next up.sh;
# --purge removes them too.
#   sudo tests/mini-cluster/down.sh [--version 22.05|24.11|26.05] [--purge]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

versions=() purge=no
while (($#)); do
    case $1 in
        --version) versions+=("${2:?--version needs 22.05, 24.11 or 26.05}"); shift 2 ;;
        --purge) purge=yes; shift ;;
        -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
        *) mc_die "unknown argument '$1' (down.sh [--version V] [--purge])" ;;
    esac
done
((${#versions[@]})) || versions=("${MC_VERSIONS[@]}")
mc_require_docker

for v in "${versions[@]}"; do
    mc_suite "$v" >/dev/null
    if mc_exists "$v" || docker network inspect "$(mc_network "$v")" >/dev/null 2>&1; then
        mc_down "$v"
        mc_say "Slurm $v cluster removed"
    fi
    if [[ $purge == yes ]]; then
        docker image rm -f "slurm-adopt-mc:$(mc_tag "$v")" >/dev/null 2>&1 || true
        docker images --format '{{.Repository}}:{{.Tag}}' "slurm-adopt-mc-base" |
            grep ":$(mc_suite "$v")-" | xargs -r docker image rm -f >/dev/null
        rm -f "$MC_CACHE/rootfs-$(mc_suite "$v")-"*.tar
        mc_say "Slurm $v images and rootfs cache removed"
    fi
done
