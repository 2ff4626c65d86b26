//! What a user's session on this node is given, shared by the PAM
//! session phase and the hooks: the runtime directory (`/run/user/$UID`)
//! and the XDG values exported to logins and tasks.

pub mod runtime_dir;
pub mod session_env;
