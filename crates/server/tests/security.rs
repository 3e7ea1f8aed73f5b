//! Attacks that worked before tokens existed, each written as the attacker would try it, and the
//! rules that stop them: tokens, workers bound to their leases, browser safety, parsing limits.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, make_token};
use taskwarden_core::auth::Role;
use taskwarden_server::ServerConfig;
use taskwarden_store::{SqliteConfig, SqliteStore, Store};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("taskwarden.db"))).unwrap();
    (Arc::new(store), dir)
}

/// A token to make before the server starts: name, role, queues, whether it sees payloads.
type Spec = (&'static str, Role, &'static str, bool);

/// A server whose store already holds an admin token and `others`; returns the admin token's
/// secret and the others', in order.
async fn with_tokens(others: &[Spec]) -> (TestServer, Arc<dyn Store>, String, Vec<String>) {
    let (store, dir) = sqlite().await;
    let admin = make_token(&*store, "admin", Role::Admin, "*", false).await;
    let mut secrets = Vec::new();
    for (name, role, queues, payloads) in others {
        secrets.push(make_token(&*store, name, *role, queues, *payloads).await);
    }
    let config = ServerConfig { token_refresh: Duration::from_millis(100), ..ServerConfig::default() };
    let s = TestServer::on_store(store.clone(), config, Box::new(dir)).await;
    (s, store, admin, secrets)
}

async fn register(s: &TestServer, token: &str, queue: &str) -> String {
    let body = json!({"name": "w", "queues": [queue], "concurrency": 4});
    let (status, w) = s.as_token(token).call("POST", "/v1/workers", Some(body)).await;
    assert_eq!(status, 201, "{w}");
    w["id"].as_str().unwrap().to_owned()
}

async fn fetch_one(s: &TestServer, token: &str, worker: &str, queue: &str) -> Value {
    let body = json!({"queues": [queue], "limit": 1, "wait_ms": 2000});
    let (status, resp) = s.as_token(token).call("POST", &format!("/v1/workers/{worker}/fetch"), Some(body)).await;
    assert_eq!(status, 200, "{resp}");
    resp["tasks"][0].clone()
}

#[tokio::test]
async fn lease_tokens_leave_the_server_only_in_the_fetch_answer() {
    let s = TestServer::start().await;
    let id = s.submit(json!({"queue": "q", "kind": "echo"})).await["id"].as_str().unwrap().to_owned();
    let worker = s.register("q").await;
    let leased = s.fetch(&worker, "q", 1, 1000).await.remove(0);
    assert!(leased["lease"].is_string(), "the worker is handed its lease: {leased}");
    let got = s.get(&id).await;
    assert_eq!(got["state"], "running");
    assert_eq!(got["lease"]["worker_id"], worker.as_str(), "the attempt and worker are shown");
    assert!(got["lease"].get("token").is_none(), "but not the token: {got}");
    let (_, page) = s.call("GET", "/v1/tasks?queue=q", None).await;
    assert!(page["tasks"][0]["lease"].get("token").is_none(), "{page}");
    assert!(!page.to_string().contains(leased["lease"].as_str().unwrap()));
    s.stop().await;
}

