//! The worker's run loop: fetch tasks while slots are free, run each handler in its own tokio task
//! under its timeout, report outcomes in batches, keep leases alive, and shut down gracefully.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskwarden_client::Client;
use taskwarden_core::protocol::{
    FetchRequest, HeldLease, ItemStatus, LeasedTask, Outcome, RegisterWorker, Report, WorkerInfo,
};
use taskwarden_core::validate::MAX_FINISHED;

use crate::reporter::{InFlight, Outbox};
use taskwarden_core::{LeaseToken, TaskId};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::{ErasedHandler, NotesBoard, TaskContext, TaskError};
use crate::traces::RunSpan;
use crate::{WorkerConfig, WorkerError};
use opentelemetry::context::FutureExt as _;

/// One execution in flight.
struct Active {
    lease: LeaseToken,
    lease_timeout: Duration,
    /// Fired on cancellation, lost lease, timeout or forced shutdown.
    cancel: CancellationToken,
    abort: Option<AbortHandle>,
}

/// Executions in flight, by task. An execution that is no longer here when its handler returns
/// has been abandoned (lease lost) or released (shutdown), and must not report.
type ActiveSet = Arc<Mutex<HashMap<TaskId, Active>>>;

/// What a run did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub worker_id: String,
    pub succeeded: u64,
    pub failed: u64,
    pub released: u64,
    pub abandoned: u64,
    /// Fetch requests made, and the tasks they leased.
    pub fetches: u64,
    pub fetched: u64,
    /// Report requests made on their own (outcomes not carried by a fetch).
    pub report_requests: u64,
}

/// How long a prefetched task should wait here for a slot, at most, at the pace tasks have been
/// running (see [`WorkerConfig::prefetch`]).
pub const PREFETCH_HORIZON: Duration = Duration::from_millis(5);

/// How long a prefetched task waits for a slot before it is given back: the pace said tasks were
/// short, but the ones ahead of it are not (a pace learns only from tasks that have finished).
pub const PREFETCH_GIVE_BACK: Duration = Duration::from_millis(250);

/// How long this worker's tasks have been taking: a moving average of their run times.
#[derive(Default)]
struct Pace {
    average_us: Option<f64>,
}

impl Pace {
    /// A task waited this long for a slot: tasks are at least this slow now, whatever the ones
    /// that finished said.
    fn at_least(&mut self, waited: Duration) {
        let waited = waited.as_micros() as f64;
        self.average_us = Some(self.average_us.map_or(waited, |avg| avg.max(waited)));
    }

    fn record(&mut self, took: Duration) {
        let took = took.as_micros() as f64;
        self.average_us = Some(self.average_us.map_or(took, |avg| avg * 0.9 + took * 0.1));
    }

    /// How many leased tasks may wait for a slot: as many as `slots` slots start within
    /// [`PREFETCH_HORIZON`] at this pace, at most `cap`; none before any task has run.
    fn may_wait(&self, slots: usize, cap: usize) -> usize {
        let Some(avg) = self.average_us else { return 0 };
        let started_within_horizon = slots as f64 * PREFETCH_HORIZON.as_micros() as f64 / avg.max(1.0);
        (started_within_horizon as usize).min(cap)
    }
}

struct Shared {
    client: Client,
    worker_id: String,
    handlers: HashMap<String, (Arc<dyn ErasedHandler>, Option<Duration>)>,
    active: ActiveSet,
    notes: NotesBoard,
    outbox: Arc<Outbox>,
    summary: Mutex<RunSummary>,
    /// Makes the run spans (see `traces`).
    /// The tracer of the run spans; none when traces are off.
    tracer: Option<opentelemetry::global::BoxedTracer>,
    /// With capacity declared: tasks whose outcomes are on their way (see `reporter`).
    in_flight: Option<InFlight>,
    /// One permit per execution slot: a leased task runs once it holds one.
    slots: Arc<Semaphore>,
    /// Tasks beyond the slots the worker may lease while its tasks are short.
    prefetch: usize,
    /// One permit per task leased or being fetched: the fetch loop asks the server for at most as
    /// many tasks as it holds permits, so the worker never holds more than its slots and its
    /// prefetch.
    leases: Arc<Semaphore>,
    most_leased: usize,
    /// Held by the fetcher taking its permits (see `fetch_loop`).
    taking: tokio::sync::Mutex<()>,
    pace: Mutex<Pace>,
    /// Rung when a leased task is done with (its lease permit given back) or a fetch gives back
    /// permits it did not use: a fetcher holding off (tasks are long and every slot is taken or
    /// promised) looks again.
    moved: Notify,
    shutdown: CancellationToken,
}

