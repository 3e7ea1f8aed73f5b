//! Queues: list them with their counts; pause, resume, weigh and limit them.

use axum::Json;
use axum::extract::{Path, State};
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{QueueInfo, QueueList, QueueUpdate};
use taskwarden_core::validate::check_name;
use taskwarden_store::UpdateQueue;

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::ApiJson;

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
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, Some(true), QueueUpdate::default()).await
}

pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueInfo>> {
    update(s, caller, name, Some(false), QueueUpdate::default()).await
}

pub(super) async fn set(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QueueUpdate>,
) -> ApiResult<Json<QueueInfo>> {
    body.validate()?;
    update(s, caller, name, None, body).await
}

/// Changes the queue's settings and answers with its state afterwards.
async fn update(
    s: AppState,
    caller: Caller,
    name: String,
    paused: Option<bool>,
    body: QueueUpdate,
) -> ApiResult<Json<QueueInfo>> {
    caller.may(&s, Action::Operate, Some(&name))?;
    check_name("queue", &name, &s.config.limits)?;
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
