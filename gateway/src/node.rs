//! The control shell of a gateway or route agent: take what this node should hold (decided
//! in `config` from an endpoints file, or in `clusterset` from ClusterEndpoint objects),
//! apply the difference (datapath peers, kernel routes), and switch between the roles.

use crate::config::{desired_from_text, ConfigError, Desired, Identity};
use crate::diagnostics::benchmark::{bind_sink, serve_sink};
use crate::metrics::{MetricsSource, Snapshot};
use crate::rtt_probe::{Announcement, Health, Probes, Targets};
use crate::status::route_status;
use causeway_crds::RouteStatus;
use causeway_datapath::netlink::{Netlink, NetlinkError, RouteOp};
use causeway_datapath::route::{tunnel_mtu, NextHop, MAIN_TABLE};
use causeway_datapath::tun::Tun;
use causeway_datapath::Datapath;
use causeway_wire::keys::format_key;
use causeway_wire::ports;
use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What this node does with the clusterset.
pub enum Role {
    /// Terminates the tunnels: peers in the datapath, remote CIDRs routed into the TUN interface.
    Gateway(Tunnel),
    /// Any other node: remote CIDRs routed via the gateway node's cluster address.
    RouteAgent {
        /// MTU put on every route, so pods' path MTU discovery sees the tunnel's; `None`:
        /// the next hop's interface MTU minus WireGuard's IPv6 overhead, read at each apply.
        mtu: Option<u32>,
        /// A node whose gateway entry is passed over (a passive candidate's own), so the
        /// first *other* gateway is the next hop; `None`: always the first gateway.
        skip_node: Option<String>,
    },
}

impl Role {
    fn datapath(&self) -> Option<Arc<Datapath>> {
        match self {
            Role::Gateway(tunnel) => Some(Arc::clone(&tunnel.datapath)),
            Role::RouteAgent { .. } => None,
        }
    }
}

/// What a gateway needs to open its tunnel. Deliberately not `Debug`: it holds the private key.
pub struct TunnelSetup {
    /// Name of the TUN interface.
    pub interface: String,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Tunnel MTU; `None`: the underlay interface's MTU minus WireGuard's overhead.
    pub mtu: Option<u32>,
    /// This gateway's WireGuard private key.
    pub private_key: [u8; 32],
    /// The gateway's own address inside the tunnel, where it answers health probes.
    pub health_ip: Option<IpAddr>,
}

