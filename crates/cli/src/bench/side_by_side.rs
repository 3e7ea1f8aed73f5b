//! Two servers of this build, set up differently, measured alike in one run: what a feature
//! costs, with the machine's noise shared between both sides.
//!
//! - `--only secure`: plain HTTP without tokens against HTTPS with a token on every request;
//! - `--only observe`: no event log and no metrics (`--no-event-log --no-metrics`) against the
//!   defaults (event log and metrics on) with one Server-Sent Events subscriber following the
//!   whole log and `/metrics` scraped every second.
//!
//! Each run measures both sides, the order alternating so neither always gets the warmer
//! machine, in the shape users run and in the wide one: one client submitting one task per call
//! and awaiting each, those tasks drained by 2 worker processes of 16 slots, a batch-queued
//! drain by one worker process of 512 slots, and pickup latency with an idle worker waiting.

use std::time::{Duration, Instant};

use anyhow::Context;
use taskwarden_client::{Client, ClientOptions};

use super::{Backend, BenchArgs, PickupWorker, Subscriber, drain_queued, noop, percentile, report, report_ratio};

/// One of the two servers, and how the benchmark's clients and workers reach it.
struct Side {
    /// How the table names it.
    name: &'static str,
    url: String,
    options: ClientOptions,
    /// Flags for the worker processes (a token, a CA).
    worker_flags: Vec<String>,
    /// The server's process, whose CPU time is counted.
    pid: u32,
    /// The subscriber following its event log, if one does.
    followed: Option<std::sync::Arc<super::Followed>>,
}

/// One side's figures, one per run.
#[derive(Default)]
struct Figures {
    single: Vec<f64>,
    small: Vec<f64>,
    wide: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Microseconds of CPU per task over the run's three throughput measurements: the server's,
    /// and everything else's (this process with its subscriber and clients, and the worker
    /// processes).
    server_cpu: Vec<f64>,
    other_cpu: Vec<f64>,
    /// Milliseconds the side's subscriber took, once the 512-slot drain was done, to have every
    /// event logged by then.
    behind: Vec<f64>,
    /// The same once the tasks of the 512-slot drain were queued, before it started.
    queued_behind: Vec<f64>,
}

/// CPU time used so far, in seconds: a server process's, and this process's with its
/// children that have ended (the worker processes), from /proc (Linux; `None` elsewhere).
#[derive(Clone, Copy)]
pub(super) struct CpuSeconds {
    pub(super) server: f64,
    others: f64,
}

impl CpuSeconds {
    pub(super) fn now(server: u32) -> Option<CpuSeconds> {
        let ticks = |path: String, fields: std::ops::Range<usize>| -> Option<f64> {
            let stat = std::fs::read_to_string(path).ok()?;
            // From field 3 on: what follows the command, which is in parentheses and may hold
            // spaces. Fields 14 to 17 are utime, stime, cutime and cstime.
            let rest: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
            fields.map(|f| rest.get(f - 3).and_then(|v| v.parse::<f64>().ok())).sum::<Option<f64>>()
        };
        let per_second = *CLOCK_TICKS;
        Some(CpuSeconds {
            server: ticks(format!("/proc/{server}/stat"), 14..16)? / per_second,
            others: ticks("/proc/self/stat".into(), 14..18)? / per_second,
        })
    }
}

/// Clock ticks per second of /proc's CPU times.
static CLOCK_TICKS: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
});

