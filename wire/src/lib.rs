//! What Causeway's binaries say to each other: the wire types of the gateway agent's
//! `GET /verify` and `GET /benchmark` (and the bounds both sides enforce), the ports
//! each part listens on, and the unit per-source limits count. Its own crate, free of
//! Kubernetes, so that the datapath and the gateway link none of the controller.

pub mod benchmark;
pub mod keys;
pub mod net;
pub mod ports;
pub mod verify;
