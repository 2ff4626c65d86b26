//! slurm.conf: the settings adoption depends on (PrologFlags=Contain,
//! proctrack/cgroup, task/cgroup), the hooks it names, and whether this
//! host is a compute node. Each finding points at the line that sets the
//! value, through Include, from the reader's own provenance.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slurm_node::conf::{ConfError, FileRefusal, MAX_FILE_BYTES, NodeEntry, SlurmConf};
use slurm_node::confsource::{ConfOrigin, FoundConf};
use slurm_node::nodename::{self, NameQuery, NameSource};
use slurm_node::pathglob::{self, Wildcards};

use super::findings::Findings;
use crate::report::Status;

/// Check the node's slurm.conf `found` (a path as read here), for the node
/// named `nodename` or else the one this host (`hostname`) resolves to;
/// returns the config, and the node when it is one, for the checks that
/// need them.
///
/// slurm.conf, its Includes and cgroup.conf are read by the module's own
/// reader, so a file the module refuses (owner, mode, kind, size, a second
/// symlink hop) fails here with the fix.
pub fn checks(
    d: &mut Findings<'_>,
    found: &FoundConf,
    nodename: Option<&str>,
    hostname: Option<&str>,
) -> Option<(SlurmConf, Option<NodeEntry>)> {
    let path = found.path.clone();
    let cached = found.origin == ConfOrigin::ConfiglessCache;
    let loaded = if cached {
        SlurmConf::load_cached(&path)
    } else {
        SlurmConf::load(&path)
    };
    let conf = match loaded {
        Ok(c) => c,
        Err(e) => {
            let (file, line) = conf_error_place(&e, &path);
            let fix = match e.refusal() {
                Some((refused, why)) => refusal_fix(&d.root().shown(refused), why),
                None => "fix slurm.conf (or conf= on the PAM line)".to_owned(),
            };
            d.push(
                "slurm-conf",
                Status::Fail,
                Some((file.as_path(), line)),
                format!(
                    "cannot read slurm.conf: {}: the module denies every login with reason=node_setup",
                    d.root().shown_text(&e.to_string())
                ),
                fix,
            );
            return None;
        }
    };
    config_files_ok(d, &conf, &path);
    let place = |key: &str| {
        conf.origin(key)
            .map(|o| (o.file.clone(), Some(o.line)))
            .unwrap_or((path.clone(), None))
    };

    let (f, l) = place("PrologFlags");
    if conf.has_prolog_flag("contain") {
        d.ok(
            "prolog-flags",
            Some((&f, l)),
            "PrologFlags has Contain: every job gets an extern step".to_owned(),
        );
    } else {
        d.push(
            "prolog-flags",
            Status::Fail,
            Some((&f, l)),
            "PrologFlags lacks Contain: jobs get no extern step, so every login is denied",
            "add Contain to PrologFlags, restart slurmctld and every slurmd, and let jobs started before drain",
        );
    }

    let (f, l) = place("ProctrackType");
    let proctrack = conf.proctrack_type.clone().unwrap_or_default();
    if proctrack.eq_ignore_ascii_case("proctrack/cgroup") {
        d.ok(
            "proctrack",
            Some((&f, l)),
            "ProctrackType=proctrack/cgroup".to_owned(),
        );
    } else {
        let shown = if proctrack.is_empty() {
            "unset"
        } else {
            &proctrack
        };
        d.push(
            "proctrack",
            Status::Fail,
            Some((&f, l)),
            format!(
                "ProctrackType is {shown}: adopted logins are not tracked or killed with the job"
            ),
            "set ProctrackType=proctrack/cgroup and restart the Slurm daemons",
        );
    }

    let (f, l) = place("TaskPlugin");
    if conf
        .task_plugin
        .iter()
        .any(|t| t.eq_ignore_ascii_case("task/cgroup"))
    {
        d.ok(
            "task-plugin",
            Some((&f, l)),
            format!("TaskPlugin={}", conf.task_plugin.join(",")),
        );
    } else {
        d.push(
            "task-plugin",
            Status::Fail,
            Some((&f, l)),
            "TaskPlugin lacks task/cgroup: adopted logins are not held to the job's CPUs and memory",
            "add task/cgroup to TaskPlugin and restart the Slurm daemons",
        );
    }

    hook_checks(d, &conf, &path);
    let node = node_check(d, &conf, &path, nodename, hostname, cached);
    Some((conf, node))
}

