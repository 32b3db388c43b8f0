//! The controller's broker sync against in-memory API servers (a broker and one
//! or two clusters), through the real `kube` client: publish, mirror, delete,
//! refusals with conditions, no-op passes that write nothing, the watch loop,
//! and a broker outage. Every server listens on 127.0.0.1 port 0.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use causeway_controller::sync::plan::{MIRRORED_LABEL, SOURCE_CLUSTER_LABEL, VALID_CONDITION};
use causeway_controller::sync::{self, Side, SyncConfig, SyncError};
use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec, GatewayEndpoint};
use causeway_tests::apiserver::ApiServer;
use causeway_tests::harness::{workspace_binary, ChildGuard};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;

const BROKER_NS: &str = "causeway-broker";
const LOCAL_NS: &str = "causeway";
const WAIT: Duration = Duration::from_secs(20);

/// One in-memory API server and a client for it.
struct Cluster {
    server: ApiServer,
    client: Client,
}

impl Cluster {
    async fn start(namespace: &str) -> Cluster {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let server = ApiServer::start(listener);
        let client = Client::try_from(server.client_config(namespace)).expect("a client");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the namespace");
        Cluster { server, client }
    }

    fn endpoints(&self, namespace: &str) -> Api<ClusterEndpoint> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn writes(&self) -> u64 {
        self.server.writes_of::<ClusterEndpoint>().total()
    }
}

fn key(byte: u8) -> String {
    // base64 of 32 equal bytes, without pulling in a base64 crate: 32 bytes of
    // value b encode as a fixed 4-char group repeated, then a 3-char tail.
    let group = match byte {
        3 => "AwMD",
        4 => "BAQE",
        5 => "BQUF",
        6 => "BgYG",
        _ => unreachable!("only the bytes the tests use"),
    };
    format!("{}{}=", group.repeat(10), &group[..3])
}

fn spec(cluster: &str, pod: &str, service: &str, key_byte: u8) -> ClusterEndpointSpec {
    ClusterEndpointSpec {
        cluster_id: cluster.to_owned(),
        pod_cidrs: vec![pod.to_owned()],
        service_cidrs: vec![service.to_owned()],
        gateways: vec![GatewayEndpoint {
            node_name: format!("{cluster}-gw-1"),
            public_endpoint: format!("198.18.0.{key_byte}:51820"),
            public_key: key(key_byte),
            private_ip: None,
            private_ips: vec![],
            health_check_ip: None,
        }],
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
    sync::sync_once(
        &broker.client,
        BROKER_NS,
        &a.client,
        LOCAL_NS,
        "site-a",
        Some(spec),
    )
    .await
}

async fn sync_as(
    broker: &Cluster,
    local: &Cluster,
    cluster: &str,
    spec: &ClusterEndpointSpec,
) -> sync::SyncReport {
    sync::sync_once(
        &broker.client,
        BROKER_NS,
        &local.client,
        LOCAL_NS,
        cluster,
        Some(spec),
    )
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
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_publishes_b_is_mirrored_and_removed_with_its_broker_object() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    let b = Cluster::start(LOCAL_NS).await;

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
        names(&a.endpoints(LOCAL_NS)).await,
        ["site-b"],
        "A does not mirror itself"
    );

    // B syncs again and now mirrors A.
    let report_b = sync_as(&broker, &b, "site-b", &spec_b()).await;
    assert_eq!(report_b.mirrors_created, 1, "{report_b:?}");
    assert_eq!(names(&b.endpoints(LOCAL_NS)).await, ["site-a"]);

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
    assert!(names(&a.endpoints(LOCAL_NS)).await.is_empty());
    assert_eq!(names(&at_broker).await, ["site-a"]);
}

#[tokio::test]
async fn a_second_sync_with_no_change_writes_nothing() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    create_at_broker(&broker, "site-b", spec_b()).await;
    let first = sync_a(&broker, &a, &spec_a()).await.expect("first sync");
    assert!(first.wrote());

    let broker_before = broker.server.writes_of::<ClusterEndpoint>();
    let a_before = a.server.writes_of::<ClusterEndpoint>();
    for _ in 0..3 {
        let again = sync_a(&broker, &a, &spec_a()).await.expect("sync again");
        assert!(!again.wrote(), "{again:?}");
    }
    assert_eq!(
        broker.server.writes_of::<ClusterEndpoint>(),
        broker_before,
        "no write to the broker"
    );
    assert_eq!(
        a.server.writes_of::<ClusterEndpoint>(),
        a_before,
        "no write to cluster A"
    );
}

#[tokio::test]
async fn an_overlapping_cluster_is_refused_with_a_condition_and_others_are_unaffected() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    let b = Cluster::start(LOCAL_NS).await;
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
    assert!(!report_a.wrote(), "{report_a:?}");
    assert_eq!(broker.writes(), before);
    assert!(
        names(&a.endpoints(LOCAL_NS)).await.is_empty(),
        "B is not mirrored"
    );
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
    assert_eq!(names(&a.endpoints(LOCAL_NS)).await, ["site-b"]);
}

#[tokio::test]
async fn an_object_claiming_our_cluster_id_is_not_mirrored_and_ours_is_untouched() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
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
    assert!(names(&a.endpoints(LOCAL_NS)).await.is_empty());

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
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
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
    assert_eq!(names(&a.endpoints(LOCAL_NS)).await, ["site-b"]);
}