impl Shared {
    /// How many tasks a fetcher holding one lease permit may ask for now: enough to fill the
    /// slots, and while tasks are short, as many more as may wait for a slot (see
    /// [`Pace::may_wait`]), less what is leased already or being fetched by another fetcher.
    fn room(&self, concurrency: usize) -> usize {
        let may_wait = self.pace.lock().expect("pace lock").may_wait(concurrency, self.prefetch);
        let held_by_others = self.most_leased - self.leases.available_permits() - 1;
        (concurrency + may_wait).saturating_sub(held_by_others)
    }
}

impl Drop for Shared {
    /// The last execution is gone: no more outcomes will come.
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// Registers, retrying while the server cannot be reached (or answers 503) for up to `wait`,
/// with a line in the log each time: a worker started before its server (a reboot, a compose
/// file) waits for it instead of exiting. `None` if shutdown came first.
async fn register_when_up<F, Fut>(
    register: F,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<Result<WorkerInfo, taskwarden_client::ClientError>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<WorkerInfo, taskwarden_client::ClientError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match register().await {
            Err(e) if e.never_ran() && tokio::time::Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tracing::warn!(error = %e, "the server is not reachable yet; retrying for up to {}s more", left.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1).min(left)) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
            other => return Some(other),
        }
    }
}

pub(crate) async fn run(
    config: WorkerConfig,
    handlers: HashMap<String, (Arc<dyn ErasedHandler>, Option<Duration>)>,
    schemas: std::collections::BTreeMap<String, serde_json::Value>,
    client: Client,
    shutdown: CancellationToken,
) -> Result<RunSummary, WorkerError> {
    let registration = RegisterWorker {
        name: config.name.clone(),
        queues: config.queues.clone(),
        concurrency: config.concurrency as u32,
        capacity: config.capacity.clone(),
        labels: config.labels.clone(),
        // Its handler table: it is leased no other kind, and a task of a kind no live worker
        // runs is shown as unschedulable instead of failing here with "no handler".
        kinds: {
            let mut kinds: Vec<String> = handlers.keys().cloned().collect();
            kinds.sort();
            kinds
        },
        schemas,
    };
    let register = || client.register(&registration);
    let info = match register_when_up(register, config.startup_wait, &shutdown).await {
        Some(registered) => registered?,
        None => return Ok(RunSummary::default()),
    };
    tracing::info!(worker_id = %info.id, queues = ?config.queues, concurrency = config.concurrency, "worker registered");
    let outbox = Arc::new(Outbox::default());
    // A worker that declared capacity gets no more than fits it: the server counts a leased
    // task's resources as held whether it runs or waits, so a prefetched task would only keep
    // resources from running ones.
    let prefetch = match config.capacity.is_empty() {
        true => config.prefetch.unwrap_or(config.concurrency * 4),
        false => 0,
    };
    let most_leased = config.concurrency + prefetch;
    let shared = Arc::new(Shared {
        client: client.clone(),
        worker_id: info.id.clone(),
        handlers,
        active: Arc::new(Mutex::new(HashMap::new())),
        notes: Arc::new(Mutex::new(HashMap::new())),
        outbox: outbox.clone(),
        summary: Mutex::new(RunSummary { worker_id: info.id.clone(), ..Default::default() }),
        tracer: config.traces.then(crate::traces::tracer),
        in_flight: (!config.capacity.is_empty()).then(InFlight::default),
        slots: Arc::new(Semaphore::new(config.concurrency)),
        prefetch,
        leases: Arc::new(Semaphore::new(most_leased)),
        most_leased,
        taking: tokio::sync::Mutex::new(()),
        pace: Mutex::default(),
        moved: Notify::new(),
        shutdown: shutdown.clone(),
    });
    // The reporter and the heartbeat loop outlive the fetch loop: in-flight tasks still need both
    // while they finish during the grace period.
    let stop_background = CancellationToken::new();
    let reporter =
        tokio::spawn(crate::reporter::run(client.clone(), info.id.clone(), outbox, shared.in_flight.clone()));
    let heartbeats = tokio::spawn(keep_leases(shared.clone(), stop_background.clone()));

    // One fetcher long-polls; the others help only while work is flowing (they never park on
    // the server), so a frozen worker holds at most one waiting fetch that could be handed tasks.
    let flowing = Arc::new(Notify::new());
    let mut fetchers = tokio::task::JoinSet::new();
    for i in 0..config.fetchers {
        let role = if i == 0 { Role::LongPoll(flowing.clone()) } else { Role::Helper(flowing.clone()) };
        let (shared, config, shutdown) = (shared.clone(), config.clone(), shutdown.clone());
        fetchers.spawn(async move { fetch_loop(&shared, &config, &shutdown, role).await });
    }
    while fetchers.join_next().await.is_some() {}

    // Graceful shutdown: let in-flight tasks finish within the grace period...
    let all = shared.most_leased as u32;
    if tokio::time::timeout(config.shutdown_grace, shared.leases.acquire_many(all)).await.is_err() {
        // ...then stop the rest and give their leases back so another worker can run them now.
        let leftovers: Vec<(TaskId, Active)> = shared.active.lock().expect("active lock").drain().collect();
        for (id, a) in leftovers {
            a.cancel.cancel();
            if let Some(h) = a.abort {
                h.abort();
            }
            shared.outbox.push(Report::new(id, a.lease, Outcome::Released));
            shared.summary.lock().expect("summary lock").released += 1;
        }
    }
    stop_background.cancel();
    let _ = heartbeats.await;
    let mut summary = shared.summary.lock().expect("summary lock").clone();
    drop(shared); // closes the outbox once the last execution is gone
    if let Ok(Ok(requests)) = tokio::time::timeout(Duration::from_secs(10), reporter).await {
        summary.report_requests = requests;
    }
    tracing::debug!(?summary, "worker stopped");
    Ok(summary)
}

