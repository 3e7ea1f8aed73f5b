//! `taskwarden bench --only shape`: the shape users run, and the one other job queues are
//! measured in. One client submits one task per call and awaits each; the tasks it queued are
//! drained by 2 worker processes of 16 slots; pickup is measured with tasks arriving at 100 a
//! second. Beside each, in the same run, the figure it is bounded by or compared with: the disk's
//! own fdatasync rate (or, on PostgreSQL, the database's single-client commit rate), the drain by
//! one 512-slot worker, and (PostgreSQL) the same drain after a batch enqueue.

use std::io::Write;
use std::time::{Duration, Instant};

use taskwarden_client::Client;

use super::{
    Backend, BenchArgs, Pace, drain_queued, enqueue, percentile, pickup, report, start_server, submit_from_clients,
};

/// fdatasyncs a second on the disk under `dir`, as SQLite's commit would do them: a 4 KiB write
/// and a sync, for one second.
fn fdatasync_rate(dir: &std::path::Path) -> anyhow::Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

/// Single-row commits a second of SQLite itself (WAL, `synchronous = FULL`) on the disk under
/// `dir`: one INSERT of a small row per transaction, for one second. What a durable single submit
/// could reach if it did nothing but SQLite's own work.
fn sqlite_commit_rate(dir: &std::path::Path) -> anyhow::Result<f64> {
    let path = dir.join("commit-probe.db");
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; CREATE TABLE t (n INTEGER, s TEXT)")?;
    let mut insert = conn.prepare("INSERT INTO t VALUES (?1, 'a small row, like a no-op task')")?;
    let started = Instant::now();
    let mut n = 0i64;
    while started.elapsed() < Duration::from_secs(1) {
        insert.execute([n])?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(insert);
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("commit-probe.db{suffix}")));
    }
    Ok(rate)
}

/// Single-client commits a second on PostgreSQL: a one-row INSERT per transaction, for one second.
async fn pg_commit_rate(url: &str) -> anyhow::Result<f64> {
    let (client, connection) = url.parse::<tokio_postgres::Config>()?.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // A table of its own, not a temporary one: temporary tables skip the write-ahead log, and so
    // the very fsync this is meant to measure.
    let table = format!("taskwarden_commit_probe_{}", std::process::id());
    client.batch_execute(&format!("CREATE TABLE {table} (n int8)")).await?;
    let insert = client.prepare(&format!("INSERT INTO {table} VALUES ($1)")).await?;
    let started = Instant::now();
    let mut n = 0i64;
    while started.elapsed() < Duration::from_secs(1) {
        client.execute(&insert, &[&n]).await?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    client.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(rate)
}

/// Requests a second that do nothing but cross HTTP: one client calling `/healthz` and awaiting
/// each answer, for one second. The floor under every submit that is not the store's.
async fn http_round_trip_rate(client: &Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        client.live().await?;
        n += 1;
    }
    Ok(f64::from(n) / started.elapsed().as_secs_f64())
}

/// Single submits a second straight into a store of the same kind, opened in this process, one
/// awaited at a time for one second: what a durable submit costs the store with no HTTP, JSON or
/// server around it. A fresh database file (SQLite) or schema (PostgreSQL), dropped afterwards.
async fn store_submit_rate(backend: &Backend<'_>, dir: &std::path::Path, run: usize) -> anyhow::Result<f64> {
    use taskwarden_store::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store, SubmitTasks};
    let (store, pg): (Box<dyn Store>, Option<PgConfig>) = match backend {
        Backend::Sqlite { durability, .. } => {
            let mut config = SqliteConfig::new(dir.join(format!("store-probe-{run}")).join("tasks.db"));
            config.durability = durability.parse().map_err(anyhow::Error::msg)?;
            (Box::new(SqliteStore::open(config)?), None)
        }
        Backend::Postgres { url, schema } => {
            let config = PgConfig { schema: format!("{schema}_probe"), pool_size: 2, ..PgConfig::new(*url) };
            (Box::new(PgStore::open(config.clone()).await?), Some(config))
        }
    };
    let limits = taskwarden_core::Limits::default();
    let now = || taskwarden_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        let task = super::noop("probe").validate(&limits, now())?;
        let call = SubmitTasks { tasks: vec![task], idempotency_window: Duration::from_secs(60), now: now() };
        store.submit(call).await?;
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    drop(store);
    match pg {
        Some(config) => PgStore::drop_schema(&config).await?,
        None => std::fs::remove_dir_all(dir.join(format!("store-probe-{run}")))?,
    }
    Ok(rate)
}

