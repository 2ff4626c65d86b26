//! slurm-node's StepdClient against the shim: every request, every stepd
//! version corner, every fault mode. A fault must end in the right error
//! within the deadline, never in a hang.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use slurm_node::stepd::{ScanAnswer, StepState, StepdClient, StepdError, StepdPeers, X11Display};
use slurmd_shim::stepd::{BATCH_STEP_ID, EXTERN_STEP_ID, FakeStep, Fault, StepdShim};

const NODE: &str = "n1";
const UID: u32 = 1001;
/// The budget a faulty stepd gets, and how late past it an answer may come.
const DEADLINE: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(200);

struct Spool {
    dir: tempfile::TempDir,
}

impl Spool {
    fn new() -> Spool {
        Spool {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn serve(&self, steps: Vec<FakeStep>) -> StepdShim {
        StepdShim::start(self.dir.path(), NODE, steps).expect("start shim")
    }

    fn socket(&self, job_id: u32) -> PathBuf {
        self.dir
            .path()
            .join(format!("{NODE}_{job_id}.{EXTERN_STEP_ID}"))
    }

    /// A file to hand out as the "namespace".
    /// The test's own mount namespace: the client checks a received fd
    /// is a namespace file (nsfs) of the announced kind, so a regular file
    /// no longer stands in for one.
    fn ns_file(&self) -> PathBuf {
        PathBuf::from("/proc/self/ns/mnt")
    }
}

/// The shim runs in this process, as this test's user.
fn peers() -> StepdPeers {
    StepdPeers::from_uids(vec![nix::unistd::geteuid().as_raw()])
}

/// Every stepd's answer kept, as a result per path.
fn scan(paths: &[PathBuf], deadline: Instant) -> Vec<Result<(StepdClient, u32), StepdError>> {
    slurm_node::stepd::scan_step_uids(paths, &peers(), deadline, |_| true)
        .into_iter()
        .map(|answer| match answer {
            ScanAnswer::Kept { client, uid } => Ok((client, uid)),
            ScanAnswer::Failed(e) => Err(e),
            ScanAnswer::Closed { uid } => panic!("kept everything, yet uid {uid} was closed"),
        })
        .collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Run `f` with a [`DEADLINE`] deadline and check it came back in time.
fn timed<T>(what: &str, f: impl FnOnce(Instant) -> T) -> T {
    let started = Instant::now();
    let out = f(started + DEADLINE);
    let took = started.elapsed();
    assert!(took < DEADLINE + SLACK, "{what} took {took:?}");
    out
}

fn step_with(job_id: u32, fault: Fault) -> FakeStep {
    let mut step = FakeStep::extern_step(job_id, UID);
    step.fault = fault;
    step
}

/// The requests a client can make, for running each against a fault.
#[derive(Debug, Clone, Copy)]
enum Req {
    State,
    StepUid,
    AddPid,
    X11,
    Namespaces,
    DaemonPid,
}

const ALL: [Req; 6] = [
    Req::State,
    Req::StepUid,
    Req::AddPid,
    Req::X11,
    Req::Namespaces,
    Req::DaemonPid,
];

impl Req {
    fn run(self, client: &mut StepdClient) -> Result<(), StepdError> {
        match self {
            Req::State => client.state().map(drop),
            Req::StepUid => client.step_uid().map(drop),
            Req::AddPid => client.add_extern_pid(4242),
            Req::X11 => client.x11_display().map(drop),
            Req::Namespaces => client.namespace_fds().map(drop),
            Req::DaemonPid => client.daemon_pid().map(drop),
        }
    }

    fn op(self, version: u32) -> &'static str {
        match self {
            Req::State => "state",
            Req::StepUid => "step_uid",
            Req::AddPid => "add_extern_pid",
            Req::X11 => "x11_display",
            Req::Namespaces if version >= 0x2C00 => "get_ns_fds",
            Req::Namespaces => "get_ns_fd",
            Req::DaemonPid => "daemon_pid",
        }
    }
}

/// Every request on a fresh connection to a stepd with `fault`, at the
/// given versions; `check` sees each error.
fn each_request_fails(fault: Fault, check: impl Fn(Req, u32, StepdError)) {
    for version in [0x2600, 0x2C00] {
        for req in ALL {
            let spool = Spool::new();
            let mut step = step_with(1, fault.clone());
            step.protocol_version = version;
            step.namespace = Some(spool.ns_file());
            let _shim = spool.serve(vec![step]);
            let err = timed(&format!("{req:?} at {version:#x}"), |deadline| {
                let mut client = StepdClient::connect(&spool.socket(1), &peers(), deadline)
                    .unwrap_or_else(|e| panic!("{fault:?}: handshake should work: {e}"));
                req.run(&mut client)
                    .expect_err(&format!("{req:?} at {version:#x} should fail"))
            });
            assert_eq!(err.path(), spool.socket(1), "{err}");
            check(req, version, err);
        }
    }
}

fn same_file(fd: std::os::fd::OwnedFd, path: &Path) {
    let got = File::from(fd).metadata().expect("fstat received fd");
    let want = std::fs::metadata(path).expect("stat ns file");
    assert_eq!((got.dev(), got.ino()), (want.dev(), want.ino()));
}

#[test]
fn a_healthy_22_05_extern_step_answers_every_request() {
    let spool = Spool::new();
    let shim = spool.serve(vec![FakeStep::extern_step(7, UID)]);
    let mut client = StepdClient::connect(&spool.socket(7), &peers(), soon()).expect("connect");
    assert_eq!(client.protocol_version(), 0x2600);
    assert_eq!(client.path(), spool.socket(7));
    assert_eq!(client.state().expect("state"), StepState::Running);
    assert_eq!(client.step_uid().expect("uid"), UID);
    assert_eq!(
        client.daemon_pid().expect("pid"),
        i32::try_from(std::process::id()).expect("pid fits")
    );
    client.add_extern_pid(4242).expect("add pid");
    assert_eq!(
        client.x11_display().expect("x11"),
        X11Display {
            display: 0,
            xauthority: None
        }
    );
    assert!(client.namespace_fds().expect("ns").is_empty());
    assert_eq!(shim.requests(7), [5, 20, 9, 22, 23, 26]);
    assert_eq!(shim.added_pids(7), [4242]);
    assert!(shim.added_pids(8).is_empty());
}

#[test]
fn step_state_is_read_with_the_stepds_numbering() {
    for (raw, version, want) in [
        (3, 0x2700, StepState::Ending),
        (3, 0x2800, StepState::Cancelled),
        (4, 0x2D00, StepState::Ending),
        (1, 0x2600, StepState::Starting),
        (9, 0x2D00, StepState::Unknown(9)),
    ] {
        let spool = Spool::new();
        let mut step = FakeStep::extern_step(2, UID);
        step.state = raw;
        step.protocol_version = version;
        let _shim = spool.serve(vec![step]);
        let mut client = StepdClient::connect(&spool.socket(2), &peers(), soon()).expect("connect");
        assert_eq!(client.protocol_version(), version);
        assert_eq!(
            client.state().expect("state"),
            want,
            "{raw} at {version:#x}"
        );
    }
}

#[test]
fn x11_is_read_in_full_so_the_connection_stays_usable() {
    let spool = Spool::new();
    let mut step = FakeStep::extern_step(3, UID);
    step.x11 = Some((12, "/tmp/.Xauthority-abc".to_owned()));
    step.namespace = Some(spool.ns_file());
    let shim = spool.serve(vec![step]);
    let mut client = StepdClient::connect(&spool.socket(3), &peers(), soon()).expect("connect");
    assert_eq!(
        client.x11_display().expect("x11"),
        X11Display {
            display: 12,
            xauthority: Some("/tmp/.Xauthority-abc".to_owned())
        }
    );
    assert_eq!(client.step_uid().expect("uid after x11"), UID);
    assert_eq!(client.namespace_fds().expect("ns after x11").len(), 1);
    assert_eq!(shim.requests(3), [23, 20, 26]);
}

#[test]
fn stepds_before_25_11_pass_the_namespace_with_get_ns_fd() {
    for version in [0x2600, 0x2700, 0x2A00, 0x2B00] {
        let spool = Spool::new();
        let ns = spool.ns_file();
        let mut step = FakeStep::extern_step(4, UID);
        step.protocol_version = version;
        step.namespace = Some(ns.clone());
        let shim = spool.serve(vec![step]);
        let mut client = StepdClient::connect(&spool.socket(4), &peers(), soon()).expect("connect");
        let mut fds = client.namespace_fds().expect("ns fds");
        assert_eq!(fds.len(), 1, "{version:#x}");
        let only = fds.remove(0);
        // Old stepds send no type: the one fd is the job container's
        // mount namespace, announced as such so setns checks its kind.
        assert_eq!(only.nstype, libc::CLONE_NEWNS, "{version:#x}");
        same_file(only.fd, &ns);
        assert_eq!(shim.requests(4), [26], "{version:#x}");
        assert_eq!(client.step_uid().expect("uid after fd"), UID);
    }
}

#[test]
fn stepds_from_25_11_pass_namespaces_with_get_ns_fds() {
    for version in [0x2C00, 0x2D00] {
        let spool = Spool::new();
        let ns = spool.ns_file();
        let mut step = FakeStep::extern_step(5, UID);
        step.protocol_version = version;
        step.namespace = Some(ns.clone());
        let shim = spool.serve(vec![step]);
        let mut client = StepdClient::connect(&spool.socket(5), &peers(), soon()).expect("connect");
        let mut fds = client.namespace_fds().expect("ns fds");
        assert_eq!(fds.len(), 1, "{version:#x}");
        let only = fds.remove(0);
        assert_eq!(only.nstype, 0x0002_0000, "CLONE_NEWNS");
        same_file(only.fd, &ns);
        assert_eq!(shim.requests(5), [28], "{version:#x}");
        assert_eq!(client.step_uid().expect("uid after fd"), UID);
    }
}

#[test]
fn no_namespace_is_an_empty_list_in_every_version() {
    for (version, request) in [(0x2600, 26), (0x2B00, 26), (0x2C00, 28), (0x2D00, 28)] {
        let spool = Spool::new();
        let mut step = FakeStep::extern_step(6, UID);
        step.protocol_version = version;
        let shim = spool.serve(vec![step]);
        let mut client = StepdClient::connect(&spool.socket(6), &peers(), soon()).expect("connect");
        // A short deadline: a client using 26 against 25.11+ would hang here.
        client.set_deadline(Instant::now() + DEADLINE);
        let fds = timed("namespace_fds", |_| client.namespace_fds()).expect("ns fds");
        assert!(fds.is_empty(), "{version:#x}");
        assert_eq!(shim.requests(6), [request], "{version:#x}");
    }
}

/// The shim itself must have the version quirks the client is built around.
#[test]
fn the_shim_reproduces_the_version_quirks_of_request_26_and_28() {
    fn raw_conn(path: &Path, request: i32) -> UnixStream {
        let mut conn = UnixStream::connect(path).expect("connect");
        conn.set_read_timeout(Some(DEADLINE)).expect("timeout");
        conn.write_all(&0x2D00i32.to_ne_bytes()).expect("hello");
        let mut version = [0u8; 4];
        conn.read_exact(&mut version).expect("version");
        conn.write_all(&request.to_ne_bytes()).expect("request");
        conn
    }
    let spool = Spool::new();
    let mut old = FakeStep::extern_step(30, UID);
    old.protocol_version = 0x2B00;
    let mut new = FakeStep::extern_step(31, UID);
    new.protocol_version = 0x2C00;
    let _shim = spool.serve(vec![old, new]);

    // 25.05 does not know 28: it closes.
    let mut buf = [0u8; 4];
    let n = raw_conn(&spool.socket(30), 28)
        .read(&mut buf)
        .expect("read");
    assert_eq!(n, 0, "expected EOF");

    // 25.11 without a namespace: 26 gets no answer and the socket stays open.
    let err = raw_conn(&spool.socket(31), 26)
        .read(&mut buf)
        .expect_err("expected silence");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

#[test]
fn a_batch_step_refuses_extern_pids() {
    let spool = Spool::new();
    let mut step = FakeStep::extern_step(9, UID);
    step.step_id = BATCH_STEP_ID;
    let shim = spool.serve(vec![step]);
    let path = spool.dir.path().join(format!("{NODE}_9.{BATCH_STEP_ID}"));
    assert_eq!(shim.socket_path(9, BATCH_STEP_ID), Some(path.as_path()));
    let mut client = StepdClient::connect(&path, &peers(), soon()).expect("connect");
    match client.add_extern_pid(1) {
        Err(StepdError::Rejected { rc: -1, .. }) => {}
        other => panic!("expected rc -1, got {other:?}"),
    }
    assert!(shim.added_pids(9).is_empty());
}

#[test]
fn fault_hang_before_handshake_reply_times_out_in_the_handshake() {
    let spool = Spool::new();
    let _shim = spool.serve(vec![step_with(1, Fault::HangBeforeHandshakeReply)]);
    let err = timed("connect", |d| {
        StepdClient::connect(&spool.socket(1), &peers(), d)
    })
    .expect_err("must time out");
    assert!(
        matches!(
            err,
            StepdError::Timeout {
                op: "handshake",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&spool.socket(1).display().to_string())
    );
}

#[test]
fn fault_reject_handshake_is_handshake_rejected() {
    let spool = Spool::new();
    let _shim = spool.serve(vec![step_with(1, Fault::RejectHandshake)]);
    let err = timed("connect", |d| {
        StepdClient::connect(&spool.socket(1), &peers(), d)
    })
    .expect_err("must be rejected");
    assert!(
        matches!(err, StepdError::HandshakeRejected { reply: -1, .. }),
        "{err:?}"
    );
}

#[test]
fn fault_wrong_version_is_refused_by_the_client() {
    let spool = Spool::new();
    let _shim = spool.serve(vec![step_with(1, Fault::WrongVersion)]);
    let err = timed("connect", |d| {
        StepdClient::connect(&spool.socket(1), &peers(), d)
    })
    .expect_err("must be refused");
    match err {
        StepdError::Protocol { op, detail, .. } => {
            assert_eq!(op, "handshake");
            assert!(detail.contains("0x1000"), "{detail}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn fault_hang_on_request_times_out_every_request() {
    each_request_fails(Fault::HangOnRequest, |req, version, err| match err {
        StepdError::Timeout { op, .. } => assert_eq!(op, req.op(version)),
        other => panic!("{req:?}: expected a timeout, got {other:?}"),
    });
}

#[test]
fn fault_close_without_reply_is_closed_for_every_request() {
    each_request_fails(Fault::CloseWithoutReply, |req, version, err| match err {
        StepdError::Closed { op, .. } => assert_eq!(op, req.op(version)),
        other => panic!("{req:?}: expected closed, got {other:?}"),
    });
}

#[test]
fn fault_garbage_is_a_protocol_error_for_every_request() {
    each_request_fails(Fault::Garbage, |req, version, err| match err {
        StepdError::Protocol { op, .. } => assert_eq!(op, req.op(version)),
        other => panic!("{req:?} at {version:#x}: expected a protocol error, got {other:?}"),
    });
}

#[test]
fn fault_slow_past_the_deadline_times_out_in_the_handshake() {
    let spool = Spool::new();
    let _shim = spool.serve(vec![step_with(1, Fault::Slow(Duration::from_secs(1)))]);
    let err = timed("connect", |d| {
        StepdClient::connect(&spool.socket(1), &peers(), d)
    })
    .expect_err("must time out");
    assert!(
        matches!(
            err,
            StepdError::Timeout {
                op: "handshake",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn fault_slow_spends_one_budget_across_calls() {
    // 200 ms per reply: the handshake fits in 300 ms, the first request
    // does not, because the deadline is for the connection, not per call.
    let spool = Spool::new();
    let _shim = spool.serve(vec![step_with(1, Fault::Slow(Duration::from_millis(200)))]);
    let err = timed("connect + step_uid", |d| {
        let mut client =
            StepdClient::connect(&spool.socket(1), &peers(), d).expect("handshake in time");
        client.step_uid().expect_err("must run out of time")
    });
    assert!(
        matches!(err, StepdError::Timeout { op: "step_uid", .. }),
        "{err:?}"
    );
}

#[test]
fn fault_slow_within_the_deadline_still_answers() {
    let spool = Spool::new();
    let mut step = step_with(1, Fault::Slow(Duration::from_millis(20)));
    step.x11 = Some((3, "/x".to_owned()));
    let shim = spool.serve(vec![step]);
    let mut client = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect("connect");
    assert_eq!(client.step_uid().expect("uid"), UID);
    client.add_extern_pid(99).expect("add");
    assert_eq!(client.x11_display().expect("x11").display, 3);
    assert_eq!(shim.added_pids(1), [99]);
}

#[test]
fn fault_reject_add_pid_is_rejected_and_the_connection_goes_on() {
    let spool = Spool::new();
    let shim = spool.serve(vec![step_with(1, Fault::RejectAddPid)]);
    let mut client = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect("connect");
    let err = timed("add_extern_pid", |d| {
        client.set_deadline(d);
        client.add_extern_pid(5).expect_err("must be refused")
    });
    match err {
        StepdError::Rejected { op, rc, .. } => assert_eq!((op, rc), ("add_extern_pid", -1)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.set_deadline(soon());
    assert_eq!(client.x11_display().expect("x11").display, 0);
    assert!(shim.added_pids(1).is_empty());
}

#[test]
fn fault_close_on_add_pid_is_closed() {
    let spool = Spool::new();
    let shim = spool.serve(vec![step_with(1, Fault::CloseOnAddPid)]);
    let err = timed("add_extern_pid", |d| {
        let mut client = StepdClient::connect(&spool.socket(1), &peers(), d).expect("connect");
        assert_eq!(client.step_uid().expect("uid"), UID);
        client.add_extern_pid(5).expect_err("must fail")
    });
    assert!(
        matches!(
            err,
            StepdError::Closed {
                op: "add_extern_pid",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(shim.added_pids(1).is_empty());
    assert_eq!(shim.requests(1), [20, 22]);
}

#[test]
fn a_hung_connection_does_not_block_other_connections_or_steps() {
    let spool = Spool::new();
    let shim = spool.serve(vec![
        step_with(1, Fault::HangOnRequest),
        FakeStep::extern_step(2, UID),
    ]);
    let mut hung = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect("first connect");
    let waiter = thread::spawn(move || hung.step_uid());
    // Same socket, second connection, while the first waits.
    timed("second connect", |d| {
        StepdClient::connect(&spool.socket(1), &peers(), d)
    })
    .expect("second handshake");
    let uid = timed("other step", |d| {
        StepdClient::connect(&spool.socket(2), &peers(), d).and_then(|mut c| c.step_uid())
    })
    .expect("other step");
    assert_eq!(uid, UID);
    assert!(!waiter.is_finished());
    drop(shim);
    // Shutting the shim down ends the hang as a close.
    assert!(matches!(
        waiter.join().expect("waiter"),
        Err(StepdError::Closed { .. })
    ));
}

#[test]
fn many_concurrent_clients_are_all_served() {
    let spool = Spool::new();
    let shim = spool.serve(vec![FakeStep::extern_step(11, UID)]);
    let path = spool.socket(11);
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            thread::spawn(move || {
                let mut c = StepdClient::connect(&path, &peers(), soon())?;
                c.add_extern_pid(1000 + i)?;
                c.step_uid()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().expect("worker").expect("served"), UID);
    }
    let mut pids = shim.added_pids(11);
    pids.sort_unstable();
    assert_eq!(pids, (1000..1016).collect::<Vec<_>>());
}

#[test]
fn dropping_the_shim_is_prompt_and_removes_its_sockets() {
    let spool = Spool::new();
    let shim = spool.serve(vec![
        step_with(1, Fault::HangOnRequest),
        step_with(2, Fault::HangBeforeHandshakeReply),
        step_with(3, Fault::Slow(Duration::from_secs(30))),
    ]);
    let mut hung = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect("connect");
    let _waiter = thread::spawn(move || hung.step_uid());
    let paths: Vec<PathBuf> = shim.socket_paths().map(Path::to_path_buf).collect();
    let _stuck: Vec<_> = [2, 3]
        .into_iter()
        .map(|job| {
            let path = spool.socket(job);
            thread::spawn(move || StepdClient::connect(&path, &peers(), soon()))
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    for p in &paths {
        let mode = std::fs::symlink_metadata(p).expect("socket").mode();
        assert_eq!(mode & 0o777, 0o777, "{}", p.display());
    }
    let started = Instant::now();
    drop(shim);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    let err = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect_err("gone");
    assert!(matches!(err, StepdError::Connect { .. }), "{err:?}");
}

#[test]
fn a_stale_socket_is_replaced_and_a_regular_file_is_not() {
    let spool = Spool::new();
    drop(spool.serve(vec![FakeStep::extern_step(1, UID)]));
    // A stale socket file left behind (as after a crash) is taken over.
    let _stale = std::os::unix::net::UnixListener::bind(spool.socket(1)).expect("stale");
    let shim = spool.serve(vec![FakeStep::extern_step(1, UID)]);
    let mut c = StepdClient::connect(&spool.socket(1), &peers(), soon()).expect("connect");
    assert_eq!(c.step_uid().expect("uid"), UID);
    drop(shim);
    std::fs::write(spool.socket(2), b"").expect("file");
    assert!(StepdShim::start(spool.dir.path(), NODE, vec![FakeStep::extern_step(2, UID)]).is_err());
}

mod binary {
    use super::*;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    const BIN: &str = env!("CARGO_BIN_EXE_slurmd-shim");

    #[test]
    fn serves_steps_until_sigterm() {
        let spool = Spool::new();
        let mut child = Command::new(BIN)
            .args(["stepd", "--node", NODE, "--protocol-version", "25.11"])
            .arg("--spool")
            .arg(spool.dir.path())
            .args(["--step", "21:1001", "--step", "22:1002:reject-add-pid"])
            .args(["--x11", "11:/tmp/xa"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn slurmd-shim");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.expect("line"))
            .collect();
        assert_eq!(
            lines,
            [
                format!("listening {}", spool.socket(21).display()),
                format!("listening {}", spool.socket(22).display()),
            ]
        );

        let mut c = StepdClient::connect(&spool.socket(21), &peers(), soon()).expect("connect");
        assert_eq!(c.protocol_version(), 0x2C00);
        assert_eq!(c.step_uid().expect("uid"), 1001);
        assert_eq!(
            c.x11_display().expect("x11"),
            X11Display {
                display: 11,
                xauthority: Some("/tmp/xa".to_owned())
            }
        );
        assert!(c.namespace_fds().expect("ns").is_empty());
        let pid = i32::try_from(child.id()).expect("pid");
        assert_eq!(c.daemon_pid().expect("daemon pid"), pid);
        let mut c = StepdClient::connect(&spool.socket(22), &peers(), soon()).expect("connect");
        assert!(matches!(
            c.add_extern_pid(1),
            Err(StepdError::Rejected { rc: -1, .. })
        ));

        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
        let status = child.wait().expect("wait");
        assert!(status.success(), "{status:?}");
        assert!(!spool.socket(21).exists());
        assert!(!spool.socket(22).exists());
    }

    #[test]
    fn help_reads_like_a_man_page() {
        let out = Command::new(BIN).arg("--help").output().expect("run");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("utf-8");
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "FAULTS",
            "EXIT STATUS",
            "EXAMPLES",
        ] {
            assert!(
                text.contains(&format!("\n{section}\n")) || text.starts_with(section),
                "{section}"
            );
        }
    }

    #[test]
    fn a_bad_command_line_exits_2() {
        let out = Command::new(BIN)
            .args([
                "stepd",
                "--node",
                NODE,
                "--step",
                "1:2:explode",
                "--spool",
                "/nonexistent",
            ])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("explode"));
    }

    #[test]
    fn an_unusable_spool_dir_exits_1() {
        let out = Command::new(BIN)
            .args([
                "stepd",
                "--node",
                NODE,
                "--step",
                "1:2",
                "--spool",
                "/nonexistent/spool",
            ])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
    }
}

#[test]
fn connect_for_uid_pipelines_the_handshake_and_step_uid() {
    let spool = Spool::new();
    let shim = spool.serve(vec![FakeStep::extern_step(31, UID)]);
    let (mut client, uid) =
        StepdClient::connect_for_uid(&spool.socket(31), &peers(), soon()).expect("connect_for_uid");
    assert_eq!(uid, UID);
    assert_eq!(client.protocol_version(), 0x2600);
    // The connection is still in step for the requests that follow.
    client.add_extern_pid(4242).expect("add_extern_pid");
    assert_eq!(shim.added_pids(31), [4242]);
    assert_eq!(shim.requests(31), [20, 22]);
}

#[test]
fn connect_for_uid_ends_in_an_error_within_the_deadline_on_every_fault() {
    let faults = [
        Fault::HangBeforeHandshakeReply,
        Fault::HangOnRequest,
        Fault::CloseWithoutReply,
        Fault::RejectHandshake,
        Fault::WrongVersion,
        Fault::Garbage,
        Fault::Slow(Duration::from_secs(2)),
    ];
    for fault in faults {
        let spool = Spool::new();
        let _shim = spool.serve(vec![step_with(32, fault.clone())]);
        let result = timed(&format!("{fault:?}"), |deadline| {
            StepdClient::connect_for_uid(&spool.socket(32), &peers(), deadline)
        });
        assert!(result.is_err(), "{fault:?} gave {result:?}");
    }
}

#[test]
fn scan_step_uids_reads_every_owner_in_order() {
    let spool = Spool::new();
    let owner = |job: u32| 2000 + job % 7;
    let _shim = spool.serve(
        (1..=50)
            .map(|job| FakeStep::extern_step(job, owner(job)))
            .collect(),
    );
    let paths: Vec<PathBuf> = (1..=50).map(|job| spool.socket(job)).collect();
    let results = scan(&paths, soon());
    assert_eq!(results.len(), 50);
    for (job, (path, result)) in (1..=50).zip(paths.iter().zip(results)) {
        let (client, uid) = result.unwrap_or_else(|e| panic!("job {job}: {e}"));
        assert_eq!(uid, owner(job), "job {job}");
        assert_eq!(client.path(), path);
        assert_eq!(client.protocol_version(), 0x2600);
    }
}

#[test]
fn scan_step_uids_isolates_faulty_stepds_within_the_deadline() {
    let faults = [
        Fault::HangBeforeHandshakeReply,
        Fault::HangOnRequest,
        Fault::CloseWithoutReply,
        Fault::RejectHandshake,
        Fault::WrongVersion,
        Fault::Garbage,
        Fault::Slow(Duration::from_secs(2)),
    ];
    let spool = Spool::new();
    // Jobs 1..=7 are faulty, 101..=110 fine, interleaved in the paths.
    let mut steps: Vec<FakeStep> = faults
        .iter()
        .zip(1..)
        .map(|(fault, job)| step_with(job, fault.clone()))
        .collect();
    steps.extend((101..=110).map(|job| FakeStep::extern_step(job, UID)));
    let shim = spool.serve(steps);
    let mut jobs: Vec<u32> = Vec::new();
    for i in 0..10u32 {
        jobs.push(101 + i);
        if let Some(faulty) = (1..=7u32).nth(i as usize) {
            jobs.push(faulty);
        }
    }
    let paths: Vec<PathBuf> = jobs.iter().map(|&job| spool.socket(job)).collect();
    let results = timed("scan_step_uids", |deadline| scan(&paths, deadline));
    assert_eq!(results.len(), jobs.len());
    for (&job, (path, result)) in jobs.iter().zip(paths.iter().zip(results)) {
        if job > 100 {
            let (mut client, uid) = result.unwrap_or_else(|e| panic!("job {job}: {e}"));
            assert_eq!(uid, UID);
            // The scan spent its whole budget waiting for the hung ones.
            client.set_deadline(soon());
            client.add_extern_pid(4242).expect("add_extern_pid");
            assert_eq!(shim.added_pids(job), [4242]);
            assert_eq!(shim.requests(job), [20, 22]);
            continue;
        }
        let fault = &faults[job as usize - 1];
        let err = result.expect_err(&format!("{fault:?} must fail"));
        assert_eq!(err.path(), path);
        match (fault, &err) {
            (Fault::HangBeforeHandshakeReply | Fault::Slow(_), StepdError::Timeout { op, .. }) => {
                assert_eq!(*op, "handshake")
            }
            (Fault::HangOnRequest, StepdError::Timeout { op, .. })
            | (Fault::CloseWithoutReply, StepdError::Closed { op, .. })
            | (Fault::Garbage, StepdError::Protocol { op, .. }) => assert_eq!(*op, "step_uid"),
            (Fault::RejectHandshake, StepdError::HandshakeRejected { reply: -1, .. }) => {}
            (Fault::WrongVersion, StepdError::Protocol { op, .. }) => assert_eq!(*op, "handshake"),
            _ => panic!("{fault:?} gave {err:?}"),
        }
    }
}

#[test]
fn scan_step_uids_with_a_passed_deadline_times_out_every_step() {
    let spool = Spool::new();
    let _shim = spool.serve(vec![FakeStep::extern_step(1, UID)]);
    let paths = vec![spool.socket(1), spool.socket(2)];
    let results = scan(&paths, Instant::now());
    assert_eq!(results.len(), 2);
    for result in results {
        assert!(
            matches!(result, Err(StepdError::Timeout { op: "connect", .. })),
            "{result:?}"
        );
    }
    let results = scan(&paths, soon());
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StepdError::Connect { .. })),
        "{:?}",
        results[1]
    );
}
