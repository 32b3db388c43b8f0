//! A hostile WAN between the gateways, built from what these machines allow: netem is
//! not available, so delay, jitter, loss, reordering and duplication come from a
//! userspace UDP [`Relay`] in the WAN namespace; rate limits come from `tc tbf`
//! ([`shape`]); NAT and small path MTUs come from a [`Router`] namespace in front of
//! one site's gateway.
//!
//! ```text
//!   site-a gw 198.18.0.1:51820 ──► relay 198.18.0.250:40001 (site-b's socket) ─┐
//!                                                                             │ impair
//!   site-b gw 198.18.0.2:51820 ◄── relay 198.18.0.250:40000 (site-a's socket) ◄┘
//! ```
//!
//! Every gateway is told that its peer `y` lives at `y`'s relay socket, so it only ever
//! sees relay addresses, and roaming can never leak a real one. Everything stays inside
//! the test's namespaces.

use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use nix::sys::socket::{setsockopt, sockopt};

use super::netns::{veth, Netns, Profile};
use super::topology::{Clusterset, GATEWAY_WAN_IF, WAN_BRIDGE};
use super::{io_context, HarnessError};

/// The relay's address on the WAN bridge: inside 198.18.0.0/24, above every gateway's.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
/// Site `i`'s relay socket listens on `RELAY_BASE_PORT + i`.
pub const RELAY_BASE_PORT: u16 = 40_000;
/// Most datagrams held in the relay's delay line; beyond it (or [`RELAY_QUEUE_BYTES`])
/// arrivals are dropped, as a router's queue would.
pub const RELAY_QUEUE_LIMIT: usize = 20_000;
/// Most bytes held in the relay's delay line.
pub const RELAY_QUEUE_BYTES: usize = 64 << 20;
/// How many recent datagrams per direction the relay keeps for [`Relay::recent`].
const TAP_DEPTH: usize = 64;
/// Largest datagram the relay carries (a reassembled UDP datagram can be this big).
const MAX_DATAGRAM: usize = 65_535;
/// Receive and send buffer of each relay socket, as large as the gateways' own.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often the relay thread checks whether to stop while idle.
const IDLE_WAKE: Duration = Duration::from_millis(50);
/// Datagrams read from one socket before the others get their turn.
const READ_BURST: usize = 64;

/// What one direction of the WAN does to each datagram; all zero is a clean wire.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram.
    pub jitter: Duration,
    /// Fraction of datagrams dropped (0.0 to 1.0).
    pub loss: f64,
    /// Fraction of datagrams held back by `reorder_gap`, so later ones overtake them.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_gap: Duration,
    /// Fraction of datagrams delivered twice.
    pub duplicate: f64,
}

impl Impairment {
    /// A clean wire with half of `rtt` as the delay of each direction.
    pub fn rtt(rtt: Duration) -> Impairment {
        Impairment {
            delay: rtt / 2,
            ..Impairment::default()
        }
    }

    /// The same, losing `loss` of the datagrams.
    pub fn with_loss(self, loss: f64) -> Impairment {
        Impairment { loss, ..self }
    }
}

