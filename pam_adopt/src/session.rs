//! The session phase. The account phase already placed the process; the
//! session phase has nothing to set up yet, and says so with the codes
//! libpam expects: PAM_IGNORE where the module does not apply, so it never
//! decides a session stack on its own.

use crate::options::Options;
use crate::pam::{PAM_IGNORE, PAM_SUCCESS, Pam};

pub fn open_session(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    applies(pam, args)
}

pub fn close_session(pam: &mut Pam<'_>, args: &[String]) -> i32 {
    applies(pam, args)
}

fn applies(pam: &Pam<'_>, args: &[String]) -> i32 {
    let (opts, _) = Options::parse(args);
    match pam.service() {
        Ok(Some(service)) if opts.service_allowed(&service) => {}
        _ => return PAM_IGNORE,
    }
    let is_root = match pam.user() {
        Ok(Some(user)) => {
            matches!(nix::unistd::User::from_name(&user), Ok(Some(pw)) if pw.uid.is_root())
        }
        _ => true,
    };
    if is_root { PAM_IGNORE } else { PAM_SUCCESS }
}
