//! The broker-sync planner: what to publish to the broker and what to mirror locally.
//!
//! Pure: objects in, [`SyncPlan`] out. [`super::apply`] turns the plan into API calls.
//!
//! Rules:
//! - The only object this cluster ever writes at the broker is the one named after
//!   its own cluster ID; it is created or replaced only when its spec differs.
//! - Every other broker object is validated as a clusterset, first come first
//!   served (oldest `metadata.creationTimestamp` first, then name), together with
//!   the spec this cluster is about to publish. Accepted remote objects are mirrored
//!   into the local namespace under the same name, labelled
//!   [`SOURCE_CLUSTER_LABEL`] and [`MIRRORED_LABEL`]; refused ones are not mirrored.
//! - A broker object claiming this cluster's ID under another name is refused
//!   (whatever its age): the object named after the ID is the cluster's own.
//! - The same spec is written locally as the *local copy*: ClusterEndpoint
//!   `<cluster-id>` in the local namespace, labelled [`LOCAL_LABEL`]`=true` and
//!   annotated [`VERSION_ANNOTATION`] with this controller's release (so `kubectl
//!   causeway diagnose` sees version skew), created or replaced only when its spec,
//!   labels or that annotation differ. A local object of that name
//!   that is neither labelled so nor a mirror is someone else's: reported, untouched.
//!   (A stale mirror of that name is taken over as the local copy.)
//! - The `Valid` condition about our own object goes on the broker object and on
//!   the local copy, each only when it differs.
//! - A spec that is not valid on its own (or could not be built at all) is not
//!   published: what is at the broker and the local copy stay as they are, and the
//!   local copy (if any) gets `Valid=False` saying why.
//! - Local objects without `causeway.dev/mirrored=true` are never touched (the local
//!   copy aside); a remote object whose name is taken locally by such an object is
//!   reported, not mirrored.
//! - A mirror whose broker object is gone is deleted. A mirror whose broker object
//!   is now refused is left as it was (last known good): bad input changes nothing
//!   that already works.
//! - Without the broker ([`plan_without_broker`]) only the local copy is planned,
//!   so a gateway failover still reaches this cluster's route agents.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::validate::{
    object_name, oldest_first, validate_clusterset_for, validate_endpoint, Acceptance,
};
use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec, RemoteRefusal, ValidationError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

use crate::local::LocalSpecError;

// Re-exported so that callers importing them from here keep compiling; the one
// definition is in `causeway_crds::names`.
use causeway_crds::names::{has_true_label, VERSION_ANNOTATION};
pub use causeway_crds::names::{LOCAL_LABEL, MIRRORED_LABEL, SOURCE_CLUSTER_LABEL};

/// The condition type written on this cluster's own broker object and local copy.
pub const VALID_CONDITION: &str = "Valid";

/// A write of one whole object.
#[derive(Debug, Clone, PartialEq)]
pub enum Upsert {
    /// The object does not exist yet: create it.
    Create(ClusterEndpoint),
    /// The object exists: replace it; `metadata.resourceVersion` is the observed one,
    /// so a concurrent change makes the write fail (409) instead of being lost.
    Replace(ClusterEndpoint),
}

impl Upsert {
    /// The object to write.
    pub fn object(&self) -> &ClusterEndpoint {
        match self {
            Upsert::Create(o) | Upsert::Replace(o) => o,
        }
    }

    /// The object's name.
    pub fn name(&self) -> String {
        object_name(self.object())
    }
}

/// A mirror to delete, with the resourceVersion it was observed at (a delete precondition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Name of the local mirror.
    pub name: String,
    /// The resourceVersion observed, if any.
    pub resource_version: Option<String>,
}

/// The `Valid` condition this cluster's own broker object should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCondition {
    /// Whether the clusterset accepted the object.
    pub valid: bool,
    /// CamelCase reason (`Accepted`, or the first refusal's [`ValidationError::reason`]).
    pub reason: String,
    /// Every refusal's message, or a short acceptance note.
    pub message: String,
}

/// Reason of a `Valid=True` condition.
pub const ACCEPTED_REASON: &str = "Accepted";
/// Message of a `Valid=True` condition.
pub const ACCEPTED_MESSAGE: &str =
    "accepted by the clusterset: no conflict with older ClusterEndpoints";

/// Prefix of the message of a `Valid=False` condition about a spec that was not published.
pub const UNPUBLISHED_PREFIX: &str =
    "this cluster's spec is not published, the last valid one stays in place: ";