/// What the relay did so far, summed over every direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Datagrams delivered (duplicates included).
    pub forwarded: u64,
    /// Bytes delivered.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by the loss impairment.
    pub lost: u64,
    /// Extra copies delivered by the duplication impairment.
    pub duplicated: u64,
    /// Datagrams held back by the reorder impairment.
    pub reordered: u64,
    /// Datagrams dropped because the delay line was full.
    pub queue_full: u64,
    /// Datagrams from an address that is no site's gateway (dropped).
    pub unknown_source: u64,
    /// Sends the kernel refused.
    pub send_failed: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    queue_full: AtomicU64,
    unknown_source: AtomicU64,
    send_failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayCounts {
            forwarded: get(&self.forwarded),
            forwarded_bytes: get(&self.forwarded_bytes),
            lost: get(&self.lost),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            queue_full: get(&self.queue_full),
            unknown_source: get(&self.unknown_source),
            send_failed: get(&self.send_failed),
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A small deterministic generator (SplitMix64): the same seed and the same arrivals
/// give the same losses, so a failing run can be reasoned about.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an event of probability `p` happens this time.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// A datagram waiting in the delay line.
struct Pending {
    due: Instant,
    seq: u64,
    from: usize,
    to: usize,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest due must come out first;
        // `seq` keeps equal due times in arrival order.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct Shared {
    /// Site `i`'s relay socket, bound in the WAN namespace.
    sockets: Vec<UdpSocket>,
    /// Site `i`'s real gateway address.
    gateways: Vec<SocketAddr>,
    /// Impairment of each direction, `from * n + to`.
    impairments: Mutex<Vec<Impairment>>,
    /// The last datagrams delivered in each direction, `from * n + to`.
    taps: Mutex<Vec<VecDeque<Vec<u8>>>>,
    counters: Counters,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere in the test must not hide the relay's state from the failure report.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The impairment relay: one thread in the WAN namespace, stopped on drop.
pub struct Relay {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Adds [`RELAY_IP`] to the WAN bridge of `wan` and relays between `gateways` (the
    /// real address of each site's gateway, by site index), impairing nothing yet.
    ///
    /// `seed` fixes every random decision of the impairments.
    pub fn start(wan: &Netns, gateways: &[SocketAddr], seed: u64) -> Result<Relay, HarnessError> {
        wan.add_addr(
            WAN_BRIDGE,
            IpNet::V4(Ipv4Net::new(RELAY_IP, 24).expect("/24")),
        )
        .map_err(io_context("relay address on the WAN bridge"))?;
        let n = gateways.len();
        let sockets = wan
            .try_run(|| -> io::Result<Vec<UdpSocket>> {
                (0..n)
                    .map(|i| {
                        let socket = UdpSocket::bind(relay_endpoint(i))?;
                        socket.set_nonblocking(true)?;
                        // A gateway sends GSO bursts of up to 64 datagrams; the default
                        // buffer would drop them before the relay ever sees them.
                        setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER)?;
                        setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER)?;
                        Ok(socket)
                    })
                    .collect()
            })
            .map_err(io_context("enter the WAN namespace"))?
            .map_err(io_context("bind the relay's sockets"))?;
        let shared = Arc::new(Shared {
            sockets,
            gateways: gateways.to_vec(),
            impairments: Mutex::new(vec![Impairment::default(); n * n]),
            taps: Mutex::new(vec![VecDeque::new(); n * n]),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wan-relay".into())
            .spawn(move || relay_loop(&worker, SplitMix64::new(seed)))
            .map_err(io_context("spawn the relay thread"))?;
        Ok(Relay {
            shared,
            thread: Some(thread),
        })
    }

    /// Where the other gateways reach site `i` through the relay.
    pub fn endpoint(&self, i: usize) -> SocketAddr {
        relay_endpoint(i)
    }

    /// Sets what the direction from site `from` to site `to` does to datagrams.
    pub fn set(&self, from: usize, to: usize, impairment: Impairment) {
        let n = self.shared.gateways.len();
        lock(&self.shared.impairments)[from * n + to] = impairment;
    }

    /// Sets the same impairment on every direction.
    pub fn set_all(&self, impairment: Impairment) {
        lock(&self.shared.impairments).fill(impairment);
    }

    /// What the relay has done so far.
    pub fn counts(&self) -> RelayCounts {
        self.shared.counters.snapshot()
    }

    /// Copies of the last datagrams delivered from site `from` to site `to`, oldest first.
    pub fn recent(&self, from: usize, to: usize) -> Vec<Vec<u8>> {
        let n = self.shared.gateways.len();
        lock(&self.shared.taps)[from * n + to]
            .iter()
            .cloned()
            .collect()
    }

    /// Delivers `datagram` to site `to`'s gateway now, from site `from`'s relay socket,
    /// exactly as a relayed datagram would arrive (to replay or forge traffic).
    pub fn inject(&self, from: usize, to: usize, datagram: &[u8]) -> io::Result<()> {
        self.shared.sockets[from]
            .send_to(datagram, self.shared.gateways[to])
            .map(drop)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Site `i`'s relay socket address.
pub fn relay_endpoint(i: usize) -> SocketAddr {
    let port = u16::try_from(i)
        .ok()
        .and_then(|i| RELAY_BASE_PORT.checked_add(i))
        .expect("site index fits a port above RELAY_BASE_PORT");
    SocketAddr::new(IpAddr::V4(RELAY_IP), port)
}

fn relay_loop(shared: &Shared, mut rng: SplitMix64) {
    let n = shared.gateways.len();
    let mut queue: BinaryHeap<Pending> = BinaryHeap::new();
    let mut queued_bytes = 0usize;
    let mut seq = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut fds: Vec<libc::pollfd> = shared
        .sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = queue
            .peek()
            .map_or(IDLE_WAKE, |p| p.due.saturating_duration_since(now))
            .min(IDLE_WAKE);
        // Round up, so a datagram is never released before its time.
        let timeout_ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a live, correctly sized array of pollfd for sockets `shared` owns.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready > 0 {
            for (to, fd) in fds.iter().enumerate() {
                if fd.revents == 0 {
                    continue;
                }
                // A datagram at site `to`'s socket is on its way to site `to`.
                for _ in 0..READ_BURST {
                    let (len, src) = match shared.sockets[to].recv_from(&mut buf) {
                        Ok(got) => got,
                        Err(_) => break,
                    };
                    let Some(from) = shared.gateways.iter().position(|g| *g == src) else {
                        bump(&shared.counters.unknown_source, 1);
                        continue;
                    };
                    let imp = lock(&shared.impairments)[from * n + to];
                    if rng.chance(imp.loss) {
                        bump(&shared.counters.lost, 1);
                        continue;
                    }
                    let copies = if rng.chance(imp.duplicate) { 2 } else { 1 };
                    for copy in 0..copies {
                        if queue.len() >= RELAY_QUEUE_LIMIT
                            || queued_bytes + len > RELAY_QUEUE_BYTES
                        {
                            bump(&shared.counters.queue_full, 1);
                            continue;
                        }
                        let jitter = imp.jitter.mul_f64(rng.unit());
                        let held = if rng.chance(imp.reorder) {
                            bump(&shared.counters.reordered, 1);
                            imp.reorder_gap
                        } else {
                            Duration::ZERO
                        };
                        if copy > 0 {
                            bump(&shared.counters.duplicated, 1);
                        }
                        seq += 1;
                        queued_bytes += len;
                        queue.push(Pending {
                            due: Instant::now() + imp.delay + jitter + held,
                            seq,
                            from,
                            to,
                            data: buf[..len].to_vec(),
                        });
                    }
                }
            }
            for fd in &mut fds {
                fd.revents = 0;
            }
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.due <= now) {
            let Some(p) = queue.pop() else { break };
            queued_bytes -= p.data.len();
            // From the sender's relay socket, so the receiver sees its peer at the relay.
            match shared.sockets[p.from].send_to(&p.data, shared.gateways[p.to]) {
                Ok(_) => {
                    bump(&shared.counters.forwarded, 1);
                    bump(&shared.counters.forwarded_bytes, p.data.len() as u64);
                }
                Err(_) => bump(&shared.counters.send_failed, 1),
            }
            let mut taps = lock(&shared.taps);
            let tap = &mut taps[p.from * n + p.to];
            if tap.len() == TAP_DEPTH {
                tap.pop_front();
            }
            tap.push_back(p.data);
        }
    }
}

/// Limits the egress of `dev` in `ns` to `mbit` Mbit/s with a token bucket (`tc tbf`),
/// queueing at most `limit_bytes` before dropping.
pub fn shape(ns: &Netns, dev: &str, mbit: u32, limit_bytes: u32) -> io::Result<()> {
    // A burst of 64 KiB lets a GSO datagram through whole; far below a second of the rate.
    ns.exec_ok(
        "tc",
        [
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{mbit}mbit"),
            "burst",
            "64kb",
            "limit",
            &limit_bytes.to_string(),
        ],
    )
    .map(drop)
}

/// Bytes the root qdisc of `dev` in `ns` has sent so far (from `tc -s qdisc show`).
pub fn qdisc_sent_bytes(ns: &Netns, dev: &str) -> io::Result<u64> {
    let text = ns.exec_ok("tc", ["-s", "qdisc", "show", "dev", dev])?;
    parse_sent_bytes(&text).ok_or_else(|| {
        io::Error::other(format!(
            "no \"Sent <n> bytes\" in tc output for {dev}: {text}"
        ))
    })
}

fn parse_sent_bytes(text: &str) -> Option<u64> {
    let rest = text.split("Sent ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// How a site's gateway reaches the WAN through its [`Router`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterOptions {
    /// Masquerade the gateway's traffic behind the router's WAN address, and let nothing
    /// in that the gateway did not ask for (a stateful NAT firewall).
    pub nat: bool,
    /// MTU of the link between the router and the gateway (the site's underlay MTU).
    pub lan_mtu: u32,
}

/// A router namespace between one site's gateway and the WAN bridge; the site keeps its
/// WAN address, now on the router, and the gateway moves to a LAN behind it.
///
/// ```text
///   br-wan ── rt-X ══ wan0 (198.18.0.i/24)  router  lan0 (198.18.(100+i).1/24) ══ wan0 (198.18.(100+i).2/24)  site-X-gw
/// ```
#[derive(Debug)]
pub struct Router {
    /// The router's namespace.
    pub ns: Netns,
    /// The gateway's new underlay address, on the LAN behind the router.
    pub gateway_ip: Ipv4Addr,
    /// The router's address on the WAN (the site's former gateway address).
    pub wan_ip: Ipv4Addr,
}

/// The router's LAN interface.
pub const ROUTER_LAN_IF: &str = "lan0";

impl Router {
    /// Moves site `site`'s gateway (index into `world.sites()`, not started yet) behind a new router.
    pub fn build(
        world: &Clusterset,
        site: usize,
        options: RouterOptions,
    ) -> Result<Router, HarnessError> {
        let s = &world.sites()[site];
        let spec = s.spec;
        let wan_ip = spec.underlay_ip();
        let lan = 100 + u8::try_from(spec.index()).expect("at most 26 sites");
        let router_lan_ip = Ipv4Addr::new(198, 18, lan, 1);
        let gateway_ip = Ipv4Addr::new(198, 18, lan, 2);
        let net = |ip, len| IpNet::V4(Ipv4Net::new(ip, len).expect("literal prefix"));
        let ctx = |what: &str| format!("{} router: {what}", spec.cluster_id());
        // Deleting the gateway's WAN veth deletes its bridge port in the WAN namespace too.
        s.gateway
            .ip(["link", "del", GATEWAY_WAN_IF])
            .map_err(io_context(ctx("remove the gateway's WAN link")))?;
        let ns = Netns::with_profile(&format!("{}-rt", spec.letter()), Profile::Router)
            .map_err(io_context(ctx("namespace")))?;
        let wan_port = format!("rt-{}", spec.letter());
        veth(
            &ns,
            GATEWAY_WAN_IF,
            [net(wan_ip, 24)],
            world.wan(),
            &wan_port,
            None,
        )
        .and_then(|()| world.wan().attach_to_bridge(&wan_port, WAN_BRIDGE))
        .map_err(io_context(ctx("WAN link")))?;
        veth(
            &ns,
            ROUTER_LAN_IF,
            [net(router_lan_ip, 24)],
            &s.gateway,
            GATEWAY_WAN_IF,
            [net(gateway_ip, 24)],
        )
        .and_then(|()| ns.set_mtu(ROUTER_LAN_IF, options.lan_mtu))
        .and_then(|()| s.gateway.set_mtu(GATEWAY_WAN_IF, options.lan_mtu))
        .and_then(|()| {
            s.gateway
                .add_route(net(Ipv4Addr::UNSPECIFIED, 0), router_lan_ip.into())
        })
        .map_err(io_context(ctx("LAN link")))?;
        if options.nat {
            let rules = format!(
                "table ip causeway_nat {{\n\
                 \x20 chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 \x20   oifname \"{GATEWAY_WAN_IF}\" masquerade random\n\
                 \x20 }}\n\
                 \x20 chain forward {{ type filter hook forward priority filter; policy accept;\n\
                 \x20   iifname \"{GATEWAY_WAN_IF}\" ct state established,related accept\n\
                 \x20   iifname \"{GATEWAY_WAN_IF}\" counter drop\n\
                 \x20 }}\n\
                 }}\n"
            );
            let path = ns.log_dir().join("nat.nft");
            std::fs::write(&path, rules).map_err(io_context(ctx("write nftables rules")))?;
            ns.exec_ok("nft", [std::ffi::OsStr::new("-f"), path.as_os_str()])
                .map_err(io_context(ctx("load nftables masquerade")))?;
        }
        Ok(Router {
            ns,
            gateway_ip,
            wan_ip,
        })
    }

    /// Forgets every NAT mapping, as a router reboot or a mapping timeout would.
    pub fn flush_conntrack(&self) -> io::Result<()> {
        self.ns.flush_conntrack()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_line_releases_earliest_first_and_in_arrival_order_on_ties() {
        let t = Instant::now();
        let p = |ms: u64, seq: u64| Pending {
            due: t + Duration::from_millis(ms),
            seq,
            from: 0,
            to: 1,
            data: Vec::new(),
        };
        let mut heap: BinaryHeap<Pending> = [p(30, 1), p(10, 2), p(10, 3), p(20, 4)]
            .into_iter()
            .collect();
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|p| p.seq)).collect();
        assert_eq!(order, [2, 3, 4, 1]);
    }

    #[test]
    fn generator_is_deterministic_and_roughly_uniform() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut r = SplitMix64::new(1);
        let hits = (0..100_000).filter(|_| r.chance(0.05)).count();
        assert!((4_500..5_500).contains(&hits), "{hits} of 100000 at p=0.05");
        assert!(!SplitMix64::new(3).chance(0.0));
    }

    #[test]
    fn tc_sent_bytes_are_parsed() {
        let text = "qdisc tbf 8001: root refcnt 2 rate 155Mbit burst 64Kb lat 0us\n \
                    Sent 123456 bytes 89 pkt (dropped 0, overlimits 0 requeues 0)\n";
        assert_eq!(parse_sent_bytes(text), Some(123_456));
        assert_eq!(parse_sent_bytes("nothing"), None);
    }

    #[test]
    fn relay_ports_follow_the_site_index() {
        assert_eq!(relay_endpoint(0).to_string(), "198.18.0.250:40000");
        assert_eq!(relay_endpoint(2).port(), 40_002);
    }
}
