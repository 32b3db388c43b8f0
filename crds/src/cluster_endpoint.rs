//! `ClusterEndpoint`: what one cluster offers the clusterset.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// CIDRs, endpoints and keys stay the strings the user wrote, so that a bad value
// still parses and is refused by `validate` with a message naming it, rather than
// failing deserialisation with an opaque serde error.
/// One cluster's networks and gateways, published to the broker and mirrored into every member.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "ClusterEndpoint",
    plural = "clusterendpoints",
    shortname = "cep",
    category = "causeway",
    namespaced,
    status = "ClusterEndpointStatus",
    derive = "PartialEq",
    doc = "One cluster's pod and service CIDRs and its WireGuard gateways.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterID"),
    printcolumn(name = "Pod CIDRs", type_ = "string", json_path = ".spec.podCIDRs"),
    printcolumn(
        name = "Service CIDRs",
        type_ = "string",
        json_path = ".spec.serviceCIDRs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpointSpec {
    /// The cluster's ID in the clusterset: a DNS-1123 label, unique across the clusterset.
    #[serde(rename = "clusterID")]
    #[schemars(length(max = 63))]
    pub cluster_id: String,
    /// Pod CIDRs of the cluster (IPv4 and/or IPv6), e.g. `10.1.0.0/16`.
    #[serde(rename = "podCIDRs", default)]
    #[schemars(length(max = crate::validate::MAX_CIDRS), inner(length(max = 64)))]
    pub pod_cidrs: Vec<String>,
    /// Service CIDRs of the cluster (IPv4 and/or IPv6), e.g. `10.101.0.0/16`.
    #[serde(rename = "serviceCIDRs", default)]
    #[schemars(length(max = crate::validate::MAX_CIDRS), inner(length(max = 64)))]
    pub service_cidrs: Vec<String>,
    /// The cluster's gateway nodes; the first healthy one carries the traffic.
    #[serde(default)]
    #[schemars(length(max = crate::validate::MAX_GATEWAYS))]
    pub gateways: Vec<GatewayEndpoint>,
}

/// How other clusters reach one gateway node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEndpoint {
    /// Name of the Kubernetes node (or VM) running the gateway.
    #[schemars(length(max = 253))]
    pub node_name: String,
    /// Underlay address other gateways send WireGuard UDP to: `ip:port` or `[ipv6]:port`.
    #[schemars(length(max = 64))]
    pub public_endpoint: String,
    /// The gateway's WireGuard public key, base64 (as printed by `wg pubkey`).
    #[schemars(length(max = 64))]
    pub public_key: String,
    /// The gateway node's address on the cluster network; route agents send remote traffic to it.
    #[serde(rename = "privateIP", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub private_ip: Option<String>,
    /// Every cluster-network address of the gateway node, one per family on dual-stack
    /// clusters (like a Pod's `podIPs`); route agents pick the one matching each destination.
    #[serde(rename = "privateIPs", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), inner(length(max = 64)))]
    pub private_ips: Vec<String>,
    /// Address inside the tunnel that remote gateways probe for health and RTT.
    #[serde(
        rename = "healthCheckIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 64))]
    pub health_check_ip: Option<String>,
}

/// Observed state of a ClusterEndpoint, written by the controller that validated it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpointStatus {
    /// `Valid` (and later `Mirrored`) conditions, with reasons a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// On a cluster's own local copy: the other clusters' ClusterEndpoints this cluster
    /// refuses (not mirrored, not routed), so that `kubectl causeway diagnose` can say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub refused: Vec<RemoteRefusal>,
}

/// Another cluster's ClusterEndpoint this cluster refuses, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRefusal {
    /// The cluster ID the refused object claims.
    #[schemars(length(max = 253))]
    pub cluster_id: String,
    /// CamelCase reason of the first error (e.g. `CIDRNotAllowed`).
    #[schemars(length(max = 64))]
    pub reason: String,
    /// Every error, each naming the field and the fix.
    #[schemars(length(max = 4096))]
    pub message: String,
}
