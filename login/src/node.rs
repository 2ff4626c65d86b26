//! This node as the module sees it: which Slurm node it is, which extern
//! steps belong to the user, and how a process joins one of them.
//!
//! Shared by the PAM module and `adoptctl check`, so the dry run shows
//! exactly what a login would see.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slurm_node::cgroup::{CgroupError, CgroupFs, TaskOwners};
use slurm_node::conf::{ConfError, NodeEntry, SlurmConf};
use slurm_node::confsource::{self, ConfOrigin, ConfSourceError, ConfigSources};
use slurm_node::nodename::{self, NameQuery, NodeNameError};
use slurm_node::select::Candidate;
use slurm_node::spool::{self, SkipReason, SpoolError, StepSocket};
use slurm_node::stepd::{
    NamespaceFd, ScanAnswer, StepState, StepdClient, StepdError, StepdPeers, X11Display,
    scan_step_uids,
};

use crate::options::{AdoptVia, Options};

const PROC_ROOT: &str = "/proc";
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// How often a stepd that is still starting is asked again.
const STARTING_POLL: Duration = Duration::from_millis(10);
/// A stepd listens before it makes its job's cgroup directories: a socket
/// this young is asked whatever the directories say.
const CGROUP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// No slurm.conf was found, or slurmd's configless cache was refused.
    #[error(transparent)]
    ConfSource(ConfSourceError),
    /// The host is in no NodeName line and the spool does not settle it.
    #[error(transparent)]
    NodeName(NodeNameError),
    #[error("cannot read this host's name: {0}")]
    Hostname(String),
    #[error("no NodeName in {conf} matches host name '{hostname}'; set nodename= in the PAM line")]
    UnknownNode { conf: PathBuf, hostname: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("the node's config was not loaded before its spool was scanned")]
    NotLoaded,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Stepd(#[from] StepdError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("no extern-step cgroup of job {job_id} found under {root}")]
    NoCgroup { job_id: u32, root: PathBuf },
    #[error("job {job_id} is gone: its stepd closed or vanished before the adoption")]
    JobVanished { job_id: u32 },
    #[error("stepd {} of job {job_id} now says uid {owner} owns it", .socket.display())]
    OwnerChanged {
        job_id: u32,
        socket: PathBuf,
        owner: u32,
    },
    #[error("setns(type {nstype:#x}) into job {job_id}'s namespace failed: {source}")]
    Setns {
        job_id: u32,
        nstype: i32,
        source: nix::Error,
    },
}

/// The local Slurm node: its config, name and spool directory.
#[derive(Debug)]
pub struct NodeView {
    pub conf: SlurmConf,
    pub node: NodeEntry,
    pub spool_dir: PathBuf,
    /// Owners a stepd socket may have: root and SlurmUser.
    pub trusted_uids: Vec<u32>,
    /// Whom a stepd's listener may run as (SO_PEERCRED): root and
    /// SlurmdUser.
    pub stepd_peers: StepdPeers,
    /// Who may sign a callerid reply: root, SlurmUser and SlurmdUser (the
    /// source node's slurmd signs as the account it runs as).
    pub callerid_signers: Vec<u32>,
    /// Which slurm.conf was read and how the node name was settled, for
    /// debug lines.
    pub found: Vec<String>,
}

impl NodeView {
    pub fn load(opts: &Options) -> Result<NodeView, NodeError> {
        NodeView::load_from(opts, &ConfigSources::system())
    }

