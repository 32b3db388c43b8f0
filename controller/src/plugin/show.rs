//! `kubectl causeway show …`: one row per object across every context, as a table or
//! as JSON/YAML (the same rows, so scripts see what people see).

use causeway_crds::{ConnectionState, GatewayRole, ServiceImportType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

use super::snapshot::{is_local, ClusterSnapshot};

/// One ClusterEndpoint as a cluster holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    /// Context it was read through.
    pub context: String,
    /// The cluster it describes.
    pub cluster: String,
    /// `local` (this cluster's own) or `mirror`.
    pub kind: &'static str,
    /// Pod CIDRs, comma-joined.
    pub pod_cidrs: String,
    /// Service CIDRs, comma-joined.
    pub service_cidrs: String,
    /// Gateway node names, the active one first.
    pub gateways: String,
    /// The `Valid` condition's status and reason, or `-` when there is none.
    pub valid: String,
}

/// One Gateway object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRow {
    /// Context it was read through.
    pub context: String,
    /// Its cluster.
    pub cluster: String,
    /// Its node.
    pub node: String,
    /// active, passive or unknown.
    pub role: String,
    /// Where other clusters send WireGuard.
    pub public_endpoint: String,
    /// Its WireGuard public key.
    pub public_key: String,
}

/// One tunnel as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    /// Context it was read through.
    pub context: String,
    /// The local cluster.
    pub cluster: String,
    /// The reporting gateway's node.
    pub gateway: String,
    /// The remote cluster.
    pub remote: String,
    /// connecting, connected or error.
    pub state: String,
    /// Average RTT, `-` when unknown.
    pub rtt: String,
    /// Latest handshake (RFC 3339), `-` when none.
    pub last_handshake: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Why, when not connected.
    pub reason: String,
}

/// One ServiceExport and its conditions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRow {
    /// Context it was read through.
    pub context: String,
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// `Valid` status/reason.
    pub valid: String,
    /// `Conflict` status/reason.
    pub conflict: String,
    /// `Ready` status/reason.
    pub ready: String,
}

/// One ServiceImport.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRow {
    /// Context it was read through.
    pub context: String,
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// ClusterSetIP or Headless.
    #[serde(rename = "type")]
    pub type_: String,
    /// Ports as `name:port/protocol`.
    pub ports: String,
    /// Clusters whose export it carries.
    pub clusters: String,
}

fn join(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

fn condition_cell(conditions: &[Condition], type_: &str) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{} ({})", c.status, c.reason))
        .unwrap_or_else(|| "-".into())
}

/// Every ClusterEndpoint of every context.
pub fn clusters(snapshots: &[ClusterSnapshot]) -> Vec<ClusterRow> {
    let mut rows = Vec::new();
    for s in snapshots {
        for ep in &s.endpoints {
            let conditions = ep
                .status
                .as_ref()
                .map(|st| st.conditions.as_slice())
                .unwrap_or_default();
            let gateways: Vec<String> = ep
                .spec
                .gateways
                .iter()
                .map(|g| g.node_name.clone())
                .collect();
            rows.push(ClusterRow {
                context: s.context.clone(),
                cluster: ep.spec.cluster_id.clone(),
                kind: if is_local(ep) { "local" } else { "mirror" },
                pod_cidrs: join(&ep.spec.pod_cidrs),
                service_cidrs: join(&ep.spec.service_cidrs),
                gateways: join(&gateways),
                valid: condition_cell(conditions, "Valid"),
            });
        }
    }
    rows
}

/// Every Gateway of every context.
pub fn gateways(snapshots: &[ClusterSnapshot]) -> Vec<GatewayRow> {
    let mut rows = Vec::new();
    for s in snapshots {
        for g in &s.gateways {
            let role = match g.status.as_ref().and_then(|st| st.role) {
                Some(GatewayRole::Active) => "active",
                Some(GatewayRole::Passive) => "passive",
                None => "unknown",
            };
            rows.push(GatewayRow {
                context: s.context.clone(),
                cluster: g.spec.cluster_id.clone(),
                node: g.metadata.name.clone().unwrap_or_default(),
                role: role.into(),
                public_endpoint: g.spec.endpoint.public_endpoint.clone(),
                public_key: g.spec.endpoint.public_key.clone(),
            });
        }
    }
    rows
}

/// Every tunnel every gateway reports.
pub fn connections(snapshots: &[ClusterSnapshot]) -> Vec<ConnectionRow> {
    let mut rows = Vec::new();
    for s in snapshots {
        for g in &s.gateways {
            for c in g.status.iter().flat_map(|st| &st.connections) {
                let state = match c.state {
                    ConnectionState::Connecting => "connecting",
                    ConnectionState::Connected => "connected",
                    ConnectionState::Error => "error",
                };
                rows.push(ConnectionRow {
                    context: s.context.clone(),
                    cluster: g.spec.cluster_id.clone(),
                    gateway: g.metadata.name.clone().unwrap_or_default(),
                    remote: c.cluster_id.clone(),
                    state: state.into(),
                    rtt: c.rtt_avg.clone().unwrap_or_else(|| "-".into()),
                    last_handshake: c
                        .last_handshake
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .unwrap_or_else(|| "-".into()),
                    rx_bytes: c.rx_bytes,
                    tx_bytes: c.tx_bytes,
                    reason: c.reason.clone().unwrap_or_default(),
                });
            }
        }
    }
    rows
}

