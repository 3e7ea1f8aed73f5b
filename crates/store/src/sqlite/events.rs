//! The event log on SQLite, kept in pages: the events a group commit appends are gathered by
//! the writer ([`EventPage`]) and written as one row just before the group commits. A row per
//! event cost the single writer an insert per state change (three per task that succeeds at
//! once), about a tenth of its time on a wide drain; a row per group costs it one insert per
//! commit.
//!
//! A page is a blob of [`Record`]s packed with `postcard`: a task's event as a
//! [`PackedTaskEvent`] (a few copies for the writer), any other event as its JSON line. Readers
//! make each task event's JSON, the API's form, from its packed fields, off the writer:
//! serializing every event as JSON had been most of what the event log cost the writer, and
//! the writer is what every drain waits on. Pages written before (text, one JSON object per
//! line, the event as the API serves it less its id) are read as they are.
//!
//! Each page also carries its events' per-minute sums ([`Rollup`] rows, `stats`), made as the
//! events were appended: the roll-up reads those few rows instead of every event again (it
//! only reads the events of a page it resumes in the middle of, or of one written before
//! pages carried sums).
//!
//! A page's events are numbered from its `first_id`, one per record (or line), and its row id
//! is its last event's id. Each page starts one after the largest id (pruning never deletes
//! the newest page), and the single writer commits one transaction at a time, so ids increase
//! in commit order: a reader that has seen id `n` can never be handed an id below it. The
//! writer, the log's only writer, keeps that largest id in memory once it has read it, and
//! reads it again after a rollback: a page is a plain insert, where asking SQLite for the next
//! id and back (`INSERT ... SELECT MAX ... RETURNING`, an ephemeral table per insert) had been
//! a tenth of the writer's time when each submit commits alone.
//!
//! The writer also keeps the pages it committed last in memory ([`RecentPages`]), and a read
//! that starts inside them is answered from there: a live stream reads just behind the writer,
//! and a read of SQLite after a commit begins with a cold page cache. The ring is pushed to
//! right after each commit, before anyone is answered or woken, so a reader that heard of a
//! commit finds its events there; a read starting before the ring goes to SQLite.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use taskwarden_core::events::{Event, EventId, EventType, NewEvent, PackedTaskEvent, StoredEvent, TaskEvent};
use taskwarden_core::stats::{EventMeasure, Measured, Rollup};
use taskwarden_core::{Task, Timestamp};

use super::internal;
use crate::Result;
use crate::params::{PruneEvents, ReadEvents};

/// Events per page, at most: a large fan-out's events are split, so that a reader resuming in
/// the middle of one never loads more than this many to skip.
const PAGE_EVENTS: u32 = 256;
/// Most bytes of packed events the ring of recently committed pages holds: at a wide drain's
/// pace (tens of thousands of events a second) a few hundred milliseconds of them.
const RECENT_BYTES: usize = 4 << 20;
/// Most pages the ring holds (a commit of one event writes a page of one).
const RECENT_PAGES: usize = 4096;

/// The events the open transaction has appended and not yet written: owned by the writer,
/// written by [`EventPage::write`] before each commit (and whenever it fills), dropped with a
/// rolled-back transaction.
#[derive(Default)]
pub(crate) struct EventPage {
    /// The log is off (`SqliteConfig::event_log`): appends are dropped.
    off: bool,
    /// The packed [`Record`]s.
    records: Vec<u8>,
    count: u32,
    last_at: i64,
    /// What the roll-up takes of each event appended, summed when the page is written.
    measures: Vec<EventMeasure>,
    /// Pages written, ever.
    pages: u64,
    /// The log's largest id as the open transaction leaves it, once read from the table.
    last_id: Option<u64>,
    /// Pages the open transaction wrote, for the ring once it commits.
    written: Vec<RecentPage>,
    /// The pages committed last.
    recent: Arc<Mutex<RecentPages>>,
}

/// A committed page kept in memory: its first event's id and its packed records.
#[derive(Clone)]
struct RecentPage {
    first: u64,
    count: u32,
    records: Arc<[u8]>,
}

impl RecentPage {
    fn last(&self) -> u64 {
        self.first + self.count as u64 - 1
    }
}

