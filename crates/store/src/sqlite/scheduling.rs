//! Scheduling state on SQLite: what the limits gate reads and writes (running counts, token
//! buckets, the worker's fit), the needs of ready tasks, and cron schedules. The writer thread is
//! the only writer, so reads inside its transaction are already serialized across fetches.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};
use taskwarden_core::cron::{CronInfo, CronSpec};
use taskwarden_core::limits::{Bucket, Gate, WorkerFit};
use taskwarden_core::placement::WorkerView;
use taskwarden_core::{Needs, Task, TaskId, Timestamp};

use super::internal;
use super::ledger::Ledger;
use super::ops;
use super::writer::WriterState;
use crate::params::*;
use crate::{Result, StoreError};

fn json<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// The worker's capacity and labels as it registered them, and what its running tasks hold (but
/// for those it says it has `finished`). An unknown worker has neither capacity nor labels.
pub(crate) fn worker_fit(
    conn: &Connection,
    ledger: &Ledger,
    worker_id: &str,
    finished: &[TaskId],
) -> Result<WorkerFit> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT capacity, labels FROM workers WHERE id = ?1")
        .and_then(|mut s| s.query_row([worker_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(internal)?;
    let (capacity, labels) = row.map(|(c, l)| (json(&c), json(&l))).unwrap_or_default();
    Ok(WorkerFit { capacity, labels, used: ledger.used_by_except(worker_id, finished) })
}

/// The token buckets as stored, kept by the writer thread (the only writer of `rate_buckets`),
/// so fetches read a bucket from the database once. `None`: known to have no row (a full
/// bucket). Emptied when a transaction rolls back and when buckets are pruned.
#[derive(Debug, Default)]
pub(crate) struct BucketCache {
    by_queue: HashMap<String, HashMap<String, Option<Bucket>>>,
    len: usize,
}

impl BucketCache {
    /// Most buckets kept; past that the cache starts over.
    const MAX: usize = 100_000;

    fn get(&self, queue: &str, key: &str) -> Option<Option<Bucket>> {
        self.by_queue.get(queue).and_then(|q| q.get(key)).copied()
    }

    fn put(&mut self, queue: &str, key: &str, bucket: Option<Bucket>) {
        if self.len >= Self::MAX {
            self.clear();
        }
        let q = match self.by_queue.get_mut(queue) {
            Some(q) => q,
            None => self.by_queue.entry(queue.to_owned()).or_default(),
        };
        match q.get_mut(key) {
            Some(b) => *b = bucket,
            None => {
                q.insert(key.to_owned(), bucket);
                self.len += 1;
            }
        }
    }

    pub fn clear(&mut self) {
        *self = BucketCache::default();
    }
}

/// Loads the running counts (from the ledger) and token buckets (from the cache, or else from
/// the database in one query) the candidates concern into the gate.
pub(crate) fn load_gate(
    conn: &Connection,
    ledger: &Ledger,
    cache: &mut BucketCache,
    gate: &mut Gate,
    candidates: &[&Task],
) -> Result<()> {
    for key in gate.needs_running(candidates.iter().copied()) {
        gate.set_running(&key.0, key.1.as_deref(), ledger.running(&key.0, key.1.as_deref()));
    }
    let mut missing = Vec::new();
    for (queue, key) in gate.needs_buckets(candidates.iter().copied()) {
        match cache.get(&queue, key.as_deref().unwrap_or("")) {
            Some(Some(bucket)) => gate.set_bucket(&queue, key.as_deref(), bucket),
            Some(None) => {}
            None => missing.push((queue, key)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // The pairs go in as a JSON array of `[queue, key or null]`.
    let mut stmt = conn
        .prepare_cached(
            "SELECT b.queue, b.key, b.tokens, b.at FROM json_each(?1) j \
             JOIN rate_buckets b ON b.queue = j.value ->> 0 AND b.key = coalesce(j.value ->> 1, '')",
        )
        .map_err(internal)?;
    let mut rows = stmt.query([to_json(&missing)]).map_err(internal)?;
    while let Some(r) = rows.next().map_err(internal)? {
        let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
        let (queue, key) = (text(0).map_err(internal)?, text(1).map_err(internal)?);
        let bucket =
            Bucket { tokens: r.get(2).map_err(internal)?, at: Timestamp::from_micros(r.get(3).map_err(internal)?) };
        gate.set_bucket(queue, Some(key).filter(|k| !k.is_empty()), bucket);
        cache.put(queue, key, Some(bucket));
    }
    for (queue, key) in &missing {
        if gate.bucket(queue, key.as_deref()).is_none() {
            cache.put(queue, key.as_deref().unwrap_or(""), None);
        }
    }
    Ok(())
}

/// Writes back the buckets admissions took tokens from, in one statement.
pub(crate) fn save_buckets(conn: &Connection, cache: &mut BucketCache, gate: &Gate) -> Result<()> {
    let changed = gate.changed_buckets();
    if changed.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&str, &str, f64, i64)> =
        changed.iter().map(|(q, k, b)| (*q, k.unwrap_or(""), b.tokens, b.at.as_micros())).collect();
    conn.prepare_cached(
        "INSERT INTO rate_buckets (queue, key, tokens, at) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM json_each(?1) j WHERE true \
         ON CONFLICT (queue, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
    )
    .and_then(|mut s| s.execute([to_json(&rows)]))
    .map_err(internal)?;
    for (queue, key, bucket) in changed {
        cache.put(queue, key.unwrap_or(""), Some(bucket));
    }
    Ok(())
}

/// How busy each of these workers is (see [`WorkerView::busy`]): its share of slots in use, or
/// of a resource, whichever is larger. An unknown worker counts as full.
pub(crate) fn loads(conn: &Connection, ledger: &Ledger, workers: &[&str]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(workers.len());
    for id in workers {
        let row: Option<(u32, String)> = conn
            .prepare_cached("SELECT concurrency, capacity FROM workers WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(internal)?;
        let Some((concurrency, capacity)) = row else {
            out.push(1.0);
            continue;
        };
        let running = ledger.running_on(id);
        let view = WorkerView {
            queues: Vec::new(),
            capacity: json(&capacity),
            used: ledger.used_by(id),
            labels: BTreeMap::new(),
            free_slots: concurrency.saturating_sub(running),
            running,
            kinds: Vec::new(), // only its load is asked
        };
        out.push(view.busy());
    }
    Ok(out)
}

pub(crate) fn ready_kinds(conn: &Connection) -> Result<Vec<ReadyKind>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, kind, COUNT(*) FROM tasks WHERE state = 'ready' GROUP BY queue, kind LIMIT 10000",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map([], |r| Ok(ReadyKind { queue: r.get(0)?, kind: r.get(1)?, count: r.get::<_, i64>(2)? as u64 }))
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}

pub(crate) fn kind_schemas(conn: &Connection) -> Result<Vec<KindSchema>> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, schema, registered_at FROM kind_schemas ORDER BY kind").map_err(internal)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(KindSchema { kind: r.get(0)?, schema: r.get(1)?, registered_at: Timestamp::from_micros(r.get(2)?) })
        })
        .map_err(internal)?;
    rows.collect::<rusqlite::Result<_>>().map_err(internal)
}

pub(crate) fn ready_needs(conn: &Connection) -> Result<Vec<ReadyNeeds>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT queue, needs, COUNT(*) FROM tasks WHERE state = 'ready' AND needs IS NOT NULL \
             GROUP BY queue, needs LIMIT 10000",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
        .map_err(internal)?;
    let mut out = Vec::new();
    for row in rows {
        let (queue, needs, count) = row.map_err(internal)?;
        let needs: Needs = json(&needs);
        if needs.constrains_worker() {
            out.push(ReadyNeeds { queue, needs, count: count as u64 });
        }
    }
    Ok(out)
}

