//! `adoptctl doctor` on fixture trees: the correct node in
//! fixtures/doctor/good passes, and each misconfiguration, introduced one at
//! a time into a copy of it, is reported as the right finding with its file
//! and line.

// Test helpers stop loudly; the workspace denies these lints for the code
// that runs inside sshd, not for its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const NODE: &str = "c1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/doctor/good")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            // fs::copy keeps the mode, so the hooks stay executable.
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A copy of the good node to break.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(&fixture(), dir.path());
        Node { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Replace `from` by `to` in `rel`; `from` must be there.
    fn edit(&self, rel: &str, from: &str, to: &str) -> &Node {
        let p = self.path(rel);
        let text = fs::read_to_string(&p).expect("read fixture file");
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        fs::write(&p, text.replacen(from, to, 1)).expect("write");
        self
    }

    fn write(&self, rel: &str, text: &str) -> &Node {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
        self
    }

    fn doctor(&self, extra: &[&str]) -> Report {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_adoptctl"));
        cmd.arg("doctor").arg("--root").arg(self.dir.path());
        if !extra
            .iter()
            .any(|a| *a == "--hostname" || *a == "--nodename")
        {
            cmd.args(["--nodename", NODE]);
        }
        let out = cmd.args(extra).output().expect("run adoptctl");
        Report {
            code: out.status.code().expect("exit code"),
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Report {
    code: i32,
    text: String,
    stderr: String,
}

/// A finding line: status, check, place, message.
#[derive(Debug)]
struct Line<'a> {
    status: &'a str,
    check: &'a str,
    place: &'a str,
    message: String,
}

impl Report {
    fn lines(&self) -> Vec<Line<'_>> {
        self.text
            .lines()
            // Neither fix lines (indented) nor the summary line.
            .filter(|l| !l.starts_with(' ') && !l.starts_with(|c: char| c.is_ascii_digit()))
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (status, check, place) = (w.next()?, w.next()?, w.next()?);
                Some(Line {
                    status,
                    check,
                    place,
                    message: w.collect::<Vec<_>>().join(" "),
                })
            })
            .collect()
    }

    /// The one finding of `check` with `status` at `place`; panics with the
    /// whole report otherwise.
    fn expect(&self, status: &str, check: &str, place: &str) -> String {
        let lines = self.lines();
        let hit: Vec<&Line<'_>> = lines
            .iter()
            .filter(|l| l.status == status && l.check == check && l.place == place)
            .collect();
        assert_eq!(
            hit.len(),
            1,
            "expected one `{status} {check} {place}` in:\n{}\n{}",
            self.text,
            self.stderr
        );
        hit[0].message.clone()
    }

    /// Nothing but `check` is reported as warn or fail.
    fn only_problem(&self, check: &str) {
        for l in self.lines() {
            assert!(
                l.status == "ok" || l.check == check,
                "unexpected {} {} in:\n{}",
                l.status,
                l.check,
                self.text
            );
        }
    }
}

#[test]
fn the_good_node_passes() {
    let r = Node::new().doctor(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.text, r.stderr);
    let lines = r.lines();
    assert!(lines.len() >= 18, "{}", r.text);
    assert!(lines.iter().all(|l| l.status == "ok"), "{}", r.text);
    for check in [
        "account-module",
        "module-installed",
        "shared-fs",
        "account-last",
        "account-short-circuit",
        "admin-bypass",
        "fail-open",
        "session-systemd",
        "use-pam",
        "kbd-interactive",
        "auth-methods",
        "prolog-flags",
        "proctrack",
        "task-plugin",
        "hooks",
        "login-node",
        "cgroup-mode",
        "selinux",
    ] {
        assert!(
            lines.iter().any(|l| l.check == check),
            "no {check} in:\n{}",
            r.text
        );
    }
    r.expect("ok", "account-module", "/etc/pam.d/sshd:10");
    assert!(r.text.ends_with("0 warnings, 0 failures\n"), "{}", r.text);
}

#[test]
fn module_missing_from_the_account_stack() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "-account   required     pam_adopt.so",
        "#-account   required     pam_adopt.so",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "account-module", "/etc/pam.d/sshd");
    r.only_problem("account-module");
}

#[test]
fn module_file_not_installed() {
    let n = Node::new();
    fs::remove_file(n.path("usr/lib/x86_64-linux-gnu/security/pam_adopt.so")).expect("rm");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "module-installed", "/etc/pam.d/sshd:10");
    assert!(msg.contains("unconfined"), "{msg}");
}

#[test]
fn module_not_last_in_the_account_stack() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest\n",
        "action_unknown=newest\naccount required pam_time.so\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "account-last", "/etc/pam.d/sshd:10");
    assert!(msg.contains("pam_time.so (/etc/pam.d/sshd:11)"), "{msg}");
    r.only_problem("account-last");
}

#[test]
fn module_after_an_include_that_follows_it() {
    // The module above `@include common-account`: common-account's lines run after it.
    let n = Node::new();
    n.edit("etc/pam.d/sshd", "@include common-account\n", "")
        .edit(
            "etc/pam.d/sshd",
            "action_unknown=newest\n",
            "action_unknown=newest\n@include common-account\n",
        );
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "account-last", "/etc/pam.d/sshd:9");
    assert!(
        msg.contains("pam_unix.so (/etc/pam.d/common-account:2)"),
        "{msg}"
    );
}

#[test]
fn optional_control_does_not_deny() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "-account   required     pam_adopt.so",
        "account optional pam_adopt.so",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "account-control", "/etc/pam.d/sshd:10");
    r.only_problem("account-control");
}

#[test]
fn pam_localuser_sufficient_short_circuits() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-account",
        "# shared account stack (pam-auth-update layout)\n",
        "# shared account stack (pam-auth-update layout)\naccount sufficient pam_localuser.so\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect(
        "fail",
        "account-short-circuit",
        "/etc/pam.d/common-account:2",
    );
    assert!(msg.contains("pam_localuser.so"), "{msg}");
    r.only_problem("account-short-circuit");
}

#[test]
fn pam_succeed_if_for_system_accounts_is_a_warning() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-account",
        "# shared account stack (pam-auth-update layout)\n",
        "# shared account stack (pam-auth-update layout)\naccount sufficient pam_succeed_if.so uid < 1000 quiet\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect(
        "warn",
        "account-short-circuit",
        "/etc/pam.d/common-account:2",
    );
    assert!(msg.contains("uid < 1000"), "{msg}");
}

