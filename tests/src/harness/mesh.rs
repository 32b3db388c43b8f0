//! A clusterset joined by standalone gateways: keys, per-site endpoints files, gateways
//! and route agents, with the probes tests and the lab use to watch it.

use super::process::ChildGuard;
use super::topology::{
    fetch_metrics, gateway_command, spawn_datapath, Clusterset, Site, GATEWAY_PORT, METRICS_ADDR,
};
use super::wait::wait_until_ok;
use super::wan::{Relay, Router, RouterOptions};
use super::{io_context, read_log, HarnessError};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running clusterset. Fields drop in order: processes stop before namespaces go.
pub struct Mesh {
    underlay_v6: bool,
    /// Extra environment for every gateway started from now on.
    pub gateway_env: Vec<(String, String)>,
    gateways: Vec<Option<ChildGuard>>,
    agents: Vec<Option<ChildGuard>>,
    keys: Vec<(PathBuf, String)>,
    /// How the sites reach each other, when not straight over the WAN bridge (boxed:
    /// most meshes have none of it, and a `Mesh` is moved around by value).
    wan: Box<WanSetup>,
    /// The namespaces and addresses.
    pub world: Clusterset,
}

/// Per-site underlay settings of a [`Mesh`] beyond the defaults. Fields drop in order:
/// the relay stops before the routers' namespaces go.
#[derive(Default)]
struct WanSetup {
    /// Extra command-line arguments of each site's gateway.
    gateway_args: Vec<Vec<String>>,
    /// Where each site's gateway listens, when not on its usual WAN address.
    listen: Vec<Option<SocketAddr>>,
    /// What each site's entry in the endpoints files says, when not where it listens.
    advertised: Vec<Option<SocketAddr>>,
    /// The impairment relay every gateway reaches its peers through, if started.
    relay: Option<Relay>,
    /// Router namespaces in front of some sites' gateways.
    routers: Vec<Option<Router>>,
}

impl Mesh {
    /// Builds `n_sites` sites and their keys; nothing runs yet.
    pub fn new(n_sites: usize) -> Result<Mesh, HarnessError> {
        let world = Clusterset::new(n_sites)?;
        let keys = world
            .sites()
            .iter()
            .map(Site::write_gateway_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mesh {
            underlay_v6: false,
            gateway_env: Vec::new(),
            gateways: (0..n_sites).map(|_| None).collect(),
            agents: (0..n_sites).map(|_| None).collect(),
            keys,
            wan: Box::new(WanSetup {
                gateway_args: vec![Vec::new(); n_sites],
                listen: vec![None; n_sites],
                advertised: vec![None; n_sites],
                relay: None,
                routers: (0..n_sites).map(|_| None).collect(),
            }),
            world,
        })
    }

    /// Writes every site's endpoints file listing all sites, starts every gateway and
    /// route agent, and waits until each pair of sites has handshaken: [`Mesh::start`]
    /// for a mesh configured by hand first (relay, routers, gateway arguments).
    pub fn start_all(self) -> Result<Mesh, HarnessError> {
        Self::start_with(self)
    }

    /// Starts the impairment relay in the WAN namespace; from now on every endpoints
    /// file lists each site at its relay socket. Call before writing endpoints files.
    pub fn start_relay(&mut self, seed: u64) -> Result<&Relay, HarnessError> {
        let real: Vec<SocketAddr> = (0..self.world.sites().len())
            .map(|i| self.gateway_endpoint(i))
            .collect();
        let relay = Relay::start(self.world.wan(), &real, seed)?;
        Ok(self.wan.relay.insert(relay))
    }

    /// The impairment relay, if started.
    pub fn relay(&self) -> Option<&Relay> {
        self.wan.relay.as_ref()
    }

