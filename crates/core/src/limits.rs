//! Limits on when a ready task may start: concurrency (how many run at once) and rate (how many
//! start per period, by token bucket), per queue and per key within a queue; and the worker's own
//! fit (labels, free capacity). A task held back by a limit stays ready: it waits, it never fails.
//!
//! The [`Gate`] is pure: a store loads the counts and buckets a fetch concerns (under a lock that
//! makes them global across server nodes), asks the gate about each candidate in placement order,
//! and writes back the buckets it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::placement::{Labels, Resources};
use crate::time::Timestamp;
use crate::{Task, ValidationError};

/// `count` starts per `per`, with bursts of up to `count`. Written `10/s`, `600/m`, `5/h` or
/// `3/500ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    fn per_token(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per.as_millis() {
            1000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/m", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            ms => write!(f, "{}/{ms}ms", self.count),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate like 10/s, 600/m, 5/h or 3/500ms");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0
            || per.is_zero()
            || per > Duration::from_secs(86_400)
            || count > 1_000_000
            || per.subsec_nanos() % 1_000_000 != 0
        {
            return Err(format!("{s:?}: the count must be 1 to 1000000 and the period at most a day"));
        }
        Ok(Rate { count, per })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Rate {
    /// Reads a rate as the wire carries it, in the form it is written back (`10/s`, `600/m`,
    /// `5/h`, `3/500ms`) and nothing looser: the OpenAPI schema's pattern ([`crate::schema::RATE`])
    /// states the same grammar. The command line takes more (`10/sec`, `1/2s`) through `FromStr`.
    pub fn from_wire(s: &str) -> Result<Rate, String> {
        let number = |t: &str| -> Option<u64> {
            let digits = !t.is_empty() && t.len() <= 8 && t.bytes().all(|b| b.is_ascii_digit()) && !t.starts_with('0');
            if digits { t.parse().ok() } else { None }
        };
        let bad = || format!("{s:?} is not a rate like 10/s, 600/m, 5/h or 3/500ms");
        let (count, per) = s.split_once('/').ok_or_else(bad)?;
        let count = number(count).filter(|n| *n <= 1_000_000).ok_or_else(bad)?;
        let per = match per {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            ms => Duration::from_millis(
                ms.strip_suffix("ms").and_then(number).filter(|n| *n <= 86_400_000).ok_or_else(bad)?,
            ),
        };
        Ok(Rate { count: count as u32, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        Rate::from_wire(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A queue's limits; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueLimits {
    /// At most this many of the queue's tasks run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub concurrency: Option<u32>,
    /// At most this many tasks with the same `concurrency_key` run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub key_concurrency: Option<u32>,
    /// At most this many of the queue's tasks start per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// At most this many tasks with the same `rate_key` start per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<Rate>,
}

impl QueueLimits {
    pub fn is_empty(&self) -> bool {
        *self == QueueLimits::default()
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, n) in [("concurrency", self.concurrency), ("key_concurrency", self.key_concurrency)] {
            if n.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
                return Err(ValidationError::new(field, "must be between 1 and 1000000 (or null for no limit)"));
            }
        }
        Ok(())
    }

    /// The limits in words, for `queue ls`: `concurrency 10, 2 per key, 100/s, 10/s per key`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.concurrency {
            parts.push(format!("{n} at once"));
        }
        if let Some(n) = self.key_concurrency {
            parts.push(format!("{n} per key"));
        }
        if let Some(r) = self.rate {
            parts.push(r.to_string());
        }
        if let Some(r) = self.key_rate {
            parts.push(format!("{r} per key"));
        }
        if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
    }
}

/// A token bucket: `tokens` as of `at`. A missing bucket is a full one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Timestamp,
}

impl Bucket {
    pub fn full(rate: Rate, now: Timestamp) -> Bucket {
        Bucket { tokens: f64::from(rate.count), at: now }
    }

