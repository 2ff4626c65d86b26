//! SlurmdSpoolDir, judged by the module's own code: the directory is opened
//! and checked by `slurm_node::spool` exactly as a login does (owner, mode,
//! one root-owned symlink hop with a root-owned chain to its target), so
//! whatever the module would refuse with `reason=spool`, this fails, with
//! the command that fixes it.

use std::fs;
use std::path::Path;

use slurm_node::conf::{NodeEntry, SlurmConf};
use slurm_node::spool::{self, LinkProblem, SpoolError};

use super::findings::Findings;
use crate::report::Status;

const CHECK: &str = "spool-dir";

/// Check the spool directory of `node` as the module would open it.
pub fn check(d: &mut Findings<'_>, conf: &SlurmConf, node: &NodeEntry) {
    let node_dir = conf.spool_dir(node);
    let host_dir = d.root().host(&node_dir);
    let (file, line) = conf
        .origin("SlurmdSpoolDir")
        .map_or((conf.path.clone(), None), |o| {
            (o.file.clone(), Some(o.line))
        });
    let place = Some((file.as_path(), line));
    let trusted = spool::trusted_owners(&conf.slurm_user);
    let opened = if d.root().is_set() {
        spool::open_spool_dir_under(d.root().dir(), &host_dir, &trusted)
    } else {
        spool::open_spool_dir(&host_dir, &trusted)
    };
    let shown = node_dir.display().to_string();
    let refused = |d: &mut Findings<'_>, e: &SpoolError| {
        let message = format!(
            "{}: the module denies every login with reason=spool",
            d.root().shown_text(&e.to_string())
        );
        let fix = fix(d, e);
        d.push(CHECK, Status::Fail, place, message, fix);
    };
    let dir = match opened {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            missing(d, &node_dir, &host_dir, place);
            return;
        }
        Err(e) => {
            refused(d, &e);
            return;
        }
    };
    let described = match &dir.target {
        Some(t) => format!("{shown} -> {}", d.root().shown(t)),
        None => shown.clone(),
    };
    let (uid, mode) = (dir.owner_uid, dir.mode);
    match spool::list_open_steps(dir, &node.name, &trusted) {
        Err(e) => refused(d, &e),
        Ok(listing) => {
            for (path, reason) in &listing.skipped {
                d.push(
                    CHECK,
                    Status::Warn,
                    place,
                    format!(
                        "{} {reason}: the module skips it, so that job's logins are denied",
                        d.root().shown(path)
                    ),
                    "step sockets are made by slurmstepd as root (or SlurmUser); remove what something else put there",
                );
            }
            d.ok(
                CHECK,
                place,
                format!(
                    "SlurmdSpoolDir {described} (uid {uid}, mode {mode:04o}) passes the module's checks; {} step socket(s) of node {}",
                    listing.steps.len(),
                    node.name
                ),
            );
        }
    }
}

/// No directory: the module finds no jobs and denies everyone, as
/// pam_slurm_adopt does; not a refusal, but never right on a node where
/// slurmd runs.
fn missing(
    d: &mut Findings<'_>,
    node_dir: &Path,
    host_dir: &Path,
    place: super::findings::Place<'_>,
) {
    let shown = node_dir.display();
    if d.root().lacks_tree_of(node_dir) {
        d.push(
            CHECK,
            Status::Warn,
            place,
            format!("SlurmdSpoolDir {shown} is outside the --root copy and was not checked"),
            format!("copy {shown} too, or run doctor on the node"),
        );
        return;
    }
    let what = match fs::symlink_metadata(host_dir) {
        Ok(m) if m.file_type().is_symlink() => match fs::read_link(host_dir) {
            Ok(t) => format!(
                "is a symbolic link to {}, which does not exist",
                t.display()
            ),
            Err(_) => "is a symbolic link that cannot be read".to_owned(),
        },
        _ => "does not exist".to_owned(),
    };
    d.push(
        CHECK,
        Status::Warn,
        place,
        format!(
            "SlurmdSpoolDir {shown} {what}: the module finds no jobs here and denies every login"
        ),
        "start slurmd (it makes the directory), or set SlurmdSpoolDir to the directory slurmd uses",
    );
}

/// The command, or the change, that makes the module accept the spool.
fn fix(d: &Findings<'_>, e: &SpoolError) -> String {
    let shown = |p: &Path| d.root().shown(p);
    match e {
        SpoolError::Open { path, .. } | SpoolError::Read { path, .. } => {
            format!("make {} a directory root can read", shown(path))
        }
        SpoolError::NotADirectory { path } => format!(
            "point SlurmdSpoolDir at slurmd's spool directory ({} is not one)",
            shown(path)
        ),
        SpoolError::UntrustedOwner { path, .. } => {
            format!("chown root {} (or SlurmUser)", shown(path))
        }
        SpoolError::Writable { path, .. } => format!("chmod go-w {}", shown(path)),
        SpoolError::LinkOwner { path, .. } => format!(
            "chown -h root {}: the module follows only a root-owned link",
            shown(path)
        ),
        SpoolError::LinkTarget {
            path, dir, problem, ..
        } => {
            let (link, dir) = (shown(path), shown(dir));
            match problem {
                LinkProblem::NotRootOwned { .. } => format!(
                    "chown root {dir}: every directory from / to the symlink's target must be root's"
                ),
                LinkProblem::UntrustedOwner { .. } => {
                    format!("make the symlink's target root-owned: chown root {dir}")
                }
                LinkProblem::Writable { mode } if mode & 0o1002 == 0o1002 => format!(
                    "move the symlink's target out of {dir}: a sticky, world-writable directory (like /tmp) lets others replace what is in it"
                ),
                LinkProblem::Writable { .. } => format!("chmod go-w {dir}"),
                LinkProblem::NotADirectory => {
                    format!("point {link} at a directory ({dir} is not one)")
                }
                LinkProblem::Symlink => format!(
                    "point {link} straight at the real directory (ln -sfn \"$(readlink -f {link})\" {link}): {dir} is a link too"
                ),
                LinkProblem::Open(_) => format!("make {dir} a directory root can read"),
                LinkProblem::OutsideRoot => {
                    format!("copy the target of {link} into the --root copy too")
                }
            }
        }
    }
}
