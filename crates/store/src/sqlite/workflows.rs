//! Workflows on the embedded store: storing a DAG, moving it on as its tasks finish, reading it.
//!
//! Every task keeps a count of parents not yet finished. When a task finishes, its children's
//! counts go down in the same transaction (the single writer makes that race-free), and a child
//! whose count reaches zero becomes ready. The workflow's outcome is decided by its failure policy.

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;
use taskwarden_core::events::{EventType, NewEvent};
use taskwarden_core::workflow::{
    FailurePolicy, FanOut, FanOutStep, NodeTiming, ParentResult, Tally, Workflow, WorkflowNode, WorkflowState,
    WorkflowSummary, sorted_parents, speedup_report,
};
use taskwarden_core::{Task, TaskId, TaskState, Timestamp};

use super::internal;
use super::ops::{self, load, save, touch_for};
use super::writer::WriterState;
use crate::params::{CancelWorkflow, FanOutTasks, ListParents, ListWorkflows, SubmitWorkflow, WorkflowPage};
use crate::{Result, StoreError};

fn bad(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

pub(crate) fn submit(conn: &Connection, st: &mut WriterState, p: SubmitWorkflow) -> Result<Workflow> {
    st.observe(p.now);
    let mut plan = p.plan;
    let id = st.ids.next(p.now, st.rng.random());
    let ids: Vec<TaskId> = plan.nodes.iter().map(|_| st.ids.next(p.now, st.rng.random())).collect();
    let result_task = (plan.sinks.len() == 1).then(|| ids[plan.sinks[0]]);
    let policy = serde_json::to_string(&plan.failure_policy).map_err(bad)?;
    conn.prepare_cached(
        "INSERT INTO workflows (id, name, failure_policy, state, total, result_task, created_at) \
         VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.as_bytes(),
            plan.name,
            policy,
            plan.nodes.len() as i64,
            result_task.as_ref().map(|t| t.as_bytes().to_vec()),
            p.now.as_micros()
        ])
    })
    .map_err(internal)?;
    let started = NewEvent::workflow(EventType::WorkflowStarted, id, plan.name.as_deref(), p.now);
    st.events.push(conn, &started).map_err(internal)?;
    let mut tasks = Vec::with_capacity(plan.nodes.len());
    let mut edge =
        conn.prepare_cached("INSERT INTO task_edges (parent_id, child_id) VALUES (?1, ?2)").map_err(internal)?;
    for (i, node) in std::mem::take(&mut plan.nodes).into_iter().enumerate() {
        let task = Task::new_node(ids[i], node.task, id, node.id, node.parents.len() as u32, p.now);
        super::ops::insert_new(conn, st, &task)?;
        for &parent in &node.parents {
            edge.execute(params![ids[parent].as_bytes(), ids[i].as_bytes()]).map_err(internal)?;
        }
        touch_for(st, &task);
        tasks.push(task);
    }
    Ok(Workflow::started(id, &plan, &tasks, p.now))
}

