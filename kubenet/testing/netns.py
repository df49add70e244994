"""Network-namespace topologies for kernel tests: a node, a client and pods, wired with veths.

The picture (addresses of :data:`DEFAULT_TOPOLOGY`, the scenario suite's)::

    client 10.180.0.2 ──(kn-client)── node 10.180.0.1 ──(kn-pod-a)── pod-a 10.244.1.2
                                        forwarding on    ──(kn-pod-b)── pod-b 10.244.1.3
                                                         ──(kn-pod-c)── pod-c 10.244.1.4
                                                         ──(kn-pod-r)── pod-r 10.244.2.2

The node routes each pod address (/32, /128) to that pod's veth, as a routed CNI does.
A pod's default route goes through a gateway that exists only on the link:
169.254.1.1 with a permanent neighbour entry for IPv4 and fe80::1 on the node side
for IPv6. The node-side pod veths carry no IPv4 address and no global IPv6 address,
so a MASQUERADE towards a pod picks the node address (10.180.0.1 / fd00:180::1),
as it would pick the node's primary address on a real node. The node's own default
route points at the client, which does not forward: traffic nobody claims dies there.
Node-side interfaces are named ``kn-<member>`` so interface-prefix local detection
(``kn-pod``) has something to match.

Every namespace is named ``kn-<role>-<random>`` and removed by :meth:`Topology.close`
(or leaving :func:`build`), together with every process started in it, also when a
test fails or is interrupted.

Clients do not spawn a process per connection: each :class:`Netns` keeps one worker
thread that has entered the namespace (a network namespace is a per-thread property
in Linux), and sockets are created there. A socket stays in the namespace it was
created in whichever thread then uses it, so the test thread connects, sends and
receives with ordinary socket calls, at thread speed.
"""

from __future__ import annotations

import atexit
import enum
import errno
import ipaddress
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from pyroute2 import netns as pyroute2_netns

from kubenet.dataplane.command import CommandError, run
from kubenet.model import Protocol
from kubenet.testing.podserver import READY, Reply, parse_reply

T = TypeVar("T")

#: Every namespace the harness makes starts with this.
NETNS_PREFIX = "kn-"

#: The MAC of every node-side pod veth; pods pin their IPv4 gateway to it.
GATEWAY_MAC = "02:6b:6e:00:00:01"
GATEWAY_IPV4 = "169.254.1.1"
GATEWAY_IPV6 = "fe80::1"

_NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    # As kube-proxy sets it: NodePorts must answer on 127.0.0.1.
    "net.ipv4.conf.all.route_localnet": "1",
    # Test reliability, not kube-proxy: an ICMP redirect for a dropped packet spends the
    # same per-host token bucket as ICMP errors, which could then swallow the "port
    # unreachable" of a REJECT that the test is waiting for.
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv6.icmp.ratelimit": "0",
}
_COMMON_SYSCTLS = {
    # Addresses are usable at once: no duplicate address detection delay.
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    # Pod replies arrive on a veth with no address of their family; strict
    # reverse-path filtering would drop some of them.
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}

_POD_SYSCTLS = {
    # Test reliability, not kube-proxy: pods keep no TIME_WAIT sockets. One client here
    # opens up to a hundred connections a second to the same pods through
    # "masquerade fully-random" (as kube-proxy's), and a port a pod still holds in
    # TIME_WAIT (its conntrack entry gone: the client reused its own source port, or a
    # test flushed the table) gets the new SYN answered with an ACK for the old
    # connection. Measured: about 1 connection in 100 waited a second for a SYN
    # retransmission, and one run in ten of the node-proxy run tests saw a refused
    # connection in its streams; with this, neither (11,000 connections, 8 runs).
    "net.ipv4.tcp_max_tw_buckets": "0",
}


def netns_name(role: str) -> str:
    """A fresh namespace name: ``kn-<role>-<random>``."""
    return f"{NETNS_PREFIX}{role}-{secrets.token_hex(3)}"


def _enter_netns(name: str) -> None:
    # Runs on the worker thread only: setns() moves the calling thread alone.
    pyroute2_netns.setns(name, flags=0)


