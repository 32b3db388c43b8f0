//! Round-trip probes through the tunnel: every gateway answers small UDP probes on its
//! `healthCheckIP` (an address inside its own cluster's CIDRs, so probes travel the same
//! encrypted path as pod traffic) and probes every peer's once a second.
//!
//! A reply echoes the send time the request carried, so the prober keeps no per-probe
//! state and a lost probe costs nothing but a gap in the samples.

use causeway_datapath::stats::RttStats;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// How often each peer is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long answers are awaited after the last probe of a burst.
const PROBE_WAIT: Duration = Duration::from_secs(1);
/// Probes kept for min/avg/max: the last minute at one a second.
const WINDOW: usize = 60;
const MAGIC: &[u8; 8] = b"CWPROBE1";
/// Kind byte of a probe asking for a reply.
pub const REQUEST: u8 = 1;
/// Kind byte of a reply.
pub const REPLY: u8 = 2;
/// Size of a probe message: magic, kind, send time in nanoseconds.
pub const PROBE_LEN: usize = 17;

/// The last [`WINDOW`] round trips of one peer.
#[derive(Debug, Default, Clone)]
pub struct RttWindow {
    samples: VecDeque<Duration>,
}

impl RttWindow {
    /// Adds a round trip, forgetting the oldest beyond the window.
    pub fn push(&mut self, rtt: Duration) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
    }

    /// Min, average, max and latest over the window; `None` before the first reply.
    pub fn stats(&self) -> Option<RttStats> {
        let last = *self.samples.back()?;
        let total: Duration = self.samples.iter().sum();
        Some(RttStats {
            min: self.samples.iter().copied().min().unwrap_or(last),
            avg: total / self.samples.len() as u32,
            max: self.samples.iter().copied().max().unwrap_or(last),
            last,
            samples: self.samples.len(),
        })
    }
}

/// Encodes a probe message.
pub fn encode(kind: u8, sent_nanos: u64) -> [u8; PROBE_LEN] {
    let mut m = [0u8; PROBE_LEN];
    m[..8].copy_from_slice(MAGIC);
    m[8] = kind;
    m[9..].copy_from_slice(&sent_nanos.to_le_bytes());
    m
}

/// Decodes a probe message: its kind and send time; `None` for anything else.
pub fn decode(m: &[u8]) -> Option<(u8, u64)> {
    if m.len() != PROBE_LEN || &m[..8] != MAGIC || !matches!(m[8], REQUEST | REPLY) {
        return None;
    }
    let nanos = u64::from_le_bytes(m[9..17].try_into().ok()?);
    Some((m[8], nanos))
}

/// Probe results of every peer, shared with the metrics (and later the Gateway status).
#[derive(Debug, Default)]
pub struct Health {
    peers: Mutex<HashMap<String, (RttWindow, Instant)>>,
}

impl Health {
    /// Records a reply from `cluster`.
    pub fn record(&self, cluster: &str, rtt: Duration) {
        let mut peers = self.peers.lock();
        let entry = peers
            .entry(cluster.to_owned())
            .or_insert_with(|| (RttWindow::default(), Instant::now()));
        entry.0.push(rtt);
        entry.1 = Instant::now();
    }

    /// Round-trip statistics of `cluster`, if it ever answered.
    pub fn stats(&self, cluster: &str) -> Option<RttStats> {
        self.peers.lock().get(cluster).and_then(|(w, _)| w.stats())
    }

    /// How long ago `cluster` last answered a probe.
    pub fn since_last_reply(&self, cluster: &str) -> Option<Duration> {
        self.peers.lock().get(cluster).map(|(_, at)| at.elapsed())
    }

    /// Forgets peers no longer configured.
    pub fn retain(&self, clusters: &[String]) {
        self.peers.lock().retain(|k, _| clusters.contains(k));
    }
}

/// Who to probe: each peer's cluster ID and its `healthCheckIP:ports::PROBE`.
pub type Targets = Vec<(String, SocketAddr)>;

