//! causeway-controller: builds this cluster's ClusterEndpoint from its Nodes,
//! Gateways and gateway Lease (or reads it from `--endpoint-file`), writes it
//! locally, publishes it to the broker and mirrors the others (docs/kubernetes.md,
//! "Controller"), and exports and imports services through the broker
//! (docs/services.md). Replicas elect a leader on Lease
//! `causeway-controller-<cluster>`; only the leader syncs, both loops at once.

use causeway_crds::rbac;
use causeway_k8s::client::{client, load};
use causeway_k8s::leader::{campaign, Campaign};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use causeway_controller::dns::{Dns, DnsConfig, DEFAULT_TTL};
use causeway_controller::exports::{self, ExportConfig};
use causeway_controller::health::{self, Health};
use causeway_controller::local::{parse_cidr_list, LocalConfig};
use causeway_controller::sync::{self, SpecSource, SyncConfig};
use causeway_crds::manifest::parse_endpoints;
use causeway_crds::names::controller_lease;
use causeway_crds::validate::validate_endpoint;
use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec, ValidationError};
use clap::Parser;
use ipnet::IpNet;

/// Build this cluster's ClusterEndpoint, publish it to the broker and mirror the other clusters', and export and import services.
#[derive(Debug, Parser)]
#[command(name = "causeway-controller", version)]
struct Args {
    /// This cluster's ID in the clusterset (its object's name at the broker).
    #[arg(long, env = "CAUSEWAY_CLUSTER_ID")]
    cluster: String,
    #[command(flatten)]
    acceptance: causeway_k8s::acceptance::AcceptanceArgs,
    /// Kubeconfig of the broker.
    #[arg(long, env = "CAUSEWAY_BROKER_KUBECONFIG")]
    broker_kubeconfig: PathBuf,
    /// Namespace of the ClusterEndpoints at the broker.
    #[arg(long, env = "CAUSEWAY_BROKER_NAMESPACE")]
    broker_namespace: String,
    /// Local namespace that remote ClusterEndpoints are mirrored into.
    #[arg(long, env = "CAUSEWAY_NAMESPACE")]
    namespace: String,
    /// A ClusterEndpoint manifest (YAML) describing this cluster; its spec is published
    /// as it is, instead of one built from the cluster.
    #[arg(long, env = "CAUSEWAY_ENDPOINT_FILE", conflicts_with_all = ["pod_cidrs", "service_cidrs"])]
    endpoint_file: Option<PathBuf>,
    /// This cluster's pod CIDRs, comma separated (default: the aggregate of every
    /// Node's spec.podCIDRs).
    #[arg(long, env = "CAUSEWAY_POD_CIDRS", value_name = "CIDR,...")]
    pod_cidrs: Option<String>,
    /// This cluster's service CIDRs, comma separated (required without
    /// --endpoint-file: the kube-apiserver's --service-cluster-ip-range).
    #[arg(long, env = "CAUSEWAY_SERVICE_CIDRS", value_name = "CIDR,...")]
    service_cidrs: Option<String>,
    /// Kubeconfig of this cluster (default: in-cluster config or the usual kubeconfig).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Seconds between full passes when no change is seen.
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// This replica's identity in the leader election (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader's Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Serve DNS for clusterset.local on this address, UDP and TCP (e.g. 0.0.0.0:5353;
    /// the causeway-dns Service maps port 53 to it). Off when absent.
    #[arg(long, env = "CAUSEWAY_DNS_LISTEN", value_name = "ADDR:PORT")]
    dns_listen: Option<std::net::SocketAddr>,
    /// Serve /healthz, /readyz and /metrics over HTTP on this address (e.g. 0.0.0.0:8081,
    /// what the Helm chart's probes use). Off when absent, so that several controllers
    /// can share a host.
    #[arg(long, env = "CAUSEWAY_HEALTH_ADDR", value_name = "ADDR:PORT")]
    health_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour only for a person at a terminal; a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let source = spec_source(&args)?;
    let broker = client(
        load(Some(&args.broker_kubeconfig)).await?,
        &rbac::MEMBER,
        &args.broker_namespace,
        Some(&args.cluster),
    )
    .context("cannot build a client for the broker")?;
    let local_config = load(args.kubeconfig.as_deref()).await?;
    let acceptance = args.acceptance.acceptance(&local_config);
    let local = client(local_config, &rbac::CONTROLLER, &args.namespace, None)
        .context("cannot build a client for the local cluster")?;
    let how = Campaign {
        namespace: args.namespace.clone(),
        name: controller_lease(&args.cluster),
        identity: args.identity.clone().unwrap_or_else(host_name),
        duration: Duration::from_secs(args.lease_seconds.max(2)),
        grace: Duration::from_secs((args.lease_seconds / 3).max(1)),
    };
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    let debounce = Duration::from_millis(200);
    let export_config = ExportConfig {
        broker: broker.clone(),
        broker_namespace: args.broker_namespace.clone(),
        local: local.clone(),
        cluster_id: args.cluster.clone(),
        resync,
        debounce,
        acceptance: acceptance.clone(),
    };
    let (dns_cluster, dns_namespace) = (args.cluster.clone(), args.namespace.clone());
    let config = SyncConfig {
        broker,
        broker_namespace: args.broker_namespace,
        local: local.clone(),
        local_namespace: args.namespace,
        cluster_id: args.cluster,
        source: Some(source),
        resync,
        debounce,
        acceptance,
    };
    // Bound before the election, so a taken port stops the start with the fix in the
    // message, and served by every replica: answering needs no lease.
    let health = Arc::new(Health::default());
    let health_listener = match args.health_addr {
        Some(addr) => {
            let listener = health::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
            Some(listener)
        }
        None => None,
    };
    let dns = match args.dns_listen {
        Some(listen) => {
            let dns = Dns::bind(DnsConfig {
                listen,
                cluster_id: dns_cluster,
                namespace: dns_namespace,
                ttl: DEFAULT_TTL,
            })
            .await?;
            tracing::info!(addr = %dns.local_addr(), "serving clusterset.local");
            Some(dns)
        }
        None => None,
    };
    let local_for_dns = local.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let shutting_down = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = health_listener.map(|listener| {
        tokio::spawn(health::serve(
            listener,
            Arc::clone(&health),
            shutting_down(stopped.clone()),
        ))
    });
    let mut leadership = campaign(local, &how).await?;
    // Joining the election read or created the Lease: the API server answers.
    health.api_reached();
    let dns = dns.map(|dns| {
        health.task_started("dns");
        let health = Arc::clone(&health);
        let run = dns.run(local_for_dns, shutting_down(stopped.clone()));
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let result = run.await;
            // Ending before shutdown is a failure the liveness probe must see.
            if !*stopped.borrow() {
                let why = match &result {
                    Ok(()) => "ended unexpectedly".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(reason = %why, "the DNS server stopped; /healthz now fails");
                health.task_stopped("dns", why);
            }
            result
        })
    });
    loop {
        tracing::info!(identity = %how.identity, lease = %how.name, "waiting to lead");
        tokio::select! {
            () = leadership.until_leader() => {}
            () = shutting_down(stopped.clone()) => break,
        }
        health.set_leading(true);
        tracing::info!(identity = %how.identity, "leading: syncing with the broker");
        let mut lost = false;
        {
            // Both loops stop together, on a lost lease or on shutdown.
            let (halt, halted) = tokio::sync::watch::channel(false);
            let until_lost = leadership.until_lost();
            let stop = shutting_down(stopped.clone());
            tokio::join!(
                sync::run_reporting(config.clone(), shutting_down(halted.clone()), |error| {
                    health.pass(error)
                }),
                exports::run(export_config.clone(), shutting_down(halted)),
                async {
                    tokio::select! {
                        () = until_lost => lost = true,
                        () = stop => {}
                    }
                    let _ = halt.send(true);
                },
            );
        }
        health.set_leading(false);
        if !lost {
            break;
        }
        tracing::warn!("lost the lease; another replica leads now");
    }
    leadership.resign().await;
    if let Some(dns) = dns {
        dns.await.context("the DNS task panicked")??;
    }
    if let Some(server) = server {
        server
            .await
            .context("the health endpoint panicked")?
            .context("the health endpoint failed")?;
    }
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| format!("causeway-controller-{}", std::process::id()))
}

