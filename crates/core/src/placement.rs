//! Placement: which ready task goes to which worker. A pure function of the ready tasks, the
//! workers' free capacity and the queues' weights, so every store applies it the same way and a
//! simulation can replay it in virtual time.
//!
//! The rules, in the order they apply:
//! 1. **Could it ever run?** A task no live worker could run (no worker serves its queue, has its
//!    labels, or has the capacity it asks for) is *unschedulable*, with the reason in words
//!    (`no live worker has gpu >= 2`). It is placed as soon as such a worker exists.
//! 2. **Priority with aging.** Within a queue, higher effective priority first, then the longest
//!    waiting. Effective priority is the priority plus one for every `aging` step the task has
//!    waited, so low-priority work waits a bounded time under a flood of high-priority work.
//! 3. **Fair share across queues.** Queues take turns by stride scheduling: the next task comes
//!    from the queue with the least work served per unit of weight, so under contention each
//!    queue gets work in proportion to its weight and a flood in one cannot starve another.
//! 4. **Least-loaded worker.** Of the workers that can take the task now, the one left least
//!    loaded (its dominant resource share after placing it is smallest).
//! 5. **Reservation for big tasks.** The first task of a queue that fits some worker's capacity
//!    but no worker's free capacity now reserves the worker with the most of what it needs free:
//!    that worker keeps the resources the task is short of (all of it, if it is short of slots),
//!    so a stream of small tasks cannot starve it. Tasks that ask for none of those still run
//!    there, and smaller tasks go to other workers (backfilling that does not delay it). A fetch
//!    applies the same rule to its one worker ([`crate::limits::Gate`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Amounts of named resources: `cpu`, `memory_mb`, `gpu`, or any name (`license_seat`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Resources(pub BTreeMap<String, u64>);

impl Resources {
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Resources {
        Resources(pairs.into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_owned(), n)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `gpu=2,memory_mb=512`; `field` names the input in the error.
    pub fn parse(field: &str, s: &str) -> Result<Resources, crate::ValidationError> {
        let mut out = BTreeMap::new();
        for (k, v) in pairs(field, s)? {
            let n: u64 = v.parse().map_err(|_| {
                crate::ValidationError::new(field, format!("{k}={v}: the amount must be a whole number"))
            })?;
            if n > 0 {
                out.insert(k, n);
            }
        }
        Ok(Resources(out))
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Whether every amount here is at most the same amount in `other`.
    pub fn fits_in(&self, other: &Resources) -> bool {
        self.0.iter().all(|(name, n)| *n <= other.get(name))
    }

    pub fn add(&mut self, other: &Resources) {
        for (name, n) in &other.0 {
            match self.0.get_mut(name) {
                Some(have) => *have += n,
                None => {
                    self.0.insert(name.clone(), *n);
                }
            }
        }
    }

    /// Takes `other` away (never below zero); amounts that reach zero go.
    pub fn remove(&mut self, other: &Resources) {
        for (name, n) in &other.0 {
            if let Some(have) = self.0.get_mut(name) {
                *have = have.saturating_sub(*n);
                if *have == 0 {
                    self.0.remove(name);
                }
            }
        }
    }

    /// How much of `name` is free of `capacity` when this much is used.
    pub fn free_in(&self, capacity: &Resources, name: &str) -> u64 {
        capacity.get(name).saturating_sub(self.get(name))
    }

    /// What is left of `capacity` when `self` is in use.
    pub fn free_of(&self, capacity: &Resources) -> Resources {
        Resources(capacity.0.iter().map(|(k, c)| (k.clone(), c.saturating_sub(self.get(k)))).collect())
    }
}

/// Labels a worker has, or a task requires (`region=eu`).
pub type Labels = BTreeMap<String, String>;

/// Parses labels written `region=eu,gpu_model=a100`; `field` names the input in the error.
pub fn parse_labels(field: &str, s: &str) -> Result<Labels, crate::ValidationError> {
    Ok(pairs(field, s)?.into_iter().collect())
}

fn pairs(field: &str, s: &str) -> Result<Vec<(String, String)>, crate::ValidationError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            }
            _ => Err(crate::ValidationError::new(field, format!("{p:?} is not name=value"))),
        })
        .collect()
}

