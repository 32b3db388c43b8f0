//! Kubernetes mode (`causeway-gateway kubernetes`): the gateway and route agent fed by the
//! ClusterEndpoints in their namespace, with the active gateway elected through a Lease.
//!
//! One process switches roles: a candidate starts passive (a route agent towards the active
//! gateway), opens its tunnel when it wins the Lease, and closes it again when it loses
//! it. The ClusterEndpoint watcher is only a trigger; every pass lists the objects afresh
//! and plans from them (`clusterset`), so a reconnect that finds the same objects changes
//! nothing. An API failure never touches the data plane: it runs on the last known state.

pub mod api;
mod error;
pub mod role;

pub use error::KubeError;

use crate::clusterset::{plan_clusterset, Waiting};
use crate::config::Identity;
use crate::diagnostics::auth::{Access, Reviewer};
use crate::diagnostics::Diagnostics;
use crate::http;
use crate::liveness::{self, Liveness};
use crate::node::{Node, Reloaded, Role, Tunnel, TunnelSetup};
use crate::rtt_probe::Probes;
use crate::status::{observe, plan_status, LocalObservation, PeerObservation, StatusWrite};
use causeway_crds::names::{gateway_key_secret, gateway_lease};
use causeway_crds::{ClusterEndpoint, GatewayEndpoint, GatewayRole, GatewaySpec, GatewayStatus};
use causeway_datapath::keys::public_key;
use causeway_datapath::netlink::Netlink;
use causeway_k8s::leader::{campaign, Campaign, Leadership};
use causeway_wire::keys::format_key;
use causeway_wire::ports;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use role::{Action, Event, Heard, Holder, Standing};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::time::sleep_until;
use tracing::Instrument;

/// How often kernel routes are re-checked against the applied state.
const RESYNC: Duration = Duration::from_secs(10);
/// Quiet time after a ClusterEndpoint event before a pass, so a burst makes one pass…
const DEBOUNCE: Duration = Duration::from_millis(100);
/// …but a steady stream of events still gets a pass this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Backoff of failed API calls: first retry, and the longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for each API call (resign, last status) before leaving anyway.
const SHUTDOWN_CALL: Duration = Duration::from_secs(5);
/// How often what the liveness probes heard is acted upon (takeover, route agents' next hop).
const LIVENESS_CHECK: Duration = Duration::from_millis(25);
/// How long a takeover waits for the Lease manager to confirm the Lease it just took.
const TAKEOVER_CONFIRM: Duration = Duration::from_secs(1);
/// The longest a leaving active gateway forwards while waiting for a successor.
const DRAIN_MAX: Duration = Duration::from_secs(3);
/// How long it forwards on once a successor answers "active".
const DRAIN_LINGER: Duration = Duration::from_millis(250);

/// What a gateway candidate runs with, beyond what every node has.
#[derive(Debug, Clone)]
pub struct CandidateConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Where other clusters send to (`--listen` when not behind NAT).
    pub public_endpoint: SocketAddr,
    /// The node's cluster-network addresses, one per family.
    pub private_ips: Vec<IpAddr>,
    /// The gateway's address inside the tunnel, for health probes.
    pub health_check_ip: Option<IpAddr>,
    /// Name of the TUN interface.
    pub interface: String,
    /// Seconds between keepalives to every peer.
    pub persistent_keepalive: Option<u16>,
    /// The namespace of the key Secrets.
    pub key_namespace: String,
}

/// Everything Kubernetes mode runs with.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// This cluster's ID.
    pub cluster: String,
    /// This node's name (the Gateway object's name, the Lease holder identity).
    pub node_name: String,
    /// The namespace of the ClusterEndpoints, Gateways and Leases.
    pub namespace: String,
    /// `Some` for a gateway candidate, `None` for a route agent.
    pub candidate: Option<CandidateConfig>,
    /// Tunnel MTU (gateway) or route MTU (route agent); `None`: derived from the interface.
    pub mtu: Option<u32>,
    /// How long the gateway Lease holds without renewal.
    pub lease: Duration,
    /// Address of the /metrics and /healthz server.
    pub metrics_addr: SocketAddr,
    /// How often the active gateway checks whether its status is worth writing.
    pub status_interval: Duration,
    /// Which ranges other clusters may claim here.
    pub acceptance: causeway_crds::validate::Acceptance,
    /// The DNS server `verify` asks; `None`: the first nameserver of /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
}

