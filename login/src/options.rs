//! Module arguments: every pam_slurm_adopt option with the same meaning,
//! plus ours (`conf=`, `adopt_via=`, `timeout_ms=`).
//!
//! Parsing never fails: a bad or unknown argument becomes a warning the
//! caller logs, and the setting falls back to its safe value, so a typo in a
//! PAM file cannot lock every user out or open the node.

use std::path::PathBuf;
use std::time::Duration;

use slurm_node::select::{NoJobsAction, Policy, UnknownAction};

/// Where slurm.conf is looked for first when `conf=` is not given; then
/// slurmd's configless cache (see `slurm_node::confsource`).
pub const DEFAULT_CONF: &str = slurm_node::confsource::DEFAULT_CONF;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Large enough for a slow stepd, small enough that sshd's LoginGraceTime
/// (120 s by default) is never the one to give up.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptFailureAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenericFailureAction {
    Allow,
    Ignore,
    Deny,
}

/// How a chosen job is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptVia {
    /// Ask the extern stepd (ADD_EXTERN_PID): accounted, watched, limited.
    Stepd,
    /// Write cgroup.procs of the extern step directly (no accounting).
    Cgroup,
    /// The stepd, and the cgroup files if the stepd refuses or is gone.
    Auto,
}

/// Which PAM phase puts the process into the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptIn {
    /// pam_sm_acct_mgmt, as pam_slurm_adopt does.
    Account,
    /// pam_sm_acct_mgmt and again pam_sm_open_session: the module, placed
    /// after pam_systemd in the session stack, moves the process back into
    /// the job after logind has moved it out.
    Session,
}

/// Slurm's log levels, as pam_slurm_adopt's `log_level=` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogLevel(pub u8);

impl LogLevel {
    pub const QUIET: LogLevel = LogLevel(0);
    pub const ERROR: LogLevel = LogLevel(2);
    pub const INFO: LogLevel = LogLevel(3);
    pub const DEBUG: LogLevel = LogLevel(5);
    pub const MAX: LogLevel = LogLevel(9);

