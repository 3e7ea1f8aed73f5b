//! A long-poll that outlives the idle timeout neither spins nor is cut off. In a test binary of
//! its own: it measures this process's CPU time, which other tests running beside it in the same
//! process would add to (each test server's start builds the router and its OpenAPI document).

mod support;

use std::time::Duration;

use serde_json::json;
use support::TestServer;
use taskwarden_server::ServerConfig;

/// This process's CPU time so far (user + system), from /proc (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_idle_timeout_neither_spins_nor_is_cut_off() {
    let mut config = ServerConfig::default();
    config.http.idle_timeout = Duration::from_millis(100);
    let s = TestServer::with_config(config).await;
    let id = s.submit(json!({"queue": "q", "kind": "echo"})).await["id"].as_str().unwrap().to_owned();
    let before = cpu_time();
    let (status, task) = s.call("GET", &format!("/v1/tasks/{id}/wait?timeout_ms=1500"), None).await;
    let burnt = cpu_time() - before;
    assert_eq!((status, task["state"].as_str()), (200, Some("ready")), "the long-poll ran to its end: {task}");
    // Before the fix, the idle check woke without end once a request outlived the idle timeout.
    assert!(burnt < Duration::from_millis(500), "a 1.5 s long-poll cost {burnt:?} of CPU");
    s.stop().await;
}
