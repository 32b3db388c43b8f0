//! The WireGuard datapath: one TUN interface, one UDP socket, per remote cluster one
//! `noise::Tunn` per gateway candidate (see [`peers`]).
//!
//! One packet thread serves both directions (TUN → encrypt → UDP and UDP → decrypt →
//! TUN) with segmentation offloads on both sides, and a timer thread runs handshakes,
//! rekeys and keepalives. They read the peer table through an `ArcSwap` (no lock) and
//! lock only the one peer a packet belongs to, so peers never contend with each other
//! and a change to the table never blocks the packet path.

use crate::cidr::CidrMap;
use crate::offload::{Coalescer, VnetHdr, MAX_PACKET, VNET_HDR_LEN};
use crate::peers::{
    plan_peers, Peer, PeerCounters, PeerPlan, PeerSpec, PeerState, PeerTable, Session,
};
use crate::stats::{DropReason, PeerSnapshot};
use crate::tun::{wait_ready, Tun};
use crate::udp::{Underlay, MAX_GSO_BYTES, MAX_SEGMENTS};
use crate::{host, limiter, offload, peers};
use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest datagram or packet handled.
const BUF_SIZE: usize = 65_535;
/// Room for a whole handshake message.
const OVERHEAD: usize = 148;
/// WireGuard's bytes around each inner packet: 16 of header, 16 of tag.
const DATA_OVERHEAD: usize = 32;
/// Room the encrypted datagrams of one `len`-byte TUN read can take at most: segments at
/// the smallest MSS Linux sends (48 bytes), each with up to 120 bytes of headers and
/// WireGuard's 32, plus a handshake.
const fn wire_room(len: usize) -> usize {
    len + (len / 48 + 1) * (120 + DATA_OVERHEAD) + OVERHEAD
}
/// Encrypted datagrams waiting to be sent: room for one TSO super-packet at worst, and for
/// hundreds of small packets (acknowledgements) gathered over several TUN reads.
const WIRE_ARENA: usize = wire_room(MAX_PACKET);
/// How long a blocked read waits before checking whether to stop.
const POLL: Duration = Duration::from_millis(200);
/// How often handshake, rekey and keepalive timers run (boringtun's own device uses 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);
/// How long a session with a remote key listed no more may serve while no session with
/// a listed key proves itself. When a remote cluster rotates, it holds the new key before
/// we learn it, so the new session proves itself in one round trip (or one handshake
/// retry); a key removed for good stops carrying traffic within this.
pub const REMOTE_KEY_GRACE: Duration = Duration::from_secs(10);
/// How long sessions under our own previous key may serve after we rotate: every remote
/// cluster must learn the new public key through the control plane first, which can
/// take a broker resync. After it, the old key is forgotten even if a peer never moved.
pub const OWN_KEY_GRACE: Duration = Duration::from_secs(120);
/// Handshakes per second accepted before cookies are demanded. Each handshake passes the
/// shared limiter twice (our check before attributing it, then `Tunn::decapsulate`'s own),
/// so this is twice boringtun's default of 100.
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// WireGuard message types (first byte).
const MSG_INIT: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_COOKIE_REPLY: u8 = 3;
const MSG_DATA: u8 = 4;
/// Size of a cookie reply message.
const COOKIE_REPLY_LEN: usize = 64;

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

/// One of our own static keys, with the limiter that checks mac1 against it.
struct OwnKey {
    private: StaticSecret,
    public: PublicKey,
    rate_limiter: Arc<RateLimiter>,
}

impl OwnKey {
    fn new(private_key: [u8; 32]) -> Arc<OwnKey> {
        let private = StaticSecret::from(private_key);
        let public = PublicKey::from(&private);
        Arc::new(OwnKey {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
        })
    }
}

/// Our key, and while it rotates the one before: sessions under the old key keep carrying
/// traffic until the remote side, told the new key, completes a handshake under it.
struct OwnKeys {
    current: Arc<OwnKey>,
    retiring: Option<Arc<OwnKey>>,
}

impl OwnKeys {
    fn all(&self) -> impl Iterator<Item = &Arc<OwnKey>> {
        std::iter::once(&self.current).chain(self.retiring.as_ref())
    }
}

struct Shared {
    table: ArcSwap<PeerTable>,
    /// This cluster's own CIDRs: the only destinations a peer may send to.
    local: ArcSwap<CidrMap<()>>,
    /// What a peer may send to the gateway node's own tunnel address.
    host: ArcSwap<host::HostFilter>,
    tun: Tun,
    udp: Underlay,
    keys: ArcSwap<OwnKeys>,
    drops: DropCounters,
    stop: AtomicBool,
    failed: Mutex<Option<String>>,
    next_index: AtomicU32,
}

