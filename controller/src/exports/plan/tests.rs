//! Table-driven tests of [`plan_exports`]: objects in, plan out; and a small
//! in-memory "apply" so that a second pass can be shown to plan nothing.

use std::collections::BTreeMap;

use super::objects::{label, name_of};
use super::*;
use causeway_crds::mcs::{
    ClusterStatus, ServiceExportStatus, ServicePort, CONDITION_CONFLICT, CONDITION_READY,
    CONDITION_VALID, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER,
};
use causeway_crds::names::{
    imported_endpoint_slice, ENDPOINTSLICE_MANAGED_BY_LABEL, ENDPOINTSLICE_MANAGER,
    KUBERNETES_SERVICE_NAME_LABEL, MANAGED_LABEL, SERVICE_NAMESPACE_LABEL,
};
use causeway_crds::{ServiceImportSpec, ServiceImportType};
use k8s_openapi::api::core::v1::{
    NamespaceStatus, ObjectReference, ServicePort as CorePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

const BROKER: &str = "causeway-broker";

fn time(second: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + second).expect("valid second"))
}

fn now() -> Time {
    time(10_000)
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        ..ObjectMeta::default()
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn terminating(name: &str) -> Namespace {
    let mut ns = namespace(name);
    ns.metadata.deletion_timestamp = Some(time(5));
    ns.status = Some(NamespaceStatus {
        phase: Some("Terminating".to_owned()),
        ..NamespaceStatus::default()
    });
    ns
}

fn port(name: &str, number: i32) -> CorePort {
    CorePort {
        name: Some(name.to_owned()),
        port: number,
        ..CorePort::default()
    }
}

/// A ClusterIP Service with `ip` and `ports`.
fn cluster_ip(ns: &str, name: &str, ip: &str, ports: Vec<CorePort>) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_owned()),
            cluster_ips: Some(vec![ip.to_owned()]),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn headless(ns: &str, name: &str, ports: Vec<CorePort>) -> Service {
    cluster_ip(ns, name, "None", ports)
}

fn external_name(ns: &str, name: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".to_owned()),
            external_name: Some("db.example.com".to_owned()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A Service's own EndpointSlice: (address, hostname, ready) per endpoint.
fn own_slice(
    ns: &str,
    service: &str,
    suffix: &str,
    address_type: &str,
    endpoints: &[(&str, Option<&str>, bool)],
) -> EndpointSlice {
    let mut metadata = meta(ns, &format!("{service}-{suffix}"));
    metadata.labels = Some(BTreeMap::from([
        (KUBERNETES_SERVICE_NAME_LABEL.to_owned(), service.to_owned()),
        (
            ENDPOINTSLICE_MANAGED_BY_LABEL.to_owned(),
            "endpointslice-controller.k8s.io".to_owned(),
        ),
    ]));
    EndpointSlice {
        metadata,
        address_type: address_type.to_owned(),
        endpoints: endpoints
            .iter()
            .map(|(addr, hostname, ready)| Endpoint {
                addresses: vec![(*addr).to_owned()],
                hostname: hostname.map(str::to_owned),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*ready),
                    terminating: Some(false),
                }),
                target_ref: hostname.map(|h| ObjectReference {
                    kind: Some("Pod".to_owned()),
                    name: Some(h.to_owned()),
                    namespace: Some(ns.to_owned()),
                    ..ObjectReference::default()
                }),
                node_name: Some("node-1".to_owned()),
                ..Endpoint::default()
            })
            .collect(),
        ports: None,
    }
}

fn export(ns: &str, name: &str, created: i64) -> ServiceExport {
    let mut metadata = meta(ns, name);
    metadata.creation_timestamp = Some(time(created));
    ServiceExport {
        metadata,
        spec: Default::default(),
        status: None,
    }
}

/// One cluster's view: its local objects and (a copy of) the broker's.
#[derive(Debug, Clone, Default)]
struct World {
    cluster: &'static str,
    exports: Vec<ServiceExport>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    namespaces: Vec<Namespace>,
    imports: Vec<ServiceImport>,
    broker_imports: Vec<ServiceImport>,
    broker_slices: Vec<EndpointSlice>,
    /// The clusterset's accepted ClusterEndpoints.
    sites: Vec<Site>,
    revision: u64,
    /// Seconds after the test epoch that a pass runs at (0: [`now`]).
    clock: i64,
}

impl World {
    fn new(cluster: &'static str, namespaces: &[&str]) -> World {
        World {
            cluster,
            namespaces: namespaces.iter().map(|n| namespace(n)).collect(),
            sites: ["site-a", "site-b", "site-x"]
                .iter()
                .enumerate()
                .map(|(n, id)| site(id, &[&format!("10.{}.0.0/16", n + 1), "10.96.0.0/12"]))
                .collect(),
            ..World::default()
        }
    }

    fn plan(&self) -> ExportPlan {
        let observed = Observed {
            exports: &self.exports,
            services: &self.services,
            slices: &self.slices,
            namespaces: &self.namespaces,
            imports: &self.imports,
            broker_imports: &self.broker_imports,
            broker_slices: &self.broker_slices,
            sites: &self.sites,
        };
        let at = if self.clock == 0 {
            now()
        } else {
            time(self.clock)
        };
        plan_exports(self.cluster, BROKER, &observed, &at)
    }

