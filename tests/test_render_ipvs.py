"""The IPVS renderer: upstream's virtual services, sets, helper rules and text, and the kernel.

What the rules *do* is checked by walking packets in tests/test_trace_ipvs.py and the
shared scenarios; here are structure and spelling. The ipset and iptables parts are
loaded into a fresh network namespace (the IPVS part needs IPVS, which
tests/test_dataplane_ipvs.py covers).

Set ``KUBENET_REGEN_GOLDEN=1`` to rewrite the golden files in tests/data/ipvs/ after
an intended change (then read the diff before committing it).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kubenet.cli._errors import run
from kubenet.cli.node_proxy import app
from kubenet.model import IPFamily, Protocol, ServiceMap
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render import ProxyMode
from kubenet.render import render as render_mode
from kubenet.render.iptables import nodeport_destinations
from kubenet.render.ipvs import (
    DUMMY_DEVICE,
    SETS,
    IpvsPlan,
    RealServer,
    Scheduler,
    SetType,
    VirtualServer,
    render,
    set_name,
)
from kubenet.testing.netns import Netns
from tests.builders import NODE_IP, NODE_IP6, node_options, port
from tests.builders import endpoint as ep

GOLDEN = Path(__file__).parent / "data" / "ipvs"
ROOT = Path(__file__).resolve().parent.parent
OPTIONS = node_options(
    NODE_IP,
    NODE_IP6,
    "127.0.0.1",
    "10.181.0.1",
    cluster_cidrs=("10.244.0.0/16", "fd00:244::/32"),
)
OPTIONS6 = replace(OPTIONS, ip_family=IPFamily.IPV6)


# ------------------------------------------------------------------ maps


A, B, R = "10.244.1.2", "10.244.1.3", "10.244.2.2"
A6, R6 = "fd00:244:1::2", "fd00:244:2::2"


def representative() -> ServiceMap:
    """Every feature once, dual-stack where it matters."""
    return ServiceMap.of(
        [
            port(
                "web",
                ("10.96.0.10", "fd00:96::10"),
                (ep(A, local=True), ep(B, local=True), ep(R), ep(A6, local=True), ep(R6)),
                node_port=30080,
                external_ips=("198.51.100.10", "2001:db8::10", NODE_IP),
            ),
            port(
                "dns",
                "10.96.0.53",
                (ep(A, 53, local=True), ep(R, 53)),
                protocol=Protocol.UDP,
                number=53,
                node_port=30053,
            ),
            port(
                "assoc", "10.96.0.11", (ep(A, local=True),), protocol=Protocol.SCTP, node_port=30011
            ),
            port(
                "lb",
                ("10.96.0.30", "fd00:96::30"),
                (ep(A, local=True), ep(R), ep(A6, local=True)),
                node_port=30030,
                lb=("203.0.113.30", "2001:db8::30"),
                ranges=("10.180.0.0/24", "192.0.2.7/32", "2001:db8:1::/48"),
            ),
            port(
                "lb-local",
                ("10.96.0.40", "fd00:96::40"),
                (ep(A, local=True), ep(R), ep(R6)),
                node_port=30040,
                lb=("203.0.113.40", "2001:db8::40"),
                proxy_lb=("203.0.113.41",),
                ranges=("192.0.2.0/24",),
                external_local=True,
                health_check=32000,
            ),
            port("sticky", "10.96.0.70", (ep(A, local=True), ep(R)), affinity=600, node_port=30070),
            port("empty", ("10.96.0.20", "fd00:96::20"), (), node_port=30020, lb=("203.0.113.20",)),
            port("near", "10.96.0.60", (ep(A, local=True), ep(R)), internal_local=True),
        ]
    )


def lines(plan: IpvsPlan, chain: str, table: str = "nat") -> list[str]:
    """The ``-A`` rules of one chain of one table of the helper rules, in order."""
    out, current = [], None
    for line in plan.iptables_restore.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(f"-A {chain} "):
            out.append(line)
    return out


def vs_of(plan: IpvsPlan, protocol: Protocol, ip: str, number: int) -> VirtualServer:
    found = plan.virtual_server(protocol, ip, number)
    assert found is not None, f"no virtual service {protocol} {ip}:{number}"
    return found


def reals(vs: VirtualServer) -> list[str]:
    return [rs.address for rs in vs.real_servers]


def sections(text: str) -> dict[str, str]:
    """The text's three sections, keyed by the tool named in each header."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if m := re.match(r"# ==== (\S+)", line):
            current = m.group(1)
            out[current] = []
        else:
            out[current].append(line)
    return {key: "\n".join(value) + "\n" for key, value in out.items()}


