//! The API's behaviour over real HTTP against a real SQLite file.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn a_task_runs_through_its_lifecycle_over_http() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "echo", "payload": {"x": 1}, "tags": ["t"]})).await;
    assert_eq!(task["state"], "ready");
    let id = task["id"].as_str().unwrap();
    let worker = s.register("q").await;
    let leased = s.fetch(&worker, "q", 10, 0).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["payload"], json!({"x": 1}));
    assert_eq!(leased[0]["attempt"], 1);
    let lease = leased[0]["lease"].as_str().unwrap();
    let (status, p) = s
        .call(
            "POST",
            &format!("/v1/tasks/{id}/progress"),
            Some(json!({"lease": lease, "fraction": 0.5, "message": "half"})),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(s.get(id).await["progress"]["message"], "half");
    let (status, done) =
        s.call("POST", &format!("/v1/tasks/{id}/complete"), Some(json!({"lease": lease, "result": {"y": 2}}))).await;
    assert_eq!(status, 200, "{done}");
    let got = s.get(id).await;
    assert_eq!(got["state"], "succeeded");
    assert_eq!(got["result"], json!({"y": 2}));
    assert_eq!(got["attempts"], 1);
    assert_eq!(got["history"][0]["outcome"], "succeeded");
    assert_eq!(got["history"][0]["worker_id"], worker.as_str());
    s.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_task() {
    let s = TestServer::start().await;
    let body = json!({"queue": "q", "kind": "echo", "idempotency_key": "charge-7"});
    let (first_status, first) = s.call("POST", "/v1/tasks", Some(body.clone())).await;
    let (second_status, second) = s.call("POST", "/v1/tasks", Some(body)).await;
    assert_eq!((first_status, second_status), (201, 200));
    assert_eq!(first["id"], second["id"]);
    let (_, page) = s.call("GET", "/v1/tasks?queue=q", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_stale_lease_gets_409_on_every_worker_call() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "echo", "lease_timeout_ms": 200, "backoff": {"min_ms": 1, "max_ms": 1, "multiplier": 1.0, "jitter": 0.0}})).await;
    let id = task["id"].as_str().unwrap();
    let worker = s.register("q").await;
    let first = s.fetch(&worker, "q", 1, 0).await.remove(0);
    let stale = first["lease"].as_str().unwrap().to_owned();
    // No heartbeat: the lease lapses, the reaper retries the task, and a second fetch re-leases it.
    let second = s.fetch(&worker, "q", 1, 5_000).await.remove(0);
    assert_eq!(second["attempt"], 2);
    let fresh = second["lease"].as_str().unwrap();
    for (call, body) in [
        ("complete", json!({"lease": stale, "result": "late"})),
        ("fail", json!({"lease": stale, "error": "late"})),
        ("heartbeat", json!({"lease": stale})),
        ("progress", json!({"lease": stale, "fraction": 0.1})),
        ("release", json!({"lease": stale})),
    ] {
        let (status, resp) = s.call("POST", &format!("/v1/tasks/{id}/{call}"), Some(body)).await;
        assert_eq!(status, 409, "{call} with a stale lease: {resp}");
        assert_eq!(resp["error"]["code"], "lease_lost");
    }
    let (status, _) =
        s.call("POST", &format!("/v1/tasks/{id}/complete"), Some(json!({"lease": fresh, "result": "on time"}))).await;
    assert_eq!(status, 200);
    let got = s.get(id).await;
    assert_eq!(got["result"], "on time");
    assert_eq!(got["history"][0]["outcome"], "timed_out");
    s.stop().await;
}

