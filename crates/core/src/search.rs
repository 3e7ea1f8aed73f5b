//! The task search: what a list of tasks is filtered by, and the one-line query language people
//! type into the dashboard and `GET /v1/tasks?q=` (`state:failed queue:mail
//! payload.customer_id=42 error:"timed out"`).
//!
//! Terms are `key:value` (or `key=value`, spaces around `=` allowed), all of which must hold:
//!
//! - `state:`, `queue:`, `kind:`, `tag:`, `worker:` (the worker running it): equal to the value.
//! - `error:` the error text contains the value (any case).
//! - `after:` / `before:` created at or after / before a time: RFC 3339 (`2026-12-01T10:00:00Z`),
//!   a day (`2026-12-01`), or an age back from now (`15m`, `2h`, `7d`).
//! - `payload.a.b:` / `result.a.b:` the JSON value at that path equals the value: a number,
//!   `true`, `false`, or text (quote it, `"42"`, to match the text rather than the number).
//! - a bare task id finds that task; other bare words, together, are a phrase searched for in
//!   the error text.
//!
//! Values with spaces are quoted with `"`; `\"` and `\\` escape inside quotes.

use std::time::Duration;

use serde_json::Value;

use crate::id::TaskId;
use crate::task::TaskState;
use crate::time::Timestamp;

/// Most `payload.`/`result.` terms in one search.
pub const MAX_FIELDS: usize = 8;
/// Most segments in one field path.
pub const MAX_PATH: usize = 8;
/// Longest query, in characters.
pub const MAX_QUERY: usize = 1024;

/// What a task list is filtered by; every part set must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskSearch {
    pub id: Option<TaskId>,
    pub queue: Option<String>,
    pub state: Option<TaskState>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    /// The worker holding (or last holding) the task's lease.
    pub worker: Option<String>,
    /// Created at or after.
    pub after: Option<Timestamp>,
    /// Created before.
    pub before: Option<Timestamp>,
    /// Text the error contains, in any case.
    pub error: Option<String>,
    pub fields: Vec<FieldMatch>,
}

/// Which of a task's JSON documents a field term looks into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Payload,
    Result,
}

impl Document {
    pub fn as_str(self) -> &'static str {
        match self {
            Document::Payload => "payload",
            Document::Result => "result",
        }
    }
}

/// `payload.customer.id = 42`: the value at `path` in the document equals `value` (a number,
/// a boolean or a string; never an object, an array or null).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldMatch {
    pub document: Document,
    /// Object keys, outermost first; each made of letters, digits, `_` and `-`.
    pub path: Vec<String>,
    pub value: Value,
}

impl FieldMatch {
    /// The path as SQLite's JSON functions write it: `$.customer.id`. Safe to bind: segments
    /// hold no quotes or dots.
    pub fn json_path(&self) -> String {
        let mut p = String::from("$");
        for s in &self.path {
            p.push('.');
            p.push_str(s);
        }
        p
    }
}

impl TaskSearch {
    /// Whether any part is set.
    pub fn is_everything(&self) -> bool {
        *self == TaskSearch::default()
    }

    /// Whether answering needs more than an index can give (scanning rows and looking inside
    /// them): the kind, a tag, a worker, error text, a JSON field.
    pub fn scans(&self) -> bool {
        self.kind.is_some()
            || self.tag.is_some()
            || self.worker.is_some()
            || self.error.is_some()
            || !self.fields.is_empty()
    }

    /// Parses the query language (see the module's description); `now` is what ages count back from.
    pub fn parse(query: &str, now: Timestamp) -> Result<TaskSearch, SearchError> {
        if query.chars().count() > MAX_QUERY {
            return Err(SearchError(format!("the query is longer than {MAX_QUERY} characters")));
        }
        let mut search = TaskSearch::default();
        // Bare words that are not task ids make one phrase, searched for in the error text.
        let mut phrase = Vec::new();
        for term in terms(query)? {
            match term {
                Term { key: None, value, quoted } if quoted || value.parse::<TaskId>().is_err() => phrase.push(value),
                term => search.add(term, now)?,
            }
        }
        if !phrase.is_empty() {
            search.merge(TaskSearch { error: Some(phrase.join(" ")), ..TaskSearch::default() })?;
        }
        Ok(search)
    }

