"""Server-side printing: the ``Table`` objects ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
whatever columns the server returns.  The columns here follow upstream's printers
(``pkg/printers/internalversion/printers.go``) for the kinds served, so ``kubectl get
svc`` shows TYPE, CLUSTER-IP, EXTERNAL-IP and PORT(S) as on a real cluster; other
kinds get upstream's default Name / Created At table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubenet.testing.apiserver.resources import ResourceType
from kubenet.testing.apiserver.store import Stored

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0

    def to_json(self) -> JsonObject:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


_NAME = Column("Name", format="name", description="Name must be unique within a namespace.")
_AGE = Column(
    "Age",
    description="CreationTimestamp is a timestamp representing the server time "
    "when this object was created.",
)


def human_duration(seconds: float) -> str:
    """Upstream's duration.HumanDuration: the AGE column's wording."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    days = hours // 24
    if days < 365 * 8:
        rest = days % 365
        return f"{days // 365}y{rest}d" if rest else f"{days // 365}y"
    return f"{days // 365}y"


def age(obj: JsonObject, at: datetime | None = None) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    try:
        created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration(((at or datetime.now(UTC)) - created).total_seconds())


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _join_more(values: Sequence[str], limit: int = 3) -> str:
    if len(values) > limit:
        return ",".join(values[:limit]) + f" + {len(values) - limit} more..."
    return ",".join(values)


# --- per-kind rows ------------------------------------------------------------------


def _namespace_row(obj: JsonObject) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("status") or {}).get("phase", ""), age(obj)]


