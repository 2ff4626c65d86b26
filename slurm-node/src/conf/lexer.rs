//! The lexical layer both slurm.conf and cgroup.conf share: reading a file
//! safely, comments, continuations and escapes, `Key=Value` pairs, and
//! `Include` expanded in place with loop and depth checks. What a key
//! means is left to a [`Sink`]; where each line came from is recorded as
//! the file is read, so errors and provenance name the included file.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::{ConfError, FileRefusal, MAX_INCLUDE_DEPTH};
use super::provenance::{Origin, Provenance, Setting};
use crate::pathglob::{self, Wildcards};

/// The reader runs inside sshd; a config pointing at a huge or endless file
/// must not exhaust its memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a config file the way a process inside sshd must:
/// - opened `O_NONBLOCK` (a FIFO cannot hang the login) and `O_NOFOLLOW`;
///   a symlink is followed once, when root or the reader owns the link
///   (sites point /etc/slurm/slurm.conf at a shared copy), never twice;
/// - judged by `fstat` on the open fd, not by the path: a regular file,
///   or `/dev/null` read as empty, and nothing else;
/// - owned by root or by the reader itself, and not writable by others;
/// - at most [`MAX_FILE_BYTES`].
pub(super) fn read_text(path: &Path) -> io::Result<String> {
    read_text_with(path, Writers::OwnerAndGroup)
}

/// Who besides the owner may write a config file the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writers {
    /// The owner and the file's group: the rule for a node's own files.
    OwnerAndGroup,
    /// The owner only: slurmd's configless cache, which slurmd writes 0644.
    OwnerOnly,
}

/// [`read_text`] with the mode rule `writers`.
pub(super) fn read_text_with(path: &Path, writers: Writers) -> io::Result<String> {
    let (file, via) = match open_no_follow(path) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let link = fs::symlink_metadata(path)?;
            if !trusted_owner(link.uid()) {
                return Err(FileRefusal::LinkOwner { uid: link.uid() }.into_io());
            }
            // One hop only: the target is opened O_NOFOLLOW too, so a
            // chain of links ends here with ELOOP.
            let target = fs::read_link(path)?;
            let target = match path.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
            let file = open_no_follow(&target).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    FileRefusal::LinkToLink {
                        target: target.clone(),
                    }
                    .into_io()
                } else {
                    e
                }
            })?;
            (file, Some(target))
        }
        other => (other?, None),
    };
    let meta = file.metadata()?;
    if meta.file_type().is_char_device() && meta.rdev() == DEV_NULL {
        return Ok(String::new());
    }
    if !meta.is_file() {
        return Err(FileRefusal::NotRegular { via }.into_io());
    }
    if !trusted_owner(meta.uid()) {
        return Err(FileRefusal::Owner {
            uid: meta.uid(),
            via,
        }
        .into_io());
    }
    if writers == Writers::OwnerOnly && meta.mode() & 0o020 != 0 {
        return Err(FileRefusal::GroupWritable {
            mode: meta.mode() & 0o7777,
            via,
        }
        .into_io());
    }
    if meta.mode() & 0o002 != 0 {
        return Err(FileRefusal::Writable {
            mode: meta.mode() & 0o7777,
            via,
        }
        .into_io());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
        return Err(FileRefusal::TooLarge {
            limit: MAX_FILE_BYTES,
            via,
        }
        .into_io());
    }
    // Slurm reads bytes; a stray Latin-1 byte in a comment must not make the
    // whole file unreadable.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `/dev/null`'s device number (1, 3).
const DEV_NULL: u64 = (1 << 8) | 3;

fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// C's isspace() in the C locale, which Slurm's parser uses; Rust's ASCII
/// whitespace lacks the vertical tab.
pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

pub(super) fn is_blank(s: &str) -> bool {
    s.chars().all(is_space)
}

/// A line after comments, continuations and escapes were handled; `number`
/// is its first physical line, which is where an admin looks.
#[derive(Debug)]
struct Line {
    number: usize,
    text: String,
}

