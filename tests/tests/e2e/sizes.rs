//! Packets of every size through the tunnel: UDP datagrams of each payload size from one
//! byte to past the MTU, datagrams the kernel fragments (at the sending pod, the worker
//! node or the gateway node), and TCP writes that straddle segment boundaries, all verified
//! byte for byte at the far end.

use causeway_tests::fixtures::{echo, pod_addr, pod_addr6, wait_reachable};
use causeway_tests::harness::mesh::Mesh;
use causeway_tests::harness::traffic::tcp_connect;
use causeway_tests::harness::Netns;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{A, B, WAIT};

/// The pods' interface MTU. The tunnel's is 1440 (IPv4 underlay), and the route agent pins
/// 1420 on the worker's routes to remote sites (room for an IPv6 underlay).
const POD_MTU: usize = 1500;
/// Largest UDP payload in one IPv4 datagram (65535 - 20 - 8).
const MAX_UDP4: usize = 65_507;
/// Largest UDP payload in one IPv6 datagram without jumbograms (65535 - 8).
const MAX_UDP6: usize = 65_527;
/// Sizes well past the MTU: fragmented on the way.
const FRAGMENTED: [usize; 9] = [1500, 2000, 2881, 4000, 8000, 16_000, 30_000, 65_000, 65_001];
/// First receive port; each sweep gets its own socket so nothing stale crosses sweeps.
const RECEIVER_PORT: u16 = 7100;
/// How long the first pass waits for the rest of its burst once arrivals stop.
const QUIET: Duration = Duration::from_secs(1);
/// Upper bound of the first pass's drain.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Per-datagram wait in a retry.
const RETRY_WAIT: Duration = Duration::from_millis(500);
/// Retries of a datagram missing after the first pass.
const RETRIES: usize = 3;
/// Upper bound of all retries of one sweep, in case much goes missing.
const RETRY_BUDGET: Duration = Duration::from_secs(5);
/// Most packets the first pass lets be on their way at once.
const WINDOW: usize = 128;
/// How long the first pass waits for an arrival when its window is full.
const WINDOW_WAIT: Duration = Duration::from_millis(200);

/// Byte `i` of the payload of size `size`: every size has its own sequence, and every
/// position within it differs, so truncation, reordering and mix-ups all show.
fn byte_at(seed: u64, size: usize, i: usize) -> u8 {
    let x = (seed << 56 ^ (size as u64) << 32 ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

fn payload(seed: u64, size: usize) -> Vec<u8> {
    (0..size).map(|i| byte_at(seed, size, i)).collect()
}

/// Index of the first byte that differs from the expected payload of `data.len()` bytes.
fn first_mismatch(seed: u64, data: &[u8]) -> Option<usize> {
    let n = data.len();
    data.iter()
        .enumerate()
        .position(|(i, &b)| b != byte_at(seed, n, i))
}

/// `1..=5, 9, 12..=13` style listing of a set of sizes.
fn ranges(sizes: &BTreeSet<usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = sizes.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().expect("peeked");
        }
        out.push(match end == start {
            true => start.to_string(),
            false => format!("{start}..={end}"),
        });
    }
    match out.is_empty() {
        true => "none".to_string(),
        false => out.join(", "),
    }
}

fn setsockopt_int(sock: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a plain int option on a descriptor the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}, {value}): {}",
        io::Error::last_os_error()
    );
}

fn getsockopt_int(sock: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a plain int option read into a local of the size given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
    value
}

/// One datagram the receiver saw: its size, and what was wrong with it if anything.
struct Arrival {
    len: usize,
    problem: Option<String>,
}

/// A UDP socket in a pod, verifying every datagram on its own thread; stops on drop.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    arrivals: mpsc::Receiver<Arrival>,
}