/// The pages committed last, contiguous in id, oldest first, and bounded ([`RECENT_BYTES`],
/// [`RECENT_PAGES`]). Shared by the writer (which pushes) and the store's readers.
pub(crate) struct RecentPages {
    pages: VecDeque<RecentPage>,
    bytes: usize,
    max_bytes: usize,
    max_pages: usize,
}

impl Default for RecentPages {
    fn default() -> Self {
        RecentPages::bounded(RECENT_BYTES, RECENT_PAGES)
    }
}

impl RecentPages {
    fn bounded(max_bytes: usize, max_pages: usize) -> Self {
        RecentPages { pages: VecDeque::new(), bytes: 0, max_bytes, max_pages }
    }

    fn push(&mut self, page: RecentPage) {
        if self.pages.back().is_some_and(|last| last.last() + 1 != page.first) {
            self.pages.clear(); // not contiguous (never expected): start again from this page
            self.bytes = 0;
        }
        self.bytes += page.records.len();
        self.pages.push_back(page);
        // The newest page stays whatever its size: readers following the log read it next.
        while self.pages.len() > 1 && (self.bytes > self.max_bytes || self.pages.len() > self.max_pages) {
            let old = self.pages.pop_front().expect("a front page");
            self.bytes -= old.records.len();
        }
    }

    /// Forgets the pages up to id `last`: pruned from the store.
    fn forget_through(&mut self, last: u64) {
        while self.pages.front().is_some_and(|p| p.last() <= last) {
            let old = self.pages.pop_front().expect("a front page");
            self.bytes -= old.records.len();
        }
    }

