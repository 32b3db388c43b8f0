//! What the test files share, defined once: object builders, probes of the sites' pods,
//! the root namespace's state, waits, and the controller binary as a test starts it.
//! Each test file keeps only what is its own (its constants, its world, its tables).

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_crds::GatewayEndpoint;
use causeway_wire::keys::format_key;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::harness::control_plane::cluster::BROKER_NAMESPACE;
use crate::harness::control_plane::install::RELEASE_NAMESPACE;
use crate::harness::control_plane::TestCluster;
use crate::harness::kube::KubeWorld;
use crate::harness::mesh::Mesh;
use crate::harness::netns::run_ok;
use crate::harness::traffic::{pattern, tcp_roundtrip, Echo};
use crate::harness::{wait_until_ok, workspace_binary, ChildGuard, HarnessError, Netns, Site};

/// The port of the echo server a test starts in a site's pod.
pub const ECHO_PORT: u16 = 7000;

/// Fails the test with a harness error; for `unwrap_or_else(|e| fail(e))`.
pub fn fail(e: HarnessError) -> ! {
    panic!("{e}")
}

/// An object from its JSON, as `kubectl apply` would read it.
pub fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a well-formed object")
}

/// Namespace `name`.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A WireGuard public key in its base64 form, made of 32 bytes `byte`.
pub fn key(byte: u8) -> String {
    format_key(&[byte; 32])
}

/// A ClusterEndpoint's gateway on node `node` at `198.18.0.<n>:51820` with key
/// [`key`]`(key_byte)` and no private address.
pub fn gateway_endpoint(node: &str, n: u8, key_byte: u8) -> GatewayEndpoint {
    GatewayEndpoint {
        node_name: node.to_owned(),
        public_endpoint: format!("198.18.0.{n}:51820"),
        public_key: key(key_byte),
        private_ip: None,
        private_ips: vec![],
        health_check_ip: None,
    }
}

/// The value of an object's label `key`, if set.
pub fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The objects' names, sorted: what a list returned, whatever its order.
pub fn sorted_names<K: Resource>(objects: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut names: Vec<String> = objects
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect();
    names.sort();
    names
}

