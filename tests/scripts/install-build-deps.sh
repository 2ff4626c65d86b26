#!/usr/bin/env bash
# Debian packages the build and the unprivileged test tier need:
# libpam headers to link pam_adopt.so, munge (munged and its CLI) for the
# callerid tests, pam_wrapper to load the module without root (and
# nss_wrapper to give it a user lookup that never answers), binutils
# for `nm -D`. No libmunge: the munged client is native.
set -euo pipefail

packages=(libpam0g-dev libpam-wrapper libnss-wrapper pamtester munge binutils gcc)
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

# The toolchain rust-toolchain.toml names, under that name, without a
# download: no toolchain can be fetched here. When rustup lacks the name
# but the installed stable is that very release, the name is made a link
# to it (rustup's own `toolchain link` refuses release-like names).
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
want=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$repo/rust-toolchain.toml")
if [[ -n $want ]] && command -v rustup >/dev/null; then
    if ! rustup toolchain list | grep -q "^$want-"; then
        have=$(RUSTUP_TOOLCHAIN=stable rustc --version | awk '{print $2}')
        host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
        if [[ $have != "$want" ]]; then
            echo "install-build-deps: rust-toolchain.toml wants Rust $want, and rustup has only stable $have; install $want (rustup toolchain install $want) or change the file" >&2
            exit 1
        fi
        toolchains=${RUSTUP_HOME:-$HOME/.rustup}/toolchains
        ln -sfn "$toolchains/stable-$host" "$toolchains/$want-$host"
        echo "install-build-deps: toolchain $want-$host is the installed stable ($have)"
    fi
fi
