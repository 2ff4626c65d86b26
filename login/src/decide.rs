//! The login core: one function from the facts of a login and the module
//! options to an [`Outcome`], with every I/O step behind [`NodeOps`].
//!
//! As youki's libcgroups injects its `Syscall`, the core is handed its
//! node: the PAM module gives it [`crate::live::LiveNode`], `adoptctl
//! check` a dry-run wrapper of the same, and the table tests a fake with no
//! sockets, so every branch is tested without a stepd.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

use slurm_node::prolog_records::StartedJob;
use slurm_node::select::{self, CallerId, MSG_ADOPT_FAILED, MSG_NO_SLURM, NoJobsAction, Selection};

use crate::node::{AdoptError, NodeError};
pub use crate::node::{Adopted, Untrusted};
use crate::options::{AdoptFailureAction, GenericFailureAction, Options};
use crate::outcome::{Decision, LogLine, Outcome, Priority, Reason};
use crate::user_lookup::UserLookupError;

/// The facts of a login that the front end read from PAM.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub service: &'a str,
    /// PAM_USER; `None` when it is unset.
    pub user: Option<&'a str>,
    /// The process to adopt (sshd's per-connection child).
    pub pid: i32,
    /// When the login reached the module: the budget runs from here.
    pub started: Instant,
}

/// One of the user's extern steps, as the scan found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundJob {
    pub job_id: u32,
    /// The extern step socket's ctime (seconds, nanoseconds).
    pub started: (i64, i64),
    /// The stepd's protocol version, from its handshake.
    pub protocol_version: u32,
    pub socket: PathBuf,
}

/// A stepd that did not say who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub socket: PathBuf,
    pub error: String,
    /// Nobody listens on the socket: its stepd exited, no job lives there.
    pub stale: bool,
}

/// What asking the node's extern stepds found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobScan {
    pub mine: Vec<FoundJob>,
    /// Extern steps of other users.
    pub others: usize,
    pub unreachable: Vec<Unreachable>,
    /// Listeners not trusted by their credentials: not asked.
    pub untrusted: Vec<Untrusted>,
    /// Sockets not asked at all, and why (symlink, untrusted owner...).
    pub skipped: Vec<(PathBuf, String)>,
}

/// What the callerid step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdLookup {
    pub answer: CallerId,
    /// The client end, as "ADDR port N", when there was a TCP connection.
    pub from: Option<String>,
    pub error: Option<String>,
    /// How this process's connection was found (its socket fds, or the
    /// `/proc/net` tables and why), for a debug line.
    pub found_via: Option<String>,
}

/// Every I/O step of a login. Each call is bounded by the deadline it is
/// given or by the options' `timeout_ms`; none may block past it.
pub trait NodeOps {
    /// PAM_USER's uid, `None` for no such user, known by `deadline`.
    fn user_uid(&mut self, user: &str, deadline: Instant) -> Result<Option<u32>, UserLookupError>;
    /// Read slurm.conf and find this node. Called once, before the others.
    fn load_node(&mut self, opts: &Options) -> Result<(), NodeError>;
    /// After [`NodeOps::load_node`]: which slurm.conf was read and how the
    /// node name was settled, for debug lines.
    fn found(&self) -> Vec<String> {
        Vec::new()
    }
    /// Ask the extern stepds whose they are, keeping `uid`'s.
    fn scan_user_jobs(&mut self, uid: u32, deadline: Instant) -> Result<JobScan, NodeError>;
    /// Ask the source node's slurmd which job this login came from.
    fn callerid(&mut self, local_version: Option<u32>, deadline: Instant) -> CallerIdLookup;
    /// The user's jobs the Prolog recorded here whose extern step is not
    /// in the spool yet (newest first), and why none could be read, if
    /// so. A node without the hooks has none.
    fn starting_jobs(&mut self, _uid: u32, _opts: &Options) -> (Vec<StartedJob>, Option<String>) {
        (Vec::new(), None)
    }
    /// Wait, at most until `deadline`, for one of `jobs`' extern step
    /// sockets to appear, or for their records to end (an Epilog that ran:
    /// the job was ending, not starting).
    fn wait_for_extern(
        &mut self,
        _uid: u32,
        _jobs: &[u32],
        _opts: &Options,
        _deadline: Instant,
    ) -> ExternWait {
        ExternWait::TimedOut
    }
    /// Put `pid` into `job_id`'s extern step (one the scan found).
    fn adopt(
        &mut self,
        job_id: u32,
        uid: u32,
        pid: i32,
        opts: &Options,
    ) -> Result<Adopted, AdoptError>;
}

