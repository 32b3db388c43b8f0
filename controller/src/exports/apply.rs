//! Applies an [`ExportPlan`] through the Kubernetes API: the broker for this cluster's
//! published objects, the local cluster for imports and ServiceExport conditions. No
//! decisions here beyond how to write and in which order:
//!
//! 1. broker ServiceImports and EndpointSlices (created or replaced), then withdrawals;
//! 2. local ServiceImports, then their status (a create drops status);
//! 3. local EndpointSlices, owned by their ServiceImport (whose uid a create in step 2
//!    has just given), then local deletions;
//! 4. ServiceExport conditions, except for exports whose broker writes failed (their
//!    `Ready` would claim a publication that did not happen; the next pass retries).
//!
//! Writes of one step run [`CONCURRENCY`] at a time: a cold start with a thousand
//! exports is thousands of writes, and one at a time would take seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use causeway_crds::names::CONTROLLER_FIELD_MANAGER;
use causeway_crds::{ServiceExport, ServiceImport};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::{debug, info, warn};

use super::plan::{import_owner, Delete, ExportPlan, ObjectKey, SliceWrite, Upsert};
use super::ExportError;
use crate::sync::Side;

/// How many writes of one step are in flight at once.
pub const CONCURRENCY: usize = 16;

/// What one export/import pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Broker ServiceImports and EndpointSlices created or replaced.
    pub published: usize,
    /// Broker ServiceImports and EndpointSlices deleted (exports withdrawn).
    pub withdrawn: usize,
    /// Local ServiceImports created or replaced.
    pub imports_written: usize,
    /// Local ServiceImport statuses written.
    pub import_status_written: usize,
    /// Local EndpointSlices created or replaced.
    pub slices_written: usize,
    /// Local ServiceImports and EndpointSlices deleted.
    pub local_deleted: usize,
    /// ServiceExport conditions written.
    pub conditions_written: usize,
    /// Names we need that another owner holds (reported, not written).
    pub name_taken: usize,
    /// Services not imported because their namespace does not exist here.
    pub skipped: usize,
}

impl ExportReport {
    /// Whether the pass wrote anything.
    pub fn wrote(&self) -> bool {
        self.published
            + self.withdrawn
            + self.imports_written
            + self.import_status_written
            + self.slices_written
            + self.local_deleted
            + self.conditions_written
            > 0
    }
}

/// Where the writes go.
#[derive(Clone, Copy)]
pub struct Clients<'a> {
    /// The broker.
    pub broker: &'a Client,
    /// This cluster.
    pub local: &'a Client,
}

impl Clients<'_> {
    fn client(&self, side: Side) -> &Client {
        match side {
            Side::Broker => self.broker,
            Side::Local => self.local,
        }
    }
}

