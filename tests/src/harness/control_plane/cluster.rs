//! A single real cluster for tests of one component against the Kubernetes API: its own
//! network namespace, etcd, kube-apiserver and kube-controller-manager, with the chart
//! installed as a member or as the broker, and the credentials the chart gives each
//! component. Several start at once with [`TestCluster::start_all`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{json, Value};

use super::apiserver::{ApiServerSpec, Credentials, KubeApiServer};
use super::install::{self, CONTROLLER_ACCOUNT, GATEWAY_ACCOUNT, RELEASE_NAMESPACE};
use super::Etcd;
use crate::harness::netns::Netns;
use crate::harness::{io_context, HarnessError, ScratchDir};

/// The namespace of the broker's objects.
pub const BROKER_NAMESPACE: &str = "causeway-broker";

/// What a [`TestCluster`] is.
#[derive(Debug, Clone)]
pub enum ClusterKind {
    /// A member cluster with cluster ID `id`, pod CIDRs and service CIDRs as given.
    Member {
        /// Its cluster ID.
        id: String,
        /// Its pod CIDRs (the chart's `cidrs.pods`).
        pod_cidrs: Vec<String>,
        /// Its service CIDRs (the chart's `cidrs.services`, its API server's service range).
        service_cidrs: Vec<String>,
    },
    /// The broker, with credentials for `members`.
    Broker {
        /// The member cluster IDs it prepares credentials for.
        members: Vec<String>,
    },
}

impl ClusterKind {
    /// A member `id` whose pod and service CIDRs are `10.<n>.0.0/16` and `10.1<n>.0.0/16`
    /// (`n` in 1..=99, e.g. 1 for site-a as the tests' specs have it).
    pub fn member(id: &str, n: u8) -> ClusterKind {
        ClusterKind::Member {
            id: id.to_string(),
            pod_cidrs: vec![format!("10.{n}.0.0/16")],
            service_cidrs: vec![format!("10.{}.0.0/16", 100 + u16::from(n))],
        }
    }