    /// [`NodeView::load`] with slurm.conf looked for in `sources` (tests
    /// give a tree of their own).
    pub fn load_from(opts: &Options, sources: &ConfigSources) -> Result<NodeView, NodeError> {
        let (conf, found) =
            confsource::load(opts.conf.as_deref(), sources).map_err(|e| match e {
                ConfSourceError::Conf(e) => NodeError::Conf(e),
                other => NodeError::ConfSource(other),
            })?;
        let hostname = match &opts.nodename {
            Some(_) => String::new(),
            None => nodename::local_hostname().map_err(|e| NodeError::Hostname(e.to_string()))?,
        };
        let query = NameQuery {
            given: opts.nodename.as_deref(),
            hostname: &hostname,
            host_name_fallback: found.origin == ConfOrigin::ConfiglessCache,
            root: &sources.root,
        };
        let choice = nodename::choose(&conf, &query).map_err(|e| match e {
            NodeNameError::Unlisted { conf, hostname } => NodeError::UnknownNode { conf, hostname },
            NodeNameError::Spool(e) => NodeError::Spool(e),
            other => NodeError::NodeName(other),
        })?;
        let trusted_uids = spool::trusted_owners(&conf.slurm_user);
        let peer_uids = spool::stepd_peer_uids(&conf.slurmd_user);
        let mut callerid_signers = trusted_uids.clone();
        for uid in &peer_uids {
            if !callerid_signers.contains(uid) {
                callerid_signers.push(*uid);
            }
        }
        Ok(NodeView {
            found: vec![found.describe(), choice.describe()],
            conf,
            node: choice.node,
            spool_dir: choice.spool_dir,
            trusted_uids,
            stepd_peers: StepdPeers::from_uids(peer_uids),
            callerid_signers,
        })
    }
}

/// What an adoption did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adopted {
    pub via: &'static str,
    pub x11: Option<X11Display>,
    /// Why the X11 display could not be read; the login stays adopted.
    pub x11_error: Option<String>,
    pub namespaces_joined: usize,
}

/// One of the user's jobs, with the stepd connection kept open so the
/// adoption needs no second connect and handshake.
#[derive(Debug)]
pub struct UserJob {
    pub socket: StepSocket,
    pub client: StepdClient,
}

impl UserJob {
    pub fn candidate(&self) -> Candidate {
        Candidate {
            job_id: self.socket.job_id,
            started: self.socket.ctime,
        }
    }
}

/// A stepd socket whose listener runs as neither root nor SlurmdUser
/// (`SO_PEERCRED`), so it was never asked anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub socket: PathBuf,
    pub uid: u32,
    pub pid: i32,
}

/// What a scan of the spool directory found.
#[derive(Debug, Default)]
pub struct Scan {
    pub mine: Vec<UserJob>,
    /// Extern steps of other users.
    pub others: usize,
    pub unreachable: Vec<(PathBuf, StepdError)>,
    /// Stepd sockets whose listener runs as neither root nor SlurmdUser:
    /// never sent a byte.
    pub untrusted: Vec<Untrusted>,
    pub skipped: Vec<(PathBuf, SkipReason)>,
}

impl Scan {
    pub fn candidates(&self) -> Vec<Candidate> {
        self.mine.iter().map(UserJob::candidate).collect()
    }
}

/// Ask the extern stepds on the node who owns them, keeping `uid`'s. The
/// stepds are asked at once, at most [`slurm_node::stepd::SCAN_WINDOW`] open at a time and a
/// new one opened as each answers, so a hung one costs the others nothing;
/// the other users' connections are closed as soon as they answer.
///
/// On cgroup v1, Slurm's `uid_<uid>` directory already names the user's
/// jobs, so only those stepds (and any too young to have made their
/// directories) are asked: the rest belong to other users, and asking
/// them is most of a login's cost on a busy node. On cgroup v2 a job's
/// batch and srun task directories are chowned to its owner, so a job
/// they show to be another user's is not asked; a job that shows nobody
/// (an allocation with only its extern step) always is. The stepds asked
/// still say whose job it is; the tree only narrows whom to ask.
pub fn scan_user_jobs(view: &NodeView, uid: u32, deadline: Instant) -> Result<Scan, NodeError> {
    let narrowing = narrowing(view, uid);
    // Only extern steps are asked, and on v2 a job the tree shows to be
    // another user's is left out before its socket is even looked at:
    // on a busy node those stats were a good part of a login.
    let mut ruled_out = 0;
    let listing = spool::list_steps_where(
        &view.spool_dir,
        &view.node.name,
        &view.trusted_uids,
        |name| {
            if name.step_id != slurm_node::stepd::EXTERN_STEP_ID {
                return false;
            }
            let keep = narrowing.may_be_users(name.job_id, uid);
            ruled_out += usize::from(!keep);
            keep
        },
    )?;
    let mut scan = Scan {
        skipped: listing.skipped,
        others: ruled_out,
        ..Scan::default()
    };
    let wall_clock = SystemTime::now();
    let (externs, elsewhere): (Vec<StepSocket>, Vec<StepSocket>) = listing
        .steps
        .into_iter()
        .partition(|s| worth_asking(s, &narrowing, uid, wall_clock));
    scan.others += elsewhere.len();
    // A hung stepd keeps the scan waiting until its deadline: stop at half
    // the budget, so a hung step of another user cannot starve the
    // adoption into this user's job.
    let now = Instant::now();
    let scan_deadline = now + deadline.saturating_duration_since(now) / 2;
    let paths: Vec<PathBuf> = externs.iter().map(|s| s.path.clone()).collect();
    let answers = scan_step_uids(&paths, &view.stepd_peers, scan_deadline, |owner| {
        owner == uid
    });
    for (socket, answer) in externs.into_iter().zip(answers) {
        match answer {
            ScanAnswer::Kept {
                mut client,
                uid: owner,
            } if owner == uid => {
                // The adoption on this connection has the rest of the
                // login budget.
                client.set_deadline(deadline);
                scan.mine.push(UserJob { socket, client });
            }
            // Another user's, closed as it answered.
            ScanAnswer::Kept { .. } | ScanAnswer::Closed { .. } => scan.others += 1,
            ScanAnswer::Failed(StepdError::UntrustedPeer { path, uid, pid }) => {
                scan.untrusted.push(Untrusted {
                    socket: path,
                    uid,
                    pid,
                });
            }
            ScanAnswer::Failed(e) => scan.unreachable.push((socket.path.clone(), e)),
        }
    }
    Ok(scan)
}

