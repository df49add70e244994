"""Reaching the API server through a proxy: a kubeconfig's ``proxy-url``, or the environment.

kubectl proxy dials the API server the way client-go does: through the cluster's
``proxy-url`` when the kubeconfig has one (``http``, ``https`` or ``socks5``), else
through ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the server's scheme) unless ``NO_PROXY``
excludes the server; requests to ``localhost`` and loopback addresses are never sent
through an environment proxy. This module does the same for ``http`` and ``socks5``
proxies (an ``https`` proxy, TLS inside TLS, is refused with a clear message):

- :func:`proxy_for` decides (pure: the environment is an argument);
- :func:`open_tunnel` makes the connection: an HTTP ``CONNECT`` (RFC 9110) or a
  SOCKS5 ``CONNECT`` (RFC 1928, with RFC 1929 user and password), and hands back a
  socket connected end to end, on which TLS to the API server then starts as usual;
  :func:`dial_target` gives asyncio either that socket or the server's address.

Proxy credentials come from the URL's user information, as in Go; they are never part
of an error message.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

#: The most a proxy's answer to CONNECT may take before its blank line.
MAX_CONNECT_HEAD = 16 * 1024

_SOCKS_ERRORS = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class ProxyError(OSError):
    """The proxy could not be used: the message says why, without credentials."""


@dataclass(frozen=True)
class ProxyURL:
    """A proxy to dial through."""

    scheme: str  # "http" or "socks5"
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> ProxyURL:
        """Parse ``http://[user:pass@]host[:port]`` or ``socks5://...`` (ValueError if not).

        As Go's ``http.ProxyFromEnvironment``, a value without a scheme is taken as http.
        """
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "https":
            raise ValueError(f"proxy {_safe(url)}: https proxies are not supported (use http)")
        if scheme not in ("http", "socks5", "socks5h"):
            raise ValueError(f"proxy {_safe(url)}: scheme {scheme!r} is not http or socks5")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"proxy {_safe(url)}: invalid port") from None
        if not parts.hostname:
            raise ValueError(f"proxy {_safe(url)}: no host")
        default = 1080 if scheme.startswith("socks5") else 80
        return cls(
            "socks5" if scheme.startswith("socks5") else "http",
            parts.hostname,
            port or default,
            unquote(parts.username) if parts.username is not None else None,
            unquote(parts.password) if parts.password is not None else None,
        )


def _safe(url: str) -> str:
    """A proxy URL without its user information, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}"


def proxy_for(server: str, proxy_url: str | None, environ: Mapping[str, str]) -> ProxyURL | None:
    """The proxy to reach ``server`` through, as client-go picks it (None: go direct).

    ``proxy_url`` is the kubeconfig cluster's ``proxy-url``; without it the
    environment decides (``HTTPS_PROXY``/``https_proxy`` for an https server,
    ``HTTP_PROXY``/``http_proxy`` for http, ``NO_PROXY``/``no_proxy`` exceptions).
    Raises ValueError for a proxy URL that cannot be used.
    """
    if proxy_url:
        return ProxyURL.parse(proxy_url)
    parts = urlsplit(server)
    https = parts.scheme == "https"
    names = ("HTTPS_PROXY", "https_proxy") if https else ("HTTP_PROXY", "http_proxy")
    value = next((environ[n] for n in names if environ.get(n)), "")
    if not value:
        return None
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if https else 80)
    if not _use_proxy(host, port, environ.get("NO_PROXY") or environ.get("no_proxy") or ""):
        return None
    return ProxyURL.parse(value)


def _use_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Go's ``httpproxy`` rules: localhost and loopback never; then ``NO_PROXY``."""
    if host == "localhost":
        return False
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return False
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            network = None
        if network is not None and "/" in entry:
            if address is not None and address in network:
                return False
            continue
        name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]")
        if address is not None:
            try:
                if ipaddress.ip_address(name) == address:
                    return False
            except ValueError:
                pass
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return False
        elif host == name or host.endswith("." + name):
            return False
    return True


def _has_port(entry: str) -> bool:
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


# --- the handshakes ------------------------------------------------------------------------


def connect_request(proxy: ProxyURL, host: str, port: int) -> bytes:
    """The HTTP CONNECT request head for ``host:port``."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.username is not None:
        token = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(token).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect_status(head: bytes) -> tuple[int, str]:
    """The status code and reason of a CONNECT answer's head (ValueError if malformed)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"malformed answer to CONNECT: {line[:80]!r}")
    return int(code), reason


