//! The job a user asked for, as squeue reports it,
//! and the checks that turn a wrong id into a clear error before any ssh
//! or srun runs.

use std::process::Command;

use slurm_node::hostlist;

use crate::client_env;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("'{given}' is not a job id: give the number squeue shows in its JOBID column")]
    BadId { given: String },
    #[error("there is no job {job}: it never existed or has ended (squeue --me lists your jobs)")]
    NoSuchJob { job: u32 },
    #[error("job {job} is {owner}'s, not yours: adopt-ssh reaches only your own jobs")]
    NotYours { job: u32, owner: String },
    #[error("job {job} is not running (its state is {state}): wait until squeue shows it RUNNING")]
    NotRunning { job: u32, state: String },
    #[error("job {job} has no node to log into (NodeList is '{list}')")]
    NoNode { job: u32, list: String },
    #[error("node {node} is not one of job {job}'s nodes ({nodes})")]
    NotItsNode {
        job: u32,
        node: String,
        nodes: String,
    },
    #[error("cannot run squeue: {source} (is Slurm's client installed and in PATH?)")]
    Squeue { source: std::io::Error },
    #[error("squeue --jobs={job} failed: {message}")]
    SqueueFailed { job: u32, message: String },
    #[error("job {job}: cannot read NodeList '{list}': {source}")]
    NodeList {
        job: u32,
        list: String,
        source: hostlist::HostlistError,
    },
}

/// What adopt-ssh needs to know about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job: u32,
    pub owner: String,
    pub uid: Option<u32>,
    pub state: String,
    pub nodes: Vec<String>,
    pub batch_host: Option<String>,
    node_list: String,
}

/// A job id as the user typed it: digits only.
pub fn parse_id(given: &str) -> Result<u32, JobError> {
    if given.is_empty() || !given.bytes().all(|b| b.is_ascii_digit()) {
        return Err(JobError::BadId {
            given: given.to_owned(),
        });
    }
    given.parse().map_err(|_| JobError::BadId {
        given: given.to_owned(),
    })
}

/// The squeue columns read: job id, user name, uid, state, node list and
/// batch host, `|`-separated. None of them is a value the job's owner
/// chooses (a job name or comment could hold any text). `%A` is the job's
/// own id, unique for each task of an array (where `%i` shows `17_3`) and
/// each component of a heterogeneous job (where `%i` shows `17+1`): the
/// id srun --jobid and pam_adopt's callerid use.
const SQUEUE_FORMAT: &str = "%A|%u|%U|%T|%N|%B";

