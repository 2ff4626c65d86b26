//! What the login core decided, as plain data: the PAM code, the decision,
//! its reason, the callerid outcome, the job, what the user is told, the
//! environment to export and the log lines. The front ends (the PAM module,
//! `adoptctl check`) only carry this out; none of them decides anything.

use std::fmt;

use slurm_node::select::{self, CallerId};

/// The PAM result the account phase returns. The session phase maps
/// [`PamCode::PermDenied`] to PAM_SESSION_ERR itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    Success,
    Ignore,
    PermDenied,
}

/// What the login gets, as the decision line's `decision=` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Put into a job's extern step.
    Adopt,
    /// Let in without adoption.
    Allow,
    /// Left to the rest of the PAM stack.
    Ignore,
    Deny,
}

impl Decision {
    pub fn code(self) -> &'static str {
        match self {
            Decision::Adopt => "adopt",
            Decision::Allow => "allow",
            Decision::Ignore => "ignore",
            Decision::Deny => "deny",
        }
    }

    pub fn pam_code(self) -> PamCode {
        match self {
            Decision::Adopt | Decision::Allow => PamCode::Success,
            Decision::Ignore => PamCode::Ignore,
            Decision::Deny => PamCode::PermDenied,
        }
    }
}

/// Why a login got its decision: every code a decision line's `reason=`
/// can carry. What the callerid RPC said is a field of its own
/// ([`callerid_code`]), since `action_unknown` decides whenever it said
/// nothing usable.
/// `code()` is stable; logs, tests and the README key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ServiceNotListed,
    NoUser,
    UnknownUser,
    Root,
    NodeSetup,
    Spool,
    StepdUnreachable,
    StepdUntrusted,
    NoJobs,
    JobStarting,
    OnlyJob,
    CallerIdMatch,
    NewestJob,
    UnknownAllow,
    UnknownDeny,
    JobVanished,
    AdoptFailed,
}

impl Reason {
    /// Every reason, for tests that hold the README and the codes together.
    pub const ALL: [Reason; 17] = [
        Reason::ServiceNotListed,
        Reason::NoUser,
        Reason::UnknownUser,
        Reason::Root,
        Reason::NodeSetup,
        Reason::Spool,
        Reason::StepdUnreachable,
        Reason::StepdUntrusted,
        Reason::NoJobs,
        Reason::JobStarting,
        Reason::OnlyJob,
        Reason::CallerIdMatch,
        Reason::NewestJob,
        Reason::UnknownAllow,
        Reason::UnknownDeny,
        Reason::JobVanished,
        Reason::AdoptFailed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::ServiceNotListed => "service_not_listed",
            Reason::NoUser => "no_user",
            Reason::UnknownUser => "unknown_user",
            Reason::Root => "root",
            Reason::NodeSetup => "node_setup",
            Reason::Spool => "spool",
            Reason::StepdUnreachable => "stepd_unreachable",
            Reason::StepdUntrusted => "stepd_untrusted",
            Reason::NoJobs => "no_jobs",
            Reason::JobStarting => "job_starting",
            Reason::OnlyJob => "only_job",
            Reason::CallerIdMatch => "callerid_match",
            Reason::NewestJob => "newest_job",
            Reason::UnknownAllow => "unknown_allow",
            Reason::UnknownDeny => "unknown_deny",
            Reason::JobVanished => "job_vanished",
            Reason::AdoptFailed => "adopt_failed",
        }
    }
}

impl From<select::Reason> for Reason {
    fn from(r: select::Reason) -> Reason {
        match r {
            select::Reason::NoJobs => Reason::NoJobs,
            select::Reason::OnlyJob => Reason::OnlyJob,
            select::Reason::CallerIdMatch => Reason::CallerIdMatch,
            select::Reason::NewestJob => Reason::NewestJob,
            select::Reason::UnknownAllow => Reason::UnknownAllow,
            select::Reason::UnknownDeny => Reason::UnknownDeny,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The decision line's `callerid=` field: `-` when the RPC was not asked.
pub fn callerid_code(answer: &CallerId) -> String {
    match answer {
        CallerId::NotAsked => "-".to_owned(),
        CallerId::NoSocket => "no_tcp_socket".to_owned(),
        CallerId::Job(id) => id.to_string(),
        CallerId::NotFound => "not_found".to_owned(),
        CallerId::Failed => "failed".to_owned(),
    }
}

/// A syslog priority, as the login core means it; the front end maps it to
/// its own and filters by `log_level=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Err,
    Warning,
    Info,
    Debug,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub priority: Priority,
    pub text: String,
}

/// Everything the login core decided about one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub reason: Reason,
    /// What the source node's slurmd said, if it was asked.
    pub callerid: CallerId,
    /// The job chosen (also when adopting into it failed).
    pub job: Option<u32>,
    pub user: String,
    pub uid: Option<u32>,
    pub service: String,
    /// Shown to the user through the PAM conversation.
    pub user_message: Option<std::borrow::Cow<'static, str>>,
    /// `pam_putenv` pairs, already checked to be safe to export.
    pub env: Vec<(&'static str, String)>,
    /// Lines to log before the decision line, in order.
    pub log: Vec<LogLine>,
    /// Live stepds that did not say whose they are: the user's jobs found
    /// may not be all of them.
    pub unanswered: usize,
}

impl Outcome {
    pub fn pam_code(&self) -> PamCode {
        self.decision.pam_code()
    }

    /// The one grep-able line per login. Values that come from outside
    /// (PAM_USER, PAM_RHOST, the service) are escaped so that none of them
    /// can add a field or a line: anything but `[A-Za-z0-9._@:/+-]`
    /// becomes `%XX`.
    pub fn decision_line(&self, rhost: &str, pid: u32, usec: u128) -> String {
        format!(
            "user={} uid={} service={} rhost={} pid={pid} decision={} job={} reason={} callerid={} usec={usec} unanswered={}",
            field(&self.user),
            self.uid.map_or("-".to_owned(), |u| u.to_string()),
            field(&self.service),
            field(rhost),
            self.decision.code(),
            self.job.map_or("-".to_owned(), |j| j.to_string()),
            self.reason.code(),
            callerid_code(&self.callerid),
            self.unanswered,
        )
    }
}

/// A value for a `key=value` field: `-` when empty, percent-escaped
/// outside a conservative set so the line's shape cannot be forged.
pub fn field(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"._@:/+-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn fields_cannot_forge_the_line() {
        assert_eq!(field(""), "-");
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("10.0.0.1"), "10.0.0.1");
        assert_eq!(field("fe80::1"), "fe80::1");
        assert_eq!(field("a decision=adopt"), "a%20decision%3Dadopt");
        assert_eq!(field("x\ny"), "x%0Ay");
        assert_eq!(field("é"), "%C3%A9");
    }

    #[test]
    fn callerid_field() {
        assert_eq!(callerid_code(&CallerId::NotAsked), "-");
        assert_eq!(callerid_code(&CallerId::Job(42)), "42");
        assert_eq!(callerid_code(&CallerId::NotFound), "not_found");
        assert_eq!(callerid_code(&CallerId::Failed), "failed");
        assert_eq!(callerid_code(&CallerId::NoSocket), "no_tcp_socket");
    }
}
