//! The API server's audit log, read back as the requests each user made: what the tests
//! count writes with, and what the RBAC check compares with the chart's rules.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The audit policy every test API server runs with: the metadata of every request but
/// the control plane's own (the API server's loopback client and the controller manager),
/// logged once a response starts (watches) or completes.
pub const POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\"]
rules:
- level: None
  users: [\"system:apiserver\", \"system:kube-controller-manager\"]
- level: None
  userGroups: [\"system:serviceaccounts:kube-system\"]
- level: Metadata
";

/// Verbs that change what the server stores.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// One request as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The authenticated user, e.g. `system:serviceaccount:causeway:causeway-gateway`.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The API group, `""` for the core group.
    pub api_group: String,
    /// The resource (plural), e.g. `leases`; empty for non-resource URLs.
    pub resource: String,
    /// The subresource, e.g. `status`, or empty.
    pub subresource: String,
    /// The namespace, or empty for cluster-scoped requests.
    pub namespace: String,
    /// The object's name, or empty for collections.
    pub name: String,
    /// The HTTP status code of the response (0 if the log has none).
    pub code: u16,
    /// The request URI, for messages.
    pub uri: String,
    /// The authorizer's decision (`allow` or `forbid`), empty if the log has none: a 403
    /// with `allow` was refused by admission, not RBAC.
    pub decision: String,
    /// When the server received it (RFC 3339), empty if the log has none.
    pub received: String,
}

impl Request {
    /// Whether the request changes what the server stores.
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        match self.subresource.as_str() {
            "" => self.resource.clone(),
            sub => format!("{}/{sub}", self.resource),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} -> {} (by {})",
            self.verb, self.uri, self.name, self.code, self.user
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    request_received_timestamp: String,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// An audit log file and how far into it a reader has looked.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
}

/// A position in an [`AuditLog`]: requests logged after it are "since" it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mark(u64);

impl AuditLog {
    /// The log the API server writes to `path`.
    pub fn new(path: &Path) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The end of what is logged now.
    pub fn mark(&self) -> Mark {
        Mark(std::fs::metadata(&self.path).map_or(0, |m| m.len()))
    }

    /// Every request logged after `since`, once each (a watch is logged when its response
    /// starts and again when it ends; the first record counts).
    pub fn requests_since(&self, since: Mark) -> std::io::Result<Vec<Request>> {
        self.read_since(since).map(|(requests, _)| requests)
    }

    /// Like [`AuditLog::requests_since`], and the mark after the last complete record read
    /// (a record the server is still writing is left for the next read).
    pub fn read_since(&self, since: Mark) -> std::io::Result<(Vec<Request>, Mark)> {
        let mut text = String::new();
        match std::fs::File::open(&self.path) {
            Ok(mut file) => {
                file.seek(SeekFrom::Start(since.0))?;
                file.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), since)),
            Err(e) => return Err(e),
        }
        let complete = text.rfind('\n').map_or(0, |end| end + 1);
        Ok((parse(&text[..complete]), Mark(since.0 + complete as u64)))
    }
}

/// The requests in audit log text; a line not yet complete (the server is writing it) or
/// not an event is skipped.
pub fn parse(text: &str) -> Vec<Request> {
    let mut seen = BTreeSet::new();
    let mut requests = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        if !matches!(
            event.stage.as_str(),
            "ResponseStarted" | "ResponseComplete" | "Panic"
        ) || !seen.insert(event.audit_id)
        {
            continue;
        }
        let object = event.object_ref.unwrap_or(ObjectRef {
            resource: String::new(),
            namespace: String::new(),
            name: String::new(),
            api_group: String::new(),
            subresource: String::new(),
        });
        requests.push(Request {
            user: event.user.username,
            verb: event.verb,
            api_group: object.api_group,
            resource: object.resource,
            subresource: object.subresource,
            namespace: object.namespace,
            name: object.name,
            code: event.response_status.map_or(0, |s| s.code),
            uri: event.request_uri,
            decision: event
                .annotations
                .get("authorization.k8s.io/decision")
                .cloned()
                .unwrap_or_default(),
            received: event.request_received_timestamp,
        });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_counts_once_and_a_partial_line_not_at_all() {
        let text = concat!(
            r#"{"kind":"Event","level":"Metadata","auditID":"a","stage":"ResponseStarted","requestURI":"/apis/causeway.dev/v1alpha1/namespaces/causeway/clusterendpoints?watch=true","verb":"watch","user":{"username":"system:serviceaccount:causeway:causeway-gateway"},"objectRef":{"resource":"clusterendpoints","namespace":"causeway","apiGroup":"causeway.dev","apiVersion":"v1alpha1"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"kind":"Event","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/apis/causeway.dev/v1alpha1/namespaces/causeway/clusterendpoints?watch=true","verb":"watch","user":{"username":"system:serviceaccount:causeway:causeway-gateway"},"objectRef":{"resource":"clusterendpoints","namespace":"causeway","apiGroup":"causeway.dev","apiVersion":"v1alpha1"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"kind":"Event","level":"Metadata","auditID":"b","stage":"ResponseComplete","requestURI":"/apis/coordination.k8s.io/v1/namespaces/causeway/leases/x","verb":"patch","user":{"username":"u"},"objectRef":{"resource":"leases","namespace":"causeway","name":"x","apiGroup":"coordination.k8s.io"},"responseStatus":{"code":403},"requestReceivedTimestamp":"2026-12-02T10:49:48.084Z","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#,
            "\n",
            r#"{"kind":"Event","level":"Metadata","auditID":"c","stage":"Resp"#,
        );
        let requests = parse(text);
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(requests[0].verb, "watch");
        assert_eq!(requests[0].rbac_resource(), "clusterendpoints");
        assert!(!requests[0].is_write());
        assert_eq!(requests[1].code, 403);
        assert!(requests[1].is_write());
        assert_eq!(requests[1].name, "x");
        assert_eq!(
            requests[1].uri,
            "/apis/coordination.k8s.io/v1/namespaces/causeway/leases/x"
        );
    }
}

