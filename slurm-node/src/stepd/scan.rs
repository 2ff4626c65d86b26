//! The poll-based scan: every stepd socket of the node asked for its step's
//! uid at once, on non-blocking sockets, with one `poll` over all of them.
//! What each connection sends and how its replies decode is the codec's
//! [`UidExchange`]; this file only connects, polls and moves bytes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, MsgFlags, UnixAddr};

use super::connect::{CONNECT_RETRY_FIRST, CONNECT_RETRY_MAX, check_peer, nonblocking_socket};
use super::decode::{UidExchange, Want};
use super::protocol::{INT_LEN, op};
use super::{StepdClient, StepdError, StepdPeers};

/// At most this many stepd sockets are open at once in [`scan_step_uids`],
/// so a node with thousands of steps (or stale sockets) cannot use up
/// sshd's descriptors. A hung stepd holds its slot until the deadline;
/// the others are refilled as each answers, so it takes this many hung
/// stepds at once before a healthy one waits. 256 is far more stepds than
/// a node has hung at one time (each is a wedged job), and far fewer fds
/// than sshd's limit (1024 soft at the least).
pub const SCAN_WINDOW: usize = 256;

/// What one stepd said of its step's owner.
#[derive(Debug)]
pub enum ScanAnswer {
    /// The caller kept it: the connection is in step for further requests.
    Kept {
        client: StepdClient,
        uid: u32,
    },
    /// Answered, and closed as soon as it had, since the caller did not
    /// want it: it never held a window slot past its answer.
    Closed {
        uid: u32,
    },
    Failed(StepdError),
}

/// Connect to every socket, check its listener's credentials against
/// `peers`, send the handshake and STEP_UID at once, and collect the
/// answers as they arrive (poll), all within `deadline`. The answers are
/// in the order of `paths`. `keep(uid)` says which answered connections
/// stay open (with `deadline` as their own); the rest are closed as soon
/// as they answer.
///
/// No threads: non-blocking sockets and one `poll` over all of them, so a
/// hung stepd costs the others nothing. At most [`SCAN_WINDOW`] are open
/// at once, a new one opened as soon as one finishes (kept connections
/// leave the window too: they are the caller's).
pub fn scan_step_uids(
    paths: &[PathBuf],
    peers: &StepdPeers,
    deadline: Instant,
    keep: impl FnMut(u32) -> bool,
) -> Vec<ScanAnswer> {
    scan_windowed(paths, peers, deadline, SCAN_WINDOW, keep)
}

/// One step of a probe: the stepd's version and the uid once answered.
type ProbeStep = Result<Option<(u32, u32)>, StepdError>;

