//! `GET /v1/events` over real HTTP: what a token may see, how bad input is refused, and how a
//! live stream lives with the connection limits.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, make_token};
use taskwarden_core::auth::Role;
use taskwarden_server::{HttpConfig, ServerConfig};
use taskwarden_store::{SqliteConfig, SqliteStore, Store};

fn types(page: &Value) -> Vec<String> {
    page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_some_queues_sees_only_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("t.db"))).unwrap());
    let admin = make_token(&*store, "root", Role::Admin, "*", false).await;
    let scoped = make_token(&*store, "in-reader", Role::Read, "in.*", false).await;
    let mut s = TestServer::on_store(store, ServerConfig::default(), Box::new(dir)).await;
    s.token = Some(admin.clone());
    let inside = s.submit(json!({"queue": "in.a", "kind": "k", "tags": ["t1"]})).await;
    s.submit(json!({"queue": "out.b", "kind": "k"})).await;
    s.register("in.a").await;

    let (status, all) = s.call("GET", "/v1/events", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(types(&all), ["task.submitted", "task.submitted", "worker.joined"]);
    let (status, mine) = s.as_token(&scoped).call("GET", "/v1/events", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(types(&mine), ["task.submitted"], "not the other queue's, nor the worker's: {mine}");
    assert_eq!(mine["events"][0]["task_id"], inside["id"]);
    assert_eq!(mine["events"][0]["tags"], json!(["t1"]));
    let (status, refused) = s.as_token(&scoped).call("GET", "/v1/events?queue=out.b", None).await;
    assert_eq!(status, 403, "{refused}");

    // Filters, and `next` to go on from.
    let (_, by_tag) = s.call("GET", "/v1/events?tag=t1", None).await;
    assert_eq!(by_tag["events"].as_array().unwrap().len(), 1);
    let (_, first) = s.call("GET", "/v1/events?limit=1", None).await;
    let next = first["next"].as_str().unwrap();
    let (_, rest) = s.call("GET", &format!("/v1/events?after={next}"), None).await;
    assert_eq!(types(&rest), ["task.submitted", "worker.joined"]);
    let (_, now) = s.call("GET", "/v1/events?after=now", None).await;
    assert_eq!(types(&now), Vec::<String>::new());
    assert_eq!(now["next"], all["next"], "now is the end of the log");
}

#[tokio::test]
async fn bad_positions_and_filters_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    for (query, field) in [
        ("after=abc", "after"),
        ("after=1-", "after"),
        ("type=task.exploded", "type"),
        ("type=task.failed,,task.succeeded", "type"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("task=nope", "task"),
        ("queue=", "queue"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = s.call("GET", &format!("/v1/events?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let resp = s
        .http
        .get(format!("{}/v1/events", s.url))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID");
}

/// Regression: a connection counted as busy only until the headers of its answer were sent, so
/// the idle timer closed a stream that had been open longer than the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_idle_timeout_and_ends_at_shutdown() {
    let http = HttpConfig {
        idle_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let s = TestServer::with_config(ServerConfig { http, ..ServerConfig::default() }).await;
    let mut resp = s
        .http
        .get(format!("{}/v1/events?after=now", s.url))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let task = s.submit(json!({"queue": "q", "kind": "k"})).await;
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await.expect("an event in time");
        let chunk = chunk.expect("the stream is still open").expect("the stream is still open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains("event: task.submitted"), "{seen}");
    assert!(seen.contains(task["id"].as_str().unwrap()), "{seen}");
    s.shutdown.cancel();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = resp.chunk().await {} }).await;
    assert!(ended.is_ok(), "the stream ends when the server shuts down");
}

/// The leader rolls the event log up into the per-minute history that `GET /v1/stats` serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_what_happened_per_queue_and_minute() {
    let config = ServerConfig { stats_interval: Duration::from_millis(50), ..ServerConfig::default() };
    let s = TestServer::with_config(config).await;
    for _ in 0..3 {
        s.submit(json!({"queue": "st", "kind": "k"})).await;
    }
    let worker = s.register("st").await;
    let leased = s.fetch(&worker, "st", 3, 0).await;
    assert_eq!(leased.len(), 3);
    for (i, t) in leased.iter().enumerate() {
        let (id, lease) = (t["id"].as_str().unwrap(), t["lease"].as_str().unwrap());
        let (path, body) = match i {
            2 => (format!("/v1/tasks/{id}/fail"), json!({"lease": lease, "error": "no", "permanent": true})),
            _ => (format!("/v1/tasks/{id}/complete"), json!({"lease": lease, "result": i})),
        };
        let (status, answer) = s.call("POST", &path, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let row = loop {
        let (status, page) = s.call("GET", "/v1/stats?queue=st", None).await;
        assert_eq!(status, 200, "{page}");
        let rows = page["rows"].as_array().unwrap().clone();
        let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
        if sum("succeeded") == 2 && sum("failed") == 1 {
            break json!({
                "submitted": sum("submitted"), "started": sum("started"), "succeeded": sum("succeeded"),
                "failed": sum("failed"), "run_count": sum("run_count"), "wait_count": sum("wait_count"),
            });
        }
        assert!(std::time::Instant::now() < deadline, "not rolled up: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        row,
        json!({"submitted": 3, "started": 3, "succeeded": 2, "failed": 1, "run_count": 3, "wait_count": 3})
    );
    let (status, body) = s.call("GET", "/v1/stats?since=yesterday", None).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("since")), "{body}");
}

/// Regression (found by the contract run): a log position past 2^53 - 1, which the schema
/// refuses, was answered 200.
#[tokio::test]
async fn a_log_position_past_the_largest_safe_integer_is_refused() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "k"})).await;
    let id = task["id"].as_str().unwrap();
    let (status, body) = s.call("GET", &format!("/v1/tasks/{id}/logs?after=9007199254740992"), None).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("after")), "{body}");
    let (status, _) = s.call("GET", &format!("/v1/tasks/{id}/logs?after=9007199254740991"), None).await;
    assert_eq!(status, 200);
}

/// Without webhooks, the webhook loop sleeps through the commits and looks only on its timer:
/// it used to wake on every task that moved, a wake-up of another thread per submit that cost a
/// single client's one-at-a-time submits about a tenth of their rate. With an endpoint, a
/// change wakes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_loop_sleeps_through_commits_while_there_are_no_endpoints() {
    let s = TestServer::start().await;
    let looks = || *s.signals.webhook_looks.borrow();
    let (before, started) = (looks(), std::time::Instant::now());
    for _ in 0..200 {
        s.submit(json!({"queue": "q", "kind": "echo"})).await;
    }
    let (woke, seconds) = (looks() - before, started.elapsed().as_secs());
    assert!(woke <= seconds + 2, "200 submits in {seconds} s woke it {woke} times");

    let (status, _) =
        s.call("POST", "/v1/webhooks", Some(json!({"name": "hook", "url": "http://127.0.0.1:9/h"}))).await;
    assert_eq!(status, 201);
    // The next timer's look finds the endpoint; from then on, changes wake it.
    let mut seen = looks();
    while seen == looks() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen = looks();
    let started = std::time::Instant::now();
    s.submit(json!({"queue": "q", "kind": "echo"})).await;
    while looks() == seen {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started.elapsed() < Duration::from_millis(500), "a change woke it at once");
    s.stop().await;
}
