//! The scale part: a gateway's memory with 100 idle peers, the time until it has
//! handshaken with 100 peers from a cold start, and the time to reconcile
//! 10,000 remote CIDRs into kernel routes.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use causeway_datapath::netlink::Netlink;
use causeway_datapath::route::{NextHop, Route, MAIN_TABLE};
use ipnet::{IpNet, Ipv4Net};

use super::report::{Handshakes, IdleMemory, RouteReconcile, ScaleReport};
use super::responder::{Responder, SimulatedPeer};
use super::stats::kib_to_mib;
use super::wg::KeyPair;
use super::world::{
    cluster_endpoint_doc, peak_rss_kib, peer_counts, scale_peer, spawn_gateway, status_kib, Pair,
    PeerCounts, A_CIDR, A_TUNNEL, A_UNDERLAY, B_UNDERLAY, B_VETH, METRICS_ADDR, WG_PORT,
};
use crate::harness::{fetch_metrics, wait_until_ok, ChildGuard, Netns};

/// Simulated remote sites.
pub const PEERS: u8 = 100;
/// Remote CIDRs reconciled into routes.
pub const ROUTES: u32 = 10_000;
/// How often /metrics is polled while handshakes complete.
const POLL: Duration = Duration::from_millis(20);
/// How long handshakes may take before the figure counts as failed.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(30);
/// The subnet the simulated peers' endpoints live in (on B's veth).
const PEER_SUBNET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 101, 0), 24);
/// The cluster ID of the gateway under test.
const SELF_CLUSTER: &str = "bench-self";

/// What the scale part needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `causeway-gateway` binary.
    pub gateway: PathBuf,
    /// Where keys, endpoints files and logs go.
    pub work_dir: PathBuf,
    /// Set on SIGINT/SIGTERM.
    pub interrupted: Arc<AtomicBool>,
}

/// Runs every scale figure; a part that fails leaves its figure empty and says why.
pub fn run(s: &Settings) -> ScaleReport {
    let mut report = ScaleReport::default();
    if let Err(e) = peers(s, &mut report) {
        eprintln!("==> scale: FAILED: {e:#}");
        report.errors.push(format!("{e:#}"));
    }
    if s.interrupted.load(Ordering::Relaxed) {
        report.errors.push("interrupted".into());
        return report;
    }
    eprintln!("==> scale: reconciling {ROUTES} routes through the gateway's netlink layer");
    match routes() {
        Ok(r) => report.routes = Some(r),
        Err(e) => {
            eprintln!("==> scale: FAILED: {e:#}");
            report.errors.push(format!("{e:#}"));
        }
    }
    report
}

/// Memory with 100 idle peers, then the time to 100 handshakes, on one namespace pair.
fn peers(s: &Settings, report: &mut ScaleReport) -> Result<()> {
    eprintln!("==> scale: one gateway in A, {PEERS} simulated peers on B's veth");
    let pair = Pair::new("scale")?;
    let mut batch = String::new();
    for i in 1..=PEERS {
        let (_, _, _, endpoint) = scale_peer(i);
        let _ = writeln!(batch, "addr add {}/24 dev {B_VETH}", endpoint.ip());
    }
    let batch_file = s.work_dir.join("scale-addresses.batch");
    std::fs::write(&batch_file, batch)?;
    pair.b
        .ip(["-batch", &batch_file.display().to_string()])
        .context("adding the peers' addresses to B")?;
    pair.a
        .add_route(IpNet::V4(PEER_SUBNET), IpAddr::V4(B_UNDERLAY))
        .context("routing the peers' subnet from A through B")?;

    let me = KeyPair::generate(&s.gateway)?;
    let key_file = s.work_dir.join("scale-self.key");
    me.write_private(&key_file)?;
    let listen = SocketAddr::from((A_UNDERLAY, WG_PORT));
    let mut endpoints = cluster_endpoint_doc(
        SELF_CLUSTER,
        &[IpNet::V4(A_CIDR)],
        listen,
        &me.public_b64,
        A_TUNNEL,
    );
    let mut simulated = Vec::with_capacity(usize::from(PEERS));
    for i in 1..=PEERS {
        let (cluster, cidr, health, endpoint) = scale_peer(i);
        let key = KeyPair::random();
        endpoints += &cluster_endpoint_doc(
            &cluster,
            &[IpNet::V4(cidr)],
            endpoint.into(),
            &key.public_b64,
            health,
        );
        simulated.push(SimulatedPeer {
            addr: endpoint.into(),
            private_key: key.private_bytes()?,
        });
    }
    let endpoints_file = s.work_dir.join("scale-endpoints.yaml");
    std::fs::write(&endpoints_file, endpoints)?;
    let start = |log: &str| -> Result<(Instant, ChildGuard)> {
        let spawned = Instant::now();
        let gateway = spawn_gateway(
            &pair.a,
            &s.gateway,
            SELF_CLUSTER,
            &key_file,
            listen,
            &endpoints_file,
            &s.work_dir.join(log),
        )?;
        Ok((spawned, gateway))
    };

    // 1. Configured and idle: nobody answers its handshakes.
    {
        eprintln!("==> scale: memory with {PEERS} peers configured and idle");
        let (spawned, mut gateway) = start("scale-idle-gateway.log")?;
        let counts = wait_until_ok(
            &format!("the gateway's /metrics to list {PEERS} peers"),
            Duration::from_secs(30),
            || {
                let counts = metrics_counts(&pair.a, &mut gateway)?;
                if counts.listed >= usize::from(PEERS) || s.interrupted.load(Ordering::Relaxed) {
                    Ok(counts)
                } else {
                    Err(format!("{counts:?}"))
                }
            },
        )?;
        let settle_seconds = spawned.elapsed().as_secs_f64();
        report.idle_memory = Some(IdleMemory {
            peers: counts.listed,
            peak_rss_mib: kib_to_mib(peak_rss_kib(gateway.pid())?),
            rss_mib: kib_to_mib(status_kib(gateway.pid(), "VmRSS")?),
            settle_seconds,
        });
        // The next gateway needs the TUN name and the UDP port.
        let status = gateway.terminate_and_wait(Duration::from_secs(10))?;
        if !status.success() {
            eprintln!("==> scale: the idle gateway exited with {status}");
        }
    }
    if s.interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }

    // 2. A cold start against peers that answer.
    eprintln!("==> scale: time until {PEERS} handshakes complete");
    let responder = Responder::start(&pair.b, &simulated, me.public_bytes()?, HANDSHAKE_LIMIT * 2)?;
    let (spawned, mut gateway) = start("scale-handshake-gateway.log")?;
    let deadline = spawned + HANDSHAKE_LIMIT;
    let mut last = PeerCounts::default();
    let mut last_error = String::new();
    let done_at = loop {
        if s.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        match metrics_counts(&pair.a, &mut gateway) {
            Ok(counts) if counts.handshaken >= usize::from(PEERS) => break Instant::now(),
            Ok(counts) => last = counts,
            Err(e) if !gateway.is_running() => bail!("{e}"),
            Err(e) => last_error = e,
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "only {} of {PEERS} handshakes after {HANDSHAKE_LIMIT:?} ({} peers listed){}",
                last.handshaken,
                last.listed,
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last_error}")
                }
            );
        }
        std::thread::sleep(POLL.min(deadline - now));
    };
    let seconds = done_at.duration_since(spawned).as_secs_f64();
    report.handshakes = Some(Handshakes {
        peers: usize::from(PEERS),
        seconds,
        last_response_seconds: responder
            .all_answered_at()
            .map(|t| t.saturating_duration_since(spawned).as_secs_f64()),
        peak_rss_mib_established: peak_rss_kib(gateway.pid()).ok().map(kib_to_mib),
    });
    drop(gateway);
    responder.stop()?;
    Ok(())
}

