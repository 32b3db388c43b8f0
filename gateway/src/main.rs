//! `causeway-gateway`: the WireGuard gateway, the route agent, and key tools.

use anyhow::{anyhow, bail, Context, Result};
use causeway_datapath::keys::{generate_private_key, public_key};
use causeway_datapath::netlink::Netlink;
use causeway_datapath::route::tunnel_mtu;
use causeway_gateway::config::{desired_from_text, load_private_key, Identity};
use causeway_gateway::diagnostics::auth::Access;
use causeway_gateway::diagnostics::Diagnostics;
use causeway_gateway::http;
use causeway_gateway::kubernetes::{self, api::node_is_candidate, CandidateConfig, KubeConfig};
use causeway_gateway::node::{Node, NodeStatus, Reloaded, Role, Tunnel, TunnelSetup};
use causeway_gateway::rtt_probe::Probes;
use causeway_wire::keys::{format_key, parse_key};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// How often kernel routes are re-checked against the applied state.
const RESYNC: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "causeway-gateway",
    version,
    about = "Causeway's WireGuard gateway between Kubernetes clusters"
)]
struct Cli {
    /// Without one: `kubernetes` inside a pod (KUBERNETES_SERVICE_HOST set), else this help.
    #[command(subcommand)]
    command: Option<Command>,
}

/// What a node does in Kubernetes mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RoleArg {
    /// `gateway` when the Node carries causeway.dev/gateway=true, else `route-agent`.
    Auto,
    /// A gateway candidate: campaigns for the cluster's gateway Lease.
    Gateway,
    /// Routes remote CIDRs via the active gateway.
    RouteAgent,
}

/// Flags of `causeway-gateway kubernetes`.
#[derive(clap::Args, Debug)]
struct KubeArgs {
    /// This cluster's ID, as in its ClusterEndpoint's spec.clusterID.
    #[arg(long, env = "CAUSEWAY_CLUSTER_ID")]
    cluster: String,
    #[command(flatten)]
    acceptance: causeway_k8s::acceptance::AcceptanceArgs,
    /// This node's name: the Gateway object's name and the Lease holder identity.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Namespace of the ClusterEndpoints, Gateways and Leases.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// Namespace of the gateways' key Secrets (default: <namespace>-keys), kept apart so
    /// that a gateway may read no other Secret.
    #[arg(long, env = "CAUSEWAY_KEY_NAMESPACE")]
    key_namespace: Option<String>,
    /// Kubeconfig of this cluster (default: in-cluster config or the usual kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// gateway candidate, route agent, or auto (from the Node's causeway.dev/gateway label).
    #[arg(long, env = "CAUSEWAY_ROLE", value_enum, default_value_t = RoleArg::Auto)]
    role: RoleArg,
    /// UDP address a candidate listens on, e.g. 198.18.0.1:51820 or [::]:51820.
    #[arg(long, env = "CAUSEWAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where other clusters send WireGuard UDP to (default: --listen); set it behind NAT.
    #[arg(long, env = "CAUSEWAY_PUBLIC_ENDPOINT")]
    public_endpoint: Option<SocketAddr>,
    /// The node's cluster-network address; repeat (or comma-separate) for one per family.
    #[arg(long, env = "CAUSEWAY_PRIVATE_IPS", value_delimiter = ',')]
    private_ip: Vec<IpAddr>,
    /// The gateway's address inside the tunnel (inside this cluster's CIDRs), for health probes.
    #[arg(long, env = "CAUSEWAY_HEALTH_CHECK_IP")]
    health_check_ip: Option<IpAddr>,
    /// Name of the TUN interface.
    #[arg(long, env = "CAUSEWAY_INTERFACE", default_value = "causeway0")]
    interface: String,
    /// Tunnel MTU (gateway) or route MTU (route agent); by default derived from the interface.
    #[arg(long, env = "CAUSEWAY_MTU")]
    mtu: Option<u32>,
    /// Seconds between keepalives to every peer (set when this gateway is behind NAT).
    #[arg(long, env = "CAUSEWAY_PERSISTENT_KEEPALIVE")]
    persistent_keepalive: Option<u16>,
    /// Seconds the gateway Lease holds without renewal; the holder renews a third before expiry.
    #[arg(long, env = "CAUSEWAY_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Address of the /metrics and /healthz HTTP server.
    #[arg(long, env = "CAUSEWAY_METRICS_ADDR", default_value = "0.0.0.0:9469")]
    metrics_addr: SocketAddr,
    /// Milliseconds between checks whether the Gateway status is worth writing.
    #[arg(long, env = "CAUSEWAY_STATUS_INTERVAL_MS", default_value_t = 1000)]
    status_interval_ms: u64,
    /// DNS server `kubectl causeway verify` resolves clusterset.local names with, ip[:port]
    /// (default: the first nameserver of /etc/resolv.conf, port 53).
    #[arg(long, env = "CAUSEWAY_DNS_SERVER", value_parser = parse_dns_server)]
    dns_server: Option<SocketAddr>,
}

