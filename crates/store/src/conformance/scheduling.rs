//! Conformance cases for scheduling: resources and labels, limits, least-loaded hand-off, cron.

use std::time::Duration;

use taskwarden_core::cron::{CronSpec, Misfire};
use taskwarden_core::limits::QueueLimits;
use taskwarden_core::placement::{Resources, parse_labels};
use taskwarden_core::protocol::SubmitTask;
use taskwarden_core::search::TaskSearch;
use taskwarden_core::{Needs, NewTask, Task, TaskState};

use super::{at, report, spec, submit, submit_one, success};
use crate::params::*;
use crate::{Store, StoreError};

async fn register(
    store: &dyn Store,
    name: &str,
    queues: &[&str],
    concurrency: u32,
    capacity: &str,
    labels: &str,
) -> String {
    let p = RegisterWorker {
        name: name.into(),
        owner: None,
        queues: queues.iter().map(|q| q.to_string()).collect(),
        concurrency,
        capacity: Resources::parse("capacity", capacity).unwrap(),
        labels: parse_labels("labels", labels).unwrap(),
        kinds: Vec::new(),
        schemas: Default::default(),
        now: at(0),
    };
    store.register_worker(p).await.unwrap().id
}

async fn fetch_as(store: &dyn Store, worker: &str, queue: &str, limit: u32, wait: Duration, now: i64) -> Vec<Task> {
    let p = FetchTasks {
        worker_id: worker.into(),
        queues: vec![queue.into()],
        limit,
        wait,
        now: at(now),
        finished: vec![],
    };
    store.fetch(p).await.unwrap()
}

fn needing(queue: &str, resources: &str, labels: &str) -> NewTask {
    NewTask {
        needs: Needs {
            resources: Resources::parse("resources", resources).unwrap(),
            labels: parse_labels("labels", labels).unwrap(),
            ..Default::default()
        },
        ..spec(queue)
    }
}

fn keyed(queue: &str, concurrency_key: Option<&str>, rate_key: Option<&str>) -> NewTask {
    NewTask {
        needs: Needs {
            concurrency_key: concurrency_key.map(Into::into),
            rate_key: rate_key.map(Into::into),
            ..Default::default()
        },
        ..spec(queue)
    }
}

async fn limit(store: &dyn Store, queue: &str, limits: QueueLimits) {
    let p = UpdateQueue { queue: queue.into(), paused: None, weight: None, limits: Some(limits), now: at(0) };
    store.update_queue(p).await.unwrap();
}

fn ids(tasks: &[Task]) -> Vec<taskwarden_core::TaskId> {
    let mut ids: Vec<_> = tasks.iter().map(|t| t.id).collect();
    ids.sort();
    ids
}

