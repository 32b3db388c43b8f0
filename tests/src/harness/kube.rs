//! A clusterset in Kubernetes mode on real Kubernetes: per site two gateway candidates, a
//! worker with a pod, a real kube-apiserver and kube-controller-manager, and one broker
//! cluster for all sites; the controller, gateways and route agents find each other only
//! through those APIs (see `docs/kubernetes.md`), each with the credentials and rights the
//! chart gives it.
//!
//! How each site is set up, as a user would ([`super::control_plane::install`]): the chart,
//! rendered by real Helm, applied with `kubectl apply --server-side`; the broker cluster gets
//! the chart in broker mode, and each site's broker kubeconfig is built from the token Secret
//! it creates (deploy/examples/README.md); the controller runs with a token of the chart's
//! `causeway-controller` ServiceAccount, the gateway candidates and the route agent with one
//! of `causeway-gateway`; `kubectl causeway` runs as a person bound to the viewer roles only.
//!
//! Where the API servers are:
//!
//! ```text
//!   cluster API of site X   https://198.19.X.2:6443: on the worker node (its node address),
//!                           reached over the node network by the candidates
//!   broker API              in a namespace of its own; https://127.0.0.1:6444 in every
//!                           site's worker (a forwarder: the controller's route to it)
//!   both                    https://127.0.0.1:<port> in the test's own namespace (forwarders)
//! ```
//!
//! Every gateway candidate also has a Pod object, made from the chart's DaemonSet template
//! as the DaemonSet controller would (`spec.nodeName`, hostNetwork so `status.podIP` is the
//! node's address), and serves metrics on the node address too, so the API server's pod
//! proxy (on the worker, on the node network) reaches it as `kubectl causeway verify` does.
//!
//! The binaries are found by name next to the test executable, so they must
//! have been built (`cargo build --bins`) before a world's processes start.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::Client;
use causeway_crds::names;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::confine::Confinement;
use super::control_plane::apiserver::{kubeconfig_yaml, Credentials};
use super::control_plane::install::{
    self, CONTROLLER_ACCOUNT, GATEWAY_ACCOUNT, ROUTE_AGENT_ACCOUNT,
};
use super::control_plane::workload::Backend;
use super::control_plane::{ApiServerSpec, Etcd, Forwarder, KubeApiServer};
use super::mesh::required_metric;
use super::netns::Netns;
use super::process::ChildGuard;
use super::topology::{
    fetch_metrics, find_workspace_binary, gateway_command, Clusterset, Site, SiteSpec,
    GATEWAY_PORT, METRICS_ADDR,
};
use super::wait::wait_until_ok;
use super::{io_context, read_log, HarnessError, ScratchDir};

/// Name of the controller binary built by this workspace.
pub const CONTROLLER_BINARY: &str = "causeway-controller";
/// The namespace of Causeway's objects in every cluster API (the chart's release namespace).
pub const CLUSTER_NAMESPACE: &str = install::RELEASE_NAMESPACE;
/// The namespace of the broker's ClusterEndpoints.
pub const BROKER_NAMESPACE: &str = "causeway-broker";
/// The port a site's cluster API serves on, at its worker's node address.
pub const CLUSTER_API_PORT: u16 = super::control_plane::apiserver::API_PORT;
/// Where the broker API is reached from inside every worker's namespace.
pub const BROKER_API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6444);
/// The broker API server's own address, in its namespace.
pub const BROKER_ADVERTISE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 250);
/// The broker cluster's service range (it runs no services; kube-apiserver needs one).
const BROKER_SERVICE_CIDR: &str = "10.99.0.0/16";
/// Where a gateway candidate serves metrics, on loopback inside its namespace.
pub const GATEWAY_METRICS_ADDR: SocketAddr = METRICS_ADDR;
/// What a gateway candidate binds its metrics server to: every address of its namespace,
/// loopback (for [`GATEWAY_METRICS_ADDR`]) and the node address (for the pod proxy).
pub const GATEWAY_METRICS_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), METRICS_ADDR.port());
/// The port a controller serves `clusterset.local` on when a test gives it
/// `--dns-listen 0.0.0.0:<port>`; candidates are pointed at it with `--dns-server`. The
/// chart's (`controller.dns.port`): its non-root controller cannot bind 53, and the
/// causeway-dns Service maps 53 to this.
pub const CONTROLLER_DNS_PORT: u16 = 5353;
/// Name of a gateway candidate's Pod object: `causeway-gateway-<node>`.
pub fn gateway_pod_name(node: &str) -> String {
    format!("causeway-gateway-{node}")
}
/// Where the route agent serves metrics, on loopback inside the worker's namespace.
pub const AGENT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9470);
/// Gateway candidates per site in a [`KubeWorld`].
pub const CANDIDATES: usize = 2;
/// The controller's `--lease-seconds`: short, so a failover test waits little.
pub const CONTROLLER_LEASE_SECONDS: u32 = 4;
/// The gateways' `--lease-seconds`.
pub const GATEWAY_LEASE_SECONDS: u32 = 3;
/// The controller's `--resync-seconds`: long, so tests see the watches work, not the resync.
pub const CONTROLLER_RESYNC_SECONDS: u32 = 30;
/// How long [`KubeWorld::start`] waits for each stage (an active gateway per
/// site, then every handshake): a few lease periods plus process start-up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Log lines per process in [`KubeWorld::logs`].
const LOG_TAIL: usize = 20;

/// A process of a [`KubeWorld`], by site index (from 0) and candidate number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// Site `i`'s controller, in its worker's namespace.
    Controller(usize),
    /// Site `i`'s gateway candidate `k` (`causeway-gateway kubernetes --role gateway`).
    Gateway(usize, usize),
    /// Site `i`'s route agent, in its worker's namespace.
    RouteAgent(usize),
}

