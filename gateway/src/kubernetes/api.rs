//! The gateway's own objects in the Kubernetes API: its key Secret, its Gateway object and
//! that object's status, and the Node label that makes it a candidate.
//!
//! Decisions are pure functions ([`key_from_secret`], [`plan_gateway`], [`is_candidate`]);
//! the async functions around them only read and write.

use super::KubeError;
use causeway_crds::names::{
    gateway_key_secret, GATEWAY_FIELD_MANAGER, GATEWAY_NODE_LABEL, PRIVATE_KEY_FIELD,
};
use causeway_crds::{Gateway, GatewaySpec, GatewayStatus};
use causeway_datapath::keys::generate_private_key;
use causeway_wire::keys::{format_key, parse_key};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Client;
use std::collections::BTreeMap;

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
    }
}

/// Whether a kube error is "not found".
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether the Node carries `causeway.dev/gateway=true`.
pub fn is_candidate(node: &Node) -> bool {
    causeway_crds::names::has_true_label(&node.metadata, GATEWAY_NODE_LABEL)
}

/// Reads Node `name` and says whether it is a gateway candidate.
pub async fn node_is_candidate(client: &Client, name: &str) -> Result<bool, KubeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(name).await.map_err(|source| KubeError::Node {
        node: name.to_owned(),
        source: Box::new(source),
    })?;
    Ok(is_candidate(&node))
}

/// The private key held in a gateway's key Secret. The key is never put in the error.
pub fn key_from_secret(secret: &Secret, namespace: &str) -> Result<[u8; 32], KubeError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let refuse = |reason: String| KubeError::SecretKey {
        namespace: namespace.to_owned(),
        name: name.clone(),
        reason,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PRIVATE_KEY_FIELD))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(PRIVATE_KEY_FIELD))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| refuse("is missing".to_owned()))?;
    let text = String::from_utf8(bytes).map_err(|_| refuse("is not text".to_owned()))?;
    parse_key(&text).map_err(|e| refuse(format!("{e}")))
}

/// A new key Secret for `node` holding `key`.
pub fn new_key_secret(node: &str, key: &[u8; 32]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(gateway_key_secret(node)),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                GATEWAY_FIELD_MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FIELD.to_owned(),
            ByteString(format_key(key).into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Reads this node's private key from its Secret, creating the Secret with a fresh key
/// if there is none. Two starts racing both end up with the key that was stored first.
pub async fn ensure_key(
    client: &Client,
    namespace: &str,
    node: &str,
) -> Result<[u8; 32], KubeError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = gateway_key_secret(node);
    let error = |verb: &'static str| {
        let name = name.clone();
        move |source| KubeError::Secret {
            namespace: namespace.to_owned(),
            name,
            verb,
            source: Box::new(source),
        }
    };
    if let Some(secret) = secrets.get_opt(&name).await.map_err(error("read"))? {
        return key_from_secret(&secret, namespace);
    }
    let key = generate_private_key();
    match secrets
        .create(&post_params(), &new_key_secret(node, &key))
        .await
    {
        Ok(_) => {
            tracing::info!(secret = %name, "created this gateway's key Secret with a new key");
            Ok(key)
        }
        Err(e) if is_conflict(&e) => {
            let secret = secrets.get(&name).await.map_err(error("read"))?;
            key_from_secret(&secret, namespace)
        }
        Err(e) => Err(error("create")(e)),
    }
}

/// What to do with this node's Gateway object.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayWrite {
    /// It does not exist: create it.
    Create(Box<Gateway>),
    /// Its spec differs: replace it (metadata kept, so the write is conditional on its version).
    Replace(Box<Gateway>),
    /// It already says what it should.
    Keep,
}

/// Plans the Gateway object `name` from what exists and the spec it should have.
pub fn plan_gateway(existing: Option<&Gateway>, name: &str, spec: &GatewaySpec) -> GatewayWrite {
    match existing {
        None => GatewayWrite::Create(Box::new(Gateway::new(name, spec.clone()))),
        Some(gateway) if gateway.spec == *spec => GatewayWrite::Keep,
        Some(gateway) => {
            let mut replaced = gateway.clone();
            replaced.spec = spec.clone();
            // The status subresource ignores it, and sending the old one would only confuse.
            replaced.status = None;
            GatewayWrite::Replace(Box::new(replaced))
        }
    }
}

