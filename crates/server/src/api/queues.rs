//! Queues: list them with their counts; pause, resume, weigh and limit them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{QueueInfo, QueueList, QueueUpdate};
use taskwarden_core::validate::check_name;
use taskwarden_store::UpdateQueue;

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};

/// `?create=true`: set up a queue that holds no tasks yet. Without it, changing a queue nobody
/// has used is refused, so a typo (`emial`) does not quietly make a queue of its own.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateQuery {
    #[serde(default)]
    create: bool,
}

/// The queues; a caller limited to some queues sees only those.
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<QueueList>> {
    caller.may(&s, Action::Read, None)?;
    let now = s.clock.now();
    let mut queues = s.store.list_queues(now).await?;
    queues.retain(|q| caller.grant.queues.contains(&q.name));
    crate::scheduling::count_unschedulable(&*s.store, &mut queues, now).await?;
    Ok(Json(QueueList { queues }))
}

pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, q, Some(true), QueueUpdate::default()).await
}

pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, q, Some(false), QueueUpdate::default()).await
}

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