    /// What a real API server would hold after the plan: writes applied, versions bumped.
    fn apply(&mut self, plan: &ExportPlan) {
        let mut uids: BTreeMap<ObjectKey, String> = BTreeMap::new();
        for p in &plan.broker_imports {
            self.revision += 1;
            upsert(&mut self.broker_imports, &p.upsert, self.revision);
        }
        for p in &plan.broker_slices {
            self.revision += 1;
            upsert(&mut self.broker_slices, &p.upsert, self.revision);
        }
        remove(&mut self.broker_imports, &plan.broker_import_deletes);
        remove(&mut self.broker_slices, &plan.broker_slice_deletes);
        for w in &plan.imports {
            if let Some(u) = &w.upsert {
                self.revision += 1;
                let uid = upsert(&mut self.imports, u, self.revision);
                uids.insert(w.key.clone(), uid);
            }
            if let Some(status) = &w.status {
                let obj = self
                    .imports
                    .iter_mut()
                    .find(|o| ObjectKey::of(*o) == w.key)
                    .expect("status of an existing import");
                obj.status = Some(status.clone());
            }
        }
        for w in &plan.slices {
            let mut u = w.upsert.clone();
            if let Some(owner) = &w.owner_created_now {
                let (Upsert::Create(s) | Upsert::Replace(s)) = &mut u;
                s.metadata.owner_references = Some(vec![import_owner(&owner.name, &uids[owner])]);
            }
            self.revision += 1;
            upsert(&mut self.slices, &u, self.revision);
        }
        remove(&mut self.slices, &plan.slice_deletes);
        remove(&mut self.imports, &plan.import_deletes);
        for w in &plan.export_status {
            let obj = self
                .exports
                .iter_mut()
                .find(|o| ObjectKey::of(*o) == w.export)
                .expect("status of an existing export");
            obj.status = Some(ServiceExportStatus {
                conditions: w.conditions.clone(),
            });
        }
    }

    /// Plans and applies one pass; returns the plan.
    fn pass(&mut self) -> ExportPlan {
        let plan = self.plan();
        self.apply(&plan);
        plan
    }

    fn condition(&self, ns: &str, name: &str, type_: &str) -> Option<Condition> {
        self.exports
            .iter()
            .find(|e| ObjectKey::of(*e) == ObjectKey::new(ns, name))?
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
    }

    fn import(&self, ns: &str, name: &str) -> Option<&ServiceImport> {
        self.imports
            .iter()
            .find(|o| ObjectKey::of(*o) == ObjectKey::new(ns, name))
    }

    fn slice_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slices
            .iter()
            .filter(|s| is_causeway_slice(s))
            .map(|s| ObjectKey::of(s).to_string())
            .collect();
        names.sort();
        names
    }

    fn broker_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .broker_imports
            .iter()
            .map(|o| format!("import {}", name_of(o)))
            .chain(
                self.broker_slices
                    .iter()
                    .map(|o| format!("slice {}", name_of(o))),
            )
            .collect();
        names.sort();
        names
    }
}

/// Copies the broker's objects from `from` to `to`, as a shared broker would show them
/// (with one clock: what `to` creates next is newer than anything `from` created).
fn share_broker(from: &World, to: &mut World) {
    to.broker_imports = from.broker_imports.clone();
    to.broker_slices = from.broker_slices.clone();
    to.revision = to.revision.max(from.revision);
}

/// An accepted cluster `id` owning `cidrs` (pod CIDRs; the checks treat both kinds alike).
fn site(id: &str, cidrs: &[&str]) -> Site {
    Site {
        object: id.to_owned(),
        cluster_id: id.to_owned(),
        pod_cidrs: cidrs.iter().map(|c| c.parse().expect("a CIDR")).collect(),
        service_cidrs: Vec::new(),
        gateways: Vec::new(),
    }
}

fn upsert<K: Resource + Clone>(objects: &mut Vec<K>, upsert: &Upsert<K>, revision: u64) -> String {
    let mut obj = upsert.object().clone();
    let key = ObjectKey::of(&obj);
    let meta = obj.meta_mut();
    meta.resource_version = Some(revision.to_string());
    match objects.iter().position(|o| ObjectKey::of(o) == key) {
        Some(i) => {
            assert!(
                matches!(upsert, Upsert::Replace(_)),
                "create of existing {key}"
            );
            let uid = objects[i].meta().uid.clone();
            obj.meta_mut().uid = uid.clone();
            objects[i] = obj;
            uid.unwrap_or_default()
        }
        None => {
            assert!(
                matches!(upsert, Upsert::Create(_)),
                "replace of missing {key}"
            );
            let uid = format!("uid-{revision}");
            obj.meta_mut().uid = Some(uid.clone());
            obj.meta_mut().creation_timestamp = Some(time(revision as i64));
            objects.push(obj);
            uid
        }
    }
}

fn remove<K: Resource>(objects: &mut Vec<K>, deletes: &[Delete]) {
    objects.retain(|o| !deletes.iter().any(|d| d.key == ObjectKey::of(o)));
}

/// Cluster `cluster` with namespace `prod` exporting `svc` (created at `created`).
fn exporting(
    cluster: &'static str,
    service: Service,
    own: Vec<EndpointSlice>,
    created: i64,
) -> World {
    let mut world = World::new(cluster, &["prod"]);
    let key = ObjectKey::of(&service);
    world
        .exports
        .push(export(&key.namespace, &key.name, created));
    world.services.push(service);
    world.slices.extend(own);
    world
}

fn db_ports() -> Vec<CorePort> {
    vec![port("pg", 5432)]
}

fn conditions_of(world: &World, name: &str) -> Vec<(String, String, String)> {
    [CONDITION_VALID, CONDITION_CONFLICT, CONDITION_READY]
        .iter()
        .filter_map(|t| world.condition("prod", name, t))
        .map(|c| (c.type_, c.status, c.reason))
        .collect()
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.to_owned(), s.to_owned(), r.to_owned())
}

