"""Apply an IPVS plan to the kernel: ipsets, helper rules, kube-ipvs0 addresses, IPVS.

A sync (:func:`apply`) changes only what changed. It reads the kernel's state back
and programs the difference:

1. IPVS and the dummy device are checked first, so a kernel without them fails the
   sync before anything is touched.
2. The ipsets (:mod:`kubenet.dataplane.ipset`: only added and removed entries), then
   the helper rules (:mod:`kubenet.dataplane.iptables`: one ``iptables-restore
   --noflush`` and the base-chain jumps). Sets come first because rules refer to them.
3. New service addresses are bound on ``kube-ipvs0``.
4. IPVS, through pyroute2's generic netlink IPVS messages: the operations
   :func:`diff` computes between the virtual services read back and the plan's.
   New services and real servers are added before stale real servers go, so a
   service that keeps endpoints never passes through an empty moment (in which
   IPVS would reject). Services no longer planned are deleted last.
5. Addresses no longer planned are unbound.

Only the plan's IP family is compared and changed (one plan per family, as upstream
runs one proxier per family). Real servers are removed at once; upstream's graceful
termination (weight 0 until connections drain) is not done here. The sysctls the
mode needs are set once at start by :func:`ensure_sysctls`, not on every sync.

The messages are pyroute2's own: :class:`pyroute2.netlink.generic.ipvs.ipvsmsg`
for IPVS (built here, because pyroute2's ``IPVSService`` sends no netmask for IPv6
services, which the kernel requires) and the ``IPRoute`` API for the device and its
addresses. The I/O objects are injectable: :class:`Ipvs` takes any
:class:`IpvsTransport` and :class:`DummyDevice` any ``IPRoute``-like object, so the
exact messages can be captured from pyroute2's encoder without a kernel.

Everything takes ``netns``: the name of a network namespace to work in.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from typing import Protocol as TypingProtocol

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.generic.ipvs import (
    GENL_NAME,
    GENL_VERSION,
    IPVS_CMD_DEL_DEST,
    IPVS_CMD_DEL_SERVICE,
    IPVS_CMD_FLUSH,
    IPVS_CMD_GET_DEST,
    IPVS_CMD_GET_SERVICE,
    IPVS_CMD_NEW_DEST,
    IPVS_CMD_NEW_SERVICE,
    IPVS_CMD_SET_DEST,
    IPVS_CMD_SET_SERVICE,
    ipvsmsg,
)

from kubenet.dataplane import ipset, iptables
from kubenet.dataplane.command import run
from kubenet.model import IPFamily, Protocol
from kubenet.render.ipvs import (
    DUMMY_DEVICE,
    SETS,
    IpvsPlan,
    RealServer,
    VirtualServer,
    set_name,
)

#: IP_VS_SVC_F_PERSISTENT: ClientIP affinity.
FLAG_PERSISTENT = 0x1
#: IP_VS_SVC_F_HASHED: the kernel reports it on every service; it is no setting.
FLAG_HASHED = 0x2
#: IP_VS_CONN_F_MASQ: NAT forwarding (``ipvsadm -m``).
FWD_MASQ = 0x0
ACK = NLM_F_REQUEST | NLM_F_ACK
DUMP = NLM_F_REQUEST | NLM_F_DUMP

_IPPROTO = {Protocol.TCP: socket.IPPROTO_TCP, Protocol.UDP: socket.IPPROTO_UDP, Protocol.SCTP: 132}
_PROTOCOLS = {number: proto for proto, number in _IPPROTO.items()}
#: The kernel reads an IPv6 service's netmask attribute as a prefix length in host
#: byte order (ipvsadm and libnetwork send it so); pyroute2 declares the attribute as
#: an IPv4 address, so this is the address whose bytes are 128 in host order.
_NETMASK6 = str(ipaddress.IPv4Address(struct.pack("=I", 128)))
_NETMASK4 = "255.255.255.255"

NO_IPVS = "this kernel has no IPVS (ip_vs module not available)"


class IpvsUnavailable(RuntimeError):
    """The kernel (or namespace) has no IPVS generic netlink family."""


# --- operations: what a sync does, computed purely -----------------------------------


class OpKind(enum.StrEnum):
    """One IPVS change, named after its ipvsadm flag."""

    ADD_SERVICE = "-A"
    UPDATE_SERVICE = "-E"
    DELETE_SERVICE = "-D"
    ADD_DEST = "-a"
    UPDATE_DEST = "-e"
    DELETE_DEST = "-d"


@dataclass(frozen=True)
class Operation:
    """One change to the kernel's IPVS table."""

    kind: OpKind
    service: VirtualServer
    dest: RealServer | None = None

    def __str__(self) -> str:
        """The change as an ipvsadm command line."""
        vs = self.service
        text = f"{self.kind.value} {vs.ipvsadm_service}"
        if self.kind in (OpKind.ADD_SERVICE, OpKind.UPDATE_SERVICE):
            text += f" -s {vs.scheduler}"
            if vs.timeout is not None:
                text += f" -p {vs.timeout}"
        elif self.dest is not None:
            text += f" -r {self.dest.address}"
            if self.kind is not OpKind.DELETE_DEST:
                text += f" -m -w {self.dest.weight}"
        return text


