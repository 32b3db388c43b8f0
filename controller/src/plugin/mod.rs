//! The `kubectl causeway` plugin's library: reads one snapshot of Causeway's objects
//! per kubeconfig context ([`snapshot`]), turns a set of snapshots into findings
//! ([`findings`], pure) and into tables ([`show`], pure), and exports services
//! ([`export`]). The binary
//! (`src/bin/kubectl-causeway.rs`) only parses flags and prints.

pub mod export;
pub mod findings;
pub mod show;
pub mod snapshot;

pub use findings::{diagnose, Finding, FindingClass};
pub use snapshot::{clients, load_snapshots, ClusterSnapshot, PluginError};
