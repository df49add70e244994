"""IPVS programming: the operations a sync computes, the netlink messages it sends, the kernel.

The kernel on our machines has no IPVS and no dummy interfaces, so most of this file
checks the messages themselves: every IPVS message the dataplane builds is encoded by
pyroute2 (as its socket encodes a request before sending it), captured as bytes,
decoded again and its attributes asserted. The thing under test is message
construction and the reading of replies, not a kernel: the recording transport below
stands in for the socket only, and answers dumps with replies encoded the way the
kernel's are. Device and address requests go through pyroute2's ``IPBatch``, which
runs the real ``IPRoute`` request code and keeps the bytes instead of sending them.

What the kernel here can do is done for real: binding and unbinding addresses
(on a veth, since a dummy device cannot be made), and refusing a sync cleanly when
IPVS is missing. The live IPVS tests skip with the probe's reason and run wherever
the kernel has IPVS.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from pyroute2.iproute.linux import IPBatch
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.generic.ipvs import (
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
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from kubenet.dataplane import ipset, ipvs
from kubenet.dataplane.ipvs import (
    FLAG_HASHED,
    FLAG_PERSISTENT,
    DummyDevice,
    Ipvs,
    IpvsUnavailable,
    Operation,
    OpKind,
    address_changes,
    diff,
)
from kubenet.model import IPFamily, Protocol, ServiceMap
from kubenet.render.ipvs import RealServer, VirtualServer, render
from kubenet.testing.netns import Netns
from tests.scenarios import BASE_OPTIONS, ep, svc

TCP, UDP = Protocol.TCP, Protocol.UDP


def vs(
    ip: str = "10.96.0.10",
    port: int = 80,
    *reals: tuple[str, int] | tuple[str, int, int],
    protocol: Protocol = TCP,
    scheduler: str = "rr",
    timeout: int | None = None,
) -> VirtualServer:
    return VirtualServer(
        protocol, ip, port, scheduler, timeout, tuple(RealServer(*r) for r in reals)
    )


# ------------------------------------------------------------------ operations (pure)


def test_no_difference_no_operations() -> None:
    table = [vs("10.96.0.10", 80, ("10.244.1.2", 8080)), vs("10.96.0.11", 53, protocol=UDP)]
    assert diff(table, list(table)) == ()


def test_a_new_service_is_added_with_its_real_servers() -> None:
    new = vs("10.96.0.10", 80, ("10.244.1.2", 8080), ("10.244.1.3", 8080))
    assert diff([], [new]) == (
        Operation(OpKind.ADD_SERVICE, new),
        Operation(OpKind.ADD_DEST, new, RealServer("10.244.1.2", 8080)),
        Operation(OpKind.ADD_DEST, new, RealServer("10.244.1.3", 8080)),
    )


def test_changes_touch_only_what_changed() -> None:
    old = [
        vs("10.96.0.10", 80, ("10.244.1.2", 8080), ("10.244.1.3", 8080)),
        vs("10.96.0.11", 80, ("10.244.1.2", 8080)),
        vs("10.96.0.12", 80, ("10.244.1.2", 8080)),
        vs("10.96.0.99", 80, ("10.244.1.9", 8080)),
    ]
    new = [
        # One endpoint replaced.
        vs("10.96.0.10", 80, ("10.244.1.2", 8080), ("10.244.1.4", 8080)),
        # Affinity switched on: the service changes, its real server does not.
        vs("10.96.0.11", 80, ("10.244.1.2", 8080), timeout=600),
        # A weight changed.
        vs("10.96.0.12", 80, ("10.244.1.2", 8080, 2)),
        # The same address on another port is another service.
        vs("10.96.0.99", 81, ("10.244.1.9", 8080)),
    ]
    assert [str(op) for op in diff(old, new)] == [
        "-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 1",
        "-E -t 10.96.0.11:80 -s rr -p 600",
        "-e -t 10.96.0.12:80 -r 10.244.1.2:8080 -m -w 2",
        "-A -t 10.96.0.99:81 -s rr",
        "-a -t 10.96.0.99:81 -r 10.244.1.9:8080 -m -w 1",
        # Removals last: a service never passes through having no real server.
        "-d -t 10.96.0.10:80 -r 10.244.1.3:8080",
        "-D -t 10.96.0.99:80",
    ]


def test_scheduler_change_updates_the_service() -> None:
    ops = diff([vs(scheduler="rr")], [vs(scheduler="lc")])
    assert [op.kind for op in ops] == [OpKind.UPDATE_SERVICE]


def test_address_changes() -> None:
    bind, unbind = address_changes(
        ["10.96.0.10", "10.96.0.9", "fd00:96:0::10"], ["10.96.0.10", "10.96.0.100", "10.96.0.11"]
    )
    assert bind == ("10.96.0.11", "10.96.0.100")
    assert unbind == ("10.96.0.9", "fd00:96::10")


# ------------------------------------------------------------------ IPVS messages


class RecordingTransport:
    """Stands in for the socket: encodes as pyroute2 does before sending, and keeps the bytes.

    Dumps are answered from ``table`` with replies built and encoded as the kernel's
    (a service carries the HASHED flag and statistics, a destination its counters),
    then decoded as the socket decodes what it receives.
    """

    FAMILY_ID = 0x1D

    def __init__(self, table: Sequence[VirtualServer] = ()) -> None:
        self.table = list(table)
        self.sent: list[bytes] = []
        self.flags: list[int] = []
        self._seq = 0

    def request(self, msg: Any, flags: int) -> Sequence[Any]:
        self._seq += 1
        msg["header"]["type"] = self.FAMILY_ID
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg["header"]["pid"] = 4242
        msg.reset()
        msg.encode()
        self.sent.append(bytes(msg.data))
        self.flags.append(flags)
        if not flags & NLM_F_DUMP:
            return ()
        sent = decode(self.sent[-1])
        if sent["cmd"] == IPVS_CMD_GET_SERVICE:
            return [_reply(_kernel_service(v)) for v in self.table]
        key = _svc_key(sent.get_attr("IPVS_CMD_ATTR_SERVICE"))
        match = next(v for v in self.table if _key_of(v) == key)
        return [_reply(_kernel_dest(rs)) for rs in match.real_servers]

    def close(self) -> None:
        pass

    def messages(self) -> list[Any]:
        return [decode(data) for data in self.sent]


def decode(data: bytes) -> Any:
    msg = ipvsmsg(data)
    msg.decode()
    return msg


def _reply(attrs: list[tuple[str, Any]]) -> Any:
    msg = ipvsmsg()
    msg["cmd"] = (
        IPVS_CMD_NEW_SERVICE if attrs[0][0] == "IPVS_CMD_ATTR_SERVICE" else IPVS_CMD_NEW_DEST
    )
    msg["version"] = 1
    msg["attrs"] = attrs
    msg["header"]["type"] = RecordingTransport.FAMILY_ID
    msg["header"]["flags"] = 2  # NLM_F_MULTI
    msg.encode()
    return decode(bytes(msg.data))


def _stats() -> dict[str, Any]:
    return {"attrs": [("IPVS_STATS_ATTR_CONNS", 3), ("IPVS_STATS_ATTR_INPKTS", 7)]}


def _kernel_service(v: VirtualServer) -> list[tuple[str, Any]]:
    af = socket.AF_INET6 if ":" in v.ip else socket.AF_INET
    flags = FLAG_HASHED | (FLAG_PERSISTENT if v.timeout is not None else 0)
    return [
        (
            "IPVS_CMD_ATTR_SERVICE",
            {
                "attrs": [
                    ("IPVS_SVC_ATTR_AF", af),
                    ("IPVS_SVC_ATTR_PROTOCOL", {TCP: 6, UDP: 17, Protocol.SCTP: 132}[v.protocol]),
                    ("IPVS_SVC_ATTR_ADDR", v.ip),
                    ("IPVS_SVC_ATTR_PORT", v.port),
                    ("IPVS_SVC_ATTR_SCHED_NAME", v.scheduler),
                    ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
                    ("IPVS_SVC_ATTR_TIMEOUT", v.timeout or 0),
                    ("IPVS_SVC_ATTR_NETMASK", "255.255.255.255"),
                    ("IPVS_SVC_ATTR_STATS", _stats()),
                ]
            },
        )
    ]


def _kernel_dest(rs: RealServer) -> list[tuple[str, Any]]:
    return [
        (
            "IPVS_CMD_ATTR_DEST",
            {
                "attrs": [
                    (
                        "IPVS_DEST_ATTR_ADDR_FAMILY",
                        socket.AF_INET6 if ":" in rs.ip else socket.AF_INET,
                    ),
                    ("IPVS_DEST_ATTR_ADDR", rs.ip),
                    ("IPVS_DEST_ATTR_PORT", rs.port),
                    ("IPVS_DEST_ATTR_FWD_METHOD", 0),
                    ("IPVS_DEST_ATTR_WEIGHT", rs.weight),
                    ("IPVS_DEST_ATTR_U_THRESH", 0),
                    ("IPVS_DEST_ATTR_L_THRESH", 0),
                    ("IPVS_DEST_ATTR_ACTIVE_CONNS", 1),
                    ("IPVS_DEST_ATTR_INACT_CONNS", 0),
                    ("IPVS_DEST_ATTR_PERSIST_CONNS", 0),
                    ("IPVS_DEST_ATTR_STATS", _stats()),
                ]
            },
        )
    ]


def _key_of(v: VirtualServer) -> tuple[int, int, str, int]:
    af = socket.AF_INET6 if ":" in v.ip else socket.AF_INET
    return (af, {TCP: 6, UDP: 17, Protocol.SCTP: 132}[v.protocol], v.ip, v.port)


def _svc_key(svc: Any) -> tuple[int, int, str, int]:
    return (
        svc.get_attr("IPVS_SVC_ATTR_AF"),
        svc.get_attr("IPVS_SVC_ATTR_PROTOCOL"),
        svc.get_attr("IPVS_SVC_ATTR_ADDR"),
        svc.get_attr("IPVS_SVC_ATTR_PORT"),
    )


def svc_attrs(msg: Any) -> dict[str, Any]:
    return dict(msg.get_attr("IPVS_CMD_ATTR_SERVICE")["attrs"])


def dest_attrs(msg: Any) -> dict[str, Any]:
    return dict(msg.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])


def sent_for(*operations: Operation) -> list[Any]:
    transport = RecordingTransport()
    Ipvs(transport).execute(operations)
    assert transport.flags == [NLM_F_REQUEST | NLM_F_ACK] * len(operations)
    return transport.messages()


def test_adding_a_persistent_ipv4_service() -> None:
    (msg,) = sent_for(
        Operation(OpKind.ADD_SERVICE, vs("10.96.0.70", 80, scheduler="sh", timeout=600))
    )
    assert (msg["cmd"], msg["version"], msg["header"]["type"]) == (IPVS_CMD_NEW_SERVICE, 1, 0x1D)
    assert svc_attrs(msg) == {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": socket.IPPROTO_TCP,
        "IPVS_SVC_ATTR_ADDR": "10.96.0.70",
        "IPVS_SVC_ATTR_PORT": 80,
        "IPVS_SVC_ATTR_SCHED_NAME": "sh",
        "IPVS_SVC_ATTR_FLAGS": {"flags": FLAG_PERSISTENT, "mask": 0xFFFFFFFF},
        "IPVS_SVC_ATTR_TIMEOUT": 600,
        "IPVS_SVC_ATTR_NETMASK": "255.255.255.255",
    }
    assert msg.get_attr("IPVS_CMD_ATTR_DEST") is None


def test_an_ipv6_udp_service_carries_its_prefix_length_as_the_kernel_reads_it() -> None:
    (msg,) = sent_for(Operation(OpKind.UPDATE_SERVICE, vs("fd00:96::53", 53, protocol=UDP)))
    attrs = svc_attrs(msg)
    assert msg["cmd"] == IPVS_CMD_SET_SERVICE
    assert (attrs["IPVS_SVC_ATTR_AF"], attrs["IPVS_SVC_ATTR_PROTOCOL"]) == (socket.AF_INET6, 17)
    assert (attrs["IPVS_SVC_ATTR_ADDR"], attrs["IPVS_SVC_ATTR_PORT"]) == ("fd00:96::53", 53)
    assert attrs["IPVS_SVC_ATTR_FLAGS"]["flags"] == 0 and attrs["IPVS_SVC_ATTR_TIMEOUT"] == 0
    # The kernel takes the four bytes as a host-order prefix length, which must be 128.
    raw = ipaddress.IPv4Address(attrs["IPVS_SVC_ATTR_NETMASK"]).packed
    assert struct.unpack("=I", raw) == (128,)


def test_real_server_messages_name_the_service_by_its_key() -> None:
    service = vs("10.96.0.10", 80, protocol=Protocol.SCTP, timeout=60)
    add, update, delete = sent_for(
        Operation(OpKind.ADD_DEST, service, RealServer("10.244.1.2", 8080)),
        Operation(OpKind.UPDATE_DEST, service, RealServer("10.244.1.2", 8080, 5)),
        Operation(OpKind.DELETE_DEST, service, RealServer("10.244.1.2", 8080)),
    )
    assert [m["cmd"] for m in (add, update, delete)] == [
        IPVS_CMD_NEW_DEST,
        IPVS_CMD_SET_DEST,
        IPVS_CMD_DEL_DEST,
    ]
    key = {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": 132,
        "IPVS_SVC_ATTR_ADDR": "10.96.0.10",
        "IPVS_SVC_ATTR_PORT": 80,
    }
    assert svc_attrs(add) == svc_attrs(update) == svc_attrs(delete) == key
    assert dest_attrs(add) == {
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET,
        "IPVS_DEST_ATTR_ADDR": "10.244.1.2",
        "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_FWD_METHOD": 0,  # IP_VS_CONN_F_MASQ: NAT
        "IPVS_DEST_ATTR_WEIGHT": 1,
        "IPVS_DEST_ATTR_U_THRESH": 0,
        "IPVS_DEST_ATTR_L_THRESH": 0,
    }
    assert dest_attrs(update)["IPVS_DEST_ATTR_WEIGHT"] == 5
    assert dest_attrs(delete) == {
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET,
        "IPVS_DEST_ATTR_ADDR": "10.244.1.2",
        "IPVS_DEST_ATTR_PORT": 8080,
    }


def test_deleting_a_service_names_only_its_key_and_flush_names_nothing() -> None:
    (delete,) = sent_for(Operation(OpKind.DELETE_SERVICE, vs("fd00:96::1", 443)))
    assert delete["cmd"] == IPVS_CMD_DEL_SERVICE
    assert set(svc_attrs(delete)) == {
        "IPVS_SVC_ATTR_AF",
        "IPVS_SVC_ATTR_PROTOCOL",
        "IPVS_SVC_ATTR_ADDR",
        "IPVS_SVC_ATTR_PORT",
    }
    transport = RecordingTransport()
    Ipvs(transport).flush()
    (flush,) = transport.messages()
    assert (flush["cmd"], flush["attrs"]) == (IPVS_CMD_FLUSH, [])


def test_reading_the_table_back() -> None:
    kernel = [
        vs("10.96.0.10", 80, ("10.244.1.3", 8080, 2), ("10.244.1.2", 8080)),
        vs("10.96.0.70", 80, timeout=10800, scheduler="lc"),
        vs("fd00:96::10", 80, ("fd00:244:1::2", 8080)),
    ]
    transport = RecordingTransport(kernel)
    got = Ipvs(transport).services(IPFamily.IPV4)
    assert got == [
        vs("10.96.0.10", 80, ("10.244.1.2", 8080), ("10.244.1.3", 8080, 2)),
        vs("10.96.0.70", 80, timeout=10800, scheduler="lc"),
    ]
    sent = transport.messages()
    assert [m["cmd"] for m in sent] == [IPVS_CMD_GET_SERVICE, IPVS_CMD_GET_DEST, IPVS_CMD_GET_DEST]
    assert transport.flags == [NLM_F_REQUEST | NLM_F_DUMP] * 3
    assert svc_attrs(sent[1])["IPVS_SVC_ATTR_ADDR"] == "10.96.0.10"
    assert Ipvs(RecordingTransport(kernel)).services(IPFamily.IPV6) == [kernel[2]]


def test_a_sync_sends_exactly_the_difference() -> None:
    options = BASE_OPTIONS
    before = ServiceMap.of(
        [
            svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-b"))),
            svc("old", "10.96.0.99", (ep("pod-a"),)),
        ]
    )
    after = ServiceMap.of(
        [
            svc("web", "10.96.0.10", (ep("pod-a"), ep("pod-r"))),
            svc("new", "10.96.0.50", (ep("pod-b"),), affinity=300),
        ]
    )
    kernel = list(render(before, options).virtual_servers)
    transport = RecordingTransport(kernel)
    handle = Ipvs(transport)
    operations = diff(handle.services(IPFamily.IPV4), render(after, options).virtual_servers)
    reads = len(transport.sent)
    handle.execute(operations)
    changes = [
        (
            m["cmd"],
            svc_attrs(m)["IPVS_SVC_ATTR_ADDR"],
            dest_attrs(m)["IPVS_DEST_ATTR_ADDR"] if m.get_attr("IPVS_CMD_ATTR_DEST") else None,
        )
        for m in transport.messages()[reads:]
    ]
    assert changes == [
        (IPVS_CMD_NEW_SERVICE, "10.96.0.50", None),
        (IPVS_CMD_NEW_DEST, "10.96.0.50", "10.244.1.3"),
        (IPVS_CMD_NEW_DEST, "10.96.0.10", "10.244.2.2"),
        (IPVS_CMD_DEL_DEST, "10.96.0.10", "10.244.1.3"),
        (IPVS_CMD_DEL_SERVICE, "10.96.0.99", None),
    ]
    new = transport.messages()[reads]
    assert svc_attrs(new)["IPVS_SVC_ATTR_TIMEOUT"] == 300


# ------------------------------------------------------------------ device and address messages


@pytest.fixture
def batch() -> Iterator[Any]:
    ipb = IPBatch()
    try:
        yield ipb
    finally:
        ipb.close()


def rtnl(batch: Any) -> list[Any]:
    return list(MarshalRtnl().parse(bytes(batch.batch)))


def test_creating_the_dummy_device(batch: Any) -> None:
    DummyDevice(batch).create()
    (msg,) = rtnl(batch)
    assert msg["header"]["type"] == RTM_NEWLINK
    assert msg.get_attr("IFLA_IFNAME") == "kube-ipvs0"
    assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "dummy"


def test_binding_and_unbinding_addresses(batch: Any) -> None:
    device = DummyDevice(batch)
    device.bind(7, "10.96.0.10")
    device.bind(7, "fd00:96::10")
    device.unbind(7, "10.96.0.10")
    add4, add6, del4 = rtnl(batch)
    assert [m["header"]["type"] for m in (add4, add6, del4)] == [
        RTM_NEWADDR,
        RTM_NEWADDR,
        RTM_DELADDR,
    ]
    assert (add4["family"], add4["prefixlen"], add4["index"]) == (socket.AF_INET, 32, 7)
    assert add4.get_attr("IFA_LOCAL") == add4.get_attr("IFA_ADDRESS") == "10.96.0.10"
    assert (add6["family"], add6["prefixlen"], add6["index"]) == (socket.AF_INET6, 128, 7)
    assert add6.get_attr("IFA_ADDRESS") == "fd00:96::10"
    assert (del4["prefixlen"], del4.get_attr("IFA_ADDRESS")) == (32, "10.96.0.10")


# ------------------------------------------------------------------ on the kernel


@pytest.fixture
def netns(ipset_kernel: None) -> Iterator[Netns]:
    with Netns("ipvsd") as ns:
        ns.sysctl({"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})
        yield ns


@pytest.mark.kernel
def test_addresses_bind_and_unbind_on_a_real_device(netns: Netns) -> None:
    # A dummy device cannot be made here; any device takes addresses the same way.
    netns.ip(["link add kn-vip type veth peer name kn-peer", "link set kn-vip up"])
    device = DummyDevice.open(netns.name, name="kn-vip")
    try:
        index = device.ensure()
        for family, addresses in (
            (IPFamily.IPV4, ["10.96.0.10", "10.96.0.11"]),
            (IPFamily.IPV6, ["fd00:96::10"]),
        ):
            bind, unbind = address_changes(device.addresses(index, family), addresses)
            assert (bind, unbind) == (tuple(addresses), ())
            for address in bind:
                device.bind(index, address)
            device.bind(index, addresses[0])  # already there: fine
            assert device.addresses(index, family) >= set(addresses)
        shown = netns.run(["ip", "-o", "address", "show", "dev", "kn-vip"]).stdout
        assert "10.96.0.10/32" in shown and "fd00:96::10/128" in shown
        _, unbind = address_changes(device.addresses(index, IPFamily.IPV4), ["10.96.0.11"])
        assert unbind == ("10.96.0.10",)
        device.unbind(index, "10.96.0.10")
        device.unbind(index, "10.96.0.10")  # already gone: fine
        assert device.addresses(index, IPFamily.IPV4) == {"10.96.0.11"}
    finally:
        device.close()


def _dummy_missing(ns: Netns) -> str | None:
    done = ns.run(["ip", "link", "add", "kn-probe", "type", "dummy"], check=False)
    if done.returncode != 0:
        return f"this kernel has no dummy interfaces ({done.stderr.strip()})"
    ns.run(["ip", "link", "del", "kn-probe"])
    return None


@pytest.mark.kernel
def test_the_dummy_device_is_created_once_and_deleted(netns: Netns) -> None:
    reason = _dummy_missing(netns)
    if reason:
        pytest.skip(reason)
    device = DummyDevice.open(netns.name)
    try:
        index = device.ensure()
        assert device.ensure() == index
        assert "kube-ipvs0" in netns.run(["ip", "link", "show", "kube-ipvs0"]).stdout
        assert device.delete() and not device.delete()
    finally:
        device.close()


@pytest.mark.kernel
def test_without_ipvs_a_sync_fails_before_touching_anything(netns: Netns) -> None:
    if ipvs.missing_ipvs(netns.name) is None:
        pytest.skip("this kernel has IPVS; the refusal cannot be seen here")
    plan = render(ServiceMap.of([svc("web", "10.96.0.10", (ep("pod-a"),))]), BASE_OPTIONS)
    with pytest.raises(IpvsUnavailable, match="no IPVS"):
        ipvs.apply(plan, netns=netns.name)
    assert ipset.parse_save(ipset.save(netns=netns.name)) == {}
    assert "KUBE-" not in netns.run(["iptables-save"]).stdout


@pytest.mark.kernel
def test_sysctls_are_set_where_they_exist(netns: Netns) -> None:
    netns.sysctl({"net.ipv4.ip_forward": "0"})
    failed = ipvs.ensure_sysctls(netns=netns.name)
    assert netns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    has_ipvs = ipvs.missing_ipvs(netns.name) is None
    assert failed == ([] if has_ipvs else [k for k in ipvs.SYSCTLS if ".vs." in k])


@pytest.fixture
def ipvs_netns(netns: Netns) -> Netns:
    reason = ipvs.missing_ipvs(netns.name) or _dummy_missing(netns)
    if reason:
        pytest.skip(reason)
    return netns


@pytest.mark.kernel
@pytest.mark.parametrize("family", list(IPFamily))
def test_live_sync_programs_the_plan_and_then_only_changes(
    ipvs_netns: Netns, family: IPFamily
) -> None:
    options = replace(BASE_OPTIONS, ip_family=family)
    six = family is IPFamily.IPV6
    web = svc(
        "web",
        ("10.96.0.10", "fd00:96::10"),
        (ep("pod-a", ipv6=six), ep("pod-r", ipv6=six)),
        node_port=30080,
        affinity=600,
    )
    first = render(ServiceMap.of([web]), options)
    result = ipvs.apply(first, netns=ipvs_netns.name)
    assert result.changed and result.bound == first.bound_addresses
    handle = Ipvs.open(ipvs_netns.name)
    try:
        assert sorted(handle.services(family), key=lambda v: v.key) == sorted(
            first.virtual_servers, key=lambda v: v.key
        )
        assert not ipvs.apply(first, netns=ipvs_netns.name, ipvs=handle).changed
        second = render(ServiceMap.of([replace(web, affinity_timeout=None)]), options)
        again = ipvs.apply(second, netns=ipvs_netns.name, ipvs=handle)
        assert {op.kind for op in again.operations} == {OpKind.UPDATE_SERVICE}
        assert again.ipset_script == "" and again.bound == again.unbound == ()
    finally:
        handle.close()
    ipvs.cleanup(netns=ipvs_netns.name)
    assert Ipvs.open(ipvs_netns.name).services() == []
