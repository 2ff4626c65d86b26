//! The account phase: decide whether a login may proceed and, if it has a
//! job here, put it into that job's extern step.

use std::time::Instant;

use slurm_node::select::{self, CallerId, MSG_ADOPT_FAILED, MSG_NO_SLURM, Selection};

use crate::pam::{PAM_IGNORE, PAM_PERM_DENIED, PAM_SESSION_ERR, PAM_SUCCESS, Pam, Priority};
use adopt_login::callerid;
use adopt_login::node::{self, NodeView};
use adopt_login::options::{AdoptFailureAction, GenericFailureAction, LogLevel, Options};

/// The facts of one login that end up in its syslog line.
#[derive(Debug, Default)]
struct Record {
    user: String,
    uid: Option<u32>,
    service: String,
    rhost: String,
    decision: &'static str,
    job: Option<u32>,
    reason: &'static str,
}

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
    let mut rec = Record {
        rhost: pam.rhost().unwrap_or_default(),
        ..Record::default()
    };
    let rc = decide(pam, &opts, &log, &mut rec, started);
    if !rec.decision.is_empty() {
        let line = format!(
            "user={} uid={} service={} rhost={} pid={} decision={} job={} reason={} usec={}",
            rec.user,
            rec.uid.map_or("-".to_owned(), |u| u.to_string()),
            rec.service,
            if rec.rhost.is_empty() {
                "-"
            } else {
                &rec.rhost
            },
            std::process::id(),
            rec.decision,
            rec.job.map_or("-".to_owned(), |j| j.to_string()),
            rec.reason,
            started.elapsed().as_micros()
        );
        log.line(pam, Priority::Info, &line);
    }
    rc
}

fn decide(
    pam: &mut Pam<'_>,
    opts: &Options,
    log: &Logger,
    rec: &mut Record,
    started: Instant,
) -> i32 {
    let deadline = started + opts.timeout;
    let service = match pam.service() {
        Ok(Some(s)) => s,
        Ok(None) => return crate::pam::PAM_BAD_ITEM,
        Err(rc) => return rc,
    };
    rec.service.clone_from(&service);
    if !opts.service_allowed(&service) {
        log.line(
            pam,
            Priority::Info,
            "Not adopting process since this is not an allowed pam service",
        );
        rec.decision = "ignore";
        rec.reason = "service_not_listed";
        return PAM_IGNORE;
    }
    let generic = |rec: &mut Record, reason: &'static str| -> i32 {
        rec.reason = reason;
        match opts.action_generic_failure {
            GenericFailureAction::Allow => {
                rec.decision = "allow";
                PAM_SUCCESS
            }
            GenericFailureAction::Ignore => {
                rec.decision = "ignore";
                PAM_IGNORE
            }
            GenericFailureAction::Deny => {
                rec.decision = "deny";
                PAM_PERM_DENIED
            }
        }
    };
    let user = match pam.user() {
        Ok(Some(u)) if !u.is_empty() => u,
        _ => {
            log.line(pam, Priority::Err, "No username in PAM_USER? Fail!");
            return generic(rec, "no_user");
        }
    };
    rec.user.clone_from(&user);
    let uid = match nix::unistd::User::from_name(&user) {
        Ok(Some(pw)) => pw.uid.as_raw(),
        Ok(None) => {
            log.line(
                pam,
                Priority::Err,
                &format!("getpwnam({user}): no such user"),
            );
            return generic(rec, "unknown_user");
        }
        Err(e) => {
            log.line(pam, Priority::Err, &format!("getpwnam({user}): {e}"));
            return generic(rec, "unknown_user");
        }
    };
    rec.uid = Some(uid);
    // Root is let through before any Slurm file is read, so a broken
    // slurm.conf can still be fixed over ssh.
    if uid == 0 {
        log.debug(pam, "Ignoring root user");
        rec.decision = "ignore";
        rec.reason = "root";
        return PAM_IGNORE;
    }

    let view = match NodeView::load(opts) {
        Ok(v) => v,
        Err(e) => {
            log.line(pam, Priority::Err, &e.to_string());
            pam.error_message(MSG_NO_SLURM);
            return generic(rec, "node_setup");
        }
    };
    let mut scan = match node::scan_user_jobs(&view, uid, deadline) {
        Ok(s) => s,
        Err(e) => {
            log.line(pam, Priority::Err, &e.to_string());
            pam.error_message(MSG_NO_SLURM);
            return generic(rec, "spool");
        }
    };
    for (path, why) in &scan.skipped {
        log.line(
            pam,
            Priority::Warning,
            &format!("skipping {}: {why}", path.display()),
        );
    }
    // With none of the user's jobs found, a live stepd that did not answer
    // may be the user's own: that is a failure to look, not "no jobs", so
    // action_no_jobs=ignore cannot let the login past a hung stepd. A
    // socket nobody listens on (its stepd exited) hides no job.
    let (stale, unanswered): (Vec<_>, Vec<_>) = scan
        .unreachable
        .iter()
        .partition(|(_, e)| e.is_stale_socket());
    for (path, err) in &stale {
        log.debug(
            pam,
            &format!("stale stepd socket {}: {err}", path.display()),
        );
    }
    let unanswered_priority = if scan.mine.is_empty() {
        Priority::Err
    } else {
        Priority::Debug
    };
    for (path, err) in &unanswered {
        log.line(
            pam,
            unanswered_priority,
            &format!("stepd {} unreachable: {err}", path.display()),
        );
    }
    if scan.mine.is_empty() && !unanswered.is_empty() {
        return generic(rec, "stepd_unreachable");
    }

    let policy = opts.policy();
    let candidates = scan.candidates();
    let callerid = if select::needs_callerid(&candidates, &policy) {
        // Half of what is left at most: the adoption after it needs time too.
        let now = Instant::now();
        let rpc_deadline = now + deadline.saturating_duration_since(now) / 2;
        let local_version = scan.mine.first().map(|j| j.client.protocol_version());
        let lookup = callerid::lookup(&view, local_version, rpc_deadline);
        log_callerid(pam, log, &user, &lookup);
        lookup.answer
    } else {
        CallerId::NotAsked
    };
    let selection = select::select(&candidates, &callerid, &policy);
    rec.reason = selection.reason().code();
    match selection {
        Selection::Deny { message, .. } => {
            pam.error_message(message);
            rec.decision = "deny";
            PAM_PERM_DENIED
        }
        Selection::Ignore { .. } => {
            rec.decision = "ignore";
            PAM_IGNORE
        }
        Selection::Allow { .. } => {
            rec.decision = "allow";
            PAM_SUCCESS
        }
        Selection::Adopt { job_id, .. } => {
            rec.job = Some(job_id);
            let Some(job) = scan.mine.iter_mut().find(|j| j.socket.job_id == job_id) else {
                return generic(rec, "job_vanished");
            };
            let pid = std::process::id() as i32;
            match node::adopt(job, uid, pid, &view, opts) {
                Ok(adopted) => {
                    log.line(
                        pam,
                        Priority::Info,
                        &format!(
                            "Process {pid} adopted into job {job_id} via {}",
                            adopted.via
                        ),
                    );
                    export_env(pam, log, job_id, &adopted);
                    rec.decision = "adopt";
                    PAM_SUCCESS
                }
                Err(e) => {
                    log.line(
                        pam,
                        Priority::Err,
                        &format!("Process {pid} adoption FAILED for job {job_id}: {e}"),
                    );
                    rec.reason = "adopt_failed";
                    match opts.action_adopt_failure {
                        AdoptFailureAction::Allow => {
                            rec.decision = "allow";
                            PAM_SUCCESS
                        }
                        AdoptFailureAction::Deny => {
                            pam.error_message(MSG_ADOPT_FAILED);
                            rec.decision = "deny";
                            PAM_PERM_DENIED
                        }
                    }
                }
            }
        }
    }
}

