//! Configless nodes: slurmd fetched slurm.conf from slurmctld
//! (`slurmd --conf-server`, or DNS SRV) and keeps it in its cache, which
//! `/run/slurm/conf` links to. The module reads that cache when
//! /etc/slurm/slurm.conf is absent; this says so, and says what configless
//! does not ship.

use std::fs;
use std::path::Path;

use slurm_node::conf::SlurmConf;
use slurm_node::confsource::{CONFIGLESS_CACHE_DIR, ConfOrigin, DEFAULT_CONF, FoundConf};

use super::findings::Findings;
use crate::report::Status;

const CHECK: &str = "configless";

/// What shows this node to be configless.
#[derive(Debug, Default)]
pub struct Signs {
    /// slurm.conf came from slurmd's cache.
    pub cache: bool,
    /// `--conf-server` on a running slurmd's command line, with its value.
    pub conf_server: Option<String>,
    /// `SlurmctldParameters=enable_configless` in the file read.
    pub enabled_in_conf: bool,
}

impl Signs {
    pub fn any(&self) -> bool {
        self.cache || self.conf_server.is_some() || self.enabled_in_conf
    }
}

/// The `--conf-server` of a slurmd under `proc` (the node's /proc as read
/// here), if one runs with it. Unreadable processes are skipped: they are
/// someone else's, or gone.
pub fn slurmd_conf_server(proc: &Path) -> Option<String> {
    let entries = fs::read_dir(proc).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_slurmd = args
            .first()
            .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|f| f == "slurmd"));
        if !is_slurmd {
            continue;
        }
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            if let Some(value) = arg.strip_prefix("--conf-server=") {
                return Some(value.to_owned());
            }
            if arg == "--conf-server" {
                return Some(it.next().cloned().unwrap_or_default());
            }
        }
    }
    None
}

pub fn signs(found: &FoundConf, conf: Option<&SlurmConf>, conf_server: Option<String>) -> Signs {
    Signs {
        cache: found.origin == ConfOrigin::ConfiglessCache,
        conf_server,
        enabled_in_conf: conf.is_some_and(|c| {
            c.raw.get("slurmctldparameters").is_some_and(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("enable_configless"))
            })
        }),
    }
}

/// Findings for a configless node; nothing for a classic one.
pub fn check(d: &mut Findings<'_>, found: &FoundConf, signs: &Signs) {
    if !signs.any() {
        return;
    }
    let mut why = Vec::new();
    if signs.cache {
        why.push(format!(
            "no {DEFAULT_CONF}, slurmd's cache in {CONFIGLESS_CACHE_DIR}"
        ));
    }
    if let Some(server) = &signs.conf_server {
        why.push(format!("slurmd runs with --conf-server {server}"));
    }
    if signs.enabled_in_conf {
        why.push("SlurmctldParameters has enable_configless".to_owned());
    }
    let place = Some((found.path.as_path(), None));
    if signs.conf_server.is_some() && found.origin == ConfOrigin::Default {
        d.push(
            CHECK,
            Status::Warn,
            place,
            format!(
                "configless node ({}), yet {DEFAULT_CONF} exists: slurmd ignores it, the module reads it, so the two can disagree",
                why.join("; ")
            ),
            format!(
                "remove {DEFAULT_CONF} so the module reads slurmd's cache, or keep it identical to slurmctld's"
            ),
        );
    } else {
        d.ok(
            CHECK,
            place,
            format!(
                "configless node ({}): the module reads {}",
                why.join("; "),
                d.root().shown(&found.path)
            ),
        );
    }
    d.ok(
        CHECK,
        None,
        "configless ships only Slurm's own files (slurm.conf and the Includes beside it, cgroup.conf, namespace.yaml and the like): the PAM line, sshd_config, /etc/slurm/adopt.toml and the hooks' files must come from the node image".to_owned(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_server_is_read_from_slurmds_command_line() {
        let proc = tempfile::tempdir().unwrap();
        let put = |pid: &str, args: &[&str]| {
            let dir = proc.path().join(pid);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cmdline"), args.join("\0") + "\0").unwrap();
        };
        put("self", &["/usr/sbin/slurmd", "--conf-server", "nope"]);
        put("10", &["/usr/bin/sleep", "--conf-server", "nope"]);
        assert_eq!(slurmd_conf_server(proc.path()), None);
        put(
            "11",
            &["/usr/sbin/slurmd", "-D", "--conf-server", "ctl:6817"],
        );
        assert_eq!(slurmd_conf_server(proc.path()).as_deref(), Some("ctl:6817"));
        let proc2 = tempfile::tempdir().unwrap();
        let dir = proc2.path().join("12");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cmdline"), "slurmd\0--conf-server=ctl\0").unwrap();
        assert_eq!(slurmd_conf_server(proc2.path()).as_deref(), Some("ctl"));
    }
}
