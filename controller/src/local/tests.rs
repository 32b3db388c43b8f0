//! Table-driven tests of [`build_local_spec`] and its parts: objects in, spec or error out.

use super::*;
use causeway_crds::validate::validate_endpoint;
use causeway_crds::{ClusterEndpoint, GatewayEndpoint, GatewaySpec, GatewayStatus};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::core::v1::NodeSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

const CLUSTER: &str = "site-a";

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).expect("a valid second")
}

fn node(name: &str, cidrs: &[&str]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: (!cidrs.is_empty()).then(|| cidrs.iter().map(|c| c.to_string()).collect()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

fn legacy_node(name: &str, cidr: &str) -> Node {
    let mut n = node(name, &[]);
    if let Some(spec) = n.spec.as_mut() {
        spec.pod_cidr = Some(cidr.to_owned());
    }
    n
}

fn key(byte: u8) -> String {
    use std::fmt::Write;
    // base64 of 32 equal bytes: a 4-character group per 3 bytes, then the 2-byte tail.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = u32::from(byte);
    let triple = (b << 16) | (b << 8) | b;
    let mut out = String::new();
    for _ in 0..10 {
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[((triple >> shift) & 63) as usize] as char);
        }
    }
    let pair = (b << 16) | (b << 8);
    for shift in [18, 12, 6] {
        out.push(ALPHABET[((pair >> shift) & 63) as usize] as char);
    }
    let _ = write!(out, "=");
    out
}

fn gateway(name: &str, cluster: &str, n: u8, role: Option<GatewayRole>) -> Gateway {
    Gateway {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("causeway".to_owned()),
            ..ObjectMeta::default()
        },
        spec: GatewaySpec {
            cluster_id: cluster.to_owned(),
            endpoint: GatewayEndpoint {
                node_name: name.to_owned(),
                public_endpoint: format!("198.18.0.{n}:51820"),
                public_key: key(n),
                private_ip: Some(format!("192.168.0.{n}")),
                private_ips: vec![format!("192.168.0.{n}")],
                health_check_ip: None,
            },
        },
        status: role.map(|role| GatewayStatus {
            role: Some(role),
            ..GatewayStatus::default()
        }),
    }
}

fn deleting(mut g: Gateway) -> Gateway {
    g.metadata.deletion_timestamp = Some(Time(at(0)));
    g.metadata.finalizers = Some(vec!["example.com/hold".to_owned()]);
    g
}

/// A gateway Lease held by `holder`, renewed at second `renewed`, lasting `seconds`.
fn lease(holder: Option<&str>, renewed: Option<i64>, seconds: Option<i32>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(causeway_crds::names::gateway_lease(CLUSTER)),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }),
    }
}

fn config(pod: Option<&[&str]>, service: &[&str]) -> LocalConfig {
    let nets = |v: &[&str]| -> Vec<IpNet> {
        v.iter()
            .map(|c| c.parse().expect("test CIDRs parse"))
            .collect()
    };
    LocalConfig {
        pod_cidrs: pod.map(nets),
        service_cidrs: nets(service),
    }
}

/// What a case expects: pod CIDRs and gateway order, or an error's reason.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Spec {
        pod: Vec<String>,
        gateways: Vec<String>,
    },
    Error(&'static str),
}

fn spec_of(pod: &[&str], gateways: &[&str]) -> Want {
    Want::Spec {
        pod: pod.iter().map(|s| s.to_string()).collect(),
        gateways: gateways.iter().map(|s| s.to_string()).collect(),
    }
}

struct Case {
    name: &'static str,
    config: LocalConfig,
    nodes: Vec<Node>,
    gateways: Vec<Gateway>,
    lease: Option<Lease>,
    want: Want,
}