    /// Refills for the time passed, then takes a token if there is one; otherwise says how long
    /// until there will be.
    pub fn take(&mut self, rate: Rate, now: Timestamp) -> Result<(), Duration> {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() / rate.per_token().as_secs_f64();
            self.tokens = (self.tokens + gained).min(f64::from(rate.count));
            self.at = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(rate.per_token().mul_f64((1.0 - self.tokens).max(0.0)).max(Duration::from_millis(1)))
        }
    }

    /// Whether it has refilled completely by `now` (so it need not be kept).
    pub fn is_full_at(&self, rate: Rate, now: Timestamp) -> bool {
        let mut b = *self;
        let _ = b.take(rate, now);
        b.tokens + 1.0 >= f64::from(rate.count)
    }
}

/// The worker a fetch is for, as the gate needs it: what it has and what it holds.
#[derive(Clone, Debug, Default)]
pub struct WorkerFit {
    pub capacity: Resources,
    pub labels: Labels,
    /// Resources held by the tasks it runs now.
    pub used: Resources,
}

/// Why the gate held a task back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The worker lacks a label, or has less capacity in all than the task asks for: another
    /// worker may take it.
    Worker,
    /// The worker has the capacity but not free now, or keeps it for a bigger task ahead: it
    /// waits for a running task to end.
    Capacity,
    /// A concurrency limit is reached: it waits for a running task to end.
    Concurrency,
    /// A rate limit's bucket is empty: it waits this long for a token.
    Rate(Duration),
}

/// Decides, task by task, whether a fetch may lease a candidate now. Load it with the state the
/// candidates concern ([`Gate::needs_running`], [`Gate::needs_buckets`]), then call
/// [`Gate::admit`] for each candidate in placement order.
///
/// **Reservation.** A candidate that fits the worker but not its free capacity now keeps the
/// resources it is short of: no candidate behind it that asks for any of them is admitted, so a
/// stream of small tasks cannot starve a big one at the head of a queue. Candidates that ask for
/// none of them still run (backfilling only work that does not delay it). This is the fetch-time
/// form of the reservation rule in [`crate::placement`].
#[derive(Clone, Debug, Default)]
pub struct Gate {
    pub worker: Option<WorkerFit>,
    pub limits: BTreeMap<String, QueueLimits>,
    /// Running tasks per queue and per concurrency key within it.
    running: HashMap<String, PerQueue<u32>>,
    /// Token buckets per queue and per rate key within it, and whether admissions changed them.
    buckets: HashMap<String, PerQueue<(Bucket, bool)>>,
    /// The soonest a rate-limited candidate gets a token, if one was held for that.
    pub retry_in: Option<Duration>,
    /// Whether a candidate waits for a running task to end (a concurrency limit, or the
    /// worker's capacity in use).
    pub held_for_concurrency: bool,
    /// Resources kept for a candidate that waits for them on this worker (see Reservation).
    pub reserved: BTreeSet<String>,
    /// Whether a candidate was held for a reason the tasks behind it may not share (this worker
    /// lacks its labels or its size, or its key is at a limit): looking further down the queue
    /// may find work. Queue-wide limits and reservations hold everything behind them alike.
    pub passed_over: bool,
}

/// A queue's own value and its keys' (looked up by `&str`, so admitting allocates nothing).
#[derive(Clone, Debug)]
struct PerQueue<T> {
    queue: Option<T>,
    keys: HashMap<String, T>,
}

impl<T> Default for PerQueue<T> {
    fn default() -> Self {
        PerQueue { queue: None, keys: HashMap::new() }
    }
}

impl<T> PerQueue<T> {
    fn get(&self, key: Option<&str>) -> Option<&T> {
        match key {
            None => self.queue.as_ref(),
            Some(k) => self.keys.get(k),
        }
    }

    fn get_mut(&mut self, key: Option<&str>) -> Option<&mut T> {
        match key {
            None => self.queue.as_mut(),
            Some(k) => self.keys.get_mut(k),
        }
    }

