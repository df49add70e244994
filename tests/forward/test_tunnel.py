"""Dialing the API server through a proxy: proxy-url and the environment, as client-go.

The proxies here are real ones on loopback (an HTTP CONNECT proxy and a SOCKS5 proxy,
relaying bytes), and the API server behind them speaks TLS: what the proxy relays is the
TLS stream, and the requests still arrive with the cluster's credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubenet.forward import (
    CredentialsError,
    FilterRules,
    KubeconfigOptions,
    ProxyConfig,
    Upstream,
    upstreams_for,
)
from kubenet.forward.tunnel import ProxyURL, proxy_for

from .support import Pki, backend, raw_request, run, running_proxy
from .test_credentials import b64, kubeconfig
from .test_server import SWITCH, raw_upgrade_backend

# --- the choice, as Go's http.ProxyFromEnvironment and client-go make it -------------------


def test_the_kubeconfigs_proxy_url_wins_over_the_environment() -> None:
    env = {"HTTPS_PROXY": "http://env-proxy:3128"}
    chosen = proxy_for("https://10.0.0.1:6443", "socks5://bob:pw@jump:1080", env)
    assert chosen == ProxyURL("socks5", "jump", 1080, "bob", "pw")
    assert "pw" not in repr(chosen)


@pytest.mark.parametrize(
    ("server", "env", "expected"),
    [
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128"}, "p:3128"),
        ("https://api.example.com", {"https_proxy": "p:8080"}, "p:8080"),  # no scheme: http
        ("https://api.example.com", {"HTTP_PROXY": "http://p:3128"}, None),  # wrong scheme
        ("http://api.example.com", {"HTTP_PROXY": "http://p:3128"}, "p:3128"),
        ("https://localhost:6443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://127.0.0.1:6443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://[::1]:6443", {"HTTPS_PROXY": "http://p:3128"}, None),
    ],
)
def test_the_environment_by_scheme_never_for_loopback(
    server: str, env: dict[str, str], expected: str | None
) -> None:
    chosen = proxy_for(server, None, env)
    assert (chosen.hostport if chosen else None) == expected


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("", True),
        ("*", False),
        ("example.com", False),  # the domain and its subdomains
        (".example.com", False),
        ("*.example.com", False),
        ("ample.com", True),  # not a suffix on a dot
        ("api.example.com:443", True),  # another port
        ("api.example.com:6443", False),
        ("other.org, api.example.com", False),
        ("10.0.0.0/8", True),  # a network excludes addresses, not names
    ],
)
def test_no_proxy_rules(no_proxy: str, proxied: bool) -> None:
    env = {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy}
    assert (proxy_for("https://api.example.com:6443", None, env) is not None) is proxied


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [("10.0.0.0/8", False), ("10.1.2.3", False), ("10.1.2.4", True), ("192.168.0.0/16", True)],
)
def test_no_proxy_addresses_and_networks(no_proxy: str, proxied: bool) -> None:
    env = {"HTTPS_PROXY": "http://p:3128", "no_proxy": no_proxy}
    assert (proxy_for("https://10.1.2.3:6443", None, env) is not None) is proxied


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:hunter2@p:3128", "https proxies are not supported"),
        ("ftp://user:hunter2@p", "is not http or socks5"),
        ("http://user:hunter2@p:99999", "invalid port"),
    ],
)
def test_unusable_proxy_urls_are_refused_without_their_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        ProxyURL.parse(url)
    assert "hunter2" not in str(caught.value)


# --- real proxies -----------------------------------------------------------------------------


@dataclass
class ForwardProxy:
    """An HTTP CONNECT and SOCKS5 proxy on loopback that records what it was asked."""

    credentials: tuple[str, str] | None = None
    targets: list[str] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                target = await self._socks5(reader, writer)
            else:
                target = await self._connect(first, reader, writer)
            if target is None:
                return
            host, port = target
            self.targets.append(f"{host}:{port}")
            up_reader, up_writer = await asyncio.open_connection(host, port)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _connect(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        head = (first + await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request, *lines = head.split("\r\n")
        method, target, _ = request.split(" ")
        assert method == "CONNECT"
        auth = next((v for n, _, v in (ln.partition(": ") for ln in lines)
                     if n.lower() == "proxy-authorization"), None)  # fmt: skip
        if auth is not None:
            self.logins.append(base64.b64decode(auth.split(" ", 1)[1]).decode())
        if self.credentials and (self.logins[-1:] != [":".join(self.credentials)]):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            await writer.drain()
            return None
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port)

    async def _socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        (count,) = await reader.readexactly(1)
        methods = await reader.readexactly(count)
        if self.credentials:
            if 2 not in methods:
                writer.write(b"\x05\xff")
                return None
            writer.write(b"\x05\x02")
            await reader.readexactly(1)
            user = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            self.logins.append(f"{user}:{password}")
            ok = (user, password) == self.credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return None
        else:
            writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        assert command == 1
        if kind == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", 1080))
        return host, port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


@contextlib.asynccontextmanager
async def forward_proxy(credentials: tuple[str, str] | None = None) -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy(credentials)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()


def _upstream_via(tmp_path: Path, server: str, pki: Pki, proxy_url: str) -> Upstream:
    """The upstream of a kubeconfig whose cluster has ``proxy-url``."""
    cfg = kubeconfig(
        tmp_path / "config",
        server,
        {"token": "abc123"},
        {"certificate-authority-data": b64(pki.ca), "proxy-url": proxy_url},
    )
    (up,) = upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
    return up


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_requests_go_through_the_kubeconfigs_proxy(tmp_path: Path, pki: Pki, scheme: str) -> None:
    async def scenario() -> None:
        async with (
            backend(pki.server_context()) as api,
            forward_proxy(("alice", "s3cret")) as fwd,
        ):
            proxy_url = f"{scheme}://alice:s3cret@127.0.0.1:{fwd.port}"
            up = _upstream_via(tmp_path, api.url, pki, proxy_url)
            async with running_proxy(up) as p:
                for _ in range(3):
                    r = await raw_request(p.address, "GET", "/api/v1/pods")
                    assert r.status == 200, r.body
            # TLS end to end through the tunnel: the API server saw the credentials...
            assert api.last.header("Authorization") == "Bearer abc123"
            # ...the proxy saw only where to, and who asked; the pool reused its tunnel.
            assert fwd.targets == [api.url.removeprefix("https://")]
            assert fwd.logins == ["alice:s3cret"]

    run(scenario())


def test_a_refusing_proxy_is_a_500_that_names_it_without_the_password(
    tmp_path: Path, pki: Pki
) -> None:
    async def scenario() -> None:
        async with backend(pki.server_context()) as api, forward_proxy(("alice", "right")) as fwd:
            for scheme, said in (("http", "refused CONNECT: 407"), ("socks5", "refused the user")):
                proxy_url = f"{scheme}://alice:wrong-one@127.0.0.1:{fwd.port}"
                up = _upstream_via(tmp_path, api.url, pki, proxy_url)
                async with running_proxy(up) as p:
                    r = await raw_request(p.address, "GET", "/api/v1/pods")
                assert r.status == 500
                assert said in r.body.decode() and "wrong-one" not in r.body.decode()
            assert api.seen == []

    run(scenario())


def test_upgrades_go_through_the_proxy_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with raw_upgrade_backend(SWITCH) as (url, heads), forward_proxy() as fwd:
            cfg = kubeconfig(
                tmp_path / "config",
                url,
                {"token": "abc123"},
                {"proxy-url": f"socks5://127.0.0.1:{fwd.port}"},
            )
            (up,) = upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
            config = ProxyConfig(rules=FilterRules.from_flags(reject_paths=""))
            async with running_proxy(up, config) as p:
                host, port = p.address.rsplit(":", 1)
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(
                    b"POST /api/v1/namespaces/d/pods/p/exec?command=sh HTTP/1.1\r\n"
                    b"Host: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
                )
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
                assert await reader.readexactly(5) == b"HELLO"
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"PING"
                writer.close()
            assert "Authorization: Bearer abc123" in heads[0].decode()
            assert fwd.targets == [url.removeprefix("http://")]

    run(scenario())


def test_an_https_proxy_url_is_a_clear_error(tmp_path: Path) -> None:
    cfg = kubeconfig(
        tmp_path / "config",
        "https://10.0.0.1:6443",
        {"token": "abc123"},
        {"proxy-url": "https://bob:hunter2@proxy.example:3128"},
    )
    with pytest.raises(CredentialsError, match="https proxies are not supported") as caught:
        upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
    assert "hunter2" not in str(caught.value)
