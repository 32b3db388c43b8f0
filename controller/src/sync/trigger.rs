//! What a sync pass reads from objects that change far more often than that: a
//! Lease is renewed every few seconds, a Gateway writes its connection status about
//! once a second, a Node its conditions. These fingerprints feed
//! [`causeway_k8s::passes::Changes`], so the broker is not listed once a second for
//! nothing.

use causeway_crds::Gateway;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

/// What a pass reads from a Gateway: its spec, role, and whether it is being deleted.
pub fn gateway_fingerprint(gateway: &Gateway) -> Value {
    json!([
        gateway.spec,
        gateway.status.as_ref().and_then(|s| s.role),
        gateway.metadata.deletion_timestamp.is_some(),
    ])
}

/// What a pass reads from the gateway Lease, renewals aside: who holds it since
/// when, and for how long. Its expiry without a renewal is seen by the next resync.
pub fn lease_fingerprint(lease: &Lease) -> Value {
    let spec = lease.spec.as_ref();
    json!([
        spec.and_then(|s| s.holder_identity.as_ref()),
        spec.and_then(|s| s.acquire_time.as_ref()),
        spec.and_then(|s| s.lease_transitions),
        spec.and_then(|s| s.lease_duration_seconds),
    ])
}

/// What a pass reads from a Node: its pod CIDRs.
pub fn node_fingerprint(node: &Node) -> Value {
    let spec = node.spec.as_ref();
    json!([
        spec.and_then(|s| s.pod_cidrs.as_ref()),
        spec.and_then(|s| s.pod_cidr.as_ref()),
        // Whether it is a gateway candidate decides which Gateway objects are published.
        causeway_crds::names::has_true_label(
            &node.metadata,
            causeway_crds::names::GATEWAY_NODE_LABEL
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_k8s::passes::Changes;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn node(name: &str, cidr: &str, ready: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec![cidr.to_owned()]),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                phase: Some(ready.to_owned()),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn only_changes_of_what_a_pass_reads_trigger() {
        let mut changes = Changes::new(node_fingerprint);
        let n1 = node("n1", "10.1.0.0/24", "Running");
        // (event, triggers a pass)
        let steps: Vec<(Event<Node>, bool)> = vec![
            (Event::Init, false),
            (Event::InitApply(n1.clone()), false),
            (Event::InitDone, true),
            (Event::Apply(node("n1", "10.1.0.0/24", "Pending")), false),
            (Event::Apply(node("n1", "10.1.9.0/24", "Pending")), true),
            (Event::Apply(node("n2", "10.1.1.0/24", "Running")), true),
            (Event::Apply(node("n2", "10.1.1.0/24", "Running")), false),
            (Event::Delete(node("n2", "10.1.1.0/24", "Running")), true),
            // A relist that finds the same objects changes nothing ...
            (Event::Init, false),
            (Event::InitApply(node("n1", "10.1.9.0/24", "Gone")), false),
            (Event::InitDone, false),
            // ... one that misses an object does.
            (Event::Init, false),
            (Event::InitDone, true),
        ];
        for (i, (event, want)) in steps.iter().enumerate() {
            assert_eq!(changes.relevant(event), *want, "step {i}: {event:?}");
        }
    }
}
