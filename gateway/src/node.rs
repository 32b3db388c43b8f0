//! The control shell of a standalone gateway or route agent: read the endpoints file,
//! decide (in `config`), apply the difference (datapath peers, kernel routes), repeat.

use crate::config::{desired_from_text, ConfigError, Desired, Identity};
use crate::datapath::Datapath;
use crate::health::{Health, Targets, PROBE_PORT};
use crate::metrics::{MetricsSource, Snapshot};
use crate::netlink::{Netlink, NetlinkError};
use crate::route::{NextHop, MAIN_TABLE};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What this node does with the clusterset.
pub enum Role {
    /// Terminates the tunnels: peers in the datapath, remote CIDRs routed into the TUN interface.
    Gateway {
        /// The running datapath.
        datapath: Arc<Datapath>,
        /// The TUN interface's index.
        ifindex: u32,
        /// The tunnel MTU put on every route.
        mtu: u32,
    },
    /// Any other node: remote CIDRs routed via the gateway node's cluster address.
    RouteAgent {
        /// MTU put on every route, so pods' path MTU discovery sees the tunnel's.
        mtu: Option<u32>,
    },
}

/// Figures shared with the metrics server.
#[derive(Default)]
pub struct NodeStatus {
    datapath: Option<Arc<Datapath>>,
    health: Arc<Health>,
    netlink: Option<Arc<Netlink>>,
    routes: AtomicU64,
    reloads: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MetricsSource for NodeStatus {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            peers: self
                .datapath
                .as_ref()
                .map(|d| d.peer_snapshots())
                .unwrap_or_default()
                .into_iter()
                .map(|p| crate::metrics::PeerSnapshot {
                    rtt: self.health.stats(&p.cluster_id),
                    ..p
                })
                .collect(),
            drops: self
                .datapath
                .as_ref()
                .map(|d| d.drops())
                .unwrap_or_else(|| {
                    crate::metrics::DropReason::ALL
                        .iter()
                        .map(|r| (*r, 0))
                        .collect()
                }),
            routes: self.routes.load(Ordering::Relaxed),
            netlink_writes: self.netlink.as_ref().map_or(0, |n| n.writes()),
            config_reloads: self.reloads.load(Ordering::Relaxed),
            config_errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn health(&self) -> Result<(), String> {
        match &self.datapath {
            Some(d) => d.health(),
            None => Ok(()),
        }
    }
}

impl NodeStatus {
    /// The latest configuration error, if the last reload failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid; the last good state stays in force.
    #[error("{0}; keeping the last good configuration")]
    Config(#[from] ConfigError),
    /// The file was applied but the kernel refused some route changes; the resync retries them.
    #[error(
        "endpoints file applied, but the kernel refused a change ({0}); retrying every resync"
    )]
    Netlink(#[from] NetlinkError),
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The file is the same as last time; nothing was read into the kernel.
    Unchanged,
    /// The file changed and was applied.
    Applied,
}

/// A standalone gateway or route agent.
pub struct Node {
    me: Identity,
    path: PathBuf,
    role: Role,
    netlink: Arc<Netlink>,
    status: Arc<NodeStatus>,
    last_text: Option<String>,
    applied: Option<Desired>,
    targets: tokio::sync::watch::Sender<Targets>,
}

impl Node {
    /// A node that has applied nothing yet.
    pub fn new(me: Identity, path: PathBuf, role: Role, netlink: Arc<Netlink>) -> Node {
        let datapath = match &role {
            Role::Gateway { datapath, .. } => Some(Arc::clone(datapath)),
            Role::RouteAgent { .. } => None,
        };
        let status = Arc::new(NodeStatus {
            datapath,
            netlink: Some(Arc::clone(&netlink)),
            ..NodeStatus::default()
        });
        Node {
            me,
            path,
            role,
            netlink,
            status,
            last_text: None,
            applied: None,
            targets: tokio::sync::watch::channel(Vec::new()).0,
        }
    }

    /// The peers the health prober should probe, kept current by every reload.
    pub fn health_targets(&self) -> tokio::sync::watch::Receiver<Targets> {
        self.targets.subscribe()
    }

    /// Where health probe results go.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.status.health)
    }

    /// The figures the metrics server shows.
    pub fn status(&self) -> Arc<NodeStatus> {
        Arc::clone(&self.status)
    }