#[tokio::test]
async fn a_broker_outage_fails_the_pass_and_keeps_the_mirrors() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    create_at_broker(&broker, "site-b", spec_b()).await;
    sync_a(&broker, &a, &spec_a()).await.expect("sync A");

    broker.server.stop();
    let before = a.writes();
    match sync_a(&broker, &a, &spec_a()).await {
        Err(SyncError::List { side, .. }) => assert_eq!(side, Side::Broker),
        other => panic!("expected a broker list error, got {other:?}"),
    }
    assert_eq!(a.writes(), before, "nothing local changes");
    assert_eq!(names(&a.endpoints(LOCAL_NS)).await, ["site-b"]);

    broker.server.restart().expect("restart the broker");
    let report = sync_a(&broker, &a, &spec_a())
        .await
        .expect("sync A after restart");
    assert!(!report.wrote(), "{report:?}");
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn run_follows_broker_changes_and_settles_without_writing() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    let config = SyncConfig {
        broker: broker.client.clone(),
        broker_namespace: BROKER_NS.to_owned(),
        local: a.client.clone(),
        local_namespace: LOCAL_NS.to_owned(),
        cluster_id: "site-a".to_owned(),
        spec: Some(spec_a()),
        resync: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sync::run(config, async {
        let _ = stopped.await;
    }));

    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    wait_for("A published", async || {
        at_broker
            .get_opt("site-a")
            .await
            .ok()
            .flatten()
            .is_some_and(|o| valid_condition(&o).is_some())
    })
    .await;

    create_at_broker(&broker, "site-b", spec_b()).await;
    wait_for("B mirrored", async || {
        local.get_opt("site-b").await.ok().flatten().is_some()
    })
    .await;

    at_broker
        .delete("site-b", &DeleteParams::default())
        .await
        .expect("delete B at the broker");
    wait_for("B's mirror deleted", async || {
        local.get_opt("site-b").await.ok().flatten().is_none()
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

/// The endpoint file the binary reads: one ClusterEndpoint manifest.
fn manifest(name: &str, spec: &ClusterEndpointSpec) -> String {
    let obj = ClusterEndpoint::new(name, spec.clone());
    serde_yaml::to_string(&obj).expect("ClusterEndpoint serialises")
}

fn start_controller(
    dir: &std::path::Path,
    broker: &Cluster,
    a: &Cluster,
    endpoint_file: &std::path::Path,
    label: &str,
) -> ChildGuard {
    let broker_kubeconfig = dir.join("broker.kubeconfig");
    let local_kubeconfig = dir.join("a.kubeconfig");
    broker
        .server
        .write_kubeconfig(&broker_kubeconfig, BROKER_NS)
        .expect("write the broker kubeconfig");
    a.server
        .write_kubeconfig(&local_kubeconfig, LOCAL_NS)
        .expect("write A's kubeconfig");
    let log_path = dir.join(format!("{label}.log"));
    let log = std::fs::File::create(&log_path).expect("create the log");
    let child = std::process::Command::new(workspace_binary("causeway-controller"))
        .args(["--cluster", "site-a", "--broker-namespace", BROKER_NS])
        .args(["--namespace", LOCAL_NS])
        .arg("--broker-kubeconfig")
        .arg(&broker_kubeconfig)
        .arg("--kubeconfig")
        .arg(&local_kubeconfig)
        .arg("--endpoint-file")
        .arg(endpoint_file)
        .env("RUST_LOG", "causeway_controller=debug")
        // anyhow would otherwise print a backtrace after the error message.
        .env("RUST_LIB_BACKTRACE", "0")
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .expect("start causeway-controller");
    ChildGuard::new(child, label, log_path)
}

#[tokio::test]
async fn the_binary_publishes_mirrors_and_stops_on_sigterm() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    create_at_broker(&broker, "site-b", spec_b()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoint_file = dir.path().join("site-a.yaml");
    std::fs::write(&endpoint_file, manifest("site-a", &spec_a())).expect("write the endpoint file");

    let mut controller = start_controller(dir.path(), &broker, &a, &endpoint_file, "controller");
    let at_broker = broker.endpoints(BROKER_NS);
    let local = a.endpoints(LOCAL_NS);
    let deadline = Instant::now() + WAIT;
    loop {
        let published = at_broker.get_opt("site-a").await.ok().flatten();
        let mirrored = local.get_opt("site-b").await.ok().flatten();
        if published.is_some_and(|o| o.spec == spec_a() && valid_condition(&o).is_some())
            && mirrored.is_some_and(|o| o.spec == spec_b())
        {
            break;
        }
        assert!(
            controller.is_running(),
            "the controller exited early:\n{}",
            controller.log_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "the controller did not sync in time:\n{}",
            controller.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
async fn the_binary_refuses_an_endpoint_file_for_another_cluster() {
    let broker = Cluster::start(BROKER_NS).await;
    let a = Cluster::start(LOCAL_NS).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let endpoint_file = dir.path().join("wrong.yaml");
    std::fs::write(&endpoint_file, manifest("site-b", &spec_b())).expect("write the endpoint file");
    let mut controller = start_controller(dir.path(), &broker, &a, &endpoint_file, "wrong");
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
    use causeway_controller::leader::{campaign, Campaign};
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = Cluster::start(LOCAL_NS).await;
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
    let holder = || async {
        leases
            .get(LEASE)
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };

    let first = campaign(cluster.client.clone(), &how("replica-1"))
        .await
        .expect("join");
    eventually("replica-1 to lead", || first.is_leader()).await;
    let second = campaign(cluster.client.clone(), &how("replica-2"))
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