    /// The kept pages holding the first `limit` events after `after`, if every committed event
    /// after it is kept: `None` sends the reader to SQLite.
    fn after(&self, after: EventId, limit: u32) -> Option<Vec<RecentPage>> {
        let first = self.pages.front()?.first;
        let last = self.pages.back()?.last();
        if after.tx != 0 || after.seq + 1 < first || after.seq > last {
            return None;
        }
        let start = self.pages.partition_point(|p| p.last() <= after.seq);
        let mut pages = Vec::new();
        let mut events = 0;
        for page in self.pages.range(start..) {
            if events >= u64::from(limit) {
                break;
            }
            events += page.last() - after.seq.max(page.first - 1);
            pages.push(page.clone());
        }
        Some(pages)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct PageMark {
    len: usize,
    count: u32,
    measures: usize,
    last_at: i64,
    pages: u64,
}

/// One event of a page. Stored data: variants are only ever added at the end.
#[derive(Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // made and taken apart one at a time: boxing would cost an allocation each
enum Record<'a, Tags> {
    /// A task's event, packed.
    #[serde(borrow)]
    Task(PackedTaskEvent<'a, Tags>),
    /// Any other event (few: workflows, workers, queues), as its JSON line.
    Line(&'a str),
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
    pub(crate) fn new(log: bool) -> EventPage {
        EventPage { off: !log, ..Default::default() }
    }

    /// Appends the event the task's last transition noted, if any.
    pub(crate) fn task(&mut self, conn: &Connection, task: &Task) -> rusqlite::Result<()> {
        match TaskEvent::of(task) {
            Some(e) if !self.off => self.task_event(conn, &e),
            _ => Ok(()),
        }
    }

    fn task_event(&mut self, conn: &Connection, e: &TaskEvent<'_>) -> rusqlite::Result<()> {
        self.measures.push(e.measure(EventId::START));
        self.record(conn, &Record::Task(e.pack()), e.at)
    }

    pub(crate) fn push(&mut self, conn: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
        if self.off {
            return Ok(());
        }
        self.measures.push(EventMeasure::of_new(EventId::START, e));
        let line = serde_json::to_string(e).expect("an event serializes");
        self.record(conn, &Record::<&[String]>::Line(&line), e.at)
    }

    fn record(&mut self, conn: &Connection, record: &Record<'_, &[String]>, at: Timestamp) -> rusqlite::Result<()> {
        let records = std::mem::take(&mut self.records);
        self.records = postcard::to_extend(record, records).expect("a record packs");
        self.count += 1;
        self.last_at = self.last_at.max(at.as_micros());
        if self.count == PAGE_EVENTS { self.write(conn) } else { Ok(()) }
    }

    /// Writes the gathered events as one page, numbered on from the largest id.
    pub(crate) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let mut sums = Rollup::default();
        self.measures.iter().for_each(|m| sums.take_measure(m));
        let stats = serde_json::to_string(&sums.into_rows()).expect("rows serialize");
        let before = match self.last_id {
            Some(last) => last,
            None => largest_id(conn)?,
        };
        let (first, last) = (before + 1, before + u64::from(self.count));
        conn.prepare_cached(
            "INSERT INTO event_pages (last_id, first_id, last_at, events, stats) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![last as i64, first as i64, self.last_at, self.records, stats])?;
        self.last_id = Some(last);
        self.written.push(RecentPage { first, count: self.count, records: self.records.as_slice().into() });
        self.start_anew();
        self.pages += 1;
        Ok(())
    }

    /// The transaction that wrote the pages since the last commit has committed: readers may
    /// now have them from memory.
    pub(crate) fn committed(&mut self) {
        if self.written.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().expect("recent pages lock");
        for page in self.written.drain(..) {
            recent.push(page);
        }
    }

    /// Pages up to id `last` were deleted.
    pub(crate) fn pruned_through(&self, last: u64) {
        self.recent.lock().expect("recent pages lock").forget_through(last);
    }

    /// The ring of committed pages, for the store's readers.
    pub(crate) fn recent(&self) -> Arc<Mutex<RecentPages>> {
        self.recent.clone()
    }

    /// Where the page stands, to go back to should the next operation be refused.
    pub(crate) fn mark(&self) -> PageMark {
        PageMark {
            len: self.records.len(),
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
            self.records.truncate(mark.len);
            self.measures.truncate(mark.measures);
            self.count = mark.count;
            self.last_at = mark.last_at;
        }
    }

    /// Forgets the gathered events and the pages written: their transaction was rolled back.
    pub(crate) fn clear(&mut self) {
        self.written.clear();
        self.last_id = None;
        self.start_anew();
    }

    fn start_anew(&mut self) {
        self.records.clear();
        self.measures.clear();
        self.count = 0;
        self.last_at = 0;
    }
}

/// One event of a page, as read.
type Stored<'a> = Record<'a, Vec<String>>;

impl Stored<'_> {
    /// The event as the API serves it, less its id, made in `scratch` if need be.
    fn line<'s>(&'s self, scratch: &'s mut Vec<u8>) -> rusqlite::Result<&'s str> {
        match self {
            Record::Line(line) => Ok(line),
            Record::Task(packed) => {
                let event = unpacked(packed)?;
                scratch.clear();
                serde_json::to_writer(&mut *scratch, &event).map_err(unreadable)?;
                Ok(std::str::from_utf8(scratch).expect("serde_json writes UTF-8"))
            }
        }
    }
}

/// Maps each event after `p.after` (its id and its line), in id order, at most `p.limit`.
pub(crate) fn read_with<T>(
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
    let mut scratch = Vec::new();
    while out.len() < p.limit as usize
        && let Some(row) = rows.next().map_err(internal)?
    {
        let first = row.get::<_, i64>(0).map_err(internal)? as u64;
        let page = row.get_ref(1).map_err(internal)?;
        let left = p.limit as usize - out.len();
        page_events(first, page, p.after.seq, left, &mut out, &mut |id, e| f(id, e.line(&mut scratch)?))?;
    }
    Ok(out)
}

/// Maps the events of the page starting at id `first` that come after id `after`, at most
/// `left`: a page of packed records (a blob), or of JSON lines (text, as pages were written
/// before).
fn page_events<T>(
    first: u64,
    page: ValueRef<'_>,
    after: u64,
    left: usize,
    out: &mut Vec<T>,
    f: &mut impl FnMut(EventId, Stored<'_>) -> rusqlite::Result<T>,
) -> Result<()> {
    let skip = after.saturating_sub(first - 1) as usize;
    match page {
        ValueRef::Text(text) => {
            let lines = std::str::from_utf8(text).map_err(|e| internal(rusqlite::Error::Utf8Error(e)))?;
            for (seq, line) in (first..).zip(lines.split('\n')).skip(skip).take(left) {
                out.push(f(EventId { tx: 0, seq }, Record::Line(line)).map_err(internal)?);
            }
        }
        ValueRef::Blob(mut rest) => {
            let mut seq = first;
            while !rest.is_empty() && seq < first + (skip + left) as u64 {
                let (record, after_it) =
                    postcard::take_from_bytes::<Record<'_, Vec<String>>>(rest).map_err(|e| internal(unpackable(e)))?;
                rest = after_it;
                if seq >= first + skip as u64 {
                    out.push(f(EventId { tx: 0, seq }, record).map_err(internal)?);
                }
                seq += 1;
            }
        }
        other => return Err(internal(unpackable(format!("a page of type {:?}", other.data_type())))),
    }
    Ok(())
}

fn unreadable(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
}

fn unpackable(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, format!("an event page: {e}").into())
}

/// The task event a page packed, or an error for a type this build does not know.
fn unpacked<'p>(packed: &'p PackedTaskEvent<'_, Vec<String>>) -> rusqlite::Result<TaskEvent<'p>> {
    packed.event().ok_or_else(|| unpackable(format!("{:?} is not an event type this build knows", packed.event_type)))
}

/// Maps each event after `p.after` from the ring of recent pages, as [`read_with`] does from
/// SQLite; `None` when the ring does not hold every event after `p.after`.
pub(crate) fn read_recent<T>(
    recent: &Mutex<RecentPages>,
    p: &ReadEvents,
    mut f: impl FnMut(EventId, &str) -> rusqlite::Result<T>,
) -> Option<Result<Vec<T>>> {
    let pages = recent.lock().expect("recent pages lock").after(p.after, p.limit)?;
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for page in &pages {
        let Some(left) = (p.limit as usize).checked_sub(out.len()).filter(|&left| left > 0) else { break };
        let records = ValueRef::Blob(&page.records);
        if let Err(e) =
            page_events(page.first, records, p.after.seq, left, &mut out, &mut |id, e| f(id, e.line(&mut scratch)?))
        {
            return Some(Err(e));
        }
    }
    Some(Ok(out))
}

/// An event as [`Event`].
pub(crate) fn parsed(id: EventId, line: &str) -> rusqlite::Result<Event> {
    Ok(Event { id, event: serde_json::from_str(line).map_err(unreadable)? })
}

/// An event as [`StoredEvent`].
pub(crate) fn stored(id: EventId, line: &str) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent { id, json: line.to_owned() })
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
    let mut measure = |id, e: Stored<'_>| {
        let line = match e {
            Record::Task(packed) => {
                return Ok(Measured::Event(unpacked(&packed)?.measure(id)));
            }
            Record::Line(line) => line,
        };
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
        match row.get_ref(3).map_err(internal)? {
            ValueRef::Null => {
                let stats = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(internal)?;
                let rows = serde_json::from_str(stats).map_err(unreadable).map_err(internal)?;
                out.push(Measured::Summed {
                    last: EventId { tx: 0, seq: last },
                    events: (last + 1 - first) as u32,
                    rows,
                });
            }
            page => page_events(first, page, after, p.limit as usize - out.len(), &mut out, &mut measure)?,
        }
    }
    Ok(out)
}

