//! `taskwarden bench --only chaos --duration 10m [--database URL]`: a mixed workload run while a
//! nemesis kills and pauses the processes, then a checker that reads the whole history back from
//! the API and counts every broken invariant. It exits non-zero unless every count is zero.
//!
//! The workload, each acknowledged submit recorded: plain tasks (some running a while) with
//! idempotency keys, resent until acknowledged; delayed tasks; a cron schedule ticking every
//! second; workflows that fan out five children to a quorum join (three must succeed); tasks that
//! share one concurrency key limited to two at a time. Every task's lease lasts two seconds.
//!
//! The one-key tasks run in two workers inside this process, whose handler notes when each run
//! really began and ended: an attempt's dates in the history are the server's estimate (its end
//! is the report's arrival less how long ago the worker said it finished, late by the report's
//! transit, and by seconds when the report waited in a paused node), while the limit is kept on
//! what the worker declares finished. So the check counts, among the attempts the server
//! accepted, how many of their handlers ran at once by the handlers' own clock. (A run whose
//! lease lapsed may go on beside its replacement: at-least-once allows that, and its attempt is
//! not an accepted one.)
//!
//! The nemesis, one action every one to three seconds: `kill -9` a worker (restarted), pause a
//! worker with SIGSTOP past its leases (then SIGCONT), `kill -9` a server node (restarted), pause
//! a node, and with `--database` restart PostgreSQL in immediate mode where `pg_ctlcluster` drives
//! it, and where this process may make a network namespace (root), partition the second worker:
//! it runs in a namespace of the run's own joined by a veth pair, and the nemesis takes this side
//! of the pair down past its leases (its packets dropped, not refused), then up again.
//!
//! On SQLite there is one node; with `--database`, two, and every client and worker is given
//! both. With a namespace, the nodes listen on every address (the run's network is its own: no
//! tokens) and the namespaced worker reaches them through the pair.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde_json::json;
use taskwarden_client::{Client, ListOptions, SubmitTask, SubmitTaskExt, Task, TaskId, TaskState};
use taskwarden_core::limits::QueueLimits;
use taskwarden_core::protocol::QueueUpdate;
use taskwarden_core::{AttemptOutcome, Timestamp};
use tokio_util::sync::CancellationToken;

use super::{Backend, BenchArgs};

const LEASE_MS: u64 = 2_000;
const KEY_LIMIT: usize = 2;
const QUORUM: usize = 3;
const CHILDREN: u32 = 5;
const QUEUES: &str = "chaos,chaos-delayed,chaos-wf,chaos-cron";
/// How long a one-key task's handler holds its slot.
const HOLD: Duration = Duration::from_millis(300);

/// The one-key tasks' runs as their handler saw them: task, attempt, start, end.
type Runs = Arc<Mutex<Vec<(TaskId, u32, Instant, Instant)>>>;

