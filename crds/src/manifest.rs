//! Multi-document YAML files of ClusterEndpoint manifests (the standalone gateway's endpoints file).
//!
//! Strict on purpose: an unknown field is a typo that would otherwise be silently
//! ignored (`podCIDR` for `podCIDRs` leaves a cluster unreachable), so it is refused.

use crate::cluster_endpoint::ClusterEndpoint;
use crate::validate::{validate_clusterset, ClustersetCheck, ValidationError};
use serde::Deserialize;
use thiserror::Error;

/// Largest endpoints file accepted; far above any real clusterset, small enough to bound work.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Why an endpoints file was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// The file exceeds [`MAX_MANIFEST_BYTES`].
    #[error("the file is {size} bytes, more than the {limit}-byte limit; an endpoints file holds one small ClusterEndpoint per cluster — check that the right file is configured")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A document is not valid YAML, or not the shape of a ClusterEndpoint.
    #[error("document {document}: {message}; fix the YAML so it matches the ClusterEndpoint shape (see crds/yaml/clusterendpoints.yaml)")]
    Syntax {
        /// 1-based document number.
        document: usize,
        /// The parser's complaint, with its location.
        message: String,
    },
    /// A document is some other kind of object.
    #[error("document {document}: expected apiVersion causeway.dev/v1alpha1 and kind ClusterEndpoint, found {api_version:?} {kind:?}; an endpoints file holds only ClusterEndpoint manifests")]
    WrongKind {
        /// 1-based document number.
        document: usize,
        /// The apiVersion found.
        api_version: String,
        /// The kind found.
        kind: String,
    },
    /// A document has fields the ClusterEndpoint type does not know.
    #[error("document {document}: unknown field {field}; check its spelling against crds/yaml/clusterendpoints.yaml (e.g. podCIDRs, serviceCIDRs, publicEndpoint)")]
    UnknownField {
        /// 1-based document number.
        document: usize,
        /// Path of the unknown field.
        field: String,
    },
    /// The file holds no ClusterEndpoint at all.
    #[error("the file holds no ClusterEndpoint; list one per cluster, this one's included")]
    Empty,
    /// A document parsed but failed validation.
    #[error("document {document}: {error}")]
    Invalid {
        /// 1-based document number.
        document: usize,
        /// The validation error.
        error: ValidationError,
    },
}

/// Parses every ClusterEndpoint document; all documents are checked and every problem reported.
pub fn parse_endpoints(text: &str) -> Result<Vec<ClusterEndpoint>, Vec<ManifestError>> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(vec![ManifestError::TooLarge {
            size: text.len(),
            limit: MAX_MANIFEST_BYTES,
        }]);
    }
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        match parse_document(document, doc) {
            Ok(Some(ep)) => endpoints.push(ep),
            Ok(None) => {}
            // After a YAML syntax error the document stream cannot resynchronise: it
            // would yield the same error forever, so stop at the first one.
            Err(DocumentError::Yaml(e)) => {
                errors.push(*e);
                break;
            }
            Err(DocumentError::Content(mut errs)) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() && endpoints.is_empty() {
        errors.push(ManifestError::Empty);
    }
    if errors.is_empty() {
        Ok(endpoints)
    } else {
        Err(errors)
    }
}

enum DocumentError {
    Yaml(Box<ManifestError>),
    Content(Vec<ManifestError>),
}

