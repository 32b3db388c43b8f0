//! The in-memory API server against the real `kube` client: REST verbs,
//! selectors, optimistic concurrency, status subresources, watches (order,
//! bookmarks, 410 and relist), namespace cascade, stop/restart, kubeconfig,
//! discovery, several listeners in several network namespaces. Everything
//! listens on 127.0.0.1 (or inside a test namespace).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use causeway_crds::{
    ClusterEndpoint, ClusterEndpointSpec, ClusterEndpointStatus, Gateway, GatewayEndpoint,
    GatewayRole, GatewaySpec, GatewayStatus, ServiceExport, ServiceImport, ServiceImportSpec,
    ServiceImportStatus, ServiceImportType,
};
use causeway_tests::apiserver::{ApiServer, ApiServerOptions, Gvr};
use causeway_tests::harness::kube::block_on_in;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Discovery, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn start() -> ApiServer {
    start_with(ApiServerOptions::default())
}

fn start_with(options: ApiServerOptions) -> ApiServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    ApiServer::start_with(listener, options)
}

fn client(server: &ApiServer) -> Client {
    Client::try_from(server.client_config("default")).expect("client for the test server")
}

fn configmap(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

fn endpoint(cluster: &str) -> ClusterEndpoint {
    ClusterEndpoint::new(
        cluster,
        ClusterEndpointSpec {
            cluster_id: cluster.to_string(),
            pod_cidrs: vec!["10.1.0.0/16".into()],
            service_cidrs: vec!["10.101.0.0/16".into()],
            gateways: vec![gateway_endpoint()],
        },
    )
}

fn gateway_endpoint() -> GatewayEndpoint {
    GatewayEndpoint {
        node_name: "node-1".into(),
        public_endpoint: "198.18.0.1:51820".into(),
        public_key: "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=".into(),
        private_ip: Some("10.1.0.10".into()),
        private_ips: vec![],
        health_check_ip: None,
    }
}

fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} is {status}"),
        last_transition_time: Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        ),
        observed_generation: None,
    }
}

fn api_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: ResourceExt>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    items.into_iter().map(|o| o.name_any()).collect()
}

/// The next item of a stream, failing the test after [`WAIT`].
async fn next<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("stream ended while waiting for {what}"),
        Err(_) => panic!("no {what} within {WAIT:?}"),
    }
}

