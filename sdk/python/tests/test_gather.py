"""app.gather under each policy."""

from __future__ import annotations

import time

import pytest

from taskwarden import Quorum, QuorumNotReached, TaskFailed
from tests.conftest import running_worker
from tests.tasks import app, maybe_fail


async def test_collect_returns_results_and_failures_in_order() -> None:
    async with running_worker(["t-gather"]):
        refs = [await maybe_fail.submit(n, fail=n % 3 == 0) for n in range(7)]
        results = await app.gather(refs, policy="collect", timeout=15)
        for n, r in enumerate(results):
            if n % 3 == 0:
                assert isinstance(r, TaskFailed) and r.error and f"item {n} fails" in r.error
            else:
                assert r == n


async def test_fail_fast_raises_the_first_failure_and_cancels_the_rest() -> None:
    async with running_worker(["t-gather"]):
        slow = await maybe_fail.map([{"n": n, "delay": 30} for n in range(3)])
        failing = await maybe_fail.submit(99, fail=True)
        started = time.monotonic()
        with pytest.raises(TaskFailed) as e:
            await app.gather([*slow, failing], policy="fail_fast", timeout=20)
        assert e.value.task_id == failing.id
        assert time.monotonic() - started < 10
        for ref in slow:
            with pytest.raises(TaskFailed) as cancelled:
                await ref.result(timeout=10)
            assert cancelled.value.state == "cancelled"


async def test_quorum_returns_once_reached() -> None:
    async with running_worker(["t-gather"]):
        fast = await maybe_fail.map([{"n": n} for n in range(3)])
        slow = await maybe_fail.map([{"n": n, "delay": 30} for n in range(10, 12)])
        started = time.monotonic()
        results = await app.gather([*fast, *slow], policy=Quorum(0.6), timeout=20)
        assert time.monotonic() - started < 10
        assert results == [0, 1, 2, None, None]
        for ref in slow:
            assert (await ref.wait(10)).state == "cancelled"


async def test_quorum_not_reached() -> None:
    async with running_worker(["t-gather"]):
        refs = await maybe_fail.map([{"n": n, "fail": n > 0} for n in range(3)])
        with pytest.raises(QuorumNotReached) as e:
            await app.gather(refs, policy=Quorum(min_successes=2), timeout=15)
        assert e.value.needed == 2 and len(e.value.failures) == 2
