//! Retrying a decided workflow on PostgreSQL: the same rules as the embedded store (see
//! `sqlite/workflow_retry.rs`), made safe between nodes by row locks. The workflow's row is locked
//! first, then its tasks' rows in id order; a task finishing locks its own row, then the
//! workflow's, so the two serialize (and should they deadlock, the database aborts one and the
//! transaction runs again). A second retry waits for the first and then finds it running.

use std::collections::HashMap;

use taskwarden_core::TaskId;
use taskwarden_core::events::{EventType, NewEvent};
use taskwarden_core::workflow::{FailurePolicy, RetryNode, Workflow, WorkflowState, plan_retry};
use uuid::Uuid;

use super::rows::{self, Tx, execute, json, parse, query, query_opt, uuid};
use super::workflows::get;
use super::{PgResult, Shared, Touched};
use crate::StoreError;
use crate::params::RetryWorkflow;

/// See [`crate::Store::retry_workflow`]. Everything is read and decided before the first write.
pub(crate) async fn retry(tx: &Tx<'_>, st: &mut Touched, shared: &Shared, p: &RetryWorkflow) -> PgResult<Workflow> {
    let row = query_opt(tx, "SELECT state FROM workflows WHERE id = $1 FOR UPDATE", &[&uuid(p.id)]).await?;
    let state: WorkflowState = parse(row.ok_or(StoreError::NotFound)?.get(0))?;

    let tasks = rows::tasks(
        &query(tx, "SELECT doc FROM tasks WHERE workflow_id = $1 ORDER BY id FOR UPDATE", &[&uuid(p.id)]).await?,
    )?;
    let index: HashMap<TaskId, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut nodes: Vec<RetryNode> =
        tasks.iter().map(|t| RetryNode { state: t.state, parents: Vec::new(), fan_out: None }).collect();
    let edges = query(
        tx,
        "SELECT e.parent_id, e.child_id FROM task_edges e JOIN tasks t ON t.id = e.child_id WHERE t.workflow_id = $1",
        &[&uuid(p.id)],
    )
    .await?;
    for edge in edges {
        let (parent, child) = (rows::task_id(edge.get(0)), rows::task_id(edge.get(1)));
        if let (Some(&pi), Some(&ci)) = (index.get(&parent), index.get(&child)) {
            nodes[ci].parents.push(pi);
        }
    }
    let fan_outs = query(
        tx,
        "SELECT f.join_id, f.policy FROM fanouts f JOIN tasks t ON t.id = f.join_id WHERE t.workflow_id = $1",
        &[&uuid(p.id)],
    )
    .await?;
    for f in fan_outs {
        if let Some(&j) = index.get(&rows::task_id(f.get(0))) {
            nodes[j].fan_out = Some(json::<FailurePolicy>(f.get(1))?);
        }
    }

    let plan = plan_retry(state, &nodes).map_err(|refused| StoreError::Conflict(refused.to_string()))?;

    let mut changed = Vec::with_capacity(plan.rerun.len());
    let (mut ids, mut waits) = (Vec::<Uuid>::new(), Vec::<i32>::new());
    for &(i, waits_for) in &plan.rerun {
        let mut task = tasks[i].clone();
        task.rerun(waits_for > 0, p.now)?;
        st.touch_for(&task);
        ids.push(uuid(task.id));
        waits.push(waits_for as i32);
        changed.push(task);
    }
    rows::update(tx, shared, &changed, None).await?;
    execute(
        tx,
        "UPDATE tasks SET pending_parents = u.waits FROM unnest($1::uuid[], $2::int4[]) AS u(id, waits) \
         WHERE tasks.id = u.id",
        &[&ids, &waits],
    )
    .await?;
    for f in &plan.fan_outs {
        execute(
            tx,
            "UPDATE fanouts SET succeeded = $2, failed = $3, decided = $4 WHERE join_id = $1",
            &[&uuid(tasks[f.join].id), &(f.succeeded as i32), &(f.failed as i32), &f.decided],
        )
        .await?;
    }
    let t = plan.tally;
    execute(
        tx,
        "UPDATE workflows SET state = 'running', error = NULL, finished_at = NULL, \
         succeeded = $2, failed = $3, handled = $4 WHERE id = $1",
        &[&uuid(p.id), &(t.succeeded as i32), &(t.failed as i32), &(t.handled as i32)],
    )
    .await?;
    super::events::append(tx, shared, &[NewEvent::workflow(EventType::WorkflowRetried, p.id, None, p.now)]).await?;
    get(tx, p.id).await
}
