#!/usr/bin/env bash
# The cgroup v2 tier (tests/run-all.sh's tier 4): for each Slurm version
# (22.05 on bookworm, 24.11 on trixie) build or reuse the cached guest
# image, boot it under qemu TCG, install this project's .deb, run every
# scenario with pam_adopt.so and with Debian's pam_slurm_adopt.so, print
# the parity table and the v2 login benchmark, collect the guest's logs,
# shut down. Then each part's time and "N passed, N failed"; non-zero exit
# on any failure.
#   tests/vm/test.sh [--version V]... [--keep] [--selinux]
#   --keep                  leave the last VM running (ssh -F target/vm/run/V/ssh_config vm)
#   --selinux               the enforcing variant (selinux.sh): Debian's refpolicy,
#                           enforcing=1, a negative control without the project's
#                           policy, then pam_adopt's scenarios with no sshd_t AVC
#   ADOPT_VM_SE_NS=0        with --selinux: leave out the job_container/tmpfs stage
#   ADOPT_VM_BENCH=0        leave out the benchmark stage (on by default)
#   ADOPT_VM_BENCH_STEPS=N  extern steps in the benchmark (default 50)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/vm/lib.sh
source "$here/lib.sh"
# shellcheck source=tests/vm/scenarios.sh
source "$here/scenarios.sh"
# shellcheck source=tests/vm/bench.sh
source "$here/bench.sh"
# shellcheck source=tests/vm/selinux.sh
source "$here/selinux.sh"

versions=() keep=no
while (($#)); do
    case $1 in
        --version) versions+=("${2:?--version needs 22.05, 24.11 or 26.05}"); shift 2 ;;
        --keep) keep=yes; shift ;;
        --selinux) VM_SELINUX=1; shift ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) vm_die "unknown argument '$1' (test.sh [--version V]... [--keep] [--selinux])" ;;
    esac
