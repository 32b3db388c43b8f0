//! Table-driven tests of [`plan_sync`]: objects in, plan out.

use super::*;
use crate::local::LocalSpecError;
use causeway_crds::{ClusterEndpointStatus, GatewayEndpoint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

const KEY_A: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
const KEY_B: &str = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=";
const KEY_C: &str = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";

fn spec(cluster: &str, pod: &str, key: &str) -> ClusterEndpointSpec {
    ClusterEndpointSpec {
        cluster_id: cluster.to_owned(),
        pod_cidrs: vec![pod.to_owned()],
        service_cidrs: vec![],
        gateways: vec![GatewayEndpoint {
            node_name: format!("{cluster}-gw"),
            public_endpoint: "198.18.0.1:51820".to_owned(),
            public_key: key.to_owned(),
            private_ip: None,
            private_ips: vec![],
            health_check_ip: None,
        }],
    }
}

fn a() -> ClusterEndpointSpec {
    spec("site-a", "10.1.0.0/16", KEY_A)
}
fn b() -> ClusterEndpointSpec {
    spec("site-b", "10.2.0.0/16", KEY_B)
}
fn c() -> ClusterEndpointSpec {
    spec("site-c", "10.3.0.0/16", KEY_C)
}

/// A broker object named `name`, created at second `created`.
fn at_broker(name: &str, created: i64, spec: ClusterEndpointSpec) -> ClusterEndpoint {
    ClusterEndpoint {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("broker".to_owned()),
            resource_version: Some(format!("{created}")),
            creation_timestamp: Some(Time(
                Timestamp::from_second(1_700_000_000 + created).expect("valid second"),
            )),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// A broker object of ours carrying a `Valid` condition.
fn with_condition(mut obj: ClusterEndpoint, c: &ValidCondition) -> ClusterEndpoint {
    obj.status = Some(ClusterEndpointStatus {
        conditions: vec![Condition {
            type_: VALID_CONDITION.to_owned(),
            status: if c.valid { "True" } else { "False" }.to_owned(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }],
        ..ClusterEndpointStatus::default()
    });
    obj
}

fn accepted() -> ValidCondition {
    ValidCondition {
        valid: true,
        reason: ACCEPTED_REASON.to_owned(),
        message: ACCEPTED_MESSAGE.to_owned(),
    }
}

/// A local mirror as the controller writes it.
fn mirror(name: &str, spec: ClusterEndpointSpec) -> ClusterEndpoint {
    ClusterEndpoint {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("local".to_owned()),
            resource_version: Some("7".to_owned()),
            labels: Some(mirror_labels(&spec.cluster_id, None)),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The local copy of our own object as the controller writes it, carrying `condition`.
fn copy_with(spec: ClusterEndpointSpec, condition: &ValidCondition) -> ClusterEndpoint {
    let mut obj = ClusterEndpoint {
        metadata: ObjectMeta {
            name: Some(spec.cluster_id.clone()),
            namespace: Some("local".to_owned()),
            resource_version: Some("9".to_owned()),
            labels: Some(local_labels(None)),
            annotations: Some(local_annotations(None)),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    obj = with_condition(obj, condition);
    obj
}

/// The local copy in steady state: our spec, accepted.
fn copy(spec: ClusterEndpointSpec) -> ClusterEndpoint {
    copy_with(spec, &accepted())
}

/// A local object the controller did not create.
fn unmanaged(name: &str, spec: ClusterEndpointSpec) -> ClusterEndpoint {
    let mut obj = mirror(name, spec);
    obj.metadata.labels = None;
    obj
}

/// A compact summary of a plan, for table comparison.
#[derive(Debug, PartialEq, Eq, Default)]
struct Summary {
    publish: Option<String>,
    condition: Option<(bool, String)>,
    local: Option<String>,
    local_condition: Option<(bool, String)>,
    local_taken: Option<String>,
    unpublished: Option<String>,
    upsert: Vec<String>,
    delete: Vec<String>,
    refused: Vec<(String, String)>,
    /// The cluster IDs written to the local copy's `status.refused`.
    refusals_listed: Option<Vec<String>>,
    name_taken: Vec<String>,
}

fn summarise(plan: &SyncPlan) -> Summary {
    let upsert_kind = |u: &Upsert| match u {
        Upsert::Create(_) => format!("create {}", u.name()),
        Upsert::Replace(_) => format!("replace {}", u.name()),
    };
    let condition = |w: &StatusWrite| (w.condition.valid, w.condition.reason.clone());
    Summary {
        publish: plan.publish.as_ref().map(upsert_kind),
        condition: plan.own_condition.as_ref().map(condition),
        local: plan.local_upsert.as_ref().map(upsert_kind),
        local_condition: plan.local_condition.as_ref().map(condition),
        local_taken: plan.local_taken.clone(),
        unpublished: plan.unpublished.as_ref().map(|c| c.reason.clone()),
        upsert: plan.mirror_upsert.iter().map(upsert_kind).collect(),
        delete: plan.mirror_delete.iter().map(|d| d.name.clone()).collect(),
        refused: plan
            .refused
            .iter()
            .map(|r| (r.object.clone(), r.errors[0].reason().to_owned()))
            .collect(),
        refusals_listed: plan
            .local_refusals
            .as_ref()
            .map(|w| w.refused.iter().map(|r| r.cluster_id.clone()).collect()),
        name_taken: plan.name_taken.clone(),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn refused(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Name, local spec, broker objects, local objects, expected plan.
type Case = (
    &'static str,
    Option<ClusterEndpointSpec>,
    Vec<ClusterEndpoint>,
    Vec<ClusterEndpoint>,
    Summary,
);

#[test]
fn plans() {
    let own_ok = || with_condition(at_broker("site-a", 1, a()), &accepted());
    let created = || Some("create site-a".to_owned());
    let valid = || Some((true, "Accepted".to_owned()));
    let overlapping = || Some((false, "OverlappingCIDR".to_owned()));
    let cases: Vec<Case> = vec![
        (
            "empty broker: publish ours and write the local copy, then mark both valid",
            Some(a()),
            vec![],
            vec![],
            Summary {
                publish: created(),
                condition: valid(),
                local: created(),
                local_condition: valid(),
                ..Summary::default()
            },
        ),
        (
            "steady state: nothing to do",
            Some(a()),
            vec![own_ok(), at_broker("site-b", 2, b())],
            vec![copy(a()), mirror("site-b", b())],
            Summary::default(),
        ),
        (
            "nothing to publish and nothing at the broker",
            None,
            vec![],
            vec![],
            Summary::default(),
        ),
        (
            "no local spec: our broker object and local copy are left alone, others still mirrored",
            None,
            vec![own_ok(), at_broker("site-b", 2, b())],
            vec![copy_with(spec("site-a", "10.11.0.0/16", KEY_A), &accepted())],
            Summary {
                upsert: s(&["create site-b"]),
                ..Summary::default()
            },
        ),
        (
            "our spec changed: replace at the broker and locally, conditions already right",
            Some(spec("site-a", "10.11.0.0/16", KEY_A)),
            vec![own_ok()],
            vec![copy(a())],
            Summary {
                publish: Some("replace site-a".into()),
                local: Some("replace site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "the local copy was deleted: only it is written again, with its condition",
            Some(a()),
            vec![own_ok()],
            vec![],
            Summary {
                local: created(),
                local_condition: valid(),
                ..Summary::default()
            },
        ),
        (
            "the local copy differs (say, another gateway first): only it is replaced",
            Some(a()),
            vec![own_ok()],
            vec![copy(spec("site-a", "10.1.0.0/16", KEY_B))],
            Summary {
                local: Some("replace site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "a local copy also labelled a mirror is relabelled",
            Some(a()),
            vec![own_ok()],
            vec![{
                let mut c = copy(a());
                c.metadata.labels = Some(
                    [
                        (LOCAL_LABEL.to_owned(), "true".to_owned()),
                        (MIRRORED_LABEL.to_owned(), "true".to_owned()),
                    ]
                    .into(),
                );
                c
            }],
            Summary {
                local: Some("replace site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "our object lacks the condition: write only the condition, at the broker and locally",
            Some(a()),
            vec![at_broker("site-a", 1, a())],
            vec![copy_with(a(), &ValidCondition {
                valid: false,
                reason: "OverlappingCIDR".into(),
                message: "old".into(),
            })],
            Summary {
                condition: valid(),
                local_condition: valid(),
                ..Summary::default()
            },
        ),
        (
            "remote objects are mirrored, in creation order",
            Some(a()),
            vec![
                own_ok(),
                at_broker("site-c", 3, c()),
                at_broker("site-b", 2, b()),
            ],
            vec![copy(a())],
            Summary {
                upsert: s(&["create site-b", "create site-c"]),
                ..Summary::default()
            },
        ),
        (
            "a changed remote spec updates its mirror",
            Some(a()),
            vec![
                own_ok(),
                at_broker("site-b", 2, spec("site-b", "10.22.0.0/16", KEY_B)),
            ],
            vec![copy(a()), mirror("site-b", b())],
            Summary {
                upsert: s(&["replace site-b"]),
                ..Summary::default()
            },
        ),
        (
            "a mirror whose broker object is gone is deleted",
            Some(a()),
            vec![own_ok()],
            vec![copy(a()), mirror("site-b", b())],
            Summary {
                delete: s(&["site-b"]),
                ..Summary::default()
            },
        ),
        (
            "objects that are not ours are never touched; one holding our name is reported",
            Some(a()),
            vec![own_ok()],
            vec![unmanaged("site-a", a()), unmanaged("site-z", c())],
            Summary {
                local_taken: Some("site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "a remote name held by a local non-mirror is reported, not overwritten",
            Some(a()),
            vec![own_ok(), at_broker("site-b", 2, b())],
            vec![copy(a()), unmanaged("site-b", c())],
            Summary {
                name_taken: s(&["site-b"]),
                ..Summary::default()
            },
        ),
        (
            "a newer object overlapping our CIDRs is refused",
            Some(a()),
            vec![
                own_ok(),
                at_broker("site-x", 2, spec("site-x", "10.1.128.0/17", KEY_B)),
            ],
            vec![copy(a())],
            Summary {
                refused: refused(&[("site-x", "OverlappingCIDR")]),
                refusals_listed: Some(vec!["site-x".into()]),
                ..Summary::default()
            },
        ),
        (
            "an older remote overlapping our CIDRs wins: ours is refused (both conditions), it is mirrored",
            Some(a()),
            vec![
                with_condition(at_broker("site-a", 5, a()), &accepted()),
                at_broker("site-x", 2, spec("site-x", "10.1.128.0/17", KEY_B)),
            ],
            vec![copy(a())],
            Summary {
                condition: overlapping(),
                local_condition: overlapping(),
                upsert: s(&["create site-x"]),
                ..Summary::default()
            },
        ),
        (
            "our not-yet-published object is the newest",
            Some(a()),
            vec![at_broker("site-x", 2, spec("site-x", "10.1.0.0/16", KEY_B))],
            vec![],
            Summary {
                publish: created(),
                condition: overlapping(),
                local: created(),
                local_condition: overlapping(),
                upsert: s(&["create site-x"]),
                ..Summary::default()
            },
        ),
        (
            "same creation time: the name decides",
            None,
            vec![
                at_broker("site-y", 2, spec("site-y", "10.5.0.0/16", KEY_C)),
                at_broker("site-b", 2, spec("site-b", "10.5.0.0/16", KEY_B)),
            ],
            vec![],
            Summary {
                upsert: s(&["create site-b"]),
                refused: refused(&[("site-y", "OverlappingCIDR")]),
                ..Summary::default()
            },
        ),
        (
            "an object claiming our cluster ID under another name is refused, even if older",
            Some(a()),
            vec![
                own_ok(),
                at_broker("impostor", 0, spec("site-a", "10.9.0.0/16", KEY_C)),
            ],
            vec![copy(a())],
            Summary {
                refused: refused(&[("impostor", "DuplicateClusterID")]),
                refusals_listed: Some(vec!["site-a".into()]),
                ..Summary::default()
            },
        ),
        (
            "an invalid remote object is refused and not mirrored",
            Some(a()),
            vec![
                own_ok(),
                at_broker("site-b", 2, spec("site-b", "10.2.0.1/16", KEY_B)),
            ],
            vec![copy(a())],
            Summary {
                refused: refused(&[("site-b", "InvalidCIDR")]),
                refusals_listed: Some(vec!["site-b".into()]),
                ..Summary::default()
            },
        ),
        (
            "a mirror whose source turned invalid is kept as it was",
            Some(a()),
            vec![
                own_ok(),
                at_broker("site-b", 2, spec("site-b", "10.1.0.0/16", KEY_B)),
            ],
            vec![copy(a()), mirror("site-b", b())],
            Summary {
                refused: refused(&[("site-b", "OverlappingCIDR")]),
                refusals_listed: Some(vec!["site-b".into()]),
                ..Summary::default()
            },
        ),
        (
            "a stale mirror of our own object is taken over as the local copy",
            Some(a()),
            vec![own_ok()],
            vec![mirror("site-a", a())],
            Summary {
                local: Some("replace site-a".into()),
                local_condition: valid(),
                ..Summary::default()
            },
        ),
        (
            "without a spec, a stale mirror of our own object is removed",
            None,
            vec![own_ok()],
            vec![mirror("site-a", a())],
            Summary {
                delete: s(&["site-a"]),
                ..Summary::default()
            },
        ),
        (
            "our spec is invalid on its own: nothing new is published, the local copy says why",
            Some(spec("site-a", "10.1.0.1/16", KEY_A)),
            vec![own_ok(), at_broker("site-b", 2, b())],
            vec![copy(a()), mirror("site-b", b())],
            Summary {
                local_condition: Some((false, "InvalidCIDR".into())),
                unpublished: Some("InvalidCIDR".into()),
                ..Summary::default()
            },
        ),
        (
            "our spec is invalid and nothing was ever published: only the report",
            Some(spec("site-a", "10.1.0.0/16", "not-a-key")),
            vec![at_broker("site-b", 2, b())],
            vec![],
            Summary {
                unpublished: Some("InvalidPublicKey".into()),
                upsert: s(&["create site-b"]),
                ..Summary::default()
            },
        ),
        (
            "our spec is invalid and a stale mirror holds our name: it is not converted",
            Some(spec("site-a", "10.1.0.1/16", KEY_A)),
            vec![own_ok()],
            vec![mirror("site-a", a())],
            Summary {
                unpublished: Some("InvalidCIDR".into()),
                delete: s(&["site-a"]),
                ..Summary::default()
            },
        ),
    ];
    for (name, local, broker, locals, want) in cases {
        let plan = plan_sync(
            "site-a",
            local.as_ref().into(),
            &broker,
            &locals,
            &Acceptance::default(),
        );
        assert_eq!(summarise(&plan), want, "case: {name}");
        let writes_nothing = want.publish.is_none()
            && want.condition.is_none()
            && want.local.is_none()
            && want.local_condition.is_none()
            && want.refusals_listed.is_none()
            && want.upsert.is_empty()
            && want.delete.is_empty();
        assert_eq!(plan.is_noop(), writes_nothing, "case: {name}");
    }
}

#[test]
fn an_invalid_spec_once_reported_on_the_local_copy_writes_nothing_more() {
    let bad = spec("site-a", "10.1.0.1/16", KEY_A);
    let broker = [with_condition(at_broker("site-a", 1, a()), &accepted())];
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&bad),
        &broker,
        &[copy(a())],
        &Acceptance::default(),
    );
    let write = plan
        .local_condition
        .clone()
        .expect("a condition on the copy");
    assert!(!write.condition.valid);
    assert!(
        write.condition.message.starts_with(UNPUBLISHED_PREFIX)
            && write.condition.message.contains("10.1.0.1/16"),
        "{}",
        write.condition.message
    );
    // Once the copy carries it, the next pass is a no-op (the report stays).
    let marked = copy_with(a(), &write.condition);
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&bad),
        &broker,
        &[marked],
        &Acceptance::default(),
    );
    assert!(plan.is_noop(), "{plan:?}");
    assert!(plan.unpublished.is_some());
}

#[test]
fn a_spec_that_cannot_be_built_is_reported_on_the_local_copy() {
    let error = LocalSpecError::NoPodCidrs {
        cluster: "site-a".into(),
        nodes: 2,
    };
    let broker = [with_condition(at_broker("site-a", 1, a()), &accepted())];
    let plan = plan_sync(
        "site-a",
        Publish::Unbuildable(&error),
        &broker,
        &[copy(a())],
        &Acceptance::default(),
    );
    assert_eq!(
        summarise(&plan),
        Summary {
            local_condition: Some((false, "NoPodCIDRs".into())),
            unpublished: Some("NoPodCIDRs".into()),
            ..Summary::default()
        }
    );
    let message = plan.local_condition.map(|w| w.condition.message);
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("--pod-cidrs")),
        "{message:?}"
    );

    // Someone else's object holding our name is still not ours to mark.
    let plan = plan_sync(
        "site-a",
        Publish::Unbuildable(&error),
        &broker,
        &[unmanaged("site-a", a())],
        &Acceptance::default(),
    );
    assert!(plan.is_noop(), "{plan:?}");
    assert_eq!(plan.local_taken.as_deref(), Some("site-a"));
}

#[test]
fn without_the_broker_only_the_local_copy_follows() {
    let moved = spec("site-a", "10.1.0.0/16", KEY_B);
    let (same, bad) = (a(), spec("site-a", "10.1.0.1/16", KEY_A));
    let cases: Vec<(&str, Publish<'_>, Vec<ClusterEndpoint>, Summary)> = vec![
        (
            "a changed spec replaces the copy; its condition is left as it is",
            Publish::Spec(&moved),
            vec![copy(a()), mirror("site-b", b())],
            Summary {
                local: Some("replace site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "a missing copy is created without a condition",
            Publish::Spec(&moved),
            vec![],
            Summary {
                local: Some("create site-a".into()),
                ..Summary::default()
            },
        ),
        (
            "an unchanged copy: nothing, and mirrors are never deleted",
            Publish::Spec(&same),
            vec![copy(a()), mirror("site-z", c())],
            Summary::default(),
        ),
        (
            "nothing to publish: nothing",
            Publish::Nothing,
            vec![copy(a()), mirror("site-a", a())],
            Summary::default(),
        ),
        (
            "an invalid spec is still reported on the copy",
            Publish::Spec(&bad),
            vec![copy(a())],
            Summary {
                local_condition: Some((false, "InvalidCIDR".into())),
                unpublished: Some("InvalidCIDR".into()),
                ..Summary::default()
            },
        ),
    ];
    for (name, publish, locals, want) in cases {
        let plan = plan_without_broker("site-a", publish, &locals);
        assert_eq!(summarise(&plan), want, "case: {name}");
        assert!(plan.publish.is_none() && plan.own_condition.is_none());
    }
}

#[test]
fn the_local_copy_carries_our_spec_and_label() {
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &[],
        &[],
        &Acceptance::default(),
    );
    let Some(Upsert::Create(obj)) = &plan.local_upsert else {
        panic!("expected a create, got {:?}", plan.local_upsert);
    };
    assert_eq!(obj.spec, a());
    assert_eq!(obj.metadata.name.as_deref(), Some("site-a"));
    assert_eq!(obj.metadata.namespace, None, "apply decides the namespace");
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(LOCAL_LABEL).map(String::as_str), Some("true"));
    assert_eq!(labels.get(MIRRORED_LABEL), None);

    // Taking over a mirror drops its mirror labels, keeps foreign ones and the resourceVersion.
    let mut stale = mirror("site-a", a());
    stale
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "db".into());
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &[],
        &[stale],
        &Acceptance::default(),
    );
    let Some(Upsert::Replace(obj)) = &plan.local_upsert else {
        panic!("expected a replace, got {:?}", plan.local_upsert);
    };
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("7"));
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["causeway.dev/local", "team"]
    );
    assert!(plan.mirror_delete.is_empty(), "{:?}", plan.mirror_delete);
}

#[test]
fn a_plan_with_nothing_to_do_is_empty() {
    let broker = [
        with_condition(at_broker("site-a", 1, a()), &accepted()),
        at_broker("site-b", 2, b()),
    ];
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &broker,
        &[copy(a()), mirror("site-b", b())],
        &Acceptance::default(),
    );
    assert_eq!(plan, SyncPlan::default());
}

#[test]
fn mirrors_copy_the_spec_and_carry_the_labels() {
    let broker = [at_broker("site-b", 2, b())];
    let plan = plan_sync(
        "site-a",
        Publish::Nothing,
        &broker,
        &[],
        &Acceptance::default(),
    );
    let [Upsert::Create(obj)] = plan.mirror_upsert.as_slice() else {
        panic!("expected one create, got {:?}", plan.mirror_upsert);
    };
    assert_eq!(obj.spec, b());
    assert_eq!(obj.metadata.name.as_deref(), Some("site-b"));
    assert_eq!(obj.metadata.namespace, None, "apply decides the namespace");
    assert_eq!(obj.metadata.resource_version, None);
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(SOURCE_CLUSTER_LABEL).map(String::as_str),
        Some("site-b")
    );
    assert_eq!(labels.get(MIRRORED_LABEL).map(String::as_str), Some("true"));
}

#[test]
fn updates_keep_the_observed_resource_version_and_foreign_labels() {
    let mut existing = mirror("site-b", b());
    existing
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "db".into());
    let changed = spec("site-b", "10.22.0.0/16", KEY_B);
    let plan = plan_sync(
        "site-a",
        Publish::Nothing,
        &[at_broker("site-b", 2, changed.clone())],
        &[existing],
        &Acceptance::default(),
    );
    let [Upsert::Replace(obj)] = plan.mirror_upsert.as_slice() else {
        panic!("expected one replace, got {:?}", plan.mirror_upsert);
    };
    assert_eq!(obj.spec, changed);
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("7"));
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("db"));
    assert_eq!(labels.get(MIRRORED_LABEL).map(String::as_str), Some("true"));

    // Publishing over our own object keeps its resourceVersion too.
    let own = at_broker("site-a", 1, a());
    let new = spec("site-a", "10.11.0.0/16", KEY_A);
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&new),
        &[own],
        &[],
        &Acceptance::default(),
    );
    let Some(Upsert::Replace(obj)) = &plan.publish else {
        panic!("expected a replace, got {:?}", plan.publish);
    };
    assert_eq!(obj.metadata.resource_version.as_deref(), Some("1"));
    assert_eq!(obj.spec, new);

    // Deletes carry the observed resourceVersion as a precondition.
    let plan = plan_sync(
        "site-a",
        Publish::Nothing,
        &[],
        &[mirror("site-b", b())],
        &Acceptance::default(),
    );
    assert_eq!(
        plan.mirror_delete,
        vec![Delete {
            name: "site-b".into(),
            resource_version: Some("7".into())
        }]
    );
}

#[test]
fn refusals_carry_messages_a_person_can_act_on() {
    let broker = [
        with_condition(at_broker("site-a", 1, a()), &accepted()),
        at_broker("site-x", 2, spec("site-x", "10.1.0.0/24", KEY_B)),
    ];
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &broker,
        &[],
        &Acceptance::default(),
    );
    let [refusal] = plan.refused.as_slice() else {
        panic!("expected one refusal, got {:?}", plan.refused);
    };
    assert_eq!(refusal.cluster_id, "site-x");
    let message = refusal.errors[0].to_string();
    assert!(
        message.contains("site-x") && message.contains("site-a"),
        "{message}"
    );
    assert!(message.contains("do not overlap"), "{message}");

    // Our own refused object gets every reason in its condition message.
    let broker = [
        at_broker("site-x", 0, spec("site-x", "10.1.0.0/24", KEY_B)),
        at_broker("site-a", 1, a()),
    ];
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &broker,
        &[],
        &Acceptance::default(),
    );
    let write = plan.own_condition.expect("a condition for our object");
    assert_eq!(write.object, "site-a");
    let condition = write.condition;
    assert!(!condition.valid);
    assert_eq!(condition.reason, "OverlappingCIDR");
    assert!(
        condition.message.contains("site-x"),
        "{}",
        condition.message
    );
}

