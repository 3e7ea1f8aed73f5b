use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use taskwarden_core::auth::Action;

use super::{ApiResult, AppState};
use crate::auth::Caller;

/// The content type of the OpenMetrics text exposition, which Prometheus scrapes.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Task counters and histograms of this node (labelled `node`), HTTP requests by route, and the whole cluster's queue depths and workers read from the store now, in the OpenMetrics text format. Needs a `read` token for every queue (the figures cover all queues). `--metrics-listen` serves the same without a token on an address of its own.",
    responses(
        (status = 200, description = "The metrics.", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
        (status = 404, description = "metrics_off: this server counts no metrics (--no-metrics).", body = taskwarden_core::protocol::ErrorBody),
    )
)]
pub(super) async fn metrics(State(s): State<AppState>, caller: Caller) -> ApiResult<Response> {
    // The figures cover every queue: a token scoped to some queues may not read them.
    caller.may(&s, Action::Read, Some("*"))?;
    render(&s).await
}

/// The metrics as a response (for `/metrics` on the API and on `--metrics-listen`).
pub(crate) async fn render(s: &AppState) -> ApiResult<Response> {
    if !s.config.metrics.enabled {
        let off = "metrics are off on this server (it was started with --no-metrics)";
        return Err(super::ApiError::new(axum::http::StatusCode::NOT_FOUND, "metrics_off", off));
    }
    let leader = *s.leader.borrow();
    let text = s.metrics.render(&*s.store, s.clock.now(), leader).await?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response())
}
