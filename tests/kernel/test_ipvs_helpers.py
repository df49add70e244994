"""The IPVS mode's ipsets and helper rules in a real kernel, with real packets.

This kernel has no IPVS and no dummy interfaces, so the virtual services cannot be
programmed; what can be shown is that the sets and the helper iptables rules load
and do their part. The node namespace of the test topology gets the plan's ipsets
(:func:`kubenet.dataplane.ipset.sync`) and helper rules
(:func:`kubenet.dataplane.iptables.apply`), and the service addresses are bound on
its loopback device where ``kube-ipvs0`` would hold them. A server on the node
listens on those addresses, standing where IPVS would take the packets over:

* a member of ``KUBE-CLUSTER-IP`` is matched: the masquerade rule's counter counts
  the client's connection and ``KUBE-IPVS-FILTER`` lets it through to the server;
  the same address on a port that is no service is rejected, although the server
  listens there too;
* a source outside loadBalancerSourceRanges is dropped by
  ``KUBE-SOURCE-RANGES-FIREWALL``; a source inside gets through.

The tracer, given the same plan without its virtual services (the IPVS table this
kernel cannot have), must agree with each observation.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.dataplane import ipset, iptables
from kubenet.model import IPFamily, Protocol, ServiceMap
from kubenet.render.ipvs import IpvsPlan, render
from kubenet.testing.netns import Outcome, PodServer, Topology
from kubenet.trace import Packet, Verdict
from kubenet.trace.ipvs import trace
from tests.scenarios import BASE_OPTIONS, CLIENT, NODE_IP, ep, svc

pytestmark = pytest.mark.kernel

CLUSTER_IP = "10.96.3.10"
ALLOW_VIP, DENY_VIP = "203.0.113.131", "203.0.113.132"
SERVICE_PORT, OTHER_PORT = 80, 81
TIMEOUT = 0.6

SERVICES = ServiceMap.of(
    [
        svc("web", CLUSTER_IP, (ep("pod-a"),), node_port=30310),
        # Both ranges hold the node's own address, so the plan needs no -m ipvs rule
        # (this kernel has no xt_ipvs); the client 10.180.0.2 is inside one, outside the other.
        svc(
            "lb-allow",
            "10.96.3.11",
            (ep("pod-a"),),
            lb_ips=(ALLOW_VIP,),
            source_ranges=("10.180.0.0/24",),
        ),
        svc(
            "lb-deny",
            "10.96.3.12",
            (ep("pod-a"),),
            lb_ips=(DENY_VIP,),
            source_ranges=("10.180.0.1/32",),
        ),
    ]
)


@pytest.fixture(scope="module")
def plan() -> IpvsPlan:
    return render(SERVICES, BASE_OPTIONS)


@pytest.fixture(scope="module")
def loaded(topology: Topology, plan: IpvsPlan) -> Iterator[Topology]:
    """The plan's sets and helper rules in the node namespace, its addresses on lo."""
    if shutil.which("ipset") is None:
        pytest.skip("needs the ipset command")
    node = topology.node
    reason = ipset.available(netns=node.name)
    if reason:
        pytest.skip(reason)
    assert "-m ipvs" not in plan.iptables_restore
    ipset.sync(plan.ipsets, netns=node.name)
    server = None
    try:
        iptables.apply(plan.helper, netns=node.name)
        node.ip(f"address add {ip}/32 dev lo" for ip in plan.bound_addresses)
        server = PodServer(node, "node", plan.bound_addresses, [SERVICE_PORT, OTHER_PORT])
        server.wait_ready()
        yield topology
    finally:
        if server is not None:
            server.stop()
        node.ip(f"address del {ip}/32 dev lo" for ip in plan.bound_addresses)
        for family in IPFamily:
            iptables.cleanup(family, netns=node.name, kubelet_chains=True)
        ipset.destroy([s.name for s in plan.ipsets], netns=node.name)
        node.run(["conntrack", "-F"], check=False)


