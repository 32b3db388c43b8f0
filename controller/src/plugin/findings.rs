//! `kubectl causeway diagnose`: what is wrong with a clusterset, from snapshots of its
//! clusters. Pure: the same snapshots and the same `now` give the same findings, each
//! naming the object and what to do. CIDR overlaps, duplicate IDs and bad keys come
//! from `causeway_crds::validate`, the same checks the controller refuses objects with.
//!
//! Thresholds: handshakes count as unanswered once a gateway has had no answer for
//! [`UNANSWERED_AFTER`] (and, when it counts them, sent at least
//! [`UNANSWERED_ATTEMPTS`] initiations): WireGuard retries every 5 s, so that is six
//! tries, well past a slow first answer. Versions are skewed when their major.minor
//! differs; patch releases mix freely.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::names::{gateway_lease, VERSION_ANNOTATION};
use causeway_crds::validate::{object_name, validate_clusterset, validate_endpoint};
use causeway_crds::{ClusterEndpoint, ConnectionState, ConnectionStatus, Gateway, GatewayRole};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::snapshot::ClusterSnapshot;
use crate::local::lease_holder;

/// What kind of problem a finding is; stable names for scripts (`-o json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingClass {
    /// A cluster has no ClusterEndpoint of its own: its controller is not running or not leading.
    NoLocalEndpoint,
    /// A ClusterEndpoint fails validation on its own (bad CIDR, key, endpoint, ID).
    InvalidEndpoint,
    /// ClusterEndpoints conflict with each other (overlapping CIDRs, an ID or key claimed twice).
    ClustersetConflict,
    /// The controller marked a ClusterEndpoint `Valid=False`.
    EndpointRefused,
    /// A cluster refuses another cluster's ClusterEndpoint (listed on its own object's
    /// `status.refused`): nothing of that cluster is mirrored or routed there.
    RemoteRefused,
    /// A cluster has no mirror of another cluster's ClusterEndpoint.
    MissingMirror,
    /// A cluster's mirror of another cluster differs from that cluster's own object.
    StaleMirror,
    /// A cluster lists no gateway candidate.
    NoGateways,
    /// A cluster has no active gateway (no unexpired gateway Lease, no Gateway with role active).
    NoActiveGateway,
    /// The active gateway's tunnel to a remote cluster is not connected.
    ConnectionDown,
    /// The active gateway reports nothing about a remote cluster it should reach.
    MissingConnection,
    /// A ServiceExport is `Valid=False` (no such Service, or an ExternalName one).
    ExportInvalid,
    /// A ServiceExport conflicts with another cluster's export of the same service.
    ExportConflict,
    /// The active gateway keeps sending handshake initiations to a remote gateway that never answers.
    UnansweredHandshakes,
    /// Connected gateways use different tunnel MTUs, or a tunnel MTU too large for its underlay.
    MtuMismatch,
    /// A gateway candidate's node lacks some of the routes it should hold.
    RoutesMissing,
    /// Components of the clusterset run releases with different major.minor versions.
    VersionSkew,
    /// A cluster's DNS does not resolve an imported service, or answers addresses it does
    /// not promise (checked live by the binary through the active gateway, see
    /// [`super::verify::dns_findings`]; never produced by [`diagnose`]).
    DnsAnswer,
}

/// No answer for this long to handshake initiations makes them unanswered.
pub const UNANSWERED_AFTER: SignedDuration = SignedDuration::from_secs(30);
/// At least this many initiations, when the gateway counts them, make them unanswered.
pub const UNANSWERED_ATTEMPTS: u64 = 3;
/// Bytes WireGuard adds to a packet over an IPv4 underlay (IPv4 20, UDP 8, WireGuard 32).
pub const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// Bytes WireGuard adds to a packet over an IPv6 underlay (IPv6 40, UDP 8, WireGuard 32).
pub const WIREGUARD_OVERHEAD_V6: u32 = 80;

impl FindingClass {
    /// The kebab-case name, as in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoLocalEndpoint => "no-local-endpoint",
            Self::InvalidEndpoint => "invalid-endpoint",
            Self::ClustersetConflict => "clusterset-conflict",
            Self::EndpointRefused => "endpoint-refused",
            Self::RemoteRefused => "remote-refused",
            Self::MissingMirror => "missing-mirror",
            Self::StaleMirror => "stale-mirror",
            Self::NoGateways => "no-gateways",
            Self::NoActiveGateway => "no-active-gateway",
            Self::ConnectionDown => "connection-down",
            Self::MissingConnection => "missing-connection",
            Self::ExportInvalid => "export-invalid",
            Self::ExportConflict => "export-conflict",
            Self::UnansweredHandshakes => "unanswered-handshakes",
            Self::MtuMismatch => "mtu-mismatch",
            Self::RoutesMissing => "routes-missing",
            Self::VersionSkew => "version-skew",
            Self::DnsAnswer => "dns-answer",
        }
    }
}

