//! Workflows as plain data: a DAG of tasks, its validation, and the speedup report.
//!
//! This is the pure part of workflows (issue "Workflows: decompose a job into a DAG ..."): no
//! storage and no clock. [`WorkflowSpec::plan`] checks a submitted graph and orders it;
//! [`speedup_report`] measures what parallel execution bought on a finished run, by the seed
//! article's model `speedup = T_serial / T_parallel`; [`plan_retry`] decides what retrying a
//! decided workflow runs again.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::backoff::Backoff;
use crate::protocol::SubmitTask;
use crate::task::{NewTask, Task, TaskState};
use crate::time::{Timestamp, duration_ms};
use crate::validate::{Limits, ValidationError, check_name};

pub mod graph;
mod retry;
pub use retry::{FanOutRestart, RetryNode, RetryPlan, RetryRefusal, plan_retry};

/// What happens to a workflow when one of its tasks fails for good.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum FailurePolicy {
    /// The first permanent failure cancels every task not yet started and fails the workflow.
    #[default]
    FailFast,
    /// Dependents run anyway and receive each parent's success or error.
    Collect,
    /// Succeed once at least `min_successes` (or `fraction` of the) tasks succeeded; cancel the
    /// rest once the outcome is decided.
    Quorum {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_successes: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f64>,
    },
}

impl utoipa::PartialSchema for FailurePolicy {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let kind = |k: &str, description: &str| crate::schema::tagged_variant("kind", k, description);
        let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
        OneOfBuilder::new()
            .item(kind("fail_fast", "The first permanent failure cancels every task not yet started and fails the workflow."))
            .item(kind("collect", "Dependents run anyway and receive each parent's success or error."))
            .item(
                kind(
                    "quorum",
                    "Succeed once at least min_successes (or fraction of the) tasks succeeded; give exactly one of them.",
                )
                .property(
                    "min_successes",
                    ObjectBuilder::new().schema_type(nullable(Type::Integer)).minimum(Some(1)).maximum(Some(u32::MAX)),
                )
                .property(
                    "fraction",
                    ObjectBuilder::new()
                        .schema_type(nullable(Type::Number))
                        .exclusive_minimum(Some(0.0))
                        .maximum(Some(1.0)),
                ),
            )
            .description(Some("What happens to a workflow when one of its tasks fails for good."))
            .into()
    }
}
impl utoipa::ToSchema for FailurePolicy {}

/// Where a quorum stands after some of its `total` tasks finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumOutcome {
    Reached,
    Lost,
    Open,
}

/// Decides a quorum: reached once `min_successes` (or `fraction` of `total`) succeeded, lost once
/// so many failed that it can no longer be reached.
pub fn quorum(
    min_successes: Option<u32>,
    fraction: Option<f64>,
    total: u32,
    succeeded: u32,
    failed: u32,
) -> QuorumOutcome {
    let needed = min_successes.unwrap_or_else(|| (fraction.unwrap_or(1.0) * f64::from(total)).ceil() as u32);
    if succeeded >= needed {
        QuorumOutcome::Reached
    } else if failed > total.saturating_sub(needed) {
        QuorumOutcome::Lost
    } else {
        QuorumOutcome::Open
    }
}

/// A workflow's counts, with the task that just finished already counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub succeeded: u32,
    /// Failures the workflow's own policy sees.
    pub failed: u32,
    /// Failures a fan-out's own policy dealt with (collected, or outvoted by a quorum).
    pub handled: u32,
}

/// What a workflow does after one of its tasks finished.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowStep {
    /// Whether the task counts as done for its children. A fail-fast workflow holds them back
    /// after a failure; every other case lets them go on.
    pub release_children: bool,
    /// The outcome, once decided, with the reason when it is a failure.
    pub decided: Option<(WorkflowState, Option<String>)>,
}

/// What a fan-out with a policy of its own does after one of its members finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanOutStep {
    /// Not decided yet: the join waits for the rest.
    Wait,
    /// A quorum was reached: the join runs now and the unfinished members are cancelled.
    ReleaseJoin,
    /// The fan-out failed: the join and the unfinished members are cancelled.
    CancelJoin,
}