#[test]
fn merging_a_condition_keeps_others_and_the_transition_time_unless_it_flips() {
    let then = Time(Timestamp::UNIX_EPOCH);
    let now = Time(Timestamp::from_second(1_800_000_000).expect("valid second"));
    let other = Condition {
        type_: "Mirrored".into(),
        status: "True".into(),
        reason: "Synced".into(),
        message: "ok".into(),
        last_transition_time: then.clone(),
        observed_generation: None,
    };
    let current = with_condition(at_broker("site-a", 1, a()), &accepted())
        .status
        .map(|s| s.conditions)
        .unwrap_or_default();
    let current: Vec<Condition> = current.into_iter().chain([other.clone()]).collect();

    // Same status, new message: the transition time stays.
    let reworded = ValidCondition {
        message: "still fine".into(),
        ..accepted()
    };
    let merged = reworded.merge_into(&current, now.clone());
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0], other);
    assert_eq!(merged[1].message, "still fine");
    assert_eq!(merged[1].last_transition_time, then);

    // A flip to False takes the new time.
    let refused = ValidCondition {
        valid: false,
        reason: "OverlappingCIDR".into(),
        message: "overlaps".into(),
    };
    let merged = refused.merge_into(&current, now.clone());
    assert_eq!(merged[1].status, "False");
    assert_eq!(merged[1].last_transition_time, now);

    // From nothing: just the one condition.
    let merged = accepted().merge_into(&[], now.clone());
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].type_, VALID_CONDITION);
}

