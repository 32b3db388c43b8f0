//! A clusterset in Kubernetes mode: per site two gateway candidates, a worker
//! with a pod, an in-memory cluster API server, and one broker API server for
//! all sites; the controller, gateways and route agents find each other only
//! through those APIs (see `docs/kubernetes.md`).
//!
//! Every API server listens on a loopback port of the test's own namespace
//! (for the test's clients; nothing there is changed) and on a fixed loopback
//! address inside each namespace where a process that uses it runs:
//!
//! ```text
//!   cluster API of site X   127.0.0.1:6443 in site-X-gw, site-X-gw2 and the worker
//!   broker API              127.0.0.1:6444 in every site's worker (the controller's home)
//! ```
//!
//! Every gateway candidate also has a Pod object, as its DaemonSet would make it
//! (the chart's labels, `spec.nodeName`, hostNetwork so `status.podIP` is the node's
//! address, container port `metrics`), and serves metrics on the node address too, so
//! the API servers' pod proxy (dialling from the site's worker, on the node network)
//! reaches it as `kubectl causeway verify` does.
//!
//! The binaries are found by name next to the test executable, so they must
//! have been built (`cargo build --bins`) before a world's processes start.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use ::kube::Client;
use causeway_crds::names;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodIP,
    PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::mesh::metric;
use super::netns::Netns;
use super::process::ChildGuard;
use super::topology::{
    fetch_metrics, find_workspace_binary, gateway_command, Clusterset, Site, SiteSpec,
    GATEWAY_PORT, METRICS_ADDR,
};
use super::wait::wait_until_ok;
use super::{io_context, HarnessError};
use crate::apiserver::ApiServer;

/// Name of the controller binary built by this workspace.
pub const CONTROLLER_BINARY: &str = "causeway-controller";
/// The namespace of Causeway's objects in every cluster API.
pub const CLUSTER_NAMESPACE: &str = "causeway";
/// The namespace of the broker's ClusterEndpoints.
pub const BROKER_NAMESPACE: &str = "causeway-broker";
/// Where a site's cluster API is reached from inside its candidates' and worker's namespaces.
pub const CLUSTER_API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6443);
/// Where the broker API is reached from inside every worker's namespace.
pub const BROKER_API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6444);
/// Where a gateway candidate serves metrics, on loopback inside its namespace.
pub const GATEWAY_METRICS_ADDR: SocketAddr = METRICS_ADDR;
/// What a gateway candidate binds its metrics server to: every address of its namespace,
/// loopback (for [`GATEWAY_METRICS_ADDR`]) and the node address (for the pod proxy).
pub const GATEWAY_METRICS_BIND: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), METRICS_ADDR.port());
/// The port a controller serves `clusterset.local` on when a test gives it
/// `--dns-listen 0.0.0.0:53`; candidates are pointed at it with `--dns-server`.
pub const CONTROLLER_DNS_PORT: u16 = 53;
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
    server: ApiServer,
    client: Client,
    kubeconfig: PathBuf,
    broker_kubeconfig: PathBuf,
}

/// A clusterset in Kubernetes mode; see the module docs.
///
/// Fields drop in order after [`Drop::drop`] has stopped every process:
/// the API servers stop before the namespaces their listeners live in go.
pub struct KubeWorld {
    processes: BTreeMap<Component, ChildGuard>,
    /// Pod CIDRs a site's controller publishes instead of its own (to test refusals).
    pod_cidrs: BTreeMap<usize, Vec<IpNet>>,
    /// Extra command-line arguments per component, appended when it is next started.
    extra_args: BTreeMap<Component, Vec<String>>,
    /// Gateway candidates that listen on the wildcard address (so their underlay address
    /// may change under them), announcing their own address as `--public-endpoint`.
    wildcard_listen: std::collections::BTreeSet<Component>,
    /// Runs the clients' connection tasks, so the clients work from any
    /// thread or runtime, also while a test thread blocks in a wait.
    runtime: Option<tokio::runtime::Runtime>,
    clusters: Vec<ClusterApi>,
    broker: ApiServer,
    broker_client: Client,
    /// The namespaces and addresses (two candidates per site).
    pub world: Clusterset,
}

