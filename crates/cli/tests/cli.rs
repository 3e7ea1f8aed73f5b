//! The CLI contract that scripts and docs rely on, against a real server process.

mod support;

use serde_json::Value;
use support::{ServerProcess, WorkerProcess, cli};

#[test]
fn submit_prints_the_id_and_task_get_prints_the_contract_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let (ok, out, err) = cli(&[
        "submit",
        "--url",
        url,
        "--queue",
        "q",
        "--kind",
        "echo",
        "--payload",
        r#"{"a":1}"#,
        "--priority",
        "-3",
        "--tag",
        "x,y",
    ]);
    assert!(ok, "{err}");
    let id = out.trim();
    assert_eq!(id.len(), 36, "only the id on stdout: {out:?}");

    let (ok, out, err) = cli(&["task", "get", id, "--url", url, "--json"]);
    assert!(ok, "{err}");
    let task: Value = serde_json::from_str(&out).unwrap();
    for field in ["id", "queue", "kind", "state", "attempts", "result", "error"] {
        assert!(task.get(field).is_some(), "task get --json lacks {field}: {out}");
    }
    assert_eq!(task["state"], "ready");
    assert_eq!(task["priority"], -3);
    assert_eq!(task["payload"]["a"], 1);

    let (ok, out, _) = cli(&["task", "list", "--url", url, "--state", "ready", "--json"]);
    assert!(ok);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["tasks"][0]["id"], id);

    let (ok, out, _) = cli(&["task", "cancel", id, "--url", url, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "cancelled");
    let (ok, out, _) = cli(&["task", "retry", id, "--url", url, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "ready");
}

#[test]
fn submit_wait_returns_the_result_from_a_worker_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "q", &["--concurrency", "4"]);
    let (ok, out, err) = cli(&[
        "submit",
        "--url",
        url,
        "--queue",
        "q",
        "--kind",
        "echo",
        "--payload",
        r#"{"hello":"world"}"#,
        "--wait",
        "--json",
    ]);
    assert!(ok, "{err}");
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"]["hello"], "world");

    let (ok, out, _) = cli(&[
        "submit",
        "--url",
        url,
        "--queue",
        "q",
        "--kind",
        "fail",
        "--payload",
        r#"{"permanent":true}"#,
        "--max-attempts",
        "2",
    ]);
    assert!(ok);
    let (ok, _, err) = cli(&["task", "wait", out.trim(), "--url", url]);
    assert!(!ok, "waiting on a failed task exits non-zero");
    assert!(err.contains("failed"), "{err}");

    let (ok, out, _) = cli(&["workers", "--url", url, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn errors_exit_non_zero_with_the_message_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let (ok, out, err) = cli(&["submit", "--url", url, "--queue", "q", "--kind", "echo", "--payload", "{not json"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("--payload"), "{err}");
    let (ok, _, err) = cli(&["submit", "--url", url, "--queue", "q\u{7}", "--kind", "echo"]);
    assert!(!ok);
    assert!(err.contains("queue"), "the server's field is named: {err}");
    let (ok, _, err) = cli(&["task", "get", "01a20e6d-6ae6-7000-a66d-51828c31ceab", "--url", url]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    let (ok, _, err) = cli(&["task", "get", "x", "--url", "http://127.0.0.1:9"]);
    assert!(!ok && !err.is_empty());
}

#[test]
fn the_server_reads_a_config_file_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let port = support::free_port();
    let config = dir.path().join("taskwarden.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nmax_payload_bytes = 64\n", data))
        .unwrap();
    let mut child = std::process::Command::new(support::BIN)
        .args(["server", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(data.join("taskwarden.db").exists());
    let url = format!("http://127.0.0.1:{port}");
    let big = format!("\"{}\"", "z".repeat(100));
    let (ok, _, err) = cli(&["submit", "--url", &url, "--kind", "echo", "--payload", &big]);
    assert!(!ok && err.contains("payload"), "the file's payload limit applies: {err}");
    let _ = child.kill();
    let _ = child.wait();

    let (ok, _, err) = cli(&["server", "--config", config.to_str().unwrap(), "--durability", "sometimes"]);
    assert!(!ok && err.contains("durability"), "{err}");
}

#[test]
fn the_demo_gathers_every_fetch_and_reports_the_speedup() {
    let (ok, out, err) = cli(&["demo", "--tasks", "60"]);
    assert!(ok, "{err}");
    assert!(out.contains("fetch tasks:      60"), "{out}");
    // Pages 7 and 57 answer 500 (retried, then failed) and 42 is missing: 57 gathered, 3 failed.
    assert!(out.contains("succeeded:        57") && out.contains("failed:           3"), "{out}");
    assert!(out.contains("gathered:         57 pages"), "{out}");
    assert!(out.contains("speedup:") && out.contains("critical path:"), "{out}");
}

/// `queue ls` as JSON, by queue name.
fn queues(url: &str) -> std::collections::BTreeMap<String, Value> {
    let (ok, out, err) = cli(&["queue", "ls", "--json", "--url", url]);
    assert!(ok, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    list.into_iter().map(|q| (q["name"].as_str().unwrap().to_owned(), q)).collect()
}

#[test]
fn a_paused_queue_holds_its_tasks_until_resumed_and_queue_ls_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "held", &[]);
    let (ok, out, err) = cli(&["queue", "pause", "held", "--create", "--url", url]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("held") && l.contains("yes")), "{out}");

    let (ok, out, err) = cli(&["submit", "--url", url, "--queue", "held", "--kind", "echo"]);
    assert!(ok, "{err}");
    let id = out.trim().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let (_, out, _) = cli(&["task", "get", &id, "--url", url, "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "ready", "a waiting worker got nothing");
    let held = &queues(url)["held"];
    assert_eq!((held["paused"].as_bool(), held["ready"].as_u64()), (Some(true), Some(1)));
    assert!(held["oldest_ready_ms"].as_u64().unwrap() >= 500);

    let (ok, _, err) = cli(&["queue", "resume", "held", "--url", url]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["task", "wait", &id, "--url", url, "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "succeeded", "the worker took it on resume");
    let held = &queues(url)["held"];
    assert_eq!((held["paused"].as_bool(), held["ready"].as_u64()), (Some(false), Some(0)));
    assert_eq!(held["succeeded_last_minute"], 1);

    let (ok, _, err) = cli(&["queue", "pause", "bad\u{7}name", "--url", url]);
    assert!(!ok && err.contains("queue"), "a control character in the name is refused, naming the field: {err}");
}

#[test]
fn a_worker_serving_two_queues_takes_from_them_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let (ok, out, err) = cli(&["queue", "set", "heavy", "--weight", "3", "--create", "--url", url]);
    assert!(ok, "{err}");
    assert!(out.lines().nth(1).is_some_and(|l| l.starts_with("heavy") && l.contains(" 3 ")), "{out}");
    let (ok, _, err) = cli(&["queue", "set", "light", "--weight", "0", "--create", "--url", url]);
    assert!(!ok && err.contains("weight"), "a zero weight is refused, naming the field: {err}");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        taskwarden_client::install_tls_provider();
        let http = reqwest::Client::new();
        for queue in ["heavy", "light"] {
            let batch: Vec<Value> = (0..100)
                .map(|_| serde_json::json!({"queue": queue, "kind": "sleep", "payload": {"ms": 200}}))
                .collect();
            let resp = http.post(format!("{url}/v1/tasks/batch")).json(&serde_json::json!({ "tasks": batch })).send();
            assert!(resp.await.unwrap().status().is_success());
        }
    });
    // Eight slots, every task 200 ms: while both queues have work, they share the slots 3:1.
    let _worker = WorkerProcess::start(url, "heavy,light", &["--concurrency", "8"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let queues = queues(url);
    let done = |q: &str| queues[q]["succeeded_last_minute"].as_u64().unwrap() + queues[q]["running"].as_u64().unwrap();
    let (heavy, light) = (done("heavy") as f64, done("light") as f64);
    let share = heavy / (heavy + light);
    assert!(
        (share - 0.75).abs() <= 0.1,
        "heavy got {heavy} and light {light}: {share:.2} of the work, its weight says 0.75"
    );
}
