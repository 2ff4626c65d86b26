//! A stand-in for slurmd's network side: `REQUEST_NETWORK_CALLERID` (5035)
//! answered with `RESPONSE_NETWORK_CALLERID` (5036), as the slurmd on an
//! ssh client's host answers pam_adopt (slurm-protocol.md §4.3-4.6).
//!
//! What it does like a slurmd of 22.05 to 26.05:
//!
//! * The reply uses the request's header version, and that version's body
//!   layout: job id only before 25.11 (0x2C00), the packed step id from then.
//! * The request's munge credential is decoded (so munged vouches for the
//!   sender) and its payload must be empty, the "none" hash or the K12 hash
//!   of the body; otherwise the answer is `RESPONSE_SLURM_RC` 1007.
//! * The reply is signed through the munged socket given at start, with a
//!   K12 hash of its body as payload, decodable only by the requester's uid.
//! * Versions it does not accept (see [`SlurmdConfig::like_release`]) are
//!   refused the way the releases do: closed without a word (22.05-24.11),
//!   or an unauthenticated `RESPONSE_SLURM_RC` 1007 with header version
//!   `NO_VAL16` (25.05+); `RESPONSE_SLURM_RC` 1005 can be chosen too.
//!
//! It does not look at any `/proc`: the answer comes from a table keyed by
//! the request's (client, server) addresses, else a default. A [`Fault`]
//! per connection (a queue, consumed one per connection, then a fixed one)
//! makes it misbehave. Every request is recorded for asserts.
//!
//! The message types and error codes are written out here from the
//! protocol reference; the framing, packing and body codecs are
//! slurm-node's, which its own byte-level tests pin to live captures.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::serve::{self, TICK};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use slurm_node::rpc::callerid::{
    CallerIdRequest, CallerIdResponse, decode_callerid_request, encode_callerid_response, encode_rc,
};
use slurm_node::rpc::hash::{HASH_PLUGIN_NONE, body_hash};
use slurm_node::rpc::header::{
    Header, MAX_FRAME_LEN, Message, OrigAddr, decode_message, encode_message,
};
use slurm_node::rpc::munge::MungeContext;

pub use slurm_node::rpc::Rejection;
pub use slurm_node::rpc::callerid::CallerIdAnswer as Answer;

pub const REQUEST_NETWORK_CALLERID: u16 = 5035;
pub const RESPONSE_NETWORK_CALLERID: u16 = 5036;
pub const RESPONSE_SLURM_RC: u16 = 8001;
/// `SLURM_UNEXPECTED_MSG_ERROR`: a message type this shim does not serve.
pub const SLURM_UNEXPECTED_MSG_ERROR: u32 = 1000;
/// `SLURM_PROTOCOL_VERSION_ERROR`.
pub const SLURM_PROTOCOL_VERSION_ERROR: u32 = 1005;
/// `SLURM_PROTOCOL_AUTHENTICATION_ERROR`.
pub const SLURM_PROTOCOL_AUTHENTICATION_ERROR: u32 = 1007;
/// `SLURM_ERROR` (-1) as slurmd packs it: a request body it cannot unpack.
pub const SLURM_ERROR: u32 = u32::MAX;
/// The job id of "no job owns that connection".
pub const NO_VAL: u32 = 0xffff_fffe;
/// The header version of a 25.05+ reply to a header it could not read.
pub const NO_VAL16: u16 = 0xfffe;
/// Header flag: no auth section follows.
pub const SLURM_NO_AUTH_CRED: u16 = 0x40;
/// The extern step id, put in 25.11+ replies that name a job.
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;
/// The uid [`Fault::WrongSenderUid`] signs as by default: nobody.
pub const DEFAULT_UNTRUSTED_UID: u32 = 65534;

