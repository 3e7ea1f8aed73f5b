"""Traces with the OpenTelemetry SDK installed in this process: a submit inside a span carries
it to the server, and the worker runs each attempt in a run span (a child of that span on the
first attempt, a new trace linked to it on a retry), current in async and sync handlers alike.
The spans are read back from the SDK's in-memory exporter; the server is a real process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import running_worker
from tests.tasks import events, traced_async, traced_sync

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
trace.set_tracer_provider(_provider)
_tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter


def _runs(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return sorted(
        (s for s in exporter.get_finished_spans() if s.name == name),
        key=lambda s: int((s.attributes or {})["taskwarden.attempt"]),  # type: ignore[arg-type]
    )


def _tp(trace_id: int, span_id: int) -> str:
    """A traceparent without its flags (this SDK also sets the "random trace id" bit)."""
    return f"00-{trace_id:032x}-{span_id:016x}"


def _ids(traceparent: object) -> str:
    assert isinstance(traceparent, str)
    return traceparent[:-3]


async def test_a_submit_in_a_span_reaches_the_handler_and_a_retry_links_to_it(
    spans: InMemorySpanExporter,
) -> None:
    async with running_worker(["t-traces"]):
        with _tracer.start_as_current_span("caller") as caller:
            ref = await traced_async.submit(True)
        caller_ctx = caller.get_span_context()
        info = await ref.info()
        assert _ids(info.raw["traceparent"]) == _tp(caller_ctx.trace_id, caller_ctx.span_id)
        result = await ref.result(timeout=20)

    first, retry = _runs(spans, "run traced_async")
    # Attempt 1: a child of the caller's span, current inside the handler.
    assert first.parent is not None and first.parent.span_id == caller_ctx.span_id
    assert first.context is not None and first.context.trace_id == caller_ctx.trace_id
    assert first.kind == trace.SpanKind.CONSUMER
    assert first.status.status_code == trace.StatusCode.ERROR
    assert (first.attributes or {})["messaging.message.id"] == ref.id
    seen = [e.split() for e in events if e.startswith("async")]
    assert seen[0][2:4] == [f"{caller_ctx.trace_id:032x}", f"{first.context.span_id:016x}"]
    assert _ids(seen[0][4]) == _tp(first.context.trace_id, first.context.span_id)
    # Attempt 2: a trace of its own, linked to the caller's span.
    assert retry.parent is None and retry.context is not None
    assert retry.context.trace_id != caller_ctx.trace_id
    assert [link.context.span_id for link in retry.links] == [caller_ctx.span_id]
    assert (retry.attributes or {})["taskwarden.outcome"] == "succeeded"
    assert _ids(result) == _tp(retry.context.trace_id, retry.context.span_id)


async def test_a_sync_handler_runs_in_its_span_and_an_untraced_submit_starts_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    async with running_worker(["t-traces"]):
        ref = await traced_sync.submit()
        assert "traceparent" not in (await ref.info()).raw
        result = await ref.result(timeout=20)
    (run,) = _runs(spans, "run traced_sync")
    assert run.parent is None and run.context is not None
    seen = next(e.split() for e in events if e.startswith("sync"))
    assert seen[2:4] == [f"{run.context.trace_id:032x}", f"{run.context.span_id:016x}"]
    assert _ids(result) == _tp(run.context.trace_id, run.context.span_id)
