#!/usr/bin/env bash
# build-rootfs.sh SUITE OUT.tar: a minimal Debian SUITE tree with Slurm,
# munge, sshd, rsyslog, pamtester and Debian's pam_slurm_adopt, packed as a
# tar that `docker import` turns into a base image (no registry involved).
# Called by lib.sh, which caches OUT.tar keyed by a hash of this file.
set -euo pipefail

suite=${1:?usage: build-rootfs.sh SUITE OUT.tar}
out=${2:?usage: build-rootfs.sh SUITE OUT.tar}
mirror=${ADOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=slurmd,slurmctld,slurm-client,munge,libpam-slurm-adopt,openssh-server,openssh-client,pamtester,rsyslog,iproute2,procps,ca-certificates,less

die() { echo "build-rootfs.sh: error: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"

work=$(mktemp -d "/var/tmp/slurm-adopt-rootfs-$suite.XXXXXX")
trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr/sbin"
# Package postinst scripts would start munged, sshd, slurmd... inside the
# chroot; policy-rc.d answering 101 makes invoke-rc.d leave them alone. It
# is written before debootstrap so it is in place for the first postinst.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap $suite failed (log above)"
fi

# Trim what a test image never needs: apt lists, docs, man pages, locales.
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
    "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/info/"*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
# Host keys and machine-id are generated per image, not shared by every build.
rm -f "$root/etc/ssh/ssh_host_"* "$root/etc/machine-id"
: >"$root/etc/machine-id"
# Docker writes these at container start.
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"

tar -C "$root" --numeric-owner --xattrs -cf "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "build-rootfs.sh: $suite -> $out ($(du -h "$out" | cut -f1))"