impl Receiver {
    fn start(mesh: &Mesh, site: usize, at: SocketAddr, seed: u64, from: IpAddr) -> Receiver {
        let sock = mesh
            .site(site)
            .pod
            .run(|| UdpSocket::bind(at))
            .unwrap_or_else(|e| panic!("receiver on {at}: {e}"));
        // Room for a whole burst of large datagrams while this thread catches up.
        setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, arrivals) = mpsc::channel();
        let halt = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, src)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let problem = if src.ip() != from {
                    Some(format!("{n} bytes from {src}, expected {from}"))
                } else {
                    first_mismatch(seed, &buf[..n]).map(|i| {
                        format!(
                            "{n} bytes corrupted from byte {i} (got {:#04x}, expected {:#04x})",
                            buf[i],
                            byte_at(seed, n, i)
                        )
                    })
                };
                if tx.send(Arrival { len: n, problem }).is_err() {
                    return;
                }
            }
        });
        Receiver {
            stop,
            thread: Some(thread),
            arrivals,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The outcome of one sweep of sizes.
#[derive(Default)]
struct Sweep {
    label: String,
    sent: BTreeSet<usize>,
    intact: BTreeSet<usize>,
    first_pass_lost: BTreeSet<usize>,
    retried: usize,
    bad: Vec<String>,
    send_errors: Vec<String>,
    elapsed: Duration,
}

impl Sweep {
    fn missing(&self) -> BTreeSet<usize> {
        self.sent.difference(&self.intact).copied().collect()
    }

    /// Notes an arrival; returns how many packets it took on the wire (roughly).
    fn record(&mut self, arrival: Arrival) -> usize {
        match arrival.problem {
            None => {
                self.intact.insert(arrival.len);
            }
            Some(e) => self.bad.push(e),
        }
        wire_packets(arrival.len)
    }

    fn ok(&self) -> bool {
        self.missing().is_empty() && self.bad.is_empty()
    }

    fn summary(&self) -> String {
        let largest = self.sent.last().copied().unwrap_or(0);
        let mut s = format!(
            "{}: {} datagrams (1..={largest} bytes) in {:.2?}; {} intact; first pass lost {} ({}), {} resends",
            self.label,
            self.sent.len(),
            self.elapsed,
            self.intact.len(),
            self.first_pass_lost.len(),
            ranges(&self.first_pass_lost),
            self.retried,
        );
        if !self.missing().is_empty() {
            s += &format!(
                "; NEVER ARRIVED after up to {RETRIES} retries: {}",
                ranges(&self.missing())
            );
        }
        if !self.bad.is_empty() {
            let shown: Vec<_> = self.bad.iter().take(20).collect();
            s += &format!("; {} BAD datagrams: {shown:?}", self.bad.len());
        }
        if !self.send_errors.is_empty() {
            let shown: Vec<_> = self.send_errors.iter().take(10).collect();
            s += &format!("; send errors: {shown:?}");
        }
        s
    }
}

/// About how many IP packets (fragments) a datagram of `len` bytes becomes in the tunnel.
fn wire_packets(len: usize) -> usize {
    len / 1300 + 1
}

/// Sends one datagram of each size from `sender` to `receiver` in a tight loop, with at
/// most [`WINDOW`] packets unaccounted for, then resends the missing ones one at a time,
/// waiting for each.
fn sweep(
    label: &str,
    sender: &UdpSocket,
    to: SocketAddr,
    receiver: &Receiver,
    seed: u64,
    sizes: &[usize],
) -> Sweep {
    let started = Instant::now();
    let mut out = Sweep {
        label: label.to_string(),
        sent: sizes.iter().copied().collect(),
        ..Sweep::default()
    };
    let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(seed, n)).collect();
    let by_size = |n: usize| &payloads[sizes.iter().position(|&s| s == n).expect("a sent size")];
    let send = |out: &mut Sweep, data: &[u8]| {
        if let Err(e) = sender.send_to(data, to) {
            out.send_errors.push(format!("{} bytes: {e}", data.len()));
        }
    };
    // Packets sent whose datagram has not been seen yet. A burst bigger than the TUN
    // interface's queue (500 packets) would mostly test that queue, not the datapath.
    let mut in_flight = 0usize;
    for data in &payloads {
        while in_flight >= WINDOW {
            match receiver.arrivals.recv_timeout(WINDOW_WAIT) {
                Ok(a) => in_flight = in_flight.saturating_sub(out.record(a)),
                // Whatever is still out is lost; the retries will tell.
                Err(_) => in_flight = 0,
            }
        }
        send(&mut out, data);
        in_flight += wire_packets(data.len());
        while let Ok(a) = receiver.arrivals.try_recv() {
            in_flight = in_flight.saturating_sub(out.record(a));
        }
    }
    let drain_until = Instant::now() + DRAIN_MAX;
    while !out.missing().is_empty() && Instant::now() < drain_until {
        match receiver.arrivals.recv_timeout(QUIET) {
            Ok(a) => {
                out.record(a);
            }
            Err(_) => break,
        }
    }
    out.first_pass_lost = out.missing();
    let retry_until = Instant::now() + RETRY_BUDGET;
    'retries: for _ in 0..RETRIES {
        for n in out.missing() {
            if Instant::now() >= retry_until {
                out.send_errors.push(format!(
                    "retries stopped after {RETRY_BUDGET:?} with {} sizes missing",
                    out.missing().len()
                ));
                break 'retries;
            }
            out.retried += 1;
            send(&mut out, by_size(n));
            let deadline = Instant::now() + RETRY_WAIT;
            while !out.intact.contains(&n) {
                let left = deadline.saturating_duration_since(Instant::now());
                match receiver.arrivals.recv_timeout(left) {
                    Ok(a) => {
                        out.record(a);
                    }
                    Err(_) => break,
                }
            }
        }
    }
    // Anything still queued (duplicates, late corrupt copies) counts too.
    while let Ok(a) = receiver.arrivals.try_recv() {
        out.record(a);
    }
    out.elapsed = started.elapsed();
    out
}

