//! adopt-epilog as slurmd runs it, on a temp state tree and spool.

// Integration tests only build under test anyway; saying so lets clippy.toml's
// allow-*-in-tests cover the helpers here as well as the #[test] functions.
#![cfg(test)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

const EPILOG: &str = env!("CARGO_BIN_EXE_adopt-epilog");

struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    slurm_conf: PathBuf,
}

fn node() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    fs::create_dir_all(root.join("spool")).unwrap();
    let slurm_conf = root.join("slurm.conf");
    fs::write(
        &slurm_conf,
        format!(
            "ClusterName=t\nSlurmUser=root\nSlurmdSpoolDir={}/spool\nNodeName=c1 CPUs=1\n",
            root.display()
        ),
    )
    .unwrap();
    let config = root.join("adopt.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{r}/state\"\n[runtime_dir]\nroot = \"{r}/run/user\"\n",
            r = root.display()
        ),
    )
    .unwrap();
    Node {
        _tmp: tmp,
        root,
        config,
        slurm_conf,
    }
}

/// The job's user: ourselves, unless we are root (as in CI), whose jobs
/// the hooks skip.
fn job_uid() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        (4242, 4242)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

fn epilog(n: &Node, job: u32, extra: &[&str]) -> Output {
    Command::new(EPILOG)
        .arg("--config")
        .arg(&n.config)
        .arg("--no-syslog")
        .args(extra)
        .env_clear()
        .env("SLURM_JOB_ID", job.to_string())
        .env("SLURM_JOB_UID", job_uid().0.to_string())
        .env("SLURM_JOB_GID", job_uid().1.to_string())
        .env("SLURM_JOB_USER", "alice")
        .env("SLURMD_NODENAME", "c1")
        .env("SLURM_CONF", &n.slurm_conf)
        .output()
        .unwrap()
}

fn runtime_dir(n: &Node) -> PathBuf {
    n.root.join(format!("run/user/{}", job_uid().0))
}

fn user_state(n: &Node, sub: &str) -> PathBuf {
    let dir = n.root.join(format!("state/users/{}/{sub}", job_uid().0));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn started(n: &Node, job: u32) {
    fs::write(user_state(n, "started").join(job.to_string()), b"").unwrap();
}

/// The runtime dir as adopt-prolog leaves it: the user's, 0700, and
/// recorded as made by the hooks.
fn make_runtime_dir(n: &Node) {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) = job_uid();
    fs::create_dir_all(runtime_dir(n)).unwrap();
    fs::set_permissions(runtime_dir(n), fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&runtime_dir(n), Some(uid.into()), Some(gid.into())).unwrap();
    fs::write(user_state(n, "owns").join("runtime-dir"), b"").unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keeps_the_dir_while_another_job_runs_and_removes_it_after_the_last() {
    let n = node();
    make_runtime_dir(&n);
    started(&n, 10);
    started(&n, 11);
    let dry = epilog(&n, 10, &["--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout),
        "not-last:11\n",
        "{}",
        stderr(&dry)
    );
    let first = epilog(&n, 10, &[]);
    assert!(first.status.success());
    assert!(
        stderr(&first).contains("verdict=not-last:11"),
        "{}",
        stderr(&first)
    );
    assert!(runtime_dir(&n).is_dir());
    let last = epilog(&n, 11, &[]);
    assert!(last.status.success());
    assert!(stderr(&last).contains("verdict=last "), "{}", stderr(&last));
    assert!(
        stderr(&last).contains("action=\"removed "),
        "{}",
        stderr(&last)
    );
    assert!(!runtime_dir(&n).exists());
}

#[test]
fn an_unparsable_slurm_conf_keeps_the_state_and_exits_zero() {
    let n = node();
    make_runtime_dir(&n);
    fs::write(&n.slurm_conf, "SlurmdPort=notaport\n").unwrap();
    let out = epilog(&n, 10, &[]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("verdict=unsure"), "{}", stderr(&out));
    assert!(runtime_dir(&n).is_dir());
}

#[test]
fn a_missing_variable_is_named_and_changes_nothing() {
    let n = node();
    let out = Command::new(EPILOG)
        .args(["--no-syslog", "--config"])
        .arg(&n.config)
        .env_clear()
        .env("SLURM_JOB_ID", "3")
        .env("SLURM_JOB_UID", "1001")
        .output()
        .unwrap();
    // An Epilog that exits non-zero drains the node; a broken environment
    // is not a failure to set anything up.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("SLURM_JOB_USER"), "{}", stderr(&out));
}

#[test]
fn a_stale_socket_is_not_a_job() {
    // A socket file whose stepd is gone (nobody listens): connection
    // refused, so it does not keep the user's state.
    let n = node();
    make_runtime_dir(&n);
    let sock = n.root.join("spool/c1_99.4294967292");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let out = epilog(&n, 10, &[]);
    assert!(stderr(&out).contains("verdict=last "), "{}", stderr(&out));
    assert!(!runtime_dir(&n).exists());
}

mod with_stepds {
    //! The same Epilog against the shim's stepds: the owners come from
    //! STEP_UID over each extern step's socket.
    use super::*;
    use slurmd_shim::stepd::{FakeStep, Fault, StepdShim};

    fn me() -> u32 {
        job_uid().0
    }

    fn serve(n: &Node, steps: Vec<FakeStep>) -> StepdShim {
        StepdShim::start(&n.root.join("spool"), "c1", steps).unwrap()
    }

    #[test]
    fn a_running_job_of_the_user_keeps_the_dir() {
        let n = node();
        make_runtime_dir(&n);
        let _shim = serve(
            &n,
            vec![
                FakeStep::extern_step(20, me()),
                FakeStep::extern_step(21, me() + 1),
            ],
        );
        let out = epilog(&n, 10, &[]);
        assert!(
            stderr(&out).contains("verdict=not-last:20 other_users_steps=1"),
            "{}",
            stderr(&out)
        );
        assert!(runtime_dir(&n).is_dir());
    }

    #[test]
    fn only_other_users_jobs_left_removes_it() {
        let n = node();
        make_runtime_dir(&n);
        // The ending job's own stepd is still up: it does not count.
        let _shim = serve(
            &n,
            vec![
                FakeStep::extern_step(10, me()),
                FakeStep::extern_step(21, me() + 1),
            ],
        );
        let out = epilog(&n, 10, &[]);
        assert!(stderr(&out).contains("verdict=last "), "{}", stderr(&out));
        assert!(!runtime_dir(&n).exists());
    }

    #[test]
    fn a_hung_stepd_keeps_the_dir_within_the_timeout() {
        let n = node();
        make_runtime_dir(&n);
        // Top-level keys come before the [runtime_dir] table.
        let cfg = fs::read_to_string(&n.config).unwrap();
        fs::write(&n.config, format!("stepd_timeout_ms = 300\n{cfg}")).unwrap();
        let mut hung = FakeStep::extern_step(30, me() + 1);
        hung.fault = Fault::HangOnRequest;
        let _shim = serve(&n, vec![hung]);
        let t0 = std::time::Instant::now();
        let out = epilog(&n, 10, &[]);
        let took = t0.elapsed();
        assert!(out.status.success());
        assert!(
            stderr(&out).contains("verdict=unsure:30"),
            "{}",
            stderr(&out)
        );
        assert!(runtime_dir(&n).is_dir());
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    }
}
