# shellcheck shell=bash
# The enforcing variant of the v2 tier (test.sh --selinux): the same guest
# with Debian's reference policy, booted with enforcing=1. The project's
# policy modules are not in the image; the .deb carries them. Order:
#   1. the node enforces (getenforce), no project module is loaded;
#   2. the negative control: a user with a job logs in without the modules;
#   3. pam_adopt.pp (+ its port label) loaded, labels restored;
#   4. the scenarios of scenarios.sh with pam_adopt, each one's AVC denials
#      read from the journal after a mark, none for sshd_t allowed;
#   5. pam_adopt_hooks.pp and pam_adopt_ns.pp: the hooks' domain.
# AVC records come from the kernel's audit netlink into the journal
# (journald's audit socket; no auditd in the image), read after a cursor.

VM_SE_PKG=/usr/share/selinux/packages/slurm-adopt

# The AVC denials since journal cursor MARK, one line each:
# "sshd_t -> initrc_t:unix_stream_socket { connectto } comm=sshd name=..."
# journald stores each record twice (audit socket "AVC ...", and the
# kernel's own "audit: type=1400 ..." line): the audit copy is read when
# there is one.
_vm_avc_lines() {
    local all
    all=$(grep -E 'avc: +denied' || true)
    if grep -q '^AVC ' <<<"$all"; then grep '^AVC ' <<<"$all"; else printf '%s' "$all"; fi
}
vm_avc_since() { # VER MARK
    vm_journal_since "$1" "$2" | _vm_avc_lines | sed -E \
        -e 's/.*avc: +denied +\{ ([^}]*) \} for +(.*)$/\1|\2/' |
        while IFS='|' read -r perms rest; do
            local s t c comm name
            s=$(sed -nE 's/.*scontext=[^:]*:[^:]*:([^: ]*).*/\1/p' <<<"$rest")
            t=$(sed -nE 's/.*tcontext=[^:]*:[^:]*:([^: ]*).*/\1/p' <<<"$rest")
            c=$(sed -nE 's/.*tclass=([^ ]*).*/\1/p' <<<"$rest")
            comm=$(sed -nE 's/.*comm="?([^" ]*)"?.*/\1/p' <<<"$rest")
            name=$(sed -nE 's/.*(name|path)="?([^" ]*)"?.*/\2/p' <<<"$rest")
            echo "$s -> $t:$c { ${perms% } } comm=$comm${name:+ name=$name}"
        done | sort | uniq -c | sed -E 's/^ *([0-9]+) (.*)/\2 (x\1)/'
}

