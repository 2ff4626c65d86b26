//! `adoptctl sessions`: who is logged into which job on this node.
//!
//! The jobs are the extern stepds in the spool directory (the sockets the
//! module itself trusts, checked the same way); each stepd says whose job
//! it is and which pid it runs as. The logins are read from /proc: the
//! processes in the job's extern step whose parent is outside it, with
//! their trees, their TCP peer and their start time.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adopt_login::node::NodeView;
use adopt_login::options::Options;
use slurm_node::netinfo;
use slurm_node::session::logins::{self, JobLogins};
use slurm_node::session::proc_table::{self, Process};
use slurm_node::spool;
use slurm_node::stepd::StepdClient;

use crate::report::json_string;

/// How long one stepd may take to say whose job it is.
const STEPD_DEADLINE: Duration = Duration::from_secs(2);

/// One job on this node, as the report shows it.
#[derive(Debug)]
struct JobReport {
    job: u32,
    uid: Option<u32>,
    stepd_pid: Option<i32>,
    /// Why the stepd could not be asked, when it could not.
    stepd_error: Option<String>,
    found: JobLogins,
}

/// Facts about the clock that turn start ticks into times.
#[derive(Debug, Clone, Copy)]
struct Clock {
    boot: u64,
    ticks: u64,
    now: u64,
}

impl Clock {
    fn started(&self, p: &Process) -> u64 {
        self.boot + p.start_ticks / self.ticks
    }
}

pub fn run(module_args: &[String], json: bool) -> ExitCode {
    let (opts, warnings) = Options::parse(module_args);
    for w in &warnings {
        eprintln!("adoptctl sessions: warning: {w}");
    }
    let view = match NodeView::load(&opts) {
        Ok(view) => view,
        Err(e) => {
            eprintln!("adoptctl sessions: {e}");
            return ExitCode::from(2);
        }
    };
    let listing = match spool::extern_steps(&view.spool_dir, &view.node.name, &view.trusted_uids) {
        Ok(listing) => listing,
        Err(e) => {
            eprintln!("adoptctl sessions: {e}");
            return ExitCode::from(2);
        }
    };
    for (path, why) in &listing.skipped {
        eprintln!("adoptctl sessions: skipped {}: it {why}", path.display());
    }
    let proc_root = Path::new("/proc");
    let (table, clock) = match (
        proc_table::snapshot(proc_root),
        proc_table::boot_time(proc_root),
    ) {
        (Ok(table), Ok(boot)) => (
            table,
            Clock {
                boot,
                ticks: proc_table::ticks_per_second(),
                now: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
        ),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("adoptctl sessions: {e}");
            return ExitCode::from(2);
        }
    };
    let mut jobs = Vec::new();
    for step in listing
        .steps
        .iter()
        .filter(|s| s.het_component.is_none_or(|c| c == 0))
    {
        let (uid, stepd_pid, stepd_error) = ask_stepd(&step.path, &view);
        jobs.push(JobReport {
            job: step.job_id,
            uid,
            stepd_pid,
            stepd_error,
            found: logins::job_logins(&table, step.job_id, stepd_pid),
        });
    }
    if json {
        print!("{}", render_json(&jobs, &clock));
    } else {
        print!("{}", render_text(&view.node.name, &jobs, &clock));
    }
    ExitCode::SUCCESS
}

