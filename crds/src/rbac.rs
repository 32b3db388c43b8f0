//! What each Causeway identity may do in the Kubernetes API: the rules the Helm chart grants,
//! in one place. `tests/tests/helm.rs` checks the chart against these tables; the tests on
//! real API servers check every request each component makes against them, both ways (all
//! it does is granted, all that is granted it does); and a refusal (403) is reported with
//! the Role or ClusterRole here that grants what was refused ([`explain_forbidden`]).

use std::fmt;

/// Where a role applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A ClusterRole bound with a ClusterRoleBinding: every namespace and cluster-scoped objects.
    Cluster,
    /// A Role in one namespace (the release namespace, or the broker namespace at the broker).
    Namespace,
    /// A Role per member cluster in the broker namespace, named `<name>-<cluster>`, whose
    /// rules reach only the objects named after that cluster (`resourceNames`).
    Member,
    /// A Role in the release namespace whose rules reach only these objects
    /// (`resourceNames`).
    Named(&'static [&'static str]),
    /// A Role in the gateways' key namespace ([`crate::names::key_namespace`] of the
    /// release namespace).
    Keys,
}

/// One RBAC rule: `verbs` on `resources` (a subresource as `resource/sub`) of `api_group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The API group, `""` for the core group.
    pub api_group: &'static str,
    /// Resources, as RBAC names them.
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// A Role or ClusterRole of the chart and its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Role or ClusterRole.
    pub scope: Scope,
    /// Its name: as is for a Role, with `-<release namespace>` appended for a ClusterRole
    /// and `-<cluster>` for a member's own Role.
    pub name: &'static str,
    /// Its rules.
    pub rules: &'static [Rule],
}

impl Grant {
    /// The object's name in a release installed in `namespace`; a member's own Role is
    /// named for `member` (`<cluster>` when there is none).
    pub fn object_name(&self, namespace: &str, member: Option<&str>) -> String {
        match self.scope {
            Scope::Cluster => format!("{}-{namespace}", self.name),
            Scope::Namespace | Scope::Named(_) | Scope::Keys => self.name.to_string(),
            Scope::Member => format!("{}-{}", self.name, member.unwrap_or("<cluster>")),
        }
    }

    /// `Role` or `ClusterRole`.
    pub fn kind(&self) -> &'static str {
        match self.scope {
            Scope::Cluster => "ClusterRole",
            Scope::Namespace | Scope::Member | Scope::Named(_) | Scope::Keys => "Role",
        }
    }

    /// Whether a rule of this grant allows `verb` on `resource` (or `resource/sub`) of `group`.
    pub fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        self.rules.iter().any(|r| {
            r.api_group == group && r.resources.contains(&resource) && r.verbs.contains(&verb)
        })
    }

    /// `kind name`, as kubectl names it, in a release installed in `namespace`.
    pub fn describe(&self, namespace: &str, member: Option<&str>) -> String {
        let name = self.object_name(namespace, member);
        match self.scope {
            Scope::Cluster => format!("ClusterRole {name}"),
            Scope::Namespace | Scope::Member | Scope::Named(_) => {
                format!("Role {name} (namespace {namespace})")
            }
            Scope::Keys => format!(
                "Role {name} (namespace {})",
                crate::names::key_namespace(namespace)
            ),
        }
    }
}

/// Who holds an identity, which decides the fix for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A Causeway process, bound to its roles by the chart: a refusal means the installed
    /// RBAC is not the release's.
    Component,
    /// A person, bound to the chart's viewer roles by the cluster's admin.
    Person,
}

/// Who acts in the API, and what the chart grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// What a person calls it: "the controller", "a gateway candidate", ...
    pub what: &'static str,
    /// A process or a person.
    pub holder: Holder,
    /// Its ServiceAccount's name (in the release namespace, or the broker namespace for a
    /// member), or `None` for people.
    pub account: Option<&'static str>,
    /// The chart's roles bound to it.
    pub grants: &'static [Grant],
}

