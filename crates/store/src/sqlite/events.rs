//! The event log on SQLite, kept in pages: the events a group commit appends are gathered by
//! the writer ([`EventPage`]) and written as one row just before the group commits. A row per
//! event cost the single writer an insert per state change (three per task that succeeds at
//! once), about a tenth of its time on a wide drain; a row per group costs it one insert per
//! commit. A small commit (up to [`ROW_EVENTS`] task events: a submit, a report) does not even
//! write that: its events ride in the task rows it writes anyway, and a later commit pages them
//! (see [`EventPage`] for when, and [`recover`] for a process that died first). A page of its
//! own had cost each small commit one more database page in the write-ahead log, a tenth of a
//! single submit's time in the store (`cargo run --release -p taskwarden-store --example
//! event_log_cost`).
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
//! writer, the log's only writer, keeps that largest id in memory once it has read it (with
//! the deferred events' ids, which follow it), and goes back to the committed one after a
//! rollback: a page is a plain insert, where asking SQLite for the next
//! id and back (`INSERT ... SELECT MAX ... RETURNING`, an ephemeral table per insert) had been
//! a tenth of the writer's time when each submit commits alone.
//!
//! The writer also keeps the pages it committed last in memory ([`RecentPages`]), and a read
//! that starts inside them is answered from there: a live stream reads just behind the writer,
//! and a read of SQLite after a commit begins with a cold page cache. The ring is pushed to
//! right after each commit, before anyone is answered or woken, so a reader that heard of a
//! commit finds its events there; a read starting before the ring goes to SQLite, and goes on
//! in the ring past the last page (the deferred events are in no page yet; the ring always
//! holds them, being far fewer than it keeps).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use taskwarden_core::events::{Event, EventId, EventType, NewEvent, PackedTaskEvent, StoredEvent, TaskEvent};
use taskwarden_core::stats::{EventMeasure, Measured, Rollup};
use taskwarden_core::{Task, TaskId, Timestamp};

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

/// How long, at most, a small commit's events wait in their tasks' rows for a page of their
/// own (see [`EventPage`]): the stats roll-up reads pages, so this is also how far it can lag.
const DEFER_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Most events a commit leaves in rows: a larger one writes a page (which its events share),
/// and its rows stay as small as without the log.
const ROW_EVENTS: u32 = 8;
/// Most bytes of events left in rows: far fewer than the ring of recent pages keeps, so that
/// it always holds every event no page does yet (readers find them there).
const DEFER_BYTES: usize = RECENT_BYTES / 8;

/// The event log's writing side, owned by the writer.
///
/// Most commits are small (a submit, a report, a lease of a few tasks), and a page of their own
/// cost each one a row, and so a database page, more: a fifth more log written per commit, and
/// a tenth of a small commit's time. So a commit whose events are all task events carries them
/// in its tasks' rows instead (the `events` column, written with the row the commit writes
/// anyway), and they are kept here, *deferred*, until a page holds them: when [`PAGE_EVENTS`]
/// have gathered, when the oldest has waited [`DEFER_FOR`], when a commit appends an event no
/// task row carries (a workflow's, a worker's, a queue's) or deletes tasks. The ring of recent
/// pages has them from their commit on, so readers see no difference.
///
/// A row's `events` holds each deferred event of its task with its id; one whose id a page
/// already holds is stale and ignored. Should the process die with events deferred, the next
/// open finds them in the rows and writes their pages ([`recover`]) before anything else: the
/// `event_tail` row says whether it may have to (set when this process first defers, cleared
/// once all is in pages at shutdown).
#[derive(Default)]
pub(crate) struct EventPage {
    /// The log is off (`SqliteConfig::event_log`): appends are dropped.
    off: bool,
    /// This process is the database's one writer (it holds the writer lock; see
    /// `SqliteStore::open`), so it may leave events in rows: another process opening the
    /// database would not know of them.
    may_defer: bool,
    /// The open transaction's events, not yet in a page.
    group: Gathered,
    /// Events of committed transactions, kept in their tasks' rows and not yet in a page.
    deferred: Gathered,
    /// When the first deferred event was deferred (the writer's time, microseconds).
    deferred_since: i64,
    /// The open transaction wrote the deferred events into a page.
    deferred_paged: bool,
    /// Each task's deferred events and the open transaction's, with their ids, as its row holds them.
    rows: HashMap<TaskId, Vec<u8>>,
    /// How to take back the open transaction's changes to `rows`: the task, and its entry's
    /// length before (`None`: it had none).
    undo: Vec<(TaskId, Option<usize>)>,
    /// The open transaction appended an event no row carries, or deleted tasks: its commit
    /// writes every event into a page.
    page_now: bool,
    /// The writer's time at the open transaction's last write.
    now: i64,
    /// Pages written, ever.
    pages: u64,
    /// The largest id in a page, as the open transaction leaves it, once read from the table.
    paged: Option<u64>,
    /// The same, as the last commit left it.
    committed_paged: Option<u64>,
    /// `event_tail` says events may be deferred (set once by this process, in the transaction
    /// that first defers); and whether the open transaction set it.
    tail_marked: bool,
    marking_tail: bool,
    /// The open transaction's events, for the ring once it commits: (first id, records).
    written: Vec<RecentPage>,
    /// The pages committed last.
    recent: Arc<Mutex<RecentPages>>,
    /// The queue of the last task event appended, for the next one's measure: events come in
    /// runs of one queue, and a name made per event was an allocation per event on the writer.
    queue: Option<Arc<str>>,
}

