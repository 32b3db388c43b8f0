//! The Helm chart (deploy/helm/causeway) with real Helm: `deploy/helm/tests/render.py`
//! lints and renders it through helm-python-sdk (Helm v4's engine) with the default
//! values and every file in deploy/helm/tests/values/, and tries every file in
//! deploy/helm/tests/bad/. Here every rendered document is parsed into its
//! k8s-openapi type (and must survive a round trip through it, so a misspelt field
//! fails) and checked: capabilities, RBAC scope, selectors matching labels, probes,
//! the environment the binaries read, and the CRDs identical to crds/yaml.
//!
//! The interpreter is `$CAUSEWAY_HELM_PYTHON` (default `python3`); it must import
//! `helm_python` (`pip install helm-python-sdk`, which scripts/test does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use causeway_controller::plugin::verify;
use causeway_crds::rbac;
use causeway_tests::harness::confine::CHART_DATAPATH_CAPABILITIES;
use causeway_tests::harness::kube::CONTROLLER_DNS_PORT;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Namespace, PodSpec, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const NAMESPACE: &str = "causeway";
const GATEWAY_LABEL: &str = causeway_crds::names::GATEWAY_NODE_LABEL;

/// Every environment variable `binary` (run with `args` and `--help`) reads, as its help
/// names them (`[env: NAME=...]`), plus `extra`.
fn env_read_by(binary: &str, args: &[&str], extra: &[&str]) -> Vec<String> {
    let path = causeway_tests::harness::workspace_binary(binary);
    let out = Command::new(&path)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("run {} --help: {e}", path.display()));
    assert!(out.status.success(), "{binary} {args:?} --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 5, "{binary}: no env in its --help:\n{help}");
    names.extend(extra.iter().map(|e| (*e).to_owned()));
    names
}

/// What the gateway reads, plus HOST_IP, which only feeds `$(HOST_IP)` in
/// CAUSEWAY_PUBLIC_ENDPOINT, and RUST_LOG.
fn gateway_env() -> Vec<String> {
    env_read_by(
        "causeway-gateway",
        &["kubernetes"],
        &["HOST_IP", "RUST_LOG"],
    )
}

/// What the controller reads, plus RUST_LOG.
fn controller_env() -> Vec<String> {
    env_read_by("causeway-controller", &[], &["RUST_LOG"])
}

#[derive(Deserialize)]
struct Rendered {
    helm: String,
    crds: Vec<ChartFile>,
    scenarios: BTreeMap<String, Scenario>,
    bad: BTreeMap<String, Refusal>,
}

#[derive(Deserialize)]
struct ChartFile {
    name: String,
    data: String,
}

#[derive(Deserialize)]
struct Scenario {
    lint: Lint,
    manifests: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Lint {
    #[serde(default)]
    messages: Vec<LintMessage>,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize, Debug)]
struct LintMessage {
    severity: u8,
    path: String,
    error: String,
}

#[derive(Deserialize)]
struct Refusal {
    expect: String,
    error: Option<String>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Runs render.py once for every test of this file.
fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let python = std::env::var("CAUSEWAY_HELM_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = workspace().join("deploy/helm/tests/render.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(workspace().join("deploy/helm/causeway"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{python} {} failed (is helm-python-sdk installed? pip install helm-python-sdk, \
             or point CAUSEWAY_HELM_PYTHON at an interpreter that has it):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("render.py prints one JSON document")
    })
}

/// One rendered object, parsed into its k8s-openapi type.
#[derive(Debug, Clone)]
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    Service(Service),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    Pdb(PodDisruptionBudget),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Policy(ValidatingAdmissionPolicy),
    PolicyBinding(ValidatingAdmissionPolicyBinding),
}

/// Parses `doc` as `T` and asserts that serializing it back gives the same document:
/// a field k8s-openapi does not know (a typo, a wrong level) would be dropped silently.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    let obj: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse into its k8s-openapi type: {e}"));
    let back = serde_json::to_value(&obj).expect("k8s-openapi types serialize");
    if let Some(path) = first_difference(&strip_nulls(doc.clone()), &strip_nulls(back), "") {
        panic!(
            "{what}: {path} is lost in the k8s-openapi round trip (an unknown or misplaced field)"
        );
    }
    obj
}

/// The JSON path of the first place where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, v)| match y.get(k) {
                None => Some(format!("{at}.{k}")),
                Some(w) => first_difference(v, w, &format!("{at}.{k}")),
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{at}.{k} (added)"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]"))),
        // Numbers and strings may be re-typed by the round trip (a quantity "2" vs 2).
        _ if a == b || a.to_string().trim_matches('"') == b.to_string().trim_matches('"') => None,
        _ => Some(at.to_owned()),
    }
}

