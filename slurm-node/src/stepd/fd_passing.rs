//! Receiving one descriptor passed with `SCM_RIGHTS`, as a stepd sends its
//! job's namespace files, and checking that it is a namespace before it is
//! used. The descriptor is used as received: never re-opened by path (a
//! FIFO or device opened by path could block or have side effects).

use std::io::IoSliceMut;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags};
use nix::sys::statfs::{FsType, fstatfs};

/// `NSFS_MAGIC` from `<linux/magic.h>`: the filesystem of namespace files.
pub(crate) const NSFS_MAGIC: i64 = 0x6e73_6673;

/// How many descriptors one receive makes room for. A stepd sends one;
/// the room for more lets a sender that sends extra be seen (and its fds
/// closed). More than this is MSG_CTRUNC, whose installed fds are closed too.
const FD_ROOM: usize = 4;

/// Why no descriptor came out of one `recvmsg`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FdRecvError {
    /// From recvmsg itself; the caller decides what a timeout or reset is.
    #[error("recvmsg: {0}")]
    Errno(Errno),
    #[error("descriptor control data truncated ({0} descriptors received and closed)")]
    Truncated(usize),
    #[error("no descriptor attached")]
    NoneAttached,
    #[error("{0} descriptors where one was expected")]
    Many(usize),
}

/// Why a received descriptor is not the namespace it was announced as.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NamespaceFdError {
    #[error("fstatfs on the received descriptor: {0}")]
    Fstatfs(#[source] Errno),
    #[error("the received descriptor is not a namespace file (filesystem magic {0:#x})")]
    NotNsfs(i64),
    #[error("cannot read the received descriptor's link {link}: {source}")]
    Readlink {
        link: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the received descriptor is a namespace of unknown kind ({0:?})")]
    UnknownKind(String),
    #[error("the received descriptor is a {kind} namespace, announced as type {announced:#x}")]
    WrongKind { kind: &'static str, announced: i32 },
}

/// Receive the one-byte message that carries a descriptor. `Ok(None)`: the
/// peer closed before sending it. Every descriptor that did arrive is
/// owned as soon as it is parsed and closed unless it is the one returned,
/// on every path: truncated control data and extra descriptors included.
/// EINTR comes back as an error so the caller re-arms its timeout.
pub(crate) fn recv_fd(sock: BorrowedFd<'_>) -> Result<Option<OwnedFd>, FdRecvError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    // Zero-filled: the kernel writes the control messages at its start,
    // and the parser stops at the first zero length.
    let mut space = nix::cmsg_space!([RawFd; FD_ROOM]);
    let (bytes, flags) = match socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => (msg.bytes, msg.flags),
        Err(errno) => return Err(FdRecvError::Errno(errno)),
    };
    let mut received = owned_rights(&space);
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(FdRecvError::Truncated(received.len()));
    }
    match received.len() {
        1 => Ok(received.pop()),
        0 if bytes == 0 => Ok(None),
        0 => Err(FdRecvError::NoneAttached),
        many => Err(FdRecvError::Many(many)),
    }
}

