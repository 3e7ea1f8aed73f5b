//! The worker protocol: register, fetch (long-poll), heartbeat and report in batches, plus the
//! single-lease calls that answer 409 when the lease is no longer held.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{
    CompleteCall, ErrorBody, FailCall, FetchRequest, FetchResponse, HeldLease, ItemStatus, LeaseCall,
    LeaseHeartbeatResponse, LeasedTask, Outcome, ProgressCall, RegisterWorker, Report, ReportBatch,
    ReportBatchResponse, ReportResult, WorkerHeartbeat, WorkerHeartbeatResponse, WorkerInfo, WorkerList, WorkerStatus,
};
use taskwarden_core::validate::{check_depth, check_name, truncate_error};
use taskwarden_core::{Progress, Task, TaskId};
use taskwarden_store::{FetchTasks, Heartbeat, ReportOutcomes, StoreError};

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, task_id};

fn worker_id(s: &AppState, raw: &str) -> Result<String, ApiError> {
    check_name("worker_id", raw, &s.config.limits)?;
    Ok(raw.to_owned())
}

/// Registers a worker, owned by the calling token: only that token may act as this worker.
#[utoipa::path(
    post,
    path = "/v1/workers",
    tag = "workers",
    operation_id = "registerWorker",
    summary = "Register a worker",
    request_body = RegisterWorker,
    responses((status = 201, description = "The worker was registered; use its id in the worker calls.", body = WorkerInfo), (status = 422, description = "unprocessable: a payload schema for a kind the worker does not name, or one that is not a usable JSON Schema (it refers to another document, say); error.field names schemas.KIND.", body = ErrorBody))
)]
pub(super) async fn register(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterWorker>,
) -> ApiResult<impl IntoResponse> {
    caller.may_all(&s, Action::Work, req.queues.iter().map(String::as_str))?;
    req.validate(&s.config.limits)?;
    let mut schemas = std::collections::BTreeMap::new();
    for (kind, schema) in &req.schemas {
        crate::payload_schemas::compile(kind, schema)?;
        schemas.insert(kind.clone(), schema.to_string());
    }
    let p = taskwarden_store::RegisterWorker {
        name: req.name,
        owner: caller.token_id.clone(),
        queues: req.queues,
        concurrency: req.concurrency,
        capacity: req.capacity,
        labels: req.labels,
        kinds: req.kinds,
        schemas,
        now: s.clock.now(),
    };
    let registered = s.store.register_worker(p).await?;
    if !req.schemas.is_empty() {
        s.schemas.changed().await;
    }
    Ok((StatusCode::CREATED, Json(registered)))
}

/// The workers; a caller limited to some queues sees those that serve one of them.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "workers",
    operation_id = "listWorkers",
    summary = "List registered workers",
    responses((status = 200, description = "The registered workers.", body = WorkerList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<WorkerList>> {
    caller.may(&s, Action::Read, None)?;
    let mut workers = s.store.list_workers().await?;
    workers.retain(|w| w.queues.iter().any(|q| caller.grant.queues.contains(q)));
    // Lost: not heard from within the window the scheduler counts workers as live in.
    let live_since = s.clock.now().saturating_sub(crate::scheduling::LIVE_WINDOW);
    for w in &mut workers {
        w.status = if w.last_seen_at >= live_since { WorkerStatus::Live } else { WorkerStatus::Lost };
    }
    Ok(Json(WorkerList { workers }))
}

/// Forgets a lost worker that holds no running task, so it leaves the workers page (a lost
/// worker is otherwise forgotten a day after it was last seen).
#[utoipa::path(
    delete,
    path = "/v1/workers/{id}",
    tag = "workers",
    operation_id = "removeWorker",
    summary = "Remove a lost worker",
    description = "Only a lost worker (not heard from within the live window) holding no running task can be removed; one that comes back registers again.",
    params(("id" = String, Path, description = "The worker's id.", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 204, description = "Removed."), (status = 404, description = "not_found: no such worker.", body = ErrorBody), (status = 409, description = "conflict: the worker is live or still holds a running task.", body = ErrorBody))
)]
pub(super) async fn remove(State(s): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    caller.may(&s, Action::Operate, None)?;
    let worker = s.store.list_workers().await?.into_iter().find(|w| w.id == id).ok_or(StoreError::NotFound)?;
    caller.may_all(&s, Action::Operate, worker.queues.iter().map(String::as_str))?;
    let lost_before = s.clock.now().saturating_sub(crate::scheduling::LIVE_WINDOW);
    s.store.remove_worker(taskwarden_store::RemoveWorker { id: id.clone(), lost_before }).await?;
    caller.audit(&s, "worker.remove", id).await;
    Ok(StatusCode::NO_CONTENT)
}

