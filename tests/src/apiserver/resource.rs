//! Resource types the server knows: which URL paths exist and how they behave.

use std::fmt;

/// Identifies a resource type: API group ("" for core), version and plural.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    /// API group; empty for the core group (`/api/v1`).
    pub group: String,
    /// API version, e.g. `v1alpha1`.
    pub version: String,
    /// Plural resource name, as in the URL path.
    pub plural: String,
}

impl Gvr {
    /// A group/version/plural triple.
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Gvr {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
        }
    }

    /// The resource type of a static `kube` type such as `ConfigMap` or a CRD struct.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Self {
        Gvr::new(&K::group(&()), &K::version(&()), &K::plural(&()))
    }

    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for Gvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.plural)
    }
}

/// How a registered resource type behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Object kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name used in URL paths.
    pub plural: String,
    /// Objects live in a namespace (`/namespaces/{ns}/{plural}`).
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores `.status`
    /// and `/status` changes nothing else.
    pub status_subresource: bool,
}

impl ResourceType {
    /// A namespaced resource type without a status subresource.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        ResourceType {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced: true,
            status_subresource: false,
        }
    }

    /// A cluster-scoped resource type without a status subresource.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        ResourceType {
            namespaced: false,
            ..Self::namespaced(group, version, kind, plural)
        }
    }

    /// The same type with a `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Its key in the store.
    pub fn gvr(&self) -> Gvr {
        Gvr::new(&self.group, &self.version, &self.plural)
    }

    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        self.gvr().api_version()
    }

    /// Singular name, as discovery reports it.
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// `plural.group` (or just `plural` for core), as in real error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The resource types every server starts with: what Causeway's controller,
/// gateways and tests read and write.
pub fn builtin() -> Vec<ResourceType> {
    vec![
        ResourceType::cluster("", "v1", "Namespace", "namespaces").with_status(),
        ResourceType::cluster("", "v1", "Node", "nodes").with_status(),
        ResourceType::namespaced("", "v1", "Service", "services").with_status(),
        // Read by `kubectl causeway verify` to find gateway pods (and their proxy).
        ResourceType::namespaced("", "v1", "Pod", "pods").with_status(),
        ResourceType::namespaced("", "v1", "Secret", "secrets"),
        ResourceType::namespaced("", "v1", "Event", "events"),
        ResourceType::namespaced("", "v1", "ConfigMap", "configmaps"),
        // kube_runtime's event recorder writes events.k8s.io/v1 Events.
        ResourceType::namespaced("events.k8s.io", "v1", "Event", "events"),
        ResourceType::namespaced("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        ResourceType::namespaced("coordination.k8s.io", "v1", "Lease", "leases"),
        ResourceType::cluster(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        )
        .with_status(),
        ResourceType::namespaced(
            "causeway.dev",
            "v1alpha1",
            "ClusterEndpoint",
            "clusterendpoints",
        )
        .with_status(),
        ResourceType::namespaced("causeway.dev", "v1alpha1", "Gateway", "gateways").with_status(),
        ResourceType::namespaced(
            "multicluster.x-k8s.io",
            "v1alpha1",
            "ServiceExport",
            "serviceexports",
        )
        .with_status(),
        ResourceType::namespaced(
            "multicluster.x-k8s.io",
            "v1alpha1",
            "ServiceImport",
            "serviceimports",
        )
        .with_status(),
    ]
}

/// The resource types a CustomResourceDefinition object declares (one per served version).
pub fn from_crd(crd: &serde_json::Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        spec["names"]["kind"].as_str(),
        spec["names"]["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let mut rt = ResourceType::namespaced(group, version, kind, plural);
            rt.namespaced = namespaced;
            rt.status_subresource = v["subresources"]["status"].is_object();
            Some(rt)
        })
        .collect()
}
