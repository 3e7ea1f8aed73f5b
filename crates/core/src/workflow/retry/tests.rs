use proptest::prelude::*;

use super::*;
use TaskState::{Cancelled, Failed, Succeeded};

fn node(state: TaskState, parents: &[usize]) -> RetryNode {
    RetryNode { state, parents: parents.to_vec(), fan_out: None }
}

fn join(state: TaskState, members: std::ops::Range<usize>, policy: FailurePolicy) -> RetryNode {
    RetryNode { state, parents: members.collect(), fan_out: Some(policy) }
}

fn rerun_of(plan: &RetryPlan) -> Vec<usize> {
    plan.rerun.iter().map(|(i, _)| *i).collect()
}

const QUORUM_3: FailurePolicy = FailurePolicy::Quorum { min_successes: Some(3), fraction: None };

#[test]
fn a_failed_diamond_reruns_the_failure_and_what_it_cancelled_and_keeps_the_root() {
    // a -> (b, c) -> d: b failed, which cancelled c and d.
    let nodes = [node(Succeeded, &[]), node(Failed, &[0]), node(Cancelled, &[0]), node(Cancelled, &[1, 2])];
    let plan = plan_retry(WorkflowState::Failed, &nodes).unwrap();
    assert_eq!(plan.rerun, vec![(1, 0), (2, 0), (3, 2)], "b and c are ready at once, d waits for both");
    assert_eq!(plan.tally, Tally { total: 4, succeeded: 1, failed: 0, handled: 0 });
    assert!(plan.fan_outs.is_empty());
}

#[test]
fn only_a_failed_or_cancelled_workflow_whose_tasks_all_stopped_can_be_retried() {
    let nodes = [node(Failed, &[])];
    assert_eq!(plan_retry(WorkflowState::Running, &nodes), Err(RetryRefusal::Running));
    assert_eq!(plan_retry(WorkflowState::Succeeded, &nodes), Err(RetryRefusal::Succeeded));
    assert!(plan_retry(WorkflowState::Cancelled, &nodes).is_ok());
    let stopping = [node(Failed, &[]), node(TaskState::Running, &[]), node(TaskState::Ready, &[])];
    assert_eq!(plan_retry(WorkflowState::Failed, &stopping), Err(RetryRefusal::Unfinished(2)));
}

#[test]
fn a_failure_a_succeeded_task_already_took_into_account_is_kept() {
    // A collecting fan-out: member 1 failed, the join (2) read its error and succeeded; then
    // task 3, after the join, failed.
    let nodes =
        [node(Succeeded, &[]), node(Failed, &[]), join(Succeeded, 0..2, FailurePolicy::Collect), node(Failed, &[2])];
    let plan = plan_retry(WorkflowState::Failed, &nodes).unwrap();
    assert_eq!(plan.rerun, vec![(3, 0)]);
    assert_eq!(plan.tally, Tally { total: 4, succeeded: 2, failed: 0, handled: 1 });
    assert!(plan.fan_outs.is_empty(), "the fan-out is done with");

    let settled = [node(Failed, &[]), node(Succeeded, &[0])];
    assert_eq!(plan_retry(WorkflowState::Failed, &settled), Err(RetryRefusal::NothingToRerun));
}

#[test]
fn a_quorum_its_kept_members_still_reach_runs_its_join_at_once() {
    // Three of five members succeeded, the quorum released the join and cancelled the other
    // two; then the join failed.
    let mut nodes: Vec<RetryNode> =
        [Succeeded, Succeeded, Succeeded, Cancelled, Cancelled].into_iter().map(|s| node(s, &[])).collect();
    nodes.push(join(Failed, 0..5, QUORUM_3));
    let plan = plan_retry(WorkflowState::Failed, &nodes).unwrap();
    assert_eq!(plan.rerun, vec![(5, 0)], "the cancelled members are not needed");
    assert_eq!(plan.fan_outs, vec![FanOutRestart { join: 5, succeeded: 3, failed: 2, decided: true }]);
    assert_eq!(plan.tally, Tally { total: 6, succeeded: 3, failed: 0, handled: 2 });
}

#[test]
fn a_lost_quorum_reruns_its_failed_members_and_then_its_join() {
    // One of five succeeded, three failed (the quorum of three was lost), one was cancelled, and
    // so was the join.
    let mut nodes: Vec<RetryNode> =
        [Succeeded, Failed, Failed, Failed, Cancelled].into_iter().map(|s| node(s, &[])).collect();
    nodes.push(join(Cancelled, 0..5, QUORUM_3));
    let plan = plan_retry(WorkflowState::Failed, &nodes).unwrap();
    assert_eq!(plan.rerun, vec![(1, 0), (2, 0), (3, 0), (4, 0), (5, 4)], "the join waits for the four");
    assert_eq!(plan.fan_outs, vec![FanOutRestart { join: 5, succeeded: 1, failed: 0, decided: false }]);
    assert_eq!(plan.tally, Tally { total: 6, succeeded: 1, failed: 0, handled: 0 });
}

