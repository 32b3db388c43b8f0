//! The Causeway gateway binary's library: it decides what this node carries and drives
//! the datapath (the `causeway-datapath` crate) accordingly.
//!
//! `main.rs` is a thin shell over these modules: `config` decides what this node
//! should hold (from an endpoints file, or through `clusterset` from ClusterEndpoint
//! objects), `node` switches between gateway and route agent and applies routes,
//! `rtt_probe` measures round trips through the tunnel, `metrics` and `http` report,
//! `diagnostics` answers `kubectl causeway verify` and `benchmark`, `liveness` tells
//! candidates which of them is alive, and `kubernetes` runs it all from the Kubernetes
//! API, with `status` deciding what the Gateway object says.

pub mod clusterset;
pub mod config;
pub mod diagnostics;
pub mod http;
pub mod kubernetes;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod rtt_probe;
pub mod status;