impl FailurePolicy {
    /// Whether a fan-out with this policy deals with its members' failures itself, so the
    /// workflow's own policy never sees them. Every policy but fail-fast does.
    pub fn handles_failures(self) -> bool {
        self != FailurePolicy::FailFast
    }

    /// A fan-out's step once a member (`member_ok`: it succeeded) has been counted.
    pub fn fan_out_step(self, member_ok: bool, total: u32, succeeded: u32, failed: u32) -> FanOutStep {
        match self {
            FailurePolicy::FailFast if !member_ok => FanOutStep::CancelJoin,
            FailurePolicy::FailFast | FailurePolicy::Collect => FanOutStep::Wait,
            FailurePolicy::Quorum { min_successes, fraction } => {
                match quorum(min_successes, fraction, total, succeeded, failed) {
                    QuorumOutcome::Reached => FanOutStep::ReleaseJoin,
                    QuorumOutcome::Lost => FanOutStep::CancelJoin,
                    QuorumOutcome::Open => FanOutStep::Wait,
                }
            }
        }
    }

    /// A workflow's step once `task` (now terminal) has been counted in `tally`; `handled` when a
    /// fan-out's own policy dealt with its failure.
    pub fn workflow_step(self, task: &Task, handled: bool, tally: Tally) -> WorkflowStep {
        let failed_here = task.state != TaskState::Succeeded && !handled;
        let Tally { total, succeeded, failed, handled: handled_count } = tally;
        let decided = match self {
            FailurePolicy::FailFast if failed_here => {
                let why = format!(
                    "task {} ({}) {}{}",
                    task.node.as_deref().unwrap_or("?"),
                    task.id,
                    task.state,
                    task.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                );
                Some((WorkflowState::Failed, Some(why)))
            }
            FailurePolicy::Quorum { min_successes, fraction } => {
                match quorum(min_successes, fraction, total, succeeded, failed) {
                    QuorumOutcome::Reached => Some((WorkflowState::Succeeded, None)),
                    QuorumOutcome::Lost => {
                        Some((WorkflowState::Failed, Some(format!("quorum lost: {failed} of {total} tasks failed"))))
                    }
                    QuorumOutcome::Open => None,
                }
            }
            _ if succeeded + failed + handled_count == total => {
                if failed == 0 || self == FailurePolicy::Collect {
                    Some((WorkflowState::Succeeded, None))
                } else {
                    Some((WorkflowState::Failed, Some(format!("{failed} of {total} tasks failed"))))
                }
            }
            _ => None,
        };
        WorkflowStep { release_children: !failed_here || self != FailurePolicy::FailFast, decided }
    }
}

/// One node of a submitted workflow: a task with an id local to the workflow and its parents.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Required in a workflow graph; left out for a fan-out's children and join, which are named
    /// after their parent (`parent/000042`, `parent/join`).
    #[serde(default)]
    #[schema(schema_with = crate::schema::node_id)]
    pub id: String,
    #[schema(schema_with = crate::schema::name)]
    pub kind: String,
    #[serde(default = "default_queue")]
    #[schema(schema_with = crate::schema::name)]
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::any_json)]
    pub payload: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::schema::node_ids)]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800_000_u64)]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 3_600_000_u64)]
    pub lease_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_tags)]
    pub tags: Option<Vec<String>>,
}

fn default_queue() -> String {
    "default".to_owned()
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            id: String::new(),
            kind: String::new(),
            queue: default_queue(),
            payload: None,
            depends_on: Vec::new(),
            priority: None,
            max_attempts: None,
            timeout_ms: None,
            lease_timeout_ms: None,
            backoff: None,
            tags: None,
        }
    }
}