fn leased(task: Task) -> LeasedTask {
    let lease = task.lease.expect("a fetched task is leased");
    LeasedTask {
        id: task.id,
        queue: task.queue,
        kind: task.kind,
        payload: task.payload,
        attempt: lease.attempt,
        max_attempts: task.max_attempts,
        lease: lease.token,
        lease_expires_at: lease.expires_at,
        timeout_ms: task.timeout.as_millis() as u64,
        lease_timeout_ms: task.lease_timeout.as_millis() as u64,
        parent_count: task.parent_count,
        traceparent: task.traceparent,
    }
}

/// Leases up to `limit` tasks. When none is ready, the store parks the call (up to `wait_ms`) and
/// hands it tasks the moment they become ready, rather than anyone polling.
#[utoipa::path(
    post,
    path = "/v1/workers/{id}/fetch",
    tag = "workers",
    operation_id = "fetchTasks",
    summary = "Lease tasks (long-poll)",
    description = "Leases up to limit ready tasks from the given queues, highest priority first. When none is ready, waits up to wait_ms and is woken the moment one becomes ready.",
    request_body = FetchRequest,
    params(("id" = String, Path, description = "The worker id, as returned by POST /v1/workers (1 to 128 bytes (the default limit), no control characters.)", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "The tasks leased to the worker; empty when none became ready within wait_ms.", body = FetchResponse))
)]
pub(super) async fn fetch(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<FetchRequest>,
) -> ApiResult<Json<FetchResponse>> {
    let worker_id = worker_id(&s, &id)?;
    caller.may_all(&s, Action::Work, req.queues.iter().map(String::as_str))?;
    caller.owns_worker(&s, &worker_id).await?;
    let wait = req.validate(&s.config.limits)?;
    let now = s.clock.now();
    let reports = std::mem::take(&mut req.reports);
    let p = FetchTasks {
        worker_id: worker_id.clone(),
        queues: req.queues,
        limit: req.limit,
        wait,
        now,
        finished: req.finished,
    };
    let fetch = async {
        tokio::select! {
            // Biased: tasks already leased to this call win over a shutdown that fires at the same time.
            biased;
            tasks = s.store.fetch(p) => tasks,
            // On shutdown the parked call is dropped; the store releases anything it had just leased.
            _ = s.shutdown.cancelled() => Ok(Vec::new()),
        }
    };
    // Side by side rather than one after the other: on the embedded store both land in the same
    // group commit, so the fetch costs no second trip through the writer, and the answer waits
    // only for the commit that makes the outcomes durable.
    let (reports, tasks) = if reports.is_empty() {
        (Vec::new(), fetch.await?)
    } else {
        match tokio::join!(record_reports(&s, worker_id.clone(), reports, now), fetch) {
            (Ok(reports), Ok(tasks)) => (reports, tasks),
            // The outcomes are recorded: say so (the worker must not send them again), and let
            // it fetch again.
            (Ok(reports), Err(e)) => {
                tracing::warn!(error = %e, "a fetch failed beside the reports it carried");
                (reports, Vec::new())
            }
            // The worker will send the outcomes again; tasks leased to this answer go back now
            // rather than when their leases expire.
            (Err(e), tasks) => {
                release(&s, worker_id, tasks.unwrap_or_default()).await;
                return Err(e);
            }
        }
    };
    s.traces.leased(&tasks, &worker_id);
    Ok(Json(FetchResponse { tasks: tasks.into_iter().map(leased).collect(), reports }))
}