#[tokio::test]
async fn configmaps_create_get_list_replace_delete() {
    let server = start();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let pp = PostParams::default();

    let created = api
        .create(&pp, &configmap("settings", &[], &[("mode", "a")]))
        .await
        .unwrap();
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();

    let (code, reason) = api_code(
        api.create(&pp, &configmap("settings", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let got = api.get("settings").await.unwrap();
    assert_eq!(got, created);
    assert!(api.get_opt("absent").await.unwrap().is_none());
    assert_eq!(api_code(api.get("absent").await.unwrap_err()).0, 404);

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(list.items.clone()), vec!["settings"]);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rv);

    // Replace bumps the global resourceVersion; a replace from the stale copy conflicts.
    let mut changed = got.clone();
    changed.data = Some(BTreeMap::from([("mode".into(), "b".into())]));
    let replaced = api.replace("settings", &pp, &changed).await.unwrap();
    let new_rv: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(new_rv > rv);
    let (code, reason) = api_code(api.replace("settings", &pp, &changed).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // generateName.
    let mut generated = configmap("", &[], &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("peer-".into());
    let generated = api.create(&pp, &generated).await.unwrap();
    assert!(generated.name_any().starts_with("peer-"));

    // Delete: gone at once, so the answer is a Success Status.
    let deleted = api
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "immediate delete answers with a Status");
    assert_eq!(api_code(api.get("settings").await.unwrap_err()).0, 404);
    let (code, reason) = api_code(
        api.delete("settings", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn invalid_objects_and_missing_namespaces_are_refused() {
    let server = start();
    let client = client(&server);
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let (code, reason) = api_code(
        api.create(&PostParams::default(), &configmap("Not_Valid", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    let nowhere: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    let err = nowhere
        .create(&PostParams::default(), &configmap("a", &[], &[]))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.message, "namespaces \"nowhere\" not found");
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected 404, got {other:?}"),
    }
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let server = start();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let pp = PostParams::default();
    for (name, app, tier) in [
        ("a", "db", "backend"),
        ("b", "db", "frontend"),
        ("c", "web", "frontend"),
    ] {
        api.create(&pp, &configmap(name, &[("app", app), ("tier", tier)], &[]))
            .await
            .unwrap();
    }
    api.create(&pp, &configmap("bare", &[], &[])).await.unwrap();

    let cases: &[(&str, &[&str])] = &[
        ("app=db", &["a", "b"]),
        ("app!=db", &["bare", "c"]),
        ("app", &["a", "b", "c"]),
        ("!app", &["bare"]),
        ("tier in (backend,other)", &["a"]),
        ("tier notin (backend)", &["b", "bare", "c"]),
        ("app=db,tier=frontend", &["b"]),
    ];
    for (selector, want) in cases {
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(list), *want, "labelSelector {selector:?}");
    }
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(names(by_name), vec!["c"]);
    let not_name = api
        .list(&ListParams::default().fields("metadata.name!=c,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(names(not_name), vec!["a", "b", "bare"]);
    let (code, _) = api_code(
        api.list(&ListParams::default().fields("spec.nodeName=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);

    // Paging with limit/continue covers the same objects.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        let token = page.metadata.continue_.clone();
        seen.extend(names(page));
        match token {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => break,
        }
    }
    assert_eq!(seen, vec!["a", "b", "bare", "c"]);
}

#[tokio::test]
async fn merge_json_and_apply_patches() {
    let server = start();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    api.create(
        &PostParams::default(),
        &configmap("cfg", &[], &[("a", "1"), ("b", "2")]),
    )
    .await
    .unwrap();

    let merged = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"data": {"a": null, "c": "3"}, "metadata": {"labels": {"x": "y"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.clone().unwrap(),
        BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
    );
    assert_eq!(merged.labels().get("x").map(String::as_str), Some("y"));

    // Strategic merge patch is accepted (applied as a merge patch).
    let strategic = api
        .patch(
            "cfg",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"d": "4"}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.data.unwrap()["d"], "4");

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "remove", "path": "/data/c"},
    ]))
    .unwrap();
    let patched = api
        .patch("cfg", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap()["b"], "20");
    assert!(!patched.data.as_ref().unwrap().contains_key("c"));
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "nope"}]))
            .unwrap();
    assert_eq!(
        api_code(
            api.patch("cfg", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await
                .unwrap_err()
        )
        .0,
        422
    );

    // Server-side apply: creates when absent, records the manager, conflicts
    // with another manager unless forced.
    let applied = api
        .patch(
            "applied",
            &PatchParams::apply("causeway-controller"),
            &Patch::Apply(configmap("applied", &[("owner", "ctl")], &[("k", "v")])),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.as_ref().unwrap()["k"], "v");
    let managers: Vec<_> = applied
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap()))
        .collect();
    assert_eq!(
        managers,
        vec![("causeway-controller".to_string(), "Apply".to_string())]
    );

    let rival = configmap("applied", &[], &[("k", "other")]);
    let (code, reason) = api_code(
        api.patch(
            "applied",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let forced = api
        .patch(
            "applied",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&rival),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["k"], "other");

    // Re-applying without a field removes it; applying the same again writes nothing.
    let slimmer = configmap("applied", &[], &[]);
    let after = api
        .patch(
            "applied",
            &PatchParams::apply("causeway-controller"),
            &Patch::Apply(&slimmer),
        )
        .await
        .unwrap();
    assert!(
        after.labels().get("owner").is_none(),
        "label dropped by its manager: {:?}",
        after.labels()
    );
    let again = api
        .patch(
            "applied",
            &PatchParams::apply("causeway-controller"),
            &Patch::Apply(&slimmer),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), after.resource_version());
}

