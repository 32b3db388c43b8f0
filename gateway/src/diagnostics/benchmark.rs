//! `GET /benchmark?cluster=<id>&seconds=N&streams=K`: NDJSON lines — idle RTT, progress
//! about twice a second, then the throughput the remote sink acknowledged and the RTT
//! under load. Bounds: [`MAX_SECONDS`], [`MAX_STREAMS`]; beyond them a 400 says so. One
//! benchmark at a time per gateway (a second one gets a 409).
//!
//! Every gateway also serves a benchmark sink on `healthCheckIP:`[`ports::BENCHMARK`]
//! (while its tunnel is open): it counts what a stream sends and answers the count when
//! the sender half-closes. It takes at most [`SINK_MAX_CONNECTIONS`] streams at once,
//! each for at most [`SINK_MAX_CONNECTION_TIME`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use causeway_wire::benchmark::{BenchLine, BenchParams, BenchResult};
pub use causeway_wire::benchmark::{MAX_SECONDS, MAX_STREAMS};
use causeway_wire::ports;
use causeway_wire::verify::RttFigures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::verify::CONNECT_TIMEOUT;
use super::Diagnostics;
use crate::rtt_probe::{probe_burst, probe_until};

/// Streams the sink serves at once; more are closed at once.
pub const SINK_MAX_CONNECTIONS: usize = 16;
/// How long the sink serves one stream: the longest benchmark plus slack.
pub const SINK_MAX_CONNECTION_TIME: Duration = Duration::from_secs(MAX_SECONDS as u64 + 5);
/// Idle-latency probes of a benchmark.
const BENCH_PROBES: u32 = 50;
const BENCH_PROBE_SPACING: Duration = Duration::from_millis(10);
/// Probe spacing while the streams run.
const LOADED_PROBE_SPACING: Duration = Duration::from_millis(100);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// How long a stream waits for the sink's count after it stopped sending.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_CHUNK: usize = 128 * 1024;

/// Marks a benchmark as running until dropped: one at a time per gateway, as each run
/// may load the tunnel for a minute.
struct BenchSlot(Arc<AtomicBool>);

impl BenchSlot {
    fn take(running: &Arc<AtomicBool>) -> Option<BenchSlot> {
        running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BenchSlot(Arc::clone(running)))
    }
}

impl Drop for BenchSlot {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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

fn line(l: &BenchLine) -> Bytes {
    // Our own plain types always serialize.
    let mut text = serde_json::to_string(l)
        .unwrap_or_else(|e| format!("{{\"kind\":\"error\",\"message\":\"{e}\"}}"));
    text.push('\n');
    Bytes::from(text)
}

/// `GET /benchmark`.
pub async fn benchmark_handler(
    State(diagnostics): State<Arc<Diagnostics>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match BenchParams::from_query(&query.unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let local_ip = match diagnostics.tunnel_address(&diagnostics.source.snapshot()) {
        Some(t) => t,
        None => {
            return (
                StatusCode::CONFLICT,
                "this gateway has no tunnel open (it is not its cluster's active gateway); ask the active one\n",
            )
                .into_response()
        }
    };
    let targets = diagnostics.probes.targets();
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
    let Some(slot) = BenchSlot::take(&diagnostics.bench_running) else {
        return (
            StatusCode::CONFLICT,
            "another benchmark is running on this gateway; wait for it to finish (at most a minute)\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _slot = slot;
        let result = run_benchmark(&params, local_ip, probe_target, &tx).await;
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
    let idle = probe_burst(local_ip, &target, BENCH_PROBES, BENCH_PROBE_SPACING)
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
    let loaded = tokio::spawn(probe_until(
        local_ip,
        probe_target,
        LOADED_PROBE_SPACING,
        SINK_MAX_CONNECTION_TIME,
        probes_stopped,
    ));
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
        bits_per_second: causeway_wire::benchmark::bits_per_second(acknowledged, seconds),
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
}
