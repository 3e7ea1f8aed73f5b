//! Workflow endpoints: submit a DAG, get it with its speedup report, wait for it, cancel it; and a
//! workflow task's parents' results, a page at a time.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::protocol::ParentList;
use taskwarden_core::workflow::{FanOut, FanOutRequest, Workflow, WorkflowSpec};
use taskwarden_store::{CancelWorkflow, FanOutTasks, ListParents, SubmitWorkflow};

use super::{ApiResult, AppState, WaitQuery, until_finished};
use crate::error::{ApiError, ApiJson, ApiQuery, task_id};

pub(super) async fn submit(
    State(s): State<AppState>,
    ApiJson(spec): ApiJson<WorkflowSpec>,
) -> ApiResult<impl IntoResponse> {
    let now = s.clock.now();
    let plan = spec.plan(&s.config.limits, now)?;
    let workflow = s.store.submit_workflow(SubmitWorkflow { plan, now }).await?;
    Ok((StatusCode::CREATED, Json(workflow)))
}

pub(super) async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Workflow>> {
    Ok(Json(s.store.get_workflow(task_id(&id)?).await?))
}

/// Long-polls until the workflow's outcome is decided or the timeout passes.
pub(super) async fn wait(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Workflow>> {
    let id = task_id(&id)?;
    // Only the state on each wake-up; the whole workflow (nodes, report) once, at the end.
    until_finished(&s, &q, || async { Ok(s.store.workflow_state(id).await?.is_terminal()) }).await?;
    Ok(Json(s.store.get_workflow(id).await?))
}

pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Workflow>> {
    Ok(Json(s.store.cancel_workflow(CancelWorkflow { id: task_id(&id)?, now: s.clock.now() }).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParentsQuery {
    after: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn parents(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ParentsQuery>,
) -> ApiResult<Json<ParentList>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let parents = s.store.parents(ListParents { task_id: task_id(&id)?, after: q.after, limit }).await?;
    let next = (parents.len() == limit as usize).then(|| parents.last().map(|p| p.node.clone())).flatten();
    Ok(Json(ParentList { parents, next }))
}

/// A running task fans out into children and a join (fenced by its lease: 409 when it is stale).
pub(super) async fn fan_out(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FanOutRequest>,
) -> ApiResult<impl IntoResponse> {
    let now = s.clock.now();
    let lease = req.lease;
    let plan = req.plan(&s.config.limits, now)?;
    let fan_out: FanOut = s.store.fan_out(FanOutTasks { task_id: task_id(&id)?, lease, plan, now }).await?;
    Ok((StatusCode::CREATED, Json(fan_out)))
}