/// Every ServiceExport of every context.
pub fn exports(snapshots: &[ClusterSnapshot]) -> Vec<ExportRow> {
    let mut rows = Vec::new();
    for s in snapshots {
        for e in &s.exports {
            let conditions = e
                .status
                .as_ref()
                .map(|st| st.conditions.as_slice())
                .unwrap_or_default();
            rows.push(ExportRow {
                context: s.context.clone(),
                namespace: e.metadata.namespace.clone().unwrap_or_default(),
                name: e.metadata.name.clone().unwrap_or_default(),
                valid: condition_cell(conditions, "Valid"),
                conflict: condition_cell(conditions, "Conflict"),
                ready: condition_cell(conditions, "Ready"),
            });
        }
    }
    rows
}

/// Every ServiceImport of every context (the per-cluster ones at a broker included).
pub fn imports(snapshots: &[ClusterSnapshot]) -> Vec<ImportRow> {
    let mut rows = Vec::new();
    for s in snapshots {
        for i in &s.imports {
            let ports: Vec<String> = i
                .spec
                .ports
                .iter()
                .map(|p| {
                    format!(
                        "{}{}/{}",
                        p.name
                            .as_deref()
                            .map(|n| format!("{n}:"))
                            .unwrap_or_default(),
                        p.port,
                        p.protocol.as_deref().unwrap_or("TCP")
                    )
                })
                .collect();
            let clusters: Vec<String> = i
                .status
                .iter()
                .flat_map(|st| &st.clusters)
                .map(|c| c.cluster.clone())
                .collect();
            rows.push(ImportRow {
                context: s.context.clone(),
                namespace: i.metadata.namespace.clone().unwrap_or_default(),
                name: i.metadata.name.clone().unwrap_or_default(),
                type_: match i.spec.type_ {
                    ServiceImportType::ClusterSetIP => "ClusterSetIP".into(),
                    ServiceImportType::Headless => "Headless".into(),
                },
                ports: join(&ports),
                clusters: join(&clusters),
            });
        }
    }
    rows
}

/// A table with a header, columns padded to their widest cell; coloured when stdout is a
/// terminal and `NO_COLOR` is unset (<https://no-color.org>), so pipes and scripts get
/// plain text.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    use std::io::IsTerminal;
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    table_in(header, rows, colour)
}

const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// The colour a cell is shown in: the words that say whether something works.
fn status_colour(cell: &str) -> Option<&'static str> {
    match cell {
        "connected" | "active" | "ok" | "True" | "Ready" => Some(GREEN),
        "connecting" | "holding-over" | "Unknown" | "Pending" => Some(YELLOW),
        "error" | "FAIL" | "False" => Some(RED),
        _ => None,
    }
}

/// [`table`] with colour chosen by the caller: a bold header, and state words in green
/// (working), yellow (on the way) or red (broken). Padding counts visible characters only.
pub fn table_in(header: &[&str], rows: &[Vec<String>], colour: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>, heading: bool| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let paint = match (colour, heading) {
                (false, _) => None,
                (true, true) => Some(BOLD),
                (true, false) => status_colour(cell),
            };
            match paint {
                Some(code) => {
                    out.push_str(code);
                    out.push_str(cell);
                    out.push_str(RESET);
                }
                None => out.push_str(cell),
            }
            if i < last {
                let pad = w - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), true);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_to_the_widest_cell() {
        let t = table_in(
            &["CLUSTER", "STATE"],
            &[
                vec!["site-a".into(), "connected".into()],
                vec!["a-much-longer-id".into(), "error".into()],
            ],
            false,
        );
        assert_eq!(
            t,
            "CLUSTER            STATE\nsite-a             connected\na-much-longer-id   error\n"
        );
    }

    #[test]
    fn colour_marks_states_without_moving_the_columns() {
        let rows = [
            vec!["site-a".into(), "connected".into(), "x".into()],
            vec!["a-much-longer-id".into(), "error".into(), "y".into()],
        ];
        let plain = table_in(&["CLUSTER", "STATE", "NOTE"], &rows, false);
        let coloured = table_in(&["CLUSTER", "STATE", "NOTE"], &rows, true);
        assert!(
            coloured.contains("\x1b[32mconnected\x1b[0m"),
            "{coloured:?}"
        );
        assert!(coloured.contains("\x1b[31merror\x1b[0m"), "{coloured:?}");
        assert!(
            coloured.starts_with("\x1b[1mCLUSTER\x1b[0m"),
            "{coloured:?}"
        );
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let strip = |s: &str| {
            [BOLD, GREEN, YELLOW, RED, RESET]
                .iter()
                .fold(s.to_owned(), |t, code| t.replace(code, ""))
        };
        assert_eq!(
            strip(&coloured),
            plain,
            "the same table once the colour is taken out"
        );
    }

    #[test]
    fn empty_snapshots_give_no_rows() {
        let s = vec![ClusterSnapshot::default()];
        assert!(clusters(&s).is_empty());
        assert!(gateways(&s).is_empty());
        assert!(connections(&s).is_empty());
        assert!(exports(&s).is_empty());
        assert!(imports(&s).is_empty());
    }
}