/// Gives back tasks leased to an answer that will not reach its worker.
async fn release(s: &AppState, worker_id: String, tasks: Vec<Task>) {
    let reports: Vec<Report> = tasks.iter().filter_map(Report::release).collect();
    if reports.is_empty() {
        return;
    }
    let p = ReportOutcomes { worker_id: Some(worker_id), reports, now: s.clock.now() };
    if let Err(e) = s.store.report(p).await {
        tracing::warn!(error = %e, "could not give back tasks leased to a failed fetch; they run once their leases expire");
    }
}

#[utoipa::path(
    post,
    path = "/v1/workers/{id}/heartbeat",
    tag = "workers",
    operation_id = "workerHeartbeat",
    summary = "Extend the worker's leases",
    description = "Extends every lease the worker holds, recording progress where given, and marks the worker as seen.",
    request_body = WorkerHeartbeat,
    params(("id" = String, Path, description = "The worker id, as returned by POST /v1/workers (1 to 128 bytes (the default limit), no control characters.)", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "One status per lease; a lease_lost lease must be abandoned, and cancel_requested asks the handler to stop.", body = WorkerHeartbeatResponse))
)]
pub(super) async fn heartbeat(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WorkerHeartbeat>,
) -> ApiResult<Json<WorkerHeartbeatResponse>> {
    let worker_id = worker_id(&s, &id)?;
    caller.may(&s, Action::Work, None)?;
    caller.owns_worker(&s, &worker_id).await?;
    if req.leases.len() > s.config.limits.max_batch {
        return Err(ApiError::invalid("leases", format!("at most {} leases per heartbeat", s.config.limits.max_batch)));
    }
    for (i, l) in req.leases.iter().enumerate() {
        if let Some(p) = &l.progress {
            p.validate().map_err(|e| e.within(&format!("leases[{i}].progress")))?;
        }
    }
    let p = Heartbeat { worker_id: Some(worker_id), leases: req.leases, now: s.clock.now() };
    let leases = s.store.heartbeat(p).await?;
    Ok(Json(WorkerHeartbeatResponse { leases }))
}

