//! Waiting on one descriptor until a deadline, shared by the stepd client
//! and the callerid transport.
//!
//! `ppoll` sleeps on a high-resolution timer and ends within microseconds
//! of the deadline; a recv blocked on SO_RCVTIMEO alone wakes on the
//! kernel's timer wheel, up to tens of ms late (32 ms at HZ=250).

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

/// How a wait ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Ready for the events asked, or hung up, or in error: the syscall
    /// after tells which.
    Ready,
    /// The deadline passed first (or had passed already).
    TimedOut,
}

/// Wait until `fd` is ready for `events`, or until `deadline`.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Instant,
) -> Result<Readiness, Errno> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Readiness::TimedOut);
        }
        let mut fds = [PollFd::new(fd, events)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(left)), None) {
            // Timed out: the next round sees no time left.
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(Readiness::Ready),
            Err(errno) => return Err(errno),
        }
    }
}