/// Buffers of the TUN → UDP direction.
struct TxPath {
    packet: Vec<u8>,
    wire: Wire,
}

/// Buffers of the UDP → TUN direction.
struct RxPath {
    run: Vec<u8>,
    cmsg: Vec<u8>,
    out: Vec<u8>,
    coalescer: Coalescer,
    /// Initiations each source may have attributed (an X25519 exchange each).
    initiations: limiter::SourceLimiter,
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
        let udp = Underlay::new(udp)?;
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(PeerTable::default()),
            local: ArcSwap::from_pointee(CidrMap::default()),
            host: ArcSwap::from_pointee(host::HostFilter::default()),
            tun,
            udp,
            keys: ArcSwap::from_pointee(OwnKeys {
                current: OwnKey::new(private_key),
                retiring: None,
            }),
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
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&shared)));
                    let failure = match outcome {
                        Ok(Ok(())) if shared.stop.load(Ordering::Relaxed) => None,
                        Ok(Ok(())) => Some("exited unexpectedly".to_owned()),
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(panic) => Some(format!(
                            "panicked: {}",
                            panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        )),
                    };
                    if let Some(reason) = failure {
                        let thread = std::thread::current().name().unwrap_or("?").to_owned();
                        tracing::error!(%thread, %reason, "datapath thread stopped; /healthz now fails");
                        *shared.failed.lock() = Some(format!("{thread} {reason}"));
                    }
                })
        };
        let io = spawn("cw-io", io_loop)?;
        let timers = match spawn("cw-timers", timer_loop) {
            Ok(timers) => timers,
            Err(e) => {
                // Do not leave the packet thread running without its timers.
                shared.stop.store(true, Ordering::Relaxed);
                let _ = io.join();
                return Err(e);
            }
        };
        let threads = vec![io, timers];
        Ok(Datapath {
            shared,
            specs: Mutex::new(Vec::new()),
            threads,
        })
    }

    /// Brings the peers to `desired`, touching only those that changed; returns what changed.
    ///
    /// A peer whose gateways changed keeps the sessions of those still listed; a session of
    /// a gateway listed no more serves on until another session of its cluster proves
    /// itself. A gateway newly listed first is sent a handshake initiation, so it becomes
    /// current as soon as it answers — and never if it does not.
    pub fn set_peers(&self, desired: &[PeerSpec]) -> PeerPlan {
        let mut specs = self.specs.lock();
        let plan = plan_peers(&specs, desired);
        if plan.is_empty() {
            return plan;
        }
        let keys = self.shared.keys.load_full();
        let old = self.shared.table.load();
        let mut peers: Vec<Arc<Peer>> = Vec::with_capacity(desired.len());
        let mut initiate: Vec<(Arc<Peer>, u32)> = Vec::new();
        for spec in desired {
            let listed = |list: &[PeerSpec]| list.iter().any(|p| p.cluster_id == spec.cluster_id);
            match old.peer(&spec.cluster_id) {
                Some(peer) if !listed(&plan.replace) => {
                    if listed(&plan.update) {
                        let before = specs.iter().find(|p| p.cluster_id == spec.cluster_id);
                        let first = self.update_peer(peer, before, spec, &keys);
                        initiate.extend(first.map(|index| (Arc::clone(peer), index)));
                    }
                    peers.push(Arc::clone(peer));
                }
                _ => {
                    let peer = Arc::new(self.new_peer(spec, &keys));
                    // Every candidate is knocked on: whichever is active answers and becomes
                    // current, even if the control plane's order is stale.
                    let indexes: Vec<u32> =
                        peer.state.lock().sessions.iter().map(|s| s.index).collect();
                    initiate.extend(indexes.into_iter().map(|i| (Arc::clone(&peer), i)));
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
        self.send_initiations(&initiate);
        plan
    }

    /// Sends a handshake initiation on each of these sessions.
    fn send_initiations(&self, sessions: &[(Arc<Peer>, u32)]) {
        let mut buf = vec![0u8; OVERHEAD];
        for (peer, index) in sessions {
            let mut state = peer.state.lock();
            let Some(slot) = state.by_index(*index) else {
                continue;
            };
            let current = slot == state.current;
            let session = &mut state.sessions[slot];
            if let (TunnResult::WriteToNetwork(init), Some(to)) = (
                session.tunn.format_handshake_initiation(&mut buf, false),
                session.endpoint,
            ) {
                count_initiation(&peer.counters, init, current);
                send_udp(&self.shared, init, to);
            }
        }
    }

    /// Brings an existing peer's sessions to `spec`; returns the session to initiate on when the
    /// gateway listed first changed.
    fn update_peer(
        &self,
        peer: &Peer,
        before: Option<&PeerSpec>,
        spec: &PeerSpec,
        keys: &OwnKeys,
    ) -> Option<u32> {
        let own = keys.current.public.to_bytes();
        let mut state = peer.state.lock();
        for gateway in spec.gateways() {
            let was =
                before.and_then(|b| b.gateways().find(|g| g.public_key == gateway.public_key));
            let mut found = false;
            for session in state
                .sessions
                .iter_mut()
                .filter(|s| s.remote_key == gateway.public_key)
            {
                found = true;
                if session.own_key == own {
                    session.retiring = None;
                } else {
                    session.retire_by(Instant::now() + OWN_KEY_GRACE);
                }
                // A configured endpoint that changed overrides one learned by roaming.
                if was.map(|w| w.endpoint) != Some(gateway.endpoint) {
                    session.endpoint = gateway.endpoint;
                }
            }
            if !found {
                let session = self.new_session(&gateway, &keys.current, spec.persistent_keepalive);
                state.sessions.push(session);
            }
        }
        let revoked = Instant::now() + REMOTE_KEY_GRACE;
        for session in &mut state.sessions {
            if !spec.gateways().any(|g| g.public_key == session.remote_key) {
                session.retire_by(revoked);
            }
        }
        let first_changed = before.is_none_or(|b| b.public_key != spec.public_key);
        let current_key = state.current().map(|s| (s.remote_key, s.own_key));
        if first_changed && current_key != Some((spec.public_key, own)) {
            let slot = state.by_keys(&spec.public_key, &own)?;
            return Some(state.sessions[slot].index);
        }
        None
    }

    fn new_session(
        &self,
        gateway: &peers::RemoteGateway,
        own: &OwnKey,
        keepalive: Option<u16>,
    ) -> Session {
        let index = self.shared.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        Session {
            remote_key: gateway.public_key,
            own_key: own.public.to_bytes(),
            index,
            tunn: Tunn::new(
                own.private.clone(),
                PublicKey::from(gateway.public_key),
                None,
                keepalive,
                index,
                Some(Arc::clone(&own.rate_limiter)),
            ),
            endpoint: gateway.endpoint,
            retried_at: None,
            retiring: None,
            answered: false,
        }
    }

    fn new_peer(&self, spec: &PeerSpec, keys: &OwnKeys) -> Peer {
        let sessions = spec
            .gateways()
            .map(|g| self.new_session(&g, &keys.current, spec.persistent_keepalive))
            .collect();
        Peer {
            cluster_id: spec.cluster_id.clone(),
            state: Mutex::new(PeerState {
                sessions,
                current: 0,
            }),
            counters: PeerCounters::default(),
        }
    }

    /// Rotates our own static key to `private_key` without a gap: every session under the
    /// old key keeps carrying traffic, and a session under the new key is added beside it
    /// for every remote gateway. A session under the new key becomes current once the remote
    /// side (which learns the new public key through the control plane) completes a
    /// handshake on it; then the old one goes. Returns `false` when the key is already ours.
    pub fn set_private_key(&self, private_key: [u8; 32]) -> bool {
        let keys = self.shared.keys.load_full();
        let new = OwnKey::new(private_key);
        if new.public == keys.current.public {
            return false;
        }
        let old = keys.current.public.to_bytes();
        let gone = keys.retiring.as_ref().map(|k| k.public.to_bytes());
        let specs = self.specs.lock();
        self.shared.keys.store(Arc::new(OwnKeys {
            current: Arc::clone(&new),
            retiring: Some(Arc::clone(&keys.current)),
        }));
        let table = self.shared.table.load_full();
        let mut initiate = Vec::new();
        for peer in &table.peers {
            let Some(spec) = specs.iter().find(|s| s.cluster_id == peer.cluster_id) else {
                continue;
            };
            let mut state = peer.state.lock();
            // A rotation before the last one finished: its old key is dropped for good.
            state.remove_where(|s| Some(s.own_key) == gone);
            let until = Instant::now() + OWN_KEY_GRACE;
            for session in state.sessions.iter_mut().filter(|s| s.own_key == old) {
                session.retire_by(until);
            }
            let current_remote = state.current().map(|s| s.remote_key);
            for gateway in spec.gateways() {
                let session = self.new_session(&gateway, &new, spec.persistent_keepalive);
                if Some(gateway.public_key) == current_remote {
                    initiate.push((Arc::clone(peer), session.index));
                }
                state.sessions.push(session);
            }
        }
        let peers = table.peers.clone();
        self.shared
            .table
            .store(Arc::new(PeerTable::new(peers, &specs)));
        drop(specs);
        self.send_initiations(&initiate);
        true
    }

    /// Sets this cluster's own CIDRs; packets from peers to anywhere else are dropped.
    ///
    /// Without this a peer's packets could reach whatever the gateway node can route to
    /// — its node network, its host services — not just the pods and services it joins.
    pub fn set_local_cidrs(&self, cidrs: &[ipnet::IpNet]) {
        self.shared
            .local
            .store(Arc::new(CidrMap::new(cidrs.iter().map(|c| (*c, ())))));
    }

    /// Sets the gateway's own address inside the tunnel (its health-check address): peers
    /// reach only health probes, the benchmark sink and answers to what the gateway opened
    /// there, never the node's host services (see [`host`]).
    pub fn set_host_address(&self, ip: Option<IpAddr>) {
        self.shared
            .host
            .store(Arc::new(host::HostFilter::for_address(ip)));
    }

    /// Our public key (the newest, while a rotation is under way).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.keys.load().current.public.to_bytes()
    }

    /// The UDP socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.udp.local_addr()
    }

    /// Whether the TUN interface does TCP segmentation offload.
    pub fn offload(&self) -> bool {
        self.shared.tun.offload()
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
                    endpoint: p.state.lock().current().and_then(|s| s.endpoint),
                    rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: c.rx_packets.load(Ordering::Relaxed),
                    tx_packets: c.tx_packets.load(Ordering::Relaxed),
                    handshakes: c.handshakes.load(Ordering::Relaxed),
                    last_handshake: (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)),
                    unanswered_initiations: c.initiations.load(Ordering::Relaxed),
                    rtt: None,
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
    if let Err(e) = shared.udp.send_one(datagram, to) {
        tracing::debug!(%to, error = %e, "udp send failed");
        shared.drops.count(DropReason::SendFailed);
    }
}

