//! Task endpoints for clients: submit, inspect, list, wait, cancel, retry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{ErrorBody, SubmitBatch, SubmitTask, TaskList};
use taskwarden_core::search::TaskSearch;
use taskwarden_core::validate::{check_name, validate_batch};
use taskwarden_core::{Task, TaskId, TaskState, ValidationError};
use taskwarden_store::{CancelTask, ListTasks, ReadTaskLogs, RetryTask, StoreError, SubmitTasks, Submitted};

use super::{ApiResult, AppState, WaitQuery, until_finished};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, task_id};
use crate::traces::TraceParentHeader;

/// A task as this caller may see it (see [`Task::redact`]).
pub(super) fn shown(caller: &Caller, mut task: Task) -> Task {
    task.redact(caller.sees_payloads());
    task
}

/// A conflict on submit is a re-used idempotency key: say so on the field.
fn key_conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError { field: Some("idempotency_key".into()), ..StoreError::Conflict(m).into() },
        other => other.into(),
    }
}

/// Loads a task the caller may take `action` on (its queue inside the caller's scope).
pub(super) async fn task_for(s: &AppState, caller: &Caller, action: Action, id: TaskId) -> ApiResult<Task> {
    caller.may(s, action, None)?;
    let task = s.store.get(id).await?;
    caller.may(s, action, Some(&task.queue))?;
    Ok(task)
}

