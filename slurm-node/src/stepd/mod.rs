//! Client for the unix socket every slurmstepd listens on in the spool dir.
//!
//! The protocol is a version handshake followed by requests on the same
//! connection: one native-endian `int` per request code, replies in native
//! byte order and sizes, file descriptors passed with `SCM_RIGHTS`.
//!
//! This code runs inside sshd as root, so a stepd that hangs, dies or talks
//! nonsense must cost at most the caller's deadline: the remaining time is
//! applied as the socket timeout before every syscall, and every length a
//! stepd sends is bounded before anything is read or allocated for it.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// Step id of the extern step (`SLURM_EXTERN_CONT`), the one logins join.
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;
/// Step id of the batch script (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;
/// The version we announce in the handshake: stepds accept any client version >= their minimum.
pub const CLIENT_PROTOCOL_VERSION: u32 = 0x2D00; // 26.05
/// 25.11: the first stepd that answers `REQUEST_GET_NS_FDS`.
pub const NS_FDS_MIN_VERSION: u32 = 0x2C00;
/// 22.05: the oldest stepd this client knows the replies of.
pub const OLDEST_STEPD_VERSION: u32 = 0x2600;
/// 23.11 inserted CANCELLED before ENDING in the step state enum.
const CANCELLED_STATE_VERSION: u32 = 0x2800;

/// An X11 xauthority path is a short file name; anything longer means the
/// stream is out of step, and believing it would let a stepd make us
/// allocate and wait for up to 2 GiB.
pub const MAX_XAUTHORITY_LEN: usize = 4096;
/// Real stepds send at most three (pid, user, mount namespace).
pub const MAX_NAMESPACE_FDS: usize = 8;

const REQUEST_STATE: i32 = 5;
const REQUEST_DAEMON_PID: i32 = 9;
const REQUEST_STEP_UID: i32 = 20;
const REQUEST_ADD_EXTERN_PID: i32 = 22;
const REQUEST_X11_DISPLAY: i32 = 23;
const REQUEST_GET_NS_FD: i32 = 26;
const REQUEST_GET_NS_FDS: i32 = 28;

/// Where the kernel's view of our own descriptors lives; see [`reopen`].
const PROC_SELF_FD: &str = "/proc/self/fd";

/// Connecting only fails with EAGAIN while the stepd's backlog is full, which
/// clears as soon as it accepts; poll often at first, then back off.
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(20);

