//! End-to-end tests of the standalone data plane: real gateways, route agents, TUN
//! interfaces, routes and WireGuard handshakes between sites in network namespaces.
//!
//! One binary for every slow test, so they share one build and one harness.
// Raw sockets and signals to processes the tests started.
#![allow(unsafe_code)]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use causeway_datapath::offload::{checksum_add, fold};
use causeway_datapath::REMOTE_KEY_GRACE;
use causeway_tests::fixtures::{echo, pod_addr, pod_addr6, wait_reachable};
use causeway_tests::harness::leak::assert_no_key;
use causeway_tests::harness::mesh::{causeway_routes, metric, Mesh};
use causeway_tests::harness::postgres::Postgres;
use causeway_tests::harness::traffic::{pattern, tcp_roundtrip, udp_roundtrip, Echo, Stream};
use causeway_tests::harness::{wait_until_ok, HarnessError, Netns, ScratchDir};
use causeway_wire::keys::parse_key;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

#[path = "e2e/sizes.rs"]
mod sizes;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const WAIT: Duration = Duration::from_secs(10);

fn wait_metric_at_least(mesh: &Mesh, i: usize, name: &str, labels: &[(&str, &str)], min: f64) {
    let what = format!(
        "{name}{labels:?} >= {min} on {}",
        mesh.site(i).spec.cluster_id()
    );
    wait_until_ok(&what, WAIT, || {
        let text = mesh.gateway_metrics(i).map_err(|e| e.to_string())?;
        match metric(&text, name, labels) {
            Some(v) if v >= min => Ok(v),
            other => Err(format!("value {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
}

#[test]
fn pods_reach_each_other_over_tcp_and_udp_both_ways_v4_and_v6() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let servers: Vec<Echo> = [A, B]
        .iter()
        .flat_map(|&i| {
            [
                echo(mesh.site(i), pod_addr(mesh.site(i))),
                echo(mesh.site(i), pod_addr6(mesh.site(i))),
            ]
        })
        .collect();
    for (from, to) in [(A, B), (B, A)] {
        wait_reachable(&mesh, from, pod_addr(mesh.site(to)), WAIT);
        let pod = &mesh.site(from).pod;
        for len in [1, 1400, 64 * 1024] {
            let payload = pattern(len, 7);
            let back = tcp_roundtrip(pod, pod_addr(mesh.site(to)), &payload).expect("tcp v4");
            assert_eq!(back, payload, "TCP v4 {len} bytes {from}->{to}");
            let back = tcp_roundtrip(pod, pod_addr6(mesh.site(to)), &payload).expect("tcp v6");
            assert_eq!(back, payload, "TCP v6 {len} bytes {from}->{to}");
        }
        let datagram = pattern(1200, 3);
        assert_eq!(
            udp_roundtrip(pod, pod_addr(mesh.site(to)), &datagram).expect("udp v4"),
            datagram
        );
        assert_eq!(
            udp_roundtrip(pod, pod_addr6(mesh.site(to)), &datagram).expect("udp v6"),
            datagram
        );
    }
    // The traffic went through the tunnel and the gateways counted it.
    for (i, peer) in [(A, "site-b"), (B, "site-a")] {
        let rx = mesh.gateway_metric(
            i,
            "causeway_peer_rx_bytes_total",
            &[("remote_cluster", peer)],
        );
        let tx = mesh.gateway_metric(
            i,
            "causeway_peer_tx_bytes_total",
            &[("remote_cluster", peer)],
        );
        assert!(
            rx > 130_000.0 && tx > 130_000.0,
            "site {i}: rx {rx} tx {tx}"
        );
    }
    // Health probes cross the tunnel between the gateways' own tunnel addresses.
    for (i, peer) in [(A, "site-b"), (B, "site-a")] {
        wait_metric_at_least(
            &mesh,
            i,
            "causeway_peer_rtt_seconds",
            &[("remote_cluster", peer), ("stat", "avg")],
            1e-7,
        );
        let max = mesh.gateway_metric(
            i,
            "causeway_peer_rtt_seconds",
            &[("remote_cluster", peer), ("stat", "max")],
        );
        assert!(max < 1.0, "probe RTT max {max} s");
    }
    // No private key in any log line or metric, at the verbosity operators run with.
    for i in [A, B] {
        let key = mesh.private_key(i);
        for j in [A, B] {
            assert_no_key(
                &mesh.full_logs(j),
                &key,
                &format!("site {j}'s logs (site {i}'s key)"),
            );
            assert_no_key(
                mesh.gateway_metrics(j).unwrap().as_bytes(),
                &key,
                &format!("site {j}'s /metrics (site {i}'s key)"),
            );
        }
    }
    // A healthy clusterset drops nothing (the kernel's link-local chatter on the TUN is not traffic).
    for i in [A, B] {
        for reason in [
            "no_peer",
            "source_not_allowed",
            "unknown_peer",
            "invalid",
            "malformed",
            "destination_not_allowed",
            "send_failed",
        ] {
            let n = mesh.gateway_metric(i, "causeway_datapath_drops_total", &[("reason", reason)]);
            assert_eq!(n, 0.0, "site {i} dropped {n} packets for {reason}");
        }
    }
    // Each gateway holds its own address inside the tunnel, which the other site's pods
    // can ping (its host services they cannot reach: `hostile` tests that).
    let gw_b = IpAddr::from(mesh.site(B).spec.gateway_tunnel_ip());
    wait_until_ok(
        "site-a's pod to ping site-b's gateway tunnel address",
        WAIT,
        || {
            mesh.site(A)
                .pod
                .ping(gw_b, 1, Duration::from_secs(1))
                .map_err(|e| e.to_string())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    // The underlay carries only WireGuard: the pod CIDRs are routed to the TUN interface.
    let routes = causeway_routes(&mesh.site(A).gateway).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.2.0.0/16 dev causeway0") && r.contains("mtu 1440")),
        "{routes:?}"
    );
    let routes = causeway_routes(&mesh.site(A).worker).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.2.0.0/16 via 198.19.1.1")),
        "{routes:?}"
    );
    drop(servers);
}

#[test]
fn tunnels_run_over_an_ipv6_underlay() {
    let mesh = Mesh::start_v6_underlay(2).expect("two sites over IPv6");
    let _servers = [A, B].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    let _servers6 = [A, B].map(|i| echo(mesh.site(i), pod_addr6(mesh.site(i))));
    for (from, to) in [(A, B), (B, A)] {
        wait_reachable(&mesh, from, pod_addr(mesh.site(to)), WAIT);
        let payload = pattern(64 * 1024, 9);
        let back = tcp_roundtrip(&mesh.site(from).pod, pod_addr6(mesh.site(to)), &payload)
            .expect("tcp v6 over v6");
        assert_eq!(back, payload);
    }
    let text = mesh.gateway_metrics(A).unwrap();
    assert!(text.contains("endpoint=\"[fd18::2]:51820\""), "{text}");
    // IPv6 underlay costs 20 more bytes of header than IPv4: the tunnel MTU says so.
    let routes = causeway_routes(&mesh.site(A).gateway).unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with("10.2.0.0/16 dev causeway0") && r.contains("mtu 1420")),
        "{routes:?}"
    );
}

#[test]
fn third_site_joins_at_runtime_without_breaking_a_stream_and_leaves_cleanly() {
    let mut mesh = Mesh::new(3).expect("three sites");
    for i in [A, B] {
        mesh.write_endpoints(i, &[A, B]).unwrap();
    }
    for i in [A, B] {
        mesh.start_site(i).unwrap();
    }
    let _servers = [A, B, C].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    let stream = Stream::start(&mesh.site(A).pod, pod_addr(mesh.site(B))).expect("stream connect");
    wait_until_ok("stream to carry data", WAIT, || match stream.chunks() {
        0 => Err("no chunk yet".to_string()),
        n => Ok(n),
    })
    .unwrap();

    // Site C joins: its own file lists all three, then A's and B's files gain it.
    mesh.write_endpoints(C, &[A, B, C]).unwrap();
    mesh.start_site(C).unwrap();
    for i in [A, B] {
        mesh.write_endpoints(i, &[A, B, C]).unwrap();
    }
    let joined_at = stream.chunks();
    mesh.wait_handshakes(&[A, B, C], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    wait_reachable(&mesh, A, pod_addr(mesh.site(C)), WAIT);
    wait_reachable(&mesh, C, pod_addr(mesh.site(B)), WAIT);
    wait_until_ok("stream to carry on after the join", WAIT, || {
        match stream.chunks() {
            n if n > joined_at + 10 => Ok(n),
            n => Err(format!("{n} chunks")),
        }
    })
    .unwrap();
    let handshakes_b = |mesh: &Mesh| {
        mesh.gateway_metric(
            A,
            "causeway_peer_handshakes_total",
            &[("remote_cluster", "site-b")],
        )
    };
    let sessions_with_b = handshakes_b(&mesh);

    // Site C's key changes in A's file: A starts C's session over, and only C's.
    let rekeyed = mesh.endpoints_text(&[A, B, C]).replace(
        mesh.public_key(C),
        "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
    );
    mesh.write_endpoints_text(A, &rekeyed).unwrap();
    let rekeyed_at = stream.chunks();
    wait_until_ok(
        "stream to carry on after C's key changed",
        WAIT,
        || match stream.chunks() {
            n if n > rekeyed_at + 10 => Ok(n),
            n => Err(format!("{n} chunks")),
        },
    )
    .unwrap();
    // The key A now holds for C is one C cannot answer for: A's session with C's old key
    // may serve out its grace (a rotation's new key answers well within it), then must be
    // gone even though nothing replaced it - a key taken out stops working - while C
    // still answers B.
    let probe = pattern(100, 3);
    wait_until_ok(
        "site-a to stop reaching site-c once C's old key's grace ran out",
        WAIT + REMOTE_KEY_GRACE,
        || match tcp_roundtrip(&mesh.site(A).pod, pod_addr(mesh.site(C)), &probe) {
            Ok(_) => Err("site-a still reaches site-c through the old key".to_string()),
            Err(e) => Ok(e),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    wait_reachable(&mesh, B, pod_addr(mesh.site(C)), WAIT);

    // Site C leaves A's file: A's gateway and worker withdraw its routes, and only those.
    mesh.write_endpoints(A, &[A, B]).unwrap();
    for ns in [&mesh.site(A).gateway, &mesh.site(A).worker] {
        wait_until_ok("site-c routes withdrawn on site-a", WAIT, || {
            let routes = causeway_routes(ns).map_err(|e| e.to_string())?;
            match routes.iter().any(|r| {
                r.starts_with("10.3.") || r.starts_with("10.103.") || r.starts_with("fd00:3:")
            }) {
                false => Ok(routes),
                true => Err(format!("{routes:?}")),
            }
        })
        .unwrap();
        let routes = causeway_routes(ns).unwrap();
        assert!(
            routes.iter().any(|r| r.starts_with("10.2.0.0/16")),
            "site-b route lost: {routes:?}"
        );
    }
    let text = mesh.gateway_metrics(A).unwrap();
    assert!(
        metric(&text, "causeway_peer_info", &[("remote_cluster", "site-c")]).is_none(),
        "{text}"
    );
    let removed_at = stream.chunks();
    wait_until_ok("stream to carry on after C left", WAIT, || {
        match stream.chunks() {
            n if n > removed_at + 10 => Ok(n),
            n => Err(format!("{n} chunks")),
        }
    })
    .unwrap();
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("A->B stream broke while C joined, changed key or left: {e}"));
    eprintln!(
        "A->B stream: {chunks} verified 16 KiB chunks, unbroken across C's join, rekey and removal"
    );
    // Adding, changing and removing C never restarted A's session with B.
    assert_eq!(
        handshakes_b(&mesh),
        sessions_with_b,
        "A's session with B was disturbed"
    );
}

/// An IPv4/UDP packet with a chosen source, for spoofing tests.
fn raw_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = !fold(checksum_add(&p[..20], 0));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&4321u16.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn send_raw(ns: &Netns, packet: &[u8], dst: Ipv4Addr) {
    ns.run(|| {
        // SAFETY: plain socket calls on a descriptor we own and close.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            };
            let n = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, packet.len() as isize, "raw send: {err}");
        }
    });
}

#[test]
fn a_spoofed_inner_source_is_dropped_and_counted() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let port = 7777;
    let target = mesh.site(A).spec.pod_ip();
    let listener = mesh
        .site(A)
        .pod
        .run(|| UdpSocket::bind((IpAddr::from(target), port)))
        .expect("listener in site-a pod");
    listener
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _echo = echo(mesh.site(A), pod_addr(mesh.site(A)));
    wait_reachable(&mesh, B, pod_addr(mesh.site(A)), WAIT);

    // Site B claims to be a pod of site C (10.3.1.10), which B does not own. B is the
    // attacker here, so its own nodes let the spoofed source out: A must stop it.
    for ns in [&mesh.site(B).worker, &mesh.site(B).gateway] {
        ns.disable_reverse_path_filter()
            .expect("site-b's nodes let spoofed sources out");
    }
    let before = mesh.gateway_metric(
        A,
        "causeway_datapath_drops_total",
        &[("reason", "source_not_allowed")],
    );
    let spoofed = raw_udp_packet(Ipv4Addr::new(10, 3, 1, 10), target, port, b"spoofed");
    send_raw(&mesh.site(B).pod, &spoofed, target);
    wait_metric_at_least(
        &mesh,
        A,
        "causeway_datapath_drops_total",
        &[("reason", "source_not_allowed")],
        before + 1.0,
    );

    // A genuine packet sent afterwards arrives, and it is the first thing that does.
    let genuine = raw_udp_packet(mesh.site(B).spec.pod_ip(), target, port, b"genuine");
    send_raw(&mesh.site(B).pod, &genuine, target);
    let mut buf = [0u8; 64];
    let (n, from) = listener
        .recv_from(&mut buf)
        .expect("genuine packet through the tunnel");
    assert_eq!(&buf[..n], b"genuine", "from {from}");
    assert_eq!(from.ip(), IpAddr::from(mesh.site(B).spec.pod_ip()));
}

#[test]
fn packets_under_an_unknown_key_are_ignored() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let a_public = parse_key(mesh.public_key(A)).unwrap();
    let a_endpoint = mesh.site(A).spec.public_endpoint(51820);
    let before = mesh.gateway_metric(
        A,
        "causeway_datapath_drops_total",
        &[("reason", "unknown_peer")],
    );

    // A stranger with its own key, sending from site B's underlay host.
    let socket = mesh
        .site(B)
        .gateway
        .run(|| UdpSocket::bind("198.18.0.2:0"))
        .unwrap();
    let stranger = StaticSecret::random_from_rng(rand_core::OsRng);
    let mut tunn = Tunn::new(stranger, PublicKey::from(a_public), None, None, 7, None);
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(&mut buf, false) else {
        panic!("no handshake initiation");
    };
    socket.send_to(init, a_endpoint).unwrap();
    // And a data packet for a session index nobody holds.
    let mut data = vec![0u8; 64];
    data[0] = 4;
    data[4..8].copy_from_slice(&0x00ab_cd00u32.to_le_bytes());
    socket.send_to(&data, a_endpoint).unwrap();
    wait_metric_at_least(
        &mesh,
        A,
        "causeway_datapath_drops_total",
        &[("reason", "unknown_peer")],
        before + 2.0,
    );

    socket.set_nonblocking(true).unwrap();
    match socket.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("site-a answered a stranger: {other:?}"),
    }
    // The real peer is undisturbed.
    let _echo = echo(mesh.site(B), pod_addr(mesh.site(B)));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
}

