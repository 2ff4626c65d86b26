//! `adoptctl doctor`: the configuration mistakes that make pam_adopt (or
//! pam_slurm_adopt) deny everyone, let everyone in unconfined, or let
//! logins escape their job, each reported with the file and line to edit.
//!
//! Everything is read, nothing is changed. With `--root DIR` every path is
//! taken under DIR, so a copy of a node's files can be reviewed elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use adopt_login::options::{AdoptFailureAction, DEFAULT_CONF, GenericFailureAction, Options};
use slurm_node::cgroup::{CgroupFs, CgroupMode};
use slurm_node::conf::{ConfError, SlurmConf};
use slurm_node::select::{NoJobsAction, UnknownAction};
use slurm_node::{hostlist, nodename};

use crate::pamstack::{self, Control, Entry, Stacks};
use crate::report::{Finding, Status};
use crate::slurmlines::{self, Settings};
use crate::sshdconf::{self, SshdConfig};

/// Our module and Debian's/SchedMD's, either of which may be in use.
const OURS: &str = "pam_adopt.so";
const THEIRS: &str = "pam_slurm_adopt.so";

/// Where paths are read from: `/` or the `--root` copy.
#[derive(Debug, Clone)]
pub struct Root(Option<PathBuf>);

impl Root {
    pub fn new(dir: Option<PathBuf>) -> Root {
        Root(dir)
    }

    /// The file to read for the node's `path`.
    pub fn host(&self, path: &Path) -> PathBuf {
        match &self.0 {
            Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }

    /// `host` as the node names it, for messages.
    pub fn shown(&self, host: &Path) -> String {
        match &self.0 {
            Some(r) => match host.strip_prefix(r) {
                Ok(rel) => format!("/{}", rel.display()),
                Err(_) => host.display().to_string(),
            },
            None => host.display().to_string(),
        }
    }

    fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// A `--root` copy that holds only part of a node (often just /etc)
    /// cannot say whether a file outside it exists on the node.
    fn lacks_tree_of(&self, node_path: &Path) -> bool {
        let Some(r) = &self.0 else { return false };
        let top = node_path
            .strip_prefix("/")
            .unwrap_or(node_path)
            .components()
            .next();
        top.is_some_and(|c| !r.join(c.as_os_str()).exists())
    }
}

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

struct Doctor<'a> {
    args: &'a Args,
    findings: Vec<Finding>,
}

impl Doctor<'_> {
    fn push(
        &mut self,
        check: &'static str,
        status: Status,
        place: Option<(&Path, Option<usize>)>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let (file, line) = match place {
            Some((f, l)) => (Some(self.args.root.shown(f)), l),
            None => (None, None),
        };
        self.findings.push(Finding {
            check,
            status,
            file,
            line,
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn ok(&mut self, check: &'static str, place: Option<(&Path, Option<usize>)>, msg: String) {
        self.push(check, Status::Ok, place, msg, "");
    }

    fn at(e: &Entry) -> Option<(&Path, Option<usize>)> {
        Some((e.file.as_path(), Some(e.line)))
    }

    fn root(&self) -> &Root {
        &self.args.root
    }

    /// `node` as written on the node, and the file it names here.
    fn where_(&self, e: &Entry) -> String {
        format!("{}:{}", self.root().shown(&e.file), e.line)
    }
}

pub fn run(args: &Args) -> Vec<Finding> {
    let mut d = Doctor {
        args,
        findings: Vec::new(),
    };
    let pam_path = match &args.pam_file {
        Some(p) => p.clone(),
        None => args.root.host(&Path::new("/etc/pam.d").join(&args.service)),
    };
    let mut module_opts = None;
    if pam_path.is_file() {
        let stacks = pamstack::read(&args.root, &pam_path);
        for p in &stacks.problems {
            d.push(
                "pam-syntax",
                Status::Fail,
                Some((p.file.as_path(), Some(p.line))),
                p.message.clone(),
                "fix or remove this line; `pamtester` or a test login shows what PAM makes of it",
            );
        }
        module_opts = account_checks(&mut d, &stacks, &pam_path);
        session_checks(&mut d, &stacks);
    } else {
        d.push(
            "pam-service",
            Status::Fail,
            Some((pam_path.as_path(), None)),
            format!(
                "no PAM file for service '{}': PAM falls back to /etc/pam.d/other",
                args.service
            ),
            format!(
                "create /etc/pam.d/{} with pam_adopt.so last in its account stack, or give --pam-service",
                args.service
            ),
        );
    }
    sshd_checks(&mut d);
    let conf_path = module_opts
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_CONF), |o: &Options| o.conf.clone());
    let nodename = args
        .nodename
        .clone()
        .or_else(|| module_opts.as_ref().and_then(|o| o.nodename.clone()));
    slurm_checks(&mut d, &conf_path, nodename.as_deref());
    selinux_check(&mut d);
    d.findings
}