/// Two in-process workers for the one-key tasks, noting each run.
fn hold_workers(url: &str, runs: &Runs, stop: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let runs = runs.clone();
            let handler = move |ctx: taskwarden_worker::TaskContext, _p: serde_json::Value| {
                let runs = runs.clone();
                async move {
                    let began = Instant::now();
                    tokio::time::sleep(HOLD).await;
                    runs.lock().expect("runs").push((ctx.id, ctx.attempt, began, Instant::now()));
                    Ok::<_, taskwarden_worker::TaskError>(())
                }
            };
            let (stop, url) = (stop.clone(), url.to_owned());
            tokio::spawn(async move {
                // A worker that stopped (its node unreachable for too long) starts again.
                while !stop.is_cancelled() {
                    let worker = taskwarden_worker::Worker::builder(&url)
                        .queue("chaos-limited")
                        .concurrency(4)
                        .handler("hold", handler.clone());
                    let _ = worker.run(stop.clone()).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect()
}

/// A network namespace joined to this one by a veth pair, for one worker the nemesis can cut
/// off. Removed when dropped.
struct Netns {
    name: String,
    link: String,
    /// This side's address, which the namespaced worker reaches the nodes on.
    host: String,
}

impl Netns {
    fn ip(args: &[&str]) -> bool {
        Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// `None` where namespaces cannot be made (not root, no iproute2).
    fn create() -> Option<Netns> {
        let n = std::process::id() % 250;
        let (name, link, peer) = (format!("twchaos{n}"), format!("twch{n}"), format!("twcn{n}"));
        let (host, inner) = (format!("10.232.{n}.1"), format!("10.232.{n}.2"));
        let _ = Self::ip(&["netns", "del", &name]);
        if !Self::ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns { name, link, host };
        let ok = Self::ip(&["link", "add", &ns.link, "type", "veth", "peer", "name", &peer])
            && Self::ip(&["link", "set", &peer, "netns", &ns.name])
            && Self::ip(&["addr", "add", &format!("{}/30", ns.host), "dev", &ns.link])
            && Self::ip(&["link", "set", &ns.link, "up"])
            && Self::ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &format!("{inner}/30"), "dev", &peer])
            && Self::ip(&["netns", "exec", &ns.name, "ip", "link", "set", &peer, "up"])
            && Self::ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// Cuts the namespace off (its packets dropped) or joins it again.
    fn cut(&self, off: bool) {
        Self::ip(&["link", "set", &self.link, if off { "down" } else { "up" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Self::ip(&["link", "del", &self.link]);
        Self::ip(&["netns", "del", &self.name]);
    }
}

/// A process the nemesis can kill, pause and start again with the same arguments.
struct Proc {
    args: Vec<String>,
    child: Option<Child>,
    /// Read the "listening on" line before going on (a server).
    server: bool,
    /// The network namespace it runs in, if not this one.
    netns: Option<String>,
}

impl Proc {
    fn start(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exe = std::env::current_exe()?;
            let mut command = match &self.netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns]).arg(exe);
                    c
                }
                None => Command::new(exe),
            };
            let mut child = command
                .args(&self.args)
                .env("TASKWARDEN_LOG", "error")
                .stdout(if self.server { Stdio::piped() } else { Stdio::null() })
                .stderr(Stdio::null())
                .spawn()
                .context("starting a process")?;
            if !self.server {
                self.child = Some(child);
                return Ok(());
            }
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
            if line.contains("listening on") {
                self.child = Some(child);
                return Ok(());
            }
            // Its port may still be held a moment, or its database be restarting: again.
            let _ = child.wait();
            anyhow::ensure!(Instant::now() < deadline, "a server did not start again: {line:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9`, then starts it again `after` that long.
    async fn restart(&mut self, after: Duration) -> anyhow::Result<()> {
        self.kill9();
        tokio::time::sleep(after).await;
        self.start()
    }

    /// SIGSTOP for `span`, then SIGCONT.
    async fn pause(&self, span: Duration) {
        self.signal("STOP");
        tokio::time::sleep(span).await;
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill9();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Load {
    Plain,
    Delayed,
    Workflow,
    Limited,
}

struct Acked {
    id: TaskId,
    load: Load,
    run_at: Timestamp,
}

type History = Arc<Mutex<Vec<Acked>>>;

/// Submits `task` until a node acknowledges it (its idempotency key makes a resend safe), or the
/// load stops.
async fn submit(client: &Client, task: SubmitTask, stop: &CancellationToken) -> Option<Task> {
    loop {
        match client.submit(task.clone()).await {
            Ok(t) => return Some(t),
            Err(_) if stop.is_cancelled() => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One stream of submits of one kind, `every` apart, until `stop`.
async fn load(client: Client, kind: Load, every: Duration, history: History, stop: CancellationToken) {
    for i in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        let task = match kind {
            Load::Plain if i % 4 == 0 => SubmitTask::new("chaos", "sleep").payload(&json!({"ms": 300})),
            Load::Plain => SubmitTask::new("chaos", "echo").payload(&json!({"i": i})),
            Load::Delayed => SubmitTask::new("chaos-delayed", "echo")
                .payload(&json!({"i": i}))
                .map(|t| t.delay(Duration::from_millis(500 + (i * 397) % 2_000))),
            Load::Workflow => SubmitTask::new("chaos-wf", "fan.out").payload(&json!({
                "count": CHILDREN,
                "child": {"kind": "sleep", "payload": {"ms": 50}, "lease_timeout_ms": LEASE_MS},
                "join": {"kind": "echo", "lease_timeout_ms": LEASE_MS},
                "failure_policy": {"kind": "quorum", "min_successes": QUORUM},
            })),
            Load::Limited => SubmitTask::new("chaos-limited", "hold").payload(&json!({})),
        };
        let mut task = task.expect("a payload serializes").idempotency_key(format!("{kind:?}-{i}"));
        task.lease_timeout_ms = Some(LEASE_MS);
        task.max_attempts = Some(20);
        if kind == Load::Limited {
            task.concurrency_key = Some("hot".into());
        }
        match submit(&client, task, &stop).await {
            Some(t) => history.lock().expect("history").push(Acked { id: t.id, load: kind, run_at: t.run_at }),
            None => return,
        }
        tokio::time::sleep(every).await;
    }
}

/// What the nemesis did, by kind.
#[derive(Default)]
struct Nemesis {
    done: HashMap<&'static str, usize>,
}

/// The machine's PostgreSQL cluster, when `pg_ctlcluster` drives it (Debian's packaging).
fn local_postgres() -> Option<String> {
    let versions = std::fs::read_dir("/etc/postgresql").ok()?;
    let version = versions.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).next()?;
    Command::new("pg_ctlcluster").arg("--help").output().ok()?;
    Some(version)
}

fn restart_postgres(version: &str) -> bool {
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", "restart", "-m", "immediate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn nemesis(
    nodes: &mut [Proc],
    workers: &mut [Proc],
    postgres: Option<&str>,
    netns: Option<&Netns>,
    until: Instant,
) -> anyhow::Result<Nemesis> {
    let mut done = Nemesis::default();
    let pause = Duration::from_millis(LEASE_MS + 1_500);
    // The actions this run can take: 0-3 always, 4 with PostgreSQL's restarts, 5 with a namespace.
    let mut actions = vec![0, 1, 2, 3];
    actions.extend(postgres.map(|_| 4));
    actions.extend(netns.map(|_| 5));
    while Instant::now() < until {
        let (action, w, n, wait) = {
            let mut rng = rand::rng();
            (
                actions[rng.random_range(0..actions.len())],
                rng.random_range(0..workers.len()),
                rng.random_range(0..nodes.len()),
                rng.random_range(1_000..3_000),
            )
        };
        let name = match action {
            0 => {
                workers[w].restart(Duration::from_millis(300)).await?;
                "kill -9 a worker"
            }
            1 => {
                workers[w].pause(pause).await;
                "pause a worker past its leases (SIGSTOP, SIGCONT)"
            }
            2 => {
                nodes[n].restart(Duration::from_millis(500)).await?;
                "kill -9 a server node"
            }
            3 => {
                nodes[n].pause(pause).await;
                "pause a server node (SIGSTOP, SIGCONT)"
            }
            4 => {
                let version = postgres.expect("only with PostgreSQL");
                anyhow::ensure!(restart_postgres(version), "pg_ctlcluster restart failed");
                "restart PostgreSQL (immediate)"
            }
            _ => {
                let ns = netns.expect("only with a namespace");
                ns.cut(true);
                tokio::time::sleep(pause).await;
                ns.cut(false);
                "partition a worker past its leases (packets dropped)"
            }
        };
        *done.done.entry(name).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    Ok(done)
}

/// The counts the checker prints.
#[derive(Default, Debug)]
struct Violations {
    lost: usize,
    duplicated: usize,
    stale: usize,
    stuck: usize,
    early: usize,
    join_early: usize,
    join_twice: usize,
    cron_twice: usize,
    over_limit: usize,
    /// What was checked, beside the counts: joins found, and the peak of the limited key.
    joins_checked: usize,
    key_peak: usize,
}

fn successes(t: &Task) -> usize {
    t.history.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count()
}

/// A report the task had moved past was taken if its attempts are out of order, or one
/// succeeded and another came after it, or the task succeeded without its last attempt doing so.
fn took_a_stale_report(t: &Task) -> bool {
    let ordered = t.history.windows(2).all(|w| w[0].number < w[1].number);
    let success_last = t.history.iter().rev().skip(1).all(|a| a.outcome != AttemptOutcome::Succeeded);
    let consistent =
        t.state != TaskState::Succeeded || t.history.last().is_some_and(|a| a.outcome == AttemptOutcome::Succeeded);
    !(ordered && success_last && consistent)
}

/// The most intervals open at once (one ending as another starts counts as apart).
fn peak_overlap<T: Ord + Copy>(intervals: &[(T, T)]) -> usize {
    let mut edges: Vec<(T, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    edges.sort(); // at the same instant an end (-1) sorts before a start
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

async fn get(client: &Client, id: TaskId) -> anyhow::Result<Option<Task>> {
    for _ in 0..50 {
        match client.get(id).await {
            Ok(t) => return Ok(Some(t)),
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    anyhow::bail!("the server did not answer for task {id}")
}

async fn check(
    client: &Client,
    acked: &[Acked],
    runs: &Runs,
    quiesce: Duration,
) -> anyhow::Result<(Violations, usize, usize)> {
    let mut v = Violations::default();
    // Wait for the acknowledged work to finish (or the time to run out).
    let deadline = Instant::now() + quiesce;
    let mut tasks: HashMap<TaskId, Task> = HashMap::new();
    loop {
        let mut open = 0;
        for a in acked {
            if tasks.get(&a.id).is_some_and(|t| t.state.is_terminal()) {
                continue;
            }
            if let Some(t) = get(client, a.id).await? {
                open += usize::from(!t.state.is_terminal());
                tasks.insert(a.id, t);
            }
        }
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let runs = runs.lock().expect("runs").clone();
    let mut limited = Vec::new();
    let mut attempts = 0;
    for a in acked {
        let Some(t) = tasks.get(&a.id) else {
            v.lost += 1;
            continue;
        };
        attempts += t.history.len();
        v.duplicated += usize::from(successes(t) > 1);
        v.stale += usize::from(took_a_stale_report(t));
        // After the quiet spell, a task not finished is stuck, whether still running on a lease
        // that lapsed (no reaper took it back) or waiting with workers idle.
        v.stuck += usize::from(!t.state.is_terminal());
        if a.load == Load::Delayed {
            v.early += usize::from(t.history.first().is_some_and(|first| first.started_at < a.run_at));
        }
        if a.load == Load::Limited
            && let Some(accepted) = t.history.iter().find(|h| h.outcome == AttemptOutcome::Succeeded)
        {
            limited.extend(runs.iter().filter(|r| (r.0, r.1) == (t.id, accepted.number)).map(|r| (r.2, r.3)));
        }
        if a.load == Load::Workflow
            && let Some(wf) = t.workflow_id
        {
            let workflow = client.get_workflow(wf).await?;
            let join = workflow.nodes.iter().find(|n| n.node.ends_with("/join"));
            if let Some(join) = join
                && let Some(join_task) = get(client, join.task_id).await?
            {
                let prefix = join.node.trim_end_matches("join");
                let mut finished = Vec::new();
                for child in workflow.nodes.iter().filter(|n| n.node.starts_with(prefix) && n.node != join.node) {
                    if let Some(c) = get(client, child.task_id).await?
                        && let Some(done) = c.history.iter().find(|h| h.outcome == AttemptOutcome::Succeeded)
                    {
                        finished.push(done.finished_at);
                    }
                }
                finished.sort();
                v.joins_checked += 1;
                v.join_twice += usize::from(successes(&join_task) > 1);
                if let Some(first) = join_task.history.first() {
                    let quorum_at = finished.get(QUORUM - 1);
                    v.join_early += usize::from(quorum_at.is_none_or(|q| first.started_at < *q));
                }
            }
        }
    }
    v.key_peak = peak_overlap(&limited);
    v.over_limit = v.key_peak.saturating_sub(KEY_LIMIT);
    // Cron: one task per tick.
    let mut options = ListOptions { queue: Some("chaos-cron".into()), limit: Some(1000), ..Default::default() };
    let mut ticks = Vec::new();
    loop {
        let page = client.list(&options).await?;
        ticks.extend(page.tasks.into_iter().map(|t| t.idempotency_key.unwrap_or_default()));
        match page.next_cursor {
            Some(c) => options.cursor = Some(c),
            None => break,
        }
    }
    let distinct: HashSet<&String> = ticks.iter().collect();
    v.cron_twice = ticks.len() - distinct.len();
    Ok((v, attempts, ticks.len()))
}

pub(super) async fn run(args: &BenchArgs, backend: &Backend<'_>) -> anyhow::Result<()> {
    let duration = args.duration;
    let (node_args, store): (Vec<Vec<String>>, String) = match backend {
        Backend::Sqlite { dir, durability } => (
            vec![["--data-dir", &dir.display().to_string(), "--durability", durability].map(String::from).to_vec()],
            "SQLite, one node".into(),
        ),
        Backend::Postgres { url, schema } => {
            let one =
                ["--database", url, "--database-schema", schema, "--leader-lease", "2s"].map(String::from).to_vec();
            (vec![one.clone(), one], "PostgreSQL, two nodes".into())
        }
    };
    let netns = Netns::create();
    let mut nodes = Vec::new();
    let (mut urls, mut inner_urls) = (Vec::new(), Vec::new());
    for extra in node_args {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = if netns.is_some() { format!("0.0.0.0:{port}") } else { format!("127.0.0.1:{port}") };
        let mut args = vec!["server".to_owned(), "--listen".into(), listen];
        if let Some(ns) = &netns {
            let hosts = format!("127.0.0.1,localhost,{}", ns.host);
            args.extend(["--insecure-no-auth".into(), "--allowed-hosts".into(), hosts]);
            inner_urls.push(format!("http://{}:{port}", ns.host));
        }
        args.extend(extra);
        let mut node = Proc { args, child: None, server: true, netns: None };
        node.start()?;
        nodes.push(node);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    let url = urls.join(",");
    let client = Client::new(&url)?;
    let postgres = match backend {
        Backend::Postgres { .. } => local_postgres(),
        Backend::Sqlite { .. } => None,
    };
    println!(
        "taskwarden bench, chaos: {store}, {}, worker partitions {}, PostgreSQL restarts {}",
        humantime::format_duration(duration),
        if netns.is_some() { "on" } else { "off (no network namespace: not root?)" },
        if matches!(backend, Backend::Sqlite { .. }) {
            "n/a"
        } else if postgres.is_some() {
            "on"
        } else {
            "off (no pg_ctlcluster)"
        }
    );
    let limits = QueueLimits { key_concurrency: Some(KEY_LIMIT as u32), ..Default::default() };
    client.update_queue("chaos-limited", &QueueUpdate { weight: None, limits: Some(limits) }, true).await?;
    let cron = json!({"name": "chaos-tick", "schedule": "* * * * * *", "task": {"queue": "chaos-cron", "kind": "echo", "lease_timeout_ms": LEASE_MS}});
    client.create_cron(&serde_json::from_value(cron)?).await?;

    let runs: Runs = Arc::default();
    let hold_stop = CancellationToken::new();
    let holders = hold_workers(&url, &runs, &hold_stop);
    // The second worker starts on the last node, from inside the namespace when there is one.
    let mut workers: Vec<Proc> = (0..2)
        .map(|i| {
            let (urls, ns) = match (i, &netns) {
                (0, _) => (urls.clone(), None),
                (_, Some(ns)) => (inner_urls.iter().rev().cloned().collect(), Some(ns.name.clone())),
                (_, None) => (urls.iter().rev().cloned().collect::<Vec<_>>(), None),
            };
            let args = ["worker", "--url", &urls.join(","), "--queue", QUEUES, "--concurrency", "8"]
                .map(String::from)
                .to_vec();
            Proc { args, child: None, server: false, netns: ns }
        })
        .collect();
    for w in &mut workers {
        w.start()?;
    }

    let history: History = Arc::default();
    let stop = CancellationToken::new();
    let loads =
        [(Load::Plain, 20), (Load::Delayed, 100), (Load::Workflow, 500), (Load::Limited, 250)].map(|(kind, ms)| {
            tokio::spawn(load(client.clone(), kind, Duration::from_millis(ms), history.clone(), stop.clone()))
        });
    let started = Instant::now();
    let done = nemesis(&mut nodes, &mut workers, postgres.as_deref(), netns.as_ref(), started + duration).await;
    if let Some(ns) = &netns {
        ns.cut(false);
    }
    // Everything up again, the load stopped, the cron paused: then the work must finish.
    for p in nodes.iter_mut().chain(workers.iter_mut()) {
        p.signal("CONT");
        if p.child.is_none() {
            p.start()?;
        }
    }
    stop.cancel();
    for l in loads {
        let _ = l.await;
    }
    let done = done?;
    for _ in 0..100 {
        if client.pause_cron("chaos-tick", true).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acked = std::mem::take(&mut *history.lock().expect("history"));
    let total: usize = done.done.values().sum();
    let mut actions: Vec<_> = done.done.iter().collect();
    actions.sort();
    println!(
        "nemesis: {total} actions ({})",
        actions.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
    );
    let by_load = |l: Load| acked.iter().filter(|a| a.load == l).count();
    println!(
        "workload: {} tasks acknowledged (plain {}, delayed {}, workflows {}, one concurrency key {}); checking...",
        acked.len(),
        by_load(Load::Plain),
        by_load(Load::Delayed),
        by_load(Load::Workflow),
        by_load(Load::Limited)
    );
    // The one-key workers go on until the work is done.
    let (v, attempts, ticks) = check(&client, &acked, &runs, Duration::from_secs(180)).await?;
    hold_stop.cancel();
    for h in holders {
        let _ = h.await;
    }
    println!(
        "history read back: {attempts} attempts, {ticks} cron ticks, {} quorum joins; the one key's accepted runs peaked at {} at once",
        v.joins_checked, v.key_peak
    );
    println!();
    println!("| invariant | count |");
    println!("|---|---|");
    let rows = [
        ("acknowledged tasks lost", v.lost),
        ("successful completions recorded more than once", v.duplicated),
        ("stale reports accepted", v.stale),
        ("tasks stuck (running past their lease, or unfinished)", v.stuck),
        ("delayed tasks started before their time", v.early),
        ("quorum joins that ran before their third child succeeded", v.join_early),
        ("joins that ran more than once", v.join_twice),
        ("cron ticks fired twice", v.cron_twice),
        ("accepted runs over the per-key concurrency limit of 2 (at the peak)", v.over_limit),
    ];
    for (name, n) in &rows {
        println!("| {name} | {n} |");
    }
    let broken: usize = rows.iter().map(|(_, n)| n).sum();
    anyhow::ensure!(broken == 0, "{broken} invariant violations");
    anyhow::ensure!(!acked.is_empty(), "nothing was acknowledged");
    Ok(())
}

#[cfg(test)]
mod tests {
    use taskwarden_core::Attempt;

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn the_peak_counts_attempts_running_at_once_and_one_ending_as_another_starts_as_apart() {
        assert_eq!(peak_overlap::<Timestamp>(&[]), 0);
        assert_eq!(peak_overlap(&[(at(0), at(10)), (at(10), at(20)), (at(20), at(30))]), 1);
        assert_eq!(peak_overlap(&[(at(0), at(10)), (at(5), at(15)), (at(6), at(7)), (at(12), at(20))]), 3);
    }

    #[test]
    fn a_success_not_last_or_attempts_out_of_order_is_a_stale_report_taken() {
        let attempt = |number, outcome| Attempt {
            number,
            worker_id: "w".into(),
            started_at: at(0),
            finished_at: at(1),
            outcome,
            error: None,
        };
        let spec = SubmitTask::new("q", "k").validate(&taskwarden_core::validate::Limits::default(), at(0)).unwrap();
        let mut t = Task::new(TaskId::from_bytes([1; 16]), spec, at(0));
        t.state = TaskState::Succeeded;
        t.history = vec![attempt(1, AttemptOutcome::TimedOut), attempt(2, AttemptOutcome::Succeeded)];
        assert!(!took_a_stale_report(&t));
        t.history = vec![attempt(1, AttemptOutcome::Succeeded), attempt(2, AttemptOutcome::TimedOut)];
        assert!(took_a_stale_report(&t));
        t.history = vec![attempt(2, AttemptOutcome::TimedOut), attempt(1, AttemptOutcome::Succeeded)];
        assert!(took_a_stale_report(&t));
        t.history = vec![attempt(1, AttemptOutcome::Failed)];
        assert!(took_a_stale_report(&t), "succeeded, yet its last attempt failed");
    }
}
