"""Map-reduce with ``ctx.fan_out``: count the words of a text in parallel chunks and merge the
counts in a join that reads its parents' results.

    python examples/word_count.py

It starts a server of its own (``TASKWARDEN_BIN``) unless ``TASKWARDEN_URL`` names one.

``word_count`` splits the text and fans out one ``count_chunk`` per chunk with ``merge`` as the
join; the join's result stands in for ``word_count``'s, so ``ref.result()`` is the merged count.
A retried ``word_count`` gets the same fan-out back, not a second one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

from taskwarden import Context, FanOut, Taskwarden
from taskwarden.testing import ServerProcess

app = Taskwarden(queue="words")


@app.task
async def count_chunk(ctx: Context, text: str) -> dict[str, int]:
    return dict(Counter(text.split()))


@app.task
async def merge(ctx: Context) -> dict[str, int]:
    """The join: adds up its parents' counts, read page by page in chunk order."""
    total: Counter[str] = Counter()
    for parent in await ctx.parents():
        total.update(parent.value(dict[str, int]))
    return dict(total)


@app.task(retries=2)
async def word_count(ctx: Context, text: str, chunks: int = 40) -> FanOut[dict[str, int]]:
    words = text.split()
    size = max(1, -(-len(words) // chunks))
    parts = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return await ctx.fan_out(count_chunk.each(parts), join=merge)


def make_text(words: int, seed: int = 7) -> str:
    vocabulary = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wise",
        "owls",
        "watch",
    ]
    rng = random.Random(seed)
    return " ".join(rng.choice(vocabulary) for _ in range(words))


async def main() -> None:
    server = None if os.environ.get("TASKWARDEN_URL") else ServerProcess.start()
    app.url = server.url if server else os.environ["TASKWARDEN_URL"]
    stop = asyncio.Event()
    worker = asyncio.ensure_future(app.run_worker(concurrency=16, stop=stop))
    try:
        text = make_text(200_000)
        started = time.monotonic()
        ref = await word_count.submit(text, chunks=40)
        counts = await ref.result(timeout=60)
        took = time.monotonic() - started
        expected = dict(Counter(text.split()))
        info = await ref.info()
        assert info.workflow_id is not None
        workflow = await app.client.get_workflow(info.workflow_id)
        print(f"words:          {len(text.split())} in 40 chunks ({workflow.total} tasks)")
        print(f"distinct words: {len(counts)}; most common: {Counter(counts).most_common(3)}")
        print(f"matches a serial count: {counts == expected}")
        print(f"took:           {took:.3f} s")
        if workflow.speedup:
            s = workflow.speedup
            serial, parallel = s.get("t_serial_ms"), s.get("t_parallel_ms")
            print(f"speedup report: T_serial {serial} ms, T_parallel {parallel} ms")
        if counts != expected:
            raise SystemExit("the counts differ")
    finally:
        stop.set()
        await worker
        await app.aclose()
        if server:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
