//! `taskwarden bench --only backlog`: does a deep backlog drain as fast as a shallow one, in
//! flat memory? Each run queues a backlog a tenth of `--backlog-tasks` and drains it, then the
//! whole `--backlog-tasks` and drains that, on the same server (so the large drain also steps
//! over the small one's finished tasks), and prints both rates, their ratio, and the server's
//! resident memory after each.

use taskwarden_client::Client;

use super::{Backend, BenchArgs, drain_queued, enqueue, memory_mib, report, start_server};

pub(super) async fn run(args: &BenchArgs, backend: &Backend<'_>) -> anyhow::Result<()> {
    let (server, url) = start_server(backend, &[])?;
    let client = Client::new(&url)?;
    let (large, small) = (args.backlog_tasks, (args.backlog_tasks / 10).max(1));
    let store = if matches!(backend, Backend::Postgres { .. }) { "PostgreSQL" } else { "SQLite" };
    println!(
        "taskwarden bench, deep backlogs: {store}, {small} then {large} tasks queued and drained by one 512-slot worker, {} runs",
        args.runs
    );
    let (mut small_rates, mut large_rates, mut ratios) = (vec![], vec![], vec![]);
    let (mut after_small, mut after_large) = (vec![], vec![]);
    for run in 0..args.runs {
        let q = format!("backlog-small{run}");
        enqueue(&client, &q, small, 5000).await?;
        let small_rate = drain_queued(std::slice::from_ref(&url), &client, &q, small, 512, &[]).await?;
        let peak_small = memory_mib(server.0.id(), "VmHWM:").unwrap_or(0.0);
        let q = format!("backlog-large{run}");
        enqueue(&client, &q, large, 5000).await?;
        let queued_rss = memory_mib(server.0.id(), "VmRSS:").unwrap_or(0.0);
        let large_rate = drain_queued(std::slice::from_ref(&url), &client, &q, large, 512, &[]).await?;
        let peak_large = memory_mib(server.0.id(), "VmHWM:").unwrap_or(0.0);
        println!(
            "run {}: {small} tasks {small_rate:.0}/s (server peak {peak_small:.0} MiB), {large} tasks {large_rate:.0}/s \
             ({:.2} of the small; server {queued_rss:.0} MiB with all queued, peak {peak_large:.0} MiB)",
            run + 1,
            large_rate / small_rate
        );
        small_rates.push(small_rate);
        large_rates.push(large_rate);
        ratios.push(large_rate / small_rate);
        after_small.push(peak_small);
        after_large.push(peak_large);
    }
    println!();
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    report(&format!("drain of a {small}-task backlog, one 512-slot worker"), "tasks/s", &small_rates);
    report(&format!("drain of a {large}-task backlog, same worker and server"), "tasks/s", &large_rates);
    report("  large as a share of small", "ratio", &ratios);
    report("server peak memory after the small drain", "MiB", &after_small);
    report("server peak memory after the large drain", "MiB", &after_large);
    Ok(())
}
