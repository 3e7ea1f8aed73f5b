//! `tracing` events inside a handler, as its task's log lines.
//!
//! The runtime runs each handler with its [`TaskContext`] as a task-local; [`TaskLogLayer`], added
//! to the application's `tracing` subscriber, turns each event emitted while a handler is polled
//! into a line of that task's log (as [`TaskContext::log`] would), and leaves every other event
//! alone. Events from a task the handler spawns itself are not its task's: the task-local does
//! not cross `tokio::spawn`.

use std::fmt::Write;
use std::future::Future;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::TaskContext;

tokio::task_local! {
    static RUNNING: TaskContext;
}

/// Runs `handler` with `ctx` as the task whose log its events go to.
pub(crate) fn scope<F: Future>(ctx: TaskContext, handler: F) -> impl Future<Output = F::Output> {
    RUNNING.scope(ctx, handler)
}

/// A `tracing` layer that sends the events a handler emits to its task's log, as
/// `LEVEL message key=value ...`. Add it next to the application's own output, with the levels it
/// should take:
///
/// ```no_run
/// use tracing_subscriber::filter::LevelFilter;
/// use tracing_subscriber::prelude::*;
///
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer())
///     .with(taskwarden_worker::TaskLogLayer.with_filter(LevelFilter::INFO))
///     .init();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskLogLayer;

impl<S: Subscriber> Layer<S> for TaskLogLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // Outside a handler (the worker's own lines, the application's): not a task's.
        let _ = RUNNING.try_with(|ctx| ctx.log(line(event)));
    }
}

/// The event as one log line: its level, its message, then its other fields.
fn line(event: &Event<'_>) -> String {
    let mut line = Line { message: String::new(), fields: String::new() };
    event.record(&mut line);
    let mut out = format!("{} {}", event.metadata().level(), line.message);
    if !line.fields.is_empty() {
        if !line.message.is_empty() {
            out.push(' ');
        }
        out.push_str(&line.fields);
    }
    out
}

struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

impl Line {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={}", field.name(), value);
    }
}