/// Adds a fan-out under a running task. See [`crate::Store::fan_out`].
pub(crate) fn fan_out(conn: &Connection, st: &mut WriterState, p: FanOutTasks) -> Result<FanOut> {
    st.observe(p.now);
    let parent = load(conn, p.task_id)?;
    match &parent.lease {
        Some(l) if parent.state == TaskState::Running && l.token == p.lease => {}
        _ => return Err(StoreError::LeaseLost),
    }
    let prefix = parent.node.clone().unwrap_or_else(|| "root".to_owned());
    let join_node = format!("{prefix}/join");
    // Already fanned out (an earlier attempt did, then failed or lost its lease): the children
    // are running or done; hand back the same fan-out rather than start a second one.
    if let Some(wf) = parent.workflow_id {
        let existing: Option<[u8; 16]> = conn
            .prepare_cached("SELECT id FROM tasks WHERE workflow_id = ?1 AND node = ?2")
            .and_then(|mut s| s.query_row(params![wf.as_bytes(), join_node], |r| r.get(0)).optional())
            .map_err(internal)?;
        if let Some(join) = existing {
            let children = conn
                .prepare_cached("SELECT COUNT(*) FROM task_edges WHERE child_id = ?1")
                .and_then(|mut s| s.query_row([join], |r| r.get(0)))
                .map_err(internal)?;
            return Ok(FanOut { workflow_id: wf, join_id: TaskId::from_bytes(join), children });
        }
    }
    let n = p.plan.children.len();
    let policy = p.plan.policy;
    let join_id = st.ids.next(p.now, st.rng.random());
    let wf = match parent.workflow_id {
        Some(wf) => {
            // The join takes the parent's place: its dependents now wait for the whole fan-out,
            // and if the parent's result was the workflow's, the join's is.
            conn.prepare_cached(
                "UPDATE workflows SET total = total + ?2,                  result_task = CASE WHEN result_task = ?3 THEN ?4 ELSE result_task END WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![wf.as_bytes(), (n + 1) as i64, parent.id.as_bytes(), join_id.as_bytes()]))
            .map_err(internal)?;
            conn.prepare_cached("UPDATE task_edges SET parent_id = ?2 WHERE parent_id = ?1")
                .and_then(|mut s| s.execute(params![parent.id.as_bytes(), join_id.as_bytes()]))
                .map_err(internal)?;
            wf
        }
        None => {
            // A plain task becomes the root of a workflow of its own.
            let wf = st.ids.next(p.now, st.rng.random());
            let policy = serde_json::to_string(&FailurePolicy::FailFast).map_err(bad)?;
            conn.prepare_cached(
                "INSERT INTO workflows (id, name, failure_policy, state, total, result_task, created_at)                  VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    wf.as_bytes(),
                    parent.kind,
                    policy,
                    (n + 2) as i64,
                    join_id.as_bytes(),
                    parent.created_at.as_micros()
                ])
            })
            .map_err(internal)?;
            let started = NewEvent::workflow(EventType::WorkflowStarted, wf, Some(&parent.kind), p.now);
            st.events.push(conn, &started).map_err(internal)?;
            conn.prepare_cached("UPDATE tasks SET workflow_id = ?2, node = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![parent.id.as_bytes(), wf.as_bytes(), prefix]))
                .map_err(internal)?;
            wf
        }
    };
    let mut edge =
        conn.prepare_cached("INSERT INTO task_edges (parent_id, child_id) VALUES (?1, ?2)").map_err(internal)?;
    for (i, spec) in p.plan.children.into_iter().enumerate() {
        let id = st.ids.next(p.now, st.rng.random());
        // Zero-padded, so node order is child order when the join reads its parents.
        let child = Task::new_node(id, spec, wf, format!("{prefix}/{i:06}"), 0, p.now);
        super::ops::insert_new(conn, st, &child)?;
        edge.execute(params![id.as_bytes(), join_id.as_bytes()]).map_err(internal)?;
        touch_for(st, &child);
    }
    let join = Task::new_node(join_id, p.plan.join, wf, join_node, n as u32, p.now);
    super::ops::insert_new(conn, st, &join)?;
    if let Some(policy) = policy {
        let policy = serde_json::to_string(&policy).map_err(bad)?;
        conn.prepare_cached("INSERT INTO fanouts (join_id, policy, total) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![join_id.as_bytes(), policy, n as i64]))
            .map_err(internal)?;
    }
    Ok(FanOut { workflow_id: wf, join_id, children: n as u32 })
}

struct Row {
    policy: FailurePolicy,
    state: WorkflowState,
    total: u32,
    succeeded: u32,
    failed: u32,
    handled: u32,
}

