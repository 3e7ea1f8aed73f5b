//! The worker protocol: register, fetch (long-poll), heartbeat and report in batches, plus the
//! single-lease calls that answer 409 when the lease is no longer held.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use taskwarden_core::protocol::{
    CompleteCall, FailCall, FetchRequest, FetchResponse, HeldLease, ItemStatus, LeaseCall, LeasedTask, Outcome,
    ProgressCall, RegisterWorker, Report, ReportBatch, ReportBatchResponse, ReportResult, WorkerHeartbeat,
    WorkerHeartbeatResponse, WorkerList,
};
use taskwarden_core::validate::{check_name, truncate_error};
use taskwarden_core::{Progress, Task, TaskId};
use taskwarden_store::{FetchTasks, Heartbeat, ReportOutcomes, StoreError};

use super::{ApiResult, AppState};
use crate::error::{ApiError, ApiJson, task_id};

fn worker_id(s: &AppState, raw: &str) -> Result<String, ApiError> {
    check_name("worker_id", raw, &s.config.limits)?;
    Ok(raw.to_owned())
}

pub(super) async fn register(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<RegisterWorker>,
) -> ApiResult<impl IntoResponse> {
    req.validate(&s.config.limits)?;
    let p = taskwarden_store::RegisterWorker {
        name: req.name,
        queues: req.queues,
        concurrency: req.concurrency,
        capacity: req.capacity,
        labels: req.labels,
        now: s.clock.now(),
    };
    Ok((StatusCode::CREATED, Json(s.store.register_worker(p).await?)))
}

pub(super) async fn list(State(s): State<AppState>) -> ApiResult<Json<WorkerList>> {
    Ok(Json(WorkerList { workers: s.store.list_workers().await? }))
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
    }
}

/// Leases up to `limit` tasks. When none is ready, the store parks the call (up to `wait_ms`) and
/// hands it tasks the moment they become ready, rather than anyone polling.
pub(super) async fn fetch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FetchRequest>,
) -> ApiResult<Json<FetchResponse>> {
    let worker_id = worker_id(&s, &id)?;
    let wait = req.validate(&s.config.limits)?;
    let now = s.clock.now();
    let p = FetchTasks { worker_id, queues: req.queues, limit: req.limit, wait, now, finished: req.finished };
    let tasks = tokio::select! {
        // Biased: tasks already leased to this call win over a shutdown that fires at the same time.
        biased;
        tasks = s.store.fetch(p) => tasks?,
        // On shutdown the parked call is dropped; the store releases anything it had just leased.
        _ = s.shutdown.cancelled() => Vec::new(),
    };
    Ok(Json(FetchResponse { tasks: tasks.into_iter().map(leased).collect() }))
}

pub(super) async fn heartbeat(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WorkerHeartbeat>,
) -> ApiResult<Json<WorkerHeartbeatResponse>> {
    let worker_id = worker_id(&s, &id)?;
    if req.leases.len() > s.config.limits.max_batch {
        return Err(ApiError::invalid("leases", format!("at most {} leases per heartbeat", s.config.limits.max_batch)));
    }
    for (i, l) in req.leases.iter().enumerate() {
        if let Some(p) = &l.progress {
            p.validate().map_err(|e| e.within(&format!("leases[{i}].progress")))?;
        }
    }
    let leases = s.store.heartbeat(Heartbeat { worker_id, leases: req.leases, now: s.clock.now() }).await?;
    Ok(Json(WorkerHeartbeatResponse { leases }))
}

/// Checks an outcome reported through a single-lease call: a bad one is refused with a 400.
fn check_outcome(o: &mut Outcome, limits: &taskwarden_core::Limits) -> Result<(), ApiError> {
    match o {
        Outcome::Succeeded { result } if result.get().len() > limits.max_payload_bytes => {
            Err(ApiError::invalid("result", format!("is larger than {} bytes", limits.max_payload_bytes)))
        }
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
        Outcome::Failed { error, retry_after_ms, .. } => {
            *error = truncate_error(std::mem::take(error));
            let max = limits.max_delay.as_millis() as u64;
            *retry_after_ms = retry_after_ms.map(|ms| ms.min(max));
        }
        _ => {}
    }
}

pub(super) async fn reports(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(mut req): ApiJson<ReportBatch>,
) -> ApiResult<Json<ReportBatchResponse>> {
    worker_id(&s, &id)?;
    if req.reports.len() > s.config.limits.max_batch {
        return Err(ApiError::invalid("reports", format!("at most {} reports per batch", s.config.limits.max_batch)));
    }
    for r in req.reports.iter_mut() {
        settle_outcome(&mut r.outcome, &s.config.limits);
    }
    let ids: Vec<TaskId> = req.reports.iter().map(|r| r.task_id).collect();
    let outcomes = s.store.report(ReportOutcomes { reports: req.reports, now: s.clock.now() }).await?;
    let results = ids
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
        .collect();
    Ok(Json(ReportBatchResponse { results }))
}

async fn report_one(
    s: &AppState,
    task_id: TaskId,
    lease: taskwarden_core::LeaseToken,
    mut outcome: Outcome,
) -> ApiResult<Json<Task>> {
    check_outcome(&mut outcome, &s.config.limits)?;
    let report = Report { task_id, lease, outcome };
    let task = s.store.report(ReportOutcomes { reports: vec![report], now: s.clock.now() }).await?.remove(0)?;
    Ok(Json(task))
}

pub(super) async fn complete_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<CompleteCall>,
) -> ApiResult<Json<Task>> {
    report_one(&s, task_id(&id)?, c.lease, Outcome::Succeeded { result: c.result }).await
}

pub(super) async fn fail_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<FailCall>,
) -> ApiResult<Json<Task>> {
    let outcome = Outcome::Failed { error: c.error, retry_after_ms: c.retry_after_ms, permanent: c.permanent };
    report_one(&s, task_id(&id)?, c.lease, outcome).await
}

pub(super) async fn release_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<LeaseCall>,
) -> ApiResult<Json<Task>> {
    report_one(&s, task_id(&id)?, c.lease, Outcome::Released).await
}

async fn heartbeat_single(
    s: &AppState,
    id: TaskId,
    lease: taskwarden_core::LeaseToken,
    progress: Option<Progress>,
) -> ApiResult<impl IntoResponse + use<>> {
    let worker = "(single-lease call)".to_owned();
    let held = HeldLease { task_id: id, lease, progress };
    let status =
        s.store.heartbeat(Heartbeat { worker_id: worker, leases: vec![held], now: s.clock.now() }).await?.remove(0);
    match status.status {
        ItemStatus::Ok => Ok(Json(json!({
            "task_id": id,
            "cancel_requested": status.cancel_requested,
            "lease_expires_at": status.lease_expires_at,
        }))),
        ItemStatus::NotFound => Err(StoreError::NotFound.into()),
        ItemStatus::LeaseLost => Err(StoreError::LeaseLost.into()),
    }
}

pub(super) async fn heartbeat_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<LeaseCall>,
) -> ApiResult<impl IntoResponse> {
    heartbeat_single(&s, task_id(&id)?, c.lease, None).await
}

pub(super) async fn progress_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(c): ApiJson<ProgressCall>,
) -> ApiResult<impl IntoResponse> {
    let progress = Progress { fraction: c.fraction, message: c.message };
    progress.validate()?;
    heartbeat_single(&s, task_id(&id)?, c.lease, Some(progress)).await
}