/// What the cgroup tree says about whose stepds need asking.
#[derive(Debug)]
enum Narrowing {
    /// Nothing known: ask every stepd.
    AskAll,
    /// cgroup v1: the user's jobs as Slurm's `uid_<uid>` directories
    /// list them.
    UserJobs(Vec<u32>),
    /// cgroup v2: the jobs whose task directories name their owner.
    TaskOwners(TaskOwners),
}

impl Narrowing {
    /// Whether job `job_id` may be `uid`'s as far as the tree shows, from
    /// its number alone: only v2's task owners can rule a job out before
    /// its socket is looked at (v1's rule needs the socket's age).
    fn may_be_users(&self, job_id: u32, uid: u32) -> bool {
        match self {
            Narrowing::TaskOwners(owners) => {
                owners.owner_of(job_id).is_none_or(|owner| owner == uid)
            }
            Narrowing::AskAll | Narrowing::UserJobs(_) => true,
        }
    }
}

/// The node's cgroup tree as Slurm uses it, CgroupSlice included.
fn cgroup_fs(view: &NodeView) -> Result<CgroupFs, CgroupError> {
    let fs = CgroupFs::detect(&view.conf.cgroup.mountpoint, Path::new(MOUNTINFO))?;
    Ok(match &view.conf.cgroup.slice {
        Some(slice) => fs.with_slice(slice),
        None => fs,
    })
}

/// How far the cgroup tree narrows the stepds to ask: on v1 Slurm's
/// `uid_<uid>` directories, on v2 the owners of task directories;
/// anything unreadable or unknown asks every stepd.
fn narrowing(view: &NodeView, uid: u32) -> Narrowing {
    let Ok(fs) = cgroup_fs(view) else {
        return Narrowing::AskAll;
    };
    if let Some(jobs) = fs.v1_jobs_of_uid(&view.node.name, uid) {
        return Narrowing::UserJobs(jobs);
    }
    match fs.v2_task_owners(Path::new(PROC_ROOT), &view.node.name) {
        Some(owners) => Narrowing::TaskOwners(owners),
        None => Narrowing::AskAll,
    }
}

/// Whether a stepd must be asked who owns it.
///
/// v1: when Slurm's listing names its job or the socket is younger than
/// [`CGROUP_GRACE`] (or from the future: a clock step must not hide a
/// job). v2: unless the job's task directories name another uid. The v2
/// evidence needs no grace: a task directory is chowned once, to the
/// job's owner, and a job too young to have one is asked.
fn worth_asking(step: &StepSocket, narrowing: &Narrowing, uid: u32, now: SystemTime) -> bool {
    let jobs = match narrowing {
        Narrowing::AskAll | Narrowing::TaskOwners(_) => {
            return narrowing.may_be_users(step.job_id, uid);
        }
        Narrowing::UserJobs(jobs) => jobs,
    };
    if jobs.contains(&step.job_id) {
        return true;
    }
    let (secs, nanos) = step.ctime;
    let created = u64::try_from(secs)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::new(s, u32::try_from(nanos).unwrap_or(0))));
    match created.map(|c| now.duration_since(c)) {
        Some(Ok(age)) => age < CGROUP_GRACE,
        Some(Err(_)) => true,
        None => false,
    }
}

