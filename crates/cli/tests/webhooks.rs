//! Webhooks end to end, with real processes: a receiver in this test checks every delivery's
//! Standard Webhooks signature (its own HMAC, not the server's code), answers 500 at first, and
//! holds one answer while the server is `kill -9`ed; it still ends up with every event, in order.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use support::{ServerProcess, WorkerProcess, cli_code};
use taskwarden_client::{Client, CreateWebhookCall, SubmitTask, SubmitTaskExt};

/// One request as the receiver saw it.
#[derive(Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Received>>,
    /// Requests answered 500 before the first 200.
    fail_first: usize,
    /// The request (by arrival, from 0) whose answer is held for a while.
    hold: Option<usize>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let n = {
        let mut got = r.got.lock().unwrap();
        got.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        got.len() - 1
    };
    if Some(n) == r.hold {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if n < r.fail_first { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
}

async fn start_receiver(r: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The receiver's side of Standard Webhooks, written from the specification: the signature is
/// the base64 HMAC-SHA256 of `id.timestamp.body` under the base64-decoded secret, and the
/// timestamp must be within five minutes of now.
fn verify(secret: &str, r: &Received, now_s: i64) -> bool {
    let Ok(key) = STANDARD.decode(secret.trim_start_matches("whsec_")) else { return false };
    let Ok(ts) = r.timestamp.parse::<i64>() else { return false };
    if (now_s - ts).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_every_event_once_verified_in_order_through_500s_and_a_kill_9() {
    let receiver = Arc::new(Receiver { fail_first: 3, hold: Some(8), ..Receiver::default() });
    let hook_url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let mut server = ServerProcess::start_with(
        vec!["--data-dir".into(), data, "--webhook-allow".into(), "127.0.0.1".into()],
        support::free_port(),
    );
    let client = Client::new(&server.url).unwrap();
    let call = CreateWebhookCall {
        name: "ops".into(),
        url: hook_url,
        events: vec!["task.succeeded".into(), "task.failed".into()],
        queues: vec!["wh".into()],
    };
    let secret = client.create_webhook(&call).await.unwrap().secret;
    let _worker = WorkerProcess::start(&server.url, "wh", &["--concurrency", "4"]);
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        let task = match i % 6 {
            5 => SubmitTask::new("wh", "fail").payload(&serde_json::json!({"permanent": true})).unwrap(),
            _ => SubmitTask::new("wh", "echo"),
        };
        ids.insert(client.submit(task).await.unwrap().id.to_string());
    }
    // Another queue's events are not sent.
    client.submit(SubmitTask::new("elsewhere", "echo")).await.unwrap();

    // Kill the server while the receiver holds its answer to the ninth request.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.got.lock().unwrap().len() < 9 {
        assert!(Instant::now() < deadline, "the ninth delivery never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    server.restart();

    // Every task's outcome arrives, however many times each was sent.
    let deadline = Instant::now() + Duration::from_secs(90);
    let firsts: Vec<Received> = loop {
        let got = receiver.got.lock().unwrap().clone();
        let mut seen = HashMap::new();
        let mut firsts = Vec::new();
        for r in &got {
            if seen.insert(r.id.clone(), ()).is_none() {
                firsts.push(r.clone());
            }
        }
        let tasks: BTreeSet<String> = firsts
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["task_id"].as_str().unwrap().to_owned())
            .collect();
        if tasks == ids {
            break firsts;
        }
        assert!(Instant::now() < deadline, "{} of {} tasks delivered", tasks.len(), ids.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = receiver.got.lock().unwrap().clone();
    for r in &got {
        assert!(verify(&secret, r, now_s()), "a delivery whose signature does not verify: {}", r.id);
        let event: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(event["id"], r.id.as_str(), "webhook-id is the event id");
        assert_eq!(event["queue"], "wh");
        assert!(event["type"] == "task.succeeded" || event["type"] == "task.failed", "{event}");
    }
    // In the log's order: each new id after the previous one.
    let order: Vec<u64> = firsts.iter().map(|r| r.id.parse().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "out of order: {order:?}");
    // The first event was answered 500 three times, then delivered: four tries, one id.
    assert!(got[..4].iter().all(|r| r.id == got[0].id), "retries carry the same id");
    assert!(got.len() > firsts.len(), "the held delivery was sent again after the restart");

    // A tampered body, a forged signature and a replayed old request do not verify.
    let real = got[0].clone();
    let tampered = Received { body: Bytes::from(real.body.iter().copied().rev().collect::<Vec<u8>>()), ..real.clone() };
    assert!(!verify(&secret, &tampered, now_s()));
    assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &real, now_s()));
    assert!(!verify(&secret, &real, now_s() + 3600), "an hour-old request is a replay");

    // The delivery log shows the failures.
    let (code, out, err) = cli_code(&["webhook", "deliveries", "ops", "--limit", "1000", "--url", &server.url], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("500 (failed)"), "{out}");
    let (code, out, _) = cli_code(&["webhook", "ls", "--url", &server.url], None);
    assert_eq!(code, 0);
    assert!(out.contains("ops") && !out.contains("DISABLED"), "{out}");

    // Replay: everything again from the start.
    let before = receiver.got.lock().unwrap().len();
    let (code, _, err) = cli_code(&["webhook", "replay", "ops", "--after", "0", "--url", &server.url], None);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.got.lock().unwrap().len() < before + ids.len() {
        assert!(Instant::now() < deadline, "the replay did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_to_a_private_address_is_refused_unless_allowed() {
    let receiver = Arc::new(Receiver::default());
    let hook_url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    let call = CreateWebhookCall { name: "local".into(), url: hook_url, events: vec![], queues: vec![] };
    client.create_webhook(&call).await.unwrap();
    client.submit(SubmitTask::new("q", "echo")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let deliveries = client.webhook_deliveries("local", 10).await.unwrap();
        if let Some(d) = deliveries.first() {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "no delivery was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.status, None);
    assert!(refused.error.as_deref().unwrap().contains("--webhook-allow 127.0.0.1"), "{refused:?}");
    assert!(receiver.got.lock().unwrap().is_empty(), "nothing reached the loopback receiver");
}
