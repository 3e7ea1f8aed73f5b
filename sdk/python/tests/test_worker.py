"""How the worker ends attempts: results, failures, retries, cancellation, timeouts, and sync
handlers that block."""

from __future__ import annotations

import asyncio
import time

import pytest

from taskwarden import TaskCancelled, TaskFailed
from tests.conftest import running_worker, wait_for
from tests.tasks import (
    always_fails,
    app,
    blocking_sync,
    events,
    handler_log,
    in_eu,
    logs_with_logging,
    logs_with_logging_sync,
    on_gpu,
    past_timeout,
    permanent_failure,
    quick,
    retry_after_once,
    slow_async,
    slow_sync,
    talkative,
    talkative_sync,
    typed_count,
    unchecked_app,
    with_progress,
)


async def test_task_failed_carries_error_and_attempts() -> None:
    async with running_worker(["t-fail"]):
        ref = await always_fails.submit("boom")
        with pytest.raises(TaskFailed) as e:
            await ref.result(timeout=20)
        assert e.value.state == "failed"
        assert e.value.attempts == 3  # retries=2
        assert e.value.error is not None and e.value.error.startswith(
            "RuntimeError: boom (attempt 3)"
        )
        assert "Traceback" in e.value.error


async def test_permanent_fails_at_once() -> None:
    async with running_worker(["t-fail"]):
        ref = await permanent_failure.submit("bad input")
        with pytest.raises(TaskFailed) as e:
            await ref.result(timeout=10)
        assert e.value.attempts == 1
        assert e.value.error is not None and e.value.error.startswith("Permanent: bad input")
        assert events == ["permanent attempt 1"]


async def test_retry_after_overrides_the_backoff() -> None:
    async with running_worker(["t-fail"]):
        started = time.monotonic()
        ref = await retry_after_once.submit("k")
        assert await ref.result(timeout=20) == 2  # the backoff is a minute; RetryAfter said 0.3 s
        assert time.monotonic() - started < 10
        history = (await ref.info()).raw["history"]
        assert history[0]["error"].startswith("RetryAfter: busy")


async def test_payload_that_does_not_fit_fails_permanently_on_the_worker() -> None:
    # Submitted before any worker registered the kind's schema, so the server cannot check it.
    ref = await unchecked_app.client.submit(
        "typed_count", {"count": "three", "tags": []}, queue="t-types", retries=5
    )
    async with running_worker(["t-types"], on=unchecked_app, register_schemas=False):
        with pytest.raises(TaskFailed) as e:
            await unchecked_app.ref(ref.id, typed_count).result(timeout=10)
    assert e.value.attempts == 1  # not after 6
    assert e.value.error == "invalid payload: payload.count: expected an integer, got a string"
    assert events == []  # the handler never ran


async def test_cancel_reaches_a_running_async_handler() -> None:
    async with running_worker(["t-cancel"]):
        ref = await slow_async.submit(30)
        await wait_for(lambda: "slow_async started" in events, what="the handler to start")
        await ref.cancel()
        with pytest.raises(TaskCancelled):
            await ref.result(timeout=10)
        await wait_for(lambda: "slow_async cancelled: cancelled" in events, what="cancellation")


async def test_cancel_reaches_a_running_sync_handler() -> None:
    async with running_worker(["t-cancel"]):
        ref = await slow_sync.submit(30)
        await wait_for(lambda: "slow_sync started" in events, what="the handler to start")
        started = time.monotonic()
        await ref.cancel()
        with pytest.raises(TaskCancelled):
            await ref.result(timeout=10)
        await wait_for(lambda: "slow_sync saw cancellation: cancelled" in events, what="cancel")
        assert time.monotonic() - started < 5


async def test_timeout_stops_the_handler() -> None:
    async with running_worker(["t-timeout"]):
        started = time.monotonic()
        ref = await past_timeout.submit(30)
        with pytest.raises(TaskFailed) as e:
            await ref.result(timeout=15)
        assert time.monotonic() - started < 8
        assert e.value.attempts == 1
        assert e.value.error is not None and "timed out" in e.value.error
        await wait_for(lambda: "past_timeout stopped: timed out" in events, what="the stop")


