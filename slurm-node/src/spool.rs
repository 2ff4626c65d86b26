//! Step discovery in `SlurmdSpoolDir`: the `<NodeName>_<job>.<step>[.<het>]`
//! unix sockets each slurmstepd listens on.
//!
//! The module connects to whatever this scan returns, as root, and trusts
//! the job id in the name, so both the directory and every socket must
//! belong to root or SlurmUser, and none of them may be a symlink. The
//! caller connects by path later, so these checks hold only while nobody
//! else can write the directory or its parents; the parents (`/var/spool`)
//! are the system's to protect, the directory itself is checked here.
//!
//! Directory policy: the directory must be owned by a trusted uid, must not
//! be world-writable (not even with the sticky bit: nobody but Slurm has a
//! reason to create entries there), and may be group-writable only when its
//! group is root's. Anyone who can write to the directory could rename
//! entries between this scan and the connect, so a writable directory makes
//! the per-entry checks worthless.

use std::fmt;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Step id of the extern step (`SLURM_EXTERN_CONT`).
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;
/// Step id of the batch step (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;

/// One slurmstepd socket that passed the ownership checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSocket {
    pub path: PathBuf,
    pub job_id: u32,
    pub step_id: u32,
    /// The het-job component, when the name has a third number.
    pub het_component: Option<u32>,
    /// The socket file's `st_ctime` as (seconds, nanoseconds): when the
    /// stepd came up, which 26.05 uses to pick the newest job.
    pub ctime: (i64, i64),
    pub owner_uid: u32,
}

/// Why an entry named like one of this node's step sockets was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Symlink,
    NotASocket,
    UntrustedOwner { uid: u32 },
    Stat(Errno),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("is a symbolic link, not a socket"),
            SkipReason::NotASocket => f.write_str("is not a unix socket"),
            SkipReason::UntrustedOwner { uid } => {
                write!(f, "is owned by uid {uid}, neither root nor SlurmUser")
            }
            SkipReason::Stat(errno) => write!(f, "cannot be examined: {errno}"),
        }
    }
}

/// The outcome of a scan: usable sockets sorted by (job, step, het
/// component), and the rejected entries for the caller to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepListing {
    pub steps: Vec<StepSocket>,
    pub skipped: Vec<(PathBuf, SkipReason)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open spool directory {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read spool directory {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("spool directory {path} is a symbolic link")]
    Symlink { path: PathBuf },
    #[error("spool directory {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("spool directory {path} is owned by uid {uid}, neither root nor SlurmUser")]
    UntrustedOwner { path: PathBuf, uid: u32 },
    #[error("spool directory {path} has mode {mode:04o}: writable by group or others")]
    Writable { path: PathBuf, mode: u32 },
}

/// The owners a spool directory and its sockets may have: root, and
/// SlurmUser when that is another account that exists here.
pub fn trusted_owners(slurm_user: &str) -> Vec<u32> {
    let mut uids = vec![0];
    if let Ok(Some(user)) = nix::unistd::User::from_name(slurm_user) {
        if user.uid.as_raw() != 0 {
            uids.push(user.uid.as_raw());
        }
    }
    uids
}

/// The uids a stepd may run as, for its peer credentials: root, and
/// SlurmdUser when that is another account that exists here.
pub fn stepd_peer_uids(slurmd_user: &str) -> Vec<u32> {
    trusted_owners(slurmd_user)
}

/// Every step socket of `node_name` in `spool_dir`.
///
/// A missing directory yields an empty listing, as in pam_slurm_adopt:
/// with no slurmd spool there are no jobs on this node.
pub fn list_steps(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
) -> Result<StepListing, SpoolError> {
    scan(spool_dir, node_name, trusted_uids, |_| true)
}

/// Like [`list_steps`], restricted to extern steps, including the skipped
/// entries.
pub fn extern_steps(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
) -> Result<StepListing, SpoolError> {
    scan(spool_dir, node_name, trusted_uids, |name| {
        name.step_id == EXTERN_STEP_ID
    })
}

