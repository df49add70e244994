"""Applying nftables plans to a real kernel (in a namespace), re-applying, cleaning up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kubenet.dataplane import nftables
from kubenet.dataplane.command import CommandError
from kubenet.model import IPFamily
from kubenet.testing.netns import Netns, missing_kernel_support

kernel = pytest.mark.kernel


@dataclass(frozen=True)
class Plan:
    family: IPFamily
    text: str


def _plan(family: IPFamily, vip: str, backend: str) -> Plan:
    fam = nftables.nft_family(family)
    addr = "ipv6_addr" if family is IPFamily.IPV6 else "ipv4_addr"
    # Shaped like a full-sync script: make sure the table exists, empty it, fill it.
    text = f"""add table {fam} kube-proxy
flush table {fam} kube-proxy
add chain {fam} kube-proxy nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add map {fam} kube-proxy service-ips {{ type {addr} . inet_proto . inet_service : verdict ; }}
add chain {fam} kube-proxy svc-web
add rule {fam} kube-proxy svc-web meta l4proto tcp dnat to {backend}
add rule {fam} kube-proxy nat-prerouting {fam} daddr . meta l4proto . th dport vmap @service-ips
add element {fam} kube-proxy service-ips {{ {vip} . tcp . 80 : goto svc-web }}
"""
    return Plan(family, text)


PLANS = {
    IPFamily.IPV4: _plan(IPFamily.IPV4, "10.96.0.10", "10.244.1.2:8080"),
    IPFamily.IPV6: _plan(IPFamily.IPV6, "fd00:96::10", "[fd00:244:1::2]:8080"),
}
_FOREIGN = "table inet other { chain input { type filter hook input priority 0; accept; }; }\n"


@pytest.fixture
def ns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("nft",), nftables=True)
    if missing:
        pytest.skip(missing)
    with Netns("nft") as netns:
        nftables.load(_FOREIGN, netns=netns.name)
        yield netns


@kernel
@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_apply_loads_the_table(ns: Netns, family: IPFamily) -> None:
    assert nftables.list_table(family, netns=ns.name) is None
    nftables.apply(PLANS[family], netns=ns.name)
    listed = nftables.list_table(family, netns=ns.name)
    assert listed is not None
    assert f"table {nftables.nft_family(family)} kube-proxy" in listed
    assert "dnat to" in listed and "8080" in listed
    other = IPFamily.IPV6 if family is IPFamily.IPV4 else IPFamily.IPV4
    assert nftables.list_table(other, netns=ns.name) is None


@kernel
@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_reapply_is_idempotent(ns: Netns, family: IPFamily) -> None:
    nftables.apply(PLANS[family], netns=ns.name)
    once = nftables.list_ruleset(netns=ns.name)
    nftables.apply(PLANS[family], netns=ns.name)
    assert nftables.list_ruleset(netns=ns.name) == once


@kernel
def test_cleanup_removes_both_tables_and_keeps_the_rest(ns: Netns) -> None:
    before = nftables.list_ruleset(netns=ns.name)
    for plan in PLANS.values():
        nftables.apply(plan, netns=ns.name)
    nftables.cleanup(netns=ns.name)
    assert nftables.list_ruleset(netns=ns.name) == before
    assert "table inet other" in before
    # Cleaning up when there is nothing to clean is no error.
    nftables.cleanup(netns=ns.name)
    nftables.cleanup([IPFamily.IPV6], netns=ns.name)


@kernel
def test_a_failed_script_raises_with_stderr_and_changes_nothing(ns: Netns) -> None:
    nftables.apply(PLANS[IPFamily.IPV4], netns=ns.name)
    before = nftables.list_ruleset(netns=ns.name)
    # The flush would empty the table, but the bad jump fails the whole transaction.
    broken = Plan(
        IPFamily.IPV4,
        "flush table ip kube-proxy\nadd rule ip kube-proxy svc-web jump no-such-chain\n",
    )
    with pytest.raises(CommandError) as err:
        nftables.apply(broken, netns=ns.name)
    assert "no-such-chain" in err.value.stderr or "No such file" in err.value.stderr
    assert nftables.list_ruleset(netns=ns.name) == before


@kernel
def test_rendered_plans_apply_reapply_and_clean_up(ns: Netns) -> None:
    render = pytest.importorskip("kubenet.render.nftables")
    from tests.scenarios import SCENARIOS

    before = nftables.list_ruleset(netns=ns.name)
    for scenario in SCENARIOS:
        plan = render.render(scenario.service_map, scenario.options)
        nftables.apply(plan, netns=ns.name)
        once = nftables.list_table(plan.family, netns=ns.name)
        assert once is not None, scenario.name
        nftables.apply(plan, netns=ns.name)
        assert nftables.list_table(plan.family, netns=ns.name) == once, scenario.name
        nftables.cleanup(netns=ns.name)
        assert nftables.list_ruleset(netns=ns.name) == before, scenario.name
