//! The storage conformance suite against the embedded SQLite backend, plus what only a file-backed
//! store can show (reopening).

use std::sync::Arc;

use taskwarden_store::conformance::{Harness, at};
use taskwarden_store::{SqliteConfig, SqliteStore, Store, SubmitTasks};

async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db"))).unwrap();
    Harness::new(Arc::new(store), dir)
}

taskwarden_store::conformance_tests!(sqlite());

#[tokio::test]
async fn with_the_event_log_off_changes_append_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig { event_log: false, ..SqliteConfig::new(dir.path().join("taskwarden.db")) };
    let store = SqliteStore::open(config).unwrap();
    taskwarden_store::conformance::with_the_event_log_off_changes_append_no_events(&store).await;
}

/// With relaxed durability most writes take another path (`Writer::write_small`: run on the
/// caller's thread when the writer is idle), so the whole suite runs on it too.
mod relaxed {
    use super::*;
    use taskwarden_store::Durability;

    async fn sqlite_relaxed() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SqliteConfig::new(dir.path().join("taskwarden.db"));
        config.durability = Durability::Relaxed;
        Harness::new(Arc::new(SqliteStore::open(config).unwrap()), dir)
    }

    taskwarden_store::conformance_tests!(sqlite_relaxed());
}

#[tokio::test]
async fn tasks_survive_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwarden.db");
    let id = {
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let spec =
            taskwarden_core::protocol::SubmitTask { queue: "q".into(), kind: "echo".into(), ..Default::default() }
                .validate(&Default::default(), at(0))
                .unwrap();
        let p = SubmitTasks { tasks: vec![spec], idempotency_window: std::time::Duration::from_secs(1), now: at(0) };
        store.submit(p).await.unwrap().remove(0).task.id
    };
    let reopened = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    assert_eq!(reopened.get(id).await.unwrap().queue, "q");
}