def socks5_greeting(proxy: ProxyURL) -> bytes:
    methods = [0, 2] if proxy.username is not None else [0]
    return bytes([5, len(methods), *methods])


def socks5_login(proxy: ProxyURL) -> bytes:
    user = (proxy.username or "").encode()
    password = (proxy.password or "").encode()
    if len(user) > 255 or len(password) > 255:
        raise ProxyError("socks5: user name or password longer than 255 bytes")
    return bytes([1, len(user)]) + user + bytes([len(password)]) + password


def socks5_connect(host: str, port: int) -> bytes:
    """A SOCKS5 CONNECT: an IP address as such, a name for the proxy to resolve."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise ProxyError("socks5: host name too long") from None
        target = bytes([3, len(name)]) + name
    else:
        kind = 1 if address.version == 4 else 4
        target = bytes([kind]) + address.packed
    return bytes([5, 1, 0]) + target + struct.pack("!H", port)


async def dial_target(
    proxy: ProxyURL | None, host: str, port: int, timeout: float
) -> dict[str, Any]:
    """Where asyncio is to connect (``create_connection`` / ``open_connection`` keyword
    arguments): ``host`` and ``port``, or a socket already tunnelled through ``proxy``."""
    if proxy is None:
        return {"host": host, "port": port}
    return {"sock": await open_tunnel(proxy, host, port, timeout)}


async def open_tunnel(proxy: ProxyURL, host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to ``host:port`` through ``proxy`` (non-blocking, ready for TLS)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    if not infos:
        raise ProxyError(f"proxyconnect tcp: no address for {proxy.hostport}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout or None):
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:
                raise ProxyError(f"proxyconnect tcp: dial {proxy.hostport}: {exc}") from None
            if proxy.scheme == "http":
                await _http_connect(loop, sock, proxy, host, port)
            else:
                await _socks5_connect(loop, sock, proxy, host, port)
    except BaseException:
        sock.close()
        raise
    return sock


async def _http_connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: ProxyURL, host: str, port: int
) -> None:
    await loop.sock_sendall(sock, connect_request(proxy, host, port))
    head = b""
    # Byte by byte up to the blank line: whatever follows it belongs to the tunnel.
    while not head.endswith(b"\r\n\r\n"):
        data = await loop.sock_recv(sock, 1)
        if not data:
            raise ProxyError(f"proxy {proxy.hostport} closed the connection during CONNECT")
        head += data
        if len(head) > MAX_CONNECT_HEAD:
            raise ProxyError(f"proxy {proxy.hostport}: answer to CONNECT too long")
    try:
        code, reason = connect_status(head)
    except ValueError as exc:
        raise ProxyError(f"proxy {proxy.hostport}: {exc}") from None
    if code != 200:
        raise ProxyError(f"proxy {proxy.hostport} refused CONNECT: {code} {reason}".rstrip())


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = await loop.sock_recv(sock, n - len(data))
        if not more:
            raise ProxyError("socks5: the proxy closed the connection")
        data += more
    return data


async def _socks5_connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: ProxyURL, host: str, port: int
) -> None:
    await loop.sock_sendall(sock, socks5_greeting(proxy))
    version, method = await _recv_exactly(loop, sock, 2)
    if version != 5:
        raise ProxyError(f"socks5: {proxy.hostport} is not a SOCKS5 proxy")
    if method == 2 and proxy.username is not None:
        await loop.sock_sendall(sock, socks5_login(proxy))
        _, status = await _recv_exactly(loop, sock, 2)
        if status != 0:
            raise ProxyError(f"socks5: {proxy.hostport} refused the user name and password")
    elif method != 0:
        raise ProxyError(f"socks5: {proxy.hostport} accepts none of our methods")
    await loop.sock_sendall(sock, socks5_connect(host, port))
    version, reply, _, kind = await _recv_exactly(loop, sock, 4)
    if version != 5:
        raise ProxyError("socks5: malformed reply")
    if reply != 0:
        why = _SOCKS_ERRORS.get(reply, f"unknown error {reply}")
        raise ProxyError(f"socks5: {proxy.hostport}: connect to {host}:{port}: {why}")
    # The bound address, which nobody needs, then the tunnel is open.
    if kind == 1:
        await _recv_exactly(loop, sock, 4 + 2)
    elif kind == 4:
        await _recv_exactly(loop, sock, 16 + 2)
    elif kind == 3:
        (length,) = await _recv_exactly(loop, sock, 1)
        await _recv_exactly(loop, sock, length + 2)
    else:
        raise ProxyError("socks5: malformed reply")
