//! The fetch path's queries keep their intended plans whatever the statistics say. `ANALYZE` runs
//! at the two worst moments (every task ready; then most finished, with the statistics from when
//! all were ready still in place until re-analyzed), and each query must use its partial index
//! and touch about as many pages at the end of a drain as at the start. Before this test, the
//! longest-waiting query (`ORDER BY id`) was planned after the first `ANALYZE` as a scan of the
//! primary key that stepped over every finished row.

use std::time::Duration;

use taskwarden_core::protocol::{Outcome, Report, SubmitTask};
use taskwarden_core::{Limits, Timestamp};
use taskwarden_store::pg_plans::FETCH;
use taskwarden_store::pg_testing::TestSchema;
use taskwarden_store::{FetchTasks, PgStore, ReportOutcomes, Store, SubmitTasks};

const TASKS: usize = 20_000;
const WINDOW: i64 = 256;

async fn connect(schema: &TestSchema) -> tokio_postgres::Client {
    let (client, connection) =
        schema.url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("SET search_path TO {}", schema.name)).await.unwrap();
    client
}

/// The plan of each fetch query, run for real: its text, and the pages it touched.
async fn plans(db: &tokio_postgres::Client) -> Vec<(&'static str, &'static str, String, u64)> {
    let mut out = Vec::new();
    for (name, sql, index) in FETCH {
        // `$3`: a worker that did not say which kinds it runs (the kind filter lets every row by).
        let rows = db.query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[&"q", &WINDOW, &"w"]).await.unwrap();
        let text: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let text = text.join("\n");
        // "Buffers: shared hit=12 read=3" on the top node counts everything below it.
        let pages = text
            .lines()
            .find(|l| l.trim_start().starts_with("Buffers:"))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_digit() && c != '=')
                    .filter_map(|w| w.strip_prefix('='))
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        out.push((*name, *index, text, pages));
    }
    out
}

fn assert_on_index(when: &str, plans: &[(&str, &str, String, u64)]) {
    for (name, index, text, pages) in plans {
        let on_index = text.contains(&format!("using {index} on tasks"));
        assert!(on_index && !text.contains("tasks_pkey"), "{when}: {name} is not on {index}:\n{text}");
        println!("{when}: {name}: {pages} pages");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_queries_stay_on_their_indexes_whatever_analyze_saw() {
    let Some(schema) = TestSchema::new("plans").await else { return };
    let store = PgStore::open(schema.config()).await.unwrap();
    let db = connect(&schema).await;
    let now = Timestamp::from_millis(1_800_000_000_000);
    let spec = || SubmitTask { queue: "q".into(), kind: "echo".into(), ..Default::default() };
    for _ in 0..TASKS / 1000 {
        let tasks = (0..1000).map(|_| spec().validate(&Limits::default(), now).unwrap()).collect();
        store.submit(SubmitTasks { tasks, idempotency_window: Duration::from_secs(60), now }).await.unwrap();
    }

    // The first worst moment: every task ready, so the statistics say state = 'ready' is all.
    db.batch_execute("ANALYZE tasks").await.unwrap();
    let start = plans(&db).await;
    assert_on_index("all ready, just analyzed", &start);

    // Drain nine tenths without analyzing again: the statistics still say everything is ready.
    let mut done = 0;
    while done < TASKS * 9 / 10 {
        let fetch = FetchTasks {
            worker_id: "w".into(),
            queues: vec!["q".into()],
            limit: 1000,
            wait: Duration::ZERO,
            now,
            finished: vec![],
        };
        let leased = store.fetch(fetch).await.unwrap();
        let reports = leased
            .iter()
            .map(|t| {
                let done = Outcome::Succeeded { result: serde_json::value::RawValue::from_string("1".into()).unwrap() };
                Report::new(t.id, t.lease.as_ref().unwrap().token, done)
            })
            .collect();
        store.report(ReportOutcomes { worker_id: None, reports, now }).await.unwrap();
        done += leased.len();
    }
    let stale = plans(&db).await;
    assert_on_index("most finished, statistics from when all were ready", &stale);

    // The second: analyzed with most tasks finished.
    db.batch_execute("ANALYZE tasks").await.unwrap();
    let end = plans(&db).await;
    assert_on_index("most finished, just analyzed", &end);

    let heap_pages: i32 = db
        .query_one(
            "SELECT relpages FROM pg_class WHERE relname = 'tasks' AND relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for (when, later) in [("with stale statistics", &stale), ("re-analyzed", &end)] {
        for (name, _, text, pages) in later.iter() {
            // Flat: a fetch reads the ready tasks and the index entries of those that finished since
            // the last vacuum, not the finished rows' heap (the whole table, but for the ready tenth).
            println!("{when}: {name}: {pages} pages; the table has {heap_pages}");
            assert!(*pages < heap_pages as u64 / 3, "{when}: {name} touched {pages} of {heap_pages} pages:\n{text}");
        }
    }
}

/// A large enqueue gets the task table analyzed by the node itself, before any task is fetched:
/// otherwise the drain that follows plans its fetches on statistics from an empty table and
/// sorts every ready task on each fetch (the end-to-end benchmark ran at half its rate, or not,
/// depending on when autovacuum came by).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_enqueue_is_analyzed_before_the_drain_plans_on_it() {
    let Some(schema) = TestSchema::new("enqueue_analyzed").await else { return };
    let store = PgStore::open(schema.config()).await.unwrap();
    let db = connect(&schema).await;
    let now = Timestamp::from_millis(1_800_000_000_000);
    let spec = || SubmitTask { queue: "q".into(), kind: "echo".into(), ..Default::default() };
    for _ in 0..60 {
        let tasks = (0..1000).map(|_| spec().validate(&Limits::default(), now).unwrap()).collect();
        store.submit(SubmitTasks { tasks, idempotency_window: Duration::from_secs(60), now }).await.unwrap();
    }
    let sql = "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables \
               WHERE schemaname = current_schema() AND relname = 'tasks'";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !db.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
        assert!(std::time::Instant::now() < deadline, "60,000 new tasks and the table was never analyzed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_on_index("after a large enqueue, nothing fetched yet", &plans(&db).await);
}
