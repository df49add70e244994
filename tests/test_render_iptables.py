"""The iptables renderer: upstream's names and layout, options, stale chains, and the kernel.

What the rules *do* is checked by walking packets through them in
tests/test_trace_iptables.py; here are the structure and spelling.

Set ``KUBENET_REGEN_GOLDEN=1`` to rewrite the golden files in tests/data/iptables/
after an intended change (then read the diff before committing it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kubenet.model import Endpoint, IPFamily, Protocol, ServiceMap, ServicePortName
from kubenet.options import DetectLocalMode, LocalDetector
from kubenet.render.iptables import (
    IptablesPlan,
    JumpRule,
    RuleContext,
    chain_hash,
    endpoint_chain_name,
    nodeport_destinations,
    render,
    service_chain_name,
    service_rules,
)
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.builders import NODE_IP as NODE_IP
from tests.builders import NODE_IP6 as NODE_IP6
from tests.builders import endpoint, node_options, with_endpoints
from tests.builders import port as port

GOLDEN = Path(__file__).parent / "data" / "iptables"
OPTIONS = node_options(
    NODE_IP, NODE_IP6, "127.0.0.1", cluster_cidrs=("10.244.0.0/16", "fd00:244::/40")
)
OPTIONS6 = replace(OPTIONS, ip_family=IPFamily.IPV6)
#: The tables' short name for endpoint(); other test modules import it (and port) from here.
ep = endpoint


# ------------------------------------------------------------------ maps


def representative() -> ServiceMap:
    """Every feature once, dual-stack where it matters."""
    a, b, r = "10.244.1.2", "10.244.1.3", "10.244.2.2"
    a6, b6, r6 = "fd00:244:1::2", "fd00:244:1::3", "fd00:244:2::2"
    return ServiceMap.of(
        [
            port(
                "web",
                ("10.96.0.10", "fd00:96::10"),
                (ep(a, local=True), ep(b, local=True), ep(r), ep(a6, local=True), ep(r6)),
                node_port=30080,
                external_ips=("198.51.100.10", "2001:db8::10"),
            ),
            port(
                "dns",
                "10.96.0.53",
                (ep(a, 53, local=True), ep(r, 53)),
                protocol=Protocol.UDP,
                number=53,
                port_name="dns",
            ),
            port("assoc", "10.96.0.11", (ep(a, local=True),), protocol=Protocol.SCTP, port_name=""),
            port(
                "lb",
                ("10.96.0.30", "fd00:96::30"),
                (ep(a, local=True), ep(r), ep(a6, local=True)),
                node_port=30030,
                lb=("203.0.113.30", "2001:db8::30"),
                ranges=("10.180.0.0/24", "192.0.2.0/24", "2001:db8:1::/48"),
            ),
            port(
                "lb-local",
                ("10.96.0.40", "fd00:96::40"),
                (ep(a, local=True), ep(r), ep(b6, local=True), ep(r6)),
                node_port=30040,
                lb=("203.0.113.40", "2001:db8::40"),
                proxy_lb=("203.0.113.41",),
                external_local=True,
            ),
            port("sticky", "10.96.0.70", (ep(a, local=True), ep(r)), affinity=600, node_port=30070),
            port("empty", ("10.96.0.20", "fd00:96::20"), (), node_port=30020, lb=("203.0.113.20",)),
            port("near", "10.96.0.60", (ep(a, local=True), ep(r)), internal_local=True),
            port("nowhere", "10.96.0.61", (ep(r),), internal_local=True),
            port(
                "far",
                "10.96.0.50",
                (ep(r),),
                node_port=30050,
                external_ips=("198.51.100.50",),
                external_local=True,
            ),
        ]
    )


def lines(plan: IptablesPlan, chain: str, table: str = "nat") -> list[str]:
    """The ``-A`` rules of one chain of one table, in order."""
    out, current = [], None
    for line in plan.restore.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(f"-A {chain} "):
            out.append(line)
    return out


def declared(plan: IptablesPlan, table: str = "nat") -> list[str]:
    out, current = [], None
    for line in plan.restore.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(":"):
            out.append(line[1:].split()[0])
    return out


def chains_of(plan: IptablesPlan, name: str) -> tuple[str, ...]:
    return dict((str(k), v) for k, v in plan.chains_by_service)[name]


# ------------------------------------------------------------------ names


def test_chain_names_are_upstreams() -> None:
    # Chain names from upstream's proxier_test.go, for ns<N>/svc<N>:p80 TCP.
    assert service_chain_name(ServicePortName("ns1", "svc1", "p80", Protocol.TCP)) == (
        "KUBE-SVC-XPGD46QRK7WJZT7O"
    )
    assert service_chain_name(ServicePortName("ns2", "svc2", "p80", Protocol.TCP), "KUBE-EXT-") == (
        "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
    )
    assert service_chain_name(ServicePortName("ns3", "svc3", "p80", Protocol.TCP)) == (
        "KUBE-SVC-X27LE4BHSL4DOUIK"
    )
    name = ServicePortName("ns1", "svc1", "p80", Protocol.TCP)
    assert endpoint_chain_name(name, Endpoint("10.180.0.1", 80)) == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_chain_hash_is_base32_of_sha256() -> None:
    for data in ("", "default/web:httptcp", "ns/a:udp[fd00::1]:53", "x" * 300, "ü/é:é"):
        digest = hashlib.sha256(data.encode()).digest()
        assert chain_hash(data) == base64.b32encode(digest).decode()[:16]


def test_unnamed_port_and_ipv6_endpoint_hash_upstreams_strings() -> None:
    name = ServicePortName("ns", "svc", "", Protocol.UDP)
    assert service_chain_name(name) == "KUBE-SVC-" + chain_hash("ns/svcudp")
    assert endpoint_chain_name(name, Endpoint("fd00::1", 53)) == "KUBE-SEP-" + chain_hash(
        "ns/svcudp[fd00::1]:53"
    )


# ------------------------------------------------------------------ layout


def test_golden_file(tmp_path: Path) -> None:
    for options, family in ((OPTIONS, "ipv4"), (OPTIONS6, "ipv6")):
        text = render(representative(), options).text
        golden = GOLDEN / f"representative-{family}.txt"
        if os.environ.get("KUBENET_REGEN_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), f"{golden} differs; KUBENET_REGEN_GOLDEN=1 rewrites it"


def test_restore_has_filter_then_nat_with_upstreams_fixed_chains() -> None:
    plan = render(representative(), OPTIONS)
    text = plan.restore
    assert text.startswith("*filter\n") and text.endswith("COMMIT\n")
    assert text.count("COMMIT\n") == 2 and "\n*nat\n" in text
    # Declared in reverse name order (cheap for iptables-nft's sorted chain cache).
    assert declared(plan, "filter") == [
        "KUBE-SERVICES",
        "KUBE-PROXY-FIREWALL",
        "KUBE-NODEPORTS",
        "KUBE-FORWARD",
        "KUBE-FIREWALL",
        "KUBE-EXTERNAL-SERVICES",
    ]
    nat = declared(plan)
    assert nat == sorted(nat, reverse=True)
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"} <= set(nat)
    # Every jump target of every rule is declared (or is a built-in target).
    for table in ("filter", "nat"):
        known = set(declared(plan, table)) | {"ACCEPT", "DROP", "REJECT", "RETURN", "MARK"}
        known |= {"DNAT", "MASQUERADE"}
        for line in plan.restore.splitlines():
            if (m := re.search(r" -j (\S+)", line)) and line.startswith("-A"):
                in_table = line in lines(plan, line.split()[1], table)
                assert not in_table or m.group(1) in known, line


def test_postrouting_and_mark_chains_use_the_masquerade_bit() -> None:
    plan = render(ServiceMap(), replace(OPTIONS, masquerade_bit=0))
    assert lines(plan, "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00000001/0x00000001 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00000001",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
    ]
    assert lines(plan, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --or-mark 0x00000001"]
    default = render(ServiceMap(), OPTIONS)
    assert "--mark 0x00004000/0x00004000 -j ACCEPT" in lines(default, "KUBE-FORWARD", "filter")[1]


def test_clusterip_service_chains_and_probabilities() -> None:
    eps = (ep("10.244.1.2"), ep("10.244.1.3"), ep("10.244.1.10"))
    plan = render(ServiceMap.of([port("web", "10.96.0.10", eps)]), OPTIONS)
    svc = service_chain_name(ServicePortName("default", "web", "http", Protocol.TCP))
    assert lines(plan, "KUBE-SERVICES")[0] == (
        '-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP"'
        f" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j {svc}"
    )
    rules = lines(plan, svc)
    assert rules[0].endswith("--dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ")
    # Endpoints in upstream's order: by "ip:port" string, so .10 comes before .2.
    order = [re.findall(r'-> ([\d.:]+)"', r) for r in rules[1:]]
    assert order == [["10.244.1.10:8080"], ["10.244.1.2:8080"], ["10.244.1.3:8080"]]
    assert "--probability 0.3333333333 -j" in rules[1]
    assert "--probability 0.5000000000 -j" in rules[2]
    assert "statistic" not in rules[3]
    sep = endpoint_chain_name(ServicePortName("default", "web", "http", Protocol.TCP), eps[0])
    assert lines(plan, sep) == [
        f"-A {sep} -m comment --comment default/web:http -s 10.244.1.2 -j KUBE-MARK-MASQ",
        f"-A {sep} -m comment --comment default/web:http -m tcp -p tcp"
        " -j DNAT --to-destination 10.244.1.2:8080",
    ]


def test_affinity_checks_recent_lists_before_picking() -> None:
    plan = render(
        ServiceMap.of([port("s", "10.96.0.70", (ep("10.244.1.2"),), affinity=600)]), OPTIONS
    )
    name = ServicePortName("default", "s", "http", Protocol.TCP)
    svc, sep = service_chain_name(name), endpoint_chain_name(name, ep("10.244.1.2"))
    assert lines(plan, svc)[1] == (
        f'-A {svc} -m comment --comment "default/s:http -> 10.244.1.2:8080"'
        f" -m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}"
    )
    assert f"-m recent --name {sep} --set -m tcp -p tcp -j DNAT" in lines(plan, sep)[1]


@pytest.mark.parametrize(
    ("detector", "local", "not_local"),
    [
        (
            LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.244.0.0/16",)),
            "-s 10.244.0.0/16",
            "! -s 10.244.0.0/16",
        ),
        (
            LocalDetector(DetectLocalMode.NODE_CIDR, ("10.244.1.0/24",)),
            "-s 10.244.1.0/24",
            "! -s 10.244.1.0/24",
        ),
        (LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"), "-i cbr0", "! -i cbr0"),
        (
            LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"),
            "-i veth+",
            "! -i veth+",
        ),
    ],
    ids=["cluster-cidr", "node-cidr", "bridge", "prefix"],
)
def test_local_detector_modes(detector: LocalDetector, local: str, not_local: str) -> None:
    sp = port(
        "lb", "10.96.0.40", (ep("10.244.1.2", local=True),), node_port=30040, external_local=True
    )
    plan = render(ServiceMap.of([sp]), replace(OPTIONS, local_detector=detector))
    svc = service_chain_name(sp.name)
    ext = service_chain_name(sp.name, "KUBE-EXT-")
    assert lines(plan, svc)[0].endswith(f"--dport 80 {not_local} -j KUBE-MARK-MASQ")
    assert lines(plan, ext)[0].endswith(f'external destinations" {local} -j {svc}')


def test_without_a_local_detector_there_is_no_masquerade_or_short_circuit() -> None:
    sp = port(
        "lb", "10.96.0.40", (ep("10.244.1.2", local=True),), node_port=30040, external_local=True
    )
    plan = render(ServiceMap.of([sp]), replace(OPTIONS, local_detector=LocalDetector()))
    assert "KUBE-MARK-MASQ" not in "".join(lines(plan, service_chain_name(sp.name)))
    assert "pod traffic" not in "".join(lines(plan, service_chain_name(sp.name, "KUBE-EXT-")))
    # ... unless masqueradeAll asks for it.
    plan = render(
        ServiceMap.of([sp]), replace(OPTIONS, local_detector=LocalDetector(), masquerade_all=True)
    )
    assert lines(plan, service_chain_name(sp.name))[0].endswith("--dport 80 -j KUBE-MARK-MASQ")


def test_two_cidrs_of_one_family_are_refused() -> None:
    detector = LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.244.0.0/16", "10.245.0.0/16"))
    with pytest.raises(ValueError, match="one IPv4 CIDR"):
        render(ServiceMap(), replace(OPTIONS, local_detector=detector))


def test_services_without_endpoints_are_rejected_in_filter() -> None:
    plan = render(representative(), OPTIONS)
    empty = [r for r in plan.restore.splitlines() if "default/empty:http has no endpoints" in r]
    assert empty == [
        '-A KUBE-SERVICES -m comment --comment "default/empty:http has no endpoints"'
        " -m tcp -p tcp -d 10.96.0.20 --dport 80 -j REJECT",
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/empty:http has no endpoints"'
        " -m tcp -p tcp -d 203.0.113.20 --dport 80 -j REJECT",
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/empty:http has no endpoints"'
        " -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30020 -j REJECT",
    ]
    assert chains_of(plan, "default/empty:http/TCP") == ()


def test_local_policies_without_local_endpoints_drop() -> None:
    plan = render(representative(), OPTIONS)
    drops = [r for r in plan.restore.splitlines() if "has no local endpoints" in r]
    assert drops == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/far:http has no local endpoints"'
        " -m tcp -p tcp -d 198.51.100.50 --dport 80 -j DROP",
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/far:http has no local endpoints"'
        " -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30050 -j DROP",
        '-A KUBE-SERVICES -m comment --comment "default/nowhere:http has no local endpoints"'
        " -m tcp -p tcp -d 10.96.0.61 --dport 80 -j DROP",
    ]
    far = ServicePortName("default", "far", "http", Protocol.TCP)
    # The EXT chain stays for the short-circuit, but has no final jump to KUBE-SVL-.
    ext = lines(plan, service_chain_name(far, "KUBE-EXT-"))
    assert [r.split(" -j ")[-1] for r in ext] == [
        service_chain_name(far),
        "KUBE-MARK-MASQ",
        service_chain_name(far),
    ]


def test_firewall_chain_allows_ranges_and_the_node() -> None:
    plan = render(representative(), OPTIONS)
    name = ServicePortName("default", "lb", "http", Protocol.TCP)
    fw, ext = service_chain_name(name, "KUBE-FW-"), service_chain_name(name, "KUBE-EXT-")
    head = f'-A {fw} -m comment --comment "default/lb:http loadbalancer IP"'
    assert lines(plan, fw) == [
        f"{head} -s 10.180.0.0/24 -j {ext}",
        f"{head} -s 192.0.2.0/24 -j {ext}",
        # The node IP is inside a range, so the VIP as source (looped back) is let in.
        f"{head} -s 203.0.113.30 -j {ext}",
        f'-A {fw} -m comment --comment "other traffic to default/lb:http will be dropped by'
        ' KUBE-PROXY-FIREWALL"',
    ]
    assert lines(plan, "KUBE-PROXY-FIREWALL", "filter") == [
        "-A KUBE-PROXY-FIREWALL -m comment --comment"
        f' "default/lb:http traffic not accepted by {fw}"'
        " -m tcp -p tcp -d 203.0.113.30 --dport 80 -j DROP"
    ]
    assert any(
        r.endswith(f"-d 203.0.113.30 --dport 80 -j {fw}") for r in lines(plan, "KUBE-SERVICES")
    )
    # IPv6: no range holds the node's IPv6 address, so no VIP allowance.
    plan6 = render(representative(), OPTIONS6)
    assert [r.split(" -s ")[1] for r in lines(plan6, fw)[:-1]] == [f"2001:db8:1::/48 -j {ext}"]


def test_proxy_mode_load_balancer_addresses_are_not_programmed() -> None:
    plan = render(representative(), OPTIONS)
    assert "203.0.113.40" in plan.restore
    assert "203.0.113.41" not in plan.restore


def test_ipv6_plan_uses_only_ipv6_and_ip6tables_spelling() -> None:
    plan = render(representative(), OPTIONS6)
    assert plan.family is IPFamily.IPV6
    assert not re.search(r"\b10\.\d+\.\d+\.\d+", plan.restore)
    assert "--to-destination [fd00:244:1::2]:8080" in plan.restore
    assert "! -d ::1/128 -j KUBE-NODEPORTS" in plan.restore
    assert "KUBE-FIREWALL" not in plan.restore
    assert all("KUBE-FIREWALL" not in j.args for j in plan.jumps)
    assert plan.text.startswith("# Base-chain jumps, ensured with `ip6tables -C`")


@pytest.mark.parametrize(
    ("addresses", "node_ips", "want"),
    [
        ((), (NODE_IP, "10.0.5.1"), None),
        (("10.180.0.0/24",), (NODE_IP, "10.0.5.1"), ("10.180.0.1",)),
        (
            ("10.0.0.0/8", "192.168.0.0/16"),
            (NODE_IP, "10.0.5.1", "192.168.1.1"),
            ("10.0.5.1", NODE_IP, "192.168.1.1"),
        ),
        (("fd00::/8",), (NODE_IP,), None),  # no CIDR of this family: every address
        (("0.0.0.0/0",), (NODE_IP,), None),
        (("primary",), (NODE_IP, "10.0.5.1", NODE_IP6), (NODE_IP,)),  # the first one only
        (("127.0.0.0/8", "10.180.0.0/24"), (NODE_IP, "127.0.0.1"), (NODE_IP,)),
        (("192.0.2.0/24",), (NODE_IP,), ()),
    ],
)
def test_nodeport_addresses(
    addresses: tuple[str, ...], node_ips: tuple[str, ...], want: tuple[str, ...] | None
) -> None:
    options = replace(OPTIONS, nodeport_addresses=addresses, node_ips=node_ips)
    assert nodeport_destinations(options) == want
    plan = render(
        ServiceMap.of([port("np", "10.96.0.30", (ep("10.244.1.2"),), node_port=30030)]), options
    )
    tail = [r for r in lines(plan, "KUBE-SERVICES") if "-j KUBE-NODEPORTS" in r]
    if want is None:
        assert tail == [
            '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports;'
            ' NOTE: this must be the last rule in this chain"'
            " -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
        ]
    else:
        assert [r.split(" -d ")[1] for r in tail] == [f"{ip} -j KUBE-NODEPORTS" for ip in want]
    # The NodePort hand-off is the last rule of nat KUBE-SERVICES.
    if tail:
        assert lines(plan, "KUBE-SERVICES")[-len(tail) :] == tail


def test_large_clusters_drop_endpoint_comments() -> None:
    eps = tuple(ep(f"10.244.{i // 250}.{i % 250 + 1}") for i in range(1001))
    plan = render(ServiceMap.of([port("big", "10.96.0.10", eps)]), OPTIONS)
    svc = service_chain_name(ServicePortName("default", "big", "http", Protocol.TCP))
    assert "-m comment" not in lines(plan, svc)[1]
    sep = endpoint_chain_name(ServicePortName("default", "big", "http", Protocol.TCP), eps[0])
    assert lines(plan, sep)[0] == f"-A {sep} -s {eps[0].ip} -j KUBE-MARK-MASQ"
    small = render(ServiceMap.of([port("big", "10.96.0.10", eps[:1000])]), OPTIONS)
    assert "-m comment" in lines(small, sep)[0]


# ------------------------------------------------------------------ jumps and text


def test_jumps_are_upstreams_base_chain_jumps() -> None:
    plan = render(ServiceMap(), OPTIONS)
    spelled = [str(j) for j in plan.jumps]
    assert spelled[0] == (
        "-t filter -I INPUT -m conntrack --ctstate NEW -m comment --comment"
        ' "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES'
    )
    assert (
        '-t nat -I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        in spelled
    )
    assert (
        '-t nat -I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        in spelled
    )
    assert spelled[-2:] == [
        "-t filter -I INPUT -j KUBE-FIREWALL",
        "-t filter -I OUTPUT -j KUBE-FIREWALL",
    ]
    assert {(j.table, j.chain) for j in plan.jumps} == {
        ("filter", "INPUT"),
        ("filter", "FORWARD"),
        ("filter", "OUTPUT"),
        ("nat", "PREROUTING"),
        ("nat", "OUTPUT"),
        ("nat", "POSTROUTING"),
    }
    # Every jump lands on a chain the restore declares.
    for jump in plan.jumps:
        assert jump.args[-1] in declared(plan, jump.table)
    assert str(
        JumpRule("nat", "OUTPUT", ("-m", "comment", "--comment", 'say "hi"', "-j", "X"))
    ) == ('-t nat -I OUTPUT -m comment --comment "say \\"hi\\"" -j X')


def test_text_is_the_jumps_as_comments_then_the_restore() -> None:
    plan = render(representative(), OPTIONS)
    head, _, rest = plan.text.partition("*filter\n")
    assert "*filter\n" + rest == plan.restore
    assert head.splitlines()[1:] == [f"# {j}" for j in plan.jumps]
    assert all(line.startswith("#") for line in head.splitlines())


def test_render_is_deterministic_and_order_independent() -> None:
    ports = list(representative())
    first = render(ServiceMap.of(ports), OPTIONS)
    again = render(ServiceMap.of(list(reversed(ports))), OPTIONS)
    assert first == again


def test_render_takes_only_the_family_of_the_options() -> None:
    v4 = port("v4only", "10.96.0.9", (ep("10.244.1.2"),))
    plan6 = render(ServiceMap.of([v4]), OPTIONS6)
    assert plan6.chains_by_service == ()
    assert "10.96.0.9" not in plan6.restore


# ------------------------------------------------------------------ per-service pieces


def test_a_service_s_rules_depend_on_it_alone() -> None:
    web = port("web", "10.96.0.10", (ep("10.244.1.2"), ep("10.244.1.3")), node_port=30080)
    other = port("other", "10.96.0.11", (ep("10.244.1.4"),), affinity=60)
    alone = render(ServiceMap.of([web]), OPTIONS)
    both = render(ServiceMap.of([web, other]), OPTIONS)
    assert chains_of(alone, "default/web:http/TCP") == chains_of(both, "default/web:http/TCP")
    rules = service_rules(web, RuleContext.of(OPTIONS))
    for line in (*rules.filter_rules, *rules.entry_rules, *rules.chain_rules):
        assert line in both.restore.splitlines()
    assert rules.chains == chains_of(both, "default/web:http/TCP")


def test_chains_by_service_lists_every_service_chain() -> None:
    plan = render(representative(), OPTIONS)
    listed = [c for _, chains in plan.chains_by_service for c in chains]
    service_chains = [
        c
        for c in declared(plan)
        if c.startswith(("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"))
    ]
    assert sorted(listed) == sorted(service_chains)
    assert len(set(listed)) == len(listed)
    lb_local = chains_of(plan, "default/lb-local:http/TCP")
    assert [c[: c.rindex("-") + 1] for c in lb_local[:3]] == ["KUBE-EXT-", "KUBE-SVC-", "KUBE-SVL-"]


def test_stale_chains_of_the_previous_plan_are_flushed_and_deleted() -> None:
    web = port("web", "10.96.0.10", (ep("10.244.1.2"), ep("10.244.1.3")))
    gone = port("gone", "10.96.0.11", (ep("10.244.1.4"),), node_port=30011)
    first = render(ServiceMap.of([web, gone]), OPTIONS)
    web2 = with_endpoints(web, web.endpoints[:1])
    second = render(ServiceMap.of([web2]), OPTIONS, previous=first)
    stale = sorted(
        set(chains_of(first, "default/gone:http/TCP"))
        | {endpoint_chain_name(web.name, web.endpoints[1])}
    )
    assert [line for line in second.restore.splitlines() if line.startswith("-X ")] == [
        f"-X {c}" for c in stale
    ]
    assert set(stale) <= set(declared(second))
    assert second.service_chains() == set(chains_of(second, "default/web:http/TCP"))
    # Nothing is deleted when nothing went away, and the deletions do not carry over.
    third = render(ServiceMap.of([web2]), OPTIONS, previous=second)
    assert "\n-X " not in third.restore
    with pytest.raises(ValueError, match="previous plan is IPv4"):
        render(ServiceMap(), OPTIONS6, previous=first)


# ------------------------------------------------------------------ on the kernel


def _plans() -> dict[str, IptablesPlan]:
    full = representative()
    first = render(full, OPTIONS)
    return {
        "representative-ipv4": first,
        "representative-ipv6": render(full, OPTIONS6),
        "masquerade-all": render(full, replace(OPTIONS, masquerade_all=True)),
        "bridge": render(
            full,
            replace(
                OPTIONS,
                local_detector=LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"),
            ),
        ),
        "prefix-ipv6": render(
            full,
            replace(
                OPTIONS6,
                local_detector=LocalDetector(
                    DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"
                ),
            ),
        ),
        "nodeport-addresses": render(full, replace(OPTIONS, nodeport_addresses=("10.180.0.0/24",))),
        "stale-deletion": render(ServiceMap(), OPTIONS, previous=first),
        "empty": render(ServiceMap(), OPTIONS),
    }


def _restore_tools() -> list[str]:
    """The iptables-restore flavours installed (the default one and both backends)."""
    return [
        t
        for t in ("iptables-restore", "iptables-legacy-restore", "iptables-nft-restore")
        if shutil.which(t)
    ]


@pytest.fixture(scope="module")
def iptables_ok() -> None:
    missing = missing_kernel_support(iptables=True)
    if missing:
        pytest.skip(missing)


@pytest.fixture
def netns(iptables_ok: None) -> Iterator[Netns]:
    with Netns("iptr") as ns:
        yield ns


@pytest.mark.kernel
@pytest.mark.parametrize("tool", _restore_tools() or ["iptables-restore"])
@pytest.mark.parametrize("name", list(_plans()))
def test_iptables_restore_accepts_the_text(netns: Netns, name: str, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    plan = _plans()[name]
    if plan.family is IPFamily.IPV6:
        tool = tool.replace("iptables", "ip6tables")
    # plan.text (restore input with the jumps as comments) must load as well.
    netns.run([tool, "--test", "--noflush"], stdin=plan.text)
