//! The event stream end to end, with real processes: a Server-Sent Events reader that hangs up
//! mid-stream again and again and comes back with `Last-Event-ID` receives every event exactly
//! once and in order, across a `kill -9` of the server (SQLite) and, on PostgreSQL, while it
//! goes back and forth between two nodes, one of which is killed.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ServerProcess, WorkerProcess, cli_code};
use taskwarden_client::{Client, EventList, SubmitTask, SubmitTaskExt, TaskId};
use taskwarden_store::pg_testing::TestSchema;

/// Reads the stream from `url` after `last_id` (sent as `Last-Event-ID`), then hangs up after
/// `most` events or `within`, whichever comes first; a connection that fails yields nothing.
async fn read_some(
    http: &reqwest::Client,
    url: &str,
    last_id: Option<&str>,
    most: usize,
    within: Duration,
) -> Vec<Value> {
    let mut req = http.get(format!("{url}/v1/events")).header("Accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let Ok(Ok(mut resp)) = tokio::time::timeout_at(deadline, req.send()).await else { return got };
    assert!(resp.status().is_success(), "{}", resp.status());
    let (mut buffer, mut data) = (String::new(), String::new());
    while got.len() < most {
        let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            } else if line.is_empty() && !data.is_empty() {
                got.push(serde_json::from_str(&std::mem::take(&mut data)).unwrap());
            }
        }
    }
    got.truncate(most); // a hang-up mid-event: what came whole
    got
}

/// The whole log as the JSON pages give it, once everything has settled.
async fn whole_log(client: &Client) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = "0".to_string();
    loop {
        let options =
            taskwarden_client::EventOptions { after: Some(after.clone()), limit: Some(1000), ..Default::default() };
        let page: EventList = client.events(&options).await.unwrap();
        if page.events.is_empty() {
            return all;
        }
        all.extend(page.events.iter().map(|e| serde_json::to_value(e).unwrap()));
        after = page.next.to_string();
    }
}