/// A client that stops reading must not pin a shim thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the fake slurmd misbehaves on one connection. Every fault reads the
/// whole request first, and every one but [`Fault::WrongVersion`] and
/// [`Fault::VersionErrorRc`] decodes its credential first, as slurmd does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer properly.
    #[default]
    None,
    /// Read the request, never answer; the connection stays open until the
    /// client leaves or the shim stops.
    Hang,
    /// Wait this long, then answer properly.
    Slow(Duration),
    /// Read the request, close without a reply.
    CloseWithoutReply,
    /// Treat the request's header version as one this slurmd does not
    /// accept, the 22.05-24.11 way: close without reply.
    WrongVersion,
    /// Treat the header version as not accepted and answer
    /// `RESPONSE_SLURM_RC` 1005 (`SLURM_PROTOCOL_VERSION_ERROR`).
    VersionErrorRc,
    /// Treat the header version as not accepted the 25.05+ way: an
    /// unauthenticated `RESPONSE_SLURM_RC` 1007 with version `NO_VAL16`.
    HeaderRejected,
    /// A correctly signed reply whose body is truncated (the node name's
    /// packstr is cut short), so it cannot be unpacked.
    MalformedBody,
    /// A correct reply, signed by [`SlurmdConfig::untrusted_uid`]. When the
    /// shim runs as root it asks munged for a credential of that uid (the
    /// `munge` CLI's `--uid`, which munged grants root only); otherwise it
    /// can only sign as itself, and the client under test must be given
    /// trusted uids that exclude the shim's own.
    WrongSenderUid,
    /// A correct reply whose credential carries the K12 hash of another body.
    BadHash,
    /// Name this job, whatever the table says: one that exists on the
    /// client's node but belongs to another user. On the wire it is just
    /// `Job(id)`; refusing it is the client's business.
    OtherUsersJob(u32),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::Hang => f.write_str("hang"),
            Fault::Slow(d) => write!(f, "slow={}", d.as_millis()),
            Fault::CloseWithoutReply => f.write_str("close"),
            Fault::WrongVersion => f.write_str("wrong-version"),
            Fault::VersionErrorRc => f.write_str("version-error-rc"),
            Fault::HeaderRejected => f.write_str("header-rejected"),
            Fault::MalformedBody => f.write_str("malformed-body"),
            Fault::WrongSenderUid => f.write_str("wrong-uid"),
            Fault::BadHash => f.write_str("bad-hash"),
            Fault::OtherUsersJob(job) => write!(f, "other-users-job={job}"),
        }
    }
}

/// A fault name not in the list, or a bad `slow=` / `other-users-job=` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault {0:?} (expected none, hang, slow=MS, close, wrong-version, version-error-rc, header-rejected, malformed-body, wrong-uid, bad-hash or other-users-job=JOB)"
)]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownFault(s.to_owned());
        Ok(match s {
            "none" => Fault::None,
            "hang" => Fault::Hang,
            "close" => Fault::CloseWithoutReply,
            "wrong-version" => Fault::WrongVersion,
            "version-error-rc" => Fault::VersionErrorRc,
            "header-rejected" => Fault::HeaderRejected,
            "malformed-body" => Fault::MalformedBody,
            "wrong-uid" => Fault::WrongSenderUid,
            "bad-hash" => Fault::BadHash,
            other => {
                if let Some(ms) = other.strip_prefix("slow=") {
                    Fault::Slow(Duration::from_millis(ms.parse().map_err(|_| unknown())?))
                } else if let Some(job) = other.strip_prefix("other-users-job=") {
                    Fault::OtherUsersJob(job.parse().map_err(|_| unknown())?)
                } else {
                    return Err(unknown());
                }
            }
        })
    }
}

/// How the shim starts; everything but the munge socket can be changed
/// later through [`SlurmdShim`]'s setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmdConfig {
    /// munged's socket, for decoding requests and signing replies.
    pub munge_socket: PathBuf,
    /// The answer for a connection without an entry in `answers`.
    pub default_answer: Answer,
    /// Answers by the request's (client, server) addresses.
    pub answers: HashMap<(SocketAddr, SocketAddr), Answer>,
    /// The fault of every connection once `fault_queue` is empty.
    pub fault: Fault,
    /// Faults for the next connections, one each, in order.
    pub fault_queue: VecDeque<Fault>,
    /// Header versions accepted; `None` accepts every supported one.
    pub accepted_versions: Option<Vec<u16>>,
    /// How a version outside `accepted_versions` is refused.
    pub rejection: Rejection,
    /// The NodeName put in replies.
    pub node_name: String,
    /// Who [`Fault::WrongSenderUid`] signs as (when running as root).
    pub untrusted_uid: u32,
}

impl SlurmdConfig {
    /// Answers "not found" to everything, in every version, without faults.
    pub fn new(munge_socket: impl Into<PathBuf>) -> SlurmdConfig {
        SlurmdConfig {
            munge_socket: munge_socket.into(),
            default_answer: Answer::NotFound,
            answers: HashMap::new(),
            fault: Fault::None,
            fault_queue: VecDeque::new(),
            accepted_versions: None,
            rejection: Rejection::ClosedWithoutReply,
            node_name: "shim".to_owned(),
            untrusted_uid: DEFAULT_UNTRUSTED_UID,
        }
    }

