//! API tokens and the audit log, for admins. A token's secret is shown once, in the answer to
//! its creation; the store keeps only its hash.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{Action, AuditList, CreateTokenCall, CreatedToken, TokenList};
use taskwarden_store::{ListAudit, RevokeToken};

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};

pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(call): ApiJson<CreateTokenCall>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Admin, None)?;
    let now = s.clock.now();
    let (token, record) = call.request(now)?.issue(rand::random(), now);
    let record = s.store.create_token(record).await?;
    caller.audit(&s, "token.create", record.name.clone()).await;
    // Takes effect on this node at once, rather than at the next refresh.
    s.access.refresh().await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info: record.info() })))
}

pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TokenList>> {
    caller.may(&s, Action::Admin, None)?;
    let tokens = s.store.list_tokens().await?.iter().map(|t| t.info()).collect();
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token by its id, or by the name of the live token that has it.
pub(super) async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Admin, None)?;
    let record = s.store.revoke_token(RevokeToken { token, now: s.clock.now() }).await.map_err(|e| match e {
        taskwarden_store::StoreError::NotFound => ApiError {
            field: Some("token".into()),
            ..ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such token")
        },
        other => other.into(),
    })?;
    caller.audit(&s, "token.revoke", record.name.clone()).await;
    s.access.refresh().await?;
    Ok(Json(record.info()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Entries at or after this time (RFC 3339); default: the last 24 hours.
    since: Option<Timestamp>,
    limit: Option<u32>,
}

pub(super) async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    caller.may(&s, Action::Admin, None)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 10000"));
    }
    let since = q.since.unwrap_or_else(|| s.clock.now().saturating_sub(std::time::Duration::from_secs(24 * 3600)));
    Ok(Json(AuditList { entries: s.store.list_audit(ListAudit { since, limit }).await? }))
}
