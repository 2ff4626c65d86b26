//! PAM service files read the way Linux-PAM reads them, flattened into the
//! stacks one service runs, each entry keeping the file and line it came
//! from so a finding can point at it.
//!
//! Linux-PAM expands `@include` and `include` in place (so jumps count over
//! the expanded stack) and runs a `substack` as a unit whose `done` and
//! `die` end only the substack; entries keep a flag for that.

use std::fs;
use std::path::{Path, PathBuf};

use crate::root::Root;

/// Linux-PAM refuses deeper nesting; so do we, which also ends loops.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Required,
    Requisite,
    Sufficient,
    Optional,
    /// `[value=action ...]`, keys lower-cased.
    Actions(Vec<(String, String)>),
    Other(String),
}

impl Control {
    fn parse(token: &str) -> Control {
        if let Some(inner) = token.strip_prefix('[') {
            let inner = inner.strip_suffix(']').unwrap_or(inner);
            let pairs = inner
                .split_whitespace()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
                .collect();
            return Control::Actions(pairs);
        }
        match token.to_ascii_lowercase().as_str() {
            "required" => Control::Required,
            "requisite" => Control::Requisite,
            "sufficient" => Control::Sufficient,
            "optional" => Control::Optional,
            other => Control::Other(other.to_owned()),
        }
    }

    /// The action for return value `value`, falling back to `default`.
    pub fn action(&self, value: &str) -> Option<&str> {
        let Control::Actions(pairs) = self else {
            return None;
        };
        let find = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        find(value).or_else(|| find("default"))
    }

    /// As written in a PAM file, for messages.
    pub fn text(&self) -> String {
        match self {
            Control::Required => "required".into(),
            Control::Requisite => "requisite".into(),
            Control::Sufficient => "sufficient".into(),
            Control::Optional => "optional".into(),
            Control::Actions(pairs) => {
                let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", inner.join(" "))
            }
            Control::Other(s) => s.clone(),
        }
    }
}

/// One module line of an expanded stack.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `account`, `auth`, `session` or `password`.
    pub kind: String,
    /// Written with a leading `-`: a module that cannot be loaded is skipped.
    pub dash: bool,
    pub control: Control,
    /// The module path as written.
    pub module: String,
    pub args: Vec<String>,
    /// The file on this host (under `--root`).
    pub file: PathBuf,
    pub line: usize,
    /// Reached through a `substack` line.
    pub in_substack: bool,
}

impl Entry {
    /// The module's file name, e.g. `pam_unix.so` for `/lib/security/pam_unix.so`.
    pub fn name(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or(&self.module)
    }

    /// The argument `key=value` (key case-insensitive), if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find_map(|a| {
            let (k, v) = a.split_once('=')?;
            k.eq_ignore_ascii_case(key).then_some(v)
        })
    }
}

/// Something in a PAM file that Linux-PAM would reject or skip.
#[derive(Debug, Clone)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Stacks {
    pub entries: Vec<Entry>,
    pub problems: Vec<Problem>,
}

impl Stacks {
    /// The entries of one management group, in the order PAM runs them.
    pub fn of(&self, kind: &str) -> Vec<&Entry> {
        self.entries.iter().filter(|e| e.kind == kind).collect()
    }
}

/// Read the service file `path` (a host path) and everything it includes.
pub fn read(root: &Root, path: &Path) -> Stacks {
    let mut stacks = Stacks::default();
    let mut reading = Vec::new();
    read_file(root, path, None, false, &mut reading, &mut stacks);
    stacks
}

/// `only`: keep only entries of this kind (`type include file`).
fn read_file(
    root: &Root,
    path: &Path,
    only: Option<&str>,
    substack: bool,
    reading: &mut Vec<PathBuf>,
    out: &mut Stacks,
) {
    let text = match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            // The caller reports a missing top-level file itself.
            if !reading.is_empty() {
                let (file, line) = reading_site(out);
                out.problems.push(Problem {
                    file,
                    line,
                    message: format!("cannot read included file {}: {e}", root.shown(path)),
                });
            }
            return;
        }
    };
    reading.push(path.to_owned());
    for (line, body) in logical_lines(&text) {
        let tokens = tokenize(&body);
        let Some(first) = tokens.first() else {
            continue;
        };
        let at_problem = |message: String| Problem {
            file: path.to_owned(),
            line,
            message,
        };
        if first.eq_ignore_ascii_case("@include") {
            let Some(target) = tokens.get(1) else {
                out.problems
                    .push(at_problem("@include without a file name".to_owned()));
                continue;
            };
            include(root, path, line, target, only, substack, reading, out);
            continue;
        }
        let (dash, kind) = match first.strip_prefix('-') {
            Some(k) => (true, k.to_ascii_lowercase()),
            None => (false, first.to_ascii_lowercase()),
        };
        if !matches!(kind.as_str(), "account" | "auth" | "session" | "password") {
            out.problems.push(at_problem(format!(
                "unknown module type '{first}': Linux-PAM ignores this line"
            )));
            continue;
        }
        let (Some(control), Some(module)) = (tokens.get(1), tokens.get(2)) else {
            out.problems.push(at_problem(format!(
                "'{}' has no control or module: Linux-PAM ignores this line",
                body.trim()
            )));
            continue;
        };
        if only.is_some_and(|k| k != kind) {
            continue;
        }
        match control.to_ascii_lowercase().as_str() {
            c @ ("include" | "substack") => {
                let sub = substack || c == "substack";
                let kind_only = kind.clone();
                include(
                    root,
                    path,
                    line,
                    module,
                    Some(&kind_only),
                    sub,
                    reading,
                    out,
                );
            }
            _ => out.entries.push(Entry {
                kind,
                dash,
                control: Control::parse(control),
                module: module.clone(),
                args: tokens.get(3..).unwrap_or_default().to_vec(),
                file: path.to_owned(),
                line,
                in_substack: substack,
            }),
        }
    }
    reading.pop();
}

