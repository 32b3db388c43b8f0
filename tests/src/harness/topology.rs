//! The multi-site world: per site one or two gateway candidate nodes, a worker
//! node and a pod, the candidates joined by a WAN bridge.
//!
//! ```text
//!   wan ns: br-wan ─┬─ wan-a  ══ wan0  (198.18.0.1/24, fd18::1/64)     site-a-gw (candidate 0)
//!                   │             node0 (198.19.1.1/24, fd00:ffff:1::1/64)
//!                   │               ║
//!                   │   worker:   cand0 ─┐
//!                   │                    br-node (198.19.1.2/24, fd00:ffff:1::2/64)
//!                   │             cand1 ─┘
//!                   │               ║     pod0 (10.1.1.1/24, fd00:1:0:1::1/64)
//!                   │               ║       ║
//!                   │               ║     eth0 (10.1.1.10/24, fd00:1:0:1::10/64)   pod
//!                   │             node0 (198.19.1.3/24, fd00:ffff:1::3/64)
//!                   ├─ wan-a2 ══ wan0  (198.18.0.101/24, fd18::65/64)  site-a-gw2 (candidate 1, if asked for)
//!                   └─ wan-b  ══ wan0  (198.18.0.2/24, fd18::2/64)     site-b-gw ...
//! ```
//!
//! The node network is a bridge in the worker's namespace, as a node subnet is
//! one L2 segment: every candidate reaches the worker and every other candidate.
//! Only the links, addresses and routes a Kubernetes node would already have
//! are set up; every route that Causeway is responsible for is left to it.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::confine::Confinement;
use super::netns::{veth, Netns, Profile};
use super::process::ChildGuard;
use super::{io_context, HarnessError, ScratchDir};

/// Name of the gateway binary built by this workspace.
pub const GATEWAY_BINARY: &str = "causeway-gateway";
/// UDP port gateways listen on for WireGuard.
pub const GATEWAY_PORT: u16 = 51820;
/// Where gateways and route agents serve metrics, on loopback inside their own namespace.
pub const METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9469);
/// The bridge in the WAN namespace that all gateways' underlay links join.
pub const WAN_BRIDGE: &str = "br-wan";
/// The gateway node's underlay (WAN) interface.
pub const GATEWAY_WAN_IF: &str = "wan0";
/// The node-network interface of each gateway candidate node.
pub const NODE_IF: &str = "node0";
/// The node network: a bridge in the worker namespace, holding the worker's node address.
pub const NODE_BRIDGE: &str = "br-node";
/// The most gateway candidates a site can have.
pub const MAX_CANDIDATES: usize = 2;
/// The worker's side of the pod's veth.
pub const WORKER_POD_IF: &str = "pod0";
/// The pod's interface.
pub const POD_IF: &str = "eth0";
/// The most sites a clusterset can have: cluster IDs run `site-a` to `site-z`.
pub const MAX_SITES: usize = 26;

/// The addresses and names of one site, computed from its 1-based index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SiteSpec {
    index: u8,
}

impl SiteSpec {
    /// The spec of site number `index` (1-based, at most [`MAX_SITES`]).
    pub fn new(index: usize) -> Result<SiteSpec, HarnessError> {
        match u8::try_from(index) {
            Ok(i) if (1..=MAX_SITES).contains(&index) => Ok(SiteSpec { index: i }),
            _ => Err(HarnessError::Topology(format!(
                "site index {index} is out of range 1..={MAX_SITES}"
            ))),
        }
    }

    /// The 1-based site number.
    pub fn index(&self) -> usize {
        usize::from(self.index)
    }

    /// The site's letter: `a` for site 1.
    pub fn letter(&self) -> char {
        char::from(b'a' + self.index - 1)
    }

    /// The cluster ID: `site-a`, `site-b`, ...
    pub fn cluster_id(&self) -> String {
        format!("site-{}", self.letter())
    }

    /// The names and addresses of gateway candidate `k` (0 is the gateway node).
    ///
    /// Panics unless `k < MAX_CANDIDATES`: candidates are few and fixed.
    pub fn candidate(&self, k: usize) -> CandidateSpec {
        match u8::try_from(k) {
            Ok(k8) if k < MAX_CANDIDATES => CandidateSpec { site: *self, k: k8 },
            _ => panic!("gateway candidate {k} is out of range 0..{MAX_CANDIDATES}"),
        }
    }

    /// The Kubernetes node name of the gateway node (candidate 0).
    pub fn gateway_node_name(&self) -> String {
        self.candidate(0).node_name()
    }

    /// The Kubernetes node name of the worker node.
    pub fn worker_node_name(&self) -> String {
        format!("{}-worker", self.cluster_id())
    }

