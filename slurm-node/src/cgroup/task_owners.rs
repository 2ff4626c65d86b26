//! On cgroup v2, the owners the job tree shows: the narrowing that lets a
//! login skip stepds that are certainly another user's.
//!
//! v2 has no `uid_<uid>` directory. What it has is this: when a stepd
//! starts a real step (batch or srun), it chowns that step's
//! `step_<id>/user/task_<n>` directory to the job's uid. Every directory
//! above it (`job_<id>`, `step_<id>`, `user`) and the whole extern step
//! stay root's. So a job with a task directory owned by uid U is U's job,
//! and nobody else can make it look so: only root creates directories in
//! root-owned cgroup directories, and chown to another uid is root's too.
//!
//! Slurm 24.11 no longer chowns the task directories: there every level
//! is root's, and the owner is read from the processes in the task
//! directory instead (its `cgroup.procs`, then who owns `/proc/<pid>`).
//! Only root can move a process into a root-owned cgroup, so the
//! processes there are the ones the stepd put there: the job's tasks,
//! which run as the job's user. A task still being set up (root, before
//! its setuid) or running a set-id program (non-dumpable, so its /proc
//! entry is root's) shows root and is no evidence; two users in one task
//! directory are none either.
//!
//! The evidence is one-sided. A job with only its extern step (`salloc
//! --no-shell`) shows no owner at all, so the caller may skip a stepd
//! only when the tree names *another* uid for its job, and must ask every
//! stepd the tree says nothing about. Who owns a job is still decided by
//! the stepd's own answer; this only decides whom not to ask.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode};

use super::{CgroupFs, CgroupMode, parse_u32};

/// A directory as far as the walk cares: its owner, and whether it is a
/// directory nobody but its owner can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStat {
    uid: u32,
    /// A directory (not a symlink), not writable by group or others.
    sealed_dir: bool,
}

impl DirStat {
    fn of(st: &FileStat) -> DirStat {
        DirStat {
            uid: st.st_uid,
            sealed_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_mode & 0o022 == 0,
        }
    }
}

/// What the walk reads below the stepd scopes. It only ever names paths
/// relative to a scope (`job_5/step_batch/user/task_0`): on a node they
/// are resolved from the scope's open directory, so a lookup walks only
/// the few cgroup levels below it (the kernfs lookups of the levels
/// above were most of a v2 login's cost), and what is read is the scope
/// that was checked, not whatever its path names later. Tests map them
/// onto a fake tree with owners of their choosing.
trait ScopeReader {
    fn scope_count(&self) -> usize;
    /// `rel` below scope `scope`; the empty path is the scope itself.
    fn stat(&self, scope: usize, rel: &Path) -> Option<DirStat>;
    /// The names in directory `rel` below scope `scope`.
    fn names(&self, scope: usize, rel: &Path) -> Vec<OsString>;
    /// The first pids in `rel/cgroup.procs` below scope `scope`.
    fn procs(&self, scope: usize, rel: &Path) -> Vec<u32>;
    /// Who owns `/proc/<pid>`.
    fn proc_owner(&self, pid: u32) -> Option<u32>;
    /// The start of `/proc/<pid>/cmdline`, arguments joined by spaces: a
    /// stepd's process title.
    fn proc_title(&self, pid: u32) -> Option<String>;
}

/// What is read of a stepd's title: `slurmstepd: [4294967294.extern]`
/// and room to spare.
const TITLE_READ: usize = 64;

/// How many of a task directory's processes are looked at: a job's tasks
/// all run as its user, so a few say as much as all of them.
const PROCS_SAMPLE: usize = 8;
/// What is read of a `cgroup.procs`: room for [`PROCS_SAMPLE`] pids.
const PROCS_READ: usize = 128;

/// The stepd scopes, open, and /proc.
struct OpenScopes {
    fds: Vec<OwnedFd>,
    proc_fd: Option<OwnedFd>,
}

impl OpenScopes {
    fn open(scopes: &[PathBuf], proc_root: &Path) -> OpenScopes {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        OpenScopes {
            fds: scopes
                .iter()
                .filter_map(|scope| fcntl::open(scope.as_path(), flags, Mode::empty()).ok())
                .collect(),
            proc_fd: fcntl::open(proc_root, flags, Mode::empty()).ok(),
        }
    }
}

