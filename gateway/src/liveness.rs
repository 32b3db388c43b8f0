//! Liveness between the gateway candidates of one cluster, over the cluster network.
//!
//! Every candidate answers small UDP probes on its private IPs ([`LIVENESS_PORT`]),
//! saying whether it is the active gateway right now, and probes the other candidates
//! every [`PROBE_INTERVAL`]. A passive candidate contends for the gateway Lease only
//! when no other candidate has answered "active" for [`DEAD_AFTER`]: an active gateway
//! that merely cannot reach the API server (and so cannot renew its Lease) keeps the
//! cluster's traffic, instead of being pushed out the moment the API server returns.
//!
//! A passive candidate that has heard an active one and then hears it no more for
//! [`TAKEOVER_AFTER`] (or hears it say it stepped down) takes over at once, without
//! waiting for the Lease to expire; route agents probe the candidates too (without
//! answering) and route through whichever says "active".
//!
//! No API server is involved: it works while the control plane is down, which is
//! exactly when it matters.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// UDP port every candidate answers liveness probes on, on its private IPs.
pub const LIVENESS_PORT: u16 = 51822;
/// How often each other candidate is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a starting candidate listens before it may campaign at all.
pub const DEAD_AFTER: Duration = Duration::from_secs(1);
/// Silence after which an active candidate counts as gone: three probes unanswered, plus
/// half a probe of slack for a loaded node. Short, so a failover's gap stays well under a
/// second; a false alarm costs one extra hand-over, as the Lease settles who stays.
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(350);

const MAGIC: &[u8; 8] = b"CWALIVE1";
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
/// Size of a liveness message: magic, kind, whether the sender is active.
pub const MESSAGE_LEN: usize = 10;

/// Encodes a liveness message.
pub fn encode(kind: u8, active: bool) -> [u8; MESSAGE_LEN] {
    let mut m = [0u8; MESSAGE_LEN];
    m[..8].copy_from_slice(MAGIC);
    m[8] = kind;
    m[9] = u8::from(active);
    m
}

/// Decodes a liveness message: its kind and the sender's "active" flag.
pub fn decode(m: &[u8]) -> Option<(u8, bool)> {
    if m.len() != MESSAGE_LEN || &m[..8] != MAGIC || !matches!(m[8], REQUEST | REPLY) {
        return None;
    }
    match m[9] {
        0 => Some((m[8], false)),
        1 => Some((m[8], true)),
        _ => None,
    }
}

/// What this candidate knows of the others, and what it says of itself.
#[derive(Debug, Default)]
pub struct Liveness {
    active: AtomicBool,
    /// Per address: when it last answered, and since when it says it is active.
    replies: Mutex<HashMap<SocketAddr, Reply>>,
    /// Whether any candidate has ever answered "active".
    heard_active: AtomicBool,
}

/// What one candidate said last.
#[derive(Debug, Clone, Copy)]
struct Reply {
    at: Instant,
    /// `Some(since)` while it says "active": when it first said so in a row.
    active_since: Option<Instant>,
}

impl Liveness {
    /// Sets what this candidate answers: whether it carries the cluster's traffic now.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// Whether this candidate answers "active".
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn record(&self, from: SocketAddr, active: bool, at: Instant) {
        let mut replies = self.replies.lock();
        let before = replies.get(&from).and_then(|r| r.active_since);
        let active_since = active.then(|| before.unwrap_or(at));
        replies.insert(from, Reply { at, active_since });
        if active {
            self.heard_active.store(true, Ordering::Relaxed);
        }
    }

    /// Whether another candidate answered "active" within `within` of `now` (its
    /// latest answer counts: a candidate that stepped down says so at once).
    pub fn active_peer_alive(&self, now: Instant, within: Duration) -> bool {
        self.active_peer(now, within).is_some()
    }