/// Everything that can go wrong talking to one stepd; each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum StepdError {
    #[error("cannot connect to stepd socket {}: {source}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stepd {} did not complete {op} before the deadline", .path.display())]
    Timeout { path: PathBuf, op: &'static str },
    #[error("stepd {} closed the connection instead of answering {op}", .path.display())]
    Closed { path: PathBuf, op: &'static str },
    #[error("stepd {} rejected the handshake (reply {reply})", .path.display())]
    HandshakeRejected { path: PathBuf, reply: i32 },
    #[error("stepd {} refused {op} (rc {rc})", .path.display())]
    Rejected {
        path: PathBuf,
        op: &'static str,
        rc: i32,
    },
    #[error("stepd {} sent a malformed reply to {op}: {detail}", .path.display())]
    Protocol {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("i/o error on stepd socket {} during {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl StepdError {
    /// The socket this error concerns.
    pub fn path(&self) -> &Path {
        match self {
            StepdError::Connect { path, .. }
            | StepdError::Timeout { path, .. }
            | StepdError::Closed { path, .. }
            | StepdError::HandshakeRejected { path, .. }
            | StepdError::Rejected { path, .. }
            | StepdError::Protocol { path, .. }
            | StepdError::Io { path, .. } => path,
        }
    }

    /// Nothing listens on the socket, or it is gone: the stepd exited (a
    /// crashed stepd leaves its socket behind until slurmd restarts). No
    /// job lives behind it, unlike a stepd that hangs or garbles.
    pub fn is_stale_socket(&self) -> bool {
        matches!(
            self,
            StepdError::Connect { source, .. }
                if matches!(source.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound)
        )
    }
}

/// A step's state as the stepd reports it, read with the stepd's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    NotRunning,
    Starting,
    Running,
    /// 23.11 and later: scancel'd, tasks being killed.
    Cancelled,
    Ending,
    Unknown(i32),
}

impl StepState {
    /// Interpret a raw state for a stepd speaking `stepd_version`: the same
    /// number 3 means ENDING before 23.11 and CANCELLED from then on.
    pub fn from_raw(raw: i32, stepd_version: u32) -> StepState {
        let cancelled_exists = stepd_version >= CANCELLED_STATE_VERSION;
        match raw {
            0 => StepState::NotRunning,
            1 => StepState::Starting,
            2 => StepState::Running,
            3 if cancelled_exists => StepState::Cancelled,
            3 => StepState::Ending,
            4 if cancelled_exists => StepState::Ending,
            other => StepState::Unknown(other),
        }
    }
}

/// The extern step's X11 forwarding, if `srun --x11` / `salloc --x11` set one up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X11Display {
    /// 0 means no X11 forwarding.
    pub display: i32,
    pub xauthority: Option<String>,
}

/// A namespace of the job, to be joined with `setns(fd, nstype)`.
#[derive(Debug)]
pub struct NamespaceFd {
    /// A `CLONE_NEW*` flag, or 0 from stepds before 25.11 (setns then takes
    /// whatever kind of namespace the fd is).
    pub nstype: i32,
    pub fd: OwnedFd,
}

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
    /// Connect to the stepd socket at `path` and do the version handshake.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, StepdError> {
        let stream = connect_stream(path, deadline)?;
        let mut client = StepdClient {
            stream,
            path: path.to_owned(),
            deadline,
            version: 0,
            broken_by: None,
        };
        client.handshake()?;
        Ok(client)
    }

    /// Connect, handshake and ask REQUEST_STEP_UID in one round trip. The
    /// stepd reads the request code only after it has answered the
    /// handshake, so both can go in one write; scanning a node's steps
    /// then costs one round trip per step instead of two. The same code
    /// path as [`scan_step_uids`], for one socket.
    pub fn connect_for_uid(path: &Path, deadline: Instant) -> Result<(Self, u32), StepdError> {
        scan_step_uids(&[path.to_owned()], deadline)
            .into_iter()
            .next()
            .unwrap_or_else(|| {
                Err(StepdError::Timeout {
                    path: path.to_owned(),
                    op: "connect",
                })
            })
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

    /// Give the remaining requests a different budget, e.g. the adoption
    /// its own after a scan that used a share of the login's.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// REQUEST_STATE.
    pub fn state(&mut self) -> Result<StepState, StepdError> {
        const OP: &str = "state";
        let version = self.version;
        self.exchange(OP, &[REQUEST_STATE], |c| {
            Ok(StepState::from_raw(c.recv_i32(OP, true)?, version))
        })
    }

    /// REQUEST_STEP_UID: the uid the job runs as.
    pub fn step_uid(&mut self) -> Result<u32, StepdError> {
        const OP: &str = "step_uid";
        self.exchange(OP, &[REQUEST_STEP_UID], |c| {
            let mut buf = [0u8; 4];
            c.recv_exact(OP, &mut buf, true)?;
            Ok(u32::from_ne_bytes(buf))
        })
    }

    /// REQUEST_ADD_EXTERN_PID: have the stepd put `pid` into the step's
    /// cgroups and accounting. Stepds from 24.11.6 close without a reply
    /// when the step is being cancelled, which comes back as `Closed`.
    pub fn add_extern_pid(&mut self, pid: i32) -> Result<(), StepdError> {
        const OP: &str = "add_extern_pid";
        self.exchange(OP, &[REQUEST_ADD_EXTERN_PID, pid], |c| {
            match c.recv_i32(OP, true)? {
                0 => Ok(()),
                rc => Err(c.rejected(OP, rc)),
            }
        })
    }

    /// REQUEST_X11_DISPLAY. The reply is always consumed in full so the
    /// connection stays usable for the namespace request after it.
    pub fn x11_display(&mut self) -> Result<X11Display, StepdError> {
        const OP: &str = "x11_display";
        self.exchange(OP, &[REQUEST_X11_DISPLAY], |c| {
            let display = c.recv_i32(OP, true)?;
            let len = c.recv_i32(OP, false)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_XAUTHORITY_LEN)
                .ok_or_else(|| {
                    c.protocol(
                        OP,
                        format!("xauthority length {len} outside 0..={MAX_XAUTHORITY_LEN}"),
                    )
                })?;
            let mut raw = vec![0u8; len];
            c.recv_exact(OP, &mut raw, false)?;
            // The length counts the C string's NUL; stop at the first one.
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            raw.truncate(end);
            let xauthority = if raw.is_empty() {
                None
            } else {
                Some(
                    String::from_utf8(raw)
                        .map_err(|_| c.protocol(OP, "xauthority path is not UTF-8".to_owned()))?,
                )
            };
            Ok(X11Display {
                display,
                xauthority,
            })
        })
    }

    /// The job's namespaces, in the order they must be joined. Empty when
    /// the node runs no namespace / job_container plugin.
    ///
    /// Stepds from 25.11 answer REQUEST_GET_NS_FDS and leave the old
    /// REQUEST_GET_NS_FD unanswered when there is nothing to send, so the
    /// request is chosen by the stepd's version, never tried and fallen back.
    pub fn namespace_fds(&mut self) -> Result<Vec<NamespaceFd>, StepdError> {
        if self.version >= NS_FDS_MIN_VERSION {
            self.get_ns_fds()
        } else {
            self.get_ns_fd()
        }
    }

    /// REQUEST_DAEMON_PID: the stepd's own pid.
    pub fn daemon_pid(&mut self) -> Result<i32, StepdError> {
        const OP: &str = "daemon_pid";
        self.exchange(OP, &[REQUEST_DAEMON_PID], |c| c.recv_i32(OP, true))
    }

    fn get_ns_fd(&mut self) -> Result<Vec<NamespaceFd>, StepdError> {
        const OP: &str = "get_ns_fd";
        self.exchange(OP, &[REQUEST_GET_NS_FD], |c| {
            // The value is the stepd's own fd number: meaningless here
            // except as "one follows".
            match c.recv_i32(OP, true)? {
                0 => Ok(Vec::new()),
                rc if rc < 0 => Err(c.rejected(OP, rc)),
                _ => Ok(vec![NamespaceFd {
                    nstype: 0,
                    fd: c.recv_fd(OP)?,
                }]),
            }
        })
    }

    fn get_ns_fds(&mut self) -> Result<Vec<NamespaceFd>, StepdError> {
        const OP: &str = "get_ns_fds";
        self.exchange(OP, &[REQUEST_GET_NS_FDS], |c| {
            let count = c.recv_i32(OP, true)?;
            let count = usize::try_from(count)
                .ok()
                .filter(|&n| n <= MAX_NAMESPACE_FDS)
                .ok_or_else(|| {
                    c.protocol(
                        OP,
                        format!("namespace count {count} outside 0..={MAX_NAMESPACE_FDS}"),
                    )
                })?;
            let mut fds = Vec::with_capacity(count);
            for _ in 0..count {
                let nstype = c.recv_i32(OP, false)?;
                let fd = c.recv_fd(OP)?;
                fds.push(NamespaceFd { nstype, fd });
            }
            Ok(fds)
        })
    }

    fn handshake(&mut self) -> Result<(), StepdError> {
        let announce = self.announce()?;
        self.send_ints("handshake", &[announce])?;
        self.finish_handshake()
    }

    fn announce(&self) -> Result<i32, StepdError> {
        i32::try_from(CLIENT_PROTOCOL_VERSION).map_err(|_| {
            self.protocol("handshake", "client version does not fit an int".to_owned())
        })
    }

    /// Read and check the stepd's answer to the version we announced.
    fn finish_handshake(&mut self) -> Result<(), StepdError> {
        let reply = self.recv_i32("handshake", true)?;
        self.version = check_handshake(&self.path, reply)?;
        Ok(())
    }

    /// Send one request and read its reply with `read_reply`. Any failure
    /// other than an explicit refusal leaves the stream at an unknown place
    /// in the reply, so it also marks the connection unusable.
    fn exchange<T>(
        &mut self,
        op: &'static str,
        request: &[i32],
        read_reply: impl FnOnce(&mut Self) -> Result<T, StepdError>,
    ) -> Result<T, StepdError> {
        if let Some(earlier) = self.broken_by {
            return Err(self.protocol(
                op,
                format!("connection unusable after the failed {earlier}"),
            ));
        }
        let result = self.send_ints(op, request).and_then(|()| read_reply(self));
        self.note_failure(op, &result);
        result
    }

    fn note_failure<T>(&mut self, op: &'static str, result: &Result<T, StepdError>) {
        if matches!(result, Err(err) if !matches!(err, StepdError::Rejected { .. })) {
            self.broken_by = Some(op);
        }
    }

    fn send_ints(&mut self, op: &'static str, words: &[i32]) -> Result<(), StepdError> {
        // One write for the whole request: a stepd that closes after the
        // request code (ADD_EXTERN_PID on a cancelled step) must not turn
        // the second half into a write to a closed socket.
        let buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut sent = 0;
        while sent < buf.len() {
            let left = self.remaining(op)?;
            self.stream
                .set_write_timeout(Some(left))
                .map_err(|source| self.io(op, source))?;
            // MSG_NOSIGNAL: a stepd that went away must not SIGPIPE sshd.
            match socket::send(
                self.stream.as_raw_fd(),
                &buf[sent..],
                MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(0) => return Err(self.closed(op)),
                Ok(n) => sent += n,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(self.errno_error(op, errno)),
            }
        }
        Ok(())
    }

    /// `first`: this is the reply's first field, so EOF before it means the
    /// stepd chose not to answer rather than that it answered short.
    fn recv_i32(&mut self, op: &'static str, first: bool) -> Result<i32, StepdError> {
        let mut buf = [0u8; 4];
        self.recv_exact(op, &mut buf, first)?;
        Ok(i32::from_ne_bytes(buf))
    }

    fn recv_exact(
        &mut self,
        op: &'static str,
        buf: &mut [u8],
        first: bool,
    ) -> Result<(), StepdError> {
        let mut got = 0;
        while got < buf.len() {
            self.arm_read(op)?;
            // Never ask for more than this field: a byte past it may carry
            // SCM_RIGHTS, and a plain read would drop that descriptor.
            let ended =
                match socket::recv(self.stream.as_raw_fd(), &mut buf[got..], MsgFlags::empty()) {
                    Ok(0) => true,
                    Ok(n) => {
                        got += n;
                        false
                    }
                    Err(Errno::EINTR) => false,
                    // A close with our request unread in the stepd's queue.
                    Err(Errno::ECONNRESET) => true,
                    Err(errno) => return Err(self.errno_error(op, errno)),
                };
            if ended {
                return Err(if first && got == 0 {
                    self.closed(op)
                } else {
                    self.protocol(
                        op,
                        format!("connection closed mid-reply ({got} of {} bytes)", buf.len()),
                    )
                });
            }
        }
        Ok(())
    }

    /// Receive the one-byte message that carries a descriptor in SCM_RIGHTS.
    fn recv_fd(&mut self, op: &'static str) -> Result<OwnedFd, StepdError> {
        loop {
            self.arm_read(op)?;
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            // Room for more than the one fd a stepd sends, so a sender that
            // sends extra is seen (and its fds closed) instead of having the
            // kernel truncate the control data.
            let mut space = nix::cmsg_space!([RawFd; 4]);
            let (bytes, received) = match socket::recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut received = Vec::new();
                    let cmsgs = msg.cmsgs().map_err(|_| {
                        self.protocol(op, "descriptor control data truncated".to_owned())
                    })?;
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            received.extend(fds.into_iter().map(ReceivedFd));
                        }
                    }
                    (msg.bytes, received)
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(self.errno_error(op, errno)),
            };
            return match received.as_slice() {
                [one] => reopen(one).map_err(|source| self.io(op, source)),
                [] if bytes == 0 => Err(self.protocol(
                    op,
                    "connection closed before the descriptor arrived".to_owned(),
                )),
                [] => Err(self.protocol(op, "no descriptor attached".to_owned())),
                many => Err(self.protocol(
                    op,
                    format!("{} descriptors where one was expected", many.len()),
                )),
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

    fn arm_read(&self, op: &'static str) -> Result<(), StepdError> {
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

    fn rejected(&self, op: &'static str, rc: i32) -> StepdError {
        StepdError::Rejected {
            path: self.path.clone(),
            op,
            rc,
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

/// The stepd's answer to the version we announced: its own version, if we
/// can talk to it.
fn check_handshake(path: &Path, reply: i32) -> Result<u32, StepdError> {
    let version = u32::try_from(reply).map_err(|_| StepdError::HandshakeRejected {
        path: path.to_owned(),
        reply,
    })?;
    // Below 22.05 we do not know the reply layouts, and a bogus version
    // would also pick the wrong state numbering and namespace request.
    if version < OLDEST_STEPD_VERSION {
        return Err(StepdError::Protocol {
            path: path.to_owned(),
            op: "handshake",
            detail: format!(
                "stepd protocol version {version:#x} is older than the oldest supported \
                 ({OLDEST_STEPD_VERSION:#x}, Slurm 22.05)"
            ),
        });
    }
    Ok(version)
}

/// At most this many stepd sockets are connecting at once in
/// [`scan_step_uids`], so a node with thousands of stale sockets cannot use
/// up sshd's descriptors. A caller that keeps only some of the returned
/// connections should pass at most this many paths per call.
pub const SCAN_BATCH: usize = 256;

/// The pipelined request of a scan: the handshake's version, then
/// REQUEST_STEP_UID; and its reply: the handshake's int, then the uid.
const UID_REQUEST_LEN: usize = 8;
const UID_REPLY_LEN: usize = 8;
const HANDSHAKE_REPLY_LEN: usize = 4;

/// Connect to every socket, send the handshake and STEP_UID to each at
/// once, and collect the answers as they arrive (poll), all within
/// `deadline`. The results are in the order of `paths`; each success is a
/// connection in step for further requests, with `deadline` as its own.
///
/// No threads: non-blocking sockets and one `poll` over all of them, so a
/// hung stepd costs the others nothing. Sockets are handled
/// [`SCAN_BATCH`] at a time; the successful connections stay open in the
/// result.
pub fn scan_step_uids(
    paths: &[PathBuf],
    deadline: Instant,
) -> Vec<Result<(StepdClient, u32), StepdError>> {
    let mut results = Vec::with_capacity(paths.len());
    for batch in paths.chunks(SCAN_BATCH) {
        results.extend(scan_batch(batch, deadline));
    }
    results
}

fn scan_batch(paths: &[PathBuf], deadline: Instant) -> Vec<Result<(StepdClient, u32), StepdError>> {
    let mut results: Vec<Option<Result<(StepdClient, u32), StepdError>>> =
        paths.iter().map(|_| None).collect();
    let mut probes: Vec<Option<UidProbe>> = paths.iter().map(|_| None).collect();
    if Instant::now() < deadline {
        for ((path, probe), result) in paths.iter().zip(&mut probes).zip(&mut results) {
            match UidProbe::new(path) {
                Ok(p) => *probe = Some(p),
                Err(e) => *result = Some(Err(e)),
            }
        }
    }
    let mut pause = CONNECT_RETRY_FIRST;
    let mut next_connect = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut connecting = false;
        if now >= next_connect {
            for (probe, result) in probes.iter_mut().zip(&mut results) {
                if probe.as_ref().is_some_and(|p| !p.connected) {
                    settle(probe, result, deadline, UidProbe::try_connect);
                    connecting |= probe.as_ref().is_some_and(|p| !p.connected);
                }
            }
            if connecting {
                // The backlog of a busy stepd clears when it accepts, which
                // poll cannot tell us: ask again soon, then less often.
                next_connect = now + pause;
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
        } else {
            connecting = probes.iter().flatten().any(|p| !p.connected);
        }
        let (ready, polled) = {
            let mut watched = Vec::new();
            let mut fds = Vec::new();
            for (i, probe) in probes.iter().enumerate() {
                if let Some(p) = probe.as_ref().filter(|p| p.connected) {
                    let mut events = PollFlags::POLLIN;
                    if p.sent < UID_REQUEST_LEN {
                        events |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(p.fd.as_fd(), events));
                    watched.push(i);
                }
            }
            if fds.is_empty() && !connecting {
                break;
            }
            let mut wake = deadline;
            if connecting {
                wake = wake.min(next_connect);
            }
            let polled = poll(
                &mut fds,
                poll_timeout(wake.saturating_duration_since(Instant::now())),
            );
            let ready: Vec<(usize, PollFlags)> = watched
                .iter()
                .zip(&fds)
                .filter_map(|(&i, fd)| {
                    fd.revents()
                        .filter(|r| !r.is_empty())
                        .map(|revents| (i, revents))
                })
                .collect();
            (ready, polled)
        };
        match polled {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                for (probe, result) in probes.iter_mut().zip(&mut results) {
                    if let Some(p) = probe.take() {
                        *result = Some(Err(p.io(io::Error::from(errno))));
                    }
                }
                break;
            }
        }
        for (i, revents) in ready {
            let (Some(probe), Some(result)) = (probes.get_mut(i), results.get_mut(i)) else {
                continue;
            };
            if revents.contains(PollFlags::POLLOUT) {
                settle(probe, result, deadline, UidProbe::try_send);
            }
            if revents.intersects(
                PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL,
            ) {
                settle(probe, result, deadline, UidProbe::try_recv);
            }
        }
    }
    paths
        .iter()
        .zip(probes)
        .zip(results)
        .map(|((path, probe), result)| match (result, probe) {
            (Some(result), _) => result,
            (None, Some(p)) => Err(p.timeout()),
            (None, None) => Err(StepdError::Timeout {
                path: path.clone(),
                op: "connect",
            }),
        })
        .collect()
}

/// Advance one probe with `step`; a finished one (answered or failed)
/// moves from `probe` to `result`, its socket kept or closed.
fn settle(
    probe: &mut Option<UidProbe>,
    result: &mut Option<Result<(StepdClient, u32), StepdError>>,
    deadline: Instant,
    step: fn(&mut UidProbe) -> Result<bool, StepdError>,
) {
    let Some(p) = probe.as_mut() else {
        return;
    };
    match step(p) {
        Ok(false) => {}
        Ok(true) => *result = probe.take().map(|p| p.into_client(deadline)),
        Err(e) => {
            *probe = None;
            *result = Some(Err(e));
        }
    }
}

/// Milliseconds for poll(2), rounded up so a wait never ends just short
/// of the instant it is for and spins.
fn poll_timeout(left: Duration) -> PollTimeout {
    i32::try_from(left.as_micros().div_ceil(1000))
        .ok()
        .and_then(|ms| PollTimeout::try_from(ms).ok())
        .unwrap_or(PollTimeout::MAX)
}

/// One stepd being asked its step's uid on a non-blocking socket.
#[derive(Debug)]
struct UidProbe {
    path: PathBuf,
    addr: UnixAddr,
    fd: OwnedFd,
    connected: bool,
    request: [u8; UID_REQUEST_LEN],
    sent: usize,
    reply: [u8; UID_REPLY_LEN],
    got: usize,
    /// The stepd's version, once its handshake reply is in and acceptable.
    version: Option<u32>,
}

impl UidProbe {
    fn new(path: &Path) -> Result<UidProbe, StepdError> {
        let announce =
            i32::try_from(CLIENT_PROTOCOL_VERSION).map_err(|_| StepdError::Protocol {
                path: path.to_owned(),
                op: "handshake",
                detail: "client version does not fit an int".to_owned(),
            })?;
        let mut request = [0u8; UID_REQUEST_LEN];
        for (dst, src) in request.iter_mut().zip(
            announce
                .to_ne_bytes()
                .into_iter()
                .chain(REQUEST_STEP_UID.to_ne_bytes()),
        ) {
            *dst = src;
        }
        let (addr, fd) = nonblocking_socket(path)?;
        Ok(UidProbe {
            path: path.to_owned(),
            addr,
            fd,
            connected: false,
            request,
            sent: 0,
            reply: [0; UID_REPLY_LEN],
            got: 0,
            version: None,
        })
    }

    /// The operation the probe is in, for errors.
    fn op(&self) -> &'static str {
        if !self.connected {
            "connect"
        } else if self.got < HANDSHAKE_REPLY_LEN {
            "handshake"
        } else {
            "step_uid"
        }
    }

    /// Ok(true) when the whole reply is in.
    fn try_connect(&mut self) -> Result<bool, StepdError> {
        match socket::connect(self.fd.as_raw_fd(), &self.addr) {
            Ok(()) | Err(Errno::EISCONN) => {
                self.connected = true;
                self.try_send()
            }
            // EAGAIN: the backlog is full; tried again in a later round.
            Err(Errno::EINTR | Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY) => Ok(false),
            Err(errno) => Err(StepdError::Connect {
                path: self.path.clone(),
                source: errno.into(),
            }),
        }
    }

    fn try_send(&mut self) -> Result<bool, StepdError> {
        while let Some(rest) = self.request.get(self.sent..).filter(|r| !r.is_empty()) {
            // MSG_NOSIGNAL: a stepd that went away must not SIGPIPE sshd.
            match socket::send(
                self.fd.as_raw_fd(),
                rest,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(self.ended()),
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(false),
                // The stepd closed, maybe after answering (a rejected
                // handshake): what it sent, or the EOF, tells which.
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    self.sent = UID_REQUEST_LEN;
                }
                Err(errno) => return Err(self.io(errno.into())),
            }
        }
        Ok(false)
    }

    fn try_recv(&mut self) -> Result<bool, StepdError> {
        // Never more than the reply: the stepd sends nothing unasked, and
        // anything past it belongs to the next request.
        while let Some(rest) = self.reply.get_mut(self.got..).filter(|r| !r.is_empty()) {
            match socket::recv(self.fd.as_raw_fd(), rest, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::ECONNRESET) => return Err(self.ended()),
                Ok(n) => {
                    self.got += n;
                    if self.version.is_none() && self.got >= HANDSHAKE_REPLY_LEN {
                        let [a, b, c, d, ..] = self.reply;
                        let reply = i32::from_ne_bytes([a, b, c, d]);
                        self.version = Some(check_handshake(&self.path, reply)?);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EPIPE | Errno::ENOTCONN) => return Err(self.ended()),
                Err(errno) => return Err(self.io(errno.into())),
            }
        }
        Ok(true)
    }

    /// The stepd closed before the reply was complete.
    fn ended(&self) -> StepdError {
        let op = self.op();
        let (got, len) = if self.got < HANDSHAKE_REPLY_LEN {
            (self.got, HANDSHAKE_REPLY_LEN)
        } else {
            (
                self.got - HANDSHAKE_REPLY_LEN,
                UID_REPLY_LEN - HANDSHAKE_REPLY_LEN,
            )
        };
        if got == 0 {
            StepdError::Closed {
                path: self.path.clone(),
                op,
            }
        } else {
            StepdError::Protocol {
                path: self.path.clone(),
                op,
                detail: format!("connection closed mid-reply ({got} of {len} bytes)"),
            }
        }
    }

    fn timeout(&self) -> StepdError {
        StepdError::Timeout {
            path: self.path.clone(),
            op: self.op(),
        }
    }

    fn io(&self, source: io::Error) -> StepdError {
        StepdError::Io {
            path: self.path.clone(),
            op: self.op(),
            source,
        }
    }

    /// The answered probe as a blocking connection, in step for the
    /// requests after STEP_UID.
    fn into_client(self, deadline: Instant) -> Result<(StepdClient, u32), StepdError> {
        let [_, _, _, _, a, b, c, d] = self.reply;
        let uid = u32::from_ne_bytes([a, b, c, d]);
        let Some(version) = self.version else {
            return Err(self.protocol_gap());
        };
        let stream = UnixStream::from(self.fd);
        // Blocking from here on: the per-call socket timeouts bound each
        // read and write instead.
        if let Err(source) = stream.set_nonblocking(false) {
            return Err(StepdError::Io {
                path: self.path,
                op: "step_uid",
                source,
            });
        }
        Ok((
            StepdClient {
                stream,
                path: self.path,
                deadline,
                version,
                broken_by: None,
            },
            uid,
        ))
    }

    fn protocol_gap(&self) -> StepdError {
        StepdError::Protocol {
            path: self.path.clone(),
            op: "handshake",
            detail: "handshake reply missing".to_owned(),
        }
    }
}

/// A descriptor the kernel installed in this process from SCM_RIGHTS. We
/// are its only owner from the moment recvmsg returns, so we close it.
#[derive(Debug)]
struct ReceivedFd(RawFd);

impl Drop for ReceivedFd {
    fn drop(&mut self) {
        // Nothing useful to do if close fails: the number is gone either way.
        let _ = nix::unistd::close(self.0);
    }
}

/// Turn a received descriptor into an `OwnedFd` without `unsafe`: opening
/// the `/proc/self/fd` link yields a new descriptor on the same object (for
/// a namespace file, the same namespace), and the received one is closed
/// when `fd` drops.
fn reopen(fd: &ReceivedFd) -> io::Result<OwnedFd> {
    let link = Path::new(PROC_SELF_FD).join(fd.0.to_string());
    File::open(link).map(OwnedFd::from)
}

/// A non-blocking, close-on-exec unix stream socket and the address of
/// `path`, not yet connected.
fn nonblocking_socket(path: &Path) -> Result<(UnixAddr, OwnedFd), StepdError> {
    let connect_err = |source: io::Error| StepdError::Connect {
        path: path.to_owned(),
        source,
    };
    let addr = UnixAddr::new(path).map_err(|e| connect_err(e.into()))?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| connect_err(e.into()))?;
    Ok((addr, fd))
}

