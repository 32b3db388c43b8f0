//! The controller's broker sync against real API servers (a broker and one or two member
//! clusters, the chart installed in each), through the real `kube` client and with the
//! credentials the chart gives the controller (its ServiceAccount in a member, the member's
//! token at the broker): publish, mirror, delete, refusals with conditions, no-op passes
//! that write nothing, the watch loop, and a broker outage; the spec built from Nodes,
//! Gateways and the gateway Lease, with its local copy, a gateway failover and an expired
//! Lease; and the binary. The test seeds objects as cluster-admin.

use std::ffi::OsString;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use causeway_controller::local::LocalConfig;
use causeway_controller::sync::plan::{
    LOCAL_LABEL, MIRRORED_LABEL, SOURCE_CLUSTER_LABEL, VALID_CONDITION,
};
use causeway_controller::sync::{self, Side, SpecSource, SyncConfig, SyncError};
use causeway_crds::names::{gateway_lease, GATEWAY_NODE_LABEL};
use causeway_crds::validate::Acceptance;
use causeway_crds::{
    ClusterEndpoint, ClusterEndpointSpec, Gateway, GatewayEndpoint, GatewayRole, GatewaySpec,
};
use causeway_tests::fixtures::{self, key, label, sorted_names, wait_for, wait_while_running};
use causeway_tests::harness::control_plane::{
    ClusterKind, Credentials, KubeApiServer, TestCluster,
};
use causeway_tests::harness::ChildGuard;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

const BROKER_NS: &str = "causeway-broker";
const LOCAL_NS: &str = "causeway";
const WAIT: Duration = Duration::from_secs(20);

/// One real cluster (the broker or a member, the chart installed); the test acts in it as
/// cluster-admin through `client`, the controller with the credentials the chart gives it.
struct Cluster {
    cluster: TestCluster,
    client: Client,
}

impl Cluster {
    fn endpoints(&self, namespace: &str) -> Api<ClusterEndpoint> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn server(&self) -> &KubeApiServer {
        self.cluster.server()
    }

    /// ClusterEndpoint writes by anyone but the test.
    fn writes(&self) -> u64 {
        self.server().writes_of::<ClusterEndpoint>().total()
    }

    /// What cluster `id`'s controller acts with here: the chart's controller ServiceAccount
    /// in a member cluster, member `id`'s token at the broker.
    fn credentials(&self, id: &str) -> Credentials {
        self.cluster
            .controller_credentials(id)
            .unwrap_or_else(|e| panic!("credentials of {id}'s controller: {e}"))
    }

    /// A client as cluster `id`'s controller (see [`Cluster::credentials`]).
    fn controller(&self, id: &str, namespace: &str) -> Client {
        let config = self.cluster.config(&self.credentials(id), namespace);
        Client::try_from(config).expect("a client")
    }
}

/// The broker (with credentials for sites a, b and c) and `members` member clusters
/// (site-a, site-b, ...), started at once.
fn start<const N: usize>(members: usize) -> [Cluster; N] {
    assert_eq!(N, members + 1, "the broker and {members} members");
    let ids = ["site-a", "site-b", "site-c"];
    let mut kinds = vec![ClusterKind::broker(&ids)];
    for (n, id) in ids.iter().enumerate().take(members) {
        kinds.push(ClusterKind::member(id, n as u8 + 1));
    }
    let clusters: Vec<Cluster> = TestCluster::start_all(&kinds)
        .unwrap_or_else(|e| panic!("start the clusters: {e}"))
        .into_iter()
        .enumerate()
        .map(|(i, cluster)| {
            let namespace = if i == 0 { BROKER_NS } else { LOCAL_NS };
            let client = Client::try_from(cluster.admin_config(namespace)).expect("a client");
            Cluster { cluster, client }
        })
        .collect();
    match clusters.try_into() {
        Ok(all) => all,
        Err(_) => unreachable!("N clusters were asked for"),
    }
}

fn spec(cluster: &str, pod: &str, service: &str, key_byte: u8) -> ClusterEndpointSpec {
    ClusterEndpointSpec {
        cluster_id: cluster.to_owned(),
        pod_cidrs: vec![pod.to_owned()],
        service_cidrs: vec![service.to_owned()],
        gateways: vec![fixtures::gateway_endpoint(
            &format!("{cluster}-gw-1"),
            key_byte,
            key_byte,
        )],
    }
}

fn spec_a() -> ClusterEndpointSpec {
    spec("site-a", "10.1.0.0/16", "10.101.0.0/16", 3)
}

fn spec_b() -> ClusterEndpointSpec {
    spec("site-b", "10.2.0.0/16", "10.102.0.0/16", 4)
}

async fn sync_a(
    broker: &Cluster,
    a: &Cluster,
    spec: &ClusterEndpointSpec,
) -> Result<sync::SyncReport, SyncError> {
    sync_source(broker, a, "site-a", &SpecSource::File(spec.clone())).await
}

async fn sync_source(
    broker: &Cluster,
    local: &Cluster,
    cluster: &str,
    source: &SpecSource,
) -> Result<sync::SyncReport, SyncError> {
    sync::sync_once(
        &broker.controller(cluster, BROKER_NS),
        BROKER_NS,
        &local.controller(cluster, LOCAL_NS),
        LOCAL_NS,
        cluster,
        Some(source),
        &Acceptance::default(),
    )
    .await
}

async fn sync_as(
    broker: &Cluster,
    local: &Cluster,
    cluster: &str,
    spec: &ClusterEndpointSpec,
) -> sync::SyncReport {
    sync_source(broker, local, cluster, &SpecSource::File(spec.clone()))
        .await
        .unwrap_or_else(|e| panic!("sync of {cluster}: {e}"))
}

fn valid_condition(obj: &ClusterEndpoint) -> Option<(String, String, String)> {
    obj.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == VALID_CONDITION)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    })
}

