//! slurm-node's callerid client against the slurmd shim, through a private
//! munged: every protocol version, every fault. Each exchange must end in
//! the expected answer or error within its deadline (plus a little slack),
//! never in a hang, and a refused version must make the client step down.
//!
//! A missing munged fails these tests; it is never a skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slurm_node::rpc::callerid::{
    CallerIdReply, CallerIdRequest, REQUEST_NETWORK_CALLERID, RESPONSE_NETWORK_CALLERID,
    RESPONSE_SLURM_RC, decode_callerid_response, decode_rc, encode_callerid_request,
    query_callerid, query_callerid_detailed,
};
use slurm_node::rpc::hash::{PayloadError, body_hash};
use slurm_node::rpc::header::{Message, SUPPORTED_VERSIONS, decode_message, encode_request};
use slurm_node::rpc::{Rejection, RpcError, Stage};
use slurmd_shim::munged::PrivateMunged;
use slurmd_shim::slurmd::{
    Answer, DEFAULT_UNTRUSTED_UID, Fault, SlurmdConfig, SlurmdShim, accepted_by,
};

/// How late past its deadline an exchange may end.
const SLACK: Duration = Duration::from_millis(200);
/// The budget of exchanges that are expected to time out.
const SHORT: Duration = Duration::from_millis(300);
/// The budget of exchanges that are expected to succeed.
const LONG: Duration = Duration::from_secs(5);
const JOB: u32 = 1234;

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Root and ourselves: who signs the shim's honest replies.
fn trusted() -> Vec<u32> {
    let mut uids = vec![0, me()];
    uids.dedup();
    uids
}

fn request() -> CallerIdRequest {
    CallerIdRequest {
        client: "127.0.0.1:40000".parse().expect("addr"),
        server: "127.0.0.1:22".parse().expect("addr"),
    }
}

/// A munged and a shim using it; the shim is dropped first.
struct Rig {
    shim: SlurmdShim,
    munged: PrivateMunged,
}

impl Rig {
    fn new(configure: impl FnOnce(SlurmdConfig) -> SlurmdConfig) -> Rig {
        let munged = PrivateMunged::start().unwrap_or_else(|e| panic!("{e}"));
        let config = configure(SlurmdConfig::new(munged.socket()).answer(Answer::Job(JOB)));
        let shim = SlurmdShim::start("127.0.0.1:0", config).expect("start slurmd shim");
        Rig { shim, munged }
    }

    fn addr(&self) -> SocketAddr {
        self.shim.local_addr()
    }

    /// One query with `budget`, checked to end within it plus [`SLACK`].
    fn query(
        &self,
        versions: &[u16],
        trusted: &[u32],
        budget: Duration,
    ) -> (Result<CallerIdReply, RpcError>, Duration) {
        let started = Instant::now();
        let r = query_callerid_detailed(
            self.addr(),
            &request(),
            versions,
            trusted,
            &self.munged.context(),
            started + budget,
        );
        let took = started.elapsed();
        assert!(
            took < budget + SLACK,
            "versions {versions:x?}: took {took:?} for a {budget:?} budget: {r:?}"
        );
        (r, took)
    }

    fn versions_seen(&self) -> Vec<u16> {
        self.shim.requests().iter().map(|s| s.version).collect()
    }

    fn assert_no_shim_errors(&self) {
        assert!(
            self.shim.errors().is_empty(),
            "shim errors: {:?}",
            self.shim.errors()
        );
    }
}

/// Runs `fault` against each version, one connection each, and hands the
/// outcome to `check`.
fn each_version(
    fault: Fault,
    trusted: &[u32],
    budget: Duration,
    check: impl Fn(u16, Result<CallerIdReply, RpcError>, Duration),
) {
    let rig = Rig::new(|c| c.fault(fault.clone()));
    for &v in &SUPPORTED_VERSIONS {
        let (r, took) = rig.query(&[v], trusted, budget);
        check(v, r, took);
    }
    assert_eq!(rig.versions_seen(), SUPPORTED_VERSIONS, "{fault}");
    for seen in rig.shim.requests() {
        assert_eq!(seen.fault, fault);
        assert_eq!(seen.request, Some(request()));
    }
    rig.assert_no_shim_errors();
}

