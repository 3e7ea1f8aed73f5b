//! Workflow endpoints: submit a DAG, get it with its speedup report, wait for it, cancel it, retry
//! it; and a workflow task's parents' results, a page at a time.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::TaskId;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::ParentList;
use taskwarden_core::workflow::{FanOut, FanOutRequest, Workflow, WorkflowList, WorkflowSpec, WorkflowState};
use taskwarden_store::{CancelWorkflow, FanOutTasks, ListParents, ListWorkflows, RetryWorkflow, SubmitWorkflow};

use super::{ApiResult, AppState, WaitQuery, until_finished};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, task_id};

/// Most nodes a workflow may have for a caller limited to some queues to read or cancel it (each
/// node's queue is checked); past it, the caller needs a token for every queue.
const MAX_SCOPED_NODES: usize = 1000;

/// Loads a workflow the caller may take `action` on: every node's queue inside its scope.
async fn workflow_for(s: &AppState, caller: &Caller, action: Action, id: TaskId) -> ApiResult<Workflow> {
    caller.may(s, action, None)?;
    let workflow = s.store.get_workflow(id).await.map_err(ApiError::missing("workflow"))?;
    if !caller.grant.queues.is_all() {
        if workflow.nodes.len() > MAX_SCOPED_NODES {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("a workflow of over {MAX_SCOPED_NODES} nodes needs a token for every queue"),
            ));
        }
        for node in &workflow.nodes {
            caller.may(s, action, Some(&s.store.get(node.task_id).await?.queue))?;
        }
    }
    Ok(workflow)
}

/// A workflow as this caller may see it: without its result unless it may see payloads.
fn shown(caller: &Caller, mut workflow: Workflow) -> Workflow {
    if !caller.sees_payloads() && workflow.result.is_some() {
        workflow.result = Some(serde_json::value::RawValue::from_string("null".into()).expect("null is JSON"));
    }
    workflow
}

pub(super) async fn submit(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(spec): ApiJson<WorkflowSpec>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Submit, None)?;
    let now = s.clock.now();
    let plan = spec.plan(&s.config.limits, now)?;
    caller.may_all(&s, Action::Submit, plan.nodes.iter().map(|n| n.task.queue.as_str()))?;
    let workflow = s.store.submit_workflow(SubmitWorkflow { plan, now }).await?;
    Ok((StatusCode::CREATED, Json(shown(&caller, workflow))))
}

pub(super) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    Ok(Json(shown(&caller, workflow_for(&s, &caller, Action::Read, task_id(&id)?).await?)))
}

/// Long-polls until the workflow's outcome is decided or the timeout passes.
pub(super) async fn wait(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Workflow>> {
    let id = task_id(&id)?;
    workflow_for(&s, &caller, Action::Read, id).await?;
    // Only the state on each wake-up; the whole workflow (nodes, report) once, at the end.
    until_finished(&s, &q, || async { Ok(s.store.workflow_state(id).await?.is_terminal()) }).await?;
    Ok(Json(shown(&caller, s.store.get_workflow(id).await?)))
}

pub(super) async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    let id = workflow_for(&s, &caller, Action::Operate, task_id(&id)?).await?.id;
    let workflow = s.store.cancel_workflow(CancelWorkflow { id, now: s.clock.now() }).await?;
    caller.audit(&s, "workflow.cancel", id.to_string()).await;
    Ok(Json(shown(&caller, workflow)))
}

/// Runs a decided workflow's failed and cancelled tasks again, and what is downstream of them,
/// keeping what succeeded (`docs/design-workflows.md`, "Retry"); 409 unless it is decided.
pub(super) async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    let id = workflow_for(&s, &caller, Action::Operate, task_id(&id)?).await?.id;
    let workflow = s
        .store
        .retry_workflow(RetryWorkflow { id, now: s.clock.now() })
        .await
        .map_err(ApiError::missing("workflow"))?;
    caller.audit(&s, "workflow.retry", id.to_string()).await;
    Ok(Json(shown(&caller, workflow)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParentsQuery {
    after: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn parents(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ParentsQuery>,
) -> ApiResult<Json<ParentList>> {
    let task = super::tasks::task_for(&s, &caller, Action::Work, task_id(&id)?).await?;
    // Parents' results are for the worker running the child, as a fan-out is.
    caller.runs(&s, &task).await?;
    let id = task.id;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let parents = s.store.parents(ListParents { task_id: id, after: q.after, limit }).await?;
    let next = (parents.len() == limit as usize).then(|| parents.last().map(|p| p.node.clone())).flatten();
    Ok(Json(ParentList { parents, next }))
}

/// A running task fans out into children and a join (fenced by its lease: 409 when it is stale).
/// Fans out from a running task. With tokens, only the worker holding the task's lease may, and
/// only into queues its token may use.
pub(super) async fn fan_out(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FanOutRequest>,
) -> ApiResult<impl IntoResponse> {
    let id = task_id(&id)?;
    caller.may(&s, Action::Work, None)?;
    if caller.authenticated() {
        caller.runs(&s, &super::tasks::task_for(&s, &caller, Action::Work, id).await?).await?;
    }
    let now = s.clock.now();
    let lease = req.lease;
    let plan = req.plan(&s.config.limits, now)?;
    let queues = plan.children.iter().chain([&plan.join]).map(|t| t.queue.as_str());
    caller.may_all(&s, Action::Work, queues)?;
    let fan_out: FanOut = s.store.fan_out(FanOutTasks { task_id: id, lease, plan, now }).await?;
    Ok((StatusCode::CREATED, Json(fan_out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<WorkflowState>,
    name: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Workflows newest first, by state and name, a page at a time. A workflow's tasks may span
/// queues, so listing them needs a token for every queue (one by id needs only its queues).
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<WorkflowList>> {
    caller.may(&s, Action::Read, None)?;
    if !caller.grant.queues.is_all() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "listing workflows needs a token for every queue; get one workflow by its id instead",
        ));
    }
    if let Some(name) = &q.name
        && (name.is_empty() || name.len() > 256)
    {
        return Err(ApiError::invalid("name", "must be 1 to 256 bytes"));
    }
    let (limit, before) = super::page(q.limit, q.cursor.as_deref())?;
    let page = s.store.list_workflows(ListWorkflows { state: q.state, name: q.name, before, limit }).await?;
    Ok(Json(WorkflowList { workflows: page.workflows, next_cursor: page.next.map(|id| id.to_string()) }))
}
