use std::collections::BTreeMap;

use super::*;
use causeway_crds::mcs::{ClusterStatus, ServicePort};
use causeway_crds::{
    ConnectionStatus, GatewayEndpoint, GatewaySpec, GatewayStatus, ServiceImportSpec,
    ServiceImportStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

const LOCAL: &str = "site-a";
const TTL: Duration = Duration::from_secs(5);

fn import(
    ns: &str,
    name: &str,
    type_: ServiceImportType,
    ports: &[(&str, &str, i32)],
) -> ServiceImport {
    let mut import = ServiceImport::new(
        name,
        ServiceImportSpec {
            ports: ports
                .iter()
                .map(|(name, protocol, port)| ServicePort {
                    name: (!name.is_empty()).then(|| (*name).to_owned()),
                    protocol: (!protocol.is_empty()).then(|| (*protocol).to_owned()),
                    app_protocol: None,
                    port: *port,
                })
                .collect(),
            ips: vec![],
            type_,
            session_affinity: None,
            session_affinity_config: None,
        },
    );
    import.metadata.namespace = Some(ns.to_owned());
    import
}

fn with_clusters(mut import: ServiceImport, clusters: &[&str]) -> ServiceImport {
    import.status = Some(ServiceImportStatus {
        clusters: clusters
            .iter()
            .map(|c| ClusterStatus {
                cluster: (*c).to_owned(),
            })
            .collect(),
    });
    import
}

/// One endpoint: address, ready, hostname.
type Ep<'a> = (&'a str, Option<bool>, Option<&'a str>);

fn slice(
    ns: &str,
    svc: &str,
    cluster: &str,
    eps: &[Ep<'_>],
    ports: &[(&str, i32)],
) -> EndpointSlice {
    let family = if eps.iter().any(|(a, _, _)| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{svc}-{cluster}-{}", family.to_ascii_lowercase())),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([
                (LABEL_SERVICE_NAME.to_owned(), svc.to_owned()),
                (LABEL_SOURCE_CLUSTER.to_owned(), cluster.to_owned()),
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        address_type: family.to_owned(),
        endpoints: eps
            .iter()
            .map(|(address, ready, hostname)| K8sEndpoint {
                addresses: vec![(*address).to_owned()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                hostname: hostname.map(str::to_owned),
                ..K8sEndpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, port)| EndpointPort {
                    name: Some((*name).to_owned()),
                    port: Some(*port),
                    protocol: Some("TCP".to_owned()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

const UP: Option<bool> = Some(true);
const DOWN: Option<bool> = Some(false);

/// site-a is local, site-b healthy, site-c's tunnel is down.
fn world() -> (Vec<ServiceImport>, Vec<EndpointSlice>) {
    use ServiceImportType::{ClusterSetIP, Headless};
    let imports = vec![
        import(
            "prod",
            "db",
            ClusterSetIP,
            &[("pg", "TCP", 5432), ("", "TCP", 9187)],
        ),
        import(
            "prod",
            "web",
            ClusterSetIP,
            &[("http", "", 80), ("dns", "UDP", 53)],
        ),
        import("prod", "pg", Headless, &[("pg", "TCP", 5432)]),
        with_clusters(
            import("prod", "empty", Headless, &[("pg", "TCP", 5432)]),
            &["site-b"],
        ),
        import("other", "db", ClusterSetIP, &[]),
    ];
    let slices = vec![
        slice("prod", "db", "site-a", &[("10.101.0.10", UP, None)], &[]),
        slice("prod", "db", "site-b", &[("10.102.0.10", UP, None)], &[]),
        slice("prod", "db", "site-c", &[("10.103.0.10", UP, None)], &[]),
        slice("prod", "web", "site-a", &[("10.101.0.20", DOWN, None)], &[]),
        slice("prod", "web", "site-b", &[("10.102.0.20", UP, None)], &[]),
        slice("prod", "web", "site-b", &[("fd00:102::20", UP, None)], &[]),
        slice("prod", "web", "site-c", &[("10.103.0.20", UP, None)], &[]),
        slice(
            "prod",
            "pg",
            "site-a",
            &[
                ("10.1.0.5", UP, Some("pg-0")),
                ("10.1.0.6", DOWN, Some("pg-1")),
            ],
            &[("pg", 15432)],
        ),
        slice(
            "prod",
            "pg",
            "site-a",
            &[("fd00:1::5", UP, Some("pg-0"))],
            &[("pg", 15432)],
        ),
        slice(
            "prod",
            "pg",
            "site-b",
            &[("10.2.0.5", None, Some("pg-0")), ("10.2.0.7", UP, None)],
            &[("pg", 15432)],
        ),
        slice(
            "prod",
            "pg",
            "site-c",
            &[("10.3.0.5", UP, Some("pg-0"))],
            &[("pg", 15432)],
        ),
        // A slice of a service with no import here is not served.
        slice("prod", "ghost", "site-a", &[("10.101.0.99", UP, None)], &[]),
    ];
    (imports, slices)
}

fn healthy() -> BTreeSet<String> {
    BTreeSet::from(["site-b".to_owned()])
}

fn build(imports: &[ServiceImport], slices: &[EndpointSlice]) -> (Zone, Vec<ZoneProblem>) {
    build_zone(&ZoneInput {
        cluster_id: LOCAL,
        imports,
        slices,
        healthy: &healthy(),
        ttl: TTL,
        serial: 7,
    })
}

/// The answer as sorted `TYPE data` strings, or the negative outcome's name.
type Outcome = Result<Vec<String>, &'static str>;

/// What, name, type, outcome.
type Case = (&'static str, &'static str, RecordType, Outcome);

fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Outcome {
    let name = LowerName::from(Name::from_ascii(name).expect("a test name"));
    match zone.lookup(&name, qtype) {
        Lookup::Answer(records) => {
            let mut out: Vec<String> = records
                .iter()
                .map(|r| format!("{} {}", r.record_type(), r.data))
                .collect();
            out.sort();
            Ok(out)
        }
        Lookup::NoData => Err("NODATA"),
        Lookup::NxDomain => Err("NXDOMAIN"),
        Lookup::Refused => Err("REFUSED"),
    }
}

fn ok(records: &[&str]) -> Outcome {
    let mut out: Vec<String> = records.iter().map(|r| (*r).to_owned()).collect();
    out.sort();
    Ok(out)
}

const NODATA: Outcome = Err("NODATA");
const NXDOMAIN: Outcome = Err("NXDOMAIN");
const REFUSED: Outcome = Err("REFUSED");

#[test]
fn every_rule_of_the_contract() {
    use RecordType::{A, AAAA, ANY, SOA, SRV, TXT};
    let (imports, slices) = world();
    let (zone, problems) = build(&imports, &slices);
    assert_eq!(problems, vec![]);
    let cases: Vec<Case> = vec![
        // ClusterSetIP: the local ClusterIP wins while it has a ready backend ...
        (
            "local first",
            "db.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.101.0.10"]),
        ),
        (
            "ipv4-only service has no AAAA",
            "db.prod.svc.clusterset.local.",
            AAAA,
            NODATA,
        ),
        // ... and every cluster's own name answers whatever its health.
        (
            "cluster name, local",
            "site-a.db.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.101.0.10"]),
        ),
        (
            "cluster name, healthy",
            "site-b.db.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.102.0.10"]),
        ),
        (
            "cluster name, unhealthy",
            "site-c.db.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.103.0.10"]),
        ),
        (
            "unknown cluster",
            "site-z.db.prod.svc.clusterset.local.",
            A,
            NXDOMAIN,
        ),
        // Local backend not ready: the healthy remotes, not the unhealthy one.
        (
            "local not ready",
            "web.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.102.0.20"]),
        ),
        (
            "dual-stack remote",
            "web.prod.svc.clusterset.local.",
            AAAA,
            ok(&["AAAA fd00:102::20"]),
        ),
        (
            "not-ready cluster name",
            "site-a.web.prod.svc.clusterset.local.",
            A,
            NODATA,
        ),
        (
            "unhealthy cluster name",
            "site-c.web.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.103.0.20"]),
        ),
        // SRV for named ports only; default protocol TCP.
        (
            "clusterset srv",
            "_pg._tcp.db.prod.svc.clusterset.local.",
            SRV,
            ok(&["SRV 0 100 5432 db.prod.svc.clusterset.local."]),
        ),
        (
            "srv default tcp",
            "_http._tcp.web.prod.svc.clusterset.local.",
            SRV,
            ok(&["SRV 0 100 80 web.prod.svc.clusterset.local."]),
        ),
        (
            "srv udp",
            "_dns._udp.web.prod.svc.clusterset.local.",
            SRV,
            ok(&["SRV 0 100 53 web.prod.svc.clusterset.local."]),
        ),
        (
            "srv wrong protocol",
            "_pg._udp.db.prod.svc.clusterset.local.",
            SRV,
            NXDOMAIN,
        ),
        (
            "unnamed port: no srv",
            "_9187._tcp.db.prod.svc.clusterset.local.",
            SRV,
            NXDOMAIN,
        ),
        (
            "srv name, A asked",
            "_pg._tcp.db.prod.svc.clusterset.local.",
            A,
            NODATA,
        ),
        // Headless: ready endpoints of the local and healthy clusters.
        (
            "headless",
            "pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.1.0.5", "A 10.2.0.5", "A 10.2.0.7"]),
        ),
        (
            "headless v6",
            "pg.prod.svc.clusterset.local.",
            AAAA,
            ok(&["AAAA fd00:1::5"]),
        ),
        (
            "headless unhealthy cluster",
            "site-c.pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.3.0.5"]),
        ),
        (
            "headless local cluster",
            "site-a.pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.1.0.5"]),
        ),
        (
            "hostname",
            "pg-0.site-a.pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.1.0.5"]),
        ),
        (
            "hostname dual-stack",
            "pg-0.site-a.pg.prod.svc.clusterset.local.",
            AAAA,
            ok(&["AAAA fd00:1::5"]),
        ),
        (
            "hostname any",
            "pg-0.site-a.pg.prod.svc.clusterset.local.",
            ANY,
            ok(&["A 10.1.0.5", "AAAA fd00:1::5"]),
        ),
        (
            "hostname of unhealthy cluster",
            "pg-0.site-c.pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.3.0.5"]),
        ),
        (
            "hostname not ready",
            "pg-1.site-a.pg.prod.svc.clusterset.local.",
            A,
            NODATA,
        ),
        (
            "unknown hostname",
            "pg-9.site-a.pg.prod.svc.clusterset.local.",
            A,
            NXDOMAIN,
        ),
        (
            "headless srv: slice port, healthy hostnames",
            "_pg._tcp.pg.prod.svc.clusterset.local.",
            SRV,
            ok(&[
                "SRV 0 50 15432 pg-0.site-a.pg.prod.svc.clusterset.local.",
                "SRV 0 50 15432 pg-0.site-b.pg.prod.svc.clusterset.local.",
            ]),
        ),
        // Headless without endpoints: the service exists, so NODATA.
        (
            "headless no endpoints",
            "empty.prod.svc.clusterset.local.",
            A,
            NODATA,
        ),
        (
            "listed cluster without slices",
            "site-b.empty.prod.svc.clusterset.local.",
            A,
            NODATA,
        ),
        (
            "headless srv without targets",
            "_pg._tcp.empty.prod.svc.clusterset.local.",
            SRV,
            NODATA,
        ),
        // Namespaces are distinct.
        (
            "same name, other namespace",
            "db.other.svc.clusterset.local.",
            A,
            NODATA,
        ),
        (
            "no import, no name",
            "ghost.prod.svc.clusterset.local.",
            A,
            NXDOMAIN,
        ),
        // Empty non-terminals are NODATA; names that do not exist NXDOMAIN.
        ("namespace", "prod.svc.clusterset.local.", A, NODATA),
        ("svc", "svc.clusterset.local.", A, NODATA),
        (
            "proto label",
            "_tcp.db.prod.svc.clusterset.local.",
            SRV,
            NODATA,
        ),
        ("apex A", "clusterset.local.", A, NODATA),
        (
            "apex SOA",
            "clusterset.local.",
            SOA,
            ok(&["SOA ns.dns.clusterset.local. hostmaster.clusterset.local. 7 7200 1800 86400 5"]),
        ),
        (
            "unknown namespace",
            "nope.svc.clusterset.local.",
            A,
            NXDOMAIN,
        ),
        (
            "unknown service",
            "nope.prod.svc.clusterset.local.",
            A,
            NXDOMAIN,
        ),
        (
            "version",
            "dns-version.clusterset.local.",
            TXT,
            ok(&["TXT 1.0.0"]),
        ),
        // Case does not matter.
        (
            "mixed case",
            "DB.Prod.SVC.ClusterSet.Local.",
            A,
            ok(&["A 10.101.0.10"]),
        ),
        (
            "mixed case hostname",
            "PG-0.Site-A.pg.prod.svc.clusterset.local.",
            A,
            ok(&["A 10.1.0.5"]),
        ),
        // Outside the zone.
        ("other zone", "example.com.", A, REFUSED),
        ("cluster.local", "db.prod.svc.cluster.local.", A, REFUSED),
        ("suffix lookalike", "xclusterset.local.", A, REFUSED),
        ("root", ".", A, REFUSED),
    ];
    for (what, name, qtype, want) in cases {
        assert_eq!(ask(&zone, name, qtype), want, "{what}: {name} {qtype}");
    }
}

