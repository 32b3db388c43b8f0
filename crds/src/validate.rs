//! Validation of ClusterEndpoints, alone and as a clusterset.
//!
//! Pure functions from objects to typed values or typed errors. Every error names
//! the object, the field, the offending value, what it conflicts with, and the fix,
//! because it ends up verbatim in a condition or a log line an operator reads.

use crate::cluster_endpoint::{ClusterEndpoint, GatewayEndpoint};
use causeway_wire::keys::{parse_key, KeyError};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// A cluster whose ClusterEndpoint passed validation, with every field parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The object's name, for messages.
    pub object: String,
    /// The cluster ID (a DNS-1123 label).
    pub cluster_id: String,
    /// Pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// Service CIDRs.
    pub service_cidrs: Vec<IpNet>,
    /// Gateways, in the order the object lists them.
    pub gateways: Vec<SiteGateway>,
}

impl Site {
    /// Every CIDR the cluster owns: pod CIDRs, then service CIDRs.
    pub fn cidrs(&self) -> impl Iterator<Item = &IpNet> + '_ {
        self.pod_cidrs.iter().chain(self.service_cidrs.iter())
    }

    /// Whether `addr` lies in one of the cluster's CIDRs.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidrs().any(|net| net.contains(&addr))
    }
}

/// A validated gateway of a [`Site`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteGateway {
    /// Node (or VM) name.
    pub node_name: String,
    /// Underlay UDP endpoint.
    pub public_endpoint: SocketAddr,
    /// WireGuard public key.
    pub public_key: [u8; 32],
    /// Address on the cluster network, the route agents' next hop.
    pub private_ip: Option<IpAddr>,
    /// Every cluster-network address: `privateIP` first, then `privateIPs`.
    pub private_ips: Vec<IpAddr>,
    /// Address inside the tunnel for health probes.
    pub health_check_ip: Option<IpAddr>,
}

impl SiteGateway {
    /// The cluster-network address of the same family as `dst`: a route agent's next hop.
    pub fn private_ip_for(&self, dst: IpAddr) -> Option<IpAddr> {
        self.private_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == dst.is_ipv4())
    }
}

