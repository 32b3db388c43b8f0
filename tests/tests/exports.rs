//! Service export and import (docs/services.md) against real API servers — a broker and
//! three member clusters, the chart installed in each — through the real `kube` client
//! with the credentials the chart gives the controller: publication at the broker,
//! imports and slices in every cluster with their labels, readiness changes (pods whose
//! status the test writes, sliced by the real EndpointSlice controller), conflicts,
//! withdrawal on unexport / Service deletion / namespace deletion, no-op passes that
//! write nothing, a broker outage, the watch loop with a burst of changes, and the
//! controller binary.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use causeway_controller::exports::{self, ExportConfig, ExportError, ExportReport};
use causeway_crds::mcs::{
    CONDITION_CONFLICT, CONDITION_READY, CONDITION_VALID, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER,
};
use causeway_crds::names::{
    ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER, MANAGED_LABEL, SERVICE_NAMESPACE_LABEL,
};
use causeway_crds::validate::Acceptance;
use causeway_crds::{
    ClusterEndpoint, ClusterEndpointSpec, ServiceExport, ServiceImport, ServiceImportType,
};
use causeway_tests::fixtures::{
    self, gateway_endpoint, key, label, namespace, sorted_names, wait_for, wait_while_running,
};
use causeway_tests::harness::control_plane::workload::{self, Backend};
use causeway_tests::harness::control_plane::{ClusterKind, KubeApiServer, TestCluster};
use causeway_tests::harness::ChildGuard;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;

const BROKER_NS: &str = "causeway-broker";
const WAIT: Duration = Duration::from_secs(20);
/// The node every test pod runs on.
const NODE: &str = "node-1";

/// One real cluster (the chart installed) and its cluster ID; the test acts in it as
/// cluster-admin through `client`, the controller with the credentials the chart gives it.
struct Cluster {
    id: &'static str,
    cluster: TestCluster,
    client: Client,
}

impl Cluster {
    fn server(&self) -> &KubeApiServer {
        self.cluster.server()
    }

    /// A client as cluster `id`'s controller here (its ServiceAccount, or its member token
    /// at the broker).
    fn controller(&self, id: &str) -> Client {
        let credentials = self
            .cluster
            .controller_credentials(id)
            .unwrap_or_else(|e| panic!("credentials of {id}'s controller: {e}"));
        Client::try_from(self.cluster.config(&credentials, "default")).expect("a client")
    }

    async fn create_namespace(&self, name: &str) {
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace(name))
            .await
            .unwrap_or_else(|e| panic!("create namespace {name} in {}: {e}", self.id));
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Every write of the kinds the export sync writes.
    fn export_writes(&self) -> u64 {
        self.server().writes_of::<ServiceImport>().total()
            + self.server().writes_of::<EndpointSlice>().total()
            + self.server().writes_of::<ServiceExport>().total()
    }

    /// One export pass as this cluster.
    async fn pass(&self, broker: &Cluster) -> Result<ExportReport, ExportError> {
        exports::sync_once(
            &broker.controller(self.id),
            BROKER_NS,
            &self.controller(self.id),
            self.id,
            &Acceptance::default(),
        )
        .await
    }

    fn config(&self, broker: &Cluster) -> ExportConfig {
        ExportConfig {
            broker: broker.controller(self.id),
            broker_namespace: BROKER_NS.to_owned(),
            local: self.controller(self.id),
            cluster_id: self.id.to_owned(),
            resync: Duration::from_secs(3600),
            debounce: Duration::from_millis(50),
            acceptance: Acceptance::default(),
        }
    }

    async fn import(&self, ns: &str, name: &str) -> Option<ServiceImport> {
        self.api::<ServiceImport>(ns)
            .get_opt(name)
            .await
            .expect("get ServiceImport")
    }

    /// Names of the slices Causeway imported into `ns`, sorted.
    async fn imported_slices(&self, ns: &str) -> Vec<String> {
        let selector = format!("{ENDPOINTSLICE_MANAGED_BY_LABEL}={ENDPOINTSLICE_MANAGER}");
        sorted_names(
            self.api::<EndpointSlice>(ns)
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("list EndpointSlices")
                .items,
        )
    }

    async fn condition(&self, ns: &str, name: &str, type_: &str) -> Option<Condition> {
        self.api::<ServiceExport>(ns)
            .get_opt(name)
            .await
            .expect("get ServiceExport")?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    }
}

/// A broker and clusters site-a, site-b, site-c; `prod` exists in all three.
struct World {
    broker: Cluster,
    clusters: Vec<Cluster>,
}

impl World {
    async fn start() -> World {
        let ids = ["site-a", "site-b", "site-c"];
        let mut kinds = vec![ClusterKind::broker(&ids)];
        for (n, id) in ids.iter().enumerate() {
            kinds.push(ClusterKind::member(id, n as u8 + 1));
        }
        let mut started = TestCluster::start_all(&kinds)
            .unwrap_or_else(|e| panic!("start the clusters: {e}"))
            .into_iter()
            .zip(std::iter::once("broker").chain(ids))
            .map(|(cluster, id)| {
                let client = Client::try_from(cluster.admin_config("default")).expect("a client");
                Cluster {
                    id,
                    cluster,
                    client,
                }
            });
        let broker = started.next().expect("the broker");
        let clusters: Vec<Cluster> = started.collect();
        for (n, cluster) in clusters.iter().enumerate() {
            cluster.create_namespace("prod").await;
            // Each member's ClusterEndpoint, as its controller publishes it: a cluster's
            // endpoints are imported elsewhere only inside its CIDRs.
            Api::<ClusterEndpoint>::namespaced(broker.controller(cluster.id), BROKER_NS)
                .create(
                    &PostParams::default(),
                    &cluster_endpoint(cluster.id, n as u8 + 1),
                )
                .await
                .unwrap_or_else(|e| panic!("{}'s ClusterEndpoint at the broker: {e}", cluster.id));
        }
        World { broker, clusters }
    }

