//! `/run/user/$UID` without logind: created for the user's first job on
//! the node, removed after the last one.
//!
//! The parent (`/run/user`) must be root's and not writable by others, so
//! no user can swap the directory for a symlink between our checks and
//! our changes; every path below it is checked with `lstat`, never
//! followed.

use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, chown, unlinkat};

/// Where logind puts them, and where software looks for them.
pub const DEFAULT_ROOT: &str = "/run/user";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Sys { path: PathBuf, source: nix::Error },
    #[error("{} is a symbolic link; refusing to use it (remove it and rerun the Prolog)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} exists but is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is owned by uid {owner}, not by the job's user {uid}; remove it or fix its owner", path.display())]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{} must be owned by root and writable by root only (it is uid {owner}, mode {mode:04o})", path.display())]
    UnsafeParent {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
    #[error("{} is another filesystem mounted inside the runtime dir; not removing across it", path.display())]
    MountInside { path: PathBuf },
}

/// What `ensure` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Existed,
}

/// What `remove` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    Absent,
}

/// The runtime directories under one root (`/run/user`, or a temp dir in
/// tests).
#[derive(Debug, Clone)]
pub struct RuntimeDirs {
    root: PathBuf,
    /// `size=` of a tmpfs mounted on each directory (`"64M"`, `"5%"`);
    /// none means a plain directory on the parent's filesystem.
    tmpfs_size: Option<String>,
    /// Where the mounts below a directory are found before removing it.
    mountinfo: PathBuf,
}

impl RuntimeDirs {
    pub fn new(root: impl Into<PathBuf>, tmpfs_size: Option<String>) -> RuntimeDirs {
        RuntimeDirs {
            root: root.into(),
            tmpfs_size,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, uid: u32) -> PathBuf {
        self.root.join(uid.to_string())
    }

    /// Create the user's directory (mode 0700, owned by uid:gid) unless it
    /// exists; an existing one must be a real directory owned by the user.
    pub fn ensure(&self, uid: u32, gid: u32) -> Result<Ensured, RuntimeDirError> {
        self.ensure_root()?;
        let dir = self.path(uid);
        match fs::symlink_metadata(&dir) {
            Ok(meta) => {
                check_existing(&dir, &meta, uid)?;
                return Ok(Ensured::Existed);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuntimeDirError::Io { path: dir, source }),
        }
        let io_err = |source| RuntimeDirError::Io {
            path: dir.clone(),
            source,
        };
        DirBuilder::new().mode(0o700).create(&dir).map_err(io_err)?;
        if let Some(size) = &self.tmpfs_size {
            let data = format!("mode=0700,uid={uid},gid={gid},size={size}");
            let mounted = nix::mount::mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(data.as_str()),
            );
            if let Err(source) = mounted {
                let _ = fs::remove_dir(&dir);
                return Err(RuntimeDirError::Sys { path: dir, source });
            }
        }
        chown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|source| {
            RuntimeDirError::Sys {
                path: dir.clone(),
                source,
            }
        })?;
        // The umask may have narrowed the mode given at creation.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        Ok(Ensured::Created)
    }

    /// Remove the user's directory and everything in it. A symlink in its
    /// place is removed as a link, never followed. Every mount at or below
    /// it (our tmpfs, a FUSE mount of the user's) is detached first, and
    /// the walk never enters another filesystem: root walking into a FUSE
    /// mount could hang on its daemon, or delete the remote files.
    pub fn remove(&self, uid: u32) -> Result<Removed, RuntimeDirError> {
        let dir = self.path(uid);
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::Absent),
            Err(source) => return Err(RuntimeDirError::Io { path: dir, source }),
        };
        let io_err = |source| RuntimeDirError::Io {
            path: dir.clone(),
            source,
        };
        if !meta.is_dir() {
            fs::remove_file(&dir).map_err(io_err)?;
            return Ok(Removed::Removed);
        }
        for mount in mounts_at_or_below(&self.mountinfo, &dir) {
            // MNT_DETACH: a process still holding a file open must not make
            // the Epilog fail; the filesystem goes when it lets go.
            match nix::mount::umount2(&mount, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                Err(source) => {
                    return Err(RuntimeDirError::Sys {
                        path: mount,
                        source,
                    });
                }
            }
        }
        let sys = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeDirError::Sys { path, source }
        };
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut top = Dir::open(&dir, flags, Mode::empty()).map_err(sys(&dir))?;
        let dev = fstat(top.as_fd()).map_err(sys(&dir))?.st_dev;
        remove_tree(&mut top, dev, &dir)?;
        drop(top);
        fs::remove_dir(&dir).map_err(io_err)?;
        Ok(Removed::Removed)
    }

    /// The directory as the TaskProlog and the PAM session see it: its
    /// path when it is a real directory owned by `uid`.
    pub fn usable(&self, uid: u32) -> Option<PathBuf> {
        let dir = self.path(uid);
        let meta = fs::symlink_metadata(&dir).ok()?;
        (meta.is_dir() && meta.uid() == uid).then_some(dir)
    }

    fn ensure_root(&self) -> Result<(), RuntimeDirError> {
        let root = &self.root;
        match fs::symlink_metadata(root) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    return Err(RuntimeDirError::Symlink { path: root.clone() });
                }
                if !meta.is_dir() {
                    return Err(RuntimeDirError::NotADirectory { path: root.clone() });
                }
                if !safe_parent(&meta) {
                    return Err(RuntimeDirError::UnsafeParent {
                        path: root.clone(),
                        owner: meta.uid(),
                        mode: meta.mode() & 0o7777,
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .mode(0o755)
                .recursive(true)
                .create(root)
                .map_err(|source| RuntimeDirError::Io {
                    path: root.clone(),
                    source,
                }),
            Err(source) => Err(RuntimeDirError::Io {
                path: root.clone(),
                source,
            }),
        }
    }
}

