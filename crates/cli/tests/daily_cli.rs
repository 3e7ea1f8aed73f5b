//! What a new user tripped over in the daily CLI (issue 13), each against real processes: cron
//! schedules with a payload, a closed pipe, exit codes a script can tell apart, errors with a
//! hint, `submit --wait` on a task that fans out, payloads from a file or standard input, and
//! retrying a failed workflow.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{ServerProcess, WorkerProcess, cli, cli_code};

const BIN: &str = env!("CARGO_BIN_EXE_taskwarden");

/// A server process on a data dir of its own, kept as long as the server.
fn fresh_server() -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    (dir, server)
}

#[test]
fn a_cron_schedule_with_a_payload_can_be_listed_paused_and_resumed() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let add = [
        "cron",
        "add",
        "daily",
        "--url",
        url,
        "--schedule",
        "0 0 3 * * *",
        "--queue",
        "reports",
        "--kind",
        "echo",
        "--payload",
        r#"{"report":"daily"}"#,
    ];
    let (ok, out, err) = cli(&add);
    assert!(ok, "cron add: {err}");
    assert!(out.contains("daily"), "{out}");
    for args in [&["cron", "ls"][..], &["cron", "pause", "daily"], &["cron", "resume", "daily"]] {
        let (ok, out, err) = cli(&[args, &["--url", url]].concat());
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains("reports/echo"), "{args:?}: {out}");
    }
    let (ok, out, err) = cli(&["cron", "ls", "--json", "--url", url]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["task"]["payload"]["report"], "daily", "{out}");
}

/// `taskwarden task get ID | head -1` used to panic ("failed printing to stdout", exit 101).
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let (ok, id, err) = cli(&["submit", "--url", url, "--queue", "q", "--kind", "echo"]);
    assert!(ok, "{err}");
    let id = id.trim();
    for args in [vec!["task", "get", id], vec!["task", "list"], vec!["queue", "ls"]] {
        let mut child = Command::new(BIN)
            .args(&args)
            .args(["--url", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command has its answer to print.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn exit_codes_tell_failures_apart() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "work", &["--concurrency", "2"]);

    // 3: not found.
    let missing = "01890000-0000-7000-8000-000000000000";
    let (code, _, err) = cli_code(&["task", "get", missing, "--url", url], None);
    assert_eq!(code, 3, "{err}");
    // 2: a bad value, caught before anything is sent.
    let (code, _, err) = cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "k", "--payload", "{"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--payload"), "{err}");
    let (code, _, _) = cli_code(&["task", "get", "not-an-id", "--url", url], None);
    assert_eq!(code, 2);
    // 6: refused by the server (a priority out of its range), the field named.
    let (code, _, err) =
        cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "k", "--priority", "999999"], None);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("priority"), "{err}");
    // 1: the task ran and failed.
    let fail = ["submit", "--url", url, "--queue", "work", "--kind", "fail", "--max-attempts", "1", "--wait"];
    let (code, out, err) = cli_code(&[&fail[..], &["--payload", r#"{"permanent":true}"#]].concat(), None);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.trim().len(), 36, "the id is printed: {out:?}");
    // 4: timed out waiting; the id is still printed, so a script can follow the task up.
    let wait =
        ["submit", "--url", url, "--queue", "nobody-serves", "--kind", "echo", "--wait", "--wait-timeout", "300ms"];
    let (code, out, err) = cli_code(&wait, None);
    assert_eq!(code, 4, "{err}");
    let id = out.trim();
    assert_eq!(id.len(), 36, "the id is printed on a timeout: {out:?}");
    let (code, _, _) = cli_code(&["task", "wait", id, "--timeout", "200ms", "--url", url], None);
    assert_eq!(code, 4);

    // 5: nothing listens there; said once, with a hint.
    let port = support::free_port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let (code, _, err) = cli_code(&["task", "list", "--url", &nowhere], None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("hint:") && err.contains("taskwarden server"), "{err}");
    assert_eq!(err.to_lowercase().matches("connection refused").count(), 1, "{err}");
}

/// The README promises that whatever waited for a task that fans out waits for its join; `submit
/// --wait` used to return as soon as the task itself succeeded, its children still running.
#[test]
fn submit_wait_on_a_fan_out_waits_for_the_join() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "q", &["--concurrency", "4"]);
    let payload = r#"{"count":4,"child":{"kind":"sleep","payload":{"ms":400}},"join":{"kind":"echo"}}"#;
    let (code, out, err) = cli_code(
        &["submit", "--url", url, "--queue", "q", "--kind", "fan.out", "--payload", payload, "--wait", "--json"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["state"], "succeeded");
    let workflow = task["workflow_id"].as_str().expect("the task fanned out into a workflow");
    let (ok, out, err) = cli(&["workflow", "show", workflow, "--json", "--url", url]);
    assert!(ok, "{err}");
    let wf: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(wf["state"], "succeeded", "the join had finished when --wait returned: {out}");
    assert_eq!(wf["succeeded"], 6, "{out}");
    // The join's result (the children's outcomes) stands in for the task's.
    assert_eq!(task["result"], wf["result"], "{out}");
}

#[test]
fn a_payload_comes_from_a_file_or_standard_input() {
    let (dir, server) = fresh_server();
    let url = server.url.as_str();
    // 300 KB: more than a command line takes.
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(300_000));
    let file = dir.path().join("payload.json");
    std::fs::write(&file, &big).unwrap();
    let at_file = format!("@{}", file.display());
    for (value, stdin) in [(at_file.as_str(), None), ("-", Some(big.as_bytes()))] {
        let (code, out, err) =
            cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "echo", "--payload", value], stdin);
        assert_eq!(code, 0, "{value}: {err}");
        let (ok, got, err) = cli(&["task", "get", out.trim(), "--json", "--url", url]);
        assert!(ok, "{err}");
        let task: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(task["payload"]["blob"].as_str().map(str::len), Some(300_000));
    }
    let (code, _, err) =
        cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "echo", "--payload", "@/no/such/file"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such/file"), "{err}");
}