impl ScopeReader for OpenScopes {
    fn scope_count(&self) -> usize {
        self.fds.len()
    }

    fn stat(&self, scope: usize, rel: &Path) -> Option<DirStat> {
        let fd = self.fds.get(scope)?;
        let st = if rel.as_os_str().is_empty() {
            stat::fstat(fd)
        } else {
            stat::fstatat(fd, rel, AtFlags::AT_SYMLINK_NOFOLLOW)
        };
        st.ok().map(|st| DirStat::of(&st))
    }

    fn names(&self, scope: usize, rel: &Path) -> Vec<OsString> {
        let Some(fd) = self.fds.get(scope) else {
            return Vec::new();
        };
        let target: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(mut dir) = Dir::openat(fd, target, flags, Mode::empty()) else {
            return Vec::new();
        };
        dir.iter()
            .flatten()
            .map(|entry| OsString::from_vec(entry.file_name().to_bytes().to_vec()))
            .filter(|name| name != "." && name != "..")
            .collect()
    }

    fn procs(&self, scope: usize, rel: &Path) -> Vec<u32> {
        let Some(fd) = self.fds.get(scope) else {
            return Vec::new();
        };
        let mut buf = [0u8; PROCS_READ];
        let Some(n) = read_start(fd, &rel.join("cgroup.procs"), &mut buf) else {
            return Vec::new();
        };
        pids_in(buf.get(..n).unwrap_or_default(), n < PROCS_READ)
    }

    fn proc_owner(&self, pid: u32) -> Option<u32> {
        let fd = self.proc_fd.as_ref()?;
        stat::fstatat(fd, pid.to_string().as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| st.st_uid)
    }

    fn proc_title(&self, pid: u32) -> Option<String> {
        let fd = self.proc_fd.as_ref()?;
        let mut buf = [0u8; TITLE_READ];
        let rel = PathBuf::from(pid.to_string()).join("cmdline");
        let n = read_start(fd, &rel, &mut buf)?;
        let title: Vec<u8> = buf
            .get(..n)?
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        String::from_utf8(title).ok()
    }
}

/// One read of the start of `rel` below directory `dir` into `buf`: the
/// byte count. Both files read here (`cgroup.procs`, `/proc/<pid>/cmdline`)
/// are the kernel's, so with O_NONBLOCK a read never waits on a peer.
fn read_start(dir: &OwnedFd, rel: &Path, buf: &mut [u8]) -> Option<usize> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let file = fcntl::openat(dir, rel, flags, Mode::empty()).ok()?;
    nix::unistd::read(&file, buf).ok()
}

/// Whether a scope entry is named like a 26.05 SLUID job directory (`s`
/// and 13 upper-case letters or digits). Only those are looked into: the
/// scope's other entries (`slurmd`, `system`, the cgroup interface files)
/// are never even stat'ed, which under SELinux sshd_t may not do for
/// cgroup files.
fn looks_like_sluid(name: &[u8]) -> bool {
    name.len() == 14
        && name.first() == Some(&b's')
        && name
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// The job id in an extern stepd's process title,
/// `slurmstepd: [<job>.extern]`.
fn extern_stepd_job(title: &str) -> Option<u32> {
    let inner = title.strip_prefix("slurmstepd: [")?;
    parse_u32(inner.split_once(".extern]")?.0)
}

/// The pids in the start of a `cgroup.procs` (one per line); the last,
/// possibly cut, line counts only when the read reached the end.
fn pids_in(bytes: &[u8], whole: bool) -> Vec<u32> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if !whole {
        lines.pop();
    }
    lines
        .into_iter()
        .filter_map(|l| std::str::from_utf8(l).ok().and_then(parse_u32))
        .take(PROCS_SAMPLE)
        .collect()
}

/// Jobs whose cgroup tree names their owner, from one walk of the stepd
/// scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskOwners {
    owners: BTreeMap<u32, u32>,
}

impl TaskOwners {
    /// The uid that owns `job_id`'s task directories, when the tree names
    /// exactly one.
    pub fn owner_of(&self, job_id: u32) -> Option<u32> {
        self.owners.get(&job_id).copied()
    }

