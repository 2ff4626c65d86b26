//! The cgroup tree as Slurm lays it out for a job's extern step, and a
//! last-resort way to put a process there without the stepd.
//!
//! Adopting through the stepd is always preferred: writing `cgroup.procs`
//! by hand skips the stepd's accounting and its orphan watcher. Everything
//! takes its roots (`/sys/fs/cgroup`, `/proc`, the mountinfo file) as
//! parameters so tests run on fake trees.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

mod task_owners;
pub use task_owners::TaskOwners;

/// How cgroups are mounted at the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies, one per controller under the root.
    Legacy,
    /// v1 controllers plus a cgroup2 hierarchy at `<root>/unified`.
    Hybrid,
    /// A single cgroup2 hierarchy at the root.
    Unified,
}

/// Which of Slurm's cgroup plugins can be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmCgroupVersion {
    V1,
    V2,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {data:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        data: String,
        source: io::Error,
    },
    #[error("the job's cgroup is gone: {path}")]
    JobGone { path: PathBuf },
    #[error("process {pid} exited before it could be moved into {path}")]
    PidGone { path: PathBuf, pid: i32 },
    #[error("{path} is not a leaf cgroup; cgroup v2 takes processes only in leaves")]
    NotALeaf { path: PathBuf },
    #[error("{path} line {line}: {detail}")]
    Mountinfo {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("no cgroup hierarchy is mounted at {path}")]
    NotMounted { path: PathBuf },
    #[error("refusing to move pid {pid}: cgroup.procs reads 0 as the writer itself")]
    InvalidPid { pid: i32 },
}

/// v1 controllers that hold a `step_extern` directory, in the order the
/// pid is written: freezer first because proctrack/cgroup kills the job
/// through it.
const V1_CONTROLLERS: [&str; 5] = ["freezer", "cpuset", "memory", "devices", "cpuacct"];
const DEFAULT_SLICE: &str = "system.slice";

/// A cgroup filesystem rooted at `root` (normally `/sys/fs/cgroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFs {
    root: PathBuf,
    mode: CgroupMode,
    slice: String,
}

impl CgroupFs {
    /// Works out the mode from the mounts listed in `mountinfo` (normally
    /// `/proc/self/mountinfo`): what is mounted at `root` itself, and which
    /// cgroup hierarchies sit directly below it.
    pub fn detect(root: &Path, mountinfo: &Path) -> Result<Self, CgroupError> {
        let text = fs::read(mountinfo).map_err(|source| CgroupError::Read {
            path: mountinfo.to_path_buf(),
            source,
        })?;
        let mounts = parse_mountinfo(&text, mountinfo)?;
        let mode = mode_from_mounts(&mounts, root).ok_or_else(|| CgroupError::NotMounted {
            path: root.to_path_buf(),
        })?;
        Ok(Self::with_mode(root, mode))
    }

    /// For tests and for a `CgroupPlugin=` that overrides detection.
    pub fn with_mode(root: &Path, mode: CgroupMode) -> Self {
        CgroupFs {
            root: root.to_path_buf(),
            mode,
            slice: DEFAULT_SLICE.to_owned(),
        }
    }

