//! The caller's connection from the sockets the process itself holds.
//!
//! The `/proc/<pid>/net/tcp{,6}` tables list every TCP socket of the
//! network namespace, so reading them costs more with every connection on
//! the node, and most during a burst of logins. This path asks only the
//! process's own sockets:
//!
//! 1. `/proc/self/fd` is listed (numbers only, no table), lowest fd first;
//! 2. a socket fd (`stat` of its link) gets `getsockname`/`getpeername`;
//!    an inet (IPv4 or IPv6) socket that has a peer is a candidate;
//! 3. each candidate, in fd order, is looked up by its exact four-tuple
//!    with one `sock_diag` request for TCP (a hash lookup in the kernel,
//!    independent of the table size). The reply carries the TCP state and
//!    the socket's inode: the candidate is taken when it is ESTABLISHED and
//!    the inode is the fd's own.
//!
//! That is the rule of the table path (the lowest fd that is an ESTABLISHED
//! TCP socket), so both paths pick the same connection. A peer name alone
//! would not be enough: a connected UDP socket has one too, and a TCP
//! socket keeps its peer name in CLOSE_WAIT, which the tables' rule skips.
//! The socket type cannot be asked of the fd (`getsockopt` needs a
//! borrowed fd, which would take `unsafe` here), and `sock_diag` answers
//! both questions without it.
//!
//! Whenever this path cannot vouch for its answer (no `/proc/self/fd`, no
//! `sock_diag`, or a connected inet socket `sock_diag` does not know as
//! TCP, such as UDP or a socket bound to a device), it says why and the
//! caller reads the tables instead, so the answer never differs from the
//! table path's; it is only cheaper when it can be sure.
//!
//! No call here waits: the kernel answers a `sock_diag` request while the
//! request is being sent, and the reply is read without blocking.

use std::fs;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrStorage,
};

use super::{Connection, TCP_ESTABLISHED};

