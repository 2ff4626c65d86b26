//! Test double for slurmd and slurmstepd.
//!
//! [`stepd`] serves the slurmstepd unix-socket protocol from a temp spool
//! dir, as real stepds of 22.05 to 26.05 would, plus fault modes (hangs,
//! early closes, wrong versions, garbage, slow replies) that a client must
//! survive within its deadline. [`slurmd`] serves the slurmd side of the
//! callerid RPC on a TCP port, munge-signed, with its own fault modes.
//! [`munged`] runs a private munged for both to sign with.

pub mod munged;
mod serve;
pub mod slurmd;
pub mod stepd;
