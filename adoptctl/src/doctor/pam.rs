//! The PAM service file: the account stack (is the module there, loadable,
//! `required`, last, not skipped, not failing open) and the session stack
//! (pam_systemd moving logins out of the job).

use std::path::{Path, PathBuf};

use adopt_login::options::{AdoptFailureAction, GenericFailureAction, Options};
use slurm_node::select::{NoJobsAction, UnknownAction};

use super::findings::{Findings, Place};
use crate::pamstack::{self, Control, Entry, Stacks};
use crate::report::Status;
use crate::root::Root;

/// Our module and Debian's/SchedMD's, either of which may be in use.
const OURS: &str = "pam_adopt.so";
const THEIRS: &str = "pam_slurm_adopt.so";

/// Check the PAM file `pam_path` (as read here) of `service`; returns the
/// module's options when the account stack has the module, for the Slurm
/// checks (`conf=`, `nodename=`). `network_fs` are node paths to treat as
/// network filesystems.
pub fn checks(
    d: &mut Findings<'_>,
    service: &str,
    pam_path: &Path,
    network_fs: &[PathBuf],
) -> Option<Options> {
    if !pam_path.is_file() {
        d.push(
            "pam-service",
            Status::Fail,
            Some((pam_path, None)),
            format!("no PAM file for service '{service}': PAM falls back to /etc/pam.d/other"),
            format!(
                "create /etc/pam.d/{service} with pam_adopt.so last in its account stack, or give --pam-service"
            ),
        );
        return None;
    }
    let stacks = pamstack::read(d.root(), pam_path);
    for p in &stacks.problems {
        d.push(
            "pam-syntax",
            Status::Fail,
            Some((p.file.as_path(), Some(p.line))),
            p.message.clone(),
            "fix or remove this line; `pamtester` or a test login shows what PAM makes of it",
        );
    }
    let module_opts = account_checks(d, &stacks, pam_path, service, network_fs);
    session_checks(d, &stacks);
    module_opts
}

fn at(e: &Entry) -> Place<'_> {
    Some((e.file.as_path(), Some(e.line)))
}

/// `FILE:LINE` of `e` as the node names it, for messages.
fn written_at(d: &Findings<'_>, e: &Entry) -> String {
    format!("{}:{}", d.root().shown(&e.file), e.line)
}

fn is_adopt_module(e: &Entry) -> bool {
    e.name() == OURS || e.name() == THEIRS
}

fn is_bypass_module(e: &Entry) -> bool {
    matches!(e.name(), "pam_access.so" | "pam_listfile.so")
}

/// Whether `e` at `index` can end the account stack with success, or jump
/// past `target`, so the module at `target` never runs.
fn skips_to_success(e: &Entry, index: usize, target: usize) -> Option<String> {
    if e.in_substack {
        // done/sufficient end only the substack.
        return None;
    }
    match &e.control {
        Control::Sufficient => Some("is sufficient: when it succeeds the stack ends".to_owned()),
        Control::Actions(_) => {
            for value in ["success", "default"] {
                match e.control.action(value) {
                    Some("done") => {
                        return Some(format!("has {value}=done: the stack ends there"));
                    }
                    Some(n) => {
                        if let Ok(n) = n.parse::<usize>() {
                            if index + n >= target {
                                return Some(format!("jumps {value}={n} past it"));
                            }
                        }
                    }
                    None => {}
                }
            }
            None
        }
        _ => None,
    }
}

/// `usr` for `/usr/lib/...`.
fn top_dir(node_path: &Path) -> String {
    node_path
        .strip_prefix("/")
        .unwrap_or(node_path)
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Debian's multiarch directory, where a module is expected first.
fn first_security_dir() -> PathBuf {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    PathBuf::from(format!("/usr/lib/{triplet}/security"))
}

fn security_dirs() -> Vec<PathBuf> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    vec![
        first_security_dir(),
        PathBuf::from(format!("/lib/{triplet}/security")),
        PathBuf::from("/usr/lib64/security"),
        PathBuf::from("/lib64/security"),
        PathBuf::from("/usr/lib/security"),
        PathBuf::from("/lib/security"),
    ]
}