/// Packed events and what the roll-up takes of each.
#[derive(Default)]
struct Gathered {
    /// The packed [`Record`]s.
    records: Vec<u8>,
    count: u32,
    last_at: i64,
    measures: Vec<EventMeasure>,
}

impl Gathered {
    fn clear(&mut self) {
        self.records.clear();
        self.measures.clear();
        self.count = 0;
        self.last_at = 0;
    }

    fn append(&mut self, other: &Gathered) {
        self.records.extend_from_slice(&other.records);
        self.measures.extend_from_slice(&other.measures);
        self.count += other.count;
        self.last_at = self.last_at.max(other.last_at);
    }
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

    /// The newest event's id.
    fn last(&self) -> Option<u64> {
        self.pages.back().map(RecentPage::last)
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

/// Appends `e` as a [`Record::Task`] to `out`, in the very bytes `postcard` makes of one (a
/// property test holds the two equal), written directly: half the time serde's way took per
/// event on the single writer (about 70 ns against 130-150, a 60-byte event).
fn pack_task_record(out: &mut Vec<u8>, e: &PackedTaskEvent<'_, &[String]>) {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn zigzag(out: &mut Vec<u8>, v: i64) {
        varint(out, ((v << 1) ^ (v >> 63)) as u64);
    }
    fn text(out: &mut Vec<u8>, s: &str) {
        varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    fn option<T: Copy>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                write(out, v);
            }
        }
    }
    out.reserve(64 + e.event_type.len() + e.queue.len() + e.kind.len() + e.worker_id.map_or(0, str::len));
    out.push(0); // the variant: Record::Task
    text(out, e.event_type);
    zigzag(out, e.at);
    text(out, e.queue);
    text(out, e.kind);
    out.extend_from_slice(&e.task_id);
    option(out, e.workflow_id, |out, id| out.extend_from_slice(&id));
    option(out, e.attempt, |out, n| varint(out, u64::from(n)));
    varint(out, e.tags.len() as u64);
    e.tags.iter().for_each(|t| text(out, t));
    option(out, e.error, text);
    option(out, e.fraction, |out, f| out.extend_from_slice(&f.to_le_bytes()));
    option(out, e.message, text);
    option(out, e.run_at, zigzag);
    option(out, e.run_us, varint);
    option(out, e.state, text);
    option(out, e.wait_us, varint);
    option(out, e.worker_id, text);
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

#[derive(Clone, Copy)]
pub(crate) struct PageMark {
    len: usize,
    count: u32,
    measures: usize,
    last_at: i64,
    pages: u64,
    undo: usize,
    page_now: bool,
}

impl EventPage {
    pub(crate) fn new(log: bool, may_defer: bool) -> EventPage {
        EventPage { off: !log, may_defer, ..Default::default() }
    }

