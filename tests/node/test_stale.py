"""Which UDP conntrack entries a change leaves stale."""

from __future__ import annotations

from dataclasses import replace

from kubenet.dataplane.conntrack import FlowMatch
from kubenet.model import IPFamily, LoadBalancerIngress, Protocol, ServicePort
from kubenet.node.changes import PortChange
from kubenet.node.stale import stale_flows
from tests.scenarios import ep, svc

A, B = ep("pod-a", 9090), ep("pod-b", 9090)


def _sorted(flows: list[FlowMatch]) -> list[FlowMatch]:
    return sorted(flows, key=FlowMatch.sort_key)


def dns(*endpoints: object, protocol: Protocol = Protocol.UDP, **kw: object) -> ServicePort:
    return svc("dns", "10.96.0.53", tuple(endpoints), port=53, protocol=protocol, **kw)  # type: ignore[arg-type]


def test_a_udp_service_gaining_its_first_endpoint_clears_its_addresses() -> None:
    before = dns(node_port=30053)
    after = dns(A, node_port=30053, external_ips=("198.51.100.53",))
    flows = stale_flows({after.name: PortChange(before, after)})
    assert flows == _sorted(
        [
            FlowMatch("10.96.0.53", 53),
            FlowMatch("198.51.100.53", 53),
            FlowMatch(None, 30053, family=IPFamily.IPV4),
        ]
    )
    # So does a brand-new Service with endpoints.
    assert FlowMatch("10.96.0.53", 53) in stale_flows({after.name: PortChange(None, after)})


def test_an_endpoint_going_away_clears_what_it_answered() -> None:
    before = dns(A, B, node_port=30053)
    after = dns(B, node_port=30053)
    assert stale_flows({after.name: PortChange(before, after)}) == _sorted(
        [
            FlowMatch("10.96.0.53", 53, A.ip),
            FlowMatch(None, 30053, A.ip, family=IPFamily.IPV4),
        ]
    )


def test_a_removed_port_clears_every_endpoint() -> None:
    before = dns(A, B)
    flows = stale_flows({before.name: PortChange(before, None)})
    assert flows == _sorted([FlowMatch("10.96.0.53", 53, A.ip), FlowMatch("10.96.0.53", 53, B.ip)])


def test_an_endpoint_that_stops_being_ready_counts_as_gone() -> None:
    before = dns(A, B)
    unready = replace(A, ready=False, serving=False)
    after = replace(before, endpoints=(unready, B), cluster_endpoints=(B,), local_endpoints=(B,))
    assert stale_flows({before.name: PortChange(before, after)}) == [
        FlowMatch("10.96.0.53", 53, A.ip)
    ]


def test_nothing_for_tcp_or_unchanged_endpoints() -> None:
    tcp_before, tcp_after = dns(A, B, protocol=Protocol.TCP), dns(B, protocol=Protocol.TCP)
    assert stale_flows({tcp_before.name: PortChange(tcp_before, tcp_after)}) == []
    same = dns(A)
    moved = replace(same, load_balancer_ingress=(LoadBalancerIngress("203.0.113.5"),))
    assert stale_flows({same.name: PortChange(same, moved)}) == []


def test_each_family_clears_its_own_addresses() -> None:
    a6 = ep("pod-a", 9090, ipv6=True)
    before = svc("dns", ("10.96.0.53", "fd00:96::53"), (A, a6), port=53, protocol=Protocol.UDP)
    after = replace(before, endpoints=(), cluster_endpoints=(), local_endpoints=())
    assert stale_flows({before.name: PortChange(before, after)}) == _sorted(
        [FlowMatch("10.96.0.53", 53, A.ip), FlowMatch("fd00:96::53", 53, a6.ip)]
    )
