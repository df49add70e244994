"""Full-sync scripts for nftables: refill an existing table in place, or load a new one in parts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.dataplane import nftables
from kubenet.model import IPFamily, ServiceMap
from kubenet.render.nft_ruleset import (
    NftSet,
    Ruleset,
    frozen_elements,
    load_scripts,
    parse_script,
    resync_script,
)
from kubenet.render.nftables import render
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.test_render_nftables import OPTIONS, clusterip_map, representative

DISPATCH = ("cluster-ips", "no-endpoint-services", "service-ips")


def _dynamic(s: NftSet) -> bool:
    return "dynamic" in s.flags


def _skeleton(rs: Ruleset) -> Ruleset:
    """What ``nft list chains`` and ``nft -t list sets`` show of a table."""
    return replace(
        rs,
        chains=tuple(replace(c, rules=()) for c in rs.chains),
        sets=tuple(replace(s, elements=frozen_elements({})) for s in rs.sets),
    )


def _with_affinity_entries(rs: Ruleset) -> Ruleset:
    """The table as the kernel has it after some traffic: clients in affinity sets."""
    sets = []
    for s in rs.sets:
        if _dynamic(s):
            s = replace(s, elements=frozen_elements({"10.180.0.2 . 12345": None}))
        sets.append(s)
    return replace(rs, sets=tuple(sets))


@pytest.mark.parametrize(
    "old",
    [representative(), clusterip_map(5, 2), ServiceMap()],
    ids=["same services", "other services", "empty"],
)
def test_resync_refills_an_existing_table(old: ServiceMap) -> None:
    new = render(representative(), OPTIONS).ruleset
    kernel = _with_affinity_entries(render(old, OPTIONS).ruleset)
    script = resync_script(new, _skeleton(kernel), keep=_dynamic)
    assert "delete table" not in script
    result = parse_script(script, start=kernel)
    affinity = [s.name for s in new.sets if _dynamic(s)]
    assert affinity
    for name in affinity:
        kept = kernel.set(name).elements if name in {s.name for s in kernel.sets} else {}
        assert dict(result.set(name).elements) == dict(kept)
    without_state = replace(result, sets=tuple(s for s in result.sets if not _dynamic(s)))
    want = replace(new, sets=tuple(s for s in new.sets if not _dynamic(s)))
    assert without_state.canonical() == want.canonical()


def test_resync_recreates_a_set_whose_definition_changed() -> None:
    sticky = next(p for p in representative() if p.name.name == "sticky")
    old = ServiceMap.of([replace(sticky, affinity_timeout=60)])
    new = render(ServiceMap.of([sticky]), OPTIONS).ruleset
    kernel = _with_affinity_entries(render(old, OPTIONS).ruleset)
    result = parse_script(resync_script(new, _skeleton(kernel), keep=_dynamic), start=kernel)
    (name,) = [s.name for s in new.sets if _dynamic(s)]
    assert result.set(name).timeout == 600 and not result.set(name).elements


def test_load_scripts_split_elements_and_load_dispatch_maps_last() -> None:
    new = render(clusterip_map(40, 3), OPTIONS).ruleset
    scripts = load_scripts(new, max_elements=25, last=DISPATCH)
    assert len(scripts) > 3
    assert parse_script("".join(scripts)).canonical() == new.canonical()
    for script in scripts[1:]:
        elements = sum(line.count(",") + 1 for line in script.splitlines())
        assert elements <= 25
    # Every element a service points at is in before the service is.
    def parts(name: str) -> list[int]:
        return [i for i, s in enumerate(scripts) if f"add element ip kube-proxy {name} {{" in s]

    assert max(parts("cluster-endpoints-tcp")) <= min(parts("cluster-ips"))
    assert max(parts("cluster-ips")) <= min(parts("service-ips"))
    assert parts("service-ips")[-1] == len(scripts) - 1


# ------------------------------------------------------------------- the kernel


@pytest.fixture
def netns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("nft",), nftables=True)
    if missing:
        pytest.skip(missing)
    with Netns("nftsync") as ns:
        yield ns


@pytest.mark.kernel
def test_the_kernel_resyncs_from_its_own_skeleton(netns: Netns) -> None:
    old = render(clusterip_map(5, 2), OPTIONS)
    netns.run(["nft", "-f", "-"], stdin=old.text)
    assert nftables.list_skeleton(IPFamily.IPV6, netns=netns.name) is None
    listed = nftables.list_skeleton(IPFamily.IPV4, netns=netns.name)
    assert listed is not None
    skeleton = parse_script(listed)
    assert {c.name for c in skeleton.chains} == {c.name for c in old.ruleset.chains}
    assert all(not c.rules for c in skeleton.chains)
    assert all(not s.elements for s in skeleton.sets)
    new = render(representative(), OPTIONS)
    netns.run(["nft", "-f", "-"], stdin=resync_script(new.ruleset, skeleton, keep=_dynamic))
    patched = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    netns.run(["nft", "-f", "-"], stdin=new.text)
    fresh = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    assert parse_script(patched).canonical() == parse_script(fresh).canonical()


@pytest.mark.kernel
def test_the_kernel_loads_a_table_in_parts(netns: Netns) -> None:
    new = render(clusterip_map(30, 3), OPTIONS)
    for script in load_scripts(new.ruleset, max_elements=20, last=DISPATCH):
        netns.run(["nft", "-f", "-"], stdin=script)
    loaded = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    netns.run(["nft", "-f", "-"], stdin=new.text)
    fresh = netns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    assert parse_script(loaded).canonical() == parse_script(fresh).canonical()
