//! What a task's submitter can make a `taskwarden worker` process reach, read and allocate through
//! the built-in `http.fetch` and `fan.out`, against real server and worker processes. Every site
//! here listens on 127.0.0.1.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{ServerProcess, WorkerProcess, cli};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A worker that grew past this much memory read or built more than it should have: an idle one
/// holds about 20 MiB.
const WORKER_PEAK_MIB: u64 = 200;

/// How a test site answers one request.
enum Answer {
    Text(&'static str),
    Redirect(String),
    /// This many zero bytes, announced with Content-Length and streamed.
    Zeros(u64),
    /// Accepts the request and never answers.
    Silence,
}

/// An HTTP/1.1 site on 127.0.0.1, run by a runtime of its own (the tests are synchronous).
struct Site {
    port: u16,
    /// Connections it accepted: zero means the worker never connected.
    connections: Arc<AtomicUsize>,
    /// Body bytes it managed to write before the reader hung up.
    written: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Site {
    fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Site {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connections, written) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
        let (accepted, wrote, answer) = (connections.clone(), written.clone(), Arc::new(answer));
        runtime.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(conn, answer.clone(), wrote.clone()));
            }
        });
        Site { port, connections, written, _runtime: runtime }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    answer: Arc<impl Fn(&str) -> Answer>,
    written: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let path = String::from_utf8_lossy(&request).split(' ').nth(1).unwrap_or("/").to_owned();
    let head = |status: &str, extra: &str, len: u64| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match answer(&path) {
        Answer::Text(body) => {
            conn.write_all(head("200 OK", "", body.len() as u64).as_bytes()).await?;
            conn.write_all(body.as_bytes()).await
        }
        Answer::Redirect(to) => conn.write_all(head("302 Found", &format!("Location: {to}\r\n"), 0).as_bytes()).await,
        Answer::Zeros(len) => {
            conn.write_all(head("200 OK", "", len).as_bytes()).await?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                conn.write_all(&zeros[..n as usize]).await?;
                written.fetch_add(n, Ordering::Relaxed);
                left -= n;
            }
            Ok(())
        }
        Answer::Silence => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok(())
        }
    }
}

/// A server and one worker serving queue `q` with `worker_args`.
struct Setup {
    server: ServerProcess,
    worker: WorkerProcess,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(worker_args: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(dir.path());
        let worker = WorkerProcess::start(&server.url, "q", worker_args);
        Setup { server, worker, _dir: dir }
    }

    /// Submits a task, waits for it to end and returns it as JSON.
    fn run(&self, kind: &str, payload: Value, max_attempts: u32) -> Value {
        let (payload, attempts) = (payload.to_string(), max_attempts.to_string());
        let (_, out, err) = cli(&[
            "submit",
            "--url",
            &self.server.url,
            "--queue",
            "q",
            "--kind",
            kind,
            "--payload",
            &payload,
            "--max-attempts",
            &attempts,
            "--wait",
            "--wait-timeout",
            "90s",
            "--json",
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("no task printed ({e}): {err}"))
    }

    fn fetch(&self, url: &str) -> Value {
        self.run("http.fetch", json!({ "url": url }), 3)
    }
}

/// The task's error, after checking that it failed on its first attempt (so, permanently).
fn permanent_error(task: &Value) -> &str {
    assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("failed"), Some(1)), "{task:#}");
    task["error"].as_str().unwrap()
}

#[test]
fn a_fetch_of_a_loopback_address_fails_permanently_naming_the_address_and_how_to_allow_it() {
    let site = Site::start(|_| Answer::Text("the admin page"));
    let setup = Setup::start(&[]);
    let task = setup.fetch(&site.url("/admin"));
    let error = permanent_error(&task);
    assert!(error.contains("127.0.0.1 is a loopback address"), "{error}");
    assert!(error.contains(&format!("--fetch-allow 127.0.0.1:{}", site.port)), "{error}");
    assert_eq!(site.connections(), 0, "the worker never connected");
}

