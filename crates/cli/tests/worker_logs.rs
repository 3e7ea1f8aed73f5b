//! `taskwarden worker` logs one line per finished attempt; with `--log-format json`, one JSON
//! object per line with the task's fields, and never a colour code.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{BIN, ServerProcess, cli};

#[test]
fn the_worker_logs_one_json_line_per_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let worker = Command::new(BIN)
        .args(["worker", "--url", url, "--queue", "logs", "--log-format", "json"])
        .env("TASKWARDEN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ok, out, err) =
        cli(&["submit", "--url", url, "--queue", "logs", "--kind", "echo", "--payload", "{}", "--wait"]);
    assert!(ok, "{err}");
    let echoed: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let (ok, failed, _) =
        cli(&["submit", "--url", url, "--queue", "logs", "--kind", "fail", "--max-attempts", "1", "--payload", "{}"]);
    assert!(ok);
    let failed = failed.trim().to_owned();
    let (_, _, _) = cli(&["task", "wait", &failed, "--url", url, "--timeout", "20s"]);
    Command::new("kill").args(["-TERM", &worker.id().to_string()]).status().unwrap();
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\u{1b}'), "colour codes in a log that is not a terminal: {stderr}");
    let lines: Vec<Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}"))).collect();
    let finished: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "task finished").collect();
    assert_eq!(finished.len(), 2, "{stderr}");
    let ok_line = finished.iter().find(|l| l["fields"]["kind"] == "echo").expect("a line for the echo task");
    assert_eq!(ok_line["fields"]["outcome"], "succeeded");
    assert_eq!(ok_line["fields"]["attempt"], 1);
    assert_eq!(ok_line["level"], "INFO");
    assert!(ok_line["fields"]["run_ms"].as_f64().unwrap() >= 0.0);
    if let Some(id) = echoed["id"].as_str() {
        assert_eq!(ok_line["fields"]["task_id"], id);
    }
    let failed_line = finished.iter().find(|l| l["fields"]["kind"] == "fail").expect("a line for the failed task");
    assert_eq!(failed_line["fields"]["task_id"], failed.as_str());
    assert_eq!(failed_line["level"], "WARN");
    assert!(failed_line["fields"]["error"].as_str().is_some());
}
