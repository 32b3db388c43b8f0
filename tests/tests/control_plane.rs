//! Scratch.
use causeway_tests::harness::control_plane::workload::{self, Backend};
use causeway_tests::harness::control_plane::{ClusterKind, TestCluster};

#[tokio::test]
async fn smoke() {
    let c = TestCluster::start(ClusterKind::member("site-a", 1)).expect("start");
    let client = kube::Client::try_from(c.admin_config("default")).unwrap();
    c.server()
        .kubectl_ok(&["create", "namespace", "prod"], None)
        .unwrap();
    let svc = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"prod"},"spec":{"clusterIP":"None","selector":{"app":"db"},"ports":[{"name":"pg","port":5432}]}}"#;
    c.server()
        .kubectl_ok(&["apply", "-f", "-"], Some(svc))
        .unwrap();
    let r = workload::set_backends(
        &client,
        "prod",
        "db",
        "node-1",
        &[Backend::new("10.1.0.6", Some("db-0"), true)],
    )
    .await;
    eprintln!("{r:?}");
    eprintln!(
        "{}",
        c.server()
            .kubectl_ok(
                &["-n", "prod", "get", "pods,endpointslices", "-o", "yaml"],
                None
            )
            .unwrap()
    );
    eprintln!(
        "{}",
        c.server()
            .kubectl_ok(&["get", "nodes", "-o", "wide"], None)
            .unwrap()
    );
}
