//! `kubectl causeway` against real API servers: two clusters (the chart installed) behind
//! two contexts of one kubeconfig, as a person bound only to the chart's viewer roles,
//! seeded healthy and then with one breakage per finding class. The plugin reads them
//! through the real `kube` client (`load_snapshots`), exactly as the binary does, and
//! `diagnose` must name each breakage; the healthy clusterset has no findings, which is
//! exit 0 for the binary.

use std::collections::BTreeMap;

use causeway_controller::plugin::{self, show, FindingClass};
use causeway_crds::mcs::ServiceExportStatus;
use causeway_crds::names::{LOCAL_LABEL, MIRRORED_LABEL, SOURCE_CLUSTER_LABEL, VERSION_ANNOTATION};
use causeway_crds::{
    ClusterEndpoint, ClusterEndpointSpec, ClusterEndpointStatus, ConnectionState, ConnectionStatus,
    Gateway, GatewayEndpoint, GatewayRole, GatewaySpec, GatewayStatus, RouteStatus, ServiceExport,
};
use causeway_tests::harness::control_plane::apiserver::kubeconfig_yaml;
use causeway_tests::harness::control_plane::{ClusterKind, TestCluster};
use causeway_wire::keys::format_key;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NS: &str = "causeway";

/// What one cluster's API holds.
#[derive(Clone)]
struct Seed {
    endpoints: Vec<ClusterEndpoint>,
    gateways: Vec<Gateway>,
    leases: Vec<Lease>,
    exports: Vec<ServiceExport>,
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
    ep.metadata.labels = Some(labels);
    if local {
        // As the controller writes its own cluster's object.
        ep.metadata.annotations = Some(BTreeMap::from([(
            VERSION_ANNOTATION.to_owned(),
            "0.4.0".to_owned(),
        )]));
    }
    ep
}