#[test]
fn bad_exports_get_a_valid_false_condition_and_publish_nothing() {
    // (case, world, expected reason, message fragment)
    let cases: Vec<(&str, World, &str, &str)> = vec![
        (
            "no Service",
            {
                let mut w = World::new("site-a", &["prod"]);
                w.exports.push(export("prod", "db", 1));
                w
            },
            REASON_NO_SERVICE,
            "Service prod/db does not exist",
        ),
        (
            "ExternalName Service",
            exporting("site-a", external_name("prod", "db"), vec![], 1),
            REASON_INVALID_SERVICE_TYPE,
            "ExternalName",
        ),
        (
            "Service being deleted",
            {
                let mut svc = cluster_ip("prod", "db", "10.96.0.10", db_ports());
                svc.metadata.deletion_timestamp = Some(time(3));
                exporting("site-a", svc, vec![], 1)
            },
            REASON_NO_SERVICE,
            "does not exist",
        ),
    ];
    for (case, mut world, reason, fragment) in cases {
        let plan = world.pass();
        assert!(plan.broker_imports.is_empty(), "{case}: {plan:?}");
        assert!(plan.broker_slices.is_empty(), "{case}");
        assert!(plan.imports.is_empty(), "{case}");
        let valid = world.condition("prod", "db", CONDITION_VALID).expect(case);
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", reason),
            "{case}"
        );
        assert!(
            valid.message.contains(fragment),
            "{case}: {}",
            valid.message
        );
        let ready = world.condition("prod", "db", CONDITION_READY).expect(case);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_PENDING),
            "{case}"
        );
        assert!(
            world.condition("prod", "db", CONDITION_CONFLICT).is_none(),
            "{case}"
        );
        assert_eq!(valid.last_transition_time, now(), "{case}");
        assert!(
            world.plan().is_noop(),
            "{case}: a second pass writes nothing"
        );
    }
}

#[test]
fn a_cluster_set_ip_service_is_published_and_imported_with_its_cluster_ip() {
    let mut a = exporting(
        "site-a",
        cluster_ip("prod", "db", "10.96.0.10", db_ports()),
        vec![own_slice(
            "prod",
            "db",
            "x1",
            "IPv4",
            &[("10.1.0.5", None, false), ("10.1.0.6", None, true)],
        )],
        1,
    );
    let plan = a.pass();
    assert_eq!(plan.broker_imports.len(), 1);
    assert_eq!(plan.broker_slices.len(), 1);
    let import = &a.broker_imports[0];
    assert_eq!(name_of(import), "db-prod-site-a");
    assert_eq!(import.metadata.namespace.as_deref(), Some(BROKER));
    let labels = import.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_SERVICE_NAME).map(String::as_str),
        Some("db")
    );
    assert_eq!(
        labels.get(SERVICE_NAMESPACE_LABEL).map(String::as_str),
        Some("prod")
    );
    assert_eq!(
        labels.get(LABEL_SOURCE_CLUSTER).map(String::as_str),
        Some("site-a")
    );
    assert_eq!(
        import.metadata.annotations, None,
        "no claim of age: the broker's creationTimestamp is the export's age"
    );
    assert_eq!(import.spec.type_, ServiceImportType::ClusterSetIP);
    assert_eq!(import.spec.ips, vec!["10.96.0.10".to_owned()]);
    assert_eq!(import.spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(
        import.spec.ports,
        vec![ServicePort {
            name: Some("pg".to_owned()),
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
            port: 5432
        }]
    );
    let slice = &a.broker_slices[0];
    assert_eq!(name_of(slice), "db-prod-site-a-ipv4");
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.endpoints.len(), 1, "one endpoint: the ClusterIP");
    assert_eq!(slice.endpoints[0].addresses, vec!["10.96.0.10".to_owned()]);
    assert_eq!(
        slice.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
        Some(true)
    );
    assert_eq!(
        label(&slice.metadata, ENDPOINTSLICE_MANAGED_BY_LABEL),
        Some(ENDPOINTSLICE_MANAGER)
    );

    // Imported into its own cluster too, with the slice owned by the import.
    let local = a.import("prod", "db").expect("imported locally");
    assert_eq!(label(&local.metadata, MANAGED_LABEL), Some("true"));
    assert_eq!(local.spec.type_, ServiceImportType::ClusterSetIP);
    assert!(local.spec.ips.is_empty());
    assert_eq!(
        local.status.as_ref().map(|s| s.clusters.clone()),
        Some(vec![ClusterStatus {
            cluster: "site-a".to_owned()
        }])
    );
    assert_eq!(a.slice_names(), vec!["prod/db-site-a-ipv4".to_owned()]);
    let copy = a
        .slices
        .iter()
        .find(|s| name_of(*s) == "db-site-a-ipv4")
        .expect("copy");
    assert_eq!(copy.endpoints, slice.endpoints);
    assert_eq!(label(&copy.metadata, LABEL_SOURCE_CLUSTER), Some("site-a"));
    assert_eq!(label(&copy.metadata, LABEL_SERVICE_NAME), Some("db"));
    assert!(
        label(&copy.metadata, KUBERNETES_SERVICE_NAME_LABEL).is_none(),
        "kube-proxy must not pick it up"
    );
    let owner = &copy.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ServiceImport", "db")
    );
    assert_eq!(Some(&owner.uid), local.metadata.uid.as_ref());

    assert_eq!(
        conditions_of(&a, "db"),
        vec![
            triple(CONDITION_VALID, "True", REASON_VALID),
            triple(CONDITION_CONFLICT, "False", REASON_NO_CONFLICTS),
            triple(CONDITION_READY, "True", REASON_EXPORTED),
        ]
    );
    let second = a.plan();
    assert!(second.is_noop(), "a second pass writes nothing: {second:?}");
}