// ---------------------------------------------------------------------------
// The account stack

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

fn security_dirs() -> Vec<PathBuf> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    vec![
        PathBuf::from(format!("/usr/lib/{triplet}/security")),
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

fn account_checks(d: &mut Doctor<'_>, stacks: &Stacks, pam_path: &Path) -> Option<Options> {
    let account = stacks.of("account");
    let service = d.args.service.clone();
    let Some(index) = account.iter().position(|e| is_adopt_module(e)) else {
        d.push(
            "account-module",
            Status::Fail,
            Some((pam_path, None)),
            format!("neither {OURS} nor {THEIRS} is in the account stack of '{service}': logins are not held to jobs"),
            format!("add `-account required {OURS}` as the last account line of /etc/pam.d/{service}"),
        );
        return None;
    };
    let module = account[index];
    let name = module.name().to_owned();
    d.ok(
        "account-module",
        Doctor::at(module),
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
            d.where_(module)
        );
        d.push(
            "account-module",
            Status::Warn,
            Doctor::at(other),
            msg,
            "keep a single line for the module",
        );
    }

    // The module file itself, and where it lives.
    let security = security_dirs();
    let module_node_path = if module.module.starts_with('/') {
        PathBuf::from(&module.module)
    } else {
        security[0].join(&module.module)
    };
    match module_file(d.root(), &module.module) {
        None if d.root().lacks_tree_of(&module_node_path) => d.push(
            "module-installed",
            Status::Warn,
            Doctor::at(module),
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
                Doctor::at(module),
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
                Doctor::at(module),
                format!("{} loads {}", module.module, file.display()),
            );
            shared_fs_check(d, module, &file);
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
                Doctor::at(module),
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
            d.where_(first)
        );
        d.push(
            "account-last",
            Status::Fail,
            Doctor::at(module),
            msg,
            format!("move the {name} line below every other account line (includes count)"),
        );
    } else {
        d.ok(
            "account-last",
            Doctor::at(module),
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
                    Doctor::at(e),
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
                Doctor::at(e),
                msg,
                "comment out this line or make it `required` (authconfig/pam-auth-update may regenerate it)",
            );
        }
    }
    if !short {
        d.ok(
            "account-short-circuit",
            Doctor::at(module),
            format!("nothing before {name} ends the account stack early"),
        );
    }

    bypass_checks(d, &account, index);
    Some(option_checks(d, module))
}

/// pam_access / pam_listfile as an admin bypass: it works only before the
/// module and only when its success ends the stack.
fn bypass_checks(d: &mut Doctor<'_>, account: &[&Entry], index: usize) {
    let module = account[index];
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
                Doctor::at(e),
                format!("{what} comes after {name}: it cannot let admins in, {name} has already denied them"),
                format!("move it above the {name} line as `account sufficient {what} ...`"),
            );
        } else if skips_to_success(e, i, index).is_some() {
            let msg = format!(
                "{what} ({control}) before {name}: users it admits skip {name} and are not adopted"
            );
            d.ok("admin-bypass", Doctor::at(e), msg);
        } else if matches!(e.control, Control::Optional) {
            d.push(
                "admin-bypass",
                Status::Warn,
                Doctor::at(e),
                format!("{what} is optional: it neither admits nor restricts anyone"),
                format!(
                    "make it `sufficient` to let the users it lists bypass {name}, or remove it"
                ),
            );
        } else {
            d.push(
                "admin-bypass",
                Status::Warn,
                Doctor::at(e),
                format!("{what} is `{control}`: it can only deny, so it restricts logins further instead of letting admins bypass {name}"),
                format!("if admins should bypass {name}, make it `sufficient`; if it is meant to restrict, ignore this"),
            );
        }
    }
    if !any {
        d.ok(
            "admin-bypass",
            Doctor::at(module),
            format!("no pam_access/pam_listfile bypass; root is still let through by {name}"),
        );
    }
}

