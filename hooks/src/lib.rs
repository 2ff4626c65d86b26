//! The Prolog, Epilog and TaskProlog hooks' view of a user's session state
//! on a compute node: linger or the runtime dir while the user has jobs,
//! the ledger of the jobs the hooks saw start and end, and the "last job
//! of this user" decision that takes the state down, under a per-user
//! lock. The PAM module needs none of it; what it shares with the hooks
//! (the runtime dir and the XDG values) is in `slurm_node::session`.

pub mod config;
pub mod job_env;
pub mod last_job;
pub mod ledger;
pub mod lifecycle;
pub mod linger;
pub mod runner;
pub mod strays;