#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "submitTask",
    summary = "Submit a task",
    request_body = SubmitTask,
    responses((status = 409, description = "conflict: the idempotency_key was used within the retention window for a task with a different queue, kind or payload; error.field is idempotency_key.", body = ErrorBody), (status = 201, description = "The task was created.", body = Task), (status = 200, description = "A task with the same idempotency_key was submitted within the retention window: that earlier task is returned and nothing new is created.", body = Task), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn submit(
    State(s): State<AppState>,
    caller: Caller,
    TraceParentHeader(traceparent): TraceParentHeader,
    ApiJson(req): ApiJson<SubmitTask>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Submit, Some(&req.queue))?;
    let now = s.clock.now();
    let spec = req.validate(&s.config.limits, now)?;
    s.schemas.current().await?.check(|| "payload".into(), &spec.kind, Some(&spec.payload))?;
    let mut tasks = vec![spec];
    let span = s.traces.submit(&mut tasks, traceparent);
    let p = SubmitTasks { tasks, idempotency_window: s.config.idempotency_window, now };
    let submitted = s.store.submit(p).await;
    span.end(submitted.as_ref().map(|t| t.first().map(|t| t.task.id)));
    let Submitted { task, created } = submitted.map_err(key_conflict)?.remove(0);
    // 201 for a new task, 200 when an idempotency key returned an earlier one.
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(shown(&caller, task))))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/batch",
    tag = "tasks",
    operation_id = "submitTaskBatch",
    summary = "Submit tasks atomically",
    description = "All tasks are accepted, or none.",
    request_body = SubmitBatch,
    responses((status = 409, description = "conflict: the idempotency_key was used within the retention window for a task with a different queue, kind or payload; error.field is idempotency_key.", body = ErrorBody), (status = 201, description = "All tasks were accepted (a task whose idempotency_key matched an earlier one is that earlier task), in the order of the request.", body = TaskList), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn submit_batch(
    State(s): State<AppState>,
    caller: Caller,
    TraceParentHeader(traceparent): TraceParentHeader,
    ApiJson(req): ApiJson<SubmitBatch>,
) -> ApiResult<impl IntoResponse> {
    caller.may_all(&s, Action::Submit, req.tasks.iter().map(|t| t.queue.as_str()))?;
    let now = s.clock.now();
    let mut specs = validate_batch(req.tasks, &s.config.limits, now)?;
    let schemas = s.schemas.current().await?;
    for (i, t) in specs.iter().enumerate() {
        schemas.check(|| format!("tasks[{i}].payload"), &t.kind, Some(&t.payload))?;
    }
    let span = s.traces.submit(&mut specs, traceparent);
    let p = SubmitTasks { tasks: specs, idempotency_window: s.config.idempotency_window, now };
    let submitted = s.store.submit(p).await;
    span.end(submitted.as_ref().map(|t| t.first().filter(|_| t.len() == 1).map(|t| t.task.id)));
    let submitted = submitted.map_err(key_conflict)?;
    let tasks: Vec<Task> = submitted.into_iter().map(|s| shown(&caller, s.task)).collect();
    Ok((StatusCode::CREATED, Json(TaskList { tasks, next_cursor: None })))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    operation_id = "getTask",
    summary = "Get a task, with its attempt history",
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task, with history filled in.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody))
)]
pub(super) async fn get(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    let mut task = task_for(&s, &caller, Action::Read, task_id(&id)?).await?;
    crate::scheduling::explain(&*s.store, &mut task, s.clock.now()).await?;
    Ok(Json(shown(&caller, task)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only tasks in this queue.
    #[param(schema_with = taskwarden_core::schema::name)]
    queue: Option<String>,
    /// Only tasks in this state.
    state: Option<TaskState>,
    /// Only tasks of this kind.
    #[param(schema_with = taskwarden_core::schema::name)]
    kind: Option<String>,
    /// Only tasks with this tag.
    #[param(schema_with = taskwarden_core::schema::name)]
    tag: Option<String>,
    /// A search in the query language, e.g. `state:failed payload.customer_id=42 error:"timed out"`
    /// (see docs/search.md): ANDed with the parameters above.
    #[param(max_length = 1024)]
    q: Option<String>,
    /// The previous page's next_cursor.
    #[param(value_type = Option<TaskId>)]
    cursor: Option<String>,
    /// Most tasks on the page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A page of tasks, newest first. A caller limited to some queues sees only tasks in them: a
/// page may then hold fewer tasks than `limit` and still have a next one.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "listTasks",
    summary = "List tasks",
    description = "Lists tasks newest first, optionally filtered. Unknown query parameters are refused with 400.",
    params(ListQuery),
    responses((status = 200, description = "A page of tasks, newest first; follow next_cursor for the next page (a search that looks into rows may answer a short page, even an empty one, with a next_cursor to go on from).", body = TaskList), (status = 422, description = "unprocessable: the query in q does not parse, or gives a term twice; error.field is q.", body = ErrorBody))
)]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<TaskList>> {
    let explicit = TaskSearch { queue: q.queue, state: q.state, kind: q.kind, tag: q.tag, ..TaskSearch::default() };
    let filter = search(&s, &caller, q.q.as_deref(), explicit)?;
    let (limit, before) = super::page(q.limit, q.cursor.as_deref())?;
    let page = s.store.list(ListTasks { filter, before, limit, window: Some(SEARCH_WINDOW) }).await?;
    let tasks =
        page.tasks.into_iter().filter(|t| caller.grant.queues.contains(&t.queue)).map(|t| shown(&caller, t)).collect();
    Ok(Json(TaskList { tasks, next_cursor: page.next.map(|id| id.to_string()) }))
}

/// Most rows one page of a search looks into (when it filters on more than queue, state and
/// time): a page answers in bounded time however rare the matches, and may come out short with
/// a cursor to search on from.
pub(super) const SEARCH_WINDOW: u32 = 10_000;

/// The filter of a list or bulk call: its query `q` parsed, with the call's own parameters, each
/// name checked, and the caller allowed to read its queue (and, for terms on payloads or
/// results, to see them).
pub(super) fn search(s: &AppState, caller: &Caller, q: Option<&str>, explicit: TaskSearch) -> ApiResult<TaskSearch> {
    // The query fits the schema (any text); what is wrong with it is a rule beyond the schema: 422.
    let invalid = |e: taskwarden_core::search::SearchError| ApiError::from(ValidationError::unprocessable("q", e.0));
    let mut filter = match q {
        Some(q) => TaskSearch::parse(q, s.clock.now()).map_err(invalid)?,
        None => TaskSearch::default(),
    };
    filter.merge(explicit).map_err(invalid)?;
    let limits = &s.config.limits;
    for (field, value) in
        [("queue", &filter.queue), ("kind", &filter.kind), ("tag", &filter.tag), ("worker", &filter.worker)]
    {
        if let Some(v) = value {
            check_name(field, v, limits)?;
        }
    }
    caller.may(s, Action::Read, filter.queue.as_deref())?;
    if !filter.fields.is_empty() && !caller.sees_payloads() {
        return Err(ApiError {
            field: Some("q".into()),
            ..ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may not see payloads or results, so it may not search them",
            )
        });
    }
    Ok(filter)
}