#[test]
fn a_jump_over_the_module_short_circuits() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-account",
        "[success=1 new_authtok_reqd=done default=ignore]",
        "[success=3 new_authtok_reqd=done default=ignore]",
    );
    let r = n.doctor(&[]);
    let msg = r.expect(
        "fail",
        "account-short-circuit",
        "/etc/pam.d/common-account:2",
    );
    assert!(msg.contains("success=3"), "{msg}");
}

#[test]
fn substack_done_does_not_short_circuit() {
    let n = Node::new();
    n.write(
        "etc/pam.d/site-account",
        "account [success=done default=ignore] pam_localuser.so\n",
    )
    .edit(
        "etc/pam.d/sshd",
        "@include common-account\n",
        "@include common-account\naccount substack site-account\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn admin_bypass_before_the_module_is_fine() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "@include common-account\n",
        "@include common-account\naccount sufficient pam_access.so accessfile=/etc/security/access-admins.conf\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    let msg = r.expect("ok", "admin-bypass", "/etc/pam.d/sshd:9");
    assert!(msg.contains("not adopted"), "{msg}");
}

#[test]
fn admin_bypass_after_the_module_is_a_warning() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest\n",
        "action_unknown=newest\naccount sufficient pam_listfile.so item=group sense=allow file=/etc/adm onerr=fail\n",
    );
    let r = n.doctor(&[]);
    r.expect("warn", "admin-bypass", "/etc/pam.d/sshd:11");
    // It also makes the module not last.
    r.expect("fail", "account-last", "/etc/pam.d/sshd:10");
}

#[test]
fn admin_bypass_required_restricts_instead() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "@include common-account\n",
        "@include common-account\naccount required pam_access.so\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "admin-bypass", "/etc/pam.d/sshd:9");
    assert!(msg.contains("restricts"), "{msg}");
    r.only_problem("admin-bypass");
}

#[test]
fn pam_systemd_in_an_included_session_stack() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-session",
        "pam_unix.so\n",
        "pam_unix.so\nsession\toptional\tpam_systemd.so\n",
    );
    fs::write(
        n.path("usr/lib/x86_64-linux-gnu/security/pam_systemd.so"),
        "",
    )
    .expect("so");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "session-systemd", "/etc/pam.d/common-session:6");
    r.only_problem("session-systemd");
}

#[test]
fn pam_systemd_followed_by_the_session_phase_adoption() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-session",
        "pam_unix.so\n",
        "pam_unix.so\nsession\toptional\tpam_systemd.so\n",
    )
    .edit(
        "etc/pam.d/sshd",
        "@include common-session\n",
        "@include common-session\nsession required pam_adopt.so adopt_in=session\n",
    );
    fs::write(
        n.path("usr/lib/x86_64-linux-gnu/security/pam_systemd.so"),
        "",
    )
    .expect("so");
    let r = n.doctor(&[]);
    let msg = r.expect("ok", "session-systemd", "/etc/pam.d/common-session:6");
    assert!(msg.contains("/etc/pam.d/sshd:16"), "{msg}");
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn pam_systemd_with_dash_and_not_installed_is_a_warning() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/common-session",
        "pam_unix.so\n",
        "pam_unix.so\n-session optional pam_systemd.so\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    r.expect("warn", "session-systemd", "/etc/pam.d/common-session:6");
}

#[test]
fn keyboard_interactive_on() {
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config",
        "KbdInteractiveAuthentication no",
        "KbdInteractiveAuthentication yes",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "kbd-interactive", "/etc/ssh/sshd_config:10");
    r.only_problem("kbd-interactive");
}

#[test]
fn keyboard_interactive_unset_means_the_compiled_default_yes() {
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config",
        "KbdInteractiveAuthentication no\n",
        "",
    );
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "kbd-interactive", "/etc/ssh/sshd_config");
    assert!(msg.contains("default is yes"), "{msg}");
}

#[test]
fn keyboard_interactive_old_alias_in_an_included_file_wins() {
    // The Include comes first, so its value is the one sshd keeps.
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config.d/10-site.conf",
        "ClientAliveInterval 300\n",
        "ClientAliveInterval 300\nChallengeResponseAuthentication=yes\n",
    );
    let r = n.doctor(&[]);
    r.expect(
        "fail",
        "kbd-interactive",
        "/etc/ssh/sshd_config.d/10-site.conf:4",
    );
}

#[test]
fn match_block_reenables_keyboard_interactive() {
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config",
        "\tPermitTTY yes\n",
        "\tPermitTTY yes\n\tKbdInteractiveAuthentication yes\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "sshd-match", "/etc/ssh/sshd_config:21");
    assert!(msg.contains("Match Group admins"), "{msg}");
    // The global setting is still the one in force.
    r.expect("ok", "kbd-interactive", "/etc/ssh/sshd_config:10");
}

#[test]
fn match_block_changes_authentication_methods() {
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config",
        "\tPermitTTY yes\n",
        "\tAuthenticationMethods publickey,password\n",
    );
    let r = n.doctor(&[]);
    r.expect("warn", "sshd-match", "/etc/ssh/sshd_config:20");
    r.only_problem("sshd-match");
}

#[test]
fn authentication_methods_with_keyboard_interactive() {
    let n = Node::new();
    n.edit(
        "etc/ssh/sshd_config",
        "UsePAM yes\n",
        "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive:pam\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "auth-methods", "/etc/ssh/sshd_config:13");
    r.only_problem("auth-methods");
}

#[test]
fn use_pam_off() {
    let n = Node::new();
    n.edit("etc/ssh/sshd_config", "UsePAM yes", "UsePAM no");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "use-pam", "/etc/ssh/sshd_config:12");
    r.only_problem("use-pam");
}

#[test]
fn prolog_flags_without_contain() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "PrologFlags=Contain,X11",
        "PrologFlags=Alloc",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "prolog-flags", "/etc/slurm/slurm.conf:10");
    r.only_problem("prolog-flags");
}

#[test]
fn proctrack_not_cgroup() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "proctrack/cgroup",
        "proctrack/linuxproc",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "proctrack", "/etc/slurm/slurm.conf:8");
    r.only_problem("proctrack");
}

#[test]
fn task_plugin_without_cgroup() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "TaskPlugin=task/cgroup,task/affinity",
        "TaskPlugin=task/affinity",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "task-plugin", "/etc/slurm/slurm.conf:9");
    r.only_problem("task-plugin");
}