/// A reason a ClusterEndpoint is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// The cluster ID is not a DNS-1123 label.
    #[error("ClusterEndpoint {object:?}: spec.clusterID {value:?} {reason}; use a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (e.g. \"site-a\")")]
    ClusterId {
        /// The object.
        object: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two objects claim the same cluster ID.
    #[error("ClusterEndpoint {object:?}: spec.clusterID {value:?} is already claimed by ClusterEndpoint {other_object:?}; every cluster needs its own ID — rename this cluster or remove the stale object")]
    DuplicateClusterId {
        /// The refused object.
        object: String,
        /// The cluster ID both claim.
        value: String,
        /// The object that claimed it first.
        other_object: String,
    },
    /// The object lists no pod CIDR.
    #[error("ClusterEndpoint {object:?}: spec.podCIDRs is empty; list the cluster's pod CIDRs (e.g. [\"10.1.0.0/16\"]) so other clusters know what to route to it")]
    NoPodCidrs {
        /// The object.
        object: String,
    },
    /// A CIDR does not parse.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} is not a CIDR ({reason}); write it as address/prefix-length, e.g. \"10.1.0.0/16\" or \"fd00:1::/48\"")]
    CidrSyntax {
        /// The object.
        object: String,
        /// Path of the field, e.g. `spec.podCIDRs[1]`.
        field: String,
        /// The offending value.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A CIDR has bits set after its prefix.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} has host bits set; write the network address {network} instead")]
    CidrHostBits {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending value.
        value: String,
        /// The CIDR the user probably meant.
        network: IpNet,
    },
    /// A prefix so short it would capture much of every node's traffic.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} is broader than /8 (IPv4) or /16 (IPv6) and would pull a large share of every node's traffic into the tunnel; list the cluster's actual CIDRs")]
    CidrTooBroad {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending value.
        value: String,
    },
    /// A CIDR overlaps loopback, link-local or multicast space, which is never a cluster's.
    #[error("ClusterEndpoint {object:?}: {field} {value} overlaps reserved {range} ({what}); routing it into the tunnel would break the nodes themselves — list the cluster's actual CIDRs")]
    CidrReserved {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending CIDR.
        value: IpNet,
        /// The reserved range.
        range: IpNet,
        /// What the range is for.
        what: &'static str,
    },
    /// A CIDR holds a gateway's public endpoint: the tunnel's own packets would be routed into it.
    #[error("ClusterEndpoint {object:?}: {field} {value} contains {endpoint}, the public endpoint of a gateway of ClusterEndpoint {other_object:?}; the tunnel's own UDP packets would be routed into the tunnel — gateways' underlay addresses must lie outside every pod and service CIDR")]
    CidrCapturesEndpoint {
        /// The refused object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending CIDR.
        value: IpNet,
        /// The object whose gateway it captures (may be the same object).
        other_object: String,
        /// The captured endpoint.
        endpoint: SocketAddr,
    },
    /// Two CIDRs overlap, in one cluster or across two.
    #[error("ClusterEndpoint {object:?}: {field} {value} overlaps {other_field} {other_value} of ClusterEndpoint {other_object:?}; give every cluster distinct pod and service CIDRs that do not overlap")]
    CidrOverlap {
        /// The refused object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending CIDR.
        value: IpNet,
        /// The object already holding the other CIDR (may be the same object).
        other_object: String,
        /// Path of the other field.
        other_field: String,
        /// The CIDR it overlaps.
        other_value: IpNet,
    },
    /// A public key is not a WireGuard key.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} {reason}; use the base64 public key printed by `causeway-gateway pubkey` (or `wg pubkey`)")]
    Key {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: KeyError,
    },
    /// Two gateways share a public key.
    #[error("ClusterEndpoint {object:?}: {field} is the same public key as {other_field} of ClusterEndpoint {other_object:?}; every gateway needs its own key pair — generate a new one with `causeway-gateway genkey`")]
    DuplicateKey {
        /// The refused object.
        object: String,
        /// Path of the field.
        field: String,
        /// The object already holding the key (may be the same object).
        other_object: String,
        /// Path of the other field.
        other_field: String,
    },
    /// A public endpoint is not `ip:port`.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} {reason}; write it as ip:port, e.g. \"198.18.0.1:51820\" or \"[2001:db8::1]:51820\"")]
    Endpoint {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A health-check address outside the cluster's own CIDRs could not be reached through the tunnel.
    #[error("ClusterEndpoint {object:?}: {field} {value} is not inside the cluster's podCIDRs or serviceCIDRs, so remote gateways could not reach it through the tunnel; pick an address from one of them (e.g. the first address of a pod CIDR)")]
    HealthCheckOutside {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending address.
        value: IpAddr,
    },
    /// A list longer than any real cluster needs; refused before anything in it is parsed.
    #[error("ClusterEndpoint {object:?}: {field} lists {count} entries, more than the limit of {max}; list the cluster's actual CIDRs (aggregate them) or gateways")]
    TooMany {
        /// The object.
        object: String,
        /// Path of the field.
        field: &'static str,
        /// How many it lists.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Another cluster's CIDR lies outside the ranges this cluster accepts from others.
    #[error("ClusterEndpoint {object:?}: {field} {value} lies outside the ranges this cluster accepts from other clusters ({allowed}); if it really is that cluster's range, add it to this cluster's allowed remote ranges (chart value remoteCIDRs.allowed, flag --allowed-remote-cidrs)")]
    CidrNotAllowed {
        /// The refused object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending CIDR.
        value: IpNet,
        /// The accepted ranges, comma-separated.
        allowed: String,
    },
    /// Another cluster's CIDR covers a range this cluster protects (its nodes, its API server).
    #[error("ClusterEndpoint {object:?}: {field} {value} overlaps {protected}, which this cluster protects (its node network or API server); routing it into the tunnel would hand that traffic to another cluster - that cluster must list only its own CIDRs")]
    CidrProtected {
        /// The refused object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending CIDR.
        value: IpNet,
        /// The protected range it overlaps.
        protected: IpNet,
    },
    /// An IP address field does not parse.
    #[error("ClusterEndpoint {object:?}: {field} {value:?} is not an IP address; write a bare address such as \"198.19.1.1\" or \"fd00::1\"")]
    Ip {
        /// The object.
        object: String,
        /// Path of the field.
        field: String,
        /// The offending value.
        value: String,
    },
}

impl ValidationError {
    /// The name of the object the error refuses.
    pub fn object(&self) -> &str {
        match self {
            Self::ClusterId { object, .. }
            | Self::DuplicateClusterId { object, .. }
            | Self::NoPodCidrs { object }
            | Self::CidrSyntax { object, .. }
            | Self::CidrHostBits { object, .. }
            | Self::CidrTooBroad { object, .. }
            | Self::CidrOverlap { object, .. }
            | Self::CidrReserved { object, .. }
            | Self::CidrCapturesEndpoint { object, .. }
            | Self::Key { object, .. }
            | Self::DuplicateKey { object, .. }
            | Self::Endpoint { object, .. }
            | Self::HealthCheckOutside { object, .. }
            | Self::TooMany { object, .. }
            | Self::CidrNotAllowed { object, .. }
            | Self::CidrProtected { object, .. }
            | Self::Ip { object, .. } => object,
        }
    }

    /// A short CamelCase reason for conditions and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClusterId { .. } => "InvalidClusterID",
            Self::DuplicateClusterId { .. } => "DuplicateClusterID",
            Self::NoPodCidrs { .. } => "NoPodCIDRs",
            Self::CidrSyntax { .. }
            | Self::CidrHostBits { .. }
            | Self::CidrTooBroad { .. }
            | Self::CidrReserved { .. } => "InvalidCIDR",
            Self::CidrCapturesEndpoint { .. } => "CIDRCapturesGateway",
            Self::CidrOverlap { .. } => "OverlappingCIDR",
            Self::Key { .. } => "InvalidPublicKey",
            Self::DuplicateKey { .. } => "DuplicatePublicKey",
            Self::Endpoint { .. } => "InvalidEndpoint",
            Self::HealthCheckOutside { .. } => "InvalidHealthCheckIP",
            Self::Ip { .. } => "InvalidIP",
            Self::TooMany { .. } => "TooMany",
            Self::CidrNotAllowed { .. } => "CIDRNotAllowed",
            Self::CidrProtected { .. } => "CIDRProtected",
        }
    }
}

/// Whether two CIDRs share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The name an object is reported under: its metadata name, else its cluster ID.
pub fn object_name(ep: &ClusterEndpoint) -> String {
    ep.metadata
        .name
        .clone()
        .unwrap_or_else(|| ep.spec.cluster_id.clone())
}

/// Checks one ClusterEndpoint on its own, including overlaps among its own CIDRs and keys.
pub fn validate_endpoint(ep: &ClusterEndpoint) -> Result<Site, Vec<ValidationError>> {
    let object = object_name(ep);
    let spec = &ep.spec;
    let mut errors = Vec::new();

    if let Err(reason) = check_dns1123_label(&spec.cluster_id) {
        errors.push(ValidationError::ClusterId {
            object: object.clone(),
            value: spec.cluster_id.clone(),
            reason,
        });
    }
    if spec.pod_cidrs.is_empty() {
        errors.push(ValidationError::NoPodCidrs {
            object: object.clone(),
        });
    }
    // Before parsing anything: the checks below compare entries pairwise, and a gateway
    // must answer liveness probes while it validates.
    for (field, count, max) in [
        ("spec.podCIDRs", spec.pod_cidrs.len(), MAX_CIDRS),
        ("spec.serviceCIDRs", spec.service_cidrs.len(), MAX_CIDRS),
        ("spec.gateways", spec.gateways.len(), MAX_GATEWAYS),
    ] {
        if count > max {
            errors.push(ValidationError::TooMany {
                object: object.clone(),
                field,
                count,
                max,
            });
        }
    }
    if errors
        .iter()
        .any(|e| matches!(e, ValidationError::TooMany { .. }))
    {
        return Err(errors);
    }
    let pod_cidrs = parse_cidrs(&object, "spec.podCIDRs", &spec.pod_cidrs, &mut errors);
    let service_cidrs = parse_cidrs(
        &object,
        "spec.serviceCIDRs",
        &spec.service_cidrs,
        &mut errors,
    );
    let gateways: Vec<SiteGateway> = spec
        .gateways
        .iter()
        .enumerate()
        .filter_map(|(i, gw)| parse_gateway(&object, i, gw, &mut errors))
        .collect();

    for (i, gw) in gateways.iter().enumerate() {
        if let Some(ip) = gw.health_check_ip {
            if !pod_cidrs
                .iter()
                .chain(&service_cidrs)
                .any(|n| n.contains(&ip))
            {
                errors.push(ValidationError::HealthCheckOutside {
                    object: object.clone(),
                    field: format!("spec.gateways[{i}].healthCheckIP"),
                    value: ip,
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let site = Site {
        object,
        cluster_id: spec.cluster_id.clone(),
        pod_cidrs,
        service_cidrs,
        gateways,
    };
    let conflicts = conflicts_between(&site, &site);
    if conflicts.is_empty() {
        Ok(site)
    } else {
        Err(conflicts)
    }
}

/// The outcome of checking a set of ClusterEndpoints together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClustersetCheck {
    /// Objects accepted, in input order.
    pub sites: Vec<Site>,
    /// Objects refused, with every reason.
    pub refused: Vec<(String, Vec<ValidationError>)>,
}

impl ClustersetCheck {
    /// The accepted site with this cluster ID.
    pub fn site(&self, cluster_id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.cluster_id == cluster_id)
    }

    /// Every reason any object was refused.
    pub fn errors(&self) -> impl Iterator<Item = &ValidationError> {
        self.refused.iter().flat_map(|(_, errs)| errs.iter())
    }
}

/// Most CIDRs of one kind (pod or service) a ClusterEndpoint may list.
pub const MAX_CIDRS: usize = 32;
/// Most gateways a ClusterEndpoint may list.
pub const MAX_GATEWAYS: usize = 16;
/// The ranges a cluster accepts from other clusters unless its operator says otherwise:
/// RFC 1918, RFC 6598 (carrier-grade NAT, common for pods) and IPv6 unique local addresses.
pub const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// What this cluster accepts from other clusters' ClusterEndpoints: its operator's say over
/// which ranges another cluster may pull into the tunnel on this cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// Every remote CIDR must lie inside one of these.
    pub allowed: Vec<IpNet>,
    /// No remote CIDR may overlap one of these (this cluster's node network, its API server).
    pub protected: Vec<IpNet>,
}

impl Default for Acceptance {
    /// [`PRIVATE_RANGES`] allowed, nothing protected beyond them.
    fn default() -> Self {
        Acceptance {
            allowed: PRIVATE_RANGES
                .iter()
                .map(|r| r.parse().expect("PRIVATE_RANGES are CIDRs"))
                .collect(),
            protected: Vec::new(),
        }
    }
}

impl Acceptance {
    /// What `site` (another cluster) claims that this cluster does not accept.
    fn refusals(&self, site: &Site) -> Vec<ValidationError> {
        let mut errors = Vec::new();
        for (field, net) in labelled_cidrs(site) {
            if !self.allowed.iter().any(|a| a.contains(&net)) {
                errors.push(ValidationError::CidrNotAllowed {
                    object: site.object.clone(),
                    field: field.clone(),
                    value: net,
                    allowed: self
                        .allowed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            if let Some(protected) = self.protected.iter().find(|p| overlaps(p, &net)) {
                errors.push(ValidationError::CidrProtected {
                    object: site.object.clone(),
                    field,
                    value: net,
                    protected: *protected,
                });
            }
        }
        errors
    }
}

/// Sorts ClusterEndpoints into the priority order [`validate_clusterset`] takes: oldest
/// first (the API server's `creationTimestamp`), objects not yet created last, then by name.
pub fn oldest_first(endpoints: &mut [ClusterEndpoint]) {
    endpoints.sort_by_cached_key(|o| {
        let ts = o.metadata.creation_timestamp.clone();
        (ts.is_none(), ts, object_name(o))
    });
}

/// Checks ClusterEndpoints together: first come, first served.
///
/// `endpoints` must be in priority order (oldest first): an object that conflicts
/// with one accepted before it is refused, and the earlier one keeps working, so a
/// newcomer's mistake can never take down a cluster that already works.
pub fn validate_clusterset(endpoints: &[ClusterEndpoint]) -> ClustersetCheck {
    check_clusterset(endpoints, None)
}

/// [`validate_clusterset`] as cluster `local` judges it: every other cluster's CIDRs must
/// also be ones `acceptance` accepts.
pub fn validate_clusterset_for(
    endpoints: &[ClusterEndpoint],
    local: &str,
    acceptance: &Acceptance,
) -> ClustersetCheck {
    check_clusterset(endpoints, Some((local, acceptance)))
}

fn check_clusterset(
    endpoints: &[ClusterEndpoint],
    judge: Option<(&str, &Acceptance)>,
) -> ClustersetCheck {
    let mut check = ClustersetCheck::default();
    for ep in endpoints {
        let site = match validate_endpoint(ep) {
            Ok(site) => site,
            Err(errors) => {
                check.refused.push((object_name(ep), errors));
                continue;
            }
        };
        if let Some((local, acceptance)) = judge {
            let refusals = if site.cluster_id == local {
                Vec::new()
            } else {
                acceptance.refusals(&site)
            };
            if !refusals.is_empty() {
                check.refused.push((site.object.clone(), refusals));
                continue;
            }
        }
        let conflicts: Vec<ValidationError> = check
            .sites
            .iter()
            .flat_map(|accepted| conflicts_between(&site, accepted))
            .collect();
        if conflicts.is_empty() {
            check.sites.push(site);
        } else {
            check.refused.push((site.object.clone(), conflicts));
        }
    }
    check
}

/// Conflicts of `site` with `accepted` (which may be `site` itself, for its internal checks).
fn conflicts_between(site: &Site, accepted: &Site) -> Vec<ValidationError> {
    let same = std::ptr::eq(site, accepted);
    let mut errors = Vec::new();
    if !same && site.cluster_id == accepted.cluster_id {
        errors.push(ValidationError::DuplicateClusterId {
            object: site.object.clone(),
            value: site.cluster_id.clone(),
            other_object: accepted.object.clone(),
        });
    }
    let mine = labelled_cidrs(site);
    let theirs = labelled_cidrs(accepted);
    for (i, (field, net)) in mine.iter().enumerate() {
        // Within one object compare each pair once.
        let start = if same { i + 1 } else { 0 };
        for (other_field, other) in &theirs[start..] {
            if overlaps(net, other) {
                errors.push(ValidationError::CidrOverlap {
                    object: site.object.clone(),
                    field: field.clone(),
                    value: *net,
                    other_object: accepted.object.clone(),
                    other_field: other_field.clone(),
                    other_value: *other,
                });
            }
        }
    }
    // Either side's CIDRs may swallow the other side's gateway endpoints.
    for (field, net) in &mine {
        for gw in &accepted.gateways {
            if net.contains(&gw.public_endpoint.ip()) {
                errors.push(ValidationError::CidrCapturesEndpoint {
                    object: site.object.clone(),
                    field: field.clone(),
                    value: *net,
                    other_object: accepted.object.clone(),
                    endpoint: gw.public_endpoint,
                });
            }
        }
    }
    if !same {
        for gw in &site.gateways {
            for (_, net) in &theirs {
                if net.contains(&gw.public_endpoint.ip()) {
                    errors.push(ValidationError::CidrCapturesEndpoint {
                        object: site.object.clone(),
                        field: "spec.gateways[].publicEndpoint".to_owned(),
                        value: *net,
                        other_object: accepted.object.clone(),
                        endpoint: gw.public_endpoint,
                    });
                }
            }
        }
    }
    for (i, gw) in site.gateways.iter().enumerate() {
        let start = if same { i + 1 } else { 0 };
        for (j, other) in accepted.gateways.iter().enumerate().skip(start) {
            if gw.public_key == other.public_key {
                errors.push(ValidationError::DuplicateKey {
                    object: site.object.clone(),
                    field: format!("spec.gateways[{i}].publicKey"),
                    other_object: accepted.object.clone(),
                    other_field: format!("spec.gateways[{j}].publicKey"),
                });
            }
        }
    }
    errors
}

fn labelled_cidrs(site: &Site) -> Vec<(String, IpNet)> {
    let pods = site
        .pod_cidrs
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("spec.podCIDRs[{i}]"), *n));
    let services = site
        .service_cidrs
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("spec.serviceCIDRs[{i}]"), *n));
    pods.chain(services).collect()
}

fn parse_cidrs(
    object: &str,
    field: &str,
    values: &[String],
    errors: &mut Vec<ValidationError>,
) -> Vec<IpNet> {
    let mut nets = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let field = format!("{field}[{i}]");
        match value.trim().parse::<IpNet>() {
            Err(e) => errors.push(ValidationError::CidrSyntax {
                object: object.to_owned(),
                field,
                value: value.clone(),
                reason: e.to_string(),
            }),
            Ok(net) if net.trunc() != net => errors.push(ValidationError::CidrHostBits {
                object: object.to_owned(),
                field,
                value: value.clone(),
                network: net.trunc(),
            }),
            Ok(net) if net.prefix_len() < min_prefix(&net) => {
                errors.push(ValidationError::CidrTooBroad {
                    object: object.to_owned(),
                    field,
                    value: value.clone(),
                })
            }
            Ok(net) => match RESERVED
                .iter()
                .find(|(range, _)| overlaps(&net, &range.parse().unwrap_or(net)))
            {
                Some((range, what)) => errors.push(ValidationError::CidrReserved {
                    object: object.to_owned(),
                    field,
                    value: net,
                    range: range.parse().unwrap_or(net),
                    what,
                }),
                None => nets.push(net),
            },
        }
    }
    nets
}

/// Address space that is never a cluster's pod or service network.
const RESERVED: [(&str, &str); 7] = [
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local, including cloud metadata services",
    ),
    ("224.0.0.0/4", "multicast"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("::/128", "the unspecified address"),
];

fn min_prefix(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(_) => 8,
        IpNet::V6(_) => 16,
    }
}