    pub fn answer(mut self, answer: Answer) -> SlurmdConfig {
        self.default_answer = answer;
        self
    }

    pub fn fault(mut self, fault: Fault) -> SlurmdConfig {
        self.fault = fault;
        self
    }

    /// Accept what slurmd `version` accepts (its own release and the two
    /// before it, three from 24.11 on) and refuse the rest as that release
    /// does: closed before 25.05, header-rejected from 25.05.
    pub fn like_release(mut self, version: u16) -> SlurmdConfig {
        self.accepted_versions = Some(accepted_by(version));
        self.rejection = if version >= 0x2B00 {
            Rejection::HeaderRejected
        } else {
            Rejection::ClosedWithoutReply
        };
        self
    }
}

/// The header versions slurmd `version` accepts (slurm-protocol.md §0).
pub fn accepted_by(version: u16) -> Vec<u16> {
    let back: u16 = if version >= 0x2A00 { 3 } else { 2 };
    (0..=back)
        .filter_map(|i| version.checked_sub(i * 0x100))
        .collect()
}

/// One request as the shim received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// When the frame could be decoded; 0 otherwise.
    pub version: u16,
    pub msg_type: u16,
    /// The decoded callerid body, when it decodes.
    pub request: Option<CallerIdRequest>,
    /// The uid munged vouched for, when the credential decoded.
    pub sender_uid: Option<u32>,
    /// Why the request was refused before its fault applied.
    pub refused: Option<String>,
    /// The fault this connection got.
    pub fault: Fault,
}

#[derive(Debug)]
struct State {
    default_answer: Answer,
    answers: HashMap<(SocketAddr, SocketAddr), Answer>,
    fault: Fault,
    fault_queue: VecDeque<Fault>,
    accepted_versions: Option<Vec<u16>>,
    rejection: Rejection,
}

#[derive(Debug, Default)]
struct Journal {
    seen: Vec<SeenRequest>,
    /// Failures of the shim itself (munged unreachable, ...).
    errors: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    munge: MungeContext,
    node_name: String,
    untrusted_uid: u32,
    state: Mutex<State>,
    journal: Mutex<Journal>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        // A panicking connection thread must not hide what was recorded.
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, message: String) {
        self.journal().errors.push(message);
    }
}

/// A fake slurmd serving callerid on a TCP address until dropped.
#[derive(Debug)]
pub struct SlurmdShim {
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl SlurmdShim {
    /// Binds `listen` (port 0 picks a free port, see [`Self::local_addr`])
    /// and starts serving; the port accepts connections when this returns.
    pub fn start(listen: impl ToSocketAddrs, config: SlurmdConfig) -> io::Result<SlurmdShim> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            munge: MungeContext::with_socket(config.munge_socket),
            node_name: config.node_name,
            untrusted_uid: config.untrusted_uid,
            state: Mutex::new(State {
                default_answer: config.default_answer,
                answers: config.answers,
                fault: config.fault,
                fault_queue: config.fault_queue,
                accepted_versions: config.accepted_versions,
                rejection: config.rejection,
            }),
            journal: Mutex::new(Journal::default()),
            connections: Mutex::new(Vec::new()),
        });
        let loop_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name(format!("slurmd-shim {addr}"))
            .spawn(move || accept_loop(&listener, &loop_shared))?;
        Ok(SlurmdShim {
            shared,
            listener: Some(handle),
            addr,
        })
    }

    /// The address the shim listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The answer for requests without an entry of their own.
    pub fn set_default_answer(&self, answer: Answer) {
        self.shared.state().default_answer = answer;
    }

    /// The answer for requests about this (client, server) connection.
    pub fn set_answer(&self, client: SocketAddr, server: SocketAddr, answer: Answer) {
        self.shared.state().answers.insert((client, server), answer);
    }

    /// The fault of every connection once the queue is empty.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.state().fault = fault;
    }

    /// Faults for the next connections, one each, after those queued before.
    pub fn queue_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.state().fault_queue.extend(faults);
    }

    /// Accept only these header versions (`None`: all), refusing others so.
    pub fn set_accepted_versions(&self, versions: Option<Vec<u16>>, rejection: Rejection) {
        let mut state = self.shared.state();
        state.accepted_versions = versions;
        state.rejection = rejection;
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.journal().seen.clone()
    }

    /// Forget the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.journal().seen.clear();
    }

    /// The shim's own failures (munged unreachable, `munge` CLI missing):
    /// a test that sees any of these is not testing what it thinks.
    pub fn errors(&self) -> Vec<String> {
        self.shared.journal().errors.clone()
    }
}

