//! `causeway-bench datapath`: raw veth, `boringtun-cli` and Causeway measured
//! side by side on one namespace pair with iperf3 and ping, then the scale
//! figures; prints tables and writes the same figures as JSON.
//!
//! `causeway-bench services`: 1,000 ServiceExports over three clusters (in-memory
//! API servers) synced by the real controller binaries: time to converge, writes
//! once settled, one more export's latency, and each controller's peak RSS.
//!
//! It reports, it does not assert: it exits 0 whether targets are met or
//! missed, 1 if a measurement broke, 130 if interrupted. Everything lives in
//! namespaces it creates and deletes; the root namespace is never touched.

use anyhow::{bail, Context, Result};
use causeway_tests::bench::report::{
    compare, datapath_table, datapath_targets, scale_table, scale_targets, Comparison,
    DatapathReport, ScaleReport, Target,
};
use causeway_tests::bench::{datapath, scale, services};
use causeway_tests::harness::{find_workspace_binary, ScratchDir};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "causeway-bench",
    about = "Causeway's datapath against raw veth and boringtun-cli, and its scale figures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput, retransmits, RTT, CPU and memory of raw veth, boringtun-cli and Causeway,
    /// then memory and handshake time with 100 peers and route reconcile time for 10,000 CIDRs.
    Datapath(DatapathArgs),
    /// Service export and import at scale: ServiceExports spread over in-memory clusters,
    /// synced by the real controller binaries; time until every import and slice exists
    /// everywhere, writes once settled, and the controllers' peak RSS.
    Services(ServicesArgs),
}

#[derive(clap::Args)]
struct ServicesArgs {
    /// Where to write the figures as JSON [default: <target dir>/bench/services.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// ServiceExports in all, spread round-robin over the clusters.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    exports: u32,
    /// Member clusters (each with its own API server and controller).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=26))]
    clusters: u32,
    /// Seconds convergence may take before the run counts as failed.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
    /// Keep kubeconfigs, endpoint files and the controllers' logs in this directory
    /// [default: a scratch directory, deleted afterwards].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DatapathArgs {
    /// Where to write the figures as JSON [default: <target dir>/bench/datapath.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=300))]
    seconds: u32,
    /// Pings per configuration (one every 10 ms).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pings: u32,
    /// The boringtun-cli binary [default: <target dir>/bench-tools/bin/boringtun-cli, else PATH].
    #[arg(long)]
    boringtun_cli: Option<PathBuf>,
    /// Skip the scale figures.
    #[arg(long)]
    skip_scale: bool,
    /// Only the scale figures (no iperf3, no boringtun-cli needed).
    #[arg(long, conflicts_with = "skip_scale")]
    only_scale: bool,
}

/// Everything written to the JSON file.
#[derive(Serialize)]
struct Output {
    /// Bumped when a field changes meaning.
    schema: u32,
    host: Host,
    settings: OutputSettings,
    datapath: Option<DatapathReport>,
    comparison: Option<Comparison>,
    scale: Option<ScaleReport>,
    targets: Vec<Target>,
}

#[derive(Serialize)]
struct Host {
    cpus: usize,
    kernel: String,
    gateway: String,
    boringtun_cli: Option<String>,
}

#[derive(Serialize)]
struct OutputSettings {
    iperf_seconds: u32,
    pings: u32,
    ping_interval_ms: u64,
    boringtun_cli_mtu: u32,
}

const PING_INTERVAL: Duration = Duration::from_millis(10);

fn main() {
    let cli = Cli::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Ctrl-C must unwind through the guards so every namespace is deleted.
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("causeway-bench: cannot handle signal {signal}: {e}");
            std::process::exit(1);
        }
    }
    let result = match cli.command {
        Command::Datapath(args) => run(&args, &interrupted),
        Command::Services(args) => run_services(&args, &interrupted),
    };
    let code = match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("causeway-bench: {e:#}");
            1
        }
    };
    if interrupted.load(Ordering::Relaxed) {
        eprintln!("causeway-bench: interrupted; everything it built is torn down");
        std::process::exit(130);
    }
    std::process::exit(code);
}