/// Removes nulls (`annotations:` with nothing under it) and empty maps, which Kubernetes
/// and k8s-openapi both treat as absent.
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .filter(|(_, v)| !matches!(v, Value::Object(m) if m.is_empty()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn parsed(scenario: &str) -> Vec<Object> {
    let s = rendered()
        .scenarios
        .get(scenario)
        .unwrap_or_else(|| panic!("no scenario {scenario}"));
    let mut out = Vec::new();
    for (template, text) in &s.manifests {
        if template.ends_with("NOTES.txt") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text) {
            let doc = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{scenario}: {template} is not YAML: {e}"));
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let what = format!(
                "{scenario}: {template}: {kind} {}",
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            assert!(
                doc["metadata"]["name"].is_string(),
                "{what} has no metadata.name"
            );
            out.push(match kind.as_str() {
                "Namespace" => Object::Namespace(typed(&doc, &what)),
                "ServiceAccount" => Object::ServiceAccount(typed(&doc, &what)),
                "Secret" => Object::Secret(typed(&doc, &what)),
                "Service" => Object::Service(typed(&doc, &what)),
                "Deployment" => Object::Deployment(typed(&doc, &what)),
                "DaemonSet" => Object::DaemonSet(typed(&doc, &what)),
                "PodDisruptionBudget" => Object::Pdb(typed(&doc, &what)),
                "ClusterRole" => Object::ClusterRole(typed(&doc, &what)),
                "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&doc, &what)),
                "Role" => Object::Role(typed(&doc, &what)),
                "RoleBinding" => Object::RoleBinding(typed(&doc, &what)),
                "ValidatingAdmissionPolicy" => Object::Policy(typed(&doc, &what)),
                "ValidatingAdmissionPolicyBinding" => Object::PolicyBinding(typed(&doc, &what)),
                other => panic!("{what}: unexpected kind {other:?}; add it to this test"),
            });
        }
    }
    out
}

macro_rules! pick {
    ($objects:expr, $variant:ident) => {
        $objects
            .iter()
            .filter_map(|o| match o {
                Object::$variant(x) => Some(x.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

fn named<
    'a,
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    items: &'a [T],
    name: &str,
) -> &'a T {
    items
        .iter()
        .find(|x| x.metadata().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no object named {name}"))
}

fn pod_spec(t: &PodTemplateSpec) -> &PodSpec {
    t.spec.as_ref().expect("pod template has a spec")
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

fn env_value(c: &Container, name: &str) -> String {
    env(c, name)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("container {} has no literal env {name}", c.name))
}

fn env_field(c: &Container, name: &str) -> String {
    env(c, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone())
        .unwrap_or_else(|| panic!("container {} has no downward-API env {name}", c.name))
}

/// Asserts `selector` selects pods labelled `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>, what: &str) {
    let wanted = selector
        .match_labels
        .as_ref()
        .expect("selectors use matchLabels");
    assert!(
        !wanted.is_empty(),
        "{what}: empty selector selects everything"
    );
    for (k, v) in wanted {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{what}: selector {k}={v} does not match the pod labels {labels:?}"
        );
    }
    assert!(
        selector.match_expressions.is_none(),
        "{what}: unexpected matchExpressions"
    );
}

fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod templates carry labels")
}

/// The capabilities the test harness leaves gateways and route agents, as the chart spells
/// them: the chart's DaemonSets must add exactly these, or the end-to-end tests would run
/// the datapath with powers a user's deployment does not have.
fn datapath_capabilities() -> Vec<String> {
    CHART_DATAPATH_CAPABILITIES
        .iter()
        .map(|c| c.to_uppercase())
        .collect()
}

/// Every container: not privileged, no privilege escalation, all capabilities dropped and
/// at most `allowed` added back; resources with requests and limits of cpu and memory.
fn check_container(c: &Container, allowed: &[String], what: &str) {
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no securityContext"));
    assert_ne!(sc.privileged, Some(true), "{what}: privileged");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{what}: allowPrivilegeEscalation must be false"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{what}: root filesystem must be read-only"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{what}: must drop ALL capabilities"
    );
    let added: Vec<String> = caps.add.iter().flatten().cloned().collect();
    assert_eq!(added, allowed, "{what}: capabilities added");
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no resources"));
    for (kind, m) in [("requests", &res.requests), ("limits", &res.limits)] {
        let m = m
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no resource {kind}"));
        for r in ["cpu", "memory"] {
            assert!(m.contains_key(r), "{what}: no {r} in resource {kind}");
        }
    }
    assert!(
        c.image_pull_policy.is_some(),
        "{what}: imagePullPolicy unset"
    );
}

fn check_env_known(c: &Container, known: &[String], what: &str) {
    for e in c.env.iter().flatten() {
        assert!(
            known.contains(&e.name),
            "{what}: env {} is read by nothing",
            e.name
        );
    }
}

fn healthz_probe(c: &Container, port_name: &str, what: &str) {
    for (kind, probe) in [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
    ] {
        let http = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{what}: no HTTP {kind} probe"));
        assert_eq!(
            http.path.as_deref(),
            Some("/healthz"),
            "{what}: {kind} probe path"
        );
        assert_eq!(
            http.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(port_name.into()),
            "{what}: {kind} probe port"
        );
    }
}

/// The controller's probes: liveness on /healthz, readiness on /readyz, both HTTP on
/// the container port `health`, which is where `CAUSEWAY_HEALTH_ADDR` listens.
fn controller_probes(c: &Container, what: &str) {
    for (kind, probe, path) in [
        ("liveness", &c.liveness_probe, "/healthz"),
        ("readiness", &c.readiness_probe, "/readyz"),
    ] {
        let http = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{what}: no HTTP {kind} probe"));
        assert_eq!(
            http.path.as_deref(),
            Some(path),
            "{what}: {kind} probe path"
        );
        assert_eq!(
            http.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("health".into()),
            "{what}: {kind} probe port"
        );
    }
    let listen: std::net::SocketAddr = env_value(c, "CAUSEWAY_HEALTH_ADDR")
        .parse()
        .expect("CAUSEWAY_HEALTH_ADDR is ip:port");
    assert!(
        ports(c).contains(&("health".into(), i32::from(listen.port()), "TCP".into())),
        "{what}: the probes' port {} is not a declared container port ({:?})",
        listen.port(),
        ports(c)
    );
}

fn ports(c: &Container) -> BTreeSet<(String, i32, String)> {
    c.ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.container_port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect()
}

/// (group, resource, verb, resourceNames) of every rule, one verb and resource each.
type Triple = (String, String, String, Vec<String>);

fn rules(r: &[PolicyRule]) -> BTreeSet<Triple> {
    let mut out = BTreeSet::new();
    for rule in r {
        let names = rule.resource_names.clone().unwrap_or_default();
        for g in rule.api_groups.iter().flatten() {
            for res in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    out.insert((g.clone(), res.clone(), v.clone(), names.clone()));
                }
            }
        }
    }
    out
}

