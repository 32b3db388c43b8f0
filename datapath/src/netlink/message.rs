//! Causeway's routes to netlink messages and back (pure).

use super::*;

pub(super) fn effective_table(table: u32) -> u32 {
    if table == 0 {
        MAIN_TABLE
    } else {
        table
    }
}

pub(super) fn family_number(v6: bool) -> u8 {
    if v6 {
        6
    } else {
        4
    }
}

pub(super) fn message_table(msg: &RouteMessage) -> u32 {
    // RTA_TABLE carries ids above 255; the header byte is then RT_TABLE_COMPAT.
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

pub(super) fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Converts a kernel route into Causeway's model. Returns `None` for routes
/// the model cannot express (non-IP families).
pub(super) fn route_from_message(msg: &RouteMessage) -> Option<Route> {
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
pub(super) fn route_message(route: &Route, op: RouteOp) -> Result<RouteMessage, String> {
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

pub(super) fn link_name(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(format!("{name} (ifindex {})", msg.header.index)),
            _ => None,
        })
        .unwrap_or_else(|| format!("ifindex {}", msg.header.index))
}

pub(super) fn link_mtu_attr(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}
