#!/usr/bin/env bash
# The newcomer command: bring up a Dockerized Slurm cluster (ctl, c1, c2 and
# a login node) with pam_adopt.so in the compute nodes' sshd, building
# whatever is missing (build deps, Docker, rootfs by debootstrap, images,
# the toolkit), run a short demo and leave the cluster running.
#   sudo tests/mini-cluster/up.sh [--version 22.05|24.11|26.05] [--layout classic|configless]
# (default 24.11, classic). configless: no slurm.conf on c1/c2 (slurmd
# --conf-server ctl) and a dynamic node d1 (slurmd -Z) in no NodeName line.
# tests/mini-cluster/down.sh removes it again.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

ver=24.11
while (($#)); do
    case $1 in
        --version) ver=${2:?--version needs 22.05, 24.11 or 26.05}; shift 2 ;;
        --layout) MC_LAYOUT=${2:?--layout needs classic or configless}; shift 2 ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) mc_die "unknown argument '$1' (up.sh [--version 22.05|24.11|26.05] [--layout classic|configless])" ;;
    esac
done
mc_layout_nodes >/dev/null
mc_suite "$ver" >/dev/null
mc_require_root
# The first command on a fresh machine: install and start the engine rather
# than stop for lack of it (the build deps come with mc_build_binaries,
# debootstrap with mc_rootfs).
mc_ensure_docker

t0=$SECONDS
mc_build_binaries
mc_up "$ver"
mc_say "up in $((SECONDS - t0)) s"

login=$(mc_container "$ver" login)
user=adopt-alice
demo() { echo; echo "\$ $*"; }
run_as() { docker exec -w /tmp "$login" runuser -u "$user" -- bash -c "$1" 2>&1 || true; }

echo
echo "=== demo: Slurm $ver, user $user on the login node"
demo "ssh c1 hostname     # no job yet"
run_as "ssh c1 hostname"
demo "sbatch -w c1 --wrap 'sleep 3600'"
job=$(docker exec -w /tmp "$login" runuser -u "$user" -- sbatch --parsable --output=/dev/null -w c1 --wrap 'sleep 3600' | cut -d';' -f1)
echo "Submitted batch job $job"
for _ in $(seq 1 100); do
    docker exec "$(mc_container "$ver" c1)" bash -c "compgen -G '/var/spool/slurmd/c1_${job}.4294967292' >/dev/null" && break
    sleep 0.2
done
demo "ssh c1 'grep freezer /proc/self/cgroup'     # lands in job $job"
run_as "ssh c1 'grep freezer /proc/self/cgroup'"
demo "ssh c2 hostname     # no job on c2"
run_as "ssh c2 hostname"
echo
echo "c1's syslog:"
# rsyslog writes a moment after sshd logs: wait for the adopt line.
for _ in $(seq 1 20); do
    docker exec "$(mc_container "$ver" c1)" grep -q "decision=adopt job=$job " /var/log/auth.log && break
    sleep 0.2
done
docker exec "$(mc_container "$ver" c1)" grep 'pam_adopt(sshd:account): user=' /var/log/auth.log | tail -n 2 | sed 's/^/  /'

if [[ $MC_LAYOUT == configless ]]; then
    d1=$(mc_container "$ver" d1)
    echo
    echo "=== configless: no /etc/slurm/slurm.conf on the compute nodes; d1 is dynamic ($MC_DYN_HOST)"
    for n in c1 d1; do
        demo "$n: ls -l /run/slurm/conf; adoptctl doctor"
        docker exec "$(mc_container "$ver" "$n")" bash -c 'ls -ld /run/slurm/conf /etc/slurm/slurm.conf 2>&1; adoptctl doctor | grep -E "configless|login-node|slurm-conf|prolog-flags|failures"; echo "doctor exit ${PIPESTATUS[0]}"' 2>&1 | sed 's/^/  /'
    done
    demo "ssh d1 hostname     # no job on d1"
    run_as "ssh d1 hostname"
    demo "sbatch -w $MC_DYN_HOST --wrap 'sleep 3600'"
    djob=$(docker exec -w /tmp "$login" runuser -u "$user" -- sbatch --parsable --output=/dev/null -w "$MC_DYN_HOST" --wrap 'sleep 3600' | cut -d';' -f1)
    echo "Submitted batch job $djob"
    for _ in $(seq 1 100); do
        docker exec "$d1" bash -c "compgen -G '/var/spool/slurmd/${MC_DYN_HOST}_${djob}.4294967292' >/dev/null" && break
        sleep 0.2
    done
    demo "ssh d1 'grep freezer /proc/self/cgroup'     # lands in job $djob"
    run_as "ssh d1 'grep freezer /proc/self/cgroup'"
    for _ in $(seq 1 20); do
        docker exec "$d1" grep -q "decision=adopt job=$djob " /var/log/auth.log && break
        sleep 0.2
    done
    echo
    echo "d1's syslog:"
    docker exec "$d1" grep 'pam_adopt(sshd:account): user=' /var/log/auth.log | tail -n 2 | sed 's/^/  /'
fi

cat <<EOT

=== the cluster is running (Slurm $ver; job $job of $user holds c1)
Log in as a test user on the login node, then ssh to a compute node:
  docker exec -it $login su - $user        # or adopt-bob
  ssh c1                                   # lands in job $job
  ssh c2                                   # denied: no job there
  srun -w c2 --pty bash                    # ... until you have one
Compute nodes as root:   docker exec -it $(mc_container "$ver" c1) bash
  (auth.log: /var/log/auth.log, slurmd: /var/log/slurm/slurmd.log;
   switch modules: mc-pam ours | mc-pam debian)
Tear it down:            tests/mini-cluster/down.sh
EOT
