"""iptables partial syncs: only the changed ports' chains, and the result of a full sync."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.model import ServiceMap, ServicePort, ServicePortName, TrafficPolicy
from kubenet.options import RenderOptions
from kubenet.render.iptables import IptablesPlan, ServiceRulesCache, render
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.test_render_iptables import OPTIONS, OPTIONS6, ep, port, representative

Tables = dict[str, dict[str, list[str]]]


def replay(texts: list[str], start: Tables | None = None) -> Tables:
    """What ``iptables-restore --noflush`` of each text in turn leaves (kubenet's chains).

    Declaring a chain creates or flushes it, ``-A`` appends, ``-X`` deletes; chains
    not declared keep their rules. Enough of the restore format for our plans.
    """
    state: Tables = {
        t: {c: list(r) for c, r in chains.items()} for t, chains in (start or {}).items()
    }
    for text in texts:
        table: dict[str, list[str]] = {}
        for line in text.splitlines():
            if line.startswith("*"):
                table = state.setdefault(line[1:], {})
            elif line.startswith(":"):
                table[line[1:].split()[0]] = []
            elif line.startswith("-A "):
                chain = line.split()[1]
                assert chain in table, f"rule for an undeclared, missing chain: {line}"
                table[chain].append(line)
            elif line.startswith("-X "):
                chain = line.split()[1]
                assert table.pop(chain) == [], f"deleting a chain that still has rules: {chain}"
    return state


def _with_endpoints(p: ServicePort, *ips: str) -> ServicePort:
    eps = tuple(sorted(ep(ip, local=ip.startswith("10.244.1.")) for ip in ips))
    return replace(
        p,
        endpoints=eps,
        cluster_endpoints=eps,
        local_endpoints=tuple(e for e in eps if e.is_local),
        has_any_endpoints=bool(eps),
    )


def _changes() -> dict[str, ServiceMap]:
    base = {p.name.name: p for p in representative()}
    web = base["web"]

    def with_(**ports: ServicePort | None) -> ServiceMap:
        merged = {**base, **ports}
        return ServiceMap.of([p for p in merged.values() if p is not None])

    return {
        "endpoint added": with_(web=_with_endpoints(web, "10.244.1.2", "10.244.1.3", "10.244.3.3")),
        "endpoint removed": with_(web=_with_endpoints(web, "10.244.1.2")),
        "all endpoints gone": with_(web=_with_endpoints(web)),
        "service removed": with_(web=None),
        "service added": with_(new=port("new", "10.96.0.99", (ep("10.244.1.4", local=True),))),
        "policy changed": with_(web=replace(web, external_policy=TrafficPolicy.LOCAL)),
    }


def _changed(old: ServiceMap, new: ServiceMap) -> frozenset[ServicePortName]:
    return old.diff(new).touched


@pytest.mark.parametrize("name", list(_changes()))
@pytest.mark.parametrize("options", [OPTIONS, OPTIONS6], ids=["ipv4", "ipv6"])
def test_a_partial_sync_ends_where_a_full_sync_would(name: str, options: RenderOptions) -> None:
    old_map, new_map = representative(), _changes()[name]
    old = render(old_map, options)
    partial = render(new_map, options, previous=old, changed=_changed(old_map, new_map))
    assert partial.partial
    full = render(new_map, options)
    assert replay([old.restore, partial.restore]) == replay([full.restore])
    assert partial.chains_by_service == full.chains_by_service


def test_a_partial_sync_writes_only_the_changed_ports_chains() -> None:
    old_map, new_map = representative(), _changes()["endpoint added"]
    old = render(old_map, OPTIONS)
    partial = render(new_map, OPTIONS, previous=old, changed=_changed(old_map, new_map))
    declared = set(re.findall(r"^:(\S+)", partial.restore.split("*nat")[1], re.M))
    web = dict(partial.chains_by_service)
    (web_name,) = [n for n in web if n.name == "web"]
    shared = {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"}
    stale = old.service_chains() - partial.service_chains()
    assert declared == shared | set(web[web_name]) | stale
    others = {c for n, chains in web.items() if n != web_name for c in chains}
    assert others and not others & set(re.findall(r"-A (\S+)", partial.restore))


def test_stale_chains_of_changed_ports_are_deleted() -> None:
    old_map, new_map = representative(), _changes()["service removed"]
    old = render(old_map, OPTIONS)
    partial = render(new_map, OPTIONS, previous=old, changed=_changed(old_map, new_map))
    gone = old.service_chains() - partial.service_chains()
    assert gone and all(f"-X {chain}" in partial.restore for chain in gone)


def test_without_changes_nothing_per_service_is_written() -> None:
    old = render(representative(), OPTIONS)
    partial = render(representative(), OPTIONS, previous=old, changed=())
    assert "KUBE-SVC-" not in partial.restore.split("*nat")[1].split("-A KUBE-SERVICES")[0]
    assert replay([old.restore, partial.restore]) == replay([old.restore])


def test_a_flip_to_large_cluster_mode_is_a_full_sync() -> None:
    small = ServiceMap.of([port("a", "10.96.0.1", tuple(ep(f"10.244.2.{i}") for i in range(1, 9)))])
    big_eps = tuple(ep(f"10.245.{i // 250}.{i % 250 + 1}") for i in range(1001))
    big = ServiceMap.of([*small, port("b", "10.96.0.2", big_eps)])
    old = render(small, OPTIONS)
    plan = render(big, OPTIONS, previous=old, changed=_changed(small, big))
    assert plan.large_cluster and not plan.partial
    assert replay([old.restore, plan.restore]) == replay([render(big, OPTIONS).restore])


def test_the_cache_reuses_unchanged_ports_rules_and_changes_nothing() -> None:
    cache = ServiceRulesCache()
    first = render(representative(), OPTIONS, cache=cache)
    again = render(_changes()["endpoint added"], OPTIONS, cache=cache)
    assert first.restore == render(representative(), OPTIONS).restore
    assert again.restore == render(_changes()["endpoint added"], OPTIONS).restore


# ------------------------------------------------------------------- the kernel


def _saved(ns: Netns) -> list[str]:
    """Our chains and rules as iptables-save lists them, counters and order aside."""
    text = ns.run(["iptables-save"]).stdout
    keep = [
        re.sub(r"\[\d+:\d+\]", "", line).strip()
        for line in text.splitlines()
        if "KUBE-" in line and not line.startswith("#")
    ]
    return sorted(keep)


@pytest.fixture
def netns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("iptables-restore", "iptables-save"), iptables=True)
    if missing:
        pytest.skip(missing)
    with Netns("iptpart") as ns:
        yield ns


@pytest.mark.kernel
def test_the_kernel_after_partial_syncs_equals_a_fresh_full_sync(netns: Netns) -> None:
    maps = [representative(), *_changes().values()]
    plan: IptablesPlan | None = None
    previous_map = None
    for service_map in maps:
        if plan is None:
            plan = render(service_map, OPTIONS)
        else:
            assert previous_map is not None
            plan = render(
                service_map, OPTIONS, previous=plan, changed=_changed(previous_map, service_map)
            )
        netns.run(["iptables-restore", "-w", "--noflush"], stdin=plan.restore)
        previous_map = service_map
    patched = _saved(netns)
    with Netns("iptfull") as fresh:
        fresh.run(["iptables-restore", "-w", "--noflush"], stdin=render(maps[-1], OPTIONS).restore)
        assert patched == _saved(fresh)
