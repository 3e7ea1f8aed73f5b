//! Every endpoint answers bad input with a 4xx and a JSON body naming the field, and writes nothing.

mod support;

use serde_json::{Value, json};
use support::TestServer;

fn assert_rejected(status: u16, body: &Value, want_status: u16, want_field: &str, case: &str) {
    assert_eq!(status, want_status, "{case}: {body}");
    let err = &body["error"];
    assert!(err["code"].is_string() && err["message"].is_string(), "{case}: error body {body}");
    assert_eq!(err["field"].as_str(), Some(want_field), "{case}: {body}");
}

#[tokio::test]
async fn malformed_or_mistyped_submits_name_the_field() {
    let s = TestServer::start().await;
    let long = "k".repeat(200);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing queue", json!({"kind": "echo"}), "queue"),
        ("missing kind", json!({"queue": "q"}), "kind"),
        ("empty queue", json!({"queue": "", "kind": "echo"}), "queue"),
        ("control character", json!({"queue": "a\u{1}b", "kind": "echo"}), "queue"),
        ("name too long", json!({"queue": "q", "kind": long}), "kind"),
        ("priority of the wrong type", json!({"queue": "q", "kind": "echo", "priority": "high"}), "priority"),
        ("priority out of range", json!({"queue": "q", "kind": "echo", "priority": 100000}), "priority"),
        ("negative delay", json!({"queue": "q", "kind": "echo", "delay_ms": -5}), "delay_ms"),
        ("absurd delay", json!({"queue": "q", "kind": "echo", "delay_ms": 9_000_000_000_000u64}), "delay_ms"),
        ("zero attempts", json!({"queue": "q", "kind": "echo", "max_attempts": 0}), "max_attempts"),
        ("tiny lease", json!({"queue": "q", "kind": "echo", "lease_timeout_ms": 1}), "lease_timeout_ms"),
        ("bad run_at", json!({"queue": "q", "kind": "echo", "run_at": "tomorrow"}), "run_at"),
        ("backoff given as an array", json!({"queue": "q", "kind": "echo", "backoff": [10, 5, 2.0, 0.1]}), "backoff"),
        (
            "run_at with an offset but no date",
            json!({"queue": "q", "kind": "echo", "run_at": "03:04:05+01:00"}),
            "run_at",
        ),
        ("a half for an integer", json!({"queue": "q", "kind": "echo", "priority": 2.5}), "priority"),
        ("bad tag", json!({"queue": "q", "kind": "echo", "tags": ["ok", 7]}), "tags[1]"),
        ("unknown field", json!({"queue": "q", "kind": "echo", "priorty": 1}), "priorty"),
        ("not an object", json!([1, 2]), "body"),
    ];
    for (case, body, field) in cases {
        let (status, resp) = s.call("POST", "/v1/tasks", Some(body)).await;
        assert_rejected(status, &resp, 400, field, case);
    }
    // Fits the schema, breaks a rule it cannot state: 422, naming the field.
    let unprocessable: Vec<(&str, Value, &str)> = vec![
        (
            "backoff max below min",
            json!({"queue": "q", "kind": "echo", "backoff": {"min_ms": 10, "max_ms": 5, "multiplier": 2.0, "jitter": 0.1}}),
            "backoff.max_ms",
        ),
        (
            "delay_ms and run_at",
            json!({"queue": "q", "kind": "echo", "delay_ms": 5, "run_at": "2026-01-01T00:00:00Z"}),
            "run_at",
        ),
    ];
    for (case, body, field) in unprocessable {
        let (status, resp) = s.call("POST", "/v1/tasks", Some(body)).await;
        assert_rejected(status, &resp, 422, field, case);
    }
    let (status, resp) = s.raw("POST", "/v1/tasks", b"{\"queue\": \"q\", ".to_vec()).await;
    assert_rejected(status, &resp, 400, "body", "truncated JSON");
    let (status, resp) = s.raw("POST", "/v1/tasks", Vec::new()).await;
    assert_rejected(status, &resp, 400, "body", "empty body");
    let (_, page) = s.call("GET", "/v1/tasks", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 0, "no rejected submit wrote anything");
    s.stop().await;
}

