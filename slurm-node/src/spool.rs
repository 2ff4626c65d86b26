//! Step discovery in `SlurmdSpoolDir`: the `<NodeName>_<job>.<step>[.<het>]`
//! unix sockets each slurmstepd listens on.
//!
//! The module connects to whatever this scan returns, as root, and trusts
//! the job id in the name, so both the directory and every socket must
//! belong to root or SlurmUser, and no socket may be a symlink. The
//! directory is opened once (`O_DIRECTORY|O_NOFOLLOW`), judged by `fstat`
//! on that fd, read from that fd, and every entry is judged by
//! `fstatat(fd, name, AT_SYMLINK_NOFOLLOW)`, so what is checked is what is
//! listed. The paths returned are still `spool_dir/name`: a unix socket is
//! connected by path, so these checks are a first filter and the real trust
//! is the peer credentials (`SO_PEERCRED`) the stepd client reads after the
//! connect.
//!
//! Directory policy: the directory must be owned by a trusted uid, must not
//! be world-writable (not even with the sticky bit: nobody but Slurm has a
//! reason to create entries there), and may be group-writable only when its
//! group is root's. Anyone who can write to the directory could rename
//! entries between this scan and the connect, so a writable directory makes
//! the per-entry checks worthless. Its parents (`/var/spool`) are the
//! system's to protect.
//!
//! A symlinked SlurmdSpoolDir (`/var/spool/slurmd -> /local/slurmd`, to
//! put the spool on a local disk) is followed exactly once, because a link
//! moves the directory out from under the system's protection of
//! `/var/spool`: the link must be root's, and every directory from `/` down
//! to its target is opened one component at a time with `O_NOFOLLOW` and
//! must be root's and not writable by group (unless the group is root's)
//! or others, sticky `/tmp` included; the target itself follows the
//! directory policy above. A second link anywhere on the way is refused.
//! pam_slurm_adopt simply `opendir()`s the path, following any chain of
//! links through any directories.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode};

/// Step id of the extern step (`SLURM_EXTERN_CONT`).
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;
/// Step id of the batch step (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;

/// One slurmstepd socket that passed the ownership checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSocket {
    pub path: PathBuf,
    pub job_id: u32,
    pub step_id: u32,
    /// The het-job component, when the name has a third number.
    pub het_component: Option<u32>,
    /// The socket file's `st_ctime` as (seconds, nanoseconds): when the
    /// stepd came up, which 26.05 uses to pick the newest job.
    pub ctime: (i64, i64),
    pub owner_uid: u32,
}

/// Why an entry named like one of this node's step sockets was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Symlink,
    NotASocket,
    UntrustedOwner { uid: u32 },
    Stat(Errno),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("is a symbolic link, not a socket"),
            SkipReason::NotASocket => f.write_str("is not a unix socket"),
            SkipReason::UntrustedOwner { uid } => {
                write!(f, "is owned by uid {uid}, neither root nor SlurmUser")
            }
            SkipReason::Stat(errno) => write!(f, "cannot be examined: {errno}"),
        }
    }
}

/// The outcome of a scan: usable sockets sorted by (job, step, het
/// component), and the rejected entries for the caller to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepListing {
    pub steps: Vec<StepSocket>,
    pub skipped: Vec<(PathBuf, SkipReason)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool directory {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read spool directory {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("spool directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("spool directory {} is owned by uid {uid}, neither root nor SlurmUser", path.display())]
    UntrustedOwner { path: PathBuf, uid: u32 },
    #[error("spool directory {} has mode {mode:04o}: writable by group or others", path.display())]
    Writable { path: PathBuf, mode: u32 },
    /// Anyone who owns the link can point it anywhere.
    #[error(
        "spool directory {} is a symbolic link owned by uid {uid}; only a root-owned link is followed",
        path.display()
    )]
    LinkOwner { path: PathBuf, uid: u32 },
    /// The link's target, or a directory on the way to it, fails the
    /// policy; `dir` is the one that does.
    #[error(
        "spool directory {} is a symbolic link to {}, and {} {problem}",
        path.display(),
        target.display(),
        dir.display()
    )]
    LinkTarget {
        path: PathBuf,
        target: PathBuf,
        dir: PathBuf,
        problem: LinkProblem,
    },
}

/// What is wrong with a directory on the way to a symlinked spool
/// directory's target, or with the target itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// A directory above the target: only root may own those.
    NotRootOwned {
        uid: u32,
    },
    /// The target itself, which may also be SlurmUser's.
    UntrustedOwner {
        uid: u32,
    },
    Writable {
        mode: u32,
    },
    NotADirectory,
    /// A second link: only one hop is followed.
    Symlink,
    Open(Errno),
    /// A relative link under a `--root` copy that climbs out of it.
    OutsideRoot,
}

impl fmt::Display for LinkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkProblem::NotRootOwned { uid } => write!(f, "is owned by uid {uid}, not root"),
            LinkProblem::UntrustedOwner { uid } => {
                write!(f, "is owned by uid {uid}, neither root nor SlurmUser")
            }
            LinkProblem::Writable { mode } => {
                write!(f, "has mode {mode:04o}: writable by group or others")
            }
            LinkProblem::NotADirectory => f.write_str("is not a directory"),
            LinkProblem::Symlink => {
                f.write_str("is a symbolic link too: only one link is followed")
            }
            LinkProblem::Open(errno) => write!(f, "cannot be opened: {errno}"),
            LinkProblem::OutsideRoot => f.write_str("is outside the tree being checked"),
        }
    }
}

/// The owners a spool directory and its sockets may have: root, and
/// SlurmUser when that is another account that exists here.
pub fn trusted_owners(slurm_user: &str) -> Vec<u32> {
    let mut uids = vec![0];
    if let Ok(Some(user)) = nix::unistd::User::from_name(slurm_user) {
        if user.uid.as_raw() != 0 {
            uids.push(user.uid.as_raw());
        }
    }
    uids
}

