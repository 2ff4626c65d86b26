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

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::hash::{body_hash, verify_payload};
use super::header::{
    MAX_FRAME_LEN, Message, SLURM_25_11_PROTOCOL_VERSION, decode_message, encode_request,
};
use super::munge::MungeContext;
use super::pack::{PackError, Packer, UnpackError, Unpacker};
use super::{Rejection, RpcError, Stage};

pub const REQUEST_NETWORK_CALLERID: u16 = 5035;
pub const RESPONSE_NETWORK_CALLERID: u16 = 5036;
pub const RESPONSE_SLURM_RC: u16 = 8001;

/// `NO_VAL`: the job id slurmd sends when no job owns the connection.
pub const NO_VAL: u32 = 0xffff_fffe;

/// slurm_errno.h: `SLURM_UNEXPECTED_MSG_ERROR` = 1000 and the general
/// message errors follow in order, making this 1005 in every release from
/// 22.05 to 26.05.
pub const SLURM_PROTOCOL_VERSION_ERROR: u32 = 1005;
/// Two further down the same list.
pub const SLURM_PROTOCOL_AUTHENTICATION_ERROR: u32 = 1007;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// The connection to ask about, as sshd sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerIdRequest {
    /// The ssh client's end (the request's `ip_src`/`port_src`).
    pub client: SocketAddr,
    /// sshd's end (`ip_dst`/`port_dst`).
    pub server: SocketAddr,
}

/// What the client's slurmd said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerIdAnswer {
    Job(u32),
    /// No job owns the client's socket (slurmd sent job id `NO_VAL`).
    NotFound,
}

/// A `RESPONSE_NETWORK_CALLERID` body, either layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdResponse {
    /// 25.11+ only, like `step_id` and `step_het_comp`.
    pub sluid: Option<u64>,
    pub job_id: u32,
    pub step_id: Option<u32>,
    pub step_het_comp: Option<u32>,
    /// slurmd never sets it (always 0); kept for completeness.
    pub return_code: u32,
    /// The answering slurmd's NodeName.
    pub node_name: Option<String>,
}