/// `ip` or `ip:port` (port 53 when absent).
fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!(
                "{text:?} is not an address; give ip or ip:port, e.g. 10.96.0.10 or 10.96.0.10:53"
            )
        })
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway from an endpoints file, without Kubernetes (also how a VM joins).
    Standalone {
        /// This cluster's ID, as in its ClusterEndpoint's spec.clusterID.
        #[arg(long)]
        cluster: String,
        /// File holding this gateway's WireGuard private key (mode 0600, `genkey` format).
        #[arg(long)]
        private_key_file: PathBuf,
        /// UDP address to listen on, e.g. 198.18.0.1:51820 or [::]:51820.
        #[arg(long)]
        listen: SocketAddr,
        /// Multi-document YAML of ClusterEndpoint manifests for every site, this one included.
        #[arg(long)]
        endpoints: PathBuf,
        /// Name of the TUN interface.
        #[arg(long, default_value = "causeway0")]
        interface: String,
        /// Tunnel MTU; by default the underlay interface's MTU minus WireGuard's overhead.
        #[arg(long)]
        mtu: Option<u32>,
        /// Seconds between keepalives to every peer (set when this gateway is behind NAT).
        #[arg(long)]
        persistent_keepalive: Option<u16>,
        /// Address of the /metrics and /healthz HTTP server.
        #[arg(long, default_value = "0.0.0.0:9469")]
        metrics_addr: SocketAddr,
        /// Milliseconds between checks of the endpoints file for changes; 0 reloads on SIGHUP only.
        #[arg(long, env = "CAUSEWAY_FILE_POLL_MS", default_value_t = 1000)]
        file_poll_ms: u64,
    },
    /// Route remote clusters' CIDRs from this node via the local gateway node.
    RouteAgent {
        /// This cluster's ID.
        #[arg(long)]
        cluster: String,
        /// The same endpoints file the gateway reads.
        #[arg(long)]
        endpoints: PathBuf,
        /// MTU put on the routes; by default the interface's MTU minus WireGuard's IPv6 overhead.
        #[arg(long)]
        mtu: Option<u32>,
        /// Address of the /metrics and /healthz HTTP server.
        #[arg(long, default_value = "0.0.0.0:9470")]
        metrics_addr: SocketAddr,
        /// Milliseconds between checks of the endpoints file for changes; 0 reloads on SIGHUP only.
        #[arg(long, env = "CAUSEWAY_FILE_POLL_MS", default_value_t = 1000)]
        file_poll_ms: u64,
    },
    /// Run from the Kubernetes API: gateway candidate or route agent (the default in a pod).
    #[command(alias = "kube")]
    Kubernetes(Box<KubeArgs>),
    /// Print a new private key (base64), like `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey,
}

