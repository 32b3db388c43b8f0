//! The Causeway gateway: the WireGuard datapath between sites, its routes, and the route agent.
//!
//! `main.rs` is a thin shell over these modules: `config` decides what this node
//! should hold, `route` plans kernel routes, `netlink` applies them, `datapath`
//! moves packets, and `metrics` reports.

pub mod config;
pub mod datapath;
pub mod health;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod route;
pub mod tun;