    /// The candidate that answered "active" within `within` of `now`; of several (a
    /// hand-over in progress), the one active most recently, which is the one that took over.
    pub fn active_peer(&self, now: Instant, within: Duration) -> Option<SocketAddr> {
        self.replies
            .lock()
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.at) <= within)
            .filter_map(|(addr, r)| r.active_since.map(|since| (since, *addr)))
            .max()
            .map(|(_, addr)| addr)
    }

    /// Whether any other candidate answered at all (active or not) within `within` of `now`.
    pub fn any_peer_alive(&self, now: Instant, within: Duration) -> bool {
        self.replies
            .lock()
            .values()
            .any(|r| now.saturating_duration_since(r.at) <= within)
    }

    /// Whether a passive candidate should take over now: it has heard an active candidate
    /// before, and none has answered "active" for [`TAKEOVER_AFTER`].
    pub fn takeover_due(&self, now: Instant) -> bool {
        self.heard_active.load(Ordering::Relaxed) && !self.active_peer_alive(now, TAKEOVER_AFTER)
    }

    /// Forgets candidates no longer listed.
    pub fn retain(&self, targets: &[SocketAddr]) {
        self.replies.lock().retain(|a, _| targets.contains(a));
    }
}

/// The other candidates' probe addresses: every private IP of every gateway listed
/// for our cluster except our own node's.
pub fn targets<'a>(
    gateways: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>,
    own_node: &str,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = gateways
        .into_iter()
        .filter(|(node, _)| *node != own_node)
        .flat_map(|(_, ips)| ips.iter().map(|ip| SocketAddr::new(*ip, LIVENESS_PORT)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Answers probes on `sockets` (when `respond`: a candidate; a route agent only asks) and
/// probes every target each [`PROBE_INTERVAL`], until `stop` fires.
pub async fn run(
    sockets: Vec<UdpSocket>,
    mut targets: watch::Receiver<Vec<SocketAddr>>,
    liveness: Arc<Liveness>,
    respond: bool,
    mut stop: watch::Receiver<bool>,
) {
    let sockets: Vec<Arc<UdpSocket>> = sockets.into_iter().map(Arc::new).collect();
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(usize, [u8; MESSAGE_LEN], usize, SocketAddr)>(64);
    let mut readers = Vec::new();
    for (i, socket) in sockets.iter().enumerate() {
        let (socket, tx) = (Arc::clone(socket), tx.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; MESSAGE_LEN];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if tx.send((i, buf, n, from)).await.is_err() {
                    return;
                }
            }
        }));
    }
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let message = encode(REQUEST, liveness.is_active());
                let current = targets.borrow_and_update().clone();
                for to in current {
                    // Any socket of the same family reaches the cluster network.
                    if let Some(socket) = sockets.iter().find(|s| {
                        s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4())
                    }) {
                        let _ = socket.send_to(&message, to).await;
                    }
                }
            }
            Some((i, buf, n, from)) = rx.recv() => match decode(&buf[..n]) {
                Some((REQUEST, _)) if respond => {
                    let _ = sockets[i].send_to(&encode(REPLY, liveness.is_active()), from).await;
                }
                Some((REPLY, active)) if targets.borrow().contains(&from) => {
                    liveness.record(from, active, Instant::now());
                }
                _ => {}
            },
            _ = stop.changed() => break,
        }
    }
    for reader in readers {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_strangers_are_ignored() {
        assert_eq!(decode(&encode(REQUEST, false)), Some((REQUEST, false)));
        assert_eq!(decode(&encode(REPLY, true)), Some((REPLY, true)));
        let mut bad = encode(REPLY, true);
        bad[9] = 7;
        assert_eq!(decode(&bad), None);
        bad = encode(REPLY, true);
        bad[0] = b'X';
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&encode(REPLY, true)[..9]), None);
        assert_eq!(
            decode(b"CWPROBE1\x02\x00"),
            None,
            "a health probe is not a liveness message"
        );
    }

    #[test]
    fn targets_are_the_other_candidates_private_ips() {
        let a: Vec<IpAddr> = vec![
            "198.19.1.1".parse().unwrap(),
            "fd00:ffff:1::1".parse().unwrap(),
        ];
        let b: Vec<IpAddr> = vec!["198.19.1.3".parse().unwrap()];
        let t = targets([("gw", a.as_slice()), ("gw2", b.as_slice())], "gw2");
        assert_eq!(
            t,
            vec![
                "198.19.1.1:51822".parse().unwrap(),
                "[fd00:ffff:1::1]:51822".parse().unwrap()
            ]
        );
        assert!(targets([("gw", a.as_slice())], "gw").is_empty());
    }

    #[test]
    fn an_active_peer_is_alive_until_silent_or_stepped_down() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let peer: SocketAddr = "198.19.1.1:51822".parse().unwrap();
        assert!(!l.active_peer_alive(t0, DEAD_AFTER), "nobody answered yet");
        l.record(peer, true, t0);
        assert!(l.active_peer_alive(t0 + Duration::from_millis(900), DEAD_AFTER));
        assert!(
            !l.active_peer_alive(t0 + Duration::from_millis(1100), DEAD_AFTER),
            "silent too long"
        );
        l.record(peer, false, t0 + Duration::from_millis(200));
        assert!(
            !l.active_peer_alive(t0 + Duration::from_millis(300), DEAD_AFTER),
            "it stepped down"
        );
        l.record(peer, true, t0 + Duration::from_millis(400));
        l.retain(&[]);
        assert!(
            !l.active_peer_alive(t0 + Duration::from_millis(500), DEAD_AFTER),
            "forgotten"
        );
    }

    #[test]
    fn takeover_is_due_only_after_an_active_peer_went_quiet_or_stepped_down() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let (old, new): (SocketAddr, SocketAddr) = (
            "198.19.1.1:51822".parse().unwrap(),
            "198.19.1.3:51822".parse().unwrap(),
        );
        assert!(
            !l.takeover_due(t0),
            "never heard an active one: the Lease decides"
        );
        l.record(old, true, t0);
        assert!(!l.takeover_due(t0 + Duration::from_millis(300)));
        assert!(
            l.takeover_due(t0 + Duration::from_millis(400)),
            "silent for 400 ms"
        );
        l.record(old, false, t0 + Duration::from_millis(450));
        assert!(
            l.takeover_due(t0 + Duration::from_millis(460)),
            "it stepped down"
        );
        // During a hand-over both say "active": the newer one is the one to follow.
        l.record(old, true, t0 + Duration::from_millis(500));
        l.record(new, true, t0 + Duration::from_millis(600));
        l.record(old, true, t0 + Duration::from_millis(650));
        assert_eq!(
            l.active_peer(t0 + Duration::from_millis(700), TAKEOVER_AFTER),
            Some(new)
        );
        assert_eq!(
            l.active_peer(t0 + Duration::from_millis(1000), TAKEOVER_AFTER),
            Some(old),
            "the new one went quiet"
        );
    }

    #[tokio::test]
    async fn two_candidates_see_which_one_is_active() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (la, lb) = (Arc::new(Liveness::default()), Arc::new(Liveness::default()));
        la.set_active(true);
        let (_ta, targets_a) = watch::channel(vec![b_addr]);
        let (_tb, targets_b) = watch::channel(vec![a_addr]);
        let (stop_tx, stop) = watch::channel(false);
        let ra = tokio::spawn(run(vec![a], targets_a, Arc::clone(&la), true, stop.clone()));
        let rb = tokio::spawn(run(vec![b], targets_b, Arc::clone(&lb), true, stop));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lb.active_peer_alive(Instant::now(), DEAD_AFTER) {
            assert!(Instant::now() < deadline, "b never heard that a is active");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !la.active_peer_alive(Instant::now(), DEAD_AFTER),
            "b is passive"
        );
        la.set_active(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lb.active_peer_alive(Instant::now(), DEAD_AFTER) {
            assert!(
                Instant::now() < deadline,
                "b never heard that a stepped down"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        ra.await.unwrap();
        rb.await.unwrap();
    }
}
