"""``lab scale``: the EndpointSlices a Service has when N of the lab's pods serve it.

A pure function of the Service, its current EndpointSlices and the lab's pods: the
lab has no controllers (neither does the embedded API server), so it plays the
EndpointSlice controller's part for one Service, by hand. Scaling keeps the pods
that serve now, in their order, and adds the lab's other pods after them; so
scaling down drops the last ones and scaling up adds pods that did not serve yet.
Each IP family of the Service gets one slice: the first existing slice of that
family is rewritten (its name kept), the other slices of the family are deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubenet.lab.layout import LabPod

JsonObject = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "kubenet-lab"


class ScaleError(ValueError):
    """The request cannot be met (the message says why)."""


@dataclass(frozen=True)
class ScalePlan:
    """What to write: slices to update (``update``) or create, and slice names to delete."""

    update: tuple[JsonObject, ...]
    create: tuple[JsonObject, ...]
    delete: tuple[str, ...]
    #: The pods that serve afterwards, in order.
    pods: tuple[str, ...]


def plan_scale(
    service: JsonObject,
    slices: Sequence[JsonObject],
    pods: Sequence[LabPod],
    replicas: int,
) -> ScalePlan:
    """The slices that make exactly ``replicas`` of ``pods`` serve ``service``."""
    if replicas < 0:
        raise ScaleError("the number of pods cannot be negative")
    if replicas > len(pods):
        raise ScaleError(f"the lab has {len(pods)} pods, so at most {len(pods)} can serve")
    meta = service["metadata"]
    spec = service.get("spec", {})
    families = spec.get("ipFamilies") or ["IPv4"]
    by_address = {a: p for p in pods for a in (p.ipv4, p.ipv6)}

    serving: list[LabPod] = []
    for obj in slices:
        for endpoint in obj.get("endpoints") or []:
            ready = (endpoint.get("conditions") or {}).get("ready", True)
            for address in endpoint.get("addresses", []):
                pod = by_address.get(address)
                if ready and pod is not None and pod not in serving:
                    serving.append(pod)
    chosen = (serving + [p for p in pods if p not in serving])[:replicas]

    update: list[JsonObject] = []
    create: list[JsonObject] = []
    delete: list[str] = []
    for family in families:
        mine = [s for s in slices if s.get("addressType") == family]
        ports = _ports(service, mine)
        endpoints = [_endpoint(p, family, meta["namespace"]) for p in chosen]
        if mine:
            obj = copy.deepcopy(mine[0])
            obj["endpoints"] = endpoints
            obj["ports"] = ports
            update.append(obj)
            delete += [s["metadata"]["name"] for s in mine[1:]]
        else:
            suffix = "ipv6" if family == "IPv6" else "ipv4"
            create.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{meta['name']}-lab-{suffix}",
                        "namespace": meta["namespace"],
                        "labels": {SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY},
                    },
                    "addressType": family,
                    "endpoints": endpoints,
                    "ports": ports,
                }
            )
    return ScalePlan(tuple(update), tuple(create), tuple(delete), tuple(p.name for p in chosen))


def _ports(service: JsonObject, slices: Sequence[JsonObject]) -> list[JsonObject]:
    """The slice ports: those of an existing slice, else the Service's numeric targetPorts."""
    for obj in slices:
        if obj.get("ports"):
            return copy.deepcopy(list(obj["ports"]))
    out = []
    for port in service.get("spec", {}).get("ports", []):
        target = port.get("targetPort", port["port"])
        if not isinstance(target, int):
            raise ScaleError(
                f"port {port.get('name', port['port'])!r} has the named targetPort {target!r} "
                "and no EndpointSlice says which number it is"
            )
        entry: JsonObject = {"port": target, "protocol": port.get("protocol", "TCP")}
        if port.get("name"):
            entry["name"] = port["name"]
        out.append(entry)
    return out


def _endpoint(pod: LabPod, family: str, namespace: str) -> JsonObject:
    return {
        "addresses": [pod.ipv6 if family == "IPv6" else pod.ipv4],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": pod.node,
        "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod.name},
    }
