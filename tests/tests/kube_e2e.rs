//! End-to-end tests of Kubernetes mode: a broker API and one API per cluster (the
//! in-memory stand-in), per cluster two gateway candidates and a worker in network
//! namespaces, real controllers, gateways and route agents. No endpoints file exists
//! anywhere: every site learns the others through the broker.
//!
//! One binary for every slow test, so they share one build and one harness.

use causeway_crds::names::{
    gateway_key_secret, gateway_lease, GATEWAY_NODE_LABEL, LOCAL_LABEL, MIRRORED_LABEL,
    PRIVATE_KEY_FIELD,
};
use causeway_crds::{ClusterEndpoint, ConnectionState, Gateway, GatewayRole};
use causeway_gateway::liveness;
use causeway_tests::fixtures::{
    echo, fail, label, pod_addr, pod_addr6, wait_kube_reachable, ECHO_PORT,
};
use causeway_tests::harness::kube::BROKER_NAMESPACE;
use causeway_tests::harness::kube::{
    in_namespace, Component, KubeWorld, CANDIDATES, CLUSTER_NAMESPACE,
};
use causeway_tests::harness::leak::assert_no_key;
use causeway_tests::harness::mesh::{causeway_routes, required_metric};
use causeway_tests::harness::spoof::{Datagram, Packet, Sniffer, SpoofedSocket};
use causeway_tests::harness::traffic::{pattern, tcp_roundtrip, udp_roundtrip, Echo, Stream};
use causeway_tests::harness::HarnessError;
use causeway_wire::ports;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use rand_core::RngCore;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const WAIT: Duration = Duration::from_secs(20);

/// Waits until site `from`'s pod reaches site `to`'s echo server.
fn wait_reachable(kube: &mut KubeWorld, from: usize, to: usize) {
    wait_kube_reachable(kube, from, to, WAIT).unwrap_or_else(|e| fail(e));
}

/// Waits until `stream` has verified `more` chunks beyond `from`.
fn wait_stream(kube: &mut KubeWorld, stream: &Stream, from: u64, more: u64, what: &str) -> u64 {
    kube.wait_for(what, WAIT, |_| match stream.chunks() {
        n if n >= from + more => Ok(n),
        n if stream.ended() => Err(format!("the stream ended after {n} chunks")),
        n => Err(format!("{n} chunks")),
    })
    .unwrap_or_else(|e| fail(e))
}

/// Two sites with echo servers in their pods, site-a's pod reaching site-b's.
fn two_sites_reachable() -> (KubeWorld, [Echo; 2]) {
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let echoes = [A, B].map(|i| echo(kube.site(i), pod_addr(kube.site(i))));
    wait_reachable(&mut kube, A, B);
    (kube, echoes)
}

/// Waits until site-a's candidate `new` holds the gateway Lease; `what` says why it should.
fn wait_lease_moved_to(kube: &mut KubeWorld, new: usize, what: &str) -> Result<(), HarnessError> {
    kube.wait_for(what, WAIT, |k| match k.try_active_gateway(A) {
        Ok(Some(k)) if k == new => Ok(()),
        other => Err(format!("active {other:?}")),
    })
}

fn gateways(kube: &KubeWorld, i: usize) -> Vec<Gateway> {
    let api: Api<Gateway> = Api::namespaced(kube.cluster_client(i), CLUSTER_NAMESPACE);
    kube.block_on(api.list(&ListParams::default()))
        .expect("list Gateways")
        .items
}

fn endpoints(kube: &KubeWorld, api: Api<ClusterEndpoint>) -> Vec<ClusterEndpoint> {
    kube.block_on(api.list(&ListParams::default()))
        .expect("list ClusterEndpoints")
        .items
}

fn local_endpoints(kube: &KubeWorld, i: usize) -> Vec<ClusterEndpoint> {
    endpoints(
        kube,
        Api::namespaced(kube.cluster_client(i), CLUSTER_NAMESPACE),
    )
}

fn broker_endpoints(kube: &KubeWorld) -> Vec<ClusterEndpoint> {
    endpoints(
        kube,
        Api::namespaced(kube.broker_client(), BROKER_NAMESPACE),
    )
}

