//! Conformance cases for retrying a decided workflow (`docs/design-workflows.md`, "Retry").

use taskwarden_core::TaskState;
use taskwarden_core::protocol::Outcome;
use taskwarden_core::workflow::{FailurePolicy, Workflow, WorkflowState};

use super::{at, failure, fanned_out, futures_join, lease_ready, report, success, workflow};
use crate::params::*;
use crate::{Store, StoreError};

fn node_state(wf: &Workflow, node: &str) -> TaskState {
    wf.nodes.iter().find(|n| n.node == node).unwrap_or_else(|| panic!("no node {node}")).state
}

fn retry(id: taskwarden_core::TaskId, ms: i64) -> RetryWorkflow {
    RetryWorkflow { id, now: at(ms) }
}

pub async fn retrying_a_failed_workflow_reruns_what_failed_and_what_it_cancelled_and_keeps_what_succeeded(
    store: &dyn Store,
) {
    // a -> (b, c) -> d, fail-fast, one attempt each: b fails while c runs.
    let wf = store
        .submit_workflow(workflow(
            FailurePolicy::FailFast,
            &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
        ))
        .await
        .unwrap();
    let a = lease_ready(store, at(1)).await.remove("a").unwrap();
    report(store, &a, success(r#"{"from":"a"}"#), at(2)).await.unwrap();
    let ready = lease_ready(store, at(3)).await;
    report(store, &ready["b"], failure(true), at(4)).await.unwrap();
    assert_eq!(store.workflow_state(wf.id).await.unwrap(), WorkflowState::Failed);

    let refused = store.retry_workflow(retry(wf.id, 5)).await;
    assert!(matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("not stopped")), "c still runs: {refused:?}");
    report(store, &ready["c"], Outcome::Cancelled, at(6)).await.unwrap();

    let retried = store.retry_workflow(retry(wf.id, 7)).await.unwrap();
    assert_eq!((retried.state, retried.error.as_deref(), retried.finished_at), (WorkflowState::Running, None, None));
    assert_eq!((retried.succeeded, retried.failed), (1, 0), "counts start over from what is kept");
    assert_eq!(node_state(&retried, "a"), TaskState::Succeeded);
    assert_eq!(node_state(&retried, "b"), TaskState::Ready);
    assert_eq!(node_state(&retried, "c"), TaskState::Ready);
    assert_eq!(node_state(&retried, "d"), TaskState::Scheduled, "d waits for b and c again");

    let again = lease_ready(store, at(8)).await;
    assert_eq!(again.keys().collect::<Vec<_>>(), vec!["b", "c"], "a is not run again");
    let b = &again["b"];
    assert_eq!(b.lease.as_ref().unwrap().attempt, 2, "the history goes on");
    assert_eq!(b.attempt_limit, 2, "with a fresh budget: one more attempt");
    report(store, b, success("\"b2\""), at(9)).await.unwrap();
    assert!(lease_ready(store, at(10)).await.is_empty(), "d still waits for c");
    report(store, &again["c"], success("\"c2\""), at(11)).await.unwrap();
    let d = lease_ready(store, at(12)).await.remove("d").expect("released by its re-run parents");
    let parents = store.parents(ListParents { task_id: d.id, after: None, limit: 10 }).await.unwrap();
    let seen: Vec<&str> = parents.iter().map(|p| p.result.as_ref().unwrap().get()).collect();
    assert_eq!(seen, vec!["\"b2\"", "\"c2\""]);
    report(store, &d, success("\"done\""), at(13)).await.unwrap();

    let done = store.get_workflow(wf.id).await.unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.unwrap().get(), "\"done\"");
    assert_eq!((done.succeeded, done.failed), (4, 0));
    let a = store.get(a.id).await.unwrap();
    assert_eq!((a.attempts, a.result.unwrap().get()), (1, r#"{"from":"a"}"#), "a ran once; its result is kept");
}

pub async fn only_a_decided_workflow_can_be_retried(store: &dyn Store) {
    let missing = taskwarden_core::IdGenerator::new().next(at(0), 9);
    assert!(matches!(store.retry_workflow(retry(missing, 1)).await, Err(StoreError::NotFound)));

    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"])])).await.unwrap();
    let refused = store.retry_workflow(retry(wf.id, 1)).await;
    assert!(matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("decided")), "{refused:?}");
    let a = lease_ready(store, at(2)).await.remove("a").unwrap();
    report(store, &a, success("1"), at(3)).await.unwrap();
    let b = lease_ready(store, at(4)).await.remove("b").unwrap();
    report(store, &b, success("2"), at(5)).await.unwrap();
    assert_eq!(store.workflow_state(wf.id).await.unwrap(), WorkflowState::Succeeded);
    let refused = store.retry_workflow(retry(wf.id, 6)).await;
    assert!(matches!(&refused, Err(StoreError::Conflict(m)) if m.contains("succeeded")), "{refused:?}");
    let got = store.get_workflow(wf.id).await.unwrap();
    assert_eq!((got.state, got.succeeded), (WorkflowState::Succeeded, 2), "a refused retry changes nothing");
    assert!(lease_ready(store, at(7)).await.is_empty());
}

pub async fn a_cancelled_workflow_is_retried_once_however_many_ask_at_once(store: &dyn Store) {
    let wf = store.submit_workflow(workflow(FailurePolicy::FailFast, &[("a", &[]), ("b", &["a"])])).await.unwrap();
    let a = lease_ready(store, at(1)).await.remove("a").unwrap();
    report(store, &a, success("\"a\""), at(2)).await.unwrap();
    let cancelled = store.cancel_workflow(CancelWorkflow { id: wf.id, now: at(3) }).await.unwrap();
    assert_eq!(node_state(&cancelled, "b"), TaskState::Cancelled);

    let answers = futures_join((0..4).map(|i| store.retry_workflow(retry(wf.id, 4 + i))).collect()).await;
    let retried: Vec<&Workflow> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(retried.len(), 1, "one retry wins: {answers:?}");
    for lost in answers.iter().filter(|a| a.is_err()) {
        assert!(matches!(lost, Err(StoreError::Conflict(_))), "the others find it running: {lost:?}");
    }
    assert_eq!(node_state(retried[0], "b"), TaskState::Ready, "b was cancelled before it ran: ready at once");

    let ready = lease_ready(store, at(10)).await;
    assert_eq!(ready.keys().collect::<Vec<_>>(), vec!["b"], "once, and a is kept");
    report(store, &ready["b"], success("\"b\""), at(11)).await.unwrap();
    let done = store.get_workflow(wf.id).await.unwrap();
    assert_eq!((done.state, done.succeeded), (WorkflowState::Succeeded, 2));
}

pub async fn a_lost_quorum_fan_out_reruns_its_failed_children_then_its_join(store: &dyn Store) {
    let quorum = FailurePolicy::Quorum { min_successes: Some(2), fraction: None };
    let (fo, kids) = fanned_out(store, 3, quorum).await;
    report(store, &kids["root/000000"], success("\"k0\""), at(5)).await.unwrap();
    report(store, &kids["root/000001"], failure(true), at(6)).await.unwrap();
    report(store, &kids["root/000002"], failure(true), at(7)).await.unwrap();
    let lost = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(lost.state, WorkflowState::Failed, "the quorum was lost, so the join was cancelled");
    assert_eq!(node_state(&lost, "root/join"), TaskState::Cancelled);

    let retried = store.retry_workflow(retry(fo.workflow_id, 8)).await.unwrap();
    assert_eq!(node_state(&retried, "root"), TaskState::Succeeded);
    assert_eq!(node_state(&retried, "root/000000"), TaskState::Succeeded);
    assert_eq!(node_state(&retried, "root/join"), TaskState::Scheduled);
    let again = lease_ready(store, at(9)).await;
    assert_eq!(again.keys().collect::<Vec<_>>(), vec!["root/000001", "root/000002"]);
    report(store, &again["root/000001"], success("\"k1\""), at(10)).await.unwrap();
    let join =
        lease_ready(store, at(11)).await.remove("root/join").expect("the quorum is reached again: the join runs");
    assert!(store.get(again["root/000002"].id).await.unwrap().cancel_requested, "no longer needed");
    report(store, &again["root/000002"], Outcome::Cancelled, at(12)).await.unwrap();
    let parents = store.parents(ListParents { task_id: join.id, after: None, limit: 10 }).await.unwrap();
    let results: Vec<Option<&str>> = parents.iter().map(|p| p.result.as_ref().map(|r| r.get())).collect();
    assert_eq!(results, vec![Some("\"k0\""), Some("\"k1\""), None], "the kept child's result is read as it was");
    report(store, &join, success("\"joined\""), at(13)).await.unwrap();
    let done = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded, "{:?}", done.error);
    assert_eq!(done.result.unwrap().get(), "\"joined\"");
}

