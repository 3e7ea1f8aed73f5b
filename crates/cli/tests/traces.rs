//! Traces end to end, with real processes: a server and a worker export over OTLP/HTTP to a
//! receiver in this test, which decodes the protobuf requests itself. A `traceparent` given at
//! submit reaches the handler's run span; a retry's run span links to the submit span.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::{Value, json};
use support::{ServerProcess, WorkerProcess, signal};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as received, with the service that sent it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Got {
    fn trace(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attribute(&self, key: &str) -> Option<String> {
        let a = self.span.attributes.iter().find(|a| a.key == key)?;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        match a.value.as_ref()?.value.as_ref()? {
            V::StringValue(s) => Some(s.clone()),
            V::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

async fn receive(State(got): State<Arc<Mutex<Vec<Got>>>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else { return (StatusCode::BAD_REQUEST, Vec::new()) };
    let mut got = got.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                got.push(Got { service: service.clone(), span });
            }
        }
    }
    (StatusCode::OK, Vec::new())
}

async fn start_receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn submit(http: &reqwest::Client, url: &str, header: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = http.post(format!("{url}/v1/tasks")).json(&body);
    if let Some(h) = header {
        req = req.header("traceparent", h);
    }
    req.send().await.unwrap()
}

async fn finished(http: &reqwest::Client, url: &str, id: &str) -> Value {
    support::eventually(Duration::from_secs(30), "the task to finish", || async {
        let task: Value = http.get(format!("{url}/v1/tasks/{id}")).send().await.ok()?.json().await.ok()?;
        matches!(task["state"].as_str(), Some("succeeded" | "failed")).then_some(task)
    })
    .await
}

/// Stops a process with SIGTERM (it flushes its spans on the way out) and waits for it.
fn stop(child: &mut std::process::Child) {
    signal(child, "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_traceparent_reaches_the_handler_span_and_a_retry_links_to_it() {
    let (otlp, got) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let mut server = ServerProcess::start_with(
        vec!["--data-dir".into(), data, "--otlp-endpoint".into(), otlp.clone()],
        support::free_port(),
    );
    let mut worker = WorkerProcess::start(&server.url, "traced", &["--otlp-endpoint", &otlp]);
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    let url = server.url.clone();

    // A first task, so the worker is up and, once it is done, parked in a long-poll when the
    // traced one comes.
    let warm_up: Value =
        submit(&http, &url, None, json!({"queue": "traced", "kind": "echo"})).await.json().await.unwrap();
    finished(&http, &url, warm_up["id"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // In the caller's trace, by header.
    let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let echo: Value =
        submit(&http, &url, Some(&caller), json!({"queue": "traced", "kind": "echo"})).await.json().await.unwrap();
    // By field, failing once then dead-lettered: two attempts.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let failing: Value = submit(
        &http,
        &url,
        None,
        json!({"queue": "traced", "kind": "fail", "max_attempts": 2,
               "backoff": {"min_ms": 10, "max_ms": 10, "multiplier": 1.0, "jitter": 0.0},
               "traceparent": format!("00-{other_trace}-b7ad6b7169203331-01")}),
    )
    .await
    .json()
    .await
    .unwrap();
    // A bad header starts a trace of its own; a bad field is refused, naming it.
    let untraced: Value = submit(&http, &url, Some("not-a-traceparent"), json!({"queue": "traced", "kind": "echo"}))
        .await
        .json()
        .await
        .unwrap();
    let refused = submit(&http, &url, None, json!({"queue": "traced", "kind": "echo", "traceparent": "00-zz"})).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["field"], "traceparent", "{body}");

    for id in [&echo["id"], &failing["id"], &untraced["id"]] {
        finished(&http, &url, id.as_str().unwrap()).await;
    }
    stop(&mut worker.child);
    stop(&mut server.child);

    let spans = got.lock().unwrap().clone();
    let find = |name: &str, trace: &str| -> Vec<Got> {
        spans.iter().filter(|g| g.span.name == name && g.trace() == trace).cloned().collect()
    };
    let echo_id = echo["id"].as_str().unwrap();

    // The server's submit span is a child of the caller's span, and the task carries it.
    let [submit] = &find("submit echo", TRACE)[..] else { panic!("one submit span in the caller's trace: {spans:#?}") };
    assert_eq!(submit.parent(), CALLER_SPAN);
    assert_eq!(submit.span.kind, SpanKind::Producer as i32);
    assert!(submit.service.contains("taskwarden-server"), "{}", submit.service);
    assert_eq!(submit.attribute("messaging.message.id").as_deref(), Some(echo_id));
    assert_eq!(echo["traceparent"], format!("00-{TRACE}-{}-01", submit.id()));

    // The worker's run span is a child of the submit span; the lease is too; the report is a
    // child of the run span.
    let [run] = &find("run echo", TRACE)[..] else { panic!("one run span: {spans:#?}") };
    assert_eq!(run.parent(), submit.id());
    assert_eq!(run.span.kind, SpanKind::Consumer as i32);
    assert!(run.service.contains("taskwarden-worker"), "{}", run.service);
    assert_eq!(run.attribute("messaging.message.id").as_deref(), Some(echo_id));
    assert_eq!(run.attribute("taskwarden.attempt").as_deref(), Some("1"));
    assert_eq!(run.attribute("taskwarden.outcome").as_deref(), Some("succeeded"));
    let [lease] = &find("lease echo", TRACE)[..] else { panic!("one lease span: {spans:#?}") };
    assert_eq!(lease.parent(), submit.id());
    // It starts when the task was leased, not when the worker's long-poll began, 300 ms before
    // the submit. (The lease is dated by the submit's clock reading, taken a moment before the
    // submit span starts: allow for that.)
    assert!(
        lease.span.start_time_unix_nano + 100_000_000 >= submit.span.start_time_unix_nano,
        "the lease span starts long before its task was submitted"
    );
    let [report] = &find("report echo", TRACE)[..] else { panic!("one report span: {spans:#?}") };
    assert_eq!(report.parent(), run.id());
    assert_eq!(report.attribute("taskwarden.task.state").as_deref(), Some("succeeded"));

    // The failing task: attempt 1 runs in the submit's trace; attempt 2 in a trace of its own,
    // linked to the submit span.
    let [fsubmit] = &find("submit fail", other_trace)[..] else { panic!("the field's trace: {spans:#?}") };
    assert_eq!(fsubmit.parent(), "b7ad6b7169203331");
    let [first] = &find("run fail", other_trace)[..] else { panic!("attempt 1 in the trace: {spans:#?}") };
    assert_eq!(first.parent(), fsubmit.id());
    assert_eq!(first.attribute("taskwarden.outcome").as_deref(), Some("failed"));
    let retries: Vec<&Got> = spans
        .iter()
        .filter(|g| g.span.name == "run fail" && g.attribute("taskwarden.attempt").as_deref() == Some("2"))
        .collect();
    let [retry] = &retries[..] else { panic!("one retry span: {spans:#?}") };
    assert_ne!(retry.trace(), other_trace, "a retry starts a trace of its own");
    assert!(retry.parent().is_empty(), "a retry's run span is a root");
    let link = &retry.span.links[0];
    assert_eq!((hex(&link.trace_id), hex(&link.span_id)), (other_trace.to_owned(), fsubmit.id()));

    // The unreadable header: a root submit span, and the run span its child.
    let untraced_id = untraced["id"].as_str().unwrap();
    let usubmit = spans
        .iter()
        .find(|g| g.span.name == "submit echo" && g.attribute("messaging.message.id").as_deref() == Some(untraced_id))
        .expect("a submit span for the task with a bad header");
    assert!(usubmit.parent().is_empty());
    assert!(spans.iter().any(|g| g.span.name == "run echo" && g.parent() == usubmit.id()));
}

/// Without an exporter the server makes no span, and a task carries the caller's trace context
/// as it came, for the worker's spans to join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_a_task_carries_the_callers_traceparent() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let task: Value =
        submit(&http, &server.url, Some(&caller), json!({"queue": "q", "kind": "echo"})).await.json().await.unwrap();
    assert_eq!(task["traceparent"], caller.as_str());
    let by_field: Value = submit(
        &http,
        &server.url,
        Some(&caller),
        json!({"queue": "q", "kind": "echo",
        "traceparent": format!("00-{TRACE}-b7ad6b7169203331-00")}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(by_field["traceparent"], format!("00-{TRACE}-b7ad6b7169203331-00"), "the field wins over the header");
    let plain: Value =
        submit(&http, &server.url, None, json!({"queue": "q", "kind": "echo"})).await.json().await.unwrap();
    assert!(plain.get("traceparent").is_none());
}
