"""Kubernetes API objects -> the ServiceMap of one node.

Input is what the API server sends, as plain dicts: Services (v1), EndpointSlices
(discovery.k8s.io/v1) and the Node (v1) this map is built for. Output is a
:class:`~kubenet.model.ServiceMap` plus the objects (or parts of objects) that could
not be used, each with a reason a person can act on. Nothing here raises on bad
input and nothing does I/O.

The semantics are kube-proxy's (pkg/proxy: servicechangetracker.go, serviceport.go,
endpointslicecache.go, topology.go), with these choices where it leaves room:

* One map serves both IP families. kube-proxy runs one proxier per family, so
  endpoint selection (readiness fallback, topology, Local policy) is done per family
  and the results are joined; ``ServicePort.for_family`` then gives exactly the
  single-family view upstream's proxier has. Endpoints of a family the Service has
  no ClusterIP of are left out, as that family's proxier never programs the Service.
* Topology comes from EndpointSlice hints alone. Since ServiceTrafficDistribution
  (GA in 1.33) kube-proxy no longer reads ``spec.trafficDistribution`` or the
  ``service.kubernetes.io/topology-mode`` annotation: the EndpointSlice controller
  turns those into hints, and the hints decide. Node hints (PreferSameNode) win over
  zone hints, as with the PreferSameTrafficDistribution gate on.
* ``conditions.serving`` missing means true, as endpointslicecache.go reads it.
* An address seen twice for one Service port (an endpoint moving between slices, or
  a Pod IP reused while the old Pod terminates) is kept once. Upstream prefers the
  non-terminating copy and leaves other ties to map order; here ties go to the ready,
  then the local copy, then a fixed order, so the result never depends on input order.
* Addresses are spelled as Go's ``net.IP.String()`` spells them, which is also
  ``str(ipaddress.ip_address(x))`` except that an IPv4-mapped IPv6 address becomes
  the plain IPv4 address. Legacy IPv4 text with leading zeros is read as decimal,
  like upstream's ParseIPSloppy.
* Anything malformed is reported: a bad Service-level field drops the Service, a bad
  port drops that port, a bad endpoint drops that endpoint. Headless and ExternalName
  Services, FQDN slices and slices whose Service does not exist are ignored without a
  report, as upstream ignores them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, TypeVar, cast

from kubenet.model import (
    DEFAULT_AFFINITY_SECONDS,
    Endpoint,
    IPMode,
    LoadBalancerIngress,
    Protocol,
    ServiceMap,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)

__all__ = [
    "NodeInfo",
    "Skipped",
    "Translation",
    "node_info",
    "translate",
    "translate_service",
]

_SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_ZONE_LABEL = "topology.kubernetes.io/zone"
#: v1.MaxClientIPServiceAffinitySeconds: the API server's upper bound for the timeout.
_MAX_AFFINITY_SECONDS = 86400
_PREFER_SAME_NODE = "PreferSameNode"
_PREFER_SAME_ZONE = "PreferSameZone"
_SERVICE = "Service"
_SLICE = "EndpointSlice"
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_NOTHING: frozenset[str] = frozenset()
_LOCAL = TrafficPolicy.LOCAL
_CLUSTER = TrafficPolicy.CLUSTER
# Enum members by their API spelling: a lookup is much cheaper than Enum.__call__.
_PROTOCOLS = MappingProxyType({p.value: p for p in Protocol})
_POLICIES = MappingProxyType({p.value: p for p in TrafficPolicy})
_IP_MODES = MappingProxyType({m.value: m for m in IPMode})


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class NodeInfo:
    """What the translator (and the renderers' options) need to know about this node."""

    name: str
    #: Canonical addresses from status.addresses: InternalIP ones, then ExternalIP ones.
    ips: tuple[str, ...] = ()
    #: The topology.kubernetes.io/zone label, if set.
    zone: str | None = None
    #: All labels, sorted by key.
    labels: tuple[tuple[str, str], ...] = ()
    #: spec.podCIDRs (or spec.podCIDR) as canonical CIDRs, for --detect-local-mode NodeCIDR.
    pod_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, order=True)
class Skipped:
    """An object, or a part of one, that the translation could not use."""

    kind: str
    namespace: str
    name: str
    reason: str

    def __str__(self) -> str:
        name = self.name or "<unnamed>"
        who = f"{self.namespace}/{name}" if self.namespace else name
        return f"{self.kind} {who}: {self.reason}"


@dataclass(frozen=True)
class Translation:
    """The map for one node and what was left out of it."""

    service_map: ServiceMap
    #: Sorted, so that two translations of the same objects compare equal.
    skipped: tuple[Skipped, ...]


# --------------------------------------------------------------------------- addresses


class _Addresses(dict[str, str | None]):
    """Canonical spellings of IP addresses (None: not an address), for one translation.

    Parsing is the costly part of translating endpoints; an address seen again (a Pod
    behind several Service ports or Services) is parsed once, and a hit costs one
    dict lookup.
    """

    def __missing__(self, text: str) -> str | None:
        # Nearly every address arrives already in canonical dotted-quad form; the
        # pattern recognises that cheaply and keeps the very string it was given.
        canon = self[text] = text if _DOTTED_QUAD(text) else _canonical_ip(text)
        return canon


_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: Matches exactly the canonical spelling of an IPv4 address (no leading zeros).
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}").fullmatch


