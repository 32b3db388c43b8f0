//! Broker sync: publish this cluster's ClusterEndpoint to the broker and mirror
//! every other cluster's into the local namespace.
//!
//! [`plan`] decides (pure), [`apply`] writes; [`sync_once`] lists both sides and
//! runs one pass; [`run`] runs a pass whenever either side changes (watchers on
//! both namespaces) and at least every [`SyncConfig::resync`], until shutdown.
//!
//! Each pass lists both namespaces afresh rather than keeping reflector stores:
//! the object counts are one per cluster, and a fresh list never acts on a stale
//! cache. When the broker or the local API is unreachable the pass fails, is
//! logged, and nothing local changes: mirrors keep their last known state.

pub mod apply;
pub mod plan;

use std::future::Future;
use std::time::Duration;

use causeway_crds::{ClusterEndpoint, ClusterEndpointSpec};
use futures::{stream, StreamExt};
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use thiserror::Error;
use tracing::{debug, info, info_span, warn, Instrument};

pub use apply::{apply_plan, SyncReport};
pub use plan::{plan_sync, SyncPlan};

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

/// Lists both sides, plans, applies: one sync pass.
///
/// `local_spec` is what this cluster publishes (`None`: publish nothing, only mirror).
pub async fn sync_once(
    broker: &Client,
    broker_ns: &str,
    local: &Client,
    local_ns: &str,
    local_cluster: &str,
    local_spec: Option<&ClusterEndpointSpec>,
) -> Result<SyncReport, SyncError> {
    let broker_api: Api<ClusterEndpoint> = Api::namespaced(broker.clone(), broker_ns);
    let local_api: Api<ClusterEndpoint> = Api::namespaced(local.clone(), local_ns);
    let at_broker = list(&broker_api, Side::Broker, broker_ns).await?;
    let here = list(&local_api, Side::Local, local_ns).await?;
    let plan = plan_sync(local_cluster, local_spec, &at_broker, &here);
    debug!(
        noop = plan.is_noop(),
        publish = plan.publish.is_some(),
        condition = plan.own_condition.is_some(),
        upserts = plan.mirror_upsert.len(),
        deletes = plan.mirror_delete.len(),
        refused = plan.refused.len(),
        "planned sync"
    );
    apply_plan(&plan, &broker_api, &local_api).await
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
    /// What this cluster publishes (`None`: only mirror).
    pub spec: Option<ClusterEndpointSpec>,
    /// Longest time between two passes when nothing is seen to change.
    pub resync: Duration,
    /// Quiet time after a change before a pass, so a burst of events makes one pass.
    pub debounce: Duration,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("broker_namespace", &self.broker_namespace)
            .field("local_namespace", &self.local_namespace)
            .field("cluster_id", &self.cluster_id)
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
            self.spec.as_ref(),
        )
        .await
    }
}

/// Syncs once at start, then whenever a ClusterEndpoint changes on either side
/// (after `debounce` of quiet) and every `resync`, until `shutdown` resolves.
///
/// A failed pass is logged and retried at the next change or resync; it never
/// ends the loop. Returns the number of passes run.
pub async fn run(config: SyncConfig, shutdown: impl Future<Output = ()>) -> u64 {
    let span = info_span!("broker_sync", cluster = %config.cluster_id);
    async move {
        let broker_api: Api<ClusterEndpoint> =
            Api::namespaced(config.broker.clone(), &config.broker_namespace);
        let local_api: Api<ClusterEndpoint> =
            Api::namespaced(config.local.clone(), &config.local_namespace);
        // The watchers are only triggers; every pass lists afresh.
        let broker_events = watcher(broker_api, watcher::Config::default())
            .default_backoff()
            .map(|e| (Side::Broker, e.err()))
            .boxed();
        let local_events = watcher(local_api, watcher::Config::default())
            .default_backoff()
            .map(|e| (Side::Local, e.err()))
            .boxed();
        let mut events = stream::select(broker_events, local_events);
        let mut tick = tokio::time::interval(config.resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut passes = 0u64;
        info!(
            broker_namespace = %config.broker_namespace,
            namespace = %config.local_namespace,
            "broker sync started"
        );
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
                event = events.next() => {
                    if let Some((side, Some(error))) = event {
                        warn!(%side, %error, "watching ClusterEndpoints failed; retrying with backoff");
                        continue;
                    }
                    // Let a burst of events settle into one pass, but never wait
                    // longer than ten quiet periods while changes keep coming.
                    let settled = async {
                        let quiet = async {
                            while tokio::time::timeout(config.debounce, events.next())
                                .await
                                .is_ok_and(|e| e.is_some())
                            {}
                        };
                        let _ = tokio::time::timeout(config.debounce * 10, quiet).await;
                    };
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = settled => {}
                    }
                }
            }
            passes += 1;
            match config.sync_once().await {
                Ok(report) if report.wrote() => info!(?report, "sync pass changed objects"),
                Ok(report) => debug!(?report, "sync pass: nothing to change"),
                Err(error) => warn!(%error, "sync pass failed; will retry"),
            }
        }
        info!(passes, "broker sync stopped");
        passes
    }
    .instrument(span)
    .await
}
