"""The IPVS tracer: the helper rules, the plan's ipsets and the IPVS table, walked together.

The shared scenarios (tests/test_scenarios.py) check the verdicts service by service;
here are the pieces: how set members match, where IPVS takes a packet and what it
does without real servers, the helper rules that only IPVS mode has
(``KUBE-IPVS-FILTER``, ``KUBE-IPVS-OUT-FILTER``, hairpin through ``KUBE-LOOP-BACK``),
and the iptables tracer's additions this mode needs (``-m set``, ``-m ipvs``,
``-m physdev``, an IPVS stage).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from kubenet.model import IPFamily, Protocol, ServiceMap, ServicePort
from kubenet.options import RenderOptions
from kubenet.render.iptables import IptablesPlan, JumpRule
from kubenet.render.ipvs import IpSet, IpvsPlan, SetType, render
from kubenet.trace import Packet, Verdict
from kubenet.trace.iptables import Header, Interception, IptablesTraceError
from kubenet.trace.iptables import Tracer as IptablesTracer
from kubenet.trace.ipvs import Tracer, trace
from tests.scenarios import BASE_OPTIONS, CLIENT, NODE_IP, POD_C, TOPOLOGY, ep, svc

POD_A = TOPOLOGY["pod-a"]["ipv4"]
A, B, R = f"{POD_A}:8080", f"{TOPOLOGY['pod-b']['ipv4']}:8080", f"{TOPOLOGY['pod-r']['ipv4']}:8080"


def packet(src: str, dst: str, dport: int, protocol: Protocol = Protocol.TCP) -> Packet:
    return Packet(src=src, dst=dst, protocol=protocol, dport=dport)


def plan_of(*ports: ServicePort, options: RenderOptions = BASE_OPTIONS) -> IpvsPlan:
    return render(ServiceMap.of(list(ports)), options)


def header(src: str, dst: str, dport: int, protocol: str = "tcp") -> Header:
    return Header(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, dport)


# ------------------------------------------------------------------ set membership


def tracer_with(*sets: IpSet) -> Tracer:
    base = render(ServiceMap(), BASE_OPTIONS)
    return Tracer(replace(base, ipsets=sets))


def ipset(kind: SetType, *entries: str, family: IPFamily = IPFamily.IPV4) -> IpSet:
    return IpSet("S", kind, family, "", entries)


def test_hash_ip_port_reads_address_protocol_and_port() -> None:
    t = tracer_with(ipset(SetType.HASH_IP_PORT, "10.96.0.10,tcp:80"))
    assert t.in_set("S", ("dst", "dst"), header(CLIENT, "10.96.0.10", 80))
    assert not t.in_set("S", ("dst", "dst"), header(CLIENT, "10.96.0.10", 81))
    assert not t.in_set("S", ("dst", "dst"), header(CLIENT, "10.96.0.10", 80, "udp"))
    assert not t.in_set("S", ("dst", "dst"), header(CLIENT, "10.96.0.11", 80))
    # src,dst: the address from the source, the port from the destination.
    assert t.in_set("S", ("src", "dst"), header("10.96.0.10", "10.1.1.1", 80))
    assert not t.in_set("S", ("src", "dst"), header(CLIENT, "10.96.0.10", 80))


def test_three_dimensional_sets() -> None:
    nets = tracer_with(ipset(SetType.HASH_IP_PORT_NET, "203.0.113.1,tcp:80,10.180.0.0/24"))
    assert nets.in_set("S", ("dst", "dst", "src"), header(CLIENT, "203.0.113.1", 80))
    assert not nets.in_set("S", ("dst", "dst", "src"), header("10.181.0.2", "203.0.113.1", 80))
    host = tracer_with(ipset(SetType.HASH_IP_PORT_NET, "203.0.113.1,tcp:80,10.180.0.2"))
    assert host.in_set("S", ("dst", "dst", "src"), header(CLIENT, "203.0.113.1", 80))
    assert not host.in_set("S", ("dst", "dst", "src"), header(NODE_IP, "203.0.113.1", 80))
    hairpin = tracer_with(ipset(SetType.HASH_IP_PORT_IP, f"{POD_A},tcp:8080,{POD_A}"))
    assert hairpin.in_set("S", ("dst", "dst", "src"), header(POD_A, POD_A, 8080))
    assert not hairpin.in_set("S", ("dst", "dst", "src"), header(POD_C, POD_A, 8080))


def test_port_and_address_sets() -> None:
    ports = tracer_with(ipset(SetType.BITMAP_PORT, "30080"))
    # A bitmap:port set knows no protocol and no address.
    assert ports.in_set("S", ("dst",), header(CLIENT, NODE_IP, 30080, "udp"))
    assert ports.in_set("S", ("dst",), header(CLIENT, "10.9.9.9", 30080))
    assert not ports.in_set("S", ("dst",), header(CLIENT, NODE_IP, 30081))
    ips = tracer_with(ipset(SetType.HASH_IP, "10.96.0.10"))
    assert ips.in_set("S", ("dst",), header(CLIENT, "10.96.0.10", 1))
    assert not ips.in_set("S", ("src",), header(CLIENT, "10.96.0.10", 1))


def test_flags_family_and_unknown_sets() -> None:
    t = tracer_with(ipset(SetType.HASH_IP_PORT, "10.96.0.10,tcp:80"))
    # Fewer flags than dimensions never match; extra flags are ignored, as the kernel does.
    assert not t.in_set("S", ("dst",), header(CLIENT, "10.96.0.10", 80))
    assert t.in_set("S", ("dst", "dst", "src"), header(CLIENT, "10.96.0.10", 80))
    six = tracer_with(ipset(SetType.HASH_IP_PORT, "fd00::1,tcp:80", family=IPFamily.IPV6))
    assert six.in_set("S", ("dst", "dst"), header("fd00::2", "fd00::1", 80))
    assert not six.in_set("S", ("dst", "dst"), header(CLIENT, "10.96.0.10", 80))
    with pytest.raises(KeyError):
        t.in_set("NOPE", ("dst",), header(CLIENT, "10.96.0.10", 80))
    with pytest.raises(IptablesTraceError, match="source port"):
        t.in_set("S", ("dst", "src"), header(CLIENT, "10.96.0.10", 80))


# ------------------------------------------------------------------ the walk


def test_ipvs_takes_the_packet_after_filter_input_and_lists_its_lines() -> None:
    plan = plan_of(svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-r"))))
    result = trace(plan, packet(CLIENT, "10.96.0.10", 80))
    assert (result.verdict, result.endpoints, result.masquerade) == (Verdict.DNAT, (A, R), True)
    rules = list(result.rules)
    vs = rules.index("IPVS -A -t 10.96.0.10:80 -s rr")
    assert f"IPVS -a -t 10.96.0.10:80 -r {A} -m -w 1" in rules
    assert f"IPVS -a -t 10.96.0.10:80 -r {R} -m -w 1" in rules
    filter_input = rules.index(
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN"
    )
    postrouting = next(i for i, r in enumerate(rules) if "MASQUERADE --random-fully" in r)
    assert filter_input < vs < postrouting


def test_a_virtual_service_without_real_servers_rejects() -> None:
    plan = plan_of(svc("empty", "10.96.0.20", ()))
    for src in (CLIENT, POD_C, NODE_IP):
        result = trace(plan, packet(src, "10.96.0.20", 80))
        assert (result.verdict, result.masquerade) == (Verdict.REJECT, False)
        assert result.rules[-1] == "IPVS -A -t 10.96.0.20:80 -s rr"


def test_other_ports_of_a_bound_address_are_rejected_by_the_ipvs_filter() -> None:
    plan = plan_of(svc("web", "10.96.0.10", (ep("pod-a"),)))
    result = trace(plan, packet(CLIENT, "10.96.0.10", 22))
    assert result.verdict is Verdict.REJECT
    assert result.rules[-1].endswith("--match-set KUBE-IPVS-IPS dst -j REJECT")
    # The node's own addresses are not in KUBE-IPVS-IPS: their other ports are left alone.
    assert trace(plan, packet(CLIENT, NODE_IP, 22)).verdict is Verdict.ACCEPT


def test_the_node_is_kept_off_a_load_balancer_whose_ranges_leave_it_out() -> None:
    lb = svc(
        "lb",
        "10.96.0.40",
        (ep("pod-a"),),
        lb_ips=("203.0.113.40",),
        source_ranges=("192.0.2.0/24",),
    )
    plan = plan_of(lb)
    # The node reaches a VIP bound on kube-ipvs0 with the VIP as source.
    result = trace(plan, packet("203.0.113.40", "203.0.113.40", 80))
    assert result.verdict is Verdict.DROP
    assert result.rules[-1] == (
        "-A KUBE-IPVS-OUT-FILTER -s 203.0.113.40 -m ipvs --vaddr 203.0.113.40 --vproto tcp"
        " --vport 80 -j DROP"
    )
    # Off-node clients are judged by the source ranges instead.
    assert trace(plan, packet(CLIENT, "203.0.113.40", 80)).verdict is Verdict.DROP
    assert trace(plan, packet("192.0.2.9", "203.0.113.40", 80)).endpoints == (A,)
    # With the node inside the ranges there is no such rule.
    inside = plan_of(replace(lb, load_balancer_source_ranges=("10.180.0.0/24",)))
    assert trace(inside, packet("203.0.113.40", "203.0.113.40", 80)).endpoints == (A,)


def test_external_ips_are_masqueraded_for_everyone_with_cluster_policy() -> None:
    plan = plan_of(svc("ext", "10.96.0.90", (ep("pod-a"),), external_ips=("198.51.100.90",)))
    for src in (CLIENT, POD_C):
        result = trace(plan, packet(src, "198.51.100.90", 80))
        assert (result.verdict, result.endpoints, result.masquerade) == (Verdict.DNAT, (A,), True)
    local = plan_of(
        svc(
            "ext",
            "10.96.0.90",
            (ep("pod-a"),),
            external_ips=("198.51.100.90",),
            external_local=True,
        )
    )
    result = trace(local, packet(CLIENT, "198.51.100.90", 80))
    assert (result.endpoints, result.masquerade) == ((A,), False)


def test_hairpin_is_masqueraded_by_the_loop_back_set() -> None:
    plan = plan_of(svc("self", "10.96.0.15", (ep("pod-a"),)))
    result = trace(plan, packet(POD_A, "10.96.0.15", 80))
    assert (result.endpoints, result.masquerade) == ((A,), True)
    assert any("--match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE" in r for r in result.rules)
    other = trace(plan, packet(POD_C, "10.96.0.15", 80))
    assert other.masquerade is False


def test_local_nodeport_keeps_the_client_address() -> None:
    plan = plan_of(
        svc("np", "10.96.0.30", (ep("pod-a"), ep("pod-r")), node_port=30030, external_local=True)
    )
    result = trace(plan, packet(CLIENT, NODE_IP, 30030))
    assert (result.endpoints, result.masquerade) == ((A,), False)
    # Not a node address of this plan: no virtual service, so the port is just closed.
    assert trace(plan, packet(CLIENT, "10.180.0.9", 30030), node_ips=("10.180.0.9",)).verdict is (
        Verdict.ACCEPT
    )


def test_traffic_through_the_node_is_forwarded_untouched() -> None:
    plan = plan_of(svc("web", "10.96.0.10", (ep("pod-a"),)))
    result = trace(plan, packet(CLIENT, POD_A, 8080))
    assert (result.verdict, result.endpoints, result.masquerade) == (Verdict.ACCEPT, (), False)


def test_one_tracer_for_many_packets() -> None:
    plan = plan_of(
        svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-b"))),
        svc("dns", "10.96.0.53", (ep("pod-a", 9090),), port=53, protocol=Protocol.UDP),
    )
    tracer = Tracer(plan)
    packets = [
        packet(CLIENT, "10.96.0.10", 80),
        packet(POD_C, "10.96.0.53", 53, Protocol.UDP),
        packet(CLIENT, "10.96.0.10", 81),
    ]
    for p in packets:
        assert tracer.trace(p) == trace(plan, p)
    assert tracer.trace(packets[1]).endpoints == (f"{POD_A}:9090",)


def test_ipv6_plan() -> None:
    six = replace(BASE_OPTIONS, ip_family=IPFamily.IPV6)
    port = svc("six", ("10.96.0.120", "fd00:96::120"), (ep("pod-a", ipv6=True),), node_port=30120)
    plan = plan_of(port, options=six)
    client6, node6 = TOPOLOGY["client"]["ipv6"], TOPOLOGY["node"]["ipv6"]
    pod6 = f"[{TOPOLOGY['pod-a']['ipv6']}]:8080"
    for dst, dport in (("fd00:96::120", 80), (node6, 30120)):
        result = trace(plan, packet(client6, dst, dport))
        assert (result.verdict, result.endpoints, result.masquerade) == (
            Verdict.DNAT,
            (pod6,),
            True,
        )


# ------------------------------------------------------------------ the iptables tracer's additions


def helper_plan(nat: list[str], filt: list[str] | None = None) -> IptablesPlan:
    """A bare plan: chain KN in nat and filter, jumped to from PREROUTING/OUTPUT."""
    declared = [":KN - [0:0]"]
    text = "\n".join(
        ["*nat", *declared, *nat, "COMMIT", "*filter", *declared, *(filt or []), "COMMIT", ""]
    )
    jumps = tuple(
        JumpRule(table, chain, ("-j", "KN"))
        for table, chain in (("nat", "PREROUTING"), ("nat", "OUTPUT"), ("filter", "OUTPUT"))
    )
    return IptablesPlan(family=IPFamily.IPV4, options=BASE_OPTIONS, restore=text, jumps=jumps)


def members(name: str, flags: tuple[str, ...], h: Header) -> bool:
    if name != "CIPS":
        raise KeyError(name)
    return (str(h.dst), h.dport) == ("10.96.0.10", 80)


def test_set_matches_need_set_contents() -> None:
    plan = helper_plan(["-A KN -m set --match-set CIPS dst,dst -j DROP"])
    with pytest.raises(IptablesTraceError, match="no set contents"):
        IptablesTracer(plan).trace(packet(CLIENT, "10.96.0.10", 80))
    tracer = IptablesTracer(plan, sets=members)
    assert tracer.trace(packet(CLIENT, "10.96.0.10", 80)).verdict is Verdict.DROP
    assert tracer.trace(packet(CLIENT, "10.96.0.10", 81)).verdict is Verdict.ACCEPT
    negated = helper_plan(["-A KN -m set ! --match-set CIPS dst,dst -j DROP"])
    assert IptablesTracer(negated, sets=members).trace(
        packet(CLIENT, "10.96.0.10", 81)
    ).verdict is (Verdict.DROP)
    unknown = helper_plan(["-A KN -m set --match-set OTHER dst -j DROP"])
    with pytest.raises(IptablesTraceError, match="no such set"):
        IptablesTracer(unknown, sets=members).trace(packet(CLIENT, "10.96.0.10", 80))
    bad = helper_plan(["-A KN -m set --match-set CIPS dst,up -j DROP"])
    with pytest.raises(IptablesTraceError, match="flags"):
        IptablesTracer(bad, sets=members).trace(packet(CLIENT, "10.96.0.10", 80))


def test_physdev_bridge_flags_never_match_routed_packets() -> None:
    plan = helper_plan(
        [
            "-A KN -m physdev --physdev-is-in -j DROP",
            "-A KN -m physdev ! --physdev-is-bridged -j MARK --or-mark 0x4000",
        ]
    )
    result = IptablesTracer(plan).trace(packet(CLIENT, "10.96.0.10", 80))
    assert result.verdict is Verdict.ACCEPT and len(result.rules) == 2
    named = helper_plan(["-A KN -m physdev --physdev-in eth0 -j DROP"])
    with pytest.raises(IptablesTraceError, match="physdev-in"):
        IptablesTracer(named).trace(packet(CLIENT, "10.96.0.10", 80))


def one_service(h: Header) -> Interception | None:
    if (h.protocol, str(h.dst), h.dport) != ("tcp", "10.96.0.10", 80):
        return None
    return Interception("VS", (("RS", ipaddress.ip_address(POD_A), 8080),))


@pytest.mark.parametrize(
    ("match", "dropped", "other_dropped"),
    [
        ("-m ipvs --ipvs", True, False),
        ("-m ipvs ! --ipvs", False, True),
        ("-m ipvs --vaddr 10.96.0.0/24 --vproto tcp --vport 80", True, False),
        ("-m ipvs --vaddr 10.96.0.0/24 --vproto 6 ! --vport 80", False, False),
        ("-m ipvs ! --vaddr 10.96.0.10 --vport 80", False, False),
        ("-m ipvs --vproto udp", False, False),
    ],
)
def test_ipvs_match_reads_the_virtual_service_that_took_the_packet(
    match: str, dropped: bool, other_dropped: bool
) -> None:
    plan = helper_plan([], [f"-A KN {match} -j DROP"])
    tracer = IptablesTracer(plan, (NODE_IP, "10.96.0.10"), ipvs=one_service)
    result = tracer.trace(packet(NODE_IP, "10.96.0.10", 80))
    assert result.verdict is (Verdict.DROP if dropped else Verdict.DNAT)
    # Traffic IPVS did not take matches only a lone "! --ipvs".
    other = tracer.trace(packet(NODE_IP, "10.96.0.10", 81)).verdict
    assert other is (Verdict.DROP if other_dropped else Verdict.ACCEPT)


def test_the_ipvs_stage_is_off_without_a_table() -> None:
    plan = helper_plan([])
    assert IptablesTracer(plan, (NODE_IP, "10.96.0.10")).trace(
        packet(CLIENT, "10.96.0.10", 80)
    ).verdict is (Verdict.ACCEPT)
    with_ipvs = IptablesTracer(plan, (NODE_IP, "10.96.0.10"), ipvs=one_service)
    result = with_ipvs.trace(packet(CLIENT, "10.96.0.10", 80))
    assert (result.verdict, result.endpoints) == (Verdict.DNAT, (A,))
    # IPVS comes after filter INPUT and before filter OUTPUT, which it re-sends through.
    assert result.rules.index("VS") + 1 == result.rules.index("RS")
    assert result.rules.index("RS") < result.rules.index("-t filter -I OUTPUT -j KN")


def test_a_dropped_packet_is_never_masqueraded() -> None:
    plan = helper_plan(["-A KN -j MARK --or-mark 0x4000"], ["-A KN -j DROP"])
    result = IptablesTracer(plan).trace(packet(NODE_IP, "10.96.0.10", 80))
    assert (result.verdict, result.masquerade) == (Verdict.DROP, False)
