//! A native client for munged: encode and decode credentials over its unix
//! socket, without libmunge.
//!
//! libmunge retries a silent munged for about ten seconds whatever its
//! caller's budget; this client bounds every connect, write and read by the
//! deadline it is given ([`transport`]), and keeps the wire format in a
//! socket-free codec ([`codec`]). Each call is one connection, as with
//! libmunge, so nothing is shared between threads.

pub mod codec;
pub mod transport;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use transport::TransportError;

/// munged's compiled-in socket on Debian and upstream.
pub const DEFAULT_SOCKET: &str = "/run/munge/munge.socket.2";

/// The budget of the calls that take no deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `EMUNGE_SOCKET` and `EMUNGE_TIMEOUT` in munge.h, for transport failures.
pub const EMUNGE_SOCKET: i32 = 6;
pub const EMUNGE_TIMEOUT: i32 = 7;
/// `EMUNGE_BAD_LENGTH`: a request too large for the protocol.
const EMUNGE_BAD_LENGTH: i32 = 3;

/// Which munged socket an operation used, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketName(pub Option<PathBuf>);

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{}", p.display()),
            None => write!(f, "the default munged socket {DEFAULT_SOCKET}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MungeError {
    #[error("munge socket path {path:?} contains a NUL byte")]
    InvalidSocketPath { path: PathBuf },
    #[error("munge payload of {len} bytes is too large")]
    PayloadTooLarge { len: usize },
    #[error("munge credential contains a NUL byte")]
    CredentialNul,
    /// `code` is munged's `munge_err_t`, or 6 (socket) / 7 (timeout) when
    /// the failure was reaching munged.
    #[error("munge encode via {socket}: {message} (munge error {code})")]
    Encode {
        socket: SocketName,
        code: i32,
        message: String,
    },
    #[error("munge encode via {socket} returned a credential that is not text")]
    EncodeOutput { socket: SocketName },
    #[error("munge decode via {socket}: {message} (munge error {code})")]
    Decode {
        socket: SocketName,
        code: i32,
        message: String,
    },
}

impl MungeError {
    /// True when munged did not answer within the deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Encode {
                code: EMUNGE_TIMEOUT,
                ..
            } | Self::Decode {
                code: EMUNGE_TIMEOUT,
                ..
            }
        )
    }
}

/// What a valid credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The uid of the process that created the credential.
    pub uid: u32,
    pub gid: u32,
    pub payload: Vec<u8>,
}

/// Where to reach munged; cheap to clone and safe to share between threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MungeContext {
    socket: Option<PathBuf>,
}

fn transport_code(e: &TransportError) -> i32 {
    if e.is_timeout() {
        EMUNGE_TIMEOUT
    } else {
        EMUNGE_SOCKET
    }
}

impl MungeContext {
    /// munged's default socket, or `socket` (Slurm's `AuthInfo=socket=`)
    /// when given. Never fails: a bad path is reported by the first call.
    pub fn new(socket: Option<&str>) -> Self {
        Self {
            socket: socket.map(PathBuf::from),
        }
    }

    /// Uses the given munged socket.
    pub fn with_socket(path: impl Into<PathBuf>) -> Self {
        Self {
            socket: Some(path.into()),
        }
    }

    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    fn name(&self) -> SocketName {
        SocketName(self.socket().map(Path::to_path_buf))
    }

    fn path(&self) -> Result<&Path, MungeError> {
        match &self.socket {
            Some(p) if p.as_os_str().as_encoded_bytes().contains(&0) => {
                Err(MungeError::InvalidSocketPath { path: p.clone() })
            }
            Some(p) => Ok(p),
            None => Ok(Path::new(DEFAULT_SOCKET)),
        }
    }

    /// Creates a credential any uid may decode, carrying `payload`.
    pub fn encode(&self, payload: &[u8]) -> Result<String, MungeError> {
        self.encode_by(payload, None, Instant::now() + DEFAULT_TIMEOUT)
    }

    /// Creates a credential carrying `payload`, decodable only by
    /// `restrict_uid` when given (what slurmd does for its replies).
    pub fn encode_for(
        &self,
        payload: &[u8],
        restrict_uid: Option<u32>,
    ) -> Result<String, MungeError> {
        self.encode_by(payload, restrict_uid, Instant::now() + DEFAULT_TIMEOUT)
    }

    /// [`Self::encode_for`], failing with a timeout at `deadline`.
    pub fn encode_by(
        &self,
        payload: &[u8],
        restrict_uid: Option<u32>,
        deadline: Instant,
    ) -> Result<String, MungeError> {
        let path = self.path()?;
        let frame = codec::encode_request(payload, restrict_uid)
            .map_err(|_| MungeError::PayloadTooLarge { len: payload.len() })?;
        let fail = |code: i32, message: String| MungeError::Encode {
            socket: self.name(),
            code,
            message,
        };
        let body = transport::exchange(path, &frame, codec::ENC_RSP, deadline)
            .map_err(|e| fail(transport_code(&e), e.to_string()))?;
        let reply = codec::decode_encode_reply(&body)
            .map_err(|e| fail(EMUNGE_SOCKET, format!("malformed reply: {e}")))?;
        if reply.error != 0 {
            return Err(fail(i32::from(reply.error), reply.message));
        }
        let mut cred = reply.credential;
        while cred.last() == Some(&0) {
            cred.pop();
        }
        String::from_utf8(cred).map_err(|_| MungeError::EncodeOutput {
            socket: self.name(),
        })
    }

