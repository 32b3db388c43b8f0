//! What a refused netlink request means, and how to fix it.

use super::*;

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

pub(super) fn list_failures(failures: &[RouteFailure]) -> String {
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

pub(super) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

pub(super) fn hint(errno: i32) -> Option<&'static str> {
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

pub(super) fn describe(err: &rtnetlink::Error) -> String {
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
