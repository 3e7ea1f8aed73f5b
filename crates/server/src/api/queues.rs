//! Queues: list them with their counts; pause and resume them.

use axum::Json;
use axum::extract::{Path, State};
use taskwarden_core::protocol::{QueueInfo, QueueList};
use taskwarden_core::validate::check_name;
use taskwarden_store::PauseQueue;

use super::{ApiResult, AppState};

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<QueueList>> {
    Ok(Json(QueueList { queues: s.store.list_queues(s.clock.now()).await? }))
}

pub(super) async fn pause(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueInfo>> {
    set_paused(s, name, true).await
}

pub(super) async fn resume(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<QueueInfo>> {
    set_paused(s, name, false).await
}

/// Pauses or resumes the queue and answers with its state afterwards.
async fn set_paused(s: AppState, name: String, paused: bool) -> ApiResult<Json<QueueInfo>> {
    check_name("queue", &name, &s.config.limits)?;
    let now = s.clock.now();
    s.store.pause_queue(PauseQueue { queue: name.clone(), paused, now }).await?;
    let queues = s.store.list_queues(now).await?;
    let info = queues.into_iter().find(|q| q.name == name);
    Ok(Json(info.unwrap_or_else(|| QueueInfo { paused, ..QueueInfo::empty(name) })))
}
