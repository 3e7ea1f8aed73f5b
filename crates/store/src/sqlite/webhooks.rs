//! Webhook endpoints and their delivery log on SQLite, each row a JSON document.

use rusqlite::{Connection, params};
use taskwarden_core::Timestamp;
use taskwarden_core::events::EventId;
use taskwarden_core::webhooks::{Delivery, Webhook};

use super::internal;
use crate::params::ListDeliveries;
use crate::{Result, StoreError};

fn doc<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Internal(format!("a stored webhook does not parse: {e}")))
}

pub(crate) fn create(conn: &Connection, w: Webhook) -> Result<()> {
    let n = conn
        .prepare_cached("INSERT INTO webhooks (name, doc) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")
        .and_then(|mut s| s.execute(params![w.name, doc(&w)]))
        .map_err(internal)?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("a webhook named {:?} exists", w.name)));
    }
    Ok(())
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<Webhook>> {
    let mut stmt = conn.prepare_cached("SELECT doc FROM webhooks ORDER BY name").map_err(internal)?;
    let docs = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(internal)?;
    docs.map(|d| parse(&d.map_err(internal)?)).collect()
}

pub(crate) fn save(conn: &Connection, w: Webhook, if_position: Option<EventId>) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE webhooks SET doc = ?2 WHERE name = ?1 AND (?3 IS NULL OR json_extract(doc, '$.position') = ?3)",
        )
        .and_then(|mut s| s.execute(params![w.name, doc(&w), if_position.map(|p| p.to_string())]))
        .map_err(internal)?;
    if n > 0 {
        return Ok(());
    }
    let exists: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM webhooks WHERE name = ?1)", [&w.name], |r| r.get(0))
        .map_err(internal)?;
    Err(if exists { StoreError::Conflict("the webhook's position moved".into()) } else { StoreError::NotFound })
}

pub(crate) fn delete(conn: &Connection, name: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE webhook = ?1")
        .and_then(|mut s| s.execute([name]))
        .map_err(internal)?;
    let n = conn
        .prepare_cached("DELETE FROM webhooks WHERE name = ?1")
        .and_then(|mut s| s.execute([name]))
        .map_err(internal)?;
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

pub(crate) fn record(conn: &Connection, d: Delivery) -> Result<()> {
    conn.prepare_cached("INSERT INTO webhook_deliveries (webhook, at, doc) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![d.webhook, d.at.as_micros(), doc(&d)]))
        .map_err(internal)?;
    Ok(())
}

pub(crate) fn deliveries(conn: &Connection, p: &ListDeliveries) -> Result<Vec<Delivery>> {
    let mut stmt = conn
        .prepare_cached("SELECT doc FROM webhook_deliveries WHERE webhook = ?1 ORDER BY seq DESC LIMIT ?2")
        .map_err(internal)?;
    let docs = stmt.query_map(params![p.webhook, p.limit], |r| r.get::<_, String>(0)).map_err(internal)?;
    docs.map(|d| parse(&d.map_err(internal)?)).collect()
}

pub(crate) fn prune(conn: &Connection, before: Timestamp) -> Result<usize> {
    conn.prepare_cached("DELETE FROM webhook_deliveries WHERE at < ?1")
        .and_then(|mut s| s.execute([before.as_micros()]))
        .map_err(internal)
}
