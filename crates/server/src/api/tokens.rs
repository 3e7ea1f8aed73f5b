//! API tokens and the audit log, for admins. A token's secret is shown once, in the answer to
//! its creation; the store keeps only its hash.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{Action, AuditList, CreateTokenCall, CreatedToken, TokenInfo, TokenList};
use taskwarden_core::protocol::ErrorBody;
use taskwarden_store::{ListAudit, RevokeToken};

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "createToken",
    summary = "Create a token",
    description = "Answers with the token's secret, shown this once; the server keeps only its SHA-256 hash. The first admin token is made offline with `taskwarden token create --data-dir DIR` (or `--database URL`).",
    request_body = CreateTokenCall,
    responses((status = 201, description = "The secret and the token as listed.", body = CreatedToken), (status = 409, description = "conflict: a live token has that name.", body = ErrorBody), (status = 422, description = "unprocessable: the request fits the schema, but a rule the schema cannot state refuses it (across fields, against the clock, in a cron expression or a workflow graph); error.field names where.", body = ErrorBody))
)]
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

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    summary = "List tokens",
    description = "Every token ever made, revoked and expired ones too; never a secret.",
    responses((status = 200, description = "The tokens, oldest first.", body = TokenList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TokenList>> {
    caller.may(&s, Action::Admin, None)?;
    let tokens = s.store.list_tokens().await?.iter().map(|t| t.info()).collect();
    Ok(Json(TokenList { tokens }))
}

/// Revokes a token by its id, or by the name of the live token that has it.
#[utoipa::path(
    post,
    path = "/v1/tokens/{id}/revoke",
    tag = "tokens",
    operation_id = "revokeToken",
    summary = "Revoke a token",
    description = "By id (tok_...) or by the name of the live token. Every node refuses it within token_refresh (default 500 ms).",
    // Named `id`, not `token`: the secret (`token` in the answer to a create) is never what it
    // takes, and a client linking the two (schemathesis's stateful phase did) would be misled.
    params(("id" = String, Path, description = "A token id (tok_...), or a live token's name; never its secret.")),
    responses((status = 200, description = "The token, revoked.", body = TokenInfo), (status = 404, description = "not_found: no such token (error.field id).", body = ErrorBody))
)]
pub(super) async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Admin, None)?;
    let record = s.store.revoke_token(RevokeToken { token, now: s.clock.now() }).await.map_err(|e| match e {
        taskwarden_store::StoreError::NotFound => {
            ApiError { field: Some("id".into()), ..ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such token") }
        }
        other => other.into(),
    })?;
    caller.audit(&s, "token.revoke", record.name.clone()).await;
    s.access.refresh().await?;
    Ok(Json(record.info()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries at or after this time (RFC 3339); default: the last 24 hours.
    since: Option<Timestamp>,
    /// Most entries, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "tokens",
    operation_id = "listAudit",
    summary = "Read the audit log",
    description = "Changes made through the API (cancel, retry, queue and cron changes, workflow cancels, token create and revoke) and requests refused for lack of rights, oldest first.",
    params(AuditQuery),
    responses((status = 200, description = "The entries.", body = AuditList))
)]
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

/// Who the caller is and what it may do: what the dashboard asks to decide what to offer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Me {
    /// The token's name; `(open)` on a server without tokens.
    name: String,
    /// The token's role.
    role: taskwarden_core::auth::Role,
    /// The queue patterns it may use; empty: every queue.
    queues: Vec<String>,
    /// Whether it is shown payloads and results.
    payloads: bool,
    /// Whether it may cancel and retry tasks, and change queues and cron schedules.
    operate: bool,
    /// Whether it may manage tokens and read the audit log.
    admin: bool,
    /// Whether the server runs without tokens (loopback only).
    open: bool,
}

#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "tokens",
    operation_id = "whoAmI",
    summary = "The calling token: its role, queues and what it may do",
    responses((status = 200, description = "The caller.", body = Me))
)]
pub(super) async fn me(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    caller.may(&s, Action::Read, None)?;
    let g = &caller.grant;
    Ok(Json(Me {
        queues: g.queues.patterns().to_vec(),
        role: g.role,
        payloads: g.sees_payloads(),
        operate: g.allows(Action::Operate, None).is_ok(),
        admin: g.allows(Action::Admin, None).is_ok(),
        open: !caller.authenticated(),
        name: caller.name,
    }))
}
