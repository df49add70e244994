"""`node-proxy run` as a real process in the node namespace, fed by a real API server.

The test topology (client, node, pods: tests/kernel/conftest.py) gets an embedded API
server listening inside the node namespace (its thread enters the namespace before
the listening socket is made), and ``ip netns exec NODE python -m
kubenet.cli.node_proxy run ...`` talks to it on 127.0.0.1 with a kubeconfig and a
token, as a node's kube-proxy talks to its API server. Tests write objects in-process
through the server's own API (as controllers would) and judge by real traffic from
the client namespace, and by what node-proxy serves on its health and metrics ports,
read with sockets made inside the node namespace.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubenet.model import Protocol
from kubenet.render import ProxyMode
from kubenet.testing.netns import Netns, Outcome, Topology
from tests.node.support import RestartableApiServer, node, wait_for, write_kubeconfig
from tests.scenarios import CLUSTER_CIDRS, NODE, TOPOLOGY

NODE_IPS = (TOPOLOGY["node"]["ipv4"], TOPOLOGY["node"]["ipv6"])
HEALTHZ = 10256
METRICS = 10249


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(ns: Netns, host: str, port: int, path: str, timeout: float = 2.0) -> HttpAnswer:
    """One HTTP/1.0 GET from inside ``ns`` (its sockets live in the namespace)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with ns.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return HttpAnswer(status, headers, body.decode())


class NodeProxy:
    """One ``node-proxy run`` process in the node namespace."""

    def __init__(
        self, topology: Topology, kubeconfig: Path, mode: ProxyMode, log_dir: Path, *extra: str
    ) -> None:
        self.topology = topology
        self.kubeconfig = kubeconfig
        self.mode = mode
        self.log_dir = log_dir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"node-proxy-{self.mode.value}-{self.starts}.log"

    def argv(self) -> list[str]:
        flags = [
            "--kubeconfig",
            str(self.kubeconfig),
            "--proxy-mode",
            self.mode.value,
            "--hostname-override",
            NODE,
            "--cluster-cidr",
            ",".join(CLUSTER_CIDRS),
            # Short periods keep the tests quick and exercise periodic full syncs.
            f"--{self.mode.value}-sync-period",
            "3s",
            f"--{self.mode.value}-min-sync-period",
            "50ms",
            "-v",
            "2",
            *self.extra,
        ]
        return [sys.executable, "-m", "kubenet.cli.node_proxy", "run", *flags]

    def start(self, *, wait: bool = True) -> NodeProxy:
        self.starts += 1
        out = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.topology.node.name, *self.argv()],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        if wait:
            self.wait_synced()
        return self

    def wait_synced(self, timeout: float = 15.0) -> float:
        """Block until the process has synced once (``/livez`` lists per-family status)."""

        def synced() -> bool:
            self.check_alive()
            try:
                return (
                    "status" in http_get(self.topology.node, "127.0.0.1", HEALTHZ, "/livez").json()
                )
            except (OSError, ValueError):
                return False

        return wait_for(synced, timeout, step=0.05)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node-proxy exited with {self.proc.returncode}:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process (``ip netns exec`` execs it, so the pid is node-proxy's)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, port: int, path: str) -> HttpAnswer:
        return http_get(self.topology.node, "127.0.0.1", port, path)


@dataclass
class Stack:
    """A topology with an API server and node-proxy running in it, for one mode."""

    mode: ProxyMode
    topology: Topology
    api: RestartableApiServer
    proxy: NodeProxy
    state: Path

    def reachable_pods(self, vip: str, port: int = 80, tries: int = 20) -> set[str]:
        """Which pods answered ``tries`` TCP connections from the client."""
        pods = set()
        for _ in range(tries):
            attempt = self.topology.client.request(Protocol.TCP, vip, port, timeout=0.5)
            if attempt.outcome is Outcome.REPLY and attempt.reply is not None:
                pods.add(attempt.reply.pod)
            else:
                pods.add(attempt.outcome.value)
        return pods


def node_object() -> dict[str, Any]:
    return node(NODE, NODE_IPS[0]) | {
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip} for ip in NODE_IPS],
        }
    }


def reset_kernel(topology: Topology) -> None:
    """Nothing of any mode, no tracked connections: each mode starts from a clean node."""
    from kubenet.node.backends import cleanup

    assert cleanup(netns=topology.node.name) == []
    for family in ("ipv4", "ipv6"):
        topology.node.run(["conntrack", "-F", "-f", family])


MODES = (ProxyMode.IPTABLES, ProxyMode.NFTABLES, ProxyMode.IPVS)


@pytest.fixture(scope="module", params=MODES, ids=[m.value for m in MODES])
def stack(request: pytest.FixtureRequest, topology: Topology) -> Iterator[Stack]:
    mode: ProxyMode = request.param
    if mode is ProxyMode.IPVS:
        from kubenet.dataplane.ipvs import missing_ipvs

        missing = missing_ipvs(topology.node.name)
        if missing:
            pytest.skip(f"ipvs: {missing}")
    reset_kernel(topology)
    state = Path(tempfile.mkdtemp(prefix=f"kubenet-run-{mode.value}-"))
    api = RestartableApiServer(state, netns=topology.node.name)
    api.start()
    api.objects.apply(node_object())
    kubeconfig = write_kubeconfig(state / "kubeconfig", api.url)
    proxy = NodeProxy(topology, kubeconfig, mode, state)
    try:
        proxy.start()
        yield Stack(mode, topology, api, proxy, state)
    finally:
        proxy.stop()
        api.stop()
        reset_kernel(topology)
        shutil.rmtree(state, ignore_errors=True)