def diff(
    current: Iterable[VirtualServer], desired: Iterable[VirtualServer]
) -> tuple[Operation, ...]:
    """The operations that turn the ``current`` IPVS table into ``desired``.

    Services are matched by (protocol, address, port) and updated when the scheduler
    or persistence changed; real servers by (address, port) and updated when the
    weight changed. Order: additions and updates, then removals of real servers,
    then removals of services (whose real servers go with them).
    """
    have = {vs.key: vs for vs in current}
    want = {vs.key: vs for vs in desired}
    adds: list[Operation] = []
    removals: list[Operation] = []
    for key, vs in want.items():
        old = have.get(key)
        if old is None:
            adds.append(Operation(OpKind.ADD_SERVICE, vs))
            adds.extend(Operation(OpKind.ADD_DEST, vs, rs) for rs in vs.real_servers)
            continue
        if (old.scheduler, old.timeout) != (vs.scheduler, vs.timeout):
            adds.append(Operation(OpKind.UPDATE_SERVICE, vs))
        old_reals = {(rs.ip, rs.port): rs for rs in old.real_servers}
        for rs in vs.real_servers:
            previous = old_reals.pop((rs.ip, rs.port), None)
            if previous is None:
                adds.append(Operation(OpKind.ADD_DEST, vs, rs))
            elif previous.weight != rs.weight:
                adds.append(Operation(OpKind.UPDATE_DEST, vs, rs))
        removals.extend(Operation(OpKind.DELETE_DEST, vs, rs) for rs in old_reals.values())
    gone = [Operation(OpKind.DELETE_SERVICE, vs) for key, vs in have.items() if key not in want]
    return (*adds, *removals, *gone)


