//! What the plugin reads from each cluster: Causeway's objects in its namespace and
//! the MCS objects of every namespace, once, through one kubeconfig context each.

use std::path::Path;

use causeway_crds::names::LOCAL_LABEL;
use causeway_crds::{ClusterEndpoint, Gateway, ServiceExport, ServiceImport};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Serialize;
use thiserror::Error;

/// Why the plugin could not read a cluster.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The kubeconfig could not be read.
    #[error("cannot read the kubeconfig{}: {source}; pass --kubeconfig or set KUBECONFIG", path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Kubeconfig {
        /// The file, when one was named.
        path: Option<String>,
        /// What kube said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A context could not be turned into a client.
    #[error("kubeconfig context {context:?}: {source}; check `kubectl config get-contexts`")]
    Context {
        /// The context.
        context: String,
        /// What kube said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `export` was given something that is not `namespace/service`.
    #[error("{target:?} is not a service; write it as namespace/service, e.g. prod/db")]
    Target {
        /// What was given.
        target: String,
    },
    /// `export` of a Service that does not exist.
    #[error("context {context:?}: Service {namespace}/{name} does not exist; create the Service first (a ServiceExport needs one with the same name and namespace)")]
    NoService {
        /// The context.
        context: String,
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
    },
    /// A read or write of `export` failed.
    #[error("context {context:?}: cannot {verb} {object}: {source}; check that you may get Services and create ServiceExports there")]
    Write {
        /// The context.
        context: String,
        /// What was attempted.
        verb: &'static str,
        /// The object.
        object: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },
    /// A list failed.
    #[error("context {context:?}: cannot list {what}: {source}; check that the API server is reachable and that you may list {what}")]
    List {
        /// The context.
        context: String,
        /// The kind and scope listed.
        what: String,
        /// What the API server said.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Causeway's objects in one cluster, as one context sees them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSnapshot {
    /// The kubeconfig context the objects were read through.
    pub context: String,
    /// Causeway's namespace in that cluster.
    pub namespace: String,
    /// ClusterEndpoints in the namespace: the local one and the mirrors.
    pub endpoints: Vec<ClusterEndpoint>,
    /// Gateways in the namespace, one per candidate node.
    pub gateways: Vec<Gateway>,
    /// Leases in the namespace (the gateway's and the controller's elections).
    pub leases: Vec<Lease>,
    /// ServiceExports of every namespace.
    pub exports: Vec<ServiceExport>,
    /// ServiceImports of every namespace.
    pub imports: Vec<ServiceImport>,
}

impl ClusterSnapshot {
    /// This cluster's own ClusterEndpoint (label `causeway.dev/local=true`).
    pub fn local(&self) -> Option<&ClusterEndpoint> {
        self.endpoints.iter().find(|ep| is_local(ep))
    }

    /// This cluster's ID (from its local ClusterEndpoint), else the context name.
    pub fn cluster_id(&self) -> &str {
        self.local()
            .map(|ep| ep.spec.cluster_id.as_str())
            .unwrap_or(&self.context)
    }

    /// The mirrors of other clusters' ClusterEndpoints.
    pub fn mirrors(&self) -> impl Iterator<Item = &ClusterEndpoint> {
        self.endpoints.iter().filter(|ep| !is_local(ep))
    }
}

/// Whether the object is its cluster's own (not a mirror).
pub fn is_local(ep: &ClusterEndpoint) -> bool {
    causeway_crds::names::has_true_label(&ep.metadata, LOCAL_LABEL)
}

/// A client per context: the named ones, else the kubeconfig's current context.
///
/// A refusal is explained as one of a person bound to the viewer roles in `namespace`
/// (Causeway's). `retry: false` turns off kube's retries of 503 and 429. Through the pod proxy a 503
/// means "the gateway does not answer", which is the finding, and the default policy
/// would retry it with growing waits for minutes.
pub async fn clients(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    namespace: &str,
    retry: bool,
) -> Result<Vec<(String, Client)>, PluginError> {
    let config = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|source| PluginError::Kubeconfig {
        path: kubeconfig.map(|p| p.display().to_string()),
        source,
    })?;
    let names: Vec<String> = if contexts.is_empty() {
        vec![config.current_context.clone().unwrap_or_default()]
    } else {
        contexts.to_vec()
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let options = KubeConfigOptions {
            context: (!name.is_empty()).then(|| name.clone()),
            ..KubeConfigOptions::default()
        };
        let context_error =
            |source: Box<dyn std::error::Error + Send + Sync>| PluginError::Context {
                context: name.clone(),
                source,
            };
        let mut client_config = kube::Config::from_custom_kubeconfig(config.clone(), &options)
            .await
            .map_err(|e| context_error(Box::new(e)))?;
        client_config.default_retry = retry;
        let client = causeway_k8s::client::client(
            client_config,
            &causeway_crds::rbac::VIEWER,
            namespace,
            None,
        )
        .map_err(|e| context_error(Box::new(e)))?;
        out.push((name, client));
    }
    Ok(out)
}

/// Reads one snapshot per context, all at once.
pub async fn load_snapshots(
    kubeconfig: Option<&Path>,
    contexts: &[String],
    namespace: &str,
) -> Result<Vec<ClusterSnapshot>, PluginError> {
    let clients = clients(kubeconfig, contexts, namespace, true).await?;
    let reads = clients
        .into_iter()
        .map(|(context, client)| snapshot(client, context, namespace.to_owned()));
    futures::future::try_join_all(reads).await
}

/// Reads one cluster's snapshot.
pub async fn snapshot(
    client: Client,
    context: String,
    namespace: String,
) -> Result<ClusterSnapshot, PluginError> {
    let lp = ListParams::default();
    let list_error = |what: String| {
        let context = context.clone();
        move |source| PluginError::List {
            context,
            what,
            source: Box::new(source),
        }
    };
    let in_ns = |kind: &str| format!("{kind} in namespace {namespace:?}");
    let endpoints = Api::<ClusterEndpoint>::namespaced(client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(list_error(in_ns("clusterendpoints.causeway.dev")))?
        .items;
    let gateways = Api::<Gateway>::namespaced(client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(list_error(in_ns("gateways.causeway.dev")))?
        .items;
    let leases = Api::<Lease>::namespaced(client.clone(), &namespace)
        .list(&lp)
        .await
        .map_err(list_error(in_ns("leases.coordination.k8s.io")))?
        .items;
    let exports = Api::<ServiceExport>::all(client.clone())
        .list(&lp)
        .await
        .map_err(list_error(
            "serviceexports.multicluster.x-k8s.io in all namespaces".into(),
        ))?
        .items;
    let imports = Api::<ServiceImport>::all(client)
        .list(&lp)
        .await
        .map_err(list_error(
            "serviceimports.multicluster.x-k8s.io in all namespaces".into(),
        ))?
        .items;
    Ok(ClusterSnapshot {
        context,
        namespace,
        endpoints,
        gateways,
        leases,
        exports,
        imports,
    })
}
