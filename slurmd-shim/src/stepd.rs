//! A stand-in for the slurmstepd unix sockets in SlurmdSpoolDir.
//!
//! Each [`FakeStep`] gets a socket named as a real stepd names it and is
//! answered the way a stepd of its `protocol_version` answers, including the
//! version-specific corners clients trip over: request 28 is unknown before
//! 25.11 (the connection is closed), and from 25.11 request 26 gets no reply
//! at all when there is no namespace. A [`Fault`] makes it misbehave.
//!
//! The request codes are written out here from the protocol reference, not
//! taken from `slurm_node::stepd`, so a wrong constant in the client shows
//! up as a failing test instead of agreeing with itself.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, Permissions};
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::serve::{self, TICK};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, ControlMessage, MsgFlags, UnixAddr};

pub use slurm_node::stepd::{BATCH_STEP_ID, EXTERN_STEP_ID};

/// `CLONE_NEWNS`: the type the shim gives its one namespace fd.
pub const NS_TYPE_MOUNT: i32 = 0x0002_0000;
/// 22.05, the default for a fake step.
pub const DEFAULT_PROTOCOL_VERSION: u32 = 0x2600;
/// What [`Fault::WrongVersion`] answers: older than any stepd a client supports.
pub const WRONG_VERSION: u32 = 0x1000;
/// 25.11: GET_NS_FDS exists, and GET_NS_FD stays silent without a namespace.
const NS_FDS_VERSION: u32 = 0x2C00;
/// 24.11: stepds accept four releases of clients instead of three.
const WIDER_WINDOW_VERSION: u32 = 0x2A00;

const REQUEST_STATE: i32 = 5;
const REQUEST_DAEMON_PID: i32 = 9;
const REQUEST_STEP_TASK_INFO: i32 = 14;
const REQUEST_STEP_LIST_PIDS: i32 = 15;
const REQUEST_STEP_UID: i32 = 20;
const REQUEST_ADD_EXTERN_PID: i32 = 22;
const REQUEST_X11_DISPLAY: i32 = 23;
const REQUEST_GET_NS_FD: i32 = 26;
const REQUEST_GET_NS_FDS: i32 = 28;

/// A client that stops reading must not pin a shim thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a fake stepd misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Reads the client's version and never answers.
    HangBeforeHandshakeReply,
    /// Handshake fine, then reads requests and never answers them.
    HangOnRequest,
    /// Handshake fine, closes on the first request without a reply.
    CloseWithoutReply,
    /// Answers the handshake with -1 and closes.
    RejectHandshake,
    /// Answers the handshake with [`WRONG_VERSION`].
    WrongVersion,
    /// Answers requests with short or nonsensical bytes, then closes: 3
    /// bytes for an int, an xauthority length of 1 GiB, a namespace count
    /// of a million, an fd message without the fd.
    Garbage,
    /// Waits this long before each reply, the handshake's included.
    Slow(Duration),
    /// ADD_EXTERN_PID answers rc -1 (what stepds before 25.11 send to an
    /// unprivileged peer).
    RejectAddPid,
    /// ADD_EXTERN_PID closes without reading the pid or replying, as
    /// 24.11.6+ stepds do when the step is being cancelled.
    CloseOnAddPid,
    /// Adopts, then answers X11_DISPLAY with an xauthority length of 1 GiB
    /// and closes: a stepd that breaks after the login is in the job.
    BadX11,
    /// Replies whose length or count promises more than follows, then a
    /// close: X11_DISPLAY a 64-byte xauthority of which 8 bytes come,
    /// GET_NS_FDS two namespaces of which one type comes, GET_NS_FD the
    /// fd number without the fd, STEP_LIST_PIDS four pids of which one.
    /// The handshake, STEP_UID and ADD_EXTERN_PID are answered well.
    Truncated,
    /// Lengths and counts beyond any sane bound (`i32::MAX`), with the
    /// connection then held open and silent: a client that believed the
    /// length would wait out its deadline instead of refusing at once.
    /// X11_DISPLAY, GET_NS_FDS and STEP_LIST_PIDS; the rest answered well.
    Oversize,
    /// The namespace request answered with more descriptors than
    /// announced: the namespace (the step's, or the shim's own mount
    /// namespace) plus /dev/null and a pipe's read end, in one SCM_RIGHTS
    /// message.
    ExtraFds,
    /// Answers the handshake and STEP_UID, reads ADD_EXTERN_PID's pid and
    /// never replies: a stepd that wedges in the adoption itself.
    HangOnAddPid,
    /// Adopts, then answers X11_DISPLAY with the display and a 32-byte
    /// xauthority length and never sends the path: silence mid-reply.
    HangOnX11,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("none"),
            Fault::HangBeforeHandshakeReply => f.write_str("hang-handshake"),
            Fault::HangOnRequest => f.write_str("hang"),
            Fault::CloseWithoutReply => f.write_str("close"),
            Fault::RejectHandshake => f.write_str("reject-handshake"),
            Fault::WrongVersion => f.write_str("wrong-version"),
            Fault::Garbage => f.write_str("garbage"),
            Fault::Slow(d) => write!(f, "slow={}", d.as_millis()),
            Fault::RejectAddPid => f.write_str("reject-add-pid"),
            Fault::CloseOnAddPid => f.write_str("close-on-add-pid"),
            Fault::BadX11 => f.write_str("bad-x11"),
            Fault::Truncated => f.write_str("truncated"),
            Fault::Oversize => f.write_str("oversize"),
            Fault::ExtraFds => f.write_str("extra-fds"),
            Fault::HangOnAddPid => f.write_str("hang-add-pid"),
            Fault::HangOnX11 => f.write_str("hang-x11"),
        }
    }
}

