//! The real control plane the Kubernetes tests run on (`scripts/kube build`: etcd,
//! kube-apiserver, kube-controller-manager and kubectl from the Go module proxy): its
//! ServiceAccount tokens, TokenReview and SubjectAccessReview with the chart's RBAC, and the
//! one-line errors of `scripts/kube` when it cannot build or find it.

use std::process::Command;
use std::time::{Duration, Instant};

use causeway_tests::harness::control_plane::install::{self, GATEWAY_ACCOUNT, RELEASE_NAMESPACE};
use causeway_tests::harness::control_plane::{
    workspace_root, ClusterKind, Credentials, TestCluster,
};
use serde_json::{json, Value};

/// `scripts/kube` with `args`, a cache directory of its own and `path` as PATH.
fn script(args: &[&str], cache: &std::path::Path, path: &str) -> std::process::Output {
    Command::new(workspace_root().join("scripts/kube"))
        .args(args)
        .env("CAUSEWAY_KUBE_CACHE", cache)
        .env("PATH", path)
        .output()
        .expect("run scripts/kube")
}

#[test]
fn scripts_kube_says_in_one_line_what_is_missing_and_the_fix() {
    let cache = tempfile::tempdir().expect("a cache directory");
    // Only what bash and coreutils need: no Go.
    let started = Instant::now();
    let out = script(&["build"], cache.path(), "/usr/bin:/bin");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no Go toolchain on PATH") && stderr.contains("install Go"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it must not hang"
    );

    let out = script(&["path"], cache.path(), "/usr/bin:/bin");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("run scripts/kube build"), "{stderr}");

    let out = script(&["bogus"], cache.path(), "/usr/bin:/bin");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: scripts/kube build|path"));
}

/// Runs `kubectl create -o json -f -` with `object` as cluster-admin and returns what the
/// server answered (TokenReview and SubjectAccessReview are answered, not stored).
fn ask(cluster: &TestCluster, object: Value) -> Value {
    let out = cluster
        .server()
        .kubectl_ok(
            &["create", "-o", "json", "-f", "-"],
            Some(&object.to_string()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn tokens_are_issued_reviewed_and_authorized_by_the_charts_rbac() {
    let cluster = TestCluster::start(ClusterKind::member("site-a", 1)).expect("a cluster");
    let token = match install::account_token(cluster.server(), RELEASE_NAMESPACE, GATEWAY_ACCOUNT)
        .expect("TokenRequest")
    {
        Credentials::Token(token) => token,
        other => panic!("not a token: {other:?}"),
    };
    let review = ask(
        &cluster,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}),
    );
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:causeway:causeway-gateway"
    );
    let forged = ask(
        &cluster,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": format!("{token}x")}}),
    );
    assert_ne!(
        forged["status"]["authenticated"], true,
        "a forged token: {forged}"
    );

    let access = |verb: &str, resource: &str, group: &str, namespace: &str| -> bool {
        let review = ask(
            &cluster,
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "spec": {"user": "system:serviceaccount:causeway:causeway-gateway",
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:causeway"],
                            "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                                   "namespace": namespace}}}),
        );
        review["status"]["allowed"] == true
    };
    assert!(access("patch", "leases", "coordination.k8s.io", "causeway"));
    assert!(access("create", "secrets", "", "causeway-keys"));
    assert!(
        !access("get", "secrets", "", "causeway"),
        "the release namespace's Secrets (the broker kubeconfig)"
    );
    assert!(
        !access("get", "secrets", "", "kube-system"),
        "another namespace's Secrets"
    );
    assert!(
        !access("delete", "gateways", "causeway.dev", "causeway"),
        "not granted"
    );
}
