"""The ServiceMap model: identity, ordering, family views and diffs."""

from __future__ import annotations

from dataclasses import replace

from kubenet.model import (
    Endpoint,
    IPFamily,
    IPMode,
    LoadBalancerIngress,
    Protocol,
    ServiceMap,
    ServicePort,
    ServicePortName,
)


def name(svc: str, port: str = "http", proto: Protocol = Protocol.TCP) -> ServicePortName:
    return ServicePortName("ns", svc, port, proto)


def port(svc: str, *ips: str, endpoints: tuple[Endpoint, ...] = ()) -> ServicePort:
    return ServicePort(
        name(svc), ips or ("10.96.0.1",), 80, endpoints=endpoints,
        cluster_endpoints=endpoints, has_any_endpoints=bool(endpoints),
    )


def test_key_spelling_matches_the_architecture_and_upstream() -> None:
    assert str(name("web")) == "ns/web:http/TCP"
    assert name("web").upstream == "ns/web:http"
    assert ServicePortName("ns", "web", "", Protocol.UDP).upstream == "ns/web"


def test_endpoint_address_brackets_ipv6() -> None:
    assert Endpoint("10.0.0.1", 80).address == "10.0.0.1:80"
    assert Endpoint("fd00::1", 80).address == "[fd00::1]:80"
    assert Endpoint("fd00::1", 80).family is IPFamily.IPV6


def test_maps_built_in_any_order_are_equal_and_hash_alike() -> None:
    a, b = port("a"), port("b", "10.96.0.2")
    first, second = ServiceMap.of([a, b]), ServiceMap.of([b, a])
    assert first == second and hash(first) == hash(second)
    assert [p.name.name for p in first] == ["a", "b"]
    assert first.get(name("a")) == a and name("b") in first and len(first) == 2


def test_diff_is_a_set_difference_by_key() -> None:
    a, b, c = port("a"), port("b", "10.96.0.2"), port("c", "10.96.0.3")
    old = ServiceMap.of([a, b])
    new = ServiceMap.of([replace(a, port=81), c])
    diff = old.diff(new)
    assert diff.added == {c.name} and diff.removed == {b.name} and diff.changed == {a.name}
    assert old.diff(old).empty


def test_single_family_port_is_its_own_view() -> None:
    p = port("a", endpoints=(Endpoint("10.244.0.2", 8080),))
    assert p.for_family(IPFamily.IPV4) is p


def test_dual_stack_split_keeps_each_familys_addresses_and_endpoints() -> None:
    v4, v6 = Endpoint("10.244.0.2", 8080), Endpoint("fd00::2", 8080)
    p = replace(
        port("a", "10.96.0.1", "fd00:96::1", endpoints=(v4, v6)),
        external_ips=("198.51.100.1", "2001:db8::1"),
    )
    six = p.for_family(IPFamily.IPV6)
    assert six.cluster_ips == ("fd00:96::1",) and six.external_ips == ("2001:db8::1",)
    assert six.endpoints == (v6,) and six.cluster_endpoints == (v6,)
    assert ServiceMap.of([p]).for_family(IPFamily.IPV6).ports == (six,)


def test_has_any_endpoints_is_judged_per_family() -> None:
    # Endpoints only in IPv4: the IPv6 view has none (REJECT there, not DROP).
    p = port("a", "10.96.0.1", "fd00:96::1", endpoints=(Endpoint("10.244.0.2", 8080),))
    assert p.for_family(IPFamily.IPV4).has_any_endpoints
    assert not p.for_family(IPFamily.IPV6).has_any_endpoints


def test_family_view_drops_ports_without_a_cluster_ip_of_that_family() -> None:
    smap = ServiceMap.of([port("a"), port("b", "fd00:96::2")])
    assert [p.name.name for p in smap.for_family(IPFamily.IPV6)] == ["b"]


def test_proxy_mode_load_balancer_ips_do_not_make_a_port_externally_accessible() -> None:
    p = port("a")
    assert not p.externally_accessible
    proxy = replace(p, load_balancer_ingress=(LoadBalancerIngress("203.0.113.1", IPMode.PROXY),))
    assert not proxy.externally_accessible
    vip = replace(p, load_balancer_ingress=(LoadBalancerIngress("203.0.113.1"),))
    assert vip.externally_accessible
