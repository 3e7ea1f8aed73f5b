//! Workflows end to end: the CLI submits a DAG to a real server process, real workers run it.

mod support;

use serde_json::{Value, json};
use support::{ServerProcess, WorkerProcess, cli};

#[test]
fn a_dag_runs_in_order_and_the_sink_sees_its_parents_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "default", &["--concurrency", "8"]);
    let spec = json!({
        "name": "diamond",
        "tasks": [
            {"id": "split", "kind": "echo", "payload": {"text": "a b c"}},
            {"id": "left", "kind": "echo", "payload": 1, "depends_on": ["split"]},
            {"id": "right", "kind": "echo", "payload": 2, "depends_on": ["split"]},
            {"id": "merge", "kind": "echo", "payload": "merge", "depends_on": ["left", "right"]}
        ]
    });
    let file = dir.path().join("diamond.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let (ok, out, err) = cli(&["workflow", "submit", file.to_str().unwrap(), "--url", url]);
    assert!(ok, "{err}");
    let id = out.trim();
    let (ok, out, err) = cli(&["workflow", "wait", id, "--url", url, "--json"]);
    assert!(ok, "{err}");
    let wf: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(wf["state"], "succeeded");
    assert_eq!(wf["result"]["payload"], "merge");
    assert_eq!(wf["result"]["parents"]["left"]["result"]["parents"]["split"]["result"]["text"], "a b c");
    assert_eq!(wf["result"]["parents"]["right"]["result"]["payload"], 2);
    assert_eq!(wf["speedup"]["tasks"], 4);
    assert!(wf["speedup"]["t_serial_ms"].is_u64());

    let (ok, out, _) = cli(&["workflow", "show", id, "--url", url]);
    assert!(ok);
    assert!(out.contains("speedup") && out.contains("critical path"), "{out}");
}

#[test]
fn a_cyclic_workflow_is_refused_with_the_cycle_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let spec = json!({"tasks": [
        {"id": "a", "kind": "echo", "depends_on": ["c"]},
        {"id": "b", "kind": "echo", "depends_on": ["a"]},
        {"id": "c", "kind": "echo", "depends_on": ["b"]}
    ]});
    let file = dir.path().join("cycle.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let (ok, out, err) = cli(&["workflow", "submit", file.to_str().unwrap(), "--url", &server.url]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("cycle") && err.contains("a -> b -> c -> a"), "{err}");

    let spec = json!({"tasks": [{"id": "a", "kind": "echo", "depends_on": ["ghost"]}]});
    std::fs::write(&file, spec.to_string()).unwrap();
    let (ok, _, err) = cli(&["workflow", "submit", file.to_str().unwrap(), "--url", &server.url]);
    assert!(!ok && err.contains("tasks[0].depends_on[0]") && err.contains("ghost"), "{err}");
}

#[test]
fn fail_fast_fails_the_workflow_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "default", &[]);
    let spec = json!({"tasks": [
        {"id": "boom", "kind": "fail", "payload": {"permanent": true}},
        {"id": "after", "kind": "echo", "depends_on": ["boom"]}
    ]});
    let file = dir.path().join("ff.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let (ok, out, err) = cli(&["workflow", "submit", file.to_str().unwrap(), "--url", url, "--wait", "--json"]);
    assert!(!ok, "a failed workflow exits non-zero");
    assert!(err.contains("failed"), "{err}");
    let wf: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(wf["state"], "failed");
    assert_eq!(wf["nodes"][1]["state"], "cancelled");
}
