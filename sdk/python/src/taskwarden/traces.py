"""OpenTelemetry traces, when the ``opentelemetry-api`` package is installed
(``pip install taskwarden[otel]``); without it, nothing here does anything.

- A submit made while a span is current carries that span's W3C ``traceparent`` (the body's
  field), so the task joins the caller's trace; the server's submit span (when the server
  exports) sits between them.
- Each attempt runs in a ``run {kind}`` span: the first attempt's is a child of the span the
  task was submitted in; a retry's starts a trace of its own that links to it. The handler runs
  with the span current, so spans it makes are its children, and ``ctx.traceparent`` is there
  to pass on to what it calls. The report names the span, so the server's report span is its
  child.

Spans are made with the tracer provider the application installed
(``opentelemetry.trace.set_tracer_provider``) and exported however it configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator: TraceContextTextMapPropagator | None = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - exercised where opentelemetry is not installed
    _propagator = None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current in this context, if any."""
    if _propagator is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def with_traceparent(body: dict[str, Any]) -> dict[str, Any]:
    """A submit body carrying the current span's ``traceparent``, unless it names its own."""
    if "traceparent" in body:
        return body
    parent = current_traceparent()
    return body if parent is None else {**body, "traceparent": parent}


class RunSpan:
    """An attempt's run span, open while its handler runs."""

    def __init__(self, task: dict[str, Any], worker_id: str | None) -> None:
        parent = task.get("traceparent")
        self.traceparent: str | None = parent if isinstance(parent, str) else None
        """What the handler passes on: the run span, or the task's own trace context when no
        span is recorded."""
        self._span: Any = None
        self._context: Any = None
        if _propagator is None:
            return
        kind = str(task.get("kind"))
        attempt = int(task.get("attempt") or 1)
        links = []
        context = otel_context.Context()
        if self.traceparent is not None:
            remote = _propagator.extract({"traceparent": self.traceparent})
            if attempt <= 1:
                context = remote
            else:
                links.append(Link(trace.get_current_span(remote).get_span_context()))
        attributes: dict[str, Any] = {
            "messaging.system": "taskwarden",
            "messaging.destination.name": str(task.get("queue")),
            "messaging.message.id": str(task.get("id")),
            "taskwarden.kind": kind,
            "taskwarden.attempt": attempt,
        }
        if worker_id is not None:
            attributes["taskwarden.worker.id"] = worker_id
        tracer = trace.get_tracer("taskwarden")
        self._span = tracer.start_span(
            f"run {kind}",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        self._context = trace.set_span_in_context(self._span)
        if self._span.get_span_context().is_valid:
            self.traceparent = self._traceparent_of(self._context)

    @staticmethod
    def _traceparent_of(context: Any) -> str | None:
        carrier: dict[str, str] = {}
        assert _propagator is not None
        _propagator.inject(carrier, context=context)
        return carrier.get("traceparent")

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Makes the run span current while the handler runs (in this task or thread)."""
        if self._context is None:
            yield
            return
        token = otel_context.attach(self._context)
        try:
            yield
        finally:
            otel_context.detach(token)

    def end(self, outcome: dict[str, Any]) -> str | None:
        """Ends the span with the attempt's outcome; its ``traceparent`` for the report."""
        if self._span is None:
            return None
        status = str(outcome.get("status"))
        if status == "failed":
            self._span.set_status(Status(StatusCode.ERROR, str(outcome.get("error"))))
        self._span.set_attribute("taskwarden.outcome", status)
        self._span.end()
        if not self._span.get_span_context().is_valid:
            return None
        return self._traceparent_of(self._context)