/// The module's options: fail-open actions and arguments it would ignore.
fn option_checks(d: &mut Doctor<'_>, module: &Entry) -> Options {
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
    let service = d.args.service.clone();
    if !opts.service_allowed(&service) {
        d.push(
            "module-service",
            Status::Fail,
            Doctor::at(module),
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
            Doctor::at(module),
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
            Doctor::at(module),
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
            Doctor::at(module),
            format!("action_generic_failure {given} {value}: any error (unreadable slurm.conf, spool dir) lets logins in unconfined"),
            "add action_generic_failure=deny to the module line",
        );
    }
    if opts.action_no_jobs == NoJobsAction::Ignore {
        open = true;
        d.push(
            "fail-open",
            Status::Warn,
            Doctor::at(module),
            "action_no_jobs=ignore: users without a job are left to the rest of the stack, which usually admits them",
            "remove action_no_jobs=ignore unless another module denies users without jobs",
        );
    }
    if opts.action_unknown == UnknownAction::Allow {
        open = true;
        d.push(
            "fail-open",
            Status::Warn,
            Doctor::at(module),
            "action_unknown=allow: a user with several jobs whose source job is unknown gets in without adoption",
            "use action_unknown=newest (the default) or deny",
        );
    }
    if !open {
        d.ok(
            "fail-open",
            Doctor::at(module),
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

fn shared_fs_check(d: &mut Doctor<'_>, module: &Entry, file: &Path) {
    let host = d.root().host(file);
    let forced = d.args.network_fs.iter().any(|p| file.starts_with(p));
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
                    Doctor::at(module),
                    format!("cannot statfs {}: {e}", host.display()),
                    "check that the module file is readable",
                );
                return;
            }
        }
    };
    match kind {
        Some(fs) if module.dash => d.ok(
            "shared-fs",
            Doctor::at(module),
            format!("{} is on a {fs} filesystem; `-account` keeps an unmounted filesystem from locking everyone out", file.display()),
        ),
        Some(fs) => d.push(
            "shared-fs",
            Status::Fail,
            Doctor::at(module),
            format!("{} is on a {fs} filesystem and loaded without `-`: while it is unreachable no one can log in, root included", file.display()),
            "install the module on a local disk (the slurm-adopt package), or write the line as `-account`",
        ),
        None => d.ok(
            "shared-fs",
            Doctor::at(module),
            format!("{} is on a local filesystem", file.display()),
        ),
    }
}

// ---------------------------------------------------------------------------
// The session stack