/// Long-polls until the task reaches a terminal state or the timeout passes; answers with the task
/// either way (the caller checks `state`).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/wait",
    tag = "tasks",
    operation_id = "waitTask",
    summary = "Wait for a task to finish",
    description = "Long-polls until the task reaches a terminal state (succeeded, failed, cancelled, expired) or the timeout passes.",
    params(("id" = TaskId, Path, description = "The task id (a UUID)."), super::WaitQuery),
    responses((status = 200, description = "The task: in a terminal state, or as it stands when the timeout passed or the server began shutting down (check state).", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody))
)]
pub(super) async fn wait(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Task>> {
    let id = task_id(&id)?;
    task_for(&s, &caller, Action::Read, id).await?;
    until_finished(&s, &q, || async { Ok(s.store.get(id).await?.state.is_terminal()) }).await?;
    Ok(Json(shown(&caller, s.store.get(id).await?)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    tag = "tasks",
    operation_id = "cancelTask",
    summary = "Cancel a task",
    description = "A scheduled or ready task is cancelled at once; a running task gets cancel_requested, which its worker sees on its next heartbeat.",
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task after the request: cancelled, or still running with cancel_requested set until its worker stops.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "invalid_state: the task's state does not allow this change. (It has already finished.)", body = ErrorBody))
)]
pub(super) async fn cancel(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    let id = task_for(&s, &caller, Action::Operate, task_id(&id)?).await?.id;
    let c = s.store.cancel(CancelTask { id, now: s.clock.now() }).await?;
    caller.audit(&s, "task.cancel", id.to_string()).await;
    Ok(Json(shown(&caller, c.task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/retry",
    tag = "tasks",
    operation_id = "retryTask",
    summary = "Retry a failed, cancelled or expired task by hand",
    description = "Puts a failed (dead-lettered), cancelled or expired task back in its queue with a fresh attempt budget (an expired one without its expires_at).",
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task, ready again.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "invalid_state: the task's state does not allow this change. (Only failed, cancelled and expired tasks can be retried.)", body = ErrorBody))
)]
pub(super) async fn retry(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    let id = task_for(&s, &caller, Action::Operate, task_id(&id)?).await?.id;
    let task = s.store.retry(RetryTask { id, now: s.clock.now() }).await?;
    caller.audit(&s, "task.retry", id.to_string()).await;
    Ok(Json(shown(&caller, task)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogsQuery {
    /// Lines after this one (its `seq`); default 0, from the first.
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    after: Option<u64>,
    /// Most lines, 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// When there is no line after `after` yet and the task has not finished, wait up to this
    /// long for one, in milliseconds (default 0: answer at once); at most 60000 by default.
    #[param(minimum = 0, maximum = 60_000)]
    timeout_ms: Option<u64>,
}

/// How often a waiting log read looks for new lines (they arrive with heartbeats, which no
/// store topic announces).
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The lines the task's handler logged, every attempt's, oldest first. Shown to every token that
/// may read the task's queue, as its error is: handlers should not log secrets.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/logs",
    tag = "tasks",
    operation_id = "taskLogs",
    summary = "Read a task's log",
    description = "The lines the task's handlers logged (`ctx.log`), with the attempt and time of each, oldest first. Workers send them with heartbeats and outcomes; at most 1,000 lines or 256 KiB are kept per attempt. With timeout_ms, waits for a line after `after` (long poll) unless the task has finished: follow a log by reading again from `next` until `finished` is true and no line came.",
    params(("id" = TaskId, Path, description = "The task id (a UUID)."), LogsQuery),
    responses((status = 200, description = "A page of the task's log.", body = taskwarden_core::task_logs::TaskLogPage), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 403, description = "forbidden: the token may not read this queue.", body = ErrorBody))
)]
pub(super) async fn logs(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Json<taskwarden_core::task_logs::TaskLogPage>> {
    let id = task_id(&id)?;
    // Subscribed before the task is read, so a finish after the read is not missed.
    let mut finished_topic = s.store.subscribe(taskwarden_store::Topic::Finished);
    let mut task = task_for(&s, &caller, Action::Read, id).await?;
    let after = q.after.unwrap_or(0);
    if after > taskwarden_core::bounded::MAX_SAFE_INTEGER {
        return Err(ApiError::invalid("after", "must be at most 9007199254740991 (2^53 - 1)"));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let wait = std::time::Duration::from_millis(q.timeout_ms.unwrap_or(0));
    if wait > s.config.limits.max_wait {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!("must be at most {} ms", s.config.limits.max_wait.as_millis()),
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        finished_topic.borrow_and_update();
        let lines = s.store.task_logs(ReadTaskLogs { task_id: id, after, limit }).await?;
        let finished = task.state.is_terminal();
        let now = tokio::time::Instant::now();
        if !lines.is_empty() || finished || now >= deadline || s.shutdown.is_cancelled() {
            let next = lines.last().map_or(after, |l| l.seq);
            return Ok(Json(taskwarden_core::task_logs::TaskLogPage { lines, next, finished }));
        }
        tokio::select! {
            _ = finished_topic.changed() => task = s.store.get(id).await?,
            _ = tokio::time::sleep(LOG_POLL.min(deadline - now)) => {}
            _ = s.shutdown.cancelled() => {}
        }
    }
}
