//! Small workers keep work flowing: a busy worker reports in its fetches and prefetches short
//! tasks, a worker with long tasks leases no more than its slots, and shutdown gives prefetched
//! tasks back at once. The Rust SDK worker in process, against a real server process.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::ServerProcess;
use taskwarden_client::{Client, ListOptions, SubmitTask, SubmitTaskExt};
use taskwarden_core::TaskState;
use taskwarden_worker::{TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

/// Counts handlers running at once, and the most there ever were.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn submit_many(client: &Client, queue: &str, n: usize, payload: serde_json::Value) {
    let tasks: Vec<SubmitTask> = (0..n).map(|_| SubmitTask::new(queue, "work").payload(&payload).unwrap()).collect();
    client.submit_batch(tasks).await.unwrap();
}

async fn count(client: &Client, queue: &str, state: TaskState) -> usize {
    let opts = ListOptions { queue: Some(queue.into()), state: Some(state), limit: Some(1000), ..Default::default() };
    client.list(&opts).await.unwrap().tasks.len()
}

/// Waits until nothing in `queue` is ready or running.
async fn until_drained(client: &Client, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queues = client.queues().await.unwrap();
        let q = queues.iter().find(|q| q.name == queue).expect("the queue is listed");
        if q.ready + q.running + q.scheduled == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the tasks did not all finish: {q:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_busy_worker_reports_in_its_fetches_and_prefetches_short_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    let n = 3000;
    submit_many(&client, "busy", n, json!({})).await;
    let gauge = Gauge::default();
    let g = gauge.clone();
    let handler = move |_ctx: TaskContext, _p: serde_json::Value| {
        let g = g.clone();
        async move {
            g.enter();
            tokio::task::yield_now().await;
            g.leave();
            Ok::<_, TaskError>(())
        }
    };
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url).queue("busy").concurrency(4).handler("work", handler);
    let running = tokio::spawn(worker.run(stop.clone()));
    until_drained(&client, "busy").await;
    stop.cancel();
    let summary = running.await.unwrap().unwrap();
    assert_eq!(summary.succeeded, n as u64);
    assert!(gauge.most.load(Ordering::SeqCst) <= 4, "never more handlers than slots");
    // The outcomes went out with the fetches: a report request of its own only when the worker
    // had no room to fetch for a moment (every slot and the prefetch taken) or went idle (at the
    // end), not one per round of tasks. How many such moments there are depends on how the
    // machine schedules the handlers (5 or fewer here, 9 once on a loaded CI run), so the
    // bound is against the rounds: one report request per round would be ~450.
    assert!(summary.report_requests * 20 <= summary.fetches, "{summary:?}");
    // More tasks per fetch than the worker has slots: the rest waited here, prefetched.
    let per_fetch = summary.fetched as f64 / summary.fetches as f64;
    assert!(per_fetch > 4.0, "{per_fetch:.1} tasks per fetch: {summary:?}");
    let opts = ListOptions { queue: Some("busy".into()), state: Some(TaskState::Succeeded), ..Default::default() };
    let page = client.list(&opts).await.unwrap();
    assert!(page.tasks.iter().all(|t| t.attempts == 1), "each ran once");
}

#[tokio::test]
async fn a_worker_with_long_tasks_leases_no_more_than_its_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    let n = 24;
    submit_many(&client, "long", n, json!({})).await;
    let handler = |_ctx: TaskContext, _p: serde_json::Value| async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, TaskError>(())
    };
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url).queue("long").concurrency(2).handler("work", handler);
    let running = tokio::spawn(worker.run(stop.clone()));
    // While they run, the server never sees more leased to the worker than it runs: another would
    // wait here behind a 40 ms task while another worker could run it.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&client, "long", TaskState::Succeeded).await < n {
        assert!(Instant::now() < deadline, "the tasks did not all finish");
        let leased: u32 = client.workers().await.unwrap().iter().map(|w| w.running).sum();
        most = most.max(leased);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Two running, and up to two more that have finished but whose outcomes are still on their
    // way (the server counts a task until its outcome lands; both slots' tasks, started together
    // and as long, can finish together, and the fetch that carries their outcomes may have its
    // new leases committed a group before the outcomes). Prefetching behind 40 ms tasks leased 8
    // and more. (At most 3 was asked here before, which failed now and then in CI with 4.)
    assert!(most <= 4, "{most} tasks leased to a 2-slot worker");
    assert!(most >= 1);
    stop.cancel();
    assert_eq!(running.await.unwrap().unwrap().succeeded, n as u64);
}