def _node_row(obj: JsonObject) -> list[Any]:
    status = obj.get("status") or {}
    ready = "Unknown"
    for cond in _list(status.get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if (obj.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = obj["metadata"].get("labels") or {}
    roles = sorted(
        {
            k.split("/", 1)[1]
            for k in labels
            if k.startswith("node-role.kubernetes.io/") and "/" in k
        }
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        found = [
            a.get("address", "")
            for a in _list(status.get("addresses"))
            if isinstance(a, dict) and a.get("type") == kind
        ]
        return found[0] if found else "<none>"

    return [
        obj["metadata"]["name"],
        ready,
        ",".join(roles) or "<none>",
        age(obj),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _pod_row(obj: JsonObject) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    total = len(_list(spec.get("containers")))
    statuses = [s for s in _list(status.get("containerStatuses")) if isinstance(s, dict)]
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = status.get("reason") or status.get("phase") or ""
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    gates = _list(spec.get("readinessGates"))
    return [
        obj["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts,
        age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _service_row(obj: JsonObject) -> list[Any]:
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    external = [str(ip) for ip in _list(spec.get("externalIPs"))]
    if kind == "ExternalName":
        ext = spec.get("externalName", "")
    elif kind == "LoadBalancer":
        ingress = _list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))
        lb = [i.get("ip") or i.get("hostname") or "" for i in ingress if isinstance(i, dict)]
        ext = ",".join([*lb, *external]) or "<pending>"
    else:
        ext = ",".join(external) or "<none>"
    ports = []
    for p in _list(spec.get("ports")):
        if isinstance(p, dict):
            node = f":{p['nodePort']}" if p.get("nodePort") else ""
            ports.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    selector = spec.get("selector") or {}
    return [
        obj["metadata"]["name"],
        kind,
        spec.get("clusterIP") or "<none>",
        ext,
        ",".join(ports) or "<none>",
        age(obj),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _endpointslice_row(obj: JsonObject) -> list[Any]:
    ports = [p for p in _list(obj.get("ports")) if isinstance(p, dict)]
    port_text = (
        _join_more([str(p["port"]) if p.get("port") is not None else "<unset>" for p in ports])
        or "<unset>"
    )
    addresses = [
        a
        for ep in _list(obj.get("endpoints"))
        if isinstance(ep, dict)
        for a in _list(ep.get("addresses"))
    ]
    return [
        obj["metadata"]["name"],
        obj.get("addressType", ""),
        port_text,
        _join_more([str(a) for a in addresses]) or "<unset>",
        age(obj),
    ]


def _configmap_row(obj: JsonObject) -> list[Any]:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [obj["metadata"]["name"], count, age(obj)]


def _default_row(obj: JsonObject) -> list[Any]:
    return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp", "")]


_PRINTERS: dict[str, tuple[list[Column], Callable[[JsonObject], list[Any]]]] = {
    "Namespace": (
        [_NAME, Column("Status", description="The status of the namespace"), _AGE],
        _namespace_row,
    ),
    "Node": (
        [
            _NAME,
            Column("Status", description="The status of the node"),
            Column("Roles", description="The roles of the node"),
            _AGE,
            Column("Version", description="Kubelet Version reported by the node."),
            Column(
                "Internal-IP", priority=1, description="List of addresses reachable to the node."
            ),
            Column(
                "External-IP", priority=1, description="List of addresses reachable to the node."
            ),
            Column("OS-Image", priority=1, description="OS Image reported by the node."),
            Column(
                "Kernel-Version", priority=1, description="Kernel Version reported by the node."
            ),
            Column("Container-Runtime", priority=1, description="Container Runtime Version."),
        ],
        _node_row,
    ),
    "Pod": (
        [
            _NAME,
            Column("Ready", description="The aggregate readiness state of this pod."),
            Column("Status", description="The aggregate status of the containers in this pod."),
            Column(
                "Restarts",
                type="string",
                description="The number of times the containers in this pod have been restarted.",
            ),
            _AGE,
            Column("IP", priority=1, description="IP address allocated to the pod."),
            Column("Node", priority=1, description="Name of the Node this pod is scheduled on."),
            Column("Nominated Node", priority=1, description="Node nominated by the scheduler."),
            Column("Readiness Gates", priority=1, description="Pod readiness gates."),
        ],
        _pod_row,
    ),
    "Service": (
        [
            _NAME,
            Column("Type", description="The type of the service."),
            Column("Cluster-IP", description="The IP address of the service."),
            Column("External-IP", description="The external IPs of the service."),
            Column("Port(s)", description="The ports of the service."),
            _AGE,
            Column(
                "Selector",
                priority=1,
                description="Route service traffic to pods with "
                "label keys and values matching this selector.",
            ),
        ],
        _service_row,
    ),
    "EndpointSlice": (
        [
            _NAME,
            Column("AddressType", description="Type of address carried by this EndpointSlice."),
            Column("Ports", description="Ports of the endpoints."),
            Column("Endpoints", description="Addresses of the endpoints."),
            _AGE,
        ],
        _endpointslice_row,
    ),
    "ConfigMap": (
        [_NAME, Column("Data", type="integer", description="Number of data entries."), _AGE],
        _configmap_row,
    ),
}

_DEFAULT = (
    [
        _NAME,
        Column(
            "Created At",
            type="date",
            description="CreationTimestamp is a "
            "timestamp representing the server time when this object was created.",
        ),
    ],
    _default_row,
)


def partial_metadata(stored: Stored, api_version: str = "meta.k8s.io/v1") -> JsonObject:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": stored.obj["metadata"],
    }


def table(
    rtype: ResourceType,
    items: Sequence[Stored],
    *,
    list_meta: JsonObject,
    include_object: str = "Metadata",
    headers: bool = True,
    api_version: str = "meta.k8s.io/v1",
) -> JsonObject:
    """A ``Table`` for ``items`` (one row each)."""
    columns, row_of = _PRINTERS.get(rtype.kind, _DEFAULT)
    rows = []
    for stored in items:
        row: JsonObject = {"cells": row_of(stored.obj)}
        if include_object == "Object":
            row["object"] = stored.obj
        elif include_object != "None":
            row["object"] = partial_metadata(stored, api_version)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": list_meta,
        "columnDefinitions": [c.to_json() for c in columns] if headers else None,
        "rows": rows,
    }
