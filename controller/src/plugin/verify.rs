//! `kubectl causeway verify`: an end-to-end check between every pair of clusters.
//!
//! An operator's laptop cannot reach pod networks, so the checks run on each cluster's
//! active gateway (its agent on the metrics HTTP server, `GET /verify`), reached through
//! the API server's pod proxy. The gateway probes every remote gateway through the tunnel
//! right now, resolves the asked names with its cluster's DNS and connects to the answer.
//! This module holds the wire types the gateway answers with (the gateway crate uses
//! them too), how a gateway pod is found, and the pure judgement of the answers
//! ([`rows`]); the binary only fetches and prints. `diagnose`'s live `dns-answer` class
//! asks the same agent and is judged here too ([`dns_findings`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use causeway_crds::mcs::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use causeway_crds::names::{
    gateway_lease, AGENT_CLIENT_ACCOUNT, AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_HEADER,
};
use causeway_crds::{ServiceImport, ServiceImportType};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{findings, ClusterSnapshot, Finding, FindingClass};
use crate::dns::zone::{healthy_clusters, MANAGED_BY, MANAGED_BY_LABEL};

/// Label of the gateway DaemonSet's pods (the chart's selector labels).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// [`COMPONENT_LABEL`]'s value on gateway pods.
pub const GATEWAY_COMPONENT: &str = "gateway";
/// Name of the gateway container's port of the metrics and agent HTTP server.
pub const AGENT_PORT_NAME: &str = "metrics";
/// The gateway's default `--metrics-addr` port, used when a pod names no `metrics` port.
pub const DEFAULT_AGENT_PORT: u16 = 9469;
/// A handshake older than this means the tunnel is down: WireGuard re-keys every two
/// minutes while packets flow (health probes flow every second) and rejects a session
/// after three.
pub const HANDSHAKE_STALE: Duration = Duration::from_secs(180);

// The wire types the gateway's agent answers with live in `causeway-agent-api`, so the
// gateway needs no part of the controller.
pub use causeway_agent_api::verify::{AgentDns, AgentPeer, AgentTcp, AgentVerify, RttFigures};

/// Why `verify` or `benchmark` could not reach a gateway.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The cluster has no active gateway to ask.
    #[error("context {context:?}: cluster {cluster} has no active gateway (no unexpired holder of Lease {lease}, no Gateway with status.role active); check `kubectl causeway diagnose` and the gateway pods' logs")]
    NoActiveGateway {
        /// The context.
        context: String,
        /// The cluster.
        cluster: String,
        /// The gateway Lease's name.
        lease: String,
    },
    /// No pod runs the gateway on the active gateway's node.
    #[error("context {context:?}: no running pod labelled {COMPONENT_LABEL}={GATEWAY_COMPONENT} in namespace {namespace} on node {node} (the active gateway); check the gateway DaemonSet")]
    NoPod {
        /// The context.
        context: String,
        /// Causeway's namespace.
        namespace: String,
        /// The active gateway's node.
        node: String,
    },
    /// Listing the pods failed.
    #[error("context {context:?}: cannot list pods in namespace {namespace}: {source}; check that you may list pods there")]
    ListPods {
        /// The context.
        context: String,
        /// Causeway's namespace.
        namespace: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },
    /// The request through the pod proxy failed.
    #[error("context {context:?}: gateway pod {namespace}/{pod} did not answer {path} through the API server's pod proxy: {reason}; check that the pod runs, that its metrics server listens on the pod's `metrics` port, and that you may get pods/proxy")]
    Proxy {
        /// The context.
        context: String,
        /// Causeway's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The agent path asked.
        path: String,
        /// What the API server or the agent said.
        reason: String,
    },
    /// The agent's token could not be minted.
    #[error("context {context:?}: cannot create a token of ServiceAccount {namespace}/{AGENT_CLIENT_ACCOUNT}: {reason}; the gateway agent answers only such tokens: bind Role causeway-operator to you (`kubectl -n {namespace} create rolebinding <name> --role=causeway-operator --user=<you>`), or upgrade the chart if the account is missing")]
    Token {
        /// The context.
        context: String,
        /// Causeway's namespace.
        namespace: String,
        /// What the API server said.
        reason: String,
    },
    /// Listing Causeway's EndpointSlices failed.
    #[error("context {context:?}: cannot list EndpointSlices labelled {MANAGED_BY_LABEL}={MANAGED_BY} in all namespaces: {source}; check that you may list endpointslices.discovery.k8s.io")]
    ListSlices {
        /// The context.
        context: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },
    /// The agent answered something that is not its JSON.
    #[error("context {context:?}: gateway pod {pod} answered {path} with something unexpected ({reason}); is the gateway older than this plugin?")]
    Answer {
        /// The context.
        context: String,
        /// The pod.
        pod: String,
        /// The agent path asked.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// The active gateway's pod of one cluster, as the pod proxy addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayPod {
    /// The context it was found through.
    pub context: String,
    /// Its cluster's ID.
    pub cluster: String,
    /// Causeway's namespace.
    pub namespace: String,
    /// The active gateway's node.
    pub node: String,
    /// The pod's name.
    pub pod: String,
    /// The agent's port.
    pub port: u16,
    /// What the agent is shown (never printed).
    #[serde(skip)]
    pub token: AgentToken,
}