async fn create_at_broker(broker: &Cluster, name: &str, spec: ClusterEndpointSpec) {
    broker
        .endpoints(BROKER_NS)
        .create(&PostParams::default(), &ClusterEndpoint::new(name, spec))
        .await
        .unwrap_or_else(|e| panic!("create {name} at the broker: {e}"));
}

async fn names(api: &Api<ClusterEndpoint>) -> Vec<String> {
    sorted_names(api.list(&Default::default()).await.expect("list").items)
}

/// Names of the mirrors in a cluster's namespace (the local copy and others' objects aside).
async fn mirror_names(cluster: &Cluster) -> Vec<String> {
    let all = cluster
        .endpoints(LOCAL_NS)
        .list(&Default::default())
        .await
        .expect("list")
        .items;
    sorted_names(
        all.into_iter()
            .filter(|o| label(o, MIRRORED_LABEL) == Some("true")),
    )
}

#[tokio::test]
async fn a_publishes_b_is_mirrored_and_removed_with_its_broker_object() {
    let [broker, a, b] = start(2);

    // B publishes first; A publishes and mirrors B.
    let report_b = sync_as(&broker, &b, "site-b", &spec_b()).await;
    assert!(
        report_b.published && report_b.condition_written,
        "{report_b:?}"
    );
    let report_a = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert!(report_a.published, "{report_a:?}");
    assert_eq!(report_a.mirrors_created, 1, "{report_a:?}");

    let at_broker = broker.endpoints(BROKER_NS);
    let own = at_broker
        .get("site-a")
        .await
        .expect("A's object at the broker");
    assert_eq!(own.spec, spec_a());
    let (status, reason, _) = valid_condition(&own).expect("A's object has a Valid condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));

    let mirror = a
        .endpoints(LOCAL_NS)
        .get("site-b")
        .await
        .expect("B mirrored in A");
    assert_eq!(mirror.spec, spec_b());
    let labels = mirror.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(SOURCE_CLUSTER_LABEL).map(String::as_str),
        Some("site-b")
    );
    assert_eq!(labels.get(MIRRORED_LABEL).map(String::as_str), Some("true"));
    assert_eq!(
        mirror_names(&a).await,
        ["site-b"],
        "A does not mirror itself"
    );
    let copy = a
        .endpoints(LOCAL_NS)
        .get("site-a")
        .await
        .expect("A's local copy");
    assert_eq!(copy.spec, spec_a());
    assert_eq!(label(&copy, LOCAL_LABEL), Some("true"));
    assert_eq!(label(&copy, MIRRORED_LABEL), None);
    let (status, reason, _) = valid_condition(&copy).expect("the local copy's Valid condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));

    // B syncs again and now mirrors A.
    let report_b = sync_as(&broker, &b, "site-b", &spec_b()).await;
    assert_eq!(report_b.mirrors_created, 1, "{report_b:?}");
    assert_eq!(mirror_names(&b).await, ["site-a"]);
    assert_eq!(names(&b.endpoints(LOCAL_NS)).await, ["site-a", "site-b"]);

    // B changes its spec: A's mirror follows.
    let b2 = spec("site-b", "10.20.0.0/16", "10.120.0.0/16", 4);
    sync_as(&broker, &b, "site-b", &b2).await;
    let report_a = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(report_a.mirrors_updated, 1, "{report_a:?}");
    let mirror = a.endpoints(LOCAL_NS).get("site-b").await.expect("mirror");
    assert_eq!(mirror.spec, b2);

    // B's object is deleted at the broker: A's mirror goes, nothing else does.
    at_broker
        .delete("site-b", &DeleteParams::default())
        .await
        .expect("delete B at the broker");
    let report_a = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(report_a.mirrors_deleted, 1, "{report_a:?}");
    assert!(!report_a.published, "{report_a:?}");
    assert_eq!(names(&a.endpoints(LOCAL_NS)).await, ["site-a"]);
    assert_eq!(names(&at_broker).await, ["site-a"]);
}

#[tokio::test]
async fn a_second_sync_with_no_change_writes_nothing() {
    let [broker, a] = start(1);
    create_at_broker(&broker, "site-b", spec_b()).await;
    let first = sync_a(&broker, &a, &spec_a()).await.expect("first sync");
    assert!(first.wrote());

    let broker_before = broker.server().writes_of::<ClusterEndpoint>();
    let a_before = a.server().writes_of::<ClusterEndpoint>();
    for _ in 0..3 {
        let again = sync_a(&broker, &a, &spec_a()).await.expect("sync again");
        assert!(!again.wrote(), "{again:?}");
    }
    assert_eq!(
        broker.server().writes_of::<ClusterEndpoint>(),
        broker_before,
        "no write to the broker"
    );
    assert_eq!(
        a.server().writes_of::<ClusterEndpoint>(),
        a_before,
        "no write to cluster A"
    );
}

#[tokio::test]
async fn an_overlapping_cluster_is_refused_with_a_condition_and_others_are_unaffected() {
    let [broker, a, b] = start(2);
    sync_a(&broker, &a, &spec_a()).await.expect("A publishes");
    let a_object = broker
        .endpoints(BROKER_NS)
        .get("site-a")
        .await
        .expect("A at the broker");

    // B publishes pod CIDRs inside A's.
    let overlapping = spec("site-b", "10.1.128.0/17", "10.102.0.0/16", 4);
    let report_b = sync_as(&broker, &b, "site-b", &overlapping).await;
    assert!(report_b.published, "{report_b:?}");
    assert_eq!(report_b.mirrors_created, 1, "B still mirrors the older A");
    let b_object = broker
        .endpoints(BROKER_NS)
        .get("site-b")
        .await
        .expect("B at the broker");
    let (status, reason, message) = valid_condition(&b_object).expect("B's Valid condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "OverlappingCIDR")
    );
    assert!(
        message.contains("10.1.128.0/17") && message.contains("site-a"),
        "the message names the CIDR and the cluster it overlaps: {message}"
    );

    // A refuses B: not mirrored, A's own object untouched.
    let before = broker.writes();
    let report_a = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(report_a.refused, 1, "{report_a:?}");
    // Its one write: the refusal, listed on its own local copy for `diagnose`.
    assert!(
        report_a.local_refusals_written
            && !report_a.published
            && !report_a.condition_written
            && !report_a.local_written
            && report_a.mirrors_created + report_a.mirrors_updated + report_a.mirrors_deleted == 0,
        "{report_a:?}"
    );
    let again = sync_a(&broker, &a, &spec_a()).await.expect("sync A again");
    assert!(!again.wrote(), "listed once, written once: {again:?}");
    assert_eq!(broker.writes(), before);
    assert!(mirror_names(&a).await.is_empty(), "B is not mirrored");
    let a_after = broker
        .endpoints(BROKER_NS)
        .get("site-a")
        .await
        .expect("A at the broker");
    assert_eq!(a_after, a_object, "A's object is unchanged");

    // B fixes its CIDRs: accepted, condition flips, A mirrors it.
    sync_as(&broker, &b, "site-b", &spec_b()).await;
    let b_object = broker
        .endpoints(BROKER_NS)
        .get("site-b")
        .await
        .expect("B at the broker");
    let (status, reason, _) = valid_condition(&b_object).expect("B's Valid condition");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));
    let report_a = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(report_a.mirrors_created, 1, "{report_a:?}");
    assert_eq!(mirror_names(&a).await, ["site-b"]);
}