/// What a fetch loop does when there is nothing to fetch.
enum Role {
    /// Waits on the server for work (up to `fetch_wait`); announces on the `Notify` when it got some.
    LongPoll(Arc<Notify>),
    /// Fetches without waiting while work comes; when none does, waits for the long-poller's
    /// announcement.
    Helper(Arc<Notify>),
}

/// Whether a fetcher counts as one that will fetch soon (see [`Outbox`]); it stops counting when
/// dropped.
struct Carrier<'a> {
    outbox: &'a Outbox,
    on: bool,
}

impl Carrier<'_> {
    fn set(&mut self, on: bool) {
        match (self.on, on) {
            (false, true) => self.outbox.carrying(),
            (true, false) => self.outbox.not_carrying(),
            _ => {}
        }
        self.on = on;
    }
}

impl Drop for Carrier<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Fetches while slots are free. While work flows, every fetch answers at once (`wait_ms` 0) and
/// carries the outcomes finished since the last one, so a busy worker spends one request per
/// round of tasks and never waits on the server; only once a fetch comes back empty does the
/// long-poller park on the server (and the reporter send outcomes by itself).
async fn fetch_loop(shared: &Arc<Shared>, config: &WorkerConfig, shutdown: &CancellationToken, role: Role) {
    // The long-poller starts by parking on the server (an idle worker waits there); a helper
    // starts by fetching once, then waits for the long-poller's word that work flows.
    let mut flowing = matches!(role, Role::Helper(_));
    let mut carrier = Carrier { outbox: &shared.outbox, on: false };
    let mut failures = 0u32;
    loop {
        if let (false, Role::Helper(notify)) = (flowing, &role) {
            carrier.set(false);
            tokio::select! {
                _ = notify.notified() => flowing = true,
                _ = shutdown.cancelled() => return,
            }
        }
        carrier.set(flowing);
        // One fetcher at a time takes its permits and judges the room, so two cannot both count
        // the same free room (and lease past it), nor each see the other's first permit and both
        // hold off.
        let taking = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            t = shared.taking.lock() => t,
        };
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            p = shared.leases.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        // Registered before looking, so a task moving in between is not missed.
        let moved = shared.moved.notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let room = shared.room(config.concurrency).min(config.max_fetch as usize);
        if room == 0 {
            // Long tasks fill every slot: lease nothing that would wait behind them, and leave
            // the outcomes to the reporter meanwhile (this fetcher will not be sending soon).
            drop(first);
            drop(taking);
            carrier.set(false);
            tokio::select! {
                _ = moved => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let mut permits = vec![first];
        while permits.len() < room {
            match shared.leases.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        drop(taking);
        let (wait, reports) = match flowing {
            true => (Duration::ZERO, shared.outbox.take_for_fetch()),
            false => (config.fetch_wait, Vec::new()),
        };
        let carried: Vec<TaskId> = reports.iter().map(|r| r.task_id).collect();
        let request = fetch_request(shared, config, permits.len(), wait, reports);
        let fetched = if wait.is_zero() {
            // Answered at once: awaited even through a shutdown, so that the outcomes it carries
            // are known to be delivered (or put back) and the tasks it leases are run.
            shared.client.fetch_request(&shared.worker_id, &request).await
        } else {
            tokio::select! {
                // Biased: tasks already leased to us are run (shutdown then waits for them) rather
                // than dropped on the floor when shutdown fires at the same moment.
                biased;
                r = shared.client.fetch_request(&shared.worker_id, &request) => r,
                // Dropping the request abandons the long-poll; the server hands nothing to a closed
                // call that it has not already leased, and anything leased is re-leased after expiry.
                _ = shutdown.cancelled() => return,
            }
        };
        match fetched {
            Ok(answer) => {
                failures = 0;
                crate::reporter::note_refusals(&answer.reports);
                crate::reporter::delivered(shared.in_flight.as_ref(), &carried);
                let tasks = answer.tasks;
                {
                    let mut s = shared.summary.lock().expect("summary lock");
                    s.fetches += 1;
                    s.fetched += tasks.len() as u64;
                }
                if let Some(in_flight) = &shared.in_flight {
                    // Leased to us again (an earlier attempt's lease expired): running, not finished.
                    let mut in_flight = in_flight.lock().expect("in-flight lock");
                    for t in &tasks {
                        in_flight.remove(&t.id);
                    }
                }
                let got = !tasks.is_empty();
                for task in tasks {
                    let permit = permits.pop().expect("never more tasks than permits");
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        execute(&shared, task).await;
                        drop(permit);
                        shared.moved.notify_waiters();
                    });
                }
                flowing = got;
                if let (true, Role::LongPoll(notify)) = (got, &role) {
                    notify.notify_waiters();
                }
                // Permits not used go back: another fetcher holding off may now have room.
                drop(permits);
                shared.moved.notify_waiters();
            }
            Err(e) => {
                // Whatever the fetch carried goes again, with the next fetch or the reporter.
                shared.outbox.put_back(request.reports);
                drop(permits);
                shared.moved.notify_waiters();
                flowing = false;
                carrier.set(false);
                failures += 1;
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::warn!(error = %e, retry_in = ?pause, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn execute(shared: &Arc<Shared>, task: LeasedTask) {
    let cancel = CancellationToken::new();
    let id = task.id;
    let lease = task.lease;
    let (handler, kind_timeout) = match shared.handlers.get(&task.kind) {
        Some((h, t)) => (h.clone(), *t),
        None => {
            let error = format!("no handler for kind {:?} on worker {}", task.kind, shared.worker_id);
            shared.outbox.push(Report::new(
                id,
                lease,
                Outcome::Failed { error, retry_after_ms: None, permanent: false },
            ));
            return;
        }
    };
    let timeout =
        kind_timeout.map_or(Duration::from_millis(task.timeout_ms), |t| t.min(Duration::from_millis(task.timeout_ms)));
    let mut ctx = TaskContext::new(&task, cancel.clone(), shared.notes.clone(), shared.client.clone());
    // Registered before it waits for a slot, so heartbeats keep its lease while it waits.
    shared.active.lock().expect("active lock").insert(
        id,
        Active {
            lease,
            lease_timeout: Duration::from_millis(task.lease_timeout_ms),
            cancel: cancel.clone(),
            abort: None,
        },
    );
    let leased_at = tokio::time::Instant::now();
    let Some(_slot) = take_slot(shared, id, lease, &cancel).await else { return };
    let started = tokio::time::Instant::now();
    // The server's deadline for the attempt runs from the lease, so time spent waiting for a
    // slot comes off the handler's.
    let timeout = timeout.saturating_sub(started - leased_at);
    // Traces off: no span at all (building a no-op one cost every task a few allocations).
    let span = shared.tracer.as_ref().map(|tracer| RunSpan::start(tracer, &task, &shared.worker_id));
    let task_traceparent = task.traceparent;
    ctx.traceparent = span.as_ref().map_or(task_traceparent, RunSpan::traceparent);
    let handler = crate::task_logs::scope(ctx.clone(), handler.call(ctx, task.payload));
    let handle = match &span {
        Some(span) => tokio::spawn(handler.with_context(span.context())),
        None => tokio::spawn(handler),
    };
    if let Some(a) = shared.active.lock().expect("active lock").get_mut(&id) {
        a.abort = Some(handle.abort_handle());
    }
    let abort = handle.abort_handle();
    let result = match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) if join.is_panic() => Err(TaskError::retry(format!("handler panicked: {}", panic_message(join)))),
        Ok(Err(_)) => Err(TaskError::Cancelled),
        Err(_) => {
            cancel.cancel();
            abort.abort();
            Err(TaskError::retry(format!("timed out after {} ms", timeout.as_millis())))
        }
    };
    let ran = started.elapsed();
    shared.pace.lock().expect("pace lock").record(ran);
    // Still ours? If not, the lease was lost or released: someone else owns the task now.
    if shared.active.lock().expect("active lock").remove(&id).is_none() {
        return;
    }
    let logs = shared.notes.lock().expect("notes lock").remove(&id).map(|n| n.logs).unwrap_or_default();
    let outcome = match result {
        Ok(result) => Outcome::Succeeded { result },
        Err(TaskError::Retry { message, after }) => {
            Outcome::Failed { error: message, retry_after_ms: after.map(|d| d.as_millis() as u64), permanent: false }
        }
        Err(TaskError::Fail { message }) => Outcome::Failed { error: message, retry_after_ms: None, permanent: true },
        Err(TaskError::Cancelled) => Outcome::Cancelled,
    };
    {
        let mut s = shared.summary.lock().expect("summary lock");
        match outcome {
            Outcome::Succeeded { .. } => s.succeeded += 1,
            _ => s.failed += 1,
        }
    }
    if let Some(in_flight) = &shared.in_flight {
        in_flight.lock().expect("in-flight lock").insert(id);
    }
    log_outcome(&task.kind, id, task.attempt, &outcome, ran);
    let traceparent = span.map_or(task_traceparent, |span| span.end(&outcome));
    shared.outbox.push(Report {
        ran_us: Some(ran.as_micros() as u64),
        logs,
        traceparent,
        ..Report::new(id, lease, outcome)
    });
}

/// One line per finished attempt, at info level (failures at warn).
fn log_outcome(kind: &str, id: TaskId, attempt: u32, outcome: &Outcome, ran: Duration) {
    let run_ms = ran.as_secs_f64() * 1000.0;
    match outcome {
        Outcome::Succeeded { .. } => {
            tracing::info!(task_id = %id, kind, attempt, outcome = "succeeded", run_ms, "task finished")
        }
        Outcome::Failed { error, permanent, .. } => {
            let outcome = if *permanent { "failed permanently" } else { "failed" };
            tracing::warn!(task_id = %id, kind, attempt, outcome, run_ms, error = %error, "task finished")
        }
        Outcome::Cancelled => {
            tracing::info!(task_id = %id, kind, attempt, outcome = "cancelled", run_ms, "task finished")
        }
        Outcome::Released => {
            tracing::info!(task_id = %id, kind, attempt, outcome = "released", run_ms, "task finished")
        }
    }
}

/// Waits for a free execution slot; `None` when the task must not run after all: its lease was
/// lost or it was cancelled while it waited (then reported cancelled), or the worker is shutting
/// down or it waited [`PREFETCH_GIVE_BACK`] (then its lease is given back at once, for another
/// worker to run it now).
async fn take_slot(
    shared: &Shared,
    id: TaskId,
    lease: LeaseToken,
    cancel: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(permit) = shared.slots.clone().try_acquire_owned() {
        return Some(permit);
    }
    let outcome = tokio::select! {
        p = shared.slots.clone().acquire_owned() => return Some(p.expect("semaphore is never closed")),
        _ = cancel.cancelled() => Outcome::Cancelled,
        _ = shared.shutdown.cancelled() => Outcome::Released,
        // The tasks ahead turned out slow: let another worker run this one now, and prefetch no
        // more until tasks are short again.
        _ = tokio::time::sleep(PREFETCH_GIVE_BACK) => {
            shared.pace.lock().expect("pace lock").at_least(PREFETCH_GIVE_BACK);
            Outcome::Released
        }
    };
    // Still ours (not abandoned by a lost lease): say what became of it.
    if shared.active.lock().expect("active lock").remove(&id).is_some() {
        if matches!(outcome, Outcome::Released) {
            shared.summary.lock().expect("summary lock").released += 1;
        }
        shared.outbox.push(Report::new(id, lease, outcome));
    }
    None
}

/// A fetch for `limit` tasks; with capacity declared, it names the tasks whose outcomes are on
/// their way, whose resources are free here already.
fn fetch_request(
    shared: &Shared,
    config: &WorkerConfig,
    limit: usize,
    wait: Duration,
    reports: Vec<Report>,
) -> FetchRequest {
    let finished = match &shared.in_flight {
        Some(in_flight) => in_flight.lock().expect("in-flight lock").iter().take(MAX_FINISHED).copied().collect(),
        None => Vec::new(),
    };
    FetchRequest {
        queues: config.queues.clone(),
        limit: limit as u32,
        wait_ms: wait.as_millis() as u64,
        finished,
        reports,
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Heartbeats every lease in flight, a few times per lease timeout; fires the cancellation token
/// of tasks that were cancelled, and abandons executions whose lease was lost.
/// How often an idle worker heartbeats.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);

async fn keep_leases(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last_beat = tokio::time::Instant::now();
    loop {
        let interval = {
            let active = shared.active.lock().expect("active lock");
            active
                .values()
                .map(|a| a.lease_timeout / 3)
                .min()
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(20), Duration::from_secs(10))
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let leases: Vec<HeldLease> = {
            let active = shared.active.lock().expect("active lock");
            let mut notes = shared.notes.lock().expect("notes lock");
            active
                .iter()
                .map(|(id, a)| {
                    let n = notes.remove(id).unwrap_or_default();
                    HeldLease { task_id: *id, lease: a.lease, progress: n.progress, logs: n.logs }
                })
                .collect()
        };
        // An idle worker still says it is alive now and then: the server counts a worker not
        // heard from for 30 s as gone when it explains why a task cannot run.
        if leases.is_empty() && last_beat.elapsed() < IDLE_HEARTBEAT {
            continue;
        }
        last_beat = tokio::time::Instant::now();
        let sent: HashMap<TaskId, LeaseToken> = leases.iter().map(|l| (l.task_id, l.lease)).collect();
        let beat = tokio::select! {
            r = shared.client.heartbeat(&shared.worker_id, leases) => r,
            _ = stop.cancelled() => return,
        };
        match beat {
            Ok(statuses) => {
                let mut active = shared.active.lock().expect("active lock");
                for st in statuses {
                    // The answer is about the lease we sent. If the task has since ended and been
                    // leased to us again, the new execution is not the one this answer is about.
                    if active.get(&st.task_id).map(|a| a.lease) != sent.get(&st.task_id).copied() {
                        continue;
                    }
                    match st.status {
                        ItemStatus::Ok if st.cancel_requested => {
                            if let Some(a) = active.get(&st.task_id) {
                                a.cancel.cancel();
                            }
                        }
                        ItemStatus::Ok => {}
                        ItemStatus::LeaseLost | ItemStatus::NotFound => {
                            if let Some(a) = active.remove(&st.task_id) {
                                tracing::warn!(task_id = %st.task_id, "lease lost; abandoning the execution");
                                a.cancel.cancel();
                                shared.summary.lock().expect("summary lock").abandoned += 1;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
