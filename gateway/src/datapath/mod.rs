//! The WireGuard datapath: one TUN interface, one UDP socket, one `noise::Tunn` per remote cluster.
//!
//! Three threads move packets: TUN → encrypt → UDP, UDP → decrypt → TUN, and a timer
//! thread for handshakes, rekeys and keepalives. Each reads the peer table through an
//! `ArcSwap` (no lock) and locks only the one peer a packet belongs to, so peers never
//! contend with each other and a change to the table never blocks the packet path.

pub mod cidr;
pub mod peers;

use crate::metrics::{DropReason, PeerSnapshot};
use crate::tun::{wait_readable, Tun};
use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use parking_lot::Mutex;
use peers::{plan_peers, Peer, PeerCounters, PeerPlan, PeerSpec, PeerState, PeerTable};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest datagram or packet handled; TUN packets are bounded by the interface MTU.
const BUF_SIZE: usize = 65_535;
/// Room for the WireGuard header and tag around an inner packet (and a whole handshake).
const OVERHEAD: usize = 148;
/// How long a blocked read waits before checking whether to stop.
const POLL: Duration = Duration::from_millis(200);
/// How often handshake, rekey and keepalive timers run (boringtun's own device uses 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Handshakes per second accepted before cookies are demanded (boringtun's default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// Packet drops by reason, without a shared lock.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    fn count(&self, reason: DropReason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Current counts for every reason.
    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.0[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

struct Shared {
    table: ArcSwap<PeerTable>,
    tun: Tun,
    udp: UdpSocket,
    private: StaticSecret,
    public: PublicKey,
    rate_limiter: Arc<RateLimiter>,
    drops: DropCounters,
    stop: AtomicBool,
    failed: Mutex<Option<String>>,
    next_index: AtomicU32,
}

/// A running datapath; stops its threads on drop.
pub struct Datapath {
    shared: Arc<Shared>,
    specs: Mutex<Vec<PeerSpec>>,
    threads: Vec<JoinHandle<()>>,
}

impl Datapath {
    /// Starts moving packets between `tun` and `udp`, with no peers yet.
    pub fn start(tun: Tun, udp: UdpSocket, private_key: [u8; 32]) -> std::io::Result<Datapath> {
        udp.set_nonblocking(true)?;
        let private = StaticSecret::from(private_key);
        let public = PublicKey::from(&private);
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(PeerTable::default()),
            tun,
            udp,
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            drops: DropCounters::default(),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
            // Random start: a restarted gateway must not reuse the indexes its peers still hold.
            next_index: AtomicU32::new(rand_core::RngCore::next_u32(&mut rand_core::OsRng)),
        });
        let spawn = |name: &str, body: fn(&Shared) -> std::io::Result<()>| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    if let Err(e) = body(&shared) {
                        tracing::error!(thread = %std::thread::current().name().unwrap_or("?"), error = %e, "datapath thread failed");
                        *shared.failed.lock() = Some(e.to_string());
                    }
                })
        };
        let threads = vec![
            spawn("cw-tun-rx", tun_loop)?,
            spawn("cw-udp-rx", udp_loop)?,
            spawn("cw-timers", timer_loop)?,
        ];
        Ok(Datapath {
            shared,
            specs: Mutex::new(Vec::new()),
            threads,
        })
    }

    /// Brings the peers to `desired`, touching only those that changed; returns what changed.
    pub fn set_peers(&self, desired: &[PeerSpec]) -> PeerPlan {
        let mut specs = self.specs.lock();
        let plan = plan_peers(&specs, desired);
        if plan.is_empty() {
            return plan;
        }
        let old = self.shared.table.load();
        let mut peers: Vec<Arc<Peer>> = Vec::with_capacity(desired.len());
        let mut fresh = Vec::new();
        for spec in desired {
            let changed = |list: &[PeerSpec]| list.iter().any(|p| p.cluster_id == spec.cluster_id);
            let existing = old.peer(&spec.cluster_id);
            match existing {
                Some(peer) if !changed(&plan.replace) => {
                    if changed(&plan.update) {
                        let before = specs.iter().find(|p| p.cluster_id == spec.cluster_id);
                        // A configured endpoint that changed overrides one learned by roaming.
                        if before.map(|b| b.endpoint) != Some(spec.endpoint) {
                            peer.state.lock().endpoint = spec.endpoint;
                        }
                    }
                    peers.push(Arc::clone(peer));
                }
                _ => {
                    let peer = Arc::new(self.new_peer(spec));
                    fresh.push(Arc::clone(&peer));
                    peers.push(peer);
                }
            }
        }
        self.shared
            .table
            .store(Arc::new(PeerTable::new(peers, desired)));
        *specs = desired.to_vec();
        drop(specs);
        // Start handshakes now rather than on the first packet, so the tunnel is up before traffic.
        let mut buf = vec![0u8; OVERHEAD];
        for peer in fresh {
            let mut state = peer.state.lock();
            if let (TunnResult::WriteToNetwork(init), Some(to)) = (
                state.tunn.format_handshake_initiation(&mut buf, false),
                state.endpoint,
            ) {
                send_udp(&self.shared, init, to);
            }
        }
        plan
    }

    fn new_peer(&self, spec: &PeerSpec) -> Peer {
        let index = self.shared.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let tunn = Tunn::new(
            self.shared.private.clone(),
            PublicKey::from(spec.public_key),
            None,
            spec.persistent_keepalive,
            index,
            Some(Arc::clone(&self.shared.rate_limiter)),
        );
        Peer {
            cluster_id: spec.cluster_id.clone(),
            public_key: spec.public_key,
            index,
            state: Mutex::new(PeerState {
                tunn,
                endpoint: spec.endpoint,
            }),
            counters: PeerCounters::default(),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.public.to_bytes()
    }

    /// The UDP socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.udp.local_addr()
    }

    /// Counters of every peer, for metrics and status.
    pub fn peer_snapshots(&self) -> Vec<PeerSnapshot> {
        let table = self.shared.table.load();
        table
            .peers
            .iter()
            .map(|p| {
                let c = &p.counters;
                let ms = c.last_handshake_ms.load(Ordering::Relaxed);
                PeerSnapshot {
                    cluster_id: p.cluster_id.clone(),
                    endpoint: p.state.lock().endpoint,
                    rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: c.rx_packets.load(Ordering::Relaxed),
                    tx_packets: c.tx_packets.load(Ordering::Relaxed),
                    handshakes: c.handshakes.load(Ordering::Relaxed),
                    last_handshake: (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
                }
            })
            .collect()
    }

    /// Drops by reason.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        self.shared.drops.snapshot()
    }

    /// `Err` with the reason once a datapath thread has failed.
    pub fn health(&self) -> Result<(), String> {
        match &*self.shared.failed.lock() {
            Some(reason) => Err(format!("datapath stopped: {reason}")),
            None => Ok(()),
        }
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn send_udp(shared: &Shared, datagram: &[u8], to: SocketAddr) {
    // A full socket buffer or an unreachable peer loses this datagram only; WireGuard
    // retransmits handshakes and the inner protocol retransmits data.
    if let Err(e) = shared.udp.send_to(datagram, to) {
        tracing::debug!(%to, error = %e, "udp send failed");
    }
}

fn tun_loop(shared: &Shared) -> std::io::Result<()> {
    let mut packet = vec![0u8; BUF_SIZE];
    let mut out = vec![0u8; BUF_SIZE + OVERHEAD];
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(n) = shared.tun.recv(&mut packet, POLL)? else {
            continue;
        };
        encrypt_one(shared, &packet[..n], &mut out);
    }
    Ok(())
}

