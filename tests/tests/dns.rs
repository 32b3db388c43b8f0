//! `clusterset.local` DNS fed from a real API server (the chart installed, read with the
//! controller's ServiceAccount) through the real `kube` client: ServiceImports, Causeway's
//! EndpointSlices and a Gateway's connection status in, real DNS queries over UDP and TCP
//! out. A slice change and a tunnel going down show in the answers within a second; lists
//! refused (RBAC revoked) or an API server outage keep the last zone served. The DNS
//! servers listen on 127.0.0.1 port 0.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use causeway_controller::dns::{Dns, DnsConfig, DEFAULT_TTL};
use causeway_crds::{Gateway, ServiceImport};
use causeway_tests::fixtures::{self, object};
use causeway_tests::harness::control_plane::{ClusterKind, KubeApiServer, TestCluster};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const NS: &str = "causeway";
const APP_NS: &str = "prod";
/// The contract: a change is visible within a second.
const CHANGE_VISIBLE: Duration = Duration::from_secs(1);
/// Between two looks at something that is about to change.
const POLL: Duration = Duration::from_millis(10);
/// Generous bound for what the contract does not time (start, reconnects).
const WAIT: Duration = Duration::from_secs(20);

const PG: &str = "pg.prod.svc.clusterset.local.";
const DB: &str = "db.prod.svc.clusterset.local.";
const WEB: &str = "web.prod.svc.clusterset.local.";

fn import(name: &str, type_: &str) -> ServiceImport {
    object(json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": {"type": type_, "ports": [{"name": "pg", "protocol": "TCP", "port": 5432}]},
    }))
}

fn slice(svc: &str, cluster: &str, endpoints: Value) -> EndpointSlice {
    object(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{svc}-{cluster}-ipv4"),
            "namespace": APP_NS,
            "labels": {
                "multicluster.kubernetes.io/service-name": svc,
                "multicluster.kubernetes.io/source-cluster": cluster,
                "endpointslice.kubernetes.io/managed-by": "causeway.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "pg", "protocol": "TCP", "port": 5432}],
    }))
}

fn endpoint(ip: &str, ready: bool, hostname: Option<&str>) -> Value {
    let mut e = json!({"addresses": [ip], "conditions": {"ready": ready}});
    if let Some(h) = hostname {
        e["hostname"] = json!(h);
    }
    e
}

fn gateway_status(site_b: &str) -> Value {
    json!({"status": {
        "role": "active",
        "connections": [{"clusterID": "site-b", "state": site_b, "rxBytes": 0, "txBytes": 0}],
    }})
}

/// A real cluster with the chart installed and the app namespace; the test seeds the
/// objects as cluster-admin through `client`, DNS reads as the chart's controller.
struct World {
    cluster: TestCluster,
    client: Client,
}

