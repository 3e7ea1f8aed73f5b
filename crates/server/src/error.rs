//! API errors, and the extractors that turn bad input into them. Every error response has the
//! same JSON shape ([`ErrorBody`]) and, where one field is to blame, names it.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use taskwarden_core::bounded::{Caps, with_caps};
use taskwarden_core::protocol::{ErrorBody, ErrorDetail};
use taskwarden_core::{TaskId, ValidationError};
use taskwarden_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    /// 404 naming what is missing: `no such workflow`.
    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    /// The store's error, a missing row being `what` (the store only says "not found").
    pub fn missing(what: &'static str) -> impl Fn(StoreError) -> ApiError {
        move |e| match e {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { field: Some(field.into()), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let message = e.to_string();
        if e.unprocessable {
            // Fits the schema; a rule beyond it refuses the request (see `ValidationError`).
            return ApiError {
                field: Some(e.field),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
            };
        }
        ApiError::invalid(e.field, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such task"),
            StoreError::LeaseLost => ApiError::new(StatusCode::CONFLICT, "lease_lost", e.to_string()),
            StoreError::Transition(t) => ApiError::new(StatusCode::CONFLICT, "invalid_state", t.to_string()),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable; retry later")
            }
            other => {
                // Database messages stay in the log, not in responses.
                tracing::error!(error = %other, "storage error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message, field: self.field } };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Names the field a deserialization error is about: the path to where it failed (which already
/// ends in an unknown field's name), plus the field's own name for a missing field.
fn describe<E: std::fmt::Display>(path: &serde_path_to_error::Path, inner: E, root: &str) -> ApiError {
    let message = inner.to_string();
    let mut field = path.to_string();
    if field == "." || field == "?" {
        field.clear();
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.split('`').next()
    {
        field = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
    }
    if field.is_empty() {
        field = root.to_owned();
    }
    ApiError::invalid(field, message)
}

/// A JSON request body, read within the body limit and parsed with errors that name the field.
/// Refuses before parsing a body that is too large, too slow to arrive or nested too deep, and
/// while parsing a list longer than its limit; refuses bytes after the JSON value.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let rules = req.extensions().get::<Arc<BodyRules>>().cloned().unwrap_or_default();
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Few large bodies are read at once, so a handful of concurrent big requests cannot take
        // the memory of many (each costs a few times its size while parsed). A body that does not
        // say its length may be large.
        let limit = rules.max_bytes;
        // The wait for a permit counts against the read timeout too, so callers stuck behind two
        // slow big bodies are answered 408 rather than held without end.
        // The permit is kept through parsing, which is where a big body costs most.
        let mut _permit = None;
        let read = async {
            _permit = match declared {
                Some(n) if n <= BIG_BODY => None,
                _ => Some(rules.big_bodies.clone().acquire_owned().await.expect("the semaphore is never closed")),
            };
            axum::body::to_bytes(req.into_body(), limit).await
        };
        let bytes = match tokio::time::timeout(rules.read_timeout, read).await {
            Err(_) => {
                return Err(ApiError {
                    field: Some("body".into()),
                    ..ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("the request body did not arrive within {} ms", rules.read_timeout.as_millis()),
                    )
                });
            }
            Ok(read) => read.map_err(|_| ApiError {
                field: Some("body".into()),
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body exceeds {limit} bytes"),
                )
            })?,
        };
        if bytes.is_empty() {
            return Err(ApiError::invalid("body", "a JSON body is required"));
        }
        // Every request body is an object; serde would otherwise read an array as the struct's
        // fields in order, and blame a confusing `[0]`.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        }
        // Deeper than any request needs: refused before parsing, so no parser (ours, or a
        // client's reading this back later) meets it. Requests wrap payloads in a few levels.
        let depth = taskwarden_core::validate::json_depth(&bytes);
        if depth > rules.max_depth.saturating_add(ENVELOPE_DEPTH) {
            return Err(ApiError::invalid(
                "body",
                format!("nests {depth} levels deep; payloads and results may nest at most {}", rules.max_depth),
            ));
        }
        with_caps(rules.caps, || parse(&bytes)).map(ApiJson)
    }
}

/// Parses a body. The fast path tracks no paths; only a body that fails is parsed again, with
/// tracking, to name the field. Both refuse bytes after the JSON value.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    // JSON does not tell 3 from 3.0, and neither does the OpenAPI document's `integer`: a
    // whole number written with a fraction or an exponent is read as the integer it is. Payloads
    // and results are left exactly as sent. Only a body refused for a float is read this second
    // way, and only a small one (the tree it builds costs several times the body).
    if first.to_string().starts_with("invalid type: floating point")
        && bytes.len() <= SMALL_BODY
        && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(bytes)
        && whole_numbers_as_integers(&mut v, false)
        && let Ok(value) = serde_json::from_value(v)
    {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().clone();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::invalid("body", format!("malformed JSON: {inner}"))
        } else {
            describe(&path, inner, "body")
        }
    })?;
    de.end().map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Rewrites floats with no fraction (`445.0`, `1e3`) as integers, outside `payload` and
/// `result` values; says whether it changed anything.
fn whole_numbers_as_integers(v: &mut serde_json::Value, mut changed: bool) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                *v = if f < 0.0 { Value::from(f as i64) } else { Value::from(f as u64) };
                changed = true;
            }
        }
        Value::Array(items) => {
            for item in items {
                changed = whole_numbers_as_integers(item, changed);
            }
        }
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                if key != "payload" && key != "result" {
                    changed = whole_numbers_as_integers(value, changed);
                }
            }
        }
        _ => {}
    }
    changed
}

/// The largest body whose whole numbers written as floats are read as integers.
const SMALL_BODY: usize = 1 << 20;

/// A body larger than this (or of unstated length) waits for one of a few permits to be read.
const BIG_BODY: usize = 1 << 20;

/// How request bodies are read, set as a request extension by the router.
pub struct BodyRules {
    pub max_bytes: usize,
    /// How deeply payloads and results may nest.
    pub max_depth: usize,
    /// How long lists in a body may be.
    pub caps: Caps,
    /// The longest a body may take to arrive once its headers have.
    pub read_timeout: Duration,
    /// Permits to read a big body; see `BIG_BODY`.
    pub big_bodies: Arc<tokio::sync::Semaphore>,
}

impl Default for BodyRules {
    fn default() -> Self {
        BodyRules {
            max_bytes: usize::MAX,
            max_depth: usize::MAX / 2,
            caps: Caps::NONE,
            read_timeout: Duration::from_secs(3600),
            big_bodies: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// The levels a request body wraps around its deepest payload (a workflow's node in its list in
/// the body is three); the payload itself is checked against the exact limit where it is read.
const ENVELOPE_DEPTH: usize = 4;

/// Query parameters, parsed with errors that name the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        let value =
            serde_path_to_error::deserialize(de).map_err(|e| describe(&e.path().clone(), e.into_inner(), "query"))?;
        Ok(ApiQuery(value))
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

/// Parses a task id from the path.
pub fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("id", format!("{raw:?} is not a task id (a UUID)")))
}
