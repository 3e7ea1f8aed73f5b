//! The [`FetchGuard`]: the HTTP client of the built-in `http.fetch` handler, which connects only
//! where the [`FetchPolicy`] allows and reads only as much as it allows.
//!
//! Where each address is checked: a URL that names an IP address is checked before the request
//! (reqwest does not resolve those); a host name is checked in the DNS resolver, which hands the
//! connector only allowed addresses, so what was checked is what is connected to (a name cannot
//! resolve one way for the check and another for the connection); every redirect hop is checked
//! again before it is followed; and the address the answer came from is checked once more before
//! its body is read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{StatusCode, Url};
use thiserror::Error;

use crate::WorkerError;
use crate::fetch_policy::{AddressClass, FetchPolicy};

/// How much of a body the result shows; the rest is counted and dropped.
pub(crate) const SHOWN_BYTES: usize = 1024;

pub(crate) struct FetchGuard {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

/// An answer, read up to the policy's limit.
pub(crate) struct Page {
    pub status: StatusCode,
    /// Bytes of the body read; for an error status the body is not read at all.
    pub bytes: u64,
    /// The first [`SHOWN_BYTES`] of the body.
    pub head: Vec<u8>,
    /// Whether the body went on past the policy's `max_bytes`.
    pub truncated: bool,
}

#[derive(Debug, Error)]
pub(crate) enum FetchError {
    /// The policy does not allow it: it will not be allowed on a retry either.
    #[error("refused to fetch {url}: {refusal}")]
    Refused { url: String, refusal: Refusal },
    #[error("{url:?} is not a URL: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("fetching {url} took longer than {limit:?}")]
    TimedOut { url: String, limit: Duration },
    #[error("fetching {url}: {message}")]
    Transport { url: String, message: String },
}

/// Why the policy refused a fetch.
#[derive(Clone, Debug, Error)]
pub(crate) enum Refusal {
    #[error("{}", address_refused(*ip, *port, host.as_deref(), *class))]
    Address { ip: IpAddr, port: Option<u16>, host: Option<String>, class: AddressClass },
    #[error("redirected to {to}: {reason}")]
    Redirect { to: String, reason: Box<Refusal> },
    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },
    #[error("{url} is not an http:// or https:// URL")]
    Scheme { url: String },
}

fn address_refused(ip: IpAddr, port: Option<u16>, host: Option<&str>, class: AddressClass) -> String {
    let how = "which http.fetch reaches only when the worker allows it: start it with --fetch-allow";
    match (host, port) {
        (Some(host), _) => format!(
            "{host} resolves to {ip}, {class}, {how} {ip} (an address:port entry opens only URLs that name the \
             address itself)"
        ),
        (None, Some(port)) => {
            let entry = SocketAddr::new(ip, port);
            format!("{ip} is {class}, {how} {entry} (or TASKWARDEN_FETCH_ALLOW={entry})")
        }
        (None, None) => format!("{ip} is {class}, {how} {ip} (or TASKWARDEN_FETCH_ALLOW={ip})"),
    }
}

