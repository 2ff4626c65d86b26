//! The blocking client: one connection to one slurmstepd, requests one
//! after another. The bytes on the wire come from [`super::protocol`] and
//! [`super::decode`]; this file only moves them, each syscall bounded by
//! the time left until the caller's deadline.
//!
//! Every read and write first waits in `ppoll` for the time left. The
//! socket timeouts alone (SO_RCVTIMEO / SO_SNDTIMEO) are not precise
//! enough: a blocked recv sleeps on the kernel's timer wheel, whose slots
//! for waits of 64 jiffies or more are 8 jiffies wide (32 ms at HZ=250,
//! 256 ms from 512 jiffies on), so a hung stepd cost up to that much past
//! the deadline. ppoll sleeps on a high-resolution timer and ends within
//! microseconds of it; the socket timeouts stay armed behind it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{self, MsgFlags};

use super::connect::connect_stream;
use super::decode::{
    AddExternPidReply, HandshakeReply, IntReply, Layout, NsFdReply, NsFdsReply, ReplyDecoder,
    StateReply, StepUidReply, Want, X11Reply,
};
use crate::wait::{Readiness, wait_fd};

use super::fd_passing::{FdRecvError, check_namespace, recv_fd};
use super::protocol::{
    CodecError, MAX_XAUTHORITY_LEN, NS_FDS_MIN_VERSION, Request, StepState, X11Display,
    encode_handshake, op,
};
use super::{NamespaceFd, ScanAnswer, StepdError, StepdPeers, scan_step_uids};

/// The largest single read: the longest field there is.
const READ_CHUNK: usize = MAX_XAUTHORITY_LEN;

/// One connection to one slurmstepd, handshake done.
#[derive(Debug)]
pub struct StepdClient {
    stream: UnixStream,
    path: PathBuf,
    deadline: Instant,
    version: u32,
    /// The request that left the stream mid-reply. After that any byte read
    /// could belong to the old reply, so no further request is attempted.
    broken_by: Option<&'static str>,
}

impl StepdClient {
    /// Connect to the stepd socket at `path`, check that its listener runs
    /// as one of `peers`, and do the version handshake.
    pub fn connect(path: &Path, peers: &StepdPeers, deadline: Instant) -> Result<Self, StepdError> {
        let stream = connect_stream(path, peers, deadline)?;
        let mut client = StepdClient::in_step(stream, path.to_owned(), deadline, 0);
        client.handshake()?;
        Ok(client)
    }

    /// Do the version handshake on a stream already connected to a stepd,
    /// named `path` in errors: for the fuzz target and tests, which play
    /// the stepd on the other end of a socketpair.
    pub fn over_stream(
        stream: UnixStream,
        path: PathBuf,
        deadline: Instant,
    ) -> Result<Self, StepdError> {
        let mut client = StepdClient::in_step(stream, path, deadline, 0);
        client.handshake()?;
        Ok(client)
    }

    /// A connection whose handshake is done (by the scan), at a request
    /// boundary.
    pub(crate) fn in_step(
        stream: UnixStream,
        path: PathBuf,
        deadline: Instant,
        version: u32,
    ) -> Self {
        StepdClient {
            stream,
            path,
            deadline,
            version,
            broken_by: None,
        }
    }

