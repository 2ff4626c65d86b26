//! slurm.conf: the settings a compute node needs, typed, plus every other
//! single-key line kept raw.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::cgroup::CgroupConf;
use super::error::ConfError;
use super::lexer::{At, Reader, Sink, Writers, is_blank, read_text_with};
use super::nodes::{NodeEntry, NodeLines};
use super::provenance::{Origin, Provenance};
use super::values::{
    c_unsigned, comma_list, none_if_empty, parse_port, parse_u16_setting, trailing_text,
};
use crate::hostlist;

/// SlurmdSpoolDir when slurm.conf sets none (Slurm's compile-time default).
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/slurmd";
pub const DEFAULT_SLURMD_PORT: u16 = 6818;
pub const DEFAULT_MESSAGE_TIMEOUT_SECS: u32 = 10;
pub const DEFAULT_TCP_TIMEOUT_SECS: u32 = 2;

/// The parts of slurm.conf a compute node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmConf {
    pub path: PathBuf,
    /// ClusterName, lower-cased as Slurm does.
    pub cluster_name: Option<String>,
    /// SlurmdSpoolDir as written, `%n`/`%h` unexpanded; see [`SlurmConf::spool_dir`].
    pub slurmd_spool_dir: String,
    pub slurmd_port: u16,
    pub slurm_user: String,
    /// SlurmdUser: the account slurmd and the stepds run as (root by default).
    pub slurmd_user: String,
    pub auth_type: String,
    pub auth_info: Option<String>,
    /// PrologFlags, lower-cased and split at commas, as written (the flags
    /// they imply are not added; see [`SlurmConf::has_prolog_flag`]).
    pub prolog_flags: Vec<String>,
    pub proctrack_type: Option<String>,
    /// TaskPlugin split at commas; empty when unset or when it names `none`.
    pub task_plugin: Vec<String>,
    /// The last Prolog line: the one that runs on 22.05 to 23.11.
    pub prolog: Option<String>,
    /// Every Prolog line in order: from 24.05 on, all of them run.
    pub prologs: Vec<String>,
    /// The last Epilog line (see `prolog`).
    pub epilog: Option<String>,
    /// Every Epilog line in order (see `prologs`).
    pub epilogs: Vec<String>,
    pub task_prolog: Option<String>,
    pub message_timeout_secs: u32,
    pub tcp_timeout_secs: u32,
    /// NamespaceType, else JobContainerType; `None` when unset or a `none`
    /// plugin.
    pub job_container_type: Option<String>,
    /// LaunchParameters split at commas, case kept.
    pub launch_parameters: Vec<String>,
    pub nodes: Vec<NodeEntry>,
    /// cgroup.conf from beside slurm.conf (only [`SlurmConf::load`] reads it).
    pub cgroup: CgroupConf,
    /// Every line that held a single `Key=Value`, known or not, by
    /// lower-cased key (last one wins), for settings not typed above.
    pub raw: BTreeMap<String, String>,
    /// The file and line of each line's leading setting, NodeName lines
    /// included (cgroup.conf's are in `cgroup`).
    pub provenance: Provenance,
}

impl Default for SlurmConf {
    fn default() -> Self {
        SlurmConf {
            path: PathBuf::new(),
            cluster_name: None,
            slurmd_spool_dir: DEFAULT_SPOOL_DIR.to_owned(),
            slurmd_port: DEFAULT_SLURMD_PORT,
            slurm_user: "root".to_owned(),
            slurmd_user: "root".to_owned(),
            auth_type: "auth/munge".to_owned(),
            auth_info: None,
            prolog_flags: Vec::new(),
            proctrack_type: None,
            task_plugin: Vec::new(),
            prolog: None,
            prologs: Vec::new(),
            epilog: None,
            epilogs: Vec::new(),
            task_prolog: None,
            message_timeout_secs: DEFAULT_MESSAGE_TIMEOUT_SECS,
            tcp_timeout_secs: DEFAULT_TCP_TIMEOUT_SECS,
            job_container_type: None,
            launch_parameters: Vec::new(),
            nodes: Vec::new(),
            cgroup: CgroupConf::default(),
            raw: BTreeMap::new(),
            provenance: Provenance::default(),
        }
    }
}

