//! What every fake daemon's connection thread needs: waiting and hanging
//! in short ticks, so a shim that is being stopped never waits on a
//! blocked thread.

use std::io::{self, Read};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a blocked connection thread looks at the stop flag; sockets
/// get this as their read timeout.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Sleep for `delay` unless `stopping` turns true first; false if it did.
pub(crate) fn pause(delay: Duration, stopping: impl Fn() -> bool) -> bool {
    let until = Instant::now() + delay;
    loop {
        if stopping() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        thread::sleep(left.min(TICK));
    }
}

/// Keep the connection open and say nothing until the client leaves or
/// the shim stops; whatever the client sends is swallowed.
pub(crate) fn hang(stream: &mut impl Read, stopping: impl Fn() -> bool) {
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_tick(&e) && !stopping() => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The read timeout that lets a blocked thread look at the stop flag.
pub(crate) fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Wait for every connection thread a shim started; each ends within a
/// [`TICK`] of the stop flag being set.
pub(crate) fn join_all(connections: &Mutex<Vec<JoinHandle<()>>>) {
    let handles = std::mem::take(&mut *connections.lock().unwrap_or_else(PoisonError::into_inner));
    for handle in handles {
        let _ = handle.join();
    }
}