/// A workflow as submitted: `{"name": ..., "failure_policy": ..., "tasks": [...]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::bounded::object")]
    pub failure_policy: FailurePolicy,
    #[serde(deserialize_with = "crate::bounded::workflow_of_objects")]
    #[schema(min_items = 1, max_items = 100_000)]
    pub tasks: Vec<NodeSpec>,
    /// The W3C trace context to run the workflow's tasks in (instead of a `traceparent` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<crate::TraceParent>,
}

/// A node after validation: its task, and its parents as indexes into the plan.
#[derive(Clone, Debug)]
pub struct PlannedNode {
    pub id: String,
    pub task: NewTask,
    pub parents: Vec<usize>,
}

/// A validated workflow: nodes in an order where every parent comes before its children.
#[derive(Clone, Debug)]
pub struct WorkflowPlan {
    pub name: Option<String>,
    pub failure_policy: FailurePolicy,
    pub nodes: Vec<PlannedNode>,
    /// Nodes no other node depends on; the workflow's result is the sink's (when there is one).
    pub sinks: Vec<usize>,
}

impl WorkflowSpec {
    /// Checks the graph (unique ids, known dependencies, no cycle) and every node's options, and
    /// returns the nodes in topological order. Errors name the node and field, or the cycle.
    pub fn plan(self, limits: &Limits, now: Timestamp) -> Result<WorkflowPlan, ValidationError> {
        if let Some(name) = &self.name {
            check_name("name", name, limits)?;
        }
        validate_policy(&self.failure_policy)?;
        if self.tasks.is_empty() {
            return Err(ValidationError::new("tasks", "a workflow needs at least one task"));
        }
        if self.tasks.len() > limits.max_workflow_tasks {
            return Err(ValidationError::new(
                "tasks",
                format!("at most {} tasks per workflow", limits.max_workflow_tasks),
            ));
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.tasks.len());
        for (i, node) in self.tasks.iter().enumerate() {
            if node.id.is_empty() {
                return Err(ValidationError::unprocessable(
                    format!("tasks[{i}].id"),
                    "every task of a graph needs an id",
                ));
            }
            check_name(&format!("tasks[{i}].id"), &node.id, limits)?;
            if index.insert(node.id.as_str(), i).is_some() {
                return Err(ValidationError::unprocessable(
                    format!("tasks[{i}].id"),
                    format!("{:?} is used by two tasks", node.id),
                ));
            }
        }
        let mut parents: Vec<Vec<usize>> = Vec::with_capacity(self.tasks.len());
        for (i, node) in self.tasks.iter().enumerate() {
            let mut ps = Vec::with_capacity(node.depends_on.len());
            for (j, dep) in node.depends_on.iter().enumerate() {
                let field = format!("tasks[{i}].depends_on[{j}]");
                let p = *index
                    .get(dep.as_str())
                    .ok_or_else(|| ValidationError::unprocessable(&field, format!("unknown task {dep:?}")))?;
                if ps.contains(&p) {
                    return Err(ValidationError::new(field, format!("{dep:?} is listed twice")));
                }
                ps.push(p);
            }
            parents.push(ps);
        }
        let order = topological_order(&parents).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| self.tasks[i].id.as_str()).collect();
            ValidationError::unprocessable("tasks", format!("the dependencies form a cycle: {}", names.join(" -> ")))
        })?;
        let mut position = vec![0; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let mut has_children = vec![false; self.tasks.len()];
        for ps in &parents {
            for &p in ps {
                has_children[p] = true;
            }
        }
        let mut specs: Vec<Option<NodeSpec>> = self.tasks.into_iter().map(Some).collect();
        let mut nodes = Vec::with_capacity(order.len());
        for &i in &order {
            let node = specs[i].take().expect("each node once");
            let id = node.id.clone();
            let task = node.into_submit().validate(limits, now).map_err(|e| e.within(&format!("tasks[{i}]")))?;
            nodes.push(PlannedNode { id, task, parents: parents[i].iter().map(|&p| position[p]).collect() });
        }
        let sinks = order.iter().enumerate().filter(|(_, i)| !has_children[**i]).map(|(pos, _)| pos).collect();
        Ok(WorkflowPlan { name: self.name, failure_policy: self.failure_policy, nodes, sinks })
    }
}

