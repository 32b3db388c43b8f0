//! What a peer may send to the gateway node itself, through the tunnel.
//!
//! The gateway's health-check address sits on the TUN interface, so the node's kernel
//! delivers whatever arrives for it to any host service listening on every address: the
//! kubelet, sshd, the agent. A remote pod has no business there. Only health probes, the
//! benchmark sink and the answers to what the gateway itself opened from that address
//! (`verify`'s DNS questions and connects, the benchmark client) pass; answers are told by
//! their destination port in the kernel's ephemeral range and, for TCP, by the ACK flag a
//! new connection never carries.

use causeway_wire::ports;
use std::net::IpAddr;
use std::ops::RangeInclusive;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const ACK: u8 = 0x10;
/// ICMP echo reply and request, destination unreachable (with "fragmentation needed"),
/// time exceeded: what ping and path MTU discovery need. Never a redirect.
const ICMP_ALLOWED: [u8; 4] = [0, 3, 8, 11];
/// ICMPv6 errors (unreachable, packet too big, time exceeded, parameter problem) and echo.
const ICMPV6_ALLOWED: [u8; 6] = [1, 2, 3, 4, 128, 129];
/// Linux's default `net.ipv4.ip_local_port_range`, when it cannot be read.
pub const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;
/// Causeway's own service ports (WireGuard's default, probes, liveness, benchmark): inside
/// the ephemeral range, but listened on, so never taken for an answer's port.
const SERVICE_PORTS: RangeInclusive<u16> = ports::WIREGUARD..=ports::BENCHMARK;

/// The gateway's own tunnel address and what may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFilter {
    /// The health-check address; `None` when the gateway has none.
    pub ip: Option<IpAddr>,
    /// Local ports the kernel picks for outgoing connections.
    pub ephemeral: RangeInclusive<u16>,
}

impl Default for HostFilter {
    fn default() -> HostFilter {
        HostFilter {
            ip: None,
            ephemeral: DEFAULT_EPHEMERAL,
        }
    }
}

impl HostFilter {
    /// A filter for `ip`, with the ephemeral range read from the kernel.
    pub fn for_address(ip: Option<IpAddr>) -> HostFilter {
        let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| parse_port_range(&text))
            .unwrap_or(DEFAULT_EPHEMERAL);
        HostFilter { ip, ephemeral }
    }

    fn answer_port(&self, port: u16) -> bool {
        self.ephemeral.contains(&port) && !SERVICE_PORTS.contains(&port)
    }

    /// Whether `packet`, addressed to `dst` inside this cluster's CIDRs, may pass: anything
    /// not for the gateway's own address does; for it, only what the module text lists.
    pub fn allows(&self, dst: IpAddr, packet: &[u8]) -> bool {
        if self.ip != Some(dst) {
            return true;
        }
        let Some((protocol, l4)) = transport(packet) else {
            return false;
        };
        let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
        match protocol {
            UDP => port(2).is_some_and(|p| p == ports::PROBE || self.answer_port(p)),
            TCP => match (port(2), l4.get(13)) {
                (Some(ports::BENCHMARK), Some(_)) => true,
                (Some(p), Some(flags)) => self.answer_port(p) && flags & ACK != 0,
                _ => false,
            },
            ICMP => l4.first().is_some_and(|t| ICMP_ALLOWED.contains(t)),
            ICMPV6 => l4.first().is_some_and(|t| ICMPV6_ALLOWED.contains(t)),
            _ => false,
        }
    }
}

/// The transport protocol and header of an IP packet; `None` for a non-first fragment or
/// an IPv6 extension header (neither of which anything allowed here sends).
fn transport(packet: &[u8]) -> Option<(u8, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            if ihl < 20 || offset != 0 {
                return None;
            }
            Some((*packet.get(9)?, packet.get(ihl..)?))
        }
        6 => Some((*packet.get(6)?, packet.get(40..)?)),
        _ => None,
    }
}

