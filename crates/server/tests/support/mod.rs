//! A real server on 127.0.0.1:0 over a real SQLite file, for the API tests.

#![allow(dead_code, reason = "each test binary uses a different part of the support code")]

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use taskwarden_core::auth::{QueueScope, Role, TokenRequest};
use taskwarden_server::{Server, ServerConfig, SystemClock};
use taskwarden_store::{SqliteConfig, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub url: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub signals: taskwarden_server::LoopSignals,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Sent as a bearer token on every call.
    pub token: Option<String>,
    _dir: Box<dyn Any + Send>,
}

/// Calls a [`TestServer`] with a token.
pub struct TokenClient<'a> {
    pub server: &'a TestServer,
    pub token: Option<String>,
}

impl TokenClient<'_> {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.server.call_with(self.token.as_deref(), method, path, body).await
    }
}

/// Makes a token straight in the store, as `taskwarden token create --data-dir` does.
pub async fn make_token(store: &dyn Store, name: &str, role: Role, queues: &str, payloads: bool) -> String {
    let request = TokenRequest {
        name: name.into(),
        role,
        queues: QueueScope::parse(queues).unwrap(),
        payloads,
        expires_at: None,
    };
    let now = taskwarden_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let (secret, record) = request.issue(rand::random(), now);
    store.create_token(record).await.unwrap();
    secret
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(ServerConfig { reap_interval: Duration::from_millis(50), ..ServerConfig::default() }).await
    }

    pub async fn with_config(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db"))).unwrap();
        Self::on_store(Arc::new(store), config, Box::new(dir)).await
    }

    /// A server over `store` (which may already hold tokens); `guard` lives as long as it.
    pub async fn on_store(store: Arc<dyn Store>, config: ServerConfig, guard: Box<dyn Any + Send>) -> TestServer {
        Self::on_store_with_clock(store, config, guard, Arc::new(SystemClock)).await
    }

    /// A server on a fresh SQLite file whose notion of now is `clock`.
    pub async fn with_clock(clock: Arc<dyn taskwarden_server::Clock>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db"))).unwrap();
        Self::on_store_with_clock(Arc::new(store), ServerConfig::default(), Box::new(dir), clock).await
    }

    async fn on_store_with_clock(
        store: Arc<dyn Store>,
        config: ServerConfig,
        guard: Box<dyn Any + Send>,
        clock: Arc<dyn taskwarden_server::Clock>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = Server::start(store, config, clock, shutdown.clone());
        let signals = server.signals.clone();
        let task = tokio::spawn(server.run(listener));
        taskwarden_client::install_tls_provider();
        TestServer { url, http: reqwest::Client::new(), shutdown, signals, task, token: None, _dir: guard }
    }

    /// The same server, calling with `token`.
    pub fn as_token(&self, token: &str) -> TokenClient<'_> {
        TokenClient { server: self, token: Some(token.to_owned()) }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Sends a request and returns the status and the JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(self.token.as_deref(), method, path, body).await
    }

    pub async fn call_with(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let write = method != reqwest::Method::GET;
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        match body {
            Some(b) => req = req.json(&b),
            None if write => req = req.header("content-type", "application/json"),
            None => {}
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let metrics = resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/openmetrics-text"));
        let text = resp.text().await.unwrap();
        if text.is_empty() && status == 204 {
            return (status, Value::Null);
        }
        if metrics {
            return (status, Value::String(text));
        }
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} answered {status} with a non-JSON body: {text:?}"));
        (status, json)
    }

    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} answered {status} with a non-JSON body: {text:?}")),
        )
    }

    pub async fn submit(&self, body: Value) -> Value {
        let (status, task) = self.call("POST", "/v1/tasks", Some(body)).await;
        assert_eq!(status, 201, "{task}");
        task
    }

    pub async fn register(&self, queue: &str) -> String {
        let (status, w) =
            self.call("POST", "/v1/workers", Some(json!({"name": "test", "queues": [queue], "concurrency": 4}))).await;
        assert_eq!(status, 201, "{w}");
        w["id"].as_str().unwrap().to_owned()
    }

    pub async fn fetch(&self, worker: &str, queue: &str, limit: u32, wait_ms: u64) -> Vec<Value> {
        let body = json!({"queues": [queue], "limit": limit, "wait_ms": wait_ms});
        let (status, resp) = self.call("POST", &format!("/v1/workers/{worker}/fetch"), Some(body)).await;
        assert_eq!(status, 200, "{resp}");
        resp["tasks"].as_array().unwrap().clone()
    }

    /// Leases the `n` tasks of `queue` as one worker and fails each for good with `error`.
    pub async fn fail_all(&self, queue: &str, n: usize, error: &str) {
        let worker = self.register(queue).await;
        let mut failed = 0;
        while failed < n {
            let leased = self.fetch(&worker, queue, 1000, 0).await;
            assert!(!leased.is_empty(), "only {failed} of {n} tasks could be leased");
            let reports: Vec<_> = leased
                .iter()
                .map(|t| json!({"task_id": t["id"], "lease": t["lease"], "outcome": {"status": "failed", "error": error, "permanent": true}}))
                .collect();
            let (status, body) =
                self.call("POST", &format!("/v1/workers/{worker}/reports"), Some(json!({"reports": reports}))).await;
            assert_eq!(status, 200, "{body}");
            failed += leased.len();
        }
    }

    pub async fn get(&self, id: &str) -> Value {
        let (status, task) = self.call("GET", &format!("/v1/tasks/{id}"), None).await;
        assert_eq!(status, 200, "{task}");
        task
    }
}
