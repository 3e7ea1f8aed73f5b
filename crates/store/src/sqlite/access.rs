//! Who may use the API, and what they did with it: tokens (only their hashes) and the audit log
//! on SQLite.

use rusqlite::{Connection, OptionalExtension, Row, params};
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{AuditEntry, QueueScope, TokenRecord};

use super::internal;
use crate::params::{ListAudit, RevokeToken, TouchTokens};
use crate::{Result, StoreError};

const TOKEN_COLUMNS: &str =
    "id, name, role, queues, payloads, secret_hash, created_at, expires_at, revoked_at, last_used_at";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = r.get(2)?;
    let queues: String = r.get(3)?;
    let time = |i: usize| r.get::<_, Option<i64>>(i).map(|t| t.map(Timestamp::from_micros));
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        // Written by `create_token` from the same types, so these parse.
        role: role.parse().map_err(|e: String| rusqlite::Error::InvalidColumnName(e))?,
        // Written by `create_token` from a parsed scope; one that does not parse is refused, not
        // read as every queue.
        queues: QueueScope::parse(&queues).map_err(|e| rusqlite::Error::InvalidColumnName(e.to_string()))?,
        payloads: r.get(4)?,
        secret_hash: r.get(5)?,
        created_at: Timestamp::from_micros(r.get(6)?),
        expires_at: time(7)?,
        revoked_at: time(8)?,
        last_used_at: time(9)?,
    })
}

pub(crate) fn create_token(conn: &Connection, t: TokenRecord) -> Result<TokenRecord> {
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL) \
             ON CONFLICT DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                t.id,
                t.name,
                t.role.as_str(),
                t.queues.to_string(),
                t.payloads,
                t.secret_hash,
                t.created_at.as_micros(),
                t.expires_at.map(Timestamp::as_micros)
            ])
        })
        .map_err(internal)?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!("a live token is named {:?}", t.name)));
    }
    Ok(t)
}

pub(crate) fn list_tokens(conn: &Connection) -> Result<Vec<TokenRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"))
        .map_err(internal)?;
    let rows = stmt.query_map([], token_from_row).map_err(internal)?;
    rows.map(|r| r.map_err(internal)).collect()
}

pub(crate) fn revoke_token(conn: &Connection, p: RevokeToken) -> Result<TokenRecord> {
    let id: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM tokens WHERE id = ?1 \
             UNION ALL SELECT id FROM tokens WHERE name = ?1 AND revoked_at IS NULL LIMIT 1",
        )
        .and_then(|mut s| s.query_row([&p.token], |r| r.get(0)).optional())
        .map_err(internal)?;
    let id = id.ok_or(StoreError::NotFound)?;
    conn.prepare_cached("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, p.now.as_micros()]))
        .map_err(internal)?;
    conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"))
        .and_then(|mut s| s.query_row([&id], token_from_row))
        .map_err(internal)
}

pub(crate) fn touch_tokens(conn: &Connection, p: TouchTokens) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1")
        .map_err(internal)?;
    for (id, at) in p.used {
        stmt.execute(params![id, at.as_micros()]).map_err(internal)?;
    }
    Ok(())
}

pub(crate) fn worker_owner(conn: &Connection, worker_id: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT owner FROM workers WHERE id = ?1")
        .and_then(|mut s| s.query_row([worker_id], |r| r.get::<_, Option<String>>(0)).optional())
        .map_err(internal)?
        .ok_or(StoreError::NotFound)
}

pub(crate) fn record_audit(conn: &Connection, entries: Vec<AuditEntry>) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(internal)?;
    for e in entries {
        stmt.execute(params![e.at.as_micros(), e.actor, e.action, e.target, e.detail]).map_err(internal)?;
    }
    Ok(())
}

pub(crate) fn list_audit(conn: &Connection, p: ListAudit) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, actor, action, target, detail FROM audit_log WHERE at >= ?1 ORDER BY at, seq LIMIT ?2",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![p.since.as_micros(), p.limit], |r| {
            Ok(AuditEntry {
                at: Timestamp::from_micros(r.get(0)?),
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                detail: r.get(4)?,
            })
        })
        .map_err(internal)?;
    rows.map(|r| r.map_err(internal)).collect()
}

pub(crate) fn prune_audit(conn: &Connection, before: Timestamp) -> Result<usize> {
    conn.prepare_cached("DELETE FROM audit_log WHERE at < ?1")
        .and_then(|mut s| s.execute([before.as_micros()]))
        .map_err(internal)
}
