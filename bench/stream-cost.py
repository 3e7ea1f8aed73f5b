#!/usr/bin/env python3
"""What one Server-Sent Events subscriber costs the server, per event it is sent.

For each build given (default: this checkout's release build), starts a server on a fresh
SQLite directory, queues --tasks no-op tasks in batches and drains them with a 512-slot
worker (three events each: submitted, started, succeeded), then reads the whole log through
`GET /v1/events` as a stream, --runs times, the builds taking turns, and prints the server's
CPU time per event sent (from /proc, Linux only; in clock ticks, so about 30 ns steps at
300,000 events) and the time to read them all.

    bench/stream-cost.py                                   # this build
    bench/stream-cost.py target/compare/550c031/taskwarden target/release/taskwarden

(`bench/compare.sh REV` leaves REV's build in target/compare/.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def call(url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


class Server:
    def __init__(self, binary: str, port: int, data_dir: Path) -> None:
        self.binary, self.port = binary, port
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [binary, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                call(f"{self.url}/v1/queues")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{binary} did not start")

    def fill(self, tasks: int) -> None:
        """Queues `tasks` no-op tasks and waits until a 512-slot worker has run them all."""
        for start in range(0, tasks, 5000):
            batch = [{"queue": "q", "kind": "echo"} for _ in range(min(5000, tasks - start))]
            call(f"{self.url}/v1/tasks/batch", {"tasks": batch})
        worker = subprocess.Popen(
            [self.binary, "worker", "--url", self.url, "--queue", "q", "--concurrency", "512"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TASKWARDEN_LOG": "warn"},
        )
        while True:
            queues = call(f"{self.url}/v1/queues")
            assert isinstance(queues, dict)
            q = queues["queues"][0]
            if q["ready"] == 0 and q["running"] == 0:
                break
            time.sleep(0.2)
        worker.terminate()
        worker.wait()

    def stream(self, events: int) -> tuple[float, float]:
        """Reads the log from its start until `events` have come: (CPU ns per event, seconds)."""
        cpu, started = cpu_seconds(self.process.pid), time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request("GET", "/v1/events", headers={"accept": "text/event-stream"})
        response = conn.getresponse()
        seen, tail = 0, b"\n"  # the first event's `id:` starts the body
        while seen < events:
            chunk = response.read1(1 << 20)
            if not chunk:
                raise RuntimeError(f"the stream ended after {seen} events")
            seen += (tail + chunk).count(b"\nid: ")
            tail = chunk[-5:]
        elapsed = time.perf_counter() - started
        conn.close()
        time.sleep(0.2)  # the server notices the client has gone
        return (cpu_seconds(self.process.pid) - cpu) / seen * 1e9, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="*", default=["target/release/taskwarden"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="stream-cost-"))
    servers = [Server(b, 7960 + i, scratch / str(i)) for i, b in enumerate(args.binaries)]
    try:
        for s in servers:
            s.fill(args.tasks)
        time.sleep(2)
        figures: list[list[tuple[float, float]]] = [[] for _ in servers]
        for run in range(args.runs):
            order = range(len(servers)) if run % 2 == 0 else reversed(range(len(servers)))
            for i in order:
                figures[i].append(servers[i].stream(3 * args.tasks))
        print(f"one SSE subscriber reading {3 * args.tasks} events, medians of {args.runs} runs:")
        for s, f in zip(servers, figures, strict=True):
            ns = statistics.median(x[0] for x in f)
            secs = statistics.median(x[1] for x in f)
            print(f"| {s.binary} | server CPU {ns:.0f} ns/event | {secs:.2f} s to read them all |")
    finally:
        for s in servers:
            s.process.terminate()
            s.process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
