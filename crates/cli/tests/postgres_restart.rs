//! The machine's PostgreSQL is stopped (immediate mode, as in a crash) and started again while a
//! server node runs work on it. This test binary holds this one test only: cargo runs test
//! binaries one after another, so nothing else is using the database while it is down.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{ServerProcess, WorkerProcess, eventually, leads};
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt, TaskState};
use taskwarden_store::pg_testing::TestSchema;

/// The local cluster, driven with Debian's pg_ctlcluster.
struct Cluster {
    version: String,
}

impl Cluster {
    /// The machine's one cluster, if pg_ctlcluster can drive it.
    fn local() -> Option<Cluster> {
        let versions = std::fs::read_dir("/etc/postgresql").ok()?;
        let version = versions.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).next()?;
        Command::new("pg_ctlcluster").arg("--help").output().ok()?;
        Some(Cluster { version })
    }

    fn ctl(&self, args: &[&str]) {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctlcluster {args:?} failed");
    }
}

/// Starts the cluster again however the test ends.
struct Restart<'a>(&'a Cluster);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.0.version, "main", "start"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_postgres_restart_without_losing_acknowledged_tasks() {
    let Some(schema) = TestSchema::new("restart").await else { return };
    let Some(cluster) = Cluster::local() else {
        assert!(
            std::env::var(taskwarden_store::pg_testing::REQUIRE_ENV).is_err(),
            "PostgreSQL is required but pg_ctlcluster cannot restart it here"
        );
        eprintln!("SKIPPED: no local cluster that pg_ctlcluster can restart");
        return;
    };
    let mut node = ServerProcess::postgres(&schema.url, &schema.name, &[]);
    let pid = node.child.id();
    let _worker = WorkerProcess::start(&node.url, "r", &["--concurrency", "8"]);
    let client = Client::new(&node.url).unwrap();

    // Submits batches until told to stop, resending (under the same keys) what failed, and keeps
    // the ids of every task the server acknowledged.
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (client, acknowledged, stop) = (client.clone(), acknowledged.clone(), stop.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            let mut batch_no = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<SubmitTask> =
                    (0..20).map(|i| SubmitTask::new("r", "echo").idempotency_key(format!("b{batch_no}-{i}"))).collect();
                match client.submit_batch(batch).await {
                    Ok(tasks) => {
                        acknowledged.lock().unwrap().extend(tasks.into_iter().map(|t| t.id));
                        batch_no += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.status(), Some(503), "refused as unavailable, not failed: {e}");
                        refused += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            refused
        })
    };
    eventually(Duration::from_secs(20), "some tasks acknowledged", || async {
        (acknowledged.lock().unwrap().len() >= 200).then_some(())
    })
    .await;

    let restart = Restart(&cluster);
    cluster.ctl(&["stop", "-m", "immediate"]);
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(10), "/readyz to say 503", || async {
        let resp = http.get(format!("{}/readyz", node.url)).send().await.ok()?;
        (resp.status() == 503).then_some(())
    })
    .await;
    let err = client.submit(SubmitTask::new("r", "echo")).await.expect_err("no database, no acknowledgement");
    assert_eq!(err.status(), Some(503));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.ctl(&["start"]);
    drop(restart);

    eventually(Duration::from_secs(30), "the node to be ready again", || async { leads(&http, &node.url).await }).await;
    let before = acknowledged.lock().unwrap().len();
    eventually(Duration::from_secs(30), "submits to be acknowledged again", || async {
        (acknowledged.lock().unwrap().len() >= before + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let refused = submitter.await.unwrap();
    assert!(node.alive(), "the server rode out the restart");
    assert_eq!(node.child.id(), pid);

    let ids: Vec<_> = acknowledged.lock().unwrap().iter().copied().collect();
    for id in &ids {
        let done = eventually(Duration::from_secs(60), "every acknowledged task to succeed", || async {
            let t = client.get(*id).await.ok()?;
            (t.state == TaskState::Succeeded).then_some(t)
        })
        .await;
        assert_eq!(done.history.iter().filter(|a| a.outcome == taskwarden_core::AttemptOutcome::Succeeded).count(), 1);
    }
    eprintln!(
        "{} acknowledged tasks all succeeded; {refused} batches refused with 503 while PostgreSQL was down",
        ids.len()
    );
}
