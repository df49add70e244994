"""kubenet.translate: API objects (as the API server sends them) -> one node's ServiceMap.

The objects are built with the small helpers below, in the JSON shape the API server
uses. Expected values are written out by hand from upstream kube-proxy's documented
behaviour (pkg/proxy: servicechangetracker.go, serviceport.go, endpointslicecache.go,
topology.go).
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from kubenet.model import (
    DEFAULT_AFFINITY_SECONDS,
    Endpoint,
    IPFamily,
    IPMode,
    LoadBalancerIngress,
    Protocol,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from kubenet.translate import (
    NodeInfo,
    Skipped,
    Translation,
    node_info,
    translate,
    translate_service,
)

NS = "default"
NODE = NodeInfo("node-a", ips=("10.0.0.1",), zone="zone-a")

# --------------------------------------------------------------------------- builders


def service(
    name: str = "web",
    *,
    namespace: str = NS,
    type: str | None = None,
    cluster_ip: str | None = "10.96.0.10",
    cluster_ips: list[str] | None = None,
    ip_families: list[str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Service; ``spec`` takes further spec fields by their API names."""
    body: dict[str, Any] = {"ports": ports if ports is not None else [port()], **spec}
    if type is not None:
        body["type"] = type
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
        body["clusterIPs"] = cluster_ips if cluster_ips is not None else [cluster_ip]
    if ip_families is not None:
        body["ipFamilies"] = ip_families
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    if status is not None:
        obj["status"] = status
    return obj


def port(
    port: int = 80,
    name: str | None = "http",
    protocol: str | None = None,
    node_port: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"port": port, "targetPort": 8080}
    if name is not None:
        body["name"] = name
    if protocol is not None:
        body["protocol"] = protocol
    if node_port is not None:
        body["nodePort"] = node_port
    return body


def ep(
    ip: str,
    node: str | None = "node-b",
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    zone: str | None = None,
    for_zones: list[str] | None = None,
    for_nodes: list[str] | None = None,
) -> dict[str, Any]:
    """One EndpointSlice endpoint; conditions left as None are left out."""
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    body: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if node is not None:
        body["nodeName"] = node
    if zone is not None:
        body["zone"] = zone
    hints: dict[str, Any] = {}
    if for_zones is not None:
        hints["forZones"] = [{"name": z} for z in for_zones]
    if for_nodes is not None:
        hints["forNodes"] = [{"name": n} for n in for_nodes]
    if hints:
        body["hints"] = hints
    return body


def eslice(
    svc: str | None = "web",
    *endpoints: dict[str, Any],
    name: str | None = None,
    namespace: str = NS,
    address_type: str = "IPv4",
    ports: list[tuple[str | None, int | None, str | None]] | None = None,
) -> dict[str, Any]:
    """An EndpointSlice labelled for Service ``svc`` (no label when None).

    ``ports`` are (name, port, protocol); by default one port "http" 8080/TCP.
    """
    labels = {"kubernetes.io/service-name": svc} if svc is not None else {}
    raw_ports = []
    for port_name, number, protocol in ports if ports is not None else [("http", 8080, "TCP")]:
        entry: dict[str, Any] = {}
        if port_name is not None:
            entry["name"] = port_name
        if number is not None:
            entry["port"] = number
        if protocol is not None:
            entry["protocol"] = protocol
        raw_ports.append(entry)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name or f"{svc}-abcde", "namespace": namespace, "labels": labels},
        "addressType": address_type,
        "ports": raw_ports,
        "endpoints": list(endpoints),
    }


def key(
    name: str = "web", port_name: str = "http", protocol: Protocol = Protocol.TCP
) -> ServicePortName:
    return ServicePortName(NS, name, port_name, protocol)


def run(services: Sequence[Any], slices: Sequence[Any] = (), node: NodeInfo = NODE) -> Translation:
    return translate(services, slices, node)


def only_port(t: Translation) -> ServicePort:
    assert len(t.service_map) == 1, t
    return next(iter(t.service_map))


def port_of(t: Translation, k: ServicePortName) -> ServicePort:
    found = t.service_map.get(k)
    assert found is not None, (k, t)
    return found


def addresses(endpoints: tuple[Endpoint, ...]) -> list[str]:
    return [e.address for e in endpoints]


def reasons(t: Translation) -> list[str]:
    return [str(s) for s in t.skipped]


# --------------------------------------------------------------------------- Services


def test_cluster_ip_service_with_endpoints() -> None:
    t = run(
        [service()],
        [eslice("web", ep("10.244.1.2", "node-a", zone="zone-a"), ep("10.244.2.2", "node-b"))],
    )
    assert t.skipped == ()
    p = only_port(t)
    assert p.name == key()
    assert str(p.name) == "default/web:http/TCP"
    assert p.cluster_ips == ("10.96.0.10",)
    assert p.port == 80
    assert p.node_port is None
    assert p.endpoints == (
        Endpoint("10.244.1.2", 8080, node_name="node-a", zone="zone-a", is_local=True),
        Endpoint("10.244.2.2", 8080, node_name="node-b"),
    )
    assert p.cluster_endpoints == p.endpoints
    assert p.local_endpoints == ()  # no Local policy anywhere
    assert p.has_any_endpoints
    assert p.affinity_timeout is None
    assert p.external_policy is TrafficPolicy.CLUSTER
    assert p.internal_policy is TrafficPolicy.CLUSTER


@pytest.mark.parametrize(
    ("raw", "want"),
    [(None, Protocol.TCP), ("TCP", Protocol.TCP), ("UDP", Protocol.UDP), ("SCTP", Protocol.SCTP)],
)
def test_protocol_defaults_to_tcp(raw: str | None, want: Protocol) -> None:
    t = run([service(ports=[port(53, "dns", raw)])])
    assert only_port(t).name == ServicePortName(NS, "web", "dns", want)


def test_unnamed_port_has_empty_name() -> None:
    t = run(
        [service(ports=[port(name=None)])],
        [eslice("web", ep("10.244.1.2"), ports=[(None, 80, None)])],
    )
    p = only_port(t)
    assert p.name == ServicePortName(NS, "web", "", Protocol.TCP)
    assert p.name.upstream == "default/web"
    assert addresses(p.endpoints) == ["10.244.1.2:80"]


