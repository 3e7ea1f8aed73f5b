//! Webhook endpoints and their delivery log on PostgreSQL, each row a JSON document.

use deadpool_postgres::GenericClient;
use taskwarden_core::Timestamp;
use taskwarden_core::events::EventId;
use taskwarden_core::webhooks::{Delivery, Webhook};

use super::PgResult;
use super::rows::{execute, query};
use crate::StoreError;
use crate::params::ListDeliveries;

fn doc<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> PgResult<T> {
    Ok(serde_json::from_str(s).map_err(|e| StoreError::Internal(format!("a stored webhook does not parse: {e}")))?)
}

pub(crate) async fn create(c: &impl GenericClient, w: &Webhook) -> PgResult<()> {
    let n = execute(
        c,
        "INSERT INTO webhooks (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&w.name, &doc(w)],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("a webhook named {:?} exists", w.name)).into());
    }
    Ok(())
}

pub(crate) async fn list(c: &impl GenericClient) -> PgResult<Vec<Webhook>> {
    let rows = query(c, "SELECT doc FROM webhooks ORDER BY name", &[]).await?;
    rows.iter().map(|r| parse(r.get(0))).collect()
}

pub(crate) async fn save(c: &impl GenericClient, w: &Webhook, if_position: Option<EventId>) -> PgResult<()> {
    let n = execute(
        c,
        "UPDATE webhooks SET doc = $2 WHERE name = $1 AND ($3::text IS NULL OR doc::jsonb ->> 'position' = $3)",
        &[&w.name, &doc(w), &if_position.map(|p| p.to_string())],
    )
    .await?;
    if n > 0 {
        return Ok(());
    }
    let exists = query(c, "SELECT 1 FROM webhooks WHERE name = $1", &[&w.name]).await?;
    Err(if exists.is_empty() {
        StoreError::NotFound
    } else {
        StoreError::Conflict("the webhook's position moved".into())
    }
    .into())
}

pub(crate) async fn delete(c: &impl GenericClient, name: &str) -> PgResult<()> {
    execute(c, "DELETE FROM webhook_deliveries WHERE webhook = $1", &[&name]).await?;
    let n = execute(c, "DELETE FROM webhooks WHERE name = $1", &[&name]).await?;
    if n == 0 { Err(StoreError::NotFound.into()) } else { Ok(()) }
}

pub(crate) async fn record(c: &impl GenericClient, d: &Delivery) -> PgResult<()> {
    execute(
        c,
        "INSERT INTO webhook_deliveries (webhook, at, doc) VALUES ($1, $2, $3)",
        &[&d.webhook, &d.at.as_micros(), &doc(d)],
    )
    .await?;
    Ok(())
}

pub(crate) async fn deliveries(c: &impl GenericClient, p: &ListDeliveries) -> PgResult<Vec<Delivery>> {
    let rows = query(
        c,
        "SELECT doc FROM webhook_deliveries WHERE webhook = $1 ORDER BY seq DESC LIMIT $2",
        &[&p.webhook, &(p.limit as i64)],
    )
    .await?;
    rows.iter().map(|r| parse(r.get(0))).collect()
}

pub(crate) async fn prune(c: &impl GenericClient, before: Timestamp) -> PgResult<usize> {
    Ok(execute(c, "DELETE FROM webhook_deliveries WHERE at < $1", &[&before.as_micros()]).await? as usize)
}
