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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use causeway_crds::mcs::{
    ClusterStatus, ServicePort, CONDITION_CONFLICT, CONDITION_READY, CONDITION_VALID,
    LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER,
};
use causeway_crds::names::{
    broker_endpoint_slice, broker_service_import, imported_endpoint_slice,
    ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER, KUBERNETES_SERVICE_NAME_LABEL,
    MANAGED_LABEL, SERVICE_NAMESPACE_LABEL,
};
use causeway_crds::validate::Site;
use causeway_crds::{
    ServiceExport, ServiceImport, ServiceImportSpec, ServiceImportStatus, ServiceImportType,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

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
        .filter(|ns| is_live_namespace(ns))
        .filter_map(|ns| ns.metadata.name.as_deref())
        .collect();

    // 1. Our exports: valid or not, and what each publishes.
    let verdicts = judge_exports(cluster_id, broker_namespace, observed, &live_namespaces);

    // 2. Our objects at the broker.
    let published = plan_broker(&mut plan, cluster_id, observed, &verdicts);

    // 3. The clusterset as this pass leaves the broker: others' objects and ours.
    let services = clusterset(&mut plan, cluster_id, observed, &published);

    // 4. Local imports.
    plan_imports(&mut plan, observed, &live_namespaces, &services);

    // 5. Our exports' conditions.
    plan_export_status(&mut plan, cluster_id, &verdicts, &published, &services, now);

    plan.name_taken.sort();
    plan.name_taken.dedup();
    plan.skipped.sort();
    plan.ignored.sort();
    plan.outside_cidrs.sort();
    plan
}

/// What one local ServiceExport amounts to.
#[derive(Debug)]
struct Verdict<'a> {
    export: &'a ServiceExport,
    key: ObjectKey,
    outcome: Result<Desired, Invalid>,
}

/// Why an export is not valid: a `Valid=False` reason and message.
#[derive(Debug, Clone)]
struct Invalid {
    reason: &'static str,
    message: String,
}

/// What a valid export publishes at the broker.
#[derive(Debug, Clone)]
struct Desired {
    import: ServiceImport,
    slices: Vec<EndpointSlice>,
}

fn judge_exports<'a>(
    cluster_id: &str,
    broker_namespace: &str,
    observed: &Observed<'a>,
    live_namespaces: &BTreeSet<&str>,
) -> Vec<Verdict<'a>> {
    let services: BTreeMap<ObjectKey, &Service> = observed
        .services
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| (ObjectKey::of(s), s))
        .collect();
    // The Services' own slices (not Causeway's imports), by Service.
    let mut own_slices: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in observed.slices {
        if is_causeway_slice(slice) {
            continue;
        }
        if let Some(service) = label(&slice.metadata, KUBERNETES_SERVICE_NAME_LABEL) {
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            own_slices
                .entry(ObjectKey::new(ns, service))
                .or_default()
                .push(slice);
        }
    }
    let mut verdicts: Vec<Verdict<'a>> = observed
        .exports
        .iter()
        .filter(|e| e.metadata.deletion_timestamp.is_none())
        .filter(|e| live_namespaces.contains(e.metadata.namespace.as_deref().unwrap_or_default()))
        .map(|export| {
            let key = ObjectKey::of(export);
            let outcome = match services.get(&key) {
                None => Err(Invalid {
                    reason: REASON_NO_SERVICE,
                    message: format!(
                        "Service {key} does not exist; create it, or delete this ServiceExport"
                    ),
                }),
                Some(service) if service_type(service) == "ExternalName" => Err(Invalid {
                    reason: REASON_INVALID_SERVICE_TYPE,
                    message: format!(
                        "Service {key} is of type ExternalName, which has no endpoints to export; \
                         export a ClusterIP or headless Service instead"
                    ),
                }),
                Some(service) => Ok(desired(
                    cluster_id,
                    broker_namespace,
                    export,
                    service,
                    own_slices.get(&key).map(Vec::as_slice).unwrap_or_default(),
                )),
            };
            Verdict {
                export,
                key,
                outcome,
            }
        })
        .collect();
    verdicts.sort_by(|a, b| a.key.cmp(&b.key));
    verdicts
}

