//! What every planner asks of an object: whose it is (its labels), its address family,
//! and how a write of ours merges into what is already there.

use std::collections::BTreeMap;
use std::net::IpAddr;

use causeway_crds::mcs::LABEL_SOURCE_CLUSTER;
use causeway_crds::names::{ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER, MANAGED_LABEL};
use causeway_crds::ServiceImport;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::Upsert;

/// An address family of EndpointSlices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `addr`.
    pub(super) fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `None` for FQDN slices, which carry no addresses to import.
    pub(super) fn of_address_type(address_type: &str) -> Option<Self> {
        match address_type {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    /// The EndpointSlice `addressType`.
    pub(super) fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The suffix of slice names of this family.
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// A replace of `existing` with `desired`'s contents, unless they already agree.
pub(super) fn replace_slice(
    existing: &EndpointSlice,
    desired: &EndpointSlice,
) -> Option<Upsert<EndpointSlice>> {
    let metadata = merged_meta(&existing.metadata, &desired.metadata);
    let same = existing.address_type == desired.address_type
        && existing.endpoints == desired.endpoints
        && normalized_ports(&existing.ports) == normalized_ports(&desired.ports)
        && metadata == existing.metadata;
    (!same).then(|| {
        Upsert::Replace(EndpointSlice {
            metadata,
            address_type: desired.address_type.clone(),
            endpoints: desired.endpoints.clone(),
            ports: desired.ports.clone(),
        })
    })
}

/// An empty port list and none are the same (the API server may return either).
fn normalized_ports(ports: &Option<Vec<EndpointPort>>) -> Option<&Vec<EndpointPort>> {
    ports.as_ref().filter(|p| !p.is_empty())
}

/// `existing` metadata with `desired`'s labels, annotations and owner references set
/// (other labels and annotations kept: they are not ours to remove).
pub(super) fn merged_meta(existing: &ObjectMeta, desired: &ObjectMeta) -> ObjectMeta {
    let mut metadata = existing.clone();
    let merge = |have: &Option<BTreeMap<String, String>>,
                 want: &Option<BTreeMap<String, String>>| {
        let Some(want) = want else {
            return have.clone();
        };
        let mut merged = have.clone().unwrap_or_default();
        merged.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(merged)
    };
    metadata.labels = merge(&existing.labels, &desired.labels);
    metadata.annotations = merge(&existing.annotations, &desired.annotations);
    if desired.owner_references.is_some() {
        metadata.owner_references = desired.owner_references.clone();
    }
    metadata
}

/// A namespace that exists and is not being deleted.
pub(super) fn is_live_namespace(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

/// The value of label `key`, if set.
pub(super) fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// The object's name (empty when unset).
pub(super) fn name_of<K: Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

/// Whether a broker object says it comes from `cluster_id`.
pub(super) fn is_from(meta: &ObjectMeta, cluster_id: &str) -> bool {
    label(meta, LABEL_SOURCE_CLUSTER) == Some(cluster_id)
}

/// Whether a broker EndpointSlice is one this cluster published.
pub(super) fn is_our_broker_slice(slice: &EndpointSlice, cluster_id: &str) -> bool {
    is_from(&slice.metadata, cluster_id)
        && label(&slice.metadata, ENDPOINTSLICE_MANAGED_BY_LABEL) == Some(ENDPOINTSLICE_MANAGER)
}

/// Whether a local ServiceImport is ours to change.
pub fn is_managed_import(import: &ServiceImport) -> bool {
    label(&import.metadata, MANAGED_LABEL) == Some("true")
}

/// Whether an EndpointSlice is one Causeway wrote (managed by `causeway.dev`, with a
/// source cluster): the only slices it changes or deletes, and never an export's input.
pub fn is_causeway_slice(slice: &EndpointSlice) -> bool {
    label(&slice.metadata, ENDPOINTSLICE_MANAGED_BY_LABEL) == Some(ENDPOINTSLICE_MANAGER)
        && label(&slice.metadata, LABEL_SOURCE_CLUSTER).is_some()
}