#[test]
fn an_invalid_endpoints_file_changes_nothing_and_a_no_op_reload_writes_nothing() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let _echo = echo(mesh.site(B), pod_addr(mesh.site(B)));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    let routes = causeway_routes(&mesh.site(A).gateway).unwrap();
    let writes = mesh.gateway_metric(A, "causeway_netlink_writes_total", &[]);
    let good = mesh.endpoints_text(&[A, B]);

    // Site B's service CIDR now overlaps site A's pods: the whole file is refused.
    let bad = good.replace("\"10.102.0.0/16\"", "\"10.1.0.0/24\"");
    assert_ne!(bad, good);
    mesh.write_endpoints_text(A, &bad).unwrap();
    wait_metric_at_least(&mesh, A, "causeway_config_errors_total", &[], 1.0);
    let log = mesh.logs();
    assert!(
        log.contains("overlaps") && log.contains("keeping the last good configuration"),
        "{log}"
    );
    assert_eq!(causeway_routes(&mesh.site(A).gateway).unwrap(), routes);
    assert_eq!(
        mesh.gateway_metric(A, "causeway_netlink_writes_total", &[]),
        writes
    );
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);

    // The same clusterset written differently: applied, and nothing to write.
    let reloads = mesh.gateway_metric(A, "causeway_config_reloads_total", &[]);
    mesh.write_endpoints_text(A, &format!("# re-generated\n{good}"))
        .unwrap();
    wait_metric_at_least(
        &mesh,
        A,
        "causeway_config_reloads_total",
        &[],
        reloads + 1.0,
    );
    assert_eq!(
        mesh.gateway_metric(A, "causeway_netlink_writes_total", &[]),
        writes
    );
    assert_eq!(causeway_routes(&mesh.site(A).gateway).unwrap(), routes);
}

