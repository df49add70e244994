"""ClusterIP and NodePort allocation, as the Service REST storage does it.

Each range is split like upstream's allocators: a lower band kept for addresses
and ports that users ask for by value, and an upper band from which the server
hands out values itself, so an explicit ``clusterIP: 10.96.0.10`` in a manifest
rarely collides with one allocated earlier.  Dynamic allocation here is
sequential rather than random, which keeps tests and teaching material
reproducible.

The allocators only track what is in use; :class:`ServiceAllocations` keeps them in
step with the Services in the store by watching its events.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from kubenet.testing.apiserver.store import DELETED, Event

JsonObject = dict[str, Any]


class Exhausted(Exception):
    """No free value is left in a range."""


class IPRange:
    """One service CIDR."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        self.family = "IPv6" if self.network.version == 6 else "IPv4"
        self.used: set[str] = set()
        size = self.network.num_addresses
        # Upstream's band: min(max(16, size/16), 256) addresses reserved for static use.
        self._band = min(max(16, size // 16), 256)
        self._cursor = self._band + 1

    def __str__(self) -> str:
        return str(self.network)

    def _last_offset(self) -> int:
        # The IPv4 broadcast address is not a host; IPv6 has no broadcast.
        return self.network.num_addresses - (2 if self.network.version == 4 else 1)

    def contains(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        if addr.version != self.network.version or addr not in self.network:
            return False
        offset = int(addr) - int(self.network.network_address)
        return 1 <= offset <= self._last_offset()

    def first(self) -> str:
        """The first host address: what the built-in ``kubernetes`` Service uses."""
        return str(self.network.network_address + 1)

    def allocate(self, taken: Iterable[str] = ()) -> str:
        extra = set(taken)
        last = self._last_offset()
        span = last
        for step in range(span):
            offset = (self._cursor - 1 + step) % span + 1
            ip = str(self.network.network_address + offset)
            if ip not in self.used and ip not in extra:
                self._cursor = offset + 1
                return ip
        raise Exhausted(f"range {self.network} is full")


class PortRange:
    """The NodePort range."""

    def __init__(self, low: int = 30000, high: int = 32767) -> None:
        self.low, self.high = low, high
        self.used: set[int] = set()
        size = high - low + 1
        # Upstream's node-port band: min(max(16, size/32), 128).
        self._cursor = low + min(max(16, size // 32), 128)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high

    def allocate(self, taken: Iterable[int] = ()) -> int:
        extra = set(taken)
        size = self.high - self.low + 1
        for step in range(size):
            port = self.low + (self._cursor - self.low + step) % size
            if port not in self.used and port not in extra:
                self._cursor = port + 1
                return port
        raise Exhausted(f"range {self} is full")


def cluster_ips(svc: JsonObject) -> list[str]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if isinstance(ip, str) and ip and ip != "None"]


def node_ports(svc: JsonObject) -> list[int]:
    spec = svc.get("spec") or {}
    out = [p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)]
    hc = spec.get("healthCheckNodePort")
    return [p for p in [*out, hc] if isinstance(p, int) and p]


class ServiceAllocations:
    """The service CIDRs and NodePort range, kept in step with the stored Services."""

    def __init__(self, cidrs: Iterable[str], node_ports: PortRange) -> None:
        self.ranges = [IPRange(c) for c in cidrs]
        if not self.ranges:
            raise ValueError("at least one service CIDR is needed")
        self.node_ports = node_ports

    def range_for(self, family: str) -> IPRange | None:
        return next((r for r in self.ranges if r.family == family), None)

    def range_of(self, ip: str) -> IPRange | None:
        return next((r for r in self.ranges if r.contains(ip)), None)

    @property
    def families(self) -> list[str]:
        return [r.family for r in self.ranges]

    def on_event(self, event: Event) -> None:
        """Store listener: release what the old version held, claim what the new holds."""
        if event.old is not None:
            for ip in cluster_ips(event.old.obj):
                rng = self.range_of(ip)
                if rng is not None:
                    rng.used.discard(ip)
            for port in node_ports(event.old.obj):
                self.node_ports.used.discard(port)
        if event.type != DELETED:
            for ip in cluster_ips(event.new.obj):
                rng = self.range_of(ip)
                if rng is not None:
                    rng.used.add(ip)
            self.node_ports.used.update(node_ports(event.new.obj))
