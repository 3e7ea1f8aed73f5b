//! Retrying or cancelling every task a filter matches, on the server: one call that goes a page
//! at a time up to a limit (`POST /v1/tasks/retry|cancel`), or a job that runs to the end in the
//! background and reports its progress (`POST /v1/tasks/jobs`, `GET /v1/tasks/jobs/{id}`).
//!
//! Either way each task is changed on its own: one that moved on meanwhile (finished, retried by
//! someone else) is counted as skipped, never failing the rest.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{BulkAction, BulkFilter, BulkJob, BulkJobCall, BulkJobState, BulkResult, ErrorBody};
use taskwarden_core::search::TaskSearch;
use taskwarden_core::{TaskId, TaskState, ValidationError};
use taskwarden_store::{CancelTask, ListTasks, RetryTask, StoreError};

use super::tasks::{SEARCH_WINDOW, search};
use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};

/// Tasks looked at per page of a bulk call, and how many of them change at once (so SQLite's
/// group commit shares fsyncs among them).
const BULK_PAGE: u32 = 500;
const BULK_AT_ONCE: usize = 64;
/// Jobs a node remembers (the newest; also the most it holds unfinished), and how many of them
/// run at once (the others wait their turn).
const JOBS_KEPT: usize = 100;
const JOBS_RUNNING: usize = 2;

/// Retries every failed (or cancelled, or expired) task matching the filter, a page at a time on the server.
#[utoipa::path(
    post,
    path = "/v1/tasks/retry",
    tag = "tasks",
    operation_id = "retryTasks",
    summary = "Retry every task matching a filter",
    description = "Sends every failed (or cancelled, or expired) task matching the filter back to the queue with a fresh attempt budget, on the server, a page at a time.",
    request_body = BulkFilter,
    responses((status = 200, description = "What it did.", body = BulkResult), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn bulk_retry(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<BulkFilter>,
) -> ApiResult<Json<BulkResult>> {
    bulk(s, caller, filter, BulkAction::Retry).await
}

/// Cancels every unfinished task matching the filter (running ones are asked to stop).
#[utoipa::path(
    post,
    path = "/v1/tasks/cancel",
    tag = "tasks",
    operation_id = "cancelTasks",
    summary = "Cancel every task matching a filter",
    description = "Cancels every ready, scheduled or running task matching the filter (running ones are asked to stop through their heartbeat), on the server, a page at a time.",
    request_body = BulkFilter,
    responses((status = 200, description = "What it did.", body = BulkResult), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn bulk_cancel(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(filter): ApiJson<BulkFilter>,
) -> ApiResult<Json<BulkResult>> {
    bulk(s, caller, filter, BulkAction::Cancel).await
}

/// What a bulk change is about: the search, and the states it goes through in turn.
struct Plan {
    search: TaskSearch,
    states: Vec<TaskState>,
}

/// Checks a bulk filter: its `q` with its other fields, the states the action takes, and that
/// the caller may operate on its queue.
fn plan(s: &AppState, caller: &Caller, f: &BulkFilter, action: BulkAction) -> ApiResult<Plan> {
    let explicit = TaskSearch {
        queue: f.queue.clone(),
        state: f.state,
        kind: f.kind.clone(),
        tag: f.tag.clone(),
        ..TaskSearch::default()
    };
    let search = search(s, caller, f.q.as_deref(), explicit)?;
    caller.may(s, Action::Operate, search.queue.as_deref())?;
    let states = match (action, search.state) {
        (BulkAction::Retry, None | Some(TaskState::Failed)) => vec![TaskState::Failed],
        (BulkAction::Retry, Some(st @ (TaskState::Cancelled | TaskState::Expired))) => vec![st],
        (BulkAction::Retry, Some(_)) => {
            return Err(
                ValidationError::unprocessable("state", "retry takes failed, cancelled or expired tasks").into()
            );
        }
        (BulkAction::Cancel, None) => vec![TaskState::Ready, TaskState::Scheduled, TaskState::Running],
        (BulkAction::Cancel, Some(st @ (TaskState::Ready | TaskState::Scheduled | TaskState::Running))) => vec![st],
        (BulkAction::Cancel, Some(_)) => {
            return Err(
                ValidationError::unprocessable("state", "cancel takes ready, scheduled or running tasks").into()
            );
        }
    };
    Ok(Plan { search, states })
}

async fn bulk(s: AppState, caller: Caller, filter: BulkFilter, action: BulkAction) -> ApiResult<Json<BulkResult>> {
    let plan = plan(&s, &caller, &filter, action)?;
    let limit = u64::from(filter.limit.unwrap_or(10_000));
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100000"));
    }
    // The cursor says which of the states it was in, and the task id to go on from.
    let start = match &filter.cursor {
        None => (0, None),
        Some(c) => parse_bulk_cursor(c, plan.states.len())?,
    };
    let result = run(&s, &caller, &plan, action, limit, start, &|_| {}).await?;
    caller.audit(&s, audit_action(action), format!("{} tasks matching {}", result.changed, describe(&filter))).await;
    Ok(Json(result))
}

fn audit_action(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Retry => "task.bulk_retry",
        BulkAction::Cancel => "task.bulk_cancel",
    }
}

