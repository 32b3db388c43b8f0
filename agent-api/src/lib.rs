//! What `kubectl causeway` and the gateway's agent say to each other: the wire types of
//! `GET /verify` and `GET /benchmark`, and the bounds both sides enforce. Its own crate so
//! that the gateway (and the datapath fuzz targets) link none of the controller.

pub mod benchmark;
pub mod verify;
