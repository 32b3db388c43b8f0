//! The throughput part: raw veth, `boringtun-cli` and Causeway measured one
//! after another on the same two-namespace topology, each torn down before the next.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;

use super::iperf;
use super::report::{ConfigResult, CpuShare, DatapathReport, Kind, RssPair, StreamRun};
use super::stats::{cpu_percent, kib_to_mib, RttSummary};
use super::wg::UapiSocketCleanup;
use super::wg::{base64_key_to_hex, uapi_set, uapi_set_request, uapi_socket, KeyPair};
use super::world::{
    cluster_endpoint_doc, cpu_ticks, link_mtu, peak_rss_kib, spawn_gateway, ticks_per_second, Pair,
    A_CIDR, A_HEALTH, A_TUNNEL, A_UNDERLAY, A_VETH, B_CIDR, B_HEALTH, B_TUNNEL, B_UNDERLAY,
    CAUSEWAY_IF, WG_PORT,
};
use crate::harness::{wait_until_ok, ChildGuard, Netns};

/// What the throughput part needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Pings per configuration.
    pub pings: u32,
    /// Time between pings.
    pub ping_interval: Duration,
    /// The `causeway-gateway` binary.
    pub gateway: PathBuf,
    /// The `boringtun-cli` binary.
    pub boringtun_cli: PathBuf,
    /// Where keys, endpoints files, iperf3 reports and logs go.
    pub work_dir: PathBuf,
    /// Set on SIGINT/SIGTERM: stop at the next step.
    pub interrupted: Arc<AtomicBool>,
}

impl Settings {
    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// MTU `boringtun-cli`'s device gets, as in the usual wg-quick setup.
pub const BORINGTUN_MTU: u32 = 1420;

/// Measures all three configurations; a configuration that fails keeps the figures it got.
pub fn run(settings: &Settings) -> DatapathReport {
    let [raw_veth, boringtun_cli, causeway] = Kind::ALL.map(|kind| {
        if settings.interrupted.load(Ordering::Relaxed) {
            let mut r = ConfigResult::new(kind);
            r.errors.push("not measured: interrupted".into());
            return r;
        }
        measure(kind, settings)
    });
    DatapathReport {
        raw_veth,
        boringtun_cli,
        causeway,
    }
}

fn progress(kind: Kind, text: &str) {
    eprintln!("==> {}: {text}", kind.label());
}

/// The tunnel's two processes (A then B) and whatever must be cleaned after them.
/// Fields drop in order: processes stop before their sockets are removed.
struct Tunnel {
    processes: Vec<ChildGuard>,
    _sockets: Vec<UapiSocketCleanup>,
}

impl Tunnel {
    fn none() -> Tunnel {
        Tunnel {
            processes: Vec::new(),
            _sockets: Vec::new(),
        }
    }

    fn check_running(&mut self) -> Result<()> {
        for p in &mut self.processes {
            if !p.is_running() {
                bail!(
                    "{} exited; log {}:\n{}",
                    p.label(),
                    p.log_path().display(),
                    p.log_tail(15)
                );
            }
        }
        Ok(())
    }