/// Goes through the tasks `plan` matches from `start` (which state, and the id to go on after),
/// changing at most `limit` of them, telling `progress` after each chunk; answers what it did
/// and, when it stopped at the limit with more to go, the cursor to go on from.
async fn run(
    s: &AppState,
    caller: &Caller,
    plan: &Plan,
    action: BulkAction,
    limit: u64,
    start: (usize, Option<TaskId>),
    progress: &(dyn Fn(&BulkResult) + Sync),
) -> ApiResult<BulkResult> {
    let (mut state_at, mut before) = start;
    let states = &plan.states;
    let page_of = |state: TaskState, before: Option<TaskId>, limit: u32| ListTasks {
        filter: TaskSearch { state: Some(state), ..plan.search.clone() },
        before,
        limit,
        window: Some(SEARCH_WINDOW),
    };
    let mut result = BulkResult::default();
    while state_at < states.len() {
        if s.shutdown.is_cancelled() {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"));
        }
        let want = (limit - result.matched).min(u64::from(BULK_PAGE)) as u32;
        let page = s.store.list(page_of(states[state_at], before, want)).await?;
        let ids: Vec<TaskId> =
            page.tasks.iter().filter(|t| caller.grant.queues.contains(&t.queue)).map(|t| t.id).collect();
        for chunk in ids.chunks(BULK_AT_ONCE) {
            let mut changes = tokio::task::JoinSet::new();
            for &id in chunk {
                let (store, now) = (s.store.clone(), s.clock.now());
                changes.spawn(async move {
                    match action {
                        BulkAction::Retry => store.retry(RetryTask { id, now }).await.map(drop),
                        BulkAction::Cancel => store.cancel(CancelTask { id, now }).await.map(drop),
                    }
                });
            }
            while let Some(done) = changes.join_next().await {
                result.matched += 1;
                match done.map_err(|e| ApiError::from(StoreError::Internal(e.to_string())))? {
                    Ok(()) => result.changed += 1,
                    // Moved on since it was listed (finished, retried by someone else).
                    Err(StoreError::Transition(_) | StoreError::NotFound) => result.skipped += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            progress(&result);
        }
        before = page.next;
        if before.is_none() {
            (state_at, before) = (state_at + 1, None);
        }
        if result.matched >= limit {
            // Stopped at the limit: a cursor only if something is left to go on with.
            while state_at < states.len() {
                if !s.store.list(page_of(states[state_at], before, 1)).await?.tasks.is_empty() {
                    let at = before.map(|id| id.to_string()).unwrap_or_default();
                    result.next_cursor = Some(format!("{state_at}:{at}"));
                    break;
                }
                (state_at, before) = (state_at + 1, None);
            }
            break;
        }
    }
    Ok(result)
}

/// `STATE_INDEX:TASK_ID` (the id empty at the start of a state).
fn parse_bulk_cursor(cursor: &str, states: usize) -> Result<(usize, Option<TaskId>), ApiError> {
    let bad = || ApiError::invalid("cursor", "not a cursor from a previous answer");
    let (at, id) = cursor.split_once(':').ok_or_else(bad)?;
    if at.is_empty() || at.len() > 2 || !at.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let at: usize = at.parse().map_err(|_| bad())?;
    if at >= states {
        // Well formed, but from a call with another filter.
        return Err(
            ValidationError::unprocessable("cursor", "not a cursor from a previous answer to this filter").into()
        );
    }
    let id = match id {
        "" => None,
        id => Some(id.parse().map_err(|_| bad())?),
    };
    Ok((at, id))
}

/// The filter in words, for the audit log and the job.
fn describe(f: &BulkFilter) -> String {
    let parts: Vec<String> = [("queue", &f.queue), ("kind", &f.kind), ("tag", &f.tag), ("q", &f.q)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .chain(f.state.map(|st| format!("state={st}")))
        .collect();
    if parts.is_empty() { "every queue".into() } else { parts.join(" ") }
}

/// The bulk jobs this node runs and ran lately, in memory: a job runs on the node that was
/// asked, and is forgotten with it (what it changed stays changed).
pub(crate) struct Jobs {
    jobs: Mutex<VecDeque<Arc<Mutex<BulkJob>>>>,
    running: Arc<tokio::sync::Semaphore>,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs { jobs: Mutex::default(), running: Arc::new(tokio::sync::Semaphore::new(JOBS_RUNNING)) }
    }
}

impl Jobs {
    fn find(&self, id: &str) -> Option<BulkJob> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let job = jobs.iter().find(|j| j.lock().expect("job lock").id == id)?;
        Some(job.lock().expect("job lock").clone())
    }

    /// Adds a job unless too many are unfinished; forgets the oldest finished ones past the
    /// number kept.
    fn start(&self, job: BulkJob) -> Result<Arc<Mutex<BulkJob>>, ApiError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let running = jobs.iter().filter(|j| j.lock().expect("job lock").state == BulkJobState::Running).count();
        if running >= JOBS_KEPT {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                format!("{running} bulk jobs are unfinished on this node; start another when one is done"),
            ));
        }
        let job = Arc::new(Mutex::new(job));
        jobs.push_back(job.clone());
        while jobs.len() > JOBS_KEPT {
            match jobs.iter().position(|j| j.lock().expect("job lock").state != BulkJobState::Running) {
                Some(oldest) => drop(jobs.remove(oldest)),
                None => break,
            }
        }
        Ok(job)
    }
}

