//! The HTTP API: routing and shared state. Handlers validate input, call the store and map the
//! answer; the rules themselves live in the core.
//!
//! - `tasks`: submit, inspect, list, wait for, cancel and retry tasks.
//! - `workers`: the worker protocol (register, fetch, heartbeat, report) and the single-lease calls.
//! - `workflows`: submit, get, wait for and cancel workflows; a task's parents' results.
//! - `queues`: list queues with their counts; pause, resume, weigh and limit them.
//! - `cron`: cron schedules.
//! - `health`: liveness, readiness and the OpenAPI document.

mod cron;
mod health;
pub(crate) use health::openapi;
mod queues;
mod tasks;
mod workers;
mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use taskwarden_store::Store;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::error::{ApiError, BodyLimit};

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    /// Fired when the server begins shutting down: long-polls return at once.
    pub shutdown: CancellationToken,
    /// Whether this node holds the leader lease (runs the background loops).
    pub leader: tokio::sync::watch::Receiver<bool>,
}

/// Every route, in one place. The OpenAPI document lists the same paths (a test keeps them equal).
#[cfg(test)]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("post", "/v1/tasks"),
    ("get", "/v1/tasks"),
    ("post", "/v1/tasks/batch"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/v1/tasks/{id}/wait"),
    ("post", "/v1/tasks/{id}/cancel"),
    ("post", "/v1/tasks/{id}/retry"),
    ("post", "/v1/tasks/{id}/complete"),
    ("post", "/v1/tasks/{id}/fail"),
    ("post", "/v1/tasks/{id}/heartbeat"),
    ("post", "/v1/tasks/{id}/progress"),
    ("post", "/v1/tasks/{id}/release"),
    ("post", "/v1/workers"),
    ("get", "/v1/workers"),
    ("post", "/v1/workers/{id}/fetch"),
    ("post", "/v1/workers/{id}/heartbeat"),
    ("post", "/v1/workers/{id}/reports"),
    ("get", "/v1/tasks/{id}/parents"),
    ("post", "/v1/tasks/{id}/fan-out"),
    ("post", "/v1/workflows"),
    ("get", "/v1/workflows/{id}"),
    ("get", "/v1/workflows/{id}/wait"),
    ("post", "/v1/workflows/{id}/cancel"),
    ("get", "/v1/queues"),
    ("patch", "/v1/queues/{name}"),
    ("post", "/v1/queues/{name}/pause"),
    ("post", "/v1/queues/{name}/resume"),
    ("post", "/v1/cron"),
    ("get", "/v1/cron"),
    ("delete", "/v1/cron/{name}"),
    ("post", "/v1/cron/{name}/pause"),
    ("post", "/v1/cron/{name}/resume"),
];

pub(crate) fn router(state: AppState) -> Router {
    let limit = BodyLimit(state.config.max_body_bytes);
    Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/openapi.json", get(health::openapi_json))
        .route("/v1/tasks", post(tasks::submit).get(tasks::list))
        .route("/v1/tasks/batch", post(tasks::submit_batch))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/wait", get(tasks::wait))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/v1/tasks/{id}/retry", post(tasks::retry))
        .route("/v1/tasks/{id}/complete", post(workers::complete_one))
        .route("/v1/tasks/{id}/fail", post(workers::fail_one))
        .route("/v1/tasks/{id}/heartbeat", post(workers::heartbeat_one))
        .route("/v1/tasks/{id}/progress", post(workers::progress_one))
        .route("/v1/tasks/{id}/release", post(workers::release_one))
        .route("/v1/workers", post(workers::register).get(workers::list))
        .route("/v1/workers/{id}/fetch", post(workers::fetch))
        .route("/v1/workers/{id}/heartbeat", post(workers::heartbeat))
        .route("/v1/workers/{id}/reports", post(workers::reports))
        .route("/v1/tasks/{id}/parents", get(workflows::parents))
        .route("/v1/tasks/{id}/fan-out", post(workflows::fan_out))
        .route("/v1/workflows", post(workflows::submit))
        .route("/v1/workflows/{id}", get(workflows::get))
        .route("/v1/workflows/{id}/wait", get(workflows::wait))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{name}", patch(queues::set))
        .route("/v1/queues/{name}/pause", post(queues::pause))
        .route("/v1/queues/{name}/resume", post(queues::resume))
        .route("/v1/cron", post(cron::create).get(cron::list))
        .route("/v1/cron/{name}", delete(cron::delete))
        .route("/v1/cron/{name}/pause", post(cron::pause))
        .route("/v1/cron/{name}/resume", post(cron::resume))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(move |mut req: Request, next: Next| async move {
            req.extensions_mut().insert(limit);
            next.run(req).await
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route; see /openapi.json",
    )
}

/// Kept for handlers' signatures: a response or an API error.
pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// The `?timeout_ms=` of a long-poll (default 30 s, at most the server's `max_wait`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    timeout_ms: Option<u64>,
}

impl WaitQuery {
    fn timeout(&self, s: &AppState) -> Result<std::time::Duration, ApiError> {
        let timeout = std::time::Duration::from_millis(self.timeout_ms.unwrap_or(30_000));
        let max = s.config.limits.max_wait;
        if timeout > max {
            return Err(ApiError::invalid("timeout_ms", format!("must be at most {} ms", max.as_millis())));
        }
        Ok(timeout)
    }
}

/// Long-polls: checks `done` now and each time a task finishes anywhere, until it says yes, the
/// timeout passes or the server shuts down.
pub(super) async fn until_finished<F, Fut>(s: &AppState, q: &WaitQuery, mut done: F) -> ApiResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<bool>>,
{
    let deadline = tokio::time::Instant::now() + q.timeout(s)?;
    let mut finished = s.store.subscribe(taskwarden_store::Topic::Finished);
    loop {
        // Mark the counter seen before looking, so a finish between the look and the wait is not missed.
        finished.borrow_and_update();
        if done().await? {
            return Ok(());
        }
        tokio::select! {
            changed = finished.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = s.shutdown.cancelled() => return Ok(()),
        }
    }
}
