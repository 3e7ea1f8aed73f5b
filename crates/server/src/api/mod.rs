//! The HTTP API: routing and shared state. Handlers validate input, call the store and map the
//! answer; the rules themselves live in the core.
//!
//! - `tasks`: submit, inspect, search, wait for, cancel and retry tasks.
//! - `bulk`: retry or cancel everything a filter matches: in one call, or as a job with progress.
//! - `workers`: the worker protocol (register, fetch, heartbeat, report) and the single-lease calls.
//! - `workflows`: submit, get, wait for, cancel and retry workflows; a task's parents' results.
//! - `queues`: list queues with their counts; pause, resume, weigh and limit them.
//! - `cron`: cron schedules.
//! - `tokens`: API tokens and the audit log (admin only), and who the caller is.
//! - `health`: liveness, readiness and the OpenAPI document.
//! - `metrics`: Prometheus metrics (the figures themselves are `crate::metrics`).
//! - `doc`: what the generated OpenAPI document gets beyond the handlers' own descriptions.

mod bulk;
mod cron;
mod doc;
mod events;
mod health;
mod kinds;
pub(crate) mod metrics;
mod queues;
mod stats;
mod tasks;
mod tokens;
mod webhooks;
mod workers;
mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use taskwarden_store::Store;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// The node holding the leader lease, as this node last saw it.
    pub leader_node: tokio::sync::watch::Receiver<Option<String>>,
    /// Tokens, worker owners and the audit log (see `auth`).
    pub access: Arc<Access>,
    /// The JSON Schemas of kinds' payloads, checked at submit.
    pub schemas: Arc<crate::payload_schemas::PayloadSchemas>,
    /// What `/metrics` shows (`store` above counts into it).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The spans of submits, leases and reports (none unless traces are on).
    pub traces: Arc<crate::traces::Traces>,
    /// The bulk retry and cancel jobs this node runs and ran lately.
    pub bulk_jobs: Arc<bulk::Jobs>,
}

/// Every route, in one place, with the least role it needs (`None`: anyone, even without a
/// token). The OpenAPI document lists the same paths (a test keeps them equal) and takes each
/// operation's role from here; each handler checks it through its `Caller`.
pub(crate) const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("get", "/healthz", None),
    ("get", "/readyz", None),
    ("get", "/openapi.json", None),
    ("get", "/metrics", Some(Role::Read)),
    ("post", "/v1/tasks", Some(Role::Submit)),
    ("get", "/v1/tasks", Some(Role::Read)),
    ("post", "/v1/tasks/batch", Some(Role::Submit)),
    ("post", "/v1/tasks/retry", Some(Role::Operator)),
    ("post", "/v1/tasks/cancel", Some(Role::Operator)),
    ("post", "/v1/tasks/jobs", Some(Role::Operator)),
    ("get", "/v1/tasks/jobs/{id}", Some(Role::Operator)),
    ("get", "/v1/tasks/{id}", Some(Role::Read)),
    ("get", "/v1/tasks/{id}/wait", Some(Role::Read)),
    ("get", "/v1/tasks/{id}/logs", Some(Role::Read)),
    ("post", "/v1/tasks/{id}/cancel", Some(Role::Operator)),
    ("post", "/v1/tasks/{id}/retry", Some(Role::Operator)),
    ("post", "/v1/tasks/{id}/complete", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/fail", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/heartbeat", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/progress", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/release", Some(Role::Worker)),
    ("post", "/v1/workers", Some(Role::Worker)),
    ("get", "/v1/workers", Some(Role::Read)),
    ("delete", "/v1/workers/{id}", Some(Role::Operator)),
    ("get", "/v1/kinds", Some(Role::Read)),
    ("post", "/v1/workers/{id}/fetch", Some(Role::Worker)),
    ("post", "/v1/workers/{id}/heartbeat", Some(Role::Worker)),
    ("post", "/v1/workers/{id}/reports", Some(Role::Worker)),
    ("get", "/v1/tasks/{id}/parents", Some(Role::Worker)),
    ("post", "/v1/tasks/{id}/fan-out", Some(Role::Worker)),
    ("post", "/v1/workflows", Some(Role::Submit)),
    ("get", "/v1/workflows", Some(Role::Read)),
    ("get", "/v1/workflows/{id}", Some(Role::Read)),
    ("get", "/v1/workflows/{id}/wait", Some(Role::Read)),
    ("get", "/v1/workflows/{id}/graph", Some(Role::Read)),
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
    ("post", "/v1/tokens/{id}/revoke", Some(Role::Admin)),
    ("get", "/v1/audit", Some(Role::Admin)),
    ("get", "/v1/me", Some(Role::Read)),
    ("get", "/v1/events", Some(Role::Read)),
    ("get", "/v1/stats", Some(Role::Read)),
    ("post", "/v1/webhooks", Some(Role::Admin)),
    ("get", "/v1/webhooks", Some(Role::Admin)),
    ("delete", "/v1/webhooks/{name}", Some(Role::Admin)),
    ("get", "/v1/webhooks/{name}/deliveries", Some(Role::Admin)),
    ("post", "/v1/webhooks/{name}/replay", Some(Role::Admin)),
    ("post", "/v1/webhooks/{name}/enable", Some(Role::Admin)),
];

