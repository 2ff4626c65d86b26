//! The pure job-selection policy: which of the user's jobs a login joins.
//!
//! Everything here is a function of its arguments so that every branch can
//! be table-tested; the caller does the I/O (spool scan, STEP_UID, callerid
//! RPC) and feeds the results in. Each outcome carries a [`Reason`]; the
//! login core (`adopt-login`'s `outcome::Reason`) names it in the syslog
//! line and in `adoptctl check`, so its code strings live there, once.

/// What pam_slurm_adopt's `action_no_jobs` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoJobsAction {
    Deny,
    Ignore,
}

/// What pam_slurm_adopt's `action_unknown` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAction {
    Newest,
    Allow,
    Deny,
}

/// The options that steer selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub action_no_jobs: NoJobsAction,
    pub action_unknown: UnknownAction,
    pub single_job_skip_rpc: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            action_no_jobs: NoJobsAction::Deny,
            action_unknown: UnknownAction::Newest,
            single_job_skip_rpc: true,
        }
    }
}

/// One of the user's extern steps on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub job_id: u32,
    /// The extern step socket's ctime as (seconds, nanoseconds): the moment
    /// the stepd came up, which is when the job started on this node.
    pub started: (i64, i64),
}

/// What asking the source node's slurmd gave, if it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerId {
    /// The RPC was not attempted because nothing needed it.
    NotAsked,
    /// The login has no TCP peer (a local service, Teleport's own process).
    NoSocket,
    /// The source slurmd named this job.
    Job(u32),
    /// The source slurmd answered that no job owns the connection.
    NotFound,
    /// The RPC failed (no slurmd, timeout, bad credential, ...).
    Failed,
}

/// Why a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoJobs,
    OnlyJob,
    CallerIdMatch,
    NewestJob,
    UnknownAllow,
    UnknownDeny,
}

/// The user-facing denial texts. The wording after the colon is
/// pam_slurm_adopt's, so site documentation and user habits carry over.
pub const MSG_NO_JOBS: &str = "Access denied by pam_adopt: you have no active jobs on this node";
pub const MSG_UNKNOWN_JOB: &str = "Access denied by pam_adopt: unable to determine source job";
pub const MSG_ADOPT_FAILED: &str = "Access denied by pam_adopt: failed to adopt process into cgroup, denying access because action_adopt_failure=deny";
pub const MSG_NO_SLURM: &str = "No Slurm jobs found on node.";

/// What a user whose job is still in its Prolog here reads.
pub fn msg_job_starting(job_id: u32) -> String {
    format!(
        "Access denied by pam_adopt: your job {job_id} is still starting on this node, try again shortly"
    )
}

/// The outcome of selection, before any adoption is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Put the login into this job's extern step.
    Adopt { job_id: u32, reason: Reason },
    /// Let the login in without adopting it.
    Allow { reason: Reason },
    /// Refuse the login and tell the user `message`.
    Deny {
        reason: Reason,
        message: &'static str,
    },
    /// Say nothing: let the rest of the PAM stack decide.
    Ignore { reason: Reason },
}

impl Selection {
    pub fn reason(&self) -> Reason {
        match *self {
            Selection::Adopt { reason, .. }
            | Selection::Allow { reason }
            | Selection::Deny { reason, .. }
            | Selection::Ignore { reason } => reason,
        }
    }
}

/// Whether the callerid RPC is worth making for these candidates.
pub fn needs_callerid(jobs: &[Candidate], policy: &Policy) -> bool {
    match jobs.len() {
        0 => false,
        1 => !policy.single_job_skip_rpc,
        _ => true,
    }
}

/// The newest job: the extern step that started last; ties go to the
/// higher job id so the choice never depends on directory order.
pub fn newest(jobs: &[Candidate]) -> Option<u32> {
    jobs.iter()
        .max_by_key(|c| (c.started, c.job_id))
        .map(|c| c.job_id)
}

