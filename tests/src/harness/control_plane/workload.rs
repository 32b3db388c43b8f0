//! Workloads without a kubelet: Nodes and Pods as objects, with the status a kubelet would
//! report (Running, Ready or not, the pod's IP), so the real EndpointSlice controller builds
//! a Service's slices from them. A pod may be backed by a network namespace of the test's
//! (its IP is that namespace's address) or by nothing at all.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::harness::HarnessError;

/// How long the EndpointSlice controller may take to reflect pods in a Service's slices.
pub const SLICES_SETTLE: Duration = Duration::from_secs(20);

/// One backend of a Service: a pod with `ip`, a DNS `hostname` (a headless Service's
/// StatefulSet pod has one), ready or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The pod's IP.
    pub ip: IpAddr,
    /// `spec.hostname` (with `spec.subdomain` the Service's name), as a StatefulSet sets it.
    pub hostname: Option<String>,
    /// Whether the pod is Ready.
    pub ready: bool,
}

impl Backend {
    /// A backend at `ip` (an IP address), with an optional hostname, ready or not.
    pub fn new(ip: &str, hostname: Option<&str>, ready: bool) -> Backend {
        Backend {
            ip: ip
                .parse()
                .unwrap_or_else(|e| panic!("{ip} is not an IP: {e}")),
            hostname: hostname.map(str::to_string),
            ready,
        }
    }
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> HarnessError {
    move |e| HarnessError::ControlPlane(format!("{what}: {e}"))
}

/// Registers Node `name` if it is not there (pods are bound to it).
pub async fn ensure_node(client: &Client, name: &str) -> Result<(), HarnessError> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes
        .get_opt(name)
        .await
        .map_err(api_error(format!("read Node {name}")))?
        .is_some()
    {
        return Ok(());
    }
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(api_error(format!("create Node {name}"))(e)),
    }
}

/// The status a kubelet reports for a running pod at `ip` on a node at `host_ip`.
pub fn running_status(ip: IpAddr, host_ip: IpAddr, ready: bool) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let flag = if ready { "True" } else { "False" };
    let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "startTime": now,
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", flag),
            condition("Ready", flag),
        ],
    })
}

/// Runs pod `namespace/name` labelled `labels` on `node` (registered if needed) as a kubelet
/// would report it: created, then its status written.
pub async fn run_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    node: &str,
    backend: &Backend,
    subdomain: Option<&str>,
) -> Result<(), HarnessError> {
    ensure_node(client, node).await?;
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        // No kubelet acknowledges a graceful deletion: a deleted pod goes at once.
        "terminationGracePeriodSeconds": 0,
    });
    if let Some(hostname) = &backend.hostname {
        spec["hostname"] = json!(hostname);
    }
    if let Some(subdomain) = subdomain {
        spec["subdomain"] = json!(subdomain);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }))
    .map_err(|e| HarnessError::ControlPlane(e.to_string()))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(api_error(format!("create Pod {namespace}/{name}")))?;
    set_pod_ready(client, namespace, name, backend.ip, backend.ready).await
}

/// Writes pod `namespace/name`'s status: Running at `ip`, Ready or not.
pub async fn set_pod_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: IpAddr,
    ready: bool,
) -> Result<(), HarnessError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let status = running_status(ip, ip, ready);
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map(drop)
    .map_err(api_error(format!(
        "write the status of Pod {namespace}/{name}"
    )))
}

/// Makes Service `namespace/service`'s backends exactly `backends`: pods
/// `<service>-<i>` labelled `app=<service>` on node `node` (each one kept if its IP and
/// hostname still match, its readiness written; replaced otherwise; extra ones deleted),
/// then waits until the real EndpointSlice controller's slices say the same.
pub async fn set_backends(
    client: &Client,
    namespace: &str,
    service: &str,
    node: &str,
    backends: &[Backend],
) -> Result<(), HarnessError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let labels = BTreeMap::from([("app".to_string(), service.to_string())]);
    let selector = format!("app={service}");
    let existing = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error(format!("list the pods of {namespace}/{service}")))?;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let wanted: Vec<String> = (0..backends.len())
        .map(|i| format!("{service}-{i}"))
        .collect();
    for pod in existing.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let keep = wanted.iter().position(|w| *w == name).is_some_and(|i| {
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let hostname = pod.spec.as_ref().and_then(|s| s.hostname.clone());
            ip == Some(backends[i].ip.to_string()) && hostname == backends[i].hostname
        });
        if !keep {
            pods.delete(&name, &now)
                .await
                .map_err(api_error(format!("delete Pod {namespace}/{name}")))?;
        }
    }
    for (name, backend) in wanted.iter().zip(backends) {
        match pods
            .get_opt(name)
            .await
            .map_err(api_error(format!("read Pod {namespace}/{name}")))?
        {
            Some(_) => set_pod_ready(client, namespace, name, backend.ip, backend.ready).await?,
            None => {
                let subdomain = backend.hostname.as_ref().map(|_| service);
                run_pod(client, namespace, name, &labels, node, backend, subdomain).await?
            }
        }
    }
    wait_slices(client, namespace, service, backends).await
}

/// Waits until the EndpointSlice controller's slices of `namespace/service` list exactly
/// `backends` (address, hostname, readiness).
pub async fn wait_slices(
    client: &Client,
    namespace: &str,
    service: &str,
    backends: &[Backend],
) -> Result<(), HarnessError> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
    );
    let mut want: Vec<(String, Option<String>, bool)> = backends
        .iter()
        .map(|b| (b.ip.to_string(), b.hostname.clone(), b.ready))
        .collect();
    want.sort();
    let deadline = Instant::now() + SLICES_SETTLE;
    loop {
        let listed = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_error(format!(
                "list the slices of {namespace}/{service}"
            )))?;
        let mut have: Vec<(String, Option<String>, bool)> = listed
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .flat_map(|e| {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                e.addresses
                    .iter()
                    .map(move |a| (a.clone(), e.hostname.clone(), ready))
            })
            .collect();
        have.sort();
        if have == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::ControlPlane(format!(
                "the EndpointSlice controller's slices of {namespace}/{service} list {have:?}, not {want:?}, after {SLICES_SETTLE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
