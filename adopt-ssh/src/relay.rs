//! The two halves of the path from ssh to the node's sshd.
//!
//! `proxy` is ssh's ProxyCommand: it starts `srun --overlap` into the job
//! on the chosen node with `relay` as the task, and srun carries ssh's
//! stdin and stdout to it. `relay` runs there as a task of the job and
//! copies bytes between that stdin/stdout and a TCP connection to the
//! node's sshd. sshd thus sees a connection made by a process of the job,
//! and the callerid lookup names that job.
//!
//! srun is run with `--unbuffered`: without it slurmstepd holds a task's
//! output until a newline, and the ssh protocol would stall on its first
//! binary packet.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::client_env;

/// How long the relay waits for sshd to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: String, source: io::Error },
    #[error("cannot connect to sshd at {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("relay to {target}: {source}")]
    Copy { target: String, source: io::Error },
    #[error("cannot run srun: {source} (is Slurm's client installed and in PATH?)")]
    Srun { source: io::Error },
}

/// The srun command line that runs the relay in `job` on `node`.
pub fn srun_command(job: u32, node: &str, port: u16) -> Command {
    let mut cmd = Command::new("srun");
    client_env::scrub(&mut cmd);
    cmd.arg(format!("--jobid={job}"))
        .arg(format!("--nodelist={node}"))
        .args([
            "--nodes=1",
            "--ntasks=1",
            "--overlap",
            "--unbuffered",
            "--quiet",
            "--job-name=adopt-ssh",
            // The relay needs no working directory, and the caller's may
            // not exist on the node.
            "--chdir=/",
            "adopt-ssh",
            "--relay",
        ])
        .arg(format!("localhost:{port}"))
        .arg(job.to_string());
    cmd
}

/// ProxyCommand: become srun. Returns only if srun cannot be started.
pub fn proxy(job: u32, node: &str, port: u16) -> RelayError {
    let source = srun_command(job, node, port).exec();
    RelayError::Srun { source }
}

/// In the job: connect to `target` and copy stdin to it and its replies
/// to stdout until sshd closes the connection.
pub fn relay(target: &str) -> Result<(), RelayError> {
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|source| RelayError::Resolve {
            target: target.to_owned(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| RelayError::Connect {
        target: target.to_owned(),
        source: last,
    })?;
    let copy_err = |source| RelayError::Copy {
        target: target.to_owned(),
        source,
    };
    let mut to_sshd = stream.try_clone().map_err(copy_err)?;
    // ssh to sshd: when ssh closes its end, sshd is told so by a
    // half-close and finishes the session; the other direction ends it.
    let upstream = thread::Builder::new()
        .name("ssh-to-sshd".to_owned())
        .spawn(move || -> io::Result<()> {
            let copied = pump(&mut io::stdin().lock(), &mut to_sshd);
            let _ = to_sshd.shutdown(Shutdown::Write);
            copied
        })
        .map_err(copy_err)?;
    let mut from_sshd = stream;
    pump(&mut from_sshd, &mut io::stdout().lock()).map_err(copy_err)?;
    // sshd has closed: the session is over, whatever stdin still holds.
    drop(upstream);
    Ok(())
}

/// Copy until end of file, flushing every chunk (the peer is waiting for
/// it), and retrying reads interrupted by a signal.
fn pump(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = [0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn pump_copies_every_byte_in_order() {
        let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let mut out = Vec::new();
        pump(&mut data.as_slice(), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn the_srun_line_is_unbuffered_overlapping_and_pinned_to_the_node() {
        let cmd = srun_command(17, "c2", 22);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--jobid=17",
            "--nodelist=c2",
            "--overlap",
            "--unbuffered",
            "--ntasks=1",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        assert_eq!(
            &args[args.len() - 4..],
            ["adopt-ssh", "--relay", "localhost:22", "17"]
        );
    }

    #[test]
    fn a_closed_port_is_a_connect_error_naming_it() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = format!("127.0.0.1:{port}");
        let err = relay(&target).unwrap_err();
        assert!(matches!(err, RelayError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&target));
    }
}
