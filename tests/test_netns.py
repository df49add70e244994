"""The namespace harness: it builds the topology, traffic flows directly, and nothing is left."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pytest

from kubenet.model import Protocol
from kubenet.testing.netns import (
    DEFAULT_TOPOLOGY,
    NETNS_PREFIX,
    Netns,
    Outcome,
    Topology,
    build,
    missing_kernel_support,
)

pytestmark = pytest.mark.kernel

_MISSING = missing_kernel_support()
if _MISSING:
    pytest.skip(_MISSING, allow_module_level=True)


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _pids_in(name: str) -> str:
    return subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    ).stdout.strip()


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with build() as topology:
        yield topology


def test_namespaces_are_named_and_exist(topo: Topology) -> None:
    names = [ns.name for ns in topo.namespaces]
    assert len(set(names)) == 2 + len(DEFAULT_TOPOLOGY.pods)
    assert all(n.startswith(NETNS_PREFIX) for n in names)
    assert topo.pods["pod-a"].name.startswith("kn-pod-a-")
    assert set(names) <= _netns_names()


@pytest.mark.parametrize("pod", [p.name for p in DEFAULT_TOPOLOGY.pods])
@pytest.mark.parametrize(
    ("protocol", "port"), [(Protocol.TCP, 8080), (Protocol.UDP, 9090), (Protocol.UDP, 8080)]
)
@pytest.mark.parametrize("family", [0, 1], ids=["ipv4", "ipv6"])
def test_client_reaches_every_pod_directly(
    topo: Topology, pod: str, protocol: Protocol, port: int, family: int
) -> None:
    spec = next(p for p in DEFAULT_TOPOLOGY.pods if p.name == pod)
    src, dst = DEFAULT_TOPOLOGY.client_ips[family], spec.addresses[family]
    attempt = topo.request(protocol, src, dst, port)
    assert attempt.outcome is Outcome.REPLY
    assert attempt.reply is not None
    assert (attempt.reply.pod, attempt.reply.peer) == (pod, src)
    assert attempt.reply.local_port == port
    assert attempt.reply.local_ip == dst


def test_pod_to_pod_and_node_to_pod(topo: Topology) -> None:
    for src in ("10.244.1.4", "10.180.0.1", "fd00:244:1::4", "fd00:180::1"):
        dst = "10.244.2.2" if ":" not in src else "fd00:244:2::2"
        attempt = topo.request(Protocol.TCP, src, dst, 8080)
        assert attempt.reply is not None and attempt.reply.peer == src


def test_a_port_nobody_serves_is_refused(topo: Topology) -> None:
    assert topo.request(Protocol.TCP, "10.180.0.2", "10.244.1.2", 7).outcome is Outcome.REFUSED
    assert topo.request(Protocol.UDP, "10.180.0.2", "10.244.1.2", 7).outcome is Outcome.REFUSED
    assert topo.request(Protocol.UDP, "fd00:180::2", "fd00:180::1", 7).outcome is Outcome.REFUSED


def test_traffic_nobody_claims_times_out(topo: Topology) -> None:
    # 10.96.0.1 is no one's: the node forwards it to the client, which does not forward.
    attempt = topo.request(Protocol.TCP, "10.180.0.2", "10.96.0.1", 80, timeout=0.3)
    assert attempt.outcome is Outcome.TIMEOUT


def test_extra_server_in_the_node(topo: Topology) -> None:
    with topo.server(topo.node, "node", [31000]):
        attempt = topo.request(Protocol.TCP, "10.180.0.2", "10.180.0.1", 31000)
        assert attempt.reply is not None and attempt.reply.pod == "node"
    assert topo.request(Protocol.TCP, "10.180.0.2", "10.180.0.1", 31000).outcome is Outcome.REFUSED


def test_node_forwards_and_allows_localnet(topo: Topology) -> None:
    out = topo.node.run(["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet"])
    assert out.stdout.split() == ["1", "1"]
    assert topo.client.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"


def test_sockets_live_in_their_namespace(topo: Topology) -> None:
    # Binding the client's address works only inside the client's namespace.
    with topo.client.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("10.180.0.2", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError):
        sock.bind(("10.180.0.2", 0))


def test_everything_is_removed_on_exit_and_on_failure() -> None:
    names: list[str] = []
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), build() as topology:
        names = [ns.name for ns in topology.namespaces]
        pids = [int(p) for ns in topology.pods.values() for p in _pids_in(ns.name).split()]
        raise RuntimeError("boom")
    assert names and len(pids) == len(DEFAULT_TOPOLOGY.pods)
    assert not set(names) & _netns_names()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"pod server {pid} outlived its topology"


def test_a_single_namespace_closes_idempotently() -> None:
    ns = Netns("solo")
    assert ns.name in _netns_names()
    ns.close()
    ns.close()
    assert ns.name not in _netns_names()


def test_missing_support_names_the_missing_tool() -> None:
    reason = missing_kernel_support(tools=("kn-no-such-tool",))
    assert reason is not None and "kn-no-such-tool" in reason
