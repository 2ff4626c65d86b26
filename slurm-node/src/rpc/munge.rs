//! A minimal hand-written binding to libmunge (munge.h, 0.5.x).
//!
//! Hand-written rather than bindgen'd so the build needs neither libclang nor
//! a build script, and so the `int` lengths are spelled `c_int` (a binding
//! that says `usize` corrupts the stack on 64-bit). This is the only file of
//! the crate with `unsafe`.
//!
//! A fresh munge context is made for each call: libmunge contexts are not
//! thread-safe and `munge_decode` overwrites the one it is given, so a
//! shared one would need a lock and would leak one call's settings into the
//! next. Creating one is a small allocation.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr;

/// `munge_ctx` is opaque; only pointers to it cross the boundary.
#[repr(C)]
struct MungeCtx {
    _opaque: [u8; 0],
}

/// `MUNGE_OPT_SOCKET` in munge.h: the value is a `char *`.
const MUNGE_OPT_SOCKET: c_int = 8;
/// `MUNGE_OPT_UID_RESTRICTION` in munge.h: the value is a `uid_t`.
const MUNGE_OPT_UID_RESTRICTION: c_int = 9;
const EMUNGE_SUCCESS: c_int = 0;

#[link(name = "munge")]
unsafe extern "C" {
    fn munge_ctx_create() -> *mut MungeCtx;
    fn munge_ctx_destroy(ctx: *mut MungeCtx);
    fn munge_ctx_set(ctx: *mut MungeCtx, opt: c_int, ...) -> c_int;
    fn munge_ctx_strerror(ctx: *mut MungeCtx) -> *const c_char;
    fn munge_strerror(e: c_int) -> *const c_char;
    fn munge_encode(
        cred: *mut *mut c_char,
        ctx: *mut MungeCtx,
        buf: *const c_void,
        len: c_int,
    ) -> c_int;
    fn munge_decode(
        cred: *const c_char,
        ctx: *mut MungeCtx,
        buf: *mut *mut c_void,
        len: *mut c_int,
        uid: *mut libc::uid_t,
        gid: *mut libc::gid_t,
    ) -> c_int;
}

/// Which munged socket an operation used, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketName(pub Option<PathBuf>);

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{}", p.display()),
            None => f.write_str("the default munged socket"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MungeError {
    #[error("munge socket path {path:?} contains a NUL byte")]
    InvalidSocketPath { path: PathBuf },
    #[error("munge_ctx_create failed (out of memory) for {socket}")]
    ContextCreate { socket: SocketName },
    #[error("munge_ctx_set({option}) via {socket}: {message} (munge error {code})")]
    ContextSet {
        socket: SocketName,
        option: &'static str,
        code: i32,
        message: String,
    },
    #[error("munge payload of {len} bytes is too large")]
    PayloadTooLarge { len: usize },
    #[error("munge credential contains a NUL byte")]
    CredentialNul,
    #[error("munge_encode via {socket}: {message} (munge error {code})")]
    Encode {
        socket: SocketName,
        code: i32,
        message: String,
    },
    #[error("munge_encode via {socket} returned a credential that is not text")]
    EncodeOutput { socket: SocketName },
    #[error("munge_decode via {socket}: {message} (munge error {code})")]
    Decode {
        socket: SocketName,
        code: i32,
        message: String,
    },
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

/// Owns one libmunge context and destroys it on every exit path.
struct Ctx(*mut MungeCtx);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from munge_ctx_create, is non-null (checked in
        // MungeContext::ctx) and is destroyed only here, once.
        unsafe { munge_ctx_destroy(self.0) }
    }
}

/// Frees a buffer that libmunge malloc'ed for us, on every exit path.
struct Malloced(*mut c_void);

impl Drop for Malloced {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer was allocated with malloc by libmunge and
            // handed to us to free; nothing else holds it.
            unsafe { libc::free(self.0) }
        }
    }
}

/// Copies a static C string from libmunge; null becomes a placeholder.
fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::from("unknown munge error");
    }
    // SAFETY: libmunge returns NUL-terminated strings that stay valid at
    // least until the context is next used or destroyed; we copy at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn error_text(ctx: &Ctx, code: c_int) -> String {
    // SAFETY: ctx.0 is a live context owned by the caller's Ctx.
    let detail = unsafe { munge_ctx_strerror(ctx.0) };
    if detail.is_null() {
        // SAFETY: munge_strerror accepts any value and returns a static string.
        c_text(unsafe { munge_strerror(code) })
    } else {
        c_text(detail)
    }
}

impl MungeContext {
    /// munged's compiled-in default socket, or `socket` (Slurm's
    /// `AuthInfo=socket=`) when given. Never fails: a path libmunge cannot
    /// take is reported by the first encode or decode.
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