#[tokio::test]
async fn an_object_claiming_our_cluster_id_is_not_mirrored_and_ours_is_untouched() {
    let [broker, a] = start(1);
    // The impostor is even older than A's own object.
    create_at_broker(
        &broker,
        "impostor",
        spec("site-a", "10.9.0.0/16", "10.109.0.0/16", 5),
    )
    .await;
    let report = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert!(report.published, "{report:?}");
    assert_eq!(report.refused, 1, "{report:?}");
    assert_eq!(report.mirrors_created, 0, "{report:?}");
    assert!(mirror_names(&a).await.is_empty());

    let own = broker
        .endpoints(BROKER_NS)
        .get("site-a")
        .await
        .expect("A's object");
    assert_eq!(own.spec, spec_a());
    let (status, _, _) = valid_condition(&own).expect("A's Valid condition");
    assert_eq!(
        status, "True",
        "the impostor does not make A's own object invalid"
    );
    let impostor = broker
        .endpoints(BROKER_NS)
        .get("impostor")
        .await
        .expect("the impostor is left where it is");
    assert_eq!(
        impostor.status, None,
        "another cluster's object is never written"
    );

    // Steady state: nothing more is written.
    let before = broker.writes();
    let again = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert!(!again.wrote(), "{again:?}");
    assert_eq!(broker.writes(), before);
}

#[tokio::test]
async fn local_objects_that_are_not_mirrors_are_left_alone() {
    let [broker, a] = start(1);
    let mine = ClusterEndpoint::new("site-b", spec("site-q", "10.7.0.0/16", "10.107.0.0/16", 6));
    a.endpoints(LOCAL_NS)
        .create(&PostParams::default(), &mine)
        .await
        .expect("a hand-made local object");
    create_at_broker(&broker, "site-b", spec_b()).await;
    let report = sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(report.name_taken, 1, "{report:?}");
    let local = a
        .endpoints(LOCAL_NS)
        .get("site-b")
        .await
        .expect("still there");
    assert_eq!(local.spec, mine.spec, "not overwritten");

    // Broker object gone: the hand-made object is not a mirror, so it stays.
    broker
        .endpoints(BROKER_NS)
        .delete("site-b", &DeleteParams::default())
        .await
        .expect("delete at the broker");
    sync_a(&broker, &a, &spec_a()).await.expect("sync A");
    assert_eq!(names(&a.endpoints(LOCAL_NS)).await, ["site-a", "site-b"]);
}

#[tokio::test]
async fn a_broker_outage_fails_the_pass_and_keeps_the_mirrors() {
    let [broker, a] = start(1);
    create_at_broker(&broker, "site-b", spec_b()).await;
    sync_a(&broker, &a, &spec_a()).await.expect("sync A");

    broker.server().stop();
    let before = a.writes();
    match sync_a(&broker, &a, &spec_a()).await {
        Err(SyncError::List { side, .. }) => assert_eq!(side, Side::Broker),
        other => panic!("expected a broker list error, got {other:?}"),
    }
    assert_eq!(a.writes(), before, "nothing local changes");
    assert_eq!(mirror_names(&a).await, ["site-b"]);

    broker.server().restart().expect("restart the broker");
    let report = sync_a(&broker, &a, &spec_a())
        .await
        .expect("sync A after restart");
    assert!(!report.wrote(), "{report:?}");
}

