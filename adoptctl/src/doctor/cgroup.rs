//! The cgroup mode of the node against cgroup.conf's CgroupPlugin: a
//! mismatch keeps slurmd's cgroup plugin, and with it adoption, from
//! working.

use std::path::{Path, PathBuf};

use slurm_node::cgroup::{CgroupFs, CgroupMode};
use slurm_node::conf::SlurmConf;

use super::findings::Findings;
use crate::report::Status;

/// Check the node's cgroup mode against cgroup.conf's CgroupPlugin.
pub fn check(d: &mut Findings<'_>, conf: &SlurmConf) {
    let own = d.root().host(Path::new("/proc/self/mountinfo"));
    let (mountinfo, which) = if d.root().is_set() && own.is_file() {
        (own, "from the --root copy's /proc/self/mountinfo")
    } else if d.root().is_set() {
        (
            PathBuf::from("/proc/self/mountinfo"),
            "of the running kernel (no proc/self/mountinfo under --root)",
        )
    } else {
        (
            PathBuf::from("/proc/self/mountinfo"),
            "of the running kernel",
        )
    };
    let cgroup_conf = conf.cgroup.path.clone();
    let mode = match CgroupFs::detect(&conf.cgroup.mountpoint, &mountinfo) {
        Ok(fs) => fs.mode(),
        Err(e) => {
            d.push(
                "cgroup-mode",
                Status::Fail,
                None,
                format!("cgroup mode {which}: {e}"),
                "mount cgroups (v2 at /sys/fs/cgroup, or v1 per controller) or fix CgroupMountpoint",
            );
            return;
        }
    };
    let mode_text = match mode {
        CgroupMode::Unified => "cgroup v2 (unified)",
        CgroupMode::Hybrid => "hybrid (v1 controllers, v2 at unified/)",
        CgroupMode::Legacy => "cgroup v1 (legacy)",
    };
    let plugin = conf
        .cgroup
        .plugin
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let clash = match plugin.as_str() {
        "cgroup/v2" => mode != CgroupMode::Unified,
        "cgroup/v1" => mode == CgroupMode::Unified,
        _ => false,
    };
    let place_line =
        cgroup_conf
            .as_ref()
            .map(|p| match conf.cgroup.provenance.last("CgroupPlugin") {
                Some(s) => (s.origin.file.clone(), Some(s.origin.line)),
                None => (p.clone(), None),
            });
    let place = place_line.as_ref().map(|(p, l)| (p.as_path(), *l));
    if clash {
        d.push(
            "cgroup-mode",
            Status::Fail,
            place,
            format!("CgroupPlugin={plugin} but the mode {which} is {mode_text}: slurmd will not start its cgroup plugin"),
            "set CgroupPlugin=autodetect (or the plugin matching the kernel's mode)",
        );
    } else {
        d.ok("cgroup-mode", place, format!("{mode_text}, {which}"));
    }
}
