//! `taskwarden server`: merges the config file, environment and flags into one config, opens the
//! store and calls `serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use taskwarden_server::ServerConfig;
use taskwarden_store::{Durability, SqliteConfig, SqliteStore};

use crate::args::ServerArgs;

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
}

pub struct Resolved {
    pub listen: String,
    pub data_dir: PathBuf,
    pub durability: Durability,
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
    if let Err(e) = server.validate() {
        bail!("invalid configuration: {e}");
    }
    let durability = args.durability.or(file.durability).unwrap_or_else(|| "full".into());
    Ok(Resolved {
        listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7433".into()),
        data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("taskwarden-data")),
        durability: durability.parse().map_err(|e: String| anyhow::anyhow!("durability: {e}"))?,
        server,
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = resolve(args)?;
    let db = cfg.data_dir.join("taskwarden.db");
    let store = SqliteStore::open(SqliteConfig { durability: cfg.durability, ..SqliteConfig::new(&db) })
        .with_context(|| format!("opening {}", db.display()))?;
    let listener =
        tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    // Printed on stdout so scripts (and tests using port 0) can read the address.
    println!("taskwarden server listening on http://{addr} (data: {})", db.display());
    tracing::info!(%addr, db = %db.display(), durability = ?cfg.durability, "server started");
    let shutdown = crate::signal::shutdown_token();
    taskwarden_server::serve(listener, Arc::new(store), cfg.server, shutdown).await?;
    tracing::info!("server stopped");
    Ok(())
}