const CRON_COLUMNS: &str = "spec, paused, next_run, last_fired, created_at";

fn cron_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, bool, i64, Option<i64>, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn cron_info(row: (String, bool, i64, Option<i64>, i64)) -> Result<CronInfo> {
    let (spec, paused, next_run, last_fired, created_at) = row;
    let spec: CronSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(CronInfo {
        spec,
        paused,
        next_run_at: Timestamp::from_micros(next_run),
        last_fired_at: last_fired.map(Timestamp::from_micros),
        created_at: Timestamp::from_micros(created_at),
    })
}

fn load_cron(conn: &Connection, name: &str) -> Result<CronInfo> {
    let row = conn
        .prepare_cached(&format!("SELECT {CRON_COLUMNS} FROM cron_schedules WHERE name = ?1"))
        .and_then(|mut s| s.query_row([name], cron_from_row).optional())
        .map_err(internal)?;
    cron_info(row.ok_or(StoreError::NotFound)?)
}

pub(crate) fn create_cron(conn: &Connection, p: CreateCron) -> Result<CronInfo> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO cron_schedules (name, spec, next_run, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![p.spec.name, to_json(&p.spec), p.next_run.as_micros(), p.now.as_micros()]))
        .map_err(internal)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("a cron schedule named {:?} exists", p.spec.name)));
    }
    load_cron(conn, &p.spec.name)
}

pub(crate) fn list_crons(conn: &Connection) -> Result<Vec<CronInfo>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {CRON_COLUMNS} FROM cron_schedules ORDER BY name")).map_err(internal)?;
    let rows = stmt.query_map([], cron_from_row).map_err(internal)?;
    rows.map(|r| cron_info(r.map_err(internal)?)).collect()
}

pub(crate) fn pause_cron(conn: &Connection, p: PauseCron) -> Result<CronInfo> {
    let changed = conn
        .prepare_cached("UPDATE cron_schedules SET paused = ?2, next_run = ?3 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![p.name, p.paused, p.next_run.as_micros()]))
        .map_err(internal)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    load_cron(conn, &p.name)
}

pub(crate) fn update_cron(conn: &Connection, p: UpdateCron) -> Result<CronInfo> {
    let changed = conn
        .prepare_cached("UPDATE cron_schedules SET spec = ?2, next_run = ?3 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![p.spec.name, to_json(&p.spec), p.next_run.as_micros()]))
        .map_err(internal)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    load_cron(conn, &p.spec.name)
}

pub(crate) fn delete_cron(conn: &Connection, name: &str) -> Result<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM cron_schedules WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map_err(internal)?;
    if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

pub(crate) fn fire_cron(conn: &Connection, st: &mut WriterState, p: FireCron) -> Result<bool> {
    let next = p.next_run.unwrap_or(Timestamp::NEVER).as_micros();
    let last_fired = p.tasks.iter().filter_map(|t| t.run_at).max().map(Timestamp::as_micros);
    let moved = conn
        .prepare_cached(
            "UPDATE cron_schedules SET next_run = ?3, last_fired = COALESCE(?4, last_fired) \
             WHERE name = ?1 AND next_run = ?2 AND NOT paused",
        )
        .and_then(|mut s| s.execute(params![p.name, p.expected_next_run.as_micros(), next, last_fired]))
        .map_err(internal)?;
    if moved == 0 {
        return Ok(false);
    }
    ops::submit(conn, st, SubmitTasks { tasks: p.tasks, idempotency_window: p.idempotency_window, now: p.now })?;
    Ok(true)
}