/// Why the fd path gave no answer it could vouch for.
#[derive(Debug, thiserror::Error)]
pub enum Unsure {
    #[error("cannot list file descriptors in {path}: {source}")]
    FdDir { path: PathBuf, source: io::Error },
    #[error("sock_diag: {0}")]
    Diag(#[from] DiagError),
    #[error(
        "fd {fd} ({local} to {remote}) is a connected inet socket sock_diag does not list as this TCP socket"
    )]
    Unconfirmed {
        fd: RawFd,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// A `sock_diag` request that could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] Errno),
    #[error("cannot send the request: {0}")]
    Send(#[source] Errno),
    #[error("no reply to read: {0}")]
    Receive(#[source] Errno),
    #[error("a reply from netlink port {0}, not the kernel")]
    NotKernel(u32),
    #[error("the kernel refused the request: {0}")]
    Refused(#[source] Errno),
    #[error("malformed reply ({0})")]
    Malformed(&'static str),
}

/// The open fds listed in `fd_dir` (`/proc/self/fd`), lowest first.
pub fn open_fds(fd_dir: &Path) -> Result<Vec<RawFd>, Unsure> {
    let fd_dir_error = |source| Unsure::FdDir {
        path: fd_dir.to_path_buf(),
        source,
    };
    let mut fds = Vec::new();
    for entry in fs::read_dir(fd_dir).map_err(fd_dir_error)? {
        let entry = entry.map_err(fd_dir_error)?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .filter(|n| super::is_decimal(n))
            .and_then(|n| n.parse::<RawFd>().ok())
        {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// The lowest of `fds` (ascending) that is an ESTABLISHED TCP socket, with
/// its ends as `getsockname`/`getpeername` give them (IPv4-mapped ends of
/// a dual-stack socket stay mapped, as in `tcp6`). `fd_dir` is where the
/// fds' links are (`/proc/self/fd`); it gives each socket's inode.
pub fn connection_among(fd_dir: &Path, fds: &[RawFd]) -> Result<Option<Connection>, Unsure> {
    let mut diag: Option<SockDiag> = None;
    for &fd in fds {
        // An fd closed since the listing, or not a socket, is no candidate.
        let Ok(meta) = fs::metadata(fd_dir.join(fd.to_string())) else {
            continue;
        };
        if !meta.file_type().is_socket() {
            continue;
        }
        // Unix and netlink sockets have no inet name; listening and
        // unconnected ones have no peer.
        let Some((local, scope)) = inet_end(socket::getsockname::<SockaddrStorage>(fd)) else {
            continue;
        };
        let Some((remote, _)) = inet_end(socket::getpeername::<SockaddrStorage>(fd)) else {
            continue;
        };
        let diag = match diag.as_mut() {
            Some(open) => open,
            None => diag.insert(SockDiag::open()?),
        };
        match diag.tcp_socket(local, remote, scope)? {
            // The inode check also catches an fd number reused by another
            // socket between the stat and the name calls.
            Some(found) if found.inode == meta.ino() => {
                if found.state == TCP_ESTABLISHED {
                    return Ok(Some(Connection {
                        local,
                        remote,
                        inode: found.inode,
                    }));
                }
                // This very socket, in another state (CLOSE_WAIT...): the
                // tables' rule skips it too.
            }
            _ => return Err(Unsure::Unconfirmed { fd, local, remote }),
        }
    }
    Ok(None)
}

/// An inet end as the tables print it: no flow label or scope, so both
/// paths return equal values. The scope is returned on the side: the
/// kernel needs it to find a link-local socket.
fn inet_end(name: nix::Result<SockaddrStorage>) -> Option<(SocketAddr, u32)> {
    let name = name.ok()?;
    if let Some(v4) = name.as_sockaddr_in() {
        return Some((SocketAddr::V4(SocketAddrV4::from(*v4)), 0));
    }
    let v6 = name.as_sockaddr_in6()?;
    Some((
        SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), 0, 0)),
        v6.scope_id(),
    ))
}

/// What `sock_diag` says of one TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: u8,
    pub inode: u64,
}

// From <linux/netlink.h>, <linux/sock_diag.h> and <linux/inet_diag.h>.
const NLMSG_HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const FAMILY_INET: u8 = 2;
const FAMILY_INET6: u8 = 10;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const INET_DIAG_REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_MSG_STATE: usize = 1;
const INET_DIAG_MSG_INODE: usize = 68;
/// Every TCP state: an exact lookup reports whichever the socket is in.
const ALL_STATES: u32 = u32::MAX;

/// One `NETLINK_SOCK_DIAG` socket, for the lookups of one login.
#[derive(Debug)]
struct SockDiag {
    socket: OwnedFd,
    seq: u32,
}

impl SockDiag {
    fn open() -> Result<SockDiag, DiagError> {
        let socket = socket::socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(DiagError::Open)?;
        Ok(SockDiag { socket, seq: 0 })
    }

    /// The TCP socket whose ends are exactly `local` and `remote`, if the
    /// kernel has one (`None`: no such TCP socket).
    fn tcp_socket(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        scope: u32,
    ) -> Result<Option<DiagSocket>, DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let request = exact_request(self.seq, local, remote, scope);
        let fd = self.socket.as_raw_fd();
        let sent = socket::send(fd, &request, MsgFlags::empty()).map_err(DiagError::Send)?;
        if sent != request.len() {
            return Err(DiagError::Malformed("short send"));
        }
        // Non-blocking: the kernel queued its answer during send.
        let mut reply = [0u8; 1024];
        let (len, from) =
            socket::recvfrom::<NetlinkAddr>(fd, &mut reply).map_err(DiagError::Receive)?;
        let from = from.map_or(0, |a| a.pid());
        if from != 0 {
            return Err(DiagError::NotKernel(from));
        }
        parse_reply(reply.get(..len).unwrap_or_default(), self.seq)
    }
}

/// An `SOCK_DIAG_BY_FAMILY` request for the one TCP socket with these ends
/// (`id.src` is the local end, `id.dst` the remote one, as in `ss`).
fn exact_request(seq: u32, local: SocketAddr, remote: SocketAddr, scope: u32) -> Vec<u8> {
    let family = if local.is_ipv4() {
        FAMILY_INET
    } else {
        FAMILY_INET6
    };
    let total = NLMSG_HEADER_LEN + INET_DIAG_REQ_LEN;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: filled in by the kernel
    msg.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    msg.extend_from_slice(&ALL_STATES.to_ne_bytes());
    msg.extend_from_slice(&local.port().to_be_bytes());
    msg.extend_from_slice(&remote.port().to_be_bytes());
    msg.extend_from_slice(&address_words(local));
    msg.extend_from_slice(&address_words(remote));
    msg.extend_from_slice(&scope.to_ne_bytes());
    // INET_DIAG_NOCOOKIE: match whatever socket has these ends.
    msg.extend_from_slice(&[0xFF; 8]);
    msg
}

/// `__be32 [4]`: the address bytes in network order, IPv4 in the first word.
fn address_words(addr: SocketAddr) -> [u8; 16] {
    match addr {
        SocketAddr::V4(v4) => {
            let mut words = [0u8; 16];
            for (out, byte) in words.iter_mut().zip(v4.ip().octets()) {
                *out = byte;
            }
            words
        }
        SocketAddr::V6(v6) => v6.ip().octets(),
    }
}

fn parse_reply(reply: &[u8], seq: u32) -> Result<Option<DiagSocket>, DiagError> {
    let header = reply
        .get(..NLMSG_HEADER_LEN)
        .ok_or(DiagError::Malformed("shorter than a netlink header"))?;
    let len = ne_u32(header, 0).ok_or(DiagError::Malformed("header"))?;
    let kind = header
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or(DiagError::Malformed("header"))?;
    if ne_u32(header, 8) != Some(seq) {
        return Err(DiagError::Malformed("another request's sequence number"));
    }
    let body = usize::try_from(len)
        .ok()
        .and_then(|len| reply.get(NLMSG_HEADER_LEN..len))
        .ok_or(DiagError::Malformed("length beyond the datagram"))?;
    match kind {
        NLMSG_ERROR => {
            let code = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
                .ok_or(DiagError::Malformed("error message"))?;
            match code.checked_neg().map(Errno::from_raw) {
                Some(Errno::ENOENT) => Ok(None),
                Some(errno) if code != 0 => Err(DiagError::Refused(errno)),
                _ => Err(DiagError::Malformed("acknowledgement instead of an answer")),
            }
        }
        SOCK_DIAG_BY_FAMILY => {
            if body.len() < INET_DIAG_MSG_LEN {
                return Err(DiagError::Malformed("short inet_diag_msg"));
            }
            let state = *body
                .get(INET_DIAG_MSG_STATE)
                .ok_or(DiagError::Malformed("short inet_diag_msg"))?;
            let inode = ne_u32(body, INET_DIAG_MSG_INODE)
                .ok_or(DiagError::Malformed("short inet_diag_msg"))?;
            Ok(Some(DiagSocket {
                state,
                inode: u64::from(inode),
            }))
        }
        _ => Err(DiagError::Malformed("unexpected message type")),
    }
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(word.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv6Addr, TcpListener, TcpStream, UdpSocket};
    use std::os::unix::net::{UnixListener, UnixStream};

    fn fd_dir() -> &'static Path {
        Path::new("/proc/self/fd")
    }

    fn inode_of(fd: RawFd) -> u64 {
        fs::metadata(fd_dir().join(fd.to_string()))
            .expect("stat fd")
            .ino()
    }

    /// A connected pair with a byte sent each way, so both ends are surely
    /// ESTABLISHED; returns (listener, client, server).
    fn connected(at: &str) -> io::Result<(TcpListener, TcpStream, TcpStream)> {
        let listener = TcpListener::bind(at)?;
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"x")?;
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte)?;
        server.write_all(b"y")?;
        client.read_exact(&mut byte)?;
        Ok((listener, client, server))
    }

    fn assert_finds_server(listener: &TcpListener, server: &TcpStream, label: &str) {
        let fds = [listener.as_raw_fd(), server.as_raw_fd()];
        let found = connection_among(fd_dir(), &fds)
            .expect("the fd path is sure")
            .expect("the server's end");
        assert_eq!(found.local, server.local_addr().expect("addr"), "{label}");
        assert_eq!(found.remote, server.peer_addr().expect("addr"), "{label}");
        assert_eq!(found.inode, inode_of(server.as_raw_fd()), "{label}");
    }

    #[test]
    fn finds_an_ipv4_connection_and_skips_listener_and_unix_sockets() {
        let (listener, _client, server) = connected("127.0.0.1:0").expect("loopback v4");
        let unix_dir = tempfile::tempdir().expect("tempdir");
        let unix_listener = UnixListener::bind(unix_dir.path().join("s")).expect("bind");
        let (unix_a, _unix_b) = UnixStream::pair().expect("pair");
        let devnull = fs::File::open("/dev/null").expect("/dev/null");

        // The decoys come first: the listener has no peer, the unix
        // sockets no inet name, /dev/null is no socket at all.
        let mut fds = vec![
            devnull.as_raw_fd(),
            unix_listener.as_raw_fd(),
            unix_a.as_raw_fd(),
            listener.as_raw_fd(),
        ];
        assert_eq!(
            connection_among(fd_dir(), &fds).expect("sure"),
            None,
            "no decoy is taken"
        );
        fds.push(server.as_raw_fd());
        let found = connection_among(fd_dir(), &fds)
            .expect("sure")
            .expect("the server's end");
        assert_eq!(found.local, server.local_addr().expect("addr"));
        assert_eq!(found.remote, server.peer_addr().expect("addr"));
        assert!(found.local.is_ipv4() && found.remote.is_ipv4());
        assert_eq!(found.inode, inode_of(server.as_raw_fd()));
        assert_finds_server(&listener, &server, "v4");
    }

    #[test]
    fn lowest_established_fd_wins() {
        let (_l1, client1, server1) = connected("127.0.0.1:0").expect("loopback v4");
        let (_l2, _client2, server2) = connected("127.0.0.1:0").expect("loopback v4");
        let mut fds = [
            server2.as_raw_fd(),
            client1.as_raw_fd(),
            server1.as_raw_fd(),
        ];
        fds.sort_unstable();
        let lowest = fds[0];
        let found = connection_among(fd_dir(), &fds)
            .expect("sure")
            .expect("a connection");
        assert_eq!(found.inode, inode_of(lowest));
    }

    #[test]
    fn close_wait_is_skipped_like_the_tables_do() {
        let (_listener, client, server) = connected("127.0.0.1:0").expect("loopback v4");
        let (_l2, _c2, established) = connected("127.0.0.1:0").expect("loopback v4");
        // The client closes: the server's end goes to CLOSE_WAIT, and still
        // has its peer name.
        drop(client);
        let mut byte = [0u8; 1];
        assert_eq!((&server).read(&mut byte).expect("eof"), 0);
        assert!(
            server.peer_addr().is_ok(),
            "a CLOSE_WAIT socket keeps its peer"
        );
        let found = connection_among(fd_dir(), &[server.as_raw_fd()]).expect("sure");
        assert_eq!(found, None, "CLOSE_WAIT is not ESTABLISHED");
        let found = connection_among(fd_dir(), &[server.as_raw_fd(), established.as_raw_fd()])
            .expect("sure")
            .expect("the established one");
        assert_eq!(found.inode, inode_of(established.as_raw_fd()));
    }

    #[test]
    fn a_connected_udp_socket_is_not_taken_for_tcp() {
        let (_listener, _client, server) = connected("127.0.0.1:0").expect("loopback v4");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        udp.connect(server.local_addr().expect("addr"))
            .expect("connect udp");
        assert!(udp.peer_addr().is_ok(), "a connected UDP socket has a peer");
        match connection_among(fd_dir(), &[udp.as_raw_fd(), server.as_raw_fd()]) {
            Err(Unsure::Unconfirmed { fd, .. }) => assert_eq!(fd, udp.as_raw_fd()),
            other => panic!("UDP must send the lookup to the tables, got {other:?}"),
        }
    }

    /// IPv6 where the host has it: `::1` and a mapped IPv4 client on a
    /// dual-stack listener. A host without IPv6 must show that it has none
    /// (no `::1` in `/proc/net/if_inet6`), and the IPv4 case still runs;
    /// a host that lists `::1` but cannot use it fails.
    #[test]
    fn finds_an_ipv6_connection_where_the_host_has_ipv6() {
        let (listener, _client, server) = connected("127.0.0.1:0").expect("loopback v4");
        assert_finds_server(&listener, &server, "v4");
        match connected("[::1]:0") {
            Ok((listener, _client, server)) => {
                assert_finds_server(&listener, &server, "v6 loopback");
                let found = connection_among(fd_dir(), &[server.as_raw_fd()])
                    .expect("sure")
                    .expect("found");
                assert_eq!(found.local.ip(), std::net::IpAddr::V6(Ipv6Addr::LOCALHOST));
                mapped_client_on_a_dual_stack_listener();
            }
            Err(e) => {
                let inet6 = fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
                assert!(
                    !inet6
                        .lines()
                        .any(|l| l.starts_with("00000000000000000000000000000001 ")),
                    "::1 is configured but unusable: {e}"
                );
                eprintln!("this host has no ::1 ({e}): only the IPv4 case was asserted");
            }
        }
    }

    fn mapped_client_on_a_dual_stack_listener() {
        let listener = TcpListener::bind("[::]:0").expect("an IPv6 socket on ::");
        let port = listener.local_addr().expect("addr").port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect over v4");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"x").expect("write");
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).expect("read");
        let found = connection_among(fd_dir(), &[server.as_raw_fd()])
            .expect("sure")
            .expect("the mapped connection");
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().expect("addr");
        assert_eq!(found.local, mapped, "as the kernel names it");
        assert_eq!(
            found.canonical().remote,
            client.local_addr().expect("addr"),
            "canonical() gives the client's plain IPv4 end"
        );
    }

    #[test]
    fn request_layout() {
        let local: SocketAddr = "10.1.2.3:22".parse().expect("addr");
        let remote: SocketAddr = "10.1.2.77:51234".parse().expect("addr");
        let msg = exact_request(7, local, remote, 0);
        assert_eq!(msg.len(), 72);
        assert_eq!(ne_u32(&msg, 0), Some(72));
        assert_eq!(&msg[4..6], &SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert_eq!(ne_u32(&msg, 8), Some(7));
        assert_eq!(&msg[16..20], &[FAMILY_INET, IPPROTO_TCP, 0, 0]);
        assert_eq!(&msg[24..26], &22u16.to_be_bytes());
        assert_eq!(&msg[26..28], &51234u16.to_be_bytes());
        assert_eq!(&msg[28..32], &[10, 1, 2, 3]);
        assert_eq!(&msg[32..44], &[0; 12]);
        assert_eq!(&msg[44..48], &[10, 1, 2, 77]);
        assert_eq!(&msg[64..72], &[0xFF; 8]);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        assert!(matches!(parse_reply(&[], 1), Err(DiagError::Malformed(_))));
        let mut header = Vec::new();
        header.extend_from_slice(&200u32.to_ne_bytes());
        header.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        header.extend_from_slice(&0u16.to_ne_bytes());
        header.extend_from_slice(&1u32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        assert!(
            matches!(parse_reply(&header, 1), Err(DiagError::Malformed(_))),
            "length beyond"
        );
        assert!(
            matches!(parse_reply(&header, 2), Err(DiagError::Malformed(_))),
            "sequence"
        );
        let mut error = header.clone();
        error[0..4].copy_from_slice(&20u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error.extend_from_slice(&(-2i32).to_ne_bytes());
        assert!(
            matches!(parse_reply(&error, 1), Ok(None)),
            "ENOENT: no such socket"
        );
        error[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(matches!(
            parse_reply(&error, 1),
            Err(DiagError::Refused(Errno::EPERM))
        ));
        error[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(
            matches!(parse_reply(&error, 1), Err(DiagError::Malformed(_))),
            "an ack"
        );
    }
}
