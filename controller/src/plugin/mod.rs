//! The `kubectl causeway` plugin's library: reads one snapshot of Causeway's objects
//! per kubeconfig context ([`snapshot`]), turns a set of snapshots into findings
//! ([`findings`], pure) and into tables ([`show`], pure), exports services
//! ([`export`]), and checks and measures the tunnels end to end through each cluster's
//! active gateway ([`verify`], [`benchmark`]: wire types shared with the gateway's agent,
//! and the pure judgement of its answers). The binary
//! (`src/bin/kubectl-causeway.rs`) only parses flags and prints.

pub use causeway_wire::benchmark;
pub mod export;
pub mod findings;
pub mod show;
pub mod snapshot;
pub mod verify;

pub use findings::{diagnose, Finding, FindingClass};
pub use snapshot::{clients, load_snapshots, ClusterSnapshot, PluginError};
