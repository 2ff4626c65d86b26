//! adopt-epilog: slurm.conf `Epilog=`. Takes the user's session state
//! down after their last job on this node.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use adopt_hooks::last_job::Verdict;
use adopt_hooks::lifecycle::{EpilogReport, NodeSpool};
use adopt_hooks::runner::{self, HookInput, HookLog};
use clap::Parser;

/// Remove the user's session state when their last job on this node ends.
///
/// Run by slurmd as root after each job (slurm.conf
/// `Epilog=/usr/libexec/slurm-adopt/adopt-epilog`). Under the user's lock
/// it records the job as ending, then asks every extern stepd on the node
/// who owns it (all at once, one round trip each, no scontrol, no ps) and
/// reads the records adopt-prolog left. Only when no other job of the user
/// remains, starting or running, does it remove /run/user/$UID (runtime-dir
/// mode) or disable linger (linger mode), and, with reap_strays enabled,
/// kill the user's processes that are in no job (never root's, never below
/// UID_MIN; dry-run logging first). A stepd that will not say whose it is
/// keeps the state: removing it from under a running job is the worse
/// mistake.
#[derive(Debug, Parser)]
#[command(
    name = "adopt-epilog",
    version,
    about,
    long_about,
    after_long_help = "\
Environment (set by slurmd):
  SLURM_JOB_ID, SLURM_JOB_UID (or SLURM_UID), SLURM_JOB_USER   required
  SLURMD_NODENAME   this node's NodeName (else found as pam_adopt finds it)
  SLURM_CONF        slurm.conf (else slurm_conf from adopt.toml, else
                    /etc/slurm/slurm.conf or slurmd's configless cache)

Files:
  /etc/slurm/adopt.toml          optional config (--config moves it)
  SlurmdSpoolDir/NODE_JOB.4294967292   the extern steps asked for their owner
  /run/slurm-adopt/users/UID/    per-user lock and job records

Exit status: always 0, because a failing Epilog drains the node: what
cannot be done is logged and the user's state is kept; a missing or
malformed variable is logged in one line naming it.

Every run logs one line to stderr and to syslog (daemon facility, tag
adopt-epilog) with the verdict: last, not-last (naming the other jobs) or
unsure (naming the stepds that did not answer).

Examples:
  # what would the Epilog of job 12 decide, changing nothing:
  SLURM_JOB_ID=12 SLURM_JOB_UID=1001 SLURM_JOB_USER=alice \\
    SLURMD_NODENAME=c1 adopt-epilog --dry-run"
)]
struct Cli {
    /// Read the config from FILE instead of /etc/slurm/adopt.toml (FILE
    /// must exist).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Decide and print the verdict on stdout; change nothing, take no lock.
    #[arg(long)]
    dry_run: bool,
    /// Log to stderr only.
    #[arg(long)]
    no_syslog: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = HookLog::open("adopt-epilog", !cli.no_syslog);
    let started = Instant::now();
    // Whatever is wrong, a non-zero exit would drain the node and take
    // nothing down: log it and keep the user's state.
    let HookInput { env, config, job } = match runner::hook_input(cli.config.as_deref()) {
        Ok(input) => input,
        Err(e) => {
            log.error(&format!("{e}; keeping the user's state"));
            return ExitCode::SUCCESS;
        }
    };
    let conf_path = runner::slurm_conf_path(&config, &env);
    let spool: Option<NodeSpool> = match runner::node_spool(&conf_path, &env) {
        Ok(spool) => Some(spool),
        Err(e) => {
            log.warn(&format!("job={} {e}", job.job_id));
            None
        }
    };
    let hooks = config.hooks(Path::new("/proc"));
    let report = hooks.epilog(&job, spool.as_ref(), cli.dry_run);
    for warning in &report.warnings {
        log.warn(&format!("job={} {warning}", job.job_id));
    }
    let verdict = verdict_text(&report);
    log.info(&format!(
        "job={} user={} uid={} mode={} verdict={verdict} other_users_steps={} action=\"{}\"{} usec={}",
        job.job_id,
        job.user,
        job.uid,
        config.mode.label(),
        report.other_users_steps,
        if report.actions.is_empty() { "none".to_owned() } else { report.actions.join("; ") },
        if cli.dry_run { " dry_run=1" } else { "" },
        started.elapsed().as_micros()
    ));
    if cli.dry_run {
        let _ = writeln!(std::io::stdout().lock(), "{verdict}");
    }
    ExitCode::SUCCESS
}

fn verdict_text(report: &EpilogReport) -> String {
    let list = |jobs: &[u32]| {
        jobs.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match &report.verdict {
        Verdict::Last => "last".to_owned(),
        Verdict::NotLast { jobs } => format!("not-last:{}", list(jobs)),
        Verdict::Unsure { jobs } => format!("unsure:{}", list(jobs)),
    }
}
