//! Who is calling: the one place the API learns it. Every handler names a [`Caller`] in its
//! signature and asks it whether the caller may do a thing ([`Caller::may`]); the rule itself is
//! the core's ([`Grant::allows`]).
//!
//! Tokens are kept in memory as a table by hash, reloaded from the store every
//! `token_refresh` (so a token made or revoked on any node holds here within that), and a
//! request costs no database round trip to authenticate. A server whose store holds no token at
//! all serves everyone as an admin: the laptop case, allowed only on loopback (see `exposure`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use taskwarden_core::Timestamp;
use taskwarden_core::auth::{Action, AuditEntry, Grant, TokenRecord, hash_secret};
use taskwarden_store::{Store, StoreError, TouchTokens};

use crate::api::AppState;
use crate::error::ApiError;

/// The tokens as last read from the store.
#[derive(Default)]
struct TokenTable {
    by_hash: HashMap<String, TokenRecord>,
    /// Whether any token was ever made (revoked and expired ones count): from then on every
    /// request needs one, so revoking the last token does not open the server.
    any: bool,
}

/// The server's view of tokens, worker owners and the audit log.
pub(crate) struct Access {
    store: Arc<dyn Store>,
    tokens: RwLock<Arc<TokenTable>>,
    /// Whether the table was loaded at least once: until then nothing is served as open.
    loaded: std::sync::atomic::AtomicBool,
    /// When each token was last used, written to the store at the next refresh.
    used: Mutex<HashMap<String, Timestamp>>,
    /// Which token registered each worker (`None`: registered on an open server). A worker's
    /// owner never changes, so a cached answer stays true.
    owners: Mutex<HashMap<String, Option<String>>>,
    /// Refusals waiting to be written to the audit log, in batches (a flood of refused requests
    /// must not become a flood of commits). Bounded: past it, refusals are only logged.
    denied: Mutex<Vec<AuditEntry>>,
    /// Held across a refresh's read and swap, so a refresh that read the tokens before a revoke
    /// cannot install its stale table after one that read them after.
    refreshing: tokio::sync::Mutex<()>,
}

/// Most refusals kept between two flushes of the audit log.
const MAX_PENDING_DENIALS: usize = 1000;
/// Most worker owners cached; past it the cache starts over.
const MAX_CACHED_OWNERS: usize = 100_000;

impl Access {
    pub(crate) fn new(store: Arc<dyn Store>) -> Access {
        Access {
            store,
            tokens: RwLock::default(),
            loaded: false.into(),
            used: Mutex::default(),
            owners: Mutex::default(),
            denied: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the tokens again, and writes what was noted since the last refresh (last uses,
    /// refusals).
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let records = self.store.list_tokens().await?;
        let table = TokenTable {
            any: !records.is_empty(),
            by_hash: records.into_iter().map(|t| (t.secret_hash.clone(), t)).collect(),
        };
        *self.tokens.write().expect("token table lock") = Arc::new(table);
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        let used: Vec<_> = std::mem::take(&mut *self.used.lock().expect("used lock")).into_iter().collect();
        if !used.is_empty() {
            self.store.touch_tokens(TouchTokens { used }).await?;
        }
        let denied = std::mem::take(&mut *self.denied.lock().expect("denied lock"));
        if !denied.is_empty() {
            self.store.record_audit(denied).await?;
        }
        Ok(())
    }

    /// Whether requests need a token.
    pub(crate) fn required(&self) -> bool {
        self.tokens.read().expect("token table lock").any
    }

    fn authenticate(&self, bearer: Option<&str>, now: Timestamp) -> Result<Caller, ApiError> {
        if !self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "starting up; retry shortly"));
        }
        let table = self.tokens.read().expect("token table lock").clone();
        if !table.any {
            return Ok(Caller::open());
        }
        let Some(secret) = bearer else {
            return Err(unauthenticated("this server needs a token: send Authorization: Bearer <token>"));
        };
        let Some(token) = table.by_hash.get(&hash_secret(secret)) else {
            return Err(unauthenticated("unknown token"));
        };
        if token.revoked_at.is_some() {
            return Err(unauthenticated("the token was revoked"));
        }
        if !token.usable(now) {
            return Err(unauthenticated("the token has expired"));
        }
        self.used.lock().expect("used lock").insert(token.id.clone(), now);
        Ok(Caller { name: token.name.clone(), token_id: Some(token.id.clone()), grant: token.grant() })
    }

    fn note_denial(&self, entry: AuditEntry) {
        tracing::warn!(actor = %entry.actor, target = %entry.target, detail = ?entry.detail, "request refused");
        let mut pending = self.denied.lock().expect("denied lock");
        if pending.len() < MAX_PENDING_DENIALS {
            pending.push(entry);
        }
    }

    /// The token that registered `worker`; `NotFound` for a worker that never registered.
    async fn owner(&self, worker: &str) -> Result<Option<String>, StoreError> {
        if let Some(owner) = self.owners.lock().expect("owners lock").get(worker) {
            return Ok(owner.clone());
        }
        let owner = self.store.worker_owner(worker).await?;
        let mut owners = self.owners.lock().expect("owners lock");
        if owners.len() >= MAX_CACHED_OWNERS {
            owners.clear();
        }
        owners.insert(worker.to_owned(), owner.clone());
        Ok(owner)
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// Who is calling, and what they may do.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The token's name (`(open)` on a server without tokens).
    pub name: String,
    /// The token's id; `None` on a server without tokens.
    pub token_id: Option<String>,
    pub grant: Grant,
}

