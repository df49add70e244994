"""Helpers for the api-proxy tests: small upstreams, a proxy runner, raw HTTP.

The upstreams here are real HTTP servers on loopback (aiohttp, or raw asyncio for
upgrades) that record what reached them; the proxy under test always runs for real,
listening on a free port. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from kubenet.forward import (
    ApiProxy,
    Listener,
    PoolSettings,
    ProxyConfig,
    Upstream,
    new_event_loop,
    run_loop,
    serve,
)
from kubenet.forward.credentials import AuthSource, ClusterCredentials, StaticSource, TLSFiles

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one scenario on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    # The loop api-proxy itself runs on (uvloop here), so the suite tests what ships.
    return run_loop(bounded())


# --- TLS material -------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return ctx


# --- a recording upstream -------------------------------------------------------------


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes
    peer_cert: dict[str, Any] | None

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Backend:
    """An aiohttp server standing in for an API server; records every request."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    routes: dict[str, Handler] = field(default_factory=dict)
    runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.path not in self.routes else b""
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                list(request.headers.items()),
                body,
                sslobj.getpeercert() if sslobj is not None else None,
            )
        )
        route = self.routes.get(request.path)
        if route is not None:
            return await route(request)
        return web.json_response(
            {"method": request.method, "path": request.raw_path, "bytes": len(body)}
        )

    @property
    def last(self) -> Seen:
        return self.seen[-1]


@contextlib.asynccontextmanager
async def backend(
    tls: ssl.SSLContext | None = None, routes: Mapping[str, Handler] | None = None
) -> AsyncIterator[Backend]:
    b = Backend(routes=dict(routes or {}))
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", b._handle)
    b.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await b.runner.setup()
    site = web.TCPSite(b.runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = b.runner.addresses[0][1]
    b.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield b
    finally:
        await b.runner.cleanup()


def credentials_for(
    url: str,
    *,
    name: str = "test",
    source: AuthSource | None = None,
    tls: TLSFiles | None = None,
    impersonation: tuple[tuple[str, str], ...] = (),
    server_path: str = "",
) -> ClusterCredentials:
    return ClusterCredentials(
        name=name,
        server=url,
        server_path=server_path,
        tls=tls,
        server_hostname=None,
        impersonation=impersonation,
        source=source or StaticSource("Bearer upstream-secret"),
    )


# --- running the proxy ------------------------------------------------------------------


@dataclass
class Running:
    proxy: ApiProxy
    address: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@contextlib.asynccontextmanager
async def running_proxy(
    upstreams: Sequence[Upstream] | Upstream,
    config: ProxyConfig | None = None,
    listener: Listener | None = None,
    grace: float = 2.0,
    metrics_address: str | None = None,
    **kwargs: Any,
) -> AsyncIterator[Running]:
    """An :class:`ApiProxy` serving on a free loopback port for a ``with`` block."""
    ups = [upstreams] if isinstance(upstreams, Upstream) else list(upstreams)
    proxy = ApiProxy(config or ProxyConfig(), ups, **kwargs)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(
        serve(
            proxy,
            listener or Listener(port=0),
            grace=grace,
            metrics_address=metrics_address,
            ready=ready.set_result,
            stop=stop,
            handle_signals=False,
        )
    )
    waiting: list[asyncio.Future[Any]] = [ready, task]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    running = Running(proxy, ready.result(), stop, task)
    try:
        yield running
    finally:
        stop.set()
        await task


def upstream(url: str, **kwargs: Any) -> Upstream:
    pool = kwargs.pop("pool", PoolSettings())
    append = kwargs.pop("append_server_path", False)
    return Upstream(credentials_for(url, **kwargs), pool, append)


class ThreadedProxy:
    """A proxy on its own loop in a thread, for synchronous clients (kubectl, kubernetes)."""

    def __init__(self, make: Callable[[], ApiProxy], listener: Listener | None = None) -> None:
        self._make = make
        self._listener = listener or Listener(port=0)
        self._loop = new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.address = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()

            def ready(address: str) -> None:
                self.address = address
                self._ready.set()

            await serve(
                self._make(),
                self._listener,
                grace=2.0,
                ready=ready,
                stop=self._stop,
                handle_signals=False,
            )

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def __enter__(self) -> ThreadedProxy:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://{self.address}"


# --- raw HTTP ---------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    address: str,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    host: str | None = "localhost",
) -> RawResponse:
    """Send one request exactly as written (no client-side path cleaning) and read it all."""
    if address.startswith("/"):
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        hostname, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(hostname.strip("[]"), int(port))
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    lines.append("Connection: close")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [tuple(h.split(": ", 1)) for h in header_lines if ": " in h]
    headers_out = [(n, v) for n, v in parsed]
    if any(n.lower() == "transfer-encoding" and "chunked" in v for n, v in headers_out):
        rest = _dechunk(rest)
    return RawResponse(int(status_line.split(" ")[1]), headers_out, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