#[test]
fn sighup_reloads_the_endpoints_file() {
    // Polling off: only SIGHUP can make the gateway read the file again.
    let mut mesh =
        Mesh::start_with_env(2, &[("CAUSEWAY_FILE_POLL_MS", "0")]).expect("two-site mesh");
    let reloads = mesh.gateway_metric(A, "causeway_config_reloads_total", &[]);
    mesh.write_endpoints_text(A, &format!("# edited\n{}", mesh.endpoints_text(&[A, B])))
        .unwrap();
    assert_eq!(
        mesh.gateway_metric(A, "causeway_config_reloads_total", &[]),
        reloads
    );
    let pid = mesh.gateway(A).unwrap().pid();
    // SAFETY: signalling a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    wait_metric_at_least(
        &mesh,
        A,
        "causeway_config_reloads_total",
        &[],
        reloads + 1.0,
    );
}

#[test]
fn clean_shutdown_removes_everything_and_a_crashed_agent_is_adopted_on_restart() {
    let mut mesh = Mesh::start(2).expect("two-site mesh");
    let gw = &mesh.site(A).gateway;
    assert!(gw.ip(["link", "show", "causeway0"]).is_ok());
    assert!(!causeway_routes(gw).unwrap().is_empty());

    let status = mesh
        .take_gateway(A)
        .unwrap()
        .terminate_and_wait(WAIT)
        .unwrap();
    assert!(status.success(), "gateway exit: {status}");
    let gw = &mesh.site(A).gateway;
    // Only "does not exist" proves it gone; any other failure of `ip` proves nothing.
    match gw.ip(["link", "show", "causeway0"]) {
        Ok(link) => panic!("causeway0 left behind: {link}"),
        Err(e) => assert!(
            e.to_string().contains("does not exist"),
            "ip link show: {e}"
        ),
    }
    assert_eq!(causeway_routes(gw).unwrap(), Vec::<String>::new());

    // The route agent dies without cleaning up; its routes stay and keep working for the
    // restarted agent, which adopts them without a single write.
    let worker_routes = causeway_routes(&mesh.site(A).worker).unwrap();
    assert!(!worker_routes.is_empty());
    let mut agent = mesh.take_agent(A).unwrap();
    agent.kill9().unwrap();
    assert_eq!(
        causeway_routes(&mesh.site(A).worker).unwrap(),
        worker_routes
    );
    mesh.start_agent(A).unwrap();
    let text = wait_until_ok("restarted agent metrics", WAIT, || {
        mesh.agent_metrics(A).map_err(|e| e.to_string())
    })
    .unwrap();
    assert_eq!(
        metric(&text, "causeway_netlink_writes_total", &[]),
        Some(0.0),
        "{text}"
    );
    // The metric counts the routes that carry traffic, not the fail-closed ones under them.
    let carrying = worker_routes
        .iter()
        .filter(|r| !r.starts_with("unreachable"))
        .count();
    assert_eq!(carrying * 2, worker_routes.len(), "{worker_routes:?}");
    assert_eq!(metric(&text, "causeway_routes", &[]), Some(carrying as f64));
    assert_eq!(
        causeway_routes(&mesh.site(A).worker).unwrap(),
        worker_routes
    );

    // Killed again while site B leaves the file: the restarted agent cleans B's routes up.
    mesh.take_agent(A).unwrap().kill9().unwrap();
    mesh.write_endpoints(A, &[A]).unwrap();
    mesh.start_agent(A).unwrap();
    wait_until_ok(
        "the restarted agent to remove the departed site's routes",
        WAIT,
        || match causeway_routes(&mesh.site(A).worker).map_err(|e| e.to_string())? {
            routes if routes.is_empty() => Ok(()),
            routes => Err(format!("{routes:?}")),
        },
    )
    .unwrap();

    // A clean stop of the agent withdraws its routes (they do not vanish with an interface).
    mesh.write_endpoints(A, &[A, B]).unwrap();
    mesh.start_agent(A).unwrap();
    wait_until_ok("agent routes back", WAIT, || {
        match causeway_routes(&mesh.site(A).worker).map_err(|e| e.to_string())? {
            routes if routes.len() == worker_routes.len() => Ok(()),
            routes => Err(format!("{routes:?}")),
        }
    })
    .unwrap();
    let status = mesh
        .take_agent(A)
        .unwrap()
        .terminate_and_wait(WAIT)
        .unwrap();
    assert!(status.success(), "agent exit: {status}");
    assert_eq!(
        causeway_routes(&mesh.site(A).worker).unwrap(),
        Vec::<String>::new()
    );

    // A restarted gateway restores the tunnel.
    mesh.start_agent(A).unwrap();
    mesh.start_gateway(A).unwrap();
    let _echo = echo(mesh.site(B), pod_addr(mesh.site(B)));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
}

