//! Liveness between the gateway candidates of one cluster, over the cluster network.
//!
//! Every candidate answers small UDP probes on its private IPs ([`ports::LIVENESS`]),
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
//!
//! Every answer is bound to its question and to the answering candidate's WireGuard key.
//! A question carries a fresh random nonce and the asker's per-process X25519 public key;
//! the answer carries the nonce and a MAC keyed by the X25519 exchange of the candidate's
//! static key with the asker's. Only the holder of a listed candidate key can say
//! "active" (or "stepped down") in its name, and only to one of the asker's last
//! [`PENDING`] questions: a forged answer, or one replayed from a capture, neither blocks
//! a failover nor forces one. While its key rotates, a candidate answers under both keys,
//! so whichever one the asker has listed verifies.

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac;
use boringtun::x25519::{PublicKey, StaticSecret};
use causeway_datapath::limiter::{SourceLimiter, TokenBucket};
use causeway_datapath::OWN_KEY_GRACE;
use causeway_wire::ports;
use parking_lot::Mutex;
use rand_core::{OsRng, RngCore};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// How often each other candidate is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a starting candidate listens before it may campaign at all.
pub const DEAD_AFTER: Duration = Duration::from_secs(1);
/// Silence after which an active candidate counts as gone: three probes unanswered, plus
/// half a probe of slack for a loaded node. Short, so a failover's gap stays well under a
/// second; a false alarm costs one extra hand-over, as the Lease settles who stays.
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(350);
/// Questions to one candidate that an answer may still match: the last four probes,
/// so an answer delayed by up to 400 ms counts, and none older.
pub const PENDING: usize = 4;
/// Askers whose shared secret a candidate keeps (a cluster's nodes); beyond it the cache
/// starts over.
const MAX_ASKERS: usize = 4096;
/// Exchanges with new asker keys a candidate makes a second, from all sources together
/// (each source is also held to its own [`SourceLimiter`] budget): a thousand route agents
/// restarting at once are all answered within five seconds, and a flood from spoofed
/// sources costs at most a few milliseconds of CPU a second.
const NEW_ASKERS_PER_SECOND: f64 = 200.0;

const MAGIC: &[u8; 8] = b"CWALIVE2";
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
/// Keeps these MACs apart from any other use of the same X25519 exchange.
const LABEL: &[u8] = b"causeway liveness answer v2";
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Size of a question: magic, kind, nonce, the asker's public key.
pub const REQUEST_LEN: usize = 8 + 1 + NONCE_LEN + 32;
/// Size of an answer: magic, kind, "active", nonce, a tag under the current key and
/// one under the previous (the same tag again when there is none).
pub const REPLY_LEN: usize = 8 + 1 + 1 + NONCE_LEN + 2 * TAG_LEN;
/// Room for the longer message and one byte more, so an oversized one is seen as such.
const BUF_LEN: usize = 64;

/// A question's random nonce; its answer must carry it back.
pub type Nonce = [u8; NONCE_LEN];
/// A MAC over an answer.
pub type Tag = [u8; TAG_LEN];

/// A liveness question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Fresh for every question.
    pub nonce: Nonce,
    /// The asker's X25519 public key, which the answer's tags are bound to.
    pub asker: [u8; 32],
}

impl Request {
    /// The question on the wire.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut m = [0u8; REQUEST_LEN];
        m[..8].copy_from_slice(MAGIC);
        m[8] = REQUEST;
        m[9..9 + NONCE_LEN].copy_from_slice(&self.nonce);
        m[9 + NONCE_LEN..].copy_from_slice(&self.asker);
        m
    }

    /// Reads a question; `None` for anything else.
    pub fn decode(m: &[u8]) -> Option<Request> {
        if m.len() != REQUEST_LEN || &m[..8] != MAGIC || m[8] != REQUEST {
            return None;
        }
        Some(Request {
            nonce: m[9..9 + NONCE_LEN].try_into().ok()?,
            asker: m[9 + NONCE_LEN..].try_into().ok()?,
        })
    }
}