/// Where the spec comes from: the endpoint file, or the cluster with the CIDR flags,
/// checked now so that a bad value stops the start with the fix rather than
/// refusing every pass.
fn spec_source(args: &Args) -> anyhow::Result<SpecSource> {
    if let Some(path) = &args.endpoint_file {
        return Ok(SpecSource::File(load_spec(path, &args.cluster)?));
    }
    let cidrs = |flag: &str, env: &str, text: Option<&str>| -> anyhow::Result<Vec<IpNet>> {
        parse_cidr_list(text.unwrap_or_default())
            .with_context(|| format!("{flag} ({env}) holds a bad value"))
    };
    let pod_cidrs = cidrs(
        "--pod-cidrs",
        "CAUSEWAY_POD_CIDRS",
        args.pod_cidrs.as_deref(),
    )?;
    let service_cidrs = cidrs(
        "--service-cidrs",
        "CAUSEWAY_SERVICE_CIDRS",
        args.service_cidrs.as_deref(),
    )?;
    if service_cidrs.is_empty() {
        bail!(
            "--service-cidrs (CAUSEWAY_SERVICE_CIDRS) is required: Kubernetes does not publish its service CIDRs; \
             set it to the kube-apiserver's --service-cluster-ip-range, e.g. --service-cidrs 10.96.0.0/12 \
             (or give --endpoint-file with the whole ClusterEndpoint)"
        );
    }
    let config = LocalConfig {
        pod_cidrs: (!pod_cidrs.is_empty()).then_some(pod_cidrs),
        service_cidrs,
    };
    check_config(&args.cluster, &config)?;
    Ok(SpecSource::Cluster(config))
}

