use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::{ApiResult, AppState};
use crate::error::ApiError;

const OPENAPI: &str = include_str!("../openapi.json");

/// Liveness: the process answers.
pub(super) async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store answers too. Also names the node and says whether it leads.
pub(super) async fn ready(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"));
    }
    state.store.ready().await?;
    let leader = *state.leader.borrow();
    Ok(Json(json!({"status": "ready", "node": state.config.node_name, "leader": leader})))
}

pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub(crate) fn openapi() -> &'static str {
    OPENAPI
}