impl NodeSpec {
    fn into_submit(self) -> SubmitTask {
        SubmitTask {
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout_ms: self.timeout_ms,
            lease_timeout_ms: self.lease_timeout_ms,
            backoff: self.backoff,
            tags: self.tags,
            ..SubmitTask::default()
        }
    }
}

fn validate_policy(p: &FailurePolicy) -> Result<(), ValidationError> {
    if let FailurePolicy::Quorum { min_successes, fraction } = p {
        match (min_successes, fraction) {
            (Some(0), _) => return Err(ValidationError::new("failure_policy.min_successes", "must be at least 1")),
            (None, Some(f)) if !(*f > 0.0 && *f <= 1.0) => {
                return Err(ValidationError::new("failure_policy.fraction", "must be in (0, 1]"));
            }
            (Some(_), Some(_)) => {
                return Err(ValidationError::unprocessable(
                    "failure_policy",
                    "give min_successes or fraction, not both",
                ));
            }
            (None, None) => {
                return Err(ValidationError::unprocessable(
                    "failure_policy",
                    "a quorum needs min_successes or fraction",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Orders nodes so that parents come first (depth-first, iterative: a long chain does not grow
/// the call stack). On a cycle, returns the nodes on it in the order they would run, starting
/// from the one listed first and repeating it at the end.
fn topological_order(parents: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; parents.len()];
    let mut order = Vec::with_capacity(parents.len());
    for root in 0..parents.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next parent to visit)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&p) = parents[node].get(*next) {
                *next += 1;
                match mark[p] {
                    Mark::New => {
                        mark[p] = Mark::OnPath;
                        path.push((p, 0));
                    }
                    Mark::OnPath => {
                        // The path from p to node, then back to p, is the cycle (edges run from
                        // child to parent here, so reverse it to read in dependency order).
                        let start = path.iter().position(|&(n, _)| n == p).expect("p is on the path");
                        let mut cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                        cycle.reverse();
                        // Start from the task listed first, so the same cycle always reads the same.
                        let first = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map_or(0, |(i, _)| i);
                        cycle.rotate_left(first);
                        cycle.push(cycle[0]);
                        return Err(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                path.pop();
            }
        }
    }
    Ok(order)
}

/// A running task's request to fan out: children that run in parallel, and a join that runs once
/// all of them finished and reads their outcomes in child order. Whatever waited for the task now
/// waits for the join, and the join's result stands in for the task's in its workflow.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOutRequest {
    pub lease: crate::id::LeaseToken,
    #[serde(deserialize_with = "crate::bounded::workflow_of_objects")]
    #[schema(min_items = 1, max_items = 99_999)]
    pub children: Vec<NodeSpec>,
    #[serde(deserialize_with = "crate::bounded::object")]
    pub join: NodeSpec,
    /// The fan-out's own policy: `collect` (the join sees every child's success or error),
    /// `quorum` (the join runs as soon as enough children succeeded; the rest are cancelled) or
    /// `fail_fast` (a child's failure cancels its siblings and the join). Absent: the workflow's
    /// policy applies to the children like to any task.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::bounded::optional_object")]
    pub failure_policy: Option<FailurePolicy>,
    /// The W3C trace context the children and the join run in: the fanning-out attempt's run span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<crate::TraceParent>,
}

/// A validated fan-out.
#[derive(Clone, Debug)]
pub struct FanOutPlan {
    pub children: Vec<NewTask>,
    pub join: NewTask,
    pub policy: Option<FailurePolicy>,
}

impl FanOutRequest {
    pub fn plan(self, limits: &Limits, now: Timestamp) -> Result<FanOutPlan, ValidationError> {
        if self.children.is_empty() {
            return Err(ValidationError::new("children", "a fan-out needs at least one child"));
        }
        if self.children.len() >= limits.max_workflow_tasks {
            return Err(ValidationError::new(
                "children",
                format!("at most {} children", limits.max_workflow_tasks - 1),
            ));
        }
        let check = |node: NodeSpec, field: String| -> Result<NewTask, ValidationError> {
            if !node.id.is_empty() {
                return Err(ValidationError::unprocessable(
                    format!("{field}.id"),
                    "is given by the server (parent/index)",
                ));
            }
            if !node.depends_on.is_empty() {
                return Err(ValidationError::unprocessable(
                    format!("{field}.depends_on"),
                    "a fan-out's tasks depend on the fan-out alone",
                ));
            }
            node.into_submit().validate(limits, now).map_err(|e| e.within(&field))
        };
        if let Some(p) = &self.failure_policy {
            validate_policy(p)?;
        }
        let policy = self.failure_policy;
        let traced = |t: NewTask| NewTask { traceparent: self.traceparent, ..t };
        let children = self
            .children
            .into_iter()
            .enumerate()
            .map(|(i, c)| check(c, format!("children[{i}]")).map(traced))
            .collect::<Result<_, _>>()?;
        Ok(FanOutPlan { children, join: traced(check(self.join, "join".into())?), policy })
    }
}

/// What a fan-out created.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FanOut {
    pub workflow_id: crate::id::TaskId,
    pub join_id: crate::id::TaskId,
    pub children: u32,
}

/// A workflow's state: running until its outcome is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != WorkflowState::Running
    }
}

impl std::str::FromStr for WorkflowState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [WorkflowState::Running, WorkflowState::Succeeded, WorkflowState::Failed, WorkflowState::Cancelled]
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown workflow state {s:?}"))
    }
}

