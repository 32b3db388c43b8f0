//! The Causeway gateway: the WireGuard datapath between sites, its routes, and the route agent.
//!
//! `main.rs` is a thin shell over these modules: `config` decides what this node
//! should hold (from an endpoints file, or through `clusterset` from ClusterEndpoint
//! objects), `route` plans kernel routes, `netlink` applies them, `datapath` moves
//! packets, `node` switches between gateway and route agent, `metrics` reports (with
//! `agent` answering `kubectl causeway verify` and `benchmark`), and
//! `kubernetes` runs it all from the Kubernetes API, with `status` deciding what the
//! Gateway object says.

pub mod agent;
pub mod agent_auth;
pub mod clusterset;
pub mod config;
pub mod health;
pub mod kubernetes;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod status;
