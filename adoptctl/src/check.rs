//! `adoptctl check`: a dry run of a login through the same login core the
//! module runs, on the live node, with the adoption left out. It prints
//! what the core found, the lines the module would log, and the decision
//! and reason exactly as the module's decision line would carry them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Instant;

use adopt_login::callerid;
use adopt_login::decide::{self, Adopted, CallerIdLookup, JobScan, Login, NodeOps};
use adopt_login::live::LiveNode;
use adopt_login::node::{AdoptError, NodeError};
use adopt_login::options::Options;
use adopt_login::outcome::{Decision, Priority};
use adopt_login::user_lookup::UserLookupError;
use slurm_node::netinfo::Connection;
use slurm_node::select::CallerId;

/// What `adoptctl check` was asked.
#[derive(Debug)]
pub struct Request<'a> {
    pub user: &'a str,
    pub service: &'a str,
    /// The ssh client's end of a live connection, to trace with callerid.
    pub from: Option<SocketAddr>,
    /// This node's end of it.
    pub to: Option<SocketAddr>,
    pub module_args: &'a [String],
}

/// The live node with the adoption left out, printing what it sees as the
/// core asks.
struct DryRun {
    live: LiveNode,
    from: Option<Connection>,
    scan: Option<JobScan>,
}

impl NodeOps for DryRun {
    fn user_uid(&mut self, user: &str, deadline: Instant) -> Result<Option<u32>, UserLookupError> {
        self.live.user_uid(user, deadline)
    }

    fn load_node(&mut self, opts: &Options) -> Result<(), NodeError> {
        self.live.load_node(opts)?;
        if let Some(view) = self.live.view() {
            println!("config:     {}", view.conf.path.display());
            println!("node:       {}", view.node.name);
            println!("spool dir:  {}", view.spool_dir.display());
        }
        Ok(())
    }

    fn found(&self) -> Vec<String> {
        self.live.found()
    }

    fn scan_user_jobs(&mut self, uid: u32, deadline: Instant) -> Result<JobScan, NodeError> {
        let scan = self.live.scan_user_jobs(uid, deadline)?;
        self.scan = Some(scan.clone());
        Ok(scan)
    }

    fn starting_jobs(
        &mut self,
        uid: u32,
        opts: &Options,
    ) -> (Vec<slurm_node::prolog_records::StartedJob>, Option<String>) {
        let (jobs, error) = self.live.starting_jobs(uid, opts);
        for j in &jobs {
            println!(
                "starting:   job {} (its Prolog began {} s ago, no extern step yet)",
                j.job_id,
                j.age.as_secs()
            );
        }
        (jobs, error)
    }

    fn wait_for_extern(
        &mut self,
        uid: u32,
        jobs: &[u32],
        opts: &Options,
        deadline: Instant,
    ) -> adopt_login::decide::ExternWait {
        self.live.wait_for_extern(uid, jobs, opts, deadline)
    }

    fn callerid(&mut self, local_version: Option<u32>, deadline: Instant) -> CallerIdLookup {
        let (Some(connection), Some(view)) = (self.from, self.live.view()) else {
            println!(
                "callerid: a login would ask the source node's slurmd (give --from ADDR:PORT to ask it now)"
            );
            return callerid::Lookup::no_socket().summary();
        };
        let lookup = callerid::ask(view, connection, local_version, deadline);
        let slurmd = lookup.slurmd.map_or("-".to_owned(), |a| a.to_string());
        let (client, server) = (connection.remote, connection.local);
        match (&lookup.answer, &lookup.error) {
            (_, Some(e)) => println!("callerid: slurmd {slurmd}: {e}"),
            (CallerId::Job(j), _) => {
                println!("callerid: slurmd {slurmd}: {client} -> {server} belongs to job {j}");
            }
            _ => println!("callerid: slurmd {slurmd}: no job owns {client} -> {server}"),
        }
        lookup.summary()
    }

    fn adopt(
        &mut self,
        job_id: u32,
        _uid: u32,
        _pid: i32,
        _opts: &Options,
    ) -> Result<Adopted, AdoptError> {
        let found = self
            .scan
            .as_ref()
            .is_some_and(|s| s.mine.iter().any(|j| j.job_id == job_id));
        if !found {
            return Err(AdoptError::JobVanished { job_id });
        }
        Ok(Adopted {
            via: "dry run, not adopted",
            ..Adopted::default()
        })
    }
}

/// Run the check; the exit status follows the decision: 0 for adopt,
/// allow and ignore (the login would get past this module), 1 for deny.
pub fn run(req: &Request<'_>) -> ExitCode {
    let started = Instant::now();
    let (opts, warnings) = Options::parse(req.module_args);
    for w in &warnings {
        println!("warning: {w}");
    }
    let from = req.from.map(|client| Connection {
        local: req
            .to
            .unwrap_or_else(|| SocketAddr::new(route_source(client), 22)),
        remote: client,
        inode: 0,
    });
    let mut node = DryRun {
        live: LiveNode::new(),
        from,
        scan: None,
    };
    // The core asks callerid only when the module would (several jobs, or
    // single_job_skip_rpc=0), so the dry run decides as a login would.
    let login = Login {
        service: req.service,
        user: Some(req.user),
        pid: 0,
        started,
    };
    let outcome = decide::decide(&login, &opts, &mut node);
    if let (Some(scan), Some(uid)) = (&node.scan, outcome.uid) {
        print_scan(req.user, uid, scan);
    }
    for line in &outcome.log {
        let level = match line.priority {
            Priority::Err => "err",
            Priority::Warning => "warning",
            Priority::Info => "info",
            Priority::Debug => "debug",
        };
        println!("log {level}: {}", line.text);
    }
    println!(
        "decision line: {}",
        outcome.decision_line("-", 0, started.elapsed().as_micros())
    );
    let reason = outcome.reason;
    match (outcome.decision, outcome.job) {
        (Decision::Adopt, Some(job)) => {
            println!("decision: adopt into job {job} (reason: {reason})");
        }
        (Decision::Adopt, None) => println!("decision: adopt (reason: {reason})"),
        (Decision::Allow, _) => println!("decision: allow without adoption (reason: {reason})"),
        (Decision::Ignore, _) => {
            println!("decision: ignore, the rest of the PAM stack decides (reason: {reason})");
        }
        (Decision::Deny, _) => match &outcome.user_message {
            Some(message) => {
                println!("decision: deny (reason: {reason}); the user would see: {message}");
            }
            None => println!("decision: deny (reason: {reason})"),
        },
    }
    match outcome.decision {
        Decision::Deny => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

fn print_scan(user: &str, uid: u32, scan: &JobScan) {
    println!(
        "extern steps: {} of {user} (uid {uid}), {} of other users, {} unreachable, {} untrusted, {} skipped",
        scan.mine.len(),
        scan.others,
        scan.unreachable.len(),
        scan.untrusted.len(),
        scan.skipped.len()
    );
    for job in &scan.mine {
        let (secs, nanos) = job.started;
        println!(
            "  job {:>10}  started {secs}.{nanos:09}  stepd protocol {:#06x}  {}",
            job.job_id,
            job.protocol_version,
            job.socket.display()
        );
    }
    for u in &scan.unreachable {
        let what = if u.stale { "stale" } else { "unreachable" };
        println!("  {what} {}: {}", u.socket.display(), u.error);
    }
    for u in &scan.untrusted {
        println!(
            "  untrusted {}: listener uid {} pid {}, neither root nor SlurmdUser",
            u.socket.display(),
            u.uid,
            u.pid
        );
    }
    for (path, why) in &scan.skipped {
        println!("  skipped {}: {why}", path.display());
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
