//! What the Prolog and the Epilog do for one job, with every root a
//! parameter so the tests run them on temp trees.
//!
//! The Prolog sets the user's state up (runtime dir or linger) and records
//! the job; a failure there is a failure to set the job up, which the
//! binary reports by exiting non-zero (slurmd then drains the node). The
//! Epilog takes the state down only after the user's last job, and never
//! fails: what it cannot do is logged and the state is kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::userenv::last_job::{self, Evidence, LiveSteps, Verdict};
use crate::userenv::ledger::{Ledger, LedgerError, UserLock};
use crate::userenv::linger::{Linger, LingerError, Switched};
use crate::userenv::runtime_dir::{Ensured, Removed, RuntimeDirError, RuntimeDirs};
use crate::userenv::strays;

/// What the hooks keep for a user while they have jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "hook-config",
    derive(serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Mode {
    /// Create `/run/user/$UID` for the user's jobs; start no user manager.
    #[default]
    RuntimeDir,
    /// Enable linger (a systemd user manager) while the user has jobs.
    Linger,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::RuntimeDir => "runtime-dir",
            Mode::Linger => "linger",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    RuntimeDir(#[from] RuntimeDirError),
    #[error(transparent)]
    Linger(#[from] LingerError),
}

/// The job's user, as the hooks act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub job_id: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
}

/// Where this node's extern steps are found.
#[derive(Debug, Clone)]
pub struct NodeSpool {
    pub spool_dir: PathBuf,
    pub node_name: String,
    pub trusted_uids: Vec<u32>,
}

/// `reap_strays` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reap {
    pub dry_run: bool,
    pub uid_min: u32,
}

#[derive(Debug, Clone)]
pub struct Hooks {
    pub mode: Mode,
    pub ledger: Ledger,
    pub runtime_dirs: RuntimeDirs,
    pub linger: Linger,
    pub reap: Option<Reap>,
    pub proc_root: PathBuf,
    pub stepd_timeout: Duration,
    pub start_grace: Duration,
}

/// What the Epilog decided and did, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpilogReport {
    pub verdict: Verdict,
    /// What was changed (empty when the state was kept or on a dry run).
    pub actions: Vec<String>,
    /// What could not be done or known; each is logged as a warning.
    pub warnings: Vec<String>,
    pub other_users_steps: usize,
}

impl Hooks {
    /// Record the job and make sure the user's state exists. Returns what
    /// was done, for the log.
    pub fn prolog(&self, job: &JobUser) -> Result<String, HookError> {
        let lock = self.ledger.lock_user(job.uid)?;
        // Recorded first: an Epilog of another job that runs right after
        // us must count this job even though its stepd is not up yet.
        lock.mark_started(job.job_id)?;
        let done = match self.mode {
            Mode::RuntimeDir => match self.runtime_dirs.ensure(job.uid, job.gid)? {
                Ensured::Created => {
                    format!("created {}", self.runtime_dirs.path(job.uid).display())
                }
                Ensured::Existed => format!("kept {}", self.runtime_dirs.path(job.uid).display()),
            },
            Mode::Linger => match self.linger.enable(&job.user)? {
                Switched::Loginctl => "enabled linger through loginctl".to_owned(),
                Switched::MarkerFile => format!(
                    "enabled linger: {}",
                    self.linger.marker(&job.user).display()
                ),
                Switched::AlreadyThat => "linger already enabled".to_owned(),
            },
        };
        drop(lock);
        Ok(done)
    }

