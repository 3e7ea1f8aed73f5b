//! Faults past one process, with real processes: readiness on a full disk, an online backup taken
//! under load and restored, and a PostgreSQL node whose clock is a minute off (libfaketime).

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::cluster::is_root;
use support::{ServerProcess, WorkerProcess, cli, eventually, free_port, leads};
use taskwarden_client::{Client, ListOptions, SubmitTask, SubmitTaskExt, TaskId, TaskState};
use taskwarden_store::pg_testing::TestSchema;

/// `/readyz`: its status code and its JSON body.
async fn readyz(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = http.get(format!("{url}/readyz")).timeout(Duration::from_secs(10)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// Every task of `queue`, a page at a time.
async fn all_tasks(client: &Client, queue: &str) -> Vec<taskwarden_client::Task> {
    let mut options = ListOptions { queue: Some(queue.into()), limit: Some(1000), ..Default::default() };
    let mut tasks = Vec::new();
    loop {
        let page = client.list(&options).await.unwrap();
        tasks.extend(page.tasks);
        match page.next_cursor {
            Some(cursor) => options.cursor = Some(cursor),
            None => return tasks,
        }
    }
}

/// A small tmpfs mounted on `dir` for the test's life: a disk the test can fill.
struct SmallDisk<'a>(&'a Path);

impl<'a> SmallDisk<'a> {
    fn mount(dir: &'a Path, mib: u32) -> SmallDisk<'a> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", dir.display());
        SmallDisk(dir)
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![7u8; 1 << 16];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_disk_is_full_and_ready_again_once_it_is_not() {
    if !is_root() {
        eprintln!("skipped: mounting a small disk needs root");
        return;
    }
    taskwarden_client::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), 48);
    let server = ServerProcess::start(&dir.path().join("data"));
    let http = reqwest::Client::new();
    let client = Client::new(&server.url).unwrap();
    let (status, body) = readyz(&http, &server.url).await;
    assert_eq!(status, 200, "{body}");
    let before = client.submit(SubmitTask::new("disk", "echo")).await.unwrap();

    let filler = disk.fill();
    let (status, body) = readyz(&http, &server.url).await;
    assert_eq!(status, 503, "not ready on a full disk: {body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    // The server itself still answers, and what it had is still there.
    assert_eq!(client.get(before.id).await.unwrap().state, TaskState::Ready);

    std::fs::remove_file(filler).unwrap();
    let (status, body) = readyz(&http, &server.url).await;
    assert_eq!(status, 200, "ready again once the disk has room: {body}");
    let after = client.submit(SubmitTask::new("disk", "echo")).await.unwrap();
    assert_eq!(client.get(after.id).await.unwrap().state, TaskState::Ready);
}

/// A node on a database of the test's own, which is then set read-only (new sessions only: the
/// node's connections are ended so that it opens new ones), then writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_database_is_read_only() {
    let Some(schema) = TestSchema::new("ro").await else { return };
    taskwarden_client::install_tls_provider();
    let admin = support::pg_connect(&schema.url, "public").await;
    let db = schema.name.clone();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let (base, _) = schema.url.split('?').next().unwrap().rsplit_once('/').unwrap();
    let node = ServerProcess::postgres(&format!("{base}/{db}"), "taskwarden", &[]);
    let http = reqwest::Client::new();
    let (status, body) = readyz(&http, &node.url).await;
    assert_eq!(status, 200, "{body}");
    let end_sessions = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'");

    admin.batch_execute(&format!("ALTER DATABASE {db} SET default_transaction_read_only = on")).await.unwrap();
    admin.batch_execute(&end_sessions).await.unwrap();
    let body = eventually(Duration::from_secs(20), "the node to say it is not ready", || async {
        let (status, body) = readyz(&http, &node.url).await;
        (status == 503 && body.to_string().contains("read-only")).then_some(body)
    })
    .await;
    assert_eq!(body["error"]["code"], "not_ready", "{body}");

    admin.batch_execute(&format!("ALTER DATABASE {db} RESET default_transaction_read_only")).await.unwrap();
    admin.batch_execute(&end_sessions).await.unwrap();
    eventually(Duration::from_secs(20), "the node to be ready again", || async {
        (readyz(&http, &node.url).await.0 == 200).then_some(())
    })
    .await;
    drop(node);
    admin.batch_execute(&end_sessions).await.unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_task_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data);
    let client = Client::new(&server.url).unwrap();
    // A task running when the backup is taken: its lease is in the copy.
    let long = client.submit(SubmitTask::new("held", "sleep").payload(&json!({"ms": 600_000})).unwrap()).await.unwrap();
    let mut holder = WorkerProcess::start(&server.url, "held", &[]);
    eventually(Duration::from_secs(10), "the long task to start", || async {
        (client.get(long.id).await.unwrap().state == TaskState::Running).then_some(())
    })
    .await;

    // Submits one at a time, each acknowledged only once durable, and writes go on while the
    // backup is taken.
    let submitter = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked: Vec<(std::time::Instant, TaskId)> = Vec::new();
            for i in 0..3_000 {
                let task = client.submit(SubmitTask::new("load", "echo").payload(&json!({"n": i})).unwrap()).await;
                acked.push((std::time::Instant::now(), task.unwrap().id));
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let began = std::time::Instant::now();
    let backup = dir.path().join("taskwarden.backup");
    let (ok, out, err) = cli(&["backup", "--data-dir", data.to_str().unwrap(), backup.to_str().unwrap()]);
    assert!(ok, "backup: {out}{err}");
    assert!(out.contains("backed up"), "{out}");
    let acked = submitter.await.unwrap();
    let before: Vec<TaskId> = acked.iter().filter(|(at, _)| *at < began).map(|(_, id)| *id).collect();
    assert!(before.len() > 100, "the backup was taken under load ({} acknowledged before it)", before.len());
    // Taken under load: some submits were acknowledged after the backup began.
    assert!(acked.len() > before.len());

    // A backup refuses to overwrite, and a restore to replace a store, unless asked.
    let (ok, _, err) = cli(&["backup", "--data-dir", data.to_str().unwrap(), backup.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "{err}");
    let _ = holder.child.kill();
    server.kill9();
    let (ok, _, err) = cli(&["restore", backup.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(!ok && err.contains("exists"), "{err}");

    // Restored into a fresh directory: every task acknowledged before the backup began is there.
    let restored = dir.path().join("restored");
    let (ok, out, err) = cli(&["restore", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    assert!(ok, "restore: {out}{err}");
    assert!(out.contains("1 running tasks' leases expired"), "{out}");
    let server = ServerProcess::start(&restored);
    let client = Client::new(&server.url).unwrap();
    let listed: HashSet<TaskId> = all_tasks(&client, "load").await.into_iter().map(|t| t.id).collect();
    let missing: Vec<_> = before.iter().filter(|id| !listed.contains(id)).collect();
    assert!(missing.is_empty(), "{} acknowledged tasks missing from the restored store", missing.len());

    // The lease in the copy is treated as expired: the long task runs again, on a new worker.
    eventually(Duration::from_secs(15), "the restored lease to expire", || async {
        let t = client.get(long.id).await.unwrap();
        (t.state != TaskState::Running || t.lease.as_ref().is_some_and(|l| l.attempt > 1)).then_some(())
    })
    .await;
    let _worker = WorkerProcess::start(&server.url, "held", &[]);
    eventually(Duration::from_secs(15), "the task to run again", || async {
        let t = client.get(long.id).await.unwrap();
        (t.state == TaskState::Running && t.lease.as_ref().is_some_and(|l| l.attempt == 2)).then_some(())
    })
    .await;
}

/// libfaketime's preload library, as Debian's `faketime` package installs it.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How far `url`'s clock is from this machine's, by its HTTP `Date` header, in seconds.
async fn clock_offset(http: &reqwest::Client, url: &str) -> f64 {
    let resp = http.get(format!("{url}/healthz")).send().await.unwrap();
    let told = httpdate::parse_http_date(resp.headers()["date"].to_str().unwrap()).unwrap();
    told.duration_since(std::time::SystemTime::now())
        .map_or_else(|e| -(e.duration().as_secs_f64()), |d| d.as_secs_f64())
}

/// An embedded server whose wall clock is stepped while it runs (libfaketime reading its offset
/// from a file at every call; the monotonic clock left alone, as an NTP step leaves it): ten
/// minutes forward while a task runs on a two-second lease, then twenty minutes back. The task
/// keeps its lease (one attempt), and a task submitted after the backward step still comes after
/// one submitted before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_wall_clock_neither_expires_a_lease_nor_reorders_tasks_on_the_embedded_store() {
    assert!(Path::new(FAKETIME).exists(), "libfaketime is missing: apt-get install faketime (.ci/run does)");
    taskwarden_client::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime.rc");
    std::fs::write(&offset, "+0\n").unwrap();
    let env = vec![
        ("LD_PRELOAD".to_owned(), FAKETIME.to_owned()),
        ("FAKETIME_TIMESTAMP_FILE".to_owned(), offset.display().to_string()),
        ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ("FAKETIME_DONT_RESET".to_owned(), "1".to_owned()),
    ];
    let args = ["--data-dir", dir.path().join("data").to_str().unwrap()].map(String::from).to_vec();
    let server = ServerProcess::start_with_env(args, free_port(), env.clone());
    let http = reqwest::Client::new();
    let client = Client::new(&server.url).unwrap();
    let _worker = WorkerProcess::start(&server.url, "step", &[]);
    let task = SubmitTask::new("step", "sleep").payload(&json!({"ms": 4_000})).unwrap();
    let task = client.submit(SubmitTask { lease_timeout_ms: Some(2_000), ..task }).await.unwrap();
    eventually(Duration::from_secs(10), "the task to start", || async {
        (client.get(task.id).await.unwrap().state == TaskState::Running).then_some(())
    })
    .await;

    std::fs::write(&offset, "+600s\n").unwrap();
    let off = clock_offset(&http, &server.url).await;
    assert!(off > 500.0, "the server's wall clock is {off:.0} s off; libfaketime did not step it");
    let done = eventually(Duration::from_secs(20), "the task to finish", || async {
        let t = client.get(task.id).await.unwrap();
        t.state.is_terminal().then_some(t)
    })
    .await;
    assert_eq!((done.state, done.attempts), (TaskState::Succeeded, 1), "the forward step took its lease");

    let before = client.submit(SubmitTask::new("idle", "echo")).await.unwrap();
    std::fs::write(&offset, "-600s\n").unwrap();
    // (The server's Date header cannot show a step back: hyper renews it only once the second it
    // last wrote has passed. A process under the same settings shows the step.)
    let date = Command::new("date").arg("+%s").envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    let faked: u64 = String::from_utf8_lossy(&date.stdout).trim().parse().unwrap();
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(real > faked + 500, "libfaketime did not step the clock back ({faked} vs {real})");
    let after = client.submit(SubmitTask::new("idle", "echo")).await.unwrap();
    assert!(
        after.created_at > before.created_at && after.id > before.id,
        "the backward step put a new task before an older one"
    );
    let listed = all_tasks(&client, "idle").await;
    let order: Vec<TaskId> = listed.iter().map(|t| t.id).collect();
    assert_eq!(order, vec![after.id, before.id], "newest first, as submitted");
}

/// A PostgreSQL node whose clock runs `offset` (libfaketime: "+60s", "-60s") from the machine's.
fn skewed_node(url: &str, schema: &str, offset: &str) -> ServerProcess {
    assert!(Path::new(FAKETIME).exists(), "libfaketime is missing: apt-get install faketime (.ci/run does)");
    let args = ["--database", url, "--database-schema", schema, "--leader-lease", "2s"].map(String::from).to_vec();
    let env = vec![
        ("LD_PRELOAD".to_owned(), FAKETIME.to_owned()),
        ("FAKETIME".to_owned(), offset.to_owned()),
        ("FAKETIME_DONT_RESET".to_owned(), "1".to_owned()),
    ];
    ServerProcess::start_with_env(args, free_port(), env)
}

/// A node a minute ahead of the machine leads the cluster; a worker on the other node runs tasks
/// whose leases last two seconds. Lease expiry runs on the database's clock, so none of them is
/// taken from its worker (each succeeds on its first attempt); the leader role stays on one node
/// at a time, and moves when the skewed node is killed; a cron schedule that ticks every second
/// fires once a tick throughout.
async fn a_skewed_node_takes_no_lease_early(offset: &str) {
    let Some(schema) = TestSchema::new("skew").await else { return };
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    let mut skewed = skewed_node(&schema.url, &schema.name, offset);
    eventually(Duration::from_secs(15), "the skewed node to lead", || async {
        leads(&http, &skewed.url).await.filter(|l| *l)
    })
    .await;
    // The node's own clock is off, as the test means it to be: its HTTP Date header says so.
    let off = clock_offset(&http, &skewed.url).await;
    assert!(off.abs() > 50.0, "the node's clock is {off:.0} s off; libfaketime did not take");
    let honest = ServerProcess::postgres(&schema.url, &schema.name, &["--leader-lease", "2s"]);
    let _worker = WorkerProcess::start(&honest.url, "skew", &["--concurrency", "8"]);
    let client = Client::new(&honest.url).unwrap();
    let cron = json!({"name": "tick", "schedule": "* * * * * *", "task": {"queue": "ticks", "kind": "echo"}});
    let cron: taskwarden_core::cron::CronSpec = serde_json::from_value(cron).unwrap();
    client.create_cron(&cron).await.unwrap();
    let cron_from = std::time::Instant::now();

    let mut ids = Vec::new();
    for _ in 0..16 {
        let task = SubmitTask::new("skew", "sleep").payload(&json!({"ms": 3_000})).unwrap();
        ids.push(client.submit(SubmitTask { lease_timeout_ms: Some(2_000), ..task }).await.unwrap().id);
    }
    // While they run (longer than one lease, kept alive by heartbeats), only one node leads.
    for _ in 0..20 {
        let (a, b) = (leads(&http, &skewed.url).await, leads(&http, &honest.url).await);
        assert_ne!((a, b), (Some(true), Some(true)), "two leaders at once");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let task = eventually(Duration::from_secs(30), "the task to finish", || async {
            let t = client.get(*id).await.unwrap();
            t.state.is_terminal().then_some(t)
        })
        .await;
        assert_eq!((task.state, task.attempts), (TaskState::Succeeded, 1), "{id}: taken from its worker early");
    }

    // The skewed leader dies: the honest node takes over after the lease, no sooner than its
    // two seconds on the database's clock.
    skewed.kill9();
    eventually(Duration::from_secs(15), "the honest node to lead", || async {
        leads(&http, &honest.url).await.filter(|l| *l)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = cron_from.elapsed().as_secs() as usize;
    client.pause_cron("tick", true).await.unwrap();
    let ticks = all_tasks(&client, "ticks").await;
    let keys: HashSet<_> = ticks.iter().map(|t| t.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), ticks.len(), "a tick fired twice");
    assert!(
        ticks.len() + 3 >= elapsed && ticks.len() <= elapsed + 2,
        "{} ticks in {elapsed} s: a clock a minute off would skip or add a minute of them",
        ticks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_minute_ahead_takes_no_lease_early_and_fires_each_cron_tick_once() {
    a_skewed_node_takes_no_lease_early("+60s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_minute_behind_keeps_no_lapsed_role_and_fires_each_cron_tick_once() {
    a_skewed_node_takes_no_lease_early("-60s").await;
}