def test_unknown_protocol_skips_only_that_port() -> None:
    t = run([service(ports=[port(80, "http"), port(81, "odd", "QUIC")])])
    assert [p.name.port for p in t.service_map] == ["http"]
    assert reasons(t) == [
        'Service default/web: spec.ports[1].protocol "QUIC" is not one of TCP, UDP, SCTP'
    ]


@pytest.mark.parametrize(
    "svc",
    [
        service(cluster_ip="None"),
        service(cluster_ip=None),
        service(cluster_ip=""),
        service(type="ExternalName", cluster_ip=None, externalName="db.example.com"),
        service(type="ExternalName", cluster_ip="10.96.0.10"),
    ],
    ids=["headless", "no-cluster-ip", "empty-cluster-ip", "external-name", "external-name-with-ip"],
)
def test_services_kube_proxy_does_not_proxy_are_silently_ignored(svc: dict[str, Any]) -> None:
    t = run([svc], [eslice("web", ep("10.244.1.2"))])
    assert len(t.service_map) == 0
    assert t.skipped == ()


def test_cluster_ip_is_canonicalised() -> None:
    t = run([service(cluster_ip="FD00:0:0::00A", ip_families=["IPv6"])])
    assert only_port(t).cluster_ips == ("fd00::a",)


def test_dual_stack_keeps_primary_first_and_splits_by_family() -> None:
    t = run(
        [
            service(
                cluster_ip="fd00::10",
                cluster_ips=["fd00::10", "10.96.0.10"],
                ip_families=["IPv6", "IPv4"],
            )
        ],
        [
            eslice("web", ep("10.244.1.2", "node-a"), name="web-v4"),
            eslice("web", ep("fd00:244::2", "node-a"), name="web-v6", address_type="IPv6"),
        ],
    )
    p = only_port(t)
    assert p.cluster_ips == ("fd00::10", "10.96.0.10")
    assert addresses(p.endpoints) == ["10.244.1.2:8080", "[fd00:244::2]:8080"]
    v4, v6 = p.for_family(IPFamily.IPV4), p.for_family(IPFamily.IPV6)
    assert (v4.cluster_ips, addresses(v4.cluster_endpoints)) == (
        ("10.96.0.10",),
        ["10.244.1.2:8080"],
    )
    assert (v6.cluster_ips, addresses(v6.cluster_endpoints)) == (
        ("fd00::10",),
        ["[fd00:244::2]:8080"],
    )


def test_dual_stack_selects_endpoints_per_family() -> None:
    # kube-proxy runs one proxier per family: the IPv6 one, seeing no ready IPv6
    # endpoint, falls back to the terminating one even though IPv4 has a ready one.
    t = run(
        [service(cluster_ips=["10.96.0.10", "fd00::10"], ip_families=["IPv4", "IPv6"])],
        [
            eslice("web", ep("10.244.1.2"), name="web-v4"),
            eslice(
                "web",
                ep("fd00:244::2", ready=False, serving=True, terminating=True),
                ep("fd00:244::3", ready=False, serving=False, terminating=True),
                name="web-v6",
                address_type="IPv6",
            ),
        ],
    )
    p = only_port(t)
    assert addresses(p.cluster_endpoints) == ["10.244.1.2:8080", "[fd00:244::2]:8080"]
    assert len(p.endpoints) == 3


def test_single_stack_service_ignores_endpoints_of_the_other_family() -> None:
    t = run(
        [service()],
        [
            eslice("web", ep("10.244.1.2"), name="web-v4"),
            eslice("web", ep("fd00:244::2"), name="web-v6", address_type="IPv6"),
        ],
    )
    assert addresses(only_port(t).endpoints) == ["10.244.1.2:8080"]
    assert t.skipped == ()


def test_cluster_ips_follow_ip_families_when_given() -> None:
    # GetClusterIPByFamily pairs clusterIPs with ipFamilies by index.
    t = run([service(cluster_ips=["10.96.0.10", "fd00::10"], ip_families=["IPv4"])])
    assert only_port(t).cluster_ips == ("10.96.0.10",)


def test_external_ips_are_canonical_and_sorted() -> None:
    t = run([service(externalIPs=["192.0.2.9", "2001:DB8::1", "192.0.2.10", "192.0.2.9"])])
    assert only_port(t).external_ips == ("192.0.2.10", "192.0.2.9", "2001:db8::1")


LB_STATUS = {
    "loadBalancer": {
        "ingress": [
            {"ip": "203.0.113.7"},
            {"ip": "203.0.113.8", "ipMode": "Proxy"},
            {"hostname": "lb.example.com"},
        ]
    }
}


def test_load_balancer_ingress_and_source_ranges() -> None:
    t = run(
        [
            service(
                type="LoadBalancer",
                ports=[port(node_port=30080)],
                status=LB_STATUS,
                loadBalancerSourceRanges=[" 10.1.2.3/8 ", "192.0.2.0/24", "2001:DB8::/32"],
            )
        ]
    )
    p = only_port(t)
    assert p.load_balancer_ingress == (
        LoadBalancerIngress("203.0.113.7", IPMode.VIP),
        LoadBalancerIngress("203.0.113.8", IPMode.PROXY),
    )
    assert p.load_balancer_source_ranges == ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32")
    assert p.node_port == 30080
    assert p.externally_accessible


@pytest.mark.parametrize("svc_type", ["ClusterIP", "NodePort"])
def test_only_load_balancers_keep_ingress_and_source_ranges(svc_type: str) -> None:
    t = run(
        [
            service(
                type=svc_type,
                ports=[port(node_port=30080)],
                status=LB_STATUS,
                loadBalancerSourceRanges=["10.0.0.0/8"],
            )
        ]
    )
    p = only_port(t)
    assert p.load_balancer_ingress == ()
    assert p.load_balancer_source_ranges == ()


@pytest.mark.parametrize(
    ("svc_type", "want"),
    [
        ("ClusterIP", None),  # a stale nodePort on a ClusterIP Service means nothing
        ("NodePort", 30080),
        ("LoadBalancer", 30080),
    ],
)
def test_node_port(svc_type: str, want: int | None) -> None:
    t = run([service(type=svc_type, ports=[port(node_port=30080)])])
    assert only_port(t).node_port == want