/// The packet thread: both directions on one thread, sleeping in one `poll` on both
/// descriptors. A request delivered to the TUN interface whose reply comes straight back
/// (a ping, a database acknowledging a write) is answered without a second thread being
/// woken; in bulk transfer each gateway's heavy work is one direction anyway. Spinning
/// instead of sleeping was measured and rejected: on two cores it starves the very
/// processes whose replies it waits for.
fn io_loop(shared: &Shared) -> std::io::Result<()> {
    let mut tx = TxPath {
        packet: vec![0u8; VNET_HDR_LEN + MAX_PACKET],
        wire: Wire::new(),
    };
    let mut rx = RxPath {
        run: vec![0u8; BUF_SIZE],
        cmsg: Underlay::cmsg_buffer(),
        out: vec![0u8; BUF_SIZE],
        coalescer: Coalescer::new(),
        initiations: limiter::SourceLimiter::default(),
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let [tun_ready, udp_ready] = wait_ready(
            [
                (shared.tun.fd(), libc::POLLIN),
                (shared.udp.fd(), libc::POLLIN),
            ],
            POLL,
        )?;
        if tun_ready {
            drain_tun(shared, &mut tx)?;
        }
        if udp_ready {
            drain_udp(shared, &mut rx);
        }
    }
    Ok(())
}

