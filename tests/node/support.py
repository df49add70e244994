"""Helpers for node-proxy's tests: API objects, a controllable API server, waiting.

The API server is the embedded one (kubenet.testing.apiserver), driven in-process
through its ``Api`` (as a controller would write), so tests need no client. For tests
that restart it, :class:`RestartableApiServer` keeps the address and the credentials
the same across restarts (plain HTTP and a fixed token), while the store, and so the
watch history, starts afresh.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubenet.testing.apiserver import ServerConfig, ThreadedApiServer
from kubenet.testing.apiserver.resources import ENDPOINTSLICES, NODES, SERVICES

T = TypeVar("T")
JsonObject = dict[str, Any]

TOKEN = "node-proxy-test-token"


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one scenario on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(check: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait until ``check()`` holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def wait_for(check: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> float:
    """Blocking version of :func:`eventually`; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


# ------------------------------------------------------------------- objects


def service(
    name: str,
    cluster_ip: str,
    *,
    namespace: str = "default",
    port: int = 80,
    target: int = 8080,
    protocol: str = "TCP",
    port_name: str = "",
    type_: str = "ClusterIP",
    node_port: int | None = None,
    health_check_node_port: int | None = None,
    external_policy: str | None = None,
    lb_ips: Iterable[str] = (),
    labels: dict[str, str] | None = None,
) -> JsonObject:
    port_spec: JsonObject = {"port": port, "targetPort": target, "protocol": protocol}
    if port_name:
        port_spec["name"] = port_name
    if node_port is not None:
        port_spec["nodePort"] = node_port
    spec: JsonObject = {
        "type": type_,
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ports": [port_spec],
    }
    if external_policy:
        spec["externalTrafficPolicy"] = external_policy
    if health_check_node_port is not None:
        spec["healthCheckNodePort"] = health_check_node_port
    obj: JsonObject = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }
    ips = list(lb_ips)
    if ips:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}
    return obj


def endpoint_slice(
    service_name: str,
    addresses: Iterable[str],
    *,
    name: str | None = None,
    namespace: str = "default",
    port: int = 8080,
    protocol: str = "TCP",
    port_name: str = "",
    node: str = "node-a",
    annotations: dict[str, str] | None = None,
) -> JsonObject:
    port_spec: JsonObject = {"port": port, "protocol": protocol, "name": port_name}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-abc",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
            "annotations": annotations or {},
        },
        "addressType": "IPv6" if any(":" in a for a in addresses) else "IPv4",
        "ports": [port_spec],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True}, "nodeName": node} for a in addresses
        ],
    }


def node(name: str, ip: str, *, taints: Iterable[str] = ()) -> JsonObject:
    spec: JsonObject = {"podCIDRs": ["10.244.1.0/24"]}
    keys = list(taints)
    if keys:
        spec["taints"] = [{"key": k, "effect": "NoSchedule"} for k in keys]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": spec,
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


class Objects:
    """Writes to a running server's store, as controllers would (in-process)."""

    def __init__(self, server: ThreadedApiServer) -> None:
        self.server = server

    def apply(self, *objects: JsonObject) -> None:
        """Create or replace (status included)."""
        self.server.load([dict(o) for o in objects])

    def delete_service(self, name: str, namespace: str = "default") -> None:
        api = self.server.server.api
        self.server.call(lambda: api.delete(SERVICES, namespace, name))

    def delete_slice(self, name: str, namespace: str = "default") -> None:
        api = self.server.server.api
        self.server.call(lambda: api.delete(ENDPOINTSLICES, namespace, name))

    def delete_node(self, name: str) -> None:
        api = self.server.server.api
        self.server.call(lambda: api.delete(NODES, "", name))

    def resource_version(self) -> int:
        return self.server.call(lambda: self.server.server.store.rv)


# ------------------------------------------------------------ restartable server


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": token}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    return path


class RestartableApiServer:
    """An embedded API server that can be stopped and started again on the same port.

    Plain HTTP with a fixed token, so that one kubeconfig works across restarts.
    ``netns``, when given, is the network namespace the server listens in: its thread
    enters it before the listening socket is made (a socket belongs to the namespace
    it was created in), so a process in that namespace reaches it on 127.0.0.1.
    """

    def __init__(self, state: Path, *, netns: str | None = None, history: int = 10_000) -> None:
        self.state = state
        self.netns = netns
        self.history = history
        self.port = 0
        self.server: ThreadedApiServer | None = None
        tokens = state / "tokens.csv"
        tokens.write_text(f'{TOKEN},node-proxy,uid-1,"system:masters"\n')
        self._tokens = tokens

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, *, history: int | None = None, holding: Sequence[Mapping[str, Any]] = ()
    ) -> ThreadedApiServer:
        """Start (again); ``holding`` is in the store before the first client connects."""
        seed: tuple[Path, ...] = ()
        if holding:
            path = self.state / "seed.json"
            path.write_text(json.dumps({"kind": "List", "items": list(holding)}))
            seed = (path,)
        config = ServerConfig(
            port=self.port,
            tls=False,
            token_file=self._tokens,
            bookmark_interval=1.0,
            history=history or self.history,
            manifests=seed,
        )
        server = ThreadedApiServer(config)
        if self.netns is None:
            server.start()
        else:
            _start_in_netns(server, self.netns)
        self.server = server
        self.port = server.server.port
        return server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def objects(self) -> Objects:
        assert self.server is not None
        return Objects(self.server)


def _start_in_netns(server: ThreadedApiServer, netns: str) -> None:
    """Start ``server`` from a thread that has entered ``netns``.

    Threads inherit the namespace of the thread that creates them, so the server's
    event-loop thread (and its listening socket) live in ``netns``.
    """
    from kubenet.testing.netns import call_in_netns

    call_in_netns(netns, server.start)


@contextmanager
def restartable_apiserver(
    state: Path, *, netns: str | None = None, history: int = 10_000
) -> Iterator[RestartableApiServer]:
    srv = RestartableApiServer(state, netns=netns, history=history)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
