//! Label and field selectors, parsed and matched the way the API server does.

use serde_json::Value;

/// One clause of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: absent, or present with another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: absent, or present with a value not listed.
    NotIn(String, Vec<String>),
    /// `key>n`: present and an integer greater than n.
    GreaterThan(String, i64),
    /// `key<n`: present and an integer less than n.
    LessThan(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses the `labelSelector` query syntax (`a=b,c!=d,e in (f,g),!h`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut p = Cursor {
            chars: text.chars().collect(),
            pos: 0,
        };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.eof() {
            return Ok(LabelSelector(requirements));
        }
        loop {
            requirements.push(p.requirement().map_err(|e| format!("{e} in {text:?}"))?);
            p.skip_ws();
            match p.next() {
                None => break,
                Some(',') => continue,
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} at position {} in {text:?}",
                        p.pos - 1
                    ))
                }
            }
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn eof(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        self.skip_ws();
        match self.next() {
            Some(c) if c == want => Ok(()),
            Some(c) => Err(format!("expected {want:?}, found {c:?}")),
            None => Err(format!("expected {want:?}, found end of selector")),
        }
    }

    /// A label key or value: `[A-Za-z0-9._/-]*`.
    fn word(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn key(&mut self) -> Result<String, String> {
        self.skip_ws();
        let key = self.word();
        if key.is_empty() {
            Err(match self.peek() {
                Some(c) => format!("expected a label key, found {c:?}"),
                None => "expected a label key, found end of selector".to_string(),
            })
        } else {
            Ok(key)
        }
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        self.expect('(')?;
        let mut values = Vec::new();
        loop {
            self.skip_ws();
            values.push(self.word());
            self.skip_ws();
            match self.next() {
                Some(',') => continue,
                Some(')') => return Ok(values),
                Some(c) => return Err(format!("expected ',' or ')', found {c:?}")),
                None => return Err("unterminated value list".to_string()),
            }
        }
    }

    fn integer(&mut self) -> Result<i64, String> {
        self.skip_ws();
        let word = self.word();
        word.parse()
            .map_err(|_| format!("expected an integer, found {word:?}"))
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.pos += 1;
            return Ok(Requirement::NotExists(self.key()?));
        }
        let key = self.key()?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => Ok(Requirement::Exists(key)),
            Some('=') => {
                self.pos += 1;
                if self.peek() == Some('=') {
                    self.pos += 1;
                }
                self.skip_ws();
                Ok(Requirement::Equals(key, self.word()))
            }
            Some('!') => {
                self.pos += 1;
                self.expect('=')?;
                self.skip_ws();
                Ok(Requirement::NotEquals(key, self.word()))
            }
            Some('>') => {
                self.pos += 1;
                Ok(Requirement::GreaterThan(key, self.integer()?))
            }
            Some('<') => {
                self.pos += 1;
                Ok(Requirement::LessThan(key, self.integer()?))
            }
            Some(_) => match self.word().as_str() {
                "in" => Ok(Requirement::In(key, self.values()?)),
                "notin" => Ok(Requirement::NotIn(key, self.values()?)),
                other => Err(format!("unknown operator {other:?} after key {key:?}")),
            },
        }
    }
}

/// The fields every resource can be selected by.
const SUPPORTED_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

/// A parsed field selector (`metadata.name=x,metadata.namespace!=y`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// One clause of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// `metadata.name` or `metadata.namespace`.
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    /// The value compared against.
    pub value: String,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax; only `metadata.name` and
    /// `metadata.namespace` are supported, like for most real resources.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for clause in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let (field, equals, value) = if let Some((f, v)) = clause.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = clause.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = clause.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid field selector clause {clause:?}: expected field=value"
                ));
            };
            let field = field.trim();
            if !SUPPORTED_FIELDS.contains(&field) {
                return Err(format!(
                    "field label not supported: {field} (supported: {})",
                    SUPPORTED_FIELDS.join(", ")
                ));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                equals,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether the object satisfies every clause.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            let key = r.field.trim_start_matches("metadata.");
            let actual = object["metadata"][key].as_str().unwrap_or("");
            (actual == r.value) == r.equals
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "x", "namespace": "ns", "labels": labels } })
    }

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let obj = labelled(json!({ "app": "db", "tier": "backend", "replicas": "3" }));
        let bare = labelled(json!({}));
        let cases: &[(&str, bool, bool)] = &[
            // (selector, matches obj, matches bare)
            ("", true, true),
            ("app=db", true, false),
            ("app==db", true, false),
            ("app=web", false, false),
            ("app!=web", true, true),
            ("app!=db", false, true),
            ("app", true, false),
            ("!app", false, true),
            ("app in (web, db)", true, false),
            ("app in (web)", false, false),
            ("app notin (web)", true, true),
            ("app notin (db,web)", false, true),
            ("app=db,tier=backend", true, false),
            ("app=db, tier=frontend", false, false),
            ("replicas>2", true, false),
            ("replicas<3", false, false),
            ("app in (db),!missing,tier", true, false),
        ];
        for (selector, on_obj, on_bare) in cases {
            let s = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(s.matches(&obj), *on_obj, "{selector:?} on labelled object");
            assert_eq!(s.matches(&bare), *on_bare, "{selector:?} on bare object");
        }
    }

    #[test]
    fn label_selector_parses_set_clauses() {
        let s = LabelSelector::parse("a in (x,y),b notin (z)").unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::In("a".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("b".into(), vec!["z".into()]),
            ]
        );
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        for bad in [
            "a=b,",
            "=b",
            "a in x",
            "a in (x",
            "a within (x)",
            "a>x",
            "a!b",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let obj = labelled(json!({}));
        let cases = [
            ("metadata.name=x", true),
            ("metadata.name==y", false),
            ("metadata.name!=y", true),
            ("metadata.namespace=ns,metadata.name=x", true),
            ("metadata.namespace!=ns", false),
            ("", true),
        ];
        for (selector, want) in cases {
            assert_eq!(
                FieldSelector::parse(selector).unwrap().matches(&obj),
                want,
                "{selector}"
            );
        }
        let err = FieldSelector::parse("spec.nodeName=a").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