impl std::fmt::Display for FindingClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem, where it was seen and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// The kubeconfig context it was seen through.
    pub context: String,
    /// What kind of problem.
    pub class: FindingClass,
    /// The object, as `kind/namespace/name`.
    pub object: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Every finding about these clusters, sorted and without duplicates. `now` decides
/// whether Leases are expired.
pub fn diagnose(snapshots: &[ClusterSnapshot], now: Timestamp) -> Vec<Finding> {
    let mut out = BTreeSet::new();
    for s in snapshots {
        endpoints(s, &mut out);
        gateways(s, now, &mut out);
        handshakes(s, now, &mut out);
        underlay_mtu(s, now, &mut out);
        routes(s, &mut out);
        exports(s, &mut out);
    }
    clusterset(snapshots, &mut out);
    mirrors(snapshots, &mut out);
    tunnel_mtus(snapshots, now, &mut out);
    versions(snapshots, &mut out);
    out.into_iter().collect()
}

fn push(
    out: &mut BTreeSet<Finding>,
    s: &ClusterSnapshot,
    class: FindingClass,
    object: String,
    message: String,
) {
    out.insert(Finding {
        context: s.context.clone(),
        class,
        object,
        message,
    });
}

fn endpoint_ref(s: &ClusterSnapshot, ep: &ClusterEndpoint) -> String {
    format!("clusterendpoint/{}/{}", s.namespace, object_name(ep))
}

/// The condition of `type_` in `conditions`, if it has `status`.
fn condition<'a>(conditions: &'a [Condition], type_: &str, status: &str) -> Option<&'a Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status)
}

/// Each ClusterEndpoint on its own, its `Valid` condition, and the local one's gateways.
fn endpoints(s: &ClusterSnapshot, out: &mut BTreeSet<Finding>) {
    let Some(local) = s.local() else {
        push(
            out,
            s,
            FindingClass::NoLocalEndpoint,
            format!("namespace/{}", s.namespace),
            format!(
                "no ClusterEndpoint labelled causeway.dev/local=true in namespace {:?}; is causeway-controller running there and leading? \
                 check `kubectl -n {} get deploy,lease` and the controller's logs (or pass -n with Causeway's namespace)",
                s.namespace, s.namespace
            ),
        );
        return;
    };
    for ep in &s.endpoints {
        if let Err(errors) = validate_endpoint(ep) {
            for e in errors {
                push(
                    out,
                    s,
                    FindingClass::InvalidEndpoint,
                    endpoint_ref(s, ep),
                    e.to_string(),
                );
            }
        }
        let conditions = ep
            .status
            .as_ref()
            .map(|st| st.conditions.as_slice())
            .unwrap_or_default();
        if let Some(c) = condition(conditions, "Valid", "False") {
            push(
                out,
                s,
                FindingClass::EndpointRefused,
                endpoint_ref(s, ep),
                format!("the controller refused it ({}): {}", c.reason, c.message),
            );
        }
    }
    for refusal in local.status.iter().flat_map(|st| &st.refused) {
        push(
            out,
            s,
            FindingClass::RemoteRefused,
            endpoint_ref(s, local),
            format!(
                "cluster {:?} refuses cluster {:?}'s ClusterEndpoint ({}): {}; nothing new of {:?} is mirrored or routed here (the last accepted copy, if any, stays)",
                local.spec.cluster_id, refusal.cluster_id, refusal.reason, refusal.message, refusal.cluster_id
            ),
        );
    }
    if local.spec.gateways.is_empty() {
        push(
            out,
            s,
            FindingClass::NoGateways,
            endpoint_ref(s, local),
            format!(
                "cluster {:?} lists no gateway: label at least one node (two for failover) with `kubectl label node <node> causeway.dev/gateway=true` \
                 and check that the causeway-gateway DaemonSet runs there",
                local.spec.cluster_id
            ),
        );
    }
}