# ------------------------------------------------------------------ virtual services


def test_a_virtual_service_per_frontend() -> None:
    plan = render(representative(), OPTIONS)
    keys = {(vs.protocol, vs.ip, vs.port) for vs in plan.virtual_servers}
    tcp, udp, sctp = Protocol.TCP, Protocol.UDP, Protocol.SCTP
    assert (tcp, "10.96.0.10", 80) in keys
    assert (tcp, "198.51.100.10", 80) in keys and (tcp, NODE_IP, 80) in keys
    assert (tcp, "203.0.113.30", 80) in keys
    # NodePorts on every node address of the family but loopback.
    assert {(tcp, ip, 30080) for ip in (NODE_IP, "10.181.0.1")} <= keys
    assert (tcp, "127.0.0.1", 30080) not in keys
    assert (udp, NODE_IP, 30053) in keys and (sctp, NODE_IP, 30011) in keys
    # ipMode Proxy load balancers are not programmed; IPv6 addresses not in IPv4.
    assert not any(vs.ip in ("203.0.113.41", "2001:db8::10") for vs in plan.virtual_servers)
    assert all(vs.family is IPFamily.IPV4 for vs in plan.virtual_servers)
    # One of each, nothing else: 8 ClusterIPs, 2 external IPs, 3 LB IPs, 7 NodePorts x 2.
    assert len(keys) == len(plan.virtual_servers) == 8 + 2 + 3 + 7 * 2


def test_nodeport_addresses_choose_the_node_ips() -> None:
    chosen = replace(OPTIONS, nodeport_addresses=("10.181.0.0/16",))
    plan = render(representative(), chosen)
    assert {vs.ip for vs in plan.virtual_servers if vs.port == 30080} == {"10.181.0.1"}
    # "primary" (and any selection) means what it means for the iptables backend.
    primary = replace(OPTIONS, nodeport_addresses=("primary",))
    chosen_ips = {
        vs.ip for vs in render(representative(), primary).virtual_servers if vs.port == 30080
    }
    assert chosen_ips == set(nodeport_destinations(primary) or ()) and NODE_IP in chosen_ips
    six = render(representative(), OPTIONS6)
    assert {vs.ip for vs in six.virtual_servers if vs.port == 30080} == {NODE_IP6}


def test_real_servers_follow_the_traffic_policies() -> None:
    plan = render(representative(), OPTIONS)
    cluster = [f"{A}:8080", f"{B}:8080", f"{R}:8080"]
    assert reals(vs_of(plan, Protocol.TCP, "10.96.0.10", 80)) == cluster
    assert reals(vs_of(plan, Protocol.TCP, NODE_IP, 30080)) == cluster
    # externalTrafficPolicy Local: external frontends get the local endpoints only,
    # the ClusterIP every endpoint.
    assert reals(vs_of(plan, Protocol.TCP, "10.96.0.40", 80)) == [f"{A}:8080", f"{R}:8080"]
    assert reals(vs_of(plan, Protocol.TCP, "203.0.113.40", 80)) == [f"{A}:8080"]
    assert reals(vs_of(plan, Protocol.TCP, NODE_IP, 30040)) == [f"{A}:8080"]
    # internalTrafficPolicy Local: the ClusterIP gets the local endpoints only.
    assert reals(vs_of(plan, Protocol.TCP, "10.96.0.60", 80)) == [f"{A}:8080"]
    # No endpoints: the service exists with no real server (IPVS then rejects).
    assert vs_of(plan, Protocol.TCP, "10.96.0.20", 80).real_servers == ()
    assert all(rs.weight == 1 for vs in plan.virtual_servers for rs in vs.real_servers)


