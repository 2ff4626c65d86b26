//! adopt-prolog and adopt-taskprolog as slurmd runs them: environment in,
//! exit status and files (or stdout) out.

// Integration tests only build under test anyway; saying so lets clippy.toml's
// allow-*-in-tests cover the helpers here as well as the #[test] functions.
#![cfg(test)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

fn config(root: &Path, mode: &str) -> std::path::PathBuf {
    let path = root.join("adopt.toml");
    fs::write(
        &path,
        format!(
            "mode = \"{mode}\"\nstate_dir = \"{r}/state\"\n[runtime_dir]\nroot = \"{r}/run/user\"\n[linger]\nmarker_dir = \"{r}/linger\"\nvia = \"marker-file\"\n",
            r = root.display()
        ),
    )
    .unwrap();
    path
}

fn run(bin: &str, config: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("--no-syslog")
        .env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The job's user: ourselves, unless we are root (as in CI), whose jobs
/// the hooks skip; root can make a directory for any uid.
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

fn job_env(job: u32) -> Vec<(&'static str, String)> {
    let (uid, gid) = job_uid();
    vec![
        ("SLURM_JOB_ID", job.to_string()),
        ("SLURM_JOB_UID", uid.to_string()),
        ("SLURM_JOB_GID", gid.to_string()),
        ("SLURM_JOB_USER", "alice".to_owned()),
    ]
}

const PROLOG: &str = env!("CARGO_BIN_EXE_adopt-prolog");
const TASKPROLOG: &str = env!("CARGO_BIN_EXE_adopt-taskprolog");

#[test]
fn prolog_creates_the_runtime_dir_and_records_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    let out = run(PROLOG, &cfg, &job_env(41));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (uid, _) = job_uid();
    let dir = tmp.path().join(format!("run/user/{uid}"));
    let meta = fs::metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700));
    assert!(
        tmp.path()
            .join(format!("state/users/{uid}/started/41"))
            .exists()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job=41 user=alice") && stderr.contains("result=ok"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn prolog_linger_mode_writes_the_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "linger");
    let out = run(PROLOG, &cfg, &job_env(7));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tmp.path().join("linger/alice").is_file());
    assert!(
        !tmp.path().join("run/user").exists(),
        "linger mode makes no runtime dir"
    );
}

#[test]
fn missing_or_bad_variables_are_named_and_do_not_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    for (drop_var, bad) in [("SLURM_JOB_UID", None), ("SLURM_JOB_ID", Some("x1"))] {
        let mut env: Vec<_> = job_env(3)
            .into_iter()
            .filter(|(k, _)| *k != drop_var)
            .collect();
        if let Some(v) = bad {
            env.push((drop_var, v.to_owned()));
        }
        let out = run(PROLOG, &cfg, &env);
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(drop_var), "{stderr}");
        assert!(stderr.contains("result=skipped"), "{stderr}");
    }
}

#[test]
fn unknown_config_key_is_named_and_does_not_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("adopt.toml");
    fs::write(&cfg, "mode = \"runtime-dir\"\nrutime_dir = 1\n").unwrap();
    let out = run(PROLOG, &cfg, &job_env(3));
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rutime_dir") && stderr.contains(&*cfg.to_string_lossy()),
        "{stderr}"
    );
}

#[test]
fn a_foreign_runtime_dir_fails_the_prolog() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    let (uid, _) = job_uid();
    fs::create_dir_all(tmp.path().join("run/user")).unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join(format!("run/user/{uid}"))).unwrap();
    let out = run(PROLOG, &cfg, &job_env(3));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
}

#[test]
fn taskprolog_prints_exactly_the_exports() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    // The TaskProlog runs as the job's user: here, whoever runs the test.
    let uid = nix::unistd::getuid().as_raw();
    let session = fs::read_to_string("/proc/self/sessionid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&id| id != u32::MAX);
    let tail = |mut lines: Vec<String>| {
        if let Some(id) = session {
            lines.push(format!("export XDG_SESSION_ID={id}"));
        }
        lines.push("export XDG_SESSION_TYPE=tty".into());
        lines.push("export XDG_SESSION_CLASS=user".into());
        lines.join("\n") + "\n"
    };
    let before = run(TASKPROLOG, &cfg, &[]);
    assert!(before.status.success());
    assert_eq!(
        String::from_utf8(before.stdout).unwrap(),
        tail(vec![]),
        "no dir yet"
    );

    let dir = tmp.path().join(format!("run/user/{uid}"));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let out = run(TASKPROLOG, &cfg, &[]);
    assert!(out.status.success());
    let want = tail(vec![format!("export XDG_RUNTIME_DIR={}", dir.display())]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn root_and_system_users_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    let mut env = job_env(9);
    env.retain(|(k, _)| *k != "SLURM_JOB_UID");
    env.push(("SLURM_JOB_UID", "0".to_owned()));
    let out = run(PROLOG, &cfg, &env);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped"));
    assert!(!tmp.path().join("run/user/0").exists());
}

#[test]
fn taskprolog_with_a_broken_config_exports_nothing_and_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("adopt.toml");
    fs::write(&cfg, "mode = [").unwrap();
    let out = run(TASKPROLOG, &cfg, &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}
