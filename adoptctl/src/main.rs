//! adoptctl: look at what pam_adopt.so would do on this node, without
//! doing it, and at the logins it has adopted.

mod check;
mod doctor;
mod pamstack;
mod report;
mod root;
mod sessions;
mod sshdconf;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Inspect and check pam_adopt.so on a Slurm compute node.
///
/// adoptctl reads the same slurm.conf, spool directory and stepd sockets as
/// the PAM module, with the same module arguments, and reports what it
/// finds. It never adopts a process and never changes a file.
#[derive(Debug, Parser)]
#[command(
    name = "adoptctl",
    version,
    about,
    long_about,
    after_long_help = "\
Examples:
  adoptctl doctor
  adoptctl doctor --root /srv/review/c1 --nodename c1 --json
  adoptctl check alice
  adoptctl check alice -- action_unknown=deny nodename=c1
  adoptctl check alice --from 10.1.2.3:51234 -- conf=/opt/slurm/etc/slurm.conf
  adoptctl sessions
  adoptctl sessions --json -- nodename=c1

Files:
  /etc/slurm/slurm.conf   read unless conf= is among the module arguments
                          (SLURM_CONF in the environment is never read)
  /run/slurm/conf/        slurmd's configless cache, read when there is no
                          /etc/slurm/slurm.conf (root's, not writable by
                          group or others)
  cgroup.conf             beside slurm.conf
  SlurmdSpoolDir          the <NodeName>_<job>.4294967292 stepd sockets

The module logs one line per login to syslog (authpriv): grep pam_adopt in
/var/log/auth.log (Debian) or /var/log/secure (RHEL)."
)]
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
    /// It runs the module's own login core, so it prints the decision and
    /// reason the module would log (and the decision line itself); it only
    /// leaves out the adoption. Exit status: 0 if the login would get past
    /// the module (adopted, allowed or ignored), 1 if it would be denied,
    /// for whatever reason (a broken slurm.conf under
    /// action_generic_failure=deny included), 2 for a usage error.
    Check {
        /// The user who would log in.
        user: String,
        /// The PAM service the login would come through.
        #[arg(long, default_value = "sshd")]
        service: String,
        /// The ssh client's end of a live connection (ADDR:PORT): ask the
        /// slurmd on ADDR which job owns it, as the module would.
        #[arg(long, value_name = "ADDR:PORT")]
        from: Option<SocketAddr>,
        /// This node's end of that connection; defaults to port 22 on the
        /// address this host would use to reach ADDR.
        #[arg(long, value_name = "ADDR:PORT", requires = "from")]
        to: Option<SocketAddr>,
        /// Module arguments, as written in the PAM file.
        #[arg(last = true)]
        module_args: Vec<String>,
    },
    /// Check this node's PAM, sshd and Slurm configuration for the mistakes
    /// that deny everyone, let logins in unconfined, or let them escape
    /// their job.
    ///
    /// Reads the PAM service file with its includes, sshd_config with its
    /// Include files and Match blocks, slurm.conf and cgroup.conf (the
    /// module's conf= if given), the cgroup mode, the module's options and
    /// SELinux state, and prints one line per finding: ok, warn or fail,
    /// the check, FILE:LINE and what it means, then a one-sentence fix.
    /// Nothing is changed. Exit status: 0 all ok, 1 warnings, 2 failures.
    Doctor {
        /// The PAM service to check (/etc/pam.d/SERVICE).
        #[arg(long, default_value = "sshd", value_name = "SERVICE")]
        pam_service: String,
        /// Read every file under DIR instead of / (a copy of a node's
        /// /etc, and optionally proc/self/mountinfo and sys/fs/selinux).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Read this file as the service's PAM file (its includes are still
        /// taken from /etc/pam.d, under --root).
        #[arg(long, value_name = "PATH")]
        pam_file: Option<PathBuf>,
        /// Read this sshd_config instead of /etc/ssh/sshd_config.
        #[arg(long, value_name = "PATH")]
        sshd_config: Option<PathBuf>,
        /// This node's NodeName (default: nodename= on the PAM line, else
        /// found from the host name the way the module does).
        #[arg(long, value_name = "NAME")]
        nodename: Option<String>,
        /// The host name to look up in slurm.conf instead of this host's
        /// (under --root, instead of the copy's etc/hostname).
        #[arg(long, value_name = "NAME", conflicts_with = "nodename")]
        hostname: Option<String>,
        /// Treat files under DIR (a node path) as on a network filesystem.
        #[arg(long, value_name = "DIR", hide = true)]
        network_fs: Vec<PathBuf>,
        /// Print a JSON array of {check, status, file, line, message, fix}.
        #[arg(long)]
        json: bool,
    },
    /// Who is logged into which job on this node: for each job with an
    /// extern step, the logins pam_adopt adopted into it.
    ///
    /// For each job: its user and extern stepd (asked over the stepd's
    /// socket, which must pass the same owner and peer checks as for the
    /// module). For each adopted login: the process the module adopted
    /// (sshd's per-connection process), the client's address and port, when
    /// it started, and every process under it. Processes left in the extern
    /// step by a login that has ended are listed as "not under a login".
    /// Read from the spool directory and /proc; run as root to see other
    /// users' connections. Nothing is changed. Exit status: 0 on a report
    /// (also when there are no jobs), 2 when slurm.conf or the spool
    /// directory cannot be read.
    ///
    /// With --json: an array with one object per job: {job, uid, user,
    /// stepd_pid, stepd_error, logins: [{pid, command, remote, started,
    /// seconds, processes: [{pid, uid, user, command, started}]}],
    /// unattached: [...]}; times are UTC, ISO 8601.
    Sessions {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Module arguments, as written in the PAM file (conf=, nodename=).
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
            from,
            to,
            module_args,
        } => check::run(&check::Request {
            user: &user,
            service: &service,
            from,
            to,
            module_args: &module_args,
        }),
        Command::Doctor {
            pam_service,
            root,
            pam_file,
            sshd_config,
            nodename,
            hostname,
            network_fs,
            json,
        } => {
            let args = doctor::Args {
                root: root::Root::new(root),
                service: pam_service,
                pam_file,
                sshd_config,
                nodename,
                hostname,
                network_fs,
            };
            let findings = doctor::run(&args);
            if json {
                print!("{}", report::json(&findings));
            } else {
                print!("{}", report::text(&findings));
            }
            ExitCode::from(report::exit_code(&findings))
        }
        Command::Sessions { json, module_args } => sessions::run(&module_args, json),
    }
}
