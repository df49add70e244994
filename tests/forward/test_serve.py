"""Listening (TCP, unix socket, TLS), the metrics listener, and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kubenet.forward import Listener, ProxyConfig
from kubenet.forward.serve import bind_tcp, format_address, parse_hostport

from .support import Pki, backend, raw_request, run, running_proxy, upstream


def test_format_address_as_go_prints_it(tmp_path: Path) -> None:
    with bind_tcp("127.0.0.1", 0) as s4:
        assert format_address(s4) == f"127.0.0.1:{s4.getsockname()[1]}"
    if socket.has_ipv6:
        try:
            s6 = bind_tcp("::1", 0)
        except OSError:
            pytest.skip("no IPv6 loopback")
        with s6:
            assert format_address(s6) == f"[::1]:{s6.getsockname()[1]}"


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_hostport("[::1]:9090") == ("::1", 9090)
    assert parse_hostport(":9090") == ("", 9090)
    with pytest.raises(ValueError):
        parse_hostport("9090")


def test_unix_socket_replaces_a_stale_socket_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "proxy.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on

    async def scenario() -> None:
        async with (
            backend() as b,
            running_proxy(upstream(b.url), listener=Listener(unix_socket=str(path))) as p,
        ):
            assert p.address == str(path)
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode & 0o077 == 0, oct(mode)
            r = await raw_request(str(path), "GET", "/api/v1/pods")
            assert r.status == 200
            # Over a unix socket there is no client address to forward.
            assert b.last.header("X-Forwarded-For") is None
        assert not path.exists()

    run(scenario())


def test_unix_socket_never_removes_another_kind_of_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")

    async def scenario() -> None:
        with pytest.raises(OSError):
            async with running_proxy(
                upstream("http://127.0.0.1:1"), listener=Listener(unix_socket=str(path))
            ):
                pass

    run(scenario())
    assert path.read_text() == "precious"


def test_https_serving_and_separate_metrics_listener(pki: Pki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]

    async def scenario() -> None:
        listener = Listener(
            port=0, tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key)
        )
        client_tls = ssl.create_default_context(cafile=str(pki.ca))
        async with (
            backend() as b,
            running_proxy(
                upstream(b.url), listener=listener, metrics_address=f"127.0.0.1:{metrics_port}"
            ) as p,
            aiohttp.ClientSession() as client,
        ):
            async with client.get(f"https://{p.address}/api/v1/pods", ssl=client_tls) as resp:
                assert resp.status == 200
            async with client.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                text = await resp.text()
            assert 'apiproxy_requests_total{cluster="test",code="200",method="GET"} 1.0' in text
            assert "apiproxy_inflight_requests" in text
            # The proxy's own port still forwards /metrics to the API server.
            async with client.get(f"https://{p.address}/metrics", ssl=client_tls) as resp:
                assert (await resp.json())["path"] == "/metrics"

    run(scenario())


def test_graceful_shutdown_ends_watches_cleanly_and_lets_requests_finish() -> None:
    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED"}\n')
        await asyncio.sleep(60)
        return response

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(text="finished")

    async def scenario() -> None:
        routes = {"/api/v1/pods": watch, "/slow": slow}
        async with (
            backend(routes=routes) as b,
            aiohttp.ClientSession() as client,
            running_proxy(upstream(b.url), grace=5.0) as p,
        ):
            watch_resp = await client.get(f"{p.url}/api/v1/pods?watch=true")
            assert b'"ADDED"' in await watch_resp.content.readline()
            slow_task = asyncio.ensure_future(client.get(f"{p.url}/slow"))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            p.stop.set()
            # The watch ends with a complete response: no error, just the end.
            assert await asyncio.wait_for(watch_resp.content.read(), 2) == b""
            assert time.monotonic() - started < 1.0
            slow_resp = await slow_task
            assert (slow_resp.status, await slow_resp.text()) == (200, "finished")
            await p.task
            # Closed for new connections.
            host, port = p.address.rsplit(":", 1)
            with pytest.raises(OSError):
                await asyncio.open_connection(host, int(port))

    run(scenario())


def test_grace_period_bounds_shutdown() -> None:
    async def stuck(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="never")

    async def scenario() -> None:
        async with (
            backend(routes={"/stuck": stuck}) as b,
            aiohttp.ClientSession() as client,
            running_proxy(upstream(b.url), ProxyConfig(), grace=0.3) as p,
        ):
            pending = asyncio.ensure_future(client.get(f"{p.url}/stuck"))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            p.stop.set()
            await p.task
            assert time.monotonic() - started < 2.0
            with pytest.raises(aiohttp.ClientError):
                await pending

    run(scenario())