    /// The broker for `members`.
    pub fn broker(members: &[&str]) -> ClusterKind {
        ClusterKind::Broker {
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn name(&self) -> String {
        match self {
            ClusterKind::Member { id, .. } => id.clone(),
            ClusterKind::Broker { .. } => "broker".into(),
        }
    }

    fn values(&self) -> Value {
        match self {
            ClusterKind::Member {
                id,
                pod_cidrs,
                service_cidrs,
            } => json!({
                "clusterID": id,
                "cidrs": {"pods": pod_cidrs, "services": service_cidrs},
                "brokerConnection": {"namespace": BROKER_NAMESPACE},
            }),
            ClusterKind::Broker { members } => json!({
                "broker": {"enabled": true, "namespace": BROKER_NAMESPACE, "clusters": members},
                "controller": {"enabled": false},
                "gateway": {"enabled": false},
                "routeAgent": {"enabled": false},
            }),
        }
    }

    fn service_cidrs(&self) -> Vec<String> {
        match self {
            ClusterKind::Member { service_cidrs, .. } => service_cidrs.clone(),
            ClusterKind::Broker { .. } => vec!["10.99.0.0/16".into()],
        }
    }
}

/// A real cluster of its own; see the module docs. Dropping it stops everything: fields
/// drop in order, the API server before etcd, both before the namespace.
pub struct TestCluster {
    kind: ClusterKind,
    /// Credentials minted so far, by who holds them: minted once, so they outlive an outage.
    credentials: std::sync::Mutex<std::collections::BTreeMap<String, Credentials>>,
    server: KubeApiServer,
    _etcd: Etcd,
    netns: Netns,
    _dir: ScratchDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kind", &self.kind)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Distinct advertise addresses for the clusters of one test process.
static NEXT_HOST: AtomicU8 = AtomicU8::new(1);

impl TestCluster {
    /// Starts one cluster and installs the chart in it.
    pub fn start(kind: ClusterKind) -> Result<TestCluster, HarnessError> {
        let dir = ScratchDir::new(&format!("cw-{}-", kind.name()))
            .map_err(io_context("scratch directory for a cluster"))?;
        let netns = Netns::new(&format!("k8s-{}", kind.name().replace('-', "")))
            .map_err(io_context("namespace for a cluster"))?;
        let host = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
        let advertise = IpAddr::V4(Ipv4Addr::new(198, 19, 254, host));
        let net =
            ipnet::IpNet::new(advertise, 32).map_err(|e| HarnessError::Topology(e.to_string()))?;
        netns
            .add_addr("lo", net)
            .map_err(io_context("the API server's address"))?;
        let etcd = Etcd::start(&netns, dir.path())?;
        let service_cidrs = kind
            .service_cidrs()
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| HarnessError::Topology(format!("{c}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = ApiServerSpec {
            name: kind.name(),
            advertise,
            service_cidrs,
            dir: dir.path().join("control-plane"),
        };
        let server = KubeApiServer::start(spec, &netns, &etcd)?;
        install::install(&server, &kind.values(), RELEASE_NAMESPACE)?;
        Ok(TestCluster {
            kind,
            credentials: Default::default(),
            server,
            _etcd: etcd,
            netns,
            _dir: dir,
        })
    }

    /// Starts every cluster of `kinds` at once (their API servers start in parallel), in order.
    pub fn start_all(kinds: &[ClusterKind]) -> Result<Vec<TestCluster>, HarnessError> {
        std::thread::scope(|scope| {
            let started: Vec<_> = kinds
                .iter()
                .map(|kind| scope.spawn(move || TestCluster::start(kind.clone())))
                .collect();
            started
                .into_iter()
                .map(|handle| match handle.join() {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    /// The API server.
    pub fn server(&self) -> &KubeApiServer {
        &self.server
    }

    /// The namespace the control plane runs in.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// A client configuration as cluster-admin (the test's own), default namespace `namespace`.
    pub fn admin_config(&self, namespace: &str) -> kube::Config {
        self.server.admin_config(namespace)
    }

    /// Credentials of the chart's controller ServiceAccount.
    pub fn controller(&self) -> Result<Credentials, HarnessError> {
        self.minted("controller", || {
            install::account_token(&self.server, RELEASE_NAMESPACE, CONTROLLER_ACCOUNT)
        })
    }

    /// Credentials of the chart's gateway ServiceAccount (candidates and route agents).
    pub fn gateway(&self) -> Result<Credentials, HarnessError> {
        self.minted("gateway", || {
            install::account_token(&self.server, RELEASE_NAMESPACE, GATEWAY_ACCOUNT)
        })
    }

    /// Credentials of member `id` at this broker (its token Secret).
    pub fn member(&self, id: &str) -> Result<Credentials, HarnessError> {
        self.minted(&format!("member {id}"), || {
            install::secret_token(
                &self.server,
                BROKER_NAMESPACE,
                &format!("causeway-member-{id}-token"),
            )
        })
    }

    fn minted(
        &self,
        who: &str,
        mint: impl FnOnce() -> Result<Credentials, HarnessError>,
    ) -> Result<Credentials, HarnessError> {
        let mut minted = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(credentials) = minted.get(who) {
            return Ok(credentials.clone());
        }
        let credentials = mint()?;
        minted.insert(who.to_string(), credentials.clone());
        Ok(credentials)
    }

    /// What cluster `id`'s controller acts with here: the chart's controller ServiceAccount
    /// in a member cluster, member `id`'s token at the broker.
    pub fn controller_credentials(&self, id: &str) -> Result<Credentials, HarnessError> {
        match self.kind {
            ClusterKind::Member { .. } => self.controller(),
            ClusterKind::Broker { .. } => self.member(id),
        }
    }

    /// What this cluster is.
    pub fn kind(&self) -> &ClusterKind {
        &self.kind
    }

    /// Credentials of a person bound to the chart's viewer roles.
    pub fn viewer(&self) -> Result<Credentials, HarnessError> {
        install::bind_viewer(&self.server, RELEASE_NAMESPACE)
    }

    /// A client configuration with `credentials`, reaching the server from the test's own
    /// namespace, default namespace `namespace`.
    pub fn config(&self, credentials: &Credentials, namespace: &str) -> kube::Config {
        self.server
            .config(&self.server.url(), credentials, namespace)
    }

    /// Writes a kubeconfig with `credentials` for a process in the test's own namespace.
    pub fn write_kubeconfig(
        &self,
        path: &std::path::Path,
        credentials: &Credentials,
        namespace: &str,
    ) -> Result<(), HarnessError> {
        self.server
            .write_kubeconfig(path, &self.server.url(), credentials, namespace)
    }
}