/// How waiting for a starting job's extern step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternWait {
    /// A socket appeared: ask the stepds again.
    Up,
    /// The records ended first: the job's Epilog ran, so it was ending,
    /// between its extern step's exit and its Epilog.
    Ended,
    TimedOut,
}

/// Decide one login and, when a job is chosen, adopt it through `node`.
pub fn decide(login: &Login<'_>, opts: &Options, node: &mut impl NodeOps) -> Outcome {
    let mut out = Outcome {
        decision: Decision::Deny,
        reason: Reason::NoUser,
        callerid: CallerId::NotAsked,
        job: None,
        user: login.user.unwrap_or_default().to_owned(),
        uid: None,
        service: login.service.to_owned(),
        user_message: None,
        env: Vec::new(),
        log: Vec::new(),
        unanswered: 0,
    };
    run(login, opts, node, &mut out);
    out
}

fn log(out: &mut Outcome, priority: Priority, text: impl Into<String>) {
    out.log.push(LogLine {
        priority,
        text: text.into(),
    });
}

fn settle(out: &mut Outcome, decision: Decision, reason: Reason) {
    out.decision = decision;
    out.reason = reason;
}

/// `action_generic_failure` decides: the login could not be looked at.
fn generic_failure(out: &mut Outcome, opts: &Options, reason: Reason) {
    let decision = match opts.action_generic_failure {
        GenericFailureAction::Allow => Decision::Allow,
        GenericFailureAction::Ignore => Decision::Ignore,
        GenericFailureAction::Deny => Decision::Deny,
    };
    settle(out, decision, reason);
}

fn run(login: &Login<'_>, opts: &Options, node: &mut impl NodeOps, out: &mut Outcome) {
    let deadline = login.started + opts.timeout;
    if !opts.service_allowed(login.service) {
        log(
            out,
            Priority::Info,
            "Not adopting process since this is not an allowed pam service",
        );
        return settle(out, Decision::Ignore, Reason::ServiceNotListed);
    }
    let user = match login.user {
        Some(u) if !u.is_empty() => u,
        _ => {
            log(out, Priority::Err, "No username in PAM_USER? Fail!");
            return generic_failure(out, opts, Reason::NoUser);
        }
    };
    let uid = match node.user_uid(user, deadline) {
        Ok(Some(uid)) => uid,
        Ok(None) => {
            log(
                out,
                Priority::Err,
                format!("getpwnam({user}): no such user"),
            );
            return generic_failure(out, opts, Reason::UnknownUser);
        }
        Err(e) => {
            log(out, Priority::Err, e.to_string());
            return generic_failure(out, opts, Reason::UnknownUser);
        }
    };
    out.uid = Some(uid);
    // Root is let through before any Slurm file is read, so a broken
    // slurm.conf can still be fixed over ssh.
    if uid == 0 {
        log(out, Priority::Debug, "Ignoring root user");
        return settle(out, Decision::Ignore, Reason::Root);
    }
    if let Err(e) = node.load_node(opts) {
        log(out, Priority::Err, e.to_string());
        out.user_message = Some(MSG_NO_SLURM.into());
        return generic_failure(out, opts, Reason::NodeSetup);
    }
    for line in node.found() {
        log(out, Priority::Debug, line);
    }
    let Some(mut scan) = look(opts, node, out, uid, deadline) else {
        return;
    };
    if scan.mine.is_empty() {
        match wait_for_starting(opts, node, out, user, uid, deadline) {
            JobStart::NoRecord => {}
            JobStart::Up => match look(opts, node, out, uid, deadline) {
                Some(again) => scan = again,
                None => return,
            },
            JobStart::NotUp(job_id) => {
                out.job = Some(job_id);
                out.reason = Reason::JobStarting;
                out.decision = match opts.action_no_jobs {
                    NoJobsAction::Ignore => Decision::Ignore,
                    NoJobsAction::Deny => {
                        out.user_message = Some(Cow::Owned(select::msg_job_starting(job_id)));
                        Decision::Deny
                    }
                };
                return;
            }
        }
    }
    let unanswered = out.unanswered;

    let policy = opts.policy();
    let candidates: Vec<select::Candidate> = scan
        .mine
        .iter()
        .map(|j| select::Candidate {
            job_id: j.job_id,
            started: j.started,
        })
        .collect();
    // A stepd that did not answer may hide another job of the user: one
    // job found is then not known to be the only one, so the RPC is asked
    // as for several, and `only_job` is never claimed.
    let incomplete = unanswered > 0 && !candidates.is_empty();
    if incomplete || select::needs_callerid(&candidates, &policy) {
        // Half of what is left at most: the adoption after it needs time too.
        let now = Instant::now();
        let rpc_deadline = now + deadline.saturating_duration_since(now) / 2;
        let local_version = scan.mine.first().map(|j| j.protocol_version);
        let lookup = node.callerid(local_version, rpc_deadline);
        log_callerid(out, user, &lookup);
        out.callerid = lookup.answer;
    }
    let selection = select::select(&candidates, &out.callerid, &policy);
    out.reason = selection.reason().into();
    match selection {
        Selection::Deny { message, .. } => {
            out.user_message = Some(message.into());
            out.decision = Decision::Deny;
        }
        Selection::Ignore { .. } => out.decision = Decision::Ignore,
        Selection::Allow { .. } => out.decision = Decision::Allow,
        Selection::Adopt { job_id, .. } => adopt(login, opts, node, out, uid, job_id),
    }
}