/// A token the gateway agent accepts: [`AGENT_CLIENT_ACCOUNT`]'s, for
/// [`AGENT_TOKEN_AUDIENCE`]. Its `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AgentToken(String);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken(..)")
    }
}

/// How long a minted agent token lives: the API server's minimum, longer than any run.
const AGENT_TOKEN_SECONDS: i64 = 600;

/// Mints a token the gateway agent of `namespace` accepts (TokenRequest), as the
/// plugin's user: the user's right to do so is the right to ask the agent.
pub async fn mint_agent_token(
    client: &Client,
    context: &str,
    namespace: &str,
) -> Result<AgentToken, VerifyError> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AGENT_TOKEN_AUDIENCE.to_owned()],
            expiration_seconds: Some(AGENT_TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(AGENT_CLIENT_ACCOUNT, &PostParams::default(), &request)
        .await
        .map_err(|source| VerifyError::Token {
            context: context.to_owned(),
            namespace: namespace.to_owned(),
            reason: api_reason(&source),
        })?;
    Ok(AgentToken(
        answer.status.map(|s| s.token).unwrap_or_default(),
    ))
}

/// What an API error says, without its Debug noise.
fn api_reason(error: &kube::Error) -> String {
    match error {
        // The Status message is the whole story; its Debug form is noise.
        kube::Error::Api(status) => format!("{} {}", status.code, status.message.trim()),
        other => other.to_string(),
    }
}

/// The node of the cluster's active gateway (see [`findings::active_gateway`]).
pub fn active_gateway_node(s: &ClusterSnapshot, now: Timestamp) -> Option<String> {
    findings::active_gateway(s, now).and_then(|g| g.metadata.name.clone())
}

/// The running gateway pod on `node` among `pods`, and its agent port.
pub fn pick_pod(pods: &[Pod], node: &str) -> Option<(String, u16)> {
    let running = |p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    };
    let pod = pods
        .iter()
        .filter(running)
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))?;
    let port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(AGENT_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((pod.metadata.name.clone()?, port))
}

/// Finds the active gateway's pod of the snapshot's cluster.
pub async fn find_gateway_pod(
    client: &Client,
    s: &ClusterSnapshot,
    now: Timestamp,
) -> Result<GatewayPod, VerifyError> {
    let node = active_gateway_node(s, now).ok_or_else(|| VerifyError::NoActiveGateway {
        context: s.context.clone(),
        cluster: s.cluster_id().to_owned(),
        lease: gateway_lease(s.cluster_id()),
    })?;
    let pods = Api::<Pod>::namespaced(client.clone(), &s.namespace)
        .list(&ListParams::default().labels(&format!("{COMPONENT_LABEL}={GATEWAY_COMPONENT}")))
        .await
        .map_err(|source| VerifyError::ListPods {
            context: s.context.clone(),
            namespace: s.namespace.clone(),
            source: Box::new(source),
        })?
        .items;
    let (pod, port) = pick_pod(&pods, &node).ok_or_else(|| VerifyError::NoPod {
        context: s.context.clone(),
        namespace: s.namespace.clone(),
        node: node.clone(),
    })?;
    let token = mint_agent_token(client, &s.context, &s.namespace).await?;
    Ok(GatewayPod {
        context: s.context.clone(),
        cluster: s.cluster_id().to_owned(),
        namespace: s.namespace.clone(),
        node,
        pod,
        port,
        token,
    })
}

