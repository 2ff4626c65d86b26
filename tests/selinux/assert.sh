#!/usr/bin/env bash
# Checks what one module added to a binary policy, with sesearch/seinfo:
#   assert.sh MODULE BEFORE_POLICY AFTER_POLICY FILE_CONTEXTS
# BEFORE is the policy without MODULE, AFTER the same store with it loaded.
#   1. every rule the toolkit needs is there (expanded to the real domains:
#      sshd_t, initrc_t, the hook domain), unconditional unless a boolean
#      is named;
#   2. nothing else was added: the added rules, one permission a line, equal
#      expected/MODULE.rules exactly;
#   3. nothing broad: no added rule holds every permission of its class, no
#      domain became unconfined, the new types carry only ordinary
#      attributes;
#   4. file_contexts gives the paths the labels MODULE.fc promises.
# Prints "N passed, N failed"; exits 1 on any failure.
# REGEN=1 rewrites expected/MODULE.rules from AFTER (review the diff!).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $# -ne 4 ]]; then
    echo "usage: $0 MODULE BEFORE_POLICY AFTER_POLICY FILE_CONTEXTS" >&2
    exit 2
fi
module=$1 before=$2 after=$3 fc=$4
for f in "$before" "$after" "$fc"; do
    [[ -r $f ]] || { echo "assert.sh: cannot read $f" >&2; exit 2; }
done
expected=$here/expected/$module.rules
tmp=$(mktemp -d /tmp/selinux-assert.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

# ---------------------------------------------------------------- helpers

# One line per permission, "allow S T:C perm [ bool ]:State" or a
# type_transition line as is, so a rule merged into an existing one in the
# binary policy shows only the permissions that are new.
atoms() {
    sesearch "$1" -A -T | awk '
        /^allow / {
            cond = ""
            if (match($0, / \[ .*$/)) { cond = substr($0, RSTART); $0 = substr($0, 1, RSTART - 1) }
            head = $1 " " $2 " " $3
            rest = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", rest); sub(/;$/, "", rest)
            gsub(/[{}]/, "", rest)
            n = split(rest, p, " ")
            for (i = 1; i <= n; i++) if (p[i] != "") print head " " p[i] cond
            next
        }
        { print }' | sort -u
}

# The rule, transition, attribute, boolean, role and port questions go
# to query.py in one batch (one policy load instead of one per sesearch).
# rule SOURCE TARGET CLASS PERM [BOOL]: an allow rule giving PERM, found
# through the attributes SOURCE and TARGET are in; unconditional unless
# BOOL is named, then under that boolean.
rule() { echo "allow $*" >>"$tmp/questions"; }
# trans SOURCE TARGET CLASS DEFAULT: a type_transition giving DEFAULT.
trans() { echo "type_transition $*" >>"$tmp/questions"; }
# members ATTRIBUTE TYPE...: ATTRIBUTE holds exactly these types.
members() { echo "members $*" >>"$tmp/questions"; }
bool_default() { echo "bool $*" >>"$tmp/questions"; }
role() { echo "role $*" >>"$tmp/questions"; }
portcon() { echo "portcon $*" >>"$tmp/questions"; }

# label MODE PATH TYPE: what file_contexts gives PATH created as MODE.
label() {
    local m=$1 path=$2 want=$3 got
    got=$(matchpathcon -n -m "$m" -f "$fc" "$path" 2>&1 | awk -F: '{ print $3 }') || true
    if [[ $got == "$want" ]]; then
        pass "label $m $path = $want"
    else
        fail "label $m $path = ${got:-<none>}, want $want"
    fi
}

# ------------------------------------------------ 1. what must be there

case $module in
pam_adopt)
    # The spool scan and the stepd conversation.
    rule sshd_t var_spool_t dir search
    rule sshd_t pam_adopt_slurmd_spool_t dir search
    rule sshd_t pam_adopt_slurmd_spool_t dir read
    rule sshd_t pam_adopt_slurmd_spool_t dir open
    rule sshd_t pam_adopt_slurmd_spool_t dir getattr
    rule sshd_t pam_adopt_stepd_sock_t sock_file write
    rule sshd_t pam_adopt_stepd_sock_t sock_file getattr
    rule sshd_t initrc_t unix_stream_socket connectto
    # SO_PEERCRED on the connected socket, before a byte goes to the
    # stepd: getopt on sshd's own socket, which the base policy gives.
    rule sshd_t sshd_t unix_stream_socket getopt
    # Debian's SlurmdSpoolDir is under /var/lib.
    rule sshd_t var_lib_t dir search
    # callerid: munged's socket and the source node's slurmd.
    rule sshd_t var_run_t dir search
    rule sshd_t pam_adopt_munge_runtime_t dir search pam_adopt_callerid
    rule sshd_t pam_adopt_munge_runtime_t sock_file write pam_adopt_callerid
    rule sshd_t initrc_t unix_stream_socket connectto pam_adopt_callerid
    rule sshd_t pam_adopt_slurmd_port_t tcp_socket name_connect pam_adopt_callerid
    rule sshd_t cgroup_t file write pam_adopt_cgroup_fallback
    # The stepd's socket is born with its type; munged keeps its own.
    trans initrc_t pam_adopt_slurmd_spool_t sock_file pam_adopt_stepd_sock_t
    rule initrc_t pam_adopt_stepd_sock_t sock_file create
    rule initrc_t pam_adopt_munge_runtime_t sock_file create
    portcon tcp 6818 pam_adopt_slurmd_port_t
    bool_default pam_adopt_callerid true
    bool_default pam_adopt_cgroup_fallback false
    members pam_adopt_login_domain_type sshd_t
    members pam_adopt_stepd_client_type sshd_t
    members pam_adopt_stepd_domain_type initrc_t
    members pam_adopt_munged_domain_type initrc_t
    ;;
pam_adopt_ns)
    rule sshd_t initrc_t fd use
    rule sshd_t nsfs_t file read
    rule sshd_t sshd_t capability sys_admin
    rule sshd_t sshd_t capability sys_chroot
    rule sshd_t sshd_t cap_userns sys_admin pam_adopt_join_userns
    bool_default pam_adopt_join_userns false
    ;;
