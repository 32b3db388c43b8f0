//! Peers: what the datapath should hold (pure plan) and the live table the packet path reads.
//!
//! A peer is a remote *cluster*; it holds one WireGuard session per gateway candidate of
//! that cluster (and, while our own key rotates, per candidate and key). Traffic goes
//! out on the peer's *current* session; another session becomes current only when it
//! proves itself with an authenticated handshake — which a remote candidate sends the
//! moment it takes over. So a failover or a key rotation on the remote side needs no
//! reconfiguration here, and cryptokey routing stays per cluster.

use super::cidr::CidrMap;
use boringtun::noise::Tunn;
use ipnet::IpNet;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One gateway candidate of a remote cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteGateway {
    /// Its WireGuard public key.
    pub public_key: [u8; 32],
    /// Where to send; `None` until known (it may still reach us).
    pub endpoint: Option<SocketAddr>,
}

/// One remote cluster as the datapath should know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The remote cluster's ID.
    pub cluster_id: String,
    /// The public key of the gateway the control plane names active (listed first): the
    /// session a new peer starts on.
    pub public_key: [u8; 32],
    /// Where that gateway is reached; `None` until the remote is known (it may still reach us).
    pub endpoint: Option<SocketAddr>,
    /// The remote cluster's other gateway candidates, each with a session of its own, so
    /// that its failover needs nothing from the control plane here.
    pub standbys: Vec<RemoteGateway>,
    /// The remote cluster's pod and service CIDRs: where its packets may come from and ours go to.
    pub cidrs: Vec<IpNet>,
    /// Seconds between keepalives, for peers behind NAT.
    pub persistent_keepalive: Option<u16>,
}

impl PeerSpec {
    /// Every gateway candidate of the cluster, the one named active first.
    pub fn gateways(&self) -> impl Iterator<Item = RemoteGateway> + '_ {
        std::iter::once(RemoteGateway {
            public_key: self.public_key,
            endpoint: self.endpoint,
        })
        .chain(self.standbys.iter().copied())
    }
}

/// The difference between the peers held and the peers wanted, by cluster ID.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// Clusters new to the datapath.
    pub add: Vec<PeerSpec>,
    /// Clusters whose sessions must start over: a new keepalive.
    pub replace: Vec<PeerSpec>,
    /// Clusters whose gateways (keys, endpoints, order) or CIDRs changed; sessions of
    /// gateways still listed carry on.
    pub update: Vec<PeerSpec>,
    /// Clusters to forget.
    pub remove: Vec<String>,
}

impl PeerPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.replace.is_empty()
            && self.update.is_empty()
            && self.remove.is_empty()
    }
}

/// Plans the change from `current` to `desired` so that no peer is touched unless it changed.
pub fn plan_peers(current: &[PeerSpec], desired: &[PeerSpec]) -> PeerPlan {
    let held: HashMap<&str, &PeerSpec> =
        current.iter().map(|p| (p.cluster_id.as_str(), p)).collect();
    let mut plan = PeerPlan::default();
    for want in desired {
        match held.get(want.cluster_id.as_str()) {
            None => plan.add.push(want.clone()),
            Some(have) if *have == want => {}
            Some(have) if have.persistent_keepalive != want.persistent_keepalive => {
                plan.replace.push(want.clone())
            }
            Some(_) => plan.update.push(want.clone()),
        }
    }
    let wanted: std::collections::HashSet<&str> =
        desired.iter().map(|p| p.cluster_id.as_str()).collect();
    plan.remove = current
        .iter()
        .filter(|p| !wanted.contains(p.cluster_id.as_str()))
        .map(|p| p.cluster_id.clone())
        .collect();
    plan
}

/// Per-peer counters, written by the packet path without any shared lock.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Inner bytes received and delivered.
    pub rx_bytes: AtomicU64,
    /// Inner bytes sent.
    pub tx_bytes: AtomicU64,
    /// Inner packets received and delivered.
    pub rx_packets: AtomicU64,
    /// Inner packets sent.
    pub tx_packets: AtomicU64,
    /// Completed handshakes.
    pub handshakes: AtomicU64,
    /// Unix time of the latest completed handshake, in milliseconds; 0 if none.
    pub last_handshake_ms: AtomicU64,
    /// Times another session (a remote failover, a key rotation) became the current one.
    pub switches: AtomicU64,
    /// Handshake initiations sent to the current session since the last completed handshake.
    pub initiations: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One WireGuard session with one remote gateway, under one of our own keys.
