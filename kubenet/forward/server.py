"""The proxy core: kubectl proxy's answers, request by request.

For each request (an :class:`~kubenet.forward.front.Exchange`), in this order:

1. ``--auth-token-file``: no accepted bearer token -> 401 ``Unauthorized``.
2. Path normalisation (:mod:`kubenet.forward.paths`): refused -> 400, not canonical ->
   301 to the canonical spelling.
3. Routing: static prefix -> files; API prefix -> on; anything else -> 404
   ``404 page not found``.
4. The filter (:mod:`kubenet.forward.filter`), on the path the cluster will see and the
   Host without its port: refused -> 403 ``Forbidden``.
5. Credentials are added (:mod:`kubenet.forward.headers`), then either
   - an upgrade (``Connection: upgrade`` with an ``Upgrade`` header) is dialled on its
     own connection and, once the API server answers 101, relayed as raw bytes both
     ways until either side closes; or
   - the request goes out on the cluster's pooled connections and the answer comes
     back chunk by chunk as it arrives (a watch event reaches the client as soon as
     the API server sends it; memory stays bounded for any body size).
   An API server that cannot be reached -> 500 with the error text, as upstream.

Every exchange ends with one access-log line and one metrics observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .clientauth import ClientTokens
from .credentials import CredentialsError
from .filter import FilterRules, host_of
from .front import ClientGone, ClientStream, Exchange
from .headers import client_response_headers, upstream_request_headers
from .observe import AccessLog, ProxyMetrics
from .paths import (
    PathRefused,
    Redirect,
    RouteKind,
    Router,
    encode_path,
    is_watch,
    normalise,
)
from .static import StaticFiles
from .upstream import Upstream, UpstreamError, UpstreamResponse

#: Bytes read from an upgraded stream at a time.
CHUNK = 64 * 1024
#: Routing decisions remembered (method, target, Host, upgrade) before starting over.
DECISION_CACHE = 4096
#: Answers up to this size (with a Content-Length) are read whole and sent in one write.
SMALL_BODY = 256 * 1024
#: Longest error body echoed from a refused upgrade.
MAX_ERROR_BODY = 1024 * 1024

_NO_BODY_STATUS = frozenset({204, 304})
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")


@dataclass(frozen=True)
class ProxyConfig:
    """How the proxy answers; flag names in the comments."""

    api_prefix: str = "/"  # --api-prefix (a trailing "/" is added, as kubectl does)
    www: str | None = None  # --www
    www_prefix: str = "/static/"  # --www-prefix
    # None: --disable-filter
    rules: FilterRules | None = field(default_factory=FilterRules.from_flags)
    multi_cluster: bool = False  # --contexts: serve /clusters/<context>/
    client_tokens: ClientTokens | None = None  # --auth-token-file
    user_agent: str = "api-proxy"


async def send_plain(
    exchange: Exchange, status: int, text: str, extra: Sequence[tuple[str, str]] = ()
) -> None:
    """Go's ``http.Error``: text/plain, nosniff, the text and a newline."""
    await exchange.send(status, [_TEXT, _NOSNIFF, *extra], (text + "\n").encode())


async def send_redirect(exchange: Exchange, location: str) -> None:
    """Go's ``http.Redirect`` with 301 (a small HTML body for GET and HEAD only)."""
    if exchange.method in ("GET", "HEAD"):
        body = f'<a href="{html.escape(location)}">Moved Permanently</a>.\n\n'.encode()
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Location", location)]
        await exchange.send(301, headers, body)
    else:
        await exchange.send(301, [("Location", location)])


@dataclass(eq=False)
class _Watch:
    """A watch being relayed, so shutdown can end it cleanly."""

    response: UpstreamResponse
    ended_by_proxy: bool = False


def _split_target(target: str) -> tuple[str, str, str | None]:
    """(path, query, authority): an absolute-form target carries the host, as in Go."""
    authority = None
    if not target.startswith("/") and "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        query_mark = rest.find("?")
        end = min(i for i in (slash, query_mark, len(rest)) if i >= 0)
        authority = rest[:end].rsplit("@", 1)[-1]
        target = rest[end:]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    path = path.split("#", 1)[0]
    return path, query, authority