def address_changes(
    current: Iterable[str], desired: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(addresses to bind, addresses to unbind), each in address order."""
    have = {str(ipaddress.ip_address(a)) for a in current}
    want = {str(ipaddress.ip_address(a)) for a in desired}
    return _sorted_ips(want - have), _sorted_ips(have - want)


def _sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    addresses = sorted((ipaddress.ip_address(ip) for ip in ips), key=lambda a: (a.version, a))
    return tuple(str(a) for a in addresses)


# --- IPVS generic netlink messages ----------------------------------------------------


def _af(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def service_attrs(vs: VirtualServer, *, full: bool) -> list[tuple[str, Any]]:
    """The ``IPVS_CMD_ATTR_SERVICE`` attributes: the key, and with ``full`` the settings.

    The kernel needs scheduler, flags, timeout and netmask to create or change a
    service, and only the key to name one.
    """
    attrs: list[tuple[str, Any]] = [
        ("IPVS_SVC_ATTR_AF", _af(vs.ip)),
        ("IPVS_SVC_ATTR_PROTOCOL", _IPPROTO[vs.protocol]),
        ("IPVS_SVC_ATTR_ADDR", vs.ip),
        ("IPVS_SVC_ATTR_PORT", vs.port),
    ]
    if full:
        flags = FLAG_PERSISTENT if vs.timeout is not None else 0
        attrs += [
            ("IPVS_SVC_ATTR_SCHED_NAME", vs.scheduler),
            ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
            ("IPVS_SVC_ATTR_TIMEOUT", vs.timeout or 0),
            ("IPVS_SVC_ATTR_NETMASK", _NETMASK6 if ":" in vs.ip else _NETMASK4),
        ]
    return attrs


def dest_attrs(rs: RealServer, *, full: bool) -> list[tuple[str, Any]]:
    """The ``IPVS_CMD_ATTR_DEST`` attributes: address, and with ``full`` forwarding and weight."""
    attrs: list[tuple[str, Any]] = [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", _af(rs.ip)),
        ("IPVS_DEST_ATTR_ADDR", rs.ip),
        ("IPVS_DEST_ATTR_PORT", rs.port),
    ]
    if full:
        attrs += [
            ("IPVS_DEST_ATTR_FWD_METHOD", FWD_MASQ),
            ("IPVS_DEST_ATTR_WEIGHT", rs.weight),
            ("IPVS_DEST_ATTR_U_THRESH", 0),
            ("IPVS_DEST_ATTR_L_THRESH", 0),
        ]
    return attrs


def _message(cmd: int, attrs: list[tuple[str, Any]]) -> Any:
    msg = ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = GENL_VERSION
    msg["attrs"] = attrs
    return msg


_COMMANDS = {
    OpKind.ADD_SERVICE: IPVS_CMD_NEW_SERVICE,
    OpKind.UPDATE_SERVICE: IPVS_CMD_SET_SERVICE,
    OpKind.DELETE_SERVICE: IPVS_CMD_DEL_SERVICE,
    OpKind.ADD_DEST: IPVS_CMD_NEW_DEST,
    OpKind.UPDATE_DEST: IPVS_CMD_SET_DEST,
    OpKind.DELETE_DEST: IPVS_CMD_DEL_DEST,
}


def operation_message(op: Operation) -> Any:
    """The ipvsmsg that performs ``op``."""
    cmd = _COMMANDS[op.kind]
    if op.dest is None:
        full = op.kind is not OpKind.DELETE_SERVICE
        return _message(
            cmd, [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(op.service, full=full)})]
        )
    full = op.kind is not OpKind.DELETE_DEST
    return _message(
        cmd,
        [
            ("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(op.service, full=False)}),
            ("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(op.dest, full=full)}),
        ],
    )


def dump_services_message() -> Any:
    return _message(IPVS_CMD_GET_SERVICE, [])


def dump_dests_message(vs: VirtualServer) -> Any:
    return _message(
        IPVS_CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(vs, full=False)})]
    )


def flush_message() -> Any:
    return _message(IPVS_CMD_FLUSH, [])


def virtual_server_from(msg: Any) -> VirtualServer | None:
    """A service of a dump reply, or None for one this mode never makes (fwmark, other L4)."""
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    if svc is None:
        return None
    protocol = _PROTOCOLS.get(svc.get_attr("IPVS_SVC_ATTR_PROTOCOL"))
    address = svc.get_attr("IPVS_SVC_ATTR_ADDR")
    if protocol is None or not isinstance(address, str) or svc.get_attr("IPVS_SVC_ATTR_FWMARK"):
        return None
    flags = svc.get_attr("IPVS_SVC_ATTR_FLAGS") or {"flags": 0}
    persistent = bool(flags["flags"] & FLAG_PERSISTENT)
    return VirtualServer(
        protocol=protocol,
        ip=str(ipaddress.ip_address(address)),
        port=svc.get_attr("IPVS_SVC_ATTR_PORT"),
        scheduler=svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or "",
        timeout=svc.get_attr("IPVS_SVC_ATTR_TIMEOUT") if persistent else None,
    )


def real_server_from(msg: Any) -> RealServer:
    """A real server of a dump reply (forwarding method and thresholds are not compared)."""
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    return RealServer(
        ip=str(ipaddress.ip_address(dest.get_attr("IPVS_DEST_ATTR_ADDR"))),
        port=dest.get_attr("IPVS_DEST_ATTR_PORT"),
        weight=dest.get_attr("IPVS_DEST_ATTR_WEIGHT"),
    )


# --- I/O ------------------------------------------------------------------------------


class IpvsTransport(TypingProtocol):
    """Sends one IPVS generic netlink message and returns the decoded replies."""

    def request(self, msg: Any, flags: int) -> Sequence[Any]: ...

    def close(self) -> None: ...


class GenlTransport:
    """The real transport: pyroute2's generic netlink socket bound to the IPVS family."""

    def __init__(self, netns: str | None = None) -> None:
        self._sock = GenericNetlinkSocket(netns=netns) if netns else GenericNetlinkSocket()
        try:
            self._sock.bind(GENL_NAME, ipvsmsg)
        except NetlinkError as exc:
            self._sock.close()
            if exc.code == errno.ENOENT:
                raise IpvsUnavailable(NO_IPVS) from exc
            raise

    def request(self, msg: Any, flags: int) -> Sequence[Any]:
        return tuple(self._sock.nlm_request(msg, msg_type=self._sock.prid, msg_flags=flags))

    def close(self) -> None:
        self._sock.close()


class Ipvs:
    """The kernel's IPVS table, read and changed through one transport."""

    def __init__(self, transport: IpvsTransport) -> None:
        self.transport = transport

    @classmethod
    def open(cls, netns: str | None = None) -> Ipvs:
        """IPVS of the current (or the named) network namespace; IpvsUnavailable if none."""
        return cls(GenlTransport(netns))

    def services(self, family: IPFamily | None = None) -> list[VirtualServer]:
        """Every virtual service (of ``family``) with its real servers, sorted."""
        out = []
        for reply in self.transport.request(dump_services_message(), DUMP):
            vs = virtual_server_from(reply)
            if vs is None or (family is not None and vs.family is not family):
                continue
            dests = self.transport.request(dump_dests_message(vs), DUMP)
            reals = sorted(real_server_from(d) for d in dests)
            out.append(replace(vs, real_servers=tuple(reals)))
        return out

    def execute(self, operations: Iterable[Operation]) -> None:
        for op in operations:
            self.transport.request(operation_message(op), ACK)

    def flush(self) -> None:
        """Delete every virtual service (of every family), as ``ipvsadm -C``."""
        self.transport.request(flush_message(), ACK)

    def close(self) -> None:
        self.transport.close()


class DummyDevice:
    """The dummy device service addresses are bound on, through an ``IPRoute``-like object.

    ``ipr`` needs pyroute2's ``link_lookup``, ``link`` and ``addr`` (an
    ``IPRoute``, or an ``IPBatch`` that only encodes the requests).
    """

    def __init__(self, ipr: Any, name: str = DUMMY_DEVICE) -> None:
        self.ipr = ipr
        self.name = name

    @classmethod
    def open(cls, netns: str | None = None, name: str = DUMMY_DEVICE) -> DummyDevice:
        from pyroute2 import IPRoute

        return cls(IPRoute(netns=netns) if netns else IPRoute(), name)

    def index(self) -> int | None:
        found = self.ipr.link_lookup(ifname=self.name)
        return int(found[0]) if found else None

    def create(self) -> None:
        self.ipr.link("add", ifname=self.name, kind="dummy")

    def ensure(self) -> int:
        """The device's index, creating the device when it is missing."""
        index = self.index()
        if index is None:
            self.create()
            index = self.index()
            if index is None:
                raise RuntimeError(f"{self.name} was created but cannot be found")
        return index

    def addresses(self, index: int, family: IPFamily) -> set[str]:
        af = socket.AF_INET if family is IPFamily.IPV4 else socket.AF_INET6
        return {str(m.get("address")) for m in self.ipr.addr("dump", index=index, family=af)}

    def bind(self, index: int, address: str) -> None:
        """Add ``address`` as a host address (/32, /128); already there is fine."""
        try:
            self.ipr.addr("add", index=index, address=address, prefixlen=_host_prefix(address))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def unbind(self, index: int, address: str) -> None:
        """Remove ``address``; already gone is fine."""
        try:
            self.ipr.addr("del", index=index, address=address, prefixlen=_host_prefix(address))
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise

    def delete(self) -> bool:
        """Remove the device if it exists; True if it did."""
        index = self.index()
        if index is None:
            return False
        self.ipr.link("del", index=index)
        return True

    def close(self) -> None:
        self.ipr.close()


def _host_prefix(address: str) -> int:
    return 128 if ":" in address else 32


@dataclass(frozen=True)
class SyncResult:
    """What one :func:`apply` changed."""

    #: The ``ipset restore`` input that was run (empty: the sets were current).
    ipset_script: str
    operations: tuple[Operation, ...]
    bound: tuple[str, ...]
    unbound: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.ipset_script or self.operations or self.bound or self.unbound)