/// A fault name not in the list, or `slow=` without milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault {0:?} (expected none, hang-handshake, hang, close, reject-handshake, wrong-version, garbage, slow=MS, reject-add-pid, close-on-add-pid, bad-x11, truncated, oversize, extra-fds, hang-add-pid or hang-x11)"
)]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fault = match s {
            "none" => Fault::None,
            "hang-handshake" => Fault::HangBeforeHandshakeReply,
            "hang" => Fault::HangOnRequest,
            "close" => Fault::CloseWithoutReply,
            "reject-handshake" => Fault::RejectHandshake,
            "wrong-version" => Fault::WrongVersion,
            "garbage" => Fault::Garbage,
            "reject-add-pid" => Fault::RejectAddPid,
            "close-on-add-pid" => Fault::CloseOnAddPid,
            "bad-x11" => Fault::BadX11,
            "truncated" => Fault::Truncated,
            "oversize" => Fault::Oversize,
            "extra-fds" => Fault::ExtraFds,
            "hang-add-pid" => Fault::HangOnAddPid,
            "hang-x11" => Fault::HangOnX11,
            other => {
                let ms = other
                    .strip_prefix("slow=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .ok_or_else(|| UnknownFault(other.to_owned()))?;
                Fault::Slow(Duration::from_millis(ms))
            }
        };
        Ok(fault)
    }
}

/// One step the shim pretends to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeStep {
    pub job_id: u32,
    pub step_id: u32,
    /// The uid STEP_UID answers.
    pub uid: u32,
    /// The raw value STATE answers (2 = RUNNING in every version).
    pub state: i32,
    /// The version the handshake answers; it also picks the behaviour of
    /// requests 26 and 28.
    pub protocol_version: u32,
    /// X11_DISPLAY's answer: display number and xauthority path.
    pub x11: Option<(i32, String)>,
    /// A file opened afresh for every namespace request and passed as the
    /// mount namespace fd.
    pub namespace: Option<PathBuf>,
    pub fault: Fault,
}

impl FakeStep {
    /// A healthy, running 22.05 extern step without X11 or namespace.
    pub fn extern_step(job_id: u32, uid: u32) -> FakeStep {
        FakeStep {
            job_id,
            step_id: EXTERN_STEP_ID,
            uid,
            state: 2,
            protocol_version: DEFAULT_PROTOCOL_VERSION,
            x11: None,
            namespace: None,
            fault: Fault::None,
        }
    }

    /// The socket name a stepd of this step uses in the spool dir.
    pub fn socket_name(&self, node_name: &str) -> String {
        format!("{node_name}_{}.{}", self.job_id, self.step_id)
    }
}