/// A UDP socket in `ns`, bound to `from`.
fn sender(ns: &Netns, from: IpAddr) -> UdpSocket {
    ns.run(|| UdpSocket::bind(SocketAddr::new(from, 0)))
        .unwrap_or_else(|e| panic!("sender socket on {from} in {}: {e}", ns.name()))
}

/// Fails if a gateway counted a packet as invalid or malformed; prints every drop counter.
fn assert_no_bad_drops(mesh: &Mesh) {
    let mut bad = Vec::new();
    for i in [A, B] {
        let mut line = format!("{} drops:", mesh.site(i).spec.cluster_id());
        for reason in [
            "no_peer",
            "source_not_allowed",
            "unknown_peer",
            "invalid",
            "no_endpoint",
            "malformed",
            "queue_full",
        ] {
            let n = mesh.gateway_metric(i, "causeway_datapath_drops_total", &[("reason", reason)]);
            line += &format!(" {reason}={n}");
            if n != 0.0 && (reason == "invalid" || reason == "malformed") {
                bad.push(format!("site {i} dropped {n} packets as {reason}"));
            }
        }
        eprintln!("{line}");
    }
    assert!(bad.is_empty(), "{bad:?}\n{}", mesh.logs());
}

#[test]
fn every_udp_size_from_1_byte_to_beyond_the_mtu_arrives_intact_v4_and_v6() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let _echo =
        [pod_addr(mesh.site(B)), pod_addr6(mesh.site(B))].map(|addr| echo(mesh.site(B), addr));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    wait_reachable(&mesh, A, pod_addr6(mesh.site(B)), WAIT);
    let (pod_a, gateway_a) = (&mesh.site(A).pod, &mesh.site(A).gateway);
    let src4: IpAddr = mesh.site(A).spec.pod_ip().into();
    let src6: IpAddr = mesh.site(A).spec.pod_ip6().into();
    let tunnel4: IpAddr = mesh.site(A).spec.gateway_tunnel_ip().into();
    let dst4: IpAddr = mesh.site(B).spec.pod_ip().into();
    let dst6: IpAddr = mesh.site(B).spec.pod_ip6().into();

    // Every size that fits the pod's own MTU, which is past the tunnel's, then fragmented ones.
    let sizes = |max_unfragmented: usize, max: usize| -> Vec<usize> {
        (1..=max_unfragmented)
            .chain(FRAGMENTED)
            .chain([max])
            .collect()
    };
    let sizes4 = sizes(POD_MTU - 28, MAX_UDP4);
    let sizes6 = sizes(POD_MTU - 48, MAX_UDP6);

    // The pod's path leaves the worker on a route the route agent pins to MTU 1420.
    // IPv4 with socket defaults (DF, path MTU discovery): the worker refuses the first packet
    // over 1420 with "fragmentation needed" and the pod fragments at 1420 from then on.
    let pmtud4 = sender(pod_a, src4);
    // IPv4 without DF and ignoring the learned path MTU: the pod sends whole packets up to
    // 1500 bytes (and 1500-byte fragments), which the worker fragments again.
    let no_df = sender(pod_a, src4);
    setsockopt_int(
        &no_df,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_OMIT,
    );
    // From the gateway node's own tunnel address, on the route to causeway0 (MTU 1440):
    // inner packets of every length up to the tunnel MTU itself, then fragments of 1440.
    let from_gateway = sender(gateway_a, tunnel4);
    // IPv6: routers never fragment; the pod learns the path MTU and fragments itself.
    let pmtud6 = sender(pod_a, src6);

    // The first pass may lose only what path MTU discovery costs by design: the first
    // datagram too big for the worker's 1420-byte route to remote sites (1392 bytes of UDP
    // payload over IPv4, 1372 over IPv6), which the worker answers with "fragmentation
    // needed" / "packet too big" instead of forwarding. Everything else arrives at once.
    let pmtu_loss4 = BTreeSet::from([1420 - 28 + 1]);
    let pmtu_loss6 = BTreeSet::from([1420 - 48 + 1]);
    let none = BTreeSet::new();
    /// (label, socket, source, destination, sizes, what the first pass may lose)
    type Case<'a> = (
        &'a str,
        &'a UdpSocket,
        IpAddr,
        IpAddr,
        &'a [usize],
        &'a BTreeSet<usize>,
    );
    let cases: [Case; 4] = [
        (
            "IPv4 pod, DF + PMTU discovery",
            &pmtud4,
            src4,
            dst4,
            &sizes4,
            &pmtu_loss4,
        ),
        (
            "IPv4 pod, no DF (worker fragments)",
            &no_df,
            src4,
            dst4,
            &sizes4,
            &none,
        ),
        (
            "IPv4 gateway node, tunnel MTU 1440",
            &from_gateway,
            tunnel4,
            dst4,
            &sizes4,
            &none,
        ),
        (
            "IPv6 pod, PMTU discovery",
            &pmtud6,
            src6,
            dst6,
            &sizes6,
            &pmtu_loss6,
        ),
    ];
    let started = Instant::now();
    let mut sweeps = Vec::new();
    let mut first_pass = Vec::new();
    for (k, (label, sock, src, dst, sizes, may_lose)) in cases.into_iter().enumerate() {
        let to = SocketAddr::new(dst, RECEIVER_PORT + k as u16);
        let seed = k as u64 + 1;
        let receiver = Receiver::start(&mesh, B, to, seed, src);
        let result = sweep(label, sock, to, &receiver, seed, sizes);
        eprintln!("{}", result.summary());
        if !result.first_pass_lost.is_subset(may_lose) {
            first_pass.push(format!(
                "{label}: the first pass lost {} (only {} may be)",
                ranges(&result.first_pass_lost),
                ranges(may_lose)
            ));
        }
        sweeps.push(result);
    }
    eprintln!("UDP sweeps took {:.2?}", started.elapsed());
    let failed: Vec<String> = sweeps
        .iter()
        .filter(|s| !s.ok())
        .map(Sweep::summary)
        .collect();
    assert!(
        failed.is_empty(),
        "datagrams lost or damaged in the tunnel:\n{}\n{}",
        failed.join("\n"),
        mesh.logs()
    );
    assert!(
        first_pass.is_empty(),
        "datagrams lost on the first pass (resends hid it):\n{}",
        first_pass.join("\n")
    );
    assert_no_bad_drops(&mesh);
}