/// The files the reader accepted, for the record.
fn config_files_ok(d: &mut Findings<'_>, conf: &SlurmConf, path: &Path) {
    let mut included: Vec<&Path> = Vec::new();
    for s in conf.provenance.iter() {
        let f = s.origin.file.as_path();
        if f != path && !included.contains(&f) {
            included.push(f);
        }
    }
    let cgroup = match &conf.cgroup.path {
        Some(p) => format!(", {}", d.root().shown(p)),
        None => String::new(),
    };
    d.ok(
        "slurm-conf",
        Some((path, None)),
        format!(
            "slurm.conf, {} included file(s){cgroup} pass the module's open rules (regular file or /dev/null, root's, not world-writable, at most {MAX_FILE_BYTES} bytes, one symlink hop)",
            included.len()
        ),
    );
}

/// What makes the reader accept `file` (as the node names it).
fn refusal_fix(file: &str, why: &FileRefusal) -> String {
    match why {
        FileRefusal::LinkOwner { .. } => {
            format!("chown -h root {file}: the module follows only a root-owned link")
        }
        FileRefusal::LinkToLink { .. } => {
            format!("point the link straight at the file: ln -sfn \"$(readlink -f {file})\" {file}")
        }
        FileRefusal::NotRegular { .. } => {
            format!("make {file} a regular file (the module reads nothing else but /dev/null)")
        }
        FileRefusal::Owner { .. } => format!("chown root {file}"),
        FileRefusal::Writable { .. } => format!("chmod o-w {file}"),
        FileRefusal::GroupWritable { .. } => format!("chmod go-w {file}"),
        FileRefusal::TooLarge { limit, .. } => {
            format!("shrink {file} below {limit} bytes (split it with Include)")
        }
    }
}

fn conf_error_place(e: &ConfError, path: &Path) -> (PathBuf, Option<usize>) {
    match e {
        ConfError::Read { path, .. } => (path.clone(), None),
        ConfError::Syntax { path, line, .. }
        | ConfError::Include { path, line, .. }
        | ConfError::IncludeLoop { path, line, .. }
        | ConfError::IncludeDepth { path, line, .. } => (path.clone(), Some(*line)),
        #[allow(unreachable_patterns)]
        _ => (path.to_owned(), None),
    }
}

fn hook_checks(d: &mut Findings<'_>, conf: &SlurmConf, conf_path: &Path) {
    let mut hooks: Vec<(&str, String)> = Vec::new();
    hooks.extend(conf.prologs.iter().map(|p| ("Prolog", p.clone())));
    hooks.extend(conf.epilogs.iter().map(|p| ("Epilog", p.clone())));
    hooks.extend(conf.task_prolog.iter().map(|p| ("TaskProlog", p.clone())));
    if hooks.is_empty() {
        d.ok(
            "hooks",
            Some((conf_path, None)),
            "no Prolog, Epilog or TaskProlog configured".to_owned(),
        );
    }
    for (key, value) in hooks {
        let (file, line) = conf
            .provenance
            .all(key)
            .rev()
            .find(|s| s.value == value)
            .map(|s| (s.origin.file.clone(), Some(s.origin.line)))
            .unwrap_or((conf_path.to_owned(), None));
        let place = Some((file.as_path(), line));
        if !value.starts_with('/') {
            d.push(
                "hooks",
                Status::Fail,
                place,
                format!("{key}={value} is not an absolute path"),
                format!("give {key} an absolute path"),
            );
            continue;
        }
        let node_path = PathBuf::from(&value);
        let targets = if value.contains('*') {
            // A directory that cannot be read matches nothing, which is
            // what this finding reports.
            let found =
                pathglob::expand(&d.root().host(&node_path), Wildcards::Star).unwrap_or_default();
            if found.is_empty() {
                d.push(
                    "hooks",
                    Status::Warn,
                    place,
                    format!("{key}={value} matches no file"),
                    format!("install the scripts {key} names, or remove the line"),
                );
            }
            found
        } else {
            vec![d.root().host(&node_path)]
        };
        for target in targets {
            let shown = d.root().shown(&target);
            match fs::metadata(&target) {
                Err(_) if d.root().lacks_tree_of(&node_path) => d.push(
                    "hooks",
                    Status::Warn,
                    place,
                    format!("{key} {shown} is outside the --root copy and was not checked"),
                    format!("copy {shown} too, or run doctor on the node"),
                ),
                Err(e) => d.push(
                    "hooks",
                    Status::Fail,
                    place,
                    format!("{key} {shown}: {e}: slurmd fails the job on this node and drains it"),
                    format!("install {shown} (the slurm-adopt package puts its hooks in /usr/libexec/slurm-adopt/) or fix the {key} line"),
                ),
                Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => d.push(
                    "hooks",
                    Status::Fail,
                    place,
                    format!("{key} {shown} is not an executable file: slurmd fails the job on this node and drains it"),
                    format!("chmod 0755 {shown}"),
                ),
                Ok(_) => d.ok("hooks", place, format!("{key} {shown} is executable")),
            }
        }
    }
}

