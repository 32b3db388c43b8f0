//! `Gateway`: one gateway node's own report of its role and connections.

use crate::cluster_endpoint::GatewayEndpoint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A gateway node's identity, written by the gateway itself on start.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "Gateway",
    plural = "gateways",
    shortname = "cwgw",
    category = "causeway",
    namespaced,
    status = "GatewayStatus",
    derive = "PartialEq",
    doc = "One gateway node of this cluster: its endpoint, role and per-cluster connection state.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.publicEndpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The cluster this gateway belongs to.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// How other clusters reach this gateway (the same shape as in ClusterEndpoint).
    #[serde(flatten)]
    pub endpoint: GatewayEndpoint,
}

/// Whether a gateway carries the cluster's traffic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayRole {
    /// Holds the cluster's gateway lease and carries traffic.
    Active,
    /// A standby candidate, ready to take over.
    Passive,
}

/// State of the tunnel to one remote cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    /// No handshake has completed yet, or the last one went stale.
    Connecting,
    /// A handshake completed recently and health probes are answered.
    Connected,
    /// The connection cannot be made; `reason` says why.
    Error,
}

/// Observed state of a gateway, written by the gateway itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Active or passive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GatewayRole>,
    /// One entry per remote cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionStatus>,
    /// Conditions about the gateway itself (e.g. `Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The gateway's release (its crate version, e.g. `0.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// MTU of the tunnel interface, while active.
    #[serde(default, rename = "tunnelMTU", skip_serializing_if = "Option::is_none")]
    pub tunnel_mtu: Option<u32>,
    /// MTU of the underlay interface WireGuard's UDP leaves through, while active.
    #[serde(
        default,
        rename = "underlayMTU",
        skip_serializing_if = "Option::is_none"
    )]
    pub underlay_mtu: Option<u32>,
    /// The routes this gateway should hold on its node, as of its last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RouteStatus>,
}

/// How many of the routes a node should hold the kernel accepted, as of the last reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Routes the node should hold (one per remote CIDR it can route).
    pub desired: u32,
    /// Of those, how many the kernel holds.
    pub installed: u32,
    /// The first destinations missing, at most five; `desired - installed` says how many there are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

impl RouteStatus {
    /// How many missing destinations are listed; the counts say how many there are.
    pub const MISSING_SHOWN: usize = 5;
}

/// The tunnel from this gateway to one remote cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The remote cluster's ID.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    /// The remote gateway's endpoint currently in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// connecting, connected or error.
    pub state: ConnectionState,
    /// Why the connection is in this state, for a person to act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the latest WireGuard handshake completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake: Option<Time>,
    /// Smallest round-trip time of recent health probes, e.g. `312µs` or `41.2ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_min: Option<String>,
    /// Average round-trip time of recent health probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_avg: Option<String>,
    /// Largest round-trip time of recent health probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_max: Option<String>,
    /// Bytes received from the remote cluster through the tunnel.
    #[serde(default)]
    pub rx_bytes: u64,
    /// Bytes sent to the remote cluster through the tunnel.
    #[serde(default)]
    pub tx_bytes: u64,
    /// Since when this gateway has been sending handshake initiations to `endpoint`
    /// without an answer; absent while handshakes complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<Time>,
    /// Handshake initiations sent since the last completed handshake, when the
    /// gateway counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_attempts: Option<u64>,
}
