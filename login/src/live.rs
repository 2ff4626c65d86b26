//! The real node under the login core: getpwnam, slurm.conf, the spool
//! directory and its stepds, the callerid RPC and the adoption itself.

use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant, SystemTime};

use slurm_node::prolog_records::{self, START_GRACE, StartedJob};
use slurm_node::spool::EXTERN_STEP_ID;

use crate::callerid::{self, Lookup};
use crate::decide::{Adopted, CallerIdLookup, ExternWait, FoundJob, JobScan, NodeOps, Unreachable};
use crate::node::{self, AdoptError, NodeError, NodeView, Scan};
use crate::options::Options;
use crate::user_lookup::{self, UserLookupError};

/// This node, as a login meets it. After [`NodeOps::load_node`] it holds
/// the node's view; after the scan, the open stepd connections of the
/// user's jobs, so the adoption needs no second connect and handshake.
#[derive(Debug, Default)]
pub struct LiveNode {
    view: Option<NodeView>,
    scan: Option<Scan>,
}

impl LiveNode {
    pub fn new() -> LiveNode {
        LiveNode::default()
    }

    /// The node's view, once loaded.
    pub fn view(&self) -> Option<&NodeView> {
        self.view.as_ref()
    }

    fn loaded(&self) -> Result<&NodeView, NodeError> {
        self.view.as_ref().ok_or(NodeError::NotLoaded)
    }

    /// Whether `job_id`'s extern step socket is in the spool.
    fn extern_socket_there(&self, job_id: u32) -> bool {
        let Some(view) = self.view.as_ref() else {
            return false;
        };
        let name = format!("{}_{job_id}.{EXTERN_STEP_ID}", view.node.name);
        std::fs::symlink_metadata(view.spool_dir.join(name))
            .is_ok_and(|m| m.file_type().is_socket())
    }
}

/// How often a login that waits for a starting job looks at the spool:
/// a stat per job, against the tens of milliseconds slurmd takes to start
/// a stepd.
const EXTERN_POLL: Duration = Duration::from_millis(20);
/// What a wait for a starting job leaves of the login's budget.
const WAIT_RESERVE: Duration = Duration::from_millis(500);
/// The records are read again every this many polls (100 ms).
const RECORD_POLL_EVERY: u32 = 5;

impl NodeOps for LiveNode {
    fn user_uid(&mut self, user: &str, deadline: Instant) -> Result<Option<u32>, UserLookupError> {
        user_lookup::uid_within(user, deadline)
    }

    fn load_node(&mut self, opts: &Options) -> Result<(), NodeError> {
        self.view = Some(NodeView::load(opts)?);
        Ok(())
    }

    fn found(&self) -> Vec<String> {
        self.view
            .as_ref()
            .map(|v| v.found.clone())
            .unwrap_or_default()
    }

    fn scan_user_jobs(&mut self, uid: u32, deadline: Instant) -> Result<JobScan, NodeError> {
        let scan = node::scan_user_jobs(self.loaded()?, uid, deadline)?;
        let found = JobScan {
            mine: scan
                .mine
                .iter()
                .map(|j| FoundJob {
                    job_id: j.socket.job_id,
                    started: j.socket.ctime,
                    protocol_version: j.client.protocol_version(),
                    socket: j.socket.path.clone(),
                })
                .collect(),
            others: scan.others,
            unreachable: scan
                .unreachable
                .iter()
                .map(|(path, e)| Unreachable {
                    socket: path.clone(),
                    error: e.to_string(),
                    stale: e.is_stale_socket(),
                })
                .collect(),
            untrusted: scan.untrusted.clone(),
            skipped: scan
                .skipped
                .iter()
                .map(|(path, why)| (path.clone(), why.to_string()))
                .collect(),
        };
        self.scan = Some(scan);
        Ok(found)
    }

    fn callerid(&mut self, local_version: Option<u32>, deadline: Instant) -> CallerIdLookup {
        // This process's own TCP connection: the module runs inside sshd's
        // per-connection process.
        let lookup = match self.view.as_ref() {
            Some(view) => callerid::lookup(view, local_version, deadline),
            None => Lookup::no_socket(),
        };
        lookup.summary()
    }

    fn starting_jobs(&mut self, uid: u32, opts: &Options) -> (Vec<StartedJob>, Option<String>) {
        match prolog_records::started_jobs(&opts.state_dir, uid, SystemTime::now()) {
            Ok(jobs) => (
                jobs.into_iter()
                    .filter(|j| j.age < START_GRACE && !self.extern_socket_there(j.job_id))
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    }

    fn wait_for_extern(
        &mut self,
        uid: u32,
        jobs: &[u32],
        opts: &Options,
        deadline: Instant,
    ) -> ExternWait {
        // The rescan and the adoption after a socket appears need time of
        // their own: the wait ends WAIT_RESERVE (at most a quarter of the
        // budget) before the login's deadline.
        let reserve = WAIT_RESERVE.min(opts.timeout / 4);
        let deadline = deadline.checked_sub(reserve).unwrap_or(deadline);
        let mut polls: u32 = 0;
        loop {
            if jobs.iter().any(|&j| self.extern_socket_there(j)) {
                return ExternWait::Up;
            }
            // A job between its extern step's exit and its Epilog looks
            // like one in its Prolog; its Epilog ends the record.
            if polls % RECORD_POLL_EVERY == RECORD_POLL_EVERY - 1 {
                let still = prolog_records::started_jobs(&opts.state_dir, uid, SystemTime::now())
                    .map(|now| now.iter().any(|r| jobs.contains(&r.job_id)))
                    .unwrap_or(true);
                if !still {
                    return ExternWait::Ended;
                }
            }
            polls = polls.saturating_add(1);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ExternWait::TimedOut;
            }
            std::thread::sleep(left.min(EXTERN_POLL));
        }
    }

    fn adopt(
        &mut self,
        job_id: u32,
        uid: u32,
        pid: i32,
        opts: &Options,
    ) -> Result<Adopted, AdoptError> {
        let (Some(view), Some(scan)) = (self.view.as_ref(), self.scan.as_mut()) else {
            return Err(AdoptError::JobVanished { job_id });
        };
        let Some(job) = scan.mine.iter_mut().find(|j| j.socket.job_id == job_id) else {
            return Err(AdoptError::JobVanished { job_id });
        };
        node::adopt(job, uid, pid, view, opts)
    }
}