/// The active gateway, and its connections to every remote cluster this cluster mirrors.
fn gateways(s: &ClusterSnapshot, now: Timestamp, out: &mut BTreeSet<Finding>) {
    let Some(local) = s.local() else { return };
    if local.spec.gateways.is_empty() {
        return; // NoGateways says it already.
    }
    let id = &local.spec.cluster_id;
    let lease_name = gateway_lease(id);
    let lease = s
        .leases
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(&lease_name));
    let holder = lease.and_then(|l| lease_holder(l, now));
    let Some(active) = active_gateway(s, now) else {
        let lease_state = match (lease, holder) {
            (None, _) => format!("Lease {lease_name} does not exist"),
            (Some(_), None) => format!("Lease {lease_name} is expired or unheld"),
            (Some(_), Some(h)) => {
                format!("Lease {lease_name} names {h:?}, which has no Gateway object")
            }
        };
        push(
            out,
            s,
            FindingClass::NoActiveGateway,
            format!("lease/{}/{lease_name}", s.namespace),
            format!(
                "cluster {id:?} has no active gateway: {lease_state} and no Gateway says role active; \
                 check the causeway-gateway pods on the causeway.dev/gateway=true nodes (`kubectl -n {} get pods -o wide`) and their logs",
                s.namespace
            ),
        );
        return;
    };
    let gw_name = active.metadata.name.clone().unwrap_or_default();
    let gw_ref = format!("gateway/{}/{gw_name}", s.namespace);
    let connections = active
        .status
        .as_ref()
        .map(|st| st.connections.as_slice())
        .unwrap_or_default();
    for c in connections {
        // Unanswered handshakes say the same about this tunnel, and name the fix.
        if c.state != ConnectionState::Connected && unanswered_for(c, now).is_none() {
            let state = match c.state {
                ConnectionState::Connecting => "connecting",
                ConnectionState::Error => "error",
                ConnectionState::Connected => "connected",
            };
            push(
                out,
                s,
                FindingClass::ConnectionDown,
                gw_ref.clone(),
                format!(
                    "tunnel from {id:?} (gateway {gw_name}) to {:?} is {state}: {}",
                    c.cluster_id,
                    c.reason
                        .as_deref()
                        .unwrap_or("no reason given; see the gateway's logs")
                ),
            );
        }
    }
    for mirror in s.mirrors() {
        let remote = &mirror.spec.cluster_id;
        if remote != id && !connections.iter().any(|c| c.cluster_id == *remote) {
            push(
                out,
                s,
                FindingClass::MissingConnection,
                gw_ref.clone(),
                format!(
                    "the active gateway {gw_name} of {id:?} reports no tunnel to {remote:?}, whose ClusterEndpoint is mirrored here; \
                     the gateway may not have seen the mirror yet or refused it — see its logs"
                ),
            );
        }
    }
}

/// This cluster's active gateway: the one the gateway Lease names, else one that says
/// it is active (a gateway holding over without the API server still carries traffic).
/// The cluster's active gateway: the gateway Lease's holder, else a Gateway saying it is
/// active (one holding over without the API server still carries traffic).
pub fn active_gateway(s: &ClusterSnapshot, now: Timestamp) -> Option<&Gateway> {
    let id = s.cluster_id();
    let lease_name = gateway_lease(id);
    let holder = s
        .leases
        .iter()
        .find(|l| l.metadata.name.as_deref() == Some(&lease_name))
        .and_then(|l| lease_holder(l, now));
    let ours = || s.gateways.iter().filter(|g| g.spec.cluster_id == id);
    holder
        .and_then(|h| ours().find(|g| g.metadata.name.as_deref() == Some(h)))
        .or_else(|| {
            ours().find(|g| g.status.as_ref().and_then(|st| st.role) == Some(GatewayRole::Active))
        })
}

fn gateway_name(g: &Gateway) -> &str {
    g.metadata.name.as_deref().unwrap_or_default()
}

fn gateway_ref(s: &ClusterSnapshot, g: &Gateway) -> String {
    format!("gateway/{}/{}", s.namespace, gateway_name(g))
}