def apply(
    plan: IpvsPlan,
    *,
    netns: str | None = None,
    ipvs: Ipvs | None = None,
    device: DummyDevice | None = None,
) -> SyncResult:
    """Bring the kernel to ``plan``, changing only what differs (see the module docstring).

    ``ipvs`` and ``device`` default to fresh handles on ``netns`` that are closed
    afterwards; a long-running proxy passes its own to keep the sockets. Raises
    :class:`IpvsUnavailable` before changing anything when the kernel has no IPVS.
    """
    own_ipvs = ipvs is None
    handle = Ipvs.open(netns) if ipvs is None else ipvs
    own_device = device is None
    try:
        dev = DummyDevice.open(netns) if device is None else device
        try:
            index = dev.ensure()
            script = ipset.sync(plan.ipsets, netns=netns)
            iptables.apply(plan.helper, netns=netns)
            bind, unbind = address_changes(dev.addresses(index, plan.family), plan.bound_addresses)
            for address in bind:
                dev.bind(index, address)
            operations = diff(handle.services(plan.family), plan.virtual_servers)
            handle.execute(operations)
            for address in unbind:
                dev.unbind(index, address)
        finally:
            if own_device:
                dev.close()
    finally:
        if own_ipvs:
            handle.close()
    return SyncResult(script, operations, bind, unbind)