impl Identity {
    /// The grant that allows `request`, given the namespace this identity's Roles live in
    /// and, for a member at the broker, the cluster it speaks for.
    pub fn granting(
        &self,
        request: &ApiRequest,
        role_namespace: &str,
        member: Option<&str>,
    ) -> Option<&'static Grant> {
        let in_role_namespace = request.namespace.as_deref() == Some(role_namespace);
        self.grants.iter().find(|g| {
            g.allows(&request.verb, &request.api_group, &request.resource)
                && match g.scope {
                    Scope::Cluster => true,
                    Scope::Namespace => in_role_namespace,
                    Scope::Member => {
                        in_role_namespace && member.is_some() && request.name.as_deref() == member
                    }
                    Scope::Named(names) => {
                        in_role_namespace
                            && request.name.as_deref().is_some_and(|n| names.contains(&n))
                    }
                    Scope::Keys => {
                        request.namespace.as_deref()
                            == Some(crate::names::key_namespace(role_namespace).as_str())
                    }
                }
        })
    }
}

const CORE: &str = "";
const CAUSEWAY: &str = crate::GROUP;
const MCS: &str = "multicluster.x-k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";
const OWN: &[&str] = &["list", "watch", "create", "update", "delete"];

/// The controller (ServiceAccount `causeway-controller`) in its own cluster.
pub const CONTROLLER: Identity = Identity {
    what: "the controller",
    holder: Holder::Component,
    account: Some("causeway-controller"),
    grants: &[
        Grant {
            scope: Scope::Cluster,
            name: "causeway-controller",
            rules: &[
                // Nodes give the pod CIDRs; Services and Namespaces the exports.
                Rule {
                    api_group: CORE,
                    resources: &["nodes", "services", "namespaces"],
                    verbs: &["list", "watch"],
                },
                Rule {
                    api_group: MCS,
                    resources: &["serviceexports"],
                    verbs: &["list", "watch"],
                },
                Rule {
                    api_group: MCS,
                    resources: &["serviceexports/status"],
                    verbs: &["patch"],
                },
                Rule {
                    api_group: MCS,
                    resources: &["serviceimports"],
                    verbs: &["list", "watch", "create", "update", "delete"],
                },
                Rule {
                    api_group: MCS,
                    resources: &["serviceimports/status"],
                    verbs: &["patch"],
                },
                Rule {
                    api_group: DISCOVERY,
                    resources: &["endpointslices"],
                    verbs: &["list", "watch", "create", "update", "delete"],
                },
            ],
        },
        Grant {
            scope: Scope::Namespace,
            name: "causeway-controller",
            rules: &[
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints"],
                    verbs: OWN,
                },
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints/status"],
                    verbs: &["patch"],
                },
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["gateways"],
                    verbs: &["list", "watch"],
                },
                // Its own election (kube-lease-manager: server-side apply) and the gateway
                // Lease, read to order the gateways.
                Rule {
                    api_group: COORDINATION,
                    resources: &["leases"],
                    verbs: &["get", "list", "watch", "create", "patch"],
                },
            ],
        },
    ],
};

/// Gateway candidates (ServiceAccount `causeway-gateway`).
pub const GATEWAY: Identity = Identity {
    what: "a gateway candidate",
    holder: Holder::Component,
    account: Some("causeway-gateway"),
    grants: &[
        // The agent asks whether a caller's token is the agent client's (TokenReview).
        Grant {
            scope: Scope::Cluster,
            name: "causeway-gateway",
            rules: &[Rule {
                api_group: AUTHENTICATION,
                resources: &["tokenreviews"],
                verbs: &["create"],
            }],
        },
        // The key Secret: created on first start, then watched for rotation. In a
        // namespace of its own, so that no other Secret is within reach.
        Grant {
            scope: Scope::Keys,
            name: "causeway-gateway-keys",
            rules: &[Rule {
                api_group: CORE,
                resources: &["secrets"],
                verbs: &["get", "list", "watch", "create"],
            }],
        },
        Grant {
            scope: Scope::Namespace,
            name: "causeway-gateway",
            rules: &[
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["gateways"],
                    verbs: &["get", "create", "update"],
                },
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["gateways/status"],
                    verbs: &["patch"],
                },
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints"],
                    verbs: &["list", "watch"],
                },
                // kube-lease-manager campaigns and renews with server-side apply (patch); a
                // takeover after the liveness check is a conditional update.
                Rule {
                    api_group: COORDINATION,
                    resources: &["leases"],
                    verbs: &["get", "create", "update", "patch"],
                },
            ],
        },
    ],
};