/// Most TUN reads or UDP runs handled per turn, so one direction cannot starve the other.
const DRAIN_LIMIT: usize = 64;

/// Reads and sends whatever the TUN interface holds now, without waiting.
///
/// Datagrams are gathered over the reads and sent when the TUN interface is empty (or the
/// arena full): a burst of small packets to one peer, such as the acknowledgements of a
/// bulk stream, leaves in one GSO send instead of one `sendto` each, and arrives in one
/// GRO receive. A lone packet (a ping, a query) leaves after the one read that finds
/// nothing more, exactly as soon as before.
fn drain_tun(shared: &Shared, tx: &mut TxPath) -> std::io::Result<usize> {
    let mut handled = 0;
    let outcome = loop {
        if handled == DRAIN_LIMIT {
            break Ok(handled);
        }
        let n = match shared.tun.try_recv(&mut tx.packet) {
            Ok(Some(n)) => n,
            Ok(None) => break Ok(handled),
            Err(e) => break Err(e),
        };
        handled += 1;
        let Some(hdr) = VnetHdr::decode(&tx.packet[..n]) else {
            shared.drops.count(DropReason::Malformed);
            continue;
        };
        if tx.wire.tail() + wire_room(n) > tx.wire.buf.len() {
            tx.wire.send(shared);
        }
        encrypt_batch(shared, &hdr, &mut tx.packet[VNET_HDR_LEN..n], &mut tx.wire);
    };
    tx.wire.send(shared);
    outcome
}

