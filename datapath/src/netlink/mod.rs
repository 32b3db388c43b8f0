//! The thin shell over rtnetlink: lists Causeway's routes, applies a
//! [`RoutePlan`], and manages the few link settings the gateway owns. Every
//! decision about *what* to change lives in [`crate::route`]; this module
//! only reads the kernel and carries plans out: [`message`] translates between
//! Causeway's routes and netlink messages (pure), [`routes`] and [`link`] make the
//! requests, [`error`] says what a refusal means and how to fix it.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
    RouteVia,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::route::{
    plan_routes, NextHop, Route, RoutePlan, FAIL_CLOSED_METRIC, MAIN_TABLE, ROUTE_PROTOCOL,
};

/// Route requests kept in flight at once: enough to hide the per-request
/// round trip with 10,000 routes, small enough not to overrun the socket's
/// receive buffer with acknowledgements.
const PIPELINE_DEPTH: usize = 64;

mod error;
mod link;
mod message;
mod routes;

use error::{describe, errno};
pub use error::{NetlinkError, RouteFailure};
use message::{
    effective_table, family_number, link_mtu_attr, link_name, message_table, route_from_message,
    route_message,
};
pub use routes::{ApplyReport, RouteOp};

/// One rtnetlink connection plus a count of the writes made through it.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    writes: AtomicU64,
}

impl Netlink {
    /// Opens the rtnetlink connection and spawns its driver on the current tokio runtime.
    pub async fn new() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| NetlinkError::Connect {
            source: io::Error::other(e),
        })?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connect { source })?;
        runtime.spawn(connection);
        Ok(Self {
            handle,
            writes: AtomicU64::new(0),
        })
    }

    /// The underlying rtnetlink handle, for requests this module does not wrap.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Number of write requests (route and link changes) made so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
