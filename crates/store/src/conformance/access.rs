//! Conformance cases for access: tokens, the worker that holds a lease, the audit log.

use std::time::Duration;

use taskwarden_core::auth::{AuditEntry, QueueScope, Role, TokenRecord};
use taskwarden_core::protocol::{HeldLease, ItemStatus, Outcome, Report};
use taskwarden_core::{Task, TaskState};

use super::{at, spec, submit_one, success};
use crate::params::*;
use crate::{Store, StoreError};

fn token(id: &str, name: &str, role: Role) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: name.into(),
        role,
        queues: QueueScope::parse("billing.*,reports").unwrap(),
        payloads: true,
        secret_hash: format!("hash-of-{id}"),
        created_at: at(0),
        expires_at: Some(at(90_000)),
        revoked_at: None,
        last_used_at: None,
    }
}

async fn register(store: &dyn Store, owner: Option<&str>) -> String {
    let p = RegisterWorker {
        name: "host".into(),
        owner: owner.map(str::to_owned),
        queues: vec!["q".into()],
        concurrency: 4,
        capacity: Default::default(),
        labels: Default::default(),
        kinds: Vec::new(),
        schemas: Default::default(),
        now: at(0),
    };
    store.register_worker(p).await.unwrap().id
}

async fn fetch_as(store: &dyn Store, worker: &str) -> Task {
    let p = FetchTasks {
        worker_id: worker.into(),
        queues: vec!["q".into()],
        limit: 1,
        wait: Duration::ZERO,
        now: at(10),
        finished: vec![],
    };
    store.fetch(p).await.unwrap().remove(0)
}

pub async fn tokens_are_stored_listed_and_revoked_by_id_or_name(store: &dyn Store) {
    assert!(store.list_tokens().await.unwrap().is_empty());
    let a = store.create_token(token("tok_a", "ci", Role::Submit)).await.unwrap();
    let b = store.create_token(token("tok_b", "ops", Role::Operator)).await.unwrap();
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()], "every field round-trips");

    store.touch_tokens(TouchTokens { used: vec![("tok_a".into(), at(500)), ("tok_b".into(), at(400))] }).await.unwrap();
    // An older use does not move last_used back.
    store.touch_tokens(TouchTokens { used: vec![("tok_a".into(), at(100))] }).await.unwrap();
    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(at(500)));
    assert_eq!(listed[1].last_used_at, Some(at(400)));

    let revoked = store.revoke_token(RevokeToken { token: "ci".into(), now: at(1_000) }).await.unwrap();
    assert_eq!((revoked.id.as_str(), revoked.revoked_at), ("tok_a", Some(at(1_000))));
    let again = store.revoke_token(RevokeToken { token: "tok_a".into(), now: at(2_000) }).await.unwrap();
    assert_eq!(again.revoked_at, Some(at(1_000)), "revoking twice keeps the first time");
    let by_id = store.revoke_token(RevokeToken { token: "tok_b".into(), now: at(3_000) }).await.unwrap();
    assert_eq!(by_id.revoked_at, Some(at(3_000)));
    let missing = store.revoke_token(RevokeToken { token: "nobody".into(), now: at(3_000) }).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    // Revoked tokens stay listed: a server with only revoked tokens still demands one.
    assert_eq!(store.list_tokens().await.unwrap().len(), 2);
}

pub async fn a_live_token_name_is_taken_until_revoked(store: &dyn Store) {
    store.create_token(token("tok_1", "ci", Role::Read)).await.unwrap();
    let clash = store.create_token(token("tok_2", "ci", Role::Read)).await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    let same_hash = TokenRecord { secret_hash: "hash-of-tok_1".into(), ..token("tok_3", "other", Role::Read) };
    assert!(matches!(store.create_token(same_hash).await, Err(StoreError::Conflict(_))));
    store.revoke_token(RevokeToken { token: "ci".into(), now: at(1) }).await.unwrap();
    store.create_token(token("tok_2", "ci", Role::Admin)).await.unwrap();
    let live: Vec<_> = store.list_tokens().await.unwrap().into_iter().filter(|t| t.revoked_at.is_none()).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].role, Role::Admin);
}

pub async fn a_worker_remembers_the_token_that_registered_it(store: &dyn Store) {
    let owned = register(store, Some("tok_w")).await;
    let open = register(store, None).await;
    assert_eq!(store.worker_owner(&owned).await.unwrap().as_deref(), Some("tok_w"));
    assert_eq!(store.worker_owner(&open).await.unwrap(), None);
    assert!(matches!(store.worker_owner("w-made-up").await, Err(StoreError::NotFound)));
}