def test_local_policy_without_local_endpoints_has_no_real_servers() -> None:
    far = port("far", "10.96.0.50", (ep(R),), node_port=30050, external_local=True)
    plan = render(ServiceMap.of([far]), OPTIONS)
    assert vs_of(plan, Protocol.TCP, NODE_IP, 30050).real_servers == ()
    assert reals(vs_of(plan, Protocol.TCP, "10.96.0.50", 80)) == [f"{R}:8080"]


def test_real_servers_are_in_address_order_and_ipv6_is_bracketed() -> None:
    eps = (ep("10.244.1.10"), ep("10.244.1.9"), ep("10.244.1.9", 8081))
    plan = render(ServiceMap.of([port("order", "10.96.0.1", eps)]), OPTIONS)
    assert reals(vs_of(plan, Protocol.TCP, "10.96.0.1", 80)) == [
        "10.244.1.9:8080",
        "10.244.1.9:8081",
        "10.244.1.10:8080",
    ]
    six = render(representative(), OPTIONS6)
    assert reals(vs_of(six, Protocol.TCP, "fd00:96::10", 80)) == [f"[{A6}]:8080", f"[{R6}]:8080"]


@pytest.mark.parametrize("scheduler", list(Scheduler))
def test_scheduler_and_persistence(scheduler: Scheduler) -> None:
    plan = render(representative(), OPTIONS, scheduler=scheduler)
    assert {vs.scheduler for vs in plan.virtual_servers} == {scheduler.value}
    sticky = [vs for vs in plan.virtual_servers if vs.service and vs.service.name == "sticky"]
    assert sticky and all(vs.timeout == 600 for vs in sticky)
    others = [vs for vs in plan.virtual_servers if vs not in sticky]
    assert all(vs.timeout is None for vs in others)


def test_default_scheduler_is_rr_and_unknown_ones_are_refused() -> None:
    assert render(ServiceMap(), OPTIONS).scheduler is Scheduler.RR
    with pytest.raises(ValueError, match="wlcx"):
        render(ServiceMap(), OPTIONS, scheduler="wlcx")


def test_dispatch_through_proxy_mode() -> None:
    plan = render_mode(representative(), OPTIONS, ProxyMode.IPVS, ipvs_scheduler="sh")
    assert isinstance(plan, IpvsPlan) and plan.backend == "ipvs"
    assert plan.scheduler is Scheduler.SH and ProxyMode("ipvs") is ProxyMode.IPVS


# ------------------------------------------------------------------ bound addresses


def test_bound_addresses_are_service_addresses_that_are_not_the_nodes() -> None:
    plan = render(representative(), OPTIONS)
    bound = set(plan.bound_addresses)
    assert {"10.96.0.10", "10.96.0.20", "198.51.100.10", "203.0.113.30"} <= bound
    # An external IP that is a node address stays where it is; NodePorts bind nothing.
    assert NODE_IP not in bound and "10.181.0.1" not in bound
    assert "203.0.113.41" not in bound
    assert list(plan.bound_addresses) == sorted(bound, key=lambda a: tuple(map(int, a.split("."))))
    assert plan.ipset("KUBE-IPVS-IPS").entries == tuple(sorted(bound))


# ------------------------------------------------------------------ ipsets


def test_every_upstream_set_exists_with_its_type_and_comment() -> None:
    plan = render(ServiceMap(), OPTIONS)
    got = [(s.name, s.type, s.comment) for s in plan.ipsets]
    assert got == list(SETS)
    assert all(not s.entries for s in plan.ipsets)
    types = {s.name: s.type for s in plan.ipsets}
    assert types["KUBE-LOOP-BACK"] is SetType.HASH_IP_PORT_IP
    assert types["KUBE-LOAD-BALANCER-SOURCE-CIDR"] is SetType.HASH_IP_PORT_NET
    assert types["KUBE-NODE-PORT-TCP"] is SetType.BITMAP_PORT
    assert types["KUBE-NODE-PORT-SCTP-HASH"] is SetType.HASH_IP_PORT
    assert types["KUBE-IPVS-IPS"] is SetType.HASH_IP
    assert plan.ipset("KUBE-CLUSTER-IP").create == (
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536"
    )
    assert plan.ipset("KUBE-NODE-PORT-TCP").create == (
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535"
    )


