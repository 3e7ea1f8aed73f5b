//! The storage conformance suite against PostgreSQL, each case in a schema of its own. Skips (and
//! says so) when no PostgreSQL is reachable, unless `TASKWARDEN_REQUIRE_POSTGRES` is set.

use std::sync::Arc;

use taskwarden_store::conformance::Harness;
use taskwarden_store::pg_testing::TestSchema;
use taskwarden_store::{PgStore, Store};

async fn postgres() -> Option<Harness> {
    let schema = TestSchema::new("conf").await?;
    let store = PgStore::open(schema.config()).await.unwrap();
    Some(Harness::new(Arc::new(store), schema))
}

taskwarden_store::conformance_tests!(postgres());

#[tokio::test]
async fn with_the_event_log_off_changes_append_no_events() {
    let Some(schema) = TestSchema::new("quiet").await else { return };
    let store = PgStore::open(taskwarden_store::PgConfig { event_log: false, ..schema.config() }).await.unwrap();
    taskwarden_store::conformance::with_the_event_log_off_changes_append_no_events(&store).await;
}

#[tokio::test]
async fn migrations_run_once_when_nodes_start_together() {
    let Some(schema) = TestSchema::new("migrate").await else { return };
    let config = schema.config();
    let starts = (0..4).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { PgStore::migrate(&config, false).await.unwrap() })
    });
    let mut applied = 0;
    let mut latest = 0;
    for start in starts {
        let report = start.await.unwrap();
        applied += report.applied.len();
        latest = report.to;
    }
    assert_eq!(applied, latest, "each migration was applied once, by one node; the others found nothing to do");
    let again = PgStore::migrate(&config, false).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.from, again.to);
    let store = PgStore::open(taskwarden_store::PgConfig { migrate: false, ..config }).await.unwrap();
    store.ready().await.unwrap();
}

#[tokio::test]
async fn a_node_that_will_not_migrate_refuses_an_unmigrated_schema() {
    let Some(schema) = TestSchema::new("nomigrate").await else { return };
    let config = taskwarden_store::PgConfig { migrate: false, ..schema.config() };
    let err = PgStore::open(config).await.err().expect("an empty schema is refused");
    assert!(err.to_string().contains("taskwarden migrate"), "{err}");
}

#[tokio::test]
async fn a_wake_up_crosses_from_one_node_to_another() {
    use std::time::Duration;
    use taskwarden_core::Timestamp;
    use taskwarden_core::protocol::SubmitTask;
    use taskwarden_store::{FetchTasks, SubmitTasks};
    let Some(schema) = TestSchema::new("wake").await else { return };
    let a = PgStore::open(schema.config()).await.unwrap();
    let b = Arc::new(PgStore::open(schema.config()).await.unwrap());
    let now = Timestamp::from_millis(1_800_000_000_000);
    let parked = {
        let b = b.clone();
        tokio::spawn(async move {
            let p = FetchTasks {
                worker_id: "w".into(),
                queues: vec!["q".into()],
                limit: 1,
                wait: Duration::from_secs(20),
                now,
                finished: vec![],
            };
            let started = std::time::Instant::now();
            (b.fetch(p).await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = SubmitTask { queue: "q".into(), kind: "echo".into(), ..Default::default() }
        .validate(&Default::default(), now)
        .unwrap();
    let submitted =
        a.submit(SubmitTasks { tasks: vec![spec], idempotency_window: Duration::from_secs(60), now }).await.unwrap();
    let (got, waited) = parked.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, submitted[0].task.id);
    assert!(waited < Duration::from_secs(10), "woken by the notification, not by the wait running out");
}