    fn a(&self) -> &Cluster {
        &self.clusters[0]
    }

    fn b(&self) -> &Cluster {
        &self.clusters[1]
    }

    fn c(&self) -> &Cluster {
        &self.clusters[2]
    }

    /// One pass in every cluster, in order.
    async fn round(&self) {
        for cluster in &self.clusters {
            cluster
                .pass(&self.broker)
                .await
                .unwrap_or_else(|e| panic!("pass of {}: {e}", cluster.id));
        }
    }

    /// Two rounds: each cluster publishes, then every cluster sees every other's.
    async fn settle(&self) {
        self.round().await;
        self.round().await;
    }

    fn reset_counters(&self) {
        self.broker.server().reset_counters();
        for c in &self.clusters {
            c.server().reset_counters();
        }
    }

    /// Asserts that a full round writes nothing anywhere.
    async fn assert_settled(&self, what: &str) {
        self.reset_counters();
        self.round().await;
        assert_eq!(
            self.broker.export_writes(),
            0,
            "{what}: a settled round writes nothing at the broker"
        );
        for c in &self.clusters {
            assert_eq!(
                c.export_writes(),
                0,
                "{what}: a settled round writes nothing in {}",
                c.id
            );
        }
    }

    async fn broker_names(&self) -> (Vec<String>, Vec<String>) {
        let imports = self
            .broker
            .api::<ServiceImport>(BROKER_NS)
            .list(&ListParams::default())
            .await
            .expect("list broker imports")
            .items;
        let slices = self
            .broker
            .api::<EndpointSlice>(BROKER_NS)
            .list(&ListParams::default())
            .await
            .expect("list broker slices")
            .items;
        (sorted_names(imports), sorted_names(slices))
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// Creates Service `name` in `ns`: headless when `cluster_ip` is `None`.
async fn create_service(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    cluster_ip: &str,
    ports: Vec<ServicePort>,
) {
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_owned()),
            cluster_ips: Some(vec![cluster_ip.to_owned()]),
            ports: Some(ports),
            selector: Some(BTreeMap::from([("app".to_owned(), name.to_owned())])),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    cluster
        .api::<Service>(ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("create Service {ns}/{name} in {}: {e}", cluster.id));
}

/// Makes `service`'s backends in `cluster` exactly `endpoints` (address, hostname, ready):
/// pods as a kubelet would report them, and the real EndpointSlice controller's slices.
async fn backends(
    cluster: &Cluster,
    ns: &str,
    service: &str,
    endpoints: &[(&str, Option<&str>, bool)],
) {
    let backends: Vec<Backend> = endpoints
        .iter()
        .map(|(ip, hostname, ready)| Backend::new(ip, *hostname, *ready))
        .collect();
    workload::set_backends(&cluster.client, ns, service, NODE, &backends)
        .await
        .unwrap_or_else(|e| panic!("the backends of {ns}/{service} in {}: {e}", cluster.id));
}

async fn export(cluster: &Cluster, ns: &str, name: &str) {
    let export = ServiceExport {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Default::default(),
        status: None,
    };
    cluster
        .api::<ServiceExport>(ns)
        .create(&PostParams::default(), &export)
        .await
        .unwrap_or_else(|e| panic!("create ServiceExport {ns}/{name} in {}: {e}", cluster.id));
}

/// A headless `db` with two StatefulSet pods (one not ready), exported from `cluster`.
async fn export_headless_db(cluster: &Cluster, prefix: &str) {
    create_service(cluster, "prod", "db", "None", vec![port("pg", 5432)]).await;
    backends(
        cluster,
        "prod",
        "db",
        &[
            (&format!("{prefix}.6"), Some("db-0"), true),
            (&format!("{prefix}.7"), Some("db-1"), false),
        ],
    )
    .await;
    export(cluster, "prod", "db").await;
}

/// A ClusterSetIP `web` with one ready backend (`pod`), exported from `cluster`.
async fn export_web(cluster: &Cluster, cluster_ip: &str, pod: &str) {
    create_service(cluster, "prod", "web", cluster_ip, vec![port("http", 80)]).await;
    backends(cluster, "prod", "web", &[(pod, None, true)]).await;
    export(cluster, "prod", "web").await;
}

fn ready_of(slice: &EndpointSlice) -> Vec<(String, Option<String>, Option<bool>)> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses.join(","),
                e.hostname.clone(),
                e.conditions.as_ref().and_then(|c| c.ready),
            )
        })
        .collect()
}

