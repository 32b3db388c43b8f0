//! Table tests of the judgement: rows for healthy and broken answers, the services to
//! check, and DNS expectations and answers.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use causeway_crds::ServiceImport;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;
use crate::plugin::{ClusterSnapshot, FindingClass};

fn peer(cluster: &str, handshake: Option<f64>, rtt: bool) -> AgentPeer {
    AgentPeer {
        cluster: cluster.into(),
        endpoint: Some("198.18.0.2:51820".into()),
        last_handshake_seconds: handshake,
        probe_target: Some("10.2.0.1:51821".into()),
        probes_sent: 5,
        rtt: rtt
            .then(|| RttFigures::from_samples(&[Duration::from_micros(300); 5]).expect("samples")),
    }
}

fn service() -> ServiceCheck {
    ServiceCheck {
        namespace: "prod".into(),
        name: "db".into(),
        port: Some(5432),
        exporters: vec!["site-b".into()],
    }
}

fn dns(addresses: &[&str], tcp: Option<AgentTcp>) -> AgentDns {
    AgentDns {
        name: "db.prod.svc.clusterset.local".into(),
        server: "10.96.0.10:53".into(),
        rcode: Some("NoError".into()),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        error: None,
        tcp,
    }
}

fn answer(peers: Vec<AgentPeer>, dns: Vec<AgentDns>) -> AgentVerify {
    AgentVerify {
        active: true,
        health_check_ip: Some("10.1.0.1".into()),
        peers,
        dns,
    }
}

#[test]
fn percentiles_use_the_nearest_rank() {
    let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    let r = RttFigures::from_samples(&samples).unwrap();
    assert_eq!((r.min_ms, r.p99_ms, r.max_ms), (1.0, 99.0, 100.0));
    assert!((r.avg_ms - 50.5).abs() < 1e-9);
    let one = RttFigures::from_samples(&[Duration::from_millis(2)]).unwrap();
    assert_eq!((one.p99_ms, one.samples), (2.0, 1));
    assert_eq!(RttFigures::from_samples(&[]), None);
}

#[test]
fn healthy_pairs_and_services_pass() {
    let tcp = AgentTcp {
        address: "10.2.1.10:5432".into(),
        connect_ms: Some(0.4),
        error: None,
    };
    let results = [
        ClusterResult {
            cluster: "site-a".into(),
            answer: Ok(answer(
                vec![peer("site-b", Some(3.0), true)],
                vec![dns(&["10.2.1.10"], Some(tcp))],
            )),
        },
        ClusterResult {
            cluster: "site-b".into(),
            answer: Ok(answer(
                vec![peer("site-a", Some(3.0), true)],
                vec![dns(&["10.2.1.10"], None)],
            )),
        },
    ];
    let rows = rows(&results, &[service()]);
    let checks: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.from.as_str(), r.to.as_str(), r.check.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            ("site-a", "site-b", "tunnel"),
            ("site-a", "site-b", "rtt"),
            ("site-a", "site-b", "dns db.prod.svc.clusterset.local"),
            ("site-b", "site-a", "tunnel"),
            ("site-b", "site-a", "rtt"),
            ("site-b", "site-b", "dns db.prod.svc.clusterset.local"),
        ]
    );
    assert!(rows.iter().all(|r| r.outcome == Outcome::Ok), "{rows:#?}");
    assert!(rows[2].detail.contains("tcp 10.2.1.10:5432 connected"));
}