impl ValidCondition {
    /// Why a spec that is not valid on its own was not published.
    fn unpublished(errors: &[ValidationError]) -> Self {
        let mut condition = Self::from_errors(errors);
        condition.message = format!("{UNPUBLISHED_PREFIX}{}", condition.message);
        condition
    }

    /// Why a spec that could not be built was not published.
    fn unbuildable(error: &LocalSpecError) -> Self {
        ValidCondition {
            valid: false,
            reason: error.reason().to_owned(),
            message: format!("{UNPUBLISHED_PREFIX}{error}"),
        }
    }

    fn from_errors(errors: &[ValidationError]) -> Self {
        match errors.first() {
            None => ValidCondition {
                valid: true,
                reason: ACCEPTED_REASON.to_owned(),
                message: ACCEPTED_MESSAGE.to_owned(),
            },
            Some(first) => ValidCondition {
                valid: false,
                reason: first.reason().to_owned(),
                message: errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        }
    }

    /// `current` conditions with this one set: other types kept, the transition
    /// time kept when the status did not flip, `now` otherwise.
    pub fn merge_into(&self, current: &[Condition], now: Time) -> Vec<Condition> {
        let status = if self.valid { "True" } else { "False" };
        let previous = current.iter().find(|c| c.type_ == VALID_CONDITION);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => now,
        };
        let mut merged: Vec<Condition> = current
            .iter()
            .filter(|c| c.type_ != VALID_CONDITION)
            .cloned()
            .collect();
        merged.push(Condition {
            type_: VALID_CONDITION.to_owned(),
            status: status.to_owned(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            last_transition_time,
            observed_generation: None,
        });
        merged
    }

    /// Whether `obj`'s status already carries this condition (transition time aside).
    fn is_on(&self, obj: &ClusterEndpoint) -> bool {
        let status = if self.valid { "True" } else { "False" };
        obj.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == VALID_CONDITION
                    && c.status == status
                    && c.reason == self.reason
                    && c.message == self.message
            })
        })
    }
}

/// A `Valid` condition to write on this cluster's own broker object or local copy.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// The object (named after our cluster ID).
    pub object: String,
    /// The condition it should carry.
    pub condition: ValidCondition,
    /// The conditions it carries now, for [`ValidCondition::merge_into`].
    pub current: Vec<Condition>,
}

/// What the local copy's `status.refused` should become.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalsWrite {
    /// The local copy (named after our cluster ID).
    pub object: String,
    /// Every refused remote object, as `kubectl causeway diagnose` shows it.
    pub refused: Vec<RemoteRefusal>,
}

/// A broker object that is not mirrored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The broker object's name.
    pub object: String,
    /// The cluster ID it claims.
    pub cluster_id: String,
    /// Every reason, first one first.
    pub errors: Vec<ValidationError>,
}

/// What this cluster publishes in one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Publish<'a> {
    /// Nothing: our broker object and local copy are left as they are; only mirror.
    Nothing,
    /// This spec, when it is valid on its own; otherwise nothing new is published
    /// and the local copy says why.
    Spec(&'a ClusterEndpointSpec),
    /// The spec could not be built this pass: nothing new is published and the
    /// local copy says why.
    Unbuildable(&'a LocalSpecError),
}

impl<'a> From<Option<&'a ClusterEndpointSpec>> for Publish<'a> {
    fn from(spec: Option<&'a ClusterEndpointSpec>) -> Self {
        spec.map_or(Publish::Nothing, Publish::Spec)
    }
}

/// What one sync pass should change.
///
/// [`SyncPlan::is_noop`] is true when nothing is to be written; `refused`,
/// `name_taken`, `local_taken` and `unpublished` are reports that persist as long
/// as their cause does and cause no write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncPlan {
    /// This cluster's own object at the broker, when it is missing or its spec differs.
    pub publish: Option<Upsert>,
    /// The `Valid` condition for this cluster's own broker object, when it differs
    /// from what the object carries (written after `publish`).
    pub own_condition: Option<StatusWrite>,
    /// The local copy of our own object, when it is missing or differs.
    pub local_upsert: Option<Upsert>,
    /// The `Valid` condition for the local copy, when it differs from what the
    /// copy carries (written after `local_upsert`).
    pub local_condition: Option<StatusWrite>,
    /// The local copy's list of refused remote objects, when it differs from what the
    /// copy carries (written after `local_upsert`).
    pub local_refusals: Option<RefusalsWrite>,
    /// A local object holds our own name but is not Causeway's: its name.
    pub local_taken: Option<String>,
    /// Why this pass's spec is not published (not valid on its own, or not buildable).
    pub unpublished: Option<ValidCondition>,
    /// Local mirrors to create or update.
    pub mirror_upsert: Vec<Upsert>,
    /// Local mirrors whose broker object is gone.
    pub mirror_delete: Vec<Delete>,
    /// Remote broker objects refused by validation; not mirrored.
    pub refused: Vec<Refusal>,
    /// Remote broker objects whose name is held locally by an object that is not a mirror.
    pub name_taken: Vec<String>,
}