/// Ask squeue about `job` (any state, so that an ended job still known
/// to slurmctld reads as not running rather than as missing).
pub fn look_up(job: u32) -> Result<JobInfo, JobError> {
    let out = client_env::scrub(&mut Command::new("squeue"))
        .args(["--noheader", "--states=all", "--format", SQUEUE_FORMAT])
        .arg(format!("--jobs={job}"))
        .output()
        .map_err(|source| JobError::Squeue { source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "slurm_load_jobs error: Invalid job id specified", from 22.05 on.
    if stderr.contains("Invalid job id") || out.status.success() && stdout.trim().is_empty() {
        return Err(JobError::NoSuchJob { job });
    }
    if !out.status.success() {
        return Err(JobError::SqueueFailed {
            job,
            message: stderr.trim().to_owned(),
        });
    }
    parse_squeue(job, &stdout)
}

/// Parse the [`SQUEUE_FORMAT`] line of `job`. `--jobs=17` also lists the
/// other tasks of array 17 and the other components of heterogeneous job
/// 17, under their own ids: only the line whose id is `job` counts.
pub fn parse_squeue(job: u32, text: &str) -> Result<JobInfo, JobError> {
    let id = job.to_string();
    let row = text.lines().find_map(|line| {
        let fields: Vec<&str> = line.trim().split('|').collect();
        let [shown, owner, uid, state, node_list, batch_host] = fields.as_slice() else {
            return None;
        };
        (*shown == id).then_some((*owner, *uid, *state, *node_list, *batch_host))
    });
    let (owner, uid, state, node_list, batch_host) = row.ok_or(JobError::NoSuchJob { job })?;
    let node_list = node_list.to_owned();
    let nodes = if node_list.is_empty() || node_list == "(null)" {
        Vec::new()
    } else {
        hostlist::expand(&node_list).map_err(|source| JobError::NodeList {
            job,
            list: node_list.clone(),
            source,
        })?
    };
    Ok(JobInfo {
        job,
        owner: owner.to_owned(),
        uid: uid.parse().ok(),
        state: state.to_owned(),
        nodes,
        batch_host: Some(batch_host.to_owned())
            .filter(|h| !h.is_empty() && h != "n/a" && h != "(null)"),
        node_list,
    })
}

impl JobInfo {
    /// The node to log into: `wanted` when it is one of the job's, else
    /// the batch host (where the job script runs), else the first node.
    /// Fails unless the job is the caller's (`uid`) and running.
    pub fn target(&self, uid: u32, wanted: Option<&str>) -> Result<String, JobError> {
        if self.uid != Some(uid) {
            return Err(JobError::NotYours {
                job: self.job,
                owner: self.owner.clone(),
            });
        }
        if self.state != "RUNNING" {
            return Err(JobError::NotRunning {
                job: self.job,
                state: self.state.clone(),
            });
        }
        if self.nodes.is_empty() {
            return Err(JobError::NoNode {
                job: self.job,
                list: self.node_list.clone(),
            });
        }
        if let Some(node) = wanted {
            return if self.nodes.iter().any(|n| n == node) {
                Ok(node.to_owned())
            } else {
                Err(JobError::NotItsNode {
                    job: self.job,
                    node: node.to_owned(),
                    nodes: self.node_list.clone(),
                })
            };
        }
        let first = self.nodes.first().cloned().unwrap_or_default();
        Ok(self
            .batch_host
            .clone()
            .filter(|h| self.nodes.contains(h))
            .unwrap_or(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "17|alice|2001|RUNNING|c[1-2]|c1\n";

    #[test]
    fn a_running_job_goes_to_its_batch_host_or_the_node_asked() {
        let info = parse_squeue(17, RUNNING).unwrap();
        assert_eq!(info.nodes, vec!["c1", "c2"]);
        assert_eq!(info.target(2001, None).unwrap(), "c1");
        assert_eq!(info.target(2001, Some("c2")).unwrap(), "c2");
        // Heterogeneous job 17: component 1 is job 18.
        let het = "17|alice|2001|RUNNING|c2|c2\n18|alice|2001|RUNNING|c1|c2\n";
        assert_eq!(parse_squeue(17, het).unwrap().nodes, vec!["c2"]);
        assert_eq!(parse_squeue(18, het).unwrap().nodes, vec!["c1"]);
    }

    #[test]
    fn an_array_task_is_its_own_job() {
        // Array 20 (20_[1-3]): tasks 1 and 2 are jobs 21 and 22 on c1 and
        // c2, task 3 kept the array's id; squeue --jobs=20 lists all three.
        let array = "21|alice|2001|RUNNING|c1|c1\n22|alice|2001|RUNNING|c2|c2\n20|alice|2001|PENDING||n/a\n";
        assert_eq!(parse_squeue(22, array).unwrap().nodes, vec!["c2"]);
        let base = parse_squeue(20, array).unwrap();
        assert!(matches!(
            base.target(2001, None),
            Err(JobError::NotRunning { .. })
        ));
    }

    #[test]
    fn each_wrong_job_has_its_own_error() {
        let info = parse_squeue(17, RUNNING).unwrap();
        assert!(
            matches!(info.target(2002, None), Err(JobError::NotYours { owner, .. }) if owner == "alice")
        );
        assert!(matches!(
            info.target(2001, Some("c3")),
            Err(JobError::NotItsNode { .. })
        ));
        let info = parse_squeue(17, "17|alice|2001|PENDING||n/a\n").unwrap();
        assert!(
            matches!(info.target(2001, None), Err(JobError::NotRunning { state, .. }) if state == "PENDING")
        );
        let info = parse_squeue(17, "17|alice|2001|RUNNING||n/a\n").unwrap();
        assert!(matches!(
            info.target(2001, None),
            Err(JobError::NoNode { .. })
        ));
        for other in [
            "garbage\n",
            "18|alice|2001|RUNNING|c1|c1\n",
            "170|alice|2001|RUNNING|c1|c1\n",
        ] {
            assert!(
                matches!(parse_squeue(17, other), Err(JobError::NoSuchJob { .. })),
                "{other}"
            );
        }
    }

    #[test]
    fn a_node_list_that_does_not_expand_is_an_error_not_a_guess() {
        assert!(matches!(
            parse_squeue(17, "17|alice|2001|RUNNING|c[1-|c1\n"),
            Err(JobError::NodeList { .. })
        ));
    }

    #[test]
    fn only_digits_are_job_ids() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in ["", "-1", "4 2", "17_3", "x", "99999999999"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}
