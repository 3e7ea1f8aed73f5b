//! Prometheus metrics, served at `GET /metrics` (and on `--metrics-listen`, if given).
//!
//! Two kinds of figures:
//! - what happened on this node: task counters and histograms (counted by [`MeteredStore`], the
//!   one place that sees every submit, lease and outcome) and HTTP requests by route (counted by
//!   the [`track_requests`] layer); labelled `node`, so a dashboard sums them across nodes;
//! - what the store holds now, for the whole cluster: queue depths, workers and their slots,
//!   read from the store at each scrape and labelled only by queue, so a dashboard does not
//!   have to sum (or de-duplicate) nodes.
//!
//! Queue and kind labels are capped ([`MetricsConfig::label_cap`] distinct values each); values
//! past the cap are counted under `other`, so a flood of made-up kinds cannot grow the series
//! without bound.

mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use taskwarden_core::protocol::WorkerStatus;
use taskwarden_core::{Task, TaskState, Timestamp};
use taskwarden_store::{Store, StoreError};

pub(crate) use store::MeteredStore;

/// The label value standing for every queue or kind past the cap.
pub const OTHER: &str = "other";

/// What `/metrics` shows and how.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Count at all (on by default). Off, nothing is counted and `/metrics` answers 404.
    pub enabled: bool,
    /// Most distinct queues, and most distinct kinds, given series of their own.
    pub label_cap: usize,
    /// Bucket upper bounds, in seconds, of `taskwarden_task_queue_wait_seconds`.
    pub queue_wait_buckets: Vec<f64>,
    /// Bucket upper bounds of `taskwarden_task_run_seconds`.
    pub run_buckets: Vec<f64>,
    /// Bucket upper bounds of `taskwarden_task_end_to_end_seconds`.
    pub end_to_end_buckets: Vec<f64>,
}

