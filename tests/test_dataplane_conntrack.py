"""Deleting conntrack entries through netlink, on real UDP flows in a namespace."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from kubenet.dataplane import conntrack
from kubenet.dataplane.conntrack import FlowMatch
from kubenet.model import IPFamily
from kubenet.testing.netns import Netns, missing_kernel_support

T = TypeVar("T")

# Two "services" on 10.96.0.0/16, DNATed in the output hook to two local "endpoints".
RULES = """
table ip kn-ct {
    chain out {
        type nat hook output priority -100; policy accept;
        ip daddr 10.96.0.53 udp dport 53 dnat to 127.0.0.2:9090
        ip daddr 10.96.0.54 udp dport 53 dnat to 127.0.0.3:9090
        udp dport 30053 dnat to 127.0.0.2:9090
    }
}
"""


def in_netns(ns: Netns, fn: Callable[[], T]) -> T:
    return ns.call(fn)


@pytest.fixture
def ns() -> Iterator[Netns]:
    missing = missing_kernel_support(tools=("nft", "conntrack"), nftables=True)
    if missing:
        pytest.skip(missing)
    with Netns("ct") as netns:
        netns.ip(["link set lo up", "route add 10.96.0.0/16 dev lo"])
        netns.run(["nft", "-f", "-"], stdin=RULES)
        yield netns


def _flow(ns: Netns, dst: str, port: int, sport: int) -> None:
    """Send one datagram (nobody needs to answer: the entry exists once it left)."""
    sock = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind(("127.0.0.1", sport))
        sock.sendto(b"x", (dst, port))


def _entries(ns: Netns) -> set[tuple[str, str]]:
    """(original destination, reply source) of each UDP entry."""
    out = ns.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
    found = set()
    for line in out.splitlines():
        values: dict[str, list[str]] = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                values.setdefault(key, []).append(value)
        if "dst" in values:
            # Original tuple first, reply tuple second.
            found.add((f"{values['dst'][0]}:{values['dport'][0]}", values["src"][1]))
    return found


@pytest.mark.kernel
def test_delete_by_service_address_and_endpoint(ns: Netns) -> None:
    _flow(ns, "10.96.0.53", 53, 40001)
    _flow(ns, "10.96.0.53", 53, 40002)
    _flow(ns, "10.96.0.54", 53, 40003)
    assert _entries(ns) == {("10.96.0.53:53", "127.0.0.2"), ("10.96.0.54:53", "127.0.0.3")}
    # Answered by another endpoint: nothing to delete.
    match = FlowMatch("10.96.0.53", 53, reply_src="127.0.0.3")
    assert in_netns(ns, lambda: asyncio.run(conntrack.delete([match]))) == 0
    match = FlowMatch("10.96.0.53", 53, reply_src="127.0.0.2")
    assert in_netns(ns, lambda: asyncio.run(conntrack.delete([match]))) == 2
    assert _entries(ns) == {("10.96.0.54:53", "127.0.0.3")}


@pytest.mark.kernel
def test_delete_by_node_port_and_by_address_alone(ns: Netns) -> None:
    _flow(ns, "127.0.0.1", 30053, 40004)
    _flow(ns, "10.96.0.54", 53, 40005)
    matches = [
        FlowMatch(None, 30053, family=IPFamily.IPV4),
        FlowMatch("10.96.0.54", None),
        FlowMatch("fd00:96::54", 53),  # another family: a second socket, nothing there
    ]
    assert in_netns(ns, lambda: asyncio.run(conntrack.delete(matches))) == 2
    assert _entries(ns) == set()


def test_flow_matches_describe_themselves() -> None:
    assert str(FlowMatch("10.96.0.53", 53, "10.244.1.2")) == (
        "UDP to 10.96.0.53:53 answered by 10.244.1.2"
    )
    assert FlowMatch("fd00::1", 53).family is IPFamily.IPV6
    assert str(FlowMatch(None, 30053)) == "UDP to *:30053"