/// The rules of one of the RBAC contract's grants, as the chart renders them for `member`.
fn granted(grant: &rbac::Grant, member: Option<&str>) -> BTreeSet<Triple> {
    let names: Vec<String> = match grant.scope {
        rbac::Scope::Member => member.into_iter().map(str::to_owned).collect(),
        rbac::Scope::Named(names) => names.iter().map(|n| n.to_string()).collect(),
        _ => Vec::new(),
    };
    let mut out = BTreeSet::new();
    for rule in grant.rules {
        for res in rule.resources {
            for v in rule.verbs {
                out.insert((
                    rule.api_group.to_string(),
                    res.to_string(),
                    v.to_string(),
                    names.clone(),
                ));
            }
        }
    }
    out
}

/// The chart's ClusterRoles and Roles are exactly `identities`' grants in
/// `crds/src/rbac.rs` (which the real-API tests hold every request against), no more;
/// a member's own Role is rendered once for each of `members`.
fn check_grants(
    scenario: &str,
    objects: &[Object],
    identities: &[&rbac::Identity],
    members: &[&str],
) {
    let cluster_roles = pick!(objects, ClusterRole);
    let roles = pick!(objects, Role);
    let mut expected_cluster = BTreeSet::new();
    let mut expected_ns = BTreeSet::new();
    for identity in identities {
        for grant in identity.grants {
            let for_whom: Vec<Option<&str>> = match grant.scope {
                rbac::Scope::Member => members.iter().copied().map(Some).collect(),
                _ => vec![None],
            };
            for member in for_whom {
                let name = grant.object_name(NAMESPACE, member);
                let rendered = match grant.scope {
                    rbac::Scope::Cluster => {
                        expected_cluster.insert(name.clone());
                        named(&cluster_roles, &name).rules.clone()
                    }
                    rbac::Scope::Keys => {
                        expected_ns.insert(name.clone());
                        let role = named(&roles, &name);
                        assert_eq!(
                            role.metadata.namespace.as_deref(),
                            Some(causeway_crds::names::key_namespace(NAMESPACE).as_str()),
                            "{scenario}: Role {name} lives in the key namespace"
                        );
                        role.rules.clone()
                    }
                    rbac::Scope::Namespace | rbac::Scope::Member | rbac::Scope::Named(_) => {
                        expected_ns.insert(name.clone());
                        named(&roles, &name).rules.clone()
                    }
                };
                assert_eq!(
                    rules(rendered.as_deref().unwrap_or_default()),
                    granted(grant, member),
                    "{scenario}: the chart's {} differs from crds/src/rbac.rs ({})",
                    grant.describe(NAMESPACE, member),
                    identity.what
                );
            }
        }
    }
    let names = |v: Vec<Option<String>>| v.into_iter().flatten().collect::<BTreeSet<_>>();
    assert_eq!(
        names(
            cluster_roles
                .iter()
                .map(|r| r.metadata.name.clone())
                .collect()
        ),
        expected_cluster,
        "{scenario}: ClusterRoles beyond the contract"
    );
    assert_eq!(
        names(roles.iter().map(|r| r.metadata.name.clone()).collect()),
        expected_ns,
        "{scenario}: Roles beyond the contract"
    );
}

