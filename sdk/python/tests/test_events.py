"""The event log from Python, against a real server: a page, and the live stream followed while
a worker runs tasks, resumed from an id in the middle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskwarden import AsyncClient, Client
from taskwarden.errors import ApiError
from tests.conftest import running_worker
from tests.tasks import app, evented


async def _collect(
    client: AsyncClient, after: str | None, ids: set[str], want: int
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async for e in client.follow_events(after, queue="t-events"):
        if e.get("task_id") in ids:
            got.append(e)
        if len(got) == want:
            break
    return got


async def test_follow_events_sees_each_task_submitted_started_and_succeeded_in_order() -> None:
    async with AsyncClient(app.url) as client:
        start = (await client.events("now"))["next"]
        async with running_worker(["t-events"]):
            refs = [await evented.submit(n) for n in range(3)]
            ids = {r.id for r in refs}
            got = await asyncio.wait_for(_collect(client, start, ids, 9), 30)
        for ref in refs:
            mine = [e["type"] for e in got if e["task_id"] == ref.id]
            assert mine == ["task.submitted", "task.started", "task.succeeded"], mine
        # Resumed from the fourth event: the rest, once each, in the same order.
        rest = await asyncio.wait_for(_collect(client, got[3]["id"], ids, 5), 30)
        assert [e["id"] for e in rest] == [e["id"] for e in got[4:]]
        # A page says the same, filtered by type.
        page = await client.events(start, queue="t-events", types=["task.succeeded"], limit=1000)
        assert [e["task_id"] for e in page["events"] if e["task_id"] in ids] == [
            e["task_id"] for e in got if e["type"] == "task.succeeded"
        ]
        with Client(app.url) as sync:
            same = sync.events(start, queue="t-events", types=["task.succeeded"], limit=1000)
        assert same == page


async def test_a_bad_filter_is_refused_not_retried() -> None:
    async with AsyncClient(app.url) as client:
        with pytest.raises(ApiError) as e:
            async for _ in client.follow_events(types=["no.such"]):
                pass
        assert e.value.status == 400
