//! Installing Causeway into a real cluster the way a user does: the chart rendered by real
//! Helm (helm-python-sdk, as `tests/tests/helm.rs` uses it), its CRDs and then its objects
//! applied with `kubectl apply --server-side` in Helm's install order, and each component's
//! credentials taken from the chart's ServiceAccounts (TokenRequest, or the token Secrets the
//! broker mode creates), so every process runs with exactly the rights the chart grants.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::apiserver::{Credentials, KubeApiServer};
use super::workspace_root;
use crate::harness::{io_context, HarnessError};

/// The namespace the chart is installed in (its release namespace).
pub const RELEASE_NAMESPACE: &str = "causeway";
/// The controller's ServiceAccount in the chart.
pub const CONTROLLER_ACCOUNT: &str = "causeway-controller";
/// The gateway candidates' and route agents' ServiceAccount in the chart.
pub const GATEWAY_ACCOUNT: &str = "causeway-gateway";
/// The route agents' ServiceAccount (the chart's).
pub const ROUTE_AGENT_ACCOUNT: &str = "causeway-route-agent";
/// The group the harness binds the chart's viewer roles to, as its README tells operators.
pub const VIEWER_GROUP: &str = "dba-oncall";
/// The person in [`VIEWER_GROUP`] who runs `kubectl causeway`.
pub const VIEWER_USER: &str = "oncall@example.com";
/// How long ServiceAccount tokens minted for a test live (TokenRequest's `--duration`).
const TOKEN_LIFETIME: &str = "24h";
/// How long CRDs may take to be served, and token Secrets to be filled.
const SETTLE: Duration = Duration::from_secs(30);

/// The Python that has helm-python-sdk: `$CAUSEWAY_HELM_PYTHON`, else the venv
/// `scripts/test` makes.
pub fn helm_python() -> PathBuf {
    std::env::var_os("CAUSEWAY_HELM_PYTHON").map_or_else(
        || PathBuf::from("/opt/causeway-helm/bin/python"),
        PathBuf::from,
    )
}

/// The chart's objects for `values`, rendered by real Helm for an install into `namespace`:
/// its CRDs first, then every template's objects in Helm's install order.
pub fn render(values: &Value, namespace: &str) -> Result<Vec<Value>, HarnessError> {
    let script = workspace_root().join("deploy/helm/tests/template.py");
    let python = helm_python();
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_context(format!(
            "run {} (helm-python-sdk; scripts/test installs it, or set CAUSEWAY_HELM_PYTHON)",
            python.display()
        )))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(values.to_string().as_bytes())
            .map_err(io_context("give the chart's values to template.py"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_context("run template.py"))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("{} {} {namespace}", python.display(), script.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let rendered: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| HarnessError::ControlPlane(format!("template.py printed no JSON: {e}")))?;
    let mut objects = Vec::new();
    for crd in rendered["crds"].as_array().into_iter().flatten() {
        objects.extend(documents(crd.as_str().unwrap_or_default())?);
    }
    let mut templated = Vec::new();
    if let Some(manifests) = rendered["manifests"].as_object() {
        for (template, text) in manifests {
            if template.ends_with(".yaml") {
                templated.extend(documents(text.as_str().unwrap_or_default())?);
            }
        }
    }
    // A stable sort: within a kind, the templates' own order.
    templated.sort_by_key(|o| install_order(o["kind"].as_str().unwrap_or_default()));
    objects.extend(templated);
    Ok(objects)
}

/// The objects of a YAML stream (empty documents skipped).
fn documents(text: &str) -> Result<Vec<Value>, HarnessError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| HarnessError::ControlPlane(format!("the chart rendered bad YAML: {e}")))?;
        if value.is_object() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Where Helm puts `kind` when it installs a release (its `InstallOrder`); unknown kinds last.
