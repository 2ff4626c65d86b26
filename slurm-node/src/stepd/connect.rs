//! Opening a stepd socket without ever blocking in connect(2).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};

use super::protocol::op;
use super::{StepdError, StepdPeers};

/// Connecting only fails with EAGAIN while the stepd's backlog is full, which
/// clears as soon as it accepts; poll often at first, then back off.
pub(crate) const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(1);
pub(crate) const CONNECT_RETRY_MAX: Duration = Duration::from_millis(20);

/// A non-blocking, close-on-exec unix stream socket and the address of
/// `path`, not yet connected.
pub(crate) fn nonblocking_socket(path: &Path) -> Result<(UnixAddr, OwnedFd), StepdError> {
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

/// The listener behind a connected socket must run as one of `peers`.
/// Its credentials are the ones it had when it called listen(2), known
/// to the kernel as soon as connect(2) returns, before the stepd accepts:
/// so nothing is ever sent to an untrusted listener.
pub(crate) fn check_peer(
    fd: &impl AsFd,
    path: &Path,
    peers: &StepdPeers,
) -> Result<(), StepdError> {
    let cred =
        socket::getsockopt(fd, sockopt::PeerCredentials).map_err(|errno| StepdError::Io {
            path: path.to_owned(),
            op: op::CONNECT,
            source: errno.into(),
        })?;
    if peers.allows(cred.uid()) {
        Ok(())
    } else {
        Err(StepdError::UntrustedPeer {
            path: path.to_owned(),
            uid: cred.uid(),
            pid: cred.pid(),
        })
    }
}

/// Non-blocking connect, so a stepd with a full backlog (busy or wedged)
/// costs at most the deadline instead of blocking in connect(2); then the
/// listener's credentials are checked against `peers`.
pub(crate) fn connect_stream(
    path: &Path,
    peers: &StepdPeers,
    deadline: Instant,
) -> Result<UnixStream, StepdError> {
    let connect_err = |source: io::Error| StepdError::Connect {
        path: path.to_owned(),
        source,
    };
    let timeout = || StepdError::Timeout {
        path: path.to_owned(),
        op: op::CONNECT,
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
    check_peer(&fd, path, peers)?;
    let stream = UnixStream::from(fd);
    // Blocking from here on: the per-call socket timeouts bound each
    // read and write instead.
    stream
        .set_nonblocking(false)
        .map_err(|source| StepdError::Io {
            path: path.to_owned(),
            op: op::CONNECT,
            source,
        })?;
    Ok(stream)
}
