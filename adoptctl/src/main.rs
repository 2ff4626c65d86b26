//! adoptctl: look at what pam_adopt.so would do on this node, without
//! doing it.

mod doctor;
mod pamstack;
mod report;
mod root;
mod sshdconf;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use adopt_login::callerid;
use adopt_login::node::{self, NodeView};
use adopt_login::options::Options;
use clap::{Parser, Subcommand};
use slurm_node::netinfo::Connection;
use slurm_node::select::{self, CallerId, Selection};

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

Files:
  /etc/slurm/slurm.conf   read unless conf= is among the module arguments
                          (SLURM_CONF in the environment is never read)
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
    /// Exit status: 0 if the login would be let in (adopted, allowed or
    /// ignored), 1 if it would be denied, 2 if the check itself failed.
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
        /// The host name to look up in slurm.conf instead of this host's.
        #[arg(long, value_name = "NAME", conflicts_with = "nodename")]
        hostname: Option<String>,
        /// Treat files under DIR (a node path) as on a network filesystem.
        #[arg(long, value_name = "DIR", hide = true)]
        network_fs: Vec<PathBuf>,
        /// Print a JSON array of {check, status, file, line, message, fix}.
        #[arg(long)]
        json: bool,
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
        } => check(&user, &service, from, to, &module_args),
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
    }
}

fn check(
    user: &str,
    service: &str,
    from: Option<SocketAddr>,
    to: Option<SocketAddr>,
    module_args: &[String],
) -> ExitCode {
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
    let asked = from.is_some() || select::needs_callerid(&candidates, &policy);
    let callerid = match from {
        Some(client) if asked => {
            let server = to.unwrap_or_else(|| SocketAddr::new(route_source(client), 22));
            let connection = Connection {
                local: server,
                remote: client,
                inode: 0,
            };
            let version = scan.mine.first().map(|j| j.client.protocol_version());
            let lookup = callerid::ask(&view, connection, version, Instant::now() + opts.timeout);
            let slurmd = lookup.slurmd.map_or("-".to_owned(), |a| a.to_string());
            match (&lookup.answer, &lookup.error) {
                (_, Some(e)) => println!("callerid: slurmd {slurmd}: {e}"),
                (CallerId::Job(j), _) => {
                    println!("callerid: slurmd {slurmd}: {client} -> {server} belongs to job {j}")
                }
                _ => println!("callerid: slurmd {slurmd}: no job owns {client} -> {server}"),
            }
            lookup.answer
        }
        _ if asked => {
            println!(
                "callerid: a login would ask the source node's slurmd (give --from ADDR:PORT to ask it now)"
            );
            CallerId::NoSocket
        }
        _ => CallerId::NotAsked,
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

/// The local address the kernel would route to `peer` from: connecting a
/// UDP socket sends nothing but picks the source address.
fn route_source(peer: SocketAddr) -> IpAddr {
    let unspecified = match peer {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    UdpSocket::bind(SocketAddr::new(unspecified, 0))
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map_or(unspecified, |a| a.ip())
}