    /// The slice Slurm 25.11+ puts its scope in (cgroup.conf
    /// `CgroupSlice`); `system.slice` unless set.
    pub fn with_slice(mut self, slice: &str) -> Self {
        self.slice = slice.to_owned();
        self
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Slurm's cgroup/v2 refuses to run unless the unified hierarchy is at
    /// the root, so on a hybrid host Slurm is on cgroup/v1.
    pub fn slurm_version(&self) -> SlurmCgroupVersion {
        match self.mode {
            CgroupMode::Unified => SlurmCgroupVersion::V2,
            CgroupMode::Legacy | CgroupMode::Hybrid => SlurmCgroupVersion::V1,
        }
    }

    /// The job's extern-step directories that exist on disk, most specific
    /// first.
    ///
    /// v1: one directory per controller, all under the same prefix:
    /// `slurm_<node>` (MULTIPLE_SLURMD builds such as Debian's) if any
    /// controller has it, else plain `slurm`. Mixing prefixes would move the
    /// process twice within one hierarchy and leave it in the wrong one.
    ///
    /// v2: the `task_special` leaf under `<node>_slurmstepd.scope` or
    /// `slurmstepd.scope` in the slice, below the init cgroup Slurm 23.02+
    /// derives from `<proc_root>/1/cgroup`, then below the root itself as
    /// 22.05 had it. A 26.05 job named by SLUID is not found by its id:
    /// see [`CgroupFs::v2_extern_dir_of_stepd`].
    pub fn extern_step_dirs(
        &self,
        proc_root: &Path,
        node: &str,
        uid: u32,
        job_id: u32,
    ) -> Vec<PathBuf> {
        if !is_plain_component(node) {
            return Vec::new();
        }
        match self.mode {
            CgroupMode::Legacy | CgroupMode::Hybrid => self.v1_dirs(node, uid, job_id),
            CgroupMode::Unified => self.v2_dirs(proc_root, node, job_id),
        }
    }

    /// On cgroup v1, the user's jobs on this node as Slurm's own
    /// directories list them: `<controller>/slurm[_<node>]/uid_<uid>/job_<id>`.
    /// Asking one directory replaces asking every stepd on the node whose
    /// owner it is, which on a busy node is most of a login's cost.
    ///
    /// `None` when no controller holds Slurm's root (`slurm_<node>` or
    /// `slurm`): cgroup v2, another layout, or no job ever ran; the caller
    /// must then ask every stepd. `Some(empty)` when Slurm's root is there
    /// but the user has no directory in it.
    pub fn v1_jobs_of_uid(&self, node: &str, uid: u32) -> Option<Vec<u32>> {
        if self.slurm_version() != SlurmCgroupVersion::V1 || !is_plain_component(node) {
            return None;
        }
        for prefix in [format!("slurm_{node}"), "slurm".to_owned()] {
            for ctrl in V1_CONTROLLERS {
                let slurm_root = self.root.join(ctrl).join(&prefix);
                if !slurm_root.is_dir() {
                    continue;
                }
                let uid_dir = slurm_root.join(format!("uid_{uid}"));
                let mut jobs: Vec<u32> = match fs::read_dir(&uid_dir) {
                    Ok(entries) => entries
                        .flatten()
                        .filter_map(|e| {
                            let name = e.file_name().into_string().ok()?;
                            parse_u32(name.strip_prefix("job_")?)
                        })
                        .collect(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                    // Unreadable: no basis to skip anyone.
                    Err(_) => return None,
                };
                jobs.sort_unstable();
                return Some(jobs);
            }
        }
        None
    }

    fn v1_dirs(&self, node: &str, uid: u32, job_id: u32) -> Vec<PathBuf> {
        let job_rel = PathBuf::from(format!("uid_{uid}"))
            .join(format!("job_{job_id}"))
            .join("step_extern");
        for prefix in [format!("slurm_{node}"), "slurm".to_owned()] {
            let dirs: Vec<PathBuf> = V1_CONTROLLERS
                .iter()
                .map(|ctrl| self.root.join(ctrl).join(&prefix).join(&job_rel))
                .filter(|dir| dir.is_dir())
                .collect();
            if !dirs.is_empty() {
                return dirs;
            }
        }
        Vec::new()
    }

    fn v2_dirs(&self, proc_root: &Path, node: &str, job_id: u32) -> Vec<PathBuf> {
        self.v2_scope_dirs(proc_root, node)
            .into_iter()
            .map(|scope| {
                scope
                    .join(format!("job_{job_id}"))
                    .join("step_extern/user/task_special")
            })
            .filter(|dir| dir.is_dir())
            .collect()
    }

    /// The stepd scopes that exist on disk, most specific first:
    /// `<node>_slurmstepd.scope` (22.05) or `slurmstepd.scope` in the
    /// slice, below the init cgroup and then below the root.
    pub(crate) fn v2_scope_dirs(&self, proc_root: &Path, node: &str) -> Vec<PathBuf> {
        if !is_plain_component(&self.slice) || !is_plain_component(node) {
            return Vec::new();
        }
        let mut bases = self.init_cgroup_dirs(proc_root);
        bases.push(self.root.clone());
        let mut scopes: Vec<PathBuf> = Vec::new();
        for base in bases {
            for scope in [
                format!("{node}_slurmstepd.scope"),
                "slurmstepd.scope".to_owned(),
            ] {
                let dir = base.join(&self.slice).join(scope);
                if dir.is_dir() && !scopes.contains(&dir) {
                    scopes.push(dir);
                }
            }
        }
        scopes
    }

    /// Where Slurm 23.02+ roots its scope: pid 1's cgroup, made relative to
    /// the cgroup mount's own root (containers without a cgroup namespace
    /// mount a subtree), minus its last component (`init.scope` on a
    /// systemd host). Slurm drops the last component even when pid 1 is
    /// not in an `init.scope`, so the undropped path is offered second.
    fn init_cgroup_dirs(&self, proc_root: &Path) -> Vec<PathBuf> {
        let Ok(text) = fs::read_to_string(proc_root.join("1/cgroup")) else {
            return Vec::new();
        };
        let Some(mut cg) = text.lines().find_map(|line| line.strip_prefix("0::")) else {
            return Vec::new();
        };
        if cg != "/" {
            if let Some(mount_root) = self.mount_root(&proc_root.join("1/mountinfo")) {
                if let Some(rest) = strip_path_prefix(cg, &mount_root) {
                    cg = rest;
                }
            }
        }
        let parts: Vec<&str> = cg.split('/').filter(|c| !c.is_empty()).collect();
        // A pid 1 outside our cgroup namespace shows up as `/../..`; no
        // directory Slurm made can be reached from that.
        if parts.iter().any(|c| !is_plain_component(c)) {
            return Vec::new();
        }
        let join = |parts: &[&str]| parts.iter().fold(self.root.clone(), |p, c| p.join(c));
        match parts.split_last() {
            None => vec![self.root.clone()],
            Some((_, parent)) => vec![join(parent), join(&parts)],
        }
    }

    /// The 4th mountinfo field of the first mount at the root, as Slurm
    /// reads it: the first entry is the real mount, later ones are binds.
    fn mount_root(&self, mountinfo: &Path) -> Option<String> {
        let text = fs::read(mountinfo).ok()?;
        let mounts = parse_mountinfo(&text, mountinfo).ok()?;
        let mount = mounts.into_iter().find(|m| m.mount_point == self.root)?;
        mount.root.into_os_string().into_string().ok()
    }

    /// Moves `pid` into the given step directories by writing
    /// `cgroup.procs`: into every one on v1 (one per hierarchy), into the
    /// first only on v2, where a process has exactly one cgroup.
    pub fn attach_pid(&self, dirs: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid { pid });
        }
        let targets = match self.mode {
            CgroupMode::Unified => dirs.get(..1).unwrap_or_default(),
            CgroupMode::Legacy | CgroupMode::Hybrid => dirs,
        };
        if targets.is_empty() {
            return Err(CgroupError::JobGone {
                path: self.root.clone(),
            });
        }
        targets
            .iter()
            .try_for_each(|dir| write_procs(&dir.join("cgroup.procs"), pid))
    }

