//! The workspace's shape, as `cargo metadata` resolves it: the datapath (and with it the
//! packet fuzz target) links no Kubernetes, and no library links the controller, which
//! only the plugin and the controller binary need.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The host's target triple, as rustc names it.
fn host() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host")
}

/// Every package `package` depends on on this host, directly or not (normal dependencies
/// only).
fn closure(package: &str) -> BTreeSet<String> {
    // Filtered to the host: otherwise cargo wants other platforms' crates, which an
    // offline build never fetched.
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host(), "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .filter_map(|n| {
            let deps = n["deps"]
                .as_array()?
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            Some((n["id"].as_str()?, deps))
        })
        .collect();
    let start = names
        .iter()
        .find(|(_, name)| **name == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no package {package}"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(names[dep].to_owned()) {
                todo.push(dep);
            }
        }
    }
    seen
}

#[test]
fn the_gateway_links_none_of_the_controller() {
    let linked = closure("causeway-gateway");
    for crate_ in ["causeway-controller", "hickory-server"] {
        assert!(
            !linked.contains(crate_),
            "causeway-gateway depends on {crate_}; shared wire types belong in causeway-wire, shared names in causeway-crds"
        );
    }
    assert!(linked.contains("causeway-wire"), "{linked:?}");
}

#[test]
fn the_datapath_links_no_kubernetes() {
    let linked = closure("causeway-datapath");
    for crate_ in [
        "kube",
        "kube-client",
        "k8s-openapi",
        "causeway-crds",
        "causeway-k8s",
        "causeway-gateway",
    ] {
        assert!(
            !linked.contains(crate_),
            "causeway-datapath depends on {crate_}; the datapath takes plain values (peer specs, routes, keys) and the gateway translates objects into them"
        );
    }
    assert!(linked.contains("boringtun"), "{linked:?}");
}