    /// Decide whether `job` was the user's last on the node and, if so,
    /// take the user's state down. With `dry_run`, decide only.
    pub fn epilog(&self, job: &JobUser, spool: Option<&NodeSpool>, dry_run: bool) -> EpilogReport {
        let mut warnings = Vec::new();
        let lock = if dry_run {
            None
        } else {
            match self.ledger.lock_user(job.uid) {
                Ok(lock) => Some(lock),
                Err(e) => {
                    return EpilogReport {
                        verdict: Verdict::Unsure { jobs: vec![] },
                        actions: vec![],
                        warnings: vec![format!("{e}; keeping the user's state")],
                        other_users_steps: 0,
                    };
                }
            }
        };
        if let Some(lock) = &lock {
            if let Err(e) = lock.mark_ending(job.job_id) {
                warnings.push(e.to_string());
            }
        }
        let (started, ending) = match &lock {
            Some(lock) => (
                lock.started()
                    .unwrap_or_else(|e| keep_note(&mut warnings, e)),
                lock.ending()
                    .unwrap_or_else(|e| keep_note(&mut warnings, e)),
            ),
            None => self.ledger.peek(job.uid).unwrap_or_default(),
        };
        let live = match spool {
            Some(spool) => last_job::gather_live_steps(
                &spool.spool_dir,
                &spool.node_name,
                &spool.trusted_uids,
                job.uid,
                Instant::now() + self.stepd_timeout,
            )
            .unwrap_or_else(|e| {
                warnings.push(format!("{e}; cannot tell whether other jobs remain"));
                LiveSteps {
                    unknown: vec![(0, e.to_string())],
                    ..LiveSteps::default()
                }
            }),
            None => LiveSteps {
                unknown: vec![(0, "no spool directory known".into())],
                ..LiveSteps::default()
            },
        };
        for (job_id, why) in &live.unknown {
            if *job_id != 0 {
                warnings.push(format!("extern step of job {job_id}: {why}"));
            }
        }
        let (verdict, leftovers) = last_job::decide(&Evidence {
            ending_job: job.job_id,
            started: &started,
            ending: &ending,
            live: &live,
            start_grace: self.start_grace,
        });
        let mut actions = Vec::new();
        if let Some(lock) = &lock {
            for id in &leftovers.started {
                let _ = lock.forget_started(*id);
            }
            for id in &leftovers.ending {
                let _ = lock.forget_ending(*id);
            }
            if verdict == Verdict::Last {
                self.take_down(job, lock, &mut actions, &mut warnings);
            }
        }
        EpilogReport {
            verdict,
            actions,
            warnings,
            other_users_steps: live.others,
        }
    }

    fn take_down(
        &self,
        job: &JobUser,
        _lock: &UserLock,
        actions: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        match self.mode {
            Mode::RuntimeDir => match self.runtime_dirs.remove(job.uid) {
                Ok(Removed::Removed) => actions.push(format!(
                    "removed {}",
                    self.runtime_dirs.path(job.uid).display()
                )),
                Ok(Removed::Absent) => {}
                Err(e) => warnings.push(e.to_string()),
            },
            Mode::Linger => match self.linger.disable(&job.user) {
                Ok(Switched::AlreadyThat) => {}
                Ok(Switched::Loginctl) => actions.push("disabled linger through loginctl".into()),
                Ok(Switched::MarkerFile) => {
                    actions.push(format!(
                        "disabled linger: removed {}",
                        self.linger.marker(&job.user).display()
                    ));
                }
                Err(e) => warnings.push(e.to_string()),
            },
        }
        if let Some(reap) = self.reap {
            match strays::find(&self.proc_root, job.uid, reap.uid_min) {
                Ok(found) if found.is_empty() => {}
                Ok(found) => {
                    let list: Vec<String> = found
                        .iter()
                        .map(|s| format!("{}({})", s.pid, s.comm))
                        .collect();
                    if reap.dry_run {
                        actions.push(format!("would kill strays (dry run): {}", list.join(" ")));
                    } else {
                        let killed = strays::reap(&self.proc_root, &found, job.uid);
                        actions.push(format!(
                            "killed {} of {} strays: {}",
                            killed.len(),
                            found.len(),
                            list.join(" ")
                        ));
                    }
                }
                Err(e) => warnings.push(e.to_string()),
            }
        }
    }
}

