//! Slurm hostlist expressions: `a,b`, `c[1-4]`, `n[01-10,15]`, `r[1-2]n[1-3]`.
//!
//! slurm.conf names nodes, host names, addresses and ports this way, so the
//! node table cannot be built without expanding them.

/// The most names one expression may expand to. A typo such as
/// `n[1-100000000]` must fail with a message rather than exhaust the memory
/// of the sshd process the module runs in.
pub const MAX_HOSTS: usize = 65536;

/// Longest number accepted inside brackets; anything longer is certainly a
/// typo and would risk overflowing the arithmetic.
const MAX_DIGITS: usize = 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("hostlist \"{expr}\": {reason}")]
    Invalid { expr: String, reason: String },
    #[error("hostlist \"{expr}\" expands to more than {limit} names")]
    TooLarge { expr: String, limit: usize },
}

/// Expand a hostlist expression into its names, in order.
///
/// Items are separated by commas or whitespace outside brackets; empty items
/// are skipped, as Slurm does. Inside brackets, comma-separated numbers or
/// `lo-hi` ranges; every number is printed at least as wide as the range's
/// lower bound, so `[08-10]` gives `08 09 10`. Several bracket groups in one
/// item expand to their cartesian product, leftmost group varying slowest.
pub fn expand(expr: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for item in split_items(expr)? {
        expand_item(expr, item, &mut out)?;
    }
    Ok(out)
}

fn invalid(expr: &str, reason: impl Into<String>) -> HostlistError {
    HostlistError::Invalid {
        expr: expr.to_owned(),
        reason: reason.into(),
    }
}