/// RBAC in every scenario: no wildcard anywhere, no Secret access cluster-wide, every
/// binding names a role and ServiceAccounts of this release, every pod's ServiceAccount
/// exists.
fn check_rbac(scenario: &str, objects: &[Object]) {
    let cluster_roles = pick!(objects, ClusterRole);
    let roles = pick!(objects, Role);
    let all_rules = cluster_roles
        .iter()
        .flat_map(|r| r.rules.iter().flatten())
        .chain(roles.iter().flat_map(|r| r.rules.iter().flatten()));
    for rule in all_rules {
        let words = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        for w in words {
            assert!(
                !w.contains('*'),
                "{scenario}: wildcard {w:?} in an RBAC rule {rule:?}"
            );
        }
        assert!(
            rule.non_resource_urls.is_none(),
            "{scenario}: nonResourceURLs in {rule:?}"
        );
    }
    for cr in &cluster_roles {
        for rule in cr.rules.iter().flatten() {
            assert!(
                !rule
                    .resources
                    .iter()
                    .flatten()
                    .any(|r| r.starts_with("secrets")),
                "{scenario}: ClusterRole {:?} grants Secrets cluster-wide",
                cr.metadata.name
            );
        }
    }
    for r in &roles {
        let ns = r
            .metadata
            .namespace
            .as_deref()
            .expect("Roles carry a namespace");
        let touches_secrets = r
            .rules
            .iter()
            .flatten()
            .any(|rule| rule.resources.iter().flatten().any(|r| r == "secrets"));
        if touches_secrets {
            assert_eq!(
                ns,
                causeway_crds::names::key_namespace(NAMESPACE),
                "{scenario}: Secret access outside the gateways' key namespace (the release namespace holds the broker kubeconfig)"
            );
        }
    }
    let accounts: BTreeSet<(String, String)> = pick!(objects, ServiceAccount)
        .iter()
        .map(|a| {
            (
                a.metadata.namespace.clone().expect("namespaced"),
                a.metadata.name.clone().expect("named"),
            )
        })
        .collect();
    let check_subjects =
        |what: &str, subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            let subjects = subjects
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: no subjects"));
            for s in subjects {
                assert_eq!(s.kind, "ServiceAccount", "{what}: binds a {}", s.kind);
                let key = (s.namespace.clone().unwrap_or_default(), s.name.clone());
                assert!(
                    accounts.contains(&key),
                    "{what}: binds ServiceAccount {key:?}, which the chart does not create"
                );
            }
        };
    for b in pick!(objects, ClusterRoleBinding) {
        let what = format!("{scenario}: ClusterRoleBinding {:?}", b.metadata.name);
        assert_eq!(b.role_ref.kind, "ClusterRole", "{what}");
        named(&cluster_roles, &b.role_ref.name);
        check_subjects(&what, &b.subjects);
    }
    for b in pick!(objects, RoleBinding) {
        let what = format!("{scenario}: RoleBinding {:?}", b.metadata.name);
        assert_eq!(b.role_ref.kind, "Role", "{what}: binds a ClusterRole");
        let role = named(&roles, &b.role_ref.name);
        assert_eq!(
            role.metadata.namespace, b.metadata.namespace,
            "{what}: Role in another namespace"
        );
        check_subjects(&what, &b.subjects);
    }
    let pods = pick!(objects, Deployment)
        .iter()
        .map(|d| d.spec.as_ref().expect("spec").template.clone())
        .chain(
            pick!(objects, DaemonSet)
                .iter()
                .map(|d| d.spec.as_ref().expect("spec").template.clone()),
        )
        .collect::<Vec<_>>();
    for t in &pods {
        let sa = pod_spec(t)
            .service_account_name
            .clone()
            .expect("pods name their ServiceAccount");
        assert!(
            accounts.contains(&(NAMESPACE.to_owned(), sa.clone())),
            "{scenario}: pod uses ServiceAccount {sa}, not created"
        );
        assert_ne!(
            pod_spec(t).automount_service_account_token,
            Some(false),
            "{scenario}: pods need their token"
        );
    }
}

/// Checks common to every scenario with member parts.
fn check_member(scenario: &str, objects: &[Object]) {
    check_rbac(scenario, objects);
    for o in objects {
        let (ns, what) = match o {
            Object::Namespace(_)
            | Object::ClusterRole(_)
            | Object::ClusterRoleBinding(_)
            | Object::Policy(_)
            | Object::PolicyBinding(_) => continue,
            Object::ServiceAccount(x) => (&x.metadata.namespace, "ServiceAccount"),
            Object::Secret(x) => (&x.metadata.namespace, "Secret"),
            Object::Service(x) => (&x.metadata.namespace, "Service"),
            Object::Deployment(x) => (&x.metadata.namespace, "Deployment"),
            Object::DaemonSet(x) => (&x.metadata.namespace, "DaemonSet"),
            Object::Pdb(x) => (&x.metadata.namespace, "PodDisruptionBudget"),
            Object::Role(x) => (&x.metadata.namespace, "Role"),
            Object::RoleBinding(x) => (&x.metadata.namespace, "RoleBinding"),
        };
        assert!(ns.is_some(), "{scenario}: {what} without a namespace");
    }
}

#[test]
fn lint_reports_nothing_for_every_scenario() {
    let r = rendered();
    assert!(
        r.helm.starts_with("0."),
        "helm-python-sdk version {}",
        r.helm
    );
    assert!(
        r.scenarios.len() >= 5,
        "default + at least 4 overrides, got {:?}",
        r.scenarios.keys()
    );
    for (name, s) in &r.scenarios {
        assert!(
            s.lint.errors.is_empty(),
            "{name}: helm lint errors {:?}",
            s.lint.errors
        );
        let serious: Vec<&LintMessage> =
            s.lint.messages.iter().filter(|m| m.severity >= 2).collect();
        assert!(
            serious.is_empty(),
            "{name}: helm lint (strict) warnings or errors: {serious:?}"
        );
        for m in &s.lint.messages {
            eprintln!("{name}: lint info {}: {}", m.path, m.error);
        }
    }
}