/// Ask the stepds, log what they said, and settle the failures to look
/// (`None`: `out` is decided). Sets `out.unanswered`.
fn look(
    opts: &Options,
    node: &mut impl NodeOps,
    out: &mut Outcome,
    uid: u32,
    deadline: Instant,
) -> Option<JobScan> {
    let scan = match node.scan_user_jobs(uid, deadline) {
        Ok(s) => s,
        Err(e) => {
            log(out, Priority::Err, e.to_string());
            out.user_message = Some(MSG_NO_SLURM.into());
            generic_failure(out, opts, Reason::Spool);
            return None;
        }
    };
    for (path, why) in &scan.skipped {
        log(
            out,
            Priority::Warning,
            format!("skipping {}: {why}", path.display()),
        );
    }
    // With none of the user's jobs found, a live stepd that did not answer
    // may be the user's own: that is a failure to look, not "no jobs", so
    // action_no_jobs=ignore cannot let the login past a hung stepd. A
    // socket nobody listens on (its stepd exited) hides no job.
    let unanswered_priority = if scan.mine.is_empty() {
        Priority::Err
    } else {
        Priority::Debug
    };
    let mut unanswered = 0;
    for u in &scan.unreachable {
        if u.stale {
            log(
                out,
                Priority::Debug,
                format!("stale stepd socket {}: {}", u.socket.display(), u.error),
            );
        } else {
            unanswered += 1;
            log(
                out,
                unanswered_priority,
                format!("stepd {} unreachable: {}", u.socket.display(), u.error),
            );
        }
    }
    out.unanswered = unanswered;
    // Once per socket and login: who listens there, so it can be found.
    let untrusted_priority = if scan.mine.is_empty() {
        Priority::Err
    } else {
        Priority::Warning
    };
    for u in &scan.untrusted {
        log(
            out,
            untrusted_priority,
            format!(
                "stepd socket {} is served by uid {} (pid {}), neither root nor SlurmdUser: not asked",
                u.socket.display(),
                u.uid,
                u.pid
            ),
        );
    }
    // No job of the user among the trusted stepds, and a listener that
    // was not asked: if SlurmdUser is wrong in slurm.conf every stepd is
    // one, so "no jobs" would be a lie that action_no_jobs=ignore could
    // let a login past. It is a failure to look, as for a hung stepd, and
    // named apart because its fix differs (SlurmdUser, or whoever runs
    // that listener). It comes first: it is a standing fault that fails
    // every login the same way, where a hung stepd may clear. With a job
    // found, the listener is skipped like a bad socket file: nothing was
    // asked of it, so it cannot hold the login to the callerid path.
    if scan.mine.is_empty() && !scan.untrusted.is_empty() {
        generic_failure(out, opts, Reason::StepdUntrusted);
        return None;
    }
    if scan.mine.is_empty() && unanswered > 0 {
        generic_failure(out, opts, Reason::StepdUnreachable);
        return None;
    }
    Some(scan)
}

enum JobStart {
    /// No record of a job of the user starting here.
    NoRecord,
    /// One of the recorded jobs' extern step appeared: look again.
    Up,
    /// Still no extern step at the deadline.
    NotUp(u32),
}

