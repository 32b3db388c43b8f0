//! The real control plane the Kubernetes tests run on: etcd, kube-apiserver and
//! kube-controller-manager from `scripts/kube build`, with the chart installed by kubectl.

use causeway_tests::harness::control_plane::install::{self, RELEASE_NAMESPACE};
use causeway_tests::harness::control_plane::{ApiServerSpec, Etcd, KubeApiServer};
use causeway_tests::harness::{Netns, ScratchDir};
use std::time::Instant;

#[test]
fn smoke() {
    let ns = Netns::new("cp").expect("netns");
    ns.ip(["addr", "add", "198.19.250.1/32", "dev", "lo"]).expect("addr");
    let dir = ScratchDir::new("cw-cp-").expect("dir");
    let t = Instant::now();
    let etcd = Etcd::start(&ns, dir.path()).expect("etcd");
    eprintln!("etcd {:?}", t.elapsed());
    let spec = ApiServerSpec {
        name: "one".into(),
        advertise: "198.19.250.1".parse().unwrap(),
        service_cidrs: vec!["10.250.0.0/16".parse().unwrap()],
        dir: dir.path().join("one"),
    };
    let server = KubeApiServer::start(spec, &ns, &etcd).expect("apiserver");
    eprintln!("apiserver {:?}", t.elapsed());
    let values = serde_json::json!({"clusterID": "site-a", "cidrs": {"pods": ["10.1.0.0/16"], "services": ["10.250.0.0/16"]}});
    let objects = install::install(&server, &values, RELEASE_NAMESPACE).expect("install");
    eprintln!("installed {} objects {:?}", objects.len(), t.elapsed());
    let token = install::account_token(&server, RELEASE_NAMESPACE, install::GATEWAY_ACCOUNT).expect("token");
    eprintln!("token {:?}", t.elapsed());
    let _ = token;
    eprintln!("{}", server.requests().len());
}