/// Refuses a cluster ID or CIDRs the published spec would be refused for (overlaps,
/// reserved ranges, too broad), whatever the Nodes and Gateways turn out to hold.
fn check_config(cluster: &str, config: &LocalConfig) -> anyhow::Result<()> {
    let to_strings = |nets: &[IpNet]| nets.iter().map(ToString::to_string).collect();
    let probe = ClusterEndpoint::new(
        cluster,
        ClusterEndpointSpec {
            cluster_id: cluster.to_owned(),
            pod_cidrs: to_strings(config.pod_cidrs.as_deref().unwrap_or_default()),
            service_cidrs: to_strings(&config.service_cidrs),
            gateways: Vec::new(),
        },
    );
    let Err(errors) = validate_endpoint(&probe) else {
        return Ok(());
    };
    // Pod CIDRs may still come from the Nodes; everything else is a bad flag.
    let messages: Vec<String> = errors
        .iter()
        .filter(|e| !matches!(e, ValidationError::NoPodCidrs { .. }))
        .map(ToString::to_string)
        .collect();
    if messages.is_empty() {
        return Ok(());
    }
    bail!(
        "--cluster, --pod-cidrs and --service-cidrs would be refused: {}",
        messages.join("; ")
    )
}

/// Reads the one ClusterEndpoint in `path`, which must describe `cluster` and be valid on its own.
fn load_spec(path: &Path, cluster: &str) -> anyhow::Result<ClusterEndpointSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the endpoint file {}", path.display()))?;
    let endpoints = parse_endpoints(&text).map_err(|errors| {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("endpoint file {}: {}", path.display(), messages.join("; "))
    })?;
    let [endpoint] = endpoints.as_slice() else {
        bail!(
            "endpoint file {} holds {} ClusterEndpoints; it must hold exactly this cluster's one",
            path.display(),
            endpoints.len()
        );
    };
    if endpoint.spec.cluster_id != cluster {
        bail!(
            "endpoint file {} describes cluster {:?}, but --cluster is {cluster:?}; make them agree",
            path.display(),
            endpoint.spec.cluster_id
        );
    }
    if let Err(errors) = validate_endpoint(endpoint) {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!("endpoint file {}: {}", path.display(), messages.join("; "));
    }
    Ok(endpoint.spec.clone())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
