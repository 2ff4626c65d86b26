#!/usr/bin/env bash
# build-selinux-image.sh PLAIN_DIR OUTDIR: the enforcing variant of a
# cached plain guest image (build-image.sh), for test.sh --selinux:
#   OUTDIR/base.raw       a copy of PLAIN_DIR/base.raw with Debian's
#                         reference policy (selinux-policy-default) installed,
#                         SELINUX=enforcing, and every file labelled offline
#   OUTDIR/vmlinuz-K, initrd.img-K, kernel-version, ssh/   hard links into PLAIN_DIR
#   OUTDIR/done           written last
# None of the project's policy modules is in the image: test.sh loads them
# in the guest after the negative control, from the .deb of this tree.
# The copy is loop-mounted (the plain build keeps no rootfs), the policy
# installed in a chroot of it, and labelled with the host's setfiles -r:
# the host needs no SELinux kernel to write security.selinux xattrs, and no
# relabel boot is needed.
set -euo pipefail

plain=${1:?usage: build-selinux-image.sh PLAIN_DIR OUTDIR}
out=${2:?usage: build-selinux-image.sh PLAIN_DIR OUTDIR}
mirror=${ADOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
die() { echo "build-selinux-image.sh: error: $*" >&2; exit 1; }
say() { echo "build-selinux-image.sh: $*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root (mount, chroot, setfiles)"
[[ -f $plain/done ]] || die "no complete plain image in $plain"
command -v setfiles >/dev/null || die "setfiles missing on the host (policycoreutils)"

work=$out.tmp
mnt=$work/mnt
cleanup() {
    local rc=$? m
    for m in dev/pts dev proc sys ""; do umount "$mnt/$m" 2>/dev/null || true; done
    if ((rc == 0)); then rm -rf "$work"; else echo "build-selinux-image.sh: work dir kept for inspection: $work" >&2; fi
}
trap cleanup EXIT
rm -rf "$work"
install -d "$mnt"

t0=$SECONDS
cp --sparse=always "$plain/base.raw" "$work/base.raw"
mount -o loop "$work/base.raw" "$mnt" || die "loop mount of the image copy failed"
mount -t proc proc "$mnt/proc"
mount -t sysfs sys "$mnt/sys"
mount --bind /dev "$mnt/dev"
mount --bind /dev/pts "$mnt/dev/pts"
printf '#!/bin/sh\nexit 101\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 0755 "$mnt/usr/sbin/policy-rc.d"
# The plain build emptied apt's lists; the suite's sources.list is
# debootstrap's.
grep -q . "$mnt/etc/apt/sources.list" 2>/dev/null || die "no sources.list in the image"
# policycoreutils: semodule, restorecon, load_policy in the guest;
# selinux-utils: getenforce. No auditd: the kernel's AVC records reach the
# journal (journald's audit socket), where the tier reads them after a
# cursor like every other log line.
{ chroot "$mnt" apt-get -q update &&
    DEBIAN_FRONTEND=noninteractive chroot "$mnt" apt-get -y -q --no-install-recommends install \
        selinux-policy-default policycoreutils selinux-utils; } >"$work/apt.log" 2>&1 ||
    { tail -n 30 "$work/apt.log" >&2; die "installing selinux-policy-default in the chroot failed (mirror $mirror)"; }
rm -rf "$mnt/var/lib/apt/lists/"* "$mnt/var/cache/apt/"*.bin "$mnt/var/cache/apt/archives/"*.deb
rm -f "$mnt/usr/sbin/policy-rc.d"
sed -i -e 's/^SELINUX=.*/SELINUX=enforcing/' -e 's/^SELINUXTYPE=.*/SELINUXTYPE=default/' "$mnt/etc/selinux/config"
grep -qx SELINUX=enforcing "$mnt/etc/selinux/config" || die "/etc/selinux/config has no SELINUX= line"
t_pkg=$((SECONDS - t0))
for m in dev/pts dev proc sys; do umount "$mnt/$m"; done

t0=$SECONDS
policy=$(find "$mnt/etc/selinux/default/policy" -name 'policy.[0-9]*' | sort -V | tail -n1)
[[ -n $policy ]] || die "no binary policy under /etc/selinux/default/policy"
setfiles -r "$mnt" -c "$policy" "$mnt/etc/selinux/default/contexts/files/file_contexts" "$mnt" >"$work/setfiles.log" 2>&1 ||
    { tail -n 20 "$work/setfiles.log" >&2; die "setfiles -r of the image failed"; }
label=$(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "security.selinux").decode().rstrip("\0"))' "$mnt/usr/sbin/sshd" 2>/dev/null || true)
[[ $label == *:sshd_exec_t:* ]] || die "/usr/sbin/sshd is not labelled sshd_exec_t after setfiles ($label)"
t_label=$((SECONDS - t0))
umount "$mnt"

rm -rf "$out.new"
install -d "$out.new"
mv "$work/base.raw" "$work/apt.log" "$out.new/"
kver=$(cat "$plain/kernel-version")
ln "$plain/vmlinuz-$kver" "$plain/initrd.img-$kver" "$plain/kernel-version" "$out.new/"
cp -a "$plain/ssh" "$out.new/ssh"
rm -rf "$out"
mv "$out.new" "$out"
echo "packages=${t_pkg}s label=${t_label}s policy=$(basename "$policy")" >"$out/done"
say "SELinux image: packages ${t_pkg} s, offline labels ${t_label} s ($(basename "$policy"))"