    /// Moves site `i`'s gateway behind a router namespace (before it is started): with
    /// `nat` its entry keeps the router's address, which holds no open port, so peers
    /// learn the NAT mapping from its packets; without, peers' gateways get a route to
    /// its new address via the router, and its entry names that address.
    pub fn put_behind_router(
        &mut self,
        i: usize,
        options: RouterOptions,
    ) -> Result<&Router, HarnessError> {
        let router = Router::build(&self.world, i, options)?;
        let real = SocketAddr::new(router.gateway_ip.into(), GATEWAY_PORT);
        self.wan.listen[i] = Some(real);
        if options.nat {
            self.wan.advertised[i] = Some(SocketAddr::new(router.wan_ip.into(), GATEWAY_PORT));
        } else {
            let lan = ipnet::IpNet::new(IpAddr::V4(router.gateway_ip), 24)
                .map_err(|e| HarnessError::Topology(e.to_string()))?
                .trunc();
            for (j, site) in self.world.sites().iter().enumerate() {
                if j != i {
                    site.gateway
                        .add_route(lan, router.wan_ip.into())
                        .map_err(io_context("route to the routed site's gateway"))?;
                }
            }
        }
        Ok(self.wan.routers[i].insert(router))
    }

    /// The router in front of site `i`'s gateway, if it has one.
    pub fn router(&self, i: usize) -> Option<&Router> {
        self.wan.routers[i].as_ref()
    }

    /// Adds command-line arguments to site `i`'s gateway (effective on its next start).
    pub fn add_gateway_args(&mut self, i: usize, args: &[&str]) {
        self.wan.gateway_args[i].extend(args.iter().map(|a| a.to_string()));
    }

    /// Builds `n_sites` sites, lists every one in every endpoints file, starts every
    /// gateway and route agent, and waits until each pair of sites has handshaken.
    pub fn start(n_sites: usize) -> Result<Mesh, HarnessError> {
        Self::start_with(Mesh::new(n_sites)?)
    }

    /// Like [`Mesh::start`], with the gateways talking over the IPv6 underlay.
    pub fn start_v6_underlay(n_sites: usize) -> Result<Mesh, HarnessError> {
        let mut mesh = Mesh::new(n_sites)?;
        mesh.underlay_v6 = true;
        Self::start_with(mesh)
    }

    /// Like [`Mesh::start`], with extra environment for the gateways.
    pub fn start_with_env(n_sites: usize, env: &[(&str, &str)]) -> Result<Mesh, HarnessError> {
        let mut mesh = Mesh::new(n_sites)?;
        mesh.gateway_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with(mesh)
    }

    fn start_with(mut mesh: Mesh) -> Result<Mesh, HarnessError> {
        let n_sites = mesh.world.sites().len();
        let all: Vec<usize> = (0..n_sites).collect();
        for &i in &all {
            mesh.write_endpoints(i, &all)?;
        }
        for &i in &all {
            mesh.start_site(i)?;
        }
        mesh.wait_handshakes(&all, Duration::from_secs(10))?;
        Ok(mesh)
    }

    /// Site `i`.
    pub fn site(&self, i: usize) -> &Site {
        &self.world.sites()[i]
    }

    /// The base64 public key of site `i`'s gateway.
    pub fn public_key(&self, i: usize) -> &str {
        &self.keys[i].1
    }

    /// Site `i`'s private key bytes, read back from its key file (for leak checks).
    pub fn private_key(&self, i: usize) -> [u8; 32] {
        let path = &self.keys[i].0;
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read site {i}'s key file {}: {e}", path.display()));
        causeway_wire::keys::parse_key(text.trim())
            .unwrap_or_else(|e| panic!("site {i}'s key file {}: {e}", path.display()))
    }

    /// The full logs of site `i`'s gateway and route agent, as far as they were
    /// written, as bytes; panics if a log cannot be read (an unread log must not
    /// pass a check for what is absent from it).
    pub fn full_logs(&self, i: usize) -> Vec<u8> {
        [&self.gateways[i], &self.agents[i]]
            .into_iter()
            .flatten()
            .flat_map(|p| read_log(p.log_path()))
            .collect()
    }

    /// Site `i`'s gateway log from byte `from` on (see [`Mesh::gateway_log_len`]).
    pub fn gateway_log_since(&self, i: usize, from: usize) -> String {
        let log = self.gateway_log(i);
        String::from_utf8_lossy(log.get(from..).unwrap_or_default()).into_owned()
    }

    /// How many bytes site `i`'s gateway has logged so far.
    pub fn gateway_log_len(&self, i: usize) -> usize {
        self.gateway_log(i).len()
    }

