"""The connection to one API server: a pooled HTTP/1.1 client and raw upgrade dials.

One :class:`Upstream` per cluster owns one ``aiohttp.ClientSession`` whose
``TCPConnector`` keeps up to ``PoolSettings.limit`` TLS connections alive and reuses
them; the TLS context is built once per cluster (:mod:`kubenet.forward.credentials`),
never per request. A pool that is too small is what makes kubectl proxy fall off at
high concurrency: it opens new TLS connections under load.

The client never decompresses (bytes pass through with their Content-Encoding) and
adds none of its own default headers (Accept, Accept-Encoding, User-Agent), so the API
server sees what the client sent.

Upgrades (exec, attach, port-forward over SPDY or WebSocket) do not use the pool: each
dials its own connection, writes the request head itself and hands back the raw
stream, as upstream's ``UpgradeAwareHandler`` does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from .credentials import (
    Auth,
    ClusterCredentials,
    KubeconfigOptions,
    load_credentials,
    load_kubeconfig,
)
from .paths import join_server_path

#: Longest upgrade response head we read before giving up.
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class PoolSettings:
    """Connection pool and timeout settings for every upstream."""

    #: Most connections open to one API server at once (kubectl proxy: unlimited, but
    #: only 2 idle ones are kept, hence its fall-off under load).
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


def _keepalive_socket_factory(period: float) -> aiohttp.SocketFactoryType:
    seconds = max(1, int(period))

    def make(addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        _set_keepalive(sock, seconds)
        return sock

    return make


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
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return f"remote error: tls: {getattr(exc, 'reason', None) or 'handshake failure'}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"dial tcp {hostport}: connect: {_os_reason(exc.os_error)}"
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "net/http: timeout awaiting response headers"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "EOF"
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {hostport}: connect: connection refused"
    if isinstance(exc, OSError):
        return f"dial tcp {hostport}: connect: {_os_reason(exc)}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


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
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self.credentials.name

    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use (it needs a running loop)."""
        if self._session is None:
            settings = self.pool
            connector = aiohttp.TCPConnector(
                limit=settings.limit,
                limit_per_host=0,
                keepalive_timeout=settings.idle_timeout,
                ssl=self.credentials.ssl or False,
                socket_factory=(
                    _keepalive_socket_factory(settings.tcp_keepalive)
                    if settings.tcp_keepalive > 0
                    else None
                ),
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=settings.connect_timeout,
                    sock_read=None,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                # Headers longer than aiohttp's 8 KiB default do occur (Audit-Id,
                # Warning lists, large Set-Cookie from aggregated APIs).
                max_line_size=65536,
                max_field_size=65536,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str, raw_query: str = "") -> URL:
        """The upstream URL for an already percent-encoded request path."""
        target = join_server_path(self.server_path, path)
        query = f"?{raw_query}" if raw_query else ""
        return URL(f"{self.origin}{target}{query}", encoded=True)

    def target(self, path: str, raw_query: str = "") -> str:
        """The request-target (origin form) for an already percent-encoded path."""
        target = join_server_path(self.server_path, path)
        return f"{target}?{raw_query}" if raw_query else target

    async def send(
        self,
        method: str,
        url: URL,
        headers: Sequence[tuple[str, str]],
        auth: Auth,
        data: Any = None,
    ) -> aiohttp.ClientResponse:
        """Send one request; the caller reads and releases the response."""
        settings = self.pool
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout,
            sock_read=None,
        )
        request = self.session().request(
            method,
            url,
            headers=headers,
            data=data,
            allow_redirects=False,
            ssl=auth.ssl if auth.ssl is not None else (self.credentials.ssl or False),
            server_hostname=self.credentials.server_hostname,
            timeout=timeout,
            compress=None,
        )
        if settings.request_timeout > 0:
            return await asyncio.wait_for(request, settings.request_timeout)
        return await request

    async def dial_upgrade(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        auth: Auth,
    ) -> UpgradedStream:
        """Open a fresh connection, send an upgrade request, read the response head."""
        context = auth.ssl if auth.ssl is not None else self.credentials.ssl
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=context if self.scheme == "https" else None,
                    server_hostname=(
                        (self.credentials.server_hostname or self.host)
                        if self.scheme == "https"
                        else None
                    ),
                    limit=MAX_HEAD,
                ),
                self.pool.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(describe_error(exc, self.hostport)) from None
        sock = writer.get_extra_info("socket")
        if sock is not None and self.pool.tcp_keepalive > 0:
            _set_keepalive(sock, max(1, int(self.pool.tcp_keepalive)))
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.hostport}"]
        lines += [f"{n}: {v}" for n, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
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
