//! pam-probe: a minimal PAM application for tests and benchmarks.
//!
//! It runs the account (and optionally session) stack of a service for a
//! user and prints what happened in a form tests can match:
//!
//! ```text
//! rc=6
//! msg=error:Access denied by pam_adopt: you have no active jobs on this node
//! env=SLURM_JOB_ID=42
//! ```
//!
//! `account` and `session` also print `fds_before=N fds_after=N`: the
//! entries of /proc/self/fd just before pam_start and just after pam_end,
//! so a test can tell the module closed every descriptor it opened or
//! received; `fd_leaked=FD:TARGET` lines name any that are new.
//!
//! `bench N` runs N full transactions (pam_start, pam_acct_mgmt, pam_end)
//! and prints latency percentiles and the RSS before and after.
//!
//! `--tcp-to ADDR:PORT` connects a TCP socket to ADDR:PORT before
//! pam_start and keeps it open until the probe exits, so the module finds a
//! TCP connection among the process's fds as it would inside sshd: the
//! socket's local end plays sshd's end and ADDR:PORT the ssh client, whose
//! host gets the callerid RPC. It prints `tcp=LOCAL->REMOTE`.

// A test CLI that exits on bad usage or a failed pam_start; the workspace
// lint against exit() is for the PAM module, which must never do it.
#![allow(clippy::exit)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::{SocketAddr, TcpStream};
use std::ptr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

const PAM_RHOST: c_int = 4;
const PAM_ESTABLISH_CRED: c_int = 0x2;
const PAM_DELETE_CRED: c_int = 0x4;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_set_item(pamh: *mut PamHandle, item: c_int, value: *const c_void) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_getenvlist(pamh: *mut PamHandle) -> *mut *mut c_char;
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
}

/// Messages the stack sent through the conversation, as "style:text".
static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every message and answers prompts with an empty string.
unsafe extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    let Ok(n) = usize::try_from(num_msg) else {
        return 19; // PAM_CONV_ERR
    };
    if n == 0 || msg.is_null() || resp.is_null() {
        return 19;
    }
    // SAFETY: libpam frees the response array and each resp with free(),
    // so both must come from calloc/malloc.
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return 5; // PAM_BUF_ERR
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `n` message pointers.
        let m = unsafe { &**msg.add(i) };
        let text = if m.msg.is_null() {
            String::new()
        } else {
            // SAFETY: message texts are NUL-terminated strings.
            unsafe { CStr::from_ptr(m.msg) }
                .to_string_lossy()
                .into_owned()
        };
        let style = match m.msg_style {
            1 => "prompt-off",
            2 => "prompt-on",
            3 => "error",
            4 => "info",
            _ => "other",
        };
        if let Ok(mut all) = MESSAGES.lock() {
            all.push(format!("{style}:{text}"));
        }
        // SAFETY: `replies` holds `n` zeroed entries; strdup mallocs.
        unsafe { (*replies.add(i)).resp = libc::strdup(c"".as_ptr()) };
    }
    // SAFETY: resp is libpam's out-pointer.
    unsafe { *resp = replies };
    0
}

struct Args {
    confdir: Option<CString>,
    rhost: Option<CString>,
    tcp_to: Option<SocketAddr>,
    service: CString,
    user: CString,
    action: Action,
}

enum Action {
    Account,
    AccountAndSession,
    Bench(usize),
}

fn usage() -> ! {
    eprintln!(
        "usage: pam-probe [--confdir DIR] [--rhost HOST] [--tcp-to ADDR:PORT] SERVICE USER [account|session|bench N]\n\
         Runs a PAM stack as an application would and prints rc=, msg= and env= lines.\n\
         --tcp-to holds a TCP connection to ADDR:PORT open meanwhile and prints tcp=LOCAL->REMOTE."
    );
    std::process::exit(2)
}

fn cstring(s: String) -> CString {
    CString::new(s).unwrap_or_else(|_| usage())
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut confdir = None;
    let mut rhost = None;
    let mut tcp_to = None;
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--confdir" => confdir = Some(cstring(it.next().unwrap_or_else(|| usage()))),
            "--rhost" => rhost = Some(cstring(it.next().unwrap_or_else(|| usage()))),
            "--tcp-to" => {
                tcp_to = Some(
                    it.next()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .unwrap_or_else(|| usage()),
                );
            }
            "-h" | "--help" => usage(),
            _ => positional.push(a),
        }
    }
    let mut pos = positional.into_iter();
    let service = cstring(pos.next().unwrap_or_else(|| usage()));
    let user = cstring(pos.next().unwrap_or_else(|| usage()));
    let action = match pos.next().as_deref() {
        None | Some("account") => Action::Account,
        Some("session") => Action::AccountAndSession,
        Some("bench") => Action::Bench(
            pos.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| usage()),
        ),
        Some(_) => usage(),
    };
    Args {
        confdir,
        rhost,
        tcp_to,
        service,
        user,
        action,
    }
}