/// The node path of the module file PAM would load, if it exists.
fn module_file(root: &Root, module: &str) -> Option<PathBuf> {
    if module.starts_with('/') {
        let p = PathBuf::from(module);
        return root.host(&p).is_file().then_some(p);
    }
    security_dirs()
        .into_iter()
        .map(|d| d.join(module))
        .find(|p| root.host(p).is_file())
}

fn account_checks(
    d: &mut Findings<'_>,
    stacks: &Stacks,
    pam_path: &Path,
    service: &str,
    network_fs: &[PathBuf],
) -> Option<Options> {
    let account = stacks.of("account");
    let Some((index, module)) = account
        .iter()
        .copied()
        .enumerate()
        .find(|(_, e)| is_adopt_module(e))
    else {
        d.push(
            "account-module",
            Status::Fail,
            Some((pam_path, None)),
            format!("neither {OURS} nor {THEIRS} is in the account stack of '{service}': logins are not held to jobs"),
            format!("add `-account required {OURS}` as the last account line of /etc/pam.d/{service}"),
        );
        return None;
    };
    let name = module.name().to_owned();
    d.ok(
        "account-module",
        at(module),
        format!("{name} is in the account stack"),
    );
    for other in account
        .iter()
        .skip(index + 1)
        .filter(|e| is_adopt_module(e))
    {
        let msg = format!(
            "{} appears again in the account stack (first at {})",
            other.name(),
            written_at(d, module)
        );
        d.push(
            "account-module",
            Status::Warn,
            at(other),
            msg,
            "keep a single line for the module",
        );
    }

    // The module file itself, and where it lives.
    let module_node_path = if module.module.starts_with('/') {
        PathBuf::from(&module.module)
    } else {
        first_security_dir().join(&module.module)
    };
    match module_file(d.root(), &module.module) {
        None if d.root().lacks_tree_of(&module_node_path) => d.push(
            "module-installed",
            Status::Warn,
            at(module),
            format!(
                "the --root copy has no /{}: whether {} is installed was not checked",
                top_dir(&module_node_path),
                module.module
            ),
            "copy the node's /usr/lib/<triplet>/security too, or run doctor on the node",
        ),
        None => {
            let what = if module.dash {
                "is skipped because of the `-` prefix, so every login is let in unconfined"
            } else {
                "cannot be loaded, so every login fails"
            };
            d.push(
                "module-installed",
                Status::Fail,
                at(module),
                format!(
                    "{} is not installed in any PAM security directory: the line {what}",
                    module.module
                ),
                "install the slurm-adopt package (or the .so) on a local filesystem",
            );
        }
        Some(file) => {
            d.ok(
                "module-installed",
                at(module),
                format!("{} loads {}", module.module, file.display()),
            );
            shared_fs_check(d, module, &file, network_fs);
        }
    }

    // Control: optional or sufficient turns a denial into nothing.
    match &module.control {
        Control::Required | Control::Requisite => {}
        Control::Actions(_)
            if !matches!(
                module.control.action("perm_denied"),
                Some("ok" | "ignore" | "done")
            ) => {}
        c => {
            let text = c.text();
            d.push(
                "account-control",
                Status::Fail,
                at(module),
                format!("{name} is `{text}`: its denial does not deny the login"),
                format!("use `required` for {name}"),
            );
        }
    }

    // Last in the stack; pam_permit after it cannot change the outcome.
    let after: Vec<&&Entry> = account
        .iter()
        .skip(index + 1)
        .filter(|e| !is_adopt_module(e) && e.name() != "pam_permit.so")
        .collect();
    if let Some(first) = after.first() {
        let msg = format!(
            "{name} is not last in the account stack: {} ({}) runs after it",
            first.name(),
            written_at(d, first)
        );
        d.push(
            "account-last",
            Status::Fail,
            at(module),
            msg,
            format!("move the {name} line below every other account line (includes count)"),
        );
    } else {
        d.ok(
            "account-last",
            at(module),
            format!("{name} is last in the account stack"),
        );
    }

    // Anything before it that ends the stack with success.
    let mut short = false;
    for (i, e) in account.iter().enumerate().take(index) {
        if is_bypass_module(e) {
            continue;
        }
        if let Some(why) = skips_to_success(e, i, index) {
            short = true;
            if e.name() == "pam_succeed_if.so" {
                // RHEL's system-auth lets system accounts (uid < 1000) through
                // this way: a narrow, usually intended bypass.
                let msg = format!(
                    "`account {} pam_succeed_if.so {}` {why}: users matching it skip {name} and are not adopted",
                    e.control.text(),
                    e.args.join(" ")
                );
                d.push(
                    "account-short-circuit",
                    Status::Warn,
                    at(e),
                    msg,
                    "make sure its condition matches only system accounts, never cluster users",
                );
                continue;
            }
            let msg = format!(
                "`account {} {}` {why}, before {name} runs: those logins are not held to a job",
                e.control.text(),
                e.name()
            );
            d.push(
                "account-short-circuit",
                Status::Fail,
                at(e),
                msg,
                "comment out this line or make it `required` (authconfig/pam-auth-update may regenerate it)",
            );
        }
    }
    if !short {
        d.ok(
            "account-short-circuit",
            at(module),
            format!("nothing before {name} ends the account stack early"),
        );
    }

    bypass_checks(d, &account, index, module);
    Some(option_checks(d, module, service))
}

