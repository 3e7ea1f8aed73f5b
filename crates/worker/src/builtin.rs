//! Handlers built into the `taskwarden worker` command, so the CLI is useful without writing code.
//!
//! - `echo`: returns its payload; a workflow task with parents returns `{"payload", "parents"}`.
//! - `sleep`: `{"ms": 250}` sleeps, then returns `{"slept_ms": 250, "attempt": n}`; stops early if cancelled.
//! - `fail`: `{"message": "...", "permanent": false}` fails (retryable unless `permanent`).
//! - `fan.out`: `{"count": 100, "child": {"kind": "echo"}, "join": {"kind": "echo"}}` fans out
//!   `count` children (each payload gets its `"index"`) and a join; see the README's workflows.
//! - `http.fetch`: `{"url": "http://...", "timeout_ms": 10000}` GETs the URL and returns
//!   `{"url", "status", "bytes", "elapsed_ms", "body"}` (body cut to 1 KiB). 5xx, 429 and
//!   transport errors are retried; other 4xx fail permanently.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{TaskContext, TaskError, Worker};

pub(crate) fn register(worker: Worker) -> Worker {
    worker
        .handler("echo", echo)
        .handler("sleep", sleep)
        .handler("fail", fail)
        .handler("http.fetch", http_fetch)
        .handler("fan.out", fan_out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutArgs {
    /// How many children.
    count: u32,
    /// The children's task (its payload gets `"index"` added when it is an object or absent).
    child: taskwarden_client::NodeSpec,
    join: taskwarden_client::NodeSpec,
    #[serde(default)]
    failure_policy: Option<taskwarden_client::FailurePolicy>,
}

/// Fans out `count` copies of `child` and a `join`; the payload of each copy is `{"index": i}`
/// merged into the child's payload when that is an object (or absent).
async fn fan_out(ctx: TaskContext, args: FanOutArgs) -> Result<Value, TaskError> {
    let base: Value = match &args.child.payload {
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
            Ok(taskwarden_client::NodeSpec { payload: Some(payload), ..args.child.clone() })
        })
        .collect::<Result<Vec<_>, TaskError>>()?;
    let fan_out = ctx.fan_out_with_policy(children, args.join, args.failure_policy).await?;
    Ok(
        serde_json::json!({"workflow_id": fan_out.workflow_id, "join_id": fan_out.join_id, "children": fan_out.children}),
    )
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
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(serde_json::json!({"slept_ms": args.ms, "attempt": ctx.attempt})),
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
    bytes: usize,
    elapsed_ms: u64,
    body: String,
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| reqwest::Client::builder().pool_max_idle_per_host(32).build().expect("HTTP client"))
}

async fn http_fetch(ctx: TaskContext, args: FetchArgs) -> Result<Fetched, TaskError> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return Err(TaskError::fail(format!("url must start with http:// or https://, got {:?}", args.url)));
    }
    let started = Instant::now();
    let timeout = Duration::from_millis(args.timeout_ms.unwrap_or(10_000));
    let request = async {
        let resp = http().get(&args.url).timeout(timeout).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    let (status, body) = tokio::select! {
        r = request => r?,
        _ = ctx.cancellation().cancelled() => return Err(TaskError::Cancelled),
    };
    let code = status.as_u16();
    if status.is_server_error() || code == 429 {
        return Err(TaskError::retry(format!("HTTP {code} from {}", args.url)));
    }
    if status.is_client_error() {
        return Err(TaskError::fail(format!("HTTP {code} from {}", args.url)));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    Ok(Fetched {
        url: args.url,
        status: code,
        bytes: body.len(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        body: text,
    })
}
