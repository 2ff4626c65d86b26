//! `adoptctl doctor`: the configuration mistakes that make pam_adopt (or
//! pam_slurm_adopt) deny everyone, let everyone in unconfined, or let
//! logins escape their job, each reported with the file and line to edit.
//!
//! Everything is read, nothing is changed. With `--root DIR` every path is
//! taken under DIR, so a copy of a node's files can be reviewed elsewhere.
//!
//! Checks are grouped by domain, one file each: `pam` (account and session
//! stacks), `sshd`, `slurm` (slurm.conf and its hooks), `spool`
//! (SlurmdSpoolDir), `configless`, `cgroup`, `namespace` (namespace/linux's
//! namespace.yaml) and `selinux`. Where the module has a rule
//! (how config files are opened, what spool directory it accepts), doctor
//! calls the module's own code rather than a copy of the rule, so the two
//! cannot disagree. They share only `findings`, the collector; this file wires
//! them together and nothing imports it back.

mod cgroup;
mod configless;
mod findings;
mod namespace;
mod pam;
mod selinux;
mod slurm;
mod spool;
mod sshd;

use std::path::{Path, PathBuf};

use adopt_login::options::Options;
use slurm_node::confsource::{self, ConfSourceError, ConfigSources};
use slurm_node::nodename;

use crate::report::{Finding, Status};
use crate::root::Root;
use findings::Findings;

#[derive(Debug)]
pub struct Args {
    pub root: Root,
    pub service: String,
    /// Read this PAM file (a path on this machine) as the service's file.
    pub pam_file: Option<PathBuf>,
    /// Read this sshd_config (a path on this machine).
    pub sshd_config: Option<PathBuf>,
    pub nodename: Option<String>,
    pub hostname: Option<String>,
    /// Node paths to treat as network filesystems (tests cannot mount NFS).
    pub network_fs: Vec<PathBuf>,
}

pub fn run(args: &Args) -> Vec<Finding> {
    let mut d = Findings::new(&args.root);
    let pam_path = match &args.pam_file {
        Some(p) => p.clone(),
        None => args.root.host(&Path::new("/etc/pam.d").join(&args.service)),
    };
    let module_opts = pam::checks(&mut d, &args.service, &pam_path, &args.network_fs);
    sshd::checks(&mut d, args.sshd_config.as_deref());
    let explicit = module_opts
        .as_ref()
        .and_then(|o: &Options| o.conf.as_deref())
        .map(|p| args.root.host(p));
    let sources = ConfigSources::under(args.root.dir());
    let nodename = args
        .nodename
        .clone()
        .or_else(|| module_opts.as_ref().and_then(|o| o.nodename.clone()));
    let hostname = match (&nodename, &args.hostname) {
        (Some(_), _) => None,
        (None, Some(h)) => Some(h.clone()),
        (None, None) => host_name(&mut d, &args.root),
    };
    let conf_server = configless::slurmd_conf_server(&args.root.host(Path::new("/proc")));
    let found = match confsource::find(explicit.as_deref(), &sources) {
        Ok(found) => found,
        Err(e) => {
            no_conf(&mut d, &e, conf_server.as_deref());
            selinux::check(&mut d);
            return d.into_vec();
        }
    };
    let loaded = slurm::checks(&mut d, &found, nodename.as_deref(), hostname.as_deref());
    let signs = configless::signs(&found, loaded.as_ref().map(|(c, _)| c), conf_server);
    configless::check(&mut d, &found, &signs);
    if let Some((conf, node)) = loaded {
        if let Some(node) = node {
            spool::check(&mut d, &conf, &node);
        }
        cgroup::check(&mut d, &conf);
        namespace::check(&mut d, &conf, module_opts.as_ref());
    }
    selinux::check(&mut d);
    d.into_vec()
}

/// The node's host name: under `--root`, the copy's /etc/hostname (not the
/// name of the machine doctor runs on); else the kernel's.
fn host_name(d: &mut Findings<'_>, root: &Root) -> Option<String> {
    if !root.is_set() {
        return nodename::local_hostname().ok();
    }
    let file = root.host(Path::new("/etc/hostname"));
    let name = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
        .filter(|n| !n.is_empty());
    if name.is_none() {
        d.push(
            "login-node",
            Status::Warn,
            Some((file.as_path(), None)),
            "the --root copy has no /etc/hostname, so which node it is cannot be told",
            "give --nodename or --hostname, or copy /etc/hostname too",
        );
    }
    name
}

/// No slurm.conf to read: none at all, or a cache the module refuses.
fn no_conf(d: &mut Findings<'_>, e: &ConfSourceError, conf_server: Option<&str>) {
    let root = d.root();
    let (place, fix) = match e {
        ConfSourceError::CacheRefused { dir, .. } => (
            dir.clone(),
            format!(
                "make {} and its target root's and not writable by group or others (slurmd creates them 0755), or set conf= in the PAM line",
                root.shown(dir)
            ),
        ),
        ConfSourceError::NoConfig { default, .. } => (
            default.clone(),
            match conf_server {
                Some(_) => "slurmd runs configless but has no cache at /run/slurm/conf: restart slurmd, or set conf= in the PAM line".to_owned(),
                None => "install slurm.conf, run slurmd configless (it caches slurm.conf under /run/slurm/conf), or set conf= in the PAM line".to_owned(),
            },
        ),
        ConfSourceError::Conf(_) => (PathBuf::new(), String::new()),
    };
    d.push(
        "slurm-conf",
        Status::Fail,
        Some((place.as_path(), None)),
        format!(
            "{}: the module denies every login with reason=node_setup",
            root.shown_text(&e.to_string())
        ),
        fix,
    );
}
