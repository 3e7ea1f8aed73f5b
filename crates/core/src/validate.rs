//! Input validation. Every check names the field it is about, so that an API error can tell the
//! caller exactly what to fix.

use std::time::Duration;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::backoff::Backoff;
use crate::protocol::{FetchRequest, RegisterWorker, SubmitTask};
use crate::task::{NewTask, Progress};
use crate::time::Timestamp;

/// A field that failed validation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// A path such as `queue` or `tasks[3].payload`.
    pub field: String,
    pub message: String,
    /// The request fits the documented schema, but a rule the schema cannot state refuses it: one
    /// across fields, against the clock, within a mini-language (a cron expression, a time
    /// zone), or over a workflow's graph. The API answers these 422, and 400 to what does not fit
    /// the schema.
    pub unprocessable: bool,
}

impl ValidationError {
    /// A value outside what the schema allows.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into(), unprocessable: false }
    }

    /// A value the schema allows that a further rule refuses (see `unprocessable`).
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { unprocessable: true, ..ValidationError::new(field, message) }
    }

    /// Puts the field under a parent path: `queue` becomes `tasks[3].queue`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

/// The limits input is checked against, and the defaults for options a request leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_payload_bytes: usize,
    /// How deeply payloads and results may nest (arrays and objects): deeper JSON breaks common
    /// parsers on every page that shows it.
    pub max_json_depth: usize,
    pub max_name_len: usize,
    pub max_tags: usize,
    pub max_batch: usize,
    /// Most tasks in one workflow submitted as a graph.
    pub max_workflow_tasks: usize,
    pub max_fetch: u32,
    pub max_delay: Duration,
    pub max_attempts: u32,
    pub max_timeout: Duration,
    pub min_lease_timeout: Duration,
    pub max_lease_timeout: Duration,
    pub max_wait: Duration,
    pub default_max_attempts: u32,
    pub default_timeout: Duration,
    pub default_lease_timeout: Duration,
    pub default_backoff: Backoff,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1 << 20,
            max_json_depth: 64,
            max_name_len: 128,
            max_tags: 32,
            max_batch: 10_000,
            max_workflow_tasks: 100_000,
            max_fetch: 1_000,
            max_delay: Duration::from_secs(366 * 24 * 3600),
            max_attempts: 1_000,
            max_timeout: Duration::from_secs(7 * 24 * 3600),
            min_lease_timeout: Duration::from_millis(100),
            max_lease_timeout: Duration::from_secs(3600),
            max_wait: Duration::from_secs(60),
            default_max_attempts: 3,
            default_timeout: Duration::from_secs(300),
            default_lease_timeout: Duration::from_secs(30),
            default_backoff: Backoff::default(),
        }
    }
}

pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;

