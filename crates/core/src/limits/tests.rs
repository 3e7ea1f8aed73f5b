use super::*;
use crate::placement::{Resources, parse_labels};
use crate::{NewTask, TaskId};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_micros(ms as i64 * 1000)
}

fn task(queue: &str, needs: crate::task::Needs) -> Task {
    let spec = NewTask {
        queue: queue.into(),
        kind: "k".into(),
        payload: serde_json::value::RawValue::from_string("null".into()).unwrap(),
        priority: 0,
        tags: vec![],
        idempotency_key: None,
        run_at: None,
        delay: Duration::ZERO,
        expires_at: None,
        max_attempts: 3,
        backoff: crate::Backoff::default(),
        timeout: Duration::from_secs(60),
        lease_timeout: Duration::from_secs(30),
        needs,
        traceparent: None,
    };
    Task::new(TaskId::from_bytes([1; 16]), spec, at(0))
}

fn keyed(queue: &str, concurrency_key: Option<&str>, rate_key: Option<&str>) -> Task {
    task(
        queue,
        crate::task::Needs {
            concurrency_key: concurrency_key.map(Into::into),
            rate_key: rate_key.map(Into::into),
            ..Default::default()
        },
    )
}

#[test]
fn rates_parse_and_print() {
    for (s, count, per_ms, shown) in [
        ("10/s", 10, 1000, "10/s"),
        ("600/m", 600, 60_000, "600/m"),
        ("5/h", 5, 3_600_000, "5/h"),
        ("3/500ms", 3, 500, "3/500ms"),
    ] {
        let r: Rate = s.parse().unwrap();
        assert_eq!((r.count, r.per), (count, Duration::from_millis(per_ms)), "{s}");
        assert_eq!(r.to_string(), shown);
    }
    for bad in ["", "10", "0/s", "x/s", "10/fortnight", "10/0s"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn a_bucket_allows_a_burst_then_one_token_per_interval() {
    let rate: Rate = "10/s".parse().unwrap();
    let mut b = Bucket::full(rate, at(0));
    for _ in 0..10 {
        b.take(rate, at(0)).unwrap();
    }
    let wait = b.take(rate, at(0)).unwrap_err();
    assert_eq!(wait, Duration::from_millis(100));
    assert!(b.take(rate, at(50)).is_err(), "half a token is not a token");
    b.take(rate, at(100)).unwrap();
    assert!(b.is_full_at(rate, at(10_000)));
    assert!(!b.is_full_at(rate, at(200)));
}

#[test]
fn queue_concurrency_counts_running_and_admitted() {
    let limits = BTreeMap::from([("q".to_owned(), QueueLimits { concurrency: Some(2), ..Default::default() })]);
    let mut gate = Gate::new(limits, None);
    gate.set_running("q", None, 1);
    let t = keyed("q", None, None);
    assert_eq!(gate.admit(&t, at(0)), Ok(()));
    assert_eq!(gate.admit(&t, at(0)), Err(Held::Concurrency));
    assert!(gate.held_for_concurrency);
    // Another queue is not limited.
    assert_eq!(gate.admit(&keyed("other", None, None), at(0)), Ok(()));
}

#[test]
fn key_concurrency_limits_each_key_separately() {
    let limits = BTreeMap::from([("q".to_owned(), QueueLimits { key_concurrency: Some(2), ..Default::default() })]);
    let mut gate = Gate::new(limits, None);
    let a = keyed("q", Some("customer-42"), None);
    let b = keyed("q", Some("customer-7"), None);
    assert_eq!(gate.needs_running(&[a.clone(), b.clone()]).len(), 2);
    assert_eq!(gate.admit(&a, at(0)), Ok(()));
    assert_eq!(gate.admit(&a, at(0)), Ok(()));
    assert_eq!(gate.admit(&a, at(0)), Err(Held::Concurrency));
    assert_eq!(gate.admit(&b, at(0)), Ok(()));
    // A task without a key is not held by a per-key limit.
    assert_eq!(gate.admit(&keyed("q", None, None), at(0)), Ok(()));
}

#[test]
fn rate_limits_hold_tasks_and_say_when_to_come_back() {
    let limits = BTreeMap::from([(
        "q".to_owned(),
        QueueLimits {
            rate: Some("100/s".parse().unwrap()),
            key_rate: Some("2/s".parse().unwrap()),
            ..Default::default()
        },
    )]);
    let mut gate = Gate::new(limits, None);
    let t = keyed("q", None, Some("api-key-1"));
    assert_eq!(gate.admit(&t, at(0)), Ok(()));
    assert_eq!(gate.admit(&t, at(0)), Ok(()));
    assert_eq!(gate.admit(&t, at(0)), Err(Held::Rate(Duration::from_millis(500))));
    assert_eq!(gate.retry_in, Some(Duration::from_millis(500)));
    // The queue bucket was not charged for the refused task.
    assert_eq!(gate.bucket("q", None).unwrap().tokens, 98.0);
    assert_eq!(gate.admit(&keyed("q", None, Some("api-key-2")), at(0)), Ok(()));
    assert_eq!(gate.changed_buckets().len(), 3);
}

#[test]
fn the_worker_must_have_the_labels_and_the_free_capacity() {
    let worker = WorkerFit {
        capacity: Resources::parse("capacity", "gpu=2,cpu=8").unwrap(),
        labels: parse_labels("labels", "region=eu").unwrap(),
        used: Resources::parse("used", "gpu=1").unwrap(),
    };
    let mut gate = Gate::new(BTreeMap::new(), Some(worker));
    let needs = |r: &str, l: &str| crate::task::Needs {
        resources: Resources::parse("r", r).unwrap(),
        labels: parse_labels("l", l).unwrap(),
        ..Default::default()
    };
    assert_eq!(gate.admit(&task("q", needs("gpu=3", "")), at(0)), Err(Held::Worker), "more than it has");
    assert_eq!(gate.admit(&task("q", needs("gpu=1", "region=us")), at(0)), Err(Held::Worker));
    assert!(gate.passed_over && !gate.held_for_concurrency, "another worker may take those");
    assert_eq!(gate.admit(&task("q", needs("gpu=1,cpu=4", "region=eu")), at(0)), Ok(()));
    assert_eq!(gate.admit(&task("q", needs("gpu=1", "")), at(0)), Err(Held::Capacity), "the gpu is taken now");
    assert!(gate.held_for_concurrency, "it waits for a running task to end");
    assert_eq!(gate.admit(&task("q", needs("cpu=4", "")), at(0)), Ok(()));
    assert_eq!(gate.admit(&task("q", needs("license_seat=1", "")), at(0)), Err(Held::Worker));
    // A task that asks for nothing fits anywhere.
    assert_eq!(gate.admit(&task("q", needs("", "")), at(0)), Ok(()));
    // Without a registered worker, only tasks that ask for nothing.
    let mut anonymous = Gate::new(BTreeMap::new(), None);
    assert_eq!(anonymous.admit(&task("q", needs("cpu=1", "")), at(0)), Err(Held::Worker));
}

#[test]
fn a_big_task_keeps_what_it_waits_for_from_the_tasks_behind_it() {
    let worker = WorkerFit {
        capacity: Resources::parse("capacity", "cpu=8,memory_mb=1000").unwrap(),
        used: Resources::parse("used", "cpu=6").unwrap(),
        ..Default::default()
    };
    let mut gate = Gate::new(BTreeMap::new(), Some(worker));
    let asks =
        |r: &str| task("q", crate::task::Needs { resources: Resources::parse("r", r).unwrap(), ..Default::default() });
    assert_eq!(gate.admit(&asks("cpu=4"), at(0)), Err(Held::Capacity), "2 cpu free of 8");
    // A small task would fit the 2 free cpus, but taking them would delay the big one.
    assert_eq!(gate.admit(&asks("cpu=1"), at(0)), Err(Held::Capacity));
    assert_eq!(gate.admit(&asks("cpu=1,memory_mb=10"), at(0)), Err(Held::Capacity));
    // Work that asks for none of what it waits for still runs (backfilling).
    assert_eq!(gate.admit(&asks("memory_mb=500"), at(0)), Ok(()));
    assert_eq!(gate.admit(&asks(""), at(0)), Ok(()));
    assert_eq!(gate.reserved.iter().collect::<Vec<_>>(), ["cpu"]);
    assert!(gate.held_for_concurrency);
    assert!(!gate.passed_over, "the tasks behind it wait too: looking further down finds nothing new");
}

#[test]
fn only_holds_by_key_send_a_fetch_further_down() {
    let limits = QueueLimits { concurrency: Some(1), key_concurrency: Some(1), ..Default::default() };
    let mut gate = Gate::new(BTreeMap::from([("q".to_owned(), limits)]), None);
    gate.set_running("q", Some("a"), 1);
    assert_eq!(gate.admit(&keyed("q", Some("a"), None), at(0)), Err(Held::Concurrency));
    assert!(gate.passed_over, "a task with another key may run");
    let mut gate = Gate::new(BTreeMap::from([("q".to_owned(), limits)]), None);
    gate.set_running("q", None, 1);
    assert_eq!(gate.admit(&keyed("q", Some("b"), None), at(0)), Err(Held::Concurrency));
    assert!(!gate.passed_over, "the queue is at its limit: nothing further down may run either");
}

#[test]
fn limits_validate_and_describe() {
    assert!(QueueLimits { concurrency: Some(0), ..Default::default() }.validate().is_err());
    let l = QueueLimits {
        concurrency: Some(10),
        key_concurrency: Some(2),
        rate: Some("100/s".parse().unwrap()),
        key_rate: Some("10/s".parse().unwrap()),
    };
    assert_eq!(l.describe(), "10 at once, 2 per key, 100/s, 10/s per key");
    let json = serde_json::to_string(&l).unwrap();
    assert_eq!(serde_json::from_str::<QueueLimits>(&json).unwrap(), l);
    assert_eq!(QueueLimits::default().describe(), "-");
}
