//! `causeway-bench services`: service export and import at scale. A broker and three
//! cluster API servers (in-memory, in this process, on 127.0.0.1), 1,000
//! ServiceExports spread over the clusters (each with its Service and EndpointSlice,
//! headless and ClusterSetIP alternating), and the three real `causeway-controller`
//! binaries. Measured: the time from starting the controllers until every
//! ServiceImport and EndpointSlice exists in every cluster (target: under 5 s), until
//! every export is `Ready`, the writes of a settled clusterset (should be none), the
//! time for one more export to reach the other clusters, and each controller's peak
//! RSS (`VmHWM`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec, GatewayEndpoint, ServiceExport};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

use super::stats::kib_to_mib;
use super::wg::KeyPair;
use super::world::{cpu_ticks, peak_rss_kib, status_kib, ticks_per_second};
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::Filter;
use crate::apiserver::{ApiServer, Gvr};
use crate::fixtures::namespace;
use crate::harness::ChildGuard;

/// The broker's namespace.
const BROKER_NS: &str = "causeway-broker";
/// The controllers' own namespace in each cluster.
const CONTROLLER_NS: &str = "causeway";
/// How many application namespaces the exports are spread over (each exists everywhere).
const NAMESPACES: usize = 10;
/// How often convergence is checked.
const POLL: Duration = Duration::from_millis(50);
/// The convergence target.
pub const TARGET: Duration = Duration::from_secs(5);

/// What the benchmark needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `causeway-controller` binary.
    pub controller: PathBuf,
    /// Where kubeconfigs, endpoint files and logs go.
    pub work_dir: PathBuf,
    /// ServiceExports in all (spread round-robin over the clusters).
    pub exports: usize,
    /// Member clusters.
    pub clusters: usize,
    /// How long convergence may take before the figure counts as failed.
    pub timeout: Duration,
    /// Set on SIGINT/SIGTERM.
    pub interrupted: Arc<AtomicBool>,
}

/// One controller's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerFigures {
    /// Its cluster.
    pub cluster: String,
    /// Peak RSS (VmHWM) at the end, MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU time (user + system) used in all, seconds.
    pub cpu_seconds: Option<f64>,
}

/// Everything the benchmark measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServicesReport {
    /// Member clusters.
    pub clusters: usize,
    /// ServiceExports in all.
    pub exports: usize,
    /// ServiceImports + EndpointSlices expected in every cluster.
    pub objects_per_cluster: usize,
    /// Seconds to seed every API server.
    pub seed_seconds: f64,
    /// Seconds from spawning the controllers until every one runs its export sync
    /// (process start and leader election).
    pub leading_seconds: Option<f64>,
    /// Seconds from spawning until every import and slice exists in every cluster.
    pub converged_seconds: Option<f64>,
    /// The same, counted from the moment the last controller started its export sync.
    pub converged_after_leading_seconds: Option<f64>,
    /// Seconds from spawning until every ServiceExport is `Ready=True`.
    pub ready_seconds: Option<f64>,
    /// Writes to any API server during a quiet period once everything converged.
    pub settled_writes: Option<u64>,
    /// Length of that quiet period, seconds.
    pub settled_window_seconds: f64,
    /// Milliseconds for one more export to be imported in every other cluster.
    pub incremental_ms: Option<f64>,
    /// Per controller.
    pub controllers: Vec<ControllerFigures>,
    /// This process's peak RSS (the in-memory API servers and the seeding), MiB.
    pub bench_process_peak_rss_mib: Option<f64>,
    /// The convergence target, seconds.
    pub target_seconds: f64,
    /// Whether `converged_seconds` met the target.
    pub target_met: bool,
    /// What failed, if anything.
    pub errors: Vec<String>,
}

/// The benchmark's world: the servers and, once started, the controllers.
struct World {
    broker: ApiServer,
    clusters: Vec<(String, ApiServer)>,
}

fn cluster_id(i: usize) -> String {
    format!("site-{}", (b'a' + i as u8) as char)
}

fn namespace_of(i: usize) -> String {
    format!("app-{}", i % NAMESPACES)
}

fn bind() -> Result<ApiServer> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    ApiServer::try_start_with(listener, Default::default()).context("starting an API server")
}