pam_adopt_hooks)
    # slurmd runs the hooks: into their domain on exec.
    trans initrc_t pam_adopt_hook_exec_t process pam_adopt_hook_t
    rule initrc_t pam_adopt_hook_exec_t file execute
    rule initrc_t pam_adopt_hook_t process transition
    rule pam_adopt_hook_t pam_adopt_hook_exec_t file entrypoint
    role system_r pam_adopt_hook_t
    # /run/user/UID: made as user_runtime_t, handed to the user, emptied.
    trans pam_adopt_hook_t user_runtime_root_t dir user_runtime_t
    rule pam_adopt_hook_t user_runtime_root_t dir add_name
    rule pam_adopt_hook_t user_runtime_t dir create
    rule pam_adopt_hook_t user_runtime_t dir setattr
    rule pam_adopt_hook_t user_runtime_t dir rmdir
    rule pam_adopt_hook_t user_runtime_t file unlink
    rule pam_adopt_hook_t user_runtime_t sock_file unlink
    rule pam_adopt_hook_t pam_adopt_hook_t capability chown
    rule pam_adopt_hook_t pam_adopt_hook_t capability fowner
    # The linger marker.
    trans pam_adopt_hook_t init_var_lib_t dir systemd_logind_var_lib_t
    rule pam_adopt_hook_t systemd_logind_var_lib_t dir add_name
    rule pam_adopt_hook_t systemd_logind_var_lib_t file create
    rule pam_adopt_hook_t systemd_logind_var_lib_t file unlink
    # The epilog's lock and its stepd questions.
    trans pam_adopt_hook_t var_run_t dir pam_adopt_hook_runtime_t
    rule pam_adopt_hook_t pam_adopt_hook_runtime_t file create
    rule pam_adopt_hook_t pam_adopt_stepd_sock_t sock_file write
    rule pam_adopt_hook_t initrc_t unix_stream_socket connectto
    rule pam_adopt_hook_t pam_adopt_hook_t unix_stream_socket getopt
    rule pam_adopt_hook_t etc_t file read
    rule pam_adopt_hook_t user_t process sigkill pam_adopt_hooks_reap_strays
    rule pam_adopt_hook_t pam_adopt_hook_t capability kill pam_adopt_hooks_reap_strays
    rule pam_adopt_hook_t staff_t file read pam_adopt_hooks_reap_strays
    bool_default pam_adopt_hooks_reap_strays false
    members pam_adopt_stepd_client_type sshd_t pam_adopt_hook_t
    members pam_adopt_login_domain_type sshd_t
    ;;