    /// Appends the event the task's last transition noted, if any. Returns what the task's row
    /// is to hold in its `events` column (see [`EventPage`]): the task's events not yet in a
    /// page, each with its id.
    pub(crate) fn task(&mut self, conn: &Connection, task: &Task) -> rusqlite::Result<Option<Vec<u8>>> {
        if self.off {
            return Ok(None);
        }
        match TaskEvent::of(task) {
            Some(e) => self.task_event(conn, task.id, &e),
            None => Ok(self.rows.get(&task.id).cloned()),
        }
    }

    fn task_event(&mut self, conn: &Connection, task: TaskId, e: &TaskEvent<'_>) -> rusqlite::Result<Option<Vec<u8>>> {
        let id = self.paged(conn)? + u64::from(self.pending()) + 1;
        self.group.measures.push(e.measure_sharing(EventId::START, &mut self.queue));
        let start = self.group.records.len();
        self.append(e.at, |records| pack_task_record(records, &e.pack()));
        let row = if self.page_now || !self.may_defer || self.group.count > ROW_EVENTS {
            // This commit writes a page, which will hold every event its rows would.
            self.page_now = true;
            None
        } else {
            self.undo.push((task, self.rows.get(&task).map(Vec::len)));
            let row = self.rows.entry(task).or_default();
            *row = postcard::to_extend(&id, std::mem::take(row)).expect("an id packs");
            row.extend_from_slice(&self.group.records[start..]);
            Some(row.clone())
        };
        if self.pending() == PAGE_EVENTS {
            self.write(conn)?;
        }
        Ok(row)
    }

    /// Appends an event no task's row carries (a workflow's, a worker's, a queue's): the
    /// transaction's commit writes a page.
    pub(crate) fn push(&mut self, conn: &Connection, e: &NewEvent) -> rusqlite::Result<()> {
        if self.off {
            return Ok(());
        }
        self.group.measures.push(EventMeasure::of_new(EventId::START, e));
        let line = serde_json::to_string(e).expect("an event serializes");
        self.append(e.at, |records| {
            *records = postcard::to_extend(&Record::<&[String]>::Line(&line), std::mem::take(records))
                .expect("a record packs");
        });
        self.page_now = true;
        if self.pending() == PAGE_EVENTS { self.write(conn) } else { Ok(()) }
    }

    /// The open transaction deletes tasks, whose rows may carry deferred events: its commit
    /// writes them into a page.
    pub(crate) fn page_at_commit(&mut self) {
        self.page_now = true;
    }

    /// Appends one record, which `pack` writes.
    fn append(&mut self, at: Timestamp, pack: impl FnOnce(&mut Vec<u8>)) {
        let g = &mut self.group;
        pack(&mut g.records);
        g.count += 1;
        g.last_at = g.last_at.max(at.as_micros());
    }

    /// Events not yet in a page: the deferred ones (unless the open transaction paged them) and
    /// the open transaction's.
    fn pending(&self) -> u32 {
        self.group.count + if self.deferred_paged { 0 } else { self.deferred.count }
    }

    /// The largest id in a page, as the open transaction leaves it.
    fn paged(&mut self, conn: &Connection) -> rusqlite::Result<u64> {
        if let Some(paged) = self.paged {
            return Ok(paged);
        }
        // Not read yet, so the open transaction wrote no page: the table has the committed one.
        let paged = largest_id(conn)?;
        self.paged = Some(paged);
        self.committed_paged = Some(paged);
        Ok(paged)
    }