fn node_check(
    d: &mut Findings<'_>,
    conf: &SlurmConf,
    path: &Path,
    nodename: Option<&str>,
    hostname: Option<&str>,
    configless: bool,
) -> Option<NodeEntry> {
    if let Some(n) = nodename {
        if let Some(entry) = conf.node(n) {
            return Some(listed(d, conf, path, &format!("node name {n}"), entry));
        }
        if configless {
            d.ok(
                "login-node",
                Some((path, None)),
                format!("node name {n} is in no NodeName line: a dynamic node (slurmd -Z), as the module takes it"),
            );
            return Some(conf.node_or_unlisted(n));
        }
        not_a_node(d, path, &format!("node name {n}"), None);
        return None;
    }
    let Some(host) = hostname else {
        d.push(
            "login-node",
            Status::Warn,
            Some((path, None)),
            "cannot tell which node this is: no host name",
            "give --nodename or --hostname",
        );
        return None;
    };
    let query = NameQuery {
        given: None,
        hostname: host,
        host_name_fallback: configless,
        root: d.root().dir(),
    };
    let asked = format!("host {host}");
    match nodename::choose(conf, &query) {
        Ok(choice) if choice.source == NameSource::Listed => {
            Some(listed(d, conf, path, &asked, &choice.node))
        }
        Ok(choice) => {
            d.ok(
                "login-node",
                Some((path, None)),
                format!(
                    "{asked} is in no NodeName line; the module takes it for a dynamic node: {}",
                    d.root().shown_text(&choice.describe())
                ),
            );
            Some(choice.node)
        }
        Err(nodename::NodeNameError::Unlisted { .. }) => {
            not_a_node(d, path, &asked, None);
            None
        }
        Err(e) => {
            not_a_node(d, path, &asked, Some(d.root().shown_text(&e.to_string())));
            None
        }
    }
}

/// `entry` is a NodeName line's node.
fn listed(
    d: &mut Findings<'_>,
    conf: &SlurmConf,
    path: &Path,
    asked: &str,
    entry: &NodeEntry,
) -> NodeEntry {
    // The NodeName line that names it, for the reader.
    let (file, line) = match conf.node_origin(&entry.name) {
        Some(o) => (o.file.as_path(), Some(o.line)),
        None => (path, None),
    };
    d.ok(
        "login-node",
        Some((file, line)),
        format!("{asked} is compute node {} in slurm.conf", entry.name),
    );
    entry.clone()
}

fn not_a_node(d: &mut Findings<'_>, path: &Path, asked: &str, why: Option<String>) {
    let message = match why {
        Some(why) => format!("{why}: pam_adopt would deny everyone"),
        None => {
            format!("{asked} is not a compute node in slurm.conf; pam_adopt would deny everyone")
        }
    };
    d.push(
        "login-node",
        Status::Fail,
        Some((path, None)),
        message,
        "do not enable the module on login nodes; on a compute node add nodename=<NodeName> to the PAM line",
    );
}
