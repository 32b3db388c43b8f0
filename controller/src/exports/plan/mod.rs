//! The export/import planner: what this cluster publishes at the broker, what it
//! imports locally, and what its ServiceExports' conditions say (docs/services.md).
//!
//! Pure: objects in, [`ExportPlan`] out; [`super::apply`] turns the plan into API calls.
//!
//! Rules:
//! - A ServiceExport is *valid* when its Service exists (and is not being deleted)
//!   and is not of type ExternalName. A valid export is published at the broker as a
//!   ServiceImport `<svc>-<ns>-<cluster>` and one EndpointSlice per address family
//!   that has endpoints ([`causeway_crds::names`] cuts long names with a hash).
//! - At the broker only objects labelled with this cluster as their source are ever
//!   created, replaced or deleted; another cluster's objects are read, never written.
//!   Ours are withdrawn (deleted) when their export, Service or namespace is gone.
//! - Every exported service of the clusterset (ours included, as this pass leaves
//!   them at the broker) is imported into its namespace, where that namespace exists:
//!   ServiceImport `<svc>` (label `causeway.dev/managed=true`) with the type, ports and
//!   session affinity of the oldest export (the broker's `creationTimestamp` of the
//!   cluster's ServiceImport there - a time no member can set - then cluster ID),
//!   `status.clusters` the clusters that agree with it, and a copy of every agreeing
//!   cluster's broker slices, owned by the ServiceImport. A conflicting cluster's slices
//!   are not imported (KEP-1645).
//! - Another cluster's endpoints are imported only where its accepted ClusterEndpoint's
//!   pod and service CIDRs hold every address; the rest are reported
//!   ([`ExportPlan::outside_cidrs`]), so a member cannot point a name at addresses it
//!   does not own (docs/security.md).
//! - Locally only ServiceImports labelled `causeway.dev/managed=true` and
//!   EndpointSlices managed by `causeway.dev` with a source cluster are changed or
//!   deleted; an object of another owner holding a name we need is reported, untouched.
//! - Every object is written only when it differs; the ServiceExport conditions
//!   (`Valid`, `Conflict`, `Ready`) likewise, keeping `lastTransitionTime` when a
//!   condition's status does not flip. A pass with nothing to change plans nothing.
//!
//! [`plan_exports`] runs one planner per step, each in its own module: `verdict` judges
//! the local exports, `broker` plans our objects at the broker, `clusterset` merges every
//! cluster's exports and finds their conflicts, `imports` plans the local imports and
//! `status` the exports' conditions; `objects` holds what they all ask of an object.

mod broker;
mod clusterset;
mod imports;
mod objects;
mod status;
mod verdict;

use std::collections::BTreeSet;
use std::fmt;

use causeway_crds::validate::Site;
use causeway_crds::{ServiceExport, ServiceImport, ServiceImportStatus};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;

pub use imports::import_owner;
pub use objects::{is_causeway_slice, is_managed_import};

/// `Valid=True`: the Service exists and can be exported.
pub const REASON_VALID: &str = "Valid";
/// `Valid=False`: the Service of the export does not exist.
pub const REASON_NO_SERVICE: &str = "NoService";
/// `Valid=False`: the Service is of a type that cannot be exported (ExternalName).
pub const REASON_INVALID_SERVICE_TYPE: &str = "InvalidServiceType";
/// `Ready=True`: the export is published at the broker.
pub const REASON_EXPORTED: &str = "Exported";
/// `Ready=False`: the export is not (yet) published.
pub const REASON_PENDING: &str = "Pending";
/// `Conflict=False`: every exporting cluster agrees.
pub const REASON_NO_CONFLICTS: &str = "NoConflicts";
/// `Conflict=True`: the exports disagree on the service type.
pub const REASON_TYPE_CONFLICT: &str = "TypeConflict";
/// `Conflict=True`: the exports disagree on the ports.
pub const REASON_PORT_CONFLICT: &str = "PortConflict";
/// `Conflict=True`: the exports disagree on the session affinity.
pub const REASON_SESSION_AFFINITY_CONFLICT: &str = "SessionAffinityConflict";

/// A namespaced object's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `namespace`/`name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of an object (empty parts when its metadata lacks them).
    pub fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        ObjectKey::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A write of one whole object (its namespace set in its metadata).
