//! Scheduling state on SQLite: what the limits gate reads and writes (running counts, token
//! buckets, the worker's fit), the needs of ready tasks, and cron schedules. The writer thread is
//! the only writer, so reads inside its transaction are already serialized across fetches.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use taskwarden_core::cron::{CronInfo, CronSpec};
use taskwarden_core::limits::{Bucket, Gate, WorkerFit};
use taskwarden_core::placement::{Resources, WorkerView};
use taskwarden_core::{Needs, Task, Timestamp};

use super::internal;
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

/// Resources held by a worker's running tasks, summed by SQLite itself.
fn used_by(conn: &Connection, worker_id: &str) -> Result<Resources> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT j.key, SUM(j.value) FROM tasks t, json_each(t.needs, '$.resources') j \
             WHERE t.state = 'running' AND t.lease_worker = ?1 AND t.needs IS NOT NULL GROUP BY j.key",
        )
        .map_err(internal)?;
    let rows = stmt.query_map([worker_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(internal)?;
    let mut used = Resources::default();
    for row in rows {
        let (name, n) = row.map_err(internal)?;
        used.0.insert(name, n.max(0) as u64);
    }
    Ok(used)
}

/// The worker's capacity and labels as it registered them, and what its running tasks hold. An
/// unknown worker has neither capacity nor labels.
pub(crate) fn worker_fit(conn: &Connection, worker_id: &str) -> Result<WorkerFit> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT capacity, labels FROM workers WHERE id = ?1")
        .and_then(|mut s| s.query_row([worker_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(internal)?;
    let (capacity, labels) = row.map(|(c, l)| (json(&c), json(&l))).unwrap_or_default();
    Ok(WorkerFit { capacity, labels, used: used_by(conn, worker_id)? })
}

/// Loads the running counts and token buckets the candidates concern into the gate.
pub(crate) fn load_gate(conn: &Connection, gate: &mut Gate, candidates: &[&Task]) -> Result<()> {
    for key in gate.needs_running(candidates.iter().copied()) {
        let n: i64 = match &key.1 {
            None => conn.prepare_cached("SELECT COUNT(*) FROM tasks WHERE state = 'running' AND queue = ?1"),
            Some(_) => conn.prepare_cached(
                "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND queue = ?1 AND concurrency_key = ?2",
            ),
        }
        .and_then(|mut s| match &key.1 {
            None => s.query_row([&key.0], |r| r.get(0)),
            Some(k) => s.query_row([&key.0, k], |r| r.get(0)),
        })
        .map_err(internal)?;
        gate.running.insert(key, n as u32);
    }
    for key in gate.needs_buckets(candidates.iter().copied()) {
        let bucket: Option<(f64, i64)> = conn
            .prepare_cached("SELECT tokens, at FROM rate_buckets WHERE queue = ?1 AND key = ?2")
            .and_then(|mut s| {
                s.query_row([&key.0, key.1.as_deref().unwrap_or("")], |r| Ok((r.get(0)?, r.get(1)?))).optional()
            })
            .map_err(internal)?;
        if let Some((tokens, at)) = bucket {
            gate.buckets.insert(key, Bucket { tokens, at: Timestamp::from_micros(at) });
        }
    }
    Ok(())
}

/// Writes back the buckets admissions took tokens from.
pub(crate) fn save_buckets(conn: &Connection, gate: &Gate) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO rate_buckets (queue, key, tokens, at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (queue, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        )
        .map_err(internal)?;
    for key in &gate.changed {
        let b = gate.buckets[key];
        stmt.execute(params![key.0, key.1.as_deref().unwrap_or(""), b.tokens, b.at.as_micros()]).map_err(internal)?;
    }
    Ok(())
}

/// How loaded each of these workers is (see [`WorkerView::load`]), given the slots its fetch asks
/// for: the share of its slots in use, or of a resource, whichever is larger.
pub(crate) fn loads(conn: &Connection, workers: &[(&str, u32)]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(workers.len());
    for (id, free_slots) in workers {
        let row: Option<(u32, String)> = conn
            .prepare_cached("SELECT concurrency, capacity FROM workers WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(internal)?;
        let Some((concurrency, capacity)) = row else {
            out.push(1.0);
            continue;
        };
        let view = WorkerView {
            queues: Vec::new(),
            capacity: json(&capacity),
            used: used_by(conn, id)?,
            labels: BTreeMap::new(),
            free_slots: *free_slots,
            running: concurrency.saturating_sub(*free_slots),
        };
        out.push(view.load());
    }
    Ok(out)
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
