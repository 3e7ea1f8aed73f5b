"""Tasks the tests run, on one app. Each feature has queues of its own so that tests sharing a
server never take each other's tasks. Also imported by worker subprocesses
(``python -m taskwarden worker tests.tasks:app``), which find the server in TASKWARDEN_URL."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, TypedDict, cast

from pydantic import BaseModel

from taskwarden import Context, FanOut, Permanent, Quorum, RetryAfter, TaskLogHandler, Taskwarden
from taskwarden.workflow import Policy

app = Taskwarden()

# What handlers saw, for tests running the worker in process.
events: list[str] = []
events_lock = threading.Lock()


def note(event: str) -> None:
    with events_lock:
        events.append(event)
    marks = os.environ.get("TW_TEST_MARKS")
    if marks:
        with open(marks, "a") as f:
            f.write(event + "\n")


# --- conversion ---------------------------------------------------------------------------------


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Page:
    url: str
    status: int
    tags: list[str] = field(default_factory=list)


class Point(BaseModel):
    x: int
    y: int


class Box(TypedDict):
    width: float
    height: float


@app.task(queue="t-basic")
async def make_page(
    ctx: Context, url: str, status: int = 200, tags: list[str] | None = None
) -> Page:
    return Page(url=url, status=status, tags=tags or [])


@app.task(queue="t-basic")
async def add_points(ctx: Context, a: Point, b: Point) -> Point:
    return Point(x=a.x + b.x, y=a.y + b.y)


@app.task(queue="t-basic")
def area(ctx: Context, box: Box, color: Color = Color.RED) -> tuple[float, Color]:
    return box["width"] * box["height"], color


@app.task(queue="t-basic")
def sync_add(ctx: Context, a: int, b: int) -> int:
    return a + b


@app.task(queue="t-basic")
async def echo_pages(ctx: Context, pages: list[Page], mode: Literal["a", "b"] = "a") -> list[Page]:
    return pages


# --- failures ----------------------------------------------------------------------------------


@app.task(queue="t-fail", retries=2, backoff="none")
async def always_fails(ctx: Context, message: str) -> None:
    raise RuntimeError(f"{message} (attempt {ctx.attempt})")


@app.task(queue="t-fail", retries=5, backoff="none")
async def permanent_failure(ctx: Context, reason: str) -> None:
    note(f"permanent attempt {ctx.attempt}")
    raise Permanent(reason)


@app.task(queue="t-fail", retries=3, backoff="1m")
async def retry_after_once(ctx: Context, key: str) -> int:
    # The task's backoff is a minute: only RetryAfter's short delay lets the test finish.
    if ctx.attempt == 1:
        raise RetryAfter(0.3, "busy, come back soon")
    return ctx.attempt


# On an app of its own, so that no worker process of the other tests registers its schema: the
# test checks what the worker does with a payload the server could not check.
unchecked_app = Taskwarden()


@unchecked_app.task(queue="t-types", retries=5, backoff="none")
async def typed_count(ctx: Context, count: int, tags: list[str]) -> int:
    note(f"typed_count attempt {ctx.attempt}")
    return count + len(tags)


@app.task(queue="t-schema")
async def needs_url(ctx: Context, url: str, depth: int = 1, page: Page | None = None) -> str:
    return f"{url} at depth {depth}"


# --- stopping handlers -------------------------------------------------------------------------


@app.task(queue="t-cancel", retries=0)
async def slow_async(ctx: Context, seconds: float) -> str:
    note("slow_async started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(f"slow_async cancelled: {ctx.cancel_reason}")
        raise
    return "finished"


@app.task(queue="t-cancel", retries=0)
def slow_sync(ctx: Context, seconds: float) -> str:
    note("slow_sync started")
    if ctx.wait_cancelled(seconds):
        note(f"slow_sync saw cancellation: {ctx.cancel_reason}")
        return "stopped"
    return "finished"


@app.task(queue="t-timeout", timeout="1s", retries=0)
async def past_timeout(ctx: Context, seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        note(f"past_timeout stopped: {ctx.cancel_reason}")
        raise
    return "finished"


@app.task(queue="t-block", lease_timeout="1s", retries=0)
def blocking_sync(ctx: Context, seconds: float) -> str:
    time.sleep(seconds)  # blocks its thread, not the loop
    return "woke"


@app.task(queue="t-block", lease_timeout="1s")
async def quick(ctx: Context, n: int) -> int:
    await asyncio.sleep(0.01)
    return n * 2


@app.task(queue="t-kill", retries=3, lease_timeout="1s", backoff="none")
async def marked(ctx: Context, key: str, seconds: float) -> dict[str, int]:
    note(f"{key} start {ctx.attempt}")
    await asyncio.sleep(seconds)
    note(f"{key} done {ctx.attempt}")
    return {"attempt": ctx.attempt}


@app.task(queue="t-logs", lease_timeout="1s")
async def talkative(ctx: Context, pause: float) -> str:
    ctx.log("starting")
    await asyncio.sleep(pause)
    ctx.log(f"attempt {ctx.attempt} done")
    return "ok"


@app.task(queue="t-logs")
def talkative_sync(ctx: Context, n: int) -> int:
    for i in range(n):
        ctx.log(f"line {i}")
    return n


# Records logged inside a handler reach its task's log through TaskLogHandler.
handler_log = logging.getLogger("tests.handler")
handler_log.setLevel(logging.INFO)
handler_log.addHandler(TaskLogHandler(logging.INFO))


@app.task(queue="t-logs")
async def logs_with_logging(ctx: Context, rows: int) -> int:
    handler_log.debug("below the handler's level")
    handler_log.info("imported %d rows", rows)
    return rows


@app.task(queue="t-logs")
def logs_with_logging_sync(ctx: Context) -> str:
    handler_log.warning("from a pool thread")
    return "ok"


@app.task(queue="t-progress")
async def with_progress(ctx: Context, steps: int) -> int:
    for i in range(steps):
        ctx.progress((i + 1) / steps, f"step {i + 1}")
        await asyncio.sleep(0.2)
    return steps


# --- gather, fan-out ---------------------------------------------------------------------------


@app.task(queue="t-gather", retries=0)
async def maybe_fail(ctx: Context, n: int, fail: bool = False, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    if fail:
        raise Permanent(f"item {n} fails")
    return n


@app.task(queue="t-mapreduce")
async def count_words(ctx: Context, text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


@app.task(queue="t-mapreduce")
async def merge_counts(ctx: Context) -> dict[str, int]:
    total: dict[str, int] = {}
    for parent in await ctx.parents():
        for word, n in parent.value(dict[str, int]).items():
            total[word] = total.get(word, 0) + n
    return total


@app.task(queue="t-mapreduce", retries=2, backoff="none")
async def word_count(
    ctx: Context, text: str, chunk: int = 4, fail_first: bool = False
) -> FanOut[dict[str, int]]:
    words = text.split()
    chunks = [" ".join(words[i : i + chunk]) for i in range(0, len(words), chunk)]
    fan_out = await ctx.fan_out(count_words.each(chunks), join=merge_counts)
    if fail_first and ctx.attempt == 1:
        # Fails after fanning out: the retry must get the same fan-out back, not a second one.
        raise RuntimeError("failing after the fan-out")
    return fan_out


@app.task(queue="t-mapreduce", retries=0)
async def fails_below_zero(ctx: Context, n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    return n


@app.task(queue="t-mapreduce")
async def outcomes(ctx: Context) -> list[str]:
    return [p.state for p in await ctx.parents()]


@app.task(queue="t-mapreduce", retries=0)
async def fan_out_with(
    ctx: Context, numbers: list[int], policy: str, quorum: int = 0
) -> FanOut[list[str]]:
    chosen = Quorum(min_successes=quorum) if policy == "quorum" else cast(Policy, policy)
    return await ctx.fan_out(fails_below_zero.each(numbers), join=outcomes, policy=chosen)


@app.task(queue="t-mapreduce")
def sync_word_count(ctx: Context, texts: list[str]) -> FanOut[dict[str, int]]:
    return ctx.fan_out_sync(count_words.each(texts), join=merge_counts)


@app.task(queue="t-capacity", resources={"gpu": 1})
async def on_gpu(ctx: Context, n: int) -> int:
    note(f"gpu start {n}")
    await asyncio.sleep(0.4)
    note(f"gpu end {n}")
    return n


@app.task(queue="t-labels", labels={"region": "eu"})
async def in_eu(ctx: Context) -> str:
    return "eu"


@app.task(queue="t-metrics")
async def metered(ctx: Context, n: int) -> int:
    return n


@app.task(queue="t-metrics", retries=1, backoff="none")
async def metered_failing(ctx: Context) -> None:
    raise RuntimeError("fails every time")


@app.task(queue="t-logs")
async def logged(ctx: Context, n: int) -> int:
    return n


@app.task(queue="t-logs", retries=1, backoff="none")
async def logged_failing(ctx: Context) -> None:
    raise RuntimeError("fails every time")


# --- traces -------------------------------------------------------------------------------------


@app.task(queue="t-traces", retries=1, backoff="10ms")
async def traced_async(ctx: Context, fail_first: bool) -> str | None:
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    note(f"async {ctx.attempt} {current.trace_id:032x} {current.span_id:016x} {ctx.traceparent}")
    if fail_first and ctx.attempt == 1:
        raise RuntimeError("once")
    return ctx.traceparent


@app.task(queue="t-traces")
def traced_sync(ctx: Context) -> str | None:
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    note(f"sync {ctx.attempt} {current.trace_id:032x} {current.span_id:016x} {ctx.traceparent}")
    return ctx.traceparent


# --- events -------------------------------------------------------------------------------------


@app.task(queue="t-events")
async def evented(ctx: Context, n: int) -> int:
    return n