#[allow(clippy::too_many_arguments)]
fn include(
    root: &Root,
    from: &Path,
    line: usize,
    target: &str,
    only: Option<&str>,
    substack: bool,
    reading: &mut Vec<PathBuf>,
    out: &mut Stacks,
) {
    let node_path = if target.starts_with('/') {
        PathBuf::from(target)
    } else {
        Path::new("/etc/pam.d").join(target)
    };
    let host = root.host(&node_path);
    if reading.contains(&host) || reading.len() >= MAX_DEPTH {
        out.problems.push(Problem {
            file: from.to_owned(),
            line,
            message: format!("{target} includes itself or nests too deep"),
        });
        return;
    }
    if !host.is_file() {
        out.problems.push(Problem {
            file: from.to_owned(),
            line,
            message: format!(
                "included file {} does not exist: Linux-PAM fails the whole stack",
                node_path.display()
            ),
        });
        return;
    }
    read_file(root, &host, only, substack, reading, out);
}

/// Where the last entry came from, for problems found while reading.
fn reading_site(out: &Stacks) -> (PathBuf, usize) {
    out.entries
        .last()
        .map(|e| (e.file.clone(), e.line))
        .unwrap_or_default()
}

/// Lines with comments removed and backslash-newline continuations joined;
/// each keeps the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut start = None;
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("");
        let first = *start.get_or_insert(i + 1);
        match code.strip_suffix('\\') {
            Some(kept) => {
                joined.push_str(kept);
                joined.push(' ');
            }
            None => {
                joined.push_str(code);
                out.push((first, std::mem::take(&mut joined)));
                start = None;
            }
        }
    }
    if let Some(first) = start {
        out.push((first, joined));
    }
    out
}

/// Blank-separated tokens; a token starting with `[` runs to the matching
/// `]`, blanks included, as Linux-PAM reads controls and arguments.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        if c == '[' {
            for c in chars.by_ref() {
                token.push(c);
                if c == ']' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_controls_stay_one_token() {
        let t = tokenize("account  [success=1 default=ignore]\tpam_unix.so a=b [x y]");
        assert_eq!(
            t,
            [
                "account",
                "[success=1 default=ignore]",
                "pam_unix.so",
                "a=b",
                "[x y]"
            ]
        );
        let c = Control::parse(&t[1]);
        assert_eq!(c.action("success"), Some("1"));
        assert_eq!(c.action("perm_denied"), Some("ignore"));
        assert_eq!(Control::parse("Sufficient"), Control::Sufficient);
    }

    #[test]
    fn comments_and_continuations() {
        let lines = logical_lines(
            "# c\naccount required \\\n  pam_x.so arg # tail\n\nsession optional pam_y.so\n",
        );
        let kept: Vec<(usize, String)> = lines
            .into_iter()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].0, 2);
        assert_eq!(
            tokenize(&kept[0].1),
            ["account", "required", "pam_x.so", "arg"]
        );
        assert_eq!(kept[1].0, 5);
    }

    #[test]
    fn include_keeps_only_its_type_and_substack_is_marked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pamd = dir.path().join("etc/pam.d");
        fs::create_dir_all(&pamd).expect("mkdir");
        fs::write(
            pamd.join("common"),
            "account required pam_a.so\nsession required pam_s.so\n",
        )
        .expect("write");
        fs::write(
            pamd.join("svc"),
            "session include common\naccount substack common\n-account required pam_adopt.so x=1\n",
        )
        .expect("write");
        let root = Root::new(Some(dir.path().to_owned()));
        let stacks = read(&root, &pamd.join("svc"));
        assert!(stacks.problems.is_empty(), "{:?}", stacks.problems);
        let kinds: Vec<(&str, &str, bool)> = stacks
            .entries
            .iter()
            .map(|e| (e.kind.as_str(), e.name(), e.in_substack))
            .collect();
        assert_eq!(
            kinds,
            [
                ("session", "pam_s.so", false),
                ("account", "pam_a.so", true),
                ("account", "pam_adopt.so", false)
            ]
        );
        assert!(stacks.entries[2].dash);
        assert_eq!(stacks.entries[2].arg("X"), Some("1"));
    }
}
