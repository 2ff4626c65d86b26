//! The one wildcard expansion for configuration includes: slurm.conf's
//! `Include`, sshd_config's `Include`, and the Prolog/Epilog globs doctor
//! checks. All of them allow a pattern in the last path component only,
//! which is all this matches; a leaf module so that both `conf` and the
//! admin CLI's sshd reader can use it without depending on each other.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Which characters of a pattern are special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wildcards {
    /// `*` only: Slurm's Include, Prolog and Epilog.
    Star,
    /// `*` and `?`, as fnmatch(3) without brackets: sshd's Include.
    StarAndQuestion,
}

impl Wildcards {
    fn is_special(self, c: char) -> bool {
        match self {
            Wildcards::Star => c == '*',
            Wildcards::StarAndQuestion => c == '*' || c == '?',
        }
    }

    /// Whether `text` holds a character these wildcards treat as special.
    pub fn any_in(self, text: &str) -> bool {
        text.chars().any(|c| self.is_special(c))
    }
}

/// The files `pattern` names. When its last component holds no wildcard,
/// that is the pattern itself, so a missing file is reported by whoever
/// reads it. Otherwise it is the entries of the pattern's directory whose
/// names match, sorted; none is not an error (an empty `conf.d` is a normal
/// state), an unreadable directory is. As with glob(3), a wildcard does not
/// match a leading dot unless the pattern starts with one, so editor and
/// package-manager leftovers such as `.10-site.conf.swp` stay out.
pub fn expand(pattern: &Path, wildcards: Wildcards) -> io::Result<Vec<PathBuf>> {
    let last = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !wildcards.any_in(&last) {
        return Ok(vec![pattern.to_owned()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && !last.starts_with('.') {
            continue;
        }
        if matches(&last, &name, wildcards) {
            files.push(dir.join(entry.file_name()));
        }
    }
    files.sort();
    Ok(files)
}

/// Whether `name` matches `pattern`: `*` matches any run of characters,
/// `?` (with [`Wildcards::StarAndQuestion`]) any one, anything else itself.
pub fn matches(pattern: &str, name: &str, wildcards: Wildcards) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let question = wildcards == Wildcards::StarAndQuestion;
    let (mut p, mut n) = (0, 0);
    // The last `*` seen and the name position it currently stands for; on a
    // mismatch it takes one more character and matching resumes after it.
    let mut star: Option<(usize, usize)> = None;
    loop {
        match (pattern.get(p), name.get(n)) {
            (None, None) => return true,
            (Some('*'), _) => {
                star = Some((p, n));
                p += 1;
            }
            (Some(&want), Some(&got)) if want == got || (question && want == '?') => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) if star_n < name.len() => {
                    star = Some((star_p, star_n + 1));
                    p = star_p + 1;
                    n = star_n + 1;
                }
                _ => return false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_only() {
        let m = |p, n| matches(p, n, Wildcards::Star);
        assert!(m("*.conf", "a.conf"));
        assert!(m("*", "x"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(m("nodes", "nodes"));
        assert!(!m("nodes", "nodes2"));
        assert!(!m("a*a", "a"));
        assert!(!m("*.conf", "a.conf~"));
        assert!(!m("a*b*c", "aXcYb"));
        // Without StarAndQuestion a '?' is itself.
        assert!(!m("a?c", "abc"));
        assert!(m("a?c", "a?c"));
    }

    #[test]
    fn star_and_question() {
        let m = |p, n| matches(p, n, Wildcards::StarAndQuestion);
        assert!(m("*.conf", "10-site.conf"));
        assert!(!m("*.conf", "10-site.conf.bak"));
        assert!(m("a?c*", "abcdef"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("**a", "bba"));
    }

    #[test]
    fn expand_sorts_skips_dot_files_and_passes_plain_names_through() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in ["20-b.conf", "10-a.conf", ".hidden.conf", "readme.txt"] {
            fs::write(d.join(name), "").unwrap();
        }
        let got = expand(&d.join("*.conf"), Wildcards::Star).unwrap();
        assert_eq!(got, [d.join("10-a.conf"), d.join("20-b.conf")]);
        let got = expand(&d.join(".*.conf"), Wildcards::Star).unwrap();
        assert_eq!(got, [d.join(".hidden.conf")]);
        let got = expand(&d.join("?0-a.conf"), Wildcards::StarAndQuestion).unwrap();
        assert_eq!(got, [d.join("10-a.conf")]);
        // '?' is no wildcard for Slurm: the name is taken as it is.
        let plain = d.join("?0-a.conf");
        assert_eq!(expand(&plain, Wildcards::Star).unwrap(), [plain]);
        assert!(expand(&d.join("missing/*.conf"), Wildcards::Star).is_err());
    }
}
