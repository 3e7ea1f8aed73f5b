"""Shared fixtures: the app of ``tests.tasks`` bound to the session's real server, in-process
workers, and worker subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from taskwarden import Taskwarden, Worker
from taskwarden.testing import ServerProcess
from tests.tasks import app, events, unchecked_app

SDK_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
async def bound_app(taskwarden_server: ServerProcess) -> AsyncIterator[None]:
    """Points the tests' app at the session's server, with a clean record of events."""
    app.url = unchecked_app.url = taskwarden_server.url
    events.clear()
    yield
    await app.aclose()
    await unchecked_app.aclose()


@contextlib.asynccontextmanager
async def running_worker(
    queues: Sequence[str], on: Taskwarden = app, **settings: Any
) -> AsyncIterator[Worker]:
    """A worker on this event loop serving ``queues`` (and only the tasks declared for them),
    stopped gracefully at the end."""
    settings.setdefault("tasks", [t for t in on.tasks.values() if t.queue in queues])
    settings.setdefault("shutdown_grace", 5.0)
    worker = on.worker(queues=queues, **settings)
    stop = asyncio.Event()
    run = asyncio.ensure_future(worker.run(stop))
    deadline = time.monotonic() + 10
    while worker.worker_id is None:
        if run.done():
            run.result()
        assert time.monotonic() < deadline, "the worker did not register"
        await asyncio.sleep(0.01)
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


async def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


def worker_process(url: str, queues: str, marks: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``python -m taskwarden worker tests.tasks:app`` in a process of its own."""
    env = {**os.environ, "TASKWARDEN_URL": url, "TW_TEST_MARKS": str(marks)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskwarden",
            "worker",
            "tests.tasks:app",
            "--queues",
            queues,
            "--log-level",
            "warning",
            *extra,
        ],
        cwd=SDK_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def read_marks(marks: Path) -> list[str]:
    return marks.read_text().splitlines() if marks.exists() else []


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "marks.txt"