impl GatewayPod {
    /// The pod proxy request for the agent's `path_and_query` (which starts with `/`).
    pub fn request(&self, path_and_query: &str) -> http::Request<Vec<u8>> {
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{}:{}/proxy{path_and_query}",
            self.namespace, self.pod, self.port
        );
        // The parts are a Kubernetes namespace, pod name, port and our own path: valid.
        http::Request::get(uri)
            .header(AGENT_TOKEN_HEADER, &self.token.0)
            .body(Vec::new())
            .unwrap_or_else(|e| unreachable!("a pod proxy path is a valid URI: {e}"))
    }

    fn proxy_error(&self, path: &str) -> impl FnOnce(kube::Error) -> VerifyError + '_ {
        let path = path.to_owned();
        move |source| VerifyError::Proxy {
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            path,
            reason: api_reason(&source),
        }
    }

    /// Asks the agent `GET /verify`, resolving `checks`' names.
    pub async fn verify(
        &self,
        client: &Client,
        checks: &[ServiceCheck],
    ) -> Result<AgentVerify, VerifyError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(checks.iter().map(|c| ("dns", c.dns_param())))
            .finish();
        let path = format!("/verify?{query}");
        let text = client
            .request_text(self.request(&path))
            .await
            .map_err(self.proxy_error("/verify"))?;
        serde_json::from_str(&text).map_err(|e| VerifyError::Answer {
            context: self.context.clone(),
            pod: self.pod.clone(),
            path: "/verify".into(),
            reason: e.to_string(),
        })
    }

    /// Streams the agent's answer to `path`, for NDJSON endpoints.
    pub async fn stream(
        &self,
        client: &Client,
        path: &str,
    ) -> Result<impl futures::AsyncBufRead + use<>, VerifyError> {
        client
            .request_stream(self.request(path))
            .await
            .map_err(self.proxy_error(path.split('?').next().unwrap_or(path)))
    }
}

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

