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

/// Kills the server with `kill -9` while a fan-out runs on two worker processes: every child still
/// succeeds exactly once, and the join runs exactly once, after all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_survives_server_crashes_with_exactly_one_join() {
    use std::time::Duration;
    use taskwarden_client::{Client, NodeSpec, TaskState, WorkflowSpec, WorkflowState};
    use taskwarden_core::AttemptOutcome;

    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    // Two worker processes, so children finish at the same moment on different workers.
    let _worker = WorkerProcess::start(&server.url, "fan", &["--concurrency", "16"]);
    let _second = WorkerProcess::start(&server.url, "fan", &["--concurrency", "16"]);
    let node = |id: String, kind: &str, payload: Value| NodeSpec {
        id,
        kind: kind.into(),
        queue: "fan".into(),
        payload: Some(serde_json::value::to_raw_value(&payload).unwrap()),
        lease_timeout_ms: Some(1_000),
        ..NodeSpec::default()
    };
    // 300 children of 40 ms on 32 slots: about half a second of work, so the kills land mid-run.
    let mut tasks: Vec<NodeSpec> = (0..300).map(|i| node(format!("c{i:03}"), "sleep", json!({"ms": 40}))).collect();
    let join = NodeSpec {
        depends_on: tasks.iter().map(|t| t.id.clone()).collect(),
        ..node("join".into(), "echo", json!("join"))
    };
    tasks.push(join);
    let wf = client.submit_workflow(&WorkflowSpec { tasks, ..WorkflowSpec::default() }).await.unwrap();

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let finished = client.get_workflow(wf.id).await.unwrap().state.is_terminal();
        assert!(!finished, "the kill must land while the fan-out runs");
        server.kill9();
        server.restart();
    }
    let done = client.wait_workflow(wf.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done.state, WorkflowState::Succeeded, "{:?}", done.error);
    assert_eq!(done.succeeded, 301);
    let join_id = done.nodes.iter().find(|n| n.node == "join").unwrap().task_id;
    let join = client.get(join_id).await.unwrap();
    let join_runs = join.history.iter().filter(|a| a.outcome == AttemptOutcome::Succeeded).count();
    assert_eq!(join_runs, 1, "exactly one join: {:?}", join.history);
    let result: Value = serde_json::from_str(done.result.unwrap().get()).unwrap();
    assert_eq!(result["parents"].as_object().unwrap().len(), 300, "the join saw every child's result");
    let last_child_end = each_child_completed_once_then_latest_end(&client, &done.nodes).await;
    assert!(join.history[0].started_at >= last_child_end, "the join started after the last child finished");
    for n in done.nodes.iter().filter(|n| n.node != "join") {
        assert_eq!(n.state, TaskState::Succeeded);
    }
}