    fn gateway_log(&self, i: usize) -> Vec<u8> {
        let gateway = self.gateways[i]
            .as_ref()
            .unwrap_or_else(|| panic!("site {i}'s gateway is not running"));
        read_log(gateway.log_path())
    }

    /// Site `i`'s endpoints file.
    pub fn endpoints_path(&self, i: usize) -> PathBuf {
        self.site(i).dir().join("endpoints.yaml")
    }

    /// Where site `i`'s gateway listens.
    pub fn gateway_endpoint(&self, i: usize) -> SocketAddr {
        if let Some(listen) = self.wan.listen[i] {
            return listen;
        }
        let spec = &self.site(i).spec;
        match self.underlay_v6 {
            true => SocketAddr::new(spec.underlay_ip6().into(), GATEWAY_PORT),
            false => spec.public_endpoint(GATEWAY_PORT),
        }
    }

    /// Where the endpoints files say site `i`'s gateway is: its relay socket when the
    /// relay runs, else the address peers can reach (the router's for a NATed site).
    pub fn advertised_endpoint(&self, i: usize) -> SocketAddr {
        if let Some(relay) = &self.wan.relay {
            return relay.endpoint(i);
        }
        self.wan.advertised[i].unwrap_or_else(|| self.gateway_endpoint(i))
    }

