//! Receiving one descriptor passed with `SCM_RIGHTS`, as a stepd sends its
//! job's namespace files.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags};

/// Where the kernel's view of our own descriptors lives; see [`reopen`].
const PROC_SELF_FD: &str = "/proc/self/fd";

/// Why no descriptor came out of one `recvmsg`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FdRecvError {
    /// From recvmsg itself; the caller decides what a timeout or reset is.
    #[error("recvmsg: {0}")]
    Errno(Errno),
    #[error("descriptor control data truncated")]
    Truncated,
    #[error("no descriptor attached")]
    NoneAttached,
    #[error("{0} descriptors where one was expected")]
    Many(usize),
    #[error("cannot reopen the received descriptor: {0}")]
    Reopen(#[source] io::Error),
}

/// Receive the one-byte message that carries a descriptor. `Ok(None)`: the
/// peer closed before sending it. Every descriptor that did arrive is
/// closed unless it is the one returned. EINTR comes back as an error so
/// the caller re-arms its timeout before trying again.
pub(crate) fn recv_fd(sock: BorrowedFd<'_>) -> Result<Option<OwnedFd>, FdRecvError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    // Room for more than the one fd a stepd sends, so a sender that
    // sends extra is seen (and its fds closed) instead of having the
    // kernel truncate the control data.
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (bytes, received) = match socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => {
            let mut received = Vec::new();
            let cmsgs = msg.cmsgs().map_err(|_| FdRecvError::Truncated)?;
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    received.extend(fds.into_iter().map(ReceivedFd));
                }
            }
            (msg.bytes, received)
        }
        Err(errno) => return Err(FdRecvError::Errno(errno)),
    };
    match received.as_slice() {
        [one] => reopen(one).map(Some).map_err(FdRecvError::Reopen),
        [] if bytes == 0 => Ok(None),
        [] => Err(FdRecvError::NoneAttached),
        many => Err(FdRecvError::Many(many.len())),
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