/// Starts a bulk retry or cancel that runs on the server to the end, a page at a time; follow it
/// with `GET /v1/tasks/jobs/{id}`.
#[utoipa::path(
    post,
    path = "/v1/tasks/jobs",
    tag = "tasks",
    operation_id = "startBulkJob",
    summary = "Retry or cancel everything a filter matches, as a job on the server",
    description = "Runs on the node that was asked until no task matches, counting each task as changed or skipped (it moved on meanwhile); follow it with GET /v1/tasks/jobs/{id}. A node runs 2 jobs at once (the others wait their turn, running), keeps its last 100 in memory, and refuses a new one while 100 are unfinished (409 busy).",
    request_body = BulkJobCall,
    responses((status = 202, description = "The job, started.", body = BulkJob), (status = 409, description = "busy: 100 bulk jobs are unfinished on this node.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn start_job(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(call): ApiJson<BulkJobCall>,
) -> ApiResult<impl IntoResponse> {
    let BulkJobCall { action, filter } = call;
    if filter.limit.is_some() || filter.cursor.is_some() {
        let field = if filter.limit.is_some() { "filter.limit" } else { "filter.cursor" };
        return Err(ValidationError::unprocessable(field, "a job goes on until nothing more matches").into());
    }
    let plan = plan(&s, &caller, &filter, action)?;
    let job = BulkJob {
        id: format!("job-{:016x}", rand::random::<u64>()),
        action,
        filter: describe(&filter),
        state: BulkJobState::Running,
        matched: 0,
        changed: 0,
        skipped: 0,
        error: None,
        started_by: caller.name.clone(),
        started_at: s.clock.now(),
        finished_at: None,
    };
    let shown = job.clone();
    let job = s.bulk_jobs.start(job)?;
    let slots = s.bulk_jobs.running.clone();
    tokio::spawn(async move {
        let _slot = slots.acquire_owned().await;
        let report = |r: &BulkResult| {
            let mut j = job.lock().expect("job lock");
            (j.matched, j.changed, j.skipped) = (r.matched, r.changed, r.skipped);
        };
        let outcome = run(&s, &caller, &plan, action, u64::MAX, (0, None), &report).await;
        let changed = {
            let mut j = job.lock().expect("job lock");
            j.finished_at = Some(s.clock.now());
            match outcome {
                Ok(r) => {
                    (j.matched, j.changed, j.skipped, j.state) = (r.matched, r.changed, r.skipped, BulkJobState::Done)
                }
                Err(e) => (j.state, j.error) = (BulkJobState::Stopped, Some(e.message)),
            }
            (j.changed, j.filter.clone())
        };
        caller.audit(&s, audit_action(action), format!("{} tasks matching {} (a job)", changed.0, changed.1)).await;
    });
    Ok((StatusCode::ACCEPTED, Json(shown)))
}

/// A bulk job's progress.
#[utoipa::path(
    get,
    path = "/v1/tasks/jobs/{id}",
    tag = "tasks",
    operation_id = "getBulkJob",
    summary = "A bulk job and its progress",
    params(("id" = String, Path, description = "The job's id, from POST /v1/tasks/jobs.", max_length = 64)),
    responses((status = 200, description = "The job: running, done or stopped, with its counts so far.", body = BulkJob), (status = 404, description = "not_found: no such job on this node (jobs live in the memory of the node that runs them).", body = ErrorBody))
)]
pub(super) async fn get_job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BulkJob>> {
    caller.may(&s, Action::Operate, None)?;
    s.bulk_jobs.find(&id).map(Json).ok_or_else(|| StoreError::NotFound.into())
}
