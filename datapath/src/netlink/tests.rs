//! The netlink shell against a real kernel, in throw-away network namespaces.

use std::future::Future;
use std::process::Command;
use std::time::Instant;

use rtnetlink::LinkVeth;

use super::*;
use crate::testing::{dev_route as dev, in_fresh_netns, via_route as via};

/// Runs the async `test` in a fresh network namespace (see [`in_fresh_netns`]).
fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    in_fresh_netns(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(test());
    });
}

/// Runs `ip` in the calling thread's namespace (a forked child inherits
/// the namespaces of the thread that forked it).
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Lab {
    nl: Netlink,
    link0: u32,
}

/// Creates veth pair `name`/`{name}p`, both up (so the carrier is up), and
/// returns the index of `name`. A veth, not a link0: this kernel is built
/// without CONFIG_DUMMY.
async fn add_veth(nl: &Netlink, name: &str, mtu: u32) -> u32 {
    let peer = format!("{name}p");
    nl.handle()
        .link()
        .add(LinkVeth::new(name, &peer).build())
        .execute()
        .await
        .unwrap();
    let index = nl.link_index(name).await.unwrap().expect("veth created");
    let peer = nl
        .link_index(&peer)
        .await
        .unwrap()
        .expect("veth peer created");
    assert!(nl.set_link_up_with_mtu(peer, 1500).await.unwrap());
    assert!(nl.set_link_up_with_mtu(index, mtu).await.unwrap());
    index
}

/// lo up, and veth `cw-test0` up with MTU 1500, 10.77.0.1/24 and fd00:77::1/64.
async fn lab() -> Lab {
    let nl = Netlink::new().await.expect("netlink connection");
    let lo = nl
        .link_index("lo")
        .await
        .unwrap()
        .expect("every netns has lo");
    nl.handle()
        .link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .unwrap();
    let link0 = add_veth(&nl, "cw-test0", 1500).await;
    assert!(nl
        .add_address(link0, "10.77.0.1/24".parse().unwrap())
        .await
        .unwrap());
    assert!(nl
        .add_address(link0, "fd00:77::1/64".parse().unwrap())
        .await
        .unwrap());
    Lab { nl, link0 }
}

fn sorted(mut routes: Vec<Route>) -> Vec<Route> {
    routes.sort_by_key(|r| (r.table, r.dst, r.next_hop, r.mtu));
    routes
}

fn line_for<'a>(output: &'a str, dst: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == dst))
        .unwrap_or_else(|| panic!("no route to {dst} in:\n{output}"))
}

#[test]
fn a_fail_closed_route_outlives_the_interface_under_the_tunnel_route() {
    in_netns(|| async {
        let Lab { nl, .. } = lab().await;
        let tun = add_veth(&nl, "cw-tun0", 1420).await;
        // A default route, as every real node has: what a leak would take.
        ip(&["route", "add", "default", "via", "10.77.0.2"]);
        ip(&["-6", "route", "add", "default", "via", "fd00:77::2"]);
        let desired = vec![
            dev("10.2.0.0/16", tun, Some(1420), MAIN_TABLE),
            Route::fail_closed("10.2.0.0/16".parse().unwrap(), MAIN_TABLE),
            dev("fd00:2::/64", tun, Some(1420), MAIN_TABLE),
            Route::fail_closed("fd00:2::/64".parse().unwrap(), MAIN_TABLE),
        ];
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        assert_eq!(report.added, 4, "{report}");
        assert_eq!(
            sorted(nl.list_owned_routes(MAIN_TABLE).await.unwrap()),
            sorted(desired.clone())
        );
        let writes = nl.writes();
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        assert_eq!((report.changed(), nl.writes() - writes), (0, 0), "a no-op");
        assert!(ip(&["route", "get", "10.2.0.9"]).contains("dev cw-tun0"));
        assert!(ip(&["-6", "route", "get", "fd00:2::9"]).contains("dev cw-tun0"));

        // The gateway dies and its interface goes with it: nothing for the remote
        // ranges may take the default route now.
        nl.delete_link(tun).await.unwrap();
        for (family, addr) in [("-4", "10.2.0.9"), ("-6", "fd00:2::9")] {
            let out = Command::new("ip")
                .args([family, "route", "get", addr])
                .output()
                .expect("run ip");
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && !said.contains("via") && !said.contains("cw-test0"),
                "{addr} is routed after the tunnel interface went: {said}"
            );
        }
        let left = nl.list_owned_routes(MAIN_TABLE).await.unwrap();
        assert!(left.iter().all(Route::is_fail_closed), "{left:?}");
        assert_eq!(left.len(), 2);

        // A clean stop withdraws the floor too.
        nl.reconcile(&[], MAIN_TABLE).await.unwrap();
        assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());
        assert!(ip(&["route", "get", "10.2.0.9"]).contains("via 10.77.0.2"));
    });
}