    /// The cluster's pod CIDRs: `10.i.0.0/16` and `fd00:i::/48`.
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        vec![
            net4(Ipv4Addr::new(10, self.index, 0, 0), 16),
            net6(
                Ipv6Addr::new(0xfd00, self.index.into(), 0, 0, 0, 0, 0, 0),
                48,
            ),
        ]
    }

    /// The cluster's service CIDRs: `10.(100+i).0.0/16`.
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        vec![net4(Ipv4Addr::new(10, 100 + self.index, 0, 0), 16)]
    }

    /// The gateway's public (underlay) address: `198.18.0.i`.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.candidate(0).underlay_ip()
    }

    /// The gateway's underlay interface address, `198.18.0.i/24`.
    pub fn underlay_net(&self) -> IpNet {
        net4(self.underlay_ip(), 24)
    }

    /// The `ip:port` peers dial to reach this site's gateway.
    pub fn public_endpoint(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.underlay_ip().into(), port)
    }

    /// The gateway's own address inside the tunnel (its `healthCheckIP`): `10.i.0.1`.
    pub fn gateway_tunnel_ip(&self) -> Ipv4Addr {
        self.candidate(0).health_check_ip()
    }

    /// The gateway's IPv6 underlay address: `fd18::i`, a ULA that exists only on the test's WAN.
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        self.candidate(0).underlay_ip6()
    }

    /// The gateway's IPv6 underlay interface address, `fd18::i/64`.
    pub fn underlay_net6(&self) -> IpNet {
        net6(self.underlay_ip6(), 64)
    }

    /// The gateway node's address on the node network: `198.19.i.1`.
    pub fn gateway_node_ip(&self) -> Ipv4Addr {
        self.candidate(0).node_ip()
    }

    /// The worker node's address on the node network (on [`NODE_BRIDGE`]): `198.19.i.2`.
    pub fn worker_node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.index, 2)
    }

    /// The gateway node's IPv6 address on the node network: `fd00:ffff:i::1`.
    pub fn gateway_node_ip6(&self) -> Ipv6Addr {
        self.candidate(0).node_ip6()
    }

    /// The worker node's IPv6 address on the node network: `fd00:ffff:i::2`.
    pub fn worker_node_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xffff, self.index.into(), 0, 0, 0, 0, 2)
    }

    /// The pod subnets the worker hosts: `10.i.1.0/24` and `fd00:i:0:1::/64`.
    pub fn worker_pod_subnets(&self) -> Vec<IpNet> {
        vec![
            net4(Ipv4Addr::new(10, self.index, 1, 0), 24),
            net6(
                Ipv6Addr::new(0xfd00, self.index.into(), 0, 1, 0, 0, 0, 0),
                64,
            ),
        ]
    }

    /// The worker's address facing the pod, the pod's IPv4 gateway: `10.i.1.1`.
    pub fn worker_pod_gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 1, 1)
    }

    /// The worker's IPv6 address facing the pod, the pod's IPv6 gateway: `fd00:i:0:1::1`.
    pub fn worker_pod_gateway_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.index.into(), 0, 1, 0, 0, 0, 1)
    }

    /// The pod's IPv4 address: `10.i.1.10`.
    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 1, 10)
    }

    /// The pod's IPv6 address: `fd00:i:0:1::10`.
    pub fn pod_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.index.into(), 0, 1, 0, 0, 0, 0x10)
    }

    /// This site's `ClusterEndpoint` manifest, one YAML document without a `---` separator.
    pub fn cluster_endpoint_yaml(&self, public_key_b64: &str, listen_port: u16) -> String {
        self.cluster_endpoint_yaml_at(public_key_b64, self.public_endpoint(listen_port))
    }

    /// Like [`SiteSpec::cluster_endpoint_yaml`], with the gateway reached at `endpoint`.
    pub fn cluster_endpoint_yaml_at(&self, public_key_b64: &str, endpoint: SocketAddr) -> String {
        let quoted = |nets: Vec<IpNet>| {
            nets.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "apiVersion: causeway.dev/v1alpha1\n\
             kind: ClusterEndpoint\n\
             metadata:\n  name: {id}\n\
             spec:\n  clusterID: {id}\n  podCIDRs: [{pods}]\n  serviceCIDRs: [{services}]\n  \
             gateways:\n    - nodeName: {node}\n      publicEndpoint: \"{public}\"\n      \
             publicKey: \"{key}\"\n      privateIP: \"{private}\"\n      \
             privateIPs: [\"{private}\", \"{private6}\"]\n      \
             healthCheckIP: \"{health}\"\n",
            id = self.cluster_id(),
            pods = quoted(self.pod_cidrs()),
            services = quoted(self.service_cidrs()),
            node = self.gateway_node_name(),
            public = endpoint,
            key = public_key_b64,
            private = self.gateway_node_ip(),
            private6 = self.gateway_node_ip6(),
            health = self.gateway_tunnel_ip(),
        )
    }
}

