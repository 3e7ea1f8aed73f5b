//! Who may do what: roles, queue scopes and the one rule that decides a request.
//!
//! The server works out *who* is calling (a token, looked up by its hash) and asks
//! [`Grant::allows`] whether that caller may take an [`Action`] on a queue. No handler compares
//! roles itself, so the rule lives here, pure, with a table test.
//!
//! Roles, from least to most: `read` < `submit` < `operator` < `admin`; `worker` stands apart: it
//! may run tasks (register, fetch, heartbeat, report, fan out, read parents' results) and nothing
//! else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::validate::ValidationError;

/// A token's role.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Submit,
    Worker,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Read, Role::Submit, Role::Worker, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Worker => "worker",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The rank on the client ladder (`read` < `submit` < `operator` < `admin`); `None` for
    /// `worker`, which is not on it.
    fn rank(self) -> Option<u8> {
        match self {
            Role::Read => Some(0),
            Role::Submit => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
            Role::Worker => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; expected one of read, submit, worker, operator, admin"))
    }
}

/// What a request does. Each route names one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Get, list and wait for tasks, workflows, queues, workers and cron schedules.
    Read,
    /// Submit tasks and workflows.
    Submit,
    /// The worker protocol: register, fetch, heartbeat, report, fan out, parents' results.
    Work,
    /// Cancel and retry; pause, resume, weigh and limit queues; cron schedules.
    Operate,
    /// Tokens and the audit log.
    Admin,
}

impl Action {
    /// The least role that may take this action (worker actions need the `worker` role or admin).
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Read,
            Action::Submit => Role::Submit,
            Action::Work => Role::Worker,
            Action::Operate => Role::Operator,
            Action::Admin => Role::Admin,
        }
    }

    fn allowed_to(self, role: Role) -> bool {
        if role == Role::Admin {
            return true;
        }
        match (self, role.rank()) {
            (Action::Work, _) => role == Role::Worker,
            (_, None) => false,
            (action, Some(rank)) => action.least_role().rank().is_some_and(|need| rank >= need),
        }
    }
}

/// The queues a token may touch: `*` (all), exact names, and prefixes written `billing.*`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueScope(Vec<String>);

impl QueueScope {
    /// Every queue.
    pub fn all() -> QueueScope {
        QueueScope(Vec::new())
    }

    /// Parses a comma-separated list such as `billing.*,reports`, or `*` for every queue. An empty
    /// list is refused rather than read as every queue: an unset variable must not widen a token.
    pub fn parse(list: &str) -> Result<QueueScope, ValidationError> {
        if list.trim().is_empty() {
            return Err(ValidationError::unprocessable(
                "queues",
                "name at least one queue pattern, or * for every queue",
            ));
        }
        let mut patterns = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let stem = raw.strip_suffix('*').unwrap_or(raw);
            if stem.contains('*') || raw.len() > 200 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ValidationError::unprocessable(
                    "queues",
                    format!("{raw:?} is not a queue pattern (a name, or a prefix ending in *)"),
                ));
            }
            if raw == "*" {
                return Ok(QueueScope::all());
            }
            patterns.push(raw.to_owned());
        }
        Ok(QueueScope(patterns))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    pub fn contains(&self, queue: &str) -> bool {
        self.is_all()
            || self.0.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => queue.starts_with(prefix),
                None => p == queue,
            })
    }
}

impl fmt::Display for QueueScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() { f.write_str("*") } else { f.write_str(&self.0.join(",")) }
    }
}

/// What a caller may do: its role, its queues and whether it sees payloads and results.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Grant {
    pub role: Role,
    pub queues: QueueScope,
    /// Whether a `read` token sees payloads and results (every other role does).
    pub payloads: bool,
}

/// Why a request is refused: the role it lacks, or the queue outside its scope.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Denied {
    #[error("this needs the {needed} role; the token has {has}")]
    Role { needed: Role, has: Role },
    #[error("the token may not use queue {queue:?} (its queues: {scope})")]
    Queue { queue: String, scope: String },
}

impl Grant {
    /// What a server without tokens grants every caller.
    pub fn open() -> Grant {
        Grant { role: Role::Admin, queues: QueueScope::all(), payloads: true }
    }

    /// May this caller take `action`, on `queue` when the action is about one?
    pub fn allows(&self, action: Action, queue: Option<&str>) -> Result<(), Denied> {
        if !action.allowed_to(self.role) {
            let needed = action.least_role();
            return Err(Denied::Role { needed, has: self.role });
        }
        // Tokens and the audit log are about every queue: a scoped admin could otherwise make
        // itself an unscoped one.
        if action == Action::Admin && !self.queues.is_all() {
            return Err(Denied::Queue { queue: "*".into(), scope: self.queues.to_string() });
        }
        match queue {
            Some(q) if !self.queues.contains(q) => {
                Err(Denied::Queue { queue: q.to_owned(), scope: self.queues.to_string() })
            }
            _ => Ok(()),
        }
    }