async def test_blocked_sync_handler_does_not_starve_the_loop() -> None:
    # One sync handler blocks its thread for a full minute on a 1 s lease: only heartbeats sent
    # meanwhile keep the lease; and async handlers keep running beside it the whole time.
    async with running_worker(["t-block"], concurrency=8, threads=2) as worker:
        blocked = await blocking_sync.submit(60)
        await wait_for(lambda: worker.busy_threads == 1, what="the sync handler to start")
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < 55:
            round_started = time.monotonic()
            refs = await quick.map(range(20))
            assert await app.gather(refs, timeout=5) == [n * 2 for n in range(20)]
            assert time.monotonic() - round_started < 2, "async handlers stalled"
            assert worker.busy_threads == 1  # the sync handler still blocks
            info = await blocked.info()
            assert info.state == "running" and info.attempts == 1, info.raw
            rounds += 1
            await asyncio.sleep(1)
        assert rounds >= 20
        assert await blocked.result(timeout=20) == "woke"
        info = await blocked.info()
        assert info.attempts == 1 and info.raw["history"][0]["outcome"] == "succeeded"
        assert worker.summary.abandoned == 0


async def test_progress_reaches_the_server() -> None:
    async with running_worker(["t-progress"]):
        ref = await with_progress.submit(steps=10)
        seen = []
        while True:
            info = await ref.info()
            if info.progress:
                seen.append(info.progress["fraction"])
            if info.finished:
                break
            await asyncio.sleep(0.1)
        assert await ref.result(timeout=1) == 10
        assert any(0 < f < 1 for f in seen), seen


async def test_declared_capacity_and_labels() -> None:
    # One gpu: tasks asking for one run one at a time, whatever the concurrency.
    async with running_worker(["t-capacity"], concurrency=4, capacity={"gpu": 1}) as worker:
        refs = await on_gpu.map(range(3))
        assert await app.gather(refs, timeout=15) == [0, 1, 2]
        assert worker.prefetch == 0
    starts_and_ends = [e.split()[1] for e in events]
    assert starts_and_ends == ["start", "end"] * 3, events
    # A task requiring a label no live worker has waits, and says why.
    ref = await in_eu.submit()
    async with running_worker(["t-labels"], labels={"region": "us"}):
        await asyncio.sleep(0.5)
        info = await ref.info()
        assert info.state == "ready"
        assert info.unschedulable is not None and "region=eu" in info.unschedulable
    async with running_worker(["t-labels"], labels={"region": "eu"}):
        assert await ref.result(timeout=10) == "eu"


async def test_handler_log_lines_reach_the_server_with_heartbeats_and_the_outcome() -> None:
    async with running_worker(["t-logs"]):
        ref = await talkative.submit(pause=1.5)
        client = app.client
        # The first line rides on a heartbeat while the handler still runs.
        deadline = time.monotonic() + 10
        page = await client.logs(ref.id)
        while not page["lines"]:
            assert time.monotonic() < deadline, "no line while the task ran"
            page = await client.logs(ref.id, timeout=1.0)
        assert [line["line"] for line in page["lines"]] == ["starting"]
        assert not page["finished"]
        assert await ref.result(timeout=20) == "ok"
        rest = await client.logs(ref.id, after=page["next"])
        assert [line["line"] for line in rest["lines"]] == ["attempt 1 done"]
        assert rest["finished"]
        assert all(line["attempt"] == 1 for line in page["lines"] + rest["lines"])
        sync = await talkative_sync.submit(n=3)
        assert await sync.result(timeout=20) == 3
        lines = (await client.logs(sync.id))["lines"]
        assert [line["line"] for line in lines] == ["line 0", "line 1", "line 2"]


async def test_records_logged_inside_a_handler_reach_its_task_log() -> None:
    async with running_worker(["t-logs"]):
        handler_log.info("outside any handler")  # goes to no task
        ref = await logs_with_logging.submit(rows=3)
        assert await ref.result(timeout=20) == 3
        sync = await logs_with_logging_sync.submit()
        assert await sync.result(timeout=20) == "ok"
        client = app.client
        lines = [line["line"] for line in (await client.logs(ref.id))["lines"]]
        assert lines == ["INFO imported 3 rows"]
        sync_lines = [line["line"] for line in (await client.logs(sync.id))["lines"]]
        assert sync_lines == ["WARNING from a pool thread"]
