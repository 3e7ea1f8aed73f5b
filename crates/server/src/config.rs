use std::time::Duration;

use taskwarden_core::{Limits, ValidationError};

/// The server's settings. Flags, environment variables and the config file all feed this struct.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub limits: Limits,
    /// How long an idempotency key keeps returning the task it first created.
    pub idempotency_window: Duration,
    /// The largest request body accepted (a batch of submits is the largest).
    pub max_body_bytes: usize,
    /// How often expired leases are looked for. A lease is reaped at most this long after it ran out.
    pub reap_interval: Duration,
    /// The longest a delayed task waits past its `run_at` if no other event wakes the promoter.
    pub promote_interval: Duration,
    /// This node's name: the holder of the leader lease when it leads.
    pub node_name: String,
    /// How long the leader lease lasts unless renewed (it is renewed every third of this). When
    /// the leader dies, another node takes over the background loops within about this long.
    pub leader_lease: Duration,
    /// How long finished tasks (and decided workflows) are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// How often expired idempotency keys and finished work past retention are deleted.
    pub prune_interval: Duration,
}

/// A node name unique enough to tell nodes apart: host, process and a random suffix.
pub fn default_node_name() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            max_body_bytes: 32 << 20,
            reap_interval: Duration::from_millis(250),
            promote_interval: Duration::from_secs(1),
            node_name: default_node_name(),
            leader_lease: Duration::from_secs(5),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            prune_interval: Duration::from_secs(60),
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.max_body_bytes < self.limits.max_payload_bytes {
            return Err(ValidationError::new("max_body_bytes", "must be at least the payload limit"));
        }
        if self.limits.max_payload_bytes == 0 {
            return Err(ValidationError::new("max_payload_bytes", "must be positive"));
        }
        if self.reap_interval.is_zero() || self.promote_interval.is_zero() || self.prune_interval.is_zero() {
            return Err(ValidationError::new("reap_interval", "intervals must be positive"));
        }
        if self.leader_lease < Duration::from_millis(300) {
            return Err(ValidationError::new("leader_lease", "must be at least 300ms"));
        }
        if self.node_name.is_empty() {
            return Err(ValidationError::new("node_name", "must not be empty"));
        }
        Ok(())
    }
}
