//! Accepting connections: the limits a slow or greedy client meets before any handler runs.
//!
//! - Headers must arrive within `header_read_timeout` (hyper closes the connection otherwise);
//!   a TLS handshake within the same.
//! - A kept-alive connection with no request in flight is closed after `idle_timeout`.
//! - At most `max_connections` are open. A new connection past the cap makes room by closing
//!   the connection that has been idle longest, so clients that hold sockets open without using
//!   them cannot lock others out; if every connection is busy, the new one gets a 503 (or, for
//!   `/healthz`, its answer) and is closed.
//!
//! Why not `axum::serve`: it has no header timeout, idle timeout or connection cap, and no TLS.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::tls::TlsAcceptor;

/// One open connection, as the cap and the idle timer see it.
struct Tracked {
    /// Requests being served on it now.
    in_flight: AtomicUsize,
    /// When a request last started or ended, in ms since the server started.
    last_active: AtomicU64,
    /// Fired to close it (gracefully: an in-flight request is finished first).
    close: CancellationToken,
}

/// The open connections, by id.
struct Registry {
    started: Instant,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a new connection if there is room, closing the longest-idle one to make it.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Tracked>)> {
        let mut open = self.open.lock().expect("registry lock");
        if open.len() >= max {
            let idlest = open
                .iter()
                .filter(|(_, t)| t.in_flight.load(Ordering::Acquire) == 0 && !t.close.is_cancelled())
                .min_by_key(|(_, t)| t.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            // Out of the count at once: it is closing, and the newcomer takes its place.
            let evicted = open.remove(&idlest).expect("found just now");
            evicted.close.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            close: CancellationToken::new(),
        });
        open.insert(id, tracked.clone());
        Some((id, tracked))
    }

    fn forget(&self, id: u64) {
        self.open.lock().expect("registry lock").remove(&id);
    }

    fn close_all(&self) {
        for t in self.open.lock().expect("registry lock").values() {
            t.close.cancel();
        }
    }
}

/// A connection's place in the registry, given up when the connection's task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.forget(self.id);
    }
}

/// A request in flight on a connection; its end is counted even if the request's future is
/// dropped or panics, so a connection never stays busy (and unevictable) by mistake.
struct Busy {
    registry: Arc<Registry>,
    tracked: Arc<Tracked>,
}

impl Busy {
    fn start(registry: Arc<Registry>, tracked: Arc<Tracked>) -> Busy {
        tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        tracked.last_active.store(registry.now_ms(), Ordering::Relaxed);
        Busy { registry, tracked }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.tracked.last_active.store(self.registry.now_ms(), Ordering::Relaxed);
        self.tracked.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many refused connections are answered at once; past it they are just closed.
const MAX_REFUSALS_AT_ONCE: usize = 256;

/// Serves `router` on `listener` until `shutdown` fires, then closes every connection once its
/// in-flight request is answered.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    http: HttpConfig,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry { started: Instant::now(), open: Mutex::default(), next_id: AtomicU64::new(0) });
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSALS_AT_ONCE));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: pause rather than spin; closing idle
                    // connections frees some.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            // Small request/response pairs on kept-alive connections: without TCP_NODELAY,
            // Nagle's algorithm meets delayed ACKs and a reply can sit for tens of milliseconds.
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some((id, tracked)) = registry.admit(http.max_connections) else {
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                let (tls, http) = (tls.clone(), http.clone());
                connections.spawn(async move {
                    refuse(tcp, tls, &http).await;
                    drop(permit);
                });
            }
            continue;
        };
        let (router, registry, tls, http) = (router.clone(), registry.clone(), tls.clone(), http.clone());
        connections.spawn(async move {
            // Out of the registry however the connection ends, a panic included.
            let _registered = Registered { registry: registry.clone(), id };
            let served = match tls {
                None => serve_connection(tcp, router, &http, &registry, &tracked).await,
                Some(tls) => match tokio::time::timeout(http.header_read_timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, router, &http, &registry, &tracked).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => Ok(()),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    registry.close_all();
    connections.close();
    // Long-polls return at once on shutdown, so connections finish quickly; one that does not
    // (a client that stopped reading) is not waited for forever.
    if tokio::time::timeout(Duration::from_secs(30), connections.wait()).await.is_err() {
        tracing::warn!("some connections did not close within 30 s of shutdown");
    }
    Ok(())
}

async fn serve_connection<IO>(
    io: IO,
    router: Router,
    http: &HttpConfig,
    registry: &Arc<Registry>,
    tracked: &Arc<Tracked>,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let (registry, tracked) = (registry.clone(), tracked.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (router, registry, tracked) = (router.clone(), registry.clone(), tracked.clone());
            async move {
                let busy = Busy::start(registry, tracked);
                let response = router.oneshot(req.map(Body::new)).await?;
                // Busy until the body is sent, not just its headers: a streamed answer (an event
                // stream) keeps its connection in use, safe from the idle timer and the cap.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _held = &busy;
                        frame
                    }))
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = http.idle_timeout;
    let mut closing = false;
    // When to look again: when the connection would have been idle for `idle` if nothing happens
    // meanwhile. While a request is in flight that moment is not known, so look again a whole
    // `idle` later (a deadline left in the past would wake this loop without end).
    let mut look_at = registry.started + Duration::from_millis(tracked.last_active.load(Ordering::Relaxed)) + idle;
    loop {
        tokio::select! {
            done = conn.as_mut() => return done,
            _ = tracked.close.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(look_at), if !closing => {
                let last = tracked.last_active.load(Ordering::Relaxed);
                let quiet_for = registry.now_ms().saturating_sub(last);
                if tracked.in_flight.load(Ordering::Acquire) > 0 {
                    look_at = tokio::time::Instant::now() + idle;
                } else if quiet_for >= idle.as_millis() as u64 {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    look_at = registry.started + Duration::from_millis(last) + idle;
                }
            }
        }
        if closing {
            // A graceful close waits for the request in flight; a client that never finishes
            // sending one is cut off after a header timeout's grace.
            return match tokio::time::timeout(http.header_read_timeout, conn.as_mut()).await {
                Ok(done) => done,
                Err(_) => Ok(()),
            };
        }
    }
}

/// Answers one request on a connection past the cap, then closes it: `/healthz` still answers
/// (so a load balancer does not take a busy node out), anything else gets 503.
async fn refuse(tcp: TcpStream, tls: Option<TlsAcceptor>, http: &HttpConfig) {
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let (status, body) = if req.uri().path() == "/healthz" {
            (StatusCode::OK, r#"{"status":"ok"}"#)
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":{"code":"overloaded","message":"too many connections; retry shortly"}}"#,
            )
        };
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(Body::from(body))
            .expect("a valid response");
        Ok::<_, Infallible>(response)
    });
    let builder = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(2)).keep_alive(false);
        b
    };
    let whole = async {
        match tls {
            None => {
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            }
            Some(tls) => {
                if let Ok(stream) = tls.accept(tcp).await {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(http.header_read_timeout.min(Duration::from_secs(5)), whole).await;
}
