"""Walk a packet through an IPVS plan: the helper rules, the ipsets and the IPVS table.

The helper rules are an ordinary iptables plan, walked by
:class:`kubenet.trace.iptables.Tracer`; this module gives that walk what lives
outside the restore text:

* the members of the plan's ipsets, read from the plan's own ``ipset restore``
  entries and matched as the kernel's set types match them (``hash:ip``,
  ``hash:ip,port``, ``hash:ip,port,ip``, ``hash:ip,port,net``, ``bitmap:port``); a
  set match reads each dimension from the side its flag names, and needs at least as
  many flags as the set has dimensions;
* the IPVS table: a packet whose protocol, destination address and port are a
  virtual service's is taken over by IPVS (after nat OUTPUT for the node's own
  packets, after filter INPUT for arriving ones) and may go to any of its real
  servers; with none, IPVS answers ICMP port unreachable (REJECT).

Locality: the node's addresses and the addresses bound on ``kube-ipvs0`` are local,
so ``-m addrtype --dst-type LOCAL`` matches ClusterIPs as it does on a node in IPVS
mode, and packets to them are delivered locally (where IPVS waits) rather than
forwarded. Masquerading follows the helper rules: the ``KUBE-MARK-MASQ`` mark, and
``KUBE-LOOP-BACK`` for hairpin traffic, both read in nat POSTROUTING.
"""

from __future__ import annotations

import ipaddress

from kubenet.model import IPFamily
from kubenet.render.ipvs import IpSet, IpvsPlan, SetType, VirtualServer
from kubenet.trace import Packet, TraceResult
from kubenet.trace import iptables as iptables_trace
from kubenet.trace.iptables import Header, Interception

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trace(plan: IpvsPlan, packet: Packet, node_ips: tuple[str, ...] | None = None) -> TraceResult:
    """Walk ``packet`` through ``plan``; ``node_ips`` defaults to the plan's node addresses."""
    return Tracer(plan, node_ips).trace(packet)


class Tracer:
    """An IPVS plan ready to trace packets through: parse once, trace many."""

    def __init__(self, plan: IpvsPlan, node_ips: tuple[str, ...] | None = None) -> None:
        ips = plan.options.node_ips if node_ips is None else node_ips
        local = (*ips, *plan.bound_addresses)
        self._sets = {s.name: s for s in plan.ipsets}
        #: Each set's members, indexed when a rule first consults the set.
        self._members: dict[str, _Members] = {}
        # Keyed by canonical address text (what the plan holds), as a header prints it.
        self._services = {(vs.protocol.lower(), vs.ip, vs.port): vs for vs in plan.virtual_servers}
        self._iptables = iptables_trace.Tracer(
            plan.helper, local, sets=self.in_set, ipvs=self.virtual_service
        )

    def trace(self, packet: Packet) -> TraceResult:
        """Every way ``packet`` may go, folded into one result."""
        return self._iptables.trace(packet)

    def in_set(self, name: str, flags: tuple[str, ...], header: Header) -> bool:
        """The membership test of ``-m set --match-set name flags`` (KeyError: no such set)."""
        members = self._members.get(name)
        if members is None:
            members = self._members[name] = _Members.of(self._sets[name])
        return members.match(flags, header)

    def virtual_service(self, header: Header) -> Interception | None:
        """The virtual service a packet is addressed to, if any."""
        vs = self._services.get((header.protocol, str(header.dst), header.dport))
        return None if vs is None else _interception(vs)


def _interception(vs: VirtualServer) -> Interception:
    """The virtual service as the trace lists it: its ipvsadm lines, marked as IPVS."""
    head, *reals = vs.ipvsadm_lines()
    return Interception(
        service=f"IPVS {head}",
        destinations=tuple(
            (f"IPVS {line}", ipaddress.ip_address(rs.ip), rs.port)
            for line, rs in zip(reals, vs.real_servers, strict=True)
        ),
    )


class _Members:
    """One set's members, indexed for lookups; a lookup mirrors the kernel's set type."""

    def __init__(
        self,
        kind: SetType,
        family: IPFamily,
        keys: frozenset[tuple[object, ...]],
        nets: dict[tuple[object, ...], tuple[_IPNetwork, ...]],
    ) -> None:
        self.kind = kind
        self.version = 4 if family is IPFamily.IPV4 else 6
        self.keys = keys
        self.nets = nets

    @classmethod
    def of(cls, ipset: IpSet) -> _Members:
        keys: set[tuple[object, ...]] = set()
        nets: dict[tuple[object, ...], list[_IPNetwork]] = {}
        for entry in ipset.entries:
            parts = _parse_entry(ipset.type, entry)
            if ipset.type is SetType.HASH_IP_PORT_NET:
                net = parts[-1]
                assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
                nets.setdefault(parts[:-1], []).append(net)
            else:
                keys.add(parts)
        frozen = {key: tuple(value) for key, value in nets.items()}
        return cls(ipset.type, ipset.family, frozenset(keys), frozen)

    def match(self, flags: tuple[str, ...], header: Header) -> bool:
        dims = self.kind.dimensions
        if len(flags) < dims:
            # The kernel never matches a set with fewer flags than dimensions.
            return False
        if self.kind is SetType.BITMAP_PORT:
            return (_port(flags[0], header),) in self.keys
        if header.dst.version != self.version:
            return False
        ip = _side(flags[0], header)
        if self.kind is SetType.HASH_IP:
            return (ip,) in self.keys
        key = (ip, header.protocol, _port(flags[1], header))
        if self.kind is SetType.HASH_IP_PORT:
            return key in self.keys
        third = _side(flags[2], header)
        if self.kind is SetType.HASH_IP_PORT_IP:
            return (*key, third) in self.keys
        return any(third in net for net in self.nets.get(key, ()))


def _side(flag: str, header: Header) -> _IPAddress:
    return header.src if flag == "src" else header.dst


def _port(flag: str, header: Header) -> int:
    if flag == "src":
        # A connection's first packet comes from a port the trace does not know.
        raise iptables_trace.IptablesTraceError("a set match on the source port is not traced")
    return header.dport


def _parse_entry(kind: SetType, entry: str) -> tuple[object, ...]:
    """An ``ipset save`` entry as a lookup key: addresses, protocol, port, network."""
    if kind is SetType.BITMAP_PORT:
        return (int(entry),)
    fields = entry.split(",")
    out: list[object] = [ipaddress.ip_address(fields[0])]
    if kind is SetType.HASH_IP:
        return tuple(out)
    proto, _, number = fields[1].rpartition(":")
    out += [proto or "tcp", int(number)]
    if kind is SetType.HASH_IP_PORT_IP:
        out.append(ipaddress.ip_address(fields[2]))
    elif kind is SetType.HASH_IP_PORT_NET:
        out.append(ipaddress.ip_network(fields[2], strict=False))
    return tuple(out)
