//! Cron schedules: create, list, pause, resume and delete. The leader fires them (see
//! `maintenance`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use taskwarden_core::cron::{CronInfo, CronList, CronSpec, Schedule};
use taskwarden_core::validate::check_name;
use taskwarden_store::{CreateCron, PauseCron, StoreError};

use super::{ApiResult, AppState};
use crate::error::{ApiError, ApiJson};

pub(super) async fn create(
    State(s): State<AppState>,
    ApiJson(spec): ApiJson<CronSpec>,
) -> ApiResult<impl IntoResponse> {
    let now = s.clock.now();
    let schedule = spec.validate(&s.config.limits, now)?;
    let next_run = schedule.next_after(now).expect("validate checked there is a next tick");
    let info = s.store.create_cron(CreateCron { spec, next_run, now }).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<CronList>> {
    Ok(Json(CronList { schedules: s.store.list_crons().await? }))
}

async fn find(s: &AppState, name: &str) -> ApiResult<CronInfo> {
    check_name("name", name, &s.config.limits)?;
    let found = s.store.list_crons().await?.into_iter().find(|c| c.spec.name == name);
    found.ok_or_else(|| ApiError::from(StoreError::NotFound))
}

pub(super) async fn pause(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<CronInfo>> {
    let cron = find(&s, &name).await?;
    Ok(Json(s.store.pause_cron(PauseCron { name, paused: true, next_run: cron.next_run_at }).await?))
}

/// Resumes from the next tick after now: ticks while paused never fire.
pub(super) async fn resume(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<CronInfo>> {
    let cron = find(&s, &name).await?;
    let schedule = Schedule::parse(&cron.spec.schedule, &cron.spec.timezone)?;
    let next_run = match cron.paused {
        true => schedule.next_after(s.clock.now()).unwrap_or(taskwarden_core::Timestamp::NEVER),
        false => cron.next_run_at,
    };
    Ok(Json(s.store.pause_cron(PauseCron { name, paused: false, next_run }).await?))
}

pub(super) async fn delete(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    check_name("name", &name, &s.config.limits)?;
    s.store.delete_cron(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