/// A duration for people: `45s`, `2m`, `2m5s`, `1h5m`.
pub fn human_duration(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 if secs % 60 == 0 => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Handshake initiations the active gateway keeps sending without an answer: the remote
/// gateway's UDP port is not reachable from here (a firewall, or NAT without a mapping).
fn handshakes(s: &ClusterSnapshot, now: Timestamp, out: &mut BTreeSet<Finding>) {
    let Some(gw) = active_gateway(s, now) else {
        return;
    };
    let id = s.cluster_id();
    let connections = gw.status.iter().flat_map(|st| st.connections.iter());
    for c in connections {
        let Some(unanswered) = unanswered_for(c, now) else {
            continue;
        };
        push(
            out,
            s,
            FindingClass::UnansweredHandshakes,
            gateway_ref(s, gw),
            unanswered_message(s, id, gateway_name(gw), c, unanswered),
        );
    }
}

/// How long `c`'s handshakes have gone unanswered, once that is long enough (and, when
/// counted, often enough) to be a finding.
fn unanswered_for(c: &ConnectionStatus, now: Timestamp) -> Option<SignedDuration> {
    let unanswered = now.duration_since(c.first_attempt.as_ref()?.0);
    let too_few = c
        .handshake_attempts
        .is_some_and(|n| n < UNANSWERED_ATTEMPTS);
    (unanswered > UNANSWERED_AFTER && !too_few).then_some(unanswered)
}

fn unanswered_message(
    s: &ClusterSnapshot,
    id: &str,
    gw: &str,
    c: &ConnectionStatus,
    unanswered: SignedDuration,
) -> String {
    let remote = &c.cluster_id;
    let endpoint = c.endpoint.as_deref().unwrap_or("the remote gateway");
    let port = c
        .endpoint
        .as_deref()
        .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
        .map_or(51820, |e| e.port());
    // Which of the remote cluster's gateways that is, from the mirror of its ClusterEndpoint.
    let node = s
        .mirrors()
        .filter(|m| m.spec.cluster_id == *remote)
        .flat_map(|m| m.spec.gateways.iter())
        .find(|g| Some(g.public_endpoint.as_str()) == c.endpoint.as_deref())
        .map(|g| format!(", gateway {}", g.node_name))
        .unwrap_or_default();
    let sent = match c.handshake_attempts {
        Some(n) => {
            format!("has sent {n} handshake initiations to {endpoint} ({remote}{node}) over")
        }
        None => {
            format!("has been sending handshake initiations to {endpoint} ({remote}{node}) for")
        }
    };
    format!(
        "{id}'s gateway {gw} {sent} {} without an answer: allow UDP {port} inbound to {remote}'s gateway \
         (firewall/security group), or set --public-endpoint on it if it is behind NAT",
        human_duration(unanswered)
    )
}

/// WireGuard's overhead on the underlay a gateway's public endpoint is on.
fn overhead(g: &Gateway) -> (u32, &'static str) {
    match g
        .spec
        .endpoint
        .public_endpoint
        .parse::<std::net::SocketAddr>()
    {
        Ok(std::net::SocketAddr::V6(_)) => (WIREGUARD_OVERHEAD_V6, "IPv6"),
        _ => (WIREGUARD_OVERHEAD_V4, "IPv4"),
    }
}

/// A tunnel MTU whose encapsulated packets do not fit the underlay.
fn underlay_mtu(s: &ClusterSnapshot, now: Timestamp, out: &mut BTreeSet<Finding>) {
    let Some(gw) = active_gateway(s, now) else {
        return;
    };
    let Some(st) = &gw.status else { return };
    let (Some(tunnel), Some(underlay)) = (st.tunnel_mtu, st.underlay_mtu) else {
        return;
    };
    let (overhead, family) = overhead(gw);
    if tunnel + overhead <= underlay {
        return;
    }
    push(
        out,
        s,
        FindingClass::MtuMismatch,
        gateway_ref(s, gw),
        format!(
            "{}'s gateway {} has tunnel MTU {tunnel}, but its underlay MTU is {underlay}: with WireGuard's {overhead} bytes over {family} \
             a full-size packet is {} bytes and is fragmented or dropped; set --mtu {} on it (or leave --mtu unset to derive it from the underlay)",
            s.cluster_id(),
            gateway_name(gw),
            tunnel + overhead,
            underlay.saturating_sub(overhead)
        ),
    );
}

/// Connected clusters whose active gateways use different tunnel MTUs: packets that fit
/// one direction do not fit the other. Reported once per pair, where the MTU is larger.
fn tunnel_mtus(snapshots: &[ClusterSnapshot], now: Timestamp, out: &mut BTreeSet<Finding>) {
    let actives: Vec<(&ClusterSnapshot, &Gateway, u32)> = snapshots
        .iter()
        .filter_map(|s| {
            let gw = active_gateway(s, now)?;
            let mtu = gw.status.as_ref()?.tunnel_mtu?;
            Some((s, gw, mtu))
        })
        .collect();
    let connected = |from: &Gateway, to: &ClusterSnapshot| {
        from.status
            .iter()
            .flat_map(|st| st.connections.iter())
            .any(|c| c.cluster_id == to.cluster_id())
    };
    for (s, gw, mtu) in &actives {
        for (other, other_gw, other_mtu) in &actives {
            if other_mtu >= mtu || !(connected(gw, other) || connected(other_gw, s)) {
                continue;
            }
            push(
                out,
                s,
                FindingClass::MtuMismatch,
                gateway_ref(s, gw),
                format!(
                    "{}'s gateway {} uses tunnel MTU {mtu} but {}'s gateway {} uses {other_mtu}: packets of {} to {mtu} bytes fit one way and not the other; \
                     set the same --mtu on both gateways ({other_mtu}, the smaller) or give both underlays the same MTU",
                    s.cluster_id(),
                    gateway_name(gw),
                    other.cluster_id(),
                    gateway_name(other_gw),
                    other_mtu + 1
                ),
            );
        }
    }
}

/// Gateway candidates (active or passive) whose node lacks routes it should hold. Route
/// agents have no Gateway object and are not seen here.
fn routes(s: &ClusterSnapshot, out: &mut BTreeSet<Finding>) {
    let id = s.cluster_id();
    for gw in s.gateways.iter().filter(|g| g.spec.cluster_id == id) {
        let Some(r) = gw.status.as_ref().and_then(|st| st.routes.as_ref()) else {
            continue;
        };
        if r.installed >= r.desired {
            continue;
        }
        let missing = r.desired - r.installed;
        let more = if (missing as usize) > r.missing.len() {
            format!(" and {} more", missing as usize - r.missing.len())
        } else {
            String::new()
        };
        let node = &gw.spec.endpoint.node_name;
        push(
            out,
            s,
            FindingClass::RoutesMissing,
            gateway_ref(s, gw),
            format!(
                "{id}'s gateway {} holds {} of the {} routes it should on node {node}; missing: {}{more}: the kernel refused them — \
                 check the log of the causeway-gateway pod on {node} (`kubectl -n {} logs`) for the route errors, and whether another route manager \
                 (the CNI, another VPN) holds routes to those CIDRs (`ip route show {}` on the node)",
                gateway_name(gw),
                r.installed,
                r.desired,
                r.missing.join(", "),
                s.namespace,
                r.missing.first().map_or("<cidr>", String::as_str)
            ),
        );
    }
}

/// The major.minor of a version, as numbers to order by; `None` when it is not `x.y…`.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Components (controllers, gateways) of the clusterset on different major.minor releases:
/// each one behind the newest is a finding listing who runs what.
fn versions(snapshots: &[ClusterSnapshot], out: &mut BTreeSet<Finding>) {
    // (snapshot, object, who, version)
    let mut components: Vec<(&ClusterSnapshot, String, String, &str)> = Vec::new();
    for s in snapshots {
        let id = s.cluster_id();
        if let Some(local) = s.local() {
            let annotation = local
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(VERSION_ANNOTATION));
            if let Some(v) = annotation {
                components.push((s, endpoint_ref(s, local), format!("{id} controller"), v));
            }
        }
        for gw in s.gateways.iter().filter(|g| g.spec.cluster_id == id) {
            if let Some(v) = gw.status.as_ref().and_then(|st| st.version.as_deref()) {
                components.push((
                    s,
                    gateway_ref(s, gw),
                    format!("{id} gateway {}", gateway_name(gw)),
                    v,
                ));
            }
        }
    }
    let releases: BTreeMap<(u64, u64), &str> = components
        .iter()
        .filter_map(|(_, _, _, v)| Some((major_minor(v)?, *v)))
        .collect();
    let Some((newest, newest_text)) = releases.last_key_value() else {
        return;
    };
    if releases.len() < 2 {
        return;
    }
    let listing = components
        .iter()
        .map(|(_, _, who, v)| format!("{who} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    for (s, object, who, v) in &components {
        if major_minor(v).is_some_and(|mm| mm < *newest) {
            push(
                out,
                s,
                FindingClass::VersionSkew,
                object.clone(),
                format!(
                    "{who} runs {v}, behind the newest release in the clusterset ({newest_text}): {listing}; \
                     upgrade every cluster's Causeway (`helm upgrade` of the chart) to the same release"
                ),
            );
        }
    }
}

/// ServiceExport conditions the controller wrote.
fn exports(s: &ClusterSnapshot, out: &mut BTreeSet<Finding>) {
    for e in &s.exports {
        let name = format!(
            "serviceexport/{}/{}",
            e.metadata.namespace.as_deref().unwrap_or_default(),
            e.metadata.name.as_deref().unwrap_or_default()
        );
        let conditions = e
            .status
            .as_ref()
            .map(|st| st.conditions.as_slice())
            .unwrap_or_default();
        if let Some(c) = condition(conditions, "Valid", "False") {
            push(
                out,
                s,
                FindingClass::ExportInvalid,
                name.clone(),
                format!("{}: {}", c.reason, c.message),
            );
        }
        if let Some(c) = condition(conditions, "Conflict", "True") {
            push(
                out,
                s,
                FindingClass::ExportConflict,
                name,
                format!("{}: {}", c.reason, c.message),
            );
        }
    }
}

/// Conflicts between clusters: within what each cluster holds (its own object and its
/// mirrors) and across the local objects of every context given.
fn clusterset(snapshots: &[ClusterSnapshot], out: &mut BTreeSet<Finding>) {
    let mut report = |s: &ClusterSnapshot, endpoints: &[ClusterEndpoint]| {
        let mut sorted = endpoints.to_vec();
        // First come, first served, as the controller decides.
        sorted.sort_by(|a, b| {
            let key = |e: &ClusterEndpoint| {
                (
                    e.metadata.creation_timestamp.clone().map(|t| t.0),
                    object_name(e),
                )
            };
            key(a).cmp(&key(b))
        });
        let valid: Vec<ClusterEndpoint> = sorted
            .into_iter()
            .filter(|e| validate_endpoint(e).is_ok())
            .collect();
        for (object, errors) in validate_clusterset(&valid).refused {
            for e in errors {
                push(
                    out,
                    s,
                    FindingClass::ClustersetConflict,
                    format!("clusterendpoint/{}/{object}", s.namespace),
                    e.to_string(),
                );
            }
        }
    };
    for s in snapshots {
        report(s, &s.endpoints);
    }
    if let Some(first) = snapshots.first() {
        let locals: Vec<ClusterEndpoint> = snapshots
            .iter()
            .filter_map(|s| s.local().cloned())
            .collect();
        if locals.len() > 1 {
            report(first, &locals);
        }
    }
}

/// Every cluster should hold a current mirror of every other cluster given.
fn mirrors(snapshots: &[ClusterSnapshot], out: &mut BTreeSet<Finding>) {
    for s in snapshots {
        let Some(local) = s.local() else { continue };
        for other in snapshots {
            let Some(remote) = other.local() else {
                continue;
            };
            if remote.spec.cluster_id == local.spec.cluster_id {
                continue;
            }
            let id = &remote.spec.cluster_id;
            match s.mirrors().find(|m| m.spec.cluster_id == *id) {
                None => push(
                    out,
                    s,
                    FindingClass::MissingMirror,
                    format!("clusterendpoint/{}/{id}", s.namespace),
                    format!(
                        "cluster {:?} has no mirror of cluster {id:?}: check that both controllers reach the broker (their logs) \
                         and the Valid condition of {id:?} at the broker",
                        local.spec.cluster_id
                    ),
                ),
                Some(m) if m.spec != remote.spec => push(
                    out,
                    s,
                    FindingClass::StaleMirror,
                    endpoint_ref(s, m),
                    format!(
                        "cluster {:?}'s mirror of {id:?} differs from {id:?}'s own object ({}); the broker sync of one of them is behind — check both controllers' logs",
                        local.spec.cluster_id,
                        differing_fields(&m.spec, &remote.spec)
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}

fn differing_fields(
    a: &causeway_crds::ClusterEndpointSpec,
    b: &causeway_crds::ClusterEndpointSpec,
) -> String {
    let mut fields = Vec::new();
    if a.pod_cidrs != b.pod_cidrs {
        fields.push("podCIDRs");
    }
    if a.service_cidrs != b.service_cidrs {
        fields.push("serviceCIDRs");
    }
    if a.gateways != b.gateways {
        fields.push("gateways");
    }
    fields.join(", ")
}

#[cfg(test)]
mod tests;