    /// Re-reads the endpoints file and applies it if it changed.
    ///
    /// An invalid file changes nothing: tunnels and routes stay on the last good state.
    pub async fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let shown = self.path.display().to_string();
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| ConfigError::Read {
                what: "endpoints file",
                path: shown.clone(),
                source,
            });
        let text = match text {
            Ok(text) if self.last_text.as_deref() == Some(text.as_str()) => {
                return Ok(Reloaded::Unchanged)
            }
            Ok(text) => text,
            Err(e) => return Err(self.refuse(e)),
        };
        let desired = match desired_from_text(&text, &shown, &self.me) {
            Ok(desired) => desired,
            Err(e) => {
                // Remember the bad text so it is reported once, not on every poll.
                self.last_text = Some(text);
                return Err(self.refuse(e));
            }
        };
        // The datapath already holds the new peers, so the new state is committed even if
        // a route write failed: reverting to the old file would flap routes, and the
        // periodic resync retries the failed writes.
        let result = self.apply(&desired).await;
        self.last_text = Some(text);
        self.applied = Some(desired);
        self.status.reloads.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                *self.status.last_error.lock() = None;
                Ok(Reloaded::Applied)
            }
            Err(e) => {
                self.status.errors.fetch_add(1, Ordering::Relaxed);
                *self.status.last_error.lock() = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn refuse(&self, error: ConfigError) -> ReloadError {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        *self.status.last_error.lock() = Some(error.to_string());
        ReloadError::Config(error)
    }

    /// Re-checks the kernel's routes against the last applied state (repairs outside deletions).
    pub async fn resync(&self) -> Result<usize, ReloadError> {
        match &self.applied {
            Some(desired) => Ok(self.apply_routes(desired).await?),
            None => Ok(0),
        }
    }

    async fn apply(&self, desired: &Desired) -> Result<(), ReloadError> {
        if let Role::Gateway { datapath, .. } = &self.role {
            let local: Vec<ipnet::IpNet> = desired.local.cidrs().copied().collect();
            datapath.set_local_cidrs(&local);
            let plan = datapath.set_peers(&desired.peers);
            for p in &plan.add {
                tracing::info!(peer = %p.cluster_id, endpoint = ?p.endpoint, "peer added");
            }
            for p in &plan.replace {
                tracing::info!(peer = %p.cluster_id, "peer key changed; new session");
            }
            for p in &plan.update {
                tracing::info!(peer = %p.cluster_id, endpoint = ?p.endpoint, "peer updated");
            }
            for id in &plan.remove {
                tracing::info!(peer = %id, "peer removed");
            }
            let targets: Targets = desired
                .health_targets
                .iter()
                .map(|(cluster, ip)| (cluster.clone(), std::net::SocketAddr::new(*ip, PROBE_PORT)))
                .collect();
            let clusters: Vec<String> =
                desired.peers.iter().map(|p| p.cluster_id.clone()).collect();
            self.status.health.retain(&clusters);
            self.targets.send_if_modified(|current| {
                let changed = *current != targets;
                *current = targets;
                changed
            });
        }
        self.apply_routes(desired).await?;
        Ok(())
    }

    async fn apply_routes(&self, desired: &Desired) -> Result<usize, ReloadError> {
        let routes = match &self.role {
            Role::Gateway { ifindex, mtu, .. } => {
                let dev = NextHop::Dev { ifindex: *ifindex };
                desired.routes(|_| Some(dev), Some(*mtu), MAIN_TABLE)
            }
            Role::RouteAgent { mtu } => {
                let mut hops = Vec::new();
                for gateway in desired.gateway_next_hops(&self.path.display().to_string())? {
                    let ifindex = self.netlink.ifindex_on_subnet(gateway).await?;
                    hops.push(NextHop::Via { gateway, ifindex });
                }
                let same_family = |dst: &ipnet::IpNet| {
                    hops.iter().copied().find(|hop| match hop {
                        NextHop::Via { gateway, .. } => gateway.is_ipv4() == dst.addr().is_ipv4(),
                        NextHop::Dev { .. } => false,
                    })
                };
                let routes = desired.routes(same_family, *mtu, MAIN_TABLE);
                let unroutable = desired.remote_cidrs().count() - routes.len();
                if unroutable > 0 {
                    tracing::warn!(unroutable, "remote CIDRs of a family the gateway node has no cluster address for; list it in privateIPs");
                }
                routes
            }
        };
        let report = self.netlink.reconcile(&routes, MAIN_TABLE).await?;
        if report.changed() > 0 {
            tracing::info!(%report, "routes reconciled");
        }
        self.status
            .routes
            .store(routes.len() as u64, Ordering::Relaxed);
        Ok(report.changed())
    }

    /// Withdraws every route this node added (the TUN interface goes when the datapath drops).
    pub async fn shutdown(&self) -> Result<(), ReloadError> {
        let report = self.netlink.reconcile(&[], MAIN_TABLE).await?;
        tracing::info!(%report, "routes withdrawn");
        self.status.routes.store(0, Ordering::Relaxed);
        Ok(())
    }
}
