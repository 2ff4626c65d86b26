//! The slurmd network RPC, spoken natively (no libslurm): framing and the
//! per-version header, the munge credential through a native munged client,
//! the KangarooTwelve body hash, and the one exchange this crate needs,
//! `REQUEST_NETWORK_CALLERID` (slurm-protocol.md §4).
//!
//! Layers, bottom up: [`pack`] (primitives), [`header`] (frames),
//! [`hash`] and [`munge`] (authentication), [`callerid`] (the exchange over
//! TCP with a deadline).

use std::fmt;
use std::io;
use std::net::SocketAddr;

pub mod callerid;
pub mod hash;
pub mod header;
pub mod munge;
pub mod pack;

pub use callerid::{
    CallerIdAnswer, CallerIdReply, CallerIdRequest, CallerIdResponse, query_callerid,
    query_callerid_detailed,
};
pub use header::{FrameError, Message, SUPPORTED_VERSIONS, decode_message, encode_request};
pub use munge::{Decoded, MungeContext, MungeError};

/// Which part of an exchange an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connecting,
    Sending,
    Receiving,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connecting => "connecting",
            Stage::Sending => "sending the request",
            Stage::Receiving => "receiving the reply",
        })
    }
}

/// How a slurmd said it does not speak the version we used. Which one a
/// given release uses was read from Slurm's sources (see `callerid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `RESPONSE_SLURM_RC` with `SLURM_PROTOCOL_VERSION_ERROR` (1005).
    VersionErrorRc,
    /// An unauthenticated `RESPONSE_SLURM_RC` with
    /// `SLURM_PROTOCOL_AUTHENTICATION_ERROR` (1007): slurmd 25.05+ answers
    /// every header it cannot read, an unknown version included, this way.
    HeaderRejected,
    /// The connection closed before any reply byte: slurmd 22.05 to 24.11
    /// drop a message with an unknown version without answering.
    ClosedWithoutReply,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::VersionErrorRc => "it answered SLURM_PROTOCOL_VERSION_ERROR",
            Rejection::HeaderRejected => {
                "it answered an unauthenticated SLURM_PROTOCOL_AUTHENTICATION_ERROR"
            }
            Rejection::ClosedWithoutReply => "it closed the connection without replying",
        })
    }
}

/// Everything that can go wrong in an RPC exchange; each names the slurmd.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no protocol versions given for the RPC to slurmd at {peer}")]
    NoVersions { peer: SocketAddr },
    #[error("invalid callerid request for slurmd at {peer}: {source}")]
    InvalidRequest {
        peer: SocketAddr,
        #[source]
        source: callerid::CallerIdBodyError,
    },
    #[error("cannot build the request to slurmd at {peer}: {source}")]
    Encode {
        peer: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("munge failed in the exchange with slurmd at {peer}: {source}")]
    Munge {
        peer: SocketAddr,
        #[source]
        source: MungeError,
    },
    #[error("cannot connect to slurmd at {peer}: {source}")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("deadline passed while {stage} with slurmd at {peer}")]
    Timeout { peer: SocketAddr, stage: Stage },
    #[error("i/o error while {stage} with slurmd at {peer}: {source}")]
    Io {
        peer: SocketAddr,
        stage: Stage,
        #[source]
        source: io::Error,
    },
    #[error("slurmd at {peer} closed the connection in the middle of its reply")]
    ClosedMidReply { peer: SocketAddr },
    #[error("slurmd at {peer} announced a {len}-byte reply; the limit is {max}")]
    ReplyTooLarge {
        peer: SocketAddr,
        len: u32,
        max: u32,
    },
    #[error("malformed reply from slurmd at {peer}: {source}")]
    Malformed {
        peer: SocketAddr,
        #[source]
        source: FrameError,
    },
    #[error("malformed body of message type {msg_type} from slurmd at {peer}: {source}")]
    BadBody {
        peer: SocketAddr,
        msg_type: u16,
        #[source]
        source: pack::UnpackError,
    },
    #[error("reply from slurmd at {peer} carries no munge credential")]
    Unauthenticated { peer: SocketAddr },
    #[error(
        "reply from slurmd at {peer} is signed by uid {uid}, which is not root, SlurmUser or SlurmdUser"
    )]
    UntrustedSigner { peer: SocketAddr, uid: u32 },
    #[error("reply from slurmd at {peer} is not bound to its body: {source}")]
    Payload {
        peer: SocketAddr,
        #[source]
        source: hash::PayloadError,
    },
    #[error("slurmd at {peer} answered a version {sent:#06x} request with version {got:#06x}")]
    VersionMismatch {
        peer: SocketAddr,
        sent: u16,
        got: u16,
    },
    #[error("slurmd at {peer} sent unexpected message type {msg_type}")]
    UnexpectedMessage { peer: SocketAddr, msg_type: u16 },
    #[error("slurmd at {peer} answered with Slurm error code {rc}")]
    SlurmRc { peer: SocketAddr, rc: u32 },
    #[error("slurmd at {peer} refused protocol version {version:#06x}: {how}")]
    VersionRejected {
        peer: SocketAddr,
        version: u16,
        how: Rejection,
    },
    #[error("slurmd at {peer} accepted none of the protocol versions tried {tried:x?}")]
    VersionsExhausted {
        peer: SocketAddr,
        tried: Vec<u16>,
        #[source]
        last: Box<RpcError>,
    },
}

impl RpcError {
    /// The slurmd this error concerns.
    pub fn peer(&self) -> SocketAddr {
        match self {
            RpcError::NoVersions { peer }
            | RpcError::InvalidRequest { peer, .. }
            | RpcError::Encode { peer, .. }
            | RpcError::Munge { peer, .. }
            | RpcError::Connect { peer, .. }
            | RpcError::Timeout { peer, .. }
            | RpcError::Io { peer, .. }
            | RpcError::ClosedMidReply { peer }
            | RpcError::ReplyTooLarge { peer, .. }
            | RpcError::Malformed { peer, .. }
            | RpcError::BadBody { peer, .. }
            | RpcError::Unauthenticated { peer }
            | RpcError::UntrustedSigner { peer, .. }
            | RpcError::Payload { peer, .. }
            | RpcError::VersionMismatch { peer, .. }
            | RpcError::UnexpectedMessage { peer, .. }
            | RpcError::SlurmRc { peer, .. }
            | RpcError::VersionRejected { peer, .. }
            | RpcError::VersionsExhausted { peer, .. } => *peer,
        }
    }

    /// Whether another protocol version might succeed.
    pub fn is_version_rejection(&self) -> bool {
        matches!(self, RpcError::VersionRejected { .. })
    }
}