/// Checks an outcome reported through a single-lease call: a bad one is refused with a 400.
fn check_outcome(o: &mut Outcome, limits: &taskwarden_core::Limits) -> Result<(), ApiError> {
    match o {
        Outcome::Succeeded { result } if result.get().len() > limits.max_payload_bytes => {
            Err(ApiError::invalid("result", format!("is larger than {} bytes", limits.max_payload_bytes)))
        }
        Outcome::Succeeded { result } => Ok(check_depth("result", result.get(), limits)?),
        Outcome::Failed { error, retry_after_ms, .. } => {
            *error = truncate_error(std::mem::take(error));
            if retry_after_ms.is_some_and(|ms| Duration::from_millis(ms) > limits.max_delay) {
                return Err(ApiError::invalid("retry_after_ms", "is longer than the longest allowed delay"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Makes an outcome from a batch acceptable, so that one bad report cannot cost the others
/// theirs: an oversized result fails the attempt permanently (it would be too large on every
/// retry), an over-long retry delay is cut to the longest allowed.
fn settle_outcome(o: &mut Outcome, limits: &taskwarden_core::Limits) {
    match o {
        Outcome::Succeeded { result } if result.get().len() > limits.max_payload_bytes => {
            let error =
                format!("the result is {} bytes; the limit is {}", result.get().len(), limits.max_payload_bytes);
            *o = Outcome::Failed { error, retry_after_ms: None, permanent: true };
        }
        Outcome::Succeeded { result } if check_depth("result", result.get(), limits).is_err() => {
            let error = check_depth("result", result.get(), limits).unwrap_err().to_string();
            *o = Outcome::Failed { error, retry_after_ms: None, permanent: true };
        }
        Outcome::Failed { error, retry_after_ms, .. } => {
            *error = truncate_error(std::mem::take(error));
            let max = limits.max_delay.as_millis() as u64;
            *retry_after_ms = retry_after_ms.map(|ms| ms.min(max));
        }
        _ => {}
    }
}

#[utoipa::path(
    post,
    path = "/v1/workers/{id}/reports",
    tag = "workers",
    operation_id = "reportOutcomes",
    summary = "Report attempt outcomes in a batch",
    request_body = ReportBatch,
    params(("id" = String, Path, description = "The worker id, as returned by POST /v1/workers (1 to 128 bytes (the default limit), no control characters.)", min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")),
    responses((status = 200, description = "One result per report; a report whose lease is no longer held is refused (lease_lost) without failing the rest.", body = ReportBatchResponse))
)]
pub(super) async fn reports(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReportBatch>,
) -> ApiResult<Json<ReportBatchResponse>> {
    let worker_id = worker_id(&s, &id)?;
    caller.may(&s, Action::Work, None)?;
    caller.owns_worker(&s, &worker_id).await?;
    if req.reports.len() > s.config.limits.max_batch {
        return Err(ApiError::invalid("reports", format!("at most {} reports per batch", s.config.limits.max_batch)));
    }
    let results = record_reports(&s, worker_id, req.reports, s.clock.now()).await?;
    Ok(Json(ReportBatchResponse { results }))
}

/// Records a worker's outcomes, from its report batch or its fetch. A bad outcome is made
/// acceptable rather than refused, so that one bad report cannot cost the others theirs.
async fn record_reports(
    s: &AppState,
    worker_id: String,
    mut reports: Vec<Report>,
    now: taskwarden_core::Timestamp,
) -> ApiResult<Vec<ReportResult>> {
    for r in reports.iter_mut() {
        settle_outcome(&mut r.outcome, &s.config.limits);
    }
    let ids: Vec<TaskId> = reports.iter().map(|r| r.task_id).collect();
    let spans = s.traces.reporting(&reports);
    let outcomes = s.store.report(ReportOutcomes { worker_id: Some(worker_id), reports, now }).await?;
    s.traces.reported(spans, &outcomes);
    Ok(ids
        .into_iter()
        .zip(outcomes)
        .map(|(task_id, r)| ReportResult {
            task_id,
            status: match r {
                Ok(_) => ItemStatus::Ok,
                Err(StoreError::NotFound) => ItemStatus::NotFound,
                Err(_) => ItemStatus::LeaseLost,
            },
        })
        .collect())
}

/// The worker a single-lease call speaks for. On a server with tokens, that is the worker
/// holding the task's lease, which must be the caller's own; without tokens, nobody in particular
/// (the lease token alone decides, as before tokens existed).
async fn lease_holder(s: &AppState, caller: &Caller, task_id: TaskId) -> ApiResult<Option<String>> {
    caller.may(s, Action::Work, None)?;
    if !caller.authenticated() {
        return Ok(None);
    }
    let task = super::tasks::task_for(s, caller, Action::Work, task_id).await?;
    let Some(lease) = task.lease.filter(|_| task.state == taskwarden_core::TaskState::Running) else {
        return Err(StoreError::LeaseLost.into());
    };
    caller.owns_worker(s, &lease.worker_id).await?;
    Ok(Some(lease.worker_id))
}

async fn report_one(
    s: &AppState,
    caller: &Caller,
    task_id: TaskId,
    lease: taskwarden_core::LeaseToken,
    mut outcome: Outcome,
) -> ApiResult<Json<Task>> {
    check_outcome(&mut outcome, &s.config.limits)?;
    let worker_id = lease_holder(s, caller, task_id).await?;
    let report = Report::new(task_id, lease, outcome);
    let p = ReportOutcomes { worker_id, reports: vec![report], now: s.clock.now() };
    let task = s.store.report(p).await?.remove(0)?;
    Ok(Json(super::tasks::shown(caller, task)))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/complete",
    tag = "leases",
    operation_id = "completeTask",
    summary = "Report a leased task succeeded",
    request_body = CompleteCall,
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task, succeeded.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held (it expired, or a newer attempt replaced it); abandon the execution.", body = ErrorBody))
)]
pub(super) async fn complete_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<CompleteCall>,
) -> ApiResult<Json<Task>> {
    report_one(&s, &caller, task_id(&id)?, c.lease, Outcome::Succeeded { result: c.result }).await
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/fail",
    tag = "leases",
    operation_id = "failTask",
    summary = "Report a leased task's attempt failed",
    request_body = FailCall,
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task: scheduled for a retry, or failed when no attempts remain or the failure is permanent.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held (it expired, or a newer attempt replaced it); abandon the execution.", body = ErrorBody))
)]
pub(super) async fn fail_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<FailCall>,
) -> ApiResult<Json<Task>> {
    let outcome = Outcome::Failed { error: c.error, retry_after_ms: c.retry_after_ms, permanent: c.permanent };
    report_one(&s, &caller, task_id(&id)?, c.lease, outcome).await
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/release",
    tag = "leases",
    operation_id = "releaseTask",
    summary = "Give a leased task back unfinished",
    request_body = LeaseCall,
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The task, ready again (or cancelled, if cancellation was requested); the released attempt does not count against max_attempts.", body = Task), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held (it expired, or a newer attempt replaced it); abandon the execution.", body = ErrorBody))
)]
pub(super) async fn release_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<LeaseCall>,
) -> ApiResult<Json<Task>> {
    report_one(&s, &caller, task_id(&id)?, c.lease, Outcome::Released).await
}

