//! Who is logged into which job: the adopted logins of one job's extern
//! step, found in a process table.
//!
//! An adopted login is the process pam_adopt moved into the extern step
//! (sshd's per-connection process, or whatever process ran the PAM stack
//! of another service), with everything it started. In the table it is a
//! process in the extern step whose parent is outside it. The extern
//! stepd's own children (its placeholder sleep) are the step's, not a
//! login's; a process whose login is gone (reparented to init or to a
//! subreaper) is kept apart as "not under a login".

use super::proc_table::Process;

/// The step directory of an extern step in `/proc/<pid>/cgroup`.
pub const EXTERN_STEP_DIR: &str = "step_extern";

/// One adopted login and the processes under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The process the module adopted.
    pub leader: Process,
    /// Its descendants in the step, parents before children.
    pub processes: Vec<Process>,
}

/// What one job's extern step holds on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobLogins {
    pub logins: Vec<Login>,
    /// Processes in the step under neither a login nor the stepd.
    pub unattached: Vec<Process>,
}

/// The logins in `job`'s extern step. `stepd_pid` is the step's
/// slurmstepd when known; without it, any process named `slurmstepd` in
/// the step counts as the stepd.
pub fn job_logins(table: &[Process], job: u32, stepd_pid: Option<i32>) -> JobLogins {
    let in_step: Vec<&Process> = table
        .iter()
        .filter(|p| {
            p.job_step
                .as_ref()
                .is_some_and(|(j, s)| *j == job && s == EXTERN_STEP_DIR)
        })
        .collect();
    let is_stepd = |p: &Process| match stepd_pid {
        Some(pid) => p.pid == pid,
        None => p.comm == "slurmstepd",
    };
    let stepds: Vec<i32> = in_step
        .iter()
        .filter(|p| is_stepd(p))
        .map(|p| p.pid)
        .chain(stepd_pid)
        .collect();
    let member = |pid: i32| in_step.iter().any(|p| p.pid == pid);

    let mut result = JobLogins::default();
    for p in &in_step {
        if stepds.contains(&p.pid) || member(p.ppid) || stepds.contains(&p.ppid) {
            continue;
        }
        // A root whose parent is outside the step: sshd's listener (or
        // another service's daemon) forked it, so it is a login; anything
        // else was left behind by one that is gone.
        if p.ppid <= 1 || !looks_like_login(p) {
            result.unattached.push((*p).clone());
            continue;
        }
        result.logins.push(Login {
            leader: (*p).clone(),
            processes: descendants(&in_step, p.pid),
        });
    }
    result
}

/// Whether a process at the top of a step subtree is one a PAM stack
/// ran in: sshd's per-connection process (`sshd` before OpenSSH 9.8,
/// `sshd-session` after), or a process still owned by root whose parent
/// is a daemon outside the job (another PAM service). A user's process
/// reparented out of its login is neither.
fn looks_like_login(p: &Process) -> bool {
    p.comm == "sshd" || p.comm == "sshd-session" || p.uid == 0
}

/// The processes under `root` in the step, depth first: parents before
/// children, siblings by pid.
fn descendants(step: &[&Process], root: i32) -> Vec<Process> {
    let mut ordered = Vec::new();
    order(step, root, &mut ordered);
    ordered
}

fn order(step: &[&Process], parent: i32, out: &mut Vec<Process>) {
    let mut children: Vec<&&Process> = step.iter().filter(|p| p.ppid == parent).collect();
    children.sort_by_key(|p| p.pid);
    for c in children {
        // A pid cycle cannot happen in a real table; the depth bound keeps
        // a doctored one from looping.
        if out.len() > step.len() {
            return;
        }
        out.push((*c).clone());
        order(step, c.pid, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, uid: u32, comm: &str, job: Option<u32>) -> Process {
        Process {
            pid,
            ppid,
            uid,
            comm: comm.to_owned(),
            command: comm.to_owned(),
            start_ticks: 0,
            job_step: job.map(|j| (j, EXTERN_STEP_DIR.to_owned())),
        }
    }

    fn table() -> Vec<Process> {
        vec![
            p(1, 0, 0, "systemd", None),
            p(50, 1, 0, "sshd", None),
            p(100, 1, 0, "slurmstepd", Some(7)),
            p(101, 100, 2001, "sleep", Some(7)),
            p(200, 50, 0, "sshd", Some(7)),
            p(201, 200, 2001, "sshd", Some(7)),
            p(202, 201, 2001, "bash", Some(7)),
            p(203, 202, 2001, "sleep", Some(7)),
            p(300, 1, 2001, "nohup-job", Some(7)),
            p(400, 50, 0, "sshd", Some(8)),
            p(500, 50, 0, "sshd", None),
        ]
    }

    #[test]
    fn a_login_is_the_adopted_sshd_with_its_tree() {
        let got = job_logins(&table(), 7, Some(100));
        assert_eq!(got.logins.len(), 1);
        assert_eq!(got.logins[0].leader.pid, 200);
        let pids: Vec<i32> = got.logins[0].processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![201, 202, 203]);
        let orphans: Vec<i32> = got.unattached.iter().map(|p| p.pid).collect();
        assert_eq!(orphans, vec![300]);
    }

    #[test]
    fn the_stepd_and_its_placeholder_are_not_logins_even_unnamed() {
        let got = job_logins(&table(), 7, None);
        assert!(got.logins.iter().all(|l| l.leader.pid != 100));
        assert!(got.unattached.iter().all(|p| p.pid != 101 && p.pid != 100));
    }

    #[test]
    fn other_jobs_and_outsiders_stay_out() {
        let got = job_logins(&table(), 8, None);
        assert_eq!(got.logins.len(), 1);
        assert_eq!(got.logins[0].leader.pid, 400);
        assert!(job_logins(&table(), 9, None).logins.is_empty());
    }

    #[test]
    fn a_user_process_with_a_daemon_parent_is_not_a_login() {
        let mut t = table();
        t.push(p(600, 50, 2001, "evil", Some(7)));
        let got = job_logins(&t, 7, Some(100));
        assert!(got.logins.iter().all(|l| l.leader.pid != 600));
        assert!(got.unattached.iter().any(|p| p.pid == 600));
    }
}