/// Joins several sites' `ClusterEndpoint` manifests, each with its gateway's public key, into one multi-document file body.
pub fn cluster_endpoints_yaml(sites: &[(&SiteSpec, &str)], listen_port: u16) -> String {
    sites
        .iter()
        .map(|(spec, key)| format!("---\n{}", spec.cluster_endpoint_yaml(key, listen_port)))
        .collect()
}

/// The names and addresses of one gateway candidate node of a site; see [`SiteSpec::candidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CandidateSpec {
    site: SiteSpec,
    k: u8,
}

impl CandidateSpec {
    /// The site this candidate belongs to.
    pub fn site(&self) -> SiteSpec {
        self.site
    }

    /// The candidate's number within its site, from 0.
    pub fn k(&self) -> usize {
        usize::from(self.k)
    }

    /// The Kubernetes node name: `site-X-gw` for candidate 0, `site-X-gw2` for candidate 1.
    pub fn node_name(&self) -> String {
        match self.k {
            0 => format!("{}-gw", self.site.cluster_id()),
            k => format!("{}-gw{}", self.site.cluster_id(), k + 1),
        }
    }

    /// The public (underlay) address: `198.18.0.i` for candidate 0, `198.18.0.(100+i)` for 1.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, self.underlay_host())
    }

    /// The underlay interface address, [`CandidateSpec::underlay_ip`]`/24`.
    pub fn underlay_net(&self) -> IpNet {
        net4(self.underlay_ip(), 24)
    }

    /// The IPv6 underlay address: `fd18::i`, or `fd18::(100+i)` (written in hex, `fd18::65` for site a) for candidate 1.
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, self.underlay_host().into())
    }

    /// The IPv6 underlay interface address, [`CandidateSpec::underlay_ip6`]`/64`.
    pub fn underlay_net6(&self) -> IpNet {
        net6(self.underlay_ip6(), 64)
    }

    /// The `ip:port` peers dial to reach this candidate over the IPv4 underlay.
    pub fn public_endpoint(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.underlay_ip().into(), port)
    }

    /// The address on the node network: `198.19.i.1` for candidate 0, `198.19.i.3` for 1
    /// (`.2` is the worker's).
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.site.index, self.node_host())
    }

    /// The IPv6 address on the node network: `fd00:ffff:i::1`, or `fd00:ffff:i::3` for candidate 1.
    pub fn node_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0xffff,
            self.site.index.into(),
            0,
            0,
            0,
            0,
            self.node_host().into(),
        )
    }

    /// The node-network interface addresses, v4 then v6.
    pub fn node_nets(&self) -> [IpNet; 2] {
        [net4(self.node_ip(), 24), net6(self.node_ip6(), 64)]
    }

    /// The candidate's own address inside the tunnel (its `healthCheckIP`): `10.i.0.(1+k)`.
    pub fn health_check_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.site.index, 0, 1 + self.k)
    }

    /// The node's `spec.podCIDRs`: `10.i.0.0/24` + `fd00:i::/64` for candidate 0,
    /// `10.i.2.0/24` + `fd00:i:0:2::/64` for candidate 1 (the worker has `10.i.1.0/24`).
    pub fn node_pod_cidrs(&self) -> Vec<IpNet> {
        let third = if self.k == 0 { 0 } else { self.k + 1 };
        vec![
            net4(Ipv4Addr::new(10, self.site.index, third, 0), 24),
            net6(
                Ipv6Addr::new(0xfd00, self.site.index.into(), 0, third.into(), 0, 0, 0, 0),
                64,
            ),
        ]
    }

    /// The role part of the candidate's namespace name: `X-gw`, `X-gw2`.
    fn namespace_role(&self) -> String {
        match self.k {
            0 => format!("{}-gw", self.site.letter()),
            k => format!("{}-gw{}", self.site.letter(), k + 1),
        }
    }

    /// The candidate's port on the WAN bridge: `wan-X`, `wan-X2`.
    fn wan_port(&self) -> String {
        match self.k {
            0 => format!("wan-{}", self.site.letter()),
            k => format!("wan-{}{}", self.site.letter(), k + 1),
        }
    }

    /// The candidate's port on the worker's node bridge: `cand0`, `cand1`.
    fn bridge_port(&self) -> String {
        format!("cand{}", self.k)
    }

    fn underlay_host(&self) -> u8 {
        // Candidate 1 sits 100 above, so no two sites' candidates collide (i <= 26).
        self.site.index + 100 * self.k
    }

    fn node_host(&self) -> u8 {
        // .2 is the worker's, so candidate 1 takes .3.
        match self.k {
            0 => 1,
            k => k + 2,
        }
    }
}

