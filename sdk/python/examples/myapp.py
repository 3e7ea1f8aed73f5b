"""The README's quickstart app: two tasks, one async and one sync, with typed payloads.

taskwarden-py worker myapp:app --queues web --concurrency 64
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from taskwarden import Context, Permanent, Taskwarden

app = Taskwarden(os.environ.get("TASKWARDEN_URL", "http://127.0.0.1:7433"))


@dataclass
class Page:
    url: str
    words: int
    digest: str


@app.task(queue="web", retries=5, timeout="30s", backoff="exponential")
async def summarize(ctx: Context, url: str, text: str) -> Page:
    """An async handler: runs on the worker's event loop."""
    if not url.startswith(("http://", "https://")):
        raise Permanent(f"not a URL: {url}")  # fails now, no retries
    ctx.progress(0.5, "counting")
    return Page(url, len(text.split()), hashlib.sha256(text.encode()).hexdigest()[:12])


@app.task(queue="web")
def checksum(ctx: Context, data: list[int]) -> int:
    """A sync handler: runs in the worker's own thread pool, never blocking the loop."""
    return sum(data) % 65521
