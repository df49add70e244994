"""The nftables tracer: what happens to packets under rendered plans and hand-written scripts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubenet.model import Protocol, ServiceMap
from kubenet.options import DetectLocalMode, LocalDetector
from kubenet.render.nftables import render
from kubenet.trace import Packet, TraceResult, Verdict
from kubenet.trace.nftables import NftTraceError, Tracer, trace
from tests.test_render_nftables import NODE_IP, NODE_IP6, OPTIONS, OPTIONS6, ep, port

A, B, C, R = "10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.2.2"
CLIENT = "10.180.0.2"


def outcome(result: TraceResult) -> tuple[Verdict, tuple[str, ...], bool]:
    return result.verdict, result.endpoints, result.masquerade


def dnat(*endpoints: str, masquerade: bool) -> tuple[Verdict, tuple[str, ...], bool]:
    return Verdict.DNAT, tuple(sorted(endpoints)), masquerade


def run(sm: ServiceMap, src: str, dst: str, dport: int, **kw: object) -> TraceResult:
    options = kw.pop("options", OPTIONS)
    protocol = kw.pop("protocol", Protocol.TCP)
    iif = kw.pop("iif", None)
    assert not kw
    plan = render(sm, options)  # type: ignore[arg-type]
    return trace(plan, Packet(src, dst, protocol, dport, iif=iif))  # type: ignore[arg-type]


WEB = ServiceMap.of(
    [
        port(
            "web",
            "10.96.0.10",
            (ep(A, local=True), ep(B, local=True), ep(R)),
            node_port=30080,
            external_ips=("198.51.100.10",),
        )
    ]
)
ALL = (f"{A}:8080", f"{B}:8080", f"{R}:8080")


# ------------------------------------------------------------------ ClusterIP


def test_clusterip_from_a_pod_reaches_every_endpoint_unmasqueraded() -> None:
    result = run(WEB, C, "10.96.0.10", 80)
    assert outcome(result) == dnat(*ALL, masquerade=False)
    assert "services: ip daddr . meta l4proto . th dport vmap @service-ips" in result.rules
    assert (
        "cluster-3: dnat to ip daddr . tcp dport . numgen random mod 3 map @cluster-endpoints-tcp"
        in result.rules
    )


def test_clusterip_from_off_cluster_is_masqueraded() -> None:
    assert outcome(run(WEB, CLIENT, "10.96.0.10", 80)) == dnat(*ALL, masquerade=True)


def test_clusterip_from_the_node_is_masqueraded() -> None:
    assert outcome(run(WEB, NODE_IP, "10.96.0.10", 80)) == dnat(*ALL, masquerade=True)


def test_udp_and_sctp_use_their_own_maps() -> None:
    sm = ServiceMap.of(
        [
            port("dns", "10.96.0.53", (ep(A, 53), ep(R, 53)), protocol=Protocol.UDP, number=53),
            port("assoc", "10.96.0.11", (ep(B, 9),), protocol=Protocol.SCTP, number=9),
        ]
    )
    got = run(sm, C, "10.96.0.53", 53, protocol=Protocol.UDP)
    assert outcome(got) == dnat(f"{A}:53", f"{R}:53", masquerade=False)
    got = run(sm, C, "10.96.0.11", 9, protocol=Protocol.SCTP)
    assert outcome(got) == dnat(f"{B}:9", masquerade=False)
    # TCP to the UDP Service's address and port is no Service.
    assert run(sm, C, "10.96.0.53", 53).verdict is Verdict.REJECT


def test_a_port_the_clusterip_does_not_serve_is_rejected() -> None:
    result = run(WEB, C, "10.96.0.10", 81)
    assert outcome(result) == (Verdict.REJECT, (), False)
    assert result.rules[-1].startswith("cluster-ips-check: ip daddr @cluster-ips reject")


def test_masquerade_all_masquerades_pods_too() -> None:
    options = replace(OPTIONS, masquerade_all=True)
    assert outcome(run(WEB, C, "10.96.0.10", 80, options=options)) == dnat(*ALL, masquerade=True)


def test_without_a_local_detector_off_cluster_traffic_keeps_its_address() -> None:
    options = replace(OPTIONS, local_detector=LocalDetector())
    got = run(WEB, CLIENT, "10.96.0.10", 80, options=options)
    assert outcome(got) == dnat(*ALL, masquerade=False)


@pytest.mark.parametrize(
    ("detector", "iif", "masquerade"),
    [
        (LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"), "veth12", False),
        (LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"), "eth0", True),
        (LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"), "cbr0", False),
        (LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"), "cbr01", True),
    ],
)
def test_interface_detectors(detector: LocalDetector, iif: str, masquerade: bool) -> None:
    options = replace(OPTIONS, local_detector=detector)
    got = run(WEB, CLIENT, "10.96.0.10", 80, options=options, iif=iif)
    assert outcome(got) == dnat(*ALL, masquerade=masquerade)


def test_interface_detectors_never_match_the_nodes_own_traffic() -> None:
    # iifname has no value on the output path: neither "==" nor "!=" matches.
    options = replace(
        OPTIONS, local_detector=LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0")
    )
    assert outcome(run(WEB, NODE_IP, "10.96.0.10", 80, options=options)) == dnat(
        *ALL, masquerade=False
    )


def test_hairpin_is_masqueraded_only_towards_itself() -> None:
    sm = ServiceMap.of([port("self", "10.96.0.15", (ep(A, local=True),))])
    assert outcome(run(sm, A, "10.96.0.15", 80)) == dnat(f"{A}:8080", masquerade=True)
    assert outcome(run(sm, B, "10.96.0.15", 80)) == dnat(f"{A}:8080", masquerade=False)
    two = ServiceMap.of([port("pair", "10.96.0.16", (ep(A, local=True), ep(B, local=True)))])
    result = run(two, A, "10.96.0.16", 80)
    # One of the two paths comes back to the sender: that one is masqueraded.
    assert outcome(result) == dnat(f"{A}:8080", f"{B}:8080", masquerade=True)
    assert any("@hairpin-connections masquerade" in r for r in result.rules)


def test_internal_traffic_policy_local() -> None:
    sm = ServiceMap.of(
        [
            port("near", "10.96.0.60", (ep(A, local=True), ep(R)), internal_local=True),
            port("none-here", "10.96.0.61", (ep(R),), internal_local=True),
        ]
    )
    assert outcome(run(sm, C, "10.96.0.60", 80)) == dnat(f"{A}:8080", masquerade=False)
    assert outcome(run(sm, C, "10.96.0.61", 80)) == (Verdict.DROP, (), False)


# ------------------------------------------------------------- no endpoints


def test_services_without_endpoints_are_rejected() -> None:
    sm = ServiceMap.of([port("empty", "10.96.0.20", (), node_port=30020)])
    for src, dst, dport in (
        (C, "10.96.0.20", 80),
        (CLIENT, "10.96.0.20", 80),
        (NODE_IP, "10.96.0.20", 80),
        (CLIENT, NODE_IP, 30020),
        # From the node to its own node port: rejected on the way back in (input).
        (NODE_IP, NODE_IP, 30020),
    ):
        assert outcome(run(sm, src, dst, dport)) == (Verdict.REJECT, (), False), (src, dst)


# ----------------------------------------------------------------- external


def test_nodeport_on_the_node_address_reaches_every_endpoint_masqueraded() -> None:
    assert outcome(run(WEB, CLIENT, NODE_IP, 30080)) == dnat(*ALL, masquerade=True)
    assert outcome(run(WEB, NODE_IP, NODE_IP, 30080)) == dnat(*ALL, masquerade=True)
    assert outcome(run(WEB, CLIENT, NODE_IP, 30081)) == (Verdict.ACCEPT, (), False)


def test_external_ip_reaches_every_endpoint_masqueraded() -> None:
    assert outcome(run(WEB, CLIENT, "198.51.100.10", 80)) == dnat(*ALL, masquerade=True)


@pytest.mark.parametrize(
    ("addresses", "reachable"),
    [((), True), (("primary",), True), (("10.180.0.0/24",), True), (("10.9.0.0/16",), False)],
)
def test_nodeport_addresses(addresses: tuple[str, ...], reachable: bool) -> None:
    options = replace(OPTIONS, nodeport_addresses=addresses)
    got = run(WEB, CLIENT, NODE_IP, 30080, options=options)
    assert outcome(got) == (
        dnat(*ALL, masquerade=True) if reachable else (Verdict.ACCEPT, (), False)
    )


LOCAL = ServiceMap.of(
    [
        port(
            "lb",
            "10.96.0.40",
            (ep(A, local=True), ep(R)),
            node_port=30040,
            lb=("203.0.113.40",),
            external_local=True,
        ),
        port(
            "far",
            "10.96.0.50",
            (ep(R),),
            node_port=30050,
            lb=("203.0.113.50",),
            external_local=True,
        ),
    ]
)


def test_local_policy_keeps_the_client_address_and_uses_local_endpoints() -> None:
    assert outcome(run(LOCAL, CLIENT, NODE_IP, 30040)) == dnat(f"{A}:8080", masquerade=False)
    assert outcome(run(LOCAL, CLIENT, "203.0.113.40", 80)) == dnat(f"{A}:8080", masquerade=False)
    # The ClusterIP of a Local Service still uses every endpoint.
    both = (f"{A}:8080", f"{R}:8080")
    assert outcome(run(LOCAL, CLIENT, "10.96.0.40", 80)) == dnat(*both, masquerade=True)


def test_local_policy_without_local_endpoints_drops_outside_traffic() -> None:
    assert outcome(run(LOCAL, CLIENT, NODE_IP, 30050)) == (Verdict.DROP, (), False)
    assert outcome(run(LOCAL, CLIENT, "203.0.113.50", 80)) == (Verdict.DROP, (), False)


def test_local_policy_short_circuits_pods_and_masquerades_the_node() -> None:
    remote = (f"{R}:8080",)
    result = run(LOCAL, C, NODE_IP, 30050)
    assert outcome(result) == dnat(*remote, masquerade=False)
    assert any('comment "short-circuit pod traffic"' in r for r in result.rules)
    assert outcome(run(LOCAL, C, "203.0.113.50", 80)) == dnat(*remote, masquerade=False)
    assert outcome(run(LOCAL, NODE_IP, NODE_IP, 30050)) == dnat(*remote, masquerade=True)
    assert outcome(run(LOCAL, NODE_IP, "203.0.113.40", 80)) == dnat(
        f"{A}:8080", f"{R}:8080", masquerade=True
    )


SOURCES = ServiceMap.of(
    [
        port("allow", "10.96.0.111", (ep(A),), lb=("203.0.113.111",), ranges=("10.180.0.0/24",)),
        port("deny", "10.96.0.112", (ep(A),), lb=("203.0.113.112",), ranges=("192.0.2.0/24",)),
    ]
)


def test_load_balancer_source_ranges() -> None:
    assert outcome(run(SOURCES, CLIENT, "203.0.113.111", 80)) == dnat(f"{A}:8080", masquerade=True)
    denied = run(SOURCES, CLIENT, "203.0.113.112", 80)
    assert outcome(denied) == (Verdict.DROP, (), False)
    assert denied.rules[-1].startswith("firewall-check: ")
    # Source ranges guard the load-balancer address only.
    assert outcome(run(SOURCES, CLIENT, "10.96.0.112", 80)) == dnat(f"{A}:8080", masquerade=True)
    # The node may reach the balancer it is allowed to (its own address is in range),
    # even with the balancer address as source.
    assert run(SOURCES, NODE_IP, "203.0.113.111", 80).verdict is Verdict.DNAT
    assert run(SOURCES, NODE_IP, "203.0.113.112", 80).verdict is Verdict.DROP


# ------------------------------------------------------------------ affinity


def test_affinity_may_pick_any_endpoint_and_is_remembered() -> None:
    sm = ServiceMap.of([port("sticky", "10.96.0.70", (ep(A), ep(B), ep(R)), affinity=600)])
    result = run(sm, C, "10.96.0.70", 80)
    assert outcome(result) == dnat(f"{A}:8080", f"{B}:8080", f"{R}:8080", masquerade=False)
    sticky = [
        r for r in result.rules if "@affinity-" in r and " @affinity-" in r.split("update")[0]
    ]
    assert len(sticky) == 3  # a remembered client may be sent to any of them
    assert any(r.split(": ", 1)[1].startswith("numgen random mod 3 == 0") for r in result.rules)


def test_affinity_with_local_policy_keeps_outside_clients_on_local_endpoints() -> None:
    sm = ServiceMap.of(
        [
            port(
                "sticky",
                "10.96.0.71",
                (ep(A, local=True), ep(R)),
                node_port=30071,
                affinity=600,
                external_local=True,
            )
        ]
    )
    assert outcome(run(sm, CLIENT, NODE_IP, 30071)) == dnat(f"{A}:8080", masquerade=False)
    got = run(sm, C, NODE_IP, 30071)
    assert outcome(got) == dnat(f"{A}:8080", f"{R}:8080", masquerade=False)


# ---------------------------------------------------------------------- IPv6


def test_ipv6() -> None:
    sm = ServiceMap.of(
        [
            port(
                "dual",
                ("10.96.0.120", "fd00:96::120"),
                (ep("fd00:244:1::2", local=True), ep("fd00:244:2::2"), ep(A)),
                node_port=30120,
            )
        ]
    )
    want = ("[fd00:244:1::2]:8080", "[fd00:244:2::2]:8080")
    got = run(sm, "fd00:180::2", "fd00:96::120", 80, options=OPTIONS6)
    assert outcome(got) == dnat(*want, masquerade=True)
    got = run(sm, "fd00:244:1::9", "fd00:96::120", 80, options=OPTIONS6)
    assert outcome(got) == dnat(*want, masquerade=False)
    got = run(sm, "fd00:180::2", NODE_IP6, 30120, options=OPTIONS6)
    assert outcome(got) == dnat(*want, masquerade=True)
    with pytest.raises(NftTraceError, match="another family"):
        run(sm, CLIENT, "10.96.0.120", 80, options=OPTIONS6)


def test_node_ips_default_to_the_plans_and_can_be_overridden() -> None:
    plan = render(WEB, OPTIONS)
    packet = Packet(CLIENT, "10.96.0.10", Protocol.TCP, 80)
    assert trace(plan, packet).masquerade
    # Seen from a node that owns the client address, the packet is the node's own.
    own = trace(plan, packet, node_ips=(CLIENT,))
    assert own.rules[0].startswith("filter-output-pre-dnat: ")


# ------------------------------------------------------- the walk, by script

BASE = """add table ip t
table ip t {{
{body}
}}
"""


def script(body: str) -> str:
    return BASE.format(body=body)


def walk(body: str, src: str = CLIENT, dst: str = "10.96.0.1", dport: int = 80) -> TraceResult:
    return Tracer(script(body), (NODE_IP,)).trace(Packet(src, dst, Protocol.TCP, dport))


def test_accept_ends_one_base_chain_not_the_hook() -> None:
    result = walk(
        """	chain early { type filter hook prerouting priority -200; policy accept;
		accept
	}
	chain late { type filter hook prerouting priority 0; policy accept;
		drop
	}"""
    )
    assert result.verdict is Verdict.DROP
    assert result.rules == ("early: accept", "late: drop")


def test_policy_drop() -> None:
    result = walk("""	chain f { type filter hook forward priority 0; policy drop;
		ip saddr 192.0.2.1 accept
	}""")
    assert result.verdict is Verdict.DROP and result.rules == ()


def test_jump_returns_and_goto_does_not() -> None:
    body = """	chain pre {{ type filter hook prerouting priority 0; policy accept;
		{how} sub
		drop
	}}
	chain sub {{
		ip saddr 10.180.0.2 return
		accept
	}}"""
    assert walk(body.format(how="jump")).verdict is Verdict.DROP
    result = walk(body.format(how="goto"))
    assert result.verdict is Verdict.ACCEPT
    assert result.rules == ("pre: goto sub", "sub: ip saddr 10.180.0.2 return")


def test_anonymous_vmap_and_numgen_follow_every_branch() -> None:
    result = walk("""	chain n { type nat hook prerouting priority -100; policy accept;
		numgen random mod 2 vmap { 0 : goto a, 1 : goto b }
	}
	chain a {
		meta l4proto tcp dnat to 10.1.0.1:8080
	}
	chain b {
		meta l4proto tcp dnat to 10.1.0.2
	}""")
    assert outcome(result) == dnat("10.1.0.1:8080", "10.1.0.2:80", masquerade=False)


def test_dynamic_sets_may_or_may_not_hold_the_client() -> None:
    result = walk("""	set seen { type ipv4_addr; flags dynamic,timeout; timeout 60s; }
	set fixed { type ipv4_addr; elements = { 10.180.0.9 } }
	chain f { type filter hook prerouting priority 0; policy accept;
		ip saddr @fixed drop
		ip saddr @seen reject
		update @seen { ip saddr } counter accept
	}""")
    assert result.verdict is Verdict.ACCEPT  # some path accepts; another rejects
    assert "f: ip saddr @seen reject" in result.rules
    assert "f: ip saddr @fixed drop" not in result.rules


def test_marks_and_masquerade() -> None:
    result = walk("""	chain n { type nat hook postrouting priority 100; policy accept;
		meta mark set meta mark | 0x10
		meta mark & 0x00000010 == 0x00000000 return
		meta mark set meta mark ^ 0x10 masquerade
	}""")
    assert result.masquerade and result.verdict is Verdict.ACCEPT


def test_nft_listing_spellings_are_understood() -> None:
    listing = """table ip kube-proxy {
	map m {
		typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport
		elements = { 10.96.0.1 . 80 . 0 : 10.1.0.1 . 8080,
			10.96.0.1 . 80 . 1 : 10.1.0.2 . 8080 }
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		numgen random mod 3 0 counter packets 0 bytes 0 drop
		dnat ip to ip daddr . tcp dport . numgen random mod 2 map @m
	}
}
"""
    result = Tracer(listing, (NODE_IP,)).trace(Packet(CLIENT, "10.96.0.1", Protocol.TCP, 80))
    assert outcome(result) == dnat("10.1.0.1:8080", "10.1.0.2:8080", masquerade=False)


# ------------------------------------------------------------ what it refuses


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("ip dscp 1 accept", "unknown expression 'ip dscp'"),
        ('log prefix "x"', "unknown expression 'log'"),
        ("ip daddr @nowhere accept", "unknown set '@nowhere'"),
        ("jump nowhere", "unknown chain 'nowhere'"),
        ("reject with tcp reset", "reject with a specific type"),
        ("ip6 daddr ::1 accept", "ip6 match in an ip table"),
        ("ip daddr 10.0.0.300 accept", "not a valid addr"),
        ("accept drop", "must end the rule"),
        ("meta mark > 3 accept", "unsupported comparison"),
    ],
)
def test_unknown_syntax_is_an_error(rule: str, message: str) -> None:
    body = f"""	chain f {{ type filter hook prerouting priority 0; policy accept;
		{rule}
	}}"""
    with pytest.raises(NftTraceError, match=message) as err:
        Tracer(script(body), ())
    assert "nft rule" in str(err.value) or "valid" in str(err.value)


def test_unknown_script_structure_is_an_error() -> None:
    with pytest.raises(NftTraceError, match="unknown table item"):
        Tracer(script("\tflowtable ft { hook ingress priority 0; }"), ())
    with pytest.raises(NftTraceError, match="base chain"):
        Tracer(script("\tchain i { type filter hook ingress device lo priority 0; }"), ())
    with pytest.raises(NftTraceError, match="cannot trace base chain"):
        Tracer(script("\tchain i { type route hook output priority 0; }"), ())
    with pytest.raises(NftTraceError, match="does not fit its type"):
        Tracer(script("\tset s { type inet_service; elements = { http-alt } }"), ())
    with pytest.raises(NftTraceError, match="is not valid"):
        Tracer(
            script("\tmap m { type inet_service : verdict; elements = { 80 : goto nowhere } }"), ()
        )
    with pytest.raises(NftTraceError, match="the way nft lists it"):
        Tracer("table ip6 t {\n\tset s { type ipv6_addr; elements = { fd00:0::1 } }\n}\n", ())
