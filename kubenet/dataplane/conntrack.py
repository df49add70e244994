"""Delete connection-tracking entries, through netlink (pyroute2's conntrack API).

UDP has no connection to close: once the kernel has a conntrack entry for a client's
flow, every later packet of that flow follows the entry, not the rules. An entry
made while a Service had no endpoints (no DNAT) or that points at an endpoint that
is gone keeps a DNS-style client talking to nothing until the entry times out. So
node-proxy deletes such entries when it changes the rules (see
:mod:`kubenet.node.stale` for which).

A :class:`FlowMatch` selects entries by their original destination (the service
address and port the client used) and, optionally, the reply source (the endpoint
the flow was DNATed to). The kernel filters the dump by the original tuple (Linux
5.8 and later; older kernels dump everything and the rest is filtered here), then
each matching entry is deleted by its own tuple. An entry that disappears in
between is not an error.

Works in the network namespace of the calling thread.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubenet.model import IPFamily, Protocol

_PROTOCOLS = {Protocol.TCP: socket.IPPROTO_TCP, Protocol.UDP: socket.IPPROTO_UDP}
_FAMILIES = {IPFamily.IPV4: socket.AF_INET, IPFamily.IPV6: socket.AF_INET6}


@dataclass(frozen=True)
class FlowMatch:
    """Entries to delete: by original destination, and maybe by the endpoint that replies."""

    #: The original destination address (a service address); None: any.
    dst: str | None
    #: The original destination port (service port or node port); None: any.
    dport: int | None = None
    #: The address the replies come from (the endpoint); None: any.
    reply_src: str | None = None
    protocol: Protocol = Protocol.UDP
    #: The family, needed when ``dst`` is None (a node port).
    family: IPFamily = IPFamily.IPV4

    def __post_init__(self) -> None:
        if self.dst is not None and IPFamily.of(self.dst) is not self.family:
            object.__setattr__(self, "family", IPFamily.of(self.dst))

    def sort_key(self) -> tuple[str, str, int, str, str]:
        """An order for logs and tests (fields may be None)."""
        return (self.family, self.dst or "", self.dport or 0, self.reply_src or "", self.protocol)

    def __str__(self) -> str:
        dst = self.dst or "*"
        text = f"{self.protocol.value} to {dst}:{self.dport if self.dport else '*'}"
        return text + (f" answered by {self.reply_src}" if self.reply_src else "")


async def delete(matches: Iterable[FlowMatch]) -> int:
    """Delete every entry any match selects; return how many were deleted."""
    from pyroute2.conntrack import AsyncConntrack

    by_family: dict[IPFamily, list[FlowMatch]] = {}
    for match in matches:
        by_family.setdefault(match.family, []).append(match)
    deleted = 0
    for family, wanted in by_family.items():
        ct = AsyncConntrack(nfgen_family=_FAMILIES[family])
        try:
            await ct.setup_endpoint()
            for match in sorted(set(wanted), key=FlowMatch.sort_key):
                deleted += await _delete_matching(ct, family, match)
        finally:
            ct.close()
    return deleted


async def _delete_matching(ct: Any, family: IPFamily, match: FlowMatch) -> int:
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    af = _FAMILIES[family]
    orig = NFCTAttrTuple(family=af, proto=_PROTOCOLS[match.protocol], daddr=match.dst)
    if match.dport is not None:
        orig.dport = match.dport
    entries = [e async for e in await ct.dump_entries(tuple_orig=orig)]
    count = 0
    for entry in entries:
        # The kernel filters by one tuple only; the reply side is checked here.
        if match.reply_src is not None and entry.tuple_reply.saddr != match.reply_src:
            continue
        try:
            await ct.delete(entry)
            count += 1
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise
    return count