#[test]
fn reconcile_installs_owned_routes_then_writes_nothing() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        // `ip` must see this namespace, not the root one, or the checks
        // below would prove nothing.
        assert!(ip(&["link", "show", "cw-test0"]).contains("cw-test0"));

        let desired = vec![
            dev("10.2.0.0/16", link0, Some(1420), MAIN_TABLE),
            via("10.3.0.0/16", "10.77.0.2", link0, Some(1420), MAIN_TABLE),
            dev("fd00:2::/64", link0, Some(1420), MAIN_TABLE),
        ];
        let writes = nl.writes();
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        assert_eq!(
            report,
            ApplyReport {
                added: 3,
                ..ApplyReport::default()
            }
        );
        assert_eq!(nl.writes() - writes, 3);
        assert_eq!(
            sorted(nl.list_owned_routes(MAIN_TABLE).await.unwrap()),
            sorted(desired.clone())
        );

        let v4 = ip(&["-d", "route", "show", "proto", "203"]);
        let line = line_for(&v4, "10.2.0.0/16");
        assert!(
            line.contains("dev cw-test0")
                && line.contains("scope link")
                && line.contains("mtu 1420"),
            "{line}"
        );
        let line = line_for(&v4, "10.3.0.0/16");
        assert!(
            line.contains("via 10.77.0.2 dev cw-test0") && line.contains("mtu 1420"),
            "{line}"
        );
        assert!(
            !line.contains("scope link"),
            "via routes are scope universe: {line}"
        );
        assert_eq!(
            v4.lines().count(),
            2,
            "only our routes carry proto 203:\n{v4}"
        );
        let v6 = ip(&["-6", "-d", "route", "show", "proto", "203"]);
        let line = line_for(&v6, "fd00:2::/64");
        assert!(
            line.contains("dev cw-test0") && line.contains("mtu 1420"),
            "{line}"
        );

        let writes = nl.writes();
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        assert_eq!(report, ApplyReport::default());
        assert_eq!(nl.writes(), writes, "a no-op reconcile must not write");
    });
}

#[test]
fn reconcile_with_empty_desired_deletes_only_owned_routes() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        let desired = vec![
            dev("10.2.0.0/16", link0, Some(1420), MAIN_TABLE),
            dev("fd00:2::/64", link0, None, MAIN_TABLE),
        ];
        nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        // Routes made by someone else: by `ip` (proto boot) and over
        // netlink with another protocol number.
        ip(&["route", "add", "10.9.0.0/16", "dev", "cw-test0"]);
        ip(&["-6", "route", "add", "fd00:9::/64", "dev", "cw-test0"]);
        let foreign = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 8, 0, 0), 16)
            .output_interface(link0)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Static)
            .build();
        nl.handle().route().add(foreign).execute().await.unwrap();

        let report = nl.reconcile(&[], MAIN_TABLE).await.unwrap();
        assert_eq!(
            report,
            ApplyReport {
                deleted: 2,
                ..ApplyReport::default()
            }
        );
        assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());
        assert!(ip(&["route", "show", "proto", "203"]).trim().is_empty());
        assert!(ip(&["-6", "route", "show", "proto", "203"])
            .trim()
            .is_empty());
        let v4 = ip(&["route", "show"]);
        for dst in ["10.9.0.0/16", "10.8.0.0/16", "10.77.0.0/24"] {
            line_for(&v4, dst);
        }
        line_for(&ip(&["-6", "route", "show"]), "fd00:9::/64");
    });
}

