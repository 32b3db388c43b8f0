//! Service export and import (docs/services.md): this cluster's ServiceExports are
//! published at the broker as ServiceImports and EndpointSlices, and every exported
//! service of the clusterset is imported here as a ServiceImport with a copy of
//! each agreeing cluster's slices; ServiceExports get `Valid`, `Conflict` and
//! `Ready` conditions.
//!
//! [`plan`] decides (pure), [`apply`] writes; [`sync_once`] lists each kind once
//! (locally: ServiceExports, Services, EndpointSlices, Namespaces and ServiceImports
//! in all namespaces; at the broker: ServiceImports, EndpointSlices and
//! ClusterEndpoints in its namespace) and runs one pass; [`run`] runs a pass whenever any of them changes
//! (watchers, as triggers only, debounced so a burst makes one pass) and at least
//! every [`ExportConfig::resync`], until shutdown.
//!
//! Every pass lists afresh. When any list fails the pass fails before planning, so
//! nothing is withdrawn or deleted because an API server was unreachable.

pub mod apply;
pub mod plan;

use std::future::Future;
use std::time::Duration;

use causeway_crds::validate::{oldest_first, validate_clusterset_for, Acceptance};
use causeway_crds::{ClusterEndpoint, ServiceExport, ServiceImport};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;
use tracing::{debug, info, info_span, warn, Instrument};

pub use apply::{apply_plan, Clients, ExportReport};
pub use plan::{plan_exports, ExportPlan, ObjectKey, Observed};

use crate::sync::Side;
use causeway_k8s::passes::{changes_of, run_passes, Triggers, Watched};

/// Why an export/import pass failed. Every failure is retried by the next pass.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Listing one kind of object failed; the pass stops before planning.
    #[error("cannot list {what} {scope} of {side}: {source}; check that the API server is reachable and the controller may list and watch {resource} {scope}")]
    List {
        /// Which API server.
        side: Side,
        /// What was listed, e.g. `ServiceExports`.
        what: &'static str,
        /// The resource to grant, e.g. `serviceexports.multicluster.x-k8s.io`.
        resource: &'static str,
        /// `in all namespaces` or `in namespace "x"`.
        scope: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A write failed.
    #[error("cannot {verb} {kind} {object} at {side}: {source}; a conflict (409) is retried with fresh state on the next pass, anything else needs the API server reachable and write access to that resource")]
    Write {
        /// Which API server.
        side: Side,
        /// What was attempted (`create`, `replace`, `delete`, `patch status of`).
        verb: &'static str,
        /// The object's kind.
        kind: String,
        /// The object.
        object: ObjectKey,
        /// The client's error.
        source: kube::Error,
    },
    /// An imported EndpointSlice was not written because its ServiceImport could not be created.
    #[error("EndpointSlice {slice} of the local cluster is not written: its owner, ServiceImport {owner}, could not be created this pass (see the error about it); it is retried on the next pass")]
    OwnerMissing {
        /// The slice.
        slice: ObjectKey,
        /// Its ServiceImport.
        owner: ObjectKey,
    },
    /// Some writes of a pass failed (the others were done).
    #[error("{failed} write(s) of this export pass failed; the first: {first}")]
    Apply {
        /// How many writes failed.
        failed: usize,
        /// The first failure.
        first: Box<ExportError>,
    },
}

/// Everything a pass and [`run`] need.
#[derive(Clone)]
pub struct ExportConfig {
    /// Client of the broker.
    pub broker: Client,
    /// Namespace of the published objects at the broker.
    pub broker_namespace: String,
    /// Client of this cluster's API server.
    pub local: Client,
    /// This cluster's ID (the `source-cluster` of what it publishes).
    pub cluster_id: String,
    /// Longest time between two passes when nothing is seen to change.
    pub resync: Duration,
    /// Quiet time after a change before a pass, so a burst of events makes one pass.
    pub debounce: Duration,
    /// Which ranges other clusters may claim here (their endpoints are imported only
    /// from clusters this cluster accepts).
    pub acceptance: Acceptance,
}

impl std::fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportConfig")
            .field("broker_namespace", &self.broker_namespace)
            .field("cluster_id", &self.cluster_id)
            .field("resync", &self.resync)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

impl ExportConfig {
    /// One pass with this configuration.
    pub async fn sync_once(&self) -> Result<ExportReport, ExportError> {
        sync_once(
            &self.broker,
            &self.broker_namespace,
            &self.local,
            &self.cluster_id,
            &self.acceptance,
        )
        .await
    }
}

