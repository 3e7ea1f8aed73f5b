"""Worker processes: killed with SIGKILL mid-task, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from taskwarden import TaskFailed
from taskwarden.testing import ServerProcess
from tests.conftest import read_marks, running_worker, wait_for, worker_process
from tests.tasks import app, logged, logged_failing, marked


async def test_kill_9_mid_task_runs_again_elsewhere_and_completes_once(
    taskwarden_server: ServerProcess, marks: Path
) -> None:
    first = worker_process(taskwarden_server.url, "t-kill", marks)
    try:
        ref = await marked.submit("k9", 2.0)
        await wait_for(lambda: "k9 start 1" in read_marks(marks), 15, "the first attempt")
        first.kill()  # SIGKILL: no release, no report; only the lease's expiry frees the task
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
    async with running_worker(["t-kill"]):
        result = await ref.result(timeout=20)
    info = await ref.info()
    assert result == {"attempt": 2}, info.raw
    assert info.state == "succeeded" and info.attempts == 2, info.raw
    outcomes = [a["outcome"] for a in info.raw["history"]]
    assert outcomes == ["timed_out", "succeeded"], info.raw
    # The first attempt never finished; the second finished once.
    assert [m for m in read_marks(marks) if m.startswith("k9 done")] == []
    assert [e for e in marked_events() if e.startswith("k9 done")] == ["k9 done 2"]


def marked_events() -> list[str]:
    from tests.tasks import events

    return list(events)


async def test_sigterm_lets_the_running_task_finish(
    taskwarden_server: ServerProcess, marks: Path
) -> None:
    proc = worker_process(taskwarden_server.url, "t-kill", marks, "--grace", "10")
    try:
        ref = await marked.submit("term", 1.5)
        await wait_for(lambda: "term start 1" in read_marks(marks), 15, "the attempt")
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 15)
        assert code == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_marks(marks) == ["term start 1", "term done 1"]
    info = await ref.info()
    assert info.state == "succeeded" and info.attempts == 1


async def test_sigterm_past_the_grace_period_releases_the_task(
    taskwarden_server: ServerProcess, marks: Path
) -> None:
    proc = worker_process(taskwarden_server.url, "t-kill", marks, "--grace", "0.5")
    try:
        ref = await marked.submit("slow", 60)
        await wait_for(lambda: "slow start 1" in read_marks(marks), 15, "the attempt")
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 15)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code == 0, output
        assert time.monotonic() - started < 5
        assert "released=1" in output
    finally:
        if proc.poll() is None:
            proc.kill()
    info = await ref.info()
    # Given back at once (not left to its lease to expire), without using up an attempt.
    assert info.state == "ready", info
    assert info.raw["history"][0]["outcome"] == "released"
    await ref.cancel()


@pytest.mark.parametrize("signum", [signal.SIGINT])
async def test_second_signal_cuts_the_grace_short(
    taskwarden_server: ServerProcess, marks: Path, signum: signal.Signals
) -> None:
    proc = worker_process(taskwarden_server.url, "t-kill", marks, "--grace", "60")
    try:
        ref = await marked.submit("twice", 60)
        await wait_for(lambda: "twice start 1" in read_marks(marks), 15, "the attempt")
        proc.send_signal(signum)
        await asyncio.sleep(0.3)
        proc.send_signal(signum)
        code = await asyncio.to_thread(proc.wait, 15)
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    info = await ref.info()
    assert info.state == "ready"
    await ref.cancel()


async def test_a_frozen_worker_past_its_lease_has_its_late_report_refused(
    taskwarden_server: ServerProcess, marks: Path
) -> None:
    frozen = worker_process(taskwarden_server.url, "t-kill", marks)
    try:
        ref = await marked.submit("frozen", 1.5)
        await wait_for(lambda: "frozen start 1" in read_marks(marks), 15, "the first attempt")
        frozen.send_signal(signal.SIGSTOP)  # no heartbeats: the 1 s lease expires
        async with running_worker(["t-kill"]):
            result = await ref.result(timeout=20)
        frozen.send_signal(signal.SIGCONT)  # its handler finishes and it tries to report
        await wait_for(lambda: "frozen done 1" in read_marks(marks), 15, "the late finish")
        await asyncio.sleep(1.0)
        frozen.terminate()
        output = (await asyncio.to_thread(frozen.communicate, None, 15))[0].decode()
    finally:
        if frozen.poll() is None:
            frozen.send_signal(signal.SIGCONT)
            frozen.kill()
    info = await ref.info()
    # Attempt 2 may have gone to the frozen worker too: its long-poll fetch was still parked on
    # the server, which cannot tell a stopped process from a busy one; that lease expired too.
    assert info.state == "succeeded" and result == {"attempt": info.attempts}, info.raw
    outcomes = [a["outcome"] for a in info.raw["history"]]
    assert outcomes == ["timed_out"] * (info.attempts - 1) + ["succeeded"], info.raw
    # The late outcome was refused (or the worker learned of the lost lease first and dropped it).
    assert "lease_lost" in output or "lease lost" in output, output


async def test_a_worker_logs_one_json_line_per_task(
    taskwarden_server: ServerProcess, marks: Path
) -> None:
    refs = await logged.map([1, 2])
    failing = await logged_failing.submit()
    proc = worker_process(
        taskwarden_server.url, "t-logs", marks, "--log-level", "info", "--log-format", "json"
    )
    try:
        assert await app.gather(refs, timeout=20) == [1, 2]
        with pytest.raises(TaskFailed):
            await failing.result(timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in out.decode().splitlines()]  # every line is JSON
    finished = [line for line in lines if "task_id" in line]
    by_task = {(line["task_id"], line["attempt"]): line for line in finished}
    for ref in refs:
        line = by_task[(ref.id, 1)]
        assert line["kind"] == "logged" and line["outcome"] == "succeeded"
        assert line["level"] == "info" and line["run_ms"] >= 0
    assert by_task[(failing.id, 1)]["outcome"] == "failed"
    assert by_task[(failing.id, 2)]["kind"] == "logged_failing"
    assert all("\x1b[" not in line for line in out.decode().splitlines())  # no colour codes