/// Writes each size on one connection and reads its echo back before the next, verifying
/// every byte; returns the connection's MSS.
fn tcp_sizes(mesh: &Mesh, to: SocketAddr, sizes: &[usize]) -> Result<i32, String> {
    let mut conn = tcp_connect(&mesh.site(A).pod, to).map_err(|e| format!("connect {to}: {e}"))?;
    let mut writer = conn.try_clone().map_err(|e| e.to_string())?;
    for (k, &n) in sizes.iter().enumerate() {
        let seed = 100 + k as u64;
        let data = payload(seed, n);
        let mut back = vec![0u8; n];
        // Write and read at once, so a large write never waits on a full echo path.
        let (written, read) = std::thread::scope(|s| {
            let w = s.spawn(|| writer.write_all(&data));
            let r = conn.read_exact(&mut back);
            (w.join().expect("writer thread"), r)
        });
        written.map_err(|e| format!("write of {n} bytes to {to}: {e}"))?;
        read.map_err(|e| format!("echo of a {n}-byte write from {to}: {e}"))?;
        if let Some(i) = back.iter().zip(&data).position(|(a, b)| a != b) {
            return Err(format!(
                "echo of a {n}-byte write from {to} differs from byte {i} (got {:#04x}, sent {:#04x})",
                back[i], data[i]
            ));
        }
    }
    Ok(getsockopt_int(&conn, libc::IPPROTO_TCP, libc::TCP_MAXSEG))
}