#[test]
fn each_failure_says_what_and_how_to_fix() {
    let refused = AgentTcp {
        address: "10.2.1.10:5432".into(),
        connect_ms: None,
        error: Some("connection refused".into()),
    };
    let cases: Vec<(AgentVerify, &str, &str)> = vec![
        (
            answer(vec![peer("site-b", Some(400.0), true)], vec![]),
            "tunnel",
            "tunnel is down",
        ),
        (
            answer(vec![peer("site-b", None, true)], vec![]),
            "tunnel",
            "no handshake",
        ),
        (
            answer(vec![peer("site-b", Some(1.0), false)], vec![]),
            "rtt",
            "none of 5 probes",
        ),
        (answer(vec![], vec![]), "tunnel", "no peer site-b"),
        (
            answer(vec![peer("site-b", Some(1.0), true)], vec![dns(&[], None)]),
            "dns db.prod.svc.clusterset.local",
            "with no address",
        ),
        (
            answer(
                vec![peer("site-b", Some(1.0), true)],
                vec![dns(&["10.2.1.10"], Some(refused))],
            ),
            "dns db.prod.svc.clusterset.local",
            "connection refused",
        ),
    ];
    for (answer, check, says) in cases {
        let results = [
            ClusterResult {
                cluster: "site-a".into(),
                answer: Ok(answer),
            },
            ClusterResult {
                cluster: "site-b".into(),
                answer: Err("unreachable".into()),
            },
        ];
        let rows = rows(&results, &[service()]);
        let row = rows
            .iter()
            .find(|r| r.from == "site-a" && r.check == check)
            .unwrap_or_else(|| panic!("no {check} row in {rows:#?}"));
        assert_eq!(row.outcome, Outcome::Fail, "{row:?}");
        assert!(row.detail.contains(says), "{says:?} not in {row:?}");
        assert!(row.fix.as_deref().is_some_and(|f| !f.is_empty()));
        let unreachable = rows.iter().find(|r| r.from == "site-b").unwrap();
        assert_eq!(
            (unreachable.check.as_str(), unreachable.outcome),
            ("gateway", Outcome::Fail)
        );
    }
}

#[test]
fn services_come_from_imports_with_their_exporters_and_first_tcp_port() {
    let import: ServiceImport = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"type": "ClusterSetIP", "ports": [
            {"port": 53, "protocol": "UDP"}, {"port": 5432, "protocol": "TCP"}]},
        "status": {"clusters": [{"cluster": "site-b"}]}
    }))
    .unwrap();
    let s = ClusterSnapshot {
        imports: vec![import],
        ..ClusterSnapshot::default()
    };
    assert_eq!(
        services_to_check(std::slice::from_ref(&s), &[]),
        [service()]
    );
    let unknown = services_to_check(&[s], &["prod/other".into()]);
    assert_eq!(unknown.len(), 1);
    assert_eq!((unknown[0].name.as_str(), unknown[0].port), ("other", None));
    assert_eq!(service().dns_param(), "db.prod.svc.clusterset.local:5432");
}

fn slice(cluster: &str, ready: &[(&str, Option<bool>)]) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("db-{cluster}-ipv4"), "namespace": "prod", "labels": {
            "endpointslice.kubernetes.io/managed-by": "causeway.dev",
            "multicluster.kubernetes.io/service-name": "db",
            "multicluster.kubernetes.io/source-cluster": cluster}},
        "addressType": "IPv4",
        "endpoints": ready.iter().map(|(ip, ready)| serde_json::json!({
            "addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn snapshot_with_import(type_: &str, ips: &[&str], connected: &[&str]) -> ClusterSnapshot {
    let import: ServiceImport = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"type": type_, "ips": ips, "ports": [{"port": 5432, "protocol": "TCP"}]}
    }))
    .unwrap();
    let gateway: causeway_crds::Gateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1", "kind": "Gateway",
        "metadata": {"name": "gw-1", "namespace": "causeway"},
        "spec": {"clusterID": "site-a", "nodeName": "gw-1",
                 "publicEndpoint": "198.18.0.1:51820", "publicKey": "unused"},
        "status": {"role": "active", "connections": connected.iter().map(|c| serde_json::json!(
            {"clusterID": c, "state": "connected"})).collect::<Vec<_>>()}
    }))
    .unwrap();
    ClusterSnapshot {
        context: "site-a".into(),
        namespace: "causeway".into(),
        imports: vec![import],
        gateways: vec![gateway],
        ..ClusterSnapshot::default()
    }
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn dns_expects_ready_slice_addresses_of_reachable_clusters_and_spec_ips() {
    let slices = [
        slice(
            "site-b",
            &[
                ("10.2.1.10", Some(true)),
                ("10.2.1.11", None),
                ("10.2.1.12", Some(false)),
            ],
        ),
        slice("site-c", &[("10.3.1.10", Some(true))]),
    ];
    let s = snapshot_with_import("Headless", &[], &["site-b"]);
    let expected = dns_expectations(&s, &slices);
    assert_eq!(expected.len(), 1);
    assert_eq!(
        expected[0].service.dns_name(),
        "db.prod.svc.clusterset.local"
    );
    // Not-ready and site-c's (tunnel not up) addresses are not promised.
    assert_eq!(expected[0].addresses, ips(&["10.2.1.10", "10.2.1.11"]));
    let s = snapshot_with_import("ClusterSetIP", &["10.9.0.1"], &[]);
    assert_eq!(
        dns_expectations(&s, &slices)[0].addresses,
        ips(&["10.9.0.1"])
    );
}