/// One node of a workflow, as reported.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowNode {
    pub node: String,
    pub task_id: crate::id::TaskId,
    pub state: crate::task::TaskState,
    /// The nodes this one depends on, as indexes into the workflow's `nodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<u32>,
}

/// A workflow, as the API returns it.
/// A workflow in a list: where it stands, without its nodes, result or report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowSummary {
    pub id: crate::id::TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub state: WorkflowState,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

/// A page of workflows, newest first (`GET /v1/workflows`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workflow {
    pub id: crate::id::TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub failure_policy: FailurePolicy,
    pub state: WorkflowState,
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// The sink task's result once the workflow succeeded (with several sinks: an object of them
    /// by node id).
    #[schema(schema_with = crate::schema::any_json)]
    pub result: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The nodes in dependency order (filled in by `get`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<WorkflowNode>,
    /// What parallel execution bought (filled in by `get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup: Option<SpeedupReport>,
}

impl Workflow {
    /// A workflow just stored from `plan`: running, nothing finished yet. `nodes` are its tasks
    /// as stored, in the plan's order.
    pub fn started(id: crate::id::TaskId, plan: &WorkflowPlan, tasks: &[Task], now: Timestamp) -> Workflow {
        let nodes: Vec<WorkflowNode> = tasks
            .iter()
            .map(|t| WorkflowNode {
                node: t.node.clone().unwrap_or_default(),
                task_id: t.id,
                state: t.state,
                parents: Vec::new(),
            })
            .collect();
        Workflow {
            id,
            name: plan.name.clone(),
            failure_policy: plan.failure_policy,
            state: WorkflowState::Running,
            total: nodes.len() as u32,
            succeeded: 0,
            failed: 0,
            result: None,
            error: None,
            created_at: now,
            finished_at: None,
            nodes,
            speedup: None,
        }
    }
}

/// A parent's outcome, as its child reads it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParentResult {
    pub node: String,
    pub task_id: crate::id::TaskId,
    pub state: crate::task::TaskState,
    #[schema(schema_with = crate::schema::any_json)]
    pub result: Option<Box<RawValue>>,
    pub error: Option<String>,
}

/// One node's timings, for the speedup report.
#[derive(Clone, Debug)]
pub struct NodeTiming {
    /// Parents, as indexes into the same slice.
    pub parents: Vec<usize>,
    /// When the node could first run: the workflow's submission or its last parent's finish.
    pub ready_at: Timestamp,
    /// Every attempt's (start, end).
    pub attempts: Vec<(Timestamp, Timestamp)>,
}

