"""The proxy's HTTP/1.1 server side: keep-alive, pipelining, bodies, errors, closing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from kubenet.forward.front import Exchange, FrontServer

from .support import run

Handler = Callable[[Exchange], Awaitable[None]]


async def echo(exchange: Exchange) -> None:
    """Answers with the method, target and the request body."""
    body = b""
    if exchange.has_body:
        async for data in exchange.body():
            body += data
    text = f"{exchange.method} {exchange.target} ".encode() + body
    await exchange.send(200, [("Content-Type", "text/plain")], text)


@contextlib.asynccontextmanager
async def front(
    handler: Handler = echo, idle_timeout: float = 300.0
) -> AsyncIterator[tuple[FrontServer, int]]:
    server = FrontServer(handler, idle_timeout=idle_timeout)
    listening = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
    sweeper = asyncio.ensure_future(server.sweep_idle())
    try:
        yield server, listening.sockets[0].getsockname()[1]
    finally:
        sweeper.cancel()
        listening.close()
        server.start_closing()
        await server.wait_closed(1.0)


async def exchange_bytes(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes, read until the server closes (or ``wait`` runs out)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    with contextlib.suppress(TimeoutError):
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            out += chunk
    writer.close()
    return out


def test_keep_alive_and_pipelining() -> None:
    async def scenario() -> None:
        async with front() as (_, port):
            out = await exchange_bytes(
                port,
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            answers = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
            assert len(answers) == 3
            assert answers[0].endswith(b"GET /a ")
            assert answers[1].endswith(b"POST /b abc")
            assert answers[2].endswith(b"GET /c ") and b"Connection: close" in answers[2]
            assert all(b"\r\nDate: " in a for a in answers)

    run(scenario())


def test_chunked_request_body_and_expect_continue() -> None:
    async def scenario() -> None:
        async with front() as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b"PUT /x abcde"
            writer.close()

    run(scenario())


def test_http_1_0_and_streamed_answers() -> None:
    async def stream(exchange: Exchange) -> None:
        await exchange.start(200, [("Content-Type", "text/plain")])
        await exchange.write(b"one ")
        await exchange.write(b"two")
        await exchange.end()

    async def scenario() -> None:
        async with front(stream) as (_, port):
            out = await exchange_bytes(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait=0.5)
            assert b"Transfer-Encoding: chunked" in out
            assert out.endswith(b"4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n")
            # HTTP/1.0 has no chunks: the body ends when the connection does.
            out = await exchange_bytes(port, b"GET / HTTP/1.0\r\n\r\n")
            assert b"Transfer-Encoding" not in out and b"Connection: close" in out
            assert out.endswith(b"\r\n\r\none two")
            # HEAD: the head only.
            out = await exchange_bytes(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", wait=0.5)
            assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\n")

    run(scenario())


def test_malformed_requests_get_go_style_errors_and_a_close() -> None:
    async def scenario() -> None:
        async with front() as (_, port):
            out = await exchange_bytes(port, b"GET / HTTP/1.1\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert out.endswith(b"400 Bad Request: missing required Host header\n")
            out = await exchange_bytes(
                port,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 400 ")
            out = await exchange_bytes(port, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70000)
            assert out.startswith(b"HTTP/1.1 431 ")
            out = await exchange_bytes(port, b"GET / HTTP/3.0\r\nHost: x\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 505 ")

    run(scenario())


def test_unread_body_closes_the_connection() -> None:
    async def refuse(exchange: Exchange) -> None:
        await exchange.send(403, [], b"Forbidden\n")

    async def scenario() -> None:
        async with front(refuse) as (_, port):
            out = await exchange_bytes(
                port,
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial"
                b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            assert out.count(b"HTTP/1.1 403") == 1  # the rest is not read as a request
            assert b"Connection: close" in out

    run(scenario())


def test_client_leaving_cancels_the_handler() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(exchange: Exchange) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> None:
        async with front(slow) as (_, port):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(started.wait(), 2)
            writer.close()
            await asyncio.wait_for(cancelled.wait(), 2)

    run(scenario())


def test_idle_connections_are_closed() -> None:
    async def scenario() -> None:
        async with front(idle_timeout=0.2) as (server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"GET / ")
            # sweep_idle checks at most once a second.
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert not server.connections

    run(scenario())


def test_closing_lets_busy_connections_finish_and_drops_idle_ones() -> None:
    release = asyncio.Event()

    async def held(exchange: Exchange) -> None:
        if exchange.target == "/hold":
            await release.wait()
        await exchange.send(200, [], b"done")

    async def scenario() -> None:
        server = FrontServer(held)
        listening = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await idle_reader.readuntil(b"done")
        busy = asyncio.ensure_future(
            exchange_bytes(port, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n", wait=3)
        )
        await asyncio.sleep(0.1)
        listening.close()
        server.start_closing()
        assert await asyncio.wait_for(idle_reader.read(), 1) == b""
        release.set()
        await server.wait_closed(2.0)
        out = await busy
        assert out.endswith(b"done") and b"Connection: close" in out
        idle_writer.close()

    run(scenario())


def test_date_is_added_unless_the_answer_has_one() -> None:
    async def dated(exchange: Exchange) -> None:
        headers = [("Date", "Mon, 01 Jan 2024 00:00:00 GMT")] if exchange.target == "/own" else []
        await exchange.send(200, headers, b"x")

    async def scenario() -> None:
        async with front(dated) as (_, port):
            out = await exchange_bytes(
                port, b"GET /own HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert out.count(b"Date: ") == 1 and b"Date: Mon, 01 Jan 2024" in out
            out = await exchange_bytes(
                port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert out.count(b"Date: ") == 1

    run(scenario())
