"""The ServiceMap: the node-local view of every Service port.

This is the contract between "what Kubernetes says" (``kubenet.translate``) and
"what a backend programs" (``kubenet.render``).  Everything here is a frozen,
hashable dataclass, so two maps can be compared with ``==`` and a change is a set
difference (see :meth:`ServiceMap.diff`).  Nothing in this module does I/O and it
imports nothing else from kubenet.

IP addresses are kept as canonical strings (``str(ipaddress.ip_address(x))``);
the translator guarantees the canonical spelling, so string equality is address
equality and renderers can emit them verbatim.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

#: Upstream's default ClientIP affinity timeout (v1.DefaultClientIPServiceAffinitySeconds).
DEFAULT_AFFINITY_SECONDS = 10800


class Protocol(enum.StrEnum):
    """L4 protocols a Service port may use.

    ``Protocol.TCP.lower()`` gives the spelling iptables, nft and ipvsadm use.
    """

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class IPFamily(enum.StrEnum):
    """An IP family, spelled as the Kubernetes API spells it."""

    IPV4 = "IPv4"
    IPV6 = "IPv6"

    @classmethod
    def of(cls, ip: str) -> IPFamily:
        """The family of an address or CIDR in canonical text form."""
        return cls.IPV6 if ":" in ip else cls.IPV4


class TrafficPolicy(enum.StrEnum):
    """externalTrafficPolicy / internalTrafficPolicy."""

    CLUSTER = "Cluster"
    LOCAL = "Local"


class IPMode(enum.StrEnum):
    """status.loadBalancer.ingress[].ipMode (KEP-1860)."""

    VIP = "VIP"
    PROXY = "Proxy"


@dataclass(frozen=True, order=True)
class ServicePortName:
    """The identity of one Service port: ``namespace/name:port``.

    ``port`` is the Service port's *name* (possibly empty), as upstream keys it.
    """

    namespace: str
    name: str
    port: str
    protocol: Protocol

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}/{self.protocol.value}"

    @property
    def service(self) -> str:
        """``namespace/name`` of the owning Service."""
        return f"{self.namespace}/{self.name}"

    @property
    def upstream(self) -> str:
        """Upstream's ServicePortName.String(): ``namespace/name[:port]``.

        kube-proxy hashes this (plus the protocol) into chain names, so renderers that
        keep upstream's naming need exactly this spelling.
        """
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base


@dataclass(frozen=True, order=True)
class Endpoint:
    """One backend of one Service port, after named-port resolution."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    zone: str | None = None
    #: hints.forZones[].name, sorted.
    zone_hints: tuple[str, ...] = ()
    #: hints.forNodes[].name, sorted.
    node_hints: tuple[str, ...] = ()
    #: Whether the endpoint runs on the node this map was built for.
    is_local: bool = False

    def __str__(self) -> str:
        return self.address

    @property
    def address(self) -> str:
        """``ip:port``, with brackets for IPv6, as the tracer and kube-proxy print it."""
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    @property
    def family(self) -> IPFamily:
        return IPFamily.of(self.ip)


@dataclass(frozen=True, order=True)
class LoadBalancerIngress:
    """One status.loadBalancer.ingress IP."""

    ip: str
    ip_mode: IPMode = IPMode.VIP


