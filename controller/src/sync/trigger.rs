//! Which watch events should start a sync pass.
//!
//! The watchers are only triggers (every pass lists afresh), but some objects
//! change far more often than anything a pass reads from them: a Lease is renewed
//! every few seconds, a Gateway writes its connection status about once a second,
//! a Node its conditions. [`Changes`] remembers a fingerprint of what a pass reads
//! from each object and lets an event through only when that changes, so the
//! broker is not listed once a second for nothing.

use std::collections::BTreeMap;

use causeway_crds::Gateway;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;
use kube::Resource;
use serde_json::{json, Value};

/// Per-object fingerprints of the objects one watcher has seen.
pub struct Changes<K> {
    fingerprint: fn(&K) -> Value,
    seen: BTreeMap<String, Value>,
    /// Objects of a relist in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<String, Value>>,
}

impl<K: Resource> Changes<K> {
    /// Tracks objects by `fingerprint`: the parts of an object a pass reads.
    pub fn new(fingerprint: fn(&K) -> Value) -> Self {
        Changes {
            fingerprint,
            seen: BTreeMap::new(),
            relist: None,
        }
    }

    /// Whether `event` changes anything a pass reads (and should trigger one).
    pub fn relevant(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(obj) => {
                let print = (self.fingerprint)(obj);
                self.seen.insert(key(obj), print.clone()) != Some(print)
            }
            Event::Delete(obj) => {
                self.seen.remove(&key(obj));
                true
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let print = (self.fingerprint)(obj);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key(obj), print);
                false
            }
            // A relist (first start, or after a lost watch) replaces what was seen;
            // objects gone meanwhile are noticed here.
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = fresh != self.seen;
                self.seen = fresh;
                changed
            }
        }
    }
}

fn key<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

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
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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