#[test]
fn answers_in_every_version_with_that_versions_layout() {
    let rig = Rig::new(|c| c);
    for &v in &SUPPORTED_VERSIONS {
        let (r, _) = rig.query(&[v], &trusted(), LONG);
        let reply = r.unwrap_or_else(|e| panic!("{v:#x}: {e}"));
        assert_eq!(reply.answer, Answer::Job(JOB));
        assert_eq!(reply.version, v);
        assert_eq!(reply.signer_uid, me());
        assert_eq!(reply.response.node_name.as_deref(), Some("shim"));
        assert_eq!(reply.response.sluid.is_some(), v >= 0x2C00, "{v:#x}");
        assert_eq!(reply.response.step_id.is_some(), v >= 0x2C00, "{v:#x}");
    }
    let seen = rig.shim.requests();
    assert_eq!(rig.versions_seen(), SUPPORTED_VERSIONS);
    for s in &seen {
        assert_eq!(s.msg_type, REQUEST_NETWORK_CALLERID);
        assert_eq!(s.request, Some(request()));
        assert_eq!(s.sender_uid, Some(me()));
        assert_eq!(s.refused, None);
        assert_eq!(s.fault, Fault::None);
    }

    rig.shim.clear_requests();
    rig.shim.set_default_answer(Answer::NotFound);
    for &v in &SUPPORTED_VERSIONS {
        let (r, _) = rig.query(&[v], &trusted(), LONG);
        assert_eq!(r.map(|r| r.answer).ok(), Some(Answer::NotFound), "{v:#x}");
    }
    assert_eq!(rig.shim.requests().len(), SUPPORTED_VERSIONS.len());
    rig.assert_no_shim_errors();
}

#[test]
fn answers_by_connection_then_by_default() {
    let rig = Rig::new(|c| c.answer(Answer::NotFound));
    let req = request();
    rig.shim.set_answer(req.client, req.server, Answer::Job(88));
    let other = CallerIdRequest {
        client: "127.0.0.1:40001".parse().expect("addr"),
        server: req.server,
    };
    let ctx = rig.munged.context();
    let ask = |r: &CallerIdRequest| {
        query_callerid(
            rig.addr(),
            r,
            &[0x2B00],
            &trusted(),
            &ctx,
            Instant::now() + LONG,
        )
        .expect("query")
    };
    assert_eq!(ask(&req), Answer::Job(88));
    assert_eq!(ask(&other), Answer::NotFound);
    let seen: Vec<_> = rig.shim.requests().iter().map(|s| s.request).collect();
    assert_eq!(seen, [Some(req), Some(other)]);
}

#[test]
fn hang_times_out_at_the_deadline_in_every_version() {
    each_version(Fault::Hang, &trusted(), SHORT, |v, r, took| {
        assert!(
            matches!(
                r,
                Err(RpcError::Timeout {
                    stage: Stage::Receiving,
                    ..
                })
            ),
            "{v:#x}: {r:?}"
        );
        assert!(took >= SHORT, "{v:#x}: gave up early after {took:?}");
    });
}

#[test]
fn slow_within_the_budget_answers_in_every_version() {
    let delay = Duration::from_millis(60);
    each_version(Fault::Slow(delay), &trusted(), LONG, |v, r, took| {
        assert_eq!(r.map(|r| r.answer).ok(), Some(Answer::Job(JOB)), "{v:#x}");
        assert!(took >= delay, "{v:#x}: the shim did not wait ({took:?})");
    });
}

#[test]
fn slow_beyond_the_budget_times_out_in_every_version() {
    each_version(
        Fault::Slow(Duration::from_secs(2)),
        &trusted(),
        SHORT,
        |v, r, _| {
            assert!(
                matches!(
                    r,
                    Err(RpcError::Timeout {
                        stage: Stage::Receiving,
                        ..
                    })
                ),
                "{v:#x}: {r:?}"
            );
        },
    );
}

fn assert_refused(v: u16, r: Result<CallerIdReply, RpcError>, how: Rejection) {
    assert!(
        matches!(
            &r,
            Err(RpcError::VersionRejected { version, how: h, .. }) if *version == v && *h == how
        ),
        "{v:#x}: expected {how}: {r:?}"
    );
}

#[test]
fn close_without_reply_in_every_version() {
    each_version(Fault::CloseWithoutReply, &trusted(), LONG, |v, r, _| {
        assert_refused(v, r, Rejection::ClosedWithoutReply);
    });
}

#[test]
fn wrong_version_closes_like_22_05_to_24_11_in_every_version() {
    each_version(Fault::WrongVersion, &trusted(), LONG, |v, r, _| {
        assert_refused(v, r, Rejection::ClosedWithoutReply);
    });
}

#[test]
fn version_error_rc_in_every_version() {
    each_version(Fault::VersionErrorRc, &trusted(), LONG, |v, r, _| {
        assert_refused(v, r, Rejection::VersionErrorRc);
    });
}

#[test]
fn header_rejected_like_25_05_in_every_version() {
    each_version(Fault::HeaderRejected, &trusted(), LONG, |v, r, _| {
        assert_refused(v, r, Rejection::HeaderRejected);
    });
}

