//! Retrying a decided workflow on the embedded store: load its graph, ask the core what runs
//! again, apply that. The single writer makes it one transaction that no task's finish can
//! interleave with. The rules are in `docs/design-workflows.md`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use taskwarden_core::events::{EventType, NewEvent};
use taskwarden_core::workflow::{FailurePolicy, RetryNode, Workflow, WorkflowState, plan_retry};
use taskwarden_core::{Task, TaskId};

use super::internal;
use super::ops::{touch_for, write_task};
use super::rows::{TASK_COLUMNS, task_from_row};
use super::workflows::get;
use super::writer::WriterState;
use crate::params::RetryWorkflow;
use crate::{Result, StoreError};

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// See [`crate::Store::retry_workflow`]. Everything is read and decided before the first write,
/// so a refusal changes nothing.
pub(crate) fn retry(conn: &Connection, st: &mut WriterState, p: RetryWorkflow) -> Result<Workflow> {
    st.observe(p.now);
    let state: String = conn
        .prepare_cached("SELECT state FROM workflows WHERE id = ?1")
        .and_then(|mut s| s.query_row([p.id.as_bytes()], |r| r.get(0)).optional())
        .map_err(internal)?
        .ok_or(StoreError::NotFound)?;
    let state: WorkflowState = state.parse().map_err(bad)?;

    let mut tasks: Vec<Task> = conn
        .prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = ?1 ORDER BY seq"))
        .and_then(|mut s| s.query_map([p.id.as_bytes()], task_from_row)?.collect::<rusqlite::Result<_>>())
        .map_err(internal)?;
    let index: HashMap<TaskId, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut nodes: Vec<RetryNode> =
        tasks.iter().map(|t| RetryNode { state: t.state, parents: Vec::new(), fan_out: None }).collect();
    let edges: Vec<([u8; 16], [u8; 16])> = conn
        .prepare_cached(
            "SELECT e.parent_id, e.child_id FROM task_edges e JOIN tasks t ON t.id = e.child_id WHERE t.workflow_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map([p.id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    for (parent, child) in edges {
        if let (Some(&pi), Some(&ci)) = (index.get(&TaskId::from_bytes(parent)), index.get(&TaskId::from_bytes(child)))
        {
            nodes[ci].parents.push(pi);
        }
    }
    let fan_outs: Vec<([u8; 16], String)> = conn
        .prepare_cached(
            "SELECT f.join_id, f.policy FROM fanouts f JOIN tasks t ON t.id = f.join_id WHERE t.workflow_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map([p.id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    for (join, policy) in fan_outs {
        if let Some(&j) = index.get(&TaskId::from_bytes(join)) {
            nodes[j].fan_out = Some(serde_json::from_str::<FailurePolicy>(&policy).map_err(bad)?);
        }
    }

    let plan = plan_retry(state, &nodes).map_err(|refused| StoreError::Conflict(refused.to_string()))?;

    let mut pending = conn.prepare_cached("UPDATE tasks SET pending_parents = ?2 WHERE id = ?1").map_err(internal)?;
    for &(i, waits_for) in &plan.rerun {
        let task = &mut tasks[i];
        task.rerun(waits_for > 0, p.now)?;
        write_task(conn, st, task)?;
        pending.execute(params![task.id.as_bytes(), waits_for]).map_err(internal)?;
        touch_for(st, task);
    }
    let mut restart = conn
        .prepare_cached("UPDATE fanouts SET succeeded = ?2, failed = ?3, decided = ?4 WHERE join_id = ?1")
        .map_err(internal)?;
    for f in &plan.fan_outs {
        restart.execute(params![tasks[f.join].id.as_bytes(), f.succeeded, f.failed, f.decided]).map_err(internal)?;
    }
    let t = plan.tally;
    conn.prepare_cached(
        "UPDATE workflows SET state = 'running', error = NULL, finished_at = NULL, \
         succeeded = ?2, failed = ?3, handled = ?4 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![p.id.as_bytes(), t.succeeded, t.failed, t.handled]))
    .map_err(internal)?;
    let retried = NewEvent::workflow(EventType::WorkflowRetried, p.id, None, p.now);
    st.events.push(conn, &retried).map_err(internal)?;
    get(conn, p.id)
}