    /// Adds `other`'s parts; a part both set to different values is an error naming it.
    pub fn merge(&mut self, other: TaskSearch) -> Result<(), SearchError> {
        fn one<T: PartialEq + std::fmt::Debug>(name: &str, a: &mut Option<T>, b: Option<T>) -> Result<(), SearchError> {
            match (a.as_ref(), b) {
                (Some(x), Some(y)) if *x != y => Err(SearchError(format!("{name} is given twice: {x:?} and {y:?}"))),
                (_, Some(y)) => {
                    *a = Some(y);
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        one("id", &mut self.id, other.id)?;
        one("queue", &mut self.queue, other.queue)?;
        one("state", &mut self.state, other.state)?;
        one("kind", &mut self.kind, other.kind)?;
        one("tag", &mut self.tag, other.tag)?;
        one("worker", &mut self.worker, other.worker)?;
        one("after", &mut self.after, other.after)?;
        one("before", &mut self.before, other.before)?;
        one("error", &mut self.error, other.error)?;
        for f in other.fields {
            self.push_field(f)?;
        }
        Ok(())
    }

    fn push_field(&mut self, f: FieldMatch) -> Result<(), SearchError> {
        if self.fields.len() >= MAX_FIELDS {
            return Err(SearchError(format!("at most {MAX_FIELDS} payload or result terms")));
        }
        self.fields.push(f);
        Ok(())
    }

    fn add(&mut self, term: Term, now: Timestamp) -> Result<(), SearchError> {
        let Term { key, value, quoted } = term;
        let Some(key) = key else {
            // A bare task id (other bare words were gathered into a phrase by `parse`).
            let id = value.parse().map_err(SearchError)?;
            return self.merge(TaskSearch { id: Some(id), ..TaskSearch::default() });
        };
        if value.is_empty() {
            return Err(SearchError(format!("{key}: needs a value")));
        }
        let name = |v: String| -> Result<Option<String>, SearchError> {
            if v.chars().any(char::is_control) {
                return Err(SearchError(format!("{key}: must not contain control characters")));
            }
            Ok(Some(v))
        };
        let part = match key.as_str() {
            "id" => TaskSearch { id: Some(value.parse().map_err(SearchError)?), ..Default::default() },
            "queue" => TaskSearch { queue: name(value)?, ..Default::default() },
            "kind" => TaskSearch { kind: name(value)?, ..Default::default() },
            "tag" => TaskSearch { tag: name(value)?, ..Default::default() },
            "worker" => TaskSearch { worker: name(value)?, ..Default::default() },
            "error" => TaskSearch { error: name(value)?, ..Default::default() },
            "state" => TaskSearch { state: Some(value.parse().map_err(SearchError)?), ..Default::default() },
            "after" => TaskSearch { after: Some(time(&key, &value, now)?), ..Default::default() },
            "before" => TaskSearch { before: Some(time(&key, &value, now)?), ..Default::default() },
            _ => {
                let (document, rest) = if let Some(rest) = key.strip_prefix("payload.") {
                    (Document::Payload, rest)
                } else if let Some(rest) = key.strip_prefix("result.") {
                    (Document::Result, rest)
                } else {
                    return Err(SearchError(format!(
                        "unknown key {key:?}; expected state, queue, kind, tag, worker, error, after, before, id, payload.<path> or result.<path>"
                    )));
                };
                let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
                if path.len() > MAX_PATH {
                    return Err(SearchError(format!("{key}: at most {MAX_PATH} levels deep")));
                }
                if path
                    .iter()
                    .any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                {
                    return Err(SearchError(format!(
                        "{key}: a path is names of letters, digits, _ and - joined by dots"
                    )));
                }
                let value = if quoted { Value::String(value) } else { scalar(value) };
                self.push_field(FieldMatch { document, path, value })?;
                return Ok(());
            }
        };
        self.merge(part)
    }
}

/// An unquoted value: a number or boolean when it reads as one, else text.
fn scalar(v: String) -> Value {
    match v.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match serde_json::from_str::<serde_json::Number>(&v) {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(v),
        },
    }
}

/// An RFC 3339 time, a day, or an age back from `now` (`90s`, `15m`, `2h`, `7d`).
fn time(key: &str, v: &str, now: Timestamp) -> Result<Timestamp, SearchError> {
    if let Some(t) = Timestamp::from_rfc3339(v) {
        return Ok(t);
    }
    if let Some(t) = Timestamp::from_rfc3339(&format!("{v}T00:00:00Z")) {
        return Ok(t);
    }
    let unit = v.chars().last().unwrap_or(' ');
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    match v[..v.len() - unit.len_utf8()].parse::<u64>() {
        Ok(n) if seconds > 0 && n <= 100_000 => Ok(now.saturating_sub(Duration::from_secs(n * seconds))),
        _ => Err(SearchError(format!(
            "{key}: {v:?} is not a time: give 2026-12-01T10:00:00Z, 2026-12-01, or an age such as 15m, 2h, 7d"
        ))),
    }
}

/// What is wrong with a query, in words for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SearchError(pub String);

#[derive(Debug, PartialEq)]
struct Term {
    key: Option<String>,
    value: String,
    /// Whether the value was in quotes (so `"42"` stays text).
    quoted: bool,
}

/// Splits a query into terms: words, quoted strings, and `key:value` / `key = value` pairs.
fn terms(query: &str) -> Result<Vec<Term>, SearchError> {
    // First into words (a quoted string is one word, marked quoted), keeping `=` and `:` that
    // stand alone as their own words.
    let mut words: Vec<(String, bool)> = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(SearchError("a quote is not closed".into())),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => s.push(e),
                        _ => return Err(SearchError("inside quotes, \\ escapes only \" and \\".into())),
                    },
                    Some(c) => s.push(c),
                }
            }
            words.push((s, true));
            continue;
        }
        let mut s = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '"' {
                break;
            }
            s.push(c);
            chars.next();
        }
        words.push((s, false));
    }
    // Then into terms: `key:value`, `key=value`, `key:` `"value"`, `key` `=` `value`.
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (w, quoted) = &words[i];
        i += 1;
        if *quoted {
            out.push(Term { key: None, value: w.clone(), quoted: true });
            continue;
        }
        let split = w.find([':', '=']);
        let (key, rest) = match split {
            Some(at) => (&w[..at], &w[at + 1..]),
            None if words.get(i).is_some_and(|(n, q)| !q && (n == "=" || n == ":")) => {
                i += 1;
                (w.as_str(), "")
            }
            None => {
                out.push(Term { key: None, value: w.clone(), quoted: false });
                continue;
            }
        };
        if key.is_empty() {
            return Err(SearchError(format!("{w:?} has no key before its {:?}", &w[split.unwrap_or(0)..][..1])));
        }
        let key = plain_key(key);
        if !rest.is_empty() {
            out.push(Term { key: Some(key), value: rest.to_owned(), quoted: false });
            continue;
        }
        match words.get(i) {
            Some((v, q)) => {
                i += 1;
                out.push(Term { key: Some(key), value: v.clone(), quoted: *q });
            }
            None => return Err(SearchError(format!("{key}: needs a value"))),
        }
    }
    Ok(out)
}

