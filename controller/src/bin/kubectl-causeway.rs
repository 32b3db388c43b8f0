//! `kubectl causeway`: show and diagnose a Causeway clusterset through one or several
//! kubeconfig contexts at once. Thin: reading, findings and tables live in
//! `causeway_controller::plugin`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use causeway_controller::plugin::{self, export, show, ClusterSnapshot};
use clap::{Parser, Subcommand, ValueEnum};
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
    Diagnose,
    /// Export a Service to the clusterset (creates its ServiceExport) in every context given.
    Export {
        /// The Service, as namespace/name (a bare name is in `default`).
        service: String,
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
                "RTT",
                "LAST HANDSHAKE",
                "RX",
                "TX",
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

async fn run(cli: Cli) -> Result<ExitCode> {
    let kubeconfig = cli.kubeconfig.as_deref();
    let read = || plugin::load_snapshots(kubeconfig, &cli.contexts, &cli.namespace);
    match &cli.command {
        Command::Show { what } => {
            show_rows(cli.output, *what, &read().await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose => {
            let findings = plugin::diagnose(&read().await?, k8s_openapi::jiff::Timestamp::now());
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
            for (context, client) in plugin::clients(kubeconfig, &cli.contexts).await? {
                let what = match export::export_service(client, &context, &namespace, &name).await?
                {
                    export::ExportOutcome::Created => "exported",
                    export::ExportOutcome::AlreadyExported => "already exported",
                };
                println!("{context}: serviceexport/{namespace}/{name} {what}");
            }
            Ok(ExitCode::SUCCESS)
        }
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
