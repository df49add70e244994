"""The iptables tracer: what rendered rules do to packets, and how the tracer reads iptables.

The first half walks packets through plans rendered from ServiceMaps (the semantic
check of the renderer); the second feeds hand-written rules to the tracer to pin down
its netfilter semantics and its refusal of syntax it does not understand.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubenet.model import IPFamily, Protocol, ServiceMap, ServicePort
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render.iptables import IptablesPlan, JumpRule, render
from kubenet.trace import Packet, TraceResult, Verdict
from kubenet.trace.iptables import IptablesTraceError, Tracer, trace
from tests.test_render_iptables import NODE_IP, NODE_IP6, OPTIONS, OPTIONS6, ep, port

CLIENT, CLIENT6 = "10.180.0.2", "fd00:180::2"
POD, POD6 = "10.244.1.9", "fd00:244:1::9"  # a pod on this node, not an endpoint
A, B, R = "10.244.1.2", "10.244.1.3", "10.244.2.2"  # A and B are local, R is remote
A6, R6 = "fd00:244:1::2", "fd00:244:2::2"


def go(
    plan: IptablesPlan,
    src: str,
    dst: str,
    dport: int = 80,
    protocol: Protocol = Protocol.TCP,
    iif: str | None = None,
) -> TraceResult:
    return trace(plan, Packet(src, dst, protocol, dport, iif))


def dnat(result: TraceResult) -> tuple[Verdict, tuple[str, ...], bool]:
    return result.verdict, result.endpoints, result.masquerade


def to(*addresses: str, masquerade: bool) -> tuple[Verdict, tuple[str, ...], bool]:
    return Verdict.DNAT, tuple(sorted(addresses)), masquerade


def plan_of(*ports: ServicePort, options: RenderOptions = OPTIONS) -> IptablesPlan:
    return render(ServiceMap.of(list(ports)), options)


WEB = port("web", "10.96.0.10", (ep(A, local=True), ep(B, local=True), ep(R)), node_port=30080)


# ------------------------------------------------------------------ ClusterIP


def test_clusterip_reaches_every_endpoint() -> None:
    plan = plan_of(WEB)
    result = go(plan, POD, "10.96.0.10")
    assert dnat(result) == to(f"{A}:8080", f"{B}:8080", f"{R}:8080", masquerade=False)
    assert result.rules[0] == (
        '-t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    )
    assert result.rules[1].startswith('-A KUBE-SERVICES -m comment --comment "default/web:http')
    dnats = [r for r in result.rules if "-j DNAT" in r]
    assert [r.rsplit(" ", 1)[1] for r in dnats] == [f"{A}:8080", f"{B}:8080", f"{R}:8080"]
    # Each rule is listed once, although every branch passes POSTROUTING.
    assert len(result.rules) == len(set(result.rules))
    assert sum("KUBE-POSTROUTING -j MARK" in r for r in result.rules) == 0  # pods: no mark


def test_off_cluster_and_node_sources_are_masqueraded() -> None:
    plan = plan_of(WEB)
    want = to(f"{A}:8080", f"{B}:8080", f"{R}:8080", masquerade=True)
    assert dnat(go(plan, CLIENT, "10.96.0.10")) == want
    node = go(plan, NODE_IP, "10.96.0.10")
    assert dnat(node) == want
    assert node.rules[0].startswith("-t nat -I OUTPUT")


def test_other_ports_and_protocols_of_the_clusterip_are_left_alone() -> None:
    plan = plan_of(WEB)
    assert go(plan, POD, "10.96.0.10", 81).verdict is Verdict.ACCEPT
    assert go(plan, POD, "10.96.0.10", 80, Protocol.UDP).verdict is Verdict.ACCEPT


def test_hairpin_is_masqueraded() -> None:
    plan = plan_of(port("self", "10.96.0.15", (ep(A, local=True),)))
    result = go(plan, A, "10.96.0.15")
    assert dnat(result) == to(f"{A}:8080", masquerade=True)
    assert any(" -s 10.244.1.2 -j KUBE-MARK-MASQ" in r for r in result.rules)


def test_masquerade_all_masquerades_pods() -> None:
    plan = plan_of(WEB, options=replace(OPTIONS, masquerade_all=True))
    assert dnat(go(plan, POD, "10.96.0.10"))[2] is True


def test_without_local_detection_off_cluster_traffic_keeps_its_source() -> None:
    plan = plan_of(WEB, options=replace(OPTIONS, local_detector=LocalDetector()))
    assert dnat(go(plan, CLIENT, "10.96.0.10"))[2] is False


@pytest.mark.parametrize(
    ("detector", "pod_iif"),
    [
        (LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"), "cbr0"),
        (LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"), "veth1234"),
    ],
    ids=["bridge", "prefix"],
)
def test_interface_local_detection(detector: LocalDetector, pod_iif: str) -> None:
    plan = plan_of(WEB, options=replace(OPTIONS, local_detector=detector))
    assert dnat(go(plan, POD, "10.96.0.10", iif=pod_iif))[2] is False
    assert dnat(go(plan, POD, "10.96.0.10", iif="eth0"))[2] is True
    assert dnat(go(plan, POD, "10.96.0.10"))[2] is True  # no interface given: not a pod's


def test_affinity_may_start_on_any_endpoint() -> None:
    plan = plan_of(port("sticky", "10.96.0.70", (ep(A), ep(B), ep(R)), affinity=600))
    result = go(plan, POD, "10.96.0.70")
    assert dnat(result) == to(f"{A}:8080", f"{B}:8080", f"{R}:8080", masquerade=False)
    assert sum("--rcheck" in r for r in result.rules) == 3
    assert sum("--set" in r for r in result.rules) == 3


# ------------------------------------------------------------------ no endpoints


def test_services_without_endpoints_reject() -> None:
    empty = port("empty", "10.96.0.20", (), node_port=30020, lb=("203.0.113.20",))
    plan = plan_of(empty, WEB)
    for src, dst, dport in [
        (CLIENT, "10.96.0.20", 80),
        (POD, "10.96.0.20", 80),
        (NODE_IP, "10.96.0.20", 80),
        (CLIENT, NODE_IP, 30020),
        (CLIENT, "203.0.113.20", 80),
    ]:
        result = go(plan, src, dst, dport)
        assert dnat(result) == (Verdict.REJECT, (), False), (src, dst, dport)
        assert result.rules[-1].endswith("-j REJECT")


# ------------------------------------------------------------------ NodePort and external


def test_nodeport_on_the_node_ip() -> None:
    plan = plan_of(WEB)
    want = to(f"{A}:8080", f"{B}:8080", f"{R}:8080", masquerade=True)
    assert dnat(go(plan, CLIENT, NODE_IP, 30080)) == want
    assert dnat(go(plan, NODE_IP, NODE_IP, 30080)) == want
    assert go(plan, CLIENT, NODE_IP, 30081).verdict is Verdict.ACCEPT
    assert go(plan, CLIENT, "10.180.0.99", 30080).verdict is Verdict.ACCEPT  # not ours


def test_nodeports_are_not_served_on_loopback() -> None:
    plan = plan_of(WEB)
    assert go(plan, "127.0.0.1", "127.0.0.1", 30080).verdict is Verdict.ACCEPT
    # From outside, 127.0.0.1 is a martian: kubelet's KUBE-FIREWALL rule drops it.
    result = go(plan, CLIENT, "127.0.0.1", 30080)
    assert result.verdict is Verdict.DROP
    assert "block incoming localnet connections" in result.rules[-1]


@pytest.mark.parametrize(
    ("addresses", "served", "not_served"),
    [
        ((), (NODE_IP, "10.0.5.1"), ()),
        (("10.180.0.0/24",), (NODE_IP,), ("10.0.5.1",)),
        (("primary",), (NODE_IP,), ("10.0.5.1",)),
        (("192.0.2.0/24",), (), (NODE_IP, "10.0.5.1")),
        (("fd00::/8",), (NODE_IP, "10.0.5.1"), ()),
    ],
)
def test_nodeport_addresses(
    addresses: tuple[str, ...], served: tuple[str, ...], not_served: tuple[str, ...]
) -> None:
    options = replace(
        OPTIONS, node_ips=(NODE_IP, "10.0.5.1", NODE_IP6), nodeport_addresses=addresses
    )
    plan = plan_of(WEB, options=options)
    for ip in served:
        assert go(plan, CLIENT, ip, 30080).verdict is Verdict.DNAT, ip
    for ip in not_served:
        assert go(plan, CLIENT, ip, 30080).verdict is Verdict.ACCEPT, ip


def test_external_ip() -> None:
    plan = plan_of(port("ext", "10.96.0.90", (ep(A), ep(R)), external_ips=("198.51.100.90",)))
    assert dnat(go(plan, CLIENT, "198.51.100.90")) == to(f"{A}:8080", f"{R}:8080", masquerade=True)
    assert go(plan, CLIENT, "198.51.100.90", 81).verdict is Verdict.ACCEPT


def test_external_local_policy_uses_local_endpoints_and_keeps_the_source() -> None:
    svc = port(
        "local",
        "10.96.0.40",
        (ep(A, local=True), ep(R)),
        node_port=30040,
        lb=("203.0.113.40",),
        external_ips=("198.51.100.40",),
        external_local=True,
    )
    plan = plan_of(svc)
    local_only = to(f"{A}:8080", masquerade=False)
    assert dnat(go(plan, CLIENT, NODE_IP, 30040)) == local_only
    assert dnat(go(plan, CLIENT, "203.0.113.40")) == local_only
    assert dnat(go(plan, CLIENT, "198.51.100.40")) == local_only
    everyone = (f"{A}:8080", f"{R}:8080")
    # Pods short-circuit to every endpoint; the node does too, masqueraded.
    assert dnat(go(plan, POD, NODE_IP, 30040)) == to(*everyone, masquerade=False)
    assert dnat(go(plan, NODE_IP, "203.0.113.40")) == to(*everyone, masquerade=True)
    # The ClusterIP is internal traffic: Cluster policy there.
    assert dnat(go(plan, CLIENT, "10.96.0.40")) == to(*everyone, masquerade=True)


def test_external_local_policy_without_local_endpoints_drops_but_short_circuits_pods() -> None:
    svc = port(
        "far",
        "10.96.0.50",
        (ep(R),),
        node_port=30050,
        external_ips=("198.51.100.50",),
        lb=("203.0.113.50",),
        external_local=True,
    )
    plan = plan_of(svc)
    for dst, dport in [(NODE_IP, 30050), ("198.51.100.50", 80), ("203.0.113.50", 80)]:
        result = go(plan, CLIENT, dst, dport)
        assert dnat(result) == (Verdict.DROP, (), False), dst
        assert "has no local endpoints" in result.rules[-1]
    assert dnat(go(plan, POD, NODE_IP, 30050)) == to(f"{R}:8080", masquerade=False)
    assert dnat(go(plan, NODE_IP, NODE_IP, 30050)) == to(f"{R}:8080", masquerade=True)
    assert dnat(go(plan, CLIENT, "10.96.0.50")) == to(f"{R}:8080", masquerade=True)


def test_internal_local_policy() -> None:
    near = port("near", "10.96.0.60", (ep(A, local=True), ep(R)), internal_local=True)
    nowhere = port("nowhere", "10.96.0.61", (ep(R),), internal_local=True)
    plan = plan_of(near, nowhere)
    assert dnat(go(plan, POD, "10.96.0.60")) == to(f"{A}:8080", masquerade=False)
    assert dnat(go(plan, CLIENT, "10.96.0.60")) == to(f"{A}:8080", masquerade=True)
    result = go(plan, POD, "10.96.0.61")
    assert dnat(result) == (Verdict.DROP, (), False)
    assert "has no local endpoints" in result.rules[-1]


def test_each_family_judges_its_own_endpoints() -> None:
    # Dual-stack, endpoints only in IPv6: IPv4 has none at all (REJECT), whatever the policy.
    near = port("near", ("10.96.0.62", "fd00:96::62"), (ep(R6),), internal_local=True)
    web = port("web6", ("10.96.0.63", "fd00:96::63"), (ep(A6),))
    v4, v6 = plan_of(near, web), plan_of(near, web, options=OPTIONS6)
    assert go(v4, POD, "10.96.0.62").verdict is Verdict.REJECT
    assert go(v4, POD, "10.96.0.63").verdict is Verdict.REJECT
    assert go(v6, POD6, "fd00:96::62").verdict is Verdict.DROP  # usable, but not local
    assert go(v6, POD6, "fd00:96::63").endpoints == (f"[{A6}]:8080",)


def test_serving_terminating_endpoints_count_as_usable() -> None:
    leaving = replace(ep(A, local=True), ready=False, serving=True, terminating=True)
    near = replace(
        port("near", "10.96.0.64", (leaving,), internal_local=True),
        cluster_endpoints=(),
    )
    assert go(plan_of(near), POD, "10.96.0.64").endpoints == (f"{A}:8080",)


def test_load_balancer_source_ranges() -> None:
    lb = port(
        "lb",
        "10.96.0.30",
        (ep(A), ep(R)),
        node_port=30030,
        lb=("203.0.113.30",),
        proxy_lb=("203.0.113.31",),
        ranges=("10.180.0.0/24",),
    )
    plan = plan_of(lb)
    both = to(f"{A}:8080", f"{R}:8080", masquerade=True)
    assert dnat(go(plan, CLIENT, "203.0.113.30")) == both
    denied = go(plan, "192.0.2.7", "203.0.113.30")
    assert dnat(denied) == (Verdict.DROP, (), False)
    assert "traffic not accepted by KUBE-FW-" in denied.rules[-1]
    # The node's address is inside the range, so the VIP looping back as source passes.
    assert dnat(go(plan, "203.0.113.30", "203.0.113.30")) == both
    # Source ranges guard the load-balancer IP only.
    assert dnat(go(plan, "192.0.2.7", "10.96.0.30")) == both
    assert dnat(go(plan, "192.0.2.7", NODE_IP, 30030)) == both
    # ipMode Proxy addresses are not captured at all.
    assert go(plan, CLIENT, "203.0.113.31").verdict is Verdict.ACCEPT


def test_load_balancer_firewall_runs_first_in_forward() -> None:
    plan = plan_of(
        port("lb", "10.96.0.30", (ep(A),), lb=("203.0.113.30",), ranges=("192.0.2.0/24",))
    )
    filter_rules = [r for r in go(plan, CLIENT, "203.0.113.30").rules if r.startswith("-t filter")]
    # Jumps are inserted at the top one by one, so the last one listed runs first.
    assert filter_rules == [
        "-t filter -I FORWARD -m conntrack --ctstate NEW -m comment --comment"
        ' "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'
    ]


def test_ipv6() -> None:
    svc = port("dual", ("10.96.0.120", "fd00:96::120"), (ep(A6), ep(R6), ep(A)), node_port=30120)
    plan = plan_of(svc, options=OPTIONS6)
    want = (f"[{A6}]:8080", f"[{R6}]:8080")
    assert dnat(go(plan, POD6, "fd00:96::120")) == to(*want, masquerade=False)
    assert dnat(go(plan, CLIENT6, "fd00:96::120")) == to(*want, masquerade=True)
    assert dnat(go(plan, CLIENT6, NODE_IP6, 30120)) == to(*want, masquerade=True)
    assert go(plan, CLIENT6, "::1", 30120).verdict is Verdict.ACCEPT
    with pytest.raises(ValueError, match="is not IPv6"):
        go(plan, CLIENT, "10.96.0.120")


def test_node_ips_can_be_given_per_trace() -> None:
    plan = plan_of(WEB)
    assert go(plan, CLIENT, "10.0.9.9", 30080).verdict is Verdict.ACCEPT
    packet = Packet(CLIENT, "10.0.9.9", Protocol.TCP, 30080)
    assert trace(plan, packet, node_ips=("10.0.9.9",)).verdict is Verdict.DNAT


def test_one_tracer_traces_many_packets_alike() -> None:
    plan = plan_of(WEB, port("empty", "10.96.0.20", ()))
    tracer = Tracer(plan)
    packets = [
        Packet(POD, "10.96.0.10", Protocol.TCP, 80),
        Packet(CLIENT, NODE_IP, Protocol.TCP, 30080),
        Packet(CLIENT, "10.96.0.20", Protocol.TCP, 80),
        Packet(POD, "10.96.0.10", Protocol.TCP, 80),
    ]
    assert [tracer.trace(p) for p in packets] == [trace(plan, p) for p in packets]


def test_a_plan_with_stale_chain_deletions_still_traces() -> None:
    first = plan_of(WEB, port("gone", "10.96.0.11", (ep(A),)))
    second = render(ServiceMap.of([WEB]), OPTIONS, previous=first)
    assert "\n-X KUBE-SVC-" in second.restore
    assert go(second, POD, "10.96.0.11").verdict is Verdict.ACCEPT
    assert go(second, POD, "10.96.0.10").verdict is Verdict.DNAT


# ------------------------------------------------------------------ the tracer's iptables


NAT_JUMP = JumpRule("nat", "PREROUTING", ("-j", "T"))


def hand(nat: str, filter_: str = "", *jumps: JumpRule) -> IptablesPlan:
    """A plan with hand-written rules; nat PREROUTING jumps to chain T unless told otherwise."""
    restore = f"*filter\n{filter_}COMMIT\n*nat\n:T - [0:0]\n{nat}COMMIT\n"
    return IptablesPlan(IPFamily.IPV4, OPTIONS, restore, jumps or (NAT_JUMP,))


def test_return_resumes_the_caller_and_unmatched_rules_are_not_listed() -> None:
    plan = hand(
        ":U - [0:0]\n"
        "-A T -j U\n"
        "-A U -s 10.180.0.0/24 -j RETURN\n"
        "-A U -j DNAT --to-destination 10.9.9.9:1\n"
        "-A T -p tcp -j DNAT --to-destination 10.8.8.8:2\n"
    )
    result = go(plan, CLIENT, "10.96.0.1")
    assert dnat(result) == to("10.8.8.8:2", masquerade=False)
    assert result.rules == (
        "-t nat -I PREROUTING -j T",
        "-A T -j U",
        "-A U -s 10.180.0.0/24 -j RETURN",
        "-A T -p tcp -j DNAT --to-destination 10.8.8.8:2",
    )
    assert dnat(go(plan, "192.0.2.1", "10.96.0.1")) == to("10.9.9.9:1", masquerade=False)


def test_builtin_policy_and_return_from_a_builtin_chain() -> None:
    jumps = (JumpRule("filter", "FORWARD", ("-s", "192.0.2.0/24", "-j", "RETURN")),)
    plan = hand("", ":FORWARD DROP [0:0]\n-A FORWARD -s 10.180.0.0/24 -j ACCEPT\n", *jumps)
    assert go(plan, CLIENT, "10.96.0.1").verdict is Verdict.ACCEPT
    assert go(plan, "192.0.2.1", "10.96.0.1").verdict is Verdict.DROP  # RETURN: policy
    assert go(plan, "198.51.100.1", "10.96.0.1").verdict is Verdict.DROP


def test_marks_and_masquerade() -> None:
    plan = hand(
        ":M - [0:0]\n"
        "-A T -j MARK --set-xmark 0x10/0xff\n"
        "-A T -m mark --mark 0x10/0x10 -j M\n"
        "-A M -j MARK --or-mark 0x4000\n"
        "-A M -m mark ! --mark 0x4010 -j DROP\n"
        "-A M -j DNAT --to-destination 10.9.9.9\n"
    )
    result = go(plan, CLIENT, "10.96.0.1", 8443)
    assert dnat(result) == to("10.9.9.9:8443", masquerade=True)  # the bit of masquerade_bit 14


def test_conntrack_state_knows_dnat() -> None:
    filter_ = (
        ":F - [0:0]\n"
        "-A F -m conntrack --ctstate RELATED,ESTABLISHED -j DROP\n"
        "-A F -m conntrack ! --ctstate DNAT -j REJECT\n"
    )
    jumps = (
        NAT_JUMP,
        JumpRule("filter", "FORWARD", ("-m", "conntrack", "--ctstate", "NEW", "-j", "F")),
    )
    plan = hand("-A T -d 10.96.0.1 -j DNAT --to-destination 10.9.9.9:80\n", filter_, *jumps)
    assert go(plan, CLIENT, "10.96.0.1").verdict is Verdict.DNAT
    assert go(plan, CLIENT, "10.96.0.2").verdict is Verdict.REJECT


def test_statistic_explores_what_is_possible() -> None:
    plan = hand(
        "-A T -m statistic --mode random --probability 1.0 -j DNAT --to-destination 10.0.0.1:1\n"
        "-A T -m statistic --mode random --probability 0 -j DNAT --to-destination 10.0.0.2:2\n"
    )
    assert go(plan, CLIENT, "10.96.0.1").endpoints == ("10.0.0.1:1",)
    plan = hand(
        "-A T -m statistic --mode random --probability 0.0 -j DNAT --to-destination 10.0.0.2:2\n"
        "-A T -m statistic --mode random ! --probability 0.25 -j DNAT --to-destination 10.0.0.3:3\n"
    )
    result = go(plan, CLIENT, "10.96.0.1")
    assert result.endpoints == ("10.0.0.3:3",)
    assert result.verdict is Verdict.DNAT  # the other branch falls through: ACCEPT loses


def test_quoted_arguments_and_comments() -> None:
    plan = hand(
        '-A T -m comment --comment "say \\"hi\\" -j DROP" -j DNAT --to-destination 10.0.0.1:1\n'
    )
    assert go(plan, CLIENT, "10.96.0.1").endpoints == ("10.0.0.1:1",)


def test_interfaces() -> None:
    plan = hand(
        "-A T -i eth+ -j DNAT --to-destination 10.0.0.1:1\n"
        "-A T ! -i lo -o lo -j DNAT --to-destination 10.0.0.2:2\n"
        "-A T -j DNAT --to-destination 10.0.0.3:3\n"
    )
    assert go(plan, CLIENT, "10.96.0.1", iif="eth1").endpoints == ("10.0.0.1:1",)
    # Before routing there is no output interface: "-o lo" cannot match.
    assert go(plan, CLIENT, "10.96.0.1", iif="ens3").endpoints == ("10.0.0.3:3",)
    forward = hand(
        "", ":F - [0:0]\n-A F -o eth0 -j DROP\n", JumpRule("filter", "FORWARD", ("-j", "F"))
    )
    with pytest.raises(IptablesTraceError, match="output interface is unknown"):
        go(forward, CLIENT, "10.96.0.1")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("-A T -m multiport --dports 80,443 -j DROP", "unsupported match module 'multiport'"),
        ("-A T -p tcp --sport 1000 -j DROP", "unsupported option '--sport'"),
        ("-A T -p tcp -m tcp --syn -j DROP", "unsupported option '--syn'"),
        ("-A T -j DNAT --to-destination 10.0.0.1:80 --persistent", "'--persistent' for -j DNAT"),
        ("-A T -j DNAT --to-destination 10.0.0.1-10.0.0.9", "DNAT ranges"),
        ("-A T -m addrtype --dst-type UNICAST -j DROP", "addrtype UNICAST"),
        ("-A T -m statistic --mode nth --every 2 -j DROP", "unsupported option '--every'"),
        ("-A T -m recent --name x --remove -j DROP", "unsupported option '--remove'"),
        ("-A T -m conntrack --ctstate BOGUS -j DROP", "unknown conntrack state"),
        ("-A T -p icmp -j DROP", "unsupported protocol 'icmp'"),
        ("-A T -g U", "unsupported argument '-g'"),
        ("-A T -s 10.0.0.0/8 bogus -j DROP", "unsupported argument 'bogus'"),
        ("-A T ! -m mark --mark 1 -j DROP", "'!' before -m"),
        ("-A T -j NOWHERE", "jump to chain NOWHERE"),
        ("-A T -s not-an-address -j DROP", "malformed"),
        ('-A T -m comment --comment "open -j DROP', "unterminated quote"),
    ],
)
def test_unknown_syntax_is_refused(rule: str, message: str) -> None:
    with pytest.raises(IptablesTraceError, match=message):
        go(hand(rule + "\n"), CLIENT, "10.96.0.1")


@pytest.mark.parametrize(
    ("restore", "message"),
    [
        ("*nat\n:T - [0:0]\n-I T -j DROP\nCOMMIT\n", "unsupported restore line"),
        ("*nat\n-A T -j DROP\nCOMMIT\n", "chain T was not declared"),
        ("*nat\n:T - [0:0]\n", "no COMMIT"),
        ("*security\nCOMMIT\n", "walks only filter and nat"),
        ("*mangle\n:M - [0:0]\nCOMMIT\n", "walks only filter and nat"),
        ("-A T -j DROP\n", "outside of a table"),
        ("*nat\n:PREROUTING - [0:0]\nCOMMIT\n", "bad policy"),
        ("*nat\n-X T\nCOMMIT\n", "deleting undeclared chain"),
    ],
)
def test_malformed_restore_text_is_refused(restore: str, message: str) -> None:
    plan = IptablesPlan(IPFamily.IPV4, OPTIONS, restore, ())
    with pytest.raises(IptablesTraceError, match=message):
        go(plan, CLIENT, "10.96.0.1")


def test_jumps_must_enter_builtin_chains() -> None:
    plan = hand("", "", JumpRule("nat", "T", ("-j", "ACCEPT")))
    with pytest.raises(IptablesTraceError, match="not a built-in chain"):
        go(plan, CLIENT, "10.96.0.1")


def test_jump_loops_are_caught() -> None:
    with pytest.raises(IptablesTraceError, match="a loop"):
        go(hand("-A T -j T\n"), CLIENT, "10.96.0.1")


def test_ipv6_options_default_to_the_plans_family() -> None:
    plan = plan_of(port("v6", "fd00:96::1", (ep(A6),)), options=OPTIONS6)
    assert plan.family is IPFamily.IPV6
    assert go(plan, POD6, "fd00:96::1").endpoints == (f"[{A6}]:8080",)