fn service_type(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The broker objects a valid export publishes.
fn desired(
    cluster_id: &str,
    broker_namespace: &str,
    export: &ServiceExport,
    service: &Service,
    own_slices: &[&EndpointSlice],
) -> Desired {
    let key = ObjectKey::of(export);
    let spec = service.spec.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            // The API server defaults both; an unset one means the default.
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
            app_protocol: p.app_protocol.clone(),
            port: p.port,
        })
        .collect();
    let ips: Vec<String> = if headless {
        Vec::new()
    } else {
        let mut ips = spec.cluster_ips.clone().unwrap_or_default();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.clone());
        }
        ips.retain(|ip| ip.parse::<IpAddr>().is_ok());
        ips
    };
    let session_affinity = spec
        .session_affinity
        .clone()
        .unwrap_or_else(|| "None".to_owned());
    let session_affinity_config = spec
        .session_affinity_config
        .clone()
        .filter(|_| session_affinity == "ClientIP");
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), key.name.clone());
    labels.insert(SERVICE_NAMESPACE_LABEL.to_owned(), key.namespace.clone());
    labels.insert(LABEL_SOURCE_CLUSTER.to_owned(), cluster_id.to_owned());
    let import = ServiceImport {
        metadata: ObjectMeta {
            name: Some(broker_service_import(&key.name, &key.namespace, cluster_id)),
            namespace: Some(broker_namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: ServiceImportSpec {
            ports: ports.clone(),
            ips: ips.clone(),
            type_: if headless {
                ServiceImportType::Headless
            } else {
                ServiceImportType::ClusterSetIP
            },
            session_affinity: Some(session_affinity),
            session_affinity_config,
        },
        status: None,
    };

    // Endpoints per address family.
    let mut by_family: BTreeMap<Family, Vec<Endpoint>> = BTreeMap::new();
    let backends = own_slices.iter().flat_map(|s| s.endpoints.iter());
    if headless {
        let mut seen: BTreeSet<(Family, Vec<String>)> = BTreeSet::new();
        for slice in own_slices {
            let Some(family) = Family::of_address_type(&slice.address_type) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                // One endpoint can sit in two slices while they are being rebalanced.
                if endpoint.addresses.is_empty()
                    || !seen.insert((family, endpoint.addresses.clone()))
                {
                    continue;
                }
                by_family.entry(family).or_default().push(Endpoint {
                    addresses: endpoint.addresses.clone(),
                    conditions: Some(EndpointConditions {
                        ready: Some(is_ready(endpoint)),
                        ..EndpointConditions::default()
                    }),
                    hostname: endpoint.hostname.clone(),
                    target_ref: endpoint.target_ref.clone(),
                    ..Endpoint::default()
                });
            }
        }
    } else {
        let ready = backends.clone().any(is_ready);
        for ip in &ips {
            let Ok(addr) = ip.parse::<IpAddr>() else {
                continue;
            };
            by_family
                .entry(Family::of(addr))
                .or_default()
                .push(Endpoint {
                    addresses: vec![ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                });
        }
    }
    let endpoint_ports = endpoint_ports(&ports);
    let mut slice_labels = labels;
    slice_labels.insert(
        ENDPOINTSLICE_MANAGED_BY_LABEL.to_owned(),
        ENDPOINTSLICE_MANAGER.to_owned(),
    );
    let slices = by_family
        .into_iter()
        .map(|(family, mut endpoints)| {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(broker_endpoint_slice(
                        &key.name,
                        &key.namespace,
                        cluster_id,
                        family.suffix(),
                    )),
                    namespace: Some(broker_namespace.to_owned()),
                    labels: Some(slice_labels.clone()),
                    ..ObjectMeta::default()
                },
                address_type: family.address_type().to_owned(),
                endpoints,
                ports: endpoint_ports.clone(),
            }
        })
        .collect();
    Desired { import, slices }
}

/// An endpoint whose readiness is unknown counts as ready, as Kubernetes asks of consumers.
fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

/// The Service's ports as EndpointSlice ports, in the form the API server stores them
/// (name and protocol defaulted), so a re-read compares equal.
fn endpoint_ports(ports: &[ServicePort]) -> Option<Vec<EndpointPort>> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".to_owned())),
                app_protocol: p.app_protocol.clone(),
                port: Some(p.port),
            })
            .collect()
    })
}