/// Checks a name (queue, kind, tag, key): not empty, not too long, no control characters.
pub fn check_name(field: &str, value: &str, limits: &Limits) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.chars().count() > limits.max_name_len {
        return Err(ValidationError::new(field, format!("must be at most {} characters", limits.max_name_len)));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_range<T: PartialOrd + std::fmt::Display>(field: &str, v: T, min: T, max: T) -> Result<T, ValidationError> {
    if v < min || v > max {
        return Err(ValidationError::new(field, format!("must be between {min} and {max}, got {v}")));
    }
    Ok(v)
}

fn check_ms(field: &str, ms: u64, min: Duration, max: Duration) -> Result<Duration, ValidationError> {
    let d = Duration::from_millis(ms);
    if d < min || d > max {
        return Err(ValidationError::new(
            field,
            format!("must be between {} and {} ms, got {ms}", min.as_millis(), max.as_millis()),
        ));
    }
    Ok(d)
}

impl SubmitTask {
    /// Checks every field and fills in defaults.
    pub fn validate(self, limits: &Limits, now: Timestamp) -> Result<NewTask, ValidationError> {
        check_name("queue", &self.queue, limits)?;
        check_name("kind", &self.kind, limits)?;
        let payload = match self.payload {
            Some(p) => p,
            None => RawValue::from_string("null".to_owned()).expect("null is JSON"),
        };
        if payload.get().len() > limits.max_payload_bytes {
            return Err(ValidationError::new(
                "payload",
                format!("is {} bytes; the limit is {}", payload.get().len(), limits.max_payload_bytes),
            ));
        }
        check_depth("payload", payload.get(), limits)?;
        let priority = check_range("priority", self.priority.unwrap_or(0), MIN_PRIORITY, MAX_PRIORITY)?;
        if self.delay_ms.is_some() && self.run_at.is_some() {
            return Err(ValidationError::unprocessable("run_at", "give either delay_ms or run_at, not both"));
        }
        let delay = check_ms("delay_ms", self.delay_ms.unwrap_or(0), Duration::ZERO, limits.max_delay)?;
        if let Some(run_at) = self.run_at
            && run_at > now.saturating_add(limits.max_delay)
        {
            return Err(ValidationError::unprocessable(
                "run_at",
                format!("is too far in the future: at most {} days ahead", limits.max_delay.as_secs() / 86_400),
            ));
        }
        let expires_at = match (self.expires_at, self.expires_in_ms) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::unprocessable(
                    "expires_at",
                    "give either expires_in_ms or expires_at, not both",
                ));
            }
            (Some(at), None) => Some(("expires_at", at)),
            (None, Some(ms)) => {
                let after = check_ms("expires_in_ms", ms, Duration::from_millis(1), limits.max_delay)?;
                Some(("expires_in_ms", now.saturating_add(after)))
            }
            (None, None) => None,
        };
        if let Some((field, at)) = expires_at {
            let due = self.run_at.unwrap_or_else(|| now.saturating_add(delay)).max(now);
            if at <= due {
                return Err(ValidationError::unprocessable(
                    field,
                    format!("is not after the time the task is due ({due})"),
                ));
            }
            if at > due.saturating_add(limits.max_delay) {
                return Err(ValidationError::unprocessable(
                    field,
                    format!(
                        "is too far ahead: at most {} days after the task is due",
                        limits.max_delay.as_secs() / 86_400
                    ),
                ));
            }
        }
        let expires_at = expires_at.map(|(_, at)| at);
        let max_attempts = check_range(
            "max_attempts",
            self.max_attempts.unwrap_or(limits.default_max_attempts),
            1,
            limits.max_attempts,
        )?;
        let default_timeout = limits.default_timeout.as_millis() as u64;
        let timeout = check_ms(
            "timeout_ms",
            self.timeout_ms.unwrap_or(default_timeout),
            Duration::from_millis(1),
            limits.max_timeout,
        )?;
        let default_lease = limits.default_lease_timeout.as_millis() as u64;
        let lease_timeout = check_ms(
            "lease_timeout_ms",
            self.lease_timeout_ms.unwrap_or(default_lease),
            limits.min_lease_timeout,
            limits.max_lease_timeout,
        )?;
        let backoff = match self.backoff {
            Some(b) => validate_backoff(b, limits)?,
            None => limits.default_backoff,
        };
        if let Some(key) = &self.idempotency_key {
            check_name("idempotency_key", key, limits)?;
        }
        let tags = self.tags.unwrap_or_default();
        if tags.len() > limits.max_tags {
            return Err(ValidationError::new("tags", format!("at most {} tags", limits.max_tags)));
        }
        for (i, tag) in tags.iter().enumerate() {
            check_name(&format!("tags[{i}]"), tag, limits)?;
        }
        let needs = crate::task::Needs {
            resources: self.resources.unwrap_or_default(),
            labels: self.labels.unwrap_or_default(),
            concurrency_key: self.concurrency_key,
            rate_key: self.rate_key,
        };
        crate::placement::check_needs("resources", &needs.resources, &needs.labels)?;
        for (field, key) in [("concurrency_key", &needs.concurrency_key), ("rate_key", &needs.rate_key)] {
            if let Some(key) = key {
                check_name(field, key, limits)?;
            }
        }
        Ok(NewTask {
            queue: self.queue,
            kind: self.kind,
            payload,
            priority,
            tags,
            idempotency_key: self.idempotency_key,
            run_at: self.run_at,
            delay,
            expires_at,
            max_attempts,
            backoff,
            timeout,
            lease_timeout,
            needs,
            traceparent: self.traceparent,
        })
    }
}

fn validate_backoff(b: Backoff, limits: &Limits) -> Result<Backoff, ValidationError> {
    if b.max < b.min {
        return Err(ValidationError::unprocessable("backoff.max_ms", "must be at least backoff.min_ms"));
    }
    if b.max > limits.max_delay {
        return Err(ValidationError::new("backoff.max_ms", "is longer than the longest allowed delay"));
    }
    if !(1.0..=100.0).contains(&b.multiplier) {
        return Err(ValidationError::new("backoff.multiplier", "must be between 1 and 100"));
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        return Err(ValidationError::new("backoff.jitter", "must be between 0 and 1"));
    }
    Ok(b)
}

/// Validates a batch: its size and each task, naming the task's index in errors.
pub fn validate_batch(
    tasks: Vec<SubmitTask>,
    limits: &Limits,
    now: Timestamp,
) -> Result<Vec<NewTask>, ValidationError> {
    if tasks.is_empty() {
        return Err(ValidationError::new("tasks", "must hold at least one task"));
    }
    if tasks.len() > limits.max_batch {
        return Err(ValidationError::new(
            "tasks",
            format!("at most {} tasks per batch, got {}", limits.max_batch, tasks.len()),
        ));
    }
    tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.validate(limits, now).map_err(|e| e.within(&format!("tasks[{i}]"))))
        .collect()
}