/// Encrypted datagrams waiting to be sent: runs of equal-size datagrams to one
/// destination, each run one GSO send.
struct Wire {
    buf: Vec<u8>,
    runs: Vec<Run>,
    handshake: Vec<u8>,
}

#[derive(Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    segment: usize,
    to: SocketAddr,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            buf: vec![0u8; WIRE_ARENA],
            runs: Vec::with_capacity(8),
            handshake: Vec::with_capacity(OVERHEAD),
        }
    }

    /// Sends every gathered run and empties the arena.
    fn send(&mut self, shared: &Shared) {
        for run in &self.runs {
            if let Err(e) =
                shared
                    .udp
                    .send_segments(&self.buf[run.start..run.end], run.segment, run.to)
            {
                tracing::debug!(to = %run.to, error = %e, "udp send failed");
                shared.drops.count(DropReason::SendFailed);
            }
        }
        self.runs.clear();
    }

    /// Where the next datagram is written.
    fn tail(&self) -> usize {
        self.runs.last().map_or(0, |r| r.end)
    }

    /// Records a datagram of `len` bytes for `to` just written at [`Wire::tail`].
    fn push(&mut self, len: usize, to: SocketAddr) {
        let at = self.tail();
        match self.runs.last_mut() {
            // A run continues while every datagram but the last is exactly one segment long.
            Some(run)
                if run.to == to
                    && (run.end - run.start) % run.segment == 0
                    && len <= run.segment
                    && (run.end - run.start) / run.segment < MAX_SEGMENTS
                    && run.end + len - run.start <= MAX_GSO_BYTES =>
            {
                run.end += len;
            }
            _ => self.runs.push(Run {
                start: at,
                end: at + len,
                segment: len,
                to,
            }),
        }
    }
}

/// Encrypts the segments of one TUN read for their peer into `wire`; a handshake it
/// starts is sent at once.
fn encrypt_batch(shared: &Shared, hdr: &VnetHdr, packet: &mut [u8], wire: &mut Wire) {
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
    wire.handshake.clear();
    let (mut bytes, mut packets) = (0, 0);
    let mut state = peer.state.lock();
    let Some(session) = state.current_mut() else {
        shared.drops.count(DropReason::NoEndpoint);
        return;
    };
    let Some(to) = session.endpoint else {
        shared.drops.count(DropReason::NoEndpoint);
        return;
    };
    let segmented = offload::segment(hdr, packet, |segment| {
        let at = wire.tail();
        match session.tunn.encapsulate(segment, &mut wire.buf[at..]) {
            TunnResult::WriteToNetwork(datagram) if is_data(datagram) => {
                let n = datagram.len();
                wire.push(n, to);
                bytes += segment.len();
                packets += 1;
            }
            // No session yet: the segment is queued in the Tunn and this is the initiation.
            TunnResult::WriteToNetwork(handshake) => {
                wire.handshake.clear();
                wire.handshake.extend_from_slice(handshake);
            }
            TunnResult::Err(e) => {
                tracing::debug!(peer = %peer.cluster_id, error = ?e, "encapsulate failed");
                shared.drops.count(DropReason::Invalid);
            }
            _ => {}
        }
    });
    if let Err(e) = segmented {
        tracing::debug!(error = ?e, ?hdr, "unusable packet from the TUN interface");
        shared.drops.count(DropReason::Malformed);
    }
    // Release the peer's lock before counting and sending, so its receive path is never kept waiting.
    drop(state);
    PeerCounters::add(&peer.counters.tx_bytes, bytes);
    PeerCounters::add(&peer.counters.tx_packets, packets);
    if !wire.handshake.is_empty() {
        count_initiation(&peer.counters, &wire.handshake, true);
        send_udp(shared, &wire.handshake, to);
    }
}

fn is_link_local(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(a) => a.is_multicast() || a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local(),
    }
}