/// Lists everything a pass reads (each kind once), plans, applies: one pass.
pub async fn sync_once(
    broker: &Client,
    broker_ns: &str,
    local: &Client,
    cluster_id: &str,
    acceptance: &Acceptance,
) -> Result<ExportReport, ExportError> {
    let all = "in all namespaces";
    let cluster_wide = "cluster-wide";
    let at_broker = format!("in namespace {broker_ns:?}");
    let started = std::time::Instant::now();
    // Independent lists, so side by side: a pass's latency is the slowest, not the sum.
    let (
        exports,
        services,
        slices,
        namespaces,
        imports,
        broker_imports,
        broker_slices,
        mut endpoints,
    ) = tokio::try_join!(
        list::<ServiceExport>(
            Api::all(local.clone()),
            Side::Local,
            "ServiceExports",
            "serviceexports.multicluster.x-k8s.io",
            all
        ),
        list::<Service>(
            Api::all(local.clone()),
            Side::Local,
            "Services",
            "services",
            all
        ),
        list::<EndpointSlice>(
            Api::all(local.clone()),
            Side::Local,
            "EndpointSlices",
            "endpointslices.discovery.k8s.io",
            all
        ),
        list::<Namespace>(
            Api::all(local.clone()),
            Side::Local,
            "Namespaces",
            "namespaces",
            cluster_wide
        ),
        list::<ServiceImport>(
            Api::all(local.clone()),
            Side::Local,
            "ServiceImports",
            "serviceimports.multicluster.x-k8s.io",
            all
        ),
        list::<ServiceImport>(
            Api::namespaced(broker.clone(), broker_ns),
            Side::Broker,
            "ServiceImports",
            "serviceimports.multicluster.x-k8s.io",
            &at_broker
        ),
        list::<EndpointSlice>(
            Api::namespaced(broker.clone(), broker_ns),
            Side::Broker,
            "EndpointSlices",
            "endpointslices.discovery.k8s.io",
            &at_broker
        ),
        list::<ClusterEndpoint>(
            Api::namespaced(broker.clone(), broker_ns),
            Side::Broker,
            "ClusterEndpoints",
            "clusterendpoints.causeway.dev",
            &at_broker
        ),
    )?;
    let listed = started.elapsed();
    oldest_first(&mut endpoints);
    let sites = validate_clusterset_for(&endpoints, cluster_id, acceptance).sites;
    // Planned in a block of its own: the borrowed view is not held across an await.
    let plan = {
        let observed = Observed {
            exports: &exports,
            services: &services,
            slices: &slices,
            namespaces: &namespaces,
            imports: &imports,
            broker_imports: &broker_imports,
            broker_slices: &broker_slices,
            sites: &sites,
        };
        plan_exports(cluster_id, broker_ns, &observed, &Time(Timestamp::now()))
    };
    debug!(
        list_ms = listed.as_millis() as u64,
        plan_ms = (started.elapsed() - listed).as_millis() as u64,
        exports = exports.len(),
        broker_imports = broker_imports.len(),
        writes = plan.writes(),
        publish = plan.broker_imports.len() + plan.broker_slices.len(),
        withdraw = plan.broker_import_deletes.len() + plan.broker_slice_deletes.len(),
        imports = plan.imports.len(),
        slices = plan.slices.len(),
        local_deletes = plan.import_deletes.len() + plan.slice_deletes.len(),
        conditions = plan.export_status.len(),
        "planned export pass"
    );
    for outside in &plan.outside_cidrs {
        warn!("{outside}");
    }
    apply_plan(&plan, Clients { broker, local }).await
}

async fn list<K>(
    api: Api<K>,
    side: Side,
    what: &'static str,
    resource: &'static str,
    scope: &str,
) -> Result<Vec<K>, ExportError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| ExportError::List {
            side,
            what,
            resource,
            scope: scope.to_owned(),
            source,
        })
}

/// What a pass reads from a ServiceExport: that it exists (not its status, which
/// the pass itself writes).
fn export_fingerprint(export: &ServiceExport) -> Value {
    json!([
        export.metadata.uid,
        export.metadata.creation_timestamp,
        export.metadata.deletion_timestamp.is_some(),
    ])
}

/// What a pass reads from a Service.
fn service_fingerprint(service: &Service) -> Value {
    let spec = service.spec.as_ref();
    json!([
        spec.and_then(|s| s.type_.as_ref()),
        spec.and_then(|s| s.cluster_ip.as_ref()),
        spec.and_then(|s| s.cluster_ips.as_ref()),
        spec.and_then(|s| s.ports.as_ref()),
        spec.and_then(|s| s.session_affinity.as_ref()),
        spec.and_then(|s| s.session_affinity_config.as_ref()),
        service.metadata.deletion_timestamp.is_some(),
    ])
}

