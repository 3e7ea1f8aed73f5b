//! Workflow endpoints: submit a DAG, get it with its speedup report, wait for it, cancel it, retry
//! it; and a workflow task's parents' results, a page at a time.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::TaskId;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{ErrorBody, ParentList};
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

#[utoipa::path(
    post,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "submitWorkflow",
    summary = "Submit a workflow (a DAG of tasks) atomically",
    request_body = WorkflowSpec,
    responses((status = 201, description = "The workflow, running, with its nodes (no speedup report yet).", body = Workflow), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
pub(super) async fn submit(
    State(s): State<AppState>,
    caller: Caller,
    crate::traces::TraceParentHeader(traceparent): crate::traces::TraceParentHeader,
    ApiJson(spec): ApiJson<WorkflowSpec>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Submit, None)?;
    let now = s.clock.now();
    let schemas = s.schemas.current().await?;
    for (i, t) in spec.tasks.iter().enumerate() {
        schemas.check(|| format!("tasks[{i}].payload"), &t.kind, t.payload.as_deref())?;
    }
    let traceparent = spec.traceparent.or(traceparent);
    let mut plan = spec.plan(&s.config.limits, now)?;
    caller.may_all(&s, Action::Submit, plan.nodes.iter().map(|n| n.task.queue.as_str()))?;
    let span = s.traces.submit(plan.nodes.iter_mut().map(|n| &mut n.task), traceparent);
    let workflow = s.store.submit_workflow(SubmitWorkflow { plan, now }).await;
    span.end(workflow.as_ref().map(|w| Some(w.id)));
    let workflow = workflow?;
    Ok((StatusCode::CREATED, Json(shown(&caller, workflow))))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    tag = "workflows",
    operation_id = "getWorkflow",
    summary = "Get a workflow with its nodes, result and speedup report",
    params(("id" = TaskId, Path, description = "The workflow id (a UUID).")),
    responses((status = 200, description = "The workflow with its nodes, result and speedup report.", body = Workflow), (status = 404, description = "not_found: no such workflow.", body = ErrorBody))
)]
pub(super) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Workflow>> {
    Ok(Json(shown(&caller, workflow_for(&s, &caller, Action::Read, task_id(&id)?).await?)))
}

/// The workflow as a graph to draw: fan-outs folded, laid out by layer, critical path marked.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/graph",
    tag = "workflows",
    operation_id = "workflowGraph",
    summary = "A workflow laid out as a graph, fan-outs folded",
    description = "The workflow's nodes as boxes to draw left to right by dependency: a fan-out's children (nodes named parent/000017) fold into one box parent/* with their count and states, so a fan-out of any width is one box; the critical path from the speedup report is marked. Coordinates are in the drawing's units (width, height).",
    params(("id" = TaskId, Path, description = "The workflow id (a UUID).")),
    responses((status = 200, description = "The laid-out graph.", body = taskwarden_core::workflow::graph::WorkflowGraph), (status = 404, description = "not_found: no such workflow.", body = ErrorBody))
)]
pub(super) async fn graph(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<taskwarden_core::workflow::graph::WorkflowGraph>> {
    let w = workflow_for(&s, &caller, Action::Read, task_id(&id)?).await?;
    let critical = w.speedup.map(|r| r.critical_nodes).unwrap_or_default();
    let nodes = w.nodes;
    // Thousands of nodes lay out in milliseconds, but off the threads that serve requests.
    let graph = tokio::task::spawn_blocking(move || taskwarden_core::workflow::graph::layout(&nodes, &critical))
        .await
        .map_err(|e| ApiError::from(taskwarden_store::StoreError::Internal(e.to_string())))?;
    Ok(Json(graph))
}

/// Long-polls until the workflow's outcome is decided or the timeout passes.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/wait",
    tag = "workflows",
    operation_id = "waitWorkflow",
    summary = "Long-poll until the workflow's outcome is decided or the timeout passes",
    params(("id" = TaskId, Path, description = "The workflow id (a UUID)."), super::WaitQuery),
    responses((status = 200, description = "The workflow with its nodes and speedup report; check state (still running when the timeout passed).", body = Workflow), (status = 404, description = "not_found: no such workflow.", body = ErrorBody))
)]
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