def test_ipv6_sets_are_named_kube_6_within_31_characters() -> None:
    plan = render(ServiceMap(), OPTIONS6)
    names = [s.name for s in plan.ipsets]
    assert all(n.startswith("KUBE-6-") and len(n) <= 31 for n in names)
    assert "KUBE-6-LOAD-BALANCER-SOURCE-CID" in names  # cut, as upstream cuts it
    assert set_name("KUBE-NODE-PORT-LOCAL-SCTP-HASH", IPFamily.IPV6) == (
        "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
    )
    assert plan.ipset("KUBE-CLUSTER-IP").create.endswith("family inet6 hashsize 1024 maxelem 65536")


def test_set_entries() -> None:
    plan = render(representative(), OPTIONS)

    def entries(base: str) -> tuple[str, ...]:
        return plan.ipset(base).entries

    assert "10.96.0.10,tcp:80" in entries("KUBE-CLUSTER-IP")
    assert "10.96.0.53,udp:53" in entries("KUBE-CLUSTER-IP")
    assert "10.96.0.11,sctp:80" in entries("KUBE-CLUSTER-IP")
    # Hairpin: every local endpoint, masqueraded when it reaches itself.
    assert f"{A},tcp:8080,{A}" in entries("KUBE-LOOP-BACK")
    assert f"{A},udp:53,{A}" in entries("KUBE-LOOP-BACK")
    assert not any(e.startswith(R) for e in entries("KUBE-LOOP-BACK"))
    assert entries("KUBE-EXTERNAL-IP") == ("10.180.0.1,tcp:80", "198.51.100.10,tcp:80")
    assert entries("KUBE-LOAD-BALANCER") == (
        "203.0.113.20,tcp:80",
        "203.0.113.30,tcp:80",
        "203.0.113.40,tcp:80",
    )
    assert entries("KUBE-LOAD-BALANCER-LOCAL") == ("203.0.113.40,tcp:80",)
    assert entries("KUBE-LOAD-BALANCER-FW") == ("203.0.113.30,tcp:80", "203.0.113.40,tcp:80")
    # A host-length range is spelled as ipset save spells it: a bare address.
    assert entries("KUBE-LOAD-BALANCER-SOURCE-CIDR") == (
        "203.0.113.30,tcp:80,10.180.0.0/24",
        "203.0.113.30,tcp:80,192.0.2.7",
        "203.0.113.40,tcp:80,192.0.2.0/24",
    )
    # The node is inside lb's ranges: its VIP may be the source of the node's request.
    assert entries("KUBE-LOAD-BALANCER-SOURCE-IP") == ("203.0.113.30,tcp:80,203.0.113.30",)
    assert entries("KUBE-NODE-PORT-TCP") == ("30020", "30030", "30040", "30070", "30080")
    assert entries("KUBE-NODE-PORT-LOCAL-TCP") == ("30040",)
    assert entries("KUBE-NODE-PORT-UDP") == ("30053",)
    assert entries("KUBE-NODE-PORT-SCTP-HASH") == ("10.180.0.1,sctp:30011", "10.181.0.1,sctp:30011")
    assert entries("KUBE-HEALTH-CHECK-NODE-PORT") == ("32000",)


def test_a_zero_length_source_range_allows_everything() -> None:
    open_lb = port("open", "10.96.0.90", (ep(A),), lb=("203.0.113.90",), ranges=("0.0.0.0/0",))
    plan = render(ServiceMap.of([open_lb]), OPTIONS)
    assert plan.ipset("KUBE-LOAD-BALANCER-FW").entries == ()
    assert lines(plan, "KUBE-IPVS-OUT-FILTER", "filter") == []


# ------------------------------------------------------------------ helper rules


def test_helper_chains_and_jumps_are_upstreams() -> None:
    plan = render(representative(), OPTIONS)
    declared = re.findall(r"^:(\S+) - \[0:0\]$", plan.iptables_restore, re.M)
    assert declared == [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-NODE-PORT",
        "KUBE-LOAD-BALANCER",
        "KUBE-MARK-MASQ",
        "KUBE-FORWARD",
        "KUBE-NODE-PORT",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "KUBE-IPVS-FILTER",
        "KUBE-IPVS-OUT-FILTER",
    ]
    jumps = [(j.table, j.chain, j.args[-1], j.args[3]) for j in plan.helper.jumps]
    assert jumps == [
        ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
        ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
        ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
        ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
        ("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules"),
        ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
        ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
        ("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter"),
        ("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter"),
    ]


