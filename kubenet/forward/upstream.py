"""The connection to one API server: a pool of HTTP/1.1 connections and upgrade dials.

One :class:`Upstream` per cluster keeps up to ``PoolSettings.limit`` TLS connections
open and reuses them, most recently used first; the TLS context is built once per
cluster (:mod:`kubenet.forward.credentials`), never per request. A pool that keeps too
few idle connections is what makes kubectl proxy fall off at high concurrency: under
load it keeps opening new TLS connections.

Each request goes out on an idle connection (or a new one), its response head is
awaited (``--request-timeout`` bounds only that wait), and its body is handed to the
caller chunk by chunk as it arrives, with reading paused while the caller is behind,
so memory stays bounded for any body size and a watch event is never held back. A
connection goes back to the pool only when both the request and the response were
complete; anything else closes it. A request that finds a reused connection already
closed by the server (an idle-timeout race) is sent again on a fresh one when it has
no body, as Go's transport does.

The proxy adds no header of its own here and never decompresses: bytes pass through.
Framing lives in :mod:`kubenet.forward.http1` (pure); this module is the I/O.

Upgrades (exec, attach, port-forward over SPDY or WebSocket) do not use the pool: each
dials its own connection, writes the request head and hands back the raw stream, as
upstream's ``UpgradeAwareHandler`` does.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from .credentials import (
    Auth,
    ClusterCredentials,
    KubeconfigOptions,
    load_credentials,
    load_kubeconfig,
)
from .http1 import (
    LAST_CHUNK,
    MAX_HEAD,
    FramingError,
    Head,
    ResponseReader,
    chunk,
    request_head,
)
from .paths import join_server_path
from .tunnel import ProxyError, ProxyURL, dial_target

#: A response body buffered beyond this pauses reading from the API server...
HIGH_WATER = 256 * 1024
#: ...until the caller has taken it down to this.
LOW_WATER = 64 * 1024


@dataclass(frozen=True)
class PoolSettings:
    """Connection pool and timeout settings for every upstream."""

    #: Most connections open to one API server at once.
    limit: int = 1024
    #: Seconds an idle pooled connection is kept.
    idle_timeout: float = 90.0
    #: TCP keep-alive period (``--keepalive``); 0 leaves the system default (off).
    tcp_keepalive: float = 0.0
    #: Seconds to wait for the response head (``--request-timeout``); 0 waits forever.
    #: A watch's body is never cut off by it.
    request_timeout: float = 0.0
    #: Seconds to establish a connection (TCP and TLS), as Go's dialer.
    connect_timeout: float = 30.0


class UpstreamError(Exception):
    """The API server could not be reached or answered nonsense (message is safe)."""


def _set_keepalive(sock: socket.socket, seconds: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)


def _os_reason(exc: OSError) -> str:
    # asyncio puts its own words in strerror ("Connect call failed ..."); Go prints the
    # system's message for the errno.
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return (exc.strerror or type(exc).__name__).lower()


def describe_error(exc: BaseException, hostport: str) -> str:
    """A short, credential-free description of a failed upstream exchange.

    Shaped like Go's errors where there is an equivalent, since kubectl proxy answers
    500 with its error text.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: failed to verify certificate: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"remote error: tls: {(exc.reason or 'handshake failure').lower()}"
    if isinstance(exc, TimeoutError):
        return "net/http: timeout awaiting response headers"
    if isinstance(exc, FramingError | ProxyError):
        return str(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return f"read tcp {hostport}: connection reset by peer"
    if isinstance(exc, OSError):
        return f"dial tcp {hostport}: connect: {_os_reason(exc)}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


class _Stale(Exception):
    """A reused connection was closed before any byte of the answer arrived."""


class UpstreamResponse:
    """One answer from the API server: its head now, its body as it arrives.

    Iterate it for the body (``async for data in response``) or :meth:`read` it whole;
    then :meth:`release` it, which returns the connection to the pool if the exchange
    completed and closes it otherwise.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_ended",
        "_error",
        "_head_ready",
        "_released",
        "_waiter",
        "complete",
        "head",
        "reader",
        "reason",
        "request_sent",
        "status",
    )

    def __init__(self, conn: _Connection, method: str) -> None:
        self._conn = conn
        self.reader = ResponseReader(method)
        self.head: Head | None = None
        #: The head's parts, once it arrived.
        self.status = 0
        self.reason = ""
        self._head_ready: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.complete = False
        self.request_sent = False
        self._ended = False
        self._released = False

    # -- the head ---------------------------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The answer's header fields (parsed on demand)."""
        return self.head.headers if self.head is not None else []

    @property
    def content_length(self) -> int | None:
        """The body length when Content-Length frames it (None: chunked or until close)."""
        assert self.head is not None
        return None if self.head.chunked else self.head.content_length

    # -- fed by the connection --------------------------------------------------------

    def _on_head(self, head: Head) -> None:
        self.head = head
        self.status, self.reason = head.status, head.reason
        if not self._head_ready.done():
            self._head_ready.set_result(head)

    def _on_data(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _on_end(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self._head_ready.done():
            self._head_ready.set_exception(exc)
            # Retrieved by whoever awaits the head; never "unretrieved" if nobody does.
            self._head_ready.exception()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller -----------------------------------------------------------

    async def wait_head(self) -> Head:
        return await self._head_ready

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._buffered <= LOW_WATER:
                    self._conn.resume_reading()
                yield data
                continue
            if self._ended or self.complete:
                return
            if self._error is not None:
                raise UpstreamError(describe_error(self._error, self._conn.hostport))
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        """The whole body (only for bodies known to be small)."""
        if self.complete and len(self._chunks) == 1:
            data = self._chunks.popleft()  # usually all there already: no waiting
            self._buffered = 0
            return data
        parts = [data async for data in self]
        return b"".join(parts)

    def end(self) -> None:
        """Stop the body here, cleanly for the reader (graceful shutdown of a watch)."""
        self._ended = True
        self._conn.close()
        self._wake()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._conn.finish(self)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the API server, serving one exchange at a time."""

    __slots__ = (
        "_drained",
        "_reading_paused",
        "_writing_paused",
        "closed",
        "exchange",
        "hostport",
        "idle_since",
        "pool",
        "transport",
        "uses",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.hostport = pool.hostport
        self.transport: asyncio.Transport | None = None
        self.exchange: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.complete:
            self.close()  # nobody asked: the connection is out of step, drop it
            return
        reader = exchange.reader
        had_head = reader.head is not None
        try:
            pieces = reader.feed(data)
        except FramingError as exc:
            exchange._fail(exc)
            self.close()
            return
        if not had_head and reader.head is not None:
            exchange._on_head(reader.head)
        for piece in pieces:
            exchange._on_data(piece)
        if reader.done:
            exchange._on_end()
            if reader.tail:
                self.close()  # bytes after the answer: out of step

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        exchange = self.exchange
        if exchange is not None and not exchange.complete:
            try:
                exchange.reader.feed_eof()
            except FramingError as error:
                if self.uses > 1 and not exchange.reader.started:
                    exchange._fail(_Stale())
                else:
                    exchange._fail(exc or error)
            else:
                exchange._on_end()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(exc or ConnectionResetError())
            self._drained.exception()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- used by the pool and the exchange -----------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    @property
    def writable(self) -> bool:
        """Whether a write now goes straight out (open, and not flow-controlled)."""
        return not self.closed and not self._writing_paused and self.transport is not None

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        if self._writing_paused:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def start(self, method: str) -> UpstreamResponse:
        self.uses += 1
        self.exchange = UpstreamResponse(self, method)
        return self.exchange

    def finish(self, exchange: UpstreamResponse) -> None:
        if self.exchange is not exchange:
            return
        reusable = (
            exchange.complete
            and exchange.request_sent
            and not exchange._ended
            and exchange.head is not None
            and not exchange.head.close
            and exchange.head.status != 101
        )
        self.exchange = None
        if reusable and not self.closed:
            self.resume_reading()
            self.pool._release(self)
        else:
            self.close()
            if not exchange.complete or exchange._ended:
                # A watch the client left, an answer cut short: the next request
                # should not pay for a TLS handshake because of it.
                self.pool.keep_one_warm()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            self.pool._forget(self)


class _Pool:
    """Connections to one address with one TLS context."""

    def __init__(
        self,
        host: str,
        port: int,
        hostport: str,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
        settings: PoolSettings,
        proxy: ProxyURL | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostport = hostport
        self.context = context
        self.server_hostname = server_hostname
        self.settings = settings
        self.proxy = proxy
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self._warming: asyncio.Future[None] | None = None
        self._closed = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def keep_one_warm(self) -> None:
        """Open a spare connection in the background if none is idle."""
        if self.idle or self._warming or self._closed or len(self.open) >= self.settings.limit:
            return
        self._warming = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        try:
            conn = await self._connect()
        except (OSError, TimeoutError):
            return  # the next request will try again, and report the error
        finally:
            self._warming = None
        if self._closed:
            conn.close()
        else:
            self._release(conn)

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection (warmest, least likely stale)."""
        if not self.idle:
            return None
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.settings.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    async def acquire(self) -> _Connection:
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if len(self.open) < self.settings.limit:
                return await self._connect()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        placeholder = _Connection(self)
        self.open.add(placeholder)  # counts against the limit while connecting
        server_hostname = (self.server_hostname or self.host) if self.context else None
        timeout = self.settings.connect_timeout
        try:
            where = await dial_target(self.proxy, self.host, self.port, timeout)
            connecting = loop.create_connection(
                lambda: _Connection(self),
                **where,
                ssl=self.context,
                server_hostname=server_hostname,
            )
            _, conn = await asyncio.wait_for(connecting, timeout)
        finally:
            self.open.discard(placeholder)
            self._wake_one()
        self.open.add(conn)
        if self.settings.tcp_keepalive > 0 and conn.transport is not None:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                _set_keepalive(sock, max(1, int(self.settings.tcp_keepalive)))
        return conn

    def _release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake_one()

    def _forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self._closed = True
        if self._warming is not None:
            self._warming.cancel()
        for conn in list(self.open) + self.idle:
            conn.close()
        self.idle.clear()


@dataclass
class UpgradedStream:
    """A dialled upgrade: the API server's response head and the raw stream after it."""

    status: int
    head: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    auth: Auth

    def close(self) -> None:
        self.writer.close()


class Upstream:
    """One API server: where it is, how to authenticate, and a pool of connections."""

    def __init__(
        self,
        credentials: ClusterCredentials,
        pool: PoolSettings | None = None,
        append_server_path: bool = False,
        user_agent: str = "api-proxy",
    ) -> None:
        self.credentials = credentials
        self.pool = pool or PoolSettings()
        self.user_agent = user_agent
        parts = urlsplit(credentials.server)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.hostport = parts.netloc.rsplit("@", 1)[-1]
        self.origin = f"{parts.scheme}://{self.hostport}"
        self.server_path = credentials.server_path if append_server_path else ""
        # One pool per TLS context: an exec plugin that hands out client certificates
        # changes the context, and connections made with the old one must not be mixed in.
        self._pools: dict[int, _Pool] = {}

    @property
    def name(self) -> str:
        return self.credentials.name

    def _pool_for(self, context: ssl.SSLContext | None) -> _Pool:
        if self.scheme != "https":
            context = None
        key = id(context)
        pool = self._pools.get(key)
        if pool is None or pool.context is not context:
            for stale in list(self._pools.values()):
                if stale.context is not self.credentials.ssl and stale.context is not context:
                    stale.close()
                    del self._pools[id(stale.context)]
            pool = _Pool(
                self.host,
                self.port,
                self.hostport,
                context,
                self.credentials.server_hostname,
                self.pool,
                self.credentials.proxy,
            )
            self._pools[key] = pool
        return pool

    def open_connections(self) -> int:
        """How many connections to the API server are open now (for tests and metrics)."""
        return sum(len(p.open) for p in self._pools.values())

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def target(self, path: str, raw_query: str = "") -> str:
        """The request-target (origin form) for an already percent-encoded path."""
        target = join_server_path(self.server_path, path)
        return f"{target}?{raw_query}" if raw_query else target

    async def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        auth: Auth,
        body: AsyncIterable[bytes] | None = None,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request and wait for the response head.

        ``headers`` are sent as given (plus Host and, for a body of unknown length,
        chunked framing). The caller reads the body and releases the response.
        Raises :class:`UpstreamError` with a Go-style message.
        """
        pool = self._pool_for(auth.ssl if auth.ssl is not None else self.credentials.ssl)
        out = list(headers)
        if body is not None and content_length is None:
            out.append(("Transfer-Encoding", "chunked"))
        head = request_head(method, target, self.hostport, out)
        for attempt in range(2):
            # An idle connection is the rule under load: take it without a coroutine.
            conn = pool.take_idle()
            if conn is None:
                try:
                    conn = await pool.acquire()
                except (OSError, TimeoutError) as exc:
                    raise UpstreamError(describe_error(exc, self.hostport)) from None
            exchange = conn.start(method)
            writer: asyncio.Task[None] | None = None
            try:
                if body is None:
                    transport = conn.transport
                    if conn.writable and transport is not None:
                        transport.write(head)
                    else:
                        await conn.write(head)
                    exchange.request_sent = True
                else:
                    # The body goes out while the answer is awaited: the API server may
                    # answer (and refuse) before it has read it all.
                    writer = asyncio.ensure_future(
                        self._write_body(conn, exchange, head, body, content_length is None)
                    )
                timeout = self.pool.request_timeout
                if timeout > 0:
                    await asyncio.wait_for(exchange.wait_head(), timeout)
                else:
                    await exchange._head_ready
                return exchange
            except _Stale:
                exchange.release()
                if body is None and attempt == 0:
                    continue
                raise UpstreamError("EOF") from None
            except (OSError, TimeoutError, FramingError, UpstreamError) as exc:
                if writer is not None:
                    writer.cancel()
                exchange.release()
                conn.close()
                message = str(exc) if isinstance(exc, UpstreamError) else None
                raise UpstreamError(message or describe_error(exc, self.hostport)) from None
            except BaseException:
                if writer is not None:
                    writer.cancel()
                exchange.release()
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _write_body(
        self,
        conn: _Connection,
        exchange: UpstreamResponse,
        head: bytes,
        body: AsyncIterable[bytes],
        chunked: bool,
    ) -> None:
        try:
            await conn.write(head)
            async for data in body:
                if data:
                    await conn.write(chunk(data) if chunked else data)
            if chunked:
                await conn.write(LAST_CHUNK)
            exchange.request_sent = True
        except BaseException:
            # The client's upload broke off, or the exchange was abandoned: the
            # connection is out of step either way. (Runs as its own task, so there is
            # nobody to raise to.)
            conn.close()

    async def dial_upgrade(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        auth: Auth,
    ) -> UpgradedStream:
        """Open a fresh connection, send an upgrade request, read the response head."""
        context = auth.ssl if auth.ssl is not None else self.credentials.ssl
        https = self.scheme == "https"
        tls = context if https else None
        server_hostname = (self.credentials.server_hostname or self.host) if https else None
        timeout = self.pool.connect_timeout
        try:
            where = await dial_target(self.credentials.proxy, self.host, self.port, timeout)
            opening = asyncio.open_connection(
                **where, limit=MAX_HEAD, ssl=tls, server_hostname=server_hostname
            )
            reader, writer = await asyncio.wait_for(opening, timeout)
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(describe_error(exc, self.hostport)) from None
        sock = writer.get_extra_info("socket")
        if sock is not None and self.pool.tcp_keepalive > 0:
            _set_keepalive(sock, max(1, int(self.pool.tcp_keepalive)))
        writer.write(request_head(method, target, self.hostport, headers))
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"),
                self.pool.request_timeout or None,
            )
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            writer.close()
            message = describe_error(exc, self.hostport) if isinstance(exc, OSError) else "EOF"
            raise UpstreamError(message) from None
        except TimeoutError:
            writer.close()
            raise UpstreamError("net/http: timeout awaiting response headers") from None
        status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
        try:
            status = int(status_line[1])
        except (IndexError, ValueError):
            writer.close()
            raise UpstreamError("malformed HTTP response") from None
        return UpgradedStream(status, head, reader, writer, auth)


def upstreams_for(
    options: KubeconfigOptions,
    contexts: Sequence[str] = (),
    pool: PoolSettings | None = None,
    append_server_path: bool = False,
    user_agent: str = "api-proxy",
) -> list[Upstream]:
    """One upstream per context (or one for the kubeconfig's current context).

    Raises :class:`~kubenet.forward.credentials.CredentialsError` with a message fit
    for the user when a context cannot be used.
    """
    config = load_kubeconfig(options)
    names: Sequence[str | None] = list(contexts) or [None]
    seen: set[str] = set()
    upstreams = []
    for name in names:
        if name is not None and name in seen:
            continue
        credentials = load_credentials(options, name, config)
        seen.add(credentials.name)
        upstreams.append(Upstream(credentials, pool, append_server_path, user_agent))
    return upstreams