impl SyncPlan {
    /// Whether applying the plan writes nothing.
    pub fn is_noop(&self) -> bool {
        self.publish.is_none()
            && self.own_condition.is_none()
            && self.local_upsert.is_none()
            && self.local_condition.is_none()
            && self.local_refusals.is_none()
            && self.mirror_upsert.is_empty()
            && self.mirror_delete.is_empty()
    }
}

/// Whether a local object is a mirror this controller owns.
pub fn is_mirror(obj: &ClusterEndpoint) -> bool {
    has_true_label(&obj.metadata, MIRRORED_LABEL)
}

/// Whether a local object is this controller's local copy of its own cluster's object.
pub fn is_local_copy(obj: &ClusterEndpoint) -> bool {
    has_true_label(&obj.metadata, LOCAL_LABEL)
}

/// The spec to publish (`Ok(None)`: nothing), or why nothing new is published.
fn desired<'a>(
    local_cluster: &str,
    publish: Publish<'a>,
) -> Result<Option<&'a ClusterEndpointSpec>, ValidCondition> {
    match publish {
        Publish::Nothing => Ok(None),
        Publish::Spec(spec) => {
            match validate_endpoint(&ClusterEndpoint::new(local_cluster, spec.clone())) {
                Ok(_) => Ok(Some(spec)),
                Err(errors) => Err(ValidCondition::unpublished(&errors)),
            }
        }
        Publish::Unbuildable(error) => Err(ValidCondition::unbuildable(error)),
    }
}