#[test]
fn every_record_has_the_ttl() {
    let (imports, slices) = world();
    let (zone, _) = build(&imports, &slices);
    assert!(zone.record_count() > 20);
    for records in zone.names.values() {
        for record in records {
            assert_eq!(record.ttl, 5, "{record}");
        }
    }
}

#[test]
fn unhealthy_remote_leaves_svc_but_keeps_its_cluster_name() {
    let (imports, slices) = world();
    let steps: Vec<(&str, BTreeSet<String>, Vec<&str>)> = vec![
        ("b healthy", healthy(), vec!["A 10.102.0.20"]),
        (
            "b and c healthy",
            BTreeSet::from(["site-b".to_owned(), "site-c".to_owned()]),
            vec!["A 10.102.0.20", "A 10.103.0.20"],
        ),
        ("none healthy", BTreeSet::new(), vec![]),
    ];
    for (what, healthy, want) in steps {
        let (zone, _) = build_zone(&ZoneInput {
            cluster_id: LOCAL,
            imports: &imports,
            slices: &slices,
            healthy: &healthy,
            ttl: TTL,
            serial: 1,
        });
        let want = if want.is_empty() { NODATA } else { ok(&want) };
        assert_eq!(
            ask(&zone, "web.prod.svc.clusterset.local.", RecordType::A),
            want,
            "{what}"
        );
        assert_eq!(
            ask(
                &zone,
                "site-b.web.prod.svc.clusterset.local.",
                RecordType::A
            ),
            ok(&["A 10.102.0.20"]),
            "{what}"
        );
        // An unreachable remote never replaces a ready local backend.
        assert_eq!(
            ask(&zone, "db.prod.svc.clusterset.local.", RecordType::A),
            ok(&["A 10.101.0.10"]),
            "{what}"
        );
    }
}