#[test]
fn settings_in_an_included_slurm_conf_are_located() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "ProctrackType=proctrack/cgroup\n",
        "Include conf.d/*.conf\n",
    )
    .write(
        "etc/slurm/conf.d/10-tracking.conf",
        "# tracking\nProctrackType=proctrack/pgid\n",
    );
    let r = n.doctor(&[]);
    r.expect("fail", "proctrack", "/etc/slurm/conf.d/10-tracking.conf:2");
}

#[test]
fn fail_open_actions() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest",
        "action_adopt_failure=allow action_generic_failure=ignore",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let lines = r.lines();
    let hits: Vec<_> = lines
        .iter()
        .filter(|l| l.check == "fail-open" && l.status == "fail" && l.place == "/etc/pam.d/sshd:10")
        .collect();
    assert_eq!(hits.len(), 2, "{}", r.text);
    assert!(
        hits[0]
            .message
            .contains("action_adopt_failure is set to allow")
    );
    assert!(
        hits[1]
            .message
            .contains("action_generic_failure is set to ignore")
    );
    r.only_problem("fail-open");
}

#[test]
fn pam_slurm_adopt_defaults_fail_open() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "pam_adopt.so action_unknown=newest",
        "pam_slurm_adopt.so",
    );
    fs::write(
        n.path("usr/lib/x86_64-linux-gnu/security/pam_slurm_adopt.so"),
        "",
    )
    .expect("so");
    let r = n.doctor(&[]);
    let text = &r.text;
    assert!(
        text.contains(
            "fail  fail-open  /etc/pam.d/sshd:10  action_adopt_failure defaults to allow"
        ),
        "{text}"
    );
    assert!(
        text.contains("action_generic_failure defaults to ignore"),
        "{text}"
    );

    // With both set to deny, Debian's module passes.
    n.edit(
        "etc/pam.d/sshd",
        "pam_slurm_adopt.so",
        "pam_slurm_adopt.so action_adopt_failure=deny action_generic_failure=deny",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn bad_module_argument_is_a_warning() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest",
        "action_unknown=sometimes",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    r.expect("warn", "module-options", "/etc/pam.d/sshd:10");
}

#[test]
fn module_on_a_network_filesystem() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "-account   required",
        "account    required",
    );
    let r = n.doctor(&["--network-fs", "/usr/lib"]);
    assert_eq!(r.code, 2);
    r.expect("fail", "shared-fs", "/etc/pam.d/sshd:10");
    r.only_problem("shared-fs");

    // The `-account` prefix makes it acceptable.
    let r = Node::new().doctor(&["--network-fs", "/usr/lib"]);
    assert_eq!(r.code, 0, "{}", r.text);
    r.expect("ok", "shared-fs", "/etc/pam.d/sshd:10");
}

#[test]
fn prolog_missing() {
    let n = Node::new();
    fs::remove_file(n.path("usr/libexec/slurm-adopt/adopt-prolog")).expect("rm");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "hooks", "/etc/slurm/slurm.conf:12");
    r.only_problem("hooks");
}

#[test]
fn task_prolog_not_executable() {
    let n = Node::new();
    let p = n.path("usr/libexec/slurm-adopt/adopt-taskprolog");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "hooks", "/etc/slurm/slurm.conf:14");
    assert!(msg.contains("not an executable"), "{msg}");
}

#[test]
fn epilog_glob_matching_nothing() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "Epilog=/usr/libexec/slurm-adopt/adopt-epilog",
        "Epilog=/etc/slurm/epilog.d/*",
    );
    fs::create_dir_all(n.path("etc/slurm/epilog.d")).expect("mkdir");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    r.expect("warn", "hooks", "/etc/slurm/slurm.conf:13");
}

#[test]
fn login_node() {
    let r = Node::new().doctor(&["--nodename", "login1"]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "login-node", "/etc/slurm/slurm.conf");
    assert!(msg.contains("pam_adopt would deny everyone"), "{msg}");
    r.only_problem("login-node");

    let r = Node::new().doctor(&["--hostname", "login1.example.org"]);
    r.expect("fail", "login-node", "/etc/slurm/slurm.conf");

    let r = Node::new().doctor(&["--hostname", "c3.example.org"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let msg = r.expect("ok", "login-node", "/etc/slurm/slurm.conf:17");
    assert!(msg.contains("compute node c3"), "{msg}");
}

#[test]
fn nodename_from_the_pam_line() {
    let n = Node::new();
    n.edit("etc/pam.d/sshd", "action_unknown=newest", "nodename=c4");
    let r = n.doctor(&["--hostname", "login1"]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn conf_from_the_pam_line() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest",
        "conf=/opt/slurm/etc/slurm.conf",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "slurm-conf", "/opt/slurm/etc/slurm.conf");
}

#[test]
fn slurm_conf_syntax_error() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "SlurmUser=slurm\n",
        "SlurmUser=slurm\nthis is not a setting\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "slurm-conf", "/etc/slurm/slurm.conf:5");
}

#[test]
fn cgroup_plugin_against_the_kernel_mode() {
    let n = Node::new();
    n.edit(
        "etc/slurm/cgroup.conf",
        "CgroupPlugin=autodetect",
        "CgroupPlugin=cgroup/v1",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "cgroup-mode", "/etc/slurm/cgroup.conf:1");
    assert!(msg.contains("--root copy"), "{msg}");
}

#[test]
fn cgroup_mode_of_the_running_kernel_without_a_mountinfo_copy() {
    let n = Node::new();
    fs::remove_file(n.path("proc/self/mountinfo")).expect("rm");
    let r = n.doctor(&[]);
    let lines = r.lines();
    let cg = lines
        .iter()
        .find(|l| l.check == "cgroup-mode")
        .expect("cgroup-mode");
    assert!(cg.message.contains("running kernel"), "{}", r.text);
}

#[test]
fn selinux_enforcing_without_the_policy() {
    let n = Node::new();
    n.write("sys/fs/selinux/enforce", "1");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    r.expect("fail", "selinux", "/sys/fs/selinux/enforce");
    r.only_problem("selinux");

    fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt"))
        .expect("mkdir");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn missing_include_fails_the_stack() {
    let n = Node::new();
    fs::remove_file(n.path("etc/pam.d/common-password")).expect("rm");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    r.expect("fail", "pam-syntax", "/etc/pam.d/sshd:21");
}

#[test]
fn continuation_lines_keep_their_first_line_number() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "-account   required     pam_adopt.so action_unknown=newest",
        "-account   required     pam_adopt.so \\\n    action_adopt_failure=allow",
    );
    let r = n.doctor(&[]);
    r.expect("fail", "fail-open", "/etc/pam.d/sshd:10");
}