fn parse_document(
    document: usize,
    doc: serde_yaml::Deserializer<'_>,
) -> Result<Option<ClusterEndpoint>, DocumentError> {
    let syntax = |message: String| ManifestError::Syntax { document, message };
    let value = serde_yaml::Value::deserialize(doc)
        .map_err(|e| DocumentError::Yaml(Box::new(syntax(e.to_string()))))?;
    if value.is_null() {
        return Ok(None);
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != "causeway.dev/v1alpha1" || kind != "ClusterEndpoint" {
        return Err(DocumentError::Content(vec![ManifestError::WrongKind {
            document,
            api_version,
            kind,
        }]));
    }
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    let ep: ClusterEndpoint = serde_path_to_error::deserialize(ignoring).map_err(|e| {
        let path = e.path().to_string();
        DocumentError::Content(vec![syntax(format!("at {path}: {}", e.into_inner()))])
    })?;
    // Kubernetes fills these in itself; a manifest copied from `kubectl get -o yaml` may carry them.
    unknown.retain(|path| {
        !path.starts_with("metadata.") && !matches!(path.as_str(), "status" | "apiVersion" | "kind")
    });
    if unknown.is_empty() {
        Ok(Some(ep))
    } else {
        Err(DocumentError::Content(
            unknown
                .into_iter()
                .map(|field| ManifestError::UnknownField { document, field })
                .collect(),
        ))
    }
}

/// Parses and validates a whole endpoints file; any error refuses the whole file.
///
/// The standalone gateway applies a file all or nothing, so one bad document leaves
/// the running tunnels on the last good file instead of half-applying a new one.
pub fn load_clusterset(text: &str) -> Result<ClustersetCheck, Vec<ManifestError>> {
    let endpoints = parse_endpoints(text)?;
    let check = validate_clusterset(&endpoints);
    if check.refused.is_empty() {
        return Ok(check);
    }
    let document_of = |object: &str| {
        endpoints
            .iter()
            .position(|ep| crate::validate::object_name(ep) == object)
            .map_or(0, |i| i + 1)
    };
    Err(check
        .errors()
        .map(|error| ManifestError::Invalid {
            document: document_of(error.object()),
            error: error.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const KEY_B: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn doc(id: &str, pod: &str, key: &str) -> String {
        format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: ClusterEndpoint\nmetadata:\n  name: {id}\nspec:\n  clusterID: {id}\n  podCIDRs: [\"{pod}\"]\n  serviceCIDRs: []\n  gateways:\n    - nodeName: {id}-gw\n      publicEndpoint: \"198.18.0.1:51820\"\n      publicKey: \"{key}\"\n"
        )
    }

    #[test]
    fn parses_multi_document_files_and_skips_empty_documents() {
        let text = format!(
            "---\n{}---\n{}---\n",
            doc("site-a", "10.1.0.0/16", KEY_A),
            doc("site-b", "10.2.0.0/16", KEY_B)
        );
        let check = load_clusterset(&text).unwrap();
        let ids: Vec<_> = check.sites.iter().map(|s| s.cluster_id.as_str()).collect();
        assert_eq!(ids, ["site-a", "site-b"]);
    }

    #[test]
    fn refusals_name_the_document() {
        type Case = (String, fn(&ManifestError) -> bool);
        let cases: Vec<Case> = vec![
            ("spec: [unclosed".into(), |e| {
                matches!(e, ManifestError::Syntax { document: 1, .. })
            }),
            (
                format!(
                    "{}---\napiVersion: v1\nkind: ConfigMap\n",
                    doc("site-a", "10.1.0.0/16", KEY_A)
                ),
                |e| matches!(e, ManifestError::WrongKind { document: 2, kind, .. } if kind == "ConfigMap"),
            ),
            (
                doc("site-a", "10.1.0.0/16", KEY_A).replace("podCIDRs", "podCIDR"),
                |e| matches!(e, ManifestError::UnknownField { document: 1, field } if field == "spec.podCIDR"),
            ),
            (
                doc("site-a", "10.1.0.0/16", KEY_A).replace("  clusterID: site-a\n", ""),
                |e| matches!(e, ManifestError::Syntax { document: 1, message } if message.contains("clusterID")),
            ),
            ("".into(), |e| *e == ManifestError::Empty),
            ("x".repeat(MAX_MANIFEST_BYTES + 1), |e| {
                matches!(e, ManifestError::TooLarge { .. })
            }),
            (
                format!(
                    "{}---\n{}",
                    doc("site-a", "10.1.0.0/16", KEY_A),
                    doc("site-b", "10.1.128.0/17", KEY_B)
                ),
                |e| {
                    matches!(
                        e,
                        ManifestError::Invalid {
                            document: 2,
                            error: ValidationError::CidrOverlap { .. }
                        }
                    )
                },
            ),
        ];
        for (text, is_expected) in cases {
            let errors = load_clusterset(&text).unwrap_err();
            assert!(
                errors.iter().any(is_expected),
                "for {:.80?}: {errors:#?}",
                text
            );
            for e in &errors {
                assert!(e.to_string().len() > 40, "message too terse: {e}");
            }
        }
    }

    #[test]
    fn status_and_server_metadata_from_kubectl_are_accepted() {
        let text = doc("site-a", "10.1.0.0/16", KEY_A).replace(
            "metadata:\n  name: site-a\n",
            "metadata:\n  name: site-a\n  uid: 0b6e1c2a\n  resourceVersion: \"7\"\n",
        ) + "status:\n  conditions: []\n";
        if let Err(e) = load_clusterset(&text) {
            panic!("refused: {e:#?}");
        }
    }
}