    fn parse(value: &str) -> Option<LogLevel> {
        if let Ok(n) = value.parse::<u32>() {
            return u8::try_from(n.min(9)).ok().map(LogLevel);
        }
        let names = [
            "quiet", "fatal", "error", "info", "verbose", "debug", "debug2", "debug3", "debug4",
            "debug5",
        ];
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(value))
            .and_then(|i| u8::try_from(i).ok())
            .map(LogLevel)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub action_no_jobs: NoJobsAction,
    pub action_unknown: UnknownAction,
    pub action_adopt_failure: AdoptFailureAction,
    pub action_generic_failure: GenericFailureAction,
    pub disable_x11: bool,
    pub join_container: bool,
    pub log_level: LogLevel,
    pub nodename: Option<String>,
    /// Allowed PAM services; `*` allows all.
    pub services: Vec<String>,
    pub single_job_skip_rpc: bool,
    /// `conf=`; `None` finds slurm.conf as libslurm does, minus SLURM_CONF.
    pub conf: Option<PathBuf>,
    pub adopt_via: AdoptVia,
    pub adopt_in: AdoptIn,
    /// Where the session phase looks for the user's runtime dir; the
    /// hooks' `runtime_dir.root` (the module never reads their TOML).
    pub runtime_dir: PathBuf,
    /// Where the hooks keep their per-user records (their `state_dir`):
    /// a job the Prolog recorded whose extern step is not up yet is waited
    /// for.
    pub state_dir: PathBuf,
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            action_no_jobs: NoJobsAction::Deny,
            action_unknown: UnknownAction::Newest,
            // Fail closed: pam_slurm_adopt's allow/ignore defaults let
            // unconfined logins through whenever anything goes wrong.
            action_adopt_failure: AdoptFailureAction::Deny,
            action_generic_failure: GenericFailureAction::Deny,
            disable_x11: false,
            join_container: true,
            log_level: LogLevel::INFO,
            nodename: None,
            services: vec!["sshd".to_owned()],
            single_job_skip_rpc: true,
            conf: None,
            adopt_via: AdoptVia::Stepd,
            adopt_in: AdoptIn::Account,
            runtime_dir: PathBuf::from(slurm_node::session::runtime_dir::DEFAULT_ROOT),
            state_dir: PathBuf::from(slurm_node::prolog_records::DEFAULT_STATE_DIR),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Options {
    pub fn policy(&self) -> Policy {
        Policy {
            action_no_jobs: self.action_no_jobs,
            action_unknown: self.action_unknown,
            single_job_skip_rpc: self.single_job_skip_rpc,
        }
    }

    pub fn service_allowed(&self, service: &str) -> bool {
        self.services.iter().any(|s| s == "*" || s == service)
    }

    /// Parse module arguments; returns the options and one warning per
    /// argument that was not taken as written.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> (Options, Vec<String>) {
        let mut o = Options::default();
        let mut warnings = Vec::new();
        for raw in args {
            let raw = raw.as_ref();
            let Some((key, value)) = raw.split_once('=') else {
                warnings.push(format!("ignoring unrecognized option '{raw}'"));
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            let mut bad = |what: &str| {
                warnings.push(format!("unrecognized {key}={value}, setting to '{what}'"));
            };
            match key.as_str() {
                "action_no_jobs" => {
                    o.action_no_jobs = match lower(value).as_str() {
                        "deny" => NoJobsAction::Deny,
                        "ignore" => NoJobsAction::Ignore,
                        _ => {
                            bad("deny");
                            NoJobsAction::Deny
                        }
                    }
                }
                "action_unknown" => {
                    o.action_unknown = match lower(value).as_str() {
                        "newest" => UnknownAction::Newest,
                        "allow" => UnknownAction::Allow,
                        "deny" => UnknownAction::Deny,
                        _ => {
                            bad("deny");
                            UnknownAction::Deny
                        }
                    }
                }
                "action_adopt_failure" => {
                    o.action_adopt_failure = match lower(value).as_str() {
                        "allow" => AdoptFailureAction::Allow,
                        "deny" => AdoptFailureAction::Deny,
                        _ => {
                            bad("deny");
                            AdoptFailureAction::Deny
                        }
                    }
                }
                "action_generic_failure" => {
                    o.action_generic_failure = match lower(value).as_str() {
                        "allow" => GenericFailureAction::Allow,
                        "ignore" => GenericFailureAction::Ignore,
                        "deny" => GenericFailureAction::Deny,
                        _ => {
                            bad("deny");
                            GenericFailureAction::Deny
                        }
                    }
                }
                "disable_x11" => match parse_bool(value) {
                    Some(b) => o.disable_x11 = b,
                    None => bad("0"),
                },
                "join_container" => match parse_bool(value) {
                    Some(b) => o.join_container = b,
                    None => bad("true"),
                },
                "single_job_skip_rpc" => match parse_bool(value) {
                    Some(b) => o.single_job_skip_rpc = b,
                    None => bad("1"),
                },
                // Accepted for compatibility; root is always ignored, as in
                // pam_slurm_adopt, where ignore_root=0 never takes effect.
                "ignore_root" => match parse_bool(value) {
                    Some(true) => {}
                    Some(false) => warnings
                        .push("ignore_root=0 is not supported: root is always ignored".to_owned()),
                    None => bad("1"),
                },
                "log_level" => match LogLevel::parse(value) {
                    Some(l) => o.log_level = l,
                    None => {
                        bad("debug5");
                        o.log_level = LogLevel::MAX;
                    }
                },
                "nodename" => {
                    if valid_name(value) {
                        o.nodename = Some(value.to_owned());
                    } else {
                        bad("(guessed)");
                    }
                }
                "service" => {
                    let list: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if list.is_empty() {
                        bad("sshd");
                    } else {
                        o.services = list;
                    }
                }
                "conf" => {
                    if value.starts_with('/') {
                        o.conf = Some(PathBuf::from(value));
                    } else {
                        bad("(found as Slurm finds it)");
                    }
                }
                "adopt_via" => {
                    o.adopt_via = match lower(value).as_str() {
                        "stepd" => AdoptVia::Stepd,
                        "cgroup" => AdoptVia::Cgroup,
                        "auto" => AdoptVia::Auto,
                        _ => {
                            bad("stepd");
                            AdoptVia::Stepd
                        }
                    }
                }
                "adopt_in" => {
                    o.adopt_in = match lower(value).as_str() {
                        "account" => AdoptIn::Account,
                        "session" => AdoptIn::Session,
                        _ => {
                            bad("account");
                            AdoptIn::Account
                        }
                    }
                }
                "runtime_dir" => {
                    if absolute_without_dotdot(value) {
                        o.runtime_dir = PathBuf::from(value);
                    } else {
                        bad(slurm_node::session::runtime_dir::DEFAULT_ROOT);
                    }
                }
                "state_dir" => {
                    if absolute_without_dotdot(value) {
                        o.state_dir = PathBuf::from(value);
                    } else {
                        bad(slurm_node::prolog_records::DEFAULT_STATE_DIR);
                    }
                }
                "timeout_ms" => match value.parse::<u64>() {
                    Ok(ms) if ms > 0 => {
                        o.timeout = Duration::from_millis(ms).min(MAX_TIMEOUT);
                    }
                    _ => bad("2000"),
                },
                _ => warnings.push(format!("ignoring unrecognized option '{raw}'")),
            }
        }
        (o, warnings)
    }
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn parse_bool(value: &str) -> Option<bool> {
    match lower(value).as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// A node name that can only name a spool socket, never a path.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

/// An absolute path with no `..` component (a directory the module looks
/// in as root must not climb out of where the site put it).
fn absolute_without_dotdot(value: &str) -> bool {
    value.starts_with('/') && !value.split('/').any(|c| c == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fail_closed() {
        let (o, w) = Options::parse::<&str>(&[]);
        assert!(w.is_empty());
        assert_eq!(o.action_adopt_failure, AdoptFailureAction::Deny);
        assert_eq!(o.action_generic_failure, GenericFailureAction::Deny);
        assert_eq!(o.action_no_jobs, NoJobsAction::Deny);
        assert_eq!(o.action_unknown, UnknownAction::Newest);
        assert!(o.service_allowed("sshd"));
        assert!(!o.service_allowed("sudo"));
        assert_eq!(o.conf, None);
    }

    #[test]
    fn every_pam_slurm_adopt_option() {
        let (o, w) = Options::parse(&[
            "action_no_jobs=ignore",
            "action_unknown=allow",
            "action_adopt_failure=allow",
            "action_generic_failure=ignore",
            "disable_x11=1",
            "join_container=false",
            "log_level=debug2",
            "nodename=c1",
            "service=sshd, teleport,rstudio",
            "single_job_skip_rpc=0",
            "ignore_root=1",
            "conf=/opt/slurm/etc/slurm.conf",
            "adopt_via=auto",
            "timeout_ms=500",
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.action_no_jobs, NoJobsAction::Ignore);
        assert_eq!(o.action_unknown, UnknownAction::Allow);
        assert_eq!(o.action_adopt_failure, AdoptFailureAction::Allow);
        assert_eq!(o.action_generic_failure, GenericFailureAction::Ignore);
        assert!(o.disable_x11);
        assert!(!o.join_container);
        assert_eq!(o.log_level, LogLevel(6));
        assert_eq!(o.nodename.as_deref(), Some("c1"));
        assert_eq!(o.services, ["sshd", "teleport", "rstudio"]);
        assert!(!o.single_job_skip_rpc);
        assert_eq!(o.conf, Some(PathBuf::from("/opt/slurm/etc/slurm.conf")));
        assert_eq!(o.adopt_via, AdoptVia::Auto);
        assert_eq!(o.timeout, Duration::from_millis(500));
    }

    #[test]
    fn keys_and_values_are_case_insensitive() {
        let (o, w) = Options::parse(&["Action_Unknown=DENY", "JOIN_CONTAINER=True"]);
        assert!(w.is_empty());
        assert_eq!(o.action_unknown, UnknownAction::Deny);
        assert!(o.join_container);
    }

    #[test]
    fn bad_values_fall_back_to_safe_settings_with_a_warning() {
        let (o, w) = Options::parse(&[
            "action_unknown=maybe",
            "action_adopt_failure=sure",
            "action_generic_failure=",
            "conf=relative/slurm.conf",
            "nodename=../etc",
            "timeout_ms=0",
            "bogus",
            "frobnicate=1",
            "ignore_root=0",
            "log_level=loud",
        ]);
        assert_eq!(w.len(), 10, "{w:#?}");
        assert_eq!(o.action_unknown, UnknownAction::Deny);
        assert_eq!(o.action_adopt_failure, AdoptFailureAction::Deny);
        assert_eq!(o.action_generic_failure, GenericFailureAction::Deny);
        assert_eq!(o.conf, None);
        assert_eq!(o.nodename, None);
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
        assert_eq!(o.log_level, LogLevel::MAX);
        assert!(
            w.iter()
                .any(|m| m == "ignoring unrecognized option 'frobnicate=1'")
        );
    }

    #[test]
    fn star_allows_every_service_and_timeout_is_capped() {
        let (o, _) = Options::parse(&["service=*", "timeout_ms=99999999", "log_level=42"]);
        assert!(o.service_allowed("anything"));
        assert_eq!(o.timeout, MAX_TIMEOUT);
        assert_eq!(o.log_level, LogLevel::MAX);
    }

    #[test]
    fn adopt_in_takes_account_or_session() {
        assert_eq!(Options::default().adopt_in, AdoptIn::Account);
        let (o, w) = Options::parse(&["adopt_in=Session"]);
        assert_eq!((o.adopt_in, w.len()), (AdoptIn::Session, 0));
        let (o, w) = Options::parse(&["adopt_in=later"]);
        assert_eq!(o.adopt_in, AdoptIn::Account);
        assert_eq!(w, ["unrecognized adopt_in=later, setting to 'account'"]);
    }

    #[test]
    fn runtime_dir_must_be_absolute() {
        assert_eq!(Options::default().runtime_dir, PathBuf::from("/run/user"));
        let (o, w) = Options::parse(&["runtime_dir=/dev/shm/users"]);
        assert_eq!(
            (o.runtime_dir, w.len()),
            (PathBuf::from("/dev/shm/users"), 0)
        );
        for bad in [
            "runtime_dir=run/user",
            "runtime_dir=/run/../etc",
            "runtime_dir=/run/..",
        ] {
            let (o, w) = Options::parse(&[bad]);
            assert_eq!(
                (o.runtime_dir, w.len()),
                (PathBuf::from("/run/user"), 1),
                "{bad}"
            );
        }
    }

    /// The option names `parse` matches on, read from this file's source,
    /// so a new option cannot ship without its man page and README rows.
    fn parsed_keys() -> Vec<&'static str> {
        include_str!("options.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("                \""))
            .filter_map(|l| l.split_once("\" =>"))
            .map(|(key, _)| key)
            .collect()
    }

    #[test]
    fn every_option_is_in_the_man_page_and_the_readme() {
        let man = include_str!("../../packaging/man/pam_adopt.8");
        let readme = include_str!("../../README.md");
        let keys = parsed_keys();
        assert!(keys.len() >= 16, "the key list came out short: {keys:?}");
        for key in keys {
            let in_man = man.lines().any(|l| {
                l.starts_with(&format!(".BR {key} =")) || l.starts_with(&format!(".BI {key}="))
            });
            assert!(in_man, "{key} has no entry in packaging/man/pam_adopt.8");
            assert!(
                readme.contains(&format!("| `{key}` |")),
                "{key} has no row in README.md's option table"
            );
        }
    }
}
