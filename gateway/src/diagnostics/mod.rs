//! The gateway's diagnostics agent, which `kubectl causeway verify` and `benchmark` call
//! through the API server's pod proxy: `GET /verify` ([`verify`]) and `GET /benchmark`
//! ([`benchmark`]), guarded by [`auth`]. They share the HTTP server with `/metrics`.
//!
//! Wire types and bounds live in `causeway_wire::{verify, benchmark}`, which the
//! plugin uses too, so the two cannot drift apart.

pub mod auth;
pub mod benchmark;
pub mod verify;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::metrics::{MetricsSource, Snapshot};
use crate::rtt_probe::Probes;
use auth::Access;

/// What the agent reads: the node's figures, the probes of its open tunnel, and where
/// `/verify` asks its DNS questions.
pub struct Diagnostics {
    source: Arc<dyn MetricsSource>,
    probes: Probes,
    /// `--dns-server`; `None` asks the first nameserver of /etc/resolv.conf.
    dns_server: Option<SocketAddr>,
    /// Set while a benchmark runs.
    bench_running: Arc<AtomicBool>,
}

impl Diagnostics {
    /// The agent of a node whose figures `source` gives and whose tunnel probes with `probes`.
    pub fn new(
        source: Arc<dyn MetricsSource>,
        probes: Probes,
        dns_server: Option<SocketAddr>,
    ) -> Diagnostics {
        Diagnostics {
            source,
            probes,
            dns_server,
            bench_running: Arc::default(),
        }
    }

    /// `/verify` and `/benchmark`, answered to the callers `access` lets through.
    pub fn router(self, access: Access) -> Router {
        Router::new()
            .route("/verify", get(verify::verify_handler))
            .route("/benchmark", get(benchmark::benchmark_handler))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::new(access),
                auth::guard,
            ))
            .with_state(Arc::new(self))
    }

    /// The address probes leave from, while this node carries its cluster's traffic.
    fn tunnel_address(&self, snapshot: &Snapshot) -> Option<IpAddr> {
        self.probes
            .open_address()
            .filter(|_| snapshot.gateway_active != Some(false))
    }
}
