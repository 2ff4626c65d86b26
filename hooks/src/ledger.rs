//! Which of a user's jobs the hooks have seen start and end on this node,
//! kept under a per-user lock.
//!
//! The spool directory alone cannot answer "is this the user's last job":
//! slurmd runs the Prolog before the job's extern step exists, and a job
//! whose Epilog is running may still have its stepd up. So the Prolog
//! records `started/<job>` and the Epilog records `ending/<job>`, both
//! while holding `lock`; each Epilog then decides with everything the
//! others recorded before it. Two Epilogs of one user are serialised, so
//! the second always sees the first as ending, and a Prolog that starts
//! while an Epilog runs either finishes before it (and is counted) or
//! after it (and recreates what was removed).
//!
//! Layout under the state directory (default `/run/slurm-adopt`, on a
//! tmpfs so a reboot forgets it along with the jobs):
//! `users/<uid>/lock`, `users/<uid>/started/<job>`, `users/<uid>/ending/<job>`,
//! and `users/<uid>/owns/<what>` for each piece of state the hooks made
//! (the runtime dir, linger) and so may take down: what was there before
//! (logind's runtime dir, linger an admin enabled) is left alone.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use slurm_node::session::runtime_dir::safe_parent;

/// The layout is read by pam_adopt.so too (slurm-node's prolog_records),
/// so the default lives there.
pub const DEFAULT_STATE_DIR: &str = slurm_node::prolog_records::DEFAULT_STATE_DIR;
/// How long a hook waits for the user's lock by default.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);
const LOCK_POLL: Duration = Duration::from_millis(10);

/// State the hooks may have made for a user, recorded under `owns/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    RuntimeDir,
    Linger,
}

impl Owned {
    fn file_name(self) -> &'static str {
        match self {
            Owned::RuntimeDir => "runtime-dir",
            Owned::Linger => "linger",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: nix::Error },
    #[error("{} is still locked by another hook of this user after {}s", path.display(), waited.as_secs())]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("{} must be a directory owned by root and writable by root only (uid {owner}, mode {mode:04o}); fix it or set state_dir", path.display())]
    Unsafe {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
}

/// The per-user records under one state directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    root: PathBuf,
}

/// A job marker and how long ago it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub job_id: u32,
    pub age: Duration,
}

/// Holding this is holding the user's lock; dropping it releases it.
#[derive(Debug)]
pub struct UserLock {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Ledger {
    /// The user's records without taking the lock or creating anything
    /// (a dry run): (started, ending), empty when there are none.
    pub fn peek(&self, uid: u32) -> Result<(Vec<Marker>, Vec<Marker>), LedgerError> {
        let dir = self.user_dir(uid);
        let read = |sub: &str| match markers(&dir.join(sub)) {
            Err(LedgerError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(Vec::new())
            }
            other => other,
        };
        Ok((read("started")?, read("ending")?))
    }

    pub fn new(root: impl Into<PathBuf>) -> Ledger {
        Ledger { root: root.into() }
    }

    pub fn user_dir(&self, uid: u32) -> PathBuf {
        self.root.join("users").join(uid.to_string())
    }

    /// Take the user's lock, waiting at most `wait` for whoever holds it
    /// (another hook of the same user). A holder stuck past that (say, on
    /// a hung filesystem) must not stall every later Prolog of the user
    /// until slurmd's own timeout drains the node.
    pub fn lock_user(&self, uid: u32, wait: Duration) -> Result<UserLock, LedgerError> {
        private_dir(&self.root, 0o755)?;
        private_dir(&self.root.join("users"), 0o755)?;
        let dir = self.user_dir(uid);
        private_dir(&dir, 0o700)?;
        for sub in ["started", "ending", "owns", "devices"] {
            private_dir(&dir.join(sub), 0o700)?;
        }
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| LedgerError::Io {
                path: path.clone(),
                source,
            })?;
        let deadline = Instant::now() + wait;
        let mut file = file;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(UserLock { dir, _lock: lock }),
                Err((back, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = back;
                    std::thread::sleep(LOCK_POLL);
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(LedgerError::LockTimeout { path, waited: wait });
                }
                Err((_, source)) => return Err(LedgerError::Lock { path, source }),
            }
        }
    }
}

