//! This cluster's own ClusterEndpoint, built from the cluster itself
//! (docs/kubernetes.md, "Controller", step 1).
//!
//! Pure: Nodes, Gateway objects and the gateway Lease in, a spec out. The sync
//! pass lists them afresh each time and hands them here; validation of the result
//! (CIDR syntax, keys, overlaps) is `causeway_crds::validate`'s, not this module's,
//! so a malformed value read from the cluster is passed through as the string it
//! was and refused there with a message naming it.

use std::collections::BTreeSet;

use causeway_crds::names::GATEWAY_NODE_LABEL;
use causeway_crds::{ClusterEndpointSpec, Gateway, GatewayRole};
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use thiserror::Error;

/// What the operator tells the controller about this cluster's networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalConfig {
    /// Pod CIDRs (`None` or empty: the aggregate of every Node's `spec.podCIDRs`).
    pub pod_cidrs: Option<Vec<IpNet>>,
    /// Service CIDRs; required, because Kubernetes does not publish them.
    pub service_cidrs: Vec<IpNet>,
}

impl LocalConfig {
    /// Whether the spec depends on the Nodes (no pod CIDRs configured).
    pub fn needs_nodes(&self) -> bool {
        self.pod_cidrs.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Why this cluster's spec cannot be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LocalSpecError {
    /// No pod CIDR configured, and no Node carries one.
    #[error("ClusterEndpoint {cluster:?}: no Node has spec.podCIDRs ({nodes} Node(s) listed) and --pod-cidrs is not set; set --pod-cidrs (CAUSEWAY_POD_CIDRS) to the cluster's pod CIDRs, e.g. \"10.244.0.0/16\" (kube-controller-manager's --cluster-cidr), or let the node IPAM allocate them (--allocate-node-cidrs)")]
    NoPodCidrs {
        /// This cluster's ID.
        cluster: String,
        /// How many Nodes were listed.
        nodes: usize,
    },
    /// No service CIDR configured.
    #[error("ClusterEndpoint {cluster:?}: no service CIDR is configured; set --service-cidrs (CAUSEWAY_SERVICE_CIDRS) to the kube-apiserver's --service-cluster-ip-range, e.g. \"10.96.0.0/12\" — Kubernetes does not publish it")]
    NoServiceCidrs {
        /// This cluster's ID.
        cluster: String,
    },
}

impl LocalSpecError {
    /// A short CamelCase reason for the `Valid=False` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoPodCidrs { .. } => "NoPodCIDRs",
            Self::NoServiceCidrs { .. } => "NoServiceCIDRs",
        }
    }
}

/// Builds this cluster's ClusterEndpoint spec.
///
/// - pod CIDRs: `config.pod_cidrs`, else the aggregate of every Node's
///   `spec.podCIDRs` ([`node_pod_cidrs`]);
/// - service CIDRs: `config.service_cidrs` (required);
/// - gateways: the spec of every Gateway whose `spec.clusterID` is `cluster_id`
///   and that is not being deleted, the active one ([`active_gateway`]) first, the
///   others by name.
pub fn build_local_spec(
    cluster_id: &str,
    config: &LocalConfig,
    nodes: &[Node],
    gateways: &[Gateway],
    gateway_lease: Option<&Lease>,
    now: Timestamp,
) -> Result<ClusterEndpointSpec, LocalSpecError> {
    let pod_cidrs = match &config.pod_cidrs {
        Some(configured) if !configured.is_empty() => {
            configured.iter().map(ToString::to_string).collect()
        }
        _ => node_pod_cidrs(nodes),
    };
    if pod_cidrs.is_empty() {
        return Err(LocalSpecError::NoPodCidrs {
            cluster: cluster_id.to_owned(),
            nodes: nodes.len(),
        });
    }
    if config.service_cidrs.is_empty() {
        return Err(LocalSpecError::NoServiceCidrs {
            cluster: cluster_id.to_owned(),
        });
    }
    let mut ours: Vec<&Gateway> = gateways
        .iter()
        .filter(|g| g.spec.cluster_id == cluster_id)
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .collect();
    ours.sort_by(|a, b| gateway_name(a).cmp(gateway_name(b)));
    if let Some(active) = active_gateway(&ours, gateway_lease, now) {
        let at = ours
            .iter()
            .position(|g| gateway_name(g) == active)
            .unwrap_or_default();
        // Moving it to the front keeps the others in name order.
        ours[..=at].rotate_right(1);
    }
    Ok(ClusterEndpointSpec {
        cluster_id: cluster_id.to_owned(),
        pod_cidrs,
        service_cidrs: config
            .service_cidrs
            .iter()
            .map(ToString::to_string)
            .collect(),
        gateways: ours.iter().map(|g| g.spec.endpoint.clone()).collect(),
    })
}

