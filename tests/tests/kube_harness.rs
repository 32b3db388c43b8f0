//! The Kubernetes-mode harness itself, without starting any Causeway process:
//! the namespaces, the API servers and their listeners inside the sites, the
//! seeded objects, the kubeconfig files, and that nothing is left behind.
//! Needs root.

use std::process::Command;
use std::time::Duration;

use causeway_crds::names;
use causeway_tests::harness::kube::{
    Component, KubeWorld, BROKER_API_ADDR, BROKER_NAMESPACE, CANDIDATES, CLUSTER_API_ADDR,
    CLUSTER_NAMESPACE,
};
use causeway_tests::harness::netns::run_ok;
use causeway_tests::harness::{http_get, HarnessError, Netns};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};

const PING_TRIES: u32 = 3;
const PING_TIMEOUT: Duration = Duration::from_secs(1);

fn ping(from: &Netns, to: impl Into<std::net::IpAddr>) {
    let to = to.into();
    if let Err(e) = from.ping(to, PING_TRIES, PING_TIMEOUT) {
        panic!("{} cannot reach {to}: {e}", from.name());
    }
}

fn root_state() -> String {
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

fn netns_list() -> Vec<String> {
    run_ok(Command::new("ip").args(["netns", "list"]))
        .expect("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `GET path` from inside `ns`; panics unless the answer has `status`.
fn get(ns: &Netns, addr: std::net::SocketAddr, path: &str, status: u16) -> String {
    match http_get(ns, addr, path) {
        Ok((got, body)) if got == status => body,
        Ok((got, body)) => panic!(
            "GET http://{addr}{path} in {}: status {got}, expected {status}: {body}",
            ns.name()
        ),
        Err(e) => panic!("GET in {}: {e}", ns.name()),
    }
}

fn sorted_names<K: ResourceExt>(items: Vec<K>) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(ResourceExt::name_any).collect();
    names.sort();
    names
}

#[test]
fn two_site_kube_world_is_wired_seeded_and_leaves_nothing_behind() {
    let before = root_state();
    let world = KubeWorld::new(2).expect("build a two-site Kubernetes world");

    // Every namespace exists: the WAN, and per site two candidates, a worker and a pod.
    let namespaces = world.namespace_names();
    assert_eq!(namespaces.len(), 9, "{namespaces:?}");
    let listed = netns_list();
    for name in &namespaces {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
    }

    // The test's clients (root namespace listeners) see the seeded objects.
    let broker_ns: Api<Namespace> = Api::all(world.broker_client());
    world
        .block_on(broker_ns.get(BROKER_NAMESPACE))
        .expect("the broker namespace is seeded");
    for i in 0..world.n_sites() {
        let spec = world.spec(i);
        let id = spec.cluster_id();
        let client = world.cluster_client(i);
        let nodes: Api<Node> = Api::all(client.clone());
        let all = world
            .block_on(nodes.list(&ListParams::default()))
            .unwrap_or_else(|e| panic!("list {id}'s Nodes: {e}"));
        assert_eq!(
            sorted_names(all.items),
            [
                format!("{id}-gw"),
                format!("{id}-gw2"),
                format!("{id}-worker")
            ]
        );
        let selector = format!("{}=true", names::GATEWAY_NODE_LABEL);
        let candidates = world
            .block_on(nodes.list(&ListParams::default().labels(&selector)))
            .unwrap_or_else(|e| panic!("list {id}'s gateway Nodes: {e}"));
        assert_eq!(
            sorted_names(candidates.items),
            [format!("{id}-gw"), format!("{id}-gw2")]
        );
        let worker = world
            .block_on(nodes.get(&spec.worker_node_name()))
            .expect("the worker Node");
        assert_eq!(
            worker.spec.and_then(|s| s.pod_cidrs),
            Some(vec![
                format!("10.{}.1.0/24", i + 1),
                format!("fd00:{}:0:1::/64", i + 1)
            ])
        );
        let own: Api<Namespace> = Api::all(client);
        world
            .block_on(own.get(CLUSTER_NAMESPACE))
            .expect("the cluster namespace is seeded");
    }

    // Inside each site, its own cluster API answers on 127.0.0.1:6443; the
    // broker only in the worker, on 127.0.0.1:6444.
    for i in 0..world.n_sites() {
        let spec = world.spec(i);
        let other = world.spec(1 - i);
        let site = world.site(i);
        for ns in site.candidates().into_iter().chain([&site.worker]) {
            let version = get(ns, CLUSTER_API_ADDR, "/version", 200);
            assert!(version.contains("\"major\""), "{version}");
            // The right cluster: its own Node is there, the other site's is not.
            get(
                ns,
                CLUSTER_API_ADDR,
                &format!("/api/v1/nodes/{}", spec.candidate(1).node_name()),
                200,
            );
            get(
                ns,
                CLUSTER_API_ADDR,
                &format!("/api/v1/nodes/{}", other.gateway_node_name()),
                404,
            );
        }
        get(
            &site.worker,
            BROKER_API_ADDR,
            &format!("/api/v1/namespaces/{BROKER_NAMESPACE}"),
            200,
        );
        // Gateways have no business with the broker.
        assert!(
            http_get(&site.gateway, BROKER_API_ADDR, "/version").is_err(),
            "the broker must not listen in a gateway namespace"
        );
    }

    // The kubeconfig files name the in-namespace addresses, and the real
    // client loads them inside a gateway namespace.
    let cluster_kubeconfig = std::fs::read_to_string(world.kubeconfig_path(0)).unwrap();
    assert!(
        cluster_kubeconfig.contains(&format!("server: http://{CLUSTER_API_ADDR}")),
        "{cluster_kubeconfig}"
    );
    assert!(cluster_kubeconfig.contains(&format!("namespace: {CLUSTER_NAMESPACE}")));
    let broker_kubeconfig = std::fs::read_to_string(world.broker_kubeconfig_path(0)).unwrap();
    assert!(
        broker_kubeconfig.contains(&format!("server: http://{BROKER_API_ADDR}")),
        "{broker_kubeconfig}"
    );
    assert!(broker_kubeconfig.contains(&format!("namespace: {BROKER_NAMESPACE}")));
    let path = world.kubeconfig_path(0).to_path_buf();
    let seen = world.candidate_ns(0, 1).run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kubeconfig = Kubeconfig::read_from(&path).expect("read the kubeconfig");
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .expect("a config from the kubeconfig");
            assert_eq!(config.default_namespace, CLUSTER_NAMESPACE);
            let nodes: Api<Node> = Api::all(Client::try_from(config).expect("a client"));
            sorted_names(nodes.list(&ListParams::default()).await.unwrap().items)
        })
    });
    assert_eq!(seen, ["site-a-gw", "site-a-gw2", "site-a-worker"]);

    // Candidate 1 is on the WAN and on the node bridge.
    let (a, b) = (world.spec(0), world.spec(1));
    let a2 = world.candidate_ns(0, 1);
    ping(a2, b.candidate(0).underlay_ip());
    ping(a2, b.candidate(0).underlay_ip6());
    ping(a2, a.worker_node_ip());
    ping(a2, a.worker_node_ip6());
    ping(world.candidate_ns(1, 1), a.candidate(1).underlay_ip());

    drop(world);
    let left: Vec<_> = netns_list()
        .into_iter()
        .filter(|n| namespaces.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_eq!(before, root_state(), "root namespace changed");
}