# Per-scenario AVC reading: VM_ROW_HOOK of scenarios.sh, called after each
# recorded row. Every row's denials are those since the previous row.
VM_AVC_MARK=
declare -ga VM_AVC_SEEN=()
vm_avc_reset() { VM_AVC_MARK=$(vm_mark "$1"); }
vm_avc_row_hook() { # VER ROW
    local ver=$1 row=${2//_/ } avcs sshd
    avcs=$(vm_avc_since "$ver" "$VM_AVC_MARK")
    VM_AVC_MARK=$(vm_mark "$ver")
    sshd=$(grep -E '^sshd_t ' <<<"$avcs" | grep -vE "$VM_SE_KEYINIT_AVC" || true)
    local line
    while IFS= read -r line; do
        [[ -n $line ]] || continue
        echo "       avc ($row): $line"
        VM_AVC_SEEN+=("$row: $line")
    done <<<"$avcs"
    vm_check "selinux: no sshd_t AVC denial during '$row'" _vm_eq "$sshd" ""
}
# pam_keyinit (session phase of Debian's sshd stack) searches the user's
# keyring, which the harness's runuser made in unconfined_t: refpolicy
# denies sshd_t that search, with or without any adopt module in the
# stack. vm_se_keyinit_control proves that once; the row checks then leave
# exactly that record out.
VM_SE_KEYINIT_AVC='^sshd_t -> unconfined_t:key \{ search \} '

# VM_OPTION_HOOK of scenarios.sh: called when a scenario sets module
# options. adopt_via=cgroup writes cgroup.procs from sshd_t, which is the
# pam_adopt_cgroup_fallback boolean's grant (off by default): on for that
# scenario only, so the others prove they need no cgroup write.
vm_se_option_hook() { # VER OPTIONS
    local want=off
    [[ $2 != *adopt_via=cgroup* ]] || want=on
    vm_root "$1" "setsebool pam_adopt_cgroup_fallback $want" ||
        vm_fail "selinux: setsebool pam_adopt_cgroup_fallback $want"
}

_vm_ctx() { vm_root "$1" "ls -dZ $2 2>/dev/null | cut -d' ' -f1"; }
_vm_domain() { vm_root "$1" "ps -eo label,comm | awk '\$2 == \"$2\" {print \$1; exit}'"; }

# 1. The node enforces, and none of the project's modules is loaded.
# Returns non-zero when the node does not enforce: test.sh then runs no
# scenario (the tier would prove nothing about SELinux).
vm_se_checks() {
    local ver=$1 out p
    out=$(vm_root "$ver" "getenforce")
    echo "       getenforce: $out; $(vm_root "$ver" "cat /sys/kernel/security/lsm; echo; sestatus 2>/dev/null | grep -E 'policy name|MLS|deny_unknown' | tr -s ' ' | tr '\n' ';'" | tr '\n' ' ')"
    vm_check "selinux: getenforce says Enforcing before any scenario" _vm_eq "$out" Enforcing
    [[ $out == Enforcing ]] || return 1
    out=$(vm_root "$ver" "semodule -l | grep -E '^pam_adopt' || true")
    vm_check "selinux: no pam_adopt module is loaded (negative control first)" _vm_eq "$out" ""
    for p in sshd slurmd slurmctld munged systemd; do
        echo "       domain of $p: $(_vm_domain "$ver" "$p")"
    done
    out=$(_vm_domain "$ver" sshd)
    vm_check "selinux: sshd runs confined as sshd_t ($out)" bash -c "[[ '$out' == *:sshd_t:* ]]"
    out=$(_vm_domain "$ver" slurmd)
    vm_check "selinux: slurmd runs as initrc_t (refpolicy has no Slurm module) ($out)" bash -c "[[ '$out' == *:initrc_t:* ]]"
}

# 2. The negative control: no project module loaded, a user with a job,
# our module in sshd's stack. SELinux must keep the login out of the job,
# and the denials must name sshd_t against the stepd's socket or spool.
VM_SE_NEGATIVE_AVCS=
vm_se_negative() {
    local ver=$1 j mark out got d avcs
    echo "--- Slurm $ver, SELinux enforcing, none of the project's modules loaded"
    vm_root "$ver" "vm-pam ours" || { vm_fail "negative: vm-pam ours"; return 0; }
    vm_cancel_all "$ver" || { vm_fail "negative: could not clear old jobs"; return 0; }
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "negative: job did not start"
        return 0
    fi
    echo "       labels: spool $(_vm_ctx "$ver" "$VM_SPOOL"), extern socket $(_vm_ctx "$ver" "$VM_SPOOL/slurmvm_$j.4294967292"), munge $(_vm_ctx "$ver" /run/munge/munge.socket.2)"
    echo "       domain of the extern stepd: $(vm_root "$ver" "ps -eo label,args | grep -m1 '[s]lurmstepd: \[$j.extern\]' | cut -d' ' -f1")"
    mark=$(vm_mark "$ver")
    out=$(vm_login_raw "$ver")
    got=$(_vm_where "$out" "$j")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    VM_SE_NEGATIVE_AVCS=$avcs
    echo "       login of $VM_USER with job $j: $got"
    echo "       decision line: ${d:-none}"
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc: /'
    vm_check "negative control: without the policy, $VM_USER's login is not adopted into job $j ($got)" \
        bash -c "[[ '$got' != 'job J' ]]"
    vm_check "negative control: the decision line is not an adopt (${d:-none})" \
        bash -c "[[ '${d%% *}' != adopt ]]"
    vm_check "negative control: the journal shows sshd_t denied the stepd's socket or spool" \
        _vm_has '^sshd_t -> [a-z_]+:(unix_stream_socket|sock_file|dir) ' "$avcs"
    # doctor sees the enforcing node without the module.
    out=$(vm_root "$ver" "adoptctl doctor; echo rc=\$?")
    grep -E '^[a-z]+ +selinux' <<<"$out" | sed 's/^/       doctor: /'
    vm_check "negative control: adoptctl doctor fails selinux, naming the missing pam_adopt module" \
        _vm_has '^fail +selinux .*no pam_adopt policy module' "$out"
    vm_check "negative control: adoptctl doctor exits 2" _vm_has '^rc=2$' "$out"
    vm_root "$ver" "scancel $j"
    vm_cancel_all "$ver" || vm_fail "negative: cleanup"
}

# 3. Load pam_adopt (+ the port label of SlurmdPort), then give the spool,
# the stepd sockets and munged's socket dir their new labels.
vm_se_load() { # VER MODULE...
    local ver=$1 m args="" t0=$SECONDS out
    shift
    for m in "$@"; do
        if [[ $m == *.cil ]]; then args+=" -i $VM_SE_PKG/$m"; else args+=" -i $VM_SE_PKG/$m.pp"; fi
    done
    # The runtime state the hooks left while unconfined (initrc_runtime_t)
    # is relabelled too, or the confined hooks could not use it.
    vm_root "$ver" "semodule$args 2>&1 | grep -v 'user sddm not in password file'; restorecon -RF $VM_SPOOL /run/munge /usr/libexec/slurm-adopt /run/slurm-adopt /run/user" ||
        { vm_fail "selinux: semodule$args failed"; return 1; }
    echo "       semodule$args + restorecon: $((SECONDS - t0)) s"
    out=$(vm_root "$ver" "semodule -l | grep -E '^pam_adopt' | tr '\n' ' '")
    for m in "$@"; do
        m=${m%.cil}
        vm_check "selinux: semodule -l lists $m" bash -c "[[ ' $out ' == *' $m '* ]]"
    done
}

vm_se_labels() {
    local ver=$1 out
    out=$(_vm_ctx "$ver" "$VM_SPOOL")
    vm_check "selinux: the spool is pam_adopt_slurmd_spool_t ($out)" bash -c "[[ '$out' == *:pam_adopt_slurmd_spool_t:* ]]"
    out=$(_vm_ctx "$ver" /run/munge/munge.socket.2)
    vm_check "selinux: munged's socket is pam_adopt_munge_runtime_t ($out)" bash -c "[[ '$out' == *:pam_adopt_munge_runtime_t:* ]]"
}

# 4. doctor with the module loaded (scenarios.sh checks its exit code).
vm_se_doctor_ok() {
    local ver=$1 out
    out=$(vm_root "$ver" "adoptctl doctor")
    vm_check "selinux: adoptctl doctor: enforcing and the pam_adopt module loaded" \
        _vm_has '^ok +selinux .*enforcing and the pam_adopt policy module is loaded' "$out"
}

# The keyring record, proven to be pam_keyinit's: with pam_keyinit off an
# adopted login raises no AVC at all; with Debian's stack as shipped its
# only sshd_t record is the keyring search.
vm_se_keyinit_control() {
    local ver=$1 j mark got avcs
    echo "--- pam_adopt loaded: what an adopted login costs in AVCs"
    vm_root "$ver" "vm-pam ours"
    vm_cancel_all "$ver" || { vm_fail "keyinit control: could not clear old jobs"; return 0; }
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
        vm_fail "keyinit control: job did not start"
        return 0
    fi
    sleep 1
    vm_root "$ver" "sed -i 's/^\(session.*pam_keyinit\.so.*\)$/#vm-se# \1/' /etc/pam.d/sshd"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver")" "$j")
    avcs=$(vm_avc_since "$ver" "$mark")
    vm_root "$ver" "sed -i 's/^#vm-se# //' /etc/pam.d/sshd"
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc (pam_keyinit off): /'
    vm_check "selinux: pam_keyinit off: the login is adopted into job $j" _vm_eq "$got" "job J"
    vm_check "selinux: pam_keyinit off: the adopted login raises no AVC at all" _vm_eq "$avcs" ""
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver")" "$j")
    avcs=$(vm_avc_since "$ver" "$mark")
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc (stock stack): /'
    vm_check "selinux: stock stack: the login is adopted into job $j" _vm_eq "$got" "job J"
    vm_check "selinux: stock stack: the only sshd_t AVC is pam_keyinit's keyring search" \
        bash -c "[[ -z \$(grep '^sshd_t ' <<<\"\$1\" | grep -vE '$VM_SE_KEYINIT_AVC') ]]" _ "$avcs"
    VM_SE_JOB=$j
}