/// Checks names and amounts of resources and labels a task or worker gives.
pub fn check_needs(field: &str, resources: &Resources, labels: &Labels) -> Result<(), crate::ValidationError> {
    let ok =
        |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
    for name in resources.0.keys() {
        if !ok(name) {
            return Err(crate::ValidationError::new(
                field,
                format!("resource name {name:?} must be 1-64 of a-z, 0-9, _-.:/"),
            ));
        }
    }
    for (k, v) in labels {
        if !ok(k) || !ok(v) {
            return Err(crate::ValidationError::new(
                field,
                format!("label {k}={v} must be 1-64 of a-z, 0-9, _-.:/ each side"),
            ));
        }
    }
    if let Some((name, n)) = resources.0.iter().find(|(_, n)| **n > crate::bounded::MAX_SAFE_INTEGER) {
        return Err(crate::ValidationError::new(
            field,
            format!("resource {name}={n} is larger than {} (2^53 - 1)", crate::bounded::MAX_SAFE_INTEGER),
        ));
    }
    if resources.0.len() > 32 || labels.len() > 32 {
        return Err(crate::ValidationError::new(field, "at most 32 resources and 32 labels"));
    }
    Ok(())
}

/// A live worker as placement sees it.
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub queues: Vec<String>,
    pub capacity: Resources,
    /// Resources held by the tasks it runs now.
    pub used: Resources,
    pub labels: Labels,
    /// Tasks it may still take (its free execution slots).
    pub free_slots: u32,
    /// Tasks it runs now.
    pub running: u32,
    /// The kinds it has handlers for; empty when it did not say (it takes any kind).
    pub kinds: Vec<String>,
}

impl WorkerView {
    /// Has a handler for the kind (or did not say which kinds it has).
    fn runs_kind(&self, t: &Candidate) -> bool {
        self.kinds.is_empty() || t.kind.as_ref().is_none_or(|k| self.kinds.contains(k))
    }

    fn serves(&self, t: &Candidate) -> bool {
        self.queues.contains(&t.queue)
            && self.runs_kind(t)
            && t.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// Could run the task when idle.
    fn could_run(&self, t: &Candidate) -> bool {
        self.serves(t) && t.resources.fits_in(&self.capacity)
    }

    /// Can run the task now.
    fn can_run_now(&self, t: &Candidate) -> bool {
        self.serves(t) && self.free_slots > 0 && t.resources.fits_in(&self.used.free_of(&self.capacity))
    }

    /// Its dominant share of slots and resources in use now: 0 when idle, 1 when full.
    pub fn busy(&self) -> f64 {
        let slots = f64::from(self.running) / f64::from(self.running + self.free_slots).max(1.0);
        self.capacity
            .0
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| self.used.get(k) as f64 / *c as f64)
            .fold(slots, f64::max)
    }

    /// Its dominant share of slots and resources in use (one more slot counted, as for a task
    /// about to be placed): lower is less loaded.
    pub fn load(&self) -> f64 {
        self.load_with(&Resources::default())
    }

    /// Its dominant share with `extra` placed on it: the largest fraction of any resource in use,
    /// or of its slots when the task asks for no resources.
    fn load_with(&self, extra: &Resources) -> f64 {
        let mut used = self.used.clone();
        used.add(extra);
        let slots = f64::from(self.running + 1) / f64::from(self.running + self.free_slots).max(1.0);
        self.capacity
            .0
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| used.get(k) as f64 / *c as f64)
            .fold(slots, f64::max)
    }
}