#[test]
fn crds_are_the_generated_ones() {
    let generated_dir = workspace().join("crds/yaml");
    let mut generated = BTreeMap::new();
    for entry in std::fs::read_dir(&generated_dir).expect("crds/yaml") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .expect("file")
                .to_string_lossy()
                .into_owned();
            generated.insert(name, std::fs::read_to_string(&path).expect("readable"));
        }
    }
    assert_eq!(generated.len(), 4, "crds/yaml holds the four CRDs");
    let chart: BTreeMap<String, String> = rendered()
        .crds
        .iter()
        .map(|f| {
            (
                f.name.trim_start_matches("crds/").to_owned(),
                f.data.clone(),
            )
        })
        .collect();
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "deploy/helm/causeway/crds must hold exactly crds/yaml's files; copy them: cp crds/yaml/*.yaml deploy/helm/causeway/crds/"
    );
    for (name, text) in &generated {
        assert!(
            chart[name] == *text,
            "deploy/helm/causeway/crds/{name} differs from crds/yaml/{name}; copy it again: cp crds/yaml/*.yaml deploy/helm/causeway/crds/"
        );
        let doc: Value = serde_yaml::from_str(text).expect("CRD YAML");
        let crd: CustomResourceDefinition = typed(&doc, name);
        assert!(crd.spec.group == "causeway.dev" || crd.spec.group == "multicluster.x-k8s.io");
    }
}

#[test]
fn gateway_daemonset_is_host_network_with_net_admin_only() {
    for scenario in ["default", "production", "nat", "broker-and-member"] {
        let objects = parsed(scenario);
        let ds = pick!(objects, DaemonSet);
        let gw = named(&ds, "causeway-gateway");
        let spec = gw.spec.as_ref().expect("spec");
        let pod = pod_spec(&spec.template);
        let what = format!("{scenario}: gateway DaemonSet");
        selects(&spec.selector, &template_labels(&spec.template), &what);
        assert_eq!(pod.host_network, Some(true), "{what}: hostNetwork");
        assert_eq!(
            pod.dns_policy.as_deref(),
            Some("ClusterFirstWithHostNet"),
            "{what}: dnsPolicy"
        );
        assert_eq!(
            pod.node_selector
                .as_ref()
                .and_then(|s| s.get(GATEWAY_LABEL))
                .map(String::as_str),
            Some("true"),
            "{what}: nodeSelector {GATEWAY_LABEL}=true"
        );
        let c = &pod.containers[0];
        check_container(c, &datapath_capabilities(), &what);
        check_env_known(c, &gateway_env(), &what);
        assert_eq!(
            c.command.as_deref(),
            Some(&["causeway-gateway".to_owned(), "kubernetes".to_owned()][..])
        );
        assert_eq!(env_field(c, "NODE_NAME"), "spec.nodeName");
        assert_eq!(env_field(c, "POD_NAMESPACE"), "metadata.namespace");
        assert_eq!(env_value(c, "CAUSEWAY_ROLE"), "gateway");
        assert!(!env_value(c, "CAUSEWAY_CLUSTER_ID").is_empty());
        // `kubectl causeway verify` finds the active gateway's pod by this label and its
        // agent by this port name (the plugin's own constants, not retyped here).
        assert_eq!(
            template_labels(&spec.template)
                .get(verify::COMPONENT_LABEL)
                .map(String::as_str),
            Some(verify::GATEWAY_COMPONENT),
            "{what}: verify selects gateway pods by {}={}",
            verify::COMPONENT_LABEL,
            verify::GATEWAY_COMPONENT
        );
        assert!(
            c.ports
                .iter()
                .flatten()
                .any(|p| p.name.as_deref() == Some(verify::AGENT_PORT_NAME)),
            "{what}: verify reaches the agent through the port named {}",
            verify::AGENT_PORT_NAME
        );
        let listen: std::net::SocketAddr = env_value(c, "CAUSEWAY_LISTEN")
            .parse()
            .expect("CAUSEWAY_LISTEN is ip:port");
        assert_eq!(listen.port(), 51820);
        let public = env_value(c, "CAUSEWAY_PUBLIC_ENDPOINT");
        if scenario == "nat" {
            assert_eq!(public, "203.0.113.10:51820");
        } else {
            assert_eq!(
                public, "$(HOST_IP):51820",
                "{what}: public endpoint from the host IP"
            );
            // $(VAR) expands only from variables defined earlier in the list.
            let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            let host = names.iter().position(|n| *n == "HOST_IP").expect("HOST_IP");
            let pub_at = names
                .iter()
                .position(|n| *n == "CAUSEWAY_PUBLIC_ENDPOINT")
                .expect("set");
            assert!(
                host < pub_at,
                "{what}: HOST_IP must come before CAUSEWAY_PUBLIC_ENDPOINT"
            );
            assert_eq!(env_field(c, "HOST_IP"), "status.hostIP");
        }
        let private = env_field(c, "CAUSEWAY_PRIVATE_IPS");
        let want = if scenario == "production" {
            "status.hostIPs"
        } else {
            "status.hostIP"
        };
        assert_eq!(private, want, "{what}: private IPs");
        let want_ports: BTreeSet<(String, i32, String)> = [
            ("wireguard", 51820, "UDP"),
            ("health-probe", 51821, "UDP"),
            ("liveness", 51822, "UDP"),
            ("metrics", 9469, "TCP"),
        ]
        .iter()
        .map(|(n, p, proto)| (n.to_string(), *p, proto.to_string()))
        .collect();
        assert_eq!(ports(c), want_ports, "{what}: ports");
        assert_eq!(env_value(c, "CAUSEWAY_METRICS_ADDR"), "0.0.0.0:9469");
        healthz_probe(c, "metrics", &what);
        // /dev/net/tun from the host, as a character device, and nothing else from it.
        let volumes = pod.volumes.as_ref().expect("volumes");
        assert_eq!(
            volumes.len(),
            1,
            "{what}: only /dev/net/tun is mounted from the host"
        );
        let tun = volumes[0].host_path.as_ref().expect("hostPath");
        assert_eq!(tun.path, "/dev/net/tun");
        assert_eq!(tun.type_.as_deref(), Some("CharDevice"));
        let mount = &c.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            (volumes[0].name.as_str(), "/dev/net/tun")
        );
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        if scenario == "nat" {
            assert!(
                !annotations.contains_key("prometheus.io/scrape"),
                "{what}: metrics.annotations=false"
            );
        } else {
            assert_eq!(
                annotations.get("prometheus.io/scrape").map(String::as_str),
                Some("true")
            );
            assert_eq!(
                annotations.get("prometheus.io/port").map(String::as_str),
                Some("9469")
            );
        }
        if scenario == "production" {
            assert_eq!(listen.ip().to_string(), "::");
            assert_eq!(env_value(c, "CAUSEWAY_MTU"), "1380");
            assert_eq!(env_value(c, "CAUSEWAY_PERSISTENT_KEEPALIVE"), "25");
            assert_eq!(
                c.image.as_deref(),
                Some("registry.example.com/causeway:0.1.0")
            );
            assert_eq!(pod.image_pull_secrets.as_ref().map(Vec::len), Some(1));
        }
    }
}