    /// Whether the text of a process's `/proc/<pid>/cgroup` puts it in a
    /// Slurm job, on any hierarchy: v1 `/slurm[_<node>]/uid_<u>/job_<j>/...`
    /// at the hierarchy's root, or v2 `/<slice>/[<node>_]slurmstepd.scope/<job>/...`
    /// (the job directory may be a 26.05 SLUID name instead of `job_<j>`).
    ///
    /// Anchored at Slurm's own roots on purpose: a user with a delegated
    /// subtree (`user@UID.service`) can create a `job_1` or a
    /// `x_slurmstepd.scope` directory of their own, and must not be taken
    /// for a job by the reaper or the session phase.
    pub fn in_slurm_job(cgroup_file_text: &str) -> bool {
        cgroup_file_text.lines().any(|line| {
            let Some(path) = line.splitn(3, ':').nth(2) else {
                return false;
            };
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let v1 = matches!(parts.as_slice(),
                [root, uid, job, ..]
                    if (*root == "slurm" || root.starts_with("slurm_"))
                        && uid.strip_prefix("uid_").and_then(parse_u32).is_some()
                        && job.strip_prefix("job_").and_then(parse_u32).is_some());
            let v2 = matches!(parts.as_slice(),
                [slice, scope, _job, ..]
                    if slice.ends_with(".slice")
                        && !slice.starts_with("user")
                        && (*scope == "slurmstepd.scope" || scope.ends_with("_slurmstepd.scope")));
            v1 || v2
        })
    }

    /// The Slurm job and step a process is in, from the text of its
    /// `/proc/<pid>/cgroup`: the first `job_<n>/step_<x>` pair in any
    /// hierarchy's path. A 26.05 job directory named by SLUID has no id
    /// in it: see [`CgroupFs::job_cgroup_of_pid`].
    pub fn job_of_pid_cgroup(cgroup_file_text: &str) -> Option<(u32, String)> {
        let found = CgroupFs::job_cgroup_of_pid(cgroup_file_text)?;
        Some((found.job_id?, found.step_dir))
    }

    /// The job directory and step a process is in, from the text of its
    /// `/proc/<pid>/cgroup`: on any hierarchy the first `job_<n>/step_<x>`
    /// pair, and on v2 also a job directory of another name right under a
    /// stepd scope (`.../[<node>_]slurmstepd.scope/<job>/step_<x>`), which
    /// is how Slurm 26.05 names a job by its SLUID unless
    /// `CgroupJobIdPaths=yes`. Two processes are in the same job when
    /// their `job_dir`s are equal; the extern stepd's own entry
    /// (`<job>/step_extern/slurm`) ties a SLUID directory to its job.
    pub fn job_cgroup_of_pid(cgroup_file_text: &str) -> Option<JobCgroup> {
        cgroup_file_text.lines().find_map(|line| {
            let path = line.splitn(3, ':').nth(2)?;
            let parts: Vec<&str> = path.split('/').collect();
            // Each window is (parent, job, step); the path's leading "/"
            // gives an empty first part, so a job at the top has a parent.
            parts.windows(3).enumerate().find_map(|(i, window)| {
                let [parent, job, step_dir] = window else {
                    return None;
                };
                let step = step_dir.strip_prefix("step_")?;
                if step.is_empty() || !is_plain_component(job) {
                    return None;
                }
                let job_id = job.strip_prefix("job_").and_then(parse_u32);
                let under_scope =
                    *parent == "slurmstepd.scope" || parent.ends_with("_slurmstepd.scope");
                if job_id.is_none() && !(under_scope && line.starts_with("0::")) {
                    return None;
                }
                Some(JobCgroup {
                    job_dir: parts.get(..i + 2)?.join("/"),
                    job_id,
                    step_dir: (*step_dir).to_owned(),
                })
            })
        })
    }

    /// On cgroup v2, the `step_extern/user/task_special` leaf of the job
    /// whose extern stepd is `stepd_pid`, found from the stepd's own
    /// cgroup (`<job>/step_extern/slurm`) whatever the job directory is
    /// named: `job_<id>`, or the job's SLUID on 26.05. The caller has
    /// checked the stepd's credentials; its cgroup is root's to set.
    pub fn v2_extern_dir_of_stepd(&self, proc_root: &Path, stepd_pid: i32) -> Option<PathBuf> {
        if self.mode != CgroupMode::Unified || stepd_pid <= 0 {
            return None;
        }
        let text = fs::read_to_string(proc_root.join(stepd_pid.to_string()).join("cgroup")).ok()?;
        let found = CgroupFs::job_cgroup_of_pid(&text)?;
        if found.step_dir != "step_extern" {
            return None;
        }
        let parts: Vec<&str> = found.job_dir.split('/').filter(|c| !c.is_empty()).collect();
        if parts.iter().any(|c| !is_plain_component(c)) {
            return None;
        }
        let leaf = parts
            .iter()
            .fold(self.root.clone(), |p, c| p.join(c))
            .join("step_extern/user/task_special");
        leaf.is_dir().then_some(leaf)
    }
}