/// Submits `n` tasks in batches of 10 (with idempotency keys, so a batch whose answer was lost
/// is sent again without doubling) and returns their ids.
fn submitter(client: Client, queue: &'static str, n: usize) -> tokio::task::JoinHandle<HashSet<TaskId>> {
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        for start in (0..n).step_by(10) {
            let batch: Vec<SubmitTask> = (start..start + 10)
                .map(|i| SubmitTask::new(queue, "echo").idempotency_key(format!("ev-{i}")))
                .collect();
            loop {
                match client.submit_batch(batch.clone()).await {
                    Ok(tasks) => {
                        ids.extend(tasks.iter().map(|t| t.id));
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        ids
    })
}

/// Reads in short, cut-off connections (each to the next of `urls`) until every task in `ids`
/// has its `task.succeeded`; `between` runs after each connection (to kill a node, say).
async fn read_until_done(
    urls: &[String],
    done: &tokio::task::JoinHandle<HashSet<TaskId>>,
    mut between: impl FnMut(usize),
) -> (Vec<Value>, usize) {
    let http = reqwest::Client::new();
    let mut received: Vec<Value> = Vec::new();
    let mut succeeded = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut connections = 0;
    loop {
        let last = received.last().map(|e| e["id"].as_str().unwrap().to_owned());
        let url = &urls[connections % urls.len()];
        // An odd number, so hang-ups land anywhere in a task's events.
        let got = read_some(&http, url, last.as_deref(), 37, Duration::from_millis(700)).await;
        for e in &got {
            if e["type"] == "task.succeeded" {
                succeeded.insert(e["task_id"].as_str().unwrap().to_owned());
            }
        }
        received.extend(got);
        connections += 1;
        between(connections);
        if done.is_finished() && succeeded.len() >= 300 {
            return (received, connections);
        }
        assert!(Instant::now() < deadline, "only {} tasks seen succeeding", succeeded.len());
    }
}

fn assert_exactly_once_in_order(received: &[Value], log: &[Value]) {
    let ids = |events: &[Value]| events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (got, want) = (ids(received), ids(log));
    assert_eq!(got.len(), want.len(), "as many events as the log holds");
    assert_eq!(got, want, "every event once, in the log's order");
    assert_eq!(received, log, "and each as the log has it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_keeps_reconnecting_gets_every_event_once_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let url = server.url.clone();
    let _worker = WorkerProcess::start(&url, "ev", &["--concurrency", "8"]);
    let client = Client::new(&url).unwrap();
    let submitted = submitter(client.clone(), "ev", 300);
    let (received, connections) = read_until_done(std::slice::from_ref(&url), &submitted, |n| {
        if n == 4 {
            server.kill9();
            server.restart();
        }
    })
    .await;
    let ids = submitted.await.unwrap();
    assert_eq!(ids.len(), 300);
    assert!(connections > 10, "the reader hung up and came back many times ({connections})");
    let log = whole_log(&client).await;
    assert_exactly_once_in_order(&received, &log);
    // The log has every acknowledged task's submission and success.
    let of = |t: &str| {
        log.iter()
            .filter(|e| e["type"] == t)
            .map(|e| e["task_id"].as_str().unwrap().parse::<TaskId>().unwrap())
            .collect::<HashSet<_>>()
    };
    assert_eq!(of("task.submitted"), ids);
    assert_eq!(of("task.succeeded"), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_reader_moving_between_two_nodes_gets_every_event_once() {
    let Some(schema) = TestSchema::new("events").await else { return };
    let mut a = ServerProcess::postgres(&schema.url, &schema.name, &[]);
    let b = ServerProcess::postgres(&schema.url, &schema.name, &[]);
    let urls = vec![a.url.clone(), b.url.clone()];
    let both = urls.join(",");
    let _workers = [
        WorkerProcess::start(&both, "ev", &["--concurrency", "8"]),
        WorkerProcess::start(&format!("{},{}", b.url, a.url), "ev", &["--concurrency", "8"]),
    ];
    // Tasks go in through both nodes.
    let first = submitter(Client::new(&both).unwrap(), "ev", 300);
    let (received, connections) = read_until_done(&urls, &first, |n| {
        if n == 5 {
            a.kill9();
            a.restart();
        }
    })
    .await;
    first.await.unwrap();
    assert!(connections > 10);
    let log = whole_log(&Client::new(&b.url).unwrap()).await;
    assert_exactly_once_in_order(&received, &log);
    assert_eq!(log.iter().filter(|e| e["type"] == "task.succeeded").count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_watch_follows_a_task_to_its_outcome_and_events_filter_by_type() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let _worker = WorkerProcess::start(&server.url, "w", &["--concurrency", "2"]);
    let client = Client::new(&server.url).unwrap();
    let task = client.submit(SubmitTask::new("w", "fail").max_attempts(2)).await.unwrap();
    let id = task.id.to_string();
    let (code, out, err) = cli_code(&["task", "watch", &id, "--url", &server.url], None);
    assert_eq!(code, 1, "a failed task: {out}{err}");
    assert!(out.contains("task.failed"), "{out}");
    assert!(out.lines().last().unwrap().contains("failed"), "ends with the outcome: {out}");
    let (code, out, _) = cli_code(
        &["events", "--type", "task.retrying,task.failed", "--task", &id, "--url", &server.url, "--json"],
        None,
    );
    assert_eq!(code, 0);
    let types: Vec<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["task.retrying", "task.failed"]);
    // A bad filter is refused, naming the field.
    let (code, _, err) = cli_code(&["events", "--type", "task.exploded", "--url", &server.url], None);
    assert_ne!(code, 0);
    assert!(err.contains("type"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_log_lines_are_printed_by_task_logs_follow() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let _worker = WorkerProcess::start(&server.url, "logs", &["--concurrency", "2"]);
    let client = Client::new(&server.url).unwrap();
    let task = client
        .submit(SubmitTask::new("logs", "sleep").payload(&serde_json::json!({"ms": 1500})).unwrap())
        .await
        .unwrap();
    let id = task.id.to_string();
    // Follows from before the task starts until it has finished, then exits.
    let (code, out, err) = cli_code(&["task", "logs", &id, "--follow", "--url", &server.url], None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].ends_with("attempt 1  sleeping 1500 ms"), "{out}");
    // The handler's `tracing` event, through `TaskLogLayer`.
    assert!(lines[1].ends_with("attempt 1  INFO woke up attempt=1"), "{out}");
    let page = client.task_logs(task.id, 0, Duration::ZERO).await.unwrap();
    assert!(page.finished);
    assert_eq!(
        page.lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["sleeping 1500 ms", "INFO woke up attempt=1"]
    );
}

/// `--no-event-log --no-metrics`: tasks run as ever; the log's readers (events, stats, new
/// webhooks) answer 409 saying why, `/metrics` 404, and the file keeps no event. Started again
/// with the defaults, the same data directory logs what happens from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_event_log_or_metrics_runs_tasks_and_says_what_it_does_not_keep() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let args = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["--data-dir".into(), data_dir.clone()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let port = support::free_port();
    let mut server = ServerProcess::start_with(args(&["--no-event-log", "--no-metrics"]), port);
    let client = Client::new(&server.url).unwrap();
    let _worker = WorkerProcess::start(&server.url, "quiet", &[]);
    let task = client.submit(SubmitTask::new("quiet", "echo").payload(&serde_json::json!(7)).unwrap()).await.unwrap();
    let done = client.wait(task.id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(done.state, taskwarden_client::TaskState::Succeeded);

    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| http.request(method, format!("{}{path}", server.url));
    for (request, status, code) in [
        (call(reqwest::Method::GET, "/v1/events"), 409, "event_log_off"),
        (call(reqwest::Method::GET, "/v1/events").header("Accept", "text/event-stream"), 409, "event_log_off"),
        (call(reqwest::Method::GET, "/v1/stats"), 409, "event_log_off"),
        (
            call(reqwest::Method::POST, "/v1/webhooks")
                .json(&serde_json::json!({"name": "n", "url": "https://example.com/hook", "events": ["task.failed"]})),
            409,
            "event_log_off",
        ),
        (call(reqwest::Method::GET, "/metrics"), 404, "metrics_off"),
    ] {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (code, _, err) = cli_code(&["events", "--url", &server.url], None);
    assert_ne!(code, 0);
    assert!(err.contains("--no-event-log"), "the CLI passes the server's reason on: {err}");

    // The same data directory with the defaults: the log starts with what happens now.
    drop(_worker);
    server.kill9();
    let server = ServerProcess::start_with(args(&[]), port);
    let client = Client::new(&server.url).unwrap();
    let again = client.submit(SubmitTask::new("quiet", "echo")).await.unwrap();
    let log = whole_log(&client).await;
    let tasks: Vec<&str> = log.iter().filter_map(|e| e["task_id"].as_str()).collect();
    assert_eq!(tasks, [again.id.to_string()], "only the task submitted with the log on: {log:?}");
    let metrics = http.get(format!("{}/metrics", server.url)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);

    // Metrics off and a listener for them contradict each other: refused at start.
    let (code, _, err) = cli_code(
        &[
            "server",
            "--data-dir",
            &data_dir,
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("--no-metrics") || err.contains("no_metrics"), "{err}");
}