/// 1 ms to about 4.4 minutes, doubling.
fn default_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 19).collect()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            label_cap: 100,
            queue_wait_buckets: default_buckets(),
            run_buckets: default_buckets(),
            end_to_end_buckets: default_buckets(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    queue: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    queue: String,
    kind: String,
    /// `true`: a dead letter (attempts used up, or failed permanently); `false`: a retry follows.
    permanent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

/// Makes each labelled histogram with the configured buckets.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type Histograms<L> = Family<L, Histogram, Buckets>;

/// Gives each new label value its own series until `cap` are in use; then `other`.
struct LabelCap {
    cap: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelCap {
    fn new(cap: usize) -> LabelCap {
        LabelCap { cap, seen: Mutex::default() }
    }

    fn get(&self, value: &str) -> String {
        let mut seen = self.seen.lock().expect("label cap lock");
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.cap {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER.to_owned()
    }
}

/// One queue's and kind's series of every task counter and histogram: handles to the series
/// the registry writes out (a handle shares its series' value).
struct TaskSeries {
    submitted: Counter,
    started: Counter,
    succeeded: Counter,
    failed_retryable: Counter,
    failed_permanent: Counter,
    retried: Counter,
    cancelled: Counter,
    queue_wait: Histogram,
    run_time: Histogram,
    end_to_end: Histogram,
}

impl TaskSeries {
    fn of(m: &Metrics, labels: &TaskLabels) -> TaskSeries {
        let failed = |permanent: bool| {
            let labels = FailedLabels {
                queue: labels.queue.clone(),
                kind: labels.kind.clone(),
                permanent: permanent.to_string(),
            };
            m.failed.get_or_create(&labels).clone()
        };
        TaskSeries {
            submitted: m.submitted.get_or_create(labels).clone(),
            started: m.started.get_or_create(labels).clone(),
            succeeded: m.succeeded.get_or_create(labels).clone(),
            failed_retryable: failed(false),
            failed_permanent: failed(true),
            retried: m.retried.get_or_create(labels).clone(),
            cancelled: m.cancelled.get_or_create(labels).clone(),
            queue_wait: m.queue_wait.get_or_create(labels).clone(),
            run_time: m.run_time.get_or_create(labels).clone(),
            end_to_end: m.end_to_end.get_or_create(labels).clone(),
        }
    }

    /// A task that finished: its time from submitted to finished.
    fn finished(&self, task: &Task) {
        if let Some(finished) = task.finished_at {
            self.end_to_end.observe(seconds(task.created_at, finished));
        }
    }
}

/// Every metric, and the registry that writes them out.
pub(crate) struct Metrics {
    registry: Registry,
    queues: LabelCap,
    kinds: LabelCap,
    /// Each queue's and kind's series, found once (see [`TaskSeries`]).
    series: RwLock<HashMap<String, HashMap<String, Arc<TaskSeries>>>>,
    submitted: Family<TaskLabels, Counter>,
    started: Family<TaskLabels, Counter>,
    succeeded: Family<TaskLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    cancelled: Family<TaskLabels, Counter>,
    leases_expired: Counter,
    expired_unstarted: Counter,
    refused_reports: Family<ReasonLabels, Counter>,
    queue_wait: Histograms<TaskLabels>,
    run_time: Histograms<TaskLabels>,
    end_to_end: Histograms<TaskLabels>,
    store_seconds: Histograms<OperationLabels>,
    store_batch: Histograms<OperationLabels>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    leader: Gauge,
    // Cluster-wide, read from the store at each scrape.
    ready: Family<QueueLabels, Gauge>,
    scheduled: Family<QueueLabels, Gauge>,
    running: Family<QueueLabels, Gauge>,
    dead: Family<QueueLabels, Gauge>,
    paused: Family<QueueLabels, Gauge>,
    oldest_ready: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    workers_online: Gauge,
    slots_declared: Gauge,
    slots_used: Gauge,
    capacity_declared: Family<ResourceLabels, Gauge>,
    /// One scrape refreshes the cluster gauges at a time.
    scraping: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub(crate) fn new(config: &MetricsConfig, node: &str) -> Metrics {
        let buckets = |b: &[f64]| Buckets(b.into());
        let latency = Buckets(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16).collect());
        let sizes = Buckets(prometheus_client::metrics::histogram::exponential_buckets(1.0, 4.0, 8).collect());
        let route_latency = latency.clone();
        let m = Metrics {
            registry: Registry::with_prefix("taskwarden"),
            queues: LabelCap::new(config.label_cap),
            kinds: LabelCap::new(config.label_cap),
            series: RwLock::default(),
            submitted: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            cancelled: Family::default(),
            leases_expired: Counter::default(),
            expired_unstarted: Counter::default(),
            refused_reports: Family::default(),
            queue_wait: Family::new_with_constructor(buckets(&config.queue_wait_buckets)),
            run_time: Family::new_with_constructor(buckets(&config.run_buckets)),
            end_to_end: Family::new_with_constructor(buckets(&config.end_to_end_buckets)),
            store_seconds: Family::new_with_constructor(latency),
            store_batch: Family::new_with_constructor(sizes),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(route_latency),
            leader: Gauge::default(),
            ready: Family::default(),
            scheduled: Family::default(),
            running: Family::default(),
            dead: Family::default(),
            paused: Family::default(),
            oldest_ready: Family::default(),
            workers_online: Gauge::default(),
            slots_declared: Gauge::default(),
            slots_used: Gauge::default(),
            capacity_declared: Family::default(),
            scraping: tokio::sync::Mutex::new(()),
        };
        m.register(node)
    }

    fn register(mut self, node: &str) -> Metrics {
        let r = &mut self.registry;
        r.register("queue_ready", "Ready tasks per queue, cluster-wide", self.ready.clone());
        r.register(
            "queue_scheduled",
            "Tasks waiting for their run_at (delay, backoff, parents)",
            self.scheduled.clone(),
        );
        r.register("queue_running", "Tasks leased to a worker", self.running.clone());
        r.register("queue_dead", "Dead letters: tasks that failed for good", self.dead.clone());
        r.register("queue_paused", "1 while the queue is paused", self.paused.clone());
        r.register(
            "queue_oldest_ready_seconds",
            "How long the oldest ready task has waited (0 when none is ready)",
            self.oldest_ready.clone(),
        );
        r.register("workers_online", "Workers heard from lately, cluster-wide", self.workers_online.clone());
        r.register(
            "worker_slots_declared",
            "Task slots (concurrency) live workers declared",
            self.slots_declared.clone(),
        );
        r.register("worker_slots_used", "Tasks leased to live workers", self.slots_used.clone());
        r.register(
            "worker_capacity_declared",
            "Resources live workers declared (--capacity), summed by resource",
            self.capacity_declared.clone(),
        );
        let n = r.sub_registry_with_label(("node".into(), node.to_owned().into()));
        n.register(
            "tasks_submitted",
            "Tasks created by submits, batches, workflows and cron (not fan-outs)",
            self.submitted.clone(),
        );
        n.register("tasks_started", "Attempts started (tasks leased to a worker)", self.started.clone());
        n.register("tasks_succeeded", "Tasks that succeeded", self.succeeded.clone());
        n.register("tasks_failed", "Failed attempts; permanent=true when no retry follows", self.failed.clone());
        n.register("tasks_retried", "Tasks run again by hand (task retry)", self.retried.clone());
        n.register("tasks_cancelled", "Tasks cancelled through the API", self.cancelled.clone());
        n.register(
            "leases_expired",
            "Leases that ran out (worker lost or too slow): the task runs again",
            self.leases_expired.clone(),
        );
        n.register("tasks_expired", "Tasks dropped unstarted at their expires_at", self.expired_unstarted.clone());
        n.register(
            "reports_refused",
            "Worker reports refused, by reason (lease_lost: a stale attempt)",
            self.refused_reports.clone(),
        );
        n.register("task_queue_wait_seconds", "From ready (run_at) to started", self.queue_wait.clone());
        n.register("task_run_seconds", "How long the handler ran, by the worker's clock", self.run_time.clone());
        n.register(
            "task_end_to_end_seconds",
            "From submitted to finished, for tasks that finished",
            self.end_to_end.clone(),
        );
        n.register(
            "store_operation_seconds",
            "How long store calls took, as the server saw them",
            self.store_seconds.clone(),
        );
        n.register("store_operation_items", "Tasks or reports per store call", self.store_batch.clone());
        n.register("http_requests", "HTTP requests by method, route and status", self.requests.clone());
        n.register("http_request_seconds", "HTTP request latency by route", self.request_seconds.clone());
        n.register("leader", "1 while this node runs the background loops", self.leader.clone());
        self
    }

    /// The series a task of `queue` and `kind` counts in. Every task event lands here, so the
    /// series are looked up (and their labels capped) once per queue and kind, and after that
    /// found with one map lookup that allocates nothing. Only values with series of their own are
    /// kept: those past the cap share `other`'s, looked up each time, so made-up names cannot
    /// grow the map.
    fn series(&self, queue: &str, kind: &str) -> Arc<TaskSeries> {
        let found = self.series.read().expect("series lock").get(queue).and_then(|k| k.get(kind)).cloned();
        if let Some(series) = found {
            return series;
        }
        let labels = TaskLabels { queue: self.queues.get(queue), kind: self.kinds.get(kind) };
        let series = Arc::new(TaskSeries::of(self, &labels));
        if labels.queue == queue && labels.kind == kind {
            let mut all = self.series.write().expect("series lock");
            all.entry(labels.queue).or_default().insert(labels.kind, series.clone());
        }
        series
    }

    pub(crate) fn submitted(&self, queue: &str, kind: &str) {
        self.series(queue, kind).submitted.inc();
    }

    /// A task leased to a worker: its wait since it became ready.
    pub(crate) fn started(&self, task: &Task) {
        let series = self.series(&task.queue, &task.kind);
        series.started.inc();
        if let Some(lease) = &task.lease {
            series.queue_wait.observe(seconds(task.run_at, lease.started_at));
        }
    }

    /// A task as a report left it; `ran` is the handler's run time, if the worker said.
    pub(crate) fn reported(&self, task: &Task, ran: Option<Duration>) {
        let series = self.series(&task.queue, &task.kind);
        if let Some(ran) = ran {
            series.run_time.observe(ran.as_secs_f64());
        }
        let outcome = match task.state {
            TaskState::Succeeded => Some(&series.succeeded),
            TaskState::Failed => Some(&series.failed_permanent),
            TaskState::Scheduled | TaskState::Ready => Some(&series.failed_retryable),
            TaskState::Cancelled => Some(&series.cancelled),
            TaskState::Running | TaskState::Expired => None,
        };
        if let Some(counter) = outcome {
            counter.inc();
        }
        series.finished(task);
    }

    pub(crate) fn cancelled(&self, task: &Task) {
        let series = self.series(&task.queue, &task.kind);
        series.cancelled.inc();
        series.finished(task);
    }

    pub(crate) fn retried(&self, task: &Task) {
        self.series(&task.queue, &task.kind).retried.inc();
    }

    pub(crate) fn report_refused(&self, error: &StoreError) {
        let reason = match error {
            StoreError::LeaseLost => "lease_lost",
            StoreError::NotFound => "not_found",
            StoreError::Transition(_) => "transition",
            StoreError::Conflict(_) => "conflict",
            _ => "store_error",
        };
        self.refused_reports.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    pub(crate) fn leases_expired(&self, n: usize) {
        self.leases_expired.inc_by(n as u64);
    }

    pub(crate) fn expired_unstarted(&self, n: usize) {
        self.expired_unstarted.inc_by(n as u64);
    }

    /// A store call's time and size.
    pub(crate) fn store_call(&self, operation: &str, started: Instant, items: usize) {
        let labels = OperationLabels { operation: operation.to_owned() };
        self.store_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        self.store_batch.get_or_create(&labels).observe(items as f64);
    }

    /// The text exposition (OpenMetrics), after reading the cluster-wide figures from the store.
    pub(crate) async fn render(&self, store: &dyn Store, now: Timestamp, leader: bool) -> Result<String, StoreError> {
        let _one_scrape = self.scraping.lock().await;
        self.leader.set(i64::from(leader));
        let queues = store.queue_depths(now).await?;
        let workers = store.list_workers().await?;
        for family in [&self.ready, &self.scheduled, &self.running, &self.dead, &self.paused] {
            family.clear();
        }
        self.oldest_ready.clear();
        for q in &queues {
            let labels = QueueLabels { queue: self.queues.get(&q.name) };
            // Queues past the cap add up under `other`.
            self.ready.get_or_create(&labels).inc_by(q.ready as i64);
            self.scheduled.get_or_create(&labels).inc_by(q.scheduled as i64);
            self.running.get_or_create(&labels).inc_by(q.running as i64);
            self.dead.get_or_create(&labels).inc_by(q.failed as i64);
            self.paused.get_or_create(&labels).inc_by(i64::from(q.paused));
            let oldest = q.oldest_ready_ms.unwrap_or(0) as f64 / 1000.0;
            let gauge = self.oldest_ready.get_or_create(&labels);
            if oldest > gauge.get() {
                gauge.set(oldest);
            }
        }
        let live: Vec<_> = workers.iter().filter(|w| w.status == WorkerStatus::Live).collect();
        self.workers_online.set(live.len() as i64);
        self.slots_declared.set(live.iter().map(|w| i64::from(w.concurrency)).sum());
        self.slots_used.set(live.iter().map(|w| i64::from(w.running)).sum());
        self.capacity_declared.clear();
        for (resource, amount) in live.iter().flat_map(|w| w.capacity.0.iter()) {
            // Resource names come from workers, so they share the cap of kinds.
            let labels = ResourceLabels { resource: self.kinds.get(resource) };
            self.capacity_declared.get_or_create(&labels).inc_by(i64::try_from(*amount).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        Ok(text)
    }
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// The layer that counts HTTP requests by method, matched route and status.
pub(crate) async fn track_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_past_the_cap_count_as_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.get("a"), "a");
        assert_eq!(cap.get("b"), "b");
        assert_eq!(cap.get("c"), OTHER);
        assert_eq!(cap.get("a"), "a");
        assert_eq!(cap.get("d"), OTHER);
    }

    #[test]
    fn a_tasks_series_are_found_once_and_names_past_the_cap_share_other() {
        let config = MetricsConfig { label_cap: 1, ..Default::default() };
        let m = Metrics::new(&config, "n1");
        m.submitted("q1", "k1");
        m.submitted("q1", "k1");
        m.submitted("q2", "k2");
        m.submitted("q3", "k1");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        let count = |queue: &str, kind: &str| {
            let series = format!(r#"taskwarden_tasks_submitted_total{{node="n1",queue="{queue}",kind="{kind}"}} "#);
            let line = text.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series}: {text}"));
            line[series.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(count("q1", "k1"), 2);
        // q2 and q3 are past the cap of queues (k2 past that of kinds): one `other` series.
        assert_eq!(count("other", "other"), 1);
        assert_eq!(count("other", "k1"), 1);
        // Only names with series of their own are kept; the rest are looked up each time.
        let kept = m.series.read().unwrap();
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["q1"]);
        assert_eq!(kept["q1"].keys().collect::<Vec<_>>(), ["k1"]);
    }
}
