//! `causeway-resilience`: runs the resilience scenarios of issue #8 (gateway crash,
//! graceful hand-over, synchronous PostgreSQL standby across a crash, key rotation,
//! roaming) on throw-away worlds in network namespaces and prints one table of their
//! figures: gap per scenario, rows acknowledged/present, connections dropped.
//!
//! Run as root after `cargo build --workspace --bins`:
//! `target/debug/causeway-resilience [--only crash,graceful,postgres,rotation,roaming]`.
//! Exits 1 when a figure misses its bound.

use anyhow::{bail, Result};
use causeway_tests::resilience::{table_header, SCENARIOS};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "causeway-resilience",
    about = "Failover, rotation and roaming figures of Causeway (issue #8)"
)]
struct Cli {
    /// Only these scenarios (comma-separated): crash, graceful, postgres, rotation, roaming.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    for name in &cli.only {
        if !SCENARIOS.iter().any(|(n, _)| n == name) {
            bail!("unknown scenario {name:?}; choose from crash, graceful, postgres, rotation, roaming");
        }
    }
    let mut rows = Vec::new();
    let mut missed = 0;
    for (name, scenario) in SCENARIOS {
        if !cli.only.is_empty() && !cli.only.iter().any(|n| n == name) {
            continue;
        }
        eprintln!("== {name}");
        match scenario() {
            Ok(figure) => {
                if figure.check().is_err() {
                    missed += 1;
                }
                rows.push(figure.to_string());
                eprintln!("   {}", figure.detail);
            }
            Err(e) => {
                missed += 1;
                rows.push(format!("{name:<34} could not run: {e}"));
            }
        }
    }
    println!("{}", table_header());
    for row in rows {
        println!("{row}");
    }
    if missed > 0 {
        bail!("{missed} scenario(s) missed their figures");
    }
    Ok(())
}
