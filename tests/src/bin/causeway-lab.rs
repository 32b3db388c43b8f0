//! The two-site lab: two clusters in network namespaces joined by Causeway gateways,
//! a PostgreSQL primary in site A replicating to a standby in site B across the tunnel.
//!
//! Everything lives in namespaces this process creates and deletes on exit or Ctrl-C;
//! the root namespace is never touched.

use anyhow::{bail, Context, Result};
use causeway_tests::harness::kube::KubeWorld;
use causeway_tests::harness::mesh::{metric, Mesh};
use causeway_tests::harness::postgres::Postgres;
use causeway_tests::harness::topology::Site;
use causeway_tests::harness::ScratchDir;
use clap::Parser;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Two sites joined by Causeway, with PostgreSQL replicating across the tunnel")]
struct Args {
    /// Seconds of write load on the primary.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rows inserted per second.
    #[arg(long, default_value_t = 2000)]
    rows_per_second: u64,
    /// Keep the lab running after the load until Ctrl-C, to explore it with `ip netns exec`.
    #[arg(long)]
    hold: bool,
    /// Run the full control plane instead of endpoints files: a broker and one API server
    /// per site (the in-memory stand-in), a controller per site, two gateway candidates
    /// electing an active one, and a route agent; the sites find each other through the broker.
    #[arg(long)]
    kubernetes: bool,
}

/// The two sites, joined either way.
enum Lab {
    Standalone(Box<Mesh>),
    Kubernetes(Box<KubeWorld>),
}

impl Lab {
    fn site(&self, i: usize) -> &Site {
        match self {
            Lab::Standalone(mesh) => mesh.site(i),
            Lab::Kubernetes(kube) => kube.site(i),
        }
    }

    /// Metrics of site `i`'s (active) gateway.
    fn gateway_metrics(&self, i: usize) -> Result<String> {
        Ok(match self {
            Lab::Standalone(mesh) => mesh.gateway_metrics(i)?,
            Lab::Kubernetes(kube) => {
                let k = kube
                    .active_gateway(i)
                    .context("the site has no active gateway")?;
                kube.gateway_metrics(i, k)?
            }
        })
    }
}

fn main() {
    let args = Args::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Ctrl-C must unwind through the guards so every namespace is deleted.
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("cannot handle signal {signal}: {e}");
            std::process::exit(1);
        }
    }
    let result = run(&args, &interrupted);
    println!("lab: torn down; nothing is left in the root namespace");
    if interrupted.load(Ordering::Relaxed) && !args.hold {
        eprintln!("lab: interrupted");
        std::process::exit(130);
    }
    if let Err(e) = result {
        eprintln!("lab failed: {e:#}");
        std::process::exit(1);
    }
}

fn describe<'a>(site: impl Fn(usize) -> &'a Site) {
    for i in 0..2 {
        let s = &site(i).spec;
        println!(
            "      {}: pods {:?}, gateway {} on the WAN, pod {}",
            s.cluster_id(),
            s.pod_cidrs()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            s.underlay_ip(),
            s.pod_ip()
        );
    }
}

fn step(n: u32, text: &str) {
    println!("[{n}/6] {text}");
}

