//! Route planning: what to add, replace and delete so the kernel holds the
//! routes Causeway wants. Pure: no I/O, so every decision is unit-tested here
//! and `netlink.rs` only carries the plan out.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Causeway's own route protocol number: every route we add carries it, and GC only ever touches routes carrying it.
pub const ROUTE_PROTOCOL: u8 = 203;

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// Bytes WireGuard adds to each packet over an IPv4 underlay: IPv4 20 + UDP 8 + WireGuard 32.
pub const WIREGUARD_OVERHEAD_V4: u32 = 20 + 8 + 32;

/// Bytes WireGuard adds to each packet over an IPv6 underlay: IPv6 40 + UDP 8 + WireGuard 32.
pub const WIREGUARD_OVERHEAD_V6: u32 = 40 + 8 + 32;

/// Priority of the fail-closed routes: the highest a route can have short of none, so
/// any other route for the same prefix (the tunnel's, IPv6's default 1024) wins while it
/// exists, and the fail-closed one only when it is gone.
pub const FAIL_CLOSED_METRIC: u32 = u32::MAX - 1;

/// Where a route sends its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// Nowhere (`unreachable`, at [`FAIL_CLOSED_METRIC`]): under every remote CIDR, so
    /// when the tunnel's route goes with a dead gateway's interface, the node answers
    /// "unreachable" instead of sending the traffic in clear by its default route.
    Unreachable,
    /// Straight out of an interface (scope link), e.g. the TUN device.
    Dev {
        /// Output interface index.
        ifindex: u32,
    },
    /// Through a gateway reachable on an interface (scope universe).
    Via {
        /// Next-hop address.
        gateway: IpAddr,
        /// Output interface index; must be set, the kernel always reports one.
        ifindex: u32,
    },
}

impl NextHop {
    /// The output interface index.
    pub fn ifindex(&self) -> u32 {
        match *self {
            NextHop::Dev { ifindex } | NextHop::Via { ifindex, .. } => ifindex,
            NextHop::Unreachable => 0,
        }
    }
}

/// One kernel route as Causeway models it; identified by `(table, dst)` and whether it
/// is a fail-closed route (which lives beside the tunnel's route for the same prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpNet,
    /// Where matching packets go.
    pub next_hop: NextHop,
    /// Path MTU (`RTAX_MTU`), if pinned.
    pub mtu: Option<u32>,
    /// Routing table id.
    pub table: u32,
}

impl Route {
    /// The identity of a route for planning: per destination per table, one route and
    /// one fail-closed route.
    pub fn key(&self) -> (u32, IpNet, bool) {
        (self.table, self.dst, self.is_fail_closed())
    }

    /// Whether this is a fail-closed route.
    pub fn is_fail_closed(&self) -> bool {
        self.next_hop == NextHop::Unreachable
    }

    /// The fail-closed route under `dst`.
    pub fn fail_closed(dst: IpNet, table: u32) -> Route {
        Route {
            dst,
            next_hop: NextHop::Unreachable,
            mtu: None,
            table,
        }
    }

    /// The form the kernel reports back, so an unchanged route compares equal
    /// and is not rewritten forever: host bits cleared (the kernel refuses
    /// IPv4 prefixes with host bits and masks IPv6 ones), an MTU of 0 means
    /// "unset", and table 0 means the main table.
    fn normalized(&self) -> Route {
        Route {
            dst: self.dst.trunc(),
            next_hop: self.next_hop,
            mtu: self.mtu.filter(|&m| m != 0),
            table: if self.table == 0 {
                MAIN_TABLE
            } else {
                self.table
            },
        }
    }

    fn same_state(&self, other: &Route) -> bool {
        self.next_hop == other.next_hop && self.mtu == other.mtu
    }
}

/// Total order used for deterministic plans: by key (which the merge in [`plan_routes`]
/// relies on), then by content.
fn cmp_routes(a: &Route, b: &Route) -> Ordering {
    (a.key(), a.next_hop, a.mtu).cmp(&(b.key(), b.next_hop, b.mtu))
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.next_hop {
            NextHop::Dev { ifindex } => write!(f, "{} dev ifindex {}", self.dst, ifindex)?,
            NextHop::Via { gateway, ifindex } => {
                write!(f, "{} via {} ifindex {}", self.dst, gateway, ifindex)?
            }
            NextHop::Unreachable => {
                write!(f, "unreachable {} metric {FAIL_CLOSED_METRIC}", self.dst)?
            }
        }
        write!(f, " table {}", self.table)?;
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        Ok(())
    }
}

