//! Queues: list them with their counts; pause, resume, weigh and limit them.

use axum::Json;
use axum::extract::{Path, State};
use taskwarden_core::protocol::{QueueInfo, QueueList, QueueUpdate};
use taskwarden_core::validate::check_name;
use taskwarden_store::UpdateQueue;

use super::{ApiResult, AppState};
use crate::error::ApiJson;

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<QueueList>> {
    let now = s.clock.now();
    let mut queues = s.store.list_queues(now).await?;
    crate::scheduling::count_unschedulable(&*s.store, &mut queues, now).await?;
    Ok(Json(QueueList { queues }))
}

pub(super) async fn pause(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueInfo>> {
    update(s, name, Some(true), QueueUpdate::default()).await
}

pub(super) async fn resume(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueInfo>> {
    update(s, name, Some(false), QueueUpdate::default()).await
}

pub(super) async fn set(
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QueueUpdate>,
) -> ApiResult<Json<QueueInfo>> {
    body.validate()?;
    update(s, name, None, body).await
}

/// Changes the queue's settings and answers with its state afterwards.
async fn update(s: AppState, name: String, paused: Option<bool>, body: QueueUpdate) -> ApiResult<Json<QueueInfo>> {
    check_name("queue", &name, &s.config.limits)?;
    let now = s.clock.now();
    let (weight, limits) = (body.weight, body.limits);
    s.store.update_queue(UpdateQueue { queue: name.clone(), paused, weight, limits, now }).await?;
    let mut queues = s.store.list_queues(now).await?;
    crate::scheduling::count_unschedulable(&*s.store, &mut queues, now).await?;
    let info = queues.into_iter().find(|q| q.name == name).expect("a queue with settings is listed");
    Ok(Json(info))
}
