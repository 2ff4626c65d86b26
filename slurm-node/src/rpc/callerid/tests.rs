//! End to end against a fake slurmd on 127.0.0.1, with a real munged.

use super::*;
use crate::rpc::Rejection;
use crate::rpc::hash::verify_payload;
use crate::rpc::header::{
    Header, Message, NO_VAL16, OrigAddr, SLURM_22_05_PROTOCOL_VERSION,
    SLURM_24_11_PROTOCOL_VERSION, SLURM_26_05_PROTOCOL_VERSION, SLURM_NO_AUTH_CRED,
    SUPPORTED_VERSIONS, decode_framed, encode_message,
};
use crate::rpc::munge::tests::TestMunged;
use crate::rpc::pack::tests::Rng;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

fn reference_request() -> CallerIdRequest {
    CallerIdRequest {
        client: "127.0.0.1:40000".parse().unwrap(),
        server: "127.0.0.1:22".parse().unwrap(),
    }
}

#[derive(Clone)]
enum Act {
    /// Answer properly with this job id (NO_VAL for "not found").
    Answer(u32),
    /// Read the request, then say nothing until the client hangs up.
    Hang,
    /// Trickle a reply out a byte at a time, slower than any deadline.
    Drip,
    /// Read the request, then close (22.05-24.11 on a bad version).
    Close,
    /// Send half a length prefix, then close.
    CloseMidReply,
    /// A well-framed reply full of junk.
    Garbage,
    /// RESPONSE_SLURM_RC with this code, signed.
    Rc(u32),
    /// What 25.05+ send for a header they cannot read.
    HeaderRejected,
    /// A correct reply whose credential hashes another body.
    WrongHash,
    /// A correct reply without an auth section.
    NoAuth,
    /// A reply in another version than the request's.
    OtherVersion,
}

struct Fake {
    addr: SocketAddr,
    handle: JoinHandle<Vec<u16>>,
}

impl Fake {
    /// Serves one connection per act, in order; returns the versions seen.
    fn start(munge: MungeContext, acts: Vec<Act>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            for act in acts {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                seen.push(serve(&mut s, &munge, act));
            }
            seen
        });
        Fake { addr, handle }
    }

    fn seen(self) -> Vec<u16> {
        self.handle.join().unwrap()
    }
}

fn read_request(s: &mut TcpStream, munge: &MungeContext) -> (Message, u32) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    let msg = decode_message(&buf).unwrap();
    assert_eq!(msg.header.msg_type, REQUEST_NETWORK_CALLERID);
    assert_eq!(msg.header.flags, 0);
    assert_eq!(msg.header.orig_addr, OrigAddr::Unspecified);
    assert_eq!(msg.auth_plugin, Some(101));
    let d = munge.decode(msg.credential.as_deref().unwrap()).unwrap();
    assert_eq!(d.payload.len(), 33);
    verify_payload(REQUEST_NETWORK_CALLERID, &msg.body, &d.payload).unwrap();
    assert_eq!(
        decode_callerid_request(&msg.body).unwrap(),
        reference_request()
    );
    (msg, d.uid)
}

fn signed_reply(
    munge: &MungeContext,
    version: u16,
    msg_type: u16,
    body: &[u8],
    hashed: &[u8],
    uid: u32,
) -> Vec<u8> {
    let cred = munge
        .encode_for(&body_hash(msg_type, hashed), Some(uid))
        .unwrap();
    encode_message(&Header::request(version, msg_type), Some(&cred), body).unwrap()
}

