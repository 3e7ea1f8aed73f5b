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
