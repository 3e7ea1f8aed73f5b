//! Scheduling through the real binary: a server process on the embedded store, worker processes
//! with capacity and labels, and the CLI: resources, labels and "unschedulable"; concurrency and
//! rate limits; cron schedules.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ServerProcess, WorkerProcess, cli};
use taskwarden_client::{Client, Task, TaskState};

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = cli(args);
    assert!(ok, "{args:?} failed: {err}");
    out
}

fn task_json(url: &str, id: &str) -> Value {
    serde_json::from_str(&ok(&["task", "get", id, "--url", url, "--json"])).unwrap()
}

fn submit(url: &str, extra: &[&str]) -> String {
    let mut args = vec!["submit", "--url", url];
    args.extend_from_slice(extra);
    ok(&args).trim().to_owned()
}

async fn finished(client: &Client, ids: &[String]) -> Vec<Task> {
    let mut out = Vec::new();
    for id in ids {
        let t = client.wait(id.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        out.push(client.get(t.id).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_only_where_they_fit_and_say_why_when_they_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let client = Client::new(url).unwrap();
    let _eu = WorkerProcess::start(url, "ml", &["--capacity", "gpu=1,cpu=4", "--labels", "region=eu"]);
    // One gpu: four gpu tasks of 300 ms run one at a time although the worker has 16 slots.
    let gpu_tasks: Vec<String> = (0..4)
        .map(|_| {
            submit(url, &["--queue", "ml", "--kind", "sleep", "--payload", r#"{"ms":300}"#, "--resources", "gpu=1"])
        })
        .collect();
    let big = submit(url, &["--queue", "ml", "--kind", "echo", "--resources", "gpu=2"]);
    let us = submit(url, &["--queue", "ml", "--kind", "echo", "--labels", "region=us"]);
    let done = finished(&client, &gpu_tasks).await;
    let first = done.iter().map(|t| t.history[0].started_at).min().unwrap();
    let last = done.iter().map(|t| t.history[0].finished_at).max().unwrap();
    assert!(last.duration_since(first) >= Duration::from_millis(1150), "one gpu: 4 x 300 ms one after another");

    let big_json = task_json(url, &big);
    assert_eq!(big_json["state"], "ready");
    assert_eq!(big_json["unschedulable"], "no live worker has gpu >= 2");
    assert_eq!(big_json["needs"]["resources"]["gpu"], 2);
    assert_eq!(task_json(url, &us)["unschedulable"], "no live worker has labels region=us");
    let out = ok(&["task", "get", &big, "--url", url]);
    assert!(out.contains("unschedulable: no live worker has gpu >= 2"), "{out}");
    let queues: Vec<Value> = serde_json::from_str(&ok(&["queue", "ls", "--json", "--url", url])).unwrap();
    let ml = queues.iter().find(|q| q["name"] == "ml").unwrap();
    assert_eq!(ml["unschedulable"], 2, "{ml}");

    // A worker that fits registers: both run, and nothing is unschedulable any more.
    let _us = WorkerProcess::start(url, "ml", &["--capacity", "gpu=2", "--labels", "region=us"]);
    finished(&client, &[big.clone(), us.clone()]).await;
    assert!(task_json(url, &big).get("unschedulable").is_none());
    let (ok_, _, err) = cli(&["submit", "--url", url, "--queue", "ml", "--kind", "echo", "--resources", "gpu=two"]);
    assert!(!ok_ && err.contains("--resources"), "a bad amount is refused, naming the flag: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_task_is_not_starved_by_a_stream_of_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let client = Client::new(url).unwrap();
    let _worker = WorkerProcess::start(url, "batch", &["--capacity", "cpu=4,memory_mb=1000", "--concurrency", "16"]);
    let small = |ms: &str| {
        let payload = format!(r#"{{"ms":{ms}}}"#);
        submit(url, &["--queue", "batch", "--kind", "sleep", "--payload", &payload, "--resources", "cpu=1"])
    };
    // Three of the four cpus busy, long enough for the submits below to land while they run (each
    // is a CLI process; on a loaded CI machine seven of them took longer than 700 ms).
    let first: Vec<String> = (0..3).map(|_| small("2000")).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.queues().await.unwrap().iter().find(|q| q.name == "batch").map_or(0, |q| q.running) < 3 {
        assert!(Instant::now() < deadline, "the first small tasks never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The big task wants all four; small ones keep coming behind it. Without a reservation
    // each would take the one free cpu, and the big task would wait for a gap that never comes.
    let big = submit(url, &["--queue", "batch", "--kind", "echo", "--resources", "cpu=4", "--priority", "5"]);
    let behind: Vec<String> = (0..6).map(|_| small("300")).collect();
    // Work that needs none of the cpus it waits for still runs beside it.
    let backfill = submit(url, &["--queue", "batch", "--kind", "echo", "--resources", "memory_mb=100"]);

    let big = finished(&client, &[big]).await.remove(0);
    let big_start = big.history[0].started_at;
    for t in finished(&client, &behind).await {
        assert!(
            t.history[0].started_at >= big_start,
            "a small task overtook the big one ({big_start:?}): {t:?}\n{big:?}"
        );
    }
    let backfill = finished(&client, &[backfill]).await.remove(0);
    assert!(backfill.history[0].started_at < big_start, "the memory task did not wait for the big one");
    let first_end = finished(&client, &first).await.iter().map(|t| t.history[0].finished_at).max().unwrap();
    assert!(big_start >= first_end, "the big task needed all four cpus");
    assert!(big_start.duration_since(first_end) < Duration::from_secs(2), "it started once they were free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_rate_limits_hold_and_held_tasks_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let client = Client::new(url).unwrap();
    let out = ok(&["queue", "set", "mail", "--concurrency", "3", "--key-concurrency", "1", "--create", "--url", url]);
    assert!(out.contains("3 at once, 1 per key"), "{out}");
    ok(&["queue", "set", "api", "--rate", "5/s", "--create", "--url", url]);
    let (ok_, _, err) = cli(&["queue", "set", "api", "--rate", "lots", "--url", url]);
    assert!(!ok_ && err.contains("--rate"), "{err}");

    let sleep = ["--kind", "sleep", "--payload", r#"{"ms":200}"#];
    let mut mail = Vec::new();
    for i in 0..9 {
        let key = format!("customer-{}", i % 3);
        let mut args = vec!["--queue", "mail", "--concurrency-key", key.as_str()];
        args.extend_from_slice(&sleep);
        mail.push(submit(url, &args));
    }
    let api: Vec<String> = (0..10).map(|_| submit(url, &["--queue", "api", "--kind", "echo"])).collect();
    let _workers =
        [WorkerProcess::start(url, "mail,api", &["--concurrency", "8"]), WorkerProcess::start(url, "mail", &[])];

    // What the server says is running, sampled while the tasks run.
    let sampler = async {
        let (mut most, mut most_per_key) = (0, 0);
        let running = taskwarden_client::ListOptions {
            queue: Some("mail".into()),
            state: Some(TaskState::Running),
            limit: Some(100),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let now = client.list(&running).await.unwrap().tasks;
            most = most.max(now.len());
            for key in ["customer-0", "customer-1", "customer-2"] {
                let n = now.iter().filter(|t| t.needs.concurrency_key.as_deref() == Some(key)).count();
                most_per_key = most_per_key.max(n);
            }
            if client.queues().await.unwrap().iter().any(|q| q.name == "mail" && q.ready + q.running == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (most, most_per_key)
    };
    let ((most, most_per_key), mail) = tokio::join!(sampler, finished(&client, &mail));
    assert_eq!(most, 3, "at most 3 at once in the queue (and the slots allow more)");
    assert_eq!(most_per_key, 1, "one at a time per customer");
    let first = mail.iter().map(|t| t.history[0].started_at).min().unwrap();
    let last = mail.iter().map(|t| t.history[0].finished_at).max().unwrap();
    assert!(last.duration_since(first) >= Duration::from_millis(550), "9 tasks of 200 ms, 3 at a time");
    let api = finished(&client, &api).await;
    let mut starts: Vec<i64> = api.iter().map(|t| t.history[0].started_at.as_micros()).collect();
    starts.sort();
    let spread = Duration::from_micros((starts[9] - starts[0]) as u64);
    // A burst of 5, then one every 200 ms: the tenth starts at least 5 x 200 ms after the first.
    assert!(spread >= Duration::from_millis(900), "10 tasks at 5/s started within {spread:?}");
    assert!(api.iter().all(|t| t.attempts == 1), "held tasks waited; none failed or retried");
    let out = ok(&["queue", "ls", "--url", url]);
    assert!(out.lines().any(|l| l.starts_with("api") && l.ends_with("5/s")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_each_second_once_until_paused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let client = Client::new(url).unwrap();
    let out = ok(&[
        "cron",
        "add",
        "tick",
        "--schedule",
        "* * * * * *",
        "--timezone",
        "Europe/Berlin",
        "--queue",
        "ticks",
        "--kind",
        "echo",
        "--url",
        url,
    ]);
    assert!(out.contains("tick") && out.contains("Europe/Berlin"), "{out}");
    let (ok_, _, err) = cli(&["cron", "add", "tick", "--schedule", "* * * * * *", "--kind", "echo", "--url", url]);
    assert!(!ok_ && err.contains("exists"), "{err}");
    let (ok_, _, err) = cli(&["cron", "add", "bad", "--schedule", "* * * * *", "--kind", "echo", "--url", url]);
    assert!(!ok_ && err.contains("schedule"), "five fields are refused, naming the field: {err}");
    let (ok_, _, err) = cli(&[
        "cron",
        "add",
        "bad",
        "--schedule",
        "* * * * * *",
        "--timezone",
        "Mars/Base",
        "--kind",
        "echo",
        "--url",
        url,
    ]);
    assert!(!ok_ && err.contains("timezone"), "{err}");

    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let list = ok(&["cron", "ls", "--json", "--url", url]);
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 1);
    ok(&["cron", "pause", "tick", "--url", url]);
    let elapsed = started.elapsed().as_secs_f64();
    let tasks = client
        .list(&taskwarden_client::ListOptions { queue: Some("ticks".into()), limit: Some(100), ..Default::default() })
        .await
        .unwrap()
        .tasks;
    let n = tasks.len() as f64;
    assert!((n - elapsed).abs() <= 1.5, "{n} tasks in {elapsed:.1}s of a once-a-second schedule");
    let mut keys: Vec<String> = tasks.iter().map(|t| t.idempotency_key.clone().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), tasks.len(), "each tick once");
    assert!(keys.iter().all(|k| k.starts_with("cron/tick/")));
    // Paused: no more ticks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = client
        .list(&taskwarden_client::ListOptions { queue: Some("ticks".into()), limit: Some(100), ..Default::default() })
        .await
        .unwrap()
        .tasks;
    assert_eq!(after.len(), tasks.len(), "a paused schedule does not fire");
    ok(&["cron", "rm", "tick", "--url", url]);
    assert_eq!(ok(&["cron", "ls", "--json", "--url", url]).trim(), "[]");
}
