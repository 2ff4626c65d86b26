//! Where each setting was written: the file (slurm.conf or one it
//! includes) and line of every `Key=Value` that starts a line, so that a
//! finding about a value can point at the line to edit.

use std::path::PathBuf;

/// The file and first physical line of a logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A line's leading `Key=Value`, as the reader saw it (quotes and escapes
/// already removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Lower-cased, as Slurm compares keys.
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// Every line's leading setting in reading order, includes expanded in
/// place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    settings: Vec<Setting>,
}

impl Provenance {
    pub(super) fn push(&mut self, setting: Setting) {
        self.settings.push(setting);
    }

    /// The line that sets `key` (any case) last: for a plain key, the one
    /// that counts.
    pub fn last(&self, key: &str) -> Option<&Setting> {
        self.all(key).next_back()
    }

    /// Every line that sets `key` (any case), in reading order.
    pub fn all<'a>(&'a self, key: &str) -> impl DoubleEndedIterator<Item = &'a Setting> + 'a {
        let key = key.to_ascii_lowercase();
        self.settings.iter().filter(move |s| s.key == key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Setting> {
        self.settings.iter()
    }
}
