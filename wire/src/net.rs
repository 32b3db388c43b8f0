//! Address rules the gateway and the controller share: the unit a per-source budget counts.

use std::net::IpAddr;

/// The unit one source is for a per-source budget: an IPv4 address (also when it arrives
/// IPv4-mapped on a dual-stack socket), or an IPv6 /64, one host's whole prefix.
pub fn source_group(source: IpAddr) -> IpAddr {
    match source.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let group = |text: &str| source_group(text.parse().unwrap()).to_string();
        assert_eq!(group("198.18.0.66"), "198.18.0.66");
        assert_eq!(group("::ffff:198.18.0.66"), "198.18.0.66", "IPv4-mapped");
        assert_ne!(group("::ffff:198.18.0.67"), group("::ffff:198.18.0.66"));
        assert_eq!(group("2001:db8:0:1::42"), "2001:db8:0:1::");
        assert_eq!(group("2001:db8:0:1:ffff::1"), group("2001:db8:0:1::2"));
        assert_ne!(group("2001:db8:0:2::1"), group("2001:db8:0:1::1"));
    }
}
