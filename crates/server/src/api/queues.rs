//! Queues: list them with their counts; pause, resume, weigh and limit them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{ErrorBody, QueueInfo, QueueList, QueueUpdate};
use taskwarden_core::validate::check_name;
use taskwarden_store::UpdateQueue;

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};

/// `?create=true`: set up a queue that holds no tasks yet. Without it, changing a queue nobody
/// has used is refused, so a typo (`emial`) does not quietly make a queue of its own.
#[derive(serde::Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CreateQuery {
    /// Set up the queue if nobody has used it yet (without it: 404 for an unknown queue).
    #[serde(default)]
    create: bool,
}

/// The queues; a caller limited to some queues sees only those.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    operation_id = "listQueues",
    summary = "List queues with their counts",
    description = "Every queue that holds unfinished or dead-lettered tasks, or has been paused, by name.",
    responses((status = 200, description = "The queues.", body = QueueList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<QueueList>> {
    caller.may(&s, Action::Read, None)?;
    let now = s.clock.now();
    let mut queues = s.store.list_queues(now).await?;
    queues.retain(|q| caller.grant.queues.contains(&q.name));
    crate::scheduling::count_unschedulable(&*s.store, &mut queues, now).await?;
    Ok(Json(QueueList { queues }))
}

#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    tag = "queues",
    operation_id = "pauseQueue",
    summary = "Pause a queue: its tasks stay and submits are still accepted, but nothing is leased from it until it is resumed",
    params(("name" = String, Path, description = "The queue's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), CreateQuery),
    responses((status = 200, description = "The queue after the change.", body = QueueInfo), (status = 404, description = "not_found: no such queue (no tasks, no settings, no activity in the last hour); add ?create=true to set it up before its first task.", body = ErrorBody))
)]
pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, q, Some(true), QueueUpdate::default()).await
}

#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    tag = "queues",
    operation_id = "resumeQueue",
    summary = "Resume a paused queue; waiting workers are woken at once",
    params(("name" = String, Path, description = "The queue's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), CreateQuery),
    responses((status = 200, description = "The queue after the change.", body = QueueInfo), (status = 404, description = "not_found: no such queue (no tasks, no settings, no activity in the last hour); add ?create=true to set it up before its first task.", body = ErrorBody))
)]
pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, q, Some(false), QueueUpdate::default()).await
}

#[utoipa::path(
    patch,
    path = "/v1/queues/{name}",
    tag = "queues",
    operation_id = "updateQueue",
    summary = "Change a queue's settings (weight, limits)",
    description = "A worker that serves several queues takes from them in proportion to their weights while all have work.",
    request_body = QueueUpdate,
    params(("name" = String, Path, description = "The queue's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"), CreateQuery),
    responses((status = 200, description = "The queue after the change.", body = QueueInfo), (status = 404, description = "not_found: no such queue (no tasks, no settings, no activity in the last hour); add ?create=true to set it up before its first task.", body = ErrorBody))
)]
pub(super) async fn set(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<QueueUpdate>,
) -> ApiResult<Json<QueueInfo>> {
    body.validate()?;
    update(s, caller, name, q, None, body).await
}

/// Forgets an empty queue's settings, so it is listed no more once idle. Refused while the queue
/// holds tasks that are waiting or running.
#[utoipa::path(
    delete,
    path = "/v1/queues/{name}",
    tag = "queues",
    operation_id = "removeQueue",
    summary = "Forget an empty queue's settings",
    description = "Removes the queue's pause, weight and limits, so it is no longer listed once idle. Refused while it holds ready, scheduled or running tasks.",
    params(("name" = String, Path, description = "The queue's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 204, description = "The settings are gone."), (status = 404, description = "not_found: no such queue, or it has no settings to forget.", body = ErrorBody), (status = 409, description = "queue_not_empty: it holds ready, scheduled or running tasks.", body = ErrorBody))
)]
pub(super) async fn remove(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.may(&s, Action::Operate, Some(&name))?;
    check_name("queue", &name, &s.config.limits)?;
    let queues = s.store.list_queues(s.clock.now()).await?;
    let Some(queue) = queues.into_iter().find(|q| q.name == name) else {
        return Err(ApiError::not_found("queue"));
    };
    if queue.ready + queue.scheduled + queue.running > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "queue_not_empty",
            format!(
                "queue {name:?} holds {} ready, {} scheduled and {} running tasks: cancel them or let them finish first",
                queue.ready, queue.scheduled, queue.running
            ),
        ));
    }
    s.store.remove_queue(&name).await.map_err(ApiError::missing("queue settings"))?;
    caller.audit(&s, "queue.remove", name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the queue's settings and answers with its state afterwards.
async fn update(
    s: AppState,
    caller: Caller,
    name: String,
    q: CreateQuery,
    paused: Option<bool>,
    body: QueueUpdate,
) -> ApiResult<Json<QueueInfo>> {
    caller.may(&s, Action::Operate, Some(&name))?;
    check_name("queue", &name, &s.config.limits)?;
    if !q.create && !s.store.list_queues(s.clock.now()).await?.iter().any(|known| known.name == name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no such queue {name:?}: it holds no tasks, has no settings and saw no activity lately; \
                 to set it up before its first task, add ?create=true (CLI: --create)"
            ),
        ));
    }
    let action = match paused {
        Some(true) => "queue.pause",
        Some(false) => "queue.resume",
        None => "queue.set",
    };
    let now = s.clock.now();
    let (weight, limits) = (body.weight, body.limits);
    s.store.update_queue(UpdateQueue { queue: name.clone(), paused, weight, limits, now }).await?;
    let mut queues = s.store.list_queues(now).await?;
    crate::scheduling::count_unschedulable(&*s.store, &mut queues, now).await?;
    let info = queues.into_iter().find(|q| q.name == name).expect("a queue with settings is listed");
    caller.audit(&s, action, name).await;
    Ok(Json(info))
}
