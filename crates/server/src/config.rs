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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            max_body_bytes: 32 << 20,
            reap_interval: Duration::from_millis(250),
            promote_interval: Duration::from_secs(1),
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
        if self.reap_interval.is_zero() || self.promote_interval.is_zero() {
            return Err(ValidationError::new("reap_interval", "intervals must be positive"));
        }
        Ok(())
    }
}
