//! A user's session state on a compute node, for the Prolog, Epilog and
//! TaskProlog hooks and the PAM session phase: the runtime directory,
//! linger, the XDG values, and the "last job of this user" decision that
//! takes the state down, under a per-user lock.

#[cfg(feature = "hook-config")]
pub mod config;
pub mod hooks;
pub mod job_env;
pub mod last_job;
pub mod ledger;
pub mod linger;
#[cfg(feature = "hook-config")]
pub mod runner;
pub mod runtime_dir;
pub mod session_env;
pub mod strays;