    /// Connect, handshake and ask REQUEST_STEP_UID in one round trip. The
    /// stepd reads the request code only after it has answered the
    /// handshake, so both can go in one write; scanning a node's steps
    /// then costs one round trip per step instead of two. The same code
    /// path as [`scan_step_uids`], for one socket.
    pub fn connect_for_uid(
        path: &Path,
        peers: &StepdPeers,
        deadline: Instant,
    ) -> Result<(Self, u32), StepdError> {
        match scan_step_uids(&[path.to_owned()], peers, deadline, |_| true).pop() {
            Some(ScanAnswer::Kept { client, uid }) => Ok((client, uid)),
            Some(ScanAnswer::Failed(e)) => Err(e),
            // Kept whatever the uid, so neither happens.
            Some(ScanAnswer::Closed { .. }) | None => Err(StepdError::Timeout {
                path: path.to_owned(),
                op: op::CONNECT,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The protocol version the stepd answered the handshake with.
    pub fn protocol_version(&self) -> u32 {
        self.version
    }

    /// The instant after which every operation on this connection fails
    /// with [`StepdError::Timeout`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The pid of the process that listens on the stepd socket, from the
    /// kernel's record of the connection (SO_PEERCRED), not from anything
    /// the stepd says. `None` where the kernel has none (a socketpair in
    /// tests has this process's own).
    pub fn peer_pid(&self) -> Option<i32> {
        socket::getsockopt(&self.stream, socket::sockopt::PeerCredentials)
            .ok()
            .map(|cred| cred.pid())
            .filter(|pid| *pid > 0)
    }

    /// Give the remaining requests a different budget, e.g. the adoption
    /// its own after a scan that used a share of the login's.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// REQUEST_STATE.
    pub fn state(&mut self) -> Result<StepState, StepdError> {
        let stepd_version = self.version;
        self.exchange(Request::State, StateReply { stepd_version })
    }

    /// REQUEST_STEP_UID: the uid the job runs as.
    pub fn step_uid(&mut self) -> Result<u32, StepdError> {
        self.exchange(Request::StepUid, StepUidReply)
    }

    /// REQUEST_ADD_EXTERN_PID: have the stepd put `pid` into the step's
    /// cgroups and accounting. Stepds from 24.11.6 close without a reply
    /// when the step is being cancelled, which comes back as `Closed`.
    pub fn add_extern_pid(&mut self, pid: i32) -> Result<(), StepdError> {
        self.exchange(Request::AddExternPid(pid), AddExternPidReply)
    }

    /// REQUEST_X11_DISPLAY. The reply is always consumed in full so the
    /// connection stays usable for the namespace request after it.
    pub fn x11_display(&mut self) -> Result<X11Display, StepdError> {
        self.exchange(Request::X11Display, X11Reply::default())
    }

    /// The job's namespaces, in the order they must be joined. Empty when
    /// the node runs no namespace / job_container plugin.
    ///
    /// Stepds from 25.11 answer REQUEST_GET_NS_FDS and leave the old
    /// REQUEST_GET_NS_FD unanswered when there is nothing to send, so the
    /// request is chosen by the stepd's version, never tried and fallen back.
    ///
    /// Each descriptor is used as received, and checked on itself (nsfs,
    /// of the announced kind) before it is handed out: a FIFO, a device or
    /// a regular file is a protocol error, never opened or read.
    pub fn namespace_fds(&mut self) -> Result<Vec<NamespaceFd>, StepdError> {
        let (request, fds) = if self.version >= NS_FDS_MIN_VERSION {
            let req = Request::GetNsFds;
            (req.op(), self.exchange(req, NsFdsReply::default())?)
        } else {
            let req = Request::GetNsFd;
            (req.op(), self.exchange(req, NsFdReply)?)
        };
        for ns in &fds {
            check_namespace(&ns.fd, ns.nstype)
                .map_err(|e| self.protocol(request, e.to_string()))?;
        }
        Ok(fds)
    }

    /// REQUEST_DAEMON_PID: the stepd's own pid.
    pub fn daemon_pid(&mut self) -> Result<i32, StepdError> {
        self.exchange(Request::DaemonPid, IntReply(op::DAEMON_PID))
    }

    fn handshake(&mut self) -> Result<(), StepdError> {
        self.send(op::HANDSHAKE, &encode_handshake())?;
        self.version = self.read_reply(HandshakeReply)?;
        Ok(())
    }

    /// Send one request and read its reply. Any failure other than an
    /// explicit refusal leaves the stream at an unknown place in the reply,
    /// so it also marks the connection unusable.
    fn exchange<L: Layout<OwnedFd>>(
        &mut self,
        request: Request,
        reply: L,
    ) -> Result<L::Output, StepdError> {
        let op = request.op();
        if let Some(earlier) = self.broken_by {
            return Err(self.protocol(
                op,
                format!("connection unusable after the failed {earlier}"),
            ));
        }
        let result = self
            .send(op, &request.encode())
            .and_then(|()| self.read_reply(reply));
        if matches!(&result, Err(err) if !matches!(err, StepdError::Rejected { .. })) {
            self.broken_by = Some(op);
        }
        result
    }

    fn send(&mut self, op: &'static str, buf: &[u8]) -> Result<(), StepdError> {
        let mut rest = buf;
        while !rest.is_empty() {
            self.wait_ready(op, PollFlags::POLLOUT)?;
            let left = self.remaining(op)?;
            self.stream
                .set_write_timeout(Some(left))
                .map_err(|source| self.io(op, source))?;
            // MSG_NOSIGNAL: a stepd that went away must not SIGPIPE sshd.
            match socket::send(self.stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return Err(self.closed(op)),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(self.errno_error(op, errno)),
            }
        }
        Ok(())
    }

    /// Read one reply, never more than the decoder wants at a time.
    fn read_reply<L: Layout<OwnedFd>>(&mut self, layout: L) -> Result<L::Output, StepdError> {
        let mut decoder = ReplyDecoder::new(layout);
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let op = decoder.op();
            let fed = match decoder.want() {
                Want::Bytes(n) => {
                    let dst = buf.get_mut(..n.min(READ_CHUNK)).unwrap_or_default();
                    match self.recv_some(op, dst)? {
                        0 => Err(decoder.eof()),
                        got => decoder.feed(dst.get(..got).unwrap_or_default()),
                    }
                }
                Want::Fd => match self.recv_fd(op)? {
                    Some(fd) => decoder.feed_fd(fd),
                    None => Err(decoder.eof()),
                },
                // Only after the reply was returned; cannot happen here.
                Want::Nothing => Err(decoder.eof()),
            };
            if let Some(out) = fed.map_err(|e| self.codec(e))? {
                return Ok(out);
            }
        }
    }

    /// One recv of at most `buf.len()` bytes; 0 when the stepd closed.
    fn recv_some(&mut self, op: &'static str, buf: &mut [u8]) -> Result<usize, StepdError> {
        loop {
            self.arm_read(op)?;
            match socket::recv(self.stream.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                // A close with our request unread in the stepd's queue.
                Err(Errno::ECONNRESET) => return Ok(0),
                Err(errno) => return Err(self.errno_error(op, errno)),
            }
        }
    }

    fn recv_fd(&mut self, op: &'static str) -> Result<Option<OwnedFd>, StepdError> {
        loop {
            self.arm_read(op)?;
            return match recv_fd(self.stream.as_fd()) {
                Ok(fd) => Ok(fd),
                Err(FdRecvError::Errno(Errno::EINTR)) => continue,
                Err(FdRecvError::Errno(errno)) => Err(self.errno_error(op, errno)),
                Err(other) => Err(self.protocol(op, other.to_string())),
            };
        }
    }

    fn remaining(&self, op: &'static str) -> Result<Duration, StepdError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.timeout(op))
        } else {
            Ok(left)
        }
    }

    /// Wait until the socket is ready for `events` (or hung up, or in
    /// error: the syscall after tells which), or fail at the deadline.
    fn wait_ready(&self, op: &'static str, events: PollFlags) -> Result<(), StepdError> {
        match wait_fd(self.stream.as_fd(), events, self.deadline) {
            Ok(Readiness::Ready) => Ok(()),
            Ok(Readiness::TimedOut) => Err(self.timeout(op)),
            Err(errno) => Err(self.errno_error(op, errno)),
        }
    }

    fn arm_read(&self, op: &'static str) -> Result<(), StepdError> {
        self.wait_ready(op, PollFlags::POLLIN)?;
        let left = self.remaining(op)?;
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|source| self.io(op, source))
    }

    fn errno_error(&self, op: &'static str, errno: Errno) -> StepdError {
        match errno {
            // What SO_RCVTIMEO / SO_SNDTIMEO expiry looks like.
            Errno::EAGAIN | Errno::ETIMEDOUT => self.timeout(op),
            // ECONNRESET: the stepd closed with our request still unread
            // in its queue, as 24.11.6+ does to ADD_EXTERN_PID.
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN => self.closed(op),
            other => self.io(op, io::Error::from(other)),
        }
    }

    fn codec(&self, err: CodecError) -> StepdError {
        StepdError::from_codec(&self.path, err)
    }

    fn timeout(&self, op: &'static str) -> StepdError {
        StepdError::Timeout {
            path: self.path.clone(),
            op,
        }
    }

    fn closed(&self, op: &'static str) -> StepdError {
        StepdError::Closed {
            path: self.path.clone(),
            op,
        }
    }

    fn protocol(&self, op: &'static str, detail: String) -> StepdError {
        StepdError::Protocol {
            path: self.path.clone(),
            op,
            detail,
        }
    }

    fn io(&self, op: &'static str, source: io::Error) -> StepdError {
        StepdError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stepd::protocol::CLIENT_PROTOCOL_VERSION;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn int(v: i32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// A one-connection stepd: reads the handshake, answers with `version`,
    /// then for each expected request reads its bytes and writes the reply.
    fn scripted(
        version: i32,
        script: Vec<(usize, Vec<u8>)>,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_1.4294967292");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut hello = [0u8; 4];
            conn.read_exact(&mut hello).expect("read handshake");
            assert_eq!(
                i32::from_ne_bytes(hello),
                i32::try_from(CLIENT_PROTOCOL_VERSION).expect("version fits")
            );
            conn.write_all(&int(version)).expect("write version");
            for (request_len, reply) in script {
                let mut req = vec![0u8; request_len];
                if conn.read_exact(&mut req).is_err() {
                    return;
                }
                if conn.write_all(&reply).is_err() {
                    return;
                }
            }
            // Hold the connection until the client goes away.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        });
        (dir, path, handle)
    }

    /// The peers a listener of this test process passes as.
    fn me() -> StepdPeers {
        StepdPeers::from_uids(vec![nix::unistd::geteuid().as_raw()])
    }

    /// Peers that leave this test process out.
    fn not_me() -> StepdPeers {
        let uid = nix::unistd::geteuid().as_raw();
        StepdPeers::from_uids(vec![uid.wrapping_add(1)])
    }

    /// What the listener at `path` received on the one connection it
    /// accepts, read until the client closes.
    fn received(listener: UnixListener) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            let _ = conn.read_to_end(&mut got);
            got
        })
    }

