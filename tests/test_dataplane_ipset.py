"""ipset programming: reading ``ipset save``, the difference script, and syncs on a real kernel.

The kernel tests work in a network namespace made for the test (ipsets are per
namespace) and read the result back with ``ipset save``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from kubenet.dataplane import ipset
from kubenet.dataplane.command import CommandError
from kubenet.model import IPFamily, ServiceMap
from kubenet.render.ipvs import IpSet, SetType, render
from kubenet.testing.netns import Netns, missing_kernel_support
from tests.scenarios import BASE_OPTIONS, ep, svc

SAVE = """\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 initval 0x1
add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
add KUBE-CLUSTER-IP 10.96.0.11,udp:53
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
create OTHER hash:ip family inet hashsize 1024 maxelem 65536
add OTHER 192.0.2.1 timeout 30
"""


def cluster(*entries: str) -> IpSet:
    return IpSet("KUBE-CLUSTER-IP", SetType.HASH_IP_PORT, IPFamily.IPV4, "", entries)


def test_parse_save() -> None:
    sets = ipset.parse_save(SAVE)
    assert set(sets) == {"KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP", "OTHER"}
    assert sets["KUBE-CLUSTER-IP"].entries == {"10.96.0.10,tcp:80", "10.96.0.11,udp:53"}
    assert sets["KUBE-NODE-PORT-TCP"].entries == frozenset()
    assert (
        sets["KUBE-NODE-PORT-TCP"].create == "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535"
    )
    # Entry options (a timeout) are not part of the element.
    assert sets["OTHER"].entries == {"192.0.2.1"}


def test_sync_script_adds_before_it_deletes_and_leaves_the_rest() -> None:
    current = ipset.parse_save(SAVE)
    script = ipset.sync_script(current, [cluster("10.96.0.10,tcp:80", "10.96.0.12,tcp:80")])
    assert script.splitlines() == [
        "add KUBE-CLUSTER-IP 10.96.0.12,tcp:80 -exist",
        "del KUBE-CLUSTER-IP 10.96.0.11,udp:53 -exist",
    ]
    # Nothing to do: nothing to run. Sets not in the plan (OTHER) are not touched.
    same = cluster("10.96.0.10,tcp:80", "10.96.0.11,udp:53")
    assert ipset.sync_script(current, [same]) == ""


def test_sync_script_creates_missing_sets() -> None:
    new = IpSet("KUBE-IPVS-IPS", SetType.HASH_IP, IPFamily.IPV4, "", ("10.96.0.10",))
    assert ipset.sync_script({}, [new]).splitlines() == [
        "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist",
        "add KUBE-IPVS-IPS 10.96.0.10 -exist",
    ]


# ------------------------------------------------------------------ on the kernel


@pytest.fixture(scope="module")
def ipset_ok() -> None:
    missing = missing_kernel_support(tools=("ipset",))
    if missing:
        pytest.skip(missing)


@pytest.fixture
def netns(ipset_ok: None) -> Iterator[Netns]:
    with Netns("ipset") as ns:
        reason = ipset.available(netns=ns.name)
        if reason:
            pytest.skip(reason)
        yield ns


def _kernel_entries(ns: Netns) -> dict[str, frozenset[str]]:
    return {name: s.entries for name, s in ipset.parse_save(ipset.save(netns=ns.name)).items()}


@pytest.mark.kernel
@pytest.mark.parametrize("family", list(IPFamily))
def test_a_plans_sets_sync_to_exactly_its_entries(netns: Netns, family: IPFamily) -> None:
    options = replace(BASE_OPTIONS, ip_family=family)
    six = family is IPFamily.IPV6
    web = svc(
        "web",
        ("10.96.0.10", "fd00:96::10"),
        (ep("pod-a", ipv6=six), ep("pod-r", ipv6=six)),
        node_port=30080,
        lb_ips=("203.0.113.10", "2001:db8::10"),
        source_ranges=("10.180.0.0/24", "192.0.2.7/32", "fd00:180::/64", "2001:db8:7::1/128"),
    )
    first = render(ServiceMap.of([web]), options)
    script = ipset.sync(first.ipsets, netns=netns.name)
    assert script.count("create ") == len(first.ipsets)
    want = {s.name: frozenset(s.entries) for s in first.ipsets}
    assert _kernel_entries(netns) == want
    # Again: the kernel already holds it all, so nothing runs.
    assert ipset.sync(first.ipsets, netns=netns.name) == ""

    # A changed map changes only the entries that differ.
    moved = replace(web, port=81, node_port=None, load_balancer_source_ranges=())
    second = render(ServiceMap.of([moved]), options)
    script = ipset.sync(second.ipsets, netns=netns.name)
    assert "create" not in script
    changed = {s.name for s in second.ipsets if set(s.entries) != want[s.name]}
    assert {line.split()[1] for line in script.splitlines()} == changed
    assert _kernel_entries(netns) == {s.name: frozenset(s.entries) for s in second.ipsets}

    gone = ipset.destroy([s.name for s in second.ipsets] + ["KUBE-NOT-THERE"], netns=netns.name)
    assert gone == [s.name for s in second.ipsets]
    assert _kernel_entries(netns) == {}


@pytest.mark.kernel
def test_a_failing_restore_surfaces_ipsets_error(netns: Netns) -> None:
    bad = IpSet("KUBE-CLUSTER-IP", SetType.HASH_IP_PORT, IPFamily.IPV4, "", ("not-an-ip,tcp:80",))
    with pytest.raises(CommandError, match="ipset restore"):
        ipset.sync([bad], netns=netns.name)