pub async fn a_quorum_its_kept_children_still_reach_reruns_only_its_join(store: &dyn Store) {
    let quorum = FailurePolicy::Quorum { min_successes: Some(2), fraction: None };
    let (fo, kids) = fanned_out(store, 3, quorum).await;
    report(store, &kids["root/000000"], success("0"), at(5)).await.unwrap();
    report(store, &kids["root/000001"], success("1"), at(6)).await.unwrap();
    report(store, &kids["root/000002"], Outcome::Cancelled, at(7)).await.unwrap();
    let join = lease_ready(store, at(8)).await.remove("root/join").unwrap();
    report(store, &join, failure(true), at(9)).await.unwrap();
    assert_eq!(store.workflow_state(fo.workflow_id).await.unwrap(), WorkflowState::Failed);

    let retried = store.retry_workflow(retry(fo.workflow_id, 10)).await.unwrap();
    assert_eq!(node_state(&retried, "root/000002"), TaskState::Cancelled, "not needed by the quorum: kept");
    assert_eq!(node_state(&retried, "root/join"), TaskState::Ready, "the quorum stands: the join runs at once");
    let join = lease_ready(store, at(11)).await.remove("root/join").unwrap();
    assert!(lease_ready(store, at(11)).await.is_empty(), "nothing else runs");
    report(store, &join, success("\"joined\""), at(12)).await.unwrap();
    let done = store.get_workflow(fo.workflow_id).await.unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded, "{:?}", done.error);
}
