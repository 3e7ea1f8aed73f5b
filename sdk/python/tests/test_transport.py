"""The async transport against small servers of its own: chunked answers, answers that end
with the connection, a connection closed while idle, and the errors that tell a request that
did not run from one that broke on the way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from taskwarden.transport import BrokenResponse, ConnectFailed, Pool

Respond = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(respond: Respond) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def test_chunked_and_close_delimited_answers() -> None:
    requests: list[bytes] = []

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b'4\r\n{"a"\r\n3\r\n: 1\r\n1;ext=1\r\n}\r\n0\r\n\r\n')
        requests.append(await read_request(reader))  # the same connection, kept alive
        writer.write(b"HTTP/1.1 201 Created\r\nconnection: close\r\n\r\n[1, 2]")
        await writer.drain()
        writer.close()

    server, url = await serve(respond)
    async with server:
        pool = Pool(url, {"authorization": "Bearer t"}, None)
        status, body = await pool.request("POST", "/v1/x", {"q": "a b"}, b"{}", 5)
        assert (status, body) == (200, b'{"a": 1}')
        status, body = await pool.request("GET", "/v1/y", None, None, 5)
        assert (status, body) == (201, b"[1, 2]")
        first, second = (r.lower() for r in requests)
        assert first.startswith(b"post /v1/x?q=a+b http/1.1\r\n"), first
        assert b"authorization: bearer t\r\n" in first
        assert b"content-length: 2\r\n" in first and first.endswith(b"\r\n\r\n{}")
        assert second.startswith(b"get /v1/y http/1.1\r\n")
        await pool.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    connections = 0

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes the kept-alive connection at once, as an idle timeout would

    server, url = await serve(respond)
    async with server:
        pool = Pool(url, {}, None)
        for _ in range(3):
            assert await pool.request("GET", "/", None, None, 5) == (200, b"ok")
            await asyncio.sleep(0.05)
        assert connections == 3


async def test_errors() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    server, url = await serve(hang_up)
    async with server:
        with pytest.raises(BrokenResponse):
            await Pool(url, {}, None).request("GET", "/", None, None, 5)
    with pytest.raises(ConnectFailed):
        await Pool(url, {}, None).request("GET", "/", None, None, 5)  # nobody listens now

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await serve(silent)
    async with server:
        with pytest.raises(TimeoutError):
            await Pool(url, {}, None).request("GET", "/", None, None, 0.2)
