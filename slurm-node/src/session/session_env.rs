//! The XDG session variables that jobs and adopted logins get, and the
//! TaskProlog output that hands them to slurmstepd.
//!
//! slurmstepd reads TaskProlog's stdout line by line and takes everything
//! after `export NAME=` verbatim up to the newline, so a value holding a
//! newline would smuggle in a second line (`export LD_PRELOAD=...`). Every
//! value is checked before a byte is printed; one bad value fails the lot.

use std::fs;
use std::path::{Path, PathBuf};

/// `/proc/self/sessionid` holds this when no audit session is set.
pub const NO_SESSION_ID: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnvError {
    #[error("{name}: value {value:?} holds a control character and cannot be exported")]
    ControlCharacter { name: &'static str, value: String },
    #[error("{name}: {value:?} is not an absolute path")]
    NotAbsolute { name: &'static str, value: String },
    #[error("{name}: value is empty")]
    Empty { name: &'static str },
}

/// What a session on this node is told about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionEnv {
    /// Set only when the directory exists and is the user's.
    pub runtime_dir: Option<PathBuf>,
    /// The kernel's audit session id, when there is one.
    pub session_id: Option<u32>,
}

impl SessionEnv {
    /// The variables in the order they are exported.
    pub fn variables(&self) -> Result<Vec<(&'static str, String)>, SessionEnvError> {
        let mut vars = Vec::with_capacity(4);
        if let Some(dir) = &self.runtime_dir {
            let value = dir.to_string_lossy().into_owned();
            if !dir.is_absolute() {
                return Err(SessionEnvError::NotAbsolute {
                    name: "XDG_RUNTIME_DIR",
                    value,
                });
            }
            vars.push(("XDG_RUNTIME_DIR", checked("XDG_RUNTIME_DIR", value)?));
        }
        if let Some(id) = self.session_id {
            vars.push(("XDG_SESSION_ID", id.to_string()));
        }
        vars.push(("XDG_SESSION_TYPE", "tty".to_owned()));
        vars.push(("XDG_SESSION_CLASS", "user".to_owned()));
        Ok(vars)
    }

    /// The exact text a TaskProlog prints: one `export NAME=value` line per
    /// variable, each ending in a newline.
    pub fn task_prolog_output(&self) -> Result<String, SessionEnvError> {
        let mut out = String::new();
        for (name, value) in self.variables()? {
            out.push_str("export ");
            out.push_str(name);
            out.push('=');
            out.push_str(&value);
            out.push('\n');
        }
        Ok(out)
    }
}

fn checked(name: &'static str, value: String) -> Result<String, SessionEnvError> {
    if value.is_empty() {
        return Err(SessionEnvError::Empty { name });
    }
    if value.chars().any(char::is_control) {
        return Err(SessionEnvError::ControlCharacter { name, value });
    }
    Ok(value)
}

/// The audit session id in `<proc_root>/self/sessionid`, if set.
pub fn session_id(proc_root: &Path) -> Option<u32> {
    let text = fs::read_to_string(proc_root.join("self/sessionid")).ok()?;
    let id: u32 = text.trim().parse().ok()?;
    (id != NO_SESSION_ID).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_output_in_slurmstepd_syntax() {
        let env = SessionEnv {
            runtime_dir: Some(PathBuf::from("/run/user/1001")),
            session_id: Some(17),
        };
        assert_eq!(
            env.task_prolog_output().unwrap(),
            "export XDG_RUNTIME_DIR=/run/user/1001\n\
             export XDG_SESSION_ID=17\n\
             export XDG_SESSION_TYPE=tty\n\
             export XDG_SESSION_CLASS=user\n"
        );
    }

    #[test]
    fn unset_values_are_omitted_not_emptied() {
        let out = SessionEnv::default().task_prolog_output().unwrap();
        assert_eq!(
            out,
            "export XDG_SESSION_TYPE=tty\nexport XDG_SESSION_CLASS=user\n"
        );
    }

    #[test]
    fn no_value_can_start_a_second_line() {
        for bad in [
            "/run/user/1\nexport LD_PRELOAD=/tmp/x.so",
            "/run/user/1\r",
            "/run/\0x",
        ] {
            let env = SessionEnv {
                runtime_dir: Some(PathBuf::from(bad)),
                session_id: None,
            };
            assert!(
                matches!(
                    env.task_prolog_output(),
                    Err(SessionEnvError::ControlCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        let relative = SessionEnv {
            runtime_dir: Some(PathBuf::from("run/user/1")),
            session_id: None,
        };
        assert!(matches!(
            relative.task_prolog_output(),
            Err(SessionEnvError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn session_id_from_proc() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("self")).unwrap();
        let file = tmp.path().join("self/sessionid");
        fs::write(&file, "42").unwrap();
        assert_eq!(session_id(tmp.path()), Some(42));
        fs::write(&file, "4294967295").unwrap();
        assert_eq!(session_id(tmp.path()), None);
        fs::write(&file, "garbage").unwrap();
        assert_eq!(session_id(tmp.path()), None);
        assert_eq!(session_id(&tmp.path().join("nope")), None);
    }
}