/// The full outcome of a successful query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdReply {
    pub answer: CallerIdAnswer,
    /// The protocol version the slurmd accepted.
    pub version: u16,
    /// Who signed the reply (one of the trusted uids).
    pub signer_uid: u32,
    pub response: CallerIdResponse,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerIdBodyError {
    #[error("client {client} and server {server} are of different address families")]
    MixedFamilies {
        client: SocketAddr,
        server: SocketAddr,
    },
    #[error("address field of {0} bytes, expected 16")]
    AddressLength(usize),
    #[error("unknown address family {0}")]
    Family(u32),
    #[error("port {0} out of range")]
    Port(u32),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// Plain IPv4 for `::ffff:a.b.c.d`, since the source node lists the ssh
/// client's socket in its IPv4 table (the C module's mapped-address bug).
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn addr_field(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// Packs the 52-byte request body (the same in every version).
pub fn encode_callerid_request(req: &CallerIdRequest) -> Result<Vec<u8>, CallerIdBodyError> {
    let src = unmap(req.client.ip());
    let dst = unmap(req.server.ip());
    let af = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
        _ => {
            return Err(CallerIdBodyError::MixedFamilies {
                client: req.client,
                server: req.server,
            });
        }
    };
    let mut p = Packer::with_capacity(52);
    p.packmem(&addr_field(src))?;
    p.packmem(&addr_field(dst))?;
    p.pack32(req.client.port().into());
    p.pack32(req.server.port().into());
    p.pack32(af);
    Ok(p.into_bytes())
}

/// Reads a request body (for test doubles of slurmd).
pub fn decode_callerid_request(body: &[u8]) -> Result<CallerIdRequest, CallerIdBodyError> {
    let mut u = Unpacker::new(body);
    let src = u.unpackmem()?;
    let dst = u.unpackmem()?;
    let port_src = u.unpack32()?;
    let port_dst = u.unpack32()?;
    let af = u.unpack32()?;
    u.finish()?;
    let field = |raw: &[u8]| -> Result<[u8; 16], CallerIdBodyError> {
        raw.try_into()
            .map_err(|_| CallerIdBodyError::AddressLength(raw.len()))
    };
    let (src, dst) = (field(src)?, field(dst)?);
    let ip = |raw: [u8; 16]| -> Result<IpAddr, CallerIdBodyError> {
        match af {
            AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
            other => Err(CallerIdBodyError::Family(other)),
        }
    };
    let port = |p: u32| u16::try_from(p).map_err(|_| CallerIdBodyError::Port(p));
    Ok(CallerIdRequest {
        client: SocketAddr::new(ip(src)?, port(port_src)?),
        server: SocketAddr::new(ip(dst)?, port(port_dst)?),
    })
}

/// Packs a reply body in the layout of `version`.
pub fn encode_callerid_response(
    version: u16,
    resp: &CallerIdResponse,
) -> Result<Vec<u8>, CallerIdBodyError> {
    let mut p = Packer::new();
    if version >= SLURM_25_11_PROTOCOL_VERSION {
        p.pack64(resp.sluid.unwrap_or(0));
        p.pack32(resp.job_id);
        p.pack32(resp.step_id.unwrap_or(NO_VAL));
        p.pack32(resp.step_het_comp.unwrap_or(NO_VAL));
    } else {
        p.pack32(resp.job_id);
    }
    p.pack32(resp.return_code);
    p.packstr(resp.node_name.as_deref())?;
    Ok(p.into_bytes())
}

/// Reads a reply body in the layout of the reply header's `version`.
pub fn decode_callerid_response(
    version: u16,
    body: &[u8],
) -> Result<CallerIdResponse, UnpackError> {
    let mut u = Unpacker::new(body);
    let (sluid, job_id, step_id, step_het_comp) = if version >= SLURM_25_11_PROTOCOL_VERSION {
        let sluid = u.unpack64()?;
        let job = u.unpack32()?;
        let step = u.unpack32()?;
        let het = u.unpack32()?;
        (Some(sluid), job, Some(step), Some(het))
    } else {
        (None, u.unpack32()?, None, None)
    };
    let return_code = u.unpack32()?;
    let node_name = u.unpackstring()?;
    u.finish()?;
    Ok(CallerIdResponse {
        sluid,
        job_id,
        step_id,
        step_het_comp,
        return_code,
        node_name,
    })
}

pub fn encode_rc(rc: u32) -> Vec<u8> {
    rc.to_be_bytes().to_vec()
}

pub fn decode_rc(body: &[u8]) -> Result<u32, UnpackError> {
    let mut u = Unpacker::new(body);
    let rc = u.unpack32()?;
    u.finish()?;
    Ok(rc)
}

/// Asks the slurmd at `slurmd` which job owns `req.client`.
///
/// `versions` are tried newest first, each on a new connection, moving on
/// only when the slurmd refuses the version. The reply must be munge-signed
/// by one of `trusted_uids` (root and SlurmUser) over a K12 hash of its
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

fn attempt(
    peer: SocketAddr,
    version: u16,
    body: &[u8],
    trusted_uids: &[u32],
    munge: &MungeContext,
    deadline: Instant,
) -> Result<CallerIdReply, RpcError> {
    // Checked first so a spent deadline costs no munged round trip either.
    time_left(peer, Stage::Connecting, deadline)?;
    // A fresh credential per attempt: munged refuses to decode one twice.
    let cred = munge
        .encode(&body_hash(REQUEST_NETWORK_CALLERID, body))
        .map_err(|source| RpcError::Munge { peer, source })?;
    let frame = encode_request(version, REQUEST_NETWORK_CALLERID, body, &cred)
        .map_err(|source| RpcError::Encode { peer, source })?;

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
    write_all(&mut stream, &frame, peer, deadline)?;

    let mut len = [0u8; 4];
    match read_full(&mut stream, &mut len, peer, deadline)? {
        0 => {
            return Err(RpcError::VersionRejected {
                peer,
                version,
                how: Rejection::ClosedWithoutReply,
            });
        }
        4 => {}
        _ => return Err(RpcError::ClosedMidReply { peer }),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(RpcError::ReplyTooLarge {
            peer,
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut buf = vec![0u8; len as usize];
    if read_full(&mut stream, &mut buf, peer, deadline)? != buf.len() {
        return Err(RpcError::ClosedMidReply { peer });
    }
    let msg = decode_message(&buf).map_err(|source| RpcError::Malformed { peer, source })?;
    interpret(peer, version, &msg, trusted_uids, munge)
}

fn interpret(
    peer: SocketAddr,
    version: u16,
    msg: &Message,
    trusted_uids: &[u32],
    munge: &MungeContext,
) -> Result<CallerIdReply, RpcError> {
    let msg_type = msg.header.msg_type;
    match msg_type {
        RESPONSE_SLURM_RC => {
            // Only ever turned into an error, so an unauthenticated RC can at
            // worst make us give up or retry: it is read without a credential.
            let rc = decode_rc(&msg.body).map_err(|source| RpcError::BadBody {
                peer,
                msg_type,
                source,
            })?;
            if rc == SLURM_PROTOCOL_VERSION_ERROR {
                Err(RpcError::VersionRejected {
                    peer,
                    version,
                    how: Rejection::VersionErrorRc,
                })
            } else if rc == SLURM_PROTOCOL_AUTHENTICATION_ERROR && !msg.header.has_auth() {
                Err(RpcError::VersionRejected {
                    peer,
                    version,
                    how: Rejection::HeaderRejected,
                })
            } else {
                Err(RpcError::SlurmRc { peer, rc })
            }
        }
        RESPONSE_NETWORK_CALLERID => {
            // slurmd answers in the request's version; anything else means
            // we would parse the body with the wrong layout.
            if msg.header.version != version {
                return Err(RpcError::VersionMismatch {
                    peer,
                    sent: version,
                    got: msg.header.version,
                });
            }
            let signer_uid = authenticate(peer, msg, trusted_uids, munge)?;
            let response = decode_callerid_response(version, &msg.body).map_err(|source| {
                RpcError::BadBody {
                    peer,
                    msg_type,
                    source,
                }
            })?;
            // Job id 0 is never a real job; treat it like NO_VAL rather than
            // hand a caller a job that cannot exist.
            let answer = match response.job_id {
                NO_VAL | 0 => CallerIdAnswer::NotFound,
                _ if response.return_code != 0 => {
                    return Err(RpcError::SlurmRc {
                        peer,
                        rc: response.return_code,
                    });
                }
                job => CallerIdAnswer::Job(job),
            };
            Ok(CallerIdReply {
                answer,
                version,
                signer_uid,
                response,
            })
        }
        other => Err(RpcError::UnexpectedMessage {
            peer,
            msg_type: other,
        }),
    }
}

/// Checks the reply's credential: valid, from a trusted uid, and carrying
/// the K12 hash of this very body. Returns the signer's uid.
fn authenticate(
    peer: SocketAddr,
    msg: &Message,
    trusted_uids: &[u32],
    munge: &MungeContext,
) -> Result<u32, RpcError> {
    let cred = match (&msg.auth_plugin, &msg.credential) {
        (Some(_), Some(cred)) => cred,
        _ => return Err(RpcError::Unauthenticated { peer }),
    };
    let decoded = munge
        .decode(cred)
        .map_err(|source| RpcError::Munge { peer, source })?;
    if !trusted_uids.contains(&decoded.uid) {
        return Err(RpcError::UntrustedSigner {
            peer,
            uid: decoded.uid,
        });
    }
    verify_payload(msg.header.msg_type, &msg.body, &decoded.payload)
        .map_err(|source| RpcError::Payload { peer, source })?;
    Ok(decoded.uid)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// The time left, or a timeout error once none is (socket timeouts of zero
/// are invalid, so "no time" must never reach them).
fn time_left(peer: SocketAddr, stage: Stage, deadline: Instant) -> Result<Duration, RpcError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(RpcError::Timeout { peer, stage }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::header::{
        Header, NO_VAL16, OrigAddr, SLURM_22_05_PROTOCOL_VERSION, SLURM_24_11_PROTOCOL_VERSION,
        SLURM_26_05_PROTOCOL_VERSION, SLURM_NO_AUTH_CRED, SUPPORTED_VERSIONS, decode_framed,
        encode_message,
    };
    use crate::rpc::munge::tests::TestMunged;
    use crate::rpc::pack::tests::Rng;
    use std::net::{SocketAddrV4, TcpListener};
    use std::thread::{self, JoinHandle};

    fn reference_request() -> CallerIdRequest {
        CallerIdRequest {
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:22".parse().unwrap(),
        }
    }

    #[test]
    fn request_body_matches_the_live_capture() {
        let body = encode_callerid_request(&reference_request()).unwrap();
        let mut expected = Vec::new();
        for _ in 0..2 {
            expected.extend_from_slice(&[0, 0, 0, 0x10, 0x7f, 0, 0, 1]);
            expected.extend_from_slice(&[0; 12]);
        }
        expected.extend_from_slice(&[0, 0, 0x9c, 0x40, 0, 0, 0, 0x16, 0, 0, 0, 2]);
        assert_eq!(body, expected);
        assert_eq!(decode_callerid_request(&body).unwrap(), reference_request());
    }

    #[test]
    fn request_body_v6_and_mapped() {
        let v6 = CallerIdRequest {
            client: "[2001:db8::1]:5000".parse().unwrap(),
            server: "[2001:db8::2]:22".parse().unwrap(),
        };
        let body = encode_callerid_request(&v6).unwrap();
        assert_eq!(body.len(), 52);
        assert_eq!(body[48..], [0, 0, 0, 10]);
        assert_eq!(decode_callerid_request(&body).unwrap(), v6);

        let mapped = CallerIdRequest {
            client: "[::ffff:127.0.0.1]:40000".parse().unwrap(),
            server: "[::ffff:127.0.0.1]:22".parse().unwrap(),
        };
        assert_eq!(
            encode_callerid_request(&mapped).unwrap(),
            encode_callerid_request(&reference_request()).unwrap()
        );

        let mixed = CallerIdRequest {
            client: "10.0.0.1:1".parse().unwrap(),
            server: "[2001:db8::2]:22".parse().unwrap(),
        };
        assert!(matches!(
            encode_callerid_request(&mixed),
            Err(CallerIdBodyError::MixedFamilies { .. })
        ));

        let mut bad = body.clone();
        bad[51] = 7;
        assert_eq!(
            decode_callerid_request(&bad),
            Err(CallerIdBodyError::Family(7))
        );
    }

    #[test]
    fn live_reply_body_is_not_found_on_node_vm() {
        let body = [
            0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 3, 0x76, 0x6d, 0,
        ];
        for version in [0x2600, 0x2700, 0x2800, 0x2900, 0x2A00, 0x2B00] {
            let r = decode_callerid_response(version, &body).unwrap();
            assert_eq!(r.job_id, NO_VAL);
            assert_eq!(r.return_code, 0);
            assert_eq!(r.node_name.as_deref(), Some("vm"));
            assert_eq!(r.sluid, None);
            assert_eq!(encode_callerid_response(version, &r).unwrap(), body);
        }
        // The same bytes are too short for the 25.11 layout.
        assert!(decode_callerid_response(0x2C00, &body).is_err());
    }

    #[test]
    fn reply_body_from_25_11_on_carries_the_step_id() {
        let r = CallerIdResponse {
            sluid: Some(0x0102_0304_0506_0708),
            job_id: 42,
            step_id: Some(0xffff_fffc),
            step_het_comp: Some(NO_VAL),
            return_code: 0,
            node_name: Some("n1".into()),
        };
        for version in [0x2C00, 0x2D00] {
            let body = encode_callerid_response(version, &r).unwrap();
            assert_eq!(
                body,
                [
                    1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 42, 0xff, 0xff, 0xff, 0xfc, 0xff, 0xff, 0xff,
                    0xfe, 0, 0, 0, 0, 0, 0, 0, 3, b'n', b'1', 0
                ]
            );
            assert_eq!(decode_callerid_response(version, &body).unwrap(), r);
        }
        assert_eq!(decode_rc(&encode_rc(1005)).unwrap(), 1005);
        assert!(decode_rc(&[0, 0, 0]).is_err());
        assert!(decode_rc(&[0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut rng = Rng::new(7);
        for _ in 0..20_000 {
            let len = rng.below(80);
            let body = rng.bytes(len);
            let _ = decode_callerid_request(&body);
            let _ = decode_callerid_response(0x2B00, &body);
            let _ = decode_callerid_response(0x2D00, &body);
            let _ = decode_rc(&body);
        }
    }

    // ---- a fake slurmd on 127.0.0.1 ----

    #[derive(Clone)]
    enum Act {
        /// Answer properly with this job id (NO_VAL for "not found").
        Answer(u32),
        /// Read the request, then say nothing until the client hangs up.
        Hang,
        /// Trickle a reply out a byte at a time, slower than any deadline.
        Drip,
        /// Read the request, then close (22.05-24.11 on a bad version).
        Close,
        /// Send half a length prefix, then close.
        CloseMidReply,
        /// A well-framed reply full of junk.
        Garbage,
        /// RESPONSE_SLURM_RC with this code, signed.
        Rc(u32),
        /// What 25.05+ send for a header they cannot read.
        HeaderRejected,
        /// A correct reply whose credential hashes another body.
        WrongHash,
        /// A correct reply without an auth section.
        NoAuth,
        /// A reply in another version than the request's.
        OtherVersion,
    }

    struct Fake {
        addr: SocketAddr,
        handle: JoinHandle<Vec<u16>>,
    }

    impl Fake {
        /// Serves one connection per act, in order; returns the versions seen.
        fn start(munge: MungeContext, acts: Vec<Act>) -> Fake {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let handle = thread::spawn(move || {
                let mut seen = Vec::new();
                for act in acts {
                    let (mut s, _) = listener.accept().unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    seen.push(serve(&mut s, &munge, act));
                }
                seen
            });
            Fake { addr, handle }
        }

        fn seen(self) -> Vec<u16> {
            self.handle.join().unwrap()
        }
    }

    fn read_request(s: &mut TcpStream, munge: &MungeContext) -> (Message, u32) {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let msg = decode_message(&buf).unwrap();
        assert_eq!(msg.header.msg_type, REQUEST_NETWORK_CALLERID);
        assert_eq!(msg.header.flags, 0);
        assert_eq!(msg.header.orig_addr, OrigAddr::Unspecified);
        assert_eq!(msg.auth_plugin, Some(101));
        let d = munge.decode(msg.credential.as_deref().unwrap()).unwrap();
        assert_eq!(d.payload.len(), 33);
        verify_payload(REQUEST_NETWORK_CALLERID, &msg.body, &d.payload).unwrap();
        assert_eq!(
            decode_callerid_request(&msg.body).unwrap(),
            reference_request()
        );
        (msg, d.uid)
    }

    fn signed_reply(
        munge: &MungeContext,
        version: u16,
        msg_type: u16,
        body: &[u8],
        hashed: &[u8],
        uid: u32,
    ) -> Vec<u8> {
        let cred = munge
            .encode_for(&body_hash(msg_type, hashed), Some(uid))
            .unwrap();
        encode_message(&Header::request(version, msg_type), Some(&cred), body).unwrap()
    }

    fn serve(s: &mut TcpStream, munge: &MungeContext, act: Act) -> u16 {
        let (req, uid) = read_request(s, munge);
        let v = req.header.version;
        let answer = |job: u32| {
            let resp = CallerIdResponse {
                sluid: (v >= 0x2C00).then_some(99),
                job_id: job,
                step_id: (v >= 0x2C00).then_some(0xffff_fffc),
                step_het_comp: (v >= 0x2C00).then_some(NO_VAL),
                return_code: 0,
                node_name: Some("vm".into()),
            };
            encode_callerid_response(v, &resp).unwrap()
        };
        let reply = match act {
            Act::Answer(job) => {
                let body = answer(job);
                signed_reply(munge, v, RESPONSE_NETWORK_CALLERID, &body, &body, uid)
            }
            Act::Hang => {
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                return v;
            }
            Act::Close => return v,
            Act::Drip => {
                for b in [0u8, 0, 0, 40].into_iter().chain([0; 40]) {
                    if s.write_all(&[b]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                return v;
            }
            Act::CloseMidReply => vec![0, 0],
            Act::Garbage => {
                let mut g = vec![0, 0, 0, 40];
                g.extend(Rng::new(9).bytes(40));
                g
            }
            Act::Rc(rc) => signed_reply(
                munge,
                v,
                RESPONSE_SLURM_RC,
                &encode_rc(rc),
                &encode_rc(rc),
                uid,
            ),
            Act::HeaderRejected => {
                let mut h = Header::request(NO_VAL16, RESPONSE_SLURM_RC);
                h.flags = SLURM_NO_AUTH_CRED;
                h.orig_addr = OrigAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000));
                encode_message(&h, None, &encode_rc(SLURM_PROTOCOL_AUTHENTICATION_ERROR)).unwrap()
            }
            Act::WrongHash => {
                let body = answer(7);
                signed_reply(munge, v, RESPONSE_NETWORK_CALLERID, &body, &answer(8), uid)
            }
            Act::NoAuth => {
                let mut h = Header::request(v, RESPONSE_NETWORK_CALLERID);
                h.flags = SLURM_NO_AUTH_CRED;
                encode_message(&h, None, &answer(7)).unwrap()
            }
            Act::OtherVersion => {
                let other = if v == 0x2600 { 0x2700 } else { 0x2600 };
                let body = answer(7);
                signed_reply(munge, other, RESPONSE_NETWORK_CALLERID, &body, &body, uid)
            }
        };
        // Sanity: what we send is a well-formed frame, garbage aside.
        let _ = decode_framed(&reply);
        let _ = s.write_all(&reply);
        v
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn root() -> Vec<u32> {
        vec![nix::unistd::getuid().as_raw()]
    }

    fn run(
        acts: Vec<Act>,
        versions: &[u16],
    ) -> Option<(Result<CallerIdReply, RpcError>, Vec<u16>)> {
        run_with(acts, versions, &root(), Duration::from_secs(10))
    }

    fn run_with(
        acts: Vec<Act>,
        versions: &[u16],
        trusted: &[u32],
        budget: Duration,
    ) -> Option<(Result<CallerIdReply, RpcError>, Vec<u16>)> {
        let munged = TestMunged::start()?;
        let fake = Fake::start(munged.context(), acts);
        // Counted from here so a slow munged start does not eat the budget.
        let deadline = Instant::now() + budget;
        let r = query_callerid_detailed(
            fake.addr,
            &reference_request(),
            versions,
            trusted,
            &munged.context(),
            deadline,
        );
        Some((r, fake.seen()))
    }

    #[test]
    fn finds_the_job_in_every_version() {
        let acts = vec![Act::Answer(1234); SUPPORTED_VERSIONS.len()];
        let Some(munged) = TestMunged::start() else {
            return;
        };
        let fake = Fake::start(munged.context(), acts);
        for &v in &SUPPORTED_VERSIONS {
            let r = query_callerid_detailed(
                fake.addr,
                &reference_request(),
                &[v],
                &root(),
                &munged.context(),
                soon(),
            )
            .unwrap();
            assert_eq!(r.answer, CallerIdAnswer::Job(1234));
            assert_eq!(r.version, v);
            assert_eq!(r.signer_uid, root()[0]);
            assert_eq!(r.response.node_name.as_deref(), Some("vm"));
            assert_eq!(r.response.sluid.is_some(), v >= 0x2C00);
        }
        assert_eq!(fake.seen(), SUPPORTED_VERSIONS);
    }

    #[test]
    fn not_found_and_the_short_entry_point() {
        let Some(munged) = TestMunged::start() else {
            return;
        };
        let fake = Fake::start(munged.context(), vec![Act::Answer(NO_VAL)]);
        let a = query_callerid(
            fake.addr,
            &reference_request(),
            &[SLURM_22_05_PROTOCOL_VERSION],
            &root(),
            &munged.context(),
            soon(),
        )
        .unwrap();
        assert_eq!(a, CallerIdAnswer::NotFound);
        fake.seen();
    }

    #[test]
    fn retries_down_the_versions_on_each_kind_of_refusal() {
        let acts = vec![
            Act::Rc(SLURM_PROTOCOL_VERSION_ERROR),
            Act::HeaderRejected,
            Act::Close,
            Act::Answer(77),
        ];
        let Some((r, seen)) = run(acts, &[0x2D00, 0x2C00, 0x2B00, 0x2A00, 0x2900]) else {
            return;
        };
        let r = r.unwrap();
        assert_eq!(r.answer, CallerIdAnswer::Job(77));
        assert_eq!(r.version, 0x2A00);
        assert_eq!(seen, [0x2D00, 0x2C00, 0x2B00, 0x2A00]);
    }

    #[test]
    fn gives_up_when_every_version_is_refused() {
        let Some((r, seen)) = run(vec![Act::Close, Act::Close], &[0x2D00, 0x2C00]) else {
            return;
        };
        let e = r.unwrap_err();
        assert!(
            matches!(&e, RpcError::VersionsExhausted { tried, .. } if tried == &[0x2D00, 0x2C00]),
            "{e}"
        );
        assert_eq!(seen, [0x2D00, 0x2C00]);

        // One version: the refusal itself.
        let Some((r, _)) = run(vec![Act::Close], &[0x2600]) else {
            return;
        };
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                RpcError::VersionRejected {
                    version: 0x2600,
                    how: Rejection::ClosedWithoutReply,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn other_rc_is_an_error_and_not_retried() {
        let Some((r, seen)) = run(vec![Act::Rc(2017)], &[0x2D00, 0x2C00]) else {
            return;
        };
        assert!(
            matches!(r, Err(RpcError::SlurmRc { rc: 2017, .. })),
            "{r:?}"
        );
        assert_eq!(seen, [0x2D00]);
    }

    #[test]
    fn a_hanging_slurmd_costs_only_the_deadline() {
        let budget = Duration::from_millis(500);
        let started = Instant::now();
        let Some((r, _)) = run_with(vec![Act::Hang], &[0x2A00, 0x2900], &root(), budget) else {
            return;
        };
        let took = started.elapsed();
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                RpcError::Timeout {
                    stage: Stage::Receiving,
                    ..
                }
            ),
            "{e}"
        );
        // `took` includes starting munged and joining the fake slurmd.
        assert!(took >= budget, "gave up early, after {took:?}");
        assert!(took < budget + Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn a_trickling_slurmd_costs_only_the_deadline() {
        // Each read makes progress, so only an overall deadline stops this.
        let budget = Duration::from_millis(500);
        let started = Instant::now();
        let Some((r, _)) = run_with(vec![Act::Drip], &[0x2A00], &root(), budget) else {
            return;
        };
        let took = started.elapsed();
        assert!(
            matches!(
                r,
                Err(RpcError::Timeout {
                    stage: Stage::Receiving,
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(took < Duration::from_millis(1900), "took {took:?}");
    }

    #[test]
    fn a_passed_deadline_fails_without_connecting() {
        // An unusable munge socket proves munged is not even asked.
        let munge = MungeContext::with_socket("/nonexistent/munge.socket");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = query_callerid(
            listener.local_addr().unwrap(),
            &reference_request(),
            &[0x2A00],
            &root(),
            &munge,
            Instant::now(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                RpcError::Timeout {
                    stage: Stage::Connecting,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// A listener whose accept queue is full: the kernel drops further
    /// SYNs, so a connect to it hangs as it would to a filtered host.
    fn filtered_peer() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
        use nix::sys::socket::{Backlog, listen};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // listen() again on a listening socket only shrinks its queue.
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(_) => return (listener, queued, addr),
            }
        }
        panic!("the accept queue of {addr} never filled");
    }

    #[test]
    fn a_filtered_host_costs_only_the_deadline() {
        let munged = TestMunged::start().expect("munged");
        let (_listener, _queued, addr) = filtered_peer();
        let budget = Duration::from_millis(500);
        let started = Instant::now();
        let e = query_callerid(
            addr,
            &reference_request(),
            &[0x2A00, 0x2900],
            &root(),
            &munged.context(),
            started + budget,
        )
        .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(
                e,
                RpcError::Timeout {
                    stage: Stage::Connecting,
                    ..
                }
            ),
            "{e}"
        );
        assert!(took >= budget, "gave up early, after {took:?}");
        assert!(took < budget + Duration::from_millis(300), "took {took:?}");
    }

    #[test]
    fn refused_connection_is_a_connect_error() {
        let Some(munged) = TestMunged::start() else {
            return;
        };
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = query_callerid(
            addr,
            &reference_request(),
            &[0x2A00, 0x2900],
            &root(),
            &munged.context(),
            soon(),
        )
        .unwrap_err();
        assert!(
            matches!(e, RpcError::Connect { peer, .. } if peer == addr),
            "{e}"
        );
        assert!(e.to_string().contains(&addr.to_string()));
    }

    #[test]
    fn broken_replies_are_errors() {
        type Check = fn(&RpcError) -> bool;
        let cases: Vec<(Act, Check)> = vec![
            (Act::CloseMidReply, |e| {
                matches!(e, RpcError::ClosedMidReply { .. })
            }),
            (Act::Garbage, |e| matches!(e, RpcError::Malformed { .. })),
            (Act::WrongHash, |e| {
                matches!(
                    e,
                    RpcError::Payload {
                        source: crate::rpc::hash::PayloadError::Mismatch,
                        ..
                    }
                )
            }),
            (Act::NoAuth, |e| {
                matches!(e, RpcError::Unauthenticated { .. })
            }),
            (Act::OtherVersion, |e| {
                matches!(e, RpcError::VersionMismatch { .. })
            }),
        ];
        for (act, check) in cases {
            let Some((r, seen)) = run(vec![act], &[SLURM_24_11_PROTOCOL_VERSION, 0x2900]) else {
                return;
            };
            let e = r.unwrap_err();
            assert!(check(&e), "{e}");
            assert_eq!(seen, [SLURM_24_11_PROTOCOL_VERSION], "no retry after {e}");
        }
    }

    #[test]
    fn a_reply_from_an_untrusted_uid_is_refused() {
        // We run as root here and cannot sign as anyone else, so make root
        // the untrusted one instead.
        let Some((r, _)) = run_with(
            vec![Act::Answer(5)],
            &[SLURM_26_05_PROTOCOL_VERSION],
            &[12345],
            Duration::from_secs(10),
        ) else {
            return;
        };
        assert!(
            matches!(r, Err(RpcError::UntrustedSigner { uid, .. }) if uid == root()[0]),
            "{r:?}"
        );
    }

    #[test]
    fn no_versions_or_bad_request() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let munge = MungeContext::with_socket("/nonexistent/munge.socket");
        let e = query_callerid(addr, &reference_request(), &[], &[0], &munge, soon()).unwrap_err();
        assert!(matches!(e, RpcError::NoVersions { .. }), "{e}");
        let mixed = CallerIdRequest {
            client: "10.0.0.1:1".parse().unwrap(),
            server: "[2001:db8::2]:22".parse().unwrap(),
        };
        let e = query_callerid(addr, &mixed, &[0x2600], &[0], &munge, soon()).unwrap_err();
        assert!(matches!(e, RpcError::InvalidRequest { .. }), "{e}");
        assert_eq!(e.peer(), addr);
    }
}
