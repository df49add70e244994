"""The lab's fixed shape: the test topology, the example cluster's names and addresses.

The addresses are :data:`kubenet.testing.netns.DEFAULT_TOPOLOGY`'s, which the
manifests in ``examples/`` were written for: node ``node-a`` is 10.180.0.1, its pods
10.244.1.2-4 (pod-a, pod-b, pod-c), and pod-r (10.244.2.2) stands in for a pod of
node-b, reached through the same node namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubenet.testing.netns import TopologySpec

#: The node the lab's node-proxy runs as.
NODE_NAME = "node-a"
#: node-a's IPv4 pod range (its Node's podCIDR in examples/); other pods are node-b's.
NODE_POD_CIDR = "10.244.1.0/24"
OTHER_NODE = "node-b"
#: The pods' address ranges (both families), node-proxy's --cluster-cidr.
CLUSTER_CIDRS = ("10.244.0.0/16", "fd00:244::/32")
#: Ports every lab pod serves: HTTP over TCP and an echo over UDP, on each.
POD_PORTS = (8080, 9090)
#: Where the API server listens, inside the node namespace.
API_PORT = 6443
#: node-proxy's health and metrics ports, inside the node namespace.
HEALTHZ_PORT = 10256
METRICS_PORT = 10249
#: The Kubernetes namespace the example Services live in.
DEFAULT_NAMESPACE = "demo"


@dataclass(frozen=True)
class LabPod:
    """A pod of the lab: its name, addresses and the node the cluster says it runs on."""

    name: str
    ipv4: str
    ipv6: str
    node: str


#: :func:`kubenet.testing.netns.build` starts its own (line-protocol) server in every
#: pod; the lab parks those on the echo port, which no example Service targets, and
#: runs its HTTP servers on the ports the Services do use.
HARNESS_PORT = 7


def topology() -> TopologySpec:
    """The namespaces to build (the harness's servers on :data:`HARNESS_PORT`)."""
    # Imported here: the namespace harness brings pyroute2, which node-proxy's
    # offline commands (that mount this app) should not pay for at start.
    from kubenet.testing.netns import DEFAULT_TOPOLOGY

    return replace(DEFAULT_TOPOLOGY, ports=(HARNESS_PORT,))


def pods() -> tuple[LabPod, ...]:
    """The lab's pods, in the order ``lab scale`` adds them."""
    local = ipaddress.ip_network(NODE_POD_CIDR)
    return tuple(
        LabPod(
            pod.name,
            pod.ipv4,
            pod.ipv6,
            NODE_NAME if ipaddress.ip_address(pod.ipv4) in local else OTHER_NODE,
        )
        for pod in topology().pods
    )


def api_host() -> str:
    """The node's IPv4 address: the API server listens there, in the node namespace."""
    return topology().node_ips[0]


def client_ip() -> str:
    return topology().client_ips[0]


def examples_dir() -> Path | None:
    """The repository's ``examples/`` folder, when kubenet runs from a checkout."""
    candidate = Path(__file__).resolve().parents[2] / "examples"
    return candidate if candidate.is_dir() else None