impl Drop for SlurmdShim {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.listener.take() {
            let _ = handle.join();
        }
        // The listener is gone, so no connection thread is added any more.
        serve::join_all(&self.shared.connections);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let tick = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE);
    while !shared.stopping() {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, tick).unwrap_or(0) == 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                // E.g. out of fds: do not spin on a listener that stays readable.
                thread::sleep(TICK);
                continue;
            }
        };
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("slurmd-shim connection".to_owned())
            .spawn(move || {
                let mut conn = Connection {
                    stream,
                    shared: &conn_shared,
                };
                conn.serve();
            });
        if let Ok(handle) = spawned {
            let mut connections = shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            connections.retain(|h| !h.is_finished());
            connections.push(handle);
        }
    }
}

/// Why a request's credential is not acceptable, or the sender's uid.
fn check_credential(munge: &MungeContext, msg: &Message) -> Result<u32, String> {
    let Some(cred) = &msg.credential else {
        return Err("the request carries no munge credential".to_owned());
    };
    let decoded = munge
        .decode(cred)
        .map_err(|e| format!("credential refused: {e}"))?;
    let msg_type = msg.header.msg_type;
    let payload = decoded.payload.as_slice();
    // What slurmd accepts without block_null_hash / block_zero_hash.
    let none_hash = [
        HASH_PLUGIN_NONE,
        msg_type.to_be_bytes()[0],
        msg_type.to_be_bytes()[1],
    ];
    if payload.is_empty()
        || payload == none_hash
        || payload == body_hash(msg_type, &msg.body).as_slice()
    {
        Ok(decoded.uid)
    } else {
        Err(format!(
            "credential payload ({} bytes) does not hash the body",
            payload.len()
        ))
    }
}

/// One client connection. Helpers return `false` (or `None`) when the
/// connection is over: peer gone, error, or shim stopping.
struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
}

