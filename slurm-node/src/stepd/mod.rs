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
//!
//! Layers: [`protocol`] (constants, request encoders, value types) and
//! [`decode`] (reply decoders, the scan's per-connection exchange) see no
//! socket. `client` ([`StepdClient`], blocking, one request at a time),
//! `scan` ([`scan_step_uids`], one poll over many sockets), `connect` and
//! `fd_passing` move their bytes and name the socket in every error.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

mod client;
mod connect;
pub mod decode;
mod fd_passing;
pub mod protocol;
mod scan;

pub use client::StepdClient;
pub use protocol::{
    BATCH_STEP_ID, CLIENT_PROTOCOL_VERSION, CodecError, EXTERN_STEP_ID, MAX_NAMESPACE_FDS,
    MAX_XAUTHORITY_LEN, NS_FDS_MIN_VERSION, Namespace, OLDEST_STEPD_VERSION, StepState, X11Display,
};
pub use scan::{SCAN_WINDOW, ScanAnswer, scan_step_uids};

/// A namespace of the job as the client hands it out, its descriptor ours.
pub type NamespaceFd = Namespace<OwnedFd>;

/// The uids a stepd's listener may run as, checked with `SO_PEERCRED`
/// right after every connect and before a byte is sent: root and
/// SlurmdUser. The socket file's owner is a first filter only; the
/// credentials of the process behind it are what is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepdPeers {
    uids: Vec<u32>,
}

impl StepdPeers {
    /// Exactly these uids (root is not added: a test may leave it out).
    pub fn from_uids(uids: impl Into<Vec<u32>>) -> StepdPeers {
        StepdPeers { uids: uids.into() }
    }

    /// Root alone, SlurmdUser's default.
    pub fn root_only() -> StepdPeers {
        StepdPeers { uids: vec![0] }
    }

    pub fn allows(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }

    pub fn uids(&self) -> &[u32] {
        &self.uids
    }
}

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
    #[error("stepd socket {} is served by uid {uid} (pid {pid}), neither root nor SlurmdUser: not asked", .path.display())]
    UntrustedPeer { path: PathBuf, uid: u32, pid: i32 },
    #[error("i/o error on stepd socket {} during {op}: {source}", .path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl StepdError {
    /// The codec's verdict on the bytes from the socket at `path`.
    pub fn from_codec(path: &Path, err: CodecError) -> StepdError {
        let path = path.to_owned();
        match err {
            CodecError::Closed { op } => StepdError::Closed { path, op },
            CodecError::HandshakeRejected { reply } => {
                StepdError::HandshakeRejected { path, reply }
            }
            CodecError::Rejected { op, rc } => StepdError::Rejected { path, op, rc },
            CodecError::Malformed { op, detail } => StepdError::Protocol { path, op, detail },
        }
    }

    /// The socket this error concerns.
    pub fn path(&self) -> &Path {
        match self {
            StepdError::Connect { path, .. }
            | StepdError::Timeout { path, .. }
            | StepdError::Closed { path, .. }
            | StepdError::HandshakeRejected { path, .. }
            | StepdError::Rejected { path, .. }
            | StepdError::Protocol { path, .. }
            | StepdError::UntrustedPeer { path, .. }
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
