"""A synthetic cluster as the API would send it: Services, EndpointSlices and one Node.

Deterministic for a given size, so runs compare. The mix follows what large clusters
hold: mostly ClusterIP Services, some NodePort and LoadBalancer ones (a share with
the Local policy and source ranges), some with ClientIP affinity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

NODE = "node-0"
NODE_IP = "10.180.0.1"
NODES = 100
SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
POD_BASE = int(ipaddress.IPv4Address("10.128.0.0"))
LB_BASE = int(ipaddress.IPv4Address("100.64.0.0"))


@dataclass(frozen=True)
class Cluster:
    services: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    node: dict[str, Any]

    @property
    def endpoint_count(self) -> int:
        return sum(len(s["endpoints"]) for s in self.slices)


def _kind(i: int) -> str:
    """The mix: 70% ClusterIP, 10% NodePort, 10% LB Local, 5% LB Cluster, 5% affinity."""
    r = i % 20
    if r in (0, 1):
        return "NodePort"
    if r in (2, 3):
        return "LoadBalancerLocal"
    if r == 4:
        return "LoadBalancer"
    if r == 5:
        return "Affinity"
    return "ClusterIP"


def service(i: int) -> dict[str, Any]:
    kind = _kind(i)
    ip = str(ipaddress.IPv4Address(SERVICE_BASE + 1 + i))
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": ip,
        "clusterIPs": [ip],
        "ipFamilies": ["IPv4"],
        "selector": {"app": f"svc-{i}"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    }
    status: dict[str, Any] = {"loadBalancer": {}}
    if kind in ("NodePort", "LoadBalancer", "LoadBalancerLocal"):
        spec["type"] = "LoadBalancer" if kind.startswith("LoadBalancer") else "NodePort"
        spec["ports"][0]["nodePort"] = 30000 + i % 2768
        spec["externalTrafficPolicy"] = "Cluster"
    if kind.startswith("LoadBalancer"):
        lb = str(ipaddress.IPv4Address(LB_BASE + 1 + i))
        status["loadBalancer"] = {"ingress": [{"ip": lb, "ipMode": "VIP"}]}
    if kind == "LoadBalancerLocal":
        spec["externalTrafficPolicy"] = "Local"
        spec["healthCheckNodePort"] = 32000 + i % 700
        spec["loadBalancerSourceRanges"] = ["10.180.0.0/16", "192.0.2.0/24"]
    if kind == "Affinity":
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % 50}", "uid": f"uid-svc-{i}"},
        "spec": spec,
        "status": status,
    }


def endpoint_slice(i: int, endpoints: int) -> dict[str, Any]:
    eps = []
    for j in range(endpoints):
        n = i * endpoints + j
        eps.append(
            {
                "addresses": [str(ipaddress.IPv4Address(POD_BASE + 2 + n))],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{n % NODES}",
                "zone": f"zone-{n % 3}",
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-abcde",
            "namespace": f"ns-{i % 50}",
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }


def node() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-0"}},
        "spec": {"podCIDR": "10.128.0.0/24", "podCIDRs": ["10.128.0.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]},
    }


def make_cluster(services: int, endpoints: int) -> Cluster:
    return Cluster(
        [service(i) for i in range(services)],
        [endpoint_slice(i, endpoints) for i in range(services)],
        node(),
    )
