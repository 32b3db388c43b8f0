//! The pure judgement of the agents' answers: which services to check, one row per
//! check for `verify` ([`rows`]), and what each cluster's DNS may answer for `diagnose`'s
//! `dns-answer` class ([`dns_expectations`], [`dns_findings`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use causeway_crds::mcs::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::{ServiceImport, ServiceImportType};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use super::{AgentDns, AgentTcp, AgentVerify};
use crate::dns::zone::{healthy_clusters, MANAGED_BY, MANAGED_BY_LABEL};
use crate::plugin::{findings, ClusterSnapshot, Finding, FindingClass};

/// A handshake older than this means the tunnel is down: WireGuard re-keys every two
/// minutes while packets flow (health probes flow every second) and rejects a session
/// after three.
pub const HANDSHAKE_STALE: Duration = Duration::from_secs(180);

/// An exported service to resolve, and the port to connect to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceCheck {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// The first TCP port of the ServiceImport, connected to after resolving.
    pub port: Option<u16>,
    /// The clusters exporting it.
    pub exporters: Vec<String>,
}

impl ServiceCheck {
    /// `<svc>.<ns>.svc.clusterset.local`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc.clusterset.local", self.name, self.namespace)
    }

    /// The agent's `dns` parameter: the name, and `:port` when one is to be connected to.
    pub fn dns_param(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.dns_name()),
            None => self.dns_name(),
        }
    }
}

/// The exported services to check: every ServiceImport the snapshots hold (or only those
/// named in `only`, as `namespace/name`), with their exporting clusters. A name in `only`
/// that no cluster imports is checked all the same (its DNS check then fails, saying so).
pub fn services_to_check(snapshots: &[ClusterSnapshot], only: &[String]) -> Vec<ServiceCheck> {
    let mut found: BTreeMap<(String, String), (Option<u16>, BTreeSet<String>)> = BTreeMap::new();
    for import in snapshots.iter().flat_map(|s| &s.imports) {
        let (Some(ns), Some(name)) = (&import.metadata.namespace, &import.metadata.name) else {
            continue;
        };
        if !only.is_empty() && !only.contains(&format!("{ns}/{name}")) {
            continue;
        }
        let entry = found.entry((ns.clone(), name.clone())).or_default();
        if entry.0.is_none() {
            entry.0 = tcp_port(import);
        }
        entry.1.extend(
            import
                .status
                .iter()
                .flat_map(|s| &s.clusters)
                .map(|c| c.cluster.clone()),
        );
    }
    for wanted in only {
        if let Some((ns, name)) = wanted.split_once('/') {
            found.entry((ns.to_owned(), name.to_owned())).or_default();
        }
    }
    found
        .into_iter()
        .map(|((namespace, name), (port, exporters))| ServiceCheck {
            namespace,
            name,
            port,
            exporters: exporters.into_iter().collect(),
        })
        .collect()
}

fn tcp_port(import: &ServiceImport) -> Option<u16> {
    import
        .spec
        .ports
        .iter()
        .find(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .and_then(|p| u16::try_from(p.port).ok())
}

/// Whether a check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did.
    Ok,
    /// It did not; the row says why and how to fix it.
    Fail,
}

/// One line of `verify`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRow {
    /// The cluster the check ran from (its active gateway).
    pub from: String,
    /// The remote cluster, or the exporting clusters of a service.
    pub to: String,
    /// `tunnel`, `rtt`, `dns <name>` or `gateway`.
    pub check: String,
    /// Pass or fail.
    pub outcome: Outcome,
    /// What was seen.
    pub detail: String,
    /// How to fix a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl VerifyRow {
    fn new(from: &str, to: &str, check: impl Into<String>) -> VerifyRow {
        VerifyRow {
            from: from.to_owned(),
            to: to.to_owned(),
            check: check.into(),
            outcome: Outcome::Ok,
            detail: String::new(),
            fix: None,
        }
    }

    fn ok(mut self, detail: impl Into<String>) -> VerifyRow {
        self.detail = detail.into();
        self
    }

    fn fail(mut self, detail: impl Into<String>, fix: impl Into<String>) -> VerifyRow {
        self.outcome = Outcome::Fail;
        self.detail = detail.into();
        self.fix = Some(fix.into());
        self
    }
}

