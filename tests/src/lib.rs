//! Causeway's end-to-end test support: sites as network namespaces, processes
//! that cannot outlive the test, waits that say what they waited for, and the fixtures
//! the test files share.
// The harness drives namespaces, raw sockets and ioctls that have no safe wrapper.
#![allow(unsafe_code)]

pub mod apiserver;
pub mod bench;
pub mod fixtures;
pub mod harness;
pub mod resilience;

#[cfg(test)]
mod layout;
