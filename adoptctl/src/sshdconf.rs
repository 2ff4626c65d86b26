//! sshd_config read the way sshd reads it: `Include` expanded in place
//! (globs, relative names taken from /etc/ssh), `Match` blocks kept apart,
//! and for global settings the first value given wins.

use std::fs;
use std::path::{Path, PathBuf};

use slurm_node::pathglob::{self, Wildcards};

use crate::root::Root;

const MAX_DEPTH: usize = 16;

/// The `Match` line a directive sits under.
#[derive(Debug, Clone)]
pub struct MatchBlock {
    pub criteria: String,
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Directive {
    /// Lower-cased.
    pub keyword: String,
    pub args: Vec<String>,
    pub file: PathBuf,
    pub line: usize,
    /// `None` for global settings.
    pub block: Option<MatchBlock>,
}

#[derive(Debug, Default)]
pub struct SshdConfig {
    pub directives: Vec<Directive>,
    /// (file, line, message) for includes that could not be read.
    pub problems: Vec<(PathBuf, usize, String)>,
}

impl SshdConfig {
    /// The global directive that sets any of `names` first; sshd keeps the
    /// first value it sees for almost every keyword.
    pub fn first_global(&self, names: &[&str]) -> Option<&Directive> {
        self.directives
            .iter()
            .find(|d| d.block.is_none() && names.contains(&d.keyword.as_str()))
    }

    /// Directives for any of `names` inside Match blocks.
    pub fn in_match_blocks(&self, names: &[&str]) -> Vec<&Directive> {
        self.directives
            .iter()
            .filter(|d| d.block.is_some() && names.contains(&d.keyword.as_str()))
            .collect()
    }
}

/// Read `path` (a host path) and its includes.
pub fn read(root: &Root, path: &Path) -> std::io::Result<SshdConfig> {
    let text = fs::read(path)?;
    let mut config = SshdConfig::default();
    let mut block = None;
    parse(
        root,
        path,
        &String::from_utf8_lossy(&text),
        &mut block,
        0,
        &mut config,
    );
    Ok(config)
}

fn parse(
    root: &Root,
    path: &Path,
    text: &str,
    block: &mut Option<MatchBlock>,
    depth: usize,
    out: &mut SshdConfig,
) {
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let split = trimmed
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(trimmed.len());
        let keyword = trimmed[..split].to_ascii_lowercase();
        let rest = trimmed[split..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        let args = split_args(rest);
        match keyword.as_str() {
            "match" => {
                let all = matches!(args.as_slice(), [only] if only.eq_ignore_ascii_case("all"));
                *block = (!all).then(|| MatchBlock {
                    criteria: rest.to_owned(),
                    file: path.to_owned(),
                    line,
                });
            }
            "include" => {
                for pattern in &args {
                    include(root, path, line, pattern, block, depth, out);
                }
            }
            _ => out.directives.push(Directive {
                keyword,
                args,
                file: path.to_owned(),
                line,
                block: block.clone(),
            }),
        }
    }
}

fn include(
    root: &Root,
    from: &Path,
    line: usize,
    pattern: &str,
    block: &mut Option<MatchBlock>,
    depth: usize,
    out: &mut SshdConfig,
) {
    if depth >= MAX_DEPTH {
        out.problems.push((
            from.to_owned(),
            line,
            format!("Include {pattern}: nested more than {MAX_DEPTH} deep"),
        ));
        return;
    }
    let node_path = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        Path::new("/etc/ssh").join(pattern)
    };
    let host = root.host(&node_path);
    // sshd's Include takes `*` and `?`. A missing or unreadable directory
    // matches nothing, which is what sshd's glob(3) call makes of it.
    let files = pathglob::expand(&host, Wildcards::StarAndQuestion).unwrap_or_default();
    for file in files {
        match fs::read(&file) {
            Ok(bytes) => {
                // A Match inside an included file ends with that file.
                let mut inner = block.clone();
                parse(
                    root,
                    &file,
                    &String::from_utf8_lossy(&bytes),
                    &mut inner,
                    depth + 1,
                    out,
                );
            }
            Err(e) => out.problems.push((
                from.to_owned(),
                line,
                format!("Include {}: {e}", root.shown(&file)),
            )),
        }
    }
}

/// Blank-separated arguments; double quotes group.
fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            '#' if !quoted && !any => break,
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_global_value_wins_and_match_all_ends_a_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sshd_config");
        fs::write(
            &p,
            "UsePAM yes\nusepam no\nMatch User bob\n  KbdInteractiveAuthentication yes\nMatch all\nKbdInteractiveAuthentication=no\n",
        )
        .expect("write");
        let c = read(&Root::new(None), &p).expect("read");
        let pam = c.first_global(&["usepam"]).expect("usepam");
        assert_eq!((pam.line, pam.args[0].as_str()), (1, "yes"));
        let kbd = c
            .first_global(&["kbdinteractiveauthentication"])
            .expect("kbd");
        assert_eq!((kbd.line, kbd.args[0].as_str()), (6, "no"));
        let in_match = c.in_match_blocks(&["kbdinteractiveauthentication"]);
        assert_eq!(in_match.len(), 1);
        assert_eq!(in_match[0].block.as_ref().map(|b| b.line), Some(3));
    }
}
