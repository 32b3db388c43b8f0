//! The HTTP shell: routes Kubernetes REST paths onto the store, encodes
//! responses and errors, and streams watches.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::discovery;
use super::error::ApiError;
use super::resource::{Gvr, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Filter, Patch, Preconditions, SharedStore, Target, WriteOptions};
use super::traffic::{RequestRecord, Traffic, WriteVerb};

/// Every response body: whole or streamed (watches, the pod proxy).
pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// State shared by every connection of one server (and kept across restarts).
#[derive(Debug)]
pub struct ServerState {
    /// The objects.
    pub store: Arc<SharedStore>,
    /// Write counters and request log.
    pub traffic: Mutex<Traffic>,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// The network namespace file the pod proxy dials pods from; `None`: the server's own.
    pub pod_netns: Option<std::path::PathBuf>,
}

impl ServerState {
    fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts connections until `shutdown` fires; each connection is a task on
/// the current runtime, so dropping the runtime drops every connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors and the like: back off, don't spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(state, req).await) }
                    });
                    // A client going away mid-request is not our error.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn handle(state: Arc<ServerState>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    if let Some(target) = super::proxy::parse(&path) {
        let response = super::proxy::forward(&state, target, req)
            .await
            .unwrap_or_else(|e| error_response(&e));
        state.traffic().log(RequestRecord {
            method: method.to_string(),
            path,
            query: raw_query,
            status: response.status().as_u16(),
        });
        return response;
    }
    let (parts, body) = req.into_parts();
    let response = match body.collect().await {
        Ok(body) => {
            let query = Query::parse(&raw_query);
            route(
                &state,
                &method,
                &path,
                &query,
                &parts.headers,
                body.to_bytes(),
            )
            .unwrap_or_else(|e| error_response(&e))
        }
        Err(e) => error_response(&ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
    };
    state.traffic().log(RequestRecord {
        method: method.to_string(),
        path,
        query: raw_query,
        status: response.status().as_u16(),
    });
    response
}

/// Decoded query parameters (last value wins, as in the real server).
struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(raw: &str) -> Self {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn filter(&self) -> Result<Filter, ApiError> {
        Ok(Filter {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))
                .map_err(ApiError::bad_request)?,
        })
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            dry_run: self.get("dryRun").is_some_and(|v| v == "All"),
        }
    }
}

/// A request path resolved to a resource.
struct ResourcePath {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(
    state: &ServerState,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let store = &state.store;
    let aggregated = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=APIGroupDiscoveryList"));
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(json_response(200, &discovery::version())),
        ["api"] if aggregated => {
            return Ok(aggregated_response(
                &store.read(|s| discovery::aggregated(s, true)),
            ))
        }
        ["apis"] if aggregated => {
            return Ok(aggregated_response(
                &store.read(|s| discovery::aggregated(s, false)),
            ))
        }
        ["api"] => {
            let host = headers
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            return Ok(json_response(200, &discovery::api_versions(host)));
        }
        ["apis"] => return Ok(json_response(200, &store.read(discovery::api_group_list))),
        ["apis", group] => {
            return store
                .read(|s| discovery::api_group(s, group))
                .map(|doc| json_response(200, &doc))
                .ok_or_else(|| ApiError::no_route(path))
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        return store
            .read(|s| discovery::resource_list(s, group, version))
            .map(|doc| json_response(200, &doc))
            .ok_or_else(|| ApiError::no_route(path));
    }
    let target = resolve(store, group, version, rest).ok_or_else(|| ApiError::no_route(path))?;
    dispatch(state, method, query, headers, body, target)
}

/// Maps the path segments after `/api/v1` or `/apis/{g}/{v}` to a resource.
fn resolve(store: &SharedStore, group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let lookup =
        |plural: &str| store.read(|s| s.resource(&Gvr::new(group, version, plural)).ok().cloned());
    let (rt, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] => match lookup(plural) {
            Some(rt) if rt.namespaced => (rt, Some(ns.to_string()), tail),
            _ => (lookup("namespaces")?, None, &rest[1..]),
        },
        [plural, tail @ ..] => (lookup(plural)?, None, tail),
        [] => return None,
    };
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, "status"] => (Some(name.to_string()), Some("status".to_string())),
        _ => return None,
    };
    // A namespaced object is only addressed through its namespace.
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return None;
    }
    Some(ResourcePath {
        rt,
        namespace,
        name,
        subresource,
    })
}

