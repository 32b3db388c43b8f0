//! The Kubernetes-mode harness itself, without starting any Causeway process: the
//! namespaces, the real API servers and where each node reaches them, the chart's objects
//! and RBAC as each component's credentials see them, the kubeconfig files, and that
//! nothing is left behind. Needs root and `scripts/kube build`.

use std::time::Duration;

use causeway_crds::names;
use causeway_crds::ClusterEndpoint;
use causeway_tests::fixtures::{netns_list, ping, root_state, sorted_names};
use causeway_tests::harness::kube::{
    in_namespace, Component, KubeWorld, BROKER_API_ADDR, BROKER_NAMESPACE, CANDIDATES,
    CLUSTER_API_PORT, CLUSTER_NAMESPACE,
};
use causeway_tests::harness::HarnessError;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};

/// The API's status code of a failed request, `None` if it succeeded.
fn code<T>(result: Result<T, kube::Error>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(s.code),
        Err(e) => panic!("not an API answer: {e}"),
    }
}

#[test]
fn two_site_kube_world_is_wired_seeded_and_leaves_nothing_behind() {
    let before = root_state();
    let world = KubeWorld::new(2).expect("build a two-site Kubernetes world");

    // Every namespace exists: the WAN, per site two candidates, a worker and a pod, and the
    // broker's.
    let mut namespaces = world.namespace_names();
    namespaces.push(world.broker_ns().name().to_string());
    assert_eq!(namespaces.len(), 10, "{namespaces:?}");
    let listed = netns_list();
    for name in &namespaces {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
    }

    // The test's clients (root namespace listeners) see the seeded objects.
    let broker_ns: Api<Namespace> = Api::all(world.broker_client());
    world
        .block_on(broker_ns.get(BROKER_NAMESPACE))
        .expect("the chart's broker mode made the broker namespace");
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
            .expect("the chart's release namespace exists");
    }

    // Inside each site, its cluster API answers at the worker's node address, to every
    // node, with the rights the chart gives: the controller's token lists this site's Nodes
    // (the right cluster), the gateway's reads no Node and no Secret outside the key
    // namespace: not the broker kubeconfig, kept in Causeway's namespace as the chart's
    // README says.
    for i in 0..world.n_sites() {
        let spec = world.spec(i);
        let site = world.site(i);
        let broker_secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "causeway-broker-kubeconfig", "namespace": CLUSTER_NAMESPACE},
            "stringData": {"kubeconfig": "the member's broker credentials"}
        }))
        .expect("a Secret");
        world
            .block_on(
                Api::<Secret>::namespaced(world.cluster_client(i), CLUSTER_NAMESPACE)
                    .create(&Default::default(), &broker_secret),
            )
            .expect("create the broker kubeconfig Secret");
        let gateway_kubeconfig = world.gateway_kubeconfig_path(i).to_path_buf();
        let controller_kubeconfig = world.kubeconfig_path(i).to_path_buf();
        for ns in site.candidates().into_iter().chain([&site.worker]) {
            let listed = in_namespace(ns, &controller_kubeconfig, |client| async move {
                let nodes: Api<Node> = Api::all(client);
                nodes
                    .list(&ListParams::default())
                    .await
                    .map(|l| sorted_names(l.items))
            });
            let id = spec.cluster_id();
            assert_eq!(
                listed.expect("the controller lists Nodes"),
                [
                    format!("{id}-gw"),
                    format!("{id}-gw2"),
                    format!("{id}-worker")
                ]
            );
            let node = spec.candidate(1).node_name();
            let (own_node, secrets, release_secrets, broker, keys) =
                in_namespace(ns, &gateway_kubeconfig, |client| async move {
                    let nodes: Api<Node> = Api::all(client.clone());
                    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
                    let release: Api<Secret> = Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
                    let keys: Api<Secret> =
                        Api::namespaced(client, &names::key_namespace(CLUSTER_NAMESPACE));
                    (
                        code(nodes.get(&node).await),
                        code(secrets.list(&ListParams::default()).await),
                        code(release.list(&ListParams::default()).await),
                        code(release.get("causeway-broker-kubeconfig").await),
                        keys.list(&ListParams::default())
                            .await
                            .map(|l| l.items.len()),
                    )
                });
            assert_eq!(
                (release_secrets, broker),
                (Some(403), Some(403)),
                "a gateway candidate may neither list the Secrets of Causeway's namespace nor read the broker kubeconfig"
            );
            keys.expect("a gateway candidate lists the key namespace's Secrets");
            assert_eq!(
                own_node,
                Some(403),
                "the gateway has no business with Nodes"
            );
            assert_eq!(
                secrets,
                Some(403),
                "the gateway may not read kube-system's Secrets"
            );
        }
        // A route agent's node is not a gateway: with its token (all a compromised worker
        // holds) the gateways' key Secrets cannot be read, no Gateway or Lease written;
        // the ClusterEndpoints it routes by can be listed.
        let agent_kubeconfig = world.agent_kubeconfig_path(i).to_path_buf();
        let key_secret = names::gateway_key_secret(&spec.candidate(0).node_name());
        let lease = names::gateway_lease(&spec.cluster_id());
        let (listed, secrets, key, lease_patch) =
            in_namespace(&site.worker, &agent_kubeconfig, |client| async move {
                let endpoints: Api<ClusterEndpoint> =
                    Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
                let secrets: Api<Secret> = Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
                let leases: Api<Lease> = Api::namespaced(client, CLUSTER_NAMESPACE);
                let take = serde_json::json!({"spec": {"holderIdentity": "attacker"}});
                (
                    endpoints
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items.len()),
                    code(secrets.list(&ListParams::default()).await),
                    code(secrets.get(&key_secret).await),
                    code(
                        leases
                            .patch(
                                &lease,
                                &kube::api::PatchParams::default(),
                                &kube::api::Patch::Merge(&take),
                            )
                            .await,
                    ),
                )
            });
        listed.expect("a route agent lists the ClusterEndpoints");
        assert_eq!(secrets, Some(403), "a route agent may not list Secrets");
        assert_eq!(key, Some(403), "a route agent may not read a gateway's key");
        assert_eq!(
            lease_patch,
            Some(403),
            "a route agent may not take the gateway Lease"
        );
        // The broker: from the worker, with the member's token, ClusterEndpoints may be
        // listed, Namespaces not; a gateway node has no route to it.
        let broker_kubeconfig = world.broker_kubeconfig_path(i).to_path_buf();
        let (endpoints, namespaces) =
            in_namespace(&site.worker, &broker_kubeconfig, |client| async move {
                let endpoints: Api<ClusterEndpoint> =
                    Api::namespaced(client.clone(), BROKER_NAMESPACE);
                let namespaces: Api<Namespace> = Api::all(client);
                (
                    endpoints
                        .list(&ListParams::default())
                        .await
                        .map(|l| l.items.len()),
                    code(namespaces.list(&ListParams::default()).await),
                )
            });
        assert_eq!(
            endpoints.expect("a member lists the broker's ClusterEndpoints"),
            0
        );
        assert_eq!(namespaces, Some(403));
        let reached = site.gateway.run(|| {
            std::net::TcpStream::connect_timeout(&BROKER_API_ADDR, Duration::from_secs(1)).is_ok()
        });
        assert!(
            !reached,
            "the broker must not be reachable from a gateway namespace"
        );
    }

    // The kubeconfig files name the in-cluster addresses over TLS, with tokens.
    let cluster_kubeconfig = std::fs::read_to_string(world.kubeconfig_path(0)).unwrap();
    let server = format!(
        "server: https://{}:{CLUSTER_API_PORT}",
        world.spec(0).worker_node_ip()
    );
    assert!(cluster_kubeconfig.contains(&server), "{cluster_kubeconfig}");
    assert!(cluster_kubeconfig.contains(&format!("namespace: {CLUSTER_NAMESPACE}")));
    assert!(cluster_kubeconfig.contains("token: "));
    let broker_kubeconfig = std::fs::read_to_string(world.broker_kubeconfig_path(0)).unwrap();
    assert!(
        broker_kubeconfig.contains(&format!("server: https://{BROKER_API_ADDR}")),
        "{broker_kubeconfig}"
    );
    assert!(broker_kubeconfig.contains(&format!("namespace: {BROKER_NAMESPACE}")));

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
    let leases: Api<Lease> = Api::namespaced(world.cluster_client(1), CLUSTER_NAMESPACE);
    world
        .block_on(leases.create(&PostParams::default(), &lease("site-b-gw2")))
        .expect("create the Lease");
    assert_eq!(world.active_gateway(1), Some(1));
    assert_eq!(world.active_gateway(0), None, "site-a's Lease is its own");
    assert_eq!(
        world
            .wait_active_gateway(1, Duration::from_secs(1))
            .unwrap(),
        1
    );
    let mut moved = world
        .block_on(leases.get(&names::gateway_lease("site-b")))
        .expect("read the Lease");
    moved.spec = lease("site-b-worker").spec;
    world
        .block_on(leases.replace(
            &names::gateway_lease("site-b"),
            &PostParams::default(),
            &moved,
        ))
        .expect("move the Lease");
    assert_eq!(world.active_gateway(1), None);
    assert_eq!(world.lease_holder(1).as_deref(), Some("site-b-worker"));
    // Nothing was started, so the world holds no process.
    for k in 0..CANDIDATES {
        assert!(world.process(Component::Gateway(1, k)).is_none());
    }
}