/// Creates or (only when its spec differs) replaces this node's Gateway; returns its status.
pub async fn ensure_gateway(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: &GatewaySpec,
) -> Result<Option<GatewayStatus>, KubeError> {
    let gateways: Api<Gateway> = Api::namespaced(client.clone(), namespace);
    let error = |verb: &'static str| {
        move |source| KubeError::Gateway {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            verb,
            source: Box::new(source),
        }
    };
    let existing = gateways.get_opt(name).await.map_err(error("read"))?;
    let status = existing.as_ref().and_then(|g| g.status.clone());
    match plan_gateway(existing.as_ref(), name, spec) {
        GatewayWrite::Keep => Ok(status),
        GatewayWrite::Create(gateway) => {
            gateways
                .create(&post_params(), &gateway)
                .await
                .map_err(error("create"))?;
            tracing::info!(gateway = %name, "created this node's Gateway object");
            Ok(None)
        }
        GatewayWrite::Replace(gateway) => {
            gateways
                .replace(name, &post_params(), &gateway)
                .await
                .map_err(error("replace"))?;
            tracing::info!(gateway = %name, "updated this node's Gateway object");
            Ok(status)
        }
    }
}

/// Writes `status` (role and connections) to Gateway `name` with a merge patch.
pub async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &GatewayStatus,
) -> Result<(), kube::Error> {
    let gateways: Api<Gateway> = Api::namespaced(client.clone(), namespace);
    // Written out whole (not through GatewayStatus's serializer, which omits empty lists):
    // a merge patch leaves out what it does not mention, so an empty list must say `[]`.
    let patch = serde_json::json!({
        "status": {
            "role": status.role,
            "connections": status.connections,
        }
    });
    let params = PatchParams {
        field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    gateways
        .patch_status(name, &params, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// The field manager the Lease manager (`kube-lease-manager`) of `identity` writes with: a
/// Lease taken over here is owned as if that manager had taken it, so it renews and
/// releases it like any other.
fn lease_field_manager(identity: &str) -> String {
    format!("kube-lease-manager-{identity}")
}

/// The Lease `lease` as held by `identity` from `now`, for `duration`: what a takeover writes.
pub fn taken_lease(
    lease: &Lease,
    identity: &str,
    duration: std::time::Duration,
    now: MicroTime,
) -> Lease {
    let mut taken = lease.clone();
    let spec = taken.spec.get_or_insert_with(LeaseSpec::default);
    let transitions = spec.lease_transitions.unwrap_or(0);
    if spec.holder_identity.as_deref() != Some(identity) {
        spec.lease_transitions = Some(transitions + 1);
        spec.acquire_time = Some(now.clone());
    }
    spec.holder_identity = Some(identity.to_owned());
    spec.renew_time = Some(now);
    spec.lease_duration_seconds =
        Some(i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX));
    taken
}

/// Takes the gateway Lease `name` for `identity` now, whoever holds it: a passive candidate
/// does this only when the active one has stopped answering on the liveness port (or said
/// it stepped down). The write is conditional on the Lease's resourceVersion, so of two
/// candidates taking over at once exactly one wins; the other gets a 409 and looks again.
pub async fn take_lease(
    client: &Client,
    namespace: &str,
    name: &str,
    identity: &str,
    duration: std::time::Duration,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(lease_field_manager(identity)),
    };
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    match leases.get_opt(name).await? {
        Some(lease) => {
            let taken = taken_lease(&lease, identity, duration, now);
            // metadata.resourceVersion is kept: the write fails if anyone wrote since the read.
            leases.replace(name, &params, &taken).await?;
        }
        None => {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            leases
                .create(&params, &taken_lease(&fresh, identity, duration, now))
                .await?;
        }
    }
    Ok(())
}

/// Whether a kube error is a conflict (someone wrote first).
pub fn is_write_conflict(e: &kube::Error) -> bool {
    is_conflict(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::GatewayEndpoint;

    fn secret_with(value: Option<&[u8]>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("causeway-gateway-key-gw-1".into()),
                ..ObjectMeta::default()
            },
            data: value
                .map(|v| BTreeMap::from([(PRIVATE_KEY_FIELD.to_owned(), ByteString(v.to_vec()))])),
            ..Secret::default()
        }
    }

    #[test]
    fn key_secret_round_trips() {
        let key = generate_private_key();
        let secret = new_key_secret("gw-1", &key);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("causeway-gateway-key-gw-1")
        );
        assert_eq!(key_from_secret(&secret, "causeway").unwrap(), key);
        // As `causeway-gateway genkey` prints it, newline included.
        let text = format!("{}\n", format_key(&key));
        assert_eq!(
            key_from_secret(&secret_with(Some(text.as_bytes())), "causeway").unwrap(),
            key
        );
    }

    #[test]
    fn malformed_key_secrets_name_the_secret_and_the_fix() {
        let almost = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm==";
        let cases: &[(Option<&[u8]>, &str)] = &[
            (None, "is missing"),
            (Some(b"\xff\xfe"), "is not text"),
            (Some(b"not a key!"), "not valid base64"),
            (Some(b"AAAA"), "decodes to 3 bytes"),
            (Some(almost.as_bytes()), "privateKey"),
        ];
        for (value, expected) in cases {
            let e = key_from_secret(&secret_with(*value), "causeway").unwrap_err();
            let message = e.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(
                message.contains("causeway/causeway-gateway-key-gw-1"),
                "{message}"
            );
            assert!(message.contains("causeway-gateway genkey"), "{message}");
            assert!(
                message.contains("kubectl -n causeway delete secret"),
                "{message}"
            );
            if let Some(v) = value {
                if let Ok(text) = std::str::from_utf8(v) {
                    assert!(!message.contains(text), "the key leaked: {message}");
                }
            }
        }
    }

    fn spec(endpoint: &str) -> GatewaySpec {
        GatewaySpec {
            cluster_id: "site-a".into(),
            endpoint: GatewayEndpoint {
                node_name: "gw-1".into(),
                public_endpoint: endpoint.into(),
                public_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into(),
                private_ip: Some("198.19.1.1".into()),
                private_ips: vec!["198.19.1.1".into()],
                health_check_ip: None,
            },
        }
    }

    #[test]
    fn gateway_object_is_written_only_when_its_spec_differs() {
        let want = spec("198.18.0.1:51820");
        let GatewayWrite::Create(created) = plan_gateway(None, "gw-1", &want) else {
            panic!("expected a create");
        };
        assert_eq!(created.metadata.name.as_deref(), Some("gw-1"));
        assert_eq!(created.spec, want);

        let mut existing = Gateway::new("gw-1", want.clone());
        existing.metadata.resource_version = Some("42".into());
        existing.status = Some(GatewayStatus::default());
        assert_eq!(
            plan_gateway(Some(&existing), "gw-1", &want),
            GatewayWrite::Keep
        );

        let moved = spec("198.18.0.9:51820");
        let GatewayWrite::Replace(replaced) = plan_gateway(Some(&existing), "gw-1", &moved) else {
            panic!("expected a replace");
        };
        assert_eq!(replaced.spec, moved);
        assert_eq!(replaced.metadata.resource_version.as_deref(), Some("42"));
    }

    #[test]
    fn a_taken_lease_names_the_new_holder_and_keeps_the_version() {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let held = Lease {
            metadata: ObjectMeta {
                name: Some("causeway-gateway-site-a".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("site-a-gw".into()),
                lease_transitions: Some(2),
                ..LeaseSpec::default()
            }),
        };
        let taken = taken_lease(
            &held,
            "site-a-gw2",
            std::time::Duration::from_secs(3),
            now.clone(),
        );
        let spec = taken.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("site-a-gw2"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(3));
        assert_eq!(spec.renew_time, Some(now.clone()));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("7"),
            "the write is conditional on what was read"
        );
        // Taking what we already hold only renews it.
        let again = taken_lease(&taken, "site-a-gw2", std::time::Duration::from_secs(3), now);
        assert_eq!(again.spec.unwrap().lease_transitions, Some(3));
    }

    #[test]
    fn candidate_label() {
        let mut node = Node::default();
        assert!(!is_candidate(&node));
        node.metadata.labels = Some(BTreeMap::from([(
            GATEWAY_NODE_LABEL.to_owned(),
            "true".to_owned(),
        )]));
        assert!(is_candidate(&node));
        node.metadata.labels = Some(BTreeMap::from([(
            GATEWAY_NODE_LABEL.to_owned(),
            "false".to_owned(),
        )]));
        assert!(!is_candidate(&node));
    }
}
