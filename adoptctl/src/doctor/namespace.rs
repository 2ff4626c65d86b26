//! namespace/linux (Slurm 25.11 and later): its settings live in
//! namespace.yaml, in the directory slurm.conf came from (slurmd's cache on
//! a configless node, which ships the file), not in job_container.conf.
//! Without the file slurmd cannot load the plugin; a file others can write
//! lets them choose the scripts slurmd runs as root in every job. A login
//! the module puts in the job also joins the job's namespaces
//! (`join_container`), which an enforcing SELinux node allows only with
//! the pam_adopt_ns policy module, and a user namespace only with its
//! boolean on. The same SELinux rule holds for job_container/tmpfs
//! (namespace/tmpfs from 25.11), whose file slurmd judges itself.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use adopt_login::options::Options;
use slurm_node::conf::SlurmConf;

use super::findings::Findings;
use super::selinux;
use crate::report::Status;

const CHECK: &str = "namespace";
const PLUGIN: &str = "namespace/linux";
/// The plugins that give a job a private /tmp in a mount namespace of the
/// initial user namespace: job_container/tmpfs, and its 25.11 name.
const TMPFS_PLUGINS: [&str; 2] = ["job_container/tmpfs", "namespace/tmpfs"];
const FILE: &str = "namespace.yaml";
/// What is read of namespace.yaml to look for CLONE_NEWUSER: far more than
/// any real one holds.
const READ_CAP: u64 = 1 << 20;
const NS_POLICY: &str = "pam_adopt_ns";
const USERNS_BOOLEAN: &str = "pam_adopt_join_userns";

/// Findings for a node whose slurm.conf selects namespace/linux; nothing
/// otherwise. `opts` are the module's options from the PAM line, if any.
pub fn check(d: &mut Findings<'_>, conf: &SlurmConf, opts: Option<&Options>) {
    let plugin = conf.job_container_type.as_deref().unwrap_or("");
    let join = opts.is_none_or(|o| o.join_container);
    if TMPFS_PLUGINS.iter().any(|p| plugin.eq_ignore_ascii_case(p)) {
        // The tmpfs plugins read job_container.conf, which slurmd itself
        // judges; what only doctor can see is that an enforcing node will
        // refuse the setns the login needs. Silent when not enforcing.
        if join && selinux::enforcing(d.root()) {
            selinux_checks(d, plugin, None);
        }
        return;
    }
    if !plugin.eq_ignore_ascii_case(PLUGIN) {
        return;
    }
    let dir = conf.path.parent().unwrap_or(Path::new("/"));
    let yaml = dir.join(FILE);
    let Some(text) = file_check(d, conf, dir, &yaml) else {
        return;
    };
    if !join {
        d.ok(
            CHECK,
            None,
            "join_container=false: adopted logins keep the node's /tmp, /dev/shm, PID and user namespaces, not the job's".to_owned(),
        );
        return;
    }
    let wants_userns = asks_for_user_namespace(&text);
    d.ok(
        CHECK,
        None,
        format!(
            "join_container: adopted logins setns into the job's namespaces (mount{})",
            if wants_userns {
                ", and PID and user where clone_ns_flags asks"
            } else {
                ", and PID where clone_ns_flags asks"
            }
        ),
    );
    selinux_checks(d, PLUGIN, wants_userns.then_some(yaml.as_path()));
}