def call_in_netns(name: str, fn: Callable[[], T], timeout: float = 120.0) -> T:
    """``fn()`` on a new thread that has entered the namespace ``name``; its result.

    Netlink sockets, libnftables contexts and the kernel tools a thread starts all
    belong to that thread's namespace, so code written for "this namespace" runs
    unchanged. ``fn``'s exception is raised here.
    """
    out: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            _enter_netns(name)
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name=f"in-{name}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"still running in {name} after {timeout:.0f}s")
    if errors:
        raise errors[0]
    return out[0]


class Netns:
    """A network namespace made by this process; :meth:`close` removes it."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.name = netns_name(role)
        run(["ip", "netns", "add", self.name])
        self._worker: ThreadPoolExecutor | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def __enter__(self) -> Netns:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return run(argv, netns=self.name, stdin=stdin, check=check)

    def ip(self, lines: Iterable[str]) -> None:
        """Run ``ip`` commands (without the leading ``ip``) in one ``ip -batch``."""
        run(["ip", "-n", self.name, "-batch", "-"], stdin="".join(f"{ln}\n" for ln in lines))

    def sysctl(self, values: Mapping[str, str]) -> None:
        """Set sysctls inside the namespace."""
        if values:
            self.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])

    def call(self, fn: Callable[[], T], timeout: float = 120.0) -> T:
        """``fn()`` on a thread inside this namespace (:func:`call_in_netns`)."""
        return call_in_netns(self.name, fn, timeout)

    def socket(self, family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
        """A new socket that lives in this namespace."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=self.name,
                initializer=_enter_netns,
                initargs=(self.name,),
            )
        return self._worker.submit(socket.socket, family, kind).result()

    def request(
        self,
        protocol: Protocol,
        dst: str,
        port: int,
        *,
        src: str | None = None,
        timeout: float = 1.0,
    ) -> Attempt:
        """One TCP connection or UDP exchange from this namespace to ``dst:port``."""
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        if protocol is Protocol.TCP:
            kind = socket.SOCK_STREAM
        elif protocol is Protocol.UDP:
            kind = socket.SOCK_DGRAM
        else:
            raise ValueError(f"no client for {protocol.value}")
        with self.socket(family, kind) as sock:
            sock.settimeout(timeout)
            if src is not None:
                sock.bind((src, 0))
            try:
                sock.connect((dst, port))
                if kind == socket.SOCK_DGRAM:
                    sock.send(b"hello\n")
                    data = sock.recv(2048)
                else:
                    data = _read_to_eof(sock)
            except ConnectionRefusedError:
                return Attempt(Outcome.REFUSED)
            except TimeoutError:
                return Attempt(Outcome.TIMEOUT)
            except OSError as exc:
                if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                    return Attempt(Outcome.UNREACHABLE)
                raise
        return Attempt(Outcome.REPLY, parse_reply(data))

    def close(self) -> None:
        """Stop the worker thread and delete the namespace (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            # The worker thread pins the namespace alive; end it first.
            self._worker.shutdown(wait=True)
        run(["ip", "netns", "delete", self.name], check=False)


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


class Outcome(enum.StrEnum):
    """How one connection attempt ended."""

    REPLY = "reply"
    #: Connection refused: TCP RST or ICMP port unreachable (a REJECT).
    REFUSED = "refused"
    #: ICMP host or network unreachable.
    UNREACHABLE = "unreachable"
    #: No answer within the timeout (a DROP).
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one connection attempt and, for REPLY, what the server said."""

    outcome: Outcome
    reply: Reply | None = None


