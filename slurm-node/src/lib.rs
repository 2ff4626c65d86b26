//! The compute node's view of Slurm, with no libslurm.
//!
//! Every module takes its roots (config dir, spool dir, `/proc`,
//! `/sys/fs/cgroup`) as parameters so tests run on fake trees.

pub mod cgroup;
pub mod conf;
pub mod confsource;
pub mod hostlist;
pub mod netinfo;
pub mod nodename;
pub mod pathglob;
pub mod prolog_records;
pub mod rpc;
pub mod select;
pub mod session;
pub mod spool;
pub mod stepd;
pub mod syslog;
mod wait;