/// Keys are matched in any case, but a payload path keeps its case (`payload.userId`).
fn plain_key(key: &str) -> String {
    match key.split_once('.') {
        Some((doc, path)) => format!("{}.{path}", doc.to_ascii_lowercase()),
        None => key.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_rfc3339("2026-12-05T12:00:00Z").unwrap()
    }

    fn parse(q: &str) -> TaskSearch {
        TaskSearch::parse(q, now()).unwrap_or_else(|e| panic!("{q:?}: {e}"))
    }

    fn err(q: &str) -> String {
        TaskSearch::parse(q, now()).expect_err(q).0
    }

    #[test]
    fn plain_terms_set_their_parts() {
        let s = parse("state:failed queue:mail kind:send.email tag:vip worker:w-1");
        assert_eq!(s.state, Some(TaskState::Failed));
        assert_eq!(s.queue.as_deref(), Some("mail"));
        assert_eq!(s.kind.as_deref(), Some("send.email"));
        assert_eq!(s.tag.as_deref(), Some("vip"));
        assert_eq!(s.worker.as_deref(), Some("w-1"));
        assert!(s.scans());
        assert!(!parse("state:ready queue:q").scans());
        assert!(parse("").is_everything());
    }

    #[test]
    fn payload_terms_read_numbers_booleans_and_text() {
        for q in
            ["payload.customer_id=42", "payload.customer_id = 42", "payload.customer_id: 42", "payload.customer_id:42"]
        {
            let s = parse(q);
            assert_eq!(
                s.fields,
                vec![FieldMatch {
                    document: Document::Payload,
                    path: vec!["customer_id".into()],
                    value: serde_json::json!(42)
                }],
                "{q}"
            );
        }
        let s = parse(r#"payload.a.b:"42" result.ok:true payload.name:"Ada Lovelace" payload.x:1.5 payload.y:abc"#);
        let values: Vec<_> = s.fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(values, serde_json::json!(["42", true, "Ada Lovelace", 1.5, "abc"]).as_array().unwrap().clone());
        assert_eq!(s.fields[0].json_path(), "$.a.b");
        assert_eq!(s.fields[1].document, Document::Result);
        assert_eq!(parse("Payload.userId:7").fields[0].path, vec!["userId".to_string()]);
    }

    #[test]
    fn bare_words_are_ids_or_error_text() {
        let id = "0192f0c1-7e2a-7c3b-9d4e-5f6a7b8c9d0e";
        assert_eq!(parse(id).id, Some(id.parse().unwrap()));
        assert_eq!(parse("timeout").error.as_deref(), Some("timeout"));
        // Several bare words are one phrase, not a conflict.
        assert_eq!(parse("connection reset by peer").error.as_deref(), Some("connection reset by peer"));
        assert_eq!(parse("state:failed card declined").error.as_deref(), Some("card declined"));
        assert_eq!(parse(r#"error:"timed out" state:failed"#).error.as_deref(), Some("timed out"));
        assert_eq!(parse(r#""say \"hi\"""#).error.as_deref(), Some(r#"say "hi""#));
    }

    #[test]
    fn times_are_rfc3339_days_or_ages() {
        assert_eq!(parse("after:2026-12-01T10:00:00Z").after, Timestamp::from_rfc3339("2026-12-01T10:00:00Z"));
        assert_eq!(parse("before:2026-12-01").before, Timestamp::from_rfc3339("2026-12-01T00:00:00Z"));
        assert_eq!(parse("after:2h").after, Timestamp::from_rfc3339("2026-12-05T10:00:00Z"));
        assert_eq!(parse("after:7d").after, Timestamp::from_rfc3339("2026-11-28T12:00:00Z"));
        assert!(err("after:soon").contains("is not a time"));
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        assert!(err("state:sleeping").contains("unknown state"));
        assert!(err("colour:red").contains("unknown key"));
        assert!(err("queue:").contains("needs a value"));
        assert!(err("queue:a queue:b").contains("given twice"));
        assert!(err(r#"error:"open"#).contains("not closed"));
        assert!(err("payload.a'b:1").contains("a path is names"));
        assert!(err("payload..a:1").contains("a path is names"));
        assert!(err(":x").contains("no key"));
        assert!(err(&"payload.a:1 ".repeat(MAX_FIELDS + 1)).contains("at most"));
        assert!(err(&"x".repeat(MAX_QUERY + 1)).contains("longer"));
        // The same value twice is not a conflict.
        assert_eq!(parse("queue:a queue:a").queue.as_deref(), Some("a"));
    }

    proptest::proptest! {
        /// Whatever is typed, parsing answers (a search or an error) without panicking.
        #[test]
        fn any_text_parses_or_is_refused(q in "[ -~]{0,64}") {
            let _ = TaskSearch::parse(&q, now());
        }
    }
}
