//! SELinux: when enforcing, sshd needs the pam_adopt policy module to
//! reach the stepd sockets.

use std::fs;
use std::path::Path;

use super::findings::Findings;
use crate::report::Status;

/// Check that an enforcing node has the pam_adopt policy module.
pub fn check(d: &mut Findings<'_>) {
    let enforce = d.root().host(Path::new("/sys/fs/selinux/enforce"));
    let enforcing = fs::read_to_string(&enforce).is_ok_and(|s| s.trim() == "1");
    if !enforcing {
        d.ok("selinux", None, "SELinux is not enforcing".to_owned());
        return;
    }
    let store = d.root().host(Path::new("/var/lib/selinux"));
    let loaded = fs::read_dir(&store)
        .into_iter()
        .flatten()
        .flatten()
        .any(|policy| {
            let modules = policy.path().join("active/modules");
            fs::read_dir(&modules)
                .into_iter()
                .flatten()
                .flatten()
                .any(|prio| prio.path().join("pam_adopt").exists())
        })
        || (!d.root().is_set() && semodule_lists_pam_adopt());
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

fn semodule_lists_pam_adopt() -> bool {
    std::process::Command::new("semodule")
        .arg("-l")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some("pam_adopt"))
        })
}