#[tokio::test]
async fn expired_leases_dead_letter_the_task_when_attempts_run_out() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "echo", "max_attempts": 1, "lease_timeout_ms": 100})).await;
    let id = task["id"].as_str().unwrap();
    let worker = s.register("q").await;
    s.fetch(&worker, "q", 1, 0).await;
    let (_, waited) = s.call("GET", &format!("/v1/tasks/{id}/wait?timeout_ms=5000"), None).await;
    assert_eq!(waited["state"], "failed");
    assert!(waited["error"].as_str().unwrap().contains("lease expired"));
    let (status, retried) = s.call("POST", &format!("/v1/tasks/{id}/retry"), None).await;
    assert_eq!(status, 200);
    assert_eq!(retried["state"], "ready");
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_reaches_its_worker_through_the_heartbeat() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "sleep"})).await;
    let id = task["id"].as_str().unwrap();
    let worker = s.register("q").await;
    let leased = s.fetch(&worker, "q", 1, 0).await.remove(0);
    let lease = leased["lease"].as_str().unwrap();
    let (status, cancelled) = s.call("POST", &format!("/v1/tasks/{id}/cancel"), None).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["state"], "running");
    assert_eq!(cancelled["cancel_requested"], true);
    let beat = json!({"leases": [{"task_id": id, "lease": lease}]});
    let (_, resp) = s.call("POST", &format!("/v1/workers/{worker}/heartbeat"), Some(beat)).await;
    assert_eq!(resp["leases"][0]["status"], "ok");
    assert_eq!(resp["leases"][0]["cancel_requested"], true);
    let report = json!({"reports": [{"task_id": id, "lease": lease, "outcome": {"status": "cancelled"}}]});
    let (_, resp) = s.call("POST", &format!("/v1/workers/{worker}/reports"), Some(report)).await;
    assert_eq!(resp["results"][0]["status"], "ok");
    assert_eq!(s.get(id).await["state"], "cancelled");

    let waiting = s.submit(json!({"queue": "q", "kind": "sleep", "delay_ms": 60000})).await;
    let (_, c) = s.call("POST", &format!("/v1/tasks/{}/cancel", waiting["id"].as_str().unwrap()), None).await;
    assert_eq!(c["state"], "cancelled", "a scheduled task is cancelled at once");
    s.stop().await;
}

#[tokio::test]
async fn a_waiting_fetch_is_woken_by_a_submit() {
    let s = TestServer::start().await;
    let worker = s.register("q").await;
    let started = Instant::now();
    let fetch = s.fetch(&worker, "q", 5, 20_000);
    let submit = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.submit(json!({"queue": "q", "kind": "echo"})).await
    };
    let (tasks, submitted) = tokio::join!(fetch, submit);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], submitted["id"]);
    assert!(started.elapsed() < Duration::from_secs(10), "the fetch returned on the submit, not at its 20 s deadline");
    s.stop().await;
}