    /// Called just before each commit, at the writer's time `now`: writes the events not yet in
    /// a page into one, or leaves the open transaction's deferred in their rows (see
    /// [`EventPage`]).
    pub(crate) fn before_commit(&mut self, conn: &Connection, now: Timestamp) -> rusqlite::Result<()> {
        if self.off {
            return Ok(());
        }
        self.now = now.as_micros();
        let waited = !self.deferred_paged
            && self.deferred.count > 0
            && self.now.saturating_sub(self.deferred_since) >= DEFER_FOR.as_micros() as i64;
        let bytes = self.deferred.records.len() + self.group.records.len();
        if self.page_now || self.deferred_paged || !self.may_defer || bytes > DEFER_BYTES {
            return self.write(conn);
        }
        if waited {
            // A page for the deferred events, another for this commit's: a page's events stay
            // close in time, so that pruning by age takes them when it should.
            let group = std::mem::take(&mut self.group);
            let paged = self.write(conn);
            self.group = group;
            paged?;
            return self.write(conn);
        }
        if self.group.count > 0 && !self.tail_marked && !self.marking_tail {
            conn.prepare_cached("UPDATE event_tail SET clean = 0 WHERE id = 1")?.execute([])?;
            self.marking_tail = true;
        }
        Ok(())
    }

    /// Writes every event not yet in a page as one page, numbered on from the largest id.
    pub(crate) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let deferred = if self.deferred_paged { 0 } else { self.deferred.count };
        let count = deferred + self.group.count;
        if count == 0 {
            return Ok(());
        }
        let mut sums = Rollup::default();
        if deferred > 0 {
            self.deferred.measures.iter().for_each(|m| sums.take_measure(m));
        }
        self.group.measures.iter().for_each(|m| sums.take_measure(m));
        let stats = serde_json::to_string(&sums.into_rows()).expect("rows serialize");
        let before = self.paged(conn)?;
        let (first, last) = (before + 1, before + u64::from(count));
        let (records, last_at) = if deferred > 0 {
            let mut records = Vec::with_capacity(self.deferred.records.len() + self.group.records.len());
            records.extend_from_slice(&self.deferred.records);
            records.extend_from_slice(&self.group.records);
            (Cow::Owned(records), self.deferred.last_at.max(self.group.last_at))
        } else {
            (Cow::Borrowed(self.group.records.as_slice()), self.group.last_at)
        };
        conn.prepare_cached(
            "INSERT INTO event_pages (last_id, first_id, last_at, events, stats) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![last as i64, first as i64, last_at, records.as_ref(), stats])?;
        self.paged = Some(last);
        if self.group.count > 0 {
            let first = first + u64::from(deferred);
            self.written.push(RecentPage {
                first,
                count: self.group.count,
                records: self.group.records.as_slice().into(),
            });
        }
        self.deferred_paged |= deferred > 0;
        self.group.clear();
        self.pages += 1;
        Ok(())
    }

    /// The open transaction has committed: readers may now have its events from memory, and
    /// those it left in their rows are deferred.
    pub(crate) fn committed(&mut self) {
        if self.group.count == 0 && (self.deferred_paged || self.deferred.count == 0) {
            // Every event is in a page: no row holds one that is not.
            self.rows.clear();
        }
        if self.deferred_paged {
            self.deferred.clear();
            self.deferred_paged = false;
        }
        if self.group.count > 0 {
            let first = self.paged.unwrap_or(0) + u64::from(self.deferred.count) + 1;
            self.written.push(RecentPage {
                first,
                count: self.group.count,
                records: self.group.records.as_slice().into(),
            });
            if self.deferred.count == 0 {
                self.deferred_since = self.now;
            }
            self.deferred.append(&self.group);
            self.group.clear();
        }
        self.undo.clear();
        self.page_now = false;
        self.committed_paged = self.paged;
        self.tail_marked |= std::mem::take(&mut self.marking_tail);
        if self.written.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().expect("recent pages lock");
        for page in self.written.drain(..) {
            recent.push(page);
        }
    }

    /// At shutdown, in a transaction: writes the deferred events into a page, notes that no row
    /// holds any still deferred, and defers none from now on.
    pub(crate) fn close(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.may_defer = false;
        self.write(conn)?;
        if self.tail_marked || self.marking_tail {
            conn.prepare_cached("UPDATE event_tail SET clean = 1 WHERE id = 1")?.execute([])?;
        }
        Ok(())
    }

    /// Pages up to id `last` were deleted.
    pub(crate) fn pruned_through(&self, last: u64) {
        self.recent.lock().expect("recent pages lock").forget_through(last);
    }

    /// The ring of committed pages, for the store's readers.
    pub(crate) fn recent(&self) -> Arc<Mutex<RecentPages>> {
        self.recent.clone()
    }

