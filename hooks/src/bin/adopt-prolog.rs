//! adopt-prolog: slurm.conf `Prolog=`. Sets up the job user's session
//! state on this node before the job starts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use adopt_hooks::runner::{self, HookInput, HookLog};
use clap::Parser;
use slurm_node::session::device_env;

/// Give the job's user a session environment on this node.
///
/// Run by slurmd as root before each job starts (slurm.conf
/// `Prolog=/usr/libexec/slurm-adopt/adopt-prolog`). In the default
/// runtime-dir mode it creates /run/user/$UID (mode 0700, owned by the
/// user, optionally a size-capped tmpfs) if it is missing, and starts no
/// user manager. In linger mode it enables linger for the user, through
/// logind where systemd runs, else by writing the linger marker file.
/// Either way it records the job under a per-user lock, so that
/// adopt-epilog removes the state only after the user's last job on the
/// node, even when jobs start and end at the same moment.
#[derive(Debug, Parser)]
#[command(
    name = "adopt-prolog",
    version,
    about,
    long_about,
    after_long_help = "\
Environment (set by slurmd):
  SLURM_JOB_ID, SLURM_JOB_UID (or SLURM_UID), SLURM_JOB_USER   required
  SLURM_JOB_GID      the user's group; else the passwd entry
  SLURMD_NODENAME, SLURM_CONF   read by adopt-epilog; accepted here too

Files:
  /etc/slurm/adopt.toml      optional config (--config moves it; unknown keys
                             are an error naming the key)
  /run/user/UID              the runtime directory (runtime-dir mode)
  /var/lib/systemd/linger/USER   the linger marker (linger mode without logind)
  /run/slurm-adopt/users/UID/    per-user lock and job records

Exit status:
  0  the user's state is in place, or nothing was done because the input
     was bad (a missing or malformed Slurm variable, an unknown user, a
     config error): the logged line names the variable, user or file
  1  the state could not be set up (the runtime dir is a symlink or someone
     else's, the state dir is broken, the user's lock stayed held): slurmd
     then drains the node, as for any failed Prolog

Every run logs one line to stderr and to syslog (daemon facility, tag
adopt-prolog): grep adopt-prolog in /var/log/syslog or journalctl -t adopt-prolog.

Example, by hand:
  SLURM_JOB_ID=1 SLURM_JOB_UID=1001 SLURM_JOB_USER=alice adopt-prolog"
)]
struct Cli {
    /// Read the config from FILE instead of /etc/slurm/adopt.toml (FILE
    /// must exist).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log to stderr only.
    #[arg(long)]
    no_syslog: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = HookLog::open("adopt-prolog", !cli.no_syslog);
    let started = Instant::now();
    let HookInput { config, job, .. } = match runner::hook_input(cli.config.as_deref()) {
        Ok(input) => input,
        // Bad input is not a failure to set the user's state up: a config
        // typo pushed to every node must not drain them all. The job runs
        // without the state, and the line says why.
        Err(e) => {
            log.error(&format!(
                "{e}; result=skipped: the job runs without its session state"
            ));
            return ExitCode::SUCCESS;
        }
    };
    let hooks = config.hooks(std::path::Path::new("/proc"));
    let head = format!(
        "job={} user={} uid={} mode={}",
        job.job_id,
        job.user,
        job.uid,
        config.mode.label()
    );
    // The job's GPUs, for logins adopted into it. Not having them costs a
    // login its GPU variables, never the job: a failure is logged only.
    let devices = device_env::record_text(|name| std::env::var(name).ok());
    match hooks
        .prolog(&job)
        .map(|done| match hooks.record_devices(&job, &devices) {
            Ok(recorded) if recorded.is_empty() => done,
            Ok(recorded) => format!("{done}; {recorded}"),
            Err(e) => format!("{done}; GPU variables not recorded: {e}"),
        }) {
        Ok(done) => {
            log.info(&format!(
                "{head} result=ok action=\"{done}\" usec={}",
                started.elapsed().as_micros()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log.error(&format!(
                "{head} result=failed error=\"{e}\" usec={}",
                started.elapsed().as_micros()
            ));
            ExitCode::FAILURE
        }
    }
}
