//! Fetch and gather, the seed article's asyncio example as a workflow: fetch K URLs in parallel
//! on workers (with the built-in `http.fetch` handler), then gather their results in a join.
//!
//! `cargo run --release -p taskwarden-examples --example fetch_gather`

#[path = "embedded.rs"]
mod embedded;

use std::time::Duration;

use axum::extract::Path;
use taskwarden_client::{Client, FailurePolicy, NodeSpec, WorkflowSpec};
use taskwarden_worker::{AllowRule, FetchPolicy, TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

/// The join: one line per URL, in node order.
async fn gather(ctx: TaskContext, _payload: serde_json::Value) -> Result<Vec<String>, TaskError> {
    let parents = ctx.parents().await?;
    Ok(parents
        .iter()
        .map(|p| match &p.result {
            Some(r) => {
                let v: serde_json::Value = serde_json::from_str(r.get()).unwrap_or_default();
                format!("{}: {} ({} bytes)", p.node, v["status"], v["bytes"])
            }
            None => format!("{}: failed: {}", p.node, p.error.as_deref().unwrap_or("?")),
        })
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = embedded::Server::start().await?;
    // A local site to fetch from: each page takes 100 ms.
    let site = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let site_addr = site.local_addr()?;
    let site_url = format!("http://{site_addr}");
    let app = axum::Router::new().route(
        "/item/{n}",
        axum::routing::get(|Path(n): Path<u32>| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            format!("item {n}")
        }),
    );
    tokio::spawn(async move { axum::serve(site, app).await });

    let stop = CancellationToken::new();
    // http.fetch refuses loopback addresses unless allowed: open the local site alone.
    let worker = Worker::builder(&server.url)
        .queue("fetch")
        .concurrency(16)
        .fetch_policy(FetchPolicy::default().allow(AllowRule::from(site_addr)))
        .builtin_handlers()
        .handler("gather", gather);
    let worker = tokio::spawn(worker.run(stop.clone()));

    let mut tasks: Vec<NodeSpec> = (0..10)
        .map(|n| NodeSpec {
            id: format!("url-{n:02}"),
            kind: "http.fetch".into(),
            queue: "fetch".into(),
            payload: Some(
                serde_json::value::to_raw_value(&serde_json::json!({"url": format!("{site_url}/item/{n}")}))
                    .expect("json"),
            ),
            ..NodeSpec::default()
        })
        .collect();
    let join = NodeSpec {
        id: "gather".into(),
        kind: "gather".into(),
        queue: "fetch".into(),
        depends_on: tasks.iter().map(|t| t.id.clone()).collect(),
        ..NodeSpec::default()
    };
    tasks.push(join);

    let client = Client::new(&server.url)?;
    let spec = WorkflowSpec {
        name: Some("fetch and gather".into()),
        failure_policy: FailurePolicy::Collect,
        tasks,
        traceparent: None,
    };
    let wf = client.submit_workflow(&spec).await?;
    let wf = client.wait_workflow(wf.id, Duration::from_secs(60)).await?;
    let lines: Vec<String> = serde_json::from_str(wf.result.as_ref().ok_or("no result")?.get())?;
    for line in &lines {
        println!("{line}");
    }
    if let Some(s) = wf.speedup {
        println!(
            "10 fetches of 100 ms each: T_parallel {:.3} s, speedup {:.1}x",
            s.t_parallel.as_secs_f64(),
            s.speedup
        );
    }

    stop.cancel();
    worker.await??;
    server.stop().await
}