/// The uids a stepd may run as, for its peer credentials: root, and
/// SlurmdUser when that is another account that exists here.
pub fn stepd_peer_uids(slurmd_user: &str) -> Vec<u32> {
    trusted_owners(slurmd_user)
}

/// Only root may own the directories above a symlinked spool's target.
const CHAIN_OWNERS: &[u32] = &[0];

/// Every step socket of `node_name` in `spool_dir`.
///
/// A missing directory yields an empty listing, as in pam_slurm_adopt:
/// with no slurmd spool there are no jobs on this node. A symlinked one
/// whose target is missing counts as missing.
pub fn list_steps(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
) -> Result<StepListing, SpoolError> {
    let dir = open_dir(Path::new("/"), spool_dir, trusted_uids, CHAIN_OWNERS)?;
    scan(dir, node_name, trusted_uids, |_| true)
}

/// Like [`list_steps`], for the sockets whose names `wanted` keeps: the
/// others are never stat'ed, so a caller that can rule steps out by name
/// pays nothing for them.
pub fn list_steps_where(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
    wanted: impl FnMut(&StepName) -> bool,
) -> Result<StepListing, SpoolError> {
    let dir = open_dir(Path::new("/"), spool_dir, trusted_uids, CHAIN_OWNERS)?;
    scan(dir, node_name, trusted_uids, wanted)
}

/// Like [`list_steps`], restricted to extern steps, including the skipped
/// entries.
pub fn extern_steps(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
) -> Result<StepListing, SpoolError> {
    let dir = open_dir(Path::new("/"), spool_dir, trusted_uids, CHAIN_OWNERS)?;
    scan(dir, node_name, trusted_uids, |name| {
        name.step_id == EXTERN_STEP_ID
    })
}

/// A spool directory that passed the checks, open.
#[derive(Debug)]
pub struct SpoolDir {
    fd: OwnedFd,
    /// As configured; the socket paths are built from it.
    pub path: PathBuf,
    /// Where a symlinked spool directory points, as resolved (one hop).
    pub target: Option<PathBuf>,
    pub owner_uid: u32,
    pub mode: u32,
}

/// Open and check `spool_dir` exactly as [`list_steps`] does, for
/// `adoptctl doctor`: `Ok(None)` when it (or a symlink's target) does not
/// exist.
pub fn open_spool_dir(
    spool_dir: &Path,
    trusted_uids: &[u32],
) -> Result<Option<SpoolDir>, SpoolError> {
    open_dir(Path::new("/"), spool_dir, trusted_uids, CHAIN_OWNERS)
}

/// [`open_spool_dir`] for a copy of a node's tree under `root` (doctor's
/// `--root`): `spool_dir` is the path under `root`, a symlink's absolute
/// target is taken under `root`, and the walk to it starts at `root`
/// rather than `/`.
pub fn open_spool_dir_under(
    root: &Path,
    spool_dir: &Path,
    trusted_uids: &[u32],
) -> Result<Option<SpoolDir>, SpoolError> {
    open_dir(root, spool_dir, trusted_uids, CHAIN_OWNERS)
}

/// The step sockets in a directory [`open_spool_dir`] opened.
pub fn list_open_steps(
    dir: SpoolDir,
    node_name: &str,
    trusted_uids: &[u32],
) -> Result<StepListing, SpoolError> {
    scan(Some(dir), node_name, trusted_uids, |_| true)
}

/// The node names the step sockets in `spool_dir` are named under: for a
/// node slurm.conf does not list, which name its slurmd registered. Only
/// trusted sockets count; a missing directory has none. `root` is `/` on a
/// node and the copy's directory under `adoptctl doctor --root`.
pub fn socket_node_names(
    root: &Path,
    spool_dir: &Path,
    trusted_uids: &[u32],
) -> Result<std::collections::BTreeSet<String>, SpoolError> {
    let mut names = std::collections::BTreeSet::new();
    let Some(dir) = open_dir(root, spool_dir, trusted_uids, CHAIN_OWNERS)? else {
        return Ok(names);
    };
    let read_error = |errno: Errno| SpoolError::Read {
        path: spool_dir.to_path_buf(),
        source: io::Error::from(errno),
    };
    let mut entries = Dir::from_fd(dir.fd).map_err(read_error)?;
    let mut candidates: Vec<(OsString, String)> = Vec::new();
    for entry in entries.iter() {
        let entry = entry.map_err(read_error)?;
        let file_name = entry.file_name().to_bytes();
        if let Some(node) = socket_node_name(file_name) {
            candidates.push((OsStr::from_bytes(file_name).to_owned(), node));
        }
    }
    for (file_name, node) in candidates {
        if let Ok(Some(_)) = examine_entry(&entries, &file_name, trusted_uids) {
            names.insert(node);
        }
    }
    Ok(names)
}

/// The `<node>` of `<node>_<job>.<step>[.<het>]`: node names may hold `_`,
/// so the name ends at the last `_` that a valid step suffix follows.
fn socket_node_name(name: &[u8]) -> Option<String> {
    let at = name.iter().rposition(|&b| b == b'_')?;
    let node = name.get(..at).filter(|n| !n.is_empty())?;
    let node = std::str::from_utf8(node).ok()?;
    parse_socket_name(name, node)?;
    Some(node.to_owned())
}

/// The numbers in a socket name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepName {
    pub job_id: u32,
    pub step_id: u32,
    pub het_component: Option<u32>,
}

/// `O_NONBLOCK` costs nothing on a directory and keeps a FIFO put in its
/// place from blocking the open.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
}

