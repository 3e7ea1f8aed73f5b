//! `GET /v1/events`: the event log, as a page of JSON or as a live Server-Sent Events stream.
//!
//! Both read the log forward from a position (`after`, or the `Last-Event-ID` a reconnecting
//! client sends), through the same filter. The stream reads a page, sends what matches, and when
//! it has caught up waits for the store to announce a change (or a short poll, for changes no
//! topic announces, and on PostgreSQL for a transaction that committed after its announcement)
//! before it reads again. Ids are the log's own, so a client that reconnects, to this node or to
//! any other of a PostgreSQL cluster, resumes exactly where it left off.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use taskwarden_core::TaskId;
use taskwarden_core::auth::Action;
use taskwarden_core::events::{EventFilter, EventId, EventList, EventType, StoredEvent};
use taskwarden_core::validate::check_name;
use taskwarden_store::{ReadEvents, StoreError, Topic};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};

/// Taken by the handlers that serve the event log or what is made of it (the per-minute
/// history, webhooks): on a server started with `--no-event-log` they answer 409, saying why,
/// instead of an empty log that looks like a quiet one.
pub(super) struct EventLogKept;

impl axum::extract::FromRequestParts<AppState> for EventLogKept {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut axum::http::request::Parts, s: &AppState) -> Result<Self, ApiError> {
        match s.config.event_log {
            true => Ok(EventLogKept),
            false => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "event_log_off",
                "this server keeps no event log (it was started with --no-event-log): no events, \
                 per-minute stats or webhook deliveries to serve",
            )),
        }
    }
}

/// Events read from the store per query of a JSON page.
const READ_PAGE: u32 = 500;
/// Events read from the store per query of a stream: a stream behind a busy log reads on at
/// once, and each read is a read transaction that starts with a cold page cache (the writer
/// has committed since), so fewer, larger reads (about 0.5 MB of events at most).
const STREAM_READ: u32 = 2048;
/// Most events one JSON page scans for matches before it answers with what it found (and a
/// `next` past what it scanned), so a rare filter cannot make one request read the whole log.
const SCAN_PER_REQUEST: usize = 20 * READ_PAGE as usize;
/// How often a caught-up stream looks again without an announcement.
const POLL: Duration = Duration::from_millis(250);
/// The least time between two reads of one stream that has caught up.
const SPACING: Duration = Duration::from_millis(50);
/// How long after a change is announced a caught-up stream reads it: the moment of a commit
/// belongs to the requests it answers (a parked worker's fetch handed the new task), which a
/// stream reading at once would compete with for the CPU.
const SETTLE: Duration = Duration::from_millis(5);
/// Most events in one chunk of a stream; the stream gives its thread back between chunks.
const CHUNK_EVENTS: usize = 256;
/// How long a stream with nothing to send stays silent before it sends a comment, so that
/// proxies and clients do not take it for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Start after this event id; `now` starts after the last event there is. Default: from the
    /// oldest event kept. A stream's `Last-Event-ID` header, when sent, wins.
    #[param(schema_with = after_schema)]
    after: Option<String>,
    /// Only events of tasks in this queue (and of this queue).
    #[param(schema_with = taskwarden_core::schema::name)]
    queue: Option<String>,
    /// Only events of tasks of this kind.
    #[param(schema_with = taskwarden_core::schema::name)]
    kind: Option<String>,
    /// Only events of this task.
    task: Option<TaskId>,
    /// Only events of this workflow and its tasks.
    workflow: Option<TaskId>,
    /// Only events of tasks with this tag.
    #[param(schema_with = taskwarden_core::schema::name)]
    tag: Option<String>,
    /// Only events of these types, comma-separated (`task.failed,workflow.failed`).
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = types_schema)]
    event_type: Option<String>,
    /// Most events on a JSON page, 1 to 1000 (default 100). Not used by a stream.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

fn after_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An event id (digits, or digits-digits), or now."))
        .pattern(Some("^(now|[0-9]{1,19}(-[0-9]{1,19})?)$"))
        .into()
}

fn types_schema() -> Schema {
    let one = EventType::ALL.iter().map(|t| t.as_str().replace('.', "\\.")).collect::<Vec<_>>().join("|");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Event types, comma-separated."))
        .pattern(Some(format!("^({one})(,({one}))*$")))
        .into()
}