fn gateway(id: &str, n: u8, remote: &str) -> Gateway {
    let mut g = Gateway::new(
        &format!("{id}-gw"),
        GatewaySpec {
            cluster_id: id.to_owned(),
            endpoint: endpoint(id, n, true).spec.gateways[0].clone(),
        },
    );
    g.status = Some(GatewayStatus {
        role: Some(GatewayRole::Active),
        connections: vec![ConnectionStatus {
            cluster_id: remote.to_owned(),
            endpoint: None,
            state: ConnectionState::Connected,
            reason: None,
            last_handshake: Some(Time(Timestamp::now())),
            rtt_min: Some("0.9ms".into()),
            rtt_avg: Some("1.2ms".into()),
            rtt_max: Some("2.0ms".into()),
            rx_bytes: 1000,
            tx_bytes: 2000,
            first_attempt: None,
            handshake_attempts: None,
        }],
        conditions: vec![],
        version: Some("0.4.2".into()),
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

fn seed(id: &str, n: u8, other: (&str, u8)) -> Seed {
    Seed {
        endpoints: vec![endpoint(id, n, true), endpoint(other.0, other.1, false)],
        gateways: vec![gateway(id, n, other.0)],
        // An hour ahead: the check of expiry must not race the test.
        leases: vec![lease(id, Timestamp::now() + SignedDuration::from_hours(1))],
        exports: vec![],
    }
}

fn healthy() -> Vec<Seed> {
    vec![
        seed("site-a", 1, ("site-b", 2)),
        seed("site-b", 2, ("site-a", 1)),
    ]
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(Timestamp::now()),
        observed_generation: None,
    }
}

fn export(conditions: Vec<Condition>) -> ServiceExport {
    let mut e = ServiceExport::new("db", Default::default());
    e.metadata.namespace = Some("prod".into());
    e.status = Some(ServiceExportStatus { conditions });
    e
}

/// Real clusters (the chart installed, a `prod` namespace), and a kubeconfig with contexts
/// kind-site-a, kind-site-b, ... for a person bound only to the chart's viewer roles; the
/// test seeds them as cluster-admin through `admins`.
struct World {
    _clusters: Vec<TestCluster>,
    admins: Vec<Client>,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    contexts: Vec<String>,
}

async fn create_with_status<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let created = api
        .create(&PostParams::default(), obj)
        .await
        .expect("create");
    let value = serde_json::to_value(obj).expect("serializes");
    if let Some(status) = value.get("status").filter(|s| !s.is_null()) {
        let name = created.meta().name.clone().expect("named");
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .expect("patch status");
    }
}

impl World {
    /// `n` clusters, empty but for the chart and `prod`.
    async fn start(n: usize) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let kinds: Vec<ClusterKind> = (0..n)
            .map(|i| {
                let letter = (b'a' + i as u8) as char;
                ClusterKind::member(&format!("site-{letter}"), i as u8 + 1)
            })
            .collect();
        let clusters =
            TestCluster::start_all(&kinds).unwrap_or_else(|e| panic!("start the clusters: {e}"));
        let mut contexts = Vec::new();
        let mut names = Vec::new();
        let mut admins = Vec::new();
        for (i, cluster) in clusters.iter().enumerate() {
            let client = Client::try_from(cluster.admin_config(NS)).expect("client");
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some("prod".into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .expect("namespace");
            let name = format!("kind-site-{}", (b'a' + i as u8) as char);
            let viewer = cluster.viewer().expect("bind the viewer roles");
            contexts.push(cluster.server().kubeconfig_context(
                &name,
                &cluster.server().url(),
                &viewer,
                NS,
            ));
            names.push(name);
            admins.push(client);
        }
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&contexts, &names[0]))
            .expect("write kubeconfig");
        World {
            _clusters: clusters,
            admins,
            _dir: dir,
            kubeconfig,
            contexts: names,
        }
    }

    /// Makes the clusters hold exactly `seeds`: what an earlier seed made goes first.
    async fn seed(&self, seeds: &[Seed]) {
        assert_eq!(seeds.len(), self.admins.len(), "one seed per cluster");
        for (seed, client) in seeds.iter().zip(&self.admins) {
            let eps: Api<ClusterEndpoint> = Api::namespaced(client.clone(), NS);
            let gws: Api<Gateway> = Api::namespaced(client.clone(), NS);
            let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
            let exports: Api<ServiceExport> = Api::namespaced(client.clone(), "prod");
            let all = Default::default();
            eps.delete_collection(&Default::default(), &all)
                .await
                .expect("clear");
            gws.delete_collection(&Default::default(), &all)
                .await
                .expect("clear");
            leases
                .delete_collection(&Default::default(), &all)
                .await
                .expect("clear");
            exports
                .delete_collection(&Default::default(), &all)
                .await
                .expect("clear");
            for ep in &seed.endpoints {
                create_with_status(&eps, ep).await;
            }
            for g in &seed.gateways {
                create_with_status(&gws, g).await;
            }
            for l in &seed.leases {
                leases
                    .create(&PostParams::default(), l)
                    .await
                    .expect("lease");
            }
            for e in &seed.exports {
                create_with_status(&exports, e).await;
            }
        }
    }

    /// What `diagnose` finds in `seeds` as of now.
    async fn findings(&self, seeds: Vec<Seed>) -> Vec<plugin::Finding> {
        self.findings_at(seeds, Timestamp::now()).await
    }

    /// The findings as of `now`, so that durations in messages are exact.
    async fn findings_at(&self, seeds: Vec<Seed>, now: Timestamp) -> Vec<plugin::Finding> {
        self.seed(&seeds).await;
        let snapshots = plugin::load_snapshots(Some(&self.kubeconfig), &self.contexts, NS)
            .await
            .expect("read both clusters");
        assert_eq!(snapshots.len(), 2);
        plugin::diagnose(&snapshots, now)
    }
}