#[tokio::test]
async fn exports_are_published_and_imported_everywhere_and_a_second_round_writes_nothing() {
    let world = World::start().await;
    export_headless_db(world.a(), "10.1.0").await;
    export_web(world.b(), "10.102.0.10", "10.2.9.9").await;
    world.settle().await;

    // At the broker: each cluster's own objects, labelled.
    let (imports, slices) = world.broker_names().await;
    assert_eq!(imports, vec!["db-prod-site-a", "web-prod-site-b"]);
    assert_eq!(slices, vec!["db-prod-site-a-ipv4", "web-prod-site-b-ipv4"]);
    let published = world
        .broker
        .api::<ServiceImport>(BROKER_NS)
        .get("db-prod-site-a")
        .await
        .expect("A's import at the broker");
    assert_eq!(label(&published, LABEL_SERVICE_NAME), Some("db"));
    assert_eq!(label(&published, SERVICE_NAMESPACE_LABEL), Some("prod"));
    assert_eq!(label(&published, LABEL_SOURCE_CLUSTER), Some("site-a"));
    assert_eq!(
        published.metadata.annotations, None,
        "no claimed export time: the broker's creationTimestamp is the export's age"
    );
    assert_eq!(published.spec.type_, ServiceImportType::Headless);
    let web = world
        .broker
        .api::<ServiceImport>(BROKER_NS)
        .get("web-prod-site-b")
        .await
        .expect("B's import at the broker");
    assert_eq!(web.spec.type_, ServiceImportType::ClusterSetIP);
    assert_eq!(web.spec.ips, vec!["10.102.0.10".to_owned()]);

    // In every cluster: both services imported with their slices.
    for cluster in &world.clusters {
        let db = cluster.import("prod", "db").await.expect("db imported");
        assert_eq!(label(&db, MANAGED_LABEL), Some("true"), "{}", cluster.id);
        assert_eq!(db.spec.type_, ServiceImportType::Headless);
        assert_eq!(db.spec.ports.len(), 1);
        let clusters: Vec<String> = db
            .status
            .iter()
            .flat_map(|s| &s.clusters)
            .map(|c| c.cluster.clone())
            .collect();
        assert_eq!(clusters, vec!["site-a"], "{}", cluster.id);
        let web = cluster.import("prod", "web").await.expect("web imported");
        assert_eq!(web.spec.type_, ServiceImportType::ClusterSetIP);
        assert_eq!(
            cluster.imported_slices("prod").await,
            vec!["db-site-a-ipv4", "web-site-b-ipv4"],
            "{}",
            cluster.id
        );
        let copy = cluster
            .api::<EndpointSlice>("prod")
            .get("db-site-a-ipv4")
            .await
            .expect("db's slice");
        assert_eq!(label(&copy, LABEL_SERVICE_NAME), Some("db"));
        assert_eq!(label(&copy, LABEL_SOURCE_CLUSTER), Some("site-a"));
        assert_eq!(
            ready_of(&copy),
            vec![
                ("10.1.0.6".to_owned(), Some("db-0".to_owned()), Some(true)),
                ("10.1.0.7".to_owned(), Some("db-1".to_owned()), Some(false)),
            ]
        );
        let owner = &copy.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(owner.uid, db.metadata.uid.clone().unwrap_or_default());
        let web_copy = cluster
            .api::<EndpointSlice>("prod")
            .get("web-site-b-ipv4")
            .await
            .expect("web's slice");
        assert_eq!(
            ready_of(&web_copy),
            vec![("10.102.0.10".to_owned(), None, Some(true))],
            "one endpoint: B's ClusterIP"
        );
    }
    // The exporters' conditions.
    for (cluster, name) in [(world.a(), "db"), (world.b(), "web")] {
        for (type_, status) in [
            (CONDITION_VALID, "True"),
            (CONDITION_CONFLICT, "False"),
            (CONDITION_READY, "True"),
        ] {
            let c = cluster
                .condition("prod", name, type_)
                .await
                .unwrap_or_else(|| panic!("{} {name}: {type_}", cluster.id));
            assert_eq!(c.status, status, "{} {name}: {c:?}", cluster.id);
        }
    }
    world.assert_settled("after the first export").await;
}

#[tokio::test]
async fn a_readiness_change_reaches_every_cluster() {
    let world = World::start().await;
    export_headless_db(world.a(), "10.1.0").await;
    world.settle().await;
    backends(
        world.a(),
        "prod",
        "db",
        &[
            ("10.1.0.6", Some("db-0"), false),
            ("10.1.0.7", Some("db-1"), true),
        ],
    )
    .await;
    world.reset_counters();
    world.settle().await;
    for cluster in &world.clusters {
        let copy = cluster
            .api::<EndpointSlice>("prod")
            .get("db-site-a-ipv4")
            .await
            .expect("db's slice");
        assert_eq!(
            ready_of(&copy),
            vec![
                ("10.1.0.6".to_owned(), Some("db-0".to_owned()), Some(false)),
                ("10.1.0.7".to_owned(), Some("db-1".to_owned()), Some(true)),
            ],
            "{}",
            cluster.id
        );
        // Only the slice changed: no ServiceImport or condition write.
        assert_eq!(cluster.server().writes_of::<ServiceImport>().total(), 0);
        assert_eq!(cluster.server().writes_of::<ServiceExport>().total(), 0);
    }
    world.assert_settled("after the readiness change").await;
}

