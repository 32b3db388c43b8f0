//! The gateway's agent for `kubectl causeway verify` and `benchmark`, on the metrics HTTP
//! server (the plugin reaches it through the API server's pod proxy):
//!
//! - `GET /verify[?dns=<name>[:<port>]…]`: per remote cluster the handshake age and a
//!   fresh RTT from a few probes sent now through the tunnel; per name, the answer of the
//!   cluster's DNS (`--dns-server`, else the first nameserver of /etc/resolv.conf) and a
//!   bounded TCP connect to the first address.
//! - `GET /benchmark?cluster=<id>&seconds=N&streams=K`: NDJSON lines — idle RTT, progress
//!   about twice a second, then the throughput the remote sink acknowledged and the RTT
//!   under load. Bounds: [`MAX_SECONDS`], [`MAX_STREAMS`]; beyond them a 400 says so. One
//!   benchmark at a time per gateway (a second one gets a 409).
//!
//! Every gateway also serves a benchmark sink on `healthCheckIP:`[`ports::BENCHMARK`] (started
//! with the health prober, so only while its tunnel is open): it counts what a stream
//! sends and answers the count when the sender half-closes. It takes at most
//! [`SINK_MAX_CONNECTIONS`] streams at once, each for at most [`SINK_MAX_CONNECTION_TIME`].
//!
//! Wire types and bounds live in `causeway_agent_api::{verify, benchmark}`, which the
//! plugin uses too, so the two cannot drift apart.

use causeway_agent_api::ports;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use causeway_agent_api::benchmark::{BenchLine, BenchParams, BenchResult};
pub use causeway_agent_api::benchmark::{MAX_SECONDS, MAX_STREAMS};
use causeway_agent_api::verify::{AgentDns, AgentPeer, AgentTcp, AgentVerify, RttFigures};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::health::{self, Targets};
use crate::metrics::MetricsSource;

/// TCP port of the benchmark sink on every gateway's healthCheckIP.
/// Streams the sink serves at once; more are closed at once.
pub const SINK_MAX_CONNECTIONS: usize = 16;
/// How long the sink serves one stream: the longest benchmark plus slack.
pub const SINK_MAX_CONNECTION_TIME: Duration = Duration::from_secs(MAX_SECONDS as u64 + 5);
/// Names one `/verify` resolves at most.
pub const MAX_DNS_NAMES: usize = 32;
/// Probes per peer of one `/verify`.
const VERIFY_PROBES: u32 = 5;
const VERIFY_PROBE_SPACING: Duration = Duration::from_millis(20);
/// How long answers are awaited after the last probe.
const PROBE_WAIT: Duration = Duration::from_secs(1);
/// Idle-latency probes of a benchmark.
const BENCH_PROBES: u32 = 50;
const BENCH_PROBE_SPACING: Duration = Duration::from_millis(10);
/// Probe spacing while the streams run.
const LOADED_PROBE_SPACING: Duration = Duration::from_millis(100);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stream waits for the sink's count after it stopped sending.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_CHUNK: usize = 128 * 1024;

/// This process's open tunnel as the agent needs it: where probes come from and go to.
#[derive(Clone)]
struct TunnelView {
    local_ip: IpAddr,
    targets: watch::Receiver<Targets>,
}

/// The prober of the open tunnel. Process-wide because the HTTP server is started before
/// (and outlives) any tunnel and is handed only a [`MetricsSource`]; a gateway process
/// has at most one tunnel at a time.
static TUNNEL: Mutex<Option<(u64, TunnelView)>> = Mutex::new(None);
static GENERATION: AtomicU64 = AtomicU64::new(0);
static DNS_SERVER: OnceLock<SocketAddr> = OnceLock::new();
/// One benchmark at a time per gateway: the endpoint is reachable by whoever reaches the
/// metrics port, and each run may load the tunnel for a minute.
static BENCH_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks a benchmark as running until dropped.
struct BenchSlot;

impl BenchSlot {
    fn take() -> Option<BenchSlot> {
        BENCH_RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BenchSlot)
    }
}

impl Drop for BenchSlot {
    fn drop(&mut self) {
        BENCH_RUNNING.store(false, Ordering::Release);
    }
}