fn dispatch(
    state: &ServerState,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
    target: ResourcePath,
) -> Result<Response<Body>, ApiError> {
    let gvr = target.rt.gvr();
    let ns = target.namespace.as_deref();
    let part = if target.subresource.is_some() {
        Target::Status
    } else {
        Target::Main
    };
    let store = &state.store;
    let count = |verb| state.traffic().count_write(&gvr, verb);
    match (method, target.name.as_deref()) {
        (&Method::GET, None) if query.flag("watch") => watch(state, &target, query),
        (&Method::GET, None) => list(store, &target, query),
        (&Method::GET, Some(name)) => {
            let obj = store.read(|s| s.get(&gvr, ns, name))?;
            Ok(json_response(200, &obj))
        }
        (&Method::POST, None) => {
            count(WriteVerb::Create);
            if target.rt.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed(format!(
                    "{} are namespaced: POST to /namespaces/{{namespace}}/{}",
                    target.rt.plural, target.rt.plural
                )));
            }
            let obj = parse_json(&body)?;
            let created = store.write(|s| s.create(&gvr, ns, obj, query.write_options()))?;
            Ok(json_response(201, &created))
        }
        (&Method::PUT, Some(name)) => {
            count(WriteVerb::Update);
            let obj = parse_json(&body)?;
            let updated =
                store.write(|s| s.replace(&gvr, ns, name, obj, part, query.write_options()))?;
            Ok(json_response(200, &updated))
        }
        (&Method::PATCH, Some(name)) => {
            count(WriteVerb::Patch);
            let patch = parse_patch(headers, query, &body)?;
            let existed = store.read(|s| s.get(&gvr, ns, name).is_ok());
            let patched =
                store.write(|s| s.patch(&gvr, ns, name, &patch, part, query.write_options()))?;
            Ok(json_response(if existed { 200 } else { 201 }, &patched))
        }
        (&Method::DELETE, Some(name)) => {
            count(WriteVerb::Delete);
            let options = parse_delete_options(&body)?;
            let mut opts = query.write_options();
            opts.dry_run |= options.dry_run;
            let deleted =
                store.write(|s| s.delete(&gvr, ns, name, &options.preconditions, opts))?;
            let pending = deleted["metadata"].get("deletionTimestamp").is_some()
                && store.read(|s| s.get(&gvr, ns, name).is_ok());
            if pending {
                // Still there, waiting for finalizers: the real server returns the object.
                Ok(json_response(200, &deleted))
            } else {
                Ok(json_response(
                    200,
                    &success_status(&target.rt, name, &deleted),
                ))
            }
        }
        (&Method::DELETE, None) => {
            count(WriteVerb::Delete);
            let filter = query.filter()?;
            let options = parse_delete_options(&body)?;
            let mut opts = query.write_options();
            opts.dry_run |= options.dry_run;
            let deleted = store.write(|s| s.delete_collection(&gvr, ns, &filter, opts))?;
            let revision = store.revision();
            Ok(json_response(
                200,
                &list_document(&target.rt, deleted, revision, None, 0),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on this path"
        ))),
    }
}

fn list(
    store: &SharedStore,
    target: &ResourcePath,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let filter = query.filter()?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    let page = store.read(|s| {
        s.list(
            &target.rt.gvr(),
            target.namespace.as_deref(),
            &filter,
            limit,
            query.get("continue"),
        )
    })?;
    Ok(json_response(
        200,
        &list_document(
            &target.rt,
            page.items,
            page.revision,
            page.continue_token,
            page.remaining,
        ),
    ))
}

