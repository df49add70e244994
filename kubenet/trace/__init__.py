"""The packet tracer: walk a packet through a rendered plan, as the kernel would.

The tracer reads the very text a plan feeds to the kernel (``iptables-restore``
input, an ``nft -f`` script, ...), so what it says is what the kernel gets. It is
pure: no I/O, nothing global.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kubenet.model import Protocol


class Verdict(str, enum.Enum):
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
