//! Longest-prefix match from destination (or source) address to a peer.

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// An immutable longest-prefix-match table.
///
/// One hash map per prefix length present, probed from the longest: at most 33 (IPv4)
/// or 129 (IPv6) probes, in practice the handful of lengths a clusterset uses, with no
/// allocation on lookup.
#[derive(Debug, Clone)]
pub struct CidrMap<T> {
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for CidrMap<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl<T: Clone> CidrMap<T> {
    /// Builds the table; on duplicate CIDRs the last entry wins.
    pub fn new(entries: impl IntoIterator<Item = (IpNet, T)>) -> Self {
        let mut v4: HashMap<u8, HashMap<u32, T>> = HashMap::new();
        let mut v6: HashMap<u8, HashMap<u128, T>> = HashMap::new();
        for (net, value) in entries {
            let len = net.prefix_len();
            match net {
                IpNet::V4(n) => {
                    v4.entry(len)
                        .or_default()
                        .insert(u32::from(n.network()) & mask4(len), value);
                }
                IpNet::V6(n) => {
                    v6.entry(len)
                        .or_default()
                        .insert(u128::from(n.network()) & mask6(len), value);
                }
            }
        }
        let mut v4: Vec<_> = v4.into_iter().collect();
        let mut v6: Vec<_> = v6.into_iter().collect();
        v4.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        v6.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Self { v4, v6 }
    }

    /// The value of the longest CIDR holding `addr`.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, m)| m.get(&(a & mask4(*len))))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, m)| m.get(&(a & mask6(*len))))
            }
        }
    }

    /// Number of CIDRs held.
    pub fn len(&self) -> usize {
        self.v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + self.v6.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let map = CidrMap::new([
            (net("10.0.0.0/8"), 'a'),
            (net("10.2.0.0/16"), 'b'),
            (net("10.2.3.4/32"), 'c'),
            (net("fd00:2::/48"), 'd'),
            (net("fd00:2:0:1::/64"), 'e'),
            (net("0.0.0.0/0"), 'z'),
        ]);
        let cases = [
            ("10.1.1.1", Some('a')),
            ("10.2.0.1", Some('b')),
            ("10.2.3.4", Some('c')),
            ("10.2.3.5", Some('b')),
            ("11.0.0.1", Some('z')),
            ("fd00:2::9", Some('d')),
            ("fd00:2:0:1::9", Some('e')),
            ("fd00:3::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(map.lookup(addr.parse().unwrap()).copied(), want, "{addr}");
        }
        assert_eq!(map.len(), 6);
    }
}
