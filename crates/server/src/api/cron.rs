//! Cron schedules: create, list, pause, resume and delete. The leader fires them (see
//! `maintenance`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use taskwarden_core::Task;
use taskwarden_core::auth::Action;
use taskwarden_core::cron::{CronChange, CronInfo, CronList, CronSpec, Schedule};
use taskwarden_core::protocol::ErrorBody;
use taskwarden_core::validate::check_name;
use taskwarden_store::{CreateCron, PauseCron, SubmitTasks, UpdateCron};

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};

#[utoipa::path(
    post,
    path = "/v1/cron",
    tag = "cron",
    operation_id = "createCron",
    summary = "Create a cron schedule",
    description = "Each tick submits the task template, once, however many server nodes run; the task's idempotency key is cron/{name}/{tick in microseconds}.",
    request_body = CronSpec,
    responses((status = 201, description = "The schedule, with its first tick.", body = CronInfo), (status = 409, description = "conflict: a schedule by that name exists.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(spec): ApiJson<CronSpec>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Operate, Some(&spec.task.queue))?;
    let now = s.clock.now();
    let schedule = spec.validate(&s.config.limits, now)?;
    check_payload(&s, &spec).await?;
    let next_run = schedule.next_after(now).expect("validate checked there is a next tick");
    let info = s.store.create_cron(CreateCron { spec, next_run, now }).await?;
    caller.audit(&s, "cron.create", info.spec.name.clone()).await;
    Ok((StatusCode::CREATED, Json(info)))
}

/// The schedules; a caller limited to some queues sees those that submit to one of them.
#[utoipa::path(
    get,
    path = "/v1/cron",
    tag = "cron",
    operation_id = "listCron",
    summary = "List cron schedules",
    responses((status = 200, description = "Every schedule, by name.", body = CronList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<CronList>> {
    caller.may(&s, Action::Read, None)?;
    let mut schedules = s.store.list_crons().await?;
    schedules.retain(|c| caller.grant.queues.contains(&c.spec.task.queue));
    if !caller.sees_payloads() {
        for c in &mut schedules {
            c.spec.task.payload = None;
        }
    }
    Ok(Json(CronList { schedules }))
}

/// The schedule, if the caller may take `action` on its queue.
async fn find(s: &AppState, caller: &Caller, action: Action, name: &str) -> ApiResult<CronInfo> {
    caller.may(s, action, None)?;
    check_name("name", name, &s.config.limits)?;
    let found = s.store.list_crons().await?.into_iter().find(|c| c.spec.name == name);
    let cron = found.ok_or_else(|| ApiError::not_found("cron schedule"))?;
    caller.may(s, action, Some(&cron.spec.task.queue))?;
    Ok(cron)
}

#[utoipa::path(
    post,
    path = "/v1/cron/{name}/pause",
    tag = "cron",
    operation_id = "pauseCron",
    summary = "Pause a cron schedule: its ticks do not fire until resumed",
    params(("name" = String, Path, description = "The schedule's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "The schedule after the change.", body = CronInfo), (status = 404, description = "not_found: no schedule by that name.", body = ErrorBody))
)]
pub(super) async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<CronInfo>> {
    let cron = find(&s, &caller, Action::Operate, &name).await?;
    let info = s.store.pause_cron(PauseCron { name, paused: true, next_run: cron.next_run_at }).await?;
    caller.audit(&s, "cron.pause", info.spec.name.clone()).await;
    Ok(Json(info))
}

/// Resumes from the next tick after now: ticks while paused never fire.
#[utoipa::path(
    post,
    path = "/v1/cron/{name}/resume",
    tag = "cron",
    operation_id = "resumeCron",
    summary = "Resume a cron schedule from its next tick after now (ticks while paused never fire)",
    params(("name" = String, Path, description = "The schedule's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "The schedule after the change.", body = CronInfo), (status = 404, description = "not_found: no schedule by that name.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<CronInfo>> {
    let cron = find(&s, &caller, Action::Operate, &name).await?;
    let schedule = Schedule::parse(&cron.spec.schedule, &cron.spec.timezone)?;
    let next_run = match cron.paused {
        true => schedule.next_after(s.clock.now()).unwrap_or(taskwarden_core::Timestamp::NEVER),
        false => cron.next_run_at,
    };
    let info = s.store.pause_cron(PauseCron { name, paused: false, next_run }).await?;
    caller.audit(&s, "cron.resume", info.spec.name.clone()).await;
    Ok(Json(info))
}

/// Changes a schedule: the fields given replace the stored ones (`task` the whole template). A
/// new schedule or time zone moves its next tick to the first one after now; it stays paused or
/// running as it was.
#[utoipa::path(
    patch,
    path = "/v1/cron/{name}",
    tag = "cron",
    operation_id = "updateCron",
    summary = "Change a schedule",
    description = "The fields given replace the stored ones (task the whole template). A new schedule or time zone moves the next tick to the first one after now; a paused schedule stays paused.",
    request_body = CronChange,
    params(("name" = String, Path, description = "The schedule's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "The schedule after the change.", body = CronInfo), (status = 404, description = "not_found: no schedule by that name.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn update(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<CronChange>,
) -> ApiResult<Json<CronInfo>> {
    let cron = find(&s, &caller, Action::Operate, &name).await?;
    let moves = change.schedule.is_some() || change.timezone.is_some();
    let spec = change.applied_to(cron.spec.clone());
    caller.may(&s, Action::Operate, Some(&spec.task.queue))?;
    let now = s.clock.now();
    let schedule = spec.validate(&s.config.limits, now)?;
    check_payload(&s, &spec).await?;
    let next_run = match moves {
        true => schedule.next_after(now).expect("validate checked there is a next tick"),
        false => cron.next_run_at,
    };
    let info = s.store.update_cron(UpdateCron { spec, next_run }).await.map_err(ApiError::missing("cron schedule"))?;
    caller.audit(&s, "cron.update", name).await;
    Ok(Json(info))
}

/// Fires the schedule now, once, besides its ticks: its task is submitted as a tick would submit
/// it, without a tick's idempotency key, and the schedule's next tick is unchanged.
#[utoipa::path(
    post,
    path = "/v1/cron/{name}/run",
    tag = "cron",
    operation_id = "runCron",
    summary = "Fire a schedule now, once",
    description = "Submits the schedule's task now, as a tick would but without a tick's idempotency key, besides its ticks: the next tick is unchanged.",
    params(("name" = String, Path, description = "The schedule's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 201, description = "The task it submitted.", body = Task), (status = 404, description = "not_found: no schedule by that name.", body = ErrorBody))
)]
pub(super) async fn run(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let cron = find(&s, &caller, Action::Operate, &name).await?;
    let now = s.clock.now();
    let task = cron.spec.task.validate(&s.config.limits, now)?;
    s.schemas.current().await?.check(|| "task.payload".into(), &task.kind, Some(&task.payload))?;
    let call = SubmitTasks { tasks: vec![task], idempotency_window: s.config.idempotency_window, now };
    let submitted = s.store.submit(call).await?.remove(0).task;
    caller.audit(&s, "cron.run", name).await;
    Ok((StatusCode::CREATED, Json(super::tasks::shown(&caller, submitted))))
}

#[utoipa::path(
    delete,
    path = "/v1/cron/{name}",
    tag = "cron",
    operation_id = "deleteCron",
    summary = "Delete a cron schedule (tasks it submitted stay)",
    params(("name" = String, Path, description = "The schedule's name.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 204, description = "Deleted."), (status = 404, description = "not_found: no schedule by that name.", body = ErrorBody))
)]
pub(super) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    find(&s, &caller, Action::Operate, &name).await?;
    s.store.delete_cron(&name).await?;
    caller.audit(&s, "cron.delete", name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A schedule's payload must match its kind's schema, when one is registered. Its ticks are not
/// checked again: a schema registered after the schedule was made or changed does not stop them.
async fn check_payload(s: &AppState, spec: &CronSpec) -> ApiResult<()> {
    let task = &spec.task;
    s.schemas.current().await?.check(|| "task.payload".into(), &task.kind, task.payload.as_deref())?;
    Ok(())
}
