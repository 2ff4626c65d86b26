//! What can go wrong reading slurm.conf or cgroup.conf; every variant names
//! the file (and, where there is one, the line) an admin has to look at.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

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

/// Why the reader refused a config file it could open. It travels as the
/// inner error of the `io::Error` in [`ConfError::Read`] and
/// [`ConfError::Include`] (see [`ConfError::refusal`]), so `adoptctl
/// doctor` can name the fix from the very check the module made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefusal {
    /// The path is a symlink someone other than root or the reader owns.
    LinkOwner { uid: u32 },
    /// The link's target is a link too.
    LinkToLink { target: PathBuf },
    /// Neither a regular file nor `/dev/null`.
    NotRegular { via: Option<PathBuf> },
    /// Owned by someone other than root or the reader.
    Owner { uid: u32, via: Option<PathBuf> },
    /// Writable by others.
    Writable { mode: u32, via: Option<PathBuf> },
    /// Writable by its group, where only the owner may write (slurmd's
    /// configless cache).
    GroupWritable { mode: u32, via: Option<PathBuf> },
    /// Longer than the cap.
    TooLarge { limit: u64, via: Option<PathBuf> },
}

impl FileRefusal {
    /// The file the refusal is about: the link's target when the path was
    /// a link that was followed, else `path` itself.
    pub fn file<'a>(&'a self, path: &'a Path) -> &'a Path {
        match self {
            FileRefusal::NotRegular { via: Some(t) }
            | FileRefusal::Owner { via: Some(t), .. }
            | FileRefusal::Writable { via: Some(t), .. }
            | FileRefusal::GroupWritable { via: Some(t), .. }
            | FileRefusal::TooLarge { via: Some(t), .. } => t,
            _ => path,
        }
    }

    pub(super) fn into_io(self) -> io::Error {
        let kind = match self {
            FileRefusal::TooLarge { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, self)
    }
}

impl fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = |f: &mut fmt::Formatter<'_>, via: &Option<PathBuf>| match via {
            Some(t) => write!(f, "its target {} is ", t.display()),
            None => Ok(()),
        };
        match self {
            FileRefusal::LinkOwner { uid } => write!(
                f,
                "a symbolic link owned by uid {uid}, neither root nor the reader"
            ),
            FileRefusal::LinkToLink { target } => write!(
                f,
                "a symbolic link to another link ({}); point it at the file",
                target.display()
            ),
            FileRefusal::NotRegular { via: v } => {
                via(f, v)?;
                f.write_str("not a regular file")
            }
            FileRefusal::Owner { uid, via: v } => {
                via(f, v)?;
                write!(f, "owned by uid {uid}, neither root nor the reader")
            }
            FileRefusal::Writable { mode, via: v } => {
                via(f, v)?;
                write!(f, "mode {mode:04o}: writable by others")
            }
            FileRefusal::GroupWritable { mode, via: v } => {
                via(f, v)?;
                write!(
                    f,
                    "mode {mode:04o}: writable by group, in slurmd's configless cache"
                )
            }
            FileRefusal::TooLarge { limit, via: v } => {
                via(f, v)?;
                write!(f, "larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for FileRefusal {}

impl ConfError {
    /// The file the reader refused and why, when this error is a refusal
    /// (rather than a missing file or a syntax error).
    pub fn refusal(&self) -> Option<(&Path, &FileRefusal)> {
        let (path, source) = match self {
            ConfError::Read { path, source } => (path, source),
            ConfError::Include { target, source, .. } => (target, source),
            _ => return None,
        };
        let refusal = source.get_ref()?.downcast_ref::<FileRefusal>()?;
        Some((refusal.file(path), refusal))
    }
}
