"""The proxy as an aiohttp application: kubectl proxy's answers, request by request.

For each request, in this order:

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
   - the request is sent over the cluster's pooled connections, and the answer
     streamed back chunk by chunk as it arrives (a watch event reaches the client as
     soon as the API server sends it; memory stays bounded for any body size).
   An API server that cannot be reached -> 500 with the error text, as upstream.

Every exchange ends with one access-log line and one metrics observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .clientauth import ClientTokens
from .credentials import CredentialsError
from .filter import FilterRules, host_of, is_upgrade_request
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

#: Bytes read from a client or an upgraded stream at a time.
CHUNK = 64 * 1024
#: Filter verdicts remembered (method, path, Host, upgrade) before starting over.
VERDICT_CACHE = 4096
#: Answers up to this size (with a Content-Length) are read whole and sent in one write.
SMALL_BODY = 256 * 1024
#: Longest error body echoed from a refused upgrade.
MAX_ERROR_BODY = 1024 * 1024

_NO_BODY_STATUS = frozenset({204, 304})


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


def plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """Go's ``http.Error``: text/plain, nosniff, the text and a newline."""
    extra = {"X-Content-Type-Options": "nosniff", **(headers or {})}
    return web.Response(
        status=status, text=text + "\n", content_type="text/plain", charset="utf-8", headers=extra
    )


def redirect(location: str) -> web.Response:
    """Go's ``http.Redirect`` with 301."""
    return web.Response(
        status=301,
        text=f'<a href="{location}">Moved Permanently</a>.\n\n',
        content_type="text/html",
        charset="utf-8",
        headers={"Location": location},
    )


class _RawFeed:
    """Receives a client's bytes after an upgrade (aiohttp's payload-parser slot)."""

    def __init__(self, stream: aiohttp.StreamReader) -> None:
        self._stream = stream

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._stream.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._stream.feed_eof()


@dataclass(slots=True)
class _Exchange:
    """What the access log and metrics need to know about one request."""

    cluster: str | None = None
    status: int = 0
    nbytes: int = 0


@dataclass(eq=False)
class _Stream:
    """A watch being relayed, so shutdown can end it cleanly."""

    response: UpstreamResponse
    ended_by_proxy: bool = False


def _client_ip(request: web.BaseRequest) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


def _host_header(request: web.BaseRequest) -> str:
    # An absolute-form request target carries the host, and Go takes it from there.
    target = request.raw_path
    if not target.startswith("/") and "://" in target:
        authority = target.split("://", 1)[1].split("/", 1)[0]
        return authority.rsplit("@", 1)[-1]
    return request.headers.get("Host", "")


def _parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return status, reason, headers


