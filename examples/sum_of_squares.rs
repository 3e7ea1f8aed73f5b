//! Map-reduce by fanning out at run time: a `split` task halves its range until the pieces are
//! small, then fans out one `square` task per number; each level's `sum` join adds up its
//! children's results, page by page. The job's result is the outer join's.
//!
//! `cargo run --release -p taskwarden-examples --example sum_of_squares`

#[path = "embedded.rs"]
mod embedded;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskwarden_client::{Client, NodeSpec, SubmitTask, SubmitTaskExt, WorkflowState};
use taskwarden_worker::{TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Range {
    from: u64,
    to: u64,
}

fn task<T: Serialize>(kind: &str, payload: &T) -> NodeSpec {
    NodeSpec {
        kind: kind.into(),
        queue: "squares".into(),
        payload: Some(serde_json::value::to_raw_value(payload).expect("serializable")),
        ..NodeSpec::default()
    }
}

/// Map: split wide ranges in two, narrow ones into one task per number.
async fn split(ctx: TaskContext, r: Range) -> Result<&'static str, TaskError> {
    let children = if r.to - r.from > 100 {
        let mid = (r.from + r.to) / 2;
        vec![task("split", &Range { from: r.from, to: mid }), task("split", &Range { from: mid, to: r.to })]
    } else {
        (r.from..r.to).map(|n| task("square", &n)).collect()
    };
    ctx.fan_out(children, task("sum", &())).await?;
    Ok("split")
}

async fn square(_ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
    Ok(n * n)
}

/// Reduce: add up the children's results, 100 at a time.
async fn sum(ctx: TaskContext, _: ()) -> Result<u64, TaskError> {
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        let page = ctx.parents_page(after.as_deref(), 100).await?;
        for p in &page.parents {
            let result = p.result.as_ref().ok_or_else(|| TaskError::fail(format!("{} failed", p.node)))?;
            total += serde_json::from_str::<u64>(result.get())?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(total),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = embedded::Server::start().await?;
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url)
        .queue("squares")
        .concurrency(32)
        .handler("split", split)
        .handler("square", square)
        .handler("sum", sum);
    let worker = tokio::spawn(worker.run(stop.clone()));

    let client = Client::new(&server.url)?;
    let n = 2_000;
    let root = client.submit(SubmitTask::new("squares", "split").payload(&Range { from: 0, to: n })?).await?;
    let root = client.wait(root.id, Duration::from_secs(60)).await?;
    let wf = client
        .wait_workflow(root.workflow_id.ok_or("the root task did not fan out")?, Duration::from_secs(120))
        .await?;
    if wf.state != WorkflowState::Succeeded {
        return Err(format!("the job ended {}: {:?}", wf.state.as_str(), wf.error).into());
    }
    let total: u64 = serde_json::from_str(wf.result.as_ref().ok_or("no result")?.get())?;
    assert_eq!(total, (0..n).map(|i| i * i).sum::<u64>(), "map-reduce agrees with a serial sum");
    println!("sum of squares below {n}: {total}, computed by {} tasks", wf.total);
    if let Some(s) = wf.speedup {
        println!(
            "speedup {:.1}x, peak {} tasks at once, critical path {:.3} s",
            s.speedup,
            s.peak_parallelism,
            s.critical_path.as_secs_f64()
        );
    }

    stop.cancel();
    worker.await??;
    server.stop().await
}