fn main() -> Result<()> {
    let command = match Cli::parse().command {
        Some(command) => command,
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            Cli::try_parse_from(["causeway-gateway", "kubernetes"])
                .unwrap_or_else(|e| e.exit())
                .command
                .context("clap lost the kubernetes subcommand")?
        }
        None => {
            Cli::command().print_help()?;
            std::process::exit(2);
        }
    };
    match command {
        Command::Genkey => {
            println!("{}", format_key(&generate_private_key()));
            Ok(())
        }
        Command::Pubkey => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let key = parse_key(&text).map_err(|e| anyhow!("the private key on stdin {e}"))?;
            println!("{}", format_key(&public_key(&key)));
            Ok(())
        }
        command => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run(command))
        }
    }
}

async fn run(command: Command) -> Result<()> {
    if let Command::Kubernetes(args) = command {
        return run_kubernetes(*args).await;
    }
    let netlink = Arc::new(Netlink::new().await?);
    let (node, metrics_addr, file_poll_ms) = match command {
        Command::Standalone {
            cluster,
            private_key_file,
            listen,
            endpoints,
            interface,
            mtu,
            persistent_keepalive,
            metrics_addr,
            file_poll_ms,
        } => {
            let key = load_private_key(&private_key_file)?;
            let me = Identity {
                cluster,
                public_key: Some(public_key(&key)),
                listen: Some(listen),
                persistent_keepalive,
            };
            // Refuse a bad file before touching the node.
            let initial = check_file(&endpoints, &me)?;
            let health_ip = initial
                .local
                .gateways
                .iter()
                .find(|g| Some(g.public_key) == me.public_key)
                .and_then(|g| g.health_check_ip);
            let probes = Probes::default();
            let setup = TunnelSetup {
                interface,
                listen,
                mtu,
                private_key: key,
                health_ip,
            };
            let tunnel = Tunnel::open(&netlink, &setup, &probes).await?;
            let role = Role::Gateway(tunnel);
            (
                Node::from_file(me, endpoints, role, Arc::clone(&netlink), probes),
                metrics_addr,
                file_poll_ms,
            )
        }
        Command::RouteAgent {
            cluster,
            endpoints,
            mtu,
            metrics_addr,
            file_poll_ms,
        } => {
            let me = Identity {
                cluster,
                public_key: None,
                listen: None,
                persistent_keepalive: None,
            };
            let desired = check_file(&endpoints, &me)?;
            let shown = format!("endpoints file {}", endpoints.display());
            let next_hops = desired.gateway_next_hops(&shown)?;
            let mtu = match mtu {
                Some(mtu) => mtu,
                None => {
                    let ifindex = netlink.ifindex_on_subnet(next_hops[0]).await?;
                    tunnel_mtu(netlink.link_mtu(ifindex).await?, true)
                }
            };
            tracing::info!(?next_hops, mtu, "route agent started");
            let role = Role::RouteAgent {
                mtu: Some(mtu),
                skip_node: None,
            };
            (
                Node::from_file(me, endpoints, role, Arc::clone(&netlink), Probes::default()),
                metrics_addr,
                file_poll_ms,
            )
        }
        Command::Kubernetes(_) | Command::Genkey | Command::Pubkey => {
            unreachable!("handled before the runtime starts or above")
        }
    };
    let poll = (file_poll_ms > 0).then(|| Duration::from_millis(file_poll_ms));
    serve(node, metrics_addr, poll).await
}

