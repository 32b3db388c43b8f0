//! The thin shell over rtnetlink: lists Causeway's routes, applies a
//! [`RoutePlan`], and manages the few link settings the gateway owns. Every
//! decision about *what* to change lives in [`crate::route`]; this module
//! only reads the kernel and carries plans out.

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

/// Failures of netlink operations, each naming the object involved and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink route socket: {source}; the gateway needs Linux rtnetlink and must run inside a tokio runtime")]
    Connect {
        /// Underlying I/O error.
        source: io::Error,
    },
    /// Dumping the routing table failed.
    #[error("listing IPv{family} routes in table {table} failed: {}", describe(.source))]
    ListRoutes {
        /// Table being listed.
        table: u32,
        /// IP version, 4 or 6.
        family: u8,
        /// Error from rtnetlink.
        source: rtnetlink::Error,
    },
    /// Reading or changing an interface failed.
    #[error("{op} interface {link} failed: {}", describe(.source))]
    Link {
        /// What was attempted, e.g. "setting up".
        op: &'static str,
        /// Interface name or index.
        link: String,
        /// Error from rtnetlink.
        source: rtnetlink::Error,
    },
    /// The interface does not exist.
    #[error("interface {link} does not exist; it may have been deleted, restart the gateway to recreate it")]
    LinkNotFound {
        /// Interface name or index.
        link: String,
    },
    /// The kernel described an interface without its MTU.
    #[error("interface {link} reports no MTU; the kernel answer lacked IFLA_MTU, check the kernel version")]
    MissingMtu {
        /// Interface name or index.
        link: String,
    },
    /// Reading or adding an address failed.
    #[error("{op} address {addr} on interface {link} failed: {}", describe(.source))]
    Address {
        /// What was attempted, e.g. "adding".
        op: &'static str,
        /// Address (with prefix when adding).
        addr: String,
        /// Interface name or index ("any" when listing all).
        link: String,
        /// Error from rtnetlink.
        source: rtnetlink::Error,
    },
    /// No local subnet holds a next hop.
    #[error("no interface on this node has a subnet holding {addr}; the gateway's privateIP must be on a network this node is attached to (check spec.gateways[].privateIP)")]
    NotOnSubnet {
        /// The next hop.
        addr: IpAddr,
    },
    /// No interface on this node holds the given underlay address.
    #[error("no interface on this node holds {addr}; configure the address on the node or give the gateway an address it actually has")]
    AddressNotFound {
        /// The address looked for.
        addr: IpAddr,
    },
    /// No interface could carry the underlay.
    #[error("no underlay interface: no IPv{family} default route in the main table and no up non-loopback interface; configure the node's network or give the gateway its underlay address")]
    NoUnderlay {
        /// IP version, 4 or 6.
        family: u8,
    },
    /// A desired route names a different table than the one being reconciled.
    #[error("route {route} is for table {}, but table {table} is being reconciled; reconcile each table separately", .route.table)]
    TableMismatch {
        /// The offending route.
        route: Route,
        /// Table being reconciled.
        table: u32,
    },
    /// Some route changes failed; the others were applied.
    #[error("{} route change(s) failed ({report}): {}", .failures.len(), list_failures(.failures))]
    Apply {
        /// What was done, including the failures.
        report: ApplyReport,
        /// One entry per failed route.
        failures: Vec<RouteFailure>,
    },
}

/// Counts of the route changes an [`Netlink::apply`] made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    /// Routes created.
    pub added: usize,
    /// Routes overwritten in place.
    pub replaced: usize,
    /// Routes removed (including ones already gone).
    pub deleted: usize,
    /// Changes the kernel refused.
    pub failed: usize,
}

impl ApplyReport {
    /// Number of changes that took effect.
    pub fn changed(&self) -> usize {
        self.added + self.replaced + self.deleted
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "added {}, replaced {}, deleted {}, failed {}",
            self.added, self.replaced, self.deleted, self.failed
        )
    }
}

/// Which kind of route change was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOp {
    /// Create a route that must not exist yet.
    Add,
    /// Overwrite a route in place.
    Replace,
    /// Remove a route.
    Delete,
}

impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteOp::Add => "add",
            RouteOp::Replace => "replace",
            RouteOp::Delete => "delete",
        })
    }
}

/// One route change the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// What was attempted.
    pub op: RouteOp,
    /// The route it was attempted on.
    pub route: Route,
    /// The kernel's errno, when the kernel answered.
    pub errno: Option<i32>,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for RouteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.route, self.message)
    }
}

