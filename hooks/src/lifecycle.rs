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

use crate::last_job::{self, Evidence, LiveSteps, Verdict};
use crate::ledger::{Ledger, LedgerError, Owned, UserLock};
use crate::linger::{Linger, LingerError, Switched};
use crate::strays;
use slurm_node::session::runtime_dir::{Ensured, Removed, RuntimeDirError, RuntimeDirs};
use slurm_node::stepd::StepdPeers;

/// What the hooks keep for a user while they have jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// Whom a stepd's listener may run as (root, SlurmdUser).
    pub stepd_peers: StepdPeers,
}

/// `reap_strays` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reap {
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct Hooks {
    pub mode: Mode,
    pub ledger: Ledger,
    pub runtime_dirs: RuntimeDirs,
    pub linger: Linger,
    pub reap: Option<Reap>,
    pub proc_root: PathBuf,
    /// Jobs of uids below this (and root's) are left alone.
    pub uid_min: u32,
    pub stepd_timeout: Duration,
    pub start_grace: Duration,
    /// How long a hook waits for the user's lock.
    pub lock_wait: Duration,
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
    /// Keep the job's GPU visibility values (the Prolog's environment,
    /// already filtered to slurm-node's device_env record) for adopted
    /// logins. Returns what was done, for the log.
    pub fn record_devices(&self, job: &JobUser, text: &str) -> Result<String, HookError> {
        if self.system_user(job).is_some() || text.is_empty() {
            return Ok(String::new());
        }
        let lock = self.ledger.lock_user(job.uid, self.lock_wait)?;
        lock.record_devices(job.job_id, text)?;
        let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        Ok(format!("recorded {}", names.join(",")))
    }

    /// Record the job and make sure the user's state exists. Returns what
    /// was done, for the log.
    pub fn prolog(&self, job: &JobUser) -> Result<String, HookError> {
        if let Some(why) = self.system_user(job) {
            return Ok(why);
        }
        let lock = self.ledger.lock_user(job.uid, self.lock_wait)?;
        // Recorded first: an Epilog of another job that runs right after
        // us must count this job even though its stepd is not up yet.
        lock.mark_started(job.job_id)?;
        let done = match self.mode {
            Mode::RuntimeDir => {
                let path = self.runtime_dirs.path(job.uid);
                match self.runtime_dirs.ensure(job.uid, job.gid)? {
                    Ensured::Created => {
                        lock.set_owned(Owned::RuntimeDir)?;
                        format!("created {}", path.display())
                    }
                    Ensured::Existed if lock.owns(Owned::RuntimeDir) => {
                        format!("kept {}", path.display())
                    }
                    Ensured::Existed => format!(
                        "found {} (not ours: it will be left in place)",
                        path.display()
                    ),
                }
            }
            Mode::Linger => match self.linger.enable(&job.user)? {
                Switched::Loginctl => {
                    lock.set_owned(Owned::Linger)?;
                    format!(
                        "enabled linger through loginctl; {}",
                        self.await_logind_runtime_dir(job.uid)
                    )
                }
                Switched::MarkerFile => {
                    lock.set_owned(Owned::Linger)?;
                    format!(
                        "enabled linger: {}",
                        self.linger.marker(&job.user).display()
                    )
                }
                Switched::Unchanged if lock.owns(Owned::Linger) => "linger kept".to_owned(),
                Switched::Unchanged => {
                    "linger was already enabled (not by us: it will be left on)".to_owned()
                }
            },
        };
        drop(lock);
        Ok(done)
    }

    /// `loginctl enable-linger` returns before logind has made the user's
    /// runtime dir; the job's TaskProlog, moments later, exports it only
    /// if it exists. Wait for it a bounded time, and say how it went.
    fn await_logind_runtime_dir(&self, uid: u32) -> String {
        let path = self.runtime_dirs.path(uid);
        let started = Instant::now();
        loop {
            if path.is_dir() {
                return format!(
                    "{} ready after {} ms",
                    path.display(),
                    started.elapsed().as_millis()
                );
            }
            if started.elapsed() >= LOGIND_RUNTIME_DIR_WAIT {
                return format!(
                    "{} not made by logind within {} s: tasks starting now get no XDG_RUNTIME_DIR",
                    path.display(),
                    LOGIND_RUNTIME_DIR_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Decide whether `job` was the user's last on the node and, if so,
    /// take the user's state down. With `dry_run`, decide only.
    pub fn epilog(&self, job: &JobUser, spool: Option<&NodeSpool>, dry_run: bool) -> EpilogReport {
        let mut warnings = Vec::new();
        if let Some(why) = self.system_user(job) {
            return EpilogReport {
                verdict: Verdict::Unsure { jobs: vec![] },
                actions: vec![why],
                warnings,
                other_users_steps: 0,
            };
        }
        let lock = if dry_run {
            None
        } else {
            match self.ledger.lock_user(job.uid, self.lock_wait) {
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
        let records = match &lock {
            Some(lock) => lock.started().and_then(|s| Ok((s, lock.ending()?))),
            None => self.ledger.peek(job.uid),
        };
        let mut live = match spool {
            Some(spool) => last_job::gather_live_steps(
                &spool.spool_dir,
                &spool.node_name,
                &spool.trusted_uids,
                &spool.stepd_peers,
                job.uid,
                Instant::now() + self.stepd_timeout,
            )
            .unwrap_or_else(|e| LiveSteps {
                unknown: vec![(0, e.to_string())],
                ..LiveSteps::default()
            }),
            None => LiveSteps {
                unknown: vec![(0, "no spool directory known".into())],
                ..LiveSteps::default()
            },
        };
        // Unreadable records are no evidence of "no other job".
        let (started, ending) = records.unwrap_or_else(|e| {
            live.unknown.push((0, format!("{e}")));
            (Vec::new(), Vec::new())
        });
        for (job_id, why) in &live.unknown {
            match job_id {
                0 => warnings.push(format!("{why}; cannot tell whether other jobs remain")),
                _ => warnings.push(format!("extern step of job {job_id}: {why}")),
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

    /// Root and system accounts get no session state: logind's and the
    /// admins' business, and nothing to take down later.
    fn system_user(&self, job: &JobUser) -> Option<String> {
        (job.uid == 0 || job.uid < self.uid_min)
            .then(|| format!("skipped: uid {} is below UID_MIN {}", job.uid, self.uid_min))
    }

    /// The `lock` argument is the proof that the user's lock is held.
    fn take_down(
        &self,
        job: &JobUser,
        lock: &UserLock,
        actions: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        // Strays first: a FUSE daemon left running with a mount under the
        // runtime dir would otherwise keep it busy.
        if let Some(reap) = self.reap {
            self.reap_strays(job, reap, actions, warnings);
        }
        // Whatever the hooks made is taken down, whichever mode is
        // configured now: a site that switches from linger to runtime-dir
        // while jobs run must not keep a user manager running for good.
        if lock.owns(Owned::RuntimeDir) {
            let removed = self.runtime_dirs.remove(job.uid).map(|r| match r {
                Removed::Removed => Some(format!(
                    "removed {}",
                    self.runtime_dirs.path(job.uid).display()
                )),
                Removed::Absent => None,
            });
            settle(lock, Owned::RuntimeDir, removed, actions, warnings);
        }
        if lock.owns(Owned::Linger) {
            let disabled = self.linger.disable(&job.user).map(|s| match s {
                Switched::Unchanged => None,
                Switched::Loginctl => Some("disabled linger through loginctl".to_owned()),
                Switched::MarkerFile => Some(format!(
                    "disabled linger: removed {}",
                    self.linger.marker(&job.user).display()
                )),
            });
            settle(lock, Owned::Linger, disabled, actions, warnings);
        }
    }

    fn reap_strays(
        &self,
        job: &JobUser,
        reap: Reap,
        actions: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        let found = match strays::find(&self.proc_root, job.uid, self.uid_min) {
            Ok(found) => found,
            Err(e) => {
                warnings.push(e.to_string());
                return;
            }
        };
        if found.is_empty() {
            return;
        }
        let list = |s: &[strays::Stray]| {
            s.iter()
                .map(|s| format!("{}({})", s.pid, s.comm))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if reap.dry_run {
            actions.push(format!("would kill strays (dry run): {}", list(&found)));
            return;
        }
        // A stray that forks while we kill gets a few more passes.
        let mut killed = strays::reap(&self.proc_root, &found, job.uid);
        let mut all = found;
        for _ in 0..REAP_PASSES {
            match strays::find(&self.proc_root, job.uid, self.uid_min) {
                Ok(more) if !more.is_empty() => {
                    killed.extend(strays::reap(&self.proc_root, &more, job.uid));
                    all.extend(more);
                }
                _ => break,
            }
        }
        actions.push(format!(
            "killed {} of {} strays: {}",
            killed.len(),
            all.len(),
            list(&all)
        ));
    }
}

/// Book the outcome of undoing `owned`: done, its action (if any) and the
/// ownership record cleared; failed, a warning, and the record kept so the
/// next last Epilog tries again.
fn settle(
    lock: &UserLock,
    owned: Owned,
    outcome: Result<Option<String>, impl std::fmt::Display>,
    actions: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    match outcome {
        Ok(action) => {
            actions.extend(action);
            if let Err(e) = lock.clear_owned(owned) {
                warnings.push(e.to_string());
            }
        }
        Err(e) => warnings.push(e.to_string()),
    }
}

/// How long the Prolog waits for logind to make the runtime dir after
/// enabling linger (logind usually takes tens of milliseconds).
const LOGIND_RUNTIME_DIR_WAIT: Duration = Duration::from_secs(5);

/// Extra scans after the first kill, for strays that forked meanwhile.
const REAP_PASSES: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::DEFAULT_LOCK_WAIT;
    use crate::linger::Via;
    use std::fs;
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::Arc;

    fn hooks(root: &Path, mode: Mode) -> Hooks {
        let mut linger = Linger::new(root.join("linger"), Via::Auto);
        linger.logind_runtime_dir = root.join("no-logind");
        Hooks {
            mode,
            ledger: Ledger::new(root.join("state")),
            runtime_dirs: RuntimeDirs::new(root.join("run/user"), None),
            linger,
            reap: None,
            proc_root: root.join("proc"),
            uid_min: 0,
            stepd_timeout: Duration::from_millis(500),
            start_grace: Duration::from_secs(300),
            lock_wait: Duration::from_secs(10),
        }
    }

    /// The job's user: ourselves, unless we are root (as in CI), whose
    /// jobs the hooks skip; root can make files for any uid.
    fn me(job_id: u32) -> JobUser {
        let root = nix::unistd::geteuid().is_root();
        JobUser {
            job_id,
            uid: if root {
                4242
            } else {
                nix::unistd::getuid().as_raw()
            },
            gid: if root {
                4242
            } else {
                nix::unistd::getgid().as_raw()
            },
            user: "alice".into(),
        }
    }

    /// A spool with no sockets: every job's steps are already gone, so only
    /// the ledger tells the jobs apart.
    fn empty_spool(root: &Path) -> NodeSpool {
        let dir = root.join("spool");
        fs::create_dir_all(&dir).unwrap();
        NodeSpool {
            spool_dir: dir,
            node_name: "c1".into(),
            trusted_uids: vec![0, nix::unistd::getuid().as_raw()],
            stepd_peers: StepdPeers::from_uids(vec![0, nix::unistd::geteuid().as_raw()]),
        }
    }

    /// A batch-step socket for `job` whose stepd is gone: the job still
    /// shows in the spool, but no stepd answers for it.
    fn batch_socket(spool: &NodeSpool, job: u32) {
        let path = spool.spool_dir.join(format!("c1_{job}.4294967291"));
        drop(UnixListener::bind(path).unwrap());
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
    fn a_runtime_dir_that_was_there_before_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::RuntimeDir);
        let spool = empty_spool(tmp.path());
        let (uid, gid) = (me(1).uid, me(1).gid);
        h.runtime_dirs.ensure(uid, gid).unwrap();
        assert!(h.prolog(&me(1)).unwrap().contains("not ours"));
        let last = h.epilog(&me(1), Some(&spool), false);
        assert_eq!((last.verdict, last.actions.len()), (Verdict::Last, 0));
        assert!(h.runtime_dirs.path(uid).is_dir());
    }

    #[test]
    fn system_users_get_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = hooks(tmp.path(), Mode::RuntimeDir);
        h.uid_min = me(1).uid + 1;
        assert!(h.prolog(&me(1)).unwrap().starts_with("skipped"));
        let root = JobUser {
            uid: 0,
            gid: 0,
            ..me(1)
        };
        h.uid_min = 0;
        assert!(h.prolog(&root).unwrap().starts_with("skipped"));
        assert!(!h.runtime_dirs.path(me(1).uid).exists());
        assert!(!h.ledger.user_dir(me(1).uid).exists());
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
    fn a_mode_switch_while_jobs_run_still_takes_down_what_was_made() {
        // Job 1 starts under linger, job 2 under runtime-dir: the last
        // Epilog, whatever the mode is then, undoes both.
        let tmp = tempfile::tempdir().unwrap();
        let spool = empty_spool(tmp.path());
        let linger = hooks(tmp.path(), Mode::Linger);
        let runtime_dir = hooks(tmp.path(), Mode::RuntimeDir);
        linger.prolog(&me(1)).unwrap();
        runtime_dir.prolog(&me(2)).unwrap();
        let dir = runtime_dir.runtime_dirs.path(me(2).uid);
        assert!(linger.linger.is_enabled("alice") && dir.is_dir());
        runtime_dir.epilog(&me(1), Some(&spool), false);
        assert!(linger.linger.is_enabled("alice") && dir.is_dir());
        let last = runtime_dir.epilog(&me(2), Some(&spool), false);
        assert_eq!(last.verdict, Verdict::Last);
        assert!(!linger.linger.is_enabled("alice"), "{:?}", last.actions);
        assert!(!dir.exists(), "{:?}", last.actions);
    }

    #[test]
    fn linger_through_logind_waits_for_its_runtime_dir() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mut h = hooks(tmp.path(), Mode::Linger);
        let dir = h.runtime_dirs.path(me(1).uid);
        // A logind that makes the runtime dir a moment after loginctl
        // returns, as the real one does.
        let fake = tmp.path().join("loginctl");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh
(sleep 0.3; mkdir -p {}) >/dev/null 2>&1 &
exit 0
",
                dir.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        h.linger.via = Via::Loginctl;
        h.linger.loginctl = fake;
        let done = h.prolog(&me(1)).unwrap();
        assert!(dir.is_dir(), "{done}");
        assert!(
            done.starts_with("enabled linger through loginctl; ") && done.contains(" ready after "),
            "{done}"
        );
    }

    #[test]
    fn linger_an_admin_enabled_stays_on() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::Linger);
        let spool = empty_spool(tmp.path());
        h.linger.enable("alice").unwrap();
        assert!(h.prolog(&me(1)).unwrap().contains("not by us"));
        h.epilog(&me(1), Some(&spool), false);
        assert!(h.linger.is_enabled("alice"));
    }

    #[test]
    fn no_spool_or_a_missing_one_keeps_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::RuntimeDir);
        h.prolog(&me(1)).unwrap();
        let report = h.epilog(&me(1), None, false);
        assert!(matches!(report.verdict, Verdict::Unsure { .. }));
        let mut gone = empty_spool(tmp.path());
        gone.spool_dir = tmp.path().join("no-such-spool");
        h.prolog(&me(2)).unwrap();
        let report = h.epilog(&me(2), Some(&gone), false);
        assert!(
            matches!(report.verdict, Verdict::Unsure { .. }),
            "{report:?}"
        );
        assert!(h.runtime_dirs.path(me(1).uid).is_dir());
    }

    /// A requeued job that comes back to the node under the same id: the
    /// `ending/` record of its first run must not hide the second.
    #[test]
    fn a_requeued_job_counts_again() {
        let tmp = tempfile::tempdir().unwrap();
        let h = hooks(tmp.path(), Mode::RuntimeDir);
        let spool = empty_spool(tmp.path());
        h.prolog(&me(5)).unwrap();
        // Its first Epilog left `ending/5` (its stepd was still up).
        h.ledger
            .lock_user(me(5).uid, DEFAULT_LOCK_WAIT)
            .unwrap()
            .mark_ending(5)
            .unwrap();
        h.prolog(&me(5)).unwrap();
        h.prolog(&me(6)).unwrap();
        let report = h.epilog(&me(6), Some(&spool), false);
        assert_eq!(report.verdict, Verdict::NotLast { jobs: vec![5] });
        assert!(h.runtime_dirs.path(me(5).uid).is_dir());
    }

    /// Two Epilogs of one user at once, many times over, with records past
    /// their grace and both jobs still showing in the spool: the state is
    /// removed exactly once, by whichever runs second.
    #[test]
    fn parallel_epilogs_remove_exactly_once() {
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let mut h = hooks(tmp.path(), Mode::RuntimeDir);
            h.start_grace = Duration::ZERO;
            let h = Arc::new(h);
            let spool = Arc::new(empty_spool(tmp.path()));
            batch_socket(&spool, 1);
            batch_socket(&spool, 2);
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
            let h = Arc::new(hooks(tmp.path(), Mode::RuntimeDir));
            let spool = Arc::new(empty_spool(tmp.path()));
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

    #[test]
    fn an_epilog_that_cannot_get_the_lock_keeps_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = hooks(tmp.path(), Mode::RuntimeDir);
        h.lock_wait = Duration::from_millis(50);
        let spool = empty_spool(tmp.path());
        h.prolog(&me(1)).unwrap();
        let _held = h.ledger.lock_user(me(1).uid, DEFAULT_LOCK_WAIT).unwrap();
        let report = h.epilog(&me(1), Some(&spool), false);
        assert!(matches!(report.verdict, Verdict::Unsure { .. }));
        assert!(report.warnings[0].contains("still locked"), "{report:?}");
        assert!(h.runtime_dirs.path(me(1).uid).is_dir());
        assert!(matches!(
            h.prolog(&me(2)),
            Err(HookError::Ledger(LedgerError::LockTimeout { .. }))
        ));
    }
}