#[tokio::test]
async fn run_follows_broker_changes_and_settles_without_writing() {
    let [broker, a] = start(1);
    let config = SyncConfig {
        broker: broker.controller("site-a", BROKER_NS),
        broker_namespace: BROKER_NS.to_owned(),
        local: a.controller("site-a", LOCAL_NS),
        local_namespace: LOCAL_NS.to_owned(),
        cluster_id: "site-a".to_owned(),
        source: Some(SpecSource::File(spec_a())),
        resync: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
        acceptance: Acceptance::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sync::run(config, async {
        let _ = stopped.await;
    }));

    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    wait_for("A published", WAIT, async || {
        at_broker
            .get_opt("site-a")
            .await
            .ok()
            .flatten()
            .is_some_and(|o| valid_condition(&o).is_some())
    })
    .await;

    create_at_broker(&broker, "site-b", spec_b()).await;
    wait_for("B mirrored", WAIT, async || {
        local.get_opt("site-b").await.ok().flatten().is_some()
    })
    .await;

    at_broker
        .delete("site-b", &DeleteParams::default())
        .await
        .expect("delete B at the broker");
    // An error reading it is no proof of deletion: only a successful read that finds
    // nothing is.
    wait_for("B's mirror deleted", WAIT, async || {
        matches!(local.get_opt("site-b").await, Ok(None))
    })
    .await;

    // The loop's own writes trigger passes that find nothing to do.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (broker_before, a_before) = (broker.writes(), a.writes());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        broker.writes(),
        broker_before,
        "no write storm at the broker"
    );
    assert_eq!(a.writes(), a_before, "no write storm in A");

    stop.send(()).expect("the loop is running");
    let passes = tokio::time::timeout(WAIT, task)
        .await
        .expect("the loop stops on shutdown")
        .expect("the loop does not panic");
    assert!(passes >= 3, "one pass per change at least, got {passes}");
}

/// Starts the binary as site-a's controller, `spec_args` saying where its spec comes from.
fn start_site_a(
    dir: &std::path::Path,
    broker: &Cluster,
    a: &Cluster,
    spec_args: &[OsString],
    label: &str,
) -> ChildGuard {
    fixtures::start_controller(dir, "site-a", &broker.cluster, &a.cluster, spec_args, label)
}

/// The endpoint file the binary reads: one ClusterEndpoint manifest.
fn manifest(name: &str, spec: &ClusterEndpointSpec) -> String {
    let obj = ClusterEndpoint::new(name, spec.clone());
    serde_yaml::to_string(&obj).expect("ClusterEndpoint serialises")
}

#[tokio::test]
async fn the_binary_publishes_mirrors_and_stops_on_sigterm() {
    let [broker, a] = start(1);
    create_at_broker(&broker, "site-b", spec_b()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoint_file = dir.path().join("site-a.yaml");
    std::fs::write(&endpoint_file, manifest("site-a", &spec_a())).expect("write the endpoint file");

    let args = [OsString::from("--endpoint-file"), endpoint_file.into()];
    let mut controller = start_site_a(dir.path(), &broker, &a, &args, "controller");
    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    wait_while_running(
        &mut controller,
        "site-a published and site-b mirrored",
        WAIT,
        async || {
            let published = at_broker.get_opt("site-a").await.ok().flatten();
            let mirrored = local.get_opt("site-b").await.ok().flatten();
            published.is_some_and(|o| o.spec == spec_a() && valid_condition(&o).is_some())
                && mirrored.is_some_and(|o| o.spec == spec_b())
        },
    )
    .await;
    let status = controller
        .terminate_and_wait(Duration::from_secs(10))
        .expect("stop the controller");
    assert!(
        status.success(),
        "exit on SIGTERM: {status}\n{}",
        controller.log_tail(30)
    );
}

/// `GET path` over plain HTTP/1.1: the status code and body, or `None` while nothing listens.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: controller\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

#[tokio::test]
async fn the_binary_answers_health_and_readiness_probes() {
    let [broker, a] = start(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoint_file = dir.path().join("site-a.yaml");
    std::fs::write(&endpoint_file, manifest("site-a", &spec_a())).expect("write the endpoint file");
    // A port nothing else uses: the kernel's pick, released for the controller to bind.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let args = [
        OsString::from("--endpoint-file"),
        endpoint_file.into(),
        OsString::from("--health-addr"),
        addr.to_string().into(),
    ];
    let mut controller = start_site_a(dir.path(), &broker, &a, &args, "controller");
    // Ready while leading means a pass is done: the object is at the broker by then. (A
    // replica that does not lead yet is ready too: it serves DNS; on a real API server the
    // election takes a moment.)
    wait_while_running(&mut controller, "/readyz to answer 200", WAIT, async || {
        let leading = http_get(addr, "/metrics")
            .await
            .is_some_and(|(_, m)| m.contains("causeway_controller_leading 1\n"));
        match (leading, http_get(addr, "/readyz").await) {
            (true, Some((200, body))) => {
                assert_eq!(body, "ok\n");
                true
            }
            _ => false,
        }
    })
    .await;
    let published = broker.endpoints(BROKER_NS).get_opt("site-a").await;
    assert!(
        published.expect("read the broker").is_some(),
        "ready before its first pass published"
    );
    assert_eq!(http_get(addr, "/healthz").await, Some((200, "ok\n".into())));
    let (status, metrics) = http_get(addr, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("causeway_controller_leading 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("causeway_controller_ready 1\n"),
        "{metrics}"
    );

    let status = controller
        .terminate_and_wait(Duration::from_secs(10))
        .expect("stop the controller");
    assert!(
        status.success(),
        "exit on SIGTERM: {status}\n{}",
        controller.log_tail(30)
    );
    assert_eq!(
        http_get(addr, "/healthz").await,
        None,
        "the listener closed"
    );
}

#[tokio::test]
async fn the_local_copy_says_which_release_wrote_it_and_a_rerun_writes_nothing() {
    let [broker, a] = start(1);
    sync_a(&broker, &a, &spec_a()).await.expect("first sync");
    let local = a
        .endpoints(LOCAL_NS)
        .get("site-a")
        .await
        .expect("the local copy");
    let annotations = local.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get(causeway_crds::names::VERSION_ANNOTATION)
            .map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "the controller's release (the workspace's)"
    );
    let before = a.server().writes_of::<ClusterEndpoint>();
    let again = sync_a(&broker, &a, &spec_a()).await.expect("sync again");
    assert!(!again.wrote(), "{again:?}");
    assert_eq!(a.server().writes_of::<ClusterEndpoint>(), before);
}

#[tokio::test]
async fn the_binary_refuses_an_endpoint_file_for_another_cluster() {
    let [broker, a] = start(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoint_file = dir.path().join("wrong.yaml");
    std::fs::write(&endpoint_file, manifest("site-b", &spec_b())).expect("write the endpoint file");
    let args = [OsString::from("--endpoint-file"), endpoint_file.into()];
    let mut controller = start_site_a(dir.path(), &broker, &a, &args, "wrong");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = controller.try_status().expect("poll the controller") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the controller should have refused to start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = controller.log_tail(200);
    assert!(!status.success(), "exit status {status}; log:\n{log}");
    assert!(
        log.contains("describes cluster \"site-b\", but --cluster is \"site-a\""),
        "exit status {status}; log:\n{log}"
    );
    assert_eq!(broker.writes(), 0, "nothing was published");
}

/// Waits until `f` holds, polling; panics naming `what` after `WAIT`.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_resignation_releases_the_lease_for_the_other() {
    use causeway_k8s::leader::{campaign, Campaign};
    use k8s_openapi::api::coordination::v1::Lease;
    let [_broker, cluster] = start(1);
    const LEASE: &str = "causeway-controller-site-a";
    let (duration, grace) = (Duration::from_secs(4), Duration::from_secs(1));
    let how = |identity: &str| Campaign {
        namespace: LOCAL_NS.to_owned(),
        name: LEASE.to_owned(),
        identity: identity.to_owned(),
        duration,
        grace,
    };
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), LOCAL_NS);
    // An API error fails the test: it must never read as "the Lease was released".
    let holder = || async {
        leases
            .get(LEASE)
            .await
            .unwrap_or_else(|e| panic!("read Lease {LEASE}: {e}"))
            .spec
            .and_then(|s| s.holder_identity)
    };

    let first = campaign(cluster.controller("site-a", LOCAL_NS), &how("replica-1"))
        .await
        .expect("join");
    eventually("replica-1 to lead", || first.is_leader()).await;
    let second = campaign(cluster.controller("site-a", LOCAL_NS), &how("replica-2"))
        .await
        .expect("join");
    // While the first renews, the second must never lead: watch it over two lease periods.
    let watch_until = Instant::now() + 2 * duration;
    while Instant::now() < watch_until {
        assert!(
            first.is_leader() && !second.is_leader(),
            "two leaders or none"
        );
        assert_eq!(holder().await.as_deref(), Some("replica-1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Resigning clears the holder at once; the other replica takes over within a lease period.
    first.resign().await;
    assert_eq!(holder().await, None, "resign did not release the Lease");
    let released = Instant::now();
    eventually("replica-2 to take over", || second.is_leader()).await;
    let took = released.elapsed();
    eprintln!("leadership handed over {took:?} after the release");
    assert!(took <= duration + 2 * grace, "takeover took {took:?}");
    assert_eq!(holder().await.as_deref(), Some("replica-2"));
    second.resign().await;
}

// ---- The spec built from the cluster: Nodes, Gateways, the gateway Lease. ----

const SERVICE_A: &str = "10.101.0.0/16";

/// Cluster A built from its own objects, pod CIDRs from the Nodes.
fn from_cluster() -> SpecSource {
    SpecSource::Cluster(LocalConfig {
        pod_cidrs: None,
        service_cidrs: vec![SERVICE_A.parse().expect("a CIDR")],
    })
}

async fn create_node(cluster: &Cluster, name: &str, pod_cidr: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: Some(vec![pod_cidr.to_owned()]),
            pod_cidr: Some(pod_cidr.to_owned()),
            ..NodeSpec::default()
        }),
        status: None,
    };
    Api::<Node>::all(cluster.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create Node {name}: {e}"));
}

