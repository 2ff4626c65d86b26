//! `adoptctl check` against the stepd shim: it must report what a login
//! would do, and never adopt anything.

// Test helpers stop loudly; the workspace denies these lints for the code
// that runs inside sshd, not for its tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Output};

use slurmd_shim::stepd::{FakeStep, StepdShim};

const NODE: &str = "c7";
const USER: &str = "nobody";
const USER_UID: u32 = 65534;

fn owner_name(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).map_or(0, |m| m.uid()).to_string();
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| "root".to_owned())
}

fn node() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool");
    // The shim listens in this process: its user is SlurmdUser.
    let conf = format!(
        "SlurmUser={owner}\nSlurmdUser={owner}\nSlurmdSpoolDir={}\nNodeName={NODE} CPUs=2\n",
        spool.display(),
        owner = owner_name(dir.path()),
    );
    std::fs::write(dir.path().join("slurm.conf"), conf).expect("slurm.conf");
    dir
}

fn check(dir: &Path, module_args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adoptctl"))
        .args(["check", USER, "--"])
        .arg(format!("conf={}", dir.join("slurm.conf").display()))
        .arg(format!("nodename={NODE}"))
        .args(module_args)
        .output()
        .expect("run adoptctl")
}

#[test]
fn reports_the_job_a_login_would_join_without_adopting() {
    let dir = node();
    let shim = StepdShim::start(
        &dir.path().join("spool"),
        NODE,
        vec![
            FakeStep::extern_step(42, USER_UID),
            FakeStep::extern_step(43, USER_UID + 1),
        ],
    )
    .expect("shim");
    let out = check(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("extern steps: 1 of nobody (uid 65534), 1 of other users"),
        "{text}"
    );
    assert!(
        text.contains("decision: adopt into job 42 (reason: only_job)"),
        "{text}"
    );
    assert!(shim.added_pids(42).is_empty(), "check must not adopt");
}

#[test]
fn a_user_without_jobs_would_be_denied_with_exit_status_1() {
    let dir = node();
    let _shim = StepdShim::start(&dir.path().join("spool"), NODE, vec![]).expect("shim");
    let out = check(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("decision: deny (reason: no_jobs); the user would see: Access denied by pam_adopt: you have no active jobs on this node"),
        "{text}"
    );
}

#[test]
fn bad_module_arguments_are_reported_and_a_broken_config_denies_as_the_module_would() {
    let dir = node();
    let out = check(dir.path(), &["action_unknown=sometimes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: unrecognized action_unknown=sometimes, setting to 'deny'"),
        "{text}"
    );

    std::fs::write(dir.path().join("slurm.conf"), "SlurmdPort=notaport\n").expect("write");
    let out = check(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("slurm.conf:1"),
        "the error names file and line: {text}"
    );
    assert!(
        text.contains("decision: deny (reason: node_setup)"),
        "action_generic_failure=deny decides, as in the module: {text}"
    );
    assert!(text.contains(" decision=deny "), "{text}");
}

#[test]
fn from_asks_the_source_slurmd_which_job_owns_the_connection() {
    use slurmd_shim::munged::PrivateMunged;
    use slurmd_shim::slurmd::{Answer, SlurmdConfig, SlurmdShim};

    let dir = node();
    let munged = PrivateMunged::start().unwrap_or_else(|e| panic!("{e}"));
    let slurmd = SlurmdShim::start(
        "127.0.0.1:0",
        SlurmdConfig::new(munged.socket()).answer(Answer::Job(42)),
    )
    .expect("slurmd shim");
    let conf = dir.path().join("slurm.conf");
    let mut text = std::fs::read_to_string(&conf).expect("read conf");
    text.push_str(&format!(
        "SlurmdPort={}\nAuthInfo=socket={}\n",
        slurmd.local_addr().port(),
        munged.socket().display()
    ));
    std::fs::write(&conf, text).expect("write conf");
    let _stepds = StepdShim::start(
        &dir.path().join("spool"),
        NODE,
        vec![
            FakeStep::extern_step(42, USER_UID),
            FakeStep::extern_step(43, USER_UID),
        ],
    )
    .expect("stepd shim");

    let check_from = |from: &str, to: &str| -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_adoptctl"))
            .args(["check", USER, "--from", from, "--to", to, "--"])
            .arg(format!("conf={}", conf.display()))
            .arg(format!("nodename={NODE}"))
            .output()
            .expect("run adoptctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("decision: adopt into job 42 (reason: callerid_match)"),
            "{text}"
        );
        text
    };

    let text = check_from("127.0.0.1:40000", "127.0.0.1:22");
    assert!(
        text.contains(&format!(
            "callerid: slurmd {}: 127.0.0.1:40000 -> 127.0.0.1:22 belongs to job 42",
            slurmd.local_addr()
        )),
        "{text}"
    );
    let seen = slurmd.requests();
    assert_eq!(seen.len(), 1, "one RPC: {seen:?}");

    // The same ends as a dual-stack sshd sees them: the IPv4 slurmd is
    // reached and asked about plain IPv4 addresses.
    slurmd.clear_requests();
    check_from("[::ffff:127.0.0.1]:40001", "[::ffff:127.0.0.1]:22");
    let seen = slurmd.requests();
    let asked = seen
        .first()
        .and_then(|r| r.request.as_ref())
        .map(|r| (r.client.to_string(), r.server.to_string()));
    assert_eq!(
        asked,
        Some(("127.0.0.1:40001".to_owned(), "127.0.0.1:22".to_owned())),
        "{seen:?}"
    );
}
