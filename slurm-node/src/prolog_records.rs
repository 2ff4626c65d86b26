//! The Prolog's records of a user's jobs on this node, read by a login.
//!
//! slurmd runs the Prolog before it starts a job's extern step (with
//! `PrologFlags=Contain`, the stepd is spawned only once the Prolog has
//! exited), so for as long as the Prolog runs nothing in the spool shows
//! the job. The hooks' Prolog writes `users/<uid>/started/<job>` under
//! their state directory as it begins (see adopt-hooks' ledger), and the
//! Epilog moves it to `ending/`. A login that finds none of the user's
//! extern steps reads those records to tell "no job here" from "a job
//! that is still starting here", and waits for the second.
//!
//! The records only ever make a login wait or change its message: a
//! record never lets anyone in. Still, only records nobody but root can
//! have written count: the state directory and every directory below it
//! are opened without following a symlink (its parents are the site's
//! path, as for slurm.conf) and must be root's (or ours, in tests) and not
//! writable by group or others. The state directory must be local (the
//! hooks' default is on /run, a tmpfs): it is read without a thread, as
//! the spool is.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode};

/// The hooks' default state directory (adopt.toml `state_dir`).
pub const DEFAULT_STATE_DIR: &str = "/run/slurm-adopt";

/// A started record older than this with still no extern step is a
/// leftover (a node that lost a job without its Epilog), not a job that
/// is starting: the hooks' `start_grace_secs` default.
pub const START_GRACE: Duration = Duration::from_secs(300);

/// One job the Prolog recorded as started and the Epilog has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedJob {
    pub job_id: u32,
    /// Since the record was written (records from the future are left
    /// out).
    pub age: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: nix::Error },
    #[error(
        "{} is not a directory of root's that only root can write (uid {uid}, mode {mode:04o}): its records are not read",
        path.display()
    )]
    Unsafe { path: PathBuf, uid: u32, mode: u32 },
}

/// The jobs of `uid` whose Prolog began and whose Epilog has not, from
/// the records under `state_dir`, newest first. No state directory, or
/// none for the user, is no record (the hooks are not installed, or the
/// user never had a job here).
pub fn started_jobs(
    state_dir: &Path,
    uid: u32,
    now: SystemTime,
) -> Result<Vec<StartedJob>, RecordsError> {
    let me = nix::unistd::geteuid().as_raw();
    let Some(root) = open_sealed(None, state_dir, state_dir, me)? else {
        return Ok(Vec::new());
    };
    let users = state_dir.join("users");
    let Some(users_fd) = open_sealed(Some(&root), Path::new("users"), &users, me)? else {
        return Ok(Vec::new());
    };
    let user = users.join(uid.to_string());
    let Some(user_fd) = open_sealed(Some(&users_fd), Path::new(&uid.to_string()), &user, me)?
    else {
        return Ok(Vec::new());
    };
    let started = records(&user_fd, &user.join("started"), me, now)?;
    let ending = records(&user_fd, &user.join("ending"), me, now)?;
    let mut jobs: Vec<StartedJob> = started
        .into_iter()
        .filter(|s| !ending.iter().any(|e| e.job_id == s.job_id))
        .collect();
    jobs.sort_by_key(|j| (j.age, std::cmp::Reverse(j.job_id)));
    Ok(jobs)
}

/// The most of a devices record read: five short lines.
const MAX_DEVICES_RECORD: usize = 4096;