#[test]
fn builds() {
    use GatewayRole::{Active, Passive};
    let svc = &["10.101.0.0/16"];
    let three_nodes = || {
        vec![
            node("n2", &["10.1.1.0/24"]),
            node("n1", &["10.1.0.0/24"]),
            node("n3", &["10.1.3.0/24"]),
        ]
    };
    let gws = || {
        vec![
            gateway("gw-c", CLUSTER, 3, Some(Passive)),
            gateway("gw-a", CLUSTER, 1, Some(Passive)),
            gateway("gw-b", CLUSTER, 2, Some(Active)),
        ]
    };
    let now = 100;
    let cases = vec![
        Case {
            name: "pod CIDRs aggregated from the Nodes; unexpired Lease holder first, then by name",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(Some("gw-c"), Some(now - 5), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-c", "gw-a", "gw-b"]),
        },
        Case {
            name: "configured pod CIDRs win over the Nodes'",
            config: config(Some(&["10.1.0.0/16"]), svc),
            nodes: three_nodes(),
            gateways: vec![],
            lease: None,
            want: spec_of(&["10.1.0.0/16"], &[]),
        },
        Case {
            name: "configured pod CIDRs need no Node at all",
            config: config(Some(&["10.1.0.0/16", "fd00:1::/48"]), svc),
            nodes: vec![],
            gateways: vec![],
            lease: None,
            want: spec_of(&["10.1.0.0/16", "fd00:1::/48"], &[]),
        },
        Case {
            name: "dual-stack Nodes, a legacy spec.podCIDR and a Node without any",
            config: config(None, svc),
            nodes: vec![
                node("n1", &["10.1.0.0/24", "fd00:1::/64"]),
                node("n2", &["10.1.1.0/24", "fd00:1:0:1::/64"]),
                legacy_node("n3", "10.1.2.0/24"),
                node("n4", &[]),
            ],
            gateways: vec![],
            lease: None,
            want: spec_of(&["10.1.0.0/23", "10.1.2.0/24", "fd00:1::/63"], &[]),
        },
        Case {
            name: "no Node has pod CIDRs and none configured: an error naming the fix",
            config: config(None, svc),
            nodes: vec![node("n1", &[]), node("n2", &[])],
            gateways: gws(),
            lease: None,
            want: Want::Error("NoPodCIDRs"),
        },
        Case {
            name: "no Nodes at all",
            config: config(None, svc),
            nodes: vec![],
            gateways: vec![],
            lease: None,
            want: Want::Error("NoPodCIDRs"),
        },
        Case {
            name: "an empty configured list means: from the Nodes",
            config: config(Some(&[]), svc),
            nodes: three_nodes(),
            gateways: vec![],
            lease: None,
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &[]),
        },
        Case {
            name: "no service CIDRs",
            config: config(None, &[]),
            nodes: three_nodes(),
            gateways: vec![],
            lease: None,
            want: Want::Error("NoServiceCIDRs"),
        },
        Case {
            name: "malformed and host-bit Node CIDRs are kept as written for validation",
            config: config(None, svc),
            nodes: vec![
                node("n1", &["10.1.0.0/24"]),
                node("n2", &["10.1.1.7/24"]),
                node("n3", &["not-a-cidr"]),
                node("n4", &["not-a-cidr"]),
            ],
            gateways: vec![],
            lease: None,
            want: spec_of(&["10.1.0.0/24", "10.1.1.7/24", "not-a-cidr"], &[]),
        },
        Case {
            name: "an expired Lease falls back to status.role",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(Some("gw-c"), Some(now - 16), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "a Lease expiring exactly now is expired",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(Some("gw-c"), Some(now - 15), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "a holder without a Gateway object falls back to status.role",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(Some("gw-gone"), Some(now), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "a released Lease (no holder) falls back to status.role",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(None, None, Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "a Lease without a duration is not trusted",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: gws(),
            lease: Some(lease(Some("gw-c"), Some(now), None)),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "no Lease and no active role: by name",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: vec![
                gateway("gw-c", CLUSTER, 3, Some(Passive)),
                gateway("gw-a", CLUSTER, 1, None),
                gateway("gw-b", CLUSTER, 2, Some(Passive)),
            ],
            lease: None,
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-a", "gw-b", "gw-c"]),
        },
        Case {
            name: "two claiming status.role active: the first by name",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: vec![
                gateway("gw-c", CLUSTER, 3, Some(Active)),
                gateway("gw-a", CLUSTER, 1, Some(Passive)),
                gateway("gw-b", CLUSTER, 2, Some(Active)),
            ],
            lease: None,
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-b", "gw-a", "gw-c"]),
        },
        Case {
            name: "other clusters' Gateways are left out, even the Lease holder's namesake",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: vec![
                gateway("gw-a", CLUSTER, 1, Some(Passive)),
                gateway("gw-x", "site-x", 4, Some(Active)),
                gateway("gw-y", "site-x", 5, None),
            ],
            lease: Some(lease(Some("gw-x"), Some(now), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-a"]),
        },
        Case {
            name: "Gateways being deleted are left out, even the Lease holder",
            config: config(None, svc),
            nodes: three_nodes(),
            gateways: vec![
                gateway("gw-a", CLUSTER, 1, Some(Passive)),
                deleting(gateway("gw-b", CLUSTER, 2, Some(Active))),
                gateway("gw-c", CLUSTER, 3, Some(Passive)),
            ],
            lease: Some(lease(Some("gw-b"), Some(now), Some(15))),
            want: spec_of(&["10.1.0.0/23", "10.1.3.0/24"], &["gw-a", "gw-c"]),
        },
    ];
    for case in cases {
        let got = build_local_spec(
            CLUSTER,
            &case.config,
            &case.nodes,
            &case.gateways,
            case.lease.as_ref(),
            at(now),
        );
        let summary = match &got {
            Ok(spec) => {
                assert_eq!(spec.cluster_id, CLUSTER, "case: {}", case.name);
                assert_eq!(spec.service_cidrs, ["10.101.0.0/16"], "case: {}", case.name);
                Want::Spec {
                    pod: spec.pod_cidrs.clone(),
                    gateways: spec.gateways.iter().map(|g| g.node_name.clone()).collect(),
                }
            }
            Err(e) => Want::Error(e.reason()),
        };
        assert_eq!(summary, case.want, "case: {}", case.name);
    }
}

#[test]
fn gateways_carry_their_spec_unchanged() {
    let gw = gateway("gw-a", CLUSTER, 1, None);
    let spec = build_local_spec(
        CLUSTER,
        &config(Some(&["10.1.0.0/16"]), &["10.101.0.0/16"]),
        &[],
        std::slice::from_ref(&gw),
        None,
        at(0),
    )
    .expect("a spec");
    assert_eq!(spec.gateways, vec![gw.spec.endpoint]);
    // What the builder makes from good input passes validation.
    validate_endpoint(&ClusterEndpoint::new(CLUSTER, spec)).expect("a valid spec");
}

#[test]
fn malformed_node_cidrs_are_refused_by_validation_with_their_value() {
    let spec = build_local_spec(
        CLUSTER,
        &config(None, &["10.101.0.0/16"]),
        &[node("n1", &["10.1.0.0/24"]), node("n2", &["10.1.1.300/24"])],
        &[],
        None,
        at(0),
    )
    .expect("built: validation is not the builder's job");
    let errors = validate_endpoint(&ClusterEndpoint::new(CLUSTER, spec)).expect_err("refused");
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("10.1.1.300/24")),
        "{errors:?}"
    );
}

#[test]
fn errors_name_the_cluster_and_the_fix() {
    let err = build_local_spec(
        CLUSTER,
        &config(None, &["10.101.0.0/16"]),
        &[node("n1", &[])],
        &[],
        None,
        at(0),
    )
    .expect_err("no pod CIDRs");
    let message = err.to_string();
    assert!(message.contains("\"site-a\""), "{message}");
    assert!(message.contains("--pod-cidrs"), "{message}");
    assert!(message.contains("1 Node(s)"), "{message}");

    let err = build_local_spec(
        CLUSTER,
        &config(Some(&["10.1.0.0/16"]), &[]),
        &[],
        &[],
        None,
        at(0),
    )
    .expect_err("no service CIDRs");
    assert!(err.to_string().contains("--service-cidrs"), "{err}");
}

#[test]
fn lease_expiry_uses_renew_time_then_acquire_time() {
    let mut l = lease(Some("gw-a"), None, Some(10));
    assert_eq!(lease_holder(&l, at(5)), None, "no time at all: not trusted");
    if let Some(spec) = l.spec.as_mut() {
        spec.acquire_time = Some(MicroTime(at(0)));
    }
    assert_eq!(lease_holder(&l, at(5)), Some("gw-a"));
    assert_eq!(lease_holder(&l, at(10)), None);
    if let Some(spec) = l.spec.as_mut() {
        spec.renew_time = Some(MicroTime(at(8)));
    }
    assert_eq!(lease_holder(&l, at(10)), Some("gw-a"));
    assert_eq!(lease_holder(&l, at(18)), None);
    let empty = lease(Some(""), Some(0), Some(10));
    assert_eq!(lease_holder(&empty, at(1)), None, "an empty holder is none");
    let no_spec = Lease::default();
    assert_eq!(lease_holder(&no_spec, at(1)), None);
}

#[test]
fn cidr_lists_parse_or_say_how_to_fix_them() {
    let ok: &[(&str, &[&str])] = &[
        ("10.1.0.0/16", &["10.1.0.0/16"]),
        (
            " 10.1.0.0/16 , fd00:1::/48 ",
            &["10.1.0.0/16", "fd00:1::/48"],
        ),
        ("", &[]),
        (",,", &[]),
    ];
    for (text, want) in ok {
        let got: Vec<String> = parse_cidr_list(text)
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, *want, "{text:?}");
    }
    let bad: &[(&str, &str)] = &[
        ("10.1.0.1/16", "write the network address 10.1.0.0/16"),
        ("10.1.0.0", "is not a CIDR"),
        ("10.1.0.0/16,bogus", "\"bogus\" is not a CIDR"),
        ("10.1.0.0/33", "is not a CIDR"),
    ];
    for (text, want) in bad {
        let err = parse_cidr_list(text).expect_err(text);
        assert!(err.to_string().contains(want), "{text:?}: {err}");
    }
}

#[test]
fn only_gateways_named_after_and_describing_a_candidate_node_are_published() {
    use GatewayRole::Active;
    let mut candidate = node("gw-a", &[]);
    candidate.metadata.labels = Some([(GATEWAY_NODE_LABEL.to_owned(), "true".to_owned())].into());
    let mut unlabelled = node("worker-1", &[]);
    unlabelled.metadata.labels = Some([(GATEWAY_NODE_LABEL.to_owned(), "false".to_owned())].into());
    let nodes = [candidate, unlabelled, node("gw-b", &[])];
    let mut lying = gateway("gw-a", CLUSTER, 7, Some(Active));
    lying.spec.endpoint.node_name = "worker-1".to_owned();
    let gateways = [
        gateway("gw-a", CLUSTER, 1, Some(Active)),
        gateway("gw-b", CLUSTER, 2, Some(Active)),
        gateway("worker-1", CLUSTER, 3, Some(Active)),
        gateway("made-up", CLUSTER, 4, Some(Active)),
        gateway("gw-x", "site-x", 5, Some(Active)),
    ];
    let (kept, refused) = publishable_gateways(CLUSTER, &gateways, &nodes);
    let names: Vec<&str> = kept
        .iter()
        .map(|g| g.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["gw-a"]);
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (name, reason) in ["gw-b", "worker-1", "made-up"].iter().zip(&refused) {
        assert!(reason.contains(&format!("{name:?}")), "{reason}");
        assert!(reason.contains("causeway.dev/gateway=true"), "{reason}");
    }
    let (kept, refused) = publishable_gateways(CLUSTER, std::slice::from_ref(&lying), &nodes);
    assert!(kept.is_empty());
    assert!(refused[0].contains("\"worker-1\""), "{refused:?}");
}