/// Every route with its handler; each handler's `#[utoipa::path]` describes it, so the same list
/// gives the router and the OpenAPI document.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::openapi_json))
        .routes(routes!(metrics::metrics))
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::submit_batch))
        .routes(routes!(bulk::bulk_retry))
        .routes(routes!(bulk::bulk_cancel))
        .routes(routes!(bulk::start_job))
        .routes(routes!(bulk::get_job))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::wait))
        .routes(routes!(tasks::logs))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::retry))
        .routes(routes!(workers::complete_one))
        .routes(routes!(workers::fail_one))
        .routes(routes!(workers::heartbeat_one))
        .routes(routes!(workers::progress_one))
        .routes(routes!(workers::release_one))
        .routes(routes!(workers::register, workers::list))
        .routes(routes!(workers::remove))
        .routes(routes!(kinds::list))
        .routes(routes!(workers::fetch))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::reports))
        .routes(routes!(workflows::parents))
        .routes(routes!(workflows::fan_out))
        .routes(routes!(workflows::submit, workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::wait))
        .routes(routes!(workflows::graph))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::retry))
        .routes(routes!(queues::list))
        .routes(routes!(queues::set, queues::remove))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(cron::create, cron::list))
        .routes(routes!(cron::delete, cron::update))
        .routes(routes!(cron::pause))
        .routes(routes!(cron::resume))
        .routes(routes!(cron::run))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::audit))
        .routes(routes!(tokens::me))
        .routes(routes!(events::events))
        .routes(routes!(stats::stats))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::replay))
        .routes(routes!(webhooks::enable))
}

/// The OpenAPI document, as JSON text (built once).
pub(crate) fn openapi() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let doc = doc::finish(routes().into_openapi());
        serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
    })
}

pub(crate) fn router(state: AppState, guard: Guard) -> Router {
    let l = &state.config.limits;
    let rules = Arc::new(BodyRules {
        max_bytes: state.config.max_body_bytes,
        max_depth: l.max_json_depth,
        caps: Caps { batch: l.max_batch, workflow: l.max_workflow_tasks },
        read_timeout: state.config.http.body_read_timeout,
        big_bodies: Arc::new(tokio::sync::Semaphore::new(BIG_BODIES_AT_ONCE)),
    });
    let (api, _) = routes().split_for_parts();
    let api = match state.config.metrics.enabled {
        true => {
            api.route_layer(axum::middleware::from_fn_with_state(state.metrics.clone(), crate::metrics::track_requests))
        }
        false => api,
    };
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"]));
    api.merge(Router::from(docs))
        .merge(crate::ui::router())
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

/// `GET /metrics` alone, without a token: for `--metrics-listen`.
pub(crate) fn metrics_only(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(|State(s): State<AppState>| async move { metrics::render(&s).await }))
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
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// How long to wait, in milliseconds; at most 60000 by default.
    #[param(minimum = 0, maximum = 60_000)]
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
