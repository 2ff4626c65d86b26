//! `REQUEST_NETWORK_CALLERID`: ask the slurmd on the ssh client's host which
//! job owns the client end of our connection (slurm-protocol.md §4.2-4.4).
//!
//! What the slurmds actually do, read from Slurm's sources (tags 22.05.8 to
//! 26.05.3), and how this client copes:
//!
//! * The callerid reply is built by copying the request message, not by the
//!   generic reply path, so it is munge-signed (uid restricted to the
//!   requester) with a K12 body hash in every release, even those that send
//!   other replies unauthenticated. We therefore always demand and check it.
//! * A header version a slurmd does not accept is never answered with
//!   `SLURM_PROTOCOL_VERSION_ERROR` on this path: 22.05 to 24.11 close the
//!   connection without a word, and 25.05+ send an unauthenticated
//!   `RESPONSE_SLURM_RC` 1007 with header version `NO_VAL16`. Both, and 1005
//!   should some release send it, make us retry with the next version.

use std::net::SocketAddr;
use std::time::Instant;

use super::RpcError;
use super::Stage;
use super::hash::body_hash;
use super::header::{decode_message, encode_request};
use super::munge::MungeContext;

mod body;
mod reply;
#[cfg(test)]
mod tests;
mod transport;

pub use body::{
    CallerIdBodyError, CallerIdRequest, CallerIdResponse, NO_VAL, REQUEST_NETWORK_CALLERID,
    RESPONSE_NETWORK_CALLERID, RESPONSE_SLURM_RC, SLURM_PROTOCOL_AUTHENTICATION_ERROR,
    SLURM_PROTOCOL_VERSION_ERROR, decode_callerid_request, decode_callerid_response, decode_rc,
    encode_callerid_request, encode_callerid_response, encode_rc,
};
pub use reply::{CallerIdAnswer, CallerIdReply, CredentialCheck};

/// Asks the slurmd at `slurmd` which job owns `req.client`.
///
/// `versions` are tried newest first, each on a new connection, moving on
/// only when the slurmd refuses the version. The reply must be munge-signed
/// by one of `trusted_uids` (root, SlurmUser and SlurmdUser) over a K12 hash of its
/// body. Nothing blocks past `deadline`.
pub fn query_callerid(
    slurmd: SocketAddr,
    req: &CallerIdRequest,
    versions: &[u16],
    trusted_uids: &[u32],
    munge: &MungeContext,
    deadline: Instant,
) -> Result<CallerIdAnswer, RpcError> {
    query_callerid_detailed(slurmd, req, versions, trusted_uids, munge, deadline)
        .map(|reply| reply.answer)
}

/// [`query_callerid`], also returning the version used, the signer and the
/// raw response (for logging).
pub fn query_callerid_detailed(
    slurmd: SocketAddr,
    req: &CallerIdRequest,
    versions: &[u16],
    trusted_uids: &[u32],
    munge: &MungeContext,
    deadline: Instant,
) -> Result<CallerIdReply, RpcError> {
    let peer = slurmd;
    let body =
        encode_callerid_request(req).map_err(|source| RpcError::InvalidRequest { peer, source })?;
    let mut tried = Vec::new();
    let mut last = None;
    for &version in versions {
        if last.is_some() && Instant::now() >= deadline {
            break;
        }
        tried.push(version);
        match attempt(peer, version, &body, trusted_uids, munge, deadline) {
            Err(e) if e.is_version_rejection() => last = Some(e),
            other => return other,
        }
    }
    match last {
        None => Err(RpcError::NoVersions { peer }),
        Some(e) if tried.len() == 1 => Err(e),
        Some(e) => Err(RpcError::VersionsExhausted {
            peer,
            tried,
            last: Box::new(e),
        }),
    }
}

/// One version, one connection: sign, frame, send, and read what came back.
fn attempt(
    peer: SocketAddr,
    version: u16,
    body: &[u8],
    trusted_uids: &[u32],
    munge: &MungeContext,
    deadline: Instant,
) -> Result<CallerIdReply, RpcError> {
    // Checked first so a spent deadline costs no munged round trip either.
    transport::time_left(peer, Stage::Connecting, deadline)?;
    // A fresh credential per attempt: munged refuses to decode one twice.
    let cred = munge
        .encode_by(&body_hash(REQUEST_NETWORK_CALLERID, body), None, deadline)
        .map_err(|source| RpcError::Munge { peer, source })?;
    let frame = encode_request(version, REQUEST_NETWORK_CALLERID, body, &cred)
        .map_err(|source| RpcError::Encode { peer, source })?;
    let Some(buf) = transport::round_trip(peer, &frame, deadline)? else {
        return Err(reply::closed_without_reply(peer, version));
    };
    let msg = decode_message(&buf).map_err(|source| RpcError::Malformed { peer, source })?;
    reply::interpret(peer, version, &msg, trusted_uids, munge, deadline)
}
