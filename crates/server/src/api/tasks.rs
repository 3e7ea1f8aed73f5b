//! Task endpoints for clients: submit, inspect, list, wait, cancel, retry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::protocol::{SubmitBatch, SubmitTask, TaskList};
use taskwarden_core::validate::{check_name, validate_batch};
use taskwarden_core::{Task, TaskState};
use taskwarden_store::{CancelTask, ListTasks, RetryTask, SubmitTasks, Submitted};

use super::{ApiResult, AppState, WaitQuery, until_finished};
use crate::error::{ApiError, ApiJson, ApiQuery, task_id};

pub(super) async fn submit(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SubmitTask>,
) -> ApiResult<impl IntoResponse> {
    let now = s.clock.now();
    let spec = req.validate(&s.config.limits, now)?;
    let p = SubmitTasks { tasks: vec![spec], idempotency_window: s.config.idempotency_window, now };
    let Submitted { task, created } = s.store.submit(p).await?.remove(0);
    // 201 for a new task, 200 when an idempotency key returned an earlier one.
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(task)))
}

pub(super) async fn submit_batch(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SubmitBatch>,
) -> ApiResult<impl IntoResponse> {
    let now = s.clock.now();
    let specs = validate_batch(req.tasks, &s.config.limits, now)?;
    let p = SubmitTasks { tasks: specs, idempotency_window: s.config.idempotency_window, now };
    let tasks: Vec<Task> = s.store.submit(p).await?.into_iter().map(|s| s.task).collect();
    Ok((StatusCode::CREATED, Json(TaskList { tasks, next_cursor: None })))
}

pub(super) async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    let mut task = s.store.get(task_id(&id)?).await?;
    crate::scheduling::explain(&*s.store, &mut task, s.clock.now()).await?;
    Ok(Json(task))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    queue: Option<String>,
    state: Option<TaskState>,
    kind: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<TaskList>> {
    let limits = &s.config.limits;
    for (field, value) in [("queue", &q.queue), ("kind", &q.kind), ("tag", &q.tag)] {
        if let Some(v) = value {
            check_name(field, v, limits)?;
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let before = match &q.cursor {
        Some(c) => Some(c.parse().map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))?),
        None => None,
    };
    let page =
        s.store.list(ListTasks { queue: q.queue, state: q.state, kind: q.kind, tag: q.tag, before, limit }).await?;
    Ok(Json(TaskList { tasks: page.tasks, next_cursor: page.next.map(|id| id.to_string()) }))
}

/// Long-polls until the task reaches a terminal state or the timeout passes; answers with the task
/// either way (the caller checks `state`).
pub(super) async fn wait(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Task>> {
    let id = task_id(&id)?;
    until_finished(&s, &q, || async { Ok(s.store.get(id).await?.state.is_terminal()) }).await?;
    Ok(Json(s.store.get(id).await?))
}

pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    let c = s.store.cancel(CancelTask { id: task_id(&id)?, now: s.clock.now() }).await?;
    Ok(Json(c.task))
}

pub(super) async fn retry(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    Ok(Json(s.store.retry(RetryTask { id: task_id(&id)?, now: s.clock.now() }).await?))
}
