//! Checks every request passes before routing: a body that is too large by its own account is
//! refused before a byte of it is read, and requests a browser could be tricked into sending are
//! refused (see the README's Security section).
//!
//! - Writes (POST, PUT, PATCH, DELETE) need `Content-Type: application/json`. A web page can make
//!   a browser send a cross-site `text/plain` or form POST without asking anyone; a JSON one needs
//!   a CORS preflight this server never grants.
//! - A request whose `Origin` is neither the server itself (scheme, host and port) nor a host
//!   the operator listed in `--allowed-hosts` is refused.
//! - Where no token is needed (the laptop case), the `Host` must be an allowed name: otherwise a
//!   page on a hostile domain that resolves to 127.0.0.1 (DNS rebinding) could read the API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Access;
use crate::error::ApiError;

/// The names a server on loopback answers for when none are configured.
pub const LOOPBACK_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "::1", "[::1]"];

#[derive(Clone)]
pub(crate) struct Guard {
    pub access: Arc<Access>,
    /// Host names (no port) requests may name in `Host` and `Origin`.
    pub allowed_hosts: Arc<[String]>,
    /// Whether `Host` is checked even when tokens are required (an operator's explicit list).
    pub always_check_host: bool,
    /// Whether `Host` is never checked (the operator listed `*`).
    pub never_check_host: bool,
    pub max_body_bytes: usize,
}

/// The host part of a `Host` header or an origin's authority, lowercased, without the port.
fn host_name(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        // [::1]:7433 → [::1]
        return rest.split(']').next().map(|h| format!("[{h}]")).unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

impl Guard {
    fn allowed(&self, authority: &str) -> bool {
        let name = host_name(authority);
        self.never_check_host || self.allowed_hosts.contains(&name)
    }

    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(len) = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && len > self.max_body_bytes as u64
        {
            return Err(ApiError {
                field: Some("body".into()),
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is {len} bytes; the limit is {}", self.max_body_bytes),
                )
            });
        }
        let host = text(header::HOST).unwrap_or("");
        let check_host = !self.never_check_host && (self.always_check_host || !self.access.required());
        if check_host && !self.allowed(host) {
            return Err(refused("host", format!("this server does not answer for host {host:?}")));
        }
        if let Some(origin) = text(header::ORIGIN) {
            let authority = origin.split_once("://").map_or("", |(_, rest)| rest).trim_end_matches('/');
            let same_origin = !authority.is_empty() && authority.eq_ignore_ascii_case(host);
            // Another origin only when the operator named its host: the loopback names allowed
            // by default stand for this server, not for every page served on another port of
            // the same machine (a dev server, anything a user opens).
            let listed =
                self.always_check_host && !self.never_check_host && self.allowed_hosts.contains(&host_name(authority));
            if !same_origin && (authority.is_empty() || !listed) {
                return Err(refused("origin", format!("requests from origin {origin:?} are not allowed")));
            }
        }
        // A request that carries a body, or says what type one is, must say JSON: that keeps out
        // the form and text/plain posts a browser sends cross-site without asking. One with no
        // body at all (POST /v1/tasks/{id}/cancel) needs no type; a cross-site one still meets the
        // Origin check above.
        let has_body = text(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
            || headers.contains_key(header::TRANSFER_ENCODING)
            || headers.contains_key(header::CONTENT_TYPE);
        if has_body && matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
            let json = text(header::CONTENT_TYPE)
                .and_then(|ct| ct.split(';').next())
                .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(ApiError {
                    field: Some("content-type".into()),
                    ..ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "requests that change something must be sent with Content-Type: application/json",
                    )
                });
            }
        }
        Ok(())
    }
}

fn refused(field: &str, message: String) -> ApiError {
    ApiError { field: Some(field.into()), ..ApiError::new(StatusCode::FORBIDDEN, "forbidden", message) }
}

pub(crate) async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    match g.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_drop_the_port_and_keep_ipv6_brackets() {
        for (authority, name) in [
            ("localhost:7433", "localhost"),
            ("LOCALHOST", "localhost"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:7433", "[::1]"),
            ("[::1]", "[::1]"),
            ("evil.example:7433", "evil.example"),
        ] {
            assert_eq!(host_name(authority), name, "{authority}");
        }
    }
}