fn list_failures(failures: &[RouteFailure]) -> String {
    // Thousands of identical failures (say, a missing capability) would
    // drown the log; the full list stays in the error value.
    const SHOWN: usize = 5;
    let mut out = failures
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if failures.len() > SHOWN {
        out.push_str(&format!("; and {} more", failures.len() - SHOWN));
    }
    out
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

fn hint(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM | libc::EACCES => {
            "the gateway needs CAP_NET_ADMIN: run it privileged or grant the capability"
        }
        libc::ENODEV => "the interface does not exist; it may have been deleted",
        libc::ENETDOWN => "the interface is down; bring it up first",
        libc::ENETUNREACH => {
            "the next hop is not on a subnet connected to the interface; fix the gateway address or add an address in its subnet"
        }
        libc::EEXIST => {
            "an entry with the same key already exists and was not made by Causeway (route protocol 203); remove it or use a dedicated routing table"
        }
        libc::ESRCH => "no such route in the kernel",
        libc::EINVAL => {
            "the kernel rejected the request as invalid; check the prefix, the next-hop address family and the MTU"
        }
        libc::ENOBUFS | libc::ENOMEM => "the kernel ran out of buffer space; retry",
        libc::EAFNOSUPPORT | libc::EOPNOTSUPP => {
            "the kernel does not support this address family; is IPv6 disabled?"
        }
        _ => return None,
    })
}

fn describe(err: &rtnetlink::Error) -> String {
    match errno(err) {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code);
            match hint(code) {
                Some(hint) => format!("{text}; {hint}"),
                None => text.to_string(),
            }
        }
        None => err.to_string(),
    }
}

fn effective_table(table: u32) -> u32 {
    if table == 0 {
        MAIN_TABLE
    } else {
        table
    }
}

fn family_number(v6: bool) -> u8 {
    if v6 {
        6
    } else {
        4
    }
}

fn message_table(msg: &RouteMessage) -> u32 {
    // RTA_TABLE carries ids above 255; the header byte is then RT_TABLE_COMPAT.
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Converts a kernel route into Causeway's model. Returns `None` for routes
/// the model cannot express (non-IP families).
fn route_from_message(msg: &RouteMessage) -> Option<Route> {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst_addr = unspecified;
    let mut oif = None;
    let mut gateway = None;
    let mut mtu = None;
    let mut multipath = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst_addr = route_address(a)?,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = route_address(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) if *v != 0 => Some(*v),
                    _ => None,
                });
            }
            RouteAttribute::MultiPath(hops) => multipath = Some(hops.len()),
            _ => {}
        }
    }
    let dst = IpNet::new(dst_addr, msg.header.destination_prefix_length).ok()?;
    // Causeway never creates multipath routes. One carrying our protocol is
    // left over from something else; ifindex 0 never equals a desired next
    // hop, so the planner replaces or deletes it, and an unset oif matches
    // any next hop when deleting.
    let next_hop = match (multipath, gateway) {
        _ if msg.header.kind == RouteType::Unreachable => NextHop::Unreachable,
        (Some(_), _) => NextHop::Dev { ifindex: 0 },
        (None, Some(gateway)) => NextHop::Via {
            gateway,
            ifindex: oif.unwrap_or(0),
        },
        (None, None) => NextHop::Dev {
            ifindex: oif.unwrap_or(0),
        },
    };
    Some(Route {
        dst,
        next_hop,
        mtu,
        table: message_table(msg),
    })
}

/// Builds the netlink message for one route change. Deletes carry the
/// observed next hop so that, of duplicates, exactly the intended one goes.
fn route_message(route: &Route, op: RouteOp) -> Result<RouteMessage, String> {
    let scope = match (op, route.next_hop) {
        // RT_SCOPE_NOWHERE on delete means "any scope", as `ip route del` does.
        (RouteOp::Delete, _) => RouteScope::NoWhere,
        (_, NextHop::Dev { .. }) => RouteScope::Link,
        (_, NextHop::Via { .. } | NextHop::Unreachable) => RouteScope::Universe,
    };
    let kind = match route.next_hop {
        NextHop::Unreachable => RouteType::Unreachable,
        NextHop::Dev { .. } | NextHop::Via { .. } => RouteType::Unicast,
    };
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| format!("{e}; the route's prefix is not a valid IP prefix"))?
        .table_id(route.table)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
        .scope(scope)
        .kind(kind);
    if route.is_fail_closed() {
        // On delete too: of the routes for this prefix, exactly the fail-closed one.
        builder = builder.priority(FAIL_CLOSED_METRIC);
    }
    let ifindex = route.next_hop.ifindex();
    if ifindex != 0 {
        builder = builder.output_interface(ifindex);
    }
    if let NextHop::Via { gateway, .. } = route.next_hop {
        builder = builder
            .gateway(gateway)
            .map_err(|e| format!("{e}; use a gateway of the destination's address family"))?;
    }
    let mut message = builder.build();
    if op != RouteOp::Delete {
        if let Some(mtu) = route.mtu {
            message
                .attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
    }
    Ok(message)
}

fn link_name(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(format!("{name} (ifindex {})", msg.header.index)),
            _ => None,
        })
        .unwrap_or_else(|| format!("ifindex {}", msg.header.index))
}

