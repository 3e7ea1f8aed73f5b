//! The event log on SQLite, kept in pages: the events a group commit appends are gathered by
//! the writer ([`EventPage`]) and written as one row just before the group commits, one JSON
//! object per line. A row per event cost the single writer an insert per state change (three
//! per task that succeeds at once), about a tenth of its time on a wide drain; a row per group
//! costs it one insert per commit.
//!
//! Each line is the event as the API serves it, less its id (a [`NewEvent`] serialized), so a
//! stream sends it on as it is.
//!
//! Each page also carries its events' per-minute sums ([`Rollup`] rows, `stats`), made as the
//! events were appended: the roll-up reads those few rows instead of parsing every event again
//! (it only parses the lines of a page it resumes in the middle of, or of one written before
//! pages carried sums).
//!
//! A page's events are numbered from its `first_id`, one per line, and its row id is its last
//! event's id. Each page starts one after the largest id (pruning never deletes the newest
//! page), and the single writer commits one transaction at a time, so ids increase in commit
//! order: a reader that has seen id `n` can never be handed an id below it.

use std::borrow::Cow;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use taskwarden_core::events::{Event, EventId, EventType, NewEvent, StoredEvent, TaskEvent};
use taskwarden_core::stats::{EventMeasure, Measured, Rollup};
use taskwarden_core::{Task, Timestamp};

use super::internal;
use crate::Result;
use crate::params::{PruneEvents, ReadEvents};

/// Events per page, at most: a large fan-out's events are split, so that a reader resuming in
/// the middle of one never loads more than this many to skip.
const PAGE_EVENTS: u32 = 256;

/// The events the open transaction has appended and not yet written: owned by the writer,
/// written by [`EventPage::write`] before each commit (and whenever it fills), dropped with a
/// rolled-back transaction.
#[derive(Default)]
pub(crate) struct EventPage {
    lines: Vec<u8>,
    count: u32,
    last_at: i64,
    /// What the roll-up takes of each event appended, summed when the page is written.
    measures: Vec<EventMeasure>,
    /// Pages written, ever.
    pages: u64,
}

#[derive(Clone, Copy)]
pub(crate) struct PageMark {
    len: usize,
    count: u32,
    measures: usize,
    last_at: i64,
    pages: u64,
}

/// What the per-minute roll-up takes of a line; the rest is skipped unparsed.
#[derive(Deserialize)]
struct MeasureIn<'a> {
    #[serde(rename = "type")]
    event_type: EventType,
    at: Timestamp,
    #[serde(default, borrow)]
    queue: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    task_id: Option<&'a str>,
    #[serde(default)]
    data: Option<MeasureData>,
}

#[derive(Deserialize, Default)]
struct MeasureData {
    #[serde(default)]
    run_us: Option<u64>,
    #[serde(default)]
    wait_us: Option<u64>,
}

impl EventPage {
    /// Appends the event the task's last transition noted, if any.
    pub(crate) fn task(&mut self, conn: &Connection, task: &Task) -> rusqlite::Result<()> {
        let Some(e) = TaskEvent::of(task) else { return Ok(()) };
        self.measures.push(e.measure(EventId::START));
        self.line(conn, &e, e.at)
    }

    pub(crate) fn push(&mut self, conn: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
        self.measures.push(EventMeasure::of_new(EventId::START, e));
        self.line(conn, e, e.at)
    }

    /// Appends `event`, which serializes as a [`NewEvent`] does.
    fn line(&mut self, conn: &Connection, event: &impl Serialize, at: Timestamp) -> rusqlite::Result<()> {
        if self.count > 0 {
            self.lines.push(b'\n'); // JSON escapes every newline inside a string
        }
        serde_json::to_writer(&mut self.lines, event).expect("an event serializes");
        self.count += 1;
        self.last_at = self.last_at.max(at.as_micros());
        if self.count == PAGE_EVENTS { self.write(conn) } else { Ok(()) }
    }

