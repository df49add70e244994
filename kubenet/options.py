"""Options every renderer takes: who the node is and how it masquerades.

One frozen options object serves the iptables, nftables and IPVS renderers, so the
same scenario can be rendered by each and compared through the tracer.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from kubenet.model import IPFamily

#: Upstream's default --iptables-masquerade-bit.
DEFAULT_MASQUERADE_BIT = 14


class DetectLocalMode(enum.StrEnum):
    """--detect-local-mode: how "traffic from a local pod" is recognised."""

    CLUSTER_CIDR = "ClusterCIDR"
    NODE_CIDR = "NodeCIDR"
    BRIDGE_INTERFACE = "BridgeInterface"
    INTERFACE_NAME_PREFIX = "InterfaceNamePrefix"


@dataclass(frozen=True)
class LocalDetector:
    """Which packets count as coming from a pod on this cluster (or node).

    With ClusterCIDR/NodeCIDR and no CIDR of the rendered family, nothing is
    detected as local, exactly as upstream's no-op detector: off-cluster traffic to
    a ClusterIP is then not masqueraded unless masqueradeAll is set.
    """

    mode: DetectLocalMode = DetectLocalMode.CLUSTER_CIDR
    #: ClusterCIDR / NodeCIDR values, any family; each renderer uses its own family's.
    cidrs: tuple[str, ...] = ()
    #: The bridge name (BridgeInterface) or the name prefix (InterfaceNamePrefix).
    interface: str = ""

    def cidrs_for(self, family: IPFamily) -> tuple[str, ...]:
        if self.mode not in (DetectLocalMode.CLUSTER_CIDR, DetectLocalMode.NODE_CIDR):
            return ()
        return tuple(c for c in self.cidrs if IPFamily.of(c) is family)

    def enabled(self, family: IPFamily) -> bool:
        """Whether this detector can tell local traffic apart for the family."""
        if self.mode in (DetectLocalMode.BRIDGE_INTERFACE, DetectLocalMode.INTERFACE_NAME_PREFIX):
            return bool(self.interface)
        return bool(self.cidrs_for(family))


@dataclass(frozen=True)
class RenderOptions:
    """The node-specific inputs of a render, shared by all backends."""

    node_name: str
    ip_family: IPFamily = IPFamily.IPV4
    #: Every address of the node (any family). Used for nodePortAddresses selection,
    #: and by the tracer to tell locally generated packets and LOCAL destinations.
    node_ips: tuple[str, ...] = ()
    local_detector: LocalDetector = LocalDetector()
    masquerade_all: bool = False
    masquerade_bit: int = DEFAULT_MASQUERADE_BIT
    #: --nodeport-addresses: CIDRs, or the single word "primary". Empty means every
    #: local address (iptables/ipvs) as upstream does.
    nodeport_addresses: tuple[str, ...] = ()

    @property
    def masquerade_mark(self) -> int:
        return 1 << self.masquerade_bit

    def node_ips_for(self, family: IPFamily | None = None) -> tuple[str, ...]:
        fam = family or self.ip_family
        return tuple(ip for ip in self.node_ips if IPFamily.of(ip) is fam)

    def primary_node_ip(self, family: IPFamily | None = None) -> str | None:
        """The node's primary address of the family: its first one that is not loopback.

        This is what ``--nodeport-addresses primary`` selects, as upstream's node IP.
        """
        for ip in self.node_ips_for(family):
            if not ipaddress.ip_address(ip).is_loopback:
                return ip
        return None