#[tokio::test]
async fn leases_and_endpointslices_round_trip() {
    let server = start();
    let client = client(&server);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("causeway-gateway".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("node-1".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(created.spec, lease.spec);

    // Leader election: a takeover based on a stale copy must lose.
    let mut mine = created.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("node-2".into());
    leases
        .replace("causeway-gateway", &PostParams::default(), &mine)
        .await
        .unwrap();
    let mut theirs = created;
    theirs.spec.as_mut().unwrap().holder_identity = Some("node-3".into());
    assert_eq!(
        api_code(
            leases
                .replace("causeway-gateway", &PostParams::default(), &theirs)
                .await
                .unwrap_err()
        )
        .0,
        409
    );
    let holder = leases.get("causeway-gateway").await.unwrap();
    assert_eq!(
        holder.spec.unwrap().holder_identity.as_deref(),
        Some("node-2")
    );

    let slices: Api<EndpointSlice> = Api::default_namespaced(client);
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("db-site-b".into()),
            labels: Some(BTreeMap::from([
                (
                    "multicluster.kubernetes.io/service-name".into(),
                    "db".into(),
                ),
                (
                    "multicluster.kubernetes.io/source-cluster".into(),
                    "site-b".into(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec!["10.2.5.9".into()],
            ..Endpoint::default()
        }],
        ports: None,
    };
    slices.create(&PostParams::default(), &slice).await.unwrap();
    let found = slices
        .list(
            &ListParams::default()
                .labels("multicluster.kubernetes.io/service-name=db,multicluster.kubernetes.io/source-cluster in (site-b)"),
        )
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].endpoints, slice.endpoints);
}

#[tokio::test]
async fn status_subresource_keeps_spec_and_status_apart() {
    let server = start();
    let client = client(&server);
    let api: Api<ClusterEndpoint> = Api::default_namespaced(client.clone());
    let mut with_status = endpoint("site-a");
    with_status.status = Some(ClusterEndpointStatus {
        conditions: vec![condition("Valid", "True", "Ok")],
        ..ClusterEndpointStatus::default()
    });
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    assert!(created.status.is_none(), "create ignores status");
    assert_eq!(created.metadata.generation, Some(1));

    // patch_status: status changes, spec and generation do not.
    let status_patch = json!({
        "spec": {"clusterID": "hijacked"},
        "status": {"conditions": [condition("Valid", "False", "OverlappingCIDR")]},
    });
    let after_status = api
        .patch_status(
            "site-a",
            &PatchParams::default(),
            &Patch::Merge(&status_patch),
        )
        .await
        .unwrap();
    assert_eq!(after_status.spec.cluster_id, "site-a");
    assert_eq!(
        after_status.status.as_ref().unwrap().conditions[0].reason,
        "OverlappingCIDR"
    );
    assert_eq!(after_status.metadata.generation, Some(1));

    // A spec patch does not touch status, and bumps generation.
    let spec_patch = json!({"spec": {"podCIDRs": ["10.9.0.0/16"]}, "status": {"conditions": []}});
    let after_spec = api
        .patch(
            "site-a",
            &PatchParams::default(),
            &Patch::Merge(&spec_patch),
        )
        .await
        .unwrap();
    assert_eq!(after_spec.spec.pod_cidrs, vec!["10.9.0.0/16"]);
    assert_eq!(after_spec.status, after_status.status);
    assert_eq!(after_spec.metadata.generation, Some(2));

    // Metadata-only changes keep the generation.
    let labelled = api
        .patch(
            "site-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    // Status written by server-side apply to /status, with its own manager.
    let mut status_only = ClusterEndpoint::new("site-a", created.spec.clone());
    status_only.status = Some(ClusterEndpointStatus {
        conditions: vec![condition("Valid", "True", "Ok")],
        ..ClusterEndpointStatus::default()
    });
    let applied = api
        .patch_status(
            "site-a",
            &PatchParams::apply("causeway-status").force(),
            &Patch::Apply(&status_only),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.pod_cidrs, vec!["10.9.0.0/16"]);
    assert_eq!(applied.status.unwrap().conditions[0].reason, "Ok");
    assert!(applied
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .any(|m| m.manager.as_deref() == Some("causeway-status")
            && m.subresource.as_deref() == Some("status")));

    // Gateway: replace_status from a fetched copy.
    let gateways: Api<Gateway> = Api::default_namespaced(client.clone());
    let gw = Gateway::new(
        "node-1",
        GatewaySpec {
            cluster_id: "site-a".into(),
            endpoint: gateway_endpoint(),
        },
    );
    let mut gw = gateways.create(&PostParams::default(), &gw).await.unwrap();
    gw.status = Some(GatewayStatus {
        role: Some(GatewayRole::Active),
        ..GatewayStatus::default()
    });
    let gw = gateways
        .replace_status("node-1", &PostParams::default(), &gw)
        .await
        .unwrap();
    assert_eq!(gw.status.unwrap().role, Some(GatewayRole::Active));
    assert_eq!(gw.metadata.generation, Some(1));

    // MCS types: ServiceExport (no spec) and ServiceImport.
    let exports: Api<ServiceExport> = Api::default_namespaced(client.clone());
    exports
        .create(
            &PostParams::default(),
            &ServiceExport::new("db", causeway_crds::mcs::ServiceExportFields {}),
        )
        .await
        .unwrap();
    let export = exports
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [condition("Valid", "True", "ServiceFound")]}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(export.status.unwrap().conditions[0].type_, "Valid");

    let imports: Api<ServiceImport> = Api::default_namespaced(client);
    let import = ServiceImport::new(
        "db",
        ServiceImportSpec {
            ports: vec![],
            ips: vec![],
            type_: ServiceImportType::Headless,
            session_affinity: None,
            session_affinity_config: None,
        },
    );
    imports
        .patch(
            "db",
            &PatchParams::apply("causeway-controller"),
            &Patch::Apply(&import),
        )
        .await
        .unwrap();
    let import = imports
        .patch_status(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"clusters": [{"cluster": "site-b"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        import.status,
        Some(ServiceImportStatus {
            clusters: vec![causeway_crds::mcs::ClusterStatus {
                cluster: "site-b".into()
            }]
        })
    );
}

/// Collects watcher events until `InitDone`, returning the names listed.
async fn until_init_done<S>(stream: &mut S) -> Vec<String>
where
    S: Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut listed = Vec::new();
    loop {
        match next(stream, "the initial list").await {
            Ok(Event::InitApply(obj)) => listed.push(obj.name_any()),
            Ok(Event::InitDone) => return listed,
            Ok(Event::Init) | Err(_) => {}
            Ok(other) => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
}

async fn watcher_sees_changes_in_order(config: watcher::Config) {
    let server = start();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    api.create(&PostParams::default(), &configmap("before", &[], &[]))
        .await
        .unwrap();
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    assert_eq!(until_init_done(&mut stream).await, vec!["before"]);

    api.create(&PostParams::default(), &configmap("w", &[], &[("v", "1")]))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next(&mut stream, "watch events").await.unwrap() {
            Event::Apply(cm) => seen.push(format!("apply {}", cm.data.unwrap()["v"])),
            Event::Delete(cm) => seen.push(format!("delete {}", cm.name_any())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec!["apply 1", "apply 2", "delete w"]);
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() {
    watcher_sees_changes_in_order(watcher::Config::default()).await;
}

#[tokio::test]
async fn streaming_list_watcher_sees_changes_in_order() {
    // sendInitialEvents=true: the initial list arrives as ADDED events ended
    // by a bookmark annotated k8s.io/initial-events-end.
    watcher_sees_changes_in_order(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn raw_watch_streams_typed_events_and_bookmarks() {
    let server = start_with(ApiServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerOptions::default()
    });
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();

    let wp = WatchParams::default().labels("app=db"); // bookmarks are on by default
    let mut events = api.watch(&wp, &rv).await.unwrap().boxed();
    api.create(
        &PostParams::default(),
        &configmap("other", &[("app", "web")], &[]),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("db", &[("app", "db")], &[]),
    )
    .await
    .unwrap();
    // Relabelling out of the selector is a DELETED for this watch.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();

    let mut kinds = Vec::new();
    let mut bookmark_rv = None;
    while kinds.len() < 2 || bookmark_rv.is_none() {
        match next(&mut events, "watch events").await.unwrap() {
            WatchEvent::Added(cm) => kinds.push(format!("ADDED {}", cm.name_any())),
            WatchEvent::Modified(cm) => kinds.push(format!("MODIFIED {}", cm.name_any())),
            WatchEvent::Deleted(cm) => kinds.push(format!("DELETED {}", cm.name_any())),
            WatchEvent::Bookmark(bm) => {
                assert_eq!(bm.types.kind, "ConfigMap");
                bookmark_rv = Some(bm.metadata.resource_version)
            }
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(kinds, vec!["ADDED db", "DELETED db"]);
    let bookmark_rv: u64 = bookmark_rv.unwrap().parse().unwrap();
    assert!(bookmark_rv >= rv.parse::<u64>().unwrap());

    // timeoutSeconds ends the stream.
    let short = WatchParams::default().timeout(1);
    let mut ended = api.watch(&short, "0").await.unwrap().boxed();
    let finished =
        tokio::time::timeout(WAIT, async { while ended.next().await.is_some() {} }).await;
    assert!(finished.is_ok(), "watch with timeoutSeconds=1 did not end");
}

#[tokio::test]
async fn expired_resource_version_gets_410_and_the_watcher_relists() {
    let server = start_with(ApiServerOptions {
        history_limit: 5,
        ..ApiServerOptions::default()
    });
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    let old_rv = server.store().revision().to_string();
    for i in 0..10 {
        api.create(
            &PostParams::default(),
            &configmap(&format!("c{i}"), &[], &[]),
        )
        .await
        .unwrap();
    }
    let mut raw = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match next(&mut raw, "the 410 event").await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // A watcher that falls behind while the server is away re-lists.
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    assert_eq!(until_init_done(&mut stream).await.len(), 10);
    server.stop();
    let store = server.store();
    for i in 0..20 {
        store
            .put(&configmap(&format!("late{i:02}"), &[], &[]))
            .unwrap();
    }
    server.restart().unwrap();
    let mut saw_gone = false;
    let relisted = loop {
        match next(&mut stream, "the relist after 410").await {
            Err(watcher::Error::WatchError(status)) if status.code == 410 => saw_gone = true,
            Err(_) => {}
            Ok(Event::Init) => break until_init_done(&mut stream).await,
            Ok(other) => panic!("expected a relist, got {other:?}"),
        }
    };
    assert!(saw_gone, "the watcher should have been told 410 Gone");
    assert_eq!(relisted.len(), 30, "{relisted:?}");
}

#[tokio::test]
async fn deleting_a_namespace_deletes_everything_in_it() {
    let server = start();
    let client = client(&server);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("site-a".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let ns = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(
        ns.status.unwrap().phase.as_deref(),
        Some("Active"),
        "namespaces are Active once created"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "site-a");
    let ceps: Api<ClusterEndpoint> = Api::namespaced(client.clone(), "site-a");
    cms.create(&PostParams::default(), &configmap("one", &[], &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("two", &[], &[]))
        .await
        .unwrap();
    ceps.create(&PostParams::default(), &endpoint("site-a"))
        .await
        .unwrap();
    let keep: Api<ConfigMap> = Api::default_namespaced(client.clone());
    keep.create(&PostParams::default(), &configmap("kept", &[], &[]))
        .await
        .unwrap();

    // A cluster-wide watch sees one DELETED per object in the namespace.
    let all: Api<ConfigMap> = Api::all(client.clone());
    let rv = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = all
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    namespaces
        .delete("site-a", &DeleteParams::default())
        .await
        .unwrap();
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        match next(&mut events, "DELETED events").await.unwrap() {
            WatchEvent::Deleted(cm) => deleted.push(cm.name_any()),
            other => panic!("unexpected {other:?}"),
        }
    }
    deleted.sort();
    assert_eq!(deleted, vec!["one", "two"]);
    assert!(ceps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(namespaces.get_opt("site-a").await.unwrap().is_none());
    assert_eq!(
        names(all.list(&ListParams::default()).await.unwrap()),
        vec!["kept"]
    );
    // And the namespace is gone for creates too.
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &configmap("three", &[], &[]))
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_brings_the_same_objects_back() {
    let server = start();
    let addr = server.addr();
    let api: Api<ClusterEndpoint> = Api::default_namespaced(client(&server));
    let created = api
        .create(&PostParams::default(), &endpoint("site-a"))
        .await
        .unwrap();

    server.stop();
    assert!(!server.is_running());
    match api.get("site-a").await {
        Err(kube::Error::Api(status)) => {
            panic!("expected a connection error, got API error {status:?}")
        }
        Err(_) => {}
        Ok(_) => panic!("a stopped server answered"),
    }

    server.restart().unwrap();
    assert_eq!(server.addr(), addr);
    let got = api.get("site-a").await.unwrap();
    assert_eq!(got, created, "same object, same uid and resourceVersion");
    let _ = api
        .patch(
            "site-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"after": "restart"}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn kubeconfig_file_works_with_the_kube_client() {
    let server = start();
    server
        .store()
        .put(&configmap("from-store", &[], &[("seeded", "yes")]))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path, "kube-system").unwrap();

    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "kube-system");
    let client = Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let seeded: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        seeded.get("from-store").await.unwrap().data.unwrap()["seeded"],
        "yes"
    );
    let here: Api<ConfigMap> = Api::default_namespaced(client);
    let created = here
        .create(
            &PostParams::default(),
            &configmap("via-kubeconfig", &[], &[]),
        )
        .await
        .unwrap();
    assert_eq!(created.namespace().as_deref(), Some("kube-system"));
    let stored: ConfigMap = server
        .store()
        .get(Some("kube-system"), "via-kubeconfig")
        .unwrap();
    assert_eq!(stored, created);
}

#[tokio::test]
async fn discovery_finds_the_causeway_and_mcs_types() {
    let server = start();
    let client = client(&server);
    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let group = discovery
            .get("causeway.dev")
            .expect("causeway.dev discovered");
        let kinds: Vec<String> = group
            .recommended_resources()
            .into_iter()
            .map(|(ar, _)| ar.kind)
            .collect();
        assert!(kinds.contains(&"ClusterEndpoint".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"Gateway".to_string()), "{kinds:?}");
        assert!(discovery.has_group("multicluster.x-k8s.io"));
        assert!(discovery.has_group("coordination.k8s.io"));
        let core = discovery.get("").expect("core group");
        let (cm, caps) = core
            .recommended_resources()
            .into_iter()
            .find(|(ar, _)| ar.kind == "ConfigMap")
            .expect("ConfigMap discovered");
        assert_eq!(cm.plural, "configmaps");
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    }
}

#[tokio::test]
async fn write_counters_see_requests_not_store_access() {
    let server = start();
    let api: Api<ConfigMap> = Api::default_namespaced(client(&server));
    server.store().put(&configmap("seeded", &[], &[])).unwrap();
    assert_eq!(
        server.total_writes(),
        0,
        "direct store access is not a request"
    );

    api.create(&PostParams::default(), &configmap("a", &[], &[("k", "v")]))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    api.get("a").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    let counts = server.writes_of::<ConfigMap>();
    assert_eq!((counts.create, counts.patch, counts.total()), (1, 1, 2));
    assert_eq!(server.writes(&Gvr::of::<ClusterEndpoint>()).total(), 0);

    // A no-op reconcile: reads only.
    server.reset_counters();
    api.get("a").await.unwrap();
    assert_eq!(server.total_writes(), 0);
    let log = server.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("GET", "/api/v1/namespaces/default/configmaps/a", 200)
    );
}

#[test]
fn restart_rebinds_inside_the_listeners_network_namespace() {
    let ns = causeway_tests::harness::Netns::new("apisrv").expect("create a test namespace");
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind in the namespace"));
    let server = ApiServer::start(listener);
    let config = server.client_config("default");
    let probe = move |expect_up: bool| {
        let config = config.clone();
        ns.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let api: Api<ConfigMap> =
                    Api::default_namespaced(Client::try_from(config).unwrap());
                match (api.list(&ListParams::default()).await, expect_up) {
                    (Ok(_), true) | (Err(_), false) => {}
                    (Ok(_), false) => panic!("the stopped server answered"),
                    (Err(e), true) => panic!("server in the namespace unreachable: {e}"),
                }
            })
        })
    };
    probe(true);
    server.stop();
    probe(false);
    // This thread is in the root namespace; the server must come back in the listener's.
    server.restart().unwrap();
    probe(true);
}

/// Runs `f` with a client for `url` on a runtime of its own inside `ns`, so the
/// client's connections are opened in that namespace.
fn in_namespace<F, Fut, T>(ns: &causeway_tests::harness::Netns, url: &str, f: F) -> T
where
    F: FnOnce(Client) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    let url = url.to_string();
    block_on_in(ns, move || async move {
        let mut config = kube::Config::new(url.parse().expect("a valid URL"));
        config.default_namespace = "default".into();
        f(Client::try_from(config).expect("a client")).await
    })
}

/// Runs `f` with a client for the server's first listener in the test's own namespace.
fn in_root<Fut: std::future::Future>(
    server: &ApiServer,
    f: impl FnOnce(Client) -> Fut,
) -> Fut::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { f(client(server)).await })
}

async fn configmap_names(client: Client) -> Result<Vec<String>, kube::Error> {
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    Ok(names(api.list(&ListParams::default()).await?.items))
}

#[test]
fn a_second_listener_in_another_namespace_serves_the_same_objects() {
    let ns = causeway_tests::harness::Netns::new("apisrv2").expect("create a test namespace");
    let server = start();
    // A fixed port is fine inside a namespace nobody else uses.
    let inner = ns.run(|| TcpListener::bind("127.0.0.1:6443").expect("bind in the namespace"));
    server.add_listener(inner).expect("add the listener");
    assert_eq!(server.addrs().len(), 2);
    assert_eq!(
        server.addrs()[0],
        server.addr(),
        "addr() stays the first listener"
    );
    assert_eq!(server.addrs()[1].port(), 6443);
    let inner_url = format!("http://{}", server.addrs()[1]);
    let kubeconfig = server.kubeconfig_at(server.addrs()[1], "default");
    assert!(
        kubeconfig.contains("server: http://127.0.0.1:6443"),
        "{kubeconfig}"
    );

    in_root(&server, |client| async move {
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        api.create(&PostParams::default(), &configmap("from-root", &[], &[]))
            .await
            .unwrap();
    });
    let seen = in_namespace(&ns, &inner_url, |client| async move {
        let seen = configmap_names(client.clone()).await.unwrap();
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        api.create(&PostParams::default(), &configmap("from-ns", &[], &[]))
            .await
            .unwrap();
        seen
    });
    assert_eq!(seen, vec!["from-root"]);
    let seen = in_root(&server, |client| async move {
        configmap_names(client).await.unwrap()
    });
    assert_eq!(
        seen,
        vec!["from-ns", "from-root"],
        "one store behind both listeners"
    );
}

#[test]
fn stop_ends_watches_on_every_listener_and_restart_rebinds_each_in_its_namespace() {
    let ns = causeway_tests::harness::Netns::new("apisrv3").expect("create a test namespace");
    let server = start();
    let inner = ns.run(|| TcpListener::bind("127.0.0.1:6443").expect("bind in the namespace"));
    server.add_listener(inner).expect("add the listener");
    let inner_url = format!("http://{}", server.addrs()[1]);

    // A watch through the namespace's listener ends when the server stops.
    let server_ref = &server;
    in_namespace(&ns, &inner_url, |client| async move {
        let api: Api<ConfigMap> = Api::default_namespaced(client);
        let mut events = api
            .watch(&WatchParams::default(), "0")
            .await
            .unwrap()
            .boxed();
        server_ref.stop();
        let ended = tokio::time::timeout(WAIT, async {
            // An error or the end of the stream: either way the watch is gone.
            while let Some(Ok(_)) = events.next().await {}
        })
        .await;
        assert!(ended.is_ok(), "a watch outlived stop() for {WAIT:?}");
    });
    assert!(!server.is_running());
    let down = in_namespace(&ns, &inner_url, |c| async move { configmap_names(c).await });
    assert!(
        down.is_err(),
        "the stopped server answered in the namespace"
    );
    assert!(
        in_root(&server, |c| async move { configmap_names(c).await }).is_err(),
        "the stopped server answered in the root namespace"
    );

    // A listener added while stopped is served from the restart on.
    let ns2 = causeway_tests::harness::Netns::new("apisrv4").expect("create a test namespace");
    let late = ns2.run(|| TcpListener::bind("127.0.0.1:6444").expect("bind in the namespace"));
    server
        .add_listener(late)
        .expect("add a listener while stopped");
    assert!(
        !server.is_running(),
        "adding a listener does not start a stopped server"
    );

    // This thread is in the root namespace; each listener must come back in its own.
    server.restart().unwrap();
    assert!(server.is_running());
    in_root(
        &server,
        |c| async move { configmap_names(c).await.unwrap() },
    );
    in_namespace(&ns, &inner_url, |c| async move {
        configmap_names(c).await.unwrap()
    });
    in_namespace(&ns2, "http://127.0.0.1:6444", |c| async move {
        configmap_names(c).await.unwrap()
    });

    // Stop and restart again: both cycles work with three listeners.
    server.stop();
    assert!(in_namespace(&ns2, "http://127.0.0.1:6444", |c| async move {
        configmap_names(c).await
    })
    .is_err());
    server.restart().unwrap();
    in_namespace(&ns2, "http://127.0.0.1:6444", |c| async move {
        configmap_names(c).await.unwrap()
    });
}
