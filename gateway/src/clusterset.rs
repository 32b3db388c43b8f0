//! From the ClusterEndpoint objects in the gateway's namespace to what this node should hold.
//!
//! Pure: the listed objects and our identity in, a [`Desired`] (or why there is none yet)
//! out. The same `config` code as the endpoints file decides peers and routes; this module
//! only orders the objects, leaves out those being deleted or refused, and tells "waiting
//! for the controller" apart from a real state.

use crate::config::{desired_from_clusterset, ConfigError, Desired, Identity};
use causeway_crds::names::LOCAL_LABEL;
use causeway_crds::validate::{object_name, validate_clusterset_for, Acceptance, ValidationError};
use causeway_crds::ClusterEndpoint;
use std::cmp::Ordering;

/// Why there is no state to apply yet; the data plane stays as it is meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Waiting {
    /// The controller has not written our cluster's local ClusterEndpoint yet.
    #[error("waiting for the controller: no ClusterEndpoint with spec.clusterID {cluster:?} in namespace {namespace:?} yet; it writes one (labelled causeway.dev/local=true) once it runs with --cluster {cluster}")]
    LocalMissing {
        /// Our cluster ID.
        cluster: String,
        /// The namespace listed.
        namespace: String,
    },
    /// Our own object is there but invalid; the controller reports why on it.
    #[error("our cluster's ClusterEndpoint {object:?} is refused ({reasons}); fix the controller's flags (--pod-cidrs, --service-cidrs) or the Gateway objects it is built from")]
    LocalRefused {
        /// The object.
        object: String,
        /// Every reason, joined.
        reasons: String,
    },
    /// Our own object does not list this gateway's key yet.
    #[error("waiting for the controller to list this gateway: ClusterEndpoint {object:?} has no gateway with public key {public_key} yet (the controller adds it from Gateway {node:?})")]
    KeyNotListed {
        /// Our cluster's object.
        object: String,
        /// Our public key, base64 (public, safe to show).
        public_key: String,
        /// Our node, whose Gateway object carries the key.
        node: String,
    },
}

/// What the listed objects mean for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClustersetPlan {
    /// The state to apply, or why there is none yet.
    pub outcome: Result<Desired, Waiting>,
    /// Objects left out, with every reason (the controller refused them already; logged only).
    pub refused: Vec<(String, Vec<String>)>,
}