pub fn install_order(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "PriorityClass",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "SecretList",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "Role",
        "RoleList",
        "RoleBinding",
        "RoleBindingList",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// Applies `objects` to `server` with `kubectl apply --server-side` (field manager `helm`),
/// in the order given.
pub fn apply(server: &KubeApiServer, objects: &[Value]) -> Result<(), HarnessError> {
    if objects.is_empty() {
        return Ok(());
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    server
        .kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--field-manager=helm",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&list.to_string()),
        )
        .map(drop)
}

/// Installs the chart with `values` into `namespace` of `server`, as
/// `helm install --create-namespace` would: the namespace, the CRDs, then every other object
/// (one `kubectl apply`, in that order), and waits until the CRDs are served. Returns what
/// was applied.
pub fn install(
    server: &KubeApiServer,
    values: &Value,
    namespace: &str,
) -> Result<Vec<Value>, HarnessError> {
    let objects = render(values, namespace)?;
    let namespace_object = json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
    });
    let all: Vec<Value> = std::iter::once(namespace_object)
        .chain(objects.iter().cloned())
        .collect();
    apply(server, &all)?;
    let crds: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| {
            format!(
                "customresourcedefinition/{}",
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if !crds.is_empty() {
        let timeout = format!("--timeout={}s", SETTLE.as_secs());
        let mut args = vec!["wait", "--for=condition=Established", timeout.as_str()];
        args.extend(crds.iter().map(String::as_str));
        server.kubectl_ok(&args, None)?;
    }
    Ok(objects)
}

/// A token for ServiceAccount `namespace/account` (TokenRequest), bound to nothing.
pub fn account_token(
    server: &KubeApiServer,
    namespace: &str,
    account: &str,
) -> Result<Credentials, HarnessError> {
    mint_token(server, namespace, account, &[])
}

/// A token for ServiceAccount `namespace/account` for `audience` instead of the API
/// server's own.
pub fn audience_token(
    server: &KubeApiServer,
    namespace: &str,
    account: &str,
    audience: &str,
) -> Result<Credentials, HarnessError> {
    mint_token(server, namespace, account, &["--audience", audience])
}

/// A token for ServiceAccount `namespace/account` bound to Pod `namespace/pod`, as the
/// kubelet gets one for a pod: the API server then knows the pod's node
/// (`authentication.kubernetes.io/node-name`).
pub fn pod_token(
    server: &KubeApiServer,
    namespace: &str,
    account: &str,
    pod: &str,
) -> Result<Credentials, HarnessError> {
    mint_token(
        server,
        namespace,
        account,
        &["--bound-object-kind", "Pod", "--bound-object-name", pod],
    )
}

fn mint_token(
    server: &KubeApiServer,
    namespace: &str,
    account: &str,
    extra: &[&str],
) -> Result<Credentials, HarnessError> {
    let duration = format!("--duration={TOKEN_LIFETIME}");
    let mut args = vec!["create", "token", account, "-n", namespace, &duration];
    args.extend_from_slice(extra);
    let token = server.kubectl_ok(&args, None)?;
    Ok(Credentials::Token(token.trim().to_string()))
}

/// The token of a `kubernetes.io/service-account-token` Secret, once kube-controller-manager
/// has filled it in.
pub fn secret_token(
    server: &KubeApiServer,
    namespace: &str,
    secret: &str,
) -> Result<Credentials, HarnessError> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = server.kubectl_ok(
            &[
                "get",
                "secret",
                secret,
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.token}",
            ],
            None,
        );
        if let Ok(encoded) = &out {
            if !encoded.trim().is_empty() {
                use base64::Engine as _;
                let token = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| {
                        HarnessError::ControlPlane(format!("Secret {namespace}/{secret}: {e}"))
                    })?;
                return Ok(Credentials::Token(
                    String::from_utf8_lossy(&token).into_owned(),
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(HarnessError::ControlPlane(format!(
                "Secret {namespace}/{secret} got no token within {SETTLE:?} at {} (last: {out:?})",
                server.name()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Binds the chart's viewer roles and Role causeway-operator to [`VIEWER_GROUP`] with the
/// commands its README gives (applied, so binding twice changes nothing), and returns a
/// client certificate for [`VIEWER_USER`] in that group.
pub fn bind_viewer(server: &KubeApiServer, namespace: &str) -> Result<Credentials, HarnessError> {
    bind_person(server, namespace, VIEWER_USER, VIEWER_GROUP, true)
}

/// Like [`bind_viewer`] for [`READER_USER`] in [`READER_GROUP`], without Role
/// causeway-operator: someone who may look but not ask the gateway agent.
pub fn bind_reader(server: &KubeApiServer, namespace: &str) -> Result<Credentials, HarnessError> {
    bind_person(server, namespace, READER_USER, READER_GROUP, false)
}

/// A group bound to the viewer roles only.
pub const READER_GROUP: &str = "dba-readonly";
/// The person in [`READER_GROUP`].
pub const READER_USER: &str = "reader@example.com";

fn bind_person(
    server: &KubeApiServer,
    namespace: &str,
    user: &str,
    group: &str,
    operator: bool,
) -> Result<Credentials, HarnessError> {
    let clusterrole = format!("--clusterrole=causeway-viewer-{namespace}");
    let group_arg = format!("--group={group}");
    let binding = |role: &str| format!("{group}-{role}");
    let (viewer_binding, operator_binding) =
        (binding("causeway-viewer"), binding("causeway-operator"));
    let mut commands: Vec<Vec<&str>> = vec![
        vec![
            "create",
            "clusterrolebinding",
            &viewer_binding,
            &clusterrole,
            &group_arg,
        ],
        vec![
            "-n",
            namespace,
            "create",
            "rolebinding",
            &viewer_binding,
            "--role=causeway-viewer",
            &group_arg,
        ],
    ];
    if operator {
        commands.push(vec![
            "-n",
            namespace,
            "create",
            "rolebinding",
            &operator_binding,
            "--role=causeway-operator",
            &group_arg,
        ]);
    }
    for command in commands {
        let mut args = command.clone();
        args.extend(["--dry-run=client", "-o", "json"]);
        let object: Value =
            serde_json::from_str(&server.kubectl_ok(&args, None)?).map_err(|e| {
                HarnessError::ControlPlane(format!("kubectl {}: {e}", command.join(" ")))
            })?;
        apply(server, &[object])?;
    }
    Ok(Credentials::Cert(server.pki().client(user, Some(group))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_accounts_come_before_what_uses_them() {
        let order = |k: &str| install_order(k);
        assert!(order("Namespace") < order("ServiceAccount"));
        assert!(order("ServiceAccount") < order("Secret"));
        assert!(order("Secret") < order("RoleBinding"));
        assert!(order("Role") < order("RoleBinding"));
        assert!(order("DaemonSet") < order("Deployment"));
        assert_eq!(order("Gateway"), order("Something"));
    }
}
