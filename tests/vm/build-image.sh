#!/usr/bin/env bash
# build-image.sh SUITE OUTDIR: a Debian SUITE guest for the cgroup v2 tier,
# from Debian's package mirror only (debootstrap, no image registry):
#   OUTDIR/base.raw             ext4 root filesystem (sparse), read-only base
#                               under each boot's qcow2 overlay
#   OUTDIR/vmlinuz-K, initrd.img-K, kernel-version
#   OUTDIR/ssh/id_ed25519       root's key into the guest (generated here)
#   OUTDIR/ssh/known_hosts      the guest's host key, as "slurm-adopt-vm"
#   OUTDIR/done                 written last: the cache entry is complete
# Called by lib.sh's vm_image, which keys OUTDIR by a hash of this file,
# guest/configure.sh, the suite and the CPU count.
set -euo pipefail

suite=${1:?usage: build-image.sh SUITE OUTDIR}
out=${2:?usage: build-image.sh SUITE OUTDIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mirror=${ADOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
smp=${VM_SMP:-2}
# One debootstrap pass: its resolver follows Depends (not Recommends),
# which is all a node needs, and skips a second apt-get update + install.
# linux-image-amd64 + initramfs-tools: the guest boots its own suite's
# kernel (qemu -kernel/-initrd from the copies made below). dbus: Slurm's
# cgroup/v2 plugin asks systemd for its scope over D-Bus. libpam-systemd:
# the adopt_in=session scenario keeps pam_systemd in the stack.
# sid's kernel takes dracut as its initramfs builder (debootstrap picks it
# for the kernel's first alternative, and it conflicts with
# initramfs-tools), so there the include names dracut instead.
initramfs=initramfs-tools
[[ $suite != sid ]] || initramfs=dracut
packages=systemd,systemd-sysv,dbus,udev,kmod,iproute2,procps,psmisc,netbase,linux-image-amd64,$initramfs
packages+=,libpam-systemd,openssh-server,openssh-client,slurmd,slurmctld,slurm-client,munge,libpam-slurm-adopt

die() { echo "build-image.sh: error: $*" >&2; exit 1; }
say() { echo "build-image.sh: $*" >&2; }
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
for t in debootstrap mkfs.ext4 ssh-keygen; do command -v "$t" >/dev/null || die "$t missing (lib.sh's vm_ensure_host_tools installs it)"; done

work=$out.tmp
root=$work/root
# On failure the work dir stays for a look (its logs); the next build
# removes it first.
cleanup() {
    local rc=$? m
    for m in dev/pts dev proc sys; do umount "$root/$m" 2>/dev/null || true; done
    if ((rc == 0)); then rm -rf "$work"; else echo "build-image.sh: work dir kept for inspection: $work" >&2; fi
}
trap cleanup EXIT
rm -rf "$work"
install -d "$root/usr/sbin" "$work/ssh"
# Package postinsts would start munged, sshd, slurmd... in the chroot;
# policy-rc.d answering 101 makes invoke-rc.d leave them alone. Written
# before debootstrap so it is there for the first postinst.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# dracut in a chroot would size its image to the build host's devices
# (hostonly); the guest's are qemu's virtio ones. Written before the
# kernel's postinst builds the image.
if [[ $initramfs == dracut ]]; then
    install -d "$root/etc/dracut.conf.d"
    printf 'hostonly="no"\nadd_drivers+=" virtio_blk virtio_pci virtio_net ext4 "\n' >"$root/etc/dracut.conf.d/50-slurm-adopt-vm.conf"
fi

t0=$SECONDS
say "debootstrap $suite (minbase + Slurm, sshd, kernel) from $mirror"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap $suite failed (log above)"
fi
t_boot=$((SECONDS - t0))

t0=$SECONDS
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
install -m 0755 "$here/guest/configure.sh" "$root/tmp/configure.sh"
chroot "$root" /tmp/configure.sh "$smp" >"$work/configure.log" 2>&1 ||
    { tail -n 40 "$work/configure.log" >&2; die "guest/configure.sh failed in the $suite chroot (log above)"; }
rm -f "$root/tmp/configure.sh"
for m in dev/pts dev proc sys; do umount "$root/$m"; done

# Root's key into the guest, made here so the private half never enters
# the image; the guest's host key is pinned for strict checking.
ssh-keygen -q -t ed25519 -N '' -C "slurm-adopt-vm-$suite" -f "$work/ssh/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$work/ssh/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
echo "slurm-adopt-vm $(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" >"$work/ssh/known_hosts"

kver=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
[[ -n $kver && -f $root/boot/initrd.img-$kver ]] || die "no kernel + initrd in the $suite rootfs (/boot: $(ls "$root/boot" | tr '\n' ' '))"
cp "$root/boot/vmlinuz-$kver" "$root/boot/initrd.img-$kver" "$work/"
echo "$kver" >"$work/kernel-version"

# What a test guest never needs: package caches, docs, man pages, locales.
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
    "$root/usr/share/doc/"* "$root/usr/share/man/"* "$root/usr/share/info/"*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
t_conf=$((SECONDS - t0))

# No loop mount: mke2fs -d copies owners, modes, setuid bits and xattrs.
t0=$SECONDS
truncate -s 3G "$work/base.raw"
mkfs.ext4 -q -F -L vmroot -E root_owner=0:0 -d "$root" "$work/base.raw" ||
    die "mkfs.ext4 -d of the $suite rootfs failed"
t_img=$((SECONDS - t0))
rm -rf "$root"
rm -rf "$out.new"
install -d "$out.new"
mv "$work/debootstrap.log" "$work/configure.log" "$work/ssh" "$work/base.raw" "$work/vmlinuz-$kver" \
    "$work/initrd.img-$kver" "$work/kernel-version" "$out.new/"
rm -rf "$out"
mv "$out.new" "$out"
echo "debootstrap=${t_boot}s configure=${t_conf}s image=${t_img}s kernel=$kver" >"$out/done"
say "$suite: debootstrap ${t_boot} s, configure ${t_conf} s, image ${t_img} s (kernel $kver, $(du -h "$out/base.raw" | cut -f1) allocated)"
