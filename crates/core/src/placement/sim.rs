//! A deterministic simulation of placement: tasks arrive, [`place`] assigns them, they run for
//! their length and give their resources back, all in virtual time (no clock, no I/O). It reports
//! how close the schedule came to the best possible and how fairly it treated queues and
//! priorities.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Candidate, Labels, Policy, Resources, Share, WorkerView, place};
use crate::time::Timestamp;

/// The resource that measures work: a task's work is its `cpu` times its length.
const WORK: &str = "cpu";

#[derive(Clone, Debug)]
pub struct SimTask {
    pub queue: String,
    pub priority: i32,
    pub arrives: Duration,
    pub runs_for: Duration,
    /// Must include `cpu` >= 1.
    pub resources: Resources,
}

#[derive(Clone, Debug)]
pub struct SimWorker {
    pub queues: Vec<String>,
    pub capacity: Resources,
    pub slots: u32,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub tasks: Vec<SimTask>,
    pub workers: Vec<SimWorker>,
    pub weights: BTreeMap<String, u32>,
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    pub makespan: Duration,
    /// No schedule can finish sooner: the larger of all work over all capacity, and the latest
    /// arrival plus length of any task.
    pub lower_bound: Duration,
    /// Work done over capacity available until the makespan.
    pub utilisation: f64,
    pub worst_wait_by_priority: BTreeMap<i32, Duration>,
    pub worst_wait_by_queue: BTreeMap<String, Duration>,
    /// Each queue's share of the tasks started while every weighted queue had tasks waiting.
    pub contended_share: BTreeMap<String, f64>,
}