#[test]
fn local_first_is_per_service_not_per_family() {
    let imports = vec![import("prod", "api", ServiceImportType::ClusterSetIP, &[])];
    let slices = vec![
        slice("prod", "api", "site-a", &[("10.101.0.1", UP, None)], &[]),
        slice("prod", "api", "site-b", &[("10.102.0.1", UP, None)], &[]),
        slice("prod", "api", "site-b", &[("fd00:102::1", UP, None)], &[]),
    ];
    let (zone, _) = build(&imports, &slices);
    let name = "api.prod.svc.clusterset.local.";
    assert_eq!(ask(&zone, name, RecordType::A), ok(&["A 10.101.0.1"]));
    assert_eq!(ask(&zone, name, RecordType::AAAA), NODATA);
}

#[test]
fn input_order_does_not_change_the_zone() {
    let (imports, slices) = world();
    let (zone, _) = build(&imports, &slices);
    let mut reversed_imports = imports.clone();
    reversed_imports.reverse();
    let mut reversed_slices = slices.clone();
    reversed_slices.reverse();
    let (again, _) = build(&reversed_imports, &reversed_slices);
    assert_eq!(zone.names, again.names);
}

#[test]
fn duplicate_addresses_are_answered_once() {
    let imports = vec![import("prod", "pg", ServiceImportType::Headless, &[])];
    let slices = vec![
        slice(
            "prod",
            "pg",
            "site-a",
            &[("10.1.0.5", UP, Some("pg-0"))],
            &[],
        ),
        slice(
            "prod",
            "pg",
            "site-a",
            &[("10.1.0.5", UP, Some("pg-0"))],
            &[],
        ),
    ];
    let (zone, _) = build(&imports, &slices);
    assert_eq!(
        ask(&zone, "pg.prod.svc.clusterset.local.", RecordType::A),
        ok(&["A 10.1.0.5"])
    );
}