/// A liveness answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Whether the answering candidate carries the cluster's traffic now.
    pub active: bool,
    /// The question's nonce.
    pub nonce: Nonce,
    /// [`tag`]s under the candidate's current key and its previous one.
    pub tags: [Tag; 2],
}

impl Reply {
    /// The answer on the wire.
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let mut m = [0u8; REPLY_LEN];
        m[..8].copy_from_slice(MAGIC);
        m[8] = REPLY;
        m[9] = u8::from(self.active);
        m[10..10 + NONCE_LEN].copy_from_slice(&self.nonce);
        m[10 + NONCE_LEN..10 + NONCE_LEN + TAG_LEN].copy_from_slice(&self.tags[0]);
        m[10 + NONCE_LEN + TAG_LEN..].copy_from_slice(&self.tags[1]);
        m
    }

    /// Reads an answer; `None` for anything else.
    pub fn decode(m: &[u8]) -> Option<Reply> {
        if m.len() != REPLY_LEN || &m[..8] != MAGIC || m[8] != REPLY || m[9] > 1 {
            return None;
        }
        let tag = |at: usize| m[at..at + TAG_LEN].try_into().ok();
        Some(Reply {
            active: m[9] == 1,
            nonce: m[10..10 + NONCE_LEN].try_into().ok()?,
            tags: [tag(10 + NONCE_LEN)?, tag(10 + NONCE_LEN + TAG_LEN)?],
        })
    }
}

fn answer_mac(shared: &[u8; 32], active: bool, nonce: &Nonce) -> Blake2sMac<U16> {
    let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(shared)
        .expect("BLAKE2s takes keys of up to 32 bytes");
    mac.update(LABEL);
    mac.update(&[u8::from(active)]);
    mac.update(nonce);
    mac
}