/// The changes that turn the observed routes into the desired ones.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Routes to create (`NLM_F_CREATE | NLM_F_EXCL`).
    pub add: Vec<Route>,
    /// Routes to overwrite in place (`NLM_F_REPLACE`), holding the desired state.
    pub replace: Vec<Route>,
    /// Routes to remove, exactly as observed.
    pub delete: Vec<Route>,
}

impl RoutePlan {
    /// True when the kernel already matches and nothing must be written.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }

    /// Number of route writes the plan needs.
    pub fn len(&self) -> usize {
        self.add.len() + self.replace.len() + self.delete.len()
    }
}

/// desired: what the kernel should hold; observed: routes currently in the kernel carrying ROUTE_PROTOCOL (already filtered).
///
/// Routes are keyed by `(table, dst)`. If `desired` holds several routes for
/// one key, the smallest (by next hop, then MTU) wins, so the result does not
/// depend on input order. Every list in the plan is sorted. O(n log n).
pub fn plan_routes(desired: &[Route], observed: &[Route]) -> RoutePlan {
    let mut want: Vec<Route> = desired.iter().map(Route::normalized).collect();
    want.sort_unstable_by(cmp_routes);
    // dedup_by keeps the first of each run, i.e. the smallest after sorting.
    want.dedup_by(|later, earlier| later.key() == earlier.key());

    let mut have: Vec<&Route> = observed.iter().collect();
    have.sort_unstable_by(|a, b| cmp_routes(a, b));

    let mut plan = RoutePlan::default();
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        let order = match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) => w.key().cmp(&h.key()),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        if order == Ordering::Less {
            plan.add.push(want[i].clone());
            i += 1;
            continue;
        }
        let key = have[j].key();
        let end = j + have[j..].iter().take_while(|r| r.key() == key).count();
        let group = &have[j..end];
        j = end;
        if order == Ordering::Greater {
            plan.delete.extend(group.iter().map(|r| (*r).clone()));
            continue;
        }
        let w = &want[i];
        i += 1;
        // Several observed routes for one key only happen after a crash or a
        // race; keep the one already right if there is one, so that the fix
        // is deletes only.
        let keep = match group.iter().position(|r| r.same_state(w)) {
            Some(pos) => pos,
            None => {
                plan.replace.push(w.clone());
                0
            }
        };
        plan.delete.extend(
            group
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != keep)
                .map(|(_, r)| (*r).clone()),
        );
    }
    plan
}

/// MTU for the tunnel interface: the underlay MTU minus WireGuard's per-packet overhead.
pub fn tunnel_mtu(underlay_mtu: u32, underlay_is_ipv6: bool) -> u32 {
    let overhead = if underlay_is_ipv6 {
        WIREGUARD_OVERHEAD_V6
    } else {
        WIREGUARD_OVERHEAD_V4
    };
    underlay_mtu.saturating_sub(overhead)
}

/// Which of a node's wanted routes the kernel holds after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTally {
    /// Distinct routes wanted, fail-closed floors not counted.
    pub desired: usize,
    /// Wanted destinations whose add or replace the kernel refused, sorted.
    pub missing: Vec<IpNet>,
}

impl RouteTally {
    /// Routes the kernel holds.
    pub fn installed(&self) -> usize {
        self.desired - self.missing.len()
    }
}

