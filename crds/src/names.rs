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

/// Whether `meta` carries `label` with the value `true` (how every Causeway marker label is set).
pub fn has_true_label(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    label: &str,
) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(label))
        .is_some_and(|v| v == "true")
}

/// The Lease a cluster's gateway candidates elect the active gateway with; holder = node name.
pub fn gateway_lease(cluster_id: &str) -> String {
    format!("causeway-gateway-{cluster_id}")
}

/// The Lease a cluster's controller replicas elect their leader with.
pub fn controller_lease(cluster_id: &str) -> String {
    format!("causeway-controller-{cluster_id}")
}

/// The namespace of the gateways' key Secrets, next to Causeway's `namespace`: the
/// gateways may read Secrets there and nowhere else, so the broker kubeconfig (in
/// `namespace`) is out of their reach.
pub fn key_namespace(namespace: &str) -> String {
    format!("{namespace}-keys")
}

/// The Secret holding one gateway node's WireGuard private key.
pub fn gateway_key_secret(node_name: &str) -> String {
    format!("causeway-gateway-key-{node_name}")
}

/// The ServiceAccount whose tokens the gateway agent's `/verify` and `/benchmark` accept:
/// who may create its tokens (`serviceaccounts/token`, Role `causeway-operator`) may run them.
pub const AGENT_CLIENT_ACCOUNT: &str = "causeway-agent-client";
/// The audience of those tokens, so that no other token (and no other service) counts.
pub const AGENT_TOKEN_AUDIENCE: &str = "causeway.dev/agent";
/// The header carrying the token through the API server's pod proxy, which consumes
/// `Authorization` itself.
pub const AGENT_TOKEN_HEADER: &str = "x-causeway-token";

/// Label on the ServiceImports and EndpointSlices Causeway publishes at the broker:
/// the namespace of the exported Service.
pub const SERVICE_NAMESPACE_LABEL: &str = "causeway.dev/service-namespace";
/// Label on the ServiceImports Causeway writes in a member cluster (value `true`); only
/// objects carrying it are the controller's to change.
pub const MANAGED_LABEL: &str = "causeway.dev/managed";
/// The standard EndpointSlice label naming who manages a slice.
pub const ENDPOINTSLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`ENDPOINTSLICE_MANAGED_BY_LABEL`] on every EndpointSlice Causeway writes.
pub const ENDPOINTSLICE_MANAGER: &str = "causeway.dev";
/// The standard label tying an EndpointSlice to the Service in its namespace it belongs to.
pub const KUBERNETES_SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Field manager of every write the controller makes.
pub const CONTROLLER_FIELD_MANAGER: &str = "causeway-controller";
/// Annotation on a cluster's own ClusterEndpoint: the release of the controller that wrote it.
pub const VERSION_ANNOTATION: &str = "causeway.dev/version";
/// The longest object name Causeway writes for a service (a DNS label, like a Service's).
pub const MAX_NAME_LEN: usize = 63;

/// The ServiceImport a cluster publishes at the broker for its export of `service` in
/// `namespace`: `<svc>-<ns>-<cluster>`, cut to 63 characters with a hash suffix.
pub fn broker_service_import(service: &str, namespace: &str, cluster_id: &str) -> String {
    fit_name(&format!("{service}-{namespace}-{cluster_id}"))
}

/// An EndpointSlice a cluster publishes at the broker for one address family
/// (`ipv4` or `ipv6`): `<svc>-<ns>-<cluster>-<family>`, cut like [`broker_service_import`].
pub fn broker_endpoint_slice(
    service: &str,
    namespace: &str,
    cluster_id: &str,
    family: &str,
) -> String {
    fit_name(&format!("{service}-{namespace}-{cluster_id}-{family}"))
}

/// The local copy of a cluster's broker EndpointSlice in the service's namespace:
/// `<svc>-<cluster>-<family>`, cut like [`broker_service_import`].
pub fn imported_endpoint_slice(service: &str, cluster_id: &str, family: &str) -> String {
    fit_name(&format!("{service}-{cluster_id}-{family}"))
}

/// `name` itself when it is at most [`MAX_NAME_LEN`] characters; otherwise its start,
/// a dash and 10 hex digits of a hash of the whole name, so that two long names that
/// share a prefix stay distinct and every cluster computes the same cut.
pub fn fit_name(name: &str) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name.to_owned();
    }
    const HASH_LEN: usize = 10;
    let hash = format!("{:016x}", fnv1a64(name.as_bytes()));
    let keep = MAX_NAME_LEN - 1 - HASH_LEN;
    // Inputs are DNS labels (ASCII), but cut on a character boundary all the same.
    let mut end = keep;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    // A name must not have a dash or dot before the suffix's dash doubled up, nor end in one.
    let prefix = name[..end].trim_end_matches(['-', '.']);
    format!("{prefix}-{}", &hash[..HASH_LEN])
}

/// FNV-1a, 64 bits: tiny, and unlike `std`'s hasher its output is fixed forever, so
/// names cut by one controller version are found again by the next.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
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

    #[test]
    fn service_object_names_fit_a_dns_label() {
        assert_eq!(
            broker_service_import("db", "prod", "site-a"),
            "db-prod-site-a"
        );
        assert_eq!(
            broker_endpoint_slice("db", "prod", "site-a", "ipv4"),
            "db-prod-site-a-ipv4"
        );
        assert_eq!(
            imported_endpoint_slice("db", "site-a", "ipv6"),
            "db-site-a-ipv6"
        );
        let long_service = "s".repeat(60);
        let cut = broker_service_import(&long_service, "prod", "site-a");
        assert_eq!(cut.len(), MAX_NAME_LEN, "{cut}");
        assert!(cut.starts_with(&"s".repeat(52)), "{cut}");
        // Names that differ only past the cut stay distinct, and the cut is stable.
        let other = broker_service_import(&long_service, "prod", "site-b");
        assert_ne!(cut, other);
        assert_eq!(cut, broker_service_import(&long_service, "prod", "site-a"));
        // A cut that lands on a dash does not leave "--" or a trailing dash.
        let dashed = fit_name(&format!("{}-{}", "a".repeat(51), "b".repeat(20)));
        assert!(!dashed.contains("--"), "{dashed}");
        assert!(dashed.len() <= MAX_NAME_LEN);
        for name in [cut, other, dashed] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }
}
