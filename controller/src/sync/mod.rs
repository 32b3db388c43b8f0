//! Broker sync: build this cluster's ClusterEndpoint, write it locally and publish
//! it to the broker, and mirror every other cluster's into the local namespace.
//!
//! [`plan`] decides (pure), [`apply`] writes; [`sync_once`] lists both sides (and,
//! for [`SpecSource::Cluster`], the Nodes, Gateways and gateway Lease the spec is
//! built from) and runs one pass; [`run`] runs a pass whenever any of them changes
//! (watchers, as triggers only) and at least every [`SyncConfig::resync`], until
//! shutdown.
//!
//! Each pass lists afresh rather than keeping reflector stores: the object counts
//! are small, and a fresh list never acts on a stale cache. When the local API is
//! unreachable the pass fails and nothing changes. When only the broker is, the
//! pass still writes the local copy (so route agents follow a gateway failover),
//! then fails; mirrors keep their last known state.

pub mod apply;
pub mod plan;
pub mod trigger;

use std::future::Future;
use std::time::Duration;

use causeway_crds::names::{gateway_lease, GATEWAY_NODE_LABEL};
use causeway_crds::validate::Acceptance;
use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec, Gateway};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::Client;
use thiserror::Error;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::local::{build_local_spec, publishable_gateways, LocalConfig, LocalSpecError};
pub use apply::{apply_plan, SyncReport};
use causeway_k8s::passes::{changes_of, every_event, run_passes, Triggers, Watched};
pub use plan::{plan_sync, plan_without_broker, Publish, SyncPlan};

/// Which API server a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The broker, where every cluster publishes.
    Broker,
    /// This cluster's own API server, where mirrors live.
    Local,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Broker => "the broker",
            Side::Local => "the local cluster",
        })
    }
}

/// Where this cluster's spec comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecSource {
    /// A fixed spec (`--endpoint-file`), published as it is.
    File(ClusterEndpointSpec),
    /// Built each pass from the cluster's Nodes, Gateways and gateway Lease.
    Cluster(LocalConfig),
}

