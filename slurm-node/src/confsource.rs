//! Which slurm.conf this node runs on, found the way libslurm finds it but
//! without the environment.
//!
//! libslurm (`_establish_config_source` in `src/common/read_config.c`, the
//! same from 22.05 to 26.05) takes a file it was given, then `SLURM_CONF`,
//! then the compiled-in default if `stat` finds it, then
//! `/run/slurm/conf/slurm.conf`: the link slurmd in configless mode makes
//! from `/run/slurm/conf` to the `conf-cache` directory under its
//! SlurmdSpoolDir, where it writes the files slurmctld sent
//! (`_handle_slash_run` and `_establish_configuration` in
//! `src/slurmd/slurmd/slurmd.c`). Here `conf=` stands for the given file;
//! `SLURM_CONF` is never read, because inside sshd the environment is not
//! slurmd's and a login must not choose the file that decides it.
//!
//! The cache is trusted only as the spool directory is: the directory (the
//! link's target, one hop, every directory on the way root's) is opened
//! `O_DIRECTORY|O_NOFOLLOW`, judged by `fstat`, and must be root's (or the
//! reader's) and not writable by group or others; its slurm.conf must pass
//! the config reader's file rules and not be writable by group either.
//! SlurmUser is not among the owners a cache may have: SlurmUser is named
//! by the very file being judged, and slurmd writes the cache as itself
//! (root, unless SlurmdUser says otherwise). Includes and cgroup.conf are
//! then read from the directory the file came from, the link's target.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::conf::{ConfError, SlurmConf};
use crate::spool::{self, SpoolError};

/// Slurm's compiled-in default slurm.conf.
pub const DEFAULT_CONF: &str = "/etc/slurm/slurm.conf";
/// Where slurmd in configless mode links its cache of the fetched files.
pub const CONFIGLESS_CACHE_DIR: &str = "/run/slurm/conf";

/// Where to look for slurm.conf: the real paths on a node, or the same
/// paths in a copy of a node's tree (`adoptctl doctor --root`, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSources {
    /// The tree the paths below belong to; an absolute link target is taken
    /// under it.
    pub root: PathBuf,
    /// `/etc/slurm/slurm.conf`, under `root`.
    pub default_conf: PathBuf,
    /// `/run/slurm/conf`, under `root`.
    pub cache_dir: PathBuf,
}

impl ConfigSources {
    /// The node's own files.
    pub fn system() -> ConfigSources {
        ConfigSources::under(Path::new("/"))
    }

    /// The node's paths inside a copy of its tree at `root`.
    pub fn under(root: &Path) -> ConfigSources {
        let below = |p: &str| root.join(p.trim_start_matches('/'));
        ConfigSources {
            root: root.to_owned(),
            default_conf: below(DEFAULT_CONF),
            cache_dir: below(CONFIGLESS_CACHE_DIR),
        }
    }
}

/// How the file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfOrigin {
    /// `conf=` on the PAM line (or the hooks' explicit setting).
    Given,
    /// `/etc/slurm/slurm.conf`.
    Default,
    /// slurmd's configless cache.
    ConfiglessCache,
}

/// The slurm.conf to read and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundConf {
    /// The file to read: for the cache, inside the link's target, so
    /// Includes and cgroup.conf come from that directory.
    pub path: PathBuf,
    pub origin: ConfOrigin,
}

impl FoundConf {
    /// One line for a debug log.
    pub fn describe(&self) -> String {
        let how = match self.origin {
            ConfOrigin::Given => "given by conf=",
            ConfOrigin::Default => "the default",
            ConfOrigin::ConfiglessCache => "slurmd's configless cache",
        };
        format!("using slurm.conf {} ({how})", self.path.display())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfSourceError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(
        "no slurm.conf: {} does not exist and there is no configless cache at {}/slurm.conf; \
         set conf= in the PAM line",
        default.display(),
        cache.display()
    )]
    NoConfig { default: PathBuf, cache: PathBuf },
    #[error("slurmd's configless cache {} is refused: {source}", dir.display())]
    CacheRefused {
        dir: PathBuf,
        #[source]
        source: SpoolError,
    },
}

/// Owners the cache directory may have: root, and the reader (tests, and
/// the non-root tools that read the cache slurmd made as them).
fn cache_owners() -> Vec<u32> {
    let mut uids = vec![0];
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 {
        uids.push(me);
    }
    uids
}