#[test]
fn the_active_gateway_is_the_lease_holder_and_waits_say_what_they_awaited() {
    let mut world = KubeWorld::new(2).expect("build a two-site Kubernetes world");
    assert_eq!(world.active_gateway(0), None);

    // Nothing runs, so nobody takes the Lease: the wait names what it awaited.
    let err = world
        .wait_active_gateway(0, Duration::from_millis(200))
        .expect_err("no gateway runs");
    let text = err.to_string();
    assert!(matches!(err, HarnessError::Wait(_)), "{text}");
    assert!(
        text.contains("site-a to have an active gateway")
            && text.contains(&names::gateway_lease("site-a")),
        "{text}"
    );

    // A Lease held by candidate 1's node maps to candidate 1; a holder that is
    // no candidate maps to none.
    let lease = |holder: &str| Lease {
        metadata: ObjectMeta {
            name: Some(names::gateway_lease("site-b")),
            namespace: Some(CLUSTER_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(3),
            ..LeaseSpec::default()
        }),
    };
    let store = world.cluster_api(1).store();
    store.put(&lease("site-b-gw2")).unwrap();
    assert_eq!(world.active_gateway(1), Some(1));
    assert_eq!(world.active_gateway(0), None, "site-a's Lease is its own");
    assert_eq!(
        world
            .wait_active_gateway(1, Duration::from_secs(1))
            .unwrap(),
        1
    );
    store.put(&lease("site-b-worker")).unwrap();
    assert_eq!(world.active_gateway(1), None);
    assert_eq!(world.lease_holder(1).as_deref(), Some("site-b-worker"));
    // Nothing was started, so the world holds no process.
    for k in 0..CANDIDATES {
        assert!(world.process(Component::Gateway(1, k)).is_none());
    }
}
