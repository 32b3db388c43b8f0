//! The object store: every object as JSON, one global resourceVersion
//! counter, and a bounded history of changes for watches.
//!
//! [`Store`] is plain data with no I/O and no locking, so its semantics
//! (metadata, optimistic concurrency, status subresource, patches, cascades,
//! history expiry) are unit-tested directly. [`SharedStore`] puts it behind a
//! mutex and wakes watchers after each write.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use rand_core::{OsRng, RngCore};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::patch::{self, ApplyRequest};
use super::resource::{self, Gvr, ResourceType};
use super::selector::{FieldSelector, LabelSelector};

/// Namespaces every store starts with, as on a fresh cluster.
pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Default number of changes kept for watches that resume from a resourceVersion.
pub const DEFAULT_HISTORY_LIMIT: usize = 1000;

/// Where an object lives: namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// What a change did, as named in watch events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed.
    Deleted,
}

impl ChangeType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One entry of the change history that watches replay.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion this change produced.
    pub revision: u64,
    /// The resource type changed.
    pub gvr: Gvr,
    /// Added, modified or deleted.
    pub change: ChangeType,
    /// The object after the change (for deletions: its last state, at `revision`).
    pub object: Value,
    /// The object before a modification, so a filtered watch can tell when
    /// an object starts or stops matching its selector.
    pub previous: Option<Value>,
}

impl Change {
    /// The event a watch on `gvr` in `namespace` (all when `None`) with
    /// `filter` sees for this change, if any. As on the real server, an
    /// object that starts matching is ADDED and one that stops is DELETED.
    pub fn as_seen_by(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        filter: &Filter,
    ) -> Option<ChangeType> {
        if self.gvr != *gvr {
            return None;
        }
        if let Some(ns) = namespace {
            if self.object["metadata"]["namespace"].as_str() != Some(ns) {
                return None;
            }
        }
        let now = filter.matches(&self.object);
        match self.change {
            ChangeType::Added | ChangeType::Deleted => now.then_some(self.change),
            ChangeType::Modified => {
                let before = self.previous.as_ref().is_some_and(|p| filter.matches(p));
                match (before, now) {
                    (true, true) => Some(ChangeType::Modified),
                    (false, true) => Some(ChangeType::Added),
                    (true, false) => Some(ChangeType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: everything but `.status` when there is a status subresource.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
}

/// A patch body, by content type.
#[derive(Debug, Clone)]
pub enum Patch {
    /// `application/merge-patch+json`; also used for strategic merge patch.
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(Value),
    /// `application/apply-patch+yaml`: server-side apply.
    Apply {
        /// The applied configuration.
        config: Value,
        /// `fieldManager`.
        manager: String,
        /// `force`.
        force: bool,
    },
}

/// Options shared by every write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and return the result without storing it.
    pub dry_run: bool,
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// The object must have this uid.
    pub uid: Option<String>,
    /// The object must be at this resourceVersion.
    pub resource_version: Option<String>,
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether the object passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The objects, ordered by namespace then name.
    pub items: Vec<Value>,
    /// The store's resourceVersion when listed.
    pub revision: u64,
    /// Token for the next page, when `limit` cut the list short.
    pub continue_token: Option<String>,
    /// How many matching objects follow this page.
    pub remaining: usize,
}

/// The in-memory object store (no I/O, no locking).
#[derive(Debug)]
pub struct Store {
    resources: BTreeMap<Gvr, ResourceType>,
    objects: BTreeMap<Gvr, BTreeMap<ObjectKey, Value>>,
    revision: u64,
    history: VecDeque<Change>,
    history_limit: usize,
    /// Changes at or below this revision may have been dropped from history.
    compacted: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_LIMIT)
    }
}

impl Store {
    /// A store with the built-in resource types and namespaces, keeping
    /// `history_limit` changes for resuming watches.
    pub fn new(history_limit: usize) -> Self {
        let mut store = Store {
            resources: BTreeMap::new(),
            objects: BTreeMap::new(),
            revision: 0,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
        };
        for rt in resource::builtin() {
            store.register(rt);
        }
        let namespaces = Gvr::new("", "v1", "namespaces");
        for ns in INITIAL_NAMESPACES {
            let namespace =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = store.create(&namespaces, None, namespace, WriteOptions::default()) {
                unreachable!("built-in namespace {ns} is valid: {e}");
            }
        }
        store
    }

    /// Adds (or redefines) a resource type.
    pub fn register(&mut self, rt: ResourceType) {
        let gvr = rt.gvr();
        self.objects.entry(gvr.clone()).or_default();
        self.resources.insert(gvr, rt);
    }

    /// Every registered resource type.
    pub fn resources(&self) -> impl Iterator<Item = &ResourceType> {
        self.resources.values()
    }

    /// The registered type for `gvr`, or 404.
    pub fn resource(&self, gvr: &Gvr) -> Result<&ResourceType, ApiError> {
        self.resources
            .get(gvr)
            .ok_or_else(|| ApiError::no_route(&gvr.to_string()))
    }

    /// The current (latest) resourceVersion.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Changes how many changes are kept; shrinking drops the oldest now.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        self.trim_history();
    }

    /// One object.
    pub fn get(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?;
        let key = object_key(rt, namespace, name)?;
        self.objects[gvr]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Matching objects in `namespace` (or everywhere when `None`), paged by
    /// `limit` and a `continue` token from a previous page.
    pub fn list(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        self.resource(gvr)?;
        let (revision, after) = match continue_token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let (rev, key) = decode_continue(token)?;
                (rev, Some(key))
            }
            None => (self.revision, None),
        };
        let matching: Vec<&Value> = self.objects[gvr]
            .iter()
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
            .map(|(_, obj)| obj)
            .filter(|obj| filter.matches(obj))
            .collect();
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let items: Vec<Value> = matching.iter().take(limit).map(|&o| o.clone()).collect();
        let remaining = matching.len() - items.len();
        let continue_token = match items.last() {
            Some(last) if remaining > 0 => Some(encode_continue(revision, &key_of(last))),
            _ => None,
        };
        Ok(ListPage {
            items,
            revision,
            continue_token,
            remaining,
        })
    }