/// The sliding window of [`scan_step_uids`], of `window` probes.
fn scan_windowed(
    paths: &[PathBuf],
    peers: &StepdPeers,
    deadline: Instant,
    window: usize,
    mut keep: impl FnMut(u32) -> bool,
) -> Vec<ScanAnswer> {
    let window = window.max(1);
    let mut answers: Vec<Option<ScanAnswer>> = paths.iter().map(|_| None).collect();
    // The probes in the window, with their index in `paths`.
    let mut open: Vec<(usize, UidProbe<'_>)> = Vec::with_capacity(window.min(paths.len()));
    let mut unopened = paths.iter().enumerate().peekable();
    let mut pause = CONNECT_RETRY_FIRST;
    let mut next_connect = Instant::now();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        // Refill the window. A probe that finishes at once (nobody
        // listens, an untrusted listener) frees its slot at once.
        while open.len() < window {
            let Some(&(i, path)) = unopened.peek() else {
                break;
            };
            let mut probe = match UidProbe::new(path, peers) {
                Ok(p) => p,
                // Out of descriptors while some of ours are open: this one
                // waits for a slot to free instead of failing.
                Err(e) if out_of_fds(&e) && !open.is_empty() => break,
                Err(e) => {
                    unopened.next();
                    set(&mut answers, i, ScanAnswer::Failed(e));
                    continue;
                }
            };
            unopened.next();
            match probe.try_connect() {
                Ok(None) => open.push((i, probe)),
                Ok(Some((version, uid))) => {
                    let answer = answered(probe, version, uid, deadline, &mut keep);
                    set(&mut answers, i, answer);
                }
                Err(e) => set(&mut answers, i, ScanAnswer::Failed(e)),
            }
        }
        let now = Instant::now();
        let mut connecting = false;
        if now >= next_connect {
            retain_unfinished(
                &mut open,
                &mut answers,
                |p| {
                    if p.connected {
                        return Ok(None);
                    }
                    let step = p.try_connect();
                    connecting |= !p.connected;
                    step
                },
                deadline,
                &mut keep,
            );
            if connecting {
                // The backlog of a busy stepd clears when it accepts, which
                // poll cannot tell us: ask again soon, then less often.
                next_connect = now + pause;
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
        } else {
            connecting = open.iter().any(|(_, p)| !p.connected);
        }
        if open.is_empty() && unopened.peek().is_none() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(_, p)| {
                let mut events = PollFlags::POLLIN;
                if !p.exchange.unsent().is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                PollFd::new(p.fd.as_fd(), events)
            })
            .collect();
        let mut wake = deadline;
        if connecting {
            wake = wake.min(next_connect);
        }
        let polled = poll(
            &mut fds,
            poll_timeout(wake.saturating_duration_since(Instant::now())),
        );
        let mut ready = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect::<Vec<_>>()
            .into_iter();
        drop(fds);
        match polled {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => {
                for (i, p) in open.drain(..) {
                    set(&mut answers, i, ScanAnswer::Failed(p.io(errno.into())));
                }
                for (i, path) in unopened.by_ref() {
                    let source = io::Error::from(errno);
                    let e = StepdError::Io {
                        path: path.clone(),
                        op: op::CONNECT,
                        source,
                    };
                    set(&mut answers, i, ScanAnswer::Failed(e));
                }
                break;
            }
        }
        retain_unfinished(
            &mut open,
            &mut answers,
            |p| {
                if !p.connected {
                    return Ok(None);
                }
                let revents = ready.next().unwrap_or(PollFlags::empty());
                if revents.contains(PollFlags::POLLOUT) {
                    if let Some(answer) = p.try_send()? {
                        return Ok(Some(answer));
                    }
                }
                if revents.intersects(
                    PollFlags::POLLIN
                        | PollFlags::POLLHUP
                        | PollFlags::POLLERR
                        | PollFlags::POLLNVAL,
                ) {
                    return p.try_recv();
                }
                Ok(None)
            },
            deadline,
            &mut keep,
        );
    }
    for (i, p) in open {
        set(&mut answers, i, ScanAnswer::Failed(p.timeout()));
    }
    paths
        .iter()
        .zip(answers)
        .map(|(path, answer)| {
            answer.unwrap_or_else(|| {
                ScanAnswer::Failed(StepdError::Timeout {
                    path: path.clone(),
                    op: op::CONNECT,
                })
            })
        })
        .collect()
}

fn set(answers: &mut [Option<ScanAnswer>], i: usize, answer: ScanAnswer) {
    if let Some(slot) = answers.get_mut(i) {
        *slot = Some(answer);
    }
}

/// socket(2) failed for want of a descriptor (ours or the system's).
fn out_of_fds(e: &StepdError) -> bool {
    matches!(
        e,
        StepdError::Connect { source, .. }
            if source.raw_os_error().map(Errno::from_raw) .is_some_and(|errno| matches!(errno, Errno::EMFILE | Errno::ENFILE))
    )
}

