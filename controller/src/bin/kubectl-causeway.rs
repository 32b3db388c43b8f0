//! `kubectl causeway`: show, diagnose, verify and benchmark a Causeway clusterset through
//! one or several kubeconfig contexts at once. Thin: reading, findings, checks and tables
//! live in `causeway_controller::plugin`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use causeway_controller::plugin::benchmark::{self, BenchLine, BenchParams, BenchResult};
use causeway_controller::plugin::verify::{self, ClusterResult, Outcome};
use causeway_controller::plugin::{self, export, show, ClusterSnapshot, PluginError};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{AsyncBufReadExt, StreamExt};
use kube::Client;
use serde::Serialize;

/// Show and diagnose a Causeway clusterset across kubeconfig contexts.
#[derive(Parser, Debug)]
#[command(name = "kubectl-causeway", bin_name = "kubectl causeway", version)]
struct Cli {
    /// Kubeconfig context to read; repeat for several clusters (default: the current one).
    #[arg(long = "context", global = true)]
    contexts: Vec<String>,
    /// Kubeconfig file (default: $KUBECONFIG, which may list several, or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Causeway's namespace in every cluster.
    #[arg(short = 'n', long, global = true, default_value = "causeway")]
    namespace: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List clusters, gateways, connections, exports or imports.
    Show {
        /// What to list.
        #[arg(value_enum)]
        what: What,
    },
    /// Report everything wrong with the clusterset; exit 0 when nothing is, 1 when something is.
    Diagnose {
        /// Skip the live check of every ServiceImport's DNS answer through the active gateways.
        #[arg(long)]
        no_dns: bool,
    },
    /// Export a Service to the clusterset (creates its ServiceExport) in every context given.
    Export {
        /// The Service, as namespace/name (a bare name is in `default`).
        service: String,
    },
    /// Check every pair of clusters end to end from their active gateways: tunnel up, fresh
    /// RTT, exported services resolving (and accepting TCP); exit 1 when a check fails.
    Verify {
        /// Only this exported service, as namespace/name; repeat for several (default: every ServiceImport).
        #[arg(long = "service", value_name = "NAMESPACE/NAME")]
        services: Vec<String>,
        /// Skip the DNS and TCP checks of exported services.
        #[arg(long)]
        no_dns: bool,
    },
    /// Measure TCP throughput and RTT from one cluster's active gateway to another's, through the tunnel.
    Benchmark {
        /// Where to measure from: a kubeconfig context, or the cluster ID of one of --context.
        from: String,
        /// Where to measure to: a kubeconfig context or a cluster ID.
        to: String,
        /// Seconds of throughput measurement.
        #[arg(long, default_value_t = benchmark::DEFAULT_SECONDS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(benchmark::MAX_SECONDS)))]
        seconds: u32,
        /// Parallel TCP streams.
        #[arg(long, default_value_t = benchmark::DEFAULT_STREAMS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(benchmark::MAX_STREAMS)))]
        streams: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum What {
    Clusters,
    Gateways,
    Connections,
    Exports,
    Imports,
}

fn print<T: Serialize>(
    output: Output,
    rows: &[T],
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(rows)?),
        Output::Table => print!(
            "{}",
            show::table(header, &rows.iter().map(cells).collect::<Vec<_>>())
        ),
    }
    Ok(())
}