#[test]
fn pam_file_and_sshd_config_outside_the_root() {
    let n = Node::new();
    let other = tempfile::tempdir().expect("tempdir");
    let pam = other.path().join("pam-sshd");
    fs::write(
        &pam,
        "@include common-account\naccount required pam_adopt.so\n",
    )
    .expect("pam");
    let sshd = other.path().join("sshd_config");
    fs::write(&sshd, "UsePAM yes\nKbdInteractiveAuthentication no\n").expect("sshd");
    let r = n.doctor(&[
        "--pam-file",
        pam.to_str().expect("utf8"),
        "--sshd-config",
        sshd.to_str().expect("utf8"),
    ]);
    assert_eq!(r.code, 0, "{}", r.text);
    r.expect("ok", "account-module", &format!("{}:2", pam.display()));
    r.expect("ok", "use-pam", &format!("{}:1", sshd.display()));
}

#[test]
fn service_not_in_the_module_service_list() {
    let n = Node::new();
    fs::copy(n.path("etc/pam.d/sshd"), n.path("etc/pam.d/teleport")).expect("copy");
    let r = n.doctor(&["--pam-service", "teleport"]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "module-service", "/etc/pam.d/teleport:10");
    assert!(msg.contains("service=sshd"), "{msg}");
    r.only_problem("module-service");

    n.edit(
        "etc/pam.d/teleport",
        "action_unknown=newest",
        "service=sshd,teleport",
    );
    let r = n.doctor(&["--pam-service", "teleport"]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn a_copy_of_etc_alone_warns_instead_of_failing() {
    let n = Node::new();
    fs::remove_dir_all(n.path("usr")).expect("rm usr");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "module-installed", "/etc/pam.d/sshd:10");
    assert!(msg.contains("the --root copy has no /usr"), "{msg}");
    r.expect("warn", "hooks", "/etc/slurm/slurm.conf:12");
}

#[test]
fn no_pam_service_file() {
    let r = Node::new().doctor(&["--pam-service", "teleport"]);
    assert_eq!(r.code, 2);
    r.expect("fail", "pam-service", "/etc/pam.d/teleport");
}

#[test]
fn json_output() {
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "PrologFlags=Contain,X11",
        "PrologFlags=Alloc",
    );
    let r = n.doctor(&["--json"]);
    assert_eq!(r.code, 2);
    let t = r.text.trim();
    assert!(t.starts_with('[') && t.ends_with(']'), "{t}");
    assert!(
        t.contains(r#"{"check": "prolog-flags", "status": "fail", "file": "/etc/slurm/slurm.conf", "line": 10, "message": "PrologFlags lacks Contain"#),
        "{t}"
    );
    assert!(
        t.contains(r#""check": "session-systemd", "status": "ok", "file": null, "line": null"#),
        "{t}"
    );
    // One object per finding, as in the text form.
    let text = n.doctor(&[]);
    assert_eq!(t.matches("\"check\":").count(), text.lines().len());
}

#[test]
fn use_pam_unset_is_openssh_default_no() {
    let n = Node::new();
    n.edit("etc/ssh/sshd_config", "UsePAM yes\n", "");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "use-pam", "/etc/ssh/sshd_config");
    assert!(msg.contains("default is no"), "{msg}");
    r.only_problem("use-pam");
}

#[test]
fn no_jobs_ignore_and_unknown_allow_are_warnings() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest",
        "action_no_jobs=ignore action_unknown=allow",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "warnings only: {}", r.text);
    let lines = r.lines();
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.check == "fail-open" && l.status == "warn" && l.place == "/etc/pam.d/sshd:10")
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(warned.len(), 2, "{}", r.text);
    assert!(warned[0].starts_with("action_no_jobs=ignore"), "{warned:?}");
    assert!(warned[1].starts_with("action_unknown=allow"), "{warned:?}");
    r.only_problem("fail-open");
}

#[test]
fn the_module_listed_twice_is_a_warning_on_the_second_line() {
    let n = Node::new();
    n.edit(
        "etc/pam.d/sshd",
        "action_unknown=newest\n",
        "action_unknown=newest\naccount required pam_adopt.so\n",
    );
    let r = n.doctor(&[]);
    let msg = r.expect("warn", "account-module", "/etc/pam.d/sshd:11");
    assert!(msg.contains("first at /etc/pam.d/sshd:10"), "{msg}");
}

// ---- SlurmdSpoolDir and the config files, by the module's own rules ----

impl Node {
    fn chmod(&self, rel: &str, mode: u32) -> &Node {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// Move the spool to `target` (under the copy) and leave a symlink
    /// reading `link` in its place.
    fn relocate_spool(&self, target: &str, link: &str) -> &Node {
        let real = self.path(target);
        fs::create_dir_all(real.parent().expect("parent")).expect("mkdir");
        fs::rename(self.path("var/spool/slurmd"), &real).expect("move the spool");
        std::os::unix::fs::symlink(link, self.path("var/spool/slurmd")).expect("symlink");
        self
    }
}

impl Report {
    /// The fix line printed under the one finding of `check` with `status`.
    fn fix_of(&self, status: &str, check: &str) -> String {
        let mut lines = self.text.lines();
        while let Some(l) = lines.next() {
            if l.starts_with(&format!("{status:<4}  {check} ")) {
                let fix = lines.next().unwrap_or_default().trim();
                return fix.strip_prefix("fix: ").unwrap_or(fix).to_owned();
            }
        }
        panic!("no `{status} {check}` in:\n{}", self.text);
    }
}

const SPOOL_LINE: &str = "/etc/slurm/slurm.conf:6";

#[test]
fn the_good_spool_dir_passes() {
    let r = Node::new().doctor(&[]);
    let msg = r.expect("ok", "spool-dir", SPOOL_LINE);
    assert!(
        msg.contains("/var/spool/slurmd (uid 0, mode 0755)"),
        "{msg}"
    );
    let msg = r.expect("ok", "slurm-conf", "/etc/slurm/slurm.conf");
    assert!(
        msg.contains("/etc/slurm/cgroup.conf pass the module's open rules"),
        "{msg}"
    );
}

#[test]
fn a_spool_dir_writable_by_others_fails_with_the_fix() {
    let n = Node::new();
    n.chmod("var/spool/slurmd", 0o777);
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "spool-dir", SPOOL_LINE);
    assert_eq!(
        msg,
        "spool directory /var/spool/slurmd has mode 0777: writable by group or others: the module denies every login with reason=spool"
    );
    assert_eq!(
        r.fix_of("fail", "spool-dir"),
        "chmod go-w /var/spool/slurmd"
    );
    r.only_problem("spool-dir");
}

