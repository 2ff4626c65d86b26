//! Which slurm.conf node this host is, when the admin did not say.
//!
//! The guess follows pam_slurm_adopt's, minus DNS: a lookup inside sshd
//! could hang the login, and a node whose name needs DNS to be found should
//! be named with `nodename=` instead.
//!
//! A dynamic node (`slurmd -Z`) is in no NodeName line. Slurm's stepd API
//! (`_guess_nodename` in `src/common/stepd_api.c`) then has no name up to
//! 23.11, falls back to the short host name from 24.05, and to the full
//! `gethostname()` from 26.05 on. [`choose`] tries both, in that order, and
//! lets the spool settle it: the stepd sockets there are named after the
//! node slurmd registered as.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::conf::{NodeEntry, SlurmConf};
use crate::spool::{self, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum NodeNameError {
    #[error("gethostname failed: {0}")]
    Gethostname(#[source] nix::errno::Errno),
    #[error("host name {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
    /// No NodeName line names the host, and nothing shows a dynamic node.
    #[error(
        "no NodeName in {} matches host name '{hostname}'; set nodename= in the PAM line",
        conf.display()
    )]
    Unlisted { conf: PathBuf, hostname: String },
    /// The spool holds sockets of several nodes and no NodeName line says
    /// which is this host: picking one could adopt into another node's job.
    #[error(
        "host name '{hostname}' is in no NodeName line and the spool ({}) holds stepd sockets of several nodes: {}; set nodename=<one of them> in the PAM line",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        names.join(", ")
    )]
    Ambiguous {
        hostname: String,
        names: Vec<String>,
        dirs: Vec<PathBuf>,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// How the node's name was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// `nodename=` (or `--nodename`, or slurmd's SLURMD_NODENAME).
    Given,
    /// A NodeName or NodeHostname entry matches the host.
    Listed,
    /// An unlisted host whose spool holds sockets of exactly one node.
    SpoolSockets,
    /// An unlisted host on a configless node with no stepd sockets yet:
    /// the full host name, which `slurmd -Z` without `-N` registers as
    /// (`_dynamic_init` in `src/slurmd/slurmd/slurmd.c`).
    HostName,
}

/// The node this host is, and the spool directory its stepds use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChoice {
    pub node: NodeEntry,
    /// SlurmdSpoolDir with `%n`/`%h` expanded, as the node names it.
    pub spool_dir: PathBuf,
    pub source: NameSource,
}

impl NodeChoice {
    /// One line for a debug log.
    pub fn describe(&self) -> String {
        let how = match self.source {
            NameSource::Given => "given",
            NameSource::Listed => "from slurm.conf's NodeName lines",
            NameSource::SpoolSockets => {
                "unlisted host; the only node with stepd sockets in the spool"
            }
            NameSource::HostName => {
                "unlisted host with no stepd sockets; its host name, as a dynamic node"
            }
        };
        format!(
            "node name {} ({how}), spool {}",
            self.node.name,
            self.spool_dir.display()
        )
    }
}

/// What [`choose`] works from.
#[derive(Debug, Clone, Copy)]
pub struct NameQuery<'a> {
    /// `nodename=`: taken as it is.
    pub given: Option<&'a str>,
    /// This host's name as gethostname() gives it.
    pub hostname: &'a str,
    /// Whether an unlisted host with an empty spool may go by its host
    /// name: true where slurm.conf came from slurmd's configless cache, so
    /// a classic login node (listed nowhere) still fails as before.
    pub host_name_fallback: bool,
    /// `/` on a node; the copy's directory under `adoptctl doctor --root`.
    pub root: &'a Path,
}