#[test]
fn postgres_replica_in_site_b_streams_from_the_primary_in_site_a() -> Result<(), HarnessError> {
    let mesh = Mesh::start(2)?;
    let scratch = ScratchDir::new("cw-pg-e2e")?;
    let primary_ip: IpAddr = mesh.site(A).spec.pod_ip().into();
    let primary = Postgres::start_primary(&mesh.site(A).pod, primary_ip, scratch.path())?;
    // The base backup and the WAL stream both cross the tunnel.
    let replica = Postgres::start_replica(
        &mesh.site(B).pod,
        mesh.site(B).spec.pod_ip().into(),
        &primary_ip.to_string(),
        scratch.path(),
    )?;
    primary.sql("CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric)")?;
    primary.sql(
        "INSERT INTO orders SELECT g, 'customer-' || g, g * 1.5 FROM generate_series(1, 5000) g",
    )?;
    primary.sql("UPDATE orders SET amount = amount + 1 WHERE id % 7 = 0")?;
    let lsn = primary.current_lsn()?;
    replica.wait_replayed(&lsn, Duration::from_secs(30))?;
    let (a, b) = (
        primary.table_checksum("orders")?,
        replica.table_checksum("orders")?,
    );
    assert_eq!(a, b, "table checksums differ between sites");
    assert_eq!(replica.sql("SELECT count(*) FROM orders")?, "5000");
    let rows = primary.replication_status()?;
    assert!(
        rows.iter()
            .any(|r| r.client_addr == Some(mesh.site(B).spec.pod_ip().into())
                && r.state == "streaming"),
        "replica not streaming from site-b's pod address: {rows:?}"
    );
    let rx = mesh.gateway_metric(
        B,
        "causeway_peer_rx_bytes_total",
        &[("remote_cluster", "site-a")],
    );
    assert!(
        rx > 1_000_000.0,
        "the base backup should have crossed the tunnel: {rx} bytes"
    );
    eprintln!("checksum {a} on both sites; {rx} bytes received through the tunnel by site-b");
    Ok(())
}
