"""Listening and stopping: TCP or a unix socket, optional TLS, metrics, signals.

Listening follows kubectl proxy: ``--port 0`` picks a free port, the bound address is
reported as Go prints it (``127.0.0.1:8001``, ``[::1]:8001``, or the socket path), and
a unix socket replaces a stale socket at its path (never another kind of file) and is
created readable by its owner only.

Stopping (SIGTERM, SIGINT, or the ``stop`` event): the listeners close at once, open
watches are ended cleanly (the client sees a complete response and can re-watch),
other requests get up to ``grace`` seconds to finish, then whatever is left is cut
off and the coroutine returns normally (the CLI exits 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import stat
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .front import FrontServer
from .server import ApiProxy

T = TypeVar("T")

#: How long the access log may hold lines before writing them out.
ACCESS_LOG_FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Listener:
    """Where and how to listen (``--address``/``--port``, ``--unix-socket``, TLS)."""

    address: str = "127.0.0.1"
    port: int = 8001
    unix_socket: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    backlog: int = 4096


def format_address(sock: socket.socket) -> str:
    """The bound address as Go's ``net.Listener.Addr().String()`` prints it."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return str(name)
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_tcp(address: str, port: int, backlog: int = 4096) -> socket.socket:
    infos = socket.getaddrinfo(
        address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_unix(path: str, backlog: int = 4096) -> socket.socket:
    """Bind a private unix socket, removing a stale socket (only a socket) first."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # umask is process-wide; this runs before any worker thread exists.
    old = os.umask(0o077)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind(listener: Listener) -> socket.socket:
    if listener.unix_socket:
        return bind_unix(listener.unix_socket, listener.backlog)
    return bind_tcp(listener.address, listener.port, listener.backlog)


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def metrics_application(proxy: ApiProxy) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(proxy.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all addresses)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)


async def serve(
    proxy: ApiProxy,
    listener: Listener,
    *,
    grace: float = 30.0,
    metrics_address: str | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
    handle_signals: bool = True,
    idle_timeout: float = 300.0,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then shut down gracefully.

    ``ready`` gets the bound address once the proxy accepts connections. ``sock`` is an
    already bound listening socket to use instead of binding ``listener``.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    listening = sock or bind(listener)
    tls = (
        server_ssl_context(listener.tls_cert_file, listener.tls_key_file)
        if listener.tls_cert_file and listener.tls_key_file
        else None
    )
    front = FrontServer(proxy.handle, idle_timeout=idle_timeout)
    server: asyncio.Server | None = None
    metrics_runner: web.AppRunner | None = None
    installed: list[signal.Signals] = []
    flusher: asyncio.Task[None] | None = None
    sweeper: asyncio.Task[None] | None = None
    try:
        server = await loop.create_server(
            front.protocol, sock=listening, ssl=tls, backlog=listener.backlog
        )
        if metrics_address:
            host, port = parse_hostport(metrics_address)
            metrics_runner = web.AppRunner(metrics_application(proxy), access_log=None)
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, host or None, port).start()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
                installed.append(signum)
        if proxy.access_log is not None:
            flusher = asyncio.ensure_future(_flush_periodically(proxy))
        sweeper = asyncio.ensure_future(front.sweep_idle())
        if ready is not None:
            ready(format_address(listening))
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        # Stop accepting, end the watches, give the rest up to `grace` to finish, cut
        # off what is left, then close the upstream pools.
        if server is not None:
            server.close()
        else:
            listening.close()
        front.start_closing()
        await proxy.end_streams()
        await front.wait_closed(grace)
        if server is not None:
            await server.wait_closed()
        await proxy.close()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        for task in (flusher, sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if proxy.access_log is not None:
            proxy.access_log.close()
        if listener.unix_socket:
            # As Go's unix listener does on close.
            with contextlib.suppress(OSError):
                os.unlink(listener.unix_socket)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop api-proxy runs on: uvloop's where installed, else asyncio's.

    The proxy's per-request work is mostly event-loop bookkeeping and socket calls; on
    libuv's loop the same requests cost 20-35% less CPU, which lets one
    process keep ahead of kubectl proxy's threads. uvloop is a dependency except on
    Windows, where asyncio's loop serves.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def _flush_periodically(proxy: ApiProxy) -> None:
    assert proxy.access_log is not None
    while True:
        await asyncio.sleep(ACCESS_LOG_FLUSH_SECONDS)
        proxy.access_log.flush()