#[test]
fn reconcile_replaces_on_mtu_and_next_hop_change() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        const TABLE: u32 = 100;
        // A table with no routes yet lists as empty, not as an error.
        assert!(nl.list_owned_routes(TABLE).await.unwrap().is_empty());

        let steps = [
            vec![
                dev("10.2.0.0/16", link0, Some(1420), TABLE),
                dev("fd00:2::/64", link0, Some(1420), TABLE),
            ],
            vec![
                dev("10.2.0.0/16", link0, Some(1380), TABLE),
                dev("fd00:2::/64", link0, Some(1380), TABLE),
            ],
            vec![
                via("10.2.0.0/16", "10.77.0.2", link0, Some(1380), TABLE),
                via("fd00:2::/64", "fd00:77::2", link0, Some(1380), TABLE),
            ],
            vec![
                via("10.2.0.0/16", "10.77.0.2", link0, None, TABLE),
                via("fd00:2::/64", "fd00:77::2", link0, None, TABLE),
            ],
        ];
        for (n, desired) in steps.iter().enumerate() {
            let writes = nl.writes();
            let report = nl.reconcile(desired, TABLE).await.unwrap();
            let expected = if n == 0 {
                ApplyReport {
                    added: 2,
                    ..ApplyReport::default()
                }
            } else {
                ApplyReport {
                    replaced: 2,
                    ..ApplyReport::default()
                }
            };
            assert_eq!(report, expected, "step {n}");
            assert_eq!(nl.writes() - writes, 2, "step {n}");
            assert_eq!(
                sorted(nl.list_owned_routes(TABLE).await.unwrap()),
                sorted(desired.clone()),
                "step {n}"
            );
        }
        let v4 = ip(&["route", "show", "table", "100", "proto", "203"]);
        let line = line_for(&v4, "10.2.0.0/16");
        assert!(
            line.contains("via 10.77.0.2") && !line.contains("mtu"),
            "{line}"
        );
        assert!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().is_empty());

        // Table ids above 255 travel in RTA_TABLE, not the header byte.
        let big = vec![dev("10.5.0.0/16", link0, Some(1400), 1000)];
        nl.reconcile(&big, 1000).await.unwrap();
        assert_eq!(nl.list_owned_routes(1000).await.unwrap(), big);
        line_for(&ip(&["route", "show", "table", "1000"]), "10.5.0.0/16");

        let err = nl.reconcile(&big, TABLE).await.unwrap_err();
        assert!(
            matches!(err, NetlinkError::TableMismatch { table: TABLE, .. }),
            "{err}"
        );
    });
}

#[test]
fn reconcile_removes_duplicate_owned_routes() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        // What a crash between two writes could leave: two routes of
        // ours for one prefix.
        ip(&[
            "route",
            "append",
            "10.5.0.0/16",
            "dev",
            "cw-test0",
            "proto",
            "203",
        ]);
        ip(&[
            "route",
            "append",
            "10.5.0.0/16",
            "via",
            "10.77.0.2",
            "proto",
            "203",
        ]);
        assert_eq!(nl.list_owned_routes(MAIN_TABLE).await.unwrap().len(), 2);

        let desired = vec![via("10.5.0.0/16", "10.77.0.2", link0, None, MAIN_TABLE)];
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        assert_eq!(
            report,
            ApplyReport {
                deleted: 1,
                ..ApplyReport::default()
            }
        );
        assert_eq!(nl.list_owned_routes(MAIN_TABLE).await.unwrap(), desired);
    });
}

#[test]
fn apply_keeps_going_and_names_failed_routes() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        ip(&["route", "add", "10.9.0.0/16", "dev", "cw-test0"]);
        let plan = RoutePlan {
            add: vec![
                dev("10.2.0.0/16", link0, None, MAIN_TABLE),
                // Not on any connected subnet.
                via("10.4.0.0/16", "192.0.2.1", link0, None, MAIN_TABLE),
                // Held by a route that is not ours.
                dev("10.9.0.0/16", link0, None, MAIN_TABLE),
            ],
            replace: vec![],
            // Already gone: counts as done.
            delete: vec![dev("10.6.0.0/16", link0, None, MAIN_TABLE)],
        };
        let err = nl.apply(&plan).await.unwrap_err();
        let message = err.to_string();
        let NetlinkError::Apply { report, failures } = err else {
            panic!("unexpected error {message}");
        };
        assert_eq!(
            report,
            ApplyReport {
                added: 1,
                replaced: 0,
                deleted: 1,
                failed: 2
            }
        );
        let failed: Vec<_> = failures
            .iter()
            .map(|f| (f.route.dst.to_string(), f.errno))
            .collect();
        assert_eq!(
            failed,
            vec![
                ("10.4.0.0/16".to_string(), Some(libc::ENETUNREACH)),
                ("10.9.0.0/16".to_string(), Some(libc::EEXIST)),
            ]
        );
        assert!(
            message.contains("add 10.4.0.0/16 via 192.0.2.1"),
            "{message}"
        );
        assert!(message.contains("not made by Causeway"), "{message}");
        eprintln!("apply error reads: {message}");
        let foreign = line_for(&ip(&["route", "show"]), "10.9.0.0/16").to_string();
        assert!(!foreign.contains("proto 203"), "{foreign}");
        assert_eq!(
            nl.list_owned_routes(MAIN_TABLE).await.unwrap(),
            vec![dev("10.2.0.0/16", link0, None, MAIN_TABLE)]
        );
    });
}

