//! PAM_USER's uid from NSS, within the login's deadline.
//!
//! getpwnam may ask sssd, nscd, winbind or an LDAP server, and a directory
//! that has stopped answering holds the caller until it gives up, which
//! can be minutes. The lookup therefore runs on a thread of its own and the
//! login waits for the answer only until its deadline. A lookup that is
//! still running then cannot be cancelled (nothing interrupts a call inside
//! an NSS module); it is left to finish or to end with the process, and the
//! login goes on to `action_generic_failure` with a line that says which
//! wait ran out.

use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use nix::sys::signal::SigSet;

#[derive(Debug, thiserror::Error)]
pub enum UserLookupError {
    #[error("getpwnam({user}): {source}")]
    Nss { user: String, source: nix::Error },
    #[error(
        "getpwnam({user}): no answer within {waited_ms} ms (timeout_ms): is the directory service (sssd, nscd, LDAP) answering?"
    )]
    TimedOut { user: String, waited_ms: u128 },
    #[error("getpwnam({user}): cannot start the lookup thread: {source}")]
    Thread {
        user: String,
        source: std::io::Error,
    },
}

/// `user`'s uid, `None` for no such user, asked of NSS until `deadline`.
pub fn uid_within(user: &str, deadline: Instant) -> Result<Option<u32>, UserLookupError> {
    lookup_within(user, deadline, |name| {
        nix::unistd::User::from_name(name).map(|pw| pw.map(|pw| pw.uid.as_raw()))
    })
}

/// Run `lookup(user)` on a thread and wait for it until `deadline`.
fn lookup_within<F>(
    user: &str,
    deadline: Instant,
    lookup: F,
) -> Result<Option<u32>, UserLookupError>
where
    F: FnOnce(&str) -> nix::Result<Option<u32>> + Send + 'static,
{
    let started = Instant::now();
    // Room for the one answer, so a thread that answers after the login
    // has stopped waiting does not block on the send.
    let (answer, answered) = mpsc::sync_channel(1);
    let name = user.to_owned();
    thread::Builder::new()
        .name("pam_adopt-nss".into())
        .spawn(move || {
            // The host process's signal handlers (sshd's SIGALRM for
            // LoginGraceTime, its SIGCHLD) stay on its own threads.
            let _ = SigSet::all().thread_block();
            let _ = answer.send(lookup(&name));
        })
        .map_err(|source| UserLookupError::Thread {
            user: user.to_owned(),
            source,
        })?;
    let wait = deadline.saturating_duration_since(Instant::now());
    match answered.recv_timeout(wait) {
        Ok(Ok(uid)) => Ok(uid),
        Ok(Err(source)) => Err(UserLookupError::Nss {
            user: user.to_owned(),
            source,
        }),
        // Disconnected: the thread ended without an answer (a panic in the
        // lookup); as good as no answer.
        Err(_) => Err(UserLookupError::TimedOut {
            user: user.to_owned(),
            waited_ms: started.elapsed().as_millis(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_answer_in_time_is_returned() {
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            lookup_within("alice", deadline, |_| Ok(Some(2001))).unwrap(),
            Some(2001)
        );
        assert_eq!(
            lookup_within("nobody-here", deadline, |_| Ok(None)).unwrap(),
            None
        );
    }

    #[test]
    fn an_nss_error_names_the_user() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = lookup_within("alice", deadline, |_| Err(nix::Error::EIO)).unwrap_err();
        assert!(matches!(err, UserLookupError::Nss { .. }), "{err:?}");
        assert!(err.to_string().starts_with("getpwnam(alice): "), "{err}");
    }

    #[test]
    fn a_hung_lookup_ends_at_the_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(150);
        let err = lookup_within("alice", deadline, |_| {
            thread::sleep(Duration::from_secs(30));
            Ok(Some(1))
        })
        .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, UserLookupError::TimedOut { .. }), "{err:?}");
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert!(err.to_string().contains("no answer within"), "{err}");
    }

    #[test]
    fn a_past_deadline_does_not_wait_for_a_slow_lookup() {
        // A deadline already passed gives the thread no time: a lookup
        // that has not answered at once counts as hung, with no wait.
        let started = Instant::now();
        let r = lookup_within("alice", started, |_| {
            thread::sleep(Duration::from_secs(30));
            Ok(Some(1))
        });
        assert!(matches!(r, Err(UserLookupError::TimedOut { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_real_lookup_knows_root() {
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(uid_within("root", deadline).unwrap(), Some(0));
    }
}