#[test]
fn a_spool_dir_that_is_a_file_fails() {
    let n = Node::new();
    fs::remove_dir_all(n.path("var/spool/slurmd")).expect("rm");
    n.write("var/spool/slurmd", "");
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "spool-dir", SPOOL_LINE);
    assert!(msg.contains("is not a directory"), "{msg}");
}

#[test]
fn a_symlinked_spool_with_a_root_chain_passes() {
    for link in ["/local/disk/slurmd", "../../local/disk/slurmd"] {
        let n = Node::new();
        n.relocate_spool("local/disk/slurmd", link);
        let r = n.doctor(&[]);
        assert_eq!(r.code, 0, "{link}: {}", r.text);
        let msg = r.expect("ok", "spool-dir", SPOOL_LINE);
        assert!(msg.contains("/var/spool/slurmd -> /"), "{msg}");
        assert!(msg.ends_with("0 step socket(s) of node c1"), "{msg}");
    }
}

#[test]
fn a_symlinked_spool_under_a_sticky_world_writable_dir_fails() {
    let n = Node::new();
    n.relocate_spool("scratch/slurmd", "/scratch/slurmd")
        .chmod("scratch", 0o1777);
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "spool-dir", SPOOL_LINE);
    assert_eq!(
        msg,
        "spool directory /var/spool/slurmd is a symbolic link to /scratch/slurmd, and /scratch has mode 1777: writable by group or others: the module denies every login with reason=spool"
    );
    assert!(
        r.fix_of("fail", "spool-dir")
            .starts_with("move the symlink's target out of /scratch"),
        "{}",
        r.text
    );
    r.only_problem("spool-dir");
}

#[test]
fn a_symlinked_spool_whose_target_is_writable_fails() {
    let n = Node::new();
    n.relocate_spool("local/slurmd", "/local/slurmd")
        .chmod("local/slurmd", 0o757);
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "spool-dir", SPOOL_LINE);
    assert!(msg.contains("and /local/slurmd has mode 0757"), "{msg}");
    assert_eq!(r.fix_of("fail", "spool-dir"), "chmod go-w /local/slurmd");
}

#[test]
fn a_spool_link_through_a_second_link_fails() {
    let n = Node::new();
    n.relocate_spool("local/disk/slurmd", "/mnt/slurmd");
    std::os::unix::fs::symlink("/local/disk", n.path("mnt")).expect("symlink");
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "spool-dir", SPOOL_LINE);
    assert!(msg.contains("and /mnt is a symbolic link too"), "{msg}");
    assert!(
        r.fix_of("fail", "spool-dir")
            .starts_with("point /var/spool/slurmd straight at the real directory"),
        "{}",
        r.text
    );
}

#[test]
fn a_missing_spool_dir_is_a_warning() {
    let n = Node::new();
    fs::remove_dir_all(n.path("var/spool/slurmd")).expect("rm");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "spool-dir", SPOOL_LINE);
    assert!(msg.contains("does not exist"), "{msg}");
    let n = Node::new();
    n.relocate_spool("local/slurmd", "/local/slurmd");
    fs::remove_dir_all(n.path("local/slurmd")).expect("rm");
    let msg = n.doctor(&[]).expect("warn", "spool-dir", SPOOL_LINE);
    assert!(
        msg.contains("symbolic link to /local/slurmd, which does not exist"),
        "{msg}"
    );
    let n = Node::new();
    fs::remove_dir_all(n.path("var")).expect("rm");
    let msg = n.doctor(&[]).expect("warn", "spool-dir", SPOOL_LINE);
    assert!(msg.contains("outside the --root copy"), "{msg}");
}

#[test]
fn a_config_file_the_module_refuses_fails_with_the_fix() {
    let n = Node::new();
    n.chmod("etc/slurm/slurm.conf", 0o666);
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2);
    let msg = r.expect("fail", "slurm-conf", "/etc/slurm/slurm.conf");
    assert!(msg.contains("mode 0666: writable by others"), "{msg}");
    assert!(msg.ends_with("reason=node_setup"), "{msg}");
    assert_eq!(
        r.fix_of("fail", "slurm-conf"),
        "chmod o-w /etc/slurm/slurm.conf"
    );

    // An Include and cgroup.conf go through the same reader.
    let n = Node::new();
    n.write("etc/slurm/site.conf", "MessageTimeout=20\n")
        .chmod("etc/slurm/site.conf", 0o646)
        .edit(
            "etc/slurm/slurm.conf",
            "SlurmUser=slurm\n",
            "SlurmUser=slurm\nInclude site.conf\n",
        );
    let r = n.doctor(&[]);
    r.expect("fail", "slurm-conf", "/etc/slurm/slurm.conf:5");
    assert_eq!(
        r.fix_of("fail", "slurm-conf"),
        "chmod o-w /etc/slurm/site.conf"
    );
    let n = Node::new();
    n.chmod("etc/slurm/cgroup.conf", 0o606);
    let r = n.doctor(&[]);
    r.expect("fail", "slurm-conf", "/etc/slurm/cgroup.conf");
    assert_eq!(
        r.fix_of("fail", "slurm-conf"),
        "chmod o-w /etc/slurm/cgroup.conf"
    );

    // A link to a link: the module reads one hop only.
    let n = Node::new();
    fs::rename(
        n.path("etc/slurm/slurm.conf"),
        n.path("etc/slurm/real.conf"),
    )
    .expect("mv");
    std::os::unix::fs::symlink("real.conf", n.path("etc/slurm/hop.conf")).expect("symlink");
    std::os::unix::fs::symlink("hop.conf", n.path("etc/slurm/slurm.conf")).expect("symlink");
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "slurm-conf", "/etc/slurm/slurm.conf");
    assert!(msg.contains("a symbolic link to another link"), "{msg}");
    assert!(
        r.fix_of("fail", "slurm-conf")
            .starts_with("point the link straight at the file"),
        "{}",
        r.text
    );
}

