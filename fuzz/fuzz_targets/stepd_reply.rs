//! The stepd reply decoders fed a fake slurmstepd's byte stream, from the
//! handshake answer on, with no socket and no thread: the same codec the
//! blocking client and the poll scan drive.
//!
//! Per input, two paths over the same bytes:
//! * the client's: handshake, STATE, STEP_UID, X11_DISPLAY, GET_NS_FD(S)
//!   (chosen by the version, as the client does), ADD_EXTERN_PID, with a
//!   failed reply other than a refusal ending the conversation as it makes
//!   the client's connection unusable. Where a descriptor is due, one byte
//!   of the input is its carrier message: odd means a descriptor came with
//!   it, even means none did (the client then fails, as on a real socket).
//! * the scan's: the per-connection `UidExchange` (handshake, then the uid).
//! * the real client's, over a socketpair: the input is cut into chunks,
//!   each sent as one message, and a chunk's header byte may attach 0 to 7
//!   descriptors to it with SCM_RIGHTS (an nsfs file of our own mount
//!   namespace, /dev/null, a pipe's read end), so descriptors arrive where
//!   the client wants one, on bytes it reads as data, more than asked and
//!   more than its control buffer holds (MSG_CTRUNC). `StepdClient` asks
//!   the login's requests on it; afterwards the process must hold exactly
//!   the descriptors it held before: every received one closed.
//!
//! Each path runs with the bytes handed over in chunks of 1, 3 and as many
//! as the decoder wants; a decoder must give the same answers whatever the
//! chunking, and the scan must agree with the client's two decoders run in
//! turn. None of it may panic.

#![no_main]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{self, ControlMessage, MsgFlags, UnixAddr};
use slurm_node::stepd::StepdClient;
use slurm_node::stepd::decode::{
    AddExternPidReply, HandshakeReply, Layout, NsFdReply, NsFdsReply, ReplyDecoder, StateReply,
    StepUidReply, UidExchange, Want, X11Reply,
};
use slurm_node::stepd::{CodecError, MAX_XAUTHORITY_LEN, NS_FDS_MIN_VERSION, OLDEST_STEPD_VERSION};

/// A stand-in descriptor: the offset of its carrier byte.
type FakeFd = usize;

/// Why a reply did not come out.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Codec(CodecError),
    /// The carrier byte came without a descriptor (the client's
    /// "no descriptor attached").
    NoDescriptor,
}

/// The fake stepd's side of the connection: the input, read in order.
struct Stream<'a> {
    data: &'a [u8],
    at: usize,
    chunk: usize,
}

impl<'a> Stream<'a> {
    fn new(data: &'a [u8], chunk: usize) -> Self {
        Stream { data, at: 0, chunk }
    }

    /// Up to `n` bytes (fewer at the end of the input, none at EOF).
    fn read(&mut self, n: usize) -> &'a [u8] {
        let rest = self.data.get(self.at..).unwrap_or_default();
        let take = n.min(self.chunk).min(rest.len());
        self.at += take;
        rest.get(..take).unwrap_or_default()
    }

    /// Drive one decoder to the end of its reply, as a transport would.
    fn reply<L: Layout<FakeFd>>(&mut self, layout: L) -> Result<L::Output, Failure> {
        let mut d = ReplyDecoder::new(layout);
        loop {
            let fed = match d.want() {
                Want::Bytes(n) => {
                    assert!(n > 0, "a decoder asked for 0 bytes");
                    assert!(n <= MAX_XAUTHORITY_LEN, "a decoder asked for {n} bytes");
                    let chunk = self.read(n);
                    if chunk.is_empty() {
                        return Err(Failure::Codec(d.eof()));
                    }
                    d.feed(chunk)
                }
                Want::Fd => {
                    let at = self.at;
                    match self.read(1).first() {
                        None => return Err(Failure::Codec(d.eof())),
                        Some(&carrier) if carrier % 2 == 0 => return Err(Failure::NoDescriptor),
                        Some(_) => d.feed_fd(at),
                    }
                }
                Want::Nothing => panic!("a decoder wants nothing before it answered"),
            };
            match fed {
                Ok(Some(out)) => {
                    assert_eq!(d.want(), Want::Nothing, "an answered decoder wants more");
                    return Ok(out);
                }
                Ok(None) => {}
                Err(e) => {
                    assert_eq!(d.want(), Want::Nothing, "a failed decoder wants more");
                    return Err(Failure::Codec(e));
                }
            }
        }
    }
}

/// One request's outcome; a failure other than a refusal ends the run, as
/// it leaves the client's connection unusable.
fn record<T: std::fmt::Debug>(log: &mut Vec<String>, result: Result<T, Failure>) -> bool {
    let go_on = match &result {
        Ok(_) | Err(Failure::Codec(CodecError::Rejected { .. })) => true,
        Err(_) => false,
    };
    log.push(format!("{result:?}"));
    go_on
}