#[test]
fn a_headless_service_publishes_every_endpoint_per_family_and_not_ready_ones_too() {
    let mut a = exporting(
        "site-a",
        headless("prod", "db", db_ports()),
        vec![
            own_slice(
                "prod",
                "db",
                "v4a",
                "IPv4",
                &[
                    ("10.1.0.7", Some("db-1"), false),
                    ("10.1.0.6", Some("db-0"), true),
                ],
            ),
            // The same endpoint in a second slice (a rebalance) counts once.
            own_slice(
                "prod",
                "db",
                "v4b",
                "IPv4",
                &[("10.1.0.6", Some("db-0"), true)],
            ),
            own_slice(
                "prod",
                "db",
                "v6",
                "IPv6",
                &[("fd00::6", Some("db-0"), true)],
            ),
            own_slice(
                "prod",
                "db",
                "fqdn",
                "FQDN",
                &[("db.example.com", None, true)],
            ),
        ],
        1,
    );
    a.pass();
    assert_eq!(
        a.broker_names(),
        vec![
            "import db-prod-site-a",
            "slice db-prod-site-a-ipv4",
            "slice db-prod-site-a-ipv6"
        ]
    );
    let v4 = a
        .broker_slices
        .iter()
        .find(|s| s.address_type == "IPv4")
        .expect("v4");
    let shown: Vec<(String, Option<String>, Option<bool>)> = v4
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.hostname.clone(),
                e.conditions.as_ref().and_then(|c| c.ready),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("10.1.0.6".to_owned(), Some("db-0".to_owned()), Some(true)),
            ("10.1.0.7".to_owned(), Some("db-1".to_owned()), Some(false)),
        ]
    );
    assert_eq!(
        v4.endpoints[0]
            .target_ref
            .as_ref()
            .and_then(|r| r.name.as_deref()),
        Some("db-0")
    );
    assert!(
        v4.endpoints[0].node_name.is_none(),
        "only what the contract lists is published"
    );
    assert_eq!(a.broker_imports[0].spec.type_, ServiceImportType::Headless);
    assert!(a.broker_imports[0].spec.ips.is_empty());
    assert_eq!(
        a.slice_names(),
        vec![
            "prod/db-site-a-ipv4".to_owned(),
            "prod/db-site-a-ipv6".to_owned()
        ]
    );
    assert!(a.plan().is_noop());
}

#[test]
fn a_headless_service_without_endpoints_publishes_its_import_only() {
    let mut a = exporting("site-a", headless("prod", "db", db_ports()), vec![], 1);
    a.pass();
    assert_eq!(a.broker_names(), vec!["import db-prod-site-a"]);
    assert!(a.import("prod", "db").is_some());
    assert!(a.slice_names().is_empty());
}

/// Site A and site B export prod/db; B's export is older, or A's when `a_first`.
fn two_exports(a_svc: Service, b_svc: Service, a_first: bool) -> (World, World) {
    let (a_at, b_at) = if a_first { (1, 2) } else { (2, 1) };
    let mut a = exporting(
        "site-a",
        a_svc,
        vec![own_slice(
            "prod",
            "db",
            "x",
            "IPv4",
            &[("10.1.0.6", Some("db-0"), true)],
        )],
        a_at,
    );
    let mut b = exporting(
        "site-b",
        b_svc,
        vec![own_slice(
            "prod",
            "db",
            "x",
            "IPv4",
            &[("10.2.0.6", Some("db-0"), true)],
        )],
        b_at,
    );
    // The older publishes, the other publishes and sees it, the older sees the other:
    // the clusterset settles. Age is the broker's: the order of publication.
    let (first, second) = if a_first {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    first.pass();
    share_broker(first, second);
    second.pass();
    share_broker(second, first);
    first.pass();
    share_broker(first, second);
    second.pass();
    share_broker(second, first);
    (a, b)
}

#[test]
fn conflicts_are_resolved_by_the_oldest_export_and_reported_on_both_sides() {
    /// (case, A's Service, B's Service, A older, reason, field, winner's value, loser's value)
    type Case = (
        &'static str,
        Service,
        Service,
        bool,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "type: B (older) is headless",
            cluster_ip("prod", "db", "10.96.0.10", db_ports()),
            headless("prod", "db", db_ports()),
            false,
            REASON_TYPE_CONFLICT,
            "type",
            "Headless",
            "ClusterSetIP",
        ),
        (
            "ports: A (older) has 5432",
            headless("prod", "db", db_ports()),
            headless("prod", "db", vec![port("pg", 5433)]),
            true,
            REASON_PORT_CONFLICT,
            "ports",
            "[pg 5432/TCP]",
            "[pg 5433/TCP]",
        ),
        (
            "session affinity: A (older) has none",
            headless("prod", "db", db_ports()),
            {
                let mut s = headless("prod", "db", db_ports());
                if let Some(spec) = s.spec.as_mut() {
                    spec.session_affinity = Some("ClientIP".to_owned());
                }
                s
            },
            true,
            REASON_SESSION_AFFINITY_CONFLICT,
            "sessionAffinity",
            "None",
            "ClientIP",
        ),
    ];
    for (case, a_svc, b_svc, a_first, reason, field, winner_value, loser_value) in cases {
        let (a, b) = two_exports(a_svc, b_svc, a_first);
        let (winner, loser) = if a_first { (&a, &b) } else { (&b, &a) };
        for (world, role) in [(winner, "winner"), (loser, "loser")] {
            let conflict = world
                .condition("prod", "db", CONDITION_CONFLICT)
                .unwrap_or_else(|| panic!("{case}: {role} has a Conflict condition"));
            assert_eq!(
                (conflict.status.as_str(), conflict.reason.as_str()),
                ("True", reason),
                "{case}: {role}"
            );
            for part in [
                field,
                winner_value,
                loser_value,
                winner.cluster,
                loser.cluster,
            ] {
                assert!(
                    conflict.message.contains(part),
                    "{case}: {role}: {part:?} in {}",
                    conflict.message
                );
            }
            // Both stay published and valid.
            assert_eq!(
                world
                    .condition("prod", "db", CONDITION_READY)
                    .map(|c| c.status),
                Some("True".to_owned()),
                "{case}: {role}"
            );
            // Every cluster imports the winner's spec, the winner alone in clusters,
            // and only the winner's slices.
            let import = world.import("prod", "db").expect("imported");
            let winner_spec = &winner
                .broker_imports
                .iter()
                .find(|o| label(&o.metadata, LABEL_SOURCE_CLUSTER) == Some(winner.cluster))
                .expect("winner's")
                .spec;
            assert_eq!(import.spec.type_, winner_spec.type_, "{case}: {role}");
            assert_eq!(import.spec.ports, winner_spec.ports, "{case}: {role}");
            assert_eq!(
                import.spec.session_affinity, winner_spec.session_affinity,
                "{case}: {role}"
            );
            assert_eq!(
                import.status.as_ref().map(|s| s.clusters.clone()),
                Some(vec![ClusterStatus {
                    cluster: winner.cluster.to_owned()
                }]),
                "{case}: {role}"
            );
            assert_eq!(
                world.slice_names(),
                vec![format!("prod/db-{}-ipv4", winner.cluster)],
                "{case}: {role}"
            );
            assert!(world.plan().is_noop(), "{case}: {role} settled");
        }
    }
}