# adopt_via=cgroup: sshd_t writes cgroup.procs itself, which only the
# pam_adopt_cgroup_fallback boolean grants. Off: denied with the AVC and
# the module's adopt_failed; on: adopted via cgroup, no sshd_t AVC.
vm_se_cgroup_boolean() {
    local ver=$1 j=${VM_SE_JOB:-} mark out got d avcs
    [[ -n $j ]] || { vm_fail "cgroup boolean: no job from the keyinit control"; return 0; }
    vm_root "$ver" "setsebool pam_adopt_cgroup_fallback off && vm-pam ours adopt_via=cgroup"
    mark=$(vm_mark "$ver")
    out=$(vm_login_raw "$ver" --job "$j")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc (boolean off): /'
    vm_check "selinux: adopt_via=cgroup, pam_adopt_cgroup_fallback off: denied, reason adopt_failed (${d:-none})" \
        _vm_eq "$(cut -d' ' -f1,3 <<<"$d")" "deny adopt_failed"
    vm_check "selinux: adopt_via=cgroup, boolean off: sshd_t denied the write to cgroup.procs" \
        _vm_has '^sshd_t -> cgroup_t:file \{ (append|write) \}.*name=cgroup.procs' "$avcs"
    vm_root "$ver" "setsebool pam_adopt_cgroup_fallback on"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j")
    out=$(vm_journal_since "$ver" "$mark" | grep -oE 'adopted into job [0-9]+ via [a-z]+' | tail -n1)
    avcs=$(vm_avc_since "$ver" "$mark")
    vm_root "$ver" "setsebool pam_adopt_cgroup_fallback off && vm-pam ours"
    vm_check "selinux: adopt_via=cgroup, boolean on: adopted into job $j via cgroup ($got; $out)" \
        _vm_eq "$got|$out" "job J|adopted into job $j via cgroup"
    vm_check "selinux: adopt_via=cgroup, boolean on: no sshd_t AVC" \
        bash -c "[[ -z \$(grep '^sshd_t ' <<<\"\$1\" | grep -vE '$VM_SE_KEYINIT_AVC') ]]" _ "$avcs"
    vm_root "$ver" "scancel $j"
    vm_cancel_all "$ver" || vm_fail "cgroup boolean: cleanup"
}

