//! The controller's HTTP endpoint for kubelet probes and scrapers: `/healthz` (the
//! process answers and none of its long-running tasks has stopped), `/readyz` (it has
//! reached its API server and, while leading, completed a sync pass) and `/metrics`.
//!
//! What the answers mean is decided in [`HealthState`] (pure, unit-tested); [`serve`]
//! only carries them over HTTP. Readiness does not follow API outages after that: the
//! DNS server every replica runs answers from what it last read, so a replica that was
//! ready once stays ready (the data plane, and DNS, outlive the control plane).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use thiserror::Error;

/// How long open connections may finish after shutdown before they are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the health endpoint could not start.
#[derive(Debug, Error)]
pub enum HealthError {
    /// The address could not be bound.
    #[error("cannot listen for /healthz on {addr}: {source}; is another process using it? pick another with --health-addr (CAUSEWAY_HEALTH_ADDR)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// What the controller has done so far, as the probes see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    /// The local API server answered (the leader election started).
    pub api_reached: bool,
    /// This replica holds the controller Lease now.
    pub leading: bool,
    /// A sync pass succeeded since the start (on any of this replica's leaderships).
    pub synced: bool,
    /// Sync passes run, and how many of them failed.
    pub passes: u64,
    /// Sync passes that failed.
    pub failed_passes: u64,
    /// The last failed pass's error, until a pass succeeds.
    pub last_error: Option<String>,
    /// Long-running tasks by name, and why each stopped if it did.
    pub tasks: BTreeMap<&'static str, Option<String>>,
}

impl HealthState {
    /// `Ok` while every task runs; else the stopped ones, with why.
    pub fn live(&self) -> Result<(), String> {
        let stopped: Vec<String> = self
            .tasks
            .iter()
            .filter_map(|(name, why)| why.as_ref().map(|why| format!("{name} stopped: {why}")))
            .collect();
        if stopped.is_empty() {
            Ok(())
        } else {
            Err(stopped.join("; "))
        }
    }

    /// `Ok` once the API server answered and, while leading, a sync pass succeeded.
    pub fn ready(&self) -> Result<(), String> {
        self.live()?;
        if !self.api_reached {
            return Err("the local API server has not answered yet".into());
        }
        if self.leading && !self.synced {
            return Err(match &self.last_error {
                Some(e) => {
                    format!("leading, but no sync pass has succeeded yet; the last failed: {e}")
                }
                None => "leading, and the first sync pass has not completed yet".into(),
            });
        }
        Ok(())
    }

    /// The Prometheus text exposition of these figures.
    pub fn metrics(&self) -> String {
        let flag = |b: bool| u8::from(b);
        format!(
            "# HELP causeway_controller_leading Whether this replica holds the controller Lease.\n\
             # TYPE causeway_controller_leading gauge\n\
             causeway_controller_leading {}\n\
             # HELP causeway_controller_ready Whether /readyz answers 200.\n\
             # TYPE causeway_controller_ready gauge\n\
             causeway_controller_ready {}\n\
             # HELP causeway_controller_sync_passes_total Broker sync passes run.\n\
             # TYPE causeway_controller_sync_passes_total counter\n\
             causeway_controller_sync_passes_total {}\n\
             # HELP causeway_controller_sync_failures_total Broker sync passes that failed.\n\
             # TYPE causeway_controller_sync_failures_total counter\n\
             causeway_controller_sync_failures_total {}\n",
            flag(self.leading),
            flag(self.ready().is_ok()),
            self.passes,
            self.failed_passes
        )
    }
}

/// The state the controller's tasks update and the endpoint reads.
#[derive(Debug, Default)]
pub struct Health(Mutex<HealthState>);

impl Health {
    fn lock(&self) -> MutexGuard<'_, HealthState> {
        // Every update is a single assignment, so a panic elsewhere cannot leave it half-done.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the state now.
    pub fn state(&self) -> HealthState {
        self.lock().clone()
    }

    /// The local API server answered.
    pub fn api_reached(&self) {
        self.lock().api_reached = true;
    }

    /// This replica started or stopped leading.
    pub fn set_leading(&self, leading: bool) {
        self.lock().leading = leading;
    }

    /// A sync pass ended, with its error if it failed.
    pub fn pass(&self, error: Option<String>) {
        let mut s = self.lock();
        s.passes += 1;
        match error {
            Some(e) => {
                s.failed_passes += 1;
                s.last_error = Some(e);
            }
            None => {
                s.synced = true;
                s.last_error = None;
            }
        }
    }

    /// A long-running task started.
    pub fn task_started(&self, name: &'static str) {
        self.lock().tasks.insert(name, None);
    }

    /// A long-running task stopped before shutdown, for `why`.
    pub fn task_stopped(&self, name: &'static str, why: String) {
        self.lock().tasks.insert(name, Some(why));
    }
}

/// Binds `addr` now, so that a taken port stops the start with the fix in the message.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HealthError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(health);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(wait(stopped.clone()));
    // A probe connection left open must not hold the shutdown up.
    let deadline = async move {
        wait(stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => Ok(()),
    }
}

fn answer(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn healthz(State(health): State<Arc<Health>>) -> Response {
    answer(health.state().live())
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    answer(health.state().ready())
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        health.state().metrics(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try /healthz, /readyz or /metrics\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn readiness_needs_the_api_and_while_leading_a_good_pass() {
        let health = Health::default();
        assert!(health.state().live().is_ok());
        assert!(health.state().ready().unwrap_err().contains("API server"));
        health.api_reached();
        assert_eq!(health.state().ready(), Ok(()), "a standby is ready");
        health.set_leading(true);
        assert!(health
            .state()
            .ready()
            .unwrap_err()
            .contains("first sync pass"));
        health.pass(Some("cannot list ClusterEndpoints at the broker".into()));
        assert!(health
            .state()
            .ready()
            .unwrap_err()
            .contains("the last failed: cannot list ClusterEndpoints at the broker"));
        health.pass(None);
        assert_eq!(health.state().ready(), Ok(()));
        // An outage afterwards does not take DNS out of the Service.
        health.pass(Some("broker unreachable".into()));
        assert_eq!(health.state().ready(), Ok(()));
        let metrics = health.state().metrics();
        assert!(metrics.contains("causeway_controller_sync_passes_total 3\n"));
        assert!(metrics.contains("causeway_controller_sync_failures_total 2\n"));
        assert!(metrics.contains("causeway_controller_leading 1\n"));

        health.task_started("dns");
        assert_eq!(health.state().live(), Ok(()));
        health.task_stopped("dns", "the socket closed".into());
        assert_eq!(
            health.state().live(),
            Err("dns stopped: the socket closed".into())
        );
        assert!(health.state().ready().is_err());
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("response");
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn answers_probes_over_a_real_socket() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let health = Arc::new(Health::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&health), async move {
            let _ = rx.await;
        }));

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("API server"), "{body}");
        health.api_reached();
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".into()));
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("causeway_controller_ready 1\n"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);

        let taken = bind(addr).await.expect_err("the port is taken");
        assert!(taken.to_string().contains("--health-addr"), "{taken}");

        tx.send(()).expect("server running");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns after shutdown")
            .expect("no panic")
            .expect("no error");
    }
}