#[test]
fn several_conflicts_are_comma_joined() {
    let mut b_svc = cluster_ip("prod", "db", "10.96.0.11", vec![port("pg", 5433)]);
    if let Some(spec) = b_svc.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".to_owned());
    }
    let (a, b) = two_exports(headless("prod", "db", db_ports()), b_svc, true);
    for world in [&a, &b] {
        let c = world
            .condition("prod", "db", CONDITION_CONFLICT)
            .expect("conflict");
        assert_eq!(
            c.reason,
            "TypeConflict,PortConflict,SessionAffinityConflict"
        );
    }
}

#[test]
fn agreeing_exports_are_merged() {
    let (a, b) = two_exports(
        headless("prod", "db", db_ports()),
        headless("prod", "db", db_ports()),
        true,
    );
    for world in [&a, &b] {
        let import = world.import("prod", "db").expect("imported");
        let clusters: Vec<&str> = import
            .status
            .iter()
            .flat_map(|s| &s.clusters)
            .map(|c| c.cluster.as_str())
            .collect();
        assert_eq!(clusters, vec!["site-a", "site-b"]);
        assert_eq!(
            world.slice_names(),
            vec![
                "prod/db-site-a-ipv4".to_owned(),
                "prod/db-site-b-ipv4".to_owned()
            ]
        );
        assert_eq!(
            world
                .condition("prod", "db", CONDITION_CONFLICT)
                .map(|c| (c.status, c.reason)),
            Some(("False".to_owned(), REASON_NO_CONFLICTS.to_owned()))
        );
    }
}

#[test]
fn another_clusters_objects_are_read_never_written() {
    let (mut a, _) = two_exports(
        headless("prod", "db", db_ports()),
        headless("prod", "db", db_ports()),
        true,
    );
    // A stops exporting: only its own objects go.
    a.exports.clear();
    let plan = a.plan();
    let deleted: Vec<String> = plan
        .broker_import_deletes
        .iter()
        .chain(&plan.broker_slice_deletes)
        .map(|d| d.key.name.clone())
        .collect();
    assert_eq!(deleted, vec!["db-prod-site-a", "db-prod-site-a-ipv4"]);
    assert!(plan.broker_imports.is_empty() && plan.broker_slices.is_empty());
    a.apply(&plan);
    // B's export is still imported here.
    assert_eq!(a.slice_names(), vec!["prod/db-site-b-ipv4".to_owned()]);
    assert!(a.import("prod", "db").is_some());
}

#[test]
fn a_namespace_missing_here_skips_the_import() {
    let mut b = World::new("site-b", &["prod", "analytics"]);
    b.exports.push(export("analytics", "etl", 1));
    b.services.push(cluster_ip(
        "analytics",
        "etl",
        "10.96.1.1",
        vec![port("http", 80)],
    ));
    b.pass();
    let mut a = World::new("site-a", &["prod"]);
    share_broker(&b, &mut a);
    let plan = a.pass();
    assert_eq!(plan.skipped, vec![ObjectKey::new("analytics", "etl")]);
    assert!(a.imports.is_empty() && a.slice_names().is_empty());
    assert!(a.plan().is_noop(), "skipping writes nothing");
    // Once the namespace exists, the import follows.
    a.namespaces.push(namespace("analytics"));
    a.pass();
    assert!(a.import("analytics", "etl").is_some());
    assert_eq!(
        a.slice_names(),
        vec!["analytics/etl-site-b-ipv4".to_owned()]
    );
}

