//! Each attempt's `run {kind}` span, made with the OpenTelemetry tracer provider the process
//! installed (none installed: the spans are no-ops, and a handler still sees the task's trace
//! context to pass on).
//!
//! The first attempt's span is a child of the span the task was submitted in; a retry's starts
//! a trace of its own that links to it (a retry may run hours later, and would otherwise
//! stretch the submitter's trace). The handler runs with the span as its current context, so
//! spans it makes are the run span's children.

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use taskwarden_core::TraceParent;
use taskwarden_core::protocol::{LeasedTask, Outcome};

pub(crate) fn tracer() -> BoxedTracer {
    opentelemetry::global::tracer("taskwarden-worker")
}

/// An attempt's run span, open while its handler runs.
pub(crate) struct RunSpan {
    /// The span, as the current span of a context the handler runs in.
    context: Context,
    /// What the handler passes on downstream: the run span, or the task's own trace context
    /// when no span is recorded.
    traceparent: Option<TraceParent>,
}

impl RunSpan {
    pub(crate) fn start(tracer: &BoxedTracer, task: &LeasedTask, worker_id: &str) -> RunSpan {
        let builder =
            tracer.span_builder(format!("run {}", task.kind)).with_kind(SpanKind::Consumer).with_attributes([
                KeyValue::new("messaging.system", "taskwarden"),
                KeyValue::new("messaging.destination.name", task.queue.clone()),
                KeyValue::new("messaging.message.id", task.id.to_string()),
                KeyValue::new("taskwarden.kind", task.kind.clone()),
                KeyValue::new("taskwarden.attempt", i64::from(task.attempt)),
                KeyValue::new("taskwarden.worker.id", worker_id.to_owned()),
            ]);
        let span = match task.traceparent {
            Some(parent) if task.attempt <= 1 => {
                builder.start_with_context(tracer, &Context::new().with_remote_span_context(parent.span_context()))
            }
            Some(parent) => builder
                .with_links(vec![Link::with_context(parent.span_context())])
                .start_with_context(tracer, &Context::new()),
            None => builder.start_with_context(tracer, &Context::new()),
        };
        let context = Context::new().with_span(span);
        let traceparent = TraceParent::of(context.span().span_context()).or(task.traceparent);
        RunSpan { context, traceparent }
    }

    /// The context the handler runs in.
    pub(crate) fn context(&self) -> Context {
        self.context.clone()
    }

    pub(crate) fn traceparent(&self) -> Option<TraceParent> {
        self.traceparent
    }

    /// Ends the span with the attempt's outcome; returns the span's trace context for the report,
    /// whose server span is its child (none when no span was recorded).
    pub(crate) fn end(self, outcome: &Outcome) -> Option<TraceParent> {
        let span = self.context.span();
        let status = match outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { error, .. } => {
                span.set_status(Status::error(error.clone()));
                "failed"
            }
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        };
        span.set_attribute(KeyValue::new("taskwarden.outcome", status));
        span.end();
        TraceParent::of(span.span_context())
    }
}
