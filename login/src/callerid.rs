//! Which job the login came from: ask the slurmd on the ssh client's host
//! which job owns the client's end of this TCP connection.

use std::net::SocketAddr;
use std::time::Instant;

use slurm_node::netinfo::{self, Connection};
use slurm_node::rpc::callerid::{self, CallerIdAnswer, CallerIdRequest};
use slurm_node::rpc::munge::MungeContext;
use slurm_node::select::CallerId;

use crate::decide::CallerIdLookup;
use crate::node::NodeView;

/// Protocol versions to offer the source slurmd, newest first. A slurmd
/// accepts its own and the three (four from 24.11) releases before it, so
/// starting at the local stepd's version and stepping down reaches every
/// slurmd of a cluster within the supported range.
const KNOWN_VERSIONS: [u16; 8] = [
    0x2D00, 0x2C00, 0x2B00, 0x2A00, 0x2900, 0x2800, 0x2700, 0x2600,
];

/// What the callerid step found, for the log and `adoptctl check`.
#[derive(Debug)]
pub struct Lookup {
    pub answer: CallerId,
    pub connection: Option<Connection>,
    pub slurmd: Option<SocketAddr>,
    pub error: Option<String>,
    /// How the connection was found, when this process's own was looked up.
    pub found_via: Option<String>,
}

impl Lookup {
    /// No TCP connection to trace: the RPC is not made.
    pub fn no_socket() -> Lookup {
        Lookup {
            answer: CallerId::NoSocket,
            connection: None,
            slurmd: None,
            error: None,
            found_via: None,
        }
    }

    /// What the login core needs of it.
    pub fn summary(&self) -> CallerIdLookup {
        CallerIdLookup {
            answer: self.answer.clone(),
            from: self
                .connection
                .as_ref()
                .map(|c| format!("{} port {}", c.remote.ip(), c.remote.port())),
            error: self.error.clone(),
            found_via: self.found_via.clone(),
        }
    }
}

/// The versions to try, starting from the local release (the stepds'
/// handshake version): in a homogeneous cluster the first try succeeds.
pub fn versions_from(local: Option<u32>) -> Vec<u16> {
    let start = local
        .and_then(|v| u16::try_from(v).ok())
        .filter(|v| KNOWN_VERSIONS.contains(v))
        .unwrap_or(KNOWN_VERSIONS[0]);
    KNOWN_VERSIONS
        .iter()
        .copied()
        .filter(|v| *v <= start)
        .collect()
}

/// Find this process's TCP connection and ask its source's slurmd.
pub fn lookup(view: &NodeView, local_version: Option<u32>, deadline: Instant) -> Lookup {
    let (found, via) = netinfo::caller_connection();
    let found_via = Some(via.to_string());
    let connection = match found {
        Ok(Some(c)) => c.canonical(),
        Ok(None) => {
            return Lookup {
                found_via,
                ..Lookup::no_socket()
            };
        }
        Err(e) => {
            return Lookup {
                answer: CallerId::Failed,
                connection: None,
                slurmd: None,
                error: Some(e.to_string()),
                found_via,
            };
        }
    };
    Lookup {
        found_via,
        ..ask(view, connection, local_version, deadline)
    }
}

/// Ask the slurmd at the connection's remote address (on this cluster's
/// SlurmdPort) which job owns the remote end.
pub fn ask(
    view: &NodeView,
    connection: Connection,
    local_version: Option<u32>,
    deadline: Instant,
) -> Lookup {
    // A mapped client (`::ffff:a.b.c.d`, from a dual-stack listener or
    // `adoptctl check --from`) has an IPv4 slurmd, asked about IPv4 ends.
    let connection = connection.canonical();
    let slurmd = SocketAddr::new(connection.remote.ip(), view.conf.slurmd_port);
    let request = CallerIdRequest {
        client: connection.remote,
        server: connection.local,
    };
    let munge = MungeContext::new(munge_socket(&view.conf.auth_info).as_deref());
    let result = callerid::query_callerid(
        slurmd,
        &request,
        &versions_from(local_version),
        &view.callerid_signers,
        &munge,
        deadline,
    );
    let (answer, error) = match result {
        Ok(CallerIdAnswer::Job(id)) => (CallerId::Job(id), None),
        Ok(CallerIdAnswer::NotFound) => (CallerId::NotFound, None),
        Err(e) => (CallerId::Failed, Some(e.to_string())),
    };
    Lookup {
        answer,
        connection: Some(connection),
        slurmd: Some(slurmd),
        error,
        found_via: None,
    }
}

/// AuthInfo's `socket=` moves munged's socket, as it does for Slurm.
fn munge_socket(auth_info: &Option<String>) -> Option<String> {
    auth_info.as_deref()?.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("socket")
            .then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_the_local_release_and_step_down() {
        assert_eq!(versions_from(Some(0x2600)), [0x2600]);
        assert_eq!(
            versions_from(Some(0x2A00)),
            [0x2A00, 0x2900, 0x2800, 0x2700, 0x2600]
        );
        assert_eq!(versions_from(None)[0], 0x2D00);
        // A stepd newer than anything we know: start from the newest we speak.
        assert_eq!(versions_from(Some(0x2F00))[0], 0x2D00);
    }

    #[test]
    fn munge_socket_comes_from_auth_info() {
        assert_eq!(munge_socket(&None), None);
        assert_eq!(
            munge_socket(&Some("cred_expire=30,socket=/run/m/s".to_owned())).as_deref(),
            Some("/run/m/s")
        );
        assert_eq!(munge_socket(&Some("ttl=5".to_owned())), None);
    }
}
