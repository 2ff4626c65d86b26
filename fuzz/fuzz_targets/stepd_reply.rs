//! `StepdClient` against a fake slurmstepd whose every reply byte, from the
//! handshake answer on, is the fuzz input.
//!
//! Per input: a listener at a fresh path in a per-process temp dir, and a
//! peer thread that accepts, reads the client's handshake int, writes the
//! input and half-closes. It then drains the client's requests until the
//! client hangs up: closing outright would race the client's next request
//! (EPIPE instead of reading the queued reply bytes), so the same input
//! could reach different code on different runs. After the input the client
//! sees EOF at once, so nothing waits for the deadline.

#![no_main]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slurm_node::stepd::StepdClient;

/// Generous for a local socket, short enough that a hang shows up fast.
const DEADLINE: Duration = Duration::from_millis(200);
/// Bounds the peer's reads too, in case the client misbehaves.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

static NEXT: AtomicU64 = AtomicU64::new(0);

static DIR: OnceLock<PathBuf> = OnceLock::new();

fn socket_dir_if_made() -> Option<&'static Path> {
    DIR.get().map(PathBuf::as_path)
}

fn socket_dir() -> &'static Path {
    DIR.get_or_init(|| {
        // SAFETY: called once, before any socket exists, to make writes to
        // a hung-up peer fail with EPIPE instead of killing the process
        // (libFuzzer's main does not do what Rust's runtime does here).
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let dir =
            std::env::temp_dir().join(format!("slurm-adopt-fuzz-stepd.{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the socket directory");
        // SAFETY: registers a plain `extern "C" fn` with no arguments.
        unsafe {
            libc::atexit(remove_socket_dir);
        }
        dir
    })
}

/// libFuzzer ends a bounded run with exit(), so this removes the directory
/// (a crash leaves it behind, next to the artifact that matters more).
extern "C" fn remove_socket_dir() {
    if let Some(dir) = socket_dir_if_made() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn peer(listener: UnixListener, reply: Vec<u8>) {
    let Ok((mut conn, _)) = listener.accept() else {
        return;
    };
    drop(listener);
    let _ = conn.set_read_timeout(Some(PEER_TIMEOUT));
    let _ = conn.set_write_timeout(Some(PEER_TIMEOUT));
    let mut hello = [0u8; 4];
    if conn.read_exact(&mut hello).is_err() {
        return;
    }
    if conn.write_all(&reply).is_err() {
        return;
    }
    let _ = conn.shutdown(Shutdown::Write);
    let mut sink = [0u8; 256];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
}

fuzz_target!(|data: &[u8]| {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = socket_dir().join(format!("n1_{n}.4294967292"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the fake stepd socket");
    let reply = data.to_vec();
    let server = thread::spawn(move || peer(listener, reply));

    if let Ok(mut client) = StepdClient::connect(&path, Instant::now() + DEADLINE) {
        let _ = client.protocol_version();
        let _ = client.state();
        let _ = client.step_uid();
        let _ = client.x11_display();
        let _ = client.namespace_fds();
        let _ = client.add_extern_pid(4242);
    }

    // If the client never connected, the peer still sits in accept():
    // a throwaway connection that closes at once lets it return.
    if !server.is_finished() {
        let _ = UnixStream::connect(&path);
    }
    server.join().expect("fake stepd thread panicked");
    let _ = std::fs::remove_file(&path);
});
