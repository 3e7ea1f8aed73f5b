//! Who may use the API, and what they did with it: tokens (only their hashes) and the audit log
//! on PostgreSQL. Every node reads the same table, so a token made or revoked on one node holds
//! on all of them at their next refresh.

use deadpool_postgres::GenericClient;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{AuditEntry, QueueScope, TokenRecord};
use tokio_postgres::Row;

use super::PgResult;
use super::rows::{Tx, execute, query, query_opt};
use crate::StoreError;
use crate::params::{ListAudit, RevokeToken, TouchTokens};

const TOKEN_COLUMNS: &str =
    "id, name, role, queues, payloads, secret_hash, created_at, expires_at, revoked_at, last_used_at";

fn token(r: &Row) -> PgResult<TokenRecord> {
    let role: String = r.get(2);
    let queues: String = r.get(3);
    let time = |i: usize| r.get::<_, Option<i64>>(i).map(Timestamp::from_micros);
    Ok(TokenRecord {
        id: r.get(0),
        name: r.get(1),
        role: role.parse().map_err(StoreError::Internal)?,
        // Written by `create_token` from a parsed scope; one that does not parse is refused, not
        // read as every queue.
        queues: QueueScope::parse(&queues).map_err(|e| StoreError::Internal(e.to_string()))?,
        payloads: r.get(4),
        secret_hash: r.get(5),
        created_at: Timestamp::from_micros(r.get(6)),
        expires_at: time(7),
        revoked_at: time(8),
        last_used_at: time(9),
    })
}

pub(crate) async fn create_token(tx: &Tx<'_>, t: &TokenRecord) -> PgResult<TokenRecord> {
    let inserted = execute(
        tx,
        &format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) \
             ON CONFLICT DO NOTHING"
        ),
        &[
            &t.id,
            &t.name,
            &t.role.as_str(),
            &t.queues.to_string(),
            &t.payloads,
            &t.secret_hash,
            &t.created_at.as_micros(),
            &t.expires_at.map(Timestamp::as_micros),
        ],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("a live token is named {:?}", t.name)).into());
    }
    Ok(t.clone())
}

pub(crate) async fn list_tokens(c: &impl GenericClient) -> PgResult<Vec<TokenRecord>> {
    let rows = query(c, &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"), &[]).await?;
    rows.iter().map(token).collect()
}

pub(crate) async fn revoke_token(tx: &Tx<'_>, p: &RevokeToken) -> PgResult<TokenRecord> {
    let row = query_opt(
        tx,
        &format!(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = (\
             SELECT id FROM tokens WHERE id = $1 \
             UNION ALL SELECT id FROM tokens WHERE name = $1 AND revoked_at IS NULL LIMIT 1) \
             RETURNING {TOKEN_COLUMNS}"
        ),
        &[&p.token, &p.now.as_micros()],
    )
    .await?;
    token(&row.ok_or(StoreError::NotFound)?)
}

pub(crate) async fn touch_tokens(tx: &Tx<'_>, p: &TouchTokens) -> PgResult<()> {
    for (id, at) in &p.used {
        execute(
            tx,
            "UPDATE tokens SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $1",
            &[id, &at.as_micros()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn worker_owner(c: &impl GenericClient, worker_id: &str) -> PgResult<Option<String>> {
    let row = query_opt(c, "SELECT owner FROM workers WHERE id = $1", &[&worker_id]).await?;
    Ok(row.ok_or(StoreError::NotFound)?.get(0))
}

pub(crate) async fn record_audit(tx: &Tx<'_>, entries: &[AuditEntry]) -> PgResult<()> {
    for e in entries {
        execute(
            tx,
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
            &[&e.at.as_micros(), &e.actor, &e.action, &e.target, &e.detail],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn list_audit(c: &impl GenericClient, p: &ListAudit) -> PgResult<Vec<AuditEntry>> {
    let rows = query(
        c,
        "SELECT at, actor, action, target, detail FROM audit_log WHERE at >= $1 ORDER BY at, seq LIMIT $2",
        &[&p.since.as_micros(), &i64::from(p.limit)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| AuditEntry {
            at: Timestamp::from_micros(r.get(0)),
            actor: r.get(1),
            action: r.get(2),
            target: r.get(3),
            detail: r.get(4),
        })
        .collect())
}

pub(crate) async fn prune_audit(tx: &Tx<'_>, before: Timestamp) -> PgResult<usize> {
    Ok(execute(tx, "DELETE FROM audit_log WHERE at < $1", &[&before.as_micros()]).await? as usize)
}
