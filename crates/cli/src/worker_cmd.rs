//! `taskwarden worker`: the worker SDK with the built-in handlers.

use anyhow::Context;
use taskwarden_core::placement::{Resources, parse_labels};
use taskwarden_worker::{AllowRule, FetchPolicy, Worker};

use crate::args::WorkerArgs;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let options = crate::client_cmd::client_options(&args.connect)?;
    let mut worker = Worker::builder(args.connect.url.clone())
        .client_options(options)
        .concurrency(args.concurrency)
        .fetchers(args.fetchers)
        .shutdown_grace(args.grace)
        .startup_wait(args.startup_wait)
        .capacity(Resources::parse("--capacity", &args.capacity)?)
        .labels(parse_labels("--labels", &args.labels)?)
        .traces(args.otlp_endpoint.is_some());
    if let Some(n) = args.prefetch {
        worker = worker.prefetch(n);
    }
    for q in args.queue {
        worker = worker.queue(q);
    }
    if let Some(name) = args.name {
        worker = worker.name(name);
    }
    let defaults = FetchPolicy::default();
    worker = worker.fetch_policy(FetchPolicy {
        allow: AllowRule::parse_list(&args.fetch_allow.join(",")).context("--fetch-allow")?,
        max_bytes: args.fetch_max_bytes.unwrap_or(defaults.max_bytes),
        max_time: args.fetch_max_time.unwrap_or(defaults.max_time),
        ..defaults
    });
    if let Some(n) = args.fan_out_max {
        worker = worker.fan_out_max(n);
    }
    let summary = worker.builtin_handlers().run(crate::signal::shutdown_token()).await?;
    // A log line, so that it is JSON too under --log-format json.
    tracing::info!(
        worker_id = %summary.worker_id,
        succeeded = summary.succeeded,
        failed = summary.failed,
        released = summary.released,
        abandoned = summary.abandoned,
        "worker stopped"
    );
    Ok(())
}