def test_load_balancer_without_node_ports() -> None:
    t = run(
        [
            service(
                type="LoadBalancer",
                ports=[port()],
                allocateLoadBalancerNodePorts=False,
                status=LB_STATUS,
            )
        ]
    )
    p = only_port(t)
    assert p.node_port is None
    assert p.externally_accessible  # through its load-balancer IP


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ({}, None),
        ({"sessionAffinity": "None"}, None),
        ({"sessionAffinity": "ClientIP"}, DEFAULT_AFFINITY_SECONDS),
        (
            {
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            },
            60,
        ),
    ],
)
def test_session_affinity(spec: dict[str, Any], want: int | None) -> None:
    assert only_port(run([service(**spec)])).affinity_timeout == want


@pytest.mark.parametrize(
    ("svc_type", "external_ips", "etp", "want_external", "want_health_check"),
    [
        ("ClusterIP", None, "Local", TrafficPolicy.CLUSTER, None),  # not externally accessible
        ("ClusterIP", ["192.0.2.1"], "Local", TrafficPolicy.LOCAL, None),
        ("NodePort", None, "Local", TrafficPolicy.LOCAL, None),
        ("NodePort", None, "Cluster", TrafficPolicy.CLUSTER, None),
        ("LoadBalancer", None, "Local", TrafficPolicy.LOCAL, 32000),
        ("LoadBalancer", None, None, TrafficPolicy.CLUSTER, None),
    ],
)
def test_external_traffic_policy_and_health_check_node_port(
    svc_type: str,
    external_ips: list[str] | None,
    etp: str | None,
    want_external: TrafficPolicy,
    want_health_check: int | None,
) -> None:
    spec: dict[str, Any] = {"healthCheckNodePort": 32000}
    if external_ips is not None:
        spec["externalIPs"] = external_ips
    if etp is not None:
        spec["externalTrafficPolicy"] = etp
    p = only_port(run([service(type=svc_type, ports=[port(node_port=30080)], **spec)]))
    assert p.external_policy is want_external
    assert p.health_check_node_port == want_health_check


@pytest.mark.parametrize(
    ("itp", "want"),
    [
        (None, TrafficPolicy.CLUSTER),
        ("Cluster", TrafficPolicy.CLUSTER),
        ("Local", TrafficPolicy.LOCAL),
    ],
)
def test_internal_traffic_policy(itp: str | None, want: TrafficPolicy) -> None:
    spec: dict[str, Any] = {"internalTrafficPolicy": itp} if itp else {}
    assert only_port(run([service(**spec)])).internal_policy is want


def test_several_ports_of_one_service() -> None:
    t = run(
        [
            service(
                ports=[port(53, "dns", "UDP"), port(53, "dns-tcp", "TCP"), port(9153, "metrics")]
            )
        ],
        [
            eslice(
                "web",
                ep("10.244.1.2"),
                ports=[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP"), ("metrics", 9153, "TCP")],
            )
        ],
    )
    got = {(p.name.port, p.protocol): addresses(p.endpoints) for p in t.service_map}
    assert got == {
        ("dns", Protocol.UDP): ["10.244.1.2:5353"],
        ("dns-tcp", Protocol.TCP): ["10.244.1.2:5353"],
        ("metrics", Protocol.TCP): ["10.244.1.2:9153"],
    }


def test_slice_ports_match_service_ports_by_name_and_protocol() -> None:
    # A slice port named "dns" but UDP does not serve the TCP port "dns".
    t = run(
        [service(ports=[port(53, "dns", "TCP")])],
        [eslice("web", ep("10.244.1.2"), ports=[("dns", 5353, "UDP")])],
    )
    p = only_port(t)
    assert p.endpoints == ()
    assert not p.has_any_endpoints


# --------------------------------------------------------------------------- EndpointSlices


def test_slices_are_merged_and_duplicates_kept_once() -> None:
    t = run(
        [service()],
        [
            eslice("web", ep("10.244.1.2"), ep("10.244.1.3"), name="web-1"),
            eslice("web", ep("10.244.1.3"), ep("10.244.1.4"), name="web-2"),
        ],
    )
    assert addresses(only_port(t).endpoints) == [
        "10.244.1.2:8080",
        "10.244.1.3:8080",
        "10.244.1.4:8080",
    ]


@pytest.mark.parametrize("terminating_first", [True, False])
def test_duplicate_address_prefers_the_copy_that_is_not_terminating(
    terminating_first: bool,
) -> None:
    # A Pod IP reused while the old Pod is still terminating: the new Pod wins.
    old = eslice(
        "web", ep("10.244.1.2", "node-b", ready=False, serving=True, terminating=True), name="a"
    )
    new = eslice("web", ep("10.244.1.2", "node-a", ready=True), name="b")
    slices = [old, new] if terminating_first else [new, old]
    p = only_port(run([service()], slices))
    assert p.endpoints == (Endpoint("10.244.1.2", 8080, node_name="node-a", is_local=True),)


def test_named_target_port_resolved_differently_per_slice() -> None:
    # During a rollout the named port "http" is 8080 in old Pods and 9090 in new ones;
    # each slice carries its own number.
    t = run(
        [service()],
        [
            eslice(
                "web", ep("10.244.1.2"), ep("10.244.1.3"), name="old", ports=[("http", 8080, "TCP")]
            ),
            eslice("web", ep("10.244.1.4"), name="new", ports=[("http", 9090, "TCP")]),
        ],
    )
    assert addresses(only_port(t).endpoints) == [
        "10.244.1.2:8080",
        "10.244.1.3:8080",
        "10.244.1.4:9090",
    ]


def test_selectorless_service_with_hand_made_slice() -> None:
    svc = service("external-db", ports=[port(5432, "pg")])
    assert "selector" not in svc["spec"]
    handmade = eslice(
        "external-db", ep("192.0.2.50", None), name="external-db-1", ports=[("pg", 5432, "TCP")]
    )
    p = only_port(run([svc], [handmade]))
    assert p.endpoints == (Endpoint("192.0.2.50", 5432),)
    assert p.cluster_endpoints == p.endpoints


def test_slices_without_a_service_are_ignored_silently() -> None:
    t = run([service()], [eslice("gone", ep("10.244.9.9"))])
    assert only_port(t).endpoints == ()
    assert t.skipped == ()


def test_fqdn_slices_are_ignored_silently() -> None:
    t = run([service()], [eslice("web", ep("db.example.com"), address_type="FQDN")])
    assert only_port(t).endpoints == ()
    assert t.skipped == ()


def test_slices_belong_to_the_service_of_their_namespace() -> None:
    t = run(
        [service(), service(namespace="other")],
        [eslice("web", ep("10.244.1.2")), eslice("web", ep("10.244.7.7"), namespace="other")],
    )
    got = {p.name.namespace: addresses(p.endpoints) for p in t.service_map}
    assert got == {"default": ["10.244.1.2:8080"], "other": ["10.244.7.7:8080"]}


@pytest.mark.parametrize(
    ("conditions", "want"),
    [
        ({}, (True, True, False)),
        ({"ready": False}, (False, True, False)),  # serving: nil means true, as upstream reads it
        ({"ready": False, "serving": False}, (False, False, False)),
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"ready": None, "serving": None, "terminating": None}, (True, True, False)),
    ],
)
def test_condition_defaults(conditions: dict[str, Any], want: tuple[bool, bool, bool]) -> None:
    raw = ep("10.244.1.2")
    raw["conditions"] = conditions
    (got,) = only_port(run([service()], [eslice("web", raw)])).endpoints
    assert (got.ready, got.serving, got.terminating) == want