async fn each_child_completed_once_then_latest_end(
    client: &taskwarden_client::Client,
    nodes: &[taskwarden_client::WorkflowNode],
) -> taskwarden_core::Timestamp {
    let mut latest = taskwarden_core::Timestamp::EPOCH;
    for n in nodes.iter().filter(|n| n.node != "join") {
        let t = client.get(n.task_id).await.unwrap();
        let successes = t.history.iter().filter(|a| a.outcome == taskwarden_core::AttemptOutcome::Succeeded).count();
        assert_eq!(successes, 1, "child {} completed once: {:?}", n.node, t.history);
        latest = latest.max(t.finished_at.unwrap());
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_stops_its_running_task_through_the_cancellation_token() {
    use std::time::{Duration, Instant};
    use taskwarden_client::{Client, NodeSpec, TaskState, WorkflowSpec, WorkflowState};

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = Client::new(&server.url).unwrap();
    let _worker = WorkerProcess::start(&server.url, "default", &[]);
    let node = |id: &str, kind: &str, payload: Value, deps: &[&str]| NodeSpec {
        id: id.into(),
        kind: kind.into(),
        payload: Some(serde_json::value::to_raw_value(&payload).unwrap()),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        lease_timeout_ms: Some(600),
        ..NodeSpec::default()
    };
    let spec = WorkflowSpec {
        tasks: vec![node("long", "sleep", json!({"ms": 60_000}), &[]), node("next", "echo", json!(null), &["long"])],
        ..WorkflowSpec::default()
    };
    let wf = client.submit_workflow(&spec).await.unwrap();
    let long = wf.nodes[0].task_id;
    support::eventually(Duration::from_secs(10), "the long task to start", || async {
        (client.get(long).await.unwrap().state == TaskState::Running).then_some(())
    })
    .await;
    let started = Instant::now();
    let cancelled = client.cancel_workflow(wf.id).await.unwrap();
    assert_eq!(cancelled.state, WorkflowState::Cancelled);
    let task = client.wait(long, Duration::from_secs(10)).await.unwrap();
    assert_eq!(task.state, TaskState::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5), "the handler stopped on its token, not after 60 s");
    assert_eq!(client.get(wf.nodes[1].task_id).await.unwrap().state, TaskState::Cancelled);
}

/// A handler fans out at run time (map), children fan out again (nested), and joins reduce; the
/// whole job's result is the outer join's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_fans_out_at_run_time_and_the_joins_reduce() {
    use std::time::Duration;
    use taskwarden_client::{Client, NodeSpec, SubmitTask, SubmitTaskExt, WorkflowState};
    use taskwarden_worker::{TaskContext, TaskError, Worker};

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let node = |kind: &str, payload: Value| NodeSpec {
        kind: kind.into(),
        queue: "mr".into(),
        payload: Some(serde_json::value::to_raw_value(&payload).unwrap()),
        ..NodeSpec::default()
    };
    // split {"from", "to"}: ranges wider than 10 split again; narrower ones fan out one square each.
    let split = move |ctx: TaskContext, r: Value| async move {
        let (from, to) = (r["from"].as_u64().unwrap(), r["to"].as_u64().unwrap());
        let children: Vec<NodeSpec> = if to - from > 10 {
            let mid = (from + to) / 2;
            vec![node("split", json!({"from": from, "to": mid})), node("split", json!({"from": mid, "to": to}))]
        } else {
            (from..to).map(|n| node("square", json!(n))).collect()
        };
        ctx.fan_out(children, node("sum", json!(null))).await?;
        Ok::<_, TaskError>(json!("split"))
    };
    let square = |_ctx: TaskContext, n: u64| async move { Ok::<_, TaskError>(n * n) };
    let sum = |ctx: TaskContext, _: Value| async move {
        let mut total = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = ctx.parents_page(after.as_deref(), 7).await?;
            for p in &page.parents {
                total += serde_json::from_str::<u64>(
                    p.result.as_ref().ok_or_else(|| TaskError::fail("a child failed"))?.get(),
                )?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok::<_, TaskError>(total),
            }
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(&server.url)
        .queue("mr")
        .concurrency(16)
        .handler("split", split)
        .handler("square", square)
        .handler("sum", sum);
    let worker = tokio::spawn(worker.run(stop.clone()));

    let client = Client::new(&server.url).unwrap();
    let root =
        client.submit(SubmitTask::new("mr", "split").payload(&json!({"from": 0, "to": 40})).unwrap()).await.unwrap();
    let done = client.wait(root.id, Duration::from_secs(30)).await.unwrap();
    let wf = client
        .wait_workflow(done.workflow_id.expect("the root became a workflow"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(wf.state, WorkflowState::Succeeded, "{:?}", wf.error);
    let expected: u64 = (0..40u64).map(|n| n * n).sum();
    assert_eq!(wf.result.unwrap().get(), expected.to_string());
    assert!(
        wf.nodes.iter().any(|n| n.node == "root/000000/000000/join"),
        "nested fan-outs: {:?}",
        wf.nodes.iter().map(|n| &n.node).collect::<Vec<_>>()
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[test]
fn the_fan_out_builtin_with_collect_hands_every_failure_to_the_join() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "default", &["--concurrency", "8"]);
    let payload = json!({
        "count": 5,
        "child": {"kind": "fail", "payload": {"permanent": true}},
        "join": {"kind": "echo", "payload": "joined"},
        "failure_policy": {"kind": "collect"}
    });
    let (ok, out, err) =
        cli(&["submit", "--url", url, "--kind", "fan.out", "--payload", &payload.to_string(), "--wait", "--json"]);
    assert!(ok, "{err}");
    let root: Value = serde_json::from_str(&out).unwrap();
    let wf_id = root["workflow_id"].as_str().unwrap();
    let (ok, out, err) = cli(&["workflow", "wait", wf_id, "--url", url, "--json"]);
    assert!(ok, "the fan-out collected its failures, so the workflow succeeds: {err}");
    let wf: Value = serde_json::from_str(&out).unwrap();
    let parents = wf["result"]["parents"].as_object().unwrap();
    assert_eq!(parents.len(), 5);
    assert!(
        parents.values().all(|p| p["state"] == "failed" && p["error"].as_str().unwrap().contains("failed on purpose")),
        "{parents:?}"
    );
}