#[derive(Debug, Clone, PartialEq)]
pub enum Upsert<K> {
    /// The object does not exist yet: create it.
    Create(K),
    /// The object exists: replace it; `metadata.resourceVersion` is the observed one, so
    /// a concurrent change makes the write fail (409) instead of being lost.
    Replace(K),
}

impl<K: Resource> Upsert<K> {
    /// The object to write.
    pub fn object(&self) -> &K {
        match self {
            Upsert::Create(o) | Upsert::Replace(o) => o,
        }
    }

    /// The object's namespace and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::of(self.object())
    }

    /// `create` or `replace`, for logs and errors.
    pub fn verb(&self) -> &'static str {
        match self {
            Upsert::Create(_) => "create",
            Upsert::Replace(_) => "replace",
        }
    }
}

/// An object to delete, with the resourceVersion it was observed at (a delete precondition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delete {
    /// The object.
    pub key: ObjectKey,
    /// The resourceVersion observed, if any.
    pub resource_version: Option<String>,
}

impl Delete {
    fn of<K: Resource>(obj: &K) -> Self {
        Delete {
            key: ObjectKey::of(obj),
            resource_version: obj.meta().resource_version.clone(),
        }
    }
}

/// A broker write on behalf of one local ServiceExport.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish<K> {
    /// The ServiceExport the object is published for; its `Ready` condition waits for this write.
    pub export: ObjectKey,
    /// The write.
    pub upsert: Upsert<K>,
}

/// A local ServiceImport to write: the object, its status, or both (object first).
#[derive(Debug, Clone, PartialEq)]
pub struct ImportWrite {
    /// The ServiceImport.
    pub key: ObjectKey,
    /// The object, when it is missing or differs.
    pub upsert: Option<Upsert<ServiceImport>>,
    /// Its status, when it differs (always after a create: create drops status).
    pub status: Option<ServiceImportStatus>,
}

/// A local EndpointSlice to write, owned by the ServiceImport of its service.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceWrite {
    /// The write; its owner reference carries the owner's uid when it is known.
    pub upsert: Upsert<EndpointSlice>,
    /// The owning ServiceImport when it is created by this same pass: its uid is only
    /// known once it exists, and the slice is written with it then (or not at all).
    pub owner_created_now: Option<ObjectKey>,
}

/// New conditions for a local ServiceExport.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportStatusWrite {
    /// The ServiceExport.
    pub export: ObjectKey,
    /// Its whole `status.conditions` (conditions of other types kept as they are).
    pub conditions: Vec<Condition>,
}

/// An object Causeway would write, held by someone else: reported, never touched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameTaken {
    /// `ServiceImport` or `EndpointSlice`.
    pub kind: &'static str,
    /// Whether it is at the broker (else local).
    pub at_broker: bool,
    /// The object.
    pub key: ObjectKey,
}

/// What one export/import pass should change.
///
/// [`ExportPlan::is_noop`] is true when nothing is to be written; `name_taken`,
/// `skipped` and `ignored` are reports that persist as long as their cause does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportPlan {
    /// This cluster's ServiceImports to create or replace at the broker.
    pub broker_imports: Vec<Publish<ServiceImport>>,
    /// This cluster's EndpointSlices to create or replace at the broker.
    pub broker_slices: Vec<Publish<EndpointSlice>>,
    /// This cluster's broker ServiceImports whose export is withdrawn.
    pub broker_import_deletes: Vec<Delete>,
    /// This cluster's broker EndpointSlices whose export (or address family) is withdrawn.
    pub broker_slice_deletes: Vec<Delete>,
    /// Local ServiceImports to write.
    pub imports: Vec<ImportWrite>,
    /// Local EndpointSlices to write (after the ServiceImports).
    pub slices: Vec<SliceWrite>,
    /// Local ServiceImports (ours) whose service is no longer exported anywhere.
    pub import_deletes: Vec<Delete>,
    /// Local EndpointSlices (ours) no longer at the broker or of a conflicting cluster.
    pub slice_deletes: Vec<Delete>,
    /// ServiceExport conditions to write (after the broker writes of the same export).
    pub export_status: Vec<ExportStatusWrite>,
    /// Names we need that another owner holds.
    pub name_taken: Vec<NameTaken>,
    /// Services not imported because their namespace does not exist here: `ns/svc`.
    pub skipped: Vec<ObjectKey>,
    /// Broker objects without the labels that say which service and cluster they are for.
    pub ignored: Vec<ObjectKey>,
    /// Another cluster's endpoints not imported: an address outside its accepted CIDRs.
    pub outside_cidrs: Vec<OutsideCidrs>,
}