/// A ready task as placement sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub queue: String,
    pub priority: i32,
    /// When it became ready (its wait starts here).
    pub ready_since: Timestamp,
    pub resources: Resources,
    pub labels: Labels,
    /// Its kind, where it matters (workers that say which kinds they run take no other).
    pub kind: Option<String>,
}

/// A queue's share: its weight, and the work it was served recently (tasks started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub weight: u32,
    pub served: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A waiting task gains one priority level per `aging` waited; `None` turns aging off.
    pub aging: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { aging: Some(Duration::from_secs(10)) }
    }
}

impl Policy {
    /// The priority a task competes with at `now`.
    pub fn effective_priority(&self, t: &Candidate, now: Timestamp) -> i64 {
        aged_priority(t.priority, t.ready_since, now, self.aging)
    }
}

/// A priority plus one level for every `aging` step waited since `ready_since`.
pub fn aged_priority(priority: i32, ready_since: Timestamp, now: Timestamp, aging: Option<Duration>) -> i64 {
    let boost = match aging {
        Some(step) if !step.is_zero() => (now.duration_since(ready_since).as_micros() / step.as_micros()) as i64,
        _ => 0,
    };
    i64::from(priority) + boost
}

/// Of a queue's oldest ready tasks, given as (id, priority, ready since), those that would rank
/// above the last of `best` (the queue's best by plain priority) once aged: the only ones worth
/// loading, so aging costs nothing while no old task has caught up.
pub fn aged_past(
    best: &[crate::Task],
    oldest: &[(crate::TaskId, i32, Timestamp)],
    now: Timestamp,
    aging: Option<Duration>,
) -> Vec<crate::TaskId> {
    let key = |id: crate::TaskId, priority: i32, ready: Timestamp| {
        (std::cmp::Reverse(aged_priority(priority, ready, now, aging)), ready, id)
    };
    let Some(last) = best.iter().map(|t| key(t.id, t.priority, t.run_at)).max() else { return Vec::new() };
    oldest
        .iter()
        .filter(|(id, priority, ready)| key(*id, *priority, *ready) < last && !best.iter().any(|t| t.id == *id))
        .map(|(id, _, _)| *id)
        .collect()
}

/// Ranks ready tasks of one queue as placement does: highest aged priority first, then the longest
/// ready, then the oldest id. `tasks` may hold duplicates (from overlapping windows); they go.
pub fn rank_by_aged_priority(tasks: &mut Vec<crate::Task>, now: Timestamp, aging: Option<Duration>) {
    tasks.sort_by_key(|t| (std::cmp::Reverse(aged_priority(t.priority, t.run_at, now, aging)), t.run_at, t.id));
    tasks.dedup_by_key(|t| t.id);
}

/// The outcome of one placement round. Indexes refer to the slices given to [`place`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// (task, worker), in the order they were decided.
    pub assigned: Vec<(usize, usize)>,
    /// Tasks no live worker could ever run, with the reason.
    pub unschedulable: Vec<(usize, String)>,
    /// (worker, task): workers held back this round for a big task that does not fit anywhere yet.
    pub reserved: Vec<(usize, usize)>,
}

/// What a worker keeps for a big task it is reserved for.
#[derive(Clone, Debug)]
enum Kept {
    /// Everything: the task waits for a slot.
    All,
    /// These resources: tasks that ask for none of them may still run there.
    Resources(Vec<String>),
}

impl Kept {
    fn blocks(kept: &Option<Kept>, t: &Candidate) -> bool {
        match kept {
            None => false,
            Some(Kept::All) => true,
            Some(Kept::Resources(names)) => names.iter().any(|n| t.resources.get(n) > 0),
        }
    }
}

