# shellcheck shell=bash
# The v2 login benchmark (figures, not pass/fail, except that every module
# must adopt): the cost of one PAM account transaction for a user with one
# job, against the number of other users' extern steps on a cgroup v2
# node, with pam_adopt and Debian's pam_slurm_adopt side by side and a
# pam_permit control (the transaction's cost without any adopt module).
# On v2 there is no uid_<uid> directory. Two crowds of other users' jobs
# are measured: allocations with only their extern step (salloc
# --no-shell), whose owner nothing on disk shows, so pam_adopt asks every
# stepd as Debian's module does; and batch jobs, whose task directories
# show their owner (task directories chowned to it up to 23.x, task
# processes running as it on 24.11), so pam_adopt skips their stepds (the
# v2 narrowing). TCG makes absolute times 10-100x slower than a real node:
# compare within one run.
#   ADOPT_VM_BENCH_STEPS  extern steps at the large size (default 50; 100
#                         needs about a minute more per version to start)
#   ADOPT_VM_BENCH_N      transactions per module and size (default 60)

_vm_bench_count() { vm_root "$1" "compgen -G '$VM_SPOOL/slurmvm_*.${2:-4294967292}' | wc -l"; }
_vm_bench_have() { [[ $(_vm_bench_count "$1") -ge $2 ]]; }
# Batch steps whose task directory is there.
# Any job directory: job_<id>, or the SLUID 26.05 names it by.
_vm_bench_batch_tasks() { vm_root "$1" "compgen -G '/sys/fs/cgroup/system.slice/*slurmstepd.scope/*/step_batch/user/task_0' | wc -l"; }
_vm_bench_have_batch() { [[ $(_vm_bench_batch_tasks "$1") -ge $2 ]]; }
_vm_field() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" <<<"$1" | head -n1; }

# One size: every module's p50/p99 in microseconds, into VM_BENCH[size|module|p50/p99].
declare -gA VM_BENCH=()
_vm_bench_size() { # VER SIZE N
    local ver=$1 size=$2 n=$3 m line
    for m in permit ours debian; do
        line=$(vm_root "$ver" "pam-probe --confdir /tmp/vm-bench/$m --rhost 127.0.0.1 sshd $VM_USER bench $n")
        if [[ $(_vm_field "$line" rc) != 0 ]]; then
            vm_fail "bench: $m at $size steps did not let $VM_USER in ($line)"
            return 1
        fi
        VM_BENCH["$size|$m|p50"]=$(_vm_field "$line" p50_us)
        VM_BENCH["$size|$m|p99"]=$(_vm_field "$line" p99_us)
    done
}

# The other user's allocations are over: their jobs are gone and no
# extern socket but the user's is left. A socket whose stepd died at
# teardown (Slurm 24.11.5, tests/vm/README.md "Known faults": 49
# teardowns here make it likely) never goes: once the jobs are gone it is
# recorded and removed, as vm_cancel_all does, instead of ending the
# benchmark.
_vm_bench_only_mine() {
    local ver=$1 orphans
    [[ $(_vm_bench_count "$ver") -le 1 ]] && return 0
    [[ -z $(vm_root "$ver" "squeue -h -u $VM_OTHER -o %i") ]] || return 1
    orphans=$(_vm_orphan_externs "$ver" | tr '\n' ' ')
    [[ -n $orphans ]] || return 1
    echo "       noticed: extern socket of job(s) ${orphans% } left with no slurmstepd after scancel (removed)"
    VM_ORPHANS+=("${orphans% }")
    for j in $orphans; do vm_root "$ver" "rm -f $VM_SPOOL/slurmvm_$j.4294967292"; done
    [[ $(_vm_bench_count "$ver") -le 1 ]]
}

