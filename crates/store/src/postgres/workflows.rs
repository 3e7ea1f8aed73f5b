//! Workflows on PostgreSQL: the same rules as the embedded store (see `sqlite/workflows.rs`),
//! made safe between nodes by row locks. A finishing task locks its workflow's row while it counts
//! itself, so two nodes finishing the last two tasks at once still decide the outcome once.

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::GenericClient;
use serde_json::value::RawValue;
use taskwarden_core::events::{EventType, NewEvent};
use taskwarden_core::workflow::{
    FailurePolicy, FanOut, FanOutStep, NodeTiming, ParentResult, Tally, Workflow, WorkflowNode, WorkflowState,
    WorkflowSummary, sorted_parents, speedup_report,
};
use taskwarden_core::{Task, TaskId, TaskState, Timestamp};
use uuid::Uuid;

use super::ops::save;
use super::rows::{self, Tx, execute, json, lock, lock_many, parse, query, query_opt, uuid};
use super::{PgResult, Shared, Touched};
use crate::StoreError;
use crate::params::{CancelWorkflow, FanOutTasks, ListParents, ListWorkflows, SubmitWorkflow, WorkflowPage};

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

async fn insert_edges(tx: &Tx<'_>, parents: &[Uuid], children: &[Uuid]) -> PgResult<()> {
    if !parents.is_empty() {
        execute(
            tx,
            "INSERT INTO task_edges (parent_id, child_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            &[&parents, &children],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn submit(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &SubmitWorkflow) -> PgResult<Workflow> {
    let plan = &p.plan;
    let id = shared.next_id(p.now);
    let ids: Vec<TaskId> = plan.nodes.iter().map(|_| shared.next_id(p.now)).collect();
    let result_task = (plan.sinks.len() == 1).then(|| uuid(ids[plan.sinks[0]]));
    let policy = serde_json::to_string(&plan.failure_policy).map_err(bad)?;
    execute(
        tx,
        "INSERT INTO workflows (id, name, failure_policy, state, total, result_task, created_at) \
         VALUES ($1, $2, $3, 'running', $4, $5, $6)",
        &[&uuid(id), &plan.name, &policy, &(plan.nodes.len() as i32), &result_task, &p.now.as_micros()],
    )
    .await?;
    let started = NewEvent::workflow(EventType::WorkflowStarted, id, plan.name.as_deref(), p.now);
    super::events::append(tx, shared, &[started]).await?;
    let mut tasks = Vec::with_capacity(plan.nodes.len());
    let (mut parents, mut children) = (Vec::new(), Vec::new());
    for (i, node) in plan.nodes.iter().enumerate() {
        let task = Task::new_node(ids[i], node.task.clone(), id, node.id.clone(), node.parents.len() as u32, p.now);
        for &parent in &node.parents {
            parents.push(uuid(ids[parent]));
            children.push(uuid(ids[i]));
        }
        st.touch_for(&task);
        tasks.push(task);
    }
    rows::insert(tx, shared, &tasks).await?;
    insert_edges(tx, &parents, &children).await?;
    Ok(Workflow::started(id, plan, &tasks, p.now))
}

/// Adds a fan-out under a running task. See [`crate::Store::fan_out`].
pub(crate) async fn fan_out(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &FanOutTasks) -> PgResult<FanOut> {
    // Locking the parent serializes two attempts of the same task fanning out at once.
    let mut parent = lock(tx, p.task_id).await?;
    match &parent.lease {
        Some(l) if parent.state == TaskState::Running && l.token == p.lease => {}
        _ => return Err(StoreError::LeaseLost.into()),
    }
    let prefix = parent.node.clone().unwrap_or_else(|| "root".to_owned());
    let join_node = format!("{prefix}/join");
    // Already fanned out by an earlier attempt: hand back the same fan-out.
    if let Some(wf) = parent.workflow_id {
        let existing =
            query_opt(tx, "SELECT id FROM tasks WHERE workflow_id = $1 AND node = $2", &[&uuid(wf), &join_node])
                .await?;
        if let Some(join) = existing {
            let join: Uuid = join.get(0);
            let count = query_opt(tx, "SELECT COUNT(*) FROM task_edges WHERE child_id = $1", &[&join]).await?;
            let children = count.map_or(0, |r| r.get::<_, i64>(0)) as u32;
            return Ok(FanOut { workflow_id: wf, join_id: rows::task_id(join), children });
        }
    }
    let n = p.plan.children.len();
    let join_id = shared.next_id(p.now);
    let wf = match parent.workflow_id {
        Some(wf) => {
            // The join takes the parent's place: its dependents now wait for the whole fan-out,
            // and if the parent's result was the workflow's, the join's is.
            execute(
                tx,
                "UPDATE workflows SET total = total + $2, \
                 result_task = CASE WHEN result_task = $3 THEN $4 ELSE result_task END WHERE id = $1",
                &[&uuid(wf), &((n + 1) as i32), &uuid(parent.id), &uuid(join_id)],
            )
            .await?;
            execute(
                tx,
                "UPDATE task_edges SET parent_id = $2 WHERE parent_id = $1",
                &[&uuid(parent.id), &uuid(join_id)],
            )
            .await?;
            wf
        }
        None => {
            // A plain task becomes the root of a workflow of its own.
            let wf = shared.next_id(p.now);
            let policy = serde_json::to_string(&FailurePolicy::FailFast).map_err(bad)?;
            execute(
                tx,
                "INSERT INTO workflows (id, name, failure_policy, state, total, result_task, created_at) \
                 VALUES ($1, $2, $3, 'running', $4, $5, $6)",
                &[&uuid(wf), &parent.kind, &policy, &((n + 2) as i32), &uuid(join_id), &parent.created_at.as_micros()],
            )
            .await?;
            let started = NewEvent::workflow(EventType::WorkflowStarted, wf, Some(&parent.kind), p.now);
            super::events::append(tx, shared, &[started]).await?;
            parent.workflow_id = Some(wf);
            parent.node = Some(prefix.clone());
            rows::update(tx, shared, [&parent], None).await?;
            wf
        }
    };
    let mut tasks = Vec::with_capacity(n + 1);
    for (i, spec) in p.plan.children.iter().enumerate() {
        let id = shared.next_id(p.now);
        // Zero-padded, so node order is child order when the join reads its parents.
        let child = Task::new_node(id, spec.clone(), wf, format!("{prefix}/{i:06}"), 0, p.now);
        st.touch_for(&child);
        tasks.push(child);
    }
    let parents: Vec<Uuid> = tasks.iter().map(|t| uuid(t.id)).collect();
    tasks.push(Task::new_node(join_id, p.plan.join.clone(), wf, join_node, n as u32, p.now));
    rows::insert(tx, shared, &tasks).await?;
    insert_edges(tx, &parents, &vec![uuid(join_id); n]).await?;
    if let Some(policy) = &p.plan.policy {
        let policy = serde_json::to_string(policy).map_err(bad)?;
        execute(
            tx,
            "INSERT INTO fanouts (join_id, policy, total) VALUES ($1, $2, $3)",
            &[&uuid(join_id), &policy, &(n as i32)],
        )
        .await?;
    }
    Ok(FanOut { workflow_id: wf, join_id, children: n as u32 })
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = PgResult<T>> + Send + 'a>>;

/// A workflow task reached a terminal state: count it, release its children, decide the outcome.
/// Boxed, because deciding can cancel tasks whose own finishing comes back here.
pub(crate) fn on_finished<'a>(
    tx: &'a Tx<'_>,
    st: &'a mut Touched,
    shared: &'a Shared,
    task: &'a Task,
) -> Boxed<'a, ()> {
    Box::pin(async move {
        let Some(wf) = task.workflow_id else { return Ok(()) };
        let now = task.finished_at.unwrap_or(task.updated_at);
        let ok = task.state == TaskState::Succeeded;
        // A member of a fan-out with its own policy: that policy deals with its failures first.
        let handled = fan_out_member_finished(tx, st, shared, task, now).await?;
        // Counting locks the workflow's row until commit: one finishing task at a time decides.
        let row = query_opt(
            tx,
            "UPDATE workflows SET succeeded = succeeded + $2, failed = failed + $3, handled = handled + $4 \
             WHERE id = $1 RETURNING failure_policy, state, total, succeeded, failed, handled",
            &[&uuid(wf), &(ok as i32), &((!ok && !handled) as i32), &(handled as i32)],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let policy: FailurePolicy = json(row.get(0))?;
        let state: WorkflowState = parse(row.get(1))?;
        if state.is_terminal() {
            return Ok(()); // decided already (a fail-fast or a cancel is winding the rest down)
        }
        let [total, succeeded, failed, handled_count] = [2, 3, 4, 5].map(|i| row.get::<_, i32>(i) as u32);
        let step = policy.workflow_step(task, handled, Tally { total, succeeded, failed, handled: handled_count });
        if step.release_children {
            release_children(tx, st, shared, task.id, now).await?;
        }
        if let Some((state, error)) = step.decided {
            finish(tx, st, shared, wf, state, error, now).await?;
        }
        Ok(())
    })
}

/// If `task` is a member of a fan-out with its own policy, counts it there and applies the
/// policy. Returns whether the policy dealt with the task's failure (false for a success).
async fn fan_out_member_finished(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    task: &Task,
    now: Timestamp,
) -> PgResult<bool> {
    let ok = task.state == TaskState::Succeeded;
    let found = query(
        tx,
        "UPDATE fanouts SET succeeded = succeeded + $2, failed = failed + $3 \
         WHERE join_id IN (SELECT child_id FROM task_edges WHERE parent_id = $1) \
         RETURNING join_id, policy, total, succeeded, failed, decided",
        &[&uuid(task.id), &(ok as i32), &(!ok as i32)],
    )
    .await?;
    let Some(row) = found.first() else { return Ok(false) };
    let join = rows::task_id(row.get(0));
    if row.get::<_, bool>(5) {
        return Ok(!ok); // wound down by the fan-out's decision (a cancelled sibling, say)
    }
    let policy: FailurePolicy = json(row.get(1))?;
    let [total, succeeded, failed] = [2, 3, 4].map(|i| row.get::<_, i32>(i) as u32);
    let handled = !ok && policy.handles_failures();
    let step = policy.fan_out_step(ok, total, succeeded, failed);
    if step == FanOutStep::Wait {
        return Ok(handled);
    }
    execute(tx, "UPDATE fanouts SET decided = true WHERE join_id = $1", &[&uuid(join)]).await?;
    let mut join_task = lock(tx, join).await?;
    if step == FanOutStep::ReleaseJoin {
        execute(tx, "UPDATE tasks SET pending_parents = 0 WHERE id = $1", &[&uuid(join)]).await?;
        if join_task.dependencies_met(now).is_ok() {
            rows::update(tx, shared, [&join_task], None).await?;
            st.touch_for(&join_task);
        }
    } else if join_task.cancel(now).is_ok() {
        // The join's cancellation is what the workflow's policy sees.
        join_task.error = Some(format!("fan-out failed: task {} {}", task.node.as_deref().unwrap_or("?"), task.state));
        save(tx, st, shared, std::slice::from_ref(&join_task)).await?;
    }
    // The outcome is decided: siblings still running or waiting are cancelled.
    let siblings = query(tx, "SELECT parent_id FROM task_edges WHERE child_id = $1", &[&uuid(join)]).await?;
    let ids: Vec<TaskId> = siblings.iter().map(|r| rows::task_id(r.get(0))).filter(|id| *id != task.id).collect();
    let mut cancelled = Vec::new();
    for mut sibling in lock_many(tx, &ids).await? {
        if sibling.cancel(now).is_ok() {
            cancelled.push(sibling);
        }
    }
    save(tx, st, shared, &cancelled).await?;
    Ok(handled)
}

/// Counts one finished parent for each child; a child with none left becomes ready.
async fn release_children(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    parent: TaskId,
    now: Timestamp,
) -> PgResult<()> {
    let counted = query(
        tx,
        "UPDATE tasks SET pending_parents = pending_parents - 1 \
         WHERE id IN (SELECT child_id FROM task_edges WHERE parent_id = $1) AND state = 'scheduled' \
         RETURNING id, pending_parents",
        &[&uuid(parent)],
    )
    .await?;
    let free: Vec<TaskId> =
        counted.iter().filter(|r| r.get::<_, i32>(1) == 0).map(|r| rows::task_id(r.get(0))).collect();
    let mut ready = Vec::new();
    for mut task in lock_many(tx, &free).await? {
        if task.dependencies_met(now).is_ok() {
            st.touch_for(&task);
            ready.push(task);
        }
    }
    rows::update(tx, shared, &ready, None).await
}

/// Records the workflow's outcome and cancels what has not finished.
async fn finish(
    tx: &Tx<'_>,
    st: &mut Touched,
    shared: &Shared,
    wf: TaskId,
    state: WorkflowState,
    error: Option<String>,
    now: Timestamp,
) -> PgResult<()> {
    // Recorded before cancelling, so the cancelled tasks' own on_finished sees a decided workflow.
    execute(
        tx,
        "UPDATE workflows SET state = $2, error = $3, finished_at = $4 WHERE id = $1",
        &[&uuid(wf), &state.as_str(), &error, &now.as_micros()],
    )
    .await?;
    let decided = NewEvent::workflow_decided(wf, state, error.as_deref(), now);
    super::events::append(tx, shared, decided.as_slice()).await?;
    let open = query(
        tx,
        "SELECT doc FROM tasks WHERE workflow_id = $1 AND state IN ('scheduled', 'ready', 'running') \
         ORDER BY id FOR UPDATE",
        &[&uuid(wf)],
    )
    .await?;
    let mut cancelled = Vec::new();
    for mut task in rows::tasks(&open)? {
        if task.cancel(now).is_ok() {
            cancelled.push(task);
        }
    }
    save(tx, st, shared, &cancelled).await
}

pub(crate) async fn state(c: &impl GenericClient, id: TaskId) -> PgResult<WorkflowState> {
    let row = query_opt(c, "SELECT state FROM workflows WHERE id = $1", &[&uuid(id)]).await?;
    parse(row.ok_or(StoreError::NotFound)?.get(0))
}

pub(crate) async fn cancel(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &CancelWorkflow) -> PgResult<Workflow> {
    let row = query_opt(tx, "SELECT state FROM workflows WHERE id = $1 FOR UPDATE", &[&uuid(p.id)]).await?;
    let state: WorkflowState = parse(row.ok_or(StoreError::NotFound)?.get(0))?;
    if state.is_terminal() {
        return Err(StoreError::Conflict(format!("the workflow already {}", state.as_str())).into());
    }
    finish(tx, st, shared, p.id, WorkflowState::Cancelled, Some("cancelled".into()), p.now).await?;
    get(tx, p.id).await
}

/// A workflow with its nodes, result and speedup report.
/// Workflows newest first (ids are time-ordered), filtered by state and name.
pub(crate) async fn list(c: &impl GenericClient, p: &ListWorkflows) -> PgResult<WorkflowPage> {
    let before = p.before.map(uuid);
    let state = p.state.map(|s| s.as_str());
    let rows = query(
        c,
        "SELECT id, name, state, total, succeeded, failed, error, created_at, finished_at FROM workflows \
         WHERE ($1::uuid IS NULL OR id < $1) AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR name = $3) \
         ORDER BY id DESC LIMIT $4",
        &[&before, &state, &p.name, &i64::from(p.limit)],
    )
    .await?;
    let mut workflows = Vec::with_capacity(rows.len());
    for r in &rows {
        workflows.push(WorkflowSummary {
            id: TaskId::from_bytes(*r.get::<_, Uuid>(0).as_bytes()),
            name: r.get(1),
            state: parse(r.get(2))?,
            total: r.get::<_, i32>(3) as u32,
            succeeded: r.get::<_, i32>(4) as u32,
            failed: r.get::<_, i32>(5) as u32,
            error: r.get(6),
            created_at: Timestamp::from_micros(r.get(7)),
            finished_at: r.get::<_, Option<i64>>(8).map(Timestamp::from_micros),
        });
    }
    let next = (workflows.len() == p.limit as usize).then(|| workflows.last().map(|w| w.id)).flatten();
    Ok(WorkflowPage { workflows, next })
}

pub(crate) async fn get(c: &impl GenericClient, id: TaskId) -> PgResult<Workflow> {
    let r = query_opt(
        c,
        "SELECT name, failure_policy, state, total, succeeded, failed, result_task, error, created_at, finished_at \
         FROM workflows WHERE id = $1",
        &[&uuid(id)],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    let state: WorkflowState = parse(r.get(2))?;
    let created_at = Timestamp::from_micros(r.get(8));
    let sink: Option<Uuid> = r.get(6);

    // Nodes in insertion order, which is dependency order.
    let tasks =
        rows::tasks(&query(c, "SELECT doc FROM tasks WHERE workflow_id = $1 ORDER BY seq", &[&uuid(id)]).await?)?;
    let index: std::collections::HashMap<TaskId, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut timings: Vec<NodeTiming> = tasks
        .iter()
        .map(|t| NodeTiming {
            parents: Vec::new(),
            ready_at: created_at,
            attempts: t.history.iter().map(|a| (a.started_at, a.finished_at)).collect(),
        })
        .collect();
    let mut has_children = vec![false; tasks.len()];
    let edges = query(
        c,
        "SELECT e.parent_id, e.child_id FROM task_edges e JOIN tasks t ON t.id = e.child_id WHERE t.workflow_id = $1",
        &[&uuid(id)],
    )
    .await?;
    for edge in edges {
        let (parent, child) = (rows::task_id(edge.get(0)), rows::task_id(edge.get(1)));
        if let (Some(&p), Some(&c)) = (index.get(&parent), index.get(&child)) {
            timings[c].parents.push(p);
            has_children[p] = true;
            if let Some(done) = tasks[p].finished_at {
                timings[c].ready_at = timings[c].ready_at.max(done);
            }
        }
    }
    let result = match (state, sink) {
        (WorkflowState::Succeeded, Some(sink)) => {
            let sink = rows::task_id(sink);
            tasks.iter().find(|t| t.id == sink).and_then(|t| t.result.clone())
        }
        (WorkflowState::Succeeded, None) => {
            // Several sinks: an object of their results by node id.
            let mut map = serde_json::Map::new();
            for (_, t) in tasks.iter().enumerate().filter(|(i, _)| !has_children[*i]) {
                let v: serde_json::Value = t
                    .result
                    .as_ref()
                    .map(|r| serde_json::from_str(r.get()))
                    .transpose()
                    .map_err(bad)?
                    .unwrap_or_default();
                map.insert(t.node.clone().unwrap_or_default(), v);
            }
            Some(RawValue::from_string(serde_json::to_string(&map).map_err(bad)?).map_err(bad)?)
        }
        _ => None,
    };
    let nodes = tasks
        .iter()
        .zip(&timings)
        .map(|(t, timing)| WorkflowNode {
            node: t.node.clone().unwrap_or_default(),
            task_id: t.id,
            state: t.state,
            parents: sorted_parents(timing),
        })
        .collect();
    Ok(Workflow {
        id,
        name: r.get(0),
        failure_policy: json(r.get(1))?,
        state,
        total: r.get::<_, i32>(3) as u32,
        succeeded: r.get::<_, i32>(4) as u32,
        failed: r.get::<_, i32>(5) as u32,
        result,
        error: r.get(7),
        created_at,
        finished_at: r.get::<_, Option<i64>>(9).map(Timestamp::from_micros),
        nodes,
        speedup: Some(speedup_report(&timings)),
    })
}

pub(crate) async fn parents(c: &impl GenericClient, p: &ListParents) -> PgResult<Vec<ParentResult>> {
    let found = query(
        c,
        "SELECT t.doc FROM task_edges e JOIN tasks t ON t.id = e.parent_id \
         WHERE e.child_id = $1 AND ($2::text IS NULL OR t.node > $2) ORDER BY t.node LIMIT $3",
        &[&uuid(p.task_id), &p.after, &i64::from(p.limit)],
    )
    .await?;
    let parents: Vec<ParentResult> = rows::tasks(&found)?
        .into_iter()
        .map(|t| ParentResult {
            node: t.node.unwrap_or_default(),
            task_id: t.id,
            state: t.state,
            result: t.result,
            error: t.error,
        })
        .collect();
    if parents.is_empty() && rows::load(c, p.task_id).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    Ok(parents)
}