#[tokio::test]
async fn the_log_is_copied_back_into_the_database_off_the_write_path() {
    // The writer's own commits checkpoint only past 10,000 log pages; a background thread copies
    // the log back every 100 ms. So a few hundred submits (far fewer pages) still reach the
    // database file itself, and soon.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwarden.db");
    let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    for n in 0..300 {
        let spec = taskwarden_core::protocol::SubmitTask {
            queue: "q".into(),
            kind: "echo".into(),
            payload: Some(
                serde_json::value::to_raw_value(&serde_json::json!({ "n": n, "pad": "x".repeat(500) })).unwrap(),
            ),
            ..Default::default()
        }
        .validate(&Default::default(), at(0))
        .unwrap();
        let p = SubmitTasks { tasks: vec![spec], idempotency_window: std::time::Duration::from_secs(1), now: at(0) };
        store.submit(p).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&path).unwrap().len() <= before + 100_000 {
        assert!(std::time::Instant::now() < deadline, "the log was not copied back: {} bytes", before);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A small commit's events wait in their tasks' rows for a page (see `sqlite/events.rs`). What
/// a process killed then leaves (its committed transactions: a consistent copy of the database
/// taken while it runs) reads back, on the next open, as the same events with the same ids.
#[tokio::test]
async fn events_waiting_in_task_rows_when_the_process_dies_read_back_with_their_ids() {
    use taskwarden_core::events::EventId;
    use taskwarden_core::protocol::{Outcome, Report, SubmitTask};
    use taskwarden_store::{FetchTasks, ReadEvents, ReportOutcomes};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwarden.db");
    let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    let spec = || {
        SubmitTask { queue: "q".into(), kind: "echo".into(), tags: Some(vec!["t".into()]), ..Default::default() }
            .validate(&Default::default(), at(0))
            .unwrap()
    };
    for ms in 0..3 {
        let p = SubmitTasks { tasks: vec![spec()], idempotency_window: std::time::Duration::from_secs(1), now: at(ms) };
        store.submit(p).await.unwrap();
    }
    let fetch = FetchTasks {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        limit: 2,
        wait: std::time::Duration::ZERO,
        now: at(3),
        finished: vec![],
    };
    let leased = store.fetch(fetch).await.unwrap();
    let lease = leased[0].lease.as_ref().unwrap().token;
    let done = Outcome::Succeeded { result: serde_json::value::to_raw_value(&7).unwrap() };
    let report = ReportOutcomes { worker_id: None, reports: vec![Report::new(leased[0].id, lease, done)], now: at(4) };
    store.report(report).await.unwrap().remove(0).unwrap();
    let all = || ReadEvents { after: EventId::START, limit: 100 };
    let before = store.read_events(all()).await.unwrap();
    assert_eq!(before.len(), 6, "3 submitted, 2 started, 1 succeeded: {before:?}");

    // A second process opening the database meanwhile (a CLI command beside a server) neither
    // pages nor takes over what waits in rows: it does not hold the writer lock.
    let beside = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
    drop(beside);
    let pages = |db: &std::path::Path| -> i64 {
        let db = rusqlite::Connection::open(db).unwrap();
        db.query_row("SELECT COUNT(*) FROM event_pages", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(pages(&path), 0);

    let copy = dir.path().join("copy.db");
    SqliteStore::backup(&path, &copy).unwrap();
    {
        // The copy is what a kill leaves: the events in rows only, and the mark that says so.
        let db = rusqlite::Connection::open(&copy).unwrap();
        let pages: i64 = db.query_row("SELECT COUNT(*) FROM event_pages", [], |r| r.get(0)).unwrap();
        let clean: i64 = db.query_row("SELECT clean FROM event_tail", [], |r| r.get(0)).unwrap();
        assert_eq!((pages, clean), (0, 0), "the events were waiting in rows");
    }
    let reopened = SqliteStore::open(SqliteConfig::new(&copy)).unwrap();
    assert_eq!(reopened.read_events(all()).await.unwrap(), before);
    assert_eq!(reopened.last_event_id().await.unwrap(), before[5].id);
    let p = SubmitTasks { tasks: vec![spec()], idempotency_window: std::time::Duration::from_secs(1), now: at(5) };
    reopened.submit(p).await.unwrap();
    let next = reopened.read_events(ReadEvents { after: before[5].id, limit: 10 }).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id.seq, before[5].id.seq + 1, "ids go on after the recovered ones");
    let measured = reopened.read_event_measures(all()).await.unwrap();
    assert!(!measured.is_empty(), "the roll-up reads the recovered events");

    // A store closed in order pages what waited: the next open has nothing to look for.
    let p = SubmitTasks { tasks: vec![spec()], idempotency_window: std::time::Duration::from_secs(1), now: at(6) };
    store.submit(p).await.unwrap();
    store.close().await.unwrap();
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let clean: i64 = db.query_row("SELECT clean FROM event_tail", [], |r| r.get(0)).unwrap();
        let paged: i64 = db.query_row("SELECT MAX(last_id) FROM event_pages", [], |r| r.get(0)).unwrap();
        assert_eq!((clean, paged as u64), (1, before[5].id.seq + 1), "closed: all paged, nothing waits");
    }
    let p = SubmitTasks { tasks: vec![spec()], idempotency_window: std::time::Duration::from_secs(1), now: at(7) };
    store.submit(p).await.unwrap();
    assert_eq!(pages(&path), 2, "after closing, each commit pages its events");
    // Dropped without closing, the store pages what waited as its writer stops.
    drop(store);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let db = rusqlite::Connection::open(&path).unwrap();
        let clean: i64 = db.query_row("SELECT clean FROM event_tail", [], |r| r.get(0)).unwrap();
        let paged: i64 = db.query_row("SELECT COALESCE(MAX(last_id), 0) FROM event_pages", [], |r| r.get(0)).unwrap();
        if clean == 1 {
            assert_eq!(paged as u64, before[5].id.seq + 2);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closing store did not page its deferred events");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
