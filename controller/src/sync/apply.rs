//! Applies a [`SyncPlan`] through the Kubernetes API: the broker for our own
//! object, the local cluster for its local copy and the mirrors. No decisions here
//! beyond how to write.
//!
//! Where refusals go: the broker object of *this* cluster and its local copy get a
//! `Valid` condition (True, or False with the reason and every message), written
//! to their status subresource. Another cluster's refused object is not ours to write —
//! its own controller writes its condition when it sees the same conflict — and a
//! refused object is not mirrored, so there is no local object to carry one
//! either: refusals of other clusters' objects are logged (`warn`) and counted
//! in the [`SyncReport`].

use causeway_crds::ClusterEndpoint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tracing::{info, warn};

use super::plan::{StatusWrite, SyncPlan, Upsert};
use super::{Side, SyncError};

/// Field manager for the controller's writes (one name for every writer in the controller).
pub const FIELD_MANAGER: &str = causeway_crds::names::CONTROLLER_FIELD_MANAGER;

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Our object was created or replaced at the broker.
    pub published: bool,
    /// Our object's `Valid` condition was written.
    pub condition_written: bool,
    /// The local copy of our object was created or replaced.
    pub local_written: bool,
    /// The local copy's `Valid` condition was written.
    pub local_condition_written: bool,
    /// The local copy's list of refused remote objects was written.
    pub local_refusals_written: bool,
    /// A local object not managed by Causeway holds our own name (the local copy is not written).
    pub local_taken: bool,
    /// This pass's spec was not published (refused on its own, or not buildable).
    pub unpublished: bool,
    /// Mirrors created locally.
    pub mirrors_created: usize,
    /// Mirrors updated locally.
    pub mirrors_updated: usize,
    /// Mirrors deleted locally.
    pub mirrors_deleted: usize,
    /// Remote broker objects refused (not mirrored).
    pub refused: usize,
    /// Remote broker objects not mirrored because a local non-mirror holds their name.
    pub name_taken: usize,
}

impl SyncReport {
    /// Whether the pass wrote anything.
    pub fn wrote(&self) -> bool {
        self.published
            || self.condition_written
            || self.local_written
            || self.local_condition_written
            || self.local_refusals_written
            || self.mirrors_created + self.mirrors_updated + self.mirrors_deleted > 0
    }
}

