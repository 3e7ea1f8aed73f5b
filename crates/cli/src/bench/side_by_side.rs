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

use super::{Backend, BenchArgs, Subscriber, drain, drain_queued, noop, percentile, pickup_latency_with, report};

/// One of the two servers, and how the benchmark's clients and workers reach it.
struct Side {
    /// How the table names it.
    name: &'static str,
    url: String,
    options: ClientOptions,
    /// Flags for the worker processes (a token, a CA).
    worker_flags: Vec<String>,
}

/// One side's figures, one per run.
#[derive(Default)]
struct Figures {
    single: Vec<f64>,
    small: Vec<f64>,
    wide: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Runs the measurements on both sides, `args.runs` times, and prints each run and the medians,
/// the second side as a share of (or, for latency, over) the first.
async fn compare(args: &BenchArgs, sides: [Side; 2]) -> anyhow::Result<()> {
    let n = args.shape_tasks;
    let clients =
        sides.iter().map(|s| Client::with_options(&s.url, s.options.clone())).collect::<Result<Vec<_>, _>>()?;
    let mut figures = [Figures::default(), Figures::default()];
    for run in 0..args.runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (side, client, f) = (&sides[i], &clients[i], &mut figures[i]);
            let flags: Vec<&str> = side.worker_flags.iter().map(String::as_str).collect();
            let q = format!("single{run}");
            let started = Instant::now();
            for _ in 0..n {
                client.submit(noop(&q)).await?;
            }
            f.single.push(n as f64 / started.elapsed().as_secs_f64());
            let two = [side.url.clone(), side.url.clone()];
            f.small.push(drain_queued(&two, client, &q, n, 16, &flags).await?);
            let q = format!("wide{run}");
            f.wide.push(drain(std::slice::from_ref(&side.url), client, &q, args.e2e_tasks, false, &flags).await?);
            let q = format!("latency{run}");
            let mut lat =
                pickup_latency_with(&side.url, side.options.clone(), client, &q, args.latency_samples).await?;
            lat.sort();
            f.p50.push(percentile(&lat, 0.5).as_secs_f64() * 1000.0);
            f.p99.push(percentile(&lat, 0.99).as_secs_f64() * 1000.0);
        }
        let line = |s: &Side, f: &Figures| {
            format!(
                "{} single {:.0}/s, 2x16 {:.0}/s, 1x512 {:.0}/s, pickup p99 {:.2} ms",
                s.name, f.single[run], f.small[run], f.wide[run], f.p99[run]
            )
        };
        println!("run {}: {}; {}", run + 1, line(&sides[0], &figures[0]), line(&sides[1], &figures[1]));
    }
    let ratio = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    let [(a, fa), (b, fb)] = [(sides[0].name, &figures[0]), (sides[1].name, &figures[1])];
    println!();
    println!("| measurement (median of {} runs) | value |", args.runs);
    println!("|---|---|");
    let rows: [(&str, &str, &[f64], &[f64]); 5] = [
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
    ];
    for (name, unit, first, second) in rows {
        report(&format!("{name}, {a}"), unit, first);
        report(&format!("{name}, {b}"), unit, second);
        let share = if unit == "ms" { format!("  {b} over {a}") } else { format!("  {b} as a share of {a}") };
        report(&share, "ratio", &ratio(second, first));
    }
    Ok(())
}

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
    let (_plain, plain_url) = super::start_server(&sqlite(&plain_dir), &[])?;
    let (_secure, secure_url) = super::start_server(&sqlite(&secure_dir), &["--tls-cert", &cert, "--tls-key", &key])?;
    println!(
        "taskwarden bench: security's cost, SQLite, plain {plain_url} against HTTPS + token {secure_url}, {} runs",
        args.runs
    );
    let options =
        ClientOptions { token: Some(token.clone()), ca_cert_pem: Some(std::fs::read(&ca)?), identity_pem: None };
    let sides = [
        Side { name: "plain HTTP, no tokens", url: plain_url, options: Default::default(), worker_flags: vec![] },
        Side {
            name: "HTTPS and a token",
            url: secure_url,
            options,
            worker_flags: vec!["--token".into(), token, "--ca-cert".into(), ca],
        },
    ];
    compare(args, sides).await
}

/// `--only observe`: a server keeping no event log and counting no metrics, against one with
/// both on, followed by an SSE subscriber and scraped every second.
pub(super) async fn observe(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let [plain_dir, observed_dir] = data_dirs(dir, ["plain", "observed"])?;
    let sqlite = |dir| Backend::Sqlite { dir, durability: &args.durability };
    let (_plain, plain_url) = super::start_server(&sqlite(&plain_dir), &["--no-event-log", "--no-metrics"])?;
    let (_observed, observed_url) = super::start_server(&sqlite(&observed_dir), &[])?;
    println!(
        "taskwarden bench: observability's cost, SQLite, no event log or metrics {plain_url} against event log, \
         metrics, one SSE subscriber and a scrape a second {observed_url}, {} runs",
        args.runs
    );
    let subscriber = Subscriber::start(&observed_url).await?;
    let scraper = Scraper::start(&observed_url, Duration::from_secs(1));
    let sides = [
        Side { name: "plain", url: plain_url, options: Default::default(), worker_flags: vec![] },
        Side { name: "observed", url: observed_url, options: Default::default(), worker_flags: vec![] },
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