#[test]
fn route_agents_run_on_every_other_node() {
    for scenario in ["default", "production", "nat"] {
        let objects = parsed(scenario);
        let ds = pick!(objects, DaemonSet);
        let ra = named(&ds, "causeway-route-agent");
        let spec = ra.spec.as_ref().expect("spec");
        let pod = pod_spec(&spec.template);
        let what = format!("{scenario}: route-agent DaemonSet");
        selects(&spec.selector, &template_labels(&spec.template), &what);
        // The two DaemonSets must not select each other's pods.
        let gw = named(&ds, "causeway-gateway").spec.as_ref().expect("spec");
        assert_ne!(
            template_labels(&gw.template),
            template_labels(&spec.template)
        );
        assert_ne!(spec.selector, gw.selector);
        assert_eq!(pod.host_network, Some(true), "{what}: hostNetwork");
        assert!(pod.node_selector.is_none(), "{what}: nodeSelector");
        let terms = &pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required node affinity")
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        let expr = &terms[0].match_expressions.as_ref().expect("expressions")[0];
        // NotIn also matches nodes without the label: exactly the complement of the gateway's nodeSelector.
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str()),
            (GATEWAY_LABEL, "NotIn")
        );
        assert_eq!(expr.values.as_deref(), Some(&["true".to_owned()][..]));
        let c = &pod.containers[0];
        check_container(c, &datapath_capabilities(), &what);
        check_env_known(c, &gateway_env(), &what);
        assert_eq!(env_value(c, "CAUSEWAY_ROLE"), "route-agent");
        assert_ne!(
            template_labels(&spec.template)
                .get(verify::COMPONENT_LABEL)
                .map(String::as_str),
            Some(verify::GATEWAY_COMPONENT),
            "{what}: verify must not take a route agent's pod for a gateway's"
        );
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("causeway-route-agent"),
            "{what}: route agents do not share the gateways' account (and its key Secrets)"
        );
        assert_eq!(env_field(c, "NODE_NAME"), "spec.nodeName");
        assert!(
            env(c, "CAUSEWAY_LISTEN").is_none(),
            "{what}: route agents do not listen"
        );
        assert!(pod.volumes.is_none(), "{what}: no TUN, no host paths");
        healthz_probe(c, "metrics", &what);
    }
}

