//! Names and labels the controller, the gateways and the tools agree on in a cluster.
//!
//! One place, so that a Lease or Secret name is never spelled twice.

/// Node label marking a node as a gateway candidate (value `true`).
pub const GATEWAY_NODE_LABEL: &str = "causeway.dev/gateway";
/// Label on the ClusterEndpoint the controller writes for its own cluster (value `true`).
pub const LOCAL_LABEL: &str = "causeway.dev/local";
/// Label on mirrored objects, value `true`; only objects carrying it are the controller's to change.
pub const MIRRORED_LABEL: &str = "causeway.dev/mirrored";
/// Label on mirrored objects: the cluster ID of the object's source.
pub const SOURCE_CLUSTER_LABEL: &str = "causeway.dev/source-cluster";
/// The key inside a gateway's key Secret that holds its private key (base64 text, `wg genkey` format).
pub const PRIVATE_KEY_FIELD: &str = "privateKey";
/// Field manager of every write the gateway makes.
pub const GATEWAY_FIELD_MANAGER: &str = "causeway-gateway";

/// The Lease a cluster's gateway candidates elect the active gateway with; holder = node name.
pub fn gateway_lease(cluster_id: &str) -> String {
    format!("causeway-gateway-{cluster_id}")
}

/// The Lease a cluster's controller replicas elect their leader with.
pub fn controller_lease(cluster_id: &str) -> String {
    format!("causeway-controller-{cluster_id}")
}

/// The Secret holding one gateway node's WireGuard private key.
pub fn gateway_key_secret(node_name: &str) -> String {
    format!("causeway-gateway-key-{node_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_1123_for_dns_1123_inputs() {
        for name in [
            gateway_lease("site-a"),
            controller_lease("site-a"),
            gateway_key_secret("site-a-gw"),
        ] {
            assert!(name.len() <= 253, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
        assert_eq!(gateway_lease("site-a"), "causeway-gateway-site-a");
        assert_eq!(gateway_key_secret("n1"), "causeway-gateway-key-n1");
    }
}
