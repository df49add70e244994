"""Applying iptables plans to a real kernel (in a namespace), re-applying, cleaning up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kubenet.dataplane import iptables
from kubenet.dataplane.command import CommandError
from kubenet.model import IPFamily
from kubenet.testing.netns import Netns, missing_kernel_support

kernel = pytest.mark.kernel


@dataclass(frozen=True)
class Jump:
    table: str
    chain: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    family: IPFamily
    restore: str
    jumps: tuple[Jump, ...]


_PORTALS = ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")


def _plan(family: IPFamily, vip: str, backend: str) -> Plan:
    restore = f"""*filter
:KUBE-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-SERVICES -d {vip} -p tcp --dport 81 -j REJECT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TEST - [0:0]
:KUBE-POSTROUTING - [0:0]
-A KUBE-SERVICES -m comment --comment "default/web" -d {vip} -p tcp --dport 80 -j KUBE-SVC-TEST
-A KUBE-SVC-TEST -p tcp -j DNAT --to-destination {backend}
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
"""
    jumps = (
        Jump("filter", "OUTPUT", ("-m", "conntrack", "--ctstate", "NEW", *_PORTALS)),
        Jump("filter", "INPUT", ("-j", "KUBE-FIREWALL")),
        Jump("nat", "OUTPUT", _PORTALS),
        Jump("nat", "PREROUTING", _PORTALS),
        Jump("nat", "POSTROUTING", ("-j", "KUBE-POSTROUTING")),
    )
    return Plan(family, restore, jumps)


PLANS = {
    IPFamily.IPV4: _plan(IPFamily.IPV4, "10.96.0.10", "10.244.1.2:8080"),
    IPFamily.IPV6: _plan(IPFamily.IPV6, "fd00:96::10", "[fd00:244:1::2]:8080"),
}
# A rule that is not ours, in a built-in chain we also jump from.
_FOREIGN = ("-s", "192.0.2.0/24", "-j", "ACCEPT")
_FOREIGN6 = ("-s", "2001:db8::/32", "-j", "ACCEPT")


def _rules(family: IPFamily, netns: str) -> list[str]:
    """The saved rules and user-defined chains, by table (not built-in chain counters)."""
    text = iptables.save(family, netns=netns)
    return [
        ln
        for ln in text.splitlines()
        if ln.startswith(("*", "-A ")) or (ln.startswith(":") and ln.split()[1] == "-")
    ]


@pytest.fixture
def ns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("iptables-restore", "ip6tables-restore"), iptables=True)
    if missing:
        pytest.skip(missing)
    with Netns("ipt") as netns:
        for family, foreign in ((IPFamily.IPV4, _FOREIGN), (IPFamily.IPV6, _FOREIGN6)):
            netns.run([iptables.command(family), "-w", "-t", "nat", "-A", "PREROUTING", *foreign])
        yield netns


@kernel
@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_apply_loads_chains_and_puts_jumps_first(ns: Netns, family: IPFamily) -> None:
    iptables.apply(PLANS[family], netns=ns.name)
    rules = _rules(family, ns.name)
    assert ":KUBE-SVC-TEST - [0:0]" in rules
    assert any("DNAT" in r and "8080" in r for r in rules)
    prerouting = [r for r in rules if r.startswith("-A PREROUTING ")]
    assert prerouting[0].endswith("-j KUBE-SERVICES")
    assert "-j ACCEPT" in prerouting[1]
    # The other family is untouched.
    other = IPFamily.IPV6 if family is IPFamily.IPV4 else IPFamily.IPV4
    assert not any("KUBE-" in r for r in _rules(other, ns.name))


@kernel
@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_reapply_is_idempotent(ns: Netns, family: IPFamily) -> None:
    iptables.apply(PLANS[family], netns=ns.name)
    once = _rules(family, ns.name)
    iptables.apply(PLANS[family], netns=ns.name)
    assert _rules(family, ns.name) == once
    jump = PLANS[family].jumps[0]
    assert iptables.ensure_jump(family, jump, netns=ns.name) is False


@kernel
@pytest.mark.parametrize("family", list(IPFamily), ids=lambda f: f.value)
def test_cleanup_removes_ours_and_keeps_the_rest(ns: Netns, family: IPFamily) -> None:
    before = _rules(family, ns.name)
    iptables.apply(PLANS[family], netns=ns.name)
    iptables.cleanup(family, netns=ns.name)
    after = _rules(family, ns.name)
    # The kubelet's chain and its jump stay, as upstream leaves them.
    assert [r for r in after if "KUBE-" in r] == [
        ":KUBE-FIREWALL - [0:0]",
        "-A INPUT -j KUBE-FIREWALL",
    ]
    iptables.cleanup(family, netns=ns.name, kubelet_chains=True)
    # iptables-nft leaves the (now empty) filter table it made; no rule, no chain of ours.
    assert [r for r in _rules(family, ns.name) if r != "*filter"] == before
    # Nothing left to do is no error.
    iptables.cleanup(family, netns=ns.name, kubelet_chains=True)


@kernel
def test_a_failed_restore_raises_with_stderr_and_changes_nothing(ns: Netns) -> None:
    iptables.apply(PLANS[IPFamily.IPV4], netns=ns.name)
    before = _rules(IPFamily.IPV4, ns.name)
    broken = Plan(
        IPFamily.IPV4,
        # Would flush KUBE-SVC-TEST, but the bad jump fails the whole transaction.
        "*nat\n:KUBE-SVC-TEST - [0:0]\n:KUBE-SVC-NEW - [0:0]\n"
        "-A KUBE-SVC-NEW -j NO-SUCH-CHAIN\nCOMMIT\n",
        (),
    )
    with pytest.raises(CommandError) as err:
        iptables.apply(broken, netns=ns.name)
    assert "iptables-restore" in str(err.value)
    assert err.value.stderr.strip()
    assert _rules(IPFamily.IPV4, ns.name) == before


@kernel
def test_a_bad_jump_raises(ns: Netns) -> None:
    plan = Plan(IPFamily.IPV4, "", (Jump("nat", "PREROUTING", ("-j", "KUBE-MISSING")),))
    with pytest.raises(CommandError, match=r"KUBE-MISSING|No chain"):
        iptables.apply(plan, netns=ns.name)


@kernel
def test_rendered_plans_apply_reapply_and_clean_up(ns: Netns) -> None:
    render = pytest.importorskip("kubenet.render.iptables")
    from tests.scenarios import SCENARIOS

    for scenario in SCENARIOS:
        plan = render.render(scenario.service_map, scenario.options)
        iptables.apply(plan, netns=ns.name)
        once = _rules(plan.family, ns.name)
        iptables.apply(plan, netns=ns.name)
        assert _rules(plan.family, ns.name) == once, scenario.name
        iptables.cleanup(plan.family, netns=ns.name, kubelet_chains=True)
        assert not [r for r in _rules(plan.family, ns.name) if "KUBE-" in r], scenario.name


def test_cleanup_script_from_saved_rules() -> None:
    saved = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j REJECT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SVC-X - [0:0]
-A PREROUTING -j DOCKER
-A DOCKER -g KUBE-SVC-X
COMMIT
"""
    assert iptables.cleanup_script(saved).splitlines() == [
        "*filter",
        ":KUBE-SERVICES - [0:0]",
        '-D OUTPUT -m conntrack --ctstate NEW -m comment --comment "portals" -j KUBE-SERVICES',
        "-X KUBE-SERVICES",
        "COMMIT",
        "*nat",
        ":KUBE-SVC-X - [0:0]",
        "-D DOCKER -g KUBE-SVC-X",
        "-X KUBE-SVC-X",
        "COMMIT",
    ]
    everything = iptables.cleanup_script(saved, kubelet_chains=True)
    assert "-D INPUT -j KUBE-FIREWALL\n" in everything
    assert iptables.cleanup_script("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""
