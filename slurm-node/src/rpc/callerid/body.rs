//! The callerid message bodies, packed and unpacked without any socket:
//! the 52-byte request (the same in every version), the response in the
//! layout before and from 25.11, and the rc body of `RESPONSE_SLURM_RC`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::rpc::header::SLURM_25_11_PROTOCOL_VERSION;
use crate::rpc::pack::{PackError, Packer, UnpackError, Unpacker};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::pack::tests::Rng;

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
}