def test_kube_services_rule_order() -> None:
    plan = render(representative(), OPTIONS)
    rules = lines(plan, "KUBE-SERVICES")
    assert rules[0] == "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN"
    assert "--match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER" in rules[1]
    assert rules[2].endswith(
        "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"
    )
    assert rules[3].endswith("--match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ")
    assert "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT" in rules[4]
    assert rules[5].endswith("KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT")
    assert rules[-3] == "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT"
    assert rules[-2:] == [
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        "-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT",
    ]


def test_nodeport_rules_put_local_sets_first() -> None:
    plan = render(representative(), OPTIONS)
    rules = [re.sub(r' -m comment --comment "[^"]*"', "", r) for r in lines(plan, "KUBE-NODE-PORT")]
    assert rules == [
        "-A KUBE-NODE-PORT -p tcp -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN",
        "-A KUBE-NODE-PORT -p tcp -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
        "-A KUBE-NODE-PORT -p udp -m set --match-set KUBE-NODE-PORT-UDP dst -j KUBE-MARK-MASQ",
        "-A KUBE-NODE-PORT -p sctp -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst"
        " -j KUBE-MARK-MASQ",
    ]


def test_rules_of_empty_sets_are_left_out_but_the_filter_refers_to_them() -> None:
    plan = render(ServiceMap(), OPTIONS)
    assert lines(plan, "KUBE-SERVICES") == [
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
    ]
    assert lines(plan, "KUBE-IPVS-FILTER", "filter")[-1] == (
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst"
        " -j REJECT"
    )


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        (replace(OPTIONS, masquerade_all=True), "KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"),
        (
            replace(
                OPTIONS,
                local_detector=LocalDetector(
                    DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"
                ),
            ),
            "KUBE-CLUSTER-IP dst,dst ! -i veth+ -j KUBE-MARK-MASQ",
        ),
        (
            replace(OPTIONS, local_detector=LocalDetector()),
            "KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ",
        ),
    ],
    ids=["masquerade-all", "interface-prefix", "no-detector"],
)
def test_clusterip_masquerade_follows_the_local_detector(options: RenderOptions, rule: str) -> None:
    plan = render(representative(), options)
    assert lines(plan, "KUBE-SERVICES")[2].endswith(rule)


