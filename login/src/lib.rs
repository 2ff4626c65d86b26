//! The decision of one login, shared by `pam_adopt.so` and `adoptctl check`.
//!
//! [`options`] parses the module arguments of the PAM line, [`node`] is this
//! node as a login sees it (config, the user's extern steps, adoption), and
//! [`callerid`] asks the source node's slurmd which job a connection belongs
//! to. The PAM module and the CLI are thin front ends over these, so a dry
//! run shows exactly what a login would see.

pub mod callerid;
pub mod decide;
pub mod live;
pub mod node;
pub mod options;
pub mod outcome;
pub mod user_lookup;
