#!/usr/bin/env bash
# The mini-cluster's test command (CI runs it through tests/run-all.sh): for
# each Slurm version (22.05 bookworm, 24.11 trixie, 26.05 sid) build what is
# missing, start ctl + c1 + c2 + login, run every scenario with our
# pam_adopt.so and with Debian's pam_slurm_adopt.so in the same image, print
# the parity table, tear the cluster down. Then the time of every stage and
# "N passed, N failed"; non-zero exit on any failure.
#   tests/mini-cluster/test.sh [--version V]... [--layout classic|configless] [--keep]
# --keep leaves the last cluster running (for debugging; down.sh removes it).
# --layout configless runs the same scenarios on a configless cluster (no
# slurm.conf on c1/c2) plus the dynamic node d1's (up.sh --layout).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"
# shellcheck source=SCRIPTDIR/scenarios.sh
source "$here/scenarios.sh"

versions=() keep=no
while (($#)); do
    case $1 in
        --version) versions+=("${2:?--version needs 22.05, 24.11 or 26.05}"); shift 2 ;;
        --keep) keep=yes; shift ;;
        --layout) MC_LAYOUT=${2:?--layout needs classic or configless}; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) mc_die "unknown argument '$1' (test.sh [--version V]... [--layout classic|configless] [--keep])" ;;
    esac
done
((${#versions[@]})) || versions=("${MC_VERSIONS[@]}")
for v in "${versions[@]}"; do mc_suite "$v" >/dev/null; done
mc_layout_nodes >/dev/null

mc_require_root
mc_ensure_docker

declare -a stage_names=() stage_secs=()
t_all=$SECONDS
# stage NAME CMD...: a failing stage is one failed check, and the rest of
# that version is skipped (its cluster is not usable).
stage() {
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "=== $name"
    if [[ $name == *scenarios* ]]; then
        "$@" || rc=$?
    else
        # Build and start steps end with mc_die (exit) on errors: a subshell
        # keeps that from ending the whole run.
        ("$@") || rc=$?
    fi
    stage_names+=("$name")
    stage_secs+=($((SECONDS - t0)))
    if ((rc != 0)); then
        mc_fail "stage '$name' (exit $rc)"
        return 1
    fi
}

current=
cleanup() {
    [[ -n $current ]] || return 0
    # A run interrupted while slurmd was stopped must not leave it stopped.
    local n
    for n in c1 c2; do mc_exec "$current" "$n" pkill -CONT -x slurmd 2>/dev/null || true; done
    [[ $keep == yes ]] || mc_down "$current"
    return 0
}
trap cleanup EXIT

stage "build the toolkit (release)" mc_build_binaries || { summary_exit=1; }

for v in "${versions[@]}"; do
    [[ -z ${summary_exit:-} ]] || break
    current=$v
    # shellcheck disable=SC2034 # read by scenarios.sh's functions
    MC_RESULT=() MC_ROWS=()
    stage "$v: rootfs + images ($(mc_suite "$v"))" mc_image "$v" || continue
    stage "$v: start $(mc_layout_nodes | tr ' ' ',') ($MC_LAYOUT)" mc_start_ready "$v" || { mc_logs "$v"; mc_down "$v"; continue; }
    mc_say "Slurm $v: $(mc_exec "$v" ctl sinfo -V), hooks configured: $(mc_exec "$v" c1 cat /etc/slurm-adopt-mc-hooks)"
    stage "$v: scenarios with pam_adopt" mc_scenarios "$v" ours || true
    stage "$v: scenarios with Debian's pam_slurm_adopt" mc_scenarios "$v" debian || true
    if [[ $MC_LAYOUT == configless ]]; then
        stage "$v: dynamic-node scenarios with pam_adopt" mc_dynamic_scenarios "$v" ours || true
        stage "$v: dynamic-node scenarios with Debian's pam_slurm_adopt" mc_dynamic_scenarios "$v" debian || true
    fi
    mc_parity_table "$v"
    if [[ $keep == yes && $v == "${versions[-1]}" ]]; then
        mc_say "kept the Slurm $v cluster running: tests/mini-cluster/down.sh removes it"
    else
        stage "$v: tear down" mc_down "$v" || true
    fi
    current=
done

echo "=== stage times"
for i in "${!stage_names[@]}"; do
    printf '%6ss  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
done
printf '%6ss  %s\n' "$((SECONDS - t_all))" "total"
for f in "${MC_STARTING_FIGURES[@]}"; do echo "starting job: $f"; done
for f in "${MC_ADOPT_SSH_FIGURES[@]}"; do echo "adopt-ssh: $f"; done
echo "$MC_PASSED passed, $MC_FAILED failed"
((MC_FAILED == 0))