#[tokio::test]
async fn a_delayed_task_becomes_ready_when_due() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "echo", "delay_ms": 300})).await;
    assert_eq!(task["state"], "scheduled");
    let worker = s.register("q").await;
    assert!(s.fetch(&worker, "q", 1, 0).await.is_empty());
    let leased = s.fetch(&worker, "q", 1, 10_000).await;
    assert_eq!(leased.len(), 1, "the promoter made it ready and woke the fetch");
    s.stop().await;
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let s = TestServer::start().await;
    let tasks: Vec<_> = (0..7)
        .map(|i| json!({"queue": if i < 5 { "a" } else { "b" }, "kind": "echo", "tags": [format!("n{i}")]}))
        .collect();
    let (status, _) = s.call("POST", "/v1/tasks/batch", Some(json!({"tasks": tasks}))).await;
    assert_eq!(status, 201);
    let (_, page1) = s.call("GET", "/v1/tasks?queue=a&limit=3", None).await;
    assert_eq!(page1["tasks"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s.call("GET", &format!("/v1/tasks?queue=a&limit=3&cursor={cursor}"), None).await;
    assert_eq!(page2["tasks"].as_array().unwrap().len(), 2);
    let (_, tagged) = s.call("GET", "/v1/tasks?tag=n6", None).await;
    assert_eq!(tagged["tasks"][0]["queue"], "b");
    let (_, ready) = s.call("GET", "/v1/tasks?state=ready&kind=echo", None).await;
    assert_eq!(ready["tasks"].as_array().unwrap().len(), 7);
    s.stop().await;
}

#[tokio::test]
async fn health_readiness_and_the_openapi_document_are_served() {
    let s = TestServer::start().await;
    assert_eq!(s.call("GET", "/healthz", None).await.0, 200);
    assert_eq!(s.call("GET", "/readyz", None).await.0, 200);
    let (status, doc) = s.call("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/tasks"]["post"].is_object());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_ends_waiting_long_polls_promptly() {
    let s = TestServer::start().await;
    let worker = s.register("q").await;
    let url = format!("{}/v1/workers/{worker}/fetch", s.url);
    let http = s.http.clone();
    let poll = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"queues": ["q"], "limit": 1, "wait_ms": 30000}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    s.stop().await;
    assert_eq!(poll.await.unwrap(), 200, "the in-flight long-poll was answered, not cut off");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_oversized_result_in_a_batch_fails_that_task_alone() {
    let s = TestServer::start().await;
    let a = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let b = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let worker = s.register("q").await;
    let leased = s.fetch(&worker, "q", 2, 0).await;
    let big = "x".repeat((1 << 20) + 1);
    let reports: Vec<_> = leased
        .iter()
        .map(|t| {
            let result = if t["id"] == a["id"] { json!(big) } else { json!("small") };
            json!({"task_id": t["id"], "lease": t["lease"], "outcome": {"status": "succeeded", "result": result}})
        })
        .collect();
    let (status, resp) =
        s.call("POST", &format!("/v1/workers/{worker}/reports"), Some(json!({"reports": reports}))).await;
    assert_eq!(status, 200, "{resp}");
    let a = s.get(a["id"].as_str().unwrap()).await;
    assert_eq!(a["state"], "failed");
    assert!(a["error"].as_str().unwrap().contains("limit"), "{a}");
    assert_eq!(s.get(b["id"].as_str().unwrap()).await["result"], "small");
    s.stop().await;
}

#[tokio::test]
async fn a_fetch_records_the_reports_it_carries_and_answers_each() {
    let s = TestServer::start().await;
    let a = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let b = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let worker = s.register("q").await;
    let leased = s.fetch(&worker, "q", 2, 0).await;
    assert_eq!(leased.len(), 2);
    let next = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let report = |t: &serde_json::Value, lease: &serde_json::Value| json!({"task_id": t["id"], "lease": lease, "outcome": {"status": "succeeded", "result": {"done": t["id"]}}});
    let stale = json!("1");
    let reports = json!([report(&leased[0], &leased[0]["lease"]), report(&leased[1], &stale)]);
    let (status, answer) = s
        .call(
            "POST",
            &format!("/v1/workers/{worker}/fetch"),
            Some(json!({"queues": ["q"], "limit": 5, "wait_ms": 0, "reports": reports})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // One result per carried report, in their order: the second named a lease nobody holds.
    assert_eq!(answer["reports"][0], json!({"task_id": leased[0]["id"], "status": "ok"}));
    assert_eq!(answer["reports"][1], json!({"task_id": leased[1]["id"], "status": "lease_lost"}));
    // And the fetch itself leased what was ready.
    let tasks = answer["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], next["id"]);
    let first = s.get(leased[0]["id"].as_str().unwrap()).await;
    assert_eq!(first["state"], "succeeded");
    assert_eq!(first["result"], json!({"done": leased[0]["id"]}));
    assert_eq!(s.get(leased[1]["id"].as_str().unwrap()).await["state"], "running", "a stale lease changes nothing");
    let _ = (a, b);
    // A fetch without reports has no "reports" in its answer.
    let (_, empty) =
        s.call("POST", &format!("/v1/workers/{worker}/fetch"), Some(json!({"queues": ["q"], "limit": 1}))).await;
    assert!(empty.get("reports").is_none(), "{empty}");
    s.stop().await;
}

/// Regression: an unknown workflow or cron schedule was answered "no such task".
#[tokio::test]
async fn a_missing_workflow_or_schedule_is_named_as_such() {
    let s = TestServer::start().await;
    let missing = "01890000-0000-7000-8000-000000000000";
    for (method, path, what) in [
        ("GET", format!("/v1/workflows/{missing}"), "no such workflow"),
        ("POST", format!("/v1/workflows/{missing}/cancel"), "no such workflow"),
        ("POST", format!("/v1/workflows/{missing}/retry"), "no such workflow"),
        ("GET", format!("/v1/workflows/{missing}/wait?timeout_ms=0"), "no such workflow"),
        ("DELETE", "/v1/cron/nosuch".to_owned(), "no such cron schedule"),
        ("POST", "/v1/cron/nosuch/pause".to_owned(), "no such cron schedule"),
        ("GET", format!("/v1/tasks/{missing}"), "no such task"),
    ] {
        let (status, body) = s.call(method, &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], what, "{method} {path}");
    }
    s.stop().await;
}

/// The system clock moved on by however far the test says.
struct Ahead(std::sync::atomic::AtomicU64);

impl taskwarden_server::Clock for Ahead {
    fn now(&self) -> taskwarden_core::Timestamp {
        let ahead = Duration::from_secs(self.0.load(std::sync::atomic::Ordering::Relaxed));
        taskwarden_core::Timestamp::from_system_time(std::time::SystemTime::now() + ahead)
    }
}

/// Regression: a worker killed with `kill -9` stayed listed as if alive, with no status.
#[tokio::test]
async fn a_worker_not_heard_from_is_listed_as_lost() {
    let clock = std::sync::Arc::new(Ahead(Default::default()));
    let s = TestServer::with_clock(clock.clone()).await;
    let worker = s.register("q").await;
    let status = |list: serde_json::Value| {
        list["workers"].as_array().unwrap().iter().find(|w| w["id"] == worker.as_str()).unwrap()["status"].clone()
    };
    assert_eq!(status(s.call("GET", "/v1/workers", None).await.1), "live");
    let path = format!("/v1/workers/{worker}");
    let (code, refused) = s.call("DELETE", &path, None).await;
    assert_eq!((code, refused["error"]["code"].as_str()), (409, Some("conflict")), "a live worker stays: {refused}");
    clock.0.store(120, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(status(s.call("GET", "/v1/workers", None).await.1), "lost");
    // Lost and holding nothing: an operator may remove it from the list.
    assert_eq!(s.call("DELETE", &path, None).await.0, 204);
    let (_, list) = s.call("GET", "/v1/workers", None).await;
    assert!(list["workers"].as_array().unwrap().is_empty(), "{list}");
    assert_eq!(s.call("DELETE", &path, None).await.0, 404);
    s.stop().await;
}

/// Issue 13: retry every failed task of a queue at once, on the server, with a count; cancel in
/// bulk; a limit with a cursor to go on.
#[tokio::test]
async fn ten_thousand_failed_tasks_are_retried_in_one_call() {
    const N: usize = 10_000;
    let s = TestServer::start().await;
    for _ in 0..N / 1000 {
        let tasks: Vec<_> = (0..1000).map(|_| json!({"queue": "q", "kind": "k", "max_attempts": 1})).collect();
        let (status, body) = s.call("POST", "/v1/tasks/batch", Some(json!({"tasks": tasks}))).await;
        assert_eq!(status, 201, "{body}");
    }
    s.submit(json!({"queue": "other", "kind": "k", "max_attempts": 1})).await;
    s.fail_all("q", N, "boom").await;

    let started = Instant::now();
    let (status, done) = s.call("POST", "/v1/tasks/retry", Some(json!({"queue": "q"}))).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["matched"].as_u64(), done["changed"].as_u64()), (Some(N as u64), Some(N as u64)), "{done}");
    assert!(done.get("next_cursor").is_none(), "{done}");
    eprintln!("bulk retry of {N} failed tasks: {:?}", started.elapsed());
    let (_, page) = s.call("GET", "/v1/tasks?queue=q&state=failed&limit=1", None).await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(0), "none left failed");

    // Cancel in bulk, 4,000 at a time: a cursor goes on where the limit stopped.
    let (_, first) = s.call("POST", "/v1/tasks/cancel", Some(json!({"queue": "q", "limit": 4000}))).await;
    assert_eq!(first["changed"], 4000, "{first}");
    let cursor = first["next_cursor"].as_str().expect("more to cancel").to_owned();
    let (_, rest) = s.call("POST", "/v1/tasks/cancel", Some(json!({"queue": "q", "cursor": cursor}))).await;
    assert_eq!(rest["changed"], (N - 4000) as u64, "{rest}");
    let (_, other) = s.call("GET", "/v1/tasks?queue=other&limit=1", None).await;
    assert_eq!(other["tasks"][0]["state"], "ready", "another queue's task is untouched");

    let (status, bad) = s.call("POST", "/v1/tasks/retry", Some(json!({"queue": "q", "state": "ready"}))).await;
    // The schema allows any state here; that retry takes only failed or cancelled ones is a rule
    // beyond it: 422, not 400.
    assert_eq!((status, bad["error"]["field"].as_str()), (422, Some("state")), "{bad}");
    s.stop().await;
}

#[tokio::test]
async fn a_failed_workflow_is_retried_over_http_keeping_what_succeeded() {
    let s = TestServer::start().await;
    let spec = json!({"tasks": [
        {"id": "a", "kind": "echo", "queue": "wf"},
        {"id": "b", "kind": "echo", "queue": "wf", "depends_on": ["a"], "max_attempts": 1}
    ]});
    let (status, wf) = s.call("POST", "/v1/workflows", Some(spec)).await;
    assert_eq!(status, 201, "{wf}");
    let id = wf["id"].as_str().unwrap();
    let (status, refused) = s.call("POST", &format!("/v1/workflows/{id}/retry"), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("conflict")), "still running: {refused}");

    let worker = s.register("wf").await;
    // Ends a leased task's attempt: `verb` is complete or fail.
    let end = |task: serde_json::Value, verb: &'static str, mut body: serde_json::Value| {
        body["lease"] = task["lease"].clone();
        let path = format!("/v1/tasks/{}/{verb}", task["id"].as_str().unwrap());
        let s = &s;
        async move { assert_eq!(s.call("POST", &path, Some(body)).await.0, 200) }
    };
    let a = s.fetch(&worker, "wf", 10, 0).await.remove(0);
    end(a.clone(), "complete", json!({"result": {"a": 1}})).await;
    let b = s.fetch(&worker, "wf", 10, 0).await.remove(0);
    end(b, "fail", json!({"error": "boom", "permanent": true})).await;
    let (_, failed) = s.call("GET", &format!("/v1/workflows/{id}/wait?timeout_ms=2000"), None).await;
    assert_eq!(failed["state"], "failed", "{failed}");

    let (status, retried) = s.call("POST", &format!("/v1/workflows/{id}/retry"), None).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["state"], "running");
    let states: Vec<(&str, &str)> = retried["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("a", "succeeded"), ("b", "ready")]);
    let (status, again) = s.call("POST", &format!("/v1/workflows/{id}/retry"), None).await;
    assert_eq!(status, 409, "a second retry finds it running: {again}");

    let b = s.fetch(&worker, "wf", 10, 0).await;
    assert_eq!(b.len(), 1, "only b runs again");
    assert_eq!(b[0]["attempt"], 2);
    end(b[0].clone(), "complete", json!({"result": "b"})).await;
    let (_, done) = s.call("GET", &format!("/v1/workflows/{id}/wait?timeout_ms=2000"), None).await;
    assert_eq!((done["state"].as_str(), done["result"].as_str()), (Some("succeeded"), Some("b")), "{done}");
    assert_eq!(s.get(a["id"].as_str().unwrap()).await["attempts"], 1, "a ran once");
    s.stop().await;
}

