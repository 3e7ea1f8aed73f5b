//! Webhooks: endpoints that are sent the events they asked for, in order, signed the Standard
//! Webhooks way, each at least once.
//!
//! An endpoint keeps its position in the event log; the leader sends it the next matching event,
//! and moves the position past that event only once the endpoint answered 2xx (so a crash sends it
//! again: at least once). A failure waits [`retry_delay`] before the next try, and
//! [`DISABLE_AFTER`] failures in a row disable the endpoint until it is enabled again.
//!
//! Signing (<https://www.standardwebhooks.com>): headers `webhook-id` (the event id, the same on
//! every retry, to deduplicate by), `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the secret, whose `whsec_`
//! prefix is dropped and the rest base64-decoded).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::auth::QueueScope;
use crate::events::{EventFilter, EventId, EventType};
use crate::time::Timestamp;
use crate::validate::ValidationError;

/// Failures in a row after which an endpoint is disabled (with the delays below, about a day of
/// failing).
pub const DISABLE_AFTER: u32 = 150;

/// An endpoint, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    /// `whsec_` and 24 random bytes in base64.
    pub secret: String,
    /// The event types it is sent; empty: every type.
    pub events: Vec<EventType>,
    /// Only events of these queues; empty: every queue (and events of no queue).
    pub queues: Vec<String>,
    /// Every event up to here was delivered (or did not match).
    pub position: EventId,
    /// Failures in a row.
    pub failures: u32,
    /// No try before this time (after a failure).
    pub retry_at: Option<Timestamp>,
    /// Why it is disabled, if it is.
    pub disabled: Option<String>,
    pub created_at: Timestamp,
}

impl Webhook {
    /// Which events it is sent.
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            queues: self.queues.clone(),
            types: self.events.clone(),
            scope: QueueScope::all(),
            ..Default::default()
        }
    }

    /// As the API shows it: everything but the secret.
    pub fn info(&self) -> WebhookInfo {
        WebhookInfo {
            name: self.name.clone(),
            url: self.url.clone(),
            events: self.events.iter().map(|e| e.as_str().to_owned()).collect(),
            queues: self.queues.clone(),
            position: self.position,
            failures: self.failures,
            retry_at: self.retry_at,
            disabled: self.disabled.clone(),
            created_at: self.created_at,
        }
    }

    /// After a 2xx for the event at `delivered`.
    pub fn delivered(&mut self, delivered: EventId) {
        self.position = delivered;
        self.failures = 0;
        self.retry_at = None;
    }

    /// After a failed try at `now`: the next waits longer; past [`DISABLE_AFTER`] it is disabled.
    pub fn failed(&mut self, now: Timestamp, why: &str) {
        self.failures += 1;
        self.retry_at = Some(now.saturating_add(retry_delay(self.failures)));
        if self.failures >= DISABLE_AFTER {
            self.disabled = Some(format!("disabled after {} failures in a row; the last: {why}", self.failures));
        }
    }
}

/// How long to wait after the `failures`-th failure in a row: 1 s, doubling, at most 10 minutes.
pub fn retry_delay(failures: u32) -> Duration {
    let doubled = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(doubled.min(600))
}

/// An endpoint as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookInfo {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub queues: Vec<String>,
    /// Every event up to this id was delivered (or did not match).
    #[schema(value_type = String)]
    pub position: EventId,
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    pub created_at: Timestamp,
}

/// `POST /v1/webhooks`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookCall {
    /// 1 to 64 of a-z A-Z 0-9 _ - .
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// Where events are POSTed: an http:// or https:// URL.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Event types (`task.failed`, ...); empty or absent: every type.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub events: Vec<String>,
    /// Only events of these queues; empty or absent: every queue.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub queues: Vec<String>,
}

/// The answer to `POST /v1/webhooks`: the endpoint, and its secret, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    pub webhook: WebhookInfo,
    /// Verify deliveries with it (see the README's "Webhooks"); it is not shown again.
    pub secret: String,
}