/// Put `pid` into `job`'s extern step, then fetch its X11 display and join
/// its namespaces as the options ask.
pub fn adopt(
    job: &mut UserJob,
    uid: u32,
    pid: i32,
    view: &NodeView,
    opts: &Options,
) -> Result<Adopted, AdoptError> {
    let job_id = job.socket.job_id;
    let via = match opts.adopt_via {
        AdoptVia::Stepd => {
            add_extern_pid(&mut job.client, pid).map_err(|e| vanished_or(job_id, e))?;
            "stepd"
        }
        AdoptVia::Cgroup => {
            attach_by_cgroup(view, uid, job, pid)?;
            "cgroup"
        }
        AdoptVia::Auto => match add_extern_pid(&mut job.client, pid) {
            Ok(()) => "stepd",
            Err(_) => {
                // The stepd connection is unusable after a failed request.
                // The new one is held to the scan's rule: its stepd must
                // still say the job is the user's, or nothing more is
                // taken from it (namespace fds above all).
                attach_by_cgroup(view, uid, job, pid)?;
                reconnect_as_owner(job, uid, &view.stepd_peers)?;
                "cgroup"
            }
        },
    };
    let mut adopted = Adopted {
        via,
        ..Adopted::default()
    };
    if !opts.disable_x11 {
        // Best effort, as pam_slurm_adopt has it: the login is in the job
        // already, and a broken X11 reply must not undo that. The failure
        // is kept for the log.
        match job.client.x11_display() {
            Ok(x11) if x11.display != 0 => adopted.x11 = Some(x11),
            Ok(_) => {}
            Err(e) => {
                adopted.x11_error = Some(e.to_string());
                // The connection is unusable after a failed exchange: the
                // namespace request needs a fresh one, asked again whose.
                if opts.join_container {
                    reconnect_as_owner(job, uid, &view.stepd_peers)?;
                }
            }
        }
    }
    if opts.join_container {
        let fds = job.client.namespace_fds()?;
        adopted.namespaces_joined = join_namespaces(job_id, fds)?;
    }
    Ok(adopted)
}

/// A fresh connection to the job's stepd, in place of one a failed
/// request left unusable, held to the scan's rule: the stepd must still
/// say the job is `uid`'s, or nothing more is taken from it, and its
/// listener must still run as one of `peers`.
fn reconnect_as_owner(job: &mut UserJob, uid: u32, peers: &StepdPeers) -> Result<(), AdoptError> {
    let mut client = StepdClient::connect(&job.socket.path, peers, job.client.deadline())?;
    let owner = client.step_uid()?;
    if owner != uid {
        return Err(AdoptError::OwnerChanged {
            job_id: job.socket.job_id,
            socket: job.socket.path.clone(),
            owner,
        });
    }
    job.client = client;
    Ok(())
}

/// A stepd that closes on ADD_EXTERN_PID, or whose socket is gone, has a
/// job that is ending (24.11.6+ stepds close so for a cancelled step):
/// the job vanished between the scan and the adoption.
fn vanished_or(job_id: u32, e: StepdError) -> AdoptError {
    match e {
        StepdError::Closed { op, .. } if op == slurm_node::stepd::protocol::op::ADD_EXTERN_PID => {
            AdoptError::JobVanished { job_id }
        }
        e if e.is_stale_socket() => AdoptError::JobVanished { job_id },
        e => AdoptError::Stepd(e),
    }
}