/// Without `--root`: doctor and the module's own scan judge one real
/// symlinked spool the same way, from `/` down. The tree is made under `/`
/// itself, whose every directory is root's: under /tmp (sticky,
/// world-writable) the module refuses any link, and so must doctor.
#[test]
fn doctor_and_the_module_agree_on_a_real_symlinked_spool() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a root-owned tree under /, which needs root: run cargo test as root"
    );
    let top = tempfile::Builder::new()
        .prefix(".adoptctl-spool-test-")
        .tempdir_in("/")
        .expect("tempdir in /");
    fs::set_permissions(top.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let real = top.path().join("local/slurmd");
    fs::create_dir_all(&real).expect("mkdir");
    let link = top.path().join("spool");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let conf = top.path().join("slurm.conf");
    fs::write(
        &conf,
        format!("SlurmdSpoolDir={}\nNodeName=c1 CPUs=1\n", link.display()),
    )
    .expect("write");
    let pam = top.path().join("pam-sshd");
    fs::write(
        &pam,
        format!("account required pam_adopt.so conf={}\n", conf.display()),
    )
    .expect("write");
    let sshd = fixture().join("etc/ssh/sshd_config");
    let doctor = || {
        let out = Command::new(env!("CARGO_BIN_EXE_adoptctl"))
            .arg("doctor")
            .arg("--pam-file")
            .arg(&pam)
            .arg("--sshd-config")
            .arg(&sshd)
            .args(["--nodename", "c1"])
            .output()
            .expect("run adoptctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some("spool-dir"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no spool-dir finding in:\n{text}"))
    };
    let trusted = slurm_node::spool::trusted_owners("root");
    let module = || slurm_node::spool::list_steps(&link, "c1", &trusted);

    // A good root chain: both accept.
    assert!(module().is_ok(), "{:?}", module());
    let line = doctor();
    assert!(line.starts_with("ok    spool-dir"), "{line}");
    assert!(
        line.contains(&format!("{} -> {}", link.display(), real.display())),
        "{line}"
    );

    // A world-writable directory on the way: both refuse, in the same words.
    fs::set_permissions(top.path().join("local"), fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let refusal = module().expect_err("the module refuses").to_string();
    assert!(refusal.contains("has mode 1777"), "{refusal}");
    let line = doctor();
    assert!(line.starts_with("fail  spool-dir"), "{line}");
    assert!(line.contains(&refusal), "doctor: {line}\nmodule: {refusal}");
}

// ---- Configless and dynamic nodes ----

const CACHE: &str = "var/spool/slurmd/conf-cache";

impl Node {
    /// The good node made configless: no /etc/slurm/slurm.conf, slurmd's
    /// cache in SlurmdSpoolDir/conf-cache, /run/slurm/conf linking to it,
    /// as slurmd lays them out.
    fn configless() -> Node {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the cache's link is followed only through root-owned directories: run cargo test as root"
        );
        let n = Node::new();
        fs::create_dir_all(n.path(CACHE)).expect("mkdir");
        let conf = fs::read_to_string(n.path("etc/slurm/slurm.conf")).expect("read");
        n.write(
            &format!("{CACHE}/slurm.conf"),
            &conf.replace(
                "SlurmUser=slurm\n",
                "SlurmUser=slurm\nSlurmctldParameters=enable_configless\n",
            ),
        );
        fs::rename(
            n.path("etc/slurm/cgroup.conf"),
            n.path(&format!("{CACHE}/cgroup.conf")),
        )
        .expect("mv cgroup.conf");
        fs::remove_file(n.path("etc/slurm/slurm.conf")).expect("rm");
        fs::create_dir_all(n.path("run/slurm")).expect("mkdir");
        std::os::unix::fs::symlink("/var/spool/slurmd/conf-cache", n.path("run/slurm/conf"))
            .expect("symlink");
        n
    }

    /// doctor on the copy with no --nodename or --hostname.
    fn doctor_as_copy(&self, extra: &[&str]) -> Report {
        let out = Command::new(env!("CARGO_BIN_EXE_adoptctl"))
            .arg("doctor")
            .arg("--root")
            .arg(self.dir.path())
            .args(extra)
            .output()
            .expect("run adoptctl");
        Report {
            code: out.status.code().expect("exit code"),
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

const CACHED_CONF: &str = "/var/spool/slurmd/conf-cache/slurm.conf";

#[test]
fn a_correct_configless_node_passes() {
    let r = Node::configless().doctor(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.text, r.stderr);
    let msg = r.expect("ok", "configless", CACHED_CONF);
    assert!(msg.contains("no /etc/slurm/slurm.conf"), "{msg}");
    assert!(msg.contains("enable_configless"), "{msg}");
    let msg = r.expect("ok", "configless", "-");
    assert!(msg.contains("must come from the node image"), "{msg}");
    // The cached files are the ones judged, line by line.
    r.expect("ok", "prolog-flags", &format!("{CACHED_CONF}:11"));
    r.expect("ok", "login-node", &format!("{CACHED_CONF}:18"));
    let msg = r.expect("ok", "slurm-conf", CACHED_CONF);
    assert!(msg.contains("conf-cache/cgroup.conf"), "{msg}");
}

#[test]
fn a_configless_node_without_contain_fails_at_the_cached_line() {
    let n = Node::configless();
    n.edit(
        &format!("{CACHE}/slurm.conf"),
        "PrologFlags=Contain,X11",
        "PrologFlags=Alloc",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    r.expect("fail", "prolog-flags", &format!("{CACHED_CONF}:11"));
    r.only_problem("prolog-flags");
}

#[test]
fn a_cache_writable_by_others_is_refused() {
    let n = Node::configless();
    n.chmod(CACHE, 0o777);
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "slurm-conf", "/run/slurm/conf");
    assert!(msg.contains("configless cache"), "{msg}");
    assert!(msg.contains("writable by group or others"), "{msg}");
    assert!(msg.ends_with("reason=node_setup"), "{msg}");
    assert!(!msg.contains(&n.dir.path().display().to_string()), "{msg}");
}

#[test]
fn a_cached_file_of_another_user_is_refused_with_the_fix() {
    let n = Node::configless();
    let file = n.path(&format!("{CACHE}/slurm.conf"));
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(4242)), None).expect("chown");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "slurm-conf", CACHED_CONF);
    assert!(msg.contains("uid 4242"), "{msg}");
    assert_eq!(
        r.fix_of("fail", "slurm-conf"),
        format!("chown root {CACHED_CONF}")
    );

    let n = Node::configless();
    n.chmod(&format!("{CACHE}/slurm.conf"), 0o664);
    let r = n.doctor(&[]);
    let msg = r.expect("fail", "slurm-conf", CACHED_CONF);
    assert!(msg.contains("writable by group"), "{msg}");
    assert_eq!(
        r.fix_of("fail", "slurm-conf"),
        format!("chmod go-w {CACHED_CONF}")
    );
}

