//! Who is logged into which job: the adopted logins of one job's extern
//! step, found in a process table.
//!
//! An adopted login is the process pam_adopt moved into the extern step
//! (sshd's per-connection process, or whatever process ran the PAM stack
//! of another service), with everything it started. In the table it is a
//! root-owned process in the extern step whose parent is outside it: the
//! PAM stack runs as root (sshd's `[priv]` process before OpenSSH 9.8, the
//! root `sshd-session` from it on), and the user's own processes cannot
//! become root. The extern stepd's own children (its
//! placeholder sleep) are the step's, not a login's; a process whose login
//! is gone (reparented to init or to a subreaper), with everything under
//! it, is kept apart as "not under a login".

use std::collections::{HashMap, HashSet};

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
    /// Processes in the step under neither a login nor the stepd: each
    /// left-behind process followed by its descendants.
    pub unattached: Vec<Process>,
}

/// The logins in `job`'s extern step. `stepd_pid` is the step's
/// slurmstepd when known; without it, a root process named `slurmstepd`
/// in the step counts as the stepd.
///
/// A process is in the step when its cgroup is `job_<job>/step_extern`,
/// or, where the job directory has no id in its name (26.05 names it by
/// SLUID), the same job directory's `step_extern` as the stepd's own.
pub fn job_logins(table: &[Process], job: u32, stepd_pid: Option<i32>) -> JobLogins {
    let stepd_job_dir = stepd_pid
        .and_then(|pid| table.iter().find(|p| p.pid == pid))
        .and_then(|p| p.job_cgroup.as_ref())
        .filter(|c| c.step_dir == EXTERN_STEP_DIR && c.job_id.is_none_or(|j| j == job))
        .map(|c| c.job_dir.as_str());
    let in_step: Vec<&Process> = table
        .iter()
        .filter(|p| {
            p.job_cgroup.as_ref().is_some_and(|c| {
                c.step_dir == EXTERN_STEP_DIR
                    && (c.job_id == Some(job) || Some(c.job_dir.as_str()) == stepd_job_dir)
            })
        })
        .collect();
    let is_stepd = |p: &Process| match stepd_pid {
        Some(pid) => p.pid == pid,
        None => p.comm == "slurmstepd" && p.uid == 0,
    };
    let stepds: Vec<i32> = in_step
        .iter()
        .filter(|p| is_stepd(p))
        .map(|p| p.pid)
        .chain(stepd_pid)
        .collect();
    let mut children: HashMap<i32, Vec<&Process>> = HashMap::new();
    for p in &in_step {
        children.entry(p.ppid).or_default().push(p);
    }
    for list in children.values_mut() {
        list.sort_by_key(|p| p.pid);
    }
    let members: HashSet<i32> = in_step.iter().map(|p| p.pid).collect();

    let mut result = JobLogins::default();
    for p in &in_step {
        if stepds.contains(&p.pid) || members.contains(&p.ppid) || stepds.contains(&p.ppid) {
            continue;
        }
        // A root process whose parent is outside the step is a login even
        // under pid 1: sshd started per connection by systemd (ssh.socket,
        // Accept=yes), sshd as a container's pid 1, and sessions that
        // outlived `systemctl restart ssh` all have pid 1 as parent. A
        // user's process there was left behind by a login that is gone.
        if p.uid != 0 {
            result.unattached.push((*p).clone());
            result.unattached.extend(descendants(&children, p.pid));
            continue;
        }
        result.logins.push(Login {
            leader: (*p).clone(),
            processes: descendants(&children, p.pid),
        });
    }
    result
}

