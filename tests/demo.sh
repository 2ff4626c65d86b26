#!/usr/bin/env bash
# Newcomer demo: a real Slurm node on this host (Debian 12, as root) with
# pam_adopt.so in the account stack of a test sshd on 127.0.0.1:2200.
# Shows a login denied without a job and a login adopted into a job, then
# leaves everything running.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
if [[ $(id -u) -ne 0 ]]; then
    echo "demo: must run as root: it installs Slurm and starts slurmctld, slurmd, munged and sshd" >&2
    exit 1
fi
# shellcheck source=tests/real-slurm/lib.sh
source "$repo/tests/real-slurm/lib.sh"

"$repo/tests/scripts/install-build-deps.sh"
"$repo/tests/real-slurm/setup-host.sh"
(cd "$repo" && cargo build --release --quiet -p pam_adopt -p adoptctl)
install -D -m 0644 "$repo/target/release/libpam_adopt.so" /usr/local/lib/slurm-adopt-tests/pam_adopt.so
install -D -m 0755 "$repo/target/release/adoptctl" /usr/local/sbin/adoptctl

port=2200
stack=/var/lib/slurm-adopt-tests/demo-account
printf 'account required pam_unix.so\naccount required /usr/local/lib/slurm-adopt-tests/pam_adopt.so\n' >"$stack"
stop_test_sshd "$port" 2>/dev/null || true
start_test_sshd "$port" "$stack"

echo
echo "== adopt-bob has no job: the login is refused"
ssh_as adopt-bob "$port" true || true

echo
echo "== adopt-alice gets a job and logs in"
job=$(submit_job adopt-alice)
wait_job_running "$job"
adoptctl check adopt-alice || true
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_as adopt-alice "$port" 'echo "SLURM_JOB_ID=$SLURM_JOB_ID"; grep -E "freezer|memory" /proc/self/cgroup'

cat <<EOF

The node is up and job $job of adopt-alice is running. Try it yourself:
  ssh -i /var/lib/slurm-adopt-tests/keys/adopt-alice -p $port adopt-alice@127.0.0.1
  adoptctl check adopt-alice
  grep pam_adopt /var/log/auth.log
  scancel $job        # ends every session adopted into the job
EOF