#[test]
fn malformed_body_is_a_bad_body_in_every_version() {
    each_version(Fault::MalformedBody, &trusted(), LONG, |v, r, _| {
        assert!(
            matches!(
                r,
                Err(RpcError::BadBody {
                    msg_type: RESPONSE_NETWORK_CALLERID,
                    ..
                })
            ),
            "{v:#x}: {r:?}"
        );
    });
}

#[test]
fn wrong_sender_uid_is_untrusted_in_every_version() {
    // As root the shim signs as nobody, and root alone is trusted; as
    // anyone else it can only sign as itself, which root-only trust
    // excludes just the same.
    let signer = if me() == 0 {
        DEFAULT_UNTRUSTED_UID
    } else {
        me()
    };
    each_version(Fault::WrongSenderUid, &[0], LONG, |v, r, _| {
        assert!(
            matches!(r, Err(RpcError::UntrustedSigner { uid, .. }) if uid == signer),
            "{v:#x}: {r:?}"
        );
    });
}

#[test]
fn bad_hash_is_a_payload_mismatch_in_every_version() {
    each_version(Fault::BadHash, &trusted(), LONG, |v, r, _| {
        assert!(
            matches!(
                r,
                Err(RpcError::Payload {
                    source: PayloadError::Mismatch,
                    ..
                })
            ),
            "{v:#x}: {r:?}"
        );
    });
}

#[test]
fn other_users_job_is_just_a_job_on_the_wire_in_every_version() {
    each_version(Fault::OtherUsersJob(4321), &trusted(), LONG, |v, r, _| {
        assert_eq!(r.map(|r| r.answer).ok(), Some(Answer::Job(4321)), "{v:#x}");
    });
}

#[test]
fn every_kind_of_version_refusal_makes_the_client_step_down() {
    let rig = Rig::new(|c| c);
    rig.shim.queue_faults([
        Fault::WrongVersion,
        Fault::VersionErrorRc,
        Fault::HeaderRejected,
    ]);
    let (r, _) = rig.query(&SUPPORTED_VERSIONS, &trusted(), LONG);
    let reply = r.expect("the fourth version is answered");
    assert_eq!(reply.answer, Answer::Job(JOB));
    assert_eq!(reply.version, 0x2A00);
    assert_eq!(rig.versions_seen(), [0x2D00, 0x2C00, 0x2B00, 0x2A00]);
    let faults: Vec<_> = rig.shim.requests().into_iter().map(|s| s.fault).collect();
    assert_eq!(
        faults,
        [
            Fault::WrongVersion,
            Fault::VersionErrorRc,
            Fault::HeaderRejected,
            Fault::None
        ]
    );

    // A refusal of every version tried is an error naming them all.
    rig.shim.clear_requests();
    rig.shim
        .queue_faults([Fault::WrongVersion, Fault::WrongVersion]);
    let (r, _) = rig.query(&[0x2900, 0x2800], &trusted(), LONG);
    assert!(
        matches!(&r, Err(RpcError::VersionsExhausted { tried, .. }) if tried == &[0x2900, 0x2800]),
        "{r:?}"
    );
    // The queue is used up: the fixed fault (none) is back.
    let (r, _) = rig.query(&[0x2700], &trusted(), LONG);
    assert_eq!(r.map(|r| r.answer).ok(), Some(Answer::Job(JOB)));
}

#[test]
fn each_release_is_reached_by_stepping_down_from_the_newest() {
    for &release in &SUPPORTED_VERSIONS {
        let rig = Rig::new(|c| c.like_release(release));
        let (r, _) = rig.query(&SUPPORTED_VERSIONS, &trusted(), LONG);
        let reply = r.unwrap_or_else(|e| panic!("release {release:#x}: {e}"));
        assert_eq!(reply.version, release);
        let expected: Vec<u16> = SUPPORTED_VERSIONS
            .iter()
            .copied()
            .filter(|v| *v >= release)
            .collect();
        assert_eq!(rig.versions_seen(), expected, "release {release:#x}");

        // A version outside the release's window is refused its way.
        let window = accepted_by(release);
        if let Some(&too_old) = SUPPORTED_VERSIONS.iter().find(|v| !window.contains(v)) {
            let (r, _) = rig.query(&[too_old], &trusted(), LONG);
            let how = if release >= 0x2B00 {
                Rejection::HeaderRejected
            } else {
                Rejection::ClosedWithoutReply
            };
            assert_refused(too_old, r, how);
        }
        rig.assert_no_shim_errors();
    }
    assert_eq!(accepted_by(0x2600), [0x2600, 0x2500, 0x2400]);
    assert_eq!(accepted_by(0x2A00), [0x2A00, 0x2900, 0x2800, 0x2700]);
}

// ---- raw requests, to see what the shim does with bad credentials ----

fn send_raw(addr: SocketAddr, frame: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LONG)).expect("timeout");
    s.write_all(frame).expect("send");
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("reply");
    Some(decode_message(&buf).expect("decode reply"))
}