    /// Where the open transaction stands, to go back to should the next operation be refused.
    pub(crate) fn mark(&self) -> PageMark {
        PageMark {
            len: self.group.records.len(),
            count: self.group.count,
            measures: self.group.measures.len(),
            last_at: self.group.last_at,
            pages: self.pages,
            undo: self.undo.len(),
            page_now: self.page_now,
        }
    }

    /// Forgets the events appended since `mark`, unless a page was written since (then the
    /// refused operation wrote, and its whole group is rolled back).
    pub(crate) fn back_to(&mut self, mark: PageMark) {
        if self.pages == mark.pages {
            self.group.records.truncate(mark.len);
            self.group.measures.truncate(mark.measures);
            self.group.count = mark.count;
            self.group.last_at = mark.last_at;
            self.undo_rows(mark.undo);
            self.page_now = mark.page_now;
        }
    }

    /// Forgets what the open transaction appended and wrote: it was rolled back. The deferred
    /// events stay, in rows as committed.
    pub(crate) fn clear(&mut self) {
        self.written.clear();
        self.group.clear();
        self.undo_rows(0);
        self.deferred_paged = false;
        self.page_now = false;
        self.marking_tail = false;
        self.paged = self.committed_paged;
    }

    fn undo_rows(&mut self, to: usize) {
        while self.undo.len() > to {
            let (task, len) = self.undo.pop().expect("an undo entry");
            match len {
                Some(len) => self.rows.get_mut(&task).expect("an entry undone").truncate(len),
                None => drop(self.rows.remove(&task)),
            }
        }
    }
}