#[test]
fn the_local_copy_is_annotated_with_this_release_and_keeps_other_annotations() {
    let release = env!("CARGO_PKG_VERSION");
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &[],
        &[],
        &Acceptance::default(),
    );
    let Some(Upsert::Create(obj)) = &plan.local_upsert else {
        panic!("expected a create, got {:?}", plan.local_upsert);
    };
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(VERSION_ANNOTATION).map(String::as_str),
        Some(release)
    );

    // A copy written by another release is rewritten with ours; foreign annotations stay.
    let mut older = copy(a());
    older.metadata.annotations = Some(BTreeMap::from([
        (VERSION_ANNOTATION.to_owned(), "0.0.1".to_owned()),
        ("team".to_owned(), "db".to_owned()),
    ]));
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &[],
        &[older],
        &Acceptance::default(),
    );
    let Some(Upsert::Replace(obj)) = &plan.local_upsert else {
        panic!("expected a replace, got {:?}", plan.local_upsert);
    };
    assert_eq!(
        obj.metadata.annotations,
        Some(BTreeMap::from([
            (VERSION_ANNOTATION.to_owned(), release.to_owned()),
            ("team".to_owned(), "db".to_owned()),
        ]))
    );
}

#[test]
fn our_object_is_published_under_our_cluster_id() {
    let plan = plan_sync(
        "site-a",
        Publish::Spec(&a()),
        &[at_broker("site-b", 2, b())],
        &[],
        &Acceptance::default(),
    );
    let Some(Upsert::Create(obj)) = &plan.publish else {
        panic!("expected a create, got {:?}", plan.publish);
    };
    assert_eq!(obj.metadata.name.as_deref(), Some("site-a"));
    assert_eq!(obj.metadata.namespace, None, "apply decides the namespace");
    assert_eq!(obj.spec, a());
}