pub async fn a_worker_cannot_report_or_extend_a_lease_another_worker_holds(store: &dyn Store) {
    submit_one(store, spec("q"), at(0)).await;
    let holder = register(store, None).await;
    let other = register(store, None).await;
    let leased = fetch_as(store, &holder).await;
    let lease = leased.lease.as_ref().unwrap().token;

    // The other worker knows the task and even the token: still refused, and nothing changes.
    let held = vec![HeldLease { task_id: leased.id, lease, progress: None, logs: Vec::new() }];
    let beat = store.heartbeat(Heartbeat { worker_id: Some(other.clone()), leases: held, now: at(20) }).await.unwrap();
    assert_eq!(beat[0].status, ItemStatus::LeaseLost);
    let forged = Report::new(leased.id, lease, success("\"forged\""));
    let p = ReportOutcomes { worker_id: Some(other), reports: vec![forged], now: at(30) };
    assert!(matches!(store.report(p).await.unwrap().remove(0), Err(StoreError::LeaseLost)));
    let task = store.get(leased.id).await.unwrap();
    assert_eq!(task.state, TaskState::Running);
    assert!(task.result.is_none());

    let real = Report::new(leased.id, lease, Outcome::Succeeded { result: super::raw("1") });
    let p = ReportOutcomes { worker_id: Some(holder), reports: vec![real], now: at(40) };
    assert_eq!(store.report(p).await.unwrap().remove(0).unwrap().state, TaskState::Succeeded);
}

pub async fn the_audit_log_keeps_entries_in_order_until_pruned(store: &dyn Store) {
    let entry = |ms: i64, action: &str| AuditEntry {
        at: at(ms),
        actor: "ops".into(),
        action: action.into(),
        target: "billing".into(),
        detail: (action == "denied").then(|| "needs operator".into()),
    };
    store.record_audit(vec![entry(10, "queue.pause"), entry(20, "denied")]).await.unwrap();
    store.record_audit(vec![entry(30, "queue.resume")]).await.unwrap();
    let all = store.list_audit(ListAudit { since: at(0), limit: 100 }).await.unwrap();
    assert_eq!(all, vec![entry(10, "queue.pause"), entry(20, "denied"), entry(30, "queue.resume")]);
    let recent = store.list_audit(ListAudit { since: at(15), limit: 1 }).await.unwrap();
    assert_eq!(recent, vec![entry(20, "denied")]);
    assert_eq!(store.prune_audit(at(25)).await.unwrap(), 2);
    assert_eq!(
        store.list_audit(ListAudit { since: at(0), limit: 100 }).await.unwrap(),
        vec![entry(30, "queue.resume")]
    );
}

pub async fn an_idempotency_key_reused_for_a_different_task_is_refused(store: &dyn Store) {
    use taskwarden_core::NewTask;
    let keyed = |queue: &str, kind: &str, payload: &str| NewTask {
        idempotency_key: Some("order-7".into()),
        kind: kind.into(),
        payload: super::raw(payload),
        ..spec(queue)
    };
    let submit = |tasks: Vec<NewTask>| SubmitTasks { tasks, idempotency_window: Duration::from_secs(60), now: at(5) };
    let first = store.submit(submit(vec![keyed("q", "echo", r#"{"a":1,"b":2}"#)])).await.unwrap().remove(0);
    // The same task again, even written differently, is answered with the first.
    let same = store.submit(submit(vec![keyed("q", "echo", r#"{ "b": 2, "a": 1 }"#)])).await.unwrap().remove(0);
    assert_eq!((same.task.id, same.created), (first.task.id, false));
    for (queue, kind, payload, what) in [
        ("other", "echo", r#"{"a":1,"b":2}"#, "queue"),
        ("q", "sleep", r#"{"a":1,"b":2}"#, "kind"),
        ("q", "echo", "2", "payload"),
    ] {
        // In a batch beside a new task: the whole batch is refused, the new task not stored.
        let fresh = spec("fresh");
        let e = store.submit(submit(vec![fresh, keyed(queue, kind, payload)])).await.err();
        match e {
            Some(StoreError::Conflict(m)) => assert!(m.contains("order-7") && m.contains(what), "{m}"),
            other => panic!("a different {what} under the same key: {other:?}"),
        }
    }
    // Two different tasks under one key in one batch.
    let e = store.submit(submit(vec![keyed("n", "echo", "1"), keyed("n", "echo", "2")])).await.err();
    assert!(matches!(e, Some(StoreError::Conflict(_))), "{e:?}");
    let page = store.list(ListTasks { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.tasks.len(), 1, "only the first task was ever stored");
}