/// Why a sync pass failed. Every failure is retried by the next pass.
#[derive(Debug, Error)]
pub enum SyncError {
    /// Listing ClusterEndpoints failed.
    #[error("cannot list ClusterEndpoints in namespace {namespace:?} of {side}: {source}; check that the API server is reachable, the namespace exists and the controller may list clusterendpoints.causeway.dev there")]
    List {
        /// Which API server.
        side: Side,
        /// The namespace listed.
        namespace: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Listing Nodes failed (the gateway candidates always; every Node when no pod CIDRs
    /// are configured).
    #[error("cannot list Nodes of the local cluster: {source}; the controller reads which nodes are gateway candidates (and, without --pod-cidrs, every Node's spec.podCIDRs) and needs get, list and watch on nodes cluster-wide (a ClusterRole bound to its ServiceAccount)")]
    Nodes {
        /// The client's error.
        source: kube::Error,
    },
    /// Listing Gateway objects failed.
    #[error("cannot list Gateways in namespace {namespace:?} of the local cluster: {source}; the controller needs get, list and watch on gateways.causeway.dev in namespace {namespace:?}")]
    Gateways {
        /// The namespace listed.
        namespace: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Reading the gateway Lease failed.
    #[error("cannot read Lease {namespace}/{name} of the local cluster: {source}; the controller needs get, list and watch on coordination.k8s.io leases in namespace {namespace:?}")]
    Lease {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A write failed.
    #[error("cannot {verb} ClusterEndpoint {object:?} at {side}: {source}; a conflict (409) is retried with fresh state on the next pass, anything else needs the API server reachable and write access to clusterendpoints.causeway.dev")]
    Write {
        /// Which API server.
        side: Side,
        /// What was attempted (`create`, `replace`, `delete`, `patch status of`).
        verb: &'static str,
        /// The object's name.
        object: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Some writes of a pass failed (the others were done).
    #[error("{failed} write(s) of this sync pass failed; the first: {first}")]
    Apply {
        /// How many writes failed.
        failed: usize,
        /// The first failure.
        first: Box<SyncError>,
    },
}

/// Lists both sides (and what the spec is built from), plans, applies: one sync pass.
///
/// `source` is where this cluster's spec comes from (`None`: publish nothing, only
/// mirror). When the broker cannot be listed, the local copy is still brought up
/// to date before the broker's error is returned.
pub async fn sync_once(
    broker: &Client,
    broker_ns: &str,
    local: &Client,
    local_ns: &str,
    local_cluster: &str,
    source: Option<&SpecSource>,
    acceptance: &Acceptance,
) -> Result<SyncReport, SyncError> {
    let broker_api: Api<ClusterEndpoint> = Api::namespaced(broker.clone(), broker_ns);
    let local_api: Api<ClusterEndpoint> = Api::namespaced(local.clone(), local_ns);
    let here = list(&local_api, Side::Local, local_ns).await?;
    let built = match source {
        Some(SpecSource::Cluster(config)) => {
            Some(build_from_cluster(local, local_ns, local_cluster, config).await?)
        }
        _ => None,
    };
    let publish = match (source, &built) {
        (Some(SpecSource::File(spec)), _) => Publish::Spec(spec),
        (_, Some(Ok(spec))) => Publish::Spec(spec),
        (_, Some(Err(error))) => Publish::Unbuildable(error),
        (_, None) => Publish::Nothing,
    };
    let at_broker = match list(&broker_api, Side::Broker, broker_ns).await {
        Ok(objects) => objects,
        Err(error) => {
            let plan = plan_without_broker(local_cluster, publish, &here);
            debug!(
                noop = plan.is_noop(),
                "planned the local copy without the broker"
            );
            if let Err(local_error) = apply_plan(&plan, &broker_api, &local_api).await {
                warn!(error = %local_error, "writing the local copy failed too");
            }
            return Err(error);
        }
    };
    let plan = plan_sync(local_cluster, publish, &at_broker, &here, acceptance);
    debug!(
        noop = plan.is_noop(),
        publish = plan.publish.is_some(),
        condition = plan.own_condition.is_some(),
        local_copy = plan.local_upsert.is_some(),
        local_condition = plan.local_condition.is_some(),
        unpublished = plan.unpublished.is_some(),
        upserts = plan.mirror_upsert.len(),
        deletes = plan.mirror_delete.len(),
        refused = plan.refused.len(),
        "planned sync"
    );
    apply_plan(&plan, &broker_api, &local_api).await
}

/// Lists what the spec is built from and builds it. A listing failure fails the
/// pass; a spec that cannot be built is the inner error, for the planner to report.
async fn build_from_cluster(
    client: &Client,
    namespace: &str,
    cluster: &str,
    config: &LocalConfig,
) -> Result<Result<ClusterEndpointSpec, LocalSpecError>, SyncError> {
    // Every Node when the pod CIDRs come from them; else the gateway candidates, which
    // say which Gateway objects may be published.
    let nodes: Vec<Node> = Api::<Node>::all(client.clone())
        .list(&node_selection(config))
        .await
        .map_err(|source| SyncError::Nodes { source })?
        .items;
    let gateways: Vec<Gateway> = Api::<Gateway>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| SyncError::Gateways {
            namespace: namespace.to_owned(),
            source,
        })?
        .items;
    let lease_name = gateway_lease(cluster);
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&lease_name)
        .await
        .map_err(|source| SyncError::Lease {
            namespace: namespace.to_owned(),
            name: lease_name.clone(),
            source,
        })?;
    let (publishable, refused) = publishable_gateways(cluster, &gateways, &nodes);
    for reason in &refused {
        warn!(%reason, "a Gateway object left out of this cluster's ClusterEndpoint");
    }
    let publishable: Vec<Gateway> = publishable.into_iter().cloned().collect();
    let built = build_local_spec(
        cluster,
        config,
        &nodes,
        &publishable,
        lease.as_ref(),
        Timestamp::now(),
    );
    if let Ok(spec) = &built {
        debug!(
            nodes = nodes.len(),
            gateways = ?spec.gateways.iter().map(|g| g.node_name.as_str()).collect::<Vec<_>>(),
            lease_holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref()),
            "built this cluster's spec"
        );
    }
    Ok(built)
}

async fn list(
    api: &Api<ClusterEndpoint>,
    side: Side,
    namespace: &str,
) -> Result<Vec<ClusterEndpoint>, SyncError> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| SyncError::List {
            side,
            namespace: namespace.to_owned(),
            source,
        })
}

