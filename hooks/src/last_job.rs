//! "Is this the user's last job on the node?", decided from the spool
//! directory's extern steps and their owners plus the ledger's records,
//! never from `scontrol listpids` or a `ps` per pid.
//!
//! The decision is a pure function of what was gathered, so each branch
//! is a table row in the tests; gathering is a thin layer over the spool
//! scan and the pipelined STEP_UID queries the PAM module uses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ledger::Marker;
use slurm_node::spool::{self, SpoolError};
use slurm_node::stepd::{ScanAnswer, StepdPeers, scan_step_uids};

/// The user's extern steps as the stepds describe them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSteps {
    /// Jobs whose extern stepd answered with the user's uid.
    pub jobs: Vec<u32>,
    /// Jobs whose stepd did not say who owns it (hung, garbage): they
    /// might be the user's. Job 0 stands for "the scan itself failed".
    pub unknown: Vec<(u32, String)>,
    /// Extern steps of other users, for the log.
    pub others: usize,
    /// Every job with any step socket in the spool (batch and task steps
    /// too, so this works without `PrologFlags=Contain`): a job recorded
    /// as started is not a leftover while it has one.
    pub present: Vec<u32>,
}

/// Ask every extern stepd of `node_name` who owns it, within `deadline`.
/// A socket whose stepd is gone (connection refused, file vanished) is a
/// leftover, not a job.
pub fn gather_live_steps(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
    stepd_peers: &StepdPeers,
    uid: u32,
    deadline: Instant,
) -> Result<LiveSteps, SpoolError> {
    // A spool directory that is not there is not "no jobs" here: slurmd
    // always has one, so the config points elsewhere or the node is
    // broken, and any running job could be hidden.
    if let Err(e) = std::fs::symlink_metadata(spool_dir) {
        return Ok(LiveSteps {
            unknown: vec![(0, format!("spool directory {}: {e}", spool_dir.display()))],
            ..LiveSteps::default()
        });
    }
    let listing = spool::list_steps(spool_dir, node_name, trusted_uids)?;
    let mut present: Vec<u32> = listing.steps.iter().map(|s| s.job_id).collect();
    present.dedup();
    let mut live = LiveSteps {
        present,
        ..LiveSteps::default()
    };
    let externs: Vec<_> = listing
        .steps
        .iter()
        .filter(|s| s.step_id == slurm_node::spool::EXTERN_STEP_ID)
        .collect();
    let paths: Vec<PathBuf> = externs.iter().map(|s| s.path.clone()).collect();
    // Only the owners are wanted: every connection closes as it answers.
    let answers = scan_step_uids(&paths, stepd_peers, deadline, |_| false);
    for (step, answer) in externs.iter().zip(answers) {
        match answer {
            ScanAnswer::Closed { uid: owner } | ScanAnswer::Kept { uid: owner, .. } => {
                if owner == uid {
                    live.jobs.push(step.job_id);
                } else {
                    live.others += 1;
                }
            }
            // The stepd is gone (its socket may linger): no job of anyone.
            ScanAnswer::Failed(e) if e.is_stale_socket() => {}
            // Hung, garbled, or a listener running as someone else (a
            // SlurmdUser this slurm.conf does not name, say), which is
            // never asked: whose job it holds is unknown, so the state is
            // kept for it.
            ScanAnswer::Failed(e) => live.unknown.push((step.job_id, e.to_string())),
        }
    }
    live.jobs.sort_unstable();
    live.jobs.dedup();
    Ok(live)
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The job whose Epilog asks.
    pub ending_job: u32,
    /// Jobs whose Prolog ran and whose Epilog has not.
    pub started: &'a [Marker],
    /// Jobs whose Epilog has run (or runs now).
    pub ending: &'a [Marker],
    pub live: &'a LiveSteps,
    /// How long a started job may go without an extern step before its
    /// record is taken for a leftover (a Prolog that ran for a job that
    /// never started, say).
    pub start_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No other job of the user is on the node: remove the user's state.
    Last,
    /// These other jobs still need it.
    NotLast { jobs: Vec<u32> },
    /// No other job is known, but these stepds would not say whose they
    /// are: keep the state rather than pull it from under a job.
    Unsure { jobs: Vec<u32> },
}

/// Records that no longer describe a job and can be deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub started: Vec<u32>,
    pub ending: Vec<u32>,
}