/// The node this host is, in this order: the given name; a NodeName or
/// NodeHostname entry matching the host ([`resolve`]); for a host no line
/// names, the one node whose stepd sockets are in the spool (SlurmdSpoolDir
/// expanded for the short and for the full host name); failing that, the
/// full host name when `host_name_fallback` allows it. Sockets of several
/// nodes are an error, never a guess.
pub fn choose(conf: &SlurmConf, query: &NameQuery<'_>) -> Result<NodeChoice, NodeNameError> {
    let pick = |node: NodeEntry, source| NodeChoice {
        spool_dir: conf.spool_dir(&node),
        node,
        source,
    };
    if let Some(name) = query.given {
        return Ok(pick(conf.node_or_unlisted(name), NameSource::Given));
    }
    if let Some(node) = resolve(conf, query.hostname) {
        return Ok(pick(node.clone(), NameSource::Listed));
    }
    let hostname = query.hostname;
    let unlisted = || NodeNameError::Unlisted {
        conf: conf.path.clone(),
        hostname: hostname.to_owned(),
    };
    let short = hostname.split('.').next().unwrap_or(hostname);
    if short.is_empty() {
        return Err(unlisted());
    }
    let mut candidates = vec![short];
    if hostname != short {
        candidates.push(hostname);
    }
    let trusted = spool::trusted_owners(&conf.slurm_user);
    let mut dirs: Vec<PathBuf> = Vec::new();
    // Node name -> the spool directory its sockets are in.
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for candidate in &candidates {
        let dir = conf.spool_dir(&conf.node_or_unlisted(candidate));
        if dirs.contains(&dir) {
            continue;
        }
        let below = query.root.join(dir.strip_prefix("/").unwrap_or(&dir));
        for name in spool::socket_node_names(query.root, &below, &trusted)? {
            found.entry(name).or_insert_with(|| dir.clone());
        }
        dirs.push(dir);
    }
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some((name, dir)), None) => {
            let node = conf.node_or_unlisted(&name);
            Ok(NodeChoice {
                node,
                spool_dir: dir,
                source: NameSource::SpoolSockets,
            })
        }
        (Some((first, _)), Some((second, _))) => {
            let mut names = vec![first, second];
            names.extend(found.map(|(n, _)| n));
            Err(NodeNameError::Ambiguous {
                hostname: hostname.to_owned(),
                names,
                dirs,
            })
        }
        _ if query.host_name_fallback => {
            Ok(pick(conf.node_or_unlisted(hostname), NameSource::HostName))
        }
        _ => Err(unlisted()),
    }
}

/// This host's name as the kernel reports it (it may or may not contain
/// dots).
pub fn local_hostname() -> Result<String, NodeNameError> {
    let name = nix::unistd::gethostname().map_err(NodeNameError::Gethostname)?;
    name.into_string().map_err(NodeNameError::NotUtf8)
}

