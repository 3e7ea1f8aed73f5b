//! The README's SDK quickstart: a worker with one typed handler, and a client that submits ten
//! tasks and gathers their results.
//!
//! Start a server first (`cargo run --release -- server`), then:
//! `cargo run --release -p taskwarden-worker --example quickstart`

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskwarden_client::{Client, SubmitTask, SubmitTaskExt};
use taskwarden_worker::{TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Greet {
    name: String,
}

async fn greet(ctx: TaskContext, job: Greet) -> Result<String, TaskError> {
    if job.name.is_empty() {
        return Err(TaskError::fail("name must not be empty")); // permanent: not retried
    }
    ctx.progress(1.0, Some("greeted".to_string()));
    Ok(format!("hello, {} (attempt {})", job.name, ctx.attempt))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TASKWARDEN_URL").unwrap_or_else(|_| "http://127.0.0.1:7433".into());
    let stop = CancellationToken::new();
    let worker =
        tokio::spawn(Worker::builder(&url).queue("greetings").concurrency(8).handler("greet", greet).run(stop.clone()));

    let client = Client::new(&url)?;
    let tasks: Vec<SubmitTask> = (0..10)
        .map(|i| SubmitTask::new("greetings", "greet").payload(&Greet { name: format!("user {i}") }))
        .collect::<Result<_, _>>()?;
    for task in client.submit_batch(tasks).await? {
        let done = client.wait(task.id, Duration::from_secs(30)).await?;
        println!("{} {}: {}", done.id, done.state, done.result.map(|r| r.get().to_owned()).unwrap_or_default());
    }

    stop.cancel();
    worker.await??;
    Ok(())
}