#[test]
fn controller_deployment_dns_service_and_pdb() {
    for scenario in ["default", "production", "nat", "broker-and-member"] {
        let objects = parsed(scenario);
        let what = format!("{scenario}: controller");
        let deploys = pick!(objects, Deployment);
        assert_eq!(deploys.len(), 1);
        let d = named(&deploys, "causeway-controller");
        let spec = d.spec.as_ref().expect("spec");
        let labels = template_labels(&spec.template);
        selects(&spec.selector, &labels, &what);
        let pod = pod_spec(&spec.template);
        let c = &pod.containers[0];
        check_container(c, &[], &what);
        check_env_known(c, &controller_env(), &what);
        let psc = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true), "{what}: runs as non-root");
        // The Kubernetes-mode tests run the controller's DNS where the chart does: a
        // non-root process cannot bind 53, so the harness must not either.
        if let Some(dns) = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("dns-udp"))
        {
            assert_eq!(
                dns.container_port,
                i32::from(CONTROLLER_DNS_PORT),
                "{what}: the DNS port the harness runs the controller with"
            );
        }
        assert_eq!(env_field(c, "CAUSEWAY_NAMESPACE"), "metadata.namespace");
        assert_eq!(env_field(c, "POD_NAME"), "metadata.name");
        assert_eq!(env_value(c, "CAUSEWAY_BROKER_NAMESPACE"), "causeway-broker");
        assert!(!env_value(c, "CAUSEWAY_SERVICE_CIDRS").is_empty());
        for cidr in env_value(c, "CAUSEWAY_SERVICE_CIDRS").split(',') {
            cidr.parse::<ipnet::IpNet>()
                .unwrap_or_else(|e| panic!("{what}: service CIDR {cidr}: {e}"));
        }
        // The broker kubeconfig comes from a Secret, mounted where the env says.
        let kubeconfig = env_value(c, "CAUSEWAY_BROKER_KUBECONFIG");
        let vol = &pod.volumes.as_ref().expect("volumes")[0];
        let secret = vol.secret.as_ref().expect("a Secret volume");
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == vol.name)
            .expect("mounted");
        let item = &secret.items.as_ref().expect("items")[0];
        assert_eq!(
            format!("{}/{}", mount.mount_path, item.path),
            kubeconfig,
            "{what}: kubeconfig path"
        );
        assert_eq!(mount.read_only, Some(true));
        let args = c.args.clone().unwrap_or_default();
        assert!(
            args.iter().any(|a| a.starts_with("--lease-seconds=")),
            "{what}: {args:?}"
        );
        let replicas = spec.replicas.expect("replicas");
        let pdbs = pick!(objects, Pdb);
        let services = pick!(objects, Service);
        match scenario {
            "nat" => {
                assert_eq!(replicas, 1);
                assert!(
                    pdbs.is_empty(),
                    "{what}: a PDB over one replica blocks every drain"
                );
                assert!(env(c, "CAUSEWAY_DNS_LISTEN").is_none());
                assert!(
                    services.is_empty(),
                    "{what}: no DNS Service when DNS is off"
                );
                assert_eq!(
                    ports(c),
                    BTreeSet::from([("health".to_owned(), 8081, "TCP".to_owned())]),
                    "{what}: only the health port without DNS"
                );
                controller_probes(c, &what);
                continue;
            }
            "production" => {
                assert_eq!(replicas, 3);
                assert_eq!(
                    env_value(c, "CAUSEWAY_POD_CIDRS"),
                    "10.1.0.0/16,fd00:1::/48"
                );
            }
            _ => assert_eq!(replicas, 2, "{what}: two replicas by default"),
        }
        let pdb = named(&pdbs, "causeway-controller");
        let pdb_spec = pdb.spec.as_ref().expect("spec");
        selects(
            pdb_spec.selector.as_ref().expect("selector"),
            &labels,
            &format!("{what} PDB"),
        );
        let min = match pdb_spec.min_available.as_ref().expect("minAvailable") {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n,
            other => panic!("{what}: minAvailable {other:?}"),
        };
        assert!(
            min >= 1 && min < replicas,
            "{what}: minAvailable {min} of {replicas} replicas"
        );
        assert_eq!(env_value(c, "CAUSEWAY_DNS_LISTEN"), "0.0.0.0:5353");
        let dns = named(&services, "causeway-dns");
        let svc = dns.spec.as_ref().expect("spec");
        let selector = svc.selector.clone().expect("selector");
        assert!(!selector.is_empty());
        for (k, v) in &selector {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{what}: DNS Service selector {k}={v} misses the controller pods"
            );
        }
        let container_ports = ports(c);
        let mut protocols = BTreeSet::new();
        for p in svc.ports.iter().flatten() {
            assert_eq!(p.port, 53, "{what}: DNS on port 53");
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let target = match p.target_port.as_ref().expect("targetPort") {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
                other => panic!("{what}: targetPort {other:?}; name the container port"),
            };
            assert!(
                container_ports.contains(&(target.clone(), 5353, proto.clone())),
                "{what}: targetPort {target}/{proto} is not a container port 5353 ({container_ports:?})"
            );
            protocols.insert(proto);
        }
        assert_eq!(
            protocols,
            BTreeSet::from(["TCP".to_owned(), "UDP".to_owned()])
        );
        controller_probes(c, &what);
        if scenario == "production" {
            assert_eq!(svc.cluster_ip.as_deref(), Some("10.101.0.53"));
        }
    }
}

#[test]
fn rbac_is_least_privilege() {
    let objects = parsed("default");
    check_member("default", &objects);
    check_grants(
        "default",
        &objects,
        &[
            &rbac::CONTROLLER,
            &rbac::GATEWAY,
            &rbac::ROUTE_AGENT,
            &rbac::VIEWER,
        ],
        &[],
    );
    let roles = pick!(objects, Role);
    for name in [
        "causeway-controller",
        "causeway-gateway",
        "causeway-route-agent",
        "causeway-viewer",
        "causeway-operator",
    ] {
        assert_eq!(
            named(&roles, name).metadata.namespace.as_deref(),
            Some(NAMESPACE)
        );
    }
    let bound: Vec<String> = pick!(objects, ClusterRoleBinding)
        .iter()
        .map(|b| b.role_ref.name.clone())
        .chain(
            pick!(objects, RoleBinding)
                .iter()
                .map(|b| b.role_ref.name.clone()),
        )
        .collect();
    assert!(
        bound
            .iter()
            .all(|r| !r.starts_with("causeway-viewer") && r != "causeway-operator"),
        "the chart binds the viewer roles to nobody: {bound:?}"
    );
    let secrets = pick!(objects, Secret);
    assert!(
        secrets.is_empty(),
        "the default install holds no credentials"
    );
    // Each gateway writes only its own node's Gateway and key Secret: an admission policy
    // bound to deny (kube_e2e::a_compromised_candidate_writes_only_its_own_gateway_and_key
    // makes a candidate try, on a real API server).
    let policy_name = format!("causeway-gateway-own-node-{NAMESPACE}");
    let policies = pick!(objects, Policy);
    let policy = named(&policies, &policy_name);
    let bound = pick!(objects, PolicyBinding);
    let spec = named(&bound, &policy_name)
        .spec
        .clone()
        .expect("binding spec");
    assert_eq!(spec.policy_name, policy.metadata.name);
    assert_eq!(
        spec.validation_actions.as_deref(),
        Some(&["Deny".to_owned()][..])
    );
}

