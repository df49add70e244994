"""``/healthz``, ``/livez`` and the health-check node ports, answering as upstream's do.

Upstream's ``pkg/proxy/healthcheck``:

* The proxy is healthy while it has no update queued, or the oldest queued update is
  younger than the health timeout (twice the sync period); an update is queued when a
  Service or EndpointSlice event arrives and cleared by a successful sync.
* ``/healthz`` is also unhealthy when the node is not eligible: the Node object is
  missing, being deleted, or tainted ``ToBeDeletedByClusterAutoscaler``. ``/livez``
  ignores the node.
* Both answer JSON (``json.Marshal`` of upstream's ProxyHealth: ``lastUpdated``,
  ``currentTime``, ``nodeEligible`` (``/healthz`` only), ``healthy``, and ``status``
  per IP family), 200 or 503, with ``X-Content-Type-Options: nosniff``. When healthy,
  ``lastUpdated`` is the current time, for compatibility with older releases.
* Each Local-policy load balancer's ``healthCheckNodePort`` answers with the number of
  node-local ready endpoints (distinct addresses): 200 when there are some and the
  proxy is healthy, 503 otherwise, the body upstream's (tab-indented) service JSON and
  the count also in ``X-Load-Balancing-Endpoint-Weight``.

Times are written as Go writes a ``time.Time`` in JSON (RFC 3339 with nanoseconds,
trailing zeros dropped), in UTC.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kubenet.model import IPFamily, ServicePort

log = logging.getLogger(__name__)

#: The taint the cluster autoscaler puts on a node it is about to delete.
TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
_HEADERS = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}


def go_time(seconds: float | None) -> str:
    """A Unix time as Go's ``time.Time`` marshals to JSON (RFC 3339, nanoseconds, UTC)."""
    if seconds is None:
        return "0001-01-01T00:00:00Z"
    whole = int(seconds // 1)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    stamp = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{stamp}{fraction}Z"


def node_eligible(node: Mapping[str, Any] | None) -> bool:
    """Upstream's NodeEligible: the Node exists, is not being deleted, is not doomed."""
    if not isinstance(node, Mapping):
        return False
    meta = node.get("metadata")
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return False
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, Mapping) else None
    for taint in taints if isinstance(taints, list) else ():
        if isinstance(taint, Mapping) and taint.get("key") == TO_BE_DELETED_TAINT:
            return False
    return True