/// Applies `plan`. Every write is attempted (in the order of the module docs); if any
/// failed, the first failure is returned with how many failed, and the next pass
/// retries from fresh state.
pub async fn apply_plan(
    plan: &ExportPlan,
    clients: Clients<'_>,
) -> Result<ExportReport, ExportError> {
    let mut report = ExportReport {
        name_taken: plan.name_taken.len(),
        skipped: plan.skipped.len(),
        ..ExportReport::default()
    };
    let mut failures: Vec<ExportError> = Vec::new();
    for taken in &plan.name_taken {
        warn!(
            kind = taken.kind,
            object = %taken.key,
            at = %if taken.at_broker { Side::Broker } else { Side::Local },
            "an object Causeway needs to write has this name but is not Causeway's; it is left alone — rename or remove it"
        );
    }
    for key in &plan.ignored {
        debug!(object = %key, "broker object without service, namespace and source-cluster labels; ignored");
    }
    for key in &plan.skipped {
        debug!(service = %key, "not imported: the namespace does not exist in this cluster");
    }

    // 1. Broker: publish, then withdraw.
    let mut failed_exports: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut writes: Vec<BoxFuture<'_, (ObjectKey, Result<(), ExportError>)>> = Vec::new();
    for p in &plan.broker_imports {
        writes.push(Box::pin(async move {
            let result = upsert_one(clients, Side::Broker, &p.upsert).await;
            (p.export.clone(), result.map(|_| ()))
        }));
    }
    for p in &plan.broker_slices {
        writes.push(Box::pin(async move {
            let result = upsert_one(clients, Side::Broker, &p.upsert).await;
            (p.export.clone(), result.map(|_| ()))
        }));
    }
    for (export, result) in all(writes).await {
        match result {
            Ok(()) => report.published += 1,
            Err(e) => {
                failed_exports.insert(export);
                failures.push(e);
            }
        }
    }
    report.withdrawn += delete_all::<EndpointSlice>(
        clients,
        Side::Broker,
        &plan.broker_slice_deletes,
        &mut failures,
    )
    .await;
    report.withdrawn += delete_all::<ServiceImport>(
        clients,
        Side::Broker,
        &plan.broker_import_deletes,
        &mut failures,
    )
    .await;
    if report.published + report.withdrawn > 0 {
        info!(
            published = report.published,
            withdrawn = report.withdrawn,
            "updated this cluster's exports at the broker"
        );
    }

    // 2. Local ServiceImports, then their status.
    let mut writes: Vec<BoxFuture<'_, (ObjectKey, ImportWritten)>> = Vec::new();
    for w in &plan.imports {
        let Some(upsert) = &w.upsert else {
            continue;
        };
        writes.push(Box::pin(async move {
            let result = upsert_one(clients, Side::Local, upsert)
                .await
                .map(|o| o.metadata.uid);
            if result.is_ok() {
                info!(object = %w.key, created = matches!(upsert, Upsert::Create(_)), "wrote a ServiceImport");
            }
            (w.key.clone(), result)
        }));
    }
    let mut created_uids: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut failed_imports: BTreeSet<ObjectKey> = BTreeSet::new();
    for (key, result) in all(writes).await {
        match result {
            Ok(uid) => {
                report.imports_written += 1;
                if let Some(uid) = uid {
                    created_uids.insert(key, uid);
                }
            }
            Err(e) => {
                failed_imports.insert(key);
                failures.push(e);
            }
        }
    }
    let mut writes: Vec<BoxFuture<'_, Result<(), ExportError>>> = Vec::new();
    for w in &plan.imports {
        let Some(status) = &w.status else {
            continue;
        };
        if failed_imports.contains(&w.key) {
            continue;
        }
        let patch = json!({ "status": status });
        writes.push(Box::pin(async move {
            patch_status::<ServiceImport>(clients, &w.key, &patch).await
        }));
    }
    tally(
        all(writes).await,
        &mut report.import_status_written,
        &mut failures,
    );

    // 3. Local EndpointSlices, owned by their ServiceImports; then local deletions.
    let mut writes: Vec<BoxFuture<'_, Result<(), ExportError>>> = Vec::new();
    for w in &plan.slices {
        let uid = w.owner_created_now.as_ref().map(|owner| {
            created_uids
                .get(owner)
                .cloned()
                .ok_or_else(|| owner.clone())
        });
        writes.push(Box::pin(write_slice(clients, w, uid)));
    }
    tally(all(writes).await, &mut report.slices_written, &mut failures);
    report.local_deleted +=
        delete_all::<EndpointSlice>(clients, Side::Local, &plan.slice_deletes, &mut failures).await;
    report.local_deleted +=
        delete_all::<ServiceImport>(clients, Side::Local, &plan.import_deletes, &mut failures)
            .await;

    // 4. ServiceExport conditions.
    let mut writes: Vec<BoxFuture<'_, Result<(), ExportError>>> = Vec::new();
    for w in &plan.export_status {
        if failed_exports.contains(&w.export) {
            continue;
        }
        let patch = json!({ "status": { "conditions": w.conditions } });
        writes.push(Box::pin(async move {
            patch_status::<ServiceExport>(clients, &w.export, &patch).await
        }));
    }
    tally(
        all(writes).await,
        &mut report.conditions_written,
        &mut failures,
    );

    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(report),
        Some(first) => Err(ExportError::Apply {
            failed,
            first: Box::new(first),
        }),
    }
}

/// A local ServiceImport write's outcome: its uid (for the slices it owns) or the error.
type ImportWritten = Result<Option<String>, ExportError>;