fn show_rows(output: Output, what: What, snapshots: &[ClusterSnapshot]) -> Result<()> {
    match what {
        What::Clusters => print(
            output,
            &show::clusters(snapshots),
            &[
                "CONTEXT",
                "CLUSTER",
                "KIND",
                "POD CIDRS",
                "SERVICE CIDRS",
                "GATEWAYS",
                "VALID",
            ],
            |r| {
                vec![
                    r.context.clone(),
                    r.cluster.clone(),
                    r.kind.into(),
                    r.pod_cidrs.clone(),
                    r.service_cidrs.clone(),
                    r.gateways.clone(),
                    r.valid.clone(),
                ]
            },
        ),
        What::Gateways => print(
            output,
            &show::gateways(snapshots),
            &[
                "CONTEXT",
                "CLUSTER",
                "NODE",
                "ROLE",
                "PUBLIC ENDPOINT",
                "PUBLIC KEY",
            ],
            |r| {
                vec![
                    r.context.clone(),
                    r.cluster.clone(),
                    r.node.clone(),
                    r.role.clone(),
                    r.public_endpoint.clone(),
                    r.public_key.clone(),
                ]
            },
        ),
        What::Connections => print(
            output,
            &show::connections(snapshots),
            &[
                "CONTEXT",
                "CLUSTER",
                "GATEWAY",
                "REMOTE",
                "STATE",
                // Written with the status's last change, not live: verify measures now.
                "RTT (AT CHANGE)",
                "HANDSHAKE (AT CHANGE)",
                "RX (AT CHANGE)",
                "TX (AT CHANGE)",
                "REASON",
            ],
            |r| {
                vec![
                    r.context.clone(),
                    r.cluster.clone(),
                    r.gateway.clone(),
                    r.remote.clone(),
                    r.state.clone(),
                    r.rtt.clone(),
                    r.last_handshake.clone(),
                    r.rx_bytes.to_string(),
                    r.tx_bytes.to_string(),
                    r.reason.clone(),
                ]
            },
        ),
        What::Exports => print(
            output,
            &show::exports(snapshots),
            &["CONTEXT", "NAMESPACE", "NAME", "VALID", "CONFLICT", "READY"],
            |r| {
                vec![
                    r.context.clone(),
                    r.namespace.clone(),
                    r.name.clone(),
                    r.valid.clone(),
                    r.conflict.clone(),
                    r.ready.clone(),
                ]
            },
        ),
        What::Imports => print(
            output,
            &show::imports(snapshots),
            &["CONTEXT", "NAMESPACE", "NAME", "TYPE", "PORTS", "CLUSTERS"],
            |r| {
                vec![
                    r.context.clone(),
                    r.namespace.clone(),
                    r.name.clone(),
                    r.type_.clone(),
                    r.ports.clone(),
                    r.clusters.clone(),
                ]
            },
        ),
    }
}

