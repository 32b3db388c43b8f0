//! DNS for `clusterset.local` (`docs/services.md`, section "DNS"), served by every
//! controller replica, leader or not.
//!
//! [`zone`] builds the zone from plain values (pure); [`server`] answers it on UDP
//! and TCP; this module feeds the server: watchers on ServiceImports, Causeway's
//! EndpointSlices and the Gateways are triggers only, and after each burst of
//! changes (at most [`DEBOUNCE`] later) everything is listed afresh and the zone
//! rebuilt and swapped in whole. When the API server cannot be read, the last zone
//! keeps being served and the build is retried every [`RETRY`].
//!
//! # Wiring (in `controller/src/main.rs`)
//!
//! The flag, off by default:
//!
//! ```ignore
//! /// Serve DNS for clusterset.local on this address, UDP and TCP (e.g. 0.0.0.0:5353; the
//! /// causeway-dns Service maps port 53 to it). Off when absent.
//! #[arg(long, env = "CAUSEWAY_DNS_LISTEN", value_name = "ADDR:PORT")]
//! dns_listen: Option<std::net::SocketAddr>,
//! ```
//!
//! In `main`: take a clone of the local client before it is moved into `campaign`
//! (`let local_for_dns = local.clone();`), then, after `let shutting_down = ...` and
//! before the leader-election loop (every replica serves, so DNS must not wait for
//! the lease):
//!
//! ```ignore
//! use causeway_controller::dns::{Dns, DnsConfig, DEFAULT_TTL};
//! let dns = match args.dns_listen {
//!     Some(listen) => {
//!         // Bind now, so a taken port stops the start with the fix in the message.
//!         let dns = Dns::bind(DnsConfig {
//!             listen,
//!             cluster_id: args.cluster.clone(),
//!             namespace: args.namespace.clone(),
//!             ttl: DEFAULT_TTL,
//!         })
//!         .await?;
//!         tracing::info!(addr = %dns.local_addr(), "serving clusterset.local");
//!         Some(tokio::spawn(dns.run(local_for_dns, shutting_down(stopped.clone()))))
//!     }
//!     None => None,
//! };
//! // ... the election loop ...
//! if let Some(dns) = dns {
//!     dns.await.context("the DNS task panicked")??;
//! }
//! ```
//!
//! ([`serve`] is `Dns::bind` then [`Dns::run`] in one call.) `run` returns only at
//! shutdown, or with [`DnsError::Serve`] when a listener dies; main may then exit so
//! that Kubernetes restarts the pod.
//!
//! The controller's ServiceAccount needs `list` and `watch` on
//! `serviceimports.multicluster.x-k8s.io` and `endpointslices.discovery.k8s.io` in
//! every namespace (a ClusterRole), and on `gateways.causeway.dev` in its namespace.

pub mod server;
pub mod zone;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use causeway_crds::{Gateway, ServiceImport};
use futures::stream;
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use causeway_k8s::passes::{every_event, Changes, Triggers, Watched};
pub use server::{DnsServer, SharedZone};
use zone::{build_zone, healthy_clusters, Zone, ZoneInput, MANAGED_BY, MANAGED_BY_LABEL};

/// TTL of every answer (and of negative answers), as `docs/services.md` sets it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Longest wait from a change to the rebuild it starts.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst of changes is over after this much quiet (bounded by [`DEBOUNCE`]).
const QUIET: Duration = Duration::from_millis(20);
/// Time between tries while the API server cannot be listed.
pub const RETRY: Duration = Duration::from_secs(1);

/// Everything [`serve`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Address to answer at, UDP and TCP (port 0: any free port, see [`Dns::local_addr`]).
    pub listen: SocketAddr,
    /// This cluster's ID in the clusterset.
    pub cluster_id: String,
    /// Namespace of this cluster's Gateway objects (the controller's).
    pub namespace: String,
    /// TTL of every record ([`DEFAULT_TTL`]).
    pub ttl: Duration,
}

/// Why DNS stopped serving.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The address cannot be bound.
    #[error("cannot listen for DNS on {protocol} {addr}: {source}; choose a free address for --dns-listen (a port below 1024 needs CAP_NET_BIND_SERVICE: prefer 5353 behind the causeway-dns Service's port 53)")]
    Bind {
        /// `UDP` or `TCP`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A listener stopped while serving.
    #[error("the DNS server at {addr} stopped: {reason}; restart the controller (clusterset.local does not resolve until it is back)")]
    Serve {
        /// The address served.
        addr: SocketAddr,
        /// What the server reported.
        reason: String,
    },
}

/// Why one zone build could not read the API server; retried, never fatal.
#[derive(Debug, Error)]
#[error("cannot list {what}: {source}; the controller needs {needs}")]
struct ListError {
    what: &'static str,
    needs: &'static str,
    source: kube::Error,
}