    fn set(&mut self, key: Option<&str>, value: T) {
        match key {
            None => self.queue = Some(value),
            Some(k) => match self.keys.get_mut(k) {
                Some(v) => *v = value,
                None => {
                    self.keys.insert(k.to_owned(), value);
                }
            },
        }
    }
}

fn slot<'a, T>(map: &'a mut HashMap<String, PerQueue<T>>, queue: &str) -> &'a mut PerQueue<T> {
    if !map.contains_key(queue) {
        map.insert(queue.to_owned(), PerQueue::default());
    }
    map.get_mut(queue).expect("just inserted")
}

impl Gate {
    pub fn new(limits: BTreeMap<String, QueueLimits>, worker: Option<WorkerFit>) -> Gate {
        Gate { limits, worker, ..Gate::default() }
    }

    /// Whether the gate would hold anything back among tasks of these queues and these needs.
    pub fn is_open_for<'a>(limits: &BTreeMap<String, QueueLimits>, mut tasks: impl Iterator<Item = &'a Task>) -> bool {
        limits.values().all(QueueLimits::is_empty) && tasks.all(|t| !t.needs.constrains_worker())
    }

    /// Sets how many tasks run in `queue` (`key` None) or with this concurrency key in it.
    pub fn set_running(&mut self, queue: &str, key: Option<&str>, n: u32) {
        slot(&mut self.running, queue).set(key, n);
    }

    /// How many tasks run in `queue`, or with this key in it, counting those admitted so far.
    pub fn running(&self, queue: &str, key: Option<&str>) -> u32 {
        self.running.get(queue).and_then(|q| q.get(key)).copied().unwrap_or(0)
    }

    /// Sets the queue's token bucket (`key` None) or the one of this rate key in it, as stored.
    pub fn set_bucket(&mut self, queue: &str, key: Option<&str>, bucket: Bucket) {
        slot(&mut self.buckets, queue).set(key, (bucket, false));
    }

    pub fn bucket(&self, queue: &str, key: Option<&str>) -> Option<Bucket> {
        self.buckets.get(queue).and_then(|q| q.get(key)).map(|(b, _)| *b)
    }

    /// The buckets admissions took tokens from, to write back: (queue, key, bucket).
    pub fn changed_buckets(&self) -> Vec<(&str, Option<&str>, Bucket)> {
        let mut out = Vec::new();
        for (queue, per) in &self.buckets {
            if let Some((b, true)) = per.queue {
                out.push((queue.as_str(), None, b));
            }
            out.extend(
                per.keys
                    .iter()
                    .filter(|(_, (_, dirty))| *dirty)
                    .map(|(k, (b, _))| (queue.as_str(), Some(k.as_str()), *b)),
            );
        }
        out
    }

    /// The running counts admitting `tasks` needs: (queue, None) for a queue-wide limit,
    /// (queue, Some(key)) for a per-key one.
    pub fn needs_running<'a>(&self, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<(String, Option<String>)> {
        self.keys(tasks, |l, t| (l.concurrency.is_some(), l.key_concurrency.and(t.needs.concurrency_key.as_ref())))
    }

    /// The buckets admitting `tasks` needs, like [`Gate::needs_running`].
    pub fn needs_buckets<'a>(&self, tasks: impl IntoIterator<Item = &'a Task>) -> Vec<(String, Option<String>)> {
        self.keys(tasks, |l, t| (l.rate.is_some(), l.key_rate.and(t.needs.rate_key.as_ref())))
    }

    /// For each task whose queue has limits, `pick` says whether the queue-wide one applies and
    /// which per-key one does; the distinct (queue, key) pairs that follow.
    fn keys<'a>(
        &self,
        tasks: impl IntoIterator<Item = &'a Task>,
        pick: impl Fn(&QueueLimits, &'a Task) -> (bool, Option<&'a String>),
    ) -> Vec<(String, Option<String>)> {
        let mut distinct: BTreeSet<(&str, Option<&str>)> = BTreeSet::new();
        for t in tasks {
            let Some(l) = self.limits.get(&t.queue) else { continue };
            let (queue_wide, key) = pick(l, t);
            if queue_wide {
                distinct.insert((&t.queue, None));
            }
            if let Some(k) = key {
                distinct.insert((&t.queue, Some(k)));
            }
        }
        distinct.into_iter().map(|(q, k)| (q.to_owned(), k.map(str::to_owned))).collect()
    }

    /// Whether `t` may start now on this fetch's worker. If so, counts it as started (running,
    /// tokens, the worker's capacity); if not, changes nothing.
    pub fn admit(&mut self, t: &Task, now: Timestamp) -> Result<(), Held> {
        if let Some(w) = &self.worker {
            let labelled = t.needs.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v));
            if !labelled || !t.needs.resources.fits_in(&w.capacity) {
                self.passed_over = true;
                return Err(Held::Worker);
            }
            let short_of = |(k, n): (&String, &u64)| *n > w.used.free_in(&w.capacity, k);
            let kept = t.needs.resources.0.keys().any(|k| self.reserved.contains(k));
            if kept || t.needs.resources.0.iter().any(short_of) {
                // It fits this worker once running tasks end: it waits for that, as for a limit,
                // and keeps what it is short of from the candidates behind it.
                let short = t.needs.resources.0.iter().filter(|r| short_of(*r)).map(|(k, _)| k.clone());
                self.reserved.extend(short);
                self.held_for_concurrency = true;
                return Err(Held::Capacity);
            }
        } else if t.needs.constrains_worker() {
            self.passed_over = true;
            return Err(Held::Worker);
        }
        if let Some(limits) = self.limits.get(&t.queue).copied() {
            self.take_limits(t, limits, now)?;
        }
        if let Some(w) = &mut self.worker {
            w.used.add(&t.needs.resources);
        }
        Ok(())
    }

    /// The queue's limits for `t`: if every one lets it start, counts it (running, tokens);
    /// otherwise changes nothing but why it was held.
    fn take_limits(&mut self, t: &Task, limits: QueueLimits, now: Timestamp) -> Result<(), Held> {
        let queue = t.queue.as_str();
        let conc_key = t.needs.concurrency_key.as_deref();
        if limits.concurrency.is_some_and(|n| self.running(queue, None) >= n) {
            self.held_for_concurrency = true;
            return Err(Held::Concurrency);
        }
        if let (Some(n), Some(key)) = (limits.key_concurrency, conc_key)
            && self.running(queue, Some(key)) >= n
        {
            self.held_for_concurrency = true;
            self.passed_over = true;
            return Err(Held::Concurrency);
        }
        // Both buckets must have a token before either is taken from.
        let rate_key = t.needs.rate_key.as_deref();
        let mut taken: [Option<(Option<&str>, Bucket)>; 2] = [None, None];
        for (i, (rate, key)) in
            [(limits.rate, None), (limits.key_rate.filter(|_| rate_key.is_some()), rate_key)].into_iter().enumerate()
        {
            let Some(rate) = rate else { continue };
            let mut bucket = self.bucket(queue, key).unwrap_or_else(|| Bucket::full(rate, now));
            if let Err(wait) = bucket.take(rate, now) {
                self.retry_in = Some(self.retry_in.map_or(wait, |r| r.min(wait)));
                self.passed_over |= key.is_some();
                return Err(Held::Rate(wait));
            }
            taken[i] = Some((key, bucket));
        }
        for (key, bucket) in taken.into_iter().flatten() {
            slot(&mut self.buckets, queue).set(key, (bucket, true));
        }
        let counts = slot(&mut self.running, queue);
        *counts.queue.get_or_insert(0) += 1;
        if let Some(key) = conc_key {
            match counts.get_mut(Some(key)) {
                Some(n) => *n += 1,
                None => counts.set(Some(key), 1),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