#[test]
fn tcp_streams_of_odd_sizes_arrive_intact() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let _echo =
        [pod_addr(mesh.site(B)), pod_addr6(mesh.site(B))].map(|addr| echo(mesh.site(B), addr));
    wait_reachable(&mesh, A, pod_addr(mesh.site(B)), WAIT);
    wait_reachable(&mesh, A, pod_addr6(mesh.site(B)), WAIT);
    // Around one and two full segments: the pods' MSS is 1448 (IPv4) and 1428 (IPv6) until
    // path MTU discovery learns the worker's 1420, then 1368 and 1348; around the tunnel's
    // 1400-byte IPv4 MSS too, and the largest TSO frame the kernel hands the TUN interface.
    let sizes: Vec<usize> = [1, 2]
        .into_iter()
        .chain(1339..=1449)
        .chain([2695, 2696, 2697, 2735, 2736, 2737, 2799, 2800, 2801])
        .chain([2855, 2856, 2857, 2879, 2880, 2881, 2895, 2896, 2897])
        .chain([65_535, 65_536, 1 << 20])
        .collect();
    let total: usize = sizes.iter().sum();
    for to in [pod_addr(mesh.site(B)), pod_addr6(mesh.site(B))] {
        let started = Instant::now();
        match tcp_sizes(&mesh, to, &sizes) {
            Ok(mss) => eprintln!(
                "TCP to {to}: {} writes ({total} bytes) echoed intact in {:.2?}, MSS {mss}",
                sizes.len(),
                started.elapsed()
            ),
            Err(e) => panic!("{e}\n{}", mesh.logs()),
        }
    }
    assert_no_bad_drops(&mesh);
}