/// The tag of an answer (`active`, `nonce`) under the secret shared by the answering
/// candidate's key and the asker's.
pub fn tag(shared: &[u8; 32], active: bool, nonce: &Nonce) -> Tag {
    answer_mac(shared, active, nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `tag` is the answer's tag under `shared` (in constant time).
fn tag_matches(shared: &[u8; 32], active: bool, nonce: &Nonce, tag: &Tag) -> bool {
    answer_mac(shared, active, nonce).verify_slice(tag).is_ok()
}

/// A candidate's side: the keys it answers under, the secrets it shares with each asker,
/// and a per-source budget for the X25519 exchange an unknown asker costs.
struct Answerer {
    current: StaticSecret,
    /// The key before the last rotation, answered under until the deadline.
    previous: Option<(StaticSecret, Instant)>,
    shared: HashMap<[u8; 32], [[u8; 32]; 2]>,
    limiter: SourceLimiter,
    /// Exchanges left, from all sources together.
    budget: TokenBucket,
}

impl Answerer {
    fn new(key: [u8; 32]) -> Answerer {
        Answerer {
            current: StaticSecret::from(key),
            previous: None,
            shared: HashMap::new(),
            limiter: SourceLimiter::default(),
            budget: TokenBucket::full(NEW_ASKERS_PER_SECOND, Instant::now()),
        }
    }

    /// Answers under `key` from now on, and under the one before for [`OWN_KEY_GRACE`].
    fn rotate(&mut self, key: [u8; 32], now: Instant) {
        if self.current.to_bytes() == key {
            return;
        }
        let old = std::mem::replace(&mut self.current, StaticSecret::from(key));
        self.previous = Some((old, now + OWN_KEY_GRACE));
        self.shared.clear();
    }

    /// The answer to `request` from `from`, or `None` when `from` has spent its budget
    /// of exchanges with new asker keys.
    fn answer(
        &mut self,
        from: IpAddr,
        request: &Request,
        active: bool,
        now: Instant,
    ) -> Option<Reply> {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.previous = None;
            self.shared.clear();
        }
        let shared = match self.shared.get(&request.asker) {
            Some(shared) => *shared,
            None => {
                // A second's worth at most, refilled at that rate.
                let (rate, burst) = (NEW_ASKERS_PER_SECOND, NEW_ASKERS_PER_SECOND);
                if !self.limiter.allow(from, now) || !self.budget.take(now, rate, burst) {
                    return None;
                }
                if self.shared.len() >= MAX_ASKERS {
                    self.shared.clear();
                }
                let asker = PublicKey::from(request.asker);
                let current = self.current.diffie_hellman(&asker).to_bytes();
                let previous = self
                    .previous
                    .as_ref()
                    .map_or(current, |(key, _)| key.diffie_hellman(&asker).to_bytes());
                *self
                    .shared
                    .entry(request.asker)
                    .or_insert([current, previous])
            }
        };
        Some(Reply {
            active,
            nonce: request.nonce,
            tags: shared.map(|s| tag(&s, active, &request.nonce)),
        })
    }
}

/// An asker's side: a key of its own for this process, the nonces of the questions still
/// open per candidate, and the secret shared with each listed candidate key.
struct Asker {
    secret: StaticSecret,
    public: [u8; 32],
    pending: HashMap<SocketAddr, VecDeque<Nonce>>,
    /// `None` for a key no secret can be agreed with (a low-order point).
    shared: HashMap<[u8; 32], Option<[u8; 32]>>,
}

impl Asker {
    fn new() -> Asker {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret).to_bytes();
        Asker {
            secret,
            public,
            pending: HashMap::new(),
            shared: HashMap::new(),
        }
    }

    /// A new question to `to`; the oldest open one to it stops counting.
    fn ask(&mut self, to: SocketAddr) -> Request {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let open = self.pending.entry(to).or_default();
        if open.len() >= PENDING {
            open.pop_front();
        }
        open.push_back(nonce);
        Request {
            nonce,
            asker: self.public,
        }
    }

    /// Whether `reply` from `from` answers an open question and is tagged under `listed`,
    /// the key the ClusterEndpoint lists for that candidate. A question is answered once.
    fn verify(&mut self, from: SocketAddr, listed: &[u8; 32], reply: &Reply) -> bool {
        let Some(open) = self.pending.get_mut(&from) else {
            return false;
        };
        let Some(at) = open.iter().position(|n| *n == reply.nonce) else {
            return false;
        };
        let secret = &self.secret;
        let shared = *self.shared.entry(*listed).or_insert_with(|| {
            let shared = secret.diffie_hellman(&PublicKey::from(*listed));
            shared.was_contributory().then(|| shared.to_bytes())
        });
        let Some(shared) = shared else {
            return false;
        };
        let genuine = reply
            .tags
            .iter()
            .any(|t| tag_matches(&shared, reply.active, &reply.nonce, t));
        if genuine {
            open.remove(at);
        }
        genuine
    }

    /// Forgets the questions to, and secrets with, candidates no longer listed.
    fn retain(&mut self, targets: &[Target]) {
        self.pending
            .retain(|addr, _| targets.iter().any(|t| t.addr == *addr));
        self.shared
            .retain(|key, _| targets.iter().any(|t| t.public_key == *key));
    }
}

/// Another candidate to probe: one of its private IPs, and the key its answers must be
/// tagged under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Its liveness address.
    pub addr: SocketAddr,
    /// Its WireGuard public key, as the local ClusterEndpoint lists it.
    pub public_key: [u8; 32],
}

/// What this candidate knows of the others, and what it says of itself.
#[derive(Debug, Default)]
pub struct Liveness {
    active: AtomicBool,
    /// Per address: when it last answered, and since when it says it is active.
    replies: Mutex<HashMap<SocketAddr, Heard>>,
    /// Whether any candidate has ever answered "active".
    heard_active: AtomicBool,
    /// The keys this candidate answers under; `None` until it has one, and always on a
    /// route agent, which only asks.
    answerer: Mutex<Option<Answerer>>,
    /// Answers that failed verification: forged, replayed, late, or from a key not listed.
    refused: AtomicU64,
}

impl std::fmt::Debug for Answerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answerer")
            .field("askers", &self.shared.len())
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// What one candidate said last.
#[derive(Debug, Clone, Copy)]
struct Heard {
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

