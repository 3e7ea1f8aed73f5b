//! `taskwarden demo`: the seed article's example made real. An embedded server on a temporary
//! data dir, a local HTTP site to fetch from (some pages slow, some failing), two workers, and a
//! workflow: N `http.fetch` tasks fanned out in parallel and a join that gathers their results,
//! page by page. Then the gathered result, the failures and the speedup report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Serialize;
use taskwarden_client::{Client, FailurePolicy, NodeSpec, WorkflowSpec, WorkflowState};
use taskwarden_server::ServerConfig;
use taskwarden_store::{SqliteConfig, SqliteStore};
use taskwarden_worker::{AllowRule, FetchPolicy, TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

use crate::args::DemoArgs;
use crate::exit::out;

/// The pages: each takes 10-50 ms to serve (one in ten takes 200 ms more); one in 50 answers 500
/// (retried, then dead-lettered) and one in 100 is missing (404: failed at once).
async fn page(Path(n): Path<u64>) -> (StatusCode, String) {
    let slow = if n % 10 == 3 { 200 } else { 0 };
    tokio::time::sleep(Duration::from_millis(10 + (n * 7919) % 41 + slow)).await;
    match n {
        n if n % 50 == 7 => (StatusCode::INTERNAL_SERVER_ERROR, "flaky upstream".into()),
        n if n % 100 == 42 => (StatusCode::NOT_FOUND, "no such page".into()),
        n => (StatusCode::OK, format!("page {n}: {}", "lorem ipsum ".repeat((n % 16 + 1) as usize))),
    }
}

/// Failed fetches listed by name; past these, their count.
const SHOW_FAILED: usize = 5;

#[derive(Serialize)]
struct Gathered {
    pages: usize,
    bytes: u64,
    failed: Vec<String>,
}

/// The join: reads every fetch's outcome a page at a time (memory stays flat however wide the
/// fan-out) and integrates them into one answer.
async fn gather(ctx: TaskContext, _payload: serde_json::Value) -> Result<Gathered, TaskError> {
    let mut out = Gathered { pages: 0, bytes: 0, failed: Vec::new() };
    let mut after: Option<String> = None;
    loop {
        let page = ctx.parents_page(after.as_deref(), 100).await?;
        for p in &page.parents {
            match &p.result {
                Some(r) => {
                    let v: serde_json::Value = serde_json::from_str(r.get()).unwrap_or_default();
                    out.pages += 1;
                    out.bytes += v["bytes"].as_u64().unwrap_or(0);
                }
                None => out.failed.push(format!("{}: {}", p.node, p.error.as_deref().unwrap_or("?"))),
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let stop = CancellationToken::new();

    let dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server =
        tokio::spawn(taskwarden_server::serve(listener, Arc::new(store), ServerConfig::default(), stop.clone()));

    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let site_addr = site.local_addr()?;
    let site_url = format!("http://{site_addr}");
    let site_stop = stop.clone();
    let site_app = axum::Router::new().route("/page/{n}", axum::routing::get(page));
    tokio::spawn(async move {
        axum::serve(site, site_app).with_graceful_shutdown(async move { site_stop.cancelled().await }).await
    });

    // http.fetch refuses loopback addresses unless allowed: the demo opens its own site alone.
    let site_only = FetchPolicy::default().allow(AllowRule::from(site_addr));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let w = Worker::builder(url.clone())
                .name(format!("demo-worker-{i}"))
                .queue("fetch")
                .concurrency(args.concurrency)
                .shutdown_grace(Duration::from_secs(5))
                .fetch_policy(site_only.clone())
                .builtin_handlers()
                .handler("demo.gather", gather);
            tokio::spawn(w.run(stop.clone()))
        })
        .collect();

    out!("Taskwarden demo: server {url}, data in {}", dir.path().display());
    out!(
        "A workflow: {} http.fetch tasks against {site_url}, fanned out to 2 workers x {} slots, and a join.",
        args.tasks,
        args.concurrency
    );
    let client = Client::new(&url)?;
    let fetch = |n: usize| -> anyhow::Result<NodeSpec> {
        Ok(NodeSpec {
            id: format!("fetch-{n:04}"),
            kind: "http.fetch".into(),
            queue: "fetch".into(),
            payload: Some(serde_json::value::to_raw_value(
                &serde_json::json!({"url": format!("{site_url}/page/{n}")}),
            )?),
            max_attempts: Some(2),
            backoff: Some(taskwarden_client::Backoff {
                min: Duration::from_millis(50),
                max: Duration::from_millis(50),
                multiplier: 1.0,
                jitter: 0.0,
            }),
            ..NodeSpec::default()
        })
    };
    let mut tasks = (0..args.tasks).map(fetch).collect::<anyhow::Result<Vec<_>>>()?;
    let join = NodeSpec {
        id: "gather".into(),
        kind: "demo.gather".into(),
        queue: "fetch".into(),
        depends_on: tasks.iter().map(|t| t.id.clone()).collect(),
        ..NodeSpec::default()
    };
    tasks.push(join);
    // Collect: a failed fetch is reported by the join instead of failing the whole job.
    let spec = WorkflowSpec {
        name: Some("demo: fetch and gather".into()),
        failure_policy: FailurePolicy::Collect,
        tasks,
        traceparent: None,
    };
    let submitted = client.submit_workflow(&spec).await?;
    let wf = client.wait_workflow(submitted.id, Duration::from_secs(120)).await?;

    let fetches = wf.total - 1;
    let failed_fetches = wf.failed;
    out!();
    out!("workflow:         {} ({})", wf.id, wf.state.as_str());
    out!("fetch tasks:      {fetches}");
    out!("succeeded:        {}", fetches - failed_fetches);
    out!("failed:           {failed_fetches}");
    if let Some(r) = &wf.result {
        let g: serde_json::Value = serde_json::from_str(r.get())?;
        out!("gathered:         {} pages, {} bytes", g["pages"], g["bytes"]);
        let failed = g["failed"].as_array().map(Vec::as_slice).unwrap_or_default();
        for f in failed.iter().take(SHOW_FAILED) {
            out!("  failed {}", f.as_str().unwrap_or_default());
        }
        if failed.len() > SHOW_FAILED {
            out!("  and {} more", failed.len() - SHOW_FAILED);
        }
    }
    if let Some(s) = &wf.speedup {
        out!("T_serial:         {:.3} s   (sum of every attempt's run time)", s.t_serial.as_secs_f64());
        out!("T_parallel:       {:.3} s   (wall time, first start to last finish)", s.t_parallel.as_secs_f64());
        out!("speedup:          {:.1}x  (T_serial / T_parallel)", s.speedup);
        out!("peak running:     {} tasks at once; efficiency {:.2} (speedup / peak)", s.peak_parallelism, s.efficiency);
        out!(
            "critical path:    {:.3} s   (longest chain of run times: the floor for T_parallel)",
            s.critical_path.as_secs_f64()
        );
        out!("queue wait:       {:.3} s   (total time tasks were ready but not started)", s.queue_wait.as_secs_f64());
    }

    stop.cancel();
    for w in workers {
        w.await??;
    }
    server.await??;
    out!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    if wf.state != WorkflowState::Succeeded {
        anyhow::bail!("the workflow ended {}: {}", wf.state.as_str(), wf.error.unwrap_or_default());
    }
    Ok(())
}
