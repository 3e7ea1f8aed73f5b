//! Conformance cases for task logs: lines ride on the heartbeats and reports of the current
//! lease, are capped per attempt, and go with their task.

use taskwarden_core::protocol::{HeldLease, Outcome, Report};
use taskwarden_core::task_logs::{LogLine, MAX_LINES_PER_ATTEMPT, TRUNCATED, TaskLogLine};
use taskwarden_core::{LeaseToken, Task};

use super::{at, fetch, spec, submit_one};
use crate::params::*;
use crate::{Store, StoreError};

fn lines(texts: &[&str]) -> Vec<LogLine> {
    texts.iter().map(|t| LogLine { at: None, line: t.to_string() }).collect()
}

async fn beat(store: &dyn Store, task: &Task, lease: LeaseToken, logs: Vec<LogLine>, ms: i64) {
    let held = HeldLease { task_id: task.id, lease, progress: None, logs };
    store.heartbeat(Heartbeat { worker_id: None, leases: vec![held], now: at(ms) }).await.unwrap();
}

async fn report_with(
    store: &dyn Store,
    task: &Task,
    outcome: Outcome,
    logs: Vec<LogLine>,
    ms: i64,
) -> crate::Result<Task> {
    let lease = task.lease.as_ref().unwrap().token;
    let r = Report { logs, ..Report::new(task.id, lease, outcome) };
    store.report(ReportOutcomes { worker_id: None, reports: vec![r], now: at(ms) }).await.unwrap().remove(0)
}

async fn read(store: &dyn Store, task: &Task, after: u64, limit: u32) -> Vec<TaskLogLine> {
    store.task_logs(ReadTaskLogs { task_id: task.id, after, limit }).await.unwrap()
}

pub async fn task_logs_ride_on_the_current_leases_heartbeats_and_reports(store: &dyn Store) {
    let t = submit_one(store, spec("logs"), at(0)).await;
    let first = fetch(store, &["logs"], 1, at(1)).await.remove(0);
    let lease1 = first.lease.as_ref().unwrap().token;
    beat(store, &first, lease1, lines(&["a", "b"]), 2).await;
    let again = Outcome::Failed { error: "x".into(), retry_after_ms: Some(0), permanent: false };
    report_with(store, &first, again, lines(&["c"]), 3).await.unwrap();
    // The old lease is gone: its heartbeat and its report add nothing.
    beat(store, &first, lease1, lines(&["stale beat"]), 4).await;
    let stale = report_with(store, &first, Outcome::Succeeded { result: super::raw("0") }, lines(&["stale"]), 4).await;
    assert!(matches!(stale, Err(StoreError::LeaseLost)));
    let second = fetch(store, &["logs"], 1, at(5)).await.remove(0);
    report_with(store, &second, Outcome::Succeeded { result: super::raw("1") }, lines(&["d"]), 6).await.unwrap();

    let all = read(store, &t, 0, 100).await;
    let got: Vec<(u64, u32, &str)> = all.iter().map(|l| (l.seq, l.attempt, l.line.as_str())).collect();
    assert_eq!(got, [(1, 1, "a"), (2, 1, "b"), (3, 1, "c"), (4, 2, "d")]);
    assert_eq!(all[0].at, at(2), "undated lines are dated when they arrived");
    assert_eq!(read(store, &t, 2, 100).await, all[2..].to_vec());
    assert_eq!(read(store, &t, 0, 1).await, all[..1].to_vec());
    assert!(read(store, &t, 4, 100).await.is_empty());
}

pub async fn an_attempts_log_is_capped_and_goes_with_its_task(store: &dyn Store) {
    let t = submit_one(store, spec("caps"), at(0)).await;
    let leased = fetch(store, &["caps"], 1, at(1)).await.remove(0);
    let lease = leased.lease.as_ref().unwrap().token;
    let many: Vec<String> = (0..MAX_LINES_PER_ATTEMPT + 5).map(|i| format!("line {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    beat(store, &leased, lease, lines(&many[..600]), 2).await;
    beat(store, &leased, lease, lines(&many[600..]), 3).await;
    beat(store, &leased, lease, lines(&["after the cap"]), 4).await;
    let kept = read(store, &t, 0, 1000).await;
    let marker = read(store, &t, 1000, 10).await;
    assert_eq!(kept.len(), 1000);
    assert_eq!(kept[999].line, "line 999");
    assert_eq!(marker.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), [TRUNCATED], "one marker, then nothing");
    report_with(store, &leased, Outcome::Succeeded { result: super::raw("1") }, vec![], 5).await.unwrap();
    let pruned = store.prune_finished(PruneFinished { finished_before: at(10), limit: 100 }).await.unwrap();
    assert_eq!(pruned, 1);
    assert!(read(store, &t, 0, 10).await.is_empty(), "the log went with its task");
}