pub(crate) fn last_id(conn: &Connection) -> Result<EventId> {
    Ok(EventId { tx: 0, seq: largest_id(conn).map_err(internal)? })
}

fn largest_id(conn: &Connection) -> rusqlite::Result<u64> {
    let seq: Option<i64> = conn.query_row("SELECT MAX(last_id) FROM event_pages", [], |r| r.get(0))?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Deletes the oldest pages, in id order, while every event in them is older than `before`,
/// until at least `limit` events are gone (a page is deleted whole): pages are written in time
/// order, so this stops at the first one to keep without an index on time. The newest page
/// always stays (see the module's note on ids). Returns how many events it deleted.
pub(crate) fn prune(conn: &Connection, page: &EventPage, p: PruneEvents) -> Result<usize> {
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
    // Before the commit: should it fail, the ring only misses pages SQLite still has.
    page.pruned_through(last as u64);
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

    fn read(conn: &Connection, p: &ReadEvents) -> Result<Vec<Event>> {
        read_with(conn, p, parsed)
    }

    fn read_stored(conn: &Connection, p: &ReadEvents) -> Result<Vec<StoredEvent>> {
        read_with(conn, p, stored)
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
        let pruned = prune(&conn, &page, PruneEvents { before: at(10_000), limit: 300 }).unwrap();
        assert_eq!(pruned, 512);
        assert_eq!(
            prune(&conn, &page, PruneEvents { before: at(10_000), limit: 300 }).unwrap(),
            0,
            "the newest page stays"
        );
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever groups were committed, rolled back or pruned, a read the ring of recent
        /// pages answers is the read SQLite answers, and a read of the newest page is answered.
        #[test]
        fn the_ring_of_recent_pages_reads_as_sqlite_does(
            steps in proptest::collection::vec((0u8..4, 0u32..400), 1..14),
            (max_bytes, max_pages) in (1usize..20_000, 1usize..12),
        ) {
            let conn = database();
            let mut page = EventPage { recent: Arc::new(Mutex::new(RecentPages::bounded(max_bytes, max_pages))), ..Default::default() };
            let (mut at_ms, mut appended) = (0, 0u64);
            for (op, n) in steps {
                conn.execute_batch("BEGIN").unwrap();
                if op == 3 {
                    prune(&conn, &page, PruneEvents { before: at(at_ms), limit: n }).unwrap();
                } else {
                    for i in 0..n {
                        at_ms += 1;
                        page.push(&conn, &NewEvent::queue(&format!("q{i}"), true, at(at_ms))).unwrap();
                    }
                    page.write(&conn).unwrap();
                }
                if op == 2 {
                    conn.execute_batch("ROLLBACK").unwrap();
                    page.clear();
                    continue;
                }
                conn.execute_batch("COMMIT").unwrap();
                page.committed();
                let last = last_id(&conn).unwrap().seq;
                if op != 3 {
                    appended += u64::from(n);
                }
                proptest::prop_assert_eq!(last, appended, "ids run on from the last committed one: no gap where a group rolled back");
                if op != 3 && n > 0 {
                    proptest::prop_assert!(read_recent(&page.recent, &after(last - 1, 5), stored).is_some(), "the newest page is kept");
                }
                for from in (0..=last + 1).step_by(7).chain(last.saturating_sub(3)..=last + 1) {
                    for limit in [1, 9, 300, 2000] {
                        let p = after(from, limit);
                        if let Some(recent) = read_recent(&page.recent, &p, stored) {
                            let recent: Vec<_> = recent.unwrap().into_iter().map(|e| (e.id, e.json)).collect();
                            let sqlite: Vec<_> = read_stored(&conn, &p).unwrap().into_iter().map(|e| (e.id, e.json)).collect();
                            proptest::prop_assert_eq!(recent, sqlite, "after {}, limit {}", from, limit);
                        }
                    }
                }
            }
        }

        /// A task event packed into a page reads back as the very JSON the event serializes
        /// to, whatever its strings hold, from the page's start and from the middle.
        #[test]
        fn a_packed_task_event_reads_back_as_its_json(
            strings in proptest::collection::vec("\\PC{0,12}|[\"\\\\\n\u{0}-\u{1f}]{0,4}", 6),
            tags in proptest::collection::vec("\\PC{0,8}", 0..3),
            numbers in proptest::collection::vec(proptest::option::of(0u64..u64::MAX / 2), 3),
            micros in 0i64..253_402_300_799_999_999,
            fraction in proptest::option::of(0.0f64..1.0),
            type_index in 0..EventType::ALL.len(),
            with_ids in proptest::bool::ANY,
        ) {
            let text = |i: usize| strings[i].as_str();
            let packed = PackedTaskEvent {
                event_type: EventType::ALL[type_index].as_str(),
                at: micros,
                queue: text(0),
                kind: text(1),
                task_id: [7; 16],
                workflow_id: with_ids.then_some([9; 16]),
                attempt: numbers[0].map(|n| n as u32),
                tags,
                error: with_ids.then_some(text(2)),
                fraction,
                message: (!with_ids).then_some(text(3)),
                run_at: numbers[1].map(|n| n as i64),
                run_us: numbers[1],
                state: with_ids.then_some(text(4)),
                wait_us: numbers[2],
                worker_id: Some(text(5)),
            };
            let event = packed.event().unwrap();
            let json = serde_json::to_string(&event).unwrap();
            let conn = database();
            let mut page = EventPage::default();
            page.push(&conn, &NewEvent::queue("before", true, at(1))).unwrap();
            page.task_event(&conn, &event).unwrap();
            page.write(&conn).unwrap();
            for from in [0, 1] {
                let stored = read_stored(&conn, &after(from, 10)).unwrap();
                proptest::prop_assert_eq!(&stored.last().unwrap().json, &json);
                proptest::prop_assert_eq!(stored.last().unwrap().id.seq, 2);
            }
            // (Parsed, a fraction may come back a last digit off: serde_json parses floats fast.)
            let parsed = read(&conn, &after(1, 10)).unwrap();
            proptest::prop_assert_eq!(parsed[0].event.task_id, Some(TaskId::from_bytes([7; 16])));
            proptest::prop_assert_eq!(&parsed[0].event.tags, &event.tags.to_vec());
        }
    }

    #[test]
    fn pages_of_json_lines_written_before_read_on_with_packed_ones() {
        let conn = database();
        let task = TaskId::from_bytes([0xab; 16]);
        let lines = [
            r#"{"type":"task.submitted","at":"2027-01-15T08:00:00.000001Z","queue":"mail","kind":"send","task_id":"abababab-abab-abab-abab-abababababab","data":{"state":"ready"}}"#,
            r#"{"type":"task.started","at":"2027-01-15T08:00:00.000003Z","queue":"mail","kind":"send","task_id":"abababab-abab-abab-abab-abababababab","attempt":1,"data":{"wait_us":2,"worker_id":"w"}}"#,
        ]
        .join("\n");
        conn.execute(
            "INSERT INTO event_pages (last_id, first_id, last_at, events) VALUES (2, 1, 1800000000000003, ?1)",
            [&lines],
        )
        .unwrap();
        let mut page = EventPage::default();
        let packed = PackedTaskEvent {
            event_type: "task.succeeded",
            at: 1_800_000_000_000_009,
            queue: "mail",
            kind: "send",
            task_id: *task.as_bytes(),
            workflow_id: None,
            attempt: Some(1),
            tags: vec!["vip".to_owned()],
            error: None,
            fraction: None,
            message: None,
            run_at: None,
            run_us: Some(6),
            state: None,
            wait_us: None,
            worker_id: None,
        };
        let succeeded = packed.event().unwrap();
        page.task_event(&conn, &succeeded).unwrap();
        page.push(&conn, &NewEvent::queue("mail", true, at(1))).unwrap();
        page.write(&conn).unwrap();
        let all = read(&conn, &after(0, 10)).unwrap();
        assert_eq!(ids(&all), [1, 2, 3, 4]);
        let types: Vec<_> = all.iter().map(|e| e.event.event_type).collect();
        assert_eq!(
            types,
            [EventType::TaskSubmitted, EventType::TaskStarted, EventType::TaskSucceeded, EventType::QueuePaused]
        );
        assert_eq!(all[2].event, succeeded.to_new_event());
        for from in 0..4 {
            assert_eq!(ids(&read(&conn, &after(from, 10)).unwrap()), (from + 1..=4).collect::<Vec<_>>());
        }
        // The roll-up resuming inside either page measures each event as the whole event says
        // (a page it starts before, it takes summed).
        let measured = read_measures(&conn, &after(1, 10)).unwrap();
        assert_eq!(measured[0], Measured::Event(EventMeasure::of(&all[1])));
        assert!(matches!(measured[1], Measured::Summed { events: 2, .. }), "{measured:?}");
        let measured = read_measures(&conn, &after(3, 10)).unwrap();
        assert_eq!(measured, [Measured::Event(EventMeasure::of(&all[3]))]);
        let mut resumed = Rollup::default();
        read_measures(&conn, &after(2, 10)).unwrap().iter().for_each(|m| resumed.take_measured(m));
        let mut whole = Rollup::default();
        all[2..].iter().for_each(|e| whole.take(e));
        assert_eq!(resumed.into_rows(), whole.into_rows());
    }
}
