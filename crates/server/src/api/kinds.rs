//! The kinds the server knows: from the live workers' handler tables, the ready tasks and the
//! payload schemas workers registered.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use taskwarden_core::auth::Action;
use taskwarden_core::protocol::{KindInfo, KindList};

use super::{ApiResult, AppState};
use crate::auth::Caller;

/// Every kind a live worker runs, a ready task has or a schema was registered for; a caller
/// limited to some queues sees those its queues' workers run or its queues' tasks have.
#[utoipa::path(
    get,
    path = "/v1/kinds",
    tag = "workers",
    operation_id = "listKinds",
    summary = "List the kinds: their live workers, ready tasks and payload schema",
    responses((status = 200, description = "The kinds, by name.", body = KindList))
)]
pub(super) async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<KindList>> {
    caller.may(&s, Action::Read, None)?;
    let scope = &caller.grant.queues;
    let live_since = s.clock.now().saturating_sub(crate::scheduling::LIVE_WINDOW);
    let mut kinds: BTreeMap<String, KindInfo> = BTreeMap::new();
    let mut queues: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for w in s.store.list_workers().await? {
        if w.last_seen_at < live_since || !w.queues.iter().any(|q| scope.contains(q)) {
            continue;
        }
        for kind in &w.kinds {
            blank(&mut kinds, kind).workers += 1;
            queues.entry(kind.clone()).or_default().extend(w.queues.iter().cloned());
        }
    }
    for r in s.store.ready_kinds().await? {
        if scope.contains(&r.queue) {
            blank(&mut kinds, &r.kind).ready += r.count;
        }
    }
    for row in s.store.kind_schemas().await? {
        // A schema is shown with its kind; alone, only to a caller who sees every queue.
        if !scope.is_all() && !kinds.contains_key(&row.kind) {
            continue;
        }
        let k = blank(&mut kinds, &row.kind);
        k.schema = serde_json::from_str(&row.schema).ok();
        k.schema_registered_at = Some(row.registered_at);
    }
    for (kind, qs) in queues {
        if let Some(k) = kinds.get_mut(&kind) {
            k.queues = qs.into_iter().collect();
        }
    }
    Ok(Json(KindList { kinds: kinds.into_values().collect() }))
}

fn blank<'a>(kinds: &'a mut BTreeMap<String, KindInfo>, kind: &str) -> &'a mut KindInfo {
    kinds.entry(kind.to_owned()).or_insert_with(|| KindInfo { kind: kind.to_owned(), ..KindInfo::default() })
}