fn is_data(datagram: &[u8]) -> bool {
    datagram.first() == Some(&MSG_DATA)
}

/// Receives, decrypts and delivers whatever the UDP socket holds now, without waiting.
fn drain_udp(shared: &Shared, rx: &mut RxPath) -> usize {
    let RxPath {
        run,
        cmsg,
        out,
        coalescer,
        initiations,
    } = rx;
    let mut emit = |packet: &[u8]| {
        if let Err(e) = shared.tun.send(packet) {
            tracing::debug!(error = %e, "tun write failed");
            shared.drops.count(DropReason::QueueFull);
        }
    };
    let mut handled = 0;
    while handled < DRAIN_LIMIT {
        let received = match shared.udp.recv(run, cmsg) {
            Ok(Some(received)) => received,
            Ok(None) => break,
            // One bad receive (an odd ICMP error, a datagram without an address) is no
            // reason to stop receiving from every peer.
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                shared.drops.count(DropReason::Invalid);
                break;
            }
        };
        handled += 1;
        let mut tally = RxTally::default();
        for datagram in run[..received.len].chunks(received.segment) {
            decrypt_one(
                shared,
                datagram,
                received.from,
                out,
                coalescer,
                &mut emit,
                &mut tally,
                initiations,
            );
        }
        coalescer.flush(&mut emit);
        tally.flush();
    }
    handled
}

/// Receive counters gathered over a run and added once, to keep atomics off the per-packet path.
#[derive(Default)]
struct RxTally {
    peer: Option<Arc<Peer>>,
    bytes: usize,
    packets: usize,
}

impl RxTally {
    fn count(&mut self, peer: &Arc<Peer>, bytes: usize) {
        if !self.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, peer)) {
            self.flush();
            self.peer = Some(Arc::clone(peer));
        }
        self.bytes += bytes;
        self.packets += 1;
    }

    fn flush(&mut self) {
        if let Some(peer) = self.peer.take() {
            PeerCounters::add(&peer.counters.rx_bytes, self.bytes);
            PeerCounters::add(&peer.counters.rx_packets, self.packets);
        }
        self.bytes = 0;
        self.packets = 0;
    }
}

/// Which session of a peer a verified packet is for.
#[derive(Clone, Copy)]
enum Target {
    /// Data, responses and cookie replies name our session index.
    Index(u32),
    /// An initiation names the sender's static key, under one of our keys.
    Keys { remote: [u8; 32], own: [u8; 32] },
}

/// The peer a verified packet belongs to: by key for initiations, by our session index otherwise.
fn find_peer(
    keys: &OwnKeys,
    table: &PeerTable,
    packet: &Packet<'_>,
) -> Option<(Arc<Peer>, Target)> {
    let index = match packet {
        Packet::HandshakeInit(init) => {
            // Encrypted to one of our keys: the newest first, the retiring one while it lasts.
            return keys.all().find_map(|key| {
                let half = parse_handshake_anon(&key.private, &key.public, init).ok()?;
                let peer = table.by_key.get(&half.peer_static_public)?;
                Some((
                    Arc::clone(peer),
                    Target::Keys {
                        remote: half.peer_static_public,
                        own: key.public.to_bytes(),
                    },
                ))
            });
        }
        Packet::HandshakeResponse(p) => p.receiver_idx,
        Packet::PacketCookieReply(p) => p.receiver_idx,
        Packet::PacketData(p) => p.receiver_idx,
    };
    let index = index >> 8;
    let peer = table.by_index.get(&index)?;
    Some((Arc::clone(peer), Target::Index(index)))
}

/// Checks mac1 (and the load) against our keys: handshakes to a retiring key still pass.
/// Each key's check may write a cookie reply, hence one buffer each.
fn verify<'a>(
    keys: &OwnKeys,
    from: SocketAddr,
    datagram: &'a [u8],
    cookies: &'a mut [[u8; COOKIE_REPLY_LEN]; 2],
) -> Result<Packet<'a>, TunnResult<'a>> {
    let [new, old] = cookies;
    let first = keys
        .current
        .rate_limiter
        .verify_packet(Some(from.ip()), datagram, new);
    match (first, &keys.retiring) {
        (Err(TunnResult::Err(_)), Some(retiring)) => {
            retiring
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, old)
        }
        (result, _) => result,
    }
}

