"""The README's quickstart and the examples run, against the session's server."""

from __future__ import annotations

import os
import subprocess
import sys

from taskwarden.testing import ServerProcess
from tests.conftest import SDK_DIR

EXAMPLES = SDK_DIR / "examples"


def run(script: str, url: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, script],
        cwd=EXAMPLES,
        env={**os.environ, "TASKWARDEN_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_quickstart(taskwarden_server: ServerProcess) -> None:
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskwarden",
            "worker",
            "myapp:app",
            "--queues",
            "web",
            "--concurrency",
            "64",
            "--log-level",
            "error",
        ],
        cwd=EXAMPLES,
        env={**os.environ, "TASKWARDEN_URL": taskwarden_server.url},
    )
    try:
        out = run("submit.py", taskwarden_server.url)
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
    lines = out.splitlines()
    assert lines[0].startswith("Page(url='https://example.com/', words=3, digest=")
    assert lines[1] == "[6, 15, 40853]"
    assert lines[2] == "failed after 1 attempt(s): Permanent: not a URL: nope"


def test_word_count_example(taskwarden_server: ServerProcess) -> None:
    out = run("word_count.py", taskwarden_server.url)
    assert "matches a serial count: True" in out


def test_fetch_gather_example(taskwarden_server: ServerProcess) -> None:
    out = run("fetch_gather.py", taskwarden_server.url, FETCH_PAGES="30")
    assert "fetch tasks:   30 on 2 worker processes" in out
    assert "speedup:" in out