/// Runs the benchmark; `Ok(false)` when some measurement broke (figures are still written).
fn run(args: &DatapathArgs, interrupted: &Arc<AtomicBool>) -> Result<bool> {
    if nix::unistd::geteuid().as_raw() != 0 {
        bail!("the benchmark creates network namespaces: run it as root (sudo scripts/bench)");
    }
    let gateway = find_workspace_binary("causeway-gateway")?;
    let target_dir = target_dir()?;
    let boringtun_cli = match &args.boringtun_cli {
        Some(path) => Some(path.clone()),
        None => default_boringtun_cli(&target_dir),
    };
    let boringtun_cli = match (boringtun_cli, args.only_scale) {
        (Some(path), _) => Some(path),
        (None, true) => None,
        (None, false) => bail!(
            "boringtun-cli not found in {} or on PATH; install it with \
             `cargo install --locked boringtun-cli --version 0.7.1 --root target/bench-tools` \
             or run scripts/bench, which does",
            target_dir.join("bench-tools/bin").display()
        ),
    };
    if !args.only_scale {
        for tool in ["iperf3", "ss", "ip"] {
            which(tool).with_context(|| {
                format!("`{tool}` is not installed (Debian: apt-get install iperf3 iproute2)")
            })?;
        }
    }
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench").join("datapath.json"));
    let work = ScratchDir::new("cw-bench-").context("creating a scratch directory")?;

    let host = Host {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        gateway: gateway.display().to_string(),
        boringtun_cli: boringtun_cli.as_ref().map(|p| p.display().to_string()),
    };
    println!(
        "causeway-bench: {} CPUs, kernel {}; scratch {}",
        host.cpus,
        host.kernel,
        work.path().display()
    );

    let mut ok = true;
    let mut targets = Vec::new();
    let (datapath_report, comparison) = match (&boringtun_cli, args.only_scale) {
        (Some(boringtun_cli), false) => {
            let settings = datapath::Settings {
                seconds: args.seconds,
                pings: args.pings,
                ping_interval: PING_INTERVAL,
                gateway: gateway.clone(),
                boringtun_cli: boringtun_cli.clone(),
                work_dir: work.path().to_path_buf(),
                interrupted: Arc::clone(interrupted),
            };
            let report = datapath::run(&settings);
            let comparison = compare(&report);
            println!();
            print!("{}", datapath_table(&report, &comparison, args.seconds));
            ok &= [&report.raw_veth, &report.boringtun_cli, &report.causeway]
                .iter()
                .all(|r| r.errors.is_empty());
            targets.extend(datapath_targets(&comparison));
            (Some(report), Some(comparison))
        }
        _ => (None, None),
    };

    let scale_report = if args.skip_scale || interrupted.load(Ordering::Relaxed) {
        None
    } else {
        let report = scale::run(&scale::Settings {
            gateway: gateway.clone(),
            work_dir: work.path().to_path_buf(),
            interrupted: Arc::clone(interrupted),
        });
        println!();
        print!("{}", scale_table(&report));
        ok &= report.errors.is_empty();
        targets.extend(scale_targets(&report));
        Some(report)
    };

    let output = Output {
        schema: 1,
        host,
        settings: OutputSettings {
            iperf_seconds: args.seconds,
            pings: args.pings,
            ping_interval_ms: PING_INTERVAL.as_millis() as u64,
            boringtun_cli_mtu: datapath::BORINGTUN_MTU,
        },
        datapath: datapath_report,
        comparison,
        scale: scale_report,
        targets,
    };
    write_json(&json_path, &output)?;
    println!();
    println!("figures written to {}", json_path.display());
    if !ok {
        println!(
            "some measurements FAILED (see above); the figures that were measured are reported"
        );
    }
    Ok(ok)
}

/// What `services` writes to its JSON file.
#[derive(Serialize)]
struct ServicesOutput {
    /// Bumped when a field changes meaning.
    schema: u32,
    cpus: usize,
    controller: String,
    services: services::ServicesReport,
}

/// Runs the services benchmark; `Ok(false)` when a measurement broke (figures are still written).
fn run_services(args: &ServicesArgs, interrupted: &Arc<AtomicBool>) -> Result<bool> {
    let controller = find_workspace_binary("causeway-controller")?;
    let target_dir = target_dir()?;
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench").join("services.json"));
    // The scratch directory (if any) lives until the figures are written.
    let (work_dir, _scratch) = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let scratch =
                ScratchDir::new("cw-bench-services-").context("creating a scratch directory")?;
            (scratch.path().to_path_buf(), Some(scratch))
        }
    };
    let report = services::run(&services::Settings {
        controller: controller.clone(),
        work_dir,
        exports: args.exports as usize,
        clusters: args.clusters as usize,
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
        interrupted: Arc::clone(interrupted),
    });
    println!();
    print!("{}", services::table(&report));
    let ok = report.errors.is_empty();
    let output = ServicesOutput {
        schema: 1,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        controller: controller.display().to_string(),
        services: report,
    };
    write_json(&json_path, &output)?;
    println!();
    println!("figures written to {}", json_path.display());
    if !ok {
        println!("the measurement FAILED (see above); the figures that were measured are reported");
    }
    Ok(ok)
}

fn write_json(path: &Path, output: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(output)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Cargo's target directory: the running binary lives in `<target>/<profile>/`.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("the executable has no target directory")
}

fn default_boringtun_cli(target_dir: &Path) -> Option<PathBuf> {
    let local = target_dir.join("bench-tools/bin/boringtun-cli");
    if local.is_file() {
        return Some(local);
    }
    which("boringtun-cli").ok()
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found on PATH"))
}
