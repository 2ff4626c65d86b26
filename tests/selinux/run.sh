#!/usr/bin/env bash
# The SELinux policy test: builds every module in selinux/ with Debian's
# devel Makefile, loads them into a private policy store made from
# bookworm's selinux-policy-default (under a temp root: no SELinux kernel
# needed, the host's own /etc/selinux and /var/lib/selinux are not used),
# and checks the result with tests/selinux/assert.sh. Then the negative
# tests: a pam_adopt without one needed rule, and one with a broader rule,
# must both fail the same checks.
# Run as root (apt-get, semodule). Closing line: "N passed, N failed".
set -euo pipefail

t0=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
src=$repo/selinux

if [[ $(id -u) -ne 0 ]]; then
    echo "tests/selinux/run.sh: must run as root (installs packages, runs semodule)" >&2
    exit 1
fi

# ------------------------------------------------------------ packages

# selinux-policy-default itself is only downloaded and unpacked into the
# private root: installing it would build a store under /var/lib/selinux.
tools=(checkpolicy policycoreutils semodule-utils selinux-utils setools selinux-policy-dev make gawk m4)
missing=()
for p in "${tools[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=0
apt_update_once() {
    if ((updated == 0)); then
        apt-get update -q >/dev/null
        updated=1
    fi
}
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/slurm-adopt-selinux.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/deb"
if ! (cd "$work/deb" && apt-get download -q selinux-policy-default >/dev/null 2>&1); then
    apt_update_once
    (cd "$work/deb" && apt-get download -q selinux-policy-default >/dev/null 2>&1) || {
        echo "tests/selinux/run.sh: apt-get download selinux-policy-default failed; check the Debian mirror in /etc/apt/sources.list" >&2
        exit 1
    }
fi
deb=$(ls "$work"/deb/selinux-policy-default_*.deb)
echo "== base policy: $(basename "$deb")"

# ------------------------------------------------------------ the store

# make_root DIR: a root with bookworm's default policy built the way the
# package's postinst builds it (same priority, same modules disabled).
make_root() {
    local root=$1 m
    mkdir -p "$root"
    dpkg-deb -x "$deb" "$root"
    printf 'SELINUX=permissive\nSELINUXTYPE=default\n' >"$root/etc/selinux/config"
    printf 'module-store = direct\nexpand-check = 0\n' >"$root/etc/selinux/semanage.conf"
    local -a args=()
    while read -r m; do
        args+=("-i" "$root/usr/share/selinux/default/$m.pp.bz2")
    done <"$root/usr/share/selinux/default/.modules"
    for m in amtu bugzilla cobbler condor cyphesis git ksmtuned likewise livecd nessus numad oddjob openca soundserver thunderbird updfstab usernetctl; do
        args+=("-d" "$m")
    done
    semodule -p "$root" -s default -X 100 -n "${args[@]}" 2> >(grep -v 'not in password file' >&2)
}

# load ROOT SNAPSHOT FILE...: load modules into ROOT's store, keep a copy
# of the binary policy it then builds.
load() {
    local root=$1 snap=$2; shift 2
    local -a args=()
    local f
    for f in "$@"; do args+=("-i" "$f"); done
    semodule -p "$root" -s default -n "${args[@]}" 2> >(grep -v 'not in password file' >&2)
    cp "$root"/etc/selinux/default/policy/policy.* "$snap"
}

# build DIR: compile every module in DIR with the distribution's Makefile.
build() {
    make -s -C "$1" >"$1/build.log" 2>&1 || { cat "$1/build.log" >&2; return 1; }
    local m
    for m in pam_adopt pam_adopt_ns pam_adopt_hooks; do
        [[ -s $1/$m.pp ]] || { echo "build: $1/$m.pp not made" >&2; cat "$1/build.log" >&2; return 1; }
    done
}

t_store=$SECONDS
echo "== building the private store (bookworm's default policy)"
make_root "$work/root"
cp "$work"/root/etc/selinux/default/policy/policy.* "$work/base.pol"
cp -a "$work/root" "$work/root-base"
echo "   $((SECONDS - t_store))s"

