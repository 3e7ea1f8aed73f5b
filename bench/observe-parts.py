#!/usr/bin/env python3
"""What each part of seeing into the engine costs a wide drain, measured apart.

`taskwarden bench --only observe` puts everything on at once (event log, metrics, a scrape a
second, one SSE subscriber) against everything off. This drains the same backlog through a
server of each setup in turn, round after round, and prints for each the drain's rate and the
server's CPU per task, split into its single SQLite writer (what a drain waits on) and the rest
of its threads, read from /proc (Linux only):

    python3 bench/observe-parts.py [--bin target/release/taskwarden] [--rounds 3] [--tasks 100000]

Setups: plain (--no-event-log --no-metrics), the event log alone, metrics alone (scraped every
second), both, and both with one SSE subscriber (`curl -N`) following the log. Each round runs
every setup once on a fresh SQLite directory, in a rotated order; the figures are medians over
the rounds, and each rate is also given as a share of plain's in the same round.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from intervals import median_interval

SETUPS = [
    ("plain", ["--no-event-log", "--no-metrics"], False, False),
    ("event log", ["--no-metrics"], False, False),
    ("metrics, scraped", ["--no-event-log"], True, False),
    ("both, scraped", [], True, False),
    ("both, scraped, one SSE subscriber", [], True, True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
        return body


def post(url: str, body: Any) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def thread_ticks(pid: int) -> dict[str, tuple[str, int]]:
    """Clock ticks of CPU used so far by each thread of `pid`: {tid: (name, ticks)}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def left(url: str, queue: str) -> int:
    queues = json.loads(get(f"{url}/v1/queues"))
    queues = queues.get("queues", queues) if isinstance(queues, dict) else queues
    return sum(
        int(q.get("ready") or 0) + int(q.get("running") or 0)
        for q in queues
        if q.get("name") == queue
    )


def drain(
    binary: str, flags: list[str], scrape: bool, follow: bool, tasks: int, data_dir: str
) -> tuple[float, float, float]:
    """Queues `tasks` no-op tasks, drains them with one worker of 512 slots; returns
    (tasks/s, writer us/task, rest us/task)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [binary, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker: subprocess.Popen[bytes] | None = None
    subscriber: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    try:
        for _ in range(200):
            try:
                get(f"{url}/v1/queues", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        for start in range(0, tasks, 5000):
            post(
                f"{url}/v1/tasks/batch",
                {"tasks": [{"queue": "wide", "kind": "echo"}] * min(5000, tasks - start)},
            )
        # Leased after every other task (the lowest priority): once it is done, at most the tasks of
        # its last lease are left, which a last check waits for. Polling the queue's depth all
        # along would cost the server more than what is measured.
        sentinel = post(f"{url}/v1/tasks", {"queue": "wide", "kind": "echo", "priority": -1})["id"]
        if follow:
            subscriber = subprocess.Popen(
                ["curl", "-sN", f"{url}/v1/events?after=now"], stdout=subprocess.DEVNULL
            )
        if scrape:

            def scraping() -> None:
                while not stop.wait(1.0):
                    get(f"{url}/metrics")

            threading.Thread(target=scraping, daemon=True).start()
        before, started = thread_ticks(server.pid), time.monotonic()
        worker = subprocess.Popen(
            [binary, "worker", "--url", url, "--queue", "wide", "--concurrency", "512"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TASKWARDEN_LOG": "warn"},
        )
        state = "ready"
        while state not in ("succeeded", "failed", "cancelled"):
            waited = get(f"{url}/v1/tasks/{sentinel}/wait?timeout_ms=30000", timeout=40)
            state = json.loads(waited)["state"]
        if state != "succeeded":
            raise RuntimeError(f"the drain's last task ended {state}")
        while left(url, "wide") > 0:
            time.sleep(0.01)
        elapsed, after = time.monotonic() - started, thread_ticks(server.pid)
    finally:
        stop.set()
        for p in (worker, subscriber, server):
            if p:
                p.terminate()
                p.wait()
    used = {tid: ticks - before.get(tid, (name, 0))[1] for tid, (name, ticks) in after.items()}
    # The busiest SQLite thread is the writer (the other is the checkpointer).
    writer = max(
        (t for tid, t in used.items() if after[tid][0].startswith("taskwarden-sqli")), default=0
    )
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    return (
        (tasks + 1) / elapsed,
        writer * tick_us / tasks,
        (sum(used.values()) - writer) * tick_us / tasks,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default="target/release/taskwarden")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    figures: dict[str, dict[str, list[float]]] = {
        name: {"rate": [], "share": [], "writer": [], "rest": []} for name, *_ in SETUPS
    }
    for r in range(args.rounds):
        order = SETUPS[r % len(SETUPS) :] + SETUPS[: r % len(SETUPS)]
        rates: dict[str, float] = {}
        for name, flags, scrape, follow in order:
            with tempfile.TemporaryDirectory() as d:
                rate, writer, rest = drain(args.bin, flags, scrape, follow, args.tasks, d)
            rates[name] = rate
            for key, value in (("rate", rate), ("writer", writer), ("rest", rest)):
                figures[name][key].append(value)
            print(
                f"round {r + 1}: {name}: {rate:.0f} tasks/s, "
                f"writer {writer:.1f} us/task, rest {rest:.1f}",
                file=sys.stderr,
            )
        for name in rates:
            figures[name]["share"].append(rates[name] / rates["plain"])
    print(
        f"| setup (median of {args.rounds} rounds, {args.tasks} tasks, 1 worker x 512) "
        "| tasks/s | share of plain's, same round (95% interval) "
        "| writer CPU us/task | rest of the server us/task |"
    )
    print("|---|---|---|---|---|")
    for name, *_ in SETUPS:
        f = {k: statistics.median(v) for k, v in figures[name].items()}
        interval = median_interval(figures[name]["share"]) if name != "plain" else None
        share = f"{f['share']:.2f}" + (
            f" ({interval[0]:.2f} to {interval[1]:.2f})" if interval else ""
        )
        print(f"| {name} | {f['rate']:.0f} | {share} | {f['writer']:.1f} | {f['rest']:.1f} |")


if __name__ == "__main__":
    main()
