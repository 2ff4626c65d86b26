//! NodeView on a configless node: slurm.conf from slurmd's cache (a tree
//! of the test's own, through `ConfigSources`), and a node name that no
//! NodeName line gives, settled by the spool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::Path;

use adopt_login::node::{NodeError, NodeView};
use adopt_login::options::Options;
use slurm_node::confsource::ConfigSources;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `/` of a configless node whose SlurmdSpoolDir is `/spool`. Paths in
/// its slurm.conf are the node's; the spool is looked at under the tree.
fn node_tree() -> tempfile::TempDir {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cache's link is followed only through root-owned directories: run as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    chmod(root, 0o755);
    let cache = root.join("var/spool/slurmd/conf-cache");
    fs::create_dir_all(&cache).unwrap();
    fs::create_dir_all(root.join("spool")).unwrap();
    fs::create_dir_all(root.join("run/slurm")).unwrap();
    fs::write(
        cache.join("slurm.conf"),
        "SlurmdSpoolDir=/spool\nNodeName=no-such-host-c1 CPUs=1\n",
    )
    .unwrap();
    symlink("/var/spool/slurmd/conf-cache", root.join("run/slurm/conf")).unwrap();
    tmp
}

#[test]
fn configless_dynamic_node_is_named_by_its_stepd_sockets() {
    let tree = node_tree();
    let root = tree.path();
    let _sock = UnixListener::bind(root.join("spool/dyn9_41.4294967292")).unwrap();
    let view = NodeView::load_from(&Options::default(), &ConfigSources::under(root)).unwrap();
    assert_eq!(view.node.name, "dyn9");
    assert_eq!(view.spool_dir, Path::new("/spool"));
    assert_eq!(
        view.conf.path,
        root.join("var/spool/slurmd/conf-cache/slurm.conf")
    );
    let lines = view.found.join("\n");
    assert!(lines.contains("slurmd's configless cache"), "{lines}");
    assert!(lines.contains("node name dyn9"), "{lines}");
}

#[test]
fn sockets_of_two_nodes_are_a_node_setup_error_naming_both() {
    let tree = node_tree();
    let root = tree.path();
    let _a = UnixListener::bind(root.join("spool/dyn9_41.4294967292")).unwrap();
    let _b = UnixListener::bind(root.join("spool/dyn10_42.4294967292")).unwrap();
    let err = NodeView::load_from(&Options::default(), &ConfigSources::under(root)).unwrap_err();
    assert!(matches!(err, NodeError::NodeName(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("dyn10, dyn9"), "{text}");
    assert!(text.contains("nodename="), "{text}");
}

#[test]
fn nodename_in_the_pam_line_settles_it() {
    let tree = node_tree();
    let root = tree.path();
    let _a = UnixListener::bind(root.join("spool/dyn9_41.4294967292")).unwrap();
    let _b = UnixListener::bind(root.join("spool/dyn10_42.4294967292")).unwrap();
    let (opts, warnings) = Options::parse(&["nodename=dyn10"]);
    assert!(warnings.is_empty());
    let view = NodeView::load_from(&opts, &ConfigSources::under(root)).unwrap();
    assert_eq!(view.node.name, "dyn10");
}

#[test]
fn a_refused_cache_is_a_node_setup_error_and_conf_bypasses_it() {
    let tree = node_tree();
    let root = tree.path();
    chmod(&root.join("var/spool/slurmd/conf-cache"), 0o777);
    let err = NodeView::load_from(&Options::default(), &ConfigSources::under(root)).unwrap_err();
    assert!(matches!(err, NodeError::ConfSource(_)), "{err}");
    assert!(err.to_string().contains("configless cache"), "{err}");

    let classic = root.join("classic.conf");
    fs::write(
        &classic,
        format!("SlurmdSpoolDir={}/spool\nNodeName=c1\n", root.display()),
    )
    .unwrap();
    let arg = format!("conf={}", classic.display());
    let (opts, _) = Options::parse(&[arg.as_str(), "nodename=c1"]);
    let view = NodeView::load_from(&opts, &ConfigSources::under(root)).unwrap();
    assert_eq!(view.node.name, "c1");
    assert!(view.found[0].contains("given by conf="), "{:?}", view.found);
}

#[test]
fn classic_unlisted_host_still_fails_as_before() {
    let tree = node_tree();
    let root = tree.path();
    let classic = root.join("etc/slurm/slurm.conf");
    fs::create_dir_all(classic.parent().unwrap()).unwrap();
    fs::write(
        &classic,
        format!(
            "SlurmdSpoolDir={}/spool\nNodeName=no-such-host-c1\n",
            root.display()
        ),
    )
    .unwrap();
    let err = NodeView::load_from(&Options::default(), &ConfigSources::under(root)).unwrap_err();
    assert!(matches!(err, NodeError::UnknownNode { .. }), "{err}");
}