pub struct Session {
    /// The remote gateway's public key.
    pub remote_key: [u8; 32],
    /// Our own public key this session's `Tunn` was made with.
    pub own_key: [u8; 32],
    /// Our 24-bit session index (receiver index >> 8).
    pub index: u32,
    /// The WireGuard session.
    pub tunn: Tunn,
    /// Where the gateway is reached now: configured, or learned from its authenticated packets.
    pub endpoint: Option<SocketAddr>,
    /// When a handshake was last re-initiated after the session expired.
    pub retried_at: Option<Instant>,
    /// Set when the remote key is listed no more, or the session is under our retiring
    /// key: it serves until a session of the cluster that is neither proves itself, or
    /// until this deadline at the latest, then goes.
    pub retiring: Option<Instant>,
    /// We answered an initiation on it: the initiator's next authenticated packet
    /// confirms the handshake and makes this session current.
    pub answered: bool,
}

impl Session {
    /// Marks the session retiring with `deadline` at the latest; an earlier deadline stands.
    pub fn retire_by(&mut self, deadline: Instant) {
        self.retiring = Some(self.retiring.map_or(deadline, |t| t.min(deadline)));
    }
}

/// Session state guarded by the peer's own lock: packets of different peers never contend.
pub struct PeerState {
    /// Every session of the cluster; never empty while the peer is in the table.
    pub sessions: Vec<Session>,
    /// Which session traffic goes out on.
    pub current: usize,
}

impl PeerState {
    /// The session traffic goes out on.
    pub fn current_mut(&mut self) -> Option<&mut Session> {
        self.sessions.get_mut(self.current)
    }

    /// The session traffic goes out on.
    pub fn current(&self) -> Option<&Session> {
        self.sessions.get(self.current)
    }

    /// The slot of the session with our index `index`.
    pub fn by_index(&self, index: u32) -> Option<usize> {
        self.sessions.iter().position(|s| s.index == index)
    }

    /// The slot of the session with `remote` under our key `own`.
    pub fn by_keys(&self, remote: &[u8; 32], own: &[u8; 32]) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.remote_key == *remote && s.own_key == *own)
    }

    /// Makes `slot` current; once a session that is not retiring is current, every retiring
    /// one goes. Returns whether the current session changed.
    pub fn promote(&mut self, slot: usize) -> bool {
        let switched = slot != self.current;
        self.current = slot;
        if self
            .sessions
            .get(slot)
            .is_some_and(|s| s.retiring.is_none())
        {
            self.remove_where(|s| s.retiring.is_some());
        }
        switched
    }

    /// Removes the retiring sessions whose deadline has passed by `now`, whether or not a
    /// replacement proved itself: a key taken out of the clusterset stops working within
    /// its grace even if the new one never answers. Keeps at least one session. Returns
    /// the remote keys of the sessions removed.
    pub fn expire_retiring(&mut self, now: Instant) -> Vec<[u8; 32]> {
        let expired = |s: &Session| s.retiring.is_some_and(|until| now >= until);
        if self.sessions.iter().all(expired) {
            return Vec::new();
        }
        let gone: Vec<[u8; 32]> = self
            .sessions
            .iter()
            .filter(|s| expired(s))
            .map(|s| s.remote_key)
            .collect();
        if !gone.is_empty() {
            self.remove_where(expired);
        }
        gone
    }

    /// Removes the sessions `drop` selects, keeping `current` on the same session if it
    /// stays (else on the first one that is not retiring).
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Session) -> bool) {
        let current = self.sessions.get(self.current).map(|s| s.index);
        self.sessions.retain(|s| !drop(s));
        self.current = current
            .and_then(|i| self.by_index(i))
            .or_else(|| self.sessions.iter().position(|s| s.retiring.is_none()))
            .unwrap_or(0);
    }
}

/// A remote cluster's live sessions.
pub struct Peer {
    /// The remote cluster's ID.
    pub cluster_id: String,
    /// Sessions and which one is current.
    pub state: Mutex<PeerState>,
    /// Traffic counters.
    pub counters: PeerCounters,
}

/// The immutable table the packet path reads; replaced whole on every change.
#[derive(Default)]
pub struct PeerTable {
    /// Every peer.
    pub peers: Vec<Arc<Peer>>,
    /// Peers by our session index (of any of their sessions).
    pub by_index: HashMap<u32, Arc<Peer>, IndexHasher>,
    /// Peers by a remote gateway's public key, to match handshake initiations.
    pub by_key: HashMap<[u8; 32], Arc<Peer>>,
    /// Cryptokey routing: which peer owns an address.
    pub cidrs: CidrMap<Arc<Peer>>,
}