/// Applies `plan`: `broker` is the API of the broker namespace, `local` the API
/// of the local namespace. Every write is attempted; if any failed, the first
/// failure is returned (with how many failed) after the others ran, and the next
/// pass retries from fresh state.
pub async fn apply_plan(
    plan: &SyncPlan,
    broker: &Api<ClusterEndpoint>,
    local: &Api<ClusterEndpoint>,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport {
        refused: plan.refused.len(),
        name_taken: plan.name_taken.len(),
        local_taken: plan.local_taken.is_some(),
        unpublished: plan.unpublished.is_some(),
        ..SyncReport::default()
    };
    let mut failures: Vec<SyncError> = Vec::new();

    if let Some(why) = &plan.unpublished {
        warn!(
            reason = %why.reason,
            message = %why.message,
            "this cluster's spec is refused and not published; the broker object and the local copy keep their last valid spec"
        );
    }
    if let Some(name) = &plan.local_taken {
        warn!(
            object = %name,
            "a local ClusterEndpoint named after this cluster is not managed by Causeway (no causeway.dev/local=true label); the local copy is not written — rename or remove that object"
        );
    }

    for refusal in &plan.refused {
        for error in &refusal.errors {
            warn!(
                object = %refusal.object,
                remote_cluster = %refusal.cluster_id,
                reason = error.reason(),
                message = %error,
                "ClusterEndpoint at the broker refused; not mirrored"
            );
        }
    }
    for name in &plan.name_taken {
        warn!(
            object = %name,
            "a local ClusterEndpoint not managed by Causeway has this name; the broker object is not mirrored — rename or remove the local object"
        );
    }

    if let Some(publish) = &plan.publish {
        match upsert(broker, publish, Side::Broker).await {
            Ok(()) => {
                report.published = true;
                info!(object = %publish.name(), "published our ClusterEndpoint to the broker");
            }
            Err(e) => failures.push(e),
        }
    }
    // A condition for an object we failed to create has nowhere to go.
    let own_exists = plan.publish.is_none() || report.published;
    if let (Some(write), true) = (&plan.own_condition, own_exists) {
        match write_condition(broker, write, Side::Broker).await {
            Ok(()) => report.condition_written = true,
            Err(e) => failures.push(e),
        }
    }

    if let Some(copy) = &plan.local_upsert {
        match upsert(local, copy, Side::Local).await {
            Ok(()) => {
                report.local_written = true;
                info!(
                    object = %copy.name(),
                    created = matches!(copy, Upsert::Create(_)),
                    gateways = ?copy.object().spec.gateways.iter().map(|g| g.node_name.as_str()).collect::<Vec<_>>(),
                    "wrote the local copy of our ClusterEndpoint"
                );
            }
            Err(e) => failures.push(e),
        }
    }
    let copy_exists = plan.local_upsert.is_none() || report.local_written;
    if let (Some(write), true) = (&plan.local_condition, copy_exists) {
        match write_condition(local, write, Side::Local).await {
            Ok(()) => report.local_condition_written = true,
            Err(e) => failures.push(e),
        }
    }
    if let (Some(write), true) = (&plan.local_refusals, copy_exists) {
        // Only `status.refused`: a merge patch leaves the conditions as they are.
        let status = json!({ "refused": write.refused });
        match merge_status(local, &write.object, status, Side::Local).await {
            Ok(()) => {
                report.local_refusals_written = true;
                info!(
                    object = %write.object,
                    refused = write.refused.len(),
                    "wrote the refused remote ClusterEndpoints on our local copy"
                );
            }
            Err(e) => failures.push(e),
        }
    }

    for mirror in &plan.mirror_upsert {
        match upsert(local, mirror, Side::Local).await {
            Ok(()) => {
                let created = matches!(mirror, Upsert::Create(_));
                if created {
                    report.mirrors_created += 1;
                } else {
                    report.mirrors_updated += 1;
                }
                info!(
                    object = %mirror.name(),
                    remote_cluster = %mirror.object().spec.cluster_id,
                    created,
                    "mirrored a remote ClusterEndpoint"
                );
            }
            Err(e) => failures.push(e),
        }
    }

    for delete in &plan.mirror_delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: delete.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match local.delete(&delete.name, &params).await {
            Ok(_) => {
                report.mirrors_deleted += 1;
                info!(object = %delete.name, "deleted a mirror whose broker object is gone");
            }
            // Already gone: the goal is reached.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => failures.push(SyncError::Write {
                side: Side::Local,
                verb: "delete",
                object: delete.name.clone(),
                source,
            }),
        }
    }

    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(report),
        Some(first) => Err(SyncError::Apply {
            failed,
            first: Box::new(first),
        }),
    }
}

/// Merges `write`'s condition into the object's status conditions.
async fn write_condition(
    api: &Api<ClusterEndpoint>,
    write: &StatusWrite,
    side: Side,
) -> Result<(), SyncError> {
    let condition = &write.condition;
    let conditions = condition.merge_into(&write.current, Time(Timestamp::now()));
    merge_status(
        api,
        &write.object,
        json!({ "conditions": conditions }),
        side,
    )
    .await?;
    info!(
        object = %write.object,
        %side,
        valid = condition.valid,
        reason = %condition.reason,
        "wrote the Valid condition of our ClusterEndpoint"
    );
    Ok(())
}

/// Merge-patches `status` into `object`'s status: the fields it names, nothing else.
async fn merge_status(
    api: &Api<ClusterEndpoint>,
    object: &str,
    status: serde_json::Value,
    side: Side,
) -> Result<(), SyncError> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = json!({ "status": status });
    api.patch_status(object, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| SyncError::Write {
            side,
            verb: "patch status of",
            object: object.to_owned(),
            source,
        })
}

async fn upsert(api: &Api<ClusterEndpoint>, upsert: &Upsert, side: Side) -> Result<(), SyncError> {
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    };
    let name = upsert.name();
    let result = match upsert {
        Upsert::Create(obj) => {
            let mut obj = obj.clone();
            obj.metadata.namespace = None;
            api.create(&params, &obj).await.map(|_| ())
        }
        Upsert::Replace(obj) => api.replace(&name, &params, obj).await.map(|_| ()),
    };
    result.map_err(|source| SyncError::Write {
        side,
        verb: match upsert {
            Upsert::Create(_) => "create",
            Upsert::Replace(_) => "replace",
        },
        object: name,
        source,
    })
}
