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
    /// Host names (no port) the server answers for in `Host` and `Origin`. Empty: the loopback
    /// names, checked only while no token exists (with tokens, a forged page has no token to send).
    /// Given: checked on every request; `*` answers for any (only sensible with tokens: without
    /// them, any web page whose name resolves to this server could use it).
    pub allowed_hosts: Vec<String>,
    /// Serve without authentication on an address other than loopback. Logged loudly at start.
    pub insecure_no_auth: bool,
    /// How often tokens are read again from the store: a token made or revoked on another node
    /// takes effect here within this long.
    pub token_refresh: Duration,
    /// How long audit log entries are kept.
    pub audit_retention: Duration,
    /// The store keeps the event log (the store's own setting, told to the server): off, the
    /// event stream, the per-minute history and webhooks answer 409, having nothing to serve.
    pub event_log: bool,
    /// How long the event log keeps an event (a stream can resume from any event still kept).
    pub event_retention: Duration,
    /// How long the per-minute history (`GET /v1/stats`) is kept.
    pub stats_retention: Duration,
    /// How often the leader rolls new events up into the per-minute history.
    pub stats_interval: Duration,
    /// Non-public addresses webhooks may be delivered to after all (as `http.fetch`'s
    /// `--fetch-allow`); public addresses need no rule.
    pub webhook_allow: Vec<taskwarden_core::address::AllowRule>,
    /// Connection limits and timeouts.
    pub http: HttpConfig,
    /// Serve HTTPS with this certificate; `None` serves plain HTTP.
    pub tls: Option<crate::TlsConfig>,
    /// What `/metrics` shows: label caps and histogram buckets.
    pub metrics: crate::MetricsConfig,
    /// Also serve `/metrics`, alone and without a token, on this address (for a Prometheus that
    /// holds no token; keep it on a private network).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Make spans for submits, leases and reports with the OpenTelemetry tracer provider the
    /// process installed. Off, no span is made; a submit's `traceparent` is stored as it came.
    pub traces: bool,
}

/// What a connection may take: time to send its headers and body, time idle between requests,
/// and how many may be open at once. The defaults are set so a slow-client attack cannot wear them
/// down: a connection that sends nothing useful is closed within seconds.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The longest a client may take to send a request's headers (and a TLS handshake).
    pub header_read_timeout: Duration,
    /// The longest a request's body may take to arrive once its headers have.
    pub body_read_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Most connections open at once; past it the longest-idle one is closed to make room.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
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
            allowed_hosts: Vec::new(),
            insecure_no_auth: false,
            token_refresh: Duration::from_millis(500),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            stats_retention: Duration::from_secs(7 * 24 * 3600),
            stats_interval: Duration::from_secs(5),
            webhook_allow: Vec::new(),
            http: HttpConfig::default(),
            tls: None,
            metrics: crate::MetricsConfig::default(),
            metrics_listen: None,
            traces: false,
            event_log: true,
        }
    }
}

impl ServerConfig {
    /// The host names requests may name: the configured ones, or the loopback names.
    pub(crate) fn allowed_hosts(&self) -> Vec<String> {
        match self.allowed_hosts.is_empty() {
            true => crate::guard::LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect(),
            false => self.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

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
        if self.stats_interval.is_zero() {
            return Err(ValidationError::new("stats_interval", "must be positive"));
        }
        if self.leader_lease < Duration::from_millis(300) {
            return Err(ValidationError::new("leader_lease", "must be at least 300ms"));
        }
        if self.token_refresh.is_zero() || self.token_refresh > Duration::from_secs(60) {
            return Err(ValidationError::new("token_refresh", "must be between 1ms and 60s"));
        }
        if self.limits.max_json_depth < 2 {
            return Err(ValidationError::new("max_json_depth", "must be at least 2"));
        }
        if let Some(h) = self.allowed_hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' ', ','])) {
            return Err(ValidationError::new("allowed_hosts", format!("{h:?} is not a host name")));
        }
        let h = &self.http;
        for (field, d) in [
            ("header_read_timeout", h.header_read_timeout),
            ("body_read_timeout", h.body_read_timeout),
            ("idle_timeout", h.idle_timeout),
        ] {
            if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
                return Err(ValidationError::new(field, "must be between 10ms and 1h"));
            }
        }
        if !(16..=1_000_000).contains(&h.max_connections) {
            return Err(ValidationError::new("max_connections", "must be between 16 and 1000000"));
        }
        if self.node_name.is_empty() {
            return Err(ValidationError::new("node_name", "must not be empty"));
        }
        Ok(())
    }
}