#[tokio::test]
async fn conflicting_exports_get_the_condition_on_both_sides_and_the_oldest_stays_imported() {
    let world = World::start().await;
    export_headless_db(world.a(), "10.1.0").await;
    // A exports first: its export is the oldest (or, created in the same second, site-a wins the tie).
    world.round().await;
    // B exports a ClusterSetIP `db` with another port.
    create_service(
        world.b(),
        "prod",
        "db",
        "10.102.0.20",
        vec![port("pg", 5433)],
    )
    .await;
    backends(world.b(), "prod", "db", &[("10.2.0.6", None, true)]).await;
    export(world.b(), "prod", "db").await;
    world.settle().await;

    for (cluster, other) in [(world.a(), "site-b"), (world.b(), "site-a")] {
        let c = cluster
            .condition("prod", "db", CONDITION_CONFLICT)
            .await
            .unwrap_or_else(|| panic!("{}: a Conflict condition", cluster.id));
        assert_eq!(c.status, "True", "{}: {c:?}", cluster.id);
        assert_eq!(c.reason, "TypeConflict,PortConflict", "{}", cluster.id);
        for part in [
            other,
            "type",
            "Headless",
            "ClusterSetIP",
            "ports",
            "5432",
            "5433",
        ] {
            assert!(
                c.message.contains(part),
                "{}: {part:?} in {}",
                cluster.id,
                c.message
            );
        }
        assert!(
            c.message.contains("site-a"),
            "names the winner: {}",
            c.message
        );
    }
    for cluster in &world.clusters {
        let db = cluster.import("prod", "db").await.expect("db imported");
        assert_eq!(db.spec.type_, ServiceImportType::Headless, "{}", cluster.id);
        assert_eq!(db.spec.ports[0].port, 5432);
        let clusters: Vec<String> = db
            .status
            .iter()
            .flat_map(|s| &s.clusters)
            .map(|c| c.cluster.clone())
            .collect();
        assert_eq!(clusters, vec!["site-a"]);
        assert_eq!(
            cluster.imported_slices("prod").await,
            vec!["db-site-a-ipv4"],
            "{}: B's slices are not imported",
            cluster.id
        );
    }
    world.assert_settled("with a conflict").await;

    // B fixes its Service (a ClusterIP cannot become headless in place: it is recreated):
    // the conflict clears and B's slice is imported too.
    world
        .b()
        .api::<Service>("prod")
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete B's Service");
    create_service(world.b(), "prod", "db", "None", vec![port("pg", 5432)]).await;
    backends(world.b(), "prod", "db", &[("10.2.0.6", None, true)]).await;
    world.settle().await;
    for cluster in &world.clusters {
        assert_eq!(
            cluster.imported_slices("prod").await,
            vec!["db-site-a-ipv4", "db-site-b-ipv4"],
            "{}",
            cluster.id
        );
    }
    let c = world
        .b()
        .condition("prod", "db", CONDITION_CONFLICT)
        .await
        .expect("Conflict");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NoConflicts")
    );
}

#[tokio::test]
async fn unexport_service_deletion_and_namespace_deletion_withdraw_everywhere() {
    // One clusterset, three cases in turn; each starts with db exported and imported
    // everywhere again (what the case before deleted is made again).
    let world = World::start().await;
    for case in ["unexport", "Service deleted", "namespace deleted"] {
        match case {
            "unexport" => export_headless_db(world.a(), "10.1.0").await,
            "Service deleted" => export(world.a(), "prod", "db").await,
            _ => {
                create_service(world.a(), "prod", "db", "None", vec![port("pg", 5432)]).await;
                backends(
                    world.a(),
                    "prod",
                    "db",
                    &[
                        ("10.1.0.6", Some("db-0"), true),
                        ("10.1.0.7", Some("db-1"), false),
                    ],
                )
                .await;
            }
        }
        world.settle().await;
        assert!(world.c().import("prod", "db").await.is_some(), "{case}");
        match case {
            "unexport" => {
                world
                    .a()
                    .api::<ServiceExport>("prod")
                    .delete("db", &DeleteParams::default())
                    .await
                    .expect("unexport");
            }
            "Service deleted" => {
                world
                    .a()
                    .api::<Service>("prod")
                    .delete("db", &DeleteParams::default())
                    .await
                    .expect("delete the Service");
            }
            _ => {
                Api::<Namespace>::all(world.a().client.clone())
                    .delete("prod", &DeleteParams::default())
                    .await
                    .expect("delete the namespace");
            }
        }
        world.settle().await;
        let (imports, slices) = world.broker_names().await;
        assert!(
            imports.is_empty() && slices.is_empty(),
            "{case}: withdrawn at the broker"
        );
        for cluster in &world.clusters {
            if case == "namespace deleted" && cluster.id == "site-a" {
                continue;
            }
            assert!(
                cluster.import("prod", "db").await.is_none(),
                "{case}: {} has no import",
                cluster.id
            );
            assert!(
                cluster.imported_slices("prod").await.is_empty(),
                "{case}: {} has no slices",
                cluster.id
            );
        }
        if case == "Service deleted" {
            let valid = world
                .a()
                .condition("prod", "db", CONDITION_VALID)
                .await
                .expect("Valid");
            assert_eq!(
                (valid.status.as_str(), valid.reason.as_str()),
                ("False", "NoService")
            );
            let ready = world
                .a()
                .condition("prod", "db", CONDITION_READY)
                .await
                .expect("Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "Pending")
            );
        }
        world.assert_settled(case).await;
    }
}

#[tokio::test]
async fn a_namespace_that_is_missing_here_is_not_imported_until_it_exists() {
    let world = World::start().await;
    world.a().create_namespace("analytics").await;
    create_service(
        world.a(),
        "analytics",
        "etl",
        "10.101.0.5",
        vec![port("http", 80)],
    )
    .await;
    export(world.a(), "analytics", "etl").await;
    world.settle().await;
    assert!(world.a().import("analytics", "etl").await.is_some());
    assert!(world.b().import("analytics", "etl").await.is_none());
    world.assert_settled("with a namespace missing").await;
    world.b().create_namespace("analytics").await;
    world.round().await;
    assert!(world.b().import("analytics", "etl").await.is_some());
    assert_eq!(
        world.b().imported_slices("analytics").await,
        vec!["etl-site-a-ipv4"]
    );
}