/// Route agents, on every node that is not a gateway candidate (ServiceAccount
/// `causeway-route-agent`): they only read the ClusterEndpoints they route by, so a
/// compromised node holds no gateway key and can write nothing.
pub const ROUTE_AGENT: Identity = Identity {
    what: "a route agent",
    holder: Holder::Component,
    account: Some("causeway-route-agent"),
    grants: &[Grant {
        scope: Scope::Namespace,
        name: "causeway-route-agent",
        rules: &[Rule {
            api_group: CAUSEWAY,
            resources: &["clusterendpoints"],
            verbs: &["list", "watch"],
        }],
    }],
};

/// A member cluster's controller at the broker (ServiceAccount `causeway-member-<cluster>`
/// in the broker namespace). It reads everyone's objects but writes only its own: its
/// ClusterEndpoint by name (its own Role), and ServiceImports and EndpointSlices labelled
/// with its cluster as their source; the chart's ValidatingAdmissionPolicy holds creates,
/// updates and deletes to that, as `resourceNames` cannot name objects not yet made.
pub const MEMBER: Identity = Identity {
    what: "a member cluster's controller at the broker",
    holder: Holder::Component,
    account: None,
    grants: &[
        Grant {
            scope: Scope::Namespace,
            name: "causeway-member",
            rules: &[
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints"],
                    verbs: &["list", "watch", "create"],
                },
                Rule {
                    api_group: MCS,
                    resources: &["serviceimports"],
                    verbs: OWN,
                },
                Rule {
                    api_group: DISCOVERY,
                    resources: &["endpointslices"],
                    verbs: OWN,
                },
            ],
        },
        Grant {
            scope: Scope::Member,
            name: "causeway-member",
            rules: &[
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints"],
                    verbs: &["update"],
                },
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints/status"],
                    verbs: &["patch"],
                },
            ],
        },
    ],
};

/// The prefix of a member's ServiceAccount name at the broker; the rest is its cluster ID.
pub const MEMBER_ACCOUNT_PREFIX: &str = "causeway-member-";

/// The people who run `kubectl causeway` (the chart's viewer roles and, for `verify` and
/// `benchmark`, Role causeway-operator, bound by the cluster's admin).
pub const VIEWER: Identity = Identity {
    what: "a person running kubectl causeway",
    holder: Holder::Person,
    account: None,
    grants: &[
        Grant {
            scope: Scope::Cluster,
            name: "causeway-viewer",
            rules: &[
                Rule {
                    api_group: MCS,
                    resources: &["serviceexports", "serviceimports"],
                    verbs: &["get", "list"],
                },
                Rule {
                    api_group: DISCOVERY,
                    resources: &["endpointslices"],
                    verbs: &["get", "list"],
                },
            ],
        },
        Grant {
            scope: Scope::Namespace,
            name: "causeway-viewer",
            rules: &[
                Rule {
                    api_group: CAUSEWAY,
                    resources: &["clusterendpoints", "gateways"],
                    verbs: &["get", "list"],
                },
                Rule {
                    api_group: COORDINATION,
                    resources: &["leases"],
                    verbs: &["get", "list"],
                },
                Rule {
                    api_group: CORE,
                    resources: &["pods"],
                    verbs: &["get", "list"],
                },
                Rule {
                    api_group: CORE,
                    resources: &["pods/proxy"],
                    verbs: &["get"],
                },
            ],
        },
        // `verify` and `benchmark` only: minting a token of the agent's client account is
        // the right to ask the gateway agent, which acts from the gateway node's network.
        Grant {
            scope: Scope::Named(&[crate::names::AGENT_CLIENT_ACCOUNT]),
            name: "causeway-operator",
            rules: &[Rule {
                api_group: CORE,
                resources: &["serviceaccounts/token"],
                verbs: &["create"],
            }],
        },
    ],
};

/// Every identity the chart grants something to.
pub const IDENTITIES: &[&Identity] = &[&CONTROLLER, &GATEWAY, &ROUTE_AGENT, &MEMBER, &VIEWER];

/// A request as RBAC sees it, parsed from the HTTP method and path of a call to the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: String,
    /// The API group, `""` for the core group.
    pub api_group: String,
    /// The resource, with `/subresource` if there is one.
    pub resource: String,
    /// The namespace, if the path names one.
    pub namespace: Option<String>,
    /// The object's name, if the path names one.
    pub name: Option<String>,
}

