//! The clusterset as this pass leaves the broker: every cluster's export of each
//! service, oldest first, how the others disagree with the oldest, and which of another
//! cluster's endpoints lie outside its accepted CIDRs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use causeway_crds::mcs::{ServicePort, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::names::{
    ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER, SERVICE_NAMESPACE_LABEL,
};
use causeway_crds::validate::Site;
use causeway_crds::{ServiceImport, ServiceImportSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::broker::Published;
use super::objects::{is_from, label, name_of};
use super::{
    ExportPlan, ObjectKey, Observed, OutsideCidrs, REASON_PORT_CONFLICT,
    REASON_SESSION_AFFINITY_CONFLICT, REASON_TYPE_CONFLICT,
};

/// One cluster's export of a service, as the broker holds it (after this pass).
#[derive(Debug, Clone)]
pub(super) struct ClusterExport {
    pub(super) cluster: String,
    pub(super) exported_at: Option<Timestamp>,
    pub(super) spec: ServiceImportSpec,
    pub(super) slices: Vec<EndpointSlice>,
}

/// How one cluster's export disagrees with the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Disagreement {
    /// Condition reason for the field.
    pub(super) reason: &'static str,
    /// The field, as a person reads it.
    pub(super) field: &'static str,
    /// The oldest export's value.
    pub(super) winner_value: String,
    /// This cluster's value.
    pub(super) value: String,
}

/// One exported service of the clusterset.
#[derive(Debug, Clone)]
pub(super) struct ClustersetService {
    /// Every cluster's export, oldest first: the first is the winner.
    pub(super) exports: Vec<ClusterExport>,
    /// Per cluster (the winner aside), how its export disagrees with the winner's.
    pub(super) conflicts: BTreeMap<String, Vec<Disagreement>>,
}

impl ClustersetService {
    /// The oldest export, whose type, ports and session affinity are imported.
    pub(super) fn winner(&self) -> &ClusterExport {
        // Only built with at least one export.
        &self.exports[0]
    }

    /// Whether `cluster`'s export agrees with the winner's.
    pub(super) fn agrees(&self, cluster: &str) -> bool {
        !self.conflicts.contains_key(cluster)
    }
}

/// Every exported service of the clusterset by `ns/svc`, from the other clusters'
/// broker objects and ours as this pass leaves them.
pub(super) fn clusterset(
    plan: &mut ExportPlan,
    cluster_id: &str,
    observed: &Observed<'_>,
    published: &Published,
) -> BTreeMap<ObjectKey, ClustersetService> {
    // (service key, cluster) -> export.
    let mut exports: BTreeMap<(ObjectKey, String), ClusterExport> = BTreeMap::new();
    let identity = |meta: &ObjectMeta| -> Option<(ObjectKey, String)> {
        Some((
            ObjectKey::new(
                label(meta, SERVICE_NAMESPACE_LABEL)?,
                label(meta, LABEL_SERVICE_NAME)?,
            ),
            label(meta, LABEL_SOURCE_CLUSTER)?.to_owned(),
        ))
    };
    let mut others: Vec<&ServiceImport> = observed
        .broker_imports
        .iter()
        .filter(|o| !is_from(&o.metadata, cluster_id))
        .collect();
    others.sort_by_key(|o| name_of(*o));
    for import in others.into_iter().chain(published.imports.values()) {
        let Some(id) = identity(&import.metadata) else {
            plan.ignored.push(ObjectKey::of(import));
            continue;
        };
        // The broker's clock, not the member's word: an annotation would let a member
        // claim to be the oldest exporter and win every conflict.
        let exported_at = import.metadata.creation_timestamp.as_ref().map(|t| t.0);
        // Two objects for one service and cluster: the first by name counts.
        exports.entry(id.clone()).or_insert_with(|| ClusterExport {
            cluster: id.1,
            exported_at,
            spec: import.spec.clone(),
            slices: Vec::new(),
        });
    }
    let our_slices = published.slices.values().flatten();
    let other_slices: Vec<EndpointSlice> = observed
        .broker_slices
        .iter()
        .filter(|o| !is_from(&o.metadata, cluster_id))
        .map(|slice| own_addresses_only(plan, observed.sites, slice))
        .collect();
    for slice in other_slices.iter().chain(our_slices) {
        if label(&slice.metadata, ENDPOINTSLICE_MANAGED_BY_LABEL) != Some(ENDPOINTSLICE_MANAGER) {
            continue;
        }
        let Some(id) = identity(&slice.metadata) else {
            plan.ignored.push(ObjectKey::of(slice));
            continue;
        };
        // A slice without its cluster's ServiceImport is not imported.
        if let Some(export) = exports.get_mut(&id) {
            export.slices.push(slice.clone());
        }
    }
    let mut services: BTreeMap<ObjectKey, Vec<ClusterExport>> = BTreeMap::new();
    for ((service, _), export) in exports {
        services.entry(service).or_default().push(export);
    }
    services
        .into_iter()
        .map(|(key, mut exports)| {
            // Oldest first; an export without a (valid) timestamp counts as newest.
            exports.sort_by(|a, b| {
                (a.exported_at.is_none(), a.exported_at, &a.cluster).cmp(&(
                    b.exported_at.is_none(),
                    b.exported_at,
                    &b.cluster,
                ))
            });
            let winner = exports[0].spec.clone();
            let conflicts = exports[1..]
                .iter()
                .filter_map(|e| {
                    let found = disagreements(&winner, &e.spec);
                    (!found.is_empty()).then(|| (e.cluster.clone(), found))
                })
                .collect();
            (key, ClustersetService { exports, conflicts })
        })
        .collect()
}