@dataclass(frozen=True)
class ServicePort:
    """Everything a backend needs to program one Service port on one node.

    Endpoint *selection* has already happened in ``kubenet.translate``:
    ``cluster_endpoints`` are the ones Cluster-policy traffic may use (ready ones,
    topology applied, or serving+terminating as a fallback) and ``local_endpoints``
    the ones Local-policy traffic may use. ``endpoints`` keeps every endpoint seen,
    for display and for change detection. All tuples are sorted.
    """

    name: ServicePortName
    #: spec.clusterIPs, primary first; one per family at most.
    cluster_ips: tuple[str, ...]
    port: int
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    load_balancer_ingress: tuple[LoadBalancerIngress, ...] = ()
    #: spec.loadBalancerSourceRanges as canonical CIDRs.
    load_balancer_source_ranges: tuple[str, ...] = ()
    #: ClientIP affinity timeout in seconds; None when affinity is off.
    affinity_timeout: int | None = None
    external_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    internal_policy: TrafficPolicy = TrafficPolicy.CLUSTER
    health_check_node_port: int | None = None
    endpoints: tuple[Endpoint, ...] = ()
    cluster_endpoints: tuple[Endpoint, ...] = ()
    local_endpoints: tuple[Endpoint, ...] = ()
    #: True when some usable (ready, or serving+terminating) endpoint exists anywhere.
    has_any_endpoints: bool = False

    def __str__(self) -> str:
        return str(self.name)

    @property
    def protocol(self) -> Protocol:
        return self.name.protocol

    @property
    def session_affinity(self) -> bool:
        return self.affinity_timeout is not None

    @property
    def externally_accessible(self) -> bool:
        """Has a NodePort, an external IP or a VIP-mode load-balancer IP (upstream's definition)."""
        # Proxy-mode load-balancer IPs are the load balancer's business, not the node's
        # (KEP-1860), so upstream does not count them.
        return (
            self.node_port is not None
            or bool(self.external_ips)
            or any(i.ip_mode is IPMode.VIP for i in self.load_balancer_ingress)
        )

    @property
    def external_policy_local(self) -> bool:
        return self.externally_accessible and self.external_policy is TrafficPolicy.LOCAL

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_policy is TrafficPolicy.LOCAL

    def cluster_ip(self, family: IPFamily) -> str | None:
        """The ClusterIP of one family, if the Service has one."""
        for ip in self.cluster_ips:
            if IPFamily.of(ip) is family:
                return ip
        return None

    def for_family(self, family: IPFamily) -> ServicePort:
        """This port with only the addresses and endpoints of one family.

        A dual-stack Service is programmed once per family; each family's renderer
        works on this single-family view. ``has_any_endpoints`` is judged again for
        the family, as upstream's per-family proxier would. A port that is already of
        one family is returned as it is: renderers call this for every port of a
        large map, and the check costs less than the copy.
        """
        v6 = family is IPFamily.IPV6
        if all((":" in a) == v6 for a in self._addresses()) and all(
            (":" in e.ip) == v6 for e in self.endpoints
        ):
            return self

        def keep(ips: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(ip for ip in ips if IPFamily.of(ip) is family)

        def keep_eps(eps: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
            return tuple(ep for ep in eps if ep.family is family)

        endpoints = keep_eps(self.endpoints)
        return ServicePort(
            name=self.name,
            cluster_ips=keep(self.cluster_ips),
            port=self.port,
            node_port=self.node_port,
            external_ips=keep(self.external_ips),
            load_balancer_ingress=tuple(
                i for i in self.load_balancer_ingress if IPFamily.of(i.ip) is family
            ),
            load_balancer_source_ranges=keep(self.load_balancer_source_ranges),
            affinity_timeout=self.affinity_timeout,
            external_policy=self.external_policy,
            internal_policy=self.internal_policy,
            health_check_node_port=self.health_check_node_port,
            endpoints=endpoints,
            cluster_endpoints=keep_eps(self.cluster_endpoints),
            local_endpoints=keep_eps(self.local_endpoints),
            has_any_endpoints=any(e.ready or (e.serving and e.terminating) for e in endpoints),
        )

    def _addresses(self) -> tuple[str, ...]:
        """Every address and CIDR of the port itself (not its endpoints)."""
        return (
            *self.cluster_ips,
            *self.external_ips,
            *(i.ip for i in self.load_balancer_ingress),
            *self.load_balancer_source_ranges,
        )


@dataclass(frozen=True)
class MapDiff:
    """What changed between two ServiceMaps, by service port key."""

    added: frozenset[ServicePortName]
    removed: frozenset[ServicePortName]
    changed: frozenset[ServicePortName]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    @property
    def touched(self) -> frozenset[ServicePortName]:
        return self.added | self.removed | self.changed


@dataclass(frozen=True)
class ServiceMap:
    """Every Service port this node programs, sorted by key.

    Iterating yields :class:`ServicePort` in key order, so anything rendered from a
    map is deterministic.
    """

    ports: tuple[ServicePort, ...] = ()

    @classmethod
    def of(cls, ports: list[ServicePort] | tuple[ServicePort, ...]) -> ServiceMap:
        """Build a map from ports in any order (duplicate keys: the last one wins)."""
        by_key = {p.name: p for p in ports}
        return cls(tuple(by_key[k] for k in sorted(by_key)))

    # Derived and cached in the instance __dict__, so it takes no part in equality
    # or hashing (dataclass eq/hash only look at fields).
    @cached_property
    def index(self) -> dict[ServicePortName, ServicePort]:
        return {p.name: p for p in self.ports}

    def __iter__(self) -> Iterator[ServicePort]:
        return iter(self.ports)

    def __len__(self) -> int:
        return len(self.ports)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def get(self, key: ServicePortName) -> ServicePort | None:
        return self.index.get(key)

    def keys(self) -> frozenset[ServicePortName]:
        return frozenset(self.index)

    def for_family(self, family: IPFamily) -> ServiceMap:
        """The single-family view: ports with a ClusterIP of that family, trimmed to it."""
        return ServiceMap(
            tuple(p.for_family(family) for p in self.ports if p.cluster_ip(family) is not None)
        )

    def diff(self, newer: ServiceMap) -> MapDiff:
        """The keys added, removed and changed going from ``self`` to ``newer``."""
        old, new = self.index, newer.index
        added = frozenset(new.keys() - old.keys())
        removed = frozenset(old.keys() - new.keys())
        changed = frozenset(k for k in new.keys() & old.keys() if new[k] != old[k])
        return MapDiff(added, removed, changed)