/// What Gateway `name` of `cluster` publishes; `n` makes its key and endpoint unique.
fn gateway_endpoint(name: &str, n: u8) -> GatewayEndpoint {
    GatewayEndpoint {
        node_name: name.to_owned(),
        public_endpoint: format!("198.18.1.{n}:51820"),
        public_key: key(n),
        private_ip: Some(format!("192.168.1.{n}")),
        private_ips: vec![format!("192.168.1.{n}")],
        health_check_ip: None,
    }
}

/// Node `name`, labelled as a gateway candidate (only such nodes' Gateway objects are
/// published), unless it exists.
async fn create_candidate_node(cluster: &Cluster, name: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([(GATEWAY_NODE_LABEL.to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match Api::<Node>::all(cluster.client.clone())
        .create(&PostParams::default(), &node)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create Node {name}: {e}"),
    }
}

/// Creates Gateway `name` as its gateway would: spec on start, then `status.role`.
async fn create_gateway(
    cluster: &Cluster,
    name: &str,
    cluster_id: &str,
    n: u8,
    role: Option<GatewayRole>,
) {
    create_candidate_node(cluster, name).await;
    let api: Api<Gateway> = Api::namespaced(cluster.client.clone(), LOCAL_NS);
    let gateway = Gateway::new(
        name,
        GatewaySpec {
            cluster_id: cluster_id.to_owned(),
            endpoint: gateway_endpoint(name, n),
        },
    );
    api.create(&PostParams::default(), &gateway)
        .await
        .unwrap_or_else(|e| panic!("create Gateway {name}: {e}"));
    if let Some(role) = role {
        set_role(cluster, name, role).await;
    }
}

async fn set_role(cluster: &Cluster, name: &str, role: GatewayRole) {
    let api: Api<Gateway> = Api::namespaced(cluster.client.clone(), LOCAL_NS);
    let patch = json!({ "status": { "role": role } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("set the role of Gateway {name}: {e}"));
}

/// Sets the gateway Lease of site-a: held by `holder`, last renewed `ago`, lasting `seconds`.
async fn set_gateway_lease(cluster: &Cluster, holder: &str, ago: Duration, seconds: i32) {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), LOCAL_NS);
    let name = gateway_lease("site-a");
    let renewed = Timestamp::now()
        .checked_sub(SignedDuration::try_from(ago).expect("a short duration"))
        .expect("a time after the epoch");
    let spec = LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        acquire_time: Some(MicroTime(renewed)),
        renew_time: Some(MicroTime(renewed)),
        lease_duration_seconds: Some(seconds),
        ..LeaseSpec::default()
    };
    match api.get_opt(&name).await.expect("get the gateway Lease") {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .expect("create the gateway Lease");
        }
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&name, &PostParams::default(), &lease)
                .await
                .expect("replace the gateway Lease");
        }
    }
}