#[test]
fn link_helpers_read_before_writing() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        assert_eq!(nl.link_index("cw-missing").await.unwrap(), None);

        let writes = nl.writes();
        assert!(!nl.set_link_up_with_mtu(link0, 1500).await.unwrap());
        assert!(!nl
            .add_address(link0, "10.77.0.1/24".parse().unwrap())
            .await
            .unwrap());
        assert!(!nl
            .add_address(link0, "fd00:77::1/64".parse().unwrap())
            .await
            .unwrap());
        assert_eq!(
            nl.writes(),
            writes,
            "unchanged link state must not be written"
        );

        assert!(nl.set_link_up_with_mtu(link0, 1400).await.unwrap());
        assert_eq!(nl.writes(), writes + 1);
        assert_eq!(nl.link_mtu(link0).await.unwrap(), 1400);
        assert!(!nl.set_link_up_with_mtu(link0, 1400).await.unwrap());

        assert_eq!(
            nl.underlay_mtu_for("10.77.0.1".parse().unwrap())
                .await
                .unwrap(),
            1400
        );
        assert_eq!(
            nl.underlay_mtu_for("fd00:77::1".parse().unwrap())
                .await
                .unwrap(),
            1400
        );
        let err = nl
            .underlay_mtu_for("192.0.2.99".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, NetlinkError::AddressNotFound { .. }), "{err}");

        // No default route: the smallest up non-loopback interface.
        let second = add_veth(&nl, "cw-test1", 1300).await;
        assert_eq!(
            nl.underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
                .await
                .unwrap(),
            1300
        );
        // With a default route: its interface.
        ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.77.0.254",
            "dev",
            "cw-test0",
        ]);
        assert_eq!(
            nl.underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
                .await
                .unwrap(),
            1400
        );
        assert_eq!(
            nl.underlay_mtu_for(Ipv6Addr::UNSPECIFIED.into())
                .await
                .unwrap(),
            1300
        );

        assert!(nl.delete_link(second).await.unwrap());
        assert!(!nl.delete_link(second).await.unwrap());
        assert!(nl.delete_link(link0).await.unwrap());
        let err = nl.link_mtu(link0).await.unwrap_err();
        assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err}");
        let err = nl
            .underlay_mtu_for(Ipv4Addr::UNSPECIFIED.into())
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetlinkError::NoUnderlay { family: 4 }),
            "{err}"
        );
    });
}

#[test]
fn reconcile_ten_thousand_routes_then_noop_makes_zero_writes() {
    in_netns(|| async {
        let Lab { nl, link0 } = lab().await;
        let desired: Vec<Route> = (0..10_000u32)
            .map(|i| Route {
                dst: IpNet::new(Ipv4Addr::from(0x0a64_0000 + i).into(), 32).unwrap(),
                next_hop: NextHop::Dev { ifindex: link0 },
                mtu: Some(1420),
                table: MAIN_TABLE,
            })
            .collect();

        let start = Instant::now();
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        eprintln!("reconcile adding 10,000 routes: {:?}", start.elapsed());
        assert_eq!(report.added, 10_000);
        assert_eq!(
            nl.list_owned_routes(MAIN_TABLE).await.unwrap().len(),
            10_000
        );

        let writes = nl.writes();
        let start = Instant::now();
        let report = nl.reconcile(&desired, MAIN_TABLE).await.unwrap();
        eprintln!("no-op reconcile of 10,000 routes: {:?}", start.elapsed());
        assert_eq!(report, ApplyReport::default());
        assert_eq!(nl.writes(), writes, "a no-op reconcile must not write");

        let start = Instant::now();
        let report = nl.reconcile(&[], MAIN_TABLE).await.unwrap();
        eprintln!("reconcile deleting 10,000 routes: {:?}", start.elapsed());
        assert_eq!(report.deleted, 10_000);
    });
}
