//! The message hash carried as the munge credential's payload
//! (slurm-protocol.md §4.6).
//!
//! The hash is what binds a munge credential to one message: without it a
//! credential says who signed *something*, not that they signed this body.

use k12::{CustomRefKt128, ExtendableOutput, Update, XofReader};

/// Hash plugin id of KangarooTwelve, the first byte of the payload.
pub const HASH_PLUGIN_K12: u8 = 2;
/// Hash plugin id of "none" (3-byte payload: id + msg_type).
pub const HASH_PLUGIN_NONE: u8 = 1;

/// Length of a K12 payload: type byte + 32-byte digest.
pub const K12_PAYLOAD_LEN: usize = 33;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the credential carries no message hash")]
    Empty,
    #[error("the credential carries the unkeyed \"none\" hash, which binds nothing")]
    NoneHash,
    #[error("the credential's hash type {0} is not KangarooTwelve (2)")]
    UnsupportedType(u8),
    #[error("a K12 hash payload is 33 bytes, this one is {0}")]
    WrongLength(usize),
    #[error("the credential's hash does not match the message body")]
    Mismatch,
}

/// KangarooTwelve (KT128) of `body`, customised with the message type in
/// network order, 32 bytes out: what Slurm's hash/k12 plugin computes.
pub fn k12_digest(msg_type: u16, body: &[u8]) -> [u8; 32] {
    let customization = msg_type.to_be_bytes();
    let mut hasher = CustomRefKt128::new_customized(&customization);
    hasher.update(body);
    let mut out = [0u8; 32];
    hasher.finalize_xof().read(&mut out);
    out
}

/// The munge payload Slurm expects for a message: 0x02 then the K12 digest.
pub fn body_hash(msg_type: u16, body: &[u8]) -> [u8; K12_PAYLOAD_LEN] {
    let mut out = [0u8; K12_PAYLOAD_LEN];
    out[0] = HASH_PLUGIN_K12;
    out[1..].copy_from_slice(&k12_digest(msg_type, body));
    out
}

/// Checks a received credential payload against the body it came with.
///
/// Only the K12 form is accepted. slurmd answers callerid with a reply
/// message built from scratch, whose hash type is the cluster default
/// (hash/k12), so an honest reply always carries it. The empty and "none"
/// forms that slurmd tolerates on *requests* would let any credential signed
/// by root within its TTL vouch for a forged job id; other hash types
/// (HashPlugin=hash/sha3) are not implemented and so fail closed.
pub fn verify_payload(msg_type: u16, body: &[u8], payload: &[u8]) -> Result<(), PayloadError> {
    let Some((&kind, digest)) = payload.split_first() else {
        return Err(PayloadError::Empty);
    };
    match kind {
        HASH_PLUGIN_K12 => {}
        HASH_PLUGIN_NONE => return Err(PayloadError::NoneHash),
        other => return Err(PayloadError::UnsupportedType(other)),
    }
    if payload.len() != K12_PAYLOAD_LEN {
        return Err(PayloadError::WrongLength(payload.len()));
    }
    let expected = k12_digest(msg_type, body);
    // Not secret data, but a constant-time compare costs nothing here.
    let diff = expected
        .iter()
        .zip(digest)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(PayloadError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn kangarootwelve_spec_vector_empty() {
        // KT128(M = "", C = "", 32) from the KangarooTwelve spec / RFC 9861.
        let mut h = CustomRefKt128::new_customized(&[]);
        h.update(&[]);
        let mut out = [0u8; 32];
        h.finalize_xof().read(&mut out);
        assert_eq!(
            hex(&out),
            "1ac2d450fc3b4205d19da7bfca1b37513c0803577ac7167f06fe2ce1f0ef39e5"
        );
    }

    #[test]
    fn kangarootwelve_spec_vector_customized() {
        // RFC 9861 §5: KT128(M = 0xFF, C = ptn(41), 32), where ptn(n) is the
        // bytes 00 01 .. FA repeated and cut to n.
        let c: Vec<u8> = (0..41u32).map(|j| (j % 251) as u8).collect();
        let mut h = CustomRefKt128::new_customized(&c);
        h.update(&[0xff]);
        let mut out = [0u8; 32];
        h.finalize_xof().read(&mut out);
        assert_eq!(
            hex(&out),
            "d848c5068ced736f4462159b9867fd4c20b808acc3d5bc48e0b06ba0a3762ec4"
        );
    }

    #[test]
    fn matches_the_live_slurmd_reply_hash() {
        // The 22.05 reply body captured live; its credential payload began
        // 02 2d2dcb86 (slurm-protocol.md §4.6). This pins the customization
        // convention (msg_type big-endian) to what slurmd really does.
        let body = [
            0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 3, b'v', b'm', 0,
        ];
        let a = k12_digest(5036, &body);
        assert_eq!(hex(&a[..4]), "2d2dcb86");
        let b = k12_digest(5035, &body);
        assert_ne!(a, b);
        assert_eq!(a, k12_digest(5036, &body));
        let p = body_hash(5036, &body);
        assert_eq!(p[0], 2);
        assert_eq!(&p[1..], &a);
    }

    #[test]
    fn verify_accepts_only_a_matching_k12_payload() {
        let body = b"body";
        let good = body_hash(5036, body);
        assert_eq!(verify_payload(5036, body, &good), Ok(()));
        assert_eq!(
            verify_payload(5035, body, &good),
            Err(PayloadError::Mismatch)
        );
        assert_eq!(
            verify_payload(5036, b"bodx", &good),
            Err(PayloadError::Mismatch)
        );
        assert_eq!(verify_payload(5036, body, &[]), Err(PayloadError::Empty));
        assert_eq!(
            verify_payload(5036, body, &[1, 0x13, 0xac]),
            Err(PayloadError::NoneHash)
        );
        assert_eq!(
            verify_payload(5036, body, &good[..32]),
            Err(PayloadError::WrongLength(32))
        );
        let mut sha3 = good;
        sha3[0] = 4;
        assert_eq!(
            verify_payload(5036, body, &sha3),
            Err(PayloadError::UnsupportedType(4))
        );
    }
}