impl FetchGuard {
    pub(crate) fn new(policy: FetchPolicy) -> Result<FetchGuard, WorkerError> {
        policy.validate()?;
        let policy = Arc::new(policy);
        taskwarden_client::install_tls_provider();
        let client = reqwest::Client::builder()
            .dns_resolver(CheckedResolver { policy: policy.clone() })
            .redirect(redirects(policy.clone()))
            // A proxy would resolve and connect on our behalf, past every check here.
            .no_proxy()
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| WorkerError::Config(format!("http.fetch client: {e}")))?;
        Ok(FetchGuard { client, policy })
    }

    /// The longest a fetch may take, whatever its payload asks for.
    pub(crate) fn max_time(&self) -> Duration {
        self.policy.max_time
    }

    /// GETs `url` within `limit` (connecting, redirects and body together), reading at most the
    /// policy's `max_bytes` of the body.
    pub(crate) async fn get(&self, url: &str, limit: Duration) -> Result<Page, FetchError> {
        let parsed =
            Url::parse(url).map_err(|e| FetchError::InvalidUrl { url: url.to_owned(), message: e.to_string() })?;
        check_url(&self.policy, &parsed).map_err(|refusal| FetchError::Refused { url: url.to_owned(), refusal })?;
        match tokio::time::timeout(limit, self.get_checked(url, parsed)).await {
            Ok(page) => page,
            Err(_) => Err(FetchError::TimedOut { url: url.to_owned(), limit }),
        }
    }

    async fn get_checked(&self, url: &str, parsed: Url) -> Result<Page, FetchError> {
        let failed = |e: reqwest::Error| match find_refusal(&e) {
            Some(refusal) => FetchError::Refused { url: url.to_owned(), refusal: refusal.clone() },
            None => FetchError::Transport { url: url.to_owned(), message: with_causes(&e) },
        };
        let mut resp = self.client.get(parsed).send().await.map_err(failed)?;
        // The checks above should make this unreachable; it guards against a path past them.
        if let Some(addr) = resp.remote_addr() {
            self.policy.check(addr.ip(), Some(addr.port())).map_err(|class| FetchError::Refused {
                url: url.to_owned(),
                refusal: Refusal::Address { ip: addr.ip(), port: Some(addr.port()), host: None, class },
            })?;
        }
        let status = resp.status();
        let mut page = Page { status, bytes: 0, head: Vec::new(), truncated: false };
        if status.is_client_error() || status.is_server_error() {
            return Ok(page);
        }
        let max = self.policy.max_bytes;
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            let room = max - page.bytes;
            let take = (chunk.len() as u64).min(room) as usize;
            let shown = take.min(SHOWN_BYTES - page.head.len());
            page.head.extend_from_slice(&chunk[..shown]);
            page.bytes += take as u64;
            if chunk.len() as u64 > room {
                // Dropping the response closes the connection: the rest is never read.
                page.truncated = true;
                break;
            }
        }
        Ok(page)
    }
}

/// Checks a URL that names an IP address; a host name is left to the resolver, which sees the
/// addresses it stands for.
fn check_url(policy: &FetchPolicy, url: &Url) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme { url: url.to_string() });
    }
    let Some(host) = url.host_str() else { return Ok(()) };
    // The URL parser has already turned every spelling of an IPv4 address (0x7f.1, 2130706433)
    // into dotted form, so this parse sees every address literal.
    let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return Ok(()) };
    let port = url.port_or_known_default();
    policy.check(ip, port).map_err(|class| Refusal::Address { ip, port, host: None, class })
}

/// Follows at most `max_redirects` hops, checking each like the first URL.
fn redirects(policy: Arc<FetchPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > policy.max_redirects {
            return attempt.error(Refusal::TooManyRedirects { max: policy.max_redirects });
        }
        match check_url(&policy, attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(reason) => {
                let to = attempt.url().to_string();
                attempt.error(Refusal::Redirect { to, reason: Box::new(reason) })
            }
        }
    })
}