fn link_mtu_attr(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

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

    async fn dump_routes(&self, v6: bool, table: u32) -> Result<Vec<RouteMessage>, NetlinkError> {
        let request = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let result: Result<Vec<RouteMessage>, rtnetlink::Error> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await;
        match result {
            Ok(messages) => Ok(messages),
            // A kernel without IPv6 has no IPv6 routes to own.
            Err(e) if v6 && matches!(errno(&e), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => {
                Ok(Vec::new())
            }
            Err(source) => Err(NetlinkError::ListRoutes {
                table,
                family: family_number(v6),
                source,
            }),
        }
    }

    /// IPv4 and IPv6 routes in `table` carrying [`ROUTE_PROTOCOL`].
    pub async fn list_owned_routes(&self, table: u32) -> Result<Vec<Route>, NetlinkError> {
        let table = effective_table(table);
        let mut routes = Vec::new();
        for v6 in [false, true] {
            // Filtered here rather than by the kernel: strict dump filtering
            // fails with ENOENT for a table that holds no routes yet.
            for msg in self.dump_routes(v6, table).await? {
                if u8::from(msg.header.protocol) != ROUTE_PROTOCOL
                    || !matches!(msg.header.kind, RouteType::Unicast | RouteType::Unreachable)
                    || message_table(&msg) != table
                {
                    continue;
                }
                match route_from_message(&msg) {
                    Some(route) => routes.push(route),
                    None => tracing::warn!(
                        ?msg,
                        "ignoring a route with protocol 203 that Causeway cannot model"
                    ),
                }
            }
        }
        Ok(routes)
    }

    async fn write_route(&self, op: RouteOp, route: &Route) -> Result<(), RouteFailure> {
        let failure = |errno, message| RouteFailure {
            op,
            route: route.clone(),
            errno,
            message,
        };
        let message = route_message(route, op).map_err(|m| failure(None, m))?;
        self.count_write();
        let result = match op {
            RouteOp::Add => self.handle.route().add(message).execute().await,
            RouteOp::Replace => self.handle.route().add(message).replace().execute().await,
            RouteOp::Delete => self.handle.route().del(message).execute().await,
        };
        match result {
            Ok(()) => {
                tracing::debug!(%op, %route, "route changed");
                Ok(())
            }
            // Gone already is what a delete wants.
            Err(e) if op == RouteOp::Delete && errno(&e) == Some(libc::ESRCH) => {
                tracing::debug!(%route, "route already gone");
                Ok(())
            }
            Err(e) => Err(failure(errno(&e), describe(&e))),
        }
    }

    /// Carries out a plan: deletes, then replaces, then adds, continuing past
    /// individual failures and reporting them all at the end.
    pub async fn apply(&self, plan: &RoutePlan) -> Result<ApplyReport, NetlinkError> {
        let mut report = ApplyReport::default();
        let mut failures = Vec::new();
        // Deletes first so duplicates are gone before a replace picks one,
        // and so a prefix moving between tables never exists twice.
        let phases = [
            (RouteOp::Delete, &plan.delete),
            (RouteOp::Replace, &plan.replace),
            (RouteOp::Add, &plan.add),
        ];
        for (op, routes) in phases {
            let results: Vec<Result<(), RouteFailure>> = stream::iter(routes.iter())
                .map(|route| self.write_route(op, route))
                .buffer_unordered(PIPELINE_DEPTH)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(()) => match op {
                        RouteOp::Add => report.added += 1,
                        RouteOp::Replace => report.replaced += 1,
                        RouteOp::Delete => report.deleted += 1,
                    },
                    Err(failure) => failures.push(failure),
                }
            }
        }
        report.failed = failures.len();
        if report.changed() > 0 || report.failed > 0 {
            tracing::info!(
                added = report.added,
                replaced = report.replaced,
                deleted = report.deleted,
                failed = report.failed,
                "applied route plan"
            );
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            // Sorted so the error reads the same however the pipeline finished.
            failures.sort_by(|a, b| {
                (a.route.table, a.route.dst, a.route.next_hop).cmp(&(
                    b.route.table,
                    b.route.dst,
                    b.route.next_hop,
                ))
            });
            Err(NetlinkError::Apply { report, failures })
        }
    }

    /// Makes `table` hold exactly `desired` among Causeway's routes; writes nothing when it already does.
    #[tracing::instrument(skip(self, desired), fields(desired = desired.len()))]
    pub async fn reconcile(
        &self,
        desired: &[Route],
        table: u32,
    ) -> Result<ApplyReport, NetlinkError> {
        let table = effective_table(table);
        // Routes for another table would never be observed here and would be
        // re-added on every pass.
        if let Some(route) = desired.iter().find(|r| effective_table(r.table) != table) {
            return Err(NetlinkError::TableMismatch {
                route: route.clone(),
                table,
            });
        }
        let observed = self.list_owned_routes(table).await?;
        let plan = plan_routes(desired, &observed);
        tracing::debug!(
            observed = observed.len(),
            add = plan.add.len(),
            replace = plan.replace.len(),
            delete = plan.delete.len(),
            "planned routes"
        );
        if plan.is_empty() {
            return Ok(ApplyReport::default());
        }
        self.apply(&plan).await
    }

    async fn get_link(&self, ifindex: u32) -> Result<LinkMessage, NetlinkError> {
        let link = format!("ifindex {ifindex}");
        let result = self
            .handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(NetlinkError::LinkNotFound { link }),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NetlinkError::LinkNotFound { link }),
            Err(source) => Err(NetlinkError::Link {
                op: "reading",
                link,
                source,
            }),
        }
    }

    /// Index of the interface called `name`, or `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let result = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match result {
            Ok(msg) => Ok(msg.map(|m| m.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(NetlinkError::Link {
                op: "looking up",
                link: name.to_string(),
                source,
            }),
        }
    }

    /// MTU of the interface `ifindex`.
    pub async fn link_mtu(&self, ifindex: u32) -> Result<u32, NetlinkError> {
        let msg = self.get_link(ifindex).await?;
        link_mtu_attr(&msg).ok_or_else(|| NetlinkError::MissingMtu {
            link: link_name(&msg),
        })
    }

    /// Brings the interface up with `mtu`, writing only what differs; returns whether it wrote.
    pub async fn set_link_up_with_mtu(&self, ifindex: u32, mtu: u32) -> Result<bool, NetlinkError> {
        let msg = self.get_link(ifindex).await?;
        let is_up = msg.header.flags.contains(LinkFlags::Up);
        let mtu_matches = link_mtu_attr(&msg) == Some(mtu);
        if is_up && mtu_matches {
            return Ok(false);
        }
        let mut request = LinkUnspec::new_with_index(ifindex);
        if !mtu_matches {
            request = request.mtu(mtu);
        }
        if !is_up {
            request = request.up();
        }
        self.count_write();
        let link = link_name(&msg);
        self.handle
            .link()
            .set(request.build())
            .execute()
            .await
            .map_err(|source| NetlinkError::Link {
                op: "setting up",
                link: link.clone(),
                source,
            })?;
        tracing::info!(%link, mtu, "interface up with MTU");
        Ok(true)
    }

    /// Adds `addr` to the interface unless it is already there; returns whether it wrote.
    pub async fn add_address(&self, ifindex: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let link = format!("ifindex {ifindex}");
        let existing: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(addr.addr())
            .set_prefix_length_filter(addr.prefix_len())
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "listing",
                addr: addr.to_string(),
                link: link.clone(),
                source,
            })?;
        if !existing.is_empty() {
            return Ok(false);
        }
        self.count_write();
        match self
            .handle
            .address()
            .add(ifindex, addr.addr(), addr.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {
                tracing::info!(%link, %addr, "address added");
                Ok(true)
            }
            // Someone added it between our read and our write.
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NetlinkError::LinkNotFound { link }),
            Err(source) => Err(NetlinkError::Address {
                op: "adding",
                addr: addr.to_string(),
                link,
                source,
            }),
        }
    }

    /// Index of the interface the main table's default route for the family leaves through.
    async fn default_route_ifindex(&self, v6: bool) -> Result<Option<u32>, NetlinkError> {
        let routes = self.dump_routes(v6, MAIN_TABLE).await?;
        let best = routes
            .iter()
            .filter(|m| {
                m.header.destination_prefix_length == 0
                    && m.header.kind == RouteType::Unicast
                    && message_table(m) == MAIN_TABLE
            })
            .filter_map(|m| {
                let mut priority = 0;
                let mut oif = None;
                for attr in &m.attributes {
                    match attr {
                        RouteAttribute::Priority(p) => priority = *p,
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::MultiPath(hops) if oif.is_none() => {
                            oif = hops.first().map(|h| h.interface_index)
                        }
                        _ => {}
                    }
                }
                oif.map(|oif| (priority, oif))
            })
            .min();
        Ok(best.map(|(_, oif)| oif))
    }

    /// MTU of the interface holding `addr`; for 0.0.0.0 or ::, of the default
    /// route's interface, else the smallest among up non-loopback interfaces.
    pub async fn underlay_mtu_for(&self, addr: IpAddr) -> Result<u32, NetlinkError> {
        if addr.is_unspecified() {
            if let Some(ifindex) = self.default_route_ifindex(addr.is_ipv6()).await? {
                return self.link_mtu(ifindex).await;
            }
            let links: Vec<LinkMessage> = self
                .handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|source| NetlinkError::Link {
                    op: "listing",
                    link: "(all)".to_string(),
                    source,
                })?;
            return links
                .iter()
                .filter(|l| {
                    l.header.flags.contains(LinkFlags::Up)
                        && !l.header.flags.contains(LinkFlags::Loopback)
                })
                .filter_map(link_mtu_attr)
                .min()
                .ok_or(NetlinkError::NoUnderlay {
                    family: family_number(addr.is_ipv6()),
                });
        }
        let holders: Vec<_> = self
            .handle
            .address()
            .get()
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "looking up",
                addr: addr.to_string(),
                link: "(any)".to_string(),
                source,
            })?;
        match holders.first() {
            Some(holder) => self.link_mtu(holder.header.index).await,
            None => Err(NetlinkError::AddressNotFound { addr }),
        }
    }

    /// Index of the interface whose subnet holds `neighbor`: where a route via it must leave.
    pub async fn ifindex_on_subnet(&self, neighbor: IpAddr) -> Result<u32, NetlinkError> {
        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Address {
                op: "listing",
                addr: neighbor.to_string(),
                link: "(any)".to_string(),
                source,
            })?;
        addresses
            .iter()
            .filter_map(|msg| {
                msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, msg.header.prefix_len)
                        .ok()
                        .filter(|net| net.contains(&neighbor))
                        .map(|net| (net.prefix_len(), msg.header.index)),
                    _ => None,
                })
            })
            // The most specific subnet wins, as the kernel's own lookup would choose.
            .max()
            .map(|(_, index)| index)
            .ok_or(NetlinkError::NotOnSubnet { addr: neighbor })
    }

    /// Deletes the interface; returns false if it was already gone.
    pub async fn delete_link(&self, ifindex: u32) -> Result<bool, NetlinkError> {
        self.count_write();
        match self.handle.link().del(ifindex).execute().await {
            Ok(()) => {
                tracing::info!(ifindex, "interface deleted");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(NetlinkError::Link {
                op: "deleting",
                link: format!("ifindex {ifindex}"),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::process::Command;
    use std::time::Instant;

    use rtnetlink::LinkVeth;

    use super::*;

    /// Runs `test` on a new thread moved into a fresh anonymous network
    /// namespace; the kernel destroys it, with everything in it, when the
    /// thread exits, so the root namespace is never touched.
    fn in_netns<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "netlink tests must run as root: they create network namespaces, interfaces and routes \
             (run them with sudo or in the CI container); refusing to skip silently"
        );
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare(CLONE_NEWNET) only changes this thread's namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(test());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `ip` in the calling thread's namespace (a forked child inherits
    /// the namespaces of the thread that forked it).
    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    struct Lab {
        nl: Netlink,
        link0: u32,
    }

    /// Creates veth pair `name`/`{name}p`, both up (so the carrier is up), and
    /// returns the index of `name`. A veth, not a link0: this kernel is built
    /// without CONFIG_DUMMY.
    async fn add_veth(nl: &Netlink, name: &str, mtu: u32) -> u32 {
        let peer = format!("{name}p");
        nl.handle()
            .link()
            .add(LinkVeth::new(name, &peer).build())
            .execute()
            .await
            .unwrap();
        let index = nl.link_index(name).await.unwrap().expect("veth created");
        let peer = nl
            .link_index(&peer)
            .await
            .unwrap()
            .expect("veth peer created");
        assert!(nl.set_link_up_with_mtu(peer, 1500).await.unwrap());
        assert!(nl.set_link_up_with_mtu(index, mtu).await.unwrap());
        index
    }

    /// lo up, and veth `cw-test0` up with MTU 1500, 10.77.0.1/24 and fd00:77::1/64.
    async fn lab() -> Lab {
        let nl = Netlink::new().await.expect("netlink connection");
        let lo = nl
            .link_index("lo")
            .await
            .unwrap()
            .expect("every netns has lo");
        nl.handle()
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .unwrap();
        let link0 = add_veth(&nl, "cw-test0", 1500).await;
        assert!(nl
            .add_address(link0, "10.77.0.1/24".parse().unwrap())
            .await
            .unwrap());
        assert!(nl
            .add_address(link0, "fd00:77::1/64".parse().unwrap())
            .await
            .unwrap());
        Lab { nl, link0 }
    }

    fn dev(dst: &str, ifindex: u32, mtu: Option<u32>, table: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            next_hop: NextHop::Dev { ifindex },
            mtu,
            table,
        }
    }

    fn via(dst: &str, gateway: &str, ifindex: u32, mtu: Option<u32>, table: u32) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            next_hop: NextHop::Via {
                gateway: gateway.parse().unwrap(),
                ifindex,
            },
            mtu,
            table,
        }
    }

    fn sorted(mut routes: Vec<Route>) -> Vec<Route> {
        routes.sort_by_key(|r| (r.table, r.dst, r.next_hop, r.mtu));
        routes
    }

    fn line_for<'a>(output: &'a str, dst: &str) -> &'a str {
        output
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == dst))
            .unwrap_or_else(|| panic!("no route to {dst} in:\n{output}"))
    }

    #[test]
    fn a_fail_closed_route_outlives_the_interface_under_the_tunnel_route() {
        in_netns(|| async {
            let Lab { nl, .. } = lab().await;
            let tun = add_veth(&nl, "cw-tun0", 1420).await;
            // A default route, as every real node has: what a leak would take.
            ip(&["route", "add", "default", "via", "10.77.0.2"]);
            ip(&["-6", "route", "add", "default", "via", "fd00:77::2"]);
            let desired = vec![
                dev("10.2.0.0/16", tun, Some(1420), MAIN_TABLE),
                Route::fail_closed("10.2.0.0/16".parse().unwrap(), MAIN_TABLE),
                dev("fd00:2::/64", tun, Some(1420), MAIN_TABLE),
                Route::fail_closed("fd00:2::/64".parse().unwrap(), MAIN_TABLE),
            ];
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            assert_eq!(report.added, 4, "{report}");
            assert_eq!(
                sorted(nl.list_owned_routes(MAIN_TABLE).await.unwrap()),
                sorted(desired.clone())
            );
            let writes = nl.writes();
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            assert_eq!((report.changed(), nl.writes() - writes), (0, 0), "a no-op");
            assert!(ip(&["route", "get", "10.2.0.9"]).contains("dev cw-tun0"));
            assert!(ip(&["-6", "route", "get", "fd00:2::9"]).contains("dev cw-tun0"));

            // The gateway dies and its interface goes with it: nothing for the remote
            // ranges may take the default route now.
            nl.delete_link(tun).await.unwrap();
            for (family, addr) in [("-4", "10.2.0.9"), ("-6", "fd00:2::9")] {
                let out = Command::new("ip")
                    .args([family, "route", "get", addr])
                    .output()
                    .expect("run ip");
                let said = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success() && !said.contains("via") && !said.contains("cw-test0"),
                    "{addr} is routed after the tunnel interface went: {said}"
                );
            }
            let left = nl.list_owned_routes(MAIN_TABLE).await.unwrap();
            assert!(left.iter().all(Route::is_fail_closed), "{left:?}");
            assert_eq!(left.len(), 2);

            // A clean stop withdraws the floor too.
            nl.reconcile(&[], MAIN_TABLE).await.unwrap();
            assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());
            assert!(ip(&["route", "get", "10.2.0.9"]).contains("via 10.77.0.2"));
        });
    }

    #[test]
    fn reconcile_installs_owned_routes_then_writes_nothing() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            // `ip` must see this namespace, not the root one, or the checks
            // below would prove nothing.
            assert!(ip(&["link", "show", "cw-test0"]).contains("cw-test0"));

            let desired = vec![
                dev("10.2.0.0/16", link0, Some(1420), MAIN_TABLE),
                via("10.3.0.0/16", "10.77.0.2", link0, Some(1420), MAIN_TABLE),
                dev("fd00:2::/64", link0, Some(1420), MAIN_TABLE),
            ];
            let writes = nl.writes();
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            assert_eq!(
                report,
                ApplyReport {
                    added: 3,
                    ..ApplyReport::default()
                }
            );
            assert_eq!(nl.writes() - writes, 3);
            assert_eq!(
                sorted(nl.list_owned_routes(MAIN_TABLE).await.unwrap()),
                sorted(desired.clone())
            );

            let v4 = ip(&["-d", "route", "show", "proto", "203"]);
            let line = line_for(&v4, "10.2.0.0/16");
            assert!(
                line.contains("dev cw-test0")
                    && line.contains("scope link")
                    && line.contains("mtu 1420"),
                "{line}"
            );
            let line = line_for(&v4, "10.3.0.0/16");
            assert!(
                line.contains("via 10.77.0.2 dev cw-test0") && line.contains("mtu 1420"),
                "{line}"
            );
            assert!(
                !line.contains("scope link"),
                "via routes are scope universe: {line}"
            );
            assert_eq!(
                v4.lines().count(),
                2,
                "only our routes carry proto 203:\n{v4}"
            );
            let v6 = ip(&["-6", "-d", "route", "show", "proto", "203"]);
            let line = line_for(&v6, "fd00:2::/64");
            assert!(
                line.contains("dev cw-test0") && line.contains("mtu 1420"),
                "{line}"
            );

            let writes = nl.writes();
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            assert_eq!(report, ApplyReport::default());
            assert_eq!(nl.writes(), writes, "a no-op reconcile must not write");
        });
    }

    #[test]
    fn reconcile_with_empty_desired_deletes_only_owned_routes() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            let desired = vec![
                dev("10.2.0.0/16", link0, Some(1420), MAIN_TABLE),
                dev("fd00:2::/64", link0, None, MAIN_TABLE),
            ];
            nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            // Routes made by someone else: by `ip` (proto boot) and over
            // netlink with another protocol number.
            ip(&["route", "add", "10.9.0.0/16", "dev", "cw-test0"]);
            ip(&["-6", "route", "add", "fd00:9::/64", "dev", "cw-test0"]);
            let foreign = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::new(10, 8, 0, 0), 16)
                .output_interface(link0)
                .scope(RouteScope::Link)
                .protocol(RouteProtocol::Static)
                .build();
            nl.handle().route().add(foreign).execute().await.unwrap();

            let report = nl.reconcile(&[], MAIN_TABLE).await.unwrap();
            assert_eq!(
                report,
                ApplyReport {
                    deleted: 2,
                    ..ApplyReport::default()
                }
            );
            assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());
            assert!(ip(&["route", "show", "proto", "203"]).trim().is_empty());
            assert!(ip(&["-6", "route", "show", "proto", "203"])
                .trim()
                .is_empty());
            let v4 = ip(&["route", "show"]);
            for dst in ["10.9.0.0/16", "10.8.0.0/16", "10.77.0.0/24"] {
                line_for(&v4, dst);
            }
            line_for(&ip(&["-6", "route", "show"]), "fd00:9::/64");
        });
    }

    #[test]
    fn reconcile_replaces_on_mtu_and_next_hop_change() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            const TABLE: u32 = 100;
            // A table with no routes yet lists as empty, not as an error.
            assert!(nl.list_owned_routes(TABLE).await.unwrap().is_empty());

            let steps = [
                vec![
                    dev("10.2.0.0/16", link0, Some(1420), TABLE),
                    dev("fd00:2::/64", link0, Some(1420), TABLE),
                ],
                vec![
                    dev("10.2.0.0/16", link0, Some(1380), TABLE),
                    dev("fd00:2::/64", link0, Some(1380), TABLE),
                ],
                vec![
                    via("10.2.0.0/16", "10.77.0.2", link0, Some(1380), TABLE),
                    via("fd00:2::/64", "fd00:77::2", link0, Some(1380), TABLE),
                ],
                vec![
                    via("10.2.0.0/16", "10.77.0.2", link0, None, TABLE),
                    via("fd00:2::/64", "fd00:77::2", link0, None, TABLE),
                ],
            ];
            for (n, desired) in steps.iter().enumerate() {
                let writes = nl.writes();
                let report = nl.reconcile(desired, TABLE).await.unwrap();
                let expected = if n == 0 {
                    ApplyReport {
                        added: 2,
                        ..ApplyReport::default()
                    }
                } else {
                    ApplyReport {
                        replaced: 2,
                        ..ApplyReport::default()
                    }
                };
                assert_eq!(report, expected, "step {n}");
                assert_eq!(nl.writes() - writes, 2, "step {n}");
                assert_eq!(
                    sorted(nl.list_owned_routes(TABLE).await.unwrap()),
                    sorted(desired.clone()),
                    "step {n}"
                );
            }
            let v4 = ip(&["route", "show", "table", "100", "proto", "203"]);
            let line = line_for(&v4, "10.2.0.0/16");
            assert!(
                line.contains("via 10.77.0.2") && !line.contains("mtu"),
                "{line}"
            );
            assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());

            // Table ids above 255 travel in RTA_TABLE, not the header byte.
            let big = vec![dev("10.5.0.0/16", link0, Some(1400), 1000)];
            nl.reconcile(&big, 1000).await.unwrap();
            assert_eq!(nl.list_owned_routes(1000).await.unwrap(), big);
            line_for(&ip(&["route", "show", "table", "1000"]), "10.5.0.0/16");

            let err = nl.reconcile(&big, TABLE).await.unwrap_err();
            assert!(
                matches!(err, NetlinkError::TableMismatch { table: TABLE, .. }),
                "{err}"
            );
        });
    }

    #[test]
    fn reconcile_removes_duplicate_owned_routes() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            // What a crash between two writes could leave: two routes of
            // ours for one prefix.
            ip(&[
                "route",
                "append",
                "10.5.0.0/16",
                "dev",
                "cw-test0",
                "proto",
                "203",
            ]);
            ip(&[
                "route",
                "append",
                "10.5.0.0/16",
                "via",
                "10.77.0.2",
                "proto",
                "203",
            ]);
            assert_eq!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().len(), 2);

            let desired = vec![via("10.5.0.0/16", "10.77.0.2", link0, None, MAIN_TABLE)];
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            assert_eq!(
                report,
                ApplyReport {
                    deleted: 1,
                    ..ApplyReport::default()
                }
            );
            assert_eq!(nl.list_owned_routes(MAIN_TABLE).await.unwrap(), desired);
        });
    }

    #[test]
    fn apply_keeps_going_and_names_failed_routes() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            ip(&["route", "add", "10.9.0.0/16", "dev", "cw-test0"]);
            let plan = RoutePlan {
                add: vec![
                    dev("10.2.0.0/16", link0, None, MAIN_TABLE),
                    // Not on any connected subnet.
                    via("10.4.0.0/16", "192.0.2.1", link0, None, MAIN_TABLE),
                    // Held by a route that is not ours.
                    dev("10.9.0.0/16", link0, None, MAIN_TABLE),
                ],
                replace: vec![],
                // Already gone: counts as done.
                delete: vec![dev("10.6.0.0/16", link0, None, MAIN_TABLE)],
            };
            let err = nl.apply(&plan).await.unwrap_err();
            let message = err.to_string();
            let NetlinkError::Apply { report, failures } = err else {
                panic!("unexpected error {message}");
            };
            assert_eq!(
                report,
                ApplyReport {
                    added: 1,
                    replaced: 0,
                    deleted: 1,
                    failed: 2
                }
            );
            let failed: Vec<_> = failures
                .iter()
                .map(|f| (f.route.dst.to_string(), f.errno))
                .collect();
            assert_eq!(
                failed,
                vec![
                    ("10.4.0.0/16".to_string(), Some(libc::ENETUNREACH)),
                    ("10.9.0.0/16".to_string(), Some(libc::EEXIST)),
                ]
            );
            assert!(
                message.contains("add 10.4.0.0/16 via 192.0.2.1"),
                "{message}"
            );
            assert!(message.contains("not made by Causeway"), "{message}");
            eprintln!("apply error reads: {message}");
            let foreign = line_for(&ip(&["route", "show"]), "10.9.0.0/16").to_string();
            assert!(!foreign.contains("proto 203"), "{foreign}");
            assert_eq!(
                nl.list_owned_routes(MAIN_TABLE).await.unwrap(),
                vec![dev("10.2.0.0/16", link0, None, MAIN_TABLE)]
            );
        });
    }

    #[test]
    fn link_helpers_read_before_writing() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            assert_eq!(nl.link_index("cw-missing").await.unwrap(), None);

            let writes = nl.writes();
            assert!(!nl.set_link_up_with_mtu(link0, 1500).await.unwrap());
            assert!(!nl
                .add_address(link0, "10.77.0.1/24".parse().unwrap())
                .await
                .unwrap());
            assert!(!nl
                .add_address(link0, "fd00:77::1/64".parse().unwrap())
                .await
                .unwrap());
            assert_eq!(
                nl.writes(),
                writes,
                "unchanged link state must not be written"
            );

            assert!(nl.set_link_up_with_mtu(link0, 1400).await.unwrap());
            assert_eq!(nl.writes(), writes + 1);
            assert_eq!(nl.link_mtu(link0).await.unwrap(), 1400);
            assert!(!nl.set_link_up_with_mtu(link0, 1400).await.unwrap());

            assert_eq!(
                nl.underlay_mtu_for("10.77.0.1".parse().unwrap())
                    .await
                    .unwrap(),
                1400
            );
            assert_eq!(
                nl.underlay_mtu_for("fd00:77::1".parse().unwrap())
                    .await
                    .unwrap(),
                1400
            );
            let err = nl
                .underlay_mtu_for("192.0.2.99".parse().unwrap())
                .await
                .unwrap_err();
            assert!(matches!(err, NetlinkError::AddressNotFound { .. }), "{err}");

            // No default route: the smallest up non-loopback interface.
            let second = add_veth(&nl, "cw-test1", 1300).await;
            assert_eq!(
                nl.underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
                    .await
                    .unwrap(),
                1300
            );
            // With a default route: its interface.
            ip(&[
                "route",
                "add",
                "default",
                "via",
                "10.77.0.254",
                "dev",
                "cw-test0",
            ]);
            assert_eq!(
                nl.underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
                    .await
                    .unwrap(),
                1400
            );
            assert_eq!(
                nl.underlay_mtu_for(Ipv6Addr::UNSPECIFIED.into())
                    .await
                    .unwrap(),
                1300
            );

            assert!(nl.delete_link(second).await.unwrap());
            assert!(!nl.delete_link(second).await.unwrap());
            assert!(nl.delete_link(link0).await.unwrap());
            let err = nl.link_mtu(link0).await.unwrap_err();
            assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err}");
            let err = nl
                .underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
                .await
                .unwrap_err();
            assert!(
                matches!(err, NetlinkError::NoUnderlay { family: 4 }),
                "{err}"
            );
        });
    }

    #[test]
    fn reconcile_ten_thousand_routes_then_noop_makes_zero_writes() {
        in_netns(|| async {
            let Lab { nl, link0 } = lab().await;
            let desired: Vec<Route> = (0..10_000u32)
                .map(|i| Route {
                    dst: IpNet::new(Ipv4Addr::from(0x0a64_0000 + i).into(), 32).unwrap(),
                    next_hop: NextHop::Dev { ifindex: link0 },
                    mtu: Some(1420),
                    table: MAIN_TABLE,
                })
                .collect();

            let start = Instant::now();
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            eprintln!("reconcile adding 10,000 routes: {:?}", start.elapsed());
            assert_eq!(report.added, 10_000);
            assert_eq!(
                nl.list_owned_routes(MAIN_TABLE).await.unwrap().len(),
                10_000
            );

            let writes = nl.writes();
            let start = Instant::now();
            let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
            eprintln!("no-op reconcile of 10,000 routes: {:?}", start.elapsed());
            assert_eq!(report, ApplyReport::default());
            assert_eq!(nl.writes(), writes, "a no-op reconcile must not write");

            let start = Instant::now();
            let report = nl.reconcile(&[], MAIN_TABLE).await.unwrap();
            eprintln!("reconcile deleting 10,000 routes: {:?}", start.elapsed());
            assert_eq!(report.deleted, 10_000);
        });
    }
}