/// Tallies `desired` given that the adds and replaces of `refused` failed. Duplicates of
/// a key count once, as in [`plan_routes`].
pub fn route_tally(desired: &[Route], refused: &[Route]) -> RouteTally {
    // The fail-closed routes are a floor under these, not routes a person counts.
    let mut keys: Vec<(u32, IpNet, bool)> = desired
        .iter()
        .filter(|r| !r.is_fail_closed())
        .map(Route::key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let refused: std::collections::HashSet<(u32, IpNet, bool)> =
        refused.iter().map(Route::key).collect();
    let missing = keys
        .iter()
        .filter(|k| refused.contains(k))
        .map(|(_, dst, _)| *dst)
        .collect();
    RouteTally {
        desired: keys.len(),
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(dst: &str, ifindex: u32, mtu: Option<u32>) -> Route {
        crate::testing::dev_route(dst, ifindex, mtu, MAIN_TABLE)
    }

    fn via(dst: &str, gateway: &str, ifindex: u32, mtu: Option<u32>) -> Route {
        crate::testing::via_route(dst, gateway, ifindex, mtu, MAIN_TABLE)
    }

    fn in_table(mut r: Route, table: u32) -> Route {
        r.table = table;
        r
    }

    struct Case {
        name: &'static str,
        desired: Vec<Route>,
        observed: Vec<Route>,
        add: Vec<Route>,
        replace: Vec<Route>,
        delete: Vec<Route>,
    }

    #[test]
    fn plan_routes_table() {
        let cases = vec![
            Case {
                name: "empty/empty",
                desired: vec![],
                observed: vec![],
                add: vec![],
                replace: vec![],
                delete: vec![],
            },
            Case {
                name: "all new, output sorted",
                desired: vec![
                    dev("10.3.0.0/16", 5, Some(1420)),
                    dev("10.2.0.0/16", 5, Some(1420)),
                ],
                observed: vec![],
                add: vec![
                    dev("10.2.0.0/16", 5, Some(1420)),
                    dev("10.3.0.0/16", 5, Some(1420)),
                ],
                replace: vec![],
                delete: vec![],
            },
            Case {
                name: "identical is a no-op",
                desired: vec![
                    dev("10.2.0.0/16", 5, Some(1420)),
                    via("10.3.0.0/16", "10.77.0.2", 4, None),
                ],
                observed: vec![
                    via("10.3.0.0/16", "10.77.0.2", 4, None),
                    dev("10.2.0.0/16", 5, Some(1420)),
                ],
                add: vec![],
                replace: vec![],
                delete: vec![],
            },
            Case {
                name: "mtu change replaces",
                desired: vec![dev("10.2.0.0/16", 5, Some(1380))],
                observed: vec![dev("10.2.0.0/16", 5, Some(1420))],
                add: vec![],
                replace: vec![dev("10.2.0.0/16", 5, Some(1380))],
                delete: vec![],
            },
            Case {
                name: "mtu dropped replaces",
                desired: vec![dev("10.2.0.0/16", 5, None)],
                observed: vec![dev("10.2.0.0/16", 5, Some(1420))],
                add: vec![],
                replace: vec![dev("10.2.0.0/16", 5, None)],
                delete: vec![],
            },
            Case {
                name: "next hop change replaces",
                desired: vec![via("10.2.0.0/16", "10.77.0.2", 5, Some(1420))],
                observed: vec![dev("10.2.0.0/16", 5, Some(1420))],
                add: vec![],
                replace: vec![via("10.2.0.0/16", "10.77.0.2", 5, Some(1420))],
                delete: vec![],
            },
            Case {
                name: "output interface change replaces",
                desired: vec![dev("10.2.0.0/16", 6, None)],
                observed: vec![dev("10.2.0.0/16", 5, None)],
                add: vec![],
                replace: vec![dev("10.2.0.0/16", 6, None)],
                delete: vec![],
            },
            Case {
                name: "removal deletes",
                desired: vec![dev("10.2.0.0/16", 5, None)],
                observed: vec![dev("10.2.0.0/16", 5, None), dev("10.4.0.0/16", 5, None)],
                add: vec![],
                replace: vec![],
                delete: vec![dev("10.4.0.0/16", 5, None)],
            },
            Case {
                name: "empty desired deletes everything owned",
                desired: vec![],
                observed: vec![dev("10.4.0.0/16", 5, None), dev("10.2.0.0/16", 5, None)],
                add: vec![],
                replace: vec![],
                delete: vec![dev("10.2.0.0/16", 5, None), dev("10.4.0.0/16", 5, None)],
            },
            Case {
                name: "IPv4 and IPv6 mixed",
                desired: vec![
                    dev("fd00:2::/64", 5, Some(1420)),
                    dev("10.2.0.0/16", 5, Some(1420)),
                    via("fd00:3::/64", "fd00:77::2", 4, None),
                ],
                observed: vec![
                    dev("fd00:2::/64", 5, Some(1500)),
                    dev("10.9.0.0/16", 5, None),
                    dev("fd00:9::/64", 5, None),
                ],
                add: vec![
                    dev("10.2.0.0/16", 5, Some(1420)),
                    via("fd00:3::/64", "fd00:77::2", 4, None),
                ],
                replace: vec![dev("fd00:2::/64", 5, Some(1420))],
                delete: vec![dev("10.9.0.0/16", 5, None), dev("fd00:9::/64", 5, None)],
            },
            Case {
                name: "/32 and /128 are distinct from their covering prefixes",
                desired: vec![dev("10.2.0.7/32", 5, None), dev("fd00:2::7/128", 5, None)],
                observed: vec![dev("10.2.0.0/24", 5, None), dev("fd00:2::/64", 5, None)],
                add: vec![dev("10.2.0.7/32", 5, None), dev("fd00:2::7/128", 5, None)],
                replace: vec![],
                delete: vec![dev("10.2.0.0/24", 5, None), dev("fd00:2::/64", 5, None)],
            },
            Case {
                name: "same prefix in two tables is two routes",
                desired: vec![
                    in_table(dev("10.2.0.0/16", 5, None), 100),
                    dev("10.2.0.0/16", 5, None),
                ],
                observed: vec![in_table(dev("10.2.0.0/16", 5, None), 100)],
                add: vec![dev("10.2.0.0/16", 5, None)],
                replace: vec![],
                delete: vec![],
            },
            Case {
                name: "duplicates observed: keep the right one, delete the rest",
                desired: vec![dev("10.2.0.0/16", 5, Some(1420))],
                observed: vec![
                    dev("10.2.0.0/16", 4, None),
                    dev("10.2.0.0/16", 5, Some(1420)),
                    dev("10.2.0.0/16", 6, None),
                ],
                add: vec![],
                replace: vec![],
                delete: vec![dev("10.2.0.0/16", 4, None), dev("10.2.0.0/16", 6, None)],
            },
            Case {
                name: "duplicates observed, none right: replace one, delete the rest",
                desired: vec![dev("10.2.0.0/16", 5, Some(1420))],
                observed: vec![dev("10.2.0.0/16", 6, None), dev("10.2.0.0/16", 4, None)],
                add: vec![],
                replace: vec![dev("10.2.0.0/16", 5, Some(1420))],
                delete: vec![dev("10.2.0.0/16", 6, None)],
            },
            Case {
                name: "identical duplicates observed: delete one copy",
                desired: vec![dev("10.2.0.0/16", 5, None)],
                observed: vec![dev("10.2.0.0/16", 5, None), dev("10.2.0.0/16", 5, None)],
                add: vec![],
                replace: vec![],
                delete: vec![dev("10.2.0.0/16", 5, None)],
            },
            Case {
                name: "duplicates observed, none desired: delete all",
                desired: vec![],
                observed: vec![dev("10.2.0.0/16", 6, None), dev("10.2.0.0/16", 4, None)],
                add: vec![],
                replace: vec![],
                delete: vec![dev("10.2.0.0/16", 4, None), dev("10.2.0.0/16", 6, None)],
            },
            Case {
                name: "duplicate desired keys: smallest wins whatever the order",
                desired: vec![dev("10.2.0.0/16", 6, None), dev("10.2.0.0/16", 5, None)],
                observed: vec![],
                add: vec![dev("10.2.0.0/16", 5, None)],
                replace: vec![],
                delete: vec![],
            },
            Case {
                name: "desired is normalized to what the kernel reports",
                desired: vec![Route {
                    dst: "10.2.3.4/16".parse().unwrap(),
                    next_hop: NextHop::Dev { ifindex: 5 },
                    mtu: Some(0),
                    table: 0,
                }],
                observed: vec![dev("10.2.0.0/16", 5, None)],
                add: vec![],
                replace: vec![],
                delete: vec![],
            },
        ];
        for case in cases {
            let plan = plan_routes(&case.desired, &case.observed);
            let writes = case.add.len() + case.replace.len() + case.delete.len();
            let expected = RoutePlan {
                add: case.add,
                replace: case.replace,
                delete: case.delete,
            };
            assert_eq!(plan, expected, "case {:?}", case.name);
            assert_eq!(plan.len(), writes, "case {:?}", case.name);
            assert_eq!(plan.is_empty(), writes == 0, "case {:?}", case.name);
        }
    }

    #[test]
    fn a_fail_closed_route_lives_beside_the_tunnel_route_and_outlasts_it() {
        let floor = Route::fail_closed("10.2.0.0/16".parse().unwrap(), MAIN_TABLE);
        let tunnel = dev("10.2.0.0/16", 5, Some(1420));
        let desired = vec![tunnel.clone(), floor.clone()];
        assert_eq!(
            plan_routes(&desired, &[]).add,
            vec![tunnel.clone(), floor.clone()],
            "two routes for one prefix"
        );
        assert!(plan_routes(&desired, &desired).is_empty());
        // The gateway died: its interface took the tunnel route, the floor stayed; the
        // next gateway adds the tunnel route and leaves the floor alone.
        let plan = plan_routes(&desired, std::slice::from_ref(&floor));
        assert_eq!((plan.len(), plan.add), (1, vec![tunnel.clone()]));
        // A route agent's next hop moving replaces its route, never the floor.
        let agent = via("10.2.0.0/16", "198.19.0.3", 2, Some(1420));
        let plan = plan_routes(&[agent.clone(), floor.clone()], &desired);
        assert_eq!((plan.len(), plan.replace), (1, vec![agent]));
        // Withdrawn with the rest.
        assert_eq!(plan_routes(&[], &desired).delete.len(), 2);
        assert_eq!(
            floor.to_string(),
            "unreachable 10.2.0.0/16 metric 4294967294 table 254"
        );
        let tally = route_tally(&desired, &[]);
        assert_eq!(
            (tally.desired, tally.installed()),
            (1, 1),
            "the floor is not counted"
        );
    }

    #[test]
    fn plan_routes_is_independent_of_input_order() {
        let desired: Vec<Route> = (0..50u32)
            .map(|i| dev(&format!("10.{i}.0.0/16"), 5, Some(1420)))
            .collect();
        let observed: Vec<Route> = (25..75u32)
            .map(|i| dev(&format!("10.{i}.0.0/16"), 5, Some(1400)))
            .collect();
        let forward = plan_routes(&desired, &observed);
        let mut d = desired.clone();
        let mut o = observed.clone();
        d.reverse();
        o.reverse();
        assert_eq!(plan_routes(&d, &o), forward);
        assert_eq!(forward.add.len(), 25);
        assert_eq!(forward.replace.len(), 25);
        assert_eq!(forward.delete.len(), 25);
    }

    #[test]
    fn plan_routes_ten_thousand_routes_noop_and_full_churn() {
        let routes: Vec<Route> = (0..10_000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a64_0000 + i);
                dev(&format!("{ip}/32"), 5, Some(1420))
            })
            .collect();
        let start = std::time::Instant::now();
        assert!(plan_routes(&routes, &routes).is_empty());
        let plan = plan_routes(&routes, &[]);
        assert_eq!(plan.add.len(), 10_000);
        let plan = plan_routes(&[], &routes);
        assert_eq!(plan.delete.len(), 10_000);
        eprintln!("planned 3 x 10,000 routes in {:?}", start.elapsed());
    }

    #[test]
    fn tunnel_mtu_subtracts_wireguard_overhead() {
        let cases = [
            (1500, false, 1440),
            (1500, true, 1420),
            (9001, false, 8941),
            (9000, true, 8920),
            (1280, true, 1200),
            (59, false, 0),
            (0, true, 0),
        ];
        for (underlay, v6, expected) in cases {
            assert_eq!(
                tunnel_mtu(underlay, v6),
                expected,
                "underlay {underlay} ipv6 {v6}"
            );
        }
    }

    #[test]
    fn route_tally_counts_what_the_kernel_refused() {
        let a = dev("10.2.0.0/16", 4, Some(1420));
        let b = dev("10.102.0.0/16", 4, Some(1420));
        let c = dev("fd00:2::/48", 4, Some(1420));
        let all = [a.clone(), b.clone(), c.clone(), a.clone()];
        let tally = route_tally(&all, &[]);
        assert_eq!((tally.desired, tally.installed()), (3, 3));
        assert!(tally.missing.is_empty());
        let tally = route_tally(&all, &[c, b]);
        assert_eq!((tally.desired, tally.installed()), (3, 1));
        let missing: Vec<String> = tally.missing.iter().map(ToString::to_string).collect();
        assert_eq!(missing, vec!["10.102.0.0/16", "fd00:2::/48"]);
        // A refused route that is not wanted (a failed delete) misses nothing.
        let tally = route_tally(&[a], &[dev("10.9.0.0/16", 4, None)]);
        assert_eq!((tally.desired, tally.installed()), (1, 1));
    }

    #[test]
    fn route_display_names_destination_and_next_hop() {
        assert_eq!(
            via("10.2.0.0/16", "10.77.0.2", 4, Some(1420)).to_string(),
            "10.2.0.0/16 via 10.77.0.2 ifindex 4 table 254 mtu 1420"
        );
        assert_eq!(
            dev("fd00:2::/64", 5, None).to_string(),
            "fd00:2::/64 dev ifindex 5 table 254"
        );
    }
}
