"""Model objects for tests: endpoints and Service ports as ``kubenet.translate`` makes them.

Tests build their ServiceMaps from these, so the choice of which endpoints Cluster and
Local traffic may use is made in one place, the way upstream kube-proxy makes it
(pkg/proxy/serviceport.go UsesClusterEndpoints / UsesLocalEndpoints and
pkg/proxy/topology.go CategorizeEndpoints), rather than by hand in every test module.
Topology hints are not modelled: no endpoint built here carries any.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TypedDict, Unpack

from kubenet.model import (
    Endpoint,
    IPFamily,
    IPMode,
    LoadBalancerIngress,
    Protocol,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions

#: The node every test map is built for, and the one its remote endpoints run on.
NODE = "node-a"
OTHER_NODE = "node-b"
NODE_IP, NODE_IP6 = "10.180.0.1", "fd00:180::1"


def node_options(*node_ips: str, cluster_cidrs: tuple[str, ...]) -> RenderOptions:
    """Options for rendering :data:`NODE` (IPv4), telling pod traffic by its cluster CIDRs."""
    return RenderOptions(
        node_name=NODE,
        node_ips=node_ips,
        local_detector=LocalDetector(DetectLocalMode.CLUSTER_CIDR, cluster_cidrs),
    )


def endpoint(
    ip: str,
    port: int = 8080,
    *,
    local: bool = False,
    node: str | None = None,
    ready: bool = True,
    serving: bool = True,
    terminating: bool = False,
) -> Endpoint:
    """An endpoint on :data:`NODE` when ``local``, else on ``node`` (:data:`OTHER_NODE`)."""
    return Endpoint(
        ip=ip,
        port=port,
        ready=ready,
        serving=serving,
        terminating=terminating,
        node_name=node if node is not None else (NODE if local else OTHER_NODE),
        is_local=local,
    )


def service_port(
    name: str,
    cluster_ips: str | tuple[str, ...],
    endpoints: tuple[Endpoint, ...] = (),
    *,
    namespace: str = "default",
    protocol: Protocol = Protocol.TCP,
    port: int = 80,
    port_name: str = "",
    node_port: int | None = None,
    external_ips: tuple[str, ...] = (),
    lb_ips: tuple[str, ...] = (),
    proxy_lb_ips: tuple[str, ...] = (),
    source_ranges: tuple[str, ...] = (),
    affinity: int | None = None,
    external_local: bool = False,
    internal_local: bool = False,
    health_check_node_port: int | None = None,
) -> ServicePort:
    """One Service port with its endpoints selected as translate selects them.

    ``lb_ips`` are VIP-mode load-balancer addresses, ``proxy_lb_ips`` Proxy-mode ones.
    """
    unselected = ServicePort(
        name=ServicePortName(namespace, name, port_name, protocol),
        cluster_ips=(cluster_ips,) if isinstance(cluster_ips, str) else cluster_ips,
        port=port,
        node_port=node_port,
        external_ips=external_ips,
        load_balancer_ingress=(
            *(LoadBalancerIngress(ip) for ip in lb_ips),
            *(LoadBalancerIngress(ip, IPMode.PROXY) for ip in proxy_lb_ips),
        ),
        load_balancer_source_ranges=source_ranges,
        affinity_timeout=affinity,
        external_policy=TrafficPolicy.LOCAL if external_local else TrafficPolicy.CLUSTER,
        internal_policy=TrafficPolicy.LOCAL if internal_local else TrafficPolicy.CLUSTER,
        health_check_node_port=health_check_node_port,
    )
    return with_endpoints(unselected, endpoints)


def with_endpoints(port: ServicePort, endpoints: Iterable[Endpoint]) -> ServicePort:
    """``port`` with these endpoints, selected for its traffic policies as upstream does.

    Per family, as each family's proxier judges it, the usable endpoints are the ready
    ones, or when none is ready those serving while terminating. Cluster endpoints are
    the usable ones, kept only when some traffic uses them: internal traffic under the
    Cluster policy, or any external traffic (a NodePort, or an external IP or VIP-mode
    load-balancer IP of the family; a Local external policy still short-circuits pod
    traffic to them). Local endpoints are the node's own usable ones, kept only when a
    Local policy applies (internal, or external on an externally reachable port).
    """
    everything = tuple(sorted(endpoints))
    internal_local = port.internal_policy is TrafficPolicy.LOCAL
    external = (
        *port.external_ips,
        *(i.ip for i in port.load_balancer_ingress if i.ip_mode is IPMode.VIP),
    )
    cluster: list[Endpoint] = []
    local: list[Endpoint] = []
    for family in IPFamily:
        own = [e for e in everything if e.family is family]
        reachable = port.node_port is not None or any(IPFamily.of(ip) is family for ip in external)
        if not internal_local or reachable:
            cluster += _usable(own)
        external_local = reachable and port.external_policy is TrafficPolicy.LOCAL
        if internal_local or external_local:
            local += _usable([e for e in own if e.is_local])
    return replace(
        port,
        endpoints=everything,
        cluster_endpoints=tuple(sorted(cluster)),
        local_endpoints=tuple(sorted(local)),
        has_any_endpoints=any(e.ready or (e.serving and e.terminating) for e in everything),
    )


class _Shared(TypedDict, total=False):
    """The arguments :func:`port` passes on to :func:`service_port` as they are."""

    namespace: str
    protocol: Protocol
    node_port: int | None
    external_ips: tuple[str, ...]
    affinity: int | None
    external_local: bool
    internal_local: bool


def port(
    name: str,
    cluster_ips: str | tuple[str, ...],
    endpoints: tuple[Endpoint, ...] = (),
    *,
    number: int = 80,
    port_name: str = "http",
    lb: tuple[str, ...] = (),
    proxy_lb: tuple[str, ...] = (),
    ranges: tuple[str, ...] = (),
    health_check: int | None = None,
    **shared: Unpack[_Shared],
) -> ServicePort:
    """:func:`service_port` in the renderer and tracer tests' short spelling (port "http")."""
    return service_port(
        name,
        cluster_ips,
        endpoints,
        port=number,
        port_name=port_name,
        lb_ips=lb,
        proxy_lb_ips=proxy_lb,
        source_ranges=ranges,
        health_check_node_port=health_check,
        **shared,
    )


def _usable(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The ready endpoints, or when none is ready those serving while terminating."""
    ready = [e for e in endpoints if e.ready]
    return ready or [e for e in endpoints if e.serving and e.terminating]
