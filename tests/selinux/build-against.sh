#!/usr/bin/env bash
# Compiles selinux/ against another policy's devel headers, such as the
# include directory that Fedora's selinux-policy sources install with
#   make NAME=targeted TYPE=mcs DISTRO=redhat DESTDIR=/tmp/f install-headers
# Usage: build-against.sh INCLUDE_DIR   (the dir holding Makefile, build.conf)
# Not part of CI: the RPM-family headers cannot be installed there.
set -euo pipefail

if [[ $# -ne 1 || ! -f $1/Makefile || ! -f $1/build.conf ]]; then
    echo "usage: $0 INCLUDE_DIR (a policy devel include dir with Makefile and build.conf)" >&2
    exit 2
fi
inc=$(cd "$1" && pwd)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../selinux" && pwd)
work=$(mktemp -d /tmp/selinux-build-against.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/src"
rm -rf "$work/src/tmp" "$work"/src/*.pp
make -C "$work/src" DEVEL_MAKEFILE="$inc/Makefile" HEADERDIR="$inc"
for m in pam_adopt pam_adopt_ns pam_adopt_hooks; do
    [[ -s $work/src/$m.pp ]] || { echo "build-against.sh: $m.pp was not built" >&2; exit 1; }
    echo "built $m.pp against $inc ($(stat -c %s "$work/src/$m.pp") bytes)"
done