/// The Gateway spec a candidate publishes.
pub fn gateway_spec(
    config: &KubeConfig,
    candidate: &CandidateConfig,
    key: &[u8; 32],
) -> GatewaySpec {
    GatewaySpec {
        cluster_id: config.cluster.clone(),
        endpoint: GatewayEndpoint {
            node_name: config.node_name.clone(),
            public_endpoint: candidate.public_endpoint.to_string(),
            public_key: format_key(&public_key(key)),
            private_ip: candidate.private_ips.first().map(ToString::to_string),
            private_ips: candidate
                .private_ips
                .iter()
                .map(ToString::to_string)
                .collect(),
            health_check_ip: candidate.health_check_ip.map(|ip| ip.to_string()),
        },
    }
}

/// Exponential backoff between failed attempts.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    /// The wait before the next attempt; each call doubles the next one.
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// A candidate's election and status-writing state.
struct Candidate {
    config: CandidateConfig,
    key: [u8; 32],
    how: Campaign,
    /// `Some` while contending for (or holding) the Lease: only while no other
    /// candidate answers "active" (see [`crate::liveness`]).
    leadership: Option<Leadership>,
    /// When joining the election may next be tried after a failure.
    campaign_retry_at: Option<Instant>,
    campaign_backoff: Backoff,
    /// When this candidate started listening for the others (it campaigns only after
    /// having listened for [`liveness::DEAD_AFTER`]).
    listening_since: Instant,
    /// Active although the Lease manager reports the Lease lost, because no other
    /// candidate holds it (typically: the API server is unreachable, so it could not
    /// be renewed). Stepping down then would cut every tunnel while nobody can take
    /// over; the data plane outlives the control plane.
    holding_over: bool,
    /// The key changed and the Gateway object does not say so yet.
    spec_unpublished: bool,
    /// What the Gateway's status says, as far as we know (read at start, then written).
    written: Option<GatewayStatus>,
    written_at: Instant,
    /// When a failed status write may be retried.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// This node run from the Kubernetes API: a gateway candidate or a route agent.
struct Runner {
    client: Client,
    config: KubeConfig,
    netlink: Arc<Netlink>,
    node: Node,
    candidate: Option<Candidate>,
    /// The objects of the last successful list: a role switch re-plans from them.
    objects: Option<Vec<ClusterEndpoint>>,
    waiting: Option<Waiting>,
    refused: Vec<(String, Vec<String>)>,
    /// Who answers "active" on the liveness port: what a candidate tells the others and
    /// hears from them, or what a route agent's prober hears.
    liveness: Arc<Liveness>,
    liveness_targets: watch::Sender<Vec<liveness::Target>>,
    stop_liveness: watch::Sender<bool>,
}

/// Runs Kubernetes mode until `shutdown` resolves; then resigns the Lease, withdraws the
/// routes and the tunnel interface, and returns.
pub async fn run(
    client: Client,
    config: KubeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KubeError> {
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let netlink = Arc::new(Netlink::new().await?);
    let node = Node::new(
        format!("ClusterEndpoints in namespace {}", config.namespace),
        agent_role(&config),
        Arc::clone(&netlink),
        Probes::default(),
    );
    node.set_candidate(config.candidate.is_some());

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| KubeError::Metrics {
            addr: config.metrics_addr,
            source,
        })?;
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let access = Access::Reviewed(Box::new(Reviewer::new(client.clone(), &config.namespace)));
    let diagnostics = Diagnostics::new(node.status(), node.probes().clone(), config.dns_server);
    let server = tokio::spawn(http::serve(
        listener,
        node.status(),
        diagnostics.router(access),
        async {
            let _ = metrics_stopped.await;
        },
    ));

    let liveness = Arc::new(Liveness::default());
    let (liveness_targets, targets) = watch::channel(Vec::new());
    let (stop_liveness, liveness_stopped) = watch::channel(false);
    let sockets = liveness_sockets(config.candidate.as_ref()).await;
    tokio::spawn(liveness::run(
        sockets,
        targets,
        Arc::clone(&liveness),
        liveness_stopped,
    ));
    let candidate = match &config.candidate {
        None => None,
        Some(candidate) => {
            let start = join_as_candidate(&client, &config, candidate);
            tokio::select! {
                joined = start => Some(joined?),
                _ = stopped.wait_for(|s| *s) => None,
            }
        }
    };
    if let Some(c) = &candidate {
        liveness.set_key(c.key);
    }
    let mut runner = Runner {
        client,
        config,
        netlink,
        node,
        candidate,
        objects: None,
        waiting: None,
        refused: Vec::new(),
        liveness,
        liveness_targets,
        stop_liveness,
    };
    let span = tracing::info_span!("kubernetes", cluster = %runner.config.cluster, node = %runner.config.node_name);
    let result = if *stopped.borrow() {
        Ok(())
    } else {
        runner.serve(stopped).instrument(span.clone()).await
    };
    runner.stop().instrument(span).await;
    let _ = stop_metrics.send(());
    let _ = server.await;
    result
}

fn agent_role(config: &KubeConfig) -> Role {
    Role::RouteAgent {
        mtu: config.mtu,
        skip_node: Some(config.node_name.clone()),
    }
}

/// Reads (or creates) the key, publishes the Gateway object and joins the election,
/// retrying API failures that a retry can cure.
async fn join_as_candidate(
    client: &Client,
    config: &KubeConfig,
    candidate: &CandidateConfig,
) -> Result<Candidate, KubeError> {
    let key = retry("reading the key Secret", || {
        api::ensure_key(client, &candidate.key_namespace, &config.node_name)
    })
    .await?;
    let spec = gateway_spec(config, candidate, &key);
    tracing::info!(public_key = %spec.endpoint.public_key, node = %config.node_name, "gateway key ready");
    let written = retry("publishing the Gateway object", || {
        api::ensure_gateway(client, &config.namespace, &config.node_name, &spec)
    })
    .await?;
    let how = Campaign {
        namespace: config.namespace.clone(),
        name: gateway_lease(&config.cluster),
        identity: config.node_name.clone(),
        duration: config.lease.max(Duration::from_secs(2)),
        grace: (config.lease / 3).max(Duration::from_secs(1)),
    };
    Ok(Candidate {
        config: candidate.clone(),
        key,
        how,
        leadership: None,
        campaign_retry_at: None,
        campaign_backoff: Backoff::new(),
        listening_since: Instant::now(),
        holding_over: false,
        spec_unpublished: false,
        written,
        written_at: Instant::now(),
        retry_at: None,
        backoff: Backoff::new(),
    })
}

/// The liveness sockets: a candidate answers (and asks) on UDP [`ports::LIVENESS`] of its
/// private IPs; a route agent only asks, from an ephemeral port of each family.
async fn liveness_sockets(candidate: Option<&CandidateConfig>) -> Vec<tokio::net::UdpSocket> {
    let addrs: Vec<SocketAddr> = match candidate {
        Some(c) => c
            .private_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, ports::LIVENESS))
            .collect(),
        None => vec![
            SocketAddr::new(IpAddr::from([0u8; 4]), 0),
            SocketAddr::new(IpAddr::from([0u16; 8]), 0),
        ],
    };
    let mut sockets = Vec::new();
    for addr in addrs {
        match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => sockets.push(socket),
            // A candidate without it cannot be seen by the others, nor see them: election
            // falls back to the Lease alone. A route agent then follows the ClusterEndpoint.
            Err(error) if candidate.is_some() => {
                tracing::warn!(%addr, %error, "cannot listen for the other gateway candidates' liveness probes; is --private-ip an address of this node?")
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "no liveness prober for this address family")
            }
        }
    }
    sockets
}

