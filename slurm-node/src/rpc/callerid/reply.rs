//! What a slurmd's reply means, given the decoded frame: the answer, a
//! refusal of the protocol version, or an error naming the slurmd. No
//! socket here; the one outside call, decoding the munge credential, goes
//! through [`CredentialCheck`] so tests can stand in for munged.

use std::net::SocketAddr;
use std::time::Instant;

use crate::rpc::hash::verify_payload;
use crate::rpc::header::{MAX_FRAME_LEN, Message};
use crate::rpc::munge::{Decoded, MungeContext, MungeError};
use crate::rpc::{Rejection, RpcError};

use super::body::{
    CallerIdResponse, NO_VAL, RESPONSE_NETWORK_CALLERID, RESPONSE_SLURM_RC,
    SLURM_PROTOCOL_AUTHENTICATION_ERROR, SLURM_PROTOCOL_VERSION_ERROR, decode_callerid_response,
    decode_rc,
};

/// Opens a munge credential: who made it and the payload it carries.
pub trait CredentialCheck {
    /// Gives up, with an error, at `deadline`.
    fn check(&self, cred: &str, deadline: Instant) -> Result<Decoded, MungeError>;
}

impl CredentialCheck for MungeContext {
    fn check(&self, cred: &str, deadline: Instant) -> Result<Decoded, MungeError> {
        self.decode_by(cred, deadline)
    }
}

/// What the client's slurmd said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerIdAnswer {
    Job(u32),
    /// No job owns the client's socket (slurmd sent job id `NO_VAL`).
    NotFound,
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

/// The length a reply frame's 4-byte prefix announces, bounded before
/// anything is allocated for it.
pub(crate) fn reply_frame_len(peer: SocketAddr, prefix: [u8; 4]) -> Result<usize, RpcError> {
    let len = u32::from_be_bytes(prefix);
    let too_large = RpcError::ReplyTooLarge {
        peer,
        len,
        max: MAX_FRAME_LEN,
    };
    if len > MAX_FRAME_LEN {
        return Err(too_large);
    }
    usize::try_from(len).map_err(|_| too_large)
}

/// A slurmd that closed before sending a byte: 22.05 to 24.11 do that to a
/// header version they do not accept, so it is a refusal worth a retry.
pub(crate) fn closed_without_reply(peer: SocketAddr, version: u16) -> RpcError {
    RpcError::VersionRejected {
        peer,
        version,
        how: Rejection::ClosedWithoutReply,
    }
}