/// A ready task whose kind no live worker of its queue runs says so, and is not leased to a worker
/// that lacks it; a second worker with the kind makes it schedulable and takes it.
#[tokio::test]
async fn a_kind_becomes_schedulable_when_a_worker_with_its_handler_registers() {
    let s = TestServer::start().await;
    let (_, task) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "resize"}))).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let register = |kinds: serde_json::Value| json!({"name": "w", "queues": ["q"], "concurrency": 4, "kinds": kinds});
    let (status, echo) = s.call("POST", "/v1/workers", Some(register(json!(["echo"])))).await;
    assert_eq!(status, 201, "{echo}");
    assert_eq!(echo["kinds"], json!(["echo"]));
    let (_, got) = s.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(got["unschedulable"], "no live worker in queue q has a handler for kind resize", "{got}");
    let fetch = json!({"queues": ["q"], "limit": 10, "wait_ms": 0});
    let (_, leased) =
        s.call("POST", &format!("/v1/workers/{}/fetch", echo["id"].as_str().unwrap()), Some(fetch.clone())).await;
    assert_eq!(leased["tasks"], json!([]), "not leased to a worker without its handler");

    let (_, resize) = s.call("POST", "/v1/workers", Some(register(json!(["resize"])))).await;
    let (_, got) = s.call("GET", &format!("/v1/tasks/{id}"), None).await;
    assert!(got.get("unschedulable").is_none(), "{got}");
    let (_, leased) =
        s.call("POST", &format!("/v1/workers/{}/fetch", resize["id"].as_str().unwrap()), Some(fetch)).await;
    assert_eq!(leased["tasks"][0]["id"], id.as_str(), "{leased}");

    let (status, bad) = s.call("POST", "/v1/workers", Some(register(json!(["a", "a"])))).await;
    assert_eq!((status, bad["error"]["field"].as_str()), (400, Some("kinds[1]")), "{bad}");
    s.stop().await;
}