/// Plans one sync pass.
///
/// - `local_cluster`: this cluster's ID, also the name of its object at the broker
///   and of its local copy;
/// - `publish`: what this cluster should publish;
/// - `broker`: every ClusterEndpoint in the broker namespace;
/// - `mirrored`: the ClusterEndpoints in the local namespace (objects that are
///   neither mirrors nor the local copy are only used to avoid name clashes).
pub fn plan_sync(
    local_cluster: &str,
    publish: Publish<'_>,
    broker: &[ClusterEndpoint],
    mirrored: &[ClusterEndpoint],
    acceptance: &Acceptance,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let desired = desired(local_cluster, publish);
    plan.unpublished = desired.clone().err();
    let local = desired.clone().ok().flatten();
    let own = broker
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(local_cluster));

    // 1. Our object at the broker.
    plan.publish = local.and_then(|spec| match own {
        None => Some(Upsert::Create(ClusterEndpoint {
            metadata: ObjectMeta {
                name: Some(local_cluster.to_owned()),
                ..ObjectMeta::default()
            },
            spec: spec.clone(),
            status: None,
        })),
        Some(existing) if existing.spec != *spec => Some(Upsert::Replace(ClusterEndpoint {
            metadata: existing.metadata.clone(),
            spec: spec.clone(),
            status: None,
        })),
        Some(_) => None,
    });
    // What our object will look like once published (for validation).
    let own_after: Option<ClusterEndpoint> = match (&plan.publish, own) {
        (Some(upsert), _) => Some(upsert.object().clone()),
        (None, Some(existing)) => Some(existing.clone()),
        (None, None) => None,
    };

    // 2. Objects claiming our ID under another name: refused outright.
    let mut candidates: Vec<&ClusterEndpoint> = Vec::new();
    for obj in broker {
        let name = object_name(obj);
        if name == local_cluster {
            continue;
        }
        if obj.spec.cluster_id == local_cluster {
            plan.refused.push(Refusal {
                object: name.clone(),
                cluster_id: obj.spec.cluster_id.clone(),
                errors: vec![ValidationError::DuplicateClusterId {
                    object: name,
                    value: obj.spec.cluster_id.clone(),
                    other_object: local_cluster.to_owned(),
                }],
            });
        } else {
            candidates.push(obj);
        }
    }
    if let Some(own) = &own_after {
        candidates.push(own);
    }

    // 3. First come, first served: oldest first, not-yet-created last, then by name.
    let mut ordered: Vec<ClusterEndpoint> = candidates.into_iter().cloned().collect();
    oldest_first(&mut ordered);
    let check = validate_clusterset_for(&ordered, local_cluster, acceptance);
    let refused: BTreeMap<&str, &Vec<ValidationError>> = check
        .refused
        .iter()
        .map(|(name, errors)| (name.as_str(), errors))
        .collect();

    // 4. The condition on our own object.
    let mut own_verdict: Option<ValidCondition> = None;
    if own_after.is_some() {
        let errors = refused
            .get(local_cluster)
            .map(|e| e.as_slice())
            .unwrap_or_default();
        let condition = ValidCondition::from_errors(errors);
        // A replace keeps the status the object has; a create starts without one.
        plan.own_condition = condition_write(local_cluster, &condition, own);
        own_verdict = Some(condition);
    }

    // 5. The local copy, with the same verdict.
    plan_local_copy(
        &mut plan,
        local_cluster,
        &desired,
        own_verdict.as_ref(),
        mirrored,
    );

    // 6. Mirrors.
    let locals: BTreeMap<String, &ClusterEndpoint> =
        mirrored.iter().map(|o| (object_name(o), o)).collect();
    let mut at_broker: BTreeSet<String> = BTreeSet::new();
    for obj in ordered.iter().filter(|o| object_name(o) != local_cluster) {
        let name = object_name(obj);
        at_broker.insert(name.clone());
        if let Some(errors) = refused.get(name.as_str()) {
            plan.refused.push(Refusal {
                object: name,
                cluster_id: obj.spec.cluster_id.clone(),
                errors: (*errors).clone(),
            });
            continue;
        }
        match locals.get(&name) {
            None => plan.mirror_upsert.push(Upsert::Create(ClusterEndpoint {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(mirror_labels(&obj.spec.cluster_id, None)),
                    ..ObjectMeta::default()
                },
                spec: obj.spec.clone(),
                status: None,
            })),
            Some(existing) if !is_mirror(existing) => plan.name_taken.push(name),
            Some(existing) => {
                let labels = mirror_labels(&obj.spec.cluster_id, existing.metadata.labels.as_ref());
                if existing.spec != obj.spec || existing.metadata.labels.as_ref() != Some(&labels) {
                    let mut metadata = existing.metadata.clone();
                    metadata.labels = Some(labels);
                    plan.mirror_upsert.push(Upsert::Replace(ClusterEndpoint {
                        metadata,
                        spec: obj.spec.clone(),
                        status: existing.status.clone(),
                    }));
                }
            }
        }
    }
    // Objects claiming our ID are at the broker too: their old mirrors (if any) stay.
    at_broker.extend(plan.refused.iter().map(|r| r.object.clone()));
    // A stale mirror of our own name is taken over as the local copy when one is
    // written; otherwise it goes like any other mirror without a broker object.
    if local.is_some() {
        at_broker.insert(local_cluster.to_owned());
    }
    plan.mirror_delete = mirrored
        .iter()
        .filter(|o| is_mirror(o))
        .filter(|o| !at_broker.contains(&object_name(o)))
        .map(|o| Delete {
            name: object_name(o),
            resource_version: o.metadata.resource_version.clone(),
        })
        .collect();
    plan.refused.sort_by(|a, b| a.object.cmp(&b.object));
    plan.local_refusals = refusals_write(local_cluster, &plan, mirrored);
    plan
}

/// The most refusals a local copy lists (the CRD's bound).
pub const MAX_LISTED_REFUSALS: usize = 64;
/// The longest refusal message a local copy keeps (the CRD's bound).
const MAX_REFUSAL_MESSAGE: usize = 4096;

/// What the local copy's `status.refused` should say about `refused` (pure).
pub fn refusal_status(refused: &[Refusal]) -> Vec<RemoteRefusal> {
    refused
        .iter()
        .take(MAX_LISTED_REFUSALS)
        .map(|r| {
            let mut message = r
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if message.len() > MAX_REFUSAL_MESSAGE {
                let mut end = MAX_REFUSAL_MESSAGE - 3;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
                message.push_str("...");
            }
            RemoteRefusal {
                cluster_id: r.cluster_id.clone(),
                reason: r
                    .errors
                    .first()
                    .map_or("Refused", ValidationError::reason)
                    .to_owned(),
                message,
            }
        })
        .collect()
}

/// A write of the local copy's `status.refused`, when the copy is ours, exists (or is
/// written this pass) and says something else.
fn refusals_write(
    local_cluster: &str,
    plan: &SyncPlan,
    mirrored: &[ClusterEndpoint],
) -> Option<RefusalsWrite> {
    if plan.local_taken.is_some() {
        return None;
    }
    let copy = mirrored
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(local_cluster) && is_local_copy(o));
    if copy.is_none() && plan.local_upsert.is_none() {
        return None;
    }
    let want = refusal_status(&plan.refused);
    let have = copy
        .and_then(|o| o.status.as_ref())
        .map(|s| s.refused.as_slice())
        .unwrap_or_default();
    (want != have).then(|| RefusalsWrite {
        object: local_cluster.to_owned(),
        refused: want,
    })
}