fn raw_request(cred: &str) -> Vec<u8> {
    let body = encode_callerid_request(&request()).expect("body");
    encode_request(0x2900, REQUEST_NETWORK_CALLERID, &body, cred).expect("frame")
}

#[test]
fn requests_are_authenticated_like_slurmd_does() {
    let rig = Rig::new(|c| c);
    let ctx = rig.munged.context();
    let body = encode_callerid_request(&request()).expect("body");

    // What slurmd accepts without block_null_hash / block_zero_hash.
    let empty = ctx.encode(&[]).expect("encode");
    let none = ctx.encode(&[1, 0x13, 0xab]).expect("encode");
    let k12 = ctx
        .encode(&body_hash(REQUEST_NETWORK_CALLERID, &body))
        .expect("encode");
    for cred in [empty, none, k12] {
        let reply = send_raw(rig.addr(), &raw_request(&cred)).expect("a reply");
        assert_eq!(reply.header.msg_type, RESPONSE_NETWORK_CALLERID);
        assert_eq!(reply.header.version, 0x2900);
        let resp = decode_callerid_response(0x2900, &reply.body).expect("body");
        assert_eq!(resp.job_id, JOB);
        // Signed for us, over this body.
        let d = ctx
            .decode(reply.credential.as_deref().expect("cred"))
            .expect("decode");
        assert_eq!(
            d.payload,
            body_hash(RESPONSE_NETWORK_CALLERID, &reply.body).to_vec()
        );
    }

    // A forged credential, one hashing another body, one replayed.
    let other = ctx
        .encode(&body_hash(REQUEST_NETWORK_CALLERID, b"another body"))
        .expect("encode");
    let once = ctx.encode(&[]).expect("encode");
    assert!(send_raw(rig.addr(), &raw_request(&once)).is_some());
    for cred in ["MUNGE:bogus:".to_owned(), other, once] {
        let reply = send_raw(rig.addr(), &raw_request(&cred)).expect("an rc reply");
        assert_eq!(reply.header.msg_type, RESPONSE_SLURM_RC);
        assert_eq!(decode_rc(&reply.body), Ok(1007));
    }
    let refused: Vec<_> = rig
        .shim
        .requests()
        .into_iter()
        .filter_map(|s| s.refused)
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused[0].contains("credential refused"), "{refused:?}");
    assert!(refused[1].contains("does not hash the body"), "{refused:?}");
    assert!(refused[2].contains("credential refused"), "{refused:?}");
    rig.assert_no_shim_errors();
}

#[test]
fn a_hung_connection_does_not_hold_up_the_next_or_the_drop() {
    let rig = Rig::new(|c| c);
    rig.shim.queue_faults([Fault::Hang]);
    let cred = rig.munged.context().encode(&[]).expect("encode");
    let mut hung = TcpStream::connect(rig.addr()).expect("connect");
    hung.write_all(&raw_request(&cred)).expect("send");
    // Wait until the shim has read it, so the queued fault is spent.
    let until = Instant::now() + LONG;
    while rig.shim.requests().is_empty() {
        assert!(Instant::now() < until, "the shim never read the request");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (r, _) = rig.query(&[0x2D00], &trusted(), LONG);
    assert_eq!(r.map(|r| r.answer).ok(), Some(Answer::Job(JOB)));

    let Rig { shim, munged } = rig;
    let started = Instant::now();
    drop(shim);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        started.elapsed()
    );
    // The shim closed the hung connection on its way out.
    hung.set_read_timeout(Some(LONG)).expect("timeout");
    let mut buf = [0u8; 8];
    assert!(matches!(hung.read(&mut buf), Ok(0) | Err(_)));
    drop(munged);
}

#[test]
fn the_binary_serves_callerid_until_sigterm() {
    let munged = PrivateMunged::start().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_slurmd-shim"))
        .arg("slurmd")
        .args(["--listen", "127.0.0.1:0", "--answer", "55"])
        .arg("--munge-socket")
        .arg(munged.socket())
        .args(["--release", "24.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slurmd-shim");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let reply = query_callerid_detailed(
        addr,
        &request(),
        &SUPPORTED_VERSIONS,
        &trusted(),
        &munged.context(),
        Instant::now() + LONG,
    )
    .expect("query the binary");
    assert_eq!(reply.answer, Answer::Job(55));
    assert_eq!(reply.version, 0x2900, "24.05 is the newest it accepts");

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let status = Command::new(env!("CARGO_BIN_EXE_slurmd-shim"))
        .args(["slurmd", "--listen", "127.0.0.1:0", "--answer", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(
        status.code(),
        Some(2),
        "a missing --munge-socket is a usage error"
    );
}
