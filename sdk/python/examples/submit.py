"""The README's quickstart client: submit, await typed results, gather a batch.

python submit.py
"""

from __future__ import annotations

import asyncio

from myapp import Page, app, checksum, summarize

from taskwarden import TaskFailed


async def main() -> None:
    ref = await summarize.submit(url="https://example.com/", text="hello typed tasks")
    page: Page = await ref.result(timeout=30)
    print(page)

    refs = await checksum.map([[1, 2, 3], [4, 5, 6], list(range(1000))])  # one batch submit
    print(await app.gather(refs, policy="collect"))

    try:
        await (await summarize.submit(url="nope", text="")).result(timeout=30)
    except TaskFailed as e:
        print(f"failed after {e.attempts} attempt(s): {e.error and e.error.splitlines()[0]}")
    await app.aclose()


asyncio.run(main())