def test_missing_conditions_mean_ready() -> None:
    raw = ep("10.244.1.2")
    del raw["conditions"]
    (got,) = only_port(run([service()], [eslice("web", raw)])).endpoints
    assert (got.ready, got.serving, got.terminating) == (True, True, False)


def test_only_the_first_address_is_used() -> None:
    raw = ep("10.244.1.2")
    raw["addresses"] = ["10.244.1.2", "10.244.1.99"]
    assert addresses(only_port(run([service()], [eslice("web", raw)])).endpoints) == [
        "10.244.1.2:8080"
    ]


def test_endpoint_fields_are_carried_over() -> None:
    raw = ep(
        "10.244.1.2", "node-c", zone="zone-c", for_zones=["zone-c", "zone-b"], for_nodes=["node-c"]
    )
    (got,) = only_port(run([service()], [eslice("web", raw)])).endpoints
    assert got == Endpoint(
        "10.244.1.2",
        8080,
        node_name="node-c",
        zone="zone-c",
        zone_hints=("zone-b", "zone-c"),
        node_hints=("node-c",),
        is_local=False,
    )


@pytest.mark.parametrize(
    ("spelling", "want"),
    [
        ("010.244.001.002", "10.244.1.2"),  # legacy leading zeros are decimal, as ParseIPSloppy
        ("::ffff:10.244.1.2", "10.244.1.2"),  # IPv4-mapped: Go prints plain IPv4
    ],
)
def test_ipv4_spellings_upstream_accepts(spelling: str, want: str) -> None:
    p = only_port(run([service()], [eslice("web", ep(spelling))]))
    assert [e.ip for e in p.endpoints] == [want]


@pytest.mark.parametrize(
    "spelling",
    [
        "256.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        " 1.2.3.4",
        "1.2.3.4\n",
        "0x1.2.3.4",
        "1.2.3.4/32",
        "\u0661.2.3.4",
        "1..2.3",
        "",
        "fe80::1%eth0",
    ],
)
def test_addresses_upstream_rejects(spelling: str) -> None:
    t = run([service()], [eslice("web", ep(spelling), name="s")])
    assert only_port(t).endpoints == ()
    (report,) = t.skipped
    assert report.name == "s"
    assert "is not a valid IP address; endpoint dropped" in report.reason


def test_ipv6_addresses_are_spelled_canonically() -> None:
    # Many spellings of addresses with zero runs in every position: each must come
    # out as ipaddress (RFC 5952) spells it.
    rng = random.Random(7)
    spelled = {  # forms libc may print with an embedded IPv4 address
        "::2:3": "::2:3",
        "0:0:0:0:0:0:A00:1": "::a00:1",
        "::1": "::1",
        "1:0:0:2:0:0:0:3": "1:0:0:2::3",
        "1:0:0:2:0:0:3:4": "1::2:0:0:3:4",
    }
    while len(spelled) < 300:
        groups = [
            rng.choice([0, 0, 0, 1, 0xA, 0xDB8, 0xFFFF, rng.randrange(0x10000)]) for _ in range(8)
        ]
        address = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        if address.ipv4_mapped is not None:
            continue
        text = ":".join(rng.choice([f"{g:x}", f"{g:04X}", f"{g:X}"]) for g in groups)
        spelled[text] = str(address)
    t = run(
        [service(cluster_ip="fd00::10", ip_families=["IPv6"])],
        [eslice("web", *(ep(text) for text in spelled), address_type="IPv6")],
    )
    assert t.skipped == ()
    assert [e.ip for e in only_port(t).endpoints] == sorted(set(spelled.values()))


# --------------------------------------------------------------------------- endpoint selection


def selection(
    *endpoints: dict[str, Any], node: NodeInfo = NODE, **spec: Any
) -> tuple[list[str], list[str], bool]:
    """(cluster endpoints, local endpoints, has any) of a one-port Service."""
    p = only_port(run([service(**spec)], [eslice("web", *endpoints)], node))
    return (
        [e.ip for e in p.cluster_endpoints],
        [e.ip for e in p.local_endpoints],
        p.has_any_endpoints,
    )


def terminating(ip: str, node: str | None = "node-b", **hints: Any) -> dict[str, Any]:
    """An endpoint still serving while it shuts down."""
    return ep(ip, node, ready=False, serving=True, terminating=True, **hints)


def gone(ip: str) -> dict[str, Any]:
    """An endpoint shutting down and no longer serving."""
    return ep(ip, ready=False, serving=False, terminating=True)