fn check(interrupted: &AtomicBool) -> Result<()> {
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn run(args: &Args, interrupted: &AtomicBool) -> Result<()> {
    if nix::unistd::geteuid().as_raw() != 0 {
        bail!("the lab creates network namespaces: run it as root");
    }
    let started = Instant::now();
    let lab = if args.kubernetes {
        step(
            1,
            "building site-a and site-b (two gateway candidates, a worker and a pod each), a WAN, and real Kubernetes control planes (kube-apiserver, kube-controller-manager, one etcd) for each site and the broker, the chart installed in each",
        );
        let mut kube = KubeWorld::new(2).context("building the sites")?;
        describe(|i| kube.site(i));
        check(interrupted)?;
        step(
            2,
            "starting per site the controller, both gateway candidates and the route agent (no endpoints file)",
        );
        for i in 0..2 {
            kube.start_site(i)?;
        }
        kube.wait_ready(Duration::from_secs(30))?;
        for i in 0..2 {
            let spec = kube.spec(i);
            let active = kube.active_gateway(i).context("no active gateway")?;
            println!(
                "      {}: active gateway {} (Lease {}); look with: kubectl --kubeconfig {} -n causeway get clusterendpoints,gateways,leases",
                spec.cluster_id(),
                spec.candidate(active).node_name(),
                causeway_crds::names::gateway_lease(&spec.cluster_id()),
                kube.cluster_api(i).admin_kubeconfig()?.display()
            );
        }
        Lab::Kubernetes(Box::new(kube))
    } else {
        step(
            1,
            "building site-a and site-b (gateway node, worker node, pod) and a WAN between them",
        );
        let mut mesh = Mesh::new(2).context("building the sites")?;
        describe(|i| mesh.site(i));
        check(interrupted)?;
        step(
            2,
            "starting the gateways (standalone, endpoints file) and route agents",
        );
        for i in 0..2 {
            mesh.write_endpoints(i, &[0, 1])?;
        }
        for i in 0..2 {
            mesh.start_site(i)?;
            println!(
                "      {} endpoints file: {}",
                mesh.site(i).spec.cluster_id(),
                mesh.endpoints_path(i).display()
            );
        }
        mesh.wait_handshakes(&[0, 1], Duration::from_secs(10))
            .with_context(|| mesh.logs())?;
        Lab::Standalone(Box::new(mesh))
    };
    println!(
        "      WireGuard handshake complete after {:.2}s",
        started.elapsed().as_secs_f64()
    );
    check(interrupted)?;

    let scratch = ScratchDir::new("cw-lab")?;
    let primary_ip = lab.site(0).spec.pod_ip();
    step(
        3,
        &format!("starting the PostgreSQL primary in site-a's pod ({primary_ip})"),
    );
    let primary = Postgres::start_primary(&lab.site(0).pod, primary_ip.into(), scratch.path())?;
    check(interrupted)?;

    let replica_ip = lab.site(1).spec.pod_ip();
    step(4, &format!("starting the standby in site-b's pod ({replica_ip}): base backup and WAL stream cross the tunnel"));
    let replica = Postgres::start_replica(
        &lab.site(1).pod,
        replica_ip.into(),
        &primary_ip.to_string(),
        scratch.path(),
    )?;
    for row in primary.replication_status()? {
        println!("      pg_stat_replication on the primary: {row}");
    }
    check(interrupted)?;

    step(
        5,
        &format!(
            "writing {} rows/s on the primary for {}s",
            args.rows_per_second, args.seconds
        ),
    );
    primary.sql("CREATE TABLE events (id bigint PRIMARY KEY, site text, payload text, at timestamptz DEFAULT now())")?;
    let mut written = 0u64;
    let load_start = Instant::now();
    for second in 1..=args.seconds {
        check(interrupted)?;
        let from = written + 1;
        written += args.rows_per_second;
        primary.sql(&format!(
            "INSERT INTO events (id, site, payload) SELECT g, 'site-a', md5(g::text) FROM generate_series({from}, {written}) g"
        ))?;
        let lsn = primary.current_lsn()?;
        replica.wait_replayed(&lsn, Duration::from_secs(10))?;
        let on_replica = replica.sql("SELECT count(*) FROM events")?;
        let lag = replica.replay_lag_seconds()?.unwrap_or(0.0);
        let text = lab.gateway_metrics(1)?;
        let rx = metric(
            &text,
            "causeway_peer_rx_bytes_total",
            &[("remote_cluster", "site-a")],
        )
        .unwrap_or(0.0);
        let hs = metric(
            &text,
            "causeway_peer_handshakes_total",
            &[("remote_cluster", "site-a")],
        )
        .unwrap_or(0.0);
        let rtt = metric(
            &text,
            "causeway_peer_rtt_seconds",
            &[("remote_cluster", "site-a"), ("stat", "avg")],
        );
        let rtt = rtt.map_or("-".to_string(), |r| format!("{:.3} ms", r * 1000.0));
        println!(
            "      t={second:>3}s  primary {written:>7} rows  standby {on_replica:>7} rows  replay lag {:>6.1} ms  tunnel a→b {:>7.2} MB  probe RTT {rtt}  handshakes {hs}",
            lag * 1000.0,
            rx / 1e6
        );
        let next = load_start + Duration::from_secs(second);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }

    step(6, "comparing the table on both sites");
    let (a, b) = (
        primary.table_checksum("events")?,
        replica.table_checksum("events")?,
    );
    println!("      site-a md5 {a}\n      site-b md5 {b}");
    if a != b {
        bail!("the standby's table differs from the primary's");
    }
    println!("      identical: {written} rows replicated across the tunnel");
    let text = lab.gateway_metrics(0)?;
    let drops: f64 = ["no_peer", "source_not_allowed", "unknown_peer", "invalid"]
        .iter()
        .filter_map(|r| metric(&text, "causeway_datapath_drops_total", &[("reason", r)]))
        .sum();
    println!("      site-a gateway dropped {drops} packets");

    if args.hold {
        println!("lab: holding; explore with `ip netns list` and `ip netns exec <ns> ...`; Ctrl-C to tear down");
        while !interrupted.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("lab: tearing down");
    drop(replica);
    drop(primary);
    drop(lab);
    Ok(())
}
