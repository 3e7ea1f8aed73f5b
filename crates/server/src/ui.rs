//! The web dashboard: plain ES modules and CSS under `crates/server/ui/`, carried in the binary
//! (a `cargo build` is all it takes; no Node) and served under `/ui`.
//!
//! The page at `/ui/` is the same for everyone and holds no data: the scripts call the API like
//! any client, with the token the user logs in with, so what a token may see and do is decided
//! by the API, once. Assets are served under `/ui/assets/<version>/`, the version being a hash
//! of them all, so a browser keeps them forever and a new build is fetched fresh.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One file of the dashboard.
struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, body: include_str!(concat!("../ui/", $name)), content_type: $type }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/queues.js", JS),
    asset!("pages/tasks.js", JS),
    asset!("pages/task.js", JS),
    asset!("pages/workflows.js", JS),
    asset!("pages/workers.js", JS),
    asset!("pages/cron.js", JS),
    asset!("pages/audit.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX: &str = include_str!("../ui/index.html");

/// What the pages may load and where they may be shown: only from this server, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The assets' version: the start of a hash of them all.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let all: String = ASSETS.iter().flat_map(|a| [a.name, "\0", a.body, "\0"]).collect();
        taskwarden_core::auth::hash_secret(&all)[..16].to_owned()
    })
}

/// The routes of the dashboard (and `/`, which leads to it).
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/assets/{version}/{*file}", get(file))
}

fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

async fn page() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let body = PAGE.get_or_init(|| INDEX.replace("{{VERSION}}", version()));
    secure(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body.as_str())
            .into_response(),
    )
}

async fn file(Path((v, name)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|a| a.name == name);
    match found {
        Some(a) if v == version() => secure(
            (
                [
                    (header::CONTENT_TYPE, a.content_type),
                    (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                ],
                a.body,
            )
                .into_response(),
        ),
        // An old page asking for the assets of an earlier build: reloading fetches the new one.
        _ => (StatusCode::NOT_FOUND, "no such file in this build of the dashboard; reload the page").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_an_asset_imports_is_served() {
        // `import ... from "./x.js"` and `"../x.js"`, resolved against the importing file.
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let spec = line.rsplit(" from ").next().unwrap().trim_matches([' ', ';', '"', '\'']);
                let dir = a.name.rsplit_once('/').map_or("", |(d, _)| d);
                let resolved = match (spec.strip_prefix("./"), spec.strip_prefix("../")) {
                    (Some(rest), _) if dir.is_empty() => rest.to_owned(),
                    (Some(rest), _) => format!("{dir}/{rest}"),
                    (_, Some(rest)) => rest.to_owned(),
                    _ => panic!("{}: import {spec:?} is not relative", a.name),
                };
                assert!(
                    ASSETS.iter().any(|b| b.name == resolved),
                    "{} imports {resolved}, which is not served",
                    a.name
                );
            }
        }
        assert!(INDEX.contains("/ui/assets/{{VERSION}}/app.js"));
    }
}