def test_ready_endpoints_are_used() -> None:
    got = selection(ep("10.0.1.1"), ep("10.0.1.2", ready=False), terminating("10.0.1.3"))
    assert got == (["10.0.1.1"], [], True)


def test_serving_terminating_endpoints_are_the_fallback() -> None:
    got = selection(ep("10.0.1.2", ready=False), terminating("10.0.1.3"), gone("10.0.1.4"))
    assert got == (["10.0.1.3"], [], True)


def test_no_usable_endpoint() -> None:
    got = selection(ep("10.0.1.2", ready=False), gone("10.0.1.4"))
    assert got == ([], [], False)


def test_endpoints_keeps_every_endpoint_seen() -> None:
    p = only_port(
        run(
            [service()],
            [eslice("web", ep("10.0.1.1"), ep("10.0.1.2", ready=False), gone("10.0.1.4"))],
        )
    )
    assert [e.ip for e in p.endpoints] == ["10.0.1.1", "10.0.1.2", "10.0.1.4"]


@pytest.mark.parametrize(
    ("endpoints", "want"),
    [
        pytest.param(
            [ep("10.0.1.1", for_zones=["zone-a"]), ep("10.0.1.2", for_zones=["zone-b"])],
            ["10.0.1.1"],
            id="hinted-for-this-zone",
        ),
        pytest.param(
            [ep("10.0.1.1", for_zones=["zone-a"]), ep("10.0.1.2")],
            ["10.0.1.1", "10.0.1.2"],
            id="one-ready-endpoint-without-hint",
        ),
        pytest.param(
            [ep("10.0.1.1", for_zones=["zone-a"]), ep("10.0.1.2", ready=False)],
            ["10.0.1.1"],
            id="unready-endpoint-without-hint-does-not-count",
        ),
        pytest.param(
            [ep("10.0.1.1", for_zones=["zone-b"]), ep("10.0.1.2", for_zones=["zone-c"])],
            ["10.0.1.1", "10.0.1.2"],
            id="nothing-hinted-for-this-zone",
        ),
        pytest.param(
            [ep("10.0.1.1", for_zones=["zone-a", "zone-b"]), ep("10.0.1.2", for_zones=["zone-b"])],
            ["10.0.1.1"],
            id="several-zones-per-endpoint",
        ),
        pytest.param(
            [
                ep("10.0.1.1", for_nodes=["node-b"], for_zones=["zone-a"]),
                ep("10.0.1.2", for_nodes=["node-a"], for_zones=["zone-b"]),
            ],
            ["10.0.1.2"],
            id="same-node-wins-over-same-zone",
        ),
        pytest.param(
            [
                ep("10.0.1.1", for_nodes=["node-b"], for_zones=["zone-a"]),
                ep("10.0.1.2", for_zones=["zone-b"]),
            ],
            ["10.0.1.1"],
            id="node-hint-missing-falls-back-to-zone-hints",
        ),
        pytest.param(
            [
                ep("10.0.1.1", for_nodes=["node-b"], for_zones=["zone-a"]),
                ep("10.0.1.2", for_nodes=["node-c"], for_zones=["zone-b"]),
            ],
            ["10.0.1.1"],
            id="nothing-for-this-node-falls-back-to-zone-hints",
        ),
        pytest.param(
            [
                ep("10.0.1.1", ready=False, serving=True, terminating=True, for_zones=["zone-b"]),
                ep("10.0.1.2", ready=False, serving=True, terminating=True, for_zones=["zone-a"]),
            ],
            ["10.0.1.1", "10.0.1.2"],
            id="terminating-fallback-ignores-hints",
        ),
    ],
)
def test_topology_hints(endpoints: list[dict[str, Any]], want: list[str]) -> None:
    assert selection(*endpoints)[0] == want


def test_hints_need_no_annotation_or_traffic_distribution() -> None:
    # Since ServiceTrafficDistribution, kube-proxy follows hints wherever they are;
    # the EndpointSlice controller is the one that reads the annotation and field.
    hinted = (ep("10.0.1.1", for_zones=["zone-a"]), ep("10.0.1.2", for_zones=["zone-b"]))
    plain = selection(*hinted)
    annotated = selection(*hinted, trafficDistribution="PreferClose")
    assert plain[0] == annotated[0] == ["10.0.1.1"]


def test_zone_hints_unused_on_a_node_without_zone() -> None:
    hinted = (ep("10.0.1.1", for_zones=["zone-a"]), ep("10.0.1.2", for_zones=["zone-b"]))
    assert selection(*hinted, node=NodeInfo("node-a"))[0] == ["10.0.1.1", "10.0.1.2"]


def test_internal_local_policy_uses_only_local_endpoints() -> None:
    got = selection(
        ep("10.0.1.1", "node-a"),
        ep("10.0.1.2", "node-b"),
        ep("10.0.1.3", "node-a", ready=False),
        internalTrafficPolicy="Local",
    )
    # A ClusterIP-only Service with internal Local never uses Cluster endpoints.
    assert got == ([], ["10.0.1.1"], True)


def test_local_policy_falls_back_to_local_serving_terminating() -> None:
    got = selection(
        terminating("10.0.1.1", "node-a"),
        ep("10.0.1.2", "node-b"),
        internalTrafficPolicy="Local",
    )
    assert got == ([], ["10.0.1.1"], True)


def test_local_policy_without_local_endpoints() -> None:
    got = selection(ep("10.0.1.2", "node-b"), internalTrafficPolicy="Local")
    # Nothing on this node, but the Service has endpoints elsewhere (so: DROP, not REJECT).
    assert got == ([], [], True)


def test_local_policy_ignores_topology() -> None:
    got = selection(
        ep("10.0.1.1", "node-a", for_zones=["zone-b"]),
        ep("10.0.1.2", "node-b", for_zones=["zone-a"]),
        internalTrafficPolicy="Local",
    )
    assert got == ([], ["10.0.1.1"], True)


def test_external_local_policy_keeps_cluster_endpoints_too() -> None:
    # Cluster endpoints still serve ClusterIP traffic (and short-circuiting).
    got = selection(
        ep("10.0.1.1", "node-a"),
        ep("10.0.1.2", "node-b"),
        type="NodePort",
        ports=[port(node_port=30080)],
        externalTrafficPolicy="Local",
    )
    assert got == (["10.0.1.1", "10.0.1.2"], ["10.0.1.1"], True)


