"""The seed article's example, for real: fan URL fetches out to Python worker processes, gather
the pages, and compare with fetching them one after another.

    python examples/fetch_gather.py

It starts a server of its own (``TASKWARDEN_BIN``) unless ``TASKWARDEN_URL`` names one.

It serves its own small site on 127.0.0.1 (each page takes 40-120 ms; a few answer 500 or 404),
starts two worker processes (``taskwarden-py worker fetch_gather:app``), submits one ``fetch``
task per page in one batch, gathers the pages with ``policy="collect"``, and prints the
speedup ``T_serial / T_parallel`` against a serial run of the same fetches.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from taskwarden import Context, Permanent, TaskFailed, Taskwarden
from taskwarden.testing import ServerProcess

app = Taskwarden(queue="fetch")
PAGES = int(os.environ.get("FETCH_PAGES", "60"))


@dataclass
class Page:
    url: str
    status: int
    bytes: int
    elapsed_ms: float


_http: httpx.AsyncClient | None = None


def http() -> httpx.AsyncClient:
    """One HTTP client per worker process: making one per task (its TLS context, its pool) would
    cost more CPU than the fetch."""
    global _http
    if _http is None:
        _http = httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=100))
    return _http


@app.task(retries=1, timeout="10s", backoff="none")
async def fetch(ctx: Context, url: str) -> Page:
    """Fetches one page: a 4xx fails for good, a 5xx or a network error is retried."""
    started = time.monotonic()
    response = await http().get(url)
    if 400 <= response.status_code < 500:
        raise Permanent(f"HTTP {response.status_code} from {url}")
    response.raise_for_status()
    return Page(
        url, response.status_code, len(response.content), (time.monotonic() - started) * 1e3
    )


# --- the local site ----------------------------------------------------------------------------


class Site(BaseHTTPRequestHandler):
    """``/page/N``: a small page after a delay that depends on N; some pages fail."""

    def do_GET(self) -> None:
        n = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/page/") else -1
        time.sleep(0.04 + (n % 5) * 0.02)
        status = 404 if n < 0 or n % 25 == 7 else 500 if n % 19 == 11 else 200
        body = f"<html><body>page {n}</body></html>".encode() if status == 200 else b"no"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class SiteServer(ThreadingHTTPServer):
    # The default listen backlog of 5 drops the connections of 64 fetches at once, which then
    # wait a second to try again.
    request_queue_size = 256
    daemon_threads = True


def start_site() -> tuple[ThreadingHTTPServer, str]:
    site = SiteServer(("127.0.0.1", 0), Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site, f"http://127.0.0.1:{site.server_address[1]}"


def serial_run(urls: list[str]) -> float:
    """Every fetch one after another, in this process, with the same one retry on a 5xx:
    T_serial."""
    started = time.monotonic()
    with httpx.Client(timeout=5) as client:
        for url in urls:
            if client.get(url).status_code >= 500:
                client.get(url)
    return time.monotonic() - started


async def parallel_run(urls: list[str]) -> tuple[float, list[Page | TaskFailed]]:
    """One task per URL, submitted in a batch and gathered: T_parallel, from submit to the last
    result."""
    started = time.monotonic()
    refs = await fetch.map(urls)
    pages = await app.gather(refs, policy="collect", timeout=60)
    return time.monotonic() - started, pages


def start_workers(url: str, count: int = 2) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "TASKWARDEN_URL": url}
    here = Path(__file__).resolve().parent
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskwarden",
                "worker",
                "fetch_gather:app",
                "--concurrency",
                "32",
                "--log-level",
                "warning",
            ],
            cwd=here,
            env=env,
        )
        for _ in range(count)
    ]


async def wait_for_workers(count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kinds = {k.kind: k for k in await app.client.kinds()}
        if "fetch" in kinds and kinds["fetch"].workers >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the workers did not register")


async def main() -> None:
    server = None if os.environ.get("TASKWARDEN_URL") else ServerProcess.start()
    app.url = server.url if server else os.environ["TASKWARDEN_URL"]
    site, base = start_site()
    workers = start_workers(app.url)
    try:
        await wait_for_workers(len(workers))
        urls = [f"{base}/page/{n}" for n in range(PAGES)]
        t_parallel, results = await parallel_run(urls)
        t_serial = await asyncio.to_thread(serial_run, urls)
        pages = [r for r in results if isinstance(r, Page)]
        failed = [r for r in results if isinstance(r, TaskFailed)]
        print(f"fetch tasks:   {len(urls)} on {len(workers)} worker processes")
        print(f"succeeded:     {len(pages)}  ({sum(p.bytes for p in pages)} bytes gathered)")
        print(f"failed:        {len(failed)}")
        for f in failed[:5]:
            print(f"  {(f.error or '').splitlines()[0]}  ({f.attempts} attempts)")
        print(f"T_serial:      {t_serial:.3f} s   (the same fetches one after another)")
        print(f"T_parallel:    {t_parallel:.3f} s   (submit to last result, through the server)")
        print(f"speedup:       {t_serial / t_parallel:.1f}x  (T_serial / T_parallel)")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
        site.shutdown()
        await app.aclose()
        if server:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
