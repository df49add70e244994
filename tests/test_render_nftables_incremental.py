"""The incremental nftables table: always equal to a full render, scripts that replay exactly."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.model import (
    Endpoint,
    IPFamily,
    LoadBalancerIngress,
    Protocol,
    ServiceMap,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from kubenet.options import RenderOptions
from kubenet.render.nft_ruleset import Ruleset, parse_script
from kubenet.render.nftables import PortRenderer, claim_keys, render
from kubenet.render.nftables_incremental import IncrementalTable
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.scenarios import SCENARIOS
from tests.test_render_nftables import OPTIONS, OPTIONS6, clusterip_map, ep, port, representative


def _full(ports: dict[ServicePortName, ServicePort], options: RenderOptions) -> Ruleset:
    return render(ServiceMap.of(list(ports.values())), options).ruleset.canonical()


def _empty(options: RenderOptions) -> Ruleset:
    return parse_script(IncrementalTable(options).ruleset().script())


CASES = [(s.name, s.service_map, s.options) for s in SCENARIOS] + [
    ("representative-ipv4", representative(), OPTIONS),
    ("representative-ipv6", representative(), OPTIONS6),
]


@pytest.mark.parametrize(("name", "service_map", "options"), CASES, ids=[c[0] for c in CASES])
def test_a_table_built_port_by_port_equals_a_full_render(
    name: str, service_map: ServiceMap, options: RenderOptions
) -> None:
    table = IncrementalTable(options)
    delta = table.update({p.name: p for p in service_map})
    assert table.ruleset().canonical() == render(service_map, options).ruleset.canonical()
    # The script turns the empty table into the full one...
    loaded = parse_script(delta.script, start=_empty(options))
    assert loaded.canonical() == render(service_map, options).ruleset.canonical()
    # ... and emptying it again leaves the static table.
    gone = table.update({p.name: None for p in service_map})
    assert parse_script(gone.script, start=loaded).canonical() == _empty(options).canonical()
    assert len(table) == 0 and table.ruleset().canonical() == _empty(options).canonical()


def test_nothing_changed_means_an_empty_script() -> None:
    table = IncrementalTable(OPTIONS)
    table.update({p.name: p for p in representative()})
    again = table.update({p.name: p for p in representative()})
    assert again.empty and again.elements == 0
    assert table.update({ServicePortName("x", "y", "", Protocol.TCP): None}).empty


def test_ports_of_the_other_family_are_left_out() -> None:
    v6_only = port("six", "fd00:96::6", (ep("fd00:244:1::2"),))
    table = IncrementalTable(OPTIONS)
    assert table.update({v6_only.name: v6_only}).empty
    assert v6_only.name not in table


def test_the_first_port_in_map_order_wins_a_contested_address() -> None:
    # "a" and "b" both claim 10.96.0.5:80; "a" sorts first, whichever comes first.
    a = port("a", "10.96.0.5", (ep("10.244.1.2"),))
    b = port("b", "10.96.0.5", (ep("10.244.1.3"), ep("10.244.1.4")))
    table = IncrementalTable(OPTIONS)
    table.update({b.name: b})
    assert table.ruleset().set("service-ips").elements["10.96.0.5 . tcp . 80"] == "goto cluster-2"
    before = table.ruleset()
    delta = table.update({a.name: a})
    after = table.ruleset()
    assert after.set("service-ips").elements["10.96.0.5 . tcp . 80"] == "goto cluster-1"
    assert after.canonical() == _full({a.name: a, b.name: b}, OPTIONS)
    assert parse_script(delta.script, start=before).canonical() == after.canonical()
    # When the winner goes, the other claimant takes the address back.
    delta = table.update({a.name: None})
    assert table.ruleset().set("service-ips").elements["10.96.0.5 . tcp . 80"] == "goto cluster-2"
    assert parse_script(delta.script, start=after).canonical() == _full({b.name: b}, OPTIONS)


def test_claim_keys_are_what_the_renderer_claims() -> None:
    lb = port(
        "lb",
        ("10.96.0.40", "fd00:96::40"),
        node_port=30040,
        external_ips=("198.51.100.1", "10.96.0.40"),
        lb=("203.0.113.4",),
        proxy_lb=("203.0.113.5",),
    )
    assert claim_keys(lb, IPFamily.IPV4) == (
        "10.96.0.40 . tcp . 80",
        "198.51.100.1 . tcp . 80",
        "203.0.113.4 . tcp . 80",
        "nodeport tcp . 30040",
    )
    assert claim_keys(lb, IPFamily.IPV6) == ("fd00:96::40 . tcp . 80", "nodeport tcp . 30040")
    assert claim_keys(port("v4", "10.96.0.1"), IPFamily.IPV6) == ()
    with pytest.raises(ValueError, match="no IPv6 ClusterIP"):
        PortRenderer(OPTIONS6).render(port("v4", "10.96.0.1"), frozenset())


# ------------------------------------------------------------- random histories


def _random_port(rng: random.Random, i: int, family: IPFamily) -> ServicePort:
    v6 = family is IPFamily.IPV6
    eps = []
    for n in rng.sample(range(40), rng.randint(0, 4)):
        ip = f"fd00:244:{n // 20}::{n % 20 + 2}" if v6 else f"10.244.{n // 20}.{n % 20 + 2}"
        local = n % 3 > 0
        eps.append(Endpoint(ip, 8080, node_name="node-a" if local else "node-b", is_local=local))
    # Few addresses and node ports, so that ports often contest the same ones.
    vip = f"fd00:96::{rng.randint(1, 6)}" if v6 else f"10.96.0.{rng.randint(1, 6)}"
    ext = (f"fd00:db8::{rng.randint(1, 3)}" if v6 else f"198.51.100.{rng.randint(1, 3)}",)
    lb = (f"fd00:db9::{rng.randint(1, 3)}" if v6 else f"203.0.113.{rng.randint(1, 3)}",)
    eps_t = tuple(sorted(eps))
    return ServicePort(
        name=ServicePortName("default", f"svc-{i}", "p", rng.choice([Protocol.TCP, Protocol.UDP])),
        cluster_ips=(vip,),
        port=rng.choice([80, 443]),
        node_port=rng.choice([None, 30001, 30002]),
        external_ips=ext if rng.random() < 0.3 else (),
        load_balancer_ingress=tuple(LoadBalancerIngress(ip) for ip in lb)
        if rng.random() < 0.3
        else (),
        load_balancer_source_ranges=("10.180.0.0/24",) if not v6 and rng.random() < 0.2 else (),
        affinity_timeout=rng.choice([None, None, 60, 600]),
        external_policy=rng.choice(list(TrafficPolicy)),
        internal_policy=rng.choice(
            [TrafficPolicy.CLUSTER, TrafficPolicy.CLUSTER, TrafficPolicy.LOCAL]
        ),
        endpoints=eps_t,
        cluster_endpoints=eps_t,
        local_endpoints=tuple(e for e in eps_t if e.is_local),
        has_any_endpoints=bool(eps_t),
    )


def _histories() -> Iterator[tuple[int, RenderOptions]]:
    for seed in range(6):
        yield seed, OPTIONS if seed % 2 == 0 else OPTIONS6


@pytest.mark.parametrize(("seed", "options"), list(_histories()))
def test_random_histories_stay_equal_to_a_full_render(seed: int, options: RenderOptions) -> None:
    rng = random.Random(seed)
    table = IncrementalTable(options)
    ports: dict[ServicePortName, ServicePort] = {}
    kernel = _empty(options)
    for _ in range(40):
        changes: dict[ServicePortName, ServicePort | None] = {}
        for _ in range(rng.randint(1, 4)):
            i = rng.randint(0, 9)
            new = None if rng.random() < 0.25 else _random_port(rng, i, options.ip_family)
            name = ServicePortName("default", f"svc-{i}", "p", Protocol.TCP)
            if new is None:
                victim = next((n for n in ports if n.name == f"svc-{i}"), name)
                changes[victim] = None
            else:
                stale = [n for n in ports if n.name == new.name.name and n != new.name]
                changes.update(dict.fromkeys(stale))
                changes[new.name] = new
        for name, p in changes.items():
            if p is None:
                ports.pop(name, None)
            else:
                ports[name] = p
        delta = table.update(changes)
        want = _full(ports, options)
        assert table.ruleset().canonical() == want
        kernel = parse_script(delta.script, start=kernel)
        assert kernel.canonical() == want


def test_an_endpoint_change_costs_the_same_in_any_cluster() -> None:
    def one_change(services: int) -> tuple[int, int]:
        table = IncrementalTable(OPTIONS)
        sm = clusterip_map(services, 3)
        table.update({p.name: p for p in sm})
        victim = sm.ports[services // 2]
        eps = (*victim.endpoints[:2], ep("10.250.0.9"))
        delta = table.update({victim.name: replace(victim, endpoints=eps, cluster_endpoints=eps)})
        return len(delta.script.splitlines()), delta.elements

    assert one_change(10) == one_change(3000) == (2, 2)


# ------------------------------------------------------------------- the kernel


@pytest.fixture
def netns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("nft",), nftables=True)
    if missing:
        pytest.skip(missing)
    with Netns("nftinc") as ns:
        yield ns


@pytest.mark.kernel
def test_the_kernel_takes_every_script_of_a_history(netns: Netns) -> None:
    rng = random.Random(7)
    table = IncrementalTable(OPTIONS)
    netns.run(["nft", "-f", "-"], stdin=table.ruleset().script())
    ports: dict[ServicePortName, ServicePort] = {}
    for _ in range(15):
        new = _random_port(rng, rng.randint(0, 5), IPFamily.IPV4)
        changes: dict[ServicePortName, ServicePort | None] = {
            n: None for n in ports if n.name == new.name.name
        }
        changes[new.name] = new
        for name in changes:
            ports.pop(name, None)
        ports[new.name] = new
        delta = table.update(changes)
        if delta.script:
            netns.run(["nft", "-f", "-"], stdin=delta.script)
    listed = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    netns.run(["nft", "-f", "-"], stdin=render(ServiceMap.of(list(ports.values())), OPTIONS).text)
    fresh = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    assert parse_script(listed).canonical() == parse_script(fresh).canonical()


def test_an_update_without_a_script_changes_the_table_the_same() -> None:
    quiet, loud = IncrementalTable(OPTIONS), IncrementalTable(OPTIONS)
    ports = {p.name: p for p in representative()}
    assert quiet.update(ports, script=False).empty
    loud.update(ports)
    assert quiet.ruleset().canonical() == loud.ruleset().canonical()
    gone = dict.fromkeys(list(ports)[:3])
    quiet.update(gone, script=False)
    loud.update(gone)
    assert quiet.ruleset().canonical() == loud.ruleset().canonical()