impl SlurmConf {
    /// Read `path` (and its includes), then `cgroup.conf` from the same
    /// directory if it exists, as slurmd does.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        Self::load_with(path, Writers::OwnerAndGroup)
    }

    /// [`SlurmConf::load`] for slurmd's configless cache, whose slurm.conf
    /// must not be writable by its group either (slurmd writes it 0644).
    /// Its Includes and cgroup.conf are held to the usual rule.
    pub fn load_cached(path: &Path) -> Result<Self, ConfError> {
        Self::load_with(path, Writers::OwnerOnly)
    }

    fn load_with(path: &Path, writers: Writers) -> Result<Self, ConfError> {
        let text = read_text_with(path, writers).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut conf = Self::parse(&text, path)?;
        let cgroup_path = path.with_file_name("cgroup.conf");
        match fs::metadata(&cgroup_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => conf.cgroup = CgroupConf::load(&cgroup_path)?,
        }
        Ok(conf)
    }

    /// Parse `text` as the contents of `path`. Includes are still read,
    /// relative to `path`'s directory; cgroup.conf is not (it keeps its
    /// defaults).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfError> {
        let mut sink = SlurmSink {
            conf: SlurmConf {
                path: path.to_owned(),
                ..SlurmConf::default()
            },
            node_lines: NodeLines::default(),
            job_container_type: None,
            namespace_type: None,
        };
        let provenance = Reader::run(text, path, &mut sink)?;
        Ok(SlurmConf {
            provenance,
            ..sink.finish()
        })
    }

    /// The node named `name` (NodeName, exact match).
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The NodeName line that names node `name` (after hostlist
    /// expansion), for pointing an admin at it.
    pub fn node_origin(&self, name: &str) -> Option<&Origin> {
        self.provenance
            .all("nodename")
            // NodeName=DEFAULT sets defaults; it names no node.
            .filter(|s| !s.value.eq_ignore_ascii_case("DEFAULT"))
            .find(|s| hostlist::expand(&s.value).is_ok_and(|names| names.iter().any(|n| n == name)))
            .map(|s| &s.origin)
    }

    /// The file and line that set `key` (any case) last: the value a plain
    /// key has.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.provenance.last(key).map(|s| &s.origin)
    }

    /// The entry named `name`, or one made up from the name alone for a
    /// node slurm.conf does not list (dynamic nodes): the spool lookup
    /// needs nothing else.
    pub fn node_or_unlisted(&self, name: &str) -> NodeEntry {
        self.node(name).cloned().unwrap_or_else(|| NodeEntry {
            name: name.to_owned(),
            hostname: name.to_owned(),
            addr: name.to_owned(),
            port: None,
        })
    }

    /// The port `node`'s slurmd listens on.
    pub fn node_port(&self, node: &NodeEntry) -> u16 {
        node.port.unwrap_or(self.slurmd_port)
    }

    /// SlurmdSpoolDir for `node`. Like slurmd, only the first `%h` and the
    /// first `%n` are replaced, `%h` first.
    pub fn spool_dir(&self, node: &NodeEntry) -> PathBuf {
        let dir = self
            .slurmd_spool_dir
            .replacen("%h", &node.hostname, 1)
            .replacen("%n", &node.name, 1);
        PathBuf::from(dir)
    }

    /// Whether PrologFlags sets `flag` (case-insensitive), counting the
    /// flags Slurm turns on implicitly: `Contain` by `X11` and `RunInJob`,
    /// `Alloc` by all of those and `DeferBatch`, `ForceRequeueOnFail` and
    /// `NoHold`.
    pub fn has_prolog_flag(&self, flag: &str) -> bool {
        let want = flag.to_ascii_lowercase();
        self.prolog_flags
            .iter()
            .any(|f| *f == want || implied_prolog_flags(f).contains(&want.as_str()))
    }

    /// Whether LaunchParameters holds `param` (case-insensitive, as Slurm
    /// matches them).
    pub fn has_launch_parameter(&self, param: &str) -> bool {
        self.launch_parameters
            .iter()
            .any(|p| p.eq_ignore_ascii_case(param))
    }
}

