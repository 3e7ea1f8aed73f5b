//! `taskwarden bench --only backlog`: does a deep backlog drain as fast as a shallow one, in
//! flat memory? Each run queues a backlog a tenth of `--backlog-tasks` and drains it, then the
//! whole `--backlog-tasks` and drains that, on the same server (so the large drain also steps
//! over the small one's finished tasks), and prints both rates, their ratio, and the server's
//! resident memory after each.

use taskwarden_client::Client;

use super::{Backend, BenchArgs, drain_queued, noop, report, start_server};

/// Queues `n` no-op tasks in batches of 5,000.
async fn enqueue(client: &Client, queue: &str, n: usize) -> anyhow::Result<()> {
    for chunk in 0..n.div_ceil(5000) {
        let k = (n - chunk * 5000).min(5000);
        client.submit_batch((0..k).map(|_| noop(queue)).collect()).await?;
    }
    Ok(())
}

/// The process's resident memory now and at its peak, from /proc (Linux), in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

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
        enqueue(&client, &q, small).await?;
        let small_rate = drain_queued(std::slice::from_ref(&url), &client, &q, small, 512, &[]).await?;
        let (_, peak_small) = rss_mib(server.0.id());
        let q = format!("backlog-large{run}");
        enqueue(&client, &q, large).await?;
        let (queued_rss, _) = rss_mib(server.0.id());
        let large_rate = drain_queued(std::slice::from_ref(&url), &client, &q, large, 512, &[]).await?;
        let (_, peak_large) = rss_mib(server.0.id());
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
