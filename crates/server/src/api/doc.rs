//! The OpenAPI document, generated: each handler's `#[utoipa::path]` and the wire types'
//! `#[derive(ToSchema)]` give the operations and schemas, collected by the same router that
//! serves them (see `super::routes`), so the document cannot name a route the server lacks or
//! miss one it has. What every operation shares is added here, once: the role each route needs
//! (from `super::ROUTES`), and the error answers that the extractors, the auth layer and the
//! guard give any route.

use serde_json::{Value, json};
use utoipa::openapi::OpenApi;

use super::ROUTES;

const DESCRIPTION: &str = "The HTTP API of Taskwarden, a distributed task scheduler. Clients submit, inspect, \
list, wait for, cancel and retry tasks; workers register, lease tasks by long-polling, heartbeat their leases and \
report outcomes, presenting the lease token on every call. Every error answers with an ErrorBody. \
A request that does not fit this document's schemas is answered 400; one that fits but breaks a rule a schema \
cannot state (across fields, against the clock, within a cron expression or a workflow graph) is answered 422.";

const TAGS: &[(&str, &str)] = &[
    ("health", "Liveness, readiness and this document."),
    ("tasks", "Client calls: submit, inspect, list, wait for, cancel and retry tasks."),
    ("leases", "Single-lease worker calls; they answer 409 lease_lost when the lease is no longer held."),
    ("workers", "The batched worker protocol: register, fetch, heartbeat, report."),
    ("workflows", "DAGs of tasks, their outcome and speedup report."),
    ("queues", "Queues: counts, pause and resume."),
    ("cron", "Cron schedules with seconds, time zones and a misfire policy."),
    ("tokens", "API tokens and the audit log (admin only)."),
    ("webhooks", "Endpoints sent the events they ask for, signed (admin only)."),
    ("events", "The event log: every state change, as a page or a resumable Server-Sent Events stream."),
];

/// The finished document, as JSON.
pub(crate) fn finish(generated: OpenApi) -> Value {
    let mut doc = serde_json::to_value(generated).expect("an OpenAPI document serializes");
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({"title": "Taskwarden", "version": env!("CARGO_PKG_VERSION"), "description": DESCRIPTION,
                         "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}});
    doc["servers"] = json!([{"url": "http://127.0.0.1:7433"}]);
    doc["tags"] = TAGS.iter().map(|(name, description)| json!({"name": name, "description": description})).collect();
    doc["components"]["securitySchemes"] = json!({"bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A token made with `taskwarden token create` (or POST /v1/tokens). A server \
            whose store holds no token serves without one, on loopback only.",
    }});
    let error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    for (method, path, role) in ROUTES {
        let op = &mut doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is in ROUTES but has no #[utoipa::path]");
        let has_body = op.get("requestBody").is_some();
        let has_params = op.get("parameters").is_some_and(|p| p.as_array().is_some_and(|p| !p.is_empty()));
        let responses = &mut op["responses"];
        let mut add = |code: &str, description: &str| {
            if responses.get(code).is_none() {
                responses[code] = error(description);
            }
        };
        if has_body || has_params {
            add(
                "400",
                "invalid_request: the body, a query parameter or a path parameter does not fit this document \
                 (malformed, missing, out of range, unknown); error.field names it.",
            );
        }
        if has_body {
            add("408", "request_timeout: the body did not arrive in time.");
        }
        if *method != "get" {
            add(
                "415",
                "unsupported_media_type: a request that changes something must say Content-Type: application/json.",
            );
        }
        add("413", "body_too_large: the declared body is larger than the server takes.");
        add("403", "forbidden: the Host or Origin header names a host this server does not answer for.");
        add("500", "internal: an unexpected storage error.");
        add(
            "503",
            "unavailable: the storage cannot be reached, or the server is starting or shutting down; retry later.",
        );
        match role {
            None => op["security"] = json!([]),
            Some(role) => {
                op["security"] = json!([{"bearer": []}]);
                op["x-required-role"] = json!(role.as_str());
                let responses = &mut op["responses"];
                responses["401"] = error("unauthenticated: no token, or an unknown, revoked or expired one.");
                responses["403"] = error(&format!(
                    "forbidden: the token lacks the {role} role (error.field role), the queue is outside \
                     its scope (error.field queue), or the Host or Origin header names a host this server does \
                     not answer for."
                ));
            }
        }
    }
    doc
}