#[tokio::test]
async fn a_forged_completion_is_refused() {
    let (s, _store, admin, t) =
        with_tokens(&[("victim", Role::Worker, "*", false), ("attacker", Role::Worker, "*", false)]).await;
    let (victim, attacker) = (t[0].clone(), t[1].clone());
    s.as_token(&admin).call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "echo"}))).await;
    let victim_worker = register(&s, &victim, "q").await;
    let task = fetch_one(&s, &victim, &victim_worker, "q").await;
    let (id, lease) = (task["id"].as_str().unwrap(), task["lease"].as_str().unwrap());

    // A worker token cannot even read tasks, so it cannot learn the lease there.
    let (status, _) = s.as_token(&attacker).call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, 403);
    // Even holding the real lease token (leaked some other way), every path is closed.
    let forged = json!({"lease": lease, "result": "forged"});
    let (status, resp) = s.as_token(&attacker).call("POST", &format!("/v1/tasks/{id}/complete"), Some(forged)).await;
    assert_eq!(status, 403, "the single-lease call: {resp}");
    let report =
        json!({"reports": [{"task_id": id, "lease": lease, "outcome": {"status": "succeeded", "result": "forged"}}]});
    let path = format!("/v1/workers/{victim_worker}/reports");
    let (status, resp) = s.as_token(&attacker).call("POST", &path, Some(report.clone())).await;
    assert_eq!(status, 403, "reporting as the victim's worker: {resp}");
    assert_eq!(resp["error"]["field"], "worker_id");
    let own = register(&s, &attacker, "q").await;
    let (status, resp) = s.as_token(&attacker).call("POST", &format!("/v1/workers/{own}/reports"), Some(report)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["results"][0]["status"], "lease_lost", "its own worker does not hold the lease");

    let (_, got) = s.as_token(&admin).call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(got["state"], "running", "nothing was recorded: {got}");
    let done = json!({"lease": lease, "result": "real"});
    let (status, _) = s.as_token(&victim).call("POST", &format!("/v1/tasks/{id}/complete"), Some(done)).await;
    assert_eq!(status, 200, "the real worker completes it");
    s.stop().await;
}

#[tokio::test]
async fn a_fetch_needs_a_worker_registered_by_the_same_token() {
    let (s, _store, _admin, t) =
        with_tokens(&[("w1", Role::Worker, "*", false), ("w2", Role::Worker, "*", false)]).await;
    let (w1, w2) = (t[0].clone(), t[1].clone());
    let body = json!({"queues": ["q"], "limit": 1, "wait_ms": 0});
    let (status, resp) = s.as_token(&w1).call("POST", "/v1/workers/made-up/fetch", Some(body.clone())).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (403, Some("worker_id")), "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("not registered"));
    let mine = register(&s, &w1, "q").await;
    let path = format!("/v1/workers/{mine}/fetch");
    let (status, resp) = s.as_token(&w2).call("POST", &path, Some(body.clone())).await;
    assert_eq!(status, 403, "another token's worker: {resp}");
    let (status, _) = s.as_token(&w1).call("POST", &path, Some(body)).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn once_a_token_exists_every_request_needs_one_and_revocation_holds_within_a_second() {
    let (s, store, admin, _) = with_tokens(&[]).await;
    let (status, resp) = s.call("GET", "/v1/tasks", None).await;
    assert_eq!((status, resp["error"]["code"].as_str()), (401, Some("unauthenticated")), "loopback too");
    let (status, _) = s.call_with(Some("tw_not-a-token"), "GET", "/v1/tasks", None).await;
    assert_eq!(status, 401);
    let (status, _) = s.call("GET", "/healthz", None).await;
    assert_eq!(status, 200, "health checks need no token");

    // Made on the side (as by another node, or the CLI offline), picked up within a refresh.
    let reader = make_token(&*store, "support", Role::Read, "*", false).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while s.as_token(&reader).call("GET", "/v1/tasks", None).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "a new token works within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A token is revoked by its id or name, never by its secret in a URL (which names `id`).
    let (status, resp) = s.as_token(&admin).call("POST", &format!("/v1/tokens/{reader}/revoke"), None).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (404, Some("id")), "{resp}");
    let (status, revoked) = s.as_token(&admin).call("POST", "/v1/tokens/support/revoke", None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, resp) = s.as_token(&reader).call("GET", "/v1/tasks", None).await;
    assert_eq!(status, 401, "revoked on this node at once: {resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("revoked"));
    s.stop().await;
}

#[tokio::test]
async fn tokens_made_through_the_api_are_shown_once_and_listed_without_secrets() {
    let (s, _store, admin, _) = with_tokens(&[]).await;
    let body = json!({"name": "ci", "role": "submit", "queues": "reports,billing.*", "expires_in_s": 3600});
    let (status, created) = s.as_token(&admin).call("POST", "/v1/tokens", Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("tw_"));
    assert_eq!(created["info"]["queues"], "reports,billing.*");
    let (status, _) = s.as_token(&admin).call("POST", "/v1/tokens", Some(body)).await;
    assert_eq!(status, 409, "a live token has the name");
    let (_, list) = s.as_token(&admin).call("GET", "/v1/tokens", None).await;
    assert_eq!(list["tokens"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(secret) && !list.to_string().contains("hash"), "{list}");
    // The new token works, and only within its scope.
    let task = json!({"queue": "reports", "kind": "echo"});
    assert_eq!(s.as_token(secret).call("POST", "/v1/tasks", Some(task)).await.0, 201);
    let (status, resp) =
        s.as_token(secret).call("POST", "/v1/tasks", Some(json!({"queue": "ops", "kind": "echo"}))).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (403, Some("queue")), "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("ops"));
    let (status, resp) = s.as_token(secret).call("GET", "/v1/tokens", None).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (403, Some("role")), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn a_read_token_sees_payloads_and_results_only_when_allowed() {
    let (s, _store, admin, t) =
        with_tokens(&[("support", Role::Read, "*", false), ("analyst", Role::Read, "*", true)]).await;
    let (plain, trusted) = (t[0].clone(), t[1].clone());
    let (_, task) = s
        .as_token(&admin)
        .call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "echo", "payload": {"card": "4111"}})))
        .await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let (_, hidden) = s.as_token(&plain).call("GET", &path, None).await;
    assert_eq!(hidden["payload"], Value::Null, "{hidden}");
    assert!(!hidden.to_string().contains("4111"));
    let (_, page) = s.as_token(&plain).call("GET", "/v1/tasks", None).await;
    assert!(!page.to_string().contains("4111"), "{page}");
    let (_, shown) = s.as_token(&trusted).call("GET", &path, None).await;
    assert_eq!(shown["payload"]["card"], "4111");
    // Nor may it probe payloads by searching them, one guess at a time.
    let (status, refused) = s.as_token(&plain).call("GET", "/v1/tasks?q=payload.card%3D4111", None).await;
    assert_eq!((status, refused["error"]["field"].as_str()), (403, Some("q")), "{refused}");
    let (status, found) = s.as_token(&trusted).call("GET", "/v1/tasks?q=payload.card%3D%224111%22", None).await;
    assert_eq!((status, found["tasks"].as_array().map(Vec::len)), (200, Some(1)), "{found}");
    let cron = json!({"name": "nightly", "schedule": "0 0 0 * * *", "task": {"queue": "q", "kind": "echo", "payload": {"card": "4111"}}});
    assert_eq!(s.as_token(&admin).call("POST", "/v1/cron", Some(cron)).await.0, 201);
    let (_, crons) = s.as_token(&plain).call("GET", "/v1/cron", None).await;
    assert_eq!(crons["schedules"][0]["name"], "nightly");
    assert!(!crons.to_string().contains("4111"), "a schedule's task template is a payload too: {crons}");
    s.stop().await;
}

