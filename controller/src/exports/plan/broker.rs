//! This cluster's objects at the broker: created or replaced for each valid export,
//! withdrawn when their export is gone; another cluster's objects are never written.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::ServiceImport;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::objects::{is_from, is_our_broker_slice, merged_meta, name_of, replace_slice};
use super::verdict::Verdict;
use super::{Delete, ExportPlan, NameTaken, ObjectKey, Observed, Publish, Upsert};

/// What this cluster has at the broker once the plan is applied, by export.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Our broker ServiceImports (as they will be), by export.
    pub(super) imports: BTreeMap<ObjectKey, ServiceImport>,
    /// Our broker EndpointSlices (as they will be), by export.
    pub(super) slices: BTreeMap<ObjectKey, Vec<EndpointSlice>>,
}

/// Plans our broker objects; returns them as they will be after the plan.
pub(super) fn plan_broker(
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
