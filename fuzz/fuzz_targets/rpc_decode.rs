//! Every decoder on the slurmd RPC path, fed arbitrary bytes: the frame and
//! header decoders, the callerid bodies in each protocol version's layout,
//! the rc body, the K12 payload check, and `Unpacker` driven by a little
//! program taken from the input's first bytes.
//!
//! None of them may panic; `Unpacker` must also keep its documented
//! promises (a failed call leaves the position where it was, and every
//! successful one advances by exactly what it returned).

#![no_main]

use libfuzzer_sys::fuzz_target;
use slurm_node::rpc::callerid::{
    RESPONSE_NETWORK_CALLERID, decode_callerid_request, decode_callerid_response, decode_rc,
};
use slurm_node::rpc::hash::verify_payload;
use slurm_node::rpc::header::{NO_VAL16, SUPPORTED_VERSIONS, decode_framed, decode_message};
use slurm_node::rpc::pack::Unpacker;

fuzz_target!(|data: &[u8]| {
    frames(data);
    bodies(data);
    unpacker_program(data);
});

fn frames(data: &[u8]) {
    for decoded in [decode_framed(data), decode_message(data)] {
        let Ok(msg) = decoded else { continue };
        assert_eq!(msg.body.len(), msg.header.body_length as usize);
        // What the client does with a reply it could frame.
        let _ = decode_callerid_response(msg.header.version, &msg.body);
        let _ = decode_rc(&msg.body);
        if let Some(cred) = &msg.credential {
            let _ = verify_payload(msg.header.msg_type, &msg.body, cred.as_bytes());
        }
    }
}

fn bodies(data: &[u8]) {
    // Both layouts, each version on either side of the 25.11 switch, and
    // the NO_VAL16 of header-rejection replies.
    for version in SUPPORTED_VERSIONS.into_iter().chain([0, NO_VAL16]) {
        if let Ok(resp) = decode_callerid_response(version, data) {
            assert_eq!(resp.sluid.is_some(), resp.step_id.is_some());
            assert_eq!(resp.sluid.is_some(), resp.step_het_comp.is_some());
        }
    }
    let _ = decode_callerid_request(data);
    let _ = decode_rc(data);
    // First byte (or none) as the hash plugin type, the rest as the digest.
    let split = data.len().min(33);
    let _ = verify_payload(RESPONSE_NETWORK_CALLERID, &data[split..], &data[..split]);
}

/// Byte 0: number of operations (mod 32); then one byte per operation (the
/// low nibble picks the call, the high one is an argument for `take`); the
/// rest is the buffer the operations run over.
fn unpacker_program(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 32).min(rest.len());
    let (ops, buf) = rest.split_at(count);
    let mut u = Unpacker::new(buf);
    for &op in ops {
        let before = u.position();
        assert_eq!(before + u.remaining(), buf.len());
        // `Some(n)`: the call succeeded and must have consumed n bytes.
        let consumed: Option<usize> = match op & 0x0f {
            0 => u.unpack8().ok().map(|_| 1),
            1 => u.unpack16().ok().map(|_| 2),
            2 => u.unpack32().ok().map(|_| 4),
            3 => u.unpack64().ok().map(|_| 8),
            4 => u.unpackbool().ok().map(|_| 1),
            5 => u.unpackmem().ok().map(|m| 4 + m.len()),
            6 => u.unpackstr().ok().map(|s| match s {
                Some(s) => {
                    assert!(!s.contains('\0'));
                    4 + s.len() + 1
                }
                None => 4,
            }),
            7 => u
                .unpackstring()
                .ok()
                .map(|s| 4 + s.map_or(0, |s| s.len() + 1)),
            8 => {
                let n = usize::from(op >> 4);
                u.take(n).ok().map(|t| {
                    assert_eq!(t.len(), n);
                    n
                })
            }
            9 => {
                // Huge requests must fail cleanly, not overflow.
                assert!(u.take(usize::MAX - usize::from(op >> 4)).is_err());
                None
            }
            10 => {
                assert_eq!(u.finish().is_ok(), u.remaining() == 0);
                Some(0)
            }
            _ => {
                assert_eq!(u.rest().len(), u.remaining());
                Some(0)
            }
        };
        let expected = before + consumed.unwrap_or(0);
        assert_eq!(u.position(), expected, "op {op:#04x} at {before}");
    }
}