    /// Whether payloads and results are shown to this caller.
    pub fn sees_payloads(&self) -> bool {
        self.payloads || self.role != Role::Read
    }
}

/// A token as the server keeps it: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A short public id (`tok_...`), shown in lists and the audit log.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub queues: QueueScope,
    pub payloads: bool,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl TokenRecord {
    pub fn grant(&self) -> Grant {
        Grant { role: self.role, queues: self.queues.clone(), payloads: self.payloads }
    }

    /// Whether the token may be used at `now`.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// What lists show of a token: everything but its hash.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            queues: self.queues.to_string(),
            payloads: self.payloads,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
        }
    }
}

/// What a new token is to be: everything but its secret and id, which come from random bytes.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    pub queues: QueueScope,
    pub payloads: bool,
    pub expires_at: Option<Timestamp>,
}

/// The prefix of every token's secret, so a leaked one is easy to spot (and to scan for).
pub const SECRET_PREFIX: &str = "tw_";

impl TokenRequest {
    /// Checks the name (plain characters, up to 64 bytes).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
        if self.name.is_empty() || self.name.len() > 64 || !self.name.chars().all(ok) {
            return Err(ValidationError::new(
                "name",
                "must be 1 to 64 letters, digits or - _ . @ : (it names the token in lists and the audit log)",
            ));
        }
        if self.name.starts_with("tok_") {
            return Err(ValidationError::unprocessable("name", "must not start with tok_ (token ids do)"));
        }
        if self.role == Role::Admin && !self.queues.is_all() {
            return Err(ValidationError::unprocessable("queues", "an admin token is for every queue (*)"));
        }
        Ok(())
    }

    /// The token: its secret, shown once, and the record the store keeps (only the secret's
    /// hash). `random` supplies the secret and the id.
    pub fn issue(self, random: [u8; 36], now: Timestamp) -> (String, TokenRecord) {
        let secret = format!("{SECRET_PREFIX}{}", hex(&random[..32]));
        let record = TokenRecord {
            id: format!("tok_{}", hex(&random[32..])),
            name: self.name,
            role: self.role,
            queues: self.queues,
            payloads: self.payloads,
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        (secret, record)
    }
}

/// The hash a token's secret is kept and looked up as: SHA-256, in hex. Secrets are 256 random
/// bits, so a fast hash is enough (there is nothing to guess); a slow one would tax every request.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A token as lists show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `*` or a comma-separated list of queue patterns.
    pub queues: String,
    pub payloads: bool,
    pub created_at: Timestamp,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
}

/// One change made through the API (or a request refused for lack of rights), as the audit log
/// keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The token's name, or `(open)` on a server without tokens, `(none)` for a refused request
    /// that carried no usable token.
    pub actor: String,
    /// What was done, such as `task.cancel`, `queue.pause`, `token.create`, or `denied`.
    pub action: String,
    /// What it was done to: a task id, a queue or schedule name, a token name, or the route.
    pub target: String,
    /// For a refusal, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests;

/// `POST /v1/tokens`: a new token.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenCall {
    #[schema(schema_with = crate::schema::token_name)]
    pub name: String,
    pub role: Role,
    /// Comma-separated queue patterns (`billing.*,reports`); absent or `*` for every queue.
    #[serde(default)]
    pub queues: Option<String>,
    /// Whether a `read` token sees payloads and results.
    #[serde(default)]
    pub payloads: bool,
    /// How long the token lasts, in seconds; absent for no expiry.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3_162_240_000_u64)]
    pub expires_in_s: Option<u64>,
}

impl CreateTokenCall {
    pub fn request(self, now: Timestamp) -> Result<TokenRequest, ValidationError> {
        let queues = QueueScope::parse(self.queues.as_deref().unwrap_or("*"))?;
        let expires_at = match self.expires_in_s {
            Some(0) => return Err(ValidationError::new("expires_in_s", "must be positive")),
            Some(s) if s > 100 * 366 * 24 * 3600 => {
                return Err(ValidationError::new("expires_in_s", "must be at most 100 years"));
            }
            Some(s) => Some(now.saturating_add(std::time::Duration::from_secs(s))),
            None => None,
        };
        let req = TokenRequest { name: self.name, role: self.role, queues, payloads: self.payloads, expires_at };
        req.validate()?;
        Ok(req)
    }
}

/// The answer to `POST /v1/tokens`: the secret, shown this once, and the token as listed.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}