class ApiProxy:
    """kubectl proxy's request handling over one or more upstream clusters.

    ``upstreams``: one, or (with ``config.multi_cluster``) several, keyed by their
    context name. Embed with :meth:`application`, or use :func:`kubenet.forward.serve`.
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
        self._streams: set[_Stream] = set()
        self._stopping = False
        self._verdicts: dict[tuple[str, str, str, bool], bool] = {}

    # --- embedding -----------------------------------------------------------------

    def application(self) -> web.Application:
        """An aiohttp application answering every path with :meth:`handle`."""
        app = web.Application(handler_args={"max_field_size": 65536, "max_line_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.end_streams()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.close()

    async def end_streams(self) -> None:
        """End every open watch cleanly (a complete chunked body), for shutdown.

        Other requests are left to finish on their own.
        """
        self._stopping = True
        for stream in list(self._streams):
            stream.ended_by_proxy = True
            stream.response.end()

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()
        if self.access_log is not None:
            self.access_log.flush()

    # --- one request ---------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = time.time() if self.access_log is not None else 0.0
        began = time.perf_counter()
        exchange = _Exchange()
        self.metrics.inflight.inc()
        try:
            response = await self._dispatch(request, exchange)
            if not response.prepared:
                await response.prepare(request)
                await response.write_eof()
                exchange.status = response.status
                if isinstance(response, web.Response) and response.body is not None:
                    exchange.nbytes = len(cast(bytes, response.body))
                else:
                    exchange.nbytes = response.content_length or 0
            return response
        except ConnectionResetError:
            # The client went away mid-answer. aiohttp treats a connection error while
            # sending as "client gone" and stays quiet about it.
            return web.Response(status=exchange.status or 499)
        finally:
            self.metrics.inflight.dec()
            duration = time.perf_counter() - began
            self.metrics.observe(
                exchange.cluster, request.method, exchange.status, exchange.nbytes, duration
            )
            if self.access_log is not None:
                self.access_log.record(
                    start,
                    request.method,
                    request.rel_url.raw_path,
                    exchange.status,
                    exchange.nbytes,
                    duration,
                    exchange.cluster,
                )

    async def _dispatch(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        tokens = self.config.client_tokens
        if tokens is not None and not tokens.allows(request.headers.get("Authorization")):
            self.metrics.rejected.labels("auth").inc()
            return plain(401, "Unauthorized", {"WWW-Authenticate": 'Bearer realm="api-proxy"'})
        url = request.rel_url
        query = url.raw_query_string
        try:
            canonical = normalise(url.raw_path, query)
        except PathRefused as exc:
            self.metrics.rejected.labels("path").inc()
            return plain(400, f"Bad Request: {exc}")
        if isinstance(canonical, Redirect):
            return redirect(canonical.location)
        route = self.router.route(canonical.path, query)
        if route.kind is RouteKind.NOT_FOUND:
            return plain(404, "404 page not found")
        if route.kind is RouteKind.REDIRECT:
            return redirect(route.path)
        if route.kind is RouteKind.STATIC:
            assert self.static is not None
            return await self.static.respond(request, route.path)

        upstream = self._single or self.upstreams[cast(str, route.cluster)]
        exchange.cluster = upstream.name
        upgrade = is_upgrade_request(request.headers.items())
        rules = self.config.rules
        if rules is not None:
            key = (request.method, route.path, _host_header(request), upgrade)
            accepted = self._verdicts.get(key)
            if accepted is None:
                accepted = rules.accepts(key[0], key[1], host_of(key[2]), upgrade)
                # The same few paths come again and again; keep their verdicts (bounded).
                if len(self._verdicts) >= VERDICT_CACHE:
                    self._verdicts.clear()
                self._verdicts[key] = accepted
            if not accepted:
                self.metrics.rejected.labels("filter").inc()
                return plain(403, "Forbidden")
        forwarded = route.path if canonical.plain else encode_path(route.path)
        if upgrade and "Upgrade" in request.headers:
            return await self._relay_upgrade(request, upstream, forwarded, exchange)
        return await self._forward(request, upstream, route.path, forwarded, exchange)

    def _headers(
        self, request: web.BaseRequest, upstream: Upstream, authorization: str | None, upgrade: bool
    ) -> list[tuple[str, str]]:
        return upstream_request_headers(
            list(request.headers.items()),
            client_ip=_client_ip(request),
            authorization=authorization,
            impersonation=upstream.credentials.impersonation,
            user_agent=self.config.user_agent,
            upgrade=upgrade,
            drop_authorization=self.config.client_tokens is not None,
        )

    async def _forward(
        self,
        request: web.BaseRequest,
        upstream: Upstream,
        path: str,
        forwarded: str,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        query = request.rel_url.raw_query_string
        try:
            auth = await upstream.credentials.auth()
        except CredentialsError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            return plain(500, str(exc))
        headers = self._headers(request, upstream, auth.authorization, upgrade=False)
        body = request.content.iter_any() if request.can_read_body else None
        if body is not None and request.headers.get("Expect", "").lower() == "100-continue":
            # The client waits for this before sending its body (RFC 9110 10.1.1).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            answer = await upstream.send(
                request.method,
                upstream.target(forwarded, query),
                headers,
                auth,
                body,
                request.content_length if body is not None else None,
            )
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            return plain(500, str(exc))
        stream = _Stream(answer) if is_watch(path, query) else None
        try:
            if answer.status == 401:
                upstream.credentials.unauthorized(auth)
            length = answer.content_length
            if (
                stream is None
                and length is not None
                and length <= SMALL_BODY
                and request.method != "HEAD"
                and answer.status not in _NO_BODY_STATUS
            ):
                return await self._whole(request, answer, exchange)
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in client_response_headers(answer.headers):
                response.headers.add(name, value)
            exchange.status = answer.status
            if stream is not None:
                if self._stopping:
                    stream.ended_by_proxy = True
                    answer.end()
                self._streams.add(stream)
                self.metrics.open_streams.labels("watch").inc()
            await response.prepare(request)
            try:
                async for data in answer:
                    exchange.nbytes += len(data)
                    await response.write(data)
            except UpstreamError:
                # The API server broke off mid-body: so does the proxy, as Go's reverse
                # proxy does, rather than pretend the body is complete.
                self.metrics.upstream_errors.labels(upstream.name).inc()
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            if stream is not None:
                self._streams.discard(stream)
                self.metrics.open_streams.labels("watch").dec()
            answer.release()

    async def _whole(
        self, request: web.BaseRequest, answer: UpstreamResponse, exchange: _Exchange
    ) -> web.StreamResponse:
        """A small answer of known length: read it, then send head and body in one write."""
        try:
            body = await answer.read()
        except UpstreamError:
            # Broken off mid-body: break off too (see _forward).
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=answer.status)
        headers = [
            (n, v)
            for n, v in client_response_headers(answer.headers)
            if n.lower() != "content-length"
        ]
        exchange.status = answer.status
        exchange.nbytes = len(body)
        return web.Response(
            status=answer.status, reason=answer.reason, body=body, headers=CIMultiDict(headers)
        )

    async def _relay_upgrade(
        self,
        request: web.BaseRequest,
        upstream: Upstream,
        forwarded: str,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        query = request.rel_url.raw_query_string
        try:
            auth = await upstream.credentials.auth()
        except CredentialsError as exc:
            return plain(500, str(exc))
        headers = self._headers(request, upstream, auth.authorization, upgrade=True)
        try:
            dialled = await upstream.dial_upgrade(
                request.method, upstream.target(forwarded, query), headers, auth
            )
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(upstream.name).inc()
            return plain(500, str(exc))
        try:
            status, reason, head_headers = _parse_head(dialled.head)
            if status == 401:
                upstream.credentials.unauthorized(auth)
            if status != 101:
                if status < 400:
                    return plain(500, f"invalid upgrade response: status code {status}")
                return await self._echo_refusal(dialled.reader, status, reason, head_headers)
            response = web.StreamResponse(status=101, reason=reason or "Switching Protocols")
            for name, value in head_headers:
                response.headers.add(name, value)
            exchange.status = 101
            # Take the client's bytes before the 101 goes out: aiohttp's own parser only
            # knows WebSocket upgrades and would read SPDY frames as HTTP.
            from_client = aiohttp.StreamReader(
                request.protocol, CHUNK, loop=asyncio.get_running_loop()
            )
            cast(Any, request.protocol).set_parser(_RawFeed(from_client))
            await response.prepare(request)
            self.metrics.open_streams.labels("upgrade").inc()
            try:
                await self._pump(response, from_client, dialled.reader, dialled.writer, exchange)
            finally:
                self.metrics.open_streams.labels("upgrade").dec()
            response.force_close()
            return response
        finally:
            dialled.close()

    async def _echo_refusal(
        self,
        reader: asyncio.StreamReader,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
    ) -> web.Response:
        """The API server refused the upgrade: hand its answer to the client."""
        length = next((v for n, v in headers if n.lower() == "content-length"), None)
        try:
            if length is not None and length.isdigit():
                body = await asyncio.wait_for(
                    reader.readexactly(min(int(length), MAX_ERROR_BODY)), 10
                )
            else:
                body = await asyncio.wait_for(reader.read(MAX_ERROR_BODY), 10)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            body = b""
        response = web.Response(status=status, reason=reason or None, body=body)
        for name, value in client_response_headers(headers):
            if name.lower() != "content-length":
                response.headers.add(name, value)
        response.force_close()
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        from_client: aiohttp.StreamReader,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        exchange: _Exchange,
    ) -> None:
        """Copy raw bytes both ways until either side closes, then close both."""

        async def downstream() -> None:
            while data := await up_reader.read(CHUNK):
                exchange.nbytes += len(data)
                await response.write(data)

        async def upstream() -> None:
            while data := await from_client.readany():
                up_writer.write(data)
                await up_writer.drain()

        tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