*)
    echo "assert.sh: unknown module $module (pam_adopt, pam_adopt_ns, pam_adopt_hooks)" >&2
    exit 2
    ;;
esac

# Section 3's attribute question rides in the same batch.
# The new types may only carry these attributes (plus the module's own
# and the compiler's generated *_typeattr_N).
echo "newtypes $before domain nsswitch_domain entry_type exec_type file_type non_auth_file_type non_security_file_type pidfile port_type" >>"$tmp/questions"


rc=0
/usr/bin/python3 "$here/query.py" "$after" <"$tmp/questions" >"$tmp/answers" 2>"$tmp/query.err" || rc=$?
if ((rc > 1)) || [[ $(wc -l <"$tmp/answers") -ne $(wc -l <"$tmp/questions") ]]; then
    fail "query.py answered $(wc -l <"$tmp/answers") of $(wc -l <"$tmp/questions") questions (exit $rc): $(tail -3 "$tmp/query.err")"
fi
while read -r verdict rest; do
    case $verdict in
    ok) pass "$rest" ;;
    *) fail "$rest" ;;
    esac
done <"$tmp/answers"

# ------------------------------------------------ 2. nothing else added

atoms "$before" >"$tmp/before"
atoms "$after" >"$tmp/after"
comm -13 "$tmp/before" "$tmp/after" >"$tmp/added"
if [[ ${REGEN:-} == 1 ]]; then
    cp "$tmp/added" "$expected"
    echo "assert.sh: wrote $expected ($(wc -l <"$expected") lines); review it with git diff"
fi
if [[ ! -r $expected ]]; then
    fail "expected rules $expected missing (REGEN=1 writes it)"
else
    missing=$(comm -23 "$expected" "$tmp/added")
    extra=$(comm -13 "$expected" "$tmp/added")
    if [[ -z $missing ]]; then
        pass "all $(wc -l <"$expected") expected rule permissions were added"
    else
        fail "expected but not added:"; sed 's/^/       /' <<<"$missing"
    fi
    if [[ -z $extra ]]; then
        pass "no rule permission beyond expected/$module.rules"
    else
        fail "added beyond expected/$module.rules:"; sed 's/^/       /' <<<"$extra"
    fi
fi
removed=$(comm -23 "$tmp/before" "$tmp/after")
if [[ -z $removed ]]; then
    pass "no rule of the base policy was lost"
else
    fail "rules gone after loading $module:"; head -20 <<<"$removed" | sed 's/^/       /'
fi

# ------------------------------------------------ 3. nothing broad