/// What clients did, per job id.
#[derive(Debug, Default)]
struct Journal {
    requests: HashMap<u32, Vec<i32>>,
    added_pids: HashMap<u32, Vec<i32>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    journal: Mutex<Journal>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A panicking connection thread must not hide what was recorded.
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fake stepds serving their sockets until dropped.
#[derive(Debug)]
pub struct StepdShim {
    shared: Arc<Shared>,
    listeners: Vec<JoinHandle<()>>,
    sockets: Vec<(u32, u32, PathBuf)>,
}

impl StepdShim {
    /// Bind a socket for each step in `spool_dir` and start serving.
    /// The sockets exist when this returns.
    pub fn start(spool_dir: &Path, node_name: &str, steps: Vec<FakeStep>) -> io::Result<Self> {
        let mut shim = StepdShim {
            shared: Arc::new(Shared::default()),
            listeners: Vec::new(),
            sockets: Vec::new(),
        };
        // On error `shim` drops, which stops and unlinks what was started.
        for step in steps {
            let path = spool_dir.join(step.socket_name(node_name));
            remove_stale_socket(&path)?;
            let listener = UnixListener::bind(&path)?;
            shim.sockets.push((step.job_id, step.step_id, path.clone()));
            // Real stepd sockets are world-connectable; authorisation is per request.
            fs::set_permissions(&path, Permissions::from_mode(0o777))?;
            listener.set_nonblocking(true)?;
            let shared = Arc::clone(&shim.shared);
            let step = Arc::new(step);
            let handle = thread::Builder::new()
                .name(format!("stepd-shim {}", path.display()))
                .spawn(move || accept_loop(&listener, &step, &shared))?;
            shim.listeners.push(handle);
        }
        Ok(shim)
    }

