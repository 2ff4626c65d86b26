//! Findings and how they are printed: one line each for people, a JSON
//! array for fleet tooling.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    /// The file as the node sees it (without `--root`).
    pub file: Option<String>,
    pub line: Option<usize>,
    pub message: String,
    /// One sentence; empty for `ok`.
    pub fix: String,
}

impl Finding {
    fn place(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            (Some(f), None) => f.clone(),
            (None, _) => "-".to_owned(),
        }
    }
}

/// The exit status: 0 all ok, 1 warnings, 2 failures.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.status).max() {
        Some(Status::Fail) => 2,
        Some(Status::Warn) => 1,
        _ => 0,
    }
}

pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{:<4}  {}  {}  {}",
            f.status.word(),
            f.check,
            f.place(),
            f.message
        );
        if f.status != Status::Ok && !f.fix.is_empty() {
            let _ = writeln!(out, "      fix: {}", f.fix);
        }
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    let _ = writeln!(
        out,
        "{} ok, {} warnings, {} failures",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}

pub fn json(findings: &[Finding]) -> String {
    let mut out = String::from("[");
    for (i, f) in findings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let file = f.file.as_deref().map_or("null".to_owned(), json_string);
        let line = f.line.map_or("null".to_owned(), |l| l.to_string());
        let _ = write!(
            out,
            "\n  {{\"check\": {}, \"status\": {}, \"file\": {file}, \"line\": {line}, \"message\": {}, \"fix\": {}}}",
            json_string(f.check),
            json_string(f.status.word()),
            json_string(&f.message),
            json_string(&f.fix),
        );
    }
    out.push_str("\n]\n");
    out
}

/// A JSON string literal (RFC 8259): quotes, backslashes and every control
/// character escaped; everything else, non-ASCII included, kept as UTF-8.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_rfc8259_requires() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}\t"), r#""x\ny\u0001\t""#);
        assert_eq!(json_string("é/ü"), "\"é/ü\"");
    }

    #[test]
    fn worst_status_sets_the_exit_code() {
        let f = |status| Finding {
            check: "c",
            status,
            file: None,
            line: None,
            message: String::new(),
            fix: String::new(),
        };
        assert_eq!(exit_code(&[f(Status::Ok)]), 0);
        assert_eq!(exit_code(&[f(Status::Ok), f(Status::Warn)]), 1);
        assert_eq!(exit_code(&[f(Status::Fail), f(Status::Warn)]), 2);
        assert!(json(&[f(Status::Warn)]).contains("\"file\": null"));
    }
}