#[tokio::test]
async fn a_broker_outage_fails_the_pass_and_deletes_nothing() {
    let world = World::start().await;
    export_headless_db(world.a(), "10.1.0").await;
    world.settle().await;
    world.broker.server().stop();
    for cluster in &world.clusters {
        let error = cluster
            .pass(&world.broker)
            .await
            .expect_err("the pass fails without the broker");
        assert!(
            matches!(error, ExportError::List { .. }),
            "{}: {error}",
            cluster.id
        );
        assert!(error.to_string().contains("of the broker"), "{error}");
        assert!(
            cluster.import("prod", "db").await.is_some(),
            "{}: kept",
            cluster.id
        );
        assert_eq!(
            cluster.imported_slices("prod").await,
            vec!["db-site-a-ipv4"]
        );
    }
    world.broker.server().restart().expect("restart the broker");
    world.assert_settled("after the outage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_changes_makes_one_pass_per_burst_and_settles_without_writing() {
    let world = World::start().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for cluster in &world.clusters[..2] {
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(exports::run(
            cluster.config(&world.broker),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )));
    }
    export_headless_db(world.a(), "10.1.0").await;
    wait_for("db imported in B", WAIT, async || {
        world.b().imported_slices("prod").await == vec!["db-site-a-ipv4"]
    })
    .await;

    // A burst: 30 exports in A at once.
    for i in 0..30 {
        let name = format!("svc-{i}");
        create_service(
            world.a(),
            "prod",
            &name,
            &format!("10.101.1.{i}"),
            vec![port("http", 80)],
        )
        .await;
        export(world.a(), "prod", &name).await;
    }
    wait_for("the burst imported in B", WAIT, async || {
        world.b().imported_slices("prod").await.len() == 31
    })
    .await;
    // Readiness of db changes in A: B follows.
    backends(
        world.a(),
        "prod",
        "db",
        &[("10.1.0.6", Some("db-0"), false)],
    )
    .await;
    wait_for("B sees db-0 not ready", WAIT, async || {
        world
            .b()
            .api::<EndpointSlice>("prod")
            .get_opt("db-site-a-ipv4")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| {
                ready_of(&s) == vec![("10.1.0.6".to_owned(), Some("db-0".to_owned()), Some(false))]
            })
    })
    .await;

    // The loops' own writes trigger passes that find nothing to do: wait until a
    // quiet second passes without a write, then check a second one stays quiet.
    let writes =
        || world.broker.export_writes() + world.a().export_writes() + world.b().export_writes();
    let deadline = Instant::now() + WAIT;
    loop {
        let before = writes();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if writes() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the loops never stopped writing");
    }
    let before = writes();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(writes(), before, "no write storm");

    stop.send(true).expect("the loops are running");
    let mut passes = Vec::new();
    for task in tasks {
        passes.push(
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the loop stops on shutdown")
                .expect("the loop does not panic"),
        );
    }
    // Each change is a few passes (its own and the echo of its writes), not one per event:
    // the burst alone is ~90 watch events in A.
    for (cluster, n) in world.clusters.iter().zip(&passes) {
        eprintln!("{}: {n} passes", cluster.id);
        assert!(
            (2..=15).contains(n),
            "{}: {n} passes for three changes",
            cluster.id
        );
    }
}

fn endpoint_file(dir: &std::path::Path, cluster: &str, n: u8) -> std::path::PathBuf {
    let path = dir.join(format!("{cluster}.yaml"));
    let yaml =
        serde_yaml::to_string(&ClusterEndpoint::new(cluster, spec(cluster, n))).expect("serialise");
    std::fs::write(&path, yaml).expect("write the endpoint file");
    path
}

/// Starts the binary as `cluster`'s controller, its spec that of site `n`.
fn start_controller(
    dir: &std::path::Path,
    broker: &Cluster,
    cluster: &Cluster,
    n: u8,
) -> ChildGuard {
    let spec = endpoint_file(dir, cluster.id, n);
    fixtures::start_controller(
        dir,
        cluster.id,
        &broker.cluster,
        &cluster.cluster,
        &[OsString::from("--endpoint-file"), spec.into()],
        &format!("controller-{}", cluster.id),
    )
}

