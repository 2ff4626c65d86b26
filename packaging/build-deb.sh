#!/usr/bin/env bash
# Build the slurm-adopt Debian package from this tree, with no tool beyond
# dpkg-dev and help2man (both installed here if missing):
#   packaging/build-deb.sh              release build, then package
#   packaging/build-deb.sh --no-build   package the binaries already in
#                                       target/release
# Writes target/debian/slurm-adopt_<version>_<arch>.deb and prints its path
# on the last line. No maintainer script: installing the package changes no
# PAM file, no slurm.conf and no SELinux policy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"

build=yes
case "${1:-}" in
    "") ;;
    --no-build) build=no ;;
    *) echo "build-deb.sh: unknown argument '$1' (usage: build-deb.sh [--no-build])" >&2; exit 2 ;;
esac

die() { echo "build-deb.sh: $*" >&2; exit 1; }

# --------------------------------------------------------------- tools
# libpam to link against, munge for the tests, and the pinned toolchain.
"$repo/tests/scripts/install-build-deps.sh"
need_pkgs=()
command -v dpkg-shlibdeps >/dev/null || need_pkgs+=(dpkg-dev)
command -v help2man >/dev/null || need_pkgs+=(help2man)
command -v strip >/dev/null || need_pkgs+=(binutils)
if [[ -d selinux && ! -f /usr/share/selinux/devel/Makefile ]]; then need_pkgs+=(selinux-policy-dev); fi
if ((${#need_pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing ${need_pkgs[*]}; run as root or: apt-get install ${need_pkgs[*]}"
    echo "build-deb.sh: installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null; } ||
        die "apt-get install ${need_pkgs[*]} failed"
fi

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[[ -n $version ]] || die "no version in [workspace.package] of $repo/Cargo.toml"
debversion="$version-1"
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
[[ -n $multiarch ]] || die "cannot find the multiarch triplet (dpkg-architecture, gcc -print-multiarch)"

# --------------------------------------------------------------- binaries
if [[ $build == yes ]]; then
    cargo build --release --quiet --workspace
fi
rel=target/release
for f in libpam_adopt.so adoptctl adopt-ssh adopt-prolog adopt-taskprolog adopt-epilog; do
    [[ -f $rel/$f ]] || die "$rel/$f missing: cargo build --release --workspace"
done

out=target/debian
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
umask 022

# The release profile keeps line tables for backtraces; the package ships
# stripped binaries, as Debian policy asks.
install_bin() { install -D -m "$1" "$2" "$stage/$3" && strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/$3"; }
install_bin 0644 "$rel/libpam_adopt.so" "usr/lib/$multiarch/security/pam_adopt.so"
install_bin 0755 "$rel/adoptctl" usr/sbin/adoptctl
# A user's command (login nodes, workstations) and, on compute nodes, the
# relay it starts there through srun.
install_bin 0755 "$rel/adopt-ssh" usr/bin/adopt-ssh
for h in adopt-prolog adopt-taskprolog adopt-epilog; do
    install_bin 0755 "$rel/$h" "usr/libexec/slurm-adopt/$h"
done

# --------------------------------------------------------------- config, docs
doc=$stage/usr/share/doc/slurm-adopt
install -D -m 0644 packaging/adopt.toml "$stage/etc/slurm/adopt.toml"
install -D -m 0644 packaging/adopt.toml "$doc/examples/adopt.toml"
install -D -m 0644 packaging/examples/pam.d-sshd "$doc/examples/pam.d-sshd"
install -D -m 0644 packaging/examples/slurm.conf.snippet "$doc/examples/slurm.conf.snippet"
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
sed "s/@VERSION@/$debversion/" packaging/debian/changelog | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"
echo /etc/slurm/adopt.toml >"$stage/DEBIAN/conffiles"
install -D -m 0644 packaging/debian/lintian-overrides "$stage/usr/share/lintian/overrides/slurm-adopt"

# --------------------------------------------------------------- SELinux
# Built policy packages when the tree has a policy and the devel Makefile is
# there; the sources go along so a site can rebuild against its own policy.
if [[ -d selinux ]]; then
    sel=$stage/usr/share/selinux/packages/slurm-adopt
    install -d "$sel/src"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -a selinux/. "$tmp/"
    # A copy that carries built files from a developer's tree builds afresh.
    make -s -C "$tmp" clean >/dev/null 2>&1 || true
    if make -s -C "$tmp" >"$tmp.log" 2>&1; then
        for pp in "$tmp"/*.pp; do install -m 0644 "$pp" "$sel/"; done
    else
        cat "$tmp.log" >&2
        die "selinux policy build failed (make -C selinux); see above"
    fi
    rm -f "$tmp.log"
    find selinux -maxdepth 1 -type f \( -name '*.te' -o -name '*.fc' -o -name '*.if' -o -name '*.cil' -o -name Makefile \) \
        -exec install -m 0644 {} "$sel/src/" \;
    for cil in selinux/*.cil; do [[ -f $cil ]] && install -m 0644 "$cil" "$sel/"; done
else
    echo "build-deb.sh: no selinux/ in the tree; the package carries no policy modules" >&2
fi

# --------------------------------------------------------------- man pages
man8=$stage/usr/share/man/man8
man1=$stage/usr/share/man/man1
install -d "$man8" "$man1"
sed "s/@VERSION@/$version/" packaging/man/pam_adopt.8 | gzip -9n >"$man8/pam_adopt.8.gz"

# Roff-quote plain text for a help2man include section.
roff_text() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

# help2man on each CLI's --help. --version-string keeps help2man from
# running --version, so a binary's own version output cannot differ from
# the package's.
man_from_help() {
    local bin=$1 name=$2 desc=$3 include=$4 section=${5:-8} manual="System Administration"
    [[ $section == 1 ]] && manual="User Commands"
    help2man --no-info --section="$section" --name="$desc" --version-string="$version" \
        --manual="$manual" --source="slurm-adopt $version" \
        ${include:+--include="$include"} "$rel/$bin" >"$tmp_man/$name.$section" ||
        die "help2man failed for $rel/$bin (does '$bin --help' work?)"
    gzip -9n <"$tmp_man/$name.$section" >"$stage/usr/share/man/man$section/$name.$section.gz"
}
tmp_man=$(mktemp -d)
trap 'rm -rf "$tmp_man" "${tmp:-}"' EXIT
{
    echo "[SUBCOMMANDS]"
    for sub in check doctor sessions; do
        echo ".SS \"adoptctl $sub\""
        echo ".nf"
        "$rel/adoptctl" "$sub" --help | roff_text
        echo ".fi"
    done
    echo "[SEE ALSO]"
    echo ".BR pam_adopt (8),"
    echo ".BR adopt-prolog (8),"
    echo ".BR adopt-epilog (8),"
    echo ".BR adopt-taskprolog (8)"
} >"$tmp_man/adoptctl.h2m"
man_from_help adoptctl adoptctl "check pam_adopt.so and its configuration on a Slurm compute node" "$tmp_man/adoptctl.h2m"
printf '[SEE ALSO]\n.BR pam_adopt (8),\n.BR adoptctl (8),\n.BR slurm.conf (5)\n' >"$tmp_man/hooks.h2m"
man_from_help adopt-prolog adopt-prolog "Slurm Prolog hook of slurm-adopt" "$tmp_man/hooks.h2m"
man_from_help adopt-epilog adopt-epilog "Slurm Epilog hook of slurm-adopt" "$tmp_man/hooks.h2m"
man_from_help adopt-taskprolog adopt-taskprolog "Slurm TaskProlog hook of slurm-adopt" "$tmp_man/hooks.h2m"
printf '[SEE ALSO]\n.BR ssh (1),\n.BR ssh_config (5),\n.BR srun (1),\n.BR pam_adopt (8),\n.BR adoptctl (8)\n' >"$tmp_man/adopt-ssh.h2m"
man_from_help adopt-ssh adopt-ssh "open an ssh session inside a chosen Slurm job" "$tmp_man/adopt-ssh.h2m" 1

# --------------------------------------------------------------- control
# Depends from the libraries the binaries link (dpkg-shlibdeps needs a
# debian/control to run in).
shl=$(mktemp -d)
mkdir -p "$shl/debian"
printf 'Source: slurm-adopt\n\nPackage: slurm-adopt\nArchitecture: any\n' >"$shl/debian/control"
elfs=()
while IFS= read -r -d '' f; do elfs+=("$(realpath "$f")"); done < <(find "$stage/usr" -type f \( -name '*.so' -o -perm -0100 \) -print0)
depends=$(cd "$shl" && dpkg-shlibdeps -O "${elfs[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[[ -n $depends ]] || die "dpkg-shlibdeps found no dependencies for ${elfs[*]}"
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

cat >"$stage/DEBIAN/control" <<CONTROL
Package: slurm-adopt
Version: $debversion
Architecture: $arch
Maintainer: slurm-adopt developers <slurm-adopt@example.invalid>
Installed-Size: $installed_size
Depends: $depends
Recommends: munge
Suggests: slurmd, selinux-policy-default
Section: admin
Priority: optional
Homepage: https://example.invalid/slurm-adopt
Description: hold ssh logins on Slurm compute nodes to the user's job
 pam_adopt.so denies a login by a user without a job on the node and puts
 a login by a user with one into that job's extern step, so it is limited,
 accounted and killed with the job. It is a drop-in successor to Slurm's
 pam_slurm_adopt that speaks Slurm's protocols natively (no libslurm, one
 build for Slurm 22.05 to 26.05) and fails closed.
 .
 The package also holds adoptctl (dry runs, a configuration doctor and a
 list of who is logged into which job), adopt-ssh (ssh into a chosen job),
 the adopt-prolog, adopt-epilog and adopt-taskprolog hooks, SELinux policy
 modules, and example PAM and slurm.conf snippets. Installing it changes no
 PAM or Slurm file: enable the module by hand (see pam_adopt(8)).
CONTROL

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums" "$stage/DEBIAN/conffiles"
find "$stage" -type d -exec chmod 0755 {} +

deb=$out/slurm-adopt_${debversion}_$arch.deb
dpkg-deb --build --root-owner-group -Zxz "$stage" "$deb" >/dev/null
echo "$deb"
