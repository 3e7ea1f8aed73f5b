//! Taskwarden's server: the HTTP API and the background loops, over any [`Store`].
//!
//! - `api`: routes and handlers (thin: validate, call the store, map the answer).
//! - `maintenance`: lease expiry and delayed-task promotion loops.
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
mod clock;
mod config;
mod error;
mod maintenance;
mod scheduling;

use std::sync::Arc;

use axum::serve::ListenerExt;
use taskwarden_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock};
pub use config::{ServerConfig, default_node_name};
pub use maintenance::LoopSignals;

/// Serves the API on `listener` until `shutdown` fires, then stops taking connections, lets
/// in-flight requests finish (long-polls return at once) and stops the background loops.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    Server::start(store, config, Arc::new(SystemClock), shutdown).run(listener).await
}

/// A server assembled but not yet listening; gives tests the loops' signals.
pub struct Server {
    router: axum::Router,
    shutdown: CancellationToken,
    loops: Vec<tokio::task::JoinHandle<()>>,
    pub signals: LoopSignals,
}

impl Server {
    pub fn start(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Server {
        let (signals, loops) = maintenance::spawn(store.clone(), clock.clone(), &config, shutdown.clone());
        let leader = signals.leader.clone();
        let state = api::AppState { store, config: Arc::new(config), clock, shutdown: shutdown.clone(), leader };
        Server { router: api::router(state), shutdown, loops, signals }
    }

    pub async fn run(self, listener: TcpListener) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        // Small request/response pairs on kept-alive connections: without TCP_NODELAY, Nagle's
        // algorithm meets delayed ACKs and a reply can sit for tens of milliseconds.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
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
        for (method, path) in crate::api::ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} is missing from openapi.json");
        }
        let documented = doc["paths"].as_object().unwrap();
        for (path, ops) in documented {
            for method in ops.as_object().unwrap().keys() {
                assert!(
                    crate::api::ROUTES.contains(&(method.as_str(), path.as_str())),
                    "openapi.json documents {method} {path}, which the server does not serve"
                );
            }
        }
    }
}