fn parse_gateway(
    object: &str,
    index: usize,
    gw: &GatewayEndpoint,
    errors: &mut Vec<ValidationError>,
) -> Option<SiteGateway> {
    let before = errors.len();
    let field = |name: &str| format!("spec.gateways[{index}].{name}");
    let public_key = parse_key(&gw.public_key)
        .map_err(|reason| {
            errors.push(ValidationError::Key {
                object: object.to_owned(),
                field: field("publicKey"),
                value: gw.public_key.clone(),
                reason,
            })
        })
        .ok();
    let public_endpoint = parse_endpoint(&gw.public_endpoint)
        .map_err(|reason| {
            errors.push(ValidationError::Endpoint {
                object: object.to_owned(),
                field: field("publicEndpoint"),
                value: gw.public_endpoint.clone(),
                reason,
            })
        })
        .ok();
    let mut parse_ip = |name: &str, value: &Option<String>| -> Option<IpAddr> {
        let value = value.as_ref()?;
        value
            .trim()
            .parse()
            .map_err(|_| {
                errors.push(ValidationError::Ip {
                    object: object.to_owned(),
                    field: field(name),
                    value: value.clone(),
                })
            })
            .ok()
    };
    let private_ip = parse_ip("privateIP", &gw.private_ip);
    let mut private_ips: Vec<IpAddr> = private_ip.into_iter().collect();
    for (i, value) in gw.private_ips.iter().enumerate() {
        if let Some(ip) = parse_ip(&format!("privateIPs[{i}]"), &Some(value.clone())) {
            if !private_ips.contains(&ip) {
                private_ips.push(ip);
            }
        }
    }
    let health_check_ip = parse_ip("healthCheckIP", &gw.health_check_ip);
    if errors.len() > before {
        return None;
    }
    Some(SiteGateway {
        node_name: gw.node_name.clone(),
        public_endpoint: public_endpoint?,
        public_key: public_key?,
        private_ip: private_ip.or_else(|| private_ips.first().copied()),
        private_ips,
        health_check_ip,
    })
}

