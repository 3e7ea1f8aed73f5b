//! Delivers the event log to webhook endpoints, on the leader (the rules are in
//! [`taskwarden_core::webhooks`]).
//!
//! Each endpoint is taken in turn, all of them at once: its next matching event after its
//! position is POSTed, signed; a 2xx moves the position past it and the next follows; anything
//! else is logged, and the endpoint waits before the next try. One event in flight per endpoint,
//! so each receives its events in the log's order. The position is written only after the
//! answer, so a crash mid-delivery sends that event again: at least once, and receivers
//! deduplicate by `webhook-id`.
//!
//! The address guard is `http.fetch`'s ([`taskwarden_core::address`]): only public addresses
//! unless `--webhook-allow` opens others, checked where the name is resolved (so what is checked
//! is what is connected to) and for URLs that name an address; redirects are not followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use taskwarden_core::address::{AllowRule, check};
use taskwarden_core::events::EventId;
use taskwarden_core::webhooks::{Delivery, Webhook, sign};
use taskwarden_store::{ReadEvents, Store, StoreError, Topic};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::maintenance::Leadership;

/// How long an endpoint has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// How often the leader looks for events to deliver when no task has moved (a task that moves
/// wakes it at once while there are endpoints), and for endpoints when there are none.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The least time between two looks.
const SPACING: Duration = Duration::from_millis(50);
/// Most events delivered to one endpoint in one look, so others get their turn.
const PER_LOOK: usize = 200;
/// Events read per query.
const PAGE: u32 = 500;

pub(crate) async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    allow: Vec<AllowRule>,
    leadership: Leadership,
    shutdown: CancellationToken,
    looks: tokio::sync::watch::Sender<u64>,
) {
    let client = match client(allow.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks are not delivered: their HTTP client did not build");
            return;
        }
    };
    let allow = Arc::new(allow);
    let mut tick = tokio::time::interval(LOOK_EVERY);
    let [mut ready, mut scheduled, mut finished] =
        [Topic::Ready, Topic::Scheduled, Topic::Finished].map(|t| store.subscribe(t));
    // Whether the last look found any endpoint. With none, only the timer looks again: waiting
    // on the changes as well woke this loop on every commit, for nothing, and that wake-up of
    // another thread cost a single client's one-at-a-time submits about a tenth of their rate.
    let mut any = false;
    loop {
        match any {
            true => tokio::select! {
                _ = tick.tick() => {}
                _ = ready.changed() => {}
                _ = scheduled.changed() => {}
                _ = finished.changed() => {}
                _ = shutdown.cancelled() => return,
            },
            false => tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            },
        }
        looks.send_modify(|n| *n += 1);
        if !leadership.leads() {
            continue;
        }
        let hooks = match store.list_webhooks().await {
            Ok(hooks) => hooks,
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhooks failed");
                continue;
            }
        };
        any = !hooks.is_empty();
        let now = clock.now();
        let due = hooks.into_iter().filter(|w| w.disabled.is_none() && w.retry_at.is_none_or(|at| at <= now));
        let deliveries = due.map(|w| deliver(store.as_ref(), clock.as_ref(), &client, &allow, w, &shutdown));
        futures_util::future::join_all(deliveries).await;
        // Under a stream of changes, look at most this often.
        tokio::time::sleep(SPACING).await;
    }
}

