//! slurm.conf and cgroup.conf, read the way Slurm's own parser reads them.
//!
//! Only what a compute node needs is typed; every other key is skipped so
//! that configs written for any Slurm from 22.05 on load, including keys
//! added after this code was written. What is read is read strictly: a bad
//! number or a malformed line is an error naming the file and line, because
//! guessing would let the module act on a config slurmd itself rejects.
//!
//! Lexical rules, as in Slurm: per physical line an unescaped `#` starts a
//! comment, an odd run of trailing backslashes joins the next line, and then
//! `\x` becomes `x` throughout the joined line. Keys are case-insensitive, a
//! value is a double-quoted string or a run of non-blanks, and a plain key
//! that is given twice keeps its last value. `Include` paths that are
//! relative are taken from the directory of the top-level file, as Slurm
//! 23.02 and later do.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::hostlist;

/// SlurmdSpoolDir when slurm.conf sets none (Slurm's compile-time default).
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/slurmd";
pub const DEFAULT_SLURMD_PORT: u16 = 6818;
pub const DEFAULT_MESSAGE_TIMEOUT_SECS: u32 = 10;
pub const DEFAULT_TCP_TIMEOUT_SECS: u32 = 2;
pub const DEFAULT_CGROUP_MOUNTPOINT: &str = "/sys/fs/cgroup";

/// Slurm itself has no limit and loops forever on a self-include; a fixed
/// bound turns any cycle the loop check misses (say, through bind mounts)
/// into an error.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// The reader runs inside sshd; a config pointing at a huge or endless file
/// must not exhaust its memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Upper bound on node entries over all NodeName lines, for the same reason.
pub const MAX_NODES: usize = 1 << 18;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: Include {}: {source}", path.display(), target.display())]
    Include {
        path: PathBuf,
        line: usize,
        target: PathBuf,
        source: io::Error,
    },
    #[error(
        "{}:{line}: Include {}: that file is already being read (include loop)",
        path.display(),
        target.display()
    )]
    IncludeLoop {
        path: PathBuf,
        line: usize,
        target: PathBuf,
    },
    #[error(
        "{}:{line}: Include {}: includes are nested more than {MAX_INCLUDE_DEPTH} deep",
        path.display(),
        target.display()
    )]
    IncludeDepth {
        path: PathBuf,
        line: usize,
        target: PathBuf,
    },
}

/// One node of slurm.conf's NodeName lines, after hostlist expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    /// NodeHostname; the NodeName when not given.
    pub hostname: String,
    /// NodeAddr; the NodeHostname when not given.
    pub addr: String,
    /// The node's own slurmd port; `None` means SlurmdPort.
    pub port: Option<u16>,
}

/// The parts of cgroup.conf the node-side tools look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConf {
    /// The file read, or `None` when there was none and these are defaults.
    pub path: Option<PathBuf>,
    /// CgroupPlugin as written (`cgroup/v1`, `cgroup/v2`, `autodetect`).
    pub plugin: Option<String>,
    /// CgroupMountpoint without a trailing slash.
    pub mountpoint: PathBuf,
    /// CgroupSlice (25.11 and later); `None` means `system.slice`.
    pub slice: Option<String>,
    pub constrain_cores: bool,
    pub constrain_ram_space: bool,
    pub constrain_swap_space: bool,
    pub constrain_devices: bool,
    pub ignore_systemd: bool,
    /// CgroupJobIdPaths: 26.05 names job cgroups by SLUID unless this is set.
    pub job_id_paths: bool,
}

impl Default for CgroupConf {
    fn default() -> Self {
        CgroupConf {
            path: None,
            plugin: None,
            mountpoint: PathBuf::from(DEFAULT_CGROUP_MOUNTPOINT),
            slice: None,
            constrain_cores: false,
            constrain_ram_space: false,
            constrain_swap_space: false,
            constrain_devices: false,
            ignore_systemd: false,
            job_id_paths: false,
        }
    }
}

/// The parts of slurm.conf a compute node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmConf {
    pub path: PathBuf,
    /// ClusterName, lower-cased as Slurm does.
    pub cluster_name: Option<String>,
    /// SlurmdSpoolDir as written, `%n`/`%h` unexpanded; see [`SlurmConf::spool_dir`].
    pub slurmd_spool_dir: String,
    pub slurmd_port: u16,
    pub slurm_user: String,
    pub auth_type: String,
    pub auth_info: Option<String>,
    /// PrologFlags, lower-cased and split at commas, as written (the flags
    /// they imply are not added; see [`SlurmConf::has_prolog_flag`]).
    pub prolog_flags: Vec<String>,
    pub proctrack_type: Option<String>,
    /// TaskPlugin split at commas; empty when unset or when it names `none`.
    pub task_plugin: Vec<String>,
    /// The last Prolog line: the one that runs on 22.05 to 23.11.
    pub prolog: Option<String>,
    /// Every Prolog line in order: from 24.05 on, all of them run.
    pub prologs: Vec<String>,
    /// The last Epilog line (see `prolog`).
    pub epilog: Option<String>,
    /// Every Epilog line in order (see `prologs`).
    pub epilogs: Vec<String>,
    pub task_prolog: Option<String>,
    pub message_timeout_secs: u32,
    pub tcp_timeout_secs: u32,
    /// NamespaceType, else JobContainerType; `None` when unset or a `none`
    /// plugin.
    pub job_container_type: Option<String>,
    /// LaunchParameters split at commas, case kept.
    pub launch_parameters: Vec<String>,
    pub nodes: Vec<NodeEntry>,
    /// cgroup.conf from beside slurm.conf (only [`SlurmConf::load`] reads it).
    pub cgroup: CgroupConf,
    /// Every line that held a single `Key=Value`, known or not, by
    /// lower-cased key (last one wins), for settings not typed above.
    pub raw: BTreeMap<String, String>,
}

