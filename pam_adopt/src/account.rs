//! The account phase: a thin front end over the login core. It reads the
//! PAM items, hands them to [`adopt_login::decide::decide`] with the live
//! node, and carries the outcome out: the user's message, the environment,
//! the log lines and the one decision line.

use std::time::Instant;

use adopt_login::decide::{self, Login};
use adopt_login::live::LiveNode;
use adopt_login::options::{LogLevel, Options};
use adopt_login::outcome::{self, Decision, Outcome, PamCode};

use crate::pam::{
    PAM_BAD_ITEM, PAM_IGNORE, PAM_PERM_DENIED, PAM_SESSION_ERR, PAM_SUCCESS, Pam, Priority,
};

pub fn acct_mgmt(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    run(pam, args)
}

/// `adopt_in=session`: the whole decision again from pam_sm_open_session,
/// after pam_systemd has moved the process out of the job, and the
/// adoption again. The account phase adopted already, so a session line
/// that is missing or skipped leaves the login in the job, never outside
/// it. A denial fails the session.
pub fn adopt_in_session(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    match run(pam, args) {
        PAM_PERM_DENIED => PAM_SESSION_ERR,
        rc => rc,
    }
}

fn run(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    let started = Instant::now();
    let (opts, warnings) = Options::parse(args);
    let log = Logger {
        level: opts.log_level,
    };
    for w in &warnings {
        log.line(pam, Priority::Err, w);
    }
    let service = match pam.service() {
        Ok(Some(s)) => s,
        Ok(None) => return PAM_BAD_ITEM,
        Err(rc) => return rc,
    };
    let user = pam.user().ok().flatten();
    let login = Login {
        service: &service,
        user: user.as_deref(),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        started,
    };
    let mut node = LiveNode::new();
    let outcome = decide::decide(&login, &opts, &mut node);
    carry_out(pam, &log, &outcome, started)
}

/// Tell the user, export the environment, log, and return the PAM code.
fn carry_out(pam: &mut Pam<'_>, log: &Logger, outcome: &Outcome, started: Instant) -> i32 {
    if let Some(message) = &outcome.user_message {
        pam.error_message(message);
    }
    for (name, value) in &outcome.env {
        if let Err(rc) = pam.putenv(name, value) {
            log.line(
                pam,
                Priority::Err,
                &format!("pam_putenv({name}) failed: rc {rc}"),
            );
        }
    }
    for line in &outcome.log {
        log.line(pam, priority(line.priority), &line.text);
    }
    // For the session phase: the close line must name the job even when
    // pam_systemd has since moved the process out of its cgroup.
    if let (Decision::Adopt, Some(job)) = (outcome.decision, outcome.job) {
        if let Err(rc) = pam.set_adopted_job(job) {
            log.line(
                pam,
                Priority::Warning,
                &format!("pam_set_data failed: rc {rc}; the session's close line may be missing"),
            );
        }
    }
    let rhost = pam.rhost().unwrap_or_default();
    let line = outcome.decision_line(&rhost, std::process::id(), started.elapsed().as_micros());
    log.line(pam, Priority::Info, &line);
    match outcome.pam_code() {
        PamCode::Success => PAM_SUCCESS,
        PamCode::Ignore => PAM_IGNORE,
        PamCode::PermDenied => PAM_PERM_DENIED,
    }
}

fn priority(p: outcome::Priority) -> Priority {
    match p {
        outcome::Priority::Err => Priority::Err,
        outcome::Priority::Warning => Priority::Warning,
        outcome::Priority::Info => Priority::Info,
        outcome::Priority::Debug => Priority::Debug,
    }
}

/// Filters lines by the `log_level=` option.
#[derive(Debug)]
struct Logger {
    level: LogLevel,
}

impl Logger {
    fn line(&self, pam: &Pam<'_>, priority: Priority, message: &str) {
        let needed = match priority {
            Priority::Err | Priority::Warning => LogLevel::ERROR,
            Priority::Info => LogLevel::INFO,
            Priority::Debug => LogLevel::DEBUG,
        };
        if self.level >= needed && self.level > LogLevel::QUIET {
            pam.syslog(priority, message);
        }
    }
}
