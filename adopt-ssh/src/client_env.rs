//! The environment Slurm's client commands get from adopt-ssh.
//!
//! squeue and srun take options from the environment as well as from
//! their command line. Run from inside another allocation (an salloc
//! shell, a batch script), the caller's `SLURM_*` and `SRUN_*` variables
//! describe that job: srun would take its task count, memory or CPUs per
//! task as options for the relay's step and could refuse it or start it
//! wrong. A user's `SQUEUE_*` settings (`SQUEUE_USERS`,
//! `SQUEUE_PARTITION`, `SQUEUE_STATES`...) would filter the one lookup
//! adopt-ssh relies on, so that a running job reads as missing.

use std::ffi::OsString;
use std::process::Command;

/// The variables kept: where Slurm's configuration is and which cluster
/// is meant, which both commands must agree on with the user's shell.
const KEPT: [&str; 2] = ["SLURM_CONF", "SLURM_CLUSTERS"];

/// The prefixes of the variables dropped (all but [`KEPT`]).
const DROPPED_PREFIXES: [&str; 3] = ["SLURM_", "SRUN_", "SQUEUE_"];

/// The names in `vars` that a client command must not inherit.
pub fn dropped(vars: impl Iterator<Item = OsString>) -> Vec<OsString> {
    vars.filter(|name| {
        let name = name.to_string_lossy();
        DROPPED_PREFIXES.iter().any(|p| name.starts_with(p)) && !KEPT.contains(&name.as_ref())
    })
    .collect()
}

/// Remove this process's dropped variables from `cmd`'s environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for name in dropped(std::env::vars_os().map(|(name, _)| name)) {
        cmd.env_remove(name);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_squeue_settings_are_dropped_but_the_config_and_cluster_kept() {
        let dropped_names = [
            "SLURM_JOB_ID",
            "SLURM_NTASKS",
            "SLURM_CPUS_PER_TASK",
            "SLURM_MEM_PER_NODE",
            "SRUN_CPUS_PER_TASK",
            "SQUEUE_USERS",
            "SQUEUE_FORMAT2",
        ];
        let kept = [
            "SLURM_CONF",
            "SLURM_CLUSTERS",
            "PATH",
            "MY_SLURM_NOTE",
            "XSQUEUE_USERS",
        ];
        let names = dropped_names.iter().chain(&kept).map(OsString::from);
        assert_eq!(dropped(names), dropped_names.map(OsString::from));
    }
}
