//! The benchmark's world: two namespaces joined by one veth pair, the
//! addresses on it, Causeway gateways and their endpoints files, and what
//! `/proc` and `/metrics` say about a running gateway.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use ipnet::{IpNet, Ipv4Net};

use super::stats::{parse_stat_cpu_ticks, parse_status_kib};
use crate::harness::{veth, ChildGuard, Netns};

/// Namespace A's end of the veth pair.
pub const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// Namespace B's end of the veth pair.
pub const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 2);
/// Prefix length of the veth pair's subnet.
pub const UNDERLAY_PREFIX: u8 = 24;
/// Site A's pod CIDR (routed through the tunnel from B).
pub const A_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 1, 0, 0), 16);
/// Site B's pod CIDR (routed through the tunnel from A).
pub const B_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 2, 0, 0), 16);
/// A's address inside the tunnel (Causeway's healthCheckIP for site A).
pub const A_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// B's address inside the tunnel; iperf3 and ping target it. Under Causeway it is a
/// local address of B's namespace behind the gateway, as a pod's would be: the gateway's
/// own tunnel address ([`B_HEALTH`]) takes only probes and the benchmark sink.
pub const B_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// Causeway's healthCheckIP for site A.
pub const A_HEALTH: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 254);
/// Causeway's healthCheckIP for site B.
pub const B_HEALTH: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);
/// UDP port of every WireGuard endpoint in the benchmark.
pub const WG_PORT: u16 = 51820;
/// Where Causeway gateways serve `/metrics`, on loopback in their own namespace.
pub const METRICS_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9469));
/// Name of the veth end in A.
pub const A_VETH: &str = "veth-a";
/// Name of the veth end in B.
pub const B_VETH: &str = "veth-b";
/// Name of Causeway's TUN interface.
pub const CAUSEWAY_IF: &str = "causeway0";

/// Namespaces A and B joined by one veth pair (A 198.18.100.1/24, B 198.18.100.2/24).
///
/// Dropping it deletes both namespaces; processes inside must be stopped first,
/// so hold them in variables declared after the pair.
#[derive(Debug)]
pub struct Pair {
    /// Namespace A: the iperf3 client and ping side.
    pub a: Netns,
    /// Namespace B: the iperf3 server side.
    pub b: Netns,
}

impl Pair {
    /// Creates both namespaces and the veth pair between them.
    pub fn new(role: &str) -> Result<Pair> {
        let a = Netns::new(&format!("{role}-a")).context("creating namespace A")?;
        let b = Netns::new(&format!("{role}-b")).context("creating namespace B")?;
        veth(
            &a,
            A_VETH,
            [IpNet::V4(Ipv4Net::new_assert(A_UNDERLAY, UNDERLAY_PREFIX))],
            &b,
            B_VETH,
            [IpNet::V4(Ipv4Net::new_assert(B_UNDERLAY, UNDERLAY_PREFIX))],
        )
        .context("creating the veth pair between A and B")?;
        Ok(Pair { a, b })
    }
}

/// The MTU of `dev` in `ns`, from `/sys` as seen inside the namespace.
pub fn link_mtu(ns: &Netns, dev: &str) -> Result<u32> {
    let out = ns.ip(["-o", "link", "show", "dev", dev])?;
    parse_link_mtu(&out).ok_or_else(|| anyhow!("no mtu in `ip link show {dev}`: {out}"))
}

/// The `mtu N` field of `ip -o link show` output.
pub fn parse_link_mtu(ip_link: &str) -> Option<u32> {
    let mut words = ip_link.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// One `ClusterEndpoint` document (with its `---` separator) for an endpoints file.
pub fn cluster_endpoint_doc(
    cluster: &str,
    pod_cidrs: &[IpNet],
    public_endpoint: SocketAddr,
    public_key_b64: &str,
    health_check_ip: Ipv4Addr,
) -> String {
    let cidrs = pod_cidrs
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut doc = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        doc,
        "---\napiVersion: causeway.dev/v1alpha1\nkind: ClusterEndpoint\n\
         metadata:\n  name: {cluster}\n\
         spec:\n  clusterID: {cluster}\n  podCIDRs: [{cidrs}]\n  gateways:\n    \
         - nodeName: {cluster}-gw\n      publicEndpoint: \"{public_endpoint}\"\n      \
         publicKey: \"{public_key_b64}\"\n      healthCheckIP: \"{health_check_ip}\"\n"
    );
    doc
}

/// Where the `i`-th (1-based) simulated peer of the scale test lives: cluster ID,
/// pod CIDR `10.100.i.0/24`, healthCheckIP `10.100.i.1`, endpoint `198.18.101.i:51820`.
pub fn scale_peer(i: u8) -> (String, Ipv4Net, Ipv4Addr, SocketAddrV4) {
    (
        format!("peer-{i:03}"),
        Ipv4Net::new_assert(Ipv4Addr::new(10, 100, i, 0), 24),
        Ipv4Addr::new(10, 100, i, 1),
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 101, i), WG_PORT),
    )
}