    /// Changes after `revision`, oldest first; 410 Expired when some of them
    /// have already been dropped from the history.
    pub fn changes_since(&self, revision: u64) -> Result<impl Iterator<Item = &Change>, ApiError> {
        if revision < self.compacted {
            return Err(ApiError::expired(revision, self.compacted + 1));
        }
        let start = self.history.partition_point(|c| c.revision <= revision);
        Ok(self.history.range(start..))
    }

    /// POST: creates an object in `namespace` (ignored for cluster-scoped types).
    pub fn create(
        &mut self,
        gvr: &Gvr,
        namespace: Option<&str>,
        mut obj: Value,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?.clone();
        check_type_meta(&rt, &mut obj)?;
        let meta = metadata_mut(&mut obj);
        if rt.namespaced {
            let url_ns = namespace.ok_or_else(|| {
                ApiError::bad_request(format!("{} must be created in a namespace", rt.plural))
            })?;
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != url_ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            let ns = namespace.unwrap_or("");
            name = loop {
                let candidate = format!("{prefix}{}", random_suffix());
                let key = ObjectKey {
                    namespace: if rt.namespaced {
                        ns.to_string()
                    } else {
                        String::new()
                    },
                    name: candidate.clone(),
                };
                if !self.objects[gvr].contains_key(&key) {
                    break candidate;
                }
            };
            meta.insert("name".into(), json!(name));
        }
        validate_name(&rt, &name)?;
        let key = object_key(&rt, namespace, &name)?;
        if rt.namespaced && !self.namespace_exists(&key.namespace) {
            let ns_rt = self.resource(&namespaces_gvr())?;
            return Err(ApiError::not_found(ns_rt, &key.namespace));
        }
        if self.objects[gvr].contains_key(&key) {
            return Err(ApiError::already_exists(&rt, &name));
        }
        if rt.status_subresource {
            // As for CRDs with a status subresource: status is not set by create.
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
        let now = now_rfc3339();
        let meta = metadata_mut(&mut obj);
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        if *gvr == namespaces_gvr() {
            obj["status"] = json!({"phase": "Active"});
            let meta = metadata_mut(&mut obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        if *gvr == crds_gvr() {
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": now},
                ],
                "storedVersions": obj["spec"]["versions"].as_array().map(|vs| {
                    vs.iter().filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect::<Vec<_>>()
                }).unwrap_or_default(),
            });
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let revision = self.next_revision();
        set_resource_version(&mut obj, revision);
        self.objects
            .get_mut(gvr)
            .map(|objs| objs.insert(key, obj.clone()));
        if *gvr == crds_gvr() {
            for rt in resource::from_crd(&obj) {
                self.register(rt);
            }
        }
        self.record(revision, gvr, ChangeType::Added, &obj, None);
        Ok(obj)
    }

    /// PUT: replaces an object (or only its status, for [`Target::Status`]).
    pub fn replace(
        &mut self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        obj: Value,
        target: Target,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?.clone();
        if let Some(body_name) = obj["metadata"]["name"].as_str() {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if rt.namespaced {
            if let (Some(body_ns), Some(url_ns)) =
                (obj["metadata"]["namespace"].as_str(), namespace)
            {
                if !body_ns.is_empty() && body_ns != url_ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        self.update(&rt, namespace, name, obj, target, false, opts)
    }

    /// PATCH: merge, JSON or apply patch on an object or its status.
    pub fn patch(
        &mut self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        target: Target,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?.clone();
        let current = match self.get(gvr, namespace, name) {
            Ok(obj) => Some(obj),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        match patch {
            Patch::Merge(p) => {
                let mut doc = current.ok_or_else(|| ApiError::not_found(&rt, name))?;
                patch::merge_patch(&mut doc, p);
                self.update(&rt, namespace, name, doc, target, false, opts)
            }
            Patch::Json(p) => {
                let mut doc = current.ok_or_else(|| ApiError::not_found(&rt, name))?;
                patch::json_patch(&mut doc, p).map_err(|e| ApiError::invalid(&rt, name, &e))?;
                self.update(&rt, namespace, name, doc, target, false, opts)
            }
            Patch::Apply {
                config,
                manager,
                force,
            } => {
                let mut config = config.clone();
                check_type_meta(&rt, &mut config)?;
                match config["metadata"]["name"].as_str() {
                    Some(n) if n != name => {
                        return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )))
                    }
                    _ => metadata_mut(&mut config).insert("name".into(), json!(name)),
                };
                let config = applicable_part(&rt, config, target);
                let now = now_rfc3339();
                let api_version = rt.api_version();
                let req = ApplyRequest {
                    manager,
                    force: *force,
                    subresource: (target == Target::Status).then_some("status"),
                    api_version: &api_version,
                    now: &now,
                };
                let live = match (&current, target) {
                    (Some(obj), _) => obj.clone(),
                    (None, Target::Status) => return Err(ApiError::not_found(&rt, name)),
                    (None, Target::Main) => json!({}),
                };
                let merged = patch::apply(&live, &config, &req).map_err(|conflicts| {
                    let detail: Vec<String> = conflicts
                        .iter()
                        .map(|c| format!("conflict with \"{}\": {}", c.manager, c.dotted_path()))
                        .collect();
                    let why = format!(
                        "Apply failed with {} conflict{}: {}",
                        conflicts.len(),
                        if conflicts.len() == 1 { "" } else { "s" },
                        detail.join(", ")
                    );
                    ApiError {
                        message: why,
                        ..ApiError::conflict(&rt, name, "")
                    }
                })?;
                if current.is_none() {
                    let mut created = merged;
                    if let Some(meta) = created["metadata"].as_object_mut() {
                        meta.remove("resourceVersion");
                    }
                    self.create(&rt.gvr(), namespace, created, opts)
                } else {
                    self.update(&rt, namespace, name, merged, target, true, opts)
                }
            }
        }
    }

    /// DELETE: removes an object; with finalizers it is only marked for deletion.
    pub fn delete(
        &mut self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?.clone();
        let key = object_key(&rt, namespace, name)?;
        let current = self.objects[gvr]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt, name))?;
        if let Some(uid) = &preconditions.uid {
            let actual = current["metadata"]["uid"].as_str().unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict(
                    &rt,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &preconditions.resource_version {
            let actual = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("");
            if rv != actual {
                return Err(ApiError::conflict(
                    &rt,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"),
                ));
            }
        }
        if opts.dry_run {
            return Ok(current);
        }
        Ok(self.delete_now(&rt, &key, current, true))
    }

    /// DELETE on a collection: deletes every matching object.
    pub fn delete_collection(
        &mut self,
        gvr: &Gvr,
        namespace: Option<&str>,
        filter: &Filter,
        opts: WriteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let page = self.list(gvr, namespace, filter, None, None)?;
        let mut deleted = Vec::new();
        for obj in page.items {
            let key = key_of(&obj);
            let ns = (!key.namespace.is_empty()).then_some(key.namespace.as_str());
            match self.delete(gvr, ns, &key.name, &Preconditions::default(), opts) {
                Ok(obj) => deleted.push(obj),
                // Gone already (a cascade took it): nothing left to do.
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Seeds or overwrites an object as given, status included, bypassing
    /// the status-subresource and optimistic-concurrency rules (tests only).
    pub fn put(&mut self, gvr: &Gvr, mut obj: Value) -> Result<Value, ApiError> {
        let rt = self.resource(gvr)?.clone();
        check_type_meta(&rt, &mut obj)?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let namespace = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let namespace = rt
            .namespaced
            .then(|| namespace.unwrap_or_else(|| "default".into()));
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        match self.get(gvr, namespace.as_deref(), &name) {
            Err(e) if e.code == 404 => {
                let status = obj.get("status").cloned();
                let created =
                    self.create(gvr, namespace.as_deref(), obj, WriteOptions::default())?;
                match status {
                    Some(status) if rt.status_subresource => self.update(
                        &rt,
                        namespace.as_deref(),
                        &name,
                        json!({"status": status}),
                        Target::Status,
                        false,
                        WriteOptions::default(),
                    ),
                    _ => Ok(created),
                }
            }
            Err(e) => Err(e),
            Ok(_) => {
                let status = obj.get("status").cloned();
                let updated = self.update(
                    &rt,
                    namespace.as_deref(),
                    &name,
                    obj,
                    Target::Main,
                    false,
                    WriteOptions::default(),
                )?;
                match status {
                    Some(status) if rt.status_subresource => self.update(
                        &rt,
                        namespace.as_deref(),
                        &name,
                        json!({"status": status}),
                        Target::Status,
                        false,
                        WriteOptions::default(),
                    ),
                    _ => Ok(updated),
                }
            }
        }
    }

    /// The common end of PUT and PATCH: `candidate` is the whole new object.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut candidate: Value,
        target: Target,
        managed_fields_from_candidate: bool,
        opts: WriteOptions,
    ) -> Result<Value, ApiError> {
        let gvr = rt.gvr();
        let key = object_key(rt, namespace, name)?;
        let current = self.objects[&gvr]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !candidate.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        check_type_meta(rt, &mut candidate)?;
        let current_rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("");
        match candidate["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() && rv != current_rv => {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ))
            }
            _ => {}
        }

        let mut new = match target {
            Target::Main => {
                let mut new = candidate.clone();
                let meta = metadata_mut(&mut new);
                for field in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "resourceVersion",
                ] {
                    match current["metadata"].get(field) {
                        Some(v) => meta.insert(field.into(), v.clone()),
                        None => meta.remove(field),
                    };
                }
                if rt.status_subresource {
                    set_or_remove(&mut new, "status", current.get("status"));
                }
                new
            }
            Target::Status => {
                let mut new = current.clone();
                set_or_remove(&mut new, "status", candidate.get("status"));
                new
            }
        };
        let managed = if managed_fields_from_candidate {
            candidate["metadata"].get("managedFields").cloned()
        } else {
            current["metadata"]
                .get("managedFields")
                .map(|m| patch::disown_changed(m, &current, &new))
        };
        set_or_remove(
            metadata_value_mut(&mut new),
            "managedFields",
            managed.as_ref(),
        );

        if same_ignoring_managed_times(&new, &current) {
            // A write that changes nothing is not a write: same
            // resourceVersion, no watch event, as on the real server.
            return Ok(current);
        }
        if spec_part(rt, &new) != spec_part(rt, &current) {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            metadata_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if opts.dry_run {
            return Ok(new);
        }
        let finished = new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if finished {
            // The last finalizer is gone from an object being deleted.
            return Ok(self.delete_now(rt, &key, new, false));
        }
        let revision = self.next_revision();
        set_resource_version(&mut new, revision);
        if let Some(objs) = self.objects.get_mut(&gvr) {
            objs.insert(key, new.clone());
        }
        self.record(revision, &gvr, ChangeType::Modified, &new, Some(current));
        Ok(new)
    }

    /// Deletes `obj` (or marks it, when it has finalizers and `honour_finalizers`),
    /// then cascades to namespace contents and owned dependents.
    fn delete_now(
        &mut self,
        rt: &ResourceType,
        key: &ObjectKey,
        mut obj: Value,
        honour_finalizers: bool,
    ) -> Value {
        let gvr = rt.gvr();
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if honour_finalizers && has_finalizers {
            if obj["metadata"].get("deletionTimestamp").is_some() {
                return obj;
            }
            let previous = obj.clone();
            let meta = metadata_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta.insert("generation".into(), json!(generation));
            let revision = self.next_revision();
            set_resource_version(&mut obj, revision);
            if let Some(objs) = self.objects.get_mut(&gvr) {
                objs.insert(key.clone(), obj.clone());
            }
            self.record(revision, &gvr, ChangeType::Modified, &obj, Some(previous));
            return obj;
        }

        if let Some(objs) = self.objects.get_mut(&gvr) {
            objs.remove(key);
        }
        let revision = self.next_revision();
        set_resource_version(&mut obj, revision);
        self.record(revision, &gvr, ChangeType::Deleted, &obj, None);

        if gvr == namespaces_gvr() {
            self.empty_namespace(&key.name);
        }
        if gvr == crds_gvr() {
            self.drop_custom_resources(&obj);
        }
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.collect_dependents(uid, &key.namespace);
        }
        obj
    }

    /// Deleting a namespace deletes everything in it (finalizers of the
    /// contents are not waited for: a simplification of namespace termination).
    fn empty_namespace(&mut self, namespace: &str) {
        let victims: Vec<(ResourceType, ObjectKey, Value)> = self
            .resources
            .values()
            .filter(|rt| rt.namespaced)
            .flat_map(|rt| {
                self.objects[&rt.gvr()]
                    .iter()
                    .filter(|(k, _)| k.namespace == namespace)
                    .map(|(k, o)| (rt.clone(), k.clone(), o.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (rt, key, obj) in victims {
            if self.objects[&rt.gvr()].contains_key(&key) {
                self.delete_now(&rt, &key, obj, false);
            }
        }
    }

    /// Deleting a CRD deletes its objects and unregisters its resource types.
    fn drop_custom_resources(&mut self, crd: &Value) {
        for rt in resource::from_crd(crd) {
            let gvr = rt.gvr();
            let victims: Vec<(ObjectKey, Value)> = self
                .objects
                .get(&gvr)
                .map(|objs| objs.iter().map(|(k, o)| (k.clone(), o.clone())).collect())
                .unwrap_or_default();
            for (key, obj) in victims {
                self.delete_now(&rt, &key, obj, false);
            }
            self.resources.remove(&gvr);
            self.objects.remove(&gvr);
        }
    }

    /// Garbage collection: dependents that named the deleted object as an
    /// owner lose that reference, and are deleted when no owner is left.
    fn collect_dependents(&mut self, owner_uid: &str, owner_namespace: &str) {
        let mut dependents = Vec::new();
        for rt in self.resources.values() {
            for (key, obj) in &self.objects[&rt.gvr()] {
                // An owner in a namespace can only own objects in that namespace.
                if !owner_namespace.is_empty() && key.namespace != owner_namespace {
                    continue;
                }
                let refs = obj["metadata"]["ownerReferences"].as_array();
                if refs.is_some_and(|r| r.iter().any(|o| o["uid"].as_str() == Some(owner_uid))) {
                    dependents.push((rt.clone(), key.clone(), obj.clone()));
                }
            }
        }
        for (rt, key, obj) in dependents {
            let mut updated = obj.clone();
            if let Some(refs) = updated["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|o| o["uid"].as_str() != Some(owner_uid));
            }
            let orphaned = updated["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty());
            if orphaned {
                self.delete_now(&rt, &key, obj, true);
            } else {
                let revision = self.next_revision();
                set_resource_version(&mut updated, revision);
                if let Some(objs) = self.objects.get_mut(&rt.gvr()) {
                    objs.insert(key, updated.clone());
                }
                self.record(
                    revision,
                    &rt.gvr(),
                    ChangeType::Modified,
                    &updated,
                    Some(obj),
                );
            }
        }
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects[&namespaces_gvr()].contains_key(&ObjectKey {
            namespace: String::new(),
            name: namespace.to_string(),
        })
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn record(
        &mut self,
        revision: u64,
        gvr: &Gvr,
        change: ChangeType,
        obj: &Value,
        previous: Option<Value>,
    ) {
        self.history.push_back(Change {
            revision,
            gvr: gvr.clone(),
            change,
            object: obj.clone(),
            previous,
        });
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.revision;
            }
        }
        if self.history_limit == 0 {
            self.compacted = self.revision;
        }
    }
}

/// The store shared by the HTTP server and tests, waking watchers on change.
#[derive(Debug)]
pub struct SharedStore {
    inner: Mutex<Store>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl SharedStore {
    /// A fresh store keeping `history_limit` changes.
    pub fn new(history_limit: usize) -> Self {
        let store = Store::new(history_limit);
        let (changed, _) = tokio::sync::watch::channel(store.revision());
        SharedStore {
            inner: Mutex::new(store),
            changed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store consistent enough
        // for a test to report, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the store.
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the store, then wakes watchers if anything was written.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.lock();
        let result = f(&mut store);
        let revision = store.revision();
        drop(store);
        self.changed.send_if_modified(|seen| {
            let newer = *seen != revision;
            *seen = revision;
            newer
        });
        result
    }

    /// A receiver that changes whenever the store's revision does.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current resourceVersion.
    pub fn revision(&self) -> u64 {
        self.read(Store::revision)
    }

    /// Changes the retained history size (see [`Store::set_history_limit`]).
    pub fn set_history_limit(&self, limit: usize) {
        self.write(|s| s.set_history_limit(limit));
    }

    /// Registers an extra resource type.
    pub fn register(&self, rt: ResourceType) {
        self.write(|s| s.register(rt));
    }

    /// A typed object, or `None` when absent; `namespace` is ignored for cluster-scoped types.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let obj = self
            .read(|s| s.get(&Gvr::of::<K>(), namespace, name))
            .ok()?;
        serde_json::from_value(obj).ok()
    }

    /// Every object of a type in `namespace` (or all namespaces), by namespace and name.
    pub fn list<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let page =
            self.read(|s| s.list(&Gvr::of::<K>(), namespace, &Filter::default(), None, None));
        page.map(|p| p.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| serde_json::from_value(o).ok())
            .collect()
    }

    /// Creates an object with the same rules as a POST (status is dropped
    /// for types with a status subresource).
    pub fn create<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let value = to_value(obj)?;
        let namespace = obj
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let created = self.write(|s| {
            s.create(
                &Gvr::of::<K>(),
                Some(&namespace),
                value,
                WriteOptions::default(),
            )
        })?;
        from_value(created)
    }

    /// Seeds or overwrites an object exactly as given, status included
    /// (namespace defaults to `default`).
    pub fn put<K>(&self, obj: &K) -> Result<K, ApiError>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let value = to_value(obj)?;
        from_value(self.write(|s| s.put(&Gvr::of::<K>(), value))?)
    }

    /// Deletes an object (finalizers are honoured, as for a DELETE).
    pub fn delete<K>(&self, namespace: Option<&str>, name: &str) -> Result<(), ApiError>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.write(|s| {
            s.delete(
                &Gvr::of::<K>(),
                namespace,
                name,
                &Preconditions::default(),
                WriteOptions::default(),
            )
        })
        .map(|_| ())
    }
}

fn to_value<K: Serialize>(obj: &K) -> Result<Value, ApiError> {
    serde_json::to_value(obj)
        .map_err(|e| ApiError::bad_request(format!("cannot encode object: {e}")))
}

fn from_value<K: DeserializeOwned>(value: Value) -> Result<K, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::plain(
            500,
            "InternalError",
            format!("cannot decode stored object: {e}"),
        )
    })
}