    fn cpu_ticks(&self) -> Result<Vec<u64>> {
        self.processes.iter().map(|p| cpu_ticks(p.pid())).collect()
    }
}

fn measure(kind: Kind, s: &Settings) -> ConfigResult {
    let mut result = ConfigResult::new(kind);
    if let Err(e) = measure_into(kind, s, &mut result) {
        progress(kind, &format!("FAILED: {e:#}"));
        result.errors.push(format!("{e:#}"));
    }
    result
}

fn measure_into(kind: Kind, s: &Settings, result: &mut ConfigResult) -> Result<()> {
    progress(kind, "building namespaces A and B joined by a veth pair");
    let pair = Pair::new("bench")?;
    // Declared after `pair`, so the processes stop before the namespaces go.
    let mut tunnel = match kind {
        Kind::RawVeth => Tunnel::none(),
        Kind::BoringtunCli => start_boringtun(&pair, s)?,
        Kind::Causeway => start_causeway(&pair, s)?,
    };
    let (target, dev) = match kind {
        Kind::RawVeth => (B_UNDERLAY, A_VETH.to_string()),
        Kind::BoringtunCli => (B_TUNNEL, boringtun_ifname('A')),
        Kind::Causeway => (B_TUNNEL, CAUSEWAY_IF.to_string()),
    };
    result.mtu = Some(link_mtu(&pair.a, &dev)?);

    progress(kind, &format!("waiting until {target} answers pings"));
    wait_until_ok(
        &format!("{target} to answer pings from A ({})", kind.label()),
        Duration::from_secs(20),
        || {
            tunnel.check_running().map_err(|e| format!("{e:#}"))?;
            if s.interrupted.load(Ordering::Relaxed) {
                return Ok(());
            }
            pair.a
                .ping(IpAddr::V4(target), 1, Duration::from_millis(500))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )?;
    s.check_interrupted()?;

    progress(
        kind,
        &format!("{} pings every {:?} to {target}", s.pings, s.ping_interval),
    );
    let (sent, rtts) = ping_series(&pair.a, target, s);
    result.rtt = RttSummary::from_samples(sent, &rtts);
    if result.rtt.is_none() {
        result.errors.push(format!("no ping replies out of {sent}"));
    }
    s.check_interrupted()?;
    progress(kind, &format!("{} pings back to back to {target}", s.pings));
    // Bounded: each echo waits at most the timeout, so the series ends within pings x 1 s.
    let rtts = pair
        .a
        .ping_back_to_back(IpAddr::V4(target), s.pings, Duration::from_secs(1))?;
    result.rtt_back_to_back = RttSummary::from_samples(s.pings, &rtts);
    if result.rtt_back_to_back.is_none() {
        result
            .errors
            .push(format!("no replies to {} back-to-back pings", s.pings));
    }
    s.check_interrupted()?;

    let _server = iperf::start_server(&pair.b, target)?;
    let hz = ticks_per_second();
    for streams in [1u32, 4] {
        s.check_interrupted()?;
        progress(
            kind,
            &format!("iperf3 -P {streams} -t {} to {target}", s.seconds),
        );
        let before = tunnel.cpu_ticks()?;
        let started = Instant::now();
        let report = report_path(&s.work_dir, kind, streams);
        let outcome =
            iperf::run_client(&pair.a, target, s.seconds, streams, &report, &s.interrupted);
        let wall = started.elapsed();
        let after = tunnel.cpu_ticks();
        match outcome {
            Ok(iperf) => {
                let tunnel_cpu = match after {
                    Ok(after) if after.len() == 2 && before.len() == 2 => {
                        let a = cpu_percent(before[0], after[0], hz, wall);
                        let b = cpu_percent(before[1], after[1], hz, wall);
                        Some(CpuShare {
                            a_percent: a,
                            b_percent: b,
                            total_percent: a + b,
                        })
                    }
                    _ => None,
                };
                eprintln!(
                    "    {:.2} Gbit/s, {} retransmits{}",
                    iperf.gbit_per_s,
                    iperf.retransmits,
                    tunnel_cpu
                        .as_ref()
                        .map(|c| format!(", tunnel CPU {:.0} %", c.total_percent))
                        .unwrap_or_default()
                );
                let run = Some(StreamRun { iperf, tunnel_cpu });
                if streams == 1 {
                    result.one_stream = run;
                } else {
                    result.four_streams = run;
                }
            }
            Err(e) => {
                let e = format!("iperf3 -P {streams}: {e:#}");
                progress(kind, &format!("FAILED: {e}"));
                result.errors.push(e);
            }
        }
        tunnel.check_running()?;
    }

    if tunnel.processes.len() == 2 {
        let a = peak_rss_kib(tunnel.processes[0].pid())?;
        let b = peak_rss_kib(tunnel.processes[1].pid())?;
        result.peak_rss = Some(RssPair {
            a_mib: kib_to_mib(a),
            b_mib: kib_to_mib(b),
        });
    }
    progress(kind, "tearing down");
    Ok(())
}

/// Pings `dst` from `ns` `s.pings` times, one every `s.ping_interval`; bounded in time.
fn ping_series(ns: &Netns, dst: Ipv4Addr, s: &Settings) -> (u32, Vec<Duration>) {
    let start = Instant::now();
    let deadline = start + s.ping_interval * s.pings + Duration::from_secs(30);
    let mut rtts = Vec::with_capacity(s.pings as usize);
    let mut sent = 0;
    for i in 0..s.pings {
        if s.interrupted.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        // Pacing, not waiting for a condition: request i goes out at start + i * interval.
        let slot = start + s.ping_interval * i;
        if let Some(pause) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
        sent += 1;
        if let Ok(rtt) = ns.ping(IpAddr::V4(dst), 1, Duration::from_secs(1)) {
            rtts.push(rtt);
        }
    }
    (sent, rtts)
}

/// Unique per run (the UAPI socket directory is shared by every namespace), at most 15 bytes.
fn boringtun_ifname(side: char) -> String {
    format!("bt{side}{}", std::process::id() % 10_000)
}

fn start_boringtun(pair: &Pair, s: &Settings) -> Result<Tunnel> {
    let kind = Kind::BoringtunCli;
    let keys = [
        KeyPair::generate(&s.gateway)?,
        KeyPair::generate(&s.gateway)?,
    ];
    let mut tunnel = Tunnel::none();
    let sides = [
        (&pair.a, 'A', B_UNDERLAY, A_TUNNEL, B_CIDR, 1),
        (&pair.b, 'B', A_UNDERLAY, B_TUNNEL, A_CIDR, 0),
    ];
    for (i, (ns, side, peer_underlay, own, remote, peer)) in sides.into_iter().enumerate() {
        let ifname = boringtun_ifname(side);
        progress(
            kind,
            &format!("starting boringtun-cli {ifname} in {}", ns.name()),
        );
        let socket = uapi_socket(&ifname);
        // Registered before the process so it is removed after the process stops.
        tunnel._sockets.push(UapiSocketCleanup(socket.clone()));
        let mut cmd = Command::new(&s.boringtun_cli);
        cmd.env("WG_LOG_LEVEL", "error").args([
            "--foreground",
            "--disable-drop-privileges",
            &ifname,
        ]);
        let log = s.work_dir.join(format!("boringtun-{ifname}.log"));
        tunnel.processes.push(
            ns.spawn_logged(&mut cmd, &log)
                .context("starting boringtun-cli")?,
        );
        let conn = {
            let process = &mut tunnel.processes[i];
            wait_until_ok(
                &format!("boringtun-cli's UAPI socket {}", socket.display()),
                Duration::from_secs(10),
                || {
                    if !process.is_running() {
                        return Err(format!("boringtun-cli exited:\n{}", process.log_tail(10)));
                    }
                    UnixStream::connect(&socket).map_err(|e| e.to_string())
                },
            )?
        };
        let request = uapi_set_request(
            &base64_key_to_hex(&keys[i].private_b64)?,
            WG_PORT,
            &base64_key_to_hex(&keys[peer].public_b64)?,
            SocketAddr::from((peer_underlay, WG_PORT)),
            &[IpNet::V4(remote)],
        );
        uapi_set(conn, &request).with_context(|| format!("configuring {ifname}"))?;
        ns.ip(["addr", "add", &format!("{own}/32"), "dev", &ifname])?;
        ns.ip([
            "link",
            "set",
            &ifname,
            "up",
            "mtu",
            &BORINGTUN_MTU.to_string(),
        ])?;
        ns.ip(["route", "add", &remote.to_string(), "dev", &ifname])?;
    }
    Ok(tunnel)
}

fn start_causeway(pair: &Pair, s: &Settings) -> Result<Tunnel> {
    let kind = Kind::Causeway;
    let keys = [
        KeyPair::generate(&s.gateway)?,
        KeyPair::generate(&s.gateway)?,
    ];
    let sites = [
        ("site-a", &pair.a, A_UNDERLAY, A_CIDR, A_HEALTH),
        ("site-b", &pair.b, B_UNDERLAY, B_CIDR, B_HEALTH),
    ];
    // The target sits behind B's gateway, where a pod would: the gateway's own tunnel
    // address refuses everything but probes and the benchmark sink.
    pair.b
        .ip(["addr", "add", &format!("{B_TUNNEL}/32"), "dev", "lo"])
        .context("adding the iperf3 target to B's loopback")?;
    let endpoints: String = sites
        .iter()
        .zip(&keys)
        .map(|((cluster, _, underlay, cidr, health), key)| {
            cluster_endpoint_doc(
                cluster,
                &[IpNet::V4(*cidr)],
                SocketAddr::from((*underlay, WG_PORT)),
                &key.public_b64,
                *health,
            )
        })
        .collect();
    let endpoints_file = s.work_dir.join("causeway-endpoints.yaml");
    std::fs::write(&endpoints_file, endpoints)
        .with_context(|| format!("writing {}", endpoints_file.display()))?;
    let mut tunnel = Tunnel::none();
    for ((cluster, ns, underlay, _, _), key) in sites.iter().zip(&keys) {
        let key_file = s.work_dir.join(format!("{cluster}.key"));
        key.write_private(&key_file)?;
        progress(
            kind,
            &format!("starting causeway-gateway {cluster} in {}", ns.name()),
        );
        tunnel.processes.push(spawn_gateway(
            ns,
            &s.gateway,
            cluster,
            &key_file,
            SocketAddr::from((*underlay, WG_PORT)),
            &endpoints_file,
            &s.work_dir.join(format!("causeway-{cluster}.log")),
        )?);
    }
    // The route to the remote site is the gateway's to make; wait for it rather than guess.
    for (i, (cluster, ns, _, _, _)) in sites.iter().enumerate() {
        let remote = if i == 0 { B_CIDR } else { A_CIDR };
        let process = &mut tunnel.processes[i];
        wait_until_ok(
            &format!("{cluster}'s gateway to route {remote} into {CAUSEWAY_IF}"),
            Duration::from_secs(15),
            || {
                if !process.is_running() {
                    return Err(format!("gateway exited:\n{}", process.log_tail(15)));
                }
                let routes = ns
                    .ip(["-4", "route", "show", &remote.to_string()])
                    .map_err(|e| e.to_string())?;
                if routes.contains(CAUSEWAY_IF) {
                    Ok(())
                } else {
                    Err(format!("routes: {routes:?}"))
                }
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(tunnel)
}

/// Where the iperf3 JSON report of `kind`'s run with `streams` streams is written.
pub fn report_path(work_dir: &Path, kind: Kind, streams: u32) -> PathBuf {
    work_dir.join(format!("iperf3-{:?}-P{streams}.json", kind).to_lowercase())
}
