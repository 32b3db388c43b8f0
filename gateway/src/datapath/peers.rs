//! Peers: what the datapath should hold (pure plan) and the live table the packet path reads.

use super::cidr::CidrMap;
use boringtun::noise::Tunn;
use ipnet::IpNet;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One remote cluster as the datapath should know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The remote cluster's ID.
    pub cluster_id: String,
    /// The remote gateway's WireGuard public key.
    pub public_key: [u8; 32],
    /// Where to send; `None` until the remote is known (it may still reach us).
    pub endpoint: Option<SocketAddr>,
    /// The remote cluster's pod and service CIDRs: where its packets may come from and ours go to.
    pub cidrs: Vec<IpNet>,
    /// Seconds between keepalives, for peers behind NAT.
    pub persistent_keepalive: Option<u16>,
}

/// The difference between the peers held and the peers wanted, by cluster ID.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// Clusters new to the datapath.
    pub add: Vec<PeerSpec>,
    /// Clusters whose session must start over: new key or keepalive.
    pub replace: Vec<PeerSpec>,
    /// Clusters whose CIDRs or endpoint changed; their session carries on.
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
            Some(have)
                if have.public_key != want.public_key
                    || have.persistent_keepalive != want.persistent_keepalive =>
            {
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
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Session state guarded by the peer's own lock: packets of different peers never contend.
pub struct PeerState {
    /// The WireGuard session.
    pub tunn: Tunn,
    /// Where the peer is reached now: configured, or learned from its authenticated packets.
    pub endpoint: Option<SocketAddr>,
    /// When a handshake was last re-initiated after the session expired.
    pub retried_at: Option<std::time::Instant>,
}

/// A remote cluster's live session.
pub struct Peer {
    /// The remote cluster's ID.
    pub cluster_id: String,
    /// The remote gateway's public key.
    pub public_key: [u8; 32],
    /// Our 24-bit session index for this peer (receiver index >> 8).
    pub index: u32,
    /// Session and endpoint.
    pub state: Mutex<PeerState>,
    /// Traffic counters.
    pub counters: PeerCounters,
}

/// The immutable table the packet path reads; replaced whole on every change.
#[derive(Default)]
pub struct PeerTable {
    /// Every peer.
    pub peers: Vec<Arc<Peer>>,
    /// Peers by session index.
    pub by_index: HashMap<u32, Arc<Peer>>,
    /// Peers by public key, to match handshake initiations.
    pub by_key: HashMap<[u8; 32], Arc<Peer>>,
    /// Cryptokey routing: which peer owns an address.
    pub cidrs: CidrMap<Arc<Peer>>,
}

impl PeerTable {
    /// Builds the lookup maps over `peers`, with each peer's CIDRs from `specs`.
    pub fn new(peers: Vec<Arc<Peer>>, specs: &[PeerSpec]) -> Self {
        let by_cluster: HashMap<&str, &Arc<Peer>> =
            peers.iter().map(|p| (p.cluster_id.as_str(), p)).collect();
        let cidrs = CidrMap::new(specs.iter().flat_map(|spec| {
            let peer = by_cluster.get(spec.cluster_id.as_str()).copied();
            spec.cidrs
                .iter()
                .filter_map(move |net| peer.map(|p| (*net, Arc::clone(p))))
        }));
        Self {
            by_index: peers.iter().map(|p| (p.index, Arc::clone(p))).collect(),
            by_key: peers
                .iter()
                .map(|p| (p.public_key, Arc::clone(p)))
                .collect(),
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

    fn spec(id: &str, key: u8, endpoint: &str, cidrs: &[&str]) -> PeerSpec {
        PeerSpec {
            cluster_id: id.into(),
            public_key: [key; 32],
            endpoint: Some(endpoint.parse().unwrap()),
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
                "new key",
                vec![b.clone()],
                vec![rekeyed_b.clone()],
                PeerPlan {
                    replace: vec![rekeyed_b],
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