    /// How many jobs have a known owner.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

/// For callers' tests: (job, owner) pairs as a walk would have found them.
impl FromIterator<(u32, u32)> for TaskOwners {
    fn from_iter<I: IntoIterator<Item = (u32, u32)>>(pairs: I) -> Self {
        TaskOwners {
            owners: pairs.into_iter().collect(),
        }
    }
}

impl CgroupFs {
    /// On cgroup v2, the owner of every job in the stepd scopes whose
    /// tree shows one (see the module doc). `None` on v1 or when no
    /// stepd scope exists: then nothing can be skipped.
    pub fn v2_task_owners(&self, proc_root: &Path, node: &str) -> Option<TaskOwners> {
        if self.mode != CgroupMode::Unified {
            return None;
        }
        let scopes = self.v2_scope_dirs(proc_root, node);
        if scopes.is_empty() {
            return None;
        }
        Some(walk_scopes(&OpenScopes::open(&scopes, proc_root), 0))
    }
}

/// The walk, with the trusted owner of the directories above the task
/// directories (root) injected, so tests can build trees with foreign
/// owners without being root.
///
/// The cost is one listing per scope and two stats per job: a batch
/// job's `step_batch/user/task_0` is tried first, and only a job without
/// one has its steps listed.
fn walk_scopes(reader: &dyn ScopeReader, trusted: u32) -> TaskOwners {
    // Evidence from above a task directory counts only if everything on
    // the way is a sealed directory of the trusted owner.
    let trusted_dir = |scope: usize, rel: &Path| {
        reader
            .stat(scope, rel)
            .is_some_and(|s| s.sealed_dir && s.uid == trusted)
    };
    // A job in two scopes (22.05's name and the plain one) with two
    // different owners is no evidence at all.
    let mut found: BTreeMap<u32, JobOwner> = BTreeMap::new();
    for scope in 0..reader.scope_count() {
        if !trusted_dir(scope, Path::new("")) {
            continue;
        }
        for name in reader.names(scope, Path::new("")) {
            let by_name = name
                .to_str()
                .and_then(|n| parse_u32(n.strip_prefix("job_")?));
            let job = JobTree {
                reader,
                scope,
                dir: PathBuf::from(name),
                trusted,
            };
            // 26.05 names job directories by SLUID: the id is then the
            // extern stepd's to tell. The scope's other entries (`slurmd`,
            // `system`, cgroup files) have no stepd and are passed over.
            let Some(job_id) = by_name.or_else(|| {
                looks_like_sluid(job.dir.as_os_str().as_encoded_bytes())
                    .then(|| job.stepd_job_id())
                    .flatten()
            }) else {
                continue;
            };
            let here = match job.batch_task_owner() {
                Some(uid) => JobOwner::Uid(uid),
                None if trusted_dir(scope, &job.dir) => job.step_owner(),
                None => JobOwner::Unknown,
            };
            let entry = found.entry(job_id).or_insert(JobOwner::Unknown);
            *entry = entry.merge(here);
        }
    }
    TaskOwners {
        owners: found
            .into_iter()
            .filter_map(|(job, owner)| match owner {
                JobOwner::Uid(uid) => Some((job, uid)),
                _ => None,
            })
            .collect(),
    }
}

/// One `job_<id>` directory in one scope.
struct JobTree<'a> {
    reader: &'a dyn ScopeReader,
    scope: usize,
    /// Relative to the scope.
    dir: PathBuf,
    trusted: u32,
}