/// The text of the Prolog's device record of `job` (see
/// [`crate::session::device_env`]), `None` when there is none. The file
/// must be a regular file of root's that only root can write, in the same
/// sealed directories as the started records.
pub fn job_devices(state_dir: &Path, uid: u32, job: u32) -> Result<Option<String>, RecordsError> {
    let me = nix::unistd::geteuid().as_raw();
    let mut dir = state_dir.to_path_buf();
    let mut fd = match open_sealed(None, state_dir, state_dir, me)? {
        Some(fd) => fd,
        None => return Ok(None),
    };
    for part in ["users".to_owned(), uid.to_string(), "devices".to_owned()] {
        dir.push(&part);
        fd = match open_sealed(Some(&fd), Path::new(&part), &dir, me)? {
            Some(next) => next,
            None => return Ok(None),
        };
    }
    let path = dir.join(job.to_string());
    let io_err = |source| RecordsError::Io {
        path: path.clone(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let file = match fcntl::openat(&fd, Path::new(&job.to_string()), flags, Mode::empty()) {
        Ok(file) => file,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(source) => return Err(io_err(source)),
    };
    let st = stat::fstat(&file).map_err(io_err)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || !sealed(&st, me) {
        return Err(RecordsError::Unsafe {
            path,
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
        });
    }
    let mut buf = vec![0u8; MAX_DEVICES_RECORD];
    let mut len = 0;
    while len < buf.len() {
        let chunk = buf.get_mut(len..).unwrap_or_default();
        match nix::unistd::read(&file, chunk) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(io_err(source)),
        }
    }
    buf.truncate(len);
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Open directory `rel` (below `at`, or `path` itself with no `at`) and
/// check it is sealed; `None` when it does not exist.
fn open_sealed(
    at: Option<&OwnedFd>,
    rel: &Path,
    path: &Path,
    me: u32,
) -> Result<Option<OwnedFd>, RecordsError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let opened = match at {
        Some(dir) => fcntl::openat(dir, rel, flags, Mode::empty()),
        None => fcntl::open(path, flags, Mode::empty()),
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(source) => {
            return Err(RecordsError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let st = stat::fstat(&fd).map_err(|source| RecordsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !sealed(&st, me) {
        return Err(RecordsError::Unsafe {
            path: path.to_path_buf(),
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
        });
    }
    Ok(Some(fd))
}

fn sealed(st: &FileStat, me: u32) -> bool {
    (st.st_uid == 0 || st.st_uid == me) && st.st_mode & 0o022 == 0
}

/// The job records in `user/<sub>`: regular files named by a job id, with
/// their age. Other names are not the hooks' and are passed over.
fn records(
    user: &OwnedFd,
    path: &Path,
    me: u32,
    now: SystemTime,
) -> Result<Vec<StartedJob>, RecordsError> {
    let sub = path.file_name().map(Path::new).unwrap_or(path);
    let Some(fd) = open_sealed(Some(user), sub, path, me)? else {
        return Ok(Vec::new());
    };
    let io_err = |source| RecordsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = Dir::openat(&fd, ".", flags, Mode::empty()).map_err(io_err)?;
    let mut found = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(io_err)?;
        let Some(job_id) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&id| id > 0)
        else {
            continue;
        };
        let Ok(st) = stat::fstatat(&fd, entry.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let Some(age) = age(&st, now) else {
            continue;
        };
        found.push(StartedJob { job_id, age });
    }
    Ok(found)
}

/// How long ago the record was written; `None` for one dated more than
/// [`CLOCK_SLACK`] in the future, which no Prolog of this boot can have
/// written unless the clock stepped back: it is not taken for a start.
fn age(st: &FileStat, now: SystemTime) -> Option<Duration> {
    let written = u64::try_from(st.st_mtime)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))?;
    match now.duration_since(written) {
        Ok(age) => Some(age),
        Err(ahead) if ahead.duration() <= CLOCK_SLACK => Some(Duration::ZERO),
        Err(_) => None,
    }
}

/// mtime has whole seconds here, and a record written this second may
/// look up to one ahead.
const CLOCK_SLACK: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn state(uid: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join("users").join(uid.to_string());
        for sub in ["started", "ending"] {
            fs::create_dir_all(user.join(sub)).expect("mkdir");
        }
        for d in [
            dir.path().to_path_buf(),
            dir.path().join("users"),
            user.clone(),
        ] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        (dir, user)
    }

    fn devices_dir(user: &Path) -> PathBuf {
        let d = user.join("devices");
        fs::create_dir_all(&d).expect("mkdir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
        d
    }

    #[test]
    fn a_devices_record_is_read_whole_and_bounded() {
        let (dir, user) = state(2001);
        assert_eq!(job_devices(dir.path(), 2001, 5).expect("none"), None);
        let d = devices_dir(&user);
        fs::write(d.join("5"), b"CUDA_VISIBLE_DEVICES=1\n").expect("write");
        fs::set_permissions(d.join("5"), fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            job_devices(dir.path(), 2001, 5).expect("read").as_deref(),
            Some("CUDA_VISIBLE_DEVICES=1\n")
        );
        fs::write(d.join("6"), vec![b'x'; 3 * MAX_DEVICES_RECORD]).expect("write");
        fs::set_permissions(d.join("6"), fs::Permissions::from_mode(0o600)).expect("chmod");
        let big = job_devices(dir.path(), 2001, 6)
            .expect("read")
            .expect("some");
        assert_eq!(big.len(), MAX_DEVICES_RECORD);
        assert_eq!(job_devices(dir.path(), 2002, 5).expect("no user"), None);
    }

    #[test]
    fn a_devices_record_others_could_write_or_a_link_is_not_read() {
        let (dir, user) = state(2001);
        let d = devices_dir(&user);
        fs::write(d.join("5"), b"CUDA_VISIBLE_DEVICES=1\n").expect("write");
        fs::set_permissions(d.join("5"), fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(
            job_devices(dir.path(), 2001, 5),
            Err(RecordsError::Unsafe { .. })
        ));
        fs::remove_file(d.join("5")).expect("rm");
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"CUDA_VISIBLE_DEVICES=1\n").expect("write");
        std::os::unix::fs::symlink(&elsewhere, d.join("5")).expect("symlink");
        assert!(job_devices(dir.path(), 2001, 5).is_err());
        fs::remove_file(d.join("5")).expect("rm");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(
            job_devices(dir.path(), 2001, 5),
            Err(RecordsError::Unsafe { .. })
        ));
    }

    #[test]
    fn started_and_not_ending_jobs_newest_first() {
        let (dir, user) = state(2001);
        for job in ["5", "7", "9"] {
            fs::write(user.join("started").join(job), b"").expect("write");
        }
        fs::write(user.join("ending/9"), b"").expect("write");
        // Not the hooks' names, and not files: passed over.
        fs::write(user.join("started/junk"), b"").expect("write");
        fs::create_dir(user.join("started/11")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", user.join("started/12")).expect("symlink");
        let later = SystemTime::now() + Duration::from_secs(30);
        let jobs = started_jobs(dir.path(), 2001, later).expect("read");
        let ids: Vec<u32> = jobs.iter().map(|j| j.job_id).collect();
        // Same age: the higher id is the newer job.
        assert_eq!(ids, [7, 5]);
        assert!(
            jobs.iter().all(|j| j.age >= Duration::from_secs(29)),
            "{jobs:?}"
        );
    }

    #[test]
    fn a_record_from_the_future_is_no_start() {
        let (dir, user) = state(2001);
        fs::write(user.join("started/5"), b"").expect("write");
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(started_jobs(dir.path(), 2001, an_hour_ago).unwrap(), []);
        let jobs = started_jobs(dir.path(), 2001, SystemTime::now()).unwrap();
        assert_eq!(jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn no_state_dir_or_no_user_is_no_record() {
        let (dir, _) = state(2001);
        assert_eq!(
            started_jobs(dir.path(), 2002, SystemTime::now()).unwrap(),
            []
        );
        let missing = dir.path().join("nope");
        assert_eq!(started_jobs(&missing, 2001, SystemTime::now()).unwrap(), []);
    }

    #[test]
    fn a_directory_others_can_write_is_not_read() {
        let (dir, user) = state(2001);
        fs::write(user.join("started/5"), b"").expect("write");
        fs::set_permissions(dir.path().join("users"), fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = started_jobs(dir.path(), 2001, SystemTime::now()).unwrap_err();
        assert!(
            matches!(&err, RecordsError::Unsafe { mode: 0o777, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("/users is not a directory of root's"),
            "{err}"
        );
    }

    #[test]
    fn a_symlinked_user_directory_is_not_followed() {
        let (dir, _) = state(2001);
        let elsewhere = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(elsewhere.path().join("started")).expect("mkdir");
        fs::write(elsewhere.path().join("started/5"), b"").expect("write");
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("users/2003"))
            .expect("symlink");
        let err = started_jobs(dir.path(), 2003, SystemTime::now()).unwrap_err();
        assert!(
            matches!(
                &err,
                RecordsError::Io {
                    source: nix::Error::ELOOP | nix::Error::ENOTDIR,
                    ..
                }
            ),
            "{err}"
        );
    }
}