/// Where a process sits in a Slurm job's cgroup tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCgroup {
    /// The job's directory as the cgroup file gives it, from the
    /// hierarchy's root: `/slurm_n1/uid_1001/job_7` (v1),
    /// `/system.slice/n1_slurmstepd.scope/job_7`, or on 26.05
    /// `/system.slice/n1_slurmstepd.scope/s5A1M91N63DM00`.
    pub job_dir: String,
    /// The job id, when the directory is named `job_<id>`.
    pub job_id: Option<u32>,
    /// `step_extern`, `step_batch`, `step_0`, ...
    pub step_dir: String,
}

fn write_procs(path: &Path, pid: i32) -> Result<(), CgroupError> {
    let data = format!("{pid}\n");
    // No O_CREAT: a missing file means the cgroup is gone, and creating it
    // in a fake or stale tree would report success for nothing.
    OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut file| file.write_all(data.as_bytes()))
        .map_err(|source| write_error(path, pid, data, source))
}

fn write_error(path: &Path, pid: i32, data: String, source: io::Error) -> CgroupError {
    let path = path.to_path_buf();
    match source.raw_os_error() {
        // ENODEV: the cgroup was removed while we held the file open.
        Some(libc::ENOENT | libc::ENODEV) => CgroupError::JobGone { path },
        Some(libc::ESRCH) => CgroupError::PidGone { path, pid },
        Some(libc::EBUSY) => CgroupError::NotALeaf { path },
        _ => CgroupError::Write { path, data, source },
    }
}

/// One line of a mountinfo file, the fields this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    id: u32,
    parent: u32,
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
}

/// Parses `/proc/<pid>/mountinfo` (proc(5)): six fixed fields, any number
/// of optional fields, a lone `-`, then fstype, source and super options.
/// Paths are octal-escaped by the kernel (`\040` for a space) and are not
/// necessarily UTF-8, so the text is handled as bytes.
/// Every mount point listed in a mountinfo file, unescaped, in file order.
pub(crate) fn mount_points(mountinfo: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let text = fs::read(mountinfo).map_err(|source| CgroupError::Read {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    Ok(parse_mountinfo(&text, mountinfo)?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

fn parse_mountinfo(text: &[u8], path: &Path) -> Result<Vec<MountEntry>, CgroupError> {
    let mut mounts = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let err = |detail: &str| CgroupError::Mountinfo {
            path: path.to_path_buf(),
            line: index + 1,
            detail: detail.to_owned(),
        };
        let fields: Vec<&[u8]> = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|f| !f.is_empty())
            .collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 6 {
            return Err(err("fewer than 6 fields before the separator"));
        }
        let sep = fields
            .iter()
            .skip(6)
            .position(|f| *f == b"-")
            .map(|i| i + 6)
            .ok_or_else(|| err("no ' - ' separator after the optional fields"))?;
        let fstype = fields
            .get(sep + 1)
            .ok_or_else(|| err("no filesystem type after the separator"))?;
        let field = |i: usize, what: &str| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| err(&format!("no {what} field")))
        };
        let id = std::str::from_utf8(field(0, "mount id")?)
            .ok()
            .and_then(parse_u32)
            .ok_or_else(|| err("mount id is not a number"))?;
        let parent = std::str::from_utf8(field(1, "parent id")?)
            .ok()
            .and_then(parse_u32)
            .ok_or_else(|| err("parent id is not a number"))?;
        mounts.push(MountEntry {
            id,
            parent,
            root: PathBuf::from(OsString::from_vec(unescape(field(3, "root")?))),
            mount_point: PathBuf::from(OsString::from_vec(unescape(field(4, "mount point")?))),
            fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        });
    }
    Ok(mounts)
}

/// Undoes the kernel's `\ooo` escapes; a backslash not followed by three
/// octal digits is kept as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&first, tail)) = rest.split_first() {
        let octal = tail
            .get(..3)
            .filter(|d| first == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                rest = tail.get(3..).unwrap_or_default();
            }
            None => {
                out.push(first);
                rest = tail;
            }
        }
    }
    out
}

/// The mount visible at the root is the last one listed there (later
/// mounts stack on top). Below it only hierarchies mounted on that very
/// mount count, so a tree hidden by an over-mount is ignored.
fn mode_from_mounts(mounts: &[MountEntry], root: &Path) -> Option<CgroupMode> {
    let at_root = mounts.iter().rev().find(|m| m.mount_point == root);
    match at_root.map(|m| m.fstype.as_str()) {
        Some("cgroup2") => return Some(CgroupMode::Unified),
        Some("cgroup") => return Some(CgroupMode::Legacy),
        _ => {}
    }
    let below_root = |m: &&MountEntry| {
        m.mount_point.parent() == Some(root) && at_root.is_none_or(|r| m.parent == r.id)
    };
    let v1 = mounts
        .iter()
        .filter(below_root)
        .any(|m| m.fstype == "cgroup");
    let unified = root.join("unified");
    let v2 = mounts
        .iter()
        .filter(below_root)
        .any(|m| m.fstype == "cgroup2" && m.mount_point == unified);
    match (v1, v2) {
        (_, true) => Some(CgroupMode::Hybrid),
        (true, false) => Some(CgroupMode::Legacy),
        (false, false) => None,
    }
}

/// A name that stays one directory level when joined onto a path.
fn is_plain_component(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    ) && !name.contains('/')
        && !name.contains('\0')
}

