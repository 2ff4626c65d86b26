//! A small syslog client for the hooks: one datagram per message to
//! `/dev/log`, in the BSD format that rsyslog and journald both accept.
//!
//! The PAM module logs through `pam_syslog` instead, because `openlog()`
//! inside sshd would change sshd's own log identity. The hooks are their
//! own processes, but they still avoid libc's syslog: writing the datagram
//! ourselves needs no `unsafe` and lets tests point the client at a socket
//! of their own.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Where the local syslog daemon listens.
pub const DEV_LOG: &str = "/dev/log";

/// `LOG_DAEMON`: Slurm's own daemons log there too.
const FACILITY_DAEMON: u8 = 3;
/// Longer messages are cut; a datagram over the receiver's limit would be
/// dropped whole.
const MAX_MESSAGE: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Err => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }
}

/// A connection to syslog, or none when no daemon listens: messages then
/// reach stderr only, and the hook carries on.
#[derive(Debug)]
pub struct Syslog {
    tag: String,
    socket: Option<UnixDatagram>,
}

impl Syslog {
    pub fn open(tag: &str, path: &Path) -> Syslog {
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.connect(path).map(|()| s))
            .ok();
        Syslog {
            tag: tag.to_owned(),
            socket,
        }
    }

    /// A client that writes nowhere (tests, `--no-syslog`).
    pub fn disabled(tag: &str) -> Syslog {
        Syslog {
            tag: tag.to_owned(),
            socket: None,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.socket.is_some()
    }

    pub fn send(&self, severity: Severity, message: &str) {
        if let Some(socket) = &self.socket {
            // A full receive queue must not stall a Prolog; losing a log
            // line is the lesser harm.
            let _ = socket.set_nonblocking(true);
            let _ = socket.send(format_line(&self.tag, severity, message).as_bytes());
        }
    }
}

/// `<PRI>TAG[PID]: MESSAGE`, with control characters replaced so that one
/// call is always one line in the log.
pub fn format_line(tag: &str, severity: Severity, message: &str) -> String {
    let priority = FACILITY_DAEMON * 8 + severity as u8;
    let mut clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    format!("<{priority}>{tag}[{}]: {clean}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_priority_tag_and_pid() {
        let line = format_line("adopt-epilog", Severity::Notice, "job=7\nuser=x");
        let pid = std::process::id();
        assert_eq!(line, format!("<29>adopt-epilog[{pid}]: job=7 user=x"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let line = format_line("t", Severity::Info, &"é".repeat(3000));
        assert!(line.len() < MAX_MESSAGE + 40);
        assert!(line.ends_with('é'));
    }

    #[test]
    fn reaches_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let log = Syslog::open("adopt-prolog", &path);
        assert!(log.is_connected());
        log.send(Severity::Err, "boom");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<27>adopt-prolog["), "{got}");
        assert!(got.ends_with("]: boom"), "{got}");
    }

    #[test]
    fn no_daemon_is_not_an_error() {
        let log = Syslog::open("t", Path::new("/nonexistent/dev/log"));
        assert!(!log.is_connected());
        log.send(Severity::Info, "dropped");
    }
}