class ProxyHealth:
    """The proxier's health per IP family, as upstream's ProxyHealthServer keeps it."""

    def __init__(
        self,
        timeout: float,
        families: Iterable[IPFamily],
        node: Callable[[], Mapping[str, Any] | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout = timeout
        self.families = tuple(families)
        self.node = node
        self.clock = clock
        self._last_updated: dict[IPFamily, float] = {}
        self._oldest_pending: dict[IPFamily, float] = {}

    def queued_update(self) -> None:
        """A change arrived that a sync must still program."""
        now = self.clock()
        for family in self.families:
            self._oldest_pending.setdefault(family, now)

    def updated(self) -> None:
        """A sync programmed everything queued so far."""
        now = self.clock()
        for family in self.families:
            self._oldest_pending.pop(family, None)
            self._last_updated[family] = now

    def health(self) -> dict[str, Any]:
        """Upstream's ProxyHealth, as the JSON object it marshals to (no nodeEligible)."""
        now = self.clock()
        healthy = True
        status: dict[str, Any] = {}
        for family in sorted(self._last_updated):
            pending = self._oldest_pending.get(family)
            ok = pending is None or now - pending < self.timeout
            healthy &= ok
            status[family.value] = {
                "lastUpdated": go_time(self._last_updated[family]),
                "healthy": ok,
            }
        last = max(self._last_updated.values(), default=None)
        out: dict[str, Any] = {"lastUpdated": go_time(last), "currentTime": go_time(now)}
        out["healthy"] = healthy
        if status:
            out["status"] = status
        return out

    @property
    def healthy(self) -> bool:
        return bool(self.health()["healthy"])

    def healthz(self) -> tuple[int, str]:
        health = self.health()
        eligible = node_eligible(self.node())
        ok = health["healthy"] and eligible
        if ok:
            health["lastUpdated"] = go_time(self.clock())
        # Go marshals struct fields in declaration order: nodeEligible comes third.
        body = {
            "lastUpdated": health["lastUpdated"],
            "currentTime": health["currentTime"],
            "nodeEligible": eligible,
            **{k: v for k, v in health.items() if k not in ("lastUpdated", "currentTime")},
        }
        return (200 if ok else 503), json.dumps(body, separators=(",", ":"))

    def livez(self) -> tuple[int, str]:
        health = self.health()
        if health["healthy"]:
            health["lastUpdated"] = go_time(self.clock())
        return (200 if health["healthy"] else 503), json.dumps(health, separators=(",", ":"))


def health_app(health: ProxyHealth, counter: Callable[[str, int], None]) -> web.Application:
    """The ``--healthz-bind-address`` server: ``/healthz`` and ``/livez``."""

    async def healthz(request: web.Request) -> web.Response:
        code, body = health.healthz()
        counter("healthz", code)
        return web.Response(status=code, body=body.encode(), headers=_HEADERS)

    async def livez(request: web.Request) -> web.Response:
        code, body = health.livez()
        counter("livez", code)
        return web.Response(status=code, body=body.encode(), headers=_HEADERS)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    return app


# ----------------------------------------------------------------- health-check ports


def service_json(namespace: str, name: str, endpoints: int, healthy: bool) -> str:
    """Upstream's body, byte for byte (a dedented Go template, tab-indented)."""
    return (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": {json.dumps(namespace)},\n'
        f'\t\t"name": {json.dumps(name)}\n'
        "\t},\n"
        f'\t"localEndpoints": {endpoints},\n'
        f'\t"serviceProxyHealthy": {"true" if healthy else "false"}\n'
        "}"
    )


@dataclass(frozen=True)
class HealthCheck:
    """One Service's health-check node port and its node-local ready endpoints."""

    port: int
    endpoints: int


def health_checks(ports: Iterable[ServicePort]) -> dict[tuple[str, str], HealthCheck]:
    """The health checks the ports ask for, by Service (upstream's LocalReadyEndpoints).

    Only Local-policy load balancers have a ``healthCheckNodePort``. Endpoints are
    counted by distinct address over all the Service's ports, ready ones only.
    """
    ports_of: dict[tuple[str, str], int] = {}
    local: dict[tuple[str, str], set[str]] = {}
    for port in ports:
        if port.health_check_node_port is None:
            continue
        key = (port.name.namespace, port.name.name)
        ports_of[key] = port.health_check_node_port
        local.setdefault(key, set()).update(
            ep.ip for ep in port.endpoints if ep.is_local and ep.ready
        )
    return {key: HealthCheck(p, len(local[key])) for key, p in ports_of.items()}


class ServiceHealthServers:
    """One small HTTP server per health-check node port, opened and closed as Services change."""

    def __init__(self, health: ProxyHealth, addresses: Iterable[str] = ()) -> None:
        self.health = health
        #: Where to listen; empty: every address.
        self.addresses = tuple(addresses)
        self._checks: dict[tuple[str, str], HealthCheck] = {}
        self._servers: dict[tuple[str, str], tuple[int, list[asyncio.AbstractServer]]] = {}

    @property
    def ports(self) -> dict[tuple[str, str], int]:
        return {key: port for key, (port, _) in self._servers.items()}

    async def sync(self, checks: Mapping[tuple[str, str], HealthCheck]) -> None:
        """Serve exactly ``checks``: close what is gone or moved, open what is new."""
        self._checks = dict(checks)
        for key, (port, servers) in list(self._servers.items()):
            wanted = checks.get(key)
            if wanted is None or wanted.port != port:
                log.info("closing health check for %s/%s on port %d", *key, port)
                for server in servers:
                    server.close()
                del self._servers[key]
        for key, check in checks.items():
            if key in self._servers:
                continue
            try:
                servers = await self._listen(key, check.port)
            except OSError as exc:
                # Upstream logs, sends an event and tries again on the next sync.
                log.error(
                    "failed to start health check for %s/%s on port %d: %s", *key, check.port, exc
                )
                continue
            log.info("opened health check for %s/%s on port %d", *key, check.port)
            self._servers[key] = (check.port, servers)

    async def _listen(self, key: tuple[str, str], port: int) -> list[asyncio.AbstractServer]:
        async def handle(request: web.BaseRequest) -> web.Response:
            check = self._checks.get(key)
            count = check.endpoints if check is not None else 0
            healthy = self.health.healthy
            body = service_json(key[0], key[1], count, healthy)
            headers = {**_HEADERS, "X-Load-Balancing-Endpoint-Weight": str(count)}
            status = 200 if count and healthy else 503
            return web.Response(status=status, body=body.encode(), headers=headers)

        loop = asyncio.get_running_loop()
        servers: list[asyncio.AbstractServer] = []
        try:
            if not self.addresses:
                # Every address of both families on one socket, as Go listens on ":port"
                # (a cluster may have a thousand of these ports: one descriptor each).
                sock = _any_address_socket(port)
                servers.append(await loop.create_server(web.Server(handle), sock=sock))
            for host in self.addresses:
                servers.append(
                    await loop.create_server(web.Server(handle), host, port, reuse_address=True)
                )
        except OSError:
            for server in servers:
                server.close()
            raise
        return servers

    async def close(self) -> None:
        await self.sync({})


def _any_address_socket(port: int) -> socket.socket:
    """A listening TCP socket on every IPv6 and IPv4 address (IPv4 alone without IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address: tuple[str, int] = ("0.0.0.0", port)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
