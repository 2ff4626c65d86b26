//! A snapshot of the processes on this node, as much of `/proc` as it
//! takes to say who is logged into which job: each process's parent,
//! owner, start time, command line and Slurm cgroup.
//!
//! Processes come and go while the table is read; one that vanishes
//! between its directory entry and its files is simply not in the table.
//! Every file read is bounded, so a hostile command line costs at most a
//! few kilobytes per process.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupFs, JobCgroup};

/// The most of `/proc/<pid>/cmdline` (and of `stat`, `cgroup`) read.
const MAX_FILE_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no '{field}' in it", path.display())]
    Missing { path: PathBuf, field: &'static str },
}

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// The real uid (`Uid:` in `/proc/<pid>/status`). Not the owner of
    /// `/proc/<pid>`, which is root for any process that is not dumpable
    /// (one that changed its uids, as sshd's session processes do).
    pub uid: u32,
    /// `comm`: the executable's name, at most 15 bytes.
    pub comm: String,
    /// The command line, arguments joined by spaces (the process title for
    /// sshd, which rewrites it); `comm` in brackets for a kernel thread.
    pub command: String,
    /// When the process started, in clock ticks since boot.
    pub start_ticks: u64,
    /// The Slurm job directory and step (`step_extern`, `step_0`, ...)
    /// the process is in, if any.
    pub job_cgroup: Option<JobCgroup>,
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: i32,
    pub start_ticks: u64,
}

/// Parse the text of `/proc/<pid>/stat`. `comm` is in parentheses and may
/// itself hold spaces and parentheses, so the fields are counted from the
/// last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": field 3 (state) is index 0; ppid is field 4, starttime
    // field 22 (proc(5)).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/cmdline` as one line: NUL-separated arguments joined by
/// spaces, control characters shown as `?` so a title cannot break a
/// report line.
pub fn command_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let joined: String = text
        .trim_end_matches('\0')
        .chars()
        .map(|c| match c {
            '\0' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect();
    joined.trim_end().to_owned()
}

/// The system's boot time in seconds since the epoch (`btime` in
/// `/proc/stat`).
pub fn boot_time(proc_root: &Path) -> Result<u64, ProcError> {
    let path = proc_root.join("stat");
    let text = read_bounded(&path, 64 * 1024)?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        .ok_or(ProcError::Missing {
            path,
            field: "btime",
        })
}

/// Seconds since boot (the first number of `/proc/uptime`).
pub fn uptime_secs(proc_root: &Path) -> Result<f64, ProcError> {
    let path = proc_root.join("uptime");
    let text = read_bounded(&path, 256)?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ProcError::Missing {
            path,
            field: "uptime",
        })
}

/// Clock ticks per second, the unit of `starttime`. Linux fixes USER_HZ
/// at 100 on every architecture it runs Slurm on; sysconf says so too.
pub fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => u64::try_from(t).unwrap_or(100),
        _ => 100,
    }
}

/// How long process `pid` (`"self"` or a number) has been running, in
/// milliseconds.
pub fn age_ms(proc_root: &Path, pid: &str) -> Result<u64, ProcError> {
    let path = proc_root.join(pid).join("stat");
    let stat = parse_stat(&read_bounded(&path, MAX_FILE_BYTES)?).ok_or(ProcError::Missing {
        path,
        field: "starttime",
    })?;
    let up_ms = uptime_secs(proc_root)? * 1000.0;
    let started_ms = stat.start_ticks.saturating_mul(1000) / ticks_per_second();
    // Float to integer: uptime is far below 2^53 ms.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let up = up_ms.max(0.0) as u64;
    Ok(up.saturating_sub(started_ms))
}

/// Every process under `proc_root` that could be read.
pub fn snapshot(proc_root: &Path) -> Result<Vec<Process>, ProcError> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| ProcError::Read {
        path: proc_root.to_owned(),
        source,
    })?;
    let mut table = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(p) = read_process(&entry.path(), pid) {
            table.push(p);
        }
    }
    table.sort_by_key(|p| p.pid);
    Ok(table)
}

/// The real uid in the text of `/proc/<pid>/status` (the first of the
/// four numbers on its `Uid:` line).
pub fn parse_status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_process(dir: &Path, pid: i32) -> Option<Process> {
    let uid = parse_status_uid(&read_bounded(&dir.join("status"), MAX_FILE_BYTES).ok()?)?;
    let mut stat = parse_stat(&read_bounded(&dir.join("stat"), MAX_FILE_BYTES).ok()?)?;
    // comm is the process's to set (prctl PR_SET_NAME): it may hold a
    // newline or an escape sequence, and must not forge a report line.
    stat.comm = command_line(stat.comm.as_bytes());
    let raw = read_bytes_bounded(&dir.join("cmdline"), MAX_FILE_BYTES).unwrap_or_default();
    let mut command = command_line(&raw);
    if command.is_empty() {
        command = format!("[{}]", stat.comm);
    }
    let job_cgroup = read_bounded(&dir.join("cgroup"), MAX_FILE_BYTES)
        .ok()
        .and_then(|text| CgroupFs::job_cgroup_of_pid(&text));
    Some(Process {
        pid,
        ppid: stat.ppid,
        uid,
        comm: stat.comm,
        command,
        start_ticks: stat.start_ticks,
        job_cgroup,
    })
}

fn read_bytes_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ProcError> {
    let err = |source| ProcError::Read {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    File::open(path)
        .map_err(err)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(err)?;
    Ok(out)
}

fn read_bounded(path: &Path, limit: u64) -> Result<String, ProcError> {
    let bytes = read_bytes_bounded(path, limit)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text =
            "4242 (sshd: a) (b)) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.comm, "sshd: a) (b)");
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn the_uid_is_the_real_one_from_status() {
        let text = "Name:\tsshd-session\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t2001\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status_uid(text), Some(2001));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
        assert_eq!(parse_status_uid("Uid:\tnobody\n"), None);
    }

    #[test]
    fn a_short_stat_is_no_stat() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn command_lines_join_arguments_and_hide_control_characters() {
        assert_eq!(command_line(b"sleep\x00901\x00"), "sleep 901");
        assert_eq!(command_line(b"x\njob 1  user root"), "x?job 1  user root");
        assert_eq!(command_line(b"evil\nline\x00x\x1b[2J"), "evil?line x?[2J");
        assert_eq!(command_line(b""), "");
    }

    #[test]
    fn the_live_table_holds_this_process_with_its_parent() {
        let table = snapshot(Path::new("/proc")).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let row = table.iter().find(|p| p.pid == me).unwrap();
        assert_eq!(row.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(row.uid, nix::unistd::getuid().as_raw());
        assert!(age_ms(Path::new("/proc"), "self").unwrap() < 3_600_000);
        assert!(boot_time(Path::new("/proc")).unwrap() > 1_000_000_000);
    }
}