/// Reads `ip_local_port_range` (`32768\t60999`).
fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "10.1.255.254";

    fn v4(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0];
        p.extend_from_slice(&[10, 2, 0, 5]);
        p.extend_from_slice(&HOST.parse::<std::net::Ipv4Addr>().unwrap().octets());
        p.extend_from_slice(l4);
        p
    }

    fn udp(dport: u16) -> Vec<u8> {
        let mut l4 = vec![0x30, 0x39];
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0, 8, 0, 0]);
        v4(UDP, &l4)
    }

    fn tcp(dport: u16, flags: u8) -> Vec<u8> {
        let mut l4 = vec![0x30, 0x39];
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&[0; 9]);
        l4.push(flags);
        l4.extend_from_slice(&[0; 6]);
        v4(TCP, &l4)
    }

    #[test]
    fn only_probes_the_benchmark_and_answers_reach_the_gateway_itself() {
        let filter = HostFilter {
            ip: Some(HOST.parse().unwrap()),
            ephemeral: DEFAULT_EPHEMERAL,
        };
        let host: IpAddr = HOST.parse().unwrap();
        const SYN: u8 = 0x02;
        let cases: &[(&str, Vec<u8>, bool)] = &[
            ("health probe", udp(ports::PROBE), true),
            ("answer to verify's DNS question", udp(40_000), true),
            ("benchmark connection", tcp(ports::BENCHMARK, SYN), true),
            ("answer to verify's connect", tcp(40_000, SYN | ACK), true),
            (
                "data on a connection the gateway opened",
                tcp(40_000, ACK),
                true,
            ),
            ("ssh", tcp(22, SYN), false),
            ("kubelet", tcp(10_250, SYN), false),
            ("the agent", tcp(9469, SYN), false),
            ("the agent, acked", tcp(9469, ACK), false),
            ("a new connection to a high port", tcp(40_000, SYN), false),
            ("dns on the node", udp(53), false),
            ("liveness", udp(51_822), false),
            ("wireguard", udp(51_820), false),
            ("ping", v4(ICMP, &[8, 0, 0, 0]), true),
            ("fragmentation needed", v4(ICMP, &[3, 4, 0, 0]), true),
            ("redirect", v4(ICMP, &[5, 1, 0, 0]), false),
            ("igmp", v4(2, &[0x11, 0, 0, 0]), false),
            ("truncated", tcp(22, SYN)[..22].to_vec(), false),
        ];
        for (what, packet, allowed) in cases {
            assert_eq!(filter.allows(host, packet), *allowed, "{what}");
        }
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, TCP, 64];
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&"fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let v6_host: IpAddr = "fd00:1::1".parse().unwrap();
        let v6_filter = HostFilter {
            ip: Some(v6_host),
            ephemeral: DEFAULT_EPHEMERAL,
        };
        let mut ssh6 = v6.clone();
        ssh6.extend_from_slice(&tcp(22, SYN)[20..]);
        assert!(!v6_filter.allows(v6_host, &ssh6), "ssh over IPv6");
        let mut bench6 = v6;
        bench6.extend_from_slice(&tcp(ports::BENCHMARK, SYN)[20..]);
        assert!(v6_filter.allows(v6_host, &bench6), "benchmark over IPv6");
        let mut fragment = udp(ports::PROBE);
        fragment[7] = 1;
        assert!(!filter.allows(host, &fragment), "a non-first fragment");
        assert!(
            filter.allows("10.1.0.7".parse().unwrap(), &tcp(22, SYN)),
            "a pod's own ssh is the pod's business"
        );
        assert!(
            HostFilter::default().allows(host, &tcp(22, SYN)),
            "no health-check address: nothing to guard"
        );
    }

    #[test]
    fn the_ephemeral_range_is_read_as_the_kernel_writes_it() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_port_range("9 1"), None);
        assert_eq!(parse_port_range("x"), None);
    }
}