fn load_row(conn: &Connection, id: TaskId) -> Result<Row> {
    let row = conn
        .prepare_cached("SELECT failure_policy, state, total, succeeded, failed, handled FROM workflows WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.as_bytes()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(internal)?
        .ok_or(StoreError::NotFound)?;
    Ok(Row {
        policy: serde_json::from_str(&row.0).map_err(bad)?,
        state: row.1.parse().map_err(bad)?,
        total: row.2,
        succeeded: row.3,
        failed: row.4,
        handled: row.5,
    })
}

/// A workflow task reached a terminal state: count it, release its children, decide the outcome.
pub(crate) fn on_finished(conn: &Connection, st: &mut WriterState, task: &Task) -> Result<()> {
    let Some(wf) = task.workflow_id else { return Ok(()) };
    let now = task.finished_at.unwrap_or(st.now);
    let ok = task.state == TaskState::Succeeded;
    // A member of a fan-out with its own policy: that policy deals with its failures first.
    let handled = fan_out_member_finished(conn, st, task, now)?;
    conn.prepare_cached(
        "UPDATE workflows SET succeeded = succeeded + ?2, failed = failed + ?3, handled = handled + ?4 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![wf.as_bytes(), ok as i64, (!ok && !handled) as i64, handled as i64]))
    .map_err(internal)?;
    let row = load_row(conn, wf)?;
    if row.state.is_terminal() {
        return Ok(()); // decided already (a fail-fast or a cancel is winding the rest down)
    }
    let tally = Tally { total: row.total, succeeded: row.succeeded, failed: row.failed, handled: row.handled };
    let step = row.policy.workflow_step(task, handled, tally);
    if step.release_children {
        release_children(conn, st, task.id, now)?;
    }
    if let Some((state, error)) = step.decided {
        finish(conn, st, wf, state, error, now)?;
    }
    Ok(())
}

/// If `task` is a member of a fan-out that has its own policy (it is a parent of that fan-out's
/// join), counts it there and applies the policy. Returns whether the policy dealt with the
/// task's failure (false for a success), so the workflow's own policy must not react to it.
fn fan_out_member_finished(conn: &Connection, st: &mut WriterState, task: &Task, now: Timestamp) -> Result<bool> {
    type FanRow = ([u8; 16], String, u32, u32, u32, bool);
    let ok = task.state == TaskState::Succeeded;
    let row: Option<FanRow> = conn
        .prepare_cached(
            "UPDATE fanouts SET succeeded = succeeded + ?2, failed = failed + ?3 \
             WHERE join_id IN (SELECT child_id FROM task_edges WHERE parent_id = ?1) \
             RETURNING join_id, policy, total, succeeded, failed, decided",
        )
        .and_then(|mut s| {
            s.query_row(params![task.id.as_bytes(), ok as i64, !ok as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(internal)?;
    let Some((join, policy, total, succeeded, failed, decided)) = row else { return Ok(false) };
    let join = TaskId::from_bytes(join);
    if decided {
        return Ok(!ok); // wound down by the fan-out's decision (a cancelled sibling, say)
    }
    let policy: FailurePolicy = serde_json::from_str(&policy).map_err(bad)?;
    let handled = !ok && policy.handles_failures();
    let step = policy.fan_out_step(ok, total, succeeded, failed);
    if step == FanOutStep::Wait {
        return Ok(handled);
    }
    conn.prepare_cached("UPDATE fanouts SET decided = 1 WHERE join_id = ?1")
        .and_then(|mut s| s.execute([join.as_bytes()]))
        .map_err(internal)?;
    let mut join_task = load(conn, join)?;
    if step == FanOutStep::ReleaseJoin {
        conn.prepare_cached("UPDATE tasks SET pending_parents = 0 WHERE id = ?1")
            .and_then(|mut s| s.execute([join.as_bytes()]))
            .map_err(internal)?;
        if join_task.dependencies_met(now).is_ok() {
            ops::write_task(conn, st, &join_task)?;
            touch_for(st, &join_task);
        }
    } else if join_task.cancel(now).is_ok() {
        // The join's cancellation is what the workflow's policy sees.
        join_task.error = Some(format!("fan-out failed: task {} {}", task.node.as_deref().unwrap_or("?"), task.state));
        save(conn, st, &join_task, None)?;
    }
    // The outcome is decided: siblings still running or waiting are cancelled.
    let siblings: Vec<[u8; 16]> = conn
        .prepare_cached("SELECT parent_id FROM task_edges WHERE child_id = ?1")
        .and_then(|mut s| s.query_map([join.as_bytes()], |r| r.get(0))?.collect::<rusqlite::Result<_>>())
        .map_err(internal)?;
    for id in siblings {
        let mut sibling = load(conn, TaskId::from_bytes(id))?;
        if sibling.id != task.id && sibling.cancel(now).is_ok() {
            save(conn, st, &sibling, None)?;
        }
    }
    Ok(handled)
}

/// Counts one finished parent for each child; a child with none left becomes ready.
fn release_children(conn: &Connection, st: &mut WriterState, parent: TaskId, now: Timestamp) -> Result<()> {
    let children: Vec<[u8; 16]> = conn
        .prepare_cached(
            "UPDATE tasks SET pending_parents = pending_parents - 1 \
             WHERE id IN (SELECT child_id FROM task_edges WHERE parent_id = ?1) AND state = 'scheduled' \
             RETURNING CASE WHEN pending_parents = 0 THEN id END",
        )
        .and_then(|mut s| {
            s.query_map([parent.as_bytes()], |r| r.get::<_, Option<[u8; 16]>>(0))?
                .filter_map(|r| r.transpose())
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    for child in children {
        let mut task = load(conn, TaskId::from_bytes(child))?;
        if task.dependencies_met(now).is_ok() {
            ops::write_task(conn, st, &task)?;
            touch_for(st, &task);
        }
    }
    Ok(())
}

/// Records the workflow's outcome and cancels what has not finished.
fn finish(
    conn: &Connection,
    st: &mut WriterState,
    wf: TaskId,
    state: WorkflowState,
    error: Option<String>,
    now: Timestamp,
) -> Result<()> {
    // Recorded before cancelling, so the cancelled tasks' own on_finished sees a decided workflow.
    conn.prepare_cached("UPDATE workflows SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![wf.as_bytes(), state.as_str(), error, now.as_micros()]))
        .map_err(internal)?;
    if let Some(decided) = NewEvent::workflow_decided(wf, state, error.as_deref(), now) {
        st.events.push(conn, &decided).map_err(internal)?;
    }
    let open: Vec<[u8; 16]> = conn
        .prepare_cached("SELECT id FROM tasks WHERE workflow_id = ?1 AND state IN ('scheduled', 'ready', 'running')")
        .and_then(|mut s| s.query_map([wf.as_bytes()], |r| r.get(0))?.collect::<rusqlite::Result<_>>())
        .map_err(internal)?;
    for id in open {
        let mut task = load(conn, TaskId::from_bytes(id))?;
        if task.cancel(now).is_ok() {
            save(conn, st, &task, None)?;
        }
    }
    Ok(())
}

pub(crate) fn state(conn: &Connection, id: TaskId) -> Result<WorkflowState> {
    Ok(load_row(conn, id)?.state)
}

pub(crate) fn cancel(conn: &Connection, st: &mut WriterState, p: CancelWorkflow) -> Result<Workflow> {
    st.observe(p.now);
    let row = load_row(conn, p.id)?;
    if row.state.is_terminal() {
        return Err(StoreError::Conflict(format!("the workflow already {}", row.state.as_str())));
    }
    finish(conn, st, p.id, WorkflowState::Cancelled, Some("cancelled".into()), p.now)?;
    get(conn, p.id)
}

/// Workflows newest first (ids are time-ordered), filtered by state and name.
pub(crate) fn list(conn: &Connection, p: &ListWorkflows) -> Result<WorkflowPage> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, name, state, total, succeeded, failed, error, created_at, finished_at FROM workflows \
             WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR name = ?3) \
             ORDER BY id DESC LIMIT ?4",
        )
        .map_err(internal)?;
    let before = p.before.map(|id| *id.as_bytes());
    let state = p.state.map(|s| s.as_str());
    let rows = stmt
        .query_map(params![before, state, p.name, p.limit], |r| {
            Ok((
                r.get::<_, [u8; 16]>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })
        .map_err(internal)?;
    let mut workflows = Vec::new();
    for row in rows {
        let (id, name, state, total, succeeded, failed, error, created_at, finished_at) = row.map_err(internal)?;
        workflows.push(WorkflowSummary {
            id: TaskId::from_bytes(id),
            name,
            state: state.parse().map_err(bad)?,
            total,
            succeeded,
            failed,
            error,
            created_at: Timestamp::from_micros(created_at),
            finished_at: finished_at.map(Timestamp::from_micros),
        });
    }
    let next = (workflows.len() == p.limit as usize).then(|| workflows.last().map(|w| w.id)).flatten();
    Ok(WorkflowPage { workflows, next })
}

/// A workflow with its nodes, result and speedup report.
pub(crate) fn get(conn: &Connection, id: TaskId) -> Result<Workflow> {
    type WfRow = (Option<String>, String, String, u32, u32, u32, Option<[u8; 16]>, Option<String>, i64, Option<i64>);
    let r: WfRow = conn
        .prepare_cached(
            "SELECT name, failure_policy, state, total, succeeded, failed, result_task, error, created_at, finished_at \
             FROM workflows WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id.as_bytes()], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                ))
            })
            .optional()
        })
        .map_err(internal)?
        .ok_or(StoreError::NotFound)?;
    let state: WorkflowState = r.2.parse().map_err(bad)?;
    let created_at = Timestamp::from_micros(r.8);

    // Nodes in insertion order, which is dependency order.
    type NodeRow = ([u8; 16], String, String, Option<i64>, Option<String>);
    let rows: Vec<NodeRow> = conn
        .prepare_cached("SELECT id, node, state, finished_at, result FROM tasks WHERE workflow_id = ?1 ORDER BY seq")
        .and_then(|mut s| {
            s.query_map([id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    let index: std::collections::HashMap<[u8; 16], usize> = rows.iter().enumerate().map(|(i, r)| (r.0, i)).collect();
    let mut timings: Vec<NodeTiming> =
        rows.iter().map(|_| NodeTiming { parents: Vec::new(), ready_at: created_at, attempts: Vec::new() }).collect();
    let mut has_children = vec![false; rows.len()];
    let edges: Vec<([u8; 16], [u8; 16])> = conn
        .prepare_cached(
            "SELECT e.parent_id, e.child_id FROM task_edges e JOIN tasks t ON t.id = e.child_id WHERE t.workflow_id = ?1",
        )
        .and_then(|mut s| s.query_map([id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>())
        .map_err(internal)?;
    for (parent, child) in edges {
        if let (Some(&p), Some(&c)) = (index.get(&parent), index.get(&child)) {
            timings[c].parents.push(p);
            has_children[p] = true;
            if let Some(done) = rows[p].3 {
                timings[c].ready_at = timings[c].ready_at.max(Timestamp::from_micros(done));
            }
        }
    }
    let attempts: Vec<([u8; 16], i64, i64)> = conn
        .prepare_cached(
            "SELECT a.task_id, a.started_at, a.finished_at FROM attempts a JOIN tasks t ON t.id = a.task_id \
             WHERE t.workflow_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map([id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()
        })
        .map_err(internal)?;
    for (task, start, end) in attempts {
        if let Some(&i) = index.get(&task) {
            timings[i].attempts.push((Timestamp::from_micros(start), Timestamp::from_micros(end)));
        }
    }

    let result = match (state, r.6) {
        (WorkflowState::Succeeded, Some(sink)) => rows.iter().find(|n| n.0 == sink).and_then(|n| n.4.clone()),
        (WorkflowState::Succeeded, None) => {
            // Several sinks: an object of their results by node id.
            let mut map = serde_json::Map::new();
            for (_, n) in rows.iter().enumerate().filter(|(i, _)| !has_children[*i]) {
                let v: serde_json::Value =
                    n.4.as_deref().map(serde_json::from_str).transpose().map_err(bad)?.unwrap_or_default();
                map.insert(n.1.clone(), v);
            }
            Some(serde_json::to_string(&map).map_err(bad)?)
        }
        _ => None,
    };
    let nodes = rows
        .iter()
        .zip(&timings)
        .map(|(n, timing)| {
            Ok(WorkflowNode {
                node: n.1.clone(),
                task_id: TaskId::from_bytes(n.0),
                state: n.2.parse().map_err(bad)?,
                parents: sorted_parents(timing),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Workflow {
        id,
        name: r.0,
        failure_policy: serde_json::from_str(&r.1).map_err(bad)?,
        state,
        total: r.3,
        succeeded: r.4,
        failed: r.5,
        result: result.map(RawValue::from_string).transpose().map_err(bad)?,
        error: r.7,
        created_at,
        finished_at: r.9.map(Timestamp::from_micros),
        nodes,
        speedup: Some(speedup_report(&timings)),
    })
}

pub(crate) fn parents(conn: &Connection, p: &ListParents) -> Result<Vec<ParentResult>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT t.node, t.id, t.state, t.result, t.error FROM task_edges e JOIN tasks t ON t.id = e.parent_id \
             WHERE e.child_id = ?1 AND (?2 IS NULL OR t.node > ?2) ORDER BY t.node LIMIT ?3",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.task_id.as_bytes(), p.after, p.limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, [u8; 16]>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get(4)?,
            ))
        })
        .map_err(internal)?;
    let parents: Vec<ParentResult> = rows
        .map(|row| {
            let (node, id, state, result, error) = row.map_err(internal)?;
            Ok(ParentResult {
                node,
                task_id: TaskId::from_bytes(id),
                state: state.parse().map_err(bad)?,
                result: result.map(RawValue::from_string).transpose().map_err(bad)?,
                error,
            })
        })
        .collect::<Result<_>>()?;
    if parents.is_empty() && super::rows::load_task(conn, p.task_id).map_err(internal)?.is_none() {
        return Err(StoreError::NotFound);
    }
    Ok(parents)
}
