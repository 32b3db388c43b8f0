//! Table-driven: a healthy two-cluster clusterset, then one breakage per finding class.

use std::collections::BTreeMap;

use causeway_crds::mcs::ServiceExportStatus;
use causeway_crds::names::{LOCAL_LABEL, MIRRORED_LABEL, SOURCE_CLUSTER_LABEL, VERSION_ANNOTATION};
use causeway_crds::{
    ClusterEndpoint, ClusterEndpointSpec, ClusterEndpointStatus, ConnectionState, ConnectionStatus,
    Gateway, GatewayEndpoint, GatewayRole, GatewaySpec, GatewayStatus, RouteStatus, ServiceExport,
};
use causeway_wire::keys::format_key;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("valid")
}

fn endpoint(id: &str, n: u8, local: bool) -> ClusterEndpoint {
    let mut labels = BTreeMap::new();
    if local {
        labels.insert(LOCAL_LABEL.to_owned(), "true".to_owned());
    } else {
        labels.insert(MIRRORED_LABEL.to_owned(), "true".to_owned());
        labels.insert(SOURCE_CLUSTER_LABEL.to_owned(), id.to_owned());
    }
    let mut ep = ClusterEndpoint::new(
        id,
        ClusterEndpointSpec {
            cluster_id: id.to_owned(),
            pod_cidrs: vec![format!("10.{n}.0.0/16")],
            service_cidrs: vec![format!("10.10{n}.0.0/16")],
            gateways: vec![GatewayEndpoint {
                node_name: format!("{id}-gw"),
                public_endpoint: format!("198.18.0.{n}:51820"),
                public_key: format_key(&[n; 32]),
                private_ip: Some(format!("198.19.{n}.1")),
                private_ips: vec![],
                health_check_ip: None,
            }],
        },
    );
    ep.metadata.namespace = Some("causeway".into());
    ep.metadata.labels = Some(labels);
    if local {
        ep.metadata.annotations = Some(BTreeMap::from([(
            VERSION_ANNOTATION.to_owned(),
            "0.3.0".to_owned(),
        )]));
    }
    ep
}

fn gateway(id: &str, n: u8, remotes: &[&str]) -> Gateway {
    let spec = endpoint(id, n, true).spec.gateways[0].clone();
    let mut g = Gateway::new(
        &format!("{id}-gw"),
        GatewaySpec {
            cluster_id: id.to_owned(),
            endpoint: spec,
        },
    );
    g.status = Some(GatewayStatus {
        role: Some(GatewayRole::Active),
        connections: remotes
            .iter()
            .map(|r| ConnectionStatus {
                cluster_id: (*r).to_owned(),
                endpoint: None,
                state: ConnectionState::Connected,
                reason: None,
                last_handshake: None,
                rtt_min: None,
                rtt_avg: Some("1.2ms".into()),
                rtt_max: None,
                rx_bytes: 1,
                tx_bytes: 1,
                first_attempt: None,
                handshake_attempts: None,
            })
            .collect(),
        conditions: vec![],
        version: Some("0.3.1".into()),
        tunnel_mtu: Some(1420),
        underlay_mtu: Some(1500),
        routes: Some(RouteStatus {
            desired: 2,
            installed: 2,
            missing: vec![],
        }),
    });
    g
}

fn lease(id: &str, renewed: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(format!("causeway-gateway-{id}")),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(format!("{id}-gw")),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..LeaseSpec::default()
        }),
    }
}

fn cluster(id: &str, n: u8, other: (&str, u8)) -> ClusterSnapshot {
    ClusterSnapshot {
        context: format!("kind-{id}"),
        namespace: "causeway".into(),
        endpoints: vec![endpoint(id, n, true), endpoint(other.0, other.1, false)],
        gateways: vec![gateway(id, n, &[other.0])],
        leases: vec![lease(id, now())],
        exports: vec![],
        imports: vec![],
    }
}

/// Site A's active gateway's tunnel to site B, as the healthy world reports it.
fn site_a_to_b(c: &mut [ClusterSnapshot]) -> &mut ConnectionStatus {
    &mut c[0].gateways[0]
        .status
        .as_mut()
        .expect("status")
        .connections[0]
}

fn healthy() -> Vec<ClusterSnapshot> {
    vec![
        cluster("site-a", 1, ("site-b", 2)),
        cluster("site-b", 2, ("site-a", 1)),
    ]
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now()),
        observed_generation: None,
    }
}

fn export(conditions: Vec<Condition>) -> ServiceExport {
    let mut e = ServiceExport::new("db", Default::default());
    e.metadata.namespace = Some("prod".into());
    e.status = Some(ServiceExportStatus { conditions });
    e
}

