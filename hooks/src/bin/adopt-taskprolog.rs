//! adopt-taskprolog: slurm.conf `TaskProlog=`. Hands the XDG session
//! variables to each task through slurmstepd's `export` lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adopt_hooks::runner::{self, HookLog};
use clap::Parser;
use slurm_node::session::session_env::{self, SessionEnv};

/// Export XDG_RUNTIME_DIR and the XDG_SESSION_* variables into each task.
///
/// Run by slurmstepd as the job's user before each task (slurm.conf
/// `TaskProlog=/usr/libexec/slurm-adopt/adopt-taskprolog`). It prints
/// `export NAME=value` lines, which slurmstepd sets in the task's
/// environment: XDG_RUNTIME_DIR when /run/user/$UID exists and belongs to
/// the user (adopt-prolog creates it), XDG_SESSION_ID when the task has an
/// audit session (inherited from slurmd's, so it names slurmd's session
/// rather than a login's), XDG_SESSION_TYPE=tty and
/// XDG_SESSION_CLASS=user. Every
/// value is checked so nothing can add a line of its own. Nothing else is
/// ever written to stdout; diagnostics go to stderr and syslog, and it
/// always exits 0, because a failing TaskProlog would abort the user's task.
#[derive(Debug, Parser)]
#[command(
    name = "adopt-taskprolog",
    version,
    about,
    long_about,
    after_long_help = "\
Output (stdout, the TaskProlog protocol):
  export XDG_RUNTIME_DIR=/run/user/1001
  export XDG_SESSION_ID=17
  export XDG_SESSION_TYPE=tty
  export XDG_SESSION_CLASS=user

Files:
  /etc/slurm/adopt.toml   optional config; runtime_dir.root moves /run/user

Exit status: always 0 (a TaskProlog that fails aborts the task); on a
problem it prints nothing and logs why (syslog tag adopt-taskprolog)."
)]
struct Cli {
    /// Read the config from FILE instead of /etc/slurm/adopt.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log to stderr only.
    #[arg(long)]
    no_syslog: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = HookLog::open("adopt-taskprolog", !cli.no_syslog);
    let config = match runner::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            log.error(&format!("{e}; exporting nothing"));
            return ExitCode::SUCCESS;
        }
    };
    let uid = nix::unistd::getuid().as_raw();
    let hooks = config.hooks(Path::new("/proc"));
    let env = SessionEnv {
        runtime_dir: hooks.runtime_dirs.usable(uid),
        session_id: session_env::session_id(Path::new("/proc")),
    };
    if env.runtime_dir.is_none() {
        log.warn(&format!(
            "uid={uid}: {} is missing or not the user's; XDG_RUNTIME_DIR not exported",
            hooks.runtime_dirs.path(uid).display()
        ));
    }
    match env.task_prolog_output() {
        // A write error (stdout closed) must not become a panic and a
        // non-zero exit, which would abort the task.
        Ok(text) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
        }
        Err(e) => log.error(&format!("uid={uid}: {e}; exporting nothing")),
    }
    ExitCode::SUCCESS
}
