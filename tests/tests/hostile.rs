//! Hostile networks and hostile peers, end to end: a slow lossy WAN, a rate-limited
//! link, NAT, a small underlay MTU, a handshake flood and replayed packets, all with
//! real gateways in network namespaces (see `causeway_tests::harness::wan`).
//!
//! One binary for these slow tests. Throughput figures are printed with `eprintln!`
//! (`cargo nextest run --no-capture` shows them); assertions use ratios and margins,
//! because the machines that run them are shared and noisy.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use causeway_tests::fixtures::{echo, pod_addr, wait_reachable};
use causeway_tests::harness::mesh::{required_metric, Mesh};
use causeway_tests::harness::netns::veth;
use causeway_tests::harness::postgres::Postgres;
use causeway_tests::harness::spoof::{Packet, Sniffer};
use causeway_tests::harness::topology::WAN_BRIDGE;
use causeway_tests::harness::traffic::{
    pattern, tcp_connect, tcp_roundtrip, udp_roundtrip, Echo, Stream,
};
use causeway_tests::harness::wan::{qdisc_sent_bytes, shape, Impairment, RouterOptions};
use causeway_tests::harness::{wait_until_ok, HarnessError, Netns, ScratchDir};
use causeway_wire::keys::parse_key;
use nix::sys::socket::{getsockopt, sockopt};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const A: usize = 0;
const B: usize = 1;
const WAIT: Duration = Duration::from_secs(10);
/// Seed of the relay's random impairments, so a failure can be replayed.
const SEED: u64 = 0x00ca_05e0_a7e5;

fn drops(mesh: &Mesh, i: usize, reason: &str) -> f64 {
    mesh.gateway_metric(i, "causeway_datapath_drops_total", &[("reason", reason)])
}