/// The processes under `root`, depth first: parents before children,
/// siblings by pid. Iterative, with each pid taken once, so neither a deep
/// tree nor a doctored table with a cycle can exhaust the stack or loop.
fn descendants(children: &HashMap<i32, Vec<&Process>>, root: i32) -> Vec<Process> {
    let mut ordered = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut stack: Vec<&Process> = children
        .get(&root)
        .map(|c| c.iter().rev().copied().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if !seen.insert(p.pid) {
            continue;
        }
        ordered.push(p.clone());
        if let Some(c) = children.get(&p.pid) {
            stack.extend(c.iter().rev().copied());
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::JobCgroup;

    fn p(pid: i32, ppid: i32, uid: u32, comm: &str, job: Option<u32>) -> Process {
        Process {
            pid,
            ppid,
            uid,
            comm: comm.to_owned(),
            command: comm.to_owned(),
            start_ticks: 0,
            job_cgroup: job.map(|j| JobCgroup {
                job_dir: format!("/system.slice/slurmstepd.scope/job_{j}"),
                job_id: Some(j),
                step_dir: EXTERN_STEP_DIR.to_owned(),
            }),
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
    fn a_sluid_named_job_is_the_one_its_stepd_is_in() {
        // Slurm 26.05 on cgroup v2: job directories named by SLUID. Job 7's
        // stepd (100) is in s7; job 8's login (400) is in s8.
        let sluid = |name: &str| {
            Some(JobCgroup {
                job_dir: format!("/system.slice/slurmstepd.scope/{name}"),
                job_id: None,
                step_dir: EXTERN_STEP_DIR.to_owned(),
            })
        };
        let mut t = table();
        for p in &mut t {
            if p.job_cgroup.is_some() {
                let name = if p.pid == 400 { "s8" } else { "s7" };
                p.job_cgroup = sluid(name);
            }
        }
        let got = job_logins(&t, 7, Some(100));
        assert_eq!(got.logins.len(), 1);
        assert_eq!(got.logins[0].leader.pid, 200);
        let orphans: Vec<i32> = got.unattached.iter().map(|p| p.pid).collect();
        assert_eq!(orphans, vec![300]);
        // Without the stepd's pid the directory cannot be tied to job 7.
        assert!(job_logins(&t, 7, None).logins.is_empty());
        // A stepd pid that is another job's leaves job 7's logins out.
        assert!(
            job_logins(&t, 7, Some(400))
                .logins
                .iter()
                .all(|l| l.leader.pid != 200)
        );
    }

    #[test]
    fn a_left_behind_process_is_listed_with_its_children() {
        let mut t = table();
        t.push(p(301, 300, 2001, "worker", Some(7)));
        t.push(p(302, 301, 2001, "worker", Some(7)));
        let got = job_logins(&t, 7, Some(100));
        let orphans: Vec<i32> = got.unattached.iter().map(|p| p.pid).collect();
        assert_eq!(orphans, vec![300, 301, 302]);
    }

    #[test]
    fn a_user_process_named_like_the_stepd_or_sshd_is_neither() {
        let mut t = table();
        // Renamed with prctl(PR_SET_NAME): the comm is the user's to set.
        t.push(p(700, 1, 2001, "slurmstepd", Some(7)));
        t.push(p(701, 700, 2001, "sleep", Some(7)));
        t.push(p(702, 50, 2001, "sshd", Some(7)));
        let got = job_logins(&t, 7, None);
        assert!(got.logins.iter().all(|l| l.leader.uid == 0));
        let orphans: Vec<i32> = got.unattached.iter().map(|p| p.pid).collect();
        assert!(
            orphans.contains(&700) && orphans.contains(&701) && orphans.contains(&702),
            "{orphans:?}"
        );
    }

    #[test]
    fn a_root_process_under_pid_1_is_a_login_a_user_s_is_not() {
        // systemd as pid 1 starting sshd per connection (ssh.socket with
        // Accept=yes), and sshd itself as a container's pid 1.
        for (init, session) in [("systemd", "sshd"), ("sshd", "sshd-session")] {
            let t = vec![
                p(1, 0, 0, init, None),
                p(100, 1, 0, "slurmstepd", Some(7)),
                p(200, 1, 0, session, Some(7)),
                p(201, 200, 2001, session, Some(7)),
                p(300, 1, 2001, "sshd", Some(7)),
            ];
            let got = job_logins(&t, 7, Some(100));
            assert_eq!(got.logins.len(), 1, "{init}");
            assert_eq!(got.logins[0].leader.pid, 200, "{init}");
            assert_eq!(got.unattached.len(), 1, "{init}");
            assert_eq!(got.unattached[0].pid, 300, "{init}");
        }
    }

    #[test]
    fn a_deep_or_doctored_table_is_walked_without_recursion() {
        let mut t = vec![p(50, 1, 0, "sshd", None), p(200, 50, 0, "sshd", Some(7))];
        for pid in 201..20_201 {
            t.push(p(pid, pid - 1, 2001, "bash", Some(7)));
        }
        let got = job_logins(&t, 7, None);
        assert_eq!(got.logins[0].processes.len(), 20_000);
        // A doctored table where a descendant repeats the leader's pid:
        // each pid is listed once and the walk ends.
        let dup = vec![
            p(50, 1, 0, "sshd", None),
            p(200, 50, 0, "sshd", Some(7)),
            p(201, 200, 2001, "bash", Some(7)),
            p(200, 201, 2001, "bash", Some(7)),
        ];
        let got = job_logins(&dup, 7, None);
        assert_eq!(got.logins.len(), 1);
        let pids: Vec<i32> = got.logins[0].processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![201]);
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