fn file_kind(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// Open `spool_dir` and check it; `chain_uids` may own the directories on
/// the way to a symlink's target, which is walked from `root`.
fn open_dir(
    root: &Path,
    spool_dir: &Path,
    trusted_uids: &[u32],
    chain_uids: &[u32],
) -> Result<Option<SpoolDir>, SpoolError> {
    let open_error = |errno: Errno| SpoolError::Open {
        path: spool_dir.to_path_buf(),
        source: io::Error::from(errno),
    };
    match fcntl::open(spool_dir, dir_flags(), Mode::empty()) {
        Ok(fd) => {
            let st = stat::fstat(&fd).map_err(open_error)?;
            check_dir(spool_dir, &st, trusted_uids)?;
            Ok(Some(SpoolDir {
                fd,
                path: spool_dir.to_path_buf(),
                target: None,
                owner_uid: st.st_uid,
                mode: st.st_mode & 0o7777,
            }))
        }
        Err(Errno::ENOENT) => Ok(None),
        // O_NOFOLLOW with O_DIRECTORY gives ENOTDIR for a symlink on
        // Linux, ELOOP elsewhere; either way, look at what is there.
        Err(errno @ (Errno::ENOTDIR | Errno::ELOOP)) => match stat::lstat(spool_dir) {
            Ok(link) if file_kind(&link) == libc::S_IFLNK => {
                follow_link(root, spool_dir, &link, trusted_uids, chain_uids)
            }
            Ok(other) if file_kind(&other) != libc::S_IFDIR => Err(SpoolError::NotADirectory {
                path: spool_dir.to_path_buf(),
            }),
            Err(Errno::ENOENT) => Ok(None),
            _ => Err(open_error(errno)),
        },
        Err(errno) => Err(open_error(errno)),
    }
}

fn follow_link(
    root: &Path,
    link: &Path,
    link_stat: &FileStat,
    trusted_uids: &[u32],
    chain_uids: &[u32],
) -> Result<Option<SpoolDir>, SpoolError> {
    if !chain_uids.contains(&link_stat.st_uid) {
        return Err(SpoolError::LinkOwner {
            path: link.to_path_buf(),
            uid: link_stat.st_uid,
        });
    }
    let written = match fcntl::readlink(link) {
        Ok(t) => PathBuf::from(t),
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => {
            return Err(SpoolError::Open {
                path: link.to_path_buf(),
                source: io::Error::from(errno),
            });
        }
    };
    // A relative target is relative to the link's directory, as the kernel
    // reads it; an absolute one is under `root`.
    let target = match written.strip_prefix("/") {
        Ok(below_root) => root.join(below_root),
        Err(_) => link.parent().unwrap_or(Path::new("")).join(&written),
    };
    let refused = |dir: &Path, problem: LinkProblem| SpoolError::LinkTarget {
        path: link.to_path_buf(),
        target: target.clone(),
        dir: dir.to_path_buf(),
        problem,
    };
    let Ok(below_root) = target.strip_prefix(root) else {
        return Err(refused(&target, LinkProblem::OutsideRoot));
    };
    let walked = match walk(root, below_root, trusted_uids, chain_uids) {
        Ok(Some(w)) => w,
        Ok(None) => return Ok(None),
        Err((dir, problem)) => return Err(refused(&dir, problem)),
    };
    Ok(Some(SpoolDir {
        fd: walked.fd,
        path: link.to_path_buf(),
        target: Some(target),
        owner_uid: walked.uid,
        mode: walked.mode,
    }))
}

/// The final directory of a walk.
struct Walked {
    fd: OwnedFd,
    uid: u32,
    mode: u32,
}

/// One directory of the walk: its fd, its path for messages, its stat, and
/// whether it was already judged as a parent.
struct Step {
    fd: OwnedFd,
    path: PathBuf,
    stat: FileStat,
    judged: bool,
}

/// Walk from `root` down `below_root` one component at a time, each opened
/// `O_NOFOLLOW` relative to its parent's fd, so no link is followed on the
/// way and each directory judged is the one descended through. A parent
/// must pass the policy for `chain_uids`, the last directory the spool
/// policy for `trusted_uids`. `..` goes back up the walk, never above
/// `root`. `Ok(None)` when a component does not exist.
fn walk(
    root: &Path,
    below_root: &Path,
    trusted_uids: &[u32],
    chain_uids: &[u32],
) -> Result<Option<Walked>, (PathBuf, LinkProblem)> {
    let open_root = fcntl::open(root, dir_flags(), Mode::empty())
        .map_err(|e| (root.to_path_buf(), LinkProblem::Open(e)))?;
    let root_stat =
        stat::fstat(&open_root).map_err(|e| (root.to_path_buf(), LinkProblem::Open(e)))?;
    let mut stack = vec![Step {
        fd: open_root,
        path: root.to_path_buf(),
        stat: root_stat,
        judged: false,
    }];
    for component in below_root.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::ParentDir => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => continue,
        };
        let Some(parent) = stack.last_mut() else {
            return Err((root.to_path_buf(), LinkProblem::OutsideRoot));
        };
        if !parent.judged {
            chain_problem(&parent.stat, chain_uids).map_err(|p| (parent.path.clone(), p))?;
            parent.judged = true;
        }
        let path = parent.path.join(name);
        let fd = match fcntl::openat(&parent.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno @ (Errno::ENOTDIR | Errno::ELOOP)) => {
                let problem = match stat::fstatat(&parent.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if file_kind(&st) == libc::S_IFLNK => LinkProblem::Symlink,
                    Ok(st) if file_kind(&st) != libc::S_IFDIR => LinkProblem::NotADirectory,
                    _ => LinkProblem::Open(errno),
                };
                return Err((path, problem));
            }
            Err(errno) => return Err((path, LinkProblem::Open(errno))),
        };
        let st = stat::fstat(&fd).map_err(|e| (path.clone(), LinkProblem::Open(e)))?;
        stack.push(Step {
            fd,
            path,
            stat: st,
            judged: false,
        });
    }
    let Some(last) = stack.pop() else {
        return Err((root.to_path_buf(), LinkProblem::OutsideRoot));
    };
    dir_problem(&last.stat, trusted_uids).map_err(|p| {
        let problem = match p {
            DirProblem::NotADirectory => LinkProblem::NotADirectory,
            DirProblem::UntrustedOwner(uid) => LinkProblem::UntrustedOwner { uid },
            DirProblem::Writable(mode) => LinkProblem::Writable { mode },
        };
        (last.path.clone(), problem)
    })?;
    Ok(Some(Walked {
        uid: last.stat.st_uid,
        mode: last.stat.st_mode & 0o7777,
        fd: last.fd,
    }))
}

