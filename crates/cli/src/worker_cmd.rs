//! `taskwarden worker`: the worker SDK with the built-in handlers.

use taskwarden_core::placement::{Resources, parse_labels};
use taskwarden_worker::Worker;

use crate::args::WorkerArgs;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let mut worker = Worker::builder(args.connect.url)
        .concurrency(args.concurrency)
        .fetchers(args.fetchers)
        .shutdown_grace(args.grace)
        .capacity(Resources::parse("--capacity", &args.capacity)?)
        .labels(parse_labels("--labels", &args.labels)?);
    for q in args.queue {
        worker = worker.queue(q);
    }
    if let Some(name) = args.name {
        worker = worker.name(name);
    }
    let summary = worker.builtin_handlers().run(crate::signal::shutdown_token()).await?;
    eprintln!(
        "worker {} stopped: {} succeeded, {} failed, {} released, {} abandoned",
        summary.worker_id, summary.succeeded, summary.failed, summary.released, summary.abandoned
    );
    Ok(())
}