/// The descriptors of every `SCM_RIGHTS` message in a control buffer, each
/// owned from here on. Parsed by hand (nix refuses a truncated buffer,
/// which would leave the fds the kernel did install open).
fn owned_rights(buf: &[u8]) -> Vec<OwnedFd> {
    const WORD: usize = size_of::<usize>();
    let header = size_of::<libc::cmsghdr>();
    let align = |n: usize| n.div_ceil(WORD).saturating_mul(WORD);
    let mut fds = Vec::new();
    let mut at = 0usize;
    while let Some(hdr) = buf.get(at..at.saturating_add(header)) {
        let (Some(len), Some(level), Some(kind)) = (
            hdr.get(..WORD).and_then(|b| <[u8; WORD]>::try_from(b).ok()),
            hdr.get(WORD..WORD + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok()),
            hdr.get(WORD + 4..WORD + 8)
                .and_then(|b| <[u8; 4]>::try_from(b).ok()),
        ) else {
            break;
        };
        let len = usize::from_ne_bytes(len);
        if len < header {
            break;
        }
        let data_end = at.saturating_add(len).min(buf.len());
        let data = buf
            .get(at.saturating_add(header)..data_end)
            .unwrap_or_default();
        if i32::from_ne_bytes(level) == libc::SOL_SOCKET
            && i32::from_ne_bytes(kind) == libc::SCM_RIGHTS
        {
            for raw in data.chunks_exact(size_of::<RawFd>()) {
                let Ok(raw) = <[u8; 4]>::try_from(raw) else {
                    continue;
                };
                let raw = RawFd::from_ne_bytes(raw);
                if raw >= 0 {
                    // SAFETY: the kernel installed this descriptor in this
                    // process during the recvmsg above and wrote its number
                    // here; nothing else knows of it, so we are its only
                    // owner and close it exactly once when it drops.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        at = at.saturating_add(align(len));
    }
    fds
}

/// The kind of namespace a `CLONE_NEW*` flag names, as `/proc` links
/// spell it; `None` for 0 (any kind) or an unknown flag.
fn kind_of_flag(nstype: i32) -> Option<&'static str> {
    Some(match nstype {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWCGROUP => "cgroup",
        0x80 => "time", // CLONE_NEWTIME
        _ => return None,
    })
}

/// The namespace kinds a `/proc/self/fd` link of an nsfs file can name.
const KINDS: [&str; 9] = [
    "mnt",
    "pid",
    "user",
    "net",
    "uts",
    "ipc",
    "cgroup",
    "time",
    "pid_for_children",
];

/// Check a received descriptor is a namespace file of the announced type
/// (`nstype` 0: any kind), on the descriptor itself: `fstatfs` must say
/// nsfs, and the kernel's name for it (`readlink`, which opens nothing)
/// must be of the announced kind. Returns the kind.
pub(crate) fn check_namespace(fd: &OwnedFd, nstype: i32) -> Result<&'static str, NamespaceFdError> {
    let fs = fstatfs(fd.as_fd()).map_err(NamespaceFdError::Fstatfs)?;
    let magic: i64 = fs_magic(fs.filesystem_type());
    if magic != NSFS_MAGIC {
        return Err(NamespaceFdError::NotNsfs(magic));
    }
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let target = nix::fcntl::readlink(&link).map_err(|source| NamespaceFdError::Readlink {
        link: link.clone(),
        source,
    })?;
    kind_from_link(&target.to_string_lossy(), nstype)
}

/// The namespace kind of an nsfs descriptor from its `/proc/self/fd` link.
///
/// A descriptor opened from `/proc/PID/ns/*` links to `KIND:[INODE]`. One
/// opened from a bind mount of such a file (job_container/tmpfs keeps the
/// job's mount namespace at `<BasePath>/<job>/.ns` and its stepd sends
/// that) links to the bind mount's path instead, which names no kind.
/// That is still a namespace (the caller checked nsfs), and when a kind
/// was announced setns(2) is called with it and refuses a namespace of
/// any other kind, so the announced kind stands. Without one there is
/// nothing to hold it to, and it is refused.
fn kind_from_link(target: &str, nstype: i32) -> Result<&'static str, NamespaceFdError> {
    let named = target
        .split_once(":[")
        .and_then(|(kind, _)| KINDS.iter().find(|k| **k == kind).copied());
    let announced = kind_of_flag(nstype);
    match (named, announced) {
        (Some(kind), None) if nstype == 0 => Ok(kind),
        (Some(kind), Some(want)) if want == kind => Ok(kind),
        (Some(kind), _) => Err(NamespaceFdError::WrongKind {
            kind,
            announced: nstype,
        }),
        (None, Some(want)) => Ok(want),
        (None, None) => Err(NamespaceFdError::UnknownKind(
            target.chars().take(64).collect(),
        )),
    }
}