/// Cluster A's world: three Nodes, three of its Gateways (gw-b claims the active
/// role), one Gateway of another cluster, and the gateway Lease held by `holder`.
async fn seed_a(a: &Cluster, holder: &str) {
    create_node(a, "node-1", "10.1.0.0/24").await;
    create_node(a, "node-2", "10.1.1.0/24").await;
    create_node(a, "node-3", "10.1.3.0/24").await;
    create_gateway(a, "gw-c", "site-a", 13, Some(GatewayRole::Passive)).await;
    create_gateway(a, "gw-a", "site-a", 11, Some(GatewayRole::Passive)).await;
    create_gateway(a, "gw-b", "site-a", 12, Some(GatewayRole::Active)).await;
    create_gateway(a, "gw-x", "site-x", 19, Some(GatewayRole::Active)).await;
    set_gateway_lease(a, holder, Duration::ZERO, 30).await;
}

/// A's spec as built from [`seed_a`], with its gateways in `order`.
fn built_a(order: &[&str]) -> ClusterEndpointSpec {
    let n = |name: &str| match name {
        "gw-a" => 11,
        "gw-b" => 12,
        "gw-c" => 13,
        other => panic!("no gateway {other}"),
    };
    ClusterEndpointSpec {
        cluster_id: "site-a".to_owned(),
        pod_cidrs: vec!["10.1.0.0/23".to_owned(), "10.1.3.0/24".to_owned()],
        service_cidrs: vec![SERVICE_A.to_owned()],
        gateways: order.iter().map(|g| gateway_endpoint(g, n(g))).collect(),
    }
}

fn gateway_order(spec: &ClusterEndpointSpec) -> Vec<String> {
    spec.gateways.iter().map(|g| g.node_name.clone()).collect()
}

async fn published_and_local(broker: &Cluster, a: &Cluster) -> (ClusterEndpoint, ClusterEndpoint) {
    let published = broker
        .endpoints(BROKER_NS)
        .get("site-a")
        .await
        .expect("A's object at the broker");
    let copy = a
        .endpoints(LOCAL_NS)
        .get("site-a")
        .await
        .expect("A's local copy");
    (published, copy)
}

#[tokio::test]
async fn the_spec_is_built_from_the_cluster_and_follows_the_lease_holder() {
    let [broker, a] = start(1);
    create_at_broker(&broker, "site-b", spec_b()).await;
    seed_a(&a, "gw-c").await;

    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(
        report.published && report.local_written && report.mirrors_created == 1,
        "{report:?}"
    );
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(
        published.spec,
        built_a(&["gw-c", "gw-a", "gw-b"]),
        "the Lease holder first, then by name; gw-x is another cluster's"
    );
    assert_eq!(
        copy.spec, published.spec,
        "the local copy has the same spec"
    );
    assert_eq!(label(&copy, LOCAL_LABEL), Some("true"));
    for obj in [&published, &copy] {
        let (status, reason, _) = valid_condition(obj).expect("a Valid condition");
        assert_eq!((status.as_str(), reason.as_str()), ("True", "Accepted"));
    }
    assert_eq!(mirror_names(&a).await, ["site-b"]);

    // The Lease changes hands: one write at the broker, one locally, gateways reordered.
    broker.server().reset_counters();
    a.server().reset_counters();
    set_gateway_lease(&a, "gw-a", Duration::ZERO, 30).await;
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(report.published && report.local_written, "{report:?}");
    assert_eq!(broker.writes(), 1, "one write at the broker");
    assert_eq!(a.writes(), 1, "one write in A");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(gateway_order(&published.spec), ["gw-a", "gw-b", "gw-c"]);
    assert_eq!(copy.spec, published.spec);
    assert!(
        valid_condition(&copy).is_some_and(|(s, _, _)| s == "True"),
        "the copy keeps its condition across a replace"
    );

    // Nothing changed since: a pass writes nothing on either side.
    broker.server().reset_counters();
    a.server().reset_counters();
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(!report.wrote(), "{report:?}");
    assert_eq!(broker.writes(), 0, "no write at the broker");
    assert_eq!(a.writes(), 0, "no write in A");
}

#[tokio::test]
async fn an_expired_gateway_lease_falls_back_to_the_active_role() {
    let [broker, a] = start(1);
    seed_a(&a, "gw-c").await;
    // gw-c stopped renewing a minute ago; gw-b says it is active.
    set_gateway_lease(&a, "gw-c", Duration::from_secs(60), 15).await;
    sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(gateway_order(&published.spec), ["gw-b", "gw-a", "gw-c"]);
    assert_eq!(copy.spec, published.spec);

    // A holder without a Gateway object is no better: still by role.
    set_gateway_lease(&a, "gw-gone", Duration::ZERO, 15).await;
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(!report.wrote(), "{report:?}");

    // Nobody active: by name.
    set_role(&a, "gw-b", GatewayRole::Passive).await;
    sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(gateway_order(&published.spec), ["gw-a", "gw-b", "gw-c"]);
    assert_eq!(copy.spec, published.spec);
}