/// The Gateway objects of `cluster_id` that may be published, and why each other one of
/// that cluster may not.
///
/// Any gateway candidate's ServiceAccount can write Gateway objects, so one is published
/// only as what it claims to be: named after a Node labelled `causeway.dev/gateway=true`
/// (`nodes` must hold every such Node), and describing that node (`endpoint.nodeName`
/// equal to its name). A compromised candidate, or a stray object, cannot add a gateway
/// under a made-up name or a worker's.
pub fn publishable_gateways<'a>(
    cluster_id: &str,
    gateways: &'a [Gateway],
    nodes: &[Node],
) -> (Vec<&'a Gateway>, Vec<String>) {
    let candidates: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| causeway_crds::names::has_true_label(&n.metadata, GATEWAY_NODE_LABEL))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut refused = Vec::new();
    let mut kept = Vec::new();
    for g in gateways.iter().filter(|g| g.spec.cluster_id == cluster_id) {
        let name = gateway_name(g);
        if !candidates.contains(name) {
            refused.push(format!(
                "Gateway {name:?} is not named after a Node labelled {GATEWAY_NODE_LABEL}=true; not published (a gateway writes the object named after its own node: delete this one, or label the node if it is a gateway candidate)"
            ));
        } else if g.spec.endpoint.node_name != name {
            refused.push(format!(
                "Gateway {name:?} says it describes node {:?}; not published (a gateway describes its own node: delete the object, its gateway writes it again)",
                g.spec.endpoint.node_name
            ));
        } else {
            kept.push(g);
        }
    }
    (kept, refused)
}

/// The aggregate (`IpNet::aggregate`) of every Node's `spec.podCIDRs` (or legacy
/// `spec.podCIDR`), IPv4 first; values that do not parse as a network address are
/// appended unchanged (sorted, once each) so that validation refuses them by name.
pub fn node_pod_cidrs(nodes: &[Node]) -> Vec<String> {
    let mut nets: Vec<IpNet> = Vec::new();
    let mut malformed: BTreeSet<String> = BTreeSet::new();
    let values = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref())
        .flat_map(|spec| match &spec.pod_cidrs {
            Some(list) if !list.is_empty() => list.clone(),
            _ => spec.pod_cidr.iter().cloned().collect(),
        });
    for value in values {
        match value.trim().parse::<IpNet>() {
            // Aggregating would silently drop host bits; keep such a value as written.
            Ok(net) if net.trunc() == net => nets.push(net),
            _ => {
                malformed.insert(value);
            }
        }
    }
    IpNet::aggregate(&nets)
        .iter()
        .map(ToString::to_string)
        .chain(malformed)
        .collect()
}

/// The holder of `lease` while it is unexpired: `renewTime` (or, before the first
/// renewal, `acquireTime`) plus `leaseDurationSeconds` is after `now`.
pub fn lease_holder(lease: &Lease, now: Timestamp) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let since = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let seconds = spec.lease_duration_seconds.filter(|d| *d > 0)?;
    let expiry = since
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()?;
    (expiry > now).then_some(holder)
}

/// The name of the active gateway among `gateways` (sorted by name): the holder of
/// the gateway Lease while it is unexpired and has a Gateway object here; else the
/// first whose `status.role` is `active`; else none.
pub fn active_gateway<'a>(
    gateways: &[&'a Gateway],
    gateway_lease: Option<&Lease>,
    now: Timestamp,
) -> Option<&'a str> {
    let holder = gateway_lease.and_then(|l| lease_holder(l, now));
    if let Some(found) = holder.and_then(|h| gateways.iter().find(|g| gateway_name(g) == h)) {
        return Some(gateway_name(found));
    }
    gateways
        .iter()
        .find(|g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.role == Some(GatewayRole::Active))
        })
        .map(|g| gateway_name(g))
}

fn gateway_name(gateway: &Gateway) -> &str {
    gateway.metadata.name.as_deref().unwrap_or_default()
}

/// A bad value in a comma-separated CIDR list (a flag or environment variable).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CidrListError {
    /// The value does not parse.
    #[error("{value:?} is not a CIDR ({reason}); write address/prefix-length, comma separated, e.g. \"10.1.0.0/16,fd00:1::/48\"")]
    Syntax {
        /// The offending value.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The value has bits set after its prefix.
    #[error("{value:?} has host bits set; write the network address {network} instead")]
    HostBits {
        /// The offending value.
        value: String,
        /// The network the user probably meant.
        network: IpNet,
    },
}

/// Parses `a,b,...` into networks; blank entries are skipped, so an empty string
/// (an unset Helm value) is an empty list.
pub fn parse_cidr_list(text: &str) -> Result<Vec<IpNet>, CidrListError> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|value| {
            let net: IpNet =
                value
                    .parse()
                    .map_err(|e: ipnet::AddrParseError| CidrListError::Syntax {
                        value: value.to_owned(),
                        reason: e.to_string(),
                    })?;
            if net.trunc() != net {
                return Err(CidrListError::HostBits {
                    value: value.to_owned(),
                    network: net.trunc(),
                });
            }
            Ok(net)
        })
        .collect()
}

#[cfg(test)]
mod tests;
