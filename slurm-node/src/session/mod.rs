//! What a user's session on this node is given, shared by the PAM
//! session phase and the hooks: the runtime directory (`/run/user/$UID`),
//! the XDG values exported to logins and tasks, and who is logged into
//! which job.

pub mod device_env;
pub mod logins;
pub mod proc_table;
pub mod runtime_dir;
pub mod session_env;