/// Non-blocking connect, so a stepd with a full backlog (busy or wedged)
/// costs at most the deadline instead of blocking in connect(2).
fn connect_stream(path: &Path, deadline: Instant) -> Result<UnixStream, StepdError> {
    let connect_err = |source: io::Error| StepdError::Connect {
        path: path.to_owned(),
        source,
    };
    let timeout = || StepdError::Timeout {
        path: path.to_owned(),
        op: "connect",
    };
    let (addr, fd) = nonblocking_socket(path)?;
    let mut pause = CONNECT_RETRY_FIRST;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout());
        }
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(Errno::EISCONN) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY) => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
            Err(errno) => return Err(connect_err(errno.into())),
        }
    }
    let stream = UnixStream::from(fd);
    // Blocking from here on: the per-call socket timeouts bound each
    // read and write instead.
    stream
        .set_nonblocking(false)
        .map_err(|source| StepdError::Io {
            path: path.to_owned(),
            op: "connect",
            source,
        })?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            assert_eq!(i32::from_ne_bytes(hello), CLIENT_PROTOCOL_VERSION as i32);
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

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn state_numbering_follows_the_stepd_version() {
        let table = [
            (0, 0x2600, StepState::NotRunning),
            (1, 0x2600, StepState::Starting),
            (2, 0x2D00, StepState::Running),
            (3, 0x2600, StepState::Ending),
            (3, 0x2700, StepState::Ending),
            (3, 0x2800, StepState::Cancelled),
            (4, 0x2700, StepState::Unknown(4)),
            (4, 0x2800, StepState::Ending),
            (4, 0x2D00, StepState::Ending),
            (5, 0x2D00, StepState::Unknown(5)),
            (-1, 0x2D00, StepState::Unknown(-1)),
        ];
        for (raw, version, want) in table {
            assert_eq!(
                StepState::from_raw(raw, version),
                want,
                "{raw} at {version:#x}"
            );
        }
    }

    #[test]
    fn reads_state_and_uid_in_native_order() {
        let (_dir, path, server) = scripted(
            0x2800,
            vec![(4, int(3).to_vec()), (4, 1001u32.to_ne_bytes().to_vec())],
        );
        let mut client = StepdClient::connect(&path, soon()).expect("connect");
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
        let mut client = StepdClient::connect(&path, soon()).expect("connect");
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
        let mut client = StepdClient::connect(&path, soon()).expect("connect");
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
        let mut client = StepdClient::connect(&path, soon()).expect("connect");
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
        let mut client =
            StepdClient::connect(&path, started + Duration::from_millis(200)).expect("connect");
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
        match StepdClient::connect(&path, deadline) {
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
        let err = StepdClient::connect(&path, soon()).expect_err("no socket");
        assert!(matches!(err, StepdError::Connect { .. }), "{err:?}");
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn a_passed_deadline_fails_before_any_syscall() {
        let (_dir, path, _server) = scripted(0x2600, Vec::new());
        let err = StepdClient::connect(&path, Instant::now()).expect_err("late");
        assert!(
            matches!(err, StepdError::Timeout { op: "connect", .. }),
            "{err:?}"
        );
    }
}
