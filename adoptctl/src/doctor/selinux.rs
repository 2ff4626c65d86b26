//! SELinux: when enforcing, sshd needs the pam_adopt policy module to
//! reach the stepd sockets. The state readers here also serve the
//! namespace check (pam_adopt_ns, pam_adopt_join_userns).

use std::fs;
use std::path::Path;

use super::findings::Findings;
use crate::report::Status;
use crate::root::Root;

/// Whether the node's SELinux is enforcing.
pub fn enforcing(root: &Root) -> bool {
    let enforce = root.host(Path::new("/sys/fs/selinux/enforce"));
    fs::read_to_string(&enforce).is_ok_and(|s| s.trim() == "1")
}

/// Whether the policy module `name` is installed in the node's policy
/// store (any policy, any priority), or, on this machine itself, listed by
/// `semodule -l`.
pub fn module_loaded(root: &Root, name: &str) -> bool {
    let store = root.host(Path::new("/var/lib/selinux"));
    fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .any(|policy| {
            let modules = policy.path().join("active/modules");
            fs::read_dir(&modules)
                .into_iter()
                .flatten()
                .flatten()
                .any(|prio| prio.path().join(name).exists())
        })
        || (!root.is_set() && semodule_lists(name))
}

/// The current value of the boolean `name` (selinuxfs holds "current
/// pending"); `None` when the node has no such boolean.
pub fn boolean(root: &Root, name: &str) -> Option<bool> {
    let file = root.host(&Path::new("/sys/fs/selinux/booleans").join(name));
    let text = fs::read_to_string(file).ok()?;
    match text.split_whitespace().next()? {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// Check that an enforcing node has the pam_adopt policy module.
pub fn check(d: &mut Findings<'_>) {
    let enforce = d.root().host(Path::new("/sys/fs/selinux/enforce"));
    if !enforcing(d.root()) {
        d.ok("selinux", None, "SELinux is not enforcing".to_owned());
        return;
    }
    let loaded = module_loaded(d.root(), "pam_adopt");
    if loaded {
        d.ok(
            "selinux",
            Some((enforce.as_path(), None)),
            "SELinux is enforcing and the pam_adopt policy module is loaded".to_owned(),
        );
    } else {
        // A failure, not a warning: on an enforcing refpolicy node (the VM
        // tier's negative control) sshd_t may not stat the stepd sockets,
        // so every user with a job is refused as if they had none.
        d.push(
            "selinux",
            Status::Fail,
            Some((enforce.as_path(), None)),
            "SELinux is enforcing and no pam_adopt policy module is loaded: sshd is denied the stepd sockets, and users with a job are refused (reason=no_jobs)",
            "load the policy: semodule -i /usr/share/selinux/packages/slurm-adopt/pam_adopt.pp",
        );
    }
}

fn semodule_lists(name: &str) -> bool {
    std::process::Command::new("semodule")
        .arg("-l")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
}