/// Holding a `UserLock` is the proof that the caller holds the user's
/// lock: every change to the records goes through it.
impl UserLock {
    /// The job's Prolog runs. A leftover `ending/` record of the same id (a
    /// requeued job that comes back to this node) would otherwise make the
    /// running job invisible to every later Epilog.
    pub fn mark_started(&self, job_id: u32) -> Result<(), LedgerError> {
        remove(&self.dir.join("ending").join(job_id.to_string()))?;
        touch(&self.dir.join("started").join(job_id.to_string()))
    }

    pub fn owns(&self, what: Owned) -> bool {
        fs::symlink_metadata(self.dir.join("owns").join(what.file_name()))
            .is_ok_and(|m| m.is_file())
    }

    pub fn set_owned(&self, what: Owned) -> Result<(), LedgerError> {
        touch(&self.dir.join("owns").join(what.file_name()))
    }

    pub fn clear_owned(&self, what: Owned) -> Result<(), LedgerError> {
        remove(&self.dir.join("owns").join(what.file_name()))
    }

    /// The job's Epilog runs: it is no longer one of the user's live jobs.
    pub fn mark_ending(&self, job_id: u32) -> Result<(), LedgerError> {
        remove(&self.dir.join("started").join(job_id.to_string()))?;
        remove(&self.dir.join("devices").join(job_id.to_string()))?;
        touch(&self.dir.join("ending").join(job_id.to_string()))
    }

    /// The job's GPU visibility values for adopted logins (slurm-node's
    /// `session::device_env` record), written whole or not at all: to a
    /// temporary name, then renamed. An empty `text` removes the record.
    pub fn record_devices(&self, job_id: u32, text: &str) -> Result<(), LedgerError> {
        let dir = self.dir.join("devices");
        let path = dir.join(job_id.to_string());
        if text.is_empty() {
            return remove(&path);
        }
        let tmp = dir.join(format!(".{job_id}.tmp"));
        let io_err = |source| LedgerError::Io {
            path: tmp.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err)?;
        file.write_all(text.as_bytes()).map_err(io_err)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|source| LedgerError::Io { path, source })
    }

    pub fn started(&self) -> Result<Vec<Marker>, LedgerError> {
        markers(&self.dir.join("started"))
    }

    pub fn ending(&self) -> Result<Vec<Marker>, LedgerError> {
        markers(&self.dir.join("ending"))
    }

    pub fn forget_started(&self, job_id: u32) -> Result<(), LedgerError> {
        remove(&self.dir.join("started").join(job_id.to_string()))
    }

    pub fn forget_ending(&self, job_id: u32) -> Result<(), LedgerError> {
        remove(&self.dir.join("ending").join(job_id.to_string()))
    }
}