/// Runs `futures` [`CONCURRENCY`] at a time; results in completion order.
///
/// The futures are boxed and collected before anything is awaited, so that no
/// iterator adapter (with its closures' lifetimes) lives in the caller's state and
/// the whole pass stays provably `Send`, as `tokio::spawn` needs.
async fn all<T>(futures: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    stream::iter(futures)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

fn tally(
    results: Vec<Result<(), ExportError>>,
    count: &mut usize,
    failures: &mut Vec<ExportError>,
) {
    for result in results {
        match result {
            Ok(()) => *count += 1,
            Err(e) => failures.push(e),
        }
    }
}

/// Writes one local slice; `owner_uid` is the uid of an owner created this pass
/// (`Err`: its create failed, so the slice waits for the next pass).
async fn write_slice(
    clients: Clients<'_>,
    write: &SliceWrite,
    owner_uid: Option<Result<String, ObjectKey>>,
) -> Result<(), ExportError> {
    let upsert = match owner_uid {
        None => write.upsert.clone(),
        Some(Err(owner)) => {
            return Err(ExportError::OwnerMissing {
                slice: write.upsert.key(),
                owner,
            })
        }
        Some(Ok(uid)) => {
            let mut upsert = write.upsert.clone();
            let (Upsert::Create(slice) | Upsert::Replace(slice)) = &mut upsert;
            let owner = write.owner_created_now.as_ref().map(|o| o.name.as_str());
            slice.metadata.owner_references =
                Some(vec![import_owner(owner.unwrap_or_default(), &uid)]);
            upsert
        }
    };
    upsert_one(clients, Side::Local, &upsert).await.map(|_| ())
}

/// Creates or replaces one object in its own namespace.
async fn upsert_one<K>(
    clients: Clients<'_>,
    side: Side,
    upsert: &Upsert<K>,
) -> Result<K, ExportError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let key = upsert.key();
    let api: Api<K> = Api::namespaced(clients.client(side).clone(), &key.namespace);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(CONTROLLER_FIELD_MANAGER.to_owned()),
    };
    let result = match upsert {
        Upsert::Create(obj) => api.create(&params, obj).await,
        Upsert::Replace(obj) => api.replace(&key.name, &params, obj).await,
    };
    if result.is_ok() {
        debug!(kind = %K::kind(&()), object = %key, at = %side, verb = upsert.verb(), "wrote");
    }
    result.map_err(|source| ExportError::Write {
        side,
        verb: upsert.verb(),
        kind: K::kind(&()).into_owned(),
        object: key,
        source,
    })
}

/// Deletes `deletes`; returns how many were deleted (already gone ones aside).
async fn delete_all<K>(
    clients: Clients<'_>,
    side: Side,
    deletes: &[Delete],
    failures: &mut Vec<ExportError>,
) -> usize
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let mut writes: Vec<BoxFuture<'_, Result<bool, ExportError>>> = Vec::new();
    for d in deletes {
        writes.push(Box::pin(delete_one::<K>(clients, side, d)));
    }
    let mut deleted = 0;
    for result in all(writes).await {
        match result {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
    }
    deleted
}

/// Deletes one object at the observed resourceVersion; `Ok(false)` when it was
/// already gone (404), which is the goal.
async fn delete_one<K>(clients: Clients<'_>, side: Side, d: &Delete) -> Result<bool, ExportError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(clients.client(side).clone(), &d.key.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: d.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&d.key.name, &params).await {
        Ok(_) => {
            info!(kind = %K::kind(&()), object = %d.key, at = %side, "deleted");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(ExportError::Write {
            side,
            verb: "delete",
            kind: K::kind(&()).into_owned(),
            object: d.key.clone(),
            source,
        }),
    }
}

/// Merge-patches the status of a local object.
async fn patch_status<K>(
    clients: Clients<'_>,
    key: &ObjectKey,
    patch: &serde_json::Value,
) -> Result<(), ExportError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(clients.local.clone(), &key.namespace);
    let params = PatchParams {
        field_manager: Some(CONTROLLER_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&key.name, &params, &Patch::Merge(patch))
        .await
    {
        Ok(_) => {
            debug!(kind = %K::kind(&()), object = %key, "wrote status");
            Ok(())
        }
        Err(source) => Err(ExportError::Write {
            side: Side::Local,
            verb: "patch status of",
            kind: K::kind(&()).into_owned(),
            object: key.clone(),
            source,
        }),
    }
}
