"""The nftables renderer: layout, elements, the full script, diffs, and nft accepting it all.

Set ``KUBENET_REGEN_GOLDEN=1`` to rewrite the golden scripts in tests/data/nftables/
after an intended change (then read the diff before committing it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kubenet.model import IPFamily, Protocol, ServiceMap, TrafficPolicy
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render.nft_ruleset import NftSyntaxError, Ruleset, diff, parse_script
from kubenet.render.nftables import NftablesPlan, endpoint_ids, render, service_chain_base
from kubenet.testing.netns import Netns, missing_kernel_support
from kubenet.trace import Packet
from kubenet.trace.nftables import Tracer
from tests.builders import NODE_IP as NODE_IP
from tests.builders import NODE_IP6 as NODE_IP6
from tests.builders import endpoint, node_options, with_endpoints
from tests.builders import port as port

GOLDEN = Path(__file__).parent / "data" / "nftables"
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
            port(
                "lb-local",
                ("10.96.0.40", "fd00:96::40"),
                (ep(a, local=True), ep(r), ep(b6, local=True), ep(r6)),
                node_port=30040,
                lb=("203.0.113.40", "2001:db8::40"),
                proxy_lb=("203.0.113.41",),
                ranges=("10.180.0.0/24", "10.180.0.0/25", "192.0.2.0/24", "2001:db8:1::/48"),
                external_local=True,
            ),
            port("sticky", "10.96.0.70", (ep(a, local=True), ep(r)), affinity=600, node_port=30070),
            port("empty", ("10.96.0.20", "fd00:96::20"), (), node_port=30020),
            port("near", "10.96.0.60", (ep(r),), internal_local=True),
            port("far", "10.96.0.50", (ep(r),), node_port=30050, external_local=True),
        ]
    )


def clusterip_map(services: int, endpoints: int, first: int = 0) -> ServiceMap:
    """``services`` ClusterIP Services of ``endpoints`` remote endpoints each."""
    ports = []
    for i in range(first, first + services):
        eps = tuple(ep(f"10.{128 + i // 250}.{i % 250}.{j + 1}") for j in range(endpoints))
        ports.append(port(f"svc-{i}", f"10.96.{i // 250}.{i % 250 + 1}", eps))
    return ServiceMap.of(ports)


def elements(plan: NftablesPlan, name: str) -> dict[str, str | None]:
    return dict(plan.ruleset.set(name).elements)


def chain_names(plan: NftablesPlan) -> set[str]:
    return {c.name for c in plan.ruleset.chains}


# -------------------------------------------------------------------- golden


@pytest.mark.parametrize("options", [OPTIONS, OPTIONS6], ids=["ipv4", "ipv6"])
def test_golden_script(options: RenderOptions) -> None:
    plan = render(representative(), options)
    path = GOLDEN / f"representative-{options.ip_family.value.lower()}.nft"
    if os.environ.get("KUBENET_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(plan.text)
    assert plan.text == path.read_text()
    # The text says exactly what the structure says.
    assert parse_script(plan.text).canonical() == plan.ruleset.canonical()


def test_the_script_replaces_the_table_atomically() -> None:
    text = render(representative(), OPTIONS).text
    assert text.startswith(
        "add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {"
    )
    # Replaying it over any earlier state leaves exactly the new table.
    old = render(clusterip_map(3, 2), OPTIONS).ruleset
    assert parse_script(text, start=old).canonical() == parse_script(text).canonical()


def test_render_is_deterministic() -> None:
    first = render(representative(), OPTIONS).text
    shuffled = ServiceMap.of(list(reversed(representative().ports)))
    assert render(shuffled, OPTIONS).text == first


def test_ipv6_plan_uses_ip6_and_only_ipv6_addresses() -> None:
    plan = render(representative(), OPTIONS6)
    assert plan.ruleset.family == "ip6"
    assert "ip daddr" not in plan.text and "ipv4_addr" not in plan.text
    assert not re.search(r"\b10\.\d+\.\d+\.\d+\b", plan.text)
    assert elements(plan, "service-ips")["fd00:96::10 . tcp . 80"] == "goto cluster-2"


# -------------------------------------------------------------------- layout


def test_chains_do_not_grow_with_the_number_of_services() -> None:
    small = render(clusterip_map(2, 3), OPTIONS)
    large = render(clusterip_map(400, 3), OPTIONS)
    assert chain_names(small) == chain_names(large)
    assert len(elements(large, "cluster-endpoints-tcp")) == 400 * 3
    assert len(elements(large, "service-ips")) == 400


def test_services_are_grouped_by_endpoint_count() -> None:
    sm = ServiceMap.of(
        [
            port("one", "10.96.0.1", (ep("10.244.2.1"),)),
            port("two", "10.96.0.2", (ep("10.244.2.2"), ep("10.244.2.3"))),
            port("also-two", "10.96.0.3", (ep("10.244.2.4"), ep("10.244.2.5"))),
        ]
    )
    plan = render(sm, OPTIONS)
    assert elements(plan, "service-ips") == {
        "10.96.0.1 . tcp . 80": "goto cluster-1",
        "10.96.0.2 . tcp . 80": "goto cluster-2",
        "10.96.0.3 . tcp . 80": "goto cluster-2",
    }
    assert plan.ruleset.chain("cluster-2").rules == tuple(
        f"dnat to ip daddr . {p} dport . numgen random mod 2 map @cluster-endpoints-{p}"
        for p in ("tcp", "udp", "sctp")
    )
    assert elements(plan, "cluster-endpoints-tcp") == {
        "10.96.0.1 . 80 . 0": "10.244.2.1 . 8080",
        "10.96.0.2 . 80 . 0": "10.244.2.2 . 8080",
        "10.96.0.2 . 80 . 1": "10.244.2.3 . 8080",
        "10.96.0.3 . 80 . 0": "10.244.2.4 . 8080",
        "10.96.0.3 . 80 . 1": "10.244.2.5 . 8080",
    }
    assert elements(plan, "cluster-endpoints-udp") == {}


def test_external_traffic_keys_its_own_endpoints() -> None:
    plan = render(representative(), OPTIONS)
    ips = elements(plan, "service-ips")
    assert ips["198.51.100.10 . tcp . 80"] == "goto external-3"
    assert ips["203.0.113.40 . tcp . 80"] == "goto external-local-1"
    assert elements(plan, "service-nodeports")["tcp . 30040"] == "goto nodeport-external-local-1"
    assert elements(plan, "local-endpoints-tcp")["203.0.113.40 . 80 . 0"] == "10.244.1.2 . 8080"
    assert elements(plan, "cluster-endpoints-udp")["10.96.0.53 . 53 . 1"] == "10.244.2.2 . 53"
    # Pods and the node use every endpoint of a Local-policy Service.
    assert elements(plan, "short-circuit-ips")["203.0.113.40 . tcp . 80"] == "goto cluster-2"
    assert elements(plan, "short-circuit-nodeports")["tcp . 30040"] == "goto nodeport-cluster-2"
    assert plan.ruleset.chain("external-3").rules == ("jump mark-for-masquerade", "goto cluster-3")


def test_services_without_usable_endpoints() -> None:
    plan = render(representative(), OPTIONS)
    no_eps = elements(plan, "no-endpoint-services")
    assert no_eps["10.96.0.20 . tcp . 80"] == "goto reject-chain"  # none anywhere
    assert no_eps["10.96.0.60 . tcp . 80"] == "drop"  # internal policy Local, none here
    assert elements(plan, "no-endpoint-nodeports") == {
        "tcp . 30020": "goto reject-chain",
        "tcp . 30050": "drop",  # external policy Local, none here
    }
    # Local policy without local endpoints still short-circuits pods and the node.
    assert elements(plan, "service-nodeports")["tcp . 30050"] == "goto nodeport-external-local-0"
    assert not any(
        r.startswith("goto") for r in plan.ruleset.chain("nodeport-external-local-0").rules
    )


def test_proxy_mode_load_balancer_addresses_are_not_programmed() -> None:
    text = render(representative(), OPTIONS).text
    assert "203.0.113.41" not in text


def test_internal_traffic_policy_local_uses_local_endpoints() -> None:
    sm = ServiceMap.of(
        [
            port(
                "near",
                "10.96.0.60",
                (ep("10.244.1.2", local=True), ep("10.244.2.2")),
                internal_local=True,
            )
        ]
    )
    plan = render(sm, OPTIONS)
    assert elements(plan, "service-ips") == {"10.96.0.60 . tcp . 80": "goto local-1"}
    assert elements(plan, "local-endpoints-tcp") == {"10.96.0.60 . 80 . 0": "10.244.1.2 . 8080"}


@pytest.mark.parametrize(
    ("addresses", "family", "want"),
    [
        # Empty means "primary", as upstream's nftables mode: the first node IP only.
        ((), IPFamily.IPV4, {"10.180.0.1"}),
        (("primary",), IPFamily.IPV4, {"10.180.0.1"}),
        (("primary", "10.180.9.0/24"), IPFamily.IPV4, {"10.180.0.1", "10.180.9.1"}),
        (("10.180.9.0/24",), IPFamily.IPV4, {"10.180.9.1"}),
        (("10.180.9.0/24", "fd00:180::/64"), IPFamily.IPV6, {"fd00:180::1"}),
        (("192.0.2.0/24",), IPFamily.IPV4, set()),
    ],
)
def test_nodeport_addresses(addresses: tuple[str, ...], family: IPFamily, want: set[str]) -> None:
    options = replace(
        OPTIONS,
        ip_family=family,
        node_ips=("10.180.0.1", "10.180.9.1", "127.0.0.1", "fd00:180::1", "::1"),
        nodeport_addresses=addresses,
    )
    assert set(elements(render(ServiceMap(), options), "nodeport-ips")) == want


def test_masquerade_bit_sets_the_mark() -> None:
    plan = render(ServiceMap(), replace(OPTIONS, masquerade_bit=5))
    assert plan.ruleset.chain("mark-for-masquerade").rules == (
        "meta mark set meta mark | 0x00000020",
    )
    assert "meta mark & 0x00000020 != 0x00000000" in plan.ruleset.chain("masquerading").rules[0]


@pytest.mark.parametrize(
    ("detector", "masquerade_all", "first_rule"),
    [
        (
            LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.244.0.0/16",)),
            False,
            "ip daddr @cluster-ips ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        ),
        (
            LocalDetector(
                DetectLocalMode.NODE_CIDR, ("10.244.1.0/24", "10.244.9.0/24", "fd00::/8")
            ),
            False,
            "ip daddr @cluster-ips ip saddr != { 10.244.1.0/24, 10.244.9.0/24 } "
            "jump mark-for-masquerade",
        ),
        (
            LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"),
            False,
            'ip daddr @cluster-ips iifname != "cbr0" jump mark-for-masquerade',
        ),
        (
            LocalDetector(DetectLocalMode.INTERFACE_NAME_PREFIX, interface="veth"),
            False,
            'ip daddr @cluster-ips iifname != "veth*" jump mark-for-masquerade',
        ),
        (LocalDetector(), True, "ip daddr @cluster-ips jump mark-for-masquerade"),
        (LocalDetector(), False, "ip daddr . meta l4proto . th dport vmap @service-ips"),
    ],
    ids=["cluster-cidr", "node-cidrs", "bridge", "prefix", "masquerade-all", "no-detector"],
)
def test_clusterip_masquerade_rule(
    detector: LocalDetector, masquerade_all: bool, first_rule: str
) -> None:
    options = replace(OPTIONS, local_detector=detector, masquerade_all=masquerade_all)
    services = render(ServiceMap(), options).ruleset.chain("services")
    assert services.rules[0].split(' comment "')[0] == first_rule


def test_the_first_port_to_claim_an_address_wins() -> None:
    sm = ServiceMap.of(
        [
            port(
                "a",
                "10.96.0.1",
                (ep("10.244.2.1"),),
                node_port=30000,
                external_ips=("198.51.100.1",),
            ),
            port(
                "b",
                "10.96.0.2",
                (ep("10.244.2.2"), ep("10.244.2.3")),
                node_port=30000,
                external_ips=("198.51.100.1",),
            ),
        ]
    )
    plan = render(sm, OPTIONS)
    assert elements(plan, "service-nodeports") == {"tcp . 30000": "goto nodeport-external-1"}
    assert elements(plan, "nodeport-cluster-endpoints-tcp") == {"30000 . 0": "10.244.2.1 . 8080"}
    assert elements(plan, "service-ips")["198.51.100.1 . tcp . 80"] == "goto external-1"
    assert "10.96.0.2 . tcp . 80" in elements(plan, "service-ips")


def test_source_ranges_are_merged_and_let_the_node_through() -> None:
    plan = render(representative(), OPTIONS)
    assert elements(plan, "firewall-ips") == {"203.0.113.40 . tcp . 80": None}
    # The overlapping /25 folds into the /24; the node's own address is in a range,
    # so the load-balancer address may be a source too (upstream's allowance).
    assert set(elements(plan, "firewall-allow")) == {
        "203.0.113.40 . tcp . 80 . 10.180.0.0/24",
        "203.0.113.40 . tcp . 80 . 192.0.2.0/24",
        "203.0.113.40 . tcp . 80 . 203.0.113.40",
    }


def test_hairpin_set_holds_node_local_endpoints() -> None:
    plan = render(representative(), OPTIONS)
    assert set(elements(plan, "hairpin-connections")) == {
        "10.244.1.2 . 10.244.1.2 . tcp . 8080",
        "10.244.1.3 . 10.244.1.3 . tcp . 8080",
        "10.244.1.2 . 10.244.1.2 . udp . 53",
    }


def test_affinity_gets_its_own_chain_and_one_set() -> None:
    plan = render(representative(), OPTIONS)
    sticky = next(p for p in representative() if p.name.name == "sticky")
    base = service_chain_base(sticky)
    assert base.startswith(re.match(r"[A-Z2-7]{8}-", base)[0])  # type: ignore[index]
    assert base.endswith("-default/sticky/tcp/http")
    aff = plan.ruleset.set(f"affinity-{base}")
    assert (aff.flags, aff.timeout, dict(aff.elements)) == (("dynamic", "timeout"), 600, {})
    assert elements(plan, "service-ips")["10.96.0.70 . tcp . 80"] == f"goto service-{base}"
    assert elements(plan, "service-nodeports")["tcp . 30070"] == f"goto external-{base}"
    rules = plan.ruleset.chain(f"service-{base}").rules
    ids = endpoint_ids(sticky.cluster_endpoints)
    first = sticky.cluster_endpoints[0]
    assert rules[0].startswith(f"ip saddr . numgen inc mod 1 offset {ids[first]} @affinity-{base}")
    assert rules[2].startswith("numgen random mod 2 == 0 ")
    assert len(rules) == 4  # one sticky rule and one pick per endpoint
    # Nothing of it lands in the shared maps.
    assert not any(k.startswith("10.96.0.70 ") for k in elements(plan, "cluster-endpoints-tcp"))


def test_endpoint_ids_depend_on_the_endpoint_alone() -> None:
    a, b, c = ep("10.244.1.2"), ep("10.244.1.3"), ep("10.244.1.2", 9090)
    ids = endpoint_ids((a, b, c))
    assert len(set(ids.values())) == 3
    assert endpoint_ids((a,))[a] == ids[a] == endpoint_ids((c, a))[a]
    assert all(0 <= i < 2**32 for i in ids.values())
    # The same address seen with other conditions (say, now terminating) keeps its id.
    ending = replace(a, ready=False, terminating=True)
    assert endpoint_ids((a, ending))[ending] == ids[a]


# ---------------------------------------------------------------------- diffs


def _variants() -> dict[str, ServiceMap]:
    base = list(representative())
    web = next(p for p in base if p.name.name == "web")
    rest = [p for p in base if p is not web]
    sticky = next(p for p in base if p.name.name == "sticky")
    others = [p for p in base if p is not sticky]
    return {
        "endpoint added": ServiceMap.of(
            [with_endpoints(web, (*web.endpoints, ep("10.244.3.3"))), *rest]
        ),
        "endpoint removed": ServiceMap.of([with_endpoints(web, web.endpoints[1:]), *rest]),
        "endpoint replaced": ServiceMap.of(
            [with_endpoints(web, (*web.endpoints[:-1], ep("10.244.3.9"))), *rest]
        ),
        "all endpoints gone": ServiceMap.of([with_endpoints(web, ()), *rest]),
        "service added": ServiceMap.of(
            [*base, port("new", "10.96.0.99", (ep("10.244.1.4", local=True),))]
        ),
        "service removed": ServiceMap.of(rest),
        "affinity dropped": ServiceMap.of([replace(sticky, affinity_timeout=None), *others]),
        "affinity timeout changed": ServiceMap.of([replace(sticky, affinity_timeout=60), *others]),
        "external policy changed": ServiceMap.of(
            [
                with_endpoints(replace(web, external_policy=TrafficPolicy.LOCAL), web.endpoints),
                *rest,
            ]
        ),
        "node port moved": ServiceMap.of([replace(web, node_port=30081), *rest]),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_diff_replays_to_the_new_ruleset(name: str) -> None:
    old = render(representative(), OPTIONS)
    new = render(_variants()[name], OPTIONS)
    script = diff(old.ruleset, new.ruleset)
    assert script and "delete table" not in script
    assert parse_script(old.text + script).canonical() == new.ruleset.canonical()


def test_diff_of_equal_rulesets_is_empty() -> None:
    plan = render(representative(), OPTIONS)
    assert diff(plan.ruleset, render(representative(), OPTIONS).ruleset) == ""


def test_an_endpoint_change_costs_the_same_in_any_cluster() -> None:
    def one_change(services: int) -> list[str]:
        old = clusterip_map(services, 3)
        victim = old.ports[0]
        moved = with_endpoints(victim, (*victim.endpoints[:2], ep("10.250.0.9")))
        new = ServiceMap.of([moved, *old.ports[1:]])
        return diff(render(old, OPTIONS).ruleset, render(new, OPTIONS).ruleset).splitlines()

    small, large = one_change(5), one_change(2000)
    assert len(small) == len(large) == 2
    assert small[0].startswith("delete element ip kube-proxy cluster-endpoints-tcp {")
    assert small[1].startswith("add element ip kube-proxy cluster-endpoints-tcp {")


def test_diff_between_tables_of_different_families_is_a_full_replace() -> None:
    v4 = render(representative(), OPTIONS).ruleset
    v6 = render(representative(), OPTIONS6)
    assert diff(v4, v6.ruleset) == v6.text


# --------------------------------------------------------------- the reader


def test_reader_refuses_what_the_kernel_refuses() -> None:
    text = render(clusterip_map(1, 1), OPTIONS).text
    add = "add element ip kube-proxy cluster-endpoints-tcp { 10.96.0.1 . 80 . 0 : 10.1.1.1 . 1 }"
    with pytest.raises(NftSyntaxError, match="exists with another value"):
        parse_script(text + add + "\n")
    with pytest.raises(NftSyntaxError, match="missing element"):
        parse_script(text + "delete element ip kube-proxy cluster-ips { 10.1.2.3 }\n")
    with pytest.raises(NftSyntaxError, match="unknown command"):
        parse_script(text + "insert rule ip kube-proxy services accept\n")
    with pytest.raises(NftSyntaxError, match="unknown set attribute"):
        parse_script("table ip t {\n set s {\n type ipv4_addr\n gc-interval 1s\n }\n}\n")


def test_reader_understands_nft_listings() -> None:
    listing = """table ip kube-proxy {
	comment "rules for kube-proxy"
	set aff {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
	}

	map m {
		typeof meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport
		elements = { tcp . 30080 . 0 : 10.244.1.2 . 8080,
			tcp . 30080 . 1 : 10.244.1.3 . 8080 }
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat - 10; policy accept;
		dnat ip to meta l4proto . th dport . numgen random mod 2 map @m
	}
}
"""
    rs = parse_script(listing)
    assert rs.set("aff").timeout == 10800
    assert rs.chain("nat-prerouting").base is not None
    assert rs.chain("nat-prerouting").base.priority == -110  # type: ignore[union-attr]
    assert dict(rs.set("m").elements) == {
        "tcp . 30080 . 0": "10.244.1.2 . 8080",
        "tcp . 30080 . 1": "10.244.1.3 . 8080",
    }


# ------------------------------------------------------------ on the kernel


@pytest.fixture(scope="module")
def nft_ok() -> None:
    missing = missing_kernel_support(tools=("nft",), nftables=True)
    if missing:
        pytest.skip(missing)


@pytest.fixture
def netns(nft_ok: None) -> Iterator[Netns]:
    with Netns("nftr") as ns:
        yield ns


def _scenario_plans() -> dict[str, NftablesPlan]:
    plans = {
        "representative-ipv4": render(representative(), OPTIONS),
        "representative-ipv6": render(representative(), OPTIONS6),
        "no-detector": render(representative(), replace(OPTIONS, local_detector=LocalDetector())),
        "masquerade-all": render(representative(), replace(OPTIONS, masquerade_all=True)),
        "bridge": render(
            representative(),
            replace(
                OPTIONS,
                local_detector=LocalDetector(DetectLocalMode.BRIDGE_INTERFACE, interface="cbr0"),
            ),
        ),
        "empty": render(ServiceMap(), OPTIONS),
    }
    for name, variant in _variants().items():
        plans[name] = render(variant, OPTIONS)
    return plans


def _kernel_view(listing: str) -> Ruleset:
    return parse_script(listing).canonical()


def _list(ns: Netns, family: str) -> str:
    return ns.run(["nft", "list", "table", family, "kube-proxy"]).stdout


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(_scenario_plans()))
def test_nft_accepts_the_script(netns: Netns, name: str) -> None:
    plan = _scenario_plans()[name]
    netns.run(["nft", "-c", "-f", "-"], stdin=plan.text)


@pytest.mark.kernel
@pytest.mark.parametrize("options", [OPTIONS, OPTIONS6], ids=["ipv4", "ipv6"])
def test_loaded_table_lists_back_as_rendered(netns: Netns, options: RenderOptions) -> None:
    plan = render(representative(), options)
    netns.run(["nft", "-f", "-"], stdin=plan.text)
    netns.run(["nft", "-f", "-"], stdin=plan.text)  # a second full replace is fine too
    listed = _kernel_view(_list(netns, plan.ruleset.family))
    want = plan.ruleset.canonical()
    assert [c.name for c in listed.chains] == [c.name for c in want.chains]
    assert [c.base for c in listed.chains] == [c.base for c in want.chains]
    assert [len(c.rules) for c in listed.chains] == [len(c.rules) for c in want.chains]
    assert [(s.name, dict(s.elements)) for s in listed.sets] == [
        (s.name, dict(s.elements)) for s in want.sets
    ]
    # The tracer reads nft's own spelling of the table and reaches the same verdicts.
    family6 = options.ip_family is IPFamily.IPV6
    packets = [
        Packet(
            "fd00:180::2" if family6 else "10.180.0.2",
            "fd00:96::10" if family6 else "10.96.0.10",
            Protocol.TCP,
            80,
        ),
        Packet(
            "fd00:244:1::4" if family6 else "10.244.1.4",
            NODE_IP6 if family6 else NODE_IP,
            Protocol.TCP,
            30040,
        ),
        Packet(
            NODE_IP6 if family6 else NODE_IP,
            "fd00:96::20" if family6 else "10.96.0.20",
            Protocol.TCP,
            80,
        ),
    ]
    from_listing = Tracer(_list(netns, plan.ruleset.family), options.node_ips)
    from_text = Tracer(plan.text, options.node_ips)
    for packet in packets:
        a, b = from_listing.trace(packet), from_text.trace(packet)
        assert (a.verdict, a.endpoints, a.masquerade) == (b.verdict, b.endpoints, b.masquerade)


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(_variants()))
def test_diff_applied_by_the_kernel_equals_a_fresh_load(netns: Netns, name: str) -> None:
    old = render(representative(), OPTIONS)
    new = render(_variants()[name], OPTIONS)
    netns.run(["nft", "-f", "-"], stdin=old.text)
    netns.run(["nft", "-f", "-"], stdin=diff(old.ruleset, new.ruleset))
    patched = _kernel_view(_list(netns, "ip"))
    netns.run(["nft", "-f", "-"], stdin=new.text)
    assert patched == _kernel_view(_list(netns, "ip"))
