//! The job as slurmd describes it to Prolog and Epilog: environment
//! variables, parsed strictly so that a missing or malformed one is a
//! one-line error naming the variable.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobEnvError {
    #[error("{var} is not set; this hook expects to be run by slurmd as Prolog or Epilog")]
    Missing { var: &'static str },
    #[error("{var}={value:?} is not {expected}")]
    Malformed {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// What the hooks need to know about the job that starts or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnv {
    pub job_id: u32,
    pub uid: u32,
    /// `SLURM_JOB_GID`; older slurmds may not set it, then the passwd
    /// entry decides.
    pub gid: Option<u32>,
    pub user: String,
    /// `SLURMD_NODENAME`: the NodeName this slurmd runs as.
    pub node_name: Option<String>,
    /// `SLURM_CONF` as slurmd passed it (the hooks run as root, started
    /// by slurmd, so this environment is slurmd's, not a user's).
    pub slurm_conf: Option<PathBuf>,
}

impl JobEnv {
    /// Read the variables through `get` (the process environment in the
    /// hooks, a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<JobEnv, JobEnvError> {
        let text = |var: &'static str| -> Result<Option<String>, JobEnvError> {
            match get(var) {
                None => Ok(None),
                Some(v) => v
                    .into_string()
                    .map(Some)
                    .map_err(|v| JobEnvError::Malformed {
                        var,
                        value: v.to_string_lossy().into_owned(),
                        expected: "valid UTF-8",
                    }),
            }
        };
        let number =
            |var: &'static str, expected: &'static str| -> Result<Option<u32>, JobEnvError> {
                match text(var)? {
                    None => Ok(None),
                    Some(v) => match v.trim().parse::<u32>() {
                        Ok(n) => Ok(Some(n)),
                        Err(_) => Err(JobEnvError::Malformed {
                            var,
                            value: v,
                            expected,
                        }),
                    },
                }
            };
        let job_id = number("SLURM_JOB_ID", "a job id (a positive integer)")?.ok_or(
            JobEnvError::Missing {
                var: "SLURM_JOB_ID",
            },
        )?;
        if job_id == 0 {
            return Err(JobEnvError::Malformed {
                var: "SLURM_JOB_ID",
                value: "0".into(),
                expected: "a job id (a positive integer)",
            });
        }
        // SLURM_UID is the older spelling; slurmd sets both.
        let uid = match number("SLURM_JOB_UID", "a numeric uid")? {
            Some(uid) => uid,
            None => number("SLURM_UID", "a numeric uid")?.ok_or(JobEnvError::Missing {
                var: "SLURM_JOB_UID",
            })?,
        };
        let gid = number("SLURM_JOB_GID", "a numeric gid")?;
        let user = text("SLURM_JOB_USER")?.ok_or(JobEnvError::Missing {
            var: "SLURM_JOB_USER",
        })?;
        if !valid_user_name(&user) {
            return Err(JobEnvError::Malformed {
                var: "SLURM_JOB_USER",
                value: user,
                expected: "a user name (letters, digits, '.', '_', '-', '@', '$')",
            });
        }
        let node_name = text("SLURMD_NODENAME")?.filter(|n| !n.is_empty());
        let slurm_conf = text("SLURM_CONF")?
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(JobEnv {
            job_id,
            uid,
            gid,
            user,
            node_name,
            slurm_conf,
        })
    }
}

/// A name that is safe to use as a file name (the linger marker) and in a
/// log line: what useradd and most directory services allow.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'$'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<JobEnv, JobEnvError> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        JobEnv::from_vars(|k| map.get(k).cloned())
    }

    const FULL: &[(&str, &str)] = &[
        ("SLURM_JOB_ID", "42"),
        ("SLURM_JOB_UID", "1001"),
        ("SLURM_JOB_GID", "1002"),
        ("SLURM_JOB_USER", "alice"),
        ("SLURMD_NODENAME", "c1"),
        ("SLURM_CONF", "/etc/slurm/slurm.conf"),
    ];

    #[test]
    fn reads_what_slurmd_sets() {
        let job = env(FULL).unwrap();
        assert_eq!(job.job_id, 42);
        assert_eq!(job.uid, 1001);
        assert_eq!(job.gid, Some(1002));
        assert_eq!(job.user, "alice");
        assert_eq!(job.node_name.as_deref(), Some("c1"));
        assert_eq!(job.slurm_conf, Some(PathBuf::from("/etc/slurm/slurm.conf")));
    }

    #[test]
    fn falls_back_to_slurm_uid() {
        let job = env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_UID", "7"),
            ("SLURM_JOB_USER", "u"),
        ])
        .unwrap();
        assert_eq!((job.uid, job.gid, job.node_name), (7, None, None));
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in ["SLURM_JOB_ID", "SLURM_JOB_UID", "SLURM_JOB_USER"] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != var).collect();
            assert_eq!(env(&pairs), Err(JobEnvError::Missing { var }), "{var}");
            let msg = env(&pairs).unwrap_err().to_string();
            assert!(msg.starts_with(var), "{msg}");
        }
    }

    #[test]
    fn malformed_values_are_named() {
        let cases = [
            ("SLURM_JOB_ID", "12a"),
            ("SLURM_JOB_ID", "0"),
            ("SLURM_JOB_ID", "-3"),
            ("SLURM_JOB_UID", "root"),
            ("SLURM_JOB_GID", "4294967296"),
            ("SLURM_JOB_USER", "../etc"),
            ("SLURM_JOB_USER", "a\nb"),
            ("SLURM_JOB_USER", "-rf"),
        ];
        for (var, value) in cases {
            let pairs: Vec<_> = FULL
                .iter()
                .map(|&(k, v)| if k == var { (k, value) } else { (k, v) })
                .collect();
            match env(&pairs) {
                Err(JobEnvError::Malformed { var: got, .. }) => assert_eq!(got, var, "{value}"),
                other => panic!("{var}={value:?}: {other:?}"),
            }
        }
    }
}
