//! Test double for slurmd and slurmstepd.
//!
//! [`stepd`] serves the slurmstepd unix-socket protocol from a temp spool
//! dir, as real stepds of 22.05 to 26.05 would, plus fault modes (hangs,
//! early closes, wrong versions, garbage, slow replies) that a client must
//! survive within its deadline. The slurmd side (callerid RPC) will sit
//! next to it as its own module.

pub mod stepd;
