//! munged's client wire format, sans IO: bytes in, values out.
//!
//! Every message is an 11-byte header (magic `0x00606D4B`, version 4, type,
//! retry count, body length; integers big-endian) and a body whose fields
//! depend on the type. Lengths announced by munged are checked against what
//! arrived and against [`MAX_BODY`] before anything is allocated.

/// Header magic, version and size of munged protocol version 4.
pub const MAGIC: u32 = 0x0060_6D4B;
pub const VERSION: u8 = 4;
pub const HEADER_LEN: usize = 11;

/// Largest body accepted from munged. Our payloads are hashes; munged
/// itself caps payloads at 1 MiB, and a credential is base64 of that.
pub const MAX_BODY: u32 = 4 * 1024 * 1024;

pub const ENC_REQ: u8 = 2;
pub const ENC_RSP: u8 = 3;
pub const DEC_REQ: u8 = 4;
pub const DEC_RSP: u8 = 5;
pub const AUTH_FD_REQ: u8 = 6;

/// "Let munged choose" for cipher, MAC, compression and ttl.
const DEFAULT_CHOICE: u8 = 1;
const DEFAULT_TTL: u32 = 0;
/// No decoder restriction (`MUNGE_UID_ANY` / `MUNGE_GID_ANY`).
pub const ANY_ID: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u8,
    pub retry: u8,
    pub body_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unexpected message type {got} (wanted {want})")]
    Type { got: u8, want: u8 },
    #[error("munged asks for fd-passing authentication, which this client does not do")]
    AuthFdRequested,
    #[error("message body of {0} bytes exceeds the limit")]
    TooLong(u32),
    #[error("message truncated")]
    Truncated,
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("field of {0} bytes is too large for the protocol")]
    FieldTooLarge(usize),
}

fn header_bytes(msg_type: u8, body_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (magic, rest) = h.split_at_mut(4);
    magic.copy_from_slice(&MAGIC.to_be_bytes());
    let (fixed, len) = rest.split_at_mut(3);
    fixed.copy_from_slice(&[VERSION, msg_type, 0]);
    len.copy_from_slice(&body_len.to_be_bytes());
    h
}

/// Parses a header, expecting `want` (an AUTH_FD_REQ is its own error).
pub fn decode_header(bytes: &[u8; HEADER_LEN], want: u8) -> Result<Header, CodecError> {
    let mut r = Reader(bytes);
    let magic = r.u32()?;
    if magic != MAGIC {
        return Err(CodecError::Magic(magic));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(CodecError::Version(version));
    }
    let msg_type = r.u8()?;
    let retry = r.u8()?;
    let body_len = r.u32()?;
    if msg_type == AUTH_FD_REQ {
        return Err(CodecError::AuthFdRequested);
    }
    if msg_type != want {
        return Err(CodecError::Type {
            got: msg_type,
            want,
        });
    }
    if body_len > MAX_BODY {
        return Err(CodecError::TooLong(body_len));
    }
    Ok(Header {
        msg_type,
        retry,
        body_len,
    })
}

fn frame(msg_type: u8, body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let len = u32::try_from(body.len()).map_err(|_| CodecError::FieldTooLarge(body.len()))?;
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    out.extend_from_slice(&header_bytes(msg_type, len));
    out.extend_from_slice(body);
    Ok(out)
}