fn net4(addr: Ipv4Addr, prefix: u8) -> IpNet {
    // Prefixes here are literals no greater than 32.
    IpNet::V4(Ipv4Net::new(addr, prefix).expect("IPv4 prefix length <= 32"))
}

fn net6(addr: Ipv6Addr, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(addr, prefix).expect("IPv6 prefix length <= 128"))
}

/// One site: its namespaces and a scratch directory for keys, endpoint files and logs.
#[derive(Debug)]
pub struct Site {
    /// Names and addresses of this site.
    pub spec: SiteSpec,
    /// The pod behind the worker.
    pub pod: Netns,
    /// The worker node, where the route agent runs; it holds the node bridge.
    pub worker: Netns,
    /// The gateway node (candidate 0), where the gateway runs.
    pub gateway: Netns,
    /// Gateway candidates after the first, if the world was built with them.
    more_candidates: Vec<Netns>,
    dir: ScratchDir,
}

impl Site {
    fn build(spec: SiteSpec, wan: &Netns, n_candidates: usize) -> Result<Site, HarnessError> {
        let l = spec.letter();
        let context = |what: &str| format!("{}: {what}", spec.cluster_id());
        let namespace = |k: usize| {
            Netns::with_profile(&spec.candidate(k).namespace_role(), Profile::Node).map_err(
                io_context(context(&format!("gateway candidate {k} namespace"))),
            )
        };
        let mut site = Site {
            spec,
            gateway: namespace(0)?,
            more_candidates: Vec::new(),
            worker: Netns::with_profile(&format!("{l}-wk"), Profile::Node)
                .map_err(io_context(context("worker namespace")))?,
            pod: Netns::new(&format!("{l}-pod")).map_err(io_context(context("pod namespace")))?,
            dir: ScratchDir::new(&format!("cw-{}-", spec.cluster_id()))
                .map_err(io_context(context("scratch directory")))?,
        };
        for k in 1..n_candidates {
            // Pushed one by one so a failure half-way still drops what exists.
            let ns = namespace(k)?;
            site.more_candidates.push(ns);
        }

        site.worker
            .bridge(NODE_BRIDGE)
            .map_err(io_context(context("node bridge")))?;
        for k in 0..n_candidates {
            site.wire_candidate(spec.candidate(k), wan)?;
        }
        // Addressed once every port is attached: the bridge takes its MAC from
        // its ports, and nobody should have cached an earlier one.
        site.worker
            .add_addr(NODE_BRIDGE, net4(spec.worker_node_ip(), 24))
            .and_then(|()| {
                site.worker
                    .add_addr(NODE_BRIDGE, net6(spec.worker_node_ip6(), 64))
            })
            .map_err(io_context(context("worker node address")))?;

        veth(
            &site.worker,
            WORKER_POD_IF,
            [
                net4(spec.worker_pod_gateway_ip(), 24),
                net6(spec.worker_pod_gateway_ip6(), 64),
            ],
            &site.pod,
            POD_IF,
            [net4(spec.pod_ip(), 24), net6(spec.pod_ip6(), 64)],
        )
        .and_then(|()| {
            site.pod.add_route(
                net4(Ipv4Addr::UNSPECIFIED, 0),
                spec.worker_pod_gateway_ip().into(),
            )
        })
        .and_then(|()| {
            site.pod.add_route(
                net6(Ipv6Addr::UNSPECIFIED, 0),
                spec.worker_pod_gateway_ip6().into(),
            )
        })
        .map_err(io_context(context("pod network")))?;
        Ok(site)
    }

    /// Links candidate `c` to the WAN and the node bridge, with the routes the CNI would give it.
    fn wire_candidate(&self, c: CandidateSpec, wan: &Netns) -> Result<(), HarnessError> {
        let spec = self.spec;
        let context = |what: &str| format!("{} candidate {}: {what}", spec.cluster_id(), c.k());
        let ns = self.candidate(c.k()).ok_or_else(|| {
            HarnessError::Topology(format!("{} has no candidate {}", spec.cluster_id(), c.k()))
        })?;
        let wan_port = c.wan_port();
        veth(
            wan,
            &wan_port,
            None,
            ns,
            GATEWAY_WAN_IF,
            [c.underlay_net(), c.underlay_net6()],
        )
        .and_then(|()| wan.attach_to_bridge(&wan_port, WAN_BRIDGE))
        .map_err(io_context(context("WAN link")))?;

        let port = c.bridge_port();
        veth(ns, NODE_IF, c.node_nets(), &self.worker, &port, None)
            .and_then(|()| self.worker.attach_to_bridge(&port, NODE_BRIDGE))
            .map_err(io_context(context("node network")))?;

        // What the CNI would have done: the gateway node knows where the
        // worker's pods are.
        let [pods4, pods6] = <[IpNet; 2]>::try_from(spec.worker_pod_subnets()).map_err(|_| {
            HarnessError::Topology("worker has one v4 and one v6 pod subnet".into())
        })?;
        ns.add_route(pods4, spec.worker_node_ip().into())
            .and_then(|()| ns.add_route(pods6, spec.worker_node_ip6().into()))
            .map_err(io_context(context("routes to worker pods")))?;
        Ok(())
    }