const IMPORTS: Watched = Watched {
    what: "ServiceImports in every namespace",
    needs:
        "list and watch on serviceimports.multicluster.x-k8s.io in every namespace (a ClusterRole)",
};
const SLICES: Watched = Watched {
    what: "Causeway's EndpointSlices in every namespace",
    needs: "list and watch on endpointslices.discovery.k8s.io in every namespace (a ClusterRole)",
};
const GATEWAYS: Watched = Watched {
    what: "Gateways",
    needs: "list and watch on gateways.causeway.dev in the controller's namespace",
};

/// Binds `config.listen` and serves `clusterset.local` from the objects `client`
/// reads, until `shutdown` resolves. See the module documentation for the wiring.
pub async fn serve(
    client: Client,
    config: DnsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    Dns::bind(config).await?.run(client, shutdown).await
}

/// A bound DNS server and the zone it answers from, not yet fed.
#[derive(Debug)]
pub struct Dns {
    config: DnsConfig,
    server: DnsServer,
    zone: SharedZone,
}

impl Dns {
    /// Binds UDP and TCP at `config.listen`; queries are answered SERVFAIL until [`Dns::run`] builds the first zone.
    pub async fn bind(config: DnsConfig) -> Result<Dns, DnsError> {
        let zone: SharedZone = Arc::new(ArcSwapOption::empty());
        let server = DnsServer::bind(config.listen, zone.clone()).await?;
        Ok(Dns {
            config,
            server,
            zone,
        })
    }