#[test]
fn a_healthy_clusterset_has_no_findings() {
    assert_eq!(diagnose(&healthy(), now()), vec![]);
}

#[test]
fn a_gateway_holding_over_without_its_lease_is_still_active() {
    let mut c = healthy();
    c[0].leases.clear();
    assert_eq!(diagnose(&c, now()), vec![]);
}

type Breakage = fn(&mut Vec<ClusterSnapshot>);

#[test]
fn each_breakage_gives_its_finding() {
    let table: Vec<(&str, Breakage, FindingClass, &str)> = vec![
        (
            "controller gone",
            |c| {
                c[0].endpoints
                    .retain(|e| !crate::plugin::snapshot::is_local(e))
            },
            FindingClass::NoLocalEndpoint,
            "no ClusterEndpoint labelled causeway.dev/local=true",
        ),
        (
            "bad key",
            |c| c[1].endpoints[1].spec.gateways[0].public_key = "not-a-key".into(),
            FindingClass::InvalidEndpoint,
            "publicKey",
        ),
        (
            "overlapping pod CIDRs",
            |c| {
                c[1].endpoints[0].spec.pod_cidrs = vec!["10.1.128.0/17".into()];
                c[0].endpoints[1].spec.pod_cidrs = vec!["10.1.128.0/17".into()];
            },
            FindingClass::ClustersetConflict,
            "overlaps",
        ),
        (
            "refused at the controller",
            |c| {
                c[0].endpoints[0].status = Some(ClusterEndpointStatus {
                    conditions: vec![condition(
                        "Valid",
                        "False",
                        "OverlappingCIDR",
                        "pod CIDR overlaps site-b",
                    )],
                    ..ClusterEndpointStatus::default()
                })
            },
            FindingClass::EndpointRefused,
            "OverlappingCIDR",
        ),
        (
            "no mirror",
            |c| c[0].endpoints.truncate(1),
            FindingClass::MissingMirror,
            "has no mirror of cluster \"site-b\"",
        ),
        (
            "stale mirror",
            |c| c[0].endpoints[1].spec.gateways[0].public_endpoint = "198.18.0.99:51820".into(),
            FindingClass::StaleMirror,
            "gateways",
        ),
        (
            "no gateways",
            |c| {
                c[0].endpoints[0].spec.gateways.clear();
                c[1].endpoints[1].spec.gateways.clear();
            },
            FindingClass::NoGateways,
            "causeway.dev/gateway=true",
        ),
        (
            "no active gateway",
            |c| {
                c[0].leases[0] = lease(
                    "site-a",
                    now() - SignedDuration::from_secs(60),
                );
                c[0].gateways[0].status.as_mut().expect("status").role = Some(GatewayRole::Passive);
            },
            FindingClass::NoActiveGateway,
            "expired",
        ),
        (
            "tunnel down",
            |c| {
                let conn = site_a_to_b(c);
                conn.state = ConnectionState::Error;
                conn.reason = Some("no handshake in 2m: is UDP 51820 open?".into());
            },
            FindingClass::ConnectionDown,
            "UDP 51820",
        ),
        (
            "connection missing",
            |c| {
                c[0].gateways[0]
                    .status
                    .as_mut()
                    .expect("status")
                    .connections
                    .clear()
            },
            FindingClass::MissingConnection,
            "reports no tunnel to \"site-b\"",
        ),
        (
            "export without service",
            |c| {
                c[0].exports.push(export(vec![condition(
                    "Valid",
                    "False",
                    "NoService",
                    "Service prod/db does not exist",
                )]))
            },
            FindingClass::ExportInvalid,
            "NoService",
        ),
        (
            "export conflict",
            |c| {
                c[0].exports.push(export(vec![condition(
                    "Conflict",
                    "True",
                    "PortConflict",
                    "site-b wins: port 5432 vs 5433",
                )]))
            },
            FindingClass::ExportConflict,
            "PortConflict",
        ),
        (
            "handshakes unanswered",
            |c| {
                let conn = site_a_to_b(c);
                conn.endpoint = Some("198.18.0.2:51820".into());
                conn.first_attempt = Some(Time(now() - SignedDuration::from_secs(120)));
                conn.handshake_attempts = Some(12);
            },
            FindingClass::UnansweredHandshakes,
            "site-a's gateway site-a-gw has sent 12 handshake initiations to 198.18.0.2:51820 (site-b, gateway site-b-gw) over 2m without an answer: allow UDP 51820 inbound to site-b's gateway",
        ),
        (
            "tunnel MTUs differ",
            |c| c[1].gateways[0].status.as_mut().expect("status").tunnel_mtu = Some(1380),
            FindingClass::MtuMismatch,
            "site-a's gateway site-a-gw uses tunnel MTU 1420 but site-b's gateway site-b-gw uses 1380",
        ),
        (
            "tunnel MTU above the underlay's",
            |c| c[0].gateways[0].status.as_mut().expect("status").underlay_mtu = Some(1450),
            FindingClass::MtuMismatch,
            "set --mtu 1390",
        ),
        (
            "routes refused",
            |c| {
                c[0].gateways[0].status.as_mut().expect("status").routes = Some(RouteStatus {
                    desired: 2,
                    installed: 1,
                    missing: vec!["10.2.0.0/16".into()],
                })
            },
            FindingClass::RoutesMissing,
            "holds 1 of the 2 routes it should on node site-a-gw; missing: 10.2.0.0/16",
        ),
        (
            "old gateway",
            |c| c[1].gateways[0].status.as_mut().expect("status").version = Some("0.2.7".into()),
            FindingClass::VersionSkew,
            "site-b gateway site-b-gw runs 0.2.7, behind the newest release in the clusterset (0.3.",
        ),
    ];
    for (name, breakage, class, text) in table {
        let mut c = healthy();
        breakage(&mut c);
        let findings = diagnose(&c, now());
        let hit = findings.iter().find(|f| f.class == class);
        let hit = hit.unwrap_or_else(|| panic!("{name}: no {class} finding in {findings:#?}"));
        assert!(
            hit.message.contains(text),
            "{name}: {:?} does not say {text:?}",
            hit.message
        );
        assert!(
            !hit.object.is_empty() && !hit.context.is_empty(),
            "{name}: {hit:?}"
        );
    }
}

