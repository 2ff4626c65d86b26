//! A private munged in a temp dir, for tests that need real munge
//! credentials without touching the host's munged or its key.
//!
//! The daemon runs in the foreground (`-F`) as a child of the caller, with
//! its own key, socket, pid, log and seed files in a fresh temp dir, and is
//! stopped when the [`PrivateMunged`] is dropped. When `setpriv` is
//! installed it is started through `setpriv --pdeathsig TERM`, so a test
//! process killed outright does not leave it behind (the signal follows the
//! *thread* that started it, so start and drop it on the same thread).
//!
//! A missing munged is an error, never a silent skip: callers are tests
//! that must fail with a clear message when the `munge` package is absent.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use slurm_node::rpc::munge::MungeContext;

/// Where munged, mungekey and setpriv are looked for.
const SEARCH_DIRS: [&str; 6] = [
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
];
/// How long munged may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long munged gets to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum MungedError {
    #[error(
        "munged is not installed (looked in {dirs}): install Debian's `munge` package (tests/scripts/install-build-deps.sh does)"
    )]
    NotInstalled { dirs: String },
    #[error("cannot prepare munged's temp dir: {0}")]
    Setup(#[source] io::Error),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("munged exited with {status} before creating its socket; its log says: {log}")]
    Exited { status: ExitStatus, log: String },
    #[error("munged did not create {socket} within {timeout:?}; its log says: {log}")]
    NoSocket {
        socket: PathBuf,
        timeout: Duration,
        log: String,
    },
}

/// A munged of our own, stopped on drop.
pub struct PrivateMunged {
    child: Child,
    dir: tempfile::TempDir,
}

impl fmt::Debug for PrivateMunged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateMunged")
            .field("pid", &self.child.id())
            .field("socket", &self.socket())
            .finish()
    }
}

/// The first of `name` in [`SEARCH_DIRS`].
pub fn find_program(name: &str) -> Option<PathBuf> {
    SEARCH_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl PrivateMunged {
    /// Creates a key and starts munged on a socket in a new temp dir; the
    /// socket exists when this returns.
    pub fn start() -> Result<PrivateMunged, MungedError> {
        let munged = find_program("munged").ok_or_else(|| MungedError::NotInstalled {
            dirs: SEARCH_DIRS.join(", "),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("private-munged.")
            .tempdir()
            .map_err(MungedError::Setup)?;
        // Other uids (e.g. a `munge` CLI run as nobody) must reach the
        // socket; munged itself makes the socket 0777.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755))
            .map_err(MungedError::Setup)?;
        let key = dir.path().join("munge.key");
        make_key(&key).map_err(MungedError::Setup)?;

        let d = dir.path();
        let daemon_args = [
            "-F".to_owned(),
            "--force".to_owned(),
            format!("--socket={}", d.join("socket").display()),
            format!("--key-file={}", key.display()),
            format!("--pid-file={}", d.join("munged.pid").display()),
            format!("--log-file={}", d.join("munged.log").display()),
            format!("--seed-file={}", d.join("munged.seed").display()),
        ];
        // -F keeps munged in the foreground, so the child *is* the daemon
        // (setpriv execs it in place) and can be stopped by its pid.
        let mut cmd = match find_program("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "TERM", "--"]).arg(&munged);
                c
            }
            None => Command::new(&munged),
        };
        let child = cmd
            .args(&daemon_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| MungedError::Spawn {
                program: munged.clone(),
                source,
            })?;
        let mut me = PrivateMunged { child, dir };
        let until = Instant::now() + START_TIMEOUT;
        while !me.socket().exists() {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(MungedError::Exited {
                    status,
                    log: me.log(),
                });
            }
            if Instant::now() >= until {
                return Err(MungedError::NoSocket {
                    socket: me.socket(),
                    timeout: START_TIMEOUT,
                    log: me.log(),
                });
            }
            thread::sleep(POLL);
        }
        Ok(me)
    }

    /// The socket to give the munge client (`AuthInfo=socket=...`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// A munge client context on this munged.
    pub fn context(&self) -> MungeContext {
        MungeContext::with_socket(self.socket())
    }

    /// munged's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("munged.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PrivateMunged {
    fn drop(&mut self) {
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        let until = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh 0600 key: from `mungekey` when installed, else 1024 random bytes.
fn make_key(path: &Path) -> io::Result<()> {
    if let Some(mungekey) = find_program("mungekey") {
        let made = Command::new(mungekey)
            .arg("-c")
            .arg("-k")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            return Ok(());
        }
        let _ = fs::remove_file(path);
    }
    let mut key = [0u8; 1024];
    fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(&key)
}