fn keep_note<T: Default>(warnings: &mut Vec<String>, e: LedgerError) -> T {
    warnings.push(e.to_string());
    T::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userenv::linger::Via;
    use std::fs;
    use std::path::Path;

    fn hooks(root: &Path, mode: Mode) -> Hooks {
        let mut linger = Linger::new(root.join("linger"), Via::Auto);
        linger.systemd_runtime_dir = root.join("no-systemd");
        Hooks {
            mode,
            ledger: Ledger::new(root.join("state")),
            runtime_dirs: RuntimeDirs::new(root.join("run/user"), None),
            linger,
            reap: None,
            proc_root: root.join("proc"),
            stepd_timeout: Duration::from_millis(500),
            start_grace: Duration::from_secs(300),
        }
    }

    fn me(job_id: u32) -> JobUser {
        JobUser {
            job_id,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            user: "alice".into(),
        }
    }

    /// An empty spool: every job's extern step is already gone, so only the
    /// ledger tells the jobs apart.
    fn empty_spool(root: &Path) -> NodeSpool {
        let dir = root.join("spool");
        fs::create_dir_all(&dir).unwrap();
        NodeSpool {
            spool_dir: dir,
            node_name: "c1".into(),
            trusted_uids: vec![0, nix::unistd::getuid().as_raw()],
        }
    }

    #[test]
    fn runtime_dir_lives_from_first_prolog_to_last_epilog() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::RuntimeDir);
        let spool = empty_spool(tmp.path());
        let dir = h.runtime_dirs.path(me(1).uid);
        assert!(h.prolog(&me(1)).unwrap().starts_with("created "));
        assert!(h.prolog(&me(2)).unwrap().starts_with("kept "));
        let first = h.epilog(&me(1), Some(&spool), false);
        assert_eq!(first.verdict, Verdict::NotLast { jobs: vec![2] });
        assert!(dir.is_dir());
        let dry = h.epilog(&me(2), Some(&spool), true);
        assert_eq!(dry.verdict, Verdict::Last);
        assert!(dir.is_dir(), "a dry run changes nothing");
        let last = h.epilog(&me(2), Some(&spool), false);
        assert_eq!(last.verdict, Verdict::Last);
        assert_eq!(last.actions, [format!("removed {}", dir.display())]);
        assert!(!dir.exists());
    }

    #[test]
    fn linger_marker_follows_the_jobs() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::Linger);
        let spool = empty_spool(tmp.path());
        h.prolog(&me(1)).unwrap();
        h.prolog(&me(2)).unwrap();
        assert!(h.linger.is_enabled("alice"));
        h.epilog(&me(2), Some(&spool), false);
        assert!(h.linger.is_enabled("alice"));
        let last = h.epilog(&me(1), Some(&spool), false);
        assert_eq!(last.verdict, Verdict::Last);
        assert!(!h.linger.is_enabled("alice"));
    }

    #[test]
    fn no_spool_keeps_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::RuntimeDir);
        h.prolog(&me(1)).unwrap();
        let report = h.epilog(&me(1), None, false);
        assert!(matches!(report.verdict, Verdict::Unsure { .. }));
        assert!(h.runtime_dirs.path(me(1).uid).is_dir());
    }

    /// Two Epilogs of one user at once, many times over: the user's state
    /// is removed exactly once, by whichever runs second.
    #[test]
    fn parallel_epilogs_remove_exactly_once() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let h = std::sync::Arc::new(hooks(tmp.path(), Mode::RuntimeDir));
            let spool = std::sync::Arc::new(empty_spool(tmp.path()));
            h.prolog(&me(1)).unwrap();
            h.prolog(&me(2)).unwrap();
            let runs: Vec<_> = [1, 2]
                .into_iter()
                .map(|job| {
                    let (h, spool) = (h.clone(), spool.clone());
                    std::thread::spawn(move || h.epilog(&me(job), Some(&spool), false))
                })
                .collect();
            let reports: Vec<EpilogReport> = runs.into_iter().map(|t| t.join().unwrap()).collect();
            let last = reports
                .iter()
                .filter(|r| r.verdict == Verdict::Last)
                .count();
            let removed = reports.iter().filter(|r| !r.actions.is_empty()).count();
            assert_eq!((last, removed), (1, 1), "round {round}: {reports:?}");
            assert!(!h.runtime_dirs.path(me(1).uid).exists());
        }
    }

    /// A Prolog racing an Epilog of the same user: whatever the order, the
    /// starting job ends up with its runtime dir.
    #[test]
    fn a_starting_job_keeps_its_runtime_dir() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let h = std::sync::Arc::new(hooks(tmp.path(), Mode::RuntimeDir));
            let spool = std::sync::Arc::new(empty_spool(tmp.path()));
            h.prolog(&me(1)).unwrap();
            let ending = {
                let (h, spool) = (h.clone(), spool.clone());
                std::thread::spawn(move || h.epilog(&me(1), Some(&spool), false))
            };
            let starting = {
                let h = h.clone();
                std::thread::spawn(move || h.prolog(&me(2)).unwrap())
            };
            ending.join().unwrap();
            starting.join().unwrap();
            assert!(h.runtime_dirs.path(me(2).uid).is_dir(), "round {round}");
            // And job 2's own Epilog then removes it.
            assert_eq!(h.epilog(&me(2), Some(&spool), false).verdict, Verdict::Last);
            assert!(!h.runtime_dirs.path(me(2).uid).exists());
        }
    }
}