async fn run_kubernetes(args: KubeArgs) -> Result<()> {
    let kube_config = causeway_k8s::client::load(args.kubeconfig.as_deref()).await?;
    let acceptance = args.acceptance.acceptance(&kube_config);
    // A route agent has its own, smaller account; refusals are explained against it.
    let identity = match args.role {
        RoleArg::RouteAgent => &causeway_crds::rbac::ROUTE_AGENT,
        RoleArg::Gateway | RoleArg::Auto => &causeway_crds::rbac::GATEWAY,
    };
    let client = causeway_k8s::client::client(kube_config, identity, &args.namespace, None)
        .context("cannot build a Kubernetes client")?;
    let candidate = match args.role {
        RoleArg::Gateway => true,
        RoleArg::RouteAgent => false,
        RoleArg::Auto => node_is_candidate(&client, &args.node_name).await?,
    };
    let candidate = if candidate {
        let Some(listen) = args.listen else {
            bail!(
                "node {} is a gateway candidate (--role {}) but has no --listen; give the UDP address to listen on, e.g. --listen 198.18.0.1:51820, or run it with --role route-agent",
                args.node_name,
                if args.role == RoleArg::Auto { "auto, from its causeway.dev/gateway=true label" } else { "gateway" }
            );
        };
        Some(CandidateConfig {
            listen,
            public_endpoint: args.public_endpoint.unwrap_or(listen),
            private_ips: args.private_ip.clone(),
            health_check_ip: args.health_check_ip,
            interface: args.interface.clone(),
            persistent_keepalive: args.persistent_keepalive,
            key_namespace: args
                .key_namespace
                .clone()
                .unwrap_or_else(|| causeway_crds::names::key_namespace(&args.namespace)),
        })
    } else {
        None
    };
    tracing::info!(
        cluster = %args.cluster,
        node = %args.node_name,
        namespace = %args.namespace,
        role = if candidate.is_some() { "gateway candidate" } else { "route agent" },
        "starting in kubernetes mode"
    );
    let config = KubeConfig {
        cluster: args.cluster,
        node_name: args.node_name,
        namespace: args.namespace,
        candidate,
        mtu: args.mtu,
        lease: Duration::from_secs(args.lease_seconds),
        metrics_addr: args.metrics_addr,
        status_interval: Duration::from_millis(args.status_interval_ms),
        acceptance,
        dns_server: args.dns_server,
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    };
    kubernetes::run(client, config, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Refuses to start on an invalid file, with the same message a reload would log.
fn check_file(path: &Path, me: &Identity) -> Result<causeway_gateway::config::Desired> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading endpoints file {}", path.display()))?;
    Ok(desired_from_text(&text, &path.display().to_string(), me)?)
}

async fn serve(
    mut node: Node,
    metrics_addr: SocketAddr,
    file_poll: Option<Duration>,
) -> Result<()> {
    node.reload().await?;
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {metrics_addr}"))?;
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    let status: Arc<NodeStatus> = node.status();
    // Standalone: the operator chose where the agent listens (--metrics-addr).
    let diagnostics = Diagnostics::new(status.clone(), node.probes().clone(), None);
    let server = tokio::spawn(http::serve(
        listener,
        status,
        diagnostics.router(Access::Open),
        async {
            let _ = stopped.await;
        },
    ));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // With polling off the interval is a year: in practice it never fires.
    let mut poll = tokio::time::interval(file_poll.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
    poll.tick().await;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: re-reading the endpoints file");
                report(node.reload().await);
            }
            _ = poll.tick() => report(node.reload().await),
            _ = resync.tick() => {
                if let Err(e) = node.resync().await {
                    tracing::warn!(error = %e, "route resync failed");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: withdrawing routes and the tunnel interface");
    let _ = stop_metrics.send(());
    let _ = server.await;
    node.shutdown().await?;
    Ok(())
}

fn report(result: Result<Reloaded, causeway_gateway::node::ReloadError>) {
    match result {
        Ok(Reloaded::Applied) => tracing::info!("endpoints file applied"),
        Ok(Reloaded::Unchanged) => {}
        Err(e @ causeway_gateway::node::ReloadError::Config(_)) => {
            tracing::error!(error = %e, "endpoints file refused")
        }
        Err(e) => tracing::error!(error = %e, "route changes failed"),
    }
}
