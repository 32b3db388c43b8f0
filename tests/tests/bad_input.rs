//! Bad input, refused loudly and harmlessly: the rows of `docs/bad-input.md` that no
//! unit test beside the code covers yet.
//!
//! Two layers: the endpoints-file parser and validator fed hostile YAML (fast, pure),
//! and a running standalone gateway fed one bad file per class, which must refuse each
//! with a message and a counted error while its routes and tunnel stay exactly as they
//! were.

use causeway_crds::manifest::{load_clusterset, ManifestError, MAX_MANIFEST_BYTES};
use causeway_gateway::config::{desired_from_text, Identity};
use causeway_tests::fixtures::pod_addr;
use causeway_tests::harness::leak::assert_no_key;
use causeway_tests::harness::mesh::{causeway_routes, Mesh};
use causeway_tests::harness::traffic::{pattern, tcp_roundtrip, Echo};
use causeway_tests::harness::wait_until_ok;
use std::time::{Duration, Instant};

const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

fn doc(id: &str, pod: &str, endpoint: &str, key: &str) -> String {
    format!(
        "apiVersion: causeway.dev/v1alpha1\nkind: ClusterEndpoint\nmetadata:\n  name: {id}\n\
         spec:\n  clusterID: {id}\n  podCIDRs: [\"{pod}\"]\n  serviceCIDRs: []\n  gateways:\n    \
         - nodeName: {id}-gw\n      publicEndpoint: \"{endpoint}\"\n      publicKey: \"{key}\"\n      \
         privateIP: \"198.19.1.1\"\n"
    )
}

fn two_sites() -> String {
    format!(
        "---\n{}---\n{}",
        doc("site-a", "10.1.0.0/16", "198.18.0.1:51820", KEY_A),
        doc("site-b", "10.2.0.0/16", "198.18.0.2:51820", KEY_B)
    )
}

/// The YAML "billion laughs": nine levels of nine aliases, 9^9 strings if expanded.
fn alias_bomb() -> String {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text += &format!("{name}: &{name} [{refs}]\n");
    }
    text
}