/// Clusters holding `seeds`.
async fn world(seeds: Vec<Seed>) -> World {
    let w = World::start(seeds.len()).await;
    w.seed(&seeds).await;
    w
}

/// A whole second, as the API server stores times.
fn this_second() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).expect("valid")
}

fn status_of(seeds: &mut [Seed], cluster: usize) -> &mut GatewayStatus {
    seeds[cluster].gateways[0].status.as_mut().expect("status")
}

/// The messages of `class` among `found`, with where they were seen.
fn of_class(found: &[plugin::Finding], class: FindingClass) -> Vec<(String, String, String)> {
    found
        .iter()
        .filter(|f| f.class == class)
        .map(|f| (f.context.clone(), f.object.clone(), f.message.clone()))
        .collect()
}

#[tokio::test]
async fn a_healthy_clusterset_has_no_findings_and_shows_everything() {
    let w = world(healthy()).await;
    let snapshots = plugin::load_snapshots(Some(&w.kubeconfig), &w.contexts, NS)
        .await
        .expect("read both clusters");
    assert_eq!(plugin::diagnose(&snapshots, Timestamp::now()), vec![]);

    let clusters = show::clusters(&snapshots);
    assert_eq!(
        clusters.len(),
        4,
        "a local object and a mirror in each cluster"
    );
    assert!(clusters
        .iter()
        .any(|r| r.context == "kind-site-b" && r.cluster == "site-a" && r.kind == "mirror"));
    let gateways = show::gateways(&snapshots);
    assert_eq!(
        gateways
            .iter()
            .map(|g| (g.node.as_str(), g.role.as_str()))
            .collect::<Vec<_>>(),
        vec![("site-a-gw", "active"), ("site-b-gw", "active")]
    );
    let connections = show::connections(&snapshots);
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].state, "connected");
    assert_eq!(connections[0].rtt, "1.2ms");
    // The same rows serialize for -o json.
    let json = serde_json::to_value(&connections).expect("json");
    assert_eq!(json[0]["remote"], "site-b");
}

#[tokio::test]
async fn only_the_current_context_without_context_flags() {
    let w = world(healthy()).await;
    let snapshots = plugin::load_snapshots(Some(&w.kubeconfig), &[], NS)
        .await
        .expect("read the current context");
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].cluster_id(), "site-a");
    // One cluster alone is consistent too.
    assert_eq!(plugin::diagnose(&snapshots, Timestamp::now()), vec![]);
}

