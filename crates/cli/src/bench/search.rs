//! `taskwarden bench --only search`: how long the task search (`GET /v1/tasks?q=`, what the
//! dashboard's task pages call) takes with `--search-tasks` tasks stored (default 1,000,000).
//!
//! Seeds the tasks in batches of 1,000 from 4 clients: three queues, three kinds, payloads
//! `{"customer_id": i % 10000, "plan": ...}`; one task in 500 goes to a fourth queue whose tasks
//! are then leased and failed with an error (dead letters). Then times each query `--runs` times
//! 20 ways (a first page of 50, as the dashboard asks) and prints the median and the slowest;
//! and what the dashboard does for a rare match: follows short pages until 50 tasks or 20 calls.

use std::time::{Duration, Instant};

use taskwarden_client::{Client, ListOptions, SubmitTask};
use taskwarden_core::protocol::{Outcome, RegisterWorker, Report};

use super::{Backend, BenchArgs, median, start_server};

const BATCH: usize = 1000;
const CLIENTS: usize = 4;
const SAMPLES: usize = 20;

fn task(i: usize) -> SubmitTask {
    let (queue, kind) = match i % 500 {
        0 => ("search-failing", "flaky"),
        _ => (["search-a", "search-b", "search-c"][i % 3], ["email", "charge", "report"][(i / 3) % 3]),
    };
    let payload = format!(r#"{{"customer_id":{},"plan":"{}"}}"#, i % 10_000, ["free", "pro", "team"][i % 7 % 3]);
    SubmitTask {
        queue: queue.into(),
        kind: kind.into(),
        payload: Some(serde_json::value::RawValue::from_string(payload).expect("JSON")),
        max_attempts: Some(1),
        ..Default::default()
    }
}

/// Seeds `n` tasks; answers the id of the middle one (a cursor deep into the list).
async fn seed(url: &str, n: usize) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let client = Client::new(url)?;
        clients.spawn(async move {
            let mut middle = None;
            let mut batch = c;
            while batch * BATCH < n {
                let from = batch * BATCH;
                let tasks: Vec<SubmitTask> = (from..(from + BATCH).min(n)).map(task).collect();
                let made = client.submit_batch(tasks).await?;
                if (from..from + BATCH).contains(&(n / 2)) {
                    middle = Some(made[n / 2 - from].id.to_string());
                }
                batch += CLIENTS;
            }
            anyhow::Ok(middle)
        });
    }
    let mut middle = None;
    while let Some(done) = clients.join_next().await {
        middle = done??.or(middle);
    }
    println!("seeded {n} tasks in {:.1} s", started.elapsed().as_secs_f64());
    middle.ok_or_else(|| anyhow::anyhow!("no middle task"))
}

/// Leases every task of the failing queue and fails it for good, with an error to search for.
async fn fail_the_failing(client: &Client) -> anyhow::Result<usize> {
    let queues = vec!["search-failing".to_owned()];
    let worker = client
        .register(&RegisterWorker {
            name: "bench-search".into(),
            queues: queues.clone(),
            concurrency: 1000,
            ..Default::default()
        })
        .await?;
    let mut failed = 0;
    loop {
        let leased = client.fetch(&worker.id, &queues, 1000, Duration::ZERO).await?;
        if leased.is_empty() {
            return Ok(failed);
        }
        failed += leased.len();
        let reports = leased
            .iter()
            .map(|t| {
                let error = "upstream timeout after 30s".to_owned();
                Report::new(t.id, t.lease, Outcome::Failed { error, retry_after_ms: None, permanent: true })
            })
            .collect();
        client.report(&worker.id, reports).await?;
    }
}

/// Times one list call, `samples` times; answers (median, slowest) in ms and the last page's size.
async fn time(client: &Client, q: &str, cursor: Option<&str>) -> anyhow::Result<(f64, f64, usize, bool)> {
    let mut ms = Vec::new();
    let mut last = (0, false);
    for _ in 0..SAMPLES {
        let options = ListOptions {
            q: (!q.is_empty()).then(|| q.to_owned()),
            cursor: cursor.map(str::to_owned),
            limit: Some(50),
            ..Default::default()
        };
        let started = Instant::now();
        let page = client.list(&options).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        last = (page.tasks.len(), page.next_cursor.is_some());
    }
    let slowest = ms.iter().copied().fold(0.0, f64::max);
    Ok((median(ms), slowest, last.0, last.1))
}

