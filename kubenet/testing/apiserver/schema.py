"""Field types for decoding: what Go's JSON decoder would refuse.

kube-apiserver decodes a body into Go structs, so a value of the wrong JSON type
(``selector: {app: true}``, ``port: "80"``) is a 400 BadRequest before any
validation runs::

    Service in version "v1" cannot be handled as a Service: json: cannot unmarshal bool
    into Go struct field ServiceSpec.spec.selector of type string

This module describes the types of the fields that matter for the kinds served
here (everything node-proxy and api-proxy read, and metadata) and reproduces that
error.  Fields it does not describe are accepted as they are; unknown fields are
kept (see docs/apiserver.md on ``fieldValidation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias


@dataclass(frozen=True)
class Scalar:
    go: str  # "string", "int32", "int64", "bool", "intstr"


@dataclass(frozen=True)
class ListOf:
    item: Type


@dataclass(frozen=True)
class MapOf:
    value: Type


@dataclass(frozen=True)
class Struct:
    name: str
    fields: Mapping[str, Type]


Type: TypeAlias = Scalar | ListOf | MapOf | Struct

STRING, INT32, INT64, BOOL, INTSTR = (
    Scalar(t) for t in ("string", "int32", "int64", "bool", "intstr")
)
_LIMITS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class DecodeError(ValueError):
    """A value Go's decoder would refuse; the message is Go's."""


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}" if isinstance(value, float) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_name(t: Type) -> str:
    if isinstance(t, Scalar):
        return {"intstr": "intstr.IntOrString"}.get(t.go, t.go)
    if isinstance(t, ListOf):
        return "[]" + _go_name(t.item)
    if isinstance(t, MapOf):
        return "map[string]" + _go_name(t.value)
    return "v1." + t.name


def check(value: Any, t: Type, path: str = "", owner: str = "") -> None:
    """Raise :class:`DecodeError` if ``value`` does not decode as ``t``."""
    if value is None:
        return  # null decodes to the zero value
    fail = DecodeError(
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field {owner}.{path} of type "
        f"{_go_name(t)}"
        if owner
        else f"json: cannot unmarshal {_json_kind(value)} into Go value of type {_go_name(t)}"
    )
    if isinstance(t, Scalar):
        if t.go == "string":
            ok = isinstance(value, str)
        elif t.go == "bool":
            ok = isinstance(value, bool)
        elif t.go == "intstr":
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        else:
            low, high = _LIMITS[t.go]
            ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        if not ok:
            raise fail
    elif isinstance(t, ListOf):
        if not isinstance(value, list):
            raise fail
        for item in value:
            check(item, t.item, path, owner)
    elif isinstance(t, MapOf):
        if not isinstance(value, dict):
            raise fail
        for item in value.values():
            check(item, t.value, path, owner)
    else:
        if not isinstance(value, dict):
            raise fail
        for key, sub in t.fields.items():
            if key in value:
                check(value[key], sub, f"{path}.{key}" if path else key, t.name)


_OWNER_REF = Struct(
    "OwnerReference",
    {
        "apiVersion": STRING,
        "kind": STRING,
        "name": STRING,
        "uid": STRING,
        "controller": BOOL,
        "blockOwnerDeletion": BOOL,
    },
)
OBJECT_META = Struct(
    "ObjectMeta",
    {
        "name": STRING,
        "generateName": STRING,
        "namespace": STRING,
        "uid": STRING,
        "resourceVersion": STRING,
        "generation": INT64,
        "creationTimestamp": STRING,
        "deletionTimestamp": STRING,
        "deletionGracePeriodSeconds": INT64,
        "labels": MapOf(STRING),
        "annotations": MapOf(STRING),
        "ownerReferences": ListOf(_OWNER_REF),
        "finalizers": ListOf(STRING),
    },
)

_SERVICE_PORT = Struct(
    "ServicePort",
    {
        "name": STRING,
        "protocol": STRING,
        "appProtocol": STRING,
        "port": INT32,
        "targetPort": INTSTR,
        "nodePort": INT32,
    },
)
_SERVICE = Struct(
    "Service",
    {
        "metadata": OBJECT_META,
        "spec": Struct(
            "ServiceSpec",
            {
                "ports": ListOf(_SERVICE_PORT),
                "selector": MapOf(STRING),
                "clusterIP": STRING,
                "clusterIPs": ListOf(STRING),
                "type": STRING,
                "externalIPs": ListOf(STRING),
                "sessionAffinity": STRING,
                "loadBalancerIP": STRING,
                "loadBalancerSourceRanges": ListOf(STRING),
                "externalName": STRING,
                "externalTrafficPolicy": STRING,
                "healthCheckNodePort": INT32,
                "publishNotReadyAddresses": BOOL,
                "sessionAffinityConfig": Struct(
                    "SessionAffinityConfig",
                    {
                        "clientIP": Struct("ClientIPConfig", {"timeoutSeconds": INT32}),
                    },
                ),
                "ipFamilies": ListOf(STRING),
                "ipFamilyPolicy": STRING,
                "allocateLoadBalancerNodePorts": BOOL,
                "loadBalancerClass": STRING,
                "internalTrafficPolicy": STRING,
                "trafficDistribution": STRING,
            },
        ),
        "status": Struct(
            "ServiceStatus",
            {
                "loadBalancer": Struct(
                    "LoadBalancerStatus",
                    {
                        "ingress": ListOf(
                            Struct(
                                "LoadBalancerIngress",
                                {
                                    "ip": STRING,
                                    "hostname": STRING,
                                    "ipMode": STRING,
                                    "ports": ListOf(
                                        Struct("PortStatus", {"port": INT32, "protocol": STRING})
                                    ),
                                },
                            )
                        ),
                    },
                ),
            },
        ),
    },
)

_ENDPOINT = Struct(
    "Endpoint",
    {
        "addresses": ListOf(STRING),
        "conditions": Struct(
            "EndpointConditions",
            {
                "ready": BOOL,
                "serving": BOOL,
                "terminating": BOOL,
            },
        ),
        "hostname": STRING,
        "nodeName": STRING,
        "zone": STRING,
        "targetRef": Struct(
            "ObjectReference",
            {
                "kind": STRING,
                "namespace": STRING,
                "name": STRING,
                "uid": STRING,
            },
        ),
        "hints": Struct(
            "EndpointHints",
            {
                "forZones": ListOf(Struct("ForZone", {"name": STRING})),
                "forNodes": ListOf(Struct("ForNode", {"name": STRING})),
            },
        ),
    },
)
_ENDPOINT_SLICE = Struct(
    "EndpointSlice",
    {
        "metadata": OBJECT_META,
        "addressType": STRING,
        "endpoints": ListOf(_ENDPOINT),
        "ports": ListOf(
            Struct(
                "EndpointPort",
                {
                    "name": STRING,
                    "protocol": STRING,
                    "port": INT32,
                    "appProtocol": STRING,
                },
            )
        ),
    },
)

_CONTAINER = Struct(
    "Container",
    {
        "name": STRING,
        "image": STRING,
        "command": ListOf(STRING),
        "args": ListOf(STRING),
        "ports": ListOf(
            Struct(
                "ContainerPort",
                {
                    "name": STRING,
                    "containerPort": INT32,
                    "hostPort": INT32,
                    "protocol": STRING,
                },
            )
        ),
        "env": ListOf(Struct("EnvVar", {"name": STRING, "value": STRING})),
    },
)
_POD = Struct(
    "Pod",
    {
        "metadata": OBJECT_META,
        "spec": Struct(
            "PodSpec",
            {
                "containers": ListOf(_CONTAINER),
                "initContainers": ListOf(_CONTAINER),
                "nodeName": STRING,
                "hostNetwork": BOOL,
                "hostname": STRING,
                "restartPolicy": STRING,
                "terminationGracePeriodSeconds": INT64,
            },
        ),
        "status": Struct(
            "PodStatus",
            {
                "phase": STRING,
                "podIP": STRING,
                "hostIP": STRING,
                "podIPs": ListOf(Struct("PodIP", {"ip": STRING})),
                "conditions": ListOf(Struct("PodCondition", {"type": STRING, "status": STRING})),
            },
        ),
    },
)

_NODE = Struct(
    "Node",
    {
        "metadata": OBJECT_META,
        "spec": Struct(
            "NodeSpec",
            {
                "podCIDR": STRING,
                "podCIDRs": ListOf(STRING),
                "unschedulable": BOOL,
                "providerID": STRING,
            },
        ),
        "status": Struct(
            "NodeStatus",
            {
                "addresses": ListOf(Struct("NodeAddress", {"type": STRING, "address": STRING})),
                "conditions": ListOf(Struct("NodeCondition", {"type": STRING, "status": STRING})),
            },
        ),
    },
)

_NAMESPACE = Struct(
    "Namespace",
    {
        "metadata": OBJECT_META,
        "spec": Struct("NamespaceSpec", {"finalizers": ListOf(STRING)}),
        "status": Struct("NamespaceStatus", {"phase": STRING}),
    },
)

_CONFIGMAP = Struct(
    "ConfigMap",
    {
        "metadata": OBJECT_META,
        "data": MapOf(STRING),
        "binaryData": MapOf(STRING),
        "immutable": BOOL,
    },
)

#: Decoding types by kind.
KINDS: Mapping[str, Struct] = {
    s.name: s for s in (_SERVICE, _ENDPOINT_SLICE, _POD, _NODE, _NAMESPACE, _CONFIGMAP)
}