/// The slurm.conf to read: `explicit` if given, else the default file if
/// anything is there (a broken one is reported by the reader, not skipped),
/// else the configless cache if it passes the trust rule.
pub fn find(
    explicit: Option<&Path>,
    sources: &ConfigSources,
) -> Result<FoundConf, ConfSourceError> {
    if let Some(path) = explicit {
        return Ok(FoundConf {
            path: path.to_owned(),
            origin: ConfOrigin::Given,
        });
    }
    if !absent(&sources.default_conf) {
        return Ok(FoundConf {
            path: sources.default_conf.clone(),
            origin: ConfOrigin::Default,
        });
    }
    let no_config = || ConfSourceError::NoConfig {
        default: sources.default_conf.clone(),
        cache: sources.cache_dir.clone(),
    };
    let dir = match spool::open_spool_dir_under(&sources.root, &sources.cache_dir, &cache_owners())
    {
        Ok(Some(dir)) => dir,
        Ok(None) => return Err(no_config()),
        Err(source) => {
            return Err(ConfSourceError::CacheRefused {
                dir: sources.cache_dir.clone(),
                source,
            });
        }
    };
    let real_dir = dir.target.clone().unwrap_or_else(|| dir.path.clone());
    let path = real_dir.join("slurm.conf");
    if absent(&path) {
        return Err(no_config());
    }
    Ok(FoundConf {
        path,
        origin: ConfOrigin::ConfiglessCache,
    })
}

/// [`find`], then read the file (a cached one with the stricter mode rule).
pub fn load(
    explicit: Option<&Path>,
    sources: &ConfigSources,
) -> Result<(SlurmConf, FoundConf), ConfSourceError> {
    let found = find(explicit, sources)?;
    let conf = match found.origin {
        ConfOrigin::ConfiglessCache => SlurmConf::load_cached(&found.path)?,
        ConfOrigin::Given | ConfOrigin::Default => SlurmConf::load(&found.path)?,
    };
    Ok((conf, found))
}

