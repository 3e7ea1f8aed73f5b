"""Run-time fan-out (map-reduce), workflows from Python, and run_inline."""

from __future__ import annotations

from collections import Counter

import pytest

from taskwarden import ConversionError, TaskCancelled, TaskFailed
from taskwarden.testing import run_inline
from tests.conftest import running_worker
from tests.tasks import (
    Page,
    app,
    count_words,
    fan_out_with,
    make_page,
    merge_counts,
    sync_word_count,
    word_count,
)

TEXT = "the quick brown fox jumps over the lazy dog the end " * 5


async def test_fan_out_and_parents_map_reduce() -> None:
    async with running_worker(["t-mapreduce"], concurrency=8):
        ref = await word_count.submit(TEXT, chunk=6)
        counts = await ref.result(timeout=20)
        assert counts == dict(Counter(TEXT.split()))
        info = await ref.info()
        assert info.workflow_id is not None
        workflow = await app.client.get_workflow(info.workflow_id)
        chunks = -(-len(TEXT.split()) // 6)
        assert workflow.total == chunks + 2  # the root, its children and the join
        assert workflow.state == "succeeded"


async def test_fan_out_is_idempotent_across_a_retry() -> None:
    async with running_worker(["t-mapreduce"], concurrency=8):
        ref = await word_count.submit(TEXT, chunk=10, fail_first=True)
        assert await ref.result(timeout=20) == dict(Counter(TEXT.split()))
        info = await ref.info()
        assert info.attempts == 2
        assert info.workflow_id is not None
        workflow = await app.client.get_workflow(info.workflow_id)
        chunks = -(-len(TEXT.split()) // 10)
        assert workflow.total == chunks + 2  # one fan-out, not two


async def test_sync_handler_fans_out() -> None:
    async with running_worker(["t-mapreduce"]):
        ref = await sync_word_count.submit(["a b", "b c", "c c"])
        assert await ref.result(timeout=20) == {"a": 1, "b": 2, "c": 3}


async def test_workflow_dag_from_python() -> None:
    async with running_worker(["t-mapreduce"]):
        nodes = [
            count_words.node("a b").named("left"),
            count_words.node(text="b c c").named("right"),
            merge_counts.node().named("merge").after("left", "right"),
        ]
        wf = await app.submit_workflow(nodes, name="py-dag", policy="fail_fast")
        assert await wf.result(timeout=20) == {"a": 1, "b": 2, "c": 2}
        info = await wf.info()
        assert info.state == "succeeded" and info.speedup is not None


def test_run_inline_without_a_server() -> None:
    assert run_inline(make_page, {"url": "u"}) == Page("u", 200)
    assert run_inline(make_page, url="u", status=404) == Page("u", 404)
    assert run_inline(word_count, text=TEXT) == dict(Counter(TEXT.split()))
    assert run_inline(sync_word_count, texts=["x y", "y"]) == {"x": 1, "y": 2}
    with pytest.raises(ConversionError) as e:
        run_inline(make_page, {"url": 3})
    assert e.value.path == "payload.url"


def test_run_inline_applies_the_fan_out_policy() -> None:
    # collect: every child runs, the join sees every outcome.
    states = run_inline(fan_out_with, numbers=[1, -2, 3], policy="collect")
    assert states == ["succeeded", "failed", "succeeded"]
    # fail_fast: the first failure stops the rest and cancels the join.
    with pytest.raises(TaskCancelled) as e:
        run_inline(fan_out_with, numbers=[1, -2, 3], policy="fail_fast")
    assert isinstance(e.value.__cause__, ValueError) and "root/000001" in str(e.value.error)
    # quorum: once enough succeeded the rest are cancelled; out of reach, the join is cancelled.
    states = run_inline(fan_out_with, numbers=[1, 2, 3], policy="quorum", quorum=2)
    assert states == ["succeeded", "succeeded", "cancelled"]
    states = run_inline(fan_out_with, numbers=[-1, 2, 3], policy="quorum", quorum=2)
    assert states == ["failed", "succeeded", "succeeded"]
    with pytest.raises(TaskCancelled, match="quorum of 2 out of reach"):
        run_inline(fan_out_with, numbers=[-1, -2, 3], policy="quorum", quorum=2)


async def test_fan_out_policies_on_the_server_as_inline() -> None:
    # What run_inline promises, checked against a real server and worker.
    async with running_worker(["t-mapreduce"], concurrency=8):
        ref = await fan_out_with.submit(numbers=[1, -2, 3], policy="collect")
        assert await ref.result(timeout=20) == ["succeeded", "failed", "succeeded"]
        ref = await fan_out_with.submit(numbers=[1, -2, 3], policy="fail_fast")
        with pytest.raises(TaskFailed) as failed:
            await ref.result(timeout=20)
        assert failed.value.state == "cancelled"
        ref = await fan_out_with.submit(numbers=[-1, -2, 3], policy="quorum", quorum=2)
        with pytest.raises(TaskFailed) as failed:
            await ref.result(timeout=20)
        assert failed.value.state == "cancelled"
