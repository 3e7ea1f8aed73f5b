//! Map-reduce word count: split a large text into chunks, count each chunk in parallel on
//! workers, merge the counts in a join that reads the map results page by page.
//!
//! `cargo run --release -p taskwarden-examples --example word_count`

#[path = "embedded.rs"]
mod embedded;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskwarden_client::{Client, NodeSpec, WorkflowSpec, WorkflowState};
use taskwarden_worker::{TaskContext, TaskError, Worker};
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Chunk {
    text: String,
}

/// Map: count the words of one chunk.
async fn count(_ctx: TaskContext, chunk: Chunk) -> Result<HashMap<String, u64>, TaskError> {
    Ok(count_words(&chunk.text))
}

fn count_words(text: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

#[derive(Serialize, Deserialize)]
struct Merged {
    total: u64,
    distinct: usize,
    top: Vec<(String, u64)>,
}

/// Reduce: merge every chunk's counts, reading the map results 100 at a time.
async fn merge(ctx: TaskContext, _payload: serde_json::Value) -> Result<Merged, TaskError> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.parents_page(after.as_deref(), 100).await?;
        for parent in &page.parents {
            let Some(result) = &parent.result else {
                return Err(TaskError::fail(format!("chunk {} failed: {:?}", parent.node, parent.error)));
            };
            let part: HashMap<String, u64> = serde_json::from_str(result.get())?;
            for (word, n) in part {
                *counts.entry(word).or_insert(0) += n;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(summarize(&counts))
}

fn summarize(counts: &HashMap<String, u64>) -> Merged {
    let mut top: Vec<(String, u64)> = counts.iter().map(|(w, n)| (w.clone(), *n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    Merged { total: counts.values().sum(), distinct: counts.len(), top }
}

/// A deterministic "large text": 200,000 words drawn from a small vocabulary.
fn text() -> String {
    const WORDS: &[&str] = &[
        "task", "queue", "worker", "lease", "join", "parallel", "speedup", "node", "result", "retry", "fan", "out",
        "gather", "durable", "commit", "schedule", "priority", "the", "a", "of",
    ];
    let mut x: u64 = 42;
    (0..200_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            WORDS[((x >> 33) % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = embedded::Server::start().await?;
    let stop = CancellationToken::new();
    let worker = Worker::builder(&server.url)
        .queue("wordcount")
        .concurrency(8)
        .handler("wc.count", count)
        .handler("wc.merge", merge);
    let worker = tokio::spawn(worker.run(stop.clone()));

    let text = text();
    let words: Vec<&str> = text.split(' ').collect();
    let chunks: Vec<String> = words.chunks(5_000).map(|c| c.join(" ")).collect();
    println!("{} words in {} chunks", words.len(), chunks.len());
    let mut tasks: Vec<NodeSpec> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, text)| NodeSpec {
            id: format!("chunk-{i:04}"),
            kind: "wc.count".into(),
            queue: "wordcount".into(),
            payload: Some(serde_json::value::to_raw_value(&Chunk { text }).expect("serializable")),
            ..NodeSpec::default()
        })
        .collect();
    let reduce = NodeSpec {
        id: "merge".into(),
        kind: "wc.merge".into(),
        queue: "wordcount".into(),
        depends_on: tasks.iter().map(|t| t.id.clone()).collect(),
        ..NodeSpec::default()
    };
    tasks.push(reduce);

    let client = Client::new(&server.url)?;
    let started = Instant::now();
    let wf = client
        .submit_workflow(&WorkflowSpec { name: Some("word count".into()), tasks, ..WorkflowSpec::default() })
        .await?;
    let wf = client.wait_workflow(wf.id, Duration::from_secs(120)).await?;
    if wf.state != WorkflowState::Succeeded {
        return Err(format!("the workflow ended {}: {:?}", wf.state.as_str(), wf.error).into());
    }
    let merged: Merged = serde_json::from_str(wf.result.as_ref().expect("a result").get())?;
    println!(
        "counted {} words ({} distinct) in {:.2} s; top 5:",
        merged.total,
        merged.distinct,
        started.elapsed().as_secs_f64()
    );
    for (word, n) in merged.top.iter().take(5) {
        println!("  {word:<10} {n}");
    }
    let serial = summarize(&count_words(&text));
    assert_eq!(
        (merged.total, merged.distinct, &merged.top),
        (serial.total, serial.distinct, &serial.top),
        "map-reduce agrees with a serial count"
    );
    if let Some(s) = wf.speedup {
        println!(
            "speedup {:.1}x over {} tasks (T_serial {:.3} s, T_parallel {:.3} s)",
            s.speedup,
            s.tasks,
            s.t_serial.as_secs_f64(),
            s.t_parallel.as_secs_f64()
        );
    }

    stop.cancel();
    worker.await??;
    server.stop().await
}