#[tokio::test]
async fn the_binary_exports_and_imports_within_seconds() {
    let world = World::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut a = start_controller(dir.path(), &world.broker, world.a(), 1);
    let mut b = start_controller(dir.path(), &world.broker, world.b(), 2);
    // Both lead and have run their first pass before the export appears.
    for controller in [&mut a, &mut b] {
        let log = controller.log_path().to_owned();
        let what = format!("{} to start its export sync", controller.label());
        wait_while_running(controller, &what, WAIT, async || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("first export pass")
        })
        .await;
    }
    let exported = Instant::now();
    export_headless_db(world.a(), "10.1.0").await;
    let deadline = exported + Duration::from_secs(5);
    loop {
        let imported = world.b().import("prod", "db").await.is_some()
            && world.b().imported_slices("prod").await == vec!["db-site-a-ipv4"];
        if imported {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "db was not imported into site-b within 5 s:\nA:\n{}\nB:\n{}",
            a.log_tail(30),
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "imported into site-b {:?} after the export",
        exported.elapsed()
    );
    let ready = world.a().condition("prod", "db", CONDITION_READY).await;
    let deadline = Instant::now() + WAIT;
    let mut ready = ready;
    while ready.as_ref().map(|c| c.status.as_str()) != Some("True") {
        assert!(
            Instant::now() < deadline,
            "A's export never became Ready: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = world.a().condition("prod", "db", CONDITION_READY).await;
    }
    for mut controller in [a, b] {
        let status = controller
            .terminate_and_wait(Duration::from_secs(10))
            .expect("stop the controller");
        assert!(
            status.success(),
            "{} exits 0 on SIGTERM: {status}\n{}",
            controller.label(),
            controller.log_tail(30)
        );
    }
}

/// Namespace deletion as Kubernetes does it: a finalizer holds `prod` of site-b in
/// Terminating. Site-b's passes neither fail nor try to create anything there (a real API
/// server would refuse it), and leave its deletion to the namespace controller; once the
/// namespace is gone and made again, the imports come back.
#[tokio::test]
async fn a_terminating_namespace_gets_no_imports_and_its_deletion_goes_through() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let world = World::start().await;
    export_headless_db(world.a(), "10.1.0").await;
    world.settle().await;
    assert!(world.b().import("prod", "db").await.is_some());

    let hold: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hold", "namespace": "prod", "finalizers": ["causeway.test/hold"]},
    }))
    .expect("a ConfigMap");
    let configmaps: Api<ConfigMap> = world.b().api("prod");
    configmaps
        .create(&PostParams::default(), &hold)
        .await
        .expect("create the held ConfigMap");
    let namespaces: Api<Namespace> = Api::all(world.b().client.clone());
    namespaces
        .delete("prod", &DeleteParams::default())
        .await
        .expect("delete site-b's prod");
    wait_for(
        "site-b's prod to be Terminating with its imports gone",
        WAIT,
        async || {
            let phase = namespaces
                .get_opt("prod")
                .await
                .ok()
                .flatten()
                .and_then(|ns| ns.status)
                .and_then(|s| s.phase);
            phase.as_deref() == Some("Terminating")
                && world.b().import("prod", "db").await.is_none()
                && world.b().imported_slices("prod").await.is_empty()
        },
    )
    .await;

    // A new export: every pass succeeds; site-b writes nothing into prod, site-c imports it.
    export_web(world.a(), "10.101.0.10", "10.1.9.9").await;
    world.reset_counters();
    world.settle().await;
    let into_prod: Vec<String> = world
        .b()
        .server()
        .writes()
        .0
        .iter()
        .filter(|r| r.namespace == "prod")
        .map(ToString::to_string)
        .collect();
    assert!(
        into_prod.is_empty(),
        "site-b wrote into its terminating prod:\n{}",
        into_prod.join("\n")
    );
    assert!(world.b().import("prod", "web").await.is_none());
    assert!(world.c().import("prod", "web").await.is_some());

    // The finalizer goes; prod is deleted, then made again: both imports return.
    configmaps
        .patch(
            "hold",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": []}})),
        )
        .await
        .expect("release the finalizer");
    wait_for("site-b's prod to be gone", WAIT, async || {
        matches!(namespaces.get_opt("prod").await, Ok(None))
    })
    .await;
    world.b().create_namespace("prod").await;
    world.settle().await;
    for name in ["db", "web"] {
        assert!(world.b().import("prod", name).await.is_some(), "{name}");
    }
}

/// Object `name` from a list: a member may list at the broker, not get.
async fn listed<K>(api: &Api<K>, name: &str) -> Result<K, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
        .ok_or_else(|| format!("{name} is not listed"))
}

/// The status code and message of a refused write; panics on success or another error.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>, attack: &str) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("{attack}: expected a refusal, got {other:?}"),
    }
}

/// The spec of `cluster` with the pod and service CIDRs and the gateway of site `n`.
fn spec(cluster: &str, n: u8) -> ClusterEndpointSpec {
    ClusterEndpointSpec {
        cluster_id: cluster.to_owned(),
        pod_cidrs: vec![format!("10.{n}.0.0/16")],
        service_cidrs: vec![format!("10.10{n}.0.0/16")],
        gateways: vec![gateway_endpoint(&format!("{cluster}-gw-1"), n, n + 2)],
    }
}

/// A ClusterEndpoint of `cluster` (the pod and service CIDRs of site `n`).
fn cluster_endpoint(cluster: &str, n: u8) -> ClusterEndpoint {
    let mut ep = ClusterEndpoint::new(cluster, spec(cluster, n));
    ep.metadata.namespace = Some(BROKER_NS.to_owned());
    ep
}