/// How long `verify` waits for one cluster's answer (a gateway needs about two seconds).
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long `benchmark` waits for the next line (they come twice a second).
const LINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A client (that reports a gateway's 503 at once) and a snapshot per context, read all at once.
async fn read_with_clients(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    namespace: &str,
) -> Result<Vec<(Client, ClusterSnapshot)>, PluginError> {
    let clients = plugin::clients(kubeconfig, contexts, namespace, false).await?;
    let reads = clients.into_iter().map(|(context, client)| async move {
        let snapshot =
            plugin::snapshot::snapshot(client.clone(), context, namespace.to_owned()).await?;
        Ok::<_, PluginError>((client, snapshot))
    });
    futures::future::try_join_all(reads).await
}

async fn run_verify(cli: &Cli, only: &[String], no_dns: bool) -> Result<ExitCode> {
    for wanted in only {
        if wanted
            .split_once('/')
            .is_none_or(|(ns, name)| ns.is_empty() || name.is_empty())
        {
            bail!(
                "--service {wanted:?} is not a service; write it as namespace/name, e.g. prod/db"
            );
        }
    }
    let clusters =
        read_with_clients(cli.kubeconfig.as_deref(), &cli.contexts, &cli.namespace).await?;
    let snapshots: Vec<ClusterSnapshot> = clusters.iter().map(|(_, s)| s.clone()).collect();
    let services = match no_dns {
        true => Vec::new(),
        false => verify::services_to_check(&snapshots, only),
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let asks = clusters.iter().map(|(client, s)| {
        let services = &services;
        async move {
            let ask = async {
                let pod = verify::find_gateway_pod(client, s, now).await?;
                pod.verify(client, services).await
            };
            // One cluster's API server or gateway hanging must not hang the whole check.
            let answer = match tokio::time::timeout(ASK_TIMEOUT, ask).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "context {:?}: no answer from the API server or the active gateway within {ASK_TIMEOUT:?}",
                    s.context
                )),
            };
            ClusterResult {
                cluster: s.cluster_id().to_owned(),
                answer,
            }
        }
    });
    let results = futures::future::join_all(asks).await;
    let rows = verify::rows(&results, &services);
    print(
        cli.output,
        &rows,
        &["FROM", "TO", "CHECK", "RESULT", "DETAIL"],
        |r| {
            vec![
                r.from.clone(),
                r.to.clone(),
                r.check.clone(),
                match r.outcome {
                    Outcome::Ok => "ok".into(),
                    Outcome::Fail => "FAIL".into(),
                },
                r.detail.clone(),
            ]
        },
    )?;
    let failed: Vec<_> = rows.iter().filter(|r| r.outcome == Outcome::Fail).collect();
    if cli.output == Output::Table && !failed.is_empty() {
        println!();
        for r in &failed {
            println!("FAIL {} -> {} {}: {}", r.from, r.to, r.check, r.detail);
            if let Some(fix) = &r.fix {
                println!("  fix: {fix}");
            }
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `diagnose`'s findings: the snapshot classes, then (unless `no_dns`) `dns-answer` from
/// every cluster whose active gateway answers. A gateway that cannot be asked gives no
/// DNS finding (the snapshot classes report gateway trouble), only a note on stderr.
async fn run_diagnose(cli: &Cli, no_dns: bool) -> Result<Vec<plugin::Finding>> {
    let now = k8s_openapi::jiff::Timestamp::now();
    if no_dns {
        let snapshots =
            plugin::load_snapshots(cli.kubeconfig.as_deref(), &cli.contexts, &cli.namespace)
                .await?;
        return Ok(plugin::diagnose(&snapshots, now));
    }
    let clusters =
        read_with_clients(cli.kubeconfig.as_deref(), &cli.contexts, &cli.namespace).await?;
    let snapshots: Vec<ClusterSnapshot> = clusters.iter().map(|(_, s)| s.clone()).collect();
    let mut findings = plugin::diagnose(&snapshots, now);
    let asks = clusters.iter().map(|(client, s)| async move {
        // Nothing to resolve: no need to reach the gateway (nor to say it was not reached).
        if s.imports.is_empty() {
            return Ok(Vec::new());
        }
        let ask = async {
            let slices = verify::causeway_slices(client, &s.context).await?;
            let expected = verify::dns_expectations(s, &slices);
            let checks: Vec<_> = expected.iter().map(|e| e.service.clone()).collect();
            let pod = verify::find_gateway_pod(client, s, now).await?;
            let answer = pod.verify(client, &checks).await?;
            // The cluster's DNS answers any gateway pod alike, passive or active.
            Ok::<_, verify::VerifyError>(verify::dns_findings(s, &expected, &answer))
        };
        let ask = async { ask.await.map_err(|e| e.to_string()) };
        match tokio::time::timeout(ASK_TIMEOUT, ask).await {
            Ok(result) => result.map_err(|reason| (s.cluster_id().to_owned(), reason)),
            Err(_) => Err((
                s.cluster_id().to_owned(),
                format!(
                    "no answer from the API server or the active gateway within {ASK_TIMEOUT:?}"
                ),
            )),
        }
    });
    for result in futures::future::join_all(asks).await {
        match result {
            Ok(found) => findings.extend(found),
            Err((cluster, reason)) => eprintln!("DNS not checked for {cluster}: {reason}"),
        }
    }
    findings.sort();
    findings.dedup();
    Ok(findings)
}

/// The kubeconfig's context names, to tell a context from a cluster ID.
fn context_names(kubeconfig: Option<&Path>) -> Result<Vec<String>, PluginError> {
    let config = match kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    }
    .map_err(|source| PluginError::Kubeconfig {
        path: kubeconfig.map(|p| p.display().to_string()),
        source,
    })?;
    Ok(config.contexts.into_iter().map(|c| c.name).collect())
}

async fn run_benchmark(
    cli: &Cli,
    from: &str,
    to: &str,
    seconds: u32,
    streams: u32,
) -> Result<ExitCode> {
    let kubeconfig = cli.kubeconfig.as_deref();
    let known = context_names(kubeconfig)?;
    let mut contexts = cli.contexts.clone();
    for name in [from, to] {
        if known.iter().any(|k| k == name) && !contexts.iter().any(|c| c == name) {
            contexts.push(name.to_owned());
        }
    }
    let clusters = read_with_clients(kubeconfig, &contexts, &cli.namespace).await?;
    let matches = |s: &ClusterSnapshot, name: &str| s.context == name || s.cluster_id() == name;
    let read: Vec<String> = clusters
        .iter()
        .map(|(_, s)| format!("{} (cluster {})", s.context, s.cluster_id()))
        .collect();
    let Some((client, source)) = clusters.iter().find(|(_, s)| matches(s, from)) else {
        bail!("{from:?} is neither a kubeconfig context nor the cluster ID of a context read ({}); pass it as a context (`kubectl config get-contexts`) or add its context with --context", read.join(", "));
    };
    let to_id = clusters
        .iter()
        .find(|(_, s)| matches(s, to))
        .map_or(to, |(_, s)| s.cluster_id())
        .to_owned();
    if to_id == source.cluster_id() {
        bail!("{from:?} and {to:?} are both cluster {to_id}; benchmark two different clusters");
    }
    let params = BenchParams::new(&to_id, seconds, streams)?;
    let pod = verify::find_gateway_pod(client, source, k8s_openapi::jiff::Timestamp::now()).await?;
    let from_id = source.cluster_id().to_owned();
    let bar = std::io::stderr().is_terminal();
    eprintln!(
        "benchmark {from_id} -> {to_id}: {seconds} s, {streams} stream{} from gateway pod {}/{} on {}",
        if streams == 1 { "" } else { "s" },
        pod.namespace,
        pod.pod,
        pod.node
    );
    let body = pod.stream(client, &params.path()).await?;
    let mut lines = body.lines();
    let mut result: Option<BenchResult> = None;
    loop {
        let Ok(next) = tokio::time::timeout(LINE_TIMEOUT, lines.next()).await else {
            bail!(
                "gateway pod {} sent nothing for {LINE_TIMEOUT:?}; check its log",
                pod.pod
            );
        };
        let Some(line) = next else { break };
        let line =
            line.with_context(|| format!("reading the benchmark from gateway pod {}", pod.pod))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: BenchLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "gateway pod {} sent {line:?}; is it older than this plugin?",
                pod.pod
            )
        })?;
        match parsed {
            BenchLine::Latency { probes_sent, rtt } => match rtt {
                Some(r) => eprintln!(
                    "idle rtt: min {:.3} ms, avg {:.3} ms, p99 {:.3} ms ({}/{probes_sent} probes)",
                    r.min_ms, r.avg_ms, r.p99_ms, r.samples
                ),
                None => eprintln!("idle rtt: none of {probes_sent} probes answered"),
            },
            BenchLine::Progress {
                elapsed_seconds,
                bytes,
            } => {
                let text = benchmark::progress_text(
                    &from_id,
                    &to_id,
                    elapsed_seconds,
                    seconds,
                    bytes,
                    bar,
                );
                if bar {
                    eprint!("\r{text}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{text}");
                }
            }
            BenchLine::Result(mut r) => {
                r.from = from_id.clone();
                result = Some(r);
            }
            BenchLine::Error { message } => {
                if bar {
                    eprintln!();
                }
                bail!("gateway pod {} ({from_id}): {message}", pod.pod);
            }
        }
    }
    if bar {
        eprintln!();
    }
    let Some(result) = result else {
        bail!(
            "gateway pod {} ended the benchmark without figures; check its log",
            pod.pod
        );
    };
    match cli.output {
        Output::Table => print!("{}", benchmark::summary(&result)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&result)?),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let kubeconfig = cli.kubeconfig.as_deref();
    let read = || plugin::load_snapshots(kubeconfig, &cli.contexts, &cli.namespace);
    match &cli.command {
        Command::Show { what } => {
            show_rows(cli.output, *what, &read().await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose { no_dns } => {
            let findings = run_diagnose(&cli, *no_dns).await?;
            if cli.output != Output::Table {
                print(cli.output, &findings, &[], |_| vec![])?;
            } else if !findings.is_empty() {
                // Healthy prints nothing in a table: `diagnose && deploy` reads well in scripts.
                print(
                    cli.output,
                    &findings,
                    &["CONTEXT", "CLASS", "OBJECT", "MESSAGE"],
                    |f| {
                        vec![
                            f.context.clone(),
                            f.class.to_string(),
                            f.object.clone(),
                            f.message.clone(),
                        ]
                    },
                )?;
            }
            Ok(if findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Export { service } => {
            let (namespace, name) = export::parse_target(service)?;
            for (context, client) in
                plugin::clients(kubeconfig, &cli.contexts, &cli.namespace, true).await?
            {
                let what = match export::export_service(client, &context, &namespace, &name).await?
                {
                    export::ExportOutcome::Created => "exported",
                    export::ExportOutcome::AlreadyExported => "already exported",
                };
                println!("{context}: serviceexport/{namespace}/{name} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { services, no_dns } => run_verify(&cli, services, *no_dns).await,
        Command::Benchmark {
            from,
            to,
            seconds,
            streams,
        } => run_benchmark(&cli, from, to, *seconds, *streams).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => Ok(code),
        Err(e) => {
            // The errors carry their causes in their own messages; {e} avoids printing them twice.
            eprintln!("kubectl causeway: {e}");
            Ok(ExitCode::from(2))
        }
    }
}