async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, KubeError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Runner {
    async fn serve(&mut self, mut stopped: watch::Receiver<bool>) -> Result<(), KubeError> {
        let api: Api<ClusterEndpoint> =
            Api::namespaced(self.client.clone(), &self.config.namespace);
        let mut events = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        // Checks what the liveness probes heard (cheap): a takeover or a route agent's switch
        // of next hop happens within this much of the moment it is due.
        let mut campaign_tick = tokio::time::interval(LIVENESS_CHECK);
        campaign_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut key_events = match &self.candidate {
            Some(c) => {
                let secrets: Api<Secret> =
                    Api::namespaced(self.client.clone(), &c.config.key_namespace);
                let name = gateway_key_secret(&self.config.node_name);
                watcher(
                    secrets,
                    watcher::Config::default().fields(&format!("metadata.name={name}")),
                )
                .default_backoff()
                .boxed()
            }
            None => futures::stream::pending().boxed(),
        };
        let mut holdover_tick =
            tokio::time::interval((self.config.lease / 3).max(Duration::from_secs(1)));
        let mut status_tick =
            tokio::time::interval(self.config.status_interval.max(Duration::from_millis(100)));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A pass is due at `due` (debounced); `burst` is when the pending burst began.
        let mut due: Option<Instant> = Some(Instant::now());
        let mut burst: Option<Instant> = None;
        let mut list_backoff = Backoff::new();
        let mut watch_failing = false;
        tracing::info!(
            namespace = %self.config.namespace,
            node = %self.config.node_name,
            candidate = self.candidate.is_some(),
            "kubernetes mode started"
        );
        loop {
            let active = self.node.is_gateway();
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ok(()),
                event = events.next() => match event {
                    Some(Ok(_)) => {
                        if watch_failing {
                            tracing::info!("watching ClusterEndpoints again");
                            watch_failing = false;
                        }
                        let now = Instant::now();
                        let start = *burst.get_or_insert(now);
                        due = Some((now + DEBOUNCE).min(start + DEBOUNCE_MAX));
                    }
                    Some(Err(error)) => {
                        if !watch_failing {
                            tracing::warn!(%error, "watching ClusterEndpoints failed; the data plane stays as it is, retrying with backoff");
                        }
                        watch_failing = true;
                    }
                    // A watcher never ends on its own; should it, start another.
                    None => {
                        events = watcher(api.clone(), watcher::Config::default())
                            .default_backoff()
                            .boxed();
                    }
                },
                () = wait_until(due) => {
                    due = None;
                    burst = None;
                    match api.list(&ListParams::default()).await {
                        Ok(list) => {
                            list_backoff.reset();
                            self.objects = Some(list.items);
                            self.plan_and_apply().await;
                        }
                        Err(error) => {
                            let wait = list_backoff.next();
                            tracing::warn!(%error, namespace = %self.config.namespace, retry_in = ?wait, "cannot list ClusterEndpoints; the data plane stays as it is (the gateway needs list and watch on clusterendpoints.causeway.dev)");
                            due = Some(Instant::now() + wait);
                        }
                    }
                }
                won = leadership_change(&mut self.candidate, active) => {
                    if won && self.standing().holding_over {
                        tracing::info!(node = %self.config.node_name, "holding the gateway Lease again; the tunnel never stopped");
                    }
                    self.handle(if won { Event::LeaseWon } else { Event::LeaseLost }).await?;
                    // Look again: the controller reorders the gateways as the Lease moves.
                    due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                }
                _ = holdover_tick.tick(), if self.standing().holding_over => self.handle(Event::HoldoverTick).await?,
                _ = campaign_tick.tick() => {
                    if self.candidate.is_some() {
                        let heard = self.heard(Instant::now());
                        self.handle(Event::Check(heard)).await?;
                    }
                    if !self.node.is_gateway() {
                        self.follow_active().await;
                    }
                }
                event = key_events.next() => match event {
                    Some(Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret))) => {
                        self.key_changed(&secret).await;
                    }
                    Some(Ok(watcher::Event::Delete(_))) => {
                        tracing::warn!(secret = %gateway_key_secret(&self.config.node_name), "this gateway's key Secret was deleted; the running key stays in use (a restart creates a new one)");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => tracing::debug!(%error, "watching the key Secret failed; retrying"),
                    None => key_events = futures::stream::pending().boxed(),
                },
                _ = status_tick.tick() => self.write_status().await,
                _ = resync.tick() => {
                    if let Err(e) = self.node.resync().await {
                        tracing::warn!(error = %e, "route resync failed");
                    }
                }
            }
        }
    }

    fn identity(&self) -> Identity {
        let candidate = self.candidate.as_ref();
        let active = self.node.is_gateway();
        Identity {
            cluster: self.config.cluster.clone(),
            public_key: candidate.filter(|_| active).map(|c| public_key(&c.key)),
            listen: candidate.filter(|_| active).map(|c| c.config.listen),
            persistent_keepalive: candidate.and_then(|c| c.config.persistent_keepalive),
        }
    }

    async fn plan_and_apply(&mut self) {
        let Some(objects) = &self.objects else {
            return;
        };
        let plan = plan_clusterset(
            objects,
            &self.identity(),
            &self.config.namespace,
            &self.config.node_name,
            &self.config.acceptance,
        );
        if plan.refused != self.refused {
            for (object, reasons) in &plan.refused {
                if !self
                    .refused
                    .iter()
                    .any(|(o, r)| o == object && r == reasons)
                {
                    tracing::warn!(object = %object, reasons = %reasons.join("; "), "ClusterEndpoint refused; left out (the data plane keeps the others)");
                    self.node.record_refusal(reasons.join("; "));
                }
            }
            self.refused = plan.refused;
        }
        match plan.outcome {
            Ok(desired) => {
                let gateways = desired
                    .local
                    .gateways
                    .iter()
                    .map(|g| (g.node_name.as_str(), g.private_ips.as_slice(), g.public_key));
                let targets = liveness::targets(gateways, &self.config.node_name);
                self.liveness.retain(&targets);
                self.liveness_targets.send_if_modified(|current| {
                    let changed = *current != targets;
                    *current = targets;
                    changed
                });
                if self.waiting.take().is_some() {
                    tracing::info!("ClusterEndpoints ready");
                }
                match self.node.apply_desired(desired).await {
                    Ok(Reloaded::Applied) => {
                        tracing::info!(active = self.node.is_gateway(), "ClusterEndpoints applied")
                    }
                    Ok(Reloaded::Unchanged) => tracing::debug!("ClusterEndpoints unchanged"),
                    Err(e) => tracing::warn!(error = %e, "applying ClusterEndpoints failed"),
                }
            }
            Err(waiting) => {
                if self.waiting.as_ref() != Some(&waiting) {
                    tracing::info!(reason = %waiting, "not applying ClusterEndpoints yet; the data plane stays as it is");
                }
                self.waiting = Some(waiting);
            }
        }
    }

    async fn become_active(&mut self) -> Result<(), KubeError> {
        let Some(candidate) = &self.candidate else {
            return Ok(());
        };
        tracing::info!(node = %self.config.node_name, "won the gateway Lease: opening the tunnel");
        let setup = TunnelSetup {
            interface: candidate.config.interface.clone(),
            listen: candidate.config.listen,
            mtu: self.config.mtu,
            private_key: candidate.key,
            health_ip: candidate.config.health_check_ip,
        };
        let tunnel = Tunnel::open(&self.netlink, &setup, self.node.probes()).await?;
        if let Err(e) = self.node.set_role(Role::Gateway(tunnel)).await {
            tracing::warn!(error = %e, "switching to the tunnel's routes failed; the resync retries");
        }
        // Peers are set here, and each remote cluster's gateways are sent an initiation at
        // once: a remote gateway switches to us when it completes it.
        self.plan_and_apply().await;
        // Only now, with routes and peers in place, do route agents hear "active" and switch.
        self.liveness.set_active(true);
        self.status_due_now();
        Ok(())
    }

    /// A route agent (or passive candidate) routes through the candidate that answers
    /// "active" on the liveness port; without one, by the ClusterEndpoint's order.
    async fn follow_active(&mut self) {
        let active = self
            .liveness
            .active_peer(Instant::now(), liveness::TAKEOVER_AFTER);
        let node = active.and_then(|addr| {
            self.node.applied()?.local.gateways.iter().find_map(|g| {
                g.private_ips
                    .contains(&addr.ip())
                    .then(|| g.node_name.clone())
            })
        });
        if let Err(e) = self.node.set_preferred_gateway(node).await {
            tracing::warn!(error = %e, "routing through the active gateway failed; the resync retries");
        }
    }

    /// The key Secret changed: with a new key, the datapath (if active) adds sessions under
    /// it beside the old ones, and only then is the Gateway object told the new public key —
    /// so when the remote side learns it, we can already answer under it. The old sessions
    /// carry traffic until the new ones complete a handshake: no gap.
    async fn key_changed(&mut self, secret: &Secret) {
        let Some(c) = &mut self.candidate else {
            return;
        };
        let key = match api::key_from_secret(secret, &c.config.key_namespace) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(%error, "the key Secret holds no usable key; the running key stays in use");
                return;
            }
        };
        if key == c.key {
            return;
        }
        c.key = key;
        self.liveness.set_key(key);
        let spec = gateway_spec(&self.config, &c.config, &c.key);
        if let Some(datapath) = self.node.status().datapath() {
            datapath.set_private_key(key);
        }
        tracing::info!(public_key = %spec.endpoint.public_key, "gateway key rotated: sessions under the new key added, the old ones serve until the remote side switches");
        c.spec_unpublished = true;
        self.publish_spec().await;
    }

    /// Publishes this candidate's Gateway spec if it changed since the last success.
    async fn publish_spec(&mut self) {
        let Some(c) = &mut self.candidate else {
            return;
        };
        if !c.spec_unpublished {
            return;
        }
        let spec = gateway_spec(&self.config, &c.config, &c.key);
        match api::ensure_gateway(
            &self.client,
            &self.config.namespace,
            &self.config.node_name,
            &spec,
        )
        .await
        {
            Ok(_) => c.spec_unpublished = false,
            // Retried with the next status write.
            Err(error) => {
                tracing::warn!(%error, "cannot publish the rotated public key in the Gateway object; retrying")
            }
        }
    }

    /// Where this candidate stands, read from the world: its tunnel, its liveness answer,
    /// its Lease manager, and what only the role machine remembers (holding over).
    fn standing(&self) -> Standing {
        let c = self.candidate.as_ref();
        Standing {
            active: self.node.is_gateway(),
            answering: self.liveness.is_active(),
            contending: c.is_some_and(|c| c.leadership.is_some()),
            holding_over: c.is_some_and(|c| c.holding_over),
        }
    }

    /// What the liveness probes (and this node's datapath) say at `now`.
    fn heard(&self, now: Instant) -> Heard {
        let c = self.candidate.as_ref();
        Heard {
            active_peer: self
                .liveness
                .active_peer_alive(now, liveness::TAKEOVER_AFTER),
            takeover_due: self.liveness.takeover_due(now),
            may_try: c.is_none_or(|c| c.campaign_retry_at.is_none_or(|at| now >= at)),
            listened_enough: c
                .is_some_and(|c| now.duration_since(c.listening_since) >= liveness::DEAD_AFTER),
            datapath_failed: matches!(
                self.node.status().datapath().map(|d| d.health()),
                Some(Err(_))
            ),
        }
    }

    /// Feeds `event` to the role machine and carries out its actions, with the events
    /// those actions answer with.
    async fn handle(&mut self, event: Event) -> Result<(), KubeError> {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let (next, actions) = role::step(self.standing(), event);
            if let Some(c) = &mut self.candidate {
                c.holding_over = next.holding_over;
            }
            for action in actions {
                if let Some(answer) = self.perform(action).await? {
                    events.push_back(answer);
                }
            }
        }
        Ok(())
    }

    /// Carries out one action of the role machine.
    async fn perform(&mut self, action: Action) -> Result<Option<Event>, KubeError> {
        match action {
            Action::OpenTunnel => self.become_active().await?,
            Action::CloseTunnel => self.become_passive().await,
            Action::StopAnswering => {
                if let Some(Err(reason)) = self.node.status().datapath().map(|d| d.health()) {
                    tracing::error!(%reason, "the datapath stopped: no longer answering as the active gateway, so a standby takes over");
                }
                self.liveness.set_active(false);
            }
            Action::AskHolder => return Ok(Some(Event::HolderIs(self.lease_holder().await))),
            Action::TakeOver => return Ok(self.take_over().await),
            Action::JoinElection => self.join_election().await,
            Action::Resign => {
                if let Some(leadership) = self.candidate.as_mut().and_then(|c| c.leadership.take())
                {
                    if tokio::time::timeout(SHUTDOWN_CALL, leadership.resign())
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            "resigning the gateway Lease timed out; it expires on its own"
                        );
                    }
                }
            }
            Action::HoldOver(Holder::Unknown(error)) => {
                tracing::warn!(lease = %gateway_lease(&self.config.cluster), %error, "the gateway Lease could not be renewed and the API server cannot be asked who holds it: staying active, the tunnel carries on");
            }
            Action::HoldOver(_) => {
                tracing::warn!(lease = %gateway_lease(&self.config.cluster), "the gateway Lease could not be renewed, but no other candidate holds it: staying active, the tunnel carries on");
            }
            Action::Drain => drain(&self.liveness).await,
            Action::Withdraw => {
                let _ = self.stop_liveness.send(true);
                tracing::info!("withdrawing routes and the tunnel interface");
                if let Err(e) = self.node.shutdown().await {
                    tracing::warn!(error = %e, "withdrawing routes failed");
                }
            }
            Action::WritePassiveStatus => {
                let passive = observe(
                    GatewayRole::Passive,
                    &LocalObservation::default(),
                    &[],
                    None,
                    SystemTime::now(),
                );
                let write = api::write_status(
                    &self.client,
                    &self.config.namespace,
                    &self.config.node_name,
                    &passive,
                );
                match tokio::time::timeout(SHUTDOWN_CALL, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot write the passive status on shutdown")
                    }
                    Err(_) => tracing::warn!("writing the passive status on shutdown timed out"),
                }
            }
        }
        Ok(None)
    }

    /// Joins the election; a failure is retried after a backoff.
    async fn join_election(&mut self) {
        let Some(c) = &mut self.candidate else {
            return;
        };
        match campaign(self.client.clone(), &c.how).await {
            Ok(leadership) => {
                tracing::info!(lease = %c.how.name, identity = %c.how.identity, "no other candidate answers as active: campaigning for the gateway Lease");
                c.leadership = Some(leadership);
                c.campaign_retry_at = None;
                c.campaign_backoff.reset();
            }
            Err(error) => {
                let wait = c.campaign_backoff.next();
                tracing::warn!(%error, retry_in = ?wait, "cannot join the gateway election; retrying");
                c.campaign_retry_at = Some(Instant::now() + wait);
            }
        }
    }

    /// Takes the gateway Lease over (a write conditional on its resourceVersion, so of two
    /// standbys exactly one wins) and joins the election; `None` when the write was refused
    /// (retried after a wait).
    ///
    /// Split brain: the Lease is written *before* the tunnel opens, so a standby that
    /// merely lost sight of a live active gateway (a cluster-network partition) still
    /// leaves one holder; the old gateway sees that holder at its next renewal and steps
    /// down, and until then both carry traffic correctly (every remote gateway accepts
    /// both, and route agents follow the newer). Without an API server nobody takes over:
    /// a dead gateway and a dead control plane at once wait for the API server to return.
    async fn take_over(&mut self) -> Option<Event> {
        let c = self.candidate.as_mut()?;
        let started = Instant::now();
        let taken = api::take_lease(
            &self.client,
            &c.how.namespace,
            &c.how.name,
            &c.how.identity,
            c.how.duration,
        )
        .await;
        if let Err(error) = taken {
            let wait = if api::is_write_conflict(&error) {
                // Someone wrote the Lease meanwhile: look again at the next check.
                liveness::PROBE_INTERVAL
            } else {
                c.campaign_backoff.next()
            };
            tracing::warn!(%error, retry_in = ?wait, "the active gateway candidate is gone but the gateway Lease cannot be taken over; retrying");
            c.campaign_retry_at = Some(Instant::now() + wait);
            return None;
        }
        tracing::info!(lease = %c.how.name, identity = %c.how.identity, took = ?started.elapsed(), "the active gateway candidate stopped answering: took the gateway Lease over");
        c.campaign_retry_at = None;
        c.campaign_backoff.reset();
        let (joined, confirmed) = match campaign(self.client.clone(), &c.how).await {
            Ok(mut leadership) => {
                // The manager finds us holding the Lease on its first read.
                let confirmed = tokio::time::timeout(TAKEOVER_CONFIRM, leadership.until_leader())
                    .await
                    .is_ok();
                c.leadership = Some(leadership);
                (true, confirmed)
            }
            Err(error) => {
                // We hold the Lease; renewing resumes when the election can be joined.
                tracing::warn!(%error, "took the gateway Lease over but cannot renew it; holding over");
                (false, false)
            }
        };
        Some(Event::TookOver { joined, confirmed })
    }

    /// Who holds the gateway Lease, asked after the Lease manager reported it lost.
    async fn lease_holder(&self) -> Holder {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let name = gateway_lease(&self.config.cluster);
        match leases.get(&name).await {
            Ok(lease) => match lease.spec.and_then(|s| s.holder_identity) {
                Some(other) if !other.is_empty() && other != self.config.node_name => {
                    tracing::info!(lease = %name, holder = %other, "another candidate holds the gateway Lease");
                    Holder::Other(other)
                }
                _ => Holder::Nobody,
            },
            Err(error) => Holder::Unknown(error.to_string()),
        }
    }

    async fn become_passive(&mut self) {
        tracing::warn!(node = %self.config.node_name, "lost the gateway Lease: withdrawing the tunnel, routing via the active gateway");
        self.liveness.set_active(false);
        if let Err(e) = self.node.set_role(agent_role(&self.config)).await {
            tracing::warn!(error = %e, "switching to route-agent routes failed; the resync retries");
        }
        self.plan_and_apply().await;
        self.status_due_now();
    }

    fn status_due_now(&mut self) {
        if let Some(c) = &mut self.candidate {
            c.retry_at = None;
            c.backoff.reset();
        }
    }

    /// What the Gateway's status should say now.
    fn observed_status(&self) -> GatewayStatus {
        let previous = self.candidate.as_ref().and_then(|c| c.written.as_ref());
        let (tunnel_mtu, underlay_mtu) = self.node.tunnel_mtus().unzip();
        // A passive candidate routes like a route agent, so its routes are reported too.
        let local = LocalObservation {
            tunnel_mtu,
            underlay_mtu,
            routes: self.node.status().route_status(),
        };
        let Some(datapath) = self.node.status().datapath() else {
            return observe(
                GatewayRole::Passive,
                &local,
                &[],
                previous,
                SystemTime::now(),
            );
        };
        let health = self.node.health();
        let targets = self.node.probes().targets();
        let peers: Vec<PeerObservation> = datapath
            .peer_snapshots()
            .into_iter()
            .map(|mut snapshot| {
                snapshot.rtt = health.stats(&snapshot.cluster_id);
                let id = snapshot.cluster_id.clone();
                PeerObservation {
                    configured_endpoint: self.node.peer_endpoint(&id),
                    health_target: targets.iter().find(|(c, _)| *c == id).map(|(_, a)| *a),
                    since_last_reply: health.since_last_reply(&id),
                    unanswered_initiations: Some(snapshot.unanswered_initiations),
                    snapshot,
                }
            })
            .collect();
        observe(
            GatewayRole::Active,
            &local,
            &peers,
            previous,
            SystemTime::now(),
        )
    }

    async fn write_status(&mut self) {
        if self.candidate.is_none() {
            return;
        }
        self.publish_spec().await;
        let observed = self.observed_status();
        let Some(candidate) = &mut self.candidate else {
            return;
        };
        if candidate.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(StatusWrite { status, why }) = plan_status(
            candidate.written.as_ref(),
            &observed,
            candidate.written_at.elapsed(),
        ) else {
            return;
        };
        let (client, namespace, name) =
            (&self.client, &self.config.namespace, &self.config.node_name);
        let mut result = api::write_status(client, namespace, name, &status).await;
        if matches!(&result, Err(e) if api::is_not_found(e)) {
            // Someone deleted our Gateway: publish it again, then its status.
            let spec = gateway_spec(&self.config, &candidate.config, &candidate.key);
            match api::ensure_gateway(client, namespace, name, &spec).await {
                Ok(_) => result = api::write_status(client, namespace, name, &status).await,
                Err(e) => tracing::warn!(error = %e, "cannot publish the Gateway object again"),
            }
        }
        match result {
            Ok(()) => {
                tracing::info!(role = ?status.role, %why, "wrote the Gateway status");
                candidate.written = Some(status);
                candidate.written_at = Instant::now();
                candidate.retry_at = None;
                candidate.backoff.reset();
            }
            Err(error) => {
                let wait = candidate.backoff.next();
                tracing::warn!(%error, gateway = %name, retry_in = ?wait, "cannot write the Gateway status; the data plane is unaffected");
                candidate.retry_at = Some(Instant::now() + wait);
            }
        }
    }

    /// Resigns the Lease at once (so another candidate takes over without waiting for it
    /// to expire), withdraws routes and the tunnel, and says so in the Gateway's status.
    async fn stop(mut self) {
        if self.candidate.is_some() {
            if self.standing().contending {
                tracing::info!("shutting down: resigning the gateway Lease");
            }
            // Only API calls fail here, each bounded and logged; nothing is left to retry.
            let _ = self.handle(Event::Shutdown).await;
        } else {
            tracing::info!("shutting down: withdrawing routes");
            let _ = self.perform(Action::Withdraw).await;
        }
    }
}

