//! `causeway-gateway`: the WireGuard gateway, the route agent, and key tools.

use anyhow::{anyhow, Context, Result};
use causeway_crds::keys::{format_key, parse_key};
use causeway_gateway::config::{
    desired_from_text, generate_private_key, load_private_key, public_key, Identity,
};
use causeway_gateway::datapath::Datapath;
use causeway_gateway::netlink::Netlink;
use causeway_gateway::node::{Node, NodeStatus, Reloaded, Role};
use causeway_gateway::route::tunnel_mtu;
use causeway_gateway::tun::Tun;
use causeway_gateway::{health, metrics};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    #[command(subcommand)]
    command: Command,
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
    /// Print a new private key (base64), like `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
    let netlink = Arc::new(Netlink::new().await?);
    let (node, metrics_addr, file_poll_ms, health_ip) = match command {
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
            let public = public_key(&key);
            let me = Identity {
                cluster,
                public_key: Some(public),
                listen: Some(listen),
                persistent_keepalive,
            };
            // Refuse a bad file before touching the node.
            let initial = check_file(&endpoints, &me)?;
            let underlay = netlink.underlay_mtu_for(listen.ip()).await?;
            let mtu = mtu.unwrap_or_else(|| tunnel_mtu(underlay, listen.is_ipv6()));
            let tun = Tun::open(&interface)?;
            let ifindex = netlink
                .link_index(&interface)
                .await?
                .with_context(|| format!("interface {interface} vanished right after creation"))?;
            netlink.set_link_up_with_mtu(ifindex, mtu).await?;
            // The gateway's own address inside the tunnel: health probes (and tools) reach it
            // there, and traffic it originates carries a source the remote side accepts.
            let health_ip = initial
                .local
                .gateways
                .iter()
                .find(|g| Some(g.public_key) == me.public_key)
                .and_then(|g| g.health_check_ip);
            if let Some(ip) = health_ip {
                netlink.add_address(ifindex, ipnet::IpNet::from(ip)).await?;
            }
            let udp = std::net::UdpSocket::bind(listen)
                .with_context(|| format!("binding UDP {listen}; is another gateway running?"))?;
            let datapath = Arc::new(Datapath::start(tun, udp, key)?);
            tracing::info!(%listen, %interface, mtu, underlay_mtu = underlay, public_key = %format_key(&public), "gateway started");
            let role = Role::Gateway {
                datapath,
                ifindex,
                mtu,
            };
            (
                Node::new(me, endpoints, role, Arc::clone(&netlink)),
                metrics_addr,
                file_poll_ms,
                health_ip,
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
            let next_hops = desired.gateway_next_hops(&endpoints.display().to_string())?;
            let mtu = match mtu {
                Some(mtu) => mtu,
                None => {
                    let ifindex = netlink.ifindex_on_subnet(next_hops[0]).await?;
                    tunnel_mtu(netlink.link_mtu(ifindex).await?, true)
                }
            };
            tracing::info!(?next_hops, mtu, "route agent started");
            let role = Role::RouteAgent { mtu: Some(mtu) };
            (
                Node::new(me, endpoints, role, Arc::clone(&netlink)),
                metrics_addr,
                file_poll_ms,
                None,
            )
        }
        Command::Genkey | Command::Pubkey => unreachable!("handled before the runtime starts"),
    };
    let poll = (file_poll_ms > 0).then(|| Duration::from_millis(file_poll_ms));
    serve(node, metrics_addr, poll, health_ip).await
}

/// Refuses to start on an invalid file, with the same message a reload would log.
fn check_file(path: &PathBuf, me: &Identity) -> Result<causeway_gateway::config::Desired> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading endpoints file {}", path.display()))?;
    Ok(desired_from_text(&text, &path.display().to_string(), me)?)
}

async fn serve(
    mut node: Node,
    metrics_addr: SocketAddr,
    file_poll: Option<Duration>,
    health_ip: Option<std::net::IpAddr>,
) -> Result<()> {
    node.reload().await?;
    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {metrics_addr}"))?;
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    let status: Arc<NodeStatus> = node.status();
    let server = tokio::spawn(metrics::serve(listener, status, async {
        let _ = stopped.await;
    }));

    // Health probes ride the tunnel from this gateway's own tunnel address.
    let (stop_probes, probes_stopped) = tokio::sync::watch::channel(false);
    let prober = match health_ip {
        Some(ip) => {
            let addr = SocketAddr::new(ip, health::PROBE_PORT);
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding the health probe socket {addr}"))?;
            Some(tokio::spawn(health::run(
                socket,
                node.health_targets(),
                node.health(),
                probes_stopped,
            )))
        }
        None => None,
    };

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
    let _ = stop_probes.send(true);
    if let Some(prober) = prober {
        let _ = prober.await;
    }
    let result = node.shutdown().await;
    drop(node);
    result?;
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