/// Most ids a fetch may list as finished (a worker's slots' worth, and then some).
pub const MAX_FINISHED: usize = 10_000;

impl FetchRequest {
    pub fn validate(&self, limits: &Limits) -> Result<Duration, ValidationError> {
        validate_queues(&self.queues, limits)?;
        check_range("limit", self.limit, 1, limits.max_fetch)?;
        if self.finished.len() > MAX_FINISHED {
            return Err(ValidationError::new("finished", format!("at most {MAX_FINISHED} task ids")));
        }
        if self.reports.len() > limits.max_batch {
            return Err(ValidationError::new("reports", format!("at most {} reports per fetch", limits.max_batch)));
        }
        check_ms("wait_ms", self.wait_ms, Duration::ZERO, limits.max_wait)
    }
}

impl RegisterWorker {
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        check_name("name", &self.name, limits)?;
        validate_queues(&self.queues, limits)?;
        check_range("concurrency", self.concurrency, 1, 100_000)?;
        if self.kinds.len() > 1000 {
            return Err(ValidationError::new("kinds", "at most 1000 kinds"));
        }
        for (i, kind) in self.kinds.iter().enumerate() {
            check_name(&format!("kinds[{i}]"), kind, limits)?;
            if self.kinds[..i].contains(kind) {
                return Err(ValidationError::new(format!("kinds[{i}]"), format!("{kind:?} is listed twice")));
            }
        }
        crate::placement::check_needs("capacity", &self.capacity, &self.labels)?;
        if let Some(kind) = self.schemas.keys().find(|k| !self.kinds.contains(k)) {
            return Err(ValidationError::unprocessable(
                format!("schemas.{kind}"),
                format!("a schema for {kind:?}, which is not one of its kinds"),
            ));
        }
        Ok(())
    }
}

fn validate_queues(queues: &[String], limits: &Limits) -> Result<(), ValidationError> {
    if queues.is_empty() {
        return Err(ValidationError::new("queues", "must name at least one queue"));
    }
    if queues.len() > 64 {
        return Err(ValidationError::new("queues", "at most 64 queues"));
    }
    for (i, q) in queues.iter().enumerate() {
        check_name(&format!("queues[{i}]"), q, limits)?;
        if queues[..i].contains(q) {
            return Err(ValidationError::new(format!("queues[{i}]"), format!("{q:?} is listed twice")));
        }
    }
    Ok(())
}

impl Progress {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(ValidationError::new("fraction", "must be between 0 and 1"));
        }
        if self.message.as_ref().is_some_and(|m| m.chars().count() > 4096) {
            return Err(ValidationError::new("message", "must be at most 4096 characters"));
        }
        Ok(())
    }
}

/// How deeply arrays and objects nest in a JSON text (0 for a scalar). One pass over the bytes,
/// no parsing: strings are skipped so brackets inside them do not count.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Refuses a payload or result that nests deeper than the limit.
pub fn check_depth(field: &str, json: &str, limits: &Limits) -> Result<(), ValidationError> {
    let depth = json_depth(json.as_bytes());
    if depth > limits.max_json_depth {
        return Err(ValidationError::new(
            field,
            format!("nests {depth} levels deep; the limit is {}", limits.max_json_depth),
        ));
    }
    Ok(())
}

