#!/usr/bin/env bash
# The one test command: installs what it needs, then runs every tier.
#   tier 1: fmt, clippy, cargo test --workspace (unit, shim, module under
#           pam_wrapper, whose suite also re-runs itself as nobody so its
#           non-root branches run), then cargo fuzz for a bounded time per
#           target
#   tier 2: real Slurm on this host (slurmctld, slurmd, munge, sshd) with
#           ssh logins through the real PAM stack (one job, several jobs and
#           the callerid RPC), parity with Debian's pam_slurm_adopt.so, the
#           Prolog/Epilog/TaskProlog hooks, the Debian package, and the
#           benchmarks
#   tier 3: the Dockerized mini-cluster per Slurm version (22.05, 24.11,
#           26.05), images built here from debootstrapped rootfs, then
#           24.11 again configless (slurmd --conf-server) with a dynamic
#           node (slurmd -Z)
#   tier 4: a cgroup v2 VM per Slurm version (22.05, 24.11) under qemu
#           TCG, images debootstrapped here (tests/vm/README.md), then the
#           same VM with SELinux enforcing Debian's refpolicy (--selinux)
# Must run as root on Debian 12: tier 2 starts daemons and adds test users.
set -euo pipefail

export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ $(id -u) -ne 0 ]]; then
    echo "run-all: must run as root (tier 2 installs Slurm, starts daemons and creates test users)" >&2
    exit 1
fi

declare -a stage_names=() stage_secs=()
stage() {
    local name=$1; shift
    local t0=$SECONDS
    echo "=== ${name}"
    "$@"
    stage_names+=("$name"); stage_secs+=($((SECONDS - t0)))
}

log_dir=$(mktemp -d /tmp/slurm-adopt-ci.XXXXXX)

tier1() {
    tests/scripts/import-cycles.py
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    cargo build --workspace --quiet
    cargo test --workspace 2>&1 | tee "$log_dir/cargo-test.log"
}

selinux_policy() {
    tests/selinux/run.sh 2>&1 | tee "$log_dir/selinux.log"
}

tier3_mini_cluster() {
    tests/mini-cluster/test.sh 2>&1 | tee "$log_dir/mini-cluster.log"
}

tier3_mini_cluster_configless() {
    tests/mini-cluster/test.sh --version 24.11 --layout configless 2>&1 | tee "$log_dir/mini-cluster-configless.log"
}

tier4_vm() {
    tests/vm/test.sh 2>&1 | tee "$log_dir/vm.log"
}

tier2_logins() {
    tests/real-slurm/run.sh 2>&1 | tee "$log_dir/real-slurm.log"
}

tier2_multi_job() {
    tests/real-slurm/multi-job.sh 2>&1 | tee "$log_dir/real-slurm-multi-job.log"
}

tier2_reasons() {
    tests/real-slurm/reasons.sh 2>&1 | tee "$log_dir/real-slurm-reasons.log"
}

tier2_hostile() {
    tests/real-slurm/hostile.sh 2>&1 | tee "$log_dir/real-slurm-hostile.log"
}

tier2_hooks() {
    tests/real-slurm/hooks.sh 2>&1 | tee "$log_dir/real-slurm-hooks.log"
}

tier2_package() {
    tests/real-slurm/package.sh 2>&1 | tee "$log_dir/real-slurm-package.log"
}

stage "install build dependencies" tests/scripts/install-build-deps.sh
stage "tier 1: fmt, clippy, cargo test" tier1
stage "tier 1: cargo-deny (licenses, bans, sources)" tests/scripts/deny.sh
stage "tier 1: fuzz the RPC, stepd and /proc/net parsers (bounded)" tests/scripts/fuzz.sh
stage "SELinux policy: build, private store, sesearch checks" selinux_policy
stage "tier 2: set up real Slurm on this host" tests/real-slurm/setup-host.sh
stage "tier 2: release build" cargo build --release --quiet --workspace
stage "tier 2: ssh logins through the real PAM stack" tier2_logins
stage "tier 2: several jobs per user, callerid RPC" tier2_multi_job
stage "tier 2: every reason code in a real log line, adoptctl check agreeing" tier2_reasons
stage "tier 2: hostile stepds, stopped munged and slurmd, within timeout_ms" tier2_hostile
stage "tier 2: Prolog, Epilog and TaskProlog hooks" tier2_hooks
stage "tier 2: Debian package: build, lintian, dpkg -i, doctor, logins, purge" tier2_package
stage "tier 2: benchmark, PAM transactions" tests/real-slurm/bench.sh
stage "tier 2: benchmark, extern-step count" tests/real-slurm/bench-steps.sh
stage "tier 2: benchmark, 50 concurrent multi-job logins (callerid)" tests/real-slurm/bench-parallel.sh
stage "tier 2: benchmark, 1,000 extern steps with 10 hung (scan window)" tests/real-slurm/bench-scan-window.sh
stage "tier 2: benchmark, Epilog last-job decision" tests/real-slurm/bench-epilog.sh
stage "tier 3: Dockerized mini-cluster (Slurm 22.05, 24.11, 26.05)" tier3_mini_cluster
stage "tier 3: mini-cluster, configless + dynamic node (Slurm 24.11)" tier3_mini_cluster_configless
stage "tier 4: cgroup v2 VM (Slurm 22.05, 24.11)" tier4_vm
stage "tier 4: SELinux enforcing VM (Slurm 22.05, refpolicy)" bash -c 'ADOPT_VM_BENCH=0 tests/vm/test.sh --selinux 2>&1 | tee "$0/vm-selinux.log"' "$log_dir"

# One closing tally over every tier: cargo's per-binary lines, plus the
# closing "N passed, N failed" of each shell tier (the last such line of
# each log: some print per-part subtotals before it).
tally() {
    {
        sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log_dir/cargo-test.log"
        local log
        for log in "$log_dir"/real-slurm*.log "$log_dir/selinux.log" "$log_dir"/mini-cluster*.log "$log_dir/vm.log" "$log_dir/vm-selinux.log"; do
            sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log" | tail -n1
        done
    } | awk '{ p += $1; f += $2 } END { printf "%d passed, %d failed\n", p, f }'
}

echo "=== stage times"
for i in "${!stage_names[@]}"; do
    printf '%6ss  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
done
echo "=== all tiers"
tally
