//! Every branch of the login core, against a fake node: no sockets, no
//! stepd, no slurmd, no getpwnam.

use std::path::PathBuf;
use std::time::Instant;

use slurm_node::prolog_records::StartedJob;
use slurm_node::select::{CallerId, MSG_ADOPT_FAILED, MSG_NO_JOBS, MSG_NO_SLURM, MSG_UNKNOWN_JOB};
use slurm_node::stepd::X11Display;

use super::*;
use crate::node::{AdoptError, NodeError};
use crate::options::{AdoptFailureAction, GenericFailureAction, Options};
use crate::outcome::{Decision, LogLine, Priority, Reason};

const UID: u32 = 1000;

/// A node whose every answer is set by the test, and which records what
/// the core asked of it.
#[derive(Debug, Clone)]
struct FakeNode {
    uid: Result<Option<u32>, FakeNss>,
    load_fails: bool,
    scan: Result<JobScan, ()>,
    callerid: CallerId,
    adopt: Result<Adopted, FakeAdoptError>,
    /// The Prolog's records of starting jobs, and why they could not be
    /// read.
    starting: (Vec<StartedJob>, Option<String>),
    /// What the scan finds once a starting job's extern step came up;
    /// `None`: it never comes up.
    scan_when_up: Option<Result<JobScan, ()>>,
    /// The records end during the wait (the job's Epilog ran).
    ended_during_wait: bool,
    asked: Vec<&'static str>,
}

/// How the fake's user lookup fails.
#[derive(Debug, Clone, Copy)]
enum FakeNss {
    Error(nix::Error),
    /// No answer by the login's deadline.
    Hung,
}

#[derive(Debug, Clone, Copy)]
enum FakeAdoptError {
    Vanished,
    Refused,
}

impl Default for FakeNode {
    fn default() -> Self {
        FakeNode {
            uid: Ok(Some(UID)),
            load_fails: false,
            scan: Ok(JobScan::default()),
            callerid: CallerId::Failed,
            adopt: Ok(Adopted {
                via: "stepd",
                ..Adopted::default()
            }),
            starting: (Vec::new(), None),
            scan_when_up: None,
            ended_during_wait: false,
            asked: Vec::new(),
        }
    }
}

impl NodeOps for FakeNode {
    fn user_uid(
        &mut self,
        _user: &str,
        _deadline: Instant,
    ) -> Result<Option<u32>, UserLookupError> {
        self.asked.push("user");
        self.uid.map_err(|e| match e {
            FakeNss::Error(source) => UserLookupError::Nss {
                user: "alice".into(),
                source,
            },
            FakeNss::Hung => UserLookupError::TimedOut {
                user: "alice".into(),
                waited_ms: 2000,
            },
        })
    }

    fn load_node(&mut self, _opts: &Options) -> Result<(), NodeError> {
        self.asked.push("load");
        if self.load_fails {
            return Err(NodeError::Hostname("fake: no host name".to_owned()));
        }
        Ok(())
    }

    fn scan_user_jobs(&mut self, _uid: u32, _deadline: Instant) -> Result<JobScan, NodeError> {
        self.asked.push("scan");
        self.scan
            .clone()
            .map_err(|()| NodeError::Hostname("fake: spool unreadable".to_owned()))
    }

    fn starting_jobs(&mut self, _uid: u32, _opts: &Options) -> (Vec<StartedJob>, Option<String>) {
        self.asked.push("starting");
        self.starting.clone()
    }

    fn wait_for_extern(
        &mut self,
        _uid: u32,
        _jobs: &[u32],
        _opts: &Options,
        _deadline: Instant,
    ) -> ExternWait {
        self.asked.push("wait");
        if self.ended_during_wait {
            return ExternWait::Ended;
        }
        match self.scan_when_up.take() {
            Some(scan) => {
                self.scan = scan;
                ExternWait::Up
            }
            None => ExternWait::TimedOut,
        }
    }

    fn callerid(&mut self, _local: Option<u32>, _deadline: Instant) -> CallerIdLookup {
        self.asked.push("callerid");
        CallerIdLookup {
            answer: self.callerid.clone(),
            from: Some("10.0.0.9 port 40000".to_owned()),
            error: (self.callerid == CallerId::Failed).then(|| "fake: timed out".to_owned()),
            found_via: None,
        }
    }

