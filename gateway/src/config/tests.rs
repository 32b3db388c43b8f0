use super::*;

const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const KEY_C: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn site(i: u8, key: &str) -> String {
    format!(
        "apiVersion: causeway.dev/v1alpha1\nkind: ClusterEndpoint\nmetadata:\n  name: site-{i}\nspec:\n  clusterID: site-{i}\n  podCIDRs: [\"10.{i}.0.0/16\", \"fd00:{i}::/48\"]\n  serviceCIDRs: [\"10.10{i}.0.0/16\"]\n  gateways:\n    - nodeName: gw-{i}\n      publicEndpoint: \"198.18.0.{i}:51820\"\n      publicKey: \"{key}\"\n      privateIP: \"198.19.{i}.1\"\n---\n"
    )
}

fn me(cluster: &str, key: Option<&str>) -> Identity {
    Identity {
        cluster: cluster.into(),
        public_key: key.map(|k| parse_key(k).unwrap()),
        listen: Some("198.18.0.1:51820".parse().unwrap()),
        persistent_keepalive: None,
    }
}

#[test]
fn gateway_gets_every_other_site_as_a_peer() {
    let text = site(1, KEY_A) + &site(2, KEY_B) + &site(3, KEY_C);
    let desired = desired_from_text(&text, "f", &me("site-1", Some(KEY_A))).unwrap();
    assert_eq!(desired.local.cluster_id, "site-1");
    let ids: Vec<_> = desired
        .peers
        .iter()
        .map(|p| p.cluster_id.as_str())
        .collect();
    assert_eq!(ids, ["site-2", "site-3"]);
    assert_eq!(
        desired.peers[0].endpoint,
        Some("198.18.0.2:51820".parse().unwrap())
    );
    let cidrs: Vec<String> = desired.peers[0]
        .cidrs
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(cidrs, ["10.2.0.0/16", "fd00:2::/48", "10.102.0.0/16"]);
    let routes = desired.routes(|_| Some(NextHop::Dev { ifindex: 7 }), Some(1420), 254);
    assert_eq!(routes.len(), 6);
    // Only an IPv4 node address is listed: IPv6 destinations get no next hop.
    let hops = desired.gateway_next_hops("f").unwrap();
    assert_eq!(hops, ["198.19.1.1".parse::<IpAddr>().unwrap()]);
    let via = |dst: &IpNet| {
        hops.iter()
            .find(|h| h.is_ipv4() == dst.addr().is_ipv4())
            .map(|gateway| NextHop::Via {
                gateway: *gateway,
                ifindex: 2,
            })
    };
    assert_eq!(desired.routes(via, None, 254).len(), 4);
}

#[test]
fn refusals_say_what_to_fix() {
    let two = site(1, KEY_A) + &site(2, KEY_B);
    let cases: Vec<(String, Identity, &str)> = vec![
        (
            two.clone(),
            me("site-9", None),
            "no ClusterEndpoint has clusterID \"site-9\"",
        ),
        (
            two.clone(),
            me("site-1", Some(KEY_C)),
            "lists no gateway with public key",
        ),
        (
            two.replace("198.18.0.2:51820", "198.18.0.1:51820"),
            me("site-1", Some(KEY_A)),
            "own address",
        ),
        (
            two.replace("10.2.0.0/16", "10.1.0.0/24"),
            me("site-1", Some(KEY_A)),
            "overlaps",
        ),
        (
            two.replace("      privateIP: \"198.19.1.1\"\n", ""),
            me("site-1", None),
            "no privateIP",
        ),
    ];
    for (text, who, want) in cases {
        let result =
            desired_from_text(&text, "f", &who).and_then(|d| d.gateway_next_hops("f").map(|_| d));
        let err = result.expect_err(want).to_string();
        assert!(err.contains(want), "wanted {want:?} in: {err}");
    }
}

#[test]
fn private_key_file_must_be_private_and_well_formed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY_A}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(load_private_key(&path).unwrap(), parse_key(KEY_A).unwrap());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_private_key(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");

    std::fs::write(&path, "garbage-secret-material").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = load_private_key(&path).unwrap_err().to_string();
    assert!(
        err.contains("genkey") && !err.contains("garbage-secret-material"),
        "{err}"
    );
}