fn list_document(
    rt: &ResourceType,
    items: Vec<Value>,
    revision: u64,
    continue_token: Option<String>,
    remaining: usize,
) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": items,
    })
}

/// The `Status` a real server returns for an immediate, successful delete.
fn success_status(rt: &ResourceType, name: &str, deleted: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name,
            "group": rt.group,
            "kind": rt.plural,
            "uid": deleted["metadata"]["uid"],
        },
    })
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("cannot decode the request body: {e}")))
}

fn parse_patch(headers: &HeaderMap, query: &Query, body: &[u8]) -> Result<Patch, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        // Strategic merge patch is treated as a JSON merge patch: no patch
        // directives, and lists are replaced rather than merged by key.
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(Patch::Merge(parse_json(body)?))
        }
        "application/json-patch+json" => Ok(Patch::Json(parse_json(body)?)),
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            let manager = query.get("fieldManager").unwrap_or("");
            if manager.is_empty() {
                return Err(ApiError::plain(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            Ok(Patch::Apply {
                config: parse_json(body)?,
                manager: manager.to_string(),
                force: query.flag("force"),
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

struct DeleteOptions {
    preconditions: Preconditions,
    dry_run: bool,
}

fn parse_delete_options(body: &[u8]) -> Result<DeleteOptions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeleteOptions {
            preconditions: Preconditions::default(),
            dry_run: false,
        });
    }
    let options = parse_json(body)?;
    let pre = &options["preconditions"];
    Ok(DeleteOptions {
        preconditions: Preconditions {
            uid: pre["uid"].as_str().map(str::to_string),
            resource_version: pre["resourceVersion"].as_str().map(str::to_string),
        },
        dry_run: options["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All")),
    })
}

/// Starts a watch: a chunked body of newline-separated watch events.
fn watch(
    state: &ServerState,
    target: &ResourcePath,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let filter = query.filter()?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
        })?)),
        None => None,
    };
    let from = match query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
        None => None,
    };
    let gvr = target.rt.gvr();
    let namespace = target.namespace.clone();
    let mut changed = state.store.subscribe();
    // Without a resourceVersion (or with "0", or when asked for initial
    // events) the watch starts with the current objects as ADDED events.
    let (initial, start) = state.store.read(|s| {
        let revision = s.revision();
        if from.is_none() || send_initial {
            let page = s.list(&gvr, namespace.as_deref(), &filter, None, None);
            (page.map(|p| p.items).unwrap_or_default(), revision)
        } else {
            (Vec::new(), from.unwrap_or(revision))
        }
    });
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let store = state.store.clone();
    let kind = target.rt.kind.clone();
    let api_version = target.rt.api_version();
    let interval = state.bookmark_interval;
    tokio::spawn(async move {
        let bookmark = |revision: u64, initial_end: bool| {
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line(
                "BOOKMARK",
                &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata}),
            )
        };
        for obj in &initial {
            if tx.send(event_line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(start, true)).await.is_err() {
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut seen = start;
        loop {
            let batch = store.read(|s| {
                s.changes_since(seen).map(|changes| {
                    let lines: Vec<Bytes> = changes
                        .filter_map(|c| {
                            c.as_seen_by(&gvr, namespace.as_deref(), &filter)
                                .map(|t| event_line(t.as_str(), &c.object))
                        })
                        .collect();
                    (lines, s.revision())
                })
            });
            match batch {
                Ok((lines, revision)) => {
                    for line in lines {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    seen = revision;
                }
                Err(expired) => {
                    // The watcher fell behind the retained history (or asked
                    // for a compacted version): 410, and it must re-list.
                    let _ = tx.send(event_line("ERROR", &expired.to_status())).await;
                    return;
                }
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(bookmark(seen, false)).await.is_err() {
                        return;
                    }
                }
                _ = sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn aggregated_response(body: &Value) -> Response<Body> {
    let mut response = json_response(200, body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    response
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}
