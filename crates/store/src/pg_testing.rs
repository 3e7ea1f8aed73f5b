//! For tests against a real PostgreSQL: find it, and give each test a schema of its own.
//!
//! The database comes from `TASKWARDEN_TEST_DATABASE_URL` (default: the local
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, tests skip and say why
//! on stderr, unless `TASKWARDEN_REQUIRE_POSTGRES` is set (CI sets it), which makes them fail.

use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;

pub const DATABASE_ENV: &str = "TASKWARDEN_TEST_DATABASE_URL";
pub const REQUIRE_ENV: &str = "TASKWARDEN_REQUIRE_POSTGRES";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The test database's URL, or `None` (having said why) when it is out of reach and not required.
pub async fn test_database() -> Option<String> {
    let url = std::env::var(DATABASE_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let reached = async {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(std::time::Duration::from_secs(3));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.map(drop)
    }
    .await;
    match reached {
        Ok(()) => Some(url),
        Err(e) if required() => panic!("PostgreSQL at {url} is required ({REQUIRE_ENV} is set) but unreachable: {e}"),
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL at {url} is unreachable ({e}); set {DATABASE_ENV} to point at one, \
                 or {REQUIRE_ENV}=1 to fail instead of skipping"
            );
            None
        }
    }
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A schema that exists for one test and is dropped (with everything in it) afterwards.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// A fresh schema name in the test database; `None` when the test should skip.
    pub async fn new(prefix: &str) -> Option<TestSchema> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = test_database().await?;
        let name = format!(
            "tw_{prefix}_{}_{}_{:06x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::rng().random::<u32>() & 0xff_ffff
        );
        Some(TestSchema { url, name })
    }

    pub fn config(&self) -> crate::PgConfig {
        crate::PgConfig { schema: self.name.clone(), ..crate::PgConfig::new(&self.url) }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Its own thread and runtime: a drop cannot await, and may run inside a runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let (client, connection) =
                    url.parse::<tokio_postgres::Config>().ok()?.connect(tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.ok()
            })
        });
        let _ = dropped.join();
    }
}