    /// Answers questions under `key` (this node's WireGuard key) from now on; after a
    /// rotation, under the previous one too for [`OWN_KEY_GRACE`].
    pub fn set_key(&self, key: [u8; 32]) {
        let mut answerer = self.answerer.lock();
        match answerer.as_mut() {
            Some(a) => a.rotate(key, Instant::now()),
            None => *answerer = Some(Answerer::new(key)),
        }
    }

    /// Answers refused so far: forged, replayed, too late, or tagged under a key the
    /// ClusterEndpoint does not list for their sender.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn answer(&self, from: IpAddr, request: &Request) -> Option<Reply> {
        let active = self.is_active();
        self.answerer
            .lock()
            .as_mut()?
            .answer(from, request, active, Instant::now())
    }

    fn record(&self, from: SocketAddr, active: bool, at: Instant) {
        let mut replies = self.replies.lock();
        let before = replies.get(&from).and_then(|r| r.active_since);
        let active_since = active.then(|| before.unwrap_or(at));
        replies.insert(from, Heard { at, active_since });
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
    pub fn retain(&self, targets: &[Target]) {
        self.replies
            .lock()
            .retain(|a, _| targets.iter().any(|t| t.addr == *a));
    }
}

/// The other candidates to probe: every private IP of every gateway listed for our
/// cluster except our own node's, with the key its answers must be tagged under.
pub fn targets<'a>(
    gateways: impl IntoIterator<Item = (&'a str, &'a [IpAddr], [u8; 32])>,
    own_node: &str,
) -> Vec<Target> {
    let mut out: Vec<Target> = gateways
        .into_iter()
        .filter(|(node, _, _)| *node != own_node)
        .flat_map(|(_, ips, public_key)| {
            ips.iter().map(move |ip| Target {
                addr: SocketAddr::new(*ip, ports::LIVENESS),
                public_key,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How often refused answers are reported in the log, at most.
const REFUSED_REPORT: Duration = Duration::from_secs(60);

/// Answers questions on `sockets` (once [`Liveness::set_key`] gave a key: a candidate;
/// a route agent only asks) and asks every target each [`PROBE_INTERVAL`], until `stop`
/// fires.
pub async fn run(
    sockets: Vec<UdpSocket>,
    mut targets: watch::Receiver<Vec<Target>>,
    liveness: Arc<Liveness>,
    mut stop: watch::Receiver<bool>,
) {
    let sockets: Vec<Arc<UdpSocket>> = sockets.into_iter().map(Arc::new).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, [u8; BUF_LEN], usize, SocketAddr)>(64);
    let mut readers = Vec::new();
    for (i, socket) in sockets.iter().enumerate() {
        let (socket, tx) = (Arc::clone(socket), tx.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; BUF_LEN];
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
    let mut asker = Asker::new();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let current = targets.borrow_and_update().clone();
                asker.retain(&current);
                for to in current.iter().map(|t| t.addr) {
                    // Any socket of the same family reaches the cluster network.
                    if let Some(socket) = sockets.iter().find(|s| {
                        s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4())
                    }) {
                        let _ = socket.send_to(&asker.ask(to).encode(), to).await;
                    }
                }
                let refused = liveness.refused();
                if refused > reported.1 && reported.0.elapsed() >= REFUSED_REPORT {
                    tracing::warn!(
                        refused = refused - reported.1,
                        "liveness answers refused: forged, replayed, too late, or under a key the ClusterEndpoint does not list for their sender"
                    );
                    reported = (Instant::now(), refused);
                }
            }
            Some((i, buf, n, from)) = rx.recv() => {
                let message = &buf[..n];
                if let Some(request) = Request::decode(message) {
                    if let Some(reply) = liveness.answer(from.ip(), &request) {
                        let _ = sockets[i].send_to(&reply.encode(), from).await;
                    }
                } else if let Some(reply) = Reply::decode(message) {
                    let listed = targets.borrow().iter().find(|t| t.addr == from).map(|t| t.public_key);
                    match listed {
                        Some(key) if asker.verify(from, &key, &reply) => {
                            liveness.record(from, reply.active, Instant::now());
                        }
                        _ => {
                            liveness.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
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

    fn key(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    fn public(key: [u8; 32]) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(key)).to_bytes()
    }

    const PEER: &str = "198.19.1.1:51822";

    #[test]
    fn messages_round_trip_and_strangers_are_ignored() {
        let request = Request {
            nonce: [3; NONCE_LEN],
            asker: [4; 32],
        };
        assert_eq!(Request::decode(&request.encode()), Some(request));
        let reply = Reply {
            active: true,
            nonce: [5; NONCE_LEN],
            tags: [[6; TAG_LEN], [7; TAG_LEN]],
        };
        assert_eq!(Reply::decode(&reply.encode()), Some(reply));
        assert_eq!(Reply::decode(&request.encode()), None);
        assert_eq!(Request::decode(&reply.encode()), None);
        let mut bad = reply.encode();
        bad[9] = 7;
        assert_eq!(Reply::decode(&bad), None, "active is 0 or 1");
        bad = reply.encode();
        bad[0] = b'X';
        assert_eq!(Reply::decode(&bad), None);
        assert_eq!(Reply::decode(&reply.encode()[..REPLY_LEN - 1]), None);
        let mut long = reply.encode().to_vec();
        long.push(0);
        assert_eq!(Reply::decode(&long), None);
        assert_eq!(
            Reply::decode(b"CWALIVE1\x02\x01"),
            None,
            "the unauthenticated first version is not accepted"
        );
        assert_eq!(
            Request::decode(b"CWPROBE1\x02\x00"),
            None,
            "a health probe is not a liveness message"
        );
    }

    #[test]
    fn only_the_listed_key_answering_an_open_question_is_believed() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let now = Instant::now();
        let mut candidate = Answerer::new(key(1));
        let mut asker = Asker::new();
        let listed = public(key(1));

        let question = asker.ask(peer);
        let answer = candidate
            .answer(peer.ip(), &question, true, now)
            .expect("answered");
        assert!(asker.verify(peer, &listed, &answer), "a genuine answer");
        assert!(
            !asker.verify(peer, &listed, &answer),
            "the same answer replayed: its question is closed"
        );

        // Turned around: the genuine tag does not cover the other flag.
        let question = asker.ask(peer);
        let mut flipped = candidate.answer(peer.ip(), &question, true, now).unwrap();
        flipped.active = false;
        assert!(!asker.verify(peer, &listed, &flipped), "flag flipped");

        // An impostor's key, however well formed its answer.
        let mut impostor = Answerer::new(key(9));
        let forged = impostor.answer(peer.ip(), &question, false, now).unwrap();
        assert!(!asker.verify(peer, &listed, &forged), "another key");
        assert!(
            !asker.verify("198.19.1.3:51822".parse().unwrap(), &listed, &forged),
            "from an address never asked"
        );

        // A genuine answer to a question the asker never sent (the attacker's own).
        let mut attacker = Asker::new();
        let own = attacker.ask(peer);
        let harvested = candidate.answer(peer.ip(), &own, true, now).unwrap();
        assert!(
            !asker.verify(peer, &listed, &harvested),
            "an answer to another asker"
        );

        // An answer to a question four probes old no longer counts.
        let old = asker.ask(peer);
        let late = candidate.answer(peer.ip(), &old, true, now).unwrap();
        for _ in 0..PENDING {
            asker.ask(peer);
        }
        assert!(!asker.verify(peer, &listed, &late), "too late");
        // The question before that one still counts: answers may cross on the wire.
        let q1 = asker.ask(peer);
        let q2 = asker.ask(peer);
        let a2 = candidate.answer(peer.ip(), &q2, true, now).unwrap();
        let a1 = candidate.answer(peer.ip(), &q1, true, now).unwrap();
        assert!(asker.verify(peer, &listed, &a2));
        assert!(asker.verify(peer, &listed, &a1));

        // A listed key no secret can be agreed with (the identity point) verifies nothing.
        let q = asker.ask(peer);
        let a = Reply {
            active: true,
            nonce: q.nonce,
            tags: [tag(&[0; 32], true, &q.nonce); 2],
        };
        assert!(!asker.verify(peer, &[0; 32], &a), "low-order listed key");
    }

    #[test]
    fn a_rotating_candidate_is_believed_under_either_listed_key() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let now = Instant::now();
        let mut candidate = Answerer::new(key(1));
        let mut asker = Asker::new();
        let q = asker.ask(peer);
        candidate.answer(peer.ip(), &q, true, now).unwrap();
        candidate.rotate(key(2), now);
        for listed in [public(key(1)), public(key(2))] {
            let q = asker.ask(peer);
            let a = candidate.answer(peer.ip(), &q, true, now).unwrap();
            assert!(asker.verify(peer, &listed, &a), "during the rotation");
        }
        let after = now + OWN_KEY_GRACE;
        let q = asker.ask(peer);
        let a = candidate.answer(peer.ip(), &q, true, after).unwrap();
        assert!(
            !asker.verify(peer, &public(key(1)), &a),
            "the old key expired"
        );
        let q = asker.ask(peer);
        let a = candidate.answer(peer.ip(), &q, true, after).unwrap();
        assert!(asker.verify(peer, &public(key(2)), &a));
    }

    #[test]
    fn new_asker_keys_from_one_source_are_held_to_a_budget_known_ones_are_not() {
        let peer: SocketAddr = PEER.parse().unwrap();
        let now = Instant::now();
        let mut candidate = Answerer::new(key(1));
        let mut known = Asker::new();
        let q = known.ask(peer);
        assert!(candidate.answer(peer.ip(), &q, true, now).is_some());
        let answered = (0..100)
            .filter(|_| {
                let q = Asker::new().ask(peer);
                candidate.answer(peer.ip(), &q, true, now).is_some()
            })
            .count();
        assert!(answered < 10, "{answered} of 100 new keys cost an exchange");
        let q = known.ask(peer);
        assert!(
            candidate.answer(peer.ip(), &q, true, now).is_some(),
            "a known asker is answered from the cache"
        );
        let other: IpAddr = "198.19.1.9".parse().unwrap();
        let q = Asker::new().ask(peer);
        assert!(candidate.answer(other, &q, true, now).is_some());

        // Spoofed sources, a new one each time: the all-sources budget holds.
        let answered = (0..1000u32)
            .filter(|i| {
                let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                let q = Asker::new().ask(peer);
                candidate.answer(source, &q, true, now).is_some()
            })
            .count();
        assert!(
            answered <= NEW_ASKERS_PER_SECOND as usize,
            "{answered} of 1000 spoofed sources cost an exchange"
        );
        let q = known.ask(peer);
        assert!(candidate.answer(peer.ip(), &q, true, now).is_some());
    }

    #[test]
    fn targets_are_the_other_candidates_private_ips() {
        let a: Vec<IpAddr> = vec![
            "198.19.1.1".parse().unwrap(),
            "fd00:ffff:1::1".parse().unwrap(),
        ];
        let b: Vec<IpAddr> = vec!["198.19.1.3".parse().unwrap()];
        let t = targets(
            [("gw", a.as_slice(), key(1)), ("gw2", b.as_slice(), key(2))],
            "gw2",
        );
        let target = |addr: &str| Target {
            addr: addr.parse().unwrap(),
            public_key: key(1),
        };
        assert_eq!(
            t,
            vec![target("198.19.1.1:51822"), target("[fd00:ffff:1::1]:51822")]
        );
        assert!(targets([("gw", a.as_slice(), key(1))], "gw").is_empty());
    }

    #[test]
    fn an_active_peer_is_alive_until_silent_or_stepped_down() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let peer: SocketAddr = PEER.parse().unwrap();
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
        la.set_key(key(1));
        lb.set_key(key(2));
        la.set_active(true);
        let target = |addr, k| {
            vec![Target {
                addr,
                public_key: public(key(k)),
            }]
        };
        let (_ta, targets_a) = watch::channel(target(b_addr, 2));
        let (_tb, targets_b) = watch::channel(target(a_addr, 1));
        let (stop_tx, stop) = watch::channel(false);
        let ra = tokio::spawn(run(vec![a], targets_a, Arc::clone(&la), stop.clone()));
        let rb = tokio::spawn(run(vec![b], targets_b, Arc::clone(&lb), stop));
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