fn ask_stepd(path: &Path, view: &NodeView) -> (Option<u32>, Option<i32>, Option<String>) {
    let deadline = Instant::now() + STEPD_DEADLINE;
    let mut client = match StepdClient::connect(path, &view.stepd_peers, deadline) {
        Ok(c) => c,
        Err(e) => return (None, None, Some(e.to_string())),
    };
    let uid = client.step_uid();
    let pid = client.daemon_pid();
    let error = match (&uid, &pid) {
        (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    (uid.ok(), pid.ok(), error)
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// The client's end of the login's TCP connection, if it has one.
fn remote_of(p: &Process) -> Option<String> {
    let conn = netinfo::own_connection(Path::new("/proc"), &p.pid.to_string()).ok()??;
    Some(conn.canonical().remote.to_string())
}

fn render_text(node: &str, jobs: &[JobReport], clock: &Clock) -> String {
    let mut out = String::new();
    if jobs.is_empty() {
        let _ = writeln!(out, "no jobs with an extern step on {node}");
        return out;
    }
    for j in jobs {
        let user = j.uid.map_or("?".to_owned(), user_name);
        let _ = write!(out, "job {}  user {user}", j.job);
        if let Some(pid) = j.stepd_pid {
            let _ = write!(out, "  extern stepd pid {pid}");
        }
        if let Some(e) = &j.stepd_error {
            let _ = write!(out, "  (stepd not asked: {e})");
        }
        let _ = writeln!(
            out,
            "  {} adopted login{}",
            j.found.logins.len(),
            if j.found.logins.len() == 1 { "" } else { "s" }
        );
        for l in &j.found.logins {
            let started = clock.started(&l.leader);
            let _ = writeln!(
                out,
                "  login pid {} ({})  from {}  since {} ({} ago)",
                l.leader.pid,
                l.leader.comm,
                remote_of(&l.leader).unwrap_or_else(|| "-".to_owned()),
                utc_timestamp(started),
                span(clock.now.saturating_sub(started)),
            );
            for p in &l.processes {
                let _ = writeln!(
                    out,
                    "    {:>7} {:<12} {}",
                    p.pid,
                    user_name(p.uid),
                    p.command
                );
            }
        }
        for p in &j.found.unattached {
            let _ = writeln!(
                out,
                "  not under a login: {} {} {}",
                p.pid,
                user_name(p.uid),
                p.command
            );
        }
    }
    out
}

fn render_json(jobs: &[JobReport], clock: &Clock) -> String {
    let process = |p: &Process| {
        format!(
            "{{\"pid\":{},\"uid\":{},\"user\":{},\"command\":{},\"started\":{}}}",
            p.pid,
            p.uid,
            json_string(&user_name(p.uid)),
            json_string(&p.command),
            json_string(&utc_timestamp(clock.started(p)))
        )
    };
    let list = |ps: &[Process]| ps.iter().map(process).collect::<Vec<_>>().join(",");
    let mut out = String::from("[");
    for (i, j) in jobs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let logins: Vec<String> = j
            .found
            .logins
            .iter()
            .map(|l| {
                let started = clock.started(&l.leader);
                format!(
                    "{{\"pid\":{},\"command\":{},\"remote\":{},\"started\":{},\"seconds\":{},\"processes\":[{}]}}",
                    l.leader.pid,
                    json_string(&l.leader.command),
                    remote_of(&l.leader).map_or("null".to_owned(), |r| json_string(&r)),
                    json_string(&utc_timestamp(started)),
                    clock.now.saturating_sub(started),
                    list(&l.processes)
                )
            })
            .collect();
        let _ = write!(
            out,
            "\n{{\"job\":{},\"uid\":{},\"user\":{},\"stepd_pid\":{},\"stepd_error\":{},\"logins\":[{}],\"unattached\":[{}]}}",
            j.job,
            j.uid.map_or("null".to_owned(), |u| u.to_string()),
            j.uid
                .map_or("null".to_owned(), |u| json_string(&user_name(u))),
            j.stepd_pid.map_or("null".to_owned(), |p| p.to_string()),
            j.stepd_error
                .as_deref()
                .map_or("null".to_owned(), json_string),
            logins.join(","),
            list(&j.found.unattached)
        );
    }
    out.push_str("\n]\n");
    out
}

/// `1h02m03s`, `4m05s`, `6s`.
fn span(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_timestamp(epoch: u64) -> String {
    let days = i64::try_from(epoch / 86_400).unwrap_or(0);
    let rem = epoch % 86_400;
    let (y, mo, d) = civil_date(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01: eras of
/// 400 years (146,097 days) counted from 0000-03-01, so that the leap day
/// falls at the end of each year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_796_386_215), "2026-12-04T12:10:15Z");
        assert_eq!(utc_timestamp(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn spans_read_like_durations() {
        assert_eq!(span(6), "6s");
        assert_eq!(span(245), "4m05s");
        assert_eq!(span(3723), "1h02m03s");
    }
}
