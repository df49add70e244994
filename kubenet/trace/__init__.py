"""The packet tracer: walk a packet through a rendered plan, as the kernel would.

The tracer reads the very text a plan feeds to the kernel (``iptables-restore``
input, an ``nft -f`` script, ...), so what it says is what the kernel gets. It is
pure: no I/O, nothing global.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubenet.model import Protocol

if TYPE_CHECKING:
    from kubenet.render import Plan


class Verdict(enum.StrEnum):
    """What finally happens to the packet."""

    DNAT = "DNAT"
    ACCEPT = "ACCEPT"
    DROP = "DROP"
    REJECT = "REJECT"


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection, as the tracer sees it."""

    src: str
    dst: str
    protocol: Protocol
    dport: int
    #: Input interface, for BridgeInterface / InterfaceNamePrefix local detection.
    iif: str | None = None


@dataclass(frozen=True)
class TraceResult:
    """The outcome of one trace.

    ``endpoints`` lists every ``ip:port`` the packet may be DNATed to (sorted);
    ``rules`` the rules hit, in order, as the plan spells them.
    """

    verdict: Verdict
    endpoints: tuple[str, ...]
    masquerade: bool
    rules: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The ``node-proxy trace -o json`` object: exactly these four keys."""
        return {
            "verdict": self.verdict.value,
            "endpoints": list(self.endpoints),
            "masquerade": self.masquerade,
            "rules": list(self.rules),
        }


def trace(plan: Plan, packet: Packet, node_ips: tuple[str, ...] | None = None) -> TraceResult:
    """Walk ``packet`` through ``plan`` with the tracer of the plan's backend.

    ``node_ips`` defaults to the node addresses the plan was rendered with.
    """
    # Imported here: each backend's tracer imports its renderer's plan type, and the
    # renderers must stay importable without the tracer.
    if plan.backend == "iptables":
        from kubenet.trace import iptables

        return iptables.trace(plan, packet, node_ips)  # type: ignore[arg-type]
    if plan.backend == "nftables":
        from kubenet.trace import nftables

        return nftables.trace(plan, packet, node_ips)  # type: ignore[arg-type]
    if plan.backend == "ipvs":
        from kubenet.trace import ipvs

        return ipvs.trace(plan, packet, node_ips)  # type: ignore[arg-type]
    raise ValueError(f"no tracer for backend {plan.backend!r}")