/// Starts `causeway-gateway standalone` in `ns`, logging to `log`.
pub fn spawn_gateway(
    ns: &Netns,
    gateway: &Path,
    cluster: &str,
    key_file: &Path,
    listen: SocketAddr,
    endpoints: &Path,
    log: &Path,
) -> Result<ChildGuard> {
    let mut cmd = Command::new(gateway);
    cmd.env("RUST_LOG", "info")
        .arg("standalone")
        .args(["--cluster", cluster])
        .arg("--private-key-file")
        .arg(key_file)
        .args(["--listen", &listen.to_string()])
        .arg("--endpoints")
        .arg(endpoints)
        .args(["--metrics-addr", &METRICS_ADDR.to_string()]);
    ns.spawn_logged(&mut cmd, log)
        .with_context(|| format!("starting the {cluster} gateway in {}", ns.name()))
}

/// User plus system CPU time of process `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&text).ok_or_else(|| anyhow!("cannot parse {path}: {text}"))
}

/// A process's peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

/// A `Vm*` field of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&text, key).ok_or_else(|| anyhow!("no {key} in {path}"))
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of `/proc/<pid>/stat` times.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// What a gateway's `/metrics` says about its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounts {
    /// Remote clusters listed (`causeway_peer_info` samples).
    pub listed: usize,
    /// Remote clusters with at least one completed handshake.
    pub handshaken: usize,
}

/// Counts peers and completed handshakes in Prometheus text from a gateway.
pub fn peer_counts(metrics: &str) -> PeerCounts {
    let mut counts = PeerCounts::default();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split_once('{').map_or(series, |(n, _)| n);
        match name {
            "causeway_peer_info" => counts.listed += 1,
            "causeway_peer_handshakes_total" if value.parse::<f64>().is_ok_and(|v| v >= 1.0) => {
                counts.handshaken += 1
            }
            _ => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_gateway::config::{desired_from_text, Identity};

    #[test]
    fn mtu_from_ip_link() {
        let out =
            "7: causeway0: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1440 qdisc fq_codel state UNKNOWN";
        assert_eq!(parse_link_mtu(out), Some(1440));
        assert_eq!(parse_link_mtu("7: x: <UP>"), None);
    }

    #[test]
    fn scale_endpoints_file_is_accepted_by_the_gateway_with_100_peers() {
        let me = super::super::wg::KeyPair::random();
        let mut text = cluster_endpoint_doc(
            "bench-self",
            &[IpNet::V4(A_CIDR)],
            SocketAddr::from((A_UNDERLAY, WG_PORT)),
            &me.public_b64,
            A_TUNNEL,
        );
        for i in 1..=100 {
            let (cluster, cidr, health, endpoint) = scale_peer(i);
            let key = super::super::wg::KeyPair::random();
            text += &cluster_endpoint_doc(
                &cluster,
                &[IpNet::V4(cidr)],
                endpoint.into(),
                &key.public_b64,
                health,
            );
        }
        let identity = Identity {
            cluster: "bench-self".into(),
            public_key: Some(me.public_bytes().unwrap()),
            listen: Some(SocketAddr::from((A_UNDERLAY, WG_PORT))),
            persistent_keepalive: None,
        };
        let desired = desired_from_text(&text, "endpoints.yaml", &identity).unwrap();
        assert_eq!(desired.peers.len(), 100);
        assert_eq!(desired.peers[99].cluster_id, "peer-100");
        assert_eq!(
            desired.peers[0].endpoint,
            Some("198.18.101.1:51820".parse().unwrap())
        );
    }

    #[test]
    fn counts_listed_and_handshaken_peers() {
        let text = "# HELP causeway_peer_handshakes WireGuard handshakes.\n\
                    # TYPE causeway_peer_handshakes counter\n\
                    causeway_peer_handshakes_total{remote_cluster=\"peer-001\"} 1\n\
                    causeway_peer_handshakes_total{remote_cluster=\"peer-002\"} 0\n\
                    causeway_peer_handshakes_total{remote_cluster=\"peer-003\"} 3\n\
                    causeway_peer_info{remote_cluster=\"peer-001\",endpoint=\"198.18.101.1:51820\"} 1\n\
                    causeway_peer_info{remote_cluster=\"peer-002\",endpoint=\"\"} 1\n\
                    causeway_peer_info{remote_cluster=\"peer-003\",endpoint=\"198.18.101.3:51820\"} 1\n\
                    causeway_peer_tx_packets_total{remote_cluster=\"peer-001\"} 12\n";
        assert_eq!(
            peer_counts(text),
            PeerCounts {
                listed: 3,
                handshaken: 2
            }
        );
        assert_eq!(peer_counts(""), PeerCounts::default());
    }
}