class ApiProxy:
    """kubectl proxy's request handling over one or more upstream clusters.

    ``upstreams``: one, or (with ``config.multi_cluster``) several, keyed by their
    context name. Serve it with :func:`kubenet.forward.serve`.
    """

    def __init__(
        self,
        config: ProxyConfig,
        upstreams: Sequence[Upstream],
        *,
        access_log: AccessLog | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        if not config.multi_cluster and len(upstreams) != 1:
            raise ValueError("several upstreams need multi_cluster")
        self.config = config
        self.upstreams = {u.name: u for u in upstreams}
        self._single = upstreams[0] if not config.multi_cluster else None
        self.router = Router(
            api_prefix=Router.with_slash(config.api_prefix),
            www_prefix=Router.with_slash(config.www_prefix) if config.www else None,
            clusters=tuple(self.upstreams) if config.multi_cluster else (),
        )
        self.static = StaticFiles(config.www) if config.www else None
        self.access_log = access_log
        self.metrics = metrics or ProxyMetrics()
        self._watches: set[_Watch] = set()
        self._stopping = False
        self._decisions: dict[tuple[str, str, str, bool], tuple[Upstream, str, bool]] = {}

    async def end_streams(self) -> None:
        """End every open watch cleanly (a complete chunked body), for shutdown.

        Other requests are left to finish on their own.
        """
        self._stopping = True
        for watch in list(self._watches):
            watch.ended_by_proxy = True
            watch.response.end()

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()
        if self.access_log is not None:
            self.access_log.flush()

    # --- one request -------------------------------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        start = time.time() if self.access_log is not None else 0.0
        began = time.perf_counter()
        cluster: list[str | None] = [None]
        self.metrics.begin()
        try:
            await self._dispatch(exchange, cluster)
        finally:
            duration = time.perf_counter() - began
            status = exchange.status if exchange.started else 499
            self.metrics.observe(cluster[0], exchange.method, status, exchange.body_bytes, duration)
            if self.access_log is not None:
                self.access_log.record(
                    start,
                    exchange.method,
                    exchange.target.partition("?")[0],
                    status,
                    exchange.body_bytes,
                    duration,
                    cluster[0],
                )

    async def _dispatch(self, exchange: Exchange, cluster: list[str | None]) -> None:
        tokens = self.config.client_tokens
        if tokens is not None and not tokens.allows(exchange.header("Authorization")):
            self.metrics.rejected.labels("auth").inc()
            await send_plain(
                exchange, 401, "Unauthorized", [("WWW-Authenticate", 'Bearer realm="api-proxy"')]
            )
            return
        head = exchange.head
        key = (head.method, head.target, head.host, head.upgrade)
        decision = self._decisions.get(key)
        if decision is None:
            decision = await self._decide(exchange, cluster)
            if decision is None:
                return  # answered already: refused, redirected, not found, a file
            # Everything the decision depends on is in the key, and the configuration
            # does not change: the same few requests come again and again (bounded).
            if len(self._decisions) >= DECISION_CACHE:
                self._decisions.clear()
            self._decisions[key] = decision
        upstream, forwarded, watch = decision
        cluster[0] = upstream.name
        if head.upgrade and exchange.header("Upgrade"):
            await self._relay_upgrade(exchange, upstream, forwarded)
        else:
            await self._forward(exchange, upstream, forwarded, watch)

    async def _decide(
        self, exchange: Exchange, cluster: list[str | None]
    ) -> tuple[Upstream, str, bool] | None:
        """Where a request goes upstream (cluster, target, whether it is a watch), or
        None once it has been answered here."""
        raw_path, query, authority = _split_target(exchange.target)
        try:
            canonical = normalise(raw_path, query)
        except PathRefused as exc:
            self.metrics.rejected.labels("path").inc()
            await send_plain(exchange, 400, f"Bad Request: {exc}")
            return None
        if isinstance(canonical, Redirect):
            await send_redirect(exchange, canonical.location)
            return None
        route = self.router.route(canonical.path, query)
        if route.kind is RouteKind.NOT_FOUND:
            await send_plain(exchange, 404, "404 page not found")
            return None
        if route.kind is RouteKind.REDIRECT:
            await send_redirect(exchange, route.path)
            return None
        if route.kind is RouteKind.STATIC:
            assert self.static is not None
            await self.static.respond(exchange, route.path)
            return None
        upstream = self._single or self.upstreams[route.cluster or ""]
        cluster[0] = upstream.name
        rules = self.config.rules
        if rules is not None:
            host = authority if authority is not None else exchange.head.host
            if not rules.accepts(exchange.method, route.path, host_of(host), exchange.head.upgrade):
                self.metrics.rejected.labels("filter").inc()
                await send_plain(exchange, 403, "Forbidden")
                return None
        forwarded = upstream.target(
            route.path if canonical.plain else encode_path(route.path), query
        )
        return upstream, forwarded, is_watch(route.path, query)

    def _headers(
        self, exchange: Exchange, upstream: Upstream, authorization: str | None, upgrade: bool
    ) -> list[tuple[str, str]]:
        return upstream_request_headers(
            exchange.headers,
            client_ip=exchange.peer,
            authorization=authorization,
            impersonation=upstream.credentials.impersonation,
            user_agent=self.config.user_agent,
            upgrade=upgrade,
            drop_authorization=self.config.client_tokens is not None,
        )

    async def _forward(
        self, exchange: Exchange, upstream: Upstream, target: str, watch: bool
    ) -> None:
        try:
            auth = await upstream.credentials.auth()
        except CredentialsError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            await send_plain(exchange, 500, str(exc))
            return
        headers = self._headers(exchange, upstream, auth.authorization, upgrade=False)
        body = exchange.body() if exchange.has_body else None
        try:
            answer = await upstream.send(
                exchange.method, target, headers, auth, body, exchange.content_length
            )
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            await send_plain(exchange, 500, str(exc))
            return
        tracked = _Watch(answer) if watch else None
        try:
            if answer.status == 401:
                upstream.credentials.unauthorized(auth)
            await self._answer(exchange, upstream, answer, tracked)
        finally:
            if tracked is not None and tracked in self._watches:
                self._watches.discard(tracked)
                self.metrics.open_streams.labels("watch").dec()
            answer.release()

    async def _answer(
        self,
        exchange: Exchange,
        upstream: Upstream,
        answer: UpstreamResponse,
        watch: _Watch | None,
    ) -> None:
        head = answer.head
        assert head is not None
        # The API server's end-to-end header lines go to the client as received.
        raw = head.forward
        length = answer.content_length
        if exchange.method == "HEAD" or head.status in _NO_BODY_STATUS:
            # No body: the API server's Content-Length describes what a GET would get.
            declared = head.get("Content-Length")
            size = int(declared) if declared is not None and declared.isdigit() else None
            if head.status == 204:
                size = None
            await exchange.start(head.status, (), size, head.reason, raw)
            await exchange.end()
            return
        if watch is None and length is not None and length <= SMALL_BODY:
            try:
                body = await answer.read()
            except UpstreamError:
                # Broken off mid-body: break off too, as Go's reverse proxy does,
                # rather than pretend the body is complete.
                self.metrics.upstream_errors.labels(upstream.name).inc()
                exchange.abort()
                return
            await exchange.send(head.status, (), body, head.reason, raw=raw)
            return
        if watch is not None:
            self._watches.add(watch)
            self.metrics.open_streams.labels("watch").inc()
            if self._stopping:
                watch.ended_by_proxy = True
                answer.end()
        await exchange.start(head.status, (), length, head.reason, raw)
        try:
            async for data in answer:
                await exchange.write(data)
        except UpstreamError:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            exchange.abort()
            return
        await exchange.end()

    async def _relay_upgrade(self, exchange: Exchange, upstream: Upstream, target: str) -> None:
        try:
            auth = await upstream.credentials.auth()
        except CredentialsError as exc:
            await send_plain(exchange, 500, str(exc))
            return
        headers = self._headers(exchange, upstream, auth.authorization, upgrade=True)
        try:
            dialled = await upstream.dial_upgrade(exchange.method, target, headers, auth)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            await send_plain(exchange, 500, str(exc))
            return
        try:
            if dialled.status == 401:
                upstream.credentials.unauthorized(auth)
            if dialled.status != 101:
                if dialled.status < 400:
                    await send_plain(
                        exchange, 500, f"invalid upgrade response: status code {dialled.status}"
                    )
                    return
                await self._echo_refusal(exchange, dialled.reader, dialled.head)
                return
            # The API server's 101 goes to the client byte for byte, then raw bytes flow
            # both ways until either side closes.
            from_client = await exchange.switch(dialled.head)
            self.metrics.open_streams.labels("upgrade").inc()
            try:
                await self._pump(exchange, from_client, dialled.reader, dialled.writer)
            finally:
                self.metrics.open_streams.labels("upgrade").dec()
            exchange.abort()  # the connection was the stream: it ends with it
        finally:
            dialled.close()

    async def _echo_refusal(
        self, exchange: Exchange, reader: asyncio.StreamReader, head: bytes
    ) -> None:
        """The API server refused the upgrade: hand its answer to the client."""
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        status, reason = int(status_line[1]), status_line[2] if len(status_line) > 2 else ""
        fields = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                fields.append((name.strip(), value.strip()))
        length = next((v for n, v in fields if n.lower() == "content-length"), None)
        try:
            if length is not None and length.isdigit():
                body = await asyncio.wait_for(
                    reader.readexactly(min(int(length), MAX_ERROR_BODY)), 10
                )
            else:
                body = await asyncio.wait_for(reader.read(MAX_ERROR_BODY), 10)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            body = b""
        headers = [
            (n, v) for n, v in client_response_headers(fields) if n.lower() != "content-length"
        ]
        headers.append(("Connection", "close"))
        await exchange.send(status, headers, body, reason)

    async def _pump(
        self,
        exchange: Exchange,
        from_client: ClientStream,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy raw bytes both ways until either side closes, then close both."""

        async def downstream() -> None:
            while data := await up_reader.read(CHUNK):
                await exchange.write_raw(data)

        async def upstream() -> None:
            while data := await from_client.read():
                up_writer.write(data)
                await up_writer.drain()

        tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ClientGone, Exception):
                    await task