    /// Writes the gathered events as one page, numbered on from the largest id.
    pub(crate) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let lines = std::str::from_utf8(&self.lines).expect("serde_json writes UTF-8");
        let mut sums = Rollup::default();
        self.measures.iter().for_each(|m| sums.take_measure(m));
        let stats = serde_json::to_string(&sums.into_rows()).expect("rows serialize");
        conn.prepare_cached(
            "INSERT INTO event_pages (last_id, first_id, last_at, events, stats) \
             SELECT COALESCE(MAX(last_id), 0) + ?1, COALESCE(MAX(last_id), 0) + 1, ?2, ?3, ?4 FROM event_pages",
        )?
        .execute(params![self.count, self.last_at, lines, stats])?;
        self.clear();
        self.pages += 1;
        Ok(())
    }

    /// Where the page stands, to go back to should the next operation be refused.
    pub(crate) fn mark(&self) -> PageMark {
        PageMark {
            len: self.lines.len(),
            count: self.count,
            measures: self.measures.len(),
            last_at: self.last_at,
            pages: self.pages,
        }
    }

    /// Forgets the events appended since `mark`, unless the page was written since (then the
    /// refused operation wrote, and its whole group is rolled back).
    pub(crate) fn back_to(&mut self, mark: PageMark) {
        if self.pages == mark.pages {
            self.lines.truncate(mark.len);
            self.measures.truncate(mark.measures);
            self.count = mark.count;
            self.last_at = mark.last_at;
        }
    }

    /// Forgets the gathered events: their transaction was rolled back.
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
        self.measures.clear();
        self.count = 0;
        self.last_at = 0;
    }
}

/// Maps each event after `p.after` (its id and its line), in id order, at most `p.limit`.
fn read_with<T>(
    conn: &Connection,
    p: &ReadEvents,
    mut f: impl FnMut(EventId, &str) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    if p.after.tx != 0 {
        return Ok(out); // an id from a PostgreSQL log: past the end of this one
    }
    let mut stmt = conn
        .prepare_cached("SELECT first_id, events FROM event_pages WHERE last_id > ?1 ORDER BY last_id")
        .map_err(internal)?;
    let mut rows = stmt.query([p.after.seq as i64]).map_err(internal)?;
    while out.len() < p.limit as usize
        && let Some(row) = rows.next().map_err(internal)?
    {
        let first = row.get::<_, i64>(0).map_err(internal)? as u64;
        let lines = row.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(internal)?;
        page_lines(first, lines, p.after.seq, p.limit as usize - out.len(), &mut out, &mut f)?;
    }
    Ok(out)
}

/// Maps the lines of the page starting at id `first` that come after id `after`, at most `left`.
fn page_lines<T>(
    first: u64,
    lines: &str,
    after: u64,
    left: usize,
    out: &mut Vec<T>,
    f: &mut impl FnMut(EventId, &str) -> rusqlite::Result<T>,
) -> Result<()> {
    let skip = after.saturating_sub(first - 1) as usize;
    for (seq, line) in (first..).zip(lines.split('\n')).skip(skip).take(left) {
        out.push(f(EventId { tx: 0, seq }, line).map_err(internal)?);
    }
    Ok(())
}

fn unreadable(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
}

pub(crate) fn read(conn: &Connection, p: &ReadEvents) -> Result<Vec<Event>> {
    read_with(conn, p, |id, line| Ok(Event { id, event: serde_json::from_str(line).map_err(unreadable)? }))
}

pub(crate) fn read_stored(conn: &Connection, p: &ReadEvents) -> Result<Vec<StoredEvent>> {
    read_with(conn, p, |id, line| Ok(StoredEvent { id, json: line.to_owned() }))
}