#[test]
fn unexport_service_deletion_and_namespace_deletion_withdraw_everything() {
    type Change = fn(&mut World);
    // (case, change, the Valid reason afterwards: none once the export is gone; an
    // export in a namespace being deleted is left as it was)
    let cases: Vec<(&str, Change, Option<&str>)> = vec![
        ("unexport", |w| w.exports.clear(), None),
        (
            "Service deleted",
            |w| w.services.clear(),
            Some(REASON_NO_SERVICE),
        ),
        (
            "namespace being deleted",
            |w| w.namespaces = vec![terminating("prod")],
            Some(REASON_VALID),
        ),
        (
            "namespace gone",
            |w| {
                w.namespaces.clear();
                w.exports.clear();
                w.services.clear();
                w.slices.clear();
                w.imports.clear();
            },
            None,
        ),
    ];
    for (case, change, valid_reason) in cases {
        let mut a = exporting(
            "site-a",
            headless("prod", "db", db_ports()),
            vec![own_slice(
                "prod",
                "db",
                "x",
                "IPv4",
                &[("10.1.0.6", Some("db-0"), true)],
            )],
            1,
        );
        a.pass();
        let mut b = World::new("site-b", &["prod"]);
        share_broker(&a, &mut b);
        b.pass();
        assert!(b.import("prod", "db").is_some(), "{case}: imported first");

        change(&mut a);
        let plan = a.pass();
        assert!(
            a.broker_names().is_empty(),
            "{case}: withdrawn from the broker: {:?}",
            a.broker_names()
        );
        assert!(
            a.imports.is_empty() && a.slice_names().is_empty(),
            "{case}: and locally"
        );
        assert_eq!(
            a.condition("prod", "db", CONDITION_VALID).map(|c| c.reason),
            valid_reason.map(str::to_owned),
            "{case}: {plan:?}"
        );
        share_broker(&a, &mut b);
        b.pass();
        assert!(b.imports.is_empty(), "{case}: withdrawn in B");
        assert!(b.slice_names().is_empty(), "{case}: B's slices");
        assert!(a.plan().is_noop() && b.plan().is_noop(), "{case}: settled");
    }
}

#[test]
fn a_readiness_change_propagates_and_keeps_the_transition_time() {
    let ready = |r: bool| own_slice("prod", "db", "x", "IPv4", &[("10.1.0.6", Some("db-0"), r)]);
    let mut a = exporting(
        "site-a",
        headless("prod", "db", db_ports()),
        vec![ready(true)],
        1,
    );
    a.pass();
    let before = a.condition("prod", "db", CONDITION_READY).expect("ready");
    let mut b = World::new("site-b", &["prod"]);
    share_broker(&a, &mut b);
    b.pass();

    a.slices.retain(is_causeway_slice);
    a.slices.push(ready(false));
    let plan = a.pass();
    assert_eq!(plan.broker_slices.len(), 1, "{plan:?}");
    assert!(matches!(plan.broker_slices[0].upsert, Upsert::Replace(_)));
    assert!(
        plan.export_status.is_empty(),
        "the conditions did not change"
    );
    share_broker(&a, &mut b);
    let plan = b.pass();
    assert_eq!(plan.slices.len(), 1, "B's copy is replaced");
    let copy = b
        .slices
        .iter()
        .find(|s| name_of(*s) == "db-site-a-ipv4")
        .expect("copy");
    assert_eq!(
        copy.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
        Some(false)
    );
    assert_eq!(a.condition("prod", "db", CONDITION_READY), Some(before));
}

#[test]
fn a_condition_keeps_its_transition_time_unless_its_status_flips() {
    let mut a = World::new("site-a", &["prod"]);
    a.exports.push(export("prod", "db", 1));
    a.clock = 100;
    a.pass();
    let valid = a.condition("prod", "db", CONDITION_VALID).expect("valid");
    assert_eq!(valid.last_transition_time, time(100));
    // Another reason, the same status: the time is kept.
    a.clock = 200;
    a.services.push(external_name("prod", "db"));
    let plan = a.plan();
    let c = plan.export_status[0]
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_VALID)
        .expect("valid");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", REASON_INVALID_SERVICE_TYPE)
    );
    assert_eq!(
        c.last_transition_time, valid.last_transition_time,
        "still False: time kept"
    );
    a.apply(&plan);
    // Status flips: a new transition time.
    a.clock = 300;
    a.services = vec![cluster_ip("prod", "db", "10.96.0.10", db_ports())];
    let plan = a.plan();
    let c = plan.export_status[0]
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_VALID)
        .expect("valid");
    assert_eq!(c.status, "True");
    assert_eq!(c.last_transition_time, time(300));
}

#[test]
fn conditions_of_other_writers_are_kept() {
    let mut a = exporting("site-a", headless("prod", "db", db_ports()), vec![], 1);
    let foreign = Condition {
        type_: "example.com/Audited".to_owned(),
        status: "True".to_owned(),
        reason: "Audited".to_owned(),
        message: "by someone else".to_owned(),
        last_transition_time: time(0),
        observed_generation: None,
    };
    a.exports[0].status = Some(ServiceExportStatus {
        conditions: vec![foreign.clone()],
    });
    a.pass();
    let all = &a.exports[0].status.as_ref().expect("status").conditions;
    assert_eq!(all[0], foreign);
    assert_eq!(all.len(), 4);
}

#[test]
fn local_objects_that_are_not_causeways_are_left_alone() {
    let mut a = exporting(
        "site-a",
        headless("prod", "db", db_ports()),
        vec![own_slice(
            "prod",
            "db",
            "x",
            "IPv4",
            &[("10.1.0.6", None, true)],
        )],
        1,
    );
    // Someone else's ServiceImport named db, and a slice named like our copy.
    a.imports.push(ServiceImport {
        metadata: meta("prod", "db"),
        spec: ServiceImportSpec {
            ports: vec![],
            ips: vec![],
            type_: ServiceImportType::ClusterSetIP,
            session_affinity: None,
            session_affinity_config: None,
        },
        status: None,
    });
    let mut other_import = a.imports[0].clone();
    other_import.metadata.name = Some("unrelated".to_owned());
    a.imports.push(other_import);
    let plan = a.pass();
    assert!(
        plan.imports.is_empty() && plan.import_deletes.is_empty(),
        "{plan:?}"
    );
    assert!(plan.slices.is_empty(), "no slice without our import");
    assert_eq!(
        plan.name_taken,
        vec![NameTaken {
            kind: "ServiceImport",
            at_broker: false,
            key: ObjectKey::new("prod", "db")
        }]
    );
    // The Service's own slice is an input, never deleted.
    assert!(plan.slice_deletes.is_empty());
    assert!(a.plan().is_noop());
}

