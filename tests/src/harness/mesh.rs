//! A clusterset joined by standalone gateways: keys, per-site endpoints files, gateways
//! and route agents, with the probes tests and the lab use to watch it.

use super::process::ChildGuard;
use super::topology::{fetch_metrics, Clusterset, Site, GATEWAY_PORT, METRICS_ADDR};
use super::wait::wait_until_ok;
use super::HarnessError;
use std::net::SocketAddr;
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
    /// The namespaces and addresses.
    pub world: Clusterset,
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
            world,
        })
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

    /// Site `i`'s private key as written in its key file (for leak checks).
    pub fn private_key_text(&self, i: usize) -> std::io::Result<String> {
        Ok(std::fs::read_to_string(&self.keys[i].0)?.trim().to_owned())
    }

    /// The full logs of site `i`'s gateway and route agent, as far as they were written.
    pub fn full_logs(&self, i: usize) -> String {
        [&self.gateways[i], &self.agents[i]]
            .into_iter()
            .flatten()
            .map(|p| std::fs::read_to_string(p.log_path()).unwrap_or_default())
            .collect()
    }

    /// Site `i`'s endpoints file.
    pub fn endpoints_path(&self, i: usize) -> PathBuf {
        self.site(i).dir().join("endpoints.yaml")
    }

    /// Where site `i`'s gateway listens.
    pub fn gateway_endpoint(&self, i: usize) -> SocketAddr {
        let spec = &self.site(i).spec;
        match self.underlay_v6 {
            true => SocketAddr::new(spec.underlay_ip6().into(), GATEWAY_PORT),
            false => spec.public_endpoint(GATEWAY_PORT),
        }
    }

    /// The endpoints file text listing `members` (indexes into the sites).
    pub fn endpoints_text(&self, members: &[usize]) -> String {
        members
            .iter()
            .map(|&m| {
                let doc = self
                    .site(m)
                    .spec
                    .cluster_endpoint_yaml_at(self.public_key(m), self.gateway_endpoint(m));
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
        let gateway = self.site(i).start_gateway_at(
            &self.endpoints_path(i),
            &self.keys[i].0,
            self.gateway_endpoint(i),
            &self.gateway_env,
        )?;
        self.gateways[i] = Some(gateway);
        self.wait_metrics(i)?;
        Ok(())
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