    /// Every gateway candidate's namespace, candidate 0 ([`Site::gateway`]) first.
    pub fn candidates(&self) -> Vec<&Netns> {
        std::iter::once(&self.gateway)
            .chain(&self.more_candidates)
            .collect()
    }

    /// Gateway candidate `k`'s namespace, if the site has it.
    pub fn candidate(&self, k: usize) -> Option<&Netns> {
        match k {
            0 => Some(&self.gateway),
            k => self.more_candidates.get(k - 1),
        }
    }

    /// The site's scratch directory (kept when a test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `causeway-gateway standalone` in the gateway namespace, logging to `gateway.log` in [`Site::dir`].
    pub fn start_gateway(&self, endpoints: &Path, key_file: &Path) -> io::Result<ChildGuard> {
        self.start_gateway_at(
            endpoints,
            key_file,
            self.spec.public_endpoint(GATEWAY_PORT),
            &[],
        )
    }

    /// Like [`Site::start_gateway`], listening on `listen` (e.g. the IPv6 underlay), with extra environment.
    pub fn start_gateway_at(
        &self,
        endpoints: &Path,
        key_file: &Path,
        listen: SocketAddr,
        env: &[(String, String)],
    ) -> io::Result<ChildGuard> {
        let mut cmd = gateway_command()?;
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.arg("standalone")
            .arg("--cluster")
            .arg(self.spec.cluster_id())
            .arg("--private-key-file")
            .arg(key_file)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--metrics-addr")
            .arg(METRICS_ADDR.to_string());
        spawn_datapath(&self.gateway, &cmd, &self.dir().join("gateway.log"))
    }

    /// Starts `causeway-gateway route-agent` in the worker namespace, logging to `route-agent.log` in [`Site::dir`].
    pub fn start_route_agent(&self, endpoints: &Path) -> io::Result<ChildGuard> {
        let mut cmd = gateway_command()?;
        cmd.arg("route-agent")
            .arg("--cluster")
            .arg(self.spec.cluster_id())
            .arg("--endpoints")
            .arg(endpoints)
            .arg("--metrics-addr")
            .arg(METRICS_ADDR.to_string());
        spawn_datapath(&self.worker, &cmd, &self.dir().join("route-agent.log"))
    }

    /// Generates a gateway key pair with `causeway-gateway genkey`/`pubkey`; the private key goes to `gateway.key` (mode 0600) in [`Site::dir`].
    ///
    /// Returns the key file's path and the base64 public key.
    pub fn write_gateway_key(&self) -> Result<(PathBuf, String), HarnessError> {
        let binary = find_workspace_binary(GATEWAY_BINARY)?;
        let private = capture(Command::new(&binary).arg("genkey"), None)?;
        let public = capture(
            Command::new(&binary).arg("pubkey"),
            Some(private.as_bytes()),
        )?;
        let path = self.dir().join("gateway.key");
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&path)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(private.as_bytes())
        };
        write().map_err(io_context(format!("write {}", path.display())))?;
        Ok((path, public.trim().to_string()))
    }
}

/// Starts a gateway or route agent `cmd` in `ns` as the chart's DaemonSets run it
/// (see [`Confinement::chart_datapath`]), logging to `log`.
pub(crate) fn spawn_datapath(ns: &Netns, cmd: &Command, log: &Path) -> io::Result<ChildGuard> {
    ns.spawn_logged(&mut Confinement::chart_datapath().wrap(cmd), log)
}

/// A command for the gateway binary of this build, logging at `info`.
pub(crate) fn gateway_command() -> io::Result<Command> {
    let binary = find_workspace_binary(GATEWAY_BINARY).map_err(io::Error::other)?;
    let mut cmd = Command::new(binary);
    cmd.env("RUST_LOG", "info");
    Ok(cmd)
}

