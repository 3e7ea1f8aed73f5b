//! Several server nodes on one real PostgreSQL, as real processes: losing a node loses nothing,
//! and the leader role moves when its node dies. Each test uses a schema of its own. Without a
//! reachable PostgreSQL the tests skip and say why, unless `TASKWARDEN_REQUIRE_POSTGRES` is set.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{ServerProcess, WorkerProcess, eventually, leads, pg_connect};
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt, TaskState};
use taskwarden_core::protocol::RegisterWorker;
use taskwarden_store::pg_testing::TestSchema;

/// `urls` rotated to start at `i`: a process that starts on node `i` and knows the others.
fn rotated(urls: &[String], i: usize) -> String {
    [&urls[i..], &urls[..i]].concat().join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_one_is_killed() {
    const TASKS: usize = 20_000;
    const BATCH: usize = 500;
    let Some(schema) = TestSchema::new("nodes").await else { return };
    let mut nodes: Vec<ServerProcess> =
        (0..3).map(|_| ServerProcess::postgres(&schema.url, &schema.name, &[])).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let _workers: Vec<WorkerProcess> =
        (0..3).map(|i| WorkerProcess::start(&rotated(&urls, i), "bulk", &["--concurrency", "32"])).collect();

    // Batches go to the nodes in turn. Each task has an idempotency key, so a batch whose answer
    // was lost (its node died mid-request) is sent again without doubling anything.
    let submitter = {
        let clients: Vec<Client> = (0..3).map(|i| Client::new(&rotated(&urls, i)).unwrap()).collect();
        tokio::spawn(async move {
            let mut acknowledged = HashSet::new();
            for (b, start) in (0..TASKS).step_by(BATCH).enumerate() {
                let batch: Vec<SubmitTask> = (start..start + BATCH)
                    .map(|i| SubmitTask::new("bulk", "echo").idempotency_key(format!("task-{i}")))
                    .collect();
                let client = &clients[b % clients.len()];
                let tasks = loop {
                    match client.submit_batch(batch.clone()).await {
                        Ok(tasks) => break tasks,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                acknowledged.extend(tasks.into_iter().map(|t| t.id));
            }
            acknowledged
        })
    };

    let db = pg_connect(&schema.url, &schema.name).await;
    let succeeded = || async {
        let row = db.query_one("SELECT count(*) FROM tasks WHERE state = 'succeeded'", &[]).await.unwrap();
        row.get::<_, i64>(0) as usize
    };
    eventually(Duration::from_secs(120), "a third of the tasks to succeed", || async {
        (succeeded().await >= TASKS / 3).then_some(())
    })
    .await;
    nodes[0].kill9();
    let killed_at = succeeded().await;
    assert!(killed_at < TASKS, "the node died mid-run ({killed_at} of {TASKS} done)");

    let acknowledged = submitter.await.unwrap();
    assert_eq!(acknowledged.len(), TASKS, "every task was acknowledged once, under its own id");
    eventually(Duration::from_secs(180), "every task to succeed", || async {
        (succeeded().await == TASKS).then_some(())
    })
    .await;
    let row = db.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0) as usize, TASKS, "no task was stored twice");
    // Each completion recorded exactly once: one succeeded attempt in every task's history.
    let twice = db
        .query_one(
            "SELECT count(*) FROM tasks WHERE (SELECT count(*) FROM json_array_elements(doc::json -> 'history') h \
             WHERE h ->> 'outcome' = 'succeeded') <> 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(twice.get::<_, i64>(0), 0);
    let ids: HashSet<_> = db
        .query("SELECT id FROM tasks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
        .collect();
    assert!(acknowledged.iter().all(|id| ids.contains(&id.to_string())), "every acknowledged task is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_role_moves_when_the_leader_dies_and_leases_are_still_reaped() {
    let Some(schema) = TestSchema::new("leader").await else { return };
    let lease = ["--leader-lease", "1s"];
    let mut nodes = [
        ServerProcess::postgres(&schema.url, &schema.name, &lease),
        ServerProcess::postgres(&schema.url, &schema.name, &lease),
    ];
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    let leader = eventually(Duration::from_secs(10), "one node to lead", || async {
        let a = leads(&http, &nodes[0].url).await?;
        let b = leads(&http, &nodes[1].url).await?;
        (a != b).then_some(if a { 0 } else { 1 })
    })
    .await;
    let follower = 1 - leader;
    // Both nodes name the leader in their readiness answer (the dashboard's overview shows it).
    let ready = |url: String| {
        let http = http.clone();
        async move { http.get(format!("{url}/readyz")).send().await.ok()?.json::<serde_json::Value>().await.ok() }
    };
    let leader_name = ready(nodes[leader].url.clone()).await.unwrap()["node"].clone();
    for node in &nodes {
        eventually(Duration::from_secs(5), "each node to name the leader", || async {
            (ready(node.url.clone()).await?["leader_node"] == leader_name).then_some(())
        })
        .await;
    }

    // A worker leases a task through the follower, then vanishes without a word.
    let client = Client::new(&nodes[follower].url).unwrap();
    let mut spec = SubmitTask::new("lost", "echo");
    spec.lease_timeout_ms = Some(500);
    spec.max_attempts = Some(3);
    let task = client.submit(spec).await.unwrap();
    let worker = client
        .register(&RegisterWorker {
            name: "vanishing".into(),
            queues: vec!["lost".into()],
            concurrency: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let leased = client.fetch(&worker.id, &["lost".to_string()], 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(leased.len(), 1);

    nodes[leader].kill9();
    let killed = Instant::now();
    eventually(Duration::from_secs(10), "the follower to take the lead", || async {
        leads(&http, &nodes[follower].url).await.filter(|l| *l)
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "took over {took:?} after the leader died (lease 1s)");

    // The new leader's reaper ends the vanished worker's attempt.
    let reaped = eventually(Duration::from_secs(10), "the expired lease to be reaped", || async {
        let t = client.get(task.id).await.ok()?;
        (t.state != TaskState::Running).then_some(t)
    })
    .await;
    assert_eq!(reaped.history.len(), 1);
    assert_eq!(reaped.history[0].outcome, taskwarden_core::AttemptOutcome::TimedOut);
    eprintln!("leader failover took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_prepares_a_schema_and_a_node_can_then_start_without_migrating() {
    let Some(schema) = TestSchema::new("cmd").await else { return };
    let db = ["--database", &schema.url, "--database-schema", &schema.name];
    let (ok, out, err) = support::cli(&[&["migrate"][..], &db].concat());
    assert!(ok, "{err}");
    let latest = out.split("schema version 0 -> ").nth(1).map(str::trim).expect("migrated from version 0").to_owned();
    let (ok, out, _) = support::cli(&[&["migrate"][..], &db].concat());
    assert!(
        ok && out.contains(&format!("schema version {latest} -> {latest}")),
        "a second run has nothing to do: {out}"
    );
    assert!(!out.contains("applied:"), "{out}");
    let node = ServerProcess::postgres(&schema.url, &schema.name, &["--no-migrate"]);
    let client = Client::new(&node.url).unwrap();
    client.ready().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_on_one_node_holds_it_on_every_node() {
    let Some(schema) = TestSchema::new("pause").await else { return };
    let nodes = [
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
    ];
    let (a, b) = (Client::new(&nodes[0].url).unwrap(), Client::new(&nodes[1].url).unwrap());
    let _worker = WorkerProcess::start(&nodes[1].url, "held", &[]);
    assert!(a.pause_queue("held", true).await.unwrap().paused);
    let task = a.submit(SubmitTask::new("held", "echo")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(b.get(task.id).await.unwrap().state, TaskState::Ready, "the worker on the other node got nothing");
    let listed = b.queues().await.unwrap();
    assert!(listed.iter().any(|q| q.name == "held" && q.paused && q.ready == 1), "{listed:?}");
    let resumed = Instant::now();
    assert!(!a.resume_queue("held", false).await.unwrap().paused);
    let done = b.wait(task.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert!(resumed.elapsed() < Duration::from_secs(5), "the resume woke the other node's worker at once");
}

/// A payload schema a worker registers through one node is in force on the other within a
/// second or so (each node re-reads the schemas at most once a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_registered_on_one_node_refuses_bad_payloads_on_every_node() {
    let Some(schema) = TestSchema::new("schemas").await else { return };
    let nodes = [
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
    ];
    let (a, b) = (Client::new(&nodes[0].url).unwrap(), Client::new(&nodes[1].url).unwrap());
    let mut bad = SubmitTask::new("s", "resize");
    bad.payload = Some(serde_json::value::to_raw_value(&serde_json::json!({"width": 0})).unwrap());
    b.submit(bad.clone()).await.expect("no schema yet: any payload");
    let registration = RegisterWorker {
        name: "resizer".into(),
        queues: vec!["s".into()],
        concurrency: 1,
        kinds: vec!["resize".into()],
        schemas: [("resize".to_string(), serde_json::json!({"required": ["image"]}))].into(),
        ..Default::default()
    };
    a.register(&registration).await.unwrap();
    let registered = Instant::now();
    let refused = eventually(Duration::from_secs(10), "the other node to refuse the payload", || async {
        b.submit(bad.clone()).await.err()
    })
    .await;
    let took = registered.elapsed();
    assert_eq!(refused.status(), Some(422), "{refused}");
    assert!(refused.to_string().contains("payload.image: required"), "{refused}");
    assert!(took < Duration::from_secs(3), "in force on the other node after {took:?}");
    eprintln!("the schema was in force on the other node after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_cron_hold_across_two_nodes() {
    let Some(schema) = TestSchema::new("limits").await else { return };
    let nodes = [
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
        ServerProcess::postgres(&schema.url, &schema.name, &[]),
    ];
    let (a, b) = (Client::new(&nodes[0].url).unwrap(), Client::new(&nodes[1].url).unwrap());
    // A concurrency limit set on one node holds for workers on both.
    let limits = taskwarden_core::limits::QueueLimits { concurrency: Some(2), ..Default::default() };
    let update = taskwarden_core::protocol::QueueUpdate { limits: Some(limits), ..Default::default() };
    a.update_queue("narrow", &update, true).await.unwrap();
    // Each worker may run only the tasks labelled for it, so both run some whichever fetches
    // first (a worker whose report and next fetch are one call can otherwise take every freed
    // slot of a limited queue, and the test would prove nothing about two nodes; it did, now and
    // then).
    let _workers = [
        WorkerProcess::start(&nodes[0].url, "narrow", &["--concurrency", "8", "--labels", "node=a"]),
        WorkerProcess::start(&nodes[1].url, "narrow", &["--concurrency", "8", "--labels", "node=b"]),
    ];
    // Both registered before any task exists: on a loaded machine one worker process can start
    // long after the other, which then takes every task and proves nothing about two nodes.
    eventually(Duration::from_secs(20), "both workers to register", || async {
        (a.workers().await.ok()?.len() == 2).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut task = SubmitTask::new("narrow", "sleep").payload(&serde_json::json!({"ms": 150})).unwrap();
        let label = if i % 2 == 0 { "node=a" } else { "node=b" };
        task.labels = Some(taskwarden_core::placement::parse_labels("labels", label).unwrap());
        ids.push(node.submit(task).await.unwrap().id);
    }
    // Sample what the database holds as running while the tasks run.
    let db = pg_connect(&schema.url, &schema.name).await;
    let sampler = async {
        let mut most = 0i64;
        let sql = "SELECT count(*) FROM tasks WHERE queue = 'narrow' AND state = 'running'";
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            most = most.max(db.query_one(sql, &[]).await.unwrap().get(0));
            let left: i64 = db
                .query_one("SELECT count(*) FROM tasks WHERE queue = 'narrow' AND state <> 'succeeded'", &[])
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most
    };
    let waits = async {
        let mut done = Vec::new();
        for id in &ids {
            assert_eq!(b.wait(*id, Duration::from_secs(60)).await.unwrap().state, TaskState::Succeeded);
            done.push(b.get(*id).await.unwrap());
        }
        done
    };
    let (most, done) = tokio::join!(sampler, waits);
    let workers: HashSet<String> = done.iter().map(|t| t.history[0].worker_id.clone()).collect();
    assert_eq!(workers.len(), 2, "both nodes' workers ran some");
    assert_eq!(most, 2, "never more than 2 running at once across both nodes");
    // Attempts, by the times each node recorded, took at least 6 rounds of 150 ms: 12 tasks, 2 at a time.
    let first = done.iter().map(|t| t.history[0].started_at).min().unwrap();
    let last = done.iter().map(|t| t.history[0].finished_at).max().unwrap();
    assert!(last.duration_since(first) >= Duration::from_millis(850), "{:?}", last.duration_since(first));

    // A cron schedule fires each tick once, whichever node leads.
    let spec = taskwarden_core::cron::CronSpec {
        name: "every-second".into(),
        schedule: "* * * * * *".into(),
        timezone: "UTC".into(),
        misfire: taskwarden_core::cron::Misfire::Skip,
        catch_up: None,
        task: SubmitTask::new("ticks", "echo"),
    };
    b.create_cron(&spec).await.unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    a.pause_cron("every-second", true).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let list = taskwarden_client::ListOptions { queue: Some("ticks".into()), limit: Some(100), ..Default::default() };
    let tasks = a.list(&list).await.unwrap().tasks;
    let ticks: HashSet<_> = tasks.iter().map(|t| t.idempotency_key.clone().unwrap()).collect();
    assert_eq!(ticks.len(), tasks.len(), "each tick once");
    assert!((tasks.len() as f64 - elapsed).abs() <= 1.5, "{} tasks in {elapsed:.1}s", tasks.len());

    // "Run now" fires once per call, whichever node takes it, and moves no tick: a nightly
    // schedule run through each node makes two tasks, not four, and its next tick stays.
    let nightly = taskwarden_core::cron::CronSpec {
        name: "nightly".into(),
        schedule: "0 0 3 * * *".into(),
        task: SubmitTask::new("nightly", "echo"),
        ..spec
    };
    let before = a.create_cron(&nightly).await.unwrap().next_run_at;
    let first = a.run_cron("nightly").await.unwrap();
    let second = b.run_cron("nightly").await.unwrap();
    assert_ne!(first.id, second.id);
    tokio::time::sleep(Duration::from_millis(1500)).await; // both leaders' loops have looked
    let list = taskwarden_client::ListOptions { queue: Some("nightly".into()), limit: Some(100), ..Default::default() };
    let fired = b.list(&list).await.unwrap().tasks;
    assert_eq!(fired.len(), 2, "one task per run call: {fired:?}");
    let after = b.crons().await.unwrap().into_iter().find(|c| c.spec.name == "nightly").unwrap();
    assert_eq!(after.next_run_at, before, "running now leaves the next tick where it was");
}