/// namespace.yaml beside slurm.conf, root's (or the reader's) and not
/// writable by others; returns its text (capped) when it may be judged.
fn file_check(d: &mut Findings<'_>, conf: &SlurmConf, dir: &Path, yaml: &Path) -> Option<String> {
    let set_at = conf
        .origin("NamespaceType")
        .map(|o| (o.file.clone(), Some(o.line)))
        .unwrap_or((conf.path.clone(), None));
    let shown = d.root().shown(yaml);
    let meta = match fs::metadata(yaml) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let old = dir.join("job_container.conf");
            let fix = if old.exists() {
                format!(
                    "move {}'s settings into {shown} (namespace/linux reads only namespace.yaml since 25.11; its keys are lower-case, e.g. base_path, dirs), and restart slurmd",
                    d.root().shown(&old)
                )
            } else {
                format!(
                    "write {shown} (at least `defaults:` with a base_path) beside slurm.conf, on slurmctld's host for configless nodes, and restart slurmd"
                )
            };
            d.push(
                CHECK,
                Status::Fail,
                Some((set_at.0.as_path(), set_at.1)),
                format!(
                    "NamespaceType={PLUGIN} but there is no {shown}: slurmd cannot load the plugin, so no job starts on this node and every login is denied"
                ),
                fix,
            );
            return None;
        }
        Err(e) => {
            d.push(
                CHECK,
                Status::Fail,
                Some((yaml, None)),
                format!("cannot stat {shown}: {e}"),
                format!("make {shown} readable by root"),
            );
            return None;
        }
    };
    let reader = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != reader {
        d.push(
            CHECK,
            Status::Fail,
            Some((yaml, None)),
            format!(
                "{shown} is owned by uid {}: that user can choose the scripts slurmd runs as root in every job (init_script, clone_ns_script)",
                meta.uid()
            ),
            format!("chown root {shown}"),
        );
        return None;
    }
    if mode & 0o002 != 0 {
        d.push(
            CHECK,
            Status::Fail,
            Some((yaml, None)),
            format!(
                "{shown} has mode {mode:04o}: anyone can choose the scripts slurmd runs as root in every job (init_script, clone_ns_script)"
            ),
            format!("chmod o-w {shown}"),
        );
        return None;
    }
    let text = read_capped(yaml).unwrap_or_default();
    d.ok(
        CHECK,
        Some((yaml, None)),
        format!(
            "NamespaceType={PLUGIN}: {shown} is beside slurm.conf, uid {}, mode {mode:04o}",
            meta.uid()
        ),
    );
    Some(text)
}

fn read_capped(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    fs::File::open(path)?
        .take(READ_CAP)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Whether any clone_ns_flags (in defaults or a node_confs entry) names
/// CLONE_NEWUSER, comments aside. Per-node entries are not matched to this
/// node: a node that might get a user namespace is judged as one that does.
fn asks_for_user_namespace(yaml: &str) -> bool {
    yaml.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|l| l.to_ascii_uppercase().contains("CLONE_NEWUSER"))
}

/// An enforcing node must let sshd take the job's namespace fds and setns
/// (pam_adopt_ns), and join a user namespace only with its boolean on.
/// `userns_from` is the file that asks for a user namespace, if one does.
fn selinux_checks(d: &mut Findings<'_>, plugin: &str, userns_from: Option<&Path>) {
    let root = d.root();
    if !selinux::enforcing(root) {
        return;
    }
    if !selinux::module_loaded(root, NS_POLICY) {
        // A failure, not a warning: with the default action_adopt_failure
        // every user with a job on this node is refused.
        d.push(
            CHECK,
            Status::Fail,
            None,
            format!(
                "{plugin} with join_container on, SELinux enforcing and the {NS_POLICY} policy module not loaded: sshd may not take the job's namespace fds or setns, so adoption fails and the login follows action_adopt_failure (deny by default)"
            ),
            format!(
                "semodule -i /usr/share/selinux/packages/slurm-adopt/{NS_POLICY}.pp, or join_container=false on the PAM line"
            ),
        );
        return;
    }
    let boolean_off = selinux::boolean(root, USERNS_BOOLEAN) != Some(true);
    if let Some(yaml) = userns_from.filter(|_| boolean_off) {
        d.push(
            CHECK,
            Status::Fail,
            Some((yaml, None)),
            format!(
                "clone_ns_flags asks for CLONE_NEWUSER and the SELinux boolean {USERNS_BOOLEAN} is off: joining the job's user namespace is denied, and the login follows action_adopt_failure (deny by default)"
            ),
            format!("setsebool -P {USERNS_BOOLEAN} on"),
        );
        return;
    }
    d.ok(
        CHECK,
        None,
        format!(
            "SELinux is enforcing and {NS_POLICY} is loaded{}",
            if userns_from.is_some() {
                format!(", with {USERNS_BOOLEAN} on")
            } else {
                String::new()
            }
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespace_is_found_in_clone_ns_flags_but_not_in_comments() {
        let asks = "defaults:\n  base_path: /var/ns\n  clone_ns_flags:\n    - \"CLONE_NEWPID\"\n    - \"clone_newuser\"\n";
        assert!(asks_for_user_namespace(asks));
        let commented = "defaults:\n  base_path: /var/ns\n  # clone_ns_flags: [CLONE_NEWUSER]\n  clone_ns_flags:\n    - CLONE_NEWPID\n";
        assert!(!asks_for_user_namespace(commented));
        assert!(!asks_for_user_namespace(""));
    }
}