#[test]
fn dns_answer_is_judged_against_the_promised_addresses() {
    let expected = ips(&["10.2.1.10", "10.2.1.11"]);
    let mut nx = dns(&[], None);
    nx.rcode = Some("NXDomain".into());
    let mut down = dns(&[], None);
    (down.rcode, down.error) = (None, Some("no answer from 10.96.0.10:53 within 2s".into()));
    let cases: [(&AgentDns, &BTreeSet<IpAddr>, Option<&str>); 7] = [
        (&dns(&["10.2.1.11"], None), &expected, None),
        (&dns(&["10.2.1.11", "192.0.2.1"], None), &expected, None),
        (&dns(&[], None), &BTreeSet::new(), None),
        (
            &dns(&["192.0.2.1"], None),
            &expected,
            Some("answered 192.0.2.1, none of them promised"),
        ),
        (&dns(&[], None), &expected, Some("NoError with no address")),
        (&nx, &BTreeSet::new(), Some("answered NXDomain")),
        (&down, &expected, Some("did not answer: no answer from")),
    ];
    for (answer, expected, says) in cases {
        let problem = dns_answer_problem(expected, answer);
        match says {
            None => assert_eq!(problem, None, "{answer:?}"),
            Some(says) => assert!(
                problem
                    .as_deref()
                    .is_some_and(|p| p.contains(says) && p.contains("10.96.0.10:53")),
                "{says:?} not in {problem:?}"
            ),
        }
    }
}

#[test]
fn dns_findings_name_cluster_service_answer_expectation_and_fix() {
    let s = snapshot_with_import("Headless", &[], &["site-b"]);
    let slices = [slice("site-b", &[("10.2.1.10", Some(true))])];
    let expected = dns_expectations(&s, &slices);
    let healthy = answer(vec![], vec![dns(&["10.2.1.10"], None)]);
    assert_eq!(dns_findings(&s, &expected, &healthy), []);
    let wrong = answer(vec![], vec![dns(&["192.0.2.1"], None)]);
    let found = dns_findings(&s, &expected, &wrong);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.class, f.object.as_str()),
        (FindingClass::DnsAnswer, "serviceimport/prod/db")
    );
    for says in [
        "cluster site-a",
        "db.prod.svc.clusterset.local",
        "192.0.2.1",
        "expected 10.2.1.10",
        "10.96.0.10:53",
        "causeway-dns Service",
    ] {
        assert!(f.message.contains(says), "{says:?} not in {}", f.message);
    }
    let unanswered = answer(vec![], vec![]);
    assert!(dns_findings(&s, &expected, &unanswered)[0]
        .message
        .contains("did not resolve it"));
}