fn encrypt_one(shared: &Shared, packet: &[u8], out: &mut [u8]) {
    let Some(dst) = Tunn::dst_address(packet) else {
        shared.drops.count(DropReason::Malformed);
        return;
    };
    if is_link_local(dst) {
        // The kernel's own neighbour and multicast chatter on the TUN link (MLD,
        // router solicitations) has no remote owner; discarding it is not a drop.
        return;
    }
    let table = shared.table.load();
    let Some(peer) = table.cidrs.lookup(dst) else {
        shared.drops.count(DropReason::NoPeer);
        return;
    };
    let mut state = peer.state.lock();
    let Some(to) = state.endpoint else {
        shared.drops.count(DropReason::NoEndpoint);
        return;
    };
    match state.tunn.encapsulate(packet, out) {
        TunnResult::WriteToNetwork(datagram) => {
            drop(state);
            if is_data(datagram) {
                PeerCounters::add(&peer.counters.tx_bytes, packet.len());
                PeerCounters::add(&peer.counters.tx_packets, 1);
            }
            send_udp(shared, datagram, to);
        }
        TunnResult::Err(e) => {
            tracing::debug!(peer = %peer.cluster_id, error = ?e, "encapsulate failed");
            shared.drops.count(DropReason::Invalid);
        }
        // Queued inside the Tunn until the handshake completes.
        _ => {}
    }
}

fn is_link_local(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local(),
    }
}

fn is_data(datagram: &[u8]) -> bool {
    datagram.first() == Some(&4)
}

