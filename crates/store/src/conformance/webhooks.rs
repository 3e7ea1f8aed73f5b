//! Conformance cases for webhook endpoints and their delivery log.

use taskwarden_core::events::EventId;
use taskwarden_core::webhooks::{CreateWebhookCall, Delivery, Webhook};

use super::at;
use crate::params::*;
use crate::{Store, StoreError};

fn endpoint(name: &str) -> Webhook {
    let call = CreateWebhookCall {
        name: name.into(),
        url: "https://example.com/hook".into(),
        events: vec!["task.failed".into()],
        queues: vec!["billing".into()],
    };
    call.webhook([1; 24], EventId::START, at(0)).unwrap()
}

fn delivery(webhook: &str, seq: u64, ms: i64) -> Delivery {
    Delivery {
        webhook: webhook.into(),
        event_id: EventId { tx: 0, seq },
        event_type: "task.failed".into(),
        at: at(ms),
        status: Some(500),
        error: Some("answered 500".into()),
        duration_ms: 3,
    }
}

pub async fn webhooks_are_kept_moved_only_from_where_they_stand_and_deleted_with_their_log(store: &dyn Store) {
    let ops = endpoint("ops");
    store.create_webhook(ops.clone()).await.unwrap();
    assert!(matches!(store.create_webhook(endpoint("ops")).await, Err(StoreError::Conflict(_))));
    store.create_webhook(endpoint("audit")).await.unwrap();
    let names: Vec<String> = store.list_webhooks().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["audit", "ops"]);
    assert_eq!(store.list_webhooks().await.unwrap()[1], ops, "kept whole, secret and filter included");

    // The delivery loop moves an endpoint on only from where it found it.
    let mut moved = ops.clone();
    moved.delivered(EventId { tx: 7, seq: 5 });
    store.save_webhook(moved.clone(), Some(EventId::START)).await.unwrap();
    let stale = store.save_webhook(ops.clone(), Some(EventId::START)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    assert_eq!(store.list_webhooks().await.unwrap()[1].position, EventId { tx: 7, seq: 5 });
    store.save_webhook(ops.clone(), None).await.unwrap();
    assert_eq!(store.list_webhooks().await.unwrap()[1].position, EventId::START, "a replay moves it anyway");

    for (seq, ms) in [(1, 1000), (2, 2000), (3, 3000)] {
        store.record_delivery(delivery("ops", seq, ms)).await.unwrap();
    }
    store.record_delivery(delivery("audit", 9, 1000)).await.unwrap();
    let newest = store.list_deliveries(ListDeliveries { webhook: "ops".into(), limit: 2 }).await.unwrap();
    assert_eq!(newest, [delivery("ops", 3, 3000), delivery("ops", 2, 2000)]);
    assert_eq!(store.prune_deliveries(at(1500)).await.unwrap(), 2);
    let left = store.list_deliveries(ListDeliveries { webhook: "ops".into(), limit: 10 }).await.unwrap();
    assert_eq!(left.len(), 2);

    store.delete_webhook("ops").await.unwrap();
    assert!(matches!(store.delete_webhook("ops").await, Err(StoreError::NotFound)));
    assert!(matches!(store.save_webhook(ops, None).await, Err(StoreError::NotFound)));
    assert!(store.list_deliveries(ListDeliveries { webhook: "ops".into(), limit: 10 }).await.unwrap().is_empty());
    assert_eq!(store.list_webhooks().await.unwrap().len(), 1);
}