/// Fetches the gateway's /metrics and counts its peers; says why when it cannot.
fn metrics_counts(ns: &Netns, gateway: &mut ChildGuard) -> Result<PeerCounts, String> {
    if !gateway.is_running() {
        return Err(format!("gateway exited:\n{}", gateway.log_tail(15)));
    }
    fetch_metrics(ns, METRICS_ADDR)
        .map(|text| peer_counts(&text))
        .map_err(|e| e.to_string())
}

/// 10,000 /32 routes through a veth in a fresh namespace, then a no-op reconcile.
fn routes() -> Result<RouteReconcile> {
    let ns = Netns::new("scale-rt")?;
    // No dummy module in this kernel: a veth pair inside the namespace stands in.
    ns.ip(["link", "add", "rt0", "type", "veth", "peer", "name", "rt1"])?;
    ns.link_up("rt0")?;
    ns.link_up("rt1")?;
    let (seconds, writes, noop_seconds, noop_writes) = ns
        .try_run(|| -> Result<(f64, u64, f64, u64)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let netlink = Netlink::new().await?;
                let ifindex = netlink
                    .link_index("rt0")
                    .await?
                    .ok_or_else(|| anyhow!("rt0 not found"))?;
                let desired = desired_routes(ifindex);
                let before = netlink.writes();
                let started = Instant::now();
                netlink.reconcile(&desired, MAIN_TABLE).await?;
                let seconds = started.elapsed().as_secs_f64();
                let after = netlink.writes();
                let started = Instant::now();
                netlink.reconcile(&desired, MAIN_TABLE).await?;
                let noop_seconds = started.elapsed().as_secs_f64();
                Ok::<_, anyhow::Error>((
                    seconds,
                    after - before,
                    noop_seconds,
                    netlink.writes() - after,
                ))
            })
        })
        .context("entering the route namespace")??;
    let kernel_routes = ns
        .ip(["-4", "route", "show", "proto", "203"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    Ok(RouteReconcile {
        routes: ROUTES as usize,
        seconds,
        writes,
        kernel_routes,
        noop_seconds,
        noop_writes,
    })
}

/// 10,000 /32s from 10.64.0.0 out of `ifindex`, in the main table.
fn desired_routes(ifindex: u32) -> Vec<Route> {
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0));
    (0..ROUTES)
        .map(|i| Route {
            dst: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(base + i), 32)),
            next_hop: NextHop::Dev { ifindex },
            mtu: None,
            table: MAIN_TABLE,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_routes_are_distinct_host_routes() {
        let routes = desired_routes(7);
        assert_eq!(routes.len(), ROUTES as usize);
        assert_eq!(routes[0].dst.to_string(), "10.64.0.0/32");
        assert_eq!(routes[9_999].dst.to_string(), "10.64.39.15/32");
        let distinct: std::collections::HashSet<_> = routes.iter().map(|r| r.dst).collect();
        assert_eq!(distinct.len(), routes.len());
    }

    #[test]
    fn peer_endpoints_are_in_the_routed_subnet() {
        for i in 1..=PEERS {
            let (_, _, _, endpoint) = scale_peer(i);
            assert!(PEER_SUBNET.contains(endpoint.ip()));
        }
    }
}