pub fn decide(e: &Evidence<'_>) -> (Verdict, Leftovers) {
    let live: BTreeSet<u32> = e.live.jobs.iter().copied().collect();
    let present: BTreeSet<u32> = e.live.present.iter().copied().collect();
    let unknown: BTreeSet<u32> = e.live.unknown.iter().map(|(j, _)| *j).collect();
    // With a failed scan, the spool proves nothing: no record is stale.
    let scan_complete = !unknown.contains(&0);
    let mut done: BTreeSet<u32> = e.ending.iter().map(|m| m.job_id).collect();
    done.insert(e.ending_job);

    let mut others: BTreeSet<u32> = live.difference(&done).copied().collect();
    let mut leftovers = Leftovers::default();
    for m in e.started {
        if done.contains(&m.job_id) {
            continue;
        }
        // A record is the best evidence of a job there is; it is dropped
        // only when a complete scan shows no step socket of that job at
        // all, long after the Prolog that wrote it.
        let stale = scan_complete
            && !live.contains(&m.job_id)
            && !present.contains(&m.job_id)
            && !unknown.contains(&m.job_id)
            && m.age >= e.start_grace;
        if stale {
            leftovers.started.push(m.job_id);
        } else {
            others.insert(m.job_id);
        }
    }
    for m in e.ending {
        // Once its stepd is gone, an ending job can never look live again.
        if scan_complete && !live.contains(&m.job_id) && !unknown.contains(&m.job_id) {
            leftovers.ending.push(m.job_id);
        }
    }
    if !others.is_empty() {
        return (
            Verdict::NotLast {
                jobs: others.into_iter().collect(),
            },
            leftovers,
        );
    }
    let unsure: Vec<u32> = unknown.into_iter().filter(|j| !done.contains(j)).collect();
    if unsure.is_empty() {
        (Verdict::Last, leftovers)
    } else {
        (Verdict::Unsure { jobs: unsure }, leftovers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);

    fn m(job_id: u32, age_s: u64) -> Marker {
        Marker {
            job_id,
            age: Duration::from_secs(age_s),
        }
    }

    fn live(jobs: &[u32], unknown: &[u32]) -> LiveSteps {
        LiveSteps {
            jobs: jobs.to_vec(),
            unknown: unknown.iter().map(|&j| (j, "timeout".into())).collect(),
            others: 0,
            present: jobs.to_vec(),
        }
    }

    fn with_present(mut steps: LiveSteps, present: &[u32]) -> LiveSteps {
        steps.present.extend_from_slice(present);
        steps
    }

    fn run(
        ending_job: u32,
        started: &[Marker],
        ending: &[Marker],
        live: &LiveSteps,
    ) -> (Verdict, Leftovers) {
        decide(&Evidence {
            ending_job,
            started,
            ending,
            live,
            start_grace: GRACE,
        })
    }

    /// name, ending job, started records, ending records, steps, verdict.
    type Row = (
        &'static str,
        u32,
        Vec<Marker>,
        Vec<Marker>,
        LiveSteps,
        Verdict,
    );

    #[test]
    fn table() {
        use Verdict::*;
        let not_last = |jobs: &[u32]| NotLast {
            jobs: jobs.to_vec(),
        };
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("alone, own stepd already gone",  1, vec![], vec![m(1, 0)], live(&[], &[]), Last),
            ("alone, own stepd still up",      1, vec![], vec![m(1, 0)], live(&[1], &[]), Last),
            ("another job running",            1, vec![m(2, 900)], vec![m(1, 0)], live(&[2], &[]), not_last(&[2])),
            ("job from before the hooks",      1, vec![], vec![m(1, 0)], live(&[3], &[]), not_last(&[3])),
            ("prolog ran, stepd not yet up",   1, vec![m(4, 2)], vec![m(1, 0)], live(&[], &[]), not_last(&[4])),
            ("prolog record past its grace",   1, vec![m(4, 600)], vec![m(1, 0)], live(&[], &[]), Last),
            ("old record, job has a batch step", 1, vec![m(4, 600)], vec![m(1, 0)], with_present(live(&[], &[]), &[4]), not_last(&[4])),
            ("other job's epilog ran first",   1, vec![], vec![m(1, 0), m(2, 0)], live(&[1, 2], &[]), Last),
            ("a stepd that will not answer",   1, vec![], vec![m(1, 0)], live(&[], &[5]), Unsure { jobs: vec![5] }),
            ("unanswered but known ending",    1, vec![], vec![m(1, 0), m(5, 1)], live(&[], &[5]), Last),
            ("unanswered, known running",      1, vec![m(5, 700)], vec![m(1, 0)], live(&[], &[5]), not_last(&[5])),
            ("scan failed, old record counts", 1, vec![m(4, 9000)], vec![m(1, 0)], live(&[], &[0]), not_last(&[4])),
            ("scan failed, nothing recorded",  1, vec![], vec![m(1, 0)], live(&[], &[0]), Unsure { jobs: vec![0] }),
            ("running beats unanswered",       1, vec![], vec![m(1, 0)], live(&[2], &[5]), not_last(&[2])),
        ];
        for (name, job, started, ending, live, want) in rows {
            let (got, _) = run(job, &started, &ending, &live);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_failed_scan_prunes_nothing() {
        let (_, left) = run(1, &[m(4, 9000)], &[m(1, 0), m(2, 50)], &live(&[], &[0]));
        assert_eq!(left, Leftovers::default());
    }

    #[test]
    fn leftovers_are_records_without_a_job() {
        let started = [m(4, 600), m(6, 1), m(7, 900)];
        let ending = [m(1, 0), m(2, 50), m(3, 50)];
        let steps = live(&[3, 7], &[]);
        let (verdict, left) = run(1, &started, &ending, &steps);
        assert_eq!(verdict, Verdict::NotLast { jobs: vec![6, 7] });
        assert_eq!(left.started, [4]);
        assert_eq!(left.ending, [1, 2]);
    }

    /// What each of two Epilogs of one user sees, in the order the lock
    /// serialises them, with both stepds still up when each looks: the
    /// first keeps the state, the second takes it down. (The interleavings
    /// themselves are run in `hooks::tests`.)
    #[test]
    fn the_second_of_two_serialised_epilogs_sees_the_last_job() {
        let steps = live(&[1, 2], &[]);
        let started_before = [m(1, 900), m(2, 900)];
        // First holder: job 1 has just marked itself ending.
        let started_first: Vec<Marker> = started_before
            .iter()
            .copied()
            .filter(|x| x.job_id != 1)
            .collect();
        let (first, _) = run(1, &started_first, &[m(1, 0)], &steps);
        // Second holder sees what the first recorded.
        let (second, _) = run(2, &[], &[m(1, 0), m(2, 0)], &steps);
        assert_eq!(first, Verdict::NotLast { jobs: vec![2] });
        assert_eq!(second, Verdict::Last);
    }
}