/// What a pass reads from an EndpointSlice (a Service's own, or a copy).
fn slice_fingerprint(slice: &EndpointSlice) -> Value {
    json!([
        slice.metadata.labels,
        slice.metadata.owner_references,
        slice.address_type,
        slice.endpoints,
        slice.ports,
    ])
}

/// What a pass reads from a ServiceImport (broker or local).
fn import_fingerprint(import: &ServiceImport) -> Value {
    json!([
        import.metadata.labels,
        import.metadata.annotations,
        import.metadata.creation_timestamp,
        import.spec,
        import.status,
    ])
}

/// What a pass reads from a ClusterEndpoint at the broker: its age and spec (which
/// addresses its cluster's endpoints may have).
fn endpoint_fingerprint(endpoint: &ClusterEndpoint) -> Value {
    json!([endpoint.metadata.creation_timestamp, endpoint.spec])
}

/// What a pass reads from a Namespace: that it exists and is not being deleted.
fn namespace_fingerprint(namespace: &Namespace) -> Value {
    json!([
        namespace.metadata.deletion_timestamp.is_some(),
        namespace.status.as_ref().and_then(|s| s.phase.as_ref()),
    ])
}

/// The watchers whose changes start a pass.
fn triggers(config: &ExportConfig) -> Vec<Triggers> {
    let local = &config.local;
    let broker = &config.broker;
    let ns = &config.broker_namespace;
    vec![
        changes_of(
            Api::<ServiceExport>::all(local.clone()),
            watcher::Config::default(),
            Watched {
                what: "ServiceExports",
                needs: "list and watch on serviceexports.multicluster.x-k8s.io in all namespaces",
            },
            export_fingerprint,
        ),
        changes_of(
            Api::<Service>::all(local.clone()),
            watcher::Config::default(),
            Watched {
                what: "Services",
                needs: "list and watch on services in all namespaces",
            },
            service_fingerprint,
        ),
        changes_of(
            Api::<EndpointSlice>::all(local.clone()),
            watcher::Config::default(),
            Watched {
                what: "local EndpointSlices",
                needs: "list and watch on endpointslices.discovery.k8s.io in all namespaces",
            },
            slice_fingerprint,
        ),
        changes_of(
            Api::<ServiceImport>::all(local.clone()),
            watcher::Config::default(),
            Watched {
                what: "local ServiceImports",
                needs: "list and watch on serviceimports.multicluster.x-k8s.io in all namespaces",
            },
            import_fingerprint,
        ),
        changes_of(
            Api::<Namespace>::all(local.clone()),
            watcher::Config::default(),
            Watched {
                what: "Namespaces",
                needs: "list and watch on namespaces",
            },
            namespace_fingerprint,
        ),
        changes_of(
            Api::<ServiceImport>::namespaced(broker.clone(), ns),
            watcher::Config::default(),
            Watched {
                what: "ServiceImports at the broker",
                needs:
                    "list and watch on serviceimports.multicluster.x-k8s.io in the broker namespace",
            },
            import_fingerprint,
        ),
        changes_of(
            Api::<EndpointSlice>::namespaced(broker.clone(), ns),
            watcher::Config::default(),
            Watched {
                what: "EndpointSlices at the broker",
                needs: "list and watch on endpointslices.discovery.k8s.io in the broker namespace",
            },
            slice_fingerprint,
        ),
        changes_of(
            Api::<ClusterEndpoint>::namespaced(broker.clone(), ns),
            watcher::Config::default(),
            Watched {
                what: "ClusterEndpoints at the broker",
                needs: "list and watch on clusterendpoints.causeway.dev in the broker namespace",
            },
            endpoint_fingerprint,
        ),
    ]
}

/// Passes once at start, then whenever a watched object changes (after `debounce`
/// of quiet) and every `resync`, until `shutdown` resolves. A failed pass is logged
/// and retried at the next change or resync; it never ends the loop. Returns the
/// number of passes run.
pub async fn run(config: ExportConfig, shutdown: impl Future<Output = ()>) -> u64 {
    let span = info_span!("export_sync", cluster = %config.cluster_id);
    async move {
        info!(broker_namespace = %config.broker_namespace, "export sync started");
        let config = &config;
        let passes = run_passes(
            triggers(config),
            config.resync,
            config.debounce,
            shutdown,
            |passes| async move {
                let started = std::time::Instant::now();
                match config.sync_once().await {
                    Ok(report) if report.wrote() => info!(
                        ?report,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "export pass changed objects"
                    ),
                    Ok(report) if passes == 1 => {
                        info!(?report, "first export pass: nothing to change")
                    }
                    Ok(report) => debug!(?report, "export pass: nothing to change"),
                    Err(error) => warn!(%error, "export pass failed; will retry"),
                }
            },
        )
        .await;
        info!(passes, "export sync stopped");
        passes
    }
    .instrument(span)
    .await
}
