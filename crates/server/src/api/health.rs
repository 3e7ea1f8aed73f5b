use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{ApiResult, AppState};
use crate::error::ApiError;

/// What the health checks answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    #[schema(pattern = "^(ok|ready)$")]
    status: &'static str,
    /// This server node's name (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Whether this node holds the leader lease and runs the background loops (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<bool>,
    /// The node that holds the leader lease, as this node last saw it (readiness only; absent
    /// while not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_node: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "liveness",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "The process is alive: {\"status\": \"ok\"}.", body = Health))
)]
pub(super) async fn live() -> impl IntoResponse {
    Json(Health { status: "ok", node: None, leader: None, leader_node: None })
}

/// Readiness: the store can commit (a durable write, not a read). Also names the node and says
/// whether it leads.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readiness",
    summary = "Readiness: the process answers and its store can commit",
    responses((status = 503, description = "Not ready: shutting down, or the store cannot commit now (a full disk, a read-only or unreachable database, a synchronous standby that does not answer): error.code is not_ready (or shutting_down).", body = taskwarden_core::protocol::ErrorBody),
        (status = 200, description = "Ready to serve: {\"status\": \"ready\", \"node\": NAME, \"leader\": BOOL, \"leader_node\": NAME}. `leader` says whether this node holds the leader lease and so runs the background loops (lease expiry, promotion, retention); `leader_node` names the node that does, as this node last saw it.", body = Health))
)]
pub(super) async fn ready(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"));
    }
    if let Err(e) = state.store.ready().await {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string()));
    }
    let leader = *state.leader.borrow();
    let leader_node = state.leader_node.borrow().clone();
    Ok(Json(Health { status: "ready", node: Some(state.config.node_name.clone()), leader: Some(leader), leader_node }))
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", operation_id = "openapi", summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document describing this API.", body = Object)))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi())
}
