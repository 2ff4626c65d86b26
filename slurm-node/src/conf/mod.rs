//! slurm.conf and cgroup.conf, read the way Slurm's own parser reads them.
//!
//! Only what a compute node needs is typed; every other key is skipped so
//! that configs written for any Slurm from 22.05 on load, including keys
//! added after this code was written. What is read is read strictly: a bad
//! number or a malformed line is an error naming the file and line, because
//! guessing would let the module act on a config slurmd itself rejects.
//!
//! Lexical rules, as in Slurm: per physical line an unescaped `#` starts a
//! comment, an odd run of trailing backslashes joins the next line, and then
//! `\x` becomes `x` throughout the joined line. Keys are case-insensitive, a
//! value is a double-quoted string or a run of non-blanks, and a plain key
//! that is given twice keeps its last value. `Include` paths that are
//! relative are taken from the directory of the top-level file, as Slurm
//! 23.02 and later do.
//!
//! Layout, each file importing only those before it: `error` (what all of
//! them return) and `provenance` (where each setting was written) are
//! leaves; `lexer` reads files, lines and includes; `values` reads numbers,
//! booleans and lists; `nodes`, `cgroup` and `slurm` give the keys their
//! meaning. No file imports this one.

mod cgroup;
mod error;
mod lexer;
mod nodes;
mod provenance;
mod slurm;
mod values;

#[cfg(test)]
mod tests;

pub use cgroup::{CgroupConf, DEFAULT_CGROUP_MOUNTPOINT};
pub use error::{ConfError, FileRefusal, MAX_INCLUDE_DEPTH};
pub use lexer::MAX_FILE_BYTES;
pub use nodes::{MAX_NODES, NodeEntry};
pub use provenance::{Origin, Provenance, Setting};
pub use slurm::{
    DEFAULT_MESSAGE_TIMEOUT_SECS, DEFAULT_SLURMD_PORT, DEFAULT_SPOOL_DIR, DEFAULT_TCP_TIMEOUT_SECS,
    SlurmConf,
};
