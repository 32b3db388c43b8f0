//! From an endpoints file (or mirrored ClusterEndpoints) to what this node should hold.
//!
//! Pure: the clusterset and our identity in, peers and routes out. The gateway and
//! the route agent read the same file through the same function and differ only in
//! the next hop of their routes.

use causeway_crds::manifest::{load_clusterset, ManifestError};
use causeway_crds::validate::{ClustersetCheck, Site};
use causeway_datapath::peers::{PeerSpec, RemoteGateway};
use causeway_datapath::route::{NextHop, Route};
use causeway_wire::keys::{format_key, parse_key, KeyError};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use thiserror::Error;

/// Why this node cannot use an endpoints file or its key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The endpoints file failed to parse or validate.
    #[error("endpoints file {path}: {}", list(.errors))]
    Manifest {
        /// The file.
        path: String,
        /// Every problem found.
        errors: Vec<ManifestError>,
    },
    /// The file could not be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Our own cluster has no ClusterEndpoint in the file.
    #[error("endpoints file {path}: no ClusterEndpoint has clusterID {cluster:?}, so this node's own CIDRs are unknown; add this cluster's entry (the file lists every site, this one included) or fix --cluster")]
    LocalMissing {
        /// The file.
        path: String,
        /// Our cluster ID.
        cluster: String,
    },
    /// Our private key's public half is not among our cluster's gateways.
    #[error("endpoints file {path}: ClusterEndpoint {cluster:?} lists no gateway with public key {public_key}, which is the public key of --private-key-file; put that key in this gateway's spec.gateways[].publicKey or use the matching private key")]
    KeyNotListed {
        /// The file.
        path: String,
        /// Our cluster ID.
        cluster: String,
        /// Our public key, base64.
        public_key: String,
    },
    /// A remote cluster's gateway claims our own endpoint.
    #[error("endpoints file {path}: ClusterEndpoint {cluster:?} spec.gateways[0].publicEndpoint {endpoint} is this gateway's own address; a remote cluster's gateway must be a different host — fix that cluster's entry")]
    EndpointIsLocal {
        /// The file.
        path: String,
        /// The remote cluster.
        cluster: String,
        /// The endpoint.
        endpoint: SocketAddr,
    },
    /// The route agent has no next hop.
    #[error("{path}: ClusterEndpoint {cluster:?} spec.gateways[{index}] has no privateIP, so route agents do not know where to send remote traffic; set privateIP (and privateIPs on dual-stack clusters) to the gateway node's addresses on the cluster network")]
    NoPrivateIp {
        /// Where the clusterset came from, e.g. `endpoints file /etc/causeway/endpoints.yaml`.
        path: String,
        /// Our cluster ID.
        cluster: String,
        /// Which gateway of our cluster lacks the address.
        index: usize,
    },
    /// The private key file is unusable.
    #[error("private key file {path}: {reason}")]
    PrivateKey {
        /// The file.
        path: String,
        /// What is wrong, and the fix.
        reason: String,
    },
}

fn list(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What this node should hold, derived from the clusterset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Our own cluster.
    pub local: Site,
    /// Every other cluster that has a gateway, as a datapath peer.
    pub peers: Vec<PeerSpec>,
    /// Where to probe each peer's health: its gateway's `healthCheckIP`, where it has one.
    pub health_targets: Vec<(String, IpAddr)>,
}

impl Desired {
    /// Every remote CIDR, in peer order.
    pub fn remote_cidrs(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.peers.iter().flat_map(|p| p.cidrs.iter().copied())
    }

    /// Routes for every remote CIDR that `next_hop` has a next hop for.
    pub fn routes(
        &self,
        next_hop: impl Fn(&IpNet) -> Option<NextHop>,
        mtu: Option<u32>,
        table: u32,
    ) -> Vec<Route> {
        self.remote_cidrs()
            .filter_map(|dst| {
                Some(Route {
                    next_hop: next_hop(&dst)?,
                    dst,
                    mtu,
                    table,
                })
            })
            .collect()
    }

    /// Where route agents send remote traffic: our first gateway's cluster-network
    /// addresses, at most one per family.
    ///
    /// `path` says where the clusterset came from, for the error message.
    pub fn gateway_next_hops(&self, path: &str) -> Result<Vec<IpAddr>, ConfigError> {
        self.hops_of(0, path)
    }

    /// Like [`Desired::gateway_next_hops`], but through our cluster's first gateway that is
    /// not on node `skip_node`: a passive gateway candidate must not route to itself.
    /// `Ok(None)` when the cluster lists no such gateway (yet).
    pub fn gateway_next_hops_skipping(
        &self,
        path: &str,
        skip_node: &str,
    ) -> Result<Option<Vec<IpAddr>>, ConfigError> {
        match self
            .local
            .gateways
            .iter()
            .position(|g| g.node_name != skip_node)
        {
            Some(index) => self.hops_of(index, path).map(Some),
            None => Ok(None),
        }
    }

