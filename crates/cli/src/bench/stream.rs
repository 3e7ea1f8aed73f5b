//! `--only stream`: what one Server-Sent Events subscriber costs the server, per event it is
//! sent. Runs `--e2e-tasks` no-op tasks through a fresh server (three events each: submitted,
//! started, succeeded), then reads the whole log through `GET /v1/events` as a stream, `--runs`
//! times, and prints the server's CPU time per event sent (from /proc) and the time to read
//! them all. `bench/compare.sh REV -- --only stream` sets two builds side by side.

use std::time::{Duration, Instant};

use anyhow::Context;
use taskwarden_client::Client;

use super::side_by_side::CpuSeconds;
use super::{Backend, BenchArgs, count_messages, report};

pub(super) async fn run(args: &BenchArgs, backend: &Backend<'_>) -> anyhow::Result<()> {
    let (server, url) = super::start_server(backend, &[])?;
    let client = Client::new(&url)?;
    super::drain(std::slice::from_ref(&url), &client, "stream", args.e2e_tasks, false, &[]).await?;
    let events = super::events_kept(&client).await?;
    println!("taskwarden bench: one SSE subscriber reading the whole log of {events} events, {} runs", args.runs);
    let (mut cpu, mut seconds) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let before = CpuSeconds::now(server.0.id());
        let started = Instant::now();
        read_log(&url, events).await?;
        seconds.push(started.elapsed().as_secs_f64());
        // The server notices the client has gone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let (Some(b), Some(a)) = (before, CpuSeconds::now(server.0.id())) {
            cpu.push((a.server - b.server) / events as f64 * 1e9);
        }
    }
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    report("server CPU per event sent to one SSE subscriber", "ns", &cpu);
    report("time to read the whole log", "s", &seconds);
    Ok(())
}

/// Reads the log as a stream from its start until `events` messages have come.
async fn read_log(url: &str, events: usize) -> anyhow::Result<()> {
    let mut response = reqwest::Client::new()
        .get(format!("{}/v1/events", url.trim_end_matches('/')))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let (mut rest, mut seen) = (Vec::new(), 0);
    while seen < events {
        let chunk = response.chunk().await?.with_context(|| format!("the stream ended after {seen} events"))?;
        seen += count_messages(&mut rest, &chunk).0;
    }
    Ok(())
}
