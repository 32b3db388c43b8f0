//! The local ServiceImport of every exported service of the clusterset, with a copy of
//! each agreeing cluster's broker slices, owned by it.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::mcs::{ClusterStatus, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::names::{
    imported_endpoint_slice, ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER, MANAGED_LABEL,
};
use causeway_crds::{ServiceImport, ServiceImportSpec, ServiceImportStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::clusterset::ClustersetService;
use super::objects::{is_causeway_slice, is_managed_import, merged_meta, replace_slice, Family};
use super::{Delete, ExportPlan, ImportWrite, NameTaken, ObjectKey, Observed, SliceWrite, Upsert};

/// Plans the local ServiceImports and EndpointSlices.
pub(super) fn plan_imports(
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