/// A directory that nobody but root (or our own uid, in tests) can write
/// into, so no user can swap its entries under us. The hooks' ledger holds
/// its state directory to the same rule.
pub fn safe_parent(meta: &fs::Metadata) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    meta.is_dir() && (meta.uid() == 0 || meta.uid() == me) && meta.mode() & 0o022 == 0
}

fn check_existing(dir: &Path, meta: &fs::Metadata, uid: u32) -> Result<(), RuntimeDirError> {
    if meta.file_type().is_symlink() {
        return Err(RuntimeDirError::Symlink {
            path: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(RuntimeDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    if meta.uid() != uid {
        return Err(RuntimeDirError::WrongOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

/// Remove everything below the open directory `dir` without following a
/// symlink and without entering another filesystem. Names are resolved
/// relative to directory descriptors with `O_NOFOLLOW`, so a user who
/// swaps a subdirectory for a symlink mid-walk gets the link removed, not
/// its target (the race std's `remove_dir_all` also closes).
fn remove_tree(dir: &mut Dir, dev: u64, path: &Path) -> Result<(), RuntimeDirError> {
    let sys = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeDirError::Sys { path, source }
    };
    let names: Vec<CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_owned())
        .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
        .collect();
    for name in names {
        let child = path.join(OsStr::from_bytes(name.as_bytes()));
        let st = fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(sys(&child))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(sys(&child))?;
            continue;
        }
        if st.st_dev != dev {
            return Err(RuntimeDirError::MountInside { path: child });
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut sub =
            Dir::openat(dir.as_fd(), name.as_c_str(), flags, Mode::empty()).map_err(sys(&child))?;
        // Mounted between the stat and the open.
        if fstat(sub.as_fd()).map_err(sys(&child))?.st_dev != dev {
            return Err(RuntimeDirError::MountInside { path: child });
        }
        remove_tree(&mut sub, dev, &child)?;
        drop(sub);
        unlinkat(dir.as_fd(), name.as_c_str(), UnlinkatFlags::RemoveDir).map_err(sys(&child))?;
    }
    Ok(())
}

/// Mount points at or below `dir` in a mountinfo file, deepest first. An
/// unreadable or malformed file gives none: the walk then refuses to cross
/// any mount it meets instead.
fn mounts_at_or_below(mountinfo: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = crate::cgroup::mount_points(mountinfo)
        .unwrap_or_default()
        .into_iter()
        .filter(|mount| mount.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn me() -> (u32, u32) {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }

    #[test]
    fn creates_private_dir_then_finds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RuntimeDirs::new(tmp.path().join("run/user"), None);
        let (uid, gid) = me();
        assert_eq!(dirs.ensure(uid, gid).unwrap(), Ensured::Created);
        let meta = fs::symlink_metadata(dirs.path(uid)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(dirs.ensure(uid, gid).unwrap(), Ensured::Existed);
        assert_eq!(dirs.usable(uid), Some(dirs.path(uid)));
    }

    #[test]
    fn removes_tree_and_tolerates_absence() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RuntimeDirs::new(tmp.path(), None);
        let (uid, gid) = me();
        dirs.ensure(uid, gid).unwrap();
        fs::create_dir_all(dirs.path(uid).join("podman/x")).unwrap();
        fs::write(dirs.path(uid).join("bus"), b"").unwrap();
        assert_eq!(dirs.remove(uid).unwrap(), Removed::Removed);
        assert!(!dirs.path(uid).exists());
        assert_eq!(dirs.remove(uid).unwrap(), Removed::Absent);
        assert_eq!(dirs.usable(uid), None);
    }

    #[test]
    fn a_symlink_is_refused_and_removed_as_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("keep"), b"x").unwrap();
        let root = tmp.path().join("user");
        fs::create_dir(&root).unwrap();
        let dirs = RuntimeDirs::new(&root, None);
        let (uid, gid) = me();
        symlink(&victim, dirs.path(uid)).unwrap();
        assert!(matches!(
            dirs.ensure(uid, gid),
            Err(RuntimeDirError::Symlink { .. })
        ));
        assert_eq!(dirs.usable(uid), None);
        assert_eq!(dirs.remove(uid).unwrap(), Removed::Removed);
        assert!(
            victim.join("keep").exists(),
            "the link's target must survive"
        );
    }

    #[test]
    fn a_symlink_inside_is_not_followed_on_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("keep"), b"x").unwrap();
        let dirs = RuntimeDirs::new(tmp.path().join("user"), None);
        let (uid, gid) = me();
        dirs.ensure(uid, gid).unwrap();
        symlink(&victim, dirs.path(uid).join("escape")).unwrap();
        dirs.remove(uid).unwrap();
        assert!(victim.join("keep").exists());
    }

    #[test]
    fn someone_elses_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RuntimeDirs::new(tmp.path(), None);
        let (uid, gid) = me();
        fs::create_dir(dirs.path(uid + 1)).unwrap();
        // Our own directory under the number of another uid.
        match dirs.ensure(uid + 1, gid) {
            Err(RuntimeDirError::WrongOwner {
                owner, uid: want, ..
            }) => {
                assert_eq!((owner, want), (uid, uid + 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(dirs.usable(uid + 1), None);
    }

    #[test]
    fn a_world_writable_root_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("user");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o1777)).unwrap();
        let dirs = RuntimeDirs::new(&root, None);
        let (uid, gid) = me();
        assert!(matches!(
            dirs.ensure(uid, gid),
            Err(RuntimeDirError::UnsafeParent { .. })
        ));
    }

    #[test]
    fn finds_mounts_below_deepest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let info = tmp.path().join("mountinfo");
        fs::write(
            &info,
            "22 1 0:21 / /run rw - tmpfs tmpfs rw\n\
             30 22 0:40 / /run/user/1001 rw - tmpfs tmpfs rw\n\
             31 30 0:41 / /run/user/1001/my\\040fuse rw - fuse.sshfs sshfs rw\n\
             32 22 0:42 / /run/user/10010 rw - tmpfs tmpfs rw\n",
        )
        .unwrap();
        let got = mounts_at_or_below(&info, Path::new("/run/user/1001"));
        assert_eq!(
            got,
            [
                PathBuf::from("/run/user/1001/my fuse"),
                PathBuf::from("/run/user/1001")
            ]
        );
        assert!(mounts_at_or_below(&tmp.path().join("none"), Path::new("/run")).is_empty());
    }
}