/// Plans the local copy alone, for a pass that cannot reach the broker: the copy
/// follows the spec (a gateway failover reaches this cluster's route agents even
/// then), its `Valid` condition is only changed when the spec is refused on its
/// own, and mirrors are left as they are.
pub fn plan_without_broker(
    local_cluster: &str,
    publish: Publish<'_>,
    mirrored: &[ClusterEndpoint],
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let desired = desired(local_cluster, publish);
    plan.unpublished = desired.clone().err();
    plan_local_copy(&mut plan, local_cluster, &desired, None, mirrored);
    plan
}

/// Fills in `plan.local_upsert`, `plan.local_condition` and `plan.local_taken`.
///
/// `verdict` is the clusterset's verdict on our broker object (`None`: unknown,
/// leave the copy's condition unless the spec itself is refused).
fn plan_local_copy(
    plan: &mut SyncPlan,
    local_cluster: &str,
    desired: &Result<Option<&ClusterEndpointSpec>, ValidCondition>,
    verdict: Option<&ValidCondition>,
    mirrored: &[ClusterEndpoint],
) {
    if matches!(desired, Ok(None)) {
        return;
    }
    let existing = mirrored
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some(local_cluster));
    if let Some(other) = existing.filter(|o| !is_local_copy(o) && !is_mirror(o)) {
        plan.local_taken = Some(object_name(other));
        return;
    }
    match desired {
        Ok(Some(spec)) => {
            let labels = local_labels(existing.and_then(|o| o.metadata.labels.as_ref()));
            let annotations =
                local_annotations(existing.and_then(|o| o.metadata.annotations.as_ref()));
            plan.local_upsert = match existing {
                None => Some(Upsert::Create(ClusterEndpoint {
                    metadata: ObjectMeta {
                        name: Some(local_cluster.to_owned()),
                        labels: Some(labels),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    },
                    spec: (*spec).clone(),
                    status: None,
                })),
                Some(o)
                    if o.spec != **spec
                        || o.metadata.labels.as_ref() != Some(&labels)
                        || o.metadata.annotations.as_ref() != Some(&annotations) =>
                {
                    let mut metadata = o.metadata.clone();
                    metadata.labels = Some(labels);
                    metadata.annotations = Some(annotations);
                    Some(Upsert::Replace(ClusterEndpoint {
                        metadata,
                        spec: (*spec).clone(),
                        status: o.status.clone(),
                    }))
                }
                Some(_) => None,
            };
            if let Some(condition) = verdict {
                plan.local_condition = condition_write(local_cluster, condition, existing);
            }
        }
        // Only a copy we already wrote carries the refusal; a mirror of our name
        // is not converted for it.
        Err(condition) => {
            if let Some(copy) = existing.filter(|o| is_local_copy(o)) {
                plan.local_condition = condition_write(local_cluster, condition, Some(copy));
            }
        }
        Ok(None) => {}
    }
}

/// A write of `condition` on `object` (`None`: about to be created), unless it is there.
fn condition_write(
    name: &str,
    condition: &ValidCondition,
    object: Option<&ClusterEndpoint>,
) -> Option<StatusWrite> {
    if object.is_some_and(|o| condition.is_on(o)) {
        return None;
    }
    Some(StatusWrite {
        object: name.to_owned(),
        condition: condition.clone(),
        current: object
            .and_then(|o| o.status.as_ref())
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    })
}

/// The labels of the local copy: `existing` ones kept, a mirror's dropped, ours set.
fn local_labels(existing: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut labels = existing.cloned().unwrap_or_default();
    labels.remove(MIRRORED_LABEL);
    labels.remove(SOURCE_CLUSTER_LABEL);
    labels.insert(LOCAL_LABEL.to_owned(), "true".to_owned());
    labels
}

/// The annotations of the local copy: `existing` ones kept, our release set.
fn local_annotations(existing: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut annotations = existing.cloned().unwrap_or_default();
    annotations.insert(
        VERSION_ANNOTATION.to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    annotations
}

/// The labels of a mirror of `cluster_id`: `existing` ones kept, ours set.
fn mirror_labels(
    cluster_id: &str,
    existing: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = existing.cloned().unwrap_or_default();
    labels.insert(SOURCE_CLUSTER_LABEL.to_owned(), cluster_id.to_owned());
    labels.insert(MIRRORED_LABEL.to_owned(), "true".to_owned());
    labels
}

#[cfg(test)]
mod tests;
