//! Causeway's end-to-end test support: sites as network namespaces, processes
//! that cannot outlive the test, and waits that say what they waited for.
// The harness drives namespaces, raw sockets and ioctls that have no safe wrapper.
#![allow(unsafe_code)]

pub mod apiserver;
pub mod bench;
pub mod harness;
pub mod resilience;

#[cfg(test)]
mod layout;