    fn adopt(
        &mut self,
        job_id: u32,
        _uid: u32,
        _pid: i32,
        _opts: &Options,
    ) -> Result<Adopted, AdoptError> {
        self.asked.push("adopt");
        match self.adopt.clone() {
            Ok(a) => Ok(a),
            Err(FakeAdoptError::Vanished) => Err(AdoptError::JobVanished { job_id }),
            Err(FakeAdoptError::Refused) => Err(AdoptError::NoCgroup {
                job_id,
                root: PathBuf::from("/sys/fs/cgroup"),
            }),
        }
    }
}

fn job(job_id: u32, secs: i64) -> FoundJob {
    FoundJob {
        job_id,
        started: (secs, 0),
        protocol_version: 0x2600,
        socket: PathBuf::from(format!("/spool/c1_{job_id}.4294967292")),
    }
}

fn jobs(list: &[(u32, i64)]) -> Result<JobScan, ()> {
    Ok(JobScan {
        mine: list.iter().map(|&(j, s)| job(j, s)).collect(),
        ..JobScan::default()
    })
}

fn unreachable(stale: bool) -> Unreachable {
    Unreachable {
        socket: PathBuf::from("/spool/c1_7.4294967292"),
        error: "fake: no reply".to_owned(),
        stale,
    }
}

fn untrusted() -> Untrusted {
    Untrusted {
        socket: PathBuf::from("/spool/c1_8.4294967292"),
        uid: 65534,
        pid: 777,
    }
}

fn opts(args: &[&str]) -> Options {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let (o, warnings) = Options::parse(&args);
    assert!(warnings.is_empty(), "{warnings:?}");
    o
}

fn login(user: Option<&str>) -> Login<'_> {
    Login {
        service: "sshd",
        user,
        pid: 4242,
        started: Instant::now(),
    }
}

/// One row: what the node answers, the options, and what must come out.
struct Row {
    name: &'static str,
    node: FakeNode,
    user: Option<&'static str>,
    service: &'static str,
    args: &'static [&'static str],
    decision: Decision,
    reason: Reason,
    job: Option<u32>,
    callerid: &'static str,
    message: Option<&'static str>,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            name: "",
            node: FakeNode::default(),
            user: Some("alice"),
            service: "sshd",
            args: &[],
            decision: Decision::Deny,
            reason: Reason::NoJobs,
            job: None,
            callerid: "-",
            message: None,
        }
    }
}