/// Probe state shared by the node (which sets the targets), the open tunnel's prober
/// (which records round trips) and the diagnostics agent (which probes from the open
/// tunnel's address on demand).
#[derive(Clone)]
pub struct Probes {
    health: Arc<Health>,
    targets: Arc<watch::Sender<Targets>>,
    /// The open tunnel's probe address, tagged with the tunnel it came from: a tunnel
    /// closing after its successor opened must not take the successor's address away.
    open: Arc<Mutex<(u64, Option<IpAddr>)>>,
}

impl Default for Probes {
    fn default() -> Probes {
        Probes {
            health: Arc::default(),
            targets: Arc::new(watch::channel(Vec::new()).0),
            open: Arc::default(),
        }
    }
}

impl Probes {
    /// Probe results of every peer.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Who is probed now.
    pub fn targets(&self) -> Targets {
        self.targets.borrow().clone()
    }

    /// Follows who is probed.
    pub fn subscribe(&self) -> watch::Receiver<Targets> {
        self.targets.subscribe()
    }

    /// Sets who is probed; `false` when nothing changed.
    pub fn set_targets(&self, targets: Targets) -> bool {
        self.targets.send_if_modified(|current| {
            let changed = *current != targets;
            *current = targets;
            changed
        })
    }

    /// Marks `ip` as the open tunnel's probe address until the returned value is dropped.
    pub fn announce(&self, ip: IpAddr) -> Announcement {
        let mut open = self.open.lock();
        let generation = open.0 + 1;
        *open = (generation, Some(ip));
        Announcement {
            open: Arc::clone(&self.open),
            generation,
        }
    }

    /// The open tunnel's probe address, if a tunnel with one is open.
    pub fn open_address(&self) -> Option<IpAddr> {
        self.open.lock().1
    }
}

/// Keeps a tunnel's probe address announced; see [`Probes::announce`].
#[must_use = "the address is announced as long as this value lives"]
pub struct Announcement {
    open: Arc<Mutex<(u64, Option<IpAddr>)>>,
    generation: u64,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if open.0 == self.generation {
            open.1 = None;
        }
    }
}

/// Answers probes and probes every target once a [`PROBE_INTERVAL`], until `stop` fires.
pub async fn run(
    socket: UdpSocket,
    mut targets: watch::Receiver<Targets>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    // Replies echo the send time, measured from here: only this loop reads them.
    let base = Instant::now();
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let message = encode(REQUEST, nanos(base));
                let current = targets.borrow_and_update().clone();
                for (_, to) in current {
                    // A peer without a session yet simply does not answer this round.
                    let _ = socket.send_to(&message, to).await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                match decode(&buf[..n]) {
                    Some((REQUEST, sent)) => {
                        let _ = socket.send_to(&encode(REPLY, sent), from).await;
                    }
                    Some((REPLY, sent)) => {
                        let rtt = Duration::from_nanos(nanos(base).saturating_sub(sent));
                        let peer = targets.borrow().iter().find(|(_, a)| *a == from).map(|(c, _)| c.clone());
                        if let Some(cluster) = peer {
                            health.record(&cluster, rtt);
                        }
                    }
                    _ => {}
                }
            }
            _ = stop.changed() => return,
        }
    }
}

fn nanos(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Sends `count` probes `spacing` apart to every target from `local_ip` and collects the
/// round trips per cluster, waiting [`PROBE_WAIT`] after the last one at most.
pub async fn probe_burst(
    local_ip: IpAddr,
    targets: &[(String, SocketAddr)],
    count: u32,
    spacing: Duration,
) -> std::io::Result<HashMap<String, Vec<Duration>>> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let base = Instant::now();
    let mut rtts: HashMap<String, Vec<Duration>> = HashMap::new();
    let mut buf = [0u8; 64];
    let mut sent = 0;
    let mut tick = tokio::time::interval(spacing);
    let expected = count as usize * targets.len();
    let mut answered = 0;
    let mut deadline = None;
    loop {
        let wait_over = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick(), if sent < count => {
                let message = encode(REQUEST, nanos(base));
                for (_, to) in targets {
                    // An unreachable peer shows as unanswered probes, which is the finding.
                    let _ = socket.send_to(&message, to).await;
                }
                sent += 1;
                if sent == count {
                    deadline = Some(tokio::time::Instant::now() + PROBE_WAIT);
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if let Some((REPLY, at)) = decode(&buf[..n]) {
                    if let Some((cluster, _)) = targets.iter().find(|(_, a)| *a == from) {
                        let rtt = Duration::from_nanos(nanos(base).saturating_sub(at));
                        rtts.entry(cluster.clone()).or_default().push(rtt);
                        answered += 1;
                    }
                }
                if sent == count && answered >= expected {
                    break;
                }
            }
            () = wait_over => break,
        }
    }
    Ok(rtts)
}