/// pam_access / pam_listfile as an admin bypass: it works only before the
/// module and only when its success ends the stack.
fn bypass_checks(d: &mut Findings<'_>, account: &[&Entry], index: usize, module: &Entry) {
    let name = module.name().to_owned();
    let mut any = false;
    for (i, e) in account.iter().enumerate() {
        if !is_bypass_module(e) {
            continue;
        }
        any = true;
        let what = e.name().to_owned();
        let control = e.control.text();
        if i > index {
            d.push(
                "admin-bypass",
                Status::Warn,
                at(e),
                format!("{what} comes after {name}: it cannot let admins in, {name} has already denied them"),
                format!("move it above the {name} line as `account sufficient {what} ...`"),
            );
        } else if skips_to_success(e, i, index).is_some() {
            let msg = format!(
                "{what} ({control}) before {name}: users it admits skip {name} and are not adopted"
            );
            d.ok("admin-bypass", at(e), msg);
        } else if matches!(e.control, Control::Optional) {
            d.push(
                "admin-bypass",
                Status::Warn,
                at(e),
                format!("{what} is optional: it neither admits nor restricts anyone"),
                format!(
                    "make it `sufficient` to let the users it lists bypass {name}, or remove it"
                ),
            );
        } else {
            d.push(
                "admin-bypass",
                Status::Warn,
                at(e),
                format!("{what} is `{control}`: it can only deny, so it restricts logins further instead of letting admins bypass {name}"),
                format!("if admins should bypass {name}, make it `sufficient`; if it is meant to restrict, ignore this"),
            );
        }
    }
    if !any {
        d.ok(
            "admin-bypass",
            at(module),
            format!("no pam_access/pam_listfile bypass; root is still let through by {name}"),
        );
    }
}

