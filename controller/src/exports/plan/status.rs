//! The `Valid`, `Ready` and `Conflict` conditions of every live local ServiceExport,
//! written only when they change.

use std::collections::BTreeMap;

use causeway_crds::mcs::{CONDITION_CONFLICT, CONDITION_READY, CONDITION_VALID};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::broker::Published;
use super::clusterset::{ClusterExport, ClustersetService};
use super::objects::name_of;
use super::verdict::Verdict;
use super::{
    ExportPlan, ExportStatusWrite, ObjectKey, REASON_EXPORTED, REASON_NO_CONFLICTS, REASON_PENDING,
    REASON_PORT_CONFLICT, REASON_SESSION_AFFINITY_CONFLICT, REASON_TYPE_CONFLICT, REASON_VALID,
};

/// Plans the conditions of every live local ServiceExport.
pub(super) fn plan_export_status(
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