#[tokio::test]
async fn a_spec_that_fails_validation_is_not_published_and_the_local_copy_says_why() {
    let [broker, a] = start(1);
    seed_a(&a, "gw-c").await;
    sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    let (published_before, _) = published_and_local(&broker, &a).await;

    // A new gateway writes a key that is not a WireGuard key.
    create_candidate_node(&a, "gw-d").await;
    let api: Api<Gateway> = Api::namespaced(a.client.clone(), LOCAL_NS);
    let mut endpoint = gateway_endpoint("gw-d", 14);
    endpoint.public_key = "not-a-key".to_owned();
    let bad = Gateway::new(
        "gw-d",
        GatewaySpec {
            cluster_id: "site-a".to_owned(),
            endpoint,
        },
    );
    api.create(&PostParams::default(), &bad)
        .await
        .expect("create gw-d");
    broker.server().reset_counters();
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("the pass itself succeeds");
    assert!(report.unpublished && !report.published, "{report:?}");
    assert!(report.local_condition_written, "{report:?}");
    assert_eq!(broker.writes(), 0, "nothing new at the broker");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(
        published, published_before,
        "the broker object is untouched"
    );
    assert_eq!(
        copy.spec, published.spec,
        "the local copy keeps the last valid spec"
    );
    let (status, reason, message) = valid_condition(&copy).expect("the copy's condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidPublicKey")
    );
    assert!(message.contains("not-a-key"), "{message}");

    // Said once: the next pass writes nothing anywhere.
    a.server().reset_counters();
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(!report.wrote(), "{report:?}");
    assert_eq!((broker.writes(), a.writes()), (0, 0));

    // The gateway fixes its key: published, and the copy is valid again.
    let mut fixed = api.get("gw-d").await.expect("gw-d");
    fixed.spec.endpoint.public_key = key(14);
    api.replace("gw-d", &PostParams::default(), &fixed)
        .await
        .expect("fix gw-d");
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");
    assert!(report.published && report.local_written, "{report:?}");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(
        gateway_order(&published.spec),
        ["gw-c", "gw-a", "gw-b", "gw-d"]
    );
    let (status, _, _) = valid_condition(&copy).expect("the copy's condition");
    assert_eq!(status, "True");
}

#[tokio::test]
async fn without_node_pod_cidrs_nothing_is_published_until_they_are_configured() {
    let [broker, a] = start(1);
    create_gateway(&a, "gw-a", "site-a", 11, None).await;
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("the pass succeeds; the spec is reported");
    assert!(report.unpublished && !report.wrote(), "{report:?}");
    assert_eq!(broker.writes(), 0);

    let configured = SpecSource::Cluster(LocalConfig {
        pod_cidrs: Some(vec!["10.1.0.0/16".parse().expect("a CIDR")]),
        service_cidrs: vec![SERVICE_A.parse().expect("a CIDR")],
    });
    sync_source(&broker, &a, "site-a", &configured)
        .await
        .expect("sync A");
    let (published, copy) = published_and_local(&broker, &a).await;
    assert_eq!(published.spec.pod_cidrs, ["10.1.0.0/16"]);
    assert_eq!(gateway_order(&published.spec), ["gw-a"]);
    assert_eq!(copy.spec, published.spec);
}

#[tokio::test]
async fn the_local_copy_follows_a_failover_while_the_broker_is_down() {
    let [broker, a] = start(1);
    seed_a(&a, "gw-c").await;
    sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A");

    broker.server().stop();
    set_gateway_lease(&a, "gw-a", Duration::ZERO, 30).await;
    match sync_source(&broker, &a, "site-a", &from_cluster()).await {
        Err(SyncError::List { side, .. }) => assert_eq!(side, Side::Broker),
        other => panic!("expected a broker list error, got {other:?}"),
    }
    let copy = a
        .endpoints(LOCAL_NS)
        .get("site-a")
        .await
        .expect("the local copy");
    assert_eq!(gateway_order(&copy.spec), ["gw-a", "gw-b", "gw-c"]);

    broker.server().restart().expect("restart the broker");
    a.server().reset_counters();
    let report = sync_source(&broker, &a, "site-a", &from_cluster())
        .await
        .expect("sync A after the restart");
    assert!(report.published && !report.local_written, "{report:?}");
    assert_eq!(a.writes(), 0, "the local copy was already right");
    let (published, _) = published_and_local(&broker, &a).await;
    assert_eq!(published.spec, copy.spec);
}