def test_external_local_policy_needs_external_access() -> None:
    # A LoadBalancer without node ports and without an IP yet is not externally
    # accessible, so its Local policy has nothing to apply to.
    got = selection(
        ep("10.0.1.1", "node-a"),
        ep("10.0.1.2", "node-b"),
        type="LoadBalancer",
        allocateLoadBalancerNodePorts=False,
        externalTrafficPolicy="Local",
    )
    assert got == (["10.0.1.1", "10.0.1.2"], [], True)


def test_is_local_needs_a_node_name() -> None:
    p = only_port(run([service()], [eslice("web", ep("10.0.1.1", ""))], NodeInfo("")))
    assert not p.endpoints[0].is_local


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(
            service("bad", ports=[port(80, "a"), port(70000, "b")]),
            "Service default/bad: spec.ports[1].port 70000 is out of range 1-65535",
            id="port-out-of-range",
        ),
        pytest.param(
            service("bad", ports=[port(0)]),
            "Service default/bad: spec.ports[0].port 0 is out of range 1-65535",
            id="port-zero",
        ),
        pytest.param(
            service("bad", ports=[port(80, "a"), port(81, "a")]),
            'Service default/bad: spec.ports[1] repeats name "a" and protocol TCP of spec.ports[0]',
            id="duplicate-port",
        ),
        pytest.param(
            service("bad", type="NodePort", ports=[port(node_port=99999)]),
            "Service default/bad: spec.ports[0].nodePort 99999 is out of range 1-65535",
            id="node-port-out-of-range",
        ),
        pytest.param(
            service("bad", ports=[{"name": "http", "port": "80"}]),
            'Service default/bad: spec.ports[0].port is not an integer: "80"',
            id="port-not-a-number",
        ),
        pytest.param(
            {"metadata": {"name": "bad", "namespace": NS}},
            "Service default/bad: has no spec",
            id="no-spec",
        ),
        pytest.param(
            service("bad", ports=[]),
            "Service default/bad: has no spec.ports",
            id="no-ports",
        ),
        pytest.param(
            service("bad", cluster_ip="10.96.0.300"),
            'Service default/bad: spec.clusterIPs[0] "10.96.0.300" is not a valid IP address',
            id="bad-cluster-ip",
        ),
        pytest.param(
            service("bad", cluster_ip="10.96.0.11", ip_families=["IPv6"]),
            "Service default/bad: spec.clusterIPs[0] 10.96.0.11 is not of family "
            'spec.ipFamilies[0] "IPv6"',
            id="cluster-ip-family-mismatch",
        ),
        pytest.param(
            service("bad", cluster_ip="10.96.0.11", cluster_ips=["10.96.0.11", "10.96.0.12"]),
            "Service default/bad: spec.clusterIPs has two IPv4 addresses",
            id="two-ipv4-cluster-ips",
        ),
        pytest.param(
            service("bad", externalIPs=["192.0.2.1", "example.com"]),
            'Service default/bad: spec.externalIPs[1] "example.com" is not a valid IP address',
            id="bad-external-ip",
        ),
        pytest.param(
            service(
                "bad", type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "1.2.3"}]}}
            ),
            'Service default/bad: status.loadBalancer.ingress[0].ip "1.2.3" is not a valid IP '
            "address",
            id="bad-ingress-ip",
        ),
        pytest.param(
            service(
                "bad",
                type="LoadBalancer",
                status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "ipMode": "Magic"}]}},
            ),
            'Service default/bad: status.loadBalancer.ingress[0].ipMode "Magic" is not one of '
            "VIP, Proxy",
            id="bad-ip-mode",
        ),
        pytest.param(
            service(
                "bad", type="LoadBalancer", loadBalancerSourceRanges=["10.0.0.0/8", "10.0.0.0"]
            ),
            'Service default/bad: spec.loadBalancerSourceRanges[1] "10.0.0.0" is not a valid CIDR',
            id="bad-source-range",
        ),
        pytest.param(
            service(
                "bad",
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}},
            ),
            "Service default/bad: spec.sessionAffinityConfig.clientIP.timeoutSeconds 0 is out of "
            "range 1-86400",
            id="bad-affinity-timeout",
        ),
        pytest.param(
            service("bad", sessionAffinity="Cookie"),
            'Service default/bad: spec.sessionAffinity "Cookie" is not one of None, ClientIP',
            id="bad-affinity",
        ),
        pytest.param(
            service("bad", externalTrafficPolicy="Nearest"),
            'Service default/bad: spec.externalTrafficPolicy "Nearest" is not one of Cluster, '
            "Local",
            id="bad-external-policy",
        ),
        pytest.param(
            service("bad", internalTrafficPolicy=7),
            "Service default/bad: spec.internalTrafficPolicy is not a string: 7",
            id="bad-internal-policy",
        ),
        pytest.param(
            service("bad", type="Balanced"),
            'Service default/bad: spec.type "Balanced" is not one of ClusterIP, NodePort, '
            "LoadBalancer, ExternalName",
            id="bad-type",
        ),
        pytest.param(
            service(
                "bad", type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=-1
            ),
            "Service default/bad: spec.healthCheckNodePort -1 is out of range 1-65535",
            id="bad-health-check-node-port",
        ),
        pytest.param(
            {"metadata": {"namespace": NS}, "spec": {}},
            "Service default/<unnamed>: has no metadata.name",
            id="no-name",
        ),
        pytest.param(
            ["not", "an", "object"],
            'Service <unnamed>: is not an object: ["not", "an", "object"]',
            id="not-an-object",
        ),
    ],
)
def test_invalid_service_is_reported_and_others_unaffected(bad: Any, reason: str) -> None:
    good = service("good")
    slices = [eslice("good", ep("10.244.1.2")), eslice("bad", ep("10.244.1.3"))]
    t = run([good, bad], slices)
    assert reasons(t) == [reason]
    assert port_of(t, key("good")) == only_port(run([good], slices))