#[test]
fn help_explains_the_task_options_and_lists_every_built_in_handler() {
    let (ok, help, _) = cli(&["submit", "--help"]);
    assert!(ok);
    for (flag, words) in
        [("--priority", "Higher runs first"), ("--max-attempts", "Attempts in all"), ("--idempotency-key", "same key")]
    {
        let line = help.lines().position(|l| l.trim_start().starts_with(flag)).expect(flag);
        let text: String = help.lines().skip(line).take(4).collect();
        assert!(text.contains(words), "{flag} has no help text: {text}");
    }
    let (ok, help, _) = cli(&["--help"]);
    assert!(ok);
    assert!(help.contains("fan.out"), "{help}");
}

/// The README's quickstart cancelled and retried a task that had already succeeded (409 twice);
/// it now does so on a delayed one, as here.
#[test]
fn the_quickstart_cancels_and_retries_a_waiting_task() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let (ok, later, err) = cli(&["submit", "--url", url, "--kind", "echo", "--delay", "1h"]);
    assert!(ok, "{err}");
    let later = later.trim();
    let (code, out, err) = cli_code(&["task", "cancel", later, "--url", url, "--json"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "cancelled");
    let (code, out, err) = cli_code(&["task", "retry", later, "--url", url, "--json"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["state"], "ready");
    let readme = include_str!("../../../README.md");
    assert!(readme.contains(r#"taskwarden task cancel "$later"; taskwarden task retry "$later""#));
}

/// `task list --state running` had no worker, start or progress; text `task get` showed neither
/// tags nor the idempotency key; attempts read "3 of 6" after a manual retry; the list JSON showed
/// `"history": []` for a task that had attempts.
#[test]
fn task_views_show_where_it_runs_its_tags_and_attempts_left() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "q", &["--concurrency", "2"]);
    let (ok, slow, err) = cli(&[
        "submit",
        "--url",
        url,
        "--queue",
        "q",
        "--kind",
        "sleep",
        "--payload",
        r#"{"ms":5000}"#,
        "--tag",
        "nightly,billing",
        "--idempotency-key",
        "order-42",
    ]);
    assert!(ok, "{err}");
    let slow = slow.trim();
    let started = std::time::Instant::now();
    let listing = loop {
        let (ok, out, err) = cli(&["task", "list", "--state", "running", "--url", url]);
        assert!(ok, "{err}");
        if out.contains(slow) || started.elapsed() > std::time::Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let header = listing.lines().next().unwrap();
    assert!(header.contains("WORKER") && header.contains("STARTED") && header.contains("PROGRESS"), "{listing}");
    let row = listing.lines().find(|l| l.contains(slow)).expect("the running task is listed");
    assert!(row.contains("  w-"), "the worker id is shown: {row}");
    let (ok, text, err) = cli(&["task", "get", slow, "--url", url]);
    assert!(ok, "{err}");
    assert!(text.contains("nightly,billing") && text.contains("order-42"), "{text}");
    assert!(text.contains("1 made, 2 more allowed (max_attempts 3)"), "{text}");

    let fail = ["submit", "--url", url, "--queue", "q", "--kind", "fail", "--max-attempts", "1", "--wait"];
    let (code, failed, err) = cli_code(&[&fail[..], &["--payload", r#"{"permanent":true}"#]].concat(), None);
    assert_eq!(code, 1, "{err}");
    let failed = failed.trim();
    let (ok, out, _) = cli(&["task", "list", "--state", "failed", "--json", "--url", url]);
    assert!(ok);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["tasks"][0]["id"], failed);
    assert!(page["tasks"][0].get("history").is_none(), "a list does not pretend there were no attempts: {out}");
    let (ok, out, _) = cli(&["task", "get", failed, "--json", "--url", url]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["history"].as_array().map(Vec::len), Some(1));
    let (ok, text, err) = cli(&["task", "retry", failed, "--url", url]);
    assert!(ok, "{err}");
    assert!(text.contains("1 made, 1 more allowed (max_attempts 1)"), "{text}");
}

/// The demo printed `failed: 6` and listed five with no word of the sixth.
#[test]
fn the_demo_says_how_many_failures_it_did_not_list() {
    let (ok, out, err) = cli(&["demo", "--tasks", "400"]);
    assert!(ok, "{err}");
    // Pages n % 50 == 7 (8 of them: 500, retried, then failed) and n % 100 == 42 (4: missing).
    assert!(out.contains("failed:           12"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("  failed ")).count(), 5, "{out}");
    assert!(out.contains("  and 7 more"), "{out}");
    // Regression: with attempts dated from lease to report, prefetched tasks waiting for a slot
    // counted as running, and 2 x 32 slots read "peak running: 87". Workers now report how long
    // each handler ran and how long ago it ended; what is left is the request's transit.
    let peak: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("peak running:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the demo prints its peak");
    assert!(peak <= 76, "2 workers x 32 slots ran {peak} tasks at once: {out}");
}

/// `queue pause emial` (a typo) quietly made a queue, and there was no `queue rm`.
#[test]
fn a_misspelt_queue_is_refused_and_an_empty_one_can_be_removed() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let (ok, _, err) = cli(&["submit", "--url", url, "--queue", "email", "--kind", "echo"]);
    assert!(ok, "{err}");
    let (code, _, err) = cli_code(&["queue", "pause", "emial", "--url", url], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no such queue") && err.contains("--create"), "{err}");
    let (code, out, err) = cli_code(&["queue", "pause", "email", "--url", url], None);
    assert_eq!(code, 0, "a queue with tasks needs no --create: {err}");
    assert!(out.contains("email"), "{out}");
    let (code, _, err) = cli_code(&["queue", "set", "reports", "--weight", "3", "--create", "--url", url], None);
    assert_eq!(code, 0, "{err}");

    // `rm` refuses a queue that holds tasks, and forgets an empty one's settings.
    let (code, _, err) = cli_code(&["queue", "rm", "email", "--url", url], None);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("1 ready"), "{err}");
    let (code, _, err) = cli_code(&["queue", "rm", "reports", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let (ok, out, _) = cli(&["queue", "ls", "--json", "--url", url]);
    assert!(ok);
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["email"], "{out}");
    let (code, _, _) = cli_code(&["queue", "rm", "reports", "--url", url], None);
    assert_eq!(code, 3);
}

#[test]
fn queue_purge_cancels_the_ready_tasks_and_with_scheduled_the_delayed_ones() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    for _ in 0..3 {
        assert!(cli(&["submit", "--url", url, "--queue", "junk", "--kind", "echo"]).0);
    }
    assert!(cli(&["submit", "--url", url, "--queue", "junk", "--kind", "echo", "--delay", "1h"]).0);
    assert!(cli(&["submit", "--url", url, "--queue", "keep", "--kind", "echo"]).0);
    let (code, _, err) = cli_code(&["queue", "purge", "junk", "--url", url], None);
    assert_eq!(code, 2, "without --yes nothing happens: {err}");
    let (code, out, err) = cli_code(&["queue", "purge", "junk", "--yes", "--json", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let purged: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(purged["changed"], 3, "the ready ones: {out}");
    let (code, out, _) = cli_code(&["queue", "purge", "junk", "--scheduled", "--yes", "--url", url], None);
    assert_eq!(code, 0);
    assert!(out.contains("cancelled 1 tasks"), "then the delayed one: {out}");
    let (_, out, _) = cli(&["task", "list", "--queue", "junk", "--state", "cancelled", "--json", "--url", url]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(4), "{out}");
    let (_, out, _) = cli(&["task", "list", "--queue", "keep", "--json", "--url", url]);
    assert!(out.contains("\"ready\""), "another queue is untouched: {out}");
}

/// The task options the API had and the CLI lacked, on `submit` and on cron schedules; `cron run`
/// fires a schedule now; `cron ls` shows the last fire.
#[test]
fn task_options_reach_the_task_and_a_schedule_can_be_fired_now() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let options = [
        "--queue",
        "q",
        "--kind",
        "echo",
        "--lease-timeout",
        "5s",
        "--backoff",
        "500ms,1m,3",
        "--max-attempts",
        "5",
        "--tag",
        "nightly",
        "--timeout",
        "2m",
    ];
    let tomorrow = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    let later = humantime::format_rfc3339_seconds(tomorrow).to_string();
    let later = later.as_str();
    let (code, out, err) =
        cli_code(&[&["submit", "--url", url, "--json", "--run-at", later][..], &options[..]].concat(), None);
    assert_eq!(code, 0, "{err}");
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(task["state"], "scheduled");
    assert!(task["run_at"].as_str().unwrap().starts_with(later.trim_end_matches('Z')), "{later} {out}");
    assert_eq!(task["lease_timeout_ms"], 5000);
    assert_eq!(task["timeout_ms"], 120_000);
    assert_eq!((task["backoff"]["min_ms"].as_u64(), task["backoff"]["max_ms"].as_u64()), (Some(500), Some(60_000)));
    assert_eq!(task["backoff"]["multiplier"], 3.0);
    let (code, _, err) = cli_code(&["submit", "--url", url, "--kind", "echo", "--backoff", "fast"], None);
    assert_eq!(code, 2, "{err}");

    let add = [&["cron", "add", "hourly", "--url", url, "--schedule", "0 0 * * * *"][..], &options[..]].concat();
    let (code, _, err) = cli_code(&add, None);
    assert_eq!(code, 0, "{err}");
    let (ok, out, err) = cli(&["cron", "ls", "--url", url]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().contains("LAST"), "{out}");
    let (code, out, err) = cli_code(&["cron", "run", "hourly", "--json", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let fired: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((fired["queue"].as_str(), fired["state"].as_str()), (Some("q"), Some("ready")), "{out}");
    assert_eq!(fired["tags"], serde_json::json!(["nightly"]));
    assert_eq!((fired["max_attempts"].as_u64(), fired["lease_timeout_ms"].as_u64()), (Some(5), Some(5000)));
    let (code, _, _) = cli_code(&["cron", "run", "nosuch", "--url", url], None);
    assert_eq!(code, 3);
}

#[test]
fn task_retry_and_cancel_take_filters_for_bulk_changes() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    for _ in 0..3 {
        let (ok, _, err) = cli(&["submit", "--url", url, "--queue", "mail", "--kind", "send", "--delay", "1h"]);
        assert!(ok, "{err}");
    }
    let (code, out, err) = cli_code(&["task", "cancel", "--queue", "mail", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancelled 3 of 3 matching tasks"), "{out}");
    let (code, out, err) =
        cli_code(&["task", "retry", "--queue", "mail", "--state", "cancelled", "--json", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((done["matched"].as_u64(), done["changed"].as_u64()), (Some(3), Some(3)), "{out}");
    let (code, _, err) = cli_code(&["task", "retry", "--url", url], None);
    assert_eq!(code, 2, "neither an id nor a filter: {err}");
}

#[test]
fn workflow_ls_lists_workflows_newest_first_by_state() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let spec = r#"{"name": "nightly", "tasks": [{"id": "a", "kind": "echo", "queue": "nobody"}]}"#;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = cli_code(&["workflow", "submit", "-", "--url", url], Some(spec.as_bytes()));
        assert_eq!(code, 0, "{err}");
        ids.push(out.trim().to_owned());
    }
    let (ok, _, err) = cli(&["workflow", "cancel", &ids[0], "--url", url]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["workflow", "ls", "--url", url]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(rows[0].starts_with(&ids[1]) && rows[1].starts_with(&ids[0]), "newest first: {out}");
    assert!(rows[0].contains("nightly"), "{out}");
    let (ok, out, err) = cli(&["workflow", "ls", "--state", "cancelled", "--json", "--url", url]);
    assert!(ok, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["workflows"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(page["workflows"][0]["id"], ids[0].as_str());
}

#[test]
fn cron_update_changes_the_schedule_and_its_task() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let add = [
        "cron",
        "add",
        "report",
        "--url",
        url,
        "--schedule",
        "0 0 3 * * *",
        "--kind",
        "echo",
        "--payload",
        r#"{"v":1}"#,
    ];
    let (ok, _, err) = cli(&add);
    assert!(ok, "{err}");
    let (code, out, err) = cli_code(
        &[
            "cron",
            "update",
            "report",
            "--schedule",
            "0 30 4 * * *",
            "--payload",
            r#"{"v":2}"#,
            "--priority",
            "5",
            "--json",
            "--url",
            url,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["schedule"], "0 30 4 * * *");
    assert!(info["next_run_at"].as_str().unwrap().contains("T04:30:00"), "the next tick moved: {out}");
    assert_eq!((info["task"]["payload"]["v"].as_u64(), info["task"]["priority"].as_i64()), (Some(2), Some(5)), "{out}");
    assert_eq!(info["task"]["kind"], "echo", "the rest of the template stays");
    let (code, _, err) = cli_code(&["cron", "update", "report", "--schedule", "not cron", "--url", url], None);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("schedule"), "{err}");
    let (code, _, _) = cli_code(&["cron", "update", "nosuch", "--schedule", "0 0 1 * * *", "--url", url], None);
    assert_eq!(code, 3);
}

/// Every command that changes something can answer in JSON, for scripts.
#[test]
fn changing_commands_answer_in_json_too() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let json = |args: &[&str]| -> Value {
        let (code, out, err) = cli_code(&[args, &["--json", "--url", url]].concat(), None);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    };
    assert_eq!(json(&["queue", "pause", "q", "--create"])["paused"], true);
    assert_eq!(json(&["queue", "resume", "q"])["paused"], false);
    assert_eq!(json(&["queue", "set", "q", "--weight", "4"])["weight"], 4);
    assert_eq!(json(&["queue", "rm", "q"]), serde_json::json!({"removed": "q"}));
    json(&["cron", "add", "c", "--schedule", "0 0 3 * * *", "--kind", "echo"]);
    assert_eq!(json(&["cron", "pause", "c"])["paused"], true);
    assert_eq!(json(&["cron", "resume", "c"])["paused"], false);
    assert_eq!(json(&["cron", "rm", "c"]), serde_json::json!({"deleted": "c"}));
}

/// A site on 127.0.0.1 that counts the requests for each path; `/flaky` answers 404 (a
/// permanent failure for `http.fetch`) the first time and 200 after.
struct CountingSite {
    port: u16,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
}

impl CountingSite {
    fn start() -> CountingSite {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let path = String::from_utf8_lossy(&request).split(' ').nth(1).unwrap_or("/").to_owned();
                let n = {
                    let mut hits = counted.lock().unwrap();
                    let n = hits.entry(path.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let (status, body) = match (path.as_str(), n) {
                    ("/flaky", 1) => ("404 Not Found", "not yet".to_owned()),
                    _ => ("200 OK", format!("{path} #{n}")),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(body.as_bytes()));
            }
        });
        CountingSite { port, hits }
    }

    fn hits(&self, path: &str) -> u32 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

#[test]
fn workflow_retry_reruns_the_failed_task_and_keeps_the_one_that_succeeded() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let site = CountingSite::start();
    let allow = format!("127.0.0.1:{}", site.port);
    let _worker = WorkerProcess::start(url, "wf", &["--fetch-allow", &allow]);
    let fetch = |path: &str| format!(r#"{{"url": "http://127.0.0.1:{}{path}"}}"#, site.port);
    let spec = format!(
        r#"{{"name": "retry-me", "tasks": [
            {{"id": "download", "kind": "http.fetch", "queue": "wf", "payload": {}}},
            {{"id": "publish", "kind": "http.fetch", "queue": "wf", "payload": {}, "depends_on": ["download"],
              "max_attempts": 1}}
        ]}}"#,
        fetch("/download"),
        fetch("/flaky")
    );
    let (code, out, err) = cli_code(&["workflow", "submit", "-", "--url", url], Some(spec.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    let (code, _, err) = cli_code(&["workflow", "wait", &id, "--timeout", "30s", "--url", url], None);
    assert_eq!(code, 1, "publish failed, so did the workflow: {err}");
    assert_eq!((site.hits("/download"), site.hits("/flaky")), (1, 1));

    let (code, out, err) = cli_code(&["workflow", "retry", &id, "--json", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let retried: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(retried["state"], "running", "{out}");
    assert_eq!(retried["nodes"][0]["state"], "succeeded", "download is kept: {out}");

    let (code, out, err) = cli_code(&["workflow", "wait", &id, "--json", "--timeout", "30s", "--url", url], None);
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["state"], "succeeded", "{out}");
    assert_eq!(done["result"]["body"], "/flaky #2", "{out}");
    assert_eq!(site.hits("/download"), 1, "download ran once: its result was kept, not fetched again");
    assert_eq!(site.hits("/flaky"), 2);

    let (code, _, err) = cli_code(&["workflow", "retry", &id, "--url", url], None);
    assert_eq!(code, 6, "a succeeded workflow is refused: {err}");
    assert!(err.contains("succeeded"), "{err}");
    let readme = include_str!("../../../README.md");
    assert!(readme.contains(r#"taskwarden workflow retry "$id"     # running again"#), "the README shows this");
}

/// The reported defect: a task of a kind no worker has was leased, failed three times with "no
/// handler" and was never shown as unschedulable. Workers now say which kinds they run.
#[test]
fn a_kind_no_worker_runs_waits_as_unschedulable_instead_of_failing() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "q", &[]);
    let (ok, out, err) = cli(&["submit", "--url", url, "--queue", "q", "--kind", "nosuch"]);
    assert!(ok, "{err}");
    let id = out.trim().to_owned();
    let (ok, out, err) = cli(&["submit", "--url", url, "--queue", "q", "--kind", "echo", "--wait"]);
    assert!(ok, "the worker is up and runs what it has a handler for: {out} {err}");
    let (ok, out, _) = cli(&["task", "get", &id, "--json", "--url", url]);
    assert!(ok);
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("ready"), Some(0)), "never leased: {out}");
    let why = task["unschedulable"].as_str().unwrap_or_default();
    assert!(why.contains("kind nosuch"), "the reason names the kind: {out}");
    let (_, out, _) = cli(&["queue", "ls", "--json", "--url", url]);
    let queues: Vec<Value> = serde_json::from_str(&out).unwrap();
    let q = queues.iter().find(|q| q["name"] == "q").unwrap();
    assert_eq!(q["unschedulable"], 1, "queue stats count it: {out}");
    let (ok, out, _) = cli(&["kinds", "ls", "--json", "--url", url]);
    assert!(ok);
    let kinds: Vec<Value> = serde_json::from_str(&out).unwrap();
    let kind =
        |name: &str| kinds.iter().find(|k| k["kind"] == name).cloned().unwrap_or_else(|| panic!("{name}: {out}"));
    assert_eq!((kind("fan.out")["workers"].as_u64(), kind("http.fetch")["workers"].as_u64()), (Some(1), Some(1)));
    assert_eq!((kind("nosuch")["workers"].as_u64(), kind("nosuch")["ready"].as_u64()), (Some(0), Some(1)), "{out}");
}

/// The built-in worker registers JSON Schemas for `http.fetch` and `sleep`: a payload without the
/// url is refused at submit (exit 6, the path named) instead of failing on a worker.
#[test]
fn a_payload_that_does_not_match_the_kinds_schema_is_refused_at_submit() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let _worker = WorkerProcess::start(url, "q", &[]);
    let registered = std::time::Instant::now();
    while !cli(&["kinds", "ls", "--json", "--url", url]).1.contains("\"schema\"") {
        assert!(registered.elapsed() < Duration::from_secs(20), "the worker registered no schema");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) =
        cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "http.fetch", "--payload", "{}"], None);
    assert_eq!(code, 6, "refused by the server: {out} {err}");
    assert!(err.contains("payload.url: required"), "{err}");
    let (code, _, err) =
        cli_code(&["submit", "--url", url, "--queue", "q", "--kind", "sleep", "--payload", r#"{"ms": "soon"}"#], None);
    assert_eq!(code, 6);
    assert!(err.contains("payload.ms"), "{err}");
    let (ok, out, err) =
        cli(&["submit", "--url", url, "--queue", "q", "--kind", "sleep", "--payload", r#"{"ms": 1}"#, "--wait"]);
    assert!(ok, "a matching payload runs: {out} {err}");
    let (ok, out, _) = cli(&["kinds", "ls", "--url", url]);
    assert!(ok);
    let line = out.lines().find(|l| l.starts_with("http.fetch")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("yes"), "the schema is shown: {out}");
}

/// `--expires`: a task no worker starts in time is dropped as `expired` (task wait exits 1 with
/// that state), an expiry not after the task is due is refused, and a retry by hand runs it.
#[test]
fn a_task_not_started_before_it_expires_is_dropped_as_expired() {
    let (_dir, server) = fresh_server();
    let url = server.url.as_str();
    let (ok, out, err) = cli(&["submit", "--url", url, "--queue", "nobody", "--kind", "echo", "--expires", "300ms"]);
    assert!(ok, "{err}");
    let id = out.trim().to_owned();
    let (_, shown, _) = cli(&["task", "get", &id, "--url", url]);
    assert!(shown.contains("expires:"), "{shown}");
    let (code, out, err) = cli_code(&["task", "wait", &id, "--json", "--timeout", "20s", "--url", url], None);
    assert_eq!(code, 1, "ended unsuccessfully: {out} {err}");
    let task: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((task["state"].as_str(), task["attempts"].as_u64()), (Some("expired"), Some(0)), "{out}");

    let (code, _, err) = cli_code(
        &["submit", "--url", url, "--queue", "nobody", "--kind", "echo", "--expires", "2020-01-01T00:00:00Z"],
        None,
    );
    assert_eq!(code, 6, "refused: {err}");
    assert!(err.contains("expires_at"), "{err}");
    let (code, _, err) = cli_code(&["submit", "--url", url, "--kind", "echo", "--expires", "soon"], None);
    assert_eq!(code, 2, "a usage error: {err}");

    let _worker = WorkerProcess::start(url, "nobody", &[]);
    let (ok, _, err) = cli(&["task", "retry", &id, "--url", url]);
    assert!(ok, "{err}");
    let (code, out, _) = cli_code(&["task", "wait", &id, "--json", "--timeout", "20s", "--url", url], None);
    assert_eq!(code, 0, "retried by hand, it runs: {out}");
}