impl Caller {
    fn open() -> Caller {
        Caller { name: "(open)".into(), token_id: None, grant: Grant::open() }
    }

    /// Whether requests carry tokens at all on this server (workers are then bound to theirs).
    pub fn authenticated(&self) -> bool {
        self.token_id.is_some()
    }

    pub fn sees_payloads(&self) -> bool {
        self.grant.sees_payloads()
    }

    /// Refuses, with a 403 naming the missing role or queue (and a line in the audit log),
    /// unless the caller may take `action` on `queue`.
    pub fn may(&self, s: &AppState, action: Action, queue: Option<&str>) -> Result<(), ApiError> {
        self.grant.allows(action, queue).map_err(|denied| {
            let field = match denied {
                taskwarden_core::auth::Denied::Role { .. } => "role",
                taskwarden_core::auth::Denied::Queue { .. } => "queue",
            };
            let target = queue.map_or_else(|| format!("{action:?}").to_lowercase(), str::to_owned);
            self.refuse(s, target, field, denied.to_string())
        })
    }

    /// A 403 naming `field`, noted in the audit log as a refusal of `target`.
    fn refuse(&self, s: &AppState, target: String, field: &str, why: String) -> ApiError {
        s.access.note_denial(AuditEntry {
            at: s.clock.now(),
            actor: self.name.clone(),
            action: "denied".into(),
            target,
            detail: Some(why.clone()),
        });
        ApiError { field: Some(field.into()), ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", why) }
    }

    /// [`Caller::may`] for every queue of a request.
    pub fn may_all<'a>(
        &self,
        s: &AppState,
        action: Action,
        queues: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        self.may(s, action, None)?;
        queues.into_iter().try_for_each(|q| self.may(s, action, Some(q)))
    }

    /// Refuses a worker call about a worker this caller did not register. On a server without
    /// tokens any caller may act as any worker, as before tokens existed.
    pub async fn owns_worker(&self, s: &AppState, worker: &str) -> Result<(), ApiError> {
        let Some(me) = &self.token_id else { return Ok(()) };
        let owner = match s.access.owner(worker).await {
            Err(StoreError::NotFound) => None,
            other => Some(other?),
        };
        if owner.as_ref().and_then(|o| o.as_ref()) == Some(me) {
            return Ok(());
        }
        let why = match owner {
            None => format!("worker {worker:?} is not registered: register with POST /v1/workers first"),
            Some(_) => format!("worker {worker:?} was registered by another token"),
        };
        Err(self.refuse(s, format!("worker {worker}"), "worker_id", why))
    }

    /// Refuses a call about `task` unless this caller registered the worker running it (a
    /// fan-out, its parents' results). Without tokens, anyone may.
    pub async fn runs(&self, s: &AppState, task: &taskwarden_core::Task) -> Result<(), ApiError> {
        if !self.authenticated() {
            return Ok(());
        }
        let running = task.lease.as_ref().filter(|_| task.state == taskwarden_core::TaskState::Running);
        self.owns_worker(s, running.map_or("", |l| l.worker_id.as_str())).await
    }

    /// Records a change this caller made. The change already happened, so a failure to write
    /// the entry is logged rather than answered.
    pub async fn audit(&self, s: &AppState, action: &str, target: impl Into<String>) {
        let entry = AuditEntry {
            at: s.clock.now(),
            actor: self.name.clone(),
            action: action.into(),
            target: target.into(),
            detail: None,
        };
        if let Err(e) = s.store.record_audit(vec![entry]).await {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Caller, ApiError> {
        let bearer = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
                Some(v.ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <token>`"))?)
            }
        };
        s.access.authenticate(bearer, s.clock.now())
    }
}

/// Re-reads tokens every `token_refresh` (and forgets audit entries past retention every hour)
/// until shutdown.
pub(crate) fn spawn_refresh(
    access: Arc<Access>,
    clock: Arc<dyn crate::Clock>,
    config: &crate::ServerConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (every, retention) = (config.token_refresh, config.audit_retention);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = access.refresh().await {
                tracing::warn!(error = %e, "cannot refresh the tokens; keeping the ones read before");
            }
            if last_prune.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(3600)) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(e) = access.store.prune_audit(clock.now().saturating_sub(retention)).await {
                    tracing::warn!(error = %e, "cannot prune the audit log");
                }
            }
        }
        // What was noted since the last pass (refusals, last uses) is still written.
        let _ = access.refresh().await;
    })
}
