"""The HTTP transport of ``AsyncClient``, on aiohttp.

Why aiohttp and not ``httpx.AsyncClient``: measured on this project's 2-core machine, one client
submitting one task at a time got about 480 requests/s through ``httpx.AsyncClient`` (most of
each request's time was its pool, locks and stream wrappers, not the server) and about 1,500/s
through aiohttp, whose HTTP parser is compiled. ``Client`` (blocking) still uses ``httpx.Client``.

A ``Pool`` is one server node's keep-alive connections; ``AsyncClient`` keeps one per node and
fails over between them. It tells a request that surely did not run (``ConnectFailed``: no
connection could be made) from one that broke on the way (``BrokenResponse``, ``TimeoutError``),
since only the first may be sent to another node without a second thought.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp

IDLE_REUSE = 45.0
"""Seconds an idle connection is reused for; the server closes idle ones after 60 s by default,
and reusing one it is closing would fail the request."""


class ConnectFailed(OSError):
    """The connection could not be made: the request surely did not run."""


class BrokenResponse(OSError):
    """The connection broke, or the answer was not HTTP we understand."""


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Calls use a handful of timeouts: one object each, not one a request."""
    return aiohttp.ClientTimeout(total=seconds)


class Pool:
    """Keep-alive connections to one server node.

    The aiohttp session is made on first use, inside the running event loop, and made again if
    the pool is used from another loop (a session belongs to the loop that made it)."""

    def __init__(
        self, base_url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None
    ) -> None:
        self.base = base_url.rstrip("/")
        self.headers = dict(headers)
        self.ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl, limit=0, keepalive_timeout=IDLE_REUSE, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                # The API sets no cookies: skip the cookie jar's work on every request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, object] | None,
        body: bytes | None,
        timeout: float,
    ) -> tuple[int, bytes]:
        """One request; (status, body). ``ConnectFailed`` if no connection could be made (the
        request did not run), ``BrokenResponse`` or ``TimeoutError`` if it broke on the way."""
        url = self.base + path
        if params:
            url += "?" + urlencode(params)
        headers = {"content-type": "application/json"} if body is not None else None
        session = self._current()
        try:
            async with session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=_timeout(timeout),
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientConnectorError as e:
            raise ConnectFailed(f"cannot connect to {self.base}: {e}") from e
        except asyncio.TimeoutError:
            # The builtin one (an OSError) also on Python 3.10, where asyncio's is another class.
            raise TimeoutError(f"no answer to {method} {path} within {timeout:g} s") from None
        except aiohttp.ClientError as e:
            raise BrokenResponse(f"the connection broke: {e!r}") from e

    async def stream_lines(
        self, path: str, params: dict[str, object] | None, headers: dict[str, str]
    ) -> AsyncIterator[bytes]:
        """The lines of a streamed answer (without their line ends), as they arrive.
        ``ConnectFailed`` if no connection could be made; ``BrokenResponse`` if it broke, or
        (with the status and body) if the answer was not a 200."""
        url = self.base + path
        if params:
            url += "?" + urlencode(params)
        session = self._current()
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)
            ) as response:
                if response.status != 200:
                    body = await response.read()
                    raise BrokenResponse(response.status, body)
                async for line in response.content:
                    yield line.rstrip(b"\r\n")
        except aiohttp.ClientConnectorError as e:
            raise ConnectFailed(f"cannot connect to {self.base}: {e}") from e
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise BrokenResponse(f"the stream broke: {e!r}") from e

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            session, self._session = self._session, None
            if self._loop is asyncio.get_running_loop():
                await session.close()