    /// Validates a credential and returns who made it and its payload.
    pub fn decode(&self, cred: &str) -> Result<Decoded, MungeError> {
        self.decode_by(cred, Instant::now() + DEFAULT_TIMEOUT)
    }

    /// [`Self::decode`], failing with a timeout at `deadline`.
    pub fn decode_by(&self, cred: &str, deadline: Instant) -> Result<Decoded, MungeError> {
        if cred.contains('\0') {
            return Err(MungeError::CredentialNul);
        }
        let path = self.path()?;
        let fail = |code: i32, message: String| MungeError::Decode {
            socket: self.name(),
            code,
            message,
        };
        let frame =
            codec::decode_request(cred).map_err(|e| fail(EMUNGE_BAD_LENGTH, e.to_string()))?;
        let body = transport::exchange(path, &frame, codec::DEC_RSP, deadline)
            .map_err(|e| fail(transport_code(&e), e.to_string()))?;
        let reply = codec::decode_decode_reply(&body)
            .map_err(|e| fail(EMUNGE_SOCKET, format!("malformed reply: {e}")))?;
        if reply.error != 0 {
            return Err(fail(i32::from(reply.error), reply.message));
        }
        Ok(Decoded {
            uid: reply.cred_uid,
            gid: reply.cred_gid,
            payload: reply.payload,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A private munged in a temp dir, stopped on drop.
    pub(crate) struct TestMunged {
        child: Child,
        dir: tempfile::TempDir,
    }

    fn find(name: &str) -> Option<PathBuf> {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    }

    impl TestMunged {
        /// A private munged for one test. A missing or failing munged is
        /// a panic, not a skip (the README's test command installs it), so
        /// this returns the daemon itself: no caller can skip on `None`.
        pub(crate) fn start() -> Self {
            let munged = find("munged").expect(
                "munged is not installed: install Debian's `munge` package (tests/scripts/install-build-deps.sh does)",
            );
            let dir = tempfile::tempdir().expect("tempdir");
            let key = dir.path().join("munge.key");
            let made = find("mungekey").is_some_and(|mk| {
                Command::new(mk)
                    .arg("-c")
                    .arg("-k")
                    .arg(&key)
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !made {
                use std::os::unix::fs::OpenOptionsExt;
                let mut rng = crate::rpc::pack::tests::Rng::new(std::process::id().into());
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &rng.bytes(1024)))
                    .expect("write munge key");
            }
            let d = dir.path();
            // -F keeps munged in the foreground, so `child` *is* the daemon
            // and can be stopped; plain -f is --force and would fork away.
            let mut cmd = Command::new(munged);
            // SAFETY: the hook runs in the forked child before exec and only
            // makes one prctl call, which is async-signal-safe. It stops a
            // munged left behind if the test process is killed outright.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
            let child = cmd
                .arg("-F")
                .arg(format!("--socket={}", d.join("s").display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--pid-file={}", d.join("p").display()))
                .arg(format!("--log-file={}", d.join("l").display()))
                .arg(format!("--seed-file={}", d.join("seed").display()))
                .arg("--force")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("munged must start: install Debian's `munge` package");
            let mut me = Self { child, dir };
            let until = Instant::now() + Duration::from_secs(10);
            while !me.socket().exists() {
                if let Ok(Some(status)) = me.child.try_wait() {
                    let log = std::fs::read_to_string(me.dir.path().join("l")).unwrap_or_default();
                    panic!("munged exited with {status}: {log}");
                }
                assert!(Instant::now() < until, "munged socket never appeared");
                std::thread::sleep(Duration::from_millis(20));
            }
            me
        }

        pub(crate) fn socket(&self) -> PathBuf {
            self.dir.path().join("s")
        }

        pub(crate) fn context(&self) -> MungeContext {
            MungeContext::with_socket(self.socket())
        }
    }

    impl Drop for TestMunged {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(
                i32::try_from(self.child.id()).expect("a pid fits an i32"),
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn round_trip_through_a_private_munged() {
        let munged = TestMunged::start();
        let ctx = munged.context();
        assert_eq!(ctx.socket(), Some(munged.socket().as_path()));

        let payload: Vec<u8> = (0..=255u8).chain([0, 0, 7]).collect();
        let cred = ctx.encode(&payload).unwrap();
        assert!(cred.starts_with("MUNGE:") && cred.ends_with(':'), "{cred}");
        let d = ctx.decode(&cred).unwrap();
        assert_eq!(d.payload, payload);
        assert_eq!(d.uid, nix::unistd::getuid().as_raw());
        assert_eq!(d.gid, nix::unistd::getgid().as_raw());

        // munged remembers what it decoded.
        let again = ctx.decode(&cred).unwrap_err();
        assert!(
            matches!(again, MungeError::Decode { code: 17, .. }),
            "{again}"
        );

        let empty = ctx.encode(&[]).unwrap();
        assert_eq!(ctx.decode(&empty).unwrap().payload, Vec::<u8>::new());

        // A credential for someone else is refused to us.
        let me = nix::unistd::getuid().as_raw();
        let other = ctx.encode_for(b"x", Some(me.wrapping_add(4242))).unwrap();
        let e = ctx.decode(&other).unwrap_err();
        assert!(matches!(e, MungeError::Decode { code: 18, .. }), "{e}");
        let mine = ctx.encode_for(b"x", Some(me)).unwrap();
        assert_eq!(ctx.decode(&mine).unwrap().payload, b"x");

        let mut tampered = ctx.encode(b"y").unwrap().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let e = ctx
            .decode(std::str::from_utf8(&tampered).unwrap())
            .unwrap_err();
        assert!(matches!(e, MungeError::Decode { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&munged.socket().display().to_string())
        );

        assert_eq!(ctx.decode("a\0b"), Err(MungeError::CredentialNul));
        assert!(matches!(
            ctx.decode("garbage"),
            Err(MungeError::Decode { .. })
        ));
    }

    #[test]
    fn missing_socket_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let ctx = MungeContext::with_socket(&path);
        let started = Instant::now();
        let e = ctx.encode(b"x").unwrap_err();
        assert!(matches!(e, MungeError::Encode { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        eprintln!(
            "munge_encode on a missing socket failed after {:?}",
            started.elapsed()
        );

        let nul = MungeContext::new(Some("/a\0b"));
        assert!(matches!(
            nul.encode(b"x"),
            Err(MungeError::InvalidSocketPath { .. })
        ));
        assert_eq!(MungeContext::new(None).socket(), None);
        assert_eq!(
            MungeContext::new(Some("/s")).socket(),
            Some(Path::new("/s"))
        );
    }

    #[test]
    fn interoperates_with_the_munge_cli() {
        let munged = TestMunged::start();
        let ctx = munged.context();
        let sock = format!("--socket={}", munged.socket().display());
        let out = Command::new(find("munge").expect("munge CLI"))
            .arg(&sock)
            .arg("-s")
            .arg("from the cli")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let cred = String::from_utf8(out.stdout).unwrap();
        let d = ctx.decode(cred.trim()).unwrap();
        assert_eq!(d.payload, b"from the cli");
        assert_eq!(d.uid, nix::unistd::getuid().as_raw());

        let native = ctx.encode(b"from rust").unwrap();
        let mut child = Command::new(find("unmunge").expect("unmunge CLI"))
            .arg(&sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), native.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("STATUS:") && text.contains("Success"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("from rust"), "{text}");
    }

    /// A munged that accepts and never answers.
    #[test]
    fn a_silent_munged_costs_only_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for s in listener.incoming().take(2) {
                kept.push(s);
            }
            std::thread::sleep(Duration::from_secs(3));
        });
        let ctx = MungeContext::with_socket(&path);
        let budget = Duration::from_millis(500);
        let started = Instant::now();
        let e = ctx.encode_by(b"x", None, started + budget).unwrap_err();
        let took = started.elapsed();
        assert!(e.is_timeout(), "{e}");
        assert!(
            took >= budget && took < budget + Duration::from_millis(200),
            "{took:?}"
        );
        eprintln!("encode against a silent munged gave up after {took:?}: {e}");

        let started = Instant::now();
        let e = ctx.decode_by("MUNGE:x:", started + budget).unwrap_err();
        let took = started.elapsed();
        assert!(
            e.is_timeout() && matches!(e, MungeError::Decode { .. }),
            "{e}"
        );
        assert!(
            took >= budget && took < budget + Duration::from_millis(200),
            "{took:?}"
        );

        // A spent deadline fails at once, without connecting.
        let e = ctx.encode_by(b"x", None, Instant::now()).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        held.join().unwrap();
    }

    /// A SIGSTOPped real munged: the case libmunge waited ten seconds on.
    #[test]
    fn a_stopped_munged_costs_only_the_budget() {
        let munged = TestMunged::start();
        let ctx = munged.context();
        let cred = ctx.encode(b"x").unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(munged.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let budget = Duration::from_millis(1000);
        let started = Instant::now();
        let enc = ctx.encode_by(b"y", None, started + budget);
        let enc_took = started.elapsed();
        let started = Instant::now();
        let dec = ctx.decode_by(&cred, started + budget);
        let dec_took = started.elapsed();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        eprintln!("stopped munged: encode {enc_took:?}, decode {dec_took:?}");
        assert!(enc.unwrap_err().is_timeout());
        assert!(dec.unwrap_err().is_timeout());
        assert!(
            enc_took < budget + Duration::from_millis(200),
            "{enc_took:?}"
        );
        assert!(
            dec_took < budget + Duration::from_millis(200),
            "{dec_took:?}"
        );
    }
}
