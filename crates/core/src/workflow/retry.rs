//! Retrying a decided workflow: which of its tasks run again, what each of them waits for, and the
//! counts the workflow goes on from. Pure: the store loads the graph, asks [`plan_retry`], and
//! applies the answer in one transaction. The rules, and why, are in `docs/design-workflows.md`.

use thiserror::Error;

use super::{FailurePolicy, QuorumOutcome, Tally, WorkflowState, quorum};
use crate::task::TaskState;

/// One task of the workflow as a retry sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryNode {
    pub state: TaskState,
    /// Parents, as indexes into the same slice (any order: a fan-out's join is stored after the
    /// children it took over from its parent).
    pub parents: Vec<usize>,
    /// On a fan-out's join whose fan-out has a policy of its own: that policy. Its parents are the
    /// fan-out's members.
    pub fan_out: Option<FailurePolicy>,
}

/// A fan-out (one with a policy of its own) whose join runs again: its counts start over from the
/// members that are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanOutRestart {
    /// The join, as an index into the nodes.
    pub join: usize,
    pub succeeded: u32,
    pub failed: u32,
    /// Already decided: a quorum the kept members reach (the join then runs at once).
    pub decided: bool,
}

/// What a retry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPlan {
    /// The tasks that run again, each with how many of its parents it waits for (zero: ready at
    /// once), in node order.
    pub rerun: Vec<(usize, u32)>,
    /// The workflow's counts once the re-run tasks are no longer counted.
    pub tally: Tally,
    pub fan_outs: Vec<FanOutRestart>,
}

/// Why a workflow cannot be retried. Each is a conflict with the workflow's state (409).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RetryRefusal {
    #[error("only a decided workflow can be retried; this one is still running")]
    Running,
    #[error("the workflow succeeded; there is nothing to retry")]
    Succeeded,
    #[error("{0} of the workflow's tasks have not stopped yet; retry once they have")]
    Unfinished(usize),
    #[error("every failed or cancelled task was already taken into account by a task that succeeded")]
    NothingToRerun,
}

/// Decides what retrying a decided workflow re-runs.
///
/// Kept, as they are: every succeeded task; every member of a quorum fan-out whose succeeded
/// members already reach the quorum; and everything upstream of a kept task (its outcome was
/// already taken into account by a task that is kept). Every other task runs again, so the set
/// that runs again is closed downstream and never holds a succeeded task.
pub fn plan_retry(state: WorkflowState, nodes: &[RetryNode]) -> Result<RetryPlan, RetryRefusal> {
    match state {
        WorkflowState::Running => return Err(RetryRefusal::Running),
        WorkflowState::Succeeded => return Err(RetryRefusal::Succeeded),
        WorkflowState::Failed | WorkflowState::Cancelled => {}
    }
    let unfinished = nodes.iter().filter(|n| !n.state.is_terminal()).count();
    if unfinished > 0 {
        return Err(RetryRefusal::Unfinished(unfinished));
    }
    let succeeded = |i: usize| nodes[i].state == TaskState::Succeeded;

    // Quorum fan-outs that their succeeded members already satisfy: the rest of the members
    // stay as they are (cancelled once the quorum was reached, most likely).
    let satisfied: Vec<bool> = nodes
        .iter()
        .map(|n| match n.fan_out {
            Some(FailurePolicy::Quorum { min_successes, fraction }) => {
                let total = n.parents.len() as u32;
                let ok = n.parents.iter().filter(|&&p| succeeded(p)).count() as u32;
                quorum(min_successes, fraction, total, ok, 0) == QuorumOutcome::Reached
            }
            _ => false,
        })
        .collect();

    // Kept: the succeeded, the members of satisfied quorums, and everything upstream of them.
    let mut kept = vec![false; nodes.len()];
    let mut stack: Vec<usize> = (0..nodes.len()).filter(|&i| succeeded(i)).collect();
    for (join, _) in satisfied.iter().enumerate().filter(|(_, s)| **s) {
        stack.extend(nodes[join].parents.iter().copied());
    }
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut kept[i], true) {
            stack.extend(nodes[i].parents.iter().copied());
        }
    }

    let rerun: Vec<(usize, u32)> = (0..nodes.len())
        .filter(|&i| !kept[i])
        .map(|i| {
            // A kept parent is done for its child: it succeeded, or its failure was taken into
            // account and the policy let its children run. A satisfied quorum's join waits for no one.
            let pending = if satisfied[i] { 0 } else { nodes[i].parents.iter().filter(|&&p| !kept[p]).count() };
            (i, pending as u32)
        })
        .collect();
    if rerun.is_empty() {
        return Err(RetryRefusal::NothingToRerun);
    }

    let member_of_policy_fan_out = {
        let mut member = vec![false; nodes.len()];
        for n in nodes.iter().filter(|n| n.fan_out.is_some()) {
            for &p in &n.parents {
                member[p] = true;
            }
        }
        member
    };
    let mut tally = Tally { total: nodes.len() as u32, succeeded: 0, failed: 0, handled: 0 };
    for i in (0..nodes.len()).filter(|&i| kept[i]) {
        if succeeded(i) {
            tally.succeeded += 1;
        } else if member_of_policy_fan_out[i] {
            // Its fan-out's policy dealt with it; the workflow's policy never saw it.
            tally.handled += 1;
        } else {
            tally.failed += 1;
        }
    }

    let fan_outs = (0..nodes.len())
        .filter(|&j| nodes[j].fan_out.is_some() && !kept[j])
        .map(|j| {
            let members = &nodes[j].parents;
            let ok = members.iter().filter(|&&p| kept[p] && succeeded(p)).count() as u32;
            let not_ok = members.iter().filter(|&&p| kept[p] && !succeeded(p)).count() as u32;
            FanOutRestart { join: j, succeeded: ok, failed: not_ok, decided: satisfied[j] }
        })
        .collect();
    Ok(RetryPlan { rerun, tally, fan_outs })
}

#[cfg(test)]
mod tests;
