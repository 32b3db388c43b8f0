//! Runs a process under test with the powers the chart's pods get, not full
//! root: only the capabilities the DaemonSet adds, no way to gain more, and a
//! read-only root filesystem.

use std::process::Command;

use serde_json::Value;

use super::netns::run_through;
use super::HarnessError;

/// The capabilities the chart's gateway and route-agent containers add after
/// dropping ALL, lower-case as `setpriv` names them. `tests/tests/helm.rs`
/// checks this against the rendered chart, so the file-configured worlds,
/// which render no chart, still run as the chart would run them.
pub const CHART_DATAPATH_CAPABILITIES: &[&str] = &["net_admin"];

/// Mount points left writable in a confined process, as a container keeps
/// them: its own `/proc` (with `/proc/sys` read-only, as runtimes mount it for
/// unprivileged pods) and `/dev` with the device nodes it was given.
const WRITABLE_MOUNTS: &str = "/proc|/proc/*|/dev|/dev/*";

/// In a private mount namespace (so nothing outside changes): every other
/// mount remounted read-only, `/proc/sys` made read-only, then the program.
const READ_ONLY_ROOT: &str = r#"set -e
for mp in $(findmnt -rno TARGET | sort -u); do
    case "$mp" in WRITABLE) continue ;; esac
    # Tests running beside this one delete their namespaces' mounts at any time: one
    # gone since the list was read is no longer there to write; one still there must
    # become read-only.
    mount -o remount,bind,ro "$mp" || ! mountpoint -q "$mp"
done
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec "$@""#;

/// What a container's `securityContext` allows, as the harness enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The whole bounding set, lower-case (`net_admin`).
    pub capabilities: Vec<String>,
    /// Whether every file system but `/proc` and `/dev` is read-only.
    pub read_only_root: bool,
    /// The user and group it runs as (`runAsUser`/`runAsGroup`), if not root's.
    pub user: Option<(u32, u32)>,
}

impl Confinement {
    /// The chart's gateway and route-agent containers, for worlds without a rendered chart.
    pub fn chart_datapath() -> Confinement {
        Confinement {
            capabilities: CHART_DATAPATH_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            read_only_root: true,
            user: None,
        }
    }

    /// What the first container of a rendered pod template allows; an error if it
    /// does not drop ALL capabilities, since then there is no chart contract to hold.
    pub fn from_pod_template(template: &Value) -> Result<Confinement, HarnessError> {
        let pod = &template["spec"]["securityContext"];
        let security = &template["spec"]["containers"][0]["securityContext"];
        // A container's own setting wins over its pod's, as the kubelet applies them.
        let id = |key: &str| {
            security[key]
                .as_u64()
                .or_else(|| pod[key].as_u64())
                .and_then(|id| u32::try_from(id).ok())
        };
        let user = match id("runAsUser") {
            None | Some(0) => None,
            Some(uid) => Some((uid, id("runAsGroup").unwrap_or(uid))),
        };
        let capabilities = &security["capabilities"];
        let drops_all = capabilities["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all {
            return Err(HarnessError::ControlPlane(format!(
                "the chart's container does not drop ALL capabilities: {capabilities}"
            )));
        }
        Ok(Confinement {
            capabilities: capabilities["add"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect(),
            read_only_root: security["readOnlyRootFilesystem"] == Value::Bool(true),
            user,
        })
    }

    /// `cmd` run as confined: `setpriv` makes `capabilities` the whole bounding set
    /// (a root process then holds exactly those), none inheritable, with
    /// `no_new_privs` set as `allowPrivilegeEscalation: false` does, as `user` if
    /// set; with `read_only_root`, inside a private mount namespace whose mounts
    /// are read-only. Files it must read have to be readable by `user`.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let keep: String = self.capabilities.iter().map(|c| format!(",+{c}")).collect();
        let mut wrapped = if self.read_only_root {
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(READ_ONLY_ROOT.replace("WRITABLE", WRITABLE_MOUNTS))
                .args(["confine", "setpriv"]);
            unshare
        } else {
            Command::new("setpriv")
        };
        if let Some((uid, gid)) = self.user {
            wrapped
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
        }
        wrapped
            .arg(format!("--bounding-set=-all{keep}"))
            .arg("--inh-caps=-all")
            .arg("--no-new-privs")
            .arg("--");
        run_through(wrapped, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_template_gives_its_added_capabilities_and_read_only_root() {
        let template = json!({"spec": {"containers": [{"securityContext": {
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}
        }}]}});
        assert_eq!(
            Confinement::from_pod_template(&template).unwrap(),
            Confinement::chart_datapath()
        );
        let writable = json!({"spec": {"containers": [{"securityContext": {
            "capabilities": {"drop": ["ALL"]}
        }}]}});
        assert_eq!(
            Confinement::from_pod_template(&writable).unwrap(),
            Confinement {
                capabilities: vec![],
                read_only_root: false,
                user: None,
            }
        );
        let controller = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65533},
            "containers": [{"securityContext": {
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            }}]
        }});
        assert_eq!(
            Confinement::from_pod_template(&controller).unwrap().user,
            Some((65532, 65533))
        );
        let keeps_all = json!({"spec": {"containers": [{"securityContext": {
            "capabilities": {"add": ["NET_ADMIN"]}
        }}]}});
        assert!(Confinement::from_pod_template(&keeps_all).is_err());
    }
}
