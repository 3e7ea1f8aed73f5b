//! PostgreSQL failover with real processes: two PostgreSQL clusters made by the test on free
//! ports (a primary, and a synchronous standby cloned from it with `pg_basebackup`), two
//! Taskwarden nodes given both hosts in one URL (`target_session_attrs=read-write`), a stream of
//! one-at-a-time submits and a worker. The primary is `kill -9`ed mid-stream and the standby
//! promoted: every acknowledged task is there and succeeds exactly once, and the nodes go on by
//! themselves within seconds. Needs root (PostgreSQL runs as the `postgres` user) and
//! PostgreSQL's server binaries; skips and says why without them.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::{Cluster, as_postgres, is_root, pg_bin};
use support::{ServerProcess, WorkerProcess, eventually, free_port};
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt, TaskId, TaskState};
use taskwarden_core::AttemptOutcome;

/// A primary with a synchronous standby, in `root` (owned by `postgres`).
fn primary_and_standby(bin: &Path, root: &Path) -> (Cluster, Cluster) {
    let primary = Cluster { bin: bin.into(), dir: root.join("primary"), port: free_port(), netns: None };
    let standby = Cluster { bin: bin.into(), dir: root.join("standby"), port: free_port(), netns: None };
    as_postgres(bin, "initdb", &["-D", primary.dir.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-N"]);
    let conf = format!(
        "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
         max_wal_senders = 5\nsynchronous_standby_names = 'standby1'\nsynchronous_commit = on\n\
         fsync = off\nshared_buffers = 32MB\nmax_connections = 60\n",
        primary.port,
        root.display()
    );
    append(&primary.dir.join("postgresql.conf"), &conf);
    append(&primary.dir.join("pg_hba.conf"), "host replication all 127.0.0.1/32 trust\n");
    primary.start();
    as_postgres(
        bin,
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-D",
            standby.dir.to_str().unwrap(),
            "-R",
            "-X",
            "stream",
        ],
    );
    append(
        &standby.dir.join("postgresql.auto.conf"),
        &format!(
            "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby1'\n",
            standby.port, primary.port
        ),
    );
    standby.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary.sql("SELECT sync_state FROM pg_stat_replication") != "sync" {
        assert!(Instant::now() < deadline, "the standby never became synchronous");
        std::thread::sleep(Duration::from_millis(100));
    }
    (primary, standby)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_promoted_after_the_primary_is_killed_loses_no_acknowledged_task() {
    let Some(bin) = pg_bin() else {
        eprintln!("skipped: PostgreSQL's server binaries are not installed");
        return;
    };
    if !is_root() {
        eprintln!("skipped: running PostgreSQL as its own user needs root");
        return;
    }
    let root = tempfile::Builder::new().prefix("tw-failover").tempdir().unwrap();
    assert!(Command::new("chown").args(["postgres:postgres"]).arg(root.path()).status().unwrap().success());
    let (primary, standby) = primary_and_standby(&bin, root.path());

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let nodes: Vec<ServerProcess> =
        (0..2).map(|_| ServerProcess::postgres(&url, "failover", &["--leader-lease", "2s"])).collect();
    let urls = format!("{},{}", nodes[0].url, nodes[1].url);
    let _workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&urls, "ha", &["--concurrency", "8"])).collect();
    let client = Client::new(&urls).unwrap();

    // One submit at a time, each with an idempotency key and retried until acknowledged, with
    // the time of each acknowledgement.
    let submitter = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked: Vec<(Instant, TaskId)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..1_500 {
                let task =
                    SubmitTask::new("ha", "echo").payload(&json!({"n": i})).unwrap().idempotency_key(format!("ha-{i}"));
                loop {
                    match client.submit(task.clone()).await {
                        Ok(t) => break acked.push((Instant::now(), t.id)),
                        Err(e) => {
                            assert!(Instant::now() < deadline, "submits stopped being acknowledged: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                    }
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The primary dies as in a crash; the standby is promoted.
    let killed_at = Instant::now();
    assert!(Command::new("kill").args(["-9", &primary.postmaster_pid().to_string()]).status().unwrap().success());
    as_postgres(&bin, "pg_ctl", &["-D", standby.dir.to_str().unwrap(), "-w", "promote"]);
    // It has no standby of its own yet: without this, its commits would wait for one for ever
    // (the nodes' /readyz says so: not_ready). An HA manager (Patroni, a managed service) does
    // the same on promotion.
    standby.sql("ALTER SYSTEM SET synchronous_standby_names = ''");
    standby.sql("SELECT pg_reload_conf()");
    let promoted_at = Instant::now();

    let acked = submitter.await.unwrap();
    let resumed = acked.iter().find(|(at, _)| *at > promoted_at).map(|(at, _)| at.duration_since(promoted_at));
    let resumed = resumed.expect("submits went on after the promotion");
    assert!(resumed < Duration::from_secs(10), "work resumed {resumed:?} after the promotion");
    let before_kill = acked.iter().filter(|(at, _)| *at < killed_at).count();
    assert!(before_kill > 50, "the primary was killed under load ({before_kill} acknowledged before)");

    // Every acknowledged task is on the new primary and succeeds exactly once.
    let ids: HashSet<TaskId> = acked.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), 1_500, "each submit acknowledged one task (idempotency keys)");
    for id in &ids {
        let task = eventually(Duration::from_secs(60), "every acknowledged task to finish", || async {
            let t = client.get(*id).await.ok()?;
            t.state.is_terminal().then_some(t)
        })
        .await;
        assert_eq!(task.state, TaskState::Succeeded, "{id}");
        let successes = task.history.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count();
        assert_eq!(successes, 1, "{id} completed {successes} times");
    }
    println!(
        "failover: {} acknowledged ({before_kill} before the kill), 0 lost, 0 duplicated; first submit acknowledged {:?} after the promotion",
        acked.len(),
        resumed
    );
}
