//! The JSON Schemas workers register for their kinds' payloads: compiled once per node, checked
//! at every submit, so a payload that does not match is refused with 422 naming its JSON path
//! (`payload.url: required`) and never reaches a worker.
//!
//! Each node keeps the compiled schemas and re-reads the store's at most once per
//! [`REFRESH`] (at once after a worker registered with this node), so a schema registered on
//! one node is in force on the others within that time. A submit of a kind without a schema
//! costs one map lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{PatternOptions, Validator};
use serde_json::Value;
use serde_json::value::RawValue;
use taskwarden_core::ValidationError;
use taskwarden_store::{Store, StoreError};
use tokio::sync::RwLock;

/// How stale a node's schemas may be.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// Compiles a schema a worker registers for `kind`; a schema that is not valid JSON Schema (or
/// refers to another document, which is not fetched) is refused naming `schemas.<kind>`.
pub(crate) fn compile(kind: &str, schema: &Value) -> Result<Validator, ValidationError> {
    jsonschema::options()
        // Linear-time regular expressions: a registered `pattern` cannot make a submit backtrack.
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map_err(|e| {
            ValidationError::unprocessable(format!("schemas.{kind}"), format!("not a usable JSON Schema: {e}"))
        })
}

/// The compiled schemas in force, by kind.
#[derive(Default)]
pub(crate) struct Schemas {
    by_kind: HashMap<String, Compiled>,
}

struct Compiled {
    /// The schema's text, to recompile only what changed.
    text: String,
    validator: Arc<Validator>,
}

impl Schemas {
    /// Checks a payload of `kind` against its schema, if it has one. `field` names the payload
    /// (`payload`, `tasks[3].payload`); it is built only on a refusal.
    pub(crate) fn check(
        &self,
        field: impl FnOnce() -> String,
        kind: &str,
        payload: Option<&RawValue>,
    ) -> Result<(), ValidationError> {
        let Some(schema) = self.by_kind.get(kind) else { return Ok(()) };
        let value: Result<Value, _> = payload.map_or(Ok(Value::Null), |raw| serde_json::from_str(raw.get()));
        let value = match value {
            Ok(value) => value,
            Err(e) => return Err(ValidationError::new(field(), e.to_string())),
        };
        let Some(error) = schema.validator.iter_errors(&value).next() else { return Ok(()) };
        let mut path = field();
        for segment in error.instance_path().iter() {
            push_segment(&mut path, &segment);
        }
        let message = match error.kind() {
            ValidationErrorKind::Required { property } => {
                push_key(&mut path, property.as_str().unwrap_or_default());
                "required".to_owned()
            }
            _ => error.to_string(),
        };
        Err(ValidationError::unprocessable(path, format!("{message} (the schema of kind {kind:?})")))
    }
}

/// `.url` for a plain key, `["a b"]` for any other, `[3]` for an index.
fn push_segment(path: &mut String, segment: &LocationSegment<'_>) {
    match segment {
        LocationSegment::Property(key) => push_key(path, key),
        LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
    }
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match plain {
        true => {
            path.push('.');
            path.push_str(key);
        }
        false => path.push_str(&format!("[{}]", Value::from(key))),
    }
}

/// One node's view of the schemas in force.
pub(crate) struct PayloadSchemas {
    store: Arc<dyn Store>,
    current: RwLock<(Option<Instant>, Arc<Schemas>)>,
}

