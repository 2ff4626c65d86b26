//! The slurmstepd socket protocol without any socket: constants, the
//! request encoders and the value types replies decode to.
//!
//! Everything is native byte order and native `int` size, because the stepd
//! writes its C structs' fields as they sit in memory. The decoders that
//! turn reply bytes into these types are in [`super::decode`].

/// Step id of the extern step (`SLURM_EXTERN_CONT`), the one logins join.
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;
/// Step id of the batch script (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;
/// The version we announce in the handshake: stepds accept any client version >= their minimum.
pub const CLIENT_PROTOCOL_VERSION: u32 = 0x2D00; // 26.05
/// 25.11: the first stepd that answers `REQUEST_GET_NS_FDS`.
pub const NS_FDS_MIN_VERSION: u32 = 0x2C00;
/// 22.05: the oldest stepd this client knows the replies of.
pub const OLDEST_STEPD_VERSION: u32 = 0x2600;
/// 23.11 inserted CANCELLED before ENDING in the step state enum.
pub(crate) const CANCELLED_STATE_VERSION: u32 = 0x2800;

/// An X11 xauthority path is a short file name; anything longer means the
/// stream is out of step, and believing it would let a stepd make us
/// allocate and wait for up to 2 GiB.
pub const MAX_XAUTHORITY_LEN: usize = 4096;
/// Real stepds send at most three (pid, user, mount namespace).
pub const MAX_NAMESPACE_FDS: usize = 8;

// The announced version goes out as a C `int`; its bytes equal the u32's
// only while it is below 2^31, which this checks at compile time.
const _: () = assert!(CLIENT_PROTOCOL_VERSION <= i32::MAX.unsigned_abs());

const REQUEST_STATE: i32 = 5;
const REQUEST_DAEMON_PID: i32 = 9;
const REQUEST_STEP_UID: i32 = 20;
const REQUEST_ADD_EXTERN_PID: i32 = 22;
const REQUEST_X11_DISPLAY: i32 = 23;
const REQUEST_GET_NS_FD: i32 = 26;
const REQUEST_GET_NS_FDS: i32 = 28;

/// Size of a C `int` on the wire.
pub const INT_LEN: usize = 4;

/// The operation names errors carry (`StepdError::*::op`); tests and the
/// shim match on them, so they are part of the interface.
pub mod op {
    pub const CONNECT: &str = "connect";
    pub const HANDSHAKE: &str = "handshake";
    pub const STATE: &str = "state";
    pub const DAEMON_PID: &str = "daemon_pid";
    pub const STEP_UID: &str = "step_uid";
    pub const ADD_EXTERN_PID: &str = "add_extern_pid";
    pub const X11_DISPLAY: &str = "x11_display";
    pub const GET_NS_FD: &str = "get_ns_fd";
    pub const GET_NS_FDS: &str = "get_ns_fds";
}

/// The handshake: our protocol version as one `int`. Built only here, for
/// both the blocking client and the pipelined scan.
pub fn encode_handshake() -> [u8; INT_LEN] {
    CLIENT_PROTOCOL_VERSION.to_ne_bytes()
}

/// One request after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    State,
    DaemonPid,
    StepUid,
    /// The pid to put into the step.
    AddExternPid(i32),
    X11Display,
    GetNsFd,
    GetNsFds,
}

impl Request {
    /// The name errors about this request carry.
    pub fn op(self) -> &'static str {
        match self {
            Request::State => op::STATE,
            Request::DaemonPid => op::DAEMON_PID,
            Request::StepUid => op::STEP_UID,
            Request::AddExternPid(_) => op::ADD_EXTERN_PID,
            Request::X11Display => op::X11_DISPLAY,
            Request::GetNsFd => op::GET_NS_FD,
            Request::GetNsFds => op::GET_NS_FDS,
        }
    }

    /// The request's bytes, to be sent in one write: a stepd that closes
    /// after the request code (ADD_EXTERN_PID on a cancelled step) must not
    /// turn the second half into a write to a closed socket.
    pub fn encode(self) -> Vec<u8> {
        let code = match self {
            Request::State => REQUEST_STATE,
            Request::DaemonPid => REQUEST_DAEMON_PID,
            Request::StepUid => REQUEST_STEP_UID,
            Request::AddExternPid(_) => REQUEST_ADD_EXTERN_PID,
            Request::X11Display => REQUEST_X11_DISPLAY,
            Request::GetNsFd => REQUEST_GET_NS_FD,
            Request::GetNsFds => REQUEST_GET_NS_FDS,
        };
        let mut out = code.to_ne_bytes().to_vec();
        if let Request::AddExternPid(pid) = self {
            out.extend_from_slice(&pid.to_ne_bytes());
        }
        out
    }
}

/// The scan's pipelined request: the handshake, then REQUEST_STEP_UID. The
/// stepd reads the request code only after it has answered the handshake,
/// so both can go in one write.
pub fn encode_handshake_and_step_uid() -> [u8; 2 * INT_LEN] {
    let mut out = [0u8; 2 * INT_LEN];
    let request = Request::StepUid.encode();
    for (dst, src) in out
        .iter_mut()
        .zip(encode_handshake().into_iter().chain(request))
    {
        *dst = src;
    }
    out
}

