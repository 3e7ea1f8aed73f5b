//! `taskwarden bench`: throughput and latency of real server processes.
//!
//! Starts `taskwarden server` (this same binary) on a fresh data dir, or with `--database` as
//! `--nodes` nodes on a fresh PostgreSQL schema, and measures, each `--runs` times, reporting the
//! median:
//! - single submits from 32 concurrent clients, each acknowledged only once durable;
//! - batch submits of 1,000 tasks, from 4 clients in parallel;
//! - end to end: N no-op tasks queued, then drained by one `taskwarden worker` process;
//! - pickup latency: from calling submit to the handler starting, with an idle worker waiting;
//! - end to end with scheduling on (`--only scheduling`): the same drain where every task asks
//!   for a cpu and carries concurrency and rate keys, under queue limits that never bind, next to
//!   a plain drain in the same run, and their ratio.
//! - a feature's cost, two servers of this build side by side in one run (`side_by_side`):
//!   HTTPS with tokens against plain HTTP (`--only secure`), and the event log and metrics on,
//!   followed and scraped, against both off (`--only observe`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use taskwarden_client::{Client, ListOptions, SubmitTask, TaskState};
use taskwarden_core::events::EventId;
use taskwarden_core::limits::QueueLimits;
use taskwarden_core::placement::Resources;
use taskwarden_core::protocol::QueueUpdate;
use taskwarden_worker::{TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

use crate::args::BenchArgs;

mod backlog;
mod chaos;
mod search;
mod shape;
mod side_by_side;
mod stream;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the benchmark's servers keep their tasks.
enum Backend<'a> {
    Sqlite { dir: &'a std::path::Path, durability: &'a str },
    Postgres { url: &'a str, schema: &'a str },
}

