use proptest::prelude::*;

use super::*;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn worker(queues: &[&str], capacity: &[(&str, u64)], slots: u32) -> WorkerView {
    WorkerView {
        kinds: Vec::new(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        capacity: Resources::of(capacity.iter().copied()),
        used: Resources::default(),
        labels: Labels::new(),
        free_slots: slots,
        running: 0,
    }
}

fn task(queue: &str, priority: i32, ready_ms: i64, resources: &[(&str, u64)]) -> Candidate {
    Candidate {
        kind: None,
        queue: queue.into(),
        priority,
        ready_since: at(ready_ms),
        resources: Resources::of(resources.iter().copied()),
        labels: Labels::new(),
    }
}

fn shares(weights: &[(&str, u32)]) -> BTreeMap<String, Share> {
    weights.iter().map(|(q, w)| (q.to_string(), Share { weight: *w, served: 0 })).collect()
}

const NO_AGING: Policy = Policy { aging: None };

#[test]
fn unschedulable_tasks_say_why() {
    let mut eu = worker(&["q"], &[("gpu", 1), ("memory_mb", 1024)], 4);
    eu.labels.insert("region".into(), "eu".into());
    let workers = [eu];
    let reason = |t: Candidate| unschedulable_reason(&t, &workers);
    assert_eq!(reason(task("q", 0, 0, &[("gpu", 1)])), None);
    assert_eq!(reason(task("q", 0, 0, &[("gpu", 2)])).unwrap(), "no live worker has gpu >= 2");
    assert_eq!(reason(task("other", 0, 0, &[])).unwrap(), "no live worker serves queue other");
    let mut us = task("q", 0, 0, &[]);
    us.labels.insert("region".into(), "us".into());
    assert_eq!(reason(us).unwrap(), "no live worker has labels region=us");
    assert_eq!(reason(task("q", 0, 0, &[("license_seat", 1)])).unwrap(), "no live worker has license_seat >= 1");
    let split = [worker(&["q"], &[("gpu", 2)], 1), worker(&["q"], &[("memory_mb", 4096)], 1)];
    let both = task("q", 0, 0, &[("gpu", 2), ("memory_mb", 2048)]);
    assert_eq!(
        unschedulable_reason(&both, &split).unwrap(),
        "no live worker has gpu >= 2 and memory_mb >= 2048 together"
    );
}

#[test]
fn an_unschedulable_task_is_placed_once_a_worker_can_run_it() {
    let tasks = [task("q", 0, 0, &[("gpu", 2)])];
    let small = [worker(&["q"], &[("gpu", 1)], 4)];
    let p = place(&tasks, &small, &BTreeMap::new(), &NO_AGING, at(1));
    assert_eq!(p.unschedulable, vec![(0, "no live worker has gpu >= 2".to_string())]);
    let bigger = [worker(&["q"], &[("gpu", 1)], 4), worker(&["q"], &[("gpu", 4)], 4)];
    let p = place(&tasks, &bigger, &BTreeMap::new(), &NO_AGING, at(1));
    assert_eq!(p.assigned, vec![(0, 1)]);
}

#[test]
fn aging_lets_a_low_priority_task_overtake_after_a_bounded_wait() {
    let policy = Policy { aging: Some(Duration::from_secs(10)) };
    let old_low = task("q", 0, 0, &[]);
    let new_high = task("q", 3, 35_000, &[]);
    assert_eq!(policy.effective_priority(&old_low, at(35_000)), 3);
    let workers = [worker(&["q"], &[], 1)];
    let p = place(&[new_high.clone(), old_low.clone()], &workers, &BTreeMap::new(), &policy, at(35_000));
    assert_eq!(p.assigned, vec![(1, 0)], "three aging steps make it equal, and it waited longer");
    let p = place(&[new_high, old_low], &workers, &BTreeMap::new(), &policy, at(25_000));
    assert_eq!(p.assigned, vec![(0, 0)], "two steps are not enough yet");
}

#[test]
fn the_least_loaded_worker_gets_the_task() {
    let mut busy = worker(&["q"], &[("cpu", 8)], 8);
    busy.used = Resources::of([("cpu", 6)]);
    busy.running = 3;
    let idle = worker(&["q"], &[("cpu", 8)], 8);
    let p = place(&[task("q", 0, 0, &[("cpu", 1)])], &[busy, idle], &BTreeMap::new(), &NO_AGING, at(0));
    assert_eq!(p.assigned, vec![(0, 1)]);
}

#[test]
fn a_big_task_reserves_a_worker_that_small_ones_then_skip() {
    let mut a = worker(&["q"], &[("cpu", 4)], 8);
    a.used = Resources::of([("cpu", 2)]);
    a.running = 1;
    let mut b = worker(&["q"], &[("cpu", 4)], 8);
    b.used = Resources::of([("cpu", 3)]);
    b.running = 1;
    let tasks = [task("q", 5, 0, &[("cpu", 4)]), task("q", 0, 1, &[("cpu", 1)]), task("q", 0, 2, &[("cpu", 1)])];
    let p = place(&tasks, &[a, b], &BTreeMap::new(), &NO_AGING, at(10));
    assert_eq!(p.reserved, vec![(0, 0)], "worker 0 has the most cpu free: it is held for the big task");
    assert_eq!(p.assigned, vec![(1, 1)], "a small task backfills the other worker; no cpu task lands on the held one");
}

#[test]
fn a_reserved_worker_still_runs_work_that_does_not_delay_the_big_task() {
    let mut a = worker(&["q"], &[("cpu", 4), ("memory_mb", 1000)], 8);
    a.used = Resources::of([("cpu", 2)]);
    a.running = 1;
    let tasks =
        [task("q", 5, 0, &[("cpu", 4)]), task("q", 0, 1, &[("cpu", 1)]), task("q", 0, 2, &[("memory_mb", 100)])];
    let p = place(&tasks, &[a], &BTreeMap::new(), &NO_AGING, at(10));
    assert_eq!(p.reserved, vec![(0, 0)]);
    assert_eq!(
        p.assigned,
        vec![(2, 0)],
        "the memory task backfills; the cpu one would take what the big one waits for"
    );
}

#[test]
fn weights_share_out_contended_slots() {
    let mut tasks = Vec::new();
    for i in 0..100 {
        tasks.push(task("heavy", 0, i, &[]));
        tasks.push(task("light", 0, i, &[]));
    }
    let workers = [worker(&["heavy", "light"], &[], 40)];
    let p = place(&tasks, &workers, &shares(&[("heavy", 3), ("light", 1)]), &NO_AGING, at(1_000));
    let heavy = p.assigned.iter().filter(|(t, _)| tasks[*t].queue == "heavy").count();
    assert_eq!((heavy, p.assigned.len() - heavy), (30, 10));
}

fn arb_resources() -> impl Strategy<Value = Resources> {
    (0u64..4, 0u64..3).prop_map(|(cpu, gpu)| Resources::of([("cpu", cpu), ("gpu", gpu)]))
}

fn arb_worker() -> impl Strategy<Value = WorkerView> {
    (arb_resources(), 0u32..6, proptest::bool::ANY, proptest::bool::ANY).prop_map(|(capacity, slots, eu, both)| {
        let queues: &[&str] = if both { &["a", "b"] } else { &["a"] };
        let mut w = worker(queues, &[], slots);
        w.capacity = capacity;
        if eu {
            w.labels.insert("region".into(), "eu".into());
        }
        w
    })
}

fn arb_task() -> impl Strategy<Value = Candidate> {
    (proptest::bool::ANY, -2i32..3, 0i64..50, arb_resources(), proptest::bool::ANY).prop_map(
        |(in_a, priority, ready, resources, eu)| {
            let mut t = task(if in_a { "a" } else { "b" }, priority, ready, &[]);
            t.resources = resources;
            if eu {
                t.labels.insert("region".into(), "eu".into());
            }
            t
        },
    )
}

proptest! {
    #[test]
    fn never_overcommits_and_never_ignores_labels(
        workers in proptest::collection::vec(arb_worker(), 1..5),
        tasks in proptest::collection::vec(arb_task(), 0..40),
        wa in 1u32..5,
        wb in 1u32..5,
    ) {
        let p = place(&tasks, &workers, &shares(&[("a", wa), ("b", wb)]), &Policy::default(), at(100));
        let mut used: Vec<Resources> = workers.iter().map(|w| w.used.clone()).collect();
        let mut taken = vec![0u32; workers.len()];
        let mut seen = std::collections::HashSet::new();
        for &(t, w) in &p.assigned {
            prop_assert!(seen.insert(t), "task {} placed twice", t);
            let (task, worker) = (&tasks[t], &workers[w]);
            prop_assert!(worker.queues.contains(&task.queue));
            prop_assert!(task.labels.iter().all(|(k, v)| worker.labels.get(k) == Some(v)));
            used[w].add(&task.resources);
            taken[w] += 1;
            prop_assert!(used[w].fits_in(&worker.capacity), "worker {} over-committed", w);
            prop_assert!(taken[w] <= worker.free_slots);
        }
        for (t, _) in &p.unschedulable {
            prop_assert!(!workers.iter().any(|w| w.could_run(&tasks[*t])));
            prop_assert!(!seen.contains(t));
        }
    }

    #[test]
    fn among_tasks_that_fit_the_higher_priority_goes_first(
        priorities in proptest::collection::vec((-3i32..4, 0i64..100), 1..40),
        slots in 0u32..20,
    ) {
        let tasks: Vec<Candidate> = priorities.iter().map(|(p, r)| task("a", *p, *r, &[])).collect();
        let p = place(&tasks, &[worker(&["a"], &[], slots)], &BTreeMap::new(), &NO_AGING, at(1_000));
        prop_assert_eq!(p.assigned.len(), tasks.len().min(slots as usize));
        let key = |t: &Candidate| (std::cmp::Reverse(t.priority), t.ready_since);
        let worst_placed = p.assigned.iter().map(|(t, _)| key(&tasks[*t])).max();
        let placed: std::collections::HashSet<usize> = p.assigned.iter().map(|(t, _)| *t).collect();
        let best_left = (0..tasks.len()).filter(|i| !placed.contains(i)).map(|i| key(&tasks[i])).min();
        if let (Some(w), Some(b)) = (worst_placed, best_left) {
            prop_assert!(w <= b, "a better task was left behind");
        }
    }

    #[test]
    fn contended_slots_follow_the_weights(wa in 1u32..6, wb in 1u32..6, slots in 10u32..60) {
        let tasks: Vec<Candidate> = (0..200).map(|i| task(if i % 2 == 0 { "a" } else { "b" }, 0, i, &[])).collect();
        let p = place(&tasks, &[worker(&["a", "b"], &[], slots)], &shares(&[("a", wa), ("b", wb)]), &NO_AGING, at(1_000));
        let a = p.assigned.iter().filter(|(t, _)| tasks[*t].queue == "a").count() as f64;
        let expected = f64::from(slots) * f64::from(wa) / f64::from(wa + wb);
        prop_assert!((a - expected).abs() <= 1.0, "queue a got {} of {} slots, its weight says {:.1}", a, slots, expected);
    }
}

#[test]
fn the_mixed_workload_finishes_close_to_its_lower_bound_and_nobody_waits_forever() {
    let r = sim::simulate(&sim::mixed_workload(1, 7));
    eprintln!("{r:#?}");
    assert!(
        r.stretch() <= 1.10,
        "makespan {:?} is {:.3}x the lower bound {:?}",
        r.makespan,
        r.stretch(),
        r.lower_bound
    );
    assert!(r.utilisation >= 0.85, "utilisation {:.2}", r.utilisation);
    let low = r.worst_wait_by_priority[&-1];
    assert!(low <= r.makespan / 2, "low-priority work waited {low:?} of a {:?} run", r.makespan);
}

#[test]
fn contended_queues_get_work_by_weight() {
    let r = sim::simulate(&sim::contended_workload(400));
    let heavy = r.contended_share["heavy"];
    assert!((heavy - 0.75).abs() <= 0.075, "heavy got {heavy:.3} of the work, its weight says 0.75");
}

#[test]
fn fair_take_follows_weights_across_small_fetches_and_idling_earns_no_credit() {
    let mut served = BTreeMap::new();
    let mut taken = BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        let lists = vec![("a".to_string(), 3, vec!["a"; 5]), ("b".to_string(), 1, vec!["b"; 5])];
        for item in fair_take(lists, &mut served, 1) {
            *taken.entry(item.to_string()).or_default() += 1;
        }
    }
    assert_eq!((taken["a"], taken["b"]), (30, 10), "one task a fetch still follows 3:1");
    // Queue c idles while a and b are served, then gets work: it shares, it does not take over.
    for _ in 0..10 {
        let lists = vec![("a".to_string(), 1, vec!["a"; 5]), ("c".to_string(), 1, vec![])];
        fair_take(lists, &mut served, 4);
    }
    let lists = vec![("a".to_string(), 1, vec!["a"; 10]), ("c".to_string(), 1, vec!["c"; 10])];
    let got = fair_take(lists, &mut served, 10);
    let c = got.iter().filter(|x| **x == "c").count();
    assert!((4..=6).contains(&c), "c got {c} of 10 after idling");
}

#[test]
fn only_old_tasks_that_aged_past_the_best_are_worth_loading() {
    let aging = Some(Duration::from_secs(10));
    let mut ids = crate::IdGenerator::new();
    let ready = |priority: i32, ms: i64, ids: &mut crate::IdGenerator| {
        let spec = crate::protocol::SubmitTask {
            queue: "q".into(),
            kind: "k".into(),
            priority: Some(priority),
            ..Default::default()
        }
        .validate(&crate::Limits::default(), at(ms))
        .unwrap();
        crate::Task::new(ids.next(at(ms), 1), spec, at(ms))
    };
    let old_low = ready(0, 0, &mut ids);
    let older_lower = ready(-5, 1, &mut ids);
    let best = vec![ready(2, 20_000, &mut ids), ready(2, 21_000, &mut ids)];
    let oldest: Vec<_> = [&old_low, &older_lower, &best[0]].iter().map(|t| (t.id, t.priority, t.run_at)).collect();
    assert!(aged_past(&best, &oldest, at(15_000), aging).is_empty(), "at 15 s the old task has aged to 1 < 2");
    assert_eq!(aged_past(&best, &oldest, at(25_000), aging), vec![old_low.id], "at 25 s it ties and waited longer");
}