/// Records that `slot` proved itself (a handshake we initiated completed, or the first
/// packet after one we answered): it becomes the session traffic goes out on.
fn promote_proven(peer: &Peer, state: &mut PeerState, slot: usize) {
    if state.promote(slot) {
        peer.counters.switches.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = state.current() {
            tracing::info!(peer = %peer.cluster_id, endpoint = ?s.endpoint, "another gateway of the remote cluster proved itself: sending through it");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decrypt_one(
    shared: &Shared,
    datagram: &[u8],
    from: SocketAddr,
    out: &mut [u8],
    coalescer: &mut Coalescer,
    emit: &mut impl FnMut(&[u8]),
    tally: &mut RxTally,
    initiations: &mut limiter::SourceLimiter,
) {
    let table = shared.table.load();
    let keys = shared.keys.load();
    // mac1 and the load check come before anything costly: an initiation costs an X25519
    // exchange to attribute, and unauthenticated floods must not buy that for free.
    let mut cookies = [[0u8; COOKIE_REPLY_LEN]; 2];
    let packet = match verify(&keys, from, datagram, &mut cookies) {
        Ok(packet) => packet,
        Err(TunnResult::WriteToNetwork(reply)) => {
            // Under load: ask for a cookie. Nothing is authenticated yet, so nothing moves.
            send_udp(shared, reply, from);
            return;
        }
        Err(_) => {
            shared.drops.count(DropReason::Invalid);
            return;
        }
    };
    let kind = datagram[0];
    // Attributing an initiation costs an X25519 exchange per key of ours; a source that
    // answers cookies has passed the check above, so each one is held to its own budget.
    if matches!(packet, Packet::HandshakeInit(_)) && !initiations.allow(from.ip(), Instant::now()) {
        shared.drops.count(DropReason::HandshakeRateLimited);
        return;
    }
    let Some((peer, target)) = find_peer(&keys, &table, &packet) else {
        shared.drops.count(DropReason::UnknownPeer);
        return;
    };
    let mut state = peer.state.lock();
    let slot = match target {
        Target::Index(index) => state.by_index(index),
        Target::Keys { remote, own } => state.by_keys(&remote, &own),
    };
    let Some(slot) = slot else {
        // A session that retired since the table was built.
        shared.drops.count(DropReason::UnknownPeer);
        return;
    };
    let session = &mut state.sessions[slot];
    let (inner, src) = match session.tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => {
            // A keepalive authenticates its sender; a cookie reply does not.
            if kind == MSG_DATA {
                session.endpoint = Some(from);
                if std::mem::take(&mut session.answered) {
                    promote_proven(&peer, &mut state, slot);
                }
            }
            return;
        }
        TunnResult::Err(e) => {
            let reason = match e {
                WireGuardError::WrongKey | WireGuardError::WrongIndex => DropReason::UnknownPeer,
                _ => DropReason::Invalid,
            };
            tracing::debug!(peer = %peer.cluster_id, %from, error = ?e, "decapsulate failed");
            shared.drops.count(reason);
            return;
        }
        TunnResult::WriteToNetwork(reply) if reply.first() == Some(&MSG_COOKIE_REPLY) => {
            // The Tunn's own limiter wants a cookie: answer, but neither roam nor flush.
            send_udp(shared, reply, from);
            return;
        }
        TunnResult::WriteToNetwork(reply) => {
            // A handshake message passed: the sender proved its key, so follow it if it roamed.
            session.endpoint = Some(from);
            send_udp(shared, reply, from);
            while let TunnResult::WriteToNetwork(queued) = session.tunn.decapsulate(None, &[], out)
            {
                send_udp(shared, queued, from);
            }
            match kind {
                // We answered: the initiator's first packet on it will confirm it.
                MSG_INIT => session.answered = true,
                // Our initiation was answered: this gateway is alive and holds its key.
                MSG_RESPONSE => promote_proven(&peer, &mut state, slot),
                _ => {}
            }
            return;
        }
        TunnResult::WriteToTunnelV4(inner, src) => (inner, IpAddr::V4(src)),
        TunnResult::WriteToTunnelV6(inner, src) => (inner, IpAddr::V6(src)),
    };
    session.endpoint = Some(from);
    if std::mem::take(&mut session.answered) {
        promote_proven(&peer, &mut state, slot);
    }
    drop(state);
    // Cryptokey routing on the way in: only sources inside the sender's own CIDRs pass,
    // and only towards this cluster's own CIDRs.
    match table.cidrs.lookup(src) {
        Some(owner) if Arc::ptr_eq(owner, &peer) => {
            let dst = Tunn::dst_address(inner);
            let local = dst.is_some_and(|dst| shared.local.load().lookup(dst).is_some());
            if !local {
                tracing::debug!(peer = %peer.cluster_id, "dropping packet to a destination outside this cluster's CIDRs");
                shared.drops.count(DropReason::DestinationNotAllowed);
                return;
            }
            if !dst.is_some_and(|dst| shared.host.load().allows(dst, inner)) {
                tracing::debug!(peer = %peer.cluster_id, "dropping packet to a port of the gateway node other than the probe and benchmark ports");
                shared.drops.count(DropReason::HostPortNotAllowed);
                return;
            }
            tally.count(&peer, inner.len());
            coalescer.push(inner, emit);
        }
        _ => {
            tracing::debug!(peer = %peer.cluster_id, %src, "dropping packet with a source outside the peer's CIDRs");
            shared.drops.count(DropReason::SourceNotAllowed);
        }
    }
}

fn timer_loop(shared: &Shared) -> std::io::Result<()> {
    let mut out = vec![0u8; BUF_SIZE];
    let mut last_reset = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TIMER_TICK);
        let keys = shared.keys.load();
        if last_reset.elapsed() >= Duration::from_secs(1) {
            for key in keys.all() {
                key.rate_limiter.reset_count();
            }
            last_reset = Instant::now();
        }
        let table = shared.table.load();
        let mut retiring_in_use = false;
        let now = Instant::now();
        for peer in &table.peers {
            let mut state = peer.state.lock();
            for key in state.expire_retiring(now) {
                tracing::info!(
                    peer = %peer.cluster_id,
                    remote_key = %causeway_wire::keys::format_key(&key),
                    "a session with a key no longer in use outlived its grace: closed"
                );
            }
            let current = state.current;
            for (slot, session) in state.sessions.iter_mut().enumerate() {
                tick_session(shared, &peer.counters, session, slot == current, &mut out);
                retiring_in_use |= keys
                    .retiring
                    .as_ref()
                    .is_some_and(|k| k.public.to_bytes() == session.own_key);
            }
            let since = state.current().and_then(|s| s.tunn.stats().0);
            drop(state);
            if let Some(since) = since {
                note_handshake(&peer.counters, since);
            }
        }
        // Every peer moved to the new key: the old one is forgotten for good.
        if keys.retiring.is_some() && !retiring_in_use {
            let current = Arc::clone(&keys.current);
            shared.keys.rcu(|k| OwnKeys {
                current: Arc::clone(&k.current),
                // Unless a newer rotation came in meanwhile: then its old key is still in use.
                retiring: if Arc::ptr_eq(&k.current, &current) {
                    None
                } else {
                    k.retiring.clone()
                },
            });
            tracing::info!("every remote cluster uses our new key: the old one is retired");
        }
    }
    Ok(())
}