#[test]
fn bad_input_is_reported_and_the_rest_served() {
    use ServiceImportType::{ClusterSetIP, Headless};
    let imports = vec![
        import("prod", "Bad_Name", ClusterSetIP, &[]),
        import(
            "prod",
            "pg",
            Headless,
            &[
                ("pg", "TCP", 5432),
                ("big", "TCP", 70000),
                ("we_ird", "TCP", 1),
            ],
        ),
    ];
    let mut unmanaged = slice("prod", "pg", "site-a", &[("10.1.0.66", UP, None)], &[]);
    if let Some(labels) = unmanaged.metadata.labels.as_mut() {
        labels.insert(
            MANAGED_BY_LABEL.to_owned(),
            "endpointslice-controller.k8s.io".to_owned(),
        );
    }
    let slices = vec![
        slice(
            "prod",
            "pg",
            "site-a",
            &[
                ("10.1.0.5", UP, Some("pg-0")),
                ("not-an-ip", UP, None),
                ("10.1.0.6", UP, Some("Not_A_Host")),
            ],
            &[],
        ),
        slice("prod", "pg", "site_b", &[("10.2.0.5", UP, None)], &[]),
        unmanaged,
    ];
    let (zone, problems) = build(&imports, &slices);
    let kinds: Vec<String> = problems
        .iter()
        .map(|p| match p {
            ZoneProblem::ImportName { name, what, .. } => format!("import {name} {what}"),
            ZoneProblem::Port { port, .. } => format!("port {port}"),
            ZoneProblem::SliceCluster { cluster, .. } => format!("cluster {cluster}"),
            ZoneProblem::Address { address, .. } => format!("address {address}"),
            ZoneProblem::Hostname { hostname, .. } => format!("hostname {hostname}"),
            ZoneProblem::NameTooLong { name } => format!("too long {name}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "import Bad_Name name",
            "address not-an-ip",
            "hostname Not_A_Host",
            "cluster site_b",
            "port big",
            "port we_ird",
        ]
    );
    // Every message names the object and says what to do.
    for problem in &problems {
        let text = problem.to_string();
        assert!(text.contains("prod/"), "{text}");
    }
    assert_eq!(
        ask(&zone, "pg.prod.svc.clusterset.local.", RecordType::A),
        ok(&["A 10.1.0.5", "A 10.1.0.6"])
    );
    assert_eq!(
        ask(
            &zone,
            "_pg._tcp.pg.prod.svc.clusterset.local.",
            RecordType::SRV
        ),
        ok(&["SRV 0 100 5432 pg-0.site-a.pg.prod.svc.clusterset.local."])
    );
}

#[test]
fn names_longer_than_dns_allows_are_reported() {
    let ns = "n".repeat(63);
    let svc = "s".repeat(63);
    let cluster = "c".repeat(63);
    let imports = vec![import(
        &ns,
        &svc,
        ServiceImportType::Headless,
        &[("pg", "TCP", 5432)],
    )];
    let slices = vec![slice(
        &ns,
        &svc,
        &cluster,
        &[("10.1.0.5", UP, Some(&"h".repeat(63)))],
        &[],
    )];
    let (zone, problems) = build(&imports, &slices);
    assert!(
        matches!(problems.as_slice(), [ZoneProblem::NameTooLong { name }] if name.starts_with("hhh")),
        "{problems:?}"
    );
    let base = format!("{svc}.{ns}.svc.clusterset.local.");
    let cluster_name = format!("{cluster}.{base}");
    assert_eq!(
        ask(&zone, &cluster_name, RecordType::A),
        ok(&["A 10.1.0.5"])
    );
    // No SRV may point at the name that could not be made.
    let healthy = BTreeSet::from([cluster.clone()]);
    let (zone, _) = build_zone(&ZoneInput {
        cluster_id: LOCAL,
        imports: &imports,
        slices: &slices,
        healthy: &healthy,
        ttl: TTL,
        serial: 1,
    });
    assert_eq!(
        ask(&zone, &format!("_pg._tcp.{base}"), RecordType::SRV),
        NODATA
    );
}

#[test]
fn an_empty_zone_has_the_apex_and_the_version() {
    let zone = Zone::empty(TTL, 1);
    assert_eq!(
        ask(&zone, "dns-version.clusterset.local.", RecordType::TXT),
        ok(&["TXT 1.0.0"])
    );
    assert_eq!(
        ask(&zone, "db.prod.svc.clusterset.local.", RecordType::A),
        NXDOMAIN
    );
    assert_eq!(zone.name_count(), 2);
    assert_eq!(zone.soa().record_type(), RecordType::SOA);
}

fn gateway(
    name: &str,
    role: Option<GatewayRole>,
    connections: &[(&str, ConnectionState)],
) -> Gateway {
    let mut gateway = Gateway::new(
        name,
        GatewaySpec {
            cluster_id: LOCAL.to_owned(),
            endpoint: GatewayEndpoint {
                node_name: name.to_owned(),
                public_endpoint: "198.18.0.1:51820".to_owned(),
                public_key: String::new(),
                private_ip: None,
                private_ips: vec![],
                health_check_ip: None,
            },
        },
    );
    gateway.status = Some(GatewayStatus {
        role,
        connections: connections
            .iter()
            .map(|(cluster, state)| ConnectionStatus {
                cluster_id: (*cluster).to_owned(),
                endpoint: None,
                state: *state,
                reason: None,
                last_handshake: None,
                rtt_min: None,
                rtt_avg: None,
                rtt_max: None,
                rx_bytes: 0,
                tx_bytes: 0,
                first_attempt: None,
                handshake_attempts: None,
            })
            .collect(),
        conditions: vec![],
        ..GatewayStatus::default()
    });
    gateway
}

#[test]
fn healthy_clusters_come_from_the_active_gateway() {
    use ConnectionState::{Connected, Connecting, Error};
    use GatewayRole::{Active, Passive};
    let mut deleting = gateway("gw-old", Some(Active), &[("site-e", Connected)]);
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let cases: Vec<(&str, Vec<Gateway>, Vec<&str>)> = vec![
        ("none", vec![], vec![]),
        (
            "active: connected only",
            vec![gateway(
                "gw-1",
                Some(Active),
                &[
                    ("site-b", Connected),
                    ("site-c", Connecting),
                    ("site-d", Error),
                ],
            )],
            vec!["site-b"],
        ),
        (
            "passive ignored",
            vec![
                gateway("gw-1", Some(Active), &[("site-b", Connected)]),
                gateway("gw-2", Some(Passive), &[("site-c", Connected)]),
            ],
            vec!["site-b"],
        ),
        (
            "no role yet",
            vec![gateway("gw-1", None, &[("site-b", Connected)])],
            vec![],
        ),
        ("being deleted", vec![deleting], vec![]),
        (
            "two active during a failover: union",
            vec![
                gateway("gw-1", Some(Active), &[("site-b", Connected)]),
                gateway("gw-2", Some(Active), &[("Site-C", Connected)]),
            ],
            vec!["site-b", "site-c"],
        ),
    ];
    for (what, gateways, want) in cases {
        let want: BTreeSet<String> = want.into_iter().map(str::to_owned).collect();
        assert_eq!(healthy_clusters(&gateways), want, "{what}");
    }
}