impl KubeWorld {
    /// Builds `n_sites` sites with two gateway candidates each, the broker and
    /// the cluster API servers, seeded with namespaces and Nodes; nothing runs yet.
    pub fn new(n_sites: usize) -> Result<KubeWorld, HarnessError> {
        let world = Clusterset::with_candidates(n_sites, CANDIDATES)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kube-world-clients")
            .enable_all()
            .build()
            .map_err(io_context("runtime for the test's kube clients"))?;
        let broker = serve_in_root("broker API")?;
        seed_namespace(&broker, BROKER_NAMESPACE)?;
        let broker_client = client_for(&runtime, &broker, BROKER_NAMESPACE)?;
        // Built inside the guard so a failure half-way tears down what exists.
        let mut kube = KubeWorld {
            processes: BTreeMap::new(),
            pod_cidrs: BTreeMap::new(),
            extra_args: BTreeMap::new(),
            wildcard_listen: std::collections::BTreeSet::new(),
            runtime: Some(runtime),
            clusters: Vec::with_capacity(n_sites),
            broker,
            broker_client,
            world,
        };
        for i in 0..n_sites {
            let cluster = kube.build_cluster(i)?;
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

    fn build_cluster(&self, i: usize) -> Result<ClusterApi, HarnessError> {
        let site = self.site(i);
        let id = site.spec.cluster_id();
        // The pod proxy dials gateway pods' node addresses from the worker, on the node network.
        let options = crate::apiserver::ApiServerOptions {
            pod_netns: Some(site.worker.path()),
            ..Default::default()
        };
        let server = serve_in_root_with(&format!("{id} cluster API"), options)?;
        for ns in site.candidates().into_iter().chain([&site.worker]) {
            listen_in(&server, ns, CLUSTER_API_ADDR, &format!("{id} cluster API"))?;
        }
        // The controller, in the worker, is the broker's only client.
        listen_in(&self.broker, &site.worker, BROKER_API_ADDR, "broker API")?;

        seed_namespace(&server, CLUSTER_NAMESPACE)?;
        for node in site_nodes(&site.spec) {
            server
                .store()
                .put(&node)
                .map_err(|e| HarnessError::Topology(format!("seed Node in {id}: {e}")))?;
        }

        let kubeconfig = site.dir().join("cluster.kubeconfig");
        let broker_kubeconfig = site.dir().join("broker.kubeconfig");
        std::fs::write(
            &kubeconfig,
            server.kubeconfig_at(CLUSTER_API_ADDR, CLUSTER_NAMESPACE),
        )
        .map_err(io_context(format!("write {}", kubeconfig.display())))?;
        std::fs::write(
            &broker_kubeconfig,
            self.broker.kubeconfig_at(BROKER_API_ADDR, BROKER_NAMESPACE),
        )
        .map_err(io_context(format!("write {}", broker_kubeconfig.display())))?;
        let client = client_for(self.runtime(), &server, CLUSTER_NAMESPACE)?;
        Ok(ClusterApi {
            server,
            client,
            kubeconfig,
            broker_kubeconfig,
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
    pub fn broker(&self) -> &ApiServer {
        &self.broker
    }

    /// Site `i`'s cluster API server.
    pub fn cluster_api(&self, i: usize) -> &ApiServer {
        &self.clusters[i].server
    }

    /// A client of the broker for the test (default namespace [`BROKER_NAMESPACE`]).
    pub fn broker_client(&self) -> Client {
        self.broker_client.clone()
    }

    /// A client of site `i`'s cluster API for the test (default namespace [`CLUSTER_NAMESPACE`]).
    pub fn cluster_client(&self, i: usize) -> Client {
        self.clusters[i].client.clone()
    }

    /// Site `i`'s kubeconfig for its cluster API, as seen from inside the site's namespaces.
    pub fn kubeconfig_path(&self, i: usize) -> &Path {
        &self.clusters[i].kubeconfig
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
        if let Component::Gateway(i, k) = component {
            let c = self.spec(i).candidate(k);
            let pod = gateway_pod(&c.node_name(), c.node_ip(), c.node_ip6());
            self.clusters[i]
                .server
                .store()
                .put(&pod)
                .map_err(|e| HarnessError::Topology(format!("seed the Pod of {component}: {e}")))?;
        }
        Ok(())
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

    /// Makes site `i`'s controller, when next started, publish `cidrs` as its pod CIDRs.
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
        let secrets: ::kube::Api<Secret> =
            ::kube::Api::namespaced(self.cluster_client(i), CLUSTER_NAMESPACE);
        let fail = |reason: String| HarnessError::Http {
            url: format!("Secret {CLUSTER_NAMESPACE}/{name}"),
            reason,
        };
        let mut secret = self
            .block_on(secrets.get(&name))
            .map_err(|e| fail(e.to_string()))?;
        let key = causeway_gateway::config::generate_private_key();
        let public = causeway_crds::keys::format_key(&causeway_gateway::config::public_key(&key));
        secret.data = Some(BTreeMap::from([(
            names::PRIVATE_KEY_FIELD.to_string(),
            k8s_openapi::ByteString(causeway_crds::keys::format_key(&key).into_bytes()),
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
                    .arg(&api.kubeconfig)
                    .arg("--broker-kubeconfig")
                    .arg(&api.broker_kubeconfig)
                    .arg("--broker-namespace")
                    .arg(BROKER_NAMESPACE)
                    .arg("--pod-cidrs")
                    .arg(join(
                        self.pod_cidrs.get(&i).map_or(&spec.pod_cidrs(), |c| c),
                    ))
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
                    .arg(&api.kubeconfig)
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
                    .arg(&api.kubeconfig)
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
        ] {
            cmd.env_remove(var);
        }
        Ok((cmd, self.log_path(component)?))
    }

    fn site_checked(&self, i: usize) -> Result<&Site, HarnessError> {
        self.world.sites().get(i).ok_or_else(|| {
            HarnessError::Topology(format!("no site {i} in a world of {}", self.n_sites()))
        })
    }

    // ---- queries ----

    /// The holder of site `i`'s gateway Lease (a node name), read from its API server's store.
    pub fn lease_holder(&self, i: usize) -> Option<String> {
        let lease: Lease = self.clusters[i].server.store().get(
            Some(CLUSTER_NAMESPACE),
            &names::gateway_lease(&self.spec(i).cluster_id()),
        )?;
        lease.spec?.holder_identity
    }

    /// Which of site `i`'s candidates holds the gateway Lease, if one does.
    ///
    /// The Lease is read as stored: after a holder dies it stays the holder
    /// until another candidate takes the Lease over.
    pub fn active_gateway(&self, i: usize) -> Option<usize> {
        let holder = self.lease_holder(i)?;
        let spec = self.spec(i);
        (0..CANDIDATES).find(|&k| spec.candidate(k).node_name() == holder)
    }

    /// Site `i`'s gateway candidate `k`'s metrics text.
    pub fn gateway_metrics(&self, i: usize, k: usize) -> Result<String, HarnessError> {
        fetch_metrics(self.candidate_ns(i, k), GATEWAY_METRICS_ADDR)
    }

    /// Site `i`'s route agent's metrics text.
    pub fn agent_metrics(&self, i: usize) -> Result<String, HarnessError> {
        fetch_metrics(&self.site(i).worker, AGENT_METRICS_ADDR)
    }

    /// Site `i`'s active gateway's `causeway_peer_handshakes_total` towards site `j`.
    pub fn handshakes(&self, i: usize, j: usize) -> Result<f64, String> {
        let k = self
            .active_gateway(i)
            .ok_or_else(|| format!("{} has no active gateway", self.spec(i).cluster_id()))?;
        let text = self.gateway_metrics(i, k).map_err(|e| e.to_string())?;
        let peer = self.spec(j).cluster_id();
        metric(
            &text,
            "causeway_peer_handshakes_total",
            &[("remote_cluster", &peer)],
        )
        .ok_or_else(|| format!("candidate {k} has no handshake metric for {peer}"))
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
    pub fn full_log(&self, component: Component) -> String {
        self.log_path(component)
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    // ---- waits ----

    /// Fails if a process the world holds has exited, naming it and quoting its log.
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
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
            world
                .active_gateway(i)
                .ok_or_else(|| match world.lease_holder(i) {
                    Some(holder) => format!("the Lease is held by {holder:?}, no candidate"),
                    None => "no Lease holder".to_string(),
                })
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
    /// control plane to agree, each stage for at most `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        for i in 0..self.n_sites() {
            self.wait_active_gateway(i, timeout)?;
        }
        self.wait_handshakes(timeout)?;
        self.wait_converged(timeout)
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

/// An API server on a free loopback port of the test's own namespace: binding
/// a port changes nothing there.
fn serve_in_root(what: &str) -> Result<ApiServer, HarnessError> {
    serve_in_root_with(what, Default::default())
}

fn serve_in_root_with(
    what: &str,
    options: crate::apiserver::ApiServerOptions,
) -> Result<ApiServer, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_context(format!("bind {what} on 127.0.0.1:0")))?;
    ApiServer::try_start_with(listener, options).map_err(io_context(format!("start {what}")))
}

/// The Pod the gateway DaemonSet would run on a candidate node (hostNetwork: the pod's IP
/// is the node's), labelled and with ports as in the chart.
pub fn gateway_pod(node: &str, node_ip: Ipv4Addr, node_ip6: std::net::Ipv6Addr) -> Pod {
    let port = |name: &str, port: u16, protocol: &str| ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some(protocol.to_string()),
        ..ContainerPort::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(gateway_pod_name(node)),
            namespace: Some(CLUSTER_NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "causeway".to_string()),
                (
                    "app.kubernetes.io/instance".to_string(),
                    "causeway".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "gateway".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".to_string()),
            containers: vec![Container {
                name: "gateway".to_string(),
                ports: Some(vec![
                    port("wireguard", GATEWAY_PORT, "UDP"),
                    port("health", causeway_gateway::health::PROBE_PORT, "UDP"),
                    port("liveness", 51822, "UDP"),
                    port("benchmark", causeway_gateway::agent::BENCH_PORT, "TCP"),
                    port("metrics", GATEWAY_METRICS_BIND.port(), "TCP"),
                ]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_string()),
            pod_ip: Some(node_ip.to_string()),
            pod_ips: Some(vec![
                PodIP {
                    ip: node_ip.to_string(),
                },
                PodIP {
                    ip: node_ip6.to_string(),
                },
            ]),
            host_ip: Some(node_ip.to_string()),
            ..PodStatus::default()
        }),
    }
}

/// Serves `server` on `addr` inside `ns` too.
fn listen_in(
    server: &ApiServer,
    ns: &Netns,
    addr: SocketAddr,
    what: &str,
) -> Result<(), HarnessError> {
    let context = format!("{what} on {addr} in {}", ns.name());
    let listener = ns
        .try_run(|| TcpListener::bind(addr))
        .and_then(|bound| bound)
        .map_err(io_context(format!("bind {context}")))?;
    server
        .add_listener(listener)
        .map_err(io_context(format!("serve {context}")))
}

fn seed_namespace(server: &ApiServer, name: &str) -> Result<(), HarnessError> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    server
        .store()
        .put(&namespace)
        .map(drop)
        .map_err(|e| HarnessError::Topology(format!("seed namespace {name}: {e}")))
}

fn client_for(
    runtime: &tokio::runtime::Runtime,
    server: &ApiServer,
    namespace: &str,
) -> Result<Client, HarnessError> {
    // The client's background task is spawned on the runtime entered here.
    let _entered = runtime.enter();
    Client::try_from(server.client_config(namespace)).map_err(|e| HarnessError::Http {
        url: server.url(),
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
