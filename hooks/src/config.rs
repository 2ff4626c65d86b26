//! `/etc/slurm/adopt.toml`, the hooks' optional config. Every key has a
//! default, so a node needs no file at all; a key that is not known is an
//! error naming it (with line and column), because a misspelt key that
//! was silently ignored would leave a node running the wrong mode.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::time::Duration;

use crate::ledger::{self, Ledger};
use crate::lifecycle::{Hooks, Mode, Reap};
use crate::linger::{self, Linger, Via};
use crate::strays;
use slurm_node::session::runtime_dir::{self, RuntimeDirs};

pub const DEFAULT_PATH: &str = "/etc/slurm/adopt.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    pub mode: Mode,
    /// Where the per-user locks and job records live.
    pub state_dir: PathBuf,
    /// slurm.conf, when slurmd did not pass SLURM_CONF.
    pub slurm_conf: PathBuf,
    /// The Epilog's budget for asking every stepd who owns it.
    pub stepd_timeout_ms: u64,
    /// How long a job whose Prolog ran may have no extern step before its
    /// record is taken for a leftover.
    pub start_grace_secs: u64,
    /// How long a hook waits for another hook of the same user.
    pub lock_wait_secs: u64,
    /// Where UID_MIN is read from.
    pub login_defs: PathBuf,
    pub runtime_dir: RuntimeDirConfig,
    pub linger: LingerConfig,
    pub reap_strays: ReapConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeDirConfig {
    pub root: PathBuf,
    /// Mount a tmpfs of this size (`"256M"`, `"10%"`) on each directory.
    pub tmpfs_size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LingerConfig {
    pub marker_dir: PathBuf,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReapConfig {
    pub enabled: bool,
    /// Log what would be killed and kill nothing.
    pub dry_run: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            mode: Mode::default(),
            state_dir: PathBuf::from(ledger::DEFAULT_STATE_DIR),
            slurm_conf: PathBuf::from("/etc/slurm/slurm.conf"),
            stepd_timeout_ms: 5000,
            // The grace pam_adopt.so gives a started record too.
            start_grace_secs: slurm_node::prolog_records::START_GRACE.as_secs(),
            lock_wait_secs: ledger::DEFAULT_LOCK_WAIT.as_secs(),
            login_defs: PathBuf::from("/etc/login.defs"),
            runtime_dir: RuntimeDirConfig::default(),
            linger: LingerConfig::default(),
            reap_strays: ReapConfig::default(),
        }
    }
}

impl Default for RuntimeDirConfig {
    fn default() -> Self {
        RuntimeDirConfig {
            root: PathBuf::from(runtime_dir::DEFAULT_ROOT),
            tmpfs_size: None,
        }
    }
}

impl Default for LingerConfig {
    fn default() -> Self {
        LingerConfig {
            marker_dir: PathBuf::from(linger::DEFAULT_MARKER_DIR),
            via: Via::Auto,
        }
    }
}

impl Default for ReapConfig {
    fn default() -> Self {
        ReapConfig {
            enabled: false,
            dry_run: true,
        }
    }
}

