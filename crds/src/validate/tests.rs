use super::*;
use crate::cluster_endpoint::{ClusterEndpointSpec, GatewayEndpoint};

const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const KEY_C: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn gw(endpoint: &str, key: &str) -> GatewayEndpoint {
    GatewayEndpoint {
        node_name: "gw-1".into(),
        public_endpoint: endpoint.into(),
        public_key: key.into(),
        private_ip: Some("198.19.1.1".into()),
        private_ips: vec![],
        health_check_ip: None,
    }
}

fn ep(
    id: &str,
    pods: &[&str],
    services: &[&str],
    gateways: Vec<GatewayEndpoint>,
) -> ClusterEndpoint {
    ClusterEndpoint::new(
        id,
        ClusterEndpointSpec {
            cluster_id: id.into(),
            pod_cidrs: pods.iter().map(|s| s.to_string()).collect(),
            service_cidrs: services.iter().map(|s| s.to_string()).collect(),
            gateways,
        },
    )
}

fn site_a() -> ClusterEndpoint {
    ep(
        "site-a",
        &["10.1.0.0/16"],
        &["10.101.0.0/16"],
        vec![gw("198.18.0.1:51820", KEY_A)],
    )
}

/// One bad object per row: (what, object, predicate on the first error, words the message must hold).
type Row = (
    &'static str,
    ClusterEndpoint,
    fn(&ValidationError) -> bool,
    &'static [&'static str],
);

