//! The HTTP API: routing and shared state. Handlers validate input, call the store and map the
//! answer; the rules themselves live in the core.
//!
//! - `tasks`: submit, inspect, list, wait for, cancel and retry tasks.
//! - `workers`: the worker protocol (register, fetch, heartbeat, report) and the single-lease calls.
//! - `workflows`: submit, get, wait for, cancel and retry workflows; a task's parents' results.
//! - `queues`: list queues with their counts; pause, resume, weigh and limit them.
//! - `cron`: cron schedules.
//! - `tokens`: API tokens and the audit log (admin only).
//! - `health`: liveness, readiness and the OpenAPI document.

mod cron;
mod health;
pub(crate) use health::openapi;
mod queues;
mod tasks;
mod tokens;
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

use taskwarden_core::auth::Role;

use crate::auth::Access;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::error::{ApiError, BodyRules};
use crate::guard::Guard;
use taskwarden_core::bounded::Caps;

/// How many bodies over 1 MiB are read at once, server-wide.
const BIG_BODIES_AT_ONCE: usize = 2;

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServerConfig>,
    pub clock: Arc<dyn Clock>,
    /// Fired when the server begins shutting down: long-polls return at once.
    pub shutdown: CancellationToken,
    /// Whether this node holds the leader lease (runs the background loops).
    pub leader: tokio::sync::watch::Receiver<bool>,
    /// Tokens, worker owners and the audit log (see `auth`).
    pub access: Arc<Access>,
}

/// Every route, in one place, with the least role it needs (`None`: anyone, even without a
/// token). The OpenAPI document lists the same paths (a test keeps them equal) and takes each
/// operation's role from here; each handler checks it through its `Caller`.
pub(crate) const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/openapi.json", None),
    ("post", "/v1/tasks", Some(Role::Submit)),
    ("get", "/v1/tasks", Some(Role::Read)),
    ("post", "/v1/tasks/batch", Some(Role::Submit)),
    ("post", "/v1/tasks/retry", Some(Role::Operator)),
    ("post", "/v1/tasks/cancel", Some(Role::Operator)),
    ("get", "/v1/tasks/{id}", Some(Role::Read)),
    ("get", "/v1/tasks/{id}/wait", Some(Role::Read)),
    ("post", "/v1/tasks/{id}/cancel", Some(Role::Operator)),
    ("post", "/v1/tasks/{id}/retry", Some(Role::Operator)),
    ("post", "/v1/tasks/{id}/complete", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/fail", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/heartbeat", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/progress", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/release", Some(Role::Worker)),
    ("post", "/v1/workers", Some(Role::Worker)),
    ("get", "/v1/workers", Some(Role::Read)),
    ("post", "/v1/workers/{id}/fetch", Some(Role::Worker)),
    ("post", "/v1/workers/{id}/heartbeat", Some(Role::Worker)),
    ("post", "/v1/workers/{id}/reports", Some(Role::Worker)),
    ("get", "/v1/tasks/{id}/parents", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/fan-out", Some(Role::Worker)),
    ("post", "/v1/workflows", Some(Role::Submit)),
    ("get", "/v1/workflows", Some(Role::Read)),
    ("get", "/v1/workflows/{id}", Some(Role::Read)),
    ("get", "/v1/workflows/{id}/wait", Some(Role::Read)),
    ("post", "/v1/workflows/{id}/cancel", Some(Role::Operator)),
    ("post", "/v1/workflows/{id}/retry", Some(Role::Operator)),
    ("get", "/v1/queues", Some(Role::Read)),
    ("patch", "/v1/queues/{name}", Some(Role::Operator)),
    ("delete", "/v1/queues/{name}", Some(Role::Operator)),
    ("post", "/v1/queues/{name}/pause", Some(Role::Operator)),
    ("post", "/v1/queues/{name}/resume", Some(Role::Operator)),
    ("post", "/v1/cron", Some(Role::Operator)),
    ("get", "/v1/cron", Some(Role::Read)),
    ("delete", "/v1/cron/{name}", Some(Role::Operator)),
    ("patch", "/v1/cron/{name}", Some(Role::Operator)),
    ("post", "/v1/cron/{name}/pause", Some(Role::Operator)),
    ("post", "/v1/cron/{name}/resume", Some(Role::Operator)),
    ("post", "/v1/cron/{name}/run", Some(Role::Operator)),
    ("post", "/v1/tokens", Some(Role::Admin)),
    ("get", "/v1/tokens", Some(Role::Admin)),
    ("post", "/v1/tokens/{token}/revoke", Some(Role::Admin)),
    ("get", "/v1/audit", Some(Role::Admin)),
];

pub(crate) fn router(state: AppState, guard: Guard) -> Router {
    let l = &state.config.limits;
    let rules = Arc::new(BodyRules {
        max_bytes: state.config.max_body_bytes,
        max_depth: l.max_json_depth,
        caps: Caps { batch: l.max_batch, workflow: l.max_workflow_tasks },
        read_timeout: state.config.http.body_read_timeout,
        big_bodies: Arc::new(tokio::sync::Semaphore::new(BIG_BODIES_AT_ONCE)),
    });
    Router::new()
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/openapi.json", get(health::openapi_json))
        .route("/v1/tasks", post(tasks::submit).get(tasks::list))
        .route("/v1/tasks/batch", post(tasks::submit_batch))
        .route("/v1/tasks/retry", post(tasks::bulk_retry))
        .route("/v1/tasks/cancel", post(tasks::bulk_cancel))
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
        .route("/v1/workflows", post(workflows::submit).get(workflows::list))
        .route("/v1/workflows/{id}", get(workflows::get))
        .route("/v1/workflows/{id}/wait", get(workflows::wait))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/workflows/{id}/retry", post(workflows::retry))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{name}", patch(queues::set).delete(queues::remove))
        .route("/v1/queues/{name}/pause", post(queues::pause))
        .route("/v1/queues/{name}/resume", post(queues::resume))
        .route("/v1/cron", post(cron::create).get(cron::list))
        .route("/v1/cron/{name}", delete(cron::delete).patch(cron::update))
        .route("/v1/cron/{name}/pause", post(cron::pause))
        .route("/v1/cron/{name}/resume", post(cron::resume))
        .route("/v1/cron/{name}/run", post(cron::run))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{token}/revoke", post(tokens::revoke))
        .route("/v1/audit", get(tokens::audit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(move |mut req: Request, next: Next| {
            let rules = rules.clone();
            async move {
                req.extensions_mut().insert(rules);
                next.run(req).await
            }
        }))
        .layer(axum::middleware::from_fn_with_state(guard, crate::guard::guard))
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

/// A list's `?limit=` (1 to 1000, default 50) and `?cursor=` (the id to go on after).
pub(super) fn page(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(u32, Option<taskwarden_core::TaskId>), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let before = match cursor {
        Some(c) => Some(c.parse().map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))?),
        None => None,
    };
    Ok((limit, before))
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
