//! What the built-in `http.fetch` handler may reach and how much it may read: the [`FetchPolicy`],
//! its allow-list of [`AllowRule`]s (the address classification is `taskwarden_core::address`,
//! shared with the server's webhooks). Pure data and decisions; `fetch_guard` enforces them on
//! the wire.

use std::net::IpAddr;
use std::time::Duration;

pub use taskwarden_core::address::{AddressClass, AllowRule, AllowRuleError};

use crate::WorkerError;

/// What the built-in `http.fetch` handler may reach and how much it may read.
///
/// Anyone who can submit a task chooses the URL and can read the result, so by default a fetch
/// reaches only the public internet: loopback, private (RFC 1918, `fc00::/7`), link-local
/// (`169.254.0.0/16` with the cloud metadata service, `fe80::/10`), carrier-grade NAT
/// (`100.64.0.0/10`), unspecified, broadcast, multicast and reserved addresses are refused, in
/// IPv4-mapped IPv6 form too, unless an [`AllowRule`] opens them.
///
/// ```
/// use std::time::Duration;
/// use taskwarden_worker::{AllowRule, FetchPolicy};
///
/// let policy = FetchPolicy {
///     allow: AllowRule::parse_list("10.0.0.0/8,127.0.0.1:8080")?,
///     max_time: Duration::from_secs(10),
///     ..FetchPolicy::default()
/// };
/// # let _ = policy;
/// # Ok::<(), taskwarden_worker::AllowRuleError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FetchPolicy {
    /// Non-public addresses a fetch may reach after all. Public addresses need no rule.
    pub allow: Vec<AllowRule>,
    /// Most bytes of a response body read; the rest is never read (the result says `truncated`).
    pub max_bytes: u64,
    /// Longest one fetch may take, connecting, redirects and body together. A payload's
    /// `timeout_ms` may ask for less, never more.
    pub max_time: Duration,
    /// Most redirects followed; each hop is checked like the first URL.
    pub max_redirects: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy { allow: Vec::new(), max_bytes: 1 << 20, max_time: Duration::from_secs(30), max_redirects: 5 }
    }
}

impl FetchPolicy {
    /// Opens one more address, block or address and port.
    pub fn allow(mut self, rule: AllowRule) -> Self {
        self.allow.push(rule);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), WorkerError> {
        if self.max_bytes == 0 {
            return Err(WorkerError::Config("fetch policy: max_bytes must be positive".into()));
        }
        if self.max_time.is_zero() {
            return Err(WorkerError::Config("fetch policy: max_time must be positive".into()));
        }
        Ok(())
    }

    /// Whether a fetch may connect to `ip` on `port`. `port` is `None` where it is not known:
    /// the DNS resolver sees only the host name, so there only rules without a port apply.
    pub(crate) fn check(&self, ip: IpAddr, port: Option<u16>) -> Result<(), AddressClass> {
        taskwarden_core::address::check(&self.allow, ip, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_could_never_fetch_is_refused() {
        assert!(FetchPolicy::default().validate().is_ok());
        let err = FetchPolicy { max_bytes: 0, ..FetchPolicy::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("max_bytes"), "{err}");
        let err = FetchPolicy { max_time: Duration::ZERO, ..FetchPolicy::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("max_time"), "{err}");
    }
}
