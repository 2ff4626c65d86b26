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
//! The evidence is one-sided. A job with only its extern step (`salloc
//! --no-shell`) shows no owner at all, so the caller may skip a stepd
//! only when the tree names *another* uid for its job, and must ask every
//! stepd the tree says nothing about. Who owns a job is still decided by
//! the stepd's own answer; this only decides whom not to ask.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{CgroupFs, CgroupMode, parse_u32};

/// A directory as far as the walk cares: its owner, and whether it is a
/// directory nobody but its owner can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStat {
    uid: u32,
    /// A directory (not a symlink), not writable by group or others.
    sealed_dir: bool,
}

fn lstat(path: &Path) -> Option<DirStat> {
    let meta = fs::symlink_metadata(path).ok()?;
    Some(DirStat {
        uid: meta.uid(),
        sealed_dir: meta.file_type().is_dir() && meta.mode() & 0o022 == 0,
    })
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
    /// On cgroup v2, the owner of each of `jobs` whose tree shows one
    /// (see the module doc). `None` on v1 or when no stepd scope exists:
    /// then nothing can be skipped.
    pub fn v2_task_owners(
        &self,
        proc_root: &Path,
        node: &str,
        jobs: impl IntoIterator<Item = u32>,
    ) -> Option<TaskOwners> {
        if self.mode != CgroupMode::Unified {
            return None;
        }
        let scopes = self.v2_scope_dirs(proc_root, node);
        if scopes.is_empty() {
            return None;
        }
        Some(walk_scopes(&scopes, jobs, 0, &lstat))
    }
}

/// The walk, with the trusted owner of the directories above the task
/// directories (root) and the stat injected, so tests can build trees
/// with foreign owners without being root.
///
/// Only the jobs asked about are looked at, by name, so the cost is a few
/// stats per job: a batch job's `step_batch/user/task_0` is tried first,
/// and only a job without one has its steps listed.
fn walk_scopes(
    scopes: &[impl AsRef<Path>],
    jobs: impl IntoIterator<Item = u32>,
    trusted: u32,
    stat: &dyn Fn(&Path) -> Option<DirStat>,
) -> TaskOwners {
    // Evidence from above a task directory counts only if everything on
    // the way is a sealed directory of the trusted owner.
    let trusted_dir = |path: &Path| stat(path).is_some_and(|s| s.sealed_dir && s.uid == trusted);
    let scopes: Vec<&Path> = scopes
        .iter()
        .map(AsRef::as_ref)
        .filter(|scope| trusted_dir(scope))
        .collect();
    let mut owners = BTreeMap::new();
    for job_id in jobs {
        // A job in two scopes (22.05's name and the plain one) with two
        // different owners is no evidence at all.
        let mut found = JobOwner::Unknown;
        for scope in &scopes {
            let job_dir = scope.join(format!("job_{job_id}"));
            let here = match batch_task_owner(&job_dir, trusted, &trusted_dir, stat) {
                Some(uid) => JobOwner::Uid(uid),
                None if trusted_dir(&job_dir) => job_owner(&job_dir, trusted, &trusted_dir, stat),
                None => JobOwner::Unknown,
            };
            found = found.merge(here);
        }
        if let JobOwner::Uid(uid) = found {
            owners.insert(job_id, uid);
        }
    }
    TaskOwners { owners }
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
fn batch_task_owner(
    job_dir: &Path,
    trusted: u32,
    trusted_dir: &dyn Fn(&Path) -> bool,
    stat: &dyn Fn(&Path) -> Option<DirStat>,
) -> Option<u32> {
    let user = job_dir.join("step_batch/user");
    let task = stat(&user.join("task_0")).filter(|t| t.sealed_dir && t.uid != trusted)?;
    trusted_dir(&user).then_some(task.uid)
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

/// The one non-trusted uid owning task directories of the job's real
/// steps, if there is exactly one.
fn job_owner(
    job_dir: &Path,
    trusted: u32,
    trusted_dir: &dyn Fn(&Path) -> bool,
    stat: &dyn Fn(&Path) -> Option<DirStat>,
) -> JobOwner {
    let Ok(steps) = fs::read_dir(job_dir) else {
        return JobOwner::Unknown;
    };
    let mut found: Option<u32> = None;
    for step in steps.flatten() {
        let name = step.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // The extern step's tree is root's whoever owns the job.
        if !name.starts_with("step_") || name == "step_extern" {
            continue;
        }
        let user_dir = step.path().join("user");
        if !trusted_dir(&step.path()) || !trusted_dir(&user_dir) {
            continue;
        }
        for (_, task_dir) in numbered_children(&user_dir, "task_") {
            let Some(task) = stat(&task_dir) else {
                continue;
            };
            if !task.sealed_dir || task.uid == trusted {
                continue;
            }
            match found {
                None => found = Some(task.uid),
                Some(uid) if uid == task.uid => {}
                Some(_) => return JobOwner::Conflicting,
            }
        }
    }
    found.map_or(JobOwner::Unknown, JobOwner::Uid)
}

/// `<dir>/<prefix><number>` entries, in no particular order.
fn numbered_children(dir: &Path, prefix: &str) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = parse_u32(name.to_str()?.strip_prefix(prefix)?)?;
            Some((number, entry.path()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    const ME: u32 = 4242;

    /// A fake tree on disk whose owners come from a table (everything
    /// else is `ME`, the trusted owner), so no root is needed.
    struct Tree {
        dir: tempfile::TempDir,
        owners: HashMap<PathBuf, u32>,
    }

    impl Tree {
        fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().expect("tempdir"),
                owners: HashMap::new(),
            }
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
            let stat = |path: &Path| {
                lstat(path).map(|s| DirStat {
                    uid: self.owners.get(path).copied().unwrap_or(ME),
                    ..s
                })
            };
            walk_scopes(&[self.scope()], 1..=20, ME, &stat)
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
    fn the_public_walk_needs_v2_and_a_scope() {
        let root = tempfile::tempdir().expect("tempdir");
        let no_proc = Path::new("/nonexistent");
        let v1 = CgroupFs::with_mode(root.path(), CgroupMode::Legacy);
        assert_eq!(v1.v2_task_owners(no_proc, "n1", [1]), None);
        let v2 = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(v2.v2_task_owners(no_proc, "n1", [1]), None);
        fs::create_dir_all(root.path().join("system.slice/slurmstepd.scope/job_1")).expect("mkdir");
        fs::set_permissions(
            root.path().join("system.slice/slurmstepd.scope"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        assert!(v2.v2_task_owners(no_proc, "n1", [1]).is_some());
    }
}