def cleanup(*, netns: str | None = None) -> None:
    """Remove what the IPVS mode leaves behind, whatever made it (both families).

    As upstream's cleanup: flush IPVS (when the kernel has it), delete the dummy
    device, remove the kube-proxy chains and their jumps (every ``KUBE-`` chain but
    the kubelet's, see :func:`kubenet.dataplane.iptables.cleanup`), then destroy the
    sets, which only works once no rule refers to them.
    """
    try:
        handle = Ipvs.open(netns)
    except IpvsUnavailable:
        pass
    else:
        try:
            handle.flush()
        finally:
            handle.close()
    device = DummyDevice.open(netns)
    try:
        device.delete()
    finally:
        device.close()
    for family in IPFamily:
        iptables.cleanup(family, netns=netns)
    names = [set_name(base, family) for family in IPFamily for base, _, _ in SETS]
    ipset.destroy(names, netns=netns)


#: The sysctls upstream's IPVS mode sets at start (strict ARP aside). ``vs/conntrack``
#: matters most: without it IPVS traffic skips conntrack, and the helper rules'
#: masquerade never happens.
SYSCTLS = {
    "net.ipv4.vs.conntrack": "1",
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.ip_forward": "1",
}


def ensure_sysctls(*, netns: str | None = None) -> list[str]:
    """Set :data:`SYSCTLS`; returns the keys that could not be set (absent without IPVS)."""
    failed = []
    for key, value in SYSCTLS.items():
        done = run(["sysctl", "-q", "-w", f"{key}={value}"], netns=netns, check=False)
        if done.returncode != 0:
            failed.append(key)
    return failed


def missing_ipvs(netns: str | None = None) -> str | None:
    """Why IPVS cannot be programmed here, or None when it can."""
    try:
        Ipvs.open(netns).close()
    except IpvsUnavailable as exc:
        return str(exc)
    except (NetlinkError, OSError) as exc:
        return f"IPVS cannot be reached: {exc}"
    return None
