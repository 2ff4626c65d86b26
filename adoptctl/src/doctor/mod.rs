//! `adoptctl doctor`: the configuration mistakes that make pam_adopt (or
//! pam_slurm_adopt) deny everyone, let everyone in unconfined, or let
//! logins escape their job, each reported with the file and line to edit.
//!
//! Everything is read, nothing is changed. With `--root DIR` every path is
//! taken under DIR, so a copy of a node's files can be reviewed elsewhere.
//!
//! Checks are grouped by domain, one file each: `pam` (account and session
//! stacks), `sshd`, `slurm` (slurm.conf and its hooks), `spool`
//! (SlurmdSpoolDir), `cgroup` and `selinux`. Where the module has a rule
//! (how config files are opened, what spool directory it accepts), doctor
//! calls the module's own code rather than a copy of the rule, so the two
//! cannot disagree. They share only `findings`, the collector; this file wires
//! them together and nothing imports it back.

mod cgroup;
mod findings;
mod pam;
mod selinux;
mod slurm;
mod spool;
mod sshd;

use std::path::{Path, PathBuf};

use adopt_login::options::{DEFAULT_CONF, Options};

use crate::report::Finding;
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
    let conf_path = module_opts
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_CONF), |o: &Options| o.conf.clone());
    let nodename = args
        .nodename
        .clone()
        .or_else(|| module_opts.as_ref().and_then(|o| o.nodename.clone()));
    let loaded = slurm::checks(
        &mut d,
        &conf_path,
        nodename.as_deref(),
        args.hostname.as_deref(),
    );
    if let Some((conf, node)) = loaded {
        if let Some(node) = node {
            spool::check(&mut d, &conf, &node);
        }
        cgroup::check(&mut d, &conf);
    }
    selinux::check(&mut d);
    d.into_vec()
}