@pytest.mark.parametrize(
    ("bad_slice", "reason", "kept"),
    [
        pytest.param(
            eslice("web", ep("10.244.1.3"), ep("10.244.1.300"), name="s"),
            'EndpointSlice default/s: endpoints[1].addresses[0] "10.244.1.300" is not a valid '
            "IP address; endpoint dropped",
            ["10.244.1.2", "10.244.1.3"],
            id="bad-endpoint-ip",
        ),
        pytest.param(
            eslice("web", ep("fd00::3"), name="s"),
            "EndpointSlice default/s: endpoints[0].addresses[0] fd00::3 is not an IPv4 address; "
            "endpoint dropped",
            ["10.244.1.2"],
            id="endpoint-of-wrong-family",
        ),
        pytest.param(
            eslice("web", {"addresses": [], "conditions": {}}, name="s"),
            "EndpointSlice default/s: endpoints[0].addresses is not a non-empty list: []; "
            "endpoint dropped",
            ["10.244.1.2"],
            id="no-address",
        ),
        pytest.param(
            eslice("web", {"addresses": ["10.244.1.3"], "conditions": {"ready": "yes"}}, name="s"),
            'EndpointSlice default/s: endpoints[0].conditions.ready is not a boolean: "yes"; '
            "endpoint dropped",
            ["10.244.1.2"],
            id="condition-not-boolean",
        ),
        pytest.param(
            eslice("web", ep("10.244.1.3"), name="s", ports=[("http", 0, "TCP")]),
            "EndpointSlice default/s: ports[0].port 0 is out of range 1-65535",
            ["10.244.1.2"],
            id="bad-slice-port",
        ),
        pytest.param(
            eslice("web", ep("10.244.1.3"), name="s", ports=[("http", None, "TCP")]),
            "EndpointSlice default/s: ports[0] has no port number "
            '(kube-proxy cannot use "all ports")',
            ["10.244.1.2"],
            id="slice-port-without-number",
        ),
        pytest.param(
            eslice("web", ep("10.244.1.3"), name="s", ports=[]),
            "EndpointSlice default/s: has endpoints but no ports, so it serves no Service port",
            ["10.244.1.2"],
            id="slice-without-ports",
        ),
        pytest.param(
            eslice("web", ep("10.244.1.3"), name="s", address_type="IPX"),
            'EndpointSlice default/s: addressType "IPX" is not one of IPv4, IPv6, FQDN',
            ["10.244.1.2"],
            id="bad-address-type",
        ),
        pytest.param(
            eslice(None, ep("10.244.1.3"), name="s"),
            "EndpointSlice default/s: has no kubernetes.io/service-name label, so it belongs to "
            "no Service",
            ["10.244.1.2"],
            id="no-service-label",
        ),
    ],
)
def test_invalid_slice_is_reported_and_the_rest_kept(
    bad_slice: dict[str, Any], reason: str, kept: list[str]
) -> None:
    good_slice = eslice("web", ep("10.244.1.2"), name="good")
    t = run(
        [service(), service("other")], [good_slice, bad_slice, eslice("other", ep("10.244.5.5"))]
    )
    assert reasons(t) == [reason]
    assert [e.ip for e in port_of(t, key()).endpoints] == kept
    assert [e.ip for e in port_of(t, key("other")).endpoints] == ["10.244.5.5"]


def test_service_listed_twice_is_ignored_whichever_order() -> None:
    first = service(cluster_ip="10.96.0.10")
    second = service(cluster_ip="10.96.0.11")
    for order in ([first, second], [second, first]):
        t = run([*order, service("other")])
        assert [p.name.name for p in t.service_map] == ["other"]
        assert reasons(t) == ["Service default/web: is listed 2 times; all copies ignored"]


