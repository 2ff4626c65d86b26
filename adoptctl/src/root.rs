//! Where a node's files are read from: `/`, or the `--root DIR` copy of a
//! node that doctor reviews elsewhere. A leaf: every reader (PAM stacks,
//! sshd_config, doctor's checks) takes a `Root` and none of them owns it.

use std::path::{Path, PathBuf};

/// `/` when `None`, else the directory holding the copy.
#[derive(Debug, Clone)]
pub struct Root(Option<PathBuf>);

impl Root {
    pub fn new(dir: Option<PathBuf>) -> Root {
        Root(dir)
    }

    /// The file to read for the node's `path`.
    pub fn host(&self, path: &Path) -> PathBuf {
        match &self.0 {
            Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }

    /// `host` as the node names it, for messages.
    pub fn shown(&self, host: &Path) -> String {
        match &self.0 {
            Some(r) => match host.strip_prefix(r) {
                Ok(rel) => format!("/{}", rel.display()),
                Err(_) => host.display().to_string(),
            },
            None => host.display().to_string(),
        }
    }

    /// Whether this is a `--root` copy rather than the running node.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// A `--root` copy that holds only part of a node (often just /etc)
    /// cannot say whether a file outside it exists on the node.
    pub fn lacks_tree_of(&self, node_path: &Path) -> bool {
        let Some(r) = &self.0 else { return false };
        let top = node_path
            .strip_prefix("/")
            .unwrap_or(node_path)
            .components()
            .next();
        top.is_some_and(|c| !r.join(c.as_os_str()).exists())
    }
}