/// The module's options: fail-open actions and arguments it would ignore.
fn option_checks(d: &mut Findings<'_>, module: &Entry, service: &str) -> Options {
    let name = module.name().to_owned();
    let (mut opts, warnings) = Options::parse(&module.args);
    if name == THEIRS {
        // The C module's defaults fail open where ours fail closed.
        if module.arg("action_adopt_failure").is_none() {
            opts.action_adopt_failure = AdoptFailureAction::Allow;
        }
        if module.arg("action_generic_failure").is_none() {
            opts.action_generic_failure = GenericFailureAction::Ignore;
        }
    }
    if !opts.service_allowed(service) {
        d.push(
            "module-service",
            Status::Fail,
            at(module),
            format!(
                "{name} acts only for service={}; logins through '{service}' are ignored and let in unconfined",
                opts.services.join(",")
            ),
            format!("add {service} to service= on the module line (comma-separated, or *)"),
        );
    }
    for w in warnings {
        // adopt_in= is read by the session phase, which may be newer than
        // this parser.
        if w.contains("adopt_in") {
            continue;
        }
        d.push(
            "module-options",
            Status::Warn,
            at(module),
            format!("{name}: {w}"),
            "correct the argument on the PAM line",
        );
    }
    let mut open = false;
    if opts.action_adopt_failure == AdoptFailureAction::Allow {
        open = true;
        let given = if module.arg("action_adopt_failure").is_some() {
            "is set to allow"
        } else {
            "defaults to allow"
        };
        d.push(
            "fail-open",
            Status::Fail,
            at(module),
            format!(
                "action_adopt_failure {given}: a login whose adoption fails gets in unconfined"
            ),
            "add action_adopt_failure=deny to the module line",
        );
    }
    if opts.action_generic_failure != GenericFailureAction::Deny {
        open = true;
        let value = match opts.action_generic_failure {
            GenericFailureAction::Allow => "allow",
            _ => "ignore",
        };
        let given = if module.arg("action_generic_failure").is_some() {
            "is set to"
        } else {
            "defaults to"
        };
        d.push(
            "fail-open",
            Status::Fail,
            at(module),
            format!("action_generic_failure {given} {value}: any error (unreadable slurm.conf, spool dir) lets logins in unconfined"),
            "add action_generic_failure=deny to the module line",
        );
    }
    if opts.action_no_jobs == NoJobsAction::Ignore {
        open = true;
        d.push(
            "fail-open",
            Status::Warn,
            at(module),
            "action_no_jobs=ignore: users without a job are left to the rest of the stack, which usually admits them",
            "remove action_no_jobs=ignore unless another module denies users without jobs",
        );
    }
    if opts.action_unknown == UnknownAction::Allow {
        open = true;
        d.push(
            "fail-open",
            Status::Warn,
            at(module),
            "action_unknown=allow: a user with several jobs whose source job is unknown gets in without adoption",
            "use action_unknown=newest (the default) or deny",
        );
    }
    if !open {
        d.ok(
            "fail-open",
            at(module),
            "adoption and generic failures deny the login".to_owned(),
        );
    }
    opts
}

/// statfs f_type values of filesystems that can be missing when a node
/// boots or when the server is down.
const NETWORK_FS: [(i64, &str); 14] = [
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0x00C3_6400, "CephFS"),
    (0x5346_414F, "AFS"),
    (0x0102_1997, "9p"),
    (0x1983_0326, "BeeGFS"),
    (0xAAD7_AAEA, "PanFS"),
    (0x7461_636F, "OCFS2"),
    (0x0116_1970, "GFS2"),
    (0x6573_5546, "FUSE"),
];

fn shared_fs_check(d: &mut Findings<'_>, module: &Entry, file: &Path, network_fs: &[PathBuf]) {
    let host = d.root().host(file);
    let forced = network_fs.iter().any(|p| file.starts_with(p));
    let kind = if forced {
        Some("network (--network-fs)".to_owned())
    } else {
        match nix::sys::statfs::statfs(&host) {
            Ok(s) => {
                // fs_type_t is i64 on x86_64 glibc but narrower elsewhere.
                #[allow(clippy::unnecessary_cast)]
                let t = s.filesystem_type().0 as i64;
                NETWORK_FS
                    .iter()
                    .find(|(m, _)| *m == t)
                    .map(|(_, n)| (*n).to_owned())
            }
            Err(e) => {
                d.push(
                    "shared-fs",
                    Status::Warn,
                    at(module),
                    format!("cannot statfs {}: {e}", host.display()),
                    "check that the module file is readable",
                );
                return;
            }
        }
    };
    // A path named by --network-fs is a mount of its own by definition.
    let on_root = !forced && same_filesystem(d.root().dir(), &host);
    let shown = file.display();
    let (status, message) = match shared_fs_verdict(kind.as_deref(), on_root, module.dash) {
        FsVerdict::Local => (Status::Ok, format!("{shown} is on a local filesystem")),
        FsVerdict::RootFs(fs) => (
            Status::Ok,
            format!(
                "{shown} is on the {fs} filesystem that holds / itself: it cannot be missing while sshd and /etc/pam.d are there"
            ),
        ),
        FsVerdict::Skippable(fs) => (
            Status::Ok,
            format!(
                "{shown} is on a {fs} filesystem; `-account` keeps an unmounted filesystem from locking everyone out"
            ),
        ),
        FsVerdict::LockOut(fs) => (
            Status::Fail,
            format!(
                "{shown} is on a {fs} filesystem and loaded without `-`: while it is unreachable no one can log in, root included"
            ),
        ),
    };
    let fix = if status == Status::Fail {
        "install the module on a local disk (the slurm-adopt package), or write the line as `-account`"
    } else {
        ""
    };
    d.push("shared-fs", status, at(module), message, fix);
}

