//! Patch semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and a
//! simplified server-side apply that tracks field ownership per manager.
//!
//! Server-side apply here is deliberately smaller than the real one:
//! - every list is atomic (replaced whole; no merge keys such as `type` for
//!   conditions or `port` for ports), and every map is granular;
//! - ownership is tracked only for `Apply` managers; ordinary updates
//!   (PUT, merge and JSON patches) neither take ownership nor conflict;
//! - conflicts are detected against other `Apply` managers of the same
//!   subresource when the applied value differs from the live one, and
//!   `force=true` takes the fields over, as in the real server;
//! - a field the manager applied before and omits now is removed, unless
//!   another manager still owns it.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// A path of map keys from the object root, e.g. `["spec", "podCIDRs"]`.
pub type FieldPath = Vec<String>;
/// The leaf fields a manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// Applies an RFC 7386 JSON merge patch: maps merge, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies an RFC 6902 JSON patch document (a list of operations).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

/// The value at `path`, if every step is a map key that exists.
pub fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Removes the field at `path` and any maps below the top level that this leaves empty.
pub fn remove_path(value: &mut Value, path: &[String]) {
    remove_path_exact(value, path);
    // Prune maps emptied by the removal, but keep top-level ones such as
    // `spec`, which typed clients expect to find.
    for depth in (2..path.len()).rev() {
        let prefix = &path[..depth];
        if value_at(value, prefix).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
            remove_path_exact(value, prefix);
        } else {
            break;
        }
    }
}

fn remove_path_exact(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for key in parents {
        match node.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// Metadata fields an applier can own; the rest are the server's or identity.
const OWNABLE_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// The leaf fields an applied configuration sets (its "field set").
pub fn field_set(config: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(root) = config.as_object() else {
        return set;
    };
    for (key, value) in root {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for field in OWNABLE_METADATA {
                    if let Some(v) = value.get(field) {
                        leaves(v, &mut vec![key.clone(), field.to_string()], &mut set);
                    }
                }
            }
            _ => leaves(value, &mut vec![key.clone()], &mut set),
        }
    }
    set
}

fn leaves(value: &Value, path: &mut FieldPath, set: &mut FieldSet) {
    match value {
        // Applying null removes the field and gives up owning it, as the real server does:
        // that is how a Lease holder releases `holderIdentity` for the next one to take.
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                leaves(child, path, set);
                path.pop();
            }
        }
        _ => {
            set.insert(path.clone());
        }
    }
}

/// Encodes a field set as `fieldsV1` (`{"f:spec":{"f:replicas":{}}}`).
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for key in path {
            let entry = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// Decodes `fieldsV1` back into the leaf paths it names.
pub fn from_fields_v1(fields: &Value) -> FieldSet {
    fn walk(node: &Value, path: &mut FieldPath, set: &mut FieldSet) {
        let children: Vec<(&String, &Value)> = node
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                set.insert(path.clone());
            }
            return;
        }
        for (key, child) in children {
            path.push(key["f:".len()..].to_string());
            walk(child, path, set);
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut set);
    set
}

/// Merges an applied configuration into the live object: maps merge
/// recursively, everything else (lists included) replaces, `null` removes.
pub fn merge_applied(target: &mut Value, config: &Value) {
    merge_patch(target, config);
}

/// Who applies, and where.
#[derive(Debug, Clone)]
pub struct ApplyRequest<'a> {
    /// `fieldManager` query parameter.
    pub manager: &'a str,
    /// `force=true`: take over fields other managers own.
    pub force: bool,
    /// `Some("status")` when applying to the status subresource.
    pub subresource: Option<&'a str>,
    /// `apiVersion` recorded in the managedFields entry.
    pub api_version: &'a str,
    /// RFC 3339 time recorded in the managedFields entry.
    pub now: &'a str,
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other manager.
    pub manager: String,
    /// The contested field.
    pub path: FieldPath,
}

impl ApplyConflict {
    /// `.spec.replicas` style, as the real server words it.
    pub fn dotted_path(&self) -> String {
        self.path.iter().map(|k| format!(".{k}")).collect()
    }
}

struct Entry {
    raw: Value,
    fields: FieldSet,
}

impl Entry {
    fn manager(&self) -> &str {
        self.raw["manager"].as_str().unwrap_or("")
    }
    fn is_apply(&self) -> bool {
        self.raw["operation"].as_str() == Some("Apply")
    }
    fn subresource(&self) -> Option<&str> {
        self.raw["subresource"].as_str()
    }
}