class Exploding(Mapping[str, Any]):
    """A mapping that fails on every read: the kind of surprise no reader foresees."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


def test_unforeseen_failure_is_reported_not_raised() -> None:
    bad = service("bad")
    bad["spec"] = Exploding()
    t = run([bad, service()])
    assert [p.name.name for p in t.service_map] == ["web"]
    assert reasons(t) == ["Service default/bad: could not be translated: RuntimeError: boom"]


def _mutations(obj: Any, rng: random.Random) -> Any:
    """A copy of ``obj`` with one value somewhere replaced by something of the wrong kind."""
    junk = [None, "", "x", -1, 0, 70000, 1.5, True, [], {}, [None], {"a": 1}, "::", "1.2.3.4/99"]
    clone = copy.deepcopy(obj)
    containers: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict | list):
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(clone)
    target = rng.choice(containers)
    if isinstance(target, dict) and target:
        target[rng.choice(list(target))] = rng.choice(junk)
    elif isinstance(target, list) and target:
        target[rng.randrange(len(target))] = rng.choice(junk)
    return clone


def test_never_raises_on_mangled_objects() -> None:
    rng = random.Random(1234)
    services = [
        service(),
        service(
            "lb",
            type="LoadBalancer",
            ports=[port(node_port=30080), port(53, "dns", "UDP", 30053)],
            externalTrafficPolicy="Local",
            healthCheckNodePort=32000,
            status=LB_STATUS,
            loadBalancerSourceRanges=["10.0.0.0/8"],
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}},
        ),
    ]
    slices = [
        eslice("web", ep("10.244.1.2", for_zones=["zone-a"], for_nodes=["node-a"])),
        eslice("lb", terminating("10.244.1.3"), ports=[("http", 8080, "TCP"), ("dns", 53, "UDP")]),
    ]
    for _ in range(400):
        mangled_services = [_mutations(s, rng) if rng.random() < 0.5 else s for s in services]
        mangled_slices = [_mutations(s, rng) if rng.random() < 0.5 else s for s in slices]
        t = run(mangled_services, mangled_slices)
        assert isinstance(t, Translation)
        for s in t.skipped:
            assert s.reason and "could not be translated" not in s.reason, s


# --------------------------------------------------------------------------- determinism


def _cluster() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    services = [
        service("web"),
        service(
            "dns", cluster_ip="10.96.0.53", ports=[port(53, "dns", "UDP"), port(53, "dns-tcp")]
        ),
        service(
            "dual",
            cluster_ip="fd00::20",
            cluster_ips=["fd00::20", "10.96.0.20"],
            ip_families=["IPv6", "IPv4"],
        ),
        service("bad", ports=[port(70000)]),
    ]
    slices = [
        eslice(
            "web",
            ep("10.244.1.2", "node-a"),
            ep("10.244.2.2"),
            terminating("10.244.1.9"),
            name="w1",
        ),
        eslice("web", terminating("10.244.2.2"), ep("10.244.3.3"), name="w2"),
        eslice(
            "dns",
            ep("10.244.1.5"),
            ep("10.244.1.6", "node-a"),
            ports=[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP")],
        ),
        eslice("dual", ep("10.244.1.7"), ep("10.244.1.777"), name="d4"),
        eslice("dual", ep("fd00:244::7"), name="d6", address_type="IPv6"),
    ]
    return services, slices


def test_same_input_gives_equal_maps() -> None:
    services, slices = _cluster()
    first, again = run(services, slices), run(copy.deepcopy(services), copy.deepcopy(slices))
    assert first == again
    assert hash(first.service_map) == hash(again.service_map)
    assert first.service_map.diff(again.service_map).empty


def test_input_order_does_not_matter() -> None:
    services, slices = _cluster()
    want = run(services, slices)
    rng = random.Random(99)
    for _ in range(20):
        shuffled_services, shuffled_slices = copy.deepcopy(services), copy.deepcopy(slices)
        rng.shuffle(shuffled_services)
        rng.shuffle(shuffled_slices)
        got = run(shuffled_services, shuffled_slices)
        assert got == want
        assert hash(got.service_map) == hash(want.service_map)


def test_order_inside_slices_does_not_matter() -> None:
    # (Reports name endpoints by index, so only the map is compared here.)
    services, slices = _cluster()
    want = run(services, slices).service_map
    rng = random.Random(5)
    for _ in range(20):
        shuffled = copy.deepcopy(slices)
        for s in shuffled:
            rng.shuffle(s["endpoints"])
            rng.shuffle(s["ports"])
        assert run(services, shuffled).service_map == want


def test_map_is_sorted() -> None:
    services, slices = _cluster()
    m = run(services, slices).service_map
    names = [p.name for p in m]
    assert names == sorted(names)
    for p in m:
        for eps in (p.endpoints, p.cluster_endpoints, p.local_endpoints):
            assert list(eps) == sorted(eps)


def test_output_is_made_of_ordinary_model_objects() -> None:
    # The translator builds model objects without their generated __init__ (it is the
    # hot path); they must still be exactly what the constructor would have made.
    services, slices = _cluster()
    made: list[Any] = []
    for p in run(services, slices).service_map:
        made += [p, p.name, *p.endpoints, *p.load_balancer_ingress]
    assert {type(m) for m in made} >= {ServicePort, ServicePortName, Endpoint}
    for obj in made:
        cls = type(obj)
        assert not hasattr(cls, "__post_init__"), f"{cls.__name__} gained a __post_init__"
        names = [f.name for f in dataclasses.fields(obj)]
        assert set(vars(obj)) == set(names), f"{cls.__name__} fields changed"
        again = cls(**{name: getattr(obj, name) for name in names})
        assert again == obj
        assert hash(again) == hash(obj)


# --------------------------------------------------------------------------- translate_service


def test_translate_service_matches_translate() -> None:
    services, slices = _cluster()
    whole = run(services, slices)
    for svc in services:
        name = svc["metadata"]["name"]
        own = [s for s in slices if s["metadata"]["labels"]["kubernetes.io/service-name"] == name]
        ports, skipped = translate_service(svc, own, NODE)
        assert ports == tuple(p for p in whole.service_map if p.name.name == name)
        assert skipped == tuple(
            s
            for s in whole.skipped
            if s.name == name or s.name in {x["metadata"]["name"] for x in own}
        )


def test_translate_service_reports_slices_of_other_services() -> None:
    ports, skipped = translate_service(
        service(), [eslice("web", ep("10.244.1.2")), eslice("db", ep("10.244.1.3"))], NODE
    )
    assert [e.ip for e in ports[0].endpoints] == ["10.244.1.2"]
    assert [str(s) for s in skipped] == [
        "EndpointSlice default/db-abcde: belongs to Service default/db, not default/web"
    ]


def test_translate_service_of_headless_service() -> None:
    assert translate_service(
        service(cluster_ip="None"), [eslice("web", ep("10.244.1.2"))], NODE
    ) == ((), ())


# --------------------------------------------------------------------------- nodes and reports


def test_node_info() -> None:
    node = {
        "metadata": {
            "name": "node-a",
            "labels": {"topology.kubernetes.io/zone": "zone-a", "kubernetes.io/os": "linux"},
        },
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "FD00:244:1::/64"]},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "node-a"},
                {"type": "ExternalIP", "address": "203.0.113.4"},
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "InternalIP", "address": "FD00::1"},
                {"type": "InternalIP", "address": "not-an-ip"},
            ]
        },
    }
    assert node_info(node, "node-a") == NodeInfo(
        name="node-a",
        ips=("10.0.0.1", "fd00::1", "203.0.113.4"),
        zone="zone-a",
        labels=(("kubernetes.io/os", "linux"), ("topology.kubernetes.io/zone", "zone-a")),
        pod_cidrs=("10.244.1.0/24", "fd00:244:1::/64"),
    )


def test_node_info_older_pod_cidr_field() -> None:
    assert node_info({"spec": {"podCIDR": "10.244.1.0/24"}}, "n").pod_cidrs == ("10.244.1.0/24",)


@pytest.mark.parametrize("node", [None, {}, {"metadata": "junk", "spec": 3, "status": []}])
def test_node_info_without_a_usable_node(node: Any) -> None:
    assert node_info(node, "node-a") == NodeInfo("node-a")


def test_skipped_reads_as_a_sentence() -> None:
    assert (
        str(Skipped("Service", "default", "web", "has no spec"))
        == "Service default/web: has no spec"
    )
    assert (
        str(Skipped("Service", "", "", "is not an object")) == "Service <unnamed>: is not an object"
    )