fn udp_loop(shared: &Shared) -> std::io::Result<()> {
    let mut datagram = vec![0u8; BUF_SIZE];
    let mut out = vec![0u8; BUF_SIZE];
    while !shared.stop.load(Ordering::Relaxed) {
        if !wait_readable(shared.udp.as_fd(), POLL)? {
            continue;
        }
        loop {
            match shared.udp.recv_from(&mut datagram) {
                Ok((n, from)) => {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    decrypt_one(shared, &datagram[..n], from, &mut out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends surface here; they are not fatal.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn find_peer(shared: &Shared, table: &PeerTable, datagram: &[u8]) -> Option<Arc<Peer>> {
    let index = match Tunn::parse_incoming_packet(datagram).ok()? {
        Packet::HandshakeInit(init) => {
            let half = parse_handshake_anon(&shared.private, &shared.public, &init).ok()?;
            return table.by_key.get(&half.peer_static_public).cloned();
        }
        Packet::HandshakeResponse(p) => p.receiver_idx,
        Packet::PacketCookieReply(p) => p.receiver_idx,
        Packet::PacketData(p) => p.receiver_idx,
    };
    table.by_index.get(&(index >> 8)).cloned()
}

fn decrypt_one(shared: &Shared, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
    let table = shared.table.load();
    let Some(peer) = find_peer(shared, &table, datagram) else {
        shared.drops.count(DropReason::UnknownPeer);
        return;
    };
    let mut state = peer.state.lock();
    let mut flush = false;
    match state.tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => {}
        TunnResult::Err(e) => {
            let reason = match e {
                WireGuardError::WrongKey | WireGuardError::WrongIndex => DropReason::UnknownPeer,
                _ => DropReason::Invalid,
            };
            tracing::debug!(peer = %peer.cluster_id, %from, error = ?e, "decapsulate failed");
            shared.drops.count(reason);
            return;
        }
        TunnResult::WriteToNetwork(reply) => {
            send_udp(shared, reply, from);
            flush = true;
        }
        TunnResult::WriteToTunnelV4(inner, src) => {
            deliver(shared, &table, &peer, inner, IpAddr::V4(src))
        }
        TunnResult::WriteToTunnelV6(inner, src) => {
            deliver(shared, &table, &peer, inner, IpAddr::V6(src))
        }
    }
    // The packet authenticated: follow the peer if it roamed.
    state.endpoint = Some(from);
    if flush {
        while let TunnResult::WriteToNetwork(queued) = state.tunn.decapsulate(None, &[], out) {
            send_udp(shared, queued, from);
        }
    }
}

/// Cryptokey routing on the way in: only sources inside the sender's own CIDRs pass.
fn deliver(shared: &Shared, table: &PeerTable, peer: &Arc<Peer>, inner: &[u8], src: IpAddr) {
    match table.cidrs.lookup(src) {
        Some(owner) if Arc::ptr_eq(owner, peer) => {
            PeerCounters::add(&peer.counters.rx_bytes, inner.len());
            PeerCounters::add(&peer.counters.rx_packets, 1);
            if let Err(e) = shared.tun.send(inner) {
                tracing::debug!(error = %e, "tun write failed");
                shared.drops.count(DropReason::QueueFull);
            }
        }
        _ => {
            tracing::debug!(peer = %peer.cluster_id, %src, "dropping packet with a source outside the peer's CIDRs");
            shared.drops.count(DropReason::SourceNotAllowed);
        }
    }
}

fn timer_loop(shared: &Shared) -> std::io::Result<()> {
    let mut out = vec![0u8; BUF_SIZE];
    let mut last_reset = std::time::Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TIMER_TICK);
        if last_reset.elapsed() >= Duration::from_secs(1) {
            shared.rate_limiter.reset_count();
            last_reset = std::time::Instant::now();
        }
        let table = shared.table.load();
        for peer in &table.peers {
            let mut state = peer.state.lock();
            if let TunnResult::WriteToNetwork(datagram) = state.tunn.update_timers(&mut out) {
                if let Some(to) = state.endpoint {
                    send_udp(shared, datagram, to);
                }
            }
            let since = state.tunn.stats().0;
            drop(state);
            if let Some(since) = since {
                note_handshake(&peer.counters, since);
            }
        }
    }
    Ok(())
}

/// Records a completed handshake when the session's handshake time moves forward.
fn note_handshake(counters: &PeerCounters, since: Duration) {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return;
    };
    let at = now.saturating_sub(since).as_millis() as u64;
    let last = counters.last_handshake_ms.load(Ordering::Relaxed);
    // The time is derived from "seconds since", which jitters by a tick; a real new
    // handshake is at least REKEY_TIMEOUT (5 s) after the previous one.
    if at > last + 1_000 {
        counters.last_handshake_ms.store(at, Ordering::Relaxed);
        counters.handshakes.fetch_add(1, Ordering::Relaxed);
    }
}