/// Reads the event log: a JSON page, or with `Accept: text/event-stream` a live stream that
/// resumes from `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "listEvents",
    summary = "Read or follow the event log",
    description = "Every state change (task submitted, started, progress, succeeded, failed, retrying, lease_expired, released, cancelled, expired, retried; workflow started, succeeded, failed, cancelled, retried; worker joined; queue paused, resumed), oldest first, from `after`. With `Accept: text/event-stream` the answer is a Server-Sent Events stream that stays open and sends each event as it happens (`id:` the event id, `event:` its type, `data:` the event); a client that reconnects with `Last-Event-ID` misses nothing still kept. A token limited to some queues sees only their tasks' events.",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events (JSON), or the stream (text/event-stream).", content(
            (EventList = "application/json"),
            (String = "text/event-stream")
        )),
        (status = 409, description = "event_log_off: this server keeps no event log (--no-event-log).", body = taskwarden_core::protocol::ErrorBody)
    )
)]
pub(super) async fn events(
    State(s): State<AppState>,
    caller: Caller,
    _: EventLogKept,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    caller.may(&s, Action::Read, q.queue.as_deref())?;
    let filter = filter(&s, &caller, &q)?;
    let stream = headers.get(ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    let resume = headers.get("last-event-id").filter(|_| stream).and_then(|v| v.to_str().ok());
    let after = match resume.or(q.after.as_deref()) {
        None => EventId::START,
        Some("now") => s.store.last_event_id().await?,
        Some(id) => id
            .parse()
            .map_err(|e: String| ApiError::invalid(if resume.is_some() { "Last-Event-ID" } else { "after" }, e))?,
    };
    if stream {
        return Ok(follow(s, filter, after));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let found = read_matching(&s, &filter, after, limit as usize, SCAN_PER_REQUEST, READ_PAGE).await?;
    let events = found
        .events
        .iter()
        .map(StoredEvent::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Internal(format!("a stored event does not parse: {e}")))?;
    Ok(Json(EventList { events, next: found.next }).into_response())
}

fn filter(s: &AppState, caller: &Caller, q: &EventsQuery) -> Result<EventFilter, ApiError> {
    let limits = &s.config.limits;
    for (field, value) in [("queue", &q.queue), ("kind", &q.kind), ("tag", &q.tag)] {
        if let Some(v) = value {
            check_name(field, v, limits)?;
        }
    }
    let types = match &q.event_type {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|t| t.parse::<EventType>().map_err(|e| ApiError::invalid("type", e)))
            .collect::<Result<_, _>>()?,
    };
    Ok(EventFilter {
        queues: q.queue.iter().cloned().collect(),
        kinds: q.kind.iter().cloned().collect(),
        types,
        task: q.task,
        workflow: q.workflow,
        tag: q.tag.clone(),
        scope: caller.grant.queues.clone(),
    })
}

/// What one read of the log found.
struct Matching {
    events: Vec<StoredEvent>,
    /// Where to go on from: past everything scanned.
    next: EventId,
    /// Whether the scan reached the end of the log.
    caught_up: bool,
}

/// Up to `want` events after `after` that match, scanning at most `scan` events, `per_read` a
/// query.
async fn read_matching(
    s: &AppState,
    filter: &EventFilter,
    mut after: EventId,
    want: usize,
    scan: usize,
    per_read: u32,
) -> Result<Matching, ApiError> {
    let mut events = Vec::new();
    let mut scanned = 0;
    let everything = filter.is_everything();
    while scanned < scan {
        let page = s.store.read_stored_events(ReadEvents { after, limit: per_read }).await?;
        scanned += page.len();
        let full = page.len() == per_read as usize;
        for e in page {
            after = e.id;
            // Read only as far as the filter needs, and not at all for a reader of everything.
            if everything || e.head().is_ok_and(|head| filter.matches_head(&head)) {
                events.push(e);
                if events.len() == want {
                    return Ok(Matching { events, next: after, caught_up: false });
                }
            }
        }
        if !full {
            return Ok(Matching { events, next: after, caught_up: true });
        }
        // A store may answer a read on this thread (the embedded one does from memory, for the
        // log's end): give it back between reads to the requests waiting for it.
        tokio::task::yield_now().await;
    }
    Ok(Matching { events, next: after, caught_up: false })
}

/// The live stream: what matches after `after`, then each new event as it is written, until the
/// client goes or the server shuts down.
///
/// Written by hand rather than one `axum` SSE event per item: a chunk carries every event one
/// read found (up to [`CHUNK_EVENTS`]), formatted straight from the event's JSON, which has no
/// line breaks to split. Per event that saves a buffer, a scan for newlines and a body frame.
fn follow(s: AppState, filter: EventFilter, after: EventId) -> Response {
    struct Follow {
        s: AppState,
        filter: EventFilter,
        after: EventId,
        ready: VecDeque<StoredEvent>,
        topics: [tokio::sync::watch::Receiver<u64>; 3],
        last_read: tokio::time::Instant,
        /// When the client was last sent anything (a comment keeps an idle connection open).
        last_sent: tokio::time::Instant,
        /// Whether the last read reached the end of the log (else the next follows at once).
        caught_up: bool,
    }
    let topics = [Topic::Ready, Topic::Scheduled, Topic::Finished].map(|t| s.store.subscribe(t));
    let now = tokio::time::Instant::now();
    let state = Follow {
        s,
        filter,
        after,
        ready: VecDeque::new(),
        topics,
        last_read: now - SPACING,
        last_sent: now,
        caught_up: true,
    };
    let stream = futures_util::stream::unfold(state, |mut f| async move {
        loop {
            if !f.ready.is_empty() {
                let take = f.ready.len().min(CHUNK_EVENTS);
                let mut chunk = Vec::with_capacity(take * 256);
                for e in f.ready.drain(..take) {
                    write_sse(&mut chunk, &e);
                }
                f.last_sent = tokio::time::Instant::now();
                // A long backlog is sent chunk by chunk, giving the thread back between chunks to
                // the requests waiting for it.
                tokio::task::yield_now().await;
                return Some((Ok::<_, Infallible>(axum::body::Bytes::from(chunk)), f));
            }
            if f.last_sent.elapsed() >= KEEP_ALIVE {
                f.last_sent = tokio::time::Instant::now();
                return Some((Ok(axum::body::Bytes::from_static(b":\n\n")), f));
            }
            // Caught up, under a stream of changes: read at most this often, fewer and fuller
            // reads. Behind: read on at once.
            if f.caught_up {
                let now = tokio::time::Instant::now();
                tokio::time::sleep_until((f.last_read + SPACING).max(now + SETTLE)).await;
            }
            for t in &mut f.topics {
                t.borrow_and_update();
            }
            f.last_read = tokio::time::Instant::now();
            match read_matching(&f.s, &f.filter, f.after, STREAM_READ as usize, SCAN_PER_REQUEST, STREAM_READ).await {
                Ok(found) => {
                    f.after = found.next;
                    f.caught_up = found.caught_up;
                    if !found.events.is_empty() || !found.caught_up {
                        f.ready.extend(found.events);
                        continue;
                    }
                }
                // The store is down for a moment: try again after the poll, as a client would.
                Err(e) => tracing::debug!(error = ?e, "reading the event log for a stream failed"),
            }
            let [a, b, c] = &mut f.topics;
            tokio::select! {
                _ = a.changed() => {}
                _ = b.changed() => {}
                _ = c.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = f.s.shutdown.cancelled() => return None,
            }
        }
    });
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// One event in the Server-Sent Events format: `id`, `event` (its type) and `data` (the event as
/// one line of JSON: serde_json escapes the line breaks inside strings, and a store keeps the
/// JSON it wrote).
fn write_sse(out: &mut Vec<u8>, e: &StoredEvent) {
    let event_type = e.event_type().or_else(|| e.head().ok().map(|h| h.event_type));
    out.extend_from_slice(b"id: ");
    e.id.write_to(out);
    out.push(b'\n');
    if let Some(t) = event_type {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(t.as_str().as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    e.write_json(out);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use taskwarden_core::Timestamp;
    use taskwarden_core::events::{Event, EventId, EventType, NewEvent, StoredEvent};

    use super::write_sse;

    #[test]
    fn an_event_is_one_sse_message_whatever_its_strings_hold() {
        let event = Event {
            id: EventId { tx: 7, seq: 42 },
            event: NewEvent {
                event_type: EventType::TaskFailed,
                at: Timestamp::from_millis(1_800_000_000_000),
                queue: Some("q".into()),
                kind: None,
                task_id: None,
                workflow_id: None,
                attempt: Some(1),
                tags: vec![],
                data: serde_json::json!({"error": "line one\nline two\r\n\ndata: forged"}),
            },
        };
        let stored = StoredEvent::of(&event);
        let mut out = Vec::new();
        write_sse(&mut out, &stored);
        write_sse(&mut out, &stored);
        let text = String::from_utf8(out).unwrap();
        let messages: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(messages.len(), 2, "{text}");
        for m in messages {
            let lines: Vec<&str> = m.split('\n').collect();
            assert_eq!(lines[..2], ["id: 7-42", "event: task.failed"]);
            assert_eq!(lines.len(), 3, "one data line: {m}");
            let data: Event = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data, event);
        }
    }
}