/// What one cluster's gateway answered, or why it could not be asked.
#[derive(Debug)]
pub struct ClusterResult {
    /// The cluster checked from.
    pub cluster: String,
    /// The answer, or the reason there is none.
    pub answer: Result<AgentVerify, String>,
}

/// Judges every cluster's answer (pure): per ordered pair of clusters a `tunnel` and an
/// `rtt` row, per cluster and checked service a `dns` row.
pub fn rows(results: &[ClusterResult], services: &[ServiceCheck]) -> Vec<VerifyRow> {
    let clusters: Vec<&str> = results.iter().map(|r| r.cluster.as_str()).collect();
    let mut out = Vec::new();
    for result in results {
        let from = result.cluster.as_str();
        let answer = match &result.answer {
            Ok(a) if a.active => a,
            Ok(_) => {
                out.push(VerifyRow::new(from, "*", "gateway").fail(
                    "the gateway found as active has no tunnel open (it is passive or starting)",
                    "run verify again; if it persists, check the gateway Lease and `kubectl causeway diagnose`",
                ));
                continue;
            }
            Err(reason) => {
                out.push(VerifyRow::new(from, "*", "gateway").fail(
                    reason.clone(),
                    "make sure the cluster's active gateway pod runs and answers on its metrics port (the message says what failed), then run verify again",
                ));
                continue;
            }
        };
        for to in clusters.iter().copied().filter(|c| *c != from) {
            out.extend(pair_rows(from, to, answer));
        }
        for service in services {
            out.push(dns_row(from, service, answer));
        }
    }
    out
}

fn pair_rows(from: &str, to: &str, answer: &AgentVerify) -> [VerifyRow; 2] {
    let tunnel = VerifyRow::new(from, to, "tunnel");
    let rtt = VerifyRow::new(from, to, "rtt");
    let Some(peer) = answer.peers.iter().find(|p| p.cluster == to) else {
        let fix = format!("check that {from} mirrors ClusterEndpoint {to} (`kubectl causeway show clusters`) and that it is valid (`kubectl causeway diagnose`)");
        return [
            tunnel.fail(format!("{from}'s gateway has no peer {to}"), fix.clone()),
            rtt.fail("no peer to probe", fix),
        ];
    };
    let unreachable_fix = format!(
        "check that {to}'s gateway UDP endpoint {} is reachable from {from}'s gateway (firewall, NAT) and that both run",
        peer.endpoint.as_deref().unwrap_or("(unknown)")
    );
    let tunnel = match peer.last_handshake_seconds {
        Some(age) if age <= HANDSHAKE_STALE.as_secs_f64() => {
            tunnel.ok(format!("handshake {} ago", human_seconds(age)))
        }
        Some(age) => tunnel.fail(
            format!(
                "last handshake {} ago: the tunnel is down",
                human_seconds(age)
            ),
            unreachable_fix.clone(),
        ),
        None => tunnel.fail("no handshake ever completed", unreachable_fix.clone()),
    };
    let rtt = match (&peer.probe_target, &peer.rtt) {
        (None, _) => rtt.fail(
            format!(
                "{to} publishes no healthCheckIP for its active gateway, so nothing can be probed"
            ),
            format!("give {to}'s gateways --health-check-ip (an address inside {to}'s pod CIDRs)"),
        ),
        (Some(target), None) => rtt.fail(
            format!(
                "none of {} probes to {target} was answered",
                peer.probes_sent
            ),
            format!(
                "{unreachable_fix}; probes travel the tunnel to UDP 51821 of {to}'s healthCheckIP"
            ),
        ),
        (Some(_), Some(r)) => rtt.ok(format!(
            "min {:.2} avg {:.2} p99 {:.2} ms ({}/{} probes)",
            r.min_ms, r.avg_ms, r.p99_ms, r.samples, peer.probes_sent
        )),
    };
    [tunnel, rtt]
}