/// Trust (docs/security.md, "a member speaks only for itself"): site-b, with the broker
/// credentials the chart gave it, attacks site-c's objects at the broker every way the
/// API allows - replace its ClusterEndpoint's key and endpoint, patch its status, publish
/// a ClusterEndpoint under another name or claiming another cluster ID, replace, relabel
/// and delete site-c's ServiceImport and EndpointSlice, publish objects in site-c's name.
/// Every attempt is refused (403) and site-c's objects are left exactly as they were,
/// while site-b's writes to its own objects still go through.
#[tokio::test]
async fn a_member_cannot_write_another_members_objects_at_the_broker() {
    let world = World::start().await;
    let as_b = world.broker.controller("site-b");
    let endpoints_b: Api<ClusterEndpoint> = Api::namespaced(as_b.clone(), BROKER_NS);
    let pp = PostParams::default();
    // The admission policy takes effect once the API server has loaded it; a probe let
    // through before that is removed (as the broker's admin) and tried again.
    let as_admin: Api<ClusterEndpoint> = world.broker.api(BROKER_NS);
    wait_for(
        "the ownership policy to refuse site-b a ClusterEndpoint named site-x",
        WAIT,
        async || match endpoints_b
            .create(&pp, &cluster_endpoint("site-x", 9))
            .await
        {
            Err(kube::Error::Api(s)) => s.code == 403,
            _ => {
                let _ = as_admin.delete("site-x", &DeleteParams::default()).await;
                false
            }
        },
    )
    .await;
    export_headless_db(world.c(), "10.3.0").await;
    world.c().pass(&world.broker).await.expect("site-c's pass");
    let imports_b: Api<ServiceImport> = Api::namespaced(as_b.clone(), BROKER_NS);
    let slices_b: Api<EndpointSlice> = Api::namespaced(as_b.clone(), BROKER_NS);
    let c_import = listed(&imports_b, "db-prod-site-c")
        .await
        .expect("site-c's import");
    let c_slice = listed(&slices_b, "db-prod-site-c-ipv4")
        .await
        .expect("site-c's slice");
    let c_endpoint = listed(&endpoints_b, "site-c")
        .await
        .expect("site-c's endpoint");

    let mut attacks: Vec<(&str, (u16, String))> = Vec::new();
    let mut hijacked = c_endpoint.clone();
    hijacked.spec.gateways[0].public_key = key(4);
    hijacked.spec.gateways[0].public_endpoint = "198.18.0.2:51820".to_owned();
    attacks.push((
        "replace site-c's key and endpoint with site-b's",
        refusal(
            endpoints_b.replace("site-c", &pp, &hijacked).await,
            "replace",
        ),
    ));
    let status = serde_json::json!({"status": {"conditions": []}});
    attacks.push((
        "patch site-c's status",
        refusal(
            endpoints_b
                .patch_status(
                    "site-c",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&status),
                )
                .await,
            "patch status",
        ),
    ));
    attacks.push((
        "publish a ClusterEndpoint under another name",
        refusal(
            endpoints_b
                .create(&pp, &cluster_endpoint("site-z", 9))
                .await,
            "create site-z",
        ),
    ));
    let mut own = listed(&endpoints_b, "site-b")
        .await
        .expect("site-b's endpoint");
    own.spec.cluster_id = "site-c".to_owned();
    attacks.push((
        "claim site-c's cluster ID in its own object",
        refusal(endpoints_b.replace("site-b", &pp, &own).await, "claim"),
    ));
    let mut import = c_import.clone();
    import.spec.ports[0].port = 6432;
    attacks.push((
        "replace site-c's ServiceImport",
        refusal(
            imports_b.replace("db-prod-site-c", &pp, &import).await,
            "replace import",
        ),
    ));
    let mut slice = c_slice.clone();
    slice.endpoints[0].addresses = vec!["10.2.0.66".to_owned()];
    attacks.push((
        "point site-c's EndpointSlice at site-b's pod",
        refusal(
            slices_b.replace("db-prod-site-c-ipv4", &pp, &slice).await,
            "replace slice",
        ),
    ));
    attacks.push((
        "delete site-c's ServiceImport",
        refusal(
            imports_b
                .delete("db-prod-site-c", &DeleteParams::default())
                .await,
            "delete import",
        ),
    ));
    attacks.push((
        "delete site-c's EndpointSlice",
        refusal(
            slices_b
                .delete("db-prod-site-c-ipv4", &DeleteParams::default())
                .await,
            "delete slice",
        ),
    ));
    let mut forged = c_import.clone();
    forged.metadata = ObjectMeta {
        name: Some("db-prod-site-c-2".to_owned()),
        namespace: Some(BROKER_NS.to_owned()),
        labels: c_import.metadata.labels.clone(),
        ..ObjectMeta::default()
    };
    attacks.push((
        "publish a ServiceImport in site-c's name",
        refusal(imports_b.create(&pp, &forged).await, "forge import"),
    ));

    // site-b's own export, then relabelled as site-c's.
    export_headless_db(world.b(), "10.2.0").await;
    world.b().pass(&world.broker).await.expect("site-b's pass");
    let mut relabelled = listed(&imports_b, "db-prod-site-b")
        .await
        .expect("site-b's import");
    relabelled
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_SOURCE_CLUSTER.to_owned(), "site-c".to_owned());
    attacks.push((
        "relabel its own ServiceImport as site-c's",
        refusal(
            imports_b.replace("db-prod-site-b", &pp, &relabelled).await,
            "relabel",
        ),
    ));

    // Names site-c's export of `web` would need, taken first under site-b's own label.
    let squat = |name: &str, own: &ObjectMeta| ObjectMeta {
        name: Some(name.to_owned()),
        labels: own.labels.clone().map(|mut labels| {
            labels.insert(LABEL_SERVICE_NAME.to_owned(), "web".to_owned());
            labels
        }),
        ..ObjectMeta::default()
    };
    let mut squat_import = listed(&imports_b, "db-prod-site-b")
        .await
        .expect("site-b's import");
    squat_import.metadata = squat("web-prod-site-c", &squat_import.metadata);
    attacks.push((
        "squat the ServiceImport name of site-c's future export",
        refusal(imports_b.create(&pp, &squat_import).await, "squat import"),
    ));
    let mut squat_slice = listed(&slices_b, "db-prod-site-b-ipv4")
        .await
        .expect("site-b's slice");
    squat_slice.metadata = squat("web-prod-site-c-ipv4", &squat_slice.metadata);
    attacks.push((
        "squat the EndpointSlice name of site-c's future export",
        refusal(slices_b.create(&pp, &squat_slice).await, "squat slice"),
    ));

    for (attack, (code, message)) in &attacks {
        assert_eq!(*code, 403, "{attack}: {message}");
    }
    let (_, message) = &attacks[attacks.len() - 1].1;
    assert!(
        message.contains("only under the name its labels give (web-prod-site-b-ipv4)"),
        "{message}"
    );
    // The admission policy's refusals say what a member may write.
    let (_, message) = &attacks[2].1;
    assert!(
        message.contains("may write only its own ClusterEndpoint site-b"),
        "{message}"
    );
    let (_, message) = &attacks[8].1;
    assert!(
        message.contains("multicluster.kubernetes.io/source-cluster=site-b"),
        "{message}"
    );

    let after = |what: &str, before: &ObjectMeta, now: &ObjectMeta| {
        assert_eq!(
            before.resource_version, now.resource_version,
            "{what} is unchanged"
        );
    };
    after(
        "site-c's ClusterEndpoint",
        &c_endpoint.metadata,
        &listed(&endpoints_b, "site-c")
            .await
            .expect("site-c's endpoint")
            .metadata,
    );
    after(
        "site-c's ServiceImport",
        &c_import.metadata,
        &listed(&imports_b, "db-prod-site-c")
            .await
            .expect("import")
            .metadata,
    );
    after(
        "site-c's EndpointSlice",
        &c_slice.metadata,
        &listed(&slices_b, "db-prod-site-c-ipv4")
            .await
            .expect("slice")
            .metadata,
    );
    let names = sorted_names(
        endpoints_b
            .list(&ListParams::default())
            .await
            .expect("list")
            .items,
    );
    assert_eq!(
        names,
        vec!["site-a", "site-b", "site-c"],
        "no ClusterEndpoint in another's name"
    );

    // What is site-b's own is still site-b's to change.
    let mut own = listed(&endpoints_b, "site-b")
        .await
        .expect("site-b's endpoint");
    own.spec.gateways[0].public_endpoint = "198.18.0.22:51820".to_owned();
    endpoints_b
        .replace("site-b", &pp, &own)
        .await
        .expect("site-b updates its own ClusterEndpoint");
    imports_b
        .delete("db-prod-site-b", &DeleteParams::default())
        .await
        .expect("site-b withdraws its own ServiceImport");

    // Its own object, but 10,000 CIDRs (every gateway would compare them pairwise while it
    // must answer liveness probes): the API server refuses it from the CRD's bounds.
    let mut flood = listed(&endpoints_b, "site-b")
        .await
        .expect("site-b's endpoint");
    flood.spec.pod_cidrs = (0..10_000)
        .map(|i| format!("10.{}.{}.0/24", 2 + i / 256, i % 256))
        .collect();
    let (code, message) = refusal(endpoints_b.replace("site-b", &pp, &flood).await, "flood");
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.podCIDRs"), "{message}");
}