#[test]
fn a_redirect_from_an_allowed_site_to_a_port_not_allowed_is_refused_before_it_is_followed() {
    let inner = Site::start(|_| Answer::Text("the admin page"));
    let to = inner.url("/admin");
    let outer = Site::start(move |path| match path {
        "/away" => Answer::Redirect(to.clone()),
        _ => Answer::Text("welcome"),
    });
    let allow = format!("127.0.0.1:{}", outer.port);
    let setup = Setup::start(&["--fetch-allow", &allow]);

    let task = setup.fetch(&outer.url("/"));
    assert_eq!(task["state"], "succeeded", "the allowed site itself is fetched: {task:#}");
    assert_eq!(task["result"]["body"], "welcome");

    let task = setup.fetch(&outer.url("/away"));
    let error = permanent_error(&task);
    assert!(error.contains(&format!("redirected to {}", inner.url("/admin"))), "{error}");
    assert!(error.contains(&format!("--fetch-allow 127.0.0.1:{}", inner.port)), "{error}");
    assert_eq!(inner.connections(), 0, "the worker never connected to the redirect's target");
}

#[test]
fn a_gigabyte_body_is_read_only_up_to_the_limit_and_the_worker_stays_small() {
    let site = Site::start(|_| Answer::Zeros(1 << 30));
    let allow = format!("127.0.0.1:{}", site.port);
    let setup = Setup::start(&["--fetch-allow", &allow]);
    let task = setup.fetch(&site.url("/huge"));
    assert_eq!(task["state"], "succeeded", "{task:#}");
    let result = &task["result"];
    assert_eq!((result["bytes"].as_u64(), result["truncated"].as_bool()), (Some(1 << 20), Some(true)), "{result:#}");
    assert_eq!(result["body"].as_str().unwrap().len(), 1024, "the result shows the first KiB");
    let peak = setup.worker.peak_rss_mib();
    assert!(peak < WORKER_PEAK_MIB, "the worker's peak memory was {peak} MiB");
    // What the kernel buffered for a reader that stopped reading, not the gigabyte.
    let written = site.written.load(Ordering::Relaxed);
    assert!(written < 256 << 20, "the site wrote {} MiB before the worker hung up", written >> 20);
}

#[test]
fn a_fetch_stops_at_the_worker_s_time_limit_whatever_its_payload_asks_for() {
    let site = Site::start(|_| Answer::Silence);
    let allow = format!("127.0.0.1:{}", site.port);
    let setup = Setup::start(&["--fetch-allow", &allow, "--fetch-max-time", "1s"]);
    let started = Instant::now();
    let task = setup.run("http.fetch", json!({"url": site.url("/slow"), "timeout_ms": 600_000}), 1);
    assert_eq!(task["state"], "failed", "{task:#}");
    assert!(task["error"].as_str().unwrap().contains("took longer than 1s"), "{task:#}");
    assert!(started.elapsed() < Duration::from_secs(20), "it took {:?}", started.elapsed());
}

#[test]
fn a_fan_out_past_the_cap_fails_permanently_naming_count_before_building_children() {
    let mut setup = Setup::start(&[]);
    let task =
        setup.run("fan.out", json!({"count": 2_000_000, "child": {"kind": "echo"}, "join": {"kind": "echo"}}), 3);
    let error = permanent_error(&task);
    assert!(error.starts_with("count is 2000000"), "{error}");
    let peak = setup.worker.peak_rss_mib();
    assert!(peak < WORKER_PEAK_MIB, "the worker's peak memory was {peak} MiB");
    assert!(setup.worker.alive());
}

#[test]
fn a_fan_out_whose_children_would_not_fit_in_one_request_fails_permanently_naming_count() {
    let setup = Setup::start(&[]);
    let big = "x".repeat(100_000);
    let payload = json!({"count": 1000, "child": {"kind": "echo", "payload": {"blob": big}}, "join": {"kind": "echo"}});
    let task = setup.run("fan.out", payload, 3);
    let error = permanent_error(&task);
    assert!(error.starts_with("count is 1000") && error.contains("smaller child payload"), "{error}");
    let peak = setup.worker.peak_rss_mib();
    assert!(peak < WORKER_PEAK_MIB, "the worker's peak memory was {peak} MiB");
}