fn dns_row(from: &str, service: &ServiceCheck, answer: &AgentVerify) -> VerifyRow {
    let name = service.dns_name();
    let to = match service.exporters.is_empty() {
        true => "-".to_owned(),
        false => service.exporters.join(","),
    };
    let row = VerifyRow::new(from, &to, format!("dns {name}"));
    let Some(dns) = answer.dns.iter().find(|d| d.name == name) else {
        return row.fail(
            "the gateway did not answer for this name",
            "upgrade the gateway to the plugin's version",
        );
    };
    let not_imported = service.exporters.is_empty();
    let dns_fix = format!(
        "check that {from}'s CoreDNS forwards clusterset.local to the causeway-dns Service, that {from} imports {}/{} (`kubectl causeway show imports`) and that its exports are Ready (`kubectl causeway show exports`)",
        service.namespace, service.name
    );
    if let Some(error) = &dns.error {
        return row.fail(format!("DNS server {}: {error}", dns.server), dns_fix);
    }
    if dns.addresses.is_empty() {
        let mut detail = format!(
            "{} answered {} with no address",
            dns.server,
            dns.rcode.as_deref().unwrap_or("nothing")
        );
        if not_imported {
            detail.push_str(&format!(
                " (no cluster read imports {}/{})",
                service.namespace, service.name
            ));
        }
        return row.fail(detail, dns_fix);
    }
    let addresses = dns.addresses.join(",");
    match &dns.tcp {
        None => row.ok(addresses),
        Some(AgentTcp {
            address,
            connect_ms: Some(ms),
            ..
        }) => row.ok(format!("{addresses}; tcp {address} connected in {ms:.1} ms")),
        Some(AgentTcp { address, error, .. }) => row.fail(
            format!(
                "{addresses}; tcp {address}: {}",
                error.as_deref().unwrap_or("failed")
            ),
            format!("check that {}/{} has ready endpoints listening on that port in {to}, and that no NetworkPolicy there refuses {from}'s pod CIDRs", service.namespace, service.name),
        ),
    }
}

/// What one cluster's DNS may answer for one of its ServiceImports.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsExpectation {
    /// The name checked, its DNS name and port (none: `diagnose` connects to nothing).
    pub service: ServiceCheck,
    /// The import's type.
    pub type_: ServiceImportType,
    /// Every address the import promises; an answer is right when it holds one of them.
    pub addresses: BTreeSet<IpAddr>,
}

