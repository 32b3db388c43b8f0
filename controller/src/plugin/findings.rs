//! `kubectl causeway diagnose`: what is wrong with a clusterset, from snapshots of its
//! clusters. Pure: the same snapshots and the same `now` give the same findings, each
//! naming the object and what to do. CIDR overlaps, duplicate IDs and bad keys come
//! from `causeway_crds::validate`, the same checks the controller refuses objects with.

use std::collections::BTreeSet;

use causeway_crds::names::gateway_lease;
use causeway_crds::validate::{object_name, validate_clusterset, validate_endpoint};
use causeway_crds::{ClusterEndpoint, ConnectionState, GatewayRole};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::snapshot::ClusterSnapshot;

/// What kind of problem a finding is; stable names for scripts (`-o json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingClass {
    /// A cluster has no ClusterEndpoint of its own: its controller is not running or not leading.
    NoLocalEndpoint,
    /// A ClusterEndpoint fails validation on its own (bad CIDR, key, endpoint, ID).
    InvalidEndpoint,
    /// ClusterEndpoints conflict with each other (overlapping CIDRs, an ID or key claimed twice).
    ClustersetConflict,
    /// The controller marked a ClusterEndpoint `Valid=False`.
    EndpointRefused,
    /// A cluster has no mirror of another cluster's ClusterEndpoint.
    MissingMirror,
    /// A cluster's mirror of another cluster differs from that cluster's own object.
    StaleMirror,
    /// A cluster lists no gateway candidate.
    NoGateways,
    /// A cluster has no active gateway (no unexpired gateway Lease, no Gateway with role active).
    NoActiveGateway,
    /// The active gateway's tunnel to a remote cluster is not connected.
    ConnectionDown,
    /// The active gateway reports nothing about a remote cluster it should reach.
    MissingConnection,
    /// A ServiceExport is `Valid=False` (no such Service, or an ExternalName one).
    ExportInvalid,
    /// A ServiceExport conflicts with another cluster's export of the same service.
    ExportConflict,
}

impl FindingClass {
    /// The kebab-case name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoLocalEndpoint => "no-local-endpoint",
            Self::InvalidEndpoint => "invalid-endpoint",
            Self::ClustersetConflict => "clusterset-conflict",
            Self::EndpointRefused => "endpoint-refused",
            Self::MissingMirror => "missing-mirror",
            Self::StaleMirror => "stale-mirror",
            Self::NoGateways => "no-gateways",
            Self::NoActiveGateway => "no-active-gateway",
            Self::ConnectionDown => "connection-down",
            Self::MissingConnection => "missing-connection",
            Self::ExportInvalid => "export-invalid",
            Self::ExportConflict => "export-conflict",
        }
    }
}

impl std::fmt::Display for FindingClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem, where it was seen and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// The kubeconfig context it was seen through.
    pub context: String,
    /// What kind of problem.
    pub class: FindingClass,
    /// The object, as `kind/namespace/name`.
    pub object: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Every finding about these clusters, sorted and without duplicates. `now` decides
/// whether Leases are expired.
pub fn diagnose(snapshots: &[ClusterSnapshot], now: Timestamp) -> Vec<Finding> {
    let mut out = BTreeSet::new();
    for s in snapshots {
        endpoints(s, &mut out);
        gateways(s, now, &mut out);
        exports(s, &mut out);
    }
    clusterset(snapshots, &mut out);
    mirrors(snapshots, &mut out);
    out.into_iter().collect()
}

fn push(
    out: &mut BTreeSet<Finding>,
    s: &ClusterSnapshot,
    class: FindingClass,
    object: String,
    message: String,
) {
    out.insert(Finding {
        context: s.context.clone(),
        class,
        object,
        message,
    });
}

