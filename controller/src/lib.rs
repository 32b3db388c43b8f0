//! causeway-controller: publishes this cluster's ClusterEndpoint to the broker and
//! mirrors every other cluster's into the local cluster.
//!
//! A library with a thin binary (`main.rs`), so tests drive the same code against
//! in-memory API servers. Today it holds the broker sync ([`sync`]) and leader
//! election ([`leader`]); building the local ClusterEndpoint from nodes and Gateway
//! objects, ServiceExport/ServiceImport and DNS come later.

pub mod leader;
pub mod sync;
