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
    ([(header::CONTENT_TYPE, "application/json")], openapi())
}

/// The OpenAPI document: `openapi.json` with each operation's security taken from the route
/// table (`super::ROUTES`), so the role a route needs is written in one place.
pub(crate) fn openapi() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        doc["components"]["securitySchemes"] = json!({"bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token made with `taskwarden token create` (or POST /v1/tokens). A server \
                whose store holds no token serves without one, on loopback only.",
        }});
        let error = |description: &str| {
            json!({"description": description,
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
        };
        for (method, path, role) in super::ROUTES {
            let op = &mut doc["paths"][path][method];
            match role {
                None => op["security"] = json!([]),
                Some(role) => {
                    op["security"] = json!([{"bearer": []}]);
                    op["x-required-role"] = json!(role.as_str());
                    op["responses"]["401"] = error("unauthenticated: no token, or an unknown, revoked or expired one.");
                    op["responses"]["403"] = error(&format!(
                        "forbidden: the token lacks the {role} role (error.field role), or the queue is outside \
                         its scope (error.field queue)."
                    ));
                }
            }
        }
        serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
    })
}