/// The process's open descriptors and what each points at.
fn open_fds() -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<(String, String)> = dir
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    // The directory's own descriptor is listed while it is read; it is
    // closed now and is the same number both times.
    fds.sort();
    fds
}

/// One PAM transaction; returns the account rc and the PAM environment.
fn transaction(args: &Args, session: bool) -> (c_int, Vec<String>) {
    let before = open_fds();
    let (rc, env) = transaction_inner(args, session);
    let after = open_fds();
    if !matches!(args.action, Action::Bench(_)) {
        println!("fds_before={} fds_after={}", before.len(), after.len());
        for (fd, target) in after.iter().filter(|f| !before.contains(f)) {
            println!("fd_leaked={fd}:{target}");
        }
    }
    (rc, env)
}

fn transaction_inner(args: &Args, session: bool) -> (c_int, Vec<String>) {
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: ptr::null_mut(),
    };
    let mut pamh: *mut PamHandle = ptr::null_mut();
    // SAFETY: all strings are valid C strings that outlive the transaction;
    // `conv` lives until pam_end below.
    let rc = unsafe {
        match &args.confdir {
            Some(dir) => pam_start_confdir(
                args.service.as_ptr(),
                args.user.as_ptr(),
                &conv,
                dir.as_ptr(),
                &mut pamh,
            ),
            None => pam_start(args.service.as_ptr(), args.user.as_ptr(), &conv, &mut pamh),
        }
    };
    if rc != 0 {
        eprintln!("pam_start failed: {rc}");
        std::process::exit(3);
    }
    if let Some(rhost) = &args.rhost {
        // SAFETY: live handle; libpam copies the item.
        unsafe { pam_set_item(pamh, PAM_RHOST, rhost.as_ptr().cast()) };
    }
    // SAFETY: live handle for every call until pam_end.
    let rc = unsafe { pam_acct_mgmt(pamh, 0) };
    let mut env = Vec::new();
    if rc == 0 {
        if session {
            // SAFETY: live handle.
            let s = unsafe {
                pam_setcred(pamh, PAM_ESTABLISH_CRED);
                let open = pam_open_session(pamh, 0);
                let close = pam_close_session(pamh, 0);
                pam_setcred(pamh, PAM_DELETE_CRED);
                (open, close)
            };
            println!("open_session={} close_session={}", s.0, s.1);
        }
        // Read after the session phase too: `adopt_in=session` sets
        // SLURM_JOB_ID there.
        // SAFETY: live handle; the list and its strings are malloc'd and ours to free.
        unsafe {
            let list = pam_getenvlist(pamh);
            if !list.is_null() {
                let mut i = 0;
                while !(*list.add(i)).is_null() {
                    let item = *list.add(i);
                    env.push(CStr::from_ptr(item).to_string_lossy().into_owned());
                    libc::free(item.cast());
                    i += 1;
                }
                libc::free(list.cast());
            }
        }
    }
    // SAFETY: ends the transaction started above.
    unsafe { pam_end(pamh, rc) };
    (rc, env)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The connection `--tcp-to` asks for, kept by the caller until exit.
fn connect_tcp(to: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap_or_else(|e| {
        eprintln!("pam-probe: cannot connect to {to}: {e}");
        std::process::exit(4)
    });
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(remote)) => println!("tcp={local}->{remote}"),
        _ => println!("tcp=?->{to}"),
    }
    stream
}

fn main() {
    let args = parse_args();
    // Opened before pam_start and dropped only at exit, so the module sees
    // it during the whole transaction.
    let _tcp = args.tcp_to.map(connect_tcp);
    match args.action {
        Action::Account | Action::AccountAndSession => {
            let (rc, env) = transaction(&args, matches!(args.action, Action::AccountAndSession));
            println!("rc={rc}");
            if let Ok(all) = MESSAGES.lock() {
                for m in all.iter() {
                    println!("msg={m}");
                }
            }
            for e in env {
                println!("env={e}");
            }
        }
        Action::Bench(n) => {
            // Warm up the loader and NSS caches so the first sample is not an outlier.
            let (rc, _) = transaction(&args, false);
            let rss_start = rss_kib();
            let mut times = Vec::with_capacity(n);
            let mut failures = 0;
            for _ in 0..n {
                let t = Instant::now();
                let (r, _) = transaction(&args, false);
                times.push(t.elapsed());
                if r != rc {
                    failures += 1;
                }
                if let Ok(mut m) = MESSAGES.lock() {
                    m.clear();
                }
            }
            let rss_end = rss_kib();
            times.sort_unstable();
            println!(
                "transactions={n} rc={rc} rc_changes={failures} p50_us={} p99_us={} max_us={} rss_start_kib={rss_start} rss_end_kib={rss_end}",
                percentile(&times, 0.50).as_micros(),
                percentile(&times, 0.99).as_micros(),
                times.last().copied().unwrap_or_default().as_micros(),
            );
        }
    }
}