/// The order the objects are validated in: our own cluster's local object first, then
/// the others oldest first, then by name, so a newcomer can never displace a working
/// cluster (validation is first come, first served). Objects being deleted are left out.
pub fn order_endpoints<'a>(
    objects: &'a [ClusterEndpoint],
    cluster: &str,
) -> Vec<&'a ClusterEndpoint> {
    let own = |ep: &ClusterEndpoint| {
        ep.spec.cluster_id == cluster
            && causeway_crds::names::has_true_label(&ep.metadata, LOCAL_LABEL)
    };
    let mut ordered: Vec<&ClusterEndpoint> = objects
        .iter()
        .filter(|ep| ep.metadata.deletion_timestamp.is_none())
        .collect();
    ordered.sort_by(|a, b| {
        own(b)
            .cmp(&own(a))
            .then_with(|| {
                // An object of unknown age sorts as the newest: it cannot displace any other.
                match (
                    &a.metadata.creation_timestamp,
                    &b.metadata.creation_timestamp,
                ) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                }
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    ordered
}

/// Plans this node's state from the ClusterEndpoints listed in `namespace`.
///
/// `node` is this node's name (for messages). With `me.public_key` set (an active
/// gateway), our own object must list that key, else the plan is [`Waiting`]. Other
/// clusters' CIDRs must be ones `acceptance` accepts, else their object is left out.
pub fn plan_clusterset(
    objects: &[ClusterEndpoint],
    me: &Identity,
    namespace: &str,
    node: &str,
    acceptance: &Acceptance,
) -> ClustersetPlan {
    let ordered: Vec<ClusterEndpoint> = order_endpoints(objects, &me.cluster)
        .into_iter()
        .cloned()
        .collect();
    let mut check = validate_clusterset_for(&ordered, &me.cluster, acceptance);
    let mut refused: Vec<(String, Vec<String>)> = check
        .refused
        .iter()
        .map(|(object, errors)| {
            (
                object.clone(),
                errors.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let source = format!("ClusterEndpoints in namespace {namespace}");
    let own_refusal = |refused: &[(String, Vec<ValidationError>)]| {
        ordered
            .iter()
            .find(|ep| ep.spec.cluster_id == me.cluster)
            .and_then(|ep| {
                let name = object_name(ep);
                refused
                    .iter()
                    .find(|(object, _)| *object == name)
                    .map(|(object, errors)| Waiting::LocalRefused {
                        object: object.clone(),
                        reasons: errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
            })
    };
    // Each pass drops at most one remote object that claims our own endpoint, then retries.
    let outcome = loop {
        match desired_from_clusterset(&check, &source, me) {
            Ok(desired) => break Ok(desired),
            Err(ConfigError::EndpointIsLocal {
                cluster, endpoint, ..
            }) => {
                let Some(at) = check.sites.iter().position(|s| s.cluster_id == cluster) else {
                    break Err(Waiting::LocalMissing {
                        cluster: me.cluster.clone(),
                        namespace: namespace.to_owned(),
                    });
                };
                let site = check.sites.remove(at);
                refused.push((
                    site.object.clone(),
                    vec![format!("ClusterEndpoint {:?}: spec.gateways[0].publicEndpoint {endpoint} is this gateway's own address; a remote cluster's gateway must be a different host — fix that cluster's object", site.object)],
                ));
            }
            Err(ConfigError::KeyNotListed { public_key, .. }) => {
                let object = check
                    .site(&me.cluster)
                    .map_or_else(|| me.cluster.clone(), |s| s.object.clone());
                break Err(Waiting::KeyNotListed {
                    object,
                    public_key,
                    node: node.to_owned(),
                });
            }
            // LocalMissing, and nothing else this function returns.
            Err(_) => {
                break Err(
                    own_refusal(&check.refused).unwrap_or_else(|| Waiting::LocalMissing {
                        cluster: me.cluster.clone(),
                        namespace: namespace.to_owned(),
                    }),
                )
            }
        }
    };
    ClustersetPlan { outcome, refused }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::{ClusterEndpointSpec, GatewayEndpoint};
    use causeway_wire::keys::parse_key;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const KEY_A2: &str = "UPrQ4BFBz3BgHbAgJmbNWBdIyTAJJrUbbbu/2emjVWg=";
    const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    const KEY_C: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn gateway(node: &str, i: u8, key: &str) -> GatewayEndpoint {
        GatewayEndpoint {
            node_name: node.into(),
            public_endpoint: format!("198.18.0.{i}:51820"),
            public_key: key.into(),
            private_ip: Some(format!("198.19.{i}.1")),
            private_ips: vec![format!("198.19.{i}.1")],
            health_check_ip: None,
        }
    }

    /// A ClusterEndpoint as the controller writes it: `i` picks distinct CIDRs.
    fn object(
        name: &str,
        cluster: &str,
        i: u8,
        created: i64,
        gateways: Vec<GatewayEndpoint>,
        local: bool,
    ) -> ClusterEndpoint {
        let mut labels = std::collections::BTreeMap::new();
        if local {
            labels.insert(LOCAL_LABEL.to_owned(), "true".to_owned());
        } else {
            labels.insert("causeway.dev/mirrored".to_owned(), "true".to_owned());
            labels.insert("causeway.dev/source-cluster".to_owned(), cluster.to_owned());
        }
        ClusterEndpoint {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("causeway".into()),
                labels: Some(labels),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created).unwrap(),
                )),
                ..ObjectMeta::default()
            },
            spec: ClusterEndpointSpec {
                cluster_id: cluster.into(),
                pod_cidrs: vec![format!("10.{i}.0.0/16")],
                service_cidrs: vec![format!("10.10{i}.0.0/16")],
                gateways,
            },
            status: None,
        }
    }

    fn active(key: &str) -> Identity {
        Identity {
            cluster: "site-a".into(),
            public_key: Some(parse_key(key).unwrap()),
            listen: Some("198.18.0.1:51820".parse().unwrap()),
            persistent_keepalive: None,
        }
    }

    fn passive() -> Identity {
        Identity {
            public_key: None,
            listen: None,
            ..active(KEY_A)
        }
    }

    fn world() -> Vec<ClusterEndpoint> {
        vec![
            object(
                "site-c",
                "site-c",
                3,
                30,
                vec![gateway("c-gw", 3, KEY_C)],
                false,
            ),
            object(
                "site-b",
                "site-b",
                2,
                20,
                vec![gateway("b-gw", 2, KEY_B)],
                false,
            ),
            object(
                "site-a",
                "site-a",
                1,
                50,
                vec![gateway("a-gw-1", 1, KEY_A), gateway("a-gw-2", 4, KEY_A2)],
                true,
            ),
        ]
    }

    fn peers(plan: &ClustersetPlan) -> Vec<String> {
        plan.outcome
            .as_ref()
            .unwrap()
            .peers
            .iter()
            .map(|p| p.cluster_id.clone())
            .collect()
    }

    #[test]
    fn own_object_first_then_oldest_then_by_name() {
        let mut objects = world();
        objects.push(object("site-d", "site-d", 5, 20, vec![], false));
        objects.push(object("site-e", "site-e", 6, 0, vec![], false));
        objects[3].metadata.creation_timestamp = None;
        let names: Vec<_> = order_endpoints(&objects, "site-a")
            .iter()
            .map(|e| e.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["site-a", "site-e", "site-b", "site-c", "site-d"]);
    }

    #[test]
    fn active_gateway_peers_with_every_other_cluster() {
        let plan = plan_clusterset(
            &world(),
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(peers(&plan), ["site-b", "site-c"]);
        assert!(plan.refused.is_empty());
        let desired = plan.outcome.unwrap();
        assert_eq!(desired.local.cluster_id, "site-a");
        assert_eq!(
            desired.peers[0].endpoint,
            Some("198.18.0.2:51820".parse().unwrap())
        );
    }

    #[test]
    fn passive_candidate_routes_via_the_first_other_gateway() {
        let plan = plan_clusterset(
            &world(),
            &passive(),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        let desired = plan.outcome.unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            desired.gateway_next_hops_skipping("x", "a-gw-1").unwrap(),
            Some(vec![ip("198.19.4.1")])
        );
        assert_eq!(
            desired.gateway_next_hops_skipping("x", "a-gw-2").unwrap(),
            Some(vec![ip("198.19.1.1")])
        );
        assert_eq!(
            desired.gateway_next_hops_skipping("x", "worker-1").unwrap(),
            Some(vec![ip("198.19.1.1")])
        );
        let mut alone = world();
        alone[2].spec.gateways.truncate(1);
        let desired = plan_clusterset(
            &alone,
            &passive(),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        )
        .outcome
        .unwrap();
        assert_eq!(
            desired.gateway_next_hops_skipping("x", "a-gw-1").unwrap(),
            None
        );
    }

    #[test]
    fn objects_being_deleted_are_left_out() {
        let mut objects = world();
        objects[1].metadata.deletion_timestamp = objects[1].metadata.creation_timestamp.clone();
        let plan = plan_clusterset(
            &objects,
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(peers(&plan), ["site-c"]);
    }

    #[test]
    fn a_refused_object_is_skipped_not_fatal() {
        let mut objects = world();
        // site-c claims site-b's pod CIDR; site-b is older, so site-c is refused.
        objects[0].spec.pod_cidrs = vec!["10.2.0.0/16".into()];
        // A newcomer with a broken key.
        let mut bad = object(
            "site-z",
            "site-z",
            9,
            90,
            vec![gateway("z-gw", 9, KEY_B)],
            false,
        );
        bad.spec.gateways[0].public_key = "not-a-key".into();
        objects.push(bad);
        let plan = plan_clusterset(
            &objects,
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(peers(&plan), ["site-b"]);
        let refused: Vec<&str> = plan.refused.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(refused, ["site-c", "site-z"]);
        assert!(
            plan.refused[0].1[0].contains("overlaps"),
            "{:?}",
            plan.refused
        );
    }

    #[test]
    fn a_remote_claiming_our_endpoint_is_skipped() {
        let mut objects = world();
        objects[0].spec.gateways[0].public_endpoint = "198.18.0.1:51820".into();
        let plan = plan_clusterset(
            &objects,
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(peers(&plan), ["site-b"]);
        assert_eq!(plan.refused.len(), 1);
        assert!(plan.refused[0].1[0].contains("own address"));
    }

    #[test]
    fn waiting_for_the_controller_is_not_an_error() {
        type Case = (Vec<ClusterEndpoint>, Identity, fn(&Waiting) -> bool);
        let cases: Vec<Case> = vec![
            (world()[..2].to_vec(), active(KEY_A), |w| {
                matches!(w, Waiting::LocalMissing { .. })
            }),
            (vec![], passive(), |w| {
                matches!(w, Waiting::LocalMissing { .. })
            }),
            (world(), active(KEY_B), |w| {
                matches!(w, Waiting::KeyNotListed { .. })
            }),
            (
                {
                    let mut o = world();
                    o[2].spec.pod_cidrs = vec!["10.1.0.1/16".into()];
                    o
                },
                passive(),
                |w| matches!(w, Waiting::LocalRefused { .. }),
            ),
        ];
        for (objects, me, expected) in cases {
            let plan = plan_clusterset(&objects, &me, "causeway", "a-gw-1", &Acceptance::default());
            let waiting = plan.outcome.unwrap_err();
            assert!(expected(&waiting), "{waiting:?}");
            let message = waiting.to_string();
            assert!(
                message.contains("site-a") || message.contains("a-gw-1"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_same_objects_plan_the_same_state() {
        let a = plan_clusterset(
            &world(),
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        let mut shuffled = world();
        shuffled.reverse();
        let b = plan_clusterset(
            &shuffled,
            &active(KEY_A),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(a, b);
        // Active and passive see the same peers and routes: switching role changes no input.
        let c = plan_clusterset(
            &world(),
            &passive(),
            "causeway",
            "a-gw-1",
            &Acceptance::default(),
        );
        assert_eq!(a.outcome, c.outcome);
    }
}