impl World {
    async fn start() -> World {
        let cluster = TestCluster::start(ClusterKind::member("site-a", 1))
            .unwrap_or_else(|e| panic!("start the cluster: {e}"));
        let client = Client::try_from(cluster.admin_config(NS)).expect("a client");
        let namespace = fixtures::namespace(APP_NS);
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the app namespace");
        let world = World { cluster, client };
        let imports = world.imports();
        for (name, type_) in [
            ("pg", "Headless"),
            ("db", "ClusterSetIP"),
            ("web", "ClusterSetIP"),
        ] {
            imports
                .create(&PostParams::default(), &import(name, type_))
                .await
                .expect("create a ServiceImport");
        }
        for s in [
            slice(
                "pg",
                "site-a",
                json!([endpoint("10.1.0.5", true, Some("pg-0"))]),
            ),
            slice(
                "pg",
                "site-b",
                json!([endpoint("10.2.0.5", true, Some("pg-0"))]),
            ),
            slice("db", "site-a", json!([endpoint("10.101.0.10", true, None)])),
            slice("db", "site-b", json!([endpoint("10.102.0.10", true, None)])),
            slice(
                "web",
                "site-b",
                json!([endpoint("10.102.0.20", true, None)]),
            ),
        ] {
            world.put_slice(&s).await;
        }
        let gateway: Gateway = object(json!({
            "apiVersion": "causeway.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": "site-a-gw-1", "namespace": NS},
            "spec": {
                "clusterID": "site-a",
                "nodeName": "site-a-gw-1",
                "publicEndpoint": "198.18.0.1:51820",
                "publicKey": "",
            },
        }));
        world
            .gateways()
            .create(&PostParams::default(), &gateway)
            .await
            .expect("create the Gateway");
        world.set_site_b("connected").await;
        world
    }

    fn server(&self) -> &KubeApiServer {
        self.cluster.server()
    }

    /// A client as the chart's controller, what the DNS server reads with.
    fn controller(&self) -> Client {
        let credentials = self
            .cluster
            .controller()
            .unwrap_or_else(|e| panic!("the controller's credentials: {e}"));
        Client::try_from(self.cluster.config(&credentials, NS)).expect("a client")
    }

    fn imports(&self) -> Api<ServiceImport> {
        Api::namespaced(self.client.clone(), APP_NS)
    }

    fn gateways(&self) -> Api<Gateway> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn put_slice(&self, s: &EndpointSlice) {
        let name = s.metadata.name.clone().expect("a name");
        Api::<EndpointSlice>::namespaced(self.client.clone(), APP_NS)
            .patch(
                &name,
                &PatchParams::apply("dns-test").force(),
                &Patch::Apply(s),
            )
            .await
            .expect("apply the EndpointSlice");
    }

    async fn set_site_b(&self, state: &str) {
        self.gateways()
            .patch_status(
                "site-a-gw-1",
                &PatchParams::default(),
                &Patch::Merge(gateway_status(state)),
            )
            .await
            .expect("patch the Gateway status");
    }
}

/// The running DNS server of one controller replica.
struct Replica {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), causeway_controller::dns::DnsError>>,
}