/// Takes up to `limit` items from several queues' lists (each best first) by weighted fair
/// share: each next item comes from the queue with the least served per unit of weight, counting
/// what `served` says it had before (and updating it). So a worker serving several queues takes
/// from them in proportion to their weights when all have work, across many small fetches as
/// well as within one large one. A queue with nothing to give is brought level with the
/// least-served busy queue, so idling earns it no credit to flood the others with later.
pub fn fair_take<T>(lists: Vec<(String, u32, Vec<T>)>, served: &mut BTreeMap<String, u64>, limit: usize) -> Vec<T> {
    let mut queues: Vec<(String, u64, std::collections::VecDeque<T>)> =
        lists.into_iter().map(|(q, w, items)| (q, u64::from(w.max(1)), items.into())).collect();
    let idle: Vec<bool> = queues.iter().map(|(_, _, items)| items.is_empty()).collect();
    level_idle(&queues, &idle, served);
    let mut out = Vec::new();
    while out.len() < limit {
        let next = queues
            .iter()
            .enumerate()
            .filter(|(_, (_, _, items))| !items.is_empty())
            .min_by(|(ia, (qa, wa, _)), (ib, (qb, wb, _))| {
                let (sa, sb) = (served.get(qa).copied().unwrap_or(0), served.get(qb).copied().unwrap_or(0));
                (u128::from(sa) * u128::from(*wb)).cmp(&(u128::from(sb) * u128::from(*wa))).then(ia.cmp(ib))
            })
            .map(|(i, _)| i);
        let Some(i) = next else { break };
        let (q, _, items) = &mut queues[i];
        out.push(items.pop_front().expect("a queue with items"));
        *served.entry(q.clone()).or_insert(0) += 1;
    }
    level_idle(&queues, &idle, served);
    out
}

/// Brings the queues that had nothing to give (`idle`) level with the least-served busy queue.
fn level_idle<T>(
    queues: &[(String, u64, std::collections::VecDeque<T>)],
    idle: &[bool],
    served: &mut BTreeMap<String, u64>,
) {
    let ratio = |q: &str, w: u64| served.get(q).copied().unwrap_or(0) as f64 / w as f64;
    let level = queues
        .iter()
        .zip(idle)
        .filter(|(_, idle)| !**idle)
        .map(|((q, w, _), _)| ratio(q, *w))
        .fold(f64::INFINITY, f64::min);
    if level.is_finite() {
        for ((q, w, _), _) in queues.iter().zip(idle).filter(|(_, idle)| **idle) {
            served.insert(q.clone(), (level * *w as f64).ceil() as u64);
        }
    }
}

/// Why no live worker could ever run `t`, or `None` if one could.
pub fn unschedulable_reason(t: &Candidate, workers: &[WorkerView]) -> Option<String> {
    if workers.iter().any(|w| w.could_run(t)) {
        return None;
    }
    let serving: Vec<&WorkerView> = workers.iter().filter(|w| w.queues.contains(&t.queue)).collect();
    if serving.is_empty() {
        return Some(format!("no live worker serves queue {}", t.queue));
    }
    let serving: Vec<&WorkerView> = serving.into_iter().filter(|w| w.runs_kind(t)).collect();
    if serving.is_empty() {
        let kind = t.kind.as_deref().unwrap_or_default();
        return Some(format!("no live worker in queue {} has a handler for kind {kind}", t.queue));
    }
    let labelled: Vec<&WorkerView> = serving.into_iter().filter(|w| w.serves(t)).collect();
    if labelled.is_empty() {
        let wanted: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Some(format!("no live worker has labels {}", wanted.join(",")));
    }
    for (name, n) in &t.resources.0 {
        if labelled.iter().all(|w| w.capacity.get(name) < *n) {
            return Some(format!("no live worker has {name} >= {n}"));
        }
    }
    let wanted: Vec<String> = t.resources.0.iter().map(|(k, n)| format!("{k} >= {n}")).collect();
    Some(format!("no live worker has {} together", wanted.join(" and ")))
}

