//! Real processes for the end-to-end tests: the `taskwarden` binary as server and worker, driven
//! over HTTP and with real signals.

#![allow(dead_code, reason = "each test binary uses a different part of the support code")]

pub mod cluster;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_taskwarden");

/// Sends a signal with kill(1): the test crate forbids unsafe code, so no libc.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Everything after `server --listen ADDR`, kept for restarts.
    args: Vec<String>,
    /// Environment added to the server's, kept for restarts.
    env: Vec<(String, String)>,
    listen: String,
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> ServerProcess {
        Self::start_on(data_dir, free_port())
    }

    /// Starts a server and waits for its "listening" line.
    pub fn start_on(data_dir: &Path, port: u16) -> ServerProcess {
        Self::start_with(vec!["--data-dir".into(), data_dir.display().to_string()], port)
    }

    /// A node on PostgreSQL: `url` and `schema` name the shared database; `extra` adds flags.
    pub fn postgres(url: &str, schema: &str, extra: &[&str]) -> ServerProcess {
        let mut args: Vec<String> = vec!["--database".into(), url.into(), "--database-schema".into(), schema.into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start_with(args, free_port())
    }

    pub fn start_with(args: Vec<String>, port: u16) -> ServerProcess {
        Self::start_with_env(args, port, vec![])
    }

    /// Like [`ServerProcess::start_with`], with `env` added to the server's environment.
    pub fn start_with_env(args: Vec<String>, port: u16, env: Vec<(String, String)>) -> ServerProcess {
        Self::spawn(format!("127.0.0.1:{port}"), args, env)
    }

    /// Like [`ServerProcess::start_with`], listening on `listen` (an address and port).
    pub fn start_with_listen(args: Vec<String>, listen: &str) -> ServerProcess {
        Self::spawn(listen.to_owned(), args, vec![])
    }

    fn spawn(listen: String, args: Vec<String>, env: Vec<(String, String)>) -> ServerProcess {
        let port: u16 = listen.rsplit(':').next().and_then(|p| p.parse().ok()).expect("listen on ADDR:PORT");
        let data_dir = match args.iter().position(|a| a == "--data-dir") {
            Some(i) => PathBuf::from(&args[i + 1]),
            None => PathBuf::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(BIN)
                .args(["server", "--listen", &listen])
                .args(&args)
                .env("TASKWARDEN_LOG", "warn")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.contains("listening on") {
                return ServerProcess { child, url: format!("http://{listen}"), port, data_dir, args, env, listen };
            }
            // The port may still be held by the process we just killed; try again shortly.
            let _ = child.wait();
            assert!(Instant::now() < deadline, "server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill9(&mut self) {
        signal(&self.child, "KILL");
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        *self = ServerProcess::spawn(self.listen.clone(), self.args.clone(), self.env.clone());
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    pub fn start(url: &str, queue: &str, extra: &[&str]) -> WorkerProcess {
        let child = Command::new(BIN)
            .args(["worker", "--url", url, "--queue", queue])
            .args(extra)
            .env("TASKWARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        WorkerProcess { child }
    }

    /// Waits for the process to exit and returns its status and stderr.
    pub fn wait_output(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status, err);
            }
            assert!(Instant::now() < deadline, "worker did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The most memory a process has held so far (its peak resident set, VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

impl WorkerProcess {
    /// The most memory the process has held so far (its peak resident set, VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        peak_rss_mib(self.child.id())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI and returns (exit success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env("TASKWARDEN_LOG", "error").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI and returns (exit code, stdout, stderr); `stdin`, when given, is its input.
pub fn cli_code(args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("TASKWARDEN_LOG", "error")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A connection to a test schema, for checking what the nodes stored.
pub async fn pg_connect(url: &str, schema: &str) -> tokio_postgres::Client {
    let (client, connection) =
        url.parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("SET search_path TO {schema}")).await.unwrap();
    client
}

/// A node's `/readyz` answer: `Some(leads)` when ready, `None` when not (503, or unreachable).
pub async fn leads(http: &reqwest::Client, url: &str) -> Option<bool> {
    let resp = http.get(format!("{url}/readyz")).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    body["leader"].as_bool()
}
