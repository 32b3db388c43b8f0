//! causeway-controller: builds this cluster's ClusterEndpoint from the cluster,
//! publishes it to the broker, and mirrors every other cluster's into the local
//! cluster.
//!
//! A library with a thin binary (`main.rs`), so tests drive the same code against
//! in-memory API servers. It holds the spec builder ([`local`], pure), the broker
//! sync ([`sync`]), leader election ([`leader`]), the probe endpoint ([`health`]),
//! service export and import ([`exports`]), the `clusterset.local` DNS server ([`dns`])
//! and the `kubectl causeway` plugin ([`plugin`]).

pub mod dns;
pub mod exports;
pub mod health;
pub mod local;
pub mod plugin;
pub mod sync;