/// One placement round: see the module documentation for the rules.
pub fn place(
    tasks: &[Candidate],
    workers: &[WorkerView],
    shares: &BTreeMap<String, Share>,
    policy: &Policy,
    now: Timestamp,
) -> Placement {
    let mut out = Placement::default();
    let mut workers: Vec<WorkerView> = workers.to_vec();
    let mut reserved: Vec<Option<Kept>> = vec![None; workers.len()];
    // Queues whose head already holds a worker back this round: one reservation per queue.
    let mut holding: Vec<&str> = Vec::new();

    // Each queue's schedulable tasks, best first.
    let mut queues: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in tasks.iter().enumerate() {
        match unschedulable_reason(t, &workers) {
            Some(why) => out.unschedulable.push((i, why)),
            None => queues.entry(t.queue.as_str()).or_default().push(i),
        }
    }
    for list in queues.values_mut() {
        list.sort_by(|&a, &b| {
            let (ta, tb) = (&tasks[a], &tasks[b]);
            policy
                .effective_priority(tb, now)
                .cmp(&policy.effective_priority(ta, now))
                .then(ta.ready_since.cmp(&tb.ready_since))
                .then(a.cmp(&b))
        });
        list.reverse(); // popped from the end, best first
    }
    let mut served: BTreeMap<&str, u64> = queues.keys().map(|q| (*q, shares.get(*q).map_or(0, |s| s.served))).collect();
    let weight = |q: &str| u64::from(shares.get(q).map_or(1, |s| s.weight.max(1)));

    loop {
        // The queue with the least work served per unit of weight (stride scheduling).
        let next = queues.iter().filter(|(_, list)| !list.is_empty()).map(|(q, _)| *q).min_by(|a, b| {
            (u128::from(served[a]) * u128::from(weight(b))).cmp(&(u128::from(served[b]) * u128::from(weight(a))))
        });
        let Some(queue) = next else { break };
        let task = queues.get_mut(queue).and_then(Vec::pop).expect("a queue with tasks");
        let t = &tasks[task];
        let fit = workers
            .iter()
            .enumerate()
            .filter(|(w, worker)| !Kept::blocks(&reserved[*w], t) && worker.can_run_now(t))
            .min_by(|(wa, a), (wb, b)| a.load_with(&t.resources).total_cmp(&b.load_with(&t.resources)).then(wa.cmp(wb)))
            .map(|(w, _)| w);
        match fit {
            Some(w) => {
                let worker = &mut workers[w];
                worker.used.add(&t.resources);
                worker.free_slots -= 1;
                worker.running += 1;
                *served.get_mut(queue).expect("known queue") += 1;
                out.assigned.push((task, w));
            }
            None if holding.contains(&queue) => {} // behind this queue's held head: skipped
            None => {
                // The queue's head, too big for anyone's free capacity now: hold back the worker
                // that could run it and has the most of what it needs free, so small tasks cannot
                // keep it busy.
                holding.push(queue);
                let hold = workers
                    .iter()
                    .enumerate()
                    .filter(|(w, worker)| reserved[*w].is_none() && worker.could_run(t))
                    .max_by(|(wa, a), (wb, b)| {
                        let free = |x: &WorkerView| {
                            let free = x.used.free_of(&x.capacity);
                            t.resources.0.keys().map(|k| free.get(k)).sum::<u64>()
                        };
                        free(a).cmp(&free(b)).then(wb.cmp(wa))
                    })
                    .map(|(w, _)| w);
                if let Some(w) = hold {
                    let worker = &workers[w];
                    let free = worker.used.free_of(&worker.capacity);
                    reserved[w] = Some(match worker.free_slots {
                        0 => Kept::All,
                        _ => Kept::Resources(
                            t.resources.0.iter().filter(|(k, n)| **n > free.get(k)).map(|(k, _)| k.clone()).collect(),
                        ),
                    });
                    out.reserved.push((w, task));
                }
            }
        }
        if reserved.iter().all(|r| matches!(r, Some(Kept::All))) {
            break;
        }
    }
    out
}

pub mod sim;

#[cfg(test)]
mod tests;
