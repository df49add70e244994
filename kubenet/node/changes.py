"""The cluster as node-proxy last saw it, and what changed since the last sync.

:class:`ClusterCache` is the handler of the three reflectors (Services, EndpointSlices,
the node's Node). It keeps each object (trimmed of what no translation reads), notes
which Services changed, and on :meth:`ClusterCache.drain` translates only those
(:func:`kubenet.translate.translate_service`) into their service ports, returning
each port that differs from what the last drain produced. So one EndpointSlice event
costs the translation of one Service, whatever the size of the cluster.

A change to the Node (its addresses, zone, labels, pod CIDRs) can change every
Service's endpoint selection and the renderers' options: it marks every Service
changed and is reported, so the caller can rebuild what depends on the node.

Objects that cannot be used are logged once per change of their reasons, never on
every sync, as upstream logs them.

Memory: a large cluster's objects, as Python dicts, would be most of the daemon's
memory, yet they are read only when their Service changes. So once a Service has
been translated, it and its slices are kept pickled (a fifth of the size) and
unpickled when next needed. Only this process ever pickles or unpickles them.
"""

from __future__ import annotations

import datetime
import logging
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenet.model import ServiceMap, ServicePort, ServicePortName
from kubenet.translate import NodeInfo, Skipped, node_info, translate_service
from kubenet.watch import DELETED, Delta

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
ServiceKey = tuple[str, str]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Set by the EndpointSlice controller: when the change that produced the slice began.
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


@dataclass(frozen=True)
class PortChange:
    """One service port before and after (None: absent)."""

    old: ServicePort | None
    new: ServicePort | None


@dataclass
class Changes:
    """What one drain found."""

    ports: dict[ServicePortName, PortChange] = field(default_factory=dict)
    #: Services translated again.
    services: int = 0
    #: The Node changed in a way that may change the renderers' options.
    node_changed: bool = False
    #: EndpointSlice trigger times (seconds since the epoch) of the changes drained.
    trigger_times: list[float] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.ports and not self.node_changed

    def merge(self, other: Changes) -> None:
        """Fold a later drain into this one (an earlier ``old`` is kept)."""
        for name, change in other.ports.items():
            before = self.ports.get(name)
            self.ports[name] = PortChange(before.old if before else change.old, change.new)
        self.services += other.services
        self.node_changed |= other.node_changed
        self.trigger_times += other.trigger_times


#: Metadata no translation reads: dropped, so that two versions of an object with the
#: same content compare equal (and no memory is spent on them).
_UNREAD = frozenset(
    {
        "managedFields",
        "annotations",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "ownerReferences",
        "generateName",
        "selfLink",
    }
)