def _canonical_ip(text: str) -> str | None:
    # inet_pton/inet_ntop are an order of magnitude faster than ipaddress, and their
    # strict parsers accept nothing Go's parser rejects. The output of inet_ntop is
    # the canonical spelling for IPv4 and (RFC 5952) for IPv6, except where libc
    # prints an embedded IPv4 address; those rare forms go the slow way.
    if ":" in text:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            return _canonical_ip_slow(text)
        if packed.startswith(_MAPPED_PREFIX):
            return socket.inet_ntop(socket.AF_INET, packed[12:])
        canon = socket.inet_ntop(socket.AF_INET6, packed)
        return canon if "." not in canon else _canonical_ip_slow(text)
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return _canonical_ip_slow(text)


def _canonical_ip_slow(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return _sloppy_ipv4(text)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:  # Go's parser has no zones.
            return None
        if ip.ipv4_mapped is not None:  # Go prints these as IPv4.
            return str(ip.ipv4_mapped)
    return str(ip)


def _sloppy_ipv4(text: str) -> str | None:
    # Objects stored before the API server tightened IP validation may carry IPv4
    # octets with leading zeros; upstream reads them as decimal, so do we.
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    octets = [int(p) for p in parts]
    if any(o > 255 for o in octets):
        return None
    return ".".join(str(o) for o in octets)


def _canonical_cidr(text: str) -> str | None:
    """A CIDR in canonical form with the host bits cleared, or None when invalid."""
    address, slash, prefix = text.partition("/")
    # ipaddress also takes a bare address or a dotted netmask; Kubernetes does not.
    if not slash or not (prefix.isascii() and prefix.isdigit()):
        return None
    ip = _canonical_ip(address)
    if ip is None:
        return None
    try:
        return str(ipaddress.ip_network(f"{ip}/{int(prefix)}", strict=False))
    except ValueError:
        return None


def _family_name(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


# --------------------------------------------------------------------------- reading fields


_T = TypeVar("_T")


def _new(cls: type[_T], fields: dict[str, Any]) -> _T:
    """``cls(**fields)`` for the model's frozen dataclasses, built the fast way.

    A frozen dataclass's ``__init__`` stores every field through
    ``object.__setattr__``; for the 100k endpoints of a large cluster that alone was a
    third of the translation. Filling the new instance's ``__dict__`` gives the very
    same object (same fields, equal, same hash) several times faster. Every field must
    be given; the tests check that the result still equals ``cls(**fields)``, so a
    model change that breaks this (slots, ``__post_init__``) cannot go unnoticed.
    """
    obj: _T = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


class _Invalid(Exception):
    """Something in an object cannot be used; the message says what and where."""


def _show(value: object) -> str:
    """A short, JSON-like rendering of a bad value for a reason text."""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(f"{path} is not an object: {_show(value)}")
    return value


def _list(value: object, path: str) -> list[Any] | tuple[Any, ...]:
    if type(value) is list:
        return value
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _Invalid(f"{path} is not a list: {_show(value)}")
    return value


def _str_list(value: object, path: str) -> list[str] | tuple[str, ...]:
    items = _list(value, path)
    for i, item in enumerate(items):
        if type(item) is not str:
            raise _Invalid(f"{path}[{i}] is not a string: {_show(item)}")
    return items


def _opt_str(value: object, path: str) -> str | None:
    """A string field; missing and empty are both None (Go cannot tell them apart)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{path} is not a string: {_show(value)}")
    return value


def _port_error(value: object) -> str | None:
    """What is wrong with a port number (to follow its path in a reason), or None."""
    if type(value) is not int:  # (not isinstance: a bool is an int in Python, not in JSON)
        return f"is not an integer: {_show(value)}"
    if not 1 <= value <= 65535:
        return f"{value} is out of range 1-65535"
    return None


def _port(value: object, path: str) -> int:
    problem = _port_error(value)
    if problem is not None:
        raise _Invalid(f"{path} {problem}")
    assert isinstance(value, int)  # checked by _port_error
    return value


def _opt_port(value: object, path: str) -> int | None:
    """A port that may be unset (missing or 0)."""
    if value is None or (value == 0 and type(value) is int):
        return None
    return _port(value, path)


def _metadata(obj: object) -> tuple[str, str]:
    """(namespace, name) of an object; raises _Invalid when either is missing."""
    if type(obj) is not dict and not isinstance(obj, Mapping):
        raise _Invalid(f"is not an object: {_show(obj)}")
    meta = _mapping(obj.get("metadata"), "metadata")
    name = _opt_str(meta.get("name"), "metadata.name")
    namespace = _opt_str(meta.get("namespace"), "metadata.namespace")
    if not name:
        raise _Invalid("has no metadata.name")
    if not namespace:
        raise _Invalid("has no metadata.namespace")
    return namespace, name


def _loose_metadata(obj: object) -> tuple[str, str]:
    """Whatever namespace and name an object has, for naming it in a report."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return "", ""
    namespace, name = meta.get("namespace"), meta.get("name")
    return (
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )


def _slice_owner(endpoint_slice: object) -> tuple[str, str, str]:
    """(namespace, slice name, owning Service name) of an EndpointSlice."""
    namespace, name = _metadata(endpoint_slice)
    assert isinstance(endpoint_slice, Mapping)  # checked by _metadata
    labels = _mapping(
        _mapping(endpoint_slice.get("metadata"), "metadata").get("labels"), "metadata.labels"
    )
    service = _opt_str(labels.get(_SERVICE_NAME_LABEL), f"label {_SERVICE_NAME_LABEL}")
    if not service:
        raise _Invalid(f"has no {_SERVICE_NAME_LABEL} label, so it belongs to no Service")
    return namespace, name, service


# --------------------------------------------------------------------------- nodes


def node_info(node: Mapping[str, Any] | None, name: str) -> NodeInfo:
    """The parts of a Node object the translator and renderers use.

    Fields that are malformed are left out rather than reported: a node with an
    odd address still has a name, and the name is what matters most.
    """
    if not isinstance(node, Mapping):
        return NodeInfo(name)
    meta = node.get("metadata")
    raw_labels = meta.get("labels") if isinstance(meta, Mapping) else None
    labels = (
        tuple(
            sorted(
                (k, v) for k, v in raw_labels.items() if isinstance(k, str) and isinstance(v, str)
            )
        )
        if isinstance(raw_labels, Mapping)
        else ()
    )
    zone = dict(labels).get(_ZONE_LABEL) or None

    status = node.get("status")
    addresses = status.get("addresses") if isinstance(status, Mapping) else None
    ips: list[str] = []
    for wanted in ("InternalIP", "ExternalIP"):
        for address in addresses if isinstance(addresses, list) else ():
            if not isinstance(address, Mapping) or address.get("type") != wanted:
                continue
            text = address.get("address")
            ip = _canonical_ip(text) if isinstance(text, str) else None
            if ip is not None and ip not in ips:
                ips.append(ip)

    spec = node.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    raw_cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    cidrs: list[str] = []
    for text in raw_cidrs if isinstance(raw_cidrs, list) else ():
        cidr = _canonical_cidr(text) if isinstance(text, str) else None
        if cidr is not None and cidr not in cidrs:
            cidrs.append(cidr)

    return NodeInfo(name, tuple(ips), zone, labels, tuple(cidrs))


# --------------------------------------------------------------------------- services


@dataclass(slots=True)
class _Service:
    """The Service-level fields every port of a Service shares, already validated."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    external_ips: tuple[str, ...]
    ingress: tuple[LoadBalancerIngress, ...]
    source_ranges: tuple[str, ...]
    affinity_timeout: int | None
    external_policy: TrafficPolicy
    internal_policy: TrafficPolicy
    health_check_node_port: int | None
    #: "IPv4" / "IPv6" of the ClusterIPs, sorted.
    families: tuple[str, ...]
    #: Families with an external IP or a VIP-mode load-balancer IP: the ones in which
    #: every port is externally accessible, node port or not.
    exposed: frozenset[str]


def _read_service(
    namespace: str, name: str, service: Mapping[str, Any], addrs: _Addresses
) -> _Service | None:
    """Service-level fields; None for Services kube-proxy does not proxy at all."""
    spec = service.get("spec")
    if spec is None:
        raise _Invalid("has no spec")
    spec = _mapping(spec, "spec")
    get = spec.get

    svc_type = _opt_str(get("type"), "spec.type") or "ClusterIP"
    if svc_type not in _SERVICE_TYPES:
        raise _Invalid(f"spec.type {_show(svc_type)} is not one of {', '.join(_SERVICE_TYPES)}")

    # ShouldSkipService: no ClusterIP ("None" or unset) or ExternalName -> not proxied.
    raw_ips = _str_list(get("clusterIPs"), "spec.clusterIPs")
    primary = _opt_str(get("clusterIP"), "spec.clusterIP") or (raw_ips[0] if raw_ips else None)
    if not primary or primary == "None" or svc_type == "ExternalName":
        return None
    cluster_ips = _cluster_ips(spec, primary, raw_ips, addrs)

    raw = get("externalIPs")
    external_ips = _ip_list(raw, "spec.externalIPs", addrs) if raw else ()
    ingress: tuple[LoadBalancerIngress, ...] = ()
    source_ranges: tuple[str, ...] = ()
    if svc_type == "LoadBalancer":
        ingress = _ingress(service, addrs)
        source_ranges = _source_ranges(spec)

    timeout: int | None = None
    affinity = get("sessionAffinity")
    if affinity == "ClientIP":
        config = _mapping(get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
        client_ip = _mapping(config.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
        timeout = _affinity_timeout(client_ip.get("timeoutSeconds"))
    elif affinity is not None and affinity != "None" and affinity != "":
        raise _Invalid(f"spec.sessionAffinity {_show(affinity)} is not one of None, ClientIP")

    etp = _policy(get("externalTrafficPolicy"), "spec.externalTrafficPolicy")
    itp = _policy(get("internalTrafficPolicy"), "spec.internalTrafficPolicy")
    # apiservice.ExternallyAccessible: the external policy means something only here.
    external_local = etp is _LOCAL and (
        svc_type == "NodePort"
        or svc_type == "LoadBalancer"
        or (svc_type == "ClusterIP" and bool(external_ips))
    )
    health_check: int | None = None
    if svc_type == "LoadBalancer" and external_local:
        # Upstream logs and carries on when the port is missing; so do we.
        health_check = _opt_port(get("healthCheckNodePort"), "spec.healthCheckNodePort")

    families = (
        (_family_name(cluster_ips[0]),)
        if len(cluster_ips) == 1
        else tuple(sorted({_family_name(ip) for ip in cluster_ips}))
    )
    exposed = (
        frozenset(
            [_family_name(ip) for ip in external_ips]
            + [_family_name(i.ip) for i in ingress if i.ip_mode is IPMode.VIP]
        )
        if external_ips or ingress
        else _NOTHING
    )
    # (Positional: this is the hot path, and _Service is ours.)
    return _Service(
        namespace,
        name,
        svc_type,
        cluster_ips,
        external_ips,
        ingress,
        source_ranges,
        timeout,
        _LOCAL if external_local else _CLUSTER,
        itp,
        health_check,
        families,
        exposed,
    )


def _cluster_ips(
    spec: Mapping[str, Any], primary: str, raw_ips: Sequence[str], addrs: _Addresses
) -> tuple[str, ...]:
    """spec.clusterIPs paired with spec.ipFamilies (GetClusterIPByFamily), primary first."""
    families = _list(spec.get("ipFamilies"), "spec.ipFamilies")
    texts = raw_ips or (primary,)
    if families:
        # Upstream takes the IP at the index of each listed family; extra IPs are unused.
        texts = texts[: len(families)]
    result: list[str] = []
    seen: set[str] = set()
    for i, text in enumerate(texts):
        ip = addrs[text] if text else None
        family = _family_name(ip) if ip else ""
        if ip is None or (families and families[i] != family) or family in seen:
            path = f"spec.clusterIPs[{i}]" if raw_ips else "spec.clusterIP"
            if ip is None:
                raise _Invalid(f"{path} {_show(text)} is not a valid IP address")
            if family in seen:
                raise _Invalid(f"spec.clusterIPs has two {family} addresses")
            raise _Invalid(
                f"{path} {ip} is not of family spec.ipFamilies[{i}] {_show(families[i])}"
            )
        seen.add(family)
        result.append(ip)
    if raw_ips and spec.get("clusterIP") and addrs[primary] != result[0]:
        raise _Invalid(f"spec.clusterIP {_show(primary)} is not spec.clusterIPs[0] {result[0]}")
    return tuple(result)


def _ip_list(value: object, path: str, addrs: _Addresses) -> tuple[str, ...]:
    ips: set[str] = set()
    for i, text in enumerate(_list(value, path)):
        ip = addrs[text] if isinstance(text, str) else None
        if ip is None:
            raise _Invalid(f"{path}[{i}] {_show(text)} is not a valid IP address")
        ips.add(ip)
    return tuple(sorted(ips))


def _ingress(service: Mapping[str, Any], addrs: _Addresses) -> tuple[LoadBalancerIngress, ...]:
    status = _mapping(service.get("status"), "status")
    balancer = _mapping(status.get("loadBalancer"), "status.loadBalancer")
    found: set[LoadBalancerIngress] = set()
    for i, raw in enumerate(_list(balancer.get("ingress"), "status.loadBalancer.ingress")):
        path = f"status.loadBalancer.ingress[{i}]"
        entry = _mapping(raw, path)
        text = _opt_str(entry.get("ip"), f"{path}.ip")
        if text is None:  # hostname-only ingress: nothing for a proxy to program
            continue
        ip = addrs[text]
        if ip is None:
            raise _Invalid(f"{path}.ip {_show(text)} is not a valid IP address")
        mode = _IP_MODES.get(_opt_str(entry.get("ipMode"), f"{path}.ipMode") or "VIP")
        if mode is None:
            raise _Invalid(f"{path}.ipMode {_show(entry.get('ipMode'))} is not one of VIP, Proxy")
        found.add(LoadBalancerIngress(ip, mode))
    return tuple(sorted(found, key=lambda i: (i.ip, i.ip_mode.value)))


def _source_ranges(spec: Mapping[str, Any]) -> tuple[str, ...]:
    path = "spec.loadBalancerSourceRanges"
    ranges: set[str] = set()
    for i, text in enumerate(_list(spec.get("loadBalancerSourceRanges"), path)):
        # Validation lets padded values through and upstream trims them.
        cidr = _canonical_cidr(text.strip()) if isinstance(text, str) else None
        if cidr is None:
            raise _Invalid(f"{path}[{i}] {_show(text)} is not a valid CIDR")
        ranges.add(cidr)
    return tuple(sorted(ranges))


def _affinity_timeout(value: object) -> int:
    path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    if value is None:
        return DEFAULT_AFFINITY_SECONDS
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"{path} is not an integer: {_show(value)}")
    if not 1 <= value <= _MAX_AFFINITY_SECONDS:
        raise _Invalid(f"{path} {value} is out of range 1-{_MAX_AFFINITY_SECONDS}")
    return value


def _policy(value: object, path: str) -> TrafficPolicy:
    if value is None:
        return _CLUSTER
    policy = _POLICIES.get(_opt_str(value, path) or "Cluster")
    if policy is None:
        raise _Invalid(f"{path} {_show(value)} is not one of Cluster, Local")
    return policy


@dataclass(slots=True)
class _Port:
    key: ServicePortName
    #: (port name, protocol) as spelled in the API: how slices name their ports.
    match: tuple[str, str]
    port: int
    node_port: int | None


def _read_ports(svc: _Service, spec: Mapping[str, Any], skipped: list[Skipped]) -> list[_Port]:
    """spec.ports, each checked on its own: a bad port costs only itself."""
    ports: list[_Port] = []
    seen: dict[tuple[str, str], int] = {}
    raw_ports = _list(spec.get("ports"), "spec.ports")
    if not raw_ports:
        raise _Invalid("has no spec.ports")
    for i, raw in enumerate(raw_ports):
        try:
            if type(raw) is not dict and not isinstance(raw, Mapping):
                raise _Invalid(f"spec.ports[{i}] is not an object: {_show(raw)}")
            entry: Mapping[str, Any] = raw
            port_name = entry.get("name") or ""
            if type(port_name) is not str:
                raise _Invalid(f"spec.ports[{i}].name is not a string: {_show(port_name)}")
            protocol = entry.get("protocol") or "TCP"
            if type(protocol) is not str or protocol not in _PROTOCOLS:
                raise _Invalid(
                    f"spec.ports[{i}].protocol {_show(protocol)} is not one of TCP, UDP, SCTP"
                )
            number = entry.get("port")
            problem = _port_error(number)
            if problem is not None:
                raise _Invalid(f"spec.ports[{i}].port {problem}")
            node_port = None
            if svc.type == "NodePort" or svc.type == "LoadBalancer":
                # With allocateLoadBalancerNodePorts false a LoadBalancer port may have none.
                node_port = _opt_port(entry.get("nodePort"), f"spec.ports[{i}].nodePort")
            if (port_name, protocol) in seen:
                raise _Invalid(
                    f"spec.ports[{i}] repeats name {_show(port_name)} and protocol "
                    f"{protocol} of spec.ports[{seen[port_name, protocol]}]"
                )
        except _Invalid as bad:
            skipped.append(Skipped(_SERVICE, svc.namespace, svc.name, str(bad)))
            continue
        seen[port_name, protocol] = i
        key = _new(
            ServicePortName,
            {
                "namespace": svc.namespace,
                "name": svc.name,
                "port": port_name,
                "protocol": _PROTOCOLS[protocol],
            },
        )
        ports.append(_Port(key, (port_name, protocol), cast(int, number), node_port))
    return ports


# --------------------------------------------------------------------------- endpoints


def _bad_condition(conditions: Mapping[str, Any], i: int) -> _Invalid:
    for key in ("ready", "serving", "terminating"):
        value = conditions.get(key)
        if value is not None and value is not True and value is not False:
            return _Invalid(f"endpoints[{i}].conditions.{key} is not a boolean: {_show(value)}")
    return _Invalid(f"endpoints[{i}].conditions are not booleans")  # not reached


def _hint_names(listed: object, i: int, key: str) -> tuple[str, ...]:
    if type(listed) is not list:
        raise _Invalid(f"endpoints[{i}].hints.{key} is not a list: {_show(listed)}")
    names = []
    for j, hint in enumerate(listed):
        name = hint.get("name") if type(hint) is dict or isinstance(hint, Mapping) else None
        if type(name) is not str or not name:
            raise _Invalid(f"endpoints[{i}].hints.{key}[{j}] has no name: {_show(hint)}")
        names.append(name)
    return tuple(names) if len(names) == 1 else tuple(sorted(set(names)))


def _read_endpoints(
    raws: Sequence[Any],
    family: str,
    port: int,
    node_name: str,
    addrs: _Addresses,
    reasons: list[str],
) -> list[Endpoint]:
    """The endpoints of one slice, for the slice's first matching port number.

    A bad endpoint is left out and its reason added to ``reasons``. This loop runs for
    every endpoint in the cluster, so it is written for speed: exact type tests first
    (JSON gives plain dicts and lists), one frame per slice rather than per endpoint,
    and no text built unless something is wrong.
    """
    endpoints: list[Endpoint] = []
    v6 = family == "IPv6"
    ready: Any
    serving: Any
    terminating: Any
    for i, raw in enumerate(raws):
        try:
            if type(raw) is not dict and not isinstance(raw, Mapping):
                raise _Invalid(f"endpoints[{i}] is not an object: {_show(raw)}")
            addresses = raw.get("addresses")
            if type(addresses) is not list or not addresses:
                raise _Invalid(
                    f"endpoints[{i}].addresses is not a non-empty list: {_show(addresses)}"
                )
            # Upstream uses only the first address (the API allows exactly one today).
            text = addresses[0]
            # Most endpoint addresses are canonical dotted quads seen once: recognise
            # those without parsing or caching.
            ip = (text if _DOTTED_QUAD(text) else addrs[text]) if type(text) is str else None
            if ip is None:
                raise _Invalid(
                    f"endpoints[{i}].addresses[0] {_show(text)} is not a valid IP address"
                )
            if (":" in ip) is not v6:
                raise _Invalid(f"endpoints[{i}].addresses[0] {ip} is not an {family} address")

            # endpointslicecache.go: ready and serving default to true, terminating to false.
            conditions = raw.get("conditions")
            if conditions is None:
                ready = serving = True
                terminating = False
            elif type(conditions) is dict or isinstance(conditions, Mapping):
                ready = conditions.get("ready")
                serving = conditions.get("serving")
                terminating = conditions.get("terminating")
                # An explicit null means the default too; anything else must be a boolean.
                if ready is None:
                    ready = True
                if serving is None:
                    serving = True
                if terminating is None:
                    terminating = False
                if type(ready) is not bool or type(serving) is not bool:
                    raise _bad_condition(conditions, i)
                if type(terminating) is not bool:
                    raise _bad_condition(conditions, i)
            else:
                raise _Invalid(f"endpoints[{i}].conditions is not an object: {_show(conditions)}")

            where = raw.get("nodeName")
            if where is not None and type(where) is not str:
                raise _Invalid(f"endpoints[{i}].nodeName is not a string: {_show(where)}")
            zone = raw.get("zone")
            if zone is not None and type(zone) is not str:
                raise _Invalid(f"endpoints[{i}].zone is not a string: {_show(zone)}")
            zone_hints: tuple[str, ...] = ()
            node_hints: tuple[str, ...] = ()
            hints = raw.get("hints")
            if hints is not None:
                if type(hints) is not dict and not isinstance(hints, Mapping):
                    raise _Invalid(f"endpoints[{i}].hints is not an object: {_show(hints)}")
                listed = hints.get("forZones")
                if listed:
                    zone_hints = _hint_names(listed, i, "forZones")
                listed = hints.get("forNodes")
                if listed:
                    node_hints = _hint_names(listed, i, "forNodes")
        except _Invalid as bad:
            reasons.append(f"{bad}; endpoint dropped")
            continue
        endpoints.append(
            _new(
                Endpoint,
                {
                    "ip": ip,
                    "port": port,
                    "ready": ready,
                    "serving": serving,
                    "terminating": terminating,
                    "node_name": where or None,
                    "zone": zone or None,
                    "zone_hints": zone_hints,
                    "node_hints": node_hints,
                    "is_local": bool(node_name) and where == node_name,
                },
            )
        )
    return endpoints


def _preference(
    ep: Endpoint,
) -> tuple[bool, bool, bool, str, str, tuple[str, ...], tuple[str, ...], bool]:
    """Sort key among copies of one address: the smallest is kept (see module notes)."""
    return (
        ep.terminating,
        not ep.ready,
        not ep.is_local,
        ep.node_name or "",
        ep.zone or "",
        ep.zone_hints,
        ep.node_hints,
        not ep.serving,
    )


def _collect_endpoints(
    svc: _Service,
    slices: Iterable[tuple[str, Mapping[str, Any]]],
    wanted: frozenset[tuple[str, str]],
    node: NodeInfo,
    addrs: _Addresses,
    skipped: list[Skipped],
) -> dict[tuple[str, str], dict[int, dict[str, Endpoint]]]:
    """Endpoints by (port name, protocol), then port number, then IP: merged over slices."""
    families = svc.families
    found: dict[tuple[str, str], dict[int, dict[str, Endpoint]]] = {}
    for slice_name, endpoint_slice in slices:
        try:
            shape = _slice_shape(endpoint_slice)
        except _Invalid as bad:
            skipped.append(Skipped(_SLICE, svc.namespace, slice_name, str(bad)))
            continue
        if shape is None or shape[0] not in families:
            # An FQDN slice, or one of a family the Service has no ClusterIP of (that
            # family's proxier does not program the Service): nothing to use.
            continue
        family, raw_endpoints, raw_ports = shape
        reasons: list[str] = []
        numbers = _slice_ports(raw_ports, wanted, reasons)

        if not numbers:
            skipped.extend(Skipped(_SLICE, svc.namespace, slice_name, r) for r in reasons)
            continue
        first = numbers[0][1]
        endpoints = _read_endpoints(raw_endpoints, family, first, node.name, addrs, reasons)
        if reasons:
            skipped.extend(Skipped(_SLICE, svc.namespace, slice_name, r) for r in reasons)

        for match, number in numbers:
            by_ip = found.setdefault(match, {}).setdefault(number, {})
            for ep in endpoints:
                if number != first:  # a multi-port slice: the same endpoint, another port
                    ep = replace(ep, port=number)
                old = by_ip.setdefault(ep.ip, ep)
                if old is not ep and _preference(ep) < _preference(old):
                    by_ip[ep.ip] = ep
    return found


def _slice_shape(
    endpoint_slice: Mapping[str, Any],
) -> tuple[str, list[Any] | tuple[Any, ...], list[Any] | tuple[Any, ...]] | None:
    """(address type, endpoints, ports) of a slice; None for FQDN slices."""
    family = endpoint_slice.get("addressType")
    if family == "FQDN":  # kube-proxy has no use for FQDN slices
        return None
    if family != "IPv4" and family != "IPv6":
        raise _Invalid(f"addressType {_show(family)} is not one of IPv4, IPv6, FQDN")
    raw_endpoints = _list(endpoint_slice.get("endpoints"), "endpoints")
    raw_ports = _list(endpoint_slice.get("ports"), "ports")
    if raw_endpoints and not raw_ports:
        raise _Invalid("has endpoints but no ports, so it serves no Service port")
    return family, raw_endpoints, raw_ports


def _slice_ports(
    raw_ports: list[Any] | tuple[Any, ...], wanted: frozenset[tuple[str, str]], reasons: list[str]
) -> list[tuple[tuple[str, str], int]]:
    """The slice's port numbers for the Service ports it names, as (name, protocol), number.

    Each slice carries its own resolution of named target ports, so one Service port
    may map to different numbers in different slices.
    """
    numbers = []
    for i, raw in enumerate(raw_ports):
        if type(raw) is not dict and not isinstance(raw, Mapping):
            reasons.append(f"ports[{i}] is not an object: {_show(raw)}")
            continue
        # The API server defaults a missing name to "" and protocol to TCP.
        name, protocol = raw.get("name") or "", raw.get("protocol") or "TCP"
        if type(name) is not str or type(protocol) is not str:
            reasons.append(f"ports[{i}] has a name or protocol that is no string: {_show(raw)}")
            continue
        match = (name, protocol)
        if match not in wanted:
            continue
        number = raw.get("port")
        if number is None:
            reasons.append(f'ports[{i}] has no port number (kube-proxy cannot use "all ports")')
            continue
        problem = _port_error(number)
        if problem is not None:
            reasons.append(f"ports[{i}].port {problem}")
            continue
        numbers.append((match, number))
    return numbers


# --------------------------------------------------------------------------- selection


def _topology_mode(endpoints: list[Endpoint], node_name: str, zone: str) -> str | None:
    """Which hints to follow (topology.go topologyModeFromHints), or None for none.

    Hints are used only when every ready endpoint carries one and at least one is
    meant for this node (or zone): partial hints mean a rollout is in progress, and
    following them could overload the few hinted endpoints.
    """
    any_ready = False
    all_node_hints = all_zone_hints = True
    for_node = for_zone = False
    for ep in endpoints:
        if not ep.ready:
            continue
        any_ready = True
        if not ep.node_hints:
            all_node_hints = False
        elif node_name in ep.node_hints:
            for_node = True
        if not ep.zone_hints:
            all_zone_hints = False
        elif zone in ep.zone_hints:
            for_zone = True
        if not (all_node_hints or all_zone_hints):
            return None  # the usual case: no hints at all
    if not any_ready:
        return None
    if all_node_hints and for_node:
        return _PREFER_SAME_NODE
    if all_zone_hints and for_zone:
        return _PREFER_SAME_ZONE
    return None


def _categorize(
    endpoints: list[Endpoint],
    uses_cluster: bool,
    uses_local: bool,
    node: NodeInfo,
) -> tuple[list[Endpoint], list[Endpoint], bool]:
    """(cluster, local, has any) for endpoints of one family, as CategorizeEndpoints."""
    cluster: list[Endpoint] = []
    local: list[Endpoint] = []
    has_any = False
    if uses_cluster:
        zone = node.zone or ""
        mode = _topology_mode(endpoints, node.name, zone)
        if mode == _PREFER_SAME_NODE:
            cluster = [ep for ep in endpoints if ep.ready and node.name in ep.node_hints]
        elif mode == _PREFER_SAME_ZONE:
            cluster = [ep for ep in endpoints if ep.ready and zone in ep.zone_hints]
        else:
            cluster = [ep for ep in endpoints if ep.ready]
        if not cluster:
            # No ready endpoint anywhere (topology already fell back to "all" if there
            # were ready ones elsewhere): use the ones still serving while terminating.
            cluster = [ep for ep in endpoints if ep.serving and ep.terminating]
        has_any = bool(cluster)
    if uses_local:
        local_ready = local_terminating = False
        for ep in endpoints:
            if ep.ready:
                has_any = True
                local_ready = local_ready or ep.is_local
            elif ep.serving and ep.terminating:
                has_any = True
                local_terminating = local_terminating or ep.is_local
        if local_ready:
            local = [ep for ep in endpoints if ep.is_local and ep.ready]
        elif local_terminating:
            local = [ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating]
    return cluster, local, has_any


def _service_port(
    svc: _Service, port: _Port, endpoints: list[Endpoint], node: NodeInfo
) -> ServicePort:
    cluster: list[Endpoint] = []
    local: list[Endpoint] = []
    has_any = False
    internal_local = svc.internal_policy == "Local"
    external_local = svc.external_policy == "Local"
    families = svc.families
    for family in families:
        own = (
            endpoints
            if len(families) == 1
            else [ep for ep in endpoints if _family_name(ep.ip) == family]
        )
        # serviceport.go ExternallyAccessible, as this family's proxier sees the port:
        # a NodePort, or an external IP or a VIP-mode load-balancer IP of the family.
        reachable = port.node_port is not None or family in svc.exposed
        c, lo, h = _categorize(
            own,
            uses_cluster=not internal_local or reachable,
            uses_local=internal_local or (external_local and reachable),
            node=node,
        )
        cluster += c
        local += lo
        has_any = has_any or h
    if len(families) > 1:
        cluster.sort(key=_endpoint_order)
        local.sort(key=_endpoint_order)
    return _new(
        ServicePort,
        {
            "name": port.key,
            "cluster_ips": svc.cluster_ips,
            "port": port.port,
            "node_port": port.node_port,
            "external_ips": svc.external_ips,
            "load_balancer_ingress": svc.ingress,
            "load_balancer_source_ranges": svc.source_ranges,
            "affinity_timeout": svc.affinity_timeout,
            "external_policy": svc.external_policy,
            "internal_policy": svc.internal_policy,
            "health_check_node_port": svc.health_check_node_port,
            "endpoints": tuple(endpoints),
            "cluster_endpoints": tuple(cluster),
            "local_endpoints": tuple(local),
            "has_any_endpoints": has_any,
        },
    )


def _endpoint_order(ep: Endpoint) -> tuple[str, int]:
    # (ip, port) is unique within a port and leads the dataclass order, so this key
    # sorts exactly as Endpoint's own ordering, without comparing whole dataclasses.
    return ep.ip, ep.port


# --------------------------------------------------------------------------- entry points


def _translate(
    service: Mapping[str, Any],
    namespace: str,
    name: str,
    slices: Iterable[tuple[str, Mapping[str, Any]]],
    node: NodeInfo,
    addrs: _Addresses,
    skipped: list[Skipped],
) -> list[ServicePort]:
    try:
        svc = _read_service(namespace, name, service, addrs)
        if svc is None:
            return []
        ports = _read_ports(svc, _mapping(service.get("spec"), "spec"), skipped)
    except _Invalid as bad:
        skipped.append(Skipped(_SERVICE, namespace, name, str(bad)))
        return []
    if not ports:
        return []
    wanted = frozenset([p.match for p in ports])
    found = _collect_endpoints(svc, slices, wanted, node, addrs, skipped)
    result = []
    for port in ports:
        by_number = found.get(port.match)
        endpoints: list[Endpoint] = []
        if by_number and len(by_number) == 1:
            (by_ip,) = by_number.values()
            endpoints = [by_ip[ip] for ip in sorted(by_ip)]
        elif by_number:
            endpoints = sorted(
                (ep for by_ip in by_number.values() for ep in by_ip.values()), key=_endpoint_order
            )
        result.append(_service_port(svc, port, endpoints, node))
    return result


def _guarded(
    service: Mapping[str, Any],
    namespace: str,
    name: str,
    slices: Iterable[tuple[str, Mapping[str, Any]]],
    node: NodeInfo,
    addrs: _Addresses,
    skipped: list[Skipped],
) -> list[ServicePort]:
    """Translate one Service, turning any failure into a report.

    The readers above check every field they use; this is the last line of defence
    for what they did not foresee, so that one odd object can never stop a node from
    programming all the others.
    """
    mark = len(skipped)
    try:
        return _translate(service, namespace, name, slices, node, addrs, skipped)
    except Exception as error:
        del skipped[mark:]
        skipped.append(
            Skipped(
                _SERVICE,
                namespace,
                name,
                f"could not be translated: {type(error).__name__}: {error}",
            )
        )
        return []


def translate_service(
    service: Mapping[str, Any],
    slices: Iterable[Mapping[str, Any]],
    node: NodeInfo,
) -> tuple[tuple[ServicePort, ...], tuple[Skipped, ...]]:
    """One Service and its EndpointSlices -> the Service's ports for this node.

    For a long-running proxy that re-translates only the Service that changed.
    ``slices`` should be the slices labelled for this Service; others are reported
    and ignored. Ports and reports come back sorted.
    """
    try:
        namespace, name = _metadata(service)
    except _Invalid as bad:
        return (), (Skipped(_SERVICE, *_loose_metadata(service), str(bad)),)
    addrs = _Addresses()
    skipped: list[Skipped] = []
    own: list[tuple[str, Mapping[str, Any]]] = []
    for endpoint_slice in slices:
        try:
            slice_ns, slice_name, owner = _slice_owner(endpoint_slice)
        except _Invalid as bad:
            skipped.append(Skipped(_SLICE, *_loose_metadata(endpoint_slice), str(bad)))
            continue
        assert isinstance(endpoint_slice, Mapping)  # checked by _slice_owner
        if (slice_ns, owner) != (namespace, name):
            skipped.append(
                Skipped(
                    _SLICE,
                    slice_ns,
                    slice_name,
                    f"belongs to Service {slice_ns}/{owner}, not {namespace}/{name}",
                )
            )
            continue
        own.append((slice_name, endpoint_slice))
    ports = _guarded(service, namespace, name, own, node, addrs, skipped)
    ports.sort(key=_port_order)
    return tuple(ports), tuple(sorted(skipped))


def translate(
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    node: NodeInfo,
) -> Translation:
    """Every Service with its EndpointSlices -> the ServiceMap of ``node``.

    Slices are tied to their Service by the kubernetes.io/service-name label (in the
    slice's namespace), for selector-less Services with hand-made slices too.
    """
    addrs = _Addresses()
    skipped: list[Skipped] = []

    by_service: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = {}
    for endpoint_slice in slices:
        try:
            namespace, slice_name, owner = _slice_owner(endpoint_slice)
        except _Invalid as bad:
            skipped.append(Skipped(_SLICE, *_loose_metadata(endpoint_slice), str(bad)))
            continue
        assert isinstance(endpoint_slice, Mapping)  # checked by _slice_owner
        by_service.setdefault((namespace, owner), []).append((slice_name, endpoint_slice))

    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for service in services:
        try:
            key = _metadata(service)
        except _Invalid as bad:
            skipped.append(Skipped(_SERVICE, *_loose_metadata(service), str(bad)))
            continue
        by_key.setdefault(key, []).append(service)

    ports: list[ServicePort] = []
    for key, copies in by_key.items():
        if len(copies) > 1:
            # Ambiguous: no input order may decide which copy wins.
            reason = f"is listed {len(copies)} times; all copies ignored"
            skipped.append(Skipped(_SERVICE, *key, reason))
            continue
        ports += _guarded(copies[0], *key, by_service.get(key, []), node, addrs, skipped)

    ports.sort(key=_port_order)
    return Translation(ServiceMap(tuple(ports)), tuple(sorted(skipped)))


def _port_order(port: ServicePort) -> tuple[str, str, str, str]:
    # ServicePortName's dataclass ordering, as a plain tuple (Protocol is a str).
    key = port.name
    return key.namespace, key.name, key.port, key.protocol
