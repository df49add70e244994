"""Which UDP conntrack entries a change of service ports leaves stale (upstream's rules).

kube-proxy deletes UDP conntrack entries in two cases, after the new rules are in:

* a UDP service port goes from no usable endpoint to some: entries to its addresses
  (ClusterIPs, external IPs, load-balancer IPs) and its node port were made while
  nothing answered, without DNAT, and would keep the flow going nowhere;
* an endpoint stops being usable (removed, or no longer ready): entries to the
  service's addresses and node port that it answered would keep sending there.

A port that goes away entirely loses all its endpoints, so the second case covers
it. Pure: the deleting is :mod:`kubenet.dataplane.conntrack`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kubenet.dataplane.conntrack import FlowMatch
from kubenet.model import IPFamily, IPMode, Protocol, ServicePort, ServicePortName
from kubenet.node.changes import PortChange


def _usable(port: ServicePort | None) -> set[str]:
    """The endpoint IPs traffic to the port may be DNATed to."""
    if port is None:
        return set()
    return {ep.ip for ep in (*port.cluster_endpoints, *port.local_endpoints)}


def _addresses(port: ServicePort) -> list[str]:
    lb = [i.ip for i in port.load_balancer_ingress if i.ip_mode is IPMode.VIP]
    return list(dict.fromkeys([*port.cluster_ips, *port.external_ips, *lb]))


def stale_flows(changes: Mapping[ServicePortName, PortChange]) -> list[FlowMatch]:
    """The entries to delete once the rules for ``changes`` are applied."""
    out: set[FlowMatch] = set()
    for name, change in changes.items():
        if name.protocol is not Protocol.UDP:
            continue
        before, after = _usable(change.old), _usable(change.new)
        if change.new is not None and after and not before:
            out.update(_to(change.new, None))
        if change.old is not None:
            for ip in before - after:
                out.update(_to(change.old, ip))
    return sorted(out, key=FlowMatch.sort_key)


def _to(port: ServicePort, reply_src: str | None) -> Iterable[FlowMatch]:
    """Entries to the port's addresses and node port (answered by ``reply_src``, if given)."""
    families = {IPFamily.of(ip) for ip in port.cluster_ips}
    if reply_src is not None:
        families &= {IPFamily.of(reply_src)}
    for ip in _addresses(port):
        if IPFamily.of(ip) in families:
            yield FlowMatch(ip, port.port, reply_src)
    if port.node_port is not None:
        for family in families:
            yield FlowMatch(None, port.node_port, reply_src, family=family)