/// Advance every open probe with `step`; the finished ones (answered or
/// failed) leave the window, their answers recorded.
fn retain_unfinished<'p>(
    open: &mut Vec<(usize, UidProbe<'p>)>,
    answers: &mut [Option<ScanAnswer>],
    mut step: impl FnMut(&mut UidProbe<'p>) -> ProbeStep,
    deadline: Instant,
    keep: &mut impl FnMut(u32) -> bool,
) {
    let mut still_open = Vec::with_capacity(open.len());
    for (i, mut probe) in open.drain(..) {
        match step(&mut probe) {
            Ok(None) => still_open.push((i, probe)),
            Ok(Some((version, uid))) => {
                set(answers, i, answered(probe, version, uid, deadline, keep))
            }
            Err(e) => set(answers, i, ScanAnswer::Failed(e)),
        }
    }
    *open = still_open;
}

/// A probe that has its answer: kept as a client if the caller wants
/// its uid, else closed here.
fn answered(
    probe: UidProbe<'_>,
    version: u32,
    uid: u32,
    deadline: Instant,
    keep: &mut impl FnMut(u32) -> bool,
) -> ScanAnswer {
    if !keep(uid) {
        return ScanAnswer::Closed { uid };
    }
    match probe.into_client(deadline, version) {
        Ok(client) => ScanAnswer::Kept { client, uid },
        Err(e) => ScanAnswer::Failed(e),
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

/// One stepd being asked its step's uid on a non-blocking socket: the
/// socket, and the codec's state for what goes over it.
#[derive(Debug)]
struct UidProbe<'a> {
    path: PathBuf,
    addr: UnixAddr,
    fd: OwnedFd,
    /// Whom the listener may run as.
    peers: &'a StepdPeers,
    connected: bool,
    exchange: UidExchange,
}

impl<'a> UidProbe<'a> {
    fn new(path: &Path, peers: &'a StepdPeers) -> Result<UidProbe<'a>, StepdError> {
        let (addr, fd) = nonblocking_socket(path)?;
        Ok(UidProbe {
            path: path.to_owned(),
            addr,
            fd,
            peers,
            connected: false,
            exchange: UidExchange::new(),
        })
    }

    /// The operation the probe is in, for errors.
    fn op(&self) -> &'static str {
        if self.connected {
            self.exchange.op()
        } else {
            op::CONNECT
        }
    }

    /// Some (version, uid) when the whole reply is in. Nothing is sent
    /// before the listener's credentials passed.
    fn try_connect(&mut self) -> ProbeStep {
        match socket::connect(self.fd.as_raw_fd(), &self.addr) {
            Ok(()) | Err(Errno::EISCONN) => {
                check_peer(&self.fd, &self.path, self.peers)?;
                self.connected = true;
                self.try_send()
            }
            // EAGAIN: the backlog is full; tried again in a later round.
            Err(Errno::EINTR | Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY) => Ok(None),
            Err(errno) => Err(StepdError::Connect {
                path: self.path.clone(),
                source: errno.into(),
            }),
        }
    }

    fn try_send(&mut self) -> ProbeStep {
        while !self.exchange.unsent().is_empty() {
            // MSG_NOSIGNAL: a stepd that went away must not SIGPIPE sshd.
            match socket::send(
                self.fd.as_raw_fd(),
                self.exchange.unsent(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(self.ended()),
                Ok(n) => self.exchange.sent(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    self.exchange.abandon_send();
                }
                Err(errno) => return Err(self.io(errno.into())),
            }
        }
        Ok(None)
    }

    fn try_recv(&mut self) -> ProbeStep {
        // Never more than the codec wants: the stepd sends nothing unasked,
        // and anything past the reply belongs to the next request.
        let mut buf = [0u8; INT_LEN];
        while let Want::Bytes(n) = self.exchange.want() {
            let dst = buf.get_mut(..n.min(INT_LEN)).unwrap_or_default();
            match socket::recv(self.fd.as_raw_fd(), dst, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::ECONNRESET) => return Err(self.ended()),
                Ok(n) => {
                    let chunk = dst.get(..n).unwrap_or_default();
                    let fed = self.exchange.feed(chunk);
                    if let Some(answer) = fed.map_err(|e| StepdError::from_codec(&self.path, e))? {
                        return Ok(Some(answer));
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EPIPE | Errno::ENOTCONN) => return Err(self.ended()),
                Err(errno) => return Err(self.io(errno.into())),
            }
        }
        // The codec never stops wanting bytes before it has answered.
        Err(self.ended())
    }

    /// The stepd closed before the reply was complete.
    fn ended(&self) -> StepdError {
        StepdError::from_codec(&self.path, self.exchange.eof())
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
    fn into_client(self, deadline: Instant, version: u32) -> Result<StepdClient, StepdError> {
        let stream = UnixStream::from(self.fd);
        // Blocking from here on: the per-call socket timeouts bound each
        // read and write instead.
        if let Err(source) = stream.set_nonblocking(false) {
            return Err(StepdError::Io {
                path: self.path,
                op: op::STEP_UID,
                source,
            });
        }
        Ok(StepdClient::in_step(stream, self.path, deadline, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread;

    fn me() -> StepdPeers {
        StepdPeers::from_uids(vec![nix::unistd::geteuid().as_raw()])
    }

    /// A stepd that answers the handshake with 0x2600 and STEP_UID with
    /// `uid`, then waits for the client to close.
    fn healthy(path: &Path, uid: u32) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).expect("bind");
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = [0u8; 2 * INT_LEN];
            conn.read_exact(&mut request)
                .expect("handshake and STEP_UID");
            let mut reply = 0x2600i32.to_ne_bytes().to_vec();
            reply.extend(uid.to_ne_bytes());
            conn.write_all(&reply).expect("reply");
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest);
        })
    }

    #[test]
    fn hung_stepds_hold_their_slots_and_the_rest_flow_past_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        // Listening, never accepting: connect succeeds, no reply ever.
        let mut hung = Vec::new();
        for job in 0..3 {
            let path = dir.path().join(format!("n1_{job}.4294967292"));
            hung.push(UnixListener::bind(&path).expect("bind"));
            paths.push(path);
        }
        let mut servers = Vec::new();
        for job in 3..23u32 {
            let path = dir.path().join(format!("n1_{job}.4294967292"));
            servers.push(healthy(&path, 1000 + job));
            paths.push(path);
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        // Three of the four slots stay taken by the hung stepds, which
        // come first: every healthy one goes through the last slot.
        let answers = scan_windowed(&paths, &me(), deadline, 4, |uid| uid == 1010);
        assert!(Instant::now() < deadline + Duration::from_millis(500));
        assert_eq!(answers.len(), paths.len());
        for (path, answer) in paths.iter().zip(&answers).take(3) {
            match answer {
                ScanAnswer::Failed(StepdError::Timeout { path: p, op }) => {
                    assert_eq!(p, path);
                    assert_ne!(*op, op::CONNECT, "connected, then no reply");
                }
                other => panic!("{}: expected a timeout, got {other:?}", path.display()),
            }
        }
        for (job, answer) in (3..23u32).zip(answers.iter().skip(3)) {
            match answer {
                ScanAnswer::Kept { client, uid } => {
                    assert_eq!((job, *uid), (10, 1010));
                    assert_eq!(client.protocol_version(), 0x2600);
                }
                ScanAnswer::Closed { uid } => {
                    assert_ne!(job, 10);
                    assert_eq!(*uid, 1000 + job);
                }
                ScanAnswer::Failed(e) => panic!("job {job}: {e}"),
            }
        }
        drop(answers);
        for s in servers {
            s.join().expect("server");
        }
    }

    #[test]
    fn sockets_nobody_listens_on_free_their_slot_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths: Vec<PathBuf> = (0..10)
            .map(|j| dir.path().join(format!("n1_{j}.4294967292")))
            .collect();
        let path = dir.path().join("n1_99.4294967292");
        let server = healthy(&path, 7);
        paths.push(path);
        let deadline = Instant::now() + Duration::from_secs(5);
        let answers = scan_windowed(&paths, &me(), deadline, 1, |_| false);
        let (last, missing) = answers.split_last().expect("answers");
        assert!(matches!(last, ScanAnswer::Closed { uid: 7 }), "{last:?}");
        for a in missing {
            assert!(
                matches!(a, ScanAnswer::Failed(e) if e.is_stale_socket()),
                "{a:?}"
            );
        }
        server.join().expect("server");
    }

    #[test]
    fn an_untrusted_listener_is_failed_and_sent_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1_5.4294967292");
        let listener = UnixListener::bind(&path).expect("bind");
        let others = StepdPeers::from_uids(vec![nix::unistd::geteuid().as_raw().wrapping_add(1)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let answers = scan_step_uids(std::slice::from_ref(&path), &others, deadline, |_| true);
        assert!(
            matches!(
                answers.as_slice(),
                [ScanAnswer::Failed(StepdError::UntrustedPeer { .. })]
            ),
            "{answers:?}"
        );
        let (mut conn, _) = listener.accept().expect("the connect was queued");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"", "nothing may reach an untrusted listener");
    }
}