/// What the snapshot's cluster's DNS may answer for each of its ServiceImports (pure).
///
/// The addresses are the import's `spec.ips` plus the ready addresses (unset readiness
/// counts as ready, as in Kubernetes) of Causeway's EndpointSlices of the service whose
/// source cluster is this one or a remote one whose tunnel is up ([`healthy_clusters`]),
/// the clusters the controller's zone answers from (`docs/services.md`, "DNS"). Causeway
/// allocates no clusterset VIP, so a member cluster's `spec.ips` is empty and a
/// ClusterSetIP answer is an exporter's ClusterIP, which is that exporter's slice's one
/// endpoint; `spec.ips` is counted for an import another MCS implementation gave a VIP.
/// The set is deliberately a superset (local-first may answer fewer): judging "at least
/// one answered address is promised" catches a wrong forward without guessing the zone.
pub fn dns_expectations(s: &ClusterSnapshot, slices: &[EndpointSlice]) -> Vec<DnsExpectation> {
    let local = s.cluster_id().to_ascii_lowercase();
    let healthy = healthy_clusters(&s.gateways);
    let reachable = |cluster: &str| {
        let cluster = cluster.to_ascii_lowercase();
        cluster == local || healthy.contains(&cluster)
    };
    let mut out: Vec<DnsExpectation> = Vec::new();
    for import in &s.imports {
        let (Some(namespace), Some(name)) = (&import.metadata.namespace, &import.metadata.name)
        else {
            continue;
        };
        let mut addresses: BTreeSet<IpAddr> = import
            .spec
            .ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        for slice in slices {
            let label = |key: &str| {
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .map(String::as_str)
            };
            let ours = label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
                && slice.metadata.namespace.as_deref() == Some(namespace.as_str())
                && label(LABEL_SERVICE_NAME) == Some(name.as_str())
                && label(LABEL_SOURCE_CLUSTER).is_some_and(reachable);
            if !ours {
                continue;
            }
            let ready = slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
            addresses.extend(
                ready
                    .flat_map(|e| &e.addresses)
                    .filter_map(|a| a.parse::<IpAddr>().ok()),
            );
        }
        out.push(DnsExpectation {
            service: ServiceCheck {
                namespace: namespace.clone(),
                name: name.clone(),
                port: None,
                exporters: Vec::new(),
            },
            type_: import.spec.type_,
            addresses,
        });
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

/// What is wrong with one DNS answer, given the promised addresses; `None`: it is right
/// (pure). Wrong: no answer, an error code (NXDOMAIN included: the import exists, so the
/// name must), no address while addresses are promised, or only unpromised addresses.
/// No address while none is promised is right (NODATA): the service has no ready
/// backend in a reachable cluster, which is no DNS problem.
pub fn dns_answer_problem(expected: &BTreeSet<IpAddr>, dns: &AgentDns) -> Option<String> {
    let server = &dns.server;
    if let Some(error) = &dns.error {
        return Some(format!("DNS server {server} did not answer: {error}"));
    }
    let rcode = dns.rcode.as_deref().unwrap_or("nothing");
    if rcode != "NoError" {
        return Some(format!("DNS server {server} answered {rcode}"));
    }
    let answered: BTreeSet<IpAddr> = dns
        .addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if answered.is_empty() {
        return (!expected.is_empty())
            .then(|| format!("DNS server {server} answered NoError with no address"));
    }
    if answered.iter().any(|a| expected.contains(a)) {
        return None;
    }
    Some(format!(
        "DNS server {server} answered {}, none of them promised",
        dns.addresses.join(",")
    ))
}

/// `dns-answer` findings of one cluster from its gateway's answer to the names of
/// `expected` (pure).
pub fn dns_findings(
    s: &ClusterSnapshot,
    expected: &[DnsExpectation],
    answer: &AgentVerify,
) -> Vec<Finding> {
    let cluster = s.cluster_id();
    let mut out = Vec::new();
    for e in expected {
        let name = e.service.dns_name();
        let (ns, svc) = (&e.service.namespace, &e.service.name);
        let problem = match answer.dns.iter().find(|d| d.name == name) {
            Some(dns) => dns_answer_problem(&e.addresses, dns),
            None => Some(
                "the active gateway did not resolve it (is the gateway older than this plugin?)"
                    .to_owned(),
            ),
        };
        let Some(problem) = problem else { continue };
        let promised = match e.addresses.is_empty() {
            true => "no address (no ready endpoint in a reachable cluster)".to_owned(),
            false => e
                .addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        let source = match e.type_ {
            ServiceImportType::Headless => "ready endpoints of its EndpointSlices",
            ServiceImportType::ClusterSetIP => "exporters' ClusterIPs and spec.ips",
        };
        out.push(Finding {
            context: s.context.clone(),
            class: FindingClass::DnsAnswer,
            object: format!("serviceimport/{ns}/{svc}"),
            message: format!(
                "cluster {cluster} resolves {name} wrongly: {problem}; expected {promised} ({source}). \
                 Check that {cluster}'s CoreDNS forwards clusterset.local to the causeway-dns Service \
                 (docs/services.md) and that the controller serving it runs and logs no DNS error \
                 (`kubectl -n {} logs deploy/causeway-controller`)",
                s.namespace
            ),
        });
    }
    out
}

fn human_seconds(secs: f64) -> String {
    findings::human_duration(SignedDuration::from_secs_f64(secs.max(0.0)))
}
