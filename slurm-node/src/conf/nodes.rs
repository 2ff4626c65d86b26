//! NodeName lines: hostlist expansion of the names, hostnames, addresses
//! and ports of one line, and NodeName=DEFAULT carried to later lines.

use std::collections::BTreeMap;

use super::error::ConfError;
use super::lexer::{At, is_blank, is_space, next_pair};
use super::values::parse_port;
use crate::hostlist;

/// Upper bound on node entries over all NodeName lines, for the same reason.
pub const MAX_NODES: usize = 1 << 18;

/// One node of slurm.conf's NodeName lines, after hostlist expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    /// NodeHostname; the NodeName when not given.
    pub hostname: String,
    /// NodeAddr; the NodeHostname when not given.
    pub addr: String,
    /// The node's own slurmd port; `None` means SlurmdPort.
    pub port: Option<u16>,
}

/// NodeName lines in reading order, with the `NodeName=DEFAULT` settings
/// seen so far.
#[derive(Debug, Default)]
pub(super) struct NodeLines {
    /// NodeName=DEFAULT settings so far, by lower-cased key.
    defaults: BTreeMap<String, String>,
}

impl NodeLines {
    /// Add the nodes of the line `NodeName=<value> <rest>` to `nodes`.
    pub(super) fn read(
        &mut self,
        nodes: &mut Vec<NodeEntry>,
        at: At<'_>,
        value: &str,
        rest: &str,
    ) -> Result<(), ConfError> {
        let mut opts: BTreeMap<String, &str> = BTreeMap::new();
        let mut left = rest;
        while let Some((k, v, after)) = next_pair(left) {
            opts.insert(k.to_ascii_lowercase(), v);
            left = after;
        }
        if !is_blank(left) {
            return Err(at.err(format!(
                "NodeName={value}: cannot parse \"{}\": expected Key=Value",
                left.trim_matches(is_space)
            )));
        }

        if value.eq_ignore_ascii_case("DEFAULT") {
            for (lower, key) in [
                ("nodehostname", "NodeHostname"),
                ("nodeaddr", "NodeAddr"),
                ("bcastaddr", "BcastAddr"),
            ] {
                if opts.contains_key(lower) {
                    return Err(at.err(format!("{key} is not allowed with NodeName=DEFAULT")));
                }
            }
            // Later DEFAULT lines override earlier ones key by key.
            for (k, v) in opts {
                self.defaults.insert(k, v.to_owned());
            }
            return Ok(());
        }
        if value.eq_ignore_ascii_case("ALL") {
            return Err(at.err("NodeName=ALL: ALL is reserved and cannot name a node"));
        }

        let names = expand(at, "NodeName", value)?;
        if names.is_empty() {
            return Err(at.err("NodeName: no node name given"));
        }
        let n = names.len();
        let hostname_expr = opts.get("nodehostname").copied().unwrap_or(value);
        let addr_expr = opts.get("nodeaddr").copied().unwrap_or(hostname_expr);
        let hostnames = per_node(at, "NodeHostname", hostname_expr, value, n)?;
        let addrs = per_node(at, "NodeAddr", addr_expr, value, n)?;
        let port_expr = opts
            .get("port")
            .copied()
            .or(self.defaults.get("port").map(String::as_str));
        let ports = match port_expr {
            Some(expr) => node_ports(at, expr, value, n)?,
            None => vec![None; n],
        };

        if nodes.len().saturating_add(n) > MAX_NODES {
            return Err(at.err(format!("more than {MAX_NODES} nodes in NodeName lines")));
        }
        for (((name, hostname), addr), port) in
            names.into_iter().zip(hostnames).zip(addrs).zip(ports)
        {
            nodes.push(NodeEntry {
                name,
                hostname,
                addr,
                port,
            });
        }
        Ok(())
    }
}

fn expand(at: At<'_>, key: &str, expr: &str) -> Result<Vec<String>, ConfError> {
    hostlist::expand(expr).map_err(|e| at.err(format!("{key}: {e}")))
}

/// One value per node: the expression must give exactly one name per node,
/// or a single name they all share (several slurmds on one host), as
/// Slurm requires.
fn per_node(
    at: At<'_>,
    key: &str,
    expr: &str,
    nodes: &str,
    n: usize,
) -> Result<Vec<String>, ConfError> {
    let values = expand(at, key, expr)?;
    if values.len() == n {
        return Ok(values);
    }
    match values.as_slice() {
        [shared] => Ok(vec![shared.clone(); n]),
        _ => Err(at.err(format!(
            "{key}={expr} gives {} names for the {n} nodes of NodeName={nodes}; \
             give one per node or a single one",
            values.len()
        ))),
    }
}

/// Ports of a NodeName line. Slurm reads `6820-6823` and `6820,6821` as
/// ranges even without brackets.
fn node_ports(
    at: At<'_>,
    expr: &str,
    nodes: &str,
    n: usize,
) -> Result<Vec<Option<u16>>, ConfError> {
    let bracketed;
    let list = if !expr.starts_with('[') && (expr.contains('-') || expr.contains(',')) {
        bracketed = format!("[{expr}]");
        bracketed.as_str()
    } else {
        expr
    };
    let raw = expand(at, "Port", list)?;
    let ports = raw
        .iter()
        .map(|p| {
            let decimal = (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u64>().ok())
                .flatten();
            parse_port(at, "Port", p, decimal).map(Some)
        })
        .collect::<Result<Vec<_>, _>>()?;
    match ports.as_slice() {
        [] => Ok(vec![None; n]),
        [shared] => Ok(vec![*shared; n]),
        _ if ports.len() == n => Ok(ports),
        _ => Err(at.err(format!(
            "Port={expr} gives {} ports for the {n} nodes of NodeName={nodes}; \
             give one per node or a single one",
            ports.len()
        ))),
    }
}