/// Resolves with the system resolver (through tokio) and keeps only the addresses the policy
/// allows, so the connector never sees the others.
struct CheckedResolver {
    policy: Arc<FetchPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port (or the scheme's) afterwards.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check(addr.ip(), None) {
                    Ok(()) => true,
                    Err(class) => {
                        refused.get_or_insert(Refusal::Address {
                            ip: addr.ip(),
                            port: None,
                            host: Some(host.clone()),
                            class,
                        });
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => Err(refused.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

/// The refusal that made reqwest fail, if one did: it sits somewhere down the error's causes.
fn find_refusal(e: &reqwest::Error) -> Option<&Refusal> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        cause = err.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::fetch_policy::AllowRule;

    /// A site on 127.0.0.1 that answers every request with `answer(path)` (a whole HTTP/1.1
    /// response) and counts the requests it got.
    async fn site(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> (u16, Arc<AtomicUsize>) {
        let answer = Arc::new(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = vec![0; 4096];
                    let n = conn.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..n]).into_owned();
                    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
                    let _ = conn.write_all(answer(&path).as_bytes()).await;
                });
            }
        });
        (port, hits)
    }

    fn ok(body: &str) -> String {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    fn guard(allow: &str) -> FetchGuard {
        FetchGuard::new(FetchPolicy { allow: AllowRule::parse_list(allow).unwrap(), ..FetchPolicy::default() }).unwrap()
    }

    async fn get(guard: &FetchGuard, url: &str) -> Result<Page, FetchError> {
        guard.get(url, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn a_url_naming_a_loopback_address_is_refused_without_connecting() {
        let (port, hits) = site(|_| ok("secret")).await;
        let err = get(&guard(""), &format!("http://127.0.0.1:{port}/")).await.err().unwrap();
        assert!(matches!(err, FetchError::Refused { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("127.0.0.1 is a loopback address"), "{message}");
        assert!(message.contains(&format!("--fetch-allow 127.0.0.1:{port}")), "{message}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_host_name_is_checked_after_resolution() {
        let (port, hits) = site(|_| ok("secret")).await;
        // An address:port entry does not open a host name: the resolver never learns the port.
        let err = get(&guard(&format!("127.0.0.1:{port}")), &format!("http://localhost:{port}/")).await.err().unwrap();
        assert!(matches!(err, FetchError::Refused { .. }), "the refusal is found in reqwest's error: {err}");
        assert!(err.to_string().contains("localhost resolves to"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let page = get(&guard("127.0.0.1,::1"), &format!("http://localhost:{port}/")).await.unwrap();
        assert_eq!((page.status.as_u16(), page.head.as_slice()), (200, b"secret".as_slice()));
    }

    #[tokio::test]
    async fn an_allowed_site_is_fetched_and_a_redirect_off_it_is_refused() {
        let (inner, inner_hits) = site(|_| ok("secret")).await;
        let (outer, _) = site(move |path| match path {
            "/away" => redirect(&format!("http://127.0.0.1:{inner}/")),
            _ => ok("hello"),
        })
        .await;
        let guard = guard(&format!("127.0.0.1:{outer}"));
        let page = get(&guard, &format!("http://127.0.0.1:{outer}/")).await.unwrap();
        assert_eq!((page.bytes, page.truncated, page.head.as_slice()), (5, false, b"hello".as_slice()));
        let err = get(&guard, &format!("http://127.0.0.1:{outer}/away")).await.err().unwrap();
        let message = err.to_string();
        assert!(matches!(err, FetchError::Refused { .. }), "{message}");
        assert!(message.contains(&format!("redirected to http://127.0.0.1:{inner}/")), "{message}");
        assert_eq!(inner_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_loop_stops_after_the_policy_s_hops() {
        let (port, hits) = site(|path| {
            let n: u32 = path.trim_start_matches('/').parse().unwrap_or(0);
            redirect(&format!("/{}", n + 1))
        })
        .await;
        let err = get(&guard(&format!("127.0.0.1:{port}")), &format!("http://127.0.0.1:{port}/0")).await.err().unwrap();
        assert!(err.to_string().contains("more than 5 redirects"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 6, "the first request and five hops");
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_limit_and_no_further() {
        let (port, _) = site(|_| ok(&"x".repeat(10_000))).await;
        let guard = FetchGuard::new(FetchPolicy {
            allow: vec![AllowRule::from(IpAddr::from([127, 0, 0, 1]))],
            max_bytes: 4000,
            ..FetchPolicy::default()
        })
        .unwrap();
        let page = get(&guard, &format!("http://127.0.0.1:{port}/")).await.unwrap();
        assert_eq!((page.bytes, page.truncated, page.head.len()), (4000, true, SHOWN_BYTES));
        let exact = FetchGuard::new(FetchPolicy { max_bytes: 10_000, ..guard.policy.as_ref().clone() }).unwrap();
        let page = get(&exact, &format!("http://127.0.0.1:{port}/")).await.unwrap();
        assert_eq!((page.bytes, page.truncated), (10_000, false), "a body of exactly the limit is whole");
    }

    #[tokio::test]
    async fn a_fetch_that_takes_too_long_stops_at_its_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let started = std::time::Instant::now();
        let guard = guard("127.0.0.1");
        let err = guard.get(&format!("http://127.0.0.1:{port}/"), Duration::from_millis(200)).await.err().unwrap();
        assert!(matches!(err, FetchError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn urls_naming_internal_addresses_in_any_spelling_are_refused() {
        let policy = FetchPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1:8080/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
            "ftp://8.8.8.8/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert!(check_url(&policy, &parsed).is_err(), "{url} ({parsed}) is refused");
        }
        for url in ["http://8.8.8.8/", "https://[2606:4700::1111]/", "http://example.com/"] {
            assert!(check_url(&policy, &Url::parse(url).unwrap()).is_ok(), "{url}");
        }
    }
}
