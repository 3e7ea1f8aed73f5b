//! What the running tasks hold, kept in memory by the writer thread: the resources each worker's
//! running tasks ask for, and how many tasks run per queue and per concurrency key. The limits
//! gate reads these on every fetch; keeping them here spares each fetch a scan of the running
//! tasks.
//!
//! The writer is the only writer and every task write goes through [`Ledger::saved`], so the
//! ledger follows the database exactly, except when a transaction rolls back: then the writer
//! loads it afresh from the database (see `commit_group`).

use std::collections::HashMap;

use rusqlite::Connection;
use taskwarden_core::placement::Resources;
use taskwarden_core::{Needs, Task, TaskId, TaskState};

use super::internal;
use crate::Result;

/// One running task's share.
#[derive(Debug)]
struct Holding {
    worker: String,
    queue: String,
    key: Option<String>,
    resources: Resources,
}

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    tasks: HashMap<TaskId, Holding>,
    by_worker: HashMap<String, Resources>,
    tasks_by_worker: HashMap<String, u32>,
    by_queue: HashMap<String, u32>,
    /// Per queue, per concurrency key (nested, so a lookup by `&str` allocates nothing).
    by_key: HashMap<String, HashMap<String, u32>>,
}

impl Ledger {
    /// The running tasks as the database has them.
    pub fn load(conn: &Connection) -> Result<Ledger> {
        let mut stmt = conn
            .prepare("SELECT id, lease_worker, queue, concurrency_key, needs FROM tasks WHERE state = 'running'")
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |r| {
                let needs: Option<String> = r.get(4)?;
                let resources =
                    needs.and_then(|n| serde_json::from_str::<Needs>(&n).ok()).unwrap_or_default().resources;
                let holding = Holding {
                    worker: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    queue: r.get(2)?,
                    key: r.get(3)?,
                    resources,
                };
                Ok((TaskId::from_bytes(r.get(0)?), holding))
            })
            .map_err(internal)?;
        let mut ledger = Ledger::default();
        for row in rows {
            let (id, holding) = row.map_err(internal)?;
            ledger.add(id, holding);
        }
        Ok(ledger)
    }

    /// Takes note of a task just written: it starts holding when it starts running, and lets go
    /// when it stops, however it stops.
    pub fn saved(&mut self, t: &Task) {
        let running = t.state == TaskState::Running;
        match (running, self.tasks.contains_key(&t.id)) {
            (true, false) => {
                let holding = Holding {
                    worker: t.lease.as_ref().map(|l| l.worker_id.clone()).unwrap_or_default(),
                    queue: t.queue.clone(),
                    key: t.needs.concurrency_key.clone(),
                    resources: t.needs.resources.clone(),
                };
                self.add(t.id, holding);
            }
            (false, true) => self.remove(t.id),
            _ => {}
        }
    }

    /// What the worker's running tasks hold.
    pub fn used_by(&self, worker: &str) -> Resources {
        self.by_worker.get(worker).cloned().unwrap_or_default()
    }

    /// What the worker's running tasks hold, but for those in `finished` (tasks it has finished
    /// whose outcomes are on their way).
    pub fn used_by_except(&self, worker: &str, finished: &[TaskId]) -> Resources {
        let mut used = self.used_by(worker);
        for h in finished.iter().filter_map(|id| self.tasks.get(id)).filter(|h| h.worker == worker) {
            used.remove(&h.resources);
        }
        used
    }

    /// How many tasks the worker runs.
    pub fn running_on(&self, worker: &str) -> u32 {
        self.tasks_by_worker.get(worker).copied().unwrap_or(0)
    }

    /// Tasks running in the queue, or with this concurrency key in it.
    pub fn running(&self, queue: &str, key: Option<&str>) -> u32 {
        match key {
            None => self.by_queue.get(queue).copied().unwrap_or(0),
            Some(k) => self.by_key.get(queue).and_then(|keys| keys.get(k)).copied().unwrap_or(0),
        }
    }

    fn add(&mut self, id: TaskId, h: Holding) {
        *self.tasks_by_worker.entry(h.worker.clone()).or_insert(0) += 1;
        if !h.resources.is_empty() {
            self.by_worker.entry(h.worker.clone()).or_default().add(&h.resources);
        }
        *self.by_queue.entry(h.queue.clone()).or_insert(0) += 1;
        if let Some(k) = &h.key {
            *self.by_key.entry(h.queue.clone()).or_default().entry(k.clone()).or_insert(0) += 1;
        }
        self.tasks.insert(id, h);
    }

    fn remove(&mut self, id: TaskId) {
        let Some(h) = self.tasks.remove(&id) else { return };
        decrement(&mut self.tasks_by_worker, &h.worker);
        if let Some(used) = self.by_worker.get_mut(&h.worker) {
            used.remove(&h.resources);
            if used.is_empty() {
                self.by_worker.remove(&h.worker);
            }
        }
        decrement(&mut self.by_queue, &h.queue);
        if let (Some(k), Some(keys)) = (&h.key, self.by_key.get_mut(&h.queue)) {
            decrement(keys, k);
            if keys.is_empty() {
                self.by_key.remove(&h.queue);
            }
        }
    }
}

fn decrement(counts: &mut HashMap<String, u32>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}