#[test]
fn hostile_yaml_is_refused_quickly_with_a_message_and_never_crashes() {
    type Row = (&'static str, String, fn(&ManifestError) -> bool);
    let good = two_sites();
    let rows: Vec<Row> = vec![
        ("alias bomb", alias_bomb(), |e| {
            matches!(
                e,
                ManifestError::Syntax { .. } | ManifestError::WrongKind { .. }
            )
        }),
        (
            "alias bomb inside a ClusterEndpoint",
            doc("site-a", "10.1.0.0/16", "198.18.0.1:51820", KEY_A)
                + &alias_bomb().replace("a: &a", "x-bomb: &a"),
            |e| {
                matches!(
                    e,
                    ManifestError::Syntax { .. } | ManifestError::UnknownField { .. }
                )
            },
        ),
        ("deep nesting", "[".repeat(100_000), |e| {
            matches!(e, ManifestError::Syntax { .. })
        }),
        (
            "deep nesting in a field",
            doc("site-a", "10.1.0.0/16", "198.18.0.1:51820", KEY_A).replace(
                "serviceCIDRs: []",
                &format!("serviceCIDRs: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
            ),
            |e| matches!(e, ManifestError::Syntax { .. }),
        ),
        (
            "a duplicated mapping key (podCIDRs twice)",
            doc("site-a", "10.1.0.0/16", "198.18.0.1:51820", KEY_A).replace(
                "  serviceCIDRs: []\n",
                "  serviceCIDRs: []\n  podCIDRs: [\"10.9.0.0/16\"]\n",
            ),
            |e| matches!(e, ManifestError::Syntax { message, .. } if message.contains("duplicate")),
        ),
        (
            "unknown top-level field",
            good.replacen("spec:\n", "specs: {}\nspec:\n", 1),
            |e| matches!(e, ManifestError::UnknownField { field, .. } if field == "specs"),
        ),
        (
            "unknown field in a gateway",
            good.replacen("publicKey:", "publicKeys: []\n      publicKey:", 1),
            |e| matches!(e, ManifestError::UnknownField { field, .. } if field.contains("publicKeys")),
        ),
        (
            "a list where a ClusterEndpoint belongs",
            "- 1\n- 2\n".into(),
            |e| matches!(e, ManifestError::WrongKind { .. }),
        ),
        (
            "a number where a list belongs",
            good.replacen("podCIDRs: [\"10.1.0.0/16\"]", "podCIDRs: 5", 1),
            |e| matches!(e, ManifestError::Syntax { message, .. } if message.contains("podCIDRs")),
        ),
        (
            "a null spec",
            doc("site-a", "10.1.0.0/16", "198.18.0.1:51820", KEY_A)
                .split("spec:")
                .next()
                .unwrap_or_default()
                .to_string()
                + "spec: null\n",
            |e| matches!(e, ManifestError::Syntax { .. }),
        ),
        (
            "control characters",
            good.replacen("site-a-gw", "site-a\u{0}\u{7}gw", 1),
            |_| true,
        ),
        (
            "a CIDR string of a million characters, under the size limit",
            good.replacen("10.1.0.0/16", &"9".repeat(1_000_000), 1),
            |e| matches!(e, ManifestError::Invalid { .. }),
        ),
        (
            "one byte over the size limit",
            format!("{good}#{}", " ".repeat(MAX_MANIFEST_BYTES - good.len())),
            |e| matches!(e, ManifestError::TooLarge { .. }),
        ),
        (
            "ten thousand empty documents",
            "---\n".repeat(10_000),
            |e| *e == ManifestError::Empty,
        ),
        (
            "a second cluster claiming site-a's ID",
            good.replacen("clusterID: site-b", "clusterID: site-a", 1),
            |e| matches!(e, ManifestError::Invalid { document: 2, error } if error.reason() == "DuplicateClusterID"),
        ),
    ];
    for (what, text, is_expected) in rows {
        let started = Instant::now();
        let errors = match load_clusterset(&text) {
            Ok(check) => panic!("{what}: accepted: {:?}", check.sites),
            Err(errors) => errors,
        };
        let took = started.elapsed();
        eprintln!("{what}: refused in {took:.1?}");
        assert!(
            took < Duration::from_secs(5),
            "{what}: refusing took {took:?}"
        );
        assert!(
            errors.iter().any(is_expected),
            "{what}: wrong error(s): {errors:#?}"
        );
        for e in &errors {
            let message = e.to_string();
            assert!(message.len() > 40, "{what}: message too terse: {message}");
            // An echoed value is bounded, so a huge bad value cannot flood a log line.
            assert!(
                message.len() < 2_000_000,
                "{what}: {} byte message",
                message.len()
            );
        }
    }
}

#[test]
fn the_gateway_resolver_refuses_a_remote_entry_pointing_at_its_own_listen_address() {
    let me = Identity {
        cluster: "site-a".into(),
        public_key: Some(causeway_wire::keys::parse_key(KEY_A).unwrap()),
        listen: Some("198.18.0.1:51820".parse().unwrap()),
        persistent_keepalive: None,
    };
    let text = two_sites().replace("198.18.0.2:51820", "198.18.0.1:51820");
    let err = desired_from_text(&text, "endpoints.yaml", &me).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("site-b") && message.contains("own address"),
        "{message}"
    );
    // A remote standby at our own address is skipped rather than dialled: we would be
    // handshaking with ourselves.
    let with_standby = two_sites() + "    - nodeName: site-b-gw2\n      publicEndpoint: \"198.18.0.1:51820\"\n      publicKey: \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n";
    let desired = desired_from_text(&with_standby, "endpoints.yaml", &me).unwrap();
    let peer = &desired.peers[0];
    assert_eq!(peer.cluster_id, "site-b");
    assert!(
        peer.standbys.iter().all(|s| s.endpoint != me.listen),
        "{:?}",
        peer.standbys
    );
}

const A: usize = 0;
const B: usize = 1;
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_running_gateway_refuses_every_bad_file_class_and_keeps_working() {
    let mesh = Mesh::start(2).expect("two-site mesh");
    let b_pod = pod_addr(mesh.site(B));
    let _echo = Echo::start(&mesh.site(B).pod, b_pod).expect("echo in site-b's pod");
    let reachable = |what: &str| {
        let payload = pattern(2000, 5);
        wait_until_ok(
            &format!("site-a to reach site-b {what}"),
            WAIT,
            || match tcp_roundtrip(&mesh.site(A).pod, b_pod, &payload) {
                Ok(back) if back == payload => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    };
    reachable("at first");
    let metric_of = |name: &str| mesh.gateway_metric(A, name, &[]);
    let routes = causeway_routes(&mesh.site(A).gateway).unwrap();
    let writes = metric_of("causeway_netlink_writes_total");
    let good = mesh.endpoints_text(&[A, B]);
    let b_key = mesh.public_key(B).to_string();
    let a_key = mesh.public_key(A).to_string();
    let a_endpoint = mesh.gateway_endpoint(A).to_string();
    let b_endpoint = mesh.gateway_endpoint(B).to_string();

    // (class, file, words the gateway's log must hold)
    let rows: Vec<(&str, String, &[&str])> = vec![
        (
            "overlapping CIDRs",
            good.replace("\"10.102.0.0/16\"", "\"10.1.0.0/24\""),
            &["overlaps"],
        ),
        (
            "malformed CIDR",
            good.replace("\"10.2.0.0/16\"", "\"10.2.0.0/33\""),
            &["not a CIDR"],
        ),
        (
            "CIDR with host bits",
            good.replace("\"10.2.0.0/16\"", "\"10.2.3.4/16\""),
            &["host bits"],
        ),
        (
            "malformed key",
            good.replace(&b_key, "not-a-key!"),
            &["base64"],
        ),
        (
            "duplicate key",
            good.replace(&b_key, &a_key),
            &["spec.gateways[0].publicKey"],
        ),
        (
            "unknown field",
            good.replace("podCIDRs", "podCIDR"),
            &["unknown field", "spec.podCIDR"],
        ),
        (
            "oversized file",
            format!("{good}#{}", "x".repeat(MAX_MANIFEST_BYTES)),
            &["byte limit"],
        ),
        (
            "remote endpoint is this gateway's own address",
            good.replace(&b_endpoint, &a_endpoint),
            &["own address"],
        ),
        (
            "remote endpoint at loopback (a reflector at this host's own services)",
            good.replace(&b_endpoint, "127.0.0.53:53"),
            &["loopback"],
        ),
        (
            "another cluster claims this cluster's ID",
            good.replace("clusterID: site-b", "clusterID: site-a"),
            &["already claimed"],
        ),
        (
            "YAML alias bomb",
            format!("{good}---\n{}", alias_bomb()),
            &["document"],
        ),
        ("empty file", String::new(), &["no ClusterEndpoint"]),
    ];
    for (i, (class, text, words)) in rows.into_iter().enumerate() {
        let errors = metric_of("causeway_config_errors_total");
        // Only what the gateway logs for this row counts: earlier rows' words are already there.
        let log_from = mesh.gateway_log_len(A);
        mesh.write_endpoints_text(A, &text).unwrap();
        wait_until_ok(
            &format!("the gateway to refuse: {class}"),
            WAIT,
            || match metric_of("causeway_config_errors_total") {
                n if n > errors => Ok(()),
                n => Err(format!("config errors {n}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
        for word in words {
            // The refusal is counted before it is logged: wait for its line.
            wait_until_ok(
                &format!("{class}: the gateway to log {word:?} for this row"),
                WAIT,
                || match mesh.gateway_log_since(A, log_from) {
                    log if log.contains(word) => Ok(()),
                    log => Err(format!("its log since the row was written:\n{log}")),
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            causeway_routes(&mesh.site(A).gateway).unwrap(),
            routes,
            "{class}: routes changed"
        );
        assert_eq!(
            metric_of("causeway_netlink_writes_total"),
            writes,
            "{class}: netlink written"
        );
        reachable(&format!("after refusing row {i}: {class}"));
        // Back to the good file between rows, so each refusal is a change from a good state.
        let reloads = metric_of("causeway_config_reloads_total");
        mesh.write_endpoints_text(A, &format!("# row {i}\n{good}"))
            .unwrap();
        wait_until_ok(
            "the good file to be applied again",
            WAIT,
            || match metric_of("causeway_config_reloads_total") {
                n if n > reloads => Ok(()),
                n => Err(format!("reloads {n}")),
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", mesh.logs()));
    }
    // The private key never appeared in any of those messages.
    assert_no_key(&mesh.full_logs(A), &mesh.private_key(A), "site-a's logs");
}