/// Parses `ip:port` / `[ipv6]:port` as a gateway's public endpoint.
pub fn parse_endpoint(text: &str) -> Result<SocketAddr, &'static str> {
    let text = text.trim();
    let addr: SocketAddr = match text.parse() {
        Ok(addr) => addr,
        Err(_) if text.parse::<IpAddr>().is_ok() => return Err("has no port"),
        Err(_) if text.matches(':').count() > 1 && !text.starts_with('[') => {
            return Err("is an IPv6 address without brackets")
        }
        Err(_) => return Err("is not an IP address and port (host names are not resolved)"),
    };
    if addr.port() == 0 {
        return Err("has port 0");
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err("is not a unicast address other gateways can send to");
    }
    // Each reader sends WireGuard datagrams there from its own host: a loopback or
    // link-local endpoint would aim every other cluster's gateway at its own host's
    // services or its own segment (a reflector), never at this cluster.
    if ip.is_loopback() {
        return Err(
            "is a loopback address, which on every other gateway means that gateway's own host",
        );
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local {
        return Err("is a link-local address, which other clusters' gateways cannot reach");
    }
    Ok(addr)
}

fn check_dns1123_label(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.len() > 63 {
        return Err("is longer than 63 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("has characters other than lower-case letters, digits and '-'");
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err("starts or ends with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