# A rule holding every permission of its class is what '*' compiles to.
# Classes of one or two permissions are left out (there the full set is
# often just what is needed), and so are a domain's rules on its own
# sockets and keys; not its own capabilities or process permissions.
full=0
# perms_of CLASS: how many permissions CLASS has, its common's included.
perms_of() {
    local out common n
    out=$(seinfo "$after" --class "$1" -x 2>/dev/null)
    n=$(sed -n '/{/,/}/p' <<<"$out" | grep -c -E '^\s*[a-z0-9_]+\s*$' || true)
    common=$(awk '/^inherits / { print $2 }' <<<"$out")
    if [[ -n $common ]]; then
        n=$((n + $(seinfo "$after" --common "$common" -x 2>/dev/null | sed -n '/{/,/}/p' | grep -c -E '^\s*[a-z0-9_]+\s*$' || true)))
    fi
    echo "$n"
}
declare -A class_size=()
while IFS=$'\t' read -r key n; do
    cls=${key#* }; cls=${cls#*:}; cls=${cls%% *}
    read -r src tgt _ <<<"$key"
    if [[ $src == "${tgt%%:*}" && ! $cls =~ ^(cap|process) ]]; then
        continue
    fi
    [[ -n ${class_size[$cls]:-} ]] || class_size[$cls]=$(perms_of "$cls")
    if ((class_size[$cls] > 2 && n >= class_size[$cls])); then
        fail "every permission of class $cls: $key"
        full=1
    fi
done < <(awk '/^allow/ { k = $2 " " $3; for (i = 5; i <= NF; i++) k = k " " $i; c[k]++ }
              END { for (k in c) print k "\t" c[k] }' "$tmp/added")
((full)) || pass "no added rule grants every permission of its class"

for pol in before after; do
    file=${!pol}
    seinfo "$file" -a unconfined_domain_type -x 2>/dev/null | sed '1,2d' | awk '{ print $1 }' | sort >"$tmp/unconf.$pol"
done
if cmp -s "$tmp/unconf.before" "$tmp/unconf.after"; then
    pass "unconfined_domain_type has the same $(wc -l <"$tmp/unconf.after") members"
else
    fail "unconfined_domain_type changed:"; diff "$tmp/unconf.before" "$tmp/unconf.after" | sed 's/^/       /' || true
fi

# ------------------------------------------------ 4. file contexts

case $module in
pam_adopt)
    label dir /var/spool/slurmd pam_adopt_slurmd_spool_t
    label socket /var/spool/slurmd/n1_5.4294967292 pam_adopt_stepd_sock_t
    label socket /var/spool/slurmd/n1_7.0.1 pam_adopt_stepd_sock_t
    label file /var/spool/slurmd/job00005/slurm_script pam_adopt_slurmd_spool_t
    label file /var/spool/slurmd/cred_state pam_adopt_slurmd_spool_t
    label dir /var/lib/slurm/slurmd pam_adopt_slurmd_spool_t
    label socket /var/lib/slurm/slurmd/vm_2.4294967291 pam_adopt_stepd_sock_t
    label socket /var/spool/slurm/d/c1_9.4294967292 pam_adopt_stepd_sock_t
    label dir /run/munge pam_adopt_munge_runtime_t
    label socket /run/munge/munge.socket.2 pam_adopt_munge_runtime_t
    # Neighbours keep the base policy's labels.
    label dir /var/spool/slurmd.old var_spool_t
    label dir /var/spool/cron cron_spool_t
    ;;
pam_adopt_hooks)
    label file /usr/sbin/adopt-prolog pam_adopt_hook_exec_t
    label file /usr/libexec/slurm-adopt/adopt-epilog pam_adopt_hook_exec_t
    label file /usr/local/bin/adopt-epilog pam_adopt_hook_exec_t
    label dir /run/slurm-adopt pam_adopt_hook_runtime_t
    label file /usr/sbin/adopt-prologue bin_t
    # The TaskProlog runs as the user, in the stepd's domain: no transition.
    label file /usr/libexec/slurm-adopt/adopt-taskprolog bin_t
    label dir /var/lib/systemd/linger systemd_logind_var_lib_t
    ;;
esac

echo "$passed passed, $failed failed"
((failed == 0))