impl SimReport {
    /// The makespan over its lower bound: 1.0 is a perfect schedule.
    pub fn stretch(&self) -> f64 {
        self.makespan.as_secs_f64() / self.lower_bound.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn at(d: Duration) -> Timestamp {
    Timestamp::EPOCH.saturating_add(d)
}

pub fn simulate(w: &Workload) -> SimReport {
    let n = w.tasks.len();
    let capacity: u64 = w.workers.iter().map(|x| x.capacity.get(WORK)).sum();
    let work: f64 = w.tasks.iter().map(|t| t.resources.get(WORK) as f64 * t.runs_for.as_secs_f64()).sum();
    let latest = w.tasks.iter().map(|t| t.arrives + t.runs_for).max().unwrap_or_default();
    let lower_bound = latest.max(Duration::from_secs_f64(work / capacity.max(1) as f64));

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (w.tasks[i].arrives, i));
    let mut arrivals = order.into_iter().peekable();
    let mut ready: Vec<usize> = Vec::new();
    let mut running: Vec<(Duration, usize, usize)> = Vec::new(); // (ends, task, worker)
    let mut workers: Vec<WorkerView> = w
        .workers
        .iter()
        .map(|x| WorkerView {
            kinds: Vec::new(),
            queues: x.queues.clone(),
            capacity: x.capacity.clone(),
            used: Resources::default(),
            labels: Labels::new(),
            free_slots: x.slots,
            running: 0,
        })
        .collect();
    let mut shares: BTreeMap<String, Share> =
        w.weights.iter().map(|(q, weight)| (q.clone(), Share { weight: *weight, served: 0 })).collect();
    let mut waits_p: BTreeMap<i32, Duration> = BTreeMap::new();
    let mut waits_q: BTreeMap<String, Duration> = BTreeMap::new();
    let mut contended: BTreeMap<String, u64> = BTreeMap::new();
    let mut now = Duration::ZERO;
    let mut makespan = Duration::ZERO;
    loop {
        while let Some(&i) = arrivals.peek() {
            if w.tasks[i].arrives > now {
                break;
            }
            ready.push(i);
            arrivals.next();
        }
        let candidates: Vec<Candidate> = ready
            .iter()
            .map(|&i| {
                let t = &w.tasks[i];
                Candidate {
                    kind: None,
                    queue: t.queue.clone(),
                    priority: t.priority,
                    ready_since: at(t.arrives),
                    resources: t.resources.clone(),
                    labels: Labels::new(),
                }
            })
            .collect();
        let placed = place(&candidates, &workers, &shares, &w.policy, at(now));
        let all_busy = w.weights.keys().all(|q| ready.iter().any(|&i| &w.tasks[i].queue == q));
        let mut started = vec![false; ready.len()];
        for &(c, wk) in &placed.assigned {
            let task = ready[c];
            let t = &w.tasks[task];
            started[c] = true;
            let worker = &mut workers[wk];
            worker.used.add(&t.resources);
            worker.free_slots -= 1;
            worker.running += 1;
            running.push((now + t.runs_for, task, wk));
            if let Some(s) = shares.get_mut(&t.queue) {
                s.served += 1;
            }
            let wait = now - t.arrives;
            let worst = waits_p.entry(t.priority).or_default();
            *worst = (*worst).max(wait);
            let worst = waits_q.entry(t.queue.clone()).or_default();
            *worst = (*worst).max(wait);
            if all_busy {
                *contended.entry(t.queue.clone()).or_default() += 1;
            }
        }
        let mut i = 0;
        ready.retain(|_| {
            i += 1;
            !started[i - 1]
        });
        let next_arrival = arrivals.peek().map(|&i| w.tasks[i].arrives);
        let next_end = running.iter().map(|r| r.0).min();
        let Some(next) = [next_arrival, next_end].into_iter().flatten().min() else { break };
        now = next;
        running.retain(|&(ends, task, wk)| {
            if ends > now {
                return true;
            }
            let worker = &mut workers[wk];
            let r = &w.tasks[task].resources;
            for (k, v) in &r.0 {
                *worker.used.0.get_mut(k).expect("held") -= v;
            }
            worker.free_slots += 1;
            worker.running -= 1;
            makespan = makespan.max(ends);
            false
        });
        if ready.is_empty() && running.is_empty() && arrivals.peek().is_none() {
            break;
        }
    }
    let total: u64 = contended.values().sum();
    SimReport {
        makespan,
        lower_bound,
        utilisation: work / (capacity.max(1) as f64 * makespan.as_secs_f64().max(f64::MIN_POSITIVE)),
        worst_wait_by_priority: waits_p,
        worst_wait_by_queue: waits_q,
        contended_share: contended.into_iter().map(|(q, c)| (q, c as f64 / total.max(1) as f64)).collect(),
    }
}

/// A mixed workload, the same for a given seed: heterogeneous workers; a flood of small
/// low-priority batch tasks; a steady stream of interactive tasks at mixed priorities; and big
/// tasks that need a whole large worker. `scale` multiplies the task counts.
pub fn mixed_workload(scale: usize, seed: u64) -> Workload {
    let mut rng = seed.max(1);
    let mut next = move |n: u64| {
        // xorshift64: deterministic, no dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let secs = Duration::from_secs;
    let cpu = |n: u64| Resources::of([(WORK, n)]);
    let queues = |qs: &[&str]| qs.iter().map(|q| q.to_string()).collect::<Vec<_>>();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(SimWorker { queues: queues(&["batch", "interactive"]), capacity: cpu(8), slots: 64 });
    }
    for _ in 0..2 {
        workers.push(SimWorker { queues: queues(&["batch", "interactive", "big"]), capacity: cpu(16), slots: 64 });
    }
    let mut tasks = Vec::new();
    // The flood: all at once at the start.
    for _ in 0..800 * scale {
        let runs_for = secs(1 + next(4));
        tasks.push(SimTask {
            queue: "batch".into(),
            priority: 0,
            arrives: Duration::ZERO,
            runs_for,
            resources: cpu(1),
        });
    }
    // Interactive work arriving throughout, at mixed priorities.
    for i in 0..200 * scale as u64 {
        tasks.push(SimTask {
            queue: "interactive".into(),
            priority: next(3) as i32 - 1,
            arrives: Duration::from_millis(i * 50 / scale as u64),
            runs_for: secs(1 + next(2)),
            resources: cpu(1 + next(2)),
        });
    }
    // Big tasks: each needs a whole large worker.
    for i in 0..4 * scale as u64 {
        tasks.push(SimTask {
            queue: "big".into(),
            priority: 0,
            arrives: secs(i * 2),
            runs_for: secs(8),
            resources: cpu(16),
        });
    }
    let weights = [("batch", 1), ("interactive", 3), ("big", 1)].into_iter().map(|(q, w)| (q.to_string(), w)).collect();
    Workload { tasks, workers, weights, policy: Policy { aging: Some(secs(10)) } }
}

/// Two queues, both with more work than the workers can take, weighted 3:1: the test of shares.
pub fn contended_workload(per_queue: usize) -> Workload {
    let cpu1 = Resources::of([(WORK, 1)]);
    let mut tasks = Vec::new();
    for queue in ["heavy", "light"] {
        for _ in 0..per_queue {
            tasks.push(SimTask {
                queue: queue.into(),
                priority: 0,
                arrives: Duration::ZERO,
                runs_for: Duration::from_secs(1),
                resources: cpu1.clone(),
            });
        }
    }
    let workers = vec![SimWorker {
        queues: vec!["heavy".into(), "light".into()],
        capacity: Resources::of([(WORK, 8)]),
        slots: 8,
    }];
    let weights = [("heavy".to_string(), 3), ("light".to_string(), 1)].into_iter().collect();
    Workload { tasks, workers, weights, policy: Policy { aging: None } }
}
