"""The kernel traffic suite's shared fixtures: one topology per module, rules per scenario.

Building the namespaces and starting the pod servers happens once per test module;
between scenarios only the rules change: both backends' state is cleaned up, the
connection-tracking table of the node is flushed (so no earlier flow, NAT binding
or affinity carries over), and the new plan is applied in the node namespace.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from kubenet.dataplane import iptables, nftables
from kubenet.model import IPFamily, ServiceMap
from kubenet.options import RenderOptions
from kubenet.render import ProxyMode, render
from kubenet.testing.netns import PodSpec, Topology, TopologySpec, build, missing_kernel_support
from tests.scenarios import TCP_TARGET, TOPOLOGY, UDP_TARGET

if TYPE_CHECKING:
    from kubenet.render import Plan

MODES = (ProxyMode.IPTABLES, ProxyMode.NFTABLES)


def topology_spec() -> TopologySpec:
    """The scenario suite's TOPOLOGY as a harness spec (node and client on a /24 and /64)."""
    node, client = TOPOLOGY["node"], TOPOLOGY["client"]
    pods = tuple(
        PodSpec(name, addrs["ipv4"], addrs["ipv6"])
        for name, addrs in TOPOLOGY.items()
        if name not in ("node", "client")
    )
    return TopologySpec(
        node=(f"{node['ipv4']}/24", f"{node['ipv6']}/64"),
        client=(f"{client['ipv4']}/24", f"{client['ipv6']}/64"),
        pods=pods,
        ports=(TCP_TARGET, UDP_TARGET),
    )


@dataclass
class Kernel:
    """The node namespace's dataplane, loaded with one scenario's rules at a time."""

    topology: Topology
    _loaded: tuple[ProxyMode, ServiceMap, RenderOptions] | None = None
    _plans: dict[tuple[ProxyMode, ServiceMap, RenderOptions], Plan] = field(default_factory=dict)

    @property
    def netns(self) -> str:
        return self.topology.node.name

    def load(self, mode: ProxyMode, service_map: ServiceMap, options: RenderOptions) -> Plan:
        """Render and apply, unless exactly this is what the kernel already has.

        Skips the test when the backend's renderer does not exist (yet).
        """
        require_module(f"kubenet.render.{mode.value}")
        key = (mode, service_map, options)
        if self._loaded == key:
            return self._plans[key]
        self.reset()
        plan = self._plans.get(key) or render(service_map, options, mode)
        self._plans[key] = plan
        if mode is ProxyMode.IPTABLES:
            from kubenet.render.iptables import IptablesPlan

            assert isinstance(plan, IptablesPlan)
            iptables.apply(plan, netns=self.netns)
        else:
            from kubenet.render.nftables import NftablesPlan

            assert isinstance(plan, NftablesPlan)
            nftables.apply(plan, netns=self.netns)
        self._loaded = key
        return plan

    def reset(self) -> None:
        """No rules of either backend, no tracked connections."""
        self._loaded = None
        for family in IPFamily:
            iptables.cleanup(family, netns=self.netns, kubelet_chains=True)
        nftables.cleanup(netns=self.netns)
        self.flush_conntrack()

    def flush_conntrack(self) -> None:
        for family in ("ipv4", "ipv6"):
            self.topology.node.run(["conntrack", "-F", "-f", family])


def require_module(name: str) -> None:
    """Skip the calling test when a kubenet module is missing."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} does not exist yet")


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    missing = missing_kernel_support(
        tools=("iptables-restore", "ip6tables-restore", "nft", "conntrack"),
        iptables=True,
        nftables=True,
    )
    if missing:
        pytest.skip(missing)
    with build(topology_spec()) as topo:
        yield topo


@pytest.fixture(scope="module")
def kernel(topology: Topology) -> Iterator[Kernel]:
    k = Kernel(topology)
    yield k
    k.reset()