fn endpoint_ref(s: &ClusterSnapshot, ep: &ClusterEndpoint) -> String {
    format!("clusterendpoint/{}/{}", s.namespace, object_name(ep))
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Each ClusterEndpoint on its own, its `Valid` condition, and the local one's gateways.
fn endpoints(s: &ClusterSnapshot, out: &mut BTreeSet<Finding>) {
    let Some(local) = s.local() else {
        push(
            out,
            s,
            FindingClass::NoLocalEndpoint,
            format!("namespace/{}", s.namespace),
            format!(
                "no ClusterEndpoint labelled causeway.dev/local=true in namespace {:?}; is causeway-controller running there and leading? \
                 check `kubectl -n {} get deploy,lease` and the controller's logs (or pass -n with Causeway's namespace)",
                s.namespace, s.namespace
            ),
        );
        return;
    };
    for ep in &s.endpoints {
        if let Err(errors) = validate_endpoint(ep) {
            for e in errors {
                push(
                    out,
                    s,
                    FindingClass::InvalidEndpoint,
                    endpoint_ref(s, ep),
                    e.to_string(),
                );
            }
        }
        let conditions = ep
            .status
            .as_ref()
            .map(|st| st.conditions.as_slice())
            .unwrap_or_default();
        if let Some(c) = condition(conditions, "Valid").filter(|c| c.status == "False") {
            push(
                out,
                s,
                FindingClass::EndpointRefused,
                endpoint_ref(s, ep),
                format!("the controller refused it ({}): {}", c.reason, c.message),
            );
        }
    }
    if local.spec.gateways.is_empty() {
        push(
            out,
            s,
            FindingClass::NoGateways,
            endpoint_ref(s, local),
            format!(
                "cluster {:?} lists no gateway: label at least one node (two for failover) with `kubectl label node <node> causeway.dev/gateway=true` \
                 and check that the causeway-gateway DaemonSet runs there",
                local.spec.cluster_id
            ),
        );
    }
}

/// Whether a Lease is held and unexpired at `now`.
fn lease_holder(lease: &Lease, now: Timestamp) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    (renewed + duration > now).then_some(holder)
}

/// The active gateway, and its connections to every remote cluster this cluster mirrors.
fn gateways(s: &ClusterSnapshot, now: Timestamp, out: &mut BTreeSet<Finding>) {
    let Some(local) = s.local() else { return };
    if local.spec.gateways.is_empty() {
        return; // NoGateways says it already.
    }
    let id = &local.spec.cluster_id;
    let lease_name = gateway_lease(id);
    let lease = s
        .leases
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(&lease_name));
    let holder = lease.and_then(|l| lease_holder(l, now));
    let ours = || s.gateways.iter().filter(|g| g.spec.cluster_id == *id);
    let reporting_active = ours()
        .filter(|g| g.status.as_ref().and_then(|st| st.role) == Some(GatewayRole::Active))
        .collect::<Vec<_>>();
    // The Lease names the active gateway; a gateway holding over without the API server
    // still says `active` itself, which is enough to carry traffic.
    let active = holder
        .and_then(|h| ours().find(|g| g.metadata.name.as_deref() == Some(h)))
        .or_else(|| reporting_active.first().copied());
    let Some(active) = active else {
        let lease_state = match (lease, holder) {
            (None, _) => format!("Lease {lease_name} does not exist"),
            (Some(_), None) => format!("Lease {lease_name} is expired or unheld"),
            (Some(_), Some(h)) => {
                format!("Lease {lease_name} names {h:?}, which has no Gateway object")
            }
        };
        push(
            out,
            s,
            FindingClass::NoActiveGateway,
            format!("lease/{}/{lease_name}", s.namespace),
            format!(
                "cluster {id:?} has no active gateway: {lease_state} and no Gateway says role active; \
                 check the causeway-gateway pods on the causeway.dev/gateway=true nodes (`kubectl -n {} get pods -o wide`) and their logs",
                s.namespace
            ),
        );
        return;
    };
    let gw_name = active.metadata.name.clone().unwrap_or_default();
    let gw_ref = format!("gateway/{}/{gw_name}", s.namespace);
    let connections = active
        .status
        .as_ref()
        .map(|st| st.connections.as_slice())
        .unwrap_or_default();
    for c in connections {
        if c.state != ConnectionState::Connected {
            let state = match c.state {
                ConnectionState::Connecting => "connecting",
                ConnectionState::Error => "error",
                ConnectionState::Connected => "connected",
            };
            push(
                out,
                s,
                FindingClass::ConnectionDown,
                gw_ref.clone(),
                format!(
                    "tunnel from {id:?} (gateway {gw_name}) to {:?} is {state}: {}",
                    c.cluster_id,
                    c.reason
                        .as_deref()
                        .unwrap_or("no reason given; see the gateway's logs")
                ),
            );
        }
    }
    for mirror in s.mirrors() {
        let remote = &mirror.spec.cluster_id;
        if remote != id && !connections.iter().any(|c| c.cluster_id == *remote) {
            push(
                out,
                s,
                FindingClass::MissingConnection,
                gw_ref.clone(),
                format!(
                    "the active gateway {gw_name} of {id:?} reports no tunnel to {remote:?}, whose ClusterEndpoint is mirrored here; \
                     the gateway may not have seen the mirror yet or refused it — see its logs"
                ),
            );
        }
    }
}