fn log_callerid(pam: &Pam<'_>, log: &Logger, user: &str, lookup: &callerid::Lookup) {
    let from = lookup.connection.as_ref().map_or_else(
        || "a non-TCP login".to_owned(),
        |c| format!("{} port {}", c.remote.ip(), c.remote.port()),
    );
    if let Some(e) = &lookup.error {
        log.line(pam, Priority::Err, &format!("callerid RPC failed: {e}"));
    }
    let line = match lookup.answer {
        CallerId::Job(job) => format!("From {from} as {user}: member of job {job}"),
        _ => format!("From {from} as {user}: unable to determine source job"),
    };
    log.line(pam, Priority::Info, &line);
}

fn export_env(pam: &mut Pam<'_>, log: &Logger, job_id: u32, adopted: &node::Adopted) {
    let mut vars = vec![("SLURM_JOB_ID", job_id.to_string())];
    if let Some(x11) = &adopted.x11 {
        vars.push(("DISPLAY", format!("localhost:{}.0", x11.display)));
        if let Some(path) = &x11.xauthority {
            vars.push(("XAUTHORITY", path.clone()));
        }
    }
    for (name, value) in vars {
        if let Err(rc) = pam.putenv(name, &value) {
            log.line(
                pam,
                Priority::Err,
                &format!("pam_putenv({name}) failed: rc {rc}"),
            );
        }
    }
}

/// Filters lines by the `log_level=` option.
#[derive(Debug)]
pub struct Logger {
    pub level: LogLevel,
}

impl Logger {
    pub fn line(&self, pam: &Pam<'_>, priority: Priority, message: &str) {
        let needed = match priority {
            Priority::Err | Priority::Warning => LogLevel::ERROR,
            Priority::Info => LogLevel::INFO,
            Priority::Debug => LogLevel::DEBUG,
        };
        if self.level >= needed && self.level > LogLevel::QUIET {
            pam.syslog(priority, message);
        }
    }

    pub fn debug(&self, pam: &Pam<'_>, message: &str) {
        self.line(pam, Priority::Debug, message);
    }
}