fn start_server(backend: &Backend<'_>, extra: &[&str]) -> anyhow::Result<(Proc, String)> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.args(["server", "--listen", "127.0.0.1:0"]).args(extra);
    match backend {
        Backend::Sqlite { dir, durability } => {
            command.args(["--durability", durability, "--data-dir"]).arg(dir);
        }
        Backend::Postgres { url, schema } => {
            command.args(["--database", url, "--database-schema", schema]);
        }
    }
    let mut child =
        command.env("TASKWARDEN_LOG", "warn").stdout(Stdio::piped()).spawn().context("starting the server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .with_context(|| format!("unexpected server banner {line:?}"))?
        .to_owned();
    Ok((Proc(child), url))
}

/// One `taskwarden worker` process (this same binary) serving `queue` with 512 slots.
fn start_worker(url: &str, queue: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    start_worker_with(url, queue, 512, extra)
}

/// One `taskwarden worker` process with `slots` slots.
fn start_worker_with(url: &str, queue: &str, slots: usize, extra: &[&str]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe()?;
    let slots = slots.to_string();
    let child = Command::new(exe)
        .args(["worker", "--url", url, "--queue", queue, "--concurrency", &slots])
        .args(extra)
        .env("TASKWARDEN_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting a worker")?;
    Ok(Proc(child))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The 95% confidence interval of the median of `values`, from their order alone (nothing
/// assumed of their distribution): the `k`-th smallest and the `k`-th largest, for the largest
/// `k` at which fewer than `k` of the values falling below the true median has a chance of at
/// most 2.5% (a binomial count, one half a value). `None` for fewer than 6 values, too few for
/// any such interval.
fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let (mut k, mut below, mut exactly) = (0, 0.0, 0.5f64.powi(n as i32));
    // `below`: the chance that fewer than `k` fall below; `exactly`: that `k` do.
    while k < n / 2 && below + exactly <= 0.025 {
        below += exactly;
        exactly *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    (k > 0).then(|| (v[k - 1], v[n - k]))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn noop(queue: &str) -> SubmitTask {
    SubmitTask { queue: queue.to_owned(), kind: "echo".into(), ..Default::default() }
}

/// Runs `clients` clients in parallel, each sending `requests` requests of `tasks_per_request`
/// tasks (one submit, or one batch); returns tasks per second.
async fn submit_from_clients(
    url: &str,
    queue: &str,
    clients: usize,
    requests: usize,
    tasks_per_request: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..clients {
        let client = Client::new(url)?;
        let queue = queue.to_owned();
        joins.push(tokio::spawn(async move {
            for _ in 0..requests {
                if tasks_per_request == 1 {
                    client.submit(noop(&queue)).await?;
                } else {
                    client.submit_batch((0..tasks_per_request).map(|_| noop(&queue)).collect()).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for j in joins {
        j.await??;
    }
    Ok((clients * requests * tasks_per_request) as f64 / started.elapsed().as_secs_f64())
}

async fn count(client: &Client, queue: &str, state: TaskState) -> anyhow::Result<usize> {
    let opts = ListOptions { queue: Some(queue.into()), state: Some(state), limit: Some(1), ..Default::default() };
    Ok(client.list(&opts).await?.tasks.len())
}

/// A no-op task that goes through every scheduling check: it asks for a cpu, and counts
/// against a per-key concurrency limit and a per-key rate limit (64 keys).
fn scheduled(queue: &str, i: usize) -> SubmitTask {
    SubmitTask {
        resources: Some(Resources::of([("cpu", 1)])),
        concurrency_key: Some(format!("customer-{}", i % 64)),
        rate_key: Some(format!("api-key-{}", i % 64)),
        ..noop(queue)
    }
}

/// Limits that hold every task to the checks without ever being the bottleneck.
fn generous_limits() -> QueueLimits {
    QueueLimits {
        concurrency: Some(100_000),
        key_concurrency: Some(100_000),
        rate: Some("1000000/s".parse().expect("a rate")),
        key_rate: Some("1000000/s".parse().expect("a rate")),
    }
}

/// Drains `tasks` queued no-op tasks with one worker process per server node. With `limits`,
/// the tasks ask for resources and carry limit keys, the queue has limits and the workers declare
/// capacity: the whole scheduling path runs, for comparison with the plain one.
async fn end_to_end(urls: &[String], client: &Client, queue: &str, tasks: usize, limits: bool) -> anyhow::Result<f64> {
    let extra: &[&str] = if limits { &["--capacity", "cpu=512"] } else { &[] };
    drain(urls, client, queue, tasks, limits, extra).await
}

/// Drains what `queue` holds now (`queued` tasks) with one worker process of `slots` slots, started
/// with `extra` flags, per entry of `urls`; returns tasks per second.
async fn drain_queued(
    urls: &[String],
    client: &Client,
    queue: &str,
    queued: usize,
    slots: usize,
    extra: &[&str],
) -> anyhow::Result<f64> {
    // Leased after every other task (it has the lowest priority), so once it is done, at most the
    // tasks of its last fetch remain; a last check waits for those.
    let sentinel = client.submit(SubmitTask { priority: Some(-1), ..noop(queue) }).await?.id;
    let started = Instant::now();
    let _workers =
        urls.iter().map(|url| start_worker_with(url, queue, slots, extra)).collect::<anyhow::Result<Vec<_>>>()?;
    client.wait(sentinel, Duration::from_secs(600)).await?;
    while count(client, queue, TaskState::Ready).await? + count(client, queue, TaskState::Running).await? > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((queued + 1) as f64 / started.elapsed().as_secs_f64())
}

/// [`end_to_end`] with the workers started with `extra` flags.
async fn drain(
    urls: &[String],
    client: &Client,
    queue: &str,
    tasks: usize,
    limits: bool,
    extra: &[&str],
) -> anyhow::Result<f64> {
    if limits {
        client
            .update_queue(queue, &QueueUpdate { limits: Some(generous_limits()), ..Default::default() }, true)
            .await?;
    }
    let make = |i: usize| if limits { scheduled(queue, i) } else { noop(queue) };
    queue_batches(client, tasks, make).await?;
    drain_queued(urls, client, queue, tasks, 512, extra).await
}

/// Queues `tasks` tasks made by `make` in batches of 5,000.
async fn queue_batches(client: &Client, tasks: usize, make: impl Fn(usize) -> SubmitTask) -> anyhow::Result<()> {
    for chunk in 0..tasks.div_ceil(5000) {
        let n = (tasks - chunk * 5000).min(5000);
        client.submit_batch((0..n).map(|i| make(chunk * 5000 + i)).collect()).await?;
    }
    Ok(())
}

async fn pickup_latency(url: &str, client: &Client, queue: &str, samples: usize) -> anyhow::Result<Vec<Duration>> {
    // The pause lets the completion go out, so the next sample starts with an idle worker.
    pickup(url, Default::default(), client, queue, samples, 4, Pace::After(Duration::from_millis(2))).await
}

/// How pickup samples are spaced.
enum Pace {
    /// This long after the previous task started.
    After(Duration),
    /// One every this long, as tasks arriving at a steady rate.
    Every(Duration),
}

/// Submits `samples` tasks one at a time to an in-process worker of `slots` slots and returns,
/// for each, the time from calling submit to its handler starting.
async fn pickup(
    url: &str,
    options: taskwarden_client::ClientOptions,
    client: &Client,
    queue: &str,
    samples: usize,
    slots: usize,
    pace: Pace,
) -> anyhow::Result<Vec<Duration>> {
    let mut worker = PickupWorker::start(url, options, queue, slots).await;
    let mut out = Vec::with_capacity(samples);
    let mut next = tokio::time::Instant::now();
    for _ in 0..samples {
        if let Pace::Every(every) = pace {
            tokio::time::sleep_until(next).await;
            next += every;
        }
        out.push(worker.sample(client).await?);
        if let Pace::After(pause) = pace {
            tokio::time::sleep(pause).await;
        }
    }
    worker.stop().await?;
    Ok(out)
}

/// An in-process worker whose handler notes when each task started: what pickup latency is
/// measured with.
struct PickupWorker {
    queue: String,
    started: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<Result<taskwarden_worker::RunSummary, taskwarden_worker::WorkerError>>,
}

impl PickupWorker {
    /// Starts it on `queue` with `slots` slots, and waits until it is registered and long-polling.
    async fn start(url: &str, options: taskwarden_client::ClientOptions, queue: &str, slots: usize) -> PickupWorker {
        let (tx, started) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let stop = CancellationToken::new();
        let handler = move |_ctx: TaskContext, _p: serde_json::Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
                Ok::<_, TaskError>(())
            }
        };
        let worker =
            Worker::builder(url).client_options(options).queue(queue).concurrency(slots).handler("echo", handler);
        let running = tokio::spawn(worker.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        PickupWorker { queue: queue.to_owned(), started, stop, running }
    }

    /// Submits one task through `client` and returns the time from calling submit to its handler
    /// starting.
    async fn sample(&mut self, client: &Client) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        client.submit(noop(&self.queue)).await?;
        let started =
            tokio::time::timeout(Duration::from_secs(10), self.started.recv()).await?.context("worker stopped")?;
        Ok(started.saturating_duration_since(sent))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.running.await??;
        Ok(())
    }
}

/// A fan-out made at run time: one `fan.out` task spawns `children` no-op tasks and a join, run
/// by one worker process; returns (seconds from submit to the workflow's end, the workflow).
async fn fan_out(
    url: &str,
    client: &Client,
    queue: &str,
    children: usize,
) -> anyhow::Result<(f64, taskwarden_client::Workflow)> {
    let _worker = start_worker(url, queue, &[])?;
    tokio::time::sleep(Duration::from_millis(300)).await; // registered and long-polling
    let payload = serde_json::json!({
        "count": children,
        "child": {"kind": "echo", "queue": queue},
        "join": {"kind": "sleep", "queue": queue, "payload": {"ms": 0}},
    });
    let started = Instant::now();
    let root = client
        .submit(SubmitTask { payload: Some(serde_json::value::to_raw_value(&payload)?), ..fan_out_task(queue) })
        .await?;
    let root = client.wait(root.id, Duration::from_secs(600)).await?;
    let wf = root.workflow_id.with_context(|| format!("the fan-out task ended {}: {:?}", root.state, root.error))?;
    let done = client.wait_workflow(wf, Duration::from_secs(600)).await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(done.state == taskwarden_client::WorkflowState::Succeeded, "the fan-out ended {:?}", done.state);
    Ok((secs, done))
}

fn fan_out_task(queue: &str) -> SubmitTask {
    SubmitTask { queue: queue.to_owned(), kind: "fan.out".into(), ..Default::default() }
}

/// The server's peak resident memory, from /proc (Linux).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    memory_mib(pid, "VmHWM:")
}

/// One memory figure of a process's /proc status (`VmRSS:`, `VmHWM:`), in MiB (Linux).
fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Queues `n` no-op tasks on `queue` in batches of `batch`.
async fn enqueue(client: &Client, queue: &str, n: usize, batch: usize) -> anyhow::Result<()> {
    for chunk in 0..n.div_ceil(batch) {
        let k = (n - chunk * batch).min(batch);
        client.submit_batch((0..k).map(|_| noop(queue)).collect()).await?;
    }
    Ok(())
}

fn report(name: &str, unit: &str, values: &[f64]) {
    if !values.is_empty() {
        println!("| {name} | {:.2} {unit} |", median(values.to_vec()));
    }
}

/// [`report`] for a median of ratios, with its 95% confidence interval when there are runs
/// enough for one: whether a ratio clears a line is read off the interval, not the median.
fn report_ratio(name: &str, values: &[f64]) {
    if let Some((low, high)) = median_interval(values) {
        println!(
            "| {name} | {:.2} ratio (95% interval of the median {low:.2} to {high:.2}) |",
            median(values.to_vec())
        );
    } else {
        report(name, "ratio", values);
    }
}

/// One subscriber following the whole event log from now, counting the messages it receives.
/// It stands for a consumer on another machine, so it costs the two cores it shares with the
/// server as little as it can: it reads the stream's bytes on a thread and runtime of its own
/// and counts the messages' `data:` lines, without parsing the events (the client's typed
/// stream, `Client::follow_events`, parsed each one, and took that CPU from the server it
/// measured).
struct Subscriber {
    followed: std::sync::Arc<Followed>,
    stop: tokio_util::sync::CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

/// What a [`Subscriber`] has received so far.
#[derive(Default)]
struct Followed {
    messages: std::sync::atomic::AtomicU64,
    /// The id of the last whole message.
    last: std::sync::Mutex<EventId>,
}

impl Followed {
    /// How long, from now, until this subscriber has what the log holds now, in milliseconds:
    /// how far behind it was, in time (`url` is the server it follows).
    async fn behind_ms(&self, http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
        let asked = Instant::now();
        let url = format!("{}/v1/events?after=now&limit=1", url.trim_end_matches('/'));
        let page: taskwarden_core::events::EventList = http.get(url).send().await?.error_for_status()?.json().await?;
        while *self.last.lock().expect("the subscriber's lock") < page.next {
            anyhow::ensure!(asked.elapsed() < Duration::from_secs(120), "the subscriber stopped receiving events");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(asked.elapsed().as_secs_f64() * 1000.0)
    }
}

impl Subscriber {
    async fn start(url: &str) -> anyhow::Result<Subscriber> {
        let url = format!("{}/v1/events?after=now", url.trim_end_matches('/'));
        taskwarden_client::install_tls_provider();
        let followed = std::sync::Arc::new(Followed::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (into, halt) = (followed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            rt.block_on(async move {
                let response = reqwest::Client::new()
                    .get(&url)
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                let mut response = match response {
                    Ok(r) => {
                        let _ = started_tx.send(Ok(()));
                        r
                    }
                    Err(e) => return drop(started_tx.send(Err(e))),
                };
                // Bytes after the last whole message, kept for the next chunk.
                let mut rest = Vec::new();
                loop {
                    tokio::select! {
                        next = response.chunk() => match next {
                            Ok(Some(chunk)) => {
                                let (n, last) = count_messages(&mut rest, &chunk);
                                into.messages.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                                if let Some(id) = last {
                                    *into.last.lock().expect("the subscriber's lock") = id;
                                }
                            }
                            _ => return,
                        },
                        _ = halt.cancelled() => return,
                    };
                }
            })
        });
        started.await?.context("the SSE subscriber could not connect")?;
        Ok(Subscriber { followed, stop, thread })
    }

    /// Stops it and prints what it received.
    fn finish(self) {
        self.stop.cancel();
        let _ = self.thread.join();
        let n = self.followed.messages.load(std::sync::atomic::Ordering::Relaxed);
        println!("| events received by the one SSE subscriber over the run | {n} events |");
    }
}

/// The whole Server-Sent Events messages that `chunk` completes, counted by their `data:`
/// lines without parsing them, and the last one's id; `rest` keeps the bytes after the last
/// whole message.
fn count_messages(rest: &mut Vec<u8>, chunk: &[u8]) -> (usize, Option<EventId>) {
    rest.extend_from_slice(chunk);
    let Some(end) = memchr::memmem::rfind(rest, b"\n\n") else { return (0, None) };
    let whole = &rest[..end];
    let n = memchr::memmem::find_iter(whole, b"\ndata: ").count();
    // The last message with an id (a comment has none) starts after the blank line before it.
    let last = memchr::memmem::rfind(whole, b"\n\nid: ")
        .map(|at| at + 2)
        .or_else(|| whole.starts_with(b"id: ").then_some(0))
        .and_then(|at| {
            let line = &whole[at + 4..];
            let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
            std::str::from_utf8(line).ok()?.parse().ok()
        });
    rest.drain(..end + 2);
    (n, last)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let schema = format!("bench_{}_{:08x}", std::process::id(), nonce);
    let backend = match &args.database {
        Some(url) => Backend::Postgres { url, schema: &schema },
        None => Backend::Sqlite { dir: dir.path(), durability: &args.durability },
    };
    let result = if args.only.iter().any(|o| o == "retention") {
        retention_soak(&backend, args.soak_waves, args.soak_tasks).await
    } else if args.only.iter().any(|o| o == "backlog") {
        backlog::run(&args, &backend).await
    } else if args.only.iter().any(|o| o == "chaos") {
        chaos::run(&args, &backend).await
    } else if args.only.iter().any(|o| o == "search") {
        search::run(&args, &backend).await
    } else if args.only.iter().any(|o| o == "shape") {
        shape::run(&args, &backend, dir.path()).await
    } else if args.only.iter().any(|o| o == "secure") {
        anyhow::ensure!(args.database.is_none(), "--only secure runs on the embedded store");
        side_by_side::secure(&args, dir.path()).await
    } else if args.only.iter().any(|o| o == "stream") {
        stream::run(&args, &backend).await
    } else if args.only.iter().any(|o| o == "observe") {
        anyhow::ensure!(args.database.is_none(), "--only observe runs on the embedded store");
        side_by_side::observe(&args, dir.path()).await
    } else {
        let mut servers = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..args.nodes.max(1) {
            let (server, url) = start_server(&backend, &[])?;
            servers.push(server);
            urls.push(url);
        }
        let subscriber = match args.subscribe {
            true => Some(Subscriber::start(&urls[0]).await?),
            false => None,
        };
        let result = measure(&args, &urls).await;
        if let Some(s) = subscriber {
            s.finish();
        }
        if let Some(mib) = peak_rss_mib(servers[0].0.id()) {
            println!("| server peak memory (RSS) over the whole run (first node) | {mib:.0} MiB |");
        }
        result
    };
    if let Some(url) = &args.database {
        let config = taskwarden_store::PgConfig { schema: schema.clone(), ..taskwarden_store::PgConfig::new(url) };
        taskwarden_store::PgStore::drop_schema(&config).await.context("dropping the benchmark's schema")?;
    }
    result
}

/// How much space the stored tasks take: the database file and its log (SQLite), or the tasks
/// table with its indexes and TOAST (PostgreSQL), with the number of rows when known.
async fn stored_size(backend: &Backend<'_>) -> anyhow::Result<(u64, Option<i64>)> {
    match backend {
        Backend::Sqlite { dir, .. } => {
            let len = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
            Ok((len("taskwarden.db") + len("taskwarden.db-wal"), None))
        }
        Backend::Postgres { url, schema } => {
            let (client, connection) = url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let row = client
                .query_one(
                    &format!("SELECT pg_total_relation_size('{schema}.tasks'), (SELECT count(*) FROM {schema}.tasks)"),
                    &[],
                )
                .await?;
            Ok((row.get::<_, i64>(0) as u64, Some(row.get(1))))
        }
    }
}

/// How many events the log holds, read a page at a time.
async fn events_kept(client: &Client) -> anyhow::Result<usize> {
    let mut options = taskwarden_client::EventOptions { limit: Some(1000), ..Default::default() };
    let mut kept = 0;
    loop {
        let page = client.events(&options).await?;
        if page.events.is_empty() {
            return Ok(kept);
        }
        kept += page.events.len();
        options.after = Some(page.next.to_string());
    }
}

/// Runs waves of no-op tasks through a server that keeps finished tasks for one second, printing
/// how much space the stored tasks take after each wave: with retention at work, it levels off
/// instead of growing with the number of tasks run.
async fn retention_soak(backend: &Backend<'_>, waves: usize, per_wave: usize) -> anyhow::Result<()> {
    let (_server, url) =
        start_server(backend, &["--retention", "1s", "--event-retention", "1s", "--prune-interval", "250ms"])?;
    let client = Client::new(&url)?;
    let _worker = start_worker(&url, "soak", &[])?;
    println!(
        "retention soak: {waves} waves of {per_wave} no-op tasks, retention (tasks and events) 1 s, pruned every 250 ms"
    );
    let mut sizes = Vec::with_capacity(waves);
    for wave in 1..=waves {
        for chunk in 0..per_wave.div_ceil(1000) {
            let n = (per_wave - chunk * 1000).min(1000);
            client.submit_batch((0..n).map(|_| noop("soak")).collect()).await?;
        }
        while count(&client, "soak", TaskState::Ready).await? + count(&client, "soak", TaskState::Running).await? > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Past the retention and a prune pass or two.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (bytes, rows) = stored_size(backend).await?;
        let rows = rows.map(|r| format!(", {r} rows kept")).unwrap_or_default();
        let events = events_kept(&client).await?;
        println!(
            "wave {wave:>3}: {:>8} tasks run, stored {:.1} MiB{rows}, {events} events kept",
            wave * per_wave,
            bytes as f64 / 1048576.0
        );
        sizes.push(bytes as f64);
    }
    if sizes.len() >= 4 {
        let early = sizes[sizes.len() / 4].max(1.0);
        let last = *sizes.last().expect("non-empty");
        println!(
            "| stored size after the last wave / after a quarter of the waves (bounded: close to 1, not {:.0}) | {:.2} |",
            sizes.len() as f64 / (sizes.len() / 4 + 1) as f64,
            last / early
        );
    }
    Ok(())
}

async fn measure(args: &BenchArgs, urls: &[String]) -> anyhow::Result<()> {
    let url = &urls[0];
    // The pickup worker listens on the last node: with several nodes, the wake-up crosses nodes.
    let worker_url = urls.last().expect("one node at least");
    let client = Client::new(url)?;
    let wanted = |m: &str| args.only.is_empty() || args.only.iter().any(|o| o == m);
    let store = match &args.database {
        Some(_) => format!("PostgreSQL, {} node(s)", urls.len()),
        None => format!("SQLite, durability {}", args.durability),
    };
    println!("taskwarden bench: {store}, servers {}, {} runs, median reported", urls.join(" "), args.runs);
    let (mut single, mut batch, mut e2e, mut p50, mut p99) = (vec![], vec![], vec![], vec![], vec![]);
    let mut fanout = vec![];
    let (mut sched, mut sched_ratio) = (vec![], vec![]);
    for run in 0..args.runs {
        let mut line = format!("run {}:", run + 1);
        if wanted("single") {
            single.push(submit_from_clients(url, &format!("single{run}"), 32, args.submits / 32, 1).await?);
            line += &format!(" single {:.0}/s", single[run]);
        }
        if wanted("batch") {
            batch.push(submit_from_clients(url, &format!("batch{run}"), 4, 25, 1000).await?);
            line += &format!(" batch {:.0}/s", batch[run]);
        }
        if wanted("e2e") {
            e2e.push(end_to_end(urls, &client, &format!("e2e{run}"), args.e2e_tasks, false).await?);
            line += &format!(" end-to-end {:.0}/s", e2e[run]);
        }
        if wanted("scheduling") {
            // Alternated with a plain run of its own, so the ratio compares like with like.
            let plain = end_to_end(urls, &client, &format!("plain{run}"), args.e2e_tasks, false).await?;
            let limited = end_to_end(urls, &client, &format!("limited{run}"), args.e2e_tasks, true).await?;
            sched.push(limited);
            sched_ratio.push(limited / plain);
            line += &format!(" with-limits {limited:.0}/s ({:.2} of plain {plain:.0}/s)", limited / plain);
        }
        if wanted("latency") {
            let mut lat = pickup_latency(worker_url, &client, &format!("latency{run}"), args.latency_samples).await?;
            lat.sort();
            p50.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
            p99.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);
            line += &format!(" pickup p50 {:.2} ms p99 {:.2} ms", p50[run], p99[run]);
        }
        if wanted("fanout") {
            let (secs, wf) = fan_out(url, &client, &format!("fanout{run}"), args.fanout_children).await?;
            fanout.push(secs);
            let s = wf.speedup.expect("a finished workflow has a report");
            line += &format!(" fan-out {secs:.2} s (speedup {:.1}x, peak {})", s.speedup, s.peak_parallelism);
        }
        println!("{line}");
    }
    println!();
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    report("single submits, 32 concurrent clients, durable", "tasks/s", &single);
    report("batch submits, 1,000 tasks per batch, 4 concurrent clients", "tasks/s", &batch);
    let workers = if urls.len() == 1 {
        "one worker process".to_owned()
    } else {
        format!("{} worker processes, one per node", urls.len())
    };
    report(&format!("end to end, {} no-op tasks, {workers}", args.e2e_tasks), "tasks/s", &e2e);
    report(&format!("end to end with resources, per-key concurrency and rate limits on, {workers}"), "tasks/s", &sched);
    report("  as a share of plain end to end in the same run", "ratio", &sched_ratio);
    report("pickup latency p50, submit call to handler start", "ms", &p50);
    report("pickup latency p99", "ms", &p99);
    report(
        &format!("fan-out at run time: {} no-op tasks + join, submit to result", args.fanout_children),
        "s",
        &fanout,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use taskwarden_core::events::EventId;

    use super::{count_messages, median_interval};

    #[test]
    fn the_medians_interval_is_read_off_the_order_statistics() {
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None, "five values give no 95% interval");
        let six = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0];
        assert_eq!(median_interval(&six), Some((1.0, 6.0)), "1 - 2/64 covers");
        // Binomial tables: for 11 values the 2nd from each end, for 40 the 14th.
        let eleven: Vec<f64> = (1..=11).rev().map(f64::from).collect();
        assert_eq!(median_interval(&eleven), Some((2.0, 10.0)));
        let forty: Vec<f64> = (1..=40).map(f64::from).collect();
        assert_eq!(median_interval(&forty), Some((14.0, 27.0)));
    }

    #[test]
    fn messages_are_counted_across_chunks_with_the_last_ones_id() {
        let stream =
            b"id: 1-1\nevent: task.submitted\ndata: {}\n\n:\n\nid: 1-2\ndata: {\"a\":1}\n\nid: 2-1\ndata: {}\n\n";
        let mut rest = Vec::new();
        // Split inside the second message: the first chunk completes one message only.
        assert_eq!(count_messages(&mut rest, &stream[..45]), (1, Some(EventId { tx: 1, seq: 1 })));
        assert_eq!(count_messages(&mut rest, &stream[45..]), (2, Some(EventId { tx: 2, seq: 1 })));
        assert!(rest.is_empty());
        // A keep-alive comment alone names no event.
        assert_eq!(count_messages(&mut rest, b":\n\n"), (0, None));
    }
}