/// Error messages from workers are kept, but not without bound.
pub fn truncate_error(mut error: String) -> String {
    const MAX: usize = 16 * 1024;
    if error.len() > MAX {
        let mut cut = MAX;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push('…');
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_nesting_outside_strings() {
        for (json, depth) in [
            ("1", 0),
            ("[]", 1),
            ("{\"a\":[1,{\"b\":[]}]}", 4),
            ("\"[[[[\"", 0),
            ("[\"\\\"]]]\"]", 1),
            ("{\"a\":{}}", 2),
        ] {
            assert_eq!(json_depth(json.as_bytes()), depth, "{json}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(json_depth(deep.as_bytes()), 10_000);
        let e = check_depth("payload", &deep, &Limits::default()).unwrap_err();
        assert_eq!(e.field, "payload");
    }

    fn submit(queue: &str, kind: &str) -> SubmitTask {
        SubmitTask { queue: queue.into(), kind: kind.into(), ..Default::default() }
    }

    #[test]
    fn defaults_fill_in_what_the_request_leaves_out() {
        let t = submit("q", "echo").validate(&Limits::default(), Timestamp::EPOCH).unwrap();
        assert_eq!(t.payload.get(), "null");
        assert_eq!(t.max_attempts, 3);
        assert_eq!(t.lease_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_task_expires_after_it_is_due_given_one_way() {
        let l = Limits::default();
        let now = Timestamp::from_micros(1_000_000_000);
        let ms = |n: u64| now.saturating_add(Duration::from_millis(n));
        let t = SubmitTask { expires_in_ms: Some(500), ..submit("q", "k") }.validate(&l, now).unwrap();
        assert_eq!(t.expires_at, Some(ms(500)), "relative to submission");
        let t = SubmitTask { expires_at: Some(ms(9)), ..submit("q", "k") }.validate(&l, now).unwrap();
        assert_eq!(t.expires_at, Some(ms(9)));
        let refused = |t: SubmitTask| t.validate(&l, now).unwrap_err();
        for (t, field) in [
            (SubmitTask { expires_at: Some(ms(9)), expires_in_ms: Some(9), ..submit("q", "k") }, "expires_at"),
            (SubmitTask { expires_at: Some(now), ..submit("q", "k") }, "expires_at"),
            (SubmitTask { delay_ms: Some(1_000), expires_in_ms: Some(1_000), ..submit("q", "k") }, "expires_in_ms"),
            (SubmitTask { run_at: Some(ms(1_000)), expires_at: Some(ms(999)), ..submit("q", "k") }, "expires_at"),
        ] {
            let e = refused(t);
            assert_eq!((e.field.as_str(), e.unprocessable), (field, true), "{e}");
        }
        let e = refused(SubmitTask { expires_in_ms: Some(0), ..submit("q", "k") });
        assert_eq!((e.field.as_str(), e.unprocessable), ("expires_in_ms", false), "outside the schema's range");
    }

    #[test]
    fn each_bad_field_is_named() {
        let l = Limits::default();
        let now = Timestamp::EPOCH;
        let cases: Vec<(SubmitTask, &str)> = vec![
            (submit("", "k"), "queue"),
            (submit("q\u{7}", "k"), "queue"),
            (submit("q", &"k".repeat(200)), "kind"),
            (SubmitTask { priority: Some(5000), ..submit("q", "k") }, "priority"),
            (SubmitTask { delay_ms: Some(u64::MAX), ..submit("q", "k") }, "delay_ms"),
            (SubmitTask { max_attempts: Some(0), ..submit("q", "k") }, "max_attempts"),
            (SubmitTask { timeout_ms: Some(0), ..submit("q", "k") }, "timeout_ms"),
            (SubmitTask { lease_timeout_ms: Some(1), ..submit("q", "k") }, "lease_timeout_ms"),
            (SubmitTask { tags: Some(vec!["ok".into(), "".into()]), ..submit("q", "k") }, "tags[1]"),
            (SubmitTask { idempotency_key: Some("\n".into()), ..submit("q", "k") }, "idempotency_key"),
        ];
        for (task, field) in cases {
            let err = task.validate(&l, now).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn an_oversized_payload_is_refused() {
        let l = Limits { max_payload_bytes: 10, ..Limits::default() };
        let payload = RawValue::from_string("\"0123456789\"".into()).unwrap();
        let err = SubmitTask { payload: Some(payload), ..submit("q", "k") }.validate(&l, Timestamp::EPOCH).unwrap_err();
        assert_eq!(err.field, "payload");
    }

    #[test]
    fn a_queue_listed_twice_is_refused() {
        let req = FetchRequest {
            queues: vec!["a".into(), "b".into(), "a".into()],
            limit: 2,
            wait_ms: 0,
            finished: vec![],
            reports: vec![],
        };
        assert_eq!(req.validate(&Limits::default()).unwrap_err().field, "queues[2]");
    }

    #[test]
    fn a_fetch_may_name_at_most_so_many_finished_tasks() {
        let ids = |n: usize| (0..n).map(|i| crate::TaskId::from_bytes((i as u128).to_be_bytes())).collect();
        let req =
            |n| FetchRequest { queues: vec!["a".into()], limit: 2, wait_ms: 0, finished: ids(n), reports: vec![] };
        assert!(req(MAX_FINISHED).validate(&Limits::default()).is_ok());
        assert_eq!(req(MAX_FINISHED + 1).validate(&Limits::default()).unwrap_err().field, "finished");
    }

    #[test]
    fn batch_errors_name_the_task_index() {
        let err =
            validate_batch(vec![submit("q", "k"), submit("q", "")], &Limits::default(), Timestamp::EPOCH).unwrap_err();
        assert_eq!(err.field, "tasks[1].kind");
        let err = validate_batch(vec![], &Limits::default(), Timestamp::EPOCH).unwrap_err();
        assert_eq!(err.field, "tasks");
    }
}