def counter(topology: Topology, table: str, pattern: str) -> int:
    """The packet counter of the one rule of ``table`` matching ``pattern``."""
    saved = topology.node.run(["iptables-save", "-c", "-t", table]).stdout
    found = [line for line in saved.splitlines() if re.search(pattern, line)]
    assert len(found) == 1, found
    m = re.match(r"\[(\d+):\d+\]", found[0])
    assert m, found[0]
    return int(m.group(1))


def attempt(topology: Topology, dst: str, port: int) -> Outcome:
    return topology.request(Protocol.TCP, CLIENT, dst, port, timeout=TIMEOUT).outcome


def traced(plan: IpvsPlan, dst: str, port: int) -> Verdict:
    """The tracer's verdict for the client's packet, with no IPVS table (as this kernel)."""
    no_ipvs = replace(plan, virtual_servers=())
    return trace(no_ipvs, Packet(CLIENT, dst, Protocol.TCP, port)).verdict


# iptables-save lists the address match first.
MASQ_RULE = r"! -s 10\.244\.0\.0/16 .*--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"
FILTER_RETURN = r"-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN"


def test_a_clusterip_member_is_matched(loaded: Topology, plan: IpvsPlan) -> None:
    masq, passed = counter(loaded, "nat", MASQ_RULE), counter(loaded, "filter", FILTER_RETURN)
    first = loaded.request(Protocol.TCP, CLIENT, CLUSTER_IP, SERVICE_PORT, timeout=TIMEOUT)
    assert first.outcome is Outcome.REPLY and first.reply is not None
    assert first.reply.endpoint == f"{CLUSTER_IP}:{SERVICE_PORT}"
    # One new connection: nat sees its first packet, filter every packet of it.
    assert counter(loaded, "nat", MASQ_RULE) == masq + 1
    assert counter(loaded, "filter", FILTER_RETURN) > passed
    assert traced(plan, CLUSTER_IP, SERVICE_PORT) is Verdict.ACCEPT


def test_a_bound_address_on_a_port_that_is_no_service_is_rejected(
    loaded: Topology, plan: IpvsPlan
) -> None:
    masq = counter(loaded, "nat", MASQ_RULE)
    assert attempt(loaded, CLUSTER_IP, OTHER_PORT) is Outcome.REFUSED
    # Not a member: the masquerade rule did not count it.
    assert counter(loaded, "nat", MASQ_RULE) == masq
    assert traced(plan, CLUSTER_IP, OTHER_PORT) is Verdict.REJECT


def test_a_source_outside_the_load_balancer_ranges_is_dropped(
    loaded: Topology, plan: IpvsPlan
) -> None:
    drops = counter(loaded, "filter", r"-A KUBE-SOURCE-RANGES-FIREWALL -j DROP")
    assert attempt(loaded, DENY_VIP, SERVICE_PORT) is Outcome.TIMEOUT
    assert counter(loaded, "filter", r"-A KUBE-SOURCE-RANGES-FIREWALL -j DROP") > drops
    assert traced(plan, DENY_VIP, SERVICE_PORT) is Verdict.DROP


def test_a_source_inside_the_load_balancer_ranges_gets_through(
    loaded: Topology, plan: IpvsPlan
) -> None:
    assert attempt(loaded, ALLOW_VIP, SERVICE_PORT) is Outcome.REPLY
    assert traced(plan, ALLOW_VIP, SERVICE_PORT) is Verdict.ACCEPT


def test_a_nodeport_is_marked_for_masquerade(loaded: Topology, plan: IpvsPlan) -> None:
    rule = r"-m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"
    before = counter(loaded, "nat", rule)
    # Nothing listens on the node port and nothing (no IPVS) takes it over: refused,
    # but the packet passed the NodePort rule first.
    assert attempt(loaded, NODE_IP, 30310) is Outcome.REFUSED
    assert counter(loaded, "nat", rule) == before + 1
