//! `taskwarden demo`: the seed article's example made real. An embedded server on a temporary
//! data dir, a local HTTP server to fetch from, two workers, and N `http.fetch` tasks submitted
//! at once, run in parallel and gathered; then the speedup the parallelism bought.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::Path;
use axum::http::StatusCode;
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt, TaskState};
use taskwarden_server::ServerConfig;
use taskwarden_store::{SqliteConfig, SqliteStore};
use taskwarden_worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::args::DemoArgs;

/// The pages the demo fetches: each takes 10-50 ms to serve, so running them one after another
/// would take seconds, and running them in parallel should not.
async fn page(Path(n): Path<u64>) -> (StatusCode, String) {
    tokio::time::sleep(Duration::from_millis(10 + (n * 7919) % 41)).await;
    (StatusCode::OK, format!("page {n}: {}", "lorem ipsum ".repeat((n % 16 + 1) as usize)))
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
    let site_url = format!("http://{}", site.local_addr()?);
    let site_stop = stop.clone();
    let site_app = axum::Router::new().route("/page/{n}", axum::routing::get(page));
    tokio::spawn(async move {
        axum::serve(site, site_app).with_graceful_shutdown(async move { site_stop.cancelled().await }).await
    });

    let workers: Vec<_> = (0..2)
        .map(|i| {
            let w = Worker::builder(url.clone())
                .name(format!("demo-worker-{i}"))
                .queue("fetch")
                .concurrency(args.concurrency)
                .shutdown_grace(Duration::from_secs(5))
                .builtin_handlers();
            tokio::spawn(w.run(stop.clone()))
        })
        .collect();

    println!("Taskwarden demo: server {url}, data in {}", dir.path().display());
    println!(
        "Submitting {} http.fetch tasks against {site_url} to 2 workers x {} slots...",
        args.tasks, args.concurrency
    );
    let client = Client::new(&url)?;
    let requests: Vec<SubmitTask> = (0..args.tasks)
        .map(|n| {
            SubmitTask::new("fetch", "http.fetch").payload(&serde_json::json!({"url": format!("{site_url}/page/{n}")}))
        })
        .collect::<Result<_, _>>()?;
    let wall = Instant::now();
    let submitted = client.submit_batch(requests).await?;
    let mut done = Vec::with_capacity(submitted.len());
    for t in &submitted {
        done.push(client.wait(t.id, Duration::from_secs(120)).await?);
    }
    let wall = wall.elapsed();

    let succeeded = done.iter().filter(|t| t.state == TaskState::Succeeded).count();
    let failed: Vec<_> = done.iter().filter(|t| t.state != TaskState::Succeeded).collect();
    let serial: Duration = done.iter().map(|t| t.total_run_time()).sum();
    let bytes: u64 = done
        .iter()
        .filter_map(|t| t.result.as_ref())
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok())
        .filter_map(|v| v["bytes"].as_u64())
        .sum();
    let speedup = serial.as_secs_f64() / wall.as_secs_f64();

    println!();
    println!("tasks:            {}", done.len());
    println!("succeeded:        {succeeded}");
    println!("failed:           {}", failed.len());
    for t in failed.iter().take(5) {
        println!("  {} {}: {}", t.id, t.state, t.error.as_deref().unwrap_or(""));
    }
    println!("bytes gathered:   {bytes}");
    println!("T_serial:         {:.3} s   (sum of every attempt's run time)", serial.as_secs_f64());
    println!("T_parallel:       {:.3} s   (wall time, submit to last result)", wall.as_secs_f64());
    println!("speedup:          {speedup:.1}x  (T_serial / T_parallel)");

    stop.cancel();
    for w in workers {
        w.await??;
    }
    server.await??;
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    if succeeded != done.len() {
        anyhow::bail!("{} of {} tasks did not succeed", done.len() - succeeded, done.len());
    }
    Ok(())
}