#[test]
fn no_config_anywhere_fails_naming_both_places() {
    let n = Node::new();
    fs::remove_file(n.path("etc/slurm/slurm.conf")).expect("rm");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "slurm-conf", "/etc/slurm/slurm.conf");
    assert!(msg.contains("/run/slurm/conf/slurm.conf"), "{msg}");
}

#[test]
fn a_dynamic_node_is_named_from_the_copys_hostname() {
    let n = Node::configless();
    n.write("etc/hostname", "dyn7.example.org\n");
    let r = n.doctor_as_copy(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.text, r.stderr);
    let msg = r.expect("ok", "login-node", CACHED_CONF);
    assert!(
        msg.contains("host dyn7.example.org is in no NodeName line"),
        "{msg}"
    );
    assert!(msg.contains("node name dyn7.example.org "), "{msg}");
    assert!(msg.contains("spool /var/spool/slurmd"), "{msg}");

    // The same name given is a dynamic node too, on a configless node.
    let r = n.doctor(&["--nodename", "dyn7"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let msg = r.expect("ok", "login-node", CACHED_CONF);
    assert!(msg.contains("dynamic node"), "{msg}");
}

#[test]
fn sockets_of_two_nodes_in_the_spool_are_not_guessed_between() {
    let n = Node::configless();
    n.write("etc/hostname", "dyn7\n");
    let _a = std::os::unix::net::UnixListener::bind(n.path("var/spool/slurmd/dyn7_3.4294967292"))
        .expect("bind");
    let _b = std::os::unix::net::UnixListener::bind(n.path("var/spool/slurmd/dyn8_4.4294967292"))
        .expect("bind");
    let r = n.doctor_as_copy(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "login-node", CACHED_CONF);
    assert!(msg.contains("dyn7, dyn8"), "{msg}");
    assert!(msg.contains("nodename="), "{msg}");
    drop(_b);
    fs::remove_file(n.path("var/spool/slurmd/dyn8_4.4294967292")).expect("rm");
    let r = n.doctor_as_copy(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    let msg = r.expect("ok", "login-node", CACHED_CONF);
    assert!(msg.contains("the only node with stepd sockets"), "{msg}");
}

#[test]
fn root_copy_host_name_comes_from_its_etc_hostname() {
    let n = Node::new();
    n.write("etc/hostname", "c3.example.org\n");
    let r = n.doctor_as_copy(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    let msg = r.expect("ok", "login-node", "/etc/slurm/slurm.conf:17");
    assert!(
        msg.contains("host c3.example.org is compute node c3"),
        "{msg}"
    );
    // --hostname still wins over the copy's file.
    let r = n.doctor_as_copy(&["--hostname", "login1"]);
    r.expect("fail", "login-node", "/etc/slurm/slurm.conf");

    let r = Node::new().doctor_as_copy(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "login-node", "/etc/hostname");
    assert!(msg.contains("no /etc/hostname"), "{msg}");
}

#[test]
fn a_conf_server_slurmd_beside_an_etc_slurm_conf_is_a_warning() {
    let n = Node::new();
    n.write(
        "proc/4711/cmdline",
        "/usr/sbin/slurmd\0-D\0--conf-server\0ctl:6817\0",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 1, "{}", r.text);
    let msg = r.expect("warn", "configless", "/etc/slurm/slurm.conf");
    assert!(msg.contains("--conf-server ctl:6817"), "{msg}");
    r.only_problem("configless");
}

// ---- namespace/linux and namespace.yaml (Slurm 25.11+) ----

const NS_YAML: &str = "defaults:\n  auto_base_path: true\n  base_path: \"/var/lib/slurm-ns\"\n";

impl Node {
    /// The good node with NamespaceType=namespace/linux (slurm.conf line 16)
    /// and, if `yaml` is given, namespace.yaml beside slurm.conf.
    fn with_namespace_linux(yaml: Option<&str>) -> Node {
        let n = Node::new();
        n.edit(
            "etc/slurm/slurm.conf",
            "LaunchParameters=ulimit_pam_adopt\n",
            "LaunchParameters=ulimit_pam_adopt\nNamespaceType=namespace/linux\n",
        );
        if let Some(text) = yaml {
            n.write("etc/slurm/namespace.yaml", text);
            fs::set_permissions(
                n.path("etc/slurm/namespace.yaml"),
                fs::Permissions::from_mode(0o644),
            )
            .expect("chmod");
        }
        n
    }
}

#[test]
fn namespace_linux_with_its_yaml_passes() {
    let r = Node::with_namespace_linux(Some(NS_YAML)).doctor(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.text, r.stderr);
    let msg = r.expect("ok", "namespace", "/etc/slurm/namespace.yaml");
    assert!(msg.contains("mode 0644"), "{msg}");
    let msg = r.expect("ok", "namespace", "-");
    assert!(msg.contains("setns into the job's namespaces"), "{msg}");
}

#[test]
fn no_namespace_check_without_namespace_linux() {
    // namespace/tmpfs reads job_container.conf: namespace.yaml is not its file.
    let n = Node::new();
    n.edit(
        "etc/slurm/slurm.conf",
        "LaunchParameters=ulimit_pam_adopt\n",
        "LaunchParameters=ulimit_pam_adopt\nNamespaceType=namespace/tmpfs\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(
        !r.lines().iter().any(|l| l.check == "namespace"),
        "{}",
        r.text
    );
}

#[test]
fn namespace_linux_without_its_yaml_fails_at_the_namespacetype_line() {
    let r = Node::with_namespace_linux(None).doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "namespace", "/etc/slurm/slurm.conf:16");
    assert!(msg.contains("no /etc/slurm/namespace.yaml"), "{msg}");
    r.only_problem("namespace");

    // A job_container.conf left from before 25.11 is named in the fix.
    let n = Node::with_namespace_linux(None);
    n.write(
        "etc/slurm/job_container.conf",
        "BasePath=/var/lib/slurm-ns\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    r.expect("fail", "namespace", "/etc/slurm/slurm.conf:16");
    assert!(
        r.text
            .contains("move /etc/slurm/job_container.conf's settings into"),
        "{}",
        r.text
    );
}

#[test]
fn namespace_yaml_writable_by_others_or_of_another_owner_fails() {
    let n = Node::with_namespace_linux(Some(NS_YAML));
    let yaml = n.path("etc/slurm/namespace.yaml");
    fs::set_permissions(&yaml, fs::Permissions::from_mode(0o646)).expect("chmod");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "namespace", "/etc/slurm/namespace.yaml");
    assert!(msg.contains("mode 0646"), "{msg}");
    assert!(
        r.text.contains("chmod o-w /etc/slurm/namespace.yaml"),
        "{}",
        r.text
    );
    r.only_problem("namespace");

    if nix::unistd::geteuid().is_root() {
        fs::set_permissions(&yaml, fs::Permissions::from_mode(0o644)).expect("chmod");
        nix::unistd::chown(&yaml, Some(nix::unistd::Uid::from_raw(4242)), None).expect("chown");
        let r = n.doctor(&[]);
        assert_eq!(r.code, 2, "{}", r.text);
        let msg = r.expect("fail", "namespace", "/etc/slurm/namespace.yaml");
        assert!(msg.contains("owned by uid 4242"), "{msg}");
    }
}

#[test]
fn namespace_linux_on_an_enforcing_node_needs_pam_adopt_ns() {
    let n = Node::with_namespace_linux(Some(NS_YAML));
    n.write("sys/fs/selinux/enforce", "1");
    fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt"))
        .expect("mkdir");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "namespace", "-");
    assert!(msg.contains("pam_adopt_ns"), "{msg}");
    r.only_problem("namespace");

    fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt_ns"))
        .expect("mkdir");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);

    // join_container=false: nothing to join, nothing to allow.
    let n = Node::with_namespace_linux(Some(NS_YAML));
    n.write("sys/fs/selinux/enforce", "1");
    fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt"))
        .expect("mkdir");
    n.edit(
        "etc/pam.d/sshd",
        "pam_adopt.so action_unknown=newest",
        "pam_adopt.so action_unknown=newest join_container=false",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("join_container=false"), "{}", r.text);
}

#[test]
fn job_container_tmpfs_on_an_enforcing_node_needs_pam_adopt_ns() {
    for (key, plugin) in [
        ("JobContainerType", "job_container/tmpfs"),
        ("NamespaceType", "namespace/tmpfs"),
    ] {
        let n = Node::new();
        n.edit(
            "etc/slurm/slurm.conf",
            "LaunchParameters=ulimit_pam_adopt\n",
            &format!("LaunchParameters=ulimit_pam_adopt\n{key}={plugin}\n"),
        );
        n.write("sys/fs/selinux/enforce", "1");
        fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt"))
            .expect("mkdir");
        let r = n.doctor(&[]);
        assert_eq!(r.code, 2, "{plugin}: {}", r.text);
        let msg = r.expect("fail", "namespace", "-");
        assert!(
            msg.contains(plugin) && msg.contains("pam_adopt_ns"),
            "{msg}"
        );
        assert!(
            r.text
                .contains("semodule -i /usr/share/selinux/packages/slurm-adopt/pam_adopt_ns.pp"),
            "{}",
            r.text
        );
        r.only_problem("namespace");

        fs::create_dir_all(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt_ns"))
            .expect("mkdir");
        let r = n.doctor(&[]);
        assert_eq!(r.code, 0, "{plugin}: {}", r.text);
        let msg = r.expect("ok", "namespace", "-");
        assert!(msg.contains("pam_adopt_ns is loaded"), "{msg}");

        // join_container=false: the login joins nothing.
        fs::remove_dir(n.path("var/lib/selinux/targeted/active/modules/400/pam_adopt_ns"))
            .expect("rmdir");
        n.edit(
            "etc/pam.d/sshd",
            "pam_adopt.so action_unknown=newest",
            "pam_adopt.so action_unknown=newest join_container=false",
        );
        let r = n.doctor(&[]);
        assert_eq!(r.code, 0, "{plugin}: {}", r.text);
    }
}

#[test]
fn a_user_namespace_on_an_enforcing_node_needs_the_boolean() {
    let yaml =
        format!("{NS_YAML}  clone_ns_flags:\n    - \"CLONE_NEWPID\"\n    - \"CLONE_NEWUSER\"\n");
    let n = Node::with_namespace_linux(Some(&yaml));
    n.write("sys/fs/selinux/enforce", "1");
    for m in ["pam_adopt", "pam_adopt_ns"] {
        fs::create_dir_all(n.path(&format!("var/lib/selinux/targeted/active/modules/400/{m}")))
            .expect("mkdir");
    }
    n.write("sys/fs/selinux/booleans/pam_adopt_join_userns", "0 0");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    let msg = r.expect("fail", "namespace", "/etc/slurm/namespace.yaml");
    assert!(msg.contains("pam_adopt_join_userns is off"), "{msg}");
    assert!(
        r.text.contains("setsebool -P pam_adopt_join_userns on"),
        "{}",
        r.text
    );

    n.write("sys/fs/selinux/booleans/pam_adopt_join_userns", "1 1");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
}

#[test]
fn a_configless_node_judges_the_cached_namespace_yaml() {
    let n = Node::configless();
    n.edit(
        &format!("{CACHE}/slurm.conf"),
        "LaunchParameters=ulimit_pam_adopt\n",
        "LaunchParameters=ulimit_pam_adopt\nNamespaceType=namespace/linux\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, 2, "{}", r.text);
    r.expect("fail", "namespace", &format!("{CACHED_CONF}:17"));

    n.write(&format!("{CACHE}/namespace.yaml"), NS_YAML);
    fs::set_permissions(
        n.path(&format!("{CACHE}/namespace.yaml")),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let r = n.doctor(&[]);
    assert_eq!(r.code, 0, "{}", r.text);
    r.expect(
        "ok",
        "namespace",
        "/var/spool/slurmd/conf-cache/namespace.yaml",
    );
}