/// With none of the user's extern steps found: a job the Prolog recorded
/// (it runs before slurmd starts the extern step) is waited for, within
/// the login's deadline, so a login that races the job's start is adopted
/// instead of told it has no job.
fn wait_for_starting(
    opts: &Options,
    node: &mut impl NodeOps,
    out: &mut Outcome,
    user: &str,
    uid: u32,
    deadline: Instant,
) -> JobStart {
    let (jobs, error) = node.starting_jobs(uid, opts);
    if let Some(e) = error {
        // Unreadable records are no reason to refuse anyone: the login
        // goes on as if there were none.
        log(out, Priority::Warning, format!("job records not read: {e}"));
    }
    let Some(newest) = jobs.first().copied() else {
        return JobStart::NoRecord;
    };
    let ids: Vec<u32> = jobs.iter().map(|j| j.job_id).collect();
    let left = deadline.saturating_duration_since(Instant::now());
    log(
        out,
        Priority::Info,
        format!(
            "job {} of {user} is starting on this node (its Prolog began {} s ago): waiting for its extern step, {} ms left of the login's budget",
            newest.job_id,
            newest.age.as_secs(),
            left.as_millis()
        ),
    );
    match node.wait_for_extern(uid, &ids, opts, deadline) {
        ExternWait::Up => {
            log(
                out,
                Priority::Debug,
                "an extern step of the starting jobs is up: asking the stepds again",
            );
            JobStart::Up
        }
        ExternWait::Ended => {
            log(
                out,
                Priority::Info,
                format!(
                    "job {} was ending, not starting: its Epilog ran during the wait",
                    newest.job_id
                ),
            );
            JobStart::NoRecord
        }
        ExternWait::TimedOut => JobStart::NotUp(newest.job_id),
    }
}

fn adopt(
    login: &Login<'_>,
    opts: &Options,
    node: &mut impl NodeOps,
    out: &mut Outcome,
    uid: u32,
    job_id: u32,
) {
    out.job = Some(job_id);
    let pid = login.pid;
    match node.adopt(job_id, uid, pid, opts) {
        Ok(adopted) => {
            log(
                out,
                Priority::Info,
                format!(
                    "Process {pid} adopted into job {job_id} via {}",
                    adopted.via
                ),
            );
            if let Some(e) = &adopted.x11_error {
                log(
                    out,
                    Priority::Err,
                    format!("job {job_id}: X11 display not exported: {e}"),
                );
            }
            out.env = job_env(out, job_id, &adopted);
            out.decision = Decision::Adopt;
        }
        Err(e @ AdoptError::JobVanished { .. }) => {
            log(
                out,
                Priority::Err,
                format!("Process {pid} not adopted: {e}"),
            );
            generic_failure(out, opts, Reason::JobVanished);
        }
        Err(e) => {
            log(
                out,
                Priority::Err,
                format!("Process {pid} adoption FAILED for job {job_id}: {e}"),
            );
            out.reason = Reason::AdoptFailed;
            match opts.action_adopt_failure {
                AdoptFailureAction::Allow => out.decision = Decision::Allow,
                AdoptFailureAction::Deny => {
                    out.user_message = Some(MSG_ADOPT_FAILED.into());
                    out.decision = Decision::Deny;
                }
            }
        }
    }
}

fn log_callerid(out: &mut Outcome, user: &str, lookup: &CallerIdLookup) {
    if let Some(via) = &lookup.found_via {
        log(
            out,
            Priority::Debug,
            format!("callerid: connection found from {via}"),
        );
    }
    if let Some(e) = &lookup.error {
        log(out, Priority::Err, format!("callerid RPC failed: {e}"));
    }
    let from = lookup.from.as_deref().unwrap_or("a non-TCP login");
    let line = match lookup.answer {
        CallerId::Job(job) => format!("From {from} as {user}: member of job {job}"),
        _ => format!("From {from} as {user}: unable to determine source job"),
    };
    log(out, Priority::Info, line);
}

/// SLURM_JOB_ID, and DISPLAY and XAUTHORITY when the job forwards X11, as
/// pam_slurm_adopt exports them. The stepd's xauthority path is dropped,
/// with a log line, if it holds a control character: a newline in a PAM
/// environment value would become a second variable in some consumers.
fn job_env(out: &mut Outcome, job_id: u32, adopted: &Adopted) -> Vec<(&'static str, String)> {
    let mut vars = vec![("SLURM_JOB_ID", job_id.to_string())];
    if let Some(x11) = &adopted.x11 {
        vars.push(("DISPLAY", format!("localhost:{}.0", x11.display)));
        match &x11.xauthority {
            Some(path) if path.chars().any(char::is_control) => log(
                out,
                Priority::Err,
                format!(
                    "job {job_id}: XAUTHORITY from the stepd holds a control character; not exported"
                ),
            ),
            Some(path) => vars.push(("XAUTHORITY", path.clone())),
            None => {}
        }
    }
    vars
}

#[cfg(test)]
mod tests;
