//! The gateway's HTTP server: `/metrics` and `/healthz` for Prometheus and the kubelet,
//! and the diagnostics agent's routes (see [`crate::diagnostics`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::FutureExt;

use crate::metrics::{self, MetricsSource, METRICS_CONTENT_TYPE};

/// How long `serve` waits for open connections after shutdown before giving up on them.
///
/// Idle keep-alive connections close at once; this only bounds a client that
/// stalls mid-request, so it cannot hold up the gateway's exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves GET /metrics and /healthz from `source`, and `diagnostics` (the agent's routes,
/// guarded), until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn MetricsSource>,
    diagnostics: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_grace(listener, source, diagnostics, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`] with the shutdown grace period as a parameter, so tests need not wait it out.
async fn serve_with_grace(
    listener: tokio::net::TcpListener,
    source: Arc<dyn MetricsSource>,
    diagnostics: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(source)
        .merge(diagnostics)
        .fallback(not_found);
    // Shared so the same signal both starts axum's graceful shutdown and
    // starts the clock on how long we wait for it.
    let shutdown = shutdown.shared();
    // The diagnostics guard holds each source to its own budget of token reviews.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone());
    let deadline = async move {
        shutdown.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "metrics server: connections still open after shutdown grace period; abandoning them");
            Ok(())
        }
    }
}

async fn metrics_handler(State(source): State<Arc<dyn MetricsSource>>) -> Response {
    let body = metrics::encode_owned(source.snapshot(), SystemTime::now());
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

async fn healthz_handler(State(source): State<Arc<dyn MetricsSource>>) -> Response {
    match source.health() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try /metrics or /healthz\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{parse_samples, sample, two_peer_snapshot};
    use crate::metrics::Snapshot;
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct FakeSource {
        health: Result<(), String>,
    }

    impl MetricsSource for FakeSource {
        fn snapshot(&self) -> Snapshot {
            two_peer_snapshot()
        }
        fn health(&self) -> Result<(), String> {
            self.health.clone()
        }
    }

    struct Reply {
        status: u16,
        headers: HashMap<String, String>,
        body: String,
    }

    /// One HTTP/1.1 request on a fresh connection that asks the server to close it.
    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        parse_reply(&String::from_utf8(raw).unwrap())
    }

    fn parse_reply(raw: &str) -> Reply {
        let (head, body) = raw.split_once("\r\n\r\n").expect("no end of headers");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"));
        let status = parts.next().unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    async fn start(
        health: Result<(), String>,
        grace: Duration,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let source: Arc<dyn MetricsSource> = Arc::new(FakeSource { health });
        let task = tokio::spawn(serve_with_grace(
            listener,
            source,
            Router::new(),
            async move {
                let _ = rx.await;
            },
            grace,
        ));
        (addr, tx, task)
    }

    async fn stop(
        tx: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn serves_metrics_health_and_404() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let source: Arc<dyn MetricsSource> = Arc::new(FakeSource { health: Ok(()) });
        // The public entry point, as main uses it.
        let task = tokio::spawn(serve(listener, source, Router::new(), async move {
            let _ = rx.await;
        }));

        let metrics = get(addr, "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.headers["content-type"], METRICS_CONTENT_TYPE);
        let s = parse_samples(&metrics.body);
        assert_eq!(
            sample(
                &s,
                "causeway_peer_rx_bytes_total",
                &[("remote_cluster", "site-b")]
            ),
            Some(1_000_001.0)
        );
        assert!(metrics.body.ends_with("# EOF\n"));

        let health = get(addr, "/healthz").await;
        assert_eq!(health.status, 200);
        assert_eq!(health.body, "ok\n");

        let missing = get(addr, "/nope").await;
        assert_eq!(missing.status, 404);

        stop(tx, task).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open after serve returned"
        );
    }

    #[tokio::test]
    async fn healthz_reports_failure_reason() {
        let reason = "netlink: RTM_NEWROUTE 10.1.0.0/16 failed: permission denied";
        let (addr, tx, task) = start(Err(reason.to_string()), SHUTDOWN_GRACE).await;

        let health = get(addr, "/healthz").await;
        assert_eq!(health.status, 503);
        assert_eq!(health.body, format!("{reason}\n"));

        stop(tx, task).await;
    }

    #[tokio::test]
    async fn idle_keep_alive_connection_does_not_block_shutdown() {
        // A long grace: returning promptly must come from closing idle connections.
        let (addr, tx, task) = start(Ok(()), Duration::from_secs(60)).await;

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut raw = Vec::new();
        while !String::from_utf8_lossy(&raw).ends_with("ok\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed a keep-alive connection early");
            raw.extend_from_slice(&buf[..n]);
        }
        assert_eq!(parse_reply(&String::from_utf8(raw).unwrap()).status, 200);

        stop(tx, task).await;
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("idle connection not closed on shutdown")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn stalled_client_cannot_hold_shutdown_past_grace() {
        let (addr, tx, task) = start(Ok(()), Duration::from_millis(200)).await;

        // Half a request: the connection is busy, so graceful shutdown would wait for it.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        stop(tx, task).await;
        drop(stream);
    }
}
