#!/usr/bin/env bash
# Debian packages the build and the unprivileged test tier need:
# libpam headers to link pam_adopt.so, libmunge for the callerid RPC,
# pam_wrapper to load the module without root, binutils for `nm -D`.
set -euo pipefail

packages=(libpam0g-dev libpam-wrapper pamtester libmunge-dev munge binutils gcc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-build-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "install-build-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