#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/cancel",
    tag = "workflows",
    operation_id = "cancelWorkflow",
    summary = "Cancel every unfinished task of a workflow (running ones are asked to stop)",
    params(("id" = TaskId, Path, description = "The workflow id (a UUID).")),
    responses((status = 200, description = "The cancelled workflow; its unfinished tasks are cancelled (running ones are asked to stop).", body = Workflow), (status = 404, description = "not_found: no such workflow.", body = ErrorBody), (status = 409, description = "conflict: the workflow already finished (succeeded, failed or cancelled).", body = ErrorBody))
)]
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
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/retry",
    tag = "workflows",
    operation_id = "retryWorkflow",
    summary = "Run a decided workflow's failed and cancelled tasks again, keeping what succeeded",
    description = "Runs again every failed or cancelled task of a failed or cancelled workflow, and everything downstream of them; succeeded tasks are kept with their results and not run again, and so is a failure that a kept task already took into account (a collecting fan-out's join read it, say). Re-run tasks get a fresh attempt budget and keep their history. The workflow is running again, with its counts started over from the kept tasks. See docs/design-workflows.md, \"Retry\".",
    params(("id" = TaskId, Path, description = "The workflow id (a UUID).")),
    responses((status = 200, description = "The workflow, running again: re-run tasks are ready, or scheduled until their re-run parents finish.", body = Workflow), (status = 404, description = "not_found: no such workflow.", body = ErrorBody), (status = 409, description = "conflict: only a decided workflow can be retried: it is still running, it succeeded, some of its tasks have not stopped yet (retry once they have), or every failure was already taken into account by a task that succeeded.", body = ErrorBody))
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ParentsQuery {
    /// The previous page's `next`: the node id to go on after.
    #[param(schema_with = taskwarden_core::schema::name)]
    after: Option<String>,
    /// Most parents on the page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/parents",
    tag = "workflows",
    operation_id = "listParents",
    summary = "A workflow task's parents' outcomes, in node order, a page at a time",
    params(("id" = TaskId, Path, description = "The task id (a UUID)."), ParentsQuery),
    responses((status = 200, description = "A page of parents, ordered by node id. A task that is not a workflow task has no parents: the list is empty.", body = ParentList), (status = 404, description = "not_found: no such task.", body = ErrorBody))
)]
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
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/fan-out",
    tag = "workflows",
    operation_id = "fanOut",
    summary = "Fan a running task out into children and a join (a plain task becomes the root of a workflow); calling it again returns the first fan-out",
    request_body = FanOutRequest,
    params(("id" = TaskId, Path, description = "The running task's id.")),
    responses((status = 201, description = "The fan-out.", body = FanOut), (status = 404, description = "not_found: no such task.", body = ErrorBody), (status = 409, description = "lease_lost: the lease is no longer held.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
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
    let schemas = s.schemas.current().await?;
    for (i, t) in plan.children.iter().enumerate() {
        schemas.check(|| format!("children[{i}].payload"), &t.kind, Some(&t.payload))?;
    }
    schemas.check(|| "join.payload".into(), &plan.join.kind, Some(&plan.join.payload))?;
    let queues = plan.children.iter().chain([&plan.join]).map(|t| t.queue.as_str());
    caller.may_all(&s, Action::Work, queues)?;
    let fan_out: FanOut = s.store.fan_out(FanOutTasks { task_id: id, lease, plan, now }).await?;
    Ok((StatusCode::CREATED, Json(fan_out)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only workflows in this state.
    state: Option<WorkflowState>,
    /// Only workflows of this name.
    #[param(schema_with = taskwarden_core::schema::name)]
    name: Option<String>,
    /// The previous page's next_cursor.
    #[param(value_type = Option<TaskId>)]
    cursor: Option<String>,
    /// Most workflows on the page, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Workflows newest first, by state and name, a page at a time. A workflow's tasks may span
/// queues, so listing them needs a token for every queue (one by id needs only its queues).
#[utoipa::path(
    get,
    path = "/v1/workflows",
    tag = "workflows",
    operation_id = "listWorkflows",
    summary = "List workflows",
    description = "Newest first, by state and name, a page at a time. Needs a token for every queue (a workflow's tasks may span queues).",
    params(ListQuery),
    responses((status = 200, description = "A page of workflows.", body = WorkflowList))
)]
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
    if let Some(name) = &q.name {
        taskwarden_core::validate::check_name("name", name, &s.config.limits)?;
    }
    let (limit, before) = super::page(q.limit, q.cursor.as_deref())?;
    let page = s.store.list_workflows(ListWorkflows { state: q.state, name: q.name, before, limit }).await?;
    Ok(Json(WorkflowList { workflows: page.workflows, next_cursor: page.next.map(|id| id.to_string()) }))
}
