//! What the event log costs the SQLite store itself, without HTTP, processes or a network in
//! the way: two stores in one process, the log off and on, each taking single submits (one
//! task per call, each awaited) and then a drain of them (a lease of 16, a report per task),
//! then a drain of four times as many queued in batches (a lease of 512, one report for the
//! lease, as a 512-slot worker sends), in alternating rounds. Prints each side's time per task
//! and the median of the per-round ratios, on to off.
//!
//! ```sh
//! cargo run --release -p taskwarden-store --example event_log_cost            # relaxed durability
//! FULL=1 TASKS=2000 cargo run --release -p taskwarden-store --example event_log_cost
//! ```

use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use taskwarden_core::protocol::{Outcome, Report, SubmitTask};
use taskwarden_core::{Limits, NewTask, Timestamp};
use taskwarden_store::{Durability, FetchTasks, ReportOutcomes, SqliteConfig, SqliteStore, Store, SubmitTasks};

const ROUNDS: usize = 15;

fn spec(queue: &str, now: Timestamp) -> NewTask {
    let payload = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
    SubmitTask { queue: queue.into(), kind: "echo".into(), payload: Some(payload), ..Default::default() }
        .validate(&Limits::default(), now)
        .unwrap()
}

/// A fetch of up to `limit` tasks of the queue, without waiting.
fn lease(queue: &str, limit: u32, now: Timestamp) -> FetchTasks {
    FetchTasks {
        worker_id: "w".into(),
        queues: vec![queue.to_owned()],
        limit,
        wait: Duration::ZERO,
        now,
        finished: vec![],
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks: usize = std::env::var("TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let durability = if std::env::var("FULL").is_ok() { Durability::Full } else { Durability::Relaxed };
    let dir = tempfile::tempdir().unwrap();
    let stores = [false, true].map(|event_log| {
        let path = dir.path().join(if event_log { "on.db" } else { "off.db" });
        SqliteStore::open(SqliteConfig { durability, event_log, ..SqliteConfig::new(path) }).unwrap()
    });
    // Virtual time, a millisecond per call.
    let mut clock = Timestamp::from_millis(1_800_000_000_000);
    let mut tick = || {
        clock = clock.saturating_add(Duration::from_millis(1));
        clock
    };
    // [log off, log on] x [submit, drain, wide drain]: microseconds per task, one per round.
    let mut per_task: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..ROUNDS {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let store = &stores[side];
            let queue = format!("q{round}");
            let started = Instant::now();
            for _ in 0..tasks {
                let now = tick();
                let p =
                    SubmitTasks { tasks: vec![spec(&queue, now)], idempotency_window: Duration::from_secs(60), now };
                store.submit(p).await.unwrap();
            }
            per_task[side][0].push(started.elapsed().as_secs_f64() * 1e6 / tasks as f64);
            let started = Instant::now();
            let mut done = 0;
            while done < tasks {
                let fetch = lease(&queue, 16, tick());
                for task in store.fetch(fetch).await.unwrap() {
                    let result = Outcome::Succeeded { result: RawValue::from_string("1".into()).unwrap() };
                    let report = Report::new(task.id, task.lease.as_ref().unwrap().token, result);
                    let p = ReportOutcomes { worker_id: None, reports: vec![report], now: tick() };
                    store.report(p).await.unwrap().remove(0).unwrap();
                    done += 1;
                }
            }
            per_task[side][1].push(started.elapsed().as_secs_f64() * 1e6 / tasks as f64);
            // The wide shape: a backlog queued in batches (untimed), drained by leases of 512
            // with one report of each lease's tasks, as a 512-slot worker does.
            let queue = format!("wide{round}");
            let wide = tasks * 4;
            for chunk in 0..wide.div_ceil(1000) {
                let now = tick();
                let n = (wide - chunk * 1000).min(1000);
                let specs = (0..n).map(|_| spec(&queue, now)).collect();
                store.submit(SubmitTasks { tasks: specs, idempotency_window: Duration::ZERO, now }).await.unwrap();
            }
            let started = Instant::now();
            let mut done = 0;
            while done < wide {
                let fetch = lease(&queue, 512, tick());
                let leased = store.fetch(fetch).await.unwrap();
                done += leased.len();
                let reports = leased
                    .iter()
                    .map(|task| {
                        let result = Outcome::Succeeded { result: RawValue::from_string("1".into()).unwrap() };
                        Report::new(task.id, task.lease.as_ref().unwrap().token, result)
                    })
                    .collect();
                let p = ReportOutcomes { worker_id: None, reports, now: tick() };
                assert!(store.report(p).await.unwrap().iter().all(Result::is_ok));
            }
            per_task[side][2].push(started.elapsed().as_secs_f64() * 1e6 / wide as f64);
        }
    }
    println!("event log cost in the SQLite store, {durability:?} durability, {tasks} tasks x {ROUNDS} rounds");
    let names = ["single submits", "drain: lease 16, report each", "wide drain (4x the tasks): lease 512, one report"];
    for (i, name) in names.iter().enumerate() {
        let (off, on) = (&per_task[0][i], &per_task[1][i]);
        let ratios: Vec<f64> = on.iter().zip(off).map(|(a, b)| a / b).collect();
        println!(
            "{name}: log off {:.1} us/task, log on {:.1} us/task, on/off {:.3} (median of per-round ratios)",
            median(off),
            median(on),
            median(&ratios)
        );
    }
}