/// What the dashboard does: follows short pages until 50 tasks or 20 calls; answers ms, tasks, calls.
async fn dashboard_search(client: &Client, q: &str) -> anyhow::Result<(f64, usize, usize)> {
    let started = Instant::now();
    let (mut tasks, mut cursor, mut calls) = (0, None, 0);
    loop {
        let options = ListOptions {
            q: Some(q.to_owned()),
            cursor: cursor.take(),
            limit: Some(50 - tasks as u32),
            ..Default::default()
        };
        let page = client.list(&options).await?;
        calls += 1;
        tasks += page.tasks.len();
        cursor = page.next_cursor;
        if cursor.is_none() || tasks >= 50 || calls >= 20 {
            return Ok((started.elapsed().as_secs_f64() * 1000.0, tasks, calls));
        }
    }
}

pub(super) async fn run(args: &BenchArgs, backend: &Backend<'_>) -> anyhow::Result<()> {
    let (_server, url) = start_server(backend, &[])?;
    let client = Client::new(&url)?;
    let store = if matches!(backend, Backend::Postgres { .. }) { "PostgreSQL" } else { "SQLite" };
    let n = args.search_tasks;
    println!("taskwarden bench, task search: {store}, {n} tasks stored, pages of 50, {SAMPLES} calls per query");
    let middle = seed(&url, n).await?;
    let failed = fail_the_failing(&client).await?;
    println!("{failed} tasks failed for good (dead letters with an error)");
    let queries: &[(&str, &str, bool)] = &[
        ("every task, newest first", "", false),
        ("a page deep in the list (keyset cursor)", "", true),
        ("one queue", "queue:search-b", false),
        ("dead letters", "state:failed", false),
        ("ready in one queue", "state:ready queue:search-a", false),
        ("one kind (a third of all)", "kind:charge", false),
        ("a payload field, 1 task in 10,000", "payload.customer_id=4242", false),
        ("a payload field and a queue", "payload.customer_id=4242 queue:search-a", false),
        ("two payload fields", "payload.customer_id=77 payload.plan:pro", false),
        ("error text", "error:timeout", false),
        ("a kind no task has (the worst case: a full window, no match)", "kind:no-such-kind", false),
        ("created in the last minute", "after:1m", false),
        ("one task by id", &middle, false),
    ];
    println!();
    println!("| query | q | median | slowest | page |");
    println!("|---|---|---|---|---|");
    for (name, q, deep) in queries {
        let mut medians = Vec::new();
        let mut slowest: f64 = 0.0;
        let mut page = (0, false);
        for _ in 0..args.runs {
            let (m, s, len, more) = time(&client, q, deep.then_some(middle.as_str())).await?;
            medians.push(m);
            slowest = slowest.max(s);
            page = (len, more);
        }
        let shown = if q.len() > 40 { "(a task id)" } else { q };
        let more = if page.1 { ", more to follow" } else { "" };
        println!("| {name} | `{shown}` | {:.1} ms | {slowest:.1} ms | {} tasks{more} |", median(medians), page.0);
    }
    println!();
    println!("| the dashboard's search (short pages followed to 50 tasks or 20 calls) | q | time | tasks | calls |");
    println!("|---|---|---|---|---|");
    for q in ["payload.customer_id=4242", "error:timeout", "kind:no-such-kind"] {
        let mut times = Vec::new();
        let mut last = (0, 0);
        for _ in 0..args.runs {
            let (ms, tasks, calls) = dashboard_search(&client, q).await?;
            times.push(ms);
            last = (tasks, calls);
        }
        println!("| search | `{q}` | {:.0} ms | {} | {} |", median(times), last.0, last.1);
    }
    Ok(())
}