/// Endpoints of another cluster's broker slice that lie outside that cluster's CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutsideCidrs {
    /// The cluster that published the slice.
    pub cluster: String,
    /// The slice at the broker.
    pub slice: ObjectKey,
    /// The addresses not imported.
    pub addresses: Vec<String>,
    /// Whether the cluster has an accepted ClusterEndpoint at all (if not, none of its
    /// addresses can be checked, so none is imported).
    pub cluster_known: bool,
}

impl fmt::Display for OutsideCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cluster_known {
            write!(
                f,
                "EndpointSlice {} of cluster {} lists {} outside that cluster's pod and service CIDRs; not imported (a cluster's endpoints must be its own addresses)",
                self.slice,
                self.cluster,
                self.addresses.join(", ")
            )
        } else {
            write!(
                f,
                "EndpointSlice {} of cluster {} is not imported: that cluster has no accepted ClusterEndpoint at the broker, so its addresses ({}) cannot be checked against its CIDRs",
                self.slice,
                self.cluster,
                self.addresses.join(", ")
            )
        }
    }
}

impl ExportPlan {
    /// Whether applying the plan writes nothing.
    pub fn is_noop(&self) -> bool {
        self.writes() == 0
    }

    /// How many writes applying the plan makes (a ServiceImport and its status count as two).
    pub fn writes(&self) -> usize {
        self.broker_imports.len()
            + self.broker_slices.len()
            + self.broker_import_deletes.len()
            + self.broker_slice_deletes.len()
            + self
                .imports
                .iter()
                .map(|w| usize::from(w.upsert.is_some()) + usize::from(w.status.is_some()))
                .sum::<usize>()
            + self.slices.len()
            + self.import_deletes.len()
            + self.slice_deletes.len()
            + self.export_status.len()
    }
}

/// Everything a pass reads, listed once per pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// Local ServiceExports, all namespaces.
    pub exports: &'a [ServiceExport],
    /// Local Services, all namespaces.
    pub services: &'a [Service],
    /// Local EndpointSlices, all namespaces (the Services' own and Causeway's imports).
    pub slices: &'a [EndpointSlice],
    /// Local Namespaces.
    pub namespaces: &'a [Namespace],
    /// Local ServiceImports, all namespaces.
    pub imports: &'a [ServiceImport],
    /// ServiceImports in the broker namespace (every cluster's).
    pub broker_imports: &'a [ServiceImport],
    /// EndpointSlices in the broker namespace (every cluster's).
    pub broker_slices: &'a [EndpointSlice],
    /// The clusterset's accepted ClusterEndpoints, judged together as the sync judges
    /// them ([`causeway_crds::validate::validate_clusterset`]).
    pub sites: &'a [Site],
}

/// Plans one pass for cluster `cluster_id`, whose broker objects go to
/// `broker_namespace`; `now` stamps conditions whose status flips.
pub fn plan_exports(
    cluster_id: &str,
    broker_namespace: &str,
    observed: &Observed<'_>,
    now: &Time,
) -> ExportPlan {
    let mut plan = ExportPlan::default();
    let live_namespaces: BTreeSet<&str> = observed
        .namespaces
        .iter()
        .filter(|ns| objects::is_live_namespace(ns))
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();

    // 1. Our exports: valid or not, and what each publishes.
    let verdicts = verdict::judge_exports(cluster_id, broker_namespace, observed, &live_namespaces);

    // 2. Our objects at the broker.
    let published = broker::plan_broker(&mut plan, cluster_id, observed, &verdicts);

    // 3. The clusterset as this pass leaves the broker: others' objects and ours.
    let services = clusterset::clusterset(&mut plan, cluster_id, observed, &published);

    // 4. Local imports.
    imports::plan_imports(&mut plan, observed, &live_namespaces, &services);

    // 5. Our exports' conditions.
    status::plan_export_status(&mut plan, cluster_id, &verdicts, &published, &services, now);

    plan.name_taken.sort();
    plan.name_taken.dedup();
    plan.skipped.sort();
    plan.ignored.sort();
    plan.outside_cidrs.sort();
    plan
}

#[cfg(test)]
mod tests;
