//! The dashboard's side of the server: `/` leads to `/ui/`, the page and its assets come from
//! the binary with their headers, and the search the task pages call answers over HTTP.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_its_headers() {
    let s = TestServer::start().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/ui/");
    let page = http.get(format!("{}/ui/", s.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let at = html.find("/ui/assets/").expect("the page names its assets");
    let version = html[at + "/ui/assets/".len()..].split('/').next().unwrap().to_owned();
    assert_eq!(version.len(), 16, "{version}");
    for (file, kind) in
        [("app.js", "text/javascript"), ("pages/tasks.js", "text/javascript"), ("style.css", "text/css")]
    {
        let asset = http.get(format!("{}/ui/assets/{version}/{file}", s.url)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{file}");
        assert!(asset.headers()["content-type"].to_str().unwrap().starts_with(kind), "{file}");
        assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"), "{file}");
    }
    let stale = http.get(format!("{}/ui/assets/0000000000000000/app.js", s.url)).send().await.unwrap();
    assert_eq!(stale.status(), 404, "another build's assets");
    let missing = http.get(format!("{}/ui/assets/{version}/nope.js", s.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn the_task_search_answers_over_http_and_names_what_is_wrong() {
    let s = TestServer::start().await;
    for id in [41, 42, 43] {
        s.submit(json!({"queue": "billing", "kind": "charge", "payload": {"customer_id": id}})).await;
    }
    s.submit(json!({"queue": "mail", "kind": "send", "payload": {"customer_id": 42}})).await;
    let (status, page) = s.call("GET", "/v1/tasks?q=payload.customer_id%3D42", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2, "{page}");
    let (_, page) = s.call("GET", "/v1/tasks?q=payload.customer_id%3D42&queue=billing", None).await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1, "q and the other parameters both hold");
    for (q, says) in [
        ("state%3Asleeping", "unknown state"),
        ("colour%3Ared", "unknown key"),
        ("queue%3Amail&queue=billing", "given twice"),
        ("error%3A%22open", "not closed"),
    ] {
        let (status, e) = s.call("GET", &format!("/v1/tasks?q={q}"), None).await;
        assert_eq!((status, e["error"]["field"].as_str()), (422, Some("q")), "{q}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{q}: {e}");
    }
    // A bulk call takes the same search: cancel what it matches, nothing else.
    let (status, done) =
        s.call("POST", "/v1/tasks/cancel", Some(json!({"q": "queue:billing payload.customer_id=42"}))).await;
    assert_eq!((status, done["changed"].as_u64()), (200, Some(1)), "{done}");
    let (_, cancelled) = s.call("GET", "/v1/tasks?state=cancelled", None).await;
    assert_eq!(cancelled["tasks"][0]["payload"]["customer_id"], 42);
    assert_eq!(cancelled["tasks"][0]["queue"], "billing");
    s.stop().await;
}

#[tokio::test]
async fn a_bulk_job_retries_everything_a_search_matches_with_its_progress() {
    const N: usize = 3000;
    let s = TestServer::start().await;
    let tasks: Vec<_> =
        (0..N).map(|i| json!({"queue": "q", "kind": "k", "max_attempts": 1, "payload": {"i": i}})).collect();
    for chunk in tasks.chunks(1000) {
        assert_eq!(s.call("POST", "/v1/tasks/batch", Some(json!({"tasks": chunk}))).await.0, 201);
    }
    s.fail_all("q", N, "boom").await;
    // A search that needs rows looked into (the error text): the job follows its short pages.
    let call = json!({"action": "retry", "filter": {"q": "queue:q error:boom"}});
    let (status, job) = s.call("POST", "/v1/tasks/jobs", Some(call)).await;
    assert_eq!((status, job["state"].as_str()), (202, Some("running")), "{job}");
    let path = format!("/v1/tasks/jobs/{}", job["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let (status, job) = s.call("GET", &path, None).await;
        assert_eq!(status, 200, "{job}");
        if job["state"] != "running" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not end: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!((done["matched"].as_u64(), done["changed"].as_u64()), (Some(N as u64), Some(N as u64)), "{done}");
    assert!(done["finished_at"].is_string() && done["started_by"].is_string(), "{done}");
    let (_, left) = s.call("GET", "/v1/tasks?state=failed&limit=1", None).await;
    assert!(left["tasks"].as_array().unwrap().is_empty(), "none left failed: {left}");
    // A job runs to the end: it takes no limit or cursor; an unknown job is 404.
    let (status, e) = s.call("POST", "/v1/tasks/jobs", Some(json!({"action": "cancel", "filter": {"limit": 5}}))).await;
    assert_eq!((status, e["error"]["field"].as_str()), (422, Some("filter.limit")), "{e}");
    assert_eq!(s.call("GET", "/v1/tasks/jobs/job-0000000000000000", None).await.0, 404);
    s.stop().await;
}