/// Delivers what is due to one endpoint, in order, until it is caught up, fails, or has had its
/// turn.
async fn deliver(
    store: &dyn Store,
    clock: &dyn Clock,
    client: &reqwest::Client,
    allow: &[AllowRule],
    mut w: Webhook,
    shutdown: &CancellationToken,
) {
    let filter = w.filter();
    let mut sent = 0;
    while sent < PER_LOOK && !shutdown.is_cancelled() {
        let page = match store.read_events(ReadEvents { after: w.position, limit: PAGE }).await {
            Ok(page) => page,
            Err(e) => return tracing::warn!(webhook = %w.name, error = %e, "reading events for a webhook failed"),
        };
        let Some(last) = page.last().map(|e| e.id) else { return };
        let Some(event) = page.into_iter().find(|e| filter.matches(&e.event)) else {
            // Nothing for this endpoint in the page: move past it.
            let from = w.position;
            w.position = last;
            if !save(store, &w, from).await {
                return;
            }
            continue;
        };
        let from = w.position;
        let started = Instant::now();
        let answer = post(client, allow, &w, &event, clock).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, error) = match &answer {
            Ok(status) if (200..300).contains(status) => (Some(*status), None),
            Ok(status) => (Some(*status), Some(format!("answered {status}"))),
            Err(e) => (None, Some(e.clone())),
        };
        let delivery = Delivery {
            webhook: w.name.clone(),
            event_id: event.id,
            event_type: event.event.event_type.as_str().to_owned(),
            at: clock.now(),
            status,
            error: error.clone(),
            duration_ms,
        };
        if let Err(e) = store.record_delivery(delivery).await {
            tracing::warn!(webhook = %w.name, error = %e, "recording a delivery failed");
        }
        match error {
            None => w.delivered(event.id),
            Some(why) => {
                tracing::debug!(webhook = %w.name, event = %event.id, %why, "webhook delivery failed");
                w.failed(clock.now(), &why);
                if let Some(reason) = &w.disabled {
                    tracing::warn!(webhook = %w.name, %reason, "webhook disabled");
                }
            }
        }
        if !save(store, &w, from).await || w.failures > 0 {
            return;
        }
        sent += 1;
    }
}

/// Writes the endpoint back if its position is still `from` (a replay meanwhile wins).
async fn save(store: &dyn Store, w: &Webhook, from: EventId) -> bool {
    match store.save_webhook(w.clone(), Some(from)).await {
        Ok(()) => true,
        Err(StoreError::Conflict(_) | StoreError::NotFound) => false,
        Err(e) => {
            tracing::warn!(webhook = %w.name, error = %e, "saving a webhook failed");
            false
        }
    }
}

/// POSTs one event, signed; the status, or why there is none.
async fn post(
    client: &reqwest::Client,
    allow: &[AllowRule],
    w: &Webhook,
    event: &taskwarden_core::events::Event,
    clock: &dyn Clock,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&w.url).map_err(|e| format!("{:?} is not a URL: {e}", w.url))?;
    // A URL that names an address is not resolved, so it is checked here.
    if let Some(ip) = url.host_str().and_then(|h| h.trim_matches(['[', ']']).parse().ok()) {
        check(allow, ip, url.port_or_known_default()).map_err(|class| refused(ip, class))?;
    }
    let body = serde_json::to_vec(event).expect("an event serializes");
    let id = event.id.to_string();
    let timestamp = clock.now().as_micros().div_euclid(1_000_000);
    let signature = sign(&w.secret, &id, timestamp, &body).ok_or("the endpoint's secret is not valid")?;
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| with_causes(&e))?;
    if let Some(addr) = resp.remote_addr() {
        check(allow, addr.ip(), Some(addr.port())).map_err(|class| refused(addr.ip(), class))?;
    }
    Ok(resp.status().as_u16())
}

fn refused(ip: std::net::IpAddr, class: taskwarden_core::address::AddressClass) -> String {
    format!("refused to connect to {ip}, {class}; open it with --webhook-allow {ip}")
}

fn client(allow: Vec<AllowRule>) -> reqwest::Result<reqwest::Client> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .dns_resolver(CheckedResolver { allow: Arc::new(allow) })
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect on our behalf, past the checks.
        .no_proxy()
        .timeout(ANSWER_WITHIN)
        .build()
}

/// Resolves with the system resolver and keeps only the addresses the allow-list admits.
struct CheckedResolver {
    allow: Arc<Vec<AllowRule>>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let admitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    let ok = check(&allow, a.ip(), None);
                    if let Err(class) = ok {
                        refusal.get_or_insert_with(|| {
                            format!("{host} resolves to {}: {}", a.ip(), refused(a.ip(), class))
                        });
                    }
                    ok.is_ok()
                })
                .collect();
            match (admitted.is_empty(), refusal) {
                (true, Some(why)) => Err(why.into()),
                _ => Ok(Box::new(admitted.into_iter()) as Addrs),
            }
        })
    }
}

/// reqwest's message with its causes: on its own it says only "error sending request".
fn with_causes(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        let text = err.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = err.source();
    }
    message
}
