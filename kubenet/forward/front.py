"""The proxy's own HTTP/1.1 server: connections from clients, one exchange at a time.

Why not aiohttp's web server: measured on the benchmark (bench/apiproxy.py), its
request and response objects cost more per request than everything else the proxy
does, and left api-proxy at about 60% of kubectl proxy's requests per second at low
concurrency. A proxy needs a much smaller server: read a request head, hand the
exchange to the proxy core, stream a body each way, switch to raw bytes after an
upgrade. Framing is in :mod:`kubenet.forward.http1` (pure, strict); this module is
the I/O: flow control, keep-alive, pipelining, shutdown.

Behaviour, as Go's ``net/http`` server (what kubectl proxy runs on):

- malformed requests get a 400 (431 for oversized heads, 501 for unknown transfer
  codings, 505 for other HTTP versions) and the connection is closed;
- ``Expect: 100-continue`` is answered when the handler first reads the body;
- responses carry ``Date``; a body of unknown length is chunked for HTTP/1.1 clients
  and delimited by closing the connection for HTTP/1.0 ones; HEAD gets no body;
- a request body the handler did not read to the end closes the connection after the
  response (the next request cannot be found reliably otherwise);
- a client that goes away cancels its exchange (and so the upstream request);
- idle keep-alive connections are closed after ``idle_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from email.utils import formatdate
from typing import cast

from .http1 import (
    LAST_CHUNK,
    MAX_HEAD,
    REASONS,
    BodyDecoder,
    FramingError,
    RequestHead,
    chunk,
    has_field,
    parse_request_head,
    response_head,
)

log = logging.getLogger("kubenet.forward")

#: Request body bytes buffered before reading from the client pauses.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class ClientGone(ConnectionResetError):
    """The client closed its connection; there is nobody left to answer."""


class ClientStream:
    """Bytes from the client (a request body, or the raw stream after an upgrade)."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_eof",
        "_error",
        "_size",
        "_waiter",
    )

    def __init__(self, connection: HttpConnection) -> None:
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > HIGH_WATER:
                self._connection.pause_reading()
            self._wake()

    def end(self, error: BaseException | None = None) -> None:
        self._eof = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next bytes, or b"" at the end."""
        while not self._chunks:
            if self._eof:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size <= LOW_WATER:
            self._connection.resume_reading()
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data


class Exchange:
    """One request from a client and the means to answer it."""

    __slots__ = (
        "_body",
        "_chunked",
        "_connection",
        "_continue_pending",
        "_decoder",
        "_keep_alive",
        "_no_body",
        "body_bytes",
        "finished",
        "head",
        "headers",
        "method",
        "peer",
        "started",
        "status",
        "target",
    )

    def __init__(self, connection: HttpConnection, head: RequestHead) -> None:
        self._connection = connection
        self.head = head
        self.method = head.method
        self.target = head.target
        self.headers = head.headers
        self.peer = connection.peer
        self.started = False
        self.finished = False
        self.status = 0
        #: Response body bytes written (for the access log).
        self.body_bytes = 0
        self._chunked = False
        self._no_body = head.method == "HEAD"
        self._keep_alive = head.keep_alive
        self._continue_pending = head.expect_continue
        self._body: ClientStream | None = None
        self._decoder: BodyDecoder | None = None
        if head.framing.chunked or head.framing.length:
            self._body = ClientStream(connection)
            self._decoder = BodyDecoder(head.framing)

    # -- the request ------------------------------------------------------------------

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if len(key) == len(lowered) and key.lower() == lowered:
                return value
        return None

    @property
    def has_body(self) -> bool:
        return self._body is not None

    @property
    def content_length(self) -> int | None:
        """The request body's length when Content-Length gives it (None: chunked)."""
        return None if self.head.framing.chunked else self.head.framing.length

    @property
    def body_complete(self) -> bool:
        return self._decoder is None or self._decoder.done

    def body(self) -> AsyncIterator[bytes]:
        """The request body, as it arrives."""
        assert self._body is not None
        if self._continue_pending:
            self._continue_pending = False
            self._connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return aiter(self._body)

    # -- the response -----------------------------------------------------------------

    def _head_fields(
        self, headers: Sequence[tuple[str, str]], length: int | None, raw: str = ""
    ) -> list[tuple[str, str]]:
        fields = list(headers)
        # Go's server adds Date unless the handler set one (a proxied answer has its own).
        if not any(len(n) == 4 and n.lower() == "date" for n, _ in fields) and not (
            raw and has_field(raw, "date")
        ):
            fields.append(("Date", self._connection.server.date()))
        if length is not None:
            fields.append(("Content-Length", str(length)))
        elif self._no_body:
            pass
        elif self.head.version == "HTTP/1.1":
            fields.append(("Transfer-Encoding", "chunked"))
            self._chunked = True
        else:
            self._keep_alive = False
        if not self.body_complete:
            # The request body is not all in: the next request cannot be found.
            self._keep_alive = False
        if not self._keep_alive or self._connection.closing:
            self._keep_alive = False
            fields.append(("Connection", "close"))
        return fields

    async def send(
        self,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str = "",
        length: int | None = None,
        raw: str = "",
    ) -> None:
        """A whole response in one write. ``length`` overrides Content-Length (HEAD);
        ``raw`` is a block of header lines passed through as received."""
        self._begin(status)
        fields = self._head_fields(headers, len(body) if length is None else length, raw)
        payload = b"" if self._no_body or status in (204, 304) else body
        self.body_bytes = len(payload)
        await self._connection.send(response_head(status, reason, fields, raw) + payload)
        self._finish()

    async def start(
        self,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        length: int | None = None,
        reason: str = "",
        raw: str = "",
    ) -> None:
        """Send the response head; the body follows with :meth:`write`."""
        self._begin(status)
        if status in (204, 304):
            self._no_body = True
        fields = self._head_fields(headers, length, raw)
        await self._connection.send(response_head(status, reason, fields, raw))

    async def write(self, data: bytes) -> None:
        if self._no_body or not data:
            return
        self.body_bytes += len(data)
        await self._connection.send(chunk(data) if self._chunked else data)

    async def end(self) -> None:
        """The body is complete."""
        if self._chunked:
            await self._connection.send(LAST_CHUNK)
        self._finish()

    def abort(self) -> None:
        """Break the connection off (the answer cannot be completed)."""
        self.finished = True
        self._connection.close()

    async def switch(self, head: bytes) -> ClientStream:
        """Send a 101 head as received from the API server, then relay raw bytes.

        Returns the stream of the client's bytes; write yours with :meth:`write_raw`.
        """
        self._begin(101)
        self._keep_alive = False
        stream = self._connection.upgrade()
        await self._connection.send(head)
        return stream

    async def write_raw(self, data: bytes) -> None:
        self.body_bytes += len(data)
        await self._connection.send(data)

    def _begin(self, status: int) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status

    def _finish(self) -> None:
        self.finished = True
        self._connection.exchange_done(self, self._keep_alive and self.body_complete)