pub(super) async fn run(args: &BenchArgs, backend: &Backend<'_>, dir: &std::path::Path) -> anyhow::Result<()> {
    let (_server, url) = start_server(backend, &[])?;
    let client = Client::new(&url)?;
    let subscriber = match args.subscribe {
        true => Some(super::Subscriber::start(&url).await?),
        false => None,
    };
    let n = args.shape_tasks;
    let pg = matches!(backend, Backend::Postgres { .. });
    let store = if pg { "PostgreSQL" } else { "SQLite, durability full" };
    println!("taskwarden bench, the users' shape: {store}, {n} tasks a run, {} runs, median reported", args.runs);
    let two = [url.clone(), url.clone()];
    let (mut single, mut ceiling, mut small, mut small_batched, mut wide) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut p50, mut p99, mut sqlite_rows) = (vec![], vec![], vec![]);
    let (mut store_alone, mut http) = (vec![], vec![]);
    for run in 0..args.runs {
        // One client, one task per call, each awaited: the tasks 2 x 16 slots then drain.
        let q = format!("shape{run}");
        single.push(submit_from_clients(&url, &q, 1, n, 1).await?);
        ceiling.push(match backend {
            Backend::Postgres { url, .. } => pg_commit_rate(url).await?,
            Backend::Sqlite { .. } => fdatasync_rate(dir)?,
        });
        if !pg {
            sqlite_rows.push(sqlite_commit_rate(dir)?);
        }
        store_alone.push(store_submit_rate(backend, dir, run).await?);
        http.push(http_round_trip_rate(&client).await?);
        small.push(drain_queued(&two, &client, &q, n, 16, &[]).await?);

        let q = format!("shape-batched{run}");
        enqueue(&client, &q, n, 1000).await?;
        small_batched.push(drain_queued(&two, &client, &q, n, 16, &[]).await?);
        let q = format!("shape-wide{run}");
        enqueue(&client, &q, n, 1000).await?;
        wide.push(drain_queued(std::slice::from_ref(&url), &client, &q, n, 512, &[]).await?);

        let q = format!("shape-pickup{run}");
        let every = Pace::Every(Duration::from_millis(10));
        let mut lat = pickup(&url, Default::default(), &client, &q, 300, 16, every).await?;
        lat.sort();
        p50.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
        p99.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);
        println!(
            "run {}: single {:.0}/s (ceiling {:.0}/s), drain 2x16 {:.0}/s (after batches {:.0}/s), 1x512 {:.0}/s, pickup p50 {:.2} ms p99 {:.2} ms",
            run + 1,
            single[run],
            ceiling[run],
            small[run],
            small_batched[run],
            wide[run],
            p50[run],
            p99[run]
        );
    }
    let ratio = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    let ceiling_name =
        if pg { "the database's single-client commits (one-row INSERT each)" } else { "the disk's fdatasyncs" };
    println!();
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    report("single submits, one client, each awaited", "tasks/s", &single);
    report(&format!("  {ceiling_name}, same run"), "per s", &ceiling);
    report("  single submits as a share of that", "ratio", &ratio(&single, &ceiling));
    report("  SQLite's own single-row commits (WAL, synchronous FULL), same run", "per s", &sqlite_rows);
    report("  single submits as a share of that", "ratio", &ratio(&single, &sqlite_rows));
    report("  HTTP round trips alone (`/healthz`, one client, each awaited)", "per s", &http);
    // No durably acknowledged submit over HTTP can beat one round trip plus one commit (or sync):
    // the answer cannot leave before the commit, nor the commit start before the request came.
    let bound: Vec<f64> = http.iter().zip(&ceiling).map(|(h, c)| 1.0 / (1.0 / h + 1.0 / c)).collect();
    report(&format!("  one HTTP round trip plus one of {ceiling_name}, added up"), "per s", &bound);
    report("  single submits as a share of that", "ratio", &ratio(&single, &bound));
    report("  the same submits straight into the store, in process, no HTTP", "per s", &store_alone);
    report("  single submits as a share of that", "ratio", &ratio(&single, &store_alone));
    // Were a submit's store and HTTP costs simply added, it could run at most this fast.
    let serial_floor: Vec<f64> = store_alone.iter().zip(&http).map(|(s, h)| 1.0 / (1.0 / s + 1.0 / h)).collect();
    report("  store alone plus one HTTP round trip, added up", "per s", &serial_floor);
    report("  single submits as a share of that", "ratio", &ratio(&single, &serial_floor));
    report(&format!("drain of {n} tasks enqueued one at a time, 2 worker processes x 16 slots"), "tasks/s", &small);
    report("drain of the same after a batch enqueue, 2 x 16 slots", "tasks/s", &small_batched);
    if pg {
        report("  one-at-a-time enqueue as a share of batch enqueue", "ratio", &ratio(&small, &small_batched));
    }
    report("drain after a batch enqueue, 1 worker process x 512 slots", "tasks/s", &wide);
    report("  2 x 16 slots (after batches) as a share of 1 x 512", "ratio", &ratio(&small_batched, &wide));
    report("pickup p50, tasks arriving at 100/s, 16-slot worker", "ms", &p50);
    report("pickup p99", "ms", &p99);
    if let Some(s) = subscriber {
        s.finish();
    }
    Ok(())
}