fn serve(s: &mut TcpStream, munge: &MungeContext, act: Act) -> u16 {
    let (req, uid) = read_request(s, munge);
    let v = req.header.version;
    let answer = |job: u32| {
        let resp = CallerIdResponse {
            sluid: (v >= 0x2C00).then_some(99),
            job_id: job,
            step_id: (v >= 0x2C00).then_some(0xffff_fffc),
            step_het_comp: (v >= 0x2C00).then_some(NO_VAL),
            return_code: 0,
            node_name: Some("vm".into()),
        };
        encode_callerid_response(v, &resp).unwrap()
    };
    let reply = match act {
        Act::Answer(job) => {
            let body = answer(job);
            signed_reply(munge, v, RESPONSE_NETWORK_CALLERID, &body, &body, uid)
        }
        Act::Hang => {
            let mut sink = [0u8; 64];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            return v;
        }
        Act::Close => return v,
        Act::Drip => {
            for b in [0u8, 0, 0, 40].into_iter().chain([0; 40]) {
                if s.write_all(&[b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            return v;
        }
        Act::CloseMidReply => vec![0, 0],
        Act::Garbage => {
            let mut g = vec![0, 0, 0, 40];
            g.extend(Rng::new(9).bytes(40));
            g
        }
        Act::Rc(rc) => signed_reply(
            munge,
            v,
            RESPONSE_SLURM_RC,
            &encode_rc(rc),
            &encode_rc(rc),
            uid,
        ),
        Act::HeaderRejected => {
            let mut h = Header::request(NO_VAL16, RESPONSE_SLURM_RC);
            h.flags = SLURM_NO_AUTH_CRED;
            h.orig_addr = OrigAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000));
            encode_message(&h, None, &encode_rc(SLURM_PROTOCOL_AUTHENTICATION_ERROR)).unwrap()
        }
        Act::WrongHash => {
            let body = answer(7);
            signed_reply(munge, v, RESPONSE_NETWORK_CALLERID, &body, &answer(8), uid)
        }
        Act::NoAuth => {
            let mut h = Header::request(v, RESPONSE_NETWORK_CALLERID);
            h.flags = SLURM_NO_AUTH_CRED;
            encode_message(&h, None, &answer(7)).unwrap()
        }
        Act::OtherVersion => {
            let other = if v == 0x2600 { 0x2700 } else { 0x2600 };
            let body = answer(7);
            signed_reply(munge, other, RESPONSE_NETWORK_CALLERID, &body, &body, uid)
        }
    };
    // Sanity: what we send is a well-formed frame, garbage aside.
    let _ = decode_framed(&reply);
    let _ = s.write_all(&reply);
    v
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn root() -> Vec<u32> {
    vec![nix::unistd::getuid().as_raw()]
}

fn run(acts: Vec<Act>, versions: &[u16]) -> (Result<CallerIdReply, RpcError>, Vec<u16>) {
    run_with(acts, versions, &root(), Duration::from_secs(10))
}

fn run_with(
    acts: Vec<Act>,
    versions: &[u16],
    trusted: &[u32],
    budget: Duration,
) -> (Result<CallerIdReply, RpcError>, Vec<u16>) {
    let munged = TestMunged::start();
    let fake = Fake::start(munged.context(), acts);
    // Counted from here so a slow munged start does not eat the budget.
    let deadline = Instant::now() + budget;
    let r = query_callerid_detailed(
        fake.addr,
        &reference_request(),
        versions,
        trusted,
        &munged.context(),
        deadline,
    );
    (r, fake.seen())
}

#[test]
fn finds_the_job_in_every_version() {
    let acts = vec![Act::Answer(1234); SUPPORTED_VERSIONS.len()];
    let munged = TestMunged::start();
    let fake = Fake::start(munged.context(), acts);
    for &v in &SUPPORTED_VERSIONS {
        let r = query_callerid_detailed(
            fake.addr,
            &reference_request(),
            &[v],
            &root(),
            &munged.context(),
            soon(),
        )
        .unwrap();
        assert_eq!(r.answer, CallerIdAnswer::Job(1234));
        assert_eq!(r.version, v);
        assert_eq!(r.signer_uid, root()[0]);
        assert_eq!(r.response.node_name.as_deref(), Some("vm"));
        assert_eq!(r.response.sluid.is_some(), v >= 0x2C00);
    }
    assert_eq!(fake.seen(), SUPPORTED_VERSIONS);
}

#[test]
fn not_found_and_the_short_entry_point() {
    let munged = TestMunged::start();
    let fake = Fake::start(munged.context(), vec![Act::Answer(NO_VAL)]);
    let a = query_callerid(
        fake.addr,
        &reference_request(),
        &[SLURM_22_05_PROTOCOL_VERSION],
        &root(),
        &munged.context(),
        soon(),
    )
    .unwrap();
    assert_eq!(a, CallerIdAnswer::NotFound);
    fake.seen();
}

#[test]
fn retries_down_the_versions_on_each_kind_of_refusal() {
    let acts = vec![
        Act::Rc(SLURM_PROTOCOL_VERSION_ERROR),
        Act::HeaderRejected,
        Act::Close,
        Act::Answer(77),
    ];
    let (r, seen) = run(acts, &[0x2D00, 0x2C00, 0x2B00, 0x2A00, 0x2900]);
    let r = r.unwrap();
    assert_eq!(r.answer, CallerIdAnswer::Job(77));
    assert_eq!(r.version, 0x2A00);
    assert_eq!(seen, [0x2D00, 0x2C00, 0x2B00, 0x2A00]);
}

#[test]
fn gives_up_when_every_version_is_refused() {
    let (r, seen) = run(vec![Act::Close, Act::Close], &[0x2D00, 0x2C00]);
    let e = r.unwrap_err();
    assert!(
        matches!(&e, RpcError::VersionsExhausted { tried, .. } if tried == &[0x2D00, 0x2C00]),
        "{e}"
    );
    assert_eq!(seen, [0x2D00, 0x2C00]);

    // One version: the refusal itself.
    let (r, _) = run(vec![Act::Close], &[0x2600]);
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            RpcError::VersionRejected {
                version: 0x2600,
                how: Rejection::ClosedWithoutReply,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn other_rc_is_an_error_and_not_retried() {
    let (r, seen) = run(vec![Act::Rc(2017)], &[0x2D00, 0x2C00]);
    assert!(
        matches!(r, Err(RpcError::SlurmRc { rc: 2017, .. })),
        "{r:?}"
    );
    assert_eq!(seen, [0x2D00]);
}

#[test]
fn a_hanging_slurmd_costs_only_the_deadline() {
    let budget = Duration::from_millis(500);
    let started = Instant::now();
    let (r, _) = run_with(vec![Act::Hang], &[0x2A00, 0x2900], &root(), budget);
    let took = started.elapsed();
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            RpcError::Timeout {
                stage: Stage::Receiving,
                ..
            }
        ),
        "{e}"
    );
    // `took` includes starting munged and joining the fake slurmd.
    assert!(took >= budget, "gave up early, after {took:?}");
    assert!(took < budget + Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_trickling_slurmd_costs_only_the_deadline() {
    // Each read makes progress, so only an overall deadline stops this.
    let budget = Duration::from_millis(500);
    let started = Instant::now();
    let (r, _) = run_with(vec![Act::Drip], &[0x2A00], &root(), budget);
    let took = started.elapsed();
    assert!(
        matches!(
            r,
            Err(RpcError::Timeout {
                stage: Stage::Receiving,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(took < Duration::from_millis(1900), "took {took:?}");
}

#[test]
fn a_passed_deadline_fails_without_connecting() {
    // An unusable munge socket proves munged is not even asked.
    let munge = MungeContext::with_socket("/nonexistent/munge.socket");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = query_callerid(
        listener.local_addr().unwrap(),
        &reference_request(),
        &[0x2A00],
        &root(),
        &munge,
        Instant::now(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RpcError::Timeout {
                stage: Stage::Connecting,
                ..
            }
        ),
        "{e}"
    );
}

/// A listener whose accept queue is full: the kernel drops further
/// SYNs, so a connect to it hangs as it would to a filtered host.
fn filtered_peer() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    use nix::sys::socket::{Backlog, listen};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // listen() again on a listening socket only shrinks its queue.
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(_) => return (listener, queued, addr),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

#[test]
fn a_filtered_host_costs_only_the_deadline() {
    let munged = TestMunged::start();
    let (_listener, _queued, addr) = filtered_peer();
    let budget = Duration::from_millis(500);
    let started = Instant::now();
    let e = query_callerid(
        addr,
        &reference_request(),
        &[0x2A00, 0x2900],
        &root(),
        &munged.context(),
        started + budget,
    )
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            e,
            RpcError::Timeout {
                stage: Stage::Connecting,
                ..
            }
        ),
        "{e}"
    );
    assert!(took >= budget, "gave up early, after {took:?}");
    assert!(took < budget + Duration::from_millis(300), "took {took:?}");
}

#[test]
fn refused_connection_is_a_connect_error() {
    let munged = TestMunged::start();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = query_callerid(
        addr,
        &reference_request(),
        &[0x2A00, 0x2900],
        &root(),
        &munged.context(),
        soon(),
    )
    .unwrap_err();
    assert!(
        matches!(e, RpcError::Connect { peer, .. } if peer == addr),
        "{e}"
    );
    assert!(e.to_string().contains(&addr.to_string()));
}

#[test]
fn broken_replies_are_errors() {
    type Check = fn(&RpcError) -> bool;
    let cases: Vec<(Act, Check)> = vec![
        (Act::CloseMidReply, |e| {
            matches!(e, RpcError::ClosedMidReply { .. })
        }),
        (Act::Garbage, |e| matches!(e, RpcError::Malformed { .. })),
        (Act::WrongHash, |e| {
            matches!(
                e,
                RpcError::Payload {
                    source: crate::rpc::hash::PayloadError::Mismatch,
                    ..
                }
            )
        }),
        (Act::NoAuth, |e| {
            matches!(e, RpcError::Unauthenticated { .. })
        }),
        (Act::OtherVersion, |e| {
            matches!(e, RpcError::VersionMismatch { .. })
        }),
    ];
    for (act, check) in cases {
        let (r, seen) = run(vec![act], &[SLURM_24_11_PROTOCOL_VERSION, 0x2900]);
        let e = r.unwrap_err();
        assert!(check(&e), "{e}");
        assert_eq!(seen, [SLURM_24_11_PROTOCOL_VERSION], "no retry after {e}");
    }
}

#[test]
fn a_reply_from_an_untrusted_uid_is_refused() {
    // We run as root here and cannot sign as anyone else, so make root
    // the untrusted one instead.
    let (r, _) = run_with(
        vec![Act::Answer(5)],
        &[SLURM_26_05_PROTOCOL_VERSION],
        &[12345],
        Duration::from_secs(10),
    );
    assert!(
        matches!(r, Err(RpcError::UntrustedSigner { uid, .. }) if uid == root()[0]),
        "{r:?}"
    );
}

#[test]
fn no_versions_or_bad_request() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let munge = MungeContext::with_socket("/nonexistent/munge.socket");
    let e = query_callerid(addr, &reference_request(), &[], &[0], &munge, soon()).unwrap_err();
    assert!(matches!(e, RpcError::NoVersions { .. }), "{e}");
    let mixed = CallerIdRequest {
        client: "10.0.0.1:1".parse().unwrap(),
        server: "[2001:db8::2]:22".parse().unwrap(),
    };
    let e = query_callerid(addr, &mixed, &[0x2600], &[0], &munge, soon()).unwrap_err();
    assert!(matches!(e, RpcError::InvalidRequest { .. }), "{e}");
    assert_eq!(e.peer(), addr);
}