/// Trust (docs/security.md): site-b, with its own broker credentials, edits only its own
/// objects at the broker - which the admission policy allows - to take over a name:
/// it claims to have exported `db` in 1970 (it exported after site-c, with another
/// port), and lists site-a's pod and an address of nobody's in its `web` slice. site-a
/// keeps importing site-c's `db` and imports only site-b's own address for `web`.
#[tokio::test]
async fn a_member_claiming_age_or_foreign_addresses_takes_over_nothing() {
    let world = World::start().await;
    export_headless_db(world.c(), "10.3.0").await;
    world.c().pass(&world.broker).await.expect("site-c's pass");
    create_service(world.b(), "prod", "db", "None", vec![port("pg", 5433)]).await;
    backends(world.b(), "prod", "db", &[("10.2.0.6", Some("db-0"), true)]).await;
    export(world.b(), "prod", "db").await;
    create_service(world.b(), "prod", "web", "None", vec![port("http", 80)]).await;
    backends(
        world.b(),
        "prod",
        "web",
        &[("10.2.0.8", Some("web-0"), true)],
    )
    .await;
    export(world.b(), "prod", "web").await;
    world.b().pass(&world.broker).await.expect("site-b's pass");

    let as_b = world.broker.controller("site-b");
    let imports_b: Api<ServiceImport> = Api::namespaced(as_b.clone(), BROKER_NS);
    let slices_b: Api<EndpointSlice> = Api::namespaced(as_b, BROKER_NS);
    let pp = PostParams::default();
    let mut claim = listed(&imports_b, "db-prod-site-b")
        .await
        .expect("site-b's db");
    claim.metadata.annotations = Some(BTreeMap::from([(
        "causeway.dev/exported-at".to_owned(),
        "1970-01-01T00:00:00Z".to_owned(),
    )]));
    imports_b
        .replace("db-prod-site-b", &pp, &claim)
        .await
        .expect("site-b may edit its own ServiceImport");
    let mut web = listed(&slices_b, "web-prod-site-b-ipv4")
        .await
        .expect("site-b's web slice");
    let mut fake = web.endpoints[0].clone();
    for (address, host) in [("10.1.0.99", "web-1"), ("192.0.2.7", "web-2")] {
        fake.addresses = vec![address.to_owned()];
        fake.hostname = Some(host.to_owned());
        web.endpoints.push(fake.clone());
    }
    slices_b
        .replace("web-prod-site-b-ipv4", &pp, &web)
        .await
        .expect("site-b may edit its own EndpointSlice");

    world.a().pass(&world.broker).await.expect("site-a's pass");
    let db = world
        .a()
        .import("prod", "db")
        .await
        .expect("db imported in site-a");
    assert_eq!(db.spec.ports[0].port, 5432, "site-c's export is the oldest");
    let clusters: Vec<String> = db
        .status
        .iter()
        .flat_map(|s| &s.clusters)
        .map(|c| c.cluster.clone())
        .collect();
    assert_eq!(clusters, vec!["site-c"]);
    let slices: Api<EndpointSlice> = world.a().api("prod");
    let web = listed(&slices, "web-site-b-ipv4")
        .await
        .expect("site-b's web imported in site-a");
    let addresses: Vec<String> = web
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    assert_eq!(addresses, vec!["10.2.0.8"], "only site-b's own address");
    assert!(
        world
            .a()
            .imported_slices("prod")
            .await
            .iter()
            .all(|s| s != "db-site-b-ipv4"),
        "the conflicting export's slice is not imported"
    );
}
