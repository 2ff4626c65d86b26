//! Processes of a user that belong to no job, for the Epilog's optional
//! `reap_strays` at the user's last job on the node.
//!
//! Never root's (nor a process with any root uid, such as a setuid
//! helper), never below UID_MIN, never one in a Slurm job cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use slurm_node::cgroup::CgroupFs;

/// useradd's default when login.defs says nothing.
pub const DEFAULT_UID_MIN: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    pub pid: i32,
    pub comm: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StraysError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("refusing to reap uid {uid}: below UID_MIN {uid_min}")]
    SystemUid { uid: u32, uid_min: u32 },
}

/// `UID_MIN` from a login.defs file, or the default.
pub fn uid_min(login_defs: &Path) -> u32 {
    fs::read_to_string(login_defs)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("UID_MIN"))
                    .then(|| words.next()?.parse().ok())
                    .flatten()
            })
        })
        .unwrap_or(DEFAULT_UID_MIN)
}

/// The user's processes under `proc_root` that are in no job.
pub fn find(proc_root: &Path, uid: u32, uid_min: u32) -> Result<Vec<Stray>, StraysError> {
    if uid == 0 || uid < uid_min {
        return Err(StraysError::SystemUid { uid, uid_min });
    }
    let me = nix::unistd::getpid().as_raw();
    let entries = fs::read_dir(proc_root).map_err(|source| StraysError::Io {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut strays = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes come and go during the scan: a vanished one is skipped.
        if let Some(stray) = examine(&entry.path(), pid, uid) {
            strays.push(stray);
        }
    }
    strays.sort_by_key(|s| s.pid);
    Ok(strays)
}

fn examine(dir: &Path, pid: i32, uid: u32) -> Option<Stray> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let uids = status_uids(&status)?;
    if uids.contains(&0) || !uids.contains(&uid) {
        return None;
    }
    let cgroup = fs::read_to_string(dir.join("cgroup")).ok()?;
    if CgroupFs::in_slurm_job(&cgroup) {
        return None;
    }
    let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
    Some(Stray {
        pid,
        comm: comm.trim_end().to_owned(),
    })
}

/// The four uids of the `Uid:` line (real, effective, saved, fs).
fn status_uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut it = line["Uid:".len()..]
        .split_whitespace()
        .map(|w| w.parse::<u32>());
    let mut uids = [0u32; 4];
    for slot in &mut uids {
        *slot = it.next()?.ok()?;
    }
    Some(uids)
}

/// SIGKILL each stray still owned by `uid`; returns the pids killed. The
/// owner and cgroup are read again right before the signal, so a pid
/// reused since the scan by someone else's process is left alone; the
/// window between that check and the signal remains (no pidfd in nix).
pub fn reap(proc_root: &Path, strays: &[Stray], uid: u32) -> Vec<i32> {
    strays
        .iter()
        .filter(|s| examine(&proc_root.join(s.pid.to_string()), s.pid, uid).is_some())
        .filter(|s| kill(Pid::from_raw(s.pid), Signal::SIGKILL).is_ok())
        .map(|s| s.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(root: &Path, pid: i32, uids: &str, cgroup: &str, comm: &str) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("status"),
            format!("Name:\t{comm}\nUid:\t{uids}\nGid:\t1 1 1 1\n"),
        )
        .unwrap();
        fs::write(dir.join("cgroup"), cgroup).unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    }

    #[test]
    fn finds_only_the_users_jobless_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        let free = "12:freezer:/\n0::/user.slice\n";
        fake_proc(p, 100, "1001\t1001\t1001\t1001", free, "vscode-server");
        fake_proc(
            p,
            101,
            "1001\t1001\t1001\t1001",
            "7:freezer:/slurm_c1/uid_1001/job_9/step_extern\n",
            "bash",
        );
        fake_proc(p, 102, "1001\t0\t0\t0", free, "sudo");
        fake_proc(p, 103, "1002\t1002\t1002\t1002", free, "other");
        fake_proc(
            p,
            104,
            "1001\t1001\t1001\t1001",
            "0::/system.slice/c1_slurmstepd.scope/job_9/step_0/user/task_0\n",
            "python",
        );
        fake_proc(
            p,
            105,
            "1001\t1001\t1001\t1001",
            "0::/system.slice/slurmstepd.scope/8d7f1c2a/step_0\n",
            "sluid",
        );
        // A job_ directory the user made in their own delegated subtree.
        fake_proc(
            p,
            106,
            "1001\t1001\t1001\t1001",
            "0::/user.slice/user-1001.slice/user@1001.service/job_1/step_0\n",
            "hiding",
        );
        fs::create_dir_all(p.join("self")).unwrap();
        fs::write(p.join("uptime"), "1 1").unwrap();
        let found = find(p, 1001, 1000).unwrap();
        let pids: Vec<i32> = found.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [100, 106]);
        assert_eq!(found[0].comm, "vscode-server");
    }

    #[test]
    fn never_root_or_system_users() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            find(tmp.path(), 0, 1000),
            Err(StraysError::SystemUid { .. })
        ));
        assert!(matches!(
            find(tmp.path(), 999, 1000),
            Err(StraysError::SystemUid { .. })
        ));
    }

    #[test]
    fn reads_uid_min() {
        let tmp = tempfile::tempdir().unwrap();
        let defs = tmp.path().join("login.defs");
        fs::write(&defs, "# comment\nUID_MIN\t\t\t 2000\nUID_MAX 60000\n").unwrap();
        assert_eq!(uid_min(&defs), 2000);
        assert_eq!(uid_min(&tmp.path().join("missing")), DEFAULT_UID_MIN);
    }

    #[test]
    fn reap_rechecks_the_owner() {
        let tmp = tempfile::tempdir().unwrap();
        // The pid now belongs to another user: not signalled.
        fake_proc(
            tmp.path(),
            4_000_000,
            "1002\t1002\t1002\t1002",
            "0::/\n",
            "x",
        );
        let stray = Stray {
            pid: 4_000_000,
            comm: "x".into(),
        };
        assert!(reap(tmp.path(), &[stray], 1001).is_empty());
    }
}
