"""iptables partial syncs: only the changed ports' chains, and the result of a full sync."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.model import ServiceMap, ServicePort, ServicePortName, TrafficPolicy
from kubenet.options import RenderOptions
from kubenet.render.iptables import (
    IptablesPlan,
    ServiceRulesCache,
    render,
    render_batched,
    render_changes,
)
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


# ----------------------------------------------------- render_changes (what node-proxy runs)


def _delta(old: ServiceMap, new: ServiceMap) -> dict[ServicePortName, ServicePort | None]:
    index = new.index
    return {name: index.get(name) for name in old.diff(new).touched}


def _unordered(tables: Tables) -> dict[str, dict[str, list[str]]]:
    """Order within a chain aside: render_changes may rewrite a shared chain in another
    order than a full render, which only matters for the rule that must come last."""
    return {t: {c: sorted(rules) for c, rules in chains.items()} for t, chains in tables.items()}


def _cached(service_map: ServiceMap, options: RenderOptions) -> tuple[str, ServiceRulesCache]:
    cache = ServiceRulesCache()
    return render(service_map, options, cache=cache).restore, cache


@pytest.mark.parametrize("name", list(_changes()))
@pytest.mark.parametrize("options", [OPTIONS, OPTIONS6], ids=["ipv4", "ipv6"])
def test_changes_end_where_a_full_sync_would(name: str, options: RenderOptions) -> None:
    old_map, new_map = representative(), _changes()[name]
    first, cache = _cached(old_map, options)
    plan = render_changes(_delta(old_map, new_map), options, cache)
    assert plan is not None and plan.partial
    replayed = replay([first, plan.restore])
    assert _unordered(replayed) == _unordered(replay([render(new_map, options).restore]))
    assert "KUBE-NODEPORTS" in replayed["nat"]["KUBE-SERVICES"][-1]
    # The cache now holds what a full render of the new map would.
    assert cache.chains_by_service() and set(cache.chains_by_service()) == set(
        render(new_map, options).chains_by_service
    )


def test_an_endpoint_change_writes_no_shared_chain() -> None:
    old_map, new_map = representative(), _changes()["endpoint added"]
    _, cache = _cached(old_map, OPTIONS)
    web = {n.name: c for n, c in cache.chains_by_service()}["web"]
    plan = render_changes(_delta(old_map, new_map), OPTIONS, cache)
    assert plan is not None
    assert "*filter" not in plan.restore
    declared = set(re.findall(r"^:(\S+)", plan.restore, re.M))
    new_web = {n.name: c for n, c in cache.chains_by_service()}["web"]
    assert declared == set(web) | set(new_web)
    assert not declared & {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES"}


def test_a_service_that_loses_its_endpoints_rewrites_the_shared_chains_it_is_in() -> None:
    old_map, new_map = representative(), _changes()["all endpoints gone"]
    _, cache = _cached(old_map, OPTIONS)
    plan = render_changes(_delta(old_map, new_map), OPTIONS, cache)
    assert plan is not None
    # Its REJECT goes into filter KUBE-SERVICES; its jump leaves nat KUBE-SERVICES.
    assert re.search(r"^\*filter\n(:\S+ - \[0:0\]\n)*:KUBE-SERVICES ", plan.restore, re.M)
    assert ":KUBE-SERVICES - [0:0]" in plan.restore.split("*nat")[1]


def test_the_size_of_a_change_does_not_grow_with_the_cluster() -> None:
    def cluster(n: int) -> ServiceMap:
        return ServiceMap.of(
            [
                port(
                    f"s{i}",
                    f"10.97.{i // 250}.{i % 250 + 1}",
                    (ep(f"10.245.{i // 250}.{i % 250 + 1}"),),
                )
                for i in range(n)
            ]
        )

    sizes = []
    for n in (10, 1000):
        old_map = cluster(n)
        target = old_map.ports[0]
        new_map = ServiceMap.of([_with_endpoints(target, "10.244.9.9"), *old_map.ports[1:]])
        _, cache = _cached(old_map, OPTIONS)
        plan = render_changes(_delta(old_map, new_map), OPTIONS, cache)
        assert plan is not None
        sizes.append(plan.restore)
    assert sizes[0] == sizes[1]


def test_render_changes_asks_for_a_full_render_when_it_must() -> None:
    small = ServiceMap.of([port("a", "10.96.0.1", tuple(ep(f"10.244.2.{i}") for i in range(1, 9)))])
    big_eps = tuple(ep(f"10.245.{i // 250}.{i % 250 + 1}") for i in range(1001))
    big = ServiceMap.of([*small, port("b", "10.96.0.2", big_eps)])
    assert render_changes(_delta(small, big), OPTIONS, ServiceRulesCache()) is None  # empty
    _, cache = _cached(small, OPTIONS)
    assert render_changes(_delta(small, big), OPTIONS, cache) is None  # large cluster mode
    assert render_changes(_delta(small, big), OPTIONS6, cache) is None  # other options
    # Nothing was taken in: the cache still holds the small map.
    assert {n.name for n, _ in cache.chains_by_service()} == {"a"}


# ------------------------------------------------------- render_batched (full syncs in parts)


def _targets_exist(tables: Tables) -> None:
    """Every jump in the state leads to a chain that exists (no restore left one dangling)."""
    for chains in tables.values():
        for rules in chains.values():
            for rule in rules:
                found = re.search(r" -[jg] (KUBE-\S+)", rule)
                if found:
                    assert found.group(1) in chains, f"dangling jump: {rule}"


@pytest.mark.parametrize("name", ["from nothing", *_changes()])
def test_a_batched_full_sync_ends_where_one_restore_would(name: str) -> None:
    new_map = representative() if name == "from nothing" else _changes()[name]
    old = None if name == "from nothing" else render(representative(), OPTIONS)
    plan, restores = render_batched(new_map, OPTIONS, previous=old, batch=2)
    assert len(restores) > 2
    state = replay([old.restore]) if old is not None else {}
    for parts in restores:
        state = replay(["\n".join(parts)], state)
        _targets_exist(state)  # consistent after every restore, not only at the end
    one = replay([old.restore] if old is not None else [])
    one = replay([render(new_map, OPTIONS, previous=old).restore], one)
    assert _unordered(state) == _unordered(one)
    assert plan.chains_by_service == render(new_map, OPTIONS).chains_by_service


def test_until_the_last_restore_no_service_changes() -> None:
    old_map, new_map = representative(), _changes()["endpoint removed"]
    old = render(old_map, OPTIONS)
    _, restores = render_batched(new_map, OPTIONS, previous=old, batch=1)
    before = replay([old.restore])
    state = before
    for parts in restores[:-1]:
        state = replay(["\n".join(parts)], state)
    # The shared chains are as they were: traffic is still steered by the old plan.
    assert state["nat"]["KUBE-SERVICES"] == before["nat"]["KUBE-SERVICES"]
    assert state["filter"] == before["filter"]


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


def _assert_like_a_fresh_load(netns: Netns, service_map: ServiceMap) -> None:
    """What ``netns`` holds equals one full restore of ``service_map`` into a new namespace."""
    patched = _saved(netns)
    with Netns("iptfull") as fresh:
        whole = render(service_map, OPTIONS).restore
        fresh.run(["iptables-restore", "-w", "--noflush"], stdin=whole)
        assert patched == _saved(fresh)


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
    _assert_like_a_fresh_load(netns, maps[-1])


@pytest.mark.kernel
def test_the_kernel_after_render_changes_equals_a_fresh_full_sync(netns: Netns) -> None:
    maps = [representative(), *_changes().values()]
    first, cache = _cached(maps[0], OPTIONS)
    netns.run(["iptables-restore", "-w", "--noflush"], stdin=first)
    for old_map, new_map in itertools.pairwise(maps):
        plan = render_changes(_delta(old_map, new_map), OPTIONS, cache)
        assert plan is not None
        if plan.restore:
            netns.run(["iptables-restore", "-w", "--noflush"], stdin=plan.restore)
    _assert_like_a_fresh_load(netns, maps[-1])


@pytest.mark.kernel
def test_a_batched_full_sync_on_the_kernel_equals_one_restore(netns: Netns) -> None:
    old = render(representative(), OPTIONS)
    netns.run(["iptables-restore", "-w", "--noflush"], stdin=old.restore)
    new_map = _changes()["service added"]
    _, restores = render_batched(new_map, OPTIONS, previous=old, batch=2)
    for parts in restores:
        netns.run(["iptables-restore", "-w", "--noflush"], stdin="\n".join(parts))
    _assert_like_a_fresh_load(netns, new_map)
