//! What the three hook binaries share: their log (stderr and syslog), the
//! config, and turning slurmd's environment into the job's user and the
//! node's spool directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::unistd::User;

use crate::config::{ConfigError, DEFAULT_PATH, HookConfig};
use crate::job_env::JobEnv;
use crate::lifecycle::{JobUser, NodeSpool};
use slurm_node::confsource::{self, ConfOrigin, ConfigSources};
use slurm_node::nodename::{self, NameQuery};
use slurm_node::syslog::{DEV_LOG, Severity, Syslog};

/// Every message goes to stderr as `TAG: message` and to syslog (daemon
/// facility) as `TAG[pid]: message`, so admins can grep either.
#[derive(Debug)]
pub struct HookLog {
    tag: &'static str,
    syslog: Syslog,
}

impl HookLog {
    pub fn open(tag: &'static str, to_syslog: bool) -> HookLog {
        let syslog = if to_syslog {
            Syslog::open(tag, Path::new(DEV_LOG))
        } else {
            Syslog::disabled(tag)
        };
        HookLog { tag, syslog }
    }

    pub fn log(&self, severity: Severity, message: &str) {
        // eprintln! would panic if stderr is gone; a log line is not worth
        // a non-zero exit.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {}: {message}",
            self.tag,
            severity.label()
        );
        self.syslog.send(severity, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Severity::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Severity::Warning, message);
    }

    pub fn error(&self, message: &str) {
        self.log(Severity::Err, message);
    }
}

/// The config at `--config PATH` (which must exist), else the default
/// path (which may be missing: then the defaults).
pub fn load_config(explicit: Option<&Path>) -> Result<HookConfig, ConfigError> {
    match explicit {
        Some(path) => HookConfig::load(path, true),
        None => HookConfig::load(Path::new(DEFAULT_PATH), false),
    }
}

/// The job's user: the uid and name slurmd gave, the gid from
/// `SLURM_JOB_GID` or else the passwd entry.
pub fn job_user(env: &JobEnv) -> Result<JobUser, String> {
    let gid = match env.gid {
        Some(gid) => gid,
        None => match User::from_uid(nix::unistd::Uid::from_raw(env.uid)) {
            Ok(Some(pw)) => pw.gid.as_raw(),
            Ok(None) => {
                return Err(format!(
                    "SLURM_JOB_GID is not set and uid {} has no passwd entry on this node",
                    env.uid
                ));
            }
            Err(e) => return Err(format!("cannot look up uid {}: {e}", env.uid)),
        },
    };
    Ok(JobUser {
        job_id: env.job_id,
        uid: env.uid,
        gid,
        user: env.user.clone(),
    })
}

/// slurm.conf as slurmd passed it (`SLURM_CONF`), else the config's.
pub fn slurm_conf_path(config: &HookConfig, env: &JobEnv) -> PathBuf {
    env.slurm_conf
        .clone()
        .unwrap_or_else(|| config.slurm_conf.clone())
}

/// This node's spool directory and the owners a stepd socket may have.
///
/// `conf_path` is SLURM_CONF as slurmd passed it, or adopt.toml's
/// `slurm_conf`; left at the default, slurm.conf is found as the module
/// finds it (the default file, else slurmd's configless cache). The node
/// is SLURMD_NODENAME, else resolved as the module resolves it.
pub fn node_spool(conf_path: &Path, env: &JobEnv) -> Result<NodeSpool, String> {
    node_spool_in(conf_path, env, &ConfigSources::system())
}

/// [`node_spool`] with slurm.conf looked for in `sources`.
pub fn node_spool_in(
    conf_path: &Path,
    env: &JobEnv,
    sources: &ConfigSources,
) -> Result<NodeSpool, String> {
    let explicit = (conf_path != Path::new(confsource::DEFAULT_CONF)).then_some(conf_path);
    let (conf, found) = confsource::load(explicit, sources).map_err(|e| e.to_string())?;
    let hostname = match &env.node_name {
        Some(_) => String::new(),
        None => slurm_node::nodename::local_hostname().map_err(|e| e.to_string())?,
    };
    let choice = nodename::choose(
        &conf,
        &NameQuery {
            given: env.node_name.as_deref(),
            hostname: &hostname,
            host_name_fallback: found.origin == ConfOrigin::ConfiglessCache,
            root: &sources.root,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(NodeSpool {
        spool_dir: choice.spool_dir,
        trusted_uids: slurm_node::spool::trusted_owners(&conf.slurm_user),
        stepd_peers: slurm_node::stepd::StepdPeers::from_uids(slurm_node::spool::stepd_peer_uids(
            &conf.slurmd_user,
        )),
        node_name: choice.node.name,
    })
}

/// What a Prolog or Epilog works from.
#[derive(Debug)]
pub struct HookInput {
    pub env: JobEnv,
    pub config: HookConfig,
    pub job: JobUser,
}

/// slurmd's environment, the config and the job's user, or the one line
/// that says what is wrong (`job=N ...` once the job id is known). The
/// caller decides the exit status: a Prolog fails, an Epilog does not.
pub fn hook_input(explicit_config: Option<&Path>) -> Result<HookInput, String> {
    let env = JobEnv::from_vars(|k| std::env::var_os(k)).map_err(|e| e.to_string())?;
    let config = load_config(explicit_config).map_err(|e| format!("job={} {e}", env.job_id))?;
    let job = job_user(&env).map_err(|e| format!("job={} {e}", env.job_id))?;
    Ok(HookInput { env, config, job })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn env(node_name: Option<&str>) -> JobEnv {
        JobEnv {
            job_id: 5,
            uid: 1000,
            gid: Some(1000),
            user: "alice".to_owned(),
            node_name: node_name.map(str::to_owned),
            slurm_conf: None,
        }
    }

    /// A configless node's tree: slurmd's cache, linked from /run/slurm/conf.
    fn configless_tree() -> tempfile::TempDir {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the cache's link is followed only through root-owned directories: run as root"
        );
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let cache = tmp.path().join("var/spool/slurmd/conf-cache");
        fs::create_dir_all(&cache).unwrap();
        fs::write(
            cache.join("slurm.conf"),
            "SlurmdSpoolDir=/var/spool/slurmd/%n\nNodeName=c1\n",
        )
        .unwrap();
        fs::create_dir_all(tmp.path().join("run/slurm")).unwrap();
        symlink(
            "/var/spool/slurmd/conf-cache",
            tmp.path().join("run/slurm/conf"),
        )
        .unwrap();
        tmp
    }

    #[test]
    fn the_default_path_finds_slurmds_configless_cache() {
        let tree = configless_tree();
        let sources = ConfigSources::under(tree.path());
        let spool = node_spool_in(
            Path::new(confsource::DEFAULT_CONF),
            &env(Some("dyn3")),
            &sources,
        )
        .unwrap();
        assert_eq!(spool.node_name, "dyn3");
        assert_eq!(spool.spool_dir, Path::new("/var/spool/slurmd/dyn3"));
    }

    #[test]
    fn an_explicit_path_is_read_as_given() {
        let tree = configless_tree();
        let sources = ConfigSources::under(tree.path());
        let err = node_spool_in(
            Path::new("/nonexistent/slurm.conf"),
            &env(Some("c1")),
            &sources,
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/slurm.conf"), "{err}");
    }
}
