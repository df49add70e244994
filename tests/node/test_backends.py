"""The mode adapters on a real kernel: partial syncs, refusals, repair by a full sync.

Each test drives a backend in a namespace of its own, on a thread that has entered it
(the kernel tools the backend starts inherit the namespace), and compares what the
kernel lists with a fresh full load of the same ports.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

import pytest

from kubenet.dataplane.command import CommandError
from kubenet.model import Endpoint, IPFamily, ServiceMap, ServicePort, ServicePortName
from kubenet.node.backends import (
    ApplyError,
    Backend,
    IptablesBackend,
    NftablesBackend,
    SyncReport,
    cleanup,
)
from kubenet.render.iptables import endpoint_chain_name, service_chain_name
from kubenet.render.nft_ruleset import Ruleset, parse_script
from kubenet.render.nftables import render as render_nft
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.scenarios import BASE_OPTIONS, ep, svc

T = TypeVar("T")
OPTIONS = {IPFamily.IPV4: BASE_OPTIONS}


def in_netns(ns: Netns, fn: Callable[[], T]) -> T:
    return ns.call(fn)


def sync(
    ns: Netns, backend: Backend, ports: list[ServicePort], changed: list[ServicePort], full: bool
) -> SyncReport:
    service_map = ServiceMap.of(ports)
    changes = {p.name: (p if p in ports else None) for p in changed}
    return in_netns(ns, lambda: asyncio.run(backend.sync(changes, lambda: service_map, full=full)))


@pytest.fixture
def ns() -> Iterator[Netns]:
    missing = missing_kernel_support(
        tools=("nft", "iptables-restore"), nftables=True, iptables=True
    )
    if missing:
        pytest.skip(missing)
    with Netns("backend") as netns:
        yield netns


WEB = svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-b")))
DNS = svc("dns", "10.96.0.53", (ep("pod-a", 9090),), port=53)
STICKY = svc("sticky", "10.96.0.70", (ep("pod-a"), ep("pod-r")), affinity=600)


def _nft(ns: Netns) -> str:
    """The table as listed, without the ticking expiry times of dynamic entries."""
    listing = ns.run(["nft", "list", "table", "ip", "kube-proxy"]).stdout
    return re.sub(r" expires \S+", "", listing)


@pytest.mark.kernel
def test_nftables_partial_syncs_end_where_a_full_load_would(ns: Netns) -> None:
    backend = NftablesBackend(OPTIONS, max_elements=5)
    first = sync(ns, backend, [WEB, DNS, STICKY], [WEB, DNS, STICKY], full=True)
    assert first.full and len(first.transactions) > 2  # loaded in parts
    scaled = replace(WEB, endpoints=(ep("pod-c"),), cluster_endpoints=(ep("pod-c"),))
    report = sync(ns, backend, [scaled, STICKY], [scaled, DNS], full=False)
    ((tool, script),) = report.transactions
    assert tool == "nft" and "delete table" not in script and "flush table" not in script
    # Only what changed: the scaled Service's elements, the removed one's, a stale chain.
    assert "10.96.0.70" not in script
    patched = _nft(ns)
    fresh = render_nft(ServiceMap.of([scaled, STICKY]), BASE_OPTIONS).text
    with Netns("fresh") as other:
        other.run(["nft", "-f", "-"], stdin=fresh)
        assert parse_script(patched).canonical() == parse_script(_nft(other)).canonical()


@pytest.mark.kernel
def test_nftables_refusal_keeps_the_rules_and_a_full_sync_repairs(ns: Netns) -> None:
    backend = NftablesBackend(OPTIONS)
    sync(ns, backend, [WEB, STICKY], [WEB, STICKY], full=True)
    # Someone else removes an element our next update deletes: nft refuses the
    # whole transaction, and the table stays as it was.
    ns.run(["nft", "delete element ip kube-proxy cluster-endpoints-tcp { 10.96.0.10 . 80 . 1 }"])
    client = f"add element ip kube-proxy {_affinity_set(ns)} {{ 10.180.0.2 . 7 }}"
    ns.run(["nft", client])
    before = _nft(ns)
    scaled = replace(WEB, endpoints=(ep("pod-a"),), cluster_endpoints=(ep("pod-a"),))
    with pytest.raises(ApplyError, match=r"No such file or directory|does not exist"):
        sync(ns, backend, [scaled, STICKY], [scaled], full=False)
    assert _nft(ns) == before
    # The full sync refills the table in one transaction, affinity entries kept.
    report = sync(ns, backend, [scaled, STICKY], [], full=True)
    ((_, script),) = report.transactions
    assert "delete table" not in script
    after = parse_script(_nft(ns))
    with Netns("fresh") as other:
        other.run(
            ["nft", "-f", "-"], stdin=render_nft(ServiceMap.of([scaled, STICKY]), BASE_OPTIONS).text
        )
        fresh = parse_script(_nft(other))
    dynamic = {s.name for s in fresh.sets if "dynamic" in s.flags}
    assert len(after.set(next(iter(dynamic))).elements) == 1

    def without(rs: Ruleset) -> Ruleset:
        return replace(rs, sets=tuple(s for s in rs.sets if s.name not in dynamic))

    assert without(after).canonical() == without(fresh).canonical()


@pytest.mark.kernel
def test_nftables_first_sync_loads_a_batch_while_the_next_is_made(ns: Netns) -> None:
    backend = NftablesBackend(OPTIONS)
    loading = [threading.Event() for _ in range(4)]  # the skeleton, then three batches
    load = backend._nft.load

    def recorded(script: str) -> None:
        next(e for e in loading if not e.is_set()).set()
        load(script)

    backend._nft.load = recorded  # type: ignore[method-assign]
    overlapped = []

    def batches() -> Iterator[dict[ServicePortName, ServicePort | None]]:
        for i, port in enumerate((WEB, DNS, STICKY)):
            if i:
                # Asked for the next batch on the event loop's thread, without yielding
                # to it: the previous batch must already be on its way into the kernel.
                overlapped.append(loading[i].wait(5))
            yield {port.name: port}

    service_map = ServiceMap.of([WEB, DNS, STICKY])
    report = in_netns(ns, lambda: asyncio.run(backend.stream(batches(), lambda: service_map)))
    assert report is not None and len(report.transactions) == 4
    assert overlapped == [True, True]
    with Netns("fresh") as other:
        other.run(["nft", "-f", "-"], stdin=render_nft(service_map, BASE_OPTIONS).text)
        assert parse_script(_nft(ns)).canonical() == parse_script(_nft(other)).canonical()


def _affinity_set(ns: Netns) -> str:
    return next(w for w in _nft(ns).split() if w.startswith("affinity-"))


def _ipt(ns: Netns) -> list[str]:
    text = ns.run(["iptables-save"]).stdout
    return sorted(
        line.split(" [")[0] for line in text.splitlines() if "KUBE-" in line and line[0] != "#"
    )


def _ipt_fresh(ports: list[ServicePort]) -> list[str]:
    """What a full sync of ``ports`` by a new backend leaves in a new namespace."""
    with Netns("fresh") as other:
        sync(other, IptablesBackend(OPTIONS), ports, ports, full=True)
        return _ipt(other)


@pytest.mark.kernel
def test_iptables_partial_syncs_and_repair(ns: Netns) -> None:
    backend = IptablesBackend(OPTIONS)
    assert sync(ns, backend, [WEB, DNS], [WEB, DNS], full=True).full
    scaled = replace(WEB, endpoints=(ep("pod-c"),), cluster_endpoints=(ep("pod-c"),))
    report = sync(ns, backend, [scaled, DNS], [scaled], full=False)
    ((_, restore),) = report.transactions
    declared = {w[1:] for w in restore.split() if w.startswith(":KUBE-")}
    # The changed Service's chain, its endpoints' chains (new and gone), nothing shared.
    assert {c for c in declared if not c.startswith("KUBE-SEP-")} == {service_chain_name(WEB.name)}
    assert "*filter" not in restore
    assert _ipt(ns) == _ipt_fresh([scaled, DNS])
    # Someone else jumps to the endpoint chain the next partial sync deletes: the
    # kernel refuses that restore as a whole, and the rules stay as they were.
    (sep,) = (c for c in declared if c.startswith("KUBE-SEP-") and f"-A {c} " in restore)
    ns.run(["iptables", "-w", "-t", "nat", "-I", "PREROUTING", "-j", sep])
    broken = _ipt(ns)
    again = replace(scaled, endpoints=(ep("pod-b"),), cluster_endpoints=(ep("pod-b"),))
    with pytest.raises(ApplyError):
        sync(ns, backend, [again, DNS], [again], full=False)
    assert _ipt(ns) == broken
    ns.run(["iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-j", sep])
    # The retry is a full sync (the proxier asks for one after a failure): it repairs.
    sync(ns, backend, [again, DNS], [], full=True)
    assert _ipt(ns) == _ipt_fresh([again, DNS])


@pytest.mark.kernel
def test_iptables_partial_sync_after_a_failure_is_a_full_render(ns: Netns) -> None:
    backend = IptablesBackend(OPTIONS)
    sync(ns, backend, [WEB, DNS], [WEB, DNS], full=True)
    ns.run(["iptables", "-w", "-t", "nat", "-N", "KUBE-SEP-IN-THE-WAY"])
    scaled = replace(WEB, endpoints=(ep("pod-c"),), cluster_endpoints=(ep("pod-c"),))
    # A partial sync refused (a foreign rule holds a chain it deletes)...
    sep = endpoint_chain_name(WEB.name, ep("pod-a"))
    ns.run(["iptables", "-w", "-t", "nat", "-A", "KUBE-SEP-IN-THE-WAY", "-j", sep])
    with pytest.raises(ApplyError):
        sync(ns, backend, [scaled, DNS], [scaled], full=False)
    ns.run(["iptables", "-w", "-t", "nat", "-F", "KUBE-SEP-IN-THE-WAY"])
    ns.run(["iptables", "-w", "-t", "nat", "-X", "KUBE-SEP-IN-THE-WAY"])
    # ...leaves the backend rendering in full, even when asked for a partial sync.
    report = sync(ns, backend, [scaled, DNS], [scaled], full=False)
    # (A full render's restore is written out part by part, not kept as one text.)
    assert not report.transactions and {tool for tool, _ in report.unkept} == {"iptables-restore"}
    assert report.bytes > 2000 and report.changed > 10
    assert _ipt(ns) == _ipt_fresh([scaled, DNS])


@pytest.mark.kernel
def test_iptables_in_large_cluster_mode_skips_the_periodic_full_sync(ns: Netns) -> None:
    backend = IptablesBackend(OPTIONS)
    sync(ns, backend, [WEB, DNS], [WEB, DNS], full=True)
    assert backend.periodic_full_sync
    many = tuple(Endpoint(f"10.244.{9 + i // 250}.{i % 250 + 1}", 8080) for i in range(1001))
    big = replace(WEB, endpoints=many, cluster_endpoints=many)
    sync(ns, backend, [big, DNS], [big], full=True)
    assert not backend.periodic_full_sync


@pytest.mark.kernel
def test_cleanup_removes_both_modes(ns: Netns) -> None:
    sync(ns, NftablesBackend(OPTIONS), [WEB], [WEB], full=True)
    sync(ns, IptablesBackend(OPTIONS), [WEB], [WEB], full=True)
    assert cleanup(netns=ns.name) == []
    assert "KUBE-" not in ns.run(["iptables-save"]).stdout
    assert "kube-proxy" not in ns.run(["nft", "list", "ruleset"]).stdout
    try:
        ns.run(["nft", "list", "table", "ip", "kube-proxy"])
        raise AssertionError("the table is still there")
    except CommandError:
        pass


@pytest.mark.kernel
def test_a_large_restore_goes_through_a_file(ns: Netns) -> None:
    from kubenet.dataplane import iptables as iptables_dp

    chains = [f"KUBE-SVC-{i:016d}" for i in range(2000)]
    text = "*nat\n" + "".join(f":{c} - [0:0]\n" for c in chains)
    text += "".join(f"-A {c} -j RETURN\n" for c in chains) + "COMMIT\n"
    iptables_dp.restore_large(IPFamily.IPV4, text, netns=ns.name)
    assert ns.run(["iptables-save", "-t", "nat"]).stdout.count("-j RETURN") == 2000
    with pytest.raises(CommandError, match="iptables-restore"):
        iptables_dp.restore_large(IPFamily.IPV4, "*nat\n-A NOPE -j RETURN\nCOMMIT\n", netns=ns.name)