/// Resolves when this candidate's standing changes: `true` when it won the Lease, `false`
/// when it lost it. Never resolves for a route agent.
async fn leadership_change(candidate: &mut Option<Candidate>, active: bool) -> bool {
    match candidate {
        None => std::future::pending().await,
        Some(Candidate {
            leadership: None, ..
        }) => std::future::pending().await,
        Some(c) if active && c.holding_over => {
            if let Some(l) = &mut c.leadership {
                l.until_leader().await;
            }
            true
        }
        Some(c) if active => {
            if let Some(l) = &mut c.leadership {
                l.until_lost().await;
            }
            false
        }
        Some(c) => {
            if let Some(l) = &mut c.leadership {
                l.until_leader().await;
            }
            true
        }
    }
}

/// A leaving active gateway keeps forwarding until another candidate answers "active",
/// and a little longer, so route agents and remote gateways have switched before its
/// tunnel closes: a graceful hand-over loses nothing. Bounded: it leaves at once when no
/// other candidate answers at all (none, or all stopping too), and after [`DRAIN_MAX`].
async fn drain(liveness: &Liveness) {
    let started = Instant::now();
    tracing::info!("draining: forwarding until another candidate is active");
    while started.elapsed() < DRAIN_MAX {
        let now = Instant::now();
        if !liveness.any_peer_alive(now, liveness::TAKEOVER_AFTER) {
            tracing::info!("no other candidate answers: leaving without a successor");
            return;
        }
        if liveness.active_peer_alive(now, liveness::TAKEOVER_AFTER) {
            // Everyone else probes every PROBE_INTERVAL: two of them and they have heard it too.
            tokio::time::sleep(DRAIN_LINGER).await;
            tracing::info!(drained = ?started.elapsed(), "another candidate is active: leaving");
            return;
        }
        tokio::time::sleep(LIVENESS_CHECK).await;
    }
    tracing::warn!(waited = ?DRAIN_MAX, "no other candidate became active; leaving anyway");
}

async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
