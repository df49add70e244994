"""The proxy end to end against small real upstreams: answers, headers, streaming."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from kubenet.forward import ClientTokens, FilterRules, ProxyConfig
from kubenet.forward.credentials import StaticSource

from .support import backend, raw_request, run, running_proxy, upstream

SECRET = "upstream-secret"


def test_forwards_with_credentials_and_kubectl_headers() -> None:
    async def scenario() -> None:
        async with (
            backend() as b,
            running_proxy(
                upstream(
                    b.url, impersonation=(("Impersonate-User", "bob"), ("Impersonate-Group", "g"))
                )
            ) as p,
        ):
            r = await raw_request(
                p.address,
                "GET",
                "/api/v1/pods?labelSelector=a%3Db&fieldSelector=x",
                [("Connection", "X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"),
                 ("TE", "trailers"), ("X-Forwarded-For", "10.0.0.9"),
                 ("Accept", "application/json")],
            )  # fmt: skip
            assert r.status == 200, r.body
            seen = b.last
            # The raw query passes untouched; the path arrives as sent.
            assert seen.raw_path == "/api/v1/pods?labelSelector=a%3Db&fieldSelector=x"
            assert seen.header("Authorization") == f"Bearer {SECRET}"
            assert seen.header("Impersonate-User") == "bob"
            assert seen.all("Impersonate-Group") == ["g"]
            assert seen.header("Host") == b.url.removeprefix("http://")
            assert seen.header("X-Forwarded-For") == "10.0.0.9, 127.0.0.1"
            assert seen.header("User-Agent") == "api-proxy"
            assert seen.header("Accept") == "application/json"
            for hop in ("X-Private", "Keep-Alive", "TE"):
                assert seen.header(hop) is None, hop
            # No default headers of the proxy's own HTTP client.
            assert seen.header("Accept-Encoding") is None

    run(scenario())


def test_clients_own_authorization_and_impersonation_pass_through() -> None:
    async def scenario() -> None:
        async with (
            backend() as b,
            running_proxy(upstream(b.url, impersonation=(("Impersonate-User", "bob"),))) as p,
        ):
            await raw_request(
                p.address,
                "GET",
                "/api/v1/pods",
                [("Authorization", "Bearer client-token"), ("Impersonate-User", "carol"),
                 ("User-Agent", "kubectl/v1.32")],
            )  # fmt: skip
            assert b.last.header("Authorization") == "Bearer client-token"
            assert b.last.all("Impersonate-User") == ["carol"]
            assert b.last.header("User-Agent") == "kubectl/v1.32"

    run(scenario())


def test_request_and_response_bodies_and_statuses_pass_through() -> None:
    async def not_found(_: web.Request) -> web.StreamResponse:
        response = web.json_response({"kind": "Status", "code": 404}, status=404)
        response.headers.add("Warning", '299 - "one"')
        response.headers.add("Warning", '299 - "two"')
        return response

    async def scenario() -> None:
        async with (
            backend(routes={"/api/v1/missing": not_found}) as b,
            running_proxy(upstream(b.url)) as p,
        ):
            body = b"x" * 300_000
            r = await raw_request(p.address, "POST", "/api/v1/things", [], body)
            assert r.status == 200
            assert r.json() == {"method": "POST", "path": "/api/v1/things", "bytes": 300_000}
            assert b.last.body == body
            r = await raw_request(p.address, "GET", "/api/v1/missing")
            assert r.status == 404
            assert r.json() == {"kind": "Status", "code": 404}
            assert [v for n, v in r.headers if n == "Warning"] == ['299 - "one"', '299 - "two"']
            r = await raw_request(p.address, "HEAD", "/api/v1/pods")
            assert r.status == 200 and r.body == b""
            assert r.header("Content-Length") is not None

    run(scenario())


def test_refusals_answer_like_kubectl_proxy() -> None:
    async def scenario() -> None:
        async with backend() as b, running_proxy(upstream(b.url)) as p:
            r = await raw_request(p.address, "GET", "/api/v1/pods", host="evil.com")
            assert (r.status, r.body) == (403, b"Forbidden\n")
            assert r.header("Content-Type") == "text/plain; charset=utf-8"
            assert r.header("X-Content-Type-Options") == "nosniff"
            for host in ("localhost.evil.com:8001", "127a0b0c1"):
                r = await raw_request(p.address, "GET", "/api/v1/pods", host=host)
                assert r.status == 403, host
            # An absolute-form target names the host the filter checks, as in Go.
            r = await raw_request(p.address, "GET", "http://evil.com/api/v1/pods")
            assert r.status == 403
            r = await raw_request(p.address, "POST", "/api/v1/namespaces/d/pods/x/exec")
            assert (r.status, r.body) == (403, b"Forbidden\n")
            # kubernetes#77496: the IPv6 loopback with a port is a default host.
            r = await raw_request(p.address, "GET", "/api/v1/pods", host="[::1]:8001")
            assert r.status == 200
            assert [s.raw_path for s in b.seen] == ["/api/v1/pods"]

    run(scenario())


def test_upstream_errors_are_500_with_the_error_text() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario() -> None:
        async with running_proxy(upstream(f"http://127.0.0.1:{port}")) as p:
            r = await raw_request(p.address, "GET", "/api/v1/pods")
            assert r.status == 500
            assert r.body == f"dial tcp 127.0.0.1:{port}: connect: connection refused\n".encode()
            assert SECRET.encode() not in r.body

    run(scenario())


def test_watch_events_arrive_one_by_one() -> None:
    release = asyncio.Event()

    async def watch(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"type":"ADDED","object":{"n":1}}\n')
        await release.wait()
        await response.write(b'{"type":"MODIFIED","object":{"n":2}}\n')
        return response

    async def scenario() -> None:
        async with (
            backend(routes={"/api/v1/pods": watch}) as b,
            running_proxy(upstream(b.url)) as p,
            aiohttp.ClientSession() as client,
            client.get(f"{p.url}/api/v1/pods?watch=1") as resp,
        ):
            # The first event arrives while the API server is still holding the second.
            first = await asyncio.wait_for(resp.content.readline(), 2)
            assert b'"ADDED"' in first
            release.set()
            second = await asyncio.wait_for(resp.content.readline(), 2)
            assert b'"MODIFIED"' in second
            assert await resp.content.read() == b""

    run(scenario())


def test_large_bodies_stream_with_bounded_memory() -> None:
    size = 32 * 1024 * 1024
    chunk = bytes(range(256)) * 256  # 64 KiB

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        for _ in range(size // len(chunk)):
            await response.write(chunk)
        return response

    async def upload_sink(request: web.Request) -> web.StreamResponse:
        digest = hashlib.sha256()
        async for part in request.content.iter_any():
            digest.update(part)
        return web.Response(text=digest.hexdigest())

    async def produce() -> object:
        for _ in range(size // len(chunk)):
            yield chunk

    async def scenario() -> None:
        routes = {"/big": download, "/sink": upload_sink}
        async with backend(routes=routes) as b, running_proxy(upstream(b.url)) as p:
            async with aiohttp.ClientSession() as client:
                tracemalloc.start()
                try:
                    digest = hashlib.sha256()
                    async with client.get(f"{p.url}/big") as resp:
                        async for part in resp.content.iter_any():
                            digest.update(part)
                    async with client.post(f"{p.url}/sink", data=produce()) as resp:
                        uploaded = await resp.text()
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
            expected = hashlib.sha256(chunk * (size // len(chunk))).hexdigest()
            assert digest.hexdigest() == expected
            assert uploaded == expected
            # Backend, proxy and client together never held more than a few MiB.
            assert peak < 8 * 1024 * 1024, peak

    run(scenario(), timeout=60)


def test_read_only_preset_refuses_writes_and_upgrades() -> None:
    async def scenario() -> None:
        config = ProxyConfig(rules=FilterRules.from_flags(reject_paths="", read_only=True))
        async with backend() as b, running_proxy(upstream(b.url), config) as p:
            assert (await raw_request(p.address, "GET", "/api/v1/pods")).status == 200
            assert (await raw_request(p.address, "OPTIONS", "/api/v1/pods")).status == 200
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                assert (await raw_request(p.address, method, "/api/v1/pods")).status == 403
            upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
            r = await raw_request(
                p.address, "GET", "/api/v1/namespaces/d/pods/p/portforward", upgrade
            )
            assert r.status == 403
            assert len(b.seen) == 2

    run(scenario())


def test_disabled_filter_accepts_any_host_and_path() -> None:
    async def scenario() -> None:
        async with backend() as b, running_proxy(upstream(b.url), ProxyConfig(rules=None)) as p:
            r = await raw_request(
                p.address, "POST", "/api/v1/namespaces/d/pods/x/exec", host="evil.com"
            )
            assert r.status == 200
            assert b.last.raw_path == "/api/v1/namespaces/d/pods/x/exec"

    run(scenario())


def test_non_canonical_paths_redirect_and_refusals_are_400() -> None:
    async def scenario() -> None:
        async with backend() as b, running_proxy(upstream(b.url)) as p:
            r = await raw_request(p.address, "GET", "/api/v1/x/../pods?watch=1")
            assert r.status == 301
            assert r.header("Location") == "/api/v1/pods?watch=1"
            r = await raw_request(p.address, "GET", "/api/v1/namespaces/d/pods/p%2Fexec")
            assert r.status == 400
            r = await raw_request(p.address, "GET", "/api/v1/namespaces/d/pods/%70/%65xec")
            assert r.status == 403
            r = await raw_request(p.address, "GET", "/api/v1/namespaces/d/pods/caf%C3%A9")
            assert r.status == 200
            assert b.last.raw_path == "/api/v1/namespaces/d/pods/caf%C3%A9"
            assert len(b.seen) == 1

    run(scenario())


def test_request_timeout_bounds_the_wait_for_headers_only() -> None:
    from kubenet.forward import PoolSettings

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.Response(text="late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(0.5)
        await response.write(b"done")
        return response

    async def scenario() -> None:
        routes = {"/slow": slow, "/slow-body": slow_body}
        async with (
            backend(routes=routes) as b,
            running_proxy(upstream(b.url, pool=PoolSettings(request_timeout=0.2))) as p,
        ):
            r = await raw_request(p.address, "GET", "/slow")
            assert (r.status, r.body) == (500, b"net/http: timeout awaiting response headers\n")
            r = await raw_request(p.address, "GET", "/slow-body")
            assert (r.status, r.body) == (200, b"done")

    run(scenario())


def test_metrics_and_access_log_never_show_credentials(tmp_path: object) -> None:
    from pathlib import Path

    from kubenet.forward import AccessLog

    log_path = Path(str(tmp_path)) / "access.log"

    async def scenario() -> None:
        log = AccessLog.open(str(log_path))
        async with (
            backend() as b,
            running_proxy(
                upstream(b.url, source=StaticSource(f"Bearer {SECRET}")), access_log=log
            ) as p,
        ):
            await raw_request(p.address, "GET", "/api/v1/pods?limit=1")
            await raw_request(p.address, "GET", "/api/v1/pods", host="evil.com")
            metrics = p.proxy.metrics.registry
            text = "\n".join(str(m) for m in metrics.collect())
            assert SECRET not in text
            assert (
                metrics.get_sample_value(
                    "apiproxy_requests_total", {"cluster": "test", "method": "GET", "code": "200"}
                )
                == 1
            )
            assert (
                metrics.get_sample_value("apiproxy_rejected_requests_total", {"reason": "filter"})
                == 1
            )
        lines = log_path.read_text().splitlines()
        assert len(lines) == 2
        fields = lines[0].split(" ")
        assert fields[1:5] == ["GET", "/api/v1/pods", "200", fields[4]]
        assert int(fields[4]) > 0 and float(fields[5]) >= 0 and fields[6] == "test"
        assert lines[1].split(" ")[3] == "403"
        assert SECRET not in log_path.read_text()

    run(scenario())


# --- upgrades -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_upgrade_backend(answer: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw server: reads one request head, answers ``answer``; after a 101 it echoes
    every byte back upper-cased, and closes when the client closes."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        if b" 101 " in answer.split(b"\r\n", 1)[0]:
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()


SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nHELLO"
)


def test_upgrade_is_relayed_as_raw_bytes_with_credentials() -> None:
    async def scenario() -> None:
        async with (
            raw_upgrade_backend(SWITCH) as (url, heads),
            running_proxy(
                upstream(url, impersonation=(("Impersonate-User", "bob"),)),
                ProxyConfig(rules=FilterRules.from_flags(reject_paths="")),
            ) as p,
        ):
            host, port = p.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /api/v1/namespaces/d/pods/p/exec?command=sh&stdin=true HTTP/1.1\r\n"
                b"Host: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
            # What the API server sends right after its 101 arrives, then both ways.
            assert await reader.readexactly(5) == b"HELLO"
            writer.write(b"\x00\x01binary\xff")
            assert await reader.readexactly(9) == b"\x00\x01BINARY\xff"
            sent = heads[0].decode()
            assert sent.startswith("POST /api/v1/namespaces/d/pods/p/exec?command=sh&stdin=true ")
            assert f"Authorization: Bearer {SECRET}" in sent
            assert "Impersonate-User: bob" in sent
            assert "Upgrade: SPDY/3.1" in sent and "Connection: Upgrade" in sent
            assert "X-Forwarded-For: 127.0.0.1" in sent
            # The client closing ends the relay and the upstream connection.
            writer.close()
            await asyncio.sleep(0.1)
            assert p.proxy.metrics.open_streams.labels("upgrade")._value.get() == 0

    run(scenario())


def test_upstream_closing_an_upgrade_closes_the_client() -> None:
    async def scenario() -> None:
        answer = SWITCH.replace(b"HELLO", b"")
        async with raw_upgrade_backend(answer) as (url, _), running_proxy(upstream(url)) as p:
            host, port = p.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"GET /api/v1/namespaces/d/pods/p/portforward HTTP/1.1\r\nHost: localhost\r\n"
                b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.write_eof()  # the backend's read ends, so it closes its side
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()

    run(scenario())


def test_refused_upgrades_answer_like_upstream() -> None:
    async def scenario() -> None:
        body = b'{"kind":"Status","code":403}'
        refusal = (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        path = "/api/v1/namespaces/d/pods/p/portforward"
        async with raw_upgrade_backend(refusal) as (url, _), running_proxy(upstream(url)) as p:
            r = await raw_request(p.address, "GET", path, upgrade)
            assert (r.status, r.body) == (403, body)
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        async with raw_upgrade_backend(ok) as (url, _), running_proxy(upstream(url)) as p:
            r = await raw_request(p.address, "GET", path, upgrade)
            assert (r.status, r.body) == (500, b"invalid upgrade response: status code 200\n")

    run(scenario())


def test_websocket_through_the_proxy() -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
        await ws.prepare(request)
        async for message in ws:
            await ws.send_bytes(b"\x01" + message.data[1:])
        return ws

    async def scenario() -> None:
        path = "/api/v1/namespaces/d/pods/p/exec"
        config = ProxyConfig(rules=FilterRules.from_flags(reject_paths=""))
        async with (
            backend(routes={path: echo}) as b,
            running_proxy(upstream(b.url), config) as p,
            aiohttp.ClientSession() as client,
        ):
            async with client.ws_connect(
                f"{p.url}{path}?command=cat", protocols=("v5.channel.k8s.io",)
            ) as ws:
                assert ws.protocol == "v5.channel.k8s.io"
                await ws.send_bytes(b"\x00hi")
                message = await ws.receive(timeout=2)
                assert message.data == b"\x01hi"
            assert b.last.header("Authorization") == f"Bearer {SECRET}"

    run(scenario())


# --- client tokens, prefixes, several clusters ------------------------------------------------


def test_auth_token_file_guards_the_proxy_and_stays_local(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# proxy clients\nfirst-token,alice,1\n\nsecond-token\n")

    async def scenario() -> None:
        config = ProxyConfig(client_tokens=ClientTokens(str(tokens)))
        async with backend() as b, running_proxy(upstream(b.url), config) as p:
            assert (await raw_request(p.address, "GET", "/api/v1/pods")).status == 401
            wrong = [("Authorization", "Bearer nope")]
            assert (await raw_request(p.address, "GET", "/api/v1/pods", wrong)).status == 401
            basic = [("Authorization", "Basic Zmlyc3QtdG9rZW4=")]
            assert (await raw_request(p.address, "GET", "/api/v1/pods", basic)).status == 401
            good = [("Authorization", "Bearer second-token")]
            assert (await raw_request(p.address, "GET", "/api/v1/pods", good)).status == 200
            # The proxy's token was consumed; the API server got the kubeconfig's.
            assert b.last.header("Authorization") == f"Bearer {SECRET}"
            # Rotation: the file is re-read when it changes.
            tokens.write_text("third-token\n")
            assert (await raw_request(p.address, "GET", "/api/v1/pods", good)).status == 401
            third = [("Authorization", "Bearer third-token")]
            assert (await raw_request(p.address, "GET", "/api/v1/pods", third)).status == 200
            assert len(b.seen) == 2

    run(scenario())


def test_api_prefix_and_append_server_path() -> None:
    async def scenario() -> None:
        async with backend() as b:
            custom = ProxyConfig(api_prefix="/custom")
            async with running_proxy(upstream(b.url), custom) as p:
                assert (await raw_request(p.address, "GET", "/api/v1/pods")).status == 404
                r = await raw_request(p.address, "GET", "/api/v1/pods")
                assert r.body == b"404 page not found\n"
                r = await raw_request(p.address, "GET", "/custom/api/v1/pods?limit=1")
                assert r.status == 200
                assert b.last.raw_path == "/api/v1/pods?limit=1"
                r = await raw_request(p.address, "GET", "/custom")
                assert (r.status, r.header("Location")) == (301, "/custom/")
                # The reject rules see the path after the prefix is stripped.
                r = await raw_request(p.address, "GET", "/custom/api/v1/namespaces/d/pods/p/exec")
                assert r.status == 403
            based = upstream(f"{b.url}/base", server_path="/base", append_server_path=True)
            async with running_proxy(based) as p:
                await raw_request(p.address, "GET", "/api/v1/pods")
                assert b.last.raw_path == "/base/api/v1/pods"
                await raw_request(p.address, "GET", "/")
                assert b.last.raw_path == "/base/"
            plain_path = upstream(f"{b.url}/base", server_path="/base")
            async with running_proxy(plain_path) as p:
                await raw_request(p.address, "GET", "/api/v1/pods")
                assert b.last.raw_path == "/api/v1/pods"

    run(scenario())


def test_two_clusters_each_with_its_own_credentials() -> None:
    async def scenario() -> None:
        async with backend() as a, backend() as b:
            ups = [
                upstream(a.url, name="kind-a", source=StaticSource("Bearer token-a")),
                upstream(b.url, name="kind-b", source=StaticSource("Bearer token-b")),
            ]
            async with running_proxy(ups, ProxyConfig(multi_cluster=True)) as p:
                r = await raw_request(p.address, "GET", "/clusters/kind-a/api/v1/pods")
                assert r.status == 200
                r = await raw_request(p.address, "GET", "/clusters/kind-b/apis?x=1")
                assert r.status == 200
                assert [s.raw_path for s in a.seen] == ["/api/v1/pods"]
                assert [s.raw_path for s in b.seen] == ["/apis?x=1"]
                assert a.last.header("Authorization") == "Bearer token-a"
                assert b.last.header("Authorization") == "Bearer token-b"
                for missing in ("/api/v1/pods", "/clusters/kind-c/api", "/clusters/"):
                    assert (await raw_request(p.address, "GET", missing)).status == 404
                exec_path = "/clusters/kind-a/api/v1/namespaces/d/pods/p/exec"
                assert (await raw_request(p.address, "GET", exec_path)).status == 403

    run(scenario())


def test_no_spelling_of_exec_or_attach_reaches_the_api_server() -> None:
    from .test_paths import BYPASS_ATTEMPTS

    async def scenario() -> None:
        async with backend() as b, running_proxy(upstream(b.url)) as p:
            for spelling in BYPASS_ATTEMPTS:
                target = spelling
                for _ in range(4):  # follow redirects, as a client would
                    r = await raw_request(p.address, "POST", target)
                    if r.status != 301:
                        break
                    target = r.header("Location") or ""
                assert r.status in (400, 403), (spelling, r.status)
            for method in ("GET", "POST"):
                r = await raw_request(
                    p.address, method, "/api/v1/namespaces/default/pods/foo/%65xec",
                    [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
                )  # fmt: skip
                assert r.status == 403
            assert b.seen == []

    run(scenario())


def test_remembered_decisions_never_cross_requests() -> None:
    async def scenario() -> None:
        rules = FilterRules.from_flags(reject_methods="^DELETE$")
        async with backend() as b, running_proxy(upstream(b.url), ProxyConfig(rules=rules)) as p:
            for _ in range(2):  # the second round is answered from remembered decisions
                assert (await raw_request(p.address, "GET", "/api/v1/pods")).status == 200
                r = await raw_request(p.address, "GET", "/api/v1/pods", host="evil.com")
                assert r.status == 403
                assert (await raw_request(p.address, "DELETE", "/api/v1/pods")).status == 403
                r = await raw_request(p.address, "GET", "/api/v1/pods", host="[::1]:8001")
                assert r.status == 200
            assert [s.method for s in b.seen].count("DELETE") == 0

    run(scenario())
