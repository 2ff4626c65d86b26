//! Linger: a systemd user manager for the user while they have jobs.
//!
//! Where logind runs, linger is switched through it (`loginctl`, which
//! talks D-Bus to logind), so that logind starts or stops `user@UID` at
//! once. Where it does not (containers, nodes without systemd as PID 1),
//! the marker file that logind reads at boot is written or removed
//! directly, which is all `loginctl` would persist.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_MARKER_DIR: &str = "/var/lib/systemd/linger";
/// logind makes this directory when it starts; systemd as PID 1 alone is
/// not enough (images with logind masked exist, and there `loginctl`
/// fails and would drain the node).
pub const LOGIND_RUNTIME_DIR: &str = "/run/systemd/users";
/// A fixed path: the hooks run as root and do not search `PATH`.
pub const LOGINCTL: &str = "/usr/bin/loginctl";
/// `loginctl` blocks on D-Bus; a hung logind must not hang a Prolog.
const LOGINCTL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum LingerError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file; refusing to touch it", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{program} {verb} {user} failed: {detail}")]
    Loginctl {
        program: String,
        verb: &'static str,
        user: String,
        detail: String,
    },
}

/// How linger is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// `loginctl` when logind runs, else the marker file.
    Auto,
    Loginctl,
    MarkerFile,
}

#[derive(Debug, Clone)]
pub struct Linger {
    pub marker_dir: PathBuf,
    pub via: Via,
    pub loginctl: PathBuf,
    /// Checked by `Via::Auto`; a parameter so tests can say "no logind".
    pub logind_runtime_dir: PathBuf,
}

/// What was done, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switched {
    Loginctl,
    MarkerFile,
    Unchanged,
}

impl Linger {
    pub fn new(marker_dir: impl Into<PathBuf>, via: Via) -> Linger {
        Linger {
            marker_dir: marker_dir.into(),
            via,
            loginctl: PathBuf::from(LOGINCTL),
            logind_runtime_dir: PathBuf::from(LOGIND_RUNTIME_DIR),
        }
    }

    pub fn marker(&self, user: &str) -> PathBuf {
        self.marker_dir.join(user)
    }

    pub fn is_enabled(&self, user: &str) -> bool {
        fs::symlink_metadata(self.marker(user)).is_ok_and(|m| m.is_file())
    }

    /// Enable linger; `Unchanged` when it already was, whoever enabled it
    /// (logind keeps its marker in the same directory).
    pub fn enable(&self, user: &str) -> Result<Switched, LingerError> {
        if self.is_enabled(user) {
            return Ok(Switched::Unchanged);
        }
        if self.uses_loginctl() {
            return self.loginctl("enable-linger", user);
        }
        let path = self.marker(user);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => return Ok(Switched::Unchanged),
            Ok(_) => return Err(LingerError::NotAFile { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(LingerError::Io { path, source }),
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LingerError::Io { path, source }
        };
        fs::create_dir_all(&self.marker_dir).map_err(io_err(&self.marker_dir))?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Switched::MarkerFile)
    }

    pub fn disable(&self, user: &str) -> Result<Switched, LingerError> {
        if self.uses_loginctl() && self.is_enabled(user) {
            return self.loginctl("disable-linger", user);
        }
        let path = self.marker(user);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => Err(LingerError::NotAFile { path }),
            Ok(_) => fs::remove_file(&path)
                .map(|()| Switched::MarkerFile)
                .map_err(|source| LingerError::Io { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Switched::Unchanged),
            Err(source) => Err(LingerError::Io { path, source }),
        }
    }

    fn uses_loginctl(&self) -> bool {
        match self.via {
            Via::Loginctl => true,
            Via::MarkerFile => false,
            Via::Auto => self.logind_runtime_dir.is_dir(),
        }
    }

    fn loginctl(&self, verb: &'static str, user: &str) -> Result<Switched, LingerError> {
        let program = self.loginctl.display().to_string();
        let mut child = Command::new(&self.loginctl)
            .arg(verb)
            .arg("--")
            .arg(user)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LingerError::Spawn {
                program: program.clone(),
                source,
            })?;
        let deadline = Instant::now() + LOGINCTL_TIMEOUT;
        let failed = |detail: String| LingerError::Loginctl {
            program: program.clone(),
            verb,
            user: user.to_owned(),
            detail,
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(Switched::Loginctl),
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = io::Read::read_to_string(&mut pipe, &mut err);
                    }
                    return Err(failed(format!("{status}: {}", err.trim())));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(format!(
                        "no answer within {}s",
                        LOGINCTL_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn marker_only(dir: &Path) -> Linger {
        let mut l = Linger::new(dir.join("linger"), Via::Auto);
        l.logind_runtime_dir = dir.join("no-logind");
        l
    }

    #[test]
    fn marker_file_round_trip_without_systemd() {
        let tmp = tempfile::tempdir().unwrap();
        let l = marker_only(tmp.path());
        assert!(!l.is_enabled("alice"));
        assert_eq!(l.enable("alice").unwrap(), Switched::MarkerFile);
        assert!(l.is_enabled("alice"));
        assert_eq!(l.enable("alice").unwrap(), Switched::Unchanged);
        assert_eq!(l.disable("alice").unwrap(), Switched::MarkerFile);
        assert!(!l.is_enabled("alice"));
        assert_eq!(l.disable("alice").unwrap(), Switched::Unchanged);
    }

    #[test]
    fn a_directory_in_place_of_the_marker_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let l = marker_only(tmp.path());
        fs::create_dir_all(l.marker("bob")).unwrap();
        assert!(matches!(l.enable("bob"), Err(LingerError::NotAFile { .. })));
        assert!(matches!(
            l.disable("bob"),
            Err(LingerError::NotAFile { .. })
        ));
    }

    #[test]
    fn loginctl_is_used_where_logind_runs_and_its_failure_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("loginctl");
        let record = tmp.path().join("calls");
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" >>{}\n[ \"$3\" = bad ] && {{ echo 'Could not enable linger: No such user' >&2; exit 1; }}\nexit 0\n",
                record.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(tmp.path().join("logind")).unwrap();
        let mut l = Linger::new(tmp.path().join("linger"), Via::Auto);
        l.logind_runtime_dir = tmp.path().join("logind");
        l.loginctl = fake;
        assert_eq!(l.enable("alice").unwrap(), Switched::Loginctl);
        // logind would have written the marker; do as it does.
        fs::create_dir_all(l.marker_dir.clone()).unwrap();
        fs::write(l.marker("alice"), b"").unwrap();
        assert_eq!(l.enable("alice").unwrap(), Switched::Unchanged);
        assert_eq!(l.disable("alice").unwrap(), Switched::Loginctl);
        fs::remove_file(l.marker("alice")).unwrap();
        assert_eq!(l.disable("alice").unwrap(), Switched::Unchanged);
        let err = l.enable("bad").unwrap_err().to_string();
        assert!(err.contains("No such user"), "{err}");
        let calls = fs::read_to_string(&record).unwrap();
        assert_eq!(
            calls,
            "enable-linger -- alice\ndisable-linger -- alice\nenable-linger -- bad\n"
        );
        // The marker file was left to logind.
        assert!(!l.marker("alice").exists());
    }
}