    /// The endpoints file text listing `members` (indexes into the sites).
    pub fn endpoints_text(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|&m| {
                let doc = self
                    .site(m)
                    .spec
                    .cluster_endpoint_yaml_at(self.public_key(m), self.advertised_endpoint(m));
                format!("---\n{doc}")
            })
            .collect()
    }

    /// Writes site `i`'s endpoints file listing `members`.
    pub fn write_endpoints(&self, i: usize, members: &[usize]) -> Result<(), HarnessError> {
        self.write_endpoints_text(i, &self.endpoints_text(members))
    }

    /// Replaces site `i`'s endpoints file atomically, so a gateway never reads half a file.
    pub fn write_endpoints_text(&self, i: usize, text: &str) -> Result<(), HarnessError> {
        let path = self.endpoints_path(i);
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }

    /// Starts site `i`'s gateway and route agent.
    pub fn start_site(&mut self, i: usize) -> Result<(), HarnessError> {
        self.start_gateway(i)?;
        let agent = self.site(i).start_route_agent(&self.endpoints_path(i))?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Starts (or restarts) site `i`'s gateway and waits for its metrics endpoint.
    pub fn start_gateway(&mut self, i: usize) -> Result<(), HarnessError> {
        let gateway = if self.wan.gateway_args[i].is_empty() {
            self.site(i).start_gateway_at(
                &self.endpoints_path(i),
                &self.keys[i].0,
                self.gateway_endpoint(i),
                &self.gateway_env,
            )?
        } else {
            self.spawn_gateway_with_args(i)?
        };
        self.gateways[i] = Some(gateway);
        self.wait_metrics(i)?;
        Ok(())
    }

    /// [`Site::start_gateway_at`]'s command with this site's extra arguments appended.
    fn spawn_gateway_with_args(&self, i: usize) -> Result<ChildGuard, HarnessError> {
        let site = self.site(i);
        let mut cmd = gateway_command()?;
        cmd.envs(self.gateway_env.iter().map(|(k, v)| (k, v)));
        cmd.arg("standalone")
            .arg("--cluster")
            .arg(site.spec.cluster_id())
            .arg("--private-key-file")
            .arg(&self.keys[i].0)
            .arg("--listen")
            .arg(self.gateway_endpoint(i).to_string())
            .arg("--endpoints")
            .arg(self.endpoints_path(i))
            .arg("--metrics-addr")
            .arg(METRICS_ADDR.to_string())
            .args(&self.wan.gateway_args[i]);
        Ok(spawn_datapath(
            &site.gateway,
            &cmd,
            &site.dir().join("gateway.log"),
        )?)
    }

    /// Starts (or restarts) site `i`'s route agent.
    pub fn start_agent(&mut self, i: usize) -> Result<(), HarnessError> {
        self.agents[i] = Some(self.site(i).start_route_agent(&self.endpoints_path(i))?);
        Ok(())
    }

    /// Site `i`'s gateway process, if running.
    pub fn gateway(&mut self, i: usize) -> Option<&mut ChildGuard> {
        self.gateways[i].as_mut()
    }

    /// Site `i`'s route agent process, if running.
    pub fn agent(&mut self, i: usize) -> Option<&mut ChildGuard> {
        self.agents[i].as_mut()
    }

    /// Takes site `i`'s gateway process out of the mesh (to stop it in a test's own way).
    pub fn take_gateway(&mut self, i: usize) -> Option<ChildGuard> {
        self.gateways[i].take()
    }

    /// Takes site `i`'s route agent out of the mesh.
    pub fn take_agent(&mut self, i: usize) -> Option<ChildGuard> {
        self.agents[i].take()
    }

    /// Site `i`'s gateway metrics text.
    /// Site `i`'s gateway's sample `name{labels}`; panics if the gateway does not export it.
    pub fn gateway_metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .gateway_metrics(i)
            .unwrap_or_else(|e| panic!("site {i}'s gateway metrics: {e}"));
        required_metric(&text, name, labels).unwrap_or_else(|e| panic!("site {i}'s gateway: {e}"))
    }

    /// Site `i`'s gateway's `/metrics` text.
    pub fn gateway_metrics(&self, i: usize) -> Result<String, HarnessError> {
        fetch_metrics(&self.site(i).gateway, METRICS_ADDR)
    }

    /// Site `i`'s route agent metrics text.
    pub fn agent_metrics(&self, i: usize) -> Result<String, HarnessError> {
        fetch_metrics(&self.site(i).worker, METRICS_ADDR)
    }

    fn wait_metrics(&mut self, i: usize) -> Result<(), HarnessError> {
        let what = format!(
            "{} gateway serving /metrics",
            self.site(i).spec.cluster_id()
        );
        let result = wait_until_ok(&what, Duration::from_secs(10), || {
            if let Some(g) = self.gateways[i].as_mut() {
                if !g.is_running() {
                    return Err(format!("gateway exited:\n{}", g.log_tail(20)));
                }
            }
            self.gateway_metrics(i).map_err(|e| e.to_string())
        });
        result.map(|_| ()).map_err(HarnessError::from)
    }

    /// Waits until every pair among `members` has completed a handshake, seen from both ends.
    pub fn wait_handshakes(
        &self,
        members: &[usize],
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        for &i in members {
            for &j in members.iter().filter(|&&j| j != i) {
                let peer = self.site(j).spec.cluster_id();
                let what = format!(
                    "{} to complete a handshake with {peer}",
                    self.site(i).spec.cluster_id()
                );
                wait_until_ok(&what, timeout, || {
                    let text = self.gateway_metrics(i).map_err(|e| e.to_string())?;
                    match metric(
                        &text,
                        "causeway_peer_handshakes_total",
                        &[("remote_cluster", &peer)],
                    ) {
                        Some(n) if n >= 1.0 => Ok(()),
                        other => Err(format!("handshakes = {other:?}")),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// A log tail of every running process, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, site) in self.world.sites().iter().enumerate() {
            for (role, p) in [
                ("gateway", &self.gateways[i]),
                ("route agent", &self.agents[i]),
            ] {
                if let Some(p) = p {
                    out += &format!(
                        "--- {} {role}:\n{}\n",
                        site.spec.cluster_id(),
                        p.log_tail(15)
                    );
                }
            }
        }
        out
    }
}

/// The value of one sample in Prometheus text, matched by name and a subset of labels.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Like [`metric`], but a sample that is not there is an error naming it: a renamed or
/// missing metric must fail a test, never read as zero.
pub fn required_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
    metric(text, name, labels).ok_or_else(|| {
        let family: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .collect();
        format!("no sample {name}{labels:?} in the metrics (samples of that name: {family:?})")
    })
}

/// Causeway's routes (protocol 203) in a namespace, as `ip route` prints them, IPv4 then IPv6.
pub fn causeway_routes(ns: &super::Netns) -> Result<Vec<String>, HarnessError> {
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = ns.ip([family, "route", "show", "proto", "203"])?;
        routes.extend(
            out.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    Ok(routes)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io {
        context: format!("write {}", path.display()),
        source,
    }
}