/// Causeway's EndpointSlices of every namespace (the imported ones, which DNS answers from).
pub async fn causeway_slices(
    client: &Client,
    context: &str,
) -> Result<Vec<EndpointSlice>, VerifyError> {
    Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")))
        .await
        .map(|l| l.items)
        .map_err(|source| VerifyError::ListSlices {
            context: context.to_owned(),
            source: Box::new(source),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cluster: &str, handshake: Option<f64>, rtt: bool) -> AgentPeer {
        AgentPeer {
            cluster: cluster.into(),
            endpoint: Some("198.18.0.2:51820".into()),
            last_handshake_seconds: handshake,
            probe_target: Some("10.2.0.1:51821".into()),
            probes_sent: 5,
            rtt: rtt.then(|| {
                RttFigures::from_samples(&[Duration::from_micros(300); 5]).expect("samples")
            }),
        }
    }

    fn service() -> ServiceCheck {
        ServiceCheck {
            namespace: "prod".into(),
            name: "db".into(),
            port: Some(5432),
            exporters: vec!["site-b".into()],
        }
    }

    fn dns(addresses: &[&str], tcp: Option<AgentTcp>) -> AgentDns {
        AgentDns {
            name: "db.prod.svc.clusterset.local".into(),
            server: "10.96.0.10:53".into(),
            rcode: Some("NoError".into()),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            error: None,
            tcp,
        }
    }

    fn answer(peers: Vec<AgentPeer>, dns: Vec<AgentDns>) -> AgentVerify {
        AgentVerify {
            active: true,
            health_check_ip: Some("10.1.0.1".into()),
            peers,
            dns,
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let r = RttFigures::from_samples(&samples).unwrap();
        assert_eq!((r.min_ms, r.p99_ms, r.max_ms), (1.0, 99.0, 100.0));
        assert!((r.avg_ms - 50.5).abs() < 1e-9);
        let one = RttFigures::from_samples(&[Duration::from_millis(2)]).unwrap();
        assert_eq!((one.p99_ms, one.samples), (2.0, 1));
        assert_eq!(RttFigures::from_samples(&[]), None);
    }

    #[test]
    fn healthy_pairs_and_services_pass() {
        let tcp = AgentTcp {
            address: "10.2.1.10:5432".into(),
            connect_ms: Some(0.4),
            error: None,
        };
        let results = [
            ClusterResult {
                cluster: "site-a".into(),
                answer: Ok(answer(
                    vec![peer("site-b", Some(3.0), true)],
                    vec![dns(&["10.2.1.10"], Some(tcp))],
                )),
            },
            ClusterResult {
                cluster: "site-b".into(),
                answer: Ok(answer(
                    vec![peer("site-a", Some(3.0), true)],
                    vec![dns(&["10.2.1.10"], None)],
                )),
            },
        ];
        let rows = rows(&results, &[service()]);
        let checks: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.from.as_str(), r.to.as_str(), r.check.as_str()))
            .collect();
        assert_eq!(
            checks,
            [
                ("site-a", "site-b", "tunnel"),
                ("site-a", "site-b", "rtt"),
                ("site-a", "site-b", "dns db.prod.svc.clusterset.local"),
                ("site-b", "site-a", "tunnel"),
                ("site-b", "site-a", "rtt"),
                ("site-b", "site-b", "dns db.prod.svc.clusterset.local"),
            ]
        );
        assert!(rows.iter().all(|r| r.outcome == Outcome::Ok), "{rows:#?}");
        assert!(rows[2].detail.contains("tcp 10.2.1.10:5432 connected"));
    }

    #[test]
    fn each_failure_says_what_and_how_to_fix() {
        let refused = AgentTcp {
            address: "10.2.1.10:5432".into(),
            connect_ms: None,
            error: Some("connection refused".into()),
        };
        let cases: Vec<(AgentVerify, &str, &str)> = vec![
            (
                answer(vec![peer("site-b", Some(400.0), true)], vec![]),
                "tunnel",
                "tunnel is down",
            ),
            (
                answer(vec![peer("site-b", None, true)], vec![]),
                "tunnel",
                "no handshake",
            ),
            (
                answer(vec![peer("site-b", Some(1.0), false)], vec![]),
                "rtt",
                "none of 5 probes",
            ),
            (answer(vec![], vec![]), "tunnel", "no peer site-b"),
            (
                answer(vec![peer("site-b", Some(1.0), true)], vec![dns(&[], None)]),
                "dns db.prod.svc.clusterset.local",
                "with no address",
            ),
            (
                answer(
                    vec![peer("site-b", Some(1.0), true)],
                    vec![dns(&["10.2.1.10"], Some(refused))],
                ),
                "dns db.prod.svc.clusterset.local",
                "connection refused",
            ),
        ];
        for (answer, check, says) in cases {
            let results = [
                ClusterResult {
                    cluster: "site-a".into(),
                    answer: Ok(answer),
                },
                ClusterResult {
                    cluster: "site-b".into(),
                    answer: Err("unreachable".into()),
                },
            ];
            let rows = rows(&results, &[service()]);
            let row = rows
                .iter()
                .find(|r| r.from == "site-a" && r.check == check)
                .unwrap_or_else(|| panic!("no {check} row in {rows:#?}"));
            assert_eq!(row.outcome, Outcome::Fail, "{row:?}");
            assert!(row.detail.contains(says), "{says:?} not in {row:?}");
            assert!(row.fix.as_deref().is_some_and(|f| !f.is_empty()));
            let unreachable = rows.iter().find(|r| r.from == "site-b").unwrap();
            assert_eq!(
                (unreachable.check.as_str(), unreachable.outcome),
                ("gateway", Outcome::Fail)
            );
        }
    }

    #[test]
    fn services_come_from_imports_with_their_exporters_and_first_tcp_port() {
        let import: ServiceImport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"type": "ClusterSetIP", "ports": [
                {"port": 53, "protocol": "UDP"}, {"port": 5432, "protocol": "TCP"}]},
            "status": {"clusters": [{"cluster": "site-b"}]}
        }))
        .unwrap();
        let s = ClusterSnapshot {
            imports: vec![import],
            ..ClusterSnapshot::default()
        };
        assert_eq!(
            services_to_check(std::slice::from_ref(&s), &[]),
            [service()]
        );
        let unknown = services_to_check(&[s], &["prod/other".into()]);
        assert_eq!(unknown.len(), 1);
        assert_eq!((unknown[0].name.as_str(), unknown[0].port), ("other", None));
        assert_eq!(service().dns_param(), "db.prod.svc.clusterset.local:5432");
    }

    fn slice(cluster: &str, ready: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("db-{cluster}-ipv4"), "namespace": "prod", "labels": {
                "endpointslice.kubernetes.io/managed-by": "causeway.dev",
                "multicluster.kubernetes.io/service-name": "db",
                "multicluster.kubernetes.io/source-cluster": cluster}},
            "addressType": "IPv4",
            "endpoints": ready.iter().map(|(ip, ready)| serde_json::json!({
                "addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    fn snapshot_with_import(type_: &str, ips: &[&str], connected: &[&str]) -> ClusterSnapshot {
        let import: ServiceImport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"type": type_, "ips": ips, "ports": [{"port": 5432, "protocol": "TCP"}]}
        }))
        .unwrap();
        let gateway: causeway_crds::Gateway = serde_json::from_value(serde_json::json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "gw-1", "namespace": "causeway"},
            "spec": {"clusterID": "site-a", "nodeName": "gw-1",
                     "publicEndpoint": "198.18.0.1:51820", "publicKey": "unused"},
            "status": {"role": "active", "connections": connected.iter().map(|c| serde_json::json!(
                {"clusterID": c, "state": "connected"})).collect::<Vec<_>>()}
        }))
        .unwrap();
        ClusterSnapshot {
            context: "site-a".into(),
            namespace: "causeway".into(),
            imports: vec![import],
            gateways: vec![gateway],
            ..ClusterSnapshot::default()
        }
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn dns_expects_ready_slice_addresses_of_reachable_clusters_and_spec_ips() {
        let slices = [
            slice(
                "site-b",
                &[
                    ("10.2.1.10", Some(true)),
                    ("10.2.1.11", None),
                    ("10.2.1.12", Some(false)),
                ],
            ),
            slice("site-c", &[("10.3.1.10", Some(true))]),
        ];
        let s = snapshot_with_import("Headless", &[], &["site-b"]);
        let expected = dns_expectations(&s, &slices);
        assert_eq!(expected.len(), 1);
        assert_eq!(
            expected[0].service.dns_name(),
            "db.prod.svc.clusterset.local"
        );
        // Not-ready and site-c's (tunnel not up) addresses are not promised.
        assert_eq!(expected[0].addresses, ips(&["10.2.1.10", "10.2.1.11"]));
        let s = snapshot_with_import("ClusterSetIP", &["10.9.0.1"], &[]);
        assert_eq!(
            dns_expectations(&s, &slices)[0].addresses,
            ips(&["10.9.0.1"])
        );
    }

    #[test]
    fn dns_answer_is_judged_against_the_promised_addresses() {
        let expected = ips(&["10.2.1.10", "10.2.1.11"]);
        let mut nx = dns(&[], None);
        nx.rcode = Some("NXDomain".into());
        let mut down = dns(&[], None);
        (down.rcode, down.error) = (None, Some("no answer from 10.96.0.10:53 within 2s".into()));
        let cases: [(&AgentDns, &BTreeSet<IpAddr>, Option<&str>); 7] = [
            (&dns(&["10.2.1.11"], None), &expected, None),
            (&dns(&["10.2.1.11", "192.0.2.1"], None), &expected, None),
            (&dns(&[], None), &BTreeSet::new(), None),
            (
                &dns(&["192.0.2.1"], None),
                &expected,
                Some("answered 192.0.2.1, none of them promised"),
            ),
            (&dns(&[], None), &expected, Some("NoError with no address")),
            (&nx, &BTreeSet::new(), Some("answered NXDomain")),
            (&down, &expected, Some("did not answer: no answer from")),
        ];
        for (answer, expected, says) in cases {
            let problem = dns_answer_problem(expected, answer);
            match says {
                None => assert_eq!(problem, None, "{answer:?}"),
                Some(says) => assert!(
                    problem
                        .as_deref()
                        .is_some_and(|p| p.contains(says) && p.contains("10.96.0.10:53")),
                    "{says:?} not in {problem:?}"
                ),
            }
        }
    }

    #[test]
    fn dns_findings_name_cluster_service_answer_expectation_and_fix() {
        let s = snapshot_with_import("Headless", &[], &["site-b"]);
        let slices = [slice("site-b", &[("10.2.1.10", Some(true))])];
        let expected = dns_expectations(&s, &slices);
        let healthy = answer(vec![], vec![dns(&["10.2.1.10"], None)]);
        assert_eq!(dns_findings(&s, &expected, &healthy), []);
        let wrong = answer(vec![], vec![dns(&["192.0.2.1"], None)]);
        let found = dns_findings(&s, &expected, &wrong);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(
            (f.class, f.object.as_str()),
            (FindingClass::DnsAnswer, "serviceimport/prod/db")
        );
        for says in [
            "cluster site-a",
            "db.prod.svc.clusterset.local",
            "192.0.2.1",
            "expected 10.2.1.10",
            "10.96.0.10:53",
            "causeway-dns Service",
        ] {
            assert!(f.message.contains(says), "{says:?} not in {}", f.message);
        }
        let unanswered = answer(vec![], vec![]);
        assert!(dns_findings(&s, &expected, &unanswered)[0]
            .message
            .contains("did not resolve it"));
    }
}