impl Replica {
    async fn start(client: Client) -> Replica {
        let dns = Dns::bind(DnsConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            cluster_id: "site-a".to_owned(),
            namespace: NS.to_owned(),
            ttl: DEFAULT_TTL,
        })
        .await
        .expect("bind the DNS server");
        let addr = dns.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dns.run(client, async {
            let _ = stopped.await;
        }));
        Replica {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let outcome = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("DNS stops in time")
            .expect("the DNS task did not panic");
        assert!(outcome.is_ok(), "{outcome:?}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a query got: the rcode and the sorted answer data.
type Answer = (ResponseCode, Vec<String>);

async fn ask(addr: SocketAddr, name: &str, qtype: RecordType, over_tcp: bool) -> Option<Answer> {
    let mut query = Message::query();
    query.metadata.id = 7;
    query.add_query(Query::query(Name::from_str(name).ok()?, qtype));
    let bytes = query.to_vec().ok()?;
    let reply = async {
        if over_tcp {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let len = u16::try_from(bytes.len()).ok()?;
            stream.write_all(&len.to_be_bytes()).await.ok()?;
            stream.write_all(&bytes).await.ok()?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.ok()?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.ok()?;
            Some(buf)
        } else {
            let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
            socket.send_to(&bytes, addr).await.ok()?;
            let mut buf = vec![0u8; 65535];
            let n = socket.recv(&mut buf).await.ok()?;
            buf.truncate(n);
            Some(buf)
        }
    };
    // A lost datagram is asked again by the caller's loop, not waited on forever.
    let buf = tokio::time::timeout(Duration::from_millis(500), reply)
        .await
        .ok()??;
    let message = Message::from_vec(&buf).ok()?;
    let mut data: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    Some((message.metadata.response_code, data))
}

fn addresses(list: &[&str]) -> Answer {
    let set: BTreeSet<String> = list.iter().map(|s| (*s).to_owned()).collect();
    (ResponseCode::NoError, set.into_iter().collect())
}

fn nodata() -> Answer {
    (ResponseCode::NoError, vec![])
}

/// Asks `name` until it answers `want` (over UDP and TCP alike), or fails after `within`.
async fn until(addr: SocketAddr, name: &str, qtype: RecordType, want: &Answer, within: Duration) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < within {
        let udp = ask(addr, name, qtype, false).await;
        if udp.as_ref() == Some(want) && ask(addr, name, qtype, true).await.as_ref() == Some(want) {
            return;
        }
        last = udp;
        // A poll interval: the deadline, not this, decides the outcome.
        tokio::time::sleep(POLL).await;
    }
    panic!("{name} {qtype}: wanted {want:?} within {within:?}, last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_follows_slices_and_tunnel_health() {
    let world = World::start().await;
    let replica = Replica::start(world.controller()).await;
    let addr = replica.addr;

    // The seeded world: local-first ClusterSetIP, headless from both clusters.
    until(addr, DB, RecordType::A, &addresses(&["10.101.0.10"]), WAIT).await;
    until(
        addr,
        PG,
        RecordType::A,
        &addresses(&["10.1.0.5", "10.2.0.5"]),
        WAIT,
    )
    .await;
    until(addr, WEB, RecordType::A, &addresses(&["10.102.0.20"]), WAIT).await;
    until(
        addr,
        &format!("_pg._tcp.{PG}"),
        RecordType::SRV,
        &addresses(&[
            "0 50 5432 pg-0.site-a.pg.prod.svc.clusterset.local.",
            "0 50 5432 pg-0.site-b.pg.prod.svc.clusterset.local.",
        ]),
        WAIT,
    )
    .await;
    let nx = ask(
        addr,
        "nope.prod.svc.clusterset.local.",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(nx, Some((ResponseCode::NXDomain, vec![])));
    let refused = ask(addr, "example.com.", RecordType::A, true).await;
    assert_eq!(refused, Some((ResponseCode::Refused, vec![])));

    // A pod moves: the old address is no longer ready, a new one is.
    world
        .put_slice(&slice(
            "pg",
            "site-a",
            json!([
                endpoint("10.1.0.5", false, Some("pg-0")),
                endpoint("10.1.0.6", true, Some("pg-1")),
            ]),
        ))
        .await;
    until(
        addr,
        PG,
        RecordType::A,
        &addresses(&["10.1.0.6", "10.2.0.5"]),
        CHANGE_VISIBLE,
    )
    .await;
    until(
        addr,
        "pg-0.site-a.pg.prod.svc.clusterset.local.",
        RecordType::A,
        &nodata(),
        CHANGE_VISIBLE,
    )
    .await;
    until(
        addr,
        "pg-1.site-a.pg.prod.svc.clusterset.local.",
        RecordType::A,
        &addresses(&["10.1.0.6"]),
        CHANGE_VISIBLE,
    )
    .await;

    // site-b's tunnel goes down: it leaves <svc>, keeps <cluster>.<svc>.
    world.set_site_b("connecting").await;
    until(
        addr,
        PG,
        RecordType::A,
        &addresses(&["10.1.0.6"]),
        CHANGE_VISIBLE,
    )
    .await;
    until(addr, WEB, RecordType::A, &nodata(), CHANGE_VISIBLE).await;
    until(
        addr,
        "site-b.pg.prod.svc.clusterset.local.",
        RecordType::A,
        &addresses(&["10.2.0.5"]),
        CHANGE_VISIBLE,
    )
    .await;
    until(
        addr,
        DB,
        RecordType::A,
        &addresses(&["10.101.0.10"]),
        CHANGE_VISIBLE,
    )
    .await;

    // And comes back.
    world.set_site_b("connected").await;
    until(
        addr,
        WEB,
        RecordType::A,
        &addresses(&["10.102.0.20"]),
        CHANGE_VISIBLE,
    )
    .await;

    replica.stop().await;
}

/// Zone builds that listed ServiceImports since the last counter reset (the feed's lists;
/// watches are another verb), allowed or not.
fn import_lists(server: &KubeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "serviceimports")
        .count()
}

/// Those of [`import_lists`] the server refused (403).
fn refused_import_lists(server: &KubeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "serviceimports" && r.code == 403)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_zone_is_served_while_the_api_cannot_be_read() {
    let world = World::start().await;
    let replica = Replica::start(world.controller()).await;
    let addr = replica.addr;
    let seeded = addresses(&["10.1.0.5", "10.2.0.5"]);
    until(addr, PG, RecordType::A, &seeded, WAIT).await;

    // The controller loses the right to read ServiceImports (its ClusterRoleBinding is
    // deleted, as a botched RBAC change would): every list fails with 403.
    world.server().reset_counters();
    let binding = "clusterrolebinding/causeway-controller-causeway";
    let saved = world
        .server()
        .kubectl_ok(&["get", binding, "-o", "json"], None)
        .expect("read the controller's ClusterRoleBinding");
    world
        .server()
        .kubectl_ok(&["delete", binding], None)
        .expect("delete the controller's ClusterRoleBinding");
    let moved = slice(
        "pg",
        "site-b",
        json!([endpoint("10.2.0.9", true, Some("pg-0"))]),
    );
    world.put_slice(&moved).await;
    // A failed build and at least one retry ...
    let start = Instant::now();
    while refused_import_lists(world.server()) < 2 {
        assert!(
            start.elapsed() < WAIT,
            "no refused rebuild and retry ({} lists)",
            import_lists(world.server())
        );
        tokio::time::sleep(POLL).await;
    }
    // ... leave the last zone in place.
    assert_eq!(
        ask(addr, PG, RecordType::A, false).await,
        Some(seeded.clone())
    );
    assert_eq!(ask(addr, PG, RecordType::A, true).await, Some(seeded));

    // Fixed, the next build (a retry or the watch) serves the change.
    let mut restored: Value = serde_json::from_str(&saved).expect("the binding as JSON");
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        restored["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove(field);
    }
    world
        .server()
        .kubectl_ok(&["create", "-f", "-"], Some(&restored.to_string()))
        .expect("restore the controller's ClusterRoleBinding");
    until(
        addr,
        PG,
        RecordType::A,
        &addresses(&["10.1.0.5", "10.2.0.9"]),
        WAIT,
    )
    .await;

    // With the API server gone altogether the zone is still answered, and after it
    // is back the watchers reconnect and changes show again.
    world.server().stop();
    assert_eq!(
        ask(addr, PG, RecordType::A, true).await,
        Some(addresses(&["10.1.0.5", "10.2.0.9"]))
    );
    world.server().restart().expect("restart the API server");
    world
        .put_slice(&slice(
            "pg",
            "site-b",
            json!([endpoint("10.2.0.5", true, Some("pg-0"))]),
        ))
        .await;
    until(
        addr,
        PG,
        RecordType::A,
        &addresses(&["10.1.0.5", "10.2.0.5"]),
        WAIT,
    )
    .await;
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_at_shutdown_and_a_taken_port_fails_the_start() {
    let world = World::start().await;
    let replica = Replica::start(world.controller()).await;
    let taken = replica.addr;
    let second = causeway_controller::dns::serve(
        world.controller(),
        DnsConfig {
            listen: taken,
            cluster_id: "site-a".to_owned(),
            namespace: NS.to_owned(),
            ttl: DEFAULT_TTL,
        },
        std::future::pending(),
    )
    .await;
    let error = second.expect_err("the port is taken");
    assert!(error.to_string().contains("--dns-listen"), "{error}");
    replica.stop().await;
}