    /// The address answered at, UDP and TCP.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Keeps the zone current from `client` and serves it until `shutdown` resolves
    /// (`Ok`) or a listener dies ([`DnsError::Serve`]).
    pub async fn run(
        self,
        client: Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DnsError> {
        let Dns {
            config,
            mut server,
            zone,
        } = self;
        let span = info_span!("dns", cluster = %config.cluster_id, addr = %server.local_addr());
        async move {
            info!(namespace = %config.namespace, "DNS for clusterset.local started");
            let outcome = tokio::select! {
                () = shutdown => Ok(()),
                error = server.failed() => Err(error),
                () = feed(&client, &config, &zone) => Ok(()),
            };
            server.shutdown().await;
            info!("DNS for clusterset.local stopped");
            outcome
        }
        .instrument(span)
        .await
    }
}

/// What a build reads from a Gateway: a gateway writes its status (bytes, RTTs)
/// about once a second, and only role and connection states matter here.
fn gateway_health(gateway: &Gateway) -> Value {
    let status = gateway.status.as_ref();
    json!([
        gateway.metadata.deletion_timestamp.is_some(),
        status.and_then(|s| s.role),
        status.map(|s| {
            s.connections
                .iter()
                .map(|c| (c.cluster_id.as_str(), c.state))
                .collect::<Vec<_>>()
        }),
    ])
}

fn slice_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

fn triggers(client: &Client, namespace: &str) -> Vec<Triggers> {
    let mut gateway_changes = Changes::new(gateway_health);
    vec![
        every_event(
            Api::<ServiceImport>::all(client.clone()),
            watcher::Config::default(),
            IMPORTS,
        ),
        every_event(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&slice_selector()),
            SLICES,
        ),
        watcher(
            Api::<Gateway>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .filter_map(move |event| {
            let trigger = match event {
                Ok(event) => gateway_changes.relevant(&event).then_some((GATEWAYS, None)),
                Err(error) => Some((GATEWAYS, Some(error))),
            };
            std::future::ready(trigger)
        })
        .boxed(),
    ]
}

/// Whether a trigger is a change (and logs it when it is a watch error).
fn is_change(event: &(Watched, Option<watcher::Error>)) -> bool {
    match event {
        (_, None) => true,
        (watched, Some(error)) => {
            warn!(
                watched = watched.what,
                needs = watched.needs,
                %error,
                "watching failed; retrying with backoff, serving the last zone meanwhile"
            );
            false
        }
    }
}

/// Builds the zone now and after every burst of changes; never returns.
async fn feed(client: &Client, config: &DnsConfig, zone: &SharedZone) {
    let mut events = stream::select_all(triggers(client, &config.namespace));
    // The SOA serial only has to grow, also across restarts: start from the clock.
    let mut serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs() % u64::from(u32::MAX)).unwrap_or(1))
        .unwrap_or(1);
    let mut reported: Vec<String> = Vec::new();
    loop {
        serial = serial.wrapping_add(1);
        let retry_at = match build_once(client, config, serial).await {
            Ok((built, problems)) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                // A problem is logged when it appears, not on every rebuild after.
                for problem in problems.iter().filter(|p| !reported.contains(p)) {
                    warn!(problem = %problem, "not served in clusterset.local");
                }
                reported = problems;
                let first = zone.load().is_none();
                let (names, records) = (built.name_count(), built.record_count());
                zone.store(Some(Arc::new(built)));
                if first {
                    info!(names, records, serial, "first zone built");
                } else {
                    debug!(names, records, serial, "zone rebuilt");
                }
                None
            }
            Err(error) => {
                warn!(%error, "cannot rebuild the zone; serving the last one, retrying");
                Some(Instant::now() + RETRY)
            }
        };
        // Wait for a change, or for the retry after a failed build.
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.next() => match event {
                    Some(event) if is_change(&event) => break,
                    Some(_) => {}
                    None => {
                        // The watchers never end on their own; should they, serve what we have.
                        warn!("every watcher ended; the zone is no longer updated");
                        std::future::pending::<()>().await;
                    }
                },
                () = retry => break,
            }
        }
        // Let a burst settle into one build, but start it within DEBOUNCE of the first change.
        let deadline = Instant::now() + DEBOUNCE;
        loop {
            let quiet_until = (Instant::now() + QUIET).min(deadline);
            match tokio::time::timeout_at(quiet_until, events.next()).await {
                Ok(Some(event)) => {
                    is_change(&event);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Lists everything the zone is built from and builds it.
async fn build_once(
    client: &Client,
    config: &DnsConfig,
    serial: u32,
) -> Result<(Zone, Vec<zone::ZoneProblem>), ListError> {
    let error = |watched: Watched| {
        move |source| ListError {
            what: watched.what,
            needs: watched.needs,
            source,
        }
    };
    let imports = Api::<ServiceImport>::all(client.clone());
    let slices = Api::<EndpointSlice>::all(client.clone());
    let gateways = Api::<Gateway>::namespaced(client.clone(), &config.namespace);
    let slice_params = ListParams::default().labels(&slice_selector());
    let (imports, slices, gateways) = tokio::try_join!(
        async {
            imports
                .list(&ListParams::default())
                .await
                .map_err(error(IMPORTS))
        },
        async { slices.list(&slice_params).await.map_err(error(SLICES)) },
        async {
            gateways
                .list(&ListParams::default())
                .await
                .map_err(error(GATEWAYS))
        },
    )?;
    let healthy = healthy_clusters(&gateways.items);
    Ok(build_zone(&ZoneInput {
        cluster_id: &config.cluster_id,
        imports: &imports.items,
        slices: &slices.items,
        healthy: &healthy,
        ttl: config.ttl,
        serial,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::{
        ConnectionState, ConnectionStatus, GatewayEndpoint, GatewayRole, GatewaySpec, GatewayStatus,
    };
    use kube::runtime::watcher::Event;

    fn gateway(role: GatewayRole, state: ConnectionState, rx_bytes: u64) -> Gateway {
        let mut gateway = Gateway::new(
            "gw-1",
            GatewaySpec {
                cluster_id: "site-a".to_owned(),
                endpoint: GatewayEndpoint {
                    node_name: "gw-1".to_owned(),
                    public_endpoint: "198.18.0.1:51820".to_owned(),
                    public_key: String::new(),
                    private_ip: None,
                    private_ips: vec![],
                    health_check_ip: None,
                },
            },
        );
        gateway.status = Some(GatewayStatus {
            role: Some(role),
            connections: vec![ConnectionStatus {
                cluster_id: "site-b".to_owned(),
                endpoint: None,
                state,
                reason: None,
                last_handshake: None,
                rtt_min: None,
                rtt_avg: Some(format!("{rx_bytes}µs")),
                rtt_max: None,
                rx_bytes,
                tx_bytes: rx_bytes,
                first_attempt: None,
                handshake_attempts: None,
            }],
            conditions: vec![],
            ..GatewayStatus::default()
        });
        gateway
    }

    #[test]
    fn only_role_and_connection_states_of_gateways_trigger_a_rebuild() {
        use ConnectionState::{Connected, Error};
        use GatewayRole::{Active, Passive};
        let mut changes = Changes::new(gateway_health);
        let steps: Vec<(Event<Gateway>, bool)> = vec![
            (Event::Apply(gateway(Active, Connected, 1)), true),
            // Counters and RTTs move every second: no rebuild.
            (Event::Apply(gateway(Active, Connected, 2)), false),
            (Event::Apply(gateway(Active, Error, 3)), true),
            (Event::Apply(gateway(Passive, Error, 3)), true),
            (Event::Delete(gateway(Passive, Error, 3)), true),
        ];
        for (i, (event, want)) in steps.iter().enumerate() {
            assert_eq!(changes.relevant(event), *want, "step {i}");
        }
    }
}