/// Split at top-level separators, checking bracket balance on the way so
/// that later stages may assume every `[` has its `]`.
fn split_items(expr: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let mut in_bracket = false;
    let mut start = 0;
    for (i, c) in expr.char_indices() {
        match c {
            '[' if in_bracket => return Err(invalid(expr, "nested '['")),
            '[' => in_bracket = true,
            ']' if !in_bracket => return Err(invalid(expr, "']' without '['")),
            ']' => in_bracket = false,
            c if !in_bracket && (c == ',' || c.is_whitespace()) => {
                if start < i {
                    items.push(&expr[start..i]);
                }
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_bracket {
        return Err(invalid(expr, "'[' without ']'"));
    }
    if start < expr.len() {
        items.push(&expr[start..]);
    }
    Ok(items)
}

#[derive(Debug)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

enum Segment<'a> {
    Literal(&'a str),
    Ranges(Vec<Range>),
}

fn expand_item(expr: &str, item: &str, out: &mut Vec<String>) -> Result<(), HostlistError> {
    let too_large = || HostlistError::TooLarge {
        expr: expr.to_owned(),
        limit: MAX_HOSTS,
    };
    let segments = segments(expr, item)?;

    // Count first, so nothing is allocated for an expression that is going
    // to be refused anyway.
    let mut count: usize = 1;
    for seg in &segments {
        if let Segment::Ranges(ranges) = seg {
            let mut n: usize = 0;
            for r in ranges {
                let len = usize::try_from(r.hi - r.lo)
                    .ok()
                    .and_then(|d| d.checked_add(1))
                    .ok_or_else(too_large)?;
                n = n.checked_add(len).ok_or_else(too_large)?;
            }
            count = count.checked_mul(n).ok_or_else(too_large)?;
            if count > MAX_HOSTS {
                return Err(too_large());
            }
        }
    }
    if out.len().saturating_add(count) > MAX_HOSTS {
        return Err(too_large());
    }

    let mut names = vec![String::new()];
    for seg in &segments {
        match seg {
            Segment::Literal(text) => names.iter_mut().for_each(|n| n.push_str(text)),
            Segment::Ranges(ranges) => {
                let mut next = Vec::with_capacity(names.len());
                for prefix in &names {
                    for r in ranges {
                        for v in r.lo..=r.hi {
                            next.push(format!("{prefix}{v:0width$}", width = r.width));
                        }
                    }
                }
                names = next;
            }
        }
    }
    out.extend(names);
    Ok(())
}

fn segments<'a>(expr: &str, item: &'a str) -> Result<Vec<Segment<'a>>, HostlistError> {
    let mut segs = Vec::new();
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            segs.push(Segment::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        // split_items guaranteed the bracket is closed.
        let close = after
            .find(']')
            .ok_or_else(|| invalid(expr, "'[' without ']'"))?;
        segs.push(Segment::Ranges(ranges(expr, &after[..close])?));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        segs.push(Segment::Literal(rest));
    }
    Ok(segs)
}

fn ranges(expr: &str, inside: &str) -> Result<Vec<Range>, HostlistError> {
    if inside.is_empty() {
        return Err(invalid(expr, "empty brackets"));
    }
    inside
        .split(',')
        .map(|part| {
            let (lo_s, hi_s) = part.split_once('-').unwrap_or((part, part));
            let lo = number(expr, part, lo_s)?;
            let hi = number(expr, part, hi_s)?;
            if lo > hi {
                return Err(invalid(expr, format!("range \"{part}\" runs backwards")));
            }
            Ok(Range {
                lo,
                hi,
                width: lo_s.len(),
            })
        })
        .collect()
}

fn number(expr: &str, part: &str, digits: &str) -> Result<u64, HostlistError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            expr,
            format!("\"{part}\" is not a number or a range of numbers"),
        ));
    }
    if digits.len() > MAX_DIGITS {
        return Err(invalid(expr, format!("number \"{digits}\" is too long")));
    }
    digits
        .parse()
        .map_err(|_| invalid(expr, format!("number \"{digits}\" is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Vec<String> {
        expand(s).unwrap()
    }

    #[test]
    fn plain_names_and_commas() {
        assert_eq!(ex("a,b"), ["a", "b"]);
        assert_eq!(ex("node1"), ["node1"]);
        assert_eq!(ex("  a , b  "), ["a", "b"]);
        assert_eq!(ex("a b\tc"), ["a", "b", "c"]);
        assert_eq!(ex("a,,b,"), ["a", "b"]);
        assert!(ex("").is_empty());
        assert!(ex(" , ").is_empty());
    }

    #[test]
    fn simple_range() {
        assert_eq!(ex("c[1-4]"), ["c1", "c2", "c3", "c4"]);
        assert_eq!(ex("c[3]"), ["c3"]);
    }

    #[test]
    fn zero_padding_follows_lower_bound() {
        assert_eq!(
            ex("n[01-10,15]"),
            [
                "n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09", "n10", "n15"
            ]
        );
        assert_eq!(ex("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(ex("n[001-002]"), ["n001", "n002"]);
        assert_eq!(ex("n[099-101]"), ["n099", "n100", "n101"]);
    }

    #[test]
    fn suffix_and_mixed_items() {
        assert_eq!(ex("n[1-2]-ib,login"), ["n1-ib", "n2-ib", "login"]);
        assert_eq!(ex("10.0.0.[1-3]"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(ex("[1-2]"), ["1", "2"]);
    }

    #[test]
    fn cartesian_product_in_order() {
        assert_eq!(
            ex("r[1-2]n[1-3]"),
            ["r1n1", "r1n2", "r1n3", "r2n1", "r2n2", "r2n3"]
        );
        assert_eq!(ex("a[1,3]b[0-1]c"), ["a1b0c", "a1b1c", "a3b0c", "a3b1c"]);
    }

    #[test]
    fn malformed_expressions() {
        for bad in [
            "n[1-2", "n1-2]", "n[[1]]", "n[]", "n[a-b]", "n[2-1]", "n[1-]", "n[-2]", "n[1 -2]",
            "n[1-2-3]", "n[,1]",
        ] {
            let err = expand(bad).unwrap_err();
            assert!(
                matches!(err, HostlistError::Invalid { ref expr, .. } if expr == bad),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            expand("n[5-1]").unwrap_err().to_string(),
            "hostlist \"n[5-1]\": range \"5-1\" runs backwards"
        );
    }

    #[test]
    fn huge_numbers_are_refused() {
        assert!(matches!(
            expand("n[1-9999999999999999999999]"),
            Err(HostlistError::Invalid { .. })
        ));
        assert!(matches!(
            expand("n[0-999999999999999999]"),
            Err(HostlistError::TooLarge { .. })
        ));
    }

    #[test]
    fn output_is_bounded() {
        assert_eq!(expand("n[1-65536]").unwrap().len(), MAX_HOSTS);
        assert_eq!(
            expand("n[1-65537]").unwrap_err(),
            HostlistError::TooLarge {
                expr: "n[1-65537]".into(),
                limit: MAX_HOSTS
            }
        );
        // Products and sums over items count too.
        assert!(matches!(
            expand("a[1-1000]b[1-1000]"),
            Err(HostlistError::TooLarge { .. })
        ));
        assert!(matches!(
            expand("a[1-40000],b[1-40000]"),
            Err(HostlistError::TooLarge { .. })
        ));
    }
}