/// Every process's `causeway_netlink_writes_total`, by component.
fn netlink_writes(kube: &KubeWorld) -> Vec<(String, f64)> {
    let mut writes = Vec::new();
    for i in 0..kube.n_sites() {
        for k in 0..CANDIDATES {
            if let Ok(text) = kube.gateway_metrics(i, k) {
                let n = required_metric(&text, "causeway_netlink_writes_total", &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", Component::Gateway(i, k)));
                writes.push((Component::Gateway(i, k).to_string(), n));
            }
        }
        let text = kube.agent_metrics(i).expect("route agent metrics");
        let n = required_metric(&text, "causeway_netlink_writes_total", &[])
            .unwrap_or_else(|e| panic!("{}: {e}", Component::RouteAgent(i)));
        writes.push((Component::RouteAgent(i).to_string(), n));
    }
    writes
}

/// Every Causeway route in site `i`'s worker and candidates.
fn all_routes(kube: &KubeWorld, i: usize) -> Vec<String> {
    let site = kube.site(i);
    site.candidates()
        .into_iter()
        .chain([&site.worker])
        .flat_map(|ns| causeway_routes(ns).expect("ip route"))
        .collect()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn pods_reach_each_other_through_the_broker_with_no_endpoints_file() {
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let _servers: Vec<Echo> = [A, B]
        .iter()
        .flat_map(|&i| {
            [
                echo(kube.site(i), pod_addr(kube.site(i))),
                echo(kube.site(i), pod_addr6(kube.site(i))),
            ]
        })
        .collect();
    // Every gateway and route agent carries this traffic holding what the chart grants -
    // CAP_NET_ADMIN alone, no way to gain more - not a test runner's full root.
    for i in [A, B] {
        for component in (0..CANDIDATES)
            .map(|k| Component::Gateway(i, k))
            .chain([Component::RouteAgent(i)])
        {
            let pid = kube.process(component).map(|p| p.pid()).expect("running");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_else(|e| panic!("{component}'s /proc status: {e}"));
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            // CAP_NET_ADMIN is capability 12.
            assert_eq!(
                field("CapEff:"),
                "0000000000001000",
                "{component}: {status}"
            );
            assert_eq!(field("CapBnd:"), "0000000000001000", "{component}");
            assert_eq!(field("NoNewPrivs:"), "1", "{component}");
        }
    }
    for (from, to) in [(A, B), (B, A)] {
        wait_reachable(&mut kube, from, to);
        let pod = &kube.site(from).pod;
        for len in [1, 1400, 64 * 1024] {
            let payload = pattern(len, 9);
            let back = tcp_roundtrip(pod, pod_addr(kube.site(to)), &payload).expect("tcp v4");
            assert_eq!(back, payload, "TCP v4 {len} bytes {from}->{to}");
            let back = tcp_roundtrip(pod, pod_addr6(kube.site(to)), &payload).expect("tcp v6");
            assert_eq!(back, payload, "TCP v6 {len} bytes {from}->{to}");
        }
        let datagram = pattern(1200, 4);
        assert_eq!(
            udp_roundtrip(pod, pod_addr(kube.site(to)), &datagram).expect("udp v4"),
            datagram
        );
    }

    for i in [A, B] {
        let id = kube.spec(i).cluster_id();
        let other = kube.spec(1 - i).cluster_id();
        let active = kube.active_gateway(i).expect("an active gateway");
        let active_node = kube.spec(i).candidate(active).node_name();

        // The controller's local copy lists both candidates, the active one first,
        // and the other cluster arrives as a labelled mirror.
        let local = local_endpoints(&kube, i);
        let own = local
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(id.as_str()))
            .expect("the local copy of our own ClusterEndpoint");
        assert_eq!(label(own, LOCAL_LABEL), Some("true"));
        let nodes: Vec<&str> = own
            .spec
            .gateways
            .iter()
            .map(|g| g.node_name.as_str())
            .collect();
        assert_eq!(nodes.len(), CANDIDATES, "{nodes:?}");
        assert_eq!(
            nodes[0], active_node,
            "the active gateway comes first: {nodes:?}"
        );
        let mirror = local
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(other.as_str()))
            .expect("the other cluster's mirror");
        assert_eq!(label(mirror, MIRRORED_LABEL), Some("true"));

        // The active gateway reports its connection, with an RTT, in its Gateway status.
        let what =
            format!("{id}'s Gateway {active_node} to report connected to {other} with an RTT");
        let status = kube
            .wait_for(&what, WAIT, |k| {
                let gw = gateways(k, i)
                    .into_iter()
                    .find(|g| g.metadata.name.as_deref() == Some(active_node.as_str()))
                    .ok_or("no Gateway object")?;
                let status = gw.status.ok_or("no status")?;
                let conn = status
                    .connections
                    .iter()
                    .find(|c| c.cluster_id == other)
                    .ok_or_else(|| format!("no connection entry: {status:?}"))?;
                // Byte counters are not asserted: they ride along with the write that
                // connected, which may come before the first data packet, and a steady
                // tunnel writes nothing more (the steady-state check below).
                match (conn.state, &conn.rtt_avg, &conn.last_handshake) {
                    (ConnectionState::Connected, Some(_), Some(_)) => Ok(status.clone()),
                    _ => Err(format!("{conn:?}")),
                }
            })
            .unwrap_or_else(|e| fail(e));
        assert_eq!(status.role, Some(GatewayRole::Active), "{status:?}");
        eprintln!("{id} {active_node}: {:?}", status.connections);
        let passive_node = kube.spec(i).candidate(1 - active).node_name();
        let what = format!("{id}'s Gateway {passive_node} to report role passive");
        kube.wait_for(&what, WAIT, |k| {
            let gw = gateways(k, i)
                .into_iter()
                .find(|g| g.metadata.name.as_deref() == Some(passive_node.as_str()))
                .ok_or("no Gateway object")?;
            match gw.status.as_ref().and_then(|s| s.role) {
                Some(GatewayRole::Passive) => Ok(()),
                other => Err(format!("role {other:?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    }

    // Steady state: about five probe rounds go by, and the Gateway statuses are not
    // rewritten each second (only meaningful changes are written).
    for i in [A, B] {
        kube.cluster_api(i).reset_counters();
    }
    let probes = |k: &KubeWorld, i: usize| -> Result<f64, String> {
        let peer = k.spec(1 - i).cluster_id();
        k.active_gateway_metric(
            i,
            "causeway_peer_tx_packets_total",
            &[("remote_cluster", &peer)],
        )
    };
    let start = [A, B].map(|i| probes(&kube, i).expect("tx packets"));
    kube.wait_for("five probe rounds to pass in steady state", WAIT, |k| {
        let now = [A, B].map(|i| probes(k, i));
        let done = now
            .iter()
            .zip(&start)
            .all(|(n, s)| n.as_ref().is_ok_and(|n| *n >= s + 5.0));
        match done {
            true => Ok(()),
            false => Err(format!("tx packets {now:?}, from {start:?}")),
        }
    })
    .unwrap_or_else(|e| fail(e));
    for i in [A, B] {
        let writes = kube.cluster_api(i).writes_of::<Gateway>().total();
        eprintln!(
            "{}: {writes} Gateway writes in five steady-state probe rounds",
            kube.spec(i).cluster_id()
        );
        assert!(
            writes <= 2,
            "{} Gateway writes in five quiet seconds in {}: a write storm",
            writes,
            kube.spec(i).cluster_id()
        );
    }

    // Each private key lives in its node's Secret and nowhere else: not in any
    // object of any API server, not in any log.
    let mut objects = serde_json::to_string(&broker_endpoints(&kube)).expect("json");
    for i in [A, B] {
        objects += &serde_json::to_string(&local_endpoints(&kube, i)).expect("json");
        objects += &serde_json::to_string(&gateways(&kube, i)).expect("json");
    }
    for i in [A, B] {
        let secrets: Api<Secret> = Api::namespaced(
            kube.cluster_client(i),
            &causeway_crds::names::key_namespace(CLUSTER_NAMESPACE),
        );
        for k in 0..CANDIDATES {
            let node = kube.spec(i).candidate(k).node_name();
            let secret = kube
                .block_on(secrets.get(&gateway_key_secret(&node)))
                .unwrap_or_else(|e| panic!("the key Secret of {node}: {e}"));
            let key = secret
                .data
                .as_ref()
                .and_then(|d| d.get(PRIVATE_KEY_FIELD))
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
                .expect("a privateKey field");
            let key = causeway_wire::keys::parse_key(&key)
                .unwrap_or_else(|e| panic!("{node}'s key Secret: {e}"));
            assert_no_key(
                objects.as_bytes(),
                &key,
                &format!("an object ({node}'s key)"),
            );
            for c in [
                Component::Controller(i),
                Component::Gateway(i, 0),
                Component::Gateway(i, 1),
                Component::RouteAgent(i),
            ] {
                assert_no_key(
                    &kube.full_log_bytes(c),
                    &key,
                    &format!("the log of {c} ({node}'s key)"),
                );
            }
        }
    }
}

#[test]
fn the_data_plane_outlives_the_broker_the_api_server_and_the_controller() {
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let _echo = echo(kube.site(B), pod_addr(kube.site(B)));
    wait_reachable(&mut kube, A, B);
    let stream = Stream::start(&kube.site(A).pod, pod_addr(kube.site(B))).expect("stream");
    let n = wait_stream(&mut kube, &stream, 0, 50, "the A->B stream to carry data");
    let writes = netlink_writes(&kube);
    let routes: Vec<Vec<String>> = [A, B].map(|i| all_routes(&kube, i)).to_vec();

    // The broker goes away: controllers cannot sync, the tunnels carry on.
    kube.broker().stop();
    let controller_a = Component::Controller(A);
    let log_before = count(&kube.full_log(controller_a), "failed");
    kube.wait_for(
        "site-a's controller to notice the broker is gone",
        WAIT,
        |k| match count(&k.full_log(controller_a), "failed") > log_before {
            true => Ok(()),
            false => Err("no failure logged yet".to_string()),
        },
    )
    .unwrap_or_else(|e| fail(e));
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        200,
        "the stream to carry on without the broker",
    );

    // Then site A's own API server and its controller go too. The outage outlasts the
    // gateway Lease, so what keeps the restarted controller's order is the active
    // gateway's status saying so: wait until it does, as it would long before an outage.
    let active_a = kube
        .spec(A)
        .candidate(kube.active_gateway(A).expect("active gateway"))
        .node_name();
    kube.wait_for(
        "site-a's active gateway to report role active in its Gateway status",
        WAIT,
        |k| {
            let roles: Vec<(Option<String>, Option<GatewayRole>)> = gateways(k, A)
                .into_iter()
                .map(|g| (g.metadata.name, g.status.and_then(|s| s.role)))
                .collect();
            match roles.iter().any(|(n, r)| {
                n.as_deref() == Some(active_a.as_str()) && *r == Some(GatewayRole::Active)
            }) {
                true => Ok(()),
                false => Err(format!("roles {roles:?}, active {active_a}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    let gateway_a = Component::Gateway(A, kube.active_gateway(A).expect("active gateway"));
    let agent_a = Component::RouteAgent(A);
    let marks: Vec<usize> = [gateway_a, agent_a]
        .iter()
        .map(|&c| count(&kube.full_log(c), "WARN"))
        .collect();
    kube.cluster_api(A).stop();
    kube.kill_controller(A).expect("kill site-a's controller");
    kube.wait_for(
        "site-a's gateway and route agent to notice their API server is gone",
        WAIT,
        |k| {
            let now: Vec<usize> = [gateway_a, agent_a]
                .iter()
                .map(|&c| count(&k.full_log(c), "WARN"))
                .collect();
            match now.iter().zip(&marks).all(|(n, m)| n > m) {
                true => Ok(()),
                false => Err(format!("warnings {now:?}, before {marks:?}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    // Longer than a gateway Lease: the active gateway must not step down for
    // want of an API server to renew it with.
    let outage = Instant::now();
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        300,
        "the stream to carry on without site-a's API server",
    );
    kube.wait_for(
        "a gateway Lease period to pass in the outage",
        WAIT,
        |_| match outage.elapsed() > Duration::from_secs(5) {
            true => Ok(()),
            false => Err(format!("{:?} so far", outage.elapsed())),
        },
    )
    .unwrap_or_else(|e| fail(e));
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        50,
        "the stream to carry on after a Lease period",
    );
    assert_eq!(netlink_writes(&kube), writes, "the outage changed routes");

    // Everything returns: nothing flaps.
    let passes = count(&kube.full_log(controller_a), "first sync pass");
    kube.broker().restart().expect("restart the broker");
    kube.cluster_api(A)
        .restart()
        .expect("restart site-a's API server");
    let returned = Timestamp::now();
    kube.start_controller(A).expect("start site-a's controller");
    kube.wait_for(
        "site-a's restarted controller to complete a pass",
        WAIT,
        |k| match count(&k.full_log(controller_a), "first sync pass") > passes {
            true => Ok(()),
            false => Err("no pass yet".to_string()),
        },
    )
    .unwrap_or_else(|e| fail(e));
    // The active gateway renews its Lease once the API server is back, and keeps it.
    let leases: Api<Lease> = Api::namespaced(kube.cluster_client(A), CLUSTER_NAMESPACE);
    let lease_name = gateway_lease(&kube.spec(A).cluster_id());
    kube.wait_for(
        "site-a's gateway Lease to be renewed after the outage",
        WAIT,
        |k| {
            let lease = k
                .block_on(leases.get(&lease_name))
                .map_err(|e| e.to_string())?;
            let spec = lease.spec.ok_or("no spec")?;
            match spec.renew_time {
                Some(t) if t.0 > returned => Ok(()),
                other => Err(format!("renewed at {other:?}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    assert_eq!(
        kube.lease_holder(A),
        Some(active_a),
        "the outage moved the gateway Lease"
    );
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        100,
        "the stream to carry on after the return",
    );
    assert_eq!(netlink_writes(&kube), writes, "the return changed routes");
    assert_eq!([A, B].map(|i| all_routes(&kube, i)).to_vec(), routes);
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("the stream broke: {e}\n{}", kube.logs()));
    assert!(chunks >= n);
    eprintln!("A->B stream: {chunks} verified 16 KiB chunks across a broker, API server and controller outage; 0 route writes");
}

#[test]
fn restarting_a_controller_changes_no_route_and_no_object() {
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let writes = netlink_writes(&kube);
    kube.broker().reset_counters();
    for i in [A, B] {
        kube.cluster_api(i).reset_counters();
    }
    let controller_a = Component::Controller(A);
    let passes = count(&kube.full_log(controller_a), "sync pass");
    kube.restart_controller(A)
        .expect("restart site-a's controller");
    kube.wait_for(
        "site-a's restarted controller to complete its first pass",
        WAIT,
        |k| {
            let log = k.full_log(controller_a);
            match count(&log, "sync pass") > passes {
                true => Ok(log),
                false => Err("no pass yet".to_string()),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    let log = kube.full_log(controller_a);
    assert!(
        log.contains("first sync pass: nothing to change"),
        "the first pass after a restart wrote:\n{log}"
    );
    for (what, server) in [
        ("the broker", kube.broker()),
        ("site-a", kube.cluster_api(A)),
        ("site-b", kube.cluster_api(B)),
    ] {
        let n = server.writes_of::<ClusterEndpoint>().total();
        assert_eq!(
            n, 0,
            "ClusterEndpoint writes at {what} after a controller restart"
        );
    }
    assert_eq!(
        netlink_writes(&kube),
        writes,
        "a controller restart changed routes"
    );
}

#[test]
fn the_standby_candidate_takes_over_and_route_agents_follow() {
    let (mut kube, _echo) = two_sites_reachable();
    let old = kube.active_gateway(A).expect("an active gateway");
    let new = 1 - old;
    let new_ip = kube.spec(A).candidate(new).node_ip().to_string();

    let killed = Instant::now();
    kube.kill_gateway(A, old)
        .expect("kill site-a's active gateway");
    let what = "site-a's standby candidate to take the gateway Lease";
    wait_lease_moved_to(&mut kube, new, what).unwrap_or_else(|e| fail(e));
    wait_reachable(&mut kube, A, B);
    wait_reachable(&mut kube, B, A);
    let gap = killed.elapsed();
    // The worker's routes now lead to the new gateway node.
    let routes = causeway_routes(&kube.site(A).worker).expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.2.0.0/16") && r.contains(&format!("via {new_ip}"))),
        "the route agent still routes via the old gateway: {routes:?}"
    );
    eprintln!("failover by Lease expiry: traffic again after {gap:?} (issue #8 makes this fast)");

    // The dead candidate comes back as the standby.
    kube.start_gateway(A, old).expect("restart the old gateway");
    let node = kube.spec(A).candidate(old).node_name();
    kube.wait_for(
        "the returning candidate to report role passive",
        WAIT,
        |k| {
            let gw = gateways(k, A)
                .into_iter()
                .find(|g| g.metadata.name.as_deref() == Some(node.as_str()))
                .ok_or("no Gateway object")?;
            match gw.status.as_ref().and_then(|s| s.role) {
                Some(GatewayRole::Passive) => Ok(()),
                other => Err(format!("role {other:?}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    assert_eq!(
        kube.active_gateway(A),
        Some(new),
        "the returning candidate took over"
    );
    wait_reachable(&mut kube, A, B);
}

/// What an attacker sends in a gateway candidate's name to one destination: the
/// unauthenticated first version of the protocol, the current format with made-up tags,
/// and every genuine answer captured earlier on its way there (replayed, or with the
/// flag flipped to say `active`).
fn forged_answers(active: bool, captured: &[&Datagram]) -> Vec<Vec<u8>> {
    let mut random = [0u8; 48];
    rand_core::OsRng.fill_bytes(&mut random);
    let made_up = liveness::Reply {
        active,
        nonce: random[..16].try_into().expect("16 bytes"),
        tags: [
            random[16..32].try_into().expect("16 bytes"),
            random[32..].try_into().expect("16 bytes"),
        ],
    };
    let mut out = vec![
        [b"CWALIVE1\x02".as_slice(), &[u8::from(active)]].concat(),
        made_up.encode().to_vec(),
    ];
    for d in captured {
        if let Some(mut genuine) = liveness::Reply::decode(&d.payload) {
            genuine.active = active;
            out.push(genuine.encode().to_vec());
        }
    }
    out
}

/// A host on the cluster network (the worker's namespace) speaking in a gateway
/// candidate's name to every destination its genuine answers were captured going to.
struct Impersonator {
    sockets: Vec<SpoofedSocket>,
    captured: Vec<Datagram>,
}

impl Impersonator {
    fn new(kube: &KubeWorld, victim: [IpAddr; 2], captured: Vec<Datagram>) -> Impersonator {
        let sockets = victim
            .iter()
            .map(|ip| {
                let from = SocketAddr::new(*ip, ports::LIVENESS);
                SpoofedSocket::bind(&kube.site(A).worker, from)
                    .unwrap_or_else(|e| panic!("a socket in {from}'s name: {e}"))
            })
            .collect();
        Impersonator { sockets, captured }
    }

    /// Sends [`forged_answers`] every 20 ms until `stop` is set or `limit` passes;
    /// returns the datagrams sent.
    fn run(&self, active: bool, stop: &AtomicBool, limit: Duration) -> usize {
        let mut destinations: Vec<SocketAddr> = self.captured.iter().map(|d| d.to).collect();
        destinations.sort();
        destinations.dedup();
        let until = Instant::now() + limit;
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            for to in &destinations {
                let theirs: Vec<&Datagram> = self.captured.iter().filter(|d| d.to == *to).collect();
                let socket = &self.sockets[usize::from(to.is_ipv6())];
                for payload in forged_answers(active, &theirs) {
                    socket
                        .send_to(&payload, *to)
                        .unwrap_or_else(|e| panic!("send to {to}: {e}"));
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    }
}

#[test]
fn forged_and_replayed_liveness_answers_neither_force_nor_block_a_failover() {
    let (mut kube, _echo) = two_sites_reachable();
    let old = kube.active_gateway(A).expect("an active gateway");
    let new = 1 - old;
    let old_spec = kube.spec(A).candidate(old);
    let old_ips: [IpAddr; 2] = [old_spec.node_ip().into(), old_spec.node_ip6().into()];
    let new_ip = kube.spec(A).candidate(new).node_ip().to_string();

    // A network attacker records the active candidate's genuine answers: to the standby
    // (both families) and to the worker's route agent.
    let sniffer = Sniffer::udp(kube.candidate_ns(A, old), ports::LIVENESS).expect("sniffer");
    let answers = |seen: Vec<Datagram>| -> Vec<Datagram> {
        seen.into_iter()
            .filter(|d| old_ips.contains(&d.from.ip()) && d.from.port() == ports::LIVENESS)
            .collect()
    };
    kube.wait_for(
        "40 genuine answers from the active candidate",
        WAIT,
        |_| match answers(sniffer.datagrams()).len() {
            n if n >= 40 => Ok(()),
            n => Err(format!("{n} captured")),
        },
    )
    .unwrap_or_else(|e| fail(e));
    let captured = answers(
        sniffer
            .stop()
            .expect("the capture")
            .iter()
            .filter_map(Packet::datagram)
            .collect(),
    );
    let destinations: std::collections::BTreeSet<SocketAddr> =
        captured.iter().map(|d| d.to).collect();
    assert!(
        destinations.len() >= 3,
        "answers to the standby's two addresses and the route agent: {destinations:?}"
    );

    // Forcing: for 3 s, the live active candidate "steps down" in forged answers.
    let holder = kube.lease_holder(A);
    let standby = Component::Gateway(A, new);
    let log_before = kube.full_log(standby).len();
    let attacker = Impersonator::new(&kube, old_ips, captured);
    let stop = AtomicBool::new(false);
    let sent = attacker.run(false, &stop, Duration::from_secs(3));
    let standby_log = kube.full_log(standby);
    let took_over = standby_log[log_before..]
        .lines()
        .filter(|l| l.contains("gateway Lease"))
        .collect::<Vec<_>>();
    eprintln!("forcing: {sent} forged answers sent; standby lines about the Lease: {took_over:?}");
    assert_eq!(kube.lease_holder(A), holder, "a forged failover");
    assert!(took_over.is_empty(), "the standby acted: {took_over:?}");
    assert_eq!(kube.active_gateway(A), Some(old));
    wait_reachable(&mut kube, A, B);

    // Blocking: the active candidate dies, and its answers ("active") keep coming, forged
    // and replayed, until the standby has taken over.
    let killed = Instant::now();
    kube.kill_gateway(A, old)
        .expect("kill site-a's active gateway");
    let (took, sent) = std::thread::scope(|scope| {
        let attacker = scope.spawn(|| attacker.run(true, &stop, WAIT));
        let what = "site-a's standby to take the Lease despite forged answers";
        let took = wait_lease_moved_to(&mut kube, new, what).map(|()| killed.elapsed());
        stop.store(true, Ordering::Relaxed);
        (took, attacker.join().expect("the attacker thread"))
    });
    let took = took.unwrap_or_else(|e| fail(e));
    eprintln!("blocking: {sent} forged answers sent; the standby took over after {took:?}");
    wait_reachable(&mut kube, A, B);
    wait_reachable(&mut kube, B, A);
    let routes = causeway_routes(&kube.site(A).worker).expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.2.0.0/16") && r.contains(&format!("via {new_ip}"))),
        "the route agent still routes via the dead gateway: {routes:?}"
    );
}

#[test]
fn a_gateway_whose_datapath_stopped_hands_over_to_the_standby_while_it_still_runs() {
    let (mut kube, _echo) = two_sites_reachable();
    let old = kube.active_gateway(A).expect("an active gateway");
    let new = 1 - old;
    let old_gateway = Component::Gateway(A, old);

    // The tunnel interface goes away under the running gateway (a mistaken `ip link del`,
    // a driver reset): its datapath stops, while the process and its Lease renewals go on.
    let stopped = Instant::now();
    kube.candidate_ns(A, old)
        .ip(["link", "del", "causeway0"])
        .expect("delete the active gateway's tunnel interface");
    let what = "site-a's standby to take the Lease from a gateway with a stopped datapath";
    wait_lease_moved_to(&mut kube, new, what).unwrap_or_else(|e| fail(e));
    wait_reachable(&mut kube, A, B);
    wait_reachable(&mut kube, B, A);
    eprintln!(
        "traffic again {:?} after the datapath stopped",
        stopped.elapsed()
    );
    let still = kube
        .process(old_gateway)
        .expect("the old gateway's process")
        .try_status()
        .expect("its state");
    assert!(
        still.is_none(),
        "a crash, not a stopped datapath: {still:?}"
    );
    let log = kube.full_log(old_gateway);
    assert!(
        log.contains("the datapath stopped: no longer answering as the active gateway"),
        "{log}"
    );
}

#[test]
fn a_compromised_candidate_writes_only_its_own_gateway_and_key() {
    let (mut kube, _echo) = two_sites_reachable();
    let listed = |k: &KubeWorld| -> Vec<String> {
        broker_endpoints(k)
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some("site-a"))
            .map(|o| o.spec.gateways.into_iter().map(|g| g.node_name).collect())
            .unwrap_or_default()
    };
    let genuine = listed(&kube);
    assert_eq!(genuine.len(), CANDIDATES, "{genuine:?}");

    // site-a's active candidate node is taken over. With its gateway's own token (bound to
    // its pod, as the kubelet's is), the attacker tries to write Gateways for site-a under
    // a worker's name and a made-up one, to rewrite the other candidate's key and endpoint,
    // and to plant the key a future candidate would adopt; with a token bound to no pod,
    // even its own Gateway. The chart's admission policy refuses each; its own Gateway it
    // may still write.
    let active = kube.active_gateway(A).expect("an active gateway");
    let own = kube.spec(A).candidate(active).node_name();
    let other = kube.spec(A).candidate(1 - active).node_name();
    let worker = kube.spec(A).worker_node_name();
    let rogue = [worker.clone(), "site-a-gw-rogue".to_owned()];
    let rogue_gateway = |name: &str, n: u8| {
        Gateway::new(
            name,
            causeway_crds::GatewaySpec {
                cluster_id: "site-a".into(),
                endpoint: causeway_crds::GatewayEndpoint {
                    node_name: name.to_owned(),
                    public_endpoint: format!("198.18.0.{n}:51820"),
                    public_key: causeway_wire::keys::format_key(&[n; 32]),
                    private_ip: Some(format!("198.19.0.{n}")),
                    private_ips: vec![format!("198.19.0.{n}")],
                    health_check_ip: None,
                },
            },
        )
    };
    let code = |r: Result<(), kube::Error>| match r {
        Ok(()) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("not an API answer: {e}"),
    };
    let key_namespace = causeway_crds::names::key_namespace(CLUSTER_NAMESPACE);
    let attempts: Vec<(String, u16)> = in_namespace(
        kube.candidate_ns(A, active),
        &kube.candidate_kubeconfig_path(A, active),
        |client| {
            let (rogue, own, other) = (rogue.clone(), own.clone(), other.clone());
            let key_namespace = key_namespace.clone();
            async move {
                let api: Api<Gateway> = Api::namespaced(client.clone(), CLUSTER_NAMESPACE);
                let pp = kube::api::PostParams::default();
                let mut out = Vec::new();
                // Each valid on its own (a key and addresses of its own), so nothing
                // but the check of who it claims to be stands in the way.
                for (name, n) in rogue.into_iter().zip([66u8, 67]) {
                    let r = api.create(&pp, &rogue_gateway(&name, n)).await.map(drop);
                    out.push((format!("create Gateway {name}"), code(r)));
                }
                let mut theirs = api.get(&other).await.expect("read the other Gateway");
                theirs.spec.endpoint.public_key = causeway_wire::keys::format_key(&[68; 32]);
                theirs.spec.endpoint.public_endpoint = "198.18.0.68:51820".into();
                let r = api.replace(&other, &pp, &theirs).await.map(drop);
                out.push((
                    format!("rewrite Gateway {other}'s key and endpoint"),
                    code(r),
                ));
                let passive = serde_json::json!({"status": {"role": "active"}});
                let r = api
                    .patch_status(
                        &other,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&passive),
                    )
                    .await
                    .map(drop);
                out.push((format!("patch Gateway {other}'s status"), code(r)));
                let planted: Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": gateway_key_secret("site-a-gw-extra")},
                    "data": {PRIVATE_KEY_FIELD: "a2V5"}
                }))
                .expect("a Secret");
                let secrets: Api<Secret> = Api::namespaced(client, &key_namespace);
                let r = secrets.create(&pp, &planted).await.map(drop);
                out.push(("plant site-a-gw-extra's key Secret".into(), code(r)));
                let mine = api.get(&own).await.expect("read its own Gateway");
                let r = api.replace(&own, &pp, &mine).await.map(drop);
                out.push((format!("rewrite its own Gateway {own}"), code(r)));
                out
            }
        },
    );
    let unbound: u16 = in_namespace(
        kube.candidate_ns(A, active),
        kube.gateway_kubeconfig_path(A),
        |client| {
            let own = own.clone();
            async move {
                let api: Api<Gateway> = Api::namespaced(client, CLUSTER_NAMESPACE);
                let mine = api.get(&own).await.expect("read the Gateway");
                code(
                    api.replace(&own, &kube::api::PostParams::default(), &mine)
                        .await
                        .map(drop),
                )
            }
        },
    );
    eprintln!(
        "a compromised candidate's writes: {attempts:?}; with a token bound to no pod: {unbound}"
    );
    let (own_write, refused) = attempts.split_last().expect("attempts");
    assert_eq!(own_write.1, 200, "{own_write:?}");
    for (what, status) in refused {
        assert_eq!(*status, 403, "{what}: refused by admission");
    }
    assert_eq!(
        unbound, 403,
        "a gateway token bound to no pod writes nothing"
    );
    let admin: Api<Gateway> = Api::namespaced(kube.cluster_client(A), CLUSTER_NAMESPACE);
    let theirs = kube.block_on(admin.get(&other)).expect("the other Gateway");
    assert_ne!(
        theirs.spec.endpoint.public_key,
        causeway_wire::keys::format_key(&[68; 32]),
        "the other candidate's key was rewritten"
    );

    // Defence in depth: Gateways that got past admission anyway (a cluster without the
    // policy, an admin's mistake) are still not published under another node's name.
    for (name, n) in rogue.iter().zip([66u8, 67]) {
        kube.block_on(admin.create(&kube::api::PostParams::default(), &rogue_gateway(name, n)))
            .unwrap_or_else(|e| panic!("create Gateway {name} as the admin: {e}"));
    }
    let controller = Component::Controller(A);
    let what = "site-a's controller to judge the new Gateway objects";
    kube.wait_for(what, WAIT, |k| {
        let log = k.full_log(controller);
        let judged = rogue
            .iter()
            .all(|n| log.contains(&format!("Gateway {n:?} is not named after a Node")));
        let published = listed(k);
        match published.iter().any(|n| rogue.contains(n)) || judged {
            true => Ok(published),
            false => Err(format!("broker lists {published:?}; no refusal logged yet")),
        }
    })
    .unwrap_or_else(|e| fail(e));

    // The operator adds a genuine candidate (a labelled node, its Gateway): the pass that
    // publishes it judges the rogue objects too, so what the broker then lists is what
    // that judgement published.
    let extra = "site-a-gw-extra";
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": extra, "labels": {GATEWAY_NODE_LABEL: "true"}},
    }))
    .expect("a Node");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(kube.cluster_client(A));
    kube.block_on(nodes.create(&kube::api::PostParams::default(), &node))
        .expect("create the new candidate's Node");
    let gateway = Gateway::new(
        extra,
        causeway_crds::GatewaySpec {
            cluster_id: "site-a".into(),
            endpoint: causeway_crds::GatewayEndpoint {
                node_name: extra.into(),
                public_endpoint: "198.18.0.77:51820".into(),
                public_key: causeway_wire::keys::format_key(&[77; 32]),
                private_ip: Some("198.19.0.77".into()),
                private_ips: vec!["198.19.0.77".into()],
                health_check_ip: None,
            },
        },
    );
    let api: Api<Gateway> = Api::namespaced(kube.cluster_client(A), CLUSTER_NAMESPACE);
    kube.block_on(api.create(&kube::api::PostParams::default(), &gateway))
        .expect("create the new candidate's Gateway");
    let published = kube
        .wait_for("the broker to list the new candidate", WAIT, |k| {
            let published = listed(k);
            match published.iter().any(|n| n == extra) {
                true => Ok(published),
                false => Err(format!("broker lists {published:?}")),
            }
        })
        .unwrap_or_else(|e| fail(e));
    let mut want = genuine.clone();
    want.push(extra.to_owned());
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(published),
        sorted(want.clone()),
        "the broker lists a rogue gateway"
    );
    let local: Vec<String> = local_endpoints(&kube, A)
        .into_iter()
        .filter(|o| o.metadata.name.as_deref() == Some("site-a"))
        .flat_map(|o| o.spec.gateways.into_iter().map(|g| g.node_name))
        .collect();
    assert_eq!(
        sorted(local),
        sorted(want),
        "site-a's own copy lists a rogue gateway"
    );
    wait_reachable(&mut kube, B, A);
}

#[test]
fn three_clusters_join_and_an_overlapping_cidr_is_refused_without_harm() {
    let mut kube = KubeWorld::start(3).unwrap_or_else(|e| fail(e));
    let _echo = [A, B, C].map(|i| echo(kube.site(i), pod_addr(kube.site(i))));
    for (from, to) in [(A, B), (A, C), (B, C), (C, A)] {
        wait_reachable(&mut kube, from, to);
    }
    let stream = Stream::start(&kube.site(A).pod, pod_addr(kube.site(B))).expect("stream");
    let n = wait_stream(&mut kube, &stream, 0, 50, "the A->B stream to carry data");
    let mirror_of_c = |k: &KubeWorld, i: usize| {
        local_endpoints(k, i)
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some("site-c"))
            .map(|o| o.spec)
    };
    let before = [A, B].map(|i| mirror_of_c(&kube, i).expect("a mirror of site-c"));

    // Site C's controller now claims site A's pod CIDR as well.
    let mut cidrs = kube.spec(C).pod_cidrs();
    cidrs.push("10.1.0.0/16".parse().expect("literal"));
    kube.set_pod_cidrs(C, cidrs);
    kube.restart_controller(C)
        .expect("restart site-c's controller");
    let condition = kube
        .wait_for(
            "site-c's broker object to be refused with a Valid=False condition",
            WAIT,
            |k| {
                let own = broker_endpoints(k)
                    .into_iter()
                    .find(|o| o.metadata.name.as_deref() == Some("site-c"))
                    .ok_or("no site-c at the broker")?;
                let valid = own
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter())
                    .find(|c| c.type_ == "Valid")
                    .cloned()
                    .ok_or("no Valid condition")?;
                match valid.status.as_str() {
                    "False" => Ok(valid),
                    _ => Err(format!("{valid:?}")),
                }
            },
        )
        .unwrap_or_else(|e| fail(e));
    assert!(
        condition.message.contains("10.1.0.0/16") && condition.message.contains("site-a"),
        "the condition names the CIDR and the cluster it overlaps: {condition:?}"
    );
    eprintln!(
        "site-c refused: {}: {}",
        condition.reason, condition.message
    );
    // A and B keep the last good version of C, and A<->B never noticed.
    let n = wait_stream(&mut kube, &stream, n, 200, "the A->B stream to carry on");
    for (slot, i) in [A, B].into_iter().enumerate() {
        assert_eq!(
            mirror_of_c(&kube, i).as_ref(),
            Some(&before[slot]),
            "site-{i}'s mirror of site-c changed"
        );
    }
    wait_reachable(&mut kube, B, A);
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("the A->B stream broke: {e}\n{}", kube.logs()));
    assert!(chunks >= n);
}

/// Trust (docs/security.md): site-b's controller starts claiming a public range,
/// 8.8.8.0/24, as pod CIDR. Its own cluster takes it (its operator's say), but site-a
/// accepts only private ranges from others: its controller refuses the object (logging
/// the fix) and keeps site-b's last good mirror, so no gateway or route agent of site-a
/// routes anything of 8.8.8.0/24 into the tunnel, and A->B traffic carries on.
#[test]
fn a_cluster_claiming_a_range_this_cluster_does_not_accept_gets_nothing_routed() {
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let _echo = echo(kube.site(B), pod_addr(kube.site(B)));
    wait_reachable(&mut kube, A, B);
    let stream = Stream::start(&kube.site(A).pod, pod_addr(kube.site(B))).expect("stream");
    let n = wait_stream(&mut kube, &stream, 0, 50, "the A->B stream to carry data");
    let mirror_of_b = |k: &KubeWorld| {
        local_endpoints(k, A)
            .into_iter()
            .find(|o| o.metadata.name.as_deref() == Some("site-b"))
            .map(|o| o.spec)
    };
    let before = mirror_of_b(&kube).expect("site-a's mirror of site-b");

    let public: ipnet::IpNet = "8.8.8.0/24".parse().expect("literal");
    let mut cidrs = kube.spec(B).pod_cidrs();
    cidrs.push(public);
    kube.set_pod_cidrs(B, cidrs);
    kube.restart_controller(B)
        .expect("restart site-b's controller");
    kube.wait_for(
        "site-b's broker object to claim 8.8.8.0/24 and site-a's controller to refuse it",
        WAIT,
        |k| {
            let claimed = broker_endpoints(k)
                .into_iter()
                .any(|o| o.spec.pod_cidrs.contains(&public.to_string()));
            let log = k.full_log(Component::Controller(A));
            match (
                claimed,
                log.contains("CIDRNotAllowed") || log.contains("outside the ranges"),
            ) {
                (true, true) => Ok(()),
                (claimed, refused) => Err(format!("claimed {claimed}, refused {refused}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    let n = wait_stream(&mut kube, &stream, n, 200, "the A->B stream to carry on");
    assert_eq!(
        mirror_of_b(&kube).as_ref(),
        Some(&before),
        "site-a keeps site-b's last good object"
    );
    let routes = all_routes(&kube, A);
    assert!(
        routes.iter().all(|r| !r.contains("8.8.8.0/24")),
        "a public range is routed into the tunnel in site-a: {routes:#?}"
    );

    // The refusal is on site-a's own object, where `kubectl causeway diagnose` (as an
    // on-call person) finds it, with the range and the fix.
    kube.wait_for(
        "site-a's own ClusterEndpoint to list site-b as refused",
        WAIT,
        |k| {
            let listed: Vec<causeway_crds::RemoteRefusal> = local_endpoints(k, A)
                .into_iter()
                .filter(|o| o.metadata.name.as_deref() == Some("site-a"))
                .flat_map(|o| o.status.map(|s| s.refused).unwrap_or_default())
                .collect();
            match listed.iter().any(|r| {
                r.cluster_id == "site-b"
                    && r.reason == "CIDRNotAllowed"
                    && r.message.contains("8.8.8.0/24")
            }) {
                true => Ok(()),
                false => Err(format!("listed {listed:?}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    let scratch = causeway_tests::harness::ScratchDir::new("cw-refused").expect("scratch dir");
    let operator = scratch.path().join("operator.kubeconfig");
    kube.write_operator_kubeconfig(&operator)
        .unwrap_or_else(|e| fail(e));
    let out = causeway_tests::harness::control_plane::kubectl_causeway()
        .unwrap_or_else(|e| fail(e))
        .arg("--kubeconfig")
        .arg(&operator)
        .args(["--context", "site-a", "diagnose", "--no-dns", "-o", "json"])
        .output()
        .expect("run kubectl causeway diagnose");
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "diagnose -o json ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let refused = findings
        .iter()
        .find(|f| f["class"] == "remote-refused")
        .unwrap_or_else(|| panic!("no remote-refused finding in {findings:#?}"));
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("site-b") && message.contains("8.8.8.0/24"),
        "{refused:#?}"
    );
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("the A->B stream broke: {e}\n{}", kube.logs()));
    assert!(chunks >= n);
}

/// Every request of every Causeway identity across a clusterset's life (start, an export
/// and its readiness change and withdrawal, `kubectl causeway` as a viewer, a key rotation,
/// a gateway failover, a member evicted at the broker and back, a controller restart),
/// recorded by the real API servers' audit logs, against the chart's rules: everything each
/// component does is granted, nothing was refused, and nothing granted goes unused.
#[test]
fn every_request_is_granted_by_the_chart_and_every_grant_is_used() {
    use causeway_crds::{ServiceExport, ServiceImport};
    use causeway_tests::harness::control_plane::audit::check_rbac;
    use causeway_tests::harness::control_plane::kubectl_causeway;
    use causeway_tests::harness::control_plane::workload::Backend;
    use causeway_tests::harness::kube::{CONTROLLER_DNS_PORT, READY_TIMEOUT};
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use kube::api::{DeleteParams, PostParams};

    let mut kube = KubeWorld::new(2).unwrap_or_else(|e| fail(e));
    // Site B's controller takes its pod CIDRs from its Nodes (the chart's default).
    kube.set_pod_cidrs(B, Vec::new());
    for i in [A, B] {
        let listen = format!("0.0.0.0:{CONTROLLER_DNS_PORT}");
        kube.set_extra_args(Component::Controller(i), &["--dns-listen", &listen]);
        kube.start_site(i).unwrap_or_else(|e| fail(e));
    }
    kube.wait_ready(READY_TIMEOUT).unwrap_or_else(|e| fail(e));
    let pp = PostParams::default();

    // An export from A, imported in B; then its port changes.
    for i in [A, B] {
        let namespaces: Api<Namespace> = Api::all(kube.cluster_client(i));
        let prod: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "prod"}}))
                .expect("a Namespace");
        kube.block_on(namespaces.create(&pp, &prod))
            .expect("create prod");
    }
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "echo", "namespace": "prod"},
        "spec": {"clusterIP": "None", "selector": {"app": "echo"},
                 "ports": [{"name": "echo", "port": ECHO_PORT, "protocol": "TCP"}]}
    }))
    .expect("a Service");
    kube.block_on(Api::<Service>::namespaced(kube.cluster_client(A), "prod").create(&pp, &service))
        .expect("create the Service");
    kube.back_service_with_pod(A, "prod", "echo", Some("echo-0"))
        .unwrap_or_else(|e| fail(e));
    let exports: Api<ServiceExport> = Api::namespaced(kube.cluster_client(A), "prod");
    kube.block_on(exports.create(&pp, &ServiceExport::new("echo", Default::default())))
        .expect("create the ServiceExport");
    let imports_b: Api<ServiceImport> = Api::namespaced(kube.cluster_client(B), "prod");
    kube.wait_for("site-b to import prod/echo", WAIT, |k| {
        k.block_on(imports_b.get("echo")).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| fail(e));
    let services_a: Api<Service> = Api::namespaced(kube.cluster_client(A), "prod");
    let moved_port = serde_json::json!({"spec": {"ports": [{"name": "echo", "port": ECHO_PORT + 1, "protocol": "TCP"}]}});
    kube.block_on(services_a.patch(
        "echo",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&moved_port),
    ))
    .expect("change the Service's port");
    kube.wait_for("site-b's import to carry the new port", WAIT, |k| {
        let import = k
            .block_on(imports_b.get("echo"))
            .map_err(|e| e.to_string())?;
        match import.spec.ports.first().map(|p| p.port) {
            Some(port) if port == i32::from(ECHO_PORT + 1) => Ok(()),
            other => Err(format!("port {other:?}")),
        }
    })
    .unwrap_or_else(|e| fail(e));

    // An operator looks, as a viewer: with the plugin, and by hand as the README shows.
    let scratch = causeway_tests::harness::ScratchDir::new("cw-rbac").expect("scratch dir");
    let operator = scratch.path().join("operator.kubeconfig");
    kube.write_operator_kubeconfig(&operator)
        .unwrap_or_else(|e| fail(e));
    for args in [
        &["show", "clusters"][..],
        &["diagnose"],
        &["verify"],
        &["benchmark", "site-a", "site-b", "--seconds", "1"],
    ] {
        let out = kubectl_causeway()
            .unwrap_or_else(|e| fail(e))
            .arg("--kubeconfig")
            .arg(&operator)
            .args(["--context", "site-a", "--context", "site-b"])
            .args(args)
            .output()
            .expect("run kubectl causeway");
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "kubectl causeway {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let by_hand: [&[&str]; 7] = [
        &["-n", "causeway", "get", "clusterendpoint", "site-b"],
        &["-n", "causeway", "get", "gateway", "site-a-gw"],
        &["-n", "causeway", "get", "lease", "causeway-gateway-site-a"],
        &["-n", "causeway", "get", "pod", "causeway-gateway-site-a-gw"],
        &["-n", "prod", "get", "serviceexport", "echo"],
        &["-n", "prod", "get", "serviceimport", "echo"],
        &["-n", "prod", "get", "endpointslice", "echo-site-a-ipv4"],
    ];
    let kubectl = causeway_tests::harness::control_plane::binaries()
        .unwrap_or_else(|e| fail(e))
        .kubectl;
    for args in by_hand {
        let out = std::process::Command::new(&kubectl)
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(&operator)
            .args(["--context", "site-a"])
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} as a viewer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The pod stops being ready, then the export is withdrawn.
    let not_ready = Backend {
        ip: kube.spec(A).pod_ip().into(),
        hostname: Some("echo-0".into()),
        ready: false,
    };
    kube.set_service_backends(A, "prod", "echo", &[not_ready])
        .unwrap_or_else(|e| fail(e));
    let slices_b: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(kube.cluster_client(B), "prod");
    kube.wait_for("site-b to see echo-0 not ready", WAIT, |k| {
        let slices = k
            .block_on(slices_b.list(
                &ListParams::default().labels("multicluster.kubernetes.io/service-name=echo"),
            ))
            .map_err(|e| e.to_string())?;
        let ready: Vec<Option<bool>> = slices
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
            .collect();
        match ready.as_slice() {
            [Some(false)] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap_or_else(|e| fail(e));
    kube.block_on(exports.delete("echo", &DeleteParams::default()))
        .expect("delete the ServiceExport");
    kube.wait_for("site-b to drop prod/echo", WAIT, |k| {
        match k
            .block_on(imports_b.get_opt("echo"))
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still imported".into()),
        }
    })
    .unwrap_or_else(|e| fail(e));

    // A gateway key rotates; A's active gateway dies and the standby takes over.
    let active = kube.active_gateway(A).expect("an active gateway");
    let rotated = kube
        .rotate_gateway_key(A, 1 - active)
        .unwrap_or_else(|e| fail(e));
    let endpoints_b: Api<ClusterEndpoint> =
        Api::namespaced(kube.cluster_client(B), CLUSTER_NAMESPACE);
    kube.wait_for(
        "site-b's mirror of site-a to carry the rotated key",
        WAIT,
        |k| {
            let mirror = k
                .block_on(endpoints_b.get("site-a"))
                .map_err(|e| e.to_string())?;
            match mirror.spec.gateways.iter().any(|g| g.public_key == rotated) {
                true => Ok(()),
                false => Err("old key".into()),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    kube.kill_gateway(A, active).unwrap_or_else(|e| fail(e));
    kube.wait_for("site-a's standby to take the Lease", WAIT, |k| {
        match k.try_active_gateway(A) {
            Ok(Some(k2)) if k2 != active => Ok(()),
            other => Err(format!("active {other:?}")),
        }
    })
    .unwrap_or_else(|e| fail(e));
    kube.start_gateway(A, active).unwrap_or_else(|e| fail(e));

    // The broker's admin evicts site-b (its controller stopped first, so it cannot publish
    // itself again at once): site-a drops its mirror; site-b, back, publishes itself again.
    let at_broker: Api<ClusterEndpoint> = Api::namespaced(kube.broker_client(), BROKER_NAMESPACE);
    let endpoints_a: Api<ClusterEndpoint> =
        Api::namespaced(kube.cluster_client(A), CLUSTER_NAMESPACE);
    kube.stop_controller(B).unwrap_or_else(|e| fail(e));
    kube.block_on(at_broker.delete("site-b", &DeleteParams::default()))
        .expect("delete site-b at the broker");
    kube.wait_for("site-a to drop its mirror of site-b", WAIT, |k| {
        match k
            .block_on(endpoints_a.get_opt("site-b"))
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still mirrored".into()),
        }
    })
    .unwrap_or_else(|e| fail(e));
    kube.start_controller(B).unwrap_or_else(|e| fail(e));
    kube.wait_for(
        "site-b to be published again and mirrored in site-a",
        WAIT,
        |k| {
            let published = k
                .block_on(at_broker.get_opt("site-b"))
                .map_err(|e| e.to_string())?;
            let mirror = k
                .block_on(endpoints_a.get_opt("site-b"))
                .map_err(|e| e.to_string())?;
            match (published, mirror) {
                (Some(_), Some(_)) => Ok(()),
                other => Err(format!(
                    "published/mirrored: {:?}",
                    (other.0.is_some(), other.1.is_some())
                )),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));

    // A controller restarts.
    kube.restart_controller(A).unwrap_or_else(|e| fail(e));
    kube.wait_converged(READY_TIMEOUT)
        .unwrap_or_else(|e| fail(e));

    let mut requests = kube.broker().requests();
    for i in [A, B] {
        requests.extend(kube.cluster_api(i).requests());
    }
    let report = check_rbac(&requests);
    eprintln!("requests checked: {:?}", report.checked);
    let list = |rs: &[causeway_tests::harness::control_plane::audit::Request]| {
        rs.iter().map(|r| format!("  {r}\n")).collect::<String>()
    };
    assert!(
        report.refused.is_empty(),
        "requests refused (403):\n{}",
        list(&report.refused)
    );
    assert!(
        report.ungranted.is_empty(),
        "requests the chart's rules do not grant:\n{}",
        list(&report.ungranted)
    );
    assert!(
        report.unused.is_empty(),
        "granted but never used:\n  {}",
        report.unused.join("\n  ")
    );
}

/// The example, on a real API server: a cluster whose gateway Role is the previous
/// release's (Leases get, create and update, not patch) never gets an active gateway, and the
/// gateway says exactly why and how to fix it; granting the rule fixes it without a restart.
#[test]
fn a_gateway_refused_by_stale_rbac_names_the_rule_and_the_role_that_grants_it() {
    let mut kube = KubeWorld::new(2).unwrap_or_else(|e| fail(e));
    kube.allow_refusals();
    let api = kube.cluster_api(A);
    let role = api
        .kubectl_ok(
            &[
                "-n",
                CLUSTER_NAMESPACE,
                "get",
                "role",
                "causeway-gateway",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap_or_else(|e| fail(e));
    let mut role: serde_json::Value = serde_json::from_str(&role).expect("a Role as JSON");
    let current = role.clone();
    let rules = role["rules"].as_array_mut().expect("rules");
    let leases = rules
        .iter_mut()
        .find(|r| r["resources"][0] == "leases")
        .expect("a rule for Leases");
    leases["verbs"] = serde_json::json!(["get", "create", "update"]);
    api.kubectl_ok(&["replace", "-f", "-"], Some(&role.to_string()))
        .unwrap_or_else(|e| fail(e));

    kube.start_controller(A).unwrap_or_else(|e| fail(e));
    kube.start_gateway(A, 0).unwrap_or_else(|e| fail(e));
    let gateway = Component::Gateway(A, 0);
    let says = "forbidden: a gateway candidate may not patch leases.coordination.k8s.io \
                \"causeway-gateway-site-a\" in namespace \"causeway\"; the chart's Role \
                causeway-gateway (namespace causeway) grants it, so the RBAC installed is not \
                this release's: upgrade the release with this version's chart (helm upgrade)";
    kube.wait_for("the gateway to explain the refusal", WAIT, |k| {
        match k.full_log(gateway).contains(says) {
            true => Ok(()),
            false => Err("not said yet".into()),
        }
    })
    .unwrap_or_else(|e| fail(e));
    assert_eq!(
        kube.active_gateway(A),
        None,
        "a gateway became active without the right"
    );
    // Once a minute per refusal, not once per retry.
    assert_eq!(
        count(&kube.full_log(gateway), "causeway_k8s::client: forbidden: "),
        1,
        "{}",
        kube.full_log(gateway)
    );

    // The operator upgrades the chart: the gateway becomes active, no restart needed.
    let mut fixed = current;
    fixed["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("resourceVersion");
    kube.cluster_api(A)
        .kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=helm",
                "-f",
                "-",
            ],
            Some(&fixed.to_string()),
        )
        .unwrap_or_else(|e| fail(e));
    kube.wait_active_gateway(A, WAIT)
        .unwrap_or_else(|e| fail(e));
}

/// What Causeway's components wrote (anything but their Leases) since `server`'s counters
/// were reset.
fn component_writes(server: &causeway_tests::harness::control_plane::KubeApiServer) -> Vec<String> {
    use causeway_tests::harness::control_plane::audit::identity_of;
    server
        .writes()
        .0
        .into_iter()
        .filter(|r| identity_of(&r.user).is_some() && r.resource != "leases")
        .map(|r| r.to_string())
        .collect()
}

/// Site A's kube-apiserver is killed (SIGKILL) and started again under a stream: the tunnel
/// carries it throughout, every watch of site A's components is opened again, and the
/// controllers and gateways resync without writing; then, over 60 s of steady state, no
/// Causeway component writes anything but its Lease, at any of the three API servers.
#[test]
fn a_killed_api_server_comes_back_to_resumed_watches_and_no_writes() {
    use std::collections::BTreeSet;
    let mut kube = KubeWorld::start(2).unwrap_or_else(|e| fail(e));
    let _echo = echo(kube.site(B), pod_addr(kube.site(B)));
    wait_reachable(&mut kube, A, B);
    let stream = Stream::start(&kube.site(A).pod, pod_addr(kube.site(B))).expect("stream");
    let n = wait_stream(&mut kube, &stream, 0, 50, "the A->B stream to carry data");
    let routes = netlink_writes(&kube);

    // What site A's components watch, as its API server saw it.
    let watched = |k: &KubeWorld| -> BTreeSet<(String, String)> {
        k.cluster_api(A)
            .requests()
            .into_iter()
            .filter(|r| r.verb == "watch" && r.code == 200)
            .map(|r| (r.user, r.resource))
            .collect()
    };
    let before = watched(&kube);
    assert!(
        before
            .iter()
            .any(|(u, r)| u.ends_with("causeway-gateway") && r == "clusterendpoints")
            && before
                .iter()
                .any(|(u, _)| u.ends_with("causeway-controller")),
        "{before:?}"
    );

    kube.cluster_api(A).kill();
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        100,
        "the stream to carry on without site-a's API server",
    );
    kube.cluster_api(A).reset_counters();
    let killed = Instant::now();
    kube.cluster_api(A).restart().unwrap_or_else(|e| fail(e));
    eprintln!("site-a's API server was down {:?}", killed.elapsed());
    kube.wait_for(
        "every watch of site-a's components to be opened again",
        WAIT,
        |k| {
            let again = watched(k);
            let missing: Vec<_> = before.difference(&again).collect();
            match missing.is_empty() {
                true => Ok(()),
                false => Err(format!("not yet watched again: {missing:?}")),
            }
        },
    )
    .unwrap_or_else(|e| fail(e));
    let n = wait_stream(
        &mut kube,
        &stream,
        n,
        100,
        "the stream to carry on after the restart",
    );
    let resync = component_writes(kube.cluster_api(A));
    assert!(
        resync.is_empty(),
        "writes after the restart:\n{}",
        resync.join("\n")
    );

    // Steady state: a minute with no write but Lease renewals anywhere.
    kube.broker().reset_counters();
    for i in [A, B] {
        kube.cluster_api(i).reset_counters();
    }
    let quiet = Instant::now();
    let n = kube
        .wait_for(
            "60 s of steady state to pass",
            Duration::from_secs(90),
            |_| match quiet.elapsed() >= Duration::from_secs(60) {
                true => Ok(stream.chunks()),
                false if stream.ended() => Err("the stream ended".to_string()),
                false => Err(format!("{:?} so far", quiet.elapsed())),
            },
        )
        .unwrap_or_else(|e| fail(e))
        .max(n);
    let mut writes = Vec::new();
    let mut renewals = 0;
    for (what, server) in [
        ("the broker", kube.broker()),
        ("site-a", kube.cluster_api(A)),
        ("site-b", kube.cluster_api(B)),
    ] {
        writes.extend(
            component_writes(server)
                .into_iter()
                .map(|w| format!("{what}: {w}")),
        );
        renewals += server
            .writes()
            .0
            .iter()
            .filter(|r| r.resource == "leases")
            .count();
    }
    eprintln!(
        "60 s of steady state: {} writes by Causeway's components, {renewals} Lease renewals",
        writes.len()
    );
    assert!(
        writes.is_empty(),
        "writes in steady state:\n{}",
        writes.join("\n")
    );
    assert_eq!(netlink_writes(&kube), routes, "the restart changed routes");
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("the stream broke: {e}\n{}", kube.logs()));
    assert!(chunks >= n);
}
