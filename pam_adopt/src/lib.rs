//! pam_adopt.so: a drop-in successor to Slurm's pam_slurm_adopt.
//!
//! The exported `pam_sm_*` functions are the only entry points. Each runs
//! its body under a panic guard, because a panic unwinding into libpam
//! would abort sshd's per-connection process.

pub mod account;
pub mod pam;
pub mod session;

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use pam::{PAM_SYSTEM_ERR, Pam, PamHandleT, Priority};

static QUIET_PANIC_HOOK: Once = Once::new();

/// Run `body` with the module's arguments, turning a missing handle or a
/// panic into PAM_SYSTEM_ERR (logged) instead of a crash.
fn guard(
    handle: *mut PamHandleT,
    argc: c_int,
    argv: *const *const c_char,
    body: fn(&mut Pam<'_>, &[String]) -> c_int,
) -> c_int {
    // The default hook writes to stderr, which sshd may have pointed at the
    // client; the guard below logs the panic instead.
    QUIET_PANIC_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libpam passes the live handle of this call; the wrapper
        // is dropped before we return.
        let Some(mut pam) = (unsafe { Pam::from_raw(handle) }) else {
            return PAM_SYSTEM_ERR;
        };
        // SAFETY: libpam passes argc valid NUL-terminated strings in argv.
        let args = unsafe { module_args(argc, argv) };
        body(&mut pam, &args)
    }));
    match result {
        Ok(rc) => rc,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // SAFETY: as above; the previous wrapper was dropped by the unwind.
            if let Some(pam) = unsafe { Pam::from_raw(handle) } {
                pam.syslog(Priority::Err, &format!("internal error (panic): {what}"));
            }
            PAM_SYSTEM_ERR
        }
    }
}

/// Copy the module arguments out of libpam's argv.
///
/// # Safety
/// `argv` must be null or point to `argc` valid C strings.
unsafe fn module_args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let count = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() || count == 0 {
        return Vec::new();
    }
    // SAFETY: the caller guarantees argv holds argc pointers.
    let ptrs = unsafe { std::slice::from_raw_parts(argv, count) };
    ptrs.iter()
        .filter(|p| !p.is_null())
        // SAFETY: each non-null entry is a NUL-terminated string from the PAM config.
        .map(|p| unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned())
        .collect()
}

/// # Safety
/// Called by libpam with a live handle and argc/argv from the service file.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(pamh, argc, argv, account::acct_mgmt)
}

/// # Safety
/// Called by libpam with a live handle and argc/argv from the service file.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(pamh, argc, argv, session::open_session)
}

/// # Safety
/// Called by libpam with a live handle and argc/argv from the service file.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guard(pamh, argc, argv, session::close_session)
}