done
if ((${#versions[@]} == 0)); then
    if [[ $VM_SELINUX == 1 ]]; then versions=(22.05); else versions=("${VM_DEFAULT_VERSIONS[@]}"); fi
fi
for v in "${versions[@]}"; do vm_suite "$v" >/dev/null; done
vm_require_root

declare -a stage_names=() stage_secs=()
t_all=$SECONDS
# stage NAME CMD...: a failing stage is one failed check; a failed build,
# boot or setup ends that version (its VM is not usable).
stage() {
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "=== $name"
    if [[ $name == *scenarios* || $name == *benchmark* || $name == *adoptctl* || $name == *SELinux* ]]; then
        "$@" || rc=$?
    else
        # Build and boot steps end with vm_die (exit): a subshell keeps
        # that from ending the whole run.
        ("$@") || rc=$?
    fi
    stage_names+=("$name")
    stage_secs+=($((SECONDS - t0)))
    echo "    ($((SECONDS - t0)) s)"
    if ((rc != 0)); then
        vm_fail "stage '$name' (exit $rc)"
        return 1
    fi
}

current=
cleanup() {
    [[ -n $current && $keep == no ]] || return 0
    vm_stop "$current" || true
}
trap cleanup EXIT

# The .deb sites install, built on the host from this tree (release
# build, then dpkg-deb); installed into every boot.
VM_DEB=
build_deb() {
    local out
    out=$("$VM_REPO/packaging/build-deb.sh" | tail -n1) || vm_die "packaging/build-deb.sh failed (see above)"
    [[ -f $out ]] || vm_die "packaging/build-deb.sh printed no package path ($out)"
    for b in pam-probe; do
        [[ -x $VM_REPO/target/release/$b ]] || vm_die "target/release/$b missing after the release build"
    done
    echo "$out" >"$VM_CACHE/deb-path"
    echo "package: $out"
}

boot() { vm_boot "$1" && vm_wait_ssh "$1" 300; }

# Install the .deb and the guest helpers, then check that this is the node
# the tier promises: unified hierarchy with real controllers, Slurm's
# cgroup/v2 plugin, the node idle.
setup() {
    local ver=$1 out
    VM_DEB=$(cat "$VM_CACHE/deb-path")
    vm_put "$ver" "$VM_DEB" "$VM_DIR/guest/vm-pam" "$VM_DIR/guest/vm-job-cgroup" "$VM_REPO/target/release/pam-probe" /tmp/ ||
        vm_die "copying the .deb and helpers into the guest failed"
    vm_root "$ver" "install -m 0755 /tmp/vm-pam /usr/local/sbin/vm-pam && install -m 0755 /tmp/vm-job-cgroup /usr/local/bin/vm-job-cgroup && install -m 0755 /tmp/pam-probe /usr/local/bin/pam-probe &&
        dpkg -i /tmp/$(basename "$VM_DEB") >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }" ||
        vm_die "dpkg -i $(basename "$VM_DEB") failed in the guest (output above)"
    vm_wait_slurm "$ver" 180 || vm_die "Slurm did not come up in the guest"
}

v2_checks() {
    local ver=$1 out
    out=$(vm_root "$ver" "stat -fc %T /sys/fs/cgroup")
    vm_check "the guest mounts the unified hierarchy (/sys/fs/cgroup is $out)" _vm_eq "$out" cgroup2fs
    out=$(vm_root "$ver" "cat /sys/fs/cgroup/cgroup.controllers")
    vm_check "real controllers on v2: cpuset cpu memory pids ($out)" \
        bash -c "for c in cpuset cpu memory pids; do [[ ' $out ' == *\" \$c \"* ]] || exit 1; done"
    out=$(vm_root "$ver" "/usr/libexec/slurm-adopt/adopt-prolog --version && adoptctl --version" 2>&1)
    vm_check "the .deb's hooks and adoptctl run ($(tr '\n' ' ' <<<"$out"))" \
        bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm '/usr/libexec/slurm-adopt/adopt-prolog --version && /usr/libexec/slurm-adopt/adopt-epilog --version && /usr/libexec/slurm-adopt/adopt-taskprolog --version' >/dev/null"
    echo "       $(vm_root "$ver" "sinfo -V; uname -r; systemctl --version | head -n1" | tr '\n' ' ')"
}

# Where a job really sits on this version (the scope's name changed after
# 22.05), printed for the record. The tree is the cgroup/v2 plugin's own
# (step_extern/user/task_special), and the job's limits are enforced by
# the v2 memory and cpuset controllers.
show_layout() {
    local ver=$1 j dir out
    j=$(vm_submit "$ver") && vm_wait_job "$ver" "$j" || { vm_fail "layout: job did not start"; return 0; }
    # Found through the job's extern stepd: 26.05 names the directory by
    # the job's SLUID, not job_<id>.
    dir=$(vm_root "$ver" "vm-job-cgroup --dir $j")
    vm_root "$ver" "find '$dir' -type d | sed 's|^/sys/fs/cgroup||' | sort | sed 's/^/       /'"
    # 26.05 makes step_extern/user/task_special only with the first pid
    # given to the extern step; earlier versions make it with the step.
    vm_check "cgroup/v2 plugin: job $j has step_extern/user under a slurmstepd scope (${dir#/sys/fs/cgroup})" \
        bash -c "[[ '$dir' =~ /(slurmvm_)?slurmstepd\.scope/(job_$j|s[0-9A-Z]+)\$ ]] && ssh -F '$(vm_run_dir "$ver")/ssh_config' vm test -d '$dir/step_extern/user'"
    out=$(vm_root "$ver" "cat $dir/memory.max $dir/cpuset.cpus.effective | tr '\n' ' '")
    vm_check "v2 controllers enforce job $j's limits: memory.max 128 MiB (DefMemPerCPU), one CPU in cpuset ($out)" \
        bash -c "[[ '$out' =~ ^134217728\ [0-9]+\ \$ ]]"
    vm_root "$ver" "scancel $j"
}

stage "host tools (qemu-system-x86, debootstrap)" vm_ensure_host_tools || exit 1
stage "build the toolkit's .deb (packaging/build-deb.sh)" build_deb || exit 1

for v in "${versions[@]}"; do
    # shellcheck disable=SC2034 # read by scenarios.sh's functions
    VM_RESULT=() VM_ROWS=()
    stage "$v: image ($(vm_suite "$v")$([[ $VM_SELINUX != 1 ]] || echo ' + refpolicy'), cached under target/vm)" vm_image "$v" || continue
    current=$v
    stage "$v: boot under TCG until ssh answers" boot "$v" || { vm_stop "$v"; current=; continue; }
    stage "$v: install the .deb, Slurm idle" setup "$v" || { vm_stop "$v"; current=; continue; }
    v2_checks "$v"
    if [[ $VM_SELINUX == 1 ]]; then
        # No scenario on a node that does not enforce: it would prove
        # nothing about the policy.
        if stage "$v: SELinux enforcing, no project module loaded" vm_se_checks "$v"; then
            stage "$v: SELinux negative control (no project module)" vm_se_negative "$v" || true
            # One semodule transaction (about 45 s under TCG): pam_adopt,
            # its port label, the hooks' domain and the namespace module.
            if stage "$v: SELinux: load pam_adopt, port label, hooks, ns" \
                vm_se_load "$v" pam_adopt pam_adopt_port.cil pam_adopt_hooks pam_adopt_ns; then
                vm_se_labels "$v"
                hooks_mark=$(vm_mark "$v")
                stage "$v: SELinux: keyring control, cgroup boolean, sock_diag" \
                    vm_se_controls "$v" || true
                vm_avc_reset "$v"
                VM_ROW_HOOK=vm_avc_row_hook VM_OPTION_HOOK=vm_se_option_hook \
                    stage "$v: SELinux: scenarios with pam_adopt, enforcing" vm_scenarios "$v" ours || true
                # What the last row's cleanup (its jobs' Epilogs) raised.
                vm_avc_row_hook "$v" "after the last scenario (cleanup, last Epilog)"
                vm_se_doctor_ok "$v"
                vm_se_hooks_domain "$v" "$hooks_mark"
                stage "$v: SELinux: reap_strays in the hooks' domain, boolean off and on" vm_se_reap_strays "$v" || true
                if [[ ${ADOPT_VM_SE_NS:-1} == 1 ]]; then
                    stage "$v: SELinux: job_container/tmpfs, join_container (pam_adopt_ns)" vm_se_namespace "$v" || true
                else
                    echo "=== $v: job_container/tmpfs stage left out (ADOPT_VM_SE_NS=0)"
                fi
            fi
        fi
        vm_se_summary
    else
        show_layout "$v"
        stage "$v: scenarios with pam_adopt" vm_scenarios "$v" ours || true
        stage "$v: scenarios with Debian's pam_slurm_adopt" vm_scenarios "$v" debian || true
        stage "$v: adoptctl check and doctor" vm_tool_scenarios "$v" || true
        vm_parity_table "$v"
    fi
    if [[ ${ADOPT_VM_BENCH:-1} != 0 && $VM_SELINUX != 1 ]]; then
        stage "$v: benchmark, login cost at ${ADOPT_VM_BENCH_STEPS:-50} extern steps" vm_bench "$v" || true
    fi
    vm_collect "$v" "$(vm_run_dir "$v")/logs"
    echo "guest logs: $(vm_run_dir "$v")/logs"
    if [[ $keep == yes && $v == "${versions[-1]}" ]]; then
        vm_say "kept the Slurm $v VM running: ssh -F $(vm_run_dir "$v")/ssh_config vm"
    else
        stage "$v: shut down" vm_stop "$v" || true
        current=
    fi
done

echo "=== stage times"
for i in "${!stage_names[@]}"; do
    printf '%6ss  %s\n' "${stage_secs[$i]}" "${stage_names[$i]}"
done
printf '%6ss  %s\n' "$((SECONDS - t_all))" "total"
((${#VM_ORPHANS[@]} == 0)) ||
    echo "noticed: extern stepds that died at teardown and left their socket (jobs ${VM_ORPHANS[*]}; see tests/vm/README.md, Known faults)"
for name in "${VM_FAILED_NAMES[@]}"; do echo "failed: $name"; done
echo "$VM_PASSED passed, $VM_FAILED failed"
((VM_FAILED == 0))