/// Service `svc-<i>`, its EndpointSlice and its ServiceExport, in the cluster that owns `i`.
fn seed_export(server: &ApiServer, i: usize, cluster: usize) -> Result<()> {
    let store = server.store();
    let ns = namespace_of(i);
    let name = format!("svc-{i}");
    // Half headless (endpoints with hostnames), half ClusterSetIP.
    let headless = i & 1 == 0;
    let cluster_ip = if headless {
        "None".to_owned()
    } else {
        format!("10.{}.{}.{}", 100 + cluster, (i / 250) % 250, i % 250 + 1)
    };
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.clone()),
        ..ObjectMeta::default()
    };
    let service = Service {
        metadata: meta(&name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.clone()),
            cluster_ips: Some(vec![cluster_ip]),
            ports: Some(vec![ServicePort {
                name: Some("tcp".to_owned()),
                port: 5432,
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    store
        .create(&service)
        .map_err(|e| anyhow::anyhow!("seeding Service {ns}/{name}: {e:?}"))?;
    let mut slice_meta = meta(&format!("{name}-abcde"));
    slice_meta.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_owned(),
        name.clone(),
    )]));
    let endpoints = (0..3)
        .map(|pod| Endpoint {
            addresses: vec![format!("10.{}.{}.{}", cluster + 1, i % 250, pod + 1)],
            hostname: headless.then(|| format!("{name}-{pod}")),
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        })
        .collect();
    let slice = EndpointSlice {
        metadata: slice_meta,
        address_type: "IPv4".to_owned(),
        endpoints,
        ports: None,
    };
    store
        .create(&slice)
        .map_err(|e| anyhow::anyhow!("seeding EndpointSlice for {ns}/{name}: {e:?}"))?;
    let export = ServiceExport {
        metadata: meta(&name),
        spec: Default::default(),
        status: None,
    };
    store
        .create(&export)
        .map_err(|e| anyhow::anyhow!("seeding ServiceExport {ns}/{name}: {e:?}"))?;
    Ok(())
}

impl World {
    fn seed(clusters: usize, exports: usize) -> Result<World> {
        let broker = bind()?;
        broker
            .store()
            .create(&namespace(BROKER_NS))
            .map_err(|e| anyhow::anyhow!("seeding the broker namespace: {e:?}"))?;
        let mut world = World {
            broker,
            clusters: Vec::new(),
        };
        for c in 0..clusters {
            let server = bind()?;
            for ns in
                std::iter::once(CONTROLLER_NS.to_owned()).chain((0..NAMESPACES).map(namespace_of))
            {
                server
                    .store()
                    .create(&namespace(&ns))
                    .map_err(|e| anyhow::anyhow!("seeding namespace {ns}: {e:?}"))?;
            }
            world.clusters.push((cluster_id(c), server));
        }
        for i in 0..exports {
            let c = i % clusters;
            seed_export(&world.clusters[c].1, i, c)?;
        }
        Ok(world)
    }

    /// Objects Causeway has written in a cluster: managed ServiceImports and slices.
    fn imported(&self, server: &ApiServer) -> usize {
        let count = |gvr: &Gvr, selector: &str| -> usize {
            let Ok(labels) = LabelSelector::parse(selector) else {
                return 0;
            };
            let filter = Filter {
                labels,
                fields: FieldSelector::default(),
            };
            // A page of one counts the rest without cloning them: the poll must not
            // hold the store's lock (and stall the server) while copying thousands.
            server
                .store()
                .read(|s| s.list(gvr, None, &filter, Some(1), None))
                .map(|page| page.items.len() + page.remaining)
                .unwrap_or(0)
        };
        count(
            &Gvr::of::<causeway_crds::ServiceImport>(),
            "causeway.dev/managed=true",
        ) + count(
            &Gvr::of::<EndpointSlice>(),
            "endpointslice.kubernetes.io/managed-by=causeway.dev,multicluster.kubernetes.io/source-cluster",
        )
    }

    /// ServiceExports of a cluster whose `Ready` condition is True.
    fn ready(server: &ApiServer) -> usize {
        server
            .store()
            .read(|s| {
                s.list(
                    &Gvr::of::<ServiceExport>(),
                    None,
                    &Filter::default(),
                    None,
                    None,
                )
            })
            .map(|page| page.items.iter().filter(|e| is_ready(e)).count())
            .unwrap_or(0)
    }

    fn total_writes(&self) -> u64 {
        self.broker.total_writes()
            + self
                .clusters
                .iter()
                .map(|(_, s)| s.total_writes())
                .sum::<u64>()
    }
}