#[test]
fn thresholds_keep_quiet_about_what_may_still_resolve() {
    let unanswered = |ago: i64, attempts: Option<u64>| {
        let mut c = healthy();
        let conn = site_a_to_b(&mut c);
        conn.first_attempt = Some(Time(now() - SignedDuration::from_secs(ago)));
        conn.handshake_attempts = attempts;
        diagnose(&c, now())
            .iter()
            .any(|f| f.class == FindingClass::UnansweredHandshakes)
    };
    assert!(!unanswered(30, Some(7)), "30 s is not yet unanswered");
    assert!(unanswered(31, None), "uncounted: the time alone decides");
    assert!(!unanswered(300, Some(2)), "two initiations are not enough");
    assert!(unanswered(300, Some(3)));

    // A tunnel down for want of answers is one finding, the one that names the fix.
    let mut c = healthy();
    let conn = site_a_to_b(&mut c);
    conn.state = ConnectionState::Connecting;
    conn.first_attempt = Some(Time(now() - SignedDuration::from_secs(120)));
    conn.handshake_attempts = Some(12);
    let classes: Vec<_> = diagnose(&c, now()).iter().map(|f| f.class).collect();
    assert_eq!(classes, [FindingClass::UnansweredHandshakes], "{classes:?}");
    // Before the handshakes count as unanswered, the tunnel is still reported down.
    let conn = site_a_to_b(&mut c);
    conn.handshake_attempts = Some(2);
    let classes: Vec<_> = diagnose(&c, now()).iter().map(|f| f.class).collect();
    assert_eq!(classes, [FindingClass::ConnectionDown], "{classes:?}");

    // Patch releases mix freely.
    let mut c = healthy();
    c[1].gateways[0].status.as_mut().expect("status").version = Some("0.3.9".into());
    assert_eq!(diagnose(&c, now()), vec![]);
    // The MTU fits exactly.
    let mut c = healthy();
    c[0].gateways[0]
        .status
        .as_mut()
        .expect("status")
        .underlay_mtu = Some(1480);
    assert_eq!(diagnose(&c, now()), vec![]);
}

#[test]
fn durations_read_like_a_person_writes_them() {
    use k8s_openapi::jiff::SignedDuration;
    for (secs, text) in [
        (45, "45s"),
        (120, "2m"),
        (125, "2m5s"),
        (3900, "1h5m"),
        (-3, "0s"),
    ] {
        assert_eq!(human_duration(SignedDuration::from_secs(secs)), text);
    }
}

#[test]
fn findings_are_deduplicated_and_sorted() {
    let mut c = healthy();
    c[0].endpoints[0].spec.pod_cidrs = vec!["10.2.0.0/16".into()];
    c[1].endpoints[1].spec.pod_cidrs = vec!["10.2.0.0/16".into()];
    let findings = diagnose(&c, now());
    let mut sorted = findings.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(findings, sorted);
    assert!(findings
        .iter()
        .any(|f| f.class == FindingClass::ClustersetConflict));
}
