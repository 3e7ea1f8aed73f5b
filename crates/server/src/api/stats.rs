//! `GET /v1/stats`: per-queue throughput, failures and latency by the minute, from the store.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::Action;
use taskwarden_core::stats::StatsPage;
use taskwarden_core::validate::check_name;
use taskwarden_store::ReadStats;

use super::{ApiResult, AppState};
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// Only this queue's rows.
    #[param(schema_with = taskwarden_core::schema::name)]
    queue: Option<String>,
    /// Minutes from this time on (RFC 3339); default: an hour ago.
    since: Option<Timestamp>,
    /// Minutes before this time (RFC 3339); default: now.
    until: Option<Timestamp>,
    /// Most rows, 1 to 100000 (default 10000).
    #[param(minimum = 1, maximum = 100_000)]
    limit: Option<u32>,
}

/// The per-minute history: for each queue and minute, tasks submitted, attempts started, tasks
/// succeeded, failed for good, retried and cancelled, and the sums and counts of run times and
/// queue waits. Rolled up from the event log by the leader every few seconds and kept for the
/// stats retention (default 7 days), across restarts. A token limited to some queues sees theirs.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "queues",
    operation_id = "queueStats",
    summary = "Per-queue history by the minute",
    description = "Rows by minute then queue: submitted, started, succeeded, failed (for good), retried, cancelled, and run_us_sum / run_count and wait_us_sum / wait_count for mean run time and queue wait. The leader rolls new events up every few seconds; kept for --stats-retention (default 7 days).",
    params(StatsQuery),
    responses((status = 200, description = "The rows, by minute then queue.", body = StatsPage), (status = 409, description = "event_log_off: this server keeps no event log (--no-event-log).", body = taskwarden_core::protocol::ErrorBody))
)]
pub(super) async fn stats(
    State(s): State<AppState>,
    caller: Caller,
    _: super::events::EventLogKept,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<StatsPage>> {
    caller.may(&s, Action::Read, q.queue.as_deref())?;
    if let Some(queue) = &q.queue {
        check_name("queue", queue, &s.config.limits)?;
    }
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100000"));
    }
    let now = s.clock.now();
    let since = q.since.unwrap_or_else(|| now.saturating_sub(std::time::Duration::from_secs(3600)));
    let until = q.until.unwrap_or(now.saturating_add(std::time::Duration::from_secs(60)));
    let rows = s.store.read_stats(ReadStats { queue: q.queue, since, until, limit }).await?;
    let rows = rows.into_iter().filter(|r| caller.grant.queues.contains(&r.queue)).collect();
    Ok(Json(StatsPage { rows }))
}