#[tokio::test]
async fn an_unknown_context_is_an_error_naming_it() {
    let w = world(healthy()).await;
    let err = plugin::load_snapshots(Some(&w.kubeconfig), &["nope".to_owned()], NS)
        .await
        .expect_err("no such context");
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

type Breakage = fn(&mut Vec<Seed>);

#[tokio::test]
async fn every_failure_class_is_detected_with_its_message() {
    let table: Vec<(FindingClass, &str, Breakage)> = vec![
        (
            FindingClass::NoLocalEndpoint,
            "no ClusterEndpoint labelled causeway.dev/local=true",
            |s| {
                s[0].endpoints.remove(0);
            },
        ),
        (FindingClass::InvalidEndpoint, "publicKey", |s| {
            s[1].endpoints[1].spec.gateways[0].public_key = "not-a-key".into();
        }),
        (
            FindingClass::RemoteRefused,
            "cluster \"site-a\" refuses cluster \"site-x\"'s ClusterEndpoint (CIDRNotAllowed): pod CIDR 8.8.8.0/24",
            |s| {
                s[0].endpoints[0].status = Some(ClusterEndpointStatus {
                    refused: vec![causeway_crds::RemoteRefusal {
                        cluster_id: "site-x".into(),
                        reason: "CIDRNotAllowed".into(),
                        message: "pod CIDR 8.8.8.0/24 is outside the ranges this cluster accepts".into(),
                    }],
                    ..ClusterEndpointStatus::default()
                });
            },
        ),
        (FindingClass::ClustersetConflict, "overlaps", |s| {
            s[1].endpoints[0].spec.pod_cidrs = vec!["10.1.128.0/17".into()];
            s[0].endpoints[1].spec.pod_cidrs = vec!["10.1.128.0/17".into()];
        }),
        // Where the controller's condition is passed through, the plugin's own framing
        // is what is checked, not only the words the test seeded.
        (
            FindingClass::EndpointRefused,
            "the controller refused it (DuplicateClusterID): site-a is claimed twice",
            |s| {
                s[0].endpoints[0].status = Some(ClusterEndpointStatus {
                    conditions: vec![condition(
                        "Valid",
                        "False",
                        "DuplicateClusterID",
                        "site-a is claimed twice",
                    )],
                    ..ClusterEndpointStatus::default()
                });
            },
        ),
        (
            FindingClass::MissingMirror,
            "has no mirror of cluster \"site-a\"",
            |s| {
                s[1].endpoints.truncate(1);
            },
        ),
        (FindingClass::StaleMirror, "gateways", |s| {
            s[1].endpoints[1].spec.gateways[0].public_key = format_key(&[9; 32]);
        }),
        (FindingClass::NoGateways, "causeway.dev/gateway=true", |s| {
            s[0].endpoints[0].spec.gateways.clear();
            s[1].endpoints[1].spec.gateways.clear();
        }),
        (FindingClass::NoActiveGateway, "no active gateway", |s| {
            s[0].leases[0] = lease("site-a", Timestamp::now() - SignedDuration::from_mins(5));
            s[0].gateways[0].status.as_mut().expect("status").role = Some(GatewayRole::Passive);
        }),
        (
            FindingClass::ConnectionDown,
            "to \"site-a\" is error: no handshake for 3m",
            |s| {
                let c = &mut s[1].gateways[0]
                    .status
                    .as_mut()
                    .expect("status")
                    .connections[0];
                c.state = ConnectionState::Error;
                c.reason =
                    Some("no handshake for 3m; is UDP 51820 open between the gateways?".into());
            },
        ),
        (
            FindingClass::MissingConnection,
            "reports no tunnel to \"site-b\"",
            |s| {
                s[0].gateways[0]
                    .status
                    .as_mut()
                    .expect("status")
                    .connections
                    .clear();
            },
        ),
        (
            FindingClass::ExportInvalid,
            "serviceexport/prod/db: NoService: ",
            |s| {
                s[0].exports.push(export(vec![condition(
                    "Valid",
                    "False",
                    "NoService",
                    "Service prod/db does not exist; create it or delete the ServiceExport",
                )]));
            },
        ),
        (
            FindingClass::ExportConflict,
            "serviceexport/prod/db: PortConflict: ",
            |s| {
                s[1].exports.push(export(vec![condition(
                    "Conflict",
                    "True",
                    "PortConflict",
                    "site-a's export wins: ports 5432/TCP vs 5433/TCP",
                )]));
            },
        ),
    ];
    let w = World::start(2).await;
    assert_eq!(
        w.findings(healthy()).await,
        Vec::new(),
        "the healthy seeds must give no finding, or the rows below prove nothing"
    );
    for (class, text, breakage) in table {
        let mut seeds = healthy();
        breakage(&mut seeds);
        let found = w.findings(seeds).await;
        // One breakage, one kind of finding: anything else is a false alarm at 3 a.m.
        // Except where the breakage really is two things at once: a mirror given a bad
        // key also differs from the object it mirrors.
        let also: &[FindingClass] = match class {
            FindingClass::InvalidEndpoint => &[FindingClass::StaleMirror],
            _ => &[],
        };
        let spurious: Vec<&plugin::Finding> = found
            .iter()
            .filter(|f| f.class != class && !also.contains(&f.class))
            .collect();
        assert!(
            spurious.is_empty(),
            "{class}: other findings too: {spurious:#?}"
        );
        let hit = found
            .iter()
            .find(|f| f.class == class)
            .unwrap_or_else(|| panic!("{class}: not detected; findings: {found:#?}"));
        let said = format!("{}: {}", hit.object, hit.message);
        assert!(
            said.contains(text),
            "{class}: {said:?} does not say {text:?}"
        );
    }
}

#[tokio::test]
async fn export_creates_the_service_export_once_and_refuses_a_missing_service() {
    use causeway_controller::plugin::export::{export_service, ExportOutcome};
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

    // Exporting is the service owner's act, not the viewer's: here the cluster's admin.
    let w = world(healthy()).await;
    let context = w.contexts[0].clone();
    let client = w.admins[0].clone();
    let service = Service {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 5432,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(client.clone(), "prod")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");

    let first = export_service(client.clone(), &context, "prod", "db").await;
    assert_eq!(first.expect("export"), ExportOutcome::Created);
    let again = export_service(client.clone(), &context, "prod", "db").await;
    assert_eq!(again.expect("export"), ExportOutcome::AlreadyExported);
    let exports = Api::<ServiceExport>::namespaced(client.clone(), "prod")
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(exports.items.len(), 1);

    let err = export_service(client, &context, "prod", "nope")
        .await
        .expect_err("no such Service");
    assert!(
        err.to_string().contains("Service prod/nope does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn unanswered_handshakes_name_the_endpoint_and_the_port_to_open() {
    let w = World::start(2).await;
    let now = this_second();
    let mut seeds = healthy();
    let c = &mut status_of(&mut seeds, 0).connections[0];
    c.state = ConnectionState::Connecting;
    c.endpoint = Some("198.18.0.2:51820".into());
    c.last_handshake = None;
    c.first_attempt = Some(Time(now - SignedDuration::from_mins(2)));
    c.handshake_attempts = Some(12);
    let found = w.findings_at(seeds, now).await;
    assert_eq!(
        of_class(&found, FindingClass::UnansweredHandshakes),
        vec![(
            "kind-site-a".to_owned(),
            "gateway/causeway/site-a-gw".to_owned(),
            "site-a's gateway site-a-gw has sent 12 handshake initiations to 198.18.0.2:51820 (site-b, gateway site-b-gw) over 2m without an answer: \
             allow UDP 51820 inbound to site-b's gateway (firewall/security group), or set --public-endpoint on it if it is behind NAT"
                .to_owned()
        )]
    );

    // Without a count, the time alone says it; under 30 s it may still be answered.
    let mut seeds = healthy();
    let c = &mut status_of(&mut seeds, 0).connections[0];
    c.endpoint = Some("198.18.0.2:51820".into());
    c.first_attempt = Some(Time(now - SignedDuration::from_secs(95)));
    let found = w.findings_at(seeds.clone(), now).await;
    let messages = of_class(&found, FindingClass::UnansweredHandshakes);
    assert_eq!(messages.len(), 1, "{found:#?}");
    assert!(
        messages[0].2.contains("has been sending handshake initiations to 198.18.0.2:51820 (site-b, gateway site-b-gw) for 1m35s without an answer"),
        "{messages:?}"
    );
    status_of(&mut seeds, 0).connections[0].first_attempt =
        Some(Time(now - SignedDuration::from_secs(20)));
    assert_eq!(w.findings_at(seeds, now).await, vec![]);
}

#[tokio::test]
async fn mtu_mismatches_between_gateways_and_with_the_underlay_are_found() {
    let w = World::start(2).await;
    let mut seeds = healthy();
    status_of(&mut seeds, 1).tunnel_mtu = Some(1380);
    let found = w.findings(seeds).await;
    assert_eq!(
        of_class(&found, FindingClass::MtuMismatch),
        vec![(
            "kind-site-a".to_owned(),
            "gateway/causeway/site-a-gw".to_owned(),
            "site-a's gateway site-a-gw uses tunnel MTU 1420 but site-b's gateway site-b-gw uses 1380: packets of 1381 to 1420 bytes fit one way and not the other; \
             set the same --mtu on both gateways (1380, the smaller) or give both underlays the same MTU"
                .to_owned()
        )]
    );

    let mut seeds = healthy();
    status_of(&mut seeds, 1).underlay_mtu = Some(1450);
    let found = w.findings(seeds).await;
    assert_eq!(
        of_class(&found, FindingClass::MtuMismatch),
        vec![(
            "kind-site-b".to_owned(),
            "gateway/causeway/site-b-gw".to_owned(),
            "site-b's gateway site-b-gw has tunnel MTU 1420, but its underlay MTU is 1450: with WireGuard's 60 bytes over IPv4 \
             a full-size packet is 1480 bytes and is fragmented or dropped; set --mtu 1390 on it (or leave --mtu unset to derive it from the underlay)"
                .to_owned()
        )]
    );
}

#[tokio::test]
async fn routes_the_kernel_refused_are_named_with_the_node() {
    let w = World::start(2).await;
    let mut seeds = healthy();
    status_of(&mut seeds, 1).routes = Some(RouteStatus {
        desired: 7,
        installed: 1,
        missing: [
            "10.1.0.0/16",
            "10.101.0.0/16",
            "fd00:1::/48",
            "fd00:101::/112",
            "10.9.0.0/16",
        ]
        .map(String::from)
        .to_vec(),
    });
    let found = w.findings(seeds).await;
    assert_eq!(
        of_class(&found, FindingClass::RoutesMissing),
        vec![(
            "kind-site-b".to_owned(),
            "gateway/causeway/site-b-gw".to_owned(),
            "site-b's gateway site-b-gw holds 1 of the 7 routes it should on node site-b-gw; \
             missing: 10.1.0.0/16, 10.101.0.0/16, fd00:1::/48, fd00:101::/112, 10.9.0.0/16 and 1 more: the kernel refused them — \
             check the log of the causeway-gateway pod on site-b-gw (`kubectl -n causeway logs`) for the route errors, and whether another route manager \
             (the CNI, another VPN) holds routes to those CIDRs (`ip route show 10.1.0.0/16` on the node)"
                .to_owned()
        )]
    );
}

#[tokio::test]
async fn version_skew_lists_who_runs_what() {
    let w = World::start(2).await;
    let mut seeds = healthy();
    // site-b's controller was upgraded; its gateway and site-a were not.
    seeds[1].endpoints[0]
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert(VERSION_ANNOTATION.into(), "0.5.0".into());
    let found = w.findings(seeds).await;
    let listing = "site-a controller 0.4.0, site-a gateway site-a-gw 0.4.2, site-b controller 0.5.0, site-b gateway site-b-gw 0.4.2";
    let message = |who: &str, v: &str| {
        format!(
            "{who} runs {v}, behind the newest release in the clusterset (0.5.0): {listing}; \
             upgrade every cluster's Causeway (`helm upgrade` of the chart) to the same release"
        )
    };
    assert_eq!(
        of_class(&found, FindingClass::VersionSkew),
        vec![
            (
                "kind-site-a".to_owned(),
                "clusterendpoint/causeway/site-a".to_owned(),
                message("site-a controller", "0.4.0")
            ),
            (
                "kind-site-a".to_owned(),
                "gateway/causeway/site-a-gw".to_owned(),
                message("site-a gateway site-a-gw", "0.4.2")
            ),
            (
                "kind-site-b".to_owned(),
                "gateway/causeway/site-b-gw".to_owned(),
                message("site-b gateway site-b-gw", "0.4.2")
            ),
        ]
    );
    // Nothing else is wrong with this clusterset.
    assert!(
        found.iter().all(|f| f.class == FindingClass::VersionSkew),
        "{found:#?}"
    );
}