Handler = Callable[[Exchange], Awaitable[None]]


class FrontServer:
    """The connections of one listening socket and the handler they feed."""

    def __init__(self, handler: Handler, idle_timeout: float = 300.0) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self._date = ""
        self._date_second = 0

    def protocol(self) -> HttpConnection:
        return HttpConnection(self)

    def date(self) -> str:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True)
        return self._date

    async def sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than ``idle_timeout`` (forever).

        One periodic sweep instead of a timer per request: timers would cost on every
        exchange, this costs nothing on the way of a request.
        """
        if self.idle_timeout <= 0:
            return
        while True:
            await asyncio.sleep(max(1.0, self.idle_timeout / 4))
            cutoff = time.monotonic() - self.idle_timeout
            for connection in list(self.connections):
                if connection.idle and connection.idle_since < cutoff:
                    connection.close()

    def start_closing(self) -> None:
        """No new requests: idle connections close now, busy ones after their answer."""
        self.closing = True
        for connection in list(self.connections):
            if connection.idle:
                connection.close()

    async def wait_closed(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for busy connections, then cut them off."""
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        # Let cancelled handlers run their cleanup.
        for _ in range(3):
            await asyncio.sleep(0)


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_drain",
        "_exchange",
        "_reading_paused",
        "_relay",
        "_task",
        "_writing_paused",
        "idle_since",
        "peer",
        "server",
        "transport",
    )

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._buffer = bytearray()
        self._exchange: Exchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._relay: ClientStream | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.idle_since = time.monotonic()

    @property
    def idle(self) -> bool:
        return self._exchange is None and self._relay is None

    @property
    def closing(self) -> bool:
        return self.server.closing

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._relay is not None:
            self._relay.push(data)
            return
        exchange = self._exchange
        if exchange is not None and exchange._decoder is not None and not exchange._decoder.done:
            self._feed_body(exchange, data)
            return
        self._buffer += data
        if exchange is None:
            self._next()
        elif len(self._buffer) > MAX_HEAD:
            self.pause_reading()  # a pipelining client is far ahead: wait for us

    def eof_received(self) -> bool | None:
        if self._relay is not None:
            # As Go's relay: one side done means both are (the relay closes the rest).
            self._relay.end()
            return None
        exchange = self._exchange
        if exchange is not None and exchange._body is not None and not exchange.body_complete:
            exchange._body.end(ClientGone("the client closed mid-body"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        if self._relay is not None:
            self._relay.end()
        exchange = self._exchange
        if exchange is not None and exchange._body is not None and not exchange.body_complete:
            exchange._body.end(ClientGone("the client went away"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ClientGone("the client went away"))
            self._drain.exception()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- reading -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def _feed_body(self, exchange: Exchange, data: bytes) -> None:
        assert exchange._decoder is not None and exchange._body is not None
        try:
            pieces, rest = exchange._decoder.feed(data)
        except FramingError as exc:
            exchange._body.end(exc)
            self.close()
            return
        for piece in pieces:
            exchange._body.push(piece)
        if rest is not None:
            exchange._body.end()
            self._buffer += rest

    def _next(self) -> None:
        """Start the next request in the buffer, if its head is complete."""
        if self._closed:
            return
        if self.server.closing:
            self.close()  # shutting down: no new requests, as Go's Shutdown
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                self._refuse(431, "request head too large")
            return
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        try:
            head = parse_request_head(raw)
        except FramingError as exc:
            self._refuse(exc.status, str(exc))
            return
        exchange = Exchange(self, head)
        self._exchange = exchange
        if exchange._decoder is not None:
            rest, self._buffer = bytes(self._buffer), bytearray()
            if rest:
                self._feed_body(exchange, rest)
        self._task = asyncio.ensure_future(self._run(exchange))

    async def _run(self, exchange: Exchange) -> None:
        try:
            await self.server.handler(exchange)
        except (ClientGone, asyncio.CancelledError):
            self.close()
            return
        except Exception:
            log.exception("error handling %s request", exchange.method)
            if not exchange.started:
                with contextlib.suppress(ClientGone):
                    await exchange.send(
                        500,
                        [("Content-Type", "text/plain; charset=utf-8")],
                        b"Internal Server Error\n",
                    )
            self.close()
            return
        if not exchange.finished:
            self.close()  # the handler neither answered nor aborted: nothing sane to do

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that could not be read, then close (as Go's server does)."""
        body = f"{status} {REASONS.get(status, '')}: {message}\n".encode()
        head = response_head(
            status,
            "",
            [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close"),
             ("Content-Length", str(len(body)))],
        )  # fmt: skip
        self.write(head + body)
        self.close()

    # -- writing ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    async def send(self, data: bytes) -> None:
        if self._closed or self.transport is None or self.transport.is_closing():
            raise ClientGone("the client went away")
        self.transport.write(data)
        if self._writing_paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        if self._exchange is not exchange:
            return
        self._exchange = None
        if not keep_alive or self.server.closing:
            self.close()
            return
        self.resume_reading()
        if self._buffer:
            # The next request may already be here (pipelining); start it on the next
            # loop turn, once this handler has returned.
            asyncio.get_running_loop().call_soon(self._next)
        else:
            self.idle_since = time.monotonic()

    def upgrade(self) -> ClientStream:
        """From now on the client's bytes are raw: hand them, buffered ones first, over."""
        stream = ClientStream(self)
        self._relay = stream
        if self._buffer:
            stream.push(bytes(self._buffer))
            self._buffer.clear()
        return stream

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()
