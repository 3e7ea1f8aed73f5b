"""Submitting and collecting through a real server, with a Python worker in process."""

from __future__ import annotations

import asyncio

import pytest

from taskwarden import Conflict, NotFound, TaskFailed, Unprocessable
from tests.conftest import running_worker
from tests.tasks import (
    Box,
    Color,
    Page,
    Point,
    add_points,
    app,
    area,
    echo_pages,
    make_page,
    needs_url,
    sync_add,
)


async def test_dataclass_round_trip() -> None:
    async with running_worker(["t-basic"]):
        ref = await make_page.submit(url="https://example.com/", tags=["a", "b"])
        page = await ref.result(timeout=10)
        assert page == Page(url="https://example.com/", status=200, tags=["a", "b"])
        info = await ref.info()
        assert info.payload == {"url": "https://example.com/", "tags": ["a", "b"]}
        assert info.result == {"url": "https://example.com/", "status": 200, "tags": ["a", "b"]}
        pages = await (await echo_pages.submit([page, Page("u", 404)], mode="b")).result(10)
        assert pages == [page, Page("u", 404)]


async def test_pydantic_typeddict_and_enum_round_trip() -> None:
    async with running_worker(["t-basic"]):
        point = await (await add_points.submit(Point(x=1, y=2), b=Point(x=3, y=4))).result(10)
        assert point == Point(x=4, y=6)
        box: Box = {"width": 2.0, "height": 1.5}
        assert await (await area.submit(box, Color.BLUE)).result(10) == (3.0, Color.BLUE)


async def test_sync_api_and_sync_handler() -> None:
    async with running_worker(["t-basic"]):

        def blocking_client() -> tuple[int, list[int]]:
            one = sync_add.submit_sync(2, 3).result(timeout=10)
            many = [r.result(timeout=10) for r in sync_add.map_sync([(i, i) for i in range(5)])]
            return one, many

        assert await asyncio.to_thread(blocking_client) == (5, [0, 2, 4, 6, 8])


async def test_batch_submit_with_map() -> None:
    async with running_worker(["t-basic"], concurrency=32):
        refs = await make_page.map(
            [{"url": f"https://example.com/{i}", "status": i} for i in range(200)]
        )
        assert len({r.id for r in refs}) == 200
        pages = await app.gather(refs)
        assert pages == [Page(f"https://example.com/{i}", i) for i in range(200)]


async def test_submit_options_reach_the_server() -> None:
    # No worker serves this queue: the tasks wait, and their options can be read back.
    task = make_page.with_options(
        queue="t-options",
        priority=7,
        tags=["x"],
        idempotency_key="order-42",
        delay="30s",
        retries=4,
    )
    first = await task.submit(url="u")
    again = await task.submit(url="u")
    assert first.id == again.id  # the idempotency key returned the first task
    with pytest.raises(Conflict) as conflict:
        await task.submit(url="other")  # the same key for another payload is refused
    assert conflict.value.field == "idempotency_key"
    info = await first.info()
    assert (info.queue, info.state, info.max_attempts) == ("t-options", "scheduled", 5)
    assert info.raw["priority"] == 7 and info.raw["tags"] == ["x"]
    page = await app.client.list_tasks(queue="t-options")
    assert [t.id for t in page.tasks] == [first.id]
    cancelled = await first.cancel()
    assert cancelled.state == "cancelled"
    with pytest.raises(TaskFailed) as e:
        await first.result(timeout=5)
    assert e.value.state == "cancelled"
    retried = await first.retry()
    assert retried.state in ("ready", "scheduled")
    await first.cancel()


async def test_list_tasks_searches_payload_fields() -> None:
    for customer in (41, 42, 43):
        await app.client.submit("charge", {"customer_id": customer}, queue="t-search")
    page = await app.client.list_tasks(query="queue:t-search payload.customer_id=42")
    assert [t.raw["payload"] for t in page.tasks] == [{"customer_id": 42}]
    with pytest.raises(Unprocessable) as e:
        await app.client.list_tasks(query="colour:red")
    assert e.value.field == "q"


async def test_typed_errors() -> None:
    with pytest.raises(NotFound) as e:
        await app.client.get("01890000-0000-7000-8000-000000000000")
    assert e.value.status == 404 and e.value.code == "not_found"


async def test_server_refuses_payload_not_matching_the_registered_schema() -> None:
    async with running_worker(["t-schema"]):
        kinds = {k.kind: k for k in await app.client.kinds()}
        assert kinds["needs_url"].workers >= 1
        assert kinds["needs_url"].schema["required"] == ["url"]
        await asyncio.sleep(1.1)  # schemas are re-read at most once a second on each node
        with pytest.raises(Unprocessable) as e:
            await app.client.submit("needs_url", {}, queue="t-schema")
        assert e.value.status == 422 and e.value.field == "payload.url"
        assert "required" in e.value.message
        with pytest.raises(Unprocessable) as e:
            await app.client.submit("needs_url", {"url": 5}, queue="t-schema")
        assert e.value.field == "payload.url"
        with pytest.raises(Unprocessable) as e:
            await app.client.submit(
                "needs_url", {"url": "u", "page": {"url": "p"}}, queue="t-schema"
            )
        assert e.value.field is not None and e.value.field.startswith("payload.page")
        with pytest.raises(Unprocessable) as e:
            await app.client.submit("needs_url", {"url": "u", "depht": 2}, queue="t-schema")
        assert "depht" in str(e.value)
        # A payload that fits goes through, and runs.
        ref = await needs_url.submit("https://example.com/", depth=2)
        assert await ref.result(timeout=10) == "https://example.com/ at depth 2"