#[test]
fn a_broker_name_held_by_another_cluster_is_not_overwritten() {
    let mut a = exporting("site-a", headless("prod", "db", db_ports()), vec![], 1);
    let mut squatter = ServiceImport {
        metadata: meta(BROKER, "db-prod-site-a"),
        spec: ServiceImportSpec {
            ports: vec![],
            ips: vec![],
            type_: ServiceImportType::Headless,
            session_affinity: None,
            session_affinity_config: None,
        },
        status: None,
    };
    squatter.metadata.labels = Some(BTreeMap::from([(
        LABEL_SOURCE_CLUSTER.to_owned(),
        "site-x".to_owned(),
    )]));
    a.broker_imports.push(squatter.clone());
    let plan = a.pass();
    assert!(plan.broker_imports.is_empty() && plan.broker_import_deletes.is_empty());
    assert_eq!(a.broker_imports, vec![squatter], "untouched");
    let ready = a.condition("prod", "db", CONDITION_READY).expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", REASON_PENDING)
    );
    assert!(
        ready.message.contains("belongs to another cluster"),
        "{}",
        ready.message
    );
}

#[test]
fn broker_objects_without_labels_or_times_are_handled() {
    // B's object has no creation time (no real broker does that): it counts as the newest.
    let (mut a, mut b) = two_exports(
        headless("prod", "db", db_ports()),
        cluster_ip("prod", "db", "10.96.0.11", db_ports()),
        false,
    );
    assert_eq!(
        a.import("prod", "db").map(|i| i.spec.type_),
        Some(ServiceImportType::ClusterSetIP)
    );
    for obj in b
        .broker_imports
        .iter_mut()
        .filter(|o| label(&o.metadata, LABEL_SOURCE_CLUSTER) == Some("site-b"))
    {
        obj.metadata.creation_timestamp = None;
    }
    // And an object without any of our labels is ignored.
    let mut stray = b.broker_imports[0].clone();
    stray.metadata.name = Some("stray".to_owned());
    stray.metadata.labels = None;
    b.broker_imports.push(stray);
    share_broker(&b, &mut a);
    let plan = a.pass();
    assert_eq!(plan.ignored, vec![ObjectKey::new(BROKER, "stray")]);
    assert_eq!(
        a.import("prod", "db").map(|i| i.spec.type_),
        Some(ServiceImportType::Headless),
        "A wins now"
    );
    assert!(
        plan.broker_import_deletes.is_empty(),
        "B's objects are not ours to fix"
    );
}

#[test]
fn a_claimed_export_time_wins_nothing() {
    // A exported first; B, later, claims 1970 in the annotation older releases wrote.
    let (mut a, mut b) = two_exports(
        headless("prod", "db", db_ports()),
        cluster_ip("prod", "db", "10.96.0.11", db_ports()),
        true,
    );
    for obj in b
        .broker_imports
        .iter_mut()
        .filter(|o| label(&o.metadata, LABEL_SOURCE_CLUSTER) == Some("site-b"))
    {
        obj.metadata.annotations = Some(BTreeMap::from([(
            "causeway.dev/exported-at".to_owned(),
            "1970-01-01T00:00:00Z".to_owned(),
        )]));
    }
    share_broker(&b, &mut a);
    a.pass();
    assert_eq!(
        a.import("prod", "db").map(|i| i.spec.type_),
        Some(ServiceImportType::Headless),
        "A's export is still the oldest"
    );
    let conflict = a
        .condition("prod", "db", CONDITION_CONFLICT)
        .expect("Conflict");
    assert!(conflict.message.contains("site-b"), "{}", conflict.message);
}

#[test]
fn another_clusters_endpoints_are_imported_only_inside_its_cidrs() {
    let (mut a, mut b) = two_exports(
        headless("prod", "db", db_ports()),
        headless("prod", "db", db_ports()),
        true,
    );
    assert_eq!(
        a.slice_names(),
        vec!["prod/db-site-a-ipv4", "prod/db-site-b-ipv4"]
    );
    // B lists, besides its own pod, site-a's pod and an address of nobody's.
    for slice in b
        .broker_slices
        .iter_mut()
        .filter(|o| label(&o.metadata, LABEL_SOURCE_CLUSTER) == Some("site-b"))
    {
        for (address, host) in [("10.1.0.99", "fake-0"), ("192.0.2.7", "fake-1")] {
            slice.endpoints.push(Endpoint {
                addresses: vec![address.to_owned()],
                hostname: Some(host.to_owned()),
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            });
        }
    }
    share_broker(&b, &mut a);
    let plan = a.pass();
    let imported_b = |a: &World| -> Vec<String> {
        a.slices
            .iter()
            .filter(|s| name_of(*s) == "db-site-b-ipv4")
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
            .collect()
    };
    assert_eq!(imported_b(&a), vec!["10.2.0.6"], "only B's own address");
    assert_eq!(
        plan.outside_cidrs,
        vec![OutsideCidrs {
            cluster: "site-b".to_owned(),
            slice: ObjectKey::new(BROKER, "db-prod-site-b-ipv4"),
            addresses: vec!["10.1.0.99".to_owned(), "192.0.2.7".to_owned()],
            cluster_known: true,
        }]
    );
    assert!(plan.outside_cidrs[0]
        .to_string()
        .contains("10.1.0.99, 192.0.2.7"));
    // The same again plans nothing: a report is not a write.
    assert!(a.plan().is_noop());

    // A cluster with no accepted ClusterEndpoint: nothing of it can be checked.
    a.sites.retain(|s| s.cluster_id != "site-b");
    let plan = a.pass();
    assert!(imported_b(&a).is_empty(), "{:?}", imported_b(&a));
    assert!(
        plan.outside_cidrs.iter().all(|o| !o.cluster_known),
        "{:?}",
        plan.outside_cidrs
    );
    assert!(plan.outside_cidrs[0]
        .to_string()
        .contains("no accepted ClusterEndpoint"));
}