fn is_ready(export: &Value) -> bool {
    export["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A ClusterEndpoint manifest for `cluster` (the controller needs one to start).
fn endpoint_file(work: &std::path::Path, cluster: &str, n: usize) -> Result<PathBuf> {
    let spec = ClusterEndpointSpec {
        cluster_id: cluster.to_owned(),
        pod_cidrs: vec![format!("10.{}.0.0/16", n + 1)],
        service_cidrs: vec![format!("10.{}.0.0/16", 100 + n)],
        gateways: vec![GatewayEndpoint {
            node_name: format!("{cluster}-gw"),
            public_endpoint: format!("198.18.0.{}:51820", n + 1),
            public_key: KeyPair::random().public_b64,
            private_ip: None,
            private_ips: vec![],
            health_check_ip: None,
        }],
    };
    let path = work.join(format!("services-{cluster}.yaml"));
    std::fs::write(
        &path,
        serde_yaml::to_string(&ClusterEndpoint::new(cluster, spec))?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn spawn_controller(s: &Settings, world: &World, i: usize) -> Result<ChildGuard> {
    let (cluster, server) = &world.clusters[i];
    let broker_config = s
        .work_dir
        .join(format!("services-broker-{cluster}.kubeconfig"));
    let local_config = s.work_dir.join(format!("services-{cluster}.kubeconfig"));
    world
        .broker
        .write_kubeconfig(&broker_config, BROKER_NS)
        .context("writing the broker kubeconfig")?;
    server
        .write_kubeconfig(&local_config, CONTROLLER_NS)
        .context("writing a cluster kubeconfig")?;
    let spec = endpoint_file(&s.work_dir, cluster, i)?;
    let log_path = s
        .work_dir
        .join(format!("services-controller-{cluster}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = std::process::Command::new(&s.controller)
        .args(["--cluster", cluster, "--broker-namespace", BROKER_NS])
        .args(["--namespace", CONTROLLER_NS])
        .arg("--broker-kubeconfig")
        .arg(&broker_config)
        .arg("--kubeconfig")
        .arg(&local_config)
        .arg("--endpoint-file")
        .arg(&spec)
        .env_remove("CAUSEWAY_POD_CIDRS")
        .env_remove("CAUSEWAY_SERVICE_CIDRS")
        // RUST_LOG=causeway_controller=debug shows each pass's list and plan times.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", s.controller.display()))?;
    Ok(ChildGuard::new(
        child,
        format!("controller {cluster}"),
        log_path,
    ))
}

/// Runs the benchmark; a part that fails leaves its figure empty and says why.
pub fn run(s: &Settings) -> ServicesReport {
    let mut report = ServicesReport {
        clusters: s.clusters,
        exports: s.exports,
        objects_per_cluster: 2 * s.exports,
        target_seconds: TARGET.as_secs_f64(),
        settled_window_seconds: 2.0,
        ..ServicesReport::default()
    };
    if let Err(e) = measure(s, &mut report) {
        eprintln!("==> services: FAILED: {e:#}");
        report.errors.push(format!("{e:#}"));
    }
    report.bench_process_peak_rss_mib = peak_rss_kib(std::process::id()).ok().map(kib_to_mib);
    report.target_met = report
        .converged_seconds
        .is_some_and(|t| t < TARGET.as_secs_f64());
    report
}

fn measure(s: &Settings, report: &mut ServicesReport) -> Result<()> {
    if s.clusters < 2 || s.clusters > 26 {
        bail!("--clusters must be between 2 and 26");
    }
    eprintln!(
        "==> services: seeding {} ServiceExports over {} clusters",
        s.exports, s.clusters
    );
    let seeding = Instant::now();
    let world = World::seed(s.clusters, s.exports)?;
    report.seed_seconds = seeding.elapsed().as_secs_f64();
    let expected = report.objects_per_cluster;

    eprintln!("==> services: starting {} controllers", s.clusters);
    let spawned = Instant::now();
    let mut controllers = (0..s.clusters)
        .map(|i| spawn_controller(s, &world, i))
        .collect::<Result<Vec<_>>>()?;
    let mut leading: Option<Instant> = None;
    let mut converged: Option<Instant> = None;
    let mut ready: Option<Instant> = None;
    while ready.is_none() || converged.is_none() {
        if s.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if spawned.elapsed() > s.timeout {
            let counts: Vec<String> = world
                .clusters
                .iter()
                .map(|(id, server)| {
                    format!(
                        "{id}: {}/{expected} objects, {} exports ready",
                        world.imported(server),
                        World::ready(server)
                    )
                })
                .collect();
            bail!(
                "not converged after {:?}: {}; controller logs in {}",
                s.timeout,
                counts.join("; "),
                s.work_dir.display()
            );
        }
        for c in &mut controllers {
            if !c.is_running() {
                bail!("{} exited:\n{}", c.label(), c.log_tail(20));
            }
        }
        if leading.is_none()
            && controllers.iter().all(|c| {
                std::fs::read_to_string(c.log_path())
                    .is_ok_and(|log| log.contains("export sync started"))
            })
        {
            leading = Some(Instant::now());
        }
        if converged.is_none()
            && world
                .clusters
                .iter()
                .all(|(_, server)| world.imported(server) >= expected)
        {
            converged = Some(Instant::now());
        }
        if ready.is_none()
            && world
                .clusters
                .iter()
                .map(|(_, s)| World::ready(s))
                .sum::<usize>()
                >= s.exports
        {
            ready = Some(Instant::now());
        }
        std::thread::sleep(POLL);
    }
    let since = |t: Option<Instant>| t.map(|t| (t - spawned).as_secs_f64());
    report.leading_seconds = since(leading);
    report.converged_seconds = since(converged);
    report.ready_seconds = since(ready);
    report.converged_after_leading_seconds = match (leading, converged) {
        (Some(l), Some(c)) => Some(c.saturating_duration_since(l).as_secs_f64()),
        _ => None,
    };
    eprintln!(
        "==> services: converged after {:.2} s; waiting for quiet",
        report.converged_seconds.unwrap_or_default()
    );

    // Settled: the echo passes of the controllers' own writes find nothing to do.
    let deadline = Instant::now() + Duration::from_secs(30);
    let window = Duration::from_secs_f64(report.settled_window_seconds);
    loop {
        let before = world.total_writes();
        std::thread::sleep(window);
        let writes = world.total_writes() - before;
        if writes == 0 || Instant::now() > deadline {
            report.settled_writes = Some(writes);
            break;
        }
    }

    // One more export in the first cluster.
    let i = s.exports;
    let started = Instant::now();
    seed_export(&world.clusters[0].1, i, 0)?;
    let target = expected + 2;
    while !world
        .clusters
        .iter()
        .all(|(_, server)| world.imported(server) >= target)
    {
        if started.elapsed() > s.timeout {
            bail!(
                "the extra export was not imported everywhere in {:?}",
                s.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    report.incremental_ms = Some(started.elapsed().as_secs_f64() * 1000.0);

    let hz = ticks_per_second() as f64;
    for (c, (cluster, _)) in controllers.iter().zip(&world.clusters) {
        report.controllers.push(ControllerFigures {
            cluster: cluster.clone(),
            peak_rss_mib: status_kib(c.pid(), "VmHWM").ok().map(kib_to_mib),
            cpu_seconds: cpu_ticks(c.pid()).ok().map(|t| t as f64 / hz),
        });
    }
    for c in &mut controllers {
        let _ = c.terminate_and_wait(Duration::from_secs(10));
    }
    Ok(())
}

/// The figures as a small table.
pub fn table(r: &ServicesReport) -> String {
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
    let mut out = String::new();
    out += &format!(
        "service export/import: {} exports over {} clusters ({} imported objects per cluster)\n",
        r.exports, r.clusters, r.objects_per_cluster
    );
    out += &format!("  {:<52} {:>12}\n", "figure", "value");
    out += &format!(
        "  {:<52} {:>12}\n",
        "seeding the API servers",
        secs(Some(r.seed_seconds))
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        "controllers started and leading",
        secs(r.leading_seconds)
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        format!(
            "every import and slice everywhere (target < {:.0} s)",
            r.target_seconds
        ),
        secs(r.converged_seconds)
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        "  of which after leading",
        secs(r.converged_after_leading_seconds)
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        "every ServiceExport Ready",
        secs(r.ready_seconds)
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        format!("writes in {:.0} s once settled", r.settled_window_seconds),
        r.settled_writes.map_or("-".to_owned(), |w| w.to_string())
    );
    out += &format!(
        "  {:<52} {:>12}\n",
        "one more export imported everywhere",
        r.incremental_ms
            .map_or("-".to_owned(), |v| format!("{v:.0} ms"))
    );
    for c in &r.controllers {
        out += &format!(
            "  {:<52} {:>12}\n",
            format!("controller {} peak RSS (VmHWM) / CPU", c.cluster),
            format!(
                "{} / {}",
                c.peak_rss_mib
                    .map_or("-".to_owned(), |v| format!("{v:.1} MiB")),
                c.cpu_seconds
                    .map_or("-".to_owned(), |v| format!("{v:.2} s"))
            )
        );
    }
    out += &format!(
        "  {:<52} {:>12}\n",
        "bench process (API servers) peak RSS",
        r.bench_process_peak_rss_mib
            .map_or("-".to_owned(), |v| format!("{v:.1} MiB"))
    );
    out += &format!(
        "  target met: {}\n",
        if r.target_met { "yes" } else { "NO" }
    );
    out
}