impl PayloadSchemas {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        PayloadSchemas { store, current: RwLock::new((None, Arc::default())) }
    }

    /// The schemas in force, re-read from the store when older than [`REFRESH`].
    pub(crate) async fn current(&self) -> Result<Arc<Schemas>, StoreError> {
        {
            let current = self.current.read().await;
            if current.0.is_some_and(|at| at.elapsed() < REFRESH) {
                return Ok(current.1.clone());
            }
        }
        let mut current = self.current.write().await;
        if current.0.is_some_and(|at| at.elapsed() < REFRESH) {
            return Ok(current.1.clone()); // another call re-read them meanwhile
        }
        let rows = self.store.kind_schemas().await?;
        let mut by_kind = HashMap::with_capacity(rows.len());
        for row in rows {
            let known = current.1.by_kind.get(&row.kind).filter(|c| c.text == row.schema);
            let validator = match known {
                Some(c) => c.validator.clone(),
                None => {
                    let parsed: Value = serde_json::from_str(&row.schema)
                        .map_err(|e| StoreError::Internal(format!("the schema of kind {:?}: {e}", row.kind)))?;
                    match compile(&row.kind, &parsed) {
                        Ok(v) => Arc::new(v),
                        Err(e) => {
                            // Checked when registered; a newer library might read it otherwise.
                            tracing::warn!(kind = %row.kind, error = %e, "a registered payload schema no longer compiles; not checked");
                            continue;
                        }
                    }
                }
            };
            by_kind.insert(row.kind, Compiled { text: row.schema, validator });
        }
        *current = (Some(Instant::now()), Arc::new(Schemas { by_kind }));
        Ok(current.1.clone())
    }

    /// Makes the next call re-read the store (after a worker registered schemas here).
    pub(crate) async fn changed(&self) {
        self.current.write().await.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas(kind: &str, schema: Value) -> Schemas {
        let validator = Arc::new(compile(kind, &schema).unwrap());
        let by_kind = HashMap::from([(kind.to_owned(), Compiled { text: schema.to_string(), validator })]);
        Schemas { by_kind }
    }

    fn check(s: &Schemas, kind: &str, payload: &str) -> Result<(), ValidationError> {
        let raw = RawValue::from_string(payload.to_owned()).unwrap();
        s.check(|| "payload".to_owned(), kind, Some(&raw))
    }

    #[test]
    fn a_missing_property_is_named_by_its_path() {
        let s = schemas(
            "fetch",
            json!({"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string"},
                "headers": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "odd": {"type": "object", "required": ["a b"]}
            }}),
        );
        assert!(check(&s, "fetch", r#"{"url": "https://example.com"}"#).is_ok());
        let e = check(&s, "fetch", "{}").unwrap_err();
        assert_eq!((e.field.as_str(), e.unprocessable), ("payload.url", true));
        assert!(e.message.starts_with("required"), "{}", e.message);
        let e = check(&s, "fetch", r#"{"url": "u", "headers": [{"name": "a"}, {}]}"#).unwrap_err();
        assert_eq!(e.field, "payload.headers[1].name");
        let e = check(&s, "fetch", r#"{"url": 7}"#).unwrap_err();
        assert_eq!(e.field, "payload.url");
        assert!(e.message.contains("string"), "{}", e.message);
        let e = check(&s, "fetch", r#"{"url": "u", "odd": {}}"#).unwrap_err();
        assert_eq!(e.field, r#"payload.odd["a b"]"#);
        // No payload is null, which an object schema refuses.
        let e = s.check(|| "tasks[2].payload".into(), "fetch", None).unwrap_err();
        assert_eq!(e.field, "tasks[2].payload");
    }

    #[test]
    fn kinds_without_a_schema_take_any_payload() {
        let s = schemas("fetch", json!(false));
        assert!(check(&s, "echo", "[1, 2]").is_ok());
        assert!(check(&s, "fetch", "{}").is_err(), "false refuses everything");
    }

    #[test]
    fn schemas_that_cannot_be_used_are_refused_naming_the_kind() {
        for bad in [json!({"type": 5}), json!({"$ref": "https://example.com/s.json"}), json!({"pattern": "("})] {
            let e = compile("fetch", &bad).err().unwrap_or_else(|| panic!("{bad} compiled"));
            assert_eq!((e.field.as_str(), e.unprocessable), ("schemas.fetch", true), "{bad}");
        }
    }

    #[test]
    fn patterns_run_in_linear_time() {
        // Catastrophic for a backtracking engine: (a+)+$ against "aaaa…b".
        let s = schemas("k", json!({"type": "string", "pattern": "^(a+)+$"}));
        let long = format!("\"{}b\"", "a".repeat(100_000));
        assert!(check(&s, "k", &long).is_err());
    }
}
