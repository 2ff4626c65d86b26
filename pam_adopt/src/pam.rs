//! The PAM FFI edge: the few libpam calls the module makes, wrapped so the
//! rest of the crate never touches a raw pointer.
//!
//! Declared by hand rather than through pam-sys/pamsm (see the README's
//! dependency table). `pam_info`/`pam_error` are C macros, so messages go
//! through `pam_prompt`; every variadic call passes a literal `"%s"` format.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr;

/// The opaque libpam handle.
#[derive(Debug)]
#[repr(C)]
pub struct PamHandleT {
    _private: [u8; 0],
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_SYSTEM_ERR: c_int = 4;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_USER_UNKNOWN: c_int = 10;
pub const PAM_SESSION_ERR: c_int = 14;
pub const PAM_IGNORE: c_int = 25;
pub const PAM_BAD_ITEM: c_int = 29;

const PAM_SERVICE: c_int = 1;
const PAM_USER: c_int = 2;
const PAM_RHOST: c_int = 4;

const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

/// Syslog priorities; the facility is always LOG_AUTHPRIV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Err = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_putenv(pamh: *mut PamHandleT, name_value: *const c_char) -> c_int;
    fn pam_syslog(pamh: *const PamHandleT, priority: c_int, fmt: *const c_char, ...);
    fn pam_set_data(
        pamh: *mut PamHandleT,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<unsafe extern "C" fn(*mut PamHandleT, *mut c_void, c_int)>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const PamHandleT,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_prompt(
        pamh: *mut PamHandleT,
        style: c_int,
        response: *mut *mut c_char,
        fmt: *const c_char,
        ...
    ) -> c_int;
}

const FMT_S: &CStr = c"%s";

/// The module's one item of PAM data: the job the account phase adopted
/// this login into, for the session phase of the same handle.
const ADOPTED_JOB_KEY: &CStr = c"pam_adopt.adopted_job";

/// A borrowed PAM handle, valid for one `pam_sm_*` call.
///
/// Not `Send`/`Sync`: libpam handles are not thread-safe.
#[derive(Debug)]
pub struct Pam<'a> {
    handle: *mut PamHandleT,
    _call: PhantomData<&'a mut PamHandleT>,
    _not_send: PhantomData<*const ()>,
}

impl Pam<'_> {
    /// Wrap the handle libpam passed to a `pam_sm_*` entry point.
    ///
    /// # Safety
    /// `handle` must be null or the live handle of the current PAM call, and
    /// the wrapper must not outlive that call.
    pub unsafe fn from_raw(handle: *mut PamHandleT) -> Option<Self> {
        if handle.is_null() {
            return None;
        }
        Some(Pam {
            handle,
            _call: PhantomData,
            _not_send: PhantomData,
        })
    }

    /// A string item, or `Err(rc)` with libpam's error code.
    fn string_item(&self, item_type: c_int) -> Result<Option<String>, c_int> {
        let mut value: *const c_void = ptr::null();
        // SAFETY: the handle is live for this call (from_raw's contract) and
        // `value` is a valid out-pointer; libpam keeps ownership of the item.
        let rc = unsafe { pam_get_item(self.handle, item_type, &mut value) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        if value.is_null() {
            return Ok(None);
        }
        // SAFETY: string items (SERVICE, USER, RHOST) are NUL-terminated C
        // strings owned by libpam that stay valid until the item changes,
        // which cannot happen while we hold `&self` within this call.
        let text = unsafe { CStr::from_ptr(value.cast::<c_char>()) };
        Ok(Some(text.to_string_lossy().into_owned()))
    }

    pub fn service(&self) -> Result<Option<String>, c_int> {
        self.string_item(PAM_SERVICE)
    }

    pub fn user(&self) -> Result<Option<String>, c_int> {
        self.string_item(PAM_USER)
    }

    pub fn rhost(&self) -> Option<String> {
        self.string_item(PAM_RHOST).ok().flatten()
    }

    /// Set `NAME=value` in the PAM environment the application will export.
    pub fn putenv(&mut self, name: &str, value: &str) -> Result<(), c_int> {
        let pair = CString::new(format!("{name}={value}")).map_err(|_| PAM_BAD_ITEM)?;
        // SAFETY: live handle; libpam copies the string before returning.
        let rc = unsafe { pam_putenv(self.handle, pair.as_ptr()) };
        if rc == PAM_SUCCESS { Ok(()) } else { Err(rc) }
    }

    /// One line to syslog (LOG_AUTHPRIV), prefixed by libpam with
    /// `pam_adopt(<service>:<stage>)`.
    pub fn syslog(&self, priority: Priority, message: &str) {
        let Ok(text) = CString::new(message.replace('\0', "?")) else {
            return;
        };
        // SAFETY: live handle; the format is the literal "%s" and the one
        // vararg is a valid NUL-terminated string, as the format requires.
        unsafe {
            pam_syslog(
                self.handle,
                libc::LOG_AUTHPRIV | priority as c_int,
                FMT_S.as_ptr(),
                text.as_ptr(),
            )
        };
    }

    /// Remember, on this PAM handle, that the login was adopted into `job`.
    /// The job id is the data pointer's address, not memory it points to:
    /// nothing is allocated, so no cleanup function of this module's has to
    /// outlive it (libpam may unload the module before the handle ends).
    pub fn set_adopted_job(&mut self, job: u32) -> Result<(), c_int> {
        let Ok(address) = usize::try_from(job) else {
            return Err(PAM_BAD_ITEM);
        };
        let data = ptr::without_provenance_mut::<c_void>(address);
        // SAFETY: live handle; the key is a NUL-terminated literal libpam
        // copies; `data` is never dereferenced, by us or by libpam, and
        // with no cleanup function libpam only stores it.
        let rc = unsafe { pam_set_data(self.handle, ADOPTED_JOB_KEY.as_ptr(), data, None) };
        if rc == PAM_SUCCESS { Ok(()) } else { Err(rc) }
    }

    /// The job [`Pam::set_adopted_job`] recorded on this handle, if any.
    pub fn adopted_job(&self) -> Option<u32> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: live handle, literal key, valid out-pointer; only the
        // pointer's address is read.
        let rc = unsafe { pam_get_data(self.handle, ADOPTED_JOB_KEY.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS {
            return None;
        }
        u32::try_from(data.addr()).ok().filter(|&job| job != 0)
    }

    /// Show an error message to the user through the application's
    /// conversation function (sshd prints it on the client's stderr).
    pub fn error_message(&mut self, message: &str) {
        self.prompt(PAM_ERROR_MSG, message);
    }

    /// Show an informational message to the user.
    pub fn info_message(&mut self, message: &str) {
        self.prompt(PAM_TEXT_INFO, message);
    }

    fn prompt(&mut self, style: c_int, message: &str) {
        let Ok(text) = CString::new(message.replace('\0', "?")) else {
            return;
        };
        // SAFETY: live handle; a null response pointer tells libpam no reply
        // is wanted (it frees any reply itself); "%s" plus one C string.
        unsafe {
            pam_prompt(
                self.handle,
                style,
                ptr::null_mut(),
                FMT_S.as_ptr(),
                text.as_ptr(),
            )
        };
    }
}