/// Create `path` (mode `mode`, root's) if missing; an existing one must be
/// a real directory that only its owner, root or us, can write.
fn private_dir(path: &Path, mode: u32) -> Result<(), LedgerError> {
    let io_err = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match DirBuilder::new().mode(mode).create(path) {
                Ok(()) => {}
                // Another hook made it between our stat and mkdir.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
            fs::symlink_metadata(path).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    if !safe_parent(&meta) {
        return Err(LedgerError::Unsafe {
            path: path.to_path_buf(),
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

fn touch(path: &Path) -> Result<(), LedgerError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
        .map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn remove(path: &Path) -> Result<(), LedgerError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LedgerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The job markers in `dir`; names that are not job ids are ignored.
fn markers(dir: &Path) -> Result<Vec<Marker>, LedgerError> {
    let io_err = |source| LedgerError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let now = SystemTime::now();
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Some(job_id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&id| id > 0)
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        found.push(Marker { job_id, age });
    }
    found.sort_by_key(|m| m.job_id);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn ids(markers: &[Marker]) -> Vec<u32> {
        markers.iter().map(|m| m.job_id).collect()
    }

    #[test]
    fn started_then_ending() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(tmp.path().join("state"));
        let lock = ledger.lock_user(1001, DEFAULT_LOCK_WAIT).unwrap();
        lock.mark_started(5).unwrap();
        lock.mark_started(7).unwrap();
        fs::write(ledger.user_dir(1001).join("started/junk"), b"").unwrap();
        assert_eq!(ids(&lock.started().unwrap()), [5, 7]);
        lock.mark_ending(5).unwrap();
        assert_eq!(ids(&lock.started().unwrap()), [7]);
        assert_eq!(ids(&lock.ending().unwrap()), [5]);
        lock.forget_ending(5).unwrap();
        lock.forget_started(7).unwrap();
        assert!(lock.started().unwrap().is_empty() && lock.ending().unwrap().is_empty());
        let meta = fs::symlink_metadata(ledger.user_dir(1001)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    #[test]
    fn a_devices_record_is_written_whole_and_ends_with_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("state"));
        let lock = ledger.lock_user(1001, DEFAULT_LOCK_WAIT).unwrap();
        lock.mark_started(5).unwrap();
        lock.record_devices(5, "CUDA_VISIBLE_DEVICES=1\n").unwrap();
        let path = ledger.user_dir(1001).join("devices/5");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "CUDA_VISIBLE_DEVICES=1\n"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!ledger.user_dir(1001).join("devices/.5.tmp").exists());
        lock.mark_ending(5).unwrap();
        assert!(!path.exists());
        lock.record_devices(6, "").unwrap();
        assert!(!ledger.user_dir(1001).join("devices/6").exists());
    }

    #[test]
    fn a_writable_state_dir_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Ledger::new(&root)
            .lock_user(1, DEFAULT_LOCK_WAIT)
            .unwrap_err();
        assert!(matches!(err, LedgerError::Unsafe { .. }), "{err}");
    }

    #[test]
    fn the_lock_serialises_two_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::new(tmp.path().join("state")));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = ledger.lock_user(9, DEFAULT_LOCK_WAIT).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let waiter = {
            let (ledger, order, barrier) = (ledger.clone(), order.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let _second = ledger.lock_user(9, DEFAULT_LOCK_WAIT).unwrap();
                order.lock().unwrap().push("second");
            })
        };
        barrier.wait();
        std::thread::sleep(Duration::from_millis(100));
        order.lock().unwrap().push("first");
        drop(first);
        waiter.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }

    #[test]
    fn a_lock_held_too_long_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(tmp.path().join("state"));
        let _held = ledger.lock_user(3, DEFAULT_LOCK_WAIT).unwrap();
        let t0 = Instant::now();
        let err = ledger.lock_user(3, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, LedgerError::LockTimeout { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_restart_clears_an_old_ending_record_and_ownership_is_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(tmp.path().join("state"));
        let lock = ledger.lock_user(5, DEFAULT_LOCK_WAIT).unwrap();
        lock.mark_started(8).unwrap();
        lock.mark_ending(8).unwrap();
        lock.mark_started(8).unwrap();
        assert_eq!(ids(&lock.started().unwrap()), [8]);
        assert!(lock.ending().unwrap().is_empty());
        assert!(!lock.owns(Owned::RuntimeDir));
        lock.set_owned(Owned::RuntimeDir).unwrap();
        assert!(lock.owns(Owned::RuntimeDir) && !lock.owns(Owned::Linger));
        lock.clear_owned(Owned::RuntimeDir).unwrap();
        assert!(!lock.owns(Owned::RuntimeDir));
    }
}
