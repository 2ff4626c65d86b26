//! adopt-prolog and adopt-taskprolog as slurmd runs them: environment in,
//! exit status and files (or stdout) out.

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

fn job_env(job: u32) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_JOB_ID", job.to_string()),
        ("SLURM_JOB_UID", nix::unistd::getuid().as_raw().to_string()),
        ("SLURM_JOB_GID", nix::unistd::getgid().as_raw().to_string()),
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
    let uid = nix::unistd::getuid().as_raw();
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
fn missing_or_bad_variables_are_named_and_fail() {
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
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(drop_var), "{stderr}");
    }
}

#[test]
fn unknown_config_key_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("adopt.toml");
    fs::write(&cfg, "mode = \"runtime-dir\"\nrutime_dir = 1\n").unwrap();
    let out = run(PROLOG, &cfg, &job_env(3));
    assert_eq!(out.status.code(), Some(1));
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
    let uid = nix::unistd::getuid().as_raw();
    fs::create_dir_all(tmp.path().join("run/user")).unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join(format!("run/user/{uid}"))).unwrap();
    let out = run(PROLOG, &cfg, &job_env(3));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
}

#[test]
fn taskprolog_prints_exactly_the_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "runtime-dir");
    let before = run(TASKPROLOG, &cfg, &[]);
    assert!(before.status.success());
    let text = String::from_utf8(before.stdout).unwrap();
    assert!(!text.contains("XDG_RUNTIME_DIR"), "no dir yet: {text}");
    assert!(run(PROLOG, &cfg, &job_env(5)).status.success());
    let out = run(TASKPROLOG, &cfg, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "export XDG_RUNTIME_DIR={}/run/user/{uid}",
                tmp.path().display()
            )
            .as_str()
        )
    );
    let rest: Vec<&str> = lines.collect();
    let tail = &rest[rest.len() - 2..];
    assert_eq!(
        tail,
        [
            "export XDG_SESSION_TYPE=tty",
            "export XDG_SESSION_CLASS=user"
        ]
    );
    assert!(
        rest.len() == 2 || rest[0].starts_with("export XDG_SESSION_ID="),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with("export ")), "{text}");
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
