#!/usr/bin/env bash
# cargo-deny over the workspace: every crate's license is one of deny.toml's
# (MIT, Apache-2.0, Unicode-3.0), no wildcard versions, crates only from
# crates.io. Installs cargo-deny from crates.io when missing (about 4.5
# minutes on 2 cores). Advisories are not checked: the RustSec database
# lives on GitHub, which CI cannot reach.
set -euo pipefail
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q " $version"; then
    echo "deny.sh: installing cargo-deny $version from crates.io"
    cargo install --quiet --locked cargo-deny --version "$version"
fi
cargo deny check licenses bans sources