/// The endpoint site `i`'s gateway currently sends to for `peer` (its `causeway_peer_info`).
fn peer_endpoint(mesh: &Mesh, i: usize, peer: &str) -> Option<SocketAddr> {
    let text = mesh.gateway_metrics(i).ok()?;
    text.lines()
        .filter(|l| l.starts_with("causeway_peer_info{"))
        .filter(|l| l.contains(&format!("remote_cluster=\"{peer}\"")))
        .find_map(|l| {
            let rest = l.split("endpoint=\"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
}

/// Lets a measurement window of `window` pass, checking every 50 ms that what is measured
/// is still running (`alive`), so a broken stream fails at once instead of at the end.
fn measure(window: Duration, mut alive: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Err(e) = alive() {
            panic!("during the measurement window: {e}");
        }
        std::thread::sleep(Duration::from_millis(50).min(window.saturating_sub(start.elapsed())));
    }
}

fn mbit(bytes: u64, over: Duration) -> f64 {
    bytes as f64 * 8.0 / over.as_secs_f64() / 1e6
}

#[test]
fn postgres_replicates_intact_at_40ms_rtt_with_5_percent_loss() -> Result<(), HarnessError> {
    let mut mesh = Mesh::new(2)?;
    mesh.start_relay(SEED)?;
    let mesh = mesh.start_all()?;
    let relay = mesh.relay().expect("relay started");
    // Every datagram both ways: 20 ms each way (40 ms RTT), 5% lost, some jitter and
    // reordering, as a long lossy WAN path would.
    relay.set_all(Impairment {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
        loss: 0.05,
        reorder: 0.01,
        reorder_gap: Duration::from_millis(5),
        duplicate: 0.01,
    });
    let rtt = mesh
        .site(A)
        .pod
        .ping(
            mesh.site(B).spec.pod_ip().into(),
            20,
            Duration::from_secs(1),
        )
        .map_err(|e| HarnessError::Topology(format!("ping through the relay: {e}")))?;
    assert!(
        rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(200),
        "pod-to-pod RTT through the relay: {rtt:?}"
    );

    let scratch = ScratchDir::new("cw-pg-hostile")?;
    let primary_ip: IpAddr = mesh.site(A).spec.pod_ip().into();
    let primary = Postgres::start_primary(&mesh.site(A).pod, primary_ip, scratch.path())?;
    let started = Instant::now();
    // The base backup crosses the impaired WAN too.
    let replica = Postgres::start_replica(
        &mesh.site(B).pod,
        mesh.site(B).spec.pod_ip().into(),
        &primary_ip.to_string(),
        scratch.path(),
    )?;
    let backup_time = started.elapsed();
    let before = primary.current_lsn()?;
    let rows = 100_000;
    let started = Instant::now();
    primary.sql("CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric)")?;
    primary.sql(&format!(
        "INSERT INTO orders SELECT g, 'customer-' || g || repeat('x', 64), g * 1.5 FROM generate_series(1, {rows}) g"
    ))?;
    primary.sql("UPDATE orders SET amount = amount + 1 WHERE id % 7 = 0")?;
    let lsn = primary.current_lsn()?;
    replica.wait_replayed(&lsn, Duration::from_secs(120))?;
    let replication_time = started.elapsed();
    let wal_bytes: u64 = primary
        .sql(&format!(
            "SELECT pg_wal_lsn_diff('{lsn}', '{before}')::bigint"
        ))?
        .trim()
        .parse()
        .map_err(|e| HarnessError::Topology(format!("WAL byte count: {e}")))?;
    let (a, b) = (
        primary.table_checksum("orders")?,
        replica.table_checksum("orders")?,
    );
    assert_eq!(a, b, "table checksums differ between sites");
    assert_eq!(
        replica.sql("SELECT count(*) FROM orders")?,
        rows.to_string()
    );
    let counts = relay.counts();
    assert!(counts.lost > 0, "the relay lost nothing: {counts:?}");
    // Each gateway only ever saw its peer at the relay, never at its real address.
    assert_eq!(peer_endpoint(&mesh, A, "site-b"), Some(relay.endpoint(B)));
    assert_eq!(peer_endpoint(&mesh, B, "site-a"), Some(relay.endpoint(A)));
    // Loss-based and model-based congestion control fare very differently at 5% loss.
    let cc = mesh
        .site(A)
        .pod
        .exec_ok("sysctl", ["-n", "net.ipv4.tcp_congestion_control"])
        .unwrap_or_default();
    eprintln!(
        "WAN 40 ms RTT / 5% loss (TCP congestion control {}): ping RTT {rtt:.1?}; base backup \
         {backup_time:.1?}; {rows} rows \
         ({:.1} MiB of WAL) replicated in {replication_time:.1?} = {:.2} Mbit/s; checksum {a} on \
         both sites; relay {counts:?}",
        cc.trim(),
        wal_bytes as f64 / (1 << 20) as f64,
        mbit(wal_bytes, replication_time),
    );
    Ok(())
}

/// A TCP sink in `ns` counting the bytes it reads, until stopped or a bound is reached.
struct Sink {
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    const MAX_TIME: Duration = Duration::from_secs(60);

    fn start(ns: &Netns, addr: SocketAddr) -> Sink {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .expect("sink listener in pod");
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bytes), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let started = Instant::now();
            let mut buf = vec![0u8; 256 * 1024];
            while !s.load(Ordering::Relaxed) && started.elapsed() < Self::MAX_TIME {
                match conn.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Sink {
            bytes,
            stop,
            thread: Some(thread),
        }
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bulk TCP sender from `ns` to `to`, writing until stopped or [`Sink::MAX_TIME`].
fn bulk_sender(ns: &Netns, to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut conn = tcp_connect(ns, to).expect("bulk connection");
    std::thread::spawn(move || {
        let chunk = pattern(256 * 1024, 1);
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Sink::MAX_TIME {
            match conn.write(&chunk) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

#[test]
fn a_155_mbit_link_is_filled_to_at_least_90_percent() {
    const RATE_MBIT: u32 = 155;
    let mesh = Mesh::start(2).expect("two-site mesh");
    // The bottleneck: the WAN's port towards site B's gateway, with ~20 ms of queue.
    let wan_port = "wan-b";
    shape(mesh.world.wan(), wan_port, RATE_MBIT, 400_000).expect("tc tbf on the WAN link");
    let sink_addr = SocketAddr::new(mesh.site(B).spec.pod_ip().into(), 7100);
    let sink = Sink::start(&mesh.site(B).pod, sink_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = bulk_sender(&mesh.site(A).pod, sink_addr, Arc::clone(&stop));
    // Warm up: TCP reaches its steady state long before this much has crossed.
    wait_until_ok("the bulk stream to carry 8 MiB", WAIT, || {
        match sink.bytes() {
            n if n >= 8 << 20 => Ok(()),
            n => Err(format!("{n} bytes")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    // Three windows, the median counts: one window a neighbour's CPU spike spoils does
    // not decide, and two must be good. Goodput is what the receiving pod read, so
    // retransmits count against it; the link figure is what left the shaped port.
    let window = Duration::from_secs(4);
    let mut windows = Vec::new();
    for attempt in 1..=3 {
        let (t0, sink0) = (Instant::now(), sink.bytes());
        let wire0 = qdisc_sent_bytes(mesh.world.wan(), wan_port).unwrap();
        measure(window, || match sender.is_finished() {
            true => Err("the bulk sender stopped early".into()),
            false => Ok(()),
        });
        let (dt, sink1) = (t0.elapsed(), sink.bytes());
        let wire1 = qdisc_sent_bytes(mesh.world.wan(), wan_port).unwrap();
        let (link, goodput) = (mbit(wire1 - wire0, dt), mbit(sink1 - sink0, dt));
        eprintln!(
            "155 Mbit/s tbf link, window {attempt}: the tunnel's datagrams used {link:.1} Mbit/s \
             = {:.1}% of the link; TCP goodput read by the receiving pod {goodput:.1} Mbit/s \
             ({:.1}% of the link; the rest is WireGuard, UDP, IP and Ethernet headers) over \
             {dt:.1?}",
            link / f64::from(RATE_MBIT) * 100.0,
            goodput / f64::from(RATE_MBIT) * 100.0
        );
        windows.push((goodput, link));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    windows.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (goodput, link) = windows[1];
    // Headers take 7.5% of a 1514-byte frame carrying 1400 bytes of TCP payload, so 85%
    // goodput is the link at least 92% full of data the receiver kept.
    assert!(
        goodput >= 0.85 * f64::from(RATE_MBIT),
        "median goodput {goodput:.1} Mbit/s at the receiving pod, below 85% of the link"
    );
    let utilisation = link / f64::from(RATE_MBIT);
    assert!(
        utilisation >= 0.90,
        "in the median window the stream used only {:.1}% of the link",
        utilisation * 100.0
    );
}

/// Sends a numbered UDP probe from pod `from` to pod `to`'s echo server every 20 ms until
/// one sent after `since` comes back; how long after `since` that was.
fn udp_recovery(mesh: &Mesh, from: usize, to: usize, since: Instant, limit: Duration) -> Duration {
    let sock = mesh
        .site(from)
        .pod
        .run(|| UdpSocket::bind((IpAddr::from(mesh.site(from).spec.pod_ip()), 0)))
        .expect("probe socket in pod");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let target = pod_addr(mesh.site(to));
    let mut seq = 0u64;
    let mut buf = [0u8; 64];
    while since.elapsed() < limit {
        seq += 1;
        let _ = sock.send_to(&seq.to_be_bytes(), target);
        if let Ok((8, src)) = sock.recv_from(&mut buf) {
            if src == target {
                return since.elapsed();
            }
        }
    }
    panic!(
        "no UDP echo from {target} within {limit:?} ({seq} probes)\n{}",
        mesh.logs()
    );
}

#[test]
fn a_gateway_behind_nat_comes_up_without_an_open_port_and_survives_a_lost_mapping() {
    let mut mesh = Mesh::new(2).expect("two sites");
    mesh.put_behind_router(
        B,
        RouterOptions {
            nat: true,
            lan_mtu: 1500,
        },
    )
    .expect("site-b behind a NAT router");
    // Keepalives keep the mapping open and re-create it after it is lost.
    mesh.add_gateway_args(B, &["--persistent-keepalive", "1"]);
    let mesh = mesh.start_all().expect("tunnel up through the NAT");
    let router = mesh.router(B).expect("router");
    let ruleset = router.ns.exec_ok("nft", ["list", "ruleset"]).unwrap();
    assert!(
        !ruleset.contains("dnat") && ruleset.contains("masquerade"),
        "the router must forward no inbound port:\n{ruleset}"
    );
    let _echo = [A, B].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    wait_reachable(&mesh, B, pod_addr(mesh.site(A)), WAIT);
    // Site-a only knows the router's address, and found the mapping from site-b's packets.
    let learned = peer_endpoint(&mesh, A, "site-b").expect("site-a's endpoint for site-b");
    assert_eq!(learned.ip(), IpAddr::from(router.wan_ip), "{learned}");
    assert_eq!(
        peer_endpoint(&mesh, B, "site-a"),
        Some(mesh.gateway_endpoint(A))
    );
    // The router forgets every mapping while the tunnel is idle: site-a's packets now hit
    // a closed port until site-b's next keepalive opens a new mapping and site-a follows.
    let flushed = Instant::now();
    router.flush_conntrack().expect("flush conntrack");
    let idle_recovery = udp_recovery(&mesh, A, B, flushed, Duration::from_secs(10));
    let relearned = peer_endpoint(&mesh, A, "site-b").expect("endpoint after the flush");

    // And again under a running TCP stream, which must not break.
    let stream = Stream::start_with_timeout(
        &mesh.site(A).pod,
        pod_addr(mesh.site(B)),
        Duration::from_secs(8),
    )
    .expect("stream through the NAT");
    wait_until_ok("the stream to carry data", WAIT, || match stream.chunks() {
        n if n >= 10 => Ok(n),
        n => Err(format!("{n} chunks")),
    })
    .unwrap();
    let flushed = Instant::now();
    router.flush_conntrack().expect("flush conntrack");
    let busy_recovery = udp_recovery(&mesh, A, B, flushed, Duration::from_secs(10));
    let at = stream.chunks();
    wait_until_ok(
        "the stream to carry on after the flush",
        WAIT,
        || match stream.chunks() {
            n if n > at + 10 => Ok(n),
            n => Err(format!("{n} chunks")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    let chunks = stream
        .finish()
        .unwrap_or_else(|e| panic!("the stream broke across the lost NAT mapping: {e}"));
    eprintln!(
        "NAT: site-a learned site-b at {learned} (the file says {}); after a conntrack flush \
         traffic flowed again in {idle_recovery:.2?} on an idle tunnel (site-b's keepalive, now \
         via {relearned}) and in {busy_recovery:.2?} under a TCP stream, which carried {chunks} \
         verified chunks unbroken",
        mesh.advertised_endpoint(B)
    );
    for recovery in [idle_recovery, busy_recovery] {
        assert!(
            recovery < Duration::from_secs(5),
            "recovery took {recovery:?}"
        );
    }
}

/// A TCP connection from pod `from` to pod `to`'s echo server carrying `total` bytes both
/// ways, verified; the sender's effective MSS afterwards.
fn echo_transfer(mesh: &Mesh, from: usize, to: usize, total: usize) -> u32 {
    let mut conn = tcp_connect(&mesh.site(from).pod, pod_addr(mesh.site(to))).expect("connect");
    let mut back = vec![0u8; Stream::CHUNK];
    for n in 0..total.div_ceil(Stream::CHUNK) {
        let chunk = pattern(Stream::CHUNK, n as u8);
        conn.write_all(&chunk)
            .unwrap_or_else(|e| panic!("write chunk {n}: {e}\n{}", mesh.logs()));
        conn.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("read chunk {n} (blackhole?): {e}\n{}", mesh.logs()));
        assert!(back == chunk, "chunk {n} corrupted");
    }
    getsockopt(&conn, sockopt::TcpMaxSeg).expect("TCP_MAXSEG")
}

/// One counter of a group's lines (`Ip`, `Icmp`) of `/proc/net/snmp` inside `ns`; panics
/// if it cannot be read, so a missing counter never reads as "none happened".
fn snmp_stat(ns: &Netns, group: &str, name: &str) -> u64 {
    let text = ns
        .exec_ok("cat", ["/proc/net/snmp"])
        .unwrap_or_else(|e| panic!("read /proc/net/snmp in {}: {e}", ns.name()));
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    lines
        .next()
        .zip(lines.next())
        .and_then(|(names, values)| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {group}: {name} in /proc/net/snmp of {}:\n{text}",
                ns.name()
            )
        })
}

/// Site B sizes its own tunnel to its 1400-byte underlay, so what it sends is never
/// fragmented outside the tunnel; site A, which does not know B's underlay, sends
/// datagrams the router must fragment, and they still arrive intact (counted, not hidden).
#[test]
fn a_site_with_a_1400_byte_underlay_sends_unfragmented_and_receives_intact() {
    let mut mesh = Mesh::new(2).expect("two sites");
    mesh.put_behind_router(
        B,
        RouterOptions {
            nat: false,
            lan_mtu: 1400,
        },
    )
    .expect("site-b on a 1400-byte underlay");
    // Without timestamps the MSS is the whole segment payload, so the figure below is it.
    for i in [A, B] {
        mesh.site(i)
            .pod
            .exec_ok("sysctl", ["-q", "-w", "net.ipv4.tcp_timestamps=0"])
            .unwrap();
    }
    let mesh = mesh.start_all().expect("two sites up");
    let routes = mesh
        .site(B)
        .gateway
        .ip(["route", "show", "proto", "203"])
        .unwrap();
    assert!(
        routes.contains("mtu 1340"),
        "site-b's tunnel MTU should be 1400 - 60: {routes}"
    );
    let _echo = [A, B].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    wait_reachable(&mesh, B, pod_addr(mesh.site(A)), WAIT);
    let total = 4 << 20;
    let router = &mesh.router(B).expect("router").ns;
    let fragments = || {
        [
            snmp_stat(&mesh.site(A).gateway, "Ip", "FragCreates"),
            snmp_stat(router, "Ip", "FragCreates"),
            snmp_stat(&mesh.site(B).gateway, "Ip", "ReasmOKs"),
            snmp_stat(&mesh.site(B).gateway, "Ip", "FragCreates"),
            snmp_stat(&mesh.site(A).gateway, "Ip", "ReasmOKs"),
        ]
    };
    let before = fragments();
    let started = Instant::now();
    let mss_a = echo_transfer(&mesh, A, B, total);
    let mss_b = echo_transfer(&mesh, B, A, total);
    let took = started.elapsed();
    let after = fragments();
    let made: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    eprintln!(
        "1400-byte underlay at site-b: 2 x {} MiB echoed intact in {took:.1?}; effective MSS \
         from site-a's pod {mss_a}, from site-b's pod {mss_b}; IP fragments during the \
         transfers: site-a's gateway created {}, the router created {} (site-a's datagrams \
         too large for site-b's underlay), site-b's gateway reassembled {} datagrams; \
         site-b's gateway created {}, site-a's gateway reassembled {}",
        total >> 20,
        made[0],
        made[1],
        made[2],
        made[3],
        made[4],
    );
    // Site B's pod uses the whole of its 1340-byte tunnel (1300 bytes of TCP payload)...
    assert_eq!(mss_b, 1300, "site-b's pod sends {mss_b}-byte segments");
    // ...and none of it is fragmented on the way out or reassembled at site A.
    assert_eq!(
        (made[3], made[4]),
        (0, 0),
        "site-b's datagrams were fragmented outside the tunnel"
    );
    assert!(mss_a >= 1300, "site-a's pod sends {mss_a}-byte segments");
}

/// Handshake initiations in the flood.
const FLOOD_INITIATIONS: usize = 20_000;
/// Distinct random keys they come from (each key's initiation is sent repeatedly; an
/// unknown key costs the gateway the same every time, and generating 20,000 X25519 key
/// pairs in a debug build would take longer than the flood).
const FLOOD_KEYS: usize = 1_000;
/// How long the flood lasts.
const FLOOD_TIME: Duration = Duration::from_secs(8);
/// Source addresses of the flood, on the WAN.
const FLOOD_SOURCES: u8 = 10;
/// Strangers whose cookie-carrying initiations the one-source flood replays.
const COOKIE_KEYS: usize = 400;
/// Initiations in the one-source flood: 5,000 a second over [`FLOOD_TIME`].
const COOKIE_FLOOD: usize = 40_000;

/// Handshake initiations to `responder` from `n` random keys.
fn stranger_initiations(responder: [u8; 32], n: usize) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    (0..n)
        .map(|i| {
            let stranger = StaticSecret::random_from_rng(rand_core::OsRng);
            let mut tunn = Tunn::new(
                stranger,
                PublicKey::from(responder),
                None,
                None,
                i as u32,
                None,
            );
            match tunn.format_handshake_initiation(&mut buf, false) {
                TunnResult::WriteToNetwork(init) => init.to_vec(),
                _ => panic!("no handshake initiation"),
            }
        })
        .collect()
}

/// An attacker namespace on the WAN bridge with `sources` addresses 198.18.0.200+.
fn attacker(mesh: &Mesh, sources: u8) -> (Netns, Vec<UdpSocket>) {
    let ns = Netns::new("flood").expect("attacker namespace");
    let addrs: Vec<Ipv4Addr> = (0..sources)
        .map(|k| Ipv4Addr::new(198, 18, 0, 200 + k))
        .collect();
    let nets = addrs
        .iter()
        .map(|ip| ipnet::IpNet::new(IpAddr::V4(*ip), 24).unwrap());
    veth(&ns, "wan0", nets, mesh.world.wan(), "wan-flood", None).expect("attacker link");
    mesh.world
        .wan()
        .attach_to_bridge("wan-flood", WAN_BRIDGE)
        .expect("attach the attacker to the WAN");
    let sockets = ns
        .run(|| {
            addrs
                .iter()
                .map(|ip| UdpSocket::bind((*ip, 0)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("attacker sockets");
    for s in &sockets {
        s.set_nonblocking(true).unwrap();
    }
    (ns, sockets)
}

/// What a flood did to an established stream.
struct Flood {
    /// Initiations sent.
    sent: usize,
    /// Cookie replies the flood's sockets got back.
    cookies: usize,
    /// How long sending took.
    took: Duration,
    /// The A->B stream's goodput before and during the flood, Mbit/s.
    before: f64,
    during: f64,
    /// Site-a's drops during the flood: attributed to no known key (each after an
    /// X25519 exchange), and held to their source's budget before it.
    unknown_peer: f64,
    rate_limited: f64,
}

/// Runs a bulk stream from site-a's pod to site-b's, measures it for four seconds, then
/// sends `total` of `datagrams` (round-robin over them and over `sockets`) to site-a's
/// gateway evenly over [`FLOOD_TIME`] while measuring it again.
fn flood_under_stream(
    mesh: &Mesh,
    sockets: &[UdpSocket],
    datagrams: &[Vec<u8>],
    total: usize,
) -> Flood {
    let target = mesh.gateway_endpoint(A);
    // Site-a's gateway encrypts the stream while the flood hits the same packet thread.
    let sink_addr = SocketAddr::new(mesh.site(B).spec.pod_ip().into(), 7100);
    let sink = Sink::start(&mesh.site(B).pod, sink_addr);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = bulk_sender(&mesh.site(A).pod, sink_addr, Arc::clone(&stop));
    wait_until_ok("the bulk stream to carry 4 MiB", WAIT, || {
        match sink.bytes() {
            n if n >= 4 << 20 => Ok(()),
            n => Err(format!("{n} bytes")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    let window = Duration::from_secs(4);
    let (t0, b0) = (Instant::now(), sink.bytes());
    measure(window, || match sender.is_finished() {
        true => Err("the bulk stream ended".into()),
        false => Ok(()),
    });
    let before = mbit(sink.bytes() - b0, t0.elapsed());

    // Paced evenly over FLOOD_TIME.
    let unknown_before = drops(mesh, A, "unknown_peer");
    let limited_before = drops(mesh, A, "handshake_rate_limited");
    let batches = 400;
    let per_batch = total / batches;
    let (t0, b0) = (Instant::now(), sink.bytes());
    let (mut sent, mut cookies) = (0usize, 0usize);
    let mut reply = [0u8; 256];
    for batch in 0..batches {
        for k in 0..per_batch {
            let n = batch * per_batch + k;
            let socket = &sockets[n % sockets.len()];
            if socket
                .send_to(&datagrams[n % datagrams.len()], target)
                .is_ok()
            {
                sent += 1;
            }
        }
        for socket in sockets {
            while let Ok((len, _)) = socket.recv_from(&mut reply) {
                // Type 3, 64 bytes: a cookie reply, the gateway asking the flood to prove its address.
                cookies += usize::from(len == 64 && reply[0] == 3);
            }
        }
        assert!(
            !sender.is_finished(),
            "the bulk stream ended during the flood"
        );
        // Pacing, not waiting for a condition: the next batch is due at this offset.
        let due = FLOOD_TIME.mul_f64((batch + 1) as f64 / batches as f64);
        std::thread::sleep(due.saturating_sub(t0.elapsed()));
    }
    let took = t0.elapsed();
    let during = mbit(sink.bytes() - b0, took);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    assert_eq!(sent, total, "the flood was not sent whole");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    Flood {
        sent,
        cookies,
        took,
        before,
        during,
        unknown_peer: drops(mesh, A, "unknown_peer") - unknown_before,
        rate_limited: drops(mesh, A, "handshake_rate_limited") - limited_before,
    }
}

fn handshakes_with_b(mesh: &Mesh) -> f64 {
    mesh.gateway_metric(
        A,
        "causeway_peer_handshakes_total",
        &[("remote_cluster", "site-b")],
    )
}

#[test]
fn a_handshake_flood_from_unknown_keys_does_not_stall_an_established_tunnel() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let initiations = stranger_initiations(parse_key(mesh.public_key(A)).unwrap(), FLOOD_KEYS);
    let (_attacker, sockets) = attacker(&mesh, FLOOD_SOURCES);
    let handshakes = handshakes_with_b(&mesh);
    let Flood {
        sent,
        cookies,
        took,
        before,
        during,
        unknown_peer: unknown,
        rate_limited: limited,
    } = flood_under_stream(&mesh, &sockets, &initiations, FLOOD_INITIATIONS);
    eprintln!(
        "handshake flood: {sent} initiations from {FLOOD_KEYS} unknown keys and {FLOOD_SOURCES} \
         addresses in {took:.1?} ({:.0}/s); site-a dropped {unknown} as unknown_peer and \
         answered {cookies} with cookie replies; the established A->B TCP stream ran at \
         {before:.1} Mbit/s before and {during:.1} Mbit/s during the flood ({:.0}%)",
        sent as f64 / took.as_secs_f64(),
        during / before * 100.0
    );
    // Measured 90-108% here (crypto optimised in test builds as in release); 75% leaves
    // room for this machine's noise, where a stall shows as 20-30%.
    assert!(
        during >= 0.75 * before,
        "the tunnel stalled under the flood: {during:.1} vs {before:.1} Mbit/s"
    );
    // Every initiation is accounted for: challenged with a cookie, dropped as unknown or
    // over its source's budget, not one or two of them.
    assert!(
        unknown + limited + cookies as f64 >= 0.9 * sent as f64,
        "site-a let flood initiations through unchallenged: {unknown} unknown, {limited} over \
         budget, {cookies} cookies of {sent}"
    );
    // The flood neither reset nor replaced the established session.
    assert_eq!(handshakes_with_b(&mesh), handshakes);
}

/// Initiations from one source that answers every cookie: each one passes the gateway's
/// load check and would cost an X25519 exchange to attribute. The source's own budget
/// (20 a second, a burst of 5) stops all but a handful before that.
#[test]
fn a_cookie_answering_flood_from_one_source_is_held_to_its_budget() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let responder = parse_key(mesh.public_key(A)).unwrap();
    let (_attacker, sockets) = attacker(&mesh, 1);
    let target = mesh.gateway_endpoint(A);
    // Arming: strangers send initiations until the gateway, loaded, answers with cookies;
    // each stranger takes its cookie and makes an initiation that carries it (mac2). Those
    // are then replayed: a replay is only found out after the exchange it costs.
    let mut strangers: Vec<Tunn> = (0..COOKIE_KEYS)
        .map(|i| {
            Tunn::new(
                StaticSecret::random_from_rng(rand_core::OsRng),
                PublicKey::from(responder),
                None,
                None,
                i as u32,
                None,
            )
        })
        .collect();
    let mut buf = vec![0u8; 256];
    let mut reply = [0u8; 256];
    let mut armed: Vec<Vec<u8>> = Vec::new();
    wait_until_ok(
        "the gateway to demand cookies of the strangers, and them to answer",
        WAIT,
        || {
            for tunn in &mut strangers {
                if let TunnResult::WriteToNetwork(init) =
                    tunn.format_handshake_initiation(&mut buf, true)
                {
                    let _ = sockets[0].send_to(init, target);
                }
            }
            while let Ok((len, _)) = sockets[0].recv_from(&mut reply) {
                if len != 64 || reply[0] != 3 {
                    continue;
                }
                // The cookie reply names the initiation's sender index: stranger i sent i << 8.
                let index = u32::from_le_bytes(reply[4..8].try_into().unwrap()) >> 8;
                let Some(tunn) = strangers.get_mut(index as usize) else {
                    continue;
                };
                let mut out = vec![0u8; 256];
                let _ = tunn.decapsulate(Some(target.ip()), &reply[..len], &mut out);
                if let TunnResult::WriteToNetwork(init) =
                    tunn.format_handshake_initiation(&mut buf, true)
                {
                    // Type 1, 148 bytes, mac2 (the last 16) set.
                    if init[132..].iter().any(|&b| b != 0) {
                        armed.push(init.to_vec());
                    }
                }
            }
            match armed.len() {
                n if n >= COOKIE_KEYS / 2 => Ok(n),
                n => Err(format!("{n} initiations armed with a cookie")),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));

    let handshakes = handshakes_with_b(&mesh);
    let Flood {
        sent,
        cookies,
        took,
        before,
        during,
        unknown_peer: unknown,
        rate_limited: limited,
    } = flood_under_stream(&mesh, &sockets, &armed, COOKIE_FLOOD);
    eprintln!(
        "cookie-answering flood: {sent} initiations carrying valid cookies ({} strangers) from \
         one address in {took:.1?} ({:.0}/s); site-a held {limited} to the source's budget, \
         attributed {unknown} (an X25519 exchange each, then unknown_peer), sent {cookies} \
         cookie replies; the established A->B TCP stream ran at {before:.1} Mbit/s before and \
         {during:.1} Mbit/s during the flood ({:.0}%)",
        armed.len(),
        sent as f64 / took.as_secs_f64(),
        during / before * 100.0
    );
    // The budget: a burst of 5, then 20 a second (the arming phase may have spent it).
    let budget = 5.0 + 20.0 * took.as_secs_f64() + 5.0;
    assert!(
        unknown <= budget,
        "{unknown} initiations from one source were attributed in {took:?}: over its budget of {budget:.0}"
    );
    assert!(
        limited + cookies as f64 >= 0.95 * sent as f64 - budget,
        "{limited} held to the budget and {cookies} cookies of {sent} sent"
    );
    // Measured 86-102% here against runs of the same stream; 75% leaves room for this
    // machine's noise, where paying the exchanges shows as a stall.
    assert!(
        during >= 0.75 * before,
        "the tunnel slowed under the flood: {during:.1} vs {before:.1} Mbit/s"
    );
    assert_eq!(handshakes_with_b(&mesh), handshakes);
}

#[test]
fn a_remote_pod_reaches_no_host_service_through_the_gateways_tunnel_address() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let _echo = [A, B].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    wait_reachable(&mesh, B, pod_addr(mesh.site(A)), WAIT);
    // A host service on site-a's gateway node, listening on every address as sshd and
    // the kubelet do (TCP and UDP).
    let port = 2222;
    let _service = Echo::start(
        &mesh.site(A).gateway,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
    )
    .expect("a host service on the gateway node");
    let target = SocketAddr::new(mesh.site(A).spec.gateway_tunnel_ip().into(), port);
    assert_eq!(
        tcp_roundtrip(&mesh.site(A).gateway, target, b"from the node").expect("local"),
        b"from the node",
        "the service answers at the tunnel address on its own node"
    );

    let before = drops(&mesh, A, "host_port_not_allowed");
    let pod_b = &mesh.site(B).pod;
    let tcp = tcp_roundtrip(pod_b, target, b"from site-b");
    let udp = udp_roundtrip(pod_b, target, b"from site-b");
    let after = drops(&mesh, A, "host_port_not_allowed");
    eprintln!(
        "site-b pod to {target}: tcp {tcp:?}, udp {udp:?}; dropped {}",
        after - before
    );
    assert!(tcp.is_err(), "site-b's pod reached a host service over TCP");
    assert!(udp.is_err(), "site-b's pod reached a host service over UDP");
    // A SYN (and its retransmission) and the datagram.
    assert!(
        after - before >= 2.0,
        "dropped {} at site-a",
        after - before
    );

    // What belongs there still passes: health probes both ways (an RTT on each side),
    // and the pods' own traffic.
    for (i, peer) in [(A, "site-b"), (B, "site-a")] {
        let since = drops(&mesh, i, "host_port_not_allowed");
        let probed = |m: &Mesh| {
            let text = m.gateway_metrics(i).map_err(|e| e.to_string())?;
            let labels = [("remote_cluster", peer), ("stat", "last")];
            required_metric(&text, "causeway_peer_rtt_seconds", &labels)
        };
        wait_until_ok("a health probe answered through the tunnel", WAIT, || {
            probed(&mesh)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
        assert_eq!(
            drops(&mesh, i, "host_port_not_allowed"),
            since,
            "a probe was dropped"
        );
    }
    wait_reachable(&mesh, B, pod_addr(mesh.site(A)), WAIT);
}

#[test]
fn a_killed_gateway_leaks_nothing_in_clear_onto_the_underlay() {
    let mut mesh = Mesh::start(2).expect("two-site mesh");
    let _echo = [A, B].map(|i| echo(mesh.site(i), pod_addr(mesh.site(i))));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    // A default route on site-a's gateway node, as real nodes have, to a router that
    // forwards (site-b's gateway node): where remote traffic would go in clear.
    let next_hop = mesh.site(B).spec.underlay_ip().to_string();
    mesh.site(A)
        .gateway
        .ip(["route", "add", "default", "via", &next_hop])
        .expect("a default route on site-a's gateway node");
    // Packets on the WAN with a pod's address in their own header are in clear: the
    // tunnel's carry the gateways' underlay addresses outside.
    let pods: Vec<ipnet::IpNet> = [A, B]
        .iter()
        .flat_map(|&i| mesh.site(i).spec.pod_cidrs())
        .collect();
    let sniffer = Sniffer::addresses(mesh.world.wan(), pods).expect("a sniffer on the WAN");
    let stream = Stream::start(&mesh.site(A).pod, pod_addr(mesh.site(B))).expect("stream");
    wait_until_ok("the stream to carry 50 chunks", WAIT, || {
        match stream.chunks() {
            n if n >= 50 => Ok(()),
            n => Err(format!("{n} chunks")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    assert!(sniffer.seen().is_empty(), "clear text while the tunnel ran");

    let unreachables = |ns: &Netns| snmp_stat(ns, "Icmp", "OutDestUnreachs");
    let refused_before = unreachables(&mesh.site(A).gateway);
    mesh.take_gateway(A)
        .expect("site-a's gateway")
        .kill9()
        .expect("kill site-a's gateway");
    let gateway_node = &mesh.site(A).gateway;
    // The pod keeps sending (TCP retransmits) to the dead gateway's node, which either
    // refuses it or sends it on in clear.
    let outcome = wait_until_ok(
        "site-a's gateway node to refuse or leak the stream",
        WAIT,
        || {
            let refused = unreachables(gateway_node) - refused_before;
            match sniffer.seen().len() {
                0 if refused >= 2 => Ok(refused),
                0 => Err(format!("{refused} unreachables sent, nothing on the WAN")),
                leaked => Ok(leaked as u64),
            }
        },
    );
    let leaked = sniffer.stop().expect("the capture");
    let bytes: usize = leaked.iter().map(|p| p.bytes.len()).sum();
    eprintln!(
        "gateway killed under load: {} packets ({bytes} bytes) in clear on the WAN; outcome {outcome:?}",
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "{bytes} bytes left site-a's gateway node in clear, e.g. {:?}",
        leaked.first().and_then(Packet::addresses)
    );
    outcome.unwrap_or_else(|e| panic!("{e}"));
    drop(stream);
}

#[test]
fn a_replayed_data_packet_is_dropped_and_counted() {
    let mut mesh = Mesh::new(2).expect("two sites");
    mesh.start_relay(SEED).expect("relay");
    let mesh = mesh.start_all().expect("two sites through the relay");
    let relay = mesh.relay().expect("relay");
    let port = 7778;
    let target = mesh.site(A).spec.pod_ip();
    let listener = mesh
        .site(A)
        .pod
        .run(|| UdpSocket::bind((target, port)))
        .expect("listener in site-a's pod");
    listener
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let sender = mesh
        .site(B)
        .pod
        .run(|| UdpSocket::bind((mesh.site(B).spec.pod_ip(), 0)))
        .expect("sender in site-b's pod");
    // 600 bytes of payload: 628 inner bytes plus 32 of WireGuard header and tag (boringtun
    // does not pad), unlike the 77-byte health probes that share the tunnel.
    let payload = pattern(600, 42);
    let wire_len = 16 + 628 + 16;
    let mut buf = vec![0u8; 2048];
    let captured = wait_until_ok(
        "one datagram through the tunnel, and its capture",
        WAIT,
        || {
            sender
                .send_to(&payload, (target, port))
                .map_err(|e| e.to_string())?;
            let (n, _) = listener.recv_from(&mut buf).map_err(|e| e.to_string())?;
            if buf[..n] != payload[..] {
                return Err("a different datagram arrived".into());
            }
            relay
                .recent(B, A)
                .into_iter()
                .rev()
                .find(|d| d.len() == wire_len && d[0] == 4)
                .ok_or_else(|| {
                    let lens: Vec<usize> = relay.recent(B, A).iter().map(Vec::len).collect();
                    format!("not in the relay's capture of {lens:?}")
                })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    let invalid = drops(&mesh, A, "invalid");

    // The same bytes again, from the same address: the counter was used, so it is dropped.
    relay.inject(B, A, &captured).expect("replay");
    wait_until_ok(
        "site-a to count the replay as invalid",
        WAIT,
        || match drops(&mesh, A, "invalid") {
            n if n >= invalid + 1.0 => Ok(()),
            n => Err(format!("invalid drops {n}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    listener.set_nonblocking(true).unwrap();
    match listener.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the replayed datagram was delivered: {other:?}"),
    }
    eprintln!(
        "replay: a captured {wire_len}-byte data datagram resent through the relay was dropped \
         (invalid drops {invalid} -> {}) and not delivered",
        drops(&mesh, A, "invalid")
    );
    assert_eq!(
        peer_endpoint(&mesh, A, "site-b"),
        Some(relay.endpoint(B)),
        "the replay moved site-b's endpoint"
    );
}

#[test]
fn the_relay_delays_loses_duplicates_and_reorders_as_configured() {
    use causeway_tests::harness::topology::{Clusterset, GATEWAY_PORT};
    use causeway_tests::harness::wan::Relay;
    let world = Clusterset::new(2).expect("two sites, no gateways");
    let real: Vec<SocketAddr> = world
        .sites()
        .iter()
        .map(|s| s.spec.public_endpoint(GATEWAY_PORT))
        .collect();
    let relay = Relay::start(world.wan(), &real, SEED).expect("relay");
    let bind = |i: usize| {
        let s = world.sites()[i]
            .gateway
            .run(|| UdpSocket::bind(real[i]))
            .expect("socket at the gateway's address");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // The relay releases a whole burst at once after its delay.
        nix::sys::socket::setsockopt(&s, sockopt::RcvBufForce, &(8usize << 20)).unwrap();
        s
    };
    let (a, b) = (bind(A), bind(B));
    relay.set(
        A,
        B,
        Impairment {
            delay: Duration::from_millis(30),
            loss: 0.10,
            duplicate: 0.05,
            reorder: 0.05,
            reorder_gap: Duration::from_millis(10),
            ..Impairment::default()
        },
    );
    let n = 1000u32;
    let started = Instant::now();
    for seq in 0..n {
        a.send_to(&seq.to_be_bytes(), relay.endpoint(B)).unwrap();
    }
    let mut got = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 16];
    while let Ok((len, from)) = b.recv_from(&mut buf) {
        assert_eq!(
            from,
            relay.endpoint(A),
            "site-b must see site-a at the relay"
        );
        assert_eq!(len, 4);
        first.get_or_insert_with(|| started.elapsed());
        got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        // Every datagram accounted for: delivered or lost, plus the copies.
        let c = relay.counts();
        if got.len() as u64 + c.lost == u64::from(n) + c.duplicated {
            break;
        }
    }
    // The relay counts a datagram just after sending it, so it may trail the receiver.
    let counts = wait_until_ok("the relay's counters to settle", WAIT, || {
        let c = relay.counts();
        match c.forwarded == got.len() as u64 {
            true => Ok(c),
            false => Err(format!("{c:?}, {} received", got.len())),
        }
    })
    .unwrap();
    let unique: std::collections::BTreeSet<u32> = got.iter().copied().collect();
    let out_of_order = got.windows(2).filter(|w| w[1] < w[0]).count();
    eprintln!(
        "relay: {n} sent, {} received ({} unique), first after {:?}, {out_of_order} out of \
         order; {counts:?}",
        got.len(),
        unique.len(),
        first
    );
    assert!(
        first.is_some_and(|d| d >= Duration::from_millis(30)),
        "{first:?}"
    );
    assert_eq!(counts.forwarded, got.len() as u64);
    assert_eq!(unique.len() as u64, u64::from(n) - counts.lost);
    assert_eq!(got.len() - unique.len(), counts.duplicated as usize);
    for (what, count, expected) in [
        ("lost", counts.lost, 100.0),
        ("duplicated", counts.duplicated, 45.0),
        ("reordered", counts.reordered, 47.0),
    ] {
        assert!(
            (count as f64 - expected).abs() < expected * 0.5,
            "{what}: {count}, expected about {expected}"
        );
    }
    assert!(out_of_order > 0, "nothing was reordered");
    // The other direction was left clean.
    b.send_to(b"back", relay.endpoint(A)).unwrap();
    let (len, from) = a.recv_from(&mut buf).expect("clean reverse direction");
    assert_eq!((&buf[..len], from), (&b"back"[..], relay.endpoint(B)));
}
