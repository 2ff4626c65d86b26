//! The relay binary against a real TCP server: the server speaks first (as
//! sshd does), every byte arrives in order both ways, and the relay ends
//! when the server closes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BANNER: &[u8] = b"SSH-2.0-test\r\n";

#[test]
fn bytes_cross_both_ways_and_the_server_may_speak_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let expected = payload.clone();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(BANNER).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        // Answer with the bytes reversed, then close: the relay must pass
        // on all of it and exit.
        got.reverse();
        conn.write_all(&got).unwrap();
        got.len()
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_adopt-ssh"))
        .args(["--relay", &addr.to_string(), "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The banner arrives before a byte is written to the relay.
    let mut banner = vec![0u8; BANNER.len()];
    stdout.read_exact(&mut banner).unwrap();
    assert_eq!(banner, BANNER);
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        stdin.write_all(&payload).unwrap();
        // Dropping stdin is the client's end of file.
    });
    let mut back = Vec::new();
    stdout.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(server.join().unwrap(), expected.len());
    let mut want = expected;
    want.reverse();
    assert!(
        back == want,
        "the reply differs ({} bytes back)",
        back.len()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "relay did not exit"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn without_squeue_the_error_says_so() {
    let empty = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_adopt-ssh"))
        .arg("17")
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run squeue"), "{err}");
}

#[test]
fn a_bad_job_id_is_refused_before_anything_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_adopt-ssh"))
        .arg("17;reboot")
        .env("PATH", std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'17;reboot' is not a job id"), "{err}");
}

/// squeue gets neither another allocation's SLURM_* variables nor the
/// user's SQUEUE_* filters (a SQUEUE_USERS would make a running job read
/// as missing), but keeps SLURM_CONF. A stand-in squeue records the
/// environment it was given and reports the job as pending.
#[test]
fn squeue_runs_without_the_callers_job_and_squeue_variables() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("squeue-env");
    let squeue = dir.path().join("squeue");
    std::fs::write(
        &squeue,
        format!(
            "#!/bin/sh\nenv >'{}'\necho '17|nobody|65534|PENDING||n/a'\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&squeue, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_adopt-ssh"))
        .arg("17")
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("SQUEUE_USERS", "someone-else")
        .env("SQUEUE_PARTITION", "nowhere")
        .env("SLURM_JOB_ID", "99")
        .env("SRUN_CPUS_PER_TASK", "4")
        .env("SLURM_CONF", "/etc/slurm/other.conf")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let env = std::fs::read_to_string(&seen).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    for gone in [
        "SQUEUE_USERS",
        "SQUEUE_PARTITION",
        "SLURM_JOB_ID",
        "SRUN_CPUS_PER_TASK",
    ] {
        assert!(!names.contains(&gone), "squeue was given {gone}: {env}");
    }
    assert!(
        env.lines().any(|l| l == "SLURM_CONF=/etc/slurm/other.conf"),
        "{env}"
    );
}