fn namespaces_gvr() -> Gvr {
    Gvr::new("", "v1", "namespaces")
}

fn crds_gvr() -> Gvr {
    Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions")
}

fn object_key(
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> Result<ObjectKey, ApiError> {
    let namespace = if rt.namespaced {
        namespace
            .filter(|ns| !ns.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{} are namespaced: a namespace is required",
                    rt.plural
                ))
            })?
            .to_string()
    } else {
        String::new()
    };
    Ok(ObjectKey {
        namespace,
        name: name.to_string(),
    })
}

fn key_of(obj: &Value) -> ObjectKey {
    ObjectKey {
        namespace: obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        name: obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
    }
}

fn encode_continue(revision: u64, after: &ObjectKey) -> String {
    format!("{revision}|{}|{}", after.namespace, after.name)
}

fn decode_continue(token: &str) -> Result<(u64, ObjectKey), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let mut parts = token.splitn(3, '|');
    let revision = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((revision, ObjectKey { namespace, name }))
}

/// Fills in `apiVersion`/`kind` when missing; refuses ones for another type.
fn check_type_meta(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
        _ => {
            map.insert("apiVersion".into(), json!(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )))
        }
        _ => {
            map.insert("kind".into(), json!(rt.kind));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        map.insert("metadata".into(), json!({}));
    }
    Ok(())
}