#[test]
fn refusals_once_listed_on_the_local_copy_are_not_written_again_and_go_when_fixed() {
    let broker = [
        with_condition(at_broker("site-a", 1, a()), &accepted()),
        at_broker("site-x", 2, spec("site-x", "10.1.128.0/17", KEY_B)),
    ];
    let plan = plan_sync(
        "site-a",
        Some(a()).as_ref().into(),
        &broker,
        &[copy(a())],
        &Acceptance::default(),
    );
    let write = plan.local_refusals.expect("the refusal is listed");
    assert_eq!(write.object, "site-a");
    assert_eq!(write.refused.len(), 1);
    let listed = &write.refused[0];
    assert_eq!(
        (listed.cluster_id.as_str(), listed.reason.as_str()),
        ("site-x", "OverlappingCIDR")
    );
    assert!(listed.message.contains("10.1.128.0/17"), "{listed:?}");

    // Listed already: nothing to write.
    let mut listed_copy = with_condition(copy(a()), &accepted());
    if let Some(status) = listed_copy.status.as_mut() {
        status.refused = write.refused.clone();
    }
    let plan = plan_sync(
        "site-a",
        Some(a()).as_ref().into(),
        &broker,
        std::slice::from_ref(&listed_copy),
        &Acceptance::default(),
    );
    assert!(plan.is_noop(), "{plan:#?}");

    // site-x fixed its CIDRs: the list is emptied.
    let fixed = [
        with_condition(at_broker("site-a", 1, a()), &accepted()),
        at_broker("site-x", 2, spec("site-x", "10.7.0.0/16", KEY_B)),
    ];
    let plan = plan_sync(
        "site-a",
        Some(a()).as_ref().into(),
        &fixed,
        &[listed_copy],
        &Acceptance::default(),
    );
    assert_eq!(
        plan.local_refusals.map(|w| w.refused),
        Some(Vec::new()),
        "the list is emptied"
    );
}

#[test]
fn a_listed_refusal_keeps_its_message_within_the_crds_bound() {
    let errors: Vec<ValidationError> = (0..400)
        .map(|i| ValidationError::DuplicateClusterId {
            object: format!("impostor-{i}"),
            value: "site-x".into(),
            other_object: "site-x".into(),
        })
        .collect();
    let listed = refusal_status(&[Refusal {
        object: "site-x".into(),
        cluster_id: "site-x".into(),
        errors,
    }]);
    assert!(
        listed[0].message.len() <= 4096,
        "{}",
        listed[0].message.len()
    );
    assert!(listed[0].message.ends_with("..."));
}
