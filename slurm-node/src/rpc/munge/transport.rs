//! One request, one reply over munged's unix socket, nothing past a deadline.
//!
//! The socket is non-blocking from creation; every connect, write and read
//! waits in `poll` for at most what is left of the deadline, so a stopped
//! or wedged munged costs the caller its budget and no more. munged's peer
//! credentials (SO_PEERCRED) are checked before a byte is sent: it must run
//! as root, as the `munge` user, or as ourselves.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket, sockopt,
};

use super::codec::{self, HEADER_LEN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{stage}: {errno}")]
    Io { stage: &'static str, errno: Errno },
    #[error("munged closed the connection while {0}")]
    Closed(&'static str),
    #[error("the socket's peer runs as uid {0}, not root or munge")]
    UntrustedPeer(u32),
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
}

impl TransportError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

fn io_err(stage: &'static str, e: &io::Error) -> TransportError {
    TransportError::Io {
        stage,
        errno: e.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
    }
}

/// Waits until `fd` is ready for `flags` or the deadline passes.
fn wait(
    fd: &impl AsFd,
    flags: PollFlags,
    stage: &'static str,
    deadline: Instant,
) -> Result<(), TransportError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout(stage));
        }
        // Round up so a sub-millisecond remainder still waits.
        let ms = left.as_millis().saturating_add(1);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), flags)];
        match poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(TransportError::Io { stage, errno }),
        }
    }
}

fn connect_by(path: &Path, deadline: Instant) -> Result<UnixStream, TransportError> {
    const STAGE: &str = "connecting to munged";
    let addr = UnixAddr::new(path).map_err(|errno| TransportError::Io {
        stage: STAGE,
        errno,
    })?;
    let fd: OwnedFd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|errno| TransportError::Io {
        stage: STAGE,
        errno,
    })?;
    loop {
        use std::os::fd::AsRawFd;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            // A unix listener with a full backlog: try again shortly.
            Err(Errno::EAGAIN) => {
                if Instant::now() >= deadline {
                    return Err(TransportError::Timeout(STAGE));
                }
                std::thread::sleep(
                    std::time::Duration::from_millis(5)
                        .min(deadline.saturating_duration_since(Instant::now())),
                );
            }
            Err(Errno::EINPROGRESS) => {
                wait(&fd, PollFlags::POLLOUT, STAGE, deadline)?;
                match getsockopt(&fd, sockopt::SocketError) {
                    Ok(0) => break,
                    Ok(e) => {
                        return Err(TransportError::Io {
                            stage: STAGE,
                            errno: Errno::from_raw(e),
                        });
                    }
                    Err(errno) => {
                        return Err(TransportError::Io {
                            stage: STAGE,
                            errno,
                        });
                    }
                }
            }
            Err(errno) => {
                return Err(TransportError::Io {
                    stage: STAGE,
                    errno,
                });
            }
        }
    }
    Ok(UnixStream::from(fd))
}

/// uids a munged may run as: root, the `munge` user, and our own euid (a
/// daemon running as us can do nothing we could not).
fn trusted_peer(uid: u32) -> bool {
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return true;
    }
    matches!(nix::unistd::User::from_name("munge"), Ok(Some(u)) if u.uid.as_raw() == uid)
}

fn write_all(s: &mut UnixStream, mut buf: &[u8], deadline: Instant) -> Result<(), TransportError> {
    const STAGE: &str = "sending to munged";
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(TransportError::Closed(STAGE)),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(s, PollFlags::POLLOUT, STAGE, deadline)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(STAGE, &e)),
        }
    }
    Ok(())
}

fn read_exact(
    s: &mut UnixStream,
    mut buf: &mut [u8],
    stage: &'static str,
    deadline: Instant,
) -> Result<(), TransportError> {
    while !buf.is_empty() {
        match s.read(buf) {
            Ok(0) => return Err(TransportError::Closed(stage)),
            Ok(n) => buf = buf.get_mut(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(s, PollFlags::POLLIN, stage, deadline)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(stage, &e)),
        }
    }
    Ok(())
}

/// Sends `frame` and returns the body of a reply of type `want`.
pub fn exchange(
    path: &Path,
    frame: &[u8],
    want: u8,
    deadline: Instant,
) -> Result<Vec<u8>, TransportError> {
    if Instant::now() >= deadline {
        return Err(TransportError::Timeout("before connecting to munged"));
    }
    let mut s = connect_by(path, deadline)?;
    let peer = getsockopt(&s, sockopt::PeerCredentials).map_err(|errno| TransportError::Io {
        stage: "reading munged's credentials",
        errno,
    })?;
    if !trusted_peer(peer.uid()) {
        return Err(TransportError::UntrustedPeer(peer.uid()));
    }
    write_all(&mut s, frame, deadline)?;
    let mut hdr = [0u8; HEADER_LEN];
    read_exact(&mut s, &mut hdr, "waiting for munged's reply", deadline)?;
    let header = codec::decode_header(&hdr, want)?;
    let len = usize::try_from(header.body_len)
        .map_err(|_| codec::CodecError::TooLong(header.body_len))?;
    let mut body = vec![0u8; len];
    read_exact(&mut s, &mut body, "reading munged's reply", deadline)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_munge_or_ourselves_are_trusted() {
        assert!(trusted_peer(0));
        assert!(trusted_peer(nix::unistd::geteuid().as_raw()));
        if let Ok(Some(u)) = nix::unistd::User::from_name("munge") {
            assert!(trusted_peer(u.uid.as_raw()));
        }
        let stranger = 4_242_424;
        assert!(nix::unistd::User::from_uid(stranger.into()).is_ok_and(|u| u.is_none()));
        assert!(!trusted_peer(stranger));
    }

    #[test]
    fn a_missing_socket_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = exchange(
            &dir.path().join("absent"),
            b"x",
            codec::ENC_RSP,
            Instant::now() + std::time::Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                TransportError::Io {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{e}"
        );
    }
}