    #[test]
    fn an_untrusted_listener_is_refused_before_a_byte_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_9.4294967292");
        let server = received(UnixListener::bind(&path).expect("bind"));
        let err = StepdClient::connect(&path, &not_me(), soon()).expect_err("untrusted");
        match &err {
            StepdError::UntrustedPeer { path: p, uid, pid } => {
                assert_eq!(p, &path);
                assert_eq!(*uid, nix::unistd::geteuid().as_raw());
                assert_eq!(*pid, i32::try_from(std::process::id()).expect("pid fits"));
            }
            other => panic!("expected UntrustedPeer, got {other:?}"),
        }
        assert!(!err.is_stale_socket());
        assert_eq!(server.join().expect("server"), b"");
    }

    #[test]
    fn connect_for_uid_refuses_an_untrusted_listener_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_10.4294967292");
        let server = received(UnixListener::bind(&path).expect("bind"));
        let err = StepdClient::connect_for_uid(&path, &not_me(), soon()).expect_err("untrusted");
        assert!(matches!(err, StepdError::UntrustedPeer { .. }), "{err:?}");
        assert_eq!(server.join().expect("server"), b"");
    }

    #[test]
    fn a_trusted_listener_is_asked() {
        let (_dir, path, server) = scripted(0x2800, vec![(4, 1001u32.to_ne_bytes().to_vec())]);
        let (client, uid) = StepdClient::connect_for_uid(&path, &me(), soon()).expect("trusted");
        assert_eq!(uid, 1001);
        drop(client);
        server.join().expect("server");
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn reads_state_and_uid_in_native_order() {
        let (_dir, path, server) = scripted(
            0x2800,
            vec![(4, int(3).to_vec()), (4, 1001u32.to_ne_bytes().to_vec())],
        );
        let mut client = StepdClient::connect(&path, &me(), soon()).expect("connect");
        assert_eq!(client.protocol_version(), 0x2800);
        assert_eq!(client.path(), path);
        assert_eq!(client.state().expect("state"), StepState::Cancelled);
        assert_eq!(client.step_uid().expect("uid"), 1001);
        drop(client);
        server.join().expect("server");
    }

    #[test]
    fn xauthority_length_is_bounded_and_poisons_the_connection() {
        let mut reply = int(10).to_vec();
        reply.extend(int(1 << 30));
        let (_dir, path, server) = scripted(0x2600, vec![(4, reply)]);
        let mut client = StepdClient::connect(&path, &me(), soon()).expect("connect");
        let started = Instant::now();
        match client.x11_display() {
            Err(StepdError::Protocol { op, .. }) => assert_eq!(op, "x11_display"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        match client.step_uid() {
            Err(StepdError::Protocol { op, detail, .. }) => {
                assert_eq!(op, "step_uid");
                assert!(detail.contains("x11_display"), "{detail}");
            }
            other => panic!("expected the connection to be unusable, got {other:?}"),
        }
        drop(client);
        server.join().expect("server");
    }

    #[test]
    fn xauthority_stops_at_the_nul() {
        let mut reply = int(12).to_vec();
        reply.extend(int(8));
        reply.extend(b"/tmp/xa\0");
        let (_dir, path, server) = scripted(0x2600, vec![(4, reply), (4, int(77).to_vec())]);
        let mut client = StepdClient::connect(&path, &me(), soon()).expect("connect");
        let x11 = client.x11_display().expect("x11");
        assert_eq!(
            x11,
            X11Display {
                display: 12,
                xauthority: Some("/tmp/xa".to_owned())
            }
        );
        assert_eq!(client.daemon_pid().expect("pid"), 77);
        drop(client);
        server.join().expect("server");
    }

    #[test]
    fn refused_add_pid_keeps_the_connection_usable() {
        let (_dir, path, server) = scripted(
            0x2600,
            vec![(8, int(-1).to_vec()), (4, 5u32.to_ne_bytes().to_vec())],
        );
        let mut client = StepdClient::connect(&path, &me(), soon()).expect("connect");
        match client.add_extern_pid(42) {
            Err(StepdError::Rejected { rc: -1, op, .. }) => assert_eq!(op, "add_extern_pid"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(client.step_uid().expect("uid"), 5);
        drop(client);
        server.join().expect("server");
    }

    #[test]
    fn a_descriptor_that_never_comes_times_out() {
        // Announces an fd for GET_NS_FD, then sends nothing more.
        let (_dir, path, server) = scripted(0x2600, vec![(4, int(5).to_vec())]);
        let started = Instant::now();
        let mut client = StepdClient::connect(&path, &me(), started + Duration::from_millis(200))
            .expect("connect");
        match client.namespace_fds() {
            Err(StepdError::Timeout { op, .. }) => assert_eq!(op, "get_ns_fd"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(400));
        drop(client);
        server.join().expect("server");
    }

    #[test]
    fn full_backlog_times_out_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_2.4294967292");
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let addr = UnixAddr::new(&path).expect("addr");
        socket::bind(fd.as_raw_fd(), &addr).expect("bind");
        socket::listen(&fd, socket::Backlog::new(0).expect("backlog")).expect("listen");
        // Never accepted: fill the queue until a connect would block.
        let mut held = Vec::new();
        for _ in 0..64 {
            let c = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .expect("socket");
            let full = socket::connect(c.as_raw_fd(), &addr) == Err(Errno::EAGAIN);
            held.push(c);
            if full {
                break;
            }
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        match StepdClient::connect(&path, &me(), deadline) {
            Err(StepdError::Timeout { op, path: p }) => {
                assert_eq!(op, "connect");
                assert_eq!(p, path);
            }
            other => panic!("expected a connect timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    #[test]
    fn missing_socket_is_a_connect_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_3.4294967292");
        let err = StepdClient::connect(&path, &me(), soon()).expect_err("no socket");
        assert!(matches!(err, StepdError::Connect { .. }), "{err:?}");
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn a_passed_deadline_fails_before_any_syscall() {
        let (_dir, path, _server) = scripted(0x2600, Vec::new());
        let err = StepdClient::connect(&path, &me(), Instant::now()).expect_err("late");
        assert!(
            matches!(err, StepdError::Timeout { op: "connect", .. }),
            "{err:?}"
        );
    }
}