/// What an apply may set: not `.status` on the main resource of a type with
/// a status subresource, and only `.status` on `/status`.
fn applicable_part(rt: &ResourceType, mut config: Value, target: Target) -> Value {
    match target {
        Target::Main => {
            if rt.status_subresource {
                if let Some(map) = config.as_object_mut() {
                    map.remove("status");
                }
            }
            config
        }
        Target::Status => {
            let mut part = json!({
                "apiVersion": config["apiVersion"].clone(),
                "kind": config["kind"].clone(),
                "metadata": {"name": config["metadata"]["name"].clone()},
            });
            if let Some(status) = config.get("status") {
                part["status"] = status.clone();
            }
            part
        }
    }
}

/// Everything whose change bumps `metadata.generation`.
fn spec_part(rt: &ResourceType, obj: &Value) -> Value {
    let mut part = obj.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("metadata");
        if rt.status_subresource {
            map.remove("status");
        }
    }
    part
}

fn same_ignoring_managed_times(a: &Value, b: &Value) -> bool {
    fn normalise(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(meta) = v["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
            if let Some(entries) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
                for entry in entries {
                    if let Some(e) = entry.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    }
    normalise(a) == normalise(b)
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = metadata_value_mut(obj);
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(map) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn metadata_value_mut(obj: &mut Value) -> &mut Value {
    if !obj.is_object() {
        *obj = json!({});
    }
    &mut obj["metadata"]
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<&Value>) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => map.insert(key.to_string(), v.clone()),
            None => map.remove(key),
        };
    }
}