impl fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.api_group.is_empty() {
            write!(f, ".{}", self.api_group)?;
        }
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns:?}")?;
        }
        Ok(())
    }
}

/// Parses an API request path (`/api/v1/...` or `/apis/<group>/<version>/...`, query
/// included or not) and its HTTP method into what RBAC checks; `None` for other paths.
pub fn parse_request(method: &str, path_and_query: &str) -> Option<ApiRequest> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        other => (None, other),
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub, ..] => (*resource, Some(name.to_string()), Some(*sub)),
        [] => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(ApiRequest {
        verb: verb.to_string(),
        api_group: api_group.to_string(),
        resource: match sub {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        },
        namespace,
        name,
    })
}

/// What to tell the operator when `identity` was refused `request`: what was refused, which
/// of the chart's roles grants it (so the installed RBAC is not the chart's of this release)
/// and how to fix it.
pub fn explain_forbidden(
    identity: &Identity,
    request: &ApiRequest,
    role_namespace: &str,
    member: Option<&str>,
) -> String {
    let granting = identity.granting(request, role_namespace, member);
    match (granting, identity.holder) {
        (Some(grant), Holder::Component) => format!(
            "forbidden: {} may not {request}; the chart's {} grants it, so the RBAC installed \
             is not this release's: upgrade the release with this version's chart (helm upgrade), \
             or add the rule to that role",
            identity.what,
            grant.describe(role_namespace, member),
        ),
        (Some(grant), Holder::Person) => format!(
            "forbidden: you may not {request}; the chart's {} grants it: ask your cluster's \
             admin to bind the viewer roles to you or your group (`kubectl create \
             clusterrolebinding NAME --clusterrole=causeway-viewer-{role_namespace} --group=GROUP` \
             and `kubectl -n {role_namespace} create rolebinding NAME --role=causeway-viewer \
             --group=GROUP`)",
            grant.describe(role_namespace, member),
        ),
        (None, Holder::Component) => format!(
            "forbidden: {} may not {request}, and no role of the chart grants it: this is a bug \
             in Causeway (report it, with this line)",
            identity.what
        ),
        (None, Holder::Person) => format!(
            "forbidden: you may not {request}; the chart's viewer roles do not grant it (they \
             only read): ask your cluster's admin for that right"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_rbac_sees_them() {
        /// (verb, group, resource, namespace, name)
        type Parsed<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[(&str, &str, Option<Parsed>)] = &[
            (
                "PATCH",
                "/apis/coordination.k8s.io/v1/namespaces/causeway/leases/causeway-gateway-site-a?fieldManager=x",
                Some(("patch", "coordination.k8s.io", "leases", Some("causeway"), Some("causeway-gateway-site-a"))),
            ),
            (
                "GET",
                "/apis/causeway.dev/v1alpha1/namespaces/causeway/clusterendpoints?watch=true&resourceVersion=5",
                Some(("watch", "causeway.dev", "clusterendpoints", Some("causeway"), None)),
            ),
            (
                "GET",
                "/api/v1/namespaces/causeway/pods/gw-1:9469/proxy/verify",
                Some(("get", "", "pods/proxy", Some("causeway"), Some("gw-1:9469"))),
            ),
            (
                "GET",
                "/api/v1/nodes/site-a-gw",
                Some(("get", "", "nodes", None, Some("site-a-gw"))),
            ),
            ("GET", "/api/v1/namespaces", Some(("list", "", "namespaces", None, None))),
            (
                "GET",
                "/api/v1/namespaces/prod",
                Some(("get", "", "namespaces", None, Some("prod"))),
            ),
            (
                "PATCH",
                "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/prod/serviceexports/db/status",
                Some(("patch", "multicluster.x-k8s.io", "serviceexports/status", Some("prod"), Some("db"))),
            ),
            (
                "DELETE",
                "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices",
                Some(("deletecollection", "discovery.k8s.io", "endpointslices", Some("prod"), None)),
            ),
            ("POST", "/api/v1/namespaces/causeway/secrets", Some(("create", "", "secrets", Some("causeway"), None))),
            ("GET", "/version", None),
            ("GET", "/readyz", None),
        ];
        for (method, path, want) in cases {
            let got = parse_request(method, path)
                .map(|r| (r.verb, r.api_group, r.resource, r.namespace, r.name));
            let want = want.map(|(v, g, r, ns, n)| {
                (
                    v.to_string(),
                    g.to_string(),
                    r.to_string(),
                    ns.map(str::to_string),
                    n.map(str::to_string),
                )
            });
            assert_eq!(got, want, "{method} {path}");
        }
    }

    #[test]
    fn a_refusal_names_the_role_that_grants_it_or_says_it_is_a_bug() {
        let request = parse_request(
            "PATCH",
            "/apis/coordination.k8s.io/v1/namespaces/causeway/leases/causeway-gateway-site-a",
        )
        .unwrap();
        let text = explain_forbidden(&GATEWAY, &request, "causeway", None);
        assert!(text.contains("a gateway candidate may not patch leases.coordination.k8s.io \"causeway-gateway-site-a\" in namespace \"causeway\""), "{text}");
        assert!(
            text.contains("Role causeway-gateway (namespace causeway)"),
            "{text}"
        );
        assert!(text.contains("helm upgrade"), "{text}");

        // The same request in another namespace: a Role does not reach there.
        let elsewhere = parse_request(
            "PATCH",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x",
        )
        .unwrap();
        let text = explain_forbidden(&GATEWAY, &elsewhere, "causeway", None);
        assert!(text.contains("no role of the chart grants it"), "{text}");

        let list = parse_request(
            "GET",
            "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices",
        )
        .unwrap();
        let text = explain_forbidden(&CONTROLLER, &list, "causeway", None);
        assert!(
            text.contains("ClusterRole causeway-controller-causeway"),
            "{text}"
        );

        // A person is told who can let them in, and how.
        let proxy = parse_request(
            "GET",
            "/api/v1/namespaces/causeway/pods/gw:9469/proxy/verify",
        )
        .unwrap();
        let text = explain_forbidden(&VIEWER, &proxy, "causeway", None);
        assert!(
            text.starts_with("forbidden: you may not get pods/proxy"),
            "{text}"
        );
        assert!(text.contains("--role=causeway-viewer"), "{text}");
    }

    #[test]
    fn a_member_may_update_its_own_cluster_endpoint_and_no_other() {
        let update = |name: &str| {
            parse_request(
                "PUT",
                &format!(
                    "/apis/causeway.dev/v1alpha1/namespaces/causeway-broker/clusterendpoints/{name}"
                ),
            )
            .unwrap()
        };
        let own = MEMBER.granting(&update("site-b"), "causeway-broker", Some("site-b"));
        assert_eq!(own.map(|g| g.scope), Some(Scope::Member));
        assert!(MEMBER
            .granting(&update("site-c"), "causeway-broker", Some("site-b"))
            .is_none());
        // Without knowing which member it is, nothing name-bound is granted.
        assert!(MEMBER
            .granting(&update("site-b"), "causeway-broker", None)
            .is_none());
        let text = explain_forbidden(
            &MEMBER,
            &update("site-b"),
            "causeway-broker",
            Some("site-b"),
        );
        assert!(
            text.contains("Role causeway-member-site-b (namespace causeway-broker)"),
            "{text}"
        );
        let text = explain_forbidden(
            &MEMBER,
            &update("site-c"),
            "causeway-broker",
            Some("site-b"),
        );
        assert!(text.contains("no role of the chart grants it"), "{text}");
    }

    #[test]
    fn every_grant_is_named_as_the_chart_names_it() {
        assert_eq!(
            CONTROLLER.grants[0].object_name("causeway", None),
            "causeway-controller-causeway"
        );
        assert_eq!(
            CONTROLLER.grants[1].object_name("causeway", None),
            "causeway-controller"
        );
        assert_eq!(
            VIEWER.grants[0].object_name("ops", None),
            "causeway-viewer-ops"
        );
        assert_eq!(
            MEMBER.grants[1].object_name("causeway-broker", Some("site-b")),
            "causeway-member-site-b"
        );
        for identity in IDENTITIES {
            for grant in identity.grants {
                assert!(!grant.rules.is_empty(), "{}", grant.name);
                for rule in grant.rules {
                    assert!(!rule.verbs.is_empty() && !rule.resources.is_empty());
                }
            }
        }
    }
}