fn implied_prolog_flags(flag: &str) -> &'static [&'static str] {
    match flag {
        "contain" | "deferbatch" | "forcerequeueonfail" | "nohold" => &["alloc"],
        "runinjob" | "x11" => &["alloc", "contain"],
        _ => &[],
    }
}

struct SlurmSink {
    conf: SlurmConf,
    node_lines: NodeLines,
    job_container_type: Option<String>,
    namespace_type: Option<String>,
}

impl SlurmSink {
    fn finish(mut self) -> SlurmConf {
        // Slurm prefers NamespaceType once it is given, even as none.
        let plugin = self.namespace_type.or(self.job_container_type);
        self.conf.job_container_type = plugin.filter(|p| !p.to_ascii_lowercase().contains("none"));
        self.conf
    }

    /// Returns whether `key` is one this reader interprets.
    fn setting(
        &mut self,
        at: At<'_>,
        key: &str,
        lower: &str,
        value: &str,
    ) -> Result<bool, ConfError> {
        let c = &mut self.conf;
        match lower {
            "clustername" => c.cluster_name = none_if_empty(&value.to_ascii_lowercase()),
            "slurmdspooldir" => c.slurmd_spool_dir = value.to_owned(),
            "slurmdport" => c.slurmd_port = parse_port(at, key, value, c_unsigned(value))?,
            "slurmuser" => c.slurm_user = value.to_owned(),
            "slurmduser" => c.slurmd_user = value.to_owned(),
            "authtype" => c.auth_type = value.to_owned(),
            "authinfo" => c.auth_info = none_if_empty(value),
            "prologflags" => c.prolog_flags = comma_list(&value.to_ascii_lowercase()),
            "proctracktype" => c.proctrack_type = none_if_empty(value),
            "taskplugin" => {
                c.task_plugin = if value.to_ascii_lowercase().contains("none") {
                    Vec::new()
                } else {
                    comma_list(value)
                }
            }
            "prolog" => {
                c.prolog = none_if_empty(value);
                c.prologs.extend(none_if_empty(value));
            }
            "epilog" => {
                c.epilog = none_if_empty(value);
                c.epilogs.extend(none_if_empty(value));
            }
            "taskprolog" => c.task_prolog = none_if_empty(value),
            "messagetimeout" => c.message_timeout_secs = parse_u16_setting(at, key, value)?,
            "tcptimeout" => c.tcp_timeout_secs = parse_u16_setting(at, key, value)?,
            "jobcontainertype" => self.job_container_type = Some(value.to_owned()),
            "namespacetype" => self.namespace_type = Some(value.to_owned()),
            "launchparameters" => c.launch_parameters = comma_list(value),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Sink for SlurmSink {
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError> {
        let lower = key.to_ascii_lowercase();
        if lower == "nodename" {
            return self.node_lines.read(&mut self.conf.nodes, at, value, rest);
        }
        if self.setting(at, key, &lower, value)? {
            trailing_text(at, key, value, rest)?;
        } else if !is_blank(rest) {
            // An unknown key with more on its line is a multi-key line
            // (PartitionName, NodeSet, ... or one from a newer Slurm): none
            // of it concerns the node.
            return Ok(());
        }
        self.conf.raw.insert(lower, value.to_owned());
        Ok(())
    }

    fn cluster_name(&self) -> Option<&str> {
        self.conf.cluster_name.as_deref()
    }
}