def _slim(obj: JsonObject) -> JsonObject:
    """The object without the metadata no translation reads (changed in place: events
    hand over objects just decoded for this cache, and copying 10,000 of them at a
    cold start costs a tenth of a second)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in _UNREAD & meta.keys():
            del meta[key]
    return obj


def _key(obj: JsonObject) -> ServiceKey:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _owner(endpoint_slice: JsonObject) -> str | None:
    meta = endpoint_slice.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    owner = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    return owner if isinstance(owner, str) and owner else None


def _trigger_time(obj: JsonObject) -> float | None:
    meta = obj.get("metadata")
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    text = notes.get(TRIGGER_TIME) if isinstance(notes, dict) else None
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ClusterCache:
    """Services, EndpointSlices and the Node, with the Services changed since the last drain."""

    def __init__(self, node_name: str, on_change: Callable[[], None] | None = None) -> None:
        self.node_name = node_name
        self.on_change = on_change or (lambda: None)
        self.node_object: JsonObject | None = None
        self.node = NodeInfo(node_name)
        # Objects as received, or pickled once their Service has been translated.
        self._services: dict[ServiceKey, JsonObject | bytes] = {}
        self._slices: dict[ServiceKey, JsonObject | bytes] = {}
        self._slice_owner: dict[ServiceKey, ServiceKey] = {}
        self._by_service: dict[ServiceKey, set[ServiceKey]] = {}
        self._ports: dict[ServiceKey, tuple[ServicePort, ...]] = {}
        self._skipped: dict[ServiceKey, tuple[Skipped, ...]] = {}
        self._dirty: set[ServiceKey] = set()
        self._triggers: list[float] = []
        self._node_changed = False
        self.services_synced = False
        self.slices_synced = False
        self.node_synced = False
        #: Events handled, by kind (kubeproxy_sync_proxy_rules_*_changes_total).
        self.service_events = 0
        self.slice_events = 0
        self.port_count = 0

    # ---------------------------------------------------------------- reflector handlers

    def on_services(self, deltas: Sequence[Delta], synced: bool) -> None:
        for delta in deltas:
            key = _key(delta.object) if delta.type != DELETED else _split(delta.key)
            if delta.type == DELETED:
                self._services.pop(key, None)
            else:
                slim = _slim(delta.object)
                if _same(self._services.get(key), slim):
                    continue  # the same content again (a relist)
                self._services[key] = slim
            self._dirty.add(key)
            self.service_events += 1
        self.services_synced |= synced
        if deltas or synced:
            self.on_change()

    def on_slices(self, deltas: Sequence[Delta], synced: bool) -> None:
        for delta in deltas:
            key = _split(delta.key)
            # Read before the annotations are dropped.
            when = _trigger_time(delta.object) if delta.type != DELETED else None
            if delta.type != DELETED and _same(self._slices.get(key), _slim(delta.object)):
                continue  # the same content again (a relist)
            before = self._slice_owner.pop(key, None)
            if before is not None:
                self._dirty.add(before)
                owned = self._by_service.get(before)
                if owned is not None:
                    owned.discard(key)
                    if not owned:
                        del self._by_service[before]
            if delta.type == DELETED:
                self._slices.pop(key, None)
            else:
                owner = _owner(delta.object)
                if when is not None:
                    self._triggers.append(when)
                if owner is None:
                    self._slices.pop(key, None)
                    log.warning(
                        "EndpointSlice %s/%s has no %s label; ignored",
                        key[0],
                        key[1],
                        SERVICE_NAME_LABEL,
                    )
                else:
                    service = (key[0], owner)
                    self._slices[key] = delta.object
                    self._slice_owner[key] = service
                    self._by_service.setdefault(service, set()).add(key)
                    self._dirty.add(service)
            self.slice_events += 1
        self.slices_synced |= synced
        if deltas or synced:
            self.on_change()

    def on_node(self, deltas: Sequence[Delta], synced: bool) -> None:
        for delta in deltas:
            if delta.key != self.node_name:
                continue
            self.node_object = None if delta.type == DELETED else delta.object
            info = node_info(self.node_object, self.node_name)
            if info != self.node:
                self.node = info
                self._node_changed = True
                self._dirty.update(self._services)
        self.node_synced |= synced
        if deltas or synced:
            self.on_change()

    # --------------------------------------------------------------------- reading

    @property
    def initialized(self) -> bool:
        """Services and EndpointSlices have been listed (kube-proxy's isInitialized)."""
        return self.services_synced and self.slices_synced

    @property
    def pending_services(self) -> int:
        return len(self._dirty)

    def ports(self) -> Iterable[ServicePort]:
        """Every service port of the last drain."""
        for ports in self._ports.values():
            yield from ports

    def service_ports(self, keys: Iterable[ServiceKey]) -> Iterator[ServicePort]:
        """The ports of some Services, as of the last drain."""
        for key in keys:
            yield from self._ports.get(key, ())

    def service_map(self) -> ServiceMap:
        """The ServiceMap of the last drain."""
        return ServiceMap.of(list(self.ports()))

    # --------------------------------------------------------------------- draining

    def drain(self, limit: int | None = None) -> Changes:
        """Translate the changed Services (at most ``limit`` of them); report what differs."""
        changes = Changes(node_changed=self._node_changed)
        self._node_changed = False
        if limit is None or limit >= len(self._dirty):
            batch, self._dirty = self._dirty, set()
        else:
            batch = {self._dirty.pop() for _ in range(limit)}
        changes.trigger_times, self._triggers = self._triggers, []
        for key in batch:
            self._translate(key, changes)
        changes.services = len(batch)
        return changes

    def _translate(self, key: ServiceKey, changes: Changes) -> None:
        stored = self._services.get(key)
        if stored is None:
            ports: tuple[ServicePort, ...] = ()
            skipped: tuple[Skipped, ...] = ()
        else:
            slice_keys = self._by_service.get(key, ())
            slices = [_thaw(self._slices[k]) for k in slice_keys]
            ports, skipped = translate_service(_thaw(stored), slices, self.node)
            # Keep them small until the Service changes again.
            self._services[key] = _freeze(stored)
            for k, obj in zip(slice_keys, slices, strict=True):
                self._slices[k] = _freeze(obj)
        if skipped != self._skipped.get(key, ()):
            for reason in skipped:
                log.warning("skipped %s", reason)
            if skipped:
                self._skipped[key] = skipped
            else:
                self._skipped.pop(key, None)
        old = {p.name: p for p in self._ports.get(key, ())}
        new = {p.name: p for p in ports}
        for name in old.keys() | new.keys():
            before, after = old.get(name), new.get(name)
            if before != after:
                changes.ports[name] = PortChange(before, after)
        self.port_count += len(new) - len(old)
        if ports:
            self._ports[key] = ports
        else:
            self._ports.pop(key, None)


def _freeze(obj: JsonObject | bytes) -> bytes:
    return obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _thaw(obj: JsonObject | bytes) -> JsonObject:
    if isinstance(obj, bytes):
        thawed: JsonObject = pickle.loads(obj)
        return thawed
    return obj


def _same(stored: JsonObject | bytes | None, obj: JsonObject) -> bool:
    return stored is not None and _thaw(stored) == obj


def _split(key: str) -> ServiceKey:
    namespace, _, name = key.rpartition("/")
    return namespace, name