/// `slice` without the endpoints whose addresses lie outside its source cluster's accepted
/// CIDRs (all of them when the cluster has no accepted ClusterEndpoint), reported in `plan`.
fn own_addresses_only(
    plan: &mut ExportPlan,
    sites: &[Site],
    slice: &EndpointSlice,
) -> EndpointSlice {
    let cluster = label(&slice.metadata, LABEL_SOURCE_CLUSTER).unwrap_or_default();
    let site = sites.iter().find(|s| s.cluster_id == cluster);
    let owned = |address: &String| {
        address
            .parse::<IpAddr>()
            .is_ok_and(|a| site.is_some_and(|s| s.contains(a)))
    };
    let mut kept = slice.clone();
    let mut outside: Vec<String> = Vec::new();
    kept.endpoints.retain(|e| {
        let all_owned = e.addresses.iter().all(owned);
        if !all_owned {
            outside.extend(e.addresses.iter().filter(|a| !owned(a)).cloned());
        }
        all_owned
    });
    if !outside.is_empty() {
        plan.outside_cidrs.push(OutsideCidrs {
            cluster: cluster.to_owned(),
            slice: ObjectKey::of(slice),
            addresses: outside,
            cluster_known: site.is_some(),
        });
    }
    kept
}

/// How `spec` disagrees with the `winner`'s: type, ports, session affinity.
fn disagreements(winner: &ServiceImportSpec, spec: &ServiceImportSpec) -> Vec<Disagreement> {
    let mut found = Vec::new();
    if winner.type_ != spec.type_ {
        found.push(Disagreement {
            reason: REASON_TYPE_CONFLICT,
            field: "type",
            winner_value: format!("{:?}", winner.type_),
            value: format!("{:?}", spec.type_),
        });
    }
    let sorted = |ports: &[ServicePort]| {
        let mut ports = ports.to_vec();
        ports.sort();
        ports
    };
    if sorted(&winner.ports) != sorted(&spec.ports) {
        found.push(Disagreement {
            reason: REASON_PORT_CONFLICT,
            field: "ports",
            winner_value: port_list(&winner.ports),
            value: port_list(&spec.ports),
        });
    }
    let affinity =
        |s: &ServiceImportSpec| s.session_affinity.clone().unwrap_or_else(|| "None".into());
    if affinity(winner) != affinity(spec) {
        found.push(Disagreement {
            reason: REASON_SESSION_AFFINITY_CONFLICT,
            field: "sessionAffinity",
            winner_value: affinity(winner),
            value: affinity(spec),
        });
    }
    found
}

/// Ports as a person reads them: `[http 80/TCP, 443/TCP]`.
fn port_list(ports: &[ServicePort]) -> String {
    let shown: Vec<String> = ports
        .iter()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match &p.name {
                Some(name) => format!("{name} {}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    format!("[{}]", shown.join(", "))
}