# The hooks' domain, from the journal since MARK: journald records the
# sender's context (_SELINUX_CONTEXT) with every line the hooks log.
vm_se_hooks_domain() { # VER MARK
    local ver=$1 mark=$2 lines
    lines=$(vm_root "$ver" "journalctl -q --after-cursor='$mark' -o json --output-fields=_SELINUX_CONTEXT,SYSLOG_IDENTIFIER,MESSAGE SYSLOG_IDENTIFIER=adopt-prolog SYSLOG_IDENTIFIER=adopt-epilog SYSLOG_IDENTIFIER=adopt-taskprolog" |
        python3 -c 'import json, sys
for l in sys.stdin:
    d = json.loads(l)
    m = d.get("MESSAGE")
    if isinstance(m, list): m = bytes(m).decode(errors="replace")
    print(d.get("SYSLOG_IDENTIFIER"), d.get("_SELINUX_CONTEXT", "-").split(":")[2] if ":" in d.get("_SELINUX_CONTEXT", "") else "-", m)')
    printf '%s\n' "$lines" | awk '{print $1, $2}' | sort | uniq -c | sed 's/^ */       hooks: /'
    vm_check "selinux: the Prolog ran in pam_adopt_hook_t and created /run/user/$VM_UID" \
        _vm_has "^adopt-prolog pam_adopt_hook_t .*created /run/user/$VM_UID" "$lines"
    vm_check "selinux: the Epilog ran in pam_adopt_hook_t and removed /run/user/$VM_UID" \
        _vm_has "^adopt-epilog pam_adopt_hook_t .*removed /run/user/$VM_UID" "$lines"
    vm_check "selinux: no Prolog or Epilog line from another domain" \
        bash -c "[[ -z \$(grep -E '^adopt-(prolog|epilog) ' <<<\"\$1\" | grep -v ' pam_adopt_hook_t ') ]]" _ "$lines"
    # With pam_systemd kept, logind mounts a tmpfs on /run/user/UID; the
    # last Epilog's umount of it is a sys_admin the hooks' domain does not
    # get (README: unmounting is not covered), and logind removes the dir
    # itself. That one record is shown, not counted; any other is.
    local logind='^(pam systemd kept[^:]*|after the last scenario[^:]*): pam_adopt_hook_t -> pam_adopt_hook_t:capability \{ sys_admin \} comm=adopt-epilog'
    printf '%s\n' "${VM_AVC_SEEN[@]}" | grep -E "$logind" | sed 's/^/       hooks, logind-owned runtime dir: /' || true
    lines=$(printf '%s\n' "${VM_AVC_SEEN[@]}" | grep -E 'pam_adopt_hook_t -> ' | grep -vE "$logind" || true)
    vm_check "selinux: no pam_adopt_hook_t AVC during the scenarios (but the umount of logind's tmpfs)" _vm_eq "$lines" ""
}

# 5b. pam_adopt_ns: job_container/tmpfs gives the job a private /tmp in a
# mount namespace of its own; with join_container=true (the default) the
# login is setns'd into it on fds the extern stepd passes. Last, because
# it restarts Slurm with the plugin on.
vm_se_namespace() {
    local ver=$1 j mark out avcs sshd
    echo "--- job_container/tmpfs, join_container=true, pam_adopt_ns loaded"
    vm_root "$ver" "vm-pam ours"
    vm_cancel_all "$ver" || { vm_fail "namespace: could not clear old jobs"; return 0; }
    vm_root "$ver" "install -d -m 0755 /var/lib/slurm/jc &&
        printf 'AutoBasePath=true\nBasePath=/var/lib/slurm/jc\n' >/etc/slurm/job_container.conf &&
        { grep -q '^JobContainerType=' /etc/slurm/slurm.conf || echo JobContainerType=job_container/tmpfs >>/etc/slurm/slurm.conf; } &&
        systemctl restart slurmctld slurmd" || { vm_fail "namespace: configuring job_container/tmpfs"; return 0; }
    vm_wait_slurm "$ver" 120 || { vm_fail "namespace: Slurm not idle after the restart"; return 0; }
    j=$(vm_root "$ver" "cd /tmp && runuser -u $VM_USER -- sbatch --parsable --output=/dev/null -N1 -n1 --wrap 'echo job-private-\$SLURM_JOB_ID >/tmp/vm-ns-marker; sleep 900'" | cut -d';' -f1)
    if [[ -z $j ]] || ! vm_wait_job "$ver" "$j"; then
        vm_fail "namespace: job under job_container/tmpfs did not start"
        return 0
    fi
    _vm_wait 30 bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm 'ls /var/lib/slurm/jc/$j/.$j/vm-ns-marker' >/dev/null 2>&1" || true
    vm_check "namespace: the job's /tmp is private (no marker in the node's /tmp)" \
        bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm '! test -e /tmp/vm-ns-marker'"
    mark=$(vm_mark "$ver")
    out=$(vm_root "$ver" "cd /tmp && timeout 60 runuser -u $VM_USER -- ssh -o LogLevel=INFO 127.0.0.1 'cat /tmp/vm-ns-marker; sed -n s/^0:://p /proc/self/cgroup' 2>&1 </dev/null; echo rc=\$?")
    avcs=$(vm_avc_since "$ver" "$mark")
    printf '%s\n' "$out" | sed 's/^/       login: /'
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc: /'
    if ! grep -qx "job-private-$j" <<<"$out"; then
        # refpolicy does not audit some of what setns needs: once more with
        # the dontaudit rules off, to name what was refused.
        mark=$(vm_mark "$ver")
        vm_root "$ver" "semodule -DB && cd /tmp && timeout 60 runuser -u $VM_USER -- ssh 127.0.0.1 true </dev/null >/dev/null 2>&1; semodule -B" || true
        vm_avc_since "$ver" "$mark" | grep -E '^sshd_t ' | sed 's/^/       avc (dontaudit off): /' || true
    fi
    vm_check "namespace: the login sees job $j's private /tmp (joined its mount namespace)" \
        _vm_has "^job-private-$j\$" "$out"
    vm_check "namespace: the login is in job $j's step_extern/user/task_special" \
        _vm_has "/job_$j/step_extern/user/task_special\$" "$out"
    sshd=$(grep -E '^sshd_t ' <<<"$avcs" | grep -vE "$VM_SE_KEYINIT_AVC" || true)
    vm_check "namespace: no sshd_t AVC while joining the job's namespace" _vm_eq "$sshd" ""
    out=$(vm_root "$ver" "adoptctl doctor; echo rc=\$?")
    vm_check "namespace: adoptctl doctor: job_container/tmpfs on an enforcing node with pam_adopt_ns loaded" \
        _vm_has '^ok +namespace .*pam_adopt_ns is loaded' "$out"
    vm_se_namespace_without_module "$ver" "$j"
    vm_root "$ver" "scancel $j"
    vm_cancel_all "$ver" || vm_fail "namespace: cleanup"
}

# The same job without pam_adopt_ns (last stage: the module is not put
# back): doctor must fail naming it, and the login must follow
# action_adopt_failure (deny) with sshd_t's denial on the passed fd.
vm_se_namespace_without_module() { # VER JOB
    local ver=$1 j=$2 t0=$SECONDS out mark d avcs
    vm_root "$ver" "semodule -r pam_adopt_ns 2>&1 | grep -v 'user sddm not in password file'" ||
        { vm_fail "namespace: semodule -r pam_adopt_ns"; return 0; }
    echo "       semodule -r pam_adopt_ns: $((SECONDS - t0)) s"
    out=$(vm_root "$ver" "adoptctl doctor; echo rc=\$?")
    grep -E '^[a-z]+ +namespace' <<<"$out" | sed 's/^/       doctor: /'
    vm_check "namespace: without pam_adopt_ns, adoptctl doctor fails the namespace check naming the module" \
        _vm_has '^fail +namespace .*job_container/tmpfs.*pam_adopt_ns' "$out"
    vm_check "namespace: without pam_adopt_ns, adoptctl doctor exits 2" _vm_has '^rc=2$' "$out"
    mark=$(vm_mark "$ver")
    out=$(vm_login_raw "$ver")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    printf '%s\n' "${avcs:-none}" | sed 's/^/       avc (no pam_adopt_ns): /'
    vm_check "namespace: without pam_adopt_ns, the login is denied, reason adopt_failed (${d:-none})" \
        _vm_eq "$(cut -d' ' -f1,3 <<<"$d")" "deny adopt_failed"
}

# sock_diag: the module finds the caller's connection with one
# NETLINK_SOCK_DIAG request (self:netlink_tcpdiag_socket, callerid
# boolean). Debian builds inet_diag and tcp_diag as modules, and the
# request would autoload them: refpolicy denies sshd_t that
# (kernel_t:system module_request), and the policy does not grant it. The
# module then reads /proc/net/tcp{,6} instead and gets the same answer.
# With tcp_diag loaded at boot (what the README tells sites) the request
# works and raises nothing.
vm_se_sockdiag() {
    local ver=$1 j k mark got d avcs sshd
    echo "--- the caller's connection by sock_diag, without and with tcp_diag loaded"
    vm_root "$ver" "vm-pam ours"
    vm_cancel_all "$ver" || { vm_fail "sock_diag: could not clear old jobs"; return 0; }
    if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j" || ! k=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$k"; then
        vm_fail "sock_diag: jobs J and K did not start"
        return 0
    fi
    got=$(vm_root "$ver" "grep -E '^(inet_diag|tcp_diag) ' /proc/modules | cut -d' ' -f1 | tr '\n' ' '")
    vm_check "sock_diag: inet_diag/tcp_diag not loaded at first (${got:-none})" _vm_eq "$got" ""
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    sshd=$(grep -E '^sshd_t ' <<<"$avcs" | grep -vE "$VM_SE_KEYINIT_AVC" || true)
    printf '%s\n' "${sshd:-none}" | sed 's/^/       avc (no tcp_diag): /'
    vm_check "sock_diag: without tcp_diag, the login from J's task still lands in J by callerid (${d:-none})" \
        _vm_eq "$got|$(cut -d' ' -f1-3 <<<"$d")" "job J|adopt $j callerid_match"
    vm_check "sock_diag: without tcp_diag, the one sshd_t AVC is the module autoload" \
        _vm_eq "$(sed -E 's/ \(x[0-9]+\)$//' <<<"$sshd" | sort -u)" "sshd_t -> kernel_t:system { module_request } comm=sshd"
    vm_root "$ver" "modprobe tcp_diag" || vm_fail "sock_diag: modprobe tcp_diag"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    sshd=$(grep -E '^sshd_t ' <<<"$avcs" | grep -vE "$VM_SE_KEYINIT_AVC" || true)
    printf '%s\n' "${sshd:-none}" | sed 's/^/       avc (tcp_diag loaded): /'
    vm_check "sock_diag: with tcp_diag loaded, the login from J's task lands in J by callerid (${d:-none})" \
        _vm_eq "$got|$(cut -d' ' -f1-3 <<<"$d")" "job J|adopt $j callerid_match"
    vm_check "sock_diag: with tcp_diag loaded, no sshd_t AVC" _vm_eq "$sshd" ""
    vm_se_callerid_boolean "$ver" "$j" "$k"
    vm_root "$ver" "scancel $j $k"
    vm_cancel_all "$ver" || vm_fail "sock_diag: cleanup"
}

# The pam_adopt_callerid boolean (on by default) is the callerid RPC's
# grant: munged's socket and SlurmdPort. Off, the same login from J's task
# cannot ask, the RPC is logged failed, and action_unknown=newest (the
# default) puts it in K, the newer job; the denial names munged's socket
# or the port. On again, J by callerid.
vm_se_callerid_boolean() { # VER J K
    local ver=$1 j=$2 k=$3 mark got d avcs sshd
    vm_root "$ver" "setsebool pam_adopt_callerid off" || vm_fail "selinux: setsebool pam_adopt_callerid off"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    avcs=$(vm_avc_since "$ver" "$mark")
    sshd=$(grep -E '^sshd_t ' <<<"$avcs" | grep -vE "$VM_SE_KEYINIT_AVC" || true)
    vm_root "$ver" "setsebool pam_adopt_callerid on" || vm_fail "selinux: setsebool pam_adopt_callerid on"
    printf '%s\n' "${sshd:-none}" | sed 's/^/       avc (pam_adopt_callerid off): /'
    vm_check "callerid boolean off: the login from J's task cannot ask and lands in K, the newest (${d:-none})" \
        _vm_eq "$got|$(cut -d' ' -f1-4 <<<"$d")" "job K|adopt $k newest_job failed"
    vm_check "callerid boolean off: sshd_t was denied munged's socket or SlurmdPort" \
        _vm_has '^sshd_t -> (pam_adopt_munge_runtime_t|initrc_t|pam_adopt_slurmd_port_t):(dir|sock_file|unix_stream_socket|tcp_socket) \{ (search|write|connectto|name_connect) \}' "$sshd"
    mark=$(vm_mark "$ver")
    got=$(_vm_where "$(vm_login_raw "$ver" --job "$j")" "$j" "$k")
    d=$(vm_decision "$ver" "$mark")
    vm_check "callerid boolean on again: the login from J's task lands in J by callerid (${d:-none})" \
        _vm_eq "$got|$(cut -d' ' -f1-3 <<<"$d")" "job J|adopt $j callerid_match"
}

# 5c. reap_strays (adopt.toml) in the confined Epilog: the user's process
# outside any job (started here by root's runuser, so unconfined_t, a user
# domain) is killed at the user's last job only with the
# pam_adopt_hooks_reap_strays boolean on; off, the kill is denied.
_vm_epilog_line() { # VER MARK JOB: the Epilog's verdict line for JOB
    vm_journal_since "$1" "$2" | grep -E "^job=$3 .*verdict=" | tail -n1 | grep .
}
vm_se_reap_strays() {
    local ver=$1 j mark stray line avcs hook b
    echo "--- reap_strays in pam_adopt_hook_t, boolean off and on"
    vm_root "$ver" "vm-pam ours"
    vm_cancel_all "$ver" || { vm_fail "reap_strays: could not clear old jobs"; return 0; }
    vm_root "$ver" "cp /etc/slurm/adopt.toml /tmp/adopt.toml.orig && printf '[reap_strays]\nenabled = true\ndry_run = false\n' >/etc/slurm/adopt.toml && setsebool pam_adopt_hooks_reap_strays off"
    vm_root "$ver" "cd /tmp; setsid runuser -u $VM_USER -- sleep 907 </dev/null >/dev/null 2>&1 &"
    _vm_wait 10 _vm_session_pid "$ver" "sleep 907" >/dev/null
    stray=$(_vm_session_pid "$ver" "sleep 907")
    echo "       stray: pid ${stray:-none} $(vm_root "$ver" "ps -o label= -p ${stray:-0}")"
    for b in off on; do
        vm_root "$ver" "setsebool pam_adopt_hooks_reap_strays $b"
        if ! j=$(vm_submit "$ver") || ! vm_wait_job "$ver" "$j"; then
            vm_fail "reap_strays: job did not start"
            break
        fi
        mark=$(vm_mark "$ver")
        vm_root "$ver" "scancel $j"
        _vm_wait 60 _vm_epilog_line "$ver" "$mark" "$j" >/dev/null || true
        sleep 1
        line=$(_vm_epilog_line "$ver" "$mark" "$j" || true)
        avcs=$(vm_avc_since "$ver" "$mark")
        hook=$(grep -E '^pam_adopt_hook_t ' <<<"$avcs" || true)
        echo "       epilog (boolean $b): ${line:-none}"
        printf '%s\n' "${hook:-none}" | grep -vE 'kernel_t:dir \{ search \}' | sed "s/^/       avc (boolean $b): /"
        echo "       avc (boolean $b): $(grep -cE 'kernel_t:dir \{ search \}' <<<"$hook") more on kernel threads' /proc dirs"
        if [[ $b == off ]]; then
            vm_check "reap_strays, boolean off: the stray ${stray:-none} lives" \
                bash -c "ssh -F '$(vm_run_dir "$ver")/ssh_config' vm kill -0 ${stray:-0}"
            vm_check "reap_strays, boolean off: the confined Epilog was denied the user's process" \
                _vm_has '^pam_adopt_hook_t -> (pam_adopt_hook_t:capability \{ kill \}|unconfined_t:(process|dir|file|lnk_file) )' "$hook"
        else
            vm_check "reap_strays, boolean on: the last Epilog killed the stray ${stray:-none}" \
                _vm_has "killed [0-9]+ of [0-9]+ strays:.* ${stray:-none}\(sleep\)" "$line"
            vm_check "reap_strays, boolean on: the stray is gone" \
                _vm_wait 10 bash -c "! ssh -F '$(vm_run_dir "$ver")/ssh_config' vm kill -0 ${stray:-0} 2>/dev/null"
            vm_check "reap_strays, boolean on: no pam_adopt_hook_t AVC (other domains' /proc not audited)" _vm_eq "$hook" ""
        fi
        _vm_wait 60 _vm_no_user_jobs "$ver" || true
    done
    vm_root "$ver" "setsebool pam_adopt_hooks_reap_strays off; cp /tmp/adopt.toml.orig /etc/slurm/adopt.toml; pkill -u $VM_UID -x sleep" || true
    vm_cancel_all "$ver" || vm_fail "reap_strays: cleanup"
}

vm_se_controls() { vm_se_keyinit_control "$1"; vm_se_cgroup_boolean "$1"; vm_se_sockdiag "$1"; }

vm_se_summary() {
    echo
    echo "AVC denials, negative control (no project module):"
    printf '%s\n' "${VM_SE_NEGATIVE_AVCS:-none}" | sed 's/^/  /'
    echo "AVC denials during the scenarios with pam_adopt loaded:"
    if ((${#VM_AVC_SEEN[@]})); then printf '  %s\n' "${VM_AVC_SEEN[@]}"; else echo "  none"; fi
    echo
}
