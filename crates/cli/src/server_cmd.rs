//! `taskwarden server`: merges the config file, environment and flags into one config, opens the
//! store (SQLite by default, PostgreSQL with `--database`) and calls `serve`. Also `taskwarden
//! migrate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use taskwarden_server::ServerConfig;
use taskwarden_store::{Durability, PgConfig, PgStore, SqliteConfig, SqliteStore, Store};

use crate::args::{BackupArgs, DatabaseArgs, MigrateArgs, RestoreArgs, ServerArgs};

/// The config file's shape. Every key is optional; flags and environment variables win.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    durability: Option<String>,
    max_payload_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_batch: Option<usize>,
    idempotency_window_secs: Option<u64>,
    default_lease_timeout_ms: Option<u64>,
    default_timeout_ms: Option<u64>,
    default_max_attempts: Option<u32>,
    database: Option<String>,
    database_schema: Option<String>,
    database_pool: Option<usize>,
    database_wait_ms: Option<u64>,
    node_name: Option<String>,
    leader_lease_ms: Option<u64>,
    retention: Option<String>,
    prune_interval_ms: Option<u64>,
    aging: Option<String>,
    insecure_no_auth: Option<bool>,
    no_event_log: Option<bool>,
    no_metrics: Option<bool>,
    allowed_hosts: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    header_read_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_json_depth: Option<usize>,
    audit_retention: Option<String>,
    event_retention: Option<String>,
    stats_retention: Option<String>,
    stats_interval_ms: Option<u64>,
    webhook_allow: Option<Vec<String>>,
    metrics_listen: Option<std::net::SocketAddr>,
    /// NAME -> bucket upper bounds in seconds.
    metrics_buckets: Option<std::collections::BTreeMap<String, Vec<f64>>>,
    metrics_label_cap: Option<usize>,
}

/// Where the tasks live.
pub enum Database {
    Sqlite(SqliteConfig),
    /// With how long to keep trying while the database cannot be reached at start.
    Postgres(PgConfig, Duration),
}

/// How long a server keeps trying to reach PostgreSQL at start unless told.
const DATABASE_WAIT: Duration = Duration::from_secs(60);

impl Database {
    pub fn resolve(args: DatabaseArgs, data_dir: PathBuf, durability: Durability, aging: Option<Duration>) -> Database {
        match args.database {
            Some(url) => {
                let mut config = PgConfig { aging, ..PgConfig::new(url) };
                if let Some(schema) = args.database_schema {
                    config.schema = schema;
                }
                if let Some(pool) = args.database_pool {
                    config.pool_size = pool;
                }
                Database::Postgres(config, args.database_wait.unwrap_or(DATABASE_WAIT))
            }
            None => Database::Sqlite(SqliteConfig { durability, aging, ..SqliteConfig::new(database_file(&data_dir)) }),
        }
    }

    /// Whether the store keeps the event log (it does unless told).
    pub fn with_event_log(mut self, on: bool) -> Database {
        match &mut self {
            Database::Sqlite(c) => c.event_log = on,
            Database::Postgres(c, _) => c.event_log = on,
        }
        self
    }

    /// Where, for people: the file, or the database without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(c) => c.path.display().to_string(),
            Database::Postgres(c, _) => {
                format!("{} (schema {})", hide_password(&c.url), c.schema)
            }
        }
    }

    pub async fn open(self, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
        let described = self.describe();
        Ok(match self {
            Database::Sqlite(c) => Arc::new(SqliteStore::open(c).with_context(|| format!("opening {described}"))?),
            Database::Postgres(c, wait) => Arc::new(
                open_when_up(PgConfig { migrate, ..c }, wait).await.with_context(|| format!("opening {described}"))?,
            ),
        })
    }
}