/// An address family of EndpointSlices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `None` for FQDN slices, which carry no addresses to import.
    fn of_address_type(address_type: &str) -> Option<Self> {
        match address_type {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// What this cluster has at the broker once the plan is applied, by export.
#[derive(Debug, Default)]
struct Published {
    /// Our broker ServiceImports (as they will be), by export.
    imports: BTreeMap<ObjectKey, ServiceImport>,
    /// Our broker EndpointSlices (as they will be), by export.
    slices: BTreeMap<ObjectKey, Vec<EndpointSlice>>,
}

/// Plans our broker objects; returns them as they will be after the plan.
fn plan_broker(
    plan: &mut ExportPlan,
    cluster_id: &str,
    observed: &Observed<'_>,
    verdicts: &[Verdict<'_>],
) -> Published {
    let broker_imports: BTreeMap<String, &ServiceImport> = observed
        .broker_imports
        .iter()
        .map(|o| (name_of(o), o))
        .collect();
    let broker_slices: BTreeMap<String, &EndpointSlice> = observed
        .broker_slices
        .iter()
        .map(|o| (name_of(o), o))
        .collect();
    let mut published = Published::default();
    let mut wanted_imports: BTreeSet<String> = BTreeSet::new();
    let mut wanted_slices: BTreeSet<String> = BTreeSet::new();
    for verdict in verdicts {
        let Ok(desired) = &verdict.outcome else {
            continue;
        };
        let name = name_of(&desired.import);
        wanted_imports.insert(name.clone());
        let upsert = match broker_imports.get(&name) {
            None => Some(Upsert::Create(desired.import.clone())),
            Some(existing) if !is_from(&existing.metadata, cluster_id) => {
                plan.name_taken.push(NameTaken {
                    kind: "ServiceImport",
                    at_broker: true,
                    key: ObjectKey::of(*existing),
                });
                // Not published: nothing of this export goes to the broker.
                continue;
            }
            Some(existing) => {
                let metadata = merged_meta(&existing.metadata, &desired.import.metadata);
                (existing.spec != desired.import.spec || metadata != existing.metadata).then(|| {
                    Upsert::Replace(ServiceImport {
                        metadata,
                        spec: desired.import.spec.clone(),
                        status: existing.status.clone(),
                    })
                })
            }
        };
        published.imports.insert(
            verdict.key.clone(),
            upsert
                .as_ref()
                .map(|u| u.object().clone())
                .or_else(|| broker_imports.get(&name).map(|o| (*o).clone()))
                .unwrap_or_else(|| desired.import.clone()),
        );
        if let Some(upsert) = upsert {
            plan.broker_imports.push(Publish {
                export: verdict.key.clone(),
                upsert,
            });
        }
        let mut slices_after = Vec::new();
        for slice in &desired.slices {
            let name = name_of(slice);
            wanted_slices.insert(name.clone());
            let upsert = match broker_slices.get(&name) {
                None => Some(Upsert::Create(slice.clone())),
                Some(existing) if !is_our_broker_slice(existing, cluster_id) => {
                    plan.name_taken.push(NameTaken {
                        kind: "EndpointSlice",
                        at_broker: true,
                        key: ObjectKey::of(*existing),
                    });
                    continue;
                }
                Some(existing) => replace_slice(existing, slice),
            };
            slices_after.push(
                upsert
                    .as_ref()
                    .map(|u| u.object().clone())
                    .unwrap_or_else(|| slice.clone()),
            );
            if let Some(upsert) = upsert {
                plan.broker_slices.push(Publish {
                    export: verdict.key.clone(),
                    upsert,
                });
            }
        }
        published.slices.insert(verdict.key.clone(), slices_after);
    }
    plan.broker_import_deletes = observed
        .broker_imports
        .iter()
        .filter(|o| is_from(&o.metadata, cluster_id))
        .filter(|o| !wanted_imports.contains(&name_of(*o)))
        .map(Delete::of)
        .collect();
    plan.broker_slice_deletes = observed
        .broker_slices
        .iter()
        .filter(|o| is_our_broker_slice(o, cluster_id))
        .filter(|o| !wanted_slices.contains(&name_of(*o)))
        .map(Delete::of)
        .collect();
    plan.broker_import_deletes.sort();
    plan.broker_slice_deletes.sort();
    published
}

/// A replace of `existing` with `desired`'s contents, unless they already agree.
fn replace_slice(
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
fn merged_meta(existing: &ObjectMeta, desired: &ObjectMeta) -> ObjectMeta {
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

/// One cluster's export of a service, as the broker holds it (after this pass).
#[derive(Debug, Clone)]
struct ClusterExport {
    cluster: String,
    exported_at: Option<Timestamp>,
    spec: ServiceImportSpec,
    slices: Vec<EndpointSlice>,
}

/// How one cluster's export disagrees with the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Disagreement {
    /// Condition reason for the field.
    reason: &'static str,
    /// The field, as a person reads it.
    field: &'static str,
    /// The oldest export's value.
    winner_value: String,
    /// This cluster's value.
    value: String,
}

/// One exported service of the clusterset.
#[derive(Debug, Clone)]
struct ClustersetService {
    /// Every cluster's export, oldest first: the first is the winner.
    exports: Vec<ClusterExport>,
    /// Per cluster (the winner aside), how its export disagrees with the winner's.
    conflicts: BTreeMap<String, Vec<Disagreement>>,
}

impl ClustersetService {
    fn winner(&self) -> &ClusterExport {
        // Only built with at least one export.
        &self.exports[0]
    }

    fn agrees(&self, cluster: &str) -> bool {
        !self.conflicts.contains_key(cluster)
    }
}

/// Every exported service of the clusterset by `ns/svc`, from the other clusters'
/// broker objects and ours as this pass leaves them.
fn clusterset(
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

/// Plans the local ServiceImports and EndpointSlices.
fn plan_imports(
    plan: &mut ExportPlan,
    observed: &Observed<'_>,
    live_namespaces: &BTreeSet<&str>,
    services: &BTreeMap<ObjectKey, ClustersetService>,
) {
    let imports: BTreeMap<ObjectKey, &ServiceImport> = observed
        .imports
        .iter()
        .map(|o| (ObjectKey::of(o), o))
        .collect();
    let slices: BTreeMap<ObjectKey, &EndpointSlice> = observed
        .slices
        .iter()
        .map(|o| (ObjectKey::of(o), o))
        .collect();
    let mut wanted_imports: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut wanted_slices: BTreeSet<ObjectKey> = BTreeSet::new();
    for (key, service) in services {
        if !live_namespaces.contains(key.namespace.as_str()) {
            plan.skipped.push(key.clone());
            continue;
        }
        wanted_imports.insert(key.clone());
        let existing = imports.get(key).copied();
        if let Some(other) = existing.filter(|o| !is_managed_import(o)) {
            plan.name_taken.push(NameTaken {
                kind: "ServiceImport",
                at_broker: false,
                key: ObjectKey::of(other),
            });
            continue;
        }
        let winner = service.winner();
        let mut labels = BTreeMap::new();
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let desired_meta = ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        let spec = ServiceImportSpec {
            ports: winner.spec.ports.clone(),
            // Causeway allocates no clusterset VIP: DNS answers with ClusterIPs.
            ips: Vec::new(),
            type_: winner.spec.type_,
            session_affinity: winner.spec.session_affinity.clone(),
            session_affinity_config: winner.spec.session_affinity_config.clone(),
        };
        let mut clusters: Vec<ClusterStatus> = service
            .exports
            .iter()
            .filter(|e| service.agrees(&e.cluster))
            .map(|e| ClusterStatus {
                cluster: e.cluster.clone(),
            })
            .collect();
        clusters.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        let status = ServiceImportStatus { clusters };
        let (upsert, status_write) = match existing {
            None => (
                Some(Upsert::Create(ServiceImport {
                    metadata: desired_meta,
                    spec,
                    status: None,
                })),
                Some(status),
            ),
            Some(existing) => {
                let metadata = merged_meta(&existing.metadata, &desired_meta);
                let upsert = (existing.spec != spec || metadata != existing.metadata).then(|| {
                    Upsert::Replace(ServiceImport {
                        metadata,
                        spec,
                        status: existing.status.clone(),
                    })
                });
                let current = existing.status.clone().unwrap_or_default();
                (upsert, (current != status).then_some(status))
            }
        };
        let owner_uid = existing.and_then(|o| o.metadata.uid.clone());
        if upsert.is_some() || status_write.is_some() {
            plan.imports.push(ImportWrite {
                key: key.clone(),
                upsert,
                status: status_write,
            });
        }

        // The agreeing clusters' slices.
        for export in service
            .exports
            .iter()
            .filter(|e| service.agrees(&e.cluster))
        {
            for broker_slice in &export.slices {
                let Some(family) = Family::of_address_type(&broker_slice.address_type) else {
                    continue;
                };
                let slice_key = ObjectKey::new(
                    &key.namespace,
                    &imported_endpoint_slice(&key.name, &export.cluster, family.suffix()),
                );
                if !wanted_slices.insert(slice_key.clone()) {
                    continue;
                }
                let desired = imported_slice(
                    &slice_key,
                    key,
                    &export.cluster,
                    broker_slice,
                    owner_uid.as_deref(),
                );
                let owner_created_now = owner_uid.is_none().then(|| key.clone());
                let upsert = match slices.get(&slice_key) {
                    None => Some(Upsert::Create(desired)),
                    Some(existing) if !is_causeway_slice(existing) => {
                        plan.name_taken.push(NameTaken {
                            kind: "EndpointSlice",
                            at_broker: false,
                            key: slice_key.clone(),
                        });
                        continue;
                    }
                    Some(existing) => replace_slice(existing, &desired),
                };
                if let Some(upsert) = upsert {
                    plan.slices.push(SliceWrite {
                        upsert,
                        owner_created_now,
                    });
                }
            }
        }
    }
    plan.import_deletes = observed
        .imports
        .iter()
        .filter(|o| is_managed_import(o))
        .filter(|o| !wanted_imports.contains(&ObjectKey::of(*o)))
        .map(Delete::of)
        .collect();
    plan.slice_deletes = observed
        .slices
        .iter()
        .filter(|o| is_causeway_slice(o))
        .filter(|o| !wanted_slices.contains(&ObjectKey::of(*o)))
        .map(Delete::of)
        .collect();
    plan.import_deletes.sort();
    plan.slice_deletes.sort();
}

/// The local copy of a cluster's broker slice, owned by the ServiceImport `import`
/// (uid `None`: created this pass, filled in by the apply layer).
fn imported_slice(
    key: &ObjectKey,
    import: &ObjectKey,
    cluster: &str,
    broker_slice: &EndpointSlice,
    owner_uid: Option<&str>,
) -> EndpointSlice {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_SERVICE_NAME.to_owned(), import.name.clone());
    labels.insert(LABEL_SOURCE_CLUSTER.to_owned(), cluster.to_owned());
    labels.insert(
        ENDPOINTSLICE_MANAGED_BY_LABEL.to_owned(),
        ENDPOINTSLICE_MANAGER.to_owned(),
    );
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![import_owner(
                &import.name,
                owner_uid.unwrap_or_default(),
            )]),
            ..ObjectMeta::default()
        },
        address_type: broker_slice.address_type.clone(),
        endpoints: broker_slice.endpoints.clone(),
        ports: broker_slice.ports.clone(),
    }
}

/// The owner reference of an imported slice to its ServiceImport.
pub fn import_owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "multicluster.x-k8s.io/v1alpha1".to_owned(),
        kind: "ServiceImport".to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Plans the conditions of every live local ServiceExport.
fn plan_export_status(
    plan: &mut ExportPlan,
    cluster_id: &str,
    verdicts: &[Verdict<'_>],
    published: &Published,
    services: &BTreeMap<ObjectKey, ClustersetService>,
    now: &Time,
) {
    for verdict in verdicts {
        let mut wanted: Vec<(&'static str, bool, String, String)> = Vec::new();
        match &verdict.outcome {
            Err(invalid) => {
                wanted.push((
                    CONDITION_VALID,
                    false,
                    invalid.reason.to_owned(),
                    invalid.message.clone(),
                ));
                wanted.push((
                    CONDITION_READY,
                    false,
                    REASON_PENDING.to_owned(),
                    format!("not exported: {}", invalid.message),
                ));
            }
            Ok(desired) => {
                wanted.push((
                    CONDITION_VALID,
                    true,
                    REASON_VALID.to_owned(),
                    format!("Service {} can be exported", verdict.key),
                ));
                match published.imports.get(&verdict.key) {
                    None => wanted.push((
                        CONDITION_READY,
                        false,
                        REASON_PENDING.to_owned(),
                        format!(
                            "not exported: ServiceImport {} at the broker belongs to another cluster; \
                             rename the Service or fix that object",
                            name_of(&desired.import)
                        ),
                    )),
                    Some(import) => {
                        wanted.push((
                            CONDITION_READY,
                            true,
                            REASON_EXPORTED.to_owned(),
                            format!(
                                "exported to the clusterset as ServiceImport {} at the broker",
                                name_of(import)
                            ),
                        ));
                        if let Some(service) = services.get(&verdict.key) {
                            let (conflict, reason, message) = conflict_condition(cluster_id, service);
                            wanted.push((CONDITION_CONFLICT, conflict, reason, message));
                        }
                    }
                }
            }
        }
        let current = verdict
            .export
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let conditions = merge_conditions(&current, &wanted, now);
        if conditions != current {
            plan.export_status.push(ExportStatusWrite {
                export: verdict.key.clone(),
                conditions,
            });
        }
    }
}

/// The `Conflict` condition of this cluster's export of `service`: status, reason, message.
fn conflict_condition(cluster_id: &str, service: &ClustersetService) -> (bool, String, String) {
    let winner = service.winner();
    let when = |e: &ClusterExport| {
        e.exported_at
            .map(|t| format!("exported at {}", rfc3339(&t)))
            .unwrap_or_else(|| "export time unknown".to_owned())
    };
    let (reasons, message): (Vec<&'static str>, String) = if winner.cluster == cluster_id {
        let mut reasons = Vec::new();
        let mut parts = Vec::new();
        for (cluster, found) in &service.conflicts {
            for d in found {
                reasons.push(d.reason);
                parts.push(format!(
                    "{}: cluster {cluster} exports {}, but this cluster ({cluster_id}, {}) is the oldest export and wins with {}",
                    d.field, d.value, when(winner), d.winner_value
                ));
            }
        }
        let losers: Vec<&str> = service.conflicts.keys().map(String::as_str).collect();
        (
            reasons,
            format!(
                "{}; the endpoints of {} are not imported until their Services agree with this one",
                parts.join("; "),
                losers.join(", ")
            ),
        )
    } else {
        let found = service
            .conflicts
            .get(cluster_id)
            .cloned()
            .unwrap_or_default();
        let reasons = found.iter().map(|d| d.reason).collect();
        let parts: Vec<String> = found
            .iter()
            .map(|d| {
                format!(
                    "{}: this cluster ({cluster_id}) exports {}, but the oldest export, cluster {} ({}), has {} and wins",
                    d.field,
                    d.value,
                    winner.cluster,
                    when(winner),
                    d.winner_value
                )
            })
            .collect();
        (
            reasons,
            format!(
                "{}; this cluster's endpoints are not imported anywhere until the Service agrees with cluster {}'s, or is unexported",
                parts.join("; "),
                winner.cluster
            ),
        )
    };
    if reasons.is_empty() {
        return (
            false,
            REASON_NO_CONFLICTS.to_owned(),
            "every exporting cluster agrees on type, ports and session affinity".to_owned(),
        );
    }
    // In a fixed order, each once.
    let joined: Vec<&str> = [
        REASON_TYPE_CONFLICT,
        REASON_PORT_CONFLICT,
        REASON_SESSION_AFFINITY_CONFLICT,
    ]
    .into_iter()
    .filter(|r| reasons.contains(r))
    .collect();
    (true, joined.join(","), message)
}

/// `current` with each of `wanted` (type, status, reason, message) set: other types
/// kept in place, ours in order; `lastTransitionTime` kept unless the status flips.
fn merge_conditions(
    current: &[Condition],
    wanted: &[(&'static str, bool, String, String)],
    now: &Time,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = current.to_vec();
    for (type_, status, reason, message) in wanted {
        let status = if *status { "True" } else { "False" };
        let position = merged.iter().position(|c| c.type_ == *type_);
        let last_transition_time = match position.map(|i| &merged[i]) {
            Some(previous) if previous.status == status => previous.last_transition_time.clone(),
            _ => now.clone(),
        };
        let condition = Condition {
            type_: (*type_).to_owned(),
            status: status.to_owned(),
            reason: reason.clone(),
            message: message.clone(),
            last_transition_time,
            observed_generation: position.and_then(|i| merged[i].observed_generation),
        };
        match position {
            Some(i) => merged[i] = condition,
            None => merged.push(condition),
        }
    }
    // A Conflict condition about an export that is no longer published is stale.
    if !wanted.iter().any(|(t, ..)| *t == CONDITION_CONFLICT) {
        merged.retain(|c| c.type_ != CONDITION_CONFLICT);
    }
    merged
}

/// RFC 3339 with whole seconds, as `metav1.Time` is written.
fn rfc3339(t: &Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(*t)
        .to_string()
}

/// A namespace that exists and is not being deleted.
fn is_live_namespace(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn name_of<K: Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

/// Whether a broker object says it comes from `cluster_id`.
fn is_from(meta: &ObjectMeta, cluster_id: &str) -> bool {
    label(meta, LABEL_SOURCE_CLUSTER) == Some(cluster_id)
}

fn is_our_broker_slice(slice: &EndpointSlice, cluster_id: &str) -> bool {
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

#[cfg(test)]
mod tests;