/// Probes `target` every `spacing` until `stop` (or `limit`), for the RTT under load.
pub async fn probe_until(
    local_ip: IpAddr,
    target: SocketAddr,
    spacing: Duration,
    limit: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<Duration> {
    let Ok(socket) = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await else {
        return Vec::new();
    };
    let base = Instant::now();
    let mut tick = tokio::time::interval(spacing);
    let mut buf = [0u8; 64];
    let mut rtts = Vec::new();
    // Bounded even if `stop` were never sent.
    let give_up = tokio::time::sleep(limit);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = socket.send_to(&encode(REQUEST, nanos(base)), target).await;
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    if let (Some((REPLY, at)), true) = (decode(&buf[..n]), from == target) {
                        rtts.push(Duration::from_nanos(nanos(base).saturating_sub(at)));
                    }
                }
            }
            _ = stop.changed() => return rtts,
            () = &mut give_up => return rtts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_last_minute() {
        let mut w = RttWindow::default();
        assert_eq!(w.stats(), None);
        for ms in 1..=100u64 {
            w.push(Duration::from_millis(ms));
        }
        let s = w.stats().unwrap();
        assert_eq!(s.samples, WINDOW);
        assert_eq!(s.min, Duration::from_millis(41));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.last, Duration::from_millis(100));
        assert_eq!(s.avg, Duration::from_micros(70_500));
    }

    #[test]
    fn probes_round_trip_and_strangers_are_ignored() {
        let m = encode(REQUEST, 123_456_789);
        assert_eq!(decode(&m), Some((REQUEST, 123_456_789)));
        assert_eq!(decode(&encode(REPLY, 7)), Some((REPLY, 7)));
        assert_eq!(decode(&m[..16]), None);
        let mut wrong = m;
        wrong[0] = b'X';
        assert_eq!(decode(&wrong), None);
        wrong = m;
        wrong[8] = 9;
        assert_eq!(decode(&wrong), None);
    }

    #[tokio::test]
    async fn two_responders_measure_each_other() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (health_a, health_b) = (Arc::new(Health::default()), Arc::new(Health::default()));
        let (_ta, targets_a) = watch::channel(vec![("b".to_string(), b_addr)]);
        let (_tb, targets_b) = watch::channel(vec![("a".to_string(), a_addr)]);
        let (stop_tx, stop) = watch::channel(false);
        let ra = tokio::spawn(run(a, targets_a, Arc::clone(&health_a), stop.clone()));
        let rb = tokio::spawn(run(b, targets_b, Arc::clone(&health_b), stop));
        let deadline = Instant::now() + Duration::from_secs(5);
        while health_a.stats("b").is_none() || health_b.stats("a").is_none() {
            assert!(Instant::now() < deadline, "no probe answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = health_a.stats("b").unwrap();
        assert!(
            s.min <= s.avg && s.avg <= s.max && s.max < Duration::from_secs(1),
            "{s:?}"
        );
        assert!(health_a.since_last_reply("b").unwrap() < Duration::from_secs(2));
        health_a.retain(&[]);
        assert_eq!(health_a.stats("b"), None);
        stop_tx.send(true).unwrap();
        ra.await.unwrap();
        rb.await.unwrap();
    }

    #[tokio::test]
    async fn probes_measure_a_responder() {
        let responder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = responder.local_addr().unwrap();
        let (_targets_tx, targets) = watch::channel(Vec::new());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(responder, targets, Default::default(), stop));
        let target = [("site-b".to_string(), addr)];
        let rtts = probe_burst(
            "127.0.0.1".parse().unwrap(),
            &target,
            3,
            Duration::from_millis(5),
        )
        .await
        .unwrap();
        assert_eq!(rtts["site-b"].len(), 3);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
