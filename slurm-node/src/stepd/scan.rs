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

use super::connect::{CONNECT_RETRY_FIRST, CONNECT_RETRY_MAX, nonblocking_socket};
use super::decode::{UidExchange, Want};
use super::protocol::{INT_LEN, op};
use super::{StepdClient, StepdError};

/// At most this many stepd sockets are connecting at once in
/// [`scan_step_uids`], so a node with thousands of stale sockets cannot use
/// up sshd's descriptors. A caller that keeps only some of the returned
/// connections should pass at most this many paths per call.
pub const SCAN_BATCH: usize = 256;

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

type ScanResult = Result<(StepdClient, u32), StepdError>;
/// One step of a probe: the stepd's version and the uid once answered.
type ProbeStep = Result<Option<(u32, u32)>, StepdError>;

fn scan_batch(paths: &[PathBuf], deadline: Instant) -> Vec<ScanResult> {
    let mut results: Vec<Option<ScanResult>> = paths.iter().map(|_| None).collect();
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
                    if !p.exchange.unsent().is_empty() {
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
                op: op::CONNECT,
            }),
        })
        .collect()
}

/// Advance one probe with `step`; a finished one (answered or failed)
/// moves from `probe` to `result`, its socket kept or closed.
fn settle(
    probe: &mut Option<UidProbe>,
    result: &mut Option<ScanResult>,
    deadline: Instant,
    step: fn(&mut UidProbe) -> ProbeStep,
) {
    let Some(p) = probe.as_mut() else {
        return;
    };
    match step(p) {
        Ok(None) => {}
        Ok(Some((version, uid))) => {
            *result = probe.take().map(|p| p.into_client(deadline, version, uid));
        }
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

/// One stepd being asked its step's uid on a non-blocking socket: the
/// socket, and the codec's state for what goes over it.
#[derive(Debug)]
struct UidProbe {
    path: PathBuf,
    addr: UnixAddr,
    fd: OwnedFd,
    connected: bool,
    exchange: UidExchange,
}

impl UidProbe {
    fn new(path: &Path) -> Result<UidProbe, StepdError> {
        let (addr, fd) = nonblocking_socket(path)?;
        Ok(UidProbe {
            path: path.to_owned(),
            addr,
            fd,
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

    /// Some (version, uid) when the whole reply is in.
    fn try_connect(&mut self) -> ProbeStep {
        match socket::connect(self.fd.as_raw_fd(), &self.addr) {
            Ok(()) | Err(Errno::EISCONN) => {
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
    fn into_client(self, deadline: Instant, version: u32, uid: u32) -> ScanResult {
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
        Ok((
            StepdClient::in_step(stream, self.path, deadline, version),
            uid,
        ))
    }
}
