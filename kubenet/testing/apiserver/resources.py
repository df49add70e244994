"""The kinds the server stores, described as data.

A :class:`ResourceType` says everything the generic machinery needs about a kind:
where it lives in the URL space, whether it is namespaced, which list fields merge
by key under a strategic merge patch, which field selectors it supports and how it
shows in ``kubectl get``.  Adding a kind is one entry in :data:`RESOURCES`; kinds with
real server-side behaviour (allocation, defaults, validation beyond metadata) get a
strategy in :mod:`kubenet.testing.apiserver.strategies`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]
FieldGetter = Callable[[JsonObject], str]


def _path(*keys: str) -> FieldGetter:
    """A field-selector getter reading a nested scalar, rendered as the API renders it."""

    def get(obj: JsonObject) -> str:
        cur: Any = obj
        for key in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(key)
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


#: Patch metadata every kind shares (ObjectMeta): finalizers merge as a set,
#: ownerReferences merge by uid.
_META_MERGE: Mapping[str, str] = {"metadata.finalizers": "", "metadata.ownerReferences": "uid"}


@dataclass(frozen=True, eq=False)
class ResourceType:
    """One REST resource (a kind and its plural path segment).

    Compared and hashed by identity: each kind is described once, in :data:`RESOURCES`.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Subresources served beside the main resource ("status", "exec", ...).
    subresources: tuple[str, ...] = ()
    #: Strategic-merge-patch list semantics, by dotted path ("spec.containers[].env"):
    #: a merge key, or "" for a list of scalars merged as a set. Lists not named here
    #: are atomic and replaced whole, as for fields without a patchStrategy upstream.
    merge_keys: Mapping[str, str] = field(default_factory=dict)
    #: Field selectors beyond metadata.name / metadata.namespace.
    field_getters: Mapping[str, FieldGetter] = field(default_factory=dict)
    #: Whether the kind has a status stanza the main resource may not write.
    has_status: bool = False
    #: Whether DELETE answers with the deleted object (else a Success Status).
    returns_deleted: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``services`` or ``endpointslices.discovery.k8s.io``, as errors spell it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def merge_key(self, path: str) -> str | None:
        """The merge key of the list at ``path`` (None: atomic list)."""
        if path in _META_MERGE:
            return _META_MERGE[path]
        return self.merge_keys.get(path)

    def field_value(self, obj: JsonObject, label: str) -> str | None:
        """The value of a field-selector label, or None when the kind does not index it."""
        meta = obj.get("metadata", {})
        if label == "metadata.name":
            return str(meta.get("name", ""))
        if label == "metadata.namespace" and self.namespaced:
            return str(meta.get("namespace", ""))
        getter = self.field_getters.get(label)
        return getter(obj) if getter is not None else None


_POD_MERGE = {
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.ephemeralContainers": "name",
    "spec.containers[].ports": "containerPort",
    "spec.containers[].env": "name",
    "spec.containers[].volumeMounts": "mountPath",
    "spec.containers[].volumeDevices": "devicePath",
    "spec.initContainers[].ports": "containerPort",
    "spec.initContainers[].env": "name",
    "spec.initContainers[].volumeMounts": "mountPath",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.topologySpreadConstraints": "topologyKey",
    "spec.schedulingGates": "name",
    "status.conditions": "type",
    "status.podIPs": "ip",
    "status.hostIPs": "ip",
}

_POD_FIELDS: Mapping[str, FieldGetter] = {
    "spec.nodeName": _path("spec", "nodeName"),
    "spec.restartPolicy": _path("spec", "restartPolicy"),
    "spec.schedulerName": _path("spec", "schedulerName"),
    "spec.serviceAccountName": _path("spec", "serviceAccountName"),
    "spec.hostNetwork": lambda o: "true" if o.get("spec", {}).get("hostNetwork") else "false",
    "status.phase": _path("status", "phase"),
    "status.podIP": _path("status", "podIP"),
    "status.nominatedNodeName": _path("status", "nominatedNodeName"),
}

NAMESPACES = ResourceType(
    "",
    "v1",
    "Namespace",
    "namespaces",
    namespaced=False,
    short_names=("ns",),
    subresources=("status", "finalize"),
    has_status=True,
    returns_deleted=True,
    merge_keys={"status.conditions": "type"},
    field_getters={"status.phase": _path("status", "phase")},
)
NODES = ResourceType(
    "",
    "v1",
    "Node",
    "nodes",
    namespaced=False,
    short_names=("no",),
    subresources=("status",),
    has_status=True,
    merge_keys={"spec.podCIDRs": "", "status.addresses": "type", "status.conditions": "type"},
    field_getters={
        "spec.unschedulable": lambda o: (
            "true" if o.get("spec", {}).get("unschedulable") else "false"
        )
    },
)
PODS = ResourceType(
    "",
    "v1",
    "Pod",
    "pods",
    namespaced=True,
    short_names=("po",),
    categories=("all",),
    subresources=("status", "exec", "portforward"),
    has_status=True,
    returns_deleted=True,
    merge_keys=_POD_MERGE,
    field_getters=_POD_FIELDS,
)
SERVICES = ResourceType(
    "",
    "v1",
    "Service",
    "services",
    namespaced=True,
    short_names=("svc",),
    categories=("all",),
    subresources=("status", "proxy"),
    has_status=True,
    returns_deleted=True,
    merge_keys={"spec.ports": "port", "status.conditions": "type"},
    field_getters={
        "spec.clusterIP": _path("spec", "clusterIP"),
        "spec.type": _path("spec", "type"),
    },
)
CONFIGMAPS = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True, short_names=("cm",))
ENDPOINTSLICES = ResourceType(
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices",
    namespaced=True,
)

#: Every kind the server stores, in discovery order.
RESOURCES: tuple[ResourceType, ...] = (
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    CONFIGMAPS,
    ENDPOINTSLICES,
)


class Kinds:
    """Lookup of resource types by URL segments and by apiVersion/kind."""

    def __init__(self, resources: tuple[ResourceType, ...] = RESOURCES) -> None:
        self.resources = resources
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}
        self._by_kind = {(r.api_version, r.kind): r for r in resources}

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((api_version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Named groups (not the core group) and their versions, in first-seen order."""
        out: dict[str, list[str]] = {}
        for r in self.resources:
            if r.group and r.version not in out.setdefault(r.group, []):
                out[r.group].append(r.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for r in self.resources if r.group == group and r.version == version]