fn capture(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, HarnessError> {
    let line = format!("{:?}", cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_context(format!("spawn {line}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default())
            .map_err(io_context(format!("write stdin of {line}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(io_context(format!("wait for {line}")))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A whole test world: the WAN namespace and `n` sites, torn down in reverse on drop.
#[derive(Debug)]
pub struct Clusterset {
    processes: Vec<ChildGuard>,
    sites: Vec<Site>,
    wan: Netns,
}

impl Clusterset {
    /// Builds the WAN bridge and `n_sites` sites (`site-a`, `site-b`, ...), one gateway node each.
    pub fn new(n_sites: usize) -> Result<Clusterset, HarnessError> {
        Self::with_candidates(n_sites, 1)
    }

    /// Like [`Clusterset::new`], with `n_candidates` (1..=[`MAX_CANDIDATES`]) gateway candidate nodes per site.
    pub fn with_candidates(
        n_sites: usize,
        n_candidates: usize,
    ) -> Result<Clusterset, HarnessError> {
        if !(1..=MAX_SITES).contains(&n_sites) {
            return Err(HarnessError::Topology(format!(
                "a clusterset has 1..={MAX_SITES} sites, not {n_sites}"
            )));
        }
        if !(1..=MAX_CANDIDATES).contains(&n_candidates) {
            return Err(HarnessError::Topology(format!(
                "a site has 1..={MAX_CANDIDATES} gateway candidates, not {n_candidates}"
            )));
        }
        let wan =
            Netns::with_profile("wan", Profile::Router).map_err(io_context("WAN namespace"))?;
        wan.bridge(WAN_BRIDGE).map_err(io_context("WAN bridge"))?;
        // Built inside the guard so a failure half-way tears down what exists.
        let mut set = Clusterset {
            processes: Vec::new(),
            sites: Vec::with_capacity(n_sites),
            wan,
        };
        for index in 1..=n_sites {
            let site = Site::build(SiteSpec::new(index)?, &set.wan, n_candidates)?;
            set.sites.push(site);
        }
        Ok(set)
    }

    /// The namespace holding the WAN bridge.
    pub fn wan(&self) -> &Netns {
        &self.wan
    }

    /// All sites, in order `site-a`, `site-b`, ...
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The site with this cluster ID.
    pub fn site(&self, cluster_id: &str) -> Option<&Site> {
        self.sites
            .iter()
            .find(|s| s.spec.cluster_id() == cluster_id)
    }

    /// Keeps `child` until the clusterset is dropped, and stops it before any namespace goes.
    pub fn adopt(&mut self, child: ChildGuard) -> &mut ChildGuard {
        self.processes.push(child);
        let last = self.processes.len() - 1;
        &mut self.processes[last]
    }

    /// The processes adopted so far, for log tails in failure messages.
    pub fn processes(&mut self) -> &mut [ChildGuard] {
        &mut self.processes
    }

    /// Names of every namespace in this world.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![self.wan.name().to_string()];
        for site in &self.sites {
            for ns in site
                .candidates()
                .into_iter()
                .chain([&site.worker, &site.pod])
            {
                names.push(ns.name().to_string());
            }
        }
        names
    }
}

impl Drop for Clusterset {
    fn drop(&mut self) {
        // Processes hold namespaces open, so they go first; then the world is
        // dismantled from the edge inwards: pods, workers, gateways, WAN.
        self.processes.clear();
        let mut pods = Vec::new();
        let mut workers = Vec::new();
        let mut gateways = Vec::new();
        let mut dirs = Vec::new();
        for site in std::mem::take(&mut self.sites) {
            let Site {
                pod,
                worker,
                gateway,
                more_candidates,
                dir,
                spec: _,
            } = site;
            pods.push(pod);
            workers.push(worker);
            gateways.push(gateway);
            gateways.extend(more_candidates);
            dirs.push(dir);
        }
        drop(pods);
        drop(workers);
        drop(gateways);
        // The WAN namespace is a field and is dropped after this function.
    }
}

/// Fetches `/metrics` from `addr` over a TCP connection opened inside `ns`.
pub fn fetch_metrics(ns: &Netns, addr: SocketAddr) -> Result<String, HarnessError> {
    match http_get(ns, addr, "/metrics")? {
        (200, body) => Ok(body),
        (status, body) => Err(HarnessError::Http {
            url: format!("http://{addr}/metrics (in {})", ns.name()),
            reason: format!("status {status}: {:?}", truncate(&body, 200)),
        }),
    }
}

/// A blocking HTTP/1.0 `GET path` to `addr` over a TCP connection opened inside `ns`:
/// the status code and the body, whatever the status.
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<(u16, String), HarnessError> {
    http_get_with(ns, addr, path, &[])
}

/// [`http_get`] with extra request `headers`.
pub fn http_get_with(
    ns: &Netns,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), HarnessError> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let url = format!("http://{addr}{path} (in {})", ns.name());
    let http = |reason: String| HarnessError::Http {
        url: url.clone(),
        reason,
    };
    let response = ns
        .try_run(|| -> io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            // HTTP/1.0 so the server closes the connection after one answer
            // and reading to the end is reading the whole response.
            write!(
                stream,
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
            )?;
            let mut body = Vec::new();
            stream.read_to_end(&mut body)?;
            Ok(body)
        })
        .map_err(|e| http(e.to_string()))?
        .map_err(|e| http(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        http(format!(
            "no header/body separator in {:?}",
            truncate(&text, 200)
        ))
    })?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| http(format!("status line {status_line:?}")))?;
    Ok((status, body.to_string()))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Path of a binary cargo built in the same profile directory as the running executable; panics if missing.
pub fn workspace_binary(name: &str) -> PathBuf {
    match find_workspace_binary(name) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// Path of a binary cargo built in the same profile directory as the running executable.
pub fn find_workspace_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(io_context("locate the running executable"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| HarnessError::Topology(format!("{} has no parent", exe.display())))?;
    // Test and example executables live one level below the profile directory.
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir = dir.parent().unwrap_or(dir);
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_addresses_follow_the_index() {
        let b = SiteSpec::new(2).unwrap();
        assert_eq!(b.cluster_id(), "site-b");
        assert_eq!(b.gateway_node_name(), "site-b-gw");
        assert_eq!(
            b.pod_cidrs(),
            vec![
                "10.2.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:2::/48".parse().unwrap()
            ]
        );
        assert_eq!(
            b.service_cidrs(),
            vec!["10.102.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(b.underlay_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(b.gateway_node_ip().to_string(), "198.19.2.1");
        assert_eq!(b.worker_node_ip6().to_string(), "fd00:ffff:2::2");
        assert_eq!(b.pod_ip().to_string(), "10.2.1.10");
        assert_eq!(b.pod_ip6().to_string(), "fd00:2:0:1::10");
        assert!(
            b.pod_cidrs()[1].contains(&IpAddr::from(b.pod_ip6())),
            "the pod lies in its cluster's CIDR"
        );
        assert_eq!(
            b.worker_pod_subnets(),
            vec![
                "10.2.1.0/24".parse::<IpNet>().unwrap(),
                "fd00:2:0:1::/64".parse().unwrap()
            ]
        );
    }

    #[test]
    fn candidate_zero_is_the_gateway_node() {
        let c = SiteSpec::new(3).unwrap();
        let g = c.candidate(0);
        assert_eq!(g.k(), 0);
        assert_eq!(g.site(), c);
        assert_eq!(g.node_name(), c.gateway_node_name());
        assert_eq!(g.node_name(), "site-c-gw");
        assert_eq!(g.underlay_ip(), c.underlay_ip());
        assert_eq!(g.underlay_net(), c.underlay_net());
        assert_eq!(g.underlay_ip6(), c.underlay_ip6());
        assert_eq!(g.underlay_ip6().to_string(), "fd18::3");
        assert_eq!(g.public_endpoint(51820), c.public_endpoint(51820));
        assert_eq!(g.node_ip(), c.gateway_node_ip());
        assert_eq!(g.node_ip().to_string(), "198.19.3.1");
        assert_eq!(g.node_ip6(), c.gateway_node_ip6());
        assert_eq!(g.health_check_ip(), c.gateway_tunnel_ip());
        assert_eq!(g.health_check_ip().to_string(), "10.3.0.1");
        assert_eq!(g.namespace_role(), "c-gw");
        assert_eq!(g.wan_port(), "wan-c");
        assert_eq!(g.bridge_port(), "cand0");
        assert_eq!(
            g.node_pod_cidrs(),
            vec![
                "10.3.0.0/24".parse::<IpNet>().unwrap(),
                "fd00:3::/64".parse().unwrap()
            ]
        );
    }

    #[test]
    fn candidate_one_has_addresses_of_its_own() {
        let a = SiteSpec::new(1).unwrap();
        let g2 = a.candidate(1);
        assert_eq!(g2.k(), 1);
        assert_eq!(g2.node_name(), "site-a-gw2");
        assert_eq!(g2.underlay_ip().to_string(), "198.18.0.101");
        assert_eq!(g2.underlay_net().to_string(), "198.18.0.101/24");
        assert_eq!(g2.public_endpoint(51820).to_string(), "198.18.0.101:51820");
        // The last group is the number 100+i, which IPv6 text writes in hex.
        assert_eq!(g2.underlay_ip6(), "fd18::65".parse::<Ipv6Addr>().unwrap());
        assert_eq!(g2.underlay_net6().to_string(), "fd18::65/64");
        assert_eq!(g2.node_ip().to_string(), "198.19.1.3");
        assert_eq!(g2.node_ip6().to_string(), "fd00:ffff:1::3");
        assert_eq!(
            g2.node_nets(),
            [
                "198.19.1.3/24".parse::<IpNet>().unwrap(),
                "fd00:ffff:1::3/64".parse().unwrap()
            ]
        );
        assert_eq!(g2.health_check_ip().to_string(), "10.1.0.2");
        assert_eq!(
            g2.node_pod_cidrs(),
            vec![
                "10.1.2.0/24".parse::<IpNet>().unwrap(),
                "fd00:1:0:2::/64".parse().unwrap()
            ]
        );
        assert_eq!(g2.namespace_role(), "a-gw2");
        assert_eq!(g2.wan_port(), "wan-a2");
        assert_eq!(g2.bridge_port(), "cand1");

        // Nothing collides with candidate 0, the worker or another site's candidates.
        let z = SiteSpec::new(MAX_SITES).unwrap();
        assert_eq!(z.candidate(1).underlay_ip().to_string(), "198.18.0.126");
        for site in [a, z] {
            let (c0, c1) = (site.candidate(0), site.candidate(1));
            assert_ne!(c0.underlay_ip(), c1.underlay_ip());
            assert_ne!(c1.node_ip(), site.worker_node_ip());
            assert_ne!(c1.node_ip6(), site.worker_node_ip6());
            assert!(!site.worker_pod_subnets().contains(&c1.node_pod_cidrs()[0]));
            assert!(site.pod_cidrs()[0].contains(&IpAddr::from(c1.health_check_ip())));
        }
        let underlays: std::collections::HashSet<_> = (1..=MAX_SITES)
            .flat_map(|i| {
                let s = SiteSpec::new(i).unwrap();
                [s.candidate(0).underlay_ip(), s.candidate(1).underlay_ip()]
            })
            .collect();
        assert_eq!(underlays.len(), 2 * MAX_SITES);
        assert!(underlays.iter().all(|ip| "198.18.0.0/15"
            .parse::<IpNet>()
            .unwrap()
            .contains(&IpAddr::from(*ip))));
        for k in 0..MAX_CANDIDATES {
            for name in [a.candidate(k).wan_port(), a.candidate(k).bridge_port()] {
                assert!(super::super::netns::check_ifname(&name).is_ok(), "{name}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "gateway candidate 2 is out of range")]
    fn a_third_candidate_is_refused() {
        SiteSpec::new(1).unwrap().candidate(2);
    }

    #[test]
    fn ipv6_site_numbers_are_hex() {
        let j = SiteSpec::new(10).unwrap();
        assert_eq!(j.cluster_id(), "site-j");
        assert_eq!(j.pod_cidrs()[1].to_string(), "fd00:a::/48");
        assert_eq!(j.service_cidrs()[0].to_string(), "10.110.0.0/16");
    }

    #[test]
    fn site_indices_outside_a_to_z_are_refused() {
        assert!(SiteSpec::new(0).is_err());
        assert!(SiteSpec::new(26).is_ok());
        assert!(SiteSpec::new(27).is_err());
        assert!(SiteSpec::new(300).is_err());
    }

    #[test]
    fn cluster_endpoint_manifest_has_the_agreed_shape() {
        let a = SiteSpec::new(1).unwrap();
        let expected = r#"apiVersion: causeway.dev/v1alpha1
kind: ClusterEndpoint
metadata:
  name: site-a
spec:
  clusterID: site-a
  podCIDRs: ["10.1.0.0/16", "fd00:1::/48"]
  serviceCIDRs: ["10.101.0.0/16"]
  gateways:
    - nodeName: site-a-gw
      publicEndpoint: "198.18.0.1:51820"
      publicKey: "S0VZ"
      privateIP: "198.19.1.1"
      privateIPs: ["198.19.1.1", "fd00:ffff:1::1"]
      healthCheckIP: "10.1.0.1"
"#;
        assert_eq!(a.cluster_endpoint_yaml("S0VZ", 51820), expected);
    }

    #[test]
    fn endpoints_file_is_one_document_per_site() {
        let a = SiteSpec::new(1).unwrap();
        let b = SiteSpec::new(2).unwrap();
        let yaml = cluster_endpoints_yaml(&[(&a, "QQ=="), (&b, "Qg==")], GATEWAY_PORT);
        assert_eq!(yaml.matches("---\n").count(), 2);
        assert!(yaml.contains("name: site-b"));
        assert!(yaml.contains("publicKey: \"Qg==\""));
    }

    #[test]
    fn missing_binary_error_says_how_to_build_it() {
        let err = find_workspace_binary("no-such-causeway-binary").unwrap_err();
        assert!(err.to_string().contains("cargo build --bins"), "{err}");
    }
}