/// A worker that says which kinds it has handlers for is leased no other kind, even when the
/// unknown kind waits ahead of its own (with aging too); one that does not say takes any kind.
pub async fn a_worker_that_names_its_kinds_is_leased_no_other(store: &dyn Store) {
    let named = |name: &str, kinds: &[&str]| RegisterWorker {
        name: name.into(),
        owner: None,
        queues: vec!["k".into()],
        concurrency: 10,
        capacity: Resources::default(),
        labels: Default::default(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        schemas: Default::default(),
        now: at(0),
    };
    let echo_only = store.register_worker(named("echo-only", &["echo"])).await.unwrap();
    assert_eq!(echo_only.kinds, ["echo"]);
    let listed = store.list_workers().await.unwrap();
    assert_eq!(listed.iter().find(|w| w.id == echo_only.id).unwrap().kinds, ["echo"], "kinds are kept");
    let nosuch: Vec<NewTask> =
        (0..5).map(|i| NewTask { kind: "nosuch".into(), priority: 10 - i, ..spec("k") }).collect();
    let nosuch = submit(store, nosuch, at(1)).await;
    let echo = submit_one(store, NewTask { kind: "echo".into(), ..spec("k") }, at(2)).await;
    let got = fetch_as(store, &echo_only.id, "k", 10, Duration::ZERO, 3).await;
    assert_eq!(ids(&got), vec![echo.id], "only its own kind, from behind higher-priority others");
    assert!(fetch_as(store, &echo_only.id, "k", 10, Duration::ZERO, 4).await.is_empty());
    let any = store.register_worker(named("any", &[])).await.unwrap();
    assert!(any.kinds.is_empty());
    let got = fetch_as(store, &any.id, "k", 10, Duration::ZERO, 5).await;
    assert_eq!(ids(&got), ids(&nosuch), "a worker that did not say takes any kind");
}

/// A worker registers JSON Schemas for some of its kinds: each replaces the kind's schema in
/// force, a worker that names the kind without one leaves it, and they are read back by kind.
pub async fn the_schema_registered_last_for_a_kind_is_in_force(store: &dyn Store) {
    let with = |kinds: &[&str], schemas: &[(&str, &str)], now: i64| RegisterWorker {
        name: "w".into(),
        owner: None,
        queues: vec!["s".into()],
        concurrency: 1,
        capacity: Resources::default(),
        labels: Default::default(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        schemas: schemas.iter().map(|(k, s)| (k.to_string(), s.to_string())).collect(),
        now: at(now),
    };
    assert!(store.kind_schemas().await.unwrap().is_empty());
    let v1 = r#"{"required":["url"]}"#;
    store.register_worker(with(&["fetch", "echo"], &[("fetch", v1)], 1)).await.unwrap();
    let got = store.kind_schemas().await.unwrap();
    assert_eq!(got, vec![KindSchema { kind: "fetch".into(), schema: v1.into(), registered_at: at(1) }]);
    // Named without a schema: left as it is.
    store.register_worker(with(&["fetch"], &[], 2)).await.unwrap();
    assert_eq!(store.kind_schemas().await.unwrap().len(), 1);
    assert_eq!(store.kind_schemas().await.unwrap()[0].schema, v1);
    // A new version replaces it; a second kind is added beside it, read back in kind order.
    let v2 = r#"{"required":["url","timeout_ms"]}"#;
    store.register_worker(with(&["fetch", "echo"], &[("fetch", v2), ("echo", "true")], 3)).await.unwrap();
    let got = store.kind_schemas().await.unwrap();
    assert_eq!(
        got,
        vec![
            KindSchema { kind: "echo".into(), schema: "true".into(), registered_at: at(3) },
            KindSchema { kind: "fetch".into(), schema: v2.into(), registered_at: at(3) },
        ]
    );
}

pub async fn tasks_go_only_to_workers_with_their_labels_and_free_capacity(store: &dyn Store) {
    let gpu_eu = register(store, "gpu-eu", &["ml"], 8, "gpu=1,cpu=4", "region=eu").await;
    let plain = register(store, "plain", &["ml"], 8, "", "").await;
    let eu_gpu = submit_one(store, needing("ml", "gpu=1", "region=eu"), at(0)).await;
    let any_gpu = submit_one(store, needing("ml", "gpu=1", ""), at(1)).await;
    let anything = submit_one(store, spec("ml"), at(2)).await;
    let two_gpus = submit_one(store, needing("ml", "gpu=2", ""), at(3)).await;
    // The plain worker has no gpu: only the task that asks for nothing.
    let got = fetch_as(store, &plain, "ml", 10, Duration::ZERO, 10).await;
    assert_eq!(ids(&got), vec![anything.id]);
    // The gpu worker takes one gpu task; the second waits for the gpu, the third never fits.
    let got = fetch_as(store, &gpu_eu, "ml", 10, Duration::ZERO, 20).await;
    assert_eq!(ids(&got), vec![eu_gpu.id], "one gpu: one gpu task at a time");
    assert!(fetch_as(store, &gpu_eu, "ml", 10, Duration::ZERO, 30).await.is_empty());
    // Capacity comes back when the task ends.
    report(store, &got[0], success("1"), at(40)).await.unwrap();
    let got = fetch_as(store, &gpu_eu, "ml", 10, Duration::ZERO, 50).await;
    assert_eq!(ids(&got), vec![any_gpu.id]);
    // However it ends: an expired lease frees it too.
    store.expire_leases(ExpireLeases { now: at(60_000), limit: 100 }).await.unwrap();
    store.promote_due(PromoteDue { now: at(120_000), limit: 100 }).await.unwrap();
    let again = fetch_as(store, &gpu_eu, "ml", 10, Duration::ZERO, 120_000).await;
    // (The plain task's lease expired too: it is back, and this worker may run it.)
    assert_eq!(
        ids(&again),
        ids(&[any_gpu.clone(), anything.clone()]),
        "retried after its lease expired, on the freed gpu"
    );
    // The task no one can run is listed with its needs, for "unschedulable".
    let waiting = store.ready_needs().await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!((waiting[0].queue.as_str(), waiting[0].count), ("ml", 1));
    assert_eq!(waiting[0].needs.resources.get("gpu"), 2);
    assert_eq!(store.get(two_gpus.id).await.unwrap().state, TaskState::Ready);
    let workers = store.list_workers().await.unwrap();
    let w = workers.iter().find(|w| w.id == gpu_eu).unwrap();
    assert_eq!((w.capacity.get("gpu"), w.labels.get("region").map(String::as_str)), (1, Some("eu")));
}

pub async fn a_big_task_keeps_the_capacity_it_waits_for(store: &dyn Store) {
    let w = register(store, "w", &["batch"], 16, "cpu=4,memory_mb=1000", "").await;
    for i in 0..3 {
        submit_one(store, needing("batch", "cpu=1", ""), at(i)).await;
    }
    let first = fetch_as(store, &w, "batch", 16, Duration::ZERO, 10).await;
    assert_eq!(first.len(), 3, "three of four cpus busy");
    let big = submit_one(store, NewTask { priority: 5, ..needing("batch", "cpu=4", "") }, at(20)).await;
    let small = submit_one(store, needing("batch", "cpu=1", ""), at(21)).await;
    let memory = submit_one(store, needing("batch", "memory_mb=100", ""), at(22)).await;
    // The small task would fit the free cpu, but it would delay the big one: only the task that
    // needs no cpu runs beside it.
    let got = fetch_as(store, &w, "batch", 16, Duration::ZERO, 30).await;
    assert_eq!(ids(&got), vec![memory.id]);
    for t in &first {
        report(store, t, success("1"), at(40)).await.unwrap();
    }
    let got = fetch_as(store, &w, "batch", 16, Duration::ZERO, 50).await;
    assert_eq!(ids(&got), vec![big.id], "all four cpus free: the big task, and nothing beside it");
    report(store, &got[0], success("1"), at(60)).await.unwrap();
    assert_eq!(ids(&fetch_as(store, &w, "batch", 16, Duration::ZERO, 70).await), vec![small.id]);
}

pub async fn tasks_a_worker_says_it_finished_free_their_resources(store: &dyn Store) {
    let w = register(store, "w", &["q"], 8, "cpu=1", "").await;
    let other = register(store, "other", &["q"], 8, "cpu=1", "").await;
    submit_one(store, needing("q", "cpu=1", ""), at(0)).await;
    let second = submit_one(store, needing("q", "cpu=1", ""), at(1)).await;
    let first = fetch_as(store, &w, "q", 8, Duration::ZERO, 10).await;
    assert_eq!(first.len(), 1);
    assert!(fetch_as(store, &w, "q", 8, Duration::ZERO, 20).await.is_empty(), "its one cpu is in use");
    // Another worker naming the task frees nothing: it is not running there.
    let fetch = |worker: &str, finished: Vec<taskwarden_core::TaskId>| FetchTasks {
        worker_id: worker.into(),
        queues: vec!["q".into()],
        limit: 8,
        wait: Duration::ZERO,
        now: at(30),
        finished,
    };
    let mut got = store.fetch(fetch(&other, vec![first[0].id])).await.unwrap();
    assert_eq!(ids(&got), vec![second.id], "the other worker's cpu was free anyway");
    report(store, &got.remove(0), success("1"), at(40)).await.unwrap();
    submit_one(store, needing("q", "cpu=1", ""), at(50)).await;
    // The worker finished its task; the report is on its way. Its cpu is free for this fetch.
    assert_eq!(store.fetch(fetch(&w, vec![first[0].id])).await.unwrap().len(), 1);
}

pub async fn concurrency_limits_hold_per_queue_and_per_key(store: &dyn Store) {
    limit(store, "mail", QueueLimits { concurrency: Some(3), key_concurrency: Some(2), ..Default::default() }).await;
    let mut specs: Vec<NewTask> = (0..3).map(|_| keyed("mail", Some("customer-42"), None)).collect();
    specs.extend((0..2).map(|_| keyed("mail", Some("customer-7"), None)));
    specs.push(keyed("mail", None, None));
    submit(store, specs, at(0)).await;
    let first = fetch_as(store, "w1", "mail", 10, Duration::ZERO, 10).await;
    assert_eq!(first.len(), 3, "the queue runs at most 3 at once");
    let per_key = |key: &str| first.iter().filter(|t| t.needs.concurrency_key.as_deref() == Some(key)).count();
    assert_eq!(per_key("customer-42"), 2, "at most 2 running for one customer");
    // Another worker (or node) finds the limit reached.
    assert!(fetch_as(store, "w2", "mail", 10, Duration::ZERO, 20).await.is_empty());
    // One ends: one more starts, never a third for customer 42 while two of its run.
    let ended = first.iter().find(|t| t.needs.concurrency_key.as_deref() != Some("customer-42")).unwrap();
    report(store, ended, success("1"), at(30)).await.unwrap();
    let next = fetch_as(store, "w2", "mail", 10, Duration::ZERO, 40).await;
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].needs.concurrency_key.as_deref(), Some("customer-42"));
    let queues = store.list_queues(at(50)).await.unwrap();
    let mail = queues.iter().find(|q| q.name == "mail").unwrap();
    assert_eq!(mail.limits.concurrency, Some(3));
    assert_eq!(mail.running, 3);
}