impl Default for SlurmConf {
    fn default() -> Self {
        SlurmConf {
            path: PathBuf::new(),
            cluster_name: None,
            slurmd_spool_dir: DEFAULT_SPOOL_DIR.to_owned(),
            slurmd_port: DEFAULT_SLURMD_PORT,
            slurm_user: "root".to_owned(),
            auth_type: "auth/munge".to_owned(),
            auth_info: None,
            prolog_flags: Vec::new(),
            proctrack_type: None,
            task_plugin: Vec::new(),
            prolog: None,
            prologs: Vec::new(),
            epilog: None,
            epilogs: Vec::new(),
            task_prolog: None,
            message_timeout_secs: DEFAULT_MESSAGE_TIMEOUT_SECS,
            tcp_timeout_secs: DEFAULT_TCP_TIMEOUT_SECS,
            job_container_type: None,
            launch_parameters: Vec::new(),
            nodes: Vec::new(),
            cgroup: CgroupConf::default(),
            raw: BTreeMap::new(),
        }
    }
}

impl SlurmConf {
    /// Read `path` (and its includes), then `cgroup.conf` from the same
    /// directory if it exists, as slurmd does.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = read_text(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut conf = Self::parse(&text, path)?;
        let cgroup_path = path.with_file_name("cgroup.conf");
        match fs::metadata(&cgroup_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => conf.cgroup = CgroupConf::load(&cgroup_path)?,
        }
        Ok(conf)
    }

    /// Parse `text` as the contents of `path`. Includes are still read,
    /// relative to `path`'s directory; cgroup.conf is not (it keeps its
    /// defaults).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfError> {
        let mut sink = SlurmSink {
            conf: SlurmConf {
                path: path.to_owned(),
                ..SlurmConf::default()
            },
            node_defaults: BTreeMap::new(),
            job_container_type: None,
            namespace_type: None,
        };
        Reader::run(text, path, &mut sink)?;
        Ok(sink.finish())
    }

    /// The node named `name` (NodeName, exact match).
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The port `node`'s slurmd listens on.
    /// The entry named `name`, or one made up from the name alone for a
    /// node slurm.conf does not list (dynamic nodes): the spool lookup
    /// needs nothing else.
    pub fn node_or_unlisted(&self, name: &str) -> NodeEntry {
        self.node(name).cloned().unwrap_or_else(|| NodeEntry {
            name: name.to_owned(),
            hostname: name.to_owned(),
            addr: name.to_owned(),
            port: None,
        })
    }

    pub fn node_port(&self, node: &NodeEntry) -> u16 {
        node.port.unwrap_or(self.slurmd_port)
    }

    /// SlurmdSpoolDir for `node`. Like slurmd, only the first `%h` and the
    /// first `%n` are replaced, `%h` first.
    pub fn spool_dir(&self, node: &NodeEntry) -> PathBuf {
        let dir = self
            .slurmd_spool_dir
            .replacen("%h", &node.hostname, 1)
            .replacen("%n", &node.name, 1);
        PathBuf::from(dir)
    }

    /// Whether PrologFlags sets `flag` (case-insensitive), counting the
    /// flags Slurm turns on implicitly: `Contain` by `X11` and `RunInJob`,
    /// `Alloc` by all of those and `DeferBatch`, `ForceRequeueOnFail` and
    /// `NoHold`.
    pub fn has_prolog_flag(&self, flag: &str) -> bool {
        let want = flag.to_ascii_lowercase();
        self.prolog_flags
            .iter()
            .any(|f| *f == want || implied_prolog_flags(f).contains(&want.as_str()))
    }

    /// Whether LaunchParameters holds `param` (case-insensitive, as Slurm
    /// matches them).
    pub fn has_launch_parameter(&self, param: &str) -> bool {
        self.launch_parameters
            .iter()
            .any(|p| p.eq_ignore_ascii_case(param))
    }
}

fn implied_prolog_flags(flag: &str) -> &'static [&'static str] {
    match flag {
        "contain" | "deferbatch" | "forcerequeueonfail" | "nohold" => &["alloc"],
        "runinjob" | "x11" => &["alloc", "contain"],
        _ => &[],
    }
}

impl CgroupConf {
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = read_text(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfError> {
        let mut sink = CgroupSink {
            conf: CgroupConf {
                path: Some(path.to_owned()),
                ..CgroupConf::default()
            },
        };
        Reader::run(text, path, &mut sink)?;
        Ok(sink.conf)
    }
}

// ---------------------------------------------------------------------------
// Reading files and lines

/// Refuses anything but a regular file before opening it: opening a FIFO
/// would block the login forever.
fn read_text(path: &Path) -> io::Result<String> {
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    // Slurm reads bytes; a stray Latin-1 byte in a comment must not make the
    // whole file unreadable.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// C's isspace() in the C locale, which Slurm's parser uses; Rust's ASCII
/// whitespace lacks the vertical tab.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn is_blank(s: &str) -> bool {
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
fn next_pair(s: &str) -> Option<(&str, &str, &str)> {
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

/// Where a line came from, for error messages.
#[derive(Debug, Clone, Copy)]
struct At<'a> {
    path: &'a Path,
    line: usize,
}

impl At<'_> {
    fn err(&self, message: impl Into<String>) -> ConfError {
        ConfError::Syntax {
            path: self.path.to_owned(),
            line: self.line,
            message: message.into(),
        }
    }
}

/// What a file's contents mean; the reader only handles lexing and includes.
trait Sink {
    /// One line's leading `key=value`; `rest` is the unparsed remainder.
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError>;
    /// ClusterName so far, for `%c` in Include paths.
    fn cluster_name(&self) -> Option<&str>;
}

struct Reader<'s, S: Sink> {
    base_dir: PathBuf,
    /// Identities of the files being read, outermost first.
    stack: Vec<PathBuf>,
    sink: &'s mut S,
}