/// Choose what to do with a login for a user whose extern steps on this
/// node are `jobs` (already filtered to the user's uid).
pub fn select(jobs: &[Candidate], callerid: &CallerId, policy: &Policy) -> Selection {
    if jobs.is_empty() {
        return match policy.action_no_jobs {
            NoJobsAction::Deny => Selection::Deny {
                reason: Reason::NoJobs,
                message: MSG_NO_JOBS,
            },
            NoJobsAction::Ignore => Selection::Ignore {
                reason: Reason::NoJobs,
            },
        };
    }
    let owns = |id: u32| jobs.iter().any(|c| c.job_id == id);
    match (callerid, jobs) {
        (CallerId::Job(id), _) if owns(*id) => {
            return Selection::Adopt {
                job_id: *id,
                reason: Reason::CallerIdMatch,
            };
        }
        (CallerId::NotAsked, [only]) => {
            return Selection::Adopt {
                job_id: only.job_id,
                reason: Reason::OnlyJob,
            };
        }
        // A job the user does not own on this node is treated like no
        // answer at all: never adopt into someone else's job. What the
        // RPC said is the decision line's own `callerid=` field.
        _ => {}
    }
    // The RPC gave nothing usable: action_unknown decides, even for a single
    // job. pam_slurm_adopt does the same with single_job_skip_rpc=0, where
    // a site asked that a login be traced to its job, not merely allowed.
    match policy.action_unknown {
        UnknownAction::Allow => Selection::Allow {
            reason: Reason::UnknownAllow,
        },
        UnknownAction::Deny => Selection::Deny {
            reason: Reason::UnknownDeny,
            message: MSG_UNKNOWN_JOB,
        },
        UnknownAction::Newest => match newest(jobs) {
            Some(job_id) => Selection::Adopt {
                job_id,
                reason: Reason::NewestJob,
            },
            // Not reached: no jobs was decided above.
            None => Selection::Deny {
                reason: Reason::NoJobs,
                message: MSG_NO_JOBS,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(job_id: u32, secs: i64) -> Candidate {
        Candidate {
            job_id,
            started: (secs, 0),
        }
    }

    fn policy(no_jobs: NoJobsAction, unknown: UnknownAction, skip: bool) -> Policy {
        Policy {
            action_no_jobs: no_jobs,
            action_unknown: unknown,
            single_job_skip_rpc: skip,
        }
    }

    #[test]
    fn every_branch() {
        use CallerId as C;
        use NoJobsAction as N;
        use Selection as S;
        use UnknownAction as U;
        let two = [c(10, 100), c(11, 50)];
        let deny_unknown = S::Deny {
            reason: Reason::UnknownDeny,
            message: MSG_UNKNOWN_JOB,
        };
        let table: Vec<(&str, Vec<Candidate>, CallerId, Policy, Selection)> = vec![
            (
                "no jobs, deny",
                vec![],
                C::NotAsked,
                policy(N::Deny, U::Newest, true),
                S::Deny {
                    reason: Reason::NoJobs,
                    message: MSG_NO_JOBS,
                },
            ),
            (
                "no jobs, ignore",
                vec![],
                C::NotAsked,
                policy(N::Ignore, U::Newest, true),
                S::Ignore {
                    reason: Reason::NoJobs,
                },
            ),
            (
                "one job, rpc skipped",
                vec![c(7, 1)],
                C::NotAsked,
                policy(N::Deny, U::Deny, true),
                S::Adopt {
                    job_id: 7,
                    reason: Reason::OnlyJob,
                },
            ),
            (
                "one job, rpc asked and failed, deny",
                vec![c(7, 1)],
                C::Failed,
                policy(N::Deny, U::Deny, false),
                S::Deny {
                    reason: Reason::UnknownDeny,
                    message: MSG_UNKNOWN_JOB,
                },
            ),
            (
                "one job, rpc asked and failed, newest is that job",
                vec![c(7, 1)],
                C::Failed,
                policy(N::Deny, U::Newest, false),
                S::Adopt {
                    job_id: 7,
                    reason: Reason::NewestJob,
                },
            ),
            (
                "one job, rpc asked, no socket, allow",
                vec![c(7, 1)],
                C::NoSocket,
                policy(N::Deny, U::Allow, false),
                S::Allow {
                    reason: Reason::UnknownAllow,
                },
            ),
            (
                "one job, rpc names it",
                vec![c(7, 1)],
                C::Job(7),
                policy(N::Deny, U::Deny, false),
                S::Adopt {
                    job_id: 7,
                    reason: Reason::CallerIdMatch,
                },
            ),
            (
                "two jobs, callerid names the older",
                two.to_vec(),
                C::Job(11),
                policy(N::Deny, U::Deny, true),
                S::Adopt {
                    job_id: 11,
                    reason: Reason::CallerIdMatch,
                },
            ),
            (
                "two jobs, callerid names a foreign job, deny",
                two.to_vec(),
                C::Job(99),
                policy(N::Deny, U::Deny, true),
                deny_unknown,
            ),
            (
                "two jobs, callerid names a foreign job, newest",
                two.to_vec(),
                C::Job(99),
                policy(N::Deny, U::Newest, true),
                S::Adopt {
                    job_id: 10,
                    reason: Reason::NewestJob,
                },
            ),
            (
                "two jobs, not found, allow",
                two.to_vec(),
                C::NotFound,
                policy(N::Deny, U::Allow, true),
                S::Allow {
                    reason: Reason::UnknownAllow,
                },
            ),
            (
                "two jobs, failed, deny",
                two.to_vec(),
                C::Failed,
                policy(N::Deny, U::Deny, true),
                deny_unknown,
            ),
            (
                "two jobs, no socket, newest",
                two.to_vec(),
                C::NoSocket,
                policy(N::Deny, U::Newest, true),
                S::Adopt {
                    job_id: 10,
                    reason: Reason::NewestJob,
                },
            ),
            (
                "two jobs, not asked (caller skipped), newest",
                two.to_vec(),
                C::NotAsked,
                policy(N::Ignore, U::Newest, true),
                S::Adopt {
                    job_id: 10,
                    reason: Reason::NewestJob,
                },
            ),
        ];
        for (name, jobs, callerid, pol, want) in table {
            assert_eq!(select(&jobs, &callerid, &pol), want, "{name}");
        }
    }

    #[test]
    fn newest_prefers_later_start_then_higher_id() {
        assert_eq!(newest(&[]), None);
        assert_eq!(newest(&[c(5, 10), c(3, 20)]), Some(3));
        assert_eq!(newest(&[c(5, 20), c(9, 20), c(7, 20)]), Some(9));
        let ns = [
            Candidate {
                job_id: 1,
                started: (20, 5),
            },
            Candidate {
                job_id: 2,
                started: (20, 4),
            },
        ];
        assert_eq!(newest(&ns), Some(1));
    }

    #[test]
    fn callerid_only_when_ambiguous_or_asked() {
        let p = Policy::default();
        assert!(!needs_callerid(&[], &p));
        assert!(!needs_callerid(&[c(1, 1)], &p));
        assert!(needs_callerid(&[c(1, 1), c(2, 2)], &p));
        let always = Policy {
            single_job_skip_rpc: false,
            ..p
        };
        assert!(needs_callerid(&[c(1, 1)], &always));
    }
}