/// Keeps the agent pointed at a prober; dropping it (the prober stopped) forgets it.
#[must_use = "the registration lasts as long as this value"]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slot = TUNNEL.lock();
        // A newer tunnel may have registered since: leave that one.
        if slot.as_ref().is_some_and(|(g, _)| *g == self.0) {
            *slot = None;
        }
    }
}

/// Tells the agent that a prober runs on `local_ip`, probing `targets`.
pub fn register(local_ip: IpAddr, targets: watch::Receiver<Targets>) -> Registration {
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    *TUNNEL.lock() = Some((generation, TunnelView { local_ip, targets }));
    Registration(generation)
}

fn tunnel() -> Option<TunnelView> {
    TUNNEL.lock().as_ref().map(|(_, t)| t.clone())
}

/// Sets the DNS server `/verify` asks (`--dns-server`); the first call wins.
pub fn set_dns_server(server: SocketAddr) {
    let _ = DNS_SERVER.set(server);
}

/// The first `nameserver` of a resolv.conf (pure).
pub fn first_nameserver(resolv_conf: &str) -> Option<IpAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => words.next()?.parse().ok(),
            _ => None,
        }
    })
}

fn dns_server() -> Result<SocketAddr, String> {
    if let Some(server) = DNS_SERVER.get() {
        return Ok(*server);
    }
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("no --dns-server and /etc/resolv.conf unreadable: {e}"))?;
    first_nameserver(&text)
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| "no --dns-server and no nameserver in /etc/resolv.conf".to_owned())
}

/// A name to resolve and the port to connect to (`name` or `name:port`; pure).
pub fn parse_dns_param(param: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = match param.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse().ok()?)),
        None => (param, None),
    };
    let name = name.trim_end_matches('.');
    (!name.is_empty() && name.len() <= 253).then(|| (name.to_owned(), port))
}