#[tokio::test]
async fn changes_and_refusals_are_in_the_audit_log() {
    let (s, _store, admin, t) =
        with_tokens(&[("ops", Role::Operator, "*", false), ("support", Role::Read, "*", false)]).await;
    let (ops, reader) = (t[0].clone(), t[1].clone());
    assert_eq!(s.as_token(&ops).call("POST", "/v1/queues/billing/pause?create=true", None).await.0, 200);
    assert_eq!(s.as_token(&reader).call("POST", "/v1/queues/billing/resume", None).await.0, 403);
    let (status, _) = s.as_token(&ops).call("GET", "/v1/audit", None).await;
    assert_eq!(status, 403, "the audit log is for admins");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, log) = s.as_token(&admin).call("GET", "/v1/audit", None).await;
        assert_eq!(status, 200, "{log}");
        let entries = log["entries"].as_array().unwrap();
        let has = |actor: &str, action: &str| entries.iter().any(|e| e["actor"] == actor && e["action"] == action);
        if has("ops", "queue.pause") && has("support", "denied") {
            let denied = entries.iter().find(|e| e["action"] == "denied").unwrap();
            assert_eq!(denied["target"], "billing");
            assert!(denied["detail"].as_str().unwrap().contains("operator"), "{denied}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "both entries appear: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn cross_site_requests_are_refused() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/tasks", s.url);
    let body = r#"{"queue":"q","kind":"echo"}"#;
    // What a hostile page can make a browser send without a preflight.
    let resp = s.http.post(&url).header("content-type", "text/plain").body(body).send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["field"], "content-type");
    let resp =
        s.http.post(&url).header("content-type", "application/x-www-form-urlencoded").body("a=b").send().await.unwrap();
    assert_eq!(resp.status(), 415);
    let resp = s
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a foreign origin");
    // A page on another port of this machine is another origin: refused, also for a bodyless
    // POST (which no content-type check stops) on this open loopback server.
    let other_port = s.url.rsplit_once(':').map(|(host, _)| format!("{host}:1")).unwrap();
    let resp = s
        .http
        .post(format!("{}/v1/queues/q/pause?create=true", s.url))
        .header("origin", &other_port)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "another port is another origin");
    let (_, queues) = s.call("GET", "/v1/queues", None).await;
    assert!(queues["queues"].as_array().unwrap().iter().all(|q| q["paused"] == false), "{queues}");
    // DNS rebinding: the page's own host name, resolved to 127.0.0.1.
    let resp = s.http.get(&url).header("host", "evil.example:7433").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let same_origin = s.url.clone();
    let resp = s
        .http
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", same_origin)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "the server's own origin may");
    let (_, page) = s.call("GET", "/v1/tasks", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1, "nothing refused was stored");
    s.stop().await;
}