impl CreateWebhookCall {
    /// The endpoint it asks for, starting after `position` (the end of the log: it is sent what
    /// happens from now on), with a secret made from `random`.
    pub fn webhook(self, random: [u8; 24], position: EventId, now: Timestamp) -> Result<Webhook, ValidationError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            return Err(ValidationError::unprocessable("name", "must be 1 to 64 of a-z A-Z 0-9 _ - ."));
        }
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > 2048 || self.url.chars().any(char::is_whitespace) {
            return Err(ValidationError::unprocessable(
                "url",
                "must be an http:// or https:// URL of at most 2048 characters",
            ));
        }
        if self.events.len() > 32 {
            return Err(ValidationError::unprocessable("events", "at most 32 event types"));
        }
        let events = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| e.parse::<EventType>().map_err(|m| ValidationError::unprocessable(format!("events[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        if self.queues.len() > 64 {
            return Err(ValidationError::unprocessable("queues", "at most 64 queues"));
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.is_empty() || q.chars().count() > crate::schema::NAME_MAX_CHARS || q.chars().any(char::is_control) {
                return Err(ValidationError::unprocessable(format!("queues[{i}]"), "must be a queue name"));
            }
        }
        Ok(Webhook {
            name: self.name,
            url: self.url,
            secret: format!("whsec_{}", STANDARD.encode(random)),
            events,
            queues: self.queues,
            position,
            failures: 0,
            retry_at: None,
            disabled: None,
            created_at: now,
        })
    }
}

/// One try at delivering one event to one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub webhook: String,
    #[schema(value_type = String)]
    pub event_id: EventId,
    pub event_type: String,
    pub at: Timestamp,
    /// The endpoint's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// `GET /v1/webhooks/{name}/deliveries`: newest first.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

/// `GET /v1/webhooks`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

/// `POST /v1/webhooks/{name}/replay`: send again every matching event after `after`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayCall {
    /// An event id (deliveries start after it), `0` for every event still kept.
    #[schema(pattern = "^[0-9]{1,19}(-[0-9]{1,19})?$")]
    pub after: String,
}

/// The `webhook-signature` header's value for a message: `v1,` and the base64 HMAC-SHA256 of
/// `{msg_id}.{timestamp}.{body}` under the secret. `None` for a secret that is not
/// `whsec_` and base64.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_matches_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(sign("not-a-secret", "m", 1, b""), None);
    }

    #[test]
    fn failures_back_off_then_disable() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(40), Duration::from_secs(600));
        let call = CreateWebhookCall {
            name: "ops".into(),
            url: "https://example.com/h".into(),
            events: vec!["task.failed".into()],
            queues: vec![],
        };
        let mut w = call.webhook([7; 24], EventId { tx: 0, seq: 3 }, Timestamp::from_millis(0)).unwrap();
        assert!(w.secret.starts_with("whsec_"));
        assert_eq!(w.filter().types, [EventType::TaskFailed]);
        for _ in 0..DISABLE_AFTER - 1 {
            w.failed(Timestamp::from_millis(0), "500");
        }
        assert!(w.disabled.is_none());
        w.failed(Timestamp::from_millis(0), "500");
        assert!(w.disabled.as_deref().unwrap().contains("500"));
        w.delivered(EventId { tx: 0, seq: 9 });
        assert_eq!((w.position, w.failures, w.retry_at), (EventId { tx: 0, seq: 9 }, 0, None));
    }

    #[test]
    fn a_bad_endpoint_is_refused_naming_the_field() {
        let ok = CreateWebhookCall { name: "a".into(), url: "https://x/".into(), events: vec![], queues: vec![] };
        let field =
            |c: CreateWebhookCall| c.webhook([0; 24], EventId::START, Timestamp::from_millis(0)).unwrap_err().field;
        assert_eq!(field(CreateWebhookCall { name: "a b".into(), ..ok.clone() }), "name");
        assert_eq!(field(CreateWebhookCall { url: "ftp://x".into(), ..ok.clone() }), "url");
        assert_eq!(field(CreateWebhookCall { events: vec!["task.exploded".into()], ..ok.clone() }), "events[0]");
        assert_eq!(field(CreateWebhookCall { queues: vec![String::new()], ..ok }), "queues[0]");
    }
}