/// Everything [`run`] needs.
#[derive(Clone)]
pub struct SyncConfig {
    /// Client of the broker.
    pub broker: Client,
    /// Namespace of ClusterEndpoints at the broker.
    pub broker_namespace: String,
    /// Client of this cluster's API server.
    pub local: Client,
    /// Namespace mirrors are written to.
    pub local_namespace: String,
    /// This cluster's ID (also its object's name at the broker).
    pub cluster_id: String,
    /// Where this cluster's spec comes from (`None`: publish nothing, only mirror).
    pub source: Option<SpecSource>,
    /// Longest time between two passes when nothing is seen to change.
    pub resync: Duration,
    /// Quiet time after a change before a pass, so a burst of events makes one pass.
    pub debounce: Duration,
    /// Which ranges other clusters may claim here.
    pub acceptance: Acceptance,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("broker_namespace", &self.broker_namespace)
            .field("local_namespace", &self.local_namespace)
            .field("cluster_id", &self.cluster_id)
            .field("source", &self.source)
            .field("resync", &self.resync)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl SyncConfig {
    /// One pass with this configuration.
    pub async fn sync_once(&self) -> Result<SyncReport, SyncError> {
        sync_once(
            &self.broker,
            &self.broker_namespace,
            &self.local,
            &self.local_namespace,
            &self.cluster_id,
            self.source.as_ref(),
            &self.acceptance,
        )
        .await
    }
}

/// The watchers whose changes start a pass under `config`.
fn triggers(config: &SyncConfig) -> Vec<Triggers> {
    let mut all = vec![
        every_event(
            Api::<ClusterEndpoint>::namespaced(config.broker.clone(), &config.broker_namespace),
            watcher::Config::default(),
            Watched {
                what: "ClusterEndpoints at the broker",
                needs: "list and watch on clusterendpoints.causeway.dev in the broker namespace",
            },
        ),
        every_event(
            Api::<ClusterEndpoint>::namespaced(config.local.clone(), &config.local_namespace),
            watcher::Config::default(),
            Watched {
                what: "local ClusterEndpoints",
                needs:
                    "list and watch on clusterendpoints.causeway.dev in the controller's namespace",
            },
        ),
    ];
    // A file's spec depends on nothing in the cluster: no more watchers (nor RBAC).
    let Some(SpecSource::Cluster(local)) = &config.source else {
        return all;
    };
    all.push(changes_of(
        Api::<Gateway>::namespaced(config.local.clone(), &config.local_namespace),
        watcher::Config::default(),
        Watched {
            what: "Gateways",
            needs: "get, list and watch on gateways.causeway.dev in the controller's namespace",
        },
        trigger::gateway_fingerprint,
    ));
    all.push(changes_of(
        Api::<Lease>::namespaced(config.local.clone(), &config.local_namespace),
        // Only the gateway Lease: the controllers' own is renewed every few seconds.
        watcher::Config::default().fields(&format!(
            "metadata.name={}",
            gateway_lease(&config.cluster_id)
        )),
        Watched {
            what: "the gateway Lease",
            needs:
                "get, list and watch on coordination.k8s.io leases in the controller's namespace",
        },
        trigger::lease_fingerprint,
    ));
    let nodes = match local.needs_nodes() {
        true => watcher::Config::default(),
        false => watcher::Config::default().labels(&gateway_candidate_selector()),
    };
    all.push(changes_of(
        Api::<Node>::all(config.local.clone()),
        nodes,
        Watched {
            what: "Nodes",
            needs: "get, list and watch on nodes cluster-wide (a ClusterRole)",
        },
        trigger::node_fingerprint,
    ));
    all
}

fn gateway_candidate_selector() -> String {
    format!("{GATEWAY_NODE_LABEL}=true")
}

/// The Nodes a pass reads: all of them when the pod CIDRs come from them, else only
/// the gateway candidates.
fn node_selection(config: &LocalConfig) -> ListParams {
    match config.needs_nodes() {
        true => ListParams::default(),
        false => ListParams::default().labels(&gateway_candidate_selector()),
    }
}

/// Syncs once at start, then whenever a watched object changes (ClusterEndpoints
/// on either side; for [`SpecSource::Cluster`] also Gateways and the gateway Lease
/// in the local namespace, and Nodes when no pod CIDRs are configured) after
/// `debounce` of quiet, and every `resync`, until `shutdown` resolves.
///
/// A failed pass is logged and retried at the next change or resync; it never
/// ends the loop. Returns the number of passes run.
pub async fn run(config: SyncConfig, shutdown: impl Future<Output = ()>) -> u64 {
    run_reporting(config, shutdown, |_| {}).await
}

/// [`run`], telling `reported` the outcome of every pass (`Some` with the error of a
/// failed one), e.g. for the readiness probe.
pub async fn run_reporting(
    config: SyncConfig,
    shutdown: impl Future<Output = ()>,
    reported: impl Fn(Option<String>),
) -> u64 {
    let span = info_span!("broker_sync", cluster = %config.cluster_id);
    async move {
        info!(
            broker_namespace = %config.broker_namespace,
            namespace = %config.local_namespace,
            source = match &config.source {
                Some(SpecSource::File(_)) => "file",
                Some(SpecSource::Cluster(_)) => "cluster",
                None => "none",
            },
            "broker sync started"
        );
        let config = &config;
        let reported = &reported;
        let passes = run_passes(
            triggers(config),
            config.resync,
            config.debounce,
            shutdown,
            |passes| async move {
                let outcome = config.sync_once().await;
                reported(outcome.as_ref().err().map(ToString::to_string));
                match outcome {
                    Ok(report) if report.wrote() => info!(?report, "sync pass changed objects"),
                    // The first pass is the one an operator (or a test) waits for after a
                    // restart: it proves the controller is in sync without having written.
                    Ok(report) if passes == 1 => {
                        info!(?report, "first sync pass: nothing to change")
                    }
                    Ok(report) => debug!(?report, "sync pass: nothing to change"),
                    Err(error) => warn!(%error, "sync pass failed; will retry"),
                }
            },
        )
        .await;
        info!(passes, "broker sync stopped");
        passes
    }
    .instrument(span)
    .await
}