/// Server-side apply of `config` onto `live` (use `{}` when creating).
///
/// Returns the merged object with updated `metadata.managedFields`, or the
/// conflicts when another applier owns a field with a different value and
/// `force` is off.
pub fn apply(
    live: &Value,
    config: &Value,
    req: &ApplyRequest<'_>,
) -> Result<Value, Vec<ApplyConflict>> {
    let mut entries: Vec<Entry> = live["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|raw| Entry {
                    raw: raw.clone(),
                    fields: from_fields_v1(&raw["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let applied = field_set(config);

    let is_mine = |e: &Entry| {
        e.is_apply() && e.manager() == req.manager && e.subresource() == req.subresource
    };
    let mut conflicts = Vec::new();
    for entry in entries.iter_mut() {
        if is_mine(entry) || !entry.is_apply() || entry.subresource() != req.subresource {
            continue;
        }
        let contested: Vec<FieldPath> = entry
            .fields
            .intersection(&applied)
            .filter(|path| value_at(live, path) != value_at(config, path))
            .cloned()
            .collect();
        for path in contested {
            if req.force {
                entry.fields.remove(&path);
            } else {
                conflicts.push(ApplyConflict {
                    manager: entry.manager().to_string(),
                    path,
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    let previous: FieldSet = entries
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let owned_by_others: FieldSet = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();

    let mut merged = live.clone();
    for dropped in previous.difference(&applied) {
        if !owned_by_others.contains(dropped) {
            remove_path(&mut merged, dropped);
        }
    }
    let mut config = config.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    merge_applied(&mut merged, &config);

    let mut mine = json!({
        "manager": req.manager,
        "operation": "Apply",
        "apiVersion": req.api_version,
        "time": req.now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&applied),
    });
    if let Some(sub) = req.subresource {
        mine["subresource"] = json!(sub);
    }
    let mut managed: Vec<Value> = Vec::new();
    let mut placed = false;
    for entry in entries {
        if is_mine(&entry) {
            if !placed && !applied.is_empty() {
                managed.push(mine.clone());
            }
            placed = true;
        } else if !entry.fields.is_empty() || !entry.is_apply() {
            let is_apply = entry.is_apply();
            let mut raw = entry.raw;
            if is_apply {
                raw["fieldsV1"] = to_fields_v1(&entry.fields);
            }
            managed.push(raw);
        }
    }
    if !placed && !applied.is_empty() {
        managed.push(mine);
    }
    if !merged["metadata"].is_object() {
        merged["metadata"] = json!({});
    }
    merged["metadata"]["managedFields"] = Value::Array(managed);
    Ok(merged)
}

/// After an ordinary write (PUT, merge or JSON patch) from `before` to `after`: appliers
/// no longer own the fields that write changed, as on the real server, where the
/// updater takes them over. (This stand-in does not record the updater's own entry.)
pub fn disown_changed(managed: &Value, before: &Value, after: &Value) -> Value {
    let Some(entries) = managed.as_array() else {
        return managed.clone();
    };
    let kept = entries
        .iter()
        .filter_map(|raw| {
            if raw["operation"] != "Apply" {
                return Some(raw.clone());
            }
            let fields: FieldSet = from_fields_v1(&raw["fieldsV1"])
                .into_iter()
                .filter(|path| value_at(before, path) == value_at(after, path))
                .collect();
            let mut raw = raw.clone();
            raw["fieldsV1"] = to_fields_v1(&fields);
            (!fields.is_empty()).then_some(raw)
        })
        .collect();
    Value::Array(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> FieldPath {
        p.split('.').map(str::to_string).collect()
    }

    fn req<'a>(manager: &'a str, force: bool) -> ApplyRequest<'a> {
        ApplyRequest {
            manager,
            force,
            subresource: None,
            api_version: "v1",
            now: "2025-01-01T00:00:00Z",
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null, "h": 1}, "l": [3]}),
        );
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e", "h": 1}, "l": [3]}));
    }

    #[test]
    fn json_patch_applies_and_reports_failed_tests() {
        let mut doc = json!({"spec": {"n": 1, "list": ["a"]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/spec/n", "value": 2},
                {"op": "add", "path": "/spec/list/-", "value": "b"},
            ]),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"n": 2, "list": ["a", "b"]}}));
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/spec/n", "value": 9}]),
        );
        assert!(err.is_err());
        assert!(json_patch(&mut doc, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let config = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"app": "db"}},
            "data": {"a": "1", "b": "2"}, "list": [1, 2], "empty": {},
        });
        let set = field_set(&config);
        let want: FieldSet = ["metadata.labels.app", "data.a", "data.b", "list", "empty"]
            .into_iter()
            .map(path)
            .collect();
        assert_eq!(set, want);
        let encoded = to_fields_v1(&set);
        assert_eq!(encoded["f:data"]["f:a"], json!({}));
        assert_eq!(from_fields_v1(&encoded), set);
    }

    #[test]
    fn apply_creates_merges_and_records_the_manager() {
        let config = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let obj = apply(&json!({}), &config, &req("ctl", false)).unwrap();
        assert_eq!(obj["data"], json!({"a": "1"}));
        let managed = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 1);
        assert_eq!(managed[0]["manager"], "ctl");
        assert_eq!(managed[0]["operation"], "Apply");
        assert_eq!(managed[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));

        // Another manager adds a field; both are kept.
        let other = json!({"metadata": {"name": "x"}, "data": {"b": "2"}});
        let obj = apply(&obj, &other, &req("other", false)).unwrap();
        assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            obj["metadata"]["managedFields"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let first = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let obj = apply(&json!({}), &first, &req("ctl", false)).unwrap();
        let second = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let obj = apply(&obj, &second, &req("ctl", false)).unwrap();
        assert_eq!(obj["data"], json!({"a": "1"}));
    }

    #[test]
    fn apply_keeps_a_dropped_field_another_manager_owns() {
        let both = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let obj = apply(&json!({}), &both, &req("one", false)).unwrap();
        let obj = apply(&obj, &both, &req("two", false)).unwrap();
        let none = json!({"metadata": {"name": "x"}, "data": {}});
        let obj = apply(&obj, &none, &req("one", false)).unwrap();
        assert_eq!(obj["data"]["a"], "1");
    }

    #[test]
    fn applying_null_removes_the_field_and_its_ownership() {
        let live = apply(
            &json!({}),
            &json!({"spec": {"holder": "a", "n": 1}}),
            &req("a", false),
        )
        .unwrap();
        let released = apply(
            &live,
            &json!({"spec": {"holder": null, "n": 1}}),
            &req("a", false),
        )
        .unwrap();
        assert_eq!(released["spec"], json!({"n": 1}));
        // Another manager may now take the field without a conflict.
        let taken = apply(
            &released,
            &json!({"spec": {"holder": "b"}}),
            &req("b", false),
        )
        .unwrap();
        assert_eq!(taken["spec"]["holder"], json!("b"));
    }

    #[test]
    fn an_ordinary_write_takes_the_fields_it_changes_from_appliers() {
        let live = apply(
            &json!({}),
            &json!({"spec": {"holder": "a", "n": 1}}),
            &req("a", false),
        )
        .unwrap();
        let mut after = live.clone();
        after["spec"]["holder"] = Value::Null;
        let managed = disown_changed(&live["metadata"]["managedFields"], &live, &after);
        let owned = from_fields_v1(&managed[0]["fieldsV1"]);
        assert!(
            owned.contains(&path("spec.n")) && !owned.contains(&path("spec.holder")),
            "{owned:?}"
        );
    }

    #[test]
    fn apply_conflicts_unless_forced() {
        let mine = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
        let obj = apply(&json!({}), &mine, &req("one", false)).unwrap();
        let theirs = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        let conflicts = apply(&obj, &theirs, &req("two", false)).unwrap_err();
        assert_eq!(
            conflicts,
            vec![ApplyConflict {
                manager: "one".into(),
                path: path("spec.replicas")
            }]
        );
        assert_eq!(conflicts[0].dotted_path(), ".spec.replicas");

        let obj = apply(&obj, &theirs, &req("two", true)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        // "one" lost the field, so it no longer appears in managedFields.
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["two"]);
    }

    #[test]
    fn applying_the_same_value_is_shared_ownership_not_a_conflict() {
        let cfg = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
        let obj = apply(&json!({}), &cfg, &req("one", false)).unwrap();
        assert!(apply(&obj, &cfg, &req("two", false)).is_ok());
    }

    #[test]
    fn remove_path_prunes_emptied_maps_below_top_level() {
        let mut doc = json!({"spec": {"a": {"b": 1}}});
        remove_path(&mut doc, &path("spec.a.b"));
        assert_eq!(doc, json!({"spec": {}}));
    }
}