fn session_checks(d: &mut Doctor<'_>, stacks: &Stacks) {
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
                d.where_(a)
            );
            d.ok("session-systemd", Doctor::at(e), msg);
        } else if e.dash && module_file(d.root(), &e.module).is_none() {
            d.push(
                "session-systemd",
                Status::Warn,
                Doctor::at(e),
                "`-session ... pam_systemd.so` is skipped now (not installed), but installing libpam-systemd would move logins out of their job",
                "remove the line, or add `session required pam_adopt.so adopt_in=session` after it",
            );
        } else {
            d.push(
                "session-systemd",
                Status::Fail,
                Doctor::at(e),
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

// ---------------------------------------------------------------------------
// sshd

fn sshd_checks(d: &mut Doctor<'_>) {
    let path = d
        .args
        .sshd_config
        .clone()
        .unwrap_or_else(|| d.root().host(Path::new("/etc/ssh/sshd_config")));
    let config = match sshdconf::read(d.root(), &path) {
        Ok(c) => c,
        Err(e) => {
            d.push(
                "sshd-config",
                Status::Warn,
                Some((path.as_path(), None)),
                format!("cannot read sshd_config: {e}; sshd checks skipped"),
                "run doctor where sshd_config is readable, or give --sshd-config",
            );
            return;
        }
    };
    for (file, line, msg) in &config.problems {
        d.push(
            "sshd-config",
            Status::Warn,
            Some((file.as_path(), Some(*line))),
            msg.clone(),
            "fix the Include line; `sshd -T` shows the effective settings",
        );
    }
    use_pam_check(d, &config, &path);
    kbd_check(d, &config, &path);
    auth_methods_check(d, &config);
    match_checks(d, &config);
}

fn yes(d: &sshdconf::Directive) -> bool {
    d.args
        .first()
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"))
}

fn use_pam_check(d: &mut Doctor<'_>, config: &SshdConfig, path: &Path) {
    match config.first_global(&["usepam"]) {
        Some(dir) if yes(dir) => d.ok(
            "use-pam",
            Some((dir.file.as_path(), Some(dir.line))),
            "UsePAM yes".to_owned(),
        ),
        Some(dir) => d.push(
            "use-pam",
            Status::Fail,
            Some((dir.file.as_path(), Some(dir.line))),
            format!(
                "UsePAM {}: sshd never runs the PAM account stack",
                dir.args.join(" ")
            ),
            "set `UsePAM yes` and reload sshd",
        ),
        None => d.push(
            "use-pam",
            Status::Fail,
            Some((path, None)),
            "UsePAM is not set and OpenSSH's default is no: sshd never runs the PAM account stack",
            "add `UsePAM yes` and reload sshd",
        ),
    }
}

const KBD: [&str; 2] = [
    "kbdinteractiveauthentication",
    "challengeresponseauthentication",
];

fn kbd_check(d: &mut Doctor<'_>, config: &SshdConfig, path: &Path) {
    match config.first_global(&KBD) {
        Some(dir) if !yes(dir) => d.ok(
            "kbd-interactive",
            Some((dir.file.as_path(), Some(dir.line))),
            "keyboard-interactive authentication is off".to_owned(),
        ),
        Some(dir) => d.push(
            "kbd-interactive",
            Status::Fail,
            Some((dir.file.as_path(), Some(dir.line))),
            "keyboard-interactive authentication is on: sshd runs PAM in a separate process and the login may not land in the job",
            "set `KbdInteractiveAuthentication no` (allow only publickey and password) and reload sshd",
        ),
        None => d.push(
            "kbd-interactive",
            Status::Fail,
            Some((path, None)),
            "KbdInteractiveAuthentication is not set and OpenSSH's compiled default is yes",
            "add `KbdInteractiveAuthentication no` (Debian's shipped sshd_config has it) and reload sshd",
        ),
    }
}

fn mentions_kbd(args: &[String]) -> bool {
    args.iter()
        .any(|a| a.split(',').any(|m| m.starts_with("keyboard-interactive")))
}

fn auth_methods_check(d: &mut Doctor<'_>, config: &SshdConfig) {
    match config.first_global(&["authenticationmethods"]) {
        Some(dir) if mentions_kbd(&dir.args) => d.push(
            "auth-methods",
            Status::Fail,
            Some((dir.file.as_path(), Some(dir.line))),
            format!("AuthenticationMethods {} uses keyboard-interactive, which pam_slurm_adopt-style adoption does not support", dir.args.join(" ")),
            "list only publickey and password methods in AuthenticationMethods",
        ),
        Some(dir) => d.ok(
            "auth-methods",
            Some((dir.file.as_path(), Some(dir.line))),
            format!("AuthenticationMethods {}", dir.args.join(" ")),
        ),
        None => d.ok(
            "auth-methods",
            None,
            "AuthenticationMethods is not set (any single method)".to_owned(),
        ),
    }
}

fn match_checks(d: &mut Doctor<'_>, config: &SshdConfig) {
    let mut names = KBD.to_vec();
    names.push("authenticationmethods");
    let hits = config.in_match_blocks(&names);
    for dir in &hits {
        let Some(block) = &dir.block else { continue };
        let flagged = if dir.keyword == "authenticationmethods" {
            true
        } else {
            yes(dir)
        };
        if !flagged {
            continue;
        }
        let msg = format!(
            "`{} {}` inside `Match {}` ({}:{}) changes authentication for the logins it matches",
            dir.keyword,
            dir.args.join(" "),
            block.criteria,
            d.root().shown(&block.file),
            block.line
        );
        d.push(
            "sshd-match",
            Status::Warn,
            Some((dir.file.as_path(), Some(dir.line))),
            msg,
            "make sure the matched logins still use only publickey or password",
        );
    }
}

// ---------------------------------------------------------------------------
// Slurm

fn slurm_checks(d: &mut Doctor<'_>, conf_node_path: &Path, nodename: Option<&str>) {
    let path = d.root().host(conf_node_path);
    let conf = match SlurmConf::load(&path) {
        Ok(c) => c,
        Err(e) => {
            let (file, line) = conf_error_place(&e, &path);
            d.push(
                "slurm-conf",
                Status::Fail,
                Some((file.as_path(), line)),
                format!("cannot read slurm.conf: {e}"),
                "fix slurm.conf (or conf= on the PAM line); the module denies every login while it cannot read it",
            );
            return;
        }
    };
    let settings = Settings::read(&path);
    let place = |key: &str| {
        settings
            .last(key)
            .map(|s| (s.file.clone(), Some(s.line)))
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

    hook_checks(d, &conf, &settings, &path);
    node_check(d, &conf, &path, nodename);
    cgroup_check(d, &conf);
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

fn hook_checks(d: &mut Doctor<'_>, conf: &SlurmConf, settings: &Settings, conf_path: &Path) {
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
        let (file, line) = settings
            .all(key)
            .into_iter()
            .rev()
            .find(|s| s.value == value)
            .map(|s| (s.file.clone(), Some(s.line)))
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
            let found = slurmlines::glob(&d.root().host(&node_path));
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

fn node_check(d: &mut Doctor<'_>, conf: &SlurmConf, path: &Path, nodename: Option<&str>) {
    let (entry, asked) = match nodename {
        Some(n) => (conf.node(n), format!("node name {n}")),
        None => {
            let host = match &d.args.hostname {
                Some(h) => h.clone(),
                None => match nodename::local_hostname() {
                    Ok(h) => h,
                    Err(e) => {
                        d.push(
                            "login-node",
                            Status::Warn,
                            Some((path, None)),
                            format!("cannot tell which node this is: {e}"),
                            "give --nodename or --hostname",
                        );
                        return;
                    }
                },
            };
            (nodename::resolve(conf, &host), format!("host {host}"))
        }
    };
    match entry {
        Some(n) => {
            // The NodeName line that names it, for the reader.
            let line = Settings::read(path)
                .all("NodeName")
                .into_iter()
                .find(|s| hostlist::expand(&s.value).is_ok_and(|names| names.contains(&n.name)))
                .map(|s| (s.file.clone(), s.line));
            let (file, line) = match &line {
                Some((f, l)) => (f.as_path(), Some(*l)),
                None => (path, None),
            };
            d.ok(
                "login-node",
                Some((file, line)),
                format!("{asked} is compute node {} in slurm.conf", n.name),
            )
        }
        None => d.push(
            "login-node",
            Status::Fail,
            Some((path, None)),
            format!("{asked} is not a compute node in slurm.conf; pam_adopt would deny everyone"),
            "do not enable the module on login nodes; on a compute node add nodename=<NodeName> to the PAM line",
        ),
    }
}

fn cgroup_check(d: &mut Doctor<'_>, conf: &SlurmConf) {
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
    let place_line = cgroup_conf.as_ref().map(|p| {
        let line = Settings::read(p).last("CgroupPlugin").map(|s| s.line);
        (p.clone(), line)
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

// ---------------------------------------------------------------------------
// SELinux

fn selinux_check(d: &mut Doctor<'_>) {
    let enforce = d.root().host(Path::new("/sys/fs/selinux/enforce"));
    let enforcing = fs::read_to_string(&enforce).is_ok_and(|s| s.trim() == "1");
    if !enforcing {
        d.ok("selinux", None, "SELinux is not enforcing".to_owned());
        return;
    }
    let store = d.root().host(Path::new("/var/lib/selinux"));
    let loaded = fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .any(|policy| {
            let modules = policy.path().join("active/modules");
            fs::read_dir(&modules)
                .into_iter()
                .flatten()
                .flatten()
                .any(|prio| prio.path().join("pam_adopt").exists())
        })
        || (!d.root().is_set() && semodule_lists_pam_adopt());
    if loaded {
        d.ok(
            "selinux",
            Some((enforce.as_path(), None)),
            "SELinux is enforcing and the pam_adopt policy module is loaded".to_owned(),
        );
    } else {
        d.push(
            "selinux",
            Status::Warn,
            Some((enforce.as_path(), None)),
            "SELinux is enforcing and no pam_adopt policy module is loaded: sshd may be denied the stepd sockets",
            "load the policy: semodule -i /usr/share/selinux/packages/slurm-adopt/pam_adopt.pp",
        );
    }
}

fn semodule_lists_pam_adopt() -> bool {
    std::process::Command::new("semodule")
        .arg("-l")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some("pam_adopt"))
        })
}