#[test]
fn viewer_roles_can_be_left_out() {
    let objects = parsed("nat");
    let names: Vec<String> = pick!(objects, ClusterRole)
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .chain(
            pick!(objects, Role)
                .iter()
                .filter_map(|r| r.metadata.name.clone()),
        )
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("causeway-viewer")),
        "viewer.create=false renders no viewer role: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "causeway-controller"),
        "the member parts are still there: {names:?}"
    );
}

#[test]
fn every_override_passes_the_common_checks() {
    for scenario in rendered().scenarios.keys() {
        let objects = parsed(scenario);
        check_member(scenario, &objects);
    }
}

#[test]
fn broker_mode_prepares_namespace_and_per_cluster_credentials() {
    let objects = parsed("broker");
    check_rbac("broker", &objects);
    assert!(
        pick!(objects, Deployment).is_empty(),
        "broker only: no controller"
    );
    assert!(
        pick!(objects, DaemonSet).is_empty(),
        "broker only: no gateways"
    );
    let namespaces = pick!(objects, Namespace);
    let ns = named(&namespaces, "causeway-broker");
    assert_eq!(
        ns.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("helm.sh/resource-policy"))
            .map(String::as_str),
        Some("keep"),
        "uninstalling must not delete the clusterset's published objects"
    );
    let roles = pick!(objects, Role);
    assert_eq!(roles.len(), 4, "one shared Role and one per member");
    let member = named(&roles, "causeway-member");
    assert_eq!(
        member.metadata.namespace.as_deref(),
        Some("causeway-broker")
    );
    check_grants(
        "broker",
        &objects,
        &[&rbac::MEMBER],
        &["site-a", "site-b", "site-c"],
    );
    assert!(
        pick!(objects, ClusterRole).is_empty(),
        "members get nothing cluster-wide at the broker"
    );
    let accounts = pick!(objects, ServiceAccount);
    let secrets = pick!(objects, Secret);
    let bindings = pick!(objects, RoleBinding);
    for cluster in ["site-a", "site-b", "site-c"] {
        let sa = named(&accounts, &format!("causeway-member-{cluster}"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("causeway-broker"));
        let token = named(&secrets, &format!("causeway-member-{cluster}-token"));
        assert_eq!(
            token.type_.as_deref(),
            Some("kubernetes.io/service-account-token")
        );
        assert_eq!(
            token
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name")),
            sa.metadata.name.as_ref()
        );
        let b = named(&bindings, &format!("causeway-member-{cluster}"));
        assert_eq!(b.role_ref.name, "causeway-member");
        assert_eq!(
            b.subjects.as_ref().map(|s| s[0].name.clone()),
            sa.metadata.name.clone()
        );
        let own = named(&bindings, &format!("causeway-member-{cluster}-own"));
        assert_eq!(own.role_ref.name, format!("causeway-member-{cluster}"));
        assert_eq!(
            own.subjects.as_ref().map(|s| s[0].name.clone()),
            sa.metadata.name.clone()
        );
    }
    assert_eq!(accounts.len(), 3);
    // Who owns what at the broker is enforced by an admission policy bound to deny;
    // tests/tests/trust.rs makes a member try, on a real API server.
    let policies = pick!(objects, Policy);
    let policy = named(&policies, "causeway-member-ownership-causeway-broker");
    let bound = pick!(objects, PolicyBinding);
    let binding = named(&bound, "causeway-member-ownership-causeway-broker");
    let spec = binding.spec.as_ref().expect("binding spec");
    assert_eq!(spec.policy_name, policy.metadata.name);
    assert_eq!(
        spec.validation_actions.as_deref(),
        Some(&["Deny".to_owned()][..])
    );

    // Broker and member in one release: both sets, the member's Secret access still
    // only in Causeway's own namespace, and the inline kubeconfig becomes its Secret.
    let both = parsed("broker-and-member");
    check_member("broker-and-member", &both);
    let secrets = pick!(both, Secret);
    let kubeconfig = named(&secrets, "causeway-broker-kubeconfig");
    assert_eq!(kubeconfig.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert!(kubeconfig
        .string_data
        .as_ref()
        .is_some_and(|d| d.contains_key("kubeconfig")));
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let bad = &rendered().bad;
    assert!(
        bad.len() >= 5,
        "deploy/helm/tests/bad holds the refused values files"
    );
    for (name, refusal) in bad {
        let error = refusal
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("bad/{name}.yaml was accepted; the schema must refuse it"));
        assert!(
            error.contains(&refusal.expect),
            "bad/{name}.yaml: Helm's refusal does not name {:?}:\n{error}",
            refusal.expect
        );
        assert!(
            error.contains("schema"),
            "bad/{name}.yaml: refused by the template, not the schema:\n{error}"
        );
    }
}
