//! The TCP side of one callerid attempt: connect, send the frame, read the
//! length-prefixed reply, each syscall bounded by the time left until the
//! deadline. What the bytes mean is decided in `body` and `reply`.
//!
//! Each read and write first waits in `ppoll` for the time left, as the
//! stepd client does and for the same reason: a recv blocked on
//! SO_RCVTIMEO alone wakes on the kernel's timer wheel, up to tens of ms
//! past the deadline; ppoll's high-resolution timer ends within
//! microseconds of it. The socket timeouts stay armed behind it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use crate::rpc::{RpcError, Stage};
use crate::wait::{Readiness, wait_fd};

use super::reply::reply_frame_len;

/// Send `frame` to `peer` and read one reply frame (without its length
/// prefix). `None`: the slurmd closed before sending a byte.
pub(crate) fn round_trip(
    peer: SocketAddr,
    frame: &[u8],
    deadline: Instant,
) -> Result<Option<Vec<u8>>, RpcError> {
    let left = time_left(peer, Stage::Connecting, deadline)?;
    let mut stream = TcpStream::connect_timeout(&peer, left).map_err(|e| {
        if is_timeout(&e) {
            RpcError::Timeout {
                peer,
                stage: Stage::Connecting,
            }
        } else {
            RpcError::Connect { peer, source: e }
        }
    })?;
    // Best effort: a small request should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    write_all(&mut stream, frame, peer, deadline)?;

    let mut prefix = [0u8; 4];
    match read_full(&mut stream, &mut prefix, peer, deadline)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(RpcError::ClosedMidReply { peer }),
    }
    let mut buf = vec![0u8; reply_frame_len(peer, prefix)?];
    if read_full(&mut stream, &mut buf, peer, deadline)? != buf.len() {
        return Err(RpcError::ClosedMidReply { peer });
    }
    Ok(Some(buf))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// The time left, or a timeout error once none is (socket timeouts of zero
/// are invalid, so "no time" must never reach them).
pub(crate) fn time_left(
    peer: SocketAddr,
    stage: Stage,
    deadline: Instant,
) -> Result<Duration, RpcError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(RpcError::Timeout { peer, stage }),
    }
}

/// Wait until `stream` is ready for `events` (or hung up, or in error:
/// the syscall after tells which), or fail at the deadline.
fn wait_ready(
    stream: &TcpStream,
    events: PollFlags,
    peer: SocketAddr,
    stage: Stage,
    deadline: Instant,
) -> Result<(), RpcError> {
    match wait_fd(stream.as_fd(), events, deadline) {
        Ok(Readiness::Ready) => Ok(()),
        Ok(Readiness::TimedOut) => Err(RpcError::Timeout { peer, stage }),
        Err(errno) => Err(RpcError::Io {
            peer,
            stage,
            source: errno.into(),
        }),
    }
}

fn write_all(
    stream: &mut TcpStream,
    mut buf: &[u8],
    peer: SocketAddr,
    deadline: Instant,
) -> Result<(), RpcError> {
    let stage = Stage::Sending;
    while !buf.is_empty() {
        wait_ready(stream, PollFlags::POLLOUT, peer, stage, deadline)?;
        let left = time_left(peer, stage, deadline)?;
        stream
            .set_write_timeout(Some(left))
            .map_err(|source| RpcError::Io {
                peer,
                stage,
                source,
            })?;
        match stream.write(buf) {
            Ok(0) => {
                return Err(RpcError::Io {
                    peer,
                    stage,
                    source: io::ErrorKind::WriteZero.into(),
                });
            }
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(RpcError::Timeout { peer, stage }),
            Err(source) => {
                return Err(RpcError::Io {
                    peer,
                    stage,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Fills `buf` unless the peer closes first; returns how much was read. A
/// reset before the first byte counts as a close, as that is how a slurmd
/// that dropped our request may look.
fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    peer: SocketAddr,
    deadline: Instant,
) -> Result<usize, RpcError> {
    let stage = Stage::Receiving;
    let mut got = 0;
    while got < buf.len() {
        wait_ready(stream, PollFlags::POLLIN, peer, stage, deadline)?;
        let left = time_left(peer, stage, deadline)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|source| RpcError::Io {
                peer,
                stage,
                source,
            })?;
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match stream.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(RpcError::Timeout { peer, stage }),
            Err(e) if got == 0 && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(source) => {
                return Err(RpcError::Io {
                    peer,
                    stage,
                    source,
                });
            }
        }
    }
    Ok(got)
}