/// The policy for a directory above a symlinked spool's target.
fn chain_problem(st: &FileStat, chain_uids: &[u32]) -> Result<(), LinkProblem> {
    dir_problem(st, chain_uids).map_err(|p| match p {
        DirProblem::NotADirectory => LinkProblem::NotADirectory,
        DirProblem::UntrustedOwner(uid) => LinkProblem::NotRootOwned { uid },
        DirProblem::Writable(mode) => LinkProblem::Writable { mode },
    })
}

fn scan(
    dir: Option<SpoolDir>,
    node_name: &str,
    trusted_uids: &[u32],
    mut wanted: impl FnMut(&StepName) -> bool,
) -> Result<StepListing, SpoolError> {
    let Some(dir) = dir else {
        return Ok(StepListing::default());
    };
    let spool_dir = dir.path;
    let read_error = |errno: Errno| SpoolError::Read {
        path: spool_dir.clone(),
        source: io::Error::from(errno),
    };
    let mut entries = Dir::from_fd(dir.fd).map_err(read_error)?;
    // The names first, then the stats: the iterator borrows the Dir.
    let mut names: Vec<(OsString, StepName)> = Vec::new();
    for entry in entries.iter() {
        let entry = entry.map_err(read_error)?;
        let file_name = entry.file_name().to_bytes();
        let Some(name) = parse_socket_name(file_name, node_name) else {
            continue;
        };
        if wanted(&name) {
            names.push((OsStr::from_bytes(file_name).to_owned(), name));
        }
    }

    let mut listing = StepListing::default();
    for (file_name, name) in names {
        let path = spool_dir.join(&file_name);
        match examine_entry(&entries, &file_name, trusted_uids) {
            Ok(Some(st)) => listing.steps.push(StepSocket {
                path,
                job_id: name.job_id,
                step_id: name.step_id,
                het_component: name.het_component,
                ctime: (st.st_ctime, st.st_ctime_nsec),
                owner_uid: st.st_uid,
            }),
            // The stepd exited between readdir and the stat.
            Ok(None) => {}
            Err(reason) => listing.skipped.push((path, reason)),
        }
    }
    listing
        .steps
        .sort_by(|a, b| step_order(a).cmp(&step_order(b)));
    listing.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

fn step_order(s: &StepSocket) -> (u32, u32, Option<u32>, &Path) {
    (s.job_id, s.step_id, s.het_component, &s.path)
}

fn check_dir(path: &Path, st: &FileStat, trusted_uids: &[u32]) -> Result<(), SpoolError> {
    dir_problem(st, trusted_uids).map_err(|problem| {
        let path = path.to_path_buf();
        match problem {
            DirProblem::NotADirectory => SpoolError::NotADirectory { path },
            DirProblem::UntrustedOwner(uid) => SpoolError::UntrustedOwner { path, uid },
            DirProblem::Writable(mode) => SpoolError::Writable { path, mode },
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirProblem {
    NotADirectory,
    UntrustedOwner(u32),
    Writable(u32),
}

fn dir_problem(st: &FileStat, trusted_uids: &[u32]) -> Result<(), DirProblem> {
    mode_problem(st.st_mode, st.st_uid, st.st_gid, trusted_uids)
}

fn mode_problem(mode: u32, uid: u32, gid: u32, trusted_uids: &[u32]) -> Result<(), DirProblem> {
    if mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(DirProblem::NotADirectory);
    }
    if !trusted_uids.contains(&uid) {
        return Err(DirProblem::UntrustedOwner(uid));
    }
    let world_writable = mode & libc::S_IWOTH != 0;
    let group_writable = mode & libc::S_IWGRP != 0 && gid != 0;
    if world_writable || group_writable {
        return Err(DirProblem::Writable(mode & 0o7777));
    }
    Ok(())
}

/// `Ok(None)` when the entry has disappeared, which is a step ending
/// rather than anything worth reporting.
fn examine_entry(
    dir: &Dir,
    name: &OsStr,
    trusted_uids: &[u32],
) -> Result<Option<FileStat>, SkipReason> {
    let st = match stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(SkipReason::Stat(errno)),
    };
    entry_problem(st.st_mode, st.st_uid, trusted_uids)?;
    Ok(Some(st))
}

fn entry_problem(mode: u32, uid: u32, trusted_uids: &[u32]) -> Result<(), SkipReason> {
    match mode & libc::S_IFMT {
        libc::S_IFSOCK => {}
        libc::S_IFLNK => return Err(SkipReason::Symlink),
        _ => return Err(SkipReason::NotASocket),
    }
    if !trusted_uids.contains(&uid) {
        return Err(SkipReason::UntrustedOwner { uid });
    }
    Ok(())
}

/// Parses `<node>_<job>.<step>[.<het>]`. The node name is compared byte for
/// byte: the C module splices it into a regex unescaped, so there a `.` in
/// a node name matches any character and another node's sockets can be
/// taken for this one's.
fn parse_socket_name(name: &[u8], node: &str) -> Option<StepName> {
    let rest = name.strip_prefix(node.as_bytes())?.strip_prefix(b"_")?;
    let mut parts = rest.split(|&b| b == b'.');
    let job_id = parse_u32(parts.next()?)?;
    let step_id = parse_u32(parts.next()?)?;
    let het_component = match parts.next() {
        Some(part) => Some(parse_u32(part)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(StepName {
        job_id,
        step_id,
        het_component,
    })
}

/// Decimal digits only, in the canonical form slurmstepd writes with `%u`:
/// no sign, no leading zero, no overflow. Accepting `02` as well as `2`
/// would give one step two names.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::os::unix::net::UnixListener;

    const NODE: &str = "n1";

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn spool() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    fn socket(dir: &Path, name: &str) -> UnixListener {
        UnixListener::bind(dir.join(name)).expect("bind")
    }

    fn ids(listing: &StepListing) -> Vec<(u32, u32, Option<u32>)> {
        listing
            .steps
            .iter()
            .map(|s| (s.job_id, s.step_id, s.het_component))
            .collect()
    }

    /// A scan as `list_steps` does it, with the walk to a symlink's target
    /// starting at `root` instead of `/` and `chain` as the owners allowed
    /// on the way: tempdirs live under sticky, world-writable /tmp.
    fn list_in(
        root: &Path,
        spool_dir: &Path,
        trusted: &[u32],
        chain: &[u32],
    ) -> Result<StepListing, SpoolError> {
        scan(
            open_dir(root, spool_dir, trusted, chain)?,
            NODE,
            trusted,
            |_| true,
        )
    }

    /// `root/var/spool/slurmd -> <link>` and the real spool at
    /// `root/local/disk/slurmd` with one extern step socket.
    struct Chain {
        root: tempfile::TempDir,
        _listener: UnixListener,
    }

    impl Chain {
        fn new(link: &str) -> Chain {
            let root = spool();
            let p = root.path();
            for d in [
                "var",
                "var/spool",
                "local",
                "local/disk",
                "local/disk/slurmd",
            ] {
                fs::create_dir(p.join(d)).expect("mkdir");
                fs::set_permissions(p.join(d), fs::Permissions::from_mode(0o755)).expect("chmod");
            }
            let listener = socket(&p.join("local/disk/slurmd"), "n1_4.4294967292");
            symlink(link, p.join("var/spool/slurmd")).expect("symlink");
            Chain {
                root,
                _listener: listener,
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.path().join(rel)
        }

        fn link(&self) -> PathBuf {
            self.path("var/spool/slurmd")
        }

        fn list(&self) -> Result<StepListing, SpoolError> {
            list_in(self.root.path(), &self.link(), &[me()], &[me()])
        }

        fn chmod(&self, rel: &str, mode: u32) {
            fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        }

        /// The refusal, with the directory it names and why.
        fn refused(&self) -> (PathBuf, LinkProblem, String) {
            match self.list() {
                Err(e @ SpoolError::LinkTarget { .. }) => {
                    let text = e.to_string();
                    let SpoolError::LinkTarget {
                        path, dir, problem, ..
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!(path, self.link());
                    (dir, problem, text)
                }
                other => panic!("expected a LinkTarget refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn node_names_are_read_from_socket_names() {
        let node = |n: &str| socket_node_name(n.as_bytes());
        assert_eq!(node("c1_12.4294967292").as_deref(), Some("c1"));
        assert_eq!(node("k8s_pod_3_7.0.1").as_deref(), Some("k8s_pod_3"));
        assert_eq!(
            node("d1.mc.test_5.4294967292").as_deref(),
            Some("d1.mc.test")
        );
        for bad in [
            "_12.0",
            "c1_12",
            "c1_012.0",
            "c1_1.2.3.4",
            "c1",
            "c1_x.0",
            "cred_state",
        ] {
            assert_eq!(node(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_parse_strictly() {
        let ok = |name: &str| parse_socket_name(name.as_bytes(), NODE);
        assert_eq!(
            ok("n1_5.4294967292"),
            Some(StepName {
                job_id: 5,
                step_id: EXTERN_STEP_ID,
                het_component: None
            })
        );
        assert_eq!(
            ok("n1_7.0.2"),
            Some(StepName {
                job_id: 7,
                step_id: 0,
                het_component: Some(2)
            })
        );
        assert_eq!(ok("n1_4294967295.0").map(|n| n.job_id), Some(u32::MAX));
        for bad in [
            "n1_4294967296.0",
            "n1_5.4294967297",
            "n1_+5.0",
            "n1_-5.0",
            "n1_05.0",
            "n1_5.0.",
            "n1_5.",
            "n1_.0",
            "n1_5",
            "n1_5.0.1.2",
            "n1_5 .0",
            "n1_5.0x",
            "n1_5_0",
            "n15.0",
            "n1-5.0",
            "n2_5.0",
            "xn1_5.0",
            "job00005",
            ".",
            "..",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn node_name_is_literal_not_a_regex() {
        let name = b"nX1_5.4294967292";
        assert_eq!(parse_socket_name(name, "n.1"), None);
        assert_eq!(
            parse_socket_name(b"n.1_5.4294967292", "n.1").map(|n| n.job_id),
            Some(5)
        );
        assert_eq!(parse_socket_name(b"n11_5.0", "n1"), None);
        assert_eq!(parse_socket_name(b"n1_5.0", "n1*"), None);
    }

    #[test]
    fn lists_sockets_sorted_by_job_with_het_components() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_12.4294967292"),
            socket(dir.path(), "n1_3.4294967292"),
            socket(dir.path(), "n1_3.4294967291"),
            socket(dir.path(), "n1_7.0.1"),
            socket(dir.path(), "n1_7.0"),
            socket(dir.path(), "n1_7.0.0"),
        ];
        fs::create_dir(dir.path().join("job00003")).expect("mkdir");
        let listing = list_steps(dir.path(), NODE, &[0, me()]).expect("scan");
        assert_eq!(
            ids(&listing),
            [
                (3, BATCH_STEP_ID, None),
                (3, EXTERN_STEP_ID, None),
                (7, 0, None),
                (7, 0, Some(0)),
                (7, 0, Some(1)),
                (12, EXTERN_STEP_ID, None),
            ]
        );
        assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
        let first = &listing.steps[0];
        assert_eq!(first.path, dir.path().join("n1_3.4294967291"));
        assert_eq!(first.owner_uid, me());
        let meta = fs::symlink_metadata(&first.path).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(first.ctime, (meta.ctime(), meta.ctime_nsec()));
    }

    #[test]
    fn extern_steps_keeps_only_the_extern_step() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_3.4294967291"),
            socket(dir.path(), "n1_3.4294967292"),
            socket(dir.path(), "n1_4.0"),
            socket(dir.path(), "n1_9.4294967292.1"),
        ];
        fs::write(dir.path().join("n1_4.4294967291"), b"").expect("write");
        fs::write(dir.path().join("n1_5.4294967292"), b"").expect("write");
        let listing = extern_steps(dir.path(), NODE, &[me()]).expect("scan");
        assert_eq!(
            ids(&listing),
            [(3, EXTERN_STEP_ID, None), (9, EXTERN_STEP_ID, Some(1))]
        );
        assert_eq!(
            listing.skipped,
            [(dir.path().join("n1_5.4294967292"), SkipReason::NotASocket)]
        );
    }

    #[test]
    fn symlinks_files_and_other_names_are_not_steps() {
        let dir = spool();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let _real = socket(elsewhere.path(), "real");
        let _own = socket(dir.path(), "n1_1.4294967292");
        symlink(
            elsewhere.path().join("real"),
            dir.path().join("n1_2.4294967292"),
        )
        .expect("symlink");
        symlink(
            dir.path().join("n1_1.4294967292"),
            dir.path().join("n1_3.4294967292"),
        )
        .expect("symlink");
        fs::write(dir.path().join("n1_4.4294967292"), b"").expect("write");
        fs::create_dir(dir.path().join("n1_5.4294967292")).expect("mkdir");
        // Sockets of other nodes, malformed numbers: silently not ours.
        let _others = [
            socket(dir.path(), "nX1_6.4294967292"),
            socket(dir.path(), "n2_7.4294967292"),
            socket(dir.path(), "n1_08.4294967292"),
            socket(dir.path(), "n1_9.4294967296"),
            socket(dir.path(), "n1_-10.4294967292"),
        ];
        let listing = list_steps(dir.path(), NODE, &[me()]).expect("scan");
        assert_eq!(ids(&listing), [(1, EXTERN_STEP_ID, None)]);
        let p = |n: &str| dir.path().join(n);
        assert_eq!(
            listing.skipped,
            [
                (p("n1_2.4294967292"), SkipReason::Symlink),
                (p("n1_3.4294967292"), SkipReason::Symlink),
                (p("n1_4.4294967292"), SkipReason::NotASocket),
                (p("n1_5.4294967292"), SkipReason::NotASocket),
            ]
        );
    }

    #[test]
    fn names_left_out_by_the_filter_are_never_examined() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_1.4294967292"),
            socket(dir.path(), "n1_2.4294967292"),
            socket(dir.path(), "n1_2.0"),
        ];
        // A file in place of job 3's socket: reported only when job 3 is
        // wanted at all.
        fs::write(dir.path().join("n1_3.4294967292"), b"").expect("write");
        let mut asked = Vec::new();
        let listing = list_steps_where(dir.path(), NODE, &[me()], |name| {
            asked.push((name.job_id, name.step_id));
            name.step_id == EXTERN_STEP_ID && name.job_id != 3
        })
        .expect("scan");
        asked.sort_unstable();
        assert_eq!(
            asked,
            [
                (1, EXTERN_STEP_ID),
                (2, 0),
                (2, EXTERN_STEP_ID),
                (3, EXTERN_STEP_ID)
            ]
        );
        assert_eq!(
            ids(&listing),
            [(1, EXTERN_STEP_ID, None), (2, EXTERN_STEP_ID, None)]
        );
        assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
    }

    #[test]
    fn dotted_node_name_does_not_match_other_nodes() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "nX1_5.4294967292"),
            socket(dir.path(), "n.1_6.4294967292"),
        ];
        let listing = list_steps(dir.path(), "n.1", &[me()]).expect("scan");
        assert_eq!(ids(&listing), [(6, EXTERN_STEP_ID, None)]);
    }

    #[test]
    fn missing_spool_dir_is_an_empty_listing() {
        let dir = spool();
        let listing = list_steps(&dir.path().join("absent"), NODE, &[me()]).expect("scan");
        assert_eq!(listing, StepListing::default());
    }

    #[test]
    fn spool_dir_must_be_a_directory() {
        let dir = spool();
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        assert!(matches!(
            list_steps(&file, NODE, &[me()]),
            Err(SpoolError::NotADirectory { path }) if path == file
        ));
        let link = dir.path().join("link-to-file");
        symlink("file", &link).expect("symlink");
        let err = list_in(dir.path(), &link, &[me()], &[me()]).expect_err("link to a file");
        assert!(
            matches!(&err, SpoolError::LinkTarget { dir, problem: LinkProblem::Symlink | LinkProblem::NotADirectory, .. } if *dir == file),
            "{err}"
        );
    }

    #[test]
    fn a_symlinked_spool_under_sticky_tmp_is_refused_naming_the_parent() {
        // The real walk from `/`: the tempdir's parent (/tmp, 1777) is
        // writable by others, so the link is not followed.
        let dir = spool();
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let _l = socket(&real, "n1_1.4294967292");
        let link = dir.path().join("link");
        symlink(&real, &link).expect("symlink");
        let err = list_steps(&link, NODE, &[me()]).expect_err("refused");
        let SpoolError::LinkTarget {
            path,
            target,
            dir: offending,
            problem,
        } = &err
        else {
            panic!("not a LinkTarget error: {err}");
        };
        assert_eq!((path, target), (&link, &real));
        assert!(
            dir.path().starts_with(offending) && offending != dir.path(),
            "{err}"
        );
        assert!(
            matches!(
                problem,
                LinkProblem::Writable { .. } | LinkProblem::NotRootOwned { .. }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&link.display().to_string()), "{text}");
        assert!(text.contains(&offending.display().to_string()), "{text}");
        // The directory itself, by its own name, is fine.
        assert_eq!(
            ids(&list_steps(&real, NODE, &[me()]).expect("scan")).len(),
            1
        );
    }

    #[test]
    fn spool_dir_must_have_a_trusted_owner() {
        let dir = spool();
        let untrusted = me().wrapping_add(1);
        let err = list_steps(dir.path(), NODE, &[untrusted]).expect_err("untrusted");
        assert!(
            matches!(&err, SpoolError::UntrustedOwner { uid, .. } if *uid == me()),
            "{err}"
        );
        assert!(matches!(
            list_steps(dir.path(), NODE, &[]),
            Err(SpoolError::UntrustedOwner { .. })
        ));
    }

    #[test]
    fn writable_spool_dirs_are_refused() {
        let dir = spool();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = list_steps(dir.path(), NODE, &[me()]).expect_err("world-writable");
        assert!(
            matches!(&err, SpoolError::Writable { mode, .. } if *mode == 0o1777),
            "{err}"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(list_steps(dir.path(), NODE, &[me()]).is_ok());
    }

    #[test]
    fn group_write_is_allowed_only_for_root_group() {
        let dir = |mode, uid, gid| mode_problem(libc::S_IFDIR | mode, uid, gid, &[0, 64]);
        assert_eq!(dir(0o755, 0, 0), Ok(()));
        assert_eq!(dir(0o775, 0, 0), Ok(()));
        assert_eq!(dir(0o755, 64, 64), Ok(()));
        assert_eq!(dir(0o775, 64, 64), Err(DirProblem::Writable(0o775)));
        assert_eq!(dir(0o757, 0, 0), Err(DirProblem::Writable(0o757)));
        assert_eq!(dir(0o1777, 0, 0), Err(DirProblem::Writable(0o1777)));
        assert_eq!(dir(0o755, 1000, 0), Err(DirProblem::UntrustedOwner(1000)));
        assert_eq!(
            mode_problem(libc::S_IFREG | 0o755, 0, 0, &[0]),
            Err(DirProblem::NotADirectory)
        );
    }

    #[test]
    fn entry_kinds_and_owners() {
        let entry = |mode, uid| entry_problem(mode, uid, &[0, 64]);
        assert_eq!(entry(libc::S_IFSOCK | 0o777, 0), Ok(()));
        assert_eq!(entry(libc::S_IFSOCK | 0o777, 64), Ok(()));
        assert_eq!(
            entry(libc::S_IFSOCK | 0o777, 1000),
            Err(SkipReason::UntrustedOwner { uid: 1000 })
        );
        assert_eq!(entry(libc::S_IFLNK | 0o777, 0), Err(SkipReason::Symlink));
        for kind in [libc::S_IFREG, libc::S_IFDIR, libc::S_IFIFO, libc::S_IFCHR] {
            assert_eq!(entry(kind | 0o600, 0), Err(SkipReason::NotASocket));
        }
    }

    #[test]
    fn sockets_of_untrusted_owners_are_skipped() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_1.4294967292"),
            socket(dir.path(), "n1_2.4294967292"),
        ];
        // Giving the socket away needs root (CI runs as root); without it
        // this test fails rather than pass having checked nothing.
        assert_eq!(
            me(),
            0,
            "this test chowns a socket to nobody, which needs root: run cargo test as root"
        );
        let nobody = 65534;
        nix::unistd::chown(
            &dir.path().join("n1_2.4294967292"),
            Some(nix::unistd::Uid::from_raw(nobody)),
            None,
        )
        .expect("chown");
        let listing = list_steps(dir.path(), NODE, &[0]).expect("scan");
        assert_eq!(ids(&listing), [(1, EXTERN_STEP_ID, None)]);
        assert_eq!(
            listing.skipped,
            [(
                dir.path().join("n1_2.4294967292"),
                SkipReason::UntrustedOwner { uid: nobody }
            )]
        );
        assert_eq!(
            listing.skipped[0].1.to_string(),
            "is owned by uid 65534, neither root nor SlurmUser"
        );
    }

    #[test]
    fn a_root_owned_link_with_a_good_chain_is_followed_once() {
        for link in ["/local/disk/slurmd", "../../local/disk/slurmd"] {
            let chain = Chain::new(link);
            let listing = chain.list().expect("followed");
            assert_eq!(ids(&listing), [(4, EXTERN_STEP_ID, None)], "{link}");
            // Sockets are named through the configured path.
            assert_eq!(listing.steps[0].path, chain.link().join("n1_4.4294967292"));
            let dir = open_dir(chain.root.path(), &chain.link(), &[me()], &[me()])
                .expect("open")
                .expect("present");
            assert_eq!(dir.path, chain.link());
            let expected = if link.starts_with('/') {
                chain.path("local/disk/slurmd")
            } else {
                chain.path("var/spool").join(link)
            };
            assert_eq!(dir.target, Some(expected));
            // Group write with group root is allowed, as for the spool itself.
            chain.chmod("local/disk", 0o775);
            nix::unistd::chown(
                &chain.path("local/disk"),
                None,
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .expect("chgrp root");
            assert!(chain.list().is_ok(), "{link}");
        }
    }

    #[test]
    fn a_writable_directory_on_the_way_refuses_the_link() {
        for (rel, mode) in [("local", 0o1777), ("local/disk", 0o757), ("", 0o777)] {
            let chain = Chain::new("/local/disk/slurmd");
            chain.chmod(rel, mode);
            let (dir, problem, text) = chain.refused();
            assert_eq!(dir, chain.path(rel), "{text}");
            assert_eq!(problem, LinkProblem::Writable { mode }, "{text}");
            assert!(text.contains(&format!("has mode {mode:04o}")), "{text}");
        }
    }

    #[test]
    fn a_group_writable_directory_of_another_group_refuses_the_link() {
        let chain = Chain::new("/local/disk/slurmd");
        chain.chmod("local", 0o775);
        nix::unistd::chown(
            &chain.path("local"),
            None,
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .expect("chgrp needs root: run cargo test as root");
        let (dir, problem, _) = chain.refused();
        assert_eq!(
            (dir, problem),
            (chain.path("local"), LinkProblem::Writable { mode: 0o775 })
        );
    }

    #[test]
    fn the_target_itself_follows_the_spool_policy() {
        let chain = Chain::new("/local/disk/slurmd");
        chain.chmod("local/disk/slurmd", 0o777);
        let (dir, problem, _) = chain.refused();
        assert_eq!(
            (dir, problem),
            (
                chain.path("local/disk/slurmd"),
                LinkProblem::Writable { mode: 0o777 }
            )
        );
        let untrusted = me().wrapping_add(1);
        chain.chmod("local/disk/slurmd", 0o755);
        let err = list_in(chain.root.path(), &chain.link(), &[untrusted], &[me()])
            .expect_err("untrusted target owner");
        assert!(
            matches!(&err, SpoolError::LinkTarget { dir, problem: LinkProblem::UntrustedOwner { uid }, .. }
                if *dir == chain.path("local/disk/slurmd") && *uid == me()),
            "{err}"
        );
        assert!(
            err.to_string().ends_with("neither root nor SlurmUser"),
            "{err}"
        );
    }

    #[test]
    fn directories_above_the_target_must_be_roots_but_the_target_may_be_slurm_users() {
        assert_eq!(
            me(),
            0,
            "this test chowns directories to other uids, which needs root: run cargo test as root"
        );
        let slurm_user = 64;
        let chain = Chain::new("/local/disk/slurmd");
        nix::unistd::chown(
            &chain.path("local/disk/slurmd"),
            Some(nix::unistd::Uid::from_raw(slurm_user)),
            None,
        )
        .expect("chown");
        let listing = list_in(chain.root.path(), &chain.link(), &[0, slurm_user], &[0])
            .expect("SlurmUser's target");
        assert_eq!(listing.steps.len(), 1);
        nix::unistd::chown(
            &chain.path("local/disk"),
            Some(nix::unistd::Uid::from_raw(slurm_user)),
            None,
        )
        .expect("chown");
        let err = list_in(chain.root.path(), &chain.link(), &[0, slurm_user], &[0])
            .expect_err("SlurmUser's parent");
        assert!(
            matches!(&err, SpoolError::LinkTarget { dir, problem: LinkProblem::NotRootOwned { uid }, .. }
                if *dir == chain.path("local/disk") && *uid == slurm_user),
            "{err}"
        );
        assert!(
            err.to_string().ends_with("is owned by uid 64, not root"),
            "{err}"
        );
    }

    #[test]
    fn a_second_link_anywhere_is_refused() {
        // A link in the middle of the target's path.
        let chain = Chain::new("/mnt/disk/slurmd");
        fs::create_dir(chain.path("mnt")).expect("mkdir");
        chain.chmod("mnt", 0o755);
        symlink("/local/disk", chain.path("mnt/disk")).expect("symlink");
        let (dir, problem, text) = chain.refused();
        assert_eq!(
            (dir, problem),
            (chain.path("mnt/disk"), LinkProblem::Symlink),
            "{text}"
        );
        // A link to a link.
        let chain = Chain::new("/second");
        symlink("/local/disk/slurmd", chain.path("second")).expect("symlink");
        let (dir, problem, text) = chain.refused();
        assert_eq!(
            (dir, problem),
            (chain.path("second"), LinkProblem::Symlink),
            "{text}"
        );
        assert!(text.contains("only one link is followed"), "{text}");
    }

    #[test]
    fn a_link_owned_by_anyone_but_root_is_not_followed() {
        let chain = Chain::new("/local/disk/slurmd");
        let untrusted = me().wrapping_add(1);
        let err = list_in(chain.root.path(), &chain.link(), &[me()], &[untrusted])
            .expect_err("link owner");
        assert!(
            matches!(&err, SpoolError::LinkOwner { path, uid } if *path == chain.link() && *uid == me()),
            "{err}"
        );
    }

    #[test]
    fn a_dangling_link_is_a_missing_spool() {
        let chain = Chain::new("/local/disk/absent");
        assert_eq!(chain.list().expect("missing"), StepListing::default());
        let chain = Chain::new("/nowhere/slurmd");
        assert!(
            open_dir(chain.root.path(), &chain.link(), &[me()], &[me()])
                .expect("missing")
                .is_none()
        );
    }

    #[test]
    fn dot_dot_never_climbs_above_the_root_of_the_walk() {
        // Like `/..` in the kernel, `..` at the root stays there.
        let chain = Chain::new("../../../../../local/disk/slurmd");
        assert_eq!(chain.list().expect("followed").steps.len(), 1);
    }
}