fn rows() -> Vec<Row> {
    let two = jobs(&[(10, 100), (11, 200)]);
    let allow_generic = &["action_generic_failure=allow"][..];
    let ignore_generic = &["action_generic_failure=ignore"][..];
    vec![
        Row {
            name: "service not listed",
            service: "login",
            decision: Decision::Ignore,
            reason: Reason::ServiceNotListed,
            ..Row::default()
        },
        Row {
            name: "service listed among several",
            service: "login",
            args: &["service=teleport,login"],
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::OnlyJob,
            job: Some(10),
            ..Row::default()
        },
        Row {
            name: "no PAM_USER, default deny",
            user: None,
            decision: Decision::Deny,
            reason: Reason::NoUser,
            ..Row::default()
        },
        Row {
            name: "empty PAM_USER, generic allow",
            user: Some(""),
            args: allow_generic,
            decision: Decision::Allow,
            reason: Reason::NoUser,
            ..Row::default()
        },
        Row {
            name: "unknown user, generic ignore",
            node: FakeNode {
                uid: Ok(None),
                ..FakeNode::default()
            },
            args: ignore_generic,
            decision: Decision::Ignore,
            reason: Reason::UnknownUser,
            ..Row::default()
        },
        Row {
            name: "user lookup error (NSS down), deny",
            node: FakeNode {
                uid: Err(FakeNss::Error(nix::Error::EIO)),
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::UnknownUser,
            ..Row::default()
        },
        Row {
            name: "user lookup not answering by the deadline, generic ignore",
            node: FakeNode {
                uid: Err(FakeNss::Hung),
                ..FakeNode::default()
            },
            args: ignore_generic,
            decision: Decision::Ignore,
            reason: Reason::UnknownUser,
            ..Row::default()
        },
        Row {
            name: "root, even with a broken config",
            node: FakeNode {
                uid: Ok(Some(0)),
                load_fails: true,
                ..FakeNode::default()
            },
            decision: Decision::Ignore,
            reason: Reason::Root,
            ..Row::default()
        },
        Row {
            name: "config error, default deny, told why",
            node: FakeNode {
                load_fails: true,
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::NodeSetup,
            message: Some(MSG_NO_SLURM),
            ..Row::default()
        },
        Row {
            name: "config error, generic allow",
            node: FakeNode {
                load_fails: true,
                ..FakeNode::default()
            },
            args: allow_generic,
            decision: Decision::Allow,
            reason: Reason::NodeSetup,
            message: Some(MSG_NO_SLURM),
            ..Row::default()
        },
        Row {
            name: "spool error, default deny",
            node: FakeNode {
                scan: Err(()),
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::Spool,
            message: Some(MSG_NO_SLURM),
            ..Row::default()
        },
        Row {
            name: "spool error, generic ignore",
            node: FakeNode {
                scan: Err(()),
                ..FakeNode::default()
            },
            args: ignore_generic,
            decision: Decision::Ignore,
            reason: Reason::Spool,
            message: Some(MSG_NO_SLURM),
            ..Row::default()
        },
        Row {
            name: "no jobs, deny with the message",
            decision: Decision::Deny,
            reason: Reason::NoJobs,
            message: Some(MSG_NO_JOBS),
            ..Row::default()
        },
        Row {
            name: "no jobs, action_no_jobs=ignore",
            args: &["action_no_jobs=ignore"],
            decision: Decision::Ignore,
            reason: Reason::NoJobs,
            ..Row::default()
        },
        Row {
            name: "a stale socket hides no job",
            node: FakeNode {
                scan: Ok(JobScan {
                    unreachable: vec![unreachable(true)],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::NoJobs,
            message: Some(MSG_NO_JOBS),
            ..Row::default()
        },
        Row {
            name: "a hung stepd and no job found: generic failure, not no_jobs",
            node: FakeNode {
                scan: Ok(JobScan {
                    unreachable: vec![unreachable(false)],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            args: &["action_no_jobs=ignore"],
            decision: Decision::Deny,
            reason: Reason::StepdUnreachable,
            ..Row::default()
        },
        Row {
            name: "an untrusted listener and no job found: generic failure, not no_jobs",
            node: FakeNode {
                scan: Ok(JobScan {
                    untrusted: vec![untrusted()],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            args: &["action_no_jobs=ignore"],
            decision: Decision::Deny,
            reason: Reason::StepdUntrusted,
            ..Row::default()
        },
        Row {
            name: "an untrusted listener, action_generic_failure=allow",
            node: FakeNode {
                scan: Ok(JobScan {
                    untrusted: vec![untrusted()],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            args: allow_generic,
            decision: Decision::Allow,
            reason: Reason::StepdUntrusted,
            ..Row::default()
        },
        Row {
            name: "untrusted beats unreachable: it is the standing fault",
            node: FakeNode {
                scan: Ok(JobScan {
                    unreachable: vec![unreachable(false)],
                    untrusted: vec![untrusted()],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::StepdUntrusted,
            ..Row::default()
        },
        Row {
            name: "an untrusted listener beside the user's job is skipped",
            node: FakeNode {
                scan: Ok(JobScan {
                    mine: vec![job(10, 100)],
                    untrusted: vec![untrusted()],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::OnlyJob,
            job: Some(10),
            ..Row::default()
        },
        Row {
            name: "a hung stepd beside the user's job: asked, not only_job",
            node: FakeNode {
                scan: Ok(JobScan {
                    mine: vec![job(10, 100)],
                    unreachable: vec![unreachable(false)],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::NewestJob,
            job: Some(10),
            callerid: "failed",
            ..Row::default()
        },
        Row {
            name: "a hung stepd beside the user's job, callerid names it",
            node: FakeNode {
                scan: Ok(JobScan {
                    mine: vec![job(10, 100)],
                    unreachable: vec![unreachable(false)],
                    ..JobScan::default()
                }),
                callerid: CallerId::Job(10),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::CallerIdMatch,
            job: Some(10),
            callerid: "10",
            ..Row::default()
        },
        Row {
            name: "a stale socket beside the user's job: only_job, no RPC",
            node: FakeNode {
                scan: Ok(JobScan {
                    mine: vec![job(10, 100)],
                    unreachable: vec![unreachable(true)],
                    ..JobScan::default()
                }),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::OnlyJob,
            job: Some(10),
            ..Row::default()
        },
        Row {
            name: "one job, no RPC",
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::OnlyJob,
            job: Some(10),
            ..Row::default()
        },
        Row {
            name: "one job, single_job_skip_rpc=0, RPC fails: action_unknown decides",
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                ..FakeNode::default()
            },
            args: &["single_job_skip_rpc=0", "action_unknown=deny"],
            decision: Decision::Deny,
            reason: Reason::UnknownDeny,
            callerid: "failed",
            message: Some(MSG_UNKNOWN_JOB),
            ..Row::default()
        },
        Row {
            name: "two jobs, callerid names one",
            node: FakeNode {
                scan: two.clone(),
                callerid: CallerId::Job(10),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::CallerIdMatch,
            job: Some(10),
            callerid: "10",
            ..Row::default()
        },
        Row {
            name: "two jobs, callerid names another user's job: newest",
            node: FakeNode {
                scan: two.clone(),
                callerid: CallerId::Job(99),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::NewestJob,
            job: Some(11),
            callerid: "99",
            ..Row::default()
        },
        Row {
            name: "two jobs, callerid not found: newest",
            node: FakeNode {
                scan: two.clone(),
                callerid: CallerId::NotFound,
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::NewestJob,
            job: Some(11),
            callerid: "not_found",
            ..Row::default()
        },
        Row {
            name: "two jobs, no TCP socket, action_unknown=allow",
            node: FakeNode {
                scan: two.clone(),
                callerid: CallerId::NoSocket,
                ..FakeNode::default()
            },
            args: &["action_unknown=allow"],
            decision: Decision::Allow,
            reason: Reason::UnknownAllow,
            callerid: "no_tcp_socket",
            ..Row::default()
        },
        Row {
            name: "two jobs, RPC failed, action_unknown=deny",
            node: FakeNode {
                scan: two.clone(),
                ..FakeNode::default()
            },
            args: &["action_unknown=deny"],
            decision: Decision::Deny,
            reason: Reason::UnknownDeny,
            callerid: "failed",
            message: Some(MSG_UNKNOWN_JOB),
            ..Row::default()
        },
        Row {
            name: "job vanished before the adoption: generic failure",
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                adopt: Err(FakeAdoptError::Vanished),
                ..FakeNode::default()
            },
            args: allow_generic,
            decision: Decision::Allow,
            reason: Reason::JobVanished,
            job: Some(10),
            ..Row::default()
        },
        Row {
            name: "adoption fails, default deny",
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                adopt: Err(FakeAdoptError::Refused),
                ..FakeNode::default()
            },
            decision: Decision::Deny,
            reason: Reason::AdoptFailed,
            job: Some(10),
            message: Some(MSG_ADOPT_FAILED),
            ..Row::default()
        },
        Row {
            name: "adoption fails, action_adopt_failure=allow",
            node: FakeNode {
                scan: jobs(&[(10, 100)]),
                adopt: Err(FakeAdoptError::Refused),
                ..FakeNode::default()
            },
            args: &["action_adopt_failure=allow"],
            decision: Decision::Allow,
            reason: Reason::AdoptFailed,
            job: Some(10),
            ..Row::default()
        },
    ]
}

fn starting(job_id: u32) -> (Vec<StartedJob>, Option<String>) {
    (
        vec![StartedJob {
            job_id,
            age: std::time::Duration::from_secs(2),
        }],
        None,
    )
}

const MSG_STARTING_12: &str =
    "Access denied by pam_adopt: your job 12 is still starting on this node, try again shortly";

fn starting_rows() -> Vec<Row> {
    vec![
        Row {
            name: "a job still starting at the deadline",
            node: FakeNode {
                starting: starting(12),
                ..FakeNode::default()
            },
            reason: Reason::JobStarting,
            job: Some(12),
            message: Some(MSG_STARTING_12),
            ..Row::default()
        },
        Row {
            name: "a starting job whose extern step comes up in time",
            node: FakeNode {
                starting: starting(12),
                scan_when_up: Some(jobs(&[(12, 300)])),
                ..FakeNode::default()
            },
            decision: Decision::Adopt,
            reason: Reason::OnlyJob,
            job: Some(12),
            ..Row::default()
        },
        Row {
            name: "a starting job that comes up as someone else's",
            node: FakeNode {
                starting: starting(12),
                scan_when_up: Some(Ok(JobScan {
                    others: 1,
                    ..JobScan::default()
                })),
                ..FakeNode::default()
            },
            message: Some(MSG_NO_JOBS),
            ..Row::default()
        },
        Row {
            name: "a job whose Epilog runs during the wait was ending: no_jobs",
            node: FakeNode {
                starting: starting(12),
                ended_during_wait: true,
                ..FakeNode::default()
            },
            message: Some(MSG_NO_JOBS),
            ..Row::default()
        },
        Row {
            name: "a starting job, action_no_jobs=ignore",
            node: FakeNode {
                starting: starting(12),
                ..FakeNode::default()
            },
            args: &["action_no_jobs=ignore"],
            decision: Decision::Ignore,
            reason: Reason::JobStarting,
            job: Some(12),
            ..Row::default()
        },
        Row {
            name: "unreadable job records are no job",
            node: FakeNode {
                starting: (
                    Vec::new(),
                    Some("fake: /run/slurm-adopt/users is writable by others".to_owned()),
                ),
                ..FakeNode::default()
            },
            message: Some(MSG_NO_JOBS),
            ..Row::default()
        },
    ]
}

#[test]
fn every_branch() {
    for row in rows().into_iter().chain(starting_rows()) {
        let row_scan_unanswered = row
            .node
            .scan
            .as_ref()
            .map_or(0, |s| s.unreachable.iter().filter(|u| !u.stale).count());
        let mut node = row.node;
        let mut l = login(row.user);
        l.service = row.service;
        let o = opts(row.args);
        let out = decide(&l, &o, &mut node);
        let name = row.name;
        assert_eq!(out.decision, row.decision, "{name}: {out:?}");
        assert_eq!(out.reason, row.reason, "{name}: {out:?}");
        assert_eq!(out.job, row.job, "{name}: {out:?}");
        assert_eq!(
            crate::outcome::callerid_code(&out.callerid),
            row.callerid,
            "{name}"
        );
        assert_eq!(out.user_message.as_deref(), row.message, "{name}: {out:?}");
        let line = out.decision_line("10.0.0.9", 1, 5);
        assert!(
            line.ends_with(&format!(" unanswered={row_scan_unanswered}")),
            "{name}: {line}"
        );
        assert!(
            line.contains(&format!(
                " decision={} job={} reason={} callerid={} ",
                row.decision.code(),
                row.job.map_or("-".to_owned(), |j| j.to_string()),
                row.reason.code(),
                row.callerid
            )),
            "{name}: {line}"
        );
    }
}

#[test]
fn an_untrusted_listener_is_logged_once_with_who_it_is() {
    let mut node = FakeNode {
        scan: Ok(JobScan {
            untrusted: vec![untrusted()],
            ..JobScan::default()
        }),
        ..FakeNode::default()
    };
    let out = decide(&login(Some("alice")), &Options::default(), &mut node);
    let lines: Vec<&LogLine> = out
        .log
        .iter()
        .filter(|l| l.text.contains("/spool/c1_8.4294967292"))
        .collect();
    assert_eq!(lines.len(), 1, "{:?}", out.log);
    let line = lines.first().map(|l| l.text.as_str()).unwrap_or_default();
    assert!(
        line.contains("uid 65534") && line.contains("pid 777"),
        "{line}"
    );
    assert_eq!(lines.first().map(|l| l.priority), Some(Priority::Err));
    // Not asked is not unanswered: the line's count is of hung stepds.
    assert_eq!(out.unanswered, 0);
}

#[test]
fn every_reason_has_a_row() {
    let seen: Vec<Reason> = rows()
        .iter()
        .chain(starting_rows().iter())
        .map(|r| r.reason)
        .collect();
    for reason in Reason::ALL {
        assert!(seen.contains(&reason), "no table row for {reason}");
    }
}

#[test]
fn root_is_let_through_before_any_slurm_file_is_read() {
    let mut node = FakeNode {
        uid: Ok(Some(0)),
        ..FakeNode::default()
    };
    decide(&login(Some("root")), &Options::default(), &mut node);
    assert_eq!(node.asked, ["user"]);
}

#[test]
fn a_service_not_listed_costs_no_lookup() {
    let mut node = FakeNode::default();
    let mut l = login(Some("alice"));
    l.service = "su";
    decide(&l, &Options::default(), &mut node);
    assert!(node.asked.is_empty(), "{:?}", node.asked);
}

#[test]
fn one_job_asks_no_rpc_and_two_do() {
    let mut node = FakeNode {
        scan: jobs(&[(10, 100)]),
        ..FakeNode::default()
    };
    decide(&login(Some("alice")), &Options::default(), &mut node);
    assert_eq!(node.asked, ["user", "load", "scan", "adopt"]);
    let mut node = FakeNode {
        scan: jobs(&[(10, 100), (11, 200)]),
        callerid: CallerId::Job(11),
        ..FakeNode::default()
    };
    decide(&login(Some("alice")), &Options::default(), &mut node);
    assert_eq!(node.asked, ["user", "load", "scan", "callerid", "adopt"]);
}

#[test]
fn the_environment_is_exported_and_a_bad_xauthority_is_not() {
    let x11 = |xauthority: &str| FakeNode {
        scan: jobs(&[(10, 100)]),
        adopt: Ok(Adopted {
            via: "stepd",
            x11: Some(X11Display {
                display: 12,
                xauthority: Some(xauthority.to_owned()),
            }),
            x11_error: None,
            namespaces_joined: 0,
        }),
        ..FakeNode::default()
    };
    let mut node = x11("/home/alice/.Xauthority");
    let out = decide(&login(Some("alice")), &Options::default(), &mut node);
    assert_eq!(
        out.env,
        [
            ("SLURM_JOB_ID", "10".to_owned()),
            ("DISPLAY", "localhost:12.0".to_owned()),
            ("XAUTHORITY", "/home/alice/.Xauthority".to_owned()),
        ]
    );
    let mut node = x11("/tmp/x\nLD_PRELOAD=/tmp/evil.so");
    let out = decide(&login(Some("alice")), &Options::default(), &mut node);
    assert_eq!(out.decision, Decision::Adopt);
    assert!(
        out.env.iter().all(|(k, _)| *k != "XAUTHORITY"),
        "{:?}",
        out.env
    );
    assert!(
        out.log.iter().any(|l| l.text.contains("control character")),
        "{:?}",
        out.log
    );
}

#[test]
fn a_forged_user_name_cannot_add_a_field() {
    let mut node = FakeNode::default();
    let out = decide(
        &login(Some("eve decision=adopt\nuser=root")),
        &Options::default(),
        &mut node,
    );
    let line = out.decision_line("h decision=adopt", 1, 1);
    assert_eq!(line.matches("decision=").count(), 1, "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn generic_failure_actions_cover_the_three_values() {
    for (arg, want) in [
        ("action_generic_failure=deny", Decision::Deny),
        ("action_generic_failure=allow", Decision::Allow),
        ("action_generic_failure=ignore", Decision::Ignore),
    ] {
        let o = opts(&[arg]);
        assert!(matches!(
            o.action_generic_failure,
            GenericFailureAction::Deny | GenericFailureAction::Allow | GenericFailureAction::Ignore
        ));
        let mut node = FakeNode {
            load_fails: true,
            ..FakeNode::default()
        };
        let out = decide(&login(Some("alice")), &o, &mut node);
        assert_eq!(out.decision, want, "{arg}");
        assert_eq!(out.pam_code(), want.pam_code(), "{arg}");
    }
    assert_eq!(
        Options::default().action_adopt_failure,
        AdoptFailureAction::Deny
    );
}

#[test]
fn job_records_are_read_only_when_no_job_is_found() {
    let mut node = FakeNode {
        scan: jobs(&[(10, 100)]),
        starting: starting(12),
        ..FakeNode::default()
    };
    let out = decide(&login(Some("alice")), &opts(&[]), &mut node);
    assert_eq!((out.decision, out.job), (Decision::Adopt, Some(10)));
    assert!(!node.asked.contains(&"starting"), "{:?}", node.asked);

    // A starting job is announced, and waited for.
    let mut node = FakeNode {
        starting: starting(12),
        ..FakeNode::default()
    };
    let out = decide(&login(Some("alice")), &opts(&[]), &mut node);
    assert_eq!(node.asked, ["user", "load", "scan", "starting", "wait"]);
    assert!(
        out.log.iter().any(|l| l.priority == Priority::Info
            && l.text.starts_with(
                "job 12 of alice is starting on this node (its Prolog began 2 s ago)"
            )),
        "{:?}",
        out.log
    );

    // Records that cannot be read are said, at warning.
    let mut node = FakeNode {
        starting: (Vec::new(), Some("fake: unsafe".to_owned())),
        ..FakeNode::default()
    };
    let out = decide(&login(Some("alice")), &opts(&[]), &mut node);
    assert!(
        out.log
            .iter()
            .any(|l| l.priority == Priority::Warning
                && l.text == "job records not read: fake: unsafe"),
        "{:?}",
        out.log
    );
}