/// The client's conversation; what each reply decoded to.
fn client_path(data: &[u8], chunk: usize) -> Vec<String> {
    let mut s = Stream::new(data, chunk);
    let mut log = Vec::new();
    let version = s.reply(HandshakeReply);
    if let Ok(v) = version {
        assert!(v >= OLDEST_STEPD_VERSION);
    }
    log.push(format!("{version:?}"));
    let Ok(version) = version else {
        return log;
    };
    let _ = record(
        &mut log,
        s.reply(StateReply {
            stepd_version: version,
        }),
    ) && record(&mut log, s.reply(StepUidReply))
        && record(&mut log, s.reply(X11Reply::default()))
        && if version >= NS_FDS_MIN_VERSION {
            let fds = s.reply(NsFdsReply::default());
            if let Ok(fds) = &fds {
                assert!(fds.len() <= slurm_node::stepd::MAX_NAMESPACE_FDS);
            }
            record(&mut log, fds)
        } else {
            let fds = s.reply(NsFdReply);
            if let Ok(fds) = &fds {
                // The one fd of GET_NS_FD is announced as CLONE_NEWNS.
                assert!(fds.len() <= 1 && fds.iter().all(|ns| ns.nstype == 0x0002_0000));
            }
            record(&mut log, fds)
        }
        && record(&mut log, s.reply(AddExternPidReply));
    log
}

/// The scan's exchange over the same bytes.
fn scan_path(data: &[u8], chunk: usize) -> Result<(u32, u32), CodecError> {
    let mut s = Stream::new(data, chunk);
    let mut x = UidExchange::new();
    assert_eq!(x.unsent().len(), 8);
    x.sent(usize::MAX);
    assert!(x.unsent().is_empty());
    loop {
        let Want::Bytes(n) = x.want() else {
            panic!("the exchange stopped wanting bytes before it answered");
        };
        let chunk = s.read(n);
        if chunk.is_empty() {
            return Err(x.eof());
        }
        if let Some(answer) = x.feed(chunk)? {
            assert_eq!(x.version(), Some(answer.0));
            return Ok(answer);
        }
    }
}

/// The descriptors a chunk header asks for: `count` of them, kinds in
/// turn from `first`.
fn attachments(count: usize, first: usize) -> Vec<OwnedFd> {
    (0..count)
        .filter_map(|i| match (first + i) % 3 {
            0 => std::fs::File::open("/proc/self/ns/mnt")
                .ok()
                .map(OwnedFd::from),
            1 => std::fs::File::open("/dev/null").ok().map(OwnedFd::from),
            _ => nix::unistd::pipe().ok().map(|(read, _write)| read),
        })
        .collect()
}

/// Send `data` as the stepd's side: chunks of 1 to 16 bytes, each after
/// a header byte (low 4 bits: length - 1; bits 4-6: how many descriptors
/// ride on the chunk; bit 7: which kind comes first). Our copies of the
/// descriptors close when this returns; the kernel holds the ones in
/// flight.
fn send_chunks(stepd: &UnixStream, data: &[u8]) {
    let mut rest = data;
    while let Some((&header, tail)) = rest.split_first() {
        let len = usize::from(header & 0x0f) + 1;
        let (chunk, after) = tail.split_at(len.min(tail.len()));
        rest = after;
        if chunk.is_empty() {
            break;
        }
        let fds = attachments(
            usize::from((header >> 4) & 0x07),
            usize::from(header >> 7) * 2,
        );
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let iov = [IoSlice::new(chunk)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
        // The whole input fits in the socket buffer: nothing blocks.
        if socket::sendmsg::<UnixAddr>(stepd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_DONTWAIT, None)
            .is_err()
        {
            break;
        }
    }
    // EOF after the last chunk: the client never waits for more.
    let _ = stepd.shutdown(std::net::Shutdown::Write);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The client's requests in login order over a real socket; every fd it
/// received must be closed again when it and its answers are dropped.
fn socket_path(data: &[u8]) {
    let before = open_fds();
    {
        let Ok((client_end, stepd_end)) = UnixStream::pair() else {
            return;
        };
        send_chunks(&stepd_end, data);
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Ok(mut client) =
            StepdClient::over_stream(client_end, PathBuf::from("fuzz-stepd"), deadline)
        {
            let _ = client.state();
            let _ = client.step_uid();
            let _ = client.x11_display();
            if let Ok(fds) = client.namespace_fds() {
                assert!(fds.len() <= slurm_node::stepd::MAX_NAMESPACE_FDS);
            }
            let _ = client.add_extern_pid(1);
        }
    }
    assert_eq!(open_fds(), before, "descriptors left open");
}

fuzz_target!(|data: &[u8]| {
    socket_path(data);

    let chunks = [1, 3, usize::MAX];
    let client = client_path(data, usize::MAX);
    for chunk in chunks {
        assert_eq!(client_path(data, chunk), client, "client path by {chunk}");
    }

    let scan = scan_path(data, usize::MAX);
    for chunk in chunks {
        assert_eq!(scan_path(data, chunk), scan, "scan path by {chunk}");
    }
    // The pipelined exchange is the client's two decoders back to back.
    let mut s = Stream::new(data, usize::MAX);
    let sequential = s
        .reply(HandshakeReply)
        .and_then(|version| s.reply(StepUidReply).map(|uid| (version, uid)));
    assert_eq!(scan.map_err(Failure::Codec), sequential);
});
