"""The upstream pool: reuse, limits, retries on stale connections, framing, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from kubenet.forward import PoolSettings, Upstream, UpstreamError
from kubenet.forward.credentials import Auth

from .support import backend, run, upstream

NO_AUTH = Auth()


async def get(up: Upstream, target: str = "/api") -> tuple[int, bytes]:
    answer = await up.send("GET", target, [], NO_AUTH)
    try:
        return answer.status, await answer.read()
    finally:
        answer.release()


def test_connections_are_reused() -> None:
    async def scenario() -> None:
        async with backend() as b:
            up = upstream(b.url)
            for _ in range(5):
                assert (await get(up))[0] == 200
            assert up.open_connections() == 1
            # Concurrent requests open more, then they are all kept for reuse.
            await asyncio.gather(*(get(up) for _ in range(8)))
            opened = up.open_connections()
            assert 1 <= opened <= 8
            await asyncio.gather(*(get(up) for _ in range(8)))
            assert up.open_connections() == opened
            peers = {s.header("X-Forwarded-For") for s in b.seen}
            assert peers == {None}  # the pool adds no header of its own
            await up.close()
            assert up.open_connections() == 0

    run(scenario())


def test_the_limit_queues_requests() -> None:
    active = {"now": 0, "most": 0}

    async def slow(_: web.Request) -> web.StreamResponse:
        active["now"] += 1
        active["most"] = max(active["most"], active["now"])
        await asyncio.sleep(0.05)
        active["now"] -= 1
        return web.Response(text="ok")

    async def scenario() -> None:
        async with backend(routes={"/slow": slow}) as b:
            up = upstream(b.url, pool=PoolSettings(limit=2))
            results = await asyncio.gather(*(get(up, "/slow") for _ in range(6)))
            assert [r[1] for r in results] == [b"ok"] * 6
            assert active["most"] == 2
            assert up.open_connections() <= 2
            await up.close()

    run(scenario())


@contextlib.asynccontextmanager
async def raw_server(
    answers: list[bytes], close_after: bool
) -> AsyncIterator[tuple[str, list[int]]]:
    """Answers each request head with the next answer; closes after each if told to."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while answers:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(answers.pop(0))
            await writer.drain()
            if close_after:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_stale_connection_is_retried_once() -> None:
    async def scenario() -> None:
        # The server silently closes after each answer (as an idle timeout would).
        async with raw_server([OK, OK, OK], close_after=True) as (url, connections):
            up = upstream(url)
            assert await get(up) == (200, b"ok")
            await asyncio.sleep(0.05)  # the close reaches us, or not: both must work
            assert await get(up) == (200, b"ok")
            assert len(connections) == 2
            await up.close()

    run(scenario())


def test_connection_close_is_honoured() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def scenario() -> None:
        async with raw_server([close, close], close_after=False) as (url, connections):
            up = upstream(url)
            assert await get(up) == (200, b"ok")
            assert await get(up) == (200, b"ok")
            assert len(connections) == 2
            await up.close()

    run(scenario())


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
         b"ok!!!"),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"until close"),
    ],
)  # fmt: skip
def test_bodies_in_every_framing(answer: bytes, body: bytes) -> None:
    async def scenario() -> None:
        async with raw_server([answer], close_after=True) as (url, _):
            up = upstream(url)
            assert await get(up) == (200, body)
            await up.close()

    run(scenario())


def test_errors_are_upstream_errors() -> None:
    async def scenario() -> None:
        async with raw_server([b"NOT HTTP AT ALL\r\n\r\n"], close_after=True) as (url, _):
            with pytest.raises(UpstreamError, match="malformed HTTP response"):
                await get(upstream(url))
        async with raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], True) as (
            url,
            _,
        ):
            up = upstream(url)
            answer = await up.send("GET", "/", [], NO_AUTH)
            with pytest.raises(UpstreamError, match="unexpected EOF"):
                await answer.read()
            answer.release()
            await up.close()

    run(scenario())


def test_request_bodies_of_unknown_length_are_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"def"):
            yield piece

    async def scenario() -> None:
        async with backend() as b:
            up = upstream(b.url)
            answer = await up.send("POST", "/x", [], NO_AUTH, parts(), None)
            assert answer.status == 200
            await answer.read()
            answer.release()
            assert b.last.header("Transfer-Encoding") == "chunked"
            assert b.last.body == b"abcdef"
            # A known length goes as Content-Length, body streamed as is.
            answer = await up.send("POST", "/x", [("Content-Length", "6")], NO_AUTH, parts(), 6)
            await answer.read()
            answer.release()
            assert b.last.header("Content-Length") == "6" and b.last.body == b"abcdef"
            await up.close()

    run(scenario())


def test_request_timeout_bounds_the_head_only() -> None:
    async def late(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(text="late")

    async def scenario() -> None:
        async with backend(routes={"/late": late}) as b:
            up = upstream(b.url, pool=PoolSettings(request_timeout=0.1))
            with pytest.raises(UpstreamError, match="timeout awaiting response headers"):
                await get(up, "/late")
            await up.close()

    run(scenario())


def test_unreachable_upstream() -> None:
    async def scenario() -> None:
        up = upstream("http://127.0.0.1:1")
        with pytest.raises(
            UpstreamError, match=r"dial tcp 127\.0\.0\.1:1: connect: connection refused"
        ):
            await get(up)

    run(scenario())


def test_an_abandoned_stream_leaves_a_warm_connection() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        await asyncio.sleep(30)
        return response

    async def scenario() -> None:
        async with backend(routes={"/watch": endless}) as b:
            up = upstream(b.url)
            answer = await up.send("GET", "/watch", [], NO_AUTH)
            async for _ in answer:
                break
            answer.release()  # the client left mid-stream: that connection is closed
            for _ in range(50):
                await asyncio.sleep(0.01)
                if up._pools and next(iter(up._pools.values())).idle:
                    break
            assert up.open_connections() == 1  # a fresh one, opened in the background
            assert (await get(up))[0] == 200
            assert up.open_connections() == 1  # and used by the next request
            await up.close()

    run(scenario())