impl PeerTable {
    /// Builds the lookup maps over `peers` (and their sessions now), with each peer's CIDRs from `specs`.
    pub fn new(peers: Vec<Arc<Peer>>, specs: &[PeerSpec]) -> Self {
        let by_cluster: HashMap<&str, &Arc<Peer>> =
            peers.iter().map(|p| (p.cluster_id.as_str(), p)).collect();
        let cidrs = CidrMap::new(specs.iter().flat_map(|spec| {
            let peer = by_cluster.get(spec.cluster_id.as_str()).copied();
            spec.cidrs
                .iter()
                .filter_map(move |net| peer.map(|p| (*net, Arc::clone(p))))
        }));
        let mut by_index = HashMap::with_hasher(IndexHasher);
        let mut by_key = HashMap::new();
        for peer in &peers {
            let state = peer.state.lock();
            for session in &state.sessions {
                by_index.insert(session.index, Arc::clone(peer));
                by_key.insert(session.remote_key, Arc::clone(peer));
            }
        }
        Self {
            by_index,
            by_key,
            cidrs,
            peers,
        }
    }

    /// The peer for a cluster ID.
    pub fn peer(&self, cluster_id: &str) -> Option<&Arc<Peer>> {
        self.peers.iter().find(|p| p.cluster_id == cluster_id)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::x25519::{PublicKey, StaticSecret};
    use std::time::Duration;

    fn session(remote: u8, index: u32, retiring: Option<Instant>) -> Session {
        let own = StaticSecret::from([7; 32]);
        let own_public = PublicKey::from(&own).to_bytes();
        Session {
            remote_key: [remote; 32],
            own_key: own_public,
            index,
            tunn: Tunn::new(own, PublicKey::from([remote; 32]), None, None, index, None),
            endpoint: None,
            retried_at: None,
            retiring,
            answered: false,
        }
    }

    #[test]
    fn a_plan_is_empty_only_when_nothing_changes() {
        let a = spec("a", 1, "198.18.0.1:51820", &["10.1.0.0/16"]);
        assert!(plan_peers(std::slice::from_ref(&a), std::slice::from_ref(&a)).is_empty());
        let moved = PeerSpec {
            endpoint: Some("198.18.0.9:51820".parse().unwrap()),
            ..a.clone()
        };
        let keepalive = PeerSpec {
            persistent_keepalive: Some(25),
            ..a.clone()
        };
        for (what, current, desired) in [
            ("add", vec![], vec![a.clone()]),
            ("remove", vec![a.clone()], vec![]),
            ("update", vec![a.clone()], vec![moved]),
            ("replace", vec![a.clone()], vec![keepalive]),
        ] {
            assert!(!plan_peers(&current, &desired).is_empty(), "{what}");
        }
    }

    #[test]
    fn sessions_are_found_by_their_own_index_and_keys_and_promotion_says_if_it_switched() {
        let mut state = PeerState {
            sessions: vec![
                session(1, 10, None),
                session(2, 20, None),
                session(3, 30, None),
            ],
            current: 0,
        };
        assert_eq!(state.by_index(10), Some(0));
        assert_eq!(state.by_index(30), Some(2));
        assert_eq!(state.by_index(40), None);
        let own = state.sessions[0].own_key;
        assert_eq!(state.by_keys(&[3; 32], &own), Some(2));
        assert_eq!(state.by_keys(&[1; 32], &own), Some(0));
        assert_eq!(state.by_keys(&[3; 32], &[0; 32]), None, "another own key");
        assert!(!state.promote(0), "already current");
        assert!(state.promote(2));
        assert_eq!(state.current().map(|s| s.index), Some(30));
    }

    #[test]
    fn a_retiring_session_goes_at_its_deadline_even_if_nothing_replaced_it() {
        let now = Instant::now();
        let past = Some(now - Duration::from_millis(1));
        let later = Some(now + Duration::from_secs(5));
        // The revoked key's session is current (the new key never answered): it still goes.
        let mut state = PeerState {
            sessions: vec![
                session(1, 1, past),
                session(2, 2, None),
                session(3, 3, later),
            ],
            current: 0,
        };
        assert_eq!(state.expire_retiring(now), vec![[1; 32]]);
        let left: Vec<u32> = state.sessions.iter().map(|s| s.index).collect();
        assert_eq!(left, [2, 3]);
        assert_eq!(
            state.current().map(|s| s.index),
            Some(2),
            "a listed key takes over"
        );
        // Before its deadline a retiring session stays; nothing is removed twice.
        assert_eq!(state.expire_retiring(now), Vec::<[u8; 32]>::new());
        assert_eq!(state.sessions.len(), 2);
        // A peer is never left without a session.
        let mut alone = PeerState {
            sessions: vec![session(4, 4, past)],
            current: 0,
        };
        assert!(alone.expire_retiring(now).is_empty());
        assert_eq!(alone.sessions.len(), 1);
    }

    fn spec(id: &str, key: u8, endpoint: &str, cidrs: &[&str]) -> PeerSpec {
        PeerSpec {
            cluster_id: id.into(),
            public_key: [key; 32],
            endpoint: Some(endpoint.parse().unwrap()),
            standbys: Vec::new(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            persistent_keepalive: None,
        }
    }

    #[test]
    fn plan_touches_only_what_changed() {
        let a = spec("a", 1, "198.18.0.1:51820", &["10.1.0.0/16"]);
        let b = spec("b", 2, "198.18.0.2:51820", &["10.2.0.0/16"]);
        let c = spec("c", 3, "198.18.0.3:51820", &["10.3.0.0/16"]);
        let moved_b = PeerSpec {
            endpoint: Some("198.18.0.9:51820".parse().unwrap()),
            ..b.clone()
        };
        let grown_b = PeerSpec {
            cidrs: vec![
                "10.2.0.0/16".parse().unwrap(),
                "fd00:2::/48".parse().unwrap(),
            ],
            ..b.clone()
        };
        let rekeyed_b = PeerSpec {
            public_key: [9; 32],
            ..b.clone()
        };
        let standby_b = PeerSpec {
            standbys: vec![RemoteGateway {
                public_key: [8; 32],
                endpoint: Some("198.18.0.102:51820".parse().unwrap()),
            }],
            ..b.clone()
        };
        let keepalive_b = PeerSpec {
            persistent_keepalive: Some(25),
            ..b.clone()
        };
        let cases: Vec<(&str, Vec<PeerSpec>, Vec<PeerSpec>, PeerPlan)> = vec![
            (
                "no-op",
                vec![a.clone(), b.clone()],
                vec![b.clone(), a.clone()],
                PeerPlan::default(),
            ),
            (
                "add third",
                vec![a.clone(), b.clone()],
                vec![a.clone(), b.clone(), c.clone()],
                PeerPlan {
                    add: vec![c.clone()],
                    ..Default::default()
                },
            ),
            (
                "remove",
                vec![a.clone(), b.clone()],
                vec![a.clone()],
                PeerPlan {
                    remove: vec!["b".into()],
                    ..Default::default()
                },
            ),
            (
                "endpoint moves",
                vec![a.clone(), b.clone()],
                vec![a.clone(), moved_b.clone()],
                PeerPlan {
                    update: vec![moved_b],
                    ..Default::default()
                },
            ),
            (
                "cidrs grow",
                vec![b.clone()],
                vec![grown_b.clone()],
                PeerPlan {
                    update: vec![grown_b],
                    ..Default::default()
                },
            ),
            (
                "new key: sessions are adjusted, the peer stays",
                vec![b.clone()],
                vec![rekeyed_b.clone()],
                PeerPlan {
                    update: vec![rekeyed_b],
                    ..Default::default()
                },
            ),
            (
                "a standby candidate appears",
                vec![b.clone()],
                vec![standby_b.clone()],
                PeerPlan {
                    update: vec![standby_b],
                    ..Default::default()
                },
            ),
            (
                "keepalive",
                vec![b.clone()],
                vec![keepalive_b.clone()],
                PeerPlan {
                    replace: vec![keepalive_b],
                    ..Default::default()
                },
            ),
        ];
        for (what, current, desired, want) in cases {
            assert_eq!(plan_peers(&current, &desired), want, "{what}");
        }
        let same = [a];
        assert!(plan_peers(&same, &same).is_empty());
    }
}

/// Hashes our session indexes for the per-packet lookup. They are handed out by us from a
/// random start, so they are spread already and SipHash's flood resistance buys nothing:
/// a sender can choose which index it asks for, never which ones the table holds.
#[derive(Clone, Copy, Default)]
pub struct IndexHasher;

impl std::hash::BuildHasher for IndexHasher {
    type Hasher = IndexHash;
    fn build_hasher(&self) -> IndexHash {
        IndexHash(0)
    }
}

/// The [`IndexHasher`]'s state: a multiplicative hash of one `u32`.
#[derive(Clone, Copy, Default)]
pub struct IndexHash(u64);

impl std::hash::Hasher for IndexHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every input bit.
        self.0 = (u64::from(i) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