/// Why a gateway's tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The TUN interface could not be created.
    #[error("cannot create TUN interface {interface}: {source}")]
    Tun {
        /// The interface name.
        interface: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The interface disappeared between creation and configuration.
    #[error(
        "interface {interface} vanished right after creation; is another process deleting it?"
    )]
    Vanished {
        /// The interface name.
        interface: String,
    },
    /// The UDP socket could not be bound.
    #[error("binding UDP {listen}: {source}; is another gateway running, and is {listen} an address of this node?")]
    Bind {
        /// The listen address.
        listen: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The datapath threads could not start.
    #[error("starting the datapath: {0}")]
    Datapath(std::io::Error),
    /// The health probe socket could not be bound.
    #[error("binding the health probe socket {addr}: {source}; is another gateway using this healthCheckIP?")]
    Probe {
        /// The probe address.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// A gateway's open tunnel: the TUN interface, its datapath and the health prober.
pub struct Tunnel {
    datapath: Arc<Datapath>,
    ifindex: u32,
    mtu: u32,
    underlay_mtu: u32,
    interface: String,
    /// Stops the prober and the benchmark sink, and their tasks.
    prober: Option<(watch::Sender<bool>, Vec<JoinHandle<()>>, Announcement)>,
}

impl Tunnel {
    /// Creates the TUN interface, binds the UDP socket, starts the datapath, puts the
    /// health-check address on the interface and starts probing `probes`' targets.
    pub async fn open(
        netlink: &Netlink,
        setup: &TunnelSetup,
        probes: &Probes,
    ) -> Result<Tunnel, TunnelError> {
        let TunnelSetup {
            interface,
            listen,
            mtu,
            private_key,
            health_ip,
        } = setup;
        let underlay = netlink.underlay_mtu_for(listen.ip()).await?;
        let mtu = mtu.unwrap_or_else(|| tunnel_mtu(underlay, listen.is_ipv6()));
        let tun = Tun::open(interface).map_err(|source| TunnelError::Tun {
            interface: interface.clone(),
            source,
        })?;
        let ifindex =
            netlink
                .link_index(interface)
                .await?
                .ok_or_else(|| TunnelError::Vanished {
                    interface: interface.clone(),
                })?;
        netlink.set_link_up_with_mtu(ifindex, mtu).await?;
        // The gateway's own address inside the tunnel: health probes (and tools) reach it
        // there, and traffic it originates carries a source the remote side accepts.
        if let Some(ip) = health_ip {
            netlink
                .add_address(ifindex, ipnet::IpNet::from(*ip))
                .await?;
        }
        let udp = std::net::UdpSocket::bind(listen).map_err(|source| TunnelError::Bind {
            listen: *listen,
            source,
        })?;
        let datapath =
            Arc::new(Datapath::start(tun, udp, *private_key).map_err(TunnelError::Datapath)?);
        datapath.set_host_address(*health_ip);
        let prober = match health_ip {
            Some(ip) => {
                let addr = SocketAddr::new(*ip, ports::PROBE);
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|source| TunnelError::Probe { addr, source })?;
                let (stop, stopped) = watch::channel(false);
                let mut tasks = vec![tokio::spawn(crate::rtt_probe::run(
                    socket,
                    probes.subscribe(),
                    probes.health(),
                    stopped.clone(),
                ))];
                match bind_sink(*ip).await {
                    Ok(listener) => tasks.push(tokio::spawn(serve_sink(listener, stopped))),
                    // Probes and tunnels work without it; only `benchmark` against us fails.
                    Err(e) => {
                        tracing::warn!(%ip, port = ports::BENCHMARK, error = %e, "cannot serve the benchmark sink")
                    }
                }
                // `verify` and `benchmark` probe from this address while the tunnel is open.
                Some((stop, tasks, probes.announce(*ip)))
            }
            None => None,
        };
        let public = causeway_datapath::keys::public_key(private_key);
        tracing::info!(%listen, %interface, mtu, underlay_mtu = underlay, public_key = %format_key(&public), "gateway started");
        Ok(Tunnel {
            datapath,
            ifindex,
            mtu,
            underlay_mtu: underlay,
            interface: interface.clone(),
            prober,
        })
    }

    /// The running datapath.
    pub fn datapath(&self) -> &Arc<Datapath> {
        &self.datapath
    }

    /// The tunnel interface's MTU and that of the underlay interface under it.
    pub fn mtus(&self) -> (u32, u32) {
        (self.mtu, self.underlay_mtu)
    }

    /// Stops the prober and the datapath; the kernel deletes the interface with its descriptor.
    async fn close(self, netlink: &Netlink) {
        let Tunnel {
            datapath,
            interface,
            prober,
            ..
        } = self;
        if let Some((stop, tasks, announcement)) = prober {
            drop(announcement);
            let _ = stop.send(true);
            for task in tasks {
                let _ = task.await;
            }
        }
        // Joins the packet threads (up to one poll interval) and closes the TUN descriptor
        // (the last reference: the node status lets go of its copy before a tunnel is
        // closed), off the async workers.
        if tokio::task::spawn_blocking(move || drop(datapath))
            .await
            .is_err()
        {
            tracing::warn!(%interface, "stopping the datapath panicked");
        }
        // Only if something else kept the descriptor open does the interface outlive it.
        match netlink.link_index(&interface).await {
            Ok(Some(ifindex)) => {
                if let Err(e) = netlink.delete_link(ifindex).await {
                    tracing::warn!(%interface, error = %e, "cannot delete the tunnel interface");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%interface, error = %e, "cannot check that the tunnel interface is gone")
            }
        }
        tracing::info!(%interface, "tunnel closed");
    }
}

/// Figures shared with the metrics server.
#[derive(Default)]
pub struct NodeStatus {
    datapath: Mutex<Option<Arc<Datapath>>>,
    health: Arc<Health>,
    netlink: Option<Arc<Netlink>>,
    /// A gateway candidate in Kubernetes mode: reports `causeway_gateway_active` 0 while passive.
    candidate: AtomicBool,
    routes: AtomicU64,
    /// What the last reconcile that reached the kernel left in place.
    route_status: Mutex<Option<RouteStatus>>,
    reloads: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MetricsSource for NodeStatus {
    fn snapshot(&self) -> Snapshot {
        let datapath = self.datapath.lock().clone();
        Snapshot {
            peers: datapath
                .as_ref()
                .map(|d| d.peer_snapshots())
                .unwrap_or_default()
                .into_iter()
                .map(|p| causeway_datapath::stats::PeerSnapshot {
                    rtt: self.health.stats(&p.cluster_id),
                    ..p
                })
                .collect(),
            drops: datapath.as_ref().map(|d| d.drops()).unwrap_or_else(|| {
                causeway_datapath::stats::DropReason::ALL
                    .iter()
                    .map(|r| (*r, 0))
                    .collect()
            }),
            routes: self.routes.load(Ordering::Relaxed),
            netlink_writes: self.netlink.as_ref().map_or(0, |n| n.writes()),
            config_reloads: self.reloads.load(Ordering::Relaxed),
            config_errors: self.errors.load(Ordering::Relaxed),
            gateway_active: match (&datapath, self.candidate.load(Ordering::Relaxed)) {
                (Some(_), _) => Some(true),
                (None, true) => Some(false),
                (None, false) => None,
            },
        }
    }

    fn health(&self) -> Result<(), String> {
        match &*self.datapath.lock() {
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

    /// The running datapath, while this node is a gateway.
    pub fn datapath(&self) -> Option<Arc<Datapath>> {
        self.datapath.lock().clone()
    }

    /// How many of its routes the node holds, as of the last reconcile that reached the kernel.
    pub fn route_status(&self) -> Option<RouteStatus> {
        self.route_status.lock().clone()
    }
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid; the last good state stays in force.
    #[error("{0}; keeping the last good configuration")]
    Config(#[from] ConfigError),
    /// The state was applied but the kernel refused some route changes; the resync retries them.
    #[error("configuration applied, but the kernel refused a change ({0}); retrying every resync")]
    Netlink(#[from] NetlinkError),
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The input is the same as last time; nothing was written to the kernel or the datapath.
    Unchanged,
    /// The input changed and was applied.
    Applied,
}

/// The endpoints file a standalone node follows.
struct FileSource {
    me: Identity,
    path: PathBuf,
    last_text: Option<String>,
}

/// A gateway or route agent.
pub struct Node {
    /// Where the clusterset comes from, for messages.
    source: String,
    file: Option<FileSource>,
    role: Role,
    netlink: Arc<Netlink>,
    status: Arc<NodeStatus>,
    applied: Option<Desired>,
    probes: Probes,
    /// The gateway candidate (node name) that answers "active" on the liveness port: a
    /// route agent routes through it rather than waiting for the ClusterEndpoint's order.
    preferred_gateway: Option<String>,
}

impl Node {
    /// A standalone node following the endpoints file at `path`; it has applied nothing yet.
    pub fn from_file(
        me: Identity,
        path: PathBuf,
        role: Role,
        netlink: Arc<Netlink>,
        probes: Probes,
    ) -> Node {
        let source = format!("endpoints file {}", path.display());
        let mut node = Node::new(source, role, netlink, probes);
        node.file = Some(FileSource {
            me,
            path,
            last_text: None,
        });
        node
    }

    /// A node fed through [`Node::apply_desired`]; `source` names where its input comes from.
    pub fn new(source: String, role: Role, netlink: Arc<Netlink>, probes: Probes) -> Node {
        let status = Arc::new(NodeStatus {
            datapath: Mutex::new(role.datapath()),
            health: probes.health(),
            netlink: Some(Arc::clone(&netlink)),
            ..NodeStatus::default()
        });
        Node {
            source,
            file: None,
            role,
            netlink,
            status,
            applied: None,
            probes,
            preferred_gateway: None,
        }
    }

    /// The candidate routed through because it answers "active", if any.
    pub fn preferred_gateway(&self) -> Option<&str> {
        self.preferred_gateway.as_deref()
    }

    /// Routes through `node` (the candidate that answers "active"), or by the ClusterEndpoint's
    /// order when `None`; re-applies the routes at once if that changes the next hop.
    pub async fn set_preferred_gateway(
        &mut self,
        node: Option<String>,
    ) -> Result<bool, ReloadError> {
        if self.preferred_gateway == node {
            return Ok(false);
        }
        tracing::info!(gateway = ?node, "the active gateway candidate changed: routing through it");
        self.preferred_gateway = node;
        if self.is_gateway() {
            return Ok(true);
        }
        // A failed write is retried by the periodic resync, like any route write.
        self.resync().await.map(|_| true)
    }

    /// The health probe state this node keeps current.
    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Where health probe results go.
    pub fn health(&self) -> Arc<Health> {
        self.probes.health()
    }

    /// The figures the metrics server shows.
    pub fn status(&self) -> Arc<NodeStatus> {
        Arc::clone(&self.status)
    }

    /// The state applied last, if any.
    pub fn applied(&self) -> Option<&Desired> {
        self.applied.as_ref()
    }

    /// The endpoint the applied state names for `cluster`'s gateway.
    pub fn peer_endpoint(&self, cluster: &str) -> Option<SocketAddr> {
        self.applied
            .as_ref()?
            .peers
            .iter()
            .find(|p| p.cluster_id == cluster)?
            .endpoint
    }

    /// The tunnel's MTU and the underlay's, while this node is a gateway.
    pub fn tunnel_mtus(&self) -> Option<(u32, u32)> {
        match &self.role {
            Role::Gateway(tunnel) => Some(tunnel.mtus()),
            Role::RouteAgent { .. } => None,
        }
    }

    /// Whether this node terminates the tunnels now.
    pub fn is_gateway(&self) -> bool {
        matches!(self.role, Role::Gateway(_))
    }

    /// Marks this node as a gateway candidate, so its metrics say whether it is active.
    pub fn set_candidate(&self, candidate: bool) {
        self.status.candidate.store(candidate, Ordering::Relaxed);
    }

    /// Counts an input that was refused (the last good state stays), with its message.
    pub fn record_refusal(&self, message: String) {
        self.status.errors.fetch_add(1, Ordering::Relaxed);
        *self.status.last_error.lock() = Some(message);
    }

    /// Re-reads the endpoints file and applies it if it changed; a node without a file does nothing.
    ///
    /// An invalid file changes nothing: tunnels and routes stay on the last good state.
    pub async fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let Some(file) = &mut self.file else {
            return Ok(Reloaded::Unchanged);
        };
        let shown = file.path.display().to_string();
        let text = tokio::fs::read_to_string(&file.path)
            .await
            .map_err(|source| ConfigError::Read {
                what: "endpoints file",
                path: shown.clone(),
                source,
            });
        let text = match text {
            Ok(text) if file.last_text.as_deref() == Some(text.as_str()) => {
                return Ok(Reloaded::Unchanged)
            }
            Ok(text) => text,
            Err(e) => return Err(self.refuse(e)),
        };
        let desired = desired_from_text(&text, &shown, &file.me);
        // Remembered even when bad, so a bad file is reported once, not on every poll.
        file.last_text = Some(text);
        match desired {
            Ok(desired) => self.commit(desired).await,
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Applies `desired` unless it equals what was applied last (then nothing is written).
    pub async fn apply_desired(&mut self, desired: Desired) -> Result<Reloaded, ReloadError> {
        if self.applied.as_ref() == Some(&desired) {
            return Ok(Reloaded::Unchanged);
        }
        self.commit(desired).await
    }

    async fn commit(&mut self, desired: Desired) -> Result<Reloaded, ReloadError> {
        // The datapath already holds the new peers, so the new state is committed even if
        // a route write failed: reverting would flap routes, and the periodic resync
        // retries the failed writes.
        let result = self.apply(&desired).await;
        self.applied = Some(desired);
        self.status.reloads.fetch_add(1, Ordering::Relaxed);
        self.record(&result);
        result.map(|()| Reloaded::Applied)
    }

    fn record(&self, result: &Result<(), ReloadError>) {
        match result {
            Ok(()) => *self.status.last_error.lock() = None,
            Err(e) => {
                self.status.errors.fetch_add(1, Ordering::Relaxed);
                *self.status.last_error.lock() = Some(e.to_string());
            }
        }
    }

    fn refuse(&self, error: ConfigError) -> ReloadError {
        self.record_refusal(error.to_string());
        ReloadError::Config(error)
    }

    /// Switches role, re-applying the last state under the new one: agent routes are
    /// replaced by tunnel routes (or back) one netlink replace each, and only then is an
    /// old tunnel closed, so traffic never lacks a route for longer than that.
    pub async fn set_role(&mut self, role: Role) -> Result<(), ReloadError> {
        *self.status.datapath.lock() = role.datapath();
        let old = std::mem::replace(&mut self.role, role);
        let result = match self.applied.clone() {
            Some(desired) => self.apply(&desired).await,
            None => Ok(()),
        };
        if let Role::Gateway(tunnel) = old {
            if !self.is_gateway() {
                self.probes.set_targets(Vec::new());
                self.probes.health().retain(&[]);
            }
            tunnel.close(&self.netlink).await;
        }
        self.record(&result);
        result
    }

    /// Re-checks the kernel's routes against the last applied state (repairs outside deletions).
    pub async fn resync(&self) -> Result<usize, ReloadError> {
        match &self.applied {
            Some(desired) => Ok(self.apply_routes(desired).await?),
            None => Ok(0),
        }
    }

    async fn apply(&self, desired: &Desired) -> Result<(), ReloadError> {
        if let Role::Gateway(tunnel) = &self.role {
            let datapath = &tunnel.datapath;
            let local: Vec<ipnet::IpNet> = desired.local.cidrs().copied().collect();
            datapath.set_local_cidrs(&local);
            let plan = datapath.set_peers(&desired.peers);
            for p in &plan.add {
                tracing::info!(peer = %p.cluster_id, endpoint = ?p.endpoint, "peer added");
            }
            for p in &plan.replace {
                tracing::info!(peer = %p.cluster_id, "peer keepalive changed; new sessions");
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
                .map(|(cluster, ip)| (cluster.clone(), SocketAddr::new(*ip, ports::PROBE)))
                .collect();
            let clusters: Vec<String> =
                desired.peers.iter().map(|p| p.cluster_id.clone()).collect();
            self.probes.health().retain(&clusters);
            self.probes.set_targets(targets);
        }
        self.apply_routes(desired).await?;
        Ok(())
    }

    /// Installs the routes for every remote CIDR, each above its fail-closed route.
    async fn apply_routes(&self, desired: &Desired) -> Result<usize, ReloadError> {
        let mut routes = self.tunnel_routes(desired).await?;
        routes.extend(
            desired
                .remote_cidrs()
                .map(|dst| causeway_datapath::route::Route::fail_closed(dst, MAIN_TABLE)),
        );
        self.reconcile(&routes).await
    }

    /// The routes that carry remote traffic: into the tunnel on the active gateway, to
    /// the active gateway's node everywhere else.
    async fn tunnel_routes(
        &self,
        desired: &Desired,
    ) -> Result<Vec<causeway_datapath::route::Route>, ReloadError> {
        let routes = match &self.role {
            Role::Gateway(tunnel) => {
                let dev = NextHop::Dev {
                    ifindex: tunnel.ifindex,
                };
                desired.routes(|_| Some(dev), Some(tunnel.mtu), MAIN_TABLE)
            }
            Role::RouteAgent { mtu, skip_node } => {
                let gateways = desired.gateway_next_hops_for(
                    &self.source,
                    self.preferred_gateway.as_deref(),
                    skip_node.as_deref(),
                )?;
                let Some(gateways) = gateways else {
                    tracing::debug!("no other gateway of this cluster to route through yet");
                    return Ok(Vec::new());
                };
                let mut hops = Vec::new();
                for gateway in gateways {
                    let ifindex = self.netlink.ifindex_on_subnet(gateway).await?;
                    hops.push(NextHop::Via { gateway, ifindex });
                }
                let mtu = match (mtu, hops.first()) {
                    (Some(mtu), _) => Some(*mtu),
                    (None, Some(hop)) => Some(tunnel_mtu(
                        self.netlink.link_mtu(hop.ifindex()).await?,
                        true,
                    )),
                    (None, None) => None,
                };
                let same_family = |dst: &ipnet::IpNet| {
                    hops.iter().copied().find(|hop| match hop {
                        NextHop::Via { gateway, .. } => gateway.is_ipv4() == dst.addr().is_ipv4(),
                        NextHop::Dev { .. } | NextHop::Unreachable => false,
                    })
                };
                let routes = desired.routes(same_family, mtu, MAIN_TABLE);
                let unroutable = desired.remote_cidrs().count() - routes.len();
                if unroutable > 0 {
                    tracing::warn!(unroutable, "remote CIDRs of a family the gateway node has no cluster address for; list it in privateIPs");
                }
                routes
            }
        };
        Ok(routes)
    }

    /// Makes the kernel hold `routes`; the node's figures count those that carry traffic,
    /// not the fail-closed ones under them.
    async fn reconcile(
        &self,
        routes: &[causeway_datapath::route::Route],
    ) -> Result<usize, ReloadError> {
        let result = self.netlink.reconcile(routes, MAIN_TABLE).await;
        // Only a pass that reached the kernel says what it holds; a failed listing says nothing.
        let refused = match &result {
            Ok(_) => Some(Vec::new()),
            Err(NetlinkError::Apply { failures, .. }) => Some(
                failures
                    .iter()
                    .filter(|f| f.op != RouteOp::Delete)
                    .map(|f| f.route.clone())
                    .collect(),
            ),
            Err(_) => None,
        };
        if let Some(refused) = refused {
            *self.status.route_status.lock() = Some(route_status(routes, &refused));
        }
        let report = result?;
        if report.changed() > 0 {
            tracing::info!(%report, "routes reconciled");
        }
        let carrying = routes.iter().filter(|r| !r.is_fail_closed()).count();
        self.status.routes.store(carrying as u64, Ordering::Relaxed);
        Ok(report.changed())
    }

    /// Withdraws every route this node added, then closes its tunnel (deleting the interface).
    pub async fn shutdown(&mut self) -> Result<(), ReloadError> {
        let result = self.netlink.reconcile(&[], MAIN_TABLE).await;
        match &result {
            Ok(report) => tracing::info!(%report, "routes withdrawn"),
            Err(e) => tracing::warn!(error = %e, "withdrawing routes failed"),
        }
        self.status.routes.store(0, Ordering::Relaxed);
        *self.status.datapath.lock() = None;
        let placeholder = Role::RouteAgent {
            mtu: None,
            skip_node: None,
        };
        if let Role::Gateway(tunnel) = std::mem::replace(&mut self.role, placeholder) {
            tunnel.close(&self.netlink).await;
        }
        result?;
        Ok(())
    }
}