/// What a module file's filesystem means for lock-out.
#[derive(Debug, PartialEq, Eq)]
enum FsVerdict<'a> {
    Local,
    /// A network (or FUSE) filesystem that is the node's `/` itself, as on
    /// diskless nodes or in a container on fuse-overlayfs: when it is gone,
    /// so are sshd and libpam, and `-account` would save nothing.
    RootFs(&'a str),
    /// A separate network mount, skipped by `-account` while it is missing.
    Skippable(&'a str),
    /// A separate network mount without `-`: its absence denies everyone.
    LockOut(&'a str),
}

fn shared_fs_verdict(network: Option<&str>, on_root_fs: bool, dash: bool) -> FsVerdict<'_> {
    match network {
        None => FsVerdict::Local,
        Some(fs) if on_root_fs => FsVerdict::RootFs(fs),
        Some(fs) if dash => FsVerdict::Skippable(fs),
        Some(fs) => FsVerdict::LockOut(fs),
    }
}

/// Whether `file` is on the filesystem of the directory `root` (the node's
/// `/` as read here). Unknown counts as not: the check stays strict.
fn same_filesystem(root: &Path, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(root), std::fs::metadata(file)) {
        (Ok(r), Ok(f)) => r.dev() == f.dev(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The session stack

fn session_checks(d: &mut Findings<'_>, stacks: &Stacks) {
    let session = stacks.of("session");
    let mut any = false;
    for (i, e) in session.iter().enumerate() {
        if e.name() != "pam_systemd.so" {
            continue;
        }
        any = true;
        let adopter = session.iter().skip(i + 1).find(|s| {
            s.name() == OURS
                && s.arg("adopt_in")
                    .is_some_and(|v| v.eq_ignore_ascii_case("session"))
        });
        if let Some(a) = adopter {
            let msg = format!(
                "pam_systemd.so is followed by {OURS} adopt_in=session ({}): logins are adopted after pam_systemd moved them",
                written_at(d, a)
            );
            d.ok("session-systemd", at(e), msg);
        } else if e.dash && module_file(d.root(), &e.module).is_none() {
            d.push(
                "session-systemd",
                Status::Warn,
                at(e),
                "`-session ... pam_systemd.so` is skipped now (not installed), but installing libpam-systemd would move logins out of their job",
                "remove the line, or add `session required pam_adopt.so adopt_in=session` after it",
            );
        } else {
            d.push(
                "session-systemd",
                Status::Fail,
                at(e),
                "pam_systemd.so runs in sshd's session stack: it moves each login out of the job's cgroup into a systemd scope",
                "comment out this line (pam-auth-update may restore it), or add `session required pam_adopt.so adopt_in=session` after it",
            );
        }
    }
    if !any {
        d.ok(
            "session-systemd",
            None,
            "no pam_systemd.so in the session stack".to_owned(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_separate_network_mount_without_dash_locks_everyone_out() {
        assert_eq!(
            shared_fs_verdict(Some("NFS"), false, false),
            FsVerdict::LockOut("NFS")
        );
        assert_eq!(
            shared_fs_verdict(Some("NFS"), false, true),
            FsVerdict::Skippable("NFS")
        );
        assert_eq!(shared_fs_verdict(None, false, false), FsVerdict::Local);
    }

    #[test]
    fn a_network_root_filesystem_is_not_a_lock_out_of_its_own() {
        // Docker on fuse-overlayfs, or a diskless node's NFS root: the
        // module shares the fate of sshd itself.
        assert_eq!(
            shared_fs_verdict(Some("FUSE"), true, false),
            FsVerdict::RootFs("FUSE")
        );
        assert_eq!(
            shared_fs_verdict(Some("NFS"), true, true),
            FsVerdict::RootFs("NFS")
        );
    }

    #[test]
    fn same_filesystem_compares_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pam_adopt.so");
        std::fs::write(&file, b"").unwrap();
        assert!(same_filesystem(tmp.path(), &file));
        // /proc is never the filesystem of a temp dir.
        assert!(!same_filesystem(tmp.path(), Path::new("/proc/self/status")));
        assert!(!same_filesystem(tmp.path(), &tmp.path().join("missing")));
    }
}