#[test]
fn every_bad_input_class_is_refused_with_an_actionable_message() {
    let ok_gw = || vec![gw("198.18.0.2:51820", KEY_B)];
    let rows: Vec<Row> = vec![
        (
            "cidr syntax",
            ep("b", &["10.2.0.0/33"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrSyntax { field, .. } if field == "spec.podCIDRs[0]"),
            &["\"b\"", "spec.podCIDRs[0]", "10.2.0.0/33", "10.1.0.0/16"],
        ),
        (
            "cidr not a cidr",
            ep("b", &["10.2.0.0"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrSyntax { .. }),
            &["10.2.0.0", "address/prefix"],
        ),
        (
            "cidr host bits v4",
            ep("b", &["10.2.3.4/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrHostBits { network, .. } if network.to_string() == "10.2.0.0/16"),
            &["10.2.3.4/16", "host bits", "10.2.0.0/16"],
        ),
        (
            "cidr host bits v6",
            ep("b", &["10.2.0.0/16"], &["fd00:2::1/64"], ok_gw()),
            |e| matches!(e, ValidationError::CidrHostBits { field, .. } if field == "spec.serviceCIDRs[0]"),
            &["fd00:2::/64"],
        ),
        (
            "cidr default route",
            ep("b", &["0.0.0.0/0"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrTooBroad { .. }),
            &["/8"],
        ),
        (
            "cidr half the internet",
            ep("b", &["10.2.0.0/16"], &["128.0.0.0/1"], ok_gw()),
            |e| matches!(e, ValidationError::CidrTooBroad { field, .. } if field == "spec.serviceCIDRs[0]"),
            &["128.0.0.0/1"],
        ),
        (
            "cidr v6 too broad",
            ep("b", &["fd00::/8"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrTooBroad { .. }),
            &["/16"],
        ),
        (
            "cidr loopback",
            ep("b", &["127.0.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrReserved { what, .. } if *what == "loopback"),
            &["127.0.0.0/8"],
        ),
        (
            "cidr metadata",
            ep("b", &["10.2.0.0/16", "169.254.169.0/24"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrReserved { .. }),
            &["cloud metadata"],
        ),
        (
            "cidr multicast v6",
            ep("b", &["ff02::/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrReserved { .. }),
            &["multicast"],
        ),
        (
            "cidr holds own gateway",
            ep("b", &["198.18.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrCapturesEndpoint { other_object, .. } if other_object == "b"),
            &["198.18.0.2:51820", "underlay"],
        ),
        (
            "health check outside",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![GatewayEndpoint {
                    health_check_ip: Some("10.9.0.1".into()),
                    ..gw("198.18.0.2:51820", KEY_B)
                }],
            ),
            |e| matches!(e, ValidationError::HealthCheckOutside { field, .. } if field == "spec.gateways[0].healthCheckIP"),
            &["10.9.0.1", "podCIDRs"],
        ),
        (
            "private ips",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![GatewayEndpoint {
                    private_ips: vec!["fd00::1".into(), "nope".into()],
                    ..gw("198.18.0.2:51820", KEY_B)
                }],
            ),
            |e| matches!(e, ValidationError::Ip { field, .. } if field == "spec.gateways[0].privateIPs[1]"),
            &["nope"],
        ),
        (
            "overlap within cluster",
            ep("b", &["10.2.0.0/16"], &["10.2.128.0/17"], ok_gw()),
            |e| matches!(e, ValidationError::CidrOverlap { other_object, .. } if other_object == "b"),
            &[
                "spec.serviceCIDRs[0]",
                "10.2.128.0/17",
                "spec.podCIDRs[0]",
                "10.2.0.0/16",
                "distinct",
            ],
        ),
        (
            "overlap within cluster v6",
            ep("b", &["fd00:2::/48", "fd00:2:0:1::/64"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrOverlap { .. }),
            &["fd00:2:0:1::/64"],
        ),
        (
            "no pod cidrs",
            ep("b", &[], &["10.102.0.0/16"], ok_gw()),
            |e| matches!(e, ValidationError::NoPodCidrs { .. }),
            &["spec.podCIDRs", "empty"],
        ),
        (
            "cluster id uppercase",
            ep("Site-B", &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::ClusterId { .. }),
            &["Site-B", "DNS-1123"],
        ),
        (
            "cluster id dash",
            ep("-b", &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::ClusterId { .. }),
            &["'-'"],
        ),
        (
            "cluster id too long",
            ep(&"b".repeat(64), &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::ClusterId { .. }),
            &["63"],
        ),
        (
            "cluster id empty",
            ep("", &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::ClusterId { .. }),
            &["empty"],
        ),
        (
            "cluster id dot",
            ep("site.b", &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::ClusterId { .. }),
            &["site.b"],
        ),
        (
            "key not base64",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:51820", "not-a-key!")],
            ),
            |e| matches!(e, ValidationError::Key { field, .. } if field == "spec.gateways[0].publicKey"),
            &["not-a-key!", "base64", "pubkey"],
        ),
        (
            "key wrong length",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:51820", "AAAAAAAA")],
            ),
            |e| {
                matches!(
                    e,
                    ValidationError::Key {
                        reason: KeyError::Length(6),
                        ..
                    }
                )
            },
            &["6 bytes"],
        ),
        (
            "endpoint no port",
            ep("b", &["10.2.0.0/16"], &[], vec![gw("198.18.0.2", KEY_B)]),
            |e| matches!(e, ValidationError::Endpoint { field, .. } if field == "spec.gateways[0].publicEndpoint"),
            &["no port", "ip:port"],
        ),
        (
            "endpoint v6 no brackets",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("2001:db8::1:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { reason, .. } if reason.contains("brackets")),
            &["[2001:db8::1]:51820"],
        ),
        (
            "endpoint loopback",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("127.0.0.53:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { reason, .. } if reason.contains("loopback")),
            &["127.0.0.53:51820", "loopback", "ip:port"],
        ),
        (
            "endpoint cloud metadata (link-local)",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("169.254.169.254:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { reason, .. } if reason.contains("link-local")),
            &["169.254.169.254:51820", "link-local"],
        ),
        (
            "endpoint v6 link-local",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("[fe80::1]:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { reason, .. } if reason.contains("link-local")),
            &["link-local"],
        ),
        (
            "endpoint broadcast",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("255.255.255.255:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { reason, .. } if reason.contains("unicast")),
            &["unicast"],
        ),
        (
            "endpoint hostname",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("gw.example:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { .. }),
            &["host names"],
        ),
        (
            "endpoint port 0",
            ep("b", &["10.2.0.0/16"], &[], vec![gw("198.18.0.2:0", KEY_B)]),
            |e| matches!(e, ValidationError::Endpoint { .. }),
            &["port 0"],
        ),
        (
            "endpoint port too big",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:70000", KEY_B)],
            ),
            |e| matches!(e, ValidationError::Endpoint { .. }),
            &["70000"],
        ),
        (
            "endpoint unspecified",
            ep("b", &["10.2.0.0/16"], &[], vec![gw("0.0.0.0:51820", KEY_B)]),
            |e| matches!(e, ValidationError::Endpoint { .. }),
            &["unicast"],
        ),
        (
            "private ip",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![GatewayEndpoint {
                    private_ip: Some("198.19.2".into()),
                    ..gw("198.18.0.2:51820", KEY_B)
                }],
            ),
            |e| matches!(e, ValidationError::Ip { field, .. } if field == "spec.gateways[0].privateIP"),
            &["198.19.2", "IP address"],
        ),
        (
            "duplicate key in one cluster",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:51820", KEY_B), gw("198.18.0.3:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::DuplicateKey { other_field, .. } if other_field == "spec.gateways[1].publicKey"),
            &["spec.gateways[0].publicKey", "own key pair"],
        ),
        // Rows from here on conflict with site-a, which is accepted first.
        (
            "overlap across clusters",
            ep("b", &["10.1.128.0/17"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrOverlap { other_object, other_value, .. } if other_object == "site-a" && other_value.to_string() == "10.1.0.0/16"),
            &[
                "\"b\"",
                "spec.podCIDRs[0]",
                "10.1.128.0/17",
                "\"site-a\"",
                "10.1.0.0/16",
            ],
        ),
        (
            "pod overlaps other's service",
            ep("b", &["10.101.0.0/24"], &[], ok_gw()),
            |e| matches!(e, ValidationError::CidrOverlap { other_field, .. } if other_field == "spec.serviceCIDRs[0]"),
            &["10.101.0.0/16"],
        ),
        (
            "identical cidr",
            ep("b", &["10.2.0.0/16"], &["10.1.0.0/16"], ok_gw()),
            |e| matches!(e, ValidationError::CidrOverlap { .. }),
            &["spec.serviceCIDRs[0]"],
        ),
        (
            "cidr holds another's gateway",
            ep(
                "b",
                &["198.18.0.0/24"],
                &[],
                vec![gw("198.18.1.2:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::CidrCapturesEndpoint { other_object, .. } if other_object == "site-a"),
            &["198.18.0.1:51820"],
        ),
        (
            "gateway inside another's cidr",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("10.101.0.9:51820", KEY_B)],
            ),
            |e| matches!(e, ValidationError::CidrCapturesEndpoint { endpoint, .. } if endpoint.port() == 51820),
            &["10.101.0.0/16"],
        ),
        (
            "duplicate cluster id",
            ep("site-a", &["10.2.0.0/16"], &[], ok_gw()),
            |e| matches!(e, ValidationError::DuplicateClusterId { .. }),
            &["already claimed"],
        ),
        (
            "key reused across clusters",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:51820", KEY_A)],
            ),
            |e| matches!(e, ValidationError::DuplicateKey { other_object, .. } if other_object == "site-a"),
            &["genkey"],
        ),
        (
            "too many pod cidrs",
            {
                let many: Vec<String> = (0..10_000)
                    .map(|i| format!("10.{}.{}.0/24", 2 + i / 256, i % 256))
                    .collect();
                let many: Vec<&str> = many.iter().map(String::as_str).collect();
                ep("b", &many, &[], ok_gw())
            },
            |e| {
                matches!(
                    e,
                    ValidationError::TooMany {
                        field: "spec.podCIDRs",
                        count: 10_000,
                        ..
                    }
                )
            },
            &["spec.podCIDRs", "10000 entries", "limit of 32"],
        ),
        (
            "too many gateways",
            ep(
                "b",
                &["10.2.0.0/16"],
                &[],
                vec![gw("198.18.0.2:51820", KEY_B); 17],
            ),
            |e| {
                matches!(
                    e,
                    ValidationError::TooMany {
                        field: "spec.gateways",
                        ..
                    }
                )
            },
            &["spec.gateways", "17 entries", "limit of 16"],
        ),
    ];
    for (what, bad, is_expected, words) in rows {
        let check = validate_clusterset(&[site_a(), bad]);
        assert_eq!(check.sites.len(), 1, "{what}: the bad object was accepted");
        assert_eq!(
            check.sites[0].cluster_id, "site-a",
            "{what}: the good object was refused"
        );
        let errors: Vec<_> = check.errors().collect();
        assert!(
            errors.iter().any(|e| is_expected(e)),
            "{what}: wrong error(s): {errors:#?}"
        );
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for word in words {
            assert!(
                message.contains(word),
                "{what}: message lacks {word:?}:\n{message}"
            );
        }
    }
}

#[test]
fn valid_edge_cases_are_accepted() {
    let rows: Vec<(&str, Vec<ClusterEndpoint>)> = vec![
        (
            "adjacent cidrs",
            vec![
                ep(
                    "a",
                    &["10.0.0.0/9"],
                    &["10.128.0.0/16"],
                    vec![gw("198.18.0.1:51820", KEY_A)],
                ),
                ep(
                    "b",
                    &["10.129.0.0/16"],
                    &[],
                    vec![gw("198.18.0.2:51820", KEY_B)],
                ),
            ],
        ),
        (
            "host routes /32 and /128",
            vec![
                ep(
                    "a",
                    &["10.1.0.1/32", "10.1.0.2/32"],
                    &["fd00::1/128"],
                    vec![gw("198.18.0.1:51820", KEY_A)],
                ),
                ep(
                    "b",
                    &["10.1.0.3/32"],
                    &["fd00::2/128"],
                    vec![gw("198.18.0.2:51820", KEY_B)],
                ),
            ],
        ),
        (
            "dual stack",
            vec![
                ep(
                    "a",
                    &["10.1.0.0/16", "fd00:1::/48"],
                    &["10.101.0.0/16", "fd00:101::/108"],
                    vec![gw("198.18.0.1:51820", KEY_A)],
                ),
                ep(
                    "b",
                    &["10.2.0.0/16", "fd00:2::/48"],
                    &[],
                    vec![gw("[2001:db8::2]:51820", KEY_B)],
                ),
            ],
        ),
        (
            "same prefix different family",
            vec![
                ep(
                    "a",
                    &["10.1.0.0/16"],
                    &[],
                    vec![gw("198.18.0.1:51820", KEY_A)],
                ),
                ep(
                    "b",
                    &["::a01:0/112"],
                    &[],
                    vec![gw("198.18.0.2:51820", KEY_B)],
                ),
            ],
        ),
        (
            "no gateways yet, several gateways, 63-char id",
            vec![
                ep("a", &["10.1.0.0/16"], &[], vec![]),
                ep(
                    "b",
                    &["10.2.0.0/16"],
                    &[],
                    vec![gw("198.18.0.2:51820", KEY_B), gw("198.18.0.3:51820", KEY_C)],
                ),
                ep(&"c".repeat(63), &["10.3.0.0/16"], &[], vec![]),
            ],
        ),
    ];
    for (what, eps) in rows {
        let check = validate_clusterset(&eps);
        assert!(
            check.refused.is_empty(),
            "{what}: refused {:#?}",
            check.refused
        );
        assert_eq!(check.sites.len(), eps.len(), "{what}");
    }
}

#[test]
fn parsed_site_carries_typed_values() {
    let site = validate_endpoint(&site_a()).unwrap();
    assert_eq!(
        site.pod_cidrs,
        vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        site.gateways[0].public_endpoint,
        "198.18.0.1:51820".parse().unwrap()
    );
    assert_eq!(
        site.gateways[0].private_ip,
        Some("198.19.1.1".parse().unwrap())
    );
    assert!(site.contains("10.101.3.4".parse().unwrap()));
    assert!(!site.contains("10.2.0.1".parse().unwrap()));
}

#[test]
fn first_come_first_served_keeps_the_working_cluster() {
    let newcomer = ep(
        "b",
        &["10.1.0.0/24"],
        &[],
        vec![gw("198.18.0.2:51820", KEY_B)],
    );
    let check = validate_clusterset(&[site_a(), newcomer.clone()]);
    assert_eq!(
        check.site("site-a").map(|s| s.object.as_str()),
        Some("site-a")
    );
    assert_eq!(check.refused[0].0, "b");
    // The order is the caller's priority: the other way round, the other one wins.
    let check = validate_clusterset(&[newcomer, site_a()]);
    assert_eq!(check.refused[0].0, "site-a");
    assert_eq!(check.refused[0].1[0].reason(), "OverlappingCIDR");
}

#[test]
fn all_errors_of_an_object_are_reported_at_once() {
    let bad = ep("B", &["10.2.0.1/16", "nope"], &[], vec![gw("x", "y")]);
    let errors = validate_endpoint(&bad).unwrap_err();
    let reasons: Vec<_> = errors.iter().map(|e| e.reason()).collect();
    assert_eq!(
        reasons,
        [
            "InvalidClusterID",
            "InvalidCIDR",
            "InvalidCIDR",
            "InvalidPublicKey",
            "InvalidEndpoint"
        ]
    );
}

#[test]
fn another_cluster_may_claim_only_accepted_ranges_and_never_a_protected_one() {
    let acceptance = Acceptance {
        protected: vec!["10.250.0.0/16".parse().unwrap()],
        ..Acceptance::default()
    };
    // (what, site-b's pod CIDRs, the expected refusal's reason, words of its message)
    let rows: &[(&str, &[&str], &str, &[&str])] = &[
        (
            "a public range",
            &["10.2.0.0/16", "8.8.8.0/24"],
            "CIDRNotAllowed",
            &[
                "spec.podCIDRs[1] 8.8.8.0/24",
                "outside the ranges",
                "10.0.0.0/8",
                "--allowed-remote-cidrs",
            ],
        ),
        (
            "this cluster's node network",
            &["10.250.4.0/24"],
            "CIDRProtected",
            &[
                "10.250.4.0/24 overlaps 10.250.0.0/16",
                "node network or API server",
            ],
        ),
        (
            "a range around this cluster's node network",
            &["10.240.0.0/12"],
            "CIDRProtected",
            &["10.240.0.0/12 overlaps 10.250.0.0/16"],
        ),
    ];
    for (what, pods, reason, words) in rows {
        let b = ep("site-b", pods, &[], vec![gw("198.18.0.2:51820", KEY_B)]);
        let check = validate_clusterset_for(&[site_a(), b.clone()], "site-a", &acceptance);
        assert_eq!(check.sites.len(), 1, "{what}: {check:#?}");
        let errors: Vec<&ValidationError> = check.errors().collect();
        assert!(
            errors.iter().any(|e| e.reason() == *reason),
            "{what}: {errors:#?}"
        );
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for word in *words {
            assert!(message.contains(word), "{what}: {word:?} in {message}");
        }
        // The same object judged by site-b itself (its own ranges are its operator's say),
        // and without an acceptance policy (an endpoints file the operator wrote), passes.
        let own = validate_clusterset_for(std::slice::from_ref(&b), "site-b", &acceptance);
        assert!(own.refused.is_empty(), "{what}: {own:#?}");
        assert!(
            validate_clusterset(&[site_a(), b]).refused.is_empty(),
            "{what}"
        );
    }
    // Inside the defaults: accepted.
    let b = ep(
        "site-b",
        &["10.2.0.0/16", "fd00:2::/48"],
        &["100.64.2.0/24"],
        vec![gw("198.18.0.2:51820", KEY_B)],
    );
    let check = validate_clusterset_for(&[site_a(), b], "site-a", &acceptance);
    assert!(check.refused.is_empty(), "{check:#?}");
}

#[test]
fn a_dual_stack_gateways_next_hop_is_of_the_destinations_family() {
    let dual = GatewayEndpoint {
        private_ips: vec!["fd00:19::1".into()],
        ..gw("198.18.0.1:51820", KEY_A)
    };
    let site = validate_endpoint(&ep("site-a", &["10.1.0.0/16"], &[], vec![dual])).unwrap();
    let gateway = &site.gateways[0];
    assert_eq!(
        gateway.private_ip_for("10.2.0.9".parse().unwrap()),
        Some("198.19.1.1".parse().unwrap())
    );
    assert_eq!(
        gateway.private_ip_for("fd00:2::9".parse().unwrap()),
        Some("fd00:19::1".parse().unwrap())
    );
    // An IPv4-only gateway is no next hop for IPv6.
    let site = validate_endpoint(&site_a()).unwrap();
    assert_eq!(
        site.gateways[0].private_ip_for("fd00:2::9".parse().unwrap()),
        None
    );
}

#[test]
fn oldest_first_puts_created_objects_first_by_age_then_by_name() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    let at = |name: &str, second: Option<i64>| {
        let mut o = ep(name, &[], &[], vec![]);
        o.metadata.creation_timestamp =
            second.map(|s| Time(Timestamp::from_second(1_700_000_000 + s).unwrap()));
        o
    };
    let mut endpoints = vec![
        at("c-new", None),
        at("b", Some(200)),
        at("z-old", Some(100)),
        at("a-new", None),
        at("m-old", Some(100)),
    ];
    oldest_first(&mut endpoints);
    let names: Vec<String> = endpoints.iter().map(object_name).collect();
    assert_eq!(names, ["m-old", "z-old", "b", "a-new", "c-new"]);
}