fn logical_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut joined = String::new();
    let mut first: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let code = strip_comment(raw);
        let start = *first.get_or_insert(i + 1);
        match continued(code) {
            Some(kept) => joined.push_str(kept),
            None => {
                joined.push_str(code);
                lines.push(Line {
                    number: start,
                    text: unescape(&joined),
                });
                joined.clear();
                first = None;
            }
        }
    }
    // A continuation on the last line joins nothing; keep what there was.
    if let Some(start) = first {
        lines.push(Line {
            number: start,
            text: unescape(&joined),
        });
    }
    lines
}

/// Everything from the first `#` not escaped by an odd run of backslashes.
fn strip_comment(line: &str) -> &str {
    let mut backslashes = 0usize;
    for (i, c) in line.char_indices() {
        match c {
            '#' if backslashes % 2 == 0 => return &line[..i],
            '\\' => backslashes += 1,
            _ => backslashes = 0,
        }
    }
    line
}

/// For a line ending (blanks aside) in an odd run of backslashes, the line
/// without the last backslash and what follows it. An even run is escaped
/// backslashes, not a continuation.
fn continued(line: &str) -> Option<&str> {
    let trimmed = line.trim_end_matches(is_space);
    let run = trimmed.len() - trimmed.trim_end_matches('\\').len();
    (run % 2 == 1).then(|| &trimmed[..trimmed.len() - 1])
}

/// `\x` becomes `x`; a lone trailing backslash disappears.
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The leading `Key=Value` of `s`, and the text after it. `Key = Value`,
/// `Key+=Value` (the operator is ignored, as Slurm does for plain keys) and
/// `Key="quoted value"` are accepted; an unterminated quote is part of a
/// plain value.
pub(super) fn next_pair(s: &str) -> Option<(&str, &str, &str)> {
    let s = s.trim_start_matches(is_space);
    let key_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    if key_len == 0 {
        return None;
    }
    let (key, rest) = s.split_at(key_len);
    let rest = rest.trim_start_matches(is_space);
    let rest = rest
        .strip_prefix(['-', '*', '+', '/'])
        .unwrap_or(rest)
        .strip_prefix('=')?
        .trim_start_matches(is_space);
    if let Some(quoted) = rest.strip_prefix('"') {
        if let Some(end) = quoted.find('"') {
            let after = &quoted[end + 1..];
            if after.chars().next().is_none_or(is_space) {
                return Some((key, &quoted[..end], after));
            }
        }
    }
    let len = rest.find(is_space).unwrap_or(rest.len());
    if len == 0 {
        return None;
    }
    Some((key, &rest[..len], &rest[len..]))
}

/// The most of a message quoting a config line that reaches the log.
pub const MAX_MESSAGE_CHARS: usize = 200;

fn bounded(message: &str) -> String {
    let mut out = String::new();
    for (n, c) in message.chars().enumerate() {
        if n == MAX_MESSAGE_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a line came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) path: &'a Path,
    pub(super) line: usize,
}

impl At<'_> {
    /// The message is cut to [`MAX_MESSAGE_CHARS`] with its control
    /// characters escaped: it quotes the file, and a hostile line must not
    /// push the file and line number out of a syslog record or forge one.
    pub(super) fn err(&self, message: impl Into<String>) -> ConfError {
        ConfError::Syntax {
            path: self.path.to_owned(),
            line: self.line,
            message: bounded(&message.into()),
        }
    }
}

/// What a file's contents mean; the reader only handles lexing and includes.
pub(super) trait Sink {
    /// One line's leading `key=value`; `rest` is the unparsed remainder.
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError>;
    /// ClusterName so far, for `%c` in Include paths.
    fn cluster_name(&self) -> Option<&str>;
}

pub(super) struct Reader<'s, S: Sink> {
    base_dir: PathBuf,
    /// Identities of the files being read, outermost first.
    stack: Vec<PathBuf>,
    sink: &'s mut S,
    provenance: Provenance,
}