impl<S: Sink> Reader<'_, S> {
    fn run(text: &str, path: &Path, sink: &mut S) -> Result<(), ConfError> {
        let mut reader = Reader {
            base_dir: path.parent().map(Path::to_owned).unwrap_or_default(),
            stack: vec![file_identity(path)],
            sink,
        };
        reader.parse(text, path)
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
                Some((key, value, rest)) => self.sink.entry(at, key, value, rest)?,
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
        let last = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir_has_star = target
            .parent()
            .is_some_and(|p| p.to_string_lossy().contains('*'));
        if dir_has_star {
            Err(at.err(format!(
                "Include {name}: '*' is only supported in the last path component"
            )))
        } else if last.contains('*') {
            for file in glob(at, &target, &last)? {
                self.include_file(at, &file)?;
            }
            Ok(())
        } else {
            self.include_file(at, &target)
        }
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

/// Files matching `pattern` (only `*` is special) in `target`'s directory,
/// sorted. As with glob(3), `*` does not match a leading dot, and no match
/// is not an error: an empty `conf.d` is a normal state.
fn glob(at: At<'_>, target: &Path, pattern: &str) -> Result<Vec<PathBuf>, ConfError> {
    let dir = target.parent().unwrap_or(Path::new(""));
    let entries = fs::read_dir(dir).map_err(|source| ConfError::Include {
        path: at.path.to_owned(),
        line: at.line,
        target: target.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfError::Include {
            path: at.path.to_owned(),
            line: at.line,
            target: target.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && !pattern.starts_with('.') {
            continue;
        }
        if wildcard_match(pattern, name) {
            files.push(dir.join(name));
        }
    }
    files.sort();
    Ok(files)
}

fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut middles: Vec<&str> = parts.collect();
    let Some(last) = middles.pop() else {
        // No '*' at all: the whole name must have matched.
        return rest.is_empty();
    };
    let Some(stripped) = rest.strip_suffix(last) else {
        return false;
    };
    // The prefix and suffix must not overlap.
    if name.len() < first.len() + last.len() {
        return false;
    }
    rest = stripped;
    for middle in middles {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------
// Values

fn none_if_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim_matches(is_space))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An unsigned number the way strtoul(…, 0) reads one, which is what Slurm
/// uses: `0x` hex, a leading `0` octal, else decimal. Signs, blanks and
/// trailing text are refused.
fn c_unsigned(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.strip_prefix('0') {
        Some(octal) if !octal.is_empty() => u64::from_str_radix(octal, 8).ok(),
        _ => s.parse().ok(),
    }
}

/// A 16-bit setting such as MessageTimeout; `INFINITE`/`UNLIMITED` are
/// Slurm's spelling of the largest value.
fn parse_u16_setting(at: At<'_>, key: &str, value: &str) -> Result<u32, ConfError> {
    if value.eq_ignore_ascii_case("infinite") || value.eq_ignore_ascii_case("unlimited") {
        return Ok(u32::from(u16::MAX));
    }
    match c_unsigned(value) {
        Some(n) if n <= u64::from(u16::MAX) => Ok(n as u32),
        Some(_) => Err(at.err(format!("{key}: \"{value}\" is more than 65535"))),
        None => Err(at.err(format!("{key}: \"{value}\" is not a number"))),
    }
}

fn parse_port(at: At<'_>, key: &str, value: &str, number: Option<u64>) -> Result<u16, ConfError> {
    match number {
        Some(n) if n > 0 => {
            u16::try_from(n).map_err(|_| at.err(format!("{key}: \"{value}\" is not a port number")))
        }
        _ => Err(at.err(format!("{key}: \"{value}\" is not a port number"))),
    }
}

/// Slurm's boolean spellings, case-insensitive.
fn parse_bool(at: At<'_>, key: &str, value: &str) -> Result<bool, ConfError> {
    const TRUE: [&str; 4] = ["yes", "up", "true", "1"];
    const FALSE: [&str; 4] = ["no", "down", "false", "0"];
    if TRUE.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Ok(false)
    } else {
        Err(at.err(format!("{key}: \"{value}\" is not yes or no")))
    }
}

fn trailing_text(at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError> {
    if is_blank(rest) {
        Ok(())
    } else {
        Err(at.err(format!(
            "{key}={value}: unexpected text after the value: \"{}\"",
            rest.trim_matches(is_space)
        )))
    }
}

// ---------------------------------------------------------------------------
// slurm.conf

struct SlurmSink {
    conf: SlurmConf,
    /// NodeName=DEFAULT settings so far, by lower-cased key.
    node_defaults: BTreeMap<String, String>,
    job_container_type: Option<String>,
    namespace_type: Option<String>,
}

impl SlurmSink {
    fn finish(mut self) -> SlurmConf {
        // Slurm prefers NamespaceType once it is given, even as none.
        let plugin = self.namespace_type.or(self.job_container_type);
        self.conf.job_container_type = plugin.filter(|p| !p.to_ascii_lowercase().contains("none"));
        self.conf
    }

    /// Returns whether `key` is one this reader interprets.
    fn setting(
        &mut self,
        at: At<'_>,
        key: &str,
        lower: &str,
        value: &str,
    ) -> Result<bool, ConfError> {
        let c = &mut self.conf;
        match lower {
            "clustername" => c.cluster_name = none_if_empty(&value.to_ascii_lowercase()),
            "slurmdspooldir" => c.slurmd_spool_dir = value.to_owned(),
            "slurmdport" => c.slurmd_port = parse_port(at, key, value, c_unsigned(value))?,
            "slurmuser" => c.slurm_user = value.to_owned(),
            "authtype" => c.auth_type = value.to_owned(),
            "authinfo" => c.auth_info = none_if_empty(value),
            "prologflags" => c.prolog_flags = comma_list(&value.to_ascii_lowercase()),
            "proctracktype" => c.proctrack_type = none_if_empty(value),
            "taskplugin" => {
                c.task_plugin = if value.to_ascii_lowercase().contains("none") {
                    Vec::new()
                } else {
                    comma_list(value)
                }
            }
            "prolog" => {
                c.prolog = none_if_empty(value);
                c.prologs.extend(none_if_empty(value));
            }
            "epilog" => {
                c.epilog = none_if_empty(value);
                c.epilogs.extend(none_if_empty(value));
            }
            "taskprolog" => c.task_prolog = none_if_empty(value),
            "messagetimeout" => c.message_timeout_secs = parse_u16_setting(at, key, value)?,
            "tcptimeout" => c.tcp_timeout_secs = parse_u16_setting(at, key, value)?,
            "jobcontainertype" => self.job_container_type = Some(value.to_owned()),
            "namespacetype" => self.namespace_type = Some(value.to_owned()),
            "launchparameters" => c.launch_parameters = comma_list(value),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn node_line(&mut self, at: At<'_>, value: &str, rest: &str) -> Result<(), ConfError> {
        let mut opts: BTreeMap<String, &str> = BTreeMap::new();
        let mut left = rest;
        while let Some((k, v, after)) = next_pair(left) {
            opts.insert(k.to_ascii_lowercase(), v);
            left = after;
        }
        if !is_blank(left) {
            return Err(at.err(format!(
                "NodeName={value}: cannot parse \"{}\": expected Key=Value",
                left.trim_matches(is_space)
            )));
        }

        if value.eq_ignore_ascii_case("DEFAULT") {
            for (lower, key) in [
                ("nodehostname", "NodeHostname"),
                ("nodeaddr", "NodeAddr"),
                ("bcastaddr", "BcastAddr"),
            ] {
                if opts.contains_key(lower) {
                    return Err(at.err(format!("{key} is not allowed with NodeName=DEFAULT")));
                }
            }
            // Later DEFAULT lines override earlier ones key by key.
            for (k, v) in opts {
                self.node_defaults.insert(k, v.to_owned());
            }
            return Ok(());
        }
        if value.eq_ignore_ascii_case("ALL") {
            return Err(at.err("NodeName=ALL: ALL is reserved and cannot name a node"));
        }

        let names = expand(at, "NodeName", value)?;
        if names.is_empty() {
            return Err(at.err("NodeName: no node name given"));
        }
        let n = names.len();
        let hostname_expr = opts.get("nodehostname").copied().unwrap_or(value);
        let addr_expr = opts.get("nodeaddr").copied().unwrap_or(hostname_expr);
        let hostnames = per_node(at, "NodeHostname", hostname_expr, value, n)?;
        let addrs = per_node(at, "NodeAddr", addr_expr, value, n)?;
        let port_expr = opts
            .get("port")
            .copied()
            .or(self.node_defaults.get("port").map(String::as_str));
        let ports = match port_expr {
            Some(expr) => node_ports(at, expr, value, n)?,
            None => vec![None; n],
        };

        if self.conf.nodes.len().saturating_add(n) > MAX_NODES {
            return Err(at.err(format!("more than {MAX_NODES} nodes in NodeName lines")));
        }
        for (((name, hostname), addr), port) in
            names.into_iter().zip(hostnames).zip(addrs).zip(ports)
        {
            self.conf.nodes.push(NodeEntry {
                name,
                hostname,
                addr,
                port,
            });
        }
        Ok(())
    }
}

impl Sink for SlurmSink {
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError> {
        let lower = key.to_ascii_lowercase();
        if lower == "nodename" {
            return self.node_line(at, value, rest);
        }
        if self.setting(at, key, &lower, value)? {
            trailing_text(at, key, value, rest)?;
        } else if !is_blank(rest) {
            // An unknown key with more on its line is a multi-key line
            // (PartitionName, NodeSet, ... or one from a newer Slurm): none
            // of it concerns the node.
            return Ok(());
        }
        self.conf.raw.insert(lower, value.to_owned());
        Ok(())
    }

    fn cluster_name(&self) -> Option<&str> {
        self.conf.cluster_name.as_deref()
    }
}

fn expand(at: At<'_>, key: &str, expr: &str) -> Result<Vec<String>, ConfError> {
    hostlist::expand(expr).map_err(|e| at.err(format!("{key}: {e}")))
}

/// One value per node: the expression must give exactly one name per node,
/// or a single name they all share (several slurmds on one host), as
/// Slurm requires.
fn per_node(
    at: At<'_>,
    key: &str,
    expr: &str,
    nodes: &str,
    n: usize,
) -> Result<Vec<String>, ConfError> {
    let values = expand(at, key, expr)?;
    match values.len() {
        len if len == n => Ok(values),
        1 => Ok(vec![values[0].clone(); n]),
        len => Err(at.err(format!(
            "{key}={expr} gives {len} names for the {n} nodes of NodeName={nodes}; \
             give one per node or a single one"
        ))),
    }
}

/// Ports of a NodeName line. Slurm reads `6820-6823` and `6820,6821` as
/// ranges even without brackets.
fn node_ports(
    at: At<'_>,
    expr: &str,
    nodes: &str,
    n: usize,
) -> Result<Vec<Option<u16>>, ConfError> {
    let bracketed;
    let list = if !expr.starts_with('[') && (expr.contains('-') || expr.contains(',')) {
        bracketed = format!("[{expr}]");
        bracketed.as_str()
    } else {
        expr
    };
    let raw = expand(at, "Port", list)?;
    let ports = raw
        .iter()
        .map(|p| {
            let decimal = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten();
            parse_port(at, "Port", p, decimal).map(Some)
        })
        .collect::<Result<Vec<_>, _>>()?;
    match ports.len() {
        0 => Ok(vec![None; n]),
        1 => Ok(vec![ports[0]; n]),
        len if len == n => Ok(ports),
        len => Err(at.err(format!(
            "Port={expr} gives {len} ports for the {n} nodes of NodeName={nodes}; \
             give one per node or a single one"
        ))),
    }
}

// ---------------------------------------------------------------------------
// cgroup.conf

struct CgroupSink {
    conf: CgroupConf,
}

impl Sink for CgroupSink {
    fn entry(&mut self, at: At<'_>, key: &str, value: &str, rest: &str) -> Result<(), ConfError> {
        let c = &mut self.conf;
        match key.to_ascii_lowercase().as_str() {
            "cgroupplugin" => c.plugin = none_if_empty(value),
            "cgroupmountpoint" => {
                // Slurm drops one trailing slash; "/" itself stays.
                let trimmed = match value.strip_suffix('/') {
                    Some(t) if !t.is_empty() => t,
                    _ => value,
                };
                c.mountpoint = PathBuf::from(trimmed);
            }
            "cgroupslice" => c.slice = none_if_empty(value),
            "constraincores" => c.constrain_cores = parse_bool(at, key, value)?,
            "constrainramspace" => c.constrain_ram_space = parse_bool(at, key, value)?,
            "constrainswapspace" => c.constrain_swap_space = parse_bool(at, key, value)?,
            "constraindevices" => c.constrain_devices = parse_bool(at, key, value)?,
            "ignoresystemd" => c.ignore_systemd = parse_bool(at, key, value)?,
            "cgroupjobidpaths" => c.job_id_paths = parse_bool(at, key, value)?,
            _ => return Ok(()),
        }
        trailing_text(at, key, value, rest)
    }

    fn cluster_name(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    const DEBIAN_SLURM_CONF: &str = include_str!("../tests/fixtures/conf/debian-slurm.conf");
    const DEBIAN_CGROUP_CONF: &str = include_str!("../tests/fixtures/conf/debian-cgroup.conf");

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn parse(text: &str) -> SlurmConf {
        SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        SlurmConf::parse(text, Path::new("/etc/slurm/slurm.conf"))
            .unwrap_err()
            .to_string()
    }

    fn node(name: &str, hostname: &str, addr: &str, port: Option<u16>) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            hostname: hostname.into(),
            addr: addr.into(),
            port,
        }
    }

    #[test]
    fn defaults_for_an_empty_file() {
        let c = parse("");
        assert_eq!(c.path, Path::new("/etc/slurm/slurm.conf"));
        assert_eq!(c.cluster_name, None);
        assert_eq!(c.slurmd_spool_dir, "/var/spool/slurmd");
        assert_eq!(c.slurmd_port, 6818);
        assert_eq!(c.slurm_user, "root");
        assert_eq!(c.auth_type, "auth/munge");
        assert_eq!(c.message_timeout_secs, 10);
        assert_eq!(c.tcp_timeout_secs, 2);
        assert!(c.nodes.is_empty() && c.prolog_flags.is_empty());
        assert_eq!(c.cgroup, CgroupConf::default());
        assert_eq!(c.cgroup.mountpoint, Path::new("/sys/fs/cgroup"));
        let expected = SlurmConf {
            path: c.path.clone(),
            ..SlurmConf::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn keys_are_case_insensitive_values_keep_case_last_wins() {
        let c = parse(
            "SLURMUSER=Slurm\nslurmdspooldir=/Var/Spool/%n\nSlurmUser=slurmA\n\
             ClusterName=MyCluster\nAuthType = auth/slurm\nAuthInfo=\"socket=/run/x y\"\n",
        );
        assert_eq!(c.slurm_user, "slurmA");
        assert_eq!(c.slurmd_spool_dir, "/Var/Spool/%n");
        assert_eq!(c.cluster_name.as_deref(), Some("mycluster"));
        assert_eq!(c.auth_type, "auth/slurm");
        assert_eq!(c.auth_info.as_deref(), Some("socket=/run/x y"));
        assert_eq!(c.raw.get("slurmuser").map(String::as_str), Some("slurmA"));
    }

    #[test]
    fn comments_and_escaped_hash() {
        let c = parse(
            "# a comment\n   # indented comment\nSlurmUser=slurm # trailing comment\n\
             Prolog=/etc/slurm/pro\\#log.sh#real comment\nTaskProlog=/a\\\\b\n",
        );
        assert_eq!(c.slurm_user, "slurm");
        assert_eq!(c.prolog.as_deref(), Some("/etc/slurm/pro#log.sh"));
        assert_eq!(c.task_prolog.as_deref(), Some("/a\\b"));
        // An escaped backslash before '#' does not escape the '#'.
        let c = parse("SlurmUser=a\\\\#b\n");
        assert_eq!(c.slurm_user, "a\\");
    }

    #[test]
    fn blank_lines_whitespace_and_crlf() {
        let c = parse("\n   \n\t\nSlurmUser=slurm\r\n\r\nSlurmdPort=7000\r\n");
        assert_eq!(c.slurm_user, "slurm");
        assert_eq!(c.slurmd_port, 7000);
    }

    #[test]
    fn continuation_lines() {
        let c = parse(
            "NodeName=c[1-2] \\\n   NodeHostname=h[1-2] \\   \n  Port=7001\nSlurmUser=slurm\n",
        );
        assert_eq!(
            c.nodes,
            [
                node("c1", "h1", "h1", Some(7001)),
                node("c2", "h2", "h2", Some(7001))
            ]
        );
        assert_eq!(c.slurm_user, "slurm");
        // A comment ends a physical line before the continuation is seen.
        let c = parse("TaskProlog=/x \\ # comment\n\nSlurmUser=u\n");
        assert_eq!(c.task_prolog.as_deref(), Some("/x"));
        assert_eq!(c.slurm_user, "u");
        // An even run of backslashes is an escaped backslash, not a join.
        let c = parse("TaskProlog=/x\\\\\nSlurmUser=u\n");
        assert_eq!(c.task_prolog.as_deref(), Some("/x\\"));
        // Errors point at the first physical line of the joined line.
        assert_eq!(
            parse_err("SlurmUser=a\nSlurmdPort=\\\n abc\n"),
            "/etc/slurm/slurm.conf:2: SlurmdPort: \"abc\" is not a port number"
        );
    }

    #[test]
    fn numbers_are_strict() {
        for bad in ["abc", "0", "70000", "6818x", "-1", "+6818", "0x", "08"] {
            assert_eq!(
                parse_err(&format!("\n\nSlurmdPort={bad}\n")),
                format!("/etc/slurm/slurm.conf:3: SlurmdPort: \"{bad}\" is not a port number")
            );
        }
        assert_eq!(
            parse_err("MessageTimeout=ten"),
            "/etc/slurm/slurm.conf:1: MessageTimeout: \"ten\" is not a number"
        );
        assert_eq!(
            parse_err("TCPTimeout=65536"),
            "/etc/slurm/slurm.conf:1: TCPTimeout: \"65536\" is more than 65535"
        );
        // strtoul(…, 0) spellings, as Slurm reads them.
        let c = parse("SlurmdPort=0x1aa4\nMessageTimeout=010\nTCPTimeout=INFINITE\n");
        assert_eq!(c.slurmd_port, 0x1aa4);
        assert_eq!(c.message_timeout_secs, 8);
        assert_eq!(c.tcp_timeout_secs, 65535);
    }

    #[test]
    fn trailing_junk_after_a_known_key_is_an_error() {
        assert_eq!(
            parse_err("SlurmUser=slurm root\n"),
            "/etc/slurm/slurm.conf:1: SlurmUser=slurm: unexpected text after the value: \"root\""
        );
        assert_eq!(
            parse_err("\nthis is not a setting\n"),
            "/etc/slurm/slurm.conf:2: cannot parse \"this is not a setting\": expected Key=Value"
        );
        assert!(parse_err("SlurmUser=\n").contains(":1: cannot parse \"SlurmUser=\""));
    }

    #[test]
    fn unknown_keys_and_multi_key_lines_are_skipped() {
        let c = parse(
            "SchedulerType=sched/backfill\nFutureKey=1\n\
             PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n\
             NodeSet=ns Feature=gpu\nSlurmctldHost=head(10.0.0.1)\n\
             SomeNewLine=x SlurmdPort=1\n",
        );
        assert_eq!(c.slurmd_port, 6818);
        assert_eq!(c.raw.get("futurekey").map(String::as_str), Some("1"));
        assert_eq!(
            c.raw.get("slurmctldhost").map(String::as_str),
            Some("head(10.0.0.1)")
        );
        assert!(!c.raw.contains_key("partitionname"));
    }

    #[test]
    fn node_lines_expand_in_parallel() {
        let c = parse(
            "NodeName=c[1-4] NodeHostname=h[1-4] NodeAddr=10.0.0.[1-4] Port=6820 CPUs=2 \
             Feature=\"a b\" State=UNKNOWN\nNodeName=login\nNodeName=gpu[01-02] NodeAddr=g[1-2]\n",
        );
        assert_eq!(c.nodes.len(), 7);
        assert_eq!(c.nodes[0], node("c1", "h1", "10.0.0.1", Some(6820)));
        assert_eq!(c.nodes[3], node("c4", "h4", "10.0.0.4", Some(6820)));
        assert_eq!(c.nodes[4], node("login", "login", "login", None));
        assert_eq!(c.nodes[5], node("gpu01", "gpu01", "g1", None));
        assert_eq!(c.node("gpu02"), Some(&node("gpu02", "gpu02", "g2", None)));
        assert_eq!(c.node("nope"), None);
        assert_eq!(c.node_port(&c.nodes[0]), 6820);
        assert_eq!(c.node_port(&c.nodes[4]), 6818);
    }

    #[test]
    fn node_defaults_apply_to_later_lines() {
        let c = parse(
            "NodeName=early\nNodeName=DEFAULT CPUs=4 Port=7000\nNodeName=a\n\
             nodename=default Sockets=2\nNodeName=b Port=7001\nNodeName=c\n",
        );
        assert_eq!(c.node("early").unwrap().port, None);
        assert_eq!(c.node("a").unwrap().port, Some(7000));
        assert_eq!(c.node("b").unwrap().port, Some(7001));
        // A later DEFAULT line keeps earlier defaults it does not override.
        assert_eq!(c.node("c").unwrap().port, Some(7000));
        assert!(c.node("DEFAULT").is_none());
        assert_eq!(
            parse_err("\nNodeName=DEFAULT NodeHostname=x\n"),
            "/etc/slurm/slurm.conf:2: NodeHostname is not allowed with NodeName=DEFAULT"
        );
        assert!(parse_err("NodeName=ALL CPUs=1").contains(":1: NodeName=ALL: ALL is reserved"));
    }

    #[test]
    fn multiple_slurmd_shares_one_host() {
        let c = parse("NodeName=vm[1-3] NodeHostname=localhost Port=17001-17003\n");
        assert_eq!(
            c.nodes,
            [
                node("vm1", "localhost", "localhost", Some(17001)),
                node("vm2", "localhost", "localhost", Some(17002)),
                node("vm3", "localhost", "localhost", Some(17003)),
            ]
        );
        let c = parse("NodeName=x[1-2] Port=[7001,7002]\nNodeName=y Port=7\n");
        assert_eq!(c.nodes[1].port, Some(7002));
        assert_eq!(c.node("y").unwrap().port, Some(7));
    }

    #[test]
    fn node_count_mismatch_names_file_and_line() {
        assert_eq!(
            parse_err("ClusterName=c\n\nNodeName=c[1-4] NodeAddr=10.0.0.[1-3]\n"),
            "/etc/slurm/slurm.conf:3: NodeAddr=10.0.0.[1-3] gives 3 names for the 4 nodes of \
             NodeName=c[1-4]; give one per node or a single one"
        );
        assert!(
            parse_err("NodeName=c[1-2] NodeHostname=h[1-3]")
                .starts_with("/etc/slurm/slurm.conf:1: NodeHostname=h[1-3] gives 3 names")
        );
        assert!(
            parse_err("NodeName=c[1-3] Port=[1-2]")
                .starts_with("/etc/slurm/slurm.conf:1: Port=[1-2] gives 2 ports")
        );
        assert_eq!(
            parse_err("NodeName=c1 Port=http"),
            "/etc/slurm/slurm.conf:1: Port: \"http\" is not a port number"
        );
        assert_eq!(
            parse_err("NodeName=c1 Port=0x10"),
            "/etc/slurm/slurm.conf:1: Port: \"0x10\" is not a port number"
        );
        assert!(
            parse_err("NodeName=c[1-2").starts_with(
                "/etc/slurm/slurm.conf:1: NodeName: hostlist \"c[1-2\": '[' without ']'"
            )
        );
        assert!(
            parse_err("NodeName=c1 CPUs=2 junk").contains(":1: NodeName=c1: cannot parse \"junk\"")
        );
        assert!(parse_err("NodeName=n[1-300000]").contains("expands to more than 65536"));
    }

    #[test]
    fn prolog_flags_and_lists() {
        let c = parse(
            "PrologFlags=X11,Serial\nTaskPlugin=task/affinity,task/cgroup\n\
             LaunchParameters=enable_nss_slurm,Ulimit_PAM_Adopt\nProctrackType=proctrack/cgroup\n",
        );
        assert_eq!(c.prolog_flags, ["x11", "serial"]);
        assert!(c.has_prolog_flag("x11"));
        assert!(c.has_prolog_flag("Contain"));
        assert!(c.has_prolog_flag("ALLOC"));
        assert!(c.has_prolog_flag("serial"));
        assert!(!c.has_prolog_flag("runinjob"));
        assert_eq!(c.task_plugin, ["task/affinity", "task/cgroup"]);
        assert_eq!(
            c.launch_parameters,
            ["enable_nss_slurm", "Ulimit_PAM_Adopt"]
        );
        assert!(c.has_launch_parameter("ulimit_pam_adopt"));
        assert_eq!(c.proctrack_type.as_deref(), Some("proctrack/cgroup"));

        let c = parse("PrologFlags=RunInJob\nTaskPlugin=task/none\n");
        assert!(c.has_prolog_flag("contain") && c.has_prolog_flag("alloc"));
        assert!(c.task_plugin.is_empty());
        let c = parse("PrologFlags=Alloc\n");
        assert!(!c.has_prolog_flag("contain"));
    }

    #[test]
    fn prolog_and_epilog_lines_accumulate() {
        let c = parse("Prolog=/a\nProlog=/b\nEpilog=/e\n");
        assert_eq!(c.prolog.as_deref(), Some("/b"));
        assert_eq!(c.prologs, ["/a", "/b"]);
        assert_eq!(c.epilog.as_deref(), Some("/e"));
        assert_eq!(c.epilogs, ["/e"]);
    }

    #[test]
    fn job_container_type() {
        assert_eq!(
            parse("JobContainerType=job_container/tmpfs")
                .job_container_type
                .as_deref(),
            Some("job_container/tmpfs")
        );
        assert_eq!(
            parse("JobContainerType=job_container/none").job_container_type,
            None
        );
        assert_eq!(
            parse("JobContainerType=job_container/none\nNamespaceType=namespace/tmpfs")
                .job_container_type
                .as_deref(),
            Some("namespace/tmpfs")
        );
        assert_eq!(
            parse("NamespaceType=namespace/none\nJobContainerType=job_container/tmpfs")
                .job_container_type,
            None
        );
    }

    #[test]
    fn spool_dir_substitutes_first_n_and_h() {
        let mut c =
            parse("SlurmdSpoolDir=/var/spool/slurmd.%n/%h/%n\nNodeName=vm1 NodeHostname=host1\n");
        let n = c.node("vm1").unwrap().clone();
        assert_eq!(c.spool_dir(&n), Path::new("/var/spool/slurmd.vm1/host1/%n"));
        c.slurmd_spool_dir = "/var/lib/slurm/slurmd".into();
        assert_eq!(c.spool_dir(&n), Path::new("/var/lib/slurm/slurmd"));
    }

    #[test]
    fn include_relative_absolute_and_case() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        write(d, "nodes.conf", "NodeName=n[1-2]\n");
        let abs = write(d, "sub/abs.conf", "SlurmUser=slurm\n");
        let main = write(
            d,
            "slurm.conf",
            &format!(
                "ClusterName=Test\nInclude nodes.conf\ninclude {}\nINCLUDE  %c-extra.conf  # c\n",
                abs.display()
            ),
        );
        write(d, "test-extra.conf", "SlurmdPort=7777\n");
        let c = SlurmConf::load(&main).unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.slurm_user, "slurm");
        assert_eq!(c.slurmd_port, 7777);
        // parse() resolves includes against the given path's directory too.
        let c = SlurmConf::parse("Include nodes.conf\n", &d.join("any.conf")).unwrap();
        assert_eq!(c.nodes.len(), 2);
    }

    #[test]
    fn nested_relative_include_is_from_the_top_level_directory() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        write(d, "sub/inner.conf", "Include leaf.conf\n");
        write(d, "leaf.conf", "SlurmUser=top\n");
        write(d, "sub/leaf.conf", "SlurmUser=sub\n");
        let main = write(d, "slurm.conf", "Include sub/inner.conf\n");
        assert_eq!(SlurmConf::load(&main).unwrap().slurm_user, "top");
    }

    #[test]
    fn include_glob_in_last_component() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        write(d, "conf.d/20-b.conf", "NodeName=b\n");
        write(d, "conf.d/10-a.conf", "NodeName=a\n");
        write(d, "conf.d/.hidden.conf", "NodeName=hidden\n");
        write(d, "conf.d/readme.txt", "not a config\n");
        write(d, "empty.d/readme.txt", "x\n");
        let main = write(
            d,
            "slurm.conf",
            "Include conf.d/*.conf\nInclude empty.d/*.conf\n",
        );
        let c = SlurmConf::load(&main).unwrap();
        let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);

        let main = write(d, "bad.conf", "\nInclude */x.conf\n");
        assert_eq!(
            SlurmConf::load(&main).unwrap_err().to_string(),
            format!(
                "{}:2: Include */x.conf: '*' is only supported in the last path component",
                main.display()
            )
        );
        let main = write(d, "nodir.conf", "Include missing.d/*.conf\n");
        assert!(matches!(
            SlurmConf::load(&main),
            Err(ConfError::Include { line: 1, .. })
        ));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(wildcard_match("nodes", "nodes"));
        assert!(!wildcard_match("nodes", "nodes2"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(!wildcard_match("*.conf", "a.conf~"));
        assert!(!wildcard_match("a*b*c", "aXcYb"));
    }

    #[test]
    fn include_errors_name_file_and_line() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        let main = write(d, "slurm.conf", "SlurmUser=x\nInclude missing.conf\n");
        let err = SlurmConf::load(&main).unwrap_err();
        assert!(matches!(err, ConfError::Include { line: 2, .. }));
        assert!(
            err.to_string().starts_with(&format!(
                "{}:2: Include {}: ",
                main.display(),
                d.join("missing.conf").display()
            )),
            "{err}"
        );

        // Errors inside an included file name that file.
        let inc = write(d, "inc.conf", "\n\nSlurmdPort=abc\n");
        let main = write(d, "slurm2.conf", "Include inc.conf\n");
        assert_eq!(
            SlurmConf::load(&main).unwrap_err().to_string(),
            format!(
                "{}:3: SlurmdPort: \"abc\" is not a port number",
                inc.display()
            )
        );

        let main = write(d, "slurm3.conf", "Include\n");
        assert!(
            SlurmConf::load(&main)
                .unwrap_err()
                .to_string()
                .ends_with(":1: Include without a file name")
        );
        let main = write(d, "slurm4.conf", "Include a.conf b.conf\n");
        assert!(
            SlurmConf::load(&main)
                .unwrap_err()
                .to_string()
                .contains(":1: Include a.conf: unexpected text after the file name: \"b.conf\"")
        );
        let main = write(d, "slurm5.conf", "Include %c.conf\n");
        assert!(
            SlurmConf::load(&main)
                .unwrap_err()
                .to_string()
                .contains("%c needs ClusterName")
        );
        // Not an include: leading blanks, or no blank after the word.
        let main = write(d, "slurm6.conf", "Includes=1\n");
        assert!(SlurmConf::load(&main).is_ok());
        let main = write(d, "slurm7.conf", " Include x.conf\n");
        assert!(matches!(
            SlurmConf::load(&main),
            Err(ConfError::Syntax { line: 1, .. })
        ));
        // An included directory is not a file.
        write(d, "dir.d/x", "");
        let main = write(d, "slurm8.conf", "Include dir.d\n");
        assert!(matches!(
            SlurmConf::load(&main),
            Err(ConfError::Include { .. })
        ));
    }

    #[test]
    fn include_loops_and_depth() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        let main = write(d, "slurm.conf", "Include a.conf\n");
        let a = write(d, "a.conf", "SlurmUser=x\nInclude ./slurm.conf\n");
        let err = SlurmConf::load(&main).unwrap_err();
        assert!(
            matches!(&err, ConfError::IncludeLoop { path, line: 2, .. } if *path == a),
            "{err}"
        );
        assert!(err.to_string().contains("include loop"));

        let selfish = write(d, "self.conf", "Include self.conf\n");
        assert!(matches!(
            SlurmConf::load(&selfish),
            Err(ConfError::IncludeLoop { line: 1, .. })
        ));

        for i in 0..=MAX_INCLUDE_DEPTH + 1 {
            write(
                d,
                &format!("deep{i}.conf"),
                &format!("Include deep{}.conf\n", i + 1),
            );
        }
        write(
            d,
            &format!("deep{}.conf", MAX_INCLUDE_DEPTH + 2),
            "SlurmUser=deep\n",
        );
        let err = SlurmConf::load(&d.join("deep0.conf")).unwrap_err();
        assert!(matches!(err, ConfError::IncludeDepth { .. }), "{err}");
        // Exactly at the limit is fine.
        let ok = SlurmConf::load(&d.join("deep2.conf")).unwrap();
        assert_eq!(ok.slurm_user, "deep");
    }

    #[test]
    fn load_errors_name_the_file() {
        let tmp = TempDir::new().unwrap();
        let missing = tmp.path().join("slurm.conf");
        let err = SlurmConf::load(&missing).unwrap_err();
        assert!(matches!(&err, ConfError::Read { path, .. } if *path == missing));
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display()))
        );
        let err = SlurmConf::load(tmp.path()).unwrap_err();
        assert!(err.to_string().ends_with("not a regular file"), "{err}");
    }

    #[test]
    fn cgroup_conf_beside_slurm_conf() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        let main = write(d, "slurm.conf", "ClusterName=c\n");
        let c = SlurmConf::load(&main).unwrap();
        assert_eq!(c.cgroup, CgroupConf::default());

        let cg = write(
            d,
            "cgroup.conf",
            "CgroupPlugin=cgroup/v2\nCgroupMountpoint=/mnt/cg/\nconstraincores=YES\n\
             ConstrainRAMSpace=true\nConstrainSwapSpace=0\nConstrainDevices=up\n\
             IgnoreSystemd=yes\nCgroupJobIdPaths=yes\nCgroupSlice=slurm.slice\nAllowedRAMSpace=100\n",
        );
        let c = SlurmConf::load(&main).unwrap();
        assert_eq!(
            c.cgroup,
            CgroupConf {
                path: Some(cg.clone()),
                plugin: Some("cgroup/v2".into()),
                mountpoint: PathBuf::from("/mnt/cg"),
                slice: Some("slurm.slice".into()),
                constrain_cores: true,
                constrain_ram_space: true,
                constrain_swap_space: false,
                constrain_devices: true,
                ignore_systemd: true,
                job_id_paths: true,
            }
        );
        // parse() leaves cgroup.conf alone.
        assert_eq!(
            SlurmConf::parse("", &main).unwrap().cgroup,
            CgroupConf::default()
        );

        write(d, "cgroup.conf", "\nConstrainCores=maybe\n");
        assert_eq!(
            SlurmConf::load(&main).unwrap_err().to_string(),
            format!(
                "{}:2: ConstrainCores: \"maybe\" is not yes or no",
                cg.display()
            )
        );
        let root = CgroupConf::parse("CgroupMountpoint=/\n", &cg).unwrap();
        assert_eq!(root.mountpoint, Path::new("/"));
    }

    #[test]
    fn debian_style_config() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        let main = write(d, "slurm.conf", DEBIAN_SLURM_CONF);
        let cg = write(d, "cgroup.conf", DEBIAN_CGROUP_CONF);
        let c = SlurmConf::load(&main).unwrap();
        assert_eq!(c.cluster_name.as_deref(), Some("vm"));
        assert_eq!(c.slurm_user, "slurm");
        assert_eq!(c.slurmd_port, 6818);
        assert_eq!(c.slurmd_spool_dir, "/var/lib/slurm/slurmd");
        assert_eq!(c.auth_type, "auth/munge");
        assert_eq!(c.proctrack_type.as_deref(), Some("proctrack/cgroup"));
        assert_eq!(c.task_plugin, ["task/affinity", "task/cgroup"]);
        assert!(c.has_prolog_flag("contain") && c.has_prolog_flag("x11"));
        assert_eq!(
            c.prolog.as_deref(),
            Some("/usr/lib/slurm-adopt/adopt-prolog")
        );
        assert_eq!(
            c.task_prolog.as_deref(),
            Some("/usr/lib/slurm-adopt/adopt-taskprolog")
        );
        assert_eq!(
            c.epilog.as_deref(),
            Some("/usr/lib/slurm-adopt/adopt-epilog")
        );
        assert_eq!(c.job_container_type, None);
        assert_eq!(c.message_timeout_secs, 10);
        assert_eq!(c.tcp_timeout_secs, 2);
        assert!(c.has_launch_parameter("ulimit_pam_adopt"));
        assert_eq!(c.nodes.len(), 5);
        assert_eq!(c.node("vm"), Some(&node("vm", "vm", "vm", None)));
        assert_eq!(
            c.node("cn03"),
            Some(&node("cn03", "cn03", "192.168.10.13", Some(6818)))
        );
        let vm = c.node("vm").unwrap();
        assert_eq!(c.spool_dir(vm), Path::new("/var/lib/slurm/slurmd"));
        assert_eq!(c.cgroup.path.as_deref(), Some(cg.as_path()));
        assert_eq!(c.cgroup.plugin.as_deref(), Some("cgroup/v1"));
        assert!(c.cgroup.constrain_cores && c.cgroup.constrain_devices);
        assert!(c.cgroup.constrain_ram_space && !c.cgroup.constrain_swap_space);
    }
}