/// Opens the PostgreSQL store, trying again while the database cannot be reached (it may be
/// starting alongside this server) for up to `wait`, with a line in the log each time. Any other
/// error (a database that does not exist, a wrong password) ends at once.
async fn open_when_up(config: PgConfig, wait: Duration) -> Result<PgStore, taskwarden_store::StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match PgStore::open(config.clone()).await {
            Err(taskwarden_store::StoreError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tracing::warn!("PostgreSQL is not reachable yet ({why}); retrying for up to {}s more", left.as_secs());
                tokio::time::sleep(Duration::from_secs(1).min(left)).await;
            }
            other => return other,
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn hide_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((auth, host)) = rest.rsplit_once('@')
        && let Some((user, _)) = auth.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

pub struct Resolved {
    pub listen: String,
    pub database: Database,
    pub migrate: bool,
    pub server: ServerConfig,
}

pub fn resolve(args: ServerArgs) -> anyhow::Result<Resolved> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut server = ServerConfig::default();
    let l = &mut server.limits;
    if let Some(v) = file.max_payload_bytes {
        l.max_payload_bytes = v;
    }
    if let Some(v) = file.max_batch {
        l.max_batch = v;
    }
    if let Some(v) = file.default_lease_timeout_ms {
        l.default_lease_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.default_timeout_ms {
        l.default_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.default_max_attempts {
        l.default_max_attempts = v;
    }
    if let Some(v) = file.max_body_bytes {
        server.max_body_bytes = v;
    }
    if let Some(v) = file.idempotency_window_secs {
        server.idempotency_window = Duration::from_secs(v);
    }
    if let Some(v) = args.node_name.or(file.node_name) {
        server.node_name = v;
    }
    if let Some(v) = args.leader_lease.or(file.leader_lease_ms.map(Duration::from_millis)) {
        server.leader_lease = v;
    }
    if let Some(v) = args.prune_interval.or(file.prune_interval_ms.map(Duration::from_millis)) {
        server.prune_interval = v;
    }
    if let Some(v) = args.retention.or(file.retention) {
        server.retention = match v.as_str() {
            "forever" => None,
            d => Some(humantime::parse_duration(d).with_context(|| format!("retention {d:?}"))?),
        };
    }
    server.insecure_no_auth = args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false);
    let hosts = if args.allowed_hosts.is_empty() { file.allowed_hosts.unwrap_or_default() } else { args.allowed_hosts };
    server.allowed_hosts = hosts.into_iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect();
    match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => {
            server.tls = Some(taskwarden_server::TlsConfig { cert, key, client_ca: args.client_ca.or(file.client_ca) })
        }
        (None, None) => {}
        _ => bail!("invalid configuration: tls_cert and tls_key go together"),
    }
    let ms = |v: Option<u64>| v.map(Duration::from_millis);
    let h = &mut server.http;
    if let Some(v) = args.header_read_timeout.or(ms(file.header_read_timeout_ms)) {
        h.header_read_timeout = v;
    }
    if let Some(v) = args.body_read_timeout.or(ms(file.body_read_timeout_ms)) {
        h.body_read_timeout = v;
    }
    if let Some(v) = args.idle_timeout.or(ms(file.idle_timeout_ms)) {
        h.idle_timeout = v;
    }
    if let Some(v) = args.max_connections.or(file.max_connections) {
        h.max_connections = v;
    }
    if let Some(v) = args.max_json_depth.or(file.max_json_depth) {
        server.limits.max_json_depth = v;
    }
    if let Some(v) = args.audit_retention.or(file.audit_retention) {
        server.audit_retention = humantime::parse_duration(&v).with_context(|| format!("audit_retention {v:?}"))?;
    }
    if let Some(v) = args.event_retention.or(file.event_retention) {
        server.event_retention = humantime::parse_duration(&v).with_context(|| format!("event_retention {v:?}"))?;
    }
    if let Some(v) = args.stats_retention.or(file.stats_retention) {
        server.stats_retention = humantime::parse_duration(&v).with_context(|| format!("stats_retention {v:?}"))?;
    }
    if let Some(v) = args.stats_interval.or(file.stats_interval_ms.map(Duration::from_millis)) {
        server.stats_interval = v;
    }
    let allow = if args.webhook_allow.is_empty() { file.webhook_allow.unwrap_or_default() } else { args.webhook_allow };
    server.webhook_allow =
        taskwarden_core::address::AllowRule::parse_list(&allow.join(",")).context("--webhook-allow")?;
    server.event_log = !(args.no_event_log || file.no_event_log.unwrap_or(false));
    server.metrics.enabled = !(args.no_metrics || file.no_metrics.unwrap_or(false));
    server.metrics_listen = args.metrics_listen.or(file.metrics_listen);
    if server.metrics_listen.is_some() && !server.metrics.enabled {
        bail!("invalid configuration: metrics_listen serves /metrics, which no_metrics turns off");
    }
    server.traces = args.otlp_endpoint.is_some();
    if let Some(v) = args.metrics_label_cap.or(file.metrics_label_cap) {
        server.metrics.label_cap = v;
    }
    let mut buckets = file.metrics_buckets.unwrap_or_default();
    for spec in args.metrics_buckets.iter().filter(|s| !s.trim().is_empty()) {
        let (name, bounds) = parse_buckets(spec)?;
        buckets.insert(name, bounds);
    }
    for (name, bounds) in buckets {
        set_buckets(&mut server.metrics, &name, bounds)?;
    }
    if let Err(e) = server.validate() {
        bail!("invalid configuration: {e}");
    }
    let aging = match args.aging.or(file.aging).as_deref() {
        None => Some(taskwarden_store::DEFAULT_AGING),
        Some("off") => None,
        Some(d) => Some(humantime::parse_duration(d).with_context(|| format!("aging {d:?}"))?).filter(|d| !d.is_zero()),
    };
    let durability = args.durability.or(file.durability).unwrap_or_else(|| "full".into());
    let durability = durability.parse().map_err(|e: String| anyhow::anyhow!("durability: {e}"))?;
    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("taskwarden-data"));
    let database = DatabaseArgs {
        database: args.database.database.or(file.database),
        database_schema: args.database.database_schema.or(file.database_schema),
        database_pool: args.database.database_pool.or(file.database_pool),
        database_wait: args.database.database_wait.or(file.database_wait_ms.map(Duration::from_millis)),
    };
    Ok(Resolved {
        listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7433".into()),
        database: Database::resolve(database, data_dir, durability, aging).with_event_log(server.event_log),
        migrate: !args.no_migrate,
        server,
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = resolve(args)?;
    let described = cfg.database.describe();
    let store = cfg.database.open(cfg.migrate).await?;
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    // Printed on stdout so scripts (and tests using port 0) can read the address.
    let scheme = if cfg.server.tls.is_some() { "https" } else { "http" };
    println!("taskwarden server listening on {scheme}://{addr} (data: {described}, node: {})", cfg.server.node_name);
    tracing::info!(%addr, data = %described, node = %cfg.server.node_name, "server started");
    let shutdown = crate::signal::shutdown_token();
    taskwarden_server::serve(listener, store.clone(), cfg.server, shutdown).await?;
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the store failed; the next start will recover what it kept");
    }
    tracing::info!("server stopped");
    Ok(())
}

