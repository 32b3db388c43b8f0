//! API errors, encoded as the `Status` objects a real API server sends, so
//! that `kube::Error::Api` carries the same code and reason.

use serde_json::{json, Value};

use super::resource::ResourceType;

/// A failed API request: HTTP code, machine-readable reason, human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, 410, 422, ...).
    pub code: u16,
    /// The `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: &'static str,
    /// What went wrong, worded like the real API server.
    pub message: String,
    /// `Status.details`: the object the error is about, when there is one.
    pub details: Option<ErrorDetails>,
}

/// The object an [`ApiError`] is about (`Status.details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    /// Object name.
    pub name: String,
    /// API group ("" for core).
    pub group: String,
    /// The resource's plural, as the real server puts it in `details.kind`.
    pub kind: String,
}

impl ApiError {
    fn about(
        code: u16,
        reason: &'static str,
        message: String,
        rt: &ResourceType,
        name: &str,
    ) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: Some(ErrorDetails {
                name: name.to_string(),
                group: rt.group.clone(),
                kind: rt.plural.clone(),
            }),
        }
    }

    /// 404: the object does not exist.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", rt.qualified_plural());
        Self::about(404, "NotFound", message, rt, name)
    }

    /// 409: create of an object that already exists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", rt.qualified_plural());
        Self::about(409, "AlreadyExists", message, rt, name)
    }

    /// 409: optimistic-concurrency failure (stale `resourceVersion` or precondition).
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            rt.qualified_plural()
        );
        Self::about(409, "Conflict", message, rt, name)
    }

    /// 422: the object fails validation.
    pub fn invalid(rt: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!("{} \"{name}\" is invalid: {why}", rt.kind);
        Self::about(422, "Invalid", message, rt, name)
    }

    /// 410: the requested resourceVersion is older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::plain(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405: the resource does not support this verb on this path.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::plain(405, "MethodNotAllowed", message)
    }

    /// 415: a patch content type this server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
        )
    }

    /// An error with no object details.
    pub fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object the real API server would send for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = json!({ "name": d.name, "group": d.group, "kind": d.kind });
        }
        status
    }
}
