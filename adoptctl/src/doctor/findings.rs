//! The findings one doctor run collects, each pointing at the node file
//! (and line) to edit as the node names it, not as it was read here.

use std::path::Path;

use crate::report::{Finding, Status};
use crate::root::Root;

/// Where a finding points: a file as read here and, when known, a line.
pub type Place<'a> = Option<(&'a Path, Option<usize>)>;

/// Findings in the order the checks made them, for one `Root`.
#[derive(Debug)]
pub struct Findings<'r> {
    root: &'r Root,
    list: Vec<Finding>,
}

impl<'r> Findings<'r> {
    pub fn new(root: &'r Root) -> Self {
        Findings {
            root,
            list: Vec::new(),
        }
    }

    pub fn root(&self) -> &'r Root {
        self.root
    }

    pub fn push(
        &mut self,
        check: &'static str,
        status: Status,
        place: Place<'_>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let (file, line) = match place {
            Some((f, l)) => (Some(self.root.shown(f)), l),
            None => (None, None),
        };
        self.list.push(Finding {
            check,
            status,
            file,
            line,
            message: message.into(),
            fix: fix.into(),
        });
    }

    pub fn ok(&mut self, check: &'static str, place: Place<'_>, msg: String) {
        self.push(check, Status::Ok, place, msg, "");
    }

    pub fn into_vec(self) -> Vec<Finding> {
        self.list
    }
}