/// ServiceExport conditions the controller wrote.
fn exports(s: &ClusterSnapshot, out: &mut BTreeSet<Finding>) {
    for e in &s.exports {
        let name = format!(
            "serviceexport/{}/{}",
            e.metadata.namespace.as_deref().unwrap_or_default(),
            e.metadata.name.as_deref().unwrap_or_default()
        );
        let conditions = e
            .status
            .as_ref()
            .map(|st| st.conditions.as_slice())
            .unwrap_or_default();
        if let Some(c) = condition(conditions, "Valid").filter(|c| c.status == "False") {
            push(
                out,
                s,
                FindingClass::ExportInvalid,
                name.clone(),
                format!("{}: {}", c.reason, c.message),
            );
        }
        if let Some(c) = condition(conditions, "Conflict").filter(|c| c.status == "True") {
            push(
                out,
                s,
                FindingClass::ExportConflict,
                name,
                format!("{}: {}", c.reason, c.message),
            );
        }
    }
}

/// Conflicts between clusters: within what each cluster holds (its own object and its
/// mirrors) and across the local objects of every context given.
fn clusterset(snapshots: &[ClusterSnapshot], out: &mut BTreeSet<Finding>) {
    let mut report = |s: &ClusterSnapshot, endpoints: &[ClusterEndpoint]| {
        let mut sorted = endpoints.to_vec();
        // First come, first served, as the controller decides.
        sorted.sort_by(|a, b| {
            let key = |e: &ClusterEndpoint| {
                (
                    e.metadata.creation_timestamp.clone().map(|t| t.0),
                    object_name(e),
                )
            };
            key(a).cmp(&key(b))
        });
        let valid: Vec<ClusterEndpoint> = sorted
            .into_iter()
            .filter(|e| validate_endpoint(e).is_ok())
            .collect();
        for (object, errors) in validate_clusterset(&valid).refused {
            for e in errors {
                push(
                    out,
                    s,
                    FindingClass::ClustersetConflict,
                    format!("clusterendpoint/{}/{object}", s.namespace),
                    e.to_string(),
                );
            }
        }
    };
    for s in snapshots {
        report(s, &s.endpoints);
    }
    if let Some(first) = snapshots.first() {
        let locals: Vec<ClusterEndpoint> = snapshots
            .iter()
            .filter_map(|s| s.local().cloned())
            .collect();
        if locals.len() > 1 {
            report(first, &locals);
        }
    }
}

/// Every cluster should hold a current mirror of every other cluster given.
fn mirrors(snapshots: &[ClusterSnapshot], out: &mut BTreeSet<Finding>) {
    for s in snapshots {
        let Some(local) = s.local() else { continue };
        for other in snapshots {
            let Some(remote) = other.local() else {
                continue;
            };
            if remote.spec.cluster_id == local.spec.cluster_id {
                continue;
            }
            let id = &remote.spec.cluster_id;
            match s.mirrors().find(|m| m.spec.cluster_id == *id) {
                None => push(
                    out,
                    s,
                    FindingClass::MissingMirror,
                    format!("clusterendpoint/{}/{id}", s.namespace),
                    format!(
                        "cluster {:?} has no mirror of cluster {id:?}: check that both controllers reach the broker (their logs) \
                         and the Valid condition of {id:?} at the broker",
                        local.spec.cluster_id
                    ),
                ),
                Some(m) if m.spec != remote.spec => push(
                    out,
                    s,
                    FindingClass::StaleMirror,
                    endpoint_ref(s, m),
                    format!(
                        "cluster {:?}'s mirror of {id:?} differs from {id:?}'s own object ({}); the broker sync of one of them is behind — check both controllers' logs",
                        local.spec.cluster_id,
                        differing_fields(&m.spec, &remote.spec)
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

fn differing_fields(
    a: &causeway_crds::ClusterEndpointSpec,
    b: &causeway_crds::ClusterEndpointSpec,
) -> String {
    let mut fields = Vec::new();
    if a.pod_cidrs != b.pod_cidrs {
        fields.push("podCIDRs");
    }
    if a.service_cidrs != b.service_cidrs {
        fields.push("serviceCIDRs");
    }
    if a.gateways != b.gateways {
        fields.push("gateways");
    }
    fields.join(", ")
}

#[cfg(test)]
mod tests;