    /// Where a route agent sends remote traffic: through `preferred` (the candidate that
    /// answers "active" on the liveness port) when our cluster lists it, else through the
    /// first gateway listed; never through `skip_node`. `Ok(None)` when there is no such gateway.
    pub fn gateway_next_hops_for(
        &self,
        path: &str,
        preferred: Option<&str>,
        skip_node: Option<&str>,
    ) -> Result<Option<Vec<IpAddr>>, ConfigError> {
        let allowed =
            |g: &&causeway_crds::validate::SiteGateway| Some(g.node_name.as_str()) != skip_node;
        let gateways = &self.local.gateways;
        let index = preferred
            .and_then(|node| {
                gateways
                    .iter()
                    .position(|g| g.node_name == node && allowed(&g))
            })
            .or_else(|| gateways.iter().position(|g| allowed(&g)));
        match index {
            Some(index) => self.hops_of(index, path).map(Some),
            None => Ok(None),
        }
    }

    fn hops_of(&self, index: usize, path: &str) -> Result<Vec<IpAddr>, ConfigError> {
        let gateway = self.local.gateways.get(index);
        let hops: Vec<IpAddr> = [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])]
            .into_iter()
            .filter_map(|family| gateway.and_then(|g| g.private_ip_for(family)))
            .collect();
        if hops.is_empty() {
            return Err(ConfigError::NoPrivateIp {
                path: path.to_owned(),
                cluster: self.local.cluster_id.clone(),
                index,
            });
        }
        Ok(hops)
    }
}

/// Who this node is: its cluster, and for a gateway its key and listen address.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Our cluster ID.
    pub cluster: String,
    /// A gateway's public key; `None` for a route agent.
    pub public_key: Option<[u8; 32]>,
    /// A gateway's UDP listen address.
    pub listen: Option<SocketAddr>,
    /// Keepalive for every peer (for gateways behind NAT).
    pub persistent_keepalive: Option<u16>,
}

/// Parses, validates and resolves an endpoints file's text for this node.
pub fn desired_from_text(text: &str, path: &str, me: &Identity) -> Result<Desired, ConfigError> {
    let check = load_clusterset(text).map_err(|errors| ConfigError::Manifest {
        path: path.to_owned(),
        errors,
    })?;
    desired_from_clusterset(&check, path, me)
}

/// Resolves a validated clusterset for this node.
pub fn desired_from_clusterset(
    check: &ClustersetCheck,
    path: &str,
    me: &Identity,
) -> Result<Desired, ConfigError> {
    let local = check
        .site(&me.cluster)
        .ok_or_else(|| ConfigError::LocalMissing {
            path: path.to_owned(),
            cluster: me.cluster.clone(),
        })?
        .clone();
    if let Some(key) = me.public_key {
        if !local.gateways.iter().any(|g| g.public_key == key) {
            return Err(ConfigError::KeyNotListed {
                path: path.to_owned(),
                cluster: me.cluster.clone(),
                public_key: format_key(&key),
            });
        }
    }
    let mut peers = Vec::new();
    let mut health_targets = Vec::new();
    for site in check.sites.iter().filter(|s| s.cluster_id != me.cluster) {
        let Some(gateway) = site.gateways.first() else {
            tracing::debug!(cluster = %site.cluster_id, "cluster has no gateway yet; not a peer");
            continue;
        };
        if me.listen == Some(gateway.public_endpoint) {
            return Err(ConfigError::EndpointIsLocal {
                path: path.to_owned(),
                cluster: site.cluster_id.clone(),
                endpoint: gateway.public_endpoint,
            });
        }
        if let Some(ip) = gateway.health_check_ip {
            health_targets.push((site.cluster_id.clone(), ip));
        }
        // Every candidate of the remote cluster is a session of its peer, so its failover
        // needs nothing from the control plane here.
        let standbys = site.gateways[1..]
            .iter()
            .filter(|g| g.public_key != gateway.public_key && me.listen != Some(g.public_endpoint))
            .map(|g| RemoteGateway {
                public_key: g.public_key,
                endpoint: Some(g.public_endpoint),
            })
            .collect();
        peers.push(PeerSpec {
            cluster_id: site.cluster_id.clone(),
            public_key: gateway.public_key,
            endpoint: Some(gateway.public_endpoint),
            standbys,
            cidrs: site.cidrs().copied().collect(),
            persistent_keepalive: me.persistent_keepalive,
        });
    }
    Ok(Desired {
        local,
        peers,
        health_targets,
    })
}

/// Reads a WireGuard private key file, refusing one that other users can read.
pub fn load_private_key(path: &Path) -> Result<[u8; 32], ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        what: "private key file",
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::PrivateKey {
            path: shown,
            reason: format!(
                "mode {mode:o} lets other users read the key; run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "private key file",
        path: shown.clone(),
        source,
    })?;
    parse_key(&text).map_err(|e: KeyError| ConfigError::PrivateKey {
        path: shown,
        // The key itself is never echoed: it is a secret.
        reason: format!(
            "the content {e}; write the output of `causeway-gateway genkey` (or `wg genkey`) to it"
        ),
    })
}

#[cfg(test)]
mod tests;