impl<S: Sink> Reader<'_, S> {
    /// Feed `text`, the contents of `path`, and the files it includes to
    /// `sink`; returns where each line's setting was written.
    pub(super) fn run(text: &str, path: &Path, sink: &mut S) -> Result<Provenance, ConfError> {
        let mut reader = Reader {
            base_dir: path.parent().map(Path::to_owned).unwrap_or_default(),
            stack: vec![file_identity(path)],
            sink,
            provenance: Provenance::default(),
        };
        reader.parse(text, path)?;
        Ok(reader.provenance)
    }

    fn parse(&mut self, text: &str, path: &Path) -> Result<(), ConfError> {
        for line in logical_lines(text) {
            let at = At {
                path,
                line: line.number,
            };
            let text = line.text.as_str();
            if let Some(target) = include_directive(text) {
                let target = target.map_err(|m| at.err(m))?;
                self.include(at, target)?;
                continue;
            }
            match next_pair(text) {
                Some((key, value, rest)) => {
                    self.sink.entry(at, key, value, rest)?;
                    self.provenance.push(Setting {
                        key: key.to_ascii_lowercase(),
                        value: value.to_owned(),
                        origin: Origin {
                            file: path.to_owned(),
                            line: line.number,
                        },
                    });
                }
                None if is_blank(text) => {}
                None => {
                    return Err(at.err(format!(
                        "cannot parse \"{}\": expected Key=Value",
                        text.trim_matches(is_space)
                    )));
                }
            }
        }
        Ok(())
    }

    fn include(&mut self, at: At<'_>, name: &str) -> Result<(), ConfError> {
        let name = if name.contains("%c") {
            let cluster = self.sink.cluster_name().ok_or_else(|| {
                at.err(format!(
                    "Include {name}: %c needs ClusterName to be set before this line"
                ))
            })?;
            name.replace("%c", &cluster.to_ascii_lowercase())
        } else {
            name.to_owned()
        };
        let target = self.base_dir.join(&name);
        let dir_has_star = target
            .parent()
            .is_some_and(|p| Wildcards::Star.any_in(&p.to_string_lossy()));
        if dir_has_star {
            return Err(at.err(format!(
                "Include {name}: '*' is only supported in the last path component"
            )));
        }
        // A name without a wildcard comes back as itself.
        let files =
            pathglob::expand(&target, Wildcards::Star).map_err(|source| ConfError::Include {
                path: at.path.to_owned(),
                line: at.line,
                target: target.clone(),
                source,
            })?;
        for file in files {
            self.include_file(at, &file)?;
        }
        Ok(())
    }

    fn include_file(&mut self, at: At<'_>, target: &Path) -> Result<(), ConfError> {
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(ConfError::IncludeDepth {
                path: at.path.to_owned(),
                line: at.line,
                target: target.to_owned(),
            });
        }
        let id = file_identity(target);
        if self.stack.contains(&id) {
            return Err(ConfError::IncludeLoop {
                path: at.path.to_owned(),
                line: at.line,
                target: target.to_owned(),
            });
        }
        let text = read_text(target).map_err(|source| ConfError::Include {
            path: at.path.to_owned(),
            line: at.line,
            target: target.to_owned(),
            source,
        })?;
        self.stack.push(id);
        let result = self.parse(&text, target);
        self.stack.pop();
        result
    }
}

/// Two spellings of one file must count as one for the loop check.
fn file_identity(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// `Include file` (any case) at the very start of the line, as Slurm
/// recognises it: a line starting with blanks is not an include.
fn include_directive(line: &str) -> Option<Result<&str, String>> {
    let head = line.as_bytes().get(..7)?;
    if !head.eq_ignore_ascii_case(b"include") {
        return None;
    }
    let rest = line.get(7..)?;
    if !rest.is_empty() && !rest.starts_with(is_space) {
        return None;
    }
    let rest = rest.trim_start_matches(is_space);
    let end = rest.find(is_space).unwrap_or(rest.len());
    let (name, after) = rest.split_at(end);
    Some(if name.is_empty() {
        Err("Include without a file name".to_owned())
    } else if !is_blank(after) {
        Err(format!(
            "Include {name}: unexpected text after the file name: \"{}\"",
            after.trim_matches(is_space)
        ))
    } else {
        Ok(name)
    })
}
