//! Handlers built into the `taskwarden worker` command, so the CLI is useful without writing code.
//!
//! - `echo`: returns its payload; a workflow task with parents returns `{"payload", "parents"}`.
//! - `sleep`: `{"ms": 250}` sleeps, then returns `{"slept_ms": 250, "attempt": n}`; stops early if cancelled.
//! - `fail`: `{"message": "...", "permanent": false}` fails (retryable unless `permanent`).
//! - `fan.out`: `{"count": 100, "child": {"kind": "echo"}, "join": {"kind": "echo"}}` fans out
//!   `count` children (each payload gets its `"index"`) and a join; see the README's workflows.
//!   `count` may be at most [`Worker::fan_out_max`] (default 99,999, the most the server takes),
//!   and the children together at most 32 MiB (the server's request limit); beyond either the
//!   task fails permanently before any child is built.
//! - `http.fetch`: `{"url": "http://...", "timeout_ms": 10000}` GETs the URL and returns
//!   `{"url", "status", "bytes", "elapsed_ms", "body"}` (body cut to 1 KiB). 5xx, 429 and
//!   transport errors are retried; other 4xx fail permanently. What it may reach and read is the
//!   worker's [`FetchPolicy`](crate::FetchPolicy): by default only public addresses (a URL or
//!   redirect to loopback, private, link-local, CGNAT and similar addresses fails permanently,
//!   naming the address; `taskwarden worker --fetch-allow 10.0.0.0/8,127.0.0.1:8080` opens
//!   some), at most 5 redirects, at most 1 MiB of the body read (`bytes` counts what was read,
//!   and `"truncated": true` says the body went on), and at most 30 s in all (`timeout_ms` may
//!   ask for less).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::fetch_guard::{FetchError, FetchGuard};
use crate::{TaskContext, TaskError, Worker};

/// The worker settings the built-in handlers need. [`Worker::run`] fills it in, so that
/// `fetch_policy` and `fan_out_max` may be called before or after `builtin_handlers`.
pub(crate) type Settings = Arc<OnceLock<Builtins>>;

pub(crate) struct Builtins {
    pub fetch: FetchGuard,
    pub fan_out_max: u32,
}

/// Most bytes of children one fan-out may send: the server's default request body limit. The
/// count alone does not bound memory, since each child carries a copy of the child's payload.
const FAN_OUT_MAX_BYTES: u64 = 32 << 20;

pub(crate) fn register(worker: Worker, settings: Settings) -> Worker {
    let fan_out_settings = settings.clone();
    worker
        .handler("echo", echo)
        .handler("sleep", sleep)
        .handler("fail", fail)
        .handler("http.fetch", move |ctx, args| http_fetch(settings.clone(), ctx, args))
        .handler("fan.out", move |ctx, args| fan_out(fan_out_settings.clone(), ctx, args))
        // What their arguments need, so a payload without them is refused at submit.
        .payload_schema(
            "sleep",
            serde_json::json!({
                "type": "object",
                "required": ["ms"],
                "properties": {"ms": {"type": "integer", "minimum": 0}}
            }),
        )
        .payload_schema(
            "http.fetch",
            serde_json::json!({
                "type": "object",
                "required": ["url"],
                "properties": {"url": {"type": "string"}, "timeout_ms": {"type": ["integer", "null"], "minimum": 0}}
            }),
        )
}