def test_postrouting_mark_and_hairpin() -> None:
    plan = render(representative(), replace(OPTIONS, masquerade_bit=0))
    assert lines(plan, "KUBE-POSTROUTING") == [
        '-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip'
        ' for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE',
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00000001/0x00000001 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00000001",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
    ]
    assert lines(plan, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x00000001"]
    assert lines(plan, "KUBE-LOAD-BALANCER") == [
        '-A KUBE-LOAD-BALANCER -m comment --comment "Kubernetes service load balancer ip + port'
        ' with externalTrafficPolicy=local" -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst'
        " -j RETURN",
        "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
    ]


def test_source_range_firewall_and_the_node_outside_the_ranges() -> None:
    plan = render(representative(), OPTIONS)
    fw = [
        re.sub(r' -m comment --comment "[^"]*"', "", r)
        for r in lines(plan, "KUBE-SOURCE-RANGES-FIREWALL", "filter")
    ]
    assert fw == [
        "-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR"
        " dst,dst,src -j RETURN",
        "-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-IP"
        " dst,dst,src -j RETURN",
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
    ]
    # lb-local's ranges leave the node out: the node may not reach that VIP at all.
    assert lines(plan, "KUBE-IPVS-OUT-FILTER", "filter") == [
        "-A KUBE-IPVS-OUT-FILTER -s 203.0.113.40 -m ipvs --vaddr 203.0.113.40 --vproto tcp"
        " --vport 80 -j DROP"
    ]


def test_ipv6_helper_rules() -> None:
    plan = render(representative(), OPTIONS6)
    assert lines(plan, "KUBE-SERVICES")[0] == "-A KUBE-SERVICES -s ::1/128 -j RETURN"
    assert "KUBE-6-CLUSTER-IP dst,dst ! -s fd00:244::/32" in lines(plan, "KUBE-SERVICES")[2]
    assert plan.helper.family is IPFamily.IPV6


# ------------------------------------------------------------------ text


def test_ipvsadm_lines() -> None:
    sticky = VirtualServer(
        Protocol.TCP, "10.96.0.70", 80, "sh", 600, (RealServer("10.244.1.2", 8080),)
    )
    assert sticky.ipvsadm_lines() == [
        "-A -t 10.96.0.70:80 -s sh -p 600",
        "-a -t 10.96.0.70:80 -r 10.244.1.2:8080 -m -w 1",
    ]
    udp6 = VirtualServer(Protocol.UDP, "fd00::1", 53, real_servers=(RealServer("fd00::2", 53, 3),))
    assert udp6.ipvsadm_lines() == [
        "-A -u [fd00::1]:53 -s rr",
        "-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 3",
    ]
    assert VirtualServer(Protocol.SCTP, "10.0.0.1", 9).ipvsadm_lines() == [
        "-A --sctp-service 10.0.0.1:9 -s rr"
    ]


def test_text_has_three_sections_each_its_tools_input() -> None:
    plan = render(representative(), OPTIONS)
    parts = sections(plan.text)
    assert list(parts) == ["ipset", "iptables-restore", "ipvsadm-restore"]
    assert parts["ipset"] == plan.ipset_restore
    assert parts["iptables-restore"] == plan.helper.text
    ipvsadm = [ln for ln in parts["ipvsadm-restore"].splitlines() if not ln.startswith("#")]
    assert "\n".join(ipvsadm) + "\n" == plan.ipvsadm_restore
    comments = [ln for ln in parts["ipvsadm-restore"].splitlines() if ln.startswith("#")]
    assert (
        comments[0]
        == f"# Addresses bound on {DUMMY_DEVICE} (ip address add ADDRESS/32 dev kube-ipvs0):"
    )
    assert [c.strip("# ") for c in comments[1:]] == list(plan.bound_addresses)
    assert plan.ipvsadm_restore.count("\n-A ") + 1 == len(plan.virtual_servers)


def test_golden_files() -> None:
    for options, family in ((OPTIONS, "ipv4"), (OPTIONS6, "ipv6")):
        text = render(representative(), options).text
        golden = GOLDEN / f"representative-{family}.txt"
        if os.environ.get("KUBENET_REGEN_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden} differs; KUBENET_REGEN_GOLDEN=1 rewrites it"


def test_node_proxy_render_prints_all_three_parts(capsys: pytest.CaptureFixture[str]) -> None:
    node = ["--hostname-override", "node-a", "--cluster-cidr", "10.244.0.0/16,fd00:244::/32"]
    argv = ["render", "--from", str(ROOT / "examples"), *node, "--proxy-mode", "ipvs"]
    code = run(app, "node-proxy", argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert list(sections(out)) == ["ipset", "iptables-restore", "ipvsadm-restore"]
    assert "add KUBE-CLUSTER-IP 10.96.0.10,tcp:80" in out
    assert "-A -t 10.96.0.10:80 -s rr" in out


# ------------------------------------------------------------------ on the kernel


@pytest.fixture
def netns(ipset_kernel: None) -> Iterator[Netns]:
    with Netns("ipvsr") as ns:
        yield ns


@pytest.mark.kernel
@pytest.mark.parametrize("options", [OPTIONS, OPTIONS6], ids=["ipv4", "ipv6"])
def test_ipset_and_iptables_parts_load_into_a_fresh_namespace(
    netns: Netns, options: RenderOptions
) -> None:
    plan = render(representative(), options)
    netns.run(["ipset", "restore"], stdin=plan.ipset_restore)
    saved = netns.run(["ipset", "save"]).stdout
    for s in plan.ipsets:
        assert f"create {s.name} {s.type}" in saved
        for entry in s.entries:
            assert f"add {s.name} {entry}\n" in saved, entry
    tool = "iptables-restore" if options.ip_family is IPFamily.IPV4 else "ip6tables-restore"
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    # --test checks every match against the kernel, including that the sets exist.
    netns.run([tool, "--test", "--noflush"], stdin=plan.helper.text)
    parts = sections(plan.text)
    netns.run([tool, "--test", "--noflush"], stdin=parts[tool])