fn put_data(out: &mut Vec<u8>, data: &[u8]) -> Result<(), CodecError> {
    let len = u32::try_from(data.len()).map_err(|_| CodecError::FieldTooLarge(data.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// A whole ENC_REQ frame: munged's defaults, no realm, and a decoder
/// restricted to `restrict_uid` when given.
pub fn encode_request(payload: &[u8], restrict_uid: Option<u32>) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(payload.len().saturating_add(20));
    body.extend_from_slice(&[DEFAULT_CHOICE, DEFAULT_CHOICE, DEFAULT_CHOICE, 0]);
    body.extend_from_slice(&DEFAULT_TTL.to_be_bytes());
    body.extend_from_slice(&restrict_uid.unwrap_or(ANY_ID).to_be_bytes());
    body.extend_from_slice(&ANY_ID.to_be_bytes());
    put_data(&mut body, payload)?;
    frame(ENC_REQ, &body)
}

/// A whole DEC_REQ frame; the credential travels NUL-terminated.
pub fn decode_request(cred: &str) -> Result<Vec<u8>, CodecError> {
    let mut data = Vec::with_capacity(cred.len().saturating_add(1));
    data.extend_from_slice(cred.as_bytes());
    data.push(0);
    let mut body = Vec::with_capacity(data.len().saturating_add(4));
    put_data(&mut body, &data)?;
    frame(DEC_REQ, &body)
}

/// munged's verdict: `error` is 0 on success, else a `munge_err_t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeReply {
    pub error: u8,
    pub message: String,
    pub credential: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeReply {
    pub error: u8,
    pub message: String,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub payload: Vec<u8>,
}

/// Drops a trailing NUL (munged counts it in its strings) and makes text.
fn text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn decode_encode_reply(body: &[u8]) -> Result<EncodeReply, CodecError> {
    let mut r = Reader(body);
    let error = r.u8()?;
    let elen = r.u8()?;
    let message = text(r.take(usize::from(elen))?);
    let credential = r.data()?.to_vec();
    r.end()?;
    Ok(EncodeReply {
        error,
        message,
        credential,
    })
}

pub fn decode_decode_reply(body: &[u8]) -> Result<DecodeReply, CodecError> {
    let mut r = Reader(body);
    let error = r.u8()?;
    let elen = r.u8()?;
    let message = text(r.take(usize::from(elen))?);
    let _cipher_mac_zip = r.take(3)?;
    let realm_len = r.u8()?;
    let _realm = r.take(usize::from(realm_len))?;
    let _ttl = r.u32()?;
    let addr_len = r.u8()?;
    let _addr = r.take(usize::from(addr_len))?;
    let _encoded_at = r.u32()?;
    let _decoded_at = r.u32()?;
    let cred_uid = r.u32()?;
    let cred_gid = r.u32()?;
    let _auth_uid = r.u32()?;
    let _auth_gid = r.u32()?;
    let payload = r.data()?.to_vec();
    r.end()?;
    Ok(DecodeReply {
        error,
        message,
        cred_uid,
        cred_gid,
        payload,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        let [b] = *self.array::<1>()?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(*self.array::<4>()?))
    }

    fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], CodecError> {
        self.take(N)?.try_into().map_err(|_| CodecError::Truncated)
    }

    /// A u32 length and that many bytes.
    fn data(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
        self.take(len)
    }

    fn end(&self) -> Result<(), CodecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing(self.0.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(bytes: &[u8]) -> [u8; HEADER_LEN] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn headers() {
        let good = header_bytes(ENC_RSP, 7);
        assert_eq!(good, [0, 0x60, 0x6d, 0x4b, 4, 3, 0, 0, 0, 0, 7]);
        let cases: Vec<([u8; HEADER_LEN], u8, Result<Header, CodecError>)> = vec![
            (
                good,
                ENC_RSP,
                Ok(Header {
                    msg_type: ENC_RSP,
                    retry: 0,
                    body_len: 7,
                }),
            ),
            (
                hdr(&[0, 0x60, 0x6d, 0x4c, 4, 3, 0, 0, 0, 0, 7]),
                ENC_RSP,
                Err(CodecError::Magic(0x0060_6d4c)),
            ),
            (
                hdr(&[0, 0x60, 0x6d, 0x4b, 3, 3, 0, 0, 0, 0, 7]),
                ENC_RSP,
                Err(CodecError::Version(3)),
            ),
            (
                good,
                DEC_RSP,
                Err(CodecError::Type {
                    got: ENC_RSP,
                    want: DEC_RSP,
                }),
            ),
            (
                header_bytes(AUTH_FD_REQ, 20),
                DEC_RSP,
                Err(CodecError::AuthFdRequested),
            ),
            (
                header_bytes(DEC_RSP, MAX_BODY + 1),
                DEC_RSP,
                Err(CodecError::TooLong(MAX_BODY + 1)),
            ),
            (
                header_bytes(DEC_RSP, u32::MAX),
                DEC_RSP,
                Err(CodecError::TooLong(u32::MAX)),
            ),
        ];
        for (bytes, want, expect) in cases {
            assert_eq!(decode_header(&bytes, want), expect, "{bytes:?}");
        }
    }

    #[test]
    fn requests() {
        let f = encode_request(b"hi", Some(1000)).unwrap();
        let mut want = header_bytes(ENC_REQ, 22).to_vec();
        want.extend_from_slice(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0xe8]);
        want.extend_from_slice(&[0xff; 4]);
        want.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
        assert_eq!(f, want);

        let any = encode_request(&[], None).unwrap();
        assert_eq!(
            any.get(HEADER_LEN + 8..HEADER_LEN + 12),
            Some(&[0xff; 4][..])
        );

        let d = decode_request("MUNGE:x:").unwrap();
        let mut want = header_bytes(DEC_REQ, 13).to_vec();
        want.extend_from_slice(&[0, 0, 0, 9]);
        want.extend_from_slice(b"MUNGE:x:\0");
        assert_eq!(d, want);
    }

    fn dec_body(error: u8, msg: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut b = vec![error, u8::try_from(msg.len()).unwrap()];
        b.extend_from_slice(msg);
        b.extend_from_slice(&[4, 5, 0]); // cipher, mac, zip
        b.extend_from_slice(&[0]); // realm
        b.extend_from_slice(&300u32.to_be_bytes());
        b.extend_from_slice(&[4, 127, 0, 0, 1]);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(&100u32.to_be_bytes());
        b.extend_from_slice(&ANY_ID.to_be_bytes());
        b.extend_from_slice(&ANY_ID.to_be_bytes());
        b.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn decode_replies() {
        let good = dec_body(0, b"", b"pay");
        assert_eq!(
            decode_decode_reply(&good),
            Ok(DecodeReply {
                error: 0,
                message: String::new(),
                cred_uid: 1000,
                cred_gid: 100,
                payload: b"pay".to_vec(),
            })
        );
        let replayed = decode_decode_reply(&dec_body(17, b"Replayed credential\0", b"")).unwrap();
        assert_eq!(
            (replayed.error, replayed.message.as_str()),
            (17, "Replayed credential")
        );
        for cut in 0..good.len() {
            assert_eq!(
                decode_decode_reply(good.get(..cut).unwrap()),
                Err(CodecError::Truncated),
                "cut at {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode_decode_reply(&long), Err(CodecError::Trailing(1)));
        // A payload length past the end is truncation, not an allocation.
        let mut lie = dec_body(0, b"", b"");
        let at = lie.len() - 4;
        lie.splice(at.., u32::MAX.to_be_bytes());
        assert_eq!(decode_decode_reply(&lie), Err(CodecError::Truncated));
    }

    #[test]
    fn encode_replies() {
        let mut good = vec![0, 0, 0, 0, 0, 9];
        good.extend_from_slice(b"MUNGE:ab:");
        assert_eq!(
            decode_encode_reply(&good),
            Ok(EncodeReply {
                error: 0,
                message: String::new(),
                credential: b"MUNGE:ab:".to_vec(),
            })
        );
        let mut failed = vec![6, 4];
        failed.extend_from_slice(b"bad\0");
        failed.extend_from_slice(&[0, 0, 0, 0]);
        let f = decode_encode_reply(&failed).unwrap();
        assert_eq!((f.error, f.message.as_str()), (6, "bad"));
        for cut in 0..good.len() {
            assert_eq!(
                decode_encode_reply(good.get(..cut).unwrap()),
                Err(CodecError::Truncated)
            );
        }
    }
}
