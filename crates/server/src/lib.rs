//! Taskwarden's server: the HTTP API and the background loops, over any [`Store`].
//!
//! - `api`: routes and handlers (thin: validate, call the store, map the answer).
//! - `auth`: who is calling (tokens, looked up in memory) and the [`Caller`] every handler names.
//! - `guard`: checks before routing (body size by `Content-Length`, `Host`, `Origin`, JSON type).
//! - `maintenance`: lease expiry and delayed-task promotion loops.
//! - `metrics`: Prometheus metrics, and the store wrapper that counts tasks for them.
//! - `ui`: the web dashboard's files, carried in the binary and served under `/ui`.
//! - [`ServerConfig`]: the settings; [`Clock`]: the server's time source.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use taskwarden_server::{ServerConfig, serve};
//! use taskwarden_store::{SqliteConfig, SqliteStore};
//!
//! let store = Arc::new(SqliteStore::open(SqliteConfig::new("data/taskwarden.db")).unwrap());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7433").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(listener, store, ServerConfig::default(), shutdown).await
//! # }
//! ```

mod api;
mod auth;
mod clock;
mod config;
mod connections;
mod error;
mod guard;
mod maintenance;
mod metrics;
mod payload_schemas;
mod scheduling;
mod tls;
mod traces;
mod ui;
mod webhooks;

use std::sync::Arc;

use taskwarden_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock};
pub use config::{HttpConfig, ServerConfig, default_node_name};
pub use maintenance::LoopSignals;
pub use metrics::MetricsConfig;
pub use tls::TlsConfig;

/// Serves the API on `listener` until `shutdown` fires, then stops taking connections, lets
/// in-flight requests finish (long-polls return at once) and stops the background loops.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let clock = clock::for_store(store.clone(), shutdown.clone()).await;
    Server::start(store, config, clock, shutdown).run(listener).await
}

/// A server assembled but not yet listening; gives tests the loops' signals.
pub struct Server {
    router: axum::Router,
    /// `/metrics` alone, for `metrics_listen`.
    metrics_router: axum::Router,
    shutdown: CancellationToken,
    loops: Vec<tokio::task::JoinHandle<()>>,
    pub signals: LoopSignals,
    access: Arc<auth::Access>,
    config: Arc<ServerConfig>,
    clock: Arc<dyn Clock>,
}

/// Refuses to serve anything but loopback without authentication (unless told to, loudly).
fn check_exposure(addr: std::net::SocketAddr, auth_on: bool, insecure: bool) -> std::io::Result<()> {
    if auth_on || addr.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::error!(
            %addr,
            "SERVING WITHOUT AUTHENTICATION on a non-loopback address (--insecure-no-auth): anyone who can \
             reach this port can submit, cancel and complete tasks. Create a token to turn authentication on."
        );
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "refusing to listen on {addr} without authentication: create an admin token first \
             (taskwarden token create --role admin --name admin --data-dir DIR, or --database URL), \
             or pass --insecure-no-auth"
        ),
    ))
}

impl Server {
    pub fn start(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Server {
        let metrics = Arc::new(metrics::Metrics::new(&config.metrics, &config.node_name));
        let store: Arc<dyn Store> = match config.metrics.enabled {
            true => Arc::new(metrics::MeteredStore::new(store, metrics.clone())),
            false => store,
        };
        let (signals, loops) = maintenance::spawn(store.clone(), clock.clone(), &config, shutdown.clone());
        let leader = signals.leader.clone();
        let access = Arc::new(auth::Access::new(store.clone()));
        let guard = guard::Guard {
            access: access.clone(),
            allowed_hosts: config.allowed_hosts().into(),
            always_check_host: !config.allowed_hosts.is_empty(),
            never_check_host: config.allowed_hosts.iter().any(|h| h == "*"),
            max_body_bytes: config.max_body_bytes,
        };
        let config = Arc::new(config);
        let state = api::AppState {
            schemas: Arc::new(payload_schemas::PayloadSchemas::new(store.clone())),
            store,
            config: config.clone(),
            clock: clock.clone(),
            shutdown: shutdown.clone(),
            leader,
            leader_node: signals.leader_node.clone(),
            access: access.clone(),
            metrics,
            traces: Arc::new(traces::Traces::new(config.traces)),
            bulk_jobs: Default::default(),
        };
        let metrics_router = api::metrics_only(state.clone());
        Server { router: api::router(state, guard), metrics_router, shutdown, loops, signals, access, config, clock }
    }

    /// Serves on `listener`. Refuses to start on an address other than loopback while no token
    /// exists, unless the configuration says `insecure_no_auth`.
    pub async fn run(mut self, listener: TcpListener) -> std::io::Result<()> {
        self.access.refresh().await.map_err(|e| std::io::Error::other(format!("cannot read the tokens: {e}")))?;
        let addr = listener.local_addr()?;
        check_exposure(addr, self.access.required(), self.config.insecure_no_auth)?;
        self.loops.push(auth::spawn_refresh(
            self.access.clone(),
            self.clock.clone(),
            &self.config,
            self.shutdown.clone(),
        ));
        let tls = match &self.config.tls {
            Some(cfg) => Some(tls::acceptor(cfg, self.shutdown.clone())?),
            None => None,
        };
        if let Some(addr) = self.config.metrics_listen {
            let metrics = TcpListener::bind(addr).await?;
            tracing::info!(addr = %metrics.local_addr()?, "serving /metrics without a token");
            let shutdown = self.shutdown.clone();
            let router = self.metrics_router.clone();
            self.loops.push(tokio::spawn(async move {
                let serving = axum::serve(metrics, router).with_graceful_shutdown(shutdown.cancelled_owned());
                if let Err(e) = serving.await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            }));
        }
        let http = self.config.http.clone();
        connections::serve(listener, self.router, http, tls, self.shutdown.clone()).await?;
        for handle in self.loops {
            let _ = handle.await;
        }
        Ok(())
    }
}

/// The OpenAPI document the server serves at `/openapi.json`.
pub fn openapi_document() -> &'static str {
    api::openapi()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(crate::openapi_document()).expect("valid JSON");
        for (method, path, _) in crate::api::ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing from openapi.json");
        }
        let documented = doc["paths"].as_object().unwrap();
        for (path, ops) in documented {
            for method in ops.as_object().unwrap().keys() {
                assert!(
                    crate::api::ROUTES.iter().any(|(m, p, _)| (*m, *p) == (method.as_str(), path.as_str())),
                    "openapi.json documents {method} {path}, which the server does not serve"
                );
            }
        }
    }
}