impl Component {
    /// The site index.
    pub fn site(&self) -> usize {
        match *self {
            Component::Controller(i) | Component::Gateway(i, _) | Component::RouteAgent(i) => i,
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Site indexes are small; SiteSpec::new only fails past MAX_SITES.
        let site = |i: usize| SiteSpec::new(i + 1).map_err(|_| fmt::Error);
        match *self {
            Component::Controller(i) => write!(f, "{} controller", site(i)?.cluster_id()),
            Component::Gateway(i, k) if k < CANDIDATES => {
                write!(f, "gateway {}", site(i)?.candidate(k).node_name())
            }
            Component::Gateway(i, k) => {
                write!(f, "{} gateway candidate {k}", site(i)?.cluster_id())
            }
            Component::RouteAgent(i) => write!(f, "{} route agent", site(i)?.cluster_id()),
        }
    }
}

/// One site's cluster API server and what the test needs to use it.
struct ClusterApi {
    server: KubeApiServer,
    client: Client,
    /// The controller's kubeconfig (the chart's `causeway-controller` ServiceAccount).
    controller_kubeconfig: PathBuf,
    /// The gateway candidates' kubeconfig (`causeway-gateway`).
    gateway_kubeconfig: PathBuf,
    /// The route agent's kubeconfig (its own ServiceAccount's token).
    agent_kubeconfig: PathBuf,
    /// The controller's broker kubeconfig (the broker's `causeway-member-<site>` token).
    broker_kubeconfig: PathBuf,
    /// The chart's gateway DaemonSet pod template, which candidates' Pod objects are made from.
    gateway_pod_template: Value,
    /// What the chart's containers may do, as each process here is confined.
    confinements: Confinements,
}

/// The chart's confinement of each kind of process.
struct Confinements {
    gateway: Confinement,
    route_agent: Confinement,
    controller: Confinement,
}

/// A clusterset in Kubernetes mode; see the module docs.
///
/// Fields drop in order after [`Drop::drop`] has stopped every process: the API servers,
/// then the forwarders, etcd and the broker's namespace, then the sites' namespaces.
pub struct KubeWorld {
    processes: BTreeMap<Component, ChildGuard>,
    /// Pod CIDRs a site's controller publishes instead of its own (to test refusals).
    pod_cidrs: BTreeMap<usize, Vec<IpNet>>,
    /// Extra command-line arguments per component, appended when it is next started.
    extra_args: BTreeMap<Component, Vec<String>>,
    /// Gateway candidates that listen on the wildcard address (so their underlay address
    /// may change under them), announcing their own address as `--public-endpoint`.
    wildcard_listen: std::collections::BTreeSet<Component>,
    /// Whether a request of a Causeway component refused by RBAC is allowed (a test of a
    /// refusal); otherwise it fails the next wait.
    allow_refusals: bool,
    /// Runs the clients' connection tasks, so the clients work from any
    /// thread or runtime, also while a test thread blocks in a wait.
    runtime: Option<tokio::runtime::Runtime>,
    clusters: Vec<ClusterApi>,
    broker: KubeApiServer,
    broker_client: Client,
    /// Each worker's route to the broker ([`BROKER_API_ADDR`]).
    _broker_routes: Vec<Forwarder>,
    _etcd: Etcd,
    broker_ns: Netns,
    /// The control plane's PKI, data and logs (kept when a test fails).
    control_dir: ScratchDir,
    /// The namespaces and addresses (two candidates per site).
    pub world: Clusterset,
}

/// Chart values for site `spec`: what an operator would give `helm install`.
fn site_values(spec: &SiteSpec) -> Value {
    let list = |nets: Vec<IpNet>| nets.iter().map(ToString::to_string).collect::<Vec<_>>();
    json!({
        "clusterID": spec.cluster_id(),
        "cidrs": {"pods": list(spec.pod_cidrs()), "services": list(spec.service_cidrs())},
        "brokerConnection": {"namespace": BROKER_NAMESPACE},
    })
}

/// Chart values for the broker cluster: broker mode for `members`, no member parts.
fn broker_values(members: &[String]) -> Value {
    json!({
        "broker": {"enabled": true, "namespace": BROKER_NAMESPACE, "clusters": members},
        "controller": {"enabled": false},
        "gateway": {"enabled": false},
        "routeAgent": {"enabled": false},
    })
}

impl KubeWorld {
    /// Builds `n_sites` sites with two gateway candidates each, a real API server per site
    /// and one for the broker (all started at once), installs the chart in each the way a
    /// user would, and registers the sites' Nodes; no Causeway process runs yet.
    pub fn new(n_sites: usize) -> Result<KubeWorld, HarnessError> {
        let world = Clusterset::with_candidates(n_sites, CANDIDATES)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-world-clients")
            .enable_all()
            .build()
            .map_err(io_context("runtime for the test's kube clients"))?;
        let control_dir = ScratchDir::new("cw-control-plane-")
            .map_err(io_context("scratch directory for the control plane"))?;
        let broker_ns = Netns::new("broker").map_err(io_context("broker namespace"))?;
        broker_ns
            .add_addr(
                "lo",
                IpNet::new(BROKER_ADVERTISE_IP.into(), 32)
                    .map_err(|e| HarnessError::Topology(e.to_string()))?,
            )
            .map_err(io_context("broker address"))?;
        let etcd = Etcd::start(&broker_ns, control_dir.path())?;

        // The API servers start and take their chart at once: each is minutes of CPU
        // otherwise spent one after another.
        let members: Vec<String> = world.sites().iter().map(|s| s.spec.cluster_id()).collect();
        let dir = control_dir.path();
        let (broker, sites) = std::thread::scope(|scope| {
            let broker = scope.spawn(|| -> Result<KubeApiServer, HarnessError> {
                let spec = ApiServerSpec {
                    name: "broker".into(),
                    advertise: BROKER_ADVERTISE_IP.into(),
                    service_cidrs: vec![BROKER_SERVICE_CIDR
                        .parse()
                        .map_err(|e| HarnessError::Topology(format!("{e}")))?],
                    dir: dir.join("broker"),
                };
                let server = KubeApiServer::start(spec, &broker_ns, &etcd)?;
                install::install(&server, &broker_values(&members), CLUSTER_NAMESPACE)?;
                Ok(server)
            });
            let sites: Vec<_> = world
                .sites()
                .iter()
                .map(|site| {
                    let etcd = &etcd;
                    scope.spawn(
                        move || -> Result<(KubeApiServer, Vec<Value>), HarnessError> {
                            let spec = ApiServerSpec {
                                name: site.spec.cluster_id(),
                                advertise: site.spec.worker_node_ip().into(),
                                service_cidrs: site.spec.service_cidrs(),
                                dir: dir.join(site.spec.cluster_id()),
                            };
                            let server = KubeApiServer::start(spec, &site.worker, etcd)?;
                            let objects = install::install(
                                &server,
                                &site_values(&site.spec),
                                CLUSTER_NAMESPACE,
                            )?;
                            Ok((server, objects))
                        },
                    )
                })
                .collect();
            let broker = joined(broker.join());
            let sites: Vec<_> = sites.into_iter().map(|h| joined(h.join())).collect();
            (broker, sites)
        });
        let broker = broker?;
        let broker_client = client_for(&runtime, broker.admin_config(BROKER_NAMESPACE))?;
        let mut broker_routes = Vec::with_capacity(n_sites);
        for site in world.sites() {
            broker_routes.push(
                Forwarder::start(
                    Some(&site.worker),
                    BROKER_API_ADDR,
                    Some(&broker_ns),
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), CLUSTER_API_PORT),
                )
                .map_err(io_context(format!(
                    "route {}'s worker to the broker",
                    site.spec.cluster_id()
                )))?,
            );
        }
        let mut kube = KubeWorld {
            processes: BTreeMap::new(),
            pod_cidrs: BTreeMap::new(),
            extra_args: BTreeMap::new(),
            wildcard_listen: std::collections::BTreeSet::new(),
            allow_refusals: false,
            runtime: Some(runtime),
            clusters: Vec::with_capacity(n_sites),
            broker,
            broker_client,
            _broker_routes: broker_routes,
            _etcd: etcd,
            broker_ns,
            control_dir,
            world,
        };
        for (i, started) in sites.into_iter().enumerate() {
            let (server, objects) = started?;
            let cluster = kube.build_cluster(i, server, &objects)?;
            kube.clusters.push(cluster);
        }
        Ok(kube)
    }

    /// Builds the world, starts every controller, both candidates and the
    /// route agent of every site, and waits until every site has an active
    /// gateway that has completed a handshake with every other site.
    pub fn start(n_sites: usize) -> Result<KubeWorld, HarnessError> {
        let mut kube = KubeWorld::new(n_sites)?;
        for i in 0..n_sites {
            kube.start_controller(i)?;
            for k in 0..CANDIDATES {
                kube.start_gateway(i, k)?;
            }
            kube.start_agent(i)?;
        }
        kube.wait_ready(READY_TIMEOUT)?;
        Ok(kube)
    }

    /// Registers site `i`'s Nodes with its (installed) API server and writes each
    /// component's kubeconfig.
    fn build_cluster(
        &self,
        i: usize,
        server: KubeApiServer,
        objects: &[Value],
    ) -> Result<ClusterApi, HarnessError> {
        let site = self.site(i);
        let id = site.spec.cluster_id();
        let client = client_for(self.runtime(), server.admin_config(CLUSTER_NAMESPACE))?;
        let nodes: Api<Node> = Api::all(client.clone());
        for node in site_nodes(&site.spec) {
            let name = node.metadata.name.clone().unwrap_or_default();
            self.block_on(nodes.create(&PostParams::default(), &node))
                .map_err(|e| {
                    HarnessError::ControlPlane(format!("register Node {name} in {id}: {e}"))
                })?;
        }
        let pod_template = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .map(|o| o["spec"]["template"].clone())
                .ok_or_else(|| {
                    HarnessError::ControlPlane(format!("the chart rendered no {kind} {name}"))
                })
        };
        let gateway_pod_template = pod_template("DaemonSet", "causeway-gateway")?;
        let confinement = |kind: &str, name: &str| {
            pod_template(kind, name).and_then(|t| Confinement::from_pod_template(&t))
        };
        let confinements = Confinements {
            gateway: Confinement::from_pod_template(&gateway_pod_template)?,
            route_agent: confinement("DaemonSet", "causeway-route-agent")?,
            controller: confinement("Deployment", "causeway-controller")?,
        };

        // Every process in the site reaches its API server at the worker's node address.
        let url = server.url_in_cluster();
        let controller_kubeconfig = site.dir().join("controller.kubeconfig");
        let token = install::account_token(&server, CLUSTER_NAMESPACE, CONTROLLER_ACCOUNT)?;
        server.write_kubeconfig(&controller_kubeconfig, &url, &token, CLUSTER_NAMESPACE)?;
        let gateway_kubeconfig = site.dir().join("gateway.kubeconfig");
        let token = install::account_token(&server, CLUSTER_NAMESPACE, GATEWAY_ACCOUNT)?;
        server.write_kubeconfig(&gateway_kubeconfig, &url, &token, CLUSTER_NAMESPACE)?;
        let agent_kubeconfig = site.dir().join("route-agent.kubeconfig");
        let token = install::account_token(&server, CLUSTER_NAMESPACE, ROUTE_AGENT_ACCOUNT)?;
        server.write_kubeconfig(&agent_kubeconfig, &url, &token, CLUSTER_NAMESPACE)?;

        // As deploy/examples/README.md builds it: the member's token Secret at the broker.
        let broker_kubeconfig = site.dir().join("broker.kubeconfig");
        let token = install::secret_token(
            &self.broker,
            BROKER_NAMESPACE,
            &format!("causeway-member-{id}-token"),
        )?;
        self.broker.write_kubeconfig(
            &broker_kubeconfig,
            &format!("https://{BROKER_API_ADDR}"),
            &token,
            BROKER_NAMESPACE,
        )?;
        // As a Secret volume gives them to a non-root pod: readable by the controller's
        // user, in a directory it may pass through (the gateways' keys there stay 0600).
        if let Some((uid, gid)) = confinements.controller.user {
            let dir = site.dir();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(
                io_context(format!("open {} to the controller", dir.display())),
            )?;
            for path in [&controller_kubeconfig, &broker_kubeconfig] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_context(
                    format!("give {} to the controller's user", path.display()),
                ))?;
            }
        }
        Ok(ClusterApi {
            server,
            client,
            controller_kubeconfig,
            gateway_kubeconfig,
            agent_kubeconfig,
            broker_kubeconfig,
            gateway_pod_template,
            confinements,
        })
    }

    /// The number of sites.
    pub fn n_sites(&self) -> usize {
        self.world.sites().len()
    }

    /// Site `i` (from 0): its namespaces and scratch directory.
    pub fn site(&self, i: usize) -> &Site {
        &self.world.sites()[i]
    }

    /// Site `i`'s names and addresses.
    pub fn spec(&self, i: usize) -> SiteSpec {
        self.site(i).spec
    }

    /// The namespace of site `i`'s gateway candidate `k`.
    pub fn candidate_ns(&self, i: usize, k: usize) -> &Netns {
        match self.site(i).candidate(k) {
            Some(ns) => ns,
            None => panic!("a KubeWorld site has candidates 0..{CANDIDATES}, not {k}"),
        }
    }

    /// Names of every namespace in this world.
    pub fn namespace_names(&self) -> Vec<String> {
        self.world.namespace_names()
    }

    /// The broker API server (stop and restart it to test an outage).
    pub fn broker(&self) -> &KubeApiServer {
        &self.broker
    }

    /// Site `i`'s cluster API server.
    pub fn cluster_api(&self, i: usize) -> &KubeApiServer {
        &self.clusters[i].server
    }

    /// The broker's network namespace.
    pub fn broker_ns(&self) -> &Netns {
        &self.broker_ns
    }

    /// The control plane's scratch directory (PKI, API server logs, audit logs).
    pub fn control_dir(&self) -> &Path {
        self.control_dir.path()
    }

    /// A kubeconfig for an operator who runs `kubectl causeway` from the test's namespace:
    /// one context per site (named after it) as a person bound only to the chart's viewer
    /// roles and Role causeway-operator (bound here, as the chart's README says). Written
    /// to `path`.
    pub fn write_operator_kubeconfig(&self, path: &Path) -> Result<(), HarnessError> {
        self.write_person_kubeconfig(path, install::bind_viewer)
    }

    /// Like [`KubeWorld::write_operator_kubeconfig`] for a person bound to the viewer roles
    /// only (no Role causeway-operator).
    pub fn write_reader_kubeconfig(&self, path: &Path) -> Result<(), HarnessError> {
        self.write_person_kubeconfig(path, install::bind_reader)
    }

    fn write_person_kubeconfig(
        &self,
        path: &Path,
        bind: fn(&KubeApiServer, &str) -> Result<Credentials, HarnessError>,
    ) -> Result<(), HarnessError> {
        let mut contexts = Vec::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            let viewer = bind(&cluster.server, CLUSTER_NAMESPACE)?;
            contexts.push(cluster.server.kubeconfig_context(
                &self.spec(i).cluster_id(),
                &cluster.server.url(),
                &viewer,
                CLUSTER_NAMESPACE,
            ));
        }
        let text = kubeconfig_yaml(&contexts, &self.spec(0).cluster_id());
        std::fs::write(path, text).map_err(io_context(format!("write {}", path.display())))
    }

    /// Backs Service `namespace/service` of site `i` with the site's pod (its network
    /// namespace), at the pod's IP; see [`KubeWorld::set_service_backends`].
    pub fn back_service_with_pod(
        &self,
        i: usize,
        namespace: &str,
        service: &str,
        hostname: Option<&str>,
    ) -> Result<(), HarnessError> {
        let backend = Backend {
            ip: self.spec(i).pod_ip().into(),
            hostname: hostname.map(str::to_string),
            ready: true,
        };
        self.set_service_backends(i, namespace, service, &[backend])
    }

    /// Makes Service `namespace/service` of site `i` (selecting `app=<service>`) backed by
    /// exactly `backends`: Pod objects `<service>-0`, `-1`, ... on the worker node, Running,
    /// at their IPs (a pod whose IP changes is recreated, as a rescheduled StatefulSet pod
    /// is); waits until the real EndpointSlice controller lists them.
    pub fn set_service_backends(
        &self,
        i: usize,
        namespace: &str,
        service: &str,
        backends: &[Backend],
    ) -> Result<(), HarnessError> {
        let client = self.cluster_client(i);
        let node = self.spec(i).worker_node_name();
        self.block_on(super::control_plane::workload::set_backends(
            &client, namespace, service, &node, backends,
        ))
    }

    /// A client of the broker for the test (default namespace [`BROKER_NAMESPACE`]).
    pub fn broker_client(&self) -> Client {
        self.broker_client.clone()
    }

    /// A client of site `i`'s cluster API for the test (default namespace [`CLUSTER_NAMESPACE`]).
    pub fn cluster_client(&self, i: usize) -> Client {
        self.clusters[i].client.clone()
    }

    /// Site `i`'s controller's kubeconfig for its cluster API (the chart's controller
    /// ServiceAccount), as seen from inside the site's namespaces.
    pub fn kubeconfig_path(&self, i: usize) -> &Path {
        &self.clusters[i].controller_kubeconfig
    }

    /// A kubeconfig of site `i` with a token of the chart's gateway ServiceAccount bound to no
    /// pod: it reads what a gateway may read; the candidates run with [`KubeWorld::candidate_kubeconfig_path`].
    pub fn gateway_kubeconfig_path(&self, i: usize) -> &Path {
        &self.clusters[i].gateway_kubeconfig
    }

    /// Site `i`'s route agent kubeconfig (the chart's `causeway-route-agent` account).
    pub fn agent_kubeconfig_path(&self, i: usize) -> &Path {
        &self.clusters[i].agent_kubeconfig
    }

    /// Site `i`'s kubeconfig for the broker, as seen from inside its worker's namespace.
    pub fn broker_kubeconfig_path(&self, i: usize) -> &Path {
        &self.clusters[i].broker_kubeconfig
    }

    /// Runs `future` on the world's runtime, for tests without one of their own.
    ///
    /// Panics when called from inside an async context; there, `.await` instead.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// A handle to the runtime the world's clients run on.
    pub fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.runtime().handle().clone()
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        match &self.runtime {
            Some(rt) => rt,
            None => unreachable!("the runtime is only taken in Drop"),
        }
    }

    // ---- processes ----

    /// Starts `component` in its namespace, stopping an earlier instance first.
    pub fn start_process(&mut self, component: Component) -> Result<(), HarnessError> {
        // A gateway's token is bound to its Pod, as the kubelet's is, so the Pod goes first.
        if let Component::Gateway(i, k) = component {
            self.ensure_gateway_pod(i, k)?;
            self.ensure_candidate_kubeconfig(i, k)?;
        }
        let (mut cmd, log) = self.command(component)?;
        // An earlier instance goes first: two gateways of one node must not overlap.
        if let Some(mut old) = self.processes.remove(&component) {
            old.terminate_and_wait(STOP_GRACE)
                .map_err(io_context(format!("stop the earlier {component}")))?;
        }
        let ns = self.namespace_of(component)?;
        let child = ns
            .spawn_logged(&mut cmd, &log)
            .map_err(io_context(format!("start {component}")))?;
        self.processes.insert(component, child);
        Ok(())
    }

    /// Writes (once) candidate `k` of site `i`'s kubeconfig: a token of the chart's gateway
    /// ServiceAccount bound to the candidate's Pod.
    fn ensure_candidate_kubeconfig(&self, i: usize, k: usize) -> Result<(), HarnessError> {
        let path = self.candidate_kubeconfig_path(i, k);
        if path.exists() {
            return Ok(());
        }
        let server = &self.clusters[i].server;
        let pod = gateway_pod_name(&self.spec(i).candidate(k).node_name());
        let token = install::pod_token(server, CLUSTER_NAMESPACE, GATEWAY_ACCOUNT, &pod)?;
        server.write_kubeconfig(&path, &server.url_in_cluster(), &token, CLUSTER_NAMESPACE)
    }

    /// The kubeconfig site `i`'s candidate `k` runs with: a token bound to its Pod (written
    /// when the candidate first starts).
    pub fn candidate_kubeconfig_path(&self, i: usize, k: usize) -> PathBuf {
        self.site(i).dir().join(format!("gateway-{k}.kubeconfig"))
    }

    /// Makes the Pod object of site `i`'s candidate `k` exist and say it runs, as the
    /// DaemonSet controller and the kubelet would: made from the chart's pod template, bound
    /// to the node, hostNetwork (its IPs are the node's), Running and Ready.
    fn ensure_gateway_pod(&self, i: usize, k: usize) -> Result<(), HarnessError> {
        let c = self.spec(i).candidate(k);
        let (pod, status) = gateway_pod(
            &self.clusters[i].gateway_pod_template,
            &c.node_name(),
            c.node_ip(),
            c.node_ip6(),
        )?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.cluster_client(i), CLUSTER_NAMESPACE);
        let fail = |e: ::kube::Error| {
            HarnessError::ControlPlane(format!(
                "Pod {CLUSTER_NAMESPACE}/{name} in {}: {e}",
                self.spec(i).cluster_id()
            ))
        };
        match self.block_on(pods.create(&PostParams::default(), &pod)) {
            Ok(_) => {}
            Err(::kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(fail(e)),
        }
        let patch = json!({"status": status});
        self.block_on(pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map(drop)
            .map_err(fail)
    }

    /// Stops `component` with SIGTERM (SIGKILL after [`STOP_GRACE`]); its exit status, or `None` if it was not running.
    pub fn stop_process(
        &mut self,
        component: Component,
    ) -> Result<Option<ExitStatus>, HarnessError> {
        match self.processes.remove(&component) {
            Some(mut child) => child
                .terminate_and_wait(STOP_GRACE)
                .map(Some)
                .map_err(io_context(format!("stop {component}"))),
            None => Ok(None),
        }
    }

    /// Kills `component` with SIGKILL, as a crash or a lost node would end it.
    pub fn kill_process(
        &mut self,
        component: Component,
    ) -> Result<Option<ExitStatus>, HarnessError> {
        match self.processes.remove(&component) {
            Some(mut child) => child
                .kill9()
                .map(Some)
                .map_err(io_context(format!("kill {component}"))),
            None => Ok(None),
        }
    }

    /// Stops `component` (SIGTERM) if it runs, then starts it again with the same flags.
    pub fn restart_process(&mut self, component: Component) -> Result<(), HarnessError> {
        self.stop_process(component)?;
        self.start_process(component)
    }

    /// Takes `component` out of the world, to stop it in a test's own way.
    pub fn take_process(&mut self, component: Component) -> Option<ChildGuard> {
        self.processes.remove(&component)
    }

    /// `component`'s process, if the world holds one.
    pub fn process(&mut self, component: Component) -> Option<&mut ChildGuard> {
        self.processes.get_mut(&component)
    }

    /// Makes site `i`'s controller, when next started, publish `cidrs` as its pod CIDRs;
    /// none: without `--pod-cidrs`, so it takes the aggregate of its Nodes' podCIDRs.
    pub fn set_pod_cidrs(&mut self, i: usize, cidrs: Vec<IpNet>) {
        self.pod_cidrs.insert(i, cidrs);
    }

    /// Appends `args` to `component`'s command line from its next start on (flags the
    /// harness does not pass itself, e.g. the controller's DNS address).
    pub fn set_extra_args(&mut self, component: Component, args: &[&str]) {
        self.extra_args
            .insert(component, args.iter().map(|a| a.to_string()).collect());
    }

    /// Makes site `i`'s candidate `k`, from its next start on, listen on `0.0.0.0:51820`
    /// (with its underlay address as `--public-endpoint`), so that address may change.
    pub fn set_wildcard_listen(&mut self, i: usize, k: usize) {
        self.wildcard_listen.insert(Component::Gateway(i, k));
    }

    /// Moves site `i`'s candidate `k`'s underlay (WAN) address from `from` to `to` inside its
    /// namespace, as a node whose public address changed. `from` goes first: removing a
    /// subnet's primary address would take a secondary `to` with it.
    pub fn move_underlay(
        &self,
        i: usize,
        k: usize,
        from: Ipv4Addr,
        to: Ipv4Addr,
    ) -> Result<(), HarnessError> {
        let ns = self.namespace_of(Component::Gateway(i, k))?;
        let dev = super::topology::GATEWAY_WAN_IF;
        ns.ip(["addr", "del", &format!("{from}/24"), "dev", dev])
            .and_then(|_| ns.ip(["addr", "add", &format!("{to}/24"), "dev", dev]))
            .map(drop)
            .map_err(io_context(format!(
                "move {} from {from} to {to}",
                ns.name()
            )))
    }

    /// Rotates site `i`'s candidate `k`'s WireGuard key: writes a fresh private key into its
    /// key Secret (as an operator would); returns the new public key, base64.
    pub fn rotate_gateway_key(&self, i: usize, k: usize) -> Result<String, HarnessError> {
        use k8s_openapi::api::core::v1::Secret;
        let node = self.spec(i).candidate(k).node_name();
        let name = names::gateway_key_secret(&node);
        let namespace = names::key_namespace(CLUSTER_NAMESPACE);
        let secrets: ::kube::Api<Secret> =
            ::kube::Api::namespaced(self.cluster_client(i), &namespace);
        let fail = |reason: String| HarnessError::Http {
            url: format!("Secret {namespace}/{name}"),
            reason,
        };
        let mut secret = self
            .block_on(secrets.get(&name))
            .map_err(|e| fail(e.to_string()))?;
        let key = causeway_datapath::keys::generate_private_key();
        let public = causeway_wire::keys::format_key(&causeway_datapath::keys::public_key(&key));
        secret.data = Some(BTreeMap::from([(
            names::PRIVATE_KEY_FIELD.to_string(),
            k8s_openapi::ByteString(causeway_wire::keys::format_key(&key).into_bytes()),
        )]));
        self.block_on(secrets.replace(&name, &Default::default(), &secret))
            .map_err(|e| fail(e.to_string()))?;
        Ok(public)
    }

    /// Starts all of site `i`: its controller, every gateway candidate and the route agent.
    pub fn start_site(&mut self, i: usize) -> Result<(), HarnessError> {
        self.start_controller(i)?;
        for k in 0..CANDIDATES {
            self.start_gateway(i, k)?;
        }
        self.start_agent(i)
    }

    /// Starts site `i`'s controller in its worker's namespace.
    pub fn start_controller(&mut self, i: usize) -> Result<(), HarnessError> {
        self.start_process(Component::Controller(i))
    }

    /// Stops site `i`'s controller with SIGTERM.
    pub fn stop_controller(&mut self, i: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.stop_process(Component::Controller(i))
    }

    /// Kills site `i`'s controller with SIGKILL.
    pub fn kill_controller(&mut self, i: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.kill_process(Component::Controller(i))
    }

    /// Restarts site `i`'s controller.
    pub fn restart_controller(&mut self, i: usize) -> Result<(), HarnessError> {
        self.restart_process(Component::Controller(i))
    }

    /// Takes site `i`'s controller out of the world.
    pub fn take_controller(&mut self, i: usize) -> Option<ChildGuard> {
        self.take_process(Component::Controller(i))
    }

    /// Starts site `i`'s gateway candidate `k` in its namespace.
    pub fn start_gateway(&mut self, i: usize, k: usize) -> Result<(), HarnessError> {
        self.start_process(Component::Gateway(i, k))
    }

    /// Stops site `i`'s gateway candidate `k` with SIGTERM.
    pub fn stop_gateway(&mut self, i: usize, k: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.stop_process(Component::Gateway(i, k))
    }

    /// Kills site `i`'s gateway candidate `k` with SIGKILL.
    pub fn kill_gateway(&mut self, i: usize, k: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.kill_process(Component::Gateway(i, k))
    }

    /// Restarts site `i`'s gateway candidate `k`.
    pub fn restart_gateway(&mut self, i: usize, k: usize) -> Result<(), HarnessError> {
        self.restart_process(Component::Gateway(i, k))
    }

    /// Takes site `i`'s gateway candidate `k` out of the world.
    pub fn take_gateway(&mut self, i: usize, k: usize) -> Option<ChildGuard> {
        self.take_process(Component::Gateway(i, k))
    }

    /// Starts site `i`'s route agent in its worker's namespace.
    pub fn start_agent(&mut self, i: usize) -> Result<(), HarnessError> {
        self.start_process(Component::RouteAgent(i))
    }

    /// Stops site `i`'s route agent with SIGTERM.
    pub fn stop_agent(&mut self, i: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.stop_process(Component::RouteAgent(i))
    }

    /// Kills site `i`'s route agent with SIGKILL.
    pub fn kill_agent(&mut self, i: usize) -> Result<Option<ExitStatus>, HarnessError> {
        self.kill_process(Component::RouteAgent(i))
    }

    /// Restarts site `i`'s route agent.
    pub fn restart_agent(&mut self, i: usize) -> Result<(), HarnessError> {
        self.restart_process(Component::RouteAgent(i))
    }

    /// Takes site `i`'s route agent out of the world.
    pub fn take_agent(&mut self, i: usize) -> Option<ChildGuard> {
        self.take_process(Component::RouteAgent(i))
    }

    /// The namespace `component` runs in.
    pub fn namespace_of(&self, component: Component) -> Result<&Netns, HarnessError> {
        let i = component.site();
        let site = self
            .world
            .sites()
            .get(i)
            .ok_or_else(|| HarnessError::Topology(format!("no site {i} for {component:?}")))?;
        match component {
            Component::Controller(_) | Component::RouteAgent(_) => Ok(&site.worker),
            Component::Gateway(_, k) => site.candidate(k).ok_or_else(|| {
                HarnessError::Topology(format!(
                    "{} has gateway candidates 0..{CANDIDATES}, not {k}",
                    site.spec.cluster_id()
                ))
            }),
        }
    }

    /// Where `component`'s stdout and stderr go, in its site's scratch directory.
    pub fn log_path(&self, component: Component) -> Result<PathBuf, HarnessError> {
        let site = self.site_checked(component.site())?;
        let name = match component {
            Component::Controller(_) => "controller.log".to_string(),
            Component::Gateway(_, k) => {
                format!("gateway-{}.log", site.spec.candidate(k).node_name())
            }
            Component::RouteAgent(_) => "route-agent.log".to_string(),
        };
        Ok(site.dir().join(name))
    }

    /// The command line `component` is started with, and its log file.
    fn command(&self, component: Component) -> Result<(Command, PathBuf), HarnessError> {
        // Checks the indexes, so the spec lookups below cannot panic.
        self.namespace_of(component)?;
        let i = component.site();
        let spec = self.spec(i);
        let api = &self.clusters[i];
        let mut cmd = match component {
            Component::Controller(_) => {
                let mut cmd = Command::new(find_workspace_binary(CONTROLLER_BINARY)?);
                cmd.env("RUST_LOG", "info")
                    .arg("--cluster")
                    .arg(spec.cluster_id())
                    .arg("--namespace")
                    .arg(CLUSTER_NAMESPACE)
                    .arg("--kubeconfig")
                    .arg(&api.controller_kubeconfig)
                    .arg("--broker-kubeconfig")
                    .arg(&api.broker_kubeconfig)
                    .arg("--broker-namespace")
                    .arg(BROKER_NAMESPACE)
                    .args(
                        match self
                            .pod_cidrs
                            .get(&i)
                            .map_or(spec.pod_cidrs(), Clone::clone)
                        {
                            // None given: the chart's default, the aggregate of the Nodes' podCIDRs.
                            cidrs if cidrs.is_empty() => Vec::new(),
                            cidrs => vec!["--pod-cidrs".to_string(), join(&cidrs)],
                        },
                    )
                    .arg("--service-cidrs")
                    .arg(join(&spec.service_cidrs()))
                    .arg("--lease-seconds")
                    .arg(CONTROLLER_LEASE_SECONDS.to_string())
                    .arg("--identity")
                    .arg(format!("controller-{}", spec.letter()))
                    .arg("--resync-seconds")
                    .arg(CONTROLLER_RESYNC_SECONDS.to_string());
                cmd
            }
            Component::Gateway(_, k) => {
                let c = spec.candidate(k);
                let mut cmd = gateway_command()?;
                cmd.arg("kubernetes")
                    .arg("--cluster")
                    .arg(spec.cluster_id())
                    .arg("--node-name")
                    .arg(c.node_name())
                    .arg("--namespace")
                    .arg(CLUSTER_NAMESPACE)
                    .arg("--kubeconfig")
                    .arg(self.candidate_kubeconfig_path(i, k))
                    .arg("--role")
                    .arg("gateway")
                    .arg("--listen")
                    .arg(if self.wildcard_listen.contains(&component) {
                        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), GATEWAY_PORT).to_string()
                    } else {
                        c.public_endpoint(GATEWAY_PORT).to_string()
                    })
                    .arg("--public-endpoint")
                    .arg(c.public_endpoint(GATEWAY_PORT).to_string())
                    .arg("--private-ip")
                    .arg(c.node_ip().to_string())
                    .arg("--private-ip")
                    .arg(c.node_ip6().to_string())
                    .arg("--health-check-ip")
                    .arg(c.health_check_ip().to_string())
                    .arg("--lease-seconds")
                    .arg(GATEWAY_LEASE_SECONDS.to_string())
                    .arg("--metrics-addr")
                    .arg(GATEWAY_METRICS_BIND.to_string())
                    .arg("--dns-server")
                    .arg(
                        SocketAddr::new(spec.worker_node_ip().into(), CONTROLLER_DNS_PORT)
                            .to_string(),
                    );
                cmd
            }
            Component::RouteAgent(_) => {
                let mut cmd = gateway_command()?;
                cmd.arg("kubernetes")
                    .arg("--cluster")
                    .arg(spec.cluster_id())
                    .arg("--node-name")
                    .arg(spec.worker_node_name())
                    .arg("--namespace")
                    .arg(CLUSTER_NAMESPACE)
                    .arg("--kubeconfig")
                    .arg(&api.agent_kubeconfig)
                    .arg("--role")
                    .arg("route-agent")
                    .arg("--metrics-addr")
                    .arg(AGENT_METRICS_ADDR.to_string());
                cmd
            }
        };
        if let Some(extra) = self.extra_args.get(&component) {
            cmd.args(extra);
        }
        // The flags say everything; the test's own environment must not
        // (in-cluster detection, a developer's kubeconfig).
        for var in [
            "KUBECONFIG",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "NODE_NAME",
            "POD_NAME",
            "POD_NAMESPACE",
            "CAUSEWAY_KEY_NAMESPACE",
        ] {
            cmd.env_remove(var);
        }
        // Every process runs as the chart runs it: only the capabilities its pod adds,
        // no way to gain more, a read-only root.
        let cmd = match component {
            Component::Gateway(..) => api.confinements.gateway.wrap(&cmd),
            Component::RouteAgent(_) => api.confinements.route_agent.wrap(&cmd),
            Component::Controller(_) => api.confinements.controller.wrap(&cmd),
        };
        Ok((cmd, self.log_path(component)?))
    }

    fn site_checked(&self, i: usize) -> Result<&Site, HarnessError> {
        self.world.sites().get(i).ok_or_else(|| {
            HarnessError::Topology(format!("no site {i} in a world of {}", self.n_sites()))
        })
    }

    // ---- queries ----

    /// The holder of site `i`'s gateway Lease (a node name), read from its API server;
    /// an error while that server does not answer, for waits to retry.
    pub fn try_lease_holder(&self, i: usize) -> Result<Option<String>, HarnessError> {
        let leases: Api<Lease> = Api::namespaced(self.cluster_client(i), CLUSTER_NAMESPACE);
        let name = names::gateway_lease(&self.spec(i).cluster_id());
        let lease = self.block_on(leases.get_opt(&name)).map_err(|e| {
            HarnessError::ControlPlane(format!(
                "read Lease {name} from {}: {e}",
                self.spec(i).cluster_id()
            ))
        })?;
        Ok(lease.and_then(|l| l.spec?.holder_identity))
    }

    /// [`KubeWorld::try_lease_holder`] for assertions: panics if the API server does
    /// not answer, so an outage never reads as "no holder".
    pub fn lease_holder(&self, i: usize) -> Option<String> {
        self.try_lease_holder(i).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Which of site `i`'s candidates holds the gateway Lease, if one does; an error
    /// while its API server does not answer.
    pub fn try_active_gateway(&self, i: usize) -> Result<Option<usize>, HarnessError> {
        Ok(self
            .try_lease_holder(i)?
            .and_then(|holder| self.candidate_named(i, &holder)))
    }

    /// Which of site `i`'s candidates runs on node `node`, if one does.
    fn candidate_named(&self, i: usize, node: &str) -> Option<usize> {
        let spec = self.spec(i);
        (0..CANDIDATES).find(|&k| spec.candidate(k).node_name() == node)
    }

    /// [`KubeWorld::try_active_gateway`] for assertions: panics if the API server does
    /// not answer.
    pub fn active_gateway(&self, i: usize) -> Option<usize> {
        self.try_active_gateway(i).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Site `i`'s gateway candidate `k`'s metrics text.
    pub fn gateway_metrics(&self, i: usize, k: usize) -> Result<String, HarnessError> {
        fetch_metrics(self.candidate_ns(i, k), GATEWAY_METRICS_ADDR)
    }

    /// Does for site `i` what the chart's causeway-dns Service does through kube-proxy:
    /// DNS to port 53 of the worker (where pods' resolvers point, and `resolv.conf` has no
    /// port) reaches the controller's DNS server on [`CONTROLLER_DNS_PORT`].
    pub fn publish_dns_service(&self, i: usize) -> Result<(), HarnessError> {
        let worker = &self.site(i).worker;
        let rules = worker.log_dir().join("dns-service.nft");
        let port = CONTROLLER_DNS_PORT;
        std::fs::write(
            &rules,
            format!(
                "table inet causeway_dns_service {{\n\
                 \tchain prerouting {{\n\
                 \t\ttype nat hook prerouting priority dstnat;\n\
                 \t\tudp dport 53 redirect to :{port}\n\
                 \t\ttcp dport 53 redirect to :{port}\n\
                 \t}}\n\
                 }}\n"
            ),
        )
        .map_err(io_context(format!("write {}", rules.display())))?;
        worker
            .exec_ok("nft", [std::ffi::OsStr::new("-f"), rules.as_os_str()])
            .map_err(io_context(format!(
                "{}: the causeway-dns Service's port mapping (nft)",
                self.spec(i).cluster_id()
            )))?;
        Ok(())
    }

    /// Site `i`'s route agent's metrics text.
    pub fn agent_metrics(&self, i: usize) -> Result<String, HarnessError> {
        fetch_metrics(&self.site(i).worker, AGENT_METRICS_ADDR)
    }

    /// Site `i`'s active gateway's sample `name{labels}`; an error (for waits to retry)
    /// while there is no active gateway or its API server does not answer, and when the
    /// gateway does not export the sample.
    pub fn active_gateway_metric(
        &self,
        i: usize,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<f64, String> {
        let k = self
            .try_active_gateway(i)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} has no active gateway", self.spec(i).cluster_id()))?;
        let text = self.gateway_metrics(i, k).map_err(|e| e.to_string())?;
        required_metric(&text, name, labels).map_err(|e| format!("candidate {k}: {e}"))
    }

    /// Site `i`'s active gateway's `causeway_peer_handshakes_total` towards site `j`.
    pub fn handshakes(&self, i: usize, j: usize) -> Result<f64, String> {
        let peer = self.spec(j).cluster_id();
        self.active_gateway_metric(
            i,
            "causeway_peer_handshakes_total",
            &[("remote_cluster", &peer)],
        )
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (component, child) in &self.processes {
            out += &format!(
                "--- {component} (pid {}, {}):\n{}\n",
                child.pid(),
                child.log_path().display(),
                child.log_tail(LOG_TAIL)
            );
        }
        out
    }

    /// The whole log of `component` as far as it was written, over every restart.
    ///
    /// Panics if the log cannot be read: an unread log must not pass a check for
    /// what is absent from it.
    pub fn full_log(&self, component: Component) -> String {
        String::from_utf8_lossy(&self.full_log_bytes(component)).into_owned()
    }

    /// [`KubeWorld::full_log`] as written, byte for byte.
    pub fn full_log_bytes(&self, component: Component) -> Vec<u8> {
        let path = self
            .log_path(component)
            .unwrap_or_else(|e| panic!("the log of {component}: {e}"));
        read_log(&path)
    }

    // ---- waits ----

    /// Lets RBAC refuse Causeway's requests without failing the test (one about a refusal).
    pub fn allow_refusals(&mut self) {
        self.allow_refusals = true;
    }

    /// Fails if an API server refused (RBAC, 403) a request of a Causeway component since
    /// the last look: the chart grants every component all it needs.
    pub fn check_refusals(&mut self) -> Result<(), HarnessError> {
        let mut refused = Vec::new();
        for server in std::iter::once(&self.broker).chain(self.clusters.iter().map(|c| &c.server)) {
            refused.extend(
                server
                    .new_refusals()
                    .into_iter()
                    .map(|r| format!("  {}: {r}", server.name())),
            );
        }
        match refused.is_empty() || self.allow_refusals {
            true => Ok(()),
            false => Err(HarnessError::ControlPlane(format!(
                "requests of Causeway's components refused by RBAC under the chart's rules:\n{}",
                refused.join("\n")
            ))),
        }
    }

    /// Fails if a process the world holds has exited, naming it and quoting its log, or if
    /// an API server refused one of them ([`KubeWorld::check_refusals`]).
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        self.check_refusals()?;
        for (component, child) in &mut self.processes {
            if let Some(status) = child
                .try_status()
                .map_err(io_context(format!("wait for {component}")))?
            {
                return Err(HarnessError::Exited {
                    process: component.to_string(),
                    status: status.to_string(),
                    log_tail: child.log_tail(LOG_TAIL),
                });
            }
        }
        Ok(())
    }

    /// Waits until site `i` has an active gateway; its candidate number.
    pub fn wait_active_gateway(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<usize, HarnessError> {
        let what = format!(
            "{} to have an active gateway (a holder of Lease {})",
            self.spec(i).cluster_id(),
            names::gateway_lease(&self.spec(i).cluster_id())
        );
        self.wait_for(&what, timeout, |world| {
            match world.try_lease_holder(i).map_err(|e| e.to_string())? {
                None => Err("no Lease holder".to_string()),
                Some(holder) => world
                    .candidate_named(i, &holder)
                    .ok_or_else(|| format!("the Lease is held by {holder:?}, no candidate")),
            }
        })
    }

    /// Waits until every site's active gateway has completed a handshake with every other site.
    pub fn wait_handshakes(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let n = self.n_sites();
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                let what = format!(
                    "{}'s active gateway to complete a handshake with {}",
                    self.spec(i).cluster_id(),
                    self.spec(j).cluster_id()
                );
                self.wait_for(&what, timeout, |world| match world.handshakes(i, j)? {
                    n if n >= 1.0 => Ok(()),
                    n => Err(format!("handshakes = {n}")),
                })?;
            }
        }
        Ok(())
    }

    /// Waits for an active gateway in every site, then for every handshake, then for the
    /// control plane to agree and every gateway to have reported its role, each stage for
    /// at most `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        for i in 0..self.n_sites() {
            self.wait_active_gateway(i, timeout)?;
        }
        self.wait_handshakes(timeout)?;
        self.wait_converged(timeout)?;
        self.wait_roles_reported(timeout)
    }

    /// Waits until every running candidate's Gateway status reports its role (active for
    /// the Lease holder, passive for the others), and the active one every other site
    /// connected: until then a gateway still has a write to make, which a test counting
    /// writes would see.
    pub fn wait_roles_reported(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        use causeway_crds::{Gateway, GatewayRole};
        for i in 0..self.n_sites() {
            let running: Vec<usize> = (0..CANDIDATES)
                .filter(|&k| self.processes.contains_key(&Component::Gateway(i, k)))
                .collect();
            let what = format!(
                "{}'s running candidates {running:?} to report their roles in their Gateway status",
                self.spec(i).cluster_id()
            );
            self.wait_for(&what, timeout, |world| {
                let holder = world.lease_holder(i).ok_or("no Lease holder")?;
                let api: Api<Gateway> = Api::namespaced(world.cluster_client(i), CLUSTER_NAMESPACE);
                for &k in &running {
                    let node = world.spec(i).candidate(k).node_name();
                    let gateway = world
                        .block_on(api.get_opt(&node))
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no Gateway {node}"))?;
                    let want = match node == holder {
                        true => GatewayRole::Active,
                        false => GatewayRole::Passive,
                    };
                    let status = gateway.status.unwrap_or_default();
                    if status.role != Some(want) {
                        return Err(format!("{node} reports {:?}, holder {holder}", status.role));
                    }
                    if want == GatewayRole::Active {
                        let connected = |j: usize| {
                            status.connections.iter().any(|c| {
                                c.cluster_id == world.spec(j).cluster_id()
                                    && c.state == causeway_crds::ConnectionState::Connected
                            })
                        };
                        if let Some(j) = (0..world.n_sites()).find(|&j| j != i && !connected(j)) {
                            return Err(format!(
                                "{node} does not report connected to {}: {:?}",
                                world.spec(j).cluster_id(),
                                status.connections
                            ));
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Waits until every site's ClusterEndpoint lists its active gateway first, in its own
    /// cluster and in every other cluster's mirror. Tunnels come up before that (a remote
    /// gateway peers with every candidate), so a test that reads the objects, or counts
    /// their writes, waits for this.
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        use causeway_crds::ClusterEndpoint;
        let n = self.n_sites();
        for i in 0..n {
            let id = self.spec(i).cluster_id();
            for j in 0..n {
                let what = format!(
                    "{}'s copy of ClusterEndpoint {id} to list {id}'s active gateway first",
                    self.spec(j).cluster_id()
                );
                self.wait_for(&what, timeout, |world| {
                    let active = world
                        .lease_holder(i)
                        .ok_or_else(|| format!("{id} has no Lease holder"))?;
                    let api: ::kube::Api<ClusterEndpoint> =
                        ::kube::Api::namespaced(world.cluster_client(j), CLUSTER_NAMESPACE);
                    let object = world
                        .block_on(api.get_opt(&id))
                        .map_err(|e| e.to_string())?
                        .ok_or("not there yet")?;
                    match object.spec.gateways.first() {
                        Some(g) if g.node_name == active => Ok(()),
                        first => Err(format!(
                            "first gateway {:?}, active {active}",
                            first.map(|g| &g.node_name)
                        )),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Polls `check` until it succeeds or `timeout` passes, failing at once
    /// when a process exits; either failure carries every process's log tail.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&KubeWorld) -> Result<T, String>,
    ) -> Result<T, HarnessError> {
        // Ok(Err(..)) ends the wait early: a process died, waiting longer is pointless.
        let outcome = wait_until_ok(what, timeout, || {
            if let Err(e) = self.check_running() {
                return Ok(Err(e));
            }
            check(self).map(Ok)
        });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(exited)) => Err(exited),
            Err(mut e) => {
                e.last_observation = Some(with_logs(e.last_observation.take(), &self.logs()));
                Err(HarnessError::Wait(e))
            }
        }
    }
}

impl Drop for KubeWorld {
    fn drop(&mut self) {
        // Every process is asked to stop at once, then each is waited for (and
        // killed if it lingers), so teardown takes one grace period, not one each.
        for child in self.processes.values_mut() {
            let _ = child.terminate();
        }
        self.processes.clear();
        // A runtime may not be dropped in an async context (tests may be
        // async); shutting it down in the background is allowed anywhere.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Then the fields: API servers (and their listeners inside the
        // namespaces) stop, then the namespaces go.
    }
}

impl fmt::Debug for KubeWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeWorld")
            .field("sites", &self.n_sites())
            .field("processes", &self.processes.keys().collect::<Vec<_>>())
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

fn with_logs(observation: Option<String>, logs: &str) -> String {
    let observation = observation.unwrap_or_else(|| "none".into());
    match logs.is_empty() {
        true => format!("{observation} (no processes running)"),
        false => format!("{observation}\n{logs}"),
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The Pod the chart's gateway DaemonSet would run on candidate node `node`, made from its
/// pod `template`, and the status the kubelet would give it (hostNetwork: the pod's IPs are
/// the node's).
pub fn gateway_pod(
    template: &Value,
    node: &str,
    node_ip: Ipv4Addr,
    node_ip6: std::net::Ipv6Addr,
) -> Result<(Pod, Value), HarnessError> {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    pod["metadata"]["name"] = json!(gateway_pod_name(node));
    pod["metadata"]["namespace"] = json!(CLUSTER_NAMESPACE);
    pod["spec"]["nodeName"] = json!(node);
    let pod: Pod = serde_json::from_value(pod).map_err(|e| {
        HarnessError::ControlPlane(format!(
            "the chart's gateway pod template is not a Pod: {e}"
        ))
    })?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    let status = json!({
        "phase": "Running",
        "podIP": node_ip.to_string(),
        "podIPs": [{"ip": node_ip.to_string()}, {"ip": node_ip6.to_string()}],
        "hostIP": node_ip.to_string(),
        "hostIPs": [{"ip": node_ip.to_string()}, {"ip": node_ip6.to_string()}],
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
    });
    Ok((pod, status))
}

/// A scoped thread's result, its panic carried on.
fn joined<T>(result: std::thread::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn client_for(
    runtime: &tokio::runtime::Runtime,
    config: ::kube::Config,
) -> Result<Client, HarnessError> {
    let url = config.cluster_url.to_string();
    // The client's background task is spawned on the runtime entered here.
    let _entered = runtime.enter();
    Client::try_from(config).map_err(|e| HarnessError::Http {
        url,
        reason: format!("cannot build a kube client: {e}"),
    })
}

/// The Nodes of a site as Kubernetes would show them: both candidates
/// labelled as gateways, the worker not, each with its pod CIDRs and addresses.
pub fn site_nodes(spec: &SiteSpec) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..CANDIDATES)
        .map(|k| {
            let c = spec.candidate(k);
            node(
                &c.node_name(),
                true,
                &c.node_pod_cidrs(),
                [c.node_ip().into(), c.node_ip6().into()],
            )
        })
        .collect();
    nodes.push(node(
        &spec.worker_node_name(),
        false,
        &spec.worker_pod_subnets(),
        [spec.worker_node_ip().into(), spec.worker_node_ip6().into()],
    ));
    nodes
}

fn node(name: &str, gateway: bool, pod_cidrs: &[IpNet], ips: [IpAddr; 2]) -> Node {
    let cidrs: Vec<String> = pod_cidrs.iter().map(ToString::to_string).collect();
    let mut addresses: Vec<NodeAddress> = ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: name.to_string(),
    });
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [("kubernetes.io/hostname".to_string(), name.to_string())]
                    .into_iter()
                    .chain(gateway.then(|| (names::GATEWAY_NODE_LABEL.to_string(), "true".into())))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: cidrs.first().cloned(),
            pod_cidrs: Some(cidrs),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(addresses),
            ..NodeStatus::default()
        }),
    }
}

/// Runs `f` with a client built from `kubeconfig`, on a thread inside `ns`: what a process
/// of that node with that kubeconfig would get.
pub fn in_namespace<T, F>(ns: &Netns, kubeconfig: &Path, f: impl FnOnce(Client) -> F + Send) -> T
where
    F: Future<Output = T>,
    T: Send,
{
    let path = kubeconfig.to_path_buf();
    block_on_in(ns, move || async move {
        let kubeconfig = ::kube::config::Kubeconfig::read_from(&path).expect("read the kubeconfig");
        let options = ::kube::config::KubeConfigOptions::default();
        let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("a config from the kubeconfig");
        f(Client::try_from(config).expect("a client")).await
    })
}

/// Runs the future `f` makes on a runtime of its own, on a thread inside `ns`, so the
/// connections it opens are opened there.
pub fn block_on_in<T, F>(ns: &Netns, f: impl FnOnce() -> F + Send) -> T
where
    F: Future<Output = T>,
    T: Send,
{
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_the_gateway_label_pod_cidrs_and_addresses() {
        let b = SiteSpec::new(2).unwrap();
        let nodes = site_nodes(&b);
        let name = |n: &Node| n.metadata.name.clone().unwrap();
        assert_eq!(
            nodes.iter().map(name).collect::<Vec<_>>(),
            ["site-b-gw", "site-b-gw2", "site-b-worker"]
        );
        let labelled = |n: &Node| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(names::GATEWAY_NODE_LABEL))
                .map(String::as_str)
                == Some("true")
        };
        assert_eq!(
            nodes.iter().map(labelled).collect::<Vec<_>>(),
            [true, true, false]
        );
        let cidrs = |n: &Node| n.spec.as_ref().unwrap().pod_cidrs.clone().unwrap();
        assert_eq!(cidrs(&nodes[0]), ["10.2.0.0/24", "fd00:2::/64"]);
        assert_eq!(cidrs(&nodes[1]), ["10.2.2.0/24", "fd00:2:0:2::/64"]);
        assert_eq!(cidrs(&nodes[2]), ["10.2.1.0/24", "fd00:2:0:1::/64"]);
        let internal = |n: &Node| {
            n.status
                .as_ref()
                .unwrap()
                .addresses
                .as_ref()
                .unwrap()
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(internal(&nodes[1]), ["198.19.2.3", "fd00:ffff:2::3"]);
        assert_eq!(internal(&nodes[2]), ["198.19.2.2", "fd00:ffff:2::2"]);
    }

    #[test]
    fn components_name_their_site_and_node() {
        assert_eq!(Component::Controller(0).to_string(), "site-a controller");
        assert_eq!(Component::Gateway(1, 1).to_string(), "gateway site-b-gw2");
        assert_eq!(Component::RouteAgent(2).to_string(), "site-c route agent");
    }
}