#[tokio::test]
async fn bodies_are_parsed_strictly() {
    let s = TestServer::start().await;
    let (status, resp) = s.raw("POST", "/v1/tasks", br#"{"queue":"q","kind":"echo"} xx"#.to_vec()).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (400, Some("body")), "trailing bytes: {resp}");
    let deep = format!(r#"{{"queue":"q","kind":"echo","payload":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let (status, resp) = s.raw("POST", "/v1/tasks", deep.into_bytes()).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (400, Some("body")), "10,000 levels: {resp}");
    let at = |n: usize| format!(r#"{{"queue":"q","kind":"echo","payload":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    let (status, resp) = s.raw("POST", "/v1/tasks", at(65).into_bytes()).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (400, Some("payload")), "65 levels: {resp}");
    assert_eq!(s.raw("POST", "/v1/tasks", at(64).into_bytes()).await.0, 201, "64 levels is the limit");
    // A batch longer than the limit is refused at its 10,001st task, not after parsing them all.
    let many = format!(r#"{{"tasks":[{}]}}"#, vec![r#"{"queue":"q","kind":"e"}"#; 10_001].join(","));
    let (status, resp) = s.raw("POST", "/v1/tasks/batch", many.into_bytes()).await;
    assert_eq!(status, 400, "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("at most 10000"), "{resp}");
    assert_eq!(resp["error"]["field"], "tasks");
    s.stop().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/tasks/batch HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 40
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut answer)).await.expect("answered at once").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"));
    s.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_task_gets_409_naming_it() {
    let s = TestServer::start().await;
    let first = json!({"queue": "q", "kind": "echo", "payload": 1, "idempotency_key": "order-9"});
    assert_eq!(s.call("POST", "/v1/tasks", Some(first.clone())).await.0, 201);
    assert_eq!(s.call("POST", "/v1/tasks", Some(first)).await.0, 200, "the same task again");
    let other = json!({"queue": "q", "kind": "echo", "payload": 2, "idempotency_key": "order-9"});
    let (status, resp) = s.call("POST", "/v1/tasks", Some(other)).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (409, Some("idempotency_key")), "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("order-9"));
    s.stop().await;
}

#[tokio::test]
async fn the_openapi_document_declares_the_security_scheme_and_each_routes_role() {
    let s = TestServer::start().await;
    let (_, doc) = s.call("GET", "/openapi.json", None).await;
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let cancel = &doc["paths"]["/v1/tasks/{id}/cancel"]["post"];
    assert_eq!(cancel["x-required-role"], "operator");
    assert_eq!(cancel["security"][0]["bearer"], json!([]));
    assert!(cancel["responses"]["403"].is_object());
    assert_eq!(doc["paths"]["/v1/workers/{id}/fetch"]["post"]["x-required-role"], "worker");
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    s.stop().await;
}

/// Sends `request` on a fresh connection and returns the whole answer as text.
async fn raw_exchange(url: &str, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let mut config = ServerConfig::default();
    config.http.body_read_timeout = Duration::from_millis(200);
    let s = TestServer::with_config(config).await;
    let started = std::time::Instant::now();
    let head = b"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"queue\":";
    let answer = raw_exchange(&s.url, head, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"));
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_with_every_connection_busy_newcomers_get_503_and_health_checks_answer() {
    let mut config = ServerConfig::default();
    config.http.max_connections = 16;
    let s = TestServer::with_config(config).await;
    let id = s.submit(json!({"queue": "q", "kind": "echo"})).await["id"].as_str().unwrap().to_owned();
    // Sixteen long-polls, each on a connection of its own: every connection is busy.
    let polls: Vec<_> = (0..16)
        .map(|_| {
            let url = format!("{}/v1/tasks/{id}/wait?timeout_ms=3000", s.url);
            tokio::spawn(async move { reqwest::Client::new().get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy =
        raw_exchange(&s.url, b"GET /v1/queues HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", Duration::from_secs(2)).await;
    assert!(busy.starts_with("HTTP/1.1 503") && busy.contains("overloaded"), "{busy}");
    let health =
        raw_exchange(&s.url, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", Duration::from_secs(2)).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    for poll in polls {
        assert_eq!(poll.await.unwrap().unwrap(), 200, "the busy connections were served to the end");
    }
    s.stop().await;
}

#[tokio::test]
async fn without_tokens_the_host_is_checked_even_when_told_to_run_insecure() {
    let s = TestServer::with_config(ServerConfig { insecure_no_auth: true, ..ServerConfig::default() }).await;
    let url = format!("{}/v1/tasks", s.url);
    let resp = s.http.get(&url).header("host", "evil.example:7433").send().await.unwrap();
    assert_eq!(resp.status(), 403, "DNS rebinding stays closed under --insecure-no-auth");
    s.stop().await;
    let open = ServerConfig { insecure_no_auth: true, allowed_hosts: vec!["*".into()], ..ServerConfig::default() };
    let s = TestServer::with_config(open).await;
    let resp = s.http.get(format!("{}/v1/tasks", s.url)).header("host", "evil.example:7433").send().await.unwrap();
    assert_eq!(resp.status(), 200, "only an explicit * answers for any host");
    s.stop().await;
}

#[tokio::test]
async fn metrics_need_a_read_token_for_every_queue_or_the_metrics_listener() {
    let (store, dir) = sqlite().await;
    let admin = make_token(&*store, "admin", Role::Admin, "*", false).await;
    let scoped = make_token(&*store, "scoped", Role::Read, "a.*", false).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = ServerConfig { metrics_listen: Some(listen), ..ServerConfig::default() };
    let s = TestServer::on_store(store, config, Box::new(dir)).await;
    let (status, _) = s.as_token(&admin).call("POST", "/v1/tasks", Some(json!({"queue": "a.q", "kind": "k"}))).await;
    assert_eq!(status, 201);
    assert_eq!(s.call("GET", "/metrics", None).await.0, 401);
    let (status, body) = s.as_token(&scoped).call("GET", "/metrics", None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = s.as_token(&admin).call("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(text.contains(r#",queue="a.q",kind="k"} 1"#), "{text}");
    assert!(text.contains("taskwarden_tasks_submitted_total{node="), "{text}");
    assert!(text.contains(r#"taskwarden_queue_ready{queue="a.q"} 1"#), "{text}");
    // The metrics listener: the same figures, no token, nothing else served.
    let http = reqwest::Client::new();
    let mut answer = None;
    for _ in 0..50 {
        if let Ok(r) = http.get(format!("http://{listen}/metrics")).send().await {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = answer.expect("the metrics listener answers");
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains(r#"taskwarden_queue_ready{queue="a.q"} 1"#));
    let other = http.get(format!("http://{listen}/v1/tasks")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    s.stop().await;
}
