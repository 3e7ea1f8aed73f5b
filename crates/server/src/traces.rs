//! The server's spans: submit, lease and report, through the OpenTelemetry tracer provider the
//! binary installed (`--otlp-endpoint`). Off, nothing here makes a span: a submit's
//! `traceparent` is stored as it came, so the worker's spans still join the caller's.
//!
//! The trace of a task: the caller's span → `submit {kind}` (here) → `lease {kind}` (here, each
//! attempt) and `run {kind}` (the worker: the first attempt's a child, a retry's a new trace
//! linking to it) → `report {kind}` (here, a child of the run span the worker names).

use std::borrow::Cow;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use taskwarden_core::protocol::Report;
use taskwarden_core::{NewTask, Task, TaskId, TraceParent};

/// A request's `traceparent` header, read as the W3C recommendation asks: one that cannot be read
/// is no parent rather than an error (a proxy may have mangled it; the request still counts).
pub(crate) struct TraceParentHeader(pub Option<TraceParent>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParentHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get("traceparent").and_then(|v| v.to_str().ok());
        Ok(TraceParentHeader(header.and_then(TraceParent::from_header)))
    }
}

/// Makes the server's spans, or none when traces are off.
pub(crate) struct Traces {
    tracer: Option<BoxedTracer>,
}

/// Reports on their way to the store, for their spans (see [`Traces::reporting`]).
pub(crate) struct Reporting {
    reports: Vec<(TaskId, Option<TraceParent>)>,
    started: SystemTime,
}

/// A submit's span, open until the store has taken the task.
pub(crate) struct SubmitSpan(Option<BoxedSpan>);

impl Traces {
    pub(crate) fn new(enabled: bool) -> Traces {
        Traces { tracer: enabled.then(|| opentelemetry::global::tracer("taskwarden-server")) }
    }

    /// Opens the span of a submit, a child of the request's `traceparent` header (or of a lone
    /// task's own `traceparent` field), and sets the trace context each new task carries: the
    /// span's, except a task of a batch that named its own. Off, a task carries its own field or
    /// else the header, as they came.
    pub(crate) fn submit<'a>(
        &self,
        specs: impl IntoIterator<Item = &'a mut NewTask>,
        header: Option<TraceParent>,
    ) -> SubmitSpan {
        let Some(tracer) = &self.tracer else {
            for spec in specs {
                spec.traceparent = spec.traceparent.or(header);
            }
            return SubmitSpan(None);
        };
        let specs: Vec<&mut NewTask> = specs.into_iter().collect();
        let Some(first) = specs.first() else { return SubmitSpan(None) };
        let lone = specs.len() == 1;
        let parent = if lone { first.traceparent.or(header) } else { header };
        let same_kind = specs.iter().all(|s| s.kind == first.kind);
        let name = if same_kind { format!("submit {}", first.kind) } else { "submit".to_owned() };
        let mut attributes = vec![KeyValue::new("messaging.system", "taskwarden")];
        if specs.iter().all(|s| s.queue == first.queue) {
            attributes.push(KeyValue::new("messaging.destination.name", first.queue.clone()));
        }
        if same_kind {
            attributes.push(KeyValue::new("taskwarden.kind", first.kind.clone()));
        }
        if !lone {
            attributes.push(KeyValue::new("messaging.batch.message_count", specs.len() as i64));
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent_context(parent));
        let carried = TraceParent::of(span.span_context());
        for spec in specs.into_iter().filter(|s| lone || s.traceparent.is_none()) {
            spec.traceparent = carried;
        }
        SubmitSpan(Some(span))
    }

    /// A span for each traced task just leased to `worker_id`, a child of its submit span, from
    /// the moment it was leased (not when the fetch began: a long-poll may have waited long
    /// before the task came) to its answer.
    pub(crate) fn leased(&self, tasks: &[Task], worker_id: &str) {
        let Some(tracer) = &self.tracer else { return };
        for task in tasks.iter().filter(|t| t.traceparent.is_some()) {
            let mut attributes = task_attributes(&task.queue, &task.kind);
            attributes.push(KeyValue::new("messaging.message.id", task.id.to_string()));
            attributes.push(KeyValue::new("taskwarden.worker.id", worker_id.to_owned()));
            let mut started = SystemTime::now();
            if let Some(lease) = &task.lease {
                attributes.push(KeyValue::new("taskwarden.attempt", i64::from(lease.attempt)));
                started = started.min(lease.started_at.to_system_time());
            }
            tracer
                .span_builder(format!("lease {}", task.kind))
                .with_kind(SpanKind::Internal)
                .with_start_time(started)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent_context(task.traceparent))
                .end();
        }
    }

    /// What the report spans of `reports` need, taken as they start (nothing when traces are
    /// off): each report's task and the run span it names, and the time.
    pub(crate) fn reporting(&self, reports: &[Report]) -> Option<Reporting> {
        self.tracer.as_ref()?;
        let reports = reports.iter().map(|r| (r.task_id, r.traceparent)).collect();
        Some(Reporting { reports, started: SystemTime::now() })
    }

    /// A span for each report of a traced task, a child of the run span it named (or of the
    /// task's submit span, for a worker that traces nothing), from when it started to now.
    pub(crate) fn reported<E: std::fmt::Display>(&self, reporting: Option<Reporting>, outcomes: &[Result<Task, E>]) {
        let (Some(tracer), Some(Reporting { reports, started })) = (&self.tracer, reporting) else { return };
        for (&(task_id, run_span), outcome) in reports.iter().zip(outcomes) {
            let (parent, mut attributes) = match outcome {
                Ok(task) => {
                    let Some(parent) = run_span.or(task.traceparent) else { continue };
                    let mut attributes = task_attributes(&task.queue, &task.kind);
                    attributes.push(KeyValue::new("taskwarden.task.state", task.state.as_str()));
                    (parent, attributes)
                }
                Err(_) => match run_span {
                    Some(parent) => (parent, Vec::new()),
                    None => continue,
                },
            };
            let name = match outcome {
                Ok(task) => Cow::Owned(format!("report {}", task.kind)),
                Err(_) => Cow::Borrowed("report"),
            };
            attributes.push(KeyValue::new("messaging.message.id", task_id.to_string()));
            let mut span = tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_start_time(started)
                .with_attributes(attributes)
                .start_with_context(tracer, &parent_context(Some(parent)));
            if let Err(e) = outcome {
                span.set_status(Status::error(e.to_string()));
            }
            span.end();
        }
    }
}

impl SubmitSpan {
    /// Ends the span with how the submit went: the id of the task (or workflow) it made, if one.
    pub(crate) fn end<E: std::fmt::Display>(self, outcome: Result<Option<TaskId>, &E>) {
        let Some(mut span) = self.0 else { return };
        match outcome {
            Ok(id) => {
                if let Some(id) = id {
                    span.set_attribute(KeyValue::new("messaging.message.id", id.to_string()));
                }
            }
            Err(e) => span.set_status(Status::error(e.to_string())),
        }
        span.end();
    }
}

fn parent_context(parent: Option<TraceParent>) -> Context {
    match parent {
        Some(p) => Context::new().with_remote_span_context(p.span_context()),
        None => Context::new(),
    }
}

fn task_attributes(queue: &str, kind: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "taskwarden"),
        KeyValue::new("messaging.destination.name", queue.to_owned()),
        KeyValue::new("taskwarden.kind", kind.to_owned()),
    ]
}