/// Runs the measurements on both sides, `args.runs` times, and prints each run and the medians,
/// the second side as a share of (or, for latency, over) the first. Each measurement is taken on
/// both sides back to back, so a pair shares the machine's moment; pickup samples alternate
/// between the sides one by one.
async fn compare(args: &BenchArgs, sides: [Side; 2]) -> anyhow::Result<()> {
    let n = args.shape_tasks;
    let clients =
        sides.iter().map(|s| Client::with_options(&s.url, s.options.clone())).collect::<Result<Vec<_>, _>>()?;
    let flags = sides.each_ref().map(|s| s.worker_flags.iter().map(String::as_str).collect::<Vec<_>>());
    let mut figures = [Figures::default(), Figures::default()];
    let http = reqwest::Client::new();
    for run in 0..args.runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut cpu = [(0.0, 0.0); 2];
        // Times `measure` on side `i` and adds the CPU it took (once what it set going settled) to
        // that side's account.
        macro_rules! on_each_side {
            (|$i:ident| $measure:expr) => {
                for $i in order {
                    let before = CpuSeconds::now(sides[$i].pid);
                    $measure;
                    tokio::time::sleep(SETTLE).await;
                    if let (Some(b), Some(a)) = (before, CpuSeconds::now(sides[$i].pid)) {
                        cpu[$i].0 += a.server - b.server;
                        cpu[$i].1 += a.others - b.others;
                    }
                }
            };
        }
        let q = format!("single{run}");
        on_each_side!(|i| {
            let started = Instant::now();
            for _ in 0..n {
                clients[i].submit(noop(&q)).await?;
            }
            figures[i].single.push(n as f64 / started.elapsed().as_secs_f64());
        });
        on_each_side!(|i| {
            let two = [sides[i].url.clone(), sides[i].url.clone()];
            figures[i].small.push(drain_queued(&two, &clients[i], &q, n, 16, &flags[i]).await?);
        });
        let q = format!("wide{run}");
        on_each_side!(|i| {
            let url = std::slice::from_ref(&sides[i].url);
            super::queue_batches(&clients[i], args.e2e_tasks, |_| noop(&q)).await?;
            if let Some(followed) = &sides[i].followed {
                figures[i].queued_behind.push(followed.behind_ms(&http, &sides[i].url).await?);
            }
            figures[i].wide.push(drain_queued(url, &clients[i], &q, args.e2e_tasks, 512, &flags[i]).await?);
            if let Some(followed) = &sides[i].followed {
                figures[i].behind.push(followed.behind_ms(&http, &sides[i].url).await?);
            }
        });
        let tasks = (2 * n + args.e2e_tasks + 1) as f64;
        for (f, (server, others)) in figures.iter_mut().zip(cpu) {
            f.server_cpu.push(server / tasks * 1e6);
            f.other_cpu.push(others / tasks * 1e6);
        }
        let q = format!("latency{run}");
        let mut workers = Vec::new();
        for s in &sides {
            workers.push(PickupWorker::start(&s.url, s.options.clone(), &q, 4).await);
        }
        let mut lat = [Vec::new(), Vec::new()];
        for sample in 0..args.latency_samples {
            for i in if sample % 2 == 0 { [0, 1] } else { [1, 0] } {
                lat[i].push(workers[i].sample(&clients[i]).await?);
                // The completion goes out, so the next sample starts with an idle worker.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        for w in workers {
            w.stop().await?;
        }
        for (f, mut lat) in figures.iter_mut().zip(lat) {
            lat.sort();
            f.p50.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
            f.p99.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);
        }
        let line = |s: &Side, f: &Figures| {
            let behind = match (f.queued_behind.get(run), f.behind.get(run)) {
                (Some(q), Some(d)) => format!(" (its subscriber {q:.0} ms behind when queued, {d:.0} when drained)"),
                _ => String::new(),
            };
            format!(
                "{} single {:.0}/s, 2x16 {:.0}/s, 1x512 {:.0}/s{behind}, pickup p99 {:.2} ms, CPU {:.0}+{:.0} us/task",
                s.name, f.single[run], f.small[run], f.wide[run], f.p99[run], f.server_cpu[run], f.other_cpu[run]
            )
        };
        println!("run {}: {}; {}", run + 1, line(&sides[0], &figures[0]), line(&sides[1], &figures[1]));
    }
    let ratio = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    let [(a, fa), (b, fb)] = [(sides[0].name, &figures[0]), (sides[1].name, &figures[1])];
    println!();
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    let rows: [(&str, &str, &[f64], &[f64]); 7] = [
        ("single submits, one client, each awaited", "tasks/s", &fa.single, &fb.single),
        (&format!("drain of those {n}, 2 worker processes x 16 slots"), "tasks/s", &fa.small, &fb.small),
        (
            &format!("drain of {} batch-queued, 1 worker process x 512 slots", args.e2e_tasks),
            "tasks/s",
            &fa.wide,
            &fb.wide,
        ),
        ("pickup latency p50, submit call to handler start", "ms", &fa.p50, &fb.p50),
        ("pickup latency p99", "ms", &fa.p99, &fb.p99),
        ("server CPU per task over the three throughput measurements", "us", &fa.server_cpu, &fb.server_cpu),
        ("CPU per task of the rest (clients, subscriber, workers)", "us", &fa.other_cpu, &fb.other_cpu),
    ];
    for (name, unit, first, second) in rows {
        report(&format!("{name}, {a}"), unit, first);
        report(&format!("{name}, {b}"), unit, second);
        let share = if unit == "tasks/s" { format!("  {b} as a share of {a}") } else { format!("  {b} over {a}") };
        report_ratio(&share, &ratio(second, first));
    }
    for (side, f) in [(a, fa), (b, fb)] {
        let queued =
            format!("the 512-slot drain's tasks queued, how long until its SSE subscriber had every event, {side}");
        report(&queued, "ms", &f.queued_behind);
        report(&format!("the same once they were drained, {side}"), "ms", &f.behind);
    }
    Ok(())
}

/// How long after a measurement its side's CPU is read: the stream and the workers' last
/// reports finish, so their CPU counts for the side that caused it.
const SETTLE: Duration = Duration::from_millis(100);

