//! What can go wrong reading slurm.conf or cgroup.conf; every variant names
//! the file (and, where there is one, the line) an admin has to look at.

use std::io;
use std::path::PathBuf;

/// Slurm itself has no limit and loops forever on a self-include; a fixed
/// bound turns any cycle the loop check misses (say, through bind mounts)
/// into an error.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// An error reading slurm.conf, cgroup.conf or a file they include.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: Include {}: {source}", path.display(), target.display())]
    Include {
        path: PathBuf,
        line: usize,
        target: PathBuf,
        source: io::Error,
    },
    #[error(
        "{}:{line}: Include {}: that file is already being read (include loop)",
        path.display(),
        target.display()
    )]
    IncludeLoop {
        path: PathBuf,
        line: usize,
        target: PathBuf,
    },
    #[error(
        "{}:{line}: Include {}: includes are nested more than {MAX_INCLUDE_DEPTH} deep",
        path.display(),
        target.display()
    )]
    IncludeDepth {
        path: PathBuf,
        line: usize,
        target: PathBuf,
    },
}
