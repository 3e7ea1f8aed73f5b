//! Security with real processes over real TCP: secure defaults, tokens through the CLI, TLS and
//! mutual TLS, slow and greedy clients, big bodies, and tokens shared by PostgreSQL nodes.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{BIN, ServerProcess, WorkerProcess, cli, free_port, peak_rss_mib};
use taskwarden_client::{Client, ClientOptions, SubmitTask, SubmitTaskExt};

/// Makes a token offline, straight in the embedded store, and returns its secret.
fn offline_token(data_dir: &Path, role: &str, name: &str, queues: &str) -> String {
    let dir = data_dir.display().to_string();
    let (ok, out, err) =
        cli(&["token", "create", "--data-dir", &dir, "--role", role, "--name", name, "--queues", queues]);
    assert!(ok, "{err}");
    let secret = out.trim().to_owned();
    assert!(secret.starts_with("tw_"), "only the secret on stdout: {out:?}");
    secret
}

#[test]
fn a_server_off_loopback_refuses_to_start_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let listen = format!("0.0.0.0:{}", free_port());
    let out = Command::new(BIN).args(["server", "--listen", &listen, "--data-dir", &data]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen") && err.contains("token create"), "{err}");

    // Told to, it serves, saying loudly what it does.
    let mut child = Command::new(BIN)
        .args(["server", "--listen", &listen, "--data-dir", &data, "--insecure-no-auth"])
        .env("TASKWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    let mut warning = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut warning).unwrap();
    assert!(warning.contains("WITHOUT AUTHENTICATION"), "{warning}");
    let _ = child.kill();
    let _ = child.wait();

    // With a token, it starts off loopback with nothing more to say.
    offline_token(dir.path(), "admin", "admin", "*");
    let mut child = Command::new(BIN)
        .args(["server", "--listen", &listen, "--data-dir", &data])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn tokens_made_with_the_cli_gate_submits_and_workers_by_role_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let admin = offline_token(dir.path(), "admin", "admin", "*");
    let server = ServerProcess::start(dir.path());
    let url = server.url.as_str();

    let (ok, _, err) = cli(&["submit", "--url", url, "--queue", "gpu.a100", "--kind", "echo"]);
    assert!(!ok && err.contains("401"), "no token: {err}");
    let create = |role: &str, name: &str, queues: &str| {
        let (ok, out, err) = cli(&[
            "token", "create", "--url", url, "--token", &admin, "--role", role, "--name", name, "--queues", queues,
        ]);
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
    let submitter = create("submit", "ci", "gpu.*");
    let gpu_worker = create("worker", "gpu-fleet", "gpu.*");

    let (ok, out, err) = cli(&["token", "ls", "--url", url, "--token", &admin, "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(!out.contains(&submitter) && !out.contains(&gpu_worker), "no secret is ever listed");

    // A worker token for gpu.* cannot serve billing: the worker is refused at registration.
    let mut wrong = WorkerProcess::start(url, "billing", &["--token", &gpu_worker]);
    let (status, err) = wrong.wait_output(Duration::from_secs(10));
    assert!(!status.success() && err.contains("billing"), "{err}");

    let _worker = WorkerProcess::start(url, "gpu.a100", &["--token", &gpu_worker]);
    let (ok, out, err) = cli(&[
        "submit",
        "--url",
        url,
        "--token",
        &submitter,
        "--queue",
        "gpu.a100",
        "--kind",
        "echo",
        "--payload",
        "7",
        "--wait",
        "--json",
    ]);
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((done["state"].as_str(), done["result"].as_i64()), (Some("succeeded"), Some(7)), "{out}");
    let (ok, _, err) = cli(&["submit", "--url", url, "--token", &submitter, "--queue", "billing", "--kind", "echo"]);
    assert!(!ok && err.contains("403") && err.contains("billing"), "{err}");
    let (ok, _, err) = cli(&["queue", "pause", "gpu.a100", "--url", url, "--token", &submitter]);
    assert!(!ok && err.contains("operator"), "a submit token cannot pause queues: {err}");

    let (ok, _, err) = cli(&["token", "revoke", "ci", "--url", url, "--token", &admin]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["submit", "--url", url, "--token", &submitter, "--queue", "gpu.a100", "--kind", "echo"]);
    assert!(!ok && err.contains("revoked"), "{err}");
    let (ok, out, err) = cli(&["audit", "ls", "--url", url, "--token", &admin, "--json"]);
    assert!(ok, "{err}");
    let log: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = log.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["token.create", "token.revoke", "denied"] {
        assert!(actions.contains(&want), "{want} in the audit log: {actions:?}");
    }
}

/// A certificate authority and what it signs, written as PEM files in `dir`.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Pki { ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap() }
    }

    /// Writes `{stem}.pem` and `{stem}.key` for a certificate for `names`; returns the paths.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> (String, String) {
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        // Written next to their place and renamed in, as an operator's tooling would.
        std::fs::write(dir.join("tmp.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("tmp.key"), key.serialize_pem()).unwrap();
        std::fs::rename(dir.join("tmp.key"), &key_path).unwrap();
        std::fs::rename(dir.join("tmp.pem"), &cert_path).unwrap();
        (cert_path.display().to_string(), key_path.display().to_string())
    }

    fn write_ca(&self, dir: &Path, stem: &str) -> String {
        let path = dir.join(format!("{stem}.pem"));
        std::fs::write(&path, self.ca.pem()).unwrap();
        path.display().to_string()
    }

    fn ca_pem(&self) -> Vec<u8> {
        self.ca.pem().into_bytes()
    }
}

fn tls_server(dir: &Path, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--data-dir".to_string(), dir.join("data").display().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut server = ServerProcess::start_with(args, free_port());
    server.url = server.url.replace("http://", "https://");
    server
}

fn https(url: &str, ca: Option<Vec<u8>>, identity: Option<Vec<u8>>) -> Client {
    Client::with_options(url, ClientOptions { token: None, ca_cert_pem: ca, identity_pem: identity }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_clients_and_workers_that_trust_its_ca_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("taskwarden test CA");
    let (cert, key) = pki.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let ca = pki.write_ca(dir.path(), "ca");
    let server = tls_server(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("https://"));

    let _worker = WorkerProcess::start(&server.url, "q", &["--ca-cert", &ca]);
    let client = https(&server.url, Some(pki.ca_pem()), None);
    let task = client.submit(SubmitTask::new("q", "echo").payload(&json!({"over": "tls"})).unwrap()).await.unwrap();
    let done = client.wait(task.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.result.unwrap().get(), r#"{"over":"tls"}"#, "a worker over HTTPS ran it");

    let stranger = Pki::new("another CA");
    let e = https(&server.url, Some(stranger.ca_pem()), None).ready().await.unwrap_err();
    assert!(e.to_string().contains("reach"), "a client trusting another CA is refused: {e}");
    let plain = server.url.replace("https://", "http://");
    assert!(Client::new(&plain).unwrap().ready().await.is_err(), "plain HTTP is not served");
    let (ok, _, err) = cli(&["task", "get", &task.id.to_string(), "--url", &server.url, "--ca-cert", &ca]);
    assert!(ok, "the CLI over HTTPS: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let (cert, key) = pki.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let client_ca = clients.write_ca(dir.path(), "client-ca");
    let server = tls_server(dir.path(), &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &client_ca]);

    let (worker_cert, worker_key) = clients.issue(dir.path(), "worker", &["worker-1"]);
    let identity = [std::fs::read(&worker_cert).unwrap(), std::fs::read(&worker_key).unwrap()].concat();
    https(&server.url, Some(pki.ca_pem()), Some(identity)).ready().await.expect("with a client certificate");
    assert!(https(&server.url, Some(pki.ca_pem()), None).ready().await.is_err(), "without one");
    let (rogue_cert, rogue_key) = Pki::new("rogue CA").issue(dir.path(), "rogue", &["rogue"]);
    let rogue = [std::fs::read(&rogue_cert).unwrap(), std::fs::read(&rogue_key).unwrap()].concat();
    assert!(https(&server.url, Some(pki.ca_pem()), Some(rogue)).ready().await.is_err(), "signed by another CA");

    let ca = pki.write_ca(dir.path(), "ca");
    let _worker = WorkerProcess::start(
        &server.url,
        "q",
        &["--ca-cert", &ca, "--client-cert", &worker_cert, "--client-key", &worker_key],
    );
    let (ok, out, err) = cli(&[
        "submit",
        "--url",
        &server.url,
        "--ca-cert",
        &ca,
        "--client-cert",
        &worker_cert,
        "--client-key",
        &worker_key,
        "--queue",
        "q",
        "--kind",
        "echo",
        "--payload",
        "5",
        "--wait",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["result"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_or_dropped_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (Pki::new("old CA"), Pki::new("new CA"));
    let (cert, key) = old.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let server = tls_server(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let both = [old.ca_pem(), new.ca_pem()].concat();
    let kept = https(&server.url, Some(both), None);
    kept.ready().await.unwrap();

    new.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let renewed = https(&server.url, Some(new.ca_pem()), None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while renewed.ready().await.is_err() {
        assert!(Instant::now() < deadline, "the new certificate is served within seconds");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(https(&server.url, Some(old.ca_pem()), None).ready().await.is_err(), "the old one is gone");
    kept.ready().await.expect("a client connected before the renewal still works");
    // SIGHUP reloads too (here: the same files, so nothing changes but the server stays up).
    support::signal(&server.child, "HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    renewed.ready().await.expect("still serving after SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_cannot_lock_out_a_normal_client() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> =
        ["--data-dir", &dir.path().display().to_string(), "--header-read-timeout", "1s", "--max-connections", "256"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let server = ServerProcess::start_with(args, free_port());
    let addr = format!("127.0.0.1:{}", server.port);

    // 500 clients that start a request and never finish its headers, and 3,000 that connect and
    // send nothing at all.
    let mut attackers = Vec::new();
    for i in 0..3500 {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(&addr).await else { continue };
        if i < 500 {
            let _ = tcp.write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await;
        }
        attackers.push(tcp);
    }
    let client = Client::new(&server.url).unwrap();
    let http = {
        taskwarden_client::install_tls_provider();
        reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        // A fresh connection each time: the hardest case, it must find room.
        let started = Instant::now();
        let resp = http.get(format!("{}/v1/queues", server.url)).timeout(Duration::from_secs(5)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(started.elapsed());
        client.ready().await.unwrap();
    }
    assert!(slowest < Duration::from_secs(1), "a normal client waited {slowest:?}");
    drop(attackers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_oversized_batches_keep_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // About 24 MiB each: a million tiny tasks, a hundred times the batch limit.
    let task = r#"{"queue":"q","kind":"e"}"#;
    let body = format!(r#"{{"tasks":[{}]}}"#, vec![task; (24 << 20) / (task.len() + 1)].join(","));
    assert!(body.len() > 23 << 20);
    taskwarden_client::install_tls_provider();
    let http = reqwest::Client::new();
    let sends = (0..4).map(|_| {
        let (http, url, body) = (http.clone(), format!("{}/v1/tasks/batch", server.url), body.clone());
        tokio::spawn(async move {
            let resp = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    });
    for send in sends {
        let (status, text) = send.await.unwrap();
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("at most 10000"), "{text}");
    }
    let peak = peak_rss_mib(server.child.id());
    println!("server peak RSS after four 24 MiB batches: {peak} MiB");
    // Four 24 MiB bodies may be held at once while each is read up to the batch limit: a debug
    // build peaks at 150-200 MiB here (201 once, beside the whole suite on two cores). A server
    // that parsed the million tasks of each would pass a gigabyte.
    assert!(peak < 256, "the server peaked at {peak} MiB");
    let c = Client::new(&server.url).unwrap();
    assert_eq!(c.list(&Default::default()).await.unwrap().tasks.len(), 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_hold_across_postgresql_nodes_and_revocation_reaches_them_within_a_second() {
    let Some(schema) = taskwarden_store::pg_testing::TestSchema::new("tokens").await else { return };
    let (ok, out, err) = cli(&[
        "token",
        "create",
        "--database",
        &schema.url,
        "--database-schema",
        &schema.name,
        "--role",
        "admin",
        "--name",
        "root",
    ]);
    assert!(ok, "{err}");
    let admin = out.trim().to_owned();
    let a = ServerProcess::postgres(&schema.url, &schema.name, &[]);
    let b = ServerProcess::postgres(&schema.url, &schema.name, &[]);
    let on = |url: &str, token: &str| {
        Client::with_options(url, ClientOptions { token: Some(token.into()), ..Default::default() }).unwrap()
    };
    let call = taskwarden_core::auth::CreateTokenCall {
        name: "ci".into(),
        role: taskwarden_core::auth::Role::Submit,
        queues: None,
        payloads: false,
        expires_in_s: None,
    };
    let created = on(&a.url, &admin).create_token(&call).await.unwrap();
    let ci_on_b = on(&b.url, &created.token);
    let deadline = Instant::now() + Duration::from_secs(1);
    while ci_on_b.submit(SubmitTask::new("q", "echo")).await.is_err() {
        assert!(Instant::now() < deadline, "a token made on node A works on node B within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    on(&a.url, &admin).revoke_token("ci").await.unwrap();
    let revoked_at = Instant::now();
    loop {
        match ci_on_b.submit(SubmitTask::new("q", "echo")).await {
            Err(e) if e.status() == Some(401) => break,
            _ => assert!(revoked_at.elapsed() < Duration::from_secs(1), "node B refuses it within a second"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("node B refused the revoked token {:?} after node A revoked it", revoked_at.elapsed());
}

#[test]
fn bad_security_settings_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let config = dir.path().join("taskwarden.toml");
    for (file, flags, named) in [
        ("", vec!["--max-connections", "1"], "max_connections"),
        ("", vec!["--header-read-timeout", "1ms"], "header_read_timeout"),
        ("allowed_hosts = [\"bad host\"]\n", vec![], "allowed_hosts"),
        ("tls_cert = \"cert.pem\"\n", vec![], "tls_cert and tls_key"),
        ("max_json_depth = 1\n", vec![], "max_json_depth"),
    ] {
        std::fs::write(&config, file).unwrap();
        let cfg = config.display().to_string();
        let mut args = vec!["server", "--listen", "127.0.0.1:0", "--data-dir", &data, "--config", &cfg];
        args.extend(flags);
        let (ok, _, err) = cli(&args);
        assert!(!ok && err.contains(named), "{named}: {err}");
    }
}
