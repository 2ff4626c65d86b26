//! The session phase: give an adopted login the job's session environment
//! (XDG_RUNTIME_DIR and the XDG_SESSION_* values the TaskProlog gives the
//! job's tasks, and the job's GPU visibility variables), and with
//! `adopt_in=session` adopt the process again, after pam_systemd has moved
//! it.
//!
//! When an adopted session closes, one line says so, with the job and how
//! long the login lasted.
//!
//! Where the module does not apply it returns PAM_IGNORE, so it never
//! decides a session stack on its own.

use std::fs;
use std::path::Path;

use slurm_node::cgroup::CgroupFs;
use slurm_node::confsource::{self, ConfigSources};
use slurm_node::prolog_records;
use slurm_node::session::device_env;
use slurm_node::session::logins;
use slurm_node::session::proc_table;
use slurm_node::session::runtime_dir::RuntimeDirs;
use slurm_node::session::session_env::{self, SessionEnv};

use crate::account;
use crate::pam::{PAM_IGNORE, PAM_SUCCESS, Pam, Priority};
use adopt_login::options::{AdoptIn, LogLevel, Options};
use adopt_login::outcome::field;
use adopt_login::user_lookup;

pub fn open_session(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    let (opts, _) = Options::parse(args);
    let Some(uid) = applies(pam, &opts) else {
        return PAM_IGNORE;
    };
    if opts.adopt_in == AdoptIn::Session {
        let rc = account::adopt_in_session(pam, args);
        if rc != PAM_SUCCESS {
            return rc;
        }
    }
    export_session_env(pam, &opts, uid)
}

pub fn close_session(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    let (opts, _) = Options::parse(args);
    match applies(pam, &opts) {
        Some(uid) => {
            log_session_closed(pam, &opts, uid);
            PAM_SUCCESS
        }
        None => PAM_IGNORE,
    }
}

/// The one line for an adopted session's end:
/// `user=U uid=N service=S rhost=H pid=P event=session_closed job=J in_job=yes|no duration_ms=D`.
/// The process that closes the session is the one the account phase
/// adopted (sshd's per-connection process), so its age is the login's
/// duration, from the accepted connection. The job is the one the account
/// phase recorded on this PAM handle, else the one the process's cgroup
/// names; `in_job=no` says the process is no longer in that job's extern
/// step (pam_systemd moved it, and `adopt_in=session` did not bring it
/// back). A login adopted by neither: no line.
fn log_session_closed(pam: &Pam<'_>, opts: &Options, uid: u32) {
    if opts.log_level < LogLevel::INFO {
        return;
    }
    let proc_root = Path::new("/proc");
    let recorded = pam.adopted_job();
    let in_cgroup = adopted_job(
        &fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        recorded,
    );
    let Some(job) = recorded.or(in_cgroup) else {
        return;
    };
    let in_job = if in_cgroup == Some(job) { "yes" } else { "no" };
    let duration = proc_table::age_ms(proc_root, "self").map_or_else(
        |e| format!("- duration_error={}", field(&e.to_string())),
        |ms| ms.to_string(),
    );
    let line = format!(
        "user={} uid={uid} service={} rhost={} pid={} event=session_closed job={job} in_job={in_job} duration_ms={duration}",
        field(&pam.user().ok().flatten().unwrap_or_default()),
        field(&pam.service().ok().flatten().unwrap_or_default()),
        field(&pam.rhost().unwrap_or_default()),
        std::process::id(),
    );
    pam.syslog(Priority::Info, &line);
}

/// The job whose extern step this process is in, from the text of
/// `/proc/self/cgroup`: the job it was adopted into. Only Slurm's own
/// cgroup roots count (see [`CgroupFs::in_slurm_job`]), not a look-alike
/// in a user's delegated subtree. A job directory without the id in its
/// name (26.05 names it by SLUID) is the job `recorded` by this PAM
/// handle's account phase, which put the process there.
fn adopted_job(cgroup_text: &str, recorded: Option<u32>) -> Option<u32> {
    if !CgroupFs::in_slurm_job(cgroup_text) {
        return None;
    }
    let found = CgroupFs::job_cgroup_of_pid(cgroup_text)?;
    if found.step_dir != logins::EXTERN_STEP_DIR {
        return None;
    }
    found.job_id.or(recorded)
}