impl JobTree<'_> {
    fn stat(&self, rel: &Path) -> Option<DirStat> {
        self.reader.stat(self.scope, rel)
    }

    fn trusted_dir(&self, rel: &Path) -> bool {
        self.stat(rel)
            .is_some_and(|s| s.sealed_dir && s.uid == self.trusted)
    }

    /// The id of the job whose directory has no id in its name (26.05's
    /// SLUID names), from the title of the extern stepd in its
    /// `step_extern/slurm`. Trusted as a task's processes are: only root
    /// can put a process in that sealed root-owned directory, and the
    /// process must be the trusted owner's, whose title nobody else can
    /// set.
    fn stepd_job_id(&self) -> Option<u32> {
        let extern_step = self.dir.join("step_extern");
        let slurm = extern_step.join("slurm");
        if !self.trusted_dir(&self.dir)
            || !self.trusted_dir(&extern_step)
            || !self.trusted_dir(&slurm)
        {
            return None;
        }
        self.reader
            .procs(self.scope, &slurm)
            .into_iter()
            .find_map(|pid| {
                if self.reader.proc_owner(pid) != Some(self.trusted) {
                    return None;
                }
                extern_stepd_job(&self.reader.proc_title(pid)?)
            })
    }

    /// The owner of a batch job's first task directory, when it is there
    /// in a trusted `user` directory: two stats for the common case.
    ///
    /// The directory it sits in is the one that matters: only its owner can
    /// create entries in a sealed directory, and cgroup v2 refuses rename
    /// (EPERM on the unified hierarchy), so nobody can have moved a
    /// directory of theirs in from elsewhere. Whoever could write higher up
    /// (`job_<id>`, `step_batch`) could only have replaced `user` with a
    /// directory of their own, which fails this check.
    fn batch_task_owner(&self) -> Option<u32> {
        let user = self.dir.join("step_batch/user");
        let task_dir = user.join("task_0");
        let task = self.stat(&task_dir).filter(|t| t.sealed_dir)?;
        if !self.trusted_dir(&user) {
            return None;
        }
        match self.task_owner(&task_dir, task) {
            JobOwner::Uid(uid) => Some(uid),
            _ => None,
        }
    }

    /// Whose the sealed task directory `task_dir` (stat `task`) is: its
    /// owner when the stepd chowned it (up to 23.x), else the one user its
    /// processes run as (24.11 and later).
    fn task_owner(&self, task_dir: &Path, task: DirStat) -> JobOwner {
        if task.uid == self.trusted {
            self.procs_owner(task_dir)
        } else {
            JobOwner::Uid(task.uid)
        }
    }

    /// The one user the processes in task directory `rel` (trusted, so
    /// only root can have put them there) run as.
    fn procs_owner(&self, rel: &Path) -> JobOwner {
        let mut found = JobOwner::Unknown;
        for pid in self.reader.procs(self.scope, rel) {
            let here = match self.reader.proc_owner(pid) {
                // Root is a task not yet set up, or a set-id program:
                // nothing is said of the job.
                Some(uid) if uid == self.trusted || uid == 0 => return JobOwner::Unknown,
                Some(uid) => JobOwner::Uid(uid),
                // Gone since the listing.
                None => JobOwner::Unknown,
            };
            found = found.merge(here);
        }
        found
    }

    /// The one non-trusted uid owning task directories of the job's real
    /// steps, if there is exactly one.
    fn step_owner(&self) -> JobOwner {
        let mut found: Option<u32> = None;
        for name in self.reader.names(self.scope, &self.dir) {
            let Some(name) = name.to_str() else {
                continue;
            };
            // The extern step's tree is root's whoever owns the job.
            if !name.starts_with("step_") || name == "step_extern" {
                continue;
            }
            let step = self.dir.join(name);
            let user_dir = step.join("user");
            if !self.trusted_dir(&step) || !self.trusted_dir(&user_dir) {
                continue;
            }
            for task in self.reader.names(self.scope, &user_dir) {
                let is_task = task
                    .to_str()
                    .and_then(|t| parse_u32(t.strip_prefix("task_")?))
                    .is_some();
                if !is_task {
                    continue;
                }
                let task_dir = user_dir.join(task);
                let Some(task) = self.stat(&task_dir).filter(|t| t.sealed_dir) else {
                    continue;
                };
                let uid = match self.task_owner(&task_dir, task) {
                    JobOwner::Uid(uid) => uid,
                    JobOwner::Conflicting => return JobOwner::Conflicting,
                    JobOwner::Unknown => continue,
                };
                match found {
                    None => found = Some(uid),
                    Some(seen) if seen == uid => {}
                    Some(_) => return JobOwner::Conflicting,
                }
            }
        }
        found.map_or(JobOwner::Unknown, JobOwner::Uid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobOwner {
    Unknown,
    Conflicting,
    Uid(u32),
}

impl JobOwner {
    fn merge(self, other: JobOwner) -> JobOwner {
        match (self, other) {
            (JobOwner::Unknown, x) | (x, JobOwner::Unknown) => x,
            (JobOwner::Uid(a), JobOwner::Uid(b)) if a == b => self,
            _ => JobOwner::Conflicting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const ME: u32 = 4242;

    /// A fake tree on disk whose owners come from a table (everything
    /// else is `ME`, the trusted owner), so no root is needed.
    struct Tree {
        dir: tempfile::TempDir,
        owners: HashMap<PathBuf, u32>,
        /// Task directory (relative to the scope) → its (pid, owner)s.
        procs: HashMap<PathBuf, Vec<(u32, u32)>>,
        /// pid → its process title.
        titles: HashMap<u32, String>,
        next_pid: u32,
    }

    impl Tree {
        fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().expect("tempdir"),
                owners: HashMap::new(),
                procs: HashMap::new(),
                titles: HashMap::new(),
                next_pid: 1000,
            }
        }

        /// A root-owned task directory (Slurm 24.11+) whose processes run
        /// as `uids`, in order.
        fn task_with_procs(&mut self, rel: &str, uids: &[u32]) {
            self.mkdir(rel, None);
            let mut procs = Vec::new();
            for &uid in uids {
                self.next_pid += 1;
                procs.push((self.next_pid, uid));
            }
            self.procs.insert(PathBuf::from(rel), procs);
        }

        /// A 26.05 job directory named `sluid`, with its extern stepd
        /// (owned by `stepd_uid`, titled for `job`) in step_extern/slurm.
        fn sluid_job(&mut self, sluid: &str, job: u32, stepd_uid: u32) {
            let slurm = format!("{sluid}/step_extern/slurm");
            self.task_with_procs(&slurm, &[stepd_uid]);
            self.mkdir(&format!("{sluid}/step_extern/user/task_special"), None);
            let pid = self.next_pid;
            self.titles
                .insert(pid, format!("slurmstepd: [{job}.extern]"));
        }

        fn scope(&self) -> PathBuf {
            self.dir.path().join("system.slice/n1_slurmstepd.scope")
        }

        fn mkdir(&mut self, rel: &str, owner: Option<u32>) -> PathBuf {
            let path = self.scope().join(rel);
            fs::create_dir_all(&path).expect("mkdir");
            if let Some(uid) = owner {
                self.owners.insert(path.clone(), uid);
            }
            path
        }

        fn walk(&self) -> TaskOwners {
            walk_scopes(self, ME)
        }
    }

    /// The fake tree as the walk reads it: real directories, owners from
    /// the table.
    impl ScopeReader for Tree {
        fn scope_count(&self) -> usize {
            1
        }

        fn stat(&self, _scope: usize, rel: &Path) -> Option<DirStat> {
            let path = if rel.as_os_str().is_empty() {
                self.scope()
            } else {
                self.scope().join(rel)
            };
            let meta = fs::symlink_metadata(&path).ok()?;
            Some(DirStat {
                uid: self.owners.get(&path).copied().unwrap_or(ME),
                sealed_dir: meta.file_type().is_dir() && meta.mode() & 0o022 == 0,
            })
        }

        fn names(&self, _scope: usize, rel: &Path) -> Vec<OsString> {
            fs::read_dir(self.scope().join(rel))
                .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        }

        fn procs(&self, _scope: usize, rel: &Path) -> Vec<u32> {
            self.procs
                .get(rel)
                .map(|procs| procs.iter().map(|&(pid, _)| pid).collect())
                .unwrap_or_default()
        }

        fn proc_owner(&self, pid: u32) -> Option<u32> {
            self.procs
                .values()
                .flatten()
                .find_map(|&(p, uid)| (p == pid).then_some(uid))
        }

        fn proc_title(&self, pid: u32) -> Option<String> {
            self.titles.get(&pid).cloned()
        }
    }

    #[test]
    fn a_batch_task_directory_names_the_job_owner() {
        let mut tree = Tree::new();
        tree.mkdir("job_5/step_extern/user/task_special", None);
        tree.mkdir("job_5/step_batch/user/task_0", Some(2001));
        tree.mkdir("job_6/step_0/user/task_3", Some(2002));
        let owners = tree.walk();
        assert_eq!(owners.owner_of(5), Some(2001));
        assert_eq!(owners.owner_of(6), Some(2002));
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn a_sluid_job_directory_is_known_by_its_extern_stepd() {
        let mut tree = Tree::new();
        // 26.05: batch job 5 of 2001 and job 6 of 2002 (a 24.11-style
        // root-owned task directory, processes as the user).
        tree.sluid_job("s5A1M91N63DM00", 5, ME);
        tree.mkdir("s5A1M91N63DM00/step_batch/user/task_0", Some(2001));
        tree.sluid_job("s5A1M91N6A2T00", 6, ME);
        tree.task_with_procs("s5A1M91N6A2T00/step_0/user/task_0", &[2002]);
        // A "stepd" that is not the trusted owner's says nothing; nor do
        // a title of another shape and a directory without a stepd.
        tree.sluid_job("s5A1M91N6C3F00", 7, 2003);
        tree.mkdir("s5A1M91N6C3F00/step_batch/user/task_0", Some(2003));
        tree.sluid_job("s5A1M91N6Z6A00", 8, ME);
        tree.titles
            .insert(tree.next_pid, "slurmstepd: [8.0]".to_owned());
        tree.mkdir("s5A1M91N6Z6A00/step_batch/user/task_0", Some(2004));
        tree.mkdir("slurmd", None);
        let owners = tree.walk();
        assert_eq!(owners.owner_of(5), Some(2001));
        assert_eq!(owners.owner_of(6), Some(2002));
        assert_eq!(owners.owner_of(7), None);
        assert_eq!(owners.owner_of(8), None);
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn only_sluid_shaped_names_are_looked_into() {
        assert!(looks_like_sluid(b"s5A1M91N63DM00"));
        for name in [
            &b"slurmd"[..],
            b"system",
            b"cgroup.procs",
            b"s5A1M91N63DM0",
            b"s5a1m91n63dm00",
            b"x5A1M91N63DM00",
        ] {
            assert!(!looks_like_sluid(name), "{name:?}");
        }
    }

    #[test]
    fn extern_stepd_titles() {
        assert_eq!(extern_stepd_job("slurmstepd: [15.extern]      "), Some(15));
        assert_eq!(extern_stepd_job("slurmstepd: [15.extern]"), Some(15));
        assert_eq!(extern_stepd_job("slurmstepd: [15.batch]"), None);
        assert_eq!(extern_stepd_job("slurmstepd: [x.extern]"), None);
        assert_eq!(extern_stepd_job("sleep 15.extern]"), None);
    }

    #[test]
    fn an_extern_only_allocation_names_nobody() {
        let mut tree = Tree::new();
        tree.mkdir("job_7/step_extern/user/task_special", None);
        // Even a foreign-owned directory inside the extern step is no
        // evidence: that tree is root's whoever owns the job.
        tree.mkdir("job_7/step_extern/user/task_0", Some(2001));
        assert_eq!(tree.walk().owner_of(7), None);
        assert!(tree.walk().is_empty());
    }

    #[test]
    fn evidence_below_an_untrusted_directory_does_not_count() {
        let mut tree = Tree::new();
        // A user-owned `user` directory could hold any task directory.
        tree.mkdir("job_8/step_batch/user", Some(2001));
        tree.mkdir("job_8/step_batch/user/task_0", Some(2002));
        // A writable step directory.
        let step = tree.mkdir("job_9/step_0", None);
        tree.mkdir("job_9/step_0/user/task_0", Some(2002));
        fs::set_permissions(&step, fs::Permissions::from_mode(0o777)).expect("chmod");
        // A job directory owned by someone else: what they could make
        // below it is theirs too.
        tree.mkdir("job_10", Some(2003));
        tree.mkdir("job_10/step_batch", Some(2003));
        tree.mkdir("job_10/step_batch/user", Some(2003));
        tree.mkdir("job_10/step_batch/user/task_0", Some(2003));
        // The same without a batch step, found by listing the steps.
        tree.mkdir("job_14", Some(2003));
        tree.mkdir("job_14/step_0/user/task_0", Some(2003));
        let owners = tree.walk();
        assert_eq!(owners.owner_of(8), None);
        assert_eq!(owners.owner_of(9), None);
        assert_eq!(owners.owner_of(10), None);
        assert_eq!(owners.owner_of(14), None);
    }

    #[test]
    fn two_owners_in_one_job_are_no_evidence() {
        let mut tree = Tree::new();
        // Found only when the steps are listed (no batch step).
        tree.mkdir("job_11/step_0/user/task_0", Some(2001));
        tree.mkdir("job_11/step_1/user/task_0", Some(2002));
        tree.mkdir("job_12/step_batch/user/task_0", Some(2001));
        tree.mkdir("job_12/step_0/user/task_1", Some(2001));
        let owners = tree.walk();
        assert_eq!(owners.owner_of(11), None);
        assert_eq!(owners.owner_of(12), Some(2001));
    }

    #[test]
    fn names_that_are_not_slurms_are_ignored() {
        let mut tree = Tree::new();
        tree.mkdir("job_x/step_batch/user/task_0", Some(2001));
        tree.mkdir("job_13/step_batch/user/task_0x", Some(2001));
        tree.mkdir("job_13/stepbatch/user/task_0", Some(2001));
        assert!(tree.walk().is_empty());
    }

    #[test]
    fn root_owned_task_directories_are_judged_by_their_processes() {
        let mut tree = Tree::new();
        // 24.11: a batch job whose script and sleep run as 2001.
        tree.task_with_procs("job_20/step_batch/user/task_0", &[2001, 2001]);
        // An srun step (no batch step) of 2002.
        tree.task_with_procs("job_21/step_0/user/task_0", &[2002]);
        // A task the stepd has not yet setuid'd, or a set-id program:
        // root says nothing, even beside the user's own processes.
        tree.task_with_procs("job_22/step_batch/user/task_0", &[2003, ME]);
        tree.task_with_procs("job_23/step_batch/user/task_0", &[0]);
        // Two users in one task directory: no evidence.
        tree.task_with_procs("job_24/step_batch/user/task_0", &[2001, 2002]);
        // Two steps of one job with different users: no evidence.
        tree.task_with_procs("job_25/step_0/user/task_0", &[2001]);
        tree.task_with_procs("job_25/step_1/user/task_0", &[2002]);
        // No process (all ended): nothing.
        tree.mkdir("job_26/step_batch/user/task_0", None);
        let owners = tree.walk();
        assert_eq!(owners.owner_of(20), Some(2001));
        assert_eq!(owners.owner_of(21), Some(2002));
        assert_eq!(owners.owner_of(22), None);
        assert_eq!(owners.owner_of(23), None);
        assert_eq!(owners.owner_of(24), None);
        assert_eq!(owners.owner_of(25), None);
        assert_eq!(owners.owner_of(26), None);
        assert_eq!(owners.len(), 2);
    }

    #[test]
    fn processes_below_an_untrusted_directory_do_not_count() {
        let mut tree = Tree::new();
        tree.mkdir("job_30/step_batch/user", Some(2001));
        tree.task_with_procs("job_30/step_batch/user/task_0", &[2002]);
        // Processes in the extern step are never evidence: sshd's
        // adopted logins and the stepd's helpers live there.
        tree.task_with_procs("job_31/step_extern/user/task_special", &[2002]);
        let owners = tree.walk();
        assert_eq!(owners.owner_of(30), None);
        assert_eq!(owners.owner_of(31), None);
    }

    #[test]
    fn cgroup_procs_is_read_only_as_far_as_whole_lines() {
        assert_eq!(pids_in(b"12\n345\n", true), vec![12, 345]);
        // A read that filled the buffer may have cut the last pid.
        assert_eq!(pids_in(b"12\n345\n67", false), vec![12, 345]);
        assert_eq!(pids_in(b"12\nx\n\n9", true), vec![12, 9]);
        assert_eq!(pids_in(b"", true), Vec::<u32>::new());
        let many: String = (1..=20).map(|p| format!("{p}\n")).collect();
        assert_eq!(pids_in(many.as_bytes(), true).len(), PROCS_SAMPLE);
    }

    #[test]
    fn the_public_walk_needs_v2_and_a_scope() {
        let root = tempfile::tempdir().expect("tempdir");
        let no_proc = Path::new("/nonexistent");
        let v1 = CgroupFs::with_mode(root.path(), CgroupMode::Legacy);
        assert_eq!(v1.v2_task_owners(no_proc, "n1"), None);
        let v2 = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(v2.v2_task_owners(no_proc, "n1"), None);
        fs::create_dir_all(root.path().join("system.slice/slurmstepd.scope/job_1")).expect("mkdir");
        fs::set_permissions(
            root.path().join("system.slice/slurmstepd.scope"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        assert!(v2.v2_task_owners(no_proc, "n1").is_some());
    }
}