fn configured(settings: &Settings) -> Result<&Builtins, TaskError> {
    settings.get().ok_or_else(|| TaskError::fail("the built-in handlers run only inside Worker::run"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutArgs {
    /// How many children.
    count: u32,
    /// The children's task (its payload gets `"index"` added when it is an object or absent).
    /// Read by [`node_spec`], which fills in the queue.
    child: Value,
    join: Value,
    #[serde(default)]
    failure_policy: Option<taskwarden_client::FailurePolicy>,
}

/// Fans out `count` copies of `child` and a `join`; the payload of each copy is `{"index": i}`
/// merged into the child's payload when that is an object (or absent).
async fn fan_out(settings: Settings, ctx: TaskContext, args: FanOutArgs) -> Result<Value, TaskError> {
    let child = node_spec("child", args.child, &ctx.queue)?;
    let join = node_spec("join", args.join, &ctx.queue)?;
    let max = configured(&settings)?.fan_out_max;
    if args.count > max {
        return Err(TaskError::fail(format!(
            "count is {}; this worker fans out at most {max} children per task (--fan-out-max)",
            args.count
        )));
    }
    // Each child is the child spec plus its index; refuse before building any of them.
    let child_bytes = serde_json::to_string(&child).map_err(|e| TaskError::fail(e.to_string()))?.len() as u64 + 32;
    let total = u64::from(args.count) * child_bytes;
    if total > FAN_OUT_MAX_BYTES {
        return Err(TaskError::fail(format!(
            "count is {}: that many children of about {child_bytes} bytes each make about {} MiB, more than \
             the {} MiB one fan-out may send; use fewer children or a smaller child payload",
            args.count,
            total >> 20,
            FAN_OUT_MAX_BYTES >> 20
        )));
    }
    let base: Value = match &child.payload {
        Some(p) => serde_json::from_str(p.get())?,
        None => Value::Object(Default::default()),
    };
    let children = (0..args.count)
        .map(|i| {
            let mut payload = base.clone();
            if let Value::Object(map) = &mut payload {
                map.insert("index".into(), i.into());
            }
            let payload = serde_json::value::to_raw_value(&payload).map_err(|e| TaskError::fail(e.to_string()))?;
            Ok(taskwarden_client::NodeSpec { payload: Some(payload), ..child.clone() })
        })
        .collect::<Result<Vec<_>, TaskError>>()?;
    let fan_out = ctx.fan_out_with_policy(children, join, args.failure_policy).await?;
    Ok(
        serde_json::json!({"workflow_id": fan_out.workflow_id, "join_id": fan_out.join_id, "children": fan_out.children}),
    )
}

/// A child or join spec from a `fan.out` payload. One that names no queue goes to the fanning-out
/// task's own queue (which the worker running it serves), not to the server's `default`.
fn node_spec(field: &str, mut spec: Value, queue: &str) -> Result<taskwarden_client::NodeSpec, TaskError> {
    if let Value::Object(map) = &mut spec {
        map.entry("queue").or_insert_with(|| queue.into());
    }
    // Through text: a raw payload cannot be read from a `Value`.
    serde_json::from_str(&spec.to_string()).map_err(|e| TaskError::fail(format!("{field}: {e}")))
}

/// Returns its whole input: the payload, or for a workflow task with parents,
/// `{"payload": ..., "parents": {"node": {"state", "result", "error"}}}`.
async fn echo(ctx: TaskContext, payload: Box<RawValue>) -> Result<Box<RawValue>, TaskError> {
    if ctx.parent_count == 0 {
        return Ok(payload);
    }
    let parents: serde_json::Map<String, Value> = ctx
        .parents()
        .await?
        .into_iter()
        .map(|p| (p.node.clone(), serde_json::json!({"state": p.state, "result": p.result, "error": p.error})))
        .collect();
    serde_json::value::to_raw_value(&serde_json::json!({"payload": payload, "parents": parents}))
        .map_err(|e| TaskError::fail(e.to_string()))
}

#[derive(Deserialize)]
// Other fields are ignored: `fan.out` adds an `index` to each child's payload.
struct SleepArgs {
    ms: u64,
}

async fn sleep(ctx: TaskContext, args: SleepArgs) -> Result<Value, TaskError> {
    ctx.log(format!("sleeping {} ms", args.ms));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(args.ms)) => {
            // A `tracing` event, which `TaskLogLayer` makes a line of the task's log.
            tracing::info!(attempt = ctx.attempt, "woke up");
            Ok(serde_json::json!({"slept_ms": args.ms, "attempt": ctx.attempt}))
        }
        _ = ctx.cancellation().cancelled() => Err(TaskError::Cancelled),
    }
}

#[derive(Deserialize, Default)]
// Other fields are ignored: `fan.out` adds an `index` to each child's payload.
struct FailArgs {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    permanent: bool,
}

async fn fail(ctx: TaskContext, args: Option<FailArgs>) -> Result<Value, TaskError> {
    let args = args.unwrap_or_default();
    let message = args.message.unwrap_or_else(|| format!("failed on purpose (attempt {})", ctx.attempt));
    ctx.log(format!("about to fail: {message}"));
    Err(if args.permanent { TaskError::fail(message) } else { TaskError::retry(message) })
}

#[derive(Deserialize)]
// Other fields are ignored: `fan.out` adds an `index` to each child's payload.
struct FetchArgs {
    url: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct Fetched {
    url: String,
    status: u16,
    /// Bytes of the body read: at most the policy's `max_bytes`.
    bytes: u64,
    elapsed_ms: u64,
    body: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// How long a fetch may take when its payload does not say.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

async fn http_fetch(settings: Settings, ctx: TaskContext, args: FetchArgs) -> Result<Fetched, TaskError> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return Err(TaskError::fail(format!("url must start with http:// or https://, got {:?}", args.url)));
    }
    let guard = &configured(&settings)?.fetch;
    let started = Instant::now();
    let limit = args.timeout_ms.map_or(DEFAULT_FETCH_TIMEOUT, Duration::from_millis).min(guard.max_time());
    let page = tokio::select! {
        page = guard.get(&args.url, limit) => page.map_err(|e| match e {
            FetchError::Refused { .. } | FetchError::InvalidUrl { .. } => TaskError::fail(e.to_string()),
            FetchError::TimedOut { .. } | FetchError::Transport { .. } => TaskError::retry(e.to_string()),
        })?,
        _ = ctx.cancellation().cancelled() => return Err(TaskError::Cancelled),
    };
    let code = page.status.as_u16();
    if page.status.is_server_error() || code == 429 {
        return Err(TaskError::retry(format!("HTTP {code} from {}", args.url)));
    }
    if page.status.is_client_error() {
        return Err(TaskError::fail(format!("HTTP {code} from {}", args.url)));
    }
    Ok(Fetched {
        url: args.url,
        status: code,
        bytes: page.bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        body: String::from_utf8_lossy(&page.head).into_owned(),
        truncated: page.truncated,
    })
}