/// What the roll-up takes of the events after `p.after`: a page's sums where it starts after
/// `p.after` (its lines are not even read), each event's measure otherwise; at most `p.limit`
/// of these.
pub(crate) fn read_measures(conn: &Connection, p: &ReadEvents) -> Result<Vec<Measured>> {
    let mut out = Vec::new();
    if p.after.tx != 0 {
        return Ok(out);
    }
    let after = p.after.seq;
    let mut stmt = conn
        .prepare_cached(
            "SELECT first_id, last_id, stats, CASE WHEN stats IS NULL OR first_id <= ?1 THEN events END \
             FROM event_pages WHERE last_id > ?1 ORDER BY last_id",
        )
        .map_err(internal)?;
    let mut rows = stmt.query([after as i64]).map_err(internal)?;
    let mut measure = |id, line: &str| {
        let e: MeasureIn = serde_json::from_str(line).map_err(unreadable)?;
        let data = e.data.unwrap_or_default();
        Ok(Measured::Event(EventMeasure {
            id,
            at: e.at,
            event_type: e.event_type,
            queue: e.queue.map(Cow::into_owned),
            of_task: e.task_id.is_some(),
            run_us: data.run_us,
            wait_us: data.wait_us,
        }))
    };
    while out.len() < p.limit as usize
        && let Some(row) = rows.next().map_err(internal)?
    {
        let first = row.get::<_, i64>(0).map_err(internal)? as u64;
        let last = row.get::<_, i64>(1).map_err(internal)? as u64;
        let lines = row.get_ref(3).and_then(|v| Ok(v.as_str_or_null()?)).map_err(internal)?;
        match lines {
            Some(lines) => page_lines(first, lines, after, p.limit as usize - out.len(), &mut out, &mut measure)?,
            None => {
                let stats = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(internal)?;
                let rows = serde_json::from_str(stats).map_err(unreadable).map_err(internal)?;
                out.push(Measured::Summed {
                    last: EventId { tx: 0, seq: last },
                    events: (last + 1 - first) as u32,
                    rows,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) fn last_id(conn: &Connection) -> Result<EventId> {
    let seq: Option<i64> =
        conn.query_row("SELECT MAX(last_id) FROM event_pages", [], |r| r.get(0)).map_err(internal)?;
    Ok(EventId { tx: 0, seq: seq.unwrap_or(0) as u64 })
}

/// Deletes the oldest pages, in id order, while every event in them is older than `before`,
/// until at least `limit` events are gone (a page is deleted whole): pages are written in time
/// order, so this stops at the first one to keep without an index on time. The newest page
/// always stays (see the module's note on ids). Returns how many events it deleted.
pub(crate) fn prune(conn: &Connection, p: PruneEvents) -> Result<usize> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT MAX(last_id) FROM event_pages \
             WHERE first_id < (SELECT MIN(first_id) FROM event_pages) + ?2 AND last_at < ?1 \
             AND last_id < (SELECT MAX(last_id) FROM event_pages)",
            params![p.before.as_micros(), p.limit],
            |r| r.get(0),
        )
        .map_err(internal)?;
    let Some(last) = last else { return Ok(0) };
    let events: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(last_id - first_id + 1), 0) FROM event_pages WHERE last_id <= ?1",
            [last],
            |r| r.get(0),
        )
        .map_err(internal)?;
    conn.prepare_cached("DELETE FROM event_pages WHERE last_id <= ?1")
        .and_then(|mut s| s.execute([last]))
        .map_err(internal)?;
    Ok(events as usize)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use taskwarden_core::TaskId;

    use super::*;
    use crate::sqlite::schema::{migrate, migrate_to};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn after(seq: u64, limit: u32) -> ReadEvents {
        ReadEvents { after: EventId { tx: 0, seq }, limit }
    }

    fn ids(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.id.seq).collect()
    }

    fn database() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    #[test]
    fn a_large_group_is_split_into_pages_and_read_from_any_id() {
        let conn = database();
        let mut page = EventPage::default();
        for i in 0..600 {
            page.push(&conn, &NewEvent::queue(&format!("q{i}"), true, at(i))).unwrap();
        }
        page.write(&conn).unwrap();
        let pages: i64 = conn.query_row("SELECT COUNT(*) FROM event_pages", [], |r| r.get(0)).unwrap();
        assert_eq!(pages, 3, "256 + 256 + 88");
        let all = read(&conn, &after(0, 1000)).unwrap();
        assert_eq!(ids(&all), (1..=600).collect::<Vec<_>>());
        assert_eq!(all[599].event.queue.as_deref(), Some("q599"));
        assert_eq!(all[599].event.at, at(599));
        for (from, limit) in [(0, 10), (255, 3), (256, 1), (300, 10), (590, 100), (600, 5)] {
            let want: Vec<u64> = (from + 1..=600).take(limit as usize).collect();
            assert_eq!(ids(&read(&conn, &after(from, limit)).unwrap()), want, "after {from}, {limit}");
            let stored: Vec<u64> = read_stored(&conn, &after(from, limit)).unwrap().iter().map(|e| e.id.seq).collect();
            assert_eq!(stored, want);
        }
        assert_eq!(last_id(&conn).unwrap().seq, 600);
        // Pruning takes whole pages, never the newest, and ids go on from the largest.
        let pruned = prune(&conn, PruneEvents { before: at(10_000), limit: 300 }).unwrap();
        assert_eq!(pruned, 512);
        assert_eq!(prune(&conn, PruneEvents { before: at(10_000), limit: 300 }).unwrap(), 0, "the newest page stays");
        page.push(&conn, &NewEvent::queue("next", false, at(700))).unwrap();
        page.write(&conn).unwrap();
        assert_eq!(ids(&read(&conn, &after(0, 1000)).unwrap()), (513..=601).collect::<Vec<_>>());
    }

    #[test]
    fn a_refused_operations_events_are_taken_back() {
        let conn = database();
        let mut page = EventPage::default();
        page.push(&conn, &NewEvent::queue("kept", true, at(1))).unwrap();
        let mark = page.mark();
        page.push(&conn, &NewEvent::queue("refused", true, at(2))).unwrap();
        page.back_to(mark);
        page.push(&conn, &NewEvent::queue("after", true, at(3))).unwrap();
        page.write(&conn).unwrap();
        let queues: Vec<_> = read(&conn, &after(0, 10)).unwrap().into_iter().map(|e| e.event.queue.unwrap()).collect();
        assert_eq!(queues, ["kept", "after"]);
        page.push(&conn, &NewEvent::queue("rolled back", true, at(4))).unwrap();
        page.clear();
        page.write(&conn).unwrap();
        assert_eq!(last_id(&conn).unwrap().seq, 2, "nothing was left to write");
    }

    #[test]
    fn events_kept_a_row_each_move_into_pages_with_their_ids() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 16).unwrap();
        let task = TaskId::from_bytes([0xab; 16]);
        conn.execute(
            "INSERT INTO events (id, at, type, queue, kind, task_id, workflow_id, attempt, tags, data) VALUES \
             (7, 1800000000123456, 'task.retrying', 'mail', 'send', ?1, NULL, 2, '[\"vip\"]', '{\"error\":\"boom\"}'), \
             (8, 1800000001000000, 'worker.joined', NULL, NULL, NULL, NULL, NULL, NULL, '{\"worker_id\":\"w\"}')",
            [task.as_bytes().as_slice()],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let events = read(&conn, &after(0, 10)).unwrap();
        assert_eq!(ids(&events), [7, 8]);
        let retrying = NewEvent {
            event_type: EventType::TaskRetrying,
            at: Timestamp::from_micros(1_800_000_000_123_456),
            queue: Some("mail".into()),
            kind: Some("send".into()),
            task_id: Some(task),
            workflow_id: None,
            attempt: Some(2),
            tags: vec!["vip".into()],
            data: json!({"error": "boom"}),
        };
        assert_eq!(events[0].event, retrying);
        let joined = &events[1].event;
        assert_eq!((joined.event_type, joined.queue.as_ref(), joined.task_id), (EventType::WorkerJoined, None, None));
        assert_eq!(
            (joined.at, &joined.data),
            (Timestamp::from_micros(1_800_000_001_000_000), &json!({"worker_id": "w"}))
        );
        let stored = read_stored(&conn, &after(6, 1)).unwrap();
        assert_eq!(stored[0].parse().unwrap(), events[0]);
        let mut page = EventPage::default();
        page.push(&conn, &NewEvent::queue("q", true, at(1))).unwrap();
        page.write(&conn).unwrap();
        assert_eq!(last_id(&conn).unwrap().seq, 9, "new events go on after the moved ones");
    }
}