#[tokio::test]
async fn shutdown_gives_prefetched_tasks_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    // Short tasks first, so the worker learns its tasks are short and prefetches; then slow
    // ones, of which one runs and the prefetched others wait for its slot.
    let quick: Vec<SubmitTask> = (0..400)
        .map(|_| SubmitTask {
            priority: Some(10),
            ..SubmitTask::new("mixed", "work").payload(&json!({"ms": 0})).unwrap()
        })
        .collect();
    client.submit_batch(quick).await.unwrap();
    submit_many(&client, "mixed", 20, json!({"ms": 1500})).await;
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let handler = move |_ctx: TaskContext, p: serde_json::Value| {
        let s = s.clone();
        async move {
            let ms = p["ms"].as_u64().unwrap_or(0);
            if ms > 0 {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok::<_, TaskError>(())
        }
    };
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url)
        .queue("mixed")
        .concurrency(1)
        .shutdown_grace(Duration::from_secs(20))
        .handler("work", handler);
    let running = tokio::spawn(worker.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no slow task started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leased: u32 = client.workers().await.unwrap().iter().map(|w| w.running).sum();
    assert!(leased > 1, "slow tasks were prefetched behind the running one ({leased} leased)");
    let stopping = Instant::now();
    stop.cancel();
    let summary = running.await.unwrap().unwrap();
    // The running task finished within the grace period; the waiting ones were given back at
    // once rather than run one after another (which would take 1.5 s each).
    assert!(stopping.elapsed() < Duration::from_secs(5), "shutdown took {:?}", stopping.elapsed());
    assert!(summary.released >= 1, "{summary:?}");
    assert_eq!(started.load(Ordering::SeqCst), 1, "no prefetched task started after shutdown began");
    assert_eq!(count(&client, "mixed", TaskState::Running).await, 0);
    // Counted by payload: under a loaded machine a quick task can also wait past the give-back
    // and be ready again, which is right too.
    let opts = ListOptions { queue: Some("mixed".into()), state: Some(TaskState::Ready), ..Default::default() };
    let ready = client.list(&opts).await.unwrap().tasks;
    let slow_ready = ready.iter().filter(|t| t.payload.get().contains("1500")).count();
    assert_eq!(slow_ready, 19, "the others are ready for another worker");
}

#[tokio::test]
async fn a_one_slot_worker_with_long_tasks_runs_them_all() {
    // Two fetchers each holding a lease permit once judged there was no room for either, and both
    // waited for a task to end while none ran: the worker hung.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    let n = 12;
    submit_many(&client, "one", n, json!({})).await;
    let handler = |_ctx: TaskContext, _p: serde_json::Value| async move {
        tokio::time::sleep(Duration::from_millis(15)).await;
        Ok::<_, TaskError>(())
    };
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url).queue("one").concurrency(1).handler("work", handler);
    let running = tokio::spawn(worker.run(stop.clone()));
    until_drained(&client, "one").await;
    stop.cancel();
    assert_eq!(running.await.unwrap().unwrap().succeeded, n as u64);
}

#[tokio::test]
async fn a_prefetched_task_stuck_behind_a_slow_one_goes_to_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    // Short tasks teach the first worker to prefetch; then a slow task, and quick ones behind it
    // that it prefetches while the slow one holds its only slot.
    let quick = |priority| SubmitTask {
        priority: Some(priority),
        ..SubmitTask::new("stuck", "work").payload(&json!({"who": "quick"})).unwrap()
    };
    client.submit_batch((0..300).map(|_| quick(10)).collect()).await.unwrap();
    let slow =
        SubmitTask { priority: Some(5), ..SubmitTask::new("stuck", "work").payload(&json!({"ms": 3000})).unwrap() };
    client.submit(slow).await.unwrap();
    client.submit_batch((0..4).map(|_| quick(0)).collect()).await.unwrap();
    let handler = |_ctx: TaskContext, p: serde_json::Value| async move {
        tokio::time::sleep(Duration::from_millis(p["ms"].as_u64().unwrap_or(0))).await;
        Ok::<_, TaskError>(())
    };
    let stop = CancellationToken::new();
    let first = Worker::builder(&server.url).queue("stuck").concurrency(1).handler("work", handler);
    let first = tokio::spawn(first.run(stop.clone()));
    // The second worker starts once the slow task runs on the first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&client, "stuck", TaskState::Succeeded).await < 300 {
        assert!(Instant::now() < deadline, "the quick tasks did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = Worker::builder(&server.url).queue("stuck").concurrency(1).handler("work", handler);
    let second = tokio::spawn(second.run(stop.clone()));
    // The quick tasks behind the slow one finish well before it does: given back, run elsewhere.
    let started = Instant::now();
    while count(&client, "stuck", TaskState::Succeeded).await < 304 {
        assert!(started.elapsed() < Duration::from_millis(2500), "the quick tasks waited behind the slow one");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let released = first.await.unwrap().unwrap().released;
    let _ = second.await.unwrap().unwrap();
    assert!(released >= 1, "the first worker gave back what it had prefetched");
}