/// `taskwarden migrate`: applies pending migrations and says what it did.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("taskwarden-data"));
    let database = Database::resolve(args.database, data_dir, Durability::Full, None);
    let described = database.describe();
    match database {
        Database::Sqlite(c) => {
            // Opening the embedded store applies its migrations (none of which drops data).
            SqliteStore::open(c).with_context(|| format!("migrating {described}"))?;
            println!("{described}: schema is up to date");
        }
        Database::Postgres(c, _) => {
            let report =
                PgStore::migrate(&c, args.allow_destructive).await.with_context(|| format!("migrating {described}"))?;
            for applied in &report.applied {
                println!("applied: {applied}");
            }
            println!("{described}: schema version {} -> {}", report.from, report.to);
        }
    }
    Ok(())
}

/// The embedded store's file in `data_dir`.
fn database_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("taskwarden.db")
}

/// A backup's or restore's error: `missing` when its source is not there, else what it was doing.
fn copy_failed(e: taskwarden_store::StoreError, missing: String, doing: String) -> anyhow::Error {
    match e {
        taskwarden_store::StoreError::NotFound => anyhow::anyhow!(missing),
        e => anyhow::Error::new(e).context(doing),
    }
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let db = database_file(&args.data_dir);
    let report = SqliteStore::backup(&db, &args.out).map_err(|e| {
        copy_failed(e, format!("no embedded store at {}", db.display()), format!("backing up {}", db.display()))
    })?;
    println!("backed up {} to {} ({} bytes, {} tasks)", db.display(), args.out.display(), report.bytes, report.tasks);
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let db = database_file(&args.data_dir);
    let from = args.backup.display();
    let report = SqliteStore::restore(&args.backup, &db, args.replace)
        .map_err(|e| copy_failed(e, format!("no backup at {from}"), format!("restoring {from}")))?;
    println!(
        "restored {} into {} ({} bytes, {} tasks; {} running tasks' leases expired: they run again)",
        from,
        db.display(),
        report.bytes,
        report.tasks,
        report.leases_expired
    );
    Ok(())
}

/// `NAME=B1,B2,...` of `--metrics-buckets`.
fn parse_buckets(spec: &str) -> anyhow::Result<(String, Vec<f64>)> {
    let (name, list) =
        spec.split_once('=').with_context(|| format!("metrics bucket spec {spec:?}: expected NAME=B1,B2,..."))?;
    let bounds = list
        .split(',')
        .map(|b| {
            b.trim().parse::<f64>().with_context(|| format!("metrics buckets {name}: {b:?} is not a number of seconds"))
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok((name.trim().to_owned(), bounds))
}

/// Sets one histogram's buckets: positive, increasing bounds.
fn set_buckets(metrics: &mut taskwarden_server::MetricsConfig, name: &str, bounds: Vec<f64>) -> anyhow::Result<()> {
    if bounds.is_empty()
        || bounds.iter().any(|b| !b.is_finite() || *b <= 0.0)
        || bounds.windows(2).any(|w| w[0] >= w[1])
    {
        bail!("metrics buckets {name}: give positive, increasing bounds in seconds");
    }
    let slot = match name {
        "queue_wait" => &mut metrics.queue_wait_buckets,
        "run" => &mut metrics.run_buckets,
        "end_to_end" => &mut metrics.end_to_end_buckets,
        other => bail!("metrics buckets: unknown histogram {other:?}; expected queue_wait, run or end_to_end"),
    };
    *slot = bounds;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_buckets_take_increasing_positive_seconds_for_a_known_histogram() {
        let mut m = taskwarden_server::MetricsConfig::default();
        let (name, bounds) = parse_buckets("run=0.5, 1,10").unwrap();
        set_buckets(&mut m, &name, bounds).unwrap();
        assert_eq!(m.run_buckets, vec![0.5, 1.0, 10.0]);
        assert!(parse_buckets("run").is_err());
        assert!(parse_buckets("run=1,x").is_err());
        assert!(set_buckets(&mut m, "run", vec![1.0, 1.0]).is_err());
        assert!(set_buckets(&mut m, "run", vec![-1.0]).is_err());
        assert!(set_buckets(&mut m, "latency", vec![1.0]).is_err());
    }
}
