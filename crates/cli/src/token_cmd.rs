//! `taskwarden token create|ls|revoke` and `taskwarden audit ls`.
//!
//! Token commands work through a server (an admin token in `--token`), or, given `--data-dir` or
//! `--database`, straight on the store with no server: that is how the first admin token is
//! made. A running server picks up a token written that way at its next refresh.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{CreateTokenCall, Role, TokenInfo};
use taskwarden_store::{Durability, RevokeToken, Store};

use crate::args::{AuditArgs, AuditCommand, TokenArgs, TokenCommand, TokenStoreArgs};
use crate::client_cmd::connect;
use crate::exit::out;
use crate::server_cmd::Database;

fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

/// The store named by `--data-dir` or `--database`, if either was given.
async fn offline_store(a: &TokenStoreArgs) -> anyhow::Result<Option<Arc<dyn Store>>> {
    if a.data_dir.is_none() && a.database.database.is_none() {
        return Ok(None);
    }
    let data_dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from("taskwarden-data"));
    if a.database.database.is_none() {
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    }
    let database = Database::resolve(a.database.clone(), data_dir, Durability::Full, None);
    Ok(Some(database.open(true).await?))
}

fn print_tokens(tokens: &[TokenInfo], json: bool) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(tokens)?);
        return Ok(());
    }
    out!("{:<14} {:<20} {:<9} {:<20} {:<27} {:<27} EXPIRES", "ID", "NAME", "ROLE", "QUEUES", "CREATED", "LAST USED");
    for t in tokens {
        let expires = match (t.revoked_at, t.expires_at) {
            (Some(r), _) => format!("revoked {r}"),
            (None, Some(e)) => e.to_string(),
            (None, None) => "never".into(),
        };
        let queues = if t.payloads { format!("{} (+payloads)", t.queues) } else { t.queues.clone() };
        let last = t.last_used_at.map_or_else(|| "-".into(), |l| l.to_string());
        out!(
            "{:<14} {:<20} {:<9} {:<20} {:<27} {:<27} {expires}",
            t.id,
            t.name,
            t.role,
            queues,
            t.created_at.to_string(),
            last
        );
    }
    Ok(())
}

pub async fn token(a: TokenArgs) -> anyhow::Result<()> {
    match a.command {
        TokenCommand::Create(c) => {
            let role: Role = c.role.parse().map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            let call = CreateTokenCall {
                name: c.name,
                role,
                queues: Some(c.queues),
                payloads: c.payloads,
                expires_in_s: c.expires.map(|d| d.as_secs().max(1)),
            };
            let (secret, info) = match offline_store(&c.store).await? {
                Some(store) => {
                    let now = now();
                    let request = call.request(now).map_err(|e| anyhow::anyhow!("{e}"))?;
                    let (secret, record) = request.issue(rand::random(), now);
                    let record = store.create_token(record).await.context("storing the token")?;
                    (secret, record.info())
                }
                None => {
                    let created = connect(&c.store.connect)?.create_token(&call).await?;
                    (created.token, created.info)
                }
            };
            if c.store.json {
                out!("{}", serde_json::to_string_pretty(&serde_json::json!({"token": secret, "info": info}))?);
            } else {
                eprintln!(
                    "created token {} ({}, role {}, queues {}); the secret is shown only now:",
                    info.name, info.id, info.role, info.queues
                );
                out!("{secret}");
            }
            Ok(())
        }
        TokenCommand::Ls(s) => {
            let tokens = match offline_store(&s).await? {
                Some(store) => store.list_tokens().await?.iter().map(|t| t.info()).collect(),
                None => connect(&s.connect)?.tokens().await?,
            };
            print_tokens(&tokens, s.json)
        }
        TokenCommand::Revoke(r) => {
            let info = match offline_store(&r.store).await? {
                Some(store) => {
                    store.revoke_token(RevokeToken { token: r.id.clone(), now: now() }).await.map(|t| t.info())
                }
                None => Ok(connect(&r.store.connect)?.revoke_token(&r.id).await?),
            }
            .with_context(|| format!("revoking {:?}", r.id))?;
            out!("revoked {} ({})", info.name, info.id);
            Ok(())
        }
    }
}

pub async fn audit(a: AuditArgs) -> anyhow::Result<()> {
    match a.command {
        AuditCommand::Ls(l) => {
            let since = now().saturating_sub(l.since);
            let entries = connect(&l.connect)?.audit(Some(since), l.limit).await?;
            if l.json {
                out!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            for e in entries {
                let detail = e.detail.map(|d| format!("  ({d})")).unwrap_or_default();
                out!("{}  {:<16} {:<16} {}{detail}", e.at, e.actor, e.action, e.target);
            }
            Ok(())
        }
    }
}