    fn ctx(&self) -> Result<Ctx, MungeError> {
        // SAFETY: no preconditions; a null result is checked below.
        let raw = unsafe { munge_ctx_create() };
        if raw.is_null() {
            return Err(MungeError::ContextCreate {
                socket: self.name(),
            });
        }
        let ctx = Ctx(raw);
        if let Some(socket) = &self.socket {
            let path = CString::new(socket.as_os_str().as_encoded_bytes()).map_err(|_| {
                MungeError::InvalidSocketPath {
                    path: socket.clone(),
                }
            })?;
            // SAFETY: ctx.0 is live; MUNGE_OPT_SOCKET takes one `char *`,
            // and libmunge copies the string before returning.
            let code = unsafe { munge_ctx_set(ctx.0, MUNGE_OPT_SOCKET, path.as_ptr()) };
            if code != EMUNGE_SUCCESS {
                return Err(MungeError::ContextSet {
                    socket: self.name(),
                    option: "MUNGE_OPT_SOCKET",
                    code,
                    message: error_text(&ctx, code),
                });
            }
        }
        Ok(ctx)
    }

    /// Creates a credential any uid may decode, carrying `payload`.
    pub fn encode(&self, payload: &[u8]) -> Result<String, MungeError> {
        self.encode_for(payload, None)
    }

    /// Creates a credential carrying `payload`, decodable only by
    /// `restrict_uid` when given (what slurmd does for its replies).
    pub fn encode_for(
        &self,
        payload: &[u8],
        restrict_uid: Option<u32>,
    ) -> Result<String, MungeError> {
        let len = c_int::try_from(payload.len())
            .map_err(|_| MungeError::PayloadTooLarge { len: payload.len() })?;
        let ctx = self.ctx()?;
        if let Some(uid) = restrict_uid {
            let uid: libc::uid_t = uid;
            // SAFETY: ctx.0 is live; MUNGE_OPT_UID_RESTRICTION takes one
            // `uid_t`, passed by value as the variadic argument.
            let code = unsafe { munge_ctx_set(ctx.0, MUNGE_OPT_UID_RESTRICTION, uid) };
            if code != EMUNGE_SUCCESS {
                return Err(MungeError::ContextSet {
                    socket: self.name(),
                    option: "MUNGE_OPT_UID_RESTRICTION",
                    code,
                    message: error_text(&ctx, code),
                });
            }
        }
        let mut cred: *mut c_char = ptr::null_mut();
        let buf = if payload.is_empty() {
            ptr::null()
        } else {
            payload.as_ptr().cast::<c_void>()
        };
        // SAFETY: `cred` is a valid out-pointer; `buf` points to `len`
        // readable bytes (or is null with len 0); ctx.0 is live.
        let code = unsafe { munge_encode(&mut cred, ctx.0, buf, len) };
        let owned = Malloced(cred.cast::<c_void>());
        if code != EMUNGE_SUCCESS {
            return Err(MungeError::Encode {
                socket: self.name(),
                code,
                message: error_text(&ctx, code),
            });
        }
        if owned.0.is_null() {
            return Err(MungeError::EncodeOutput {
                socket: self.name(),
            });
        }
        // SAFETY: on success libmunge returns a NUL-terminated base64 string,
        // which stays allocated until `owned` is dropped after this copy.
        let text = unsafe { CStr::from_ptr(cred) };
        text.to_str()
            .map(str::to_owned)
            .map_err(|_| MungeError::EncodeOutput {
                socket: self.name(),
            })
    }

    /// Validates a credential and returns who made it and its payload.
    pub fn decode(&self, cred: &str) -> Result<Decoded, MungeError> {
        let cred = CString::new(cred).map_err(|_| MungeError::CredentialNul)?;
        let ctx = self.ctx()?;
        let mut buf: *mut c_void = ptr::null_mut();
        let mut len: c_int = 0;
        let mut uid: libc::uid_t = libc::uid_t::MAX;
        let mut gid: libc::gid_t = libc::gid_t::MAX;
        // SAFETY: `cred` is NUL-terminated; every out-pointer is valid for
        // writes; ctx.0 is live.
        let code =
            unsafe { munge_decode(cred.as_ptr(), ctx.0, &mut buf, &mut len, &mut uid, &mut gid) };
        // Some failures (expired, replayed) still allocate the payload.
        let owned = Malloced(buf);
        if code != EMUNGE_SUCCESS {
            return Err(MungeError::Decode {
                socket: self.name(),
                code,
                message: error_text(&ctx, code),
            });
        }
        let len = usize::try_from(len).unwrap_or(0);
        let payload = if owned.0.is_null() || len == 0 {
            Vec::new()
        } else {
            // SAFETY: libmunge allocated `len` bytes at `buf` (plus a NUL it
            // does not count); `owned` keeps them alive during the copy.
            unsafe { std::slice::from_raw_parts(owned.0.cast::<u8>(), len) }.to_vec()
        };
        Ok(Decoded { uid, gid, payload })
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
}
