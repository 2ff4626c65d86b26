//! adoptctl: look at what pam_adopt.so would do on this node, without
//! doing it.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use pam_adopt::node::{self, NodeView};
use pam_adopt::options::Options;
use slurm_node::select::{self, CallerId, Selection};

/// Inspect and check pam_adopt.so on a Slurm compute node.
///
/// adoptctl reads the same slurm.conf, spool directory and stepd sockets as
/// the PAM module, with the same module arguments, and reports what it
/// finds. It never adopts a process and never changes a file.
#[derive(Debug, Parser)]
#[command(name = "adoptctl", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dry run: which jobs USER has on this node and which one a login
    /// would join, and why.
    ///
    /// Pass the module arguments of the PAM line after `--`, e.g.
    /// `adoptctl check alice -- action_unknown=deny nodename=c1`.
    /// Exit status: 0 if the login would be let in (adopted, allowed or
    /// ignored), 1 if it would be denied, 2 if the check itself failed.
    Check {
        /// The user who would log in.
        user: String,
        /// The PAM service the login would come through.
        #[arg(long, default_value = "sshd")]
        service: String,
        /// Module arguments, as written in the PAM file.
        #[arg(last = true)]
        module_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            user,
            service,
            module_args,
        } => check(&user, &service, &module_args),
    }
}

fn check(user: &str, service: &str, module_args: &[String]) -> ExitCode {
    let (opts, warnings) = Options::parse(module_args);
    for w in &warnings {
        println!("warning: {w}");
    }
    if !opts.service_allowed(service) {
        println!("service '{service}' is not in service=; the module would ignore this login");
        println!("decision: ignore (reason: service_not_allowed)");
        return ExitCode::SUCCESS;
    }
    let uid = match nix::unistd::User::from_name(user) {
        Ok(Some(pw)) => pw.uid.as_raw(),
        Ok(None) => {
            eprintln!("adoptctl: no such user: {user}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("adoptctl: looking up {user}: {e}");
            return ExitCode::from(2);
        }
    };
    if uid == 0 {
        println!("user {user} is root; the module ignores root before reading any config");
        println!("decision: ignore (reason: root)");
        return ExitCode::SUCCESS;
    }
    let view = match NodeView::load(&opts) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("adoptctl: {e}");
            return ExitCode::from(2);
        }
    };
    println!("config:     {}", opts.conf.display());
    println!("node:       {}", view.node.name);
    println!("spool dir:  {}", view.spool_dir.display());
    let started = Instant::now();
    let scan = match node::scan_user_jobs(&view, uid, started + opts.timeout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("adoptctl: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "extern steps: {} of {user} (uid {uid}), {} of other users, {} unreachable, {} skipped",
        scan.mine.len(),
        scan.others,
        scan.unreachable.len(),
        scan.skipped.len()
    );
    for job in &scan.mine {
        let (secs, nanos) = job.socket.ctime;
        println!(
            "  job {:>10}  started {secs}.{nanos:09}  stepd protocol {:#06x}  {}",
            job.socket.job_id,
            job.client.protocol_version(),
            job.socket.path.display()
        );
    }
    for (path, err) in &scan.unreachable {
        println!("  unreachable {}: {err}", path.display());
    }
    for (path, why) in &scan.skipped {
        println!("  skipped {}: {why}", path.display());
    }
    let candidates = scan.candidates();
    let policy = opts.policy();
    let callerid = if select::needs_callerid(&candidates, &policy) {
        println!("callerid: would be asked (not available in this build; treated as no answer)");
        CallerId::Failed
    } else {
        CallerId::NotAsked
    };
    let selection = select::select(&candidates, &callerid, &policy);
    let reason = selection.reason();
    match selection {
        Selection::Adopt { job_id, .. } => {
            println!("decision: adopt into job {job_id} (reason: {reason})");
            ExitCode::SUCCESS
        }
        Selection::Allow { .. } => {
            println!("decision: allow without adoption (reason: {reason})");
            ExitCode::SUCCESS
        }
        Selection::Ignore { .. } => {
            println!("decision: ignore, the rest of the PAM stack decides (reason: {reason})");
            ExitCode::SUCCESS
        }
        Selection::Deny { message, .. } => {
            println!("decision: deny (reason: {reason}); the user would see: {message}");
            ExitCode::from(1)
        }
    }
}