fn nanos(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Sends `count` probes `spacing` apart to every target from `local_ip` and collects the
/// round trips per cluster, waiting [`PROBE_WAIT`] after the last one at most.
async fn probe(
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
                let message = health::encode(health::REQUEST, nanos(base));
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
                if let Some((health::REPLY, at)) = health::decode(&buf[..n]) {
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

/// Asks `server` for the A and AAAA records of `name` over UDP.
async fn resolve(server: SocketAddr, name: &str) -> AgentDns {
    let mut out = AgentDns {
        name: name.to_owned(),
        server: server.to_string(),
        ..AgentDns::default()
    };
    let parsed = match Name::from_str(&format!("{name}.")) {
        Ok(n) => n,
        Err(e) => {
            out.error = Some(format!("not a DNS name: {e}"));
            return out;
        }
    };
    for (i, qtype) in [RecordType::A, RecordType::AAAA].into_iter().enumerate() {
        match ask(server, &parsed, qtype, i as u16 + 1).await {
            Ok(message) => {
                out.rcode = Some(format!("{:?}", message.metadata.response_code));
                out.addresses
                    .extend(message.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0.to_string()),
                        RData::AAAA(a) => Some(a.0.to_string()),
                        _ => None,
                    }));
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    out
}

async fn ask(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    id: u16,
) -> Result<Message, String> {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let exchange = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // A stray datagram with another ID is not our answer: keep waiting.
            if let Ok(m) = Message::from_vec(&buf[..n]) {
                if m.metadata.id == id {
                    return Ok(m);
                }
            }
        }
    };
    tokio::time::timeout(DNS_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {server} within {DNS_TIMEOUT:?}"))?
}

fn socket_for(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// Connects to `to` from `local_ip` (so the answer comes back through the tunnel), bounded.
async fn connect_from(local_ip: IpAddr, to: SocketAddr) -> Result<TcpStream, String> {
    let socket = socket_for(to).map_err(|e| e.to_string())?;
    if local_ip.is_ipv4() == to.is_ipv4() {
        socket
            .bind(SocketAddr::new(local_ip, 0))
            .map_err(|e| format!("cannot bind {local_ip}: {e}"))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Connects to a service's address. The kernel picks the source: for a remote cluster's
/// address the route into the tunnel interface gives the healthCheckIP (its only
/// address), so the answer comes back through the tunnel; for one of this cluster's own,
/// the node's address, which its pods can route back to.
async fn tcp_check(to: SocketAddr) -> AgentTcp {
    let start = Instant::now();
    let result = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    };
    AgentTcp {
        address: to.to_string(),
        connect_ms: result
            .as_ref()
            .ok()
            .map(|_| start.elapsed().as_secs_f64() * 1e3),
        error: result.err(),
    }
}

/// `GET /verify`.
pub async fn verify_handler(
    State(source): State<Arc<dyn MetricsSource>>,
    RawQuery(query): RawQuery,
) -> Response {
    let names: Vec<(String, Option<u16>)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(k, _)| k == "dns")
            .filter_map(|(_, v)| parse_dns_param(&v))
            .collect();
    if names.len() > MAX_DNS_NAMES {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "{} dns names asked; ask at most {MAX_DNS_NAMES} at once\n",
                names.len()
            ),
        )
            .into_response();
    }
    let answer = verify(source.as_ref(), &names).await;
    match serde_json::to_string(&answer) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn verify(source: &dyn MetricsSource, names: &[(String, Option<u16>)]) -> AgentVerify {
    let snapshot = source.snapshot();
    let Some(tunnel) = tunnel().filter(|_| snapshot.gateway_active != Some(false)) else {
        return AgentVerify::default();
    };
    let targets = tunnel.targets.borrow().clone();
    let now = std::time::SystemTime::now();
    let mut peers: BTreeMap<String, AgentPeer> = BTreeMap::new();
    for p in &snapshot.peers {
        peers.insert(
            p.cluster_id.clone(),
            AgentPeer {
                cluster: p.cluster_id.clone(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                last_handshake_seconds: p
                    .last_handshake
                    .map(|at| now.duration_since(at).map_or(0.0, |d| d.as_secs_f64())),
                ..AgentPeer::default()
            },
        );
    }
    for (cluster, addr) in &targets {
        let peer = peers.entry(cluster.clone()).or_insert_with(|| AgentPeer {
            cluster: cluster.clone(),
            ..AgentPeer::default()
        });
        peer.probe_target = Some(addr.to_string());
        peer.probes_sent = VERIFY_PROBES;
    }
    let probing = probe(
        tunnel.local_ip,
        &targets,
        VERIFY_PROBES,
        VERIFY_PROBE_SPACING,
    );
    let server = dns_server();
    let lookups = names.iter().map(|(name, port)| {
        let server = server.clone();
        async move {
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    return AgentDns {
                        name: name.clone(),
                        error: Some(e),
                        ..AgentDns::default()
                    }
                }
            };
            let mut answer = resolve(server, name).await;
            let first = answer
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let (Some(ip), Some(port)) = (first, port) {
                answer.tcp = Some(tcp_check(SocketAddr::new(ip, *port)).await);
            }
            answer
        }
    });
    let (rtts, dns) = tokio::join!(probing, futures::future::join_all(lookups));
    match rtts {
        Ok(rtts) => {
            for (cluster, samples) in rtts {
                if let Some(peer) = peers.get_mut(&cluster) {
                    peer.rtt = RttFigures::from_samples(&samples);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, local = %tunnel.local_ip, "verify: cannot bind a probe socket")
        }
    }
    AgentVerify {
        active: true,
        health_check_ip: Some(tunnel.local_ip.to_string()),
        peers: peers.into_values().collect(),
        dns,
    }
}

fn line(l: &BenchLine) -> Bytes {
    // Our own plain types always serialize.
    let mut text = serde_json::to_string(l)
        .unwrap_or_else(|e| format!("{{\"kind\":\"error\",\"message\":\"{e}\"}}"));
    text.push('\n');
    Bytes::from(text)
}

/// `GET /benchmark`.
pub async fn benchmark_handler(
    State(source): State<Arc<dyn MetricsSource>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match BenchParams::from_query(&query.unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let tunnel = match tunnel().filter(|_| source.snapshot().gateway_active != Some(false)) {
        Some(t) => t,
        None => {
            return (
                StatusCode::CONFLICT,
                "this gateway has no tunnel open (it is not its cluster's active gateway); ask the active one\n",
            )
                .into_response()
        }
    };
    let targets = tunnel.targets.borrow().clone();
    let Some(probe_target) = targets
        .iter()
        .find(|(c, _)| *c == params.cluster)
        .map(|(_, a)| *a)
    else {
        let known: Vec<&str> = targets.iter().map(|(c, _)| c.as_str()).collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no remote cluster {:?} with a healthCheckIP to benchmark against; this gateway probes: {}\n",
                params.cluster,
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ),
        )
            .into_response();
    };
    let Some(slot) = BenchSlot::take() else {
        return (
            StatusCode::CONFLICT,
            "another benchmark is running on this gateway; wait for it to finish (at most a minute)\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _slot = slot;
        let result = run_benchmark(&params, tunnel.local_ip, probe_target, &tx).await;
        let last = match result {
            Ok(r) => BenchLine::Result(r),
            Err(message) => BenchLine::Error { message },
        };
        let _ = tx.send(line(&last)).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn run_benchmark(
    params: &BenchParams,
    local_ip: IpAddr,
    probe_target: SocketAddr,
    tx: &mpsc::Sender<Bytes>,
) -> Result<BenchResult, String> {
    let target = vec![(params.cluster.clone(), probe_target)];
    let idle = probe(local_ip, &target, BENCH_PROBES, BENCH_PROBE_SPACING)
        .await
        .map_err(|e| format!("cannot bind a probe socket on {local_ip}: {e}"))?;
    let rtt = idle
        .get(&params.cluster)
        .and_then(|s| RttFigures::from_samples(s));
    let latency = BenchLine::Latency {
        probes_sent: BENCH_PROBES,
        rtt,
    };
    if tx.send(line(&latency)).await.is_err() {
        return Err("the client went away".into());
    }

    let sink = SocketAddr::new(probe_target.ip(), ports::BENCHMARK);
    let written = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs(params.seconds.into());
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut streams = Vec::new();
    for _ in 0..params.streams {
        let stream = connect_from(local_ip, sink)
            .await
            .map_err(|e| format!("cannot connect to {}'s benchmark sink {sink}: {e}; is its gateway as new as this one, and does the tunnel carry TCP?", params.cluster))?;
        streams.push(tokio::spawn(send_until(
            stream,
            deadline,
            Arc::clone(&written),
        )));
    }
    let (stop_probes, probes_stopped) = watch::channel(false);
    let loaded = tokio::spawn(probe_until(local_ip, probe_target, probes_stopped));
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = progress.tick() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
        let line = line(&BenchLine::Progress {
            elapsed_seconds: start.elapsed().as_secs_f64(),
            bytes: written.load(Ordering::Relaxed),
        });
        if tx.send(line).await.is_err() {
            // The operator pressed ^C: stop loading the tunnel now.
            for s in &streams {
                s.abort();
            }
            let _ = stop_probes.send(true);
            return Err("the client went away".into());
        }
    }
    let _ = stop_probes.send(true);
    let mut acknowledged = 0u64;
    for s in streams {
        acknowledged += s
            .await
            .map_err(|e| format!("a stream task failed: {e}"))?
            .map_err(|e| format!("stream to {sink}: {e}"))?;
    }
    let seconds = start.elapsed();
    let loaded = loaded.await.unwrap_or_default();
    Ok(BenchResult {
        from: String::new(),
        to: params.cluster.clone(),
        target: sink.to_string(),
        streams: params.streams,
        seconds: seconds.as_secs_f64(),
        bytes: acknowledged,
        bits_per_second: causeway_agent_api::benchmark::bits_per_second(acknowledged, seconds),
        rtt,
        rtt_under_load: RttFigures::from_samples(&loaded),
    })
}

/// Writes until `deadline`, half-closes, and returns the byte count the sink acknowledges.
async fn send_until(
    mut stream: TcpStream,
    deadline: tokio::time::Instant,
    written: Arc<AtomicU64>,
) -> Result<u64, String> {
    let chunk = vec![0x5au8; WRITE_CHUNK];
    loop {
        tokio::select! {
            result = stream.write(&chunk) => {
                let n = result.map_err(|e| format!("write: {e}"))?;
                written.fetch_add(n as u64, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    stream
        .shutdown()
        .await
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut count = [0u8; 8];
    tokio::time::timeout(ACK_TIMEOUT, stream.read_exact(&mut count))
        .await
        .map_err(|_| format!("the sink did not acknowledge within {ACK_TIMEOUT:?}"))?
        .map_err(|e| format!("reading the sink's count: {e}"))?;
    Ok(u64::from_be_bytes(count))
}

/// Probes `target` every [`LOADED_PROBE_SPACING`] until `stop`, for the RTT under load.
async fn probe_until(
    local_ip: IpAddr,
    target: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Vec<Duration> {
    let Ok(socket) = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await else {
        return Vec::new();
    };
    let base = Instant::now();
    let mut tick = tokio::time::interval(LOADED_PROBE_SPACING);
    let mut buf = [0u8; 64];
    let mut rtts = Vec::new();
    // Bounded by the benchmark's own bound, even if `stop` were never sent.
    let give_up = tokio::time::sleep(SINK_MAX_CONNECTION_TIME);
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = socket.send_to(&health::encode(health::REQUEST, nanos(base)), target).await;
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    if let (Some((health::REPLY, at)), true) = (health::decode(&buf[..n]), from == target) {
                        rtts.push(Duration::from_nanos(nanos(base).saturating_sub(at)));
                    }
                }
            }
            _ = stop.changed() => return rtts,
            () = &mut give_up => return rtts,
        }
    }
}

/// Binds the benchmark sink on `ip:`[`ports::BENCHMARK`].
pub async fn bind_sink(ip: IpAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, ports::BENCHMARK)).await
}

/// Serves the benchmark sink on `listener` until `stop` fires.
pub async fn serve_sink(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(SINK_MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, from)) = accepted else {
                    // Out of descriptors and the like: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!(%from, "benchmark sink full; closing the connection");
                    continue;
                };
                let stopped = stop.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    sink_one(stream, stopped).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Counts what one stream sends until it half-closes, then answers the count.
async fn sink_one(mut stream: TcpStream, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; WRITE_CHUNK];
    let mut received = 0u64;
    let serve = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received += n as u64,
                Err(_) => return,
            }
        }
        let _ = stream.write_all(&received.to_be_bytes()).await;
        let _ = stream.shutdown().await;
    };
    tokio::select! {
        () = serve => {}
        _ = tokio::time::sleep(SINK_MAX_CONNECTION_TIME) => {
            tracing::info!(limit_secs = SINK_MAX_CONNECTION_TIME.as_secs(), "benchmark sink: stream ran past its time limit; closed");
        }
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_first_nameserver() {
        let text = "# generated\nsearch causeway.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\n";
        assert_eq!(first_nameserver(text), Some("10.96.0.10".parse().unwrap()));
        assert_eq!(
            first_nameserver("nameserver fd00::a\n"),
            Some("fd00::a".parse().unwrap())
        );
        assert_eq!(first_nameserver("options ndots:5\n"), None);
    }

    #[test]
    fn dns_params_carry_an_optional_port() {
        assert_eq!(
            parse_dns_param("db.prod.svc.clusterset.local:5432"),
            Some(("db.prod.svc.clusterset.local".into(), Some(5432)))
        );
        assert_eq!(
            parse_dns_param("db.prod.svc.clusterset.local."),
            Some(("db.prod.svc.clusterset.local".into(), None))
        );
        assert_eq!(parse_dns_param("db:http"), None);
        assert_eq!(parse_dns_param(""), None);
    }

    #[tokio::test]
    async fn sink_acknowledges_what_it_received_and_streams_are_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve_sink(listener, stop));
        let written = Arc::new(AtomicU64::new(0));
        let stream = TcpStream::connect(addr).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let acked = send_until(stream, deadline, Arc::clone(&written))
            .await
            .unwrap();
        assert!(acked > 0);
        assert_eq!(acked, written.load(Ordering::Relaxed));

        // Past the limit a connection is closed without an answer.
        let mut held = Vec::new();
        for _ in 0..SINK_MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        extra.shutdown().await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("the sink neither closed nor answered the extra stream")
            .unwrap_or(0);
        assert_eq!(n, 0, "an extra stream got an answer");
        drop(held);
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn probes_measure_a_responder() {
        let responder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = responder.local_addr().unwrap();
        let (_targets_tx, targets) = watch::channel(Vec::new());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(health::run(responder, targets, Default::default(), stop));
        let target = [("site-b".to_string(), addr)];
        let rtts = probe(
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