#[test]
fn a_fanned_out_parent_that_failed_runs_again_with_its_children_and_join() {
    // Node 0 fanned out (its edges moved to the join, so it has none left), then failed; its
    // children (1, 2) and the join (3) were cancelled; node 4 waited for the join.
    let nodes = [
        node(Failed, &[]),
        node(Cancelled, &[]),
        node(Succeeded, &[]),
        node(Cancelled, &[1, 2]),
        node(Cancelled, &[3]),
    ];
    let plan = plan_retry(WorkflowState::Failed, &nodes).unwrap();
    assert_eq!(plan.rerun, vec![(0, 0), (1, 0), (3, 1), (4, 1)], "the child that succeeded is kept");
}

/// A DAG (parents always earlier), with a terminal state per node, and some nodes marked as the
/// join of a quorum fan-out over their parents.
fn graph() -> impl Strategy<Value = Vec<RetryNode>> {
    (1usize..24).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                let parents = proptest::collection::btree_set(0..i.max(1), 0..=i.min(4))
                    .prop_map(move |s| s.into_iter().filter(|&p| p < i).collect::<Vec<_>>());
                let state = prop_oneof![Just(Succeeded), Just(Failed), Just(Cancelled)];
                let quorum = prop_oneof![3 => Just(None), 1 => (1u32..4).prop_map(Some)];
                (state, parents, quorum).prop_map(|(state, parents, quorum)| {
                    let fan_out = quorum
                        .filter(|_| !parents.is_empty())
                        .map(|m| FailurePolicy::Quorum { min_successes: Some(m), fraction: None });
                    RetryNode { state, parents, fan_out }
                })
            })
            .collect::<Vec<_>>()
    })
}

proptest! {
    #[test]
    fn the_rerun_set_is_closed_downstream_and_never_holds_a_succeeded_task(nodes in graph()) {
        let Ok(plan) = plan_retry(WorkflowState::Failed, &nodes) else { return Ok(()) };
        let rerun = rerun_of(&plan);
        for &i in &rerun {
            prop_assert_ne!(nodes[i].state, Succeeded);
        }
        for (child, n) in nodes.iter().enumerate() {
            for &p in &n.parents {
                prop_assert!(!rerun.contains(&p) || rerun.contains(&child), "{p} runs again but its child {child} not");
            }
        }
    }

    #[test]
    fn each_rerun_task_waits_for_exactly_its_parents_that_run_again(nodes in graph()) {
        let Ok(plan) = plan_retry(WorkflowState::Failed, &nodes) else { return Ok(()) };
        let rerun = rerun_of(&plan);
        for &(i, pending) in &plan.rerun {
            let expected = nodes[i].parents.iter().filter(|p| rerun.contains(p)).count() as u32;
            if plan.fan_outs.iter().any(|f| f.join == i && f.decided) {
                prop_assert_eq!(pending, 0);
                prop_assert_eq!(expected, 0, "a satisfied quorum's members are all kept");
            } else {
                prop_assert_eq!(pending, expected);
            }
        }
        let t = plan.tally;
        prop_assert_eq!(t.succeeded + t.failed + t.handled + rerun.len() as u32, t.total);
        prop_assert_eq!(t.total as usize, nodes.len());
    }

    #[test]
    fn without_fan_outs_a_task_is_kept_exactly_when_it_or_something_after_it_succeeded(nodes in graph()) {
        let nodes: Vec<RetryNode> = nodes.into_iter().map(|n| RetryNode { fan_out: None, ..n }).collect();
        // Whether something at or after each node succeeded, children being later than parents.
        let mut reaches = vec![false; nodes.len()];
        for i in (0..nodes.len()).rev() {
            reaches[i] |= nodes[i].state == Succeeded;
            for &p in &nodes[i].parents {
                reaches[p] |= reaches[i];
            }
        }
        match plan_retry(WorkflowState::Cancelled, &nodes) {
            Ok(plan) => {
                let expected: Vec<usize> = (0..nodes.len()).filter(|&i| !reaches[i]).collect();
                prop_assert_eq!(rerun_of(&plan), expected);
            }
            Err(e) => {
                prop_assert_eq!(e, RetryRefusal::NothingToRerun);
                prop_assert!(reaches.iter().all(|r| *r));
            }
        }
    }
}
