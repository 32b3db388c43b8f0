//! Causeway's WireGuard datapath, with no Kubernetes in it: the TUN interface and the UDP
//! socket with their segmentation offloads ([`tun`], [`udp`], [`offload`]), the sessions
//! per remote gateway ([`peers`], driven by [`Datapath`]), what a peer may send
//! ([`cidr`], [`host`], [`limiter`]), and the kernel routes that lead traffic into the
//! tunnel ([`route`] plans them, [`netlink`] applies them).
//!
//! The gateway binary decides *what* to carry from its configuration or the Kubernetes
//! API and hands this crate plain values: peer specs, routes, keys.

pub mod cidr;
mod engine;
pub mod host;
pub mod keys;
pub mod limiter;
pub mod netlink;
pub mod offload;
pub mod peers;
pub mod route;
pub mod stats;
#[allow(unsafe_code)] // TUN ioctls and the vnet header have no safe wrapper.
pub mod tun;
pub mod udp;

#[cfg(test)]
mod testing;

pub use engine::{Datapath, OWN_KEY_GRACE, REMOTE_KEY_GRACE};
