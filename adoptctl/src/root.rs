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

    /// The directory the node's `/` is read from.
    pub fn dir(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/"))
    }

    /// `text` (a message naming files as read here) with the files named as
    /// the node names them: the copy's directory itself becomes `/`.
    pub fn shown_text(&self, text: &str) -> String {
        let Some(r) = &self.0 else {
            return text.to_owned();
        };
        let prefix = r.display().to_string();
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            out.push_str(rest.get(..at).unwrap_or_default());
            rest = rest.get(at + prefix.len()..).unwrap_or_default();
            if !rest.starts_with('/') {
                out.push('/');
            }
        }
        out.push_str(rest);
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_files_as_the_node_does() {
        let root = Root::new(Some(PathBuf::from("/srv/c1/")));
        assert_eq!(
            root.shown_text(
                "/srv/c1/var/spool/slurmd is a link to /srv/c1/local, and /srv/c1 has mode 1777"
            ),
            "/var/spool/slurmd is a link to /local, and / has mode 1777"
        );
        assert_eq!(Root::new(None).shown_text("/srv/c1/x"), "/srv/c1/x");
    }
}