vm_bench() {
    local ver=$1 steps=${ADOPT_VM_BENCH_STEPS:-50} n=${ADOPT_VM_BENCH_N:-60} j mod t0
    echo "--- Slurm $ver on cgroup v2: login cost against other users' extern steps"
    vm_cancel_all "$ver" || { vm_fail "bench: could not clear old jobs"; return 0; }
    mod=$(vm_root "$ver" "dpkg -L libpam-slurm-adopt | grep '/pam_slurm_adopt\\.so\$' | head -n1")
    # Three PAM configurations for the probe: the control, ours, Debian's
    # (fail-closed like ours, as in the scenarios).
    vm_root "$ver" "mkdir -p /tmp/vm-bench/permit /tmp/vm-bench/ours /tmp/vm-bench/debian
        echo 'account required pam_permit.so' >/tmp/vm-bench/permit/sshd
        echo 'account required pam_adopt.so' >/tmp/vm-bench/ours/sshd
        echo 'account required $mod action_adopt_failure=deny action_generic_failure=deny' >/tmp/vm-bench/debian/sshd"
    # Room for STEPS jobs on the node's two cores.
    vm_root "$ver" "scontrol update PartitionName=debug OverSubscribe=FORCE:$((steps + 8))"

    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "bench: the user's job did not start"
        return 0
    fi
    # Past the 10 s in which pam_adopt always asks a new socket.
    sleep 11
    _vm_bench_size "$ver" 1 "$n" || return 0

    # STEPS-1 allocations of the other user with nothing but their extern
    # step (salloc --no-shell): the cheapest real jobs, and the v2 case in
    # which nothing in the cgroup tree or the spool names the owner.
    t0=$SECONDS
    vm_root "$ver" "cd /tmp && for i in \$(seq 1 $((steps - 1))); do
            runuser -u $VM_OTHER -- salloc --no-shell -Q -N1 -n1 --mem=8M --oversubscribe -J vm-bench >/dev/null 2>&1 &
            if (( i % 10 == 0 )); then wait; fi
        done; wait"
    if ! _vm_wait 180 _vm_bench_have "$ver" "$steps"; then
        vm_fail "bench: only $(_vm_bench_count "$ver") of $steps extern steps started"
        vm_root "$ver" "squeue | tail -n 5; free -m" || true
        return 0
    fi
    echo "       $steps extern steps up in $((SECONDS - t0)) s ($(vm_root "$ver" "free -m | awk '/^Mem:/ {print \$3 \" MiB used of \" \$2}'"))"
    sleep 11
    _vm_bench_size "$ver" "salloc" "$n" || return 0

    # The same crowd as batch jobs: the narrowing can see these.
    # 49 Epilogs of one user run one at a time (the hooks' per-user lock):
    # under TCG that took 60-120 s.
    vm_root "$ver" "scancel -u $VM_OTHER" || true
    t0=$SECONDS
    if ! _vm_wait 360 _vm_bench_only_mine "$ver"; then
        vm_fail "bench: $VM_OTHER's allocations did not end in 360 s"
        vm_root "$ver" "squeue | tail -n 5; tail -n 5 /var/log/slurm/slurmd.log" || true
        return 0
    fi
    echo "       $((steps - 1)) allocations ended in $((SECONDS - t0)) s"
    t0=$SECONDS
    vm_root "$ver" "cd /tmp && for i in \$(seq 1 $((steps - 1))); do
            runuser -u $VM_OTHER -- sbatch -Q --output=/dev/null -N1 -n1 --mem=8M --oversubscribe -J vm-bench --wrap 'sleep 900' >/dev/null
        done"
    # $steps task directories: the other user's batch jobs and the user's own.
    if ! _vm_wait 240 _vm_bench_have_batch "$ver" "$steps"; then
        vm_fail "bench: only $(_vm_bench_batch_tasks "$ver") of $steps batch jobs started"
        vm_root "$ver" "squeue | tail -n 5; free -m" || true
        return 0
    fi
    echo "       $((steps - 1)) batch jobs up in $((SECONDS - t0)) s ($(vm_root "$ver" "free -m | awk '/^Mem:/ {print \$3 \" MiB used of \" \$2}'"))"
    _vm_bench_size "$ver" "sbatch" "$n" || return 0

    local s m p50 ctl label
    echo
    echo "v2 login cost, Slurm $ver in a TCG VM: one PAM account transaction for $VM_USER (1 job), $n transactions per cell"
    printf '  %-26s %-16s %9s %9s %17s\n' "other users' jobs" module p50_us p99_us "module-only p50"
    for s in 1 salloc sbatch; do
        case $s in
        1) label="none" ;;
        salloc) label="$((steps - 1)) salloc (ask all)" ;;
        sbatch) label="$((steps - 1)) sbatch (narrowed)" ;;
        esac
        ctl=${VM_BENCH["$s|permit|p50"]}
        for m in permit ours debian; do
            p50=${VM_BENCH["$s|$m|p50"]}
            printf '  %-26s %-16s %9s %9s %17s\n' "$label" \
                "$(case $m in permit) echo pam_permit ;; ours) echo pam_adopt ;; *) echo pam_slurm_adopt ;; esac)" \
                "$p50" "${VM_BENCH["$s|$m|p99"]}" "$([[ $m == permit ]] && echo - || echo "$((p50 - ctl))")"
        done
    done
    local o d oa
    for s in salloc sbatch; do
        o=$((VM_BENCH["$s|ours|p50"] - VM_BENCH["$s|permit|p50"]))
        d=$((VM_BENCH["$s|debian|p50"] - VM_BENCH["$s|permit|p50"]))
        echo "  $steps extern steps, the others $s jobs: module-only p50 pam_adopt $o us, pam_slurm_adopt $d us, ratio pam_slurm_adopt/pam_adopt $(awk -v a="$o" -v b="$d" 'BEGIN { if (a > 0) printf "%.1f", b / a; else print "-" }')"
    done
    o=$((VM_BENCH["sbatch|ours|p50"] - VM_BENCH["sbatch|permit|p50"]))
    oa=$((VM_BENCH["salloc|ours|p50"] - VM_BENCH["salloc|permit|p50"]))
    echo "  narrowing: asking every stepd costs $(awk -v a="$o" -v b="$oa" 'BEGIN { if (a > 0) printf "%.1f", b / a; else print "-" }')x the narrowed login"
    echo
    vm_root "$ver" "scontrol update PartitionName=debug OverSubscribe=NO"
    vm_cancel_all "$ver" 360 || vm_fail "bench: jobs did not end in 360 s"
}