total_passed=0 total_failed=0
# check NAME CMD...: run an assertion script; add its own tally.
check() {
    local name=$1; shift
    local log=$work/$name.log rc=0
    "$@" >"$log" 2>&1 || rc=$?
    cat "$log"
    local p f
    read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log" | tail -1)
    total_passed=$((total_passed + ${p:-0}))
    total_failed=$((total_failed + ${f:-0}))
    if [[ $rc -ne 0 && ${f:-0} -eq 0 ]]; then
        echo "FAIL $name exited $rc without a tally"
        total_failed=$((total_failed + 1))
    fi
}
# expect_failure NAME CMD...: the checks must catch the broken module.
expect_failure() {
    local name=$1; shift
    local log=$work/$name.log
    if "$@" >"$log" 2>&1; then
        echo "FAIL $name: the assertions passed on a broken module"
        sed 's/^/       /' "$log"
        total_failed=$((total_failed + 1))
    else
        echo "ok   $name: the assertions failed on it, as they must:"
        grep '^FAIL' "$log" | head -5 | sed 's/^/       /'
        total_passed=$((total_passed + 1))
    fi
}

# ------------------------------------------------------------ the modules

echo "== build selinux/ with /usr/share/selinux/devel/Makefile"
cp -r "$src" "$work/src"
rm -rf "$work/src/tmp" "$work"/src/*.pp
build "$work/src"
stat -c "   %n: %s bytes" "$work"/src/*.pp

echo "== load pam_adopt + pam_adopt_port.cil"
load "$work/root" "$work/p1.pol" "$work/src/pam_adopt.pp" "$work/src/pam_adopt_port.cil"
echo "== load pam_adopt_ns"
load "$work/root" "$work/p2.pol" "$work/src/pam_adopt_ns.pp"
echo "== load pam_adopt_hooks"
load "$work/root" "$work/p3.pol" "$work/src/pam_adopt_hooks.pp"
fc=$work/root/etc/selinux/default/contexts/files/file_contexts
semodule -p "$work/root" -s default -l | grep pam_adopt | sed 's/^/   loaded: /'

echo "== assertions: pam_adopt"
check pam_adopt "$here/assert.sh" pam_adopt "$work/base.pol" "$work/p1.pol" "$fc"
echo "== assertions: pam_adopt_ns"
check pam_adopt_ns "$here/assert.sh" pam_adopt_ns "$work/p1.pol" "$work/p2.pol" "$fc"
echo "== assertions: pam_adopt_hooks"
check pam_adopt_hooks "$here/assert.sh" pam_adopt_hooks "$work/p2.pol" "$work/p3.pol" "$fc"

# What the sources say about themselves: no wildcard or complement sets.
if grep -n -E '^\s*(allow|dontaudit|auditallow)\b.*(\*|~)' "$src"/*.te "$src"/*.if; then
    echo "FAIL a rule in selinux/ uses * or ~"
    total_failed=$((total_failed + 1))
else
    echo "ok   no rule in selinux/ uses * or ~"
    total_passed=$((total_passed + 1))
fi

# ------------------------------------------------------------ negatives

# negative NAME SED: pam_adopt with SED applied to its .te must fail.
negative() {
    local name=$1 expr=$2 dir=$work/neg-$1 root=$work/root-$1
    cp -r "$src" "$dir"
    rm -rf "$dir/tmp" "$dir"/*.pp
    sed -i -e "$expr" "$dir/pam_adopt.te"
    if cmp -s "$src/pam_adopt.te" "$dir/pam_adopt.te"; then
        echo "FAIL negative $name: the sed changed nothing; fix it in tests/selinux/run.sh"
        total_failed=$((total_failed + 1))
        return
    fi
    build "$dir"
    cp -a "$work/root-base" "$root"
    load "$root" "$work/$name.pol" "$dir/pam_adopt.pp" "$dir/pam_adopt_port.cil"
    # REGEN must not rewrite the expected rules from a broken module.
    expect_failure "negative: $name" env -u REGEN "$here/assert.sh" pam_adopt "$work/base.pol" "$work/$name.pol" \
        "$root/etc/selinux/default/contexts/files/file_contexts"
}

echo "== negative: pam_adopt without the stepd connectto rule"
negative missing-connectto '/^allow pam_adopt_stepd_client_type pam_adopt_stepd_domain_type:unix_stream_socket connectto;$/d'
echo "== negative: pam_adopt writing every sock_file in /var/spool"
negative broader-sockfile 's/^files_search_spool(pam_adopt_stepd_client_type)$/&\
gen_require(`type var_spool_t;'"'"')\
allow pam_adopt_stepd_client_type var_spool_t:sock_file { getattr write };/'

echo "== took $((SECONDS - t0))s"
echo "$total_passed passed, $total_failed failed"
((total_failed == 0))