fn fs_magic(fs: FsType) -> i64 {
    #[allow(clippy::useless_conversion, clippy::cast_lossless)]
    i64::from(fs.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_link_or_from_the_announcement() {
        let ns = libc::CLONE_NEWNS;
        let pid = libc::CLONE_NEWPID;
        assert_eq!(kind_from_link("mnt:[4026531841]", 0).ok(), Some("mnt"));
        assert_eq!(kind_from_link("mnt:[4026531841]", ns).ok(), Some("mnt"));
        assert!(matches!(
            kind_from_link("mnt:[4026531841]", pid),
            Err(NamespaceFdError::WrongKind { kind: "mnt", .. })
        ));
        // job_container/tmpfs: a bind-mounted namespace file, named by path;
        // setns(2) holds it to the announced kind.
        assert_eq!(
            kind_from_link("/var/lib/slurm/jc/n1/7/.ns", ns).ok(),
            Some("mnt")
        );
        assert!(matches!(
            kind_from_link("/var/lib/slurm/jc/n1/7/.ns", 0),
            Err(NamespaceFdError::UnknownKind(_))
        ));
        assert!(matches!(
            kind_from_link("bogus:[1]", 0),
            Err(NamespaceFdError::UnknownKind(_))
        ));
    }
    use nix::sys::socket::{AddressFamily, ControlMessage, SockFlag, SockType, UnixAddr};
    use std::io::{IoSlice, Read};
    use std::os::unix::net::UnixStream;

    fn send(sock: &UnixStream, fds: &[RawFd]) {
        let byte = [0u8];
        let iov = [IoSlice::new(&byte)];
        let cmsgs = [ControlMessage::ScmRights(fds)];
        socket::sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
            .unwrap();
    }

    /// A pipe whose write end is sent: when every copy of it is closed,
    /// the read end sees EOF — a race-free test that no copy is left.
    fn write_end_closed(mut read: std::fs::File) -> bool {
        let mut buf = [0u8; 1];
        read.read(&mut buf).unwrap() == 0
    }

    fn pipe() -> (std::fs::File, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (std::fs::File::from(r), w)
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (UnixStream::from(a), UnixStream::from(b))
    }

    #[test]
    fn two_fds_when_one_was_asked_are_both_closed() {
        let (tx, rx) = pair();
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        send(&tx, &[w1.as_raw_fd(), w2.as_raw_fd()]);
        drop((w1, w2));
        let err = recv_fd(rx.as_fd()).unwrap_err();
        assert!(matches!(err, FdRecvError::Many(2)), "{err:?}");
        assert!(write_end_closed(r1));
        assert!(write_end_closed(r2));
    }

    #[test]
    fn truncated_control_data_closes_what_was_installed() {
        let (tx, rx) = pair();
        let pipes: Vec<_> = (0..FD_ROOM + 4).map(|_| pipe()).collect();
        let raws: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
        send(&tx, &raws);
        let reads: Vec<_> = pipes
            .into_iter()
            .map(|(r, w)| {
                drop(w);
                r
            })
            .collect();
        let err = recv_fd(rx.as_fd()).unwrap_err();
        assert!(matches!(err, FdRecvError::Truncated(n) if n > 0), "{err:?}");
        // The fds the kernel could not install were never ours; the ones
        // it did install were closed: every write end is gone.
        for r in reads {
            assert!(write_end_closed(r));
        }
    }

    #[test]
    fn one_fd_is_returned_owned() {
        let (tx, rx) = pair();
        let ns = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        send(&tx, &[ns.as_raw_fd()]);
        let fd = recv_fd(rx.as_fd()).unwrap().unwrap();
        assert_eq!(check_namespace(&fd, libc::CLONE_NEWNS).unwrap(), "mnt");
        assert_eq!(check_namespace(&fd, 0).unwrap(), "mnt");
        assert!(matches!(
            check_namespace(&fd, libc::CLONE_NEWPID),
            Err(NamespaceFdError::WrongKind { kind: "mnt", .. })
        ));
    }

    #[test]
    fn files_that_are_not_namespaces_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let regular = tempfile::tempfile().unwrap();
        let zero = std::fs::File::open("/dev/zero").unwrap();
        for f in [fifo, regular, zero] {
            let fd = OwnedFd::from(f);
            let err = check_namespace(&fd, libc::CLONE_NEWNS).unwrap_err();
            assert!(matches!(err, NamespaceFdError::NotNsfs(_)), "{err:?}");
        }
    }

    use std::os::unix::fs::OpenOptionsExt;
}
