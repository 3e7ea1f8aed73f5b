//! Starting in the wrong order, as after a reboot or with a compose file: a worker started before
//! its server, and a server started before PostgreSQL answers, wait for the other (logging each
//! try) instead of exiting; a database that does not exist is said so at once.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{ServerProcess, WorkerProcess, cli};
use taskwarden_store::pg_testing::TestSchema;

const BIN: &str = env!("CARGO_BIN_EXE_taskwarden");

#[test]
fn a_worker_started_before_its_server_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(&url, "q", &["--concurrency", "2"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(worker.alive(), "the worker gave up while its server was not up yet");
    let _server = ServerProcess::start_on(dir.path(), port);
    let (ok, out, err) =
        cli(&["submit", "--url", &url, "--queue", "q", "--kind", "echo", "--wait", "--wait-timeout", "20s"]);
    assert!(ok, "the waiting worker ran the task: {out} {err}");
}

/// `url` as a key=value connection string, with its host and port replaced.
fn via(url: &str, port: u16, dbname: Option<&str>) -> (String, (String, u16)) {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP host, not {other:?}"),
    };
    let target = (host, config.get_ports().first().copied().unwrap_or(5432));
    let user = config.get_user().unwrap_or("postgres");
    let db = dbname.or(config.get_dbname()).unwrap_or("postgres");
    (format!("host=127.0.0.1 port={port} user={user} dbname={db}"), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_before_postgres_answers_waits_for_it() {
    let Some(schema) = TestSchema::new("startup").await else { return };
    let port = support::free_port();
    let (url, target) = via(&schema.url, port, None);
    let name = schema.name.clone();
    // Nothing listens on `port` yet: the server must keep trying.
    let starting = std::thread::spawn(move || ServerProcess::postgres(&url, &name, &[]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!starting.is_finished(), "the server should still be waiting for PostgreSQL");
    // Now PostgreSQL "comes up": a TCP proxy to the real one appears on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let server = tokio::task::spawn_blocking(move || starting.join().unwrap()).await.unwrap();
    let url = server.url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || cli(&["submit", "--url", &url, "--queue", "q", "--kind", "echo"]))
            .await
            .unwrap();
    assert!(ok, "{out} {err}");
    drop(server);
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_named_at_once() {
    let Some(schema) = TestSchema::new("nodb").await else { return };
    let config: tokio_postgres::Config = schema.url.parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let (url, _) = via(&schema.url, port, Some("taskwarden_no_such_database"));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--database", &url])
            .env("TASKWARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("taskwarden_no_such_database") && err.contains("does not exist"), "{err}");
    assert!(err.contains("createdb"), "with a hint: {err}");
    assert!(started.elapsed() < Duration::from_secs(20), "no retrying for a database that is not there");
}
