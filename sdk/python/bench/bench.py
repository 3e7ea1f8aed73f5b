"""Rough numbers for the Python SDK on this machine (printed, not a test): single submits
awaited one by one, batch submits, the drain rate of one Python worker process on no-op tasks,
and pickup latency (submit to handler start on an idle worker).

    python bench/bench.py [--tasks 20000] [--runs 3]

Starts a server of its own (``TASKWARDEN_BIN``) unless ``TASKWARDEN_URL`` names one, and a
worker process (``taskwarden-py worker bench:app``) for the drain and pickup runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from taskwarden import Context, Taskwarden
from taskwarden.testing import ServerProcess

app = Taskwarden(queue="bench")


@app.task
async def noop(ctx: Context, n: int) -> None:
    return None


@app.task(queue="bench-pickup")
async def stamp(ctx: Context, sent: float) -> float:
    return time.time() - sent


async def single_submits(count: int) -> float:
    started = time.monotonic()
    for n in range(count):
        await app.client.submit("noop", {"n": n}, queue="bench-idle")
    return count / (time.monotonic() - started)


async def batch_submits(count: int) -> float:
    bodies = [noop.body({"n": n}) | {"queue": "bench-idle"} for n in range(count)]
    started = time.monotonic()
    for i in range(0, count, 1000):
        await app.client.submit_batch(bodies[i : i + 1000])
    return count / (time.monotonic() - started)


async def drain(count: int) -> float:
    """Enqueues ``count`` tasks in batches (worker running), then times until all finished."""
    bodies = [noop.body({"n": n}) for n in range(count)]
    started = time.monotonic()
    for i in range(0, count, 1000):
        await app.client.submit_batch(bodies[i : i + 1000])
    while True:
        page = await app.client.list_tasks(queue="bench", state="succeeded", limit=1)
        queues = {q["name"]: q for q in await app.client.queues()}
        q = queues.get("bench", {})
        if not q.get("ready") and not q.get("running") and not q.get("scheduled") and page.tasks:
            return count / (time.monotonic() - started)
        await asyncio.sleep(0.05)


async def pickup(samples: int) -> tuple[float, float]:
    lags = []
    for _ in range(samples):
        ref = await stamp.submit(time.time())
        lags.append(await ref.result(timeout=10) * 1000)
        await asyncio.sleep(0.01)
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1]


def start_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskwarden",
            "worker",
            "bench:app",
            "--queues",
            "bench,bench-pickup",
            "--concurrency",
            "512",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).parent,
        env={**os.environ, "TASKWARDEN_URL": url},
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = (
        None if os.environ.get("TASKWARDEN_URL") else ServerProcess.start("--durability", "relaxed")
    )
    app.url = server.url if server else os.environ["TASKWARDEN_URL"]
    worker = start_worker(app.url)
    try:
        await asyncio.sleep(1.5)
        figures: dict[str, list[float]] = {
            k: [] for k in ("single", "batch", "drain", "p50", "p99")
        }
        for run in range(args.runs):
            single = await single_submits(5000)
            batch = await batch_submits(args.tasks)
            drained = await drain(args.tasks)
            p50, p99 = await pickup(300)
            for key, value in zip(figures, (single, batch, drained, p50, p99), strict=True):
                figures[key].append(value)
            print(
                f"run {run + 1}: single submits {single:,.0f}/s, batch submits {batch:,.0f}/s, "
                f"drain {drained:,.0f} tasks/s (one worker process), pickup p50 {p50:.2f} ms "
                f"p99 {p99:.2f} ms",
                flush=True,
            )
        m = {key: statistics.median(values) for key, values in figures.items()}
        print(
            f"median of {args.runs}: single submits {m['single']:,.0f}/s, batch submits "
            f"{m['batch']:,.0f}/s, drain {m['drain']:,.0f} tasks/s, pickup p50 {m['p50']:.2f} ms "
            f"p99 {m['p99']:.2f} ms",
            flush=True,
        )
        # The same medians as table rows, as bench/compare.sh reads them.
        units = {"single": "submits/s", "batch": "submits/s", "drain": "tasks/s"}
        names = {"single": "python single submits", "batch": "python batch submits"}
        names |= {"drain": "python drain", "p50": "python pickup p50", "p99": "python pickup p99"}
        for key, value in m.items():
            print(f"| {names[key]} | {value:.2f} {units.get(key, 'ms')} |")
    finally:
        worker.terminate()
        worker.wait(30)
        await app.aclose()
        if server:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