/// Writes a CA and a certificate it signed for 127.0.0.1 and localhost into `dir`: (cert, key, ca).
fn test_certificate(dir: &std::path::Path) -> anyhow::Result<(String, String, String)> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?.signed_by(&key, &ca)?;
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(path("cert.pem"), cert.pem())?;
    std::fs::write(path("key.pem"), key.serialize_pem())?;
    std::fs::write(path("ca.pem"), ca.pem())?;
    Ok((path("cert.pem"), path("key.pem"), path("ca.pem")))
}

/// Two fresh SQLite data directories under `dir`, named after the sides.
fn data_dirs(dir: &std::path::Path, names: [&str; 2]) -> anyhow::Result<[std::path::PathBuf; 2]> {
    let dirs = names.map(|n| dir.join(n));
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    Ok(dirs)
}

/// `--only secure`: plain HTTP, no tokens, against HTTPS with a token on every request.
pub(super) async fn secure(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let [plain_dir, secure_dir] = data_dirs(dir, ["plain", "secure"])?;
    let (cert, key, ca) = test_certificate(dir)?;
    let made = std::process::Command::new(std::env::current_exe()?)
        .args(["token", "create", "--role", "admin", "--name", "bench", "--data-dir"])
        .arg(&secure_dir)
        .output()?;
    anyhow::ensure!(made.status.success(), "creating the token: {}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout)?.trim().to_owned();
    let sqlite = |dir| Backend::Sqlite { dir, durability: &args.durability };
    let (plain, plain_url) = super::start_server(&sqlite(&plain_dir), &[])?;
    let (secure, secure_url) = super::start_server(&sqlite(&secure_dir), &["--tls-cert", &cert, "--tls-key", &key])?;
    println!(
        "taskwarden bench: security's cost, SQLite, plain {plain_url} against HTTPS + token {secure_url}, {} runs",
        args.runs
    );
    let options =
        ClientOptions { token: Some(token.clone()), ca_cert_pem: Some(std::fs::read(&ca)?), identity_pem: None };
    let sides = [
        Side {
            name: "plain HTTP, no tokens",
            url: plain_url,
            options: Default::default(),
            worker_flags: vec![],
            pid: plain.0.id(),
            followed: None,
        },
        Side {
            name: "HTTPS and a token",
            url: secure_url,
            options,
            worker_flags: vec!["--token".into(), token, "--ca-cert".into(), ca],
            pid: secure.0.id(),
            followed: None,
        },
    ];
    compare(args, sides).await
}

/// `--only observe`: a server keeping no event log and counting no metrics, against one with
/// both on, followed by an SSE subscriber and scraped every second.
pub(super) async fn observe(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let [plain_dir, observed_dir] = data_dirs(dir, ["plain", "observed"])?;
    let sqlite = |dir| Backend::Sqlite { dir, durability: &args.durability };
    let (plain, plain_url) = super::start_server(&sqlite(&plain_dir), &["--no-event-log", "--no-metrics"])?;
    let (observed, observed_url) = super::start_server(&sqlite(&observed_dir), &[])?;
    println!(
        "taskwarden bench: observability's cost, SQLite, no event log or metrics {plain_url} against event log, \
         metrics, one SSE subscriber and a scrape a second {observed_url}, {} runs",
        args.runs
    );
    let subscriber = Subscriber::start(&observed_url).await?;
    let scraper = Scraper::start(&observed_url, Duration::from_secs(1));
    let sides = [
        Side {
            name: "plain",
            url: plain_url,
            options: Default::default(),
            worker_flags: vec![],
            pid: plain.0.id(),
            followed: None,
        },
        Side {
            name: "observed",
            url: observed_url,
            options: Default::default(),
            worker_flags: vec![],
            pid: observed.0.id(),
            followed: Some(subscriber.followed.clone()),
        },
    ];
    let result = compare(args, sides).await;
    subscriber.finish();
    scraper.finish().await?;
    result
}

/// Fetches `/metrics` every `every`, as a Prometheus would, reading each whole body.
struct Scraper {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl Scraper {
    fn start(url: &str, every: Duration) -> Scraper {
        let url = format!("{}/metrics", url.trim_end_matches('/'));
        let stop = tokio_util::sync::CancellationToken::new();
        let halt = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut tick = tokio::time::interval(every);
            let mut scrapes = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = halt.cancelled() => return Ok(scrapes),
                }
                let body = http.get(&url).send().await?.error_for_status()?.bytes().await?;
                anyhow::ensure!(body.starts_with(b"# "), "/metrics answered {} bytes that are not metrics", body.len());
                scrapes += 1;
            }
        });
        Scraper { stop, task }
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let scrapes = self.task.await?.context("scraping /metrics")?;
        println!("| /metrics scrapes of the observed server over the run | {scrapes} |");
        Ok(())
    }
}
