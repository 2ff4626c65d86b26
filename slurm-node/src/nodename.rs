//! Which slurm.conf node this host is, when the admin did not say.
//!
//! The guess follows pam_slurm_adopt's, minus DNS: a lookup inside sshd
//! could hang the login, and a node whose name needs DNS to be found should
//! be named with `nodename=` instead.

use std::ffi::OsString;

use crate::conf::{NodeEntry, SlurmConf};

#[derive(Debug, thiserror::Error)]
pub enum NodeNameError {
    #[error("gethostname failed: {0}")]
    Gethostname(#[source] nix::errno::Errno),
    #[error("host name {0:?} is not valid UTF-8")]
    NotUtf8(OsString),
}

/// This host's name as the kernel reports it (it may or may not contain
/// dots).
pub fn local_hostname() -> Result<String, NodeNameError> {
    let name = nix::unistd::gethostname().map_err(NodeNameError::Gethostname)?;
    name.into_string().map_err(NodeNameError::NotUtf8)
}

/// The node entry for host `hostname`, tried in this order:
/// 1. the name cut at its first dot, as a NodeHostname;
/// 2. the full name, as a NodeHostname;
/// 3. the name cut at its first dot, as a NodeName;
/// 4. the node whose NodeHostname is `localhost`.
///
/// The first entry in file order wins at each step, so with several
/// slurmds on one host (all `localhost`) the answer is the first of them;
/// such setups need `nodename=`.
pub fn resolve<'a>(conf: &'a SlurmConf, hostname: &str) -> Option<&'a NodeEntry> {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let by_hostname = |h: &str| conf.nodes.iter().find(|n| n.hostname == h);
    // Hostlist expansion never yields an empty name, so an empty `short`
    // cannot match anything by accident.
    by_hostname(short)
        .or_else(|| by_hostname(hostname))
        .or_else(|| conf.nodes.iter().find(|n| n.name == short))
        .or_else(|| by_hostname("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> SlurmConf {
        SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf")).unwrap()
    }

    fn name_of<'a>(c: &'a SlurmConf, host: &str) -> Option<&'a str> {
        resolve(c, host).map(|n| n.name.as_str())
    }

    #[test]
    fn short_hostname_matches_node_hostname() {
        let c = conf("NodeName=cn[1-2] NodeHostname=host[1-2]\n");
        assert_eq!(name_of(&c, "host2.cluster.example"), Some("cn2"));
        assert_eq!(name_of(&c, "host1"), Some("cn1"));
    }

    #[test]
    fn short_name_wins_over_full_name() {
        let c = conf("NodeName=full NodeHostname=h1.example.org\nNodeName=short NodeHostname=h1\n");
        assert_eq!(name_of(&c, "h1.example.org"), Some("short"));
    }

    #[test]
    fn full_hostname_matches_node_hostname() {
        let c = conf("NodeName=n1 NodeHostname=h1.example.org\n");
        assert_eq!(name_of(&c, "h1.example.org"), Some("n1"));
        assert_eq!(name_of(&c, "h1.other.org"), None);
    }

    #[test]
    fn node_name_equal_to_short_hostname() {
        // NodeHostname differs (say, a management name), NodeName is the host.
        let c = conf("NodeName=vm NodeHostname=vm-mgmt\n");
        assert_eq!(name_of(&c, "vm.example.org"), Some("vm"));
        // Hostname matches take precedence over NodeName matches.
        let c = conf("NodeName=vm NodeHostname=other\nNodeName=x NodeHostname=vm\n");
        assert_eq!(name_of(&c, "vm"), Some("x"));
    }

    #[test]
    fn localhost_fallback() {
        let c = conf(
            "NodeName=a NodeHostname=elsewhere\nNodeName=vm[1-2] NodeHostname=localhost Port=[7001-7002]\n",
        );
        assert_eq!(name_of(&c, "my-laptop"), Some("vm1"));
        let c = conf("NodeName=a\n");
        assert_eq!(name_of(&c, "my-laptop"), None);
    }

    #[test]
    fn empty_and_odd_hostnames() {
        let c = conf("NodeName=a\n");
        assert_eq!(name_of(&c, ""), None);
        assert_eq!(name_of(&c, ".a"), None);
        assert_eq!(name_of(&c, "a."), Some("a"));
        assert_eq!(name_of(&conf(""), "a"), None);
    }

    #[test]
    fn local_hostname_is_the_kernel_one() {
        let name = local_hostname().unwrap();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| name.clone());
        assert_eq!(name, kernel);
    }
}