#[tokio::test]
async fn run_follows_the_lease_gateways_and_nodes_and_settles_without_writing() {
    let [broker, a] = start(1);
    seed_a(&a, "gw-c").await;
    let config = SyncConfig {
        broker: broker.controller("site-a", BROKER_NS),
        broker_namespace: BROKER_NS.to_owned(),
        local: a.controller("site-a", LOCAL_NS),
        local_namespace: LOCAL_NS.to_owned(),
        cluster_id: "site-a".to_owned(),
        source: Some(from_cluster()),
        resync: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
        acceptance: Acceptance::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sync::run(config, async {
        let _ = stopped.await;
    }));
    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    let both_have = |want: ClusterEndpointSpec| {
        let (at_broker, local) = (at_broker.clone(), local.clone());
        async move {
            let published = at_broker.get_opt("site-a").await.ok().flatten();
            let copy = local.get_opt("site-a").await.ok().flatten();
            published.is_some_and(|o| o.spec == want) && copy.is_some_and(|o| o.spec == want)
        }
    };
    wait_for("A published with gw-c first", WAIT, async || {
        both_have(built_a(&["gw-c", "gw-a", "gw-b"])).await
    })
    .await;

    set_gateway_lease(&a, "gw-b", Duration::ZERO, 30).await;
    wait_for("the failover to gw-b", WAIT, async || {
        both_have(built_a(&["gw-b", "gw-a", "gw-c"])).await
    })
    .await;

    create_node(&a, "node-4", "10.1.2.0/24").await;
    let mut wider = built_a(&["gw-b", "gw-a", "gw-c"]);
    wider.pod_cidrs = vec!["10.1.0.0/22".to_owned()];
    wait_for("the new Node's pod CIDR", WAIT, async || {
        both_have(wider.clone()).await
    })
    .await;

    Api::<Gateway>::namespaced(a.client.clone(), LOCAL_NS)
        .delete("gw-a", &DeleteParams::default())
        .await
        .expect("delete gw-a");
    let mut fewer = wider.clone();
    fewer.gateways.retain(|g| g.node_name != "gw-a");
    wait_for("gw-a gone", WAIT, async || both_have(fewer.clone()).await).await;

    // Lease renewals and connection-status chatter change nothing a pass reads:
    // they start no pass at all (no list at the broker), so nothing is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_before = a.writes();
    broker.server().reset_counters();
    let leases: Api<Lease> = Api::namespaced(a.client.clone(), LOCAL_NS);
    let gateways: Api<Gateway> = Api::namespaced(a.client.clone(), LOCAL_NS);
    for i in 0..5u64 {
        let renew = json!({ "spec": { "renewTime": MicroTime(Timestamp::now()) } });
        leases
            .patch(
                &gateway_lease("site-a"),
                &PatchParams::default(),
                &Patch::Merge(&renew),
            )
            .await
            .expect("renew the gateway Lease");
        let chatter = json!({ "status": { "connections": [
            { "clusterID": "site-b", "state": "connected", "rxBytes": i, "txBytes": i }
        ] } });
        gateways
            .patch_status("gw-b", &PatchParams::default(), &Patch::Merge(&chatter))
            .await
            .expect("write gw-b's connection status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker_lists = broker
        .server()
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "clusterendpoints")
        .count();
    assert_eq!(broker_lists, 0, "no pass was started by renewals or status");
    assert_eq!(broker.writes(), 0, "no write at the broker");
    assert_eq!(a.writes(), a_before, "no ClusterEndpoint write in A");

    stop.send(()).expect("the loop is running");
    let passes = tokio::time::timeout(WAIT, task)
        .await
        .expect("the loop stops on shutdown")
        .expect("the loop does not panic");
    assert!(passes >= 4, "one pass per change at least, got {passes}");
}

#[tokio::test]
async fn the_binary_builds_the_spec_from_the_cluster_publishes_and_mirrors() {
    let [broker, a] = start(1);
    create_at_broker(&broker, "site-b", spec_b()).await;
    seed_a(&a, "gw-c").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let args: Vec<OsString> = ["--pod-cidrs", "10.1.0.0/16", "--service-cidrs", SERVICE_A]
        .iter()
        .map(OsString::from)
        .collect();
    let mut controller = start_site_a(dir.path(), &broker, &a, &args, "from-cluster");
    let mut want = built_a(&["gw-c", "gw-a", "gw-b"]);
    want.pod_cidrs = vec!["10.1.0.0/16".to_owned()];
    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    wait_while_running(
        &mut controller,
        "the built spec published, copied locally, and site-b mirrored",
        WAIT,
        async || {
            let published = at_broker.get_opt("site-a").await.ok().flatten();
            let copy = local.get_opt("site-a").await.ok().flatten();
            let mirrored = local.get_opt("site-b").await.ok().flatten();
            published.is_some_and(|o| o.spec == want && valid_condition(&o).is_some())
                && copy.is_some_and(|o| o.spec == want && label(&o, LOCAL_LABEL) == Some("true"))
                && mirrored.is_some_and(|o| o.spec == spec_b())
        },
    )
    .await;
    // It leads on its own Lease, named after the cluster.
    let leases: Api<Lease> = Api::namespaced(a.client.clone(), LOCAL_NS);
    assert!(
        leases
            .get_opt("causeway-controller-site-a")
            .await
            .expect("get the controller Lease")
            .is_some(),
        "the controller's Lease exists"
    );
    let status = controller
        .terminate_and_wait(Duration::from_secs(10))
        .expect("stop the controller");
    assert!(
        status.success(),
        "exit on SIGTERM: {status}\n{}",
        controller.log_tail(30)
    );
}

#[tokio::test]
async fn the_binary_refuses_bad_cidr_flags_with_the_fix() {
    let [broker, a] = start(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--pod-cidrs", "10.1.0.1/16", "--service-cidrs", SERVICE_A],
            "\"10.1.0.1/16\" has host bits set; write the network address 10.1.0.0/16 instead",
        ),
        (
            &["--service-cidrs", "10.101.0.0/16,nonsense"],
            "\"nonsense\" is not a CIDR",
        ),
        (
            &["--pod-cidrs", "10.1.0.0/16"],
            "--service-cidrs (CAUSEWAY_SERVICE_CIDRS) is required",
        ),
        (
            &[
                "--pod-cidrs",
                "10.1.0.0/16",
                "--service-cidrs",
                "10.1.128.0/17",
            ],
            "overlaps",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let args: Vec<OsString> = flags.iter().map(OsString::from).collect();
        let label = format!("bad-flags-{i}");
        let mut controller = start_site_a(dir.path(), &broker, &a, &args, &label);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = controller.try_status().expect("poll the controller") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the controller should have refused {flags:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = controller.log_tail(200);
        assert!(
            !status.success(),
            "{flags:?}: exit status {status}; log:\n{log}"
        );
        assert!(
            log.contains(want),
            "{flags:?}: wanted {want:?}; log:\n{log}"
        );
    }
    assert_eq!(broker.writes(), 0, "nothing was published");
}