impl HookConfig {
    /// Read `path`. When `required` is false a missing file means the
    /// defaults (the node has no config); any other error is reported.
    pub fn load(path: &Path, required: bool) -> Result<HookConfig, ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {
                return Ok(HookConfig::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        HookConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<HookConfig, ConfigError> {
        let config: HookConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: one_line(&e.to_string()),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The hooks this config describes; `proc_root` is `/proc` outside
    /// tests.
    pub fn hooks(&self, proc_root: &Path) -> Hooks {
        Hooks {
            mode: self.mode,
            ledger: Ledger::new(&self.state_dir),
            runtime_dirs: RuntimeDirs::new(
                &self.runtime_dir.root,
                self.runtime_dir.tmpfs_size.clone(),
            ),
            linger: Linger::new(&self.linger.marker_dir, self.linger.via),
            reap: self.reap_strays.enabled.then_some(Reap {
                dry_run: self.reap_strays.dry_run,
            }),
            proc_root: proc_root.to_path_buf(),
            uid_min: strays::uid_min(&self.login_defs),
            stepd_timeout: Duration::from_millis(self.stepd_timeout_ms),
            start_grace: Duration::from_secs(self.start_grace_secs),
            lock_wait: Duration::from_secs(self.lock_wait_secs),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        for (key, dir) in [
            ("state_dir", &self.state_dir),
            ("slurm_conf", &self.slurm_conf),
            ("runtime_dir.root", &self.runtime_dir.root),
            ("linger.marker_dir", &self.linger.marker_dir),
            ("login_defs", &self.login_defs),
        ] {
            if !dir.is_absolute() {
                return Err(bad(format!(
                    "{key} = {:?} must be an absolute path",
                    dir.display()
                )));
            }
        }
        if let Some(size) = &self.runtime_dir.tmpfs_size {
            if !valid_tmpfs_size(size) {
                return Err(bad(format!(
                    "runtime_dir.tmpfs_size = {size:?} must be a number with an optional k/m/g or % suffix, e.g. \"256M\" or \"10%\""
                )));
            }
        }
        // A grace shorter than a Prolog-to-stepd start would let an Epilog
        // take a starting job's runtime dir away; a lock wait of 0 would
        // fail (and drain) on any contention.
        if self.start_grace_secs < MIN_START_GRACE_SECS {
            return Err(bad(format!(
                "start_grace_secs = {} must be at least {MIN_START_GRACE_SECS}",
                self.start_grace_secs
            )));
        }
        if self.lock_wait_secs == 0 || self.lock_wait_secs > 3600 {
            return Err(bad(format!(
                "lock_wait_secs = {} must be between 1 and 3600",
                self.lock_wait_secs
            )));
        }
        if self.stepd_timeout_ms == 0 || self.stepd_timeout_ms > 60_000 {
            return Err(bad(format!(
                "stepd_timeout_ms = {} must be between 1 and 60000",
                self.stepd_timeout_ms
            )));
        }
        Ok(())
    }
}

/// The shortest `start_grace_secs`: a job's extern stepd comes up within
/// seconds of its Prolog, and a slow node may take tens of them.
const MIN_START_GRACE_SECS: u64 = 30;

/// toml's messages span several lines (a caret under the key); the hooks
/// log one line per event.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| matches!(c, '|' | '^' | ' ')))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the tmpfs `size=` option takes, nothing that could add options.
fn valid_tmpfs_size(size: &str) -> bool {
    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
    !digits.is_empty()
        && size.len() - digits.len() <= 1
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits != "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HookConfig, ConfigError> {
        HookConfig::parse(text, Path::new("/etc/slurm/adopt.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), HookConfig::default());
        let missing = HookConfig::load(Path::new("/nonexistent/adopt.toml"), false).unwrap();
        assert_eq!(missing, HookConfig::default());
        assert!(HookConfig::load(Path::new("/nonexistent/adopt.toml"), true).is_err());
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"
            mode = "linger"
            state_dir = "/var/run/sa"
            slurm_conf = "/opt/slurm/etc/slurm.conf"
            stepd_timeout_ms = 800
            start_grace_secs = 60
            lock_wait_secs = 5
            login_defs = "/etc/login.defs"
            [runtime_dir]
            root = "/run/user"
            tmpfs_size = "256M"
            [linger]
            marker_dir = "/var/lib/systemd/linger"
            via = "marker-file"
            [reap_strays]
            enabled = true
            dry_run = false
            "#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Linger);
        assert_eq!(c.stepd_timeout_ms, 800);
        assert_eq!(c.runtime_dir.tmpfs_size.as_deref(), Some("256M"));
        assert_eq!(c.linger.via, Via::MarkerFile);
        assert!(c.reap_strays.enabled && !c.reap_strays.dry_run);
    }

    #[test]
    fn unknown_keys_are_named_with_the_file() {
        let err = parse("mode = \"linger\"\nreap_stray = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/slurm/adopt.toml: "), "{err}");
        assert!(err.contains("reap_stray"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse("[runtime_dir]\nsize = \"1G\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`size`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for text in [
            "mode = \"lingering\"",
            "state_dir = \"run/sa\"",
            "[runtime_dir]\ntmpfs_size = \"1G,exec\"",
            "[runtime_dir]\ntmpfs_size = \"0\"",
            "stepd_timeout_ms = 0",
            "stepd_timeout_ms = -1",
            "start_grace_secs = 0",
            "start_grace_secs = 29",
            "lock_wait_secs = 0",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