/// A step's state as the stepd reports it, read with the stepd's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    NotRunning,
    Starting,
    Running,
    /// 23.11 and later: scancel'd, tasks being killed.
    Cancelled,
    Ending,
    Unknown(i32),
}

impl StepState {
    /// Interpret a raw state for a stepd speaking `stepd_version`: the same
    /// number 3 means ENDING before 23.11 and CANCELLED from then on.
    pub fn from_raw(raw: i32, stepd_version: u32) -> StepState {
        let cancelled_exists = stepd_version >= CANCELLED_STATE_VERSION;
        match raw {
            0 => StepState::NotRunning,
            1 => StepState::Starting,
            2 => StepState::Running,
            3 if cancelled_exists => StepState::Cancelled,
            3 => StepState::Ending,
            4 if cancelled_exists => StepState::Ending,
            other => StepState::Unknown(other),
        }
    }
}

/// The extern step's X11 forwarding, if `srun --x11` / `salloc --x11` set one up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X11Display {
    /// 0 means no X11 forwarding.
    pub display: i32,
    pub xauthority: Option<String>,
}

/// A namespace of the job, to be joined with `setns(fd, nstype)`. Generic
/// over the descriptor so the decoders need no real one; the client hands
/// out [`NamespaceFd`](super::NamespaceFd), the `OwnedFd` kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Namespace<F> {
    /// A `CLONE_NEW*` flag, or 0 from stepds before 25.11 (setns then takes
    /// whatever kind of namespace the fd is).
    pub nstype: i32,
    pub fd: F,
}

/// Why reply bytes did not decode. No path: the codec sees no socket, and
/// the transport names it when it turns this into a `StepdError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("stepd closed the connection instead of answering {op}")]
    Closed { op: &'static str },
    #[error("stepd rejected the handshake (reply {reply})")]
    HandshakeRejected { reply: i32 },
    #[error("stepd refused {op} (rc {rc})")]
    Rejected { op: &'static str, rc: i32 },
    #[error("stepd sent a malformed reply to {op}: {detail}")]
    Malformed { op: &'static str, detail: String },
}

/// The stepd's answer to the version we announced: its own version, if we
/// can talk to it.
pub fn check_handshake(reply: i32) -> Result<u32, CodecError> {
    let version = u32::try_from(reply).map_err(|_| CodecError::HandshakeRejected { reply })?;
    // Below 22.05 we do not know the reply layouts, and a bogus version
    // would also pick the wrong state numbering and namespace request.
    if version < OLDEST_STEPD_VERSION {
        return Err(CodecError::Malformed {
            op: op::HANDSHAKE,
            detail: format!(
                "stepd protocol version {version:#x} is older than the oldest supported \
                 ({OLDEST_STEPD_VERSION:#x}, Slurm 22.05)"
            ),
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(words: &[i32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn requests_are_native_ints() {
        let table = [
            (Request::State, ints(&[5]), "state"),
            (Request::DaemonPid, ints(&[9]), "daemon_pid"),
            (Request::StepUid, ints(&[20]), "step_uid"),
            (
                Request::AddExternPid(4242),
                ints(&[22, 4242]),
                "add_extern_pid",
            ),
            (Request::AddExternPid(-1), ints(&[22, -1]), "add_extern_pid"),
            (Request::X11Display, ints(&[23]), "x11_display"),
            (Request::GetNsFd, ints(&[26]), "get_ns_fd"),
            (Request::GetNsFds, ints(&[28]), "get_ns_fds"),
        ];
        for (request, bytes, name) in table {
            assert_eq!(request.encode(), bytes, "{request:?}");
            assert_eq!(request.op(), name);
        }
    }

    #[test]
    fn one_handshake_for_both_paths() {
        assert_eq!(encode_handshake().to_vec(), ints(&[0x2D00]));
        assert_eq!(
            encode_handshake_and_step_uid().to_vec(),
            ints(&[0x2D00, 20])
        );
    }

    #[test]
    fn handshake_replies() {
        let table: [(i32, Result<u32, &str>); 7] = [
            (0x2600, Ok(0x2600)),
            (0x2D00, Ok(0x2D00)),
            (0x7fff_ffff, Ok(0x7fff_ffff)),
            (0x25ff, Err("older than the oldest supported")),
            (0, Err("older than the oldest supported")),
            (-1, Err("rejected the handshake (reply -1)")),
            (i32::MIN, Err("rejected the handshake")),
        ];
        for (reply, want) in table {
            match (check_handshake(reply), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, w),
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{reply}: {e}"),
                (got, want) => panic!("{reply}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn state_numbering_follows_the_stepd_version() {
        let table = [
            (0, 0x2600, StepState::NotRunning),
            (1, 0x2600, StepState::Starting),
            (2, 0x2D00, StepState::Running),
            (3, 0x2600, StepState::Ending),
            (3, 0x2700, StepState::Ending),
            (3, 0x2800, StepState::Cancelled),
            (4, 0x2700, StepState::Unknown(4)),
            (4, 0x2800, StepState::Ending),
            (4, 0x2D00, StepState::Ending),
            (5, 0x2D00, StepState::Unknown(5)),
            (-1, 0x2D00, StepState::Unknown(-1)),
        ];
        for (raw, version, want) in table {
            assert_eq!(
                StepState::from_raw(raw, version),
                want,
                "{raw} at {version:#x}"
            );
        }
    }
}