/// `path` without `prefix`, only at a `/` boundary.
fn strip_path_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn parse_u32(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = include_str!("../tests/fixtures/cgroup/mountinfo-legacy.txt");
    const HYBRID: &str = include_str!("../tests/fixtures/cgroup/mountinfo-hybrid.txt");
    const UNIFIED: &str = include_str!("../tests/fixtures/cgroup/mountinfo-unified.txt");
    const SYS: &str = "/sys/fs/cgroup";

    fn mode_of(text: &str, root: &str) -> Result<CgroupMode, CgroupError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mountinfo");
        fs::write(&file, text).expect("write");
        CgroupFs::detect(Path::new(root), &file).map(|fs| fs.mode())
    }

    fn mkdirs(path: &Path) -> PathBuf {
        fs::create_dir_all(path).expect("mkdir");
        fs::write(path.join("cgroup.procs"), b"").expect("procs");
        path.to_path_buf()
    }

    fn write_proc(proc_root: &Path, cgroup: &str) {
        fs::create_dir_all(proc_root.join("1")).expect("mkdir");
        fs::write(proc_root.join("1/cgroup"), cgroup).expect("write");
    }

    #[test]
    fn detects_the_three_modes_from_fixtures() {
        assert_eq!(mode_of(LEGACY, SYS).expect("legacy"), CgroupMode::Legacy);
        assert_eq!(mode_of(HYBRID, SYS).expect("hybrid"), CgroupMode::Hybrid);
        assert_eq!(mode_of(UNIFIED, SYS).expect("unified"), CgroupMode::Unified);
        assert_eq!(
            mode_of(HYBRID, "/sys/fs/cgroup/").expect("slash"),
            CgroupMode::Hybrid
        );
    }

    #[test]
    fn nothing_mounted_at_the_root_is_an_error() {
        let err = mode_of(UNIFIED, "/mnt/cgroup").expect_err("not mounted");
        assert!(
            matches!(&err, CgroupError::NotMounted { path } if path == Path::new("/mnt/cgroup"))
        );
        assert!(matches!(
            mode_of(UNIFIED, "/sys"),
            Err(CgroupError::NotMounted { .. })
        ));
        assert!(matches!(
            mode_of("", SYS),
            Err(CgroupError::NotMounted { .. })
        ));
    }

    #[test]
    fn the_topmost_mount_at_the_root_wins() {
        let stacked = format!("{HYBRID}90 21 0:50 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            mode_of(&stacked, SYS).expect("stacked"),
            CgroupMode::Unified
        );
        // A new tmpfs over the old one hides the v1 hierarchies below it.
        let hidden = format!("{HYBRID}91 21 0:51 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
        assert!(matches!(
            mode_of(&hidden, SYS),
            Err(CgroupError::NotMounted { .. })
        ));
    }

    #[test]
    fn v1_hierarchies_without_a_root_mount_are_legacy() {
        let text = "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 26 0:37 / /cg/freezer rw - cgroup cgroup rw,freezer\n";
        assert_eq!(mode_of(text, "/cg").expect("legacy"), CgroupMode::Legacy);
    }

    #[test]
    fn mountinfo_escapes_and_optional_fields() {
        let mounts = parse_mountinfo(UNIFIED.as_bytes(), Path::new("m")).expect("parse");
        let nfs = mounts.last().expect("entry");
        assert_eq!(nfs.mount_point, Path::new("/mnt/my share"));
        assert_eq!(nfs.fstype, "nfs4");
        assert_eq!((nfs.id, nfs.parent), (45, 28));
        assert_eq!(unescape(br"a\134b\011c\012"), b"a\\b\tc\n");
        assert_eq!(unescape(br"a\04 \999\"), br"a\04 \999\".to_vec());
        let text = "30 22 0:26 / /srv/cg\\040root rw shared:4 master:1 propagate_from:2 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mode_of(text, "/srv/cg root").expect("escaped"),
            CgroupMode::Unified
        );
    }

    #[test]
    fn malformed_mountinfo_lines_name_the_line() {
        let bad = |text: &str| match parse_mountinfo(text.as_bytes(), Path::new("/m")) {
            Err(CgroupError::Mountinfo { line, detail, .. }) => (line, detail),
            other => panic!("{other:?}"),
        };
        let good = "26 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(
            bad(&format!("{good}\n27 26 8:1 / /x rw ext4 sda rw\n")).0,
            3
        );
        assert_eq!(bad("26 1 8:1 / /").0, 1);
        assert!(bad("x 1 8:1 / / rw - ext4 a rw").1.contains("mount id"));
        assert!(bad("26 1 8:1 / / rw -").1.contains("filesystem type"));
        // A `-` among the six fixed fields is not the separator.
        assert!(bad("26 1 8:1 - / rw ext4").1.contains("separator"));
    }

    #[test]
    fn unreadable_mountinfo_is_a_read_error() {
        let err = CgroupFs::detect(Path::new(SYS), Path::new("/nonexistent/mountinfo"))
            .expect_err("missing");
        assert!(
            matches!(err, CgroupError::Read { path, .. } if path == Path::new("/nonexistent/mountinfo"))
        );
    }

    #[test]
    fn detect_on_this_host_does_not_fail() {
        let fs = CgroupFs::detect(Path::new(SYS), Path::new("/proc/self/mountinfo"));
        assert!(fs.is_ok(), "{fs:?}");
    }

    #[test]
    fn slurm_uses_v2_only_on_the_unified_hierarchy() {
        let version = |mode| CgroupFs::with_mode(Path::new(SYS), mode).slurm_version();
        assert_eq!(version(CgroupMode::Unified), SlurmCgroupVersion::V2);
        assert_eq!(version(CgroupMode::Hybrid), SlurmCgroupVersion::V1);
        assert_eq!(version(CgroupMode::Legacy), SlurmCgroupVersion::V1);
    }

    #[test]
    fn v1_dirs_prefer_the_multiple_slurmd_prefix() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let step =
            |ctrl: &str, prefix: &str| r.join(ctrl).join(prefix).join("uid_1001/job_2/step_extern");
        let freezer = mkdirs(&step("freezer", "slurm_vm"));
        let memory = mkdirs(&step("memory", "slurm_vm"));
        let cpuset = mkdirs(&step("cpuset", "slurm_vm"));
        mkdirs(&step("devices", "slurm"));
        mkdirs(&step("freezer", "slurm_vm").with_file_name("step_batch"));
        for mode in [CgroupMode::Legacy, CgroupMode::Hybrid] {
            let fs = CgroupFs::with_mode(r, mode);
            let proc_root = Path::new("/nonexistent");
            assert_eq!(
                fs.extern_step_dirs(proc_root, "vm", 1001, 2),
                [freezer.clone(), cpuset.clone(), memory.clone()]
            );
            assert!(fs.extern_step_dirs(proc_root, "vm", 1002, 2).is_empty());
            assert!(fs.extern_step_dirs(proc_root, "vm", 1001, 3).is_empty());
            assert_eq!(
                fs.extern_step_dirs(proc_root, "other", 1001, 2),
                [step("devices", "slurm")]
            );
        }
    }

    #[test]
    fn node_names_that_are_paths_find_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        mkdirs(&root.path().join("freezer/slurm/uid_1/job_2/step_extern"));
        mkdirs(
            &root
                .path()
                .join("system.slice/slurmstepd.scope/job_2/step_extern/user/task_special"),
        );
        for mode in [CgroupMode::Legacy, CgroupMode::Unified] {
            let fs = CgroupFs::with_mode(root.path(), mode);
            for node in ["", ".", "..", "../x", "a/b"] {
                assert!(
                    fs.extern_step_dirs(Path::new("/nonexistent"), node, 1, 2)
                        .is_empty(),
                    "{node:?}"
                );
            }
        }
    }

    #[test]
    fn v2_dirs_on_bare_metal() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        write_proc(proc_root.path(), "0::/init.scope\n");
        let scoped = mkdirs(
            &root
                .path()
                .join("system.slice/vm_slurmstepd.scope/job_7/step_extern/user/task_special"),
        );
        let plain = mkdirs(
            &root
                .path()
                .join("system.slice/slurmstepd.scope/job_7/step_extern/user/task_special"),
        );
        mkdirs(
            &root
                .path()
                .join("system.slice/vm_slurmstepd.scope/job_7/step_extern/user/task_0"),
        );
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(
            fs.extern_step_dirs(proc_root.path(), "vm", 1001, 7),
            [scoped, plain.clone()]
        );
        assert_eq!(
            fs.extern_step_dirs(proc_root.path(), "other", 1001, 7),
            [plain]
        );
        assert!(
            fs.extern_step_dirs(proc_root.path(), "vm", 1001, 8)
                .is_empty()
        );
        // 22.05 had no init-cgroup lookup: the root itself is still tried.
        let no_proc = Path::new("/nonexistent");
        assert_eq!(fs.extern_step_dirs(no_proc, "vm", 1001, 7).len(), 2);
    }

    #[test]
    fn a_26_05_sluid_job_is_found_through_its_extern_stepd() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        let job = "system.slice/vm_slurmstepd.scope/s5A1M91N63DM00";
        let leaf = mkdirs(&root.path().join(job).join("step_extern/user/task_special"));
        let stepd = |pid: i32, text: &str| {
            mkdirs(&proc_root.path().join(pid.to_string()));
            fs::write(proc_root.path().join(pid.to_string()).join("cgroup"), text).unwrap();
        };
        stepd(632, &format!("0::/{job}/step_extern/slurm\n"));
        // A batch stepd, and one whose job's leaf is gone.
        stepd(633, &format!("0::/{job}/step_batch/slurm\n"));
        stepd(
            634,
            "0::/system.slice/vm_slurmstepd.scope/s5A1M91N6A2T00/step_extern/slurm\n",
        );
        stepd(
            635,
            "0::/system.slice/vm_slurmstepd.scope/../../etc/step_extern/slurm\n",
        );
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        // By id it is not there; by its stepd it is.
        assert!(
            fs.extern_step_dirs(proc_root.path(), "vm", 1001, 2)
                .is_empty()
        );
        assert_eq!(fs.v2_extern_dir_of_stepd(proc_root.path(), 632), Some(leaf));
        for pid in [633, 634, 635, 636, 0, -1] {
            assert_eq!(
                fs.v2_extern_dir_of_stepd(proc_root.path(), pid),
                None,
                "{pid}"
            );
        }
        let v1 = CgroupFs::with_mode(root.path(), CgroupMode::Legacy);
        assert_eq!(v1.v2_extern_dir_of_stepd(proc_root.path(), 632), None);
    }

    #[test]
    fn job_cgroup_of_pid_names_sluid_directories_under_a_stepd_scope() {
        let of = CgroupFs::job_cgroup_of_pid;
        let sluid = "/system.slice/vm_slurmstepd.scope/s5A1M91N63DM00";
        let found = of(&format!("0::{sluid}/step_extern/user/task_special\n")).unwrap();
        assert_eq!(
            found,
            JobCgroup {
                job_dir: sluid.to_owned(),
                job_id: None,
                step_dir: "step_extern".to_owned()
            }
        );
        // The stepd's own entry gives the same job directory.
        assert_eq!(
            of(&format!("0::{sluid}/step_extern/slurm\n"))
                .unwrap()
                .job_dir,
            sluid
        );
        let v1 = of("4:memory:/slurm_vm/uid_1001/job_2/step_extern/task_0\n").unwrap();
        assert_eq!(
            (v1.job_dir.as_str(), v1.job_id),
            ("/slurm_vm/uid_1001/job_2", Some(2))
        );
        // No id and not right under a stepd scope: not a job.
        assert_eq!(
            of("0::/user.slice/user-1.slice/user@1.service/s5A1/step_extern\n"),
            None
        );
        assert_eq!(of("0::/system.slice/slurmstepd.scope/slurmd\n"), None);
        assert_eq!(
            CgroupFs::job_of_pid_cgroup(&format!("0::{sluid}/step_extern\n")),
            None
        );
    }

    #[test]
    fn v2_dirs_honour_the_configured_slice() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        write_proc(proc_root.path(), "0::/\n");
        let dir = mkdirs(
            &root
                .path()
                .join("slurm.slice/slurmstepd.scope/job_7/step_extern/user/task_special"),
        );
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert!(fs.extern_step_dirs(proc_root.path(), "vm", 0, 7).is_empty());
        let fs = fs.with_slice("slurm.slice");
        assert_eq!(fs.extern_step_dirs(proc_root.path(), "vm", 0, 7), [dir]);
        let fs = fs.with_slice("../slurm.slice");
        assert!(fs.extern_step_dirs(proc_root.path(), "vm", 0, 7).is_empty());
    }

    #[test]
    fn v2_dirs_in_a_container() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        write_proc(proc_root.path(), "0::/docker/abc\n");
        let leaf = "system.slice/n1_slurmstepd.scope/job_9/step_extern/user/task_special";
        // Where Slurm puts it (the last component of pid 1's cgroup dropped)
        // and the container's own cgroup.
        let slurm_way = mkdirs(&root.path().join("docker").join(leaf));
        let inside = mkdirs(&root.path().join("docker/abc").join(leaf));
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(
            fs.extern_step_dirs(proc_root.path(), "n1", 0, 9),
            [slurm_way, inside]
        );
    }

    #[test]
    fn v2_init_cgroup_is_relative_to_the_mount_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        write_proc(proc_root.path(), "0::/docker/abc/init.scope\n");
        fs::write(
            proc_root.path().join("1/mountinfo"),
            format!(
                "30 22 0:26 /docker/abc {} rw - cgroup2 cgroup2 rw\n",
                root.path().display()
            ),
        )
        .expect("write");
        let dir = mkdirs(
            &root
                .path()
                .join("system.slice/slurmstepd.scope/job_9/step_extern/user/task_special"),
        );
        mkdirs(
            &root.path().join(
                "docker/abc/system.slice/slurmstepd.scope/job_9/step_extern/user/task_special",
            ),
        );
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(fs.extern_step_dirs(proc_root.path(), "n1", 0, 9)[0], dir);
    }

    #[test]
    fn v2_init_cgroup_outside_our_namespace_falls_back_to_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let proc_root = tempfile::tempdir().expect("tempdir");
        write_proc(proc_root.path(), "0::/../../init.scope\n");
        let dir = mkdirs(
            &root
                .path()
                .join("system.slice/slurmstepd.scope/job_9/step_extern/user/task_special"),
        );
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        assert_eq!(fs.extern_step_dirs(proc_root.path(), "n1", 0, 9), [dir]);
    }

    #[test]
    fn attach_writes_every_v1_dir_and_one_v2_leaf() {
        let root = tempfile::tempdir().expect("tempdir");
        let a = mkdirs(&root.path().join("a"));
        let b = mkdirs(&root.path().join("b"));
        let procs = |dir: &Path| fs::read_to_string(dir.join("cgroup.procs")).expect("read");

        let v1 = CgroupFs::with_mode(root.path(), CgroupMode::Hybrid);
        v1.attach_pid(&[a.clone(), b.clone()], 4242)
            .expect("attach");
        assert_eq!((procs(&a), procs(&b)), ("4242\n".into(), "4242\n".into()));

        let v2 = CgroupFs::with_mode(root.path(), CgroupMode::Unified);
        v2.attach_pid(&[a.clone(), b.clone()], 77).expect("attach");
        assert_eq!(
            (procs(&a), procs(&b)),
            ("4242\n77\n".into(), "4242\n".into())
        );
    }

    #[test]
    fn attach_never_creates_cgroup_procs() {
        let root = tempfile::tempdir().expect("tempdir");
        let empty = root.path().join("empty");
        fs::create_dir(&empty).expect("mkdir");
        let fs = CgroupFs::with_mode(root.path(), CgroupMode::Legacy);
        let err = fs
            .attach_pid(std::slice::from_ref(&empty), 5)
            .expect_err("no file");
        assert!(
            matches!(&err, CgroupError::JobGone { path } if *path == empty.join("cgroup.procs"))
        );
        assert!(!empty.join("cgroup.procs").exists());
        let gone = root.path().join("gone");
        assert!(matches!(
            fs.attach_pid(&[gone], 5),
            Err(CgroupError::JobGone { .. })
        ));
        assert!(matches!(
            fs.attach_pid(&[], 5),
            Err(CgroupError::JobGone { .. })
        ));
        let ok = mkdirs(&root.path().join("ok"));
        assert!(matches!(
            fs.attach_pid(std::slice::from_ref(&ok), 0),
            Err(CgroupError::InvalidPid { pid: 0 })
        ));
        assert!(matches!(
            fs.attach_pid(&[ok], -1),
            Err(CgroupError::InvalidPid { pid: -1 })
        ));
    }

    #[test]
    fn write_errors_are_classified() {
        let path = Path::new("/cg/job_1/cgroup.procs");
        let classify =
            |errno| write_error(path, 9, "9\n".into(), io::Error::from_raw_os_error(errno));
        assert!(matches!(
            classify(libc::ESRCH),
            CgroupError::PidGone { pid: 9, .. }
        ));
        assert!(matches!(
            classify(libc::EBUSY),
            CgroupError::NotALeaf { .. }
        ));
        assert!(matches!(
            classify(libc::ENODEV),
            CgroupError::JobGone { .. }
        ));
        let err = classify(libc::EACCES);
        assert!(matches!(&err, CgroupError::Write { data, .. } if data == "9\n"));
        assert_eq!(
            err.to_string(),
            "cannot write \"9\\n\" to /cg/job_1/cgroup.procs: Permission denied (os error 13)"
        );
    }

    #[test]
    fn job_of_pid_from_proc_cgroup_text() {
        let job = CgroupFs::job_of_pid_cgroup;
        let v2 = "0::/system.slice/vm_slurmstepd.scope/job_12/step_extern/user/task_special\n";
        assert_eq!(job(v2), Some((12, "step_extern".to_owned())));
        let v1 = "12:pids:/system.slice/ssh.service\n\
                  9:freezer:/slurm_vm/uid_1001/job_2/step_extern\n\
                  4:memory:/slurm_vm/uid_1001/job_2/step_extern/task_0\n\
                  1:name=systemd:/system.slice/ssh.service\n\
                  0::/system.slice/ssh.service\n";
        assert_eq!(job(v1), Some((2, "step_extern".to_owned())));
        assert_eq!(
            job("0::/slurmstepd.scope/job_3/step_0+1/user/task_0"),
            Some((3, "step_0+1".into()))
        );
        assert_eq!(
            job("0::/user.slice/user-1001.slice/session-4.scope\n"),
            None
        );
        assert_eq!(job("0::/slurmstepd.scope/job_3\n"), None);
        assert_eq!(job("0::/slurmstepd.scope/job_3/step_\n"), None);
        assert_eq!(job("0::/slurmstepd.scope/job_+3/step_extern\n"), None);
        assert_eq!(
            job("0::/slurmstepd.scope/job_99999999999/step_extern\n"),
            None
        );
        assert_eq!(job("0::/slurmstepd.scope/job_01HXYZ/step_extern\n"), None);
        assert_eq!(job(""), None);
    }

    #[test]
    fn in_slurm_job_is_anchored_at_slurms_roots() {
        let yes = [
            "7:freezer:/slurm_c1/uid_1001/job_9/step_extern\n",
            "4:memory:/slurm/uid_1001/job_9/step_0/task_0\n",
            "0::/system.slice/c1_slurmstepd.scope/job_9/step_extern/user/task_special\n",
            "0::/system.slice/slurmstepd.scope/8d7f1c2a9e/step_0/user/task_0\n",
            "0::/custom.slice/slurmstepd.scope/job_3/step_batch/user/task_0\n",
        ];
        let no = [
            "0::/user.slice/user-1001.slice/user@1001.service/job_1/step_x\n",
            "0::/user.slice/user-1001.slice/user@1001.service/app.slice/x_slurmstepd.scope/j\n",
            "7:freezer:/user/uid_1001/job_9/step_extern\n",
            "7:freezer:/slurm_c1/uid_x/job_9\n",
            "0::/system.slice/sshd.service\n",
            "0::/system.slice/c1_slurmstepd.scope\n",
            "garbage",
        ];
        for text in yes {
            assert!(CgroupFs::in_slurm_job(text), "{text}");
        }
        for text in no {
            assert!(!CgroupFs::in_slurm_job(text), "{text}");
        }
    }

    #[test]
    fn v1_jobs_of_uid_lists_slurms_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let v1 = CgroupFs::with_mode(root, CgroupMode::Legacy);
        assert_eq!(v1.v1_jobs_of_uid("c1", 1001), None, "no Slurm root yet");
        fs::create_dir_all(root.join("freezer/slurm_c1/uid_1002/job_7")).unwrap();
        assert_eq!(v1.v1_jobs_of_uid("c1", 1001), Some(vec![]));
        for job in ["job_12/step_extern", "job_3", "not_a_job", "job_x"] {
            fs::create_dir_all(root.join("freezer/slurm_c1/uid_1001").join(job)).unwrap();
        }
        assert_eq!(v1.v1_jobs_of_uid("c1", 1001), Some(vec![3, 12]));
        assert_eq!(v1.v1_jobs_of_uid("c1", 1002), Some(vec![7]));
        // A non-MULTIPLE_SLURMD build's plain `slurm`, in another controller.
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("memory/slurm/uid_5/job_9")).unwrap();
        let plain = CgroupFs::with_mode(other.path(), CgroupMode::Hybrid);
        assert_eq!(plain.v1_jobs_of_uid("c1", 5), Some(vec![9]));
        // v2 has no uid level; nor can a node name climb out.
        assert_eq!(
            CgroupFs::with_mode(root, CgroupMode::Unified).v1_jobs_of_uid("c1", 1001),
            None
        );
        assert_eq!(v1.v1_jobs_of_uid("../c1", 1001), None);
    }
}
