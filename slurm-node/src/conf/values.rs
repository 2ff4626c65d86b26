//! Setting values the way Slurm reads them: strtoul numbers, ports,
//! booleans, comma lists, and the check that nothing follows a value.

use super::error::ConfError;
use super::lexer::{At, is_blank, is_space};

pub(super) fn none_if_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

pub(super) fn comma_list(value: &str) -> Vec<String> {
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
pub(super) fn c_unsigned(s: &str) -> Option<u64> {
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
pub(super) fn parse_u16_setting(at: At<'_>, key: &str, value: &str) -> Result<u32, ConfError> {
    if value.eq_ignore_ascii_case("infinite") || value.eq_ignore_ascii_case("unlimited") {
        return Ok(u32::from(u16::MAX));
    }
    match c_unsigned(value) {
        Some(n) => u16::try_from(n)
            .map(u32::from)
            .map_err(|_| at.err(format!("{key}: \"{value}\" is more than 65535"))),
        None => Err(at.err(format!("{key}: \"{value}\" is not a number"))),
    }
}

pub(super) fn parse_port(
    at: At<'_>,
    key: &str,
    value: &str,
    number: Option<u64>,
) -> Result<u16, ConfError> {
    match number {
        Some(n) if n > 0 => {
            u16::try_from(n).map_err(|_| at.err(format!("{key}: \"{value}\" is not a port number")))
        }
        _ => Err(at.err(format!("{key}: \"{value}\" is not a port number"))),
    }
}

/// Slurm's boolean spellings, case-insensitive.
pub(super) fn parse_bool(at: At<'_>, key: &str, value: &str) -> Result<bool, ConfError> {
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

pub(super) fn trailing_text(
    at: At<'_>,
    key: &str,
    value: &str,
    rest: &str,
) -> Result<(), ConfError> {
    if is_blank(rest) {
        Ok(())
    } else {
        Err(at.err(format!(
            "{key}={value}: unexpected text after the value: \"{}\"",
            rest.trim_matches(is_space)
        )))
    }
}