/// The requests of Causeway's identities held against the chart's rules
/// ([`causeway_crds::rbac`]), both ways.
#[derive(Debug, Default)]
pub struct RbacReport {
    /// Requests no rule of the requester's roles grants.
    pub ungranted: Vec<Request>,
    /// Requests the server refused (403).
    pub refused: Vec<Request>,
    /// Rules, one verb and resource each, that no request used: `"<role>: <verb> <resource>"`.
    pub unused: Vec<String>,
    /// How many requests were checked, by identity.
    pub checked: std::collections::BTreeMap<&'static str, usize>,
}

/// Who a user is among the chart's identities: the identity, the namespace its Roles live
/// in and, for a member at the broker, the cluster it speaks for.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// The identity.
    pub identity: &'static causeway_crds::rbac::Identity,
    /// Where its Roles live.
    pub role_namespace: &'static str,
    /// The member cluster (from the ServiceAccount's name), at the broker.
    pub member: Option<&'a str>,
}

/// Which of the chart's identities `user` is; `None` for anyone else (the harness, the
/// control plane).
pub fn identity_of(user: &str) -> Option<Principal<'_>> {
    use causeway_crds::rbac::{
        CONTROLLER, GATEWAY, MEMBER, MEMBER_ACCOUNT_PREFIX, ROUTE_AGENT, VIEWER,
    };
    const SA: &str = "system:serviceaccount:";
    let component = |identity, role_namespace| Principal {
        identity,
        role_namespace,
        member: None,
    };
    match user.strip_prefix(SA) {
        Some("causeway:causeway-controller") => Some(component(&CONTROLLER, "causeway")),
        Some("causeway:causeway-gateway") => Some(component(&GATEWAY, "causeway")),
        Some("causeway:causeway-route-agent") => Some(component(&ROUTE_AGENT, "causeway")),
        Some(account) => account
            .strip_prefix("causeway-broker:")
            .and_then(|a| a.strip_prefix(MEMBER_ACCOUNT_PREFIX))
            .map(|member| Principal {
                identity: &MEMBER,
                role_namespace: "causeway-broker",
                member: Some(member),
            }),
        None if user == super::install::VIEWER_USER => Some(component(&VIEWER, "causeway")),
        None => None,
    }
}

/// Checks `requests` (from every API server of a world) against the chart's rules.
pub fn check_rbac(requests: &[Request]) -> RbacReport {
    use causeway_crds::rbac::{ApiRequest, IDENTITIES};
    let mut report = RbacReport::default();
    let mut used: BTreeSet<(&'static str, &'static str, String, String)> = BTreeSet::new();
    for r in requests {
        let Some(who) = identity_of(&r.user) else {
            continue;
        };
        // Discovery and other non-resource URLs: every authenticated user may (the
        // system:discovery and system:basic-user roles), not the chart's business.
        if r.resource.is_empty() {
            continue;
        }
        *report.checked.entry(who.identity.what).or_default() += 1;
        if r.code == 403 {
            report.refused.push(r.clone());
        }
        let request = ApiRequest {
            verb: r.verb.clone(),
            api_group: r.api_group.clone(),
            resource: r.rbac_resource(),
            namespace: (!r.namespace.is_empty()).then(|| r.namespace.clone()),
            name: (!r.name.is_empty()).then(|| r.name.clone()),
        };
        match who
            .identity
            .granting(&request, who.role_namespace, who.member)
        {
            Some(grant) => {
                used.insert((
                    who.identity.what,
                    grant.name,
                    r.verb.clone(),
                    format!("{}|{}", r.api_group, r.rbac_resource()),
                ));
            }
            None => report.ungranted.push(r.clone()),
        }
    }
    for identity in IDENTITIES {
        for grant in identity.grants {
            for rule in grant.rules {
                for resource in rule.resources {
                    for verb in rule.verbs {
                        let key = (
                            identity.what,
                            grant.name,
                            verb.to_string(),
                            format!("{}|{resource}", rule.api_group),
                        );
                        if !used.contains(&key) {
                            report.unused.push(format!(
                                "{} {}: {verb} {resource}{}",
                                grant.kind(),
                                grant.object_name("<namespace>", None),
                                match rule.api_group {
                                    "" => String::new(),
                                    g => format!(".{g}"),
                                }
                            ));
                        }
                    }
                }
            }
        }
    }
    report
}
