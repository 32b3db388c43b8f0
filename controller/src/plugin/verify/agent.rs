//! Reaching a cluster's gateway agent through Kubernetes: the active gateway's pod, a
//! token the agent accepts, and requests through the API server's pod proxy; also the
//! EndpointSlices DNS answers from. Every failure is a [`VerifyError`] that says what to
//! check.

use causeway_crds::names::{
    gateway_lease, AGENT_CLIENT_ACCOUNT, AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_HEADER,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use thiserror::Error;

use super::{AgentVerify, ServiceCheck};
use crate::dns::zone::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::plugin::{findings, ClusterSnapshot};

/// Label of the gateway DaemonSet's pods (the chart's selector labels).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// [`COMPONENT_LABEL`]'s value on gateway pods.
pub const GATEWAY_COMPONENT: &str = "gateway";
/// Name of the gateway container's port of the metrics and agent HTTP server.
pub const AGENT_PORT_NAME: &str = "metrics";
/// The gateway's default `--metrics-addr` port, used when a pod names no `metrics` port.
pub const DEFAULT_AGENT_PORT: u16 = 9469;

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