/// The numbers in a socket name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StepName {
    job_id: u32,
    step_id: u32,
    het_component: Option<u32>,
}

fn scan(
    spool_dir: &Path,
    node_name: &str,
    trusted_uids: &[u32],
    wanted: impl Fn(&StepName) -> bool,
) -> Result<StepListing, SpoolError> {
    let open_error = |source: io::Error| SpoolError::Open {
        path: spool_dir.to_path_buf(),
        source,
    };
    let dir_meta = match fs::symlink_metadata(spool_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StepListing::default()),
        Err(e) => return Err(open_error(e)),
    };
    check_dir(spool_dir, &dir_meta, trusted_uids)?;
    let entries = match fs::read_dir(spool_dir) {
        Ok(entries) => entries,
        // Removed since the check: as good as missing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StepListing::default()),
        Err(e) => return Err(open_error(e)),
    };

    let mut listing = StepListing::default();
    for entry in entries {
        let entry = entry.map_err(|source| SpoolError::Read {
            path: spool_dir.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(name) = parse_socket_name(file_name.as_bytes(), node_name) else {
            continue;
        };
        if !wanted(&name) {
            continue;
        }
        let path = spool_dir.join(&file_name);
        match examine_entry(&path, trusted_uids) {
            Ok(Some(meta)) => listing.steps.push(StepSocket {
                path,
                job_id: name.job_id,
                step_id: name.step_id,
                het_component: name.het_component,
                ctime: (meta.ctime(), meta.ctime_nsec()),
                owner_uid: meta.uid(),
            }),
            // The stepd exited between readdir and the stat.
            Ok(None) => {}
            Err(reason) => listing.skipped.push((path, reason)),
        }
    }
    listing
        .steps
        .sort_by(|a, b| step_order(a).cmp(&step_order(b)));
    listing.skipped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

fn step_order(s: &StepSocket) -> (u32, u32, Option<u32>, &Path) {
    (s.job_id, s.step_id, s.het_component, &s.path)
}

fn check_dir(path: &Path, meta: &Metadata, trusted_uids: &[u32]) -> Result<(), SpoolError> {
    if meta.file_type().is_symlink() {
        return Err(SpoolError::Symlink {
            path: path.to_path_buf(),
        });
    }
    dir_problem(meta.mode(), meta.uid(), meta.gid(), trusted_uids).map_err(|problem| {
        let path = path.to_path_buf();
        match problem {
            DirProblem::NotADirectory => SpoolError::NotADirectory { path },
            DirProblem::UntrustedOwner(uid) => SpoolError::UntrustedOwner { path, uid },
            DirProblem::Writable(mode) => SpoolError::Writable { path, mode },
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirProblem {
    NotADirectory,
    UntrustedOwner(u32),
    Writable(u32),
}

fn dir_problem(mode: u32, uid: u32, gid: u32, trusted_uids: &[u32]) -> Result<(), DirProblem> {
    if mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(DirProblem::NotADirectory);
    }
    if !trusted_uids.contains(&uid) {
        return Err(DirProblem::UntrustedOwner(uid));
    }
    let world_writable = mode & libc::S_IWOTH != 0;
    let group_writable = mode & libc::S_IWGRP != 0 && gid != 0;
    if world_writable || group_writable {
        return Err(DirProblem::Writable(mode & 0o7777));
    }
    Ok(())
}

/// `Ok(None)` when the entry has disappeared, which is a step ending
/// rather than anything worth reporting.
fn examine_entry(path: &Path, trusted_uids: &[u32]) -> Result<Option<Metadata>, SkipReason> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            let errno = e
                .raw_os_error()
                .map_or(Errno::UnknownErrno, Errno::from_raw);
            return Err(SkipReason::Stat(errno));
        }
    };
    entry_problem(meta.mode(), meta.uid(), trusted_uids)?;
    Ok(Some(meta))
}

fn entry_problem(mode: u32, uid: u32, trusted_uids: &[u32]) -> Result<(), SkipReason> {
    match mode & libc::S_IFMT {
        libc::S_IFSOCK => {}
        libc::S_IFLNK => return Err(SkipReason::Symlink),
        _ => return Err(SkipReason::NotASocket),
    }
    if !trusted_uids.contains(&uid) {
        return Err(SkipReason::UntrustedOwner { uid });
    }
    Ok(())
}

/// Parses `<node>_<job>.<step>[.<het>]`. The node name is compared byte for
/// byte: the C module splices it into a regex unescaped, so there a `.` in
/// a node name matches any character and another node's sockets can be
/// taken for this one's.
fn parse_socket_name(name: &[u8], node: &str) -> Option<StepName> {
    let rest = name.strip_prefix(node.as_bytes())?.strip_prefix(b"_")?;
    let mut parts = rest.split(|&b| b == b'.');
    let job_id = parse_u32(parts.next()?)?;
    let step_id = parse_u32(parts.next()?)?;
    let het_component = match parts.next() {
        Some(part) => Some(parse_u32(part)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(StepName {
        job_id,
        step_id,
        het_component,
    })
}

/// Decimal digits only, in the canonical form slurmstepd writes with `%u`:
/// no sign, no leading zero, no overflow. Accepting `02` as well as `2`
/// would give one step two names.
fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::os::unix::net::UnixListener;

    const NODE: &str = "n1";

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn spool() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }

    fn socket(dir: &Path, name: &str) -> UnixListener {
        UnixListener::bind(dir.join(name)).expect("bind")
    }

    fn ids(listing: &StepListing) -> Vec<(u32, u32, Option<u32>)> {
        listing
            .steps
            .iter()
            .map(|s| (s.job_id, s.step_id, s.het_component))
            .collect()
    }

    #[test]
    fn names_parse_strictly() {
        let ok = |name: &str| parse_socket_name(name.as_bytes(), NODE);
        assert_eq!(
            ok("n1_5.4294967292"),
            Some(StepName {
                job_id: 5,
                step_id: EXTERN_STEP_ID,
                het_component: None
            })
        );
        assert_eq!(
            ok("n1_7.0.2"),
            Some(StepName {
                job_id: 7,
                step_id: 0,
                het_component: Some(2)
            })
        );
        assert_eq!(ok("n1_4294967295.0").map(|n| n.job_id), Some(u32::MAX));
        for bad in [
            "n1_4294967296.0",
            "n1_5.4294967297",
            "n1_+5.0",
            "n1_-5.0",
            "n1_05.0",
            "n1_5.0.",
            "n1_5.",
            "n1_.0",
            "n1_5",
            "n1_5.0.1.2",
            "n1_5 .0",
            "n1_5.0x",
            "n1_5_0",
            "n15.0",
            "n1-5.0",
            "n2_5.0",
            "xn1_5.0",
            "job00005",
            ".",
            "..",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn node_name_is_literal_not_a_regex() {
        let name = b"nX1_5.4294967292";
        assert_eq!(parse_socket_name(name, "n.1"), None);
        assert_eq!(
            parse_socket_name(b"n.1_5.4294967292", "n.1").map(|n| n.job_id),
            Some(5)
        );
        assert_eq!(parse_socket_name(b"n11_5.0", "n1"), None);
        assert_eq!(parse_socket_name(b"n1_5.0", "n1*"), None);
    }

    #[test]
    fn lists_sockets_sorted_by_job_with_het_components() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_12.4294967292"),
            socket(dir.path(), "n1_3.4294967292"),
            socket(dir.path(), "n1_3.4294967291"),
            socket(dir.path(), "n1_7.0.1"),
            socket(dir.path(), "n1_7.0"),
            socket(dir.path(), "n1_7.0.0"),
        ];
        fs::create_dir(dir.path().join("job00003")).expect("mkdir");
        let listing = list_steps(dir.path(), NODE, &[0, me()]).expect("scan");
        assert_eq!(
            ids(&listing),
            [
                (3, BATCH_STEP_ID, None),
                (3, EXTERN_STEP_ID, None),
                (7, 0, None),
                (7, 0, Some(0)),
                (7, 0, Some(1)),
                (12, EXTERN_STEP_ID, None),
            ]
        );
        assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
        let first = &listing.steps[0];
        assert_eq!(first.path, dir.path().join("n1_3.4294967291"));
        assert_eq!(first.owner_uid, me());
        let meta = fs::symlink_metadata(&first.path).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(first.ctime, (meta.ctime(), meta.ctime_nsec()));
    }

    #[test]
    fn extern_steps_keeps_only_the_extern_step() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_3.4294967291"),
            socket(dir.path(), "n1_3.4294967292"),
            socket(dir.path(), "n1_4.0"),
            socket(dir.path(), "n1_9.4294967292.1"),
        ];
        fs::write(dir.path().join("n1_4.4294967291"), b"").expect("write");
        fs::write(dir.path().join("n1_5.4294967292"), b"").expect("write");
        let listing = extern_steps(dir.path(), NODE, &[me()]).expect("scan");
        assert_eq!(
            ids(&listing),
            [(3, EXTERN_STEP_ID, None), (9, EXTERN_STEP_ID, Some(1))]
        );
        assert_eq!(
            listing.skipped,
            [(dir.path().join("n1_5.4294967292"), SkipReason::NotASocket)]
        );
    }

    #[test]
    fn symlinks_files_and_other_names_are_not_steps() {
        let dir = spool();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let _real = socket(elsewhere.path(), "real");
        let _own = socket(dir.path(), "n1_1.4294967292");
        symlink(
            elsewhere.path().join("real"),
            dir.path().join("n1_2.4294967292"),
        )
        .expect("symlink");
        symlink(
            dir.path().join("n1_1.4294967292"),
            dir.path().join("n1_3.4294967292"),
        )
        .expect("symlink");
        fs::write(dir.path().join("n1_4.4294967292"), b"").expect("write");
        fs::create_dir(dir.path().join("n1_5.4294967292")).expect("mkdir");
        // Sockets of other nodes, malformed numbers: silently not ours.
        let _others = [
            socket(dir.path(), "nX1_6.4294967292"),
            socket(dir.path(), "n2_7.4294967292"),
            socket(dir.path(), "n1_08.4294967292"),
            socket(dir.path(), "n1_9.4294967296"),
            socket(dir.path(), "n1_-10.4294967292"),
        ];
        let listing = list_steps(dir.path(), NODE, &[me()]).expect("scan");
        assert_eq!(ids(&listing), [(1, EXTERN_STEP_ID, None)]);
        let p = |n: &str| dir.path().join(n);
        assert_eq!(
            listing.skipped,
            [
                (p("n1_2.4294967292"), SkipReason::Symlink),
                (p("n1_3.4294967292"), SkipReason::Symlink),
                (p("n1_4.4294967292"), SkipReason::NotASocket),
                (p("n1_5.4294967292"), SkipReason::NotASocket),
            ]
        );
    }

    #[test]
    fn dotted_node_name_does_not_match_other_nodes() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "nX1_5.4294967292"),
            socket(dir.path(), "n.1_6.4294967292"),
        ];
        let listing = list_steps(dir.path(), "n.1", &[me()]).expect("scan");
        assert_eq!(ids(&listing), [(6, EXTERN_STEP_ID, None)]);
    }

    #[test]
    fn missing_spool_dir_is_an_empty_listing() {
        let dir = spool();
        let listing = list_steps(&dir.path().join("absent"), NODE, &[me()]).expect("scan");
        assert_eq!(listing, StepListing::default());
    }

    #[test]
    fn spool_dir_must_be_a_real_directory() {
        let dir = spool();
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let _l = socket(&real, "n1_1.4294967292");
        let link = dir.path().join("link");
        symlink(&real, &link).expect("symlink");
        assert!(matches!(
            list_steps(&link, NODE, &[me()]),
            Err(SpoolError::Symlink { path }) if path == link
        ));
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        assert!(matches!(
            list_steps(&file, NODE, &[me()]),
            Err(SpoolError::NotADirectory { path }) if path == file
        ));
        assert_eq!(
            ids(&list_steps(&real, NODE, &[me()]).expect("scan")).len(),
            1
        );
    }

    #[test]
    fn spool_dir_must_have_a_trusted_owner() {
        let dir = spool();
        let untrusted = me().wrapping_add(1);
        let err = list_steps(dir.path(), NODE, &[untrusted]).expect_err("untrusted");
        assert!(
            matches!(&err, SpoolError::UntrustedOwner { uid, .. } if *uid == me()),
            "{err}"
        );
        assert!(matches!(
            list_steps(dir.path(), NODE, &[]),
            Err(SpoolError::UntrustedOwner { .. })
        ));
    }

    #[test]
    fn writable_spool_dirs_are_refused() {
        let dir = spool();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = list_steps(dir.path(), NODE, &[me()]).expect_err("world-writable");
        assert!(
            matches!(&err, SpoolError::Writable { mode, .. } if *mode == 0o1777),
            "{err}"
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(list_steps(dir.path(), NODE, &[me()]).is_ok());
    }

    #[test]
    fn group_write_is_allowed_only_for_root_group() {
        let dir = |mode, uid, gid| dir_problem(libc::S_IFDIR | mode, uid, gid, &[0, 64]);
        assert_eq!(dir(0o755, 0, 0), Ok(()));
        assert_eq!(dir(0o775, 0, 0), Ok(()));
        assert_eq!(dir(0o755, 64, 64), Ok(()));
        assert_eq!(dir(0o775, 64, 64), Err(DirProblem::Writable(0o775)));
        assert_eq!(dir(0o757, 0, 0), Err(DirProblem::Writable(0o757)));
        assert_eq!(dir(0o1777, 0, 0), Err(DirProblem::Writable(0o1777)));
        assert_eq!(dir(0o755, 1000, 0), Err(DirProblem::UntrustedOwner(1000)));
        assert_eq!(
            dir_problem(libc::S_IFREG | 0o755, 0, 0, &[0]),
            Err(DirProblem::NotADirectory)
        );
    }

    #[test]
    fn entry_kinds_and_owners() {
        let entry = |mode, uid| entry_problem(mode, uid, &[0, 64]);
        assert_eq!(entry(libc::S_IFSOCK | 0o777, 0), Ok(()));
        assert_eq!(entry(libc::S_IFSOCK | 0o777, 64), Ok(()));
        assert_eq!(
            entry(libc::S_IFSOCK | 0o777, 1000),
            Err(SkipReason::UntrustedOwner { uid: 1000 })
        );
        assert_eq!(entry(libc::S_IFLNK | 0o777, 0), Err(SkipReason::Symlink));
        for kind in [libc::S_IFREG, libc::S_IFDIR, libc::S_IFIFO, libc::S_IFCHR] {
            assert_eq!(entry(kind | 0o600, 0), Err(SkipReason::NotASocket));
        }
    }

    #[test]
    fn sockets_of_untrusted_owners_are_skipped() {
        let dir = spool();
        let _l = [
            socket(dir.path(), "n1_1.4294967292"),
            socket(dir.path(), "n1_2.4294967292"),
        ];
        // Giving the socket away needs root (CI runs as root); without it
        // this test fails rather than pass having checked nothing.
        assert_eq!(
            me(),
            0,
            "this test chowns a socket to nobody, which needs root: run cargo test as root"
        );
        let nobody = 65534;
        nix::unistd::chown(
            &dir.path().join("n1_2.4294967292"),
            Some(nix::unistd::Uid::from_raw(nobody)),
            None,
        )
        .expect("chown");
        let listing = list_steps(dir.path(), NODE, &[0]).expect("scan");
        assert_eq!(ids(&listing), [(1, EXTERN_STEP_ID, None)]);
        assert_eq!(
            listing.skipped,
            [(
                dir.path().join("n1_2.4294967292"),
                SkipReason::UntrustedOwner { uid: nobody }
            )]
        );
        assert_eq!(
            listing.skipped[0].1.to_string(),
            "is owned by uid 65534, neither root nor SlurmUser"
        );
    }
}