#[tokio::test]
async fn oversized_payloads_and_bodies_are_refused() {
    let s = TestServer::start().await;
    let big = "x".repeat((1 << 20) + 10);
    let (status, resp) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "echo", "payload": big}))).await;
    assert_rejected(status, &resp, 400, "payload", "payload over 1 MiB");
    let huge = format!("{{\"queue\": \"q\", \"kind\": \"echo\", \"payload\": \"{}\"}}", "y".repeat(33 << 20));
    let (status, resp) = s.raw("POST", "/v1/tasks", huge.into_bytes()).await;
    assert_rejected(status, &resp, 413, "body", "body over the limit");
    s.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_bad_task_stores_none() {
    let s = TestServer::start().await;
    let body =
        json!({"tasks": [{"queue": "q", "kind": "echo"}, {"queue": "q", "kind": ""}, {"queue": "q", "kind": "echo"}]});
    let (status, resp) = s.call("POST", "/v1/tasks/batch", Some(body)).await;
    assert_rejected(status, &resp, 400, "tasks[1].kind", "bad task in a batch");
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"queue": "q", "kind": "echo"})).collect();
    let (status, resp) = s.call("POST", "/v1/tasks/batch", Some(json!({"tasks": too_many}))).await;
    assert_rejected(status, &resp, 400, "tasks", "batch over the limit");
    let (status, resp) = s.call("POST", "/v1/tasks/batch", Some(json!({"tasks": []}))).await;
    assert_rejected(status, &resp, 400, "tasks", "empty batch");
    let (_, page) = s.call("GET", "/v1/tasks", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn reads_and_worker_calls_validate_too() {
    let s = TestServer::start().await;
    let task = s.submit(json!({"queue": "q", "kind": "echo"})).await;
    let id = task["id"].as_str().unwrap();
    let worker = s.register("q").await;

    let (status, resp) = s.call("GET", "/v1/tasks/not-a-uuid", None).await;
    assert_rejected(status, &resp, 400, "id", "bad id");
    let (status, resp) = s.call("GET", "/v1/tasks/01a20e6d-6ae6-7000-a66d-51828c31ceab", None).await;
    assert_eq!(status, 404, "{resp}");
    let (status, resp) = s.call("GET", "/v1/tasks?state=sleeping", None).await;
    assert_rejected(status, &resp, 400, "state", "unknown state");
    let (status, resp) = s.call("GET", "/v1/tasks?limit=0", None).await;
    assert_rejected(status, &resp, 400, "limit", "zero limit");
    let (status, resp) = s.call("GET", "/v1/tasks?cursor=zzz", None).await;
    assert_rejected(status, &resp, 400, "cursor", "bad cursor");
    let (status, resp) = s.call("GET", &format!("/v1/tasks/{id}/wait?timeout_ms=99999999"), None).await;
    assert_rejected(status, &resp, 400, "timeout_ms", "absurd wait");

    let fetch_path = format!("/v1/workers/{worker}/fetch");
    let fetch = |body: Value| s.call("POST", &fetch_path, Some(body));
    let (status, resp) = fetch(json!({"queues": ["q"], "limit": 0})).await;
    assert_rejected(status, &resp, 400, "limit", "zero fetch");
    let (status, resp) = fetch(json!({"queues": ["q", "q"], "limit": 2})).await;
    assert_rejected(status, &resp, 400, "queues[1]", "a queue named twice");
    let (status, resp) = fetch(json!({"queues": [], "limit": 1})).await;
    assert_rejected(status, &resp, 400, "queues", "no queues");
    let (status, resp) = fetch(json!({"queues": ["q"], "limit": 1, "wait_ms": 600000})).await;
    assert_rejected(status, &resp, 400, "wait_ms", "absurd wait");
    let (status, resp) =
        s.call("POST", "/v1/workers", Some(json!({"name": "w", "queues": ["q"], "concurrency": 0}))).await;
    assert_rejected(status, &resp, 400, "concurrency", "zero concurrency");

    let (status, resp) = s.call("POST", &format!("/v1/tasks/{id}/complete"), Some(json!({"lease": "not hex"}))).await;
    assert_rejected(status, &resp, 400, "lease", "bad lease token");
    let (status, resp) =
        s.call("POST", &format!("/v1/tasks/{id}/progress"), Some(json!({"lease": "01", "fraction": 7.0}))).await;
    assert_rejected(status, &resp, 400, "fraction", "progress over 1");
    let report = json!({"reports": [{"task_id": id, "lease": "01", "outcome": {"status": "exploded"}}]});
    let (status, resp) = s.call("POST", &format!("/v1/workers/{worker}/reports"), Some(report)).await;
    assert_rejected(status, &resp, 400, "reports[0].outcome.status", "unknown outcome");

    let (status, resp) = s.call("GET", "/v1/nothing-here", None).await;
    assert_eq!(status, 404, "{resp}");
    let (status, resp) = s.call("DELETE", "/v1/tasks", None).await;
    assert_eq!(status, 405, "{resp}");
    assert_eq!(s.get(id).await["state"], "ready", "nothing above changed the task");
    s.stop().await;
}

/// Found by schemathesis: JSON's 3.0 is 3, so a whole number written with a fraction or an
/// exponent is taken where an integer is due; a payload keeps the form it was sent in.
#[tokio::test]
async fn whole_numbers_written_as_floats_are_integers_and_payloads_stay_as_sent() {
    let s = TestServer::start().await;
    let body = json!({"queue": "q", "kind": "echo", "priority": 5.0, "max_attempts": 2e0, "payload": {"n": 1.0}});
    let (status, task) = s.call("POST", "/v1/tasks", Some(body)).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!((task["priority"].as_i64(), task["max_attempts"].as_u64()), (Some(5), Some(2)), "{task}");
    assert_eq!(task["payload"]["n"].as_f64(), Some(1.0));
    assert!(task["payload"]["n"].is_f64(), "the payload is not rewritten: {task}");
    s.stop().await;
}

/// Found by schemathesis: a call with no body (cancel, retry, pause) needs no Content-Type; one
/// that carries a body must still say JSON.
#[tokio::test]
async fn a_bodyless_change_needs_no_content_type_but_a_body_must_be_json() {
    let s = TestServer::start().await;
    let (_, task) = s.call("POST", "/v1/tasks", Some(json!({"queue": "q", "kind": "echo"}))).await;
    let id = task["id"].as_str().unwrap();
    let url = format!("{}/v1/tasks/{id}/cancel", s.url);
    let plain = reqwest::Client::new();
    let r = plain.post(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "no body, no Content-Type: accepted");
    let r = plain.post(&url).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "a text/plain body is refused as before");
    let r = plain.put(format!("{}/v1/tasks/{id}", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405, "an undeclared method is 405");
    s.stop().await;
}