/// As libslurm's `stat` test: nothing there, or a dangling link. Any other
/// failure (a permission problem) leaves the file to the reader, which
/// reports it.
fn absent(path: &Path) -> bool {
    match fs::metadata(path) {
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A node tree with slurmd's cache the way slurmd makes it: the files
    /// in SlurmdSpoolDir/conf-cache, /run/slurm/conf a link to it.
    fn configless_tree() -> (tempfile::TempDir, ConfigSources) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        chmod(root, 0o755);
        let cache = root.join("var/spool/slurmd/conf-cache");
        write(
            &cache.join("slurm.conf"),
            "ClusterName=c\nSlurmctldParameters=enable_configless\nInclude nodes.conf\n",
        );
        write(&cache.join("nodes.conf"), "NodeName=c1 CPUs=1\n");
        write(&cache.join("cgroup.conf"), "ConstrainCores=yes\n");
        fs::create_dir_all(root.join("run/slurm")).unwrap();
        symlink("/var/spool/slurmd/conf-cache", root.join("run/slurm/conf")).unwrap();
        for d in [
            "var",
            "var/spool",
            "var/spool/slurmd",
            "var/spool/slurmd/conf-cache",
        ] {
            chmod(&root.join(d), 0o755);
        }
        let sources = ConfigSources::under(root);
        (tmp, sources)
    }

    fn assert_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: the cache's directory chain must be root's"
        );
    }

    #[test]
    fn system_paths_are_slurms() {
        let s = ConfigSources::system();
        assert_eq!(s.default_conf, Path::new("/etc/slurm/slurm.conf"));
        assert_eq!(s.cache_dir, Path::new("/run/slurm/conf"));
        assert_eq!(s.root, Path::new("/"));
    }

    #[test]
    fn given_file_wins_even_when_missing() {
        let (_tmp, sources) = configless_tree();
        let found = find(Some(Path::new("/nonexistent/slurm.conf")), &sources).unwrap();
        assert_eq!(found.origin, ConfOrigin::Given);
        assert_eq!(found.path, Path::new("/nonexistent/slurm.conf"));
        assert!(matches!(
            load(Some(Path::new("/nonexistent/slurm.conf")), &sources),
            Err(ConfSourceError::Conf(ConfError::Read { .. }))
        ));
    }

    #[test]
    fn default_file_wins_over_the_cache() {
        let (_tmp, sources) = configless_tree();
        write(&sources.default_conf, "ClusterName=classic\n");
        let (conf, found) = load(None, &sources).unwrap();
        assert_eq!(found.origin, ConfOrigin::Default);
        assert_eq!(conf.cluster_name.as_deref(), Some("classic"));
        assert!(found.describe().contains("(the default)"));
    }

    #[test]
    fn cache_is_used_without_a_default_file() {
        assert_root();
        let (tmp, sources) = configless_tree();
        let (conf, found) = load(None, &sources).unwrap();
        assert_eq!(found.origin, ConfOrigin::ConfiglessCache);
        // The link's target, so Include and cgroup.conf come from there.
        let cache = tmp.path().join("var/spool/slurmd/conf-cache");
        assert_eq!(found.path, cache.join("slurm.conf"));
        assert_eq!(conf.nodes.len(), 1);
        assert_eq!(
            conf.node_origin("c1").unwrap().file,
            cache.join("nodes.conf")
        );
        assert_eq!(conf.cgroup.path, Some(cache.join("cgroup.conf")));
        assert!(conf.cgroup.constrain_cores);
        assert!(found.describe().contains("configless cache"));
    }

    #[test]
    fn dangling_default_link_falls_through_to_the_cache() {
        assert_root();
        let (_tmp, sources) = configless_tree();
        fs::create_dir_all(sources.default_conf.parent().unwrap()).unwrap();
        symlink("/nowhere/slurm.conf", &sources.default_conf).unwrap();
        let found = find(None, &sources).unwrap();
        assert_eq!(found.origin, ConfOrigin::ConfiglessCache);
    }

    #[test]
    fn nothing_anywhere_names_both_places() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = ConfigSources::under(tmp.path());
        let err = find(None, &sources).unwrap_err();
        assert!(matches!(err, ConfSourceError::NoConfig { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("etc/slurm/slurm.conf"), "{text}");
        assert!(text.contains("run/slurm/conf/slurm.conf"), "{text}");
        assert!(text.contains("conf="), "{text}");
    }

    #[test]
    fn cache_without_slurm_conf_is_no_config() {
        assert_root();
        let (tmp, sources) = configless_tree();
        fs::remove_file(tmp.path().join("var/spool/slurmd/conf-cache/slurm.conf")).unwrap();
        assert!(matches!(
            find(None, &sources),
            Err(ConfSourceError::NoConfig { .. })
        ));
    }

    #[test]
    fn cache_directory_writable_by_others_is_refused() {
        assert_root();
        let (tmp, sources) = configless_tree();
        chmod(&tmp.path().join("var/spool/slurmd/conf-cache"), 0o757);
        let err = find(None, &sources).unwrap_err();
        assert!(matches!(err, ConfSourceError::CacheRefused { .. }), "{err}");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn cache_directory_of_another_user_is_refused() {
        assert_root();
        let (tmp, sources) = configless_tree();
        let cache = tmp.path().join("var/spool/slurmd/conf-cache");
        nix::unistd::chown(&cache, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let err = find(None, &sources).unwrap_err();
        assert!(matches!(err, ConfSourceError::CacheRefused { .. }), "{err}");
        assert!(err.to_string().contains("uid 4242"), "{err}");
    }

    #[test]
    fn cache_link_of_another_user_is_refused() {
        assert_root();
        let (tmp, sources) = configless_tree();
        let link = tmp.path().join("run/slurm/conf");
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(4242)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let err = find(None, &sources).unwrap_err();
        assert!(matches!(err, ConfSourceError::CacheRefused { .. }), "{err}");
    }

    #[test]
    fn cached_file_of_another_user_or_group_writable_is_refused() {
        assert_root();
        let (tmp, sources) = configless_tree();
        let file = tmp.path().join("var/spool/slurmd/conf-cache/slurm.conf");
        chmod(&file, 0o664);
        let err = load(None, &sources).unwrap_err();
        let ConfSourceError::Conf(conf_err) = &err else {
            panic!("{err}")
        };
        assert!(conf_err.refusal().is_some(), "{err}");
        assert!(err.to_string().contains("writable by group"), "{err}");
        chmod(&file, 0o644);
        nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let err = load(None, &sources).unwrap_err();
        assert!(err.to_string().contains("uid 4242"), "{err}");
    }

    #[test]
    fn cache_as_a_plain_directory_is_used() {
        assert_root();
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let sources = ConfigSources::under(tmp.path());
        write(&sources.cache_dir.join("slurm.conf"), "ClusterName=plain\n");
        let (conf, found) = load(None, &sources).unwrap();
        assert_eq!(found.path, sources.cache_dir.join("slurm.conf"));
        assert_eq!(conf.cluster_name.as_deref(), Some("plain"));
    }
}
