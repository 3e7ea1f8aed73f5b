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
