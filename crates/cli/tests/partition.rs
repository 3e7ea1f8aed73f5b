//! A worker partitioned from the server, with real processes and a real network: the worker runs
//! in a network namespace of the test's own, joined to this one by a veth pair; the partition
//! takes this side of the pair down, so the worker's packets are dropped, not refused (its side
//! stays up, without carrier: its connections hang as across a real partition). This kernel has
//! no `netem` qdisc to load, and that would do the same. Needs root and `ip`; skips and says why
//! without them.
//! The only addresses used are the pair's own, in a /30 the test gives it.
//!
//! The same with a server node cut off from its PostgreSQL: the database runs in the namespace
//! (a cluster of the test's own), the node outside.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{BIN, ServerProcess, WorkerProcess, eventually, free_port};
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt, TaskState};
use taskwarden_core::AttemptOutcome;

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn must(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace joined to this one by a veth pair: `host` is this side's address,
/// `inner` the namespace's. Removed when dropped.
struct Netns {
    name: String,
    host_dev: String,
    inner_dev: String,
    host: String,
    inner: String,
}

impl Netns {
    /// A namespace numbered `k` (each test its own), with a /30 of its own.
    fn create(k: u32) -> Option<Netns> {
        let n = std::process::id() % 120 + k * 120;
        let ns = Netns {
            name: format!("twpart{n}"),
            host_dev: format!("twh{n}"),
            inner_dev: format!("twn{n}"),
            host: format!("10.231.{}.{}", n / 60, (n % 60) * 4 + 1),
            inner: format!("10.231.{}.{}", n / 60, (n % 60) * 4 + 2),
        };
        let _ = run("ip", &["netns", "del", &ns.name]);
        if !run("ip", &["netns", "add", &ns.name]) {
            return None;
        }
        must("ip", &["link", "add", &ns.host_dev, "type", "veth", "peer", "name", &ns.inner_dev]);
        must("ip", &["link", "set", &ns.inner_dev, "netns", &ns.name]);
        must("ip", &["addr", "add", &format!("{}/30", ns.host), "dev", &ns.host_dev]);
        must("ip", &["link", "set", &ns.host_dev, "up"]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{}/30", ns.inner), "dev", &ns.inner_dev]);
        ns.exec_ok(&["ip", "link", "set", &ns.inner_dev, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    fn exec_ok(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        must("ip", &args);
    }

    /// Drops every packet both ways: a partition, not a refusal.
    fn partition(&self) {
        must("ip", &["link", "set", &self.host_dev, "down"]);
    }

    fn heal(&self) {
        must("ip", &["link", "set", &self.host_dev, "up"]);
    }

    /// A `taskwarden worker` inside the namespace.
    fn worker(&self, url: &str, queues: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, BIN, "worker", "--url", url, "--queue", queues, "--concurrency", "4"])
            .env("TASKWARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_dev]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_loses_its_lease_its_late_report_is_refused_and_it_carries_on() {
    taskwarden_client::install_tls_provider();
    let Some(ns) = Netns::create(0) else {
        eprintln!("skipped: making a network namespace needs root (and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Listening on the pair's address (off loopback): no token here, the test's network is its own.
    let port = free_port();
    let listen = format!("{}:{port}", ns.host);
    let args = ["--data-dir", dir.path().to_str().unwrap(), "--insecure-no-auth", "--allowed-hosts", &ns.host]
        .map(String::from)
        .to_vec();
    let server = ServerProcess::start_with_listen(args, &listen);
    let client = Client::new(&server.url).unwrap();

    let mut cut_off = ns.worker(&server.url, "part,after");
    // A task that outlives its two-second lease unless heartbeats keep it.
    let task = SubmitTask::new("part", "sleep").payload(&json!({"ms": 4_000})).unwrap().max_attempts(3);
    let task = client.submit(SubmitTask { lease_timeout_ms: Some(2_000), ..task }).await.unwrap();
    let first = eventually(Duration::from_secs(15), "the namespaced worker to lease the task", || async {
        let t = client.get(task.id).await.unwrap();
        (t.state == TaskState::Running).then(|| t.lease.unwrap().worker_id)
    })
    .await;

    ns.partition();
    // Its lease lapses after the lease timeout; the task runs again elsewhere.
    let _elsewhere = WorkerProcess::start(&server.url, "part", &[]);
    let done = eventually(Duration::from_secs(30), "the task to run again and succeed", || async {
        let t = client.get(task.id).await.unwrap();
        (t.state == TaskState::Succeeded).then_some(t)
    })
    .await;
    let last = done.history.last().unwrap();
    assert_ne!(last.worker_id, first, "the task succeeded on the worker on this side");
    assert_eq!(done.history[0].outcome, AttemptOutcome::TimedOut, "{:?}", done.history);

    // Healed: the cut-off worker's sleep ended meanwhile and it reports late. The report is
    // refused (the task's result stays the other worker's), and it takes new work.
    ns.heal();
    let after =
        client.submit(SubmitTask::new("after", "echo").payload(&json!({"after": true})).unwrap()).await.unwrap();
    let after = eventually(Duration::from_secs(60), "the healed worker to run new work", || async {
        let t = client.get(after.id).await.unwrap();
        (t.state == TaskState::Succeeded).then_some(t)
    })
    .await;
    assert_eq!(after.history[0].worker_id, first, "new work ran on the healed worker");
    let still = client.get(task.id).await.unwrap();
    let result = |t: &taskwarden_client::Task| t.result.as_ref().map(|r| r.get().to_owned());
    assert_eq!(
        (still.state, still.history.len(), result(&still)),
        (TaskState::Succeeded, done.history.len(), result(&done))
    );
    assert!(cut_off.try_wait().unwrap().is_none(), "the healed worker is still running");
    // Its late report reached the server, which refused it as a stale attempt.
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("taskwarden_reports_refused_total{") && l.contains("lease_lost"))
        .unwrap_or_else(|| panic!("no refused report counted:\n{metrics}"));
    assert!(!refused.ends_with(" 0"), "{refused}");
    let _ = cut_off.kill();
    let _ = cut_off.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgresql_answers_503_and_goes_on_when_the_network_heals() {
    use support::cluster::{Cluster, as_postgres, pg_bin};
    taskwarden_client::install_tls_provider();
    let Some(bin) = pg_bin() else {
        eprintln!("skipped: PostgreSQL's server binaries are not installed");
        return;
    };
    let Some(ns) = Netns::create(1) else {
        eprintln!("skipped: making a network namespace needs root (and iproute2)");
        return;
    };
    // A PostgreSQL of the test's own, inside the namespace, on the pair's far address.
    let root = tempfile::Builder::new().prefix("tw-cutoff").tempdir().unwrap();
    must("chown", &["postgres:postgres", root.path().to_str().unwrap()]);
    let db = Cluster { bin: bin.clone(), dir: root.path().join("db"), port: free_port(), netns: Some(ns.name.clone()) };
    as_postgres(&bin, "initdb", &["-D", db.dir.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-N"]);
    let conf = format!(
        "port = {}\nlisten_addresses = '{}'\nunix_socket_directories = '{}'\nfsync = off\n",
        db.port,
        ns.inner,
        root.path().display()
    );
    let append = |file: &str, text: &str| {
        use std::io::Write;
        let path = db.dir.join(file);
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    };
    append("postgresql.conf", &conf);
    append("pg_hba.conf", &format!("host all all {}/32 trust\n", ns.host));
    db.start();

    let url = format!("postgres://postgres@{}:{}/postgres", ns.inner, db.port);
    let node = ServerProcess::postgres(&url, "cutoff", &["--leader-lease", "2s"]);
    let client = Client::new(&node.url).unwrap();
    let http = reqwest::Client::new();
    let first = client.submit(SubmitTask::new("cut", "echo")).await.unwrap();

    ns.partition();
    // Not ready, and submits refused with 503 rather than held: within the connection's timeout.
    let cut_at = std::time::Instant::now();
    eventually(Duration::from_secs(30), "the node to say it is not ready", || async {
        let r = http.get(format!("{}/readyz", node.url)).timeout(Duration::from_secs(20)).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let refused = http
        .post(format!("{}/v1/tasks", node.url))
        .json(&json!({"queue": "cut", "kind": "echo"}))
        .timeout(Duration::from_secs(25))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(refused.status(), 503, "a submit while cut off");
    let answered_in = cut_at.elapsed();

    ns.heal();
    let after = eventually(Duration::from_secs(30), "the node to take submits again", || async {
        client.submit(SubmitTask::new("cut", "echo")).await.ok()
    })
    .await;
    let r = http.get(format!("{}/readyz", node.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for id in [first.id, after.id] {
        assert_eq!(client.get(id).await.unwrap().state, TaskState::Ready);
    }
    println!("cut off from PostgreSQL: not ready and refusing submits {answered_in:?} after the cut");
}
