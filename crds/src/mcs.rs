//! The Kubernetes Multi-Cluster Services API (KEP-1645), `multicluster.x-k8s.io/v1alpha1`.
//!
//! Field names, types and condition types follow the upstream `mcs-api` CRDs so that
//! manifests and tooling written for other MCS implementations work unchanged.

use k8s_openapi::api::core::v1::SessionAffinityConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ServiceExport condition type: the export is valid (the Service exists and can be exported).
pub const CONDITION_VALID: &str = "Valid";
/// ServiceExport condition type: the export is published and imported across the clusterset.
pub const CONDITION_READY: &str = "Ready";
/// ServiceExport condition type: this export conflicts with another cluster's export of the same name.
pub const CONDITION_CONFLICT: &str = "Conflict";
/// EndpointSlice label naming the multi-cluster service.
pub const LABEL_SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";
/// EndpointSlice label naming the cluster the endpoints come from.
pub const LABEL_SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster";

/// Marks the Service of the same name and namespace for export to the clusterset.
///
/// Like upstream, a ServiceExport has no spec: its existence is the request.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ServiceExport",
    plural = "serviceexports",
    shortname = "svcex",
    namespaced,
    no_spec,
    status = "ServiceExportStatus",
    derive = "PartialEq",
    doc = "ServiceExport declares that the Service with the same name and namespace should be exported to the clusterset.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ServiceExportFields {}

/// Observed state of a ServiceExport.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportStatus {
    /// `Valid`, `Ready` and `Conflict` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How a multi-cluster service is reached.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
pub enum ServiceImportType {
    /// A single virtual IP for the service across the clusterset.
    ClusterSetIP,
    /// No virtual IP: DNS returns the ready endpoints of every exporting cluster.
    Headless,
}

/// A service imported from the clusterset, written by the MCS controller.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ServiceImport",
    plural = "serviceimports",
    shortname = "svcim",
    namespaced,
    status = "ServiceImportStatus",
    derive = "PartialEq",
    doc = "ServiceImport describes a service imported from clusters in a clusterset.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ips"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportSpec {
    /// The ports the service exposes.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The clusterset IPs of a ClusterSetIP service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// ClusterSetIP or Headless.
    #[serde(rename = "type")]
    pub type_: ServiceImportType,
    /// `ClientIP` or `None`, as on a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    /// Session affinity settings, as on a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
}

/// One port of an imported service.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port's name; required when the service has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// TCP, UDP or SCTP; TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The application protocol, e.g. `postgresql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The port number.
    pub port: i32,
}

/// Observed state of a ServiceImport.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportStatus {
    /// The clusters that export this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterStatus>,
}

/// One cluster exporting an imported service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The exporting cluster's ID.
    pub cluster: String,
}