    /// Pids a client added to `job_id`'s steps with ADD_EXTERN_PID and
    /// that were accepted (rc 0), in order.
    pub fn added_pids(&self, job_id: u32) -> Vec<i32> {
        self.shared
            .journal()
            .added_pids
            .get(&job_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Request codes `job_id`'s steps received, in order (not the handshake).
    pub fn requests(&self, job_id: u32) -> Vec<i32> {
        self.shared
            .journal()
            .requests
            .get(&job_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The socket of one step, if the shim serves it.
    pub fn socket_path(&self, job_id: u32, step_id: u32) -> Option<&Path> {
        self.sockets
            .iter()
            .find(|(j, s, _)| *j == job_id && *s == step_id)
            .map(|(_, _, p)| p.as_path())
    }

    /// Every socket the shim serves.
    pub fn socket_paths(&self) -> impl Iterator<Item = &Path> {
        self.sockets.iter().map(|(_, _, p)| p.as_path())
    }
}

impl Drop for StepdShim {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for handle in self.listeners.drain(..) {
            let _ = handle.join();
        }
        // The listeners are gone, so no connection thread is added any more.
        serve::join_all(&self.shared.connections);
        for (_, _, path) in &self.sockets {
            let _ = fs::remove_file(path);
        }
    }
}

/// A socket left behind by an earlier run is replaced, as a restarted
/// stepd would; anything else at that path is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn accept_loop(listener: &UnixListener, step: &Arc<FakeStep>, shared: &Arc<Shared>) {
    let tick = PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE);
    while !shared.stopping() {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, tick).unwrap_or(0) == 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                // E.g. out of fds: do not spin on a listener that stays readable.
                thread::sleep(TICK);
                continue;
            }
        };
        let conn_step = Arc::clone(step);
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("stepd-shim job {}", step.job_id))
            .spawn(move || {
                let mut conn = Connection {
                    stream,
                    step: &conn_step,
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

/// One client connection to one fake stepd. Every helper returns `false`
/// (or `None`) when the connection is over: peer gone, error, or shim stopping.
struct Connection<'a> {
    stream: UnixStream,
    step: &'a FakeStep,
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
        let Some(client_version) = self.read_i32() else {
            return;
        };
        match self.step.fault {
            Fault::HangBeforeHandshakeReply => {
                return serve::hang(&mut self.stream, || self.shared.stopping());
            }
            Fault::RejectHandshake => {
                self.write_ints(&[-1]);
                return;
            }
            Fault::Slow(delay) if !serve::pause(delay, || self.shared.stopping()) => return,
            _ => {}
        }
        if !self.accepts_client(client_version) {
            self.write_ints(&[-1]);
            return;
        }
        let version = match self.step.fault {
            Fault::WrongVersion => WRONG_VERSION,
            _ => self.step.protocol_version,
        };
        if !self.write_ints(&[as_int(version)]) {
            return;
        }
        while let Some(request) = self.read_i32() {
            self.shared
                .journal()
                .requests
                .entry(self.step.job_id)
                .or_default()
                .push(request);
            match self.step.fault {
                Fault::HangOnRequest => {
                    return serve::hang(&mut self.stream, || self.shared.stopping());
                }
                Fault::CloseWithoutReply => return,
                Fault::Garbage => {
                    self.garbage(request);
                    return;
                }
                Fault::Slow(delay) if !serve::pause(delay, || self.shared.stopping()) => {
                    return;
                }
                _ => {}
            }
            if !self.answer(request) {
                return;
            }
        }
    }

    /// A stepd takes any client at or above its oldest supported release:
    /// two releases back before 24.11, three from then on.
    fn accepts_client(&self, client_version: i32) -> bool {
        let own = self.step.protocol_version;
        let window = if own >= WIDER_WINDOW_VERSION {
            0x300
        } else {
            0x200
        };
        u32::try_from(client_version).is_ok_and(|v| v >= own.saturating_sub(window))
    }

    /// Answer one request as a healthy stepd (or as a length fault has
    /// it); `false` ends the connection.
    fn answer(&mut self, request: i32) -> bool {
        let step = self.step;
        match step.fault {
            Fault::Truncated => {
                if let Some(keep_open) = self.truncated(request) {
                    return keep_open;
                }
            }
            Fault::Oversize => {
                if let Some(keep_open) = self.oversize(request) {
                    return keep_open;
                }
            }
            _ => {}
        }
        match request {
            REQUEST_STATE => self.write_ints(&[step.state]),
            REQUEST_DAEMON_PID => self.write_ints(&[as_int(std::process::id())]),
            REQUEST_STEP_UID => self.write_bytes(&step.uid.to_ne_bytes()),
            // No tasks: `scontrol listpids` asks this before LIST_PIDS.
            REQUEST_STEP_TASK_INFO => self.write_ints(&[0]),
            // One pid, the shim's own, so `scontrol listpids` has a real
            // process to hand to `ps` for every step.
            REQUEST_STEP_LIST_PIDS => {
                let mut reply = 1u32.to_ne_bytes().to_vec();
                reply.extend(std::process::id().to_ne_bytes());
                self.write_bytes(&reply)
            }
            REQUEST_ADD_EXTERN_PID => self.add_extern_pid(),
            REQUEST_X11_DISPLAY => self.x11_display(),
            REQUEST_GET_NS_FD => self.get_ns_fd(),
            REQUEST_GET_NS_FDS if step.protocol_version >= NS_FDS_VERSION => self.get_ns_fds(),
            // What a stepd does with a request it does not know.
            _ => false,
        }
    }

    fn add_extern_pid(&mut self) -> bool {
        if self.step.fault == Fault::CloseOnAddPid {
            return false;
        }
        let Some(pid) = self.read_i32() else {
            return false;
        };
        if self.step.fault == Fault::HangOnAddPid {
            serve::hang(&mut self.stream, || self.shared.stopping());
            return false;
        }
        let refused = self.step.fault == Fault::RejectAddPid || self.step.step_id != EXTERN_STEP_ID;
        if refused {
            return self.write_ints(&[-1]);
        }
        self.shared
            .journal()
            .added_pids
            .entry(self.step.job_id)
            .or_default()
            .push(pid);
        self.write_ints(&[0])
    }

    fn x11_display(&mut self) -> bool {
        if self.step.fault == Fault::BadX11 {
            self.write_ints(&[1, 1 << 30]);
            return false;
        }
        if self.step.fault == Fault::HangOnX11 {
            if self.write_ints(&[10, 32]) {
                serve::hang(&mut self.stream, || self.shared.stopping());
            }
            return false;
        }
        let Some((display, path)) = &self.step.x11 else {
            return self.write_ints(&[0, 0]);
        };
        let mut reply = Vec::new();
        let mut xauthority = path.as_bytes().to_vec();
        if !xauthority.is_empty() {
            xauthority.push(0);
        }
        reply.extend(display.to_ne_bytes());
        reply.extend(as_int(xauthority.len()).to_ne_bytes());
        reply.extend(xauthority);
        self.write_bytes(&reply)
    }

    /// Request 26. Before 25.11: -1 / 0 / fd number then the fd. From
    /// 25.11: the fd number and fd for a mount namespace, else nothing at
    /// all while the connection stays open.
    fn get_ns_fd(&mut self) -> bool {
        if self.step.fault == Fault::ExtraFds {
            return self.extra_fds(false);
        }
        let silent_without_ns = self.step.protocol_version >= NS_FDS_VERSION;
        let Some(path) = &self.step.namespace else {
            return silent_without_ns || self.write_ints(&[0]);
        };
        match open_namespace(path) {
            Ok(file) => self.write_ints(&[file.as_raw_fd()]) && self.send_fd(&file),
            Err(_) if silent_without_ns => false,
            Err(_) => self.write_ints(&[-1]),
        }
    }

    /// Request 28 (25.11+): count, then type and fd per namespace; a
    /// failing plugin closes without reply.
    fn get_ns_fds(&mut self) -> bool {
        if self.step.fault == Fault::ExtraFds {
            return self.extra_fds(true);
        }
        let Some(path) = &self.step.namespace else {
            return self.write_ints(&[0]);
        };
        match open_namespace(path) {
            Ok(file) => self.write_ints(&[1, NS_TYPE_MOUNT]) && self.send_fd(&file),
            Err(_) => false,
        }
    }

    fn garbage(&mut self, request: i32) {
        match request {
            REQUEST_X11_DISPLAY => {
                self.write_ints(&[1, 1 << 30]);
            }
            REQUEST_GET_NS_FDS => {
                self.write_ints(&[1_000_000]);
            }
            REQUEST_GET_NS_FD => {
                // Announces an fd, then sends the byte without it.
                let _ = self.write_ints(&[5]) && self.write_bytes(&[0]);
            }
            _ => {
                self.write_bytes(&[0xde, 0xad, 0xbe]);
            }
        }
    }

    /// [`Fault::Truncated`]: `Some` for the requests it spoils (whether
    /// the connection goes on: never), `None` to answer normally.
    fn truncated(&mut self, request: i32) -> Option<bool> {
        match request {
            REQUEST_X11_DISPLAY => {
                let mut reply = Vec::new();
                reply.extend(10i32.to_ne_bytes());
                reply.extend(64i32.to_ne_bytes());
                reply.extend(b"/tmp/.X");
                self.write_bytes(&reply);
            }
            REQUEST_GET_NS_FDS if self.step.protocol_version >= NS_FDS_VERSION => {
                self.write_ints(&[2, NS_TYPE_MOUNT]);
            }
            REQUEST_GET_NS_FD => {
                self.write_ints(&[5]);
            }
            REQUEST_STEP_LIST_PIDS => {
                self.write_ints(&[4, as_int(std::process::id())]);
            }
            _ => return None,
        }
        Some(false)
    }

    /// [`Fault::Oversize`]: `Some` for the requests it spoils, after
    /// holding the connection open until the client leaves; `None` to
    /// answer normally.
    fn oversize(&mut self, request: i32) -> Option<bool> {
        let sent = match request {
            REQUEST_X11_DISPLAY => self.write_ints(&[10, i32::MAX]),
            REQUEST_GET_NS_FDS if self.step.protocol_version >= NS_FDS_VERSION => {
                self.write_ints(&[i32::MAX])
            }
            REQUEST_STEP_LIST_PIDS => self.write_ints(&[-1]),
            _ => return None,
        };
        if sent {
            serve::hang(&mut self.stream, || self.shared.stopping());
        }
        Some(false)
    }

    /// [`Fault::ExtraFds`]: announce one namespace, send three fds.
    fn extra_fds(&mut self, ns_fds_request: bool) -> bool {
        let ns_path = self
            .step
            .namespace
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/ns/mnt"));
        let (Ok(ns), Ok(null), Ok((pipe_read, _pipe_write))) = (
            open_namespace(&ns_path),
            File::open("/dev/null"),
            nix::unistd::pipe(),
        ) else {
            return false;
        };
        let announced = if ns_fds_request {
            self.write_ints(&[1, NS_TYPE_MOUNT])
        } else {
            self.write_ints(&[ns.as_raw_fd()])
        };
        let fds = [ns.as_raw_fd(), null.as_raw_fd(), pipe_read.as_raw_fd()];
        announced && self.send_fds(&fds)
    }

    fn send_fd(&mut self, file: &File) -> bool {
        self.send_fds(&[file.as_raw_fd()])
    }

    fn send_fds(&mut self, fds: &[std::os::fd::RawFd]) -> bool {
        let cmsgs = [ControlMessage::ScmRights(fds)];
        let byte = [0u8];
        let iov = [IoSlice::new(&byte)];
        socket::sendmsg::<UnixAddr>(
            self.stream.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .is_ok_and(|n| n == 1)
    }

    fn read_i32(&mut self) -> Option<i32> {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e) if serve::is_tick(&e) && !self.shared.stopping() => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(i32::from_ne_bytes(buf))
    }

    fn write_ints(&mut self, ints: &[i32]) -> bool {
        let bytes: Vec<u8> = ints.iter().flat_map(|i| i.to_ne_bytes()).collect();
        self.write_bytes(&bytes)
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            // MSG_NOSIGNAL: a client that hung up must not kill the test process.
            match socket::send(self.stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Versions, pids and lengths here are all far below `i32::MAX`.
fn as_int<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

/// Open the file passed as a namespace fd without blocking: a FIFO with no
/// writer (a hostile stepd's fd) opens at once with O_NONBLOCK, as do
/// regular files and devices such as /dev/zero.
fn open_namespace(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}