/// Runs one session's handshake, rekey and keepalive timers.
fn tick_session(
    shared: &Shared,
    counters: &PeerCounters,
    session: &mut Session,
    current: bool,
    out: &mut [u8],
) {
    match session.tunn.update_timers(out) {
        TunnResult::WriteToNetwork(datagram) => {
            if let Some(to) = session.endpoint {
                count_initiation(counters, datagram, current);
                send_udp(shared, datagram, to);
            }
        }
        // boringtun stops all timers once a session expires (no handshake for 90 s) and
        // waits for outgoing traffic. A peer configured with a keepalive sits behind NAT
        // and may never send any, so keep knocking — on the current session only: the
        // others are standby candidates that answer once they take over.
        TunnResult::Err(WireGuardError::ConnectionExpired) if current => {
            let interval = session
                .tunn
                .persistent_keepalive()
                .map(|s| Duration::from_secs(s.into()));
            let due = interval
                .is_some_and(|every| session.retried_at.is_none_or(|at| at.elapsed() >= every));
            if let (true, Some(to)) = (due, session.endpoint) {
                session.retried_at = Some(Instant::now());
                if let TunnResult::WriteToNetwork(init) =
                    session.tunn.format_handshake_initiation(out, false)
                {
                    count_initiation(counters, init, current);
                    send_udp(shared, init, to);
                }
            }
        }
        _ => {}
    }
}

/// Counts a handshake initiation to the session traffic goes to, which the status reports
/// while unanswered. Standby candidates are knocked on by design and never answer; their
/// initiations say nothing about the path.
fn count_initiation(counters: &PeerCounters, datagram: &[u8], current: bool) {
    if current && datagram.first() == Some(&MSG_INIT) {
        counters.initiations.fetch_add(1, Ordering::Relaxed);
    }
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
        counters.initiations.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
