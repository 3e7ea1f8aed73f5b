//! Webhook endpoints, for admins: add (its secret shown once), list, remove, read the delivery
//! log, replay from an event, enable again. Delivery itself is `crate::webhooks`, on the leader.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use taskwarden_core::auth::Action;
use taskwarden_core::events::EventId;
use taskwarden_core::protocol::ErrorBody;
use taskwarden_core::webhooks::{
    CreateWebhookCall, CreatedWebhook, DeliveryList, ReplayCall, Webhook, WebhookInfo, WebhookList,
};
use taskwarden_store::ListDeliveries;

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};

async fn find(s: &AppState, name: &str) -> ApiResult<Webhook> {
    let hooks = s.store.list_webhooks().await?;
    hooks
        .into_iter()
        .find(|w| w.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no webhook named {name:?}")))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    summary = "Add a webhook endpoint",
    description = "The endpoint is sent, from now on, every event of the given types (all, if none) in the given queues (all, if none), one at a time in order, each POSTed as JSON and signed per Standard Webhooks. The answer holds the signing secret, shown this once.",
    request_body = CreateWebhookCall,
    responses((status = 201, description = "The endpoint and its secret.", body = CreatedWebhook), (status = 409, description = "conflict: a webhook has that name; event_log_off: this server keeps no event log (--no-event-log).", body = ErrorBody), (status = 422, description = "unprocessable: a bad URL, event type or queue; error.field names it.", body = ErrorBody))
)]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    _: super::events::EventLogKept,
    ApiJson(call): ApiJson<CreateWebhookCall>,
) -> ApiResult<impl IntoResponse> {
    caller.may(&s, Action::Admin, None)?;
    let start = s.store.last_event_id().await?;
    let webhook = call.webhook(rand::random(), start, s.clock.now())?;
    s.store.create_webhook(webhook.clone()).await?;
    caller.audit(&s, "webhook.create", webhook.name.clone()).await;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook: webhook.info(), secret: webhook.secret })))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    summary = "List webhook endpoints",
    responses((status = 200, description = "Every endpoint, by name; never a secret.", body = WebhookList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<WebhookList>> {
    caller.may(&s, Action::Admin, None)?;
    let webhooks = s.store.list_webhooks().await?.iter().map(Webhook::info).collect();
    Ok(Json(WebhookList { webhooks }))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{name}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    summary = "Remove a webhook endpoint",
    params(("name" = String, Path, description = "The endpoint's name.")),
    responses((status = 204, description = "Removed, with its delivery log."), (status = 404, description = "not_found: no such webhook.", body = ErrorBody))
)]
pub(super) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.may(&s, Action::Admin, None)?;
    s.store.delete_webhook(&name).await?;
    caller.audit(&s, "webhook.delete", name).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// Most deliveries, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{name}/deliveries",
    tag = "webhooks",
    operation_id = "webhookDeliveries",
    summary = "A webhook's delivery log",
    params(("name" = String, Path, description = "The endpoint's name."), DeliveriesQuery),
    responses((status = 200, description = "Tries, newest first: the event, when, the status or error, how long.", body = DeliveryList), (status = 404, description = "not_found: no such webhook.", body = ErrorBody))
)]
pub(super) async fn deliveries(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<DeliveryList>> {
    caller.may(&s, Action::Admin, None)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    find(&s, &name).await?;
    let deliveries = s.store.list_deliveries(ListDeliveries { webhook: name, limit }).await?;
    Ok(Json(DeliveryList { deliveries }))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{name}/replay",
    tag = "webhooks",
    operation_id = "replayWebhook",
    summary = "Send a webhook's events again from a point",
    description = "Moves the endpoint back (or on) to just after the given event: every matching event after it that is still kept is sent again, in order. Also enables it and clears its failures.",
    params(("name" = String, Path, description = "The endpoint's name.")),
    request_body = ReplayCall,
    responses((status = 200, description = "The endpoint.", body = WebhookInfo), (status = 404, description = "not_found: no such webhook.", body = ErrorBody), (status = 409, description = "event_log_off: this server keeps no event log (--no-event-log).", body = ErrorBody))
)]
pub(super) async fn replay(
    State(s): State<AppState>,
    caller: Caller,
    _: super::events::EventLogKept,
    Path(name): Path<String>,
    ApiJson(call): ApiJson<ReplayCall>,
) -> ApiResult<Json<WebhookInfo>> {
    caller.may(&s, Action::Admin, None)?;
    let after: EventId = call.after.parse().map_err(|e: String| ApiError::invalid("after", e))?;
    let mut w = find(&s, &name).await?;
    w.position = after;
    restart(&s, &caller, w, "webhook.replay").await
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{name}/enable",
    tag = "webhooks",
    operation_id = "enableWebhook",
    summary = "Enable a disabled webhook",
    description = "Clears its failures and tries again at once, from where it stopped.",
    params(("name" = String, Path, description = "The endpoint's name.")),
    responses((status = 200, description = "The endpoint.", body = WebhookInfo), (status = 404, description = "not_found: no such webhook.", body = ErrorBody))
)]
pub(super) async fn enable(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<WebhookInfo>> {
    caller.may(&s, Action::Admin, None)?;
    let w = find(&s, &name).await?;
    restart(&s, &caller, w, "webhook.enable").await
}

/// Enabled, without failures, tried at once.
async fn restart(s: &AppState, caller: &Caller, mut w: Webhook, action: &str) -> ApiResult<Json<WebhookInfo>> {
    w.failures = 0;
    w.retry_at = None;
    w.disabled = None;
    s.store.save_webhook(w.clone(), None).await?;
    caller.audit(s, action, w.name.clone()).await;
    Ok(Json(w.info()))
}