fn set_resource_version(obj: &mut Value, revision: u64) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(revision.to_string()));
}

/// Names must be RFC 1123 subdomains (namespaces: labels), as the real server checks.
fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let label_only = rt.group.is_empty() && matches!(rt.plural.as_str(), "namespaces" | "services");
    let max = if label_only { 63 } else { 253 };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = name.len() <= max
        && if label_only {
            label_ok(name)
        } else {
            name.split('.').all(label_ok)
        };
    if ok {
        return Ok(());
    }
    let rule = if label_only {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    };
    Err(ApiError::invalid(
        rt,
        name,
        &format!("metadata.name: Invalid value: \"{name}\": {rule}"),
    ))
}

/// Current time as RFC 3339 with whole seconds, like `metav1.Time`.
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    match k8s_openapi::jiff::Timestamp::from_second(now.as_second()) {
        Ok(t) => t.to_string(),
        Err(_) => now.to_string(),
    }
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five characters from the alphabet the real server uses for generateName.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    OsRng.fill_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm() -> Gvr {
        Gvr::new("", "v1", "configmaps")
    }

    fn ce() -> Gvr {
        Gvr::new("causeway.dev", "v1alpha1", "clusterendpoints")
    }

    fn ns_gvr() -> Gvr {
        namespaces_gvr()
    }

    fn opts() -> WriteOptions {
        WriteOptions::default()
    }

    fn configmap(name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    }

    fn endpoint(name: &str, spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "ClusterEndpoint",
            "metadata": {"name": name}, "spec": spec, "status": status,
        })
    }

    fn rv(obj: &Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn create_fills_server_metadata_and_bumps_one_global_revision() {
        let mut s = Store::default();
        let before = s.revision();
        let a = s
            .create(
                &cm(),
                Some("default"),
                configmap("a", json!({"k": "v"})),
                opts(),
            )
            .unwrap();
        let b = s
            .create(
                &ce(),
                Some("default"),
                endpoint("b", json!({}), json!({})),
                opts(),
            )
            .unwrap();
        assert_eq!(rv(&a), before + 1);
        assert_eq!(rv(&b), before + 2);
        assert_eq!(s.revision(), before + 2);
        assert_eq!(a["metadata"]["namespace"], "default");
        assert_eq!(a["metadata"]["generation"], 1);
        assert_eq!(a["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(a["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
        assert_ne!(a["metadata"]["uid"], b["metadata"]["uid"]);
    }

    #[test]
    fn create_errors_match_the_real_server() {
        let mut s = Store::default();
        s.create(&cm(), Some("default"), configmap("a", json!({})), opts())
            .unwrap();
        let dup = s
            .create(&cm(), Some("default"), configmap("a", json!({})), opts())
            .unwrap_err();
        assert_eq!((dup.code, dup.reason), (409, "AlreadyExists"));
        assert_eq!(dup.message, "configmaps \"a\" already exists");
        let missing = s
            .create(&cm(), Some("nowhere"), configmap("a", json!({})), opts())
            .unwrap_err();
        assert_eq!(
            (missing.code, missing.message.as_str()),
            (404, "namespaces \"nowhere\" not found")
        );
        let bad = s
            .create(
                &cm(),
                Some("default"),
                configmap("Bad_Name", json!({})),
                opts(),
            )
            .unwrap_err();
        assert_eq!((bad.code, bad.reason), (422, "Invalid"));
        let unnamed = s
            .create(&cm(), Some("default"), json!({"metadata": {}}), opts())
            .unwrap_err();
        assert_eq!(unnamed.code, 422);
        let wrong_kind = s
            .create(
                &cm(),
                Some("default"),
                json!({"kind": "Secret", "metadata": {"name": "x"}}),
                opts(),
            )
            .unwrap_err();
        assert_eq!(wrong_kind.code, 400);
        let other_ns = json!({"metadata": {"name": "x", "namespace": "kube-system"}});
        assert_eq!(
            s.create(&cm(), Some("default"), other_ns, opts())
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn generate_name_appends_a_random_suffix() {
        let mut s = Store::default();
        let obj = json!({"metadata": {"generateName": "peer-"}});
        let a = s
            .create(&cm(), Some("default"), obj.clone(), opts())
            .unwrap();
        let b = s.create(&cm(), Some("default"), obj, opts()).unwrap();
        let name = a["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("peer-") && name.len() == 10, "{name}");
        assert_ne!(a["metadata"]["name"], b["metadata"]["name"]);
    }

    #[test]
    fn replace_with_a_stale_resource_version_conflicts() {
        let mut s = Store::default();
        let a = s
            .create(
                &cm(),
                Some("default"),
                configmap("a", json!({"k": "1"})),
                opts(),
            )
            .unwrap();
        let mut first = a.clone();
        first["data"]["k"] = json!("2");
        let updated = s
            .replace(&cm(), Some("default"), "a", first, Target::Main, opts())
            .unwrap();
        assert!(rv(&updated) > rv(&a));
        let mut stale = a.clone();
        stale["data"]["k"] = json!("3");
        let err = s
            .replace(&cm(), Some("default"), "a", stale, Target::Main, opts())
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert!(
            err.message.contains("the object has been modified"),
            "{}",
            err.message
        );
        // Without a resourceVersion the replace is unconditional.
        let mut blind = a;
        blind["metadata"]["resourceVersion"] = json!("");
        blind["data"]["k"] = json!("4");
        let done = s
            .replace(&cm(), Some("default"), "a", blind, Target::Main, opts())
            .unwrap();
        assert_eq!(done["data"]["k"], "4");
        let missing = s
            .replace(
                &cm(),
                Some("default"),
                "zz",
                configmap("zz", json!({})),
                Target::Main,
                opts(),
            )
            .unwrap_err();
        assert_eq!(missing.code, 404);
    }

    #[test]
    fn a_write_that_changes_nothing_is_not_a_write() {
        let mut s = Store::default();
        let a = s
            .create(
                &cm(),
                Some("default"),
                configmap("a", json!({"k": "1"})),
                opts(),
            )
            .unwrap();
        let revision = s.revision();
        let same = s
            .patch(
                &cm(),
                Some("default"),
                "a",
                &Patch::Merge(json!({"data": {"k": "1"}})),
                Target::Main,
                opts(),
            )
            .unwrap();
        assert_eq!(same, a);
        assert_eq!(s.revision(), revision);
        assert_eq!(s.changes_since(revision).unwrap().count(), 0);
    }

    #[test]
    fn status_subresource_separates_spec_and_status() {
        let mut s = Store::default();
        let created = s
            .create(
                &ce(),
                Some("default"),
                endpoint("e", json!({"a": 1}), json!({"ready": true})),
                opts(),
            )
            .unwrap();
        assert!(created.get("status").is_none(), "create drops status");

        // A status write changes only status, and not the generation.
        let mut body = created.clone();
        body["spec"]["a"] = json!(99);
        body["status"] = json!({"ready": true});
        let after_status = s
            .replace(&ce(), Some("default"), "e", body, Target::Status, opts())
            .unwrap();
        assert_eq!(after_status["spec"]["a"], 1);
        assert_eq!(after_status["status"]["ready"], true);
        assert_eq!(after_status["metadata"]["generation"], 1);

        // A main-resource write ignores status and bumps generation on spec change.
        let patch = Patch::Merge(json!({"spec": {"a": 2}, "status": {"ready": false}}));
        let after_spec = s
            .patch(&ce(), Some("default"), "e", &patch, Target::Main, opts())
            .unwrap();
        assert_eq!(after_spec["spec"]["a"], 2);
        assert_eq!(after_spec["status"]["ready"], true);
        assert_eq!(after_spec["metadata"]["generation"], 2);

        // Metadata-only changes do not bump generation.
        let label = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
        let after_label = s
            .patch(&ce(), Some("default"), "e", &label, Target::Main, opts())
            .unwrap();
        assert_eq!(after_label["metadata"]["generation"], 2);
        assert!(rv(&after_label) > rv(&after_spec));
    }

    #[test]
    fn json_patch_failures_are_invalid() {
        let mut s = Store::default();
        s.create(
            &cm(),
            Some("default"),
            configmap("a", json!({"k": "1"})),
            opts(),
        )
        .unwrap();
        let patch = Patch::Json(json!([{"op": "test", "path": "/data/k", "value": "2"}]));
        let err = s
            .patch(&cm(), Some("default"), "a", &patch, Target::Main, opts())
            .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn apply_creates_then_updates_and_records_managers() {
        let mut s = Store::default();
        let apply = |manager: &str, data: Value, force| Patch::Apply {
            config: configmap("a", data),
            manager: manager.to_string(),
            force,
        };
        let created = s
            .patch(
                &cm(),
                Some("default"),
                "a",
                &apply("one", json!({"k": "1"}), false),
                Target::Main,
                opts(),
            )
            .unwrap();
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "one");
        let conflict = s
            .patch(
                &cm(),
                Some("default"),
                "a",
                &apply("two", json!({"k": "2"}), false),
                Target::Main,
                opts(),
            )
            .unwrap_err();
        assert_eq!(conflict.code, 409);
        assert!(
            conflict.message.contains("conflict with \"one\": .data.k"),
            "{}",
            conflict.message
        );
        let forced = s
            .patch(
                &cm(),
                Some("default"),
                "a",
                &apply("two", json!({"k": "2"}), true),
                Target::Main,
                opts(),
            )
            .unwrap();
        assert_eq!(forced["data"]["k"], "2");
        let status_only = Patch::Apply {
            config: endpoint("nope", json!({}), json!({"ready": true})),
            manager: "one".into(),
            force: false,
        };
        let missing_status = s
            .patch(
                &ce(),
                Some("default"),
                "nope",
                &status_only,
                Target::Status,
                opts(),
            )
            .unwrap_err();
        assert_eq!(missing_status.code, 404);
    }

    #[test]
    fn history_keeps_a_bounded_ring_and_expires_older_versions() {
        let mut s = Store::new(3);
        let start = s.revision();
        for i in 0..5 {
            s.create(
                &cm(),
                Some("default"),
                configmap(&format!("c{i}"), json!({})),
                opts(),
            )
            .unwrap();
        }
        // Revisions start+3..=start+5 are kept; resuming from start+2 still works.
        assert_eq!(s.changes_since(start + 2).unwrap().count(), 3);
        let err = s.changes_since(start + 1).err().unwrap();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        s.set_history_limit(1);
        assert!(s.changes_since(start + 3).is_err());
        assert_eq!(s.changes_since(start + 4).unwrap().count(), 1);
    }

    #[test]
    fn filtered_watches_see_objects_enter_and_leave() {
        let mut s = Store::default();
        let start = s.revision();
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "db"}}});
        s.create(&cm(), Some("default"), obj, opts()).unwrap();
        let off = Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}}));
        s.patch(&cm(), Some("default"), "a", &off, Target::Main, opts())
            .unwrap();
        let on = Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}}));
        s.patch(&cm(), Some("default"), "a", &on, Target::Main, opts())
            .unwrap();
        s.delete(
            &cm(),
            Some("default"),
            "a",
            &Preconditions::default(),
            opts(),
        )
        .unwrap();
        let filter = Filter {
            labels: LabelSelector::parse("app=db").unwrap(),
            ..Filter::default()
        };
        let seen: Vec<ChangeType> = s
            .changes_since(start)
            .unwrap()
            .filter_map(|c| c.as_seen_by(&cm(), Some("default"), &filter))
            .collect();
        use ChangeType::*;
        assert_eq!(seen, vec![Added, Deleted, Added, Deleted]);
        let elsewhere = s
            .changes_since(start)
            .unwrap()
            .filter_map(|c| c.as_seen_by(&cm(), Some("kube-system"), &Filter::default()))
            .count();
        assert_eq!(elsewhere, 0);
    }

    #[test]
    fn deleting_a_namespace_deletes_its_contents() {
        let mut s = Store::default();
        let ns = json!({"metadata": {"name": "site-a"}});
        let created = s.create(&ns_gvr(), None, ns, opts()).unwrap();
        assert_eq!(created["status"]["phase"], "Active");
        s.create(&cm(), Some("site-a"), configmap("a", json!({})), opts())
            .unwrap();
        s.create(
            &ce(),
            Some("site-a"),
            endpoint("e", json!({}), json!({})),
            opts(),
        )
        .unwrap();
        s.create(&cm(), Some("default"), configmap("keep", json!({})), opts())
            .unwrap();
        let start = s.revision();
        s.delete(&ns_gvr(), None, "site-a", &Preconditions::default(), opts())
            .unwrap();
        let deleted: Vec<String> = s
            .changes_since(start)
            .unwrap()
            .map(|c| format!("{} {}", c.change.as_str(), c.gvr.plural))
            .collect();
        assert_eq!(deleted.len(), 3, "{deleted:?}");
        assert!(
            deleted.iter().all(|d| d.starts_with("DELETED")),
            "{deleted:?}"
        );
        assert_eq!(s.get(&cm(), Some("site-a"), "a").unwrap_err().code, 404);
        assert!(s.get(&cm(), Some("default"), "keep").is_ok());
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = Store::default();
        let obj = json!({"metadata": {"name": "a", "finalizers": ["causeway.dev/cleanup"]}});
        s.create(&cm(), Some("default"), obj, opts()).unwrap();
        let marked = s
            .delete(
                &cm(),
                Some("default"),
                "a",
                &Preconditions::default(),
                opts(),
            )
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(&cm(), Some("default"), "a").is_ok());
        let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        s.patch(&cm(), Some("default"), "a", &release, Target::Main, opts())
            .unwrap();
        assert_eq!(s.get(&cm(), Some("default"), "a").unwrap_err().code, 404);
    }

    #[test]
    fn delete_checks_preconditions() {
        let mut s = Store::default();
        let a = s
            .create(&cm(), Some("default"), configmap("a", json!({})), opts())
            .unwrap();
        let wrong = Preconditions {
            uid: Some("not-it".into()),
            ..Preconditions::default()
        };
        assert_eq!(
            s.delete(&cm(), Some("default"), "a", &wrong, opts())
                .unwrap_err()
                .code,
            409
        );
        let right = Preconditions {
            resource_version: a["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
            ..Preconditions::default()
        };
        s.delete(&cm(), Some("default"), "a", &right, opts())
            .unwrap();
        assert_eq!(
            s.delete(&cm(), Some("default"), "a", &right, opts())
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn deleting_an_owner_collects_its_dependents() {
        let mut s = Store::default();
        let owner = s
            .create(
                &cm(),
                Some("default"),
                configmap("owner", json!({})),
                opts(),
            )
            .unwrap();
        let uid = owner["metadata"]["uid"].clone();
        let owned = json!({"metadata": {"name": "owned", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
        ]}});
        s.create(&cm(), Some("default"), owned, opts()).unwrap();
        let shared = json!({"metadata": {"name": "shared", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "other-uid"}
        ]}});
        s.create(&cm(), Some("default"), shared, opts()).unwrap();
        s.delete(
            &cm(),
            Some("default"),
            "owner",
            &Preconditions::default(),
            opts(),
        )
        .unwrap();
        assert_eq!(
            s.get(&cm(), Some("default"), "owned").unwrap_err().code,
            404
        );
        let shared = s.get(&cm(), Some("default"), "shared").unwrap();
        assert_eq!(
            shared["metadata"]["ownerReferences"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn lists_page_with_continue_tokens() {
        let mut s = Store::default();
        for i in 0..5 {
            s.create(
                &cm(),
                Some("default"),
                configmap(&format!("c{i}"), json!({})),
                opts(),
            )
            .unwrap();
        }
        let all = Filter::default();
        let first = s.list(&cm(), Some("default"), &all, Some(2), None).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, 3);
        let token = first.continue_token.unwrap();
        let second = s
            .list(&cm(), Some("default"), &all, Some(10), Some(&token))
            .unwrap();
        let names: Vec<&str> = second
            .items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["c2", "c3", "c4"]);
        assert!(second.continue_token.is_none());
        assert_eq!(second.revision, first.revision);
        assert_eq!(
            s.list(&cm(), None, &all, None, None).unwrap().items.len(),
            5
        );
    }

    #[test]
    fn dry_run_stores_nothing() {
        let mut s = Store::default();
        let revision = s.revision();
        let dry = WriteOptions { dry_run: true };
        s.create(&cm(), Some("default"), configmap("a", json!({})), dry)
            .unwrap();
        assert_eq!(s.revision(), revision);
        assert_eq!(s.get(&cm(), Some("default"), "a").unwrap_err().code, 404);
    }

    #[test]
    fn creating_a_crd_serves_its_resources() {
        let mut s = Store::default();
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Cluster",
                "names": {"kind": "Widget", "plural": "widgets"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}],
            },
        });
        s.create(&crds_gvr(), None, crd, opts()).unwrap();
        let widgets = Gvr::new("example.com", "v1", "widgets");
        let rt = s.resource(&widgets).unwrap();
        assert!(!rt.namespaced && rt.status_subresource);
        s.create(&widgets, None, json!({"metadata": {"name": "w"}}), opts())
            .unwrap();
        s.delete(
            &crds_gvr(),
            None,
            "widgets.example.com",
            &Preconditions::default(),
            opts(),
        )
        .unwrap();
        assert!(s.resource(&widgets).is_err());
    }

    #[test]
    fn put_seeds_status_verbatim() {
        let mut s = Store::default();
        let seeded = s
            .put(
                &ce(),
                endpoint("e", json!({"a": 1}), json!({"ready": true})),
            )
            .unwrap();
        assert_eq!(seeded["status"]["ready"], true);
        assert_eq!(seeded["metadata"]["namespace"], "default");
        let again = s
            .put(
                &ce(),
                endpoint("e", json!({"a": 2}), json!({"ready": false})),
            )
            .unwrap();
        assert_eq!(again["spec"]["a"], 2);
        assert_eq!(again["status"]["ready"], false);
        assert_eq!(again["metadata"]["uid"], seeded["metadata"]["uid"]);
    }
}