/// After a process that deferred events died (`event_tail` says so), writes the events its
/// tasks' rows hold that no page does into pages, with their ids, in id order. Runs in the
/// caller's transaction, before the writer starts. Returns how many it wrote.
pub(crate) fn recover(conn: &Connection) -> rusqlite::Result<usize> {
    let clean: i64 = conn.query_row("SELECT clean FROM event_tail WHERE id = 1", [], |r| r.get(0))?;
    if clean != 0 {
        return Ok(0);
    }
    let last = largest_id(conn)?;
    let mut found = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare("SELECT events FROM tasks WHERE events IS NOT NULL")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let Ok(mut rest) = row.get_ref(0)?.as_blob() else { continue };
        while !rest.is_empty() {
            let parsed = postcard::take_from_bytes::<u64>(rest)
                .and_then(|(id, record)| Ok((id, record, postcard::take_from_bytes::<Stored<'_>>(record)?.1)));
            let Ok((id, record, after)) = parsed else {
                tracing::warn!("a task row's waiting events cannot be read; skipping them");
                break;
            };
            if id > last {
                found.insert(id, record[..record.len() - after.len()].to_vec());
            }
            rest = after;
        }
    }
    let mut page = EventPage { paged: Some(last), ..Default::default() };
    for (&id, record) in &found {
        let next = page.paged.unwrap_or(last) + u64::from(page.group.count) + 1;
        if id != next {
            tracing::warn!(
                expected = next,
                found = id,
                "the deferred events' ids skip; the log goes on from the next found"
            );
            page.write(conn)?;
            page.paged = Some(id - 1);
        }
        let Ok(Record::Task(packed)) = postcard::from_bytes::<Stored<'_>>(record) else {
            continue; // rows carry task events only
        };
        let Ok(event) = unpacked(&packed) else {
            tracing::warn!(id, "a waiting event of a type this build does not know; skipped");
            continue;
        };
        page.group.measures.push(event.measure(EventId::START));
        page.group.records.extend_from_slice(record);
        page.group.count += 1;
        page.group.last_at = page.group.last_at.max(event.at.as_micros());
        if page.group.count == PAGE_EVENTS {
            page.write(conn)?;
        }
    }
    page.write(conn)?;
    conn.execute("UPDATE event_tail SET clean = 1 WHERE id = 1", [])?;
    Ok(found.len())
}

/// One event of a page, as read.
type Stored<'a> = Record<'a, Vec<String>>;

impl Stored<'_> {
    /// The event as the API serves it, less its id, made in `scratch` if need be.
    fn line<'s>(&'s self, scratch: &'s mut String) -> rusqlite::Result<&'s str> {
        match self {
            Record::Line(line) => Ok(line),
            Record::Task(packed) => {
                let event = unpacked(packed)?;
                scratch.clear();
                event.write_json(scratch);
                Ok(scratch)
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
    let mut scratch = String::new();
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
    let mut scratch = String::new();
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

/// The newest committed event's id in the ring of recent pages, if it holds any.
pub(crate) fn last_recent(recent: &Mutex<RecentPages>) -> Option<u64> {
    recent.lock().expect("recent pages lock").last()
}

/// What the roll-up takes of an event, from its line.
pub(crate) fn measured(id: EventId, line: &str) -> rusqlite::Result<Measured> {
    let e: MeasureIn = serde_json::from_str(line).map_err(unreadable)?;
    let data = e.data.unwrap_or_default();
    Ok(Measured::Event(EventMeasure {
        id,
        at: e.at,
        event_type: e.event_type,
        queue: e.queue.as_deref().map(Into::into),
        of_task: e.task_id.is_some(),
        run_us: data.run_us,
        wait_us: data.wait_us,
    }))
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
        measured(id, line)
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
/// always stays (see the module's note on ids), after the deferred events are written into it
/// (see [`EventPage`]). Returns how many events it deleted.
pub(crate) fn prune(conn: &Connection, page: &mut EventPage, p: PruneEvents) -> Result<usize> {
    // Deferred events first into a page: the newest page must hold the largest id.
    page.write(conn).map_err(internal)?;
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
        let pruned = prune(&conn, &mut page, PruneEvents { before: at(10_000), limit: 300 }).unwrap();
        assert_eq!(pruned, 512);
        assert_eq!(
            prune(&conn, &mut page, PruneEvents { before: at(10_000), limit: 300 }).unwrap(),
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
                    prune(&conn, &mut page, PruneEvents { before: at(at_ms), limit: n }).unwrap();
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

        /// The writer's own packing of a task event makes the bytes `postcard` makes of it, so
        /// pages written before it and after it read alike: every field, each present or not,
        /// at the edges of each varint's width.
        #[test]
        fn a_task_record_packs_as_postcard_packs_it(
            strings in proptest::collection::vec("\\PC{0,200}", 8),
            tags in proptest::collection::vec("\\PC{0,8}", 0..200),
            ints in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::any::<i64>(),
                -300i64..300,
                proptest::sample::select(vec![i64::MIN, i64::MAX, 127, 128, 16_383, 16_384, 1_800_000_000_000_000]),
            ], 5),
            present in proptest::collection::vec(proptest::prelude::any::<bool>(), 10),
            fraction in proptest::prelude::any::<f64>(),
            ids in proptest::prelude::any::<([u8; 16], [u8; 16])>(),
        ) {
            fn some<T>(present: &[bool], i: usize, v: T) -> Option<T> {
                present[i].then_some(v)
            }
            let p = &present;
            let e = PackedTaskEvent {
                event_type: &strings[0],
                at: ints[0],
                queue: &strings[1],
                kind: &strings[2],
                task_id: ids.0,
                workflow_id: some(p, 0, ids.1),
                attempt: some(p, 1, ints[1] as u32),
                tags: tags.as_slice(),
                error: some(p, 2, strings[3].as_str()),
                fraction: some(p, 3, fraction),
                message: some(p, 4, strings[4].as_str()),
                run_at: some(p, 5, ints[2]),
                run_us: some(p, 6, ints[3] as u64),
                state: some(p, 7, strings[5].as_str()),
                wait_us: some(p, 8, ints[4] as u64),
                worker_id: some(p, 9, strings[6].as_str()),
            };
            let mut ours = b"before".to_vec();
            pack_task_record(&mut ours, &e);
            let theirs = postcard::to_extend(&Record::Task(e), b"before".to_vec()).unwrap();
            proptest::prop_assert_eq!(ours, theirs);
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
            page.task_event(&conn, TaskId::from_bytes([1; 16]), &event).unwrap();
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
        page.task_event(&conn, TaskId::from_bytes([1; 16]), &succeeded).unwrap();
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