async fn heartbeat_single(
    s: &AppState,
    caller: &Caller,
    id: TaskId,
    lease: taskwarden_core::LeaseToken,
    progress: Option<Progress>,
) -> ApiResult<impl IntoResponse + use<>> {
    let worker_id = lease_holder(s, caller, id).await?;
    let held = HeldLease { task_id: id, lease, progress, logs: Vec::new() };
    let status = s.store.heartbeat(Heartbeat { worker_id, leases: vec![held], now: s.clock.now() }).await?.remove(0);
    match status.status {
        ItemStatus::Ok => Ok(Json(LeaseHeartbeatResponse {
            task_id: id,
            cancel_requested: status.cancel_requested,
            lease_expires_at: status.lease_expires_at,
        })),
        ItemStatus::NotFound => Err(StoreError::NotFound.into()),
        ItemStatus::LeaseLost => Err(StoreError::LeaseLost.into()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/heartbeat",
    tag = "leases",
    operation_id = "heartbeatTask",
    summary = "Extend one lease",
    request_body = LeaseCall,
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The lease was extended.", body = LeaseHeartbeatResponse), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held (it expired, or a newer attempt replaced it); abandon the execution.", body = ErrorBody))
)]
pub(super) async fn heartbeat_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<LeaseCall>,
) -> ApiResult<impl IntoResponse> {
    heartbeat_single(&s, &caller, task_id(&id)?, c.lease, None).await
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/progress",
    tag = "leases",
    operation_id = "reportTaskProgress",
    summary = "Record progress and extend one lease",
    request_body = ProgressCall,
    params(("id" = TaskId, Path, description = "The task id (a UUID).")),
    responses((status = 200, description = "The progress was recorded and the lease extended.", body = LeaseHeartbeatResponse), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held (it expired, or a newer attempt replaced it); abandon the execution.", body = ErrorBody))
)]
pub(super) async fn progress_one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<ProgressCall>,
) -> ApiResult<impl IntoResponse> {
    let progress = Progress { fraction: c.fraction, message: c.message };
    progress.validate()?;
    heartbeat_single(&s, &caller, task_id(&id)?, c.lease, Some(progress)).await
}
