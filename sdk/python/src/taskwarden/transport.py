"""A lean HTTP/1.1 client on asyncio streams, for ``AsyncClient``.

Why not ``httpx.AsyncClient``: on this project's 2-core machine it costs about 0.7-1.2 ms of CPU
per request (its pool, its locks, its stream wrappers), where the request itself takes 0.2 ms;
a worker reporting and a client submitting one task at a time spend most of their time there.
This speaks just what the Taskwarden API needs: keep-alive connections, JSON bodies with a
``content-length``, responses with a ``content-length`` or chunked, TLS through an
``ssl.SSLContext``. ``Client`` (blocking) still uses ``httpx.Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from urllib.parse import urlencode, urlsplit

IDLE_REUSE = 45.0
"""Seconds an idle connection is reused for; the server closes idle ones after 60 s by default,
and reusing one it is closing would fail the request."""
MAX_IDLE = 64
MAX_HEADER_BYTES = 64 << 10


class ConnectFailed(OSError):
    """The connection could not be made: the request surely did not run."""


class BrokenResponse(OSError):
    """The connection broke, or the answer was not HTTP/1.1 we understand."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.idle_since < IDLE_REUSE
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Pool:
    """Keep-alive connections to one server."""

    def __init__(
        self, base_url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None
    ) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        host_header = parts.netloc
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.fixed_headers = f"host: {host_header}\r\n{fixed}".encode("latin-1")
        self.idle: deque[_Connection] = deque()

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
                limit=MAX_HEADER_BYTES,
            )
        except (OSError, ssl.SSLError) as e:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return _Connection(reader, writer)

    def _take(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

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
        target = self.prefix + path
        if params:
            target += "?" + urlencode(params)
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self.fixed_headers
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        request = head + b"\r\n" + (body or b"")
        conn = self._take() or await self._connect()
        try:
            status, content, keep = await asyncio.wait_for(self._exchange(conn, request), timeout)
        except asyncio.TimeoutError:
            # The builtin one (an OSError) also on Python 3.10, where asyncio's is another class.
            conn.close()
            raise TimeoutError(f"no answer to {method} {path} within {timeout:g} s") from None
        except BaseException:
            # Timed out, cancelled or broken: the connection is in an unknown state.
            conn.close()
            raise
        if keep and len(self.idle) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        return status, content

    async def _exchange(self, conn: _Connection, request: bytes) -> tuple[int, bytes, bool]:
        conn.writer.write(request)
        try:
            await conn.writer.drain()
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as e:
            raise BrokenResponse(f"the connection broke: {e!r}") from e
        lines = raw.decode("latin-1").split("\r\n")
        try:
            version, code, *_ = lines[0].split(" ", 2)
            status = int(code)
        except ValueError:
            raise BrokenResponse(f"not an HTTP answer: {lines[0]!r}") from None
        length = -1
        chunked = False
        keep = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                keep = "close" not in value.lower()
        try:
            if chunked:
                content = await self._chunks(conn.reader)
            elif length >= 0:
                content = await conn.reader.readexactly(length)
            elif status in (204, 304) or 100 <= status < 200:
                content = b""
            else:
                content = await conn.reader.read()
                keep = False
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as e:
            raise BrokenResponse(f"the connection broke: {e!r}") from e
        return status, content, keep

    @staticmethod
    async def _chunks(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