/// What a reply to our `version` request means: the answer, a refusal of
/// the version (worth retrying with another), or an error.
pub(crate) fn interpret(
    peer: SocketAddr,
    version: u16,
    msg: &Message,
    trusted_uids: &[u32],
    munge: &dyn CredentialCheck,
    deadline: Instant,
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
            let signer_uid = authenticate(peer, msg, trusted_uids, munge, deadline)?;
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
    munge: &dyn CredentialCheck,
    deadline: Instant,
) -> Result<u32, RpcError> {
    let cred = match (&msg.auth_plugin, &msg.credential) {
        (Some(_), Some(cred)) => cred,
        _ => return Err(RpcError::Unauthenticated { peer }),
    };
    let decoded = munge
        .check(cred, deadline)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::callerid::body::{encode_callerid_response, encode_rc};
    use crate::rpc::hash::{PayloadError, body_hash};
    use crate::rpc::header::{
        Header, NO_VAL16, SLURM_NO_AUTH_CRED, decode_message, encode_message,
    };

    const V: u16 = 0x2A00;
    const TRUSTED: u32 = 64030;

    fn peer() -> SocketAddr {
        "192.0.2.7:6818".parse().unwrap()
    }

    /// munged's verdict on every credential, whatever it says.
    struct Signed {
        uid: u32,
        payload: Vec<u8>,
    }

    impl CredentialCheck for Signed {
        fn check(&self, _cred: &str, _deadline: Instant) -> Result<Decoded, MungeError> {
            Ok(Decoded {
                uid: self.uid,
                gid: 0,
                payload: self.payload.clone(),
            })
        }
    }

    struct Refused;

    impl CredentialCheck for Refused {
        fn check(&self, _cred: &str, _deadline: Instant) -> Result<Decoded, MungeError> {
            Err(MungeError::CredentialNul)
        }
    }

    fn response(job_id: u32, return_code: u32) -> Vec<u8> {
        encode_callerid_response(
            V,
            &CallerIdResponse {
                sluid: None,
                job_id,
                step_id: None,
                step_het_comp: None,
                return_code,
                node_name: Some("n1".into()),
            },
        )
        .unwrap()
    }

    /// A decoded reply frame; `auth` false sets SLURM_NO_AUTH_CRED.
    fn message(version: u16, msg_type: u16, body: &[u8], auth: bool) -> Message {
        let mut h = Header::request(version, msg_type);
        if !auth {
            h.flags = SLURM_NO_AUTH_CRED;
        }
        let cred = auth.then_some("MUNGE:fake:");
        let frame = encode_message(&h, cred, body).unwrap();
        decode_message(frame.get(4..).unwrap()).unwrap()
    }

    fn signer_of(msg_type: u16, body: &[u8]) -> Signed {
        Signed {
            uid: TRUSTED,
            payload: body_hash(msg_type, body).to_vec(),
        }
    }

    fn run(msg: &Message, check: &dyn CredentialCheck) -> Result<CallerIdReply, RpcError> {
        interpret(
            peer(),
            V,
            msg,
            &[0, TRUSTED],
            check,
            Instant::now() + std::time::Duration::from_secs(5),
        )
    }

    #[test]
    fn answers() {
        let cases = [
            (42, CallerIdAnswer::Job(42)),
            (NO_VAL, CallerIdAnswer::NotFound),
            // Job id 0 never exists.
            (0, CallerIdAnswer::NotFound),
        ];
        for (job, want) in cases {
            let body = response(job, 0);
            let msg = message(V, RESPONSE_NETWORK_CALLERID, &body, true);
            let r = run(&msg, &signer_of(RESPONSE_NETWORK_CALLERID, &body)).unwrap();
            assert_eq!(r.answer, want);
            assert_eq!((r.version, r.signer_uid), (V, TRUSTED));
            assert_eq!(r.response.node_name.as_deref(), Some("n1"));
        }
        // A not-found answer wins over a return code; a job does not.
        let body = response(NO_VAL, 9);
        let msg = message(V, RESPONSE_NETWORK_CALLERID, &body, true);
        let r = run(&msg, &signer_of(RESPONSE_NETWORK_CALLERID, &body)).unwrap();
        assert_eq!(r.answer, CallerIdAnswer::NotFound);
    }

    #[test]
    fn errors() {
        type Check = fn(&RpcError) -> bool;
        let good = response(7, 0);
        let rc = |code| encode_rc(code);
        let cases: Vec<(&str, Message, Box<dyn CredentialCheck>, Check)> = vec![
            (
                "1005 is a version refusal",
                message(
                    V,
                    RESPONSE_SLURM_RC,
                    &rc(SLURM_PROTOCOL_VERSION_ERROR),
                    false,
                ),
                Box::new(Refused),
                |e| {
                    matches!(
                        e,
                        RpcError::VersionRejected {
                            version: V,
                            how: Rejection::VersionErrorRc,
                            ..
                        }
                    )
                },
            ),
            (
                "unauthenticated 1007 is a header refusal",
                message(
                    NO_VAL16,
                    RESPONSE_SLURM_RC,
                    &rc(SLURM_PROTOCOL_AUTHENTICATION_ERROR),
                    false,
                ),
                Box::new(Refused),
                |e| {
                    matches!(
                        e,
                        RpcError::VersionRejected {
                            how: Rejection::HeaderRejected,
                            ..
                        }
                    )
                },
            ),
            (
                "authenticated 1007 is a plain rc",
                message(
                    V,
                    RESPONSE_SLURM_RC,
                    &rc(SLURM_PROTOCOL_AUTHENTICATION_ERROR),
                    true,
                ),
                Box::new(Refused),
                |e| matches!(e, RpcError::SlurmRc { rc: 1007, .. }),
            ),
            (
                "other rc",
                message(V, RESPONSE_SLURM_RC, &rc(2017), false),
                Box::new(Refused),
                |e| matches!(e, RpcError::SlurmRc { rc: 2017, .. }),
            ),
            (
                "short rc body",
                message(V, RESPONSE_SLURM_RC, &[0, 0], false),
                Box::new(Refused),
                |e| {
                    matches!(
                        e,
                        RpcError::BadBody {
                            msg_type: RESPONSE_SLURM_RC,
                            ..
                        }
                    )
                },
            ),
            (
                "reply in another version",
                message(0x2900, RESPONSE_NETWORK_CALLERID, &good, true),
                Box::new(signer_of(RESPONSE_NETWORK_CALLERID, &good)),
                |e| {
                    matches!(
                        e,
                        RpcError::VersionMismatch {
                            sent: V,
                            got: 0x2900,
                            ..
                        }
                    )
                },
            ),
            (
                "no credential",
                message(V, RESPONSE_NETWORK_CALLERID, &good, false),
                Box::new(signer_of(RESPONSE_NETWORK_CALLERID, &good)),
                |e| matches!(e, RpcError::Unauthenticated { .. }),
            ),
            (
                "munged refuses the credential",
                message(V, RESPONSE_NETWORK_CALLERID, &good, true),
                Box::new(Refused),
                |e| matches!(e, RpcError::Munge { .. }),
            ),
            (
                "signed by an untrusted uid",
                message(V, RESPONSE_NETWORK_CALLERID, &good, true),
                Box::new(Signed {
                    uid: 1000,
                    payload: body_hash(RESPONSE_NETWORK_CALLERID, &good).to_vec(),
                }),
                |e| matches!(e, RpcError::UntrustedSigner { uid: 1000, .. }),
            ),
            (
                "credential over another body",
                message(V, RESPONSE_NETWORK_CALLERID, &good, true),
                Box::new(signer_of(RESPONSE_NETWORK_CALLERID, &response(8, 0))),
                |e| {
                    matches!(
                        e,
                        RpcError::Payload {
                            source: PayloadError::Mismatch,
                            ..
                        }
                    )
                },
            ),
            (
                "garbage body, correctly signed",
                message(V, RESPONSE_NETWORK_CALLERID, &[1, 2, 3], true),
                Box::new(signer_of(RESPONSE_NETWORK_CALLERID, &[1, 2, 3])),
                |e| {
                    matches!(
                        e,
                        RpcError::BadBody {
                            msg_type: RESPONSE_NETWORK_CALLERID,
                            ..
                        }
                    )
                },
            ),
            (
                "job with a return code",
                message(V, RESPONSE_NETWORK_CALLERID, &response(7, 3), true),
                Box::new(signer_of(RESPONSE_NETWORK_CALLERID, &response(7, 3))),
                |e| matches!(e, RpcError::SlurmRc { rc: 3, .. }),
            ),
            (
                "unexpected message type",
                message(V, 1001, &good, true),
                Box::new(signer_of(1001, &good)),
                |e| matches!(e, RpcError::UnexpectedMessage { msg_type: 1001, .. }),
            ),
        ];
        for (name, msg, check, want) in cases {
            let e = run(&msg, check.as_ref()).unwrap_err();
            assert!(want(&e), "{name}: {e}");
            assert_eq!(e.peer(), peer(), "{name}");
        }
    }

    #[test]
    fn frame_lengths_are_bounded() {
        assert_eq!(reply_frame_len(peer(), [0, 0, 0, 0]).unwrap(), 0);
        assert_eq!(reply_frame_len(peer(), [0, 0, 1, 2]).unwrap(), 258);
        assert_eq!(
            reply_frame_len(peer(), MAX_FRAME_LEN.to_be_bytes()).unwrap(),
            1 << 20
        );
        for prefix in [(MAX_FRAME_LEN + 1).to_be_bytes(), [0xff; 4]] {
            assert!(matches!(
                reply_frame_len(peer(), prefix),
                Err(RpcError::ReplyTooLarge {
                    max: MAX_FRAME_LEN,
                    ..
                })
            ));
        }
        assert!(closed_without_reply(peer(), V).is_version_rejection());
    }
}