/// Polls `check` every 50 ms until it holds; fails the test after `within`, naming `what`.
pub async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] while `child` runs, every 100 ms: fails the test with the child's log
/// as soon as it exits, or after `within`.
pub async fn wait_while_running(
    child: &mut ChildGuard,
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            child.is_running(),
            "{} exited while waiting for {what}:\n{}",
            child.label(),
            child.log_tail(30)
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            child.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often [`ping`] tries.
const PING_TRIES: u32 = 3;
/// How long one ping waits for its answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Fails the test unless `from` reaches `to` with a ping.
pub fn ping(from: &Netns, to: impl Into<IpAddr>) {
    let to = to.into();
    if let Err(e) = from.ping(to, PING_TRIES, PING_TIMEOUT) {
        panic!("{} cannot reach {to}: {e}", from.name());
    }
}

/// The root network namespace's links, routes, rules and addresses as `ip` prints them:
/// the same before and after a world means the world left nothing behind.
pub fn root_state() -> String {
    let mut state = String::new();
    for args in [
        &["link", "show"][..],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["-4", "rule", "show"],
        &["-6", "rule", "show"],
        &["-4", "addr", "show"],
        &["-6", "addr", "show"],
    ] {
        let out = run_ok(Command::new("ip").args(args)).expect("read root namespace state");
        state.push_str(&format!("$ ip {}\n{out}", args.join(" ")));
    }
    state
}

/// The names of the network namespaces that exist now.
pub fn netns_list() -> Vec<String> {
    run_ok(Command::new("ip").args(["netns", "list"]))
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The site's pod's IPv4 address, at [`ECHO_PORT`].
pub fn pod_addr(site: &Site) -> SocketAddr {
    SocketAddr::new(site.spec.pod_ip().into(), ECHO_PORT)
}

/// The site's pod's IPv6 address, at [`ECHO_PORT`].
pub fn pod_addr6(site: &Site) -> SocketAddr {
    SocketAddr::new(site.spec.pod_ip6().into(), ECHO_PORT)
}

/// An echo server in the site's pod, listening on `addr`.
pub fn echo(site: &Site, addr: SocketAddr) -> Echo {
    Echo::start(&site.pod, addr).expect("echo server in pod")
}

/// Waits until a TCP round trip from site `from`'s pod to the echo server at `to` comes
/// back intact (routes and tunnel up); fails the test with the mesh's logs after `within`.
pub fn wait_reachable(mesh: &Mesh, from: usize, to: SocketAddr, within: Duration) {
    let what = format!(
        "{} pod to reach {to} over TCP",
        mesh.site(from).spec.cluster_id()
    );
    let result = wait_until_ok(&what, within, || echoed(&mesh.site(from).pod, to, from));
    if let Err(e) = result {
        panic!("{e}\n{}", mesh.logs());
    }
}

/// [`wait_reachable`] in Kubernetes mode, to site `to`'s pod; ends early, with every
/// process's log, when a process of the world exits.
pub fn wait_kube_reachable(
    kube: &mut KubeWorld,
    from: usize,
    to: usize,
    within: Duration,
) -> Result<(), HarnessError> {
    let to = pod_addr(kube.site(to));
    let what = format!(
        "{} pod to reach {to} over TCP",
        kube.spec(from).cluster_id()
    );
    kube.wait_for(&what, within, |k| echoed(&k.site(from).pod, to, from))
}

/// One TCP round trip from `pod` to the echo server at `to`, its payload marked by `from`.
fn echoed(pod: &Netns, to: SocketAddr, from: usize) -> Result<(), String> {
    let payload = pattern(1000, from as u8);
    match tcp_roundtrip(pod, to, &payload) {
        Ok(back) if back == payload => Ok(()),
        Ok(_) => Err("echo differed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates namespace `name` in site `i`'s cluster, as cluster-admin.
pub fn create_namespace(kube: &KubeWorld, i: usize, name: &str) {
    let namespaces: Api<Namespace> = Api::all(kube.cluster_client(i));
    kube.block_on(namespaces.create(&PostParams::default(), &namespace(name)))
        .unwrap_or_else(|e| panic!("create namespace {name} in site {i}: {e}"));
}

/// Starts the controller binary as cluster `id`'s, with the credentials the chart gives it
/// at `broker` and in its own `cluster`; `spec_args` say where its spec comes from. Its
/// kubeconfigs and its log (`<label>.log`) are written to `dir`.
pub fn start_controller(
    dir: &Path,
    id: &str,
    broker: &TestCluster,
    cluster: &TestCluster,
    spec_args: &[OsString],
    label: &str,
) -> ChildGuard {
    let credentials = |on: &TestCluster| {
        on.controller_credentials(id)
            .unwrap_or_else(|e| panic!("credentials of {id}'s controller: {e}"))
    };
    let broker_kubeconfig = dir.join(format!("{label}-broker.kubeconfig"));
    let local_kubeconfig = dir.join(format!("{label}.kubeconfig"));
    broker
        .write_kubeconfig(&broker_kubeconfig, &credentials(broker), BROKER_NAMESPACE)
        .expect("write the broker kubeconfig");
    cluster
        .write_kubeconfig(&local_kubeconfig, &credentials(cluster), RELEASE_NAMESPACE)
        .expect("write the cluster's kubeconfig");
    let log_path = dir.join(format!("{label}.log"));
    let log = std::fs::File::create(&log_path).expect("create the log");
    let child = Command::new(workspace_binary("causeway-controller"))
        .args(["--cluster", id, "--broker-namespace", BROKER_NAMESPACE])
        .args(["--namespace", RELEASE_NAMESPACE])
        .arg("--broker-kubeconfig")
        .arg(&broker_kubeconfig)
        .arg("--kubeconfig")
        .arg(&local_kubeconfig)
        .args(spec_args)
        // Only the flags of each test say where the spec comes from.
        .env_remove("CAUSEWAY_ENDPOINT_FILE")
        .env_remove("CAUSEWAY_POD_CIDRS")
        .env_remove("CAUSEWAY_SERVICE_CIDRS")
        .env("RUST_LOG", "causeway_controller=debug")
        // anyhow would otherwise print a backtrace after the error message.
        .env("RUST_LIB_BACKTRACE", "0")
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .expect("start causeway-controller");
    ChildGuard::new(child, label, log_path)
}