/// What parallel execution bought, measured on a finished workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpeedupReport {
    pub tasks: usize,
    /// Sum of every attempt's run time: what one worker running everything in turn would take.
    #[serde(rename = "t_serial_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub t_serial: Duration,
    /// Wall time from the first start to the last finish.
    #[serde(rename = "t_parallel_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub t_parallel: Duration,
    /// `T_serial / T_parallel`.
    pub speedup: f64,
    /// Most attempts running at the same moment.
    pub peak_parallelism: usize,
    /// `speedup / peak_parallelism`: how well the parallelism in use was kept busy.
    pub efficiency: f64,
    /// The longest chain of run times through the graph: no schedule can beat it.
    #[serde(rename = "critical_path_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub critical_path: Duration,
    /// Total time nodes spent ready but not yet started.
    #[serde(rename = "queue_wait_ms", with = "duration_ms")]
    #[schema(value_type = u64)]
    pub queue_wait: Duration,
    /// The nodes of that longest chain, parents first, as indexes into the workflow's `nodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_nodes: Vec<u32>,
}

/// A node's parents as [`WorkflowNode::parents`] lists them: indexes, in order.
pub fn sorted_parents(n: &NodeTiming) -> Vec<u32> {
    let mut p: Vec<u32> = n.parents.iter().map(|&i| i as u32).collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// Computes the speedup report. Nodes must be given parents-first (as [`WorkflowPlan`] orders them).
pub fn speedup_report(nodes: &[NodeTiming]) -> SpeedupReport {
    let run = |n: &NodeTiming| -> Duration { n.attempts.iter().map(|(s, e)| e.duration_since(*s)).sum() };
    let t_serial: Duration = nodes.iter().map(run).sum();
    let first = nodes.iter().flat_map(|n| n.attempts.iter().map(|a| a.0)).min();
    let last = nodes.iter().flat_map(|n| n.attempts.iter().map(|a| a.1)).max();
    let t_parallel = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    // Peak parallelism: sweep over attempt starts (+1) and ends (-1); an end at the same instant
    // as a start is counted first, so back-to-back attempts do not overlap.
    let mut events: Vec<(Timestamp, i32)> =
        nodes.iter().flat_map(|n| n.attempts.iter()).flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    events.sort();
    let (mut running, mut peak) = (0i64, 0i64);
    for (_, delta) in events {
        running += i64::from(delta);
        peak = peak.max(running);
    }
    // The longest chain ending at each node, and the parent it came through.
    let mut longest = vec![Duration::ZERO; nodes.len()];
    let mut through: Vec<Option<usize>> = vec![None; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let best = n.parents.iter().copied().filter(|&p| p < i).max_by_key(|&p| (longest[p], std::cmp::Reverse(p)));
        longest[i] = best.map(|p| longest[p]).unwrap_or_default() + run(n);
        through[i] = best;
    }
    let mut critical_nodes = Vec::new();
    // It ends at the node with the longest chain (the latest such node, on a tie: the deepest).
    let mut at = (0..nodes.len()).filter(|&i| !longest[i].is_zero()).max_by_key(|&i| (longest[i], i));
    while let Some(i) = at {
        critical_nodes.push(i as u32);
        at = through[i];
    }
    critical_nodes.reverse();
    let queue_wait =
        nodes.iter().filter_map(|n| n.attempts.iter().map(|a| a.0).min().map(|s| s.duration_since(n.ready_at))).sum();
    let speedup = if t_parallel.is_zero() { 0.0 } else { t_serial.as_secs_f64() / t_parallel.as_secs_f64() };
    SpeedupReport {
        tasks: nodes.len(),
        t_serial,
        t_parallel,
        speedup,
        peak_parallelism: peak as usize,
        efficiency: if peak > 0 { speedup / peak as f64 } else { 0.0 },
        critical_path: longest.into_iter().max().unwrap_or_default(),
        queue_wait,
        critical_nodes,
    }
}

#[cfg(test)]
mod tests;