/// A worker registers a JSON Schema for a kind: a submit whose payload does not match it is
/// refused with 422 naming the JSON path, by every submitting call, and nothing is stored; the
/// schema is listed with the kind. Schemas that cannot be used are refused at registration.
#[tokio::test]
async fn a_payload_that_does_not_match_its_kinds_schema_is_refused_naming_the_path() {
    let s = TestServer::start().await;
    let schema = json!({"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string"}, "retries": {"type": "array", "items": {"type": "integer"}}}});
    let register = |schemas: serde_json::Value| json!({"name": "w", "queues": ["q"], "concurrency": 4, "kinds": ["fetch", "echo"], "schemas": schemas});
    let (status, _) = s.call("POST", "/v1/workers", Some(register(json!({"fetch": schema})))).await;
    assert_eq!(status, 201);

    let refused = |status: u16, body: &serde_json::Value, field: &str| {
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("unprocessable")), "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    };
    let (status, body) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "fetch", "payload": {}}))).await;
    refused(status, &body, "payload.url");
    assert!(body["error"]["message"].as_str().unwrap().contains("payload.url: required"), "{body}");
    let (status, body) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "fetch"}))).await;
    refused(status, &body, "payload");
    let bad = json!({"url": "u", "retries": [1, "two"]});
    let (status, body) =
        s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "fetch", "payload": bad}))).await;
    refused(status, &body, "payload.retries[1]");
    let batch = json!({"tasks": [
        {"queue": "q", "kind": "fetch", "payload": {"url": "u"}},
        {"queue": "q", "kind": "echo", "payload": 7},
        {"queue": "q", "kind": "fetch", "payload": {"url": 7}}]});
    let (status, body) = s.call("POST", "/v1/tasks/batch", Some(batch)).await;
    refused(status, &body, "tasks[2].payload.url");
    let workflow = json!({"tasks": [
        {"id": "a", "queue": "q", "kind": "echo"},
        {"id": "b", "queue": "q", "kind": "fetch", "payload": {"nope": 1}, "depends_on": ["a"]}]});
    let (status, body) = s.call("POST", "/v1/workflows", Some(workflow)).await;
    refused(status, &body, "tasks[1].payload.url");
    let cron = json!({"name": "c", "schedule": "0 * * * * *", "task": {"queue": "q", "kind": "fetch", "payload": {}}});
    let (status, body) = s.call("POST", "/v1/cron", Some(cron)).await;
    refused(status, &body, "task.payload.url");
    let (_, listed) = s.call("GET", "/v1/tasks?queue=q", None).await;
    assert_eq!(listed["tasks"], json!([]), "nothing refused was stored: {listed}");

    // What matches goes through; a kind without a schema takes anything.
    let (status, _) =
        s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "fetch", "payload": {"url": "u"}}))).await;
    assert_eq!(status, 201);
    let (status, _) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "echo", "payload": [1]}))).await;
    assert_eq!(status, 201);

    let (_, kinds) = s.call("GET", "/v1/kinds", None).await;
    let fetch = kinds["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "fetch").unwrap().clone();
    assert_eq!((fetch["workers"].as_u64(), fetch["ready"].as_u64()), (Some(1), Some(1)), "{kinds}");
    assert_eq!(fetch["schema"], schema, "{kinds}");
    let echo = kinds["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "echo").unwrap().clone();
    assert!(echo.get("schema").is_none(), "{kinds}");

    // A second worker registers a new version: it is in force at once.
    let (status, _) = s.call("POST", "/v1/workers", Some(register(json!({"fetch": {"type": "object"}})))).await;
    assert_eq!(status, 201);
    let (status, _) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "fetch", "payload": {}}))).await;
    assert_eq!(status, 201, "the new schema no longer requires url");

    let (status, body) = s.call("POST", "/v1/workers", Some(register(json!({"fetch": {"type": 5}})))).await;
    refused(status, &body, "schemas.fetch");
    let (status, body) = s.call("POST", "/v1/workers", Some(register(json!({"resize": true})))).await;
    refused(status, &body, "schemas.resize");
    s.stop().await;
}