/// ADD_EXTERN_PID, once more if the stepd refused because it was still
/// starting: its socket appears before its cgroups are ready, so a login
/// right after the job starts waits for it (within the login budget)
/// instead of failing. The state is only asked after a refusal, keeping
/// the common path at one round trip.
fn add_extern_pid(client: &mut StepdClient, pid: i32) -> Result<(), StepdError> {
    let refused = match client.add_extern_pid(pid) {
        Err(e @ StepdError::Rejected { .. }) => e,
        other => return other,
    };
    loop {
        if client.state()? != StepState::Starting {
            break;
        }
        if Instant::now() + STARTING_POLL >= client.deadline() {
            return Err(refused);
        }
        std::thread::sleep(STARTING_POLL);
    }
    client.add_extern_pid(pid)
}

/// Write `pid` into the job's extern-step cgroup. The directory is looked
/// for by the job's id first; on cgroup v2 a job whose directory has no id
/// in it (26.05 names it by SLUID) is found through the cgroup of its
/// extern stepd, the process listening on the socket the scan checked.
fn attach_by_cgroup(view: &NodeView, uid: u32, job: &UserJob, pid: i32) -> Result<(), AdoptError> {
    let job_id = job.socket.job_id;
    let fs = cgroup_fs(view)?;
    let proc_root = Path::new(PROC_ROOT);
    let mut dirs = fs.extern_step_dirs(proc_root, &view.node.name, uid, job_id);
    if dirs.is_empty() {
        dirs.extend(
            job.client
                .peer_pid()
                .and_then(|stepd| fs.v2_extern_dir_of_stepd(proc_root, stepd)),
        );
    }
    if dirs.is_empty() {
        return Err(AdoptError::NoCgroup {
            job_id,
            root: fs.root().to_path_buf(),
        });
    }
    fs.attach_pid(&dirs, pid)?;
    Ok(())
}

/// setns in the order the stepd sent them (it puts the mount namespace
/// last, after pid and user); each fd is closed when dropped.
fn join_namespaces(job_id: u32, fds: Vec<NamespaceFd>) -> Result<usize, AdoptError> {
    let mut joined = 0;
    for ns in fds {
        let flags = nix::sched::CloneFlags::from_bits_retain(ns.nstype);
        nix::sched::setns(&ns.fd, flags).map_err(|source| AdoptError::Setns {
            job_id,
            nstype: ns.nstype,
            source,
        })?;
        joined += 1;
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(job_id: u32, age: Duration, now: SystemTime) -> StepSocket {
        let created = now - age;
        let since = created.duration_since(UNIX_EPOCH).unwrap_or_default();
        StepSocket {
            path: PathBuf::from(format!("/spool/c1_{job_id}.4294967292")),
            job_id,
            step_id: slurm_node::stepd::EXTERN_STEP_ID,
            het_component: None,
            ctime: (
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                i64::from(since.subsec_nanos()),
            ),
            owner_uid: 0,
        }
    }

    #[test]
    fn who_is_asked() {
        let now = SystemTime::now();
        let old = Duration::from_secs(3600);
        let young = Duration::from_secs(2);
        let me = 2001;
        let listed = |jobs: &[u32]| Narrowing::UserJobs(jobs.to_vec());
        let owners = |pairs: &[(u32, u32)]| Narrowing::TaskOwners(pairs.iter().copied().collect());
        #[rustfmt::skip]
        let rows: [(&str, StepSocket, Narrowing, bool); 10] = [
            ("no listing: everyone",          step(5, old, now), Narrowing::AskAll, true),
            ("listed job",                    step(5, old, now), listed(&[5]), true),
            ("not listed, old: another user", step(6, old, now), listed(&[5]), false),
            ("not listed but young",          step(6, young, now), listed(&[5]), true),
            ("empty listing, old",            step(6, old, now), listed(&[]), false),
            ("from the future",               step(6, Duration::ZERO, now + Duration::from_secs(60)), listed(&[]), true),
            ("v2: another user's tasks",      step(6, old, now), owners(&[(6, 2002)]), false),
            ("v2: another user's, young",     step(6, young, now), owners(&[(6, 2002)]), false),
            ("v2: the user's own tasks",      step(6, old, now), owners(&[(6, me)]), true),
            ("v2: no owner shown (salloc)",   step(7, old, now), owners(&[(6, 2002)]), true),
        ];
        for (name, s, narrowing, want) in rows {
            assert_eq!(worth_asking(&s, &narrowing, me, now), want, "{name}");
        }
    }
}