/// The node entry for host `hostname`, tried in this order:
/// 1. the name cut at its first dot, as a NodeHostname;
/// 2. the full name, as a NodeHostname;
/// 3. the name cut at its first dot, as a NodeName;
/// 4. the node whose NodeHostname is `localhost`.
///
/// The first entry in file order wins at each step, so with several
/// slurmds on one host (all `localhost`) the answer is the first of them;
/// such setups need `nodename=`.
pub fn resolve<'a>(conf: &'a SlurmConf, hostname: &str) -> Option<&'a NodeEntry> {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let by_hostname = |h: &str| conf.nodes.iter().find(|n| n.hostname == h);
    // Hostlist expansion never yields an empty name, so an empty `short`
    // cannot match anything by accident.
    by_hostname(short)
        .or_else(|| by_hostname(hostname))
        .or_else(|| conf.nodes.iter().find(|n| n.name == short))
        .or_else(|| by_hostname("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> SlurmConf {
        SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf")).unwrap()
    }

    fn name_of<'a>(c: &'a SlurmConf, host: &str) -> Option<&'a str> {
        resolve(c, host).map(|n| n.name.as_str())
    }

    #[test]
    fn short_hostname_matches_node_hostname() {
        let c = conf("NodeName=cn[1-2] NodeHostname=host[1-2]\n");
        assert_eq!(name_of(&c, "host2.cluster.example"), Some("cn2"));
        assert_eq!(name_of(&c, "host1"), Some("cn1"));
    }

    #[test]
    fn short_name_wins_over_full_name() {
        let c = conf("NodeName=full NodeHostname=h1.example.org\nNodeName=short NodeHostname=h1\n");
        assert_eq!(name_of(&c, "h1.example.org"), Some("short"));
    }

    #[test]
    fn full_hostname_matches_node_hostname() {
        let c = conf("NodeName=n1 NodeHostname=h1.example.org\n");
        assert_eq!(name_of(&c, "h1.example.org"), Some("n1"));
        assert_eq!(name_of(&c, "h1.other.org"), None);
    }

    #[test]
    fn node_name_equal_to_short_hostname() {
        // NodeHostname differs (say, a management name), NodeName is the host.
        let c = conf("NodeName=vm NodeHostname=vm-mgmt\n");
        assert_eq!(name_of(&c, "vm.example.org"), Some("vm"));
        // Hostname matches take precedence over NodeName matches.
        let c = conf("NodeName=vm NodeHostname=other\nNodeName=x NodeHostname=vm\n");
        assert_eq!(name_of(&c, "vm"), Some("x"));
    }

    #[test]
    fn localhost_fallback() {
        let c = conf(
            "NodeName=a NodeHostname=elsewhere\nNodeName=vm[1-2] NodeHostname=localhost Port=[7001-7002]\n",
        );
        assert_eq!(name_of(&c, "my-laptop"), Some("vm1"));
        let c = conf("NodeName=a\n");
        assert_eq!(name_of(&c, "my-laptop"), None);
    }

    #[test]
    fn empty_and_odd_hostnames() {
        let c = conf("NodeName=a\n");
        assert_eq!(name_of(&c, ""), None);
        assert_eq!(name_of(&c, ".a"), None);
        assert_eq!(name_of(&c, "a."), Some("a"));
        assert_eq!(name_of(&conf(""), "a"), None);
    }

    /// A spool tree: `dirs` are SlurmdSpoolDir expansions, each with the
    /// sockets named (bound, so they are real unix sockets).
    struct Spool {
        tmp: tempfile::TempDir,
        _listeners: Vec<std::os::unix::net::UnixListener>,
    }

    fn spool(sockets: &[(&str, &str)]) -> Spool {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for (dir, name) in sockets {
            let dir = tmp.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            listeners.push(std::os::unix::net::UnixListener::bind(dir.join(name)).unwrap());
        }
        Spool {
            tmp,
            _listeners: listeners,
        }
    }

    fn choose_in(
        sp: &Spool,
        conf_text: &str,
        given: Option<&str>,
        host: &str,
        fallback: bool,
    ) -> Result<NodeChoice, NodeNameError> {
        let text = format!("SlurmdSpoolDir={}/%n\n{conf_text}", sp.tmp.path().display());
        let c = conf(&text);
        choose(
            &c,
            &NameQuery {
                given,
                hostname: host,
                host_name_fallback: fallback,
                root: Path::new("/"),
            },
        )
    }

    fn assert_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: spool directories and sockets must be root's"
        );
    }

    #[test]
    fn choose_table() {
        assert_root();
        let sp = spool(&[]);
        let base = sp.tmp.path();
        // (conf, given, host, fallback) -> (name, source)
        type Row<'a> = (&'a str, Option<&'a str>, &'a str, bool, &'a str, NameSource);
        let rows: &[Row<'_>] = &[
            ("NodeName=c1\n", None, "c1", false, "c1", NameSource::Listed),
            (
                "NodeName=c1\n",
                None,
                "c1.example.org",
                false,
                "c1",
                NameSource::Listed,
            ),
            (
                "NodeName=cn1 NodeHostname=h1\n",
                None,
                "h1.example.org",
                false,
                "cn1",
                NameSource::Listed,
            ),
            (
                "NodeName=cn1 NodeHostname=h1\n",
                Some("dyn7"),
                "h1",
                false,
                "dyn7",
                NameSource::Given,
            ),
            (
                "NodeName=c1\n",
                None,
                "dyn-a.example.org",
                true,
                "dyn-a.example.org",
                NameSource::HostName,
            ),
            ("", None, "dyn-a", true, "dyn-a", NameSource::HostName),
        ];
        for (text, given, host, fallback, name, source) in rows {
            let got = choose_in(&sp, text, *given, host, *fallback)
                .unwrap_or_else(|e| panic!("{text:?} {host}: {e}"));
            assert_eq!(
                (got.node.name.as_str(), got.source),
                (*name, *source),
                "{text:?} {host}"
            );
            assert_eq!(got.spool_dir, base.join(name), "{text:?} {host}");
        }
        // Unlisted on a classic node: the old failure, with its fix.
        let err = choose_in(&sp, "NodeName=c1\n", None, "login1", false).unwrap_err();
        assert!(matches!(err, NodeNameError::Unlisted { .. }), "{err}");
        assert!(err.to_string().contains("nodename="), "{err}");
        assert!(matches!(
            choose_in(&sp, "", None, "", true),
            Err(NodeNameError::Unlisted { .. })
        ));
    }

    #[test]
    fn dynamic_node_named_by_its_short_spool_sockets() {
        assert_root();
        let sp = spool(&[("dyn-a", "dyn-a_12.4294967292")]);
        let got = choose_in(&sp, "NodeName=c1\n", None, "dyn-a.example.org", false).unwrap();
        assert_eq!(got.node.name, "dyn-a");
        assert_eq!(got.source, NameSource::SpoolSockets);
        assert!(got.describe().contains("dyn-a"));
    }

    #[test]
    fn dynamic_node_named_by_its_full_spool_sockets() {
        // 26.05 names a dotted dynamic node by the full host name.
        assert_root();
        let sp = spool(&[("dyn-a.example.org", "dyn-a.example.org_12.4294967292")]);
        let got = choose_in(&sp, "", None, "dyn-a.example.org", false).unwrap();
        assert_eq!(got.node.name, "dyn-a.example.org");
        assert_eq!(got.spool_dir, sp.tmp.path().join("dyn-a.example.org"));
        assert_eq!(got.source, NameSource::SpoolSockets);
    }

    #[test]
    fn spool_sockets_name_a_node_registered_under_another_name() {
        // slurmd -Z -N k8s-pod-3 on host worker7, with a shared spool dir.
        assert_root();
        let sp = spool(&[
            ("shared", "k8s_pod_3_7.0"),
            ("shared", "k8s_pod_3_7.4294967292"),
        ]);
        let text = format!("SlurmdSpoolDir={}/shared\n", sp.tmp.path().display());
        let c = conf(&text);
        let got = choose(
            &c,
            &NameQuery {
                given: None,
                hostname: "worker7",
                host_name_fallback: false,
                root: Path::new("/"),
            },
        )
        .unwrap();
        assert_eq!(got.node.name, "k8s_pod_3");
        assert_eq!(got.source, NameSource::SpoolSockets);
    }

    #[test]
    fn sockets_of_two_nodes_are_ambiguous() {
        assert_root();
        let sp = spool(&[
            ("dyn-a", "dyn-a_12.4294967292"),
            ("dyn-a.example.org", "dyn-a.example.org_13.4294967292"),
        ]);
        let err = choose_in(&sp, "", None, "dyn-a.example.org", true).unwrap_err();
        let NodeNameError::Ambiguous { names, dirs, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(names, &["dyn-a", "dyn-a.example.org"]);
        assert_eq!(dirs.len(), 2);
        let text = err.to_string();
        assert!(text.contains("dyn-a, dyn-a.example.org"), "{text}");
        assert!(text.contains("nodename="), "{text}");
    }

    #[test]
    fn untrusted_sockets_do_not_name_the_node() {
        assert_root();
        let sp = spool(&[("dyn-a", "other_12.4294967292"), ("dyn-a", "dyn-a_1.0")]);
        let sock = sp.tmp.path().join("dyn-a/other_12.4294967292");
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &sock,
            Some(nix::unistd::Uid::from_raw(4242)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let got = choose_in(&sp, "", None, "dyn-a", false).unwrap();
        assert_eq!(got.node.name, "dyn-a");
    }

    #[test]
    fn local_hostname_is_the_kernel_one() {
        let name = local_hostname().unwrap();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| name.clone());
        assert_eq!(name, kernel);
    }
}