class PodServer:
    """A :mod:`kubenet.testing.podserver` process running in a namespace."""

    def __init__(
        self, ns: Netns, name: str, addresses: Sequence[str], ports: Sequence[int]
    ) -> None:
        self.name = name
        argv = [sys.executable, "-m", "kubenet.testing.podserver", name]
        argv += [arg for a in addresses for arg in ("--address", a)]
        argv += [arg for p in ports for arg in ("--port", str(p))]
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server has bound every socket; raise if it died or hung."""
        stdout = self._proc.stdout
        assert stdout is not None
        readable, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().strip() if readable else ""
        if line != READY:
            self.stop()
            stderr = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"pod server {self.name} did not start: {stderr.strip()}")

    def stop(self) -> None:
        """End the process: close its input (it exits on EOF), then insist."""
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class PodSpec:
    """A pod of the topology: its name (namespace role) and its addresses, one per family."""

    name: str
    ipv4: str
    ipv6: str

    @property
    def addresses(self) -> tuple[str, str]:
        return (self.ipv4, self.ipv6)


@dataclass(frozen=True)
class TopologySpec:
    """What :func:`build` makes. Node and client addresses carry their prefix length."""

    node: tuple[str, str] = ("10.180.0.1/24", "fd00:180::1/64")
    client: tuple[str, str] = ("10.180.0.2/24", "fd00:180::2/64")
    pods: tuple[PodSpec, ...] = (
        PodSpec("pod-a", "10.244.1.2", "fd00:244:1::2"),
        PodSpec("pod-b", "10.244.1.3", "fd00:244:1::3"),
        PodSpec("pod-c", "10.244.1.4", "fd00:244:1::4"),
        PodSpec("pod-r", "10.244.2.2", "fd00:244:2::2"),
    )
    #: Every pod listens on each of these, TCP and UDP.
    ports: tuple[int, ...] = (8080, 9090)

    @property
    def node_ips(self) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_interface(a).ip) for a in self.node)

    @property
    def client_ips(self) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_interface(a).ip) for a in self.client)


DEFAULT_TOPOLOGY = TopologySpec()


@dataclass
class Topology:
    """The namespaces of a built :class:`TopologySpec`; use through :func:`build`."""

    spec: TopologySpec
    node: Netns
    client: Netns
    pods: dict[str, Netns]

    @property
    def namespaces(self) -> tuple[Netns, ...]:
        return (self.node, self.client, *self.pods.values())

    def owner(self, ip: str) -> Netns:
        """The namespace that owns an address (so traffic from it is sent there)."""
        if ip in self.spec.node_ips or ipaddress.ip_address(ip).is_loopback:
            return self.node
        if ip in self.spec.client_ips:
            return self.client
        for pod in self.spec.pods:
            if ip in pod.addresses:
                return self.pods[pod.name]
        raise KeyError(f"no namespace of the topology owns {ip}")

    def pod_of(self, ip: str) -> str | None:
        """The pod name that owns an address, if any."""
        return next((p.name for p in self.spec.pods if ip in p.addresses), None)

    def request(
        self, protocol: Protocol, src: str, dst: str, port: int, *, timeout: float = 1.0
    ) -> Attempt:
        """Send from the namespace owning ``src``, bound to ``src``."""
        return self.owner(src).request(protocol, dst, port, src=src, timeout=timeout)

    @contextmanager
    def server(self, ns: Netns, name: str, ports: Sequence[int]) -> Iterator[PodServer]:
        """An extra pod server in ``ns`` on the addresses of the topology it owns."""
        srv = PodServer(ns, name, self._addresses_of(ns), ports)
        try:
            srv.wait_ready()
            yield srv
        finally:
            srv.stop()

    def _addresses_of(self, ns: Netns) -> tuple[str, ...]:
        if ns is self.node:
            return self.spec.node_ips
        if ns is self.client:
            return self.spec.client_ips
        return next(p.addresses for p in self.spec.pods if self.pods[p.name] is ns)


def _wire(topo: Topology) -> None:
    spec = topo.spec
    for ns in topo.namespaces:
        ns.sysctl(_COMMON_SYSCTLS)
    topo.node.sysctl(_NODE_SYSCTLS)
    for pod_ns in topo.pods.values():
        pod_ns.sysctl(_POD_SYSCTLS)

    client_ips = spec.client_ips
    node_ips = spec.node_ips
    node = ["link set lo up"]
    node.append(f"link add kn-client type veth peer name eth0 netns {topo.client.name}")
    node += [
        f"address add {a} dev kn-client nodad" if ":" in a else f"address add {a} dev kn-client"
        for a in spec.node
    ]
    node.append("link set kn-client up")
    for pod in spec.pods:
        dev = f"kn-{pod.name}"
        peer = topo.pods[pod.name].name
        node.append(f"link add {dev} address {GATEWAY_MAC} type veth peer name eth0 netns {peer}")
        node.append(f"address add {GATEWAY_IPV6}/64 dev {dev} nodad")
        node.append(f"link set {dev} up")
        node.append(f"route add {pod.ipv4}/32 dev {dev}")
        node.append(f"route add {pod.ipv6}/128 dev {dev}")
    node.append(f"route add default via {client_ips[0]}")
    node.append(f"route add ::/0 via {client_ips[1]}")
    topo.node.ip(node)

    client = ["link set lo up"]
    client += [
        f"address add {a} dev eth0 nodad" if ":" in a else f"address add {a} dev eth0"
        for a in spec.client
    ]
    client += [
        "link set eth0 up",
        f"route add default via {node_ips[0]}",
        f"route add ::/0 via {node_ips[1]}",
    ]
    topo.client.ip(client)

    for pod in spec.pods:
        topo.pods[pod.name].ip(
            [
                "link set lo up",
                f"address add {pod.ipv4}/32 dev eth0",
                f"address add {pod.ipv6}/128 dev eth0 nodad",
                "link set eth0 up",
                f"route add {GATEWAY_IPV4} dev eth0 scope link",
                f"neighbour add {GATEWAY_IPV4} lladdr {GATEWAY_MAC} dev eth0 nud permanent",
                f"route add default via {GATEWAY_IPV4} dev eth0",
                f"route add ::/0 via {GATEWAY_IPV6} dev eth0",
            ]
        )


@contextmanager
def build(spec: TopologySpec = DEFAULT_TOPOLOGY) -> Iterator[Topology]:
    """Make the namespaces, links, addresses, routes and pod servers of ``spec``.

    Everything is torn down on exit, also when building fails half-way, a test
    fails, or the run is interrupted; a process exit before that (say, a test
    runner that stops without unwinding) still removes the namespaces.
    """
    with ExitStack() as stack:
        # Registered first, undone last, and also at interpreter exit as a safety net.
        made: list[Netns] = []

        def remove_all() -> None:
            for ns in reversed(made):
                ns.close()

        atexit.register(remove_all)
        stack.callback(atexit.unregister, remove_all)
        stack.callback(remove_all)

        def make(role: str) -> Netns:
            ns = Netns(role)
            made.append(ns)
            return ns

        topo = Topology(
            spec, make("node"), make("client"), {p.name: make(p.name) for p in spec.pods}
        )
        _wire(topo)

        servers = []
        for pod in spec.pods:
            srv = PodServer(topo.pods[pod.name], pod.name, pod.addresses, spec.ports)
            stack.callback(srv.stop)
            servers.append(srv)
        for srv in servers:
            srv.wait_ready()
        yield topo


def missing_kernel_support(
    *,
    tools: Sequence[str] = (),
    iptables: bool = False,
    nftables: bool = False,
) -> str | None:
    """Why kernel tests cannot run here, or None when they can.

    Probes by trying: makes a namespace and, if asked, loads a tiny iptables nat table
    (IPv4 and IPv6) or nftables nat table (ip and ip6) into it.
    """
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    try:
        with Netns("probe") as ns:
            if iptables:
                table = (
                    "*nat\n:KN-PROBE - [0:0]\n"
                    "-A KN-PROBE -p tcp -j DNAT --to-destination {}\nCOMMIT\n"
                )
                ns.run(["iptables-restore", "-w", "--noflush"], stdin=table.format("10.0.0.1:80"))
                ns.run(["ip6tables-restore", "-w", "--noflush"], stdin=table.format("[fd00::1]:80"))
            if nftables:
                probe = (
                    "table {} kn-probe {{ chain c {{ type nat hook prerouting priority 0; }}; }}\n"
                )
                ns.run(["nft", "-f", "-"], stdin=probe.format("ip") + probe.format("ip6"))
    except (CommandError, OSError) as exc:
        return f"kernel or tools cannot do it: {exc}"
    return None