/// The user's uid when the module applies to this login: an allowed
/// service and a user other than root.
fn applies(pam: &Pam<'_>, opts: &Options) -> Option<u32> {
    match pam.service() {
        Ok(Some(service)) if opts.service_allowed(&service) => {}
        _ => return None,
    }
    let user = pam.user().ok().flatten()?;
    // The session phase has a budget of its own, as a login does.
    let deadline = std::time::Instant::now() + opts.timeout;
    let uid = user_lookup::uid_within(&user, deadline).ok().flatten()?;
    (uid != 0).then_some(uid)
}

/// Export the XDG values when this process is in a job's cgroup (it was
/// adopted) and the user's runtime dir exists; otherwise nothing. Either
/// way the module applies to this login, so it answers SUCCESS: a session
/// stack that holds only this module must not fail for want of a runtime
/// dir.
fn export_session_env(pam: &mut Pam<'_>, opts: &Options, uid: u32) -> i32 {
    let cgroup_text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let in_job = CgroupFs::in_slurm_job(&cgroup_text);
    if let Some(job) = adopted_job(&cgroup_text, pam.adopted_job()) {
        export_devices(pam, opts, uid, job);
    }
    let runtime_dir = RuntimeDirs::new(&opts.runtime_dir, None).usable(uid);
    if !in_job || runtime_dir.is_none() {
        return PAM_SUCCESS;
    }
    let env = SessionEnv {
        runtime_dir,
        session_id: session_env::session_id(Path::new("/proc")),
    };
    let vars = match env.variables() {
        Ok(vars) => vars,
        Err(e) => {
            pam.syslog(
                Priority::Err,
                &format!("session environment not exported: {e}"),
            );
            return PAM_SUCCESS;
        }
    };
    for (name, value) in vars {
        if let Err(rc) = pam.putenv(name, &value) {
            pam.syslog(
                Priority::Err,
                &format!("pam_putenv({name}) failed: rc {rc}"),
            );
        }
    }
    PAM_SUCCESS
}

/// Export the GPU visibility values of `job`, the job this login was
/// adopted into, as its tasks on this node see them (see
/// slurm_node::session::device_env): from the hooks' Prolog record,
/// renumbered from 0 when cgroup.conf has ConstrainDevices=yes. No record
/// (no GPU here, or no hooks) exports nothing; a record line that is not
/// an allowed name with an index list is logged and left out; without a
/// readable cgroup.conf nothing is exported, since a wrong numbering
/// would point the login at another job's GPU.
fn export_devices(pam: &mut Pam<'_>, opts: &Options, uid: u32, job: u32) {
    let text = match prolog_records::job_devices(&opts.state_dir, uid, job) {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(e) => {
            pam.syslog(
                Priority::Err,
                &format!("job {job}: GPU variables not exported: {e}"),
            );
            return;
        }
    };
    let record = device_env::parse_record(&text);
    for why in &record.rejected {
        pam.syslog(
            Priority::Warning,
            &format!("job {job}: device record {why}: left out"),
        );
    }
    if record.vars.is_empty() {
        return;
    }
    let constrain = match confsource::load(opts.conf.as_deref(), &ConfigSources::system()) {
        Ok((conf, _)) => conf.cgroup.constrain_devices,
        Err(e) => {
            pam.syslog(
                Priority::Err,
                &format!("job {job}: GPU variables not exported: {e}"),
            );
            return;
        }
    };
    let values = device_env::session_values(&record, constrain);
    let mut exported = Vec::with_capacity(values.len());
    for (name, value) in &values {
        match pam.putenv(name, value) {
            Ok(()) => exported.push(format!("{name}={value}")),
            Err(rc) => pam.syslog(
                Priority::Err,
                &format!("pam_putenv({name}) failed: rc {rc}"),
            ),
        }
    }
    if opts.log_level >= LogLevel::INFO {
        pam.syslog(
            Priority::Info,
            &format!(
                "job {job}: exported {} (ConstrainDevices={})",
                exported.join(" "),
                if constrain { "yes" } else { "no" }
            ),
        );
    }
}