impl Connection<'_> {
    fn serve(&mut self) {
        if self.stream.set_nonblocking(false).is_err()
            || self.stream.set_read_timeout(Some(TICK)).is_err()
            || self.stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            return;
        }
        let _ = self.stream.set_nodelay(true);
        let (fault, accepted, rejection) = {
            let mut state = self.shared.state();
            let fault = state
                .fault_queue
                .pop_front()
                .unwrap_or_else(|| state.fault.clone());
            (fault, state.accepted_versions.clone(), state.rejection)
        };
        let Some(frame) = self.read_frame() else {
            return;
        };
        let mut seen = SeenRequest {
            version: 0,
            msg_type: 0,
            request: None,
            sender_uid: None,
            refused: None,
            fault: fault.clone(),
        };
        let msg = match decode_message(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                // Real slurmds answer or drop depending on what broke; a
                // client never gets anything useful either way.
                seen.refused = Some(format!("undecodable frame: {e}"));
                self.record(seen);
                return;
            }
        };
        let version = msg.header.version;
        seen.version = version;
        seen.msg_type = msg.header.msg_type;
        seen.request = decode_callerid_request(&msg.body).ok();

        // The version is judged first: a slurmd cannot read the rest of a
        // header it does not know, credential included.
        let refusal = match &fault {
            Fault::WrongVersion => Some(Rejection::ClosedWithoutReply),
            Fault::VersionErrorRc => Some(Rejection::VersionErrorRc),
            Fault::HeaderRejected => Some(Rejection::HeaderRejected),
            _ => accepted
                .filter(|versions| !versions.contains(&version))
                .map(|_| rejection),
        };
        if let Some(how) = refusal {
            seen.refused = Some(format!("version {version:#06x} not accepted: {how}"));
            self.record(seen);
            self.refuse_version(version, how);
            return;
        }

        let uid = match check_credential(&self.shared.munge, &msg) {
            Ok(uid) => uid,
            Err(why) => {
                seen.refused = Some(why);
                self.record(seen);
                self.send_rc(version, SLURM_PROTOCOL_AUTHENTICATION_ERROR, None);
                return;
            }
        };
        seen.sender_uid = Some(uid);
        if msg.header.msg_type != REQUEST_NETWORK_CALLERID {
            seen.refused = Some(format!(
                "message type {} is not served",
                msg.header.msg_type
            ));
            self.record(seen);
            self.send_rc(version, SLURM_UNEXPECTED_MSG_ERROR, Some(uid));
            return;
        }
        let Some(request) = seen.request else {
            seen.refused = Some("the callerid body does not unpack".to_owned());
            self.record(seen);
            self.send_rc(version, SLURM_ERROR, Some(uid));
            return;
        };
        self.record(seen);

        let answer = match fault {
            Fault::OtherUsersJob(job) => Answer::Job(job),
            _ => {
                let state = self.shared.state();
                state
                    .answers
                    .get(&(request.client, request.server))
                    .copied()
                    .unwrap_or(state.default_answer)
            }
        };
        let body = self.answer_body(version, answer);
        let reply = match fault {
            Fault::Hang => return serve::hang(&mut self.stream, || self.shared.stopping()),
            Fault::CloseWithoutReply => return,
            Fault::Slow(delay) => {
                if !serve::pause(delay, || self.shared.stopping()) {
                    return;
                }
                self.signed(version, RESPONSE_NETWORK_CALLERID, &body, &body, uid)
            }
            Fault::MalformedBody => {
                // Cut into the node name's packstr: the length says more
                // bytes than follow.
                let cut = &body[..body.len().saturating_sub(2)];
                self.signed(version, RESPONSE_NETWORK_CALLERID, cut, cut, uid)
            }
            Fault::BadHash => {
                let other = match answer {
                    Answer::Job(job) => Answer::Job(job.wrapping_add(1)),
                    Answer::NotFound => Answer::Job(1),
                };
                let hashed = self.answer_body(version, other);
                self.signed(version, RESPONSE_NETWORK_CALLERID, &body, &hashed, uid)
            }
            Fault::WrongSenderUid => self.signed_as_untrusted(version, &body, uid),
            _ => self.signed(version, RESPONSE_NETWORK_CALLERID, &body, &body, uid),
        };
        if let Some(reply) = reply {
            self.write(&reply);
        }
    }

    fn record(&self, seen: SeenRequest) {
        self.shared.journal().seen.push(seen);
    }

    fn answer_body(&self, version: u16, answer: Answer) -> Vec<u8> {
        let (job_id, step_id) = match answer {
            Answer::Job(job) => (job, EXTERN_STEP_ID),
            Answer::NotFound => (NO_VAL, NO_VAL),
        };
        let step_layout = version >= 0x2C00;
        let response = CallerIdResponse {
            sluid: step_layout.then_some(0),
            job_id,
            step_id: step_layout.then_some(step_id),
            step_het_comp: step_layout.then_some(NO_VAL),
            return_code: 0,
            node_name: Some(self.shared.node_name.clone()),
        };
        encode_callerid_response(version, &response).unwrap_or_else(|e| {
            self.shared
                .error(format!("cannot encode the reply body: {e}"));
            Vec::new()
        })
    }

    /// A message signed through our munged: the credential carries the K12
    /// hash of `hashed` (normally `body` itself), for `restrict_uid` only.
    fn signed(
        &self,
        version: u16,
        msg_type: u16,
        body: &[u8],
        hashed: &[u8],
        restrict_uid: u32,
    ) -> Option<Vec<u8>> {
        let cred = match self
            .shared
            .munge
            .encode_for(&body_hash(msg_type, hashed), Some(restrict_uid))
        {
            Ok(cred) => cred,
            Err(e) => {
                self.shared.error(format!("cannot sign the reply: {e}"));
                return None;
            }
        };
        self.frame(&Header::request(version, msg_type), Some(&cred), body)
    }

    /// A correct callerid reply signed by the untrusted uid (as root), or
    /// by ourselves when we cannot do that (see [`Fault::WrongSenderUid`]).
    fn signed_as_untrusted(&self, version: u16, body: &[u8], restrict_uid: u32) -> Option<Vec<u8>> {
        if !nix::unistd::geteuid().is_root() {
            return self.signed(version, RESPONSE_NETWORK_CALLERID, body, body, restrict_uid);
        }
        let payload = body_hash(RESPONSE_NETWORK_CALLERID, body);
        let cred = match munge_cli_as(
            self.shared.munge.socket(),
            self.shared.untrusted_uid,
            restrict_uid,
            &payload,
        ) {
            Ok(cred) => cred,
            Err(e) => {
                self.shared.error(format!(
                    "cannot sign as uid {}: {e}",
                    self.shared.untrusted_uid
                ));
                return None;
            }
        };
        self.frame(
            &Header::request(version, RESPONSE_NETWORK_CALLERID),
            Some(&cred),
            body,
        )
    }

    fn frame(&self, header: &Header, cred: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
        match encode_message(header, cred, body) {
            Ok(frame) => Some(frame),
            Err(e) => {
                self.shared.error(format!("cannot frame the reply: {e}"));
                None
            }
        }
    }

    /// `RESPONSE_SLURM_RC`, signed (unrestricted when the sender is unknown).
    fn send_rc(&mut self, version: u16, rc: u32, restrict_uid: Option<u32>) {
        let body = encode_rc(rc);
        let cred = match self
            .shared
            .munge
            .encode_for(&body_hash(RESPONSE_SLURM_RC, &body), restrict_uid)
        {
            Ok(cred) => cred,
            Err(e) => {
                self.shared.error(format!("cannot sign an rc reply: {e}"));
                return;
            }
        };
        if let Some(reply) = self.frame(
            &Header::request(version, RESPONSE_SLURM_RC),
            Some(&cred),
            &body,
        ) {
            self.write(&reply);
        }
    }

    fn refuse_version(&mut self, version: u16, how: Rejection) {
        match how {
            Rejection::ClosedWithoutReply => {}
            Rejection::VersionErrorRc => {
                self.send_rc(version, SLURM_PROTOCOL_VERSION_ERROR, None);
            }
            Rejection::HeaderRejected => {
                // 25.05+: built without the sender's version or auth, from
                // the connection's address.
                let mut header = Header::request(NO_VAL16, RESPONSE_SLURM_RC);
                header.flags = SLURM_NO_AUTH_CRED;
                header.orig_addr = match self.stream.local_addr() {
                    Ok(SocketAddr::V4(a)) => OrigAddr::V4(a),
                    Ok(SocketAddr::V6(a)) => OrigAddr::V6(a),
                    Err(_) => OrigAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
                };
                let body = encode_rc(SLURM_PROTOCOL_AUTHENTICATION_ERROR);
                if let Some(reply) = self.frame(&header, None, &body) {
                    self.write(&reply);
                }
            }
        }
    }

    /// The request frame without its length prefix, or `None` if the peer
    /// leaves, sends an absurd length, or the shim stops.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        if !self.read_exact(&mut len) {
            return None;
        }
        let len = u32::from_be_bytes(len);
        if len > MAX_FRAME_LEN {
            self.shared
                .error(format!("a request announced {len} bytes; dropped"));
            return None;
        }
        let mut frame = vec![0u8; usize::try_from(len).ok()?];
        self.read_exact(&mut frame).then_some(frame)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> bool {
        let mut got = 0;
        while got < buf.len() {
            let Some(rest) = buf.get_mut(got..) else {
                return false;
            };
            match self.stream.read(rest) {
                Ok(0) => return false,
                Ok(n) => got += n,
                Err(e) if serve::is_tick(&e) && !self.shared.stopping() => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn write(&mut self, bytes: &[u8]) {
        // A client that already gave up is fine: nothing to report.
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }
}

/// A credential of `uid` (and its gid, the same number) carrying `payload`,
/// decodable only by `restrict_uid`: munged lets root name the uid, through
/// the `munge` CLI's `--uid`/`--gid` (libmunge has no such option).
fn munge_cli_as(
    socket: Option<&Path>,
    uid: u32,
    restrict_uid: u32,
    payload: &[u8],
) -> Result<String, String> {
    let munge = crate::munged::find_program("munge")
        .ok_or("the `munge` CLI is not installed (Debian's `munge` package)")?;
    let mut cmd = Command::new(munge);
    if let Some(socket) = socket {
        cmd.arg("--socket").arg(socket);
    }
    let mut child = cmd
        .arg("--uid")
        .arg(uid.to_string())
        .arg("--gid")
        .arg(uid.to_string())
        .arg("--restrict-uid")
        .arg(restrict_uid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run munge: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(payload)
            .map_err(|e| format!("cannot feed munge: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("munge did not finish: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "munge failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let cred = String::from_utf8(out.stdout).map_err(|_| "munge wrote non-text".to_owned())?;
    Ok(cred.trim().to_owned())
}