pub async fn rate_limits_let_a_burst_through_then_tasks_wait_for_tokens(store: &dyn Store) {
    let rate = |s: &str| Some(s.parse().unwrap());
    limit(store, "api", QueueLimits { rate: rate("2/s"), key_rate: rate("1/s"), ..Default::default() }).await;
    submit(store, (0..5).map(|_| keyed("api", None, None)).collect(), at(0)).await;
    assert_eq!(fetch_as(store, "w1", "api", 10, Duration::ZERO, 0).await.len(), 2, "a burst of 2");
    assert!(fetch_as(store, "w1", "api", 10, Duration::ZERO, 100).await.is_empty(), "no token yet");
    assert_eq!(fetch_as(store, "w1", "api", 10, Duration::ZERO, 500).await.len(), 1, "one token per 500 ms");
    // A waiting fetch is answered when the next token comes, without any new task arriving.
    let started = std::time::Instant::now();
    let got = fetch_as(store, "w1", "api", 10, Duration::from_secs(5), 600).await;
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    // Per key: one per second for each api key, the queue's own limit still applying.
    submit(store, vec![keyed("api", None, Some("key-a")), keyed("api", None, Some("key-a"))], at(0)).await;
    let got = fetch_as(store, "w1", "api", 10, Duration::ZERO, 60_000).await;
    let key_a = got.iter().filter(|t| t.needs.rate_key.as_deref() == Some("key-a")).count();
    assert_eq!(key_a, 1, "{got:?}");
    for t in store
        .list(ListTasks {
            filter: TaskSearch { queue: Some("api".into()), ..Default::default() },
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
    {
        assert_ne!(t.state, TaskState::Failed, "a rate-limited task waits; it never fails");
    }
}

pub async fn a_handed_off_task_goes_to_the_least_loaded_waiting_worker(store: &dyn Store) {
    let busy = register(store, "busy", &["lb"], 4, "", "").await;
    let idle = register(store, "idle", &["lb"], 4, "", "").await;
    submit(store, (0..3).map(|_| spec("lb")).collect(), at(0)).await;
    assert_eq!(fetch_as(store, &busy, "lb", 3, Duration::ZERO, 0).await.len(), 3);
    // Both wait: the busy worker for its last slot, the idle one for all four.
    let wait = Duration::from_millis(1500);
    let (from_busy, from_idle, _) =
        tokio::join!(fetch_as(store, &busy, "lb", 1, wait, 10), fetch_as(store, &idle, "lb", 4, wait, 10), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            submit_one(store, spec("lb"), at(20)).await
        });
    assert_eq!((from_busy.len(), from_idle.len()), (0, 1), "the idle worker gets the task");
}

fn cron_spec(name: &str) -> CronSpec {
    CronSpec {
        name: name.into(),
        schedule: "*/10 * * * * *".into(),
        timezone: "UTC".into(),
        misfire: Misfire::Skip,
        catch_up: None,
        task: SubmitTask { queue: "cron".into(), kind: "echo".into(), ..Default::default() },
    }
}

pub async fn a_cron_tick_fires_once_however_many_nodes_fire_it(store: &dyn Store) {
    let created = store.create_cron(CreateCron { spec: cron_spec("nightly"), next_run: at(10_000), now: at(0) }).await;
    assert_eq!(created.unwrap().next_run_at, at(10_000));
    let again = store.create_cron(CreateCron { spec: cron_spec("nightly"), next_run: at(10_000), now: at(0) }).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "a name is taken once");
    let tick = |n: u32| {
        let mut t = spec("cron");
        t.idempotency_key = Some(format!("cron/nightly/{n}"));
        t.run_at = Some(at(10_000));
        FireCron {
            name: "nightly".into(),
            expected_next_run: at(10_000),
            next_run: Some(at(20_000)),
            tasks: vec![t],
            idempotency_window: Duration::from_secs(3600),
            now: at(10_001),
        }
    };
    // Four nodes fire the same tick at once: one does.
    let fired = futures_join4(
        store.fire_cron(tick(1)),
        store.fire_cron(tick(2)),
        store.fire_cron(tick(3)),
        store.fire_cron(tick(4)),
    )
    .await;
    assert_eq!(fired.iter().filter(|f| *f.as_ref().unwrap()).count(), 1, "{fired:?}");
    let tasks = store
        .list(ListTasks {
            filter: TaskSearch { queue: Some("cron".into()), ..Default::default() },
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks.tasks.len(), 1, "one task per tick");
    let listed = store.list_crons().await.unwrap();
    assert_eq!((listed.len(), listed[0].next_run_at, listed[0].last_fired_at), (1, at(20_000), Some(at(10_000))));
    // A paused schedule does not fire; resumed, it goes on from the tick it is given.
    let paused = store.pause_cron(PauseCron { name: "nightly".into(), paused: true, next_run: at(20_000) }).await;
    assert!(paused.unwrap().paused);
    let mut late = tick(5);
    late.expected_next_run = at(20_000);
    assert!(!store.fire_cron(late).await.unwrap());
    store.pause_cron(PauseCron { name: "nightly".into(), paused: false, next_run: at(40_000) }).await.unwrap();
    assert_eq!(store.list_crons().await.unwrap()[0].next_run_at, at(40_000));
    store.delete_cron("nightly").await.unwrap();
    assert!(matches!(store.delete_cron("nightly").await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.pause_cron(PauseCron { name: "nightly".into(), paused: true, next_run: at(0) }).await,
        Err(StoreError::NotFound)
    ));
}

async fn futures_join4<T>(
    a: impl std::future::Future<Output = T>,
    b: impl std::future::Future<Output = T>,
    c: impl std::future::Future<Output = T>,
    d: impl std::future::Future<Output = T>,
) -> Vec<T> {
    let (a, b, c, d) = tokio::join!(a, b, c, d);
    vec![a, b, c, d]
}

pub async fn a_cron_schedule_is_changed_in_place(store: &dyn Store) {
    store.create_cron(CreateCron { spec: cron_spec("hourly"), next_run: at(10_000), now: at(0) }).await.unwrap();
    store.pause_cron(PauseCron { name: "hourly".into(), paused: true, next_run: at(10_000) }).await.unwrap();
    let mut spec = cron_spec("hourly");
    spec.schedule = "0 0 * * * *".into();
    spec.task.priority = Some(7);
    let changed = store.update_cron(UpdateCron { spec, next_run: at(3_600_000) }).await.unwrap();
    assert_eq!((changed.spec.schedule.as_str(), changed.next_run_at), ("0 0 * * * *", at(3_600_000)));
    assert_eq!(changed.spec.task.priority, Some(7));
    assert!(changed.paused, "still paused");
    let listed = store.list_crons().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec.task.priority, Some(7));
    let missing = store.update_cron(UpdateCron { spec: cron_spec("nosuch"), next_run: at(1) }).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

pub async fn only_a_lost_worker_holding_nothing_can_be_removed(store: &dyn Store) {
    let lost = register(store, "lost", &["rm"], 1, "", "").await;
    let busy = register(store, "busy", &["rm"], 1, "", "").await;
    let live = store
        .register_worker(RegisterWorker {
            name: "live".into(),
            owner: None,
            queues: vec!["rm".into()],
            concurrency: 1,
            capacity: Default::default(),
            labels: Default::default(),
            kinds: Vec::new(),
            schemas: Default::default(),
            now: at(10_000),
        })
        .await
        .unwrap()
        .id;
    submit_one(store, spec("rm"), at(0)).await;
    assert_eq!(fetch_as(store, &busy, "rm", 1, Duration::ZERO, 1).await.len(), 1);
    let remove = |id: &str| store.remove_worker(RemoveWorker { id: id.into(), lost_before: at(5_000) });
    remove(&lost).await.unwrap();
    let ids: Vec<String> = store.list_workers().await.unwrap().into_iter().map(|w| w.id).collect();
    assert!(!ids.contains(&lost) && ids.contains(&busy) && ids.contains(&live), "{ids:?}");
    assert!(matches!(remove(&lost).await, Err(StoreError::NotFound)), "gone already");
    assert!(matches!(remove(&live).await, Err(StoreError::Conflict(_))), "seen since: live");
    assert!(matches!(remove(&busy).await, Err(StoreError::Conflict(_))), "holds a running task");
    assert!(matches!(remove("w-nobody").await, Err(StoreError::NotFound)));
}
