//! Where each `Key=Value` of slurm.conf (and its includes) or cgroup.conf
//! is written. slurm_node::conf decides what the values mean; this only
//! finds the line an admin has to edit.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sshdconf::expand_last_component;

const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone)]
pub struct Setting {
    /// Lower-cased.
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Settings(pub Vec<Setting>);

impl Settings {
    /// Every line of `path` and of the files it includes, in reading order.
    pub fn read(path: &Path) -> Settings {
        let mut out = Vec::new();
        let base = path.parent().unwrap_or(Path::new("/")).to_owned();
        read_file(path, &base, 0, &mut out);
        Settings(out)
    }

    /// The line that sets `key` last (the one that counts for plain keys).
    pub fn last(&self, key: &str) -> Option<&Setting> {
        let key = key.to_ascii_lowercase();
        self.0.iter().rev().find(|s| s.key == key)
    }

    /// Every line that sets `key`.
    pub fn all(&self, key: &str) -> Vec<&Setting> {
        let key = key.to_ascii_lowercase();
        self.0.iter().filter(|s| s.key == key).collect()
    }
}

fn read_file(path: &Path, base: &Path, depth: usize, out: &mut Vec<Setting>) {
    let Ok(bytes) = fs::read(path) else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut start = None;
    let mut joined = String::new();
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("");
        let first = *start.get_or_insert(i + 1);
        if let Some(kept) = code.trim_end().strip_suffix('\\') {
            joined.push_str(kept);
            continue;
        }
        joined.push_str(code);
        let line = std::mem::take(&mut joined);
        start = None;
        let mut words = line.split_whitespace();
        if words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("include"))
        {
            if let (Some(target), true) = (words.next(), depth < MAX_DEPTH) {
                for file in glob(&base.join(target)) {
                    read_file(&file, base, depth + 1, out);
                }
            }
            continue;
        }
        for word in line.split_whitespace() {
            if let Some((key, value)) = word.split_once('=') {
                let key = key.trim_end_matches(['+', '-', '*', '/']);
                out.push(Setting {
                    key: key.to_ascii_lowercase(),
                    value: value.trim_matches('"').to_owned(),
                    file: path.to_owned(),
                    line: first,
                });
            }
        }
    }
}

/// Paths matching `pattern` (a host path; `*` in the last component only,
/// as Slurm allows for Include, Prolog and Epilog), sorted.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    expand_last_component(pattern, &['*'])
}
