//! sshd_config: sshd must run PAM's account stack (UsePAM) for ssh logins,
//! and must not authenticate through keyboard-interactive, whose PAM
//! conversation runs in a separate process that is not the login.

use std::path::Path;

use super::findings::Findings;
use crate::report::Status;
use crate::sshdconf::{self, SshdConfig};

/// Check sshd_config: `sshd_config` (a path here) or the node's.
pub fn checks(d: &mut Findings<'_>, sshd_config: Option<&Path>) {
    let path = sshd_config.map_or_else(
        || d.root().host(Path::new("/etc/ssh/sshd_config")),
        Path::to_owned,
    );
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

fn use_pam_check(d: &mut Findings<'_>, config: &SshdConfig, path: &Path) {
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

fn kbd_check(d: &mut Findings<'_>, config: &SshdConfig, path: &Path) {
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

fn auth_methods_check(d: &mut Findings<'_>, config: &SshdConfig) {
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

fn match_checks(d: &mut Findings<'_>, config: &SshdConfig) {
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
