//! Why Kubernetes mode stops, each reason with the object and the fix.

use std::net::SocketAddr;

use causeway_datapath::netlink::NetlinkError;
use causeway_k8s::leader::LeaderError;

use crate::node::TunnelError;

/// Why Kubernetes mode stopped (or could not start).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The Node object could not be read to decide the role.
    #[error("cannot read Node {node:?}: {source}; with --role auto the gateway reads its Node's labels, so its ServiceAccount needs get on nodes (a ClusterRole and ClusterRoleBinding) — or pass --role gateway or --role route-agent")]
    Node {
        /// The node.
        node: String,
        /// The client's error.
        source: Box<kube::Error>,
    },
    /// The key Secret could not be read or created.
    #[error("cannot {verb} Secret {namespace}/{name}: {source}; the gateway needs get and create on secrets in namespace {namespace}")]
    Secret {
        /// The namespace.
        namespace: String,
        /// The Secret.
        name: String,
        /// What was attempted.
        verb: &'static str,
        /// The client's error.
        source: Box<kube::Error>,
    },
    /// The key Secret holds no usable key.
    #[error("Secret {namespace}/{name} field privateKey {reason}; it must hold the base64 key `causeway-gateway genkey` prints — delete the Secret to have a new key generated (`kubectl -n {namespace} delete secret {name}`, then restart the gateway) or put such a key in it")]
    SecretKey {
        /// The namespace.
        namespace: String,
        /// The Secret.
        name: String,
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// The Gateway object could not be read or written.
    #[error("cannot {verb} Gateway {namespace}/{name}: {source}; the gateway needs get, create and update on gateways.causeway.dev and patch on gateways/status in namespace {namespace}")]
    Gateway {
        /// The namespace.
        namespace: String,
        /// The Gateway (the node's name).
        name: String,
        /// What was attempted.
        verb: &'static str,
        /// The client's error.
        source: Box<kube::Error>,
    },
    /// The Lease election could not be joined.
    #[error("gateway election: {0} (for the gateway: its ServiceAccount)")]
    Leader(#[from] LeaderError),
    /// The tunnel could not be opened after winning the Lease.
    #[error("won the gateway Lease but cannot open the tunnel: {0}")]
    Tunnel(Box<TunnelError>),
    /// Netlink is unusable.
    #[error(transparent)]
    Netlink(Box<NetlinkError>),
    /// The metrics address could not be bound.
    #[error("binding the metrics address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
}

impl From<TunnelError> for KubeError {
    fn from(e: TunnelError) -> KubeError {
        KubeError::Tunnel(Box::new(e))
    }
}

impl From<NetlinkError> for KubeError {
    fn from(e: NetlinkError) -> KubeError {
        KubeError::Netlink(Box::new(e))
    }
}

impl KubeError {
    /// Whether retrying cannot help: authentication, permission, or a bad stored key.
    pub(super) fn is_permanent(&self) -> bool {
        let denied =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 401 || s.code == 403);
        match self {
            KubeError::Node { source, .. }
            | KubeError::Secret { source, .. }
            | KubeError::Gateway { source, .. } => denied(source),
            KubeError::Leader(_) => false,
            _ => true,
        }
    }
}