#[test]
fn long_names_are_cut_with_a_hash() {
    let service = "s".repeat(50);
    let mut a = World::new("site-a", &["production-namespace"]);
    a.exports.push(export("production-namespace", &service, 1));
    a.services.push(cluster_ip(
        "production-namespace",
        &service,
        "10.96.0.10",
        db_ports(),
    ));
    a.pass();
    for name in a.broker_names() {
        let name = name
            .split_once(' ')
            .map(|(_, n)| n.to_owned())
            .unwrap_or_default();
        assert!(name.len() <= 63, "{name}");
    }
    let local_slice = a.slice_names().pop().expect("imported slice");
    let name = local_slice
        .split_once('/')
        .map(|(_, n)| n)
        .unwrap_or_default();
    assert!(name.len() <= 63, "{name}");
    assert_eq!(name, imported_endpoint_slice(&service, "site-a", "ipv4"));
    assert!(a.plan().is_noop(), "cut names are found again");
}

#[test]
fn an_empty_world_plans_nothing() {
    let world = World::new("site-a", &["prod"]);
    assert!(world.plan().is_noop());
    assert_eq!(world.plan(), ExportPlan::default());
}

#[test]
fn slices_carry_the_services_ports_with_name_and_protocol_defaulted() {
    let service = cluster_ip(
        "prod",
        "db",
        "10.96.0.10",
        vec![
            port("pg", 5432),
            CorePort {
                name: None,
                protocol: Some("UDP".to_owned()),
                app_protocol: Some("dns".to_owned()),
                port: 53,
                ..CorePort::default()
            },
        ],
    );
    let mut a = exporting("site-a", service, vec![], 1);
    a.pass();
    let expected = Some(vec![
        EndpointPort {
            name: Some("pg".to_owned()),
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
            port: Some(5432),
        },
        EndpointPort {
            name: Some(String::new()),
            protocol: Some("UDP".to_owned()),
            app_protocol: Some("dns".to_owned()),
            port: Some(53),
        },
    ]);
    assert_eq!(a.broker_slices.len(), 1);
    assert_eq!(a.broker_slices[0].ports, expected, "at the broker");
    let copy = a
        .slices
        .iter()
        .find(|s| name_of(*s) == "db-site-a-ipv4")
        .expect("copy");
    assert_eq!(copy.ports, expected, "and in the importing cluster");
}

#[test]
fn writes_counts_every_write_the_plan_makes() {
    let mut a = exporting(
        "site-a",
        headless("prod", "db", db_ports()),
        vec![own_slice(
            "prod",
            "db",
            "x",
            "IPv4",
            &[("10.1.0.6", Some("db-0"), true)],
        )],
        1,
    );
    // Publish: the broker's import and slice; here, the import and its status, the
    // slice, and the export's status.
    let plan = a.pass();
    assert_eq!(
        (
            plan.broker_imports.len(),
            plan.broker_slices.len(),
            plan.imports.len(),
            plan.slices.len(),
            plan.export_status.len()
        ),
        (1, 1, 1, 1, 1),
        "{plan:?}"
    );
    assert_eq!(plan.writes(), 6, "{plan:?}");
    assert!(!plan.is_noop());

    // Withdraw: four deletes, nothing else.
    a.exports.clear();
    let plan = a.pass();
    assert_eq!(
        (
            plan.broker_import_deletes.len(),
            plan.broker_slice_deletes.len(),
            plan.import_deletes.len(),
            plan.slice_deletes.len()
        ),
        (1, 1, 1, 1),
        "{plan:?}"
    );
    assert_eq!(plan.writes(), 4, "{plan:?}");
    assert!(a.plan().is_noop());
}

#[test]
fn the_conflict_condition_goes_when_the_export_stops_being_published() {
    let mut a = exporting(
        "site-a",
        cluster_ip("prod", "db", "10.96.0.10", db_ports()),
        vec![],
        1,
    );
    a.pass();
    assert_eq!(
        a.condition("prod", "db", CONDITION_CONFLICT)
            .map(|c| c.status),
        Some("False".to_owned())
    );
    // The Service goes: the export is invalid, so "no conflict" would be a claim about
    // nothing.
    a.services.clear();
    a.pass();
    assert_eq!(
        conditions_of(&a, "db"),
        vec![
            triple(CONDITION_VALID, "False", REASON_NO_SERVICE),
            triple(CONDITION_READY, "False", REASON_PENDING),
        ]
    );
}

#[test]
fn a_replaced_copy_stays_owned_by_its_import() {
    let ready = |r: bool| own_slice("prod", "db", "x", "IPv4", &[("10.1.0.6", Some("db-0"), r)]);
    let mut a = exporting(
        "site-a",
        headless("prod", "db", db_ports()),
        vec![ready(true)],
        1,
    );
    a.pass();
    let mut b = World::new("site-b", &["prod"]);
    share_broker(&a, &mut b);
    b.pass();
    let uid = b
        .import("prod", "db")
        .and_then(|i| i.metadata.uid.clone())
        .expect("imported, with a uid");

    a.slices.retain(is_causeway_slice);
    a.slices.push(ready(false));
    a.pass();
    share_broker(&a, &mut b);
    let plan = b.plan();
    let [write] = plan.slices.as_slice() else {
        panic!("expected one slice write, got {plan:?}");
    };
    assert!(write.owner_created_now.is_none(), "the import exists");
    let Upsert::Replace(slice) = &write.upsert else {
        panic!("expected a replace, got {:?}", write.upsert);
    };
    // Without it, deleting the ServiceImport would leave the slice behind.
    assert_eq!(
        slice.metadata.owner_references,
        Some(vec![import_owner("db", &uid)])
    );
}
