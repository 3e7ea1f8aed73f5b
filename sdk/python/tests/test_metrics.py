"""/metrics after a known workload, read with Prometheus' own parser (prometheus_client's
OpenMetrics parser): the exact counts of the workload's queue and kinds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from taskwarden import TaskFailed
from tests.conftest import running_worker
from tests.tasks import app, metered, metered_failing


def scrape(url: str | None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as (name, labels) -> value, the node label left out."""
    assert url is not None
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):  # type: ignore[no-untyped-call]
        for s in family.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "node")
            samples[(s.name, labels)] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_a_known_workload() -> None:
    q = "t-metrics"
    refs = await metered.map(range(5))
    failing = [await metered_failing.submit() for _ in range(2)]
    later = await metered.with_options(delay="1h").submit(99)
    await later.cancel()
    before = scrape(app.url)
    assert value(before, "taskwarden_queue_ready", queue=q) == 7
    assert value(before, "taskwarden_queue_scheduled", queue=q) == 0
    async with running_worker([q], concurrency=4, capacity={"metrics_slot": 3}):
        live = scrape(app.url)
        assert value(live, "taskwarden_worker_capacity_declared", resource="metrics_slot") == 3
        assert value(live, "taskwarden_workers_online") >= 1
        assert await app.gather(refs, timeout=20) == list(range(5))
        for ref in failing:
            with pytest.raises(TaskFailed):
                await ref.result(timeout=20)
    s = scrape(app.url)
    ok = {"queue": q, "kind": "metered"}
    bad = {"queue": q, "kind": "metered_failing"}
    assert value(s, "taskwarden_tasks_submitted_total", **ok) == 6
    assert value(s, "taskwarden_tasks_submitted_total", **bad) == 2
    assert value(s, "taskwarden_tasks_started_total", **ok) == 5
    assert value(s, "taskwarden_tasks_started_total", **bad) == 4  # two attempts each
    assert value(s, "taskwarden_tasks_succeeded_total", **ok) == 5
    assert value(s, "taskwarden_tasks_failed_total", **bad, permanent="false") == 2
    assert value(s, "taskwarden_tasks_failed_total", **bad, permanent="true") == 2
    assert value(s, "taskwarden_tasks_cancelled_total", **ok) == 1
    # Histograms: one observation per start, per report, per finish.
    assert value(s, "taskwarden_task_queue_wait_seconds_count", **ok) == 5
    assert value(s, "taskwarden_task_run_seconds_count", **ok) == 5
    assert value(s, "taskwarden_task_run_seconds_count", **bad) == 4
    assert value(s, "taskwarden_task_end_to_end_seconds_count", **ok) == 6  # 5 done, 1 cancelled
    assert value(s, "taskwarden_task_end_to_end_seconds_count", **bad) == 2
    le_inf = value(s, "taskwarden_task_queue_wait_seconds_bucket", **ok, le="+Inf")
    assert le_inf == 5
    # The cluster's view now: nothing left but the two dead letters.
    assert value(s, "taskwarden_queue_ready", queue=q) == 0
    assert value(s, "taskwarden_queue_running", queue=q) == 0
    assert value(s, "taskwarden_queue_dead", queue=q) == 2
    assert value(s, "taskwarden_queue_paused", queue=q) == 0
    # HTTP requests by route: at least the submits above.
    route = {"method": "POST", "route": "/v1/tasks", "status": "201"}
    assert value(s, "taskwarden_http_requests_total", **route) >= 3
